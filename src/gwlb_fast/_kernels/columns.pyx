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


cdef inline void _take8(const uint8_t[::1] src, const int64_t[::1] rows, uint8_t[::1] out) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(rows.shape[0]):
        out[i] = src[rows[i]]


cdef inline void _take16(const uint16_t[::1] src, const int64_t[::1] rows, uint16_t[::1] out) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(rows.shape[0]):
        out[i] = src[rows[i]]


cdef inline void _take32(const uint32_t[::1] src, const int64_t[::1] rows, uint32_t[::1] out) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(rows.shape[0]):
        out[i] = src[rows[i]]


cdef inline void _take64(const uint64_t[::1] src, const int64_t[::1] rows, uint64_t[::1] out) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(rows.shape[0]):
        out[i] = src[rows[i]]


_VIEW = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


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
        if (not isinstance(c, np.ndarray) or c.ndim != 1 or not c.flags.c_contiguous or c.dtype.itemsize not in _VIEW
                or c.dtype.kind not in "iub" or lo < 0 or hi >= c.shape[0]):
            out.append(np.take(c, rows))
            continue
        res = np.empty(m, c.dtype)
        if m:
            size = c.dtype.itemsize
            v = _VIEW[size]
            if size == 1:
                _take8(c.view(v), r, res.view(v))
            elif size == 2:
                _take16(c.view(v), r, res.view(v))
            elif size == 4:
                _take32(c.view(v), r, res.view(v))
            else:
                _take64(c.view(v), r, res.view(v))
        out.append(res)
    return out
