"""Symmetric, seeded flow hashing (5-, 3-, 2-tuple) and the Geneve outer UDP source port.

A flow and its reply hash alike: the endpoints (ip, port) are ordered canonically, then mixed by two rounds of the
murmur3 fmix64 finalizer. A uint32 output holds the high half of the 64-bit hash.
"""
import numpy as np

def hash_5tuple(
    src_ip: np.ndarray,  # const uint32[::1], shape (n,)
    dst_ip: np.ndarray,  # const uint32[::1], shape (n,)
    sport: np.ndarray,  # const uint16[::1], shape (n,)
    dport: np.ndarray,  # const uint16[::1], shape (n,)
    proto: np.ndarray,  # const uint8[::1], shape (n,)
    seed: int,
    out: np.ndarray,  # uint32[::1] or uint64[::1], shape (n,)
) -> np.ndarray: ...
def hash_3tuple(
    src_ip: np.ndarray,  # const uint32[::1], shape (n,)
    dst_ip: np.ndarray,  # const uint32[::1], shape (n,)
    proto: np.ndarray,  # const uint8[::1], shape (n,)
    seed: int,
    out: np.ndarray,  # uint32[::1] or uint64[::1], shape (n,)
) -> np.ndarray: ...
def hash_2tuple(
    src_ip: np.ndarray,  # const uint32[::1], shape (n,)
    dst_ip: np.ndarray,  # const uint32[::1], shape (n,)
    seed: int,
    out: np.ndarray,  # uint32[::1] or uint64[::1], shape (n,)
) -> np.ndarray: ...
def geneve_udp_sport(
    hash: np.ndarray,  # const uint32[::1] or const uint64[::1], shape (n,)
    out: np.ndarray,  # uint16[::1], shape (n,)
    lo: int = 49152,
    hi: int = 65535,
) -> np.ndarray: ...
