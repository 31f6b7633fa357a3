"""App-ID by content and HTTP / TLS / DNS field extraction over the heads a StreamTable keeps, nogil."""
import numpy as np

F_METHOD: int
F_URI: int
F_HOST: int
F_USER_AGENT: int
F_SNI: int
F_DNS_QUERY: int
N_FIELDS: int
N_IDS: int
DECIDE_BYTES: int

def identify(
    sessions: np.ndarray,  # const int64[k]
    head: np.ndarray,  # const uint8[2m, H]
    nxt: np.ndarray,  # const int64[2m]
    sflags: np.ndarray,  # const uint8[2m]
    proto: np.ndarray,  # const uint8[m]
    ended: np.ndarray,  # const uint8[m]
    ids: np.ndarray,  # const int32[N_IDS]
    app: np.ndarray,  # int32[m] in/out
    done: np.ndarray,  # uint8[m] in/out
    fields: np.ndarray,  # uint8[m, N_FIELDS * FW] in/out
    flen: np.ndarray,  # int32[m, N_FIELDS] in/out
    full_flag: int,
) -> int: ...
def identify_packets(
    sd: np.ndarray,  # const int64[n], session direction of each packet (-1: none)
    lo: np.ndarray,  # const int64[n], stream range the packet made available: [lo, hi)
    hi: np.ndarray,  # const int64[n]
    pproto: np.ndarray,  # const uint8[n]
    head: np.ndarray,  # const uint8[2m, H]
    nxt: np.ndarray,  # const int64[2m]
    seen_len: np.ndarray,  # int64[2m] in/out: head bytes identification has read
    proto: np.ndarray,  # const uint8[m]
    ids: np.ndarray,  # const int32[N_IDS]
    app: np.ndarray,  # int32[m] in/out
    done: np.ndarray,  # uint8[m] in/out
    fields: np.ndarray,  # uint8[m, N_FIELDS * FW] in/out
    flen: np.ndarray,  # int32[m, N_FIELDS] in/out
    app_pkt: np.ndarray,  # int64[m] in/out: packet at which each session's application was decided
    done_pkt: np.ndarray,  # int64[m] in/out: packet at which its fields were complete
    out_changed: np.ndarray,  # int64[>= n] out
    out_completed: np.ndarray,  # int64[>= n] out
) -> tuple[int, int]:
    """Identify sessions packet by packet, in batch order, as each packet's bytes arrive; returns the number of
    sessions listed in out_changed and in out_completed."""
