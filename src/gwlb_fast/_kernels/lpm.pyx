# Batched longest-prefix match (route tables, subnet lookup): a DIR-16-8-8 multibit trie.
#
# Each table has 65,536 first-level entries indexed by the top 16 bits of the address; an entry holding a prefix
# longer than /16 points to a 256-entry second-level chunk (bits 15..8), which may point to a 256-entry third-level
# chunk (bits 7..0). Entry encoding (int32): v >= 0 is the result (route index), -1 is "no route", v <= -2 points
# to chunk (-v - 2) of the next level. A lookup is one to three dependent loads and no data-dependent search,
# which is what keeps it fast on 1,000-route tables (a sorted-prefix binary search per length was 10x slower
# there, on mispredicted branches); the price is 256 KB per table, built once in Python (vpc.Lpm).
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t, uint32_t

cdef enum:
    L1_SIZE = 65536
    CHUNK = 256


cdef inline int32_t _lookup_one(const int32_t[::1] l1, const int32_t[::1] l2, const int32_t[::1] l3,
                                Py_ssize_t ntables, Py_ssize_t n2, Py_ssize_t n3, int32_t t,
                                uint32_t ip) noexcept nogil:
    # the longest-prefix match of one address in table t (see lpm_lookup): the value, -1 for none
    cdef int32_t e = -1
    if 0 <= t < ntables:
        e = l1[<Py_ssize_t>t * L1_SIZE + (ip >> 16)]
        if e <= -2:
            e = -e - 2
            e = l2[<Py_ssize_t>e * CHUNK + ((ip >> 8) & 0xFF)] if e < n2 else -1
            if e <= -2:
                e = -e - 2
                e = l3[<Py_ssize_t>e * CHUNK + (ip & 0xFF)] if e < n3 else -1
                if e < -1:
                    e = -1
    return e


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
            e = _lookup_one(l1, l2, l3, ntables, n2, n3, t, dst[i])
            out[i] = e
            if e < 0:
                misses += 1
    return misses


def next_hops(const int32_t[::1] l1, const int32_t[::1] l2, const int32_t[::1] l3, const int32_t[::1] table_base,
              const int8_t[::1] route_kind, const int32_t[::1] route_target, int8_t no_route,
              const uint8_t[::1] status, int32_t[::1] table, const uint8_t[::1] delivered, const uint8_t[::1] held,
              const int16_t[::1] vpc, const uint32_t[::1] dst, int64_t[::1] rows, int8_t[::1] kind,
              int32_t[::1] target):
    """One hop of the route walk over a whole batch: the rows still walking (status 0, at a route table, not
    delivered, not held), in order, each with the kind and target of the route it takes; their table is set to
    -1 (each packet moves on from the table it was at).

    Parameters
    ----------
    l1, l2, l3 : the arrays of ``lpm_lookup`` holding the route tables of every VPC, VPC ``v``'s table ``t`` at
        table ``table_base[v] + t`` (``vpc.Lpm.stack``); a value is an index into ``route_kind`` and
        ``route_target``.
    table_base : int32[nvpc + 1]
        VPC ``v`` has the tables ``table_base[v]`` to ``table_base[v + 1] - 1``; a row whose table lies beyond its
        VPC's has no route.
    route_kind : int8[nroutes], route_target : int32[nroutes]
        Next-hop kind and target of every route.
    no_route : kind of a row whose table has no route for its address (target -1); also of a row whose VPC is
        out of range.
    status, delivered, held : uint8[n]; table : int32[n] (written); vpc : int16[n]; dst : uint32[n]
    rows : int64[n], kind : int8[n], target : int32[n]
        Output, the first ``m`` entries.

    Returns
    -------
    int
        ``m``, the number of rows walking.
    """
    cdef Py_ssize_t n = status.shape[0], i, m = 0
    cdef Py_ssize_t ntables = l1.shape[0] // L1_SIZE, nvpc = table_base.shape[0] - 1
    cdef Py_ssize_t n2 = l2.shape[0] // CHUNK, n3 = l3.shape[0] // CHUNK, nroutes = route_kind.shape[0]
    cdef int32_t e
    cdef int16_t v
    if l1.shape[0] % L1_SIZE:
        raise ValueError(f"l1: length must be a multiple of {L1_SIZE}, got {l1.shape[0]}")
    if l2.shape[0] % CHUNK or l3.shape[0] % CHUNK:
        raise ValueError(f"l2, l3: lengths must be multiples of {CHUNK}")
    if nvpc < 0:
        raise ValueError("table_base: needs at least one entry (nvpc + 1)")
    if route_target.shape[0] != nroutes:
        raise ValueError(f"route_target: expected length {nroutes}, got {route_target.shape[0]}")
    for name, k in (("table", table.shape[0]), ("delivered", delivered.shape[0]), ("held", held.shape[0]),
                    ("vpc", vpc.shape[0]), ("dst", dst.shape[0]), ("rows", rows.shape[0]),
                    ("kind", kind.shape[0]), ("target", target.shape[0])):
        if k != n:
            raise ValueError(f"next_hops: {name} has length {k}, expected {n}")
    with nogil:
        for i in range(n):
            if status[i] != 0 or table[i] < 0 or delivered[i] != 0 or held[i] != 0:
                continue
            v = vpc[i]
            e = -1
            if 0 <= v < nvpc and table_base[v] + table[i] < table_base[v + 1]:
                e = _lookup_one(l1, l2, l3, ntables, n2, n3, table_base[v] + table[i], dst[i])
            rows[m] = i
            if 0 <= e < nroutes:
                kind[m] = route_kind[e]
                target[m] = route_target[e]
            else:
                kind[m] = no_route
                target[m] = -1
            table[i] = -1
            m += 1
    return m


def enter_subnets(const int32_t[::1] l1, const int32_t[::1] l2, const int32_t[::1] l3,
                  const int32_t[::1] subnet_table, int16_t vpc_id, uint8_t local, const uint8_t[::1] status,
                  int16_t[::1] vpc, int32_t[::1] table, uint8_t[::1] delivered, const uint32_t[::1] src,
                  const uint32_t[::1] dst, int64_t[::1] same):
    """Where the packets of one VPC enter the route walk: every row with status 0 and no VPC yet whose source is in
    one of the VPC's subnets (``l1``, ``l2``, ``l3``: the subnets' LPM, table 0, values subnet ids) takes VPC
    ``vpc_id`` and its subnet's route table (``subnet_table``); one whose destination is in the same subnet is
    delivered by the VPC itself (table -1, ``delivered`` = ``local``) and listed in ``same``, in order.

    Returns
    -------
    int
        The number of rows listed in ``same`` (its first entries).
    """
    cdef Py_ssize_t n = status.shape[0], i, m = 0
    cdef Py_ssize_t ntables = l1.shape[0] // L1_SIZE, nsub = subnet_table.shape[0]
    cdef Py_ssize_t n2 = l2.shape[0] // CHUNK, n3 = l3.shape[0] // CHUNK
    cdef int32_t s
    if l1.shape[0] % L1_SIZE:
        raise ValueError(f"l1: length must be a multiple of {L1_SIZE}, got {l1.shape[0]}")
    if l2.shape[0] % CHUNK or l3.shape[0] % CHUNK:
        raise ValueError(f"l2, l3: lengths must be multiples of {CHUNK}")
    for name, k in (("vpc", vpc.shape[0]), ("table", table.shape[0]), ("delivered", delivered.shape[0]),
                    ("src", src.shape[0]), ("dst", dst.shape[0]), ("same", same.shape[0])):
        if k != n:
            raise ValueError(f"enter_subnets: {name} has length {k}, expected {n}")
    with nogil:
        for i in range(n):
            if status[i] != 0 or vpc[i] >= 0:
                continue
            s = _lookup_one(l1, l2, l3, ntables, n2, n3, 0, src[i])
            if s < 0 or s >= nsub:
                continue
            vpc[i] = vpc_id
            table[i] = subnet_table[s]
            if _lookup_one(l1, l2, l3, ntables, n2, n3, 0, dst[i]) == s:
                table[i] = -1
                delivered[i] = local
                same[m] = i
                m += 1
    return m
