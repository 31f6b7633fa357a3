# The link layer, one home for every kernel that must find the IPv4 header in a captured frame: Ethernet with any
# 802.1Q / 802.1ad tags (at most MAX_VLAN_TAGS), Linux cooked v1 and v2, raw IP, BSD null/loopback and PPP (pcap
# link types, tcpdump.org/linktypes.html).
from libc.stdint cimport uint8_t, uint16_t, uint32_t

from gwlb_fast._kernels._bytes cimport load_be16, load_be32, load_le32
from gwlb_fast._kernels._status cimport ST_BAD_IP_VERSION, ST_NOT_IPV4, ST_OK, ST_TRUNCATED

cdef enum:
    LT_NULL = 0
    LT_ETHERNET = 1
    LT_PPP = 9
    LT_RAW = 101
    LT_LOOP = 108
    LT_LINUX_SLL = 113
    LT_IPV4 = 228
    LT_LINUX_SLL2 = 276
    ETH_HLEN = 14
    SLL_HLEN = 16
    SLL2_HLEN = 20
    MAX_VLAN_TAGS = 8
    ETHERTYPE_IPV4 = 0x0800
    ETHERTYPE_IPV6 = 0x86DD
    NULL_HLEN = 4
    AF_INET = 2
    PPP_IPV4 = 0x0021
    PPP_IPV6 = 0x0057


cdef inline uint16_t _af_ethertype(uint32_t af) noexcept nogil:
    # AF_INET is 2 everywhere; AF_INET6 is 24 (NetBSD, OpenBSD), 28 (FreeBSD), 30 (Darwin), 10 (Linux)
    if af == AF_INET:
        return ETHERTYPE_IPV4
    if af == 24 or af == 28 or af == 30 or af == 10:
        return ETHERTYPE_IPV6
    return 0


cdef inline Py_ssize_t short_link_header(const uint8_t* p, Py_ssize_t n, uint16_t lt, uint16_t* et) noexcept nogil:
    """Null/loopback and PPP headers: their length (-1 if cut short), and in et[0] the network protocol as an
    ethertype (0x0800, 0x86DD, or 0 for anything else).

    LINKTYPE_NULL (0): 4-byte address family in the byte order of the host that captured, so both orders are tried
    (a family value never reads as 2 the other way round). LINKTYPE_LOOP (108): the same in network byte order.
    LINKTYPE_PPP (9, RFC 1661/1662): optional 0xff 0x03 address and control bytes, then the protocol (one byte when
    its low bit is set: protocol-field compression, else two); 0x0021 is IPv4, 0x0057 IPv6.
    """
    cdef uint32_t af
    cdef Py_ssize_t pos = 0
    cdef uint16_t proto
    et[0] = 0
    if lt == LT_NULL or lt == LT_LOOP:
        if n < NULL_HLEN:
            return -1
        af = load_be32(p)
        et[0] = _af_ethertype(af)
        if et[0] == 0 and lt == LT_NULL:
            et[0] = _af_ethertype(load_le32(p))
        return NULL_HLEN
    # LT_PPP
    if n >= 2 and p[0] == 0xFF and p[1] == 0x03:
        pos = 2
    if pos + 1 > n:
        return -1
    if p[pos] & 1:
        proto = p[pos]
        pos += 1
    else:
        if pos + 2 > n:
            return -1
        proto = load_be16(p + pos)
        pos += 2
    if proto == PPP_IPV4:
        et[0] = ETHERTYPE_IPV4
    elif proto == PPP_IPV6:
        et[0] = ETHERTYPE_IPV6
    return pos


cdef inline bint is_vlan(uint16_t et) noexcept nogil:
    return et == 0x8100 or et == 0x88A8 or et == 0x9100


cdef inline uint8_t find_l3(const uint8_t* p, Py_ssize_t n, uint16_t lt, Py_ssize_t* l3) noexcept nogil:
    """Find the IPv4 header in a frame of n captured bytes: ST_OK with l3[0] set, or why not.

    ST_TRUNCATED (link header cut short), ST_NOT_IPV4 (another ethertype or protocol, IPv6 under LINKTYPE_RAW, an unknown link
    type, more than MAX_VLAN_TAGS tags), ST_BAD_IP_VERSION (a raw-IP frame whose version is neither 4 nor, for
    LINKTYPE_RAW, 6). The IPv4 header itself is not checked here.
    """
    cdef Py_ssize_t pos
    cdef uint16_t et
    cdef int tags = 0
    if lt == LT_RAW or lt == LT_IPV4:
        if n < 1:
            return ST_TRUNCATED
        if (p[0] >> 4) != 4:
            return ST_NOT_IPV4 if (lt == LT_RAW and (p[0] >> 4) == 6) else ST_BAD_IP_VERSION
        l3[0] = 0
        return ST_OK
    if lt == LT_ETHERNET:
        if n < ETH_HLEN:
            return ST_TRUNCATED
        et = load_be16(p + 12)
        pos = ETH_HLEN
    elif lt == LT_LINUX_SLL:
        if n < SLL_HLEN:
            return ST_TRUNCATED
        et = load_be16(p + 14)
        pos = SLL_HLEN
    elif lt == LT_LINUX_SLL2:
        if n < SLL2_HLEN:
            return ST_TRUNCATED
        et = load_be16(p)
        pos = SLL2_HLEN
    elif lt == LT_NULL or lt == LT_LOOP or lt == LT_PPP:
        pos = short_link_header(p, n, lt, &et)
        if pos < 0:
            return ST_TRUNCATED
        if et != ETHERTYPE_IPV4:
            return ST_NOT_IPV4
        l3[0] = pos
        return ST_OK
    else:
        return ST_NOT_IPV4
    while is_vlan(et):
        tags += 1
        if tags > MAX_VLAN_TAGS:
            return ST_NOT_IPV4
        if pos + 4 > n:
            return ST_TRUNCATED
        et = load_be16(p + pos + 2)
        pos += 4
    if et != ETHERTYPE_IPV4:
        return ST_NOT_IPV4
    l3[0] = pos
    return ST_OK
