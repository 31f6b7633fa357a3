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
