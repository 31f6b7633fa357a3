import numpy as np

def lpm_lookup(
    keys: np.ndarray,         # uint32[m]
    vals: np.ndarray,         # int32[m]
    block_start: np.ndarray,  # int32[nblocks + 1]
    block_len: np.ndarray,    # uint8[nblocks]
    table_start: np.ndarray,  # int32[ntables + 1]
    table: np.ndarray,        # int32[n] or int32[1]
    dst: np.ndarray,          # uint32[n]
    out: np.ndarray,          # int32[n], written
) -> int: ...
