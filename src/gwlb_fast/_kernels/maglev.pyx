# Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable Software Network Load Balancer",
# NSDI 2016, section 3.4), with an exact minimal-disruption fallback for backends that are not active.
#
# maglev_populate: the paper's table population over ALL configured backends. Backend i's preference list is
#   permutation[i][j] = (offset[i] + j * skip[i]) mod M, M prime, skip in [1, M-1] (so it visits every slot);
#   backends take turns claiming their next preferred free slot until the table is full.
# maglev_fill: the table for a subset of active backends. A slot whose base owner is active keeps it; any other slot
#   goes to the active backend with the highest score fmix64(key[b] ^ slot * K) (rendezvous hashing per slot).
#   Each slot thus has a fixed ranking of backends (base owner first, then by score) and takes the first active
#   one, so the table is a pure function of the active set: deactivating one backend moves exactly its own slots
#   (and no other), and reactivating it restores the previous table bit for bit. Strict Maglev, by contrast,
#   rebuilds and moves a few slots between surviving backends.
# maglev_lookup: slot = (hash32 * M) >> 32 (multiply-shift range reduction, Lemire 2016), where hash32 is the high
#   half of a uint64 hash or the uint32 hash itself; a division-free equivalent of hash % M.
from libc.stdint cimport int16_t, uint8_t, uint32_t, uint64_t
from gwlb_fast._kernels._hash cimport fmix64 as _fmix64

import numpy as np

cdef uint64_t _SLOT_MUL = 0x9E3779B97F4A7C15ULL


def _check(arr, str name, dtype, Py_ssize_t n, bint writeable=False):
    if not isinstance(arr, np.ndarray) or arr.dtype != dtype or arr.ndim != 1 or not arr.flags.c_contiguous:
        raise ValueError(f"{name} must be a contiguous 1-D {np.dtype(dtype)} array, got "
                         f"{getattr(arr, 'dtype', type(arr).__name__)} with shape {getattr(arr, 'shape', None)}")
    if n >= 0 and arr.shape[0] != n:
        raise ValueError(f"{name} must have length {n}, got {arr.shape[0]}")
    if writeable and not arr.flags.writeable:
        raise ValueError(f"{name} must be writeable")


def maglev_populate(offset, skip, table):
    """Fill ``table`` by Maglev population over every backend (paper, section 3.4, Pseudocode 1).

    Parameters
    ----------
    offset : uint32[k]
        Per-backend offset, ``< M``.
    skip : uint32[k]
        Per-backend skip, in ``[1, M-1]``.
    table : int16[M]
        Output, M = table length (prime, so every preference list is a permutation). Written with backend indices;
        all -1 if ``k == 0``.

    Returns
    -------
    table

    Notes
    -----
    Sets no status codes. ValueError for wrong dtypes, k > 32767, or offset/skip out of range.
    """
    _check(offset, "offset", np.uint32, -1)
    cdef Py_ssize_t k = offset.shape[0]
    _check(skip, "skip", np.uint32, k)
    _check(table, "table", np.int16, -1, True)
    cdef Py_ssize_t m = table.shape[0]
    if m < 2:
        raise ValueError(f"table length must be >= 2, got {m}")
    if k > 32767:
        raise ValueError(f"at most 32767 backends, got {k}")
    if k and (int(offset.max()) >= m or int(skip.min()) < 1 or int(skip.max()) >= m):
        raise ValueError("offset must be < M and skip in [1, M-1]")
    cdef const uint32_t[::1] off = offset
    cdef const uint32_t[::1] sk = skip
    cdef int16_t[::1] t = table
    cdef uint64_t[::1] cur = np.zeros(max(k, 1), np.uint64)
    cdef Py_ssize_t i, filled = 0
    cdef uint64_t c
    table[:] = -1
    if k == 0:
        return table
    with nogil:
        for i in range(k):
            cur[i] = off[i]
        while True:
            for i in range(k):
                c = cur[i]
                while t[c] >= 0:
                    c += sk[i]
                    if c >= <uint64_t>m:
                        c -= m
                t[c] = <int16_t>i
                c += sk[i]
                if c >= <uint64_t>m:
                    c -= m
                cur[i] = c
                filled += 1
                if filled == m:
                    break
            if filled == m:
                break
    return table


def maglev_fill(base, key, active, table):
    """Table for the active backends: keep base owners that are active, re-home the rest by per-slot rendezvous.

    Parameters
    ----------
    base : int16[M]
        Table from :func:`maglev_populate` over all backends.
    key : uint64[k]
        Per-backend rendezvous key (a hash of its name).
    active : uint8[k]
        Non-zero for backends that may take slots.
    table : int16[M]
        Output (may not alias ``base``). -1 everywhere when no backend is active.

    Returns
    -------
    int
        Number of slots whose owner differs from ``base``.

    Notes
    -----
    Sets no status codes. ValueError for wrong dtypes/lengths or a base entry outside ``[0, k)``.
    """
    _check(base, "base", np.int16, -1)
    cdef Py_ssize_t m = base.shape[0]
    _check(key, "key", np.uint64, -1)
    cdef Py_ssize_t k = key.shape[0]
    _check(active, "active", np.uint8, k)
    _check(table, "table", np.int16, m, True)
    if m and (int(base.min()) < 0 or int(base.max()) >= k):
        raise ValueError(f"base entries must lie in [0, {k})")
    if np.shares_memory(base, table):
        raise ValueError("table must not alias base")
    cdef const int16_t[::1] b = base
    cdef const uint64_t[::1] ky = key
    cdef const uint8_t[::1] act = active
    cdef int16_t[::1] t = table
    cdef Py_ssize_t s, j, moved = 0
    cdef int16_t best
    cdef uint64_t score, best_score, sm
    cdef bint any_active = bool(np.any(active)) if k else False
    if m == 0:
        return 0
    with nogil:
        if not any_active:
            for s in range(m):
                t[s] = -1
            moved = m
        else:
            for s in range(m):
                if act[b[s]]:
                    t[s] = b[s]
                    continue
                sm = <uint64_t>s * _SLOT_MUL
                best = -1
                best_score = 0
                for j in range(k):
                    if act[j]:
                        score = _fmix64(ky[j] ^ sm)
                        if best < 0 or score > best_score:
                            best = <int16_t>j
                            best_score = score
                t[s] = best
                moved += 1
    return moved


def maglev_lookup(table, hash, out):
    """Backend index of each flow: ``out[i] = table[(hash32[i] * M) >> 32]``.

    Parameters
    ----------
    table : int16[M]
    hash : uint32[n] or uint64[n]
        Flow hashes (a uint64 hash uses its high 32 bits, like its uint32 form from ``flowhash``).
    out : int16[n]
        Written in place (-1 where the table has no backend).

    Returns
    -------
    out

    Notes
    -----
    Sets no status codes.
    """
    _check(table, "table", np.int16, -1)
    cdef Py_ssize_t m = table.shape[0]
    if m == 0:
        raise ValueError("table must not be empty")
    if not isinstance(hash, np.ndarray) or hash.dtype not in (np.uint32, np.uint64):
        raise ValueError(f"hash must be a uint32 or uint64 array, got {getattr(hash, 'dtype', type(hash).__name__)}")
    _check(hash, "hash", hash.dtype, -1)
    cdef Py_ssize_t n = hash.shape[0]
    _check(out, "out", np.int16, n, True)
    cdef const int16_t[::1] t = table
    cdef int16_t[::1] o = out
    cdef const uint32_t[::1] h32
    cdef const uint64_t[::1] h64
    cdef uint64_t mm = <uint64_t>m
    cdef Py_ssize_t i
    if n == 0:
        return out
    if hash.dtype == np.uint64:
        h64 = hash
        with nogil:
            for i in range(n):
                o[i] = t[((h64[i] >> 32) * mm) >> 32]
    else:
        h32 = hash
        with nogil:
            for i in range(n):
                o[i] = t[(<uint64_t>h32[i] * mm) >> 32]
    return out
