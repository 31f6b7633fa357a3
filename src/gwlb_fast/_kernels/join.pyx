# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Hash join of packet rows on a private endpoint key (ip, port, proto): for each probe row, the first build row
with the same key.

The pipeline's NAT bookkeeping asks, per slice, "did an earlier packet leave from this reply's destination?" and
"which packets belong to a flow whose reply waits?". A sort of every sender's key plus a binary search per reply
did that at O(n log n) with scattered memory access; one open-addressing table built over the build rows and
probed once per probe row does it in O(n).
"""
import numpy as np

from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t

from gwlb_fast._kernels._hash cimport fmix64


def _check(arr, str name, dtype, Py_ssize_t n=-1, bint writeable=False):
    if not isinstance(arr, np.ndarray) or arr.dtype != dtype or arr.ndim != 1 or not arr.flags.c_contiguous:
        raise ValueError(f"{name} must be a contiguous 1-D {np.dtype(dtype)} array, got "
                         f"{getattr(arr, 'dtype', type(arr).__name__)}")
    if n >= 0 and arr.shape[0] != n:
        raise ValueError(f"{name} must have length {n}, got {arr.shape[0]}")
    if writeable and not arr.flags.writeable:
        raise ValueError(f"{name} must be writeable")


cdef inline uint64_t _key(uint32_t ip, uint16_t port, uint8_t proto) noexcept nogil:
    return (<uint64_t>ip << 24) | (<uint64_t>port << 8) | proto


def first_row_join(build_ip, build_port, proto, build_rows, probe_ip, probe_port, probe_rows, out):
    """For each probe row, the smallest build row whose (ip, port, proto) key equals the probe row's.

    The key of build row ``r`` is ``(build_ip[r], build_port[r], proto[r])``, that of probe row ``q`` is
    ``(probe_ip[q], probe_port[q], proto[q])``: the columns are whole batch columns and the rows index them, so
    a caller joins e.g. senders' sources against replies' destinations without gathering any column.

    Parameters
    ----------
    build_ip, probe_ip : const uint32[::1], shape (n,)
    build_port, probe_port : const uint16[::1], shape (n,)
    proto : const uint8[::1], shape (n,)
    build_rows : const int64[::1], shape (b,)
        Rows (in ``[0, n)``) that make the table; any order, repeats allowed.
    probe_rows : const int64[::1], shape (p,)
        Rows (in ``[0, n)``) to look up.
    out : int64[::1], shape (p,)
        Filled with the smallest build row of each probe row's key, -1 where no build row has it.

    Returns
    -------
    ndarray
        ``out``.

    Notes
    -----
    Raises ValueError on a wrong dtype or length, or a row outside ``[0, n)``; no packet status is involved.
    """
    _check(build_ip, "build_ip", np.uint32)
    cdef Py_ssize_t n = build_ip.shape[0]
    _check(build_port, "build_port", np.uint16, n)
    _check(proto, "proto", np.uint8, n)
    _check(probe_ip, "probe_ip", np.uint32, n)
    _check(probe_port, "probe_port", np.uint16, n)
    _check(build_rows, "build_rows", np.int64)
    _check(probe_rows, "probe_rows", np.int64)
    cdef Py_ssize_t nb = build_rows.shape[0]
    cdef Py_ssize_t npr = probe_rows.shape[0]
    _check(out, "out", np.int64, npr, True)
    cdef const uint32_t[::1] bip = build_ip
    cdef const uint16_t[::1] bpt = build_port
    cdef const uint8_t[::1] pr = proto
    cdef const uint32_t[::1] qip = probe_ip
    cdef const uint16_t[::1] qpt = probe_port
    cdef const int64_t[::1] brows = build_rows
    cdef const int64_t[::1] qrows = probe_rows
    cdef int64_t[::1] o = out
    cdef Py_ssize_t i
    cdef int64_t r, bad = 0
    with nogil:
        for i in range(nb):
            if brows[i] < 0 or brows[i] >= n:
                bad = 1
        for i in range(npr):
            if qrows[i] < 0 or qrows[i] >= n:
                bad = 1
    if bad:
        raise ValueError(f"build_rows and probe_rows must lie in [0, {n})")
    cdef Py_ssize_t cap = 16
    while cap < 2 * nb:
        cap <<= 1
    tkeys_a = np.empty(cap, np.uint64)
    trows_a = np.full(cap, -1, np.int64)  # -1: empty slot
    cdef uint64_t[::1] tk = tkeys_a
    cdef int64_t[::1] tr = trows_a
    cdef uint64_t mask = <uint64_t>(cap - 1)
    cdef uint64_t k, h
    with nogil:
        for i in range(nb):
            r = brows[i]
            k = _key(bip[r], bpt[r], pr[r])
            h = fmix64(k) & mask
            while tr[h] >= 0 and tk[h] != k:
                h = (h + 1) & mask
            if tr[h] < 0:
                tk[h] = k
                tr[h] = r
            elif r < tr[h]:
                tr[h] = r
        for i in range(npr):
            r = qrows[i]
            k = _key(qip[r], qpt[r], pr[r])
            h = fmix64(k) & mask
            while tr[h] >= 0 and tk[h] != k:
                h = (h + 1) & mask
            o[i] = tr[h]  # -1 when the probe ended on an empty slot
    return out
