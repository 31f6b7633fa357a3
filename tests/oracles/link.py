"""Plain-Python reference of the link layer (_kernels/_link.pxd): where the IPv4 header starts in a frame."""
import struct

from gwlb_fast.status import PktStatus as S

ETHERNET, RAW, SLL, IPV4, SLL2 = 1, 101, 113, 228, 276
NULL, PPP, LOOP = 0, 9, 108
AF_INET6 = (24, 28, 30, 10)


def short_link_header(pkt: bytes, linktype: int):
    """Null/loopback and PPP: (header length or -1 if cut short, ethertype of the payload or 0)."""
    if linktype in (NULL, LOOP):
        if len(pkt) < 4:
            return -1, 0
        orders = ("!I", "<I") if linktype == NULL else ("!I",)
        for fmt in orders:
            af = struct.unpack_from(fmt, pkt)[0]
            if af == 2:
                return 4, 0x0800
            if af in AF_INET6:
                return 4, 0x86DD
        return 4, 0
    pos = 2 if pkt[:2] == b"\xff\x03" else 0
    if len(pkt) < pos + 1:
        return -1, 0
    if pkt[pos] & 1:
        proto, pos = pkt[pos], pos + 1
    elif len(pkt) < pos + 2:
        return -1, 0
    else:
        proto, pos = struct.unpack_from("!H", pkt, pos)[0], pos + 2
    return pos, {0x0021: 0x0800, 0x0057: 0x86DD}.get(proto, 0)
VLAN = (0x8100, 0x88A8, 0x9100)
MAX_VLAN_TAGS = 8


def find_l3(pkt: bytes, linktype: int):
    """(status, l3 offset): OK, TRUNCATED, NOT_IPV4 or BAD_IP_VERSION, as the kernels' find_l3."""
    n = len(pkt)
    if linktype in (RAW, IPV4):
        if n < 1:
            return S.TRUNCATED, 0
        if pkt[0] >> 4 != 4:
            return (S.NOT_IPV4 if (linktype == RAW and pkt[0] >> 4 == 6) else S.BAD_IP_VERSION), 0
        return S.OK, 0
    if linktype in (NULL, LOOP, PPP):
        hlen, et = short_link_header(pkt, linktype)
        if hlen < 0:
            return S.TRUNCATED, 0
        return (S.OK, hlen) if et == 0x0800 else (S.NOT_IPV4, 0)
    hdr = {ETHERNET: (14, 12), SLL: (16, 14), SLL2: (20, 0)}.get(linktype)
    if hdr is None:
        return S.NOT_IPV4, 0
    if n < hdr[0]:
        return S.TRUNCATED, 0
    et = struct.unpack_from("!H", pkt, hdr[1])[0]
    pos = hdr[0]
    tags = 0
    while et in VLAN:
        tags += 1
        if tags > MAX_VLAN_TAGS:
            return S.NOT_IPV4, 0
        if pos + 4 > n:
            return S.TRUNCATED, 0
        et = struct.unpack_from("!H", pkt, pos + 2)[0]
        pos += 4
    if et != 0x0800:
        return S.NOT_IPV4, 0
    return S.OK, pos
