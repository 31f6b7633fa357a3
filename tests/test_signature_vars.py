"""Signature variables (``security_policy.vars``): the topology's keys, defaults (HOME_NET = the VPC CIDRs,
EXTERNAL_NET = !$HOME_NET), file:line errors for unknown variables, cycles and bad values, and agreement with
Suricata given the same variables on its command line (skipped without suricata)."""
import json
import shutil
import subprocess

import pytest
import yaml

import gwlb_fast as gf
from gwlb_fast.config import load_topology
from gwlb_fast.errors import ConfigError
from gwlb_fast.inspect.inspector import inspect_flows
from gwlb_fast.inspect.signatures import SignatureError, parse_rules, signature_vars
from gwlb_fast.pipeline import Pipeline
from gwlb_fast.stages.policy import Policy
from tests.shared_data import REPO, data_path
from tests.test_appid import flow_key

TOPO = REPO / "tests" / "data" / "inspect" / "espn.yaml"
ESPN = data_path("captures", "real", "http_espn.pcapng")

RULES = """\
alert tcp $HOME_NET any -> $EXTERNAL_NET $HTTP_PORTS (msg:"get out"; flow:to_server; content:"GET /"; sid:1;)
alert tcp $EXTERNAL_NET $HTTP_PORTS -> $WEB_CLIENTS any (msg:"html in"; flow:to_client; content:"<html"; nocase; sid:2;)
alert udp $HOME_NET any -> $DNS_SERVERS 53 (msg:"dns out"; content:"espn"; sid:3;)
alert tcp !$HOME_NET any -> any any (msg:"from outside"; content:"HTTP/1.1"; sid:4;)
alert tcp any any -> $HOME_NET !$HTTP_PORTS (msg:"to home, not http"; content:"HTTP/1.1"; sid:5;)
alert tcp $NOT_THE_CLIENT any -> any $HTTP_PORTS (msg:"nobody"; content:"Host|3a|"; sid:6;)
alert tcp $HOME_NET any -> any [$HTTP_PORTS,443] (msg:"web out"; content:"Host|3a|"; sid:7;)
"""
VARS = {"HOME_NET": ["172.16.0.0/16"], "HTTP_PORTS": [80, 8080], "WEB_CLIENTS": "$HOME_NET",
        "NOT_THE_CLIENT": ["$WEB_CLIENTS", "!172.16.0.122"], "DNS_SERVERS": "any"}


def topology(tmp_path, text: str):
    """espn.yaml with ``security_policy.vars`` given as YAML text (so that errors have a line to name)."""
    data = yaml.safe_load(TOPO.read_text())
    shutil.copy(TOPO.parent / "espn.rules", tmp_path / "espn.rules")
    body = yaml.safe_dump(data, sort_keys=False)
    body = body.replace("security_policy:\n", "security_policy:\n  vars:\n" + "".join(
        f"    {ln}\n" for ln in text.splitlines()), 1)
    p = tmp_path / "topo.yaml"
    p.write_text(body)
    return p


def test_values_lists_nesting_and_defaults():
    v = signature_vars({"HTTP_PORTS": [80, "8000:8100"], "WEB": ["$APP", ["10.2.0.0/16", "!10.2.0.1"]],
                        "APP": "10.1.1.0/24"}, home_net=["10.1.0.0/16", "10.2.0.0/16"])
    assert v == {"HOME_NET": "[10.1.0.0/16,10.2.0.0/16]", "HTTP_PORTS": "[80,8000:8100]",
                 "WEB": "[$APP,[10.2.0.0/16,!10.2.0.1]]", "APP": "10.1.1.0/24"}
    (sig,) = parse_rules('alert tcp $WEB any -> $EXTERNAL_NET $HTTP_PORTS (content:"a"; sid:1;)', vars_=v)
    assert sig.src == [(0x0A010100, 0x0A0101FF), (0x0A020000, 0x0A020000), (0x0A020002, 0x0A02FFFF)]
    assert sig.dst == [(0, 0x0A00FFFF), (0x0A030000, 0xFFFFFFFF)]       # !$HOME_NET
    assert sig.dst_ports == [(80, 80), (8000, 8100)]
    # the topology's own HOME_NET wins over the default from the VPC CIDRs
    assert signature_vars({"HOME_NET": "192.0.2.0/24"}, home_net=["10.0.0.0/8"]) == {"HOME_NET": "192.0.2.0/24"}


def test_home_net_defaults_to_the_vpc_cidrs(tmp_path):
    topo = topology(tmp_path, "HTTP_PORTS: [80, 8080]")
    pipe = Pipeline.from_yaml(topo)
    assert pipe.policy.signature_vars == {"HOME_NET": "[172.16.0.0/16]", "HTTP_PORTS": "[80,8080]"}
    assert load_topology(topo).vpc_cidrs() == ["172.16.0.0/16"]
    # without a topology (a bare policy), Suricata's default stands
    pol = Policy.from_yaml({"rules": [], "vars": {"HTTP_PORTS": 8080}})
    assert pol.signature_vars == {"HTTP_PORTS": "8080"}


@pytest.mark.parametrize("text,needle", [
    ("A: $B\nB: [$C]\nC: $A", (r"topo.yaml:\d+: security_policy.vars.A: variable \$B refers to itself "
                                r"\(\$B -> \$C -> \$A -> \$B\)")),
    ("HTTP_PORTS: [80, $WEB_PORTS]", r"topo.yaml:\d+: security_policy.vars.HTTP_PORTS: unknown variable \$WEB_PORTS"),
    ("HOME_NET: [10.0.0.0/8, 10.300.0.0/16]", r"topo.yaml:\d+: security_policy.vars.HOME_NET: not an IPv4 address"),
    ("PORTS: [80, 70000]", r"topo.yaml:\d+: security_policy.vars.PORTS: .*bad port range '70000'"),
    ("X: []", r"topo.yaml:\d+: security_policy.vars.X: empty list"),
    ("X: true", r"topo.yaml:\d+: security_policy.vars.X: expected an address"),
    ("$X: 80", r"security_policy.vars: '\$X': a variable name"),
])
def test_bad_vars_are_refused_with_file_and_line(tmp_path, text, needle):
    topo = topology(tmp_path, text)
    with pytest.raises(ConfigError, match=needle) as exc:
        Pipeline.from_yaml(topo)
    line = exc.value.args[0].split(":")[1]
    if line.isdigit():   # the line named holds the variable
        name = exc.value.args[0].split("security_policy.vars.")[1].split(":")[0]
        assert topo.read_text().splitlines()[int(line) - 1].strip().startswith(name + ":")


def test_rule_with_an_undefined_variable_names_the_rule_file(tmp_path):
    topo = topology(tmp_path, "WEB: $HOME_NET")
    (tmp_path / "espn.rules").write_text('alert tcp $WEB any -> $DB any (content:"x"; sid:1;)\n')
    with pytest.raises(SignatureError, match=r"espn.rules:1: unknown variable \$DB"):
        Pipeline.from_yaml(topo)


def suricata_alerts(pcap, rules, outdir, vars_):
    sets = []
    for name, value in vars_.items():
        group = "port-groups" if name.endswith("_PORTS") else "address-groups"
        sets += ["--set", f"vars.{group}.{name}={value}"]
    subprocess.run(["suricata", "-r", str(pcap), "-S", str(rules), "-l", str(outdir), "-k", "none", "--runmode",
                    "single", *sets], check=True, capture_output=True, timeout=120)
    out = set()
    for ln in (outdir / "eve.json").read_text().splitlines():
        ev = json.loads(ln)
        if ev.get("event_type") == "alert":
            p = {"TCP": 6, "UDP": 17}.get(ev["proto"], 0)
            out.add((ev["alert"]["signature_id"],) + flow_key(p, ev["src_ip"], ev["src_port"], ev["dest_ip"],
                                                               ev["dest_port"]))
    return out


@pytest.mark.skipif(shutil.which("suricata") is None or not ESPN.exists(), reason="suricata or the capture absent")
def test_variables_agree_with_suricata(tmp_path):
    v = signature_vars(VARS)
    rules = tmp_path / "vars.rules"
    rules.write_text(RULES)
    theirs = suricata_alerts(ESPN, rules, tmp_path, v)
    al = []
    inspect_flows(gf.read_pcap(ESPN), signatures=parse_rules(RULES, vars_=v), alerts=al)
    ours = {(a["sid"],) + flow_key(a["proto"], a["client_ip"], a["client_port"], a["server_ip"], a["server_port"])
            for a in al}
    assert ours == theirs
    assert {a[0] for a in ours} == {1, 2, 3, 4, 5, 7}     # every rule but the one no address satisfies
