# cython: language_level=3
"""Rows of many columns at once: the gather behind ``PacketBatch[rows]``.

A stage's share of a batch (a firewall's packets, the packets routed to an endpoint, the delivered ones) is every
column of the batch taken at the same rows: about 55 column values a packet on the bench path. NumPy's ``take``
spends about 13 instructions per value there (a per-element switch on the item size, through its generic
iterator); a typed loop per column spends two or three, and the bounds of the rows are checked once for all the
columns.
"""
import numpy as np

from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t


ctypedef fused item:
    uint8_t
    uint16_t
    uint32_t
    uint64_t


cdef inline void _take(const item[::1] src, const int64_t[::1] rows, item[::1] out) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(rows.shape[0]):
        out[i] = src[rows[i]]


cdef void _take_as(object c, const int64_t[::1] r, object res, Py_ssize_t size):
    """One column's gather, its items seen as unsigned integers of ``size`` bytes, without the GIL."""
    cdef const uint8_t[::1] s8
    cdef uint8_t[::1] o8
    cdef const uint16_t[::1] s16
    cdef uint16_t[::1] o16
    cdef const uint32_t[::1] s32
    cdef uint32_t[::1] o32
    cdef const uint64_t[::1] s64
    cdef uint64_t[::1] o64
    if size == 1:
        s8, o8 = c.view(np.uint8), res.view(np.uint8)
        with nogil:
            _take(s8, r, o8)
    elif size == 2:
        s16, o16 = c.view(np.uint16), res.view(np.uint16)
        with nogil:
            _take(s16, r, o16)
    elif size == 4:
        s32, o32 = c.view(np.uint32), res.view(np.uint32)
        with nogil:
            _take(s32, r, o32)
    else:
        s64, o64 = c.view(np.uint64), res.view(np.uint64)
        with nogil:
            _take(s64, r, o64)


_SIZES = (1, 2, 4, 8)


def take_columns(rows, list cols) -> list:
    """``[c.take(rows) for c in cols]``, each a new array of its column's dtype.

    ``rows`` is a 1-D integer array. A column that is not a 1-D contiguous array of 1-, 2-, 4- or 8-byte items, and
    every column when a row lies outside ``[0, len(column))`` (negative rows count from the end; out of range ones
    raise IndexError), goes through ``numpy.take`` itself, with its results and errors.
    """
    cdef const int64_t[::1] r
    rows = np.asarray(rows)
    if rows.ndim != 1 or rows.dtype.kind not in "iu":
        return [np.take(c, rows) for c in cols]
    r64 = np.ascontiguousarray(rows, dtype=np.int64)
    r = r64
    cdef Py_ssize_t m = r.shape[0], i
    cdef int64_t lo = 0, hi = -1
    with nogil:
        if m:
            lo = r[0]
            hi = r[0]
            for i in range(1, m):
                if r[i] < lo:
                    lo = r[i]
                elif r[i] > hi:
                    hi = r[i]
    out = []
    for c in cols:
        if (not isinstance(c, np.ndarray) or c.ndim != 1 or not c.flags.c_contiguous or c.dtype.itemsize not in _SIZES
                or c.dtype.kind not in "iub" or lo < 0 or hi >= c.shape[0]):
            out.append(np.take(c, rows))
            continue
        res = np.empty(m, c.dtype)
        if m:
            _take_as(c, r, res, c.dtype.itemsize)
        out.append(res)
    return out
