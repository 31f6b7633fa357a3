import numpy as np

def lpm_lookup(
    l1: np.ndarray,     # int32[ntables * 65536]: first level (top 16 bits) of every table
    l2: np.ndarray,     # int32[k2 * 256]: second-level chunks (bits 15..8)
    l3: np.ndarray,     # int32[k3 * 256]: third-level chunks (bits 7..0)
    table: np.ndarray,  # int32[n] or int32[1]
    dst: np.ndarray,    # uint32[n]
    out: np.ndarray,    # int32[n], written: value, -1 = no match
) -> int: ...
