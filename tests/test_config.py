import copy

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from gwlb_fast.config import (
    example_topology_text,
    ip_to_int,
    load_events,
    load_topology,
    topology_from_dict,
)
from gwlb_fast.errors import ConfigError, GwlbError

EXAMPLE = yaml.safe_load(example_topology_text())


def test_example_loads():
    t = load_topology(example_topology_text())
    v = t.vpcs["business"]
    assert v.cidr == "10.1.0.0/16" and set(v.subnets) == {"app", "gwlbe", "nat"}
    assert [r.via for r in v.route_tables["gwlbe"].routes if not r.implicit] == ["natgw:nat-a", "local"]
    # every table holds the VPC's implicit local route
    assert all([(r.dst, r.kind) for r in t.routes if r.implicit] == [("10.1.0.0/16", "local")]
               for t in v.route_tables.values())
    assert v.route_tables["app"].routes[0].kind == "gwlbe" and v.route_tables["app"].routes[0].target == "gwlbe-a"
    e = t.endpoints["gwlbe-a"]
    assert e.id == 0x0A1B2C3D4E5F6071 and e.gwlb == "gwlb-1" and e.subnet == "gwlbe"
    g = t.gwlbs["gwlb-1"]
    assert g.stickiness == "5-tuple" and g.failover == "keep" and g.idle_timeout_tcp == 350
    assert g.idle_timeout_other == 120 and g.draining_timeout == 300 and g.geneve.option_class == 0x0108
    assert [f.address for f in g.firewalls.values()] == ["10.0.1.11", "10.0.1.12", "10.0.1.13"]
    n = t.nat_gateways["nat-a"]
    assert n.public_ip_int == ip_to_int("203.0.113.10") and (n.port_lo, n.port_hi) == (1024, 65535)
    assert n.dnat[0].proto == 6 and n.dnat[0].port == 443 and n.dnat[0].to_ip == ip_to_int("10.1.1.20")
    assert n.dnat[0].to_port == 8443 and n.vpc == "business" and n.subnet == "nat"
    assert t.security_policy["rules"][0]["name"] == "allow-web-out" and t.security_policy_path == "security_policy"
    assert [(e.at, e.firewall, e.state, e.gwlb) for e in t.events] == [(5.0, "fw-2", "unhealthy", "gwlb-1")]


def test_load_from_path_and_defaults(tmp_path):
    p = tmp_path / "t.yaml"
    d = copy.deepcopy(EXAMPLE)
    del d["nat_gateways"]["nat-a"]["vpc"], d["nat_gateways"]["nat-a"]["subnet"], d["nat_gateways"]["nat-a"]["snat"]
    del d["events"]
    d["gwlb"]["gwlb-1"]["geneve"] = {"profile": "alibaba"}
    p.write_text(yaml.safe_dump(d))
    t = load_topology(p)
    assert t.source == str(p) and load_topology(str(p)).source == str(p)
    n = t.nat_gateways["nat-a"]
    assert (n.vpc, n.subnet) == ("business", "nat")       # inferred
    assert (n.port_lo, n.port_hi, n.snat_sources) == (1024, 65535, [])
    assert t.events == []
    assert t.gwlbs["gwlb-1"].geneve.max_inner == 1500


def test_missing_file():
    with pytest.raises(FileNotFoundError):
        load_topology("/nonexistent/topology.yaml")


def _mutated(fn):
    d = copy.deepcopy(EXAMPLE)
    fn(d)
    return d


def _set(path, value):
    def f(d):
        obj = d
        for k in path[:-1]:
            obj = obj[k]
        obj[path[-1]] = value
    return f


def _del(path):
    def f(d):
        obj = d
        for k in path[:-1]:
            obj = obj[k]
        del obj[path[-1]]
    return f


V = ["vpcs", "business"]
RT = V + ["route_tables"]
BAD = [
    # (mutation, key path in the message, words of the problem)
    (_set(RT + ["app", 0, "via"], "gwlbe:gwlbe-x"), "vpcs.business.route_tables.app[0].via", "unknown endpoint"),
    (_set(RT + ["app", 0, "via"], "firewall"), "vpcs.business.route_tables.app[0].via", "unknown next hop"),
    (_set(RT + ["gwlbe", 0, "via"], "natgw:nat-z"), "vpcs.business.route_tables.gwlbe[0].via",
     "unknown NAT gateway"),
    (_set(RT + ["app", 0, "via"], "gwlbe"), "vpcs.business.route_tables.app[0].via", "needs a name"),
    (_set(RT + ["app", 0, "via"], "local:x"), "vpcs.business.route_tables.app[0].via", "takes no name"),
    (_set(RT + ["app", 0, "dst"], "10.1.0.0/33"), "vpcs.business.route_tables.app[0].dst", "bad CIDR"),
    (_set(RT + ["app", 0, "dst"], "10.1.1.5/24"), "vpcs.business.route_tables.app[0].dst", "host bits"),
    (_set(RT + ["app", 0, "dst"], 12), "vpcs.business.route_tables.app[0].dst", "must be a CIDR"),
    (_set(RT + ["app"], [{"dst": "0.0.0.0/0", "via": "local"}, {"dst": "0.0.0.0/0", "via": "internet"}]),
     "vpcs.business.route_tables.app[1].dst", "duplicate route"),
    (_set(RT + ["app", 0, "vai"], "local"), "vpcs.business.route_tables.app[0].vai", "unknown key"),
    (_set(V + ["subnets", "nat", "cidr"], "10.1.1.128/25"), "vpcs.business.subnets.nat.cidr", "overlaps subnet"),
    (_set(V + ["subnets", "nat", "cidr"], "10.2.3.0/24"), "vpcs.business.subnets.nat.cidr", "outside its VPC"),
    (_set(V + ["subnets", "nat", "route_table"], "natt"), "vpcs.business.subnets.nat.route_table",
     "unknown route table"),
    (_set(V + ["subnets", "nat", "rout_table"], "nat"), "vpcs.business.subnets.nat.rout_table", "did you mean"),
    (_set(V + ["cidr"], "10.1.0.0"), "vpcs.business.cidr", "missing /prefix"),
    (_set(["endpoints", "gwlbe-a", "gwlb"], "gwlb-9"), "endpoints.gwlbe-a.gwlb", "unknown GWLB"),
    (_set(["endpoints", "gwlbe-a", "vpc"], "nope"), "endpoints.gwlbe-a.vpc", "unknown VPC"),
    (_set(["endpoints", "gwlbe-a", "subnet"], "web"), "endpoints.gwlbe-a.subnet", "unknown subnet"),
    (_set(["endpoints", "gwlbe-a", "address"], "10.1.1.9"), "endpoints.gwlbe-a.address", "outside its subnet"),
    (_set(["endpoints", "gwlbe-a", "id"], "zzz"), "endpoints.gwlbe-a.id", "64-bit endpoint id"),
    (_del(["endpoints", "gwlbe-a", "id"]), "endpoints.gwlbe-a", "missing required key 'id'"),
    (_set(["gwlb", "gwlb-1", "stickiness"], "4-tuple"), "gwlb.gwlb-1.stickiness", "unknown value"),
    (_set(["gwlb", "gwlb-1", "failover"], "rebalanse"), "gwlb.gwlb-1.failover", "did you mean 'rebalance'"),
    (_set(["gwlb", "gwlb-1", "firewalls", "fw-3", "address"], "10.0.1.11"), "gwlb.gwlb-1.firewalls.fw-3.address",
     "duplicate firewall address"),
    (_set(["gwlb", "gwlb-1", "firewalls", "fw-3", "address"], "10.0.1.300"), "gwlb.gwlb-1.firewalls.fw-3.address",
     "bad IPv4 address"),
    (_set(["gwlb", "gwlb-1", "idle_timeout", "tcp"], "long"), "gwlb.gwlb-1.idle_timeout.tcp", "must be a number"),
    (_set(["gwlb", "gwlb-1", "geneve", "option_class"], 0x10000), "gwlb.gwlb-1.geneve.option_class", "out of range"),
    (_set(["gwlb", "gwlb-1", "geneve", "profile"], "gcp"), "gwlb.gwlb-1.geneve.profile", "unknown value"),
    (_set(["gwlb", "gwlb-1", "firewals"], {}), "gwlb.gwlb-1.firewals", "did you mean 'firewalls'"),
    (_set(["nat_gateways", "nat-a", "dnat", 0, "port"], 70000), "nat_gateways.nat-a.dnat[0].port", "out of range"),
    (_set(["nat_gateways", "nat-a", "dnat", 0, "port"], True), "nat_gateways.nat-a.dnat[0].port", "boolean"),
    (_set(["nat_gateways", "nat-a", "dnat", 0, "to"], "10.1.1.20"), "nat_gateways.nat-a.dnat[0].to", "ip:port"),
    (_set(["nat_gateways", "nat-a", "dnat", 0, "to"], "10.1.9.20:80"), "nat_gateways.nat-a.dnat[0].to",
     "in no subnet"),
    (_set(["nat_gateways", "nat-a", "dnat", 0, "proto"], "sctp"), "nat_gateways.nat-a.dnat[0].proto",
     "unknown protocol"),
    (_set(["nat_gateways", "nat-a", "snat", "ports"], "2000-1000"), "nat_gateways.nat-a.snat.ports",
     "empty port range"),
    (_set(["nat_gateways", "nat-a", "snat", "ports"], "0-1000"), "nat_gateways.nat-a.snat.ports", "out of range"),
    (_set(["nat_gateways", "nat-a", "snat", "sources"], "10.1.1.0/24"), "nat_gateways.nat-a.snat.sources",
     "must be a list"),
    (_set(["nat_gateways", "nat-a", "public_ip"], "10.1.5.5"), "nat_gateways.nat-a.public_ip", "inside VPC"),
    (_set(["nat_gateways", "nat-a", "subnet"], "natt"), "nat_gateways.nat-a.subnet", "unknown subnet"),
    (_set(["events", 0, "firewall"], "fw-9"), "events[0].firewall", "unknown firewall"),
    (_set(["events", 0, "state"], "dead"), "events[0].state", "unknown value"),
    (_set(["events", 0, "at"], -1), "events[0].at", "must be >= 0"),
    (_set(["events"], {"at": 1}), "events", "must be a list"),
    (_set(["security_policy"], 5), "security_policy", "must be a mapping"),
    (_set(["vpcz"], {}), "vpcz", "unknown key"),
    (_set(["vpcs"], {}), "vpcs", "at least one VPC"),
]


@pytest.mark.parametrize("mutate,path,problem", BAD, ids=[f"{i}-{b[2][:20]}" for i, b in enumerate(BAD)])
def test_errors_name_file_path_and_problem(mutate, path, problem):
    d = _mutated(mutate)
    with pytest.raises(ConfigError) as ei:
        topology_from_dict(d, "topo.yaml")
    msg = str(ei.value)
    assert msg.startswith(f"topo.yaml: {path}: "), msg
    assert problem in msg, msg
    assert isinstance(ei.value, GwlbError) and isinstance(ei.value, ValueError)


def test_endpoint_in_other_vpc():
    d = copy.deepcopy(EXAMPLE)
    d["vpcs"]["other"] = {"cidr": "10.9.0.0/16", "subnets": {"s": {"cidr": "10.9.1.0/24", "route_table": "t"}},
                          "route_tables": {"t": [{"dst": "0.0.0.0/0", "via": "gwlbe:gwlbe-a"}]}}
    with pytest.raises(ConfigError, match=r"vpcs\.other\.route_tables\.t\[0\]\.via: endpoint 'gwlbe-a' is in VPC"):
        topology_from_dict(d, "x.yaml")


def test_invalid_yaml_and_empty():
    with pytest.raises(ConfigError, match=r"^<topology>: line \d+ column \d+: invalid YAML"):
        load_topology("vpcs:\n  a: [1, 2\n")
    with pytest.raises(ConfigError, match="empty topology"):
        load_topology("\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_topology("- 1\n- 2\n")


def test_load_events(tmp_path):
    topo = load_topology(example_topology_text())
    p = tmp_path / "ev.yaml"
    p.write_text("- {at: 9, firewall: fw-1, state: draining}\n- {at: 2.5, firewall: fw-3, state: unhealthy}\n")
    evs = load_events(p, topo)
    assert [(e.at, e.firewall, e.state) for e in evs] == [(2.5, "fw-3", "unhealthy"), (9.0, "fw-1", "draining")]
    assert len(load_events(p)) == 2
    p.write_text("events:\n  - {at: 1, firewall: fw-7, state: healthy}\n")
    with pytest.raises(ConfigError, match=r"ev\.yaml: events\[0\]\.firewall: unknown firewall 'fw-7'"):
        load_events(p, topo)
    p.write_text("- {at: 1, firewall: fw-1, state: up}\n")
    with pytest.raises(ConfigError, match=r"ev\.yaml: \[0\]\.state: unknown value 'up'"):
        load_events(str(p), topo)
    p.write_text("")
    assert load_events(p, topo) == []



_YAML_TOKENS = ["a", "yes", "No", "on", "~", "null", "", "1", "-7", "0x1F", "0o17", "1_000", "1:20", "1.5", ".inf",
                "-.Inf", ".NaN", "1e3", "2001-12-14", "2001-12-14 21:59:43.10 -5", "'1'", '"x y"', "=", "<<",
                "!!str 5", "!!int '7'", "!!binary aGk=", "&A 3", "*A", "10.0.0.0/8", "gen-0001", "[]", "{}"]


def _yaml_flow(draw, depth=0) -> str:
    """A flow-style YAML node of tricky plain scalars, tags, anchors and aliases (not always a valid document)."""
    kind = draw(st.sampled_from(["scalar", "scalar", "map", "seq"] if depth < 3 else ["scalar"]))
    if kind == "scalar":
        return draw(st.sampled_from(_YAML_TOKENS))
    parts = [_yaml_flow(draw, depth + 1) for _ in range(draw(st.integers(0, 4)))]
    if kind == "seq":
        return "[" + ", ".join(parts) + "]"
    keys = [draw(st.sampled_from(_YAML_TOKENS[:26])) for _ in parts]
    return draw(st.sampled_from(["", "&M "])) + "{" + ", ".join(f"{k}: {v}" for k, v in zip(keys, parts)) + "}"


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_yaml_load_gives_what_safe_load_gives(data):
    """config.yaml_load (libyaml with quick construction) builds the objects, aliases and errors of yaml.safe_load
    (the pure-Python loader) on documents of tricky scalars, anchors, aliases, merge keys and tags."""
    from gwlb_fast.config import yaml_load

    again = data.draw(st.sampled_from(["*M", "*A", "1", "{<<: *M, b: 2}"]))
    doc = f"anchors: [&A 3, &M {{k: 1}}]\nroot: {_yaml_flow(data.draw)}\nagain: {again}\n"
    try:
        want = yaml.load(doc, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        want = type(e).__name__
    try:
        got = yaml_load(doc)
    except yaml.YAMLError as e:
        got = type(e).__name__
    assert repr(got) == repr(want)
    if isinstance(want, dict) and isinstance(want.get("again"), (dict, list)):
        assert (got["again"] is got["root"]) == (want["again"] is want["root"])
