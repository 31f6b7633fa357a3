"""Maglev consistent hashing (Eisenbud et al., NSDI 2016) with an exact minimal-disruption fill for inactive backends.

maglev_populate builds the paper's table over all backends; maglev_fill keeps active owners and gives every other
slot to the active backend ranked first for it by rendezvous hashing (a pure function of the active set: removing
one backend moves exactly its slots; restoring it restores the table). maglev_lookup maps a hash onto the table by
multiply-shift of its high 32 bits.
"""
import numpy as np

def maglev_populate(
    offset: np.ndarray,  # const uint32[::1], shape (k,), each < M
    skip: np.ndarray,  # const uint32[::1], shape (k,), each in [1, M-1]
    table: np.ndarray,  # int16[::1], shape (M,), M prime
) -> np.ndarray: ...
def maglev_fill(
    base: np.ndarray,  # const int16[::1], shape (M,), entries in [0, k)
    key: np.ndarray,  # const uint64[::1], shape (k,)
    active: np.ndarray,  # const uint8[::1], shape (k,)
    table: np.ndarray,  # int16[::1], shape (M,), not aliasing base
) -> int: ...
def maglev_lookup(
    table: np.ndarray,  # const int16[::1], shape (M,)
    hash: np.ndarray,  # const uint32[::1] or const uint64[::1], shape (n,)
    out: np.ndarray,  # int16[::1], shape (n,)
) -> np.ndarray: ...
