"""URL categorisation: PAN-OS URL-list patterns and a domain category database, batched over URLs, nogil."""
import numpy as np

# pattern program elements (pe_kind)
ELEM_LIT: int
ELEM_SEP: int
ELEM_CARET: int
ELEM_STAR: int
# host entry kinds (key_kind)
KEY_DB: int
KEY_EXACT: int
KEY_STAR: int
KEY_CARET: int
MAX_URL_BYTES: int

def hash_keys(
    data: np.ndarray,  # const uint8[::1], keys already lower-case
    off: np.ndarray,  # const int64[n]
    length: np.ndarray,  # const int64[n]
    out: np.ndarray,  # uint64[n] out: FNV-1a 64 of each key
) -> None: ...
def categorize_urls(
    host_data: np.ndarray,  # const uint8[::1]
    host_off: np.ndarray,  # const int64[n]
    host_len: np.ndarray,  # const int64[n], < 0: no URL
    path_data: np.ndarray,  # const uint8[::1]
    path_off: np.ndarray,  # const int64[n]
    path_len: np.ndarray,  # const int64[n], <= 0: "/"
    key_hash: np.ndarray,  # const uint64[k], ascending
    key_text: np.ndarray,  # const uint8[::1]
    key_off: np.ndarray,  # const int64[k]
    key_len: np.ndarray,  # const int32[k]
    key_kind: np.ndarray,  # const uint8[k], KEY_*
    key_cat: np.ndarray,  # const int32[k]
    prog_start: np.ndarray,  # const int64[n_progs + 1]
    prog_cat: np.ndarray,  # const int32[n_progs]
    prog_mask: np.ndarray,  # const uint64[n_progs]
    pe_kind: np.ndarray,  # const uint8[e], ELEM_*
    pe_in_host: np.ndarray,  # const uint8[e]
    pe_off: np.ndarray,  # const int64[e]
    pe_len: np.ndarray,  # const int32[e]
    pe_text: np.ndarray,  # const uint8[::1]
    unknown_cat: int,  # category of a URL that matches nothing (-1: none)
    out: np.ndarray,  # int32[n, kmax] out: matching category ids, ascending, -1 after
    count: np.ndarray,  # int32[n] out
    flags: np.ndarray,  # uint8[n] out: bit 0 URL beyond the limits, bit 1 more matches than kmax
) -> None: ...
