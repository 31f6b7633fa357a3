"""Topology and events files -> validated objects (DESIGN.md section 6).

``load_topology(path_or_text)`` reads the deployment YAML and returns a :class:`Topology`; ``load_events(path)``
reads a ``--events`` file. Every problem raises :class:`~gwlb_fast.errors.ConfigError` whose message names the
file, the key path (``vpcs.business.route_tables.app[0].via``) and the problem, e.g.::

    topology.yaml: vpcs.business.route_tables.app[0].via: unknown endpoint 'gwlbe-x' (known: gwlbe-a)

Unknown keys are errors too (a typo must not silently turn a setting off). The ``security_policy`` mapping is kept
as written (``Topology.security_policy``, key path ``Topology.security_policy_path``) for ``gwlb_fast.stages.policy`` to
compile.
"""
from __future__ import annotations

import ipaddress
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

__all__ = [
    "EVENT_KINDS",
    "FAILOVER",
    "FW_STATES",
    "GENEVE_PROFILES",
    "NEXT_HOP_KINDS",
    "PROTOCOLS",
    "STICKINESS",
    "Attachment",
    "DnatRule",
    "Endpoint",
    "Event",
    "Firewall",
    "GeneveSettings",
    "Gwlb",
    "HealthCheck",
    "NatGateway",
    "ReplaySettings",
    "Route",
    "RouteTable",
    "Subnet",
    "Topology",
    "TransitRouter",
    "Vpc",
    "events_from_list",
    "example_topology_text",
    "int_to_ip",
    "ip_to_int",
    "load_events",
    "load_topology",
    "topology_from_dict",
]

NEXT_HOP_KINDS = ("local", "gwlbe", "natgw", "internet", "blackhole", "tr")
#: next hops of a transit router's route tables
TR_NEXT_HOP_KINDS = ("attachment", "blackhole")
STICKINESS = ("5-tuple", "3-tuple", "2-tuple")
#: ``no_rebalance`` is AWS's name for ``keep`` (target_failover attributes)
FAILOVER = ("keep", "rebalance", "no_rebalance")
FW_STATES = ("healthy", "unhealthy", "draining")
#: what happens to the appliance itself (DESIGN.md section 13): it stops or resumes forwarding and answering health
#: checks, or it is removed from the GWLB's server group (draining first)
EVENT_KINDS = ("down", "up", "remove")
PROTOCOLS = {"tcp": 6, "udp": 17, "icmp": 1}
#: per-profile defaults: Geneve option class, largest inner packet forwarded, Tencent's direction bits in the cookie
GENEVE_PROFILES = {
    "aws": {"option_class": 0x0108, "max_inner": 8500, "cookie_direction": False},
    "alibaba": {"option_class": 0x0108, "max_inner": 1500, "cookie_direction": False},
    "tencent": {"option_class": 0x0167, "max_inner": 8500, "cookie_direction": True},
}


def ip_to_int(s: str) -> int:
    return int(ipaddress.IPv4Address(s))


def int_to_ip(v: int) -> str:
    return str(ipaddress.IPv4Address(int(v)))


# ---------------------------------------------------------------------------------------------------- objects
@dataclass(frozen=True)
class Route:
    """One route: ``dst`` CIDR -> next hop ``kind`` (one of NEXT_HOP_KINDS) and ``target`` name (gwlbe/natgw)."""

    dst: str
    net: int            # network address, host order
    plen: int           # prefix length 0..32
    via: str            # as written: "local", "gwlbe:gwlbe-a", ...
    kind: str
    target: str | None
    key: str            # key path, for messages
    implicit: bool = False  # the VPC's own local route, present in every table unless a route for its CIDR is written


@dataclass
class RouteTable:
    name: str
    vpc: str
    routes: list[Route]
    key: str


@dataclass(frozen=True)
class Subnet:
    name: str
    vpc: str
    cidr: str
    net: int
    plen: int
    route_table: str
    key: str

    def contains(self, ip: int) -> bool:
        return _in_prefix(ip, self.net, self.plen)


@dataclass
class Vpc:
    name: str
    cidr: str
    net: int
    plen: int
    subnets: dict[str, Subnet]
    route_tables: dict[str, RouteTable]
    key: str

    def contains(self, ip: int) -> bool:
        return _in_prefix(ip, self.net, self.plen)

    def subnet_for(self, ip: int) -> Subnet | None:
        for s in self.subnets.values():
            if s.contains(ip):
                return s
        return None


@dataclass(frozen=True)
class Attachment:
    """A VPC's attachment to a transit router: packets from the router enter the VPC at ``subnet``'s route table;
    packets the VPC sends to the router (``tr:NAME``) are looked up in the router's table ``route_table``."""

    name: str
    router: str
    vpc: str
    subnet: str
    route_table: str
    key: str


@dataclass
class TransitRouter:
    """A transit router (AWS Transit Gateway, Alibaba Cloud Enterprise Network transit router): attachments, and
    route tables (each a list of routes with next hop ``attachment`` or ``blackhole``) associated with them."""

    name: str
    attachments: dict[str, Attachment]
    route_tables: dict[str, RouteTable]
    key: str

    def attachment_of_vpc(self, vpc: str) -> Attachment | None:
        for a in self.attachments.values():
            if a.vpc == vpc:
                return a
        return None


@dataclass(frozen=True)
class Endpoint:
    """A GWLB endpoint (GWLBe) in a VPC subnet; ``id`` is the 64-bit endpoint id carried in Geneve, and
    ``attachment_id`` the 64-bit attachment id (Geneve option type 2, default 0)."""

    name: str
    vpc: str
    subnet: str
    id: int
    gwlb: str
    address: str | None
    key: str
    attachment_id: int = 0


@dataclass(frozen=True)
class Firewall:
    name: str
    address: str
    ip: int
    key: str


@dataclass(frozen=True)
class GeneveSettings:
    profile: str = "aws"
    option_class: int = 0x0108
    max_inner: int = 8500
    cookie_direction: bool = False


@dataclass(frozen=True)
class HealthCheck:
    protocol: str = "tcp"          # tcp | http
    port: int = 80
    path: str = "/"
    interval: float = 10.0
    timeout: float = 5.0
    healthy_threshold: int = 2
    unhealthy_threshold: int = 2


@dataclass
class Gwlb:
    name: str
    address: str
    ip: int
    firewalls: dict[str, Firewall]
    stickiness: str = "5-tuple"
    failover: str = "keep"
    idle_timeout_tcp: float = 350.0
    idle_timeout_other: float = 120.0
    draining_timeout: float = 300.0
    flow_capacity: int = 1 << 20
    geneve: GeneveSettings = field(default_factory=GeneveSettings)
    health_check: HealthCheck = field(default_factory=HealthCheck)
    key: str = ""

    @property
    def firewall_names(self) -> list[str]:
        return list(self.firewalls)


@dataclass(frozen=True)
class DnatRule:
    """``proto`` ``public_ip:port`` -> ``to_ip:to_port`` (a private server)."""

    proto: int
    port: int
    to: str
    to_ip: int
    to_port: int
    key: str


@dataclass
class NatGateway:
    name: str
    public_ip: str
    public_ip_int: int
    snat_sources: list[tuple[int, int]]      # (net, plen)
    snat_source_cidrs: list[str]
    port_lo: int = 1024
    port_hi: int = 65535
    dnat: list[DnatRule] = field(default_factory=list)
    idle_timeout_tcp: float = 350.0
    idle_timeout_other: float = 120.0
    capacity: int = 1 << 18
    vpc: str | None = None
    subnet: str | None = None
    key: str = ""


@dataclass(frozen=True)
class Event:
    """A scripted change at ``at`` seconds after the capture's first packet: either the GWLB's view of ``firewall``
    becomes ``state`` (set directly), or the appliance itself goes ``down``, comes ``up`` or is removed (``event``,
    one of EVENT_KINDS; ``state`` is then None and the GWLB learns of it by its health checks)."""

    at: float
    firewall: str
    state: str | None
    gwlb: str | None = None
    key: str = ""
    event: str | None = None


@dataclass(frozen=True)
class ReplaySettings:
    """``replay:``: how a capture is replayed. ``pickup``: flows that began before the capture are taken as
    established at every stage (DESIGN.md section 10)."""

    pickup: bool = False


@dataclass
class Topology:
    vpcs: dict[str, Vpc]
    endpoints: dict[str, Endpoint]
    gwlbs: dict[str, Gwlb]
    nat_gateways: dict[str, NatGateway]
    security_policy: Any = None
    security_policy_path: str = "security_policy"
    events: list[Event] = field(default_factory=list)
    source: str = "<topology>"
    transit_routers: dict[str, TransitRouter] = field(default_factory=dict)
    replay: ReplaySettings = field(default_factory=ReplaySettings)

    def gwlb_of_firewall(self, fw: str) -> list[str]:
        return [g.name for g in self.gwlbs.values() if fw in g.firewalls]

    def firewall_names(self) -> list[str]:
        """The path's firewall index -> name: every GWLB's firewalls in order (``ChunkResult.fw``, the drop
        records and the drops file count this way). With several GWLBs each name says its GWLB: ``gwlb/firewall``,
        as the summary does."""
        several = len(self.gwlbs) > 1
        return [f"{g.name}/{fw}" if several else fw for g in self.gwlbs.values() for fw in g.firewalls]

    def firewall_offsets(self) -> dict[str, int]:
        """GWLB name -> the path's index of its first firewall (see :meth:`firewall_names`)."""
        out, k = {}, 0
        for g in self.gwlbs.values():
            out[g.name] = k
            k += len(g.firewalls)
        return out

    def vpc_cidrs(self) -> list[str]:
        """The VPCs' CIDRs (the signatures' default ``$HOME_NET``)."""
        return [v.cidr for v in self.vpcs.values()]


# ---------------------------------------------------------------------------------------------------- helpers
class _Ctx:
    def __init__(self, source: str):
        self.source = source

    def fail(self, path: str, problem: str):
        where = f"{path}: " if path else ""
        raise ConfigError(f"{self.source}: {where}{problem}")


def _in_prefix(ip: int, net: int, plen: int) -> bool:
    if plen == 0:
        return True
    mask = (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF
    return (ip & mask) == net


def _type_name(v) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", int: "an integer", float: "a number",
            bool: "a boolean", type(None): "empty"}.get(type(v), type(v).__name__)


def _mapping(ctx: _Ctx, v, path: str, allowed: tuple[str, ...] | None = None, required: tuple[str, ...] = ()):
    if not isinstance(v, dict):
        ctx.fail(path, f"must be a mapping, got {_type_name(v)}")
    for k in v:
        if not isinstance(k, str):
            ctx.fail(path, f"key {k!r} must be a string")
    if allowed is not None:
        for k in v:
            if k not in allowed:
                hint = _close(k, allowed)
                ctx.fail(_join(path, k), f"unknown key{hint} (allowed: {', '.join(allowed)})")
    for k in required:
        if k not in v:
            ctx.fail(path, f"missing required key '{k}'")
    return v


def _close(word: str, choices) -> str:
    import difflib

    m = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean '{m[0]}'?)" if m else ""


def _join(path: str, key) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _list(ctx, v, path):
    if not isinstance(v, list):
        ctx.fail(path, f"must be a list, got {_type_name(v)}")
    return v


def _str(ctx, v, path) -> str:
    if not isinstance(v, str) or not v:
        ctx.fail(path, f"must be a non-empty string, got {_type_name(v)}")
    return v


def _int(ctx, v, path, lo=None, hi=None, what="an integer") -> int:
    if isinstance(v, bool):
        ctx.fail(path, f"must be {what}, got a boolean")
    if isinstance(v, str):
        try:
            v = int(v.strip(), 0)
        except ValueError:
            ctx.fail(path, f"must be {what}, got {v!r}")
    if not isinstance(v, int):
        ctx.fail(path, f"must be {what}, got {_type_name(v)}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        ctx.fail(path, f"{v} out of range {lo}..{hi}")
    return v


def _num(ctx, v, path, lo=0.0) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        ctx.fail(path, f"must be a number, got {_type_name(v)}")
    if v < lo or math.isnan(v):
        ctx.fail(path, f"must be >= {lo}, got {v}")
    return float(v)


def _choice(ctx, v, path, choices) -> str:
    if not isinstance(v, str) or v not in choices:
        hint = _close(v, choices) if isinstance(v, str) else ""
        ctx.fail(path, f"unknown value {v!r}{hint} (expected one of: {', '.join(choices)})")
    return v


def _ip(ctx, v, path) -> int:
    if not isinstance(v, str):
        ctx.fail(path, f"must be an IPv4 address string, got {_type_name(v)}")
    try:
        return int(ipaddress.IPv4Address(v.strip()))
    except ValueError:
        ctx.fail(path, f"bad IPv4 address {v!r}")


def _cidr(ctx, v, path) -> tuple[str, int, int]:
    if not isinstance(v, str):
        ctx.fail(path, f"must be a CIDR string like 10.0.0.0/16, got {_type_name(v)}")
    s = v.strip()
    try:
        net = ipaddress.IPv4Network(s, strict=False)
    except ValueError:
        ctx.fail(path, f"bad CIDR {v!r}")
    if "/" not in s:
        ctx.fail(path, f"bad CIDR {v!r}: missing /prefix-length")
    if int(net.network_address) != int(ipaddress.IPv4Address(s.split("/")[0])):
        ctx.fail(path, f"bad CIDR {v!r}: host bits set (did you mean {net}?)")
    return str(net), int(net.network_address), net.prefixlen


def _port(ctx, v, path, lo=1) -> int:
    return _int(ctx, v, path, lo, 65535, what="a port number")


def _port_range(ctx, v, path) -> tuple[int, int]:
    if isinstance(v, str) and "-" in v:
        a, _, b = v.partition("-")
        lo, hi = _port(ctx, a.strip(), path), _port(ctx, b.strip(), path)
    elif isinstance(v, list) and len(v) == 2:
        lo, hi = _port(ctx, v[0], _join(path, 0)), _port(ctx, v[1], _join(path, 1))
    else:
        ctx.fail(path, f"must be a port range 'lo-hi' or [lo, hi], got {v!r}")
    if lo > hi:
        ctx.fail(path, f"empty port range {lo}-{hi}")
    return lo, hi


def _proto(ctx, v, path) -> int:
    if isinstance(v, str) and v.lower() in PROTOCOLS:
        return PROTOCOLS[v.lower()]
    if isinstance(v, int) and not isinstance(v, bool) and v in PROTOCOLS.values():
        return v
    ctx.fail(path, f"unknown protocol {v!r} (expected tcp, udp or icmp)")


def _idle_timeout(ctx, it, path, tcp: float, other: float) -> tuple[float, float]:
    """``idle_timeout``: one number of seconds for every protocol, or ``{tcp: s, other: s}`` (either may be left out)."""
    if isinstance(it, (int, float)) and not isinstance(it, bool):
        tcp = other = _num(ctx, it, path, 1e-9)
        return tcp, other
    _mapping(ctx, it, path, ("tcp", "other"))
    if "tcp" in it:
        tcp = _num(ctx, it["tcp"], _join(path, "tcp"), 1e-9)
    if "other" in it:
        other = _num(ctx, it["other"], _join(path, "other"), 1e-9)
    return tcp, other


def _overlap(a_net, a_len, b_net, b_len) -> bool:
    plen = min(a_len, b_len)
    return _in_prefix(a_net, b_net & _mask(plen), plen) and _in_prefix(b_net, a_net & _mask(plen), plen)


def _mask(plen: int) -> int:
    return (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF if plen else 0


# ---------------------------------------------------------------------------------------------------- loading
def _read(path_or_text) -> tuple[str, str]:
    """Return (source name, text)."""
    if isinstance(path_or_text, Path):
        return str(path_or_text), path_or_text.read_text()
    if isinstance(path_or_text, str):
        if "\n" in path_or_text or path_or_text.lstrip().startswith("{") or not path_or_text.strip():
            return "<topology>", path_or_text
        return path_or_text, Path(path_or_text).read_text()
    if isinstance(path_or_text, os.PathLike):
        p = Path(path_or_text)
        return str(p), p.read_text()
    raise TypeError(f"load_topology: expected a path or YAML text, got {type(path_or_text).__name__}")


_STR, _MAP, _SEQ = "tag:yaml.org,2002:str", "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"


class _Unusual(Exception):
    """A node the quick construction leaves to PyYAML's own (merge keys, tags of its own, a recursive alias)."""


class _QuickLoad:
    """PyYAML's safe loader with two shortcuts that give the same objects: a plain scalar's tag is resolved once
    per distinct text (it depends on the text alone), and plain mappings, sequences and strings are built by one
    recursive walk instead of PyYAML's per-node dispatch; anything else, and any document where the walk meets
    something it does not take, is built by PyYAML as before. A 1,000-rule topology: about a third less time."""

    def resolve(self, kind, value, implicit):
        if kind is yaml.ScalarNode and implicit[0] and not self.yaml_path_resolvers:
            tags = self.__dict__.setdefault("_tags", {})
            tag = tags.get(value)
            if tag is None:
                tag = tags[value] = super().resolve(kind, value, implicit)
            return tag
        return super().resolve(kind, value, implicit)

    def construct_document(self, node):
        built: dict[int, object] = {}
        busy: set[int] = set()

        def build(n):
            cls = n.__class__
            if cls is yaml.ScalarNode:
                # deep: a constructor that fills its object later (a !!seq or !!set tag on a scalar) runs here
                return n.value if n.tag == _STR else self.construct_object(n, deep=True)
            key = id(n)
            if key in built:  # an alias: the same object, as PyYAML gives
                return built[key]
            if key in busy:
                raise _Unusual
            busy.add(key)
            if cls is yaml.MappingNode and n.tag == _MAP:
                out = {}
                for k, v in n.value:
                    if k.__class__ is not yaml.ScalarNode or k.tag not in _PLAIN_KEY_TAGS:
                        raise _Unusual
                    out[build(k)] = build(v)
            elif cls is yaml.SequenceNode and n.tag == _SEQ:
                out = [build(v) for v in n.value]
            else:
                raise _Unusual
            busy.discard(key)
            built[key] = out
            return out

        try:
            data = build(node)
        except _Unusual:
            self.constructed_objects, self.recursive_objects = {}, {}
            return super().construct_document(node)
        self.constructed_objects, self.recursive_objects = {}, {}
        return data


#: mapping keys the quick construction takes (a merge key ``<<`` or a value key ``=`` go to PyYAML)
_PLAIN_KEY_TAGS = frozenset({_STR, "tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:bool",
                             "tag:yaml.org,2002:null"})

#: libyaml's loader when PyYAML was built with it (a 1,000-rule topology: 0.7 s in the pure-Python loader)
_YAML_LOADER = type("_YamlLoader", (_QuickLoad, getattr(yaml, "CSafeLoader", yaml.SafeLoader)), {})


def yaml_load(text: str):
    """``yaml.safe_load`` on libyaml where PyYAML has it (same safe subset, same objects, same errors)."""
    return yaml.load(text, Loader=_YAML_LOADER)


def _parse_yaml(source: str, text: str):
    try:
        return yaml_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1} column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{source}: {where}invalid YAML: {problem}") from None


def load_topology(path_or_text) -> Topology:
    """Load and validate a topology file (DESIGN.md section 6).

    ``path_or_text``: a path (``str`` or ``Path``) or the YAML text itself (a string with a newline in it).
    Raises ``ConfigError`` naming the file, the key path and the problem; ``FileNotFoundError`` if missing.
    """
    source, text = _read(path_or_text)
    return topology_from_dict(_parse_yaml(source, text), source)


def example_topology_text() -> str:
    """The shipped example topology (``gwlb_fast/examples/topology.yaml``)."""
    from importlib.resources import files

    return files("gwlb_fast").joinpath("examples", "topology.yaml").read_text()


TOP_KEYS = ("vpcs", "endpoints", "gwlb", "nat_gateways", "security_policy", "events", "transit_routers",
            "replay")


def topology_from_dict(data, source: str = "<topology>") -> Topology:
    """Validate an already-parsed topology mapping (``load_topology`` minus the YAML)."""
    ctx = _Ctx(source)
    if data is None:
        ctx.fail("", "empty topology file")
    _mapping(ctx, data, "", TOP_KEYS, required=("vpcs",))

    vpcs = _vpcs(ctx, data["vpcs"])
    gwlbs = _gwlbs(ctx, data.get("gwlb") or {})
    endpoints = _endpoints(ctx, data.get("endpoints") or {}, vpcs, gwlbs)
    nats = _nats(ctx, data.get("nat_gateways") or {}, vpcs)
    trs = _transit_routers(ctx, data.get("transit_routers") or {}, vpcs)
    _routes_targets(ctx, vpcs, endpoints, nats, trs)
    _nat_placement(ctx, vpcs, nats)
    for n in nats.values():
        _nat_dnat_targets(ctx, vpcs, n, bool(trs))
    policy = data.get("security_policy")
    if policy is not None and not isinstance(policy, (dict, str)):
        ctx.fail("security_policy", f"must be a mapping (or a policy file name), got {_type_name(policy)}")
    events = events_from_list(data.get("events") or [], source, gwlbs, "events")
    replay = _replay(ctx, data.get("replay"))
    return Topology(vpcs, endpoints, gwlbs, nats, policy, "security_policy", events, source, trs, replay)


def _replay(ctx, raw) -> ReplaySettings:
    if raw is None:
        return ReplaySettings()
    _mapping(ctx, raw, "replay", ("pickup",))
    pickup = raw.get("pickup", False)
    if not isinstance(pickup, bool):
        ctx.fail("replay.pickup", f"must be true or false, got {pickup!r}")
    return ReplaySettings(pickup=pickup)


def _vpcs(ctx, raw) -> dict[str, Vpc]:
    _mapping(ctx, raw, "vpcs")
    if not raw:
        ctx.fail("vpcs", "at least one VPC is required")
    out = {}
    for name, v in raw.items():
        p = _join("vpcs", name)
        _mapping(ctx, v, p, ("cidr", "subnets", "route_tables"), required=("cidr",))
        cidr, net, plen = _cidr(ctx, v["cidr"], _join(p, "cidr"))
        # route tables first: subnets refer to them
        tables = {}
        rt_raw = v.get("route_tables") or {}
        _mapping(ctx, rt_raw, _join(p, "route_tables"))
        for tname, routes in rt_raw.items():
            tp = _join(_join(p, "route_tables"), tname)
            tables[tname] = RouteTable(tname, name, _routes(ctx, routes, tp), tp)
        subnets: dict[str, Subnet] = {}
        sn_raw = v.get("subnets") or {}
        _mapping(ctx, sn_raw, _join(p, "subnets"))
        for sname, s in sn_raw.items():
            sp = _join(_join(p, "subnets"), sname)
            _mapping(ctx, s, sp, ("cidr", "route_table"), required=("cidr", "route_table"))
            scidr, snet, splen = _cidr(ctx, s["cidr"], _join(sp, "cidr"))
            if splen < plen or not _in_prefix(snet, net, plen):
                ctx.fail(_join(sp, "cidr"), f"subnet {scidr} is outside its VPC CIDR {cidr}")
            for other in subnets.values():
                if _overlap(snet, splen, other.net, other.plen):
                    ctx.fail(_join(sp, "cidr"), f"subnet {scidr} overlaps subnet '{other.name}' ({other.cidr})")
            rt = _str(ctx, s["route_table"], _join(sp, "route_table"))
            if rt not in tables:
                ctx.fail(_join(sp, "route_table"), f"unknown route table '{rt}'{_close(rt, tables)}"
                         f" (known: {', '.join(tables) or 'none'})")
            subnets[sname] = Subnet(sname, name, scidr, snet, splen, rt, sp)
        for t in tables.values():
            # the implicit local route of AWS and Alibaba VPCs: the VPC's CIDR is local in every table, and a more
            # specific route overrides it; a route written for the CIDR itself takes its place
            if not any((r.net, r.plen) == (net, plen) for r in t.routes):
                t.routes.append(Route(cidr, net, plen, "local", "local", None, f"{t.key}.(local {cidr})", True))
        out[name] = Vpc(name, cidr, net, plen, subnets, tables, p)
    return out


def _routes(ctx, raw, path, kinds=NEXT_HOP_KINDS) -> list[Route]:
    _list(ctx, raw, path)
    routes = []
    seen = {}
    for i, r in enumerate(raw):
        rp = _join(path, i)
        _mapping(ctx, r, rp, ("dst", "via"), required=("dst", "via"))
        dst, net, plen = _cidr(ctx, r["dst"], _join(rp, "dst"))
        via = _str(ctx, r["via"], _join(rp, "via")).strip()
        kind, _, target = via.partition(":")
        if kind not in kinds:
            expected = ("local, internet, blackhole, gwlbe:<endpoint>, natgw:<nat gateway> or tr:<transit router>"
                        if kinds is NEXT_HOP_KINDS else "attachment:<attachment> or blackhole")
            ctx.fail(_join(rp, "via"), f"unknown next hop {via!r} (expected {expected})")
        if kind in ("gwlbe", "natgw", "tr", "attachment") and not target:
            ctx.fail(_join(rp, "via"), f"next hop {via!r} needs a name: {kind}:<name>")
        if kind not in ("gwlbe", "natgw", "tr", "attachment") and target:
            ctx.fail(_join(rp, "via"), f"next hop {via!r}: '{kind}' takes no name")
        if (net, plen) in seen:
            ctx.fail(_join(rp, "dst"), f"duplicate route for {dst} (also at index {seen[(net, plen)]})")
        seen[(net, plen)] = i
        routes.append(Route(dst, net, plen, via, kind, target or None, rp))
    return routes


def _gwlbs(ctx, raw) -> dict[str, Gwlb]:
    _mapping(ctx, raw, "gwlb")
    out = {}
    fw_addr_all: dict[int, str] = {}
    for name, g in raw.items():
        p = _join("gwlb", name)
        _mapping(ctx, g, p, ("address", "stickiness", "failover", "idle_timeout", "draining_timeout", "geneve",
                             "firewalls", "flow_capacity", "health_check"), required=("address", "firewalls"))
        ip = _ip(ctx, g["address"], _join(p, "address"))
        fws = {}
        fraw = _mapping(ctx, g["firewalls"], _join(p, "firewalls"))
        if not fraw:
            ctx.fail(_join(p, "firewalls"), "at least one firewall is required")
        for fname, f in fraw.items():
            fp = _join(_join(p, "firewalls"), fname)
            _mapping(ctx, f, fp, ("address",), required=("address",))
            fip = _ip(ctx, f["address"], _join(fp, "address"))
            if fip in fw_addr_all:
                ctx.fail(_join(fp, "address"), f"duplicate firewall address {f['address']} "
                                               f"(also {fw_addr_all[fip]})")
            if fip == ip:
                ctx.fail(_join(fp, "address"), f"firewall address {f['address']} is the GWLB's own address")
            fw_addr_all[fip] = fp
            fws[fname] = Firewall(fname, f["address"].strip(), fip, fp)
        gw = Gwlb(name, g["address"].strip(), ip, fws, key=p)
        if "stickiness" in g:
            gw.stickiness = _choice(ctx, g["stickiness"], _join(p, "stickiness"), STICKINESS)
        if "failover" in g:
            gw.failover = _choice(ctx, g["failover"], _join(p, "failover"), FAILOVER)
            if gw.failover == "no_rebalance":
                gw.failover = "keep"
        if "idle_timeout" in g:
            gw.idle_timeout_tcp, gw.idle_timeout_other = _idle_timeout(
                ctx, g["idle_timeout"], _join(p, "idle_timeout"), gw.idle_timeout_tcp, gw.idle_timeout_other)
        if "draining_timeout" in g:
            gw.draining_timeout = _num(ctx, g["draining_timeout"], _join(p, "draining_timeout"))
        if "flow_capacity" in g:
            gw.flow_capacity = _int(ctx, g["flow_capacity"], _join(p, "flow_capacity"), 1, 1 << 30)
        if "geneve" in g:
            gw.geneve = _geneve(ctx, g["geneve"], _join(p, "geneve"))
        if "health_check" in g:
            gw.health_check = _health(ctx, g["health_check"], _join(p, "health_check"))
        out[name] = gw
    return out


def _geneve(ctx, raw, path) -> GeneveSettings:
    _mapping(ctx, raw, path, ("option_class", "profile", "max_inner"))
    profile = _choice(ctx, raw.get("profile", "aws"), _join(path, "profile"), tuple(GENEVE_PROFILES))
    d = dict(GENEVE_PROFILES[profile])
    if "option_class" in raw:
        d["option_class"] = _int(ctx, raw["option_class"], _join(path, "option_class"), 0, 0xFFFF,
                                 "a 16-bit option class")
    if "max_inner" in raw:
        d["max_inner"] = _int(ctx, raw["max_inner"], _join(path, "max_inner"), 20, 65535)
    return GeneveSettings(profile=profile, **d)


def _health(ctx, raw, path) -> HealthCheck:
    _mapping(ctx, raw, path, ("protocol", "port", "path", "interval", "timeout", "healthy_threshold",
                              "unhealthy_threshold"))
    kw = {}
    if "protocol" in raw:
        kw["protocol"] = _choice(ctx, raw["protocol"], _join(path, "protocol"), ("tcp", "http"))
    if "port" in raw:
        kw["port"] = _port(ctx, raw["port"], _join(path, "port"))
    if "path" in raw:
        kw["path"] = _str(ctx, raw["path"], _join(path, "path"))
    if "interval" in raw:
        kw["interval"] = _num(ctx, raw["interval"], _join(path, "interval"), 1e-9)
    if "timeout" in raw:
        kw["timeout"] = _num(ctx, raw["timeout"], _join(path, "timeout"), 1e-9)
    for k in ("healthy_threshold", "unhealthy_threshold"):
        if k in raw:
            kw[k] = _int(ctx, raw[k], _join(path, k), 1, 100)
    return HealthCheck(**kw)


def _endpoints(ctx, raw, vpcs, gwlbs) -> dict[str, Endpoint]:
    _mapping(ctx, raw, "endpoints")
    out = {}
    ids: dict[int, str] = {}
    for name, e in raw.items():
        p = _join("endpoints", name)
        _mapping(ctx, e, p, ("vpc", "subnet", "id", "gwlb", "address", "attachment_id"),
                 required=("vpc", "subnet", "id", "gwlb"))
        vpc = _str(ctx, e["vpc"], _join(p, "vpc"))
        if vpc not in vpcs:
            ctx.fail(_join(p, "vpc"), f"unknown VPC '{vpc}'{_close(vpc, vpcs)} (known: {', '.join(vpcs)})")
        subnet = _str(ctx, e["subnet"], _join(p, "subnet"))
        if subnet not in vpcs[vpc].subnets:
            ctx.fail(_join(p, "subnet"), f"unknown subnet '{subnet}' in VPC '{vpc}'"
                                         f"{_close(subnet, vpcs[vpc].subnets)}"
                                         f" (known: {', '.join(vpcs[vpc].subnets) or 'none'})")
        eid = _int(ctx, e["id"], _join(p, "id"), 0, (1 << 64) - 1, "a 64-bit endpoint id")
        if eid in ids:
            ctx.fail(_join(p, "id"), f"duplicate endpoint id {eid:#x} (also endpoint '{ids[eid]}')")
        ids[eid] = name
        gw = _str(ctx, e["gwlb"], _join(p, "gwlb"))
        if gw not in gwlbs:
            ctx.fail(_join(p, "gwlb"), f"unknown GWLB '{gw}'{_close(gw, gwlbs)} (known: {', '.join(gwlbs) or 'none'})")
        addr = None
        if "address" in e:
            a = _ip(ctx, e["address"], _join(p, "address"))
            sn = vpcs[vpc].subnets[subnet]
            if not sn.contains(a):
                ctx.fail(_join(p, "address"), f"address {e['address']} is outside its subnet '{subnet}' ({sn.cidr})")
            addr = e["address"].strip()
        att = 0
        if "attachment_id" in e:
            att = _int(ctx, e["attachment_id"], _join(p, "attachment_id"), 0, (1 << 64) - 1, "a 64-bit attachment id")
        out[name] = Endpoint(name, vpc, subnet, eid, gw, addr, p, att)
    return out


def _nats(ctx, raw, vpcs) -> dict[str, NatGateway]:
    _mapping(ctx, raw, "nat_gateways")
    out = {}
    for name, n in raw.items():
        p = _join("nat_gateways", name)
        _mapping(ctx, n, p, ("public_ip", "snat", "dnat", "vpc", "subnet", "idle_timeout", "capacity"),
                 required=("public_ip",))
        pub = _ip(ctx, n["public_ip"], _join(p, "public_ip"))
        nat = NatGateway(name, n["public_ip"].strip(), pub, [], [], key=p)
        if "snat" in n:
            sp = _join(p, "snat")
            s = _mapping(ctx, n["snat"], sp, ("sources", "ports"))
            if "sources" in s:
                for i, c in enumerate(_list(ctx, s["sources"], _join(sp, "sources"))):
                    cidr, net, plen = _cidr(ctx, c, _join(_join(sp, "sources"), i))
                    nat.snat_sources.append((net, plen))
                    nat.snat_source_cidrs.append(cidr)
            if "ports" in s:
                nat.port_lo, nat.port_hi = _port_range(ctx, s["ports"], _join(sp, "ports"))
        if "dnat" in n:
            dp = _join(p, "dnat")
            seen = {}
            for i, r in enumerate(_list(ctx, n["dnat"], dp)):
                rp = _join(dp, i)
                _mapping(ctx, r, rp, ("proto", "port", "to"), required=("proto", "port", "to"))
                proto = _proto(ctx, r["proto"], _join(rp, "proto"))
                if proto == 1:
                    ctx.fail(_join(rp, "proto"), "DNAT needs tcp or udp (ICMP has no port)")
                port = _port(ctx, r["port"], _join(rp, "port"))
                to = _str(ctx, r["to"], _join(rp, "to"))
                host, sep, tport = to.rpartition(":")
                if not sep:
                    ctx.fail(_join(rp, "to"), f"must be ip:port, got {to!r}")
                to_ip = _ip(ctx, host, _join(rp, "to"))
                to_port = _port(ctx, tport, _join(rp, "to"))
                if (proto, port) in seen:
                    ctx.fail(_join(rp, "port"), f"duplicate DNAT rule for {r['proto']} port {port} "
                                                f"(also at index {seen[(proto, port)]})")
                seen[(proto, port)] = i
                nat.dnat.append(DnatRule(proto, port, to, to_ip, to_port, rp))
        if "idle_timeout" in n:
            nat.idle_timeout_tcp, nat.idle_timeout_other = _idle_timeout(
                ctx, n["idle_timeout"], _join(p, "idle_timeout"), nat.idle_timeout_tcp, nat.idle_timeout_other)
        if "capacity" in n:
            nat.capacity = _int(ctx, n["capacity"], _join(p, "capacity"), 1, 1 << 26)
        if "vpc" in n:
            v = _str(ctx, n["vpc"], _join(p, "vpc"))
            if v not in vpcs:
                ctx.fail(_join(p, "vpc"), f"unknown VPC '{v}'{_close(v, vpcs)} (known: {', '.join(vpcs)})")
            nat.vpc = v
        if "subnet" in n:
            if nat.vpc is None:
                ctx.fail(_join(p, "subnet"), "'subnet' needs 'vpc' beside it")
            s = _str(ctx, n["subnet"], _join(p, "subnet"))
            if s not in vpcs[nat.vpc].subnets:
                ctx.fail(_join(p, "subnet"), f"unknown subnet '{s}' in VPC '{nat.vpc}'"
                                             f"{_close(s, vpcs[nat.vpc].subnets)}")
            nat.subnet = s
        for v in vpcs.values():
            if v.contains(pub):
                ctx.fail(_join(p, "public_ip"), f"public IP {n['public_ip']} lies inside VPC '{v.name}' ({v.cidr})")
        out[name] = nat
    return out


def _transit_routers(ctx, raw, vpcs) -> dict[str, TransitRouter]:
    _mapping(ctx, raw, "transit_routers")
    out = {}
    for name, t in raw.items():
        p = _join("transit_routers", name)
        _mapping(ctx, t, p, ("attachments", "route_tables"), required=("attachments", "route_tables"))
        tables = {}
        rt_raw = _mapping(ctx, t["route_tables"], _join(p, "route_tables"))
        for tname, routes in rt_raw.items():
            tp = _join(_join(p, "route_tables"), tname)
            tables[tname] = RouteTable(tname, "", _routes(ctx, routes, tp, TR_NEXT_HOP_KINDS), tp)
        atts: dict[str, Attachment] = {}
        a_raw = _mapping(ctx, t["attachments"], _join(p, "attachments"))
        if not a_raw:
            ctx.fail(_join(p, "attachments"), "at least one attachment is required")
        for aname, a in a_raw.items():
            ap = _join(_join(p, "attachments"), aname)
            _mapping(ctx, a, ap, ("vpc", "subnet", "route_table"), required=("vpc", "subnet", "route_table"))
            vpc = _str(ctx, a["vpc"], _join(ap, "vpc"))
            if vpc not in vpcs:
                ctx.fail(_join(ap, "vpc"), f"unknown VPC '{vpc}'{_close(vpc, vpcs)} (known: {', '.join(vpcs)})")
            for other in atts.values():
                if other.vpc == vpc:
                    ctx.fail(_join(ap, "vpc"), f"VPC '{vpc}' is attached twice (also attachment '{other.name}')")
            sub = _str(ctx, a["subnet"], _join(ap, "subnet"))
            if sub not in vpcs[vpc].subnets:
                ctx.fail(_join(ap, "subnet"), f"unknown subnet '{sub}' in VPC '{vpc}'{_close(sub, vpcs[vpc].subnets)}"
                                              f" (known: {', '.join(vpcs[vpc].subnets) or 'none'})")
            rt = _str(ctx, a["route_table"], _join(ap, "route_table"))
            if rt not in tables:
                ctx.fail(_join(ap, "route_table"), f"unknown route table '{rt}'{_close(rt, tables)}"
                                                   f" (known: {', '.join(tables) or 'none'})")
            atts[aname] = Attachment(aname, name, vpc, sub, rt, ap)
        for tb in tables.values():
            for r in tb.routes:
                if r.kind == "attachment" and r.target not in atts:
                    ctx.fail(_join(r.key, "via"), f"unknown attachment '{r.target}'{_close(r.target, atts)}"
                                                  f" (known: {', '.join(atts)})")
        out[name] = TransitRouter(name, atts, tables, p)
    return out


def _routes_targets(ctx, vpcs, endpoints, nats, trs=None):
    trs = trs or {}
    for v in vpcs.values():
        for t in v.route_tables.values():
            for r in t.routes:
                path = _join(r.key, "via")
                if r.kind == "tr":
                    if r.target not in trs:
                        ctx.fail(path, f"unknown transit router '{r.target}'{_close(r.target, trs)}"
                                       f" (known: {', '.join(trs) or 'none'})")
                    if trs[r.target].attachment_of_vpc(v.name) is None:
                        ctx.fail(path, f"VPC '{v.name}' has no attachment to transit router '{r.target}'")
                elif r.kind == "gwlbe":
                    if r.target not in endpoints:
                        ctx.fail(path, f"unknown endpoint '{r.target}'{_close(r.target, endpoints)}"
                                       f" (known: {', '.join(endpoints) or 'none'})")
                    if endpoints[r.target].vpc != v.name:
                        ctx.fail(path, f"endpoint '{r.target}' is in VPC '{endpoints[r.target].vpc}', "
                                       f"not '{v.name}'")
                elif r.kind == "natgw":
                    if r.target not in nats:
                        ctx.fail(path, f"unknown NAT gateway '{r.target}'{_close(r.target, nats)}"
                                       f" (known: {', '.join(nats) or 'none'})")
                    if nats[r.target].vpc not in (None, v.name):
                        ctx.fail(path, f"NAT gateway '{r.target}' is in VPC '{nats[r.target].vpc}', not '{v.name}'")


def _nat_placement(ctx, vpcs, nats):
    """Infer a NAT gateway's VPC (from the routes naming it) and subnet (the one routing to the Internet)."""
    for n in nats.values():
        if n.vpc is None:
            users = {v.name for v in vpcs.values() for t in v.route_tables.values() for r in t.routes
                     if r.kind == "natgw" and r.target == n.name}
            if len(users) > 1:
                ctx.fail(n.key, f"NAT gateway is used from several VPCs ({', '.join(sorted(users))}); set 'vpc'")
            n.vpc = next(iter(users)) if users else None
        if n.vpc is not None and n.subnet is None:
            v = vpcs[n.vpc]
            cands = []
            for s in v.subnets.values():
                t = v.route_tables[s.route_table]
                if any(r.kind == "internet" for r in t.routes) and \
                        not any(r.kind == "natgw" and r.target == n.name for r in t.routes):
                    cands.append(s.name)
            if len(cands) == 1:
                n.subnet = cands[0]


def _nat_dnat_targets(ctx, vpcs, n: NatGateway, transit: bool = False):
    for r in n.dnat:
        # behind a transit router a centralized gateway's targets may lie in any VPC its routes reach (check follows
        # the routes)
        vs = [vpcs[n.vpc]] if n.vpc and not transit else list(vpcs.values())
        if not any(v.subnet_for(r.to_ip) for v in vs):
            where = f"VPC '{n.vpc}'" if n.vpc else "any VPC"
            ctx.fail(_join(r.key, "to"), f"DNAT target {r.to} is in no subnet of {where}")


# ---------------------------------------------------------------------------------------------------- events
def events_from_list(raw, source: str, gwlbs: dict[str, Gwlb] | None, path: str = "events") -> list[Event]:
    """Validate a list of events; with ``gwlbs`` given, every firewall must exist (in the named GWLB if any)."""
    ctx = _Ctx(source)
    _list(ctx, raw, path)
    out = []
    for i, e in enumerate(raw):
        p = _join(path, i)
        _mapping(ctx, e, p, ("at", "firewall", "state", "event", "gwlb"), required=("at", "firewall"))
        at = _num(ctx, e["at"], _join(p, "at"))
        fw = _str(ctx, e["firewall"], _join(p, "firewall"))
        if ("state" in e) == ("event" in e):
            ctx.fail(p, "needs one of 'state' (the GWLB's view: healthy, unhealthy, draining) or 'event' "
                        "(the appliance: down, up, remove)")
        state = _choice(ctx, e["state"], _join(p, "state"), FW_STATES) if "state" in e else None
        kind = _choice(ctx, e["event"], _join(p, "event"), EVENT_KINDS) if "event" in e else None
        gw = None
        if "gwlb" in e:
            gw = _str(ctx, e["gwlb"], _join(p, "gwlb"))
        if gwlbs is not None:
            if gw is not None:
                if gw not in gwlbs:
                    ctx.fail(_join(p, "gwlb"), f"unknown GWLB '{gw}'{_close(gw, gwlbs)}")
                if fw not in gwlbs[gw].firewalls:
                    ctx.fail(_join(p, "firewall"), f"unknown firewall '{fw}' in GWLB '{gw}'"
                                                   f"{_close(fw, gwlbs[gw].firewalls)}")
            else:
                owners = [g.name for g in gwlbs.values() if fw in g.firewalls]
                allfw = [f for g in gwlbs.values() for f in g.firewalls]
                if not owners:
                    ctx.fail(_join(p, "firewall"), f"unknown firewall '{fw}'{_close(fw, allfw)}"
                                                   f" (known: {', '.join(allfw) or 'none'})")
                if len(owners) > 1:
                    ctx.fail(_join(p, "firewall"), f"firewall '{fw}' is in several GWLBs "
                                                   f"({', '.join(owners)}); add 'gwlb'")
                gw = owners[0]
        out.append(Event(at, fw, state, gw, p, kind))
    out.sort(key=lambda ev: ev.at)
    return out


def load_events(path, topology: Topology | None = None) -> list[Event]:
    """Read a ``--events`` file: a YAML list of ``{at, firewall, state | event[, gwlb]}`` (as under ``events:``).

    With ``topology`` given, firewall names are checked against it. Returns the events sorted by time.
    """
    source, text = _read(Path(path) if not isinstance(path, Path) else path)
    data = _parse_yaml(source, text)
    if isinstance(data, dict) and set(data) == {"events"}:
        data, key = data["events"], "events"
    else:
        key = ""
    if data is None:
        return []
    return events_from_list(data, source, topology.gwlbs if topology else None, key)
