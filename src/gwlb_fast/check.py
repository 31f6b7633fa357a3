"""``gwlb-fast check``: static analysis of a topology's routing (DESIGN.md sections 1 and 7).

The checker follows, route table by route table, the paths of section 1 that the topology implies:

- outbound: from every workload subnet (a subnet that is neither a GWLB endpoint's nor a NAT gateway's) to an
  Internet address, through GWLB endpoints (which hand the inspected packet to their own subnet's route table) and
  NAT gateways (which route from their own subnet's table);
- the return of that traffic, from the NAT gateway back to the subnet;
- inbound DNAT flows, from the NAT gateway to each DNAT server, and the server's replies back out.

and reports, as :class:`Finding` objects:

``black-hole``  a table on the path has no route for the destination, a route to ``blackhole``, or a ``local``
                route to an address in no subnet;
``loop``        following the next hops comes back to a table already visited;
``bypass``      traffic of a VPC that has GWLB endpoints reaches its destination without crossing one;
``asymmetric``  the return path crosses no endpoint or another endpoint than the forward path, or a DNAT server's
                reply leaves without (or through another) NAT gateway;
``no-internet`` a NAT gateway's subnet has no route to the Internet;
``nat``         a NAT gateway whose subnet cannot be told, or traffic reaching a NAT gateway from a subnet that is
                not one of its SNAT sources (it would be dropped with NAT_NO_MAPPING);
``policy``      a security-policy zone naming an endpoint the topology does not have.

The command also compiles the ``security_policy`` (``gwlb_fast.policy.Policy``): a bad rule is a configuration
error.

Exit codes of the command: 0 no findings, 1 findings, 2 invalid topology (as every other command: 2 for
configuration errors).
"""
from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field

from .config import Route, Subnet, Topology, Vpc, int_to_ip, ip_to_int, load_topology

__all__ = ["Finding", "Trace", "add_cli", "check_topology", "trace_route"]

INTERNET_PROBES = ("8.8.8.8", "1.1.1.1", "198.51.100.1", "192.0.2.1", "100.64.0.1")


@dataclass(frozen=True)
class Finding:
    kind: str       # black-hole | loop | bypass | asymmetric | no-internet | nat
    path: str       # key path in the topology file
    message: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.path}: {self.message}"


@dataclass
class Trace:
    """Where a packet to ``dst`` goes, starting at a route table of a VPC.

    ``end``: ``subnet`` (delivered to ``subnet``), ``internet``, ``no-route``, ``blackhole``, ``local-nowhere``
    (a local route to an address in no subnet), ``loop``, ``nat-unplaced`` (a NAT gateway whose subnet is unknown).
    """

    dst: int
    tables: list[str] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)
    endpoints: list[str] = field(default_factory=list)
    nats: list[str] = field(default_factory=list)
    end: str = ""
    subnet: str | None = None

    @property
    def last_table(self) -> str:
        return self.tables[-1] if self.tables else ""

    def describe(self) -> str:
        hops = []
        for t, r in zip(self.tables, self.routes):
            hops.append(f"{t} -> {r.via}")
        if self.end == "loop":
            hops.append(f"{self.tables[-1]} again")
        elif len(self.tables) > len(self.routes):
            hops.append(f"{self.tables[-1]} -> (no route)")
        return " | ".join(hops)


def _lookup(vpc: Vpc, table: str, dst: int) -> Route | None:
    best = None
    for r in vpc.route_tables[table].routes:
        mask = (0xFFFFFFFF << (32 - r.plen)) & 0xFFFFFFFF if r.plen else 0
        if dst & mask == r.net and (best is None or r.plen > best.plen):
            best = r
    return best


def trace_route(topo: Topology, vpc: Vpc, table: str, dst: int, max_hops: int = 64) -> Trace:
    """Follow next hops from route table ``table`` of ``vpc`` for destination ``dst`` (host order)."""
    tr = Trace(dst)
    seen = set()
    while len(tr.tables) < max_hops:
        if table in seen:
            tr.tables.append(table)
            tr.end = "loop"
            return tr
        seen.add(table)
        tr.tables.append(table)
        r = _lookup(vpc, table, dst)
        if r is None:
            tr.end = "no-route"
            return tr
        tr.routes.append(r)
        if r.kind == "blackhole":
            tr.end = "blackhole"
            return tr
        if r.kind == "internet":
            tr.end = "internet"
            return tr
        if r.kind == "local":
            s = vpc.subnet_for(dst) if vpc.contains(dst) else None
            if s is None:
                tr.end = "local-nowhere"
                return tr
            tr.end = "subnet"
            tr.subnet = s.name
            return tr
        if r.kind == "gwlbe":
            ep = topo.endpoints[r.target]
            tr.endpoints.append(ep.name)
            table = vpc.subnets[ep.subnet].route_table
            continue
        # natgw
        nat = topo.nat_gateways[r.target]
        tr.nats.append(nat.name)
        if nat.subnet is None or nat.vpc != vpc.name:
            tr.end = "nat-unplaced"
            return tr
        table = vpc.subnets[nat.subnet].route_table
    tr.end = "loop"
    return tr


def _internet_probe(topo: Topology) -> int:
    for a in INTERNET_PROBES:
        ip = ip_to_int(a)
        if not any(v.contains(ip) for v in topo.vpcs.values()) and \
                not any(n.public_ip_int == ip for n in topo.nat_gateways.values()):
            return ip
    raise RuntimeError("no Internet probe address outside the VPCs")   # unreachable with 5 disjoint probes


def _host(s: Subnet) -> int:
    return s.net + 1 if s.plen < 32 else s.net


def _covered(nat, s: Subnet) -> bool:
    for net, plen in nat.snat_sources:
        if plen <= s.plen:
            mask = (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF if plen else 0
            if s.net & mask == net:
                return True
    return False


class _Report:
    def __init__(self):
        self.items: list[Finding] = []

    def add(self, kind, path, message):
        f = Finding(kind, path, message)
        if f not in self.items:
            self.items.append(f)

    def failed_trace(self, vpc: Vpc, tr: Trace, what: str) -> bool:
        """Report a trace that did not get anywhere; True if it was reported."""
        tkey = f"{vpc.key}.route_tables.{tr.last_table}"
        dst = int_to_ip(tr.dst)
        if tr.end == "no-route":
            self.add("black-hole", tkey, f"{what}: no route for {dst} in table '{tr.last_table}' ({tr.describe()})")
        elif tr.end == "blackhole":
            self.add("black-hole", tr.routes[-1].key, f"{what}: {dst} is routed to blackhole ({tr.describe()})")
        elif tr.end == "local-nowhere":
            self.add("black-hole", tr.routes[-1].key,
                     f"{what}: local route for {dst}, which is in no subnet of VPC '{vpc.name}'")
        elif tr.end == "loop":
            self.add("loop", tr.routes[-1].key, f"{what}: route loop back to table '{tr.last_table}' ({tr.describe()})")
        elif tr.end == "nat-unplaced":
            self.add("nat", f"nat_gateways.{tr.nats[-1]}",
                     f"{what}: cannot tell which subnet NAT gateway '{tr.nats[-1]}' is in; set its vpc and subnet")
        else:
            return False
        return True


def check_topology(topo: Topology) -> list[Finding]:
    """Every routing problem found in ``topo`` (empty list: the paths of section 1 work as intended)."""
    rep = _Report()
    x = _internet_probe(topo)
    xs = int_to_ip(x)
    for nat in topo.nat_gateways.values():
        if nat.vpc is None:
            continue
        if nat.subnet is None:
            rep.add("nat", nat.key, f"cannot tell which subnet NAT gateway '{nat.name}' is in; set its vpc and subnet")
            continue
        vpc = topo.vpcs[nat.vpc]
        tr = trace_route(topo, vpc, vpc.subnets[nat.subnet].route_table, x)
        if tr.end != "internet":
            rep.add("no-internet", f"{vpc.key}.route_tables.{vpc.subnets[nat.subnet].route_table}",
                    f"NAT gateway '{nat.name}' subnet '{nat.subnet}' has no route to the Internet "
                    f"({xs}: {tr.describe() or 'no route'})")

    for vpc in topo.vpcs.values():
        has_eps = any(e.vpc == vpc.name for e in topo.endpoints.values())
        infra = {e.subnet for e in topo.endpoints.values() if e.vpc == vpc.name}
        infra |= {n.subnet for n in topo.nat_gateways.values() if n.vpc == vpc.name and n.subnet}
        for r in (r for t in vpc.route_tables.values() for r in t.routes if r.kind == "local"):
            if r.plen < vpc.plen or not vpc.contains(r.net):
                rep.add("black-hole", r.key, f"local route for {r.dst} reaches outside the VPC CIDR {vpc.cidr}")
        for s in vpc.subnets.values():
            if s.name in infra:
                continue
            what = f"outbound from subnet '{s.name}' to the Internet"
            out = trace_route(topo, vpc, s.route_table, x)
            if rep.failed_trace(vpc, out, what):
                continue
            if has_eps and not out.endpoints and out.end == "internet":
                rep.add("bypass", out.routes[-1].key if out.routes else s.key,
                        f"{what} crosses no GWLB endpoint ({out.describe()})")
            for nname in out.nats:
                if not _covered(topo.nat_gateways[nname], s):
                    rep.add("nat", f"nat_gateways.{nname}.snat.sources",
                            f"{what} reaches NAT gateway '{nname}' but {s.cidr} is not an SNAT source "
                            f"(dropped: NAT_NO_MAPPING)")
            if not out.nats or out.end != "internet":
                continue
            nat = topo.nat_gateways[out.nats[-1]]
            a = _host(s)
            back = trace_route(topo, vpc, vpc.subnets[nat.subnet].route_table, a)
            what_b = f"return traffic from the Internet to subnet '{s.name}' ({int_to_ip(a)}) via NAT '{nat.name}'"
            if rep.failed_trace(vpc, back, what_b):
                continue
            if back.end != "subnet" or back.subnet != s.name:
                where = f"subnet '{back.subnet}'" if back.end == "subnet" else back.end
                rep.add("black-hole", f"{vpc.key}.route_tables.{back.last_table}",
                        f"{what_b} ends at {where} ({back.describe()})")
                continue
            _compare(rep, vpc, out, back, what_b)

    for nat in topo.nat_gateways.values():
        if nat.vpc is None or nat.subnet is None:
            continue
        vpc = topo.vpcs[nat.vpc]
        has_eps = any(e.vpc == vpc.name for e in topo.endpoints.values())
        for rule in nat.dnat:
            what = f"inbound DNAT to {rule.to}"
            inb = trace_route(topo, vpc, vpc.subnets[nat.subnet].route_table, rule.to_ip)
            if rep.failed_trace(vpc, inb, what):
                continue
            srv = vpc.subnet_for(rule.to_ip)
            if inb.end != "subnet" or srv is None or inb.subnet != srv.name:
                rep.add("black-hole", rule.key, f"{what} ends at {inb.end} ({inb.describe()})")
                continue
            if has_eps and not inb.endpoints:
                rep.add("bypass", inb.routes[-1].key, f"{what} reaches the server without crossing a GWLB endpoint "
                                                      f"({inb.describe()})")
            rp = trace_route(topo, vpc, srv.route_table, x)
            what_r = f"reply of DNAT server {rule.to} to an Internet client ({xs})"
            if rep.failed_trace(vpc, rp, what_r):
                continue
            if rp.end != "internet":
                rep.add("black-hole", f"{vpc.key}.route_tables.{rp.last_table}", f"{what_r} ends at {rp.end}")
                continue
            if nat.name not in rp.nats:
                via = f"NAT gateway '{rp.nats[-1]}'" if rp.nats else "no NAT gateway"
                rep.add("asymmetric", f"{vpc.key}.route_tables.{srv.route_table}",
                        f"{what_r} leaves through {via}, not '{nat.name}' which translated the request "
                        f"({rp.describe()})")
            _compare(rep, vpc, inb, rp, what_r)
    _check_zones(rep, topo)
    return rep.items


def _check_zones(rep: _Report, topo: Topology) -> None:
    pol = topo.security_policy
    zones = pol.get("zones") if isinstance(pol, dict) else None
    if not isinstance(zones, dict):
        return
    for zone, members in zones.items():
        for i, ep in enumerate(members if isinstance(members, list) else [members]):
            if isinstance(ep, str) and ep not in topo.endpoints:
                rep.add("policy", f"{topo.security_policy_path}.zones.{zone}[{i}]",
                        f"zone '{zone}' names endpoint '{ep}', which the topology does not have "
                        f"(known: {', '.join(topo.endpoints) or 'none'})")


def _compare(rep: _Report, vpc: Vpc, fwd: Trace, back: Trace, what: str) -> None:
    if fwd.endpoints and not back.endpoints:
        rep.add("asymmetric", f"{vpc.key}.route_tables.{back.tables[0]}",
                f"{what} bypasses the GWLB endpoint '{fwd.endpoints[-1]}' the forward path used, so the firewall "
                f"sees one direction only ({back.describe()})")
    elif back.endpoints and not fwd.endpoints:
        rep.add("asymmetric", f"{vpc.key}.route_tables.{fwd.tables[0]}",
                f"{what} crosses endpoint '{back.endpoints[0]}' but the forward path crossed none "
                f"({fwd.describe()})")
    elif set(fwd.endpoints) != set(back.endpoints):
        rep.add("asymmetric", f"{vpc.key}.route_tables.{back.tables[0]}",
                f"{what} crosses endpoint(s) {', '.join(back.endpoints)} but the forward path crossed "
                f"{', '.join(fwd.endpoints)} (another firewall session, or none)")


# ---------------------------------------------------------------------------------------------------- CLI
def add_cli(sub) -> None:
    """Add ``gwlb-fast check TOPOLOGY.yaml [--json]`` to the CLI's subparsers."""
    p = sub.add_parser("check", help="validate a topology; report black holes, loops, asymmetric return paths",
                       description="Validate TOPOLOGY.yaml and report black holes, route loops, paths that bypass "
                                   "the firewall and asymmetric return paths. Exit 0 clean, 1 findings, 2 invalid.")
    p.add_argument("topology", metavar="TOPOLOGY.yaml")
    p.add_argument("--json", action="store_true", help="print the findings as one JSON object")
    p.set_defaults(func=run_check)


def run_check(args) -> int:
    topo = load_topology(args.topology)      # ConfigError -> exit 2 in cli.main
    if isinstance(topo.security_policy, dict):
        from .policy import Policy

        Policy.from_yaml(topo.security_policy, name=topo.source).compile()
    findings = check_topology(topo)
    if args.json:
        json.dump({"topology": topo.source, "ok": not findings, "findings": [asdict(f) for f in findings]},
                  sys.stdout, indent=2)
        print()
    else:
        for f in findings:
            print(f"{topo.source}: {f}")
        nsub = sum(len(v.subnets) for v in topo.vpcs.values())
        nfw = sum(len(g.firewalls) for g in topo.gwlbs.values())
        head = f"{topo.source}: {len(topo.vpcs)} VPC(s), {nsub} subnet(s), {len(topo.endpoints)} endpoint(s), " \
               f"{len(topo.gwlbs)} GWLB(s) with {nfw} firewall(s), {len(topo.nat_gateways)} NAT gateway(s)"
        print(f"{head}: {'OK, no findings' if not findings else f'{len(findings)} finding(s)'}")
    return 1 if findings else 0
