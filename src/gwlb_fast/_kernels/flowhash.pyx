# Symmetric, seeded flow hashing for the GWLB (DESIGN.md section 3) and the Geneve UDP source port (RFC 8926 3.3).
#
# Symmetry: the two endpoints (ip, port) are put in canonical order (the smaller 48-bit value ip<<16|port first)
# before mixing, so a flow and its reply hash alike. Mixing: two rounds of the murmur3 64-bit finalizer (fmix64, a
# bijection with full avalanche), absorbing one 64-bit word per round, with the seed pre-mixed once per call:
#
#   5-tuple: w1 = lo48 | proto << 48          w2 = hi48 | 5 << 56
#   3-tuple: w1 = lo32 | hi32 << 32           w2 = proto | 3 << 8
#   2-tuple: w1 = lo32 | hi32 << 32           w2 = 2 << 8
#   h = fmix64(fmix64(s ^ w1) ^ w2),  s = fmix64(seed ^ 0x9E3779B97F4A7C15)
#
# A uint32 output holds the high half of h (h >> 32): the Maglev lookup maps the high 32 bits onto its table with a
# multiply-shift, so uint32 and uint64 hashes of a flow pick the same slot.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from gwlb_fast._kernels._hash cimport fmix32 as _fmix32, fmix64 as _fmix64, hash5 as _h5

import numpy as np

DEF_SEED_SALT = 0x9E3779B97F4A7C15

cdef enum:
    _MODE5 = 5
    _MODE3 = 3
    _MODE2 = 2


cdef inline uint64_t _h3(uint64_t s, uint32_t a, uint32_t b, uint64_t tag) noexcept nogil:
    cdef uint64_t lo = a if a < b else b
    cdef uint64_t hi = b if a < b else a
    return _fmix64(_fmix64(s ^ (lo | (hi << 32))) ^ tag)


def _check(arr, str name, dtype, Py_ssize_t n):
    if not isinstance(arr, np.ndarray) or arr.dtype != dtype or arr.ndim != 1 or not arr.flags.c_contiguous:
        raise ValueError(f"{name} must be a contiguous 1-D {np.dtype(dtype)} array, got "
                         f"{getattr(arr, 'dtype', type(arr).__name__)} with shape {getattr(arr, 'shape', None)}")
    if n >= 0 and arr.shape[0] != n:
        raise ValueError(f"{name} must have length {n}, got {arr.shape[0]}")


def _out_kind(out, Py_ssize_t n):
    if not isinstance(out, np.ndarray) or out.dtype not in (np.uint32, np.uint64):
        raise ValueError(f"out must be a uint32 or uint64 array, got {getattr(out, 'dtype', type(out).__name__)}")
    _check(out, "out", out.dtype, n)
    if not out.flags.writeable:
        raise ValueError("out must be writeable")
    return 64 if out.dtype == np.uint64 else 32


cdef uint64_t _seed_mix(object seed) except? 0:
    return _fmix64((<uint64_t>(int(seed) & 0xFFFFFFFFFFFFFFFF)) ^ <uint64_t>DEF_SEED_SALT)


cdef void _loop(int mode, uint64_t s, const uint32_t* src, const uint32_t* dst, const uint16_t* sp,
                const uint16_t* dp, const uint8_t* pr, uint32_t* o32, uint64_t* o64, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef uint64_t h
    # one branch-free loop per (mode, width) so the compiler can pipeline the multiplies across iterations
    if mode == _MODE5:
        if o64 != NULL:
            for i in range(n):
                o64[i] = _h5(s, src[i], dst[i], sp[i], dp[i], pr[i])
        else:
            for i in range(n):
                o32[i] = <uint32_t>(_h5(s, src[i], dst[i], sp[i], dp[i], pr[i]) >> 32)
    elif mode == _MODE3:
        if o64 != NULL:
            for i in range(n):
                o64[i] = _h3(s, src[i], dst[i], <uint64_t>pr[i] | (<uint64_t>3 << 8))
        else:
            for i in range(n):
                o32[i] = <uint32_t>(_h3(s, src[i], dst[i], <uint64_t>pr[i] | (<uint64_t>3 << 8)) >> 32)
    else:
        if o64 != NULL:
            for i in range(n):
                o64[i] = _h3(s, src[i], dst[i], <uint64_t>2 << 8)
        else:
            for i in range(n):
                o32[i] = <uint32_t>(_h3(s, src[i], dst[i], <uint64_t>2 << 8) >> 32)


cdef object _run(int mode, src_ip, dst_ip, sport, dport, proto, seed, out):
    _check(src_ip, "src_ip", np.uint32, -1)
    cdef Py_ssize_t n = src_ip.shape[0]
    _check(dst_ip, "dst_ip", np.uint32, n)
    if mode == _MODE5:
        _check(sport, "sport", np.uint16, n)
        _check(dport, "dport", np.uint16, n)
    if mode != _MODE2:
        _check(proto, "proto", np.uint8, n)
    cdef int width = _out_kind(out, n)
    cdef uint64_t s = _seed_mix(seed)
    cdef const uint32_t[::1] a = src_ip
    cdef const uint32_t[::1] b = dst_ip
    cdef const uint16_t[::1] pa
    cdef const uint16_t[::1] pb
    cdef const uint8_t[::1] pr
    cdef uint32_t[::1] o32
    cdef uint64_t[::1] o64
    cdef const uint16_t* pap = NULL
    cdef const uint16_t* pbp = NULL
    cdef const uint8_t* prp = NULL
    cdef uint32_t* o32p = NULL
    cdef uint64_t* o64p = NULL
    if n == 0:
        return out
    if mode == _MODE5:
        pa = sport
        pb = dport
        pap = &pa[0]
        pbp = &pb[0]
    if mode != _MODE2:
        pr = proto
        prp = &pr[0]
    if width == 64:
        o64 = out
        o64p = &o64[0]
    else:
        o32 = out
        o32p = &o32[0]
    with nogil:
        _loop(mode, s, &a[0], &b[0], pap, pbp, prp, o32p, o64p, n)
    return out


def hash_5tuple(src_ip, dst_ip, sport, dport, proto, seed, out):
    """Symmetric seeded hash of (src_ip, sport, dst_ip, dport, proto).

    Parameters
    ----------
    src_ip, dst_ip : uint32[n]
        IPv4 addresses, host order.
    sport, dport : uint16[n]
    proto : uint8[n]
    seed : int
        Any integer (taken modulo 2**64).
    out : uint32[n] or uint64[n]
        Written in place. A uint32 output holds the high 32 bits of the 64-bit hash.

    Returns
    -------
    out

    Notes
    -----
    ``hash(a, b, pa, pb, p) == hash(b, a, pb, pa, p)``: endpoints are ordered canonically before mixing.
    Sets no status codes; raises ValueError for a wrong dtype, length or a read-only ``out``.
    """
    return _run(_MODE5, src_ip, dst_ip, sport, dport, proto, seed, out)


def hash_3tuple(src_ip, dst_ip, proto, seed, out):
    """Symmetric seeded hash of (src_ip, dst_ip, proto); arguments as in :func:`hash_5tuple`."""
    return _run(_MODE3, src_ip, dst_ip, None, None, proto, seed, out)


def hash_2tuple(src_ip, dst_ip, seed, out):
    """Symmetric seeded hash of (src_ip, dst_ip); arguments as in :func:`hash_5tuple`."""
    return _run(_MODE2, src_ip, dst_ip, None, None, None, seed, out)


def geneve_udp_sport(hash, out, int lo=49152, int hi=65535):
    """Geneve outer UDP source port from a flow hash (RFC 8926 section 3.3: entropy for ECMP/RSS).

    Parameters
    ----------
    hash : uint32[n] or uint64[n]
        Flow hashes from ``hash_*tuple`` (a uint64 hash uses its high half, like its uint32 form).
    out : uint16[n]
        Written in place.
    lo, hi : int
        Inclusive port range, default the ephemeral range 49152-65535 the RFC recommends.

    Returns
    -------
    out

    Notes
    -----
    The high half is re-mixed (murmur3 fmix32) before the multiply-shift range reduction, so the port is not
    correlated with the Maglev slot (which uses the same bits unmixed).
    """
    if not (0 <= lo <= hi <= 65535):
        raise ValueError(f"port range must satisfy 0 <= lo <= hi <= 65535, got {lo}-{hi}")
    if not isinstance(hash, np.ndarray) or hash.dtype not in (np.uint32, np.uint64):
        raise ValueError(f"hash must be a uint32 or uint64 array, got {getattr(hash, 'dtype', type(hash).__name__)}")
    _check(hash, "hash", hash.dtype, -1)
    cdef Py_ssize_t n = hash.shape[0]
    _check(out, "out", np.uint16, n)
    cdef uint16_t[::1] o = out
    cdef const uint32_t[::1] h32
    cdef const uint64_t[::1] h64
    cdef uint64_t span = <uint64_t>(hi - lo + 1)
    cdef uint16_t base = <uint16_t>lo
    cdef Py_ssize_t i
    if n == 0:
        return out
    if hash.dtype == np.uint64:
        h64 = hash
        with nogil:
            for i in range(n):
                o[i] = base + <uint16_t>((<uint64_t>_fmix32(<uint32_t>(h64[i] >> 32)) * span) >> 32)
    else:
        h32 = hash
        with nogil:
            for i in range(n):
                o[i] = base + <uint16_t>((<uint64_t>_fmix32(h32[i]) * span) >> 32)
    return out
