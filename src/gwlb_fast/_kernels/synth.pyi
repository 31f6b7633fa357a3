import numpy as np

PAY_COPY: int
PAY_TLS: int
PAY_ID16: int

def build_packets(
    data: np.ndarray,  # uint8[::1], written
    off: np.ndarray,  # int64[n]
    caplen: np.ndarray,  # uint32[n]
    mac_src: np.ndarray,  # uint64[n]
    mac_dst: np.ndarray,  # uint64[n]
    src_ip: np.ndarray,  # uint32[n]
    dst_ip: np.ndarray,  # uint32[n]
    proto: np.ndarray,  # uint8[n]
    ip_id: np.ndarray,  # uint16[n]
    ttl: np.ndarray,  # uint8[n]
    df: np.ndarray,  # uint8[n]
    sport: np.ndarray,  # uint16[n]
    dport: np.ndarray,  # uint16[n]
    seq: np.ndarray,  # uint32[n]
    ack: np.ndarray,  # uint32[n]
    flags: np.ndarray,  # uint8[n]
    win: np.ndarray,  # uint16[n]
    pay_off: np.ndarray,  # int64[n]
    pay_style: np.ndarray,  # uint8[n]
    pay_arg: np.ndarray,  # uint16[n]
    templates: np.ndarray,  # uint8[::1]
    status: np.ndarray,  # uint8[n], written
) -> int: ...
