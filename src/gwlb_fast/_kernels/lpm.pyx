# Batched longest-prefix match (route tables, subnet lookup).
#
# Layout: each table is a run of prefix-length blocks, longest first; block b holds the sorted, unique network
# addresses keys[block_start[b]:block_start[b+1]] of length block_len[b] and their values. A lookup masks the
# address to each length of its table in turn and binary-searches that block; the first hit is the longest match.
# Route tables use a handful of distinct lengths, so this is a few cache-resident probes per packet and needs no
# 64 MB DIR-24-8 array per table.
from libc.stdint cimport int32_t, uint8_t, uint32_t


cdef inline uint32_t _mask(uint8_t plen) noexcept nogil:
    if plen == 0:
        return 0
    return (~(<uint32_t>0)) << (32 - plen)


cdef inline int32_t _lookup(const uint32_t* keys, const int32_t* vals, const int32_t* block_start,
                            const uint8_t* block_len, int32_t b0, int32_t b1, uint32_t ip) noexcept nogil:
    cdef int32_t b, lo, hi, mid
    cdef uint32_t k, v
    for b in range(b0, b1):
        k = ip & _mask(block_len[b])
        lo = block_start[b]
        hi = block_start[b + 1]
        while lo < hi:
            mid = lo + ((hi - lo) >> 1)
            v = keys[mid]
            if v < k:
                lo = mid + 1
            elif v > k:
                hi = mid
            else:
                return vals[mid]
    return -1


def lpm_lookup(const uint32_t[::1] keys, const int32_t[::1] vals, const int32_t[::1] block_start,
               const uint8_t[::1] block_len, const int32_t[::1] table_start, const int32_t[::1] table,
               const uint32_t[::1] dst, int32_t[::1] out):
    """Longest-prefix match of every address in ``dst`` against its table.

    Parameters
    ----------
    keys : uint32[m]
        Network addresses (host order), grouped in blocks, sorted and unique within a block.
    vals : int32[m]
        Value of each prefix (a route index).
    block_start : int32[nblocks + 1]
        Block ``b`` is ``keys[block_start[b]:block_start[b + 1]]``.
    block_len : uint8[nblocks]
        Prefix length (0..32) of each block; within a table, blocks go from longest to shortest.
    table_start : int32[ntables + 1]
        Table ``t`` is blocks ``table_start[t]:table_start[t + 1]``.
    table : int32[n] or int32[1]
        Table of each address (one value broadcasts). Out of range -> no match.
    dst : uint32[n]
        Addresses, host order.
    out : int32[n]
        Output: value of the longest matching prefix, -1 when none matches.

    Returns
    -------
    int
        Number of addresses with no match.
    """
    cdef Py_ssize_t n = dst.shape[0], i
    cdef Py_ssize_t nblocks = block_len.shape[0]
    cdef Py_ssize_t ntables = table_start.shape[0] - 1
    cdef int32_t t
    cdef int32_t r
    cdef Py_ssize_t misses = 0
    cdef bint broadcast
    if out.shape[0] != n:
        raise ValueError(f"out: expected int32[{n}], got length {out.shape[0]}")
    if table.shape[0] != n and table.shape[0] != 1:
        raise ValueError(f"table: expected int32[{n}] or int32[1], got length {table.shape[0]}")
    if vals.shape[0] != keys.shape[0]:
        raise ValueError("vals: must have the length of keys")
    if block_start.shape[0] != nblocks + 1:
        raise ValueError("block_start: must have len(block_len) + 1 entries")
    if ntables < 0:
        raise ValueError("table_start: needs at least one entry")
    for i in range(nblocks):
        if block_len[i] > 32:
            raise ValueError(f"block_len: prefix length {block_len[i]} > 32")
        if block_start[i] < 0 or block_start[i] > block_start[i + 1] or block_start[i + 1] > keys.shape[0]:
            raise ValueError("block_start: blocks must be ordered and inside keys")
    for i in range(ntables):
        if table_start[i] < 0 or table_start[i] > table_start[i + 1] or table_start[i + 1] > nblocks:
            raise ValueError("table_start: tables must be ordered and inside the blocks")
    if n == 0:
        return 0
    broadcast = table.shape[0] == 1
    with nogil:
        t = table[0]
        for i in range(n):
            if not broadcast:
                t = table[i]
            if t < 0 or t >= ntables:
                r = -1
            else:
                r = _lookup(&keys[0] if keys.shape[0] else NULL, &vals[0] if vals.shape[0] else NULL,
                            &block_start[0], &block_len[0] if nblocks else NULL,
                            table_start[t], table_start[t + 1], dst[i])
            out[i] = r
            if r < 0:
                misses += 1
    return misses
