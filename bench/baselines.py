"""Reference implementations the benchmarks compare against (plain numpy, pure Python, dpkt loops).

Shared file: each topic appends its own section under a ``# --- <topic> ---`` comment.
"""
import numpy as np

# --- flowhash / maglev ---

_U64 = np.uint64


def _fmix64_np(k: np.ndarray) -> np.ndarray:
    k = k ^ (k >> _U64(33))
    k = k * _U64(0xFF51AFD7ED558CCD)
    k = k ^ (k >> _U64(33))
    k = k * _U64(0xC4CEB9FE1A85EC53)
    return k ^ (k >> _U64(33))


def hash_5tuple_numpy(src_ip, dst_ip, sport, dport, proto, seed: int = 0) -> np.ndarray:
    """Same symmetric hash as ``flowhash.hash_5tuple`` (uint64), written as whole-array numpy operations."""
    s = _fmix64_np(np.array([(seed & (2**64 - 1)) ^ 0x9E3779B97F4A7C15], np.uint64))[0]
    x = (src_ip.astype(np.uint64) << _U64(16)) | sport.astype(np.uint64)
    y = (dst_ip.astype(np.uint64) << _U64(16)) | dport.astype(np.uint64)
    lo, hi = np.minimum(x, y), np.maximum(x, y)
    h = _fmix64_np(s ^ (lo | (proto.astype(np.uint64) << _U64(48))))
    return _fmix64_np(h ^ (hi | _U64(5 << 56)))


def hash_lookup_numpy(src_ip, dst_ip, sport, dport, proto, table: np.ndarray, seed: int = 0) -> np.ndarray:
    """Symmetric hash + Maglev lookup ``table[hash % M]`` in plain numpy."""
    h = hash_5tuple_numpy(src_ip, dst_ip, sport, dport, proto, seed)
    return table[h % _U64(table.shape[0])]


def hash_lookup_python(flows: list[tuple[int, int, int, int, int]], table: list[int]) -> list[int]:
    """Pure-Python loop: canonical endpoint order, built-in tuple hash, ``table[hash % M]``."""
    m = len(table)
    out = []
    for src, dst, sp, dp, proto in flows:
        a, b = (src, sp), (dst, dp)
        key = (a, b, proto) if a <= b else (b, a, proto)
        out.append(table[hash(key) % m])
    return out


def gwlb_python(flows: list[tuple[int, int, int, int, int]], table: list[int], state: dict) -> list[int]:
    """Pure-Python GWLB fast path: dict flow table keyed by the canonical 5-tuple, Maglev pick on a miss."""
    m = len(table)
    out = []
    for src, dst, sp, dp, proto in flows:
        a, b = (src, sp), (dst, dp)
        key = (a, b, proto) if a <= b else (b, a, proto)
        fw = state.get(key)
        if fw is None:
            fw = state[key] = table[hash(key) % m]
        out.append(fw)
    return out
