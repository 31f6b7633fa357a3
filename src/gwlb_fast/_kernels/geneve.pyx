# Geneve (RFC 8926) decoder, encoder and firewall echo, batched.
#
# Outer frame written by the encoder (DESIGN.md section 2), 82 bytes before the inner IPv4 packet:
#
#   offset  len  field
#   0       6    Ethernet destination MAC
#   6       6    Ethernet source MAC
#   12      2    EtherType 0x0800
#   14      20   IPv4: 0x45, TOS 0, total length, id 0, flags DF, TTL, proto 17, header checksum, src, dst
#   34      8    UDP: source port (flow hash), destination port 6081, length, checksum 0 (RFC 8926 section 3.3)
#   42      8    Geneve base header (RFC 8926 section 3.4):
#                  bits 0-1 version (0), bits 2-7 option length in 4-byte words, bit 8 O, bit 9 C,
#                  bits 16-31 protocol type (0x0800), bits 32-55 VNI, bits 56-63 reserved
#   50      12   option: class, type 1, length 2 words, GWLB endpoint id (64 bits)
#   62      12   option: class, type 2, length 2 words, attachment id (64 bits)
#   74      8    option: class, type 3, length 1 word, flow cookie (32 bits)
#   82           inner IPv4 packet (no inner Ethernet header)
#
# Option TLV (RFC 8926 section 3.5): class (16 bits), type (8 bits, high bit = critical), 3 reserved bits,
# length (5 bits, in 4-byte words, excluding the 4-byte option header), data.
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy

from gwlb_fast._kernels._bytes cimport load_be16, load_be32, load_be64, store_be16, store_be32, store_be64
from gwlb_fast._kernels._status cimport (
    ST_BAD_IHL, ST_BAD_IP_LEN, ST_BAD_IP_VERSION, ST_FRAGMENT, ST_GENEVE_BAD_PROTO, ST_GENEVE_BAD_TLV,
    ST_GENEVE_BAD_VERSION, ST_GENEVE_CRITICAL, ST_GENEVE_INNER_BAD, ST_GENEVE_OPT_OVERRUN, ST_GENEVE_TRUNCATED,
    ST_L4_TRUNCATED, ST_NOT_GENEVE, ST_OK, ST_TOO_BIG, ST_TRUNCATED,
)
from gwlb_fast._kernels._link cimport find_l3
from gwlb_fast._kernels._hash cimport fmix32 as _fmix32, fmix64 as _fmix64, hash5

GENEVE_PORT = 6081
GENEVE_HDR_LEN = 8
GWLB_OPTIONS_LEN = 32
ENCAP_HDR_LEN = 82
PROTO_IPV4 = 0x0800
PROTO_ETHERNET = 0x6558

cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define GWLB_PREFETCH(p) __builtin_prefetch((const void *)(p), 0, 3)
    #else
    #define GWLB_PREFETCH(p) ((void)(p))
    #endif
    """
    void GWLB_PREFETCH(const void* p) noexcept nogil

cdef enum:
    # packets ahead whose headers are prefetched: the loop is bound by memory latency, not by work, once the
    # arena is larger than the caches (prefetching an address never faults, even outside the arena)
    _AHEAD = 8
    _LT_ETHERNET = 1
    _LT_RAW = 101
    _LT_SLL = 113
    _LT_IPV4 = 228
    _LT_SLL2 = 276
    _HDR = 82
    _OPTS = 32
    _PORT = 6081


cdef inline int _ipv4(const uint8_t* p, Py_ssize_t caplen, Py_ssize_t l3, Py_ssize_t* l4,
                      Py_ssize_t* end) noexcept nogil:
    """Check the IPv4 header at l3; return where L4 starts and where the IP packet ends in the capture."""
    cdef Py_ssize_t ihl, tot
    if l3 + 20 > caplen:
        return ST_TRUNCATED
    if (p[l3] >> 4) != 4:
        return ST_BAD_IP_VERSION
    ihl = (p[l3] & 0x0F) * 4
    if ihl < 20 or l3 + ihl > caplen:
        return ST_BAD_IHL
    tot = load_be16(p + l3 + 2)
    if tot < ihl:
        return ST_BAD_IP_LEN
    l4[0] = l3 + ihl
    end[0] = l3 + tot if l3 + tot < caplen else caplen
    return ST_OK


cdef inline int _carried_ipv4(const uint8_t* p, Py_ssize_t caplen, uint16_t linktype, Py_ssize_t lim,
                              Py_ssize_t* l3, Py_ssize_t* end) noexcept nogil:
    """The encoder's walk of one packet: its IPv4 packet behind the link layer, checked, no longer than ``lim`` by
    its total length (a snapped packet is carried as captured, but the outer lengths say its length on the
    wire). Returns the status; ``l3`` and ``end`` (where the IP packet ends in the capture) when OK."""
    cdef Py_ssize_t l4 = 0
    cdef int st = find_l3(p, caplen, linktype, l3)
    if st == ST_OK:
        st = _ipv4(p, caplen, l3[0], &l4, end)
    if st == ST_OK and load_be16(p + l3[0] + 2) > lim:
        st = ST_TOO_BIG
    return st


cdef inline uint16_t _flow_port(const uint8_t* ip, Py_ssize_t n, uint64_t s) noexcept nogil:
    """UDP source port from a symmetric hash of the inner 5-tuple, in 49152-65535 (RFC 8926 section 3.3).

    The same value as ``flowhash.geneve_udp_sport(flowhash.hash_5tuple(..., seed))`` (s is the pre-mixed seed):
    endpoints (ip << 16 | port) in canonical order so that a flow and its reply hash alike, two murmur3 fmix64
    rounds, then the high half re-mixed and range-reduced by multiply-shift. Ports are 0 for fragments and
    protocols other than TCP, UDP and SCTP.
    """
    cdef uint64_t h
    cdef uint16_t sp = 0, dp = 0
    cdef uint8_t proto
    cdef Py_ssize_t ihl
    if n < 20:
        return 49152
    proto = ip[9]
    ihl = (ip[0] & 0x0F) * 4
    if (proto == 6 or proto == 17 or proto == 132) and (load_be16(ip + 6) & 0x1FFF) == 0 and ihl >= 20 \
            and ihl + 4 <= n:
        sp = load_be16(ip + ihl)
        dp = load_be16(ip + ihl + 2)
    h = hash5(s, load_be32(ip + 12), load_be32(ip + 16), sp, dp, proto)
    return <uint16_t>(49152 + ((<uint64_t>_fmix32(<uint32_t>(h >> 32)) * 16384) >> 32))


def mix_seed(uint64_t seed):
    """The pre-mixed form of a flow-hash seed that ``fill_encap`` and ``flow_ports`` take."""
    return _fmix64(seed ^ 0x9E3779B97F4A7C15ULL)


def parse_geneve(const uint8_t[::1] data, const int64_t[::1] off, const uint32_t[::1] caplen,
                 const uint16_t[::1] linktype, uint16_t option_class, uint8_t[::1] status, uint32_t[::1] vni,
                 uint8_t[::1] flags, uint16_t[::1] opt_len, uint64_t[::1] endpoint_id, uint64_t[::1] attachment_id,
                 uint32_t[::1] flow_cookie, int32_t[::1] inner_off, uint32_t[::1] inner_len,
                 uint16_t[::1] inner_linktype):
    """Decode the outer headers and the Geneve header of every packet.

    Parameters
    ----------
    data : uint8[::1]
        The arena.
    off : int64[n]
    caplen : uint32[n]
    linktype : uint16[n]
        Ethernet (1, any number of 802.1Q/802.1ad tags), raw IPv4 (101, 228), Linux SLL (113) or SLL2 (276).
    option_class : int
        Option class of the GWLB metadata options (types 1, 2, 3).
    status : uint8[n]
        Output. ``PktStatus`` per packet.
    vni : uint32[n]
        Output. 24-bit VNI.
    flags : uint8[n]
        Output. Second Geneve byte: O bit 0x80, C bit 0x40, reserved bits as received.
    opt_len : uint16[n]
        Output. Option area length in bytes.
    endpoint_id, attachment_id : uint64[n]
        Output. Option types 1 and 2 of ``option_class`` (0 when absent).
    flow_cookie : uint32[n]
        Output. Option type 3 of ``option_class`` (0 when absent).
    inner_off : int32[n]
        Output. Offset of the inner packet from the start of the outer packet (-1 when unknown).
    inner_len : uint32[n]
        Output. Inner packet bytes (0 when unknown).
    inner_linktype : uint16[n]
        Output. 228 (raw IPv4) for protocol 0x0800, 1 (Ethernet) for 0x6558, 0 otherwise.

    Returns
    -------
    None

    Notes
    -----
    Status codes, first problem wins: TRUNCATED, NOT_IPV4, BAD_IP_VERSION, BAD_IHL, BAD_IP_LEN, FRAGMENT (outer
    walk); NOT_GENEVE (not UDP to port 6081); L4_TRUNCATED (UDP header cut); GENEVE_TRUNCATED (< 8 bytes after
    UDP); GENEVE_BAD_VERSION; GENEVE_OPT_OVERRUN; GENEVE_BAD_TLV (an option overruns the option area, or a known
    GWLB option has the wrong length); GENEVE_CRITICAL (an unknown option with the critical bit);
    GENEVE_BAD_PROTO; GENEVE_INNER_BAD (inner IPv4 shorter than 20 bytes or not version 4, inner Ethernet shorter
    than 14 bytes). Once the Geneve base header is in bounds, VNI, flags and option length are filled whatever
    the status; the options and the inner offset are filled unless the option area overruns the packet.
    Unknown options are skipped and left untouched in the arena. The UDP checksum is not verified.
    """
    cdef Py_ssize_t n = off.shape[0]
    cdef Py_ssize_t size = data.shape[0]
    cdef Py_ssize_t i, o, cl, l3 = 0, l4 = 0, end = 0, g, pos, oend, olen
    cdef const uint8_t* p
    cdef int st, st2
    cdef uint16_t cls, udp_len, proto
    cdef uint8_t typ, ver
    cdef bint crit
    _check_len("caplen", caplen.shape[0], n)
    _check_len("linktype", linktype.shape[0], n)
    for name, m in (("status", status.shape[0]), ("vni", vni.shape[0]), ("flags", flags.shape[0]),
                    ("opt_len", opt_len.shape[0]), ("endpoint_id", endpoint_id.shape[0]),
                    ("attachment_id", attachment_id.shape[0]), ("flow_cookie", flow_cookie.shape[0]),
                    ("inner_off", inner_off.shape[0]), ("inner_len", inner_len.shape[0]),
                    ("inner_linktype", inner_linktype.shape[0])):
        _check_len(name, m, n)
    with nogil:
        for i in range(n):
            if i + _AHEAD < n and size > 0:
                GWLB_PREFETCH(&data[0] + off[i + _AHEAD])
                GWLB_PREFETCH(&data[0] + off[i + _AHEAD] + 64)
            vni[i] = 0
            flags[i] = 0
            opt_len[i] = 0
            endpoint_id[i] = 0
            attachment_id[i] = 0
            flow_cookie[i] = 0
            inner_off[i] = -1
            inner_len[i] = 0
            inner_linktype[i] = 0
            o = off[i]
            cl = caplen[i]
            if o < 0 or o > size or cl > size - o:
                status[i] = ST_TRUNCATED
                continue
            p = &data[0] + o if size > 0 else NULL
            st = find_l3(p, cl, linktype[i], &l3)
            if st == ST_OK:
                st = _ipv4(p, cl, l3, &l4, &end)
            if st != ST_OK:
                status[i] = st
                continue
            if (load_be16(p + l3 + 6) & 0x3FFF) != 0:
                status[i] = ST_FRAGMENT
                continue
            if p[l3 + 9] != 17:
                status[i] = ST_NOT_GENEVE
                continue
            if l4 + 8 > end:
                status[i] = ST_L4_TRUNCATED
                continue
            if load_be16(p + l4 + 2) != _PORT:
                status[i] = ST_NOT_GENEVE
                continue
            udp_len = load_be16(p + l4 + 4)
            if udp_len >= 8 and l4 + udp_len < end:
                end = l4 + udp_len
            g = l4 + 8
            if g + 8 > end:
                status[i] = ST_GENEVE_TRUNCATED
                continue
            ver = p[g] >> 6
            olen = (p[g] & 0x3F) * 4
            flags[i] = p[g + 1]
            opt_len[i] = <uint16_t>olen
            proto = load_be16(p + g + 2)
            vni[i] = load_be32(p + g + 4) >> 8
            st = ST_GENEVE_BAD_VERSION if ver != 0 else ST_OK
            oend = g + 8 + olen
            if oend > end:
                status[i] = st if st != ST_OK else ST_GENEVE_OPT_OVERRUN
                continue
            # TLV walk: every read is checked against the option area's end
            crit = False
            st2 = ST_OK
            pos = g + 8
            while pos < oend:
                if pos + 4 > oend:
                    st2 = ST_GENEVE_BAD_TLV
                    break
                cls = load_be16(p + pos)
                typ = p[pos + 2]
                olen = (p[pos + 3] & 0x1F) * 4
                if pos + 4 + olen > oend:
                    st2 = ST_GENEVE_BAD_TLV
                    break
                if cls == option_class and (typ == 1 or typ == 2):
                    if olen != 8:
                        st2 = ST_GENEVE_BAD_TLV
                    elif typ == 1:
                        endpoint_id[i] = load_be64(p + pos + 4)
                    else:
                        attachment_id[i] = load_be64(p + pos + 4)
                elif cls == option_class and typ == 3:
                    if olen != 4:
                        st2 = ST_GENEVE_BAD_TLV
                    else:
                        flow_cookie[i] = load_be32(p + pos + 4)
                elif typ & 0x80:
                    crit = True
                pos += 4 + olen
            if st == ST_OK:
                st = st2
            if st == ST_OK and crit:
                st = ST_GENEVE_CRITICAL
            inner_off[i] = <int32_t>oend
            inner_len[i] = <uint32_t>(end - oend)
            if proto == 0x0800:
                inner_linktype[i] = _LT_IPV4
                if st == ST_OK and (end - oend < 20 or (p[oend] >> 4) != 4):
                    st = ST_GENEVE_INNER_BAD
            elif proto == 0x6558:
                inner_linktype[i] = _LT_ETHERNET
                if st == ST_OK and end - oend < 14:
                    st = ST_GENEVE_INNER_BAD
            elif st == ST_OK:
                st = ST_GENEVE_BAD_PROTO
            status[i] = st


def plan_encap(const uint8_t[::1] data, const int64_t[::1] off, const uint32_t[::1] caplen,
               const uint16_t[::1] linktype, uint32_t max_inner, uint8_t[::1] status, int64_t[::1] inner_start,
               uint32_t[::1] inner_len):
    """First encoder pass: find each packet's IPv4 packet and decide whether it can be encapsulated.

    Parameters
    ----------
    data : uint8[::1]
    off : int64[n]
    caplen : uint32[n]
    linktype : uint16[n]
        Ethernet (the IPv4 packet after the Ethernet header and VLAN tags is carried), raw IPv4, SLL, SLL2.
    max_inner : int
        Largest inner packet the GWLB forwards (bytes).
    status : uint8[n]
        Output. OK, or why the packet is not encapsulated.
    inner_start : int64[n]
        Output. Arena offset of the IPv4 packet.
    inner_len : uint32[n]
        Output. Its length: the IPv4 total length (Ethernet padding is left out).

    Returns
    -------
    int
        Total output bytes: ``82 * n_ok + sum(inner_len[ok])``.

    Notes
    -----
    Status codes: TRUNCATED, NOT_IPV4, BAD_IP_VERSION, BAD_IHL, BAD_IP_LEN, TOO_BIG (IPv4 total length >
    max_inner). A packet cut by a snaplen is carried as far as it was captured (``inner_len`` is then less than
    its IPv4 total length, which ``fill_encap`` writes into the outer lengths).
    """
    cdef Py_ssize_t n = off.shape[0]
    cdef Py_ssize_t size = data.shape[0]
    cdef Py_ssize_t i, o, cl, l3 = 0, end = 0
    cdef int64_t total = 0
    cdef const uint8_t* p
    cdef int st
    _check_len("caplen", caplen.shape[0], n)
    _check_len("linktype", linktype.shape[0], n)
    _check_len("status", status.shape[0], n)
    _check_len("inner_start", inner_start.shape[0], n)
    _check_len("inner_len", inner_len.shape[0], n)
    cdef Py_ssize_t lim = max_inner if max_inner < 65535 - (_HDR - 14) else 65535 - (_HDR - 14)
    with nogil:
        for i in range(n):
            if i + _AHEAD < n and size > 0:
                GWLB_PREFETCH(&data[0] + off[i + _AHEAD])
            inner_start[i] = 0
            inner_len[i] = 0
            o = off[i]
            cl = caplen[i]
            if o < 0 or o > size or cl > size - o:
                status[i] = ST_TRUNCATED
                continue
            p = &data[0] + o if size > 0 else NULL
            st = _carried_ipv4(p, cl, linktype[i], lim, &l3, &end)
            status[i] = st
            if st == ST_OK:
                inner_start[i] = o + l3
                inner_len[i] = <uint32_t>(end - l3)
                total += _HDR + (end - l3)
    return total


def plan_carried(const uint8_t[::1] data, const int64_t[::1] off, const uint32_t[::1] caplen,
                 const uint32_t[::1] wirelen, const uint16_t[::1] linktype, const uint8_t[::1] parsed_status,
                 const int32_t[::1] l3_off, const int32_t[::1] l4_off, uint32_t max_inner, uint8_t[::1] status,
                 int64_t[::1] inner_start, uint32_t[::1] inner_len, uint32_t[::1] inner_wirelen,
                 int32_t[::1] inner_l4_off):
    """``plan_encap`` for a receiver of the inner packets (``geneve.carried``), using the parse columns.

    Parameters
    ----------
    data, off, caplen, linktype, max_inner, status, inner_start, inner_len
        As for ``plan_encap``, with the same results.
    wirelen : uint32[n]
    parsed_status : uint8[n] or uint8[0]
        The batch's parse status; empty when it is not parsed (every packet is then walked as by ``plan_encap``).
    l3_off, l4_off : int32[n] (int32[0] with an empty ``parsed_status``)
        The parse's offsets of the IPv4 header and of L4.
    inner_wirelen : uint32[n]
        Output. The inner packet's length on the wire, ``inner_len`` plus the bytes the snaplen cut off
        (``wirelen - caplen`` when positive), modulo 2**32; 0 where the status is not OK.
    inner_l4_off : int32[n] or int32[0]
        Output (with the parse columns). ``l4_off - l3_off``: where L4 starts in the inner packet.

    Returns
    -------
    (int, int)
        Packets that are OK, and those of them whose parse status is OK.

    Notes
    -----
    A packet whose parse status is OK has its IPv4 header at ``l3_off``: only its first bytes there are read
    (version, header length, total length, checked as ``plan_encap`` checks them), not the link layer again. The
    others, and any packet whose columns do not pass these checks, are walked from the start as by
    ``plan_encap``. Offsets out of the packet are never followed.
    """
    cdef Py_ssize_t n = off.shape[0]
    cdef Py_ssize_t size = data.shape[0]
    cdef Py_ssize_t i, o, cl, l3 = 0, l4 = 0, end = 0
    cdef Py_ssize_t n_ok = 0, n_pok = 0
    cdef const uint8_t* p
    cdef int st
    cdef bint has_parse = parsed_status.shape[0] != 0
    cdef int64_t snapped
    _check_len("caplen", caplen.shape[0], n)
    _check_len("wirelen", wirelen.shape[0], n)
    _check_len("linktype", linktype.shape[0], n)
    _check_len("status", status.shape[0], n)
    _check_len("inner_start", inner_start.shape[0], n)
    _check_len("inner_len", inner_len.shape[0], n)
    _check_len("inner_wirelen", inner_wirelen.shape[0], n)
    if has_parse:
        _check_len("parsed_status", parsed_status.shape[0], n)
        _check_len("l3_off", l3_off.shape[0], n)
        _check_len("l4_off", l4_off.shape[0], n)
        _check_len("inner_l4_off", inner_l4_off.shape[0], n)
    # the size limit: a snapped packet is limited by the length on the wire (the IPv4 total length), which the
    # outer lengths must also hold (as in plan_encap)
    cdef Py_ssize_t lim = max_inner if max_inner < 65535 - (_HDR - 14) else 65535 - (_HDR - 14)
    with nogil:
        for i in range(n):
            if i + _AHEAD < n and size > 0:
                # where the header is read: a parsed packet's IPv4 header (a prefetch outside never faults)
                GWLB_PREFETCH(&data[0] + off[i + _AHEAD] + (l3_off[i + _AHEAD] if has_parse else 0))
            o = off[i]
            cl = caplen[i]
            if o < 0 or o > size or cl > size - o:
                st = ST_TRUNCATED
            else:
                p = &data[0] + o if size > 0 else NULL
                st = -1
                if has_parse and parsed_status[i] == ST_OK and l3_off[i] >= 0:
                    l3 = l3_off[i]
                    st = _ipv4(p, cl, l3, &l4, &end)  # the header where the parse found it
                    if st == ST_OK and load_be16(p + l3 + 2) > lim:
                        st = ST_TOO_BIG
                if st != ST_OK and st != ST_TOO_BIG:  # not parsed OK, or the columns do not check: the walk
                    st = _carried_ipv4(p, cl, linktype[i], lim, &l3, &end)
            status[i] = st
            if has_parse:
                inner_l4_off[i] = <int32_t>(<uint32_t>l4_off[i] - <uint32_t>l3_off[i])
            if st != ST_OK:
                inner_start[i] = 0
                inner_len[i] = 0
                inner_wirelen[i] = 0
                continue
            inner_start[i] = o + l3
            inner_len[i] = <uint32_t>(end - l3)
            snapped = <int64_t>wirelen[i] - <int64_t>cl
            inner_wirelen[i] = <uint32_t>(<uint64_t>(end - l3) + <uint64_t>(snapped if snapped > 0 else 0))
            n_ok += 1
            if has_parse and parsed_status[i] == ST_OK:
                n_pok += 1
    return n_ok, n_pok


def fill_encap(const uint8_t[::1] data, const int64_t[::1] inner_start, const uint32_t[::1] inner_len,
               const int64_t[::1] rows, uint8_t[::1] out, const int64_t[::1] out_off, const uint8_t[::1] macs,
               const uint32_t[::1] src, const uint32_t[::1] dst, const uint16_t[::1] sport,
               const uint32_t[::1] vni, const uint64_t[::1] endpoint_id, const uint64_t[::1] attachment_id,
               const uint32_t[::1] cookie, uint16_t option_class, uint8_t ttl, uint64_t hash_seed=0,
               bint copy_inner=True):
    """Second encoder pass: write the 82-byte outer header and copy the inner packet for each row.

    Parameters
    ----------
    data : uint8[::1]
        Input arena.
    inner_start : int64[n], inner_len : uint32[n]
        From ``plan_encap``.
    rows : int64[m]
        Input packets to encapsulate (those ``plan_encap`` found OK), in output order.
    out : uint8[::1]
        Output arena, at least ``out_off[m-1] + 82 + inner_len[rows[m-1]]`` bytes.
    out_off : int64[m]
        Output offset of each encapsulated packet.
    macs : uint8[12]
        Outer destination MAC then source MAC.
    src, dst : uint32[n] or uint32[1]
        Outer IPv4 addresses (host order); a length-1 array applies to every packet.
    sport : uint16[n], uint16[1] or uint16[0]
        UDP source port; an empty array derives it from a symmetric hash of the inner 5-tuple.
    vni : uint32[n] or [1]
    endpoint_id, attachment_id : uint64[n] or [1]
    cookie : uint32[n] or [1]
    option_class : int
    ttl : int
        Outer IPv4 TTL.
    hash_seed : int
        Flow-hash seed, pre-mixed with ``mix_seed`` (``mix_seed(0)`` matches ``flowhash`` with seed 0).
    copy_inner : bool
        False: write only the 82-byte headers (``out_off[j]`` needs room for 82 bytes); the inner packets stay
        where they are, for a writer that gathers header and payload itself.

    Returns
    -------
    None

    Notes
    -----
    Sets no status: ``plan_encap`` already decided. Per-packet arrays are indexed by input row.
    """
    cdef Py_ssize_t m = rows.shape[0]
    cdef Py_ssize_t n = inner_start.shape[0]
    cdef Py_ssize_t size = data.shape[0]
    cdef Py_ssize_t osize = out.shape[0]
    cdef Py_ssize_t j, r, ilen, wl
    cdef Py_ssize_t s_src, s_dst, s_vni, s_ep, s_att, s_ck, s_sp
    cdef bint hash_port
    cdef uint8_t tmpl[_HDR]
    cdef uint8_t* q
    cdef const uint8_t* ip
    cdef uint32_t base_sum, acc, a, b
    cdef uint16_t tot
    _check_len("inner_len", inner_len.shape[0], n)
    _check_len("out_off", out_off.shape[0], m)
    if macs.shape[0] != 12:
        raise ValueError(f"macs must be uint8[12], got length {macs.shape[0]}")
    s_src = _step("src", src.shape[0], n)
    s_dst = _step("dst", dst.shape[0], n)
    s_vni = _step("vni", vni.shape[0], n)
    s_ep = _step("endpoint_id", endpoint_id.shape[0], n)
    s_att = _step("attachment_id", attachment_id.shape[0], n)
    s_ck = _step("cookie", cookie.shape[0], n)
    hash_port = sport.shape[0] == 0
    s_sp = 0 if hash_port else _step("sport", sport.shape[0], n)
    # bounds of every row, checked once under the GIL so the copy loop needs no per-packet branches
    for j in range(m):
        r = rows[j]
        if r < 0 or r >= n:
            raise ValueError(f"rows[{j}] = {r} is not a row of the input batch")
        if inner_start[r] < 0 or inner_start[r] + inner_len[r] > size:
            raise ValueError(f"inner packet of row {r} lies outside the input arena")
        if out_off[j] < 0 or out_off[j] + _HDR + (inner_len[r] if copy_inner else 0) > osize:
            raise ValueError(f"output packet {j} lies outside the output arena")
    # template: every constant byte of the outer header; per packet only lengths, addresses, port, VNI and
    # option values are patched, and the IPv4 checksum starts from the constant fields' sum
    for j in range(12):
        tmpl[j] = macs[j]
    store_be16(tmpl + 12, 0x0800)
    tmpl[14] = 0x45
    tmpl[15] = 0
    store_be16(tmpl + 16, 0)
    store_be16(tmpl + 18, 0)
    store_be16(tmpl + 20, 0x4000)
    tmpl[22] = ttl
    tmpl[23] = 17
    store_be16(tmpl + 24, 0)
    store_be32(tmpl + 26, 0)
    store_be32(tmpl + 30, 0)
    store_be16(tmpl + 34, 0)
    store_be16(tmpl + 36, _PORT)
    store_be16(tmpl + 38, 0)
    store_be16(tmpl + 40, 0)
    tmpl[42] = _OPTS // 4
    tmpl[43] = 0
    store_be16(tmpl + 44, 0x0800)
    store_be32(tmpl + 46, 0)
    store_be16(tmpl + 50, option_class)
    tmpl[52] = 1
    tmpl[53] = 2
    store_be64(tmpl + 54, 0)
    store_be16(tmpl + 62, option_class)
    tmpl[64] = 2
    tmpl[65] = 2
    store_be64(tmpl + 66, 0)
    store_be16(tmpl + 74, option_class)
    tmpl[76] = 3
    tmpl[77] = 1
    store_be32(tmpl + 78, 0)
    base_sum = 0x4500 + 0x4000 + ((<uint32_t>ttl << 8) | 17)
    with nogil:
        for j in range(m):
            if j + _AHEAD < m and size > 0:
                GWLB_PREFETCH(&data[0] + inner_start[rows[j + _AHEAD]])
            r = rows[j]
            ilen = inner_len[r]
            q = &out[0] + out_off[j]
            ip = &data[0] + inner_start[r]
            memcpy(q, tmpl, _HDR)
            if copy_inner:
                memcpy(q + _HDR, ip, ilen)
            # outer lengths as on the wire: a snapped inner packet's own total length, not the captured bytes
            wl = load_be16(ip + 2) if ilen >= 4 else ilen
            tot = <uint16_t>((wl if wl > ilen else ilen) + _HDR - 14)
            a = src[r * s_src]
            b = dst[r * s_dst]
            store_be16(q + 16, tot)
            store_be32(q + 26, a)
            store_be32(q + 30, b)
            acc = base_sum + tot + (a >> 16) + (a & 0xFFFF) + (b >> 16) + (b & 0xFFFF)
            acc = (acc & 0xFFFF) + (acc >> 16)
            acc = (acc & 0xFFFF) + (acc >> 16)
            store_be16(q + 24, <uint16_t>(~acc & 0xFFFF))
            if hash_port:
                store_be16(q + 34, _flow_port(ip, ilen, hash_seed))
            else:
                store_be16(q + 34, sport[r * s_sp])
            store_be16(q + 38, <uint16_t>(tot - 20))
            store_be32(q + 46, vni[r * s_vni] << 8)
            store_be64(q + 54, endpoint_id[r * s_ep])
            store_be64(q + 66, attachment_id[r * s_att])
            store_be32(q + 78, cookie[r * s_ck])


def flow_ports(const uint8_t[::1] data, const int64_t[::1] inner_start, const uint32_t[::1] inner_len,
               uint16_t[::1] out, uint64_t hash_seed):
    """UDP source ports the encoder derives from each inner IPv4 packet's 5-tuple (symmetric hash).

    Parameters
    ----------
    data : uint8[::1]
    inner_start : int64[n]
    inner_len : uint32[n]
    out : uint16[n]
        Output. Port in 49152-65535; 49152 for packets shorter than an IPv4 header or outside the arena.
    hash_seed : int
        Pre-mixed seed (``mix_seed``).

    Returns
    -------
    None
    """
    cdef Py_ssize_t n = inner_start.shape[0]
    cdef Py_ssize_t size = data.shape[0]
    cdef Py_ssize_t i
    _check_len("inner_len", inner_len.shape[0], n)
    _check_len("out", out.shape[0], n)
    with nogil:
        for i in range(n):
            if inner_start[i] < 0 or inner_start[i] >= size or inner_len[i] > size - inner_start[i]:
                out[i] = 49152
            else:
                out[i] = _flow_port(&data[0] + inner_start[i], inner_len[i], hash_seed)


def swap_outer(uint8_t[::1] data, const int64_t[::1] off, const uint32_t[::1] caplen,
               const uint16_t[::1] linktype, const uint8_t[::1] status):
    """Firewall return, in place: swap the outer MACs and IPv4 addresses of every packet whose status is OK.

    Parameters
    ----------
    data : uint8[::1]
        Arena, modified in place (pass a copy to keep the original).
    off : int64[n]
    caplen : uint32[n]
    linktype : uint16[n]
    status : uint8[n]
        Rows that are not OK are left untouched.

    Returns
    -------
    int
        Number of packets swapped.

    Notes
    -----
    The Geneve header and options stay byte for byte (the GWLB checks them); the UDP ports stay (the packet
    goes back to port 6081 and keeps its flow-hash source port); the IPv4 header checksum is recomputed.
    Sets no status.
    """
    cdef Py_ssize_t n = off.shape[0]
    cdef Py_ssize_t size = data.shape[0]
    cdef Py_ssize_t i, k, o, cl, l3 = 0, l4 = 0, end = 0, ihl
    cdef uint8_t* p
    cdef uint8_t t
    cdef uint32_t a
    cdef int64_t done = 0
    _check_len("caplen", caplen.shape[0], n)
    _check_len("linktype", linktype.shape[0], n)
    _check_len("status", status.shape[0], n)
    with nogil:
        for i in range(n):
            if i + _AHEAD < n and size > 0:
                GWLB_PREFETCH(&data[0] + off[i + _AHEAD])
            if status[i] != ST_OK:
                continue
            o = off[i]
            cl = caplen[i]
            if o < 0 or o > size or cl > size - o:
                continue
            p = &data[0] + o if size > 0 else NULL
            if find_l3(p, cl, linktype[i], &l3) != ST_OK or _ipv4(p, cl, l3, &l4, &end) != ST_OK:
                continue
            if linktype[i] == _LT_ETHERNET:
                for k in range(6):
                    t = p[k]
                    p[k] = p[6 + k]
                    p[6 + k] = t
            for k in range(4):
                t = p[l3 + 12 + k]
                p[l3 + 12 + k] = p[l3 + 16 + k]
                p[l3 + 16 + k] = t
            ihl = (p[l3] & 0x0F) * 4
            store_be16(p + l3 + 10, 0)
            a = 0
            k = 0
            while k < ihl:
                a += load_be16(p + l3 + k)
                k += 2
            while a >> 16:
                a = (a & 0xFFFF) + (a >> 16)
            store_be16(p + l3 + 10, <uint16_t>(~a & 0xFFFF))
            done += 1
    return done


cdef inline void _check_len(str name, Py_ssize_t got, Py_ssize_t n):
    if got != n:
        raise ValueError(f"{name} must have length {n}, got {got}")


cdef inline Py_ssize_t _step(str name, Py_ssize_t got, Py_ssize_t n):
    if got == 1:
        return 0
    if got != n:
        raise ValueError(f"{name} must have length {n} or 1, got {got}")
    return 1
