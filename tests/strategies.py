"""Hypothesis strategies that build real packets with dpkt (shared by the test files)."""
import struct

import dpkt
from hypothesis import strategies as st

ipv4 = st.integers(0, 2**32 - 1)
port = st.integers(0, 65535)


def _ip_bytes(a: int) -> bytes:
    return struct.pack("!I", a)


@st.composite
def l4_segment(draw):
    """(proto number, dpkt L4 object or bytes)."""
    kind = draw(st.sampled_from(["tcp", "udp", "icmp", "other"]))
    payload = draw(st.binary(max_size=64))
    if kind == "tcp":
        opts = draw(st.sampled_from([b"", b"\x02\x04\x05\xb4", b"\x01\x01\x08\x0a" + bytes(8)]))
        seg = dpkt.tcp.TCP(sport=draw(port), dport=draw(port), seq=draw(ipv4), ack=draw(ipv4),
                           flags=draw(st.integers(0, 255)), opts=opts, data=payload)
        seg.off = (20 + len(opts)) // 4
        return 6, seg
    if kind == "udp":
        return 17, dpkt.udp.UDP(sport=draw(port), dport=draw(port), data=payload)
    if kind == "icmp":
        t = draw(st.sampled_from([0, 8, 3, 11, 13, 14, 5]))
        body = dpkt.icmp.ICMP.Echo(id=draw(port), seq=draw(port), data=payload)
        return 1, dpkt.icmp.ICMP(type=t, code=draw(st.integers(0, 15)), data=body)
    return draw(st.sampled_from([47, 50, 132, 89])), payload


@st.composite
def ipv4_packet(draw, allow_frag=True):
    proto, l4 = draw(l4_segment())
    opts = draw(st.sampled_from([b"", b"\x01\x01\x01\x00", b"\x94\x04\x00\x00" + b"\x01" * 4]))
    ip = dpkt.ip.IP(src=_ip_bytes(draw(ipv4)), dst=_ip_bytes(draw(ipv4)), p=proto, ttl=draw(st.integers(1, 255)),
                    id=draw(port), opts=opts, data=l4)
    ip.hl = (20 + len(opts)) // 4
    if allow_frag and draw(st.integers(0, 9)) == 0:
        ip.mf = draw(st.integers(0, 1))
        ip.offset = draw(st.sampled_from([0, 8, 185 * 8]))
    return bytes(ip)


@st.composite
def ethernet_frame(draw):
    """An Ethernet frame, sometimes with 802.1Q / 802.1ad tags, usually IPv4, sometimes ARP/IPv6."""
    inner_type = draw(st.sampled_from([0x0800] * 8 + [0x0806, 0x86DD]))
    body = draw(ipv4_packet()) if inner_type == 0x0800 else draw(st.binary(min_size=20, max_size=60))
    tags = draw(st.lists(st.sampled_from([0x8100, 0x88A8]), max_size=2))
    hdr = bytes(6) + b"\x02" + bytes(5)
    if not tags:
        return hdr + struct.pack("!H", inner_type) + body
    types = tags + [inner_type]
    out = hdr + struct.pack("!H", types[0])
    for nxt in types[1:]:
        out += struct.pack("!HH", draw(st.integers(0, 4095)), nxt)
    return out + body


@st.composite
def mutated(draw, strategy):
    """A valid packet cut short or with a few bytes overwritten."""
    pkt = bytearray(draw(strategy))
    how = draw(st.sampled_from(["cut", "flip", "both", "none"]))
    if how in ("flip", "both") and pkt:
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, len(pkt) - 1))
            pkt[i] = draw(st.integers(0, 255))
    if how in ("cut", "both"):
        pkt = pkt[: draw(st.integers(0, len(pkt)))]
    return bytes(pkt)
