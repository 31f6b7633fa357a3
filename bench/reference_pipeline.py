"""The reference the pipeline benchmark compares against: the path of DESIGN.md section 1 scripted on dpkt.

This is what a user writes without gwlb-fast, one packet at a time in Python, doing the same work as
``gwlb_fast.Pipeline.run`` with taps off:

- read the capture with ``dpkt.pcap.Reader``; parse Ethernet / IPv4 / TCP, UDP, ICMP with dpkt;
- where the packet enters: a packet from a VPC subnet enters at its subnet's route table; any other one comes from
  the Internet and enters at the NAT gateway (DNAT, reverse SNAT, or a reply as the private host sees it, which
  needs a live SNAT mapping);
- route tables: longest-prefix match by a linear scan over the table's routes, next hops ``local``, ``gwlbe:``,
  ``natgw:``, ``internet``, ``blackhole``; a second visit to the same endpoint or NAT gateway is a loop;
- GWLB: a symmetric 5-tuple hash (CRC-32 of the ordered endpoints), a dict flow table keyed by the ordered 5-tuple
  and the endpoint id with idle timeouts, the firewall of a new flow chosen by the hash over the firewalls, a random
  32-bit flow cookie; the packet is sent to its firewall in Ethernet + IPv4 (dpkt, checksum by dpkt) + UDP 6081 +
  Geneve with the three GWLB options (struct);
- firewall: parse the Geneve frame (dpkt for the outer headers, struct for Geneve and its options), map the endpoint
  id to its zone, look the session up in a dict (same key as the GWLB), classify the first packet of a session by a
  first-match linear scan over the rules, then the session states of ``gwlb_fast.stages.firewall`` (TCP must start with a
  SYN; allow / deny, RST closes, FIN from both sides closes; idle, close and deny timeouts); allowed packets go back
  with the Geneve header echoed and the outer addresses swapped;
- GWLB again: parse the returning frame, check the flow and its cookie, hand the inner packet to the endpoint,
  whose subnet's route table takes it on;
- NAT gateway: SNAT with endpoint-independent mappings in a dict (ports allocated lowest first from the configured
  range minus the DNAT ports, per protocol), DNAT rules, replies translated back; headers rewritten with dpkt and
  checksums recomputed by dpkt (IPv4, TCP, UDP, ICMP);
- delivered packets are written with ``dpkt.pcap.Writer`` (nanosecond timestamps), in input order.

Reset actions (``reset-*``) are not modelled here: the benchmark policies use allow, deny and drop only
(:class:`ReferencePipeline` refuses other actions). Health events are not modelled either (the benchmark runs
without them).
"""
from __future__ import annotations

import ipaddress
import random
import struct
import zlib
from collections import deque

import dpkt
import yaml

GENEVE_PORT = 6081
_GENEVE_BASE = struct.Struct("!BBHI")
_OPT64 = struct.Struct("!HBBQ")
_OPT32 = struct.Struct("!HBBI")
_UDP = struct.Struct("!HHHH")
_KEY = struct.Struct("!IIHHBQ")
_PROTO = {"tcp": 6, "udp": 17, "icmp": 1}
_ICMP_QUERY = {0, 8, 13, 14, 15, 16, 17, 18}

TCP_SYN, TCP_RST, TCP_FIN, TCP_ACK = 0x02, 0x04, 0x01, 0x10
S_OPEN, S_FIN_CLOSED, S_RST_CLOSED, S_DENIED = range(4)


def _ip(s) -> int:
    return int(ipaddress.IPv4Address(str(s)))


def _net(s) -> tuple[int, int, int]:
    n = ipaddress.IPv4Network(str(s), strict=False)
    return int(n.network_address), int(n.netmask), n.prefixlen


def _ports(values) -> list[tuple[int, int]] | None:
    if values is None or values == "any" or values == ["any"]:
        return None
    out = []
    for v in values if isinstance(values, list) else [values]:
        if isinstance(v, str) and "-" in v:
            lo, hi = v.split("-")
            out.append((int(lo), int(hi)))
        else:
            out.append((int(v), int(v)))
    return out


def _nets(values) -> list[tuple[int, int]] | None:
    if values is None or values == "any" or values == ["any"] or "any" in values:
        return None
    return [_net(v)[:2] for v in (values if isinstance(values, list) else [values])]


class ReferencePipeline:
    """The modelled path on dpkt, per packet; :meth:`run` replays one capture and returns counters."""

    def __init__(self, topology_path, seed: int = 0):
        with open(topology_path) as f:
            t = yaml.safe_load(f)
        self.rng = random.Random(seed)
        # VPCs: subnets (net, mask, name, route table) and route tables [(net, mask, plen, kind, target)]
        self.vpcs = {}
        for vname, v in t["vpcs"].items():
            subnets = [(*_net(s["cidr"])[:2], sname, s["route_table"]) for sname, s in v["subnets"].items()]
            tables = {}
            for tname, routes in v["route_tables"].items():
                rows = []
                for r in routes:
                    net, mask, plen = _net(r["dst"])
                    kind, _, target = str(r["via"]).partition(":")
                    rows.append((net, mask, plen, kind, target))
                tables[tname] = rows
            self.vpcs[vname] = (subnets, tables)
        self.endpoints = {name: e for name, e in t["endpoints"].items()}
        self.gwlbs = {}
        for gname, g in t["gwlb"].items():
            to = g.get("idle_timeout", {})
            self.gwlbs[gname] = {
                "ip": _ip(g["address"]),
                "option_class": int(g.get("geneve", {}).get("option_class", 0x0108)),
                "fws": [(fname, _ip(f["address"])) for fname, f in g["firewalls"].items()],
                "timeout_tcp": float(to.get("tcp", 350)), "timeout_other": float(to.get("other", 120)),
                "flows": {},
            }
        self.nats = {}
        for nname, n in t["nat_gateways"].items():
            lo, hi = (int(x) for x in str(n.get("snat", {}).get("ports", "1024-65535")).split("-"))
            dnat = {}
            for r in n.get("dnat", []):
                ip, port = r["to"].rsplit(":", 1)
                dnat[(_PROTO[r["proto"]], int(r["port"]))] = (_ip(ip), int(port))
            free = {}
            for p in (6, 17, 1):
                free[p] = deque(x for x in range(lo, hi + 1) if (p, x) not in dnat)
            vpc, subnet = n.get("vpc"), n.get("subnet")
            self.nats[nname] = {
                "public": _ip(n["public_ip"]), "snat": [_net(s)[:2] for s in n.get("snat", {}).get("sources", [])],
                "dnat": dnat, "dnat_back": {(p, ip, port): pub for (p, pub), (ip, port) in dnat.items()},
                "free": free, "map": {}, "back": {}, "vpc": vpc,
                "table": {s[2]: s[3] for s in self.vpcs[vpc][0]}[subnet],
            }
        pol = t["security_policy"]
        zones = pol.get("zones", {})
        self.zone_of_endpoint = {}
        for zname, members in zones.items():
            for m in members:
                self.zone_of_endpoint[int(self.endpoints[m]["id"])] = zname
        first_zone = next(iter(zones), "default")
        for e in self.endpoints.values():
            self.zone_of_endpoint.setdefault(int(e["id"]), first_zone)
        self.rules = []
        for r in pol["rules"]:
            action = r.get("action", "deny")
            if action not in ("allow", "deny", "drop"):
                raise ValueError(f"reference pipeline: rule {r.get('name')}: action {action!r} not modelled")
            proto = r.get("protocol", "any")
            proto = None if proto == "any" else _PROTO.get(proto, proto)
            self.rules.append((r.get("name"), _nets(r.get("source")), _nets(r.get("destination")), proto,
                               _ports(r.get("source_port")), _ports(r.get("port")),
                               set(r["from"]) if "from" in r else None, set(r["to"]) if "to" in r else None,
                               action == "allow"))
        self.default_allow = pol.get("default", "deny") == "allow"
        self.sessions = {}  # (firewall name, key) -> [state, allow, rule, fins, client_src, last_ts]
        self.hits = [0] * (len(self.rules) + 1)
        self.drops: dict[str, int] = {}
        self.delivered = 0
        self.packets_in = 0

    # ------------------------------------------------------------------ helpers
    def _drop(self, reason: str) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1

    def _subnet(self, vpc: str, ip: int):
        for net, mask, name, table in self.vpcs[vpc][0]:
            if ip & mask == net:
                return name, table
        return None

    def _lpm(self, vpc: str, table: str, dst: int):
        best = None
        for route in self.vpcs[vpc][1][table]:
            if dst & route[1] == route[0] and (best is None or route[2] > best[2]):
                best = route
        return best

    def _classify(self, src, dst, sport, dport, proto, zone):
        for i, (_, snets, dnets, rproto, sports, dports, zfrom, zto, allow) in enumerate(self.rules):
            if rproto is not None and rproto != proto:
                continue
            if snets is not None and not any(src & m == n for n, m in snets):
                continue
            if dnets is not None and not any(dst & m == n for n, m in dnets):
                continue
            if dports is not None and not any(lo <= dport <= hi for lo, hi in dports):
                continue
            if sports is not None and not any(lo <= sport <= hi for lo, hi in sports):
                continue
            if zfrom is not None and zone not in zfrom:
                continue
            if zto is not None and zone not in zto:
                continue
            return i, allow
        return len(self.rules), self.default_allow

    @staticmethod
    def _ports_of(ip):
        """(sport, dport, flags) of an IPv4 packet as gwlb-fast parses it (ICMP queries: the id as both ports)."""
        l4 = ip.data
        if ip.p in (6, 17) and not isinstance(l4, bytes):
            return l4.sport, l4.dport, l4.flags if ip.p == 6 else 0
        if ip.p == 1 and not isinstance(l4, bytes):
            if l4.type in _ICMP_QUERY and len(l4.data) >= 4:
                ident = struct.unpack_from("!H", bytes(l4.data), 0)[0]
                return ident, ident, l4.type
            return 0, 0, l4.type
        return 0, 0, 0

    @staticmethod
    def _set_ports(ip, sport=None, dport=None):
        """Rewrite the L4 ports (ICMP query: the identifier) and let dpkt recompute the checksums."""
        ip.sum = 0
        l4 = ip.data
        if ip.p in (6, 17):
            if sport is not None:
                l4.sport = sport
            if dport is not None:
                l4.dport = dport
            l4.sum = 0
        elif ip.p == 1:
            echo = l4.data
            if isinstance(echo, dpkt.icmp.ICMP.Echo):
                echo.id = sport if sport is not None else dport
            else:
                body = bytes(echo)
                echo = struct.pack("!H", sport if sport is not None else dport) + body[2:]
            l4.data = echo
            l4.sum = 0

    # ------------------------------------------------------------------ NAT gateway
    def _nat_inbound(self, nat, ip, proto, dport, ts):
        """Packet from the Internet to the public IP: reverse SNAT or DNAT; False when there is no translation."""
        back = nat["back"].get((proto, dport))
        if back is not None:
            priv_ip, priv_port = back
            nat["map"][(priv_ip, priv_port, proto)][1] = ts
            ip.dst = struct.pack("!I", priv_ip)
            self._set_ports(ip, dport=priv_port)
            return True
        to = nat["dnat"].get((proto, dport))
        if to is not None:
            ip.dst = struct.pack("!I", to[0])
            self._set_ports(ip, dport=to[1])
            return True
        return False

    def _nat_outbound(self, nat, ip, src, sport, proto, ts):
        pub = nat["dnat_back"].get((proto, src, sport))
        if pub is not None:
            ip.src = struct.pack("!I", nat["public"])
            self._set_ports(ip, sport=pub)
            return None
        if not any(src & m == n for n, m in nat["snat"]):
            return "NAT_NO_MAPPING"
        key = (src, sport, proto)
        m = nat["map"].get(key)
        timeout = 350.0 if proto == 6 else 120.0
        if m is not None and ts - m[1] > timeout:
            del nat["back"][(proto, m[0])]
            del nat["map"][key]
            nat["free"][proto].append(m[0])
            m = None
        if m is None:
            if not nat["free"][proto]:
                return "NAT_PORT_EXHAUSTED"
            m = [nat["free"][proto].popleft(), ts]
            nat["map"][key] = m
            nat["back"][(proto, m[0])] = (src, sport)
        m[1] = ts
        ip.src = struct.pack("!I", nat["public"])
        self._set_ports(ip, sport=m[0])
        return None

    # ------------------------------------------------------------------ GWLB + firewall round trip
    def _inspect(self, ip, ep, ts):
        """GWLBe -> GWLB ==Geneve==> FW ==Geneve==> GWLB -> GWLBe; returns (inner IP packet, None) or (None, why)."""
        g = self.gwlbs[ep["gwlb"]]
        ep_id = int(ep["id"])
        src, dst = struct.unpack("!II", ip.src + ip.dst)
        sport, dport, _ = self._ports_of(ip)
        proto = ip.p
        if (src, sport) <= (dst, dport):
            key = (src, dst, sport, dport, proto, ep_id)
        else:
            key = (dst, src, dport, sport, proto, ep_id)
        h = zlib.crc32(_KEY.pack(*key))
        # GWLB flow table
        flow = g["flows"].get(key)
        timeout = g["timeout_tcp"] if proto == 6 else g["timeout_other"]
        if flow is None or ts - flow[2] > timeout:
            fw = h % len(g["fws"])
            cookie = self.rng.getrandbits(32)
            flow = [fw, cookie, ts]
            g["flows"][key] = flow
        flow[2] = ts
        fw, cookie = flow[0], flow[1]
        fw_name, fw_ip = g["fws"][fw]
        # Geneve to the firewall
        cls = g["option_class"]
        opts = (_OPT64.pack(cls, 1, 2, ep_id) + _OPT64.pack(cls, 2, 2, 0) + _OPT32.pack(cls, 3, 1, cookie))
        geneve = _GENEVE_BASE.pack(len(opts) // 4, 0, 0x0800, 0) + opts
        inner = bytes(ip)
        udp = _UDP.pack(49152 + h % 16384, GENEVE_PORT, 8 + len(geneve) + len(inner), 0)
        outer = dpkt.ip.IP(src=struct.pack("!I", g["ip"]), dst=struct.pack("!I", fw_ip), p=17, ttl=64, df=1,
                           data=udp + geneve + inner)
        outer.len = 20 + len(outer.data)
        wire = bytes(dpkt.ethernet.Ethernet(src=b"\x02\x00\x00\x00\x00\x01", dst=b"\x02\x00\x00\x00\x00\x02",
                                            type=0x0800, data=outer))
        # the firewall
        verdict, back = self._firewall(fw_name, wire, cls, ts)
        if back is None:
            return None, verdict
        # back at the GWLB: check the flow and its cookie, hand the inner packet to the endpoint
        eth = dpkt.ethernet.Ethernet(back)
        gen = bytes(eth.data.data.data)
        ep_back, cookie_back, inner_off = self._geneve_options(gen, cls)
        if ep_back != ep_id or cookie_back != cookie or g["flows"].get(key) is not flow:
            return None, "STALE_COOKIE"
        return dpkt.ip.IP(gen[inner_off:]), None

    @staticmethod
    def _geneve_options(gen: bytes, cls: int):
        b0, _flags, _ptype, _vni = _GENEVE_BASE.unpack_from(gen, 0)
        end = 8 + (b0 & 0x3F) * 4
        pos, ep_id, cookie = 8, None, None
        while pos + 4 <= end:
            ocls, otype, olen = struct.unpack_from("!HBB", gen, pos)
            olen = (olen & 0x1F) * 4
            if ocls == cls and otype == 1 and olen == 8:
                ep_id = struct.unpack_from("!Q", gen, pos + 4)[0]
            elif ocls == cls and otype == 3 and olen == 4:
                cookie = struct.unpack_from("!I", gen, pos + 4)[0]
            pos += 4 + olen
        return ep_id, cookie, end

    def _firewall(self, name, wire, cls, ts):
        eth = dpkt.ethernet.Ethernet(wire)
        outer = eth.data
        gen = bytes(outer.data.data)
        ep_id, _cookie, inner_off = self._geneve_options(gen, cls)
        zone = self.zone_of_endpoint.get(ep_id)
        if zone is None:
            return "UNKNOWN_ENDPOINT", None
        ip = dpkt.ip.IP(gen[inner_off:])
        src, dst = struct.unpack("!II", ip.src + ip.dst)
        sport, dport, flags = self._ports_of(ip)
        proto = ip.p
        if (src, sport) <= (dst, dport):
            key = (name, src, dst, sport, dport, proto, ep_id)
        else:
            key = (name, dst, src, dport, sport, proto, ep_id)
        s = self.sessions.get(key)
        if s is not None:
            state = s[0]
            timeout = (60.0 if state == S_DENIED else 15.0 if state != S_OPEN else 3600.0 if proto == 6 else 30.0)
            if ts - s[5] > timeout:
                s = None
        if s is None:
            if proto == 6 and flags & (TCP_SYN | TCP_ACK | TCP_RST) != TCP_SYN:
                self.sessions.pop(key, None)
                return "TCP_NOT_SYN", None
            rule, allow = self._classify(src, dst, sport, dport, proto, zone)
            self.hits[rule] += 1
            s = [S_OPEN if allow else S_DENIED, allow, rule, 0, (src, sport), ts]
            self.sessions[key] = s
        s[5] = ts
        state = s[0]
        if state == S_DENIED:
            return "POLICY_DENY", None
        if state == S_RST_CLOSED:
            return "SESSION_CLOSED", None
        if proto == 6:
            if flags & TCP_RST:
                s[0] = S_RST_CLOSED
            elif flags & TCP_FIN:
                s[3] |= 1 if (src, sport) == s[4] else 2
                if s[3] == 3 and state == S_OPEN:
                    s[0] = S_FIN_CLOSED
        # echo the Geneve header, swap the outer addresses
        outer.src, outer.dst = outer.dst, outer.src
        outer.sum = 0
        eth.src, eth.dst = eth.dst, eth.src
        return None, bytes(eth)

    # ------------------------------------------------------------------ one packet
    def packet(self, ts, buf):
        """Carry one frame along the path; returns the frame to write, or None (dropped, counted)."""
        self.packets_in += 1
        try:
            eth = dpkt.ethernet.Ethernet(buf)
        except dpkt.UnpackError:
            self._drop("TRUNCATED")
            return None
        ip = eth.data
        if not isinstance(ip, dpkt.ip.IP):
            self._drop("NOT_IPV4")
            return None
        src, dst = struct.unpack("!II", ip.src + ip.dst)
        proto = ip.p
        vpc = table = None
        for vname in self.vpcs:
            sub = self._subnet(vname, src)
            if sub is not None:
                vpc, table = vname, sub[1]
                break
        from_internet = vpc is None
        if from_internet:
            _, dport, _ = self._ports_of(ip)
            for nat in self.nats.values():
                if dst == nat["public"]:
                    if not self._nat_inbound(nat, ip, proto, dport, ts):
                        self._drop("NAT_NO_MAPPING")
                        return None
                    vpc, table = nat["vpc"], nat["table"]
                    break
                if self._subnet(nat["vpc"], dst) is not None:
                    # a reply to an SNAT'ed flow as the private host sees it: its mapping must exist
                    if (dst, dport, proto) not in nat["map"]:
                        self._drop("NAT_NO_MAPPING")
                        return None
                    vpc, table = nat["vpc"], nat["table"]
                    break
            else:
                self._drop("NO_ROUTE")
                return None
        inspected, nat_out = set(), False
        for _ in range(8):
            dst = struct.unpack("!I", ip.dst)[0]
            route = self._lpm(vpc, table, dst)
            if route is None:
                self._drop("NO_ROUTE")
                return None
            kind, target = route[3], route[4]
            if kind == "blackhole":
                self._drop("BLACKHOLE")
                return None
            if kind == "local":
                if self._subnet(vpc, dst) is None:
                    self._drop("NO_ROUTE")
                    return None
                break
            if kind == "internet":
                break
            if kind == "natgw":
                if from_internet or nat_out:
                    self._drop("ROUTE_LOOP")
                    return None
                src = struct.unpack("!I", ip.src)[0]
                sport, _, _ = self._ports_of(ip)
                why = self._nat_outbound(self.nats[target], ip, src, sport, ip.p, ts)
                if why is not None:
                    self._drop(why)
                    return None
                nat_out = True
                break
            # gwlbe
            if target in inspected:
                self._drop("ROUTE_LOOP")
                return None
            inspected.add(target)
            ep = self.endpoints[target]
            ip, why = self._inspect(ip, ep, ts)
            if ip is None:
                self._drop(why)
                return None
            vpc = ep["vpc"]
            table = self.vpcs[vpc][0][[s[2] for s in self.vpcs[vpc][0]].index(ep["subnet"])][3]
        else:
            self._drop("ROUTE_LOOP")
            return None
        eth.data = ip
        self.delivered += 1
        return bytes(eth)

    def run(self, in_path, out_path) -> dict:
        """Replay a pcap into another; returns {packets_in, delivered, drops, hits}."""
        with open(in_path, "rb") as fi, open(out_path, "wb") as fo:
            writer = dpkt.pcap.Writer(fo, nano=True)
            for ts, buf in dpkt.pcap.Reader(fi):
                out = self.packet(ts, buf)
                if out is not None:
                    writer.writepkt(out, ts)
        names = [r[0] for r in self.rules] + ["default"]
        return {"packets_in": self.packets_in, "delivered": self.delivered, "drops": dict(self.drops),
                "hits": {n: h for n, h in zip(names, self.hits) if h}}
