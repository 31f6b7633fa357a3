"""IPv4 fragment tracking: later fragments follow their datagram's first fragment (no reassembly)."""
import numpy as np

# entry columns of the table tab[C, NF] (int64)
F_SRC: int
F_DST: int
F_PID: int
F_GEN: int
F_STATE: int
F_BORN: int
F_TOTAL: int
F_NRANGE: int
F_FIRST_ROW: int
F_FIRST_NS: int
F_STATUS: int
F_STAGE: int
F_FW: int
F_DELIVERED: int
F_NEW_SRC: int
F_NEW_DST: int
F_COMPLETE: int
NF: int
# entry states
E_FREE: int
E_WAITING: int
E_FIRST: int
E_FATE: int
# packet kinds
K_NONE: int
K_FIRST: int
K_LATER: int
# release codes
R_FOLLOW: int
R_HELD: int
R_DROPPED: int
WAYS: int
MAX_RANGES: int

def frag_scan(
    data: np.ndarray,  # uint8[::1]
    off: np.ndarray,  # int64[n]
    caplen: np.ndarray,  # uint32[n]
    l3_off: np.ndarray,  # int32[n]
    status: np.ndarray,  # uint8[n], in/out
    src_ip: np.ndarray,  # uint32[n]
    dst_ip: np.ndarray,  # uint32[n]
    proto: np.ndarray,  # uint8[n]
    ts_ns: np.ndarray,  # int64[n]
    tab: np.ndarray,  # int64[C, NF], in/out
    ranges: np.ndarray,  # int32[C, 2 * MAX_RANGES], in/out
    hold_ns: int,
    start: int,
    kind: np.ndarray,  # uint8[n] out
    slot: np.ndarray,  # int64[n] out
    gen: np.ndarray,  # int64[n] out
) -> None: ...
def frag_settle(
    data: np.ndarray,  # uint8[::1], in/out
    off: np.ndarray,  # int64[n]
    caplen: np.ndarray,  # uint32[n]
    l3_off: np.ndarray,  # int32[n]
    kind: np.ndarray,  # uint8[n]
    slot: np.ndarray,  # int64[n]
    gen: np.ndarray,  # int64[n]
    status: np.ndarray,  # uint8[n], in/out
    stage: np.ndarray,  # uint8[n], in/out
    fw: np.ndarray,  # int16[n], in/out
    delivered: np.ndarray,  # uint8[n], in/out
    src_ip: np.ndarray,  # uint32[n], in/out
    dst_ip: np.ndarray,  # uint32[n], in/out
    ts_ns: np.ndarray,  # int64[n], in/out
    tab: np.ndarray,  # int64[C, NF], in/out
    now_ns: int,
    hold_ns: int,
    drop_stage: int,
    release: np.ndarray,  # int64[n] out
) -> None: ...
def frag_refs(
    kind: np.ndarray,  # uint8[n]
    slot: np.ndarray,  # int64[n]
    gen: np.ndarray,  # int64[n]
    release: np.ndarray,  # int64[n], from frag_settle
    tab: np.ndarray,  # int64[C, NF]
    refs: np.ndarray,  # int64[C, R], in/out: per entry, its first fragment's row_refs
    row_refs: np.ndarray,  # int64[n, R], in/out: first fragments' in, followers' out (-1 when they did not follow)
) -> None: ...
