"""Plain-Python reference for the Geneve decoder and encoder (the executable specification of _kernels/geneve.pyx).

``decode(pkt, linktype, option_class)`` returns a dict with the same fields the kernel fills; ``encode(...)``
returns the bytes ``encap`` must produce for one packet.
"""
from __future__ import annotations

import struct

from gwlb_fast.status import PktStatus as S

from .link import find_l3

ETHERNET, RAW, SLL, IPV4, SLL2 = 1, 101, 113, 228, 276


def ipv4(pkt: bytes, l3: int):
    """(status, l4 offset, end of the IP packet within the capture)."""
    n = len(pkt)
    if l3 + 20 > n:
        return S.TRUNCATED, 0, 0
    if pkt[l3] >> 4 != 4:
        return S.BAD_IP_VERSION, 0, 0
    ihl = (pkt[l3] & 15) * 4
    if ihl < 20 or l3 + ihl > n:
        return S.BAD_IHL, 0, 0
    tot = struct.unpack_from("!H", pkt, l3 + 2)[0]
    if tot < ihl:
        return S.BAD_IP_LEN, 0, 0
    return S.OK, l3 + ihl, min(l3 + tot, n)


def decode(pkt: bytes, linktype: int = ETHERNET, option_class: int = 0x0108) -> dict:
    r = {"status": S.OK, "vni": 0, "flags": 0, "opt_len": 0, "endpoint_id": 0, "attachment_id": 0, "flow_cookie": 0, "inner_off": -1,
             "inner_len": 0, "inner_linktype": 0, "options": None}
    st, l3 = find_l3(pkt, linktype)
    if st == S.OK:
        st, l4, end = ipv4(pkt, l3)
    if st != S.OK:
        r["status"] = st
        return r
    if struct.unpack_from("!H", pkt, l3 + 6)[0] & 0x3FFF:
        r["status"] = S.FRAGMENT
        return r
    if pkt[l3 + 9] != 17:
        r["status"] = S.NOT_GENEVE
        return r
    if l4 + 8 > end:
        r["status"] = S.L4_TRUNCATED
        return r
    _, dport, ulen = struct.unpack_from("!HHH", pkt, l4)
    if dport != 6081:
        r["status"] = S.NOT_GENEVE
        return r
    if ulen >= 8 and l4 + ulen < end:
        end = l4 + ulen
    g = l4 + 8
    if g + 8 > end:
        r["status"] = S.GENEVE_TRUNCATED
        return r
    ver, olen = pkt[g] >> 6, (pkt[g] & 0x3F) * 4
    proto = struct.unpack_from("!H", pkt, g + 2)[0]
    r.update(flags=pkt[g + 1], opt_len=olen, vni=struct.unpack_from("!I", pkt, g + 4)[0] >> 8)
    st = S.GENEVE_BAD_VERSION if ver else S.OK
    oend = g + 8 + olen
    if oend > end:
        r["status"] = st or S.GENEVE_OPT_OVERRUN
        return r
    opts, st2, crit, pos = [], S.OK, False, g + 8
    while pos < oend:
        if pos + 4 > oend:
            st2 = S.GENEVE_BAD_TLV
            break
        cls, typ, ln = struct.unpack_from("!HBB", pkt, pos)
        ln = (ln & 0x1F) * 4
        if pos + 4 + ln > oend:
            st2 = S.GENEVE_BAD_TLV
            break
        data = pkt[pos + 4 : pos + 4 + ln]
        opts.append((cls, typ, data))
        if cls == option_class and typ in (1, 2):
            if ln != 8:
                st2 = S.GENEVE_BAD_TLV
            else:
                r["endpoint_id" if typ == 1 else "attachment_id"] = int.from_bytes(data, "big")
        elif cls == option_class and typ == 3:
            if ln != 4:
                st2 = S.GENEVE_BAD_TLV
            else:
                r["flow_cookie"] = int.from_bytes(data, "big")
        elif typ & 0x80:
            crit = True
        pos += 4 + ln
    st = st or st2
    if st == S.OK and crit:
        st = S.GENEVE_CRITICAL
    r.update(options=opts, inner_off=oend, inner_len=end - oend)
    if proto == 0x0800:
        r["inner_linktype"] = IPV4
        if st == S.OK and (end - oend < 20 or pkt[oend] >> 4 != 4):
            st = S.GENEVE_INNER_BAD
    elif proto == 0x6558:
        r["inner_linktype"] = ETHERNET
        if st == S.OK and end - oend < 14:
            st = S.GENEVE_INNER_BAD
    elif st == S.OK:
        st = S.GENEVE_BAD_PROTO
    r["status"] = st
    return r


def ip_checksum(hdr: bytes) -> int:
    s = sum(struct.unpack(f"!{len(hdr) // 2}H", hdr))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def encode(inner: bytes, src: int, dst: int, sport: int, vni: int, endpoint_id: int, attachment_id: int,
           cookie: int, option_class: int = 0x0108, src_mac: bytes = b"\x02\x00\x0a\x00\x00\x0a",
           dst_mac: bytes = b"\x02\x00\x0a\x00\x01\x0b", ttl: int = 64) -> bytes:
    """One Geneve frame as ``encap`` writes it (the IPv4 packet ``inner`` carried whole)."""
    opts = (struct.pack("!HBBQ", option_class, 1, 2, endpoint_id) + struct.pack("!HBBQ", option_class, 2, 2,
            attachment_id) + struct.pack("!HBBI", option_class, 3, 1, cookie))
    gen = struct.pack("!BBHI", len(opts) // 4, 0, 0x0800, vni << 8) + opts
    udp = struct.pack("!HHHH", sport, 6081, 8 + len(gen) + len(inner), 0)
    tot = 20 + len(udp) + len(gen) + len(inner)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, tot, 0, 0x4000, ttl, 17, 0, src.to_bytes(4, "big"),
                     dst.to_bytes(4, "big"))
    ip = ip[:10] + struct.pack("!H", ip_checksum(ip)) + ip[12:]
    return dst_mac + src_mac + b"\x08\x00" + ip + udp + gen + inner


def echo(frame: bytes) -> bytes:
    """A firewall's return of a decoded Ethernet/IPv4 Geneve frame (no VLAN): MACs and IPs swapped."""
    _st, l3 = find_l3(frame, ETHERNET)
    ihl = (frame[l3] & 15) * 4
    b = bytearray(frame)
    b[0:6], b[6:12] = frame[6:12], frame[0:6]
    b[l3 + 12 : l3 + 16], b[l3 + 16 : l3 + 20] = frame[l3 + 16 : l3 + 20], frame[l3 + 12 : l3 + 16]
    b[l3 + 10 : l3 + 12] = b"\0\0"
    b[l3 + 10 : l3 + 12] = struct.pack("!H", ip_checksum(bytes(b[l3 : l3 + ihl])))
    return bytes(b)


def plan(pkt: bytes, linktype: int, wirelen: int, max_inner: int):
    """What ``encap`` plans for one captured packet: (status, offset of the IPv4 packet in it, bytes carried,
    the carried packet's length on the wire); the last three are 0 unless the status is OK."""
    st, l3 = find_l3(pkt, linktype)
    if st == S.OK:
        st, _, end = ipv4(pkt, l3)
    if st != S.OK:
        return st, 0, 0, 0
    tot = struct.unpack_from("!H", pkt, l3 + 2)[0]
    if tot > max_inner or tot > 65535 - 68:
        return S.TOO_BIG, 0, 0, 0
    carried = end - l3
    return S.OK, l3, carried, (carried + max(wirelen - len(pkt), 0)) % 2**32
