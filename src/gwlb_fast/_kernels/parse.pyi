import numpy as np

def parse_packets(
    data: np.ndarray,  # const uint8[::1]
    off: np.ndarray,  # const int64[n]
    caplen: np.ndarray,  # const uint32[n]
    linktype: np.ndarray,  # const uint16[n]
    status: np.ndarray,  # uint8[n] out
    src_ip: np.ndarray,  # uint32[n] out
    dst_ip: np.ndarray,  # uint32[n] out
    sport: np.ndarray,  # uint16[n] out
    dport: np.ndarray,  # uint16[n] out
    proto: np.ndarray,  # uint8[n] out
    tcp_flags: np.ndarray,  # uint8[n] out (ICMP type for ICMP)
    l3_off: np.ndarray,  # int32[n] out
    l4_off: np.ndarray,  # int32[n] out
) -> tuple[int, int]: ...  # (headers with checksum 0, fragments)
def fill_ip_checksums(
    data: np.ndarray,  # uint8[::1], in/out
    off: np.ndarray,  # int64[n]
    caplen: np.ndarray,  # uint32[n]
    l3_off: np.ndarray,  # int32[n]
    status: np.ndarray,  # uint8[n]
) -> int: ...
def gather_packets(
    src: np.ndarray,  # const uint8[::1]
    src_off: np.ndarray,  # const int64[n]
    caplen: np.ndarray,  # const uint32[n]
    dst: np.ndarray,  # uint8[::1] out
    dst_off: np.ndarray,  # const int64[n]
) -> None: ...
