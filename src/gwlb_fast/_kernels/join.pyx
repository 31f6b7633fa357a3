# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Hash joins of packet rows on a private endpoint key (ip, port, proto): the replies of a slice that wait for a
later phase of the route walk, and the packets that wait with them.

The pipeline's NAT bookkeeping asks, per slice, "did an earlier packet leave from this reply's destination?" and
"which packets belong to a flow whose reply waits?". A sort of every sender's key plus a binary search per reply
did that at O(n log n) with scattered memory access; an open-addressing table of each key's first row, built once
and probed once per row, does it in O(n), and both questions are answered in one call.
"""
import numpy as np

from libc.stdint cimport int16_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t

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


cdef class _FirstRows:
    """An open-addressing table of key -> smallest row, for the joins of ``hold_replies``."""
    cdef object _keys_a, _rows_a
    cdef uint64_t[::1] keys
    cdef int64_t[::1] rows
    cdef uint64_t mask

    def __cinit__(self, Py_ssize_t n):
        cdef Py_ssize_t cap = 16
        while cap < 2 * n:
            cap <<= 1
        self._keys_a = np.empty(cap, np.uint64)
        self._rows_a = np.full(cap, -1, np.int64)
        self.keys = self._keys_a
        self.rows = self._rows_a
        self.mask = <uint64_t>(cap - 1)

    cdef inline void add(self, uint64_t k, int64_t r) noexcept nogil:
        cdef uint64_t h = fmix64(k) & self.mask
        while self.rows[h] >= 0 and self.keys[h] != k:
            h = (h + 1) & self.mask
        if self.rows[h] < 0:
            self.keys[h] = k
            self.rows[h] = r
        elif r < self.rows[h]:
            self.rows[h] = r

    cdef inline int64_t first(self, uint64_t k) noexcept nogil:
        cdef uint64_t h = fmix64(k) & self.mask
        while self.rows[h] >= 0 and self.keys[h] != k:
            h = (h + 1) & self.mask
        return self.rows[h]


def hold_replies(src_ip, sport, dst_ip, dport, proto, senders, replies, asked, pending, int g, soon, held):
    """Private-form replies that wait for a later phase of the route walk, and the packets that wait with them.

    A reply row ``replies[j]`` with ``asked[j]`` is *soon* when a sender row (``senders[s]`` != 0) earlier in the
    batch left from the reply's destination: ``(src_ip, sport, proto)[s] == (dst_ip, dport, proto)[replies[j]]``
    and ``s < replies[j]``; its ``pending`` becomes ``g`` (the NAT gateway that will know whether its mapping
    exists). Then, with ``first`` the smallest soon reply row of a key, every sender row ``s >= first`` of its
    source's key and every row ``r >= first`` whose ``pending`` is ``g`` (soon ones included) of its destination's
    key is marked in ``held``: a flow keeps its order through the firewall.

    Parameters
    ----------
    src_ip, dst_ip : const uint32[::1], shape (n,); sport, dport : const uint16[::1]; proto : const uint8[::1]
    senders : const uint8[::1], shape (n,)
    replies : const int64[::1], shape (m,), each in ``[0, n)``
    asked : const uint8[::1], shape (m,)
    pending : int16[::1], shape (n,): in/out
    g : int, the gateway's index (>= 0)
    soon : uint8[::1], shape (m,): out
    held : uint8[::1], shape (n,): in/out (only set, never cleared)

    Returns
    -------
    int
        The number of soon replies.

    Notes
    -----
    Raises ValueError on a wrong dtype or length, a reply row outside ``[0, n)`` or a negative ``g``.
    """
    _check(src_ip, "src_ip", np.uint32)
    cdef Py_ssize_t n = src_ip.shape[0]
    _check(sport, "sport", np.uint16, n)
    _check(dst_ip, "dst_ip", np.uint32, n)
    _check(dport, "dport", np.uint16, n)
    _check(proto, "proto", np.uint8, n)
    _check(senders, "senders", np.uint8, n)
    _check(replies, "replies", np.int64)
    cdef Py_ssize_t m = replies.shape[0]
    _check(asked, "asked", np.uint8, m)
    _check(pending, "pending", np.int16, n, True)
    _check(soon, "soon", np.uint8, m, True)
    _check(held, "held", np.uint8, n, True)
    if g < 0 or g > 32767:
        raise ValueError(f"g must be in [0, 32767], got {g}")
    cdef const uint32_t[::1] sip = src_ip
    cdef const uint16_t[::1] spt = sport
    cdef const uint32_t[::1] dip = dst_ip
    cdef const uint16_t[::1] dpt = dport
    cdef const uint8_t[::1] pr = proto
    cdef const uint8_t[::1] snd = senders
    cdef const int64_t[::1] rep = replies
    cdef const uint8_t[::1] ask = asked
    cdef int16_t[::1] pend = pending
    cdef uint8_t[::1] so = soon
    cdef uint8_t[::1] hd = held
    cdef Py_ssize_t i, j, nsend = 0, nsoon = 0
    cdef int64_t r, f
    cdef bint bad = False
    with nogil:
        for j in range(m):
            so[j] = 0
            if rep[j] < 0 or rep[j] >= n:
                bad = True
        for i in range(n):
            if snd[i]:
                nsend += 1
    if bad:
        raise ValueError(f"replies must lie in [0, {n})")
    if m == 0 or nsend == 0:
        return 0
    first_sent = _FirstRows(nsend)
    with nogil:
        for i in range(n):
            if snd[i]:
                first_sent.add(_key(sip[i], spt[i], pr[i]), i)
        for j in range(m):
            if ask[j]:
                r = rep[j]
                f = first_sent.first(_key(dip[r], dpt[r], pr[r]))
                if 0 <= f < r:
                    so[j] = 1
                    pend[r] = <int16_t>g
                    nsoon += 1
    if nsoon == 0:
        return 0
    first_soon = _FirstRows(nsoon)
    with nogil:
        for j in range(m):
            if so[j]:
                r = rep[j]
                first_soon.add(_key(dip[r], dpt[r], pr[r]), r)
        for i in range(n):
            if snd[i]:
                f = first_soon.first(_key(sip[i], spt[i], pr[i]))
                if 0 <= f <= i:
                    hd[i] = 1
            if pend[i] == g:
                f = first_soon.first(_key(dip[i], dpt[i], pr[i]))
                if 0 <= f <= i:
                    hd[i] = 1
    return nsoon
