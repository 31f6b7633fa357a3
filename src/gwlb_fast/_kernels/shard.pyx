# Flow shard of each packet for `run --workers N` (DESIGN.md section 14): a symmetric hash of the two addresses,
# so both directions of a flow, its fragments and the ICMP errors that quote it land on one shard; the public side
# of a NAT gateway is mapped first (DNAT port -> its private target, SNAT port -> the shard owning that port slice).
# cython: language_level=3
from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t

from ._bytes cimport load_be16, load_be32
from ._hash cimport fmix64
from ._status cimport ST_FRAGMENT, ST_OK

cdef enum:
    IPPROTO_ICMP = 1
    IPPROTO_TCP = 6
    IPPROTO_UDP = 17

cdef uint64_t _SEED = 0x5EED5A4D
SHARD_SEED = _SEED


cdef inline bint _icmp_error(uint8_t t) noexcept nogil:
    # destination unreachable, source quench, redirect, time exceeded, parameter problem
    return t == 3 or t == 4 or t == 5 or t == 11 or t == 12


cdef inline bint _icmp_query(uint8_t t) noexcept nogil:
    return t == 0 or t == 8 or (13 <= t <= 18)


cdef inline int64_t _map_end(uint32_t* ip, uint16_t port, bint has_port, uint8_t proto, const uint32_t[::1] pub_ip,
                             const int32_t[::1] port_lo, const int32_t[::1] port_hi, const int32_t[::1] dnat_gw,
                             const uint8_t[::1] dnat_proto, const uint16_t[::1] dnat_port,
                             const uint32_t[::1] dnat_to, int64_t nshards) noexcept nogil:
    """Map one endpoint on a gateway's public side: a DNAT port becomes its target address (in *ip); a port of the
    SNAT range gives the shard that owns it (returned); -1 otherwise (the address stays as it is)."""
    cdef Py_ssize_t g, r
    cdef int64_t span
    for g in range(pub_ip.shape[0]):
        if ip[0] != pub_ip[g]:
            continue
        if not has_port:
            return -1
        for r in range(dnat_gw.shape[0]):
            if dnat_gw[r] == g and dnat_proto[r] == proto and dnat_port[r] == port:
                ip[0] = dnat_to[r]
                return -1
        if port_lo[g] <= port <= port_hi[g]:
            span = <int64_t>port_hi[g] - port_lo[g] + 1
            return ((<int64_t>port - port_lo[g]) * nshards) // span
        return -1
    return -1


cdef inline int64_t _hash_shard(uint32_t a, uint32_t b, int64_t nshards) noexcept nogil:
    cdef uint64_t lo = a if a < b else b
    cdef uint64_t hi = b if a < b else a
    cdef uint64_t h = fmix64(fmix64(_SEED ^ (lo << 32 | hi)))
    return <int64_t>(((h >> 32) * <uint64_t>nshards) >> 32)


cdef inline bint _is_public(uint32_t ip, const uint32_t[::1] pub_ip) noexcept nogil:
    cdef Py_ssize_t g
    for g in range(pub_ip.shape[0]):
        if ip == pub_ip[g]:
            return True
    return False


def shard_packets(const uint8_t[::1] data, const int64_t[::1] off, const uint32_t[::1] caplen,
                  const uint8_t[::1] status, const uint8_t[::1] proto, const uint32_t[::1] src_ip,
                  const uint32_t[::1] dst_ip, const uint16_t[::1] sport, const uint16_t[::1] dport,
                  const uint8_t[::1] tcp_flags, const int32_t[::1] l3_off, const int32_t[::1] l4_off,
                  const uint32_t[::1] pub_ip, const int32_t[::1] port_lo, const int32_t[::1] port_hi,
                  const int32_t[::1] dnat_gw, const uint8_t[::1] dnat_proto, const uint16_t[::1] dnat_port,
                  const uint32_t[::1] dnat_to, int64_t nshards, uint64_t[::1] frag_key, int16_t[::1] frag_shard,
                  int16_t[::1] out):
    """The shard (``0 <= out[i] < nshards``) of each parsed packet.

    An OK packet hashes its two addresses symmetrically, after mapping an address that is a gateway's
    ``pub_ip``: with a DNAT port (``dnat_*`` rows of that gateway, by protocol and port) to the rule's target; with a
    port of the gateway's SNAT range ``[port_lo, port_hi]`` straight to the shard owning that slice
    (``(port - lo) * nshards // (hi - lo + 1)``). An ICMP error is sharded by the header it quotes, when that is
    captured. A first fragment of a packet to or from a public address records its shard in the direct-mapped
    ``frag_key``/``frag_shard`` table (a power-of-two size; state carried across calls) under (src, dst, proto, IP
    id), and the later fragments (status FRAGMENT) take it from there; any other fragment hashes its addresses.
    Packets the parser refused go to shard 0 (they are dropped at input on whichever shard). Returns the number of
    fragments whose first fragment was not in the table.
    """
    cdef Py_ssize_t n = off.shape[0], i, slot
    cdef Py_ssize_t datalen = data.shape[0]
    cdef Py_ssize_t mask = frag_key.shape[0] - 1
    cdef int64_t s, s2, start, l3, l4, q, qihl, misses = 0
    cdef uint32_t a, b
    cdef uint16_t pa, pb, mf_off, ipid
    cdef uint8_t pr
    cdef bint has_ports, public
    cdef uint64_t key
    if nshards < 1:
        raise ValueError("shard_packets: nshards must be >= 1")
    if frag_key.shape[0] == 0 or (frag_key.shape[0] & mask) != 0 or frag_shard.shape[0] != frag_key.shape[0]:
        raise ValueError("shard_packets: frag_key and frag_shard need one power-of-two size")
    if (caplen.shape[0] < n or status.shape[0] < n or proto.shape[0] < n or src_ip.shape[0] < n
            or dst_ip.shape[0] < n or sport.shape[0] < n or dport.shape[0] < n or tcp_flags.shape[0] < n
            or l3_off.shape[0] < n or l4_off.shape[0] < n or out.shape[0] < n):
        raise ValueError("shard_packets: column shorter than off")
    if (port_lo.shape[0] != pub_ip.shape[0] or port_hi.shape[0] != pub_ip.shape[0]
            or dnat_proto.shape[0] != dnat_gw.shape[0] or dnat_port.shape[0] != dnat_gw.shape[0]
            or dnat_to.shape[0] != dnat_gw.shape[0]):
        raise ValueError("shard_packets: gateway tables of different lengths")
    with nogil:
        for i in range(n):
            if nshards == 1 or (status[i] != ST_OK and status[i] != ST_FRAGMENT):
                out[i] = 0
                continue
            a = src_ip[i]
            b = dst_ip[i]
            pa = sport[i]
            pb = dport[i]
            pr = proto[i]
            has_ports = pr == IPPROTO_TCP or pr == IPPROTO_UDP or (pr == IPPROTO_ICMP and _icmp_query(tcp_flags[i]))
            start = off[i]
            l3 = l3_off[i]
            l4 = l4_off[i]
            # the IP id and fragment field only for a packet to or from a public address (the only ones the
            # fragment table knows): read from the packet, whose header has left the cache since the parse
            public = _is_public(a, pub_ip) or _is_public(b, pub_ip)
            mf_off = 0
            ipid = 0
            if public and start >= 0 and l3 >= 0 and start + l3 + 20 <= datalen and l3 + 20 <= <int64_t>caplen[i]:
                ipid = load_be16(&data[start + l3 + 4])
                mf_off = load_be16(&data[start + l3 + 6]) & 0x3FFF
            if status[i] == ST_FRAGMENT:
                has_ports = False
                if public:
                    key = ((<uint64_t>a << 32) | b) ^ fmix64((<uint64_t>pr << 16) | ipid)
                    slot = <Py_ssize_t>(fmix64(key) & <uint64_t>mask)
                    if frag_key[slot] == key and frag_shard[slot] >= 0:
                        out[i] = frag_shard[slot]
                        continue
                    misses += 1
                out[i] = <int16_t>_hash_shard(a, b, nshards)
                continue
            # an ICMP error: the quoted header (addresses and, when captured, ports) names the flow
            if pr == IPPROTO_ICMP and _icmp_error(tcp_flags[i]) and start >= 0 and l4 >= 0:
                q = l4 + 8
                if q + 20 <= <int64_t>caplen[i] and start + q + 20 <= datalen and (data[start + q] >> 4) == 4:
                    qihl = (data[start + q] & 0x0F) * 4
                    a = load_be32(&data[start + q + 12])
                    b = load_be32(&data[start + q + 16])
                    pr = data[start + q + 9]
                    has_ports = False
                    if qihl >= 20 and (load_be16(&data[start + q + 6]) & 0x1FFF) == 0 \
                            and q + qihl + 8 <= <int64_t>caplen[i] and start + q + qihl + 8 <= datalen:
                        if pr == IPPROTO_TCP or pr == IPPROTO_UDP:
                            pa = load_be16(&data[start + q + qihl])
                            pb = load_be16(&data[start + q + qihl + 2])
                            has_ports = True
                        elif pr == IPPROTO_ICMP and _icmp_query(data[start + q + qihl]):
                            pa = load_be16(&data[start + q + qihl + 4])
                            pb = pa
                            has_ports = True
            s = _map_end(&a, pa, has_ports, pr, pub_ip, port_lo, port_hi, dnat_gw, dnat_proto, dnat_port, dnat_to,
                         nshards)
            s2 = _map_end(&b, pb, has_ports, pr, pub_ip, port_lo, port_hi, dnat_gw, dnat_proto, dnat_port, dnat_to,
                          nshards)
            if s < 0:
                s = s2
            if s < 0:
                s = _hash_shard(a, b, nshards)
            out[i] = <int16_t>s
            # a first fragment (MF set, offset 0) on the public side: its later fragments follow it
            if public and (mf_off & 0x2000) != 0:
                key = ((<uint64_t>src_ip[i] << 32) | dst_ip[i]) ^ fmix64((<uint64_t>proto[i] << 16) | ipid)
                slot = <Py_ssize_t>(fmix64(key) & <uint64_t>mask)
                frag_key[slot] = key
                frag_shard[slot] = <int16_t>s
    return misses
