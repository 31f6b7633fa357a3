import copy
import importlib.resources
import json

import numpy as np
import pytest
import yaml

from gwlb_fast.check import check_topology, trace_route
from gwlb_fast.cli import main
from gwlb_fast.config import example_topology_text, ip_to_int, load_topology, topology_from_dict
from gwlb_fast.stages.policy import Policy

EXAMPLE = yaml.safe_load(example_topology_text())
RT = ("vpcs", "business", "route_tables")


def topo_with(**tables):
    d = copy.deepcopy(EXAMPLE)
    for name, routes in tables.items():
        d["vpcs"]["business"]["route_tables"][name] = routes
    return d


def findings(d):
    return check_topology(topology_from_dict(d, "t.yaml"))


def test_example_is_clean():
    assert check_topology(load_topology(example_topology_text())) == []


def test_trace_follows_section_1():
    t = load_topology(example_topology_text())
    v = t.vpcs["business"]
    out = trace_route(t, v, "app", ip_to_int("8.8.8.8"))
    assert (out.tables, out.endpoints, out.nats, out.end) == (["app", "gwlbe", "nat"], ["gwlbe-a"], ["nat-a"],
                                                             "internet")
    back = trace_route(t, v, "nat", ip_to_int("10.1.1.20"))
    assert (back.tables, back.endpoints, back.end, back.subnet) == (["nat", "gwlbe"], ["gwlbe-a"], "subnet", "app")


TWO_EP = copy.deepcopy(EXAMPLE)
TWO_EP["endpoints"]["gwlbe-b"] = {"vpc": "business", "subnet": "gwlbe", "id": 0x1234, "gwlb": "gwlb-1"}

BROKEN = {
    "app-no-default-route": (
        topo_with(app=[{"dst": "10.1.0.0/16", "via": "local"}]),
        "black-hole", "vpcs.business.route_tables.app", "no route for 8.8.8.8"),
    "app-default-blackhole": (
        topo_with(app=[{"dst": "0.0.0.0/0", "via": "blackhole"}]),
        "black-hole", "vpcs.business.route_tables.app[0]", "routed to blackhole"),
    "gwlbe-default-back-to-gwlbe": (
        topo_with(gwlbe=[{"dst": "0.0.0.0/0", "via": "gwlbe:gwlbe-a"}, {"dst": "10.1.1.0/24", "via": "local"}]),
        "loop", "vpcs.business.route_tables.gwlbe[0]", "route loop"),
    "gwlbe-default-to-nat-from-nat": (
        topo_with(nat=[{"dst": "10.1.1.0/24", "via": "natgw:nat-a"}, {"dst": "0.0.0.0/0", "via": "internet"}]),
        "loop", "vpcs.business.route_tables.nat[0]", "route loop"),
    "nat-return-bypasses-gwlbe": (
        topo_with(nat=[{"dst": "10.1.1.0/24", "via": "local"}, {"dst": "0.0.0.0/0", "via": "internet"}]),
        "asymmetric", "vpcs.business.route_tables.nat", "bypasses the GWLB endpoint 'gwlbe-a'"),
    "dnat-bypasses-gwlbe": (
        topo_with(nat=[{"dst": "10.1.1.0/24", "via": "local"}, {"dst": "0.0.0.0/0", "via": "internet"}]),
        "bypass", "vpcs.business.route_tables.nat[0]", "inbound DNAT to 10.1.1.20:8443"),
    "return-via-other-endpoint": (
        {**TWO_EP, "vpcs": topo_with(nat=[{"dst": "10.1.1.0/24", "via": "gwlbe:gwlbe-b"},
                                          {"dst": "0.0.0.0/0", "via": "internet"}])["vpcs"]},
        "asymmetric", "vpcs.business.route_tables.nat", "crosses endpoint(s) gwlbe-b"),
    "nat-no-internet": (
        topo_with(nat=[{"dst": "10.1.1.0/24", "via": "gwlbe:gwlbe-a"}]),
        "no-internet", "vpcs.business.route_tables.nat", "no route to the Internet"),
    "app-straight-to-nat": (
        topo_with(app=[{"dst": "0.0.0.0/0", "via": "natgw:nat-a"}]),
        "bypass", "vpcs.business.route_tables.nat[1]", "crosses no GWLB endpoint"),
    "app-straight-to-internet": (
        topo_with(app=[{"dst": "0.0.0.0/0", "via": "internet"}]),
        "bypass", "vpcs.business.route_tables.app[0]", "crosses no GWLB endpoint"),
    "dnat-reply-skips-nat": (
        topo_with(gwlbe=[{"dst": "0.0.0.0/0", "via": "internet"}, {"dst": "10.1.1.0/24", "via": "local"}]),
        "asymmetric", "vpcs.business.route_tables.app", "leaves through no NAT gateway"),
    "local-route-outside-vpc": (
        topo_with(gwlbe=[{"dst": "0.0.0.0/0", "via": "natgw:nat-a"}, {"dst": "10.1.1.0/24", "via": "local"},
                         {"dst": "172.16.0.0/12", "via": "local"}]),
        "black-hole", "vpcs.business.route_tables.gwlbe[2]", "outside the VPC CIDR"),
    "subnet-not-snat-source": (
        {**EXAMPLE, "nat_gateways": {"nat-a": {**EXAMPLE["nat_gateways"]["nat-a"],
                                               "snat": {"sources": ["10.1.9.0/24"]}}}},
        "nat", "nat_gateways.nat-a.snat.sources", "not an SNAT source"),
}


def test_implicit_local_route_returns_to_the_app_subnet():
    # without the written app-subnet route the gwlbe table still delivers by the VPC's implicit local route
    d = topo_with(gwlbe=[{"dst": "0.0.0.0/0", "via": "natgw:nat-a"}])
    assert findings(d) == []
    t = topology_from_dict(d, "t.yaml")
    back = trace_route(t, t.vpcs["business"], "nat", ip_to_int("10.1.1.20"))
    assert (back.end, back.subnet, back.routes[-1].implicit) == ("subnet", "app", True)


@pytest.mark.parametrize("name", list(BROKEN))
def test_planted_mistake_is_found(name):
    _assert_found(*BROKEN[name])


def _assert_found(d, kind, path, words):
    fs = findings(d)
    hits = [f for f in fs if f.kind == kind and f.path == path and words in f.message]
    assert hits, "\n".join(map(str, fs))


def test_policy_zone_names_unknown_endpoint():
    d = copy.deepcopy(EXAMPLE)
    d["security_policy"]["zones"]["gwlb"] = ["gwlbe-a", "gwlbe-z"]
    fs = findings(d)
    assert [str(f) for f in fs] == [("policy: security_policy.zones.gwlb[1]: zone 'gwlb' names endpoint 'gwlbe-z', "
                                    "which the topology does not have (known: gwlbe-a)")]


def test_nat_subnet_unknown():
    d = copy.deepcopy(EXAMPLE)
    n = d["nat_gateways"]["nat-a"]
    del n["subnet"]
    # two candidate subnets route to the Internet: the NAT gateway's subnet cannot be inferred
    d["vpcs"]["business"]["subnets"]["pub"] = {"cidr": "10.1.4.0/24", "route_table": "nat"}
    fs = findings(d)
    assert any(f.kind == "nat" and "cannot tell which subnet" in f.message for f in fs), fs


def test_cli_exit_codes(tmp_path, capsys):
    good = tmp_path / "good.yaml"
    good.write_text(example_topology_text())
    assert main(["check", str(good)]) == 0
    assert "OK, no findings" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(BROKEN["nat-return-bypasses-gwlbe"][0]))
    assert main(["check", str(bad)]) == 1
    out = capsys.readouterr().out
    assert f"{bad}: asymmetric: vpcs.business.route_tables.nat:" in out and "finding(s)" in out
    assert main(["check", "--json", str(bad)]) == 1
    js = json.loads(capsys.readouterr().out)
    assert js["ok"] is False and {f["kind"] for f in js["findings"]} >= {"asymmetric", "bypass"}
    invalid = tmp_path / "invalid.yaml"
    invalid.write_text(example_topology_text().replace('via: "gwlbe:gwlbe-a"}]', 'via: "gwlbe:nope"}]', 1))
    assert main(["check", str(invalid)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"gwlb-fast: {invalid}: vpcs.business.route_tables.app[0].via: unknown endpoint 'nope'")
    assert err.count("\n") == 1
    badpol = tmp_path / "badpol.yaml"
    badpol.write_text(example_topology_text().replace("action: deny}", "action: maybe}"))
    assert main(["check", str(badpol)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"gwlb-fast: {badpol}") and "maybe" in err and err.count("\n") == 1
    assert main(["check", str(tmp_path / "missing.yaml")]) == 1
    assert "no such file" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------- transit
CENTRAL = yaml.safe_load((importlib.resources.files("gwlb_fast") / "examples" / "centralized.yaml").read_text())


def central_with(change):
    d = copy.deepcopy(CENTRAL)
    change(d)
    return d


def _second_security_vpc(d):
    """A second inspection VPC (its own endpoint) attached to tr-1, for return paths through another attachment."""
    d["vpcs"]["security-2"] = {
        "cidr": "10.101.0.0/16",
        "subnets": {"tr": {"cidr": "10.101.1.0/24", "route_table": "from-tr"},
                    "gwlbe": {"cidr": "10.101.2.0/24", "route_table": "gwlbe"}},
        "route_tables": {"from-tr": [{"dst": "0.0.0.0/0", "via": "gwlbe:gwlbe-d"}],
                         "gwlbe": [{"dst": "10.0.0.0/8", "via": "tr:tr-1"}]}}
    d["endpoints"]["gwlbe-d"] = {"vpc": "security-2", "subnet": "gwlbe", "id": 0x0D, "gwlb": "gwlb-1"}
    d["transit_routers"]["tr-1"]["attachments"]["security-2"] = {"vpc": "security-2", "subnet": "tr",
                                                                 "route_table": "security"}
    d["transit_routers"]["tr-1"]["route_tables"]["from-b"] = [{"dst": "0.0.0.0/0", "via": "attachment:security-2"}]
    d["transit_routers"]["tr-1"]["attachments"]["spoke-b"]["route_table"] = "from-b"


def _private_vpc(d):
    # a VPC with no route to the Internet at all, attached for east-west only: not a finding
    d["vpcs"]["private"] = {"cidr": "10.3.0.0/16", "subnets": {"db": {"cidr": "10.3.1.0/24", "route_table": "db"},
                                                               "tr": {"cidr": "10.3.9.0/24", "route_table": "db"}},
                            "route_tables": {"db": [{"dst": "10.0.0.0/8", "via": "tr:tr-1"}]}}
    tr = d["transit_routers"]["tr-1"]
    tr["attachments"]["private"] = {"vpc": "private", "subnet": "tr", "route_table": "spokes"}
    tr["route_tables"]["security"].append({"dst": "10.3.0.0/16", "via": "attachment:private"})


CENTRAL_BROKEN = {
    # spoke-b's replies come back through another security VPC (another attachment, another endpoint)
    "return-through-another-attachment": (
        central_with(_second_security_vpc), "asymmetric", "vpcs.spoke-b.route_tables.app",
        "crosses endpoint(s) gwlbe-d but the forward path crossed gwlbe-c"),
    # the security VPC hands spoke-b's traffic back to the router without inspection
    "return-through-another-endpoint": (
        central_with(lambda d: (d["endpoints"].__setitem__(
            "gwlbe-e", {"vpc": "security", "subnet": "gwlbe", "id": 0x0E, "gwlb": "gwlb-1"}),
            d["vpcs"]["security"]["route_tables"]["from-tr"].insert(
                0, {"dst": "10.1.0.0/16", "via": "gwlbe:gwlbe-e"}))),
        "asymmetric", "vpcs.spoke-b.route_tables.app", "crosses endpoint(s) gwlbe-e"),
    # a spoke route that reaches the other spoke without the security VPC
    "spoke-bypasses-security": (
        central_with(lambda d: d["transit_routers"]["tr-1"]["route_tables"]["spokes"].insert(
            0, {"dst": "10.2.0.0/16", "via": "attachment:spoke-b"})),
        "bypass", "transit_routers.tr-1.route_tables.spokes[0]", "without crossing a GWLB endpoint"),
    # the security VPC's table sends the spokes back to the router, whose table sends them to security again
    "loop-between-route-tables": (
        central_with(lambda d: d["transit_routers"]["tr-1"]["route_tables"]["security"].__setitem__(
            0, {"dst": "10.1.0.0/16", "via": "attachment:security"})),
        "loop", "transit_routers.tr-1.route_tables.security[0]", "route loop"),
    # the router has no route back to spoke-a (traffic to it dies in the router)
    "router-black-hole": (
        central_with(lambda d: d["transit_routers"]["tr-1"]["route_tables"]["security"].pop(0)),
        "black-hole", "transit_routers.tr-1.route_tables.security", "no route for 10.1.1.1"),
}


@pytest.mark.parametrize("name", list(CENTRAL_BROKEN))
def test_planted_transit_mistake_is_found(name):
    _assert_found(*CENTRAL_BROKEN[name])


def test_centralized_example_is_clean_and_traces_through_the_router():
    t = topology_from_dict(CENTRAL, "c.yaml")
    assert check_topology(t) == []
    ew = trace_route(t, t.vpcs["spoke-a"], "app", ip_to_int("10.2.1.30"))
    assert (ew.end, ew.vpc, ew.subnet, ew.endpoints) == ("subnet", "spoke-b", "app", ["gwlbe-c"])
    assert ew.attachments == ["tr-1/security", "tr-1/spoke-b"]
    out = trace_route(t, t.vpcs["spoke-b"], "app", ip_to_int("8.8.8.8"))
    assert (out.end, out.endpoints, out.nats) == ("internet", ["gwlbe-c"], ["nat-c"])


def test_private_vpc_is_not_a_finding():
    assert findings(central_with(_private_vpc)) == []
    # a business VPC with no Internet route at all, alone: no finding either
    d = copy.deepcopy(EXAMPLE)
    d["vpcs"]["private"] = {"cidr": "10.9.0.0/16", "subnets": {"db": {"cidr": "10.9.1.0/24", "route_table": "db"}},
                            "route_tables": {"db": []}}
    assert findings(d) == []


def test_missing_attachment_is_a_configuration_error_naming_it(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    d = copy.deepcopy(CENTRAL)
    d["transit_routers"]["tr-1"]["route_tables"]["spokes"][0]["via"] = "attachment:securty"
    bad.write_text(yaml.safe_dump(d))
    assert main(["check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"gwlb-fast: {bad}: transit_routers.tr-1.route_tables.spokes[0].via: unknown attachment "
                          "'securty' (did you mean 'security'?)") and err.count("\n") == 1


def test_interzone_rule_never_matches_behind_a_gwlb():
    d = copy.deepcopy(CENTRAL)
    d["endpoints"]["gwlbe-d"] = {"vpc": "security", "subnet": "gwlbe", "id": 0x0D, "gwlb": "gwlb-1"}
    d["security_policy"]["zones"]["other"] = ["gwlbe-d"]
    d["security_policy"]["rules"][:0] = [
        {"name": "cross", "from": ["security"], "to": ["other"], "action": "allow"},
        {"name": "same", "from": ["security", "other"], "to": ["other"], "action": "allow"}]
    fs = [f for f in findings(d) if f.kind == "policy"]
    assert [(f.path, f.message.split(" and ")[0]) for f in fs] == [
        ("security_policy.rules[0]", "rule 'cross' is interzone (from security to other)")]
    # and the firewall agrees: a packet that came by gwlbe-d (zone other) is classified with from = to = other,
    # which the interzone rule never matches and the intrazone one does
    pol = Policy.from_yaml({"security_policy": d["security_policy"]}, name="z.yaml")
    z = np.array([pol.zone_names.index("other")], np.uint8)
    one = [np.array([v], t) for v, t in ((0x0A010105, np.uint32), (0x0A020105, np.uint32), (40000, np.uint16),
                                         (443, np.uint16), (6, np.uint8))]
    assert pol.compile().classify(*one, zone_from=z, zone_to=z).tolist() == [1]
