# cython: language_level=3
"""Rows of many columns at once: the gather behind ``PacketBatch[rows]``.

A stage's share of a batch (a firewall's packets, the packets routed to an endpoint, the delivered ones) is every
column of the batch taken at the same rows: about 55 column values a packet on the bench path. NumPy's ``take``
spends about 13 instructions per value there (a per-element switch on the item size, through its generic
iterator); a typed loop per column spends two or three, and the bounds of the rows are checked once for all the
columns. ``put_columns`` is the way back: a stage's rewritten columns scattered to the batch's rows, in the same
typed loops.

``tally`` counts rows and their bytes per key (the GWLB's packets and bytes per firewall) in one pass with integer
sums, where ``np.bincount`` takes a masked copy of the keys and a float pass per weight. ``group_rows`` sorts rows
by a small key (a firewall's share of a batch) in two passes, where ``np.flatnonzero(keys == j)`` takes one pass per
key.
"""
import numpy as np

from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t


ctypedef fused item:
    uint8_t
    uint16_t
    uint32_t
    uint64_t


cdef inline void _take(const item[::1] src, const int64_t[::1] rows, item[::1] out) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(rows.shape[0]):
        out[i] = src[rows[i]]


cdef void _rows_as(object c, const int64_t[::1] r, object other, Py_ssize_t size, bint put):
    """One column's gather (``other[i] = c[r[i]]``) or, with ``put``, scatter (``other[r[i]] = c[i]``), its items
    seen as unsigned integers of ``size`` bytes, without the GIL."""
    cdef const uint8_t[::1] s8
    cdef uint8_t[::1] o8
    cdef const uint16_t[::1] s16
    cdef uint16_t[::1] o16
    cdef const uint32_t[::1] s32
    cdef uint32_t[::1] o32
    cdef const uint64_t[::1] s64
    cdef uint64_t[::1] o64
    if size == 1:
        s8, o8 = c.view(np.uint8), other.view(np.uint8)
        with nogil:
            if put:
                _put(s8, r, o8)
            else:
                _take(s8, r, o8)
    elif size == 2:
        s16, o16 = c.view(np.uint16), other.view(np.uint16)
        with nogil:
            if put:
                _put(s16, r, o16)
            else:
                _take(s16, r, o16)
    elif size == 4:
        s32, o32 = c.view(np.uint32), other.view(np.uint32)
        with nogil:
            if put:
                _put(s32, r, o32)
            else:
                _take(s32, r, o32)
    else:
        s64, o64 = c.view(np.uint64), other.view(np.uint64)
        with nogil:
            if put:
                _put(s64, r, o64)
            else:
                _take(s64, r, o64)


cdef tuple _rows_in_bounds(rows):
    """A 1-D integer array of rows as contiguous int64, with its smallest and largest row (0 and -1 when empty)."""
    r64 = np.ascontiguousarray(rows, dtype=np.int64)
    cdef const int64_t[::1] r = r64
    cdef Py_ssize_t i
    cdef int64_t lo = 0, hi = -1
    with nogil:
        if r.shape[0]:
            lo = r[0]
            hi = r[0]
            for i in range(1, r.shape[0]):
                if r[i] < lo:
                    lo = r[i]
                elif r[i] > hi:
                    hi = r[i]
    return r64, lo, hi


_SIZES = (1, 2, 4, 8)


def take_columns(rows, list cols) -> list:
    """``[c.take(rows) for c in cols]``, each a new array of its column's dtype.

    ``rows`` is a 1-D integer array. A column that is not a 1-D contiguous array of 1-, 2-, 4- or 8-byte items, and
    every column when a row lies outside ``[0, len(column))`` (negative rows count from the end; out of range ones
    raise IndexError), goes through ``numpy.take`` itself, with its results and errors.
    """
    rows = np.asarray(rows)
    if rows.ndim != 1 or rows.dtype.kind not in "iu":
        return [np.take(c, rows) for c in cols]
    r64, lo, hi = _rows_in_bounds(rows)
    cdef const int64_t[::1] r = r64
    cdef Py_ssize_t m = r.shape[0]
    out = []
    for c in cols:
        if (not isinstance(c, np.ndarray) or c.ndim != 1 or not c.flags.c_contiguous or c.dtype.itemsize not in _SIZES
                or c.dtype.kind not in "iub" or lo < 0 or hi >= c.shape[0]):
            out.append(np.take(c, rows))
            continue
        res = np.empty(m, c.dtype)
        if m:
            _rows_as(c, r, res, c.dtype.itemsize, False)
        out.append(res)
    return out


cdef inline void _put(const item[::1] src, const int64_t[::1] rows, item[::1] out) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(rows.shape[0]):
        out[rows[i]] = src[i]


def put_columns(rows, list dsts, list srcs) -> None:
    """``for d, s in zip(dsts, srcs): d[rows] = s``, in place: the scatter back of a stage's share of a batch.

    ``rows`` is a 1-D integer array, each ``srcs[j]`` holds one value per row (in row order; a repeated row takes
    its last value). A pair that is not two 1-D contiguous arrays of one 1-, 2-, 4- or 8-byte integer or bool
    dtype, a source whose length is not the rows', a read-only destination, and every pair when a row lies
    outside ``[0, len(destination))`` (negative rows count from the end; out of range ones raise IndexError) go
    through NumPy's assignment itself, with its conversions and errors.
    """
    if len(dsts) != len(srcs):
        raise ValueError(f"put_columns: {len(dsts)} destinations, {len(srcs)} sources")
    rows = np.asarray(rows)
    if rows.ndim != 1 or rows.dtype.kind not in "iu":
        for d, c in zip(dsts, srcs):
            d[rows] = c
        return
    r64, lo, hi = _rows_in_bounds(rows)
    cdef const int64_t[::1] r = r64
    cdef Py_ssize_t m = r.shape[0]
    for d, c in zip(dsts, srcs):
        if (not isinstance(d, np.ndarray) or not isinstance(c, np.ndarray) or d.ndim != 1 or c.ndim != 1
                or not d.flags.c_contiguous or not c.flags.c_contiguous or not d.flags.writeable
                or d.dtype != c.dtype or d.dtype.itemsize not in _SIZES or d.dtype.kind not in "iub"
                or c.shape[0] != m or lo < 0 or hi >= d.shape[0]):
            d[rows] = c
            continue
        if m:
            _rows_as(c, r, d, d.dtype.itemsize, True)


ctypedef fused key_t:
    int16_t
    int32_t
    int64_t


cdef Py_ssize_t _tally(const key_t[::1] keys, const uint32_t[::1] nbytes, int64_t[::1] out_packets,
                       int64_t[::1] out_bytes, Py_ssize_t* counted) noexcept nogil:
    """Add each row with a key in [0, k) to its counters (their number to ``counted``); return the first row with
    a key >= k, or -1."""
    cdef Py_ssize_t i, k = out_packets.shape[0], bad = -1, c = 0
    cdef int64_t key
    for i in range(keys.shape[0]):
        key = keys[i]
        if key < 0:
            continue
        if key >= k:
            if bad < 0:
                bad = i
            continue
        out_packets[key] += 1
        out_bytes[key] += nbytes[i]
        c += 1
    counted[0] = c
    return bad


def tally(keys, nbytes, out_packets, out_bytes) -> int:
    """Per key, the rows and their bytes: ``out_packets[k] += count of rows with keys == k`` and ``out_bytes[k] +=
    their nbytes`` (``np.bincount`` of the rows with a key >= 0, one pass, integer sums), in place.

    ``keys`` int16, int32 or int64 (rows with a negative key are skipped), ``nbytes`` uint32 of the same length,
    ``out_packets`` and ``out_bytes`` int64 of one length k; every array 1-D and contiguous. Returns the number of
    rows counted. ValueError naming the argument on a wrong dtype, length or layout, or when a key is >= k (the
    counters are then left as they were).
    """
    cdef const int16_t[::1] k16
    cdef const int32_t[::1] k32
    cdef const int64_t[::1] k64
    for name, a in (("keys", keys), ("nbytes", nbytes), ("out_packets", out_packets), ("out_bytes", out_bytes)):
        if not isinstance(a, np.ndarray) or a.ndim != 1 or not a.flags.c_contiguous:
            raise ValueError(f"tally: {name} must be a 1-D contiguous numpy array")
    if keys.dtype not in (np.int16, np.int32, np.int64):
        raise ValueError(f"tally: keys must be int16, int32 or int64, got {keys.dtype}")
    if nbytes.dtype != np.uint32:
        raise ValueError(f"tally: nbytes must be uint32, got {nbytes.dtype}")
    if out_packets.dtype != np.int64 or out_bytes.dtype != np.int64:
        raise ValueError("tally: out_packets and out_bytes must be int64")
    if nbytes.shape[0] != keys.shape[0]:
        raise ValueError(f"tally: nbytes has {nbytes.shape[0]} rows, keys {keys.shape[0]}")
    if out_bytes.shape[0] != out_packets.shape[0]:
        raise ValueError(f"tally: out_bytes has {out_bytes.shape[0]} counters, out_packets {out_packets.shape[0]}")
    if not out_packets.flags.writeable or not out_bytes.flags.writeable:
        raise ValueError("tally: out_packets and out_bytes must be writable")
    cdef const uint32_t[::1] nb = nbytes
    cdef int64_t[::1] op = out_packets
    cdef int64_t[::1] ob = out_bytes
    cdef Py_ssize_t bad, c = 0
    cdef int64_t hi = out_packets.shape[0]
    before_p, before_b = out_packets.copy(), out_bytes.copy()
    if keys.dtype == np.int16:
        k16 = keys
        with nogil:
            bad = _tally(k16, nb, op, ob, &c)
    elif keys.dtype == np.int32:
        k32 = keys
        with nogil:
            bad = _tally(k32, nb, op, ob, &c)
    else:
        k64 = keys
        with nogil:
            bad = _tally(k64, nb, op, ob, &c)
    if bad >= 0:
        out_packets[:] = before_p
        out_bytes[:] = before_b
        raise ValueError(f"tally: key {int(keys[bad])} at row {bad} is outside [0, {hi})")
    return c


cdef Py_ssize_t _group(const key_t[::1] keys, int64_t[::1] starts, int64_t[::1] order) noexcept nogil:
    """Counting sort of the rows by key: ``starts`` (k + 1, zeroed) gets the bounds, ``order`` the rows; returns the
    first row whose key is outside [0, k), or -1 (``order`` then unspecified)."""
    cdef Py_ssize_t i, n = keys.shape[0], k = starts.shape[0] - 1
    cdef int64_t key
    for i in range(n):
        key = keys[i]
        if key < 0 or key >= k:
            return i
        starts[key + 1] += 1
    for i in range(k):
        starts[i + 1] += starts[i]
    for i in range(n):  # starts[key] runs ahead as rows are placed; shifted back below
        key = keys[i]
        order[starts[key]] = i
        starts[key] += 1
    for i in range(k, 0, -1):
        starts[i] = starts[i - 1]
    starts[0] = 0
    return -1


def group_rows(keys, Py_ssize_t k):
    """The rows of each key ``0 .. k-1``, key by key, ascending within a key (a stable counting sort):
    ``(order, starts)``, int64 arrays of n and k + 1 items; the rows of key ``j`` are ``order[starts[j]:starts[j
    + 1]]``, i.e. ``np.flatnonzero(keys == j)``.

    ``keys`` is a 1-D contiguous int16, int32 or int64 array. ValueError naming the argument on a wrong dtype or
    layout, a negative ``k``, or a key outside ``[0, k)``.
    """
    cdef const int16_t[::1] k16
    cdef const int32_t[::1] k32
    cdef const int64_t[::1] k64
    if not isinstance(keys, np.ndarray) or keys.ndim != 1 or not keys.flags.c_contiguous:
        raise ValueError("group_rows: keys must be a 1-D contiguous numpy array")
    if keys.dtype not in (np.int16, np.int32, np.int64):
        raise ValueError(f"group_rows: keys must be int16, int32 or int64, got {keys.dtype}")
    if k < 0:
        raise ValueError(f"group_rows: k must be >= 0, got {k}")
    order = np.empty(keys.shape[0], np.int64)
    starts = np.zeros(k + 1, np.int64)
    cdef int64_t[::1] o = order
    cdef int64_t[::1] s = starts
    cdef Py_ssize_t bad
    if keys.dtype == np.int16:
        k16 = keys
        with nogil:
            bad = _group(k16, s, o)
    elif keys.dtype == np.int32:
        k32 = keys
        with nogil:
            bad = _group(k32, s, o)
    else:
        k64 = keys
        with nogil:
            bad = _group(k64, s, o)
    if bad >= 0:
        raise ValueError(f"group_rows: key {int(keys[bad])} at row {bad} is outside [0, {k})")
    return order, starts
