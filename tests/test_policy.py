"""Policy loading: YAML (DESIGN.md section 6) and ClassBench files, every error naming file, rule and field."""
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gwlb_fast.errors import ConfigError, GwlbError
from gwlb_fast.inspect.applications import APP_ID, APP_PENDING, APPLICATIONS
from gwlb_fast.inspect.profiles import ThreatAction, UrlAction
from gwlb_fast.inspect.urlcat import UrlCategories
from gwlb_fast.stages.policy import _ANY8, _ANY16, _ANY32, Action, Policy, Rule, _app_default_pairs
from tests.oracles.policy import first_match as content_first_match

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


# --------------------------------------------------------------------------- content fields (issue 11)


CONTENT = {"security_policy": {
    "url_categories": {"blocked": ["*.example.com", "host.test"], "corp": ["corp.example.com"]},
    "profiles": {"ips": {"threat": {"action": "default"}}, "strict": {"threat": {"action": "reset-both"}},
                 "web": {"url_filtering": {"block": ["blocked"], "continue": ["corp"], "alert": ["any"]}},
                 "grp": {"group": ["ips", "web"]}},
    "rules": [
        {"name": "no-blocked", "application": ["web-browsing", "ssl"], "service": "application-default",
         "category": ["blocked"], "profile": ["grp"], "action": "reset-both"},
        {"name": "web", "application": ["web-browsing", "ssl"], "service": "application-default",
         "profile": ["grp"], "action": "allow"},
        {"name": "dns", "application": ["dns"], "action": "allow", "profile": ["ips", "strict"]},
        {"name": "alt-web", "service": ["tcp/8080", "8443"], "action": "allow"},
        {"name": "block-rest", "action": "deny"}]}}


def _cols(dport, proto):
    n = len(dport)
    return {"src_ip": np.full(n, 0x0A010105, np.uint32), "dst_ip": np.full(n, 0x5DB8D822, np.uint32),
            "sport": np.full(n, 40000, np.uint16), "dport": np.array(dport, np.uint16),
            "proto": np.array(proto, np.uint8)}


def test_provisional_then_final_lookup():
    pol = Policy.from_yaml(CONTENT)
    clf = pol.compile()
    assert pol.url_categories.names == ["blocked", "corp", "unknown"]
    cols = _cols([443, 443, 80, 53, 22, 443, 8080, 8443, 8443], [6, 6, 6, 17, 6, 17, 6, 17, 6])
    # First packets: applications pending, no URL: the first rule that may match takes the session.
    assert clf.classify(**cols).tolist() == [0, 0, 0, 2, 2, 2, 2, 2, 2]
    assert clf.classify(**cols, app=np.full(9, APP_PENDING)).tolist() == [0, 0, 0, 2, 2, 2, 2, 2, 2]
    ssl, http, dns, ssh, quic = (APP_ID[a] for a in ("ssl", "web-browsing", "dns", "ssh", "quic"))
    app = np.array([ssl, ssl, http, dns, ssh, quic, http, dns, ssl])
    _, cats = pol.url_categories.categorize(["www.example.com", "news.net", "host.test", None, None, None, None,
                                              None, "corp.example.com"])
    got = clf.classify(**cols, app=app, category=cats)
    # ssl to a blocked host; ssl elsewhere; http to host.test (blocked); dns; ssh: only the catch-all;
    # quic on udp/443: not web-browsing/ssl; http on 8080: alt-web by port; dns on udp/8443 (service 8443 is tcp
    # and udp); ssl on 8443: not a default port of ssl -> alt-web.
    assert got.tolist() == [0, 1, 0, 2, 4, 4, 3, 2, 3]
    # No URL known once the application is final: a rule with a category list no longer matches.
    assert clf.classify(**cols, app=app).tolist() == [1, 1, 1, 2, 4, 4, 3, 2, 3]


def test_url_and_threat_actions_most_severe_wins():
    pol = Policy.from_yaml(CONTENT)
    _, cats = pol.url_categories.categorize(["corp.example.com", "corp.example.com", "other.org", None, "x.example.com"])
    # corp.example.com is both blocked (*.example.com) and corp: block beats continue.
    assert cats[0].tolist()[:2] == [0, 1]
    rule = np.array([1, 2, 1, 1, 4])
    got = pol.url_action(rule, cats)
    assert got.tolist() == [UrlAction.BLOCK, UrlAction.NONE, UrlAction.ALERT, UrlAction.NONE, UrlAction.NONE]
    # Only corp: continue.  Default rule (len(rules)) and -1: no profile.
    assert pol.url_action(np.array([1, 5, -1]), np.array([1, 1, 1])).tolist() == [UrlAction.CONTINUE, 0, 0]
    sig = np.array([0, 1, 2, 0, 2])  # alert, drop, reject
    rule = np.array([0, 2, 0, 4, 2])
    # grp -> ips (default): the signature's own action; dns -> ips + strict: reset-both unless the signature is
    # more severe (drop); no profile: none.
    assert pol.threat_action(rule, sig).tolist() == [ThreatAction.ALERT, ThreatAction.DROP, ThreatAction.RESET_CLIENT,
                                                     ThreatAction.NONE, ThreatAction.RESET_BOTH]
    with pytest.raises(ValueError, match="rule_index"):
        pol.url_action(np.array([9]), np.array([0]))
    # Per-severity actions: critical signatures are blocked at the source, informational ones not acted on.
    sev_pol = Policy.from_yaml({"security_policy": {
        "profiles": {"v": {"threat": {"action": "alert", "severity": {"critical": "block-ip",
                                                                      "informational": "allow"}}}},
        "rules": [{"name": "r", "profile": ["v"], "action": "allow"}]}})
    got = sev_pol.threat_action(np.zeros(4, int), np.array([0, 0, 1, 0]), np.array([4, 0, 0, 5]))
    assert got.tolist() == [ThreatAction.BLOCK_IP, ThreatAction.NONE, ThreatAction.NONE, ThreatAction.ALERT]
    with pytest.raises(ConfigError, match="severity.severe: unknown severity"):
        Policy.from_yaml({"security_policy": {"profiles": {"v": {"threat": {"severity": {"severe": "drop"}}}},
                                              "rules": []}})
    with pytest.raises(ValueError, match="category"):
        pol.url_action(np.array([0]), np.array([7]))


_APPS = [APP_PENDING, APP_ID["web-browsing"], APP_ID["ssl"], APP_ID["dns"], APP_ID["ssh"], APP_ID["unknown-tcp"],
         APP_ID["incomplete"], APP_ID["quic"]]
_DPORTS = [22, 53, 80, 443, 8080]


@st.composite
def _content_rule(draw, ncat):
    apps = draw(st.one_of(st.none(), st.lists(st.sampled_from(_APPS[1:]), min_size=1, max_size=3)))
    apps = None if apps is None else tuple(sorted(set(apps)))
    service = draw(st.sampled_from(["any", "application-default", "ports"]))
    l4 = None
    if service == "ports":
        ports = draw(st.lists(st.sampled_from(_DPORTS), min_size=1, max_size=3))
        l4 = tuple(sorted({(pr, (p, p)) for p in ports for pr in draw(st.sampled_from([((6, 6),), ((17, 17),),
                                                                                    ((6, 6), (17, 17))]))}))
    elif service == "application-default" and apps is not None:
        l4 = _app_default_pairs(apps)
    cat = draw(st.one_of(st.none(), st.lists(st.integers(0, ncat - 1), min_size=1, max_size=2)))
    dport = draw(st.sampled_from([_ANY16, ((53, 53),), ((80, 443),)])) if service == "any" else _ANY16
    return Rule("r", _ANY32, draw(st.sampled_from([_ANY32, ((0, 0x7FFFFFFF),)])), _ANY16, dport,
                draw(st.sampled_from([_ANY8, ((6, 6),), ((17, 17),)])), _ANY8, _ANY8, Action.ALLOW,
                application=apps, service=service, l4=l4, category=None if cat is None else tuple(sorted(set(cat))))


@settings(max_examples=80)
@given(data=st.data(), ncat=st.integers(1, 70))
def test_hypothesis_content_rules_match_oracle(data, ncat):
    rules = data.draw(st.lists(_content_rule(ncat), min_size=0, max_size=25))
    rules = [r._replace(name=f"r{i}") for i, r in enumerate(rules)]
    cats = UrlCategories({f"c{i}": [f"h{i}.test"] for i in range(ncat - 1)})
    assert len(cats) == ncat
    pol = Policy(rules, url_categories=cats)
    clf = pol.compile(binth=data.draw(st.sampled_from([1, 2, 8])), partition=data.draw(st.booleans()))
    n = 200
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    cols = {"src_ip": rng.integers(0, 2**32, n, dtype=np.uint32),
            "dst_ip": rng.choice(np.array([1, 0x80000000], np.uint32), n),
            "sport": rng.integers(0, 2**16, n, dtype=np.uint16),
            "dport": rng.choice(np.array(_DPORTS, np.uint16), n),
            "proto": rng.choice(np.array([6, 17], np.uint8), n)}
    app = rng.choice(np.array(_APPS + [len(APPLICATIONS) + 3], np.uint16), n)
    k = data.draw(st.integers(1, 3))
    cat = rng.integers(-1, ncat, (n, k)).astype(np.int32)
    cat[rng.random(n) < 0.3] = -1
    got = clf.classify(**cols, app=app, category=cat)
    want = [content_first_match(rules, *(int(cols[c][i]) for c in ("src_ip", "dst_ip", "sport", "dport", "proto")),
                                app=int(app[i]), cats=[int(c) for c in cat[i]]) for i in range(n)]
    assert got.tolist() == want
    # app=None / category=None: every application pending, no URL known.
    got_none = clf.classify(**cols)
    want_none = [content_first_match(rules, *(int(cols[c][i]) for c in ("src_ip", "dst_ip", "sport", "dport",
                                                                          "proto"))) for i in range(n)]
    assert got_none.tolist() == want_none
    np.testing.assert_array_equal(clf.classify(**cols, app=np.full(n, APP_PENDING)), got_none)


def test_policy_without_content_rules_builds_the_same_tree():
    pol = Policy.from_yaml({"security_policy": {"rules": [
        {"name": "a", "protocol": "tcp", "port": [80, 443], "action": "allow"}, {"name": "b", "action": "deny"}]}})
    assert pol._constraint_tables() == {}
    cols = _cols([80, 22], [6, 6])
    app = np.array([APP_ID["ssh"], APP_ID["ssh"]])
    assert pol.compile().classify(**cols, app=app, category=np.array([0, -1])).tolist() == [0, 1]


@pytest.mark.parametrize("rule, field, problem", [
    ({"application": ["nope"], "action": "allow"}, "application", "unknown application 'nope'"),
    ({"application": ["pending"], "action": "allow"}, "application", "unknown application 'pending'"),
    ({"application": [], "action": "allow"}, "application", "empty list"),
    ({"service": "tcp/x", "action": "allow"}, "service", "bad port"),
    ({"service": "icmp/3", "action": "allow"}, "service", "protocol tcp or udp"),
    ({"service": ["any", 80], "action": "allow"}, "service", "cannot be mixed"),
    ({"service": [80], "port": 80, "action": "allow"}, "service", "either as 'port' or as 'service'"),
    ({"category": ["nope"], "action": "allow"}, "category", "unknown URL category 'nope'"),
    ({"profile": ["nope"], "action": "allow"}, "profile", "unknown security profile or group 'nope'"),
])
def test_content_field_errors(rule, field, problem):
    data = {"security_policy": {"url_categories": {"blocked": ["x.test"]}, "rules": [dict(rule, name="r")]}}
    with pytest.raises(ConfigError) as exc:
        Policy.from_yaml(data, name="topo.yaml")
    msg = str(exc.value)
    assert msg.startswith(f"topo.yaml: security_policy.rules[0] (r): {field}: "), msg
    assert problem in msg, msg


@pytest.mark.parametrize("policy, where, problem", [
    ({"profiles": {"p": {"threat": {"action": "explode"}}}}, "profiles.p.threat.action", "unknown action"),
    ({"profiles": {"p": {"url_filtering": {"block": ["nope"]}}}}, "profiles.p.url_filtering.block",
     "unknown URL category 'nope'"),
    ({"profiles": {"p": {"url_filtering": {"block": ["any"], "alert": ["any"]}}}}, "profiles.p.url_filtering.alert",
     "already has action"),
    ({"profiles": {"p": {"url_filtering": {"smash": ["any"]}}}}, "profiles.p.url_filtering.smash", "unknown action"),
    ({"profiles": {"g": {"group": ["nope"]}}}, "profiles.g.group", "unknown profile 'nope'"),
    ({"profiles": {"p": {"colour": "red"}}}, "profiles.p", "expected one of"),
    ({"url_categories": {"c": ["exa*mple.com"]}}, "url_categories.c", "only character of its token"),
    ({"url_categories": {"c": ["example.com/^"]}}, "url_categories.c", "'^' cannot be used after a '/'"),
    ({"url_categories": {"c": []}}, "url_categories.c", "non-empty list"),
    ({"signatures": [5]}, "signatures[0]", "expected a file name"),
    ({"tcp_reject_non_syn": "yes"}, "tcp_reject_non_syn", "true or false"),
    ({"panos": "x.xml", "rules": []}, "rules", "not allowed with 'panos'"),
])
def test_content_key_errors(policy, where, problem):
    with pytest.raises(ConfigError) as exc:
        Policy.from_yaml({"security_policy": dict(policy, **({} if "rules" in policy else {"rules": []}))},
                         name="topo.yaml")
    msg = str(exc.value)
    assert msg.startswith(f"topo.yaml: security_policy.{where}: "), msg
    assert problem in msg, msg


def test_signature_files_and_database_relative_to_the_topology(tmp_path):
    (tmp_path / "cats.csv").write_text("domain,category\nexample.org,news\nads.example.org,ads\n")
    topo = _write(tmp_path, """
        security_policy:
          signatures: [threats.rules, /abs/other.rules]
          url_database: cats.csv
          rules:
            - {name: r, category: [news], action: allow}
        """, "topology.yaml")
    pol = Policy.from_yaml(topo)
    assert pol.signature_files == [tmp_path / "threats.rules", Path("/abs/other.rules")]
    assert pol.url_categories.names == ["news", "ads", "unknown"]
    prim, _ = pol.url_categories.categorize(["www.example.org", "x.ads.example.org", "elsewhere.net"])
    assert prim.tolist() == [0, 1, 2]
    assert pol.rules[0].category == (0,)


_octet_text = st.one_of(st.integers(0, 300).map(str), st.sampled_from(["00", "01", "007", "0255", "", "x", "+1"]))


@settings(max_examples=400, deadline=None)
@given(st.lists(_octet_text, min_size=3, max_size=5),
       st.one_of(st.none(), st.integers(0, 40).map(str), st.sampled_from(["08", "", "255.255.0.0", "0.0.0.255", "x"])))
def test_addresses_parse_as_ipaddress_does(octets, prefix):
    """Rule addresses in dotted-quad form (parsed without ipaddress) give the ranges, or the error, that
    ipaddress.ip_network(strict=False) gives."""
    import ipaddress

    from gwlb_fast.stages.policy import _parse_addr, _RuleError

    text = ".".join(octets) + ("" if prefix is None else f"/{prefix}")
    try:
        net = ipaddress.ip_network(text, strict=False)
        want = ((int(net.network_address), int(net.broadcast_address)),)
    except ValueError:
        want = None
    try:
        got = _parse_addr("source", text)
    except _RuleError:
        got = None
    assert got == want
