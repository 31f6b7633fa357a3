"""Stream reassembly for content inspection: per session direction, in batch order, nogil."""
import numpy as np

SF_BASE: int
SF_HEAD_FULL: int
SF_GAP: int
SRC_NONE: int
SRC_PACKET: int
SRC_HEAD: int
C_SEGMENTS: int
C_BYTES_NEW: int
C_BYTES_RETRANS: int
C_SEGMENTS_OOO: int
C_BYTES_HELD: int
C_HELD_LIMIT: int
C_GAP_BYTES: int
C_DATAGRAMS: int
C_BAD: int
N_COUNTERS: int
MAX_HELD: int

def stream_feed(
    data: np.ndarray,  # const uint8[::1]
    off: np.ndarray,  # const int64[n]
    caplen: np.ndarray,  # const uint32[n]
    l3_off: np.ndarray,  # const int32[n]
    l4_off: np.ndarray,  # const int32[n]
    proto: np.ndarray,  # const uint8[n]
    tcp_flags: np.ndarray,  # const uint8[n]
    sd: np.ndarray,  # const int64[n], -1: not inspected
    isn: np.ndarray,  # uint32[m] in/out
    nxt: np.ndarray,  # int64[m] in/out
    flags: np.ndarray,  # uint8[m] in/out
    held: np.ndarray,  # int64[m, 2 * MAX_HELD] in/out
    head: np.ndarray,  # uint8[m, H] in/out
    out_lo: np.ndarray,  # int64[n] out
    out_hi: np.ndarray,  # int64[n] out
    out_seg: np.ndarray,  # int64[n] out
    out_pay: np.ndarray,  # int64[n] out
    out_src: np.ndarray,  # uint8[n] out
    ctr: np.ndarray,  # int64[N_COUNTERS] in/out
    seen: np.ndarray | None = None,  # uint8[m] out: 1 for the sd of every packet
) -> int: ...
