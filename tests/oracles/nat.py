"""Plain-Python reference of the NAT gateway: translation decisions, port allocation and header rewrite.

The rewrite recomputes every checksum from scratch (RFC 1071) instead of updating it incrementally, so it checks
the kernel's RFC 1624 arithmetic independently. Timestamps are not modelled (no idle expiry): tests that use this
oracle keep every packet within the idle timeout.
"""
import struct
from collections import deque

from gwlb_fast.status import PktStatus as S

from .parse import parse

TCP, UDP, ICMP = 6, 17, 1
ICMP_QUERY = {0, 8, 13, 14, 15, 16, 17, 18}


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def rewrite(pkt: bytes, linktype: int, side: int, new_ip: int, new_port: int) -> bytes:
    """Set the source (side 0) or destination (side 1) address/port; recompute checksums from scratch."""
    p = parse(pkt, linktype)
    b = bytearray(pkt)
    l3, l4, proto = p["l3_off"], p["l4_off"], p["proto"]
    struct.pack_into("!I", b, l3 + 12 + 4 * side, new_ip)
    ihl = (b[l3] & 15) * 4
    struct.pack_into("!H", b, l3 + 10, 0)
    struct.pack_into("!H", b, l3 + 10, checksum(bytes(b[l3:l3 + ihl])))
    tot = struct.unpack_from("!H", b, l3 + 2)[0]
    seg_end = l3 + tot
    if proto == ICMP:
        struct.pack_into("!H", b, l4 + 4, new_port)
        struct.pack_into("!H", b, l4 + 2, 0)
        struct.pack_into("!H", b, l4 + 2, checksum(bytes(b[l4:seg_end])))
        return bytes(b)
    struct.pack_into("!H", b, l4 + 2 * side, new_port)
    cf = l4 + (16 if proto == TCP else 6)
    if proto == UDP and struct.unpack_from("!H", pkt, cf)[0] == 0:
        return bytes(b)      # no UDP checksum stays no checksum
    struct.pack_into("!H", b, cf, 0)
    pseudo = bytes(b[l3 + 12:l3 + 20]) + struct.pack("!BBH", 0, proto, seg_end - l4)
    c = checksum(pseudo + bytes(b[l4:seg_end]))
    if proto == UDP and c == 0:
        c = 0xFFFF
    struct.pack_into("!H", b, cf, c)
    return bytes(b)


class NatOracle:
    """Endpoint-independent NAT with FIFO port allocation (lowest port first, DNAT ports excluded)."""

    def __init__(self, cfg, capacity=None):
        self.cfg = cfg
        self.capacity = cfg.capacity if capacity is None else capacity
        self.maps = {}          # (proto, priv_ip, priv_port) -> pub_port
        self.owner = {}         # (proto, pub_port) -> (priv_ip, priv_port)
        dnat_ports = {(r.proto, r.port) for r in cfg.dnat}
        self.free = {p: deque(q for q in range(cfg.port_lo, cfg.port_hi + 1) if (p, q) not in dnat_ports)
                     for p in (TCP, UDP, ICMP)}

    def _in_sources(self, ip):
        return any((ip >> (32 - plen) if plen else 0) == (net >> (32 - plen) if plen else 0)
                   for net, plen in self.cfg.snat_sources)

    @staticmethod
    def _translatable(p):
        return p["proto"] in (TCP, UDP) or (p["proto"] == ICMP and p["tcp_flags"] in ICMP_QUERY)

    def outbound(self, pkt: bytes, linktype: int = 1):
        """(status, new bytes, kind) for a packet from the private side."""
        p = parse(pkt, linktype)
        if p["status"] != S.OK:
            return p["status"], pkt, 0
        if not self._translatable(p):
            return S.NOT_FORWARDED, pkt, 0
        for r in self.cfg.dnat:
            if r.proto == p["proto"] and r.to_ip == p["src_ip"] and r.to_port == p["sport"]:
                return S.OK, rewrite(pkt, linktype, 0, self.cfg.public_ip_int, r.port), 4
        if not self._in_sources(p["src_ip"]):
            return S.NAT_NO_MAPPING, pkt, 0
        key = (p["proto"], p["src_ip"], p["sport"])
        if key not in self.maps:
            if len(self.maps) >= self.capacity:
                return S.NAT_TABLE_FULL, pkt, 0
            if not self.free[p["proto"]]:
                return S.NAT_PORT_EXHAUSTED, pkt, 0
            port = self.free[p["proto"]].popleft()
            self.maps[key] = port
            self.owner[(p["proto"], port)] = (p["src_ip"], p["sport"])
        return S.OK, rewrite(pkt, linktype, 0, self.cfg.public_ip_int, self.maps[key]), 1

    def inbound(self, pkt: bytes, linktype: int = 1):
        """(status, new bytes, kind) for a packet from the Internet."""
        p = parse(pkt, linktype)
        if p["status"] != S.OK:
            return p["status"], pkt, 0
        if p["dst_ip"] != self.cfg.public_ip_int:
            return S.NAT_NO_MAPPING, pkt, 0
        if not self._translatable(p):
            return S.NOT_FORWARDED, pkt, 0
        hit = self.owner.get((p["proto"], p["dport"]))
        if hit is not None:
            return S.OK, rewrite(pkt, linktype, 1, hit[0], hit[1]), 2
        for r in self.cfg.dnat:
            if r.proto == p["proto"] and r.port == p["dport"]:
                return S.OK, rewrite(pkt, linktype, 1, r.to_ip, r.to_port), 3
        return S.NAT_NO_MAPPING, pkt, 0
