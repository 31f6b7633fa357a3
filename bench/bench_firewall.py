"""Firewall stage (decap, sessions, policy, state machine, echo + RSTs) vs a pure-Python/dpkt stateful firewall."""
import sys
from pathlib import Path

import numpy as np
import pytest

from gwlb_fast import geneve, synth
from gwlb_fast.stages.firewall import Firewall
from gwlb_fast.stages.policy import Policy
from gwlb_fast.status import PktStatus

sys.path.insert(0, str(Path(__file__).parent))  # bench/baselines.py (pytest runs with --import-mode=importlib)
from baselines import dpkt_firewall

N = 65_536
FLOWS = 4_000
EP = 0x0A1B2C3D4E5F6071
POLICY = {
    "zones": {"gwlb": ["gwlbe-a"]},
    "rules": [
        {"name": "allow-web-out", "source": ["10.1.1.0/24"], "destination": ["any"], "protocol": "tcp",
         "port": [80, 443], "action": "allow"},
        {"name": "allow-dns", "source": ["10.1.1.0/24"], "protocol": "udp", "port": [53], "action": "allow"},
        {"name": "allow-https-in", "destination": ["10.1.1.20/32"], "protocol": "tcp", "port": [8443],
         "action": "allow"},
        {"name": "reset-ssh", "protocol": "tcp", "port": [22], "action": "reset-both"},
        {"name": "block-rest", "action": "deny"},
    ],
}
GROUP = f"firewall stage, {N} packets, {FLOWS} flows (synthetic mix, new sessions)"


@pytest.fixture(scope="module")
def setup():
    policy = Policy.from_yaml(POLICY)
    classifier = policy.compile()
    inner = synth.generate(flows=FLOWS, packets=N, seed=1)
    wire = geneve.encap(inner, endpoint_id=EP, attachment_id=1, cookie=7)
    assert len(wire) == N
    return policy, classifier, wire


def _new_fw(policy, classifier):
    return Firewall("fw-1", 0, policy, {EP: "gwlb"}, session_capacity=1 << 16, classifier=classifier)


def test_firewall_process(benchmark, rate, setup):
    policy, classifier, wire = setup
    benchmark.group = GROUP
    out = benchmark.pedantic(lambda fw: fw.process(wire), setup=lambda: ((_new_fw(policy, classifier),), {}),
                             rounds=7, iterations=1)
    assert out.counts[PktStatus.OK] > N // 2 and out.counts[PktStatus.POLICY_DENY] > 0
    assert len(out.wire) >= out.counts[PktStatus.OK]
    rate(N, wire.nbytes)


@pytest.fixture(scope="module")
def steady():
    """Two halves of one capture: the first half opens the sessions, the second half is timed."""
    policy = Policy.from_yaml(POLICY)
    classifier = policy.compile()
    inner = synth.generate(flows=FLOWS, packets=2 * N, seed=2)
    wire = geneve.encap(inner, endpoint_id=EP, attachment_id=1, cookie=7)
    return policy, classifier, wire[:N].compact(), wire[N:].compact()


def _warm(policy, classifier, first):
    fw = _new_fw(policy, classifier)
    fw.process(first)
    return (fw,), {}


def test_firewall_process_established(benchmark, rate, steady):
    policy, classifier, first, second = steady
    benchmark.group = f"firewall stage, {N} packets, second half of a {2 * N}-packet capture (sessions open)"
    out = benchmark.pedantic(lambda fw: fw.process(second), setup=lambda: _warm(policy, classifier, first),
                             rounds=5, iterations=1)
    assert out.counts[PktStatus.OK] > N // 2
    rate(N, second.nbytes)


def test_firewall_dpkt_python_established(benchmark, rate, steady):
    policy, _, first, second = steady
    benchmark.group = f"firewall stage, {N} packets, second half of a {2 * N}-packet capture (sessions open)"
    rules = [[list(f) for f in r.fields()] for r in policy.rules]
    actions = [int(a) for a in policy.actions]
    f1, f2 = first.packets(), second.packets()

    def warm():
        state: dict = {}
        dpkt_firewall(f1, rules, actions, int(policy.default_action), {EP: 0}, state)
        return (state,), {}

    benchmark.pedantic(lambda state: dpkt_firewall(f2, rules, actions, int(policy.default_action), {EP: 0}, state),
                       setup=warm, rounds=3, iterations=1)
    rate(N, second.nbytes)


def test_firewall_dpkt_python(benchmark, rate, setup):
    policy, _, wire = setup
    benchmark.group = GROUP
    frames = wire.packets()
    rules = [[list(f) for f in r.fields()] for r in policy.rules]
    actions = [int(a) for a in policy.actions]
    out = benchmark.pedantic(lambda: dpkt_firewall(frames, rules, actions, int(policy.default_action), {EP: 0}, {}),
                             rounds=3, iterations=1)
    # same frames back as the batched firewall
    fw = _new_fw(policy, None)
    ref = fw.process(wire)
    assert len(out) == len(ref.wire)
    echo = np.flatnonzero(ref.kind == 0)
    assert all(out[j] == ref.wire.packet(int(j)) for j in echo[:2000])
    rst = np.flatnonzero(ref.kind != 0)
    assert rst.shape[0] > 0
    assert all(out[j][82:] == ref.wire.packet(int(j))[82:] for j in rst[:2000])  # same inner RSTs
    rate(N, wire.nbytes)
