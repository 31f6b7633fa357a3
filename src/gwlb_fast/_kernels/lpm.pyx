# Batched longest-prefix match (route tables, subnet lookup): a DIR-16-8-8 multibit trie.
#
# Each table has 65,536 first-level entries indexed by the top 16 bits of the address; an entry holding a prefix
# longer than /16 points to a 256-entry second-level chunk (bits 15..8), which may point to a 256-entry third-level
# chunk (bits 7..0). Entry encoding (int32): v >= 0 is the result (route index), -1 is "no route", v <= -2 points
# to chunk (-v - 2) of the next level. A lookup is one to three dependent loads and no data-dependent search,
# which is what keeps it fast on 1,000-route tables (a sorted-prefix binary search per length was 10x slower
# there, on mispredicted branches); the price is 256 KB per table, built once in Python (vpc.Lpm).
from libc.stdint cimport int32_t, uint32_t

cdef enum:
    L1_SIZE = 65536
    CHUNK = 256


def lpm_lookup(const int32_t[::1] l1, const int32_t[::1] l2, const int32_t[::1] l3, const int32_t[::1] table,
               const uint32_t[::1] dst, int32_t[::1] out):
    """Longest-prefix match of every address in ``dst`` against its table.

    Parameters
    ----------
    l1 : int32[ntables * 65536]
        First level of every table, table ``t`` at ``l1[t * 65536:(t + 1) * 65536]``.
    l2, l3 : int32[k * 256]
        Second- and third-level chunks (l3 entries hold results or -1 only).
    table : int32[n] or int32[1]
        Table of each address (one value broadcasts). Out of range -> no match.
    dst : uint32[n]
        Addresses, host order.
    out : int32[n]
        Output: value of the longest matching prefix, -1 when none matches (also for a malformed chunk pointer).

    Returns
    -------
    int
        Number of addresses with no match.
    """
    cdef Py_ssize_t n = dst.shape[0], i
    cdef Py_ssize_t ntables = l1.shape[0] // L1_SIZE
    cdef Py_ssize_t n2 = l2.shape[0] // CHUNK, n3 = l3.shape[0] // CHUNK
    cdef Py_ssize_t misses = 0
    cdef int32_t t, e
    cdef uint32_t ip
    cdef bint broadcast
    if l1.shape[0] % L1_SIZE:
        raise ValueError(f"l1: length must be a multiple of {L1_SIZE}, got {l1.shape[0]}")
    if l2.shape[0] % CHUNK or l3.shape[0] % CHUNK:
        raise ValueError(f"l2, l3: lengths must be multiples of {CHUNK}")
    if out.shape[0] != n:
        raise ValueError(f"out: expected int32[{n}], got length {out.shape[0]}")
    if table.shape[0] != n and table.shape[0] != 1:
        raise ValueError(f"table: expected int32[{n}] or int32[1], got length {table.shape[0]}")
    if n == 0:
        return 0
    broadcast = table.shape[0] == 1
    with nogil:
        t = table[0]
        for i in range(n):
            if not broadcast:
                t = table[i]
            e = -1
            if 0 <= t < ntables:
                ip = dst[i]
                e = l1[<Py_ssize_t>t * L1_SIZE + (ip >> 16)]
                if e <= -2:
                    e = -e - 2
                    e = l2[<Py_ssize_t>e * CHUNK + ((ip >> 8) & 0xFF)] if e < n2 else -1
                    if e <= -2:
                        e = -e - 2
                        e = l3[<Py_ssize_t>e * CHUNK + (ip & 0xFF)] if e < n3 else -1
                        if e < -1:
                            e = -1
            out[i] = e
            if e < 0:
                misses += 1
    return misses
