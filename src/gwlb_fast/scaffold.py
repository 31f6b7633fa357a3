"""``gwlb-fast init CAPTURE``: a commented topology that replays a capture as written (DESIGN.md section 11).

One streamed pass over the capture (batched, chunk by chunk) learns:

- the private hosts (RFC 1918 and 100.64.0.0/10; with none, the hosts that open the connections): one app subnet
  per /24 they use, one VPC per /16;
- the flows between two inside hosts of one VPC (east-west): their hosts go into different app subnets (a /24 is
  split into the largest equal blocks that part every such pair) and the app route table sends the VPC's CIDR to
  the GWLBe, so that this traffic is inspected too (a route for the CIDR overrides the implicit local one; without
  it the VPC would deliver the traffic itself and the firewalls would see none of it);
- who opens each flow: a TCP SYN without ACK names its client; for other flows the first packet seen, unless it
  comes from a well-known port to a high one (a reply); flows whose first packet in the capture is mid-stream or a
  reply began before the capture (then ``replay: {pickup: true}``);
- the services Internet hosts open on private hosts (a capture taken on a server): DNAT rules;
- every address the capture uses, so that the NAT gateway's public IP (documentation range) and the GWLB's and
  firewalls' addresses are ones the capture does not use.

Then it writes the topology (GWLBe, GWLB with N firewalls, NAT gateway, allow-all policy with the observed services
as commented example rules) to a new file, and returns what it decided.
"""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ConfigError
from .status import PktStatus

TCP, UDP, ICMP = 6, 17, 1
SYN, ACK = 0x02, 0x10

_PRIVATE = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10")]
# addresses that are no host: 0/8, 127/8, 169.254/16, multicast and above (224/3 covers 224/4 and 240/4)
_SPECIAL = [ipaddress.ip_network(n) for n in ("0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/3")]
# documentation ranges (RFC 5737) for the NAT gateway's public IP
_DOC_IPS = [int(ipaddress.ip_address(a)) for a in
            [f"203.0.113.{i}" for i in range(10, 250)] + [f"198.51.100.{i}" for i in range(10, 250)]]
PROFILES = ("aws", "alibaba", "tencent")
_INSIDE = {"private": "private addresses", "openers": "no private host: the hosts that open the connections",
           "none": "no IPv4 host: a placeholder VPC"}


def _in(ip: np.ndarray, nets) -> np.ndarray:
    m = np.zeros(ip.shape, bool)
    for n in nets:
        mask = (0xFFFFFFFF << (32 - n.prefixlen)) & 0xFFFFFFFF
        m |= (ip & np.uint32(mask)) == np.uint32(int(n.network_address))
    return m


def is_private(ip: np.ndarray) -> np.ndarray:
    """bool per uint32 address: RFC 1918 or shared address space (100.64.0.0/10)."""
    return _in(ip, _PRIVATE)


def is_host(ip: np.ndarray) -> np.ndarray:
    """bool per uint32 address: could be a unicast host (not 0/8, 127/8, 169.254/16, multicast, broadcast)."""
    return ~_in(ip, _SPECIAL) & ((ip & np.uint32(0xFF)) != 0xFF)


@dataclass
class CaptureFacts:
    """What one pass over a capture learned (arrays are sorted and unique)."""

    packets: int = 0
    ipv4: int = 0
    addresses: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint32))
    # one row per flow: client ip, server ip, client port, server port, proto, began-before-capture (0/1)
    flows: np.ndarray = field(default_factory=lambda: np.zeros((0, 6), np.int64))
    first_ts: int | None = None
    last_ts: int | None = None


def _flow_rows(b, ok: np.ndarray) -> np.ndarray:
    """Per OK packet: (client, server, cport, sport, proto, reply-or-midstream) as the packet alone suggests,
    keyed so that both directions of a flow give the same (client, server, ...) order when that is known."""
    src, dst = b.src_ip[ok].astype(np.int64), b.dst_ip[ok].astype(np.int64)
    sp, dp = b.sport[ok].astype(np.int64), b.dport[ok].astype(np.int64)
    proto = b.proto[ok].astype(np.int64)
    flags = b.tcp_flags[ok].astype(np.int64)
    tcp = proto == TCP
    syn_only = tcp & ((flags & (SYN | ACK)) == SYN)
    # a packet from a well-known port to a high port is the server's side
    from_server = (sp < 1024) & (dp >= 1024)
    from_server |= tcp & ((flags & (SYN | ACK)) == (SYN | ACK))
    from_server &= ~syn_only
    icmp = proto == ICMP
    # ICMP: the parser puts the type in tcp_flags; an echo reply (type 0) comes from the server, and ICMP ports
    # mean nothing as services
    from_server = np.where(icmp, flags == 0, from_server)
    c_ip = np.where(from_server, dst, src)
    s_ip = np.where(from_server, src, dst)
    c_pt = np.where(from_server, dp, sp)
    s_pt = np.where(from_server, sp, dp)
    # began before the capture: a TCP packet that is no opening SYN, or a reply
    early = (tcp & ~syn_only) | from_server
    return np.stack([c_ip, s_ip, c_pt, s_pt, proto, early.astype(np.int64)], axis=1)


def _first_per_flow(rows: np.ndarray) -> np.ndarray:
    """The first row of each flow (the first five columns, either direction, are the key)."""
    if rows.shape[0] == 0:
        return rows
    a = np.minimum(rows[:, 0], rows[:, 1])
    bb = np.maximum(rows[:, 0], rows[:, 1])
    pa = np.where(rows[:, 0] <= rows[:, 1], rows[:, 2], rows[:, 3])
    pb = np.where(rows[:, 0] <= rows[:, 1], rows[:, 3], rows[:, 2])
    key = np.stack([a, bb, pa, pb, rows[:, 4]], axis=1)
    _, first = np.unique(key, axis=0, return_index=True)
    return rows[np.sort(first)]


def scan_capture(path, chunk: int = 65536, quiet: bool = True) -> CaptureFacts:
    """Stream ``path`` once and collect :class:`CaptureFacts` (batched per chunk, memory bounded by the flows)."""
    from .outputs.report import Progress
    from .pcapio import read_pcap

    facts = CaptureFacts()
    size = os.path.getsize(path)
    progress = Progress(size, quiet=quiet)
    addr_parts, flow_parts = [], []
    reader = read_pcap(path, chunk=chunk, parse=True, strict=True)
    try:
        for b in reader:
            n = len(b)
            facts.packets += n
            if n:
                t0, t1 = int(b.ts_ns.min()), int(b.ts_ns.max())
                facts.first_ts = t0 if facts.first_ts is None else min(facts.first_ts, t0)
                facts.last_ts = t1 if facts.last_ts is None else max(facts.last_ts, t1)
            ok = b.status == PktStatus.OK
            v4 = ok | (b.status == PktStatus.FRAGMENT)
            facts.ipv4 += int(v4.sum())
            addr_parts.append(np.unique(np.concatenate([b.src_ip[v4], b.dst_ip[v4]])))
            flow_parts.append(_first_per_flow(_flow_rows(b, ok)))
            if len(addr_parts) > 8:
                addr_parts = [np.unique(np.concatenate(addr_parts))]
                flow_parts = [_first_per_flow(np.concatenate(flow_parts))]
            progress.update(facts.packets, getattr(reader, "offset", None))
    finally:
        progress.close()
        close = getattr(reader, "close", None)
        if close:
            close()
    facts.addresses = np.unique(np.concatenate(addr_parts)) if addr_parts else facts.addresses
    if flow_parts:
        facts.flows = _first_per_flow(np.concatenate(flow_parts))
    return facts


@dataclass
class Plan:
    """What ``init`` decided (the topology's content, before it is written as YAML)."""

    #: name -> {cidr, app: [subnet cidrs], snat: [/24 cidrs], gwlbe: cidr, nat: cidr, public_ip, dnat, east_west}
    vpcs: dict[str, dict]
    firewalls: int
    profile: str
    gwlb_address: str
    fw_addresses: list[str]
    services: list[tuple[str, int, int]]  # (proto name, port, flows) observed, most flows first
    pickup: bool
    early_flows: int
    hosts: int
    inside_by: str                 # "private" or "openers"
    facts: CaptureFacts
    #: flows between inside hosts of two different VPCs (/16s): no path joins the VPCs, so they leave through
    #: the NAT gateway (a transit router would join them: DESIGN.md section 13)
    cross_vpc_flows: int = 0


def _net24(ip: int) -> str:
    return f"{ipaddress.ip_address(ip & 0xFFFFFF00)}/24"


def _net16(ip: int) -> str:
    return f"{ipaddress.ip_address(ip & 0xFFFF0000)}/16"


def split_for_east_west(hosts: list[int], pairs: list[tuple[int, int]]) -> list[str]:
    """App subnets for the hosts of one /24: the /24 itself when none of ``pairs`` (hosts that talk to each other)
    falls in it; otherwise the largest equal blocks (/25 ... /32) in which no pair shares a block and no host is a
    block's network or broadcast address (a /32 always is such a block); only blocks that hold a host."""
    plen = 24
    if pairs:
        for plen in range(25, 33):
            shift = 32 - plen
            low = (1 << shift) - 1
            if (all((a >> shift) != (b >> shift) for a, b in pairs)
                    and (plen == 32 or all(0 < (h & low) < low for h in hosts))):
                break
    shift = 32 - plen
    blocks = sorted({(h >> shift) << shift for h in hosts})
    return [f"{ipaddress.ip_address(b)}/{plen}" for b in blocks]


def _proto_name(p: int) -> str:
    return {TCP: "tcp", UDP: "udp", ICMP: "icmp"}.get(p, str(p))


def plan_topology(facts: CaptureFacts, firewalls: int = 2, profile: str = "aws") -> Plan:
    """Decide the deployment that replays the capture (see the module docstring)."""
    if profile not in PROFILES:
        raise ConfigError(f"--profile: must be one of {', '.join(PROFILES)}, got {profile!r}")
    if firewalls < 1:
        raise ConfigError(f"--firewalls: must be at least 1, got {firewalls}")
    addrs = facts.addresses
    hosts = addrs[is_private(addrs) & is_host(addrs)]
    inside_by = "private"
    fl = facts.flows
    if hosts.size == 0 and fl.shape[0]:
        # no private host: the side that opens the connections is the inside
        openers = fl[fl[:, 5] == 0, 0] if np.any(fl[:, 5] == 0) else fl[:, 0]
        hosts = np.unique(openers.astype(np.uint32))
        hosts = hosts[is_host(hosts)]
        inside_by = "openers"
    used = set(addrs.tolist())
    placeholder = hosts.size == 0
    if placeholder:
        # no IPv4 host at all (ARP, IPv6): a VPC to hold the place; every packet is counted at the input
        hosts = np.array([int(ipaddress.ip_address("10.0.1.10"))], np.uint32)
        inside_by = "none"
    host_set = set(hosts.tolist()) if not placeholder else set()
    # VPCs: one per /16, app subnets one per /24
    by16: dict[int, set[int]] = {}
    for h in hosts.tolist():
        by16.setdefault(h & 0xFFFF0000, set()).add(h & 0xFFFFFF00)
    doc_ips = iter([a for a in _DOC_IPS if a not in used])
    vpcs: dict[str, dict] = {}
    for net16 in sorted(by16):
        apps = sorted(by16[net16])
        free = [net16 | (i << 8) for i in range(255, -1, -1) if (net16 | (i << 8)) not in by16[net16]
                and not any((a & 0xFFFFFF00) == (net16 | (i << 8)) for a in used)]
        if len(free) < 2:
            raise ConfigError(f"{ipaddress.ip_address(net16)}/16: no free /24 left for the GWLBe and NAT subnets")
        name = "vpc-" + "-".join(str(ipaddress.ip_address(net16)).split(".")[:2])
        vpcs[name] = {"cidr": _net16(net16), "app": [_net24(a) for a in apps], "snat": [_net24(a) for a in apps],
                      "gwlbe": _net24(free[1]), "nat": _net24(free[0]),
                      "public_ip": str(ipaddress.ip_address(next(doc_ips))), "dnat": [], "east_west": 0}
    # flows: services, DNAT for services that outside hosts open on inside hosts
    early = int(fl[:, 5].sum()) if fl.shape[0] else 0
    svc_count: dict[tuple[int, int], int] = {}
    dnat_seen: dict[str, set[tuple[int, int]]] = {v: set() for v in vpcs}
    vpc_of16 = {int(ipaddress.ip_network(v["cidr"]).network_address): k for k, v in vpcs.items()}
    if fl.shape[0]:
        for c, s, _cp, sp, proto, _e in np.unique(fl[:, :6], axis=0).tolist():
            if proto in (TCP, UDP):
                svc_count[(proto, sp)] = svc_count.get((proto, sp), 0) + 1
            elif proto == ICMP:
                svc_count[(proto, 0)] = svc_count.get((proto, 0), 0) + 1
            if proto in (TCP, UDP) and s in host_set and c not in host_set and (s & 0xFFFF0000) in vpc_of16:
                dnat_seen[vpc_of16[s & 0xFFFF0000]].add((proto, s, sp))
    for v, items in dnat_seen.items():
        taken: set[tuple[int, int]] = set()
        for proto, s, sp in sorted(items):
            port = sp
            while (proto, port) in taken:  # one public IP: a second server on the same port gets another one
                port = 10000 + (port % 50000) if port < 10000 else port + 1
            taken.add((proto, port))
            vpcs[v]["dnat"].append({"proto": _proto_name(proto), "port": port,
                                    "to": f"{ipaddress.ip_address(s)}:{sp}"})
    services = sorted(((_proto_name(p), port, n) for (p, port), n in svc_count.items()), key=lambda t: (-t[2], t))
    # east-west: flows between two inside hosts of one VPC cross its route tables (and the GWLBe) only between
    # subnets: part every such pair into subnets of its own
    cross_vpc = 0
    if fl.shape[0] and host_set:
        pairs16: dict[str, set[tuple[int, int]]] = {}
        for c, s in np.unique(fl[:, :2], axis=0).tolist():
            if c == s or c not in host_set or s not in host_set:
                continue
            if (c & 0xFFFF0000) != (s & 0xFFFF0000):
                cross_vpc += 1
                continue
            pairs16.setdefault(vpc_of16[c & 0xFFFF0000], set()).add((c, s))
        flows_ew = {v: 0 for v in vpcs}
        for c, s in fl[:, :2].tolist():
            if c != s and c in host_set and s in host_set and (c & 0xFFFF0000) == (s & 0xFFFF0000):
                flows_ew[vpc_of16[c & 0xFFFF0000]] += 1
        for v, pairs in pairs16.items():
            vpcs[v]["east_west"] = flows_ew[v]
            hosts24: dict[int, list[int]] = {}
            for h in host_set:
                if vpc_of16.get(h & 0xFFFF0000) == v:
                    hosts24.setdefault(h & 0xFFFFFF00, []).append(h)
            app = []
            for n24 in sorted(hosts24):
                inside = [(a, b) for a, b in pairs if (a & 0xFFFFFF00) == n24 and (b & 0xFFFFFF00) == n24]
                app += split_for_east_west(hosts24[n24], inside)
            vpcs[v]["app"] = app
    # infrastructure addresses the capture does not use
    def pick(base: int, k: int) -> list[str]:
        out, a = [], base
        while len(out) < k:
            if a not in used and a not in host_set:
                out.append(str(ipaddress.ip_address(a)))
            a += 1
        return out

    base = int(ipaddress.ip_address("100.127.0.10"))
    gw = pick(base, 1)[0]
    fws = pick(int(ipaddress.ip_address("100.127.1.11")), firewalls)
    return Plan(vpcs, firewalls, profile, gw, fws, services, early > 0, early, len(host_set), inside_by, facts,
                cross_vpc)


def _pickup_supported() -> bool:
    from . import config

    return "replay" in config.TOP_KEYS


def render(plan: Plan, capture: str) -> str:
    """The topology YAML, commented."""
    w: list[str] = []
    f = plan.facts
    span = (f.last_ts - f.first_ts) / 1e9 if f.first_ts is not None else 0.0
    w.append(f"# gwlb-fast topology written by `gwlb-fast init` for {Path(capture).name}")
    w.append(f"# {f.packets:,} packets ({f.ipv4:,} IPv4) over {span:.3f} s, {f.flows.shape[0]:,} flows, "
             f"{plan.hosts} inside hosts ({_INSIDE[plan.inside_by]}).")
    w.append("#")
    w.append("# outbound  app --(app: 0.0.0.0/0 -> GWLBe)--> GWLBe --> GWLB ==Geneve==> fw-k ==> GWLB --> GWLBe")
    w.append("#           --(gwlbe: 0.0.0.0/0 -> NAT GW)--> NAT GW (SNAT) --> Internet")
    w.append("# inbound   Internet --> NAT GW (DNAT) --(nat: VPC CIDR -> GWLBe)--> GWLBe --> GWLB ==> fw-k ==> GWLB")
    w.append("#           --> GWLBe --(gwlbe: VPC CIDR -> local)--> app server")
    if any(v["east_west"] for v in plan.vpcs.values()):
        w.append("# east-west app --(app: VPC CIDR -> GWLBe)--> GWLBe --> GWLB ==> fw-k ==> GWLB --> GWLBe")
        w.append("#           --(gwlbe: VPC CIDR -> local)--> the other app subnet's host")
    if plan.cross_vpc_flows:
        w.append(f"# {plan.cross_vpc_flows} flow(s) join inside hosts of two VPCs: no path joins the VPCs here, so "
                 "they leave through the NAT gateway (a transit router joins VPCs: see the README)")
    w.append("# Edit freely: `gwlb-fast check` validates it, `gwlb-fast run` replays the capture through it.")
    w.append("vpcs:")
    for name, v in plan.vpcs.items():
        w.append(f"  {name}:")
        w.append(f"    cidr: {v['cidr']}")
        w.append("    subnets:")
        for cidr in v["app"]:
            addr, plen = cidr.split("/")
            sn = "app-" + (addr.rsplit(".", 1)[0] if plen == "24" else f"{addr}-{plen}").replace(".", "-")
            note = "hosts seen in the capture"
            if plen != "24":
                small = ", smaller than an AWS subnet, /28, can be" if int(plen) > 28 else ""
                note += f" (split for east-west{small})"
            w.append(f"      {sn}: {{cidr: {cidr}, route_table: app}}   # {note}")
        w.append(f"      gwlbe: {{cidr: {v['gwlbe']}, route_table: gwlbe}}   # a /24 the capture does not use")
        w.append(f"      nat: {{cidr: {v['nat']}, route_table: nat}}")
        w.append("    route_tables:")
        ep, nat = f"gwlbe-{name[4:]}", f"nat-{name[4:]}"
        if v["east_west"]:
            w.append(f"      app: [{{dst: {v['cidr']}, via: \"gwlbe:{ep}\"}}, {{dst: 0.0.0.0/0, via: \"gwlbe:{ep}\"}}]"
                     f"   # {v['east_west']} east-west flow(s) inspected")
        else:
            w.append(f"      app: [{{dst: 0.0.0.0/0, via: \"gwlbe:{ep}\"}}]")
        w.append(f"      gwlbe: [{{dst: 0.0.0.0/0, via: \"natgw:{nat}\"}}, {{dst: {v['cidr']}, via: local}}]")
        w.append(f"      nat: [{{dst: {v['cidr']}, via: \"gwlbe:{ep}\"}}, {{dst: 0.0.0.0/0, via: internet}}]")
    w.append("endpoints:")
    for i, name in enumerate(plan.vpcs):
        w.append(f"  gwlbe-{name[4:]}: {{vpc: {name}, subnet: gwlbe, id: {0x0A1B2C3D4E5F6071 + i:#018x}, "
                 f"gwlb: gwlb-1}}")
    w.append("gwlb:")
    w.append("  gwlb-1:")
    w.append(f"    address: {plan.gwlb_address}")
    w.append("    stickiness: 5-tuple          # 5-tuple | 3-tuple | 2-tuple")
    w.append("    failover: keep               # keep | rebalance")
    w.append("    idle_timeout: {tcp: 350, other: 120}")
    w.append(f"    geneve: {{profile: {plan.profile}}}   # aws | alibaba | tencent (option class, largest packet)")
    w.append("    firewalls:")
    for k, a in enumerate(plan.fw_addresses, 1):
        w.append(f"      fw-{k}: {{address: {a}}}")
    w.append("nat_gateways:")
    for name, v in plan.vpcs.items():
        w.append(f"  nat-{name[4:]}:")
        w.append(f"    vpc: {name}")
        w.append("    subnet: nat")
        w.append(f"    public_ip: {v['public_ip']}   # documentation range, not used by the capture")
        w.append(f"    snat: {{sources: [{', '.join(v['snat'])}]}}")
        if v["dnat"]:
            w.append("    dnat:                         # services that Internet hosts open in the capture")
            for d in v["dnat"]:
                w.append(f"      - {{proto: {d['proto']}, port: {d['port']}, to: {d['to']}}}")
    w.append("security_policy:")
    zone_members = ", ".join(f"gwlbe-{n[4:]}" for n in plan.vpcs)
    w.append(f"  zones: {{gwlb: [{zone_members}]}}")
    w.append("  rules:")
    w.append("    # services seen in the capture, as example rules (first match wins):")
    for proto, port, n in plan.services[:20]:
        if proto == "icmp":
            w.append(f"    # - {{name: allow-icmp, protocol: icmp, action: allow}}   # {n} flows")
        else:
            w.append(f"    # - {{name: allow-{proto}-{port}, protocol: {proto}, port: [{port}], action: allow}}"
                     f"   # {n} flows")
    w.append("    - {name: allow-all, action: allow}   # replays the capture as written")
    if plan.pickup:
        note = f"{plan.early_flows} flows began before the capture (mid-stream or reply first)"
        if _pickup_supported():
            w.append(f"replay: {{pickup: true}}   # {note}")
        else:
            w.append(f"# {note}: take them as established with `replay: {{pickup: true}}` (or `run --pickup`)")
    w.append("events: []   # what-if health changes, e.g. - {at: 5.0, firewall: fw-2, state: unhealthy}")
    return "\n".join(w) + "\n"


def write_new(path: Path, text: str, force: bool, inputs: list[Path]) -> None:
    """Write ``text`` to ``path`` through a temporary name; never over an input, nor an existing file unless
    ``force``."""
    from .outputs.outfiles import OutputFile, refuse_overlap

    refuse_overlap(inputs, [path])
    if path.exists() and not force:
        raise ConfigError(f"{path}: already exists (use --force to replace it)")
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory")
    with OutputFile(path, text=True) as f:
        f.file.write(text)


def describe(plan: Plan, out: Path, capture="CAPTURE") -> str:
    """The few lines ``init`` prints."""
    f = plan.facts
    lines = [(f"{f.packets:,} packets ({f.ipv4:,} IPv4), {f.flows.shape[0]:,} flows, {plan.hosts} inside hosts "
              f"({_INSIDE[plan.inside_by]})")]
    for name, v in plan.vpcs.items():
        rules = ", ".join(f"{d['proto']}/{d['port']}->{d['to']}" for d in v["dnat"])
        dn = f", DNAT {rules}" if rules else ""
        lines.append(f"  {name} {v['cidr']}: {len(v['app'])} app subnet(s) {', '.join(v['app'][:4])}"
                     f"{' ...' if len(v['app']) > 4 else ''}; NAT {v['public_ip']}{dn}")
        if v["east_west"]:
            lines.append(f"    {v['east_west']} east-west flow(s) between its hosts: in different app subnets, "
                         f"inspected (app: {v['cidr']} -> GWLBe)")
    if plan.cross_vpc_flows:
        lines.append(f"  {plan.cross_vpc_flows} flow(s) between inside hosts of two VPCs leave through the NAT "
                     f"gateway (no transit router)")
    lines.append(f"  gwlb-1 {plan.gwlb_address}: {plan.firewalls} firewall(s), profile {plan.profile}; "
                 f"policy allow-all ({len(plan.services)} services as example rules)")
    if plan.pickup:
        lines.append(f"  {plan.early_flows} flow(s) began before the capture: "
                     + ("replay: {pickup: true}" if _pickup_supported() else "pickup noted as a comment"))
    lines.append(f"wrote {out}; next: gwlb-fast run {out} {capture} -o out.pcap --report report.html")
    return "\n".join(lines)


def init(capture, output="topology.yaml", firewalls: int = 2, profile: str = "aws", force: bool = False,
         quiet: bool = True) -> Plan:
    """Scan ``capture``, write the topology to ``output``; returns the plan."""
    cap = Path(capture)
    if not cap.exists():
        raise FileNotFoundError(2, "no such file", str(cap))
    out = Path(output)
    from .outputs.outfiles import refuse_overlap

    refuse_overlap([cap], [out])
    if out.exists() and not force:
        raise ConfigError(f"{out}: already exists (use --force to replace it)")
    plan = plan_topology(scan_capture(cap, quiet=quiet), firewalls=firewalls, profile=profile)
    write_new(out, render(plan, str(cap)), force, [cap])
    return plan


def add_cli(sub) -> None:
    p = sub.add_parser("init", help="write a topology that replays a capture as written",
                       description="Scan a capture and write a commented topology that replays it: its private "
                                   "hosts in app subnets (one per /24, one VPC per /16; hosts that talk to each "
                                   "other in different subnets, their traffic routed through the GWLBe), a GWLBe, a "
                                   "GWLB with N firewalls, a NAT gateway, DNAT for services Internet hosts open, an "
                                   "allow-all policy.")
    p.add_argument("capture", help="capture (pcap or pcapng)")
    p.add_argument("-o", "--output", default="topology.yaml", help="topology file to write (default topology.yaml)")
    p.add_argument("--firewalls", type=int, default=2, help="firewalls behind the GWLB (default 2)")
    p.add_argument("--profile", choices=PROFILES, default="aws", help="GWLB flavour (default aws)")
    p.add_argument("--force", action="store_true", help="replace the output file if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar, no summary")
    p.set_defaults(func=_cmd_init)


def _cmd_init(args) -> int:
    plan = init(args.capture, args.output, firewalls=args.firewalls, profile=args.profile, force=args.force,
                quiet=args.quiet)
    if not args.quiet:
        print(describe(plan, Path(args.output), args.capture))
    return 0


__all__ = ["CaptureFacts", "Plan", "init", "plan_topology", "render", "scan_capture"]
