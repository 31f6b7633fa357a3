"""Policy loading: YAML (DESIGN.md section 6) and ClassBench files, every error naming file, rule and field."""
import textwrap

import numpy as np
import pytest

from gwlb_fast.errors import ConfigError, GwlbError
from gwlb_fast.policy import _ANY8, _ANY16, _ANY32, Action, Policy

DESIGN_TOPOLOGY = textwrap.dedent("""
    vpcs:
      business:
        cidr: 10.1.0.0/16
    endpoints:
      gwlbe-a: {vpc: business, subnet: gwlbe, id: 0x0a1b2c3d4e5f6071, gwlb: gwlb-1}
    security_policy:                 # one policy for every firewall, as a central manager pushes it
      zones: {gwlb: [gwlbe-a]}       # endpoint -> zone mapping
      rules:
        - {name: allow-web-out, source: [10.1.1.0/24], destination: [any], protocol: tcp, port: [80, 443], action: allow}
        - {name: allow-dns, source: [10.1.1.0/24], protocol: udp, port: [53], action: allow}
        - {name: allow-https-in, destination: [10.1.1.20/32], protocol: tcp, port: [8443], action: allow}
        - {name: block-rest, action: deny}
    """)


def _write(tmp_path, text, name="policy.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def test_design_example_loads(tmp_path):
    pol = Policy.from_yaml(_write(tmp_path, DESIGN_TOPOLOGY, "topology.yaml"))
    assert len(pol) == 4
    assert pol.rule_names == ["allow-web-out", "allow-dns", "allow-https-in", "block-rest"]
    assert pol.actions.dtype == np.int8
    assert pol.actions.tolist() == [Action.ALLOW, Action.ALLOW, Action.ALLOW, Action.DENY]
    assert pol.default_action is Action.DENY
    assert pol.zone_names == ["gwlb"] and pol.endpoint_zone == {"gwlbe-a": 0}
    web = pol.rules[0]
    assert web.src == ((0x0A010100, 0x0A0101FF),)
    assert web.dst == _ANY32 and web.sport == _ANY16
    assert web.dport == ((80, 80), (443, 443)) and web.proto == ((6, 6),)
    assert pol.rules[3].proto == _ANY8 and pol.rules[3].zone_from == _ANY8
    # Cross product: 1 src x 1 dst x 2 ports -> 2 boxes, both rule 0.
    lo, _hi, rule = pol.boxes()
    assert rule.tolist() == [0, 0, 1, 2, 3]
    assert lo.shape == (5, 7) and lo.dtype == np.uint32
    clf = pol.compile()
    one = {"src_ip": np.array([0x0A010105, 0x0A010105, 0x08080808], np.uint32),
               "dst_ip": np.array([0x08080808, 0x08080808, 0x0A010114], np.uint32),
               "sport": np.array([40000, 40000, 5555], np.uint16), "dport": np.array([443, 53, 8443], np.uint16),
               "proto": np.array([6, 17, 6], np.uint8)}
    assert clf.classify(**one).tolist() == [0, 1, 2]


def test_bare_mapping_file_and_parsed_mapping(tmp_path):
    bare = _write(tmp_path, """
        default: allow
        rules:
          - {name: r1, source: 10.0.0.0/8, source_port: "1024-65535", port: ["20-21", 990], protocol: 6,
             action: reset-client}
        """)
    pol = Policy.from_yaml(bare)
    assert pol.default_action is Action.ALLOW
    r = pol.rules[0]
    assert r.sport == ((1024, 65535),) and r.dport == ((20, 21), (990, 990)) and r.action is Action.RESET_CLIENT
    assert pol.action_of(np.array([-1, 0])).tolist() == [Action.ALLOW, Action.RESET_CLIENT]
    # The topology loader hands the parsed mapping with the file name for errors.
    with pytest.raises(ConfigError, match=r"^topo\.yaml: security_policy\.rules\[0\] \(x\): action: "):
        Policy.from_yaml({"security_policy": {"rules": [{"name": "x", "action": "permit"}]}}, name="topo.yaml")
    with pytest.raises(ConfigError, match=r"^<policy>: security_policy\.rules\[0\] \(rule-0\): action: "):
        Policy.from_yaml({"rules": [{"action": "nope"}]})
    with pytest.raises(ConfigError, match=r"^t\.yaml: firewalls\.policy\.rules\[0\] \(rule-0\): action: "):
        Policy.from_yaml({"rules": [{"action": "nope"}]}, name="t.yaml", key="firewalls.policy")


def test_security_policy_names_a_separate_file(tmp_path):
    sub = tmp_path / "pol"
    sub.mkdir()
    _write(sub, "rules: [{name: only, protocol: udp, action: drop}]\n", "fw.yaml")
    topo = _write(tmp_path, "vpcs: {}\nsecurity_policy: pol/fw.yaml\n", "topology.yaml")
    pol = Policy.from_yaml(topo)
    assert pol.rule_names == ["only"] and pol.source == str(sub / "fw.yaml")
    # As the pipeline hands it over: the parsed mapping plus the topology file name.
    pol = Policy.from_yaml({"security_policy": "pol/fw.yaml"}, name=str(topo))
    assert pol.rule_names == ["only"]
    with pytest.raises(ConfigError, match="missing.yaml: cannot read"):
        Policy.from_yaml({"security_policy": "pol/missing.yaml"}, name=str(topo))


def test_all_field_forms():
    pol = Policy.from_yaml({"zones": {"in": ["a", "b"], "out": ["c"]}, "rules": [
        {"name": "n1", "source": ["10.0.0.5", "10.0.0.6/31", "10.0.1.0-10.0.1.9"], "destination": "any",
         "protocol": "any", "port": "any", "action": "drop"},
        {"name": "n2", "protocol": ["tcp", "udp"], "from": ["in", "out"], "to": "out", "action": "reset-server"},
        {"name": "n3", "protocol": "icmp", "from": "any", "action": "reset-both"},
        {"name": "n4", "protocol": "47", "port": 0, "description": "gre", "action": "ALLOW"},
    ]})
    assert pol.rules[0].src == ((0x0A000005, 0x0A000007), (0x0A000100, 0x0A000109))  # coalesced
    assert pol.rules[0].dst == _ANY32 and pol.rules[0].dport == _ANY16 and pol.rules[0].proto == _ANY8
    assert pol.rules[1].proto == ((6, 6), (17, 17))
    assert pol.rules[1].zone_from == ((0, 1),) and pol.rules[1].zone_to == ((1, 1),)
    assert pol.rules[2].proto == ((1, 1),) and pol.rules[2].zone_from == _ANY8
    assert pol.rules[3].proto == ((47, 47),) and pol.rules[3].action is Action.ALLOW
    assert [int(a) for a in Action] == [0, 1, 2, 3, 4, 5]
    assert pol.rules[1].n_boxes() == 2


def test_empty_rules_and_none():
    pol = Policy.from_yaml({"rules": None})
    assert len(pol) == 0 and pol.actions.shape == (0,)
    assert pol.action_of(np.array([-1, -1])).tolist() == [Action.DENY] * 2


BAD_RULES = [
    ({"name": "r", "action": "allow", "sorce": ["1.2.3.4"]}, "sorce", "unknown key"),
    ({"name": "r", "action": "allow", "source": ["10.0.0.300/8"]}, "source", "bad address"),
    ({"name": "r", "action": "allow", "source": ["2001:db8::/32"]}, "source", "not IPv4"),
    ({"name": "r", "action": "allow", "destination": [17]}, "destination", "not a CIDR"),
    ({"name": "r", "action": "allow", "destination": []}, "destination", "empty list"),
    ({"name": "r", "action": "allow", "source": ["10.0.0.9-10.0.0.1"]}, "source", "start after its end"),
    ({"name": "r", "action": "allow", "port": [70000]}, "port", "out of range"),
    ({"name": "r", "action": "allow", "port": ["90-80"]}, "port", "start after its end"),
    ({"name": "r", "action": "allow", "port": ["http"]}, "port", "bad port"),
    ({"name": "r", "action": "allow", "port": [True]}, "port", "not a port"),
    ({"name": "r", "action": "allow", "source_port": ["1-2-3"]}, "source_port", "bad port"),
    ({"name": "r", "action": "allow", "source_port": [1.5]}, "source_port", "bad port"),
    ({"name": "r", "action": "allow", "protocol": "sctpx"}, "protocol", "unknown protocol"),
    ({"name": "r", "action": "allow", "protocol": 256}, "protocol", "out of range"),
    ({"name": "r", "action": "allow", "protocol": "icmp", "port": 80}, "port", "ports need protocol"),
    ({"name": "r", "action": "permit"}, "action", "unknown action"),
    ({"name": "r"}, "action", "missing"),
    ({"name": "r", "action": "allow", "from": ["dmz"]}, "from", "unknown zone"),
    ({"name": "r", "action": "allow", "to": "nowhere"}, "to", "unknown zone"),
    ({"name": "", "action": "allow"}, "name", "bad name"),
]


@pytest.mark.parametrize("rule,field,problem", BAD_RULES)
def test_bad_rule_errors_name_file_rule_and_field(tmp_path, rule, field, problem):
    import yaml

    p = tmp_path / "bad.yaml"
    rules = [{"name": "ok", "action": "allow"}, rule]
    p.write_text(yaml.safe_dump({"security_policy": {"zones": {"inside": ["e1"]}, "rules": rules}}))
    with pytest.raises(ConfigError) as ei:
        Policy.from_yaml(p)
    msg = str(ei.value)
    label = rule.get("name") or "rule-1"
    assert msg.startswith(f"{p}: security_policy.rules[1] ({label}): {field}: "), msg
    assert problem in msg
    assert isinstance(ei.value, ValueError) and isinstance(ei.value, GwlbError)


@pytest.mark.parametrize("text,match", [
    ("rules: [\n  {name: a, action: allow\n", "invalid YAML"),
    ("vpcs: {}\n", "no security_policy"),
    ("- 1\n- 2\n", "no security_policy"),
    ("security_policy: [1, 2]\n", "expected a mapping"),
    ("security_policy: {rules: {a: 1}}\n", r"security_policy\.rules: expected a list"),
    ("security_policy: {rules: [], zonez: {}}\n", r"security_policy\.zonez: unknown key"),
    ("security_policy: {rules: [], default: maybe}\n", r"security_policy\.default: unknown action"),
    ("security_policy: {rules: [], zones: [a]}\n", r"security_policy\.zones: expected a mapping"),
    ("security_policy: {rules: [], zones: {a: [e1], b: [e1]}}\n", r"zones\.b: endpoint 'e1' is already in zone 'a'"),
    ("security_policy: {rules: [], zones: {a: [1]}}\n", r"zones\.a: bad endpoint name"),
    ("security_policy: {rules: [], zones: {any: [e]}}\n", "bad zone name"),
    ("security_policy: {rules: [7]}\n", r"rules\[0\] \(rule-0\): rule: expected a mapping"),
    ("security_policy: {rules: [{name: a, action: allow}, {name: a, action: deny}]}\n",
     r"rules\[1\] \(a\): name: duplicate of rules\[0\]"),
])
def test_file_level_errors(tmp_path, text, match):
    p = _write(tmp_path, text)
    with pytest.raises(ConfigError, match=match) as ei:
        Policy.from_yaml(p)
    assert str(ei.value).startswith(str(p))


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        Policy.from_yaml(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="cannot read"):
        Policy.from_classbench(tmp_path / "absent")


# --------------------------------------------------------------------------- ClassBench

CB = ("@10.0.0.0/8\t192.168.1.7/32\t0 : 65535\t80 : 80\t0x06/0xFF\t0x1000/0x1000\t\n"
      "@0.0.0.0/0\t0.0.0.0/0\t1024 : 2047\t0 : 65535\t0x00/0x00\t0x0000/0x0000\t\n"
      "\n"
      "@1.2.3.77/24\t0.0.0.0/0\t0 : 65535\t0 : 65535\t0x10/0xFE\t0x0000/0x0000\t\n")


def test_classbench_parse(tmp_path):
    p = _write(tmp_path, CB, "cb")
    pol = Policy.from_classbench(p)
    assert len(pol) == 3 and pol.rule_names == ["cb1", "cb2", "cb4"]
    r0, r1, r2 = pol.rules
    assert r0.src == ((0x0A000000, 0x0AFFFFFF),) and r0.dst == ((0xC0A80107, 0xC0A80107),)
    assert r0.sport == _ANY16 and r0.dport == ((80, 80),) and r0.proto == ((6, 6),)
    assert r1.src == _ANY32 and r1.sport == ((1024, 2047),) and r1.proto == _ANY8
    assert r2.src == ((0x01020300, 0x010203FF),)  # host bits masked
    assert r2.proto == ((16, 17),)  # 0x10/0xFE: the low bit is free
    assert (pol.actions == Action.ALLOW).all()
    pol = Policy.from_classbench(p, action="reset-both", default=Action.DROP)
    assert pol.actions.tolist() == [5, 5, 5] and pol.default_action is Action.DROP
    with pytest.raises(ValueError, match="unknown action"):
        Policy.from_classbench(p, action="permit")


def test_classbench_in_place_of_rules(tmp_path):
    _write(tmp_path, CB, "cb")
    p = _write(tmp_path, "security_policy: {rules: cb, default: drop, zones: {z: [e]}}\n")
    pol = Policy.from_yaml(p)
    assert len(pol) == 3 and pol.default_action is Action.DROP and pol.zone_names == ["z"]
    assert pol.source == str(p)


@pytest.mark.parametrize("line,field", [
    ("10.0.0.0/8\t0.0.0.0/0\t0 : 1\t0 : 1\t0x06/0xFF\t", "starting with '@'"),
    ("@10.0.0/8\t0.0.0.0/0\t0 : 1\t0 : 1\t0x06/0xFF\t", "source"),
    ("@10.0.0.0/33\t0.0.0.0/0\t0 : 1\t0 : 1\t0x06/0xFF\t", "source"),
    ("@10.0.0.0/8\t0.0.0.256/0\t0 : 1\t0 : 1\t0x06/0xFF\t", "destination"),
    ("@10.0.0.0/8\t0.0.0.0/0\t5 : 1\t0 : 1\t0x06/0xFF\t", "source_port"),
    ("@10.0.0.0/8\t0.0.0.0/0\t0 : 1\t0 - 1\t0x06/0xFF\t", "port"),
    ("@10.0.0.0/8\t0.0.0.0/0\t0 : 1\t0 : 1\t0x106/0xFF\t", "protocol"),
    ("@10.0.0.0/8\t0.0.0.0/0\t0 : 1\t0 : 1\t", "at least 5"),
])
def test_classbench_errors_name_line_and_field(tmp_path, line, field):
    p = _write(tmp_path, CB + line + "\n", "cb")
    with pytest.raises(ConfigError) as ei:
        Policy.from_classbench(p)
    msg = str(ei.value)
    assert msg.startswith(f"{p}: line 5 (rule 3): ") and field in msg, msg
