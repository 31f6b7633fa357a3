"""Hash joins of packet rows on a private endpoint key (ip, port, proto): replies that wait, and their flows."""
import numpy as np

def hold_replies(
    src_ip: np.ndarray,  # const uint32[::1], shape (n,)
    sport: np.ndarray,  # const uint16[::1], shape (n,)
    dst_ip: np.ndarray,  # const uint32[::1], shape (n,)
    dport: np.ndarray,  # const uint16[::1], shape (n,)
    proto: np.ndarray,  # const uint8[::1], shape (n,)
    senders: np.ndarray,  # const uint8[::1], shape (n,): rows that may make a reply's mapping
    replies: np.ndarray,  # const int64[::1], shape (m,): reply rows
    asked: np.ndarray,  # const uint8[::1], shape (m,): the replies to look at
    pending: np.ndarray,  # int16[::1], shape (n,), in/out: g on the soon replies
    g: int,
    soon: np.ndarray,  # uint8[::1], shape (m,), out
    held: np.ndarray,  # uint8[::1], shape (n,), in/out
) -> int:
    """Soon replies (an earlier sender left from their destination) and the rows that wait with them; see the
    kernel's docstring. Returns the number of soon replies."""
