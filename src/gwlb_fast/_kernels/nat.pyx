# NAT gateway kernels: classify packets, allocate SNAT ports, rewrite headers with incremental checksums.
#
# The translation table itself is the shared FlowTable (flowtable.pyx); these kernels hold what is NAT-specific:
#   owner   int32[3 * 65536]  (protocol index, public port) -> FlowTable slot of the SNAT mapping, -1 = free
#   ring    uint16[3 * R]     per-protocol FIFO of free public ports (R = size of the configured port range);
#           head/count int64[3] locate each protocol's queue. Allocation pops the head, release pushes the tail, so
#           the port sequence is deterministic and a freed port is reused last (fewer stale-mapping surprises).
#   slot_port int32[capacity] FlowTable slot -> public port, -1 = none
# Protocol index: 0 TCP, 1 UDP, 2 ICMP (query identifier translated like a port).
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t

from gwlb_fast._kernels._bytes cimport csum_update16, load_be16, load_be32, store_be16, store_be32
from gwlb_fast._kernels._status cimport ST_L4_TRUNCATED, ST_NAT_NO_MAPPING, ST_NOT_FORWARDED, ST_OK, ST_TRUNCATED

cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define NAT_PREFETCH(p) __builtin_prefetch((const void *)(p), 1, 3)
    #else
    #define NAT_PREFETCH(p) ((void)(p))
    #endif
    """
    void NAT_PREFETCH(const void* p) noexcept nogil

cdef enum:
    # packets ahead whose headers are prefetched in nat_rewrite: once the arena outgrows the caches the loop waits
    # on memory, not on work (prefetching an address never faults, even outside the arena)
    AHEAD = 8
    IPPROTO_ICMP = 1
    IPPROTO_TCP = 6
    IPPROTO_UDP = 17
    NPORTS = 65536

# actions (also the translation kind of the per-packet record)
NAT_NONE = 0
NAT_SNAT = 1          # outbound, private source -> public_ip:allocated port
NAT_SNAT_REPLY = 2    # inbound reply to an SNAT mapping: public destination -> private address
NAT_DNAT = 3          # inbound to a DNAT rule: public_ip:port -> server
NAT_DNAT_REPLY = 4    # outbound reply from a DNAT server: server source -> public_ip:rule port

cdef enum:
    A_NONE = 0
    A_SNAT = 1
    A_SNAT_REPLY = 2
    A_DNAT = 3
    A_DNAT_REPLY = 4


cdef inline int _pidx(uint8_t proto, uint8_t icmp_type) noexcept nogil:
    """Protocol index, or -1 for traffic the NAT gateway does not translate."""
    if proto == IPPROTO_TCP:
        return 0
    if proto == IPPROTO_UDP:
        return 1
    if proto == IPPROTO_ICMP:
        # queries and their replies carry an identifier (echo, timestamp, information, address mask)
        if icmp_type == 0 or icmp_type == 8 or (13 <= icmp_type <= 18):
            return 2
    return -1


def nat_classify_out(uint8_t[::1] status, const uint8_t[::1] proto, const uint8_t[::1] icmp_type,
                     const uint32_t[::1] src_ip, const uint16_t[::1] sport,
                     const uint32_t[::1] snat_net, const uint32_t[::1] snat_mask,
                     const uint8_t[::1] dnat_proto, const uint32_t[::1] dnat_to_ip, const uint16_t[::1] dnat_to_port,
                     uint8_t[::1] action, int32_t[::1] rule):
    """Decide what the NAT gateway does with each packet arriving from the private side.

    Parameters
    ----------
    status : uint8[n]
        In/out. Only OK packets are considered; others get action NONE and keep their status.
    proto, icmp_type : uint8[n]
        IP protocol; ICMP type (the parse kernel's ``tcp_flags`` column).
    src_ip : uint32[n], sport : uint16[n]
        Source address and port (ICMP: query identifier), host order.
    snat_net, snat_mask : uint32[k]
        SNAT source prefixes.
    dnat_proto : uint8[r], dnat_to_ip : uint32[r], dnat_to_port : uint16[r]
        DNAT rule targets: a packet from a target is the server's reply (rules are few: linear scan).
    action : uint8[n]
        Output: NAT_DNAT_REPLY (rule index in ``rule``), NAT_SNAT, or NAT_NONE.
    rule : int32[n]
        Output: DNAT rule index for NAT_DNAT_REPLY, -1 otherwise.

    Returns
    -------
    int
        Number of packets with action NAT_SNAT.

    Notes
    -----
    Status codes set: NOT_FORWARDED (not TCP, UDP or an ICMP query), NAT_NO_MAPPING (source neither an SNAT
    source nor a DNAT server).
    """
    cdef Py_ssize_t n = status.shape[0], i, j, k = snat_net.shape[0], r = dnat_proto.shape[0]
    cdef Py_ssize_t nsnat = 0
    cdef int p
    cdef uint32_t ip
    cdef bint hit
    for name, col in (("proto", proto), ("icmp_type", icmp_type), ("src_ip", src_ip), ("sport", sport),
                      ("action", action), ("rule", rule)):
        if col.shape[0] != n:
            raise ValueError(f"{name}: expected length {n}, got {col.shape[0]}")
    if snat_mask.shape[0] != k:
        raise ValueError("snat_mask: must have the length of snat_net")
    if dnat_to_ip.shape[0] != r or dnat_to_port.shape[0] != r:
        raise ValueError("dnat_to_ip, dnat_to_port: must have the length of dnat_proto")
    with nogil:
        for i in range(n):
            action[i] = A_NONE
            rule[i] = -1
            if status[i] != ST_OK:
                continue
            p = _pidx(proto[i], icmp_type[i])
            if p < 0:
                status[i] = ST_NOT_FORWARDED
                continue
            ip = src_ip[i]
            hit = False
            for j in range(r):
                if dnat_proto[j] == proto[i] and dnat_to_ip[j] == ip and dnat_to_port[j] == sport[i]:
                    action[i] = A_DNAT_REPLY
                    rule[i] = <int32_t>j
                    hit = True
                    break
            if hit:
                continue
            for j in range(k):
                if (ip & snat_mask[j]) == snat_net[j]:
                    hit = True
                    break
            if hit:
                action[i] = A_SNAT
                nsnat += 1
            else:
                status[i] = ST_NAT_NO_MAPPING
    return nsnat


def nat_classify_in(uint8_t[::1] status, const uint8_t[::1] proto, const uint8_t[::1] icmp_type,
                    const uint32_t[::1] dst_ip, const uint16_t[::1] dport, uint32_t public_ip,
                    const int32_t[::1] owner, const int32_t[::1] dnat_index,
                    uint8_t[::1] action, int64_t[::1] ref):
    """Decide what the NAT gateway does with each packet arriving from the Internet.

    Parameters
    ----------
    status : uint8[n]
        In/out; only OK packets are considered.
    proto, icmp_type : uint8[n]
    dst_ip : uint32[n], dport : uint16[n]
        Destination address and port (ICMP: query identifier), host order.
    public_ip : int
        The gateway's public address (host order).
    owner : int32[3 * 65536]
        (protocol index, public port) -> FlowTable slot of the SNAT mapping, -1 = none.
    dnat_index : int32[3 * 65536]
        (protocol index, public port) -> DNAT rule index, -1 = none.
    action : uint8[n]
        Output: NAT_SNAT_REPLY (slot in ``ref``), NAT_DNAT (rule index in ``ref``) or NAT_NONE.
    ref : int64[n]
        Output: slot or rule index, -1 otherwise.

    Returns
    -------
    int
        Number of packets with action NAT_SNAT_REPLY.

    Notes
    -----
    Status codes set: NAT_NO_MAPPING (not addressed to the public IP, or no mapping and no DNAT rule for the port),
    NOT_FORWARDED (not TCP, UDP or an ICMP query).
    """
    cdef Py_ssize_t n = status.shape[0], i, nrep = 0
    cdef int p
    cdef int32_t s
    for name, col in (("proto", proto), ("icmp_type", icmp_type), ("dst_ip", dst_ip), ("dport", dport),
                      ("action", action), ("ref", ref)):
        if col.shape[0] != n:
            raise ValueError(f"{name}: expected length {n}, got {col.shape[0]}")
    if owner.shape[0] != 3 * NPORTS:
        raise ValueError(f"owner: expected int32[{3 * NPORTS}], got length {owner.shape[0]}")
    if dnat_index.shape[0] != 3 * NPORTS:
        raise ValueError(f"dnat_index: expected int32[{3 * NPORTS}], got length {dnat_index.shape[0]}")
    with nogil:
        for i in range(n):
            action[i] = A_NONE
            ref[i] = -1
            if status[i] != ST_OK:
                continue
            if dst_ip[i] != public_ip:
                status[i] = ST_NAT_NO_MAPPING
                continue
            p = _pidx(proto[i], icmp_type[i])
            if p < 0:
                status[i] = ST_NOT_FORWARDED
                continue
            s = owner[p * NPORTS + dport[i]]
            if s >= 0:
                action[i] = A_SNAT_REPLY
                ref[i] = s
                nrep += 1
                continue
            s = dnat_index[p * NPORTS + dport[i]]
            if s >= 0:
                action[i] = A_DNAT
                ref[i] = s
            else:
                status[i] = ST_NAT_NO_MAPPING
    return nrep


def nat_alloc_ports(const int64_t[::1] slot, const uint8_t[::1] is_new, const uint8_t[::1] proto,
                    int32_t[::1] slot_port, uint16_t[::1] ring, int64_t[::1] head, int64_t[::1] count,
                    int32_t[::1] owner, int32_t[::1] port_out):
    """Give every new SNAT mapping a public port, in packet order; report each packet's public port.

    Parameters
    ----------
    slot : int64[m]
        FlowTable slot of each packet's mapping (-1: refused by the table; port_out -1).
    is_new : uint8[m]
        FlowTable ``out_is_new``: 1 (IS_NEW) means the slot was just inserted and needs a port.
    proto : uint8[m]
        IP protocol of each packet (6 TCP, 17 UDP, anything else counts as ICMP).
    slot_port : int32[capacity]
        In/out: slot -> public port, -1 = none.
    ring : uint16[3 * R], head : int64[3], count : int64[3]
        In/out: per-protocol FIFO of free ports.
    owner : int32[3 * 65536]
        In/out: (protocol index, port) -> slot.
    port_out : int32[m]
        Output: the packet's public port, -1 when none could be allocated (port exhaustion) or the table refused.

    Returns
    -------
    int
        Number of packets left without a port.
    """
    cdef Py_ssize_t m = slot.shape[0], i, cap = slot_port.shape[0], R
    cdef int64_t s
    cdef int p, old
    cdef uint16_t port
    cdef Py_ssize_t missing = 0
    for name, col in (("is_new", is_new), ("proto", proto), ("port_out", port_out)):
        if col.shape[0] != m:
            raise ValueError(f"{name}: expected length {m}, got {col.shape[0]}")
    if head.shape[0] != 3 or count.shape[0] != 3:
        raise ValueError("head, count: expected int64[3]")
    if owner.shape[0] != 3 * NPORTS:
        raise ValueError(f"owner: expected int32[{3 * NPORTS}]")
    if ring.shape[0] % 3 != 0:
        raise ValueError("ring: length must be 3 * R")
    R = ring.shape[0] // 3
    for i in range(3):
        if count[i] < 0 or count[i] > R or head[i] < 0 or (R and head[i] >= R) or (not R and head[i]):
            raise ValueError("head, count: out of range for the ring")
    with nogil:
        for i in range(m):
            s = slot[i]
            p = 0 if proto[i] == IPPROTO_TCP else (1 if proto[i] == IPPROTO_UDP else 2)
            port_out[i] = -1
            if s < 0 or s >= cap:
                missing += 1
                continue
            if is_new[i] == 1:
                old = slot_port[s]
                if old >= 0 and owner[p * NPORTS + old] == s:
                    # a stale port of a slot freed without release: give it back first
                    owner[p * NPORTS + old] = -1
                    ring[p * R + (head[p] + count[p]) % R] = <uint16_t>old
                    count[p] += 1
                slot_port[s] = -1
                if count[p] > 0:
                    port = ring[p * R + head[p]]
                    head[p] = (head[p] + 1) % R
                    count[p] -= 1
                    owner[p * NPORTS + port] = <int32_t>s
                    slot_port[s] = port
            if slot_port[s] < 0:
                missing += 1
            else:
                port_out[i] = slot_port[s]
    return missing


def nat_release(const int64_t[::1] slots, const uint8_t[::1] proto, int32_t[::1] slot_port, uint16_t[::1] ring,
                int64_t[::1] head, int64_t[::1] count, int32_t[::1] owner):
    """Return the public ports of freed FlowTable slots to their protocol's free list (in the given order).

    Parameters
    ----------
    slots : int64[k]
        Freed slots (-1 ignored).
    proto : uint8[k]
        IP protocol of each freed entry (from the FlowTable record).

    Returns
    -------
    int
        Number of ports released.
    """
    cdef Py_ssize_t k = slots.shape[0], i, cap = slot_port.shape[0], R, rel = 0
    cdef int64_t s
    cdef int p
    cdef int32_t port
    if proto.shape[0] != k:
        raise ValueError(f"proto: expected length {k}, got {proto.shape[0]}")
    if head.shape[0] != 3 or count.shape[0] != 3 or owner.shape[0] != 3 * NPORTS or ring.shape[0] % 3:
        raise ValueError("head/count int64[3], owner int32[3 * 65536], ring uint16[3 * R] expected")
    R = ring.shape[0] // 3
    with nogil:
        for i in range(k):
            s = slots[i]
            if s < 0 or s >= cap:
                continue
            port = slot_port[s]
            slot_port[s] = -1
            p = 0 if proto[i] == IPPROTO_TCP else (1 if proto[i] == IPPROTO_UDP else 2)
            if port < 0 or owner[p * NPORTS + port] != s or count[p] >= R:
                continue
            owner[p * NPORTS + port] = -1
            ring[p * R + (head[p] + count[p]) % R] = <uint16_t>port
            count[p] += 1
            rel += 1
    return rel


cdef inline uint16_t _upd32(uint16_t c, uint32_t old, uint32_t new) noexcept nogil:
    c = csum_update16(c, <uint16_t>(old >> 16), <uint16_t>(new >> 16))
    return csum_update16(c, <uint16_t>(old & 0xFFFF), <uint16_t>(new & 0xFFFF))


cdef inline bint _icmp_is_error(uint8_t t) noexcept nogil:
    return t == 3 or t == 4 or t == 5 or t == 11 or t == 12


cdef inline uint16_t _put16(uint8_t* p, uint16_t v, uint16_t icmp_c) noexcept nogil:
    """Store a 16-bit word of the ICMP payload and return the ICMP checksum updated for it (RFC 1624)."""
    cdef uint16_t old = load_be16(p)
    store_be16(p, v)
    return csum_update16(icmp_c, old, v)


cdef int _icmp_error_rewrite(uint8_t* pkt, Py_ssize_t clen, Py_ssize_t l3, Py_ssize_t l4, int side,
                             uint32_t nip, uint16_t nport, uint32_t* old_ip, uint16_t* old_port) noexcept nogil:
    """Translate an ICMP error in place as its flow's packets are translated (RFC 5508 section 4).

    The error travels back to the quoted packet's sender, so the flow's side ``side`` (0 source, 1 destination,
    in the error's direction) is the quoted packet's destination (0) or source (1): that address and port are
    rewritten in the quoted header, with the quoted IPv4 checksum and the quoted TCP/UDP/ICMP checksum (where
    captured) updated; the outer address on that side is rewritten too when it is the same host (a router's
    own address is left). The ICMP checksum covers the quoted bytes, so it follows every word that changed.
    Returns 0, or 1 when the quoted header is not captured far enough.
    """
    cdef Py_ssize_t q = l4 + 8, ql4, qa, qp, qc
    cdef uint32_t oa, a
    cdef uint16_t c, qsum, old
    cdef uint8_t qproto
    if (pkt[q] >> 4) != 4 or (pkt[q] & 0x0F) < 5 or q + (pkt[q] & 0x0F) * 4 > clen:
        return 1
    ql4 = q + (pkt[q] & 0x0F) * 4
    qproto = pkt[q + 9]
    qa = q + 16 - 4 * side       # side 0: the quoted destination; side 1: the quoted source
    if qproto == IPPROTO_ICMP:
        qp = ql4 + 4             # the query identifier
        qc = ql4 + 2
    else:
        qp = ql4 + 2 - 2 * side  # side 0: the quoted destination port; side 1: the quoted source port
        qc = ql4 + 16 if qproto == IPPROTO_TCP else ql4 + 6
    if (load_be16(pkt + q + 6) & 0x1FFF) != 0 or (qproto != IPPROTO_TCP and qproto != IPPROTO_UDP
                                                  and qproto != IPPROTO_ICMP) or qp + 2 > clen:
        return 1
    oa = load_be32(pkt + qa)
    old_ip[0] = oa
    old_port[0] = load_be16(pkt + qp)
    # the outer header: the same host's address on that side
    a = load_be32(pkt + l3 + 12 + 4 * side)
    if a == oa:
        store_be16(pkt + l3 + 10, _upd32(load_be16(pkt + l3 + 10), oa, nip))
        store_be32(pkt + l3 + 12 + 4 * side, nip)
    c = load_be16(pkt + l4 + 2)
    # the quoted IPv4 header: address and its header checksum
    qsum = _upd32(load_be16(pkt + q + 10), oa, nip)
    c = _put16(pkt + qa, <uint16_t>(nip >> 16), c)
    c = _put16(pkt + qa + 2, <uint16_t>(nip & 0xFFFF), c)
    c = _put16(pkt + q + 10, qsum, c)
    # the quoted transport checksum (pseudo-header address and port; ICMP: the identifier only), when captured
    if qc + 2 <= clen:
        old = load_be16(pkt + qc)
        if qproto == IPPROTO_ICMP:
            c = _put16(pkt + qc, csum_update16(old, old_port[0], nport), c)
        elif qproto == IPPROTO_TCP or old != 0:
            qsum = csum_update16(_upd32(old, oa, nip), old_port[0], nport)
            if qproto == IPPROTO_UDP and qsum == 0:
                qsum = 0xFFFF
            c = _put16(pkt + qc, qsum, c)
    c = _put16(pkt + qp, nport, c)
    store_be16(pkt + l4 + 2, c)
    return 0


def nat_rewrite(uint8_t[::1] data, const int64_t[::1] off, const uint32_t[::1] caplen,
                const int32_t[::1] l3_off, const int32_t[::1] l4_off, const uint8_t[::1] proto, int side,
                const uint32_t[::1] new_ip, const int32_t[::1] new_port, uint8_t[::1] status,
                uint32_t[::1] ip_col, uint16_t[::1] port_col, uint16_t[::1] other_port_col,
                const uint8_t[::1] action, uint8_t[::1] rec_kind, uint32_t[::1] rec_priv_ip,
                uint16_t[::1] rec_priv_port, uint32_t[::1] rec_pub_ip, uint16_t[::1] rec_pub_port):
    """Rewrite the source (side 0) or destination (side 1) address and port of selected packets, in place.

    Checksums are updated incrementally (RFC 1624 eqn. 3, one 16-bit word at a time): the IPv4 header checksum
    for the address; the TCP/UDP checksum for the address (pseudo-header) and the port; the ICMP checksum for the
    query identifier (ICMP has no pseudo-header). A UDP checksum of 0 (none) stays 0; an updated UDP checksum that
    comes out 0 is sent as 0xFFFF (RFC 768).

    Parameters
    ----------
    data : uint8[::1]
        Arena, written in place.
    off : int64[n], caplen : uint32[n], l3_off, l4_off : int32[n], proto : uint8[n]
        Packet location and parse columns.
    side : int
        0 rewrites source address/port, 1 destination.
    new_ip : uint32[n], new_port : int32[n]
        Replacement address and port (ICMP: identifier), host order; packets with ``new_port < 0`` are skipped.
    status : uint8[n]
        In/out: only OK packets are rewritten.
    ip_col, port_col : uint32[n], uint16[n]
        The batch's ``src_ip``/``sport`` (side 0) or ``dst_ip``/``dport`` (side 1) columns, updated.
    other_port_col : uint16[n]
        The other port column: for ICMP queries the parse kernel puts the identifier in both, so both change.
    action : uint8[n]
        The NAT_* kind of each packet's translation (from the classify kernels), copied to ``rec_kind``.
    rec_kind, rec_priv_ip, rec_priv_port, rec_pub_ip, rec_pub_port : uint8/uint32/uint16[n]
        Output, every row written: the translation record (kind 0 and zeros for packets not rewritten). Side 0
        (outbound): private = the old source, public = the new one; side 1 (inbound): public = the old
        destination, private = the new one.

    Returns
    -------
    int
        Number of packets rewritten.

    Notes
    -----
    Status codes set: TRUNCATED (packet outside the arena or IPv4 header not captured), L4_TRUNCATED (checksum or
    port field not captured). An ICMP error (its columns are the flow it quotes, see ``parse_packets``) is
    translated in its quoted header and, for the same host, its outer header, with every checksum updated
    (RFC 5508 section 4).
    """
    cdef Py_ssize_t n = off.shape[0], i, start, clen, l3, l4, done = 0, datalen = data.shape[0]
    cdef uint8_t* pkt
    cdef uint32_t old_ip, nip
    cdef uint16_t c, old_port, nport
    cdef Py_ssize_t pf, cf
    if side != 0 and side != 1:
        raise ValueError(f"side: must be 0 (source) or 1 (destination), got {side}")
    for name, col in (("caplen", caplen), ("l3_off", l3_off), ("l4_off", l4_off), ("proto", proto),
                      ("new_ip", new_ip), ("new_port", new_port), ("status", status), ("ip_col", ip_col),
                      ("port_col", port_col), ("other_port_col", other_port_col), ("action", action),
                      ("rec_kind", rec_kind), ("rec_priv_ip", rec_priv_ip), ("rec_priv_port", rec_priv_port),
                      ("rec_pub_ip", rec_pub_ip), ("rec_pub_port", rec_pub_port)):
        if col.shape[0] != n:
            raise ValueError(f"{name}: expected length {n}, got {col.shape[0]}")
    with nogil:
        for i in range(n):
            if i + AHEAD < n and datalen > 0 and new_port[i + AHEAD] >= 0:
                NAT_PREFETCH(&data[0] + off[i + AHEAD] + 14)
                NAT_PREFETCH(&data[0] + off[i + AHEAD] + 54)
            rec_kind[i] = 0
            rec_priv_ip[i] = 0
            rec_priv_port[i] = 0
            rec_pub_ip[i] = 0
            rec_pub_port[i] = 0
            if new_port[i] < 0 or status[i] != ST_OK:
                continue
            start = off[i]
            clen = caplen[i]
            l3 = l3_off[i]
            l4 = l4_off[i]
            if start < 0 or start + clen > datalen or l3 < 0 or l3 + 20 > clen:
                status[i] = ST_TRUNCATED
                continue
            pkt = &data[start]
            if pkt[l3 + 9] == IPPROTO_ICMP and l4 >= l3 + 20 and l4 + 28 <= clen and _icmp_is_error(pkt[l4]):
                # an ICMP error of a translated flow (RFC 5508 section 4): its columns are the quoted flow's
                if _icmp_error_rewrite(pkt, clen, l3, l4, side, new_ip[i], <uint16_t>new_port[i], &old_ip,
                                       &old_port) != 0:
                    status[i] = ST_L4_TRUNCATED
                    continue
                nip = new_ip[i]
                nport = <uint16_t>new_port[i]
            else:
                if proto[i] == IPPROTO_TCP:
                    pf = l4 + 2 * side
                    cf = l4 + 16
                elif proto[i] == IPPROTO_UDP:
                    pf = l4 + 2 * side
                    cf = l4 + 6
                elif proto[i] == IPPROTO_ICMP:
                    pf = l4 + 4
                    cf = l4 + 2
                else:
                    status[i] = ST_NOT_FORWARDED
                    continue
                if l4 < l3 + 20 or pf + 2 > clen or cf + 2 > clen:
                    status[i] = ST_L4_TRUNCATED
                    continue
                nip = new_ip[i]
                nport = <uint16_t>new_port[i]
                old_ip = load_be32(pkt + l3 + 12 + 4 * side)
                old_port = load_be16(pkt + pf)
                # IPv4 header checksum (RFC 791 3.1) covers the address
                store_be16(pkt + l3 + 10, _upd32(load_be16(pkt + l3 + 10), old_ip, nip))
                store_be32(pkt + l3 + 12 + 4 * side, nip)
                c = load_be16(pkt + cf)
                if proto[i] == IPPROTO_ICMP:
                    store_be16(pkt + cf, csum_update16(c, old_port, nport))
                elif proto[i] == IPPROTO_TCP or c != 0:
                    c = csum_update16(_upd32(c, old_ip, nip), old_port, nport)
                    if proto[i] == IPPROTO_UDP and c == 0:
                        c = 0xFFFF
                    store_be16(pkt + cf, c)
                store_be16(pkt + pf, nport)
            ip_col[i] = nip
            port_col[i] = nport
            if proto[i] == IPPROTO_ICMP:
                other_port_col[i] = nport
            rec_kind[i] = action[i]
            if side == 0:
                rec_priv_ip[i] = old_ip
                rec_priv_port[i] = old_port
                rec_pub_ip[i] = nip
                rec_pub_port[i] = nport
            else:
                rec_pub_ip[i] = old_ip
                rec_pub_port[i] = old_port
                rec_priv_ip[i] = nip
                rec_priv_port[i] = nport
            done += 1
    return done
