"""``gwlb-fast check``: static analysis of a topology's routing (DESIGN.md sections 1 and 7).

The checker follows, route table by route table, the paths of section 1 that the topology implies:

- outbound: from every workload subnet (a subnet that is neither a GWLB endpoint's nor a NAT gateway's) to an
  Internet address, through GWLB endpoints (which hand the inspected packet to their own subnet's route table) and
  NAT gateways (which route from their own subnet's table);
- the return of that traffic, from the NAT gateway back to the subnet;
- inbound DNAT flows, from the NAT gateway to each DNAT server (in any VPC), and the server's replies back out;
- east-west traffic between the workload subnets of VPCs joined by transit routers (DESIGN.md section 13), both
  ways: the return must cross the same endpoints and the same VPCs (not another attachment).

Transit routers are followed: ``tr:NAME`` looks the packet up in the table of the VPC's attachment, and
``attachment:X`` enters X's VPC at X's subnet. A subnet whose own table has no route to the Internet is private,
not a black hole.

and reports, as :class:`Finding` objects:

``black-hole``  a table on the path has no route for the destination, a route to ``blackhole``, or a ``local``
                route to an address in no subnet;
``loop``        following the next hops comes back to a table already visited;
``bypass``      traffic of a VPC that has GWLB endpoints (or is attached to a transit router in a topology with
                endpoints) reaches its destination without crossing one; for east-west traffic between VPCs, a
                spoke route that reaches the other spoke without the security VPC;
``asymmetric``  the return path crosses no endpoint or another endpoint than the forward path, or a DNAT server's
                reply leaves without (or through another) NAT gateway;
``no-internet`` a NAT gateway's subnet has no route to the Internet;
``nat``         a NAT gateway whose subnet cannot be told, or traffic reaching a NAT gateway from a subnet that is
                not one of its SNAT sources (it would be dropped with NAT_NO_MAPPING);
``policy``      a security-policy zone naming an endpoint the topology does not have, or an interzone rule (its
                ``from`` and ``to`` zones share none), which never matches behind a GWLB: every session is
                intrazone there.

The command also compiles the ``security_policy`` (``gwlb_fast.stages.policy.Policy``): a bad rule is a configuration
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

    ``tables`` holds the route tables visited in order (a transit router's as ``ROUTER:TABLE``), ``vpcs`` the VPC
    of each (the router's name in parentheses for its own), ``keys`` each table's key path.
    ``end``: ``subnet`` (delivered to ``subnet`` of VPC ``vpc``), ``internet``, ``no-route``, ``blackhole``,
    ``local-nowhere`` (a local route to an address in no subnet), ``loop``, ``nat-unplaced`` (a NAT gateway whose
    subnet is unknown).
    """

    dst: int
    tables: list[str] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)
    endpoints: list[str] = field(default_factory=list)
    nats: list[str] = field(default_factory=list)
    end: str = ""
    subnet: str | None = None
    vpcs: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    attachments: list[str] = field(default_factory=list)   # ROUTER/ATTACHMENT handed to, in order
    vpc: str | None = None

    @property
    def last_table(self) -> str:
        return self.tables[-1] if self.tables else ""

    @property
    def last_key(self) -> str:
        return self.keys[-1] if self.keys else ""

    def _name(self, i: int) -> str:
        many = len(set(self.vpcs)) > 1
        return f"{self.vpcs[i]}.{self.tables[i]}" if many and not self.vpcs[i].startswith("(") else self.tables[i]

    def describe(self) -> str:
        hops = []
        for i, r in enumerate(self.routes):
            hops.append(f"{self._name(i)} -> {r.via}")
        if self.end == "loop":
            hops.append(f"{self._name(len(self.tables) - 1)} again")
        elif len(self.tables) > len(self.routes):
            hops.append(f"{self._name(len(self.tables) - 1)} -> (no route)")
        return " | ".join(hops)


def _best(routes: list[Route], dst: int) -> Route | None:
    best = None
    for r in routes:
        mask = (0xFFFFFFFF << (32 - r.plen)) & 0xFFFFFFFF if r.plen else 0
        if dst & mask == r.net and (best is None or r.plen > best.plen):
            best = r
    return best


def _lookup(vpc: Vpc, table: str, dst: int) -> Route | None:
    return _best(vpc.route_tables[table].routes, dst)


def _take(tr: Trace, routes: list[Route], dst: int) -> Route | None:
    """The route ``dst`` takes among ``routes``, recorded in the trace; None (and the trace's end set) when there is
    none or it is a blackhole."""
    r = _best(routes, dst)
    if r is None:
        tr.end = "no-route"
        return None
    tr.routes.append(r)
    if r.kind == "blackhole":
        tr.end = "blackhole"
        return None
    return r


def trace_route(topo: Topology, vpc: Vpc, table: str, dst: int, max_hops: int = 64) -> Trace:
    """Follow next hops from route table ``table`` of ``vpc`` for destination ``dst`` (host order), through
    transit routers into other VPCs."""
    tr = Trace(dst)
    seen = set()

    def visit(where: str, tname: str, key: str) -> bool:
        tr.tables.append(tname)
        tr.vpcs.append(where)
        tr.keys.append(key)
        if (where, tname) in seen:
            tr.end = "loop"
            return False
        seen.add((where, tname))
        return True

    while len(tr.tables) < max_hops:
        if not visit(vpc.name, table, f"{vpc.key}.route_tables.{table}"):
            return tr
        r = _take(tr, vpc.route_tables[table].routes, dst)
        if r is None:
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
            tr.vpc = vpc.name
            return tr
        if r.kind == "gwlbe":
            ep = topo.endpoints[r.target]
            tr.endpoints.append(ep.name)
            table = vpc.subnets[ep.subnet].route_table
            continue
        if r.kind == "tr":
            router = topo.transit_routers[r.target]
            att = router.attachment_of_vpc(vpc.name)
            tname = f"{router.name}:{att.route_table}"
            if not visit(f"({router.name})", tname, f"{router.key}.route_tables.{att.route_table}"):
                return tr
            tr_route = _take(tr, router.route_tables[att.route_table].routes, dst)
            if tr_route is None:
                return tr
            dest = router.attachments[tr_route.target]
            tr.attachments.append(f"{router.name}/{dest.name}")
            vpc = topo.vpcs[dest.vpc]
            table = vpc.subnets[dest.subnet].route_table
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

    def failed_trace(self, tr: Trace, what: str) -> bool:
        """Report a trace that did not get anywhere; True if it was reported."""
        tkey = tr.last_key
        dst = int_to_ip(tr.dst)
        if tr.end == "no-route":
            self.add("black-hole", tkey, f"{what}: no route for {dst} in table '{tr.last_table}' ({tr.describe()})")
        elif tr.end == "blackhole":
            self.add("black-hole", tr.routes[-1].key, f"{what}: {dst} is routed to blackhole ({tr.describe()})")
        elif tr.end == "local-nowhere":
            self.add("black-hole", tr.routes[-1].key,
                     f"{what}: local route for {dst}, which is in no subnet of VPC '{tr.vpcs[-1]}'")
        elif tr.end == "loop":
            self.add("loop", tr.routes[-1].key, f"{what}: route loop back to table '{tr.last_table}' ({tr.describe()})")
        elif tr.end == "nat-unplaced":
            self.add("nat", f"nat_gateways.{tr.nats[-1]}",
                     f"{what}: cannot tell which subnet NAT gateway '{tr.nats[-1]}' is in; set its vpc and subnet")
        else:
            return False
        return True


def _subnet_anywhere(topo: Topology, ip: int) -> tuple[Vpc, Subnet] | tuple[None, None]:
    for v in topo.vpcs.values():
        if v.contains(ip):
            s = v.subnet_for(ip)
            if s is not None:
                return v, s
    return None, None


def _workloads(topo: Topology, vpc: Vpc) -> list[Subnet]:
    """Subnets of ``vpc`` that hold hosts: not a GWLB endpoint's, a NAT gateway's or a transit attachment's."""
    infra = {e.subnet for e in topo.endpoints.values() if e.vpc == vpc.name}
    infra |= {n.subnet for n in topo.nat_gateways.values() if n.vpc == vpc.name and n.subnet}
    infra |= {a.subnet for t in topo.transit_routers.values() for a in t.attachments.values() if a.vpc == vpc.name}
    return [s for s in vpc.subnets.values() if s.name not in infra]


def _inspected(topo: Topology, vpc: Vpc) -> bool:
    """Traffic of ``vpc`` is meant to cross a GWLB endpoint: the VPC has one, or it is attached to a transit router
    in a topology that has endpoints (centralized inspection)."""
    if any(e.vpc == vpc.name for e in topo.endpoints.values()):
        return True
    return bool(topo.endpoints) and any(t.attachment_of_vpc(vpc.name) for t in topo.transit_routers.values())


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
        has_eps = _inspected(topo, vpc)
        for r in (r for t in vpc.route_tables.values() for r in t.routes if r.kind == "local"):
            if r.plen < vpc.plen or not vpc.contains(r.net):
                rep.add("black-hole", r.key, f"local route for {r.dst} reaches outside the VPC CIDR {vpc.cidr}")
        for s in _workloads(topo, vpc):
            what = f"outbound from subnet '{s.name}' to the Internet"
            out = trace_route(topo, vpc, s.route_table, x)
            if out.end == "no-route" and len(out.tables) == 1:
                continue    # a private subnet: no route to the Internet at all is a choice, not a mistake
            if rep.failed_trace(out, what):
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
            nvpc = topo.vpcs[nat.vpc]
            a = _host(s)
            back = trace_route(topo, nvpc, nvpc.subnets[nat.subnet].route_table, a)
            what_b = f"return traffic from the Internet to subnet '{s.name}' ({int_to_ip(a)}) via NAT '{nat.name}'"
            if rep.failed_trace(back, what_b):
                continue
            if back.end != "subnet" or back.subnet != s.name or back.vpc != vpc.name:
                where = f"subnet '{back.subnet}'" if back.end == "subnet" else back.end
                rep.add("black-hole", back.last_key, f"{what_b} ends at {where} ({back.describe()})")
                continue
            _compare(rep, out, back, what_b)

    _east_west(rep, topo)

    for nat in topo.nat_gateways.values():
        if nat.vpc is None or nat.subnet is None:
            continue
        vpc = topo.vpcs[nat.vpc]
        for rule in nat.dnat:
            what = f"inbound DNAT to {rule.to}"
            inb = trace_route(topo, vpc, vpc.subnets[nat.subnet].route_table, rule.to_ip)
            if rep.failed_trace(inb, what):
                continue
            svpc, srv = _subnet_anywhere(topo, rule.to_ip)
            if inb.end != "subnet" or srv is None or inb.subnet != srv.name or inb.vpc != svpc.name:
                rep.add("black-hole", rule.key, f"{what} ends at {inb.end} ({inb.describe()})")
                continue
            if (_inspected(topo, vpc) or _inspected(topo, svpc)) and not inb.endpoints:
                rep.add("bypass", inb.routes[-1].key, f"{what} reaches the server without crossing a GWLB endpoint "
                                                      f"({inb.describe()})")
            rp = trace_route(topo, svpc, srv.route_table, x)
            what_r = f"reply of DNAT server {rule.to} to an Internet client ({xs})"
            if rep.failed_trace(rp, what_r):
                continue
            if rp.end != "internet":
                rep.add("black-hole", rp.last_key, f"{what_r} ends at {rp.end}")
                continue
            if nat.name not in rp.nats:
                via = f"NAT gateway '{rp.nats[-1]}'" if rp.nats else "no NAT gateway"
                rep.add("asymmetric", f"{svpc.key}.route_tables.{srv.route_table}",
                        f"{what_r} leaves through {via}, not '{nat.name}' which translated the request "
                        f"({rp.describe()})")
            _compare(rep, inb, rp, what_r)
    _check_zones(rep, topo)
    return rep.items


def _east_west(rep: _Report, topo: Topology) -> None:
    """Traffic between the workload subnets of two VPCs (through transit routers): it must reach the other side,
    cross a GWLB endpoint when the VPCs are inspected, and come back the same way (same endpoints, same VPCs)."""
    if not topo.transit_routers:
        return
    subnets = [(v, s) for v in topo.vpcs.values() for s in _workloads(topo, v)]
    for v1, s1 in subnets:
        for v2, s2 in subnets:
            if v1.name == v2.name:
                continue
            a, b = _host(s1), _host(s2)
            what = f"east-west from subnet '{v1.name}.{s1.name}' to '{v2.name}.{s2.name}' ({int_to_ip(b)})"
            fwd = trace_route(topo, v1, s1.route_table, b)
            if fwd.end in ("no-route", "blackhole") and not fwd.attachments:
                continue    # the VPC does not route to the other: isolation is a choice
            if fwd.end == "blackhole":
                continue    # a transit router's blackhole route: isolation by design
            if rep.failed_trace(fwd, what):
                continue
            if fwd.end != "subnet" or fwd.vpc != v2.name or fwd.subnet != s2.name:
                rep.add("black-hole", fwd.last_key, f"{what} ends at {fwd.end} ({fwd.describe()})")
                continue
            if (_inspected(topo, v1) or _inspected(topo, v2)) and not fwd.endpoints:
                rep.add("bypass", (fwd.routes[-1] if not fwd.attachments else _tr_route(fwd)).key,
                        f"{what} reaches the other VPC without crossing a GWLB endpoint ({fwd.describe()})")
                continue
            back = trace_route(topo, v2, s2.route_table, a)
            what_b = f"return of {what}"
            if rep.failed_trace(back, what_b):
                continue
            if back.end != "subnet" or back.vpc != v1.name or back.subnet != s1.name:
                rep.add("black-hole", back.last_key, f"{what_b} ends at {back.end} ({back.describe()})")
                continue
            if _compare(rep, fwd, back, what_b):
                continue
            fv, bv = set(fwd.vpcs) - {v1.name, v2.name}, set(back.vpcs) - {v1.name, v2.name}
            if fv != bv:
                rep.add("asymmetric", back.keys[0],
                        f"{what_b} crosses {', '.join(sorted(bv)) or 'no other VPC'} but the forward path crossed "
                        f"{', '.join(sorted(fv)) or 'none'} (a return route through another attachment: "
                        f"{back.describe()})")


def _tr_route(tr: Trace) -> Route:
    """The first transit-router route of a trace (where a bypass leaves for the other VPC)."""
    for i, r in enumerate(tr.routes):
        if r.kind == "attachment":
            return r
    return tr.routes[-1]


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
    # behind a GWLB each packet enters and leaves the firewall on the sub-interface of the endpoint it came by, so
    # VM-Series sees only intrazone traffic: a rule whose from and to zones share none never matches
    rules = pol.get("rules")
    for i, r in enumerate(rules if isinstance(rules, list) else []):
        if not isinstance(r, dict) or "from" not in r or "to" not in r:
            continue
        src, dst = (set(v) if isinstance(v, list) else {v} for v in (r["from"], r["to"]))
        if "any" in src or "any" in dst or src & dst:
            continue
        rep.add("policy", f"{topo.security_policy_path}.rules[{i}]",
                f"rule '{r.get('name', i)}' is interzone (from {', '.join(map(str, sorted(src)))} to "
                f"{', '.join(map(str, sorted(dst)))}) and never matches: behind a GWLB the firewall returns each "
                f"packet on the sub-interface it arrived on, so every session is intrazone")


def _compare(rep: _Report, fwd: Trace, back: Trace, what: str) -> bool:
    """Report a return path that crosses other GWLB endpoints than the forward path; True if reported."""
    n = len(rep.items)
    if fwd.endpoints and not back.endpoints:
        rep.add("asymmetric", back.keys[0],
                f"{what} bypasses the GWLB endpoint '{fwd.endpoints[-1]}' the forward path used, so the firewall "
                f"sees one direction only ({back.describe()})")
    elif back.endpoints and not fwd.endpoints:
        rep.add("asymmetric", fwd.keys[0],
                f"{what} crosses endpoint '{back.endpoints[0]}' but the forward path crossed none "
                f"({fwd.describe()})")
    elif set(fwd.endpoints) != set(back.endpoints):
        rep.add("asymmetric", back.keys[0],
                f"{what} crosses endpoint(s) {', '.join(back.endpoints)} but the forward path crossed "
                f"{', '.join(fwd.endpoints)} (another firewall session, or none)")
    return len(rep.items) > n


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
    unsupported = []
    if isinstance(topo.security_policy, dict):
        from .stages.policy import Policy

        pol = Policy.from_yaml(topo.security_policy, name=topo.source, home_net=topo.vpc_cidrs())
        pol.compile()
        # What a PAN-OS import could not model, by XPath in the configuration file.
        unsupported = [Finding("unsupported", f"{pol.source}:{xp}", what) for xp, what in pol.unsupported]
    findings = check_topology(topo) + unsupported
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
