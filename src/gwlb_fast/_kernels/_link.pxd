# The link layer, one home for every kernel that must find the IPv4 header in a captured frame: Ethernet with any
# 802.1Q / 802.1ad tags (at most MAX_VLAN_TAGS), Linux cooked v1 and v2, raw IP (pcap link types, tcpdump.org).
from libc.stdint cimport uint8_t, uint16_t

from gwlb_fast._kernels._bytes cimport load_be16
from gwlb_fast._kernels._status cimport ST_BAD_IP_VERSION, ST_NOT_IPV4, ST_OK, ST_TRUNCATED

cdef enum:
    LT_ETHERNET = 1
    LT_RAW = 101
    LT_LINUX_SLL = 113
    LT_IPV4 = 228
    LT_LINUX_SLL2 = 276
    ETH_HLEN = 14
    SLL_HLEN = 16
    SLL2_HLEN = 20
    MAX_VLAN_TAGS = 8
    ETHERTYPE_IPV4 = 0x0800


cdef inline bint is_vlan(uint16_t et) noexcept nogil:
    return et == 0x8100 or et == 0x88A8 or et == 0x9100


cdef inline uint8_t find_l3(const uint8_t* p, Py_ssize_t n, uint16_t lt, Py_ssize_t* l3) noexcept nogil:
    """Find the IPv4 header in a frame of n captured bytes: ST_OK with l3[0] set, or why not.

    ST_TRUNCATED (link header cut short), ST_NOT_IPV4 (another ethertype, IPv6 under LINKTYPE_RAW, an unknown link
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
