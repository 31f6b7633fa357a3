"""Hash join of packet rows on a private endpoint key (ip, port, proto): first build row per probe row."""
import numpy as np

def first_row_join(
    build_ip: np.ndarray,  # const uint32[::1], shape (n,)
    build_port: np.ndarray,  # const uint16[::1], shape (n,)
    proto: np.ndarray,  # const uint8[::1], shape (n,)
    build_rows: np.ndarray,  # const int64[::1], shape (b,)
    probe_ip: np.ndarray,  # const uint32[::1], shape (n,)
    probe_port: np.ndarray,  # const uint16[::1], shape (n,)
    probe_rows: np.ndarray,  # const int64[::1], shape (p,)
    out: np.ndarray,  # int64[::1], shape (p,)
) -> np.ndarray: ...
