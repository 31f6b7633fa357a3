"""``gwlb-fast explain`` (DESIGN.md section 11) agrees with ``run``: for the first packet of every flow of the demo
capture and of two real captures, the firewall, the rule, the fate and the packet as delivered (its NAT
translation) are those of a full ``run`` of the same capture."""
import importlib.resources
import json

import numpy as np
import pytest

from gwlb_fast.cli import main
from gwlb_fast.explain import explain_flow, explain_packets, parse_flow
from gwlb_fast.outputs.report import ip_str
from gwlb_fast.pcapio import read_pcap, write_pcap
from gwlb_fast.pipeline import STAGES, Pipeline
from gwlb_fast.status import PktStatus
from gwlb_fast.synth import generate

from .shared_data import data_path

EXAMPLE = str(importlib.resources.files("gwlb_fast") / "examples" / "topology.yaml")
REAL = data_path("captures", "real")


class Outcomes:
    """Observer: what ``run`` did to every input packet."""

    def __init__(self):
        self.parts = []

    def chunk(self, pipe, batch, res):
        n = len(batch)
        out = {k: np.full(n, -1, np.int64) for k in ("src", "sport", "dst", "dport")}
        dv = np.flatnonzero(res.delivered != 0)
        resets_out = res.resets is not None and bool((res.resets.delivered != 0).any())
        if not resets_out and dv.size == len(res.output):
            o = res.output.copy().parse()
            for k, col in (("src", o.src_ip), ("sport", o.sport), ("dst", o.dst_ip), ("dport", o.dport)):
                out[k][dv] = col
        self.parts.append({"stage": res.stage.copy(), "status": res.status.copy(), "fw": res.fw.copy(),
                           "rule": res.rule.copy(), "delivered": res.delivered.copy(), **out})

    def table(self):
        return {k: np.concatenate([p[k] for p in self.parts]) for k in self.parts[0]}


def _first_packets(capture) -> list[int]:
    """1-based numbers of the first packet of every flow (either direction) among the parsed IPv4 packets."""
    cols = []
    for b in read_pcap(capture):
        ok = b.status == PktStatus.OK
        a = np.minimum(b.src_ip, b.dst_ip).astype(np.int64)
        z = np.maximum(b.src_ip, b.dst_ip).astype(np.int64)
        fwd = b.src_ip <= b.dst_ip
        pa = np.where(fwd, b.sport, b.dport).astype(np.int64)
        pz = np.where(fwd, b.dport, b.sport).astype(np.int64)
        cols.append(np.stack([a, z, pa, pz, b.proto.astype(np.int64), ok.astype(np.int64)], axis=1))
    k = np.concatenate(cols)
    idx = np.flatnonzero(k[:, 5] == 1)
    _, first = np.unique(k[idx, :5], axis=0, return_index=True)
    return (np.sort(idx[first]) + 1).tolist()


def _agree(topology, capture, numbers):
    obs = Outcomes()
    pipe = Pipeline.from_yaml(topology)
    pipe.run(capture, observers=[obs])
    t = obs.table()
    names = [n for insp in pipe.gwlbs.values() for n in insp.cfg.firewall_names]
    rules = list(pipe.policy.rule_names) + ["default"]
    got = explain_packets(topology, capture, numbers)
    checked = 0
    for n in numbers:
        ex, i = got[n], n - 1
        fw = int(t["fw"][i])
        assert ex.firewall == (names[fw] if fw >= 0 else None), (n, ex.hops)
        r = int(t["rule"][i])
        assert ex.rule == (rules[r] if r >= 0 else None), (n, ex.hops)
        st = int(t["stage"][i])
        if st != 255:
            assert ex.drop == {"stage": STAGES[st], "reason": PktStatus(int(t["status"][i])).name}, (n, ex.hops)
            assert ex.delivered is None and ex.out is None
        else:
            assert ex.drop is None
            assert ex.delivered == {1: "internet", 2: "host"}[int(t["delivered"][i])], (n, ex.hops)
            if t["src"][i] >= 0:
                assert (ex.out["src_ip"], ex.out["src_port"], ex.out["dst_ip"], ex.out["dst_port"]) == \
                    (ip_str(t["src"][i]), int(t["sport"][i]), ip_str(t["dst"][i]), int(t["dport"][i])), n
                checked += 1
        assert ex.hops and ex.fate
    return got, checked


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    d = tmp_path_factory.mktemp("demo")
    cap = d / "input.pcap"
    write_pcap(cap, generate(flows=1000, packets=100_000, seed=0))  # what `gwlb-fast demo` replays
    return cap


def test_explain_agrees_with_run_for_every_flow_of_the_demo(demo):
    numbers = _first_packets(demo)
    assert len(numbers) >= 1000
    # and a sample of later packets: established flows, replies, packets of the failed firewall's flows
    numbers = sorted(set(numbers) | set(range(1, 100_001, 97)))
    got, checked = _agree(EXAMPLE, demo, numbers)
    assert checked > 500  # the delivered first packets' translations were compared
    fates = {(e.drop or {}).get("reason", e.delivered) for e in got.values()}
    assert {"internet", "host", "POLICY_DENY", "FW_FAILED"} <= fates  # every kind of answer was exercised
    # the answers name the choices: Maglev slot and the Geneve options of every inspected packet
    inspected = [e for e in got.values() if e.firewall is not None]
    assert inspected and all(any("Maglev slot" in h for h in e.hops) for e in inspected)
    geneve = [s["geneve"] for e in inspected for s in e.steps if "geneve" in s]
    assert len(geneve) >= len(inspected)
    assert {g["endpoint_id"] for g in geneve} == {"0x0a1b2c3d4e5f6071"}
    assert {g["outer_dst"] for g in geneve} <= {"10.0.1.11", "10.0.1.12", "10.0.1.13"}


@pytest.mark.parametrize("name", ["http_espn.pcapng", "tcp_ports.pcapng"])
def test_explain_agrees_with_run_on_real_captures(name, tmp_path):
    cap = REAL / name
    if not cap.exists():
        pytest.skip("no real captures")
    topo = tmp_path / "t.yaml"
    assert main(["init", str(cap), "-o", str(topo), "--quiet"]) == 0
    numbers = _first_packets(cap)
    got, checked = _agree(topo, cap, numbers)
    assert checked == len(numbers)  # every flow's first packet was delivered, and compared as delivered
    assert all(e.nat is not None for e in got.values())  # each crossed the NAT gateway


def test_explain_flow_cli(capsys):
    assert main(["explain", EXAMPLE, "--flow", "tcp 10.1.1.5:40000 > 93.184.216.34:443"]) == 0
    text = capsys.readouterr().out
    for want in ("route table app", "0.0.0.0/0 via gwlbe:gwlbe-a", "Maglev slot", "Geneve", "type 3 flow cookie",
                 "rule allow-web-out (allow)", "later rules it shadows: block-rest", "SNAT source 10.1.1.5:40000",
                 "delivered to the Internet"):
        assert want in text, want
    assert main(["explain", EXAMPLE, "--flow", "udp 10.1.1.5:40000 > 93.184.216.34:5000", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["drop"] == {"stage": "firewall", "reason": "POLICY_DENY"} and d["rule"] == "block-rest"
    step = next(s for s in d["steps"] if s["step"] == "inspect")
    assert step["earlier"] == ["allow-web-out", "allow-dns", "allow-https-in"]


def test_explain_at_a_time_sees_the_event():
    # the example's fw-2 fails at 5 s: a flow that Maglev gives fw-2 goes elsewhere after it
    before = [explain_flow(EXAMPLE, f"tcp 10.1.1.9:{p} > 93.184.216.34:443", at=0.0) for p in range(40000, 40040)]
    on2 = [p for p, e in zip(range(40000, 40040), before) if e.firewall == "fw-2"]
    assert on2
    after = explain_flow(EXAMPLE, f"tcp 10.1.1.9:{on2[0]} > 93.184.216.34:443", at=6.0)
    assert after.firewall not in (None, "fw-2")
    assert any("fw-2 unhealthy" in h for h in after.hops) and any("full-fleet owner is fw-2" in h for h in after.hops)


def test_explain_errors(capsys, tmp_path):
    assert main(["explain", EXAMPLE, "--flow", "tcp 10.1.1.5 > 1.2.3.4"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gwlb-fast: --flow:") and err.count("\n") == 1
    cap = tmp_path / "c.pcap"
    write_pcap(cap, generate(flows=2, packets=10, seed=1))
    assert main(["explain", EXAMPLE, "--capture", str(cap), "--packet", "11"]) == 2
    assert "no packet 11" in capsys.readouterr().err
    assert main(["explain", EXAMPLE, "--packet", "1"]) == 2
    capsys.readouterr()
    from gwlb_fast.errors import ConfigError

    with pytest.raises(ConfigError):
        parse_flow("sctp 1.2.3.4:1 > 5.6.7.8:2")
