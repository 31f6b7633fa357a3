"""Plain-Python reference of _kernels/shard.pyx (the executable specification of the flow shard)."""
import struct

from gwlb_fast.status import PktStatus as S

from .flowhash import fmix64

SHARD_SEED = 0x5EED5A4D
ICMP_ERRORS = (3, 4, 5, 11, 12)


def _query(t: int) -> bool:
    return t in (0, 8) or 13 <= t <= 18


def hash_shard(a: int, b: int, n: int) -> int:
    lo, hi = min(a, b), max(a, b)
    h = fmix64(fmix64(SHARD_SEED ^ ((lo << 32) | hi)))
    return ((h >> 32) * n) >> 32


class Sharder:
    """gateways: list of (public_ip, port_lo, port_hi, [(proto, port, to_ip), ...]); state: first fragments."""

    def __init__(self, gateways, n):
        self.gws, self.n = gateways, n
        self.frags = {}

    def _map(self, ip, port, has_port, proto):
        for pub, lo, hi, dnat in self.gws:
            if ip != pub:
                continue
            if not has_port:
                return ip, None
            for p, port_, to in dnat:
                if p == proto and port_ == port:
                    return to, None
            if lo <= port <= hi:
                return ip, (port - lo) * self.n // (hi - lo + 1)
            return ip, None
        return ip, None

    def shard(self, pkt: bytes, parsed: dict) -> int:
        st = parsed["status"]
        if self.n == 1 or st not in (S.OK, S.FRAGMENT):
            return 0
        a, b, pa, pb, pr = (parsed[k] for k in ("src_ip", "dst_ip", "sport", "dport", "proto"))
        l3, l4 = parsed["l3_off"], parsed["l4_off"]
        publics = {g[0] for g in self.gws}
        ipid, flags = struct.unpack_from("!HH", pkt, l3 + 4)
        fkey = (a, b, pr, ipid)
        if st == S.FRAGMENT:
            if (a in publics or b in publics) and fkey in self.frags:
                return self.frags[fkey]
            return hash_shard(a, b, self.n)
        has = pr in (6, 17) or (pr == 1 and _query(parsed["tcp_flags"]))
        if pr == 1 and parsed["tcp_flags"] in ICMP_ERRORS:
            q = l4 + 8
            if q + 20 <= len(pkt) and pkt[q] >> 4 == 4:
                qihl = (pkt[q] & 15) * 4
                a, b = struct.unpack_from("!II", pkt, q + 12)
                pr = pkt[q + 9]
                has = False
                qfrag = struct.unpack_from("!H", pkt, q + 6)[0] & 0x1FFF
                if qihl >= 20 and qfrag == 0 and q + qihl + 8 <= len(pkt):
                    if pr in (6, 17):
                        pa, pb = struct.unpack_from("!HH", pkt, q + qihl)
                        has = True
                    elif pr == 1 and _query(pkt[q + qihl]):
                        pa = pb = struct.unpack_from("!H", pkt, q + qihl + 4)[0]
                        has = True
        a, s = self._map(a, pa, has, pr)
        b, s2 = self._map(b, pb, has, pr)
        if s is None:
            s = s2
        if s is None:
            s = hash_shard(a, b, self.n)
        if flags & 0x2000 and (parsed["src_ip"] in publics or parsed["dst_ip"] in publics):
            self.frags[fkey] = s
        return s
