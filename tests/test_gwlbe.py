"""The GWLB endpoint's round trip: GWLBe -> GWLB ==Geneve==> firewall ==Geneve==> GWLB -> GWLBe."""
import copy

import numpy as np
import pytest
import yaml

from gwlb_fast import synth
from gwlb_fast.config import example_topology_text, topology_from_dict
from gwlb_fast.stages.gwlbe import Gwlbe, Inspection
from gwlb_fast.stages.policy import Policy
from gwlb_fast.status import PktStatus

EXAMPLE = yaml.safe_load(example_topology_text())


def _parts(**changes):
    d = copy.deepcopy(EXAMPLE)
    d["gwlb"]["gwlb-1"].update(changes)
    topo = topology_from_dict(d, "t.yaml")
    policy = Policy.from_yaml({"security_policy": topo.security_policy}, name="t.yaml")
    ep = Gwlbe.from_config(topo.endpoints["gwlbe-a"], 0)
    return topo, policy, ep


def _inspect(keep_taps, batch, **changes):
    topo, policy, ep = _parts(**changes)
    insp = Inspection(topo.gwlbs["gwlb-1"], policy, {ep.id: "gwlb"}, keep_taps=keep_taps, session_capacity=1 << 14)
    return insp, insp.inspect(batch, ep)


@pytest.fixture(scope="module")
def business_side():
    """Packets as the GWLBe receives them from route tables (private addresses), parsed, in time order."""
    b, truth = synth.generate_with_truth(flows=120, packets=6000, seed=5)
    b.parse()
    return b, truth


def test_echo_built_or_not_gives_the_same_outcome(business_side):
    """Without taps the firewall's echoed frames are not materialized; every verdict must stay the same."""
    b, _ = business_side
    _, with_echo = _inspect(True, b.copy())
    _, without = _inspect(False, b.copy())
    assert np.array_equal(with_echo.status, without.status)
    assert np.array_equal(with_echo.fw_index, without.fw_index)
    assert with_echo.generated.packets() == without.generated.packets()
    assert with_echo.from_fw and not without.from_fw


def test_round_trip_verdicts(business_side):
    b, truth = business_side
    _, res = _inspect(True, b.copy())
    ok = res.status == PktStatus.OK
    denied = truth.denied[truth.flow]
    outbound = ~truth.inbound[truth.flow]  # inbound flows would need the NAT gateway's DNAT first
    # allowed flows come back, denied ones stop at the firewall (the replies too: their session is denied)
    assert ok[~denied & outbound].all()
    assert not ok[denied].any()
    assert res.by_firewall[denied].all()
    # every packet of an outbound flow went to one firewall, and all three were used (inbound flows are seen
    # here before DNAT, so their two directions are two different 5-tuples)
    took = (res.fw_index >= 0) & outbound
    fw = res.fw_index[took]
    flows = truth.flow[took]
    per_flow = {f: set(fw[flows == f].tolist()) for f in np.unique(flows).tolist()}
    assert all(len(s) == 1 for s in per_flow.values())
    assert set(fw.tolist()) == {0, 1, 2}
    # the Geneve frames that went out carry this endpoint and come back echoed, cookie and all
    sent = res.to_fw[0]
    back = res.from_fw
    assert (sent.endpoint_id == 0x0A1B2C3D4E5F6071).all()
    cookies_back = np.concatenate([w.flow_cookie for w in back])
    assert set(cookies_back.tolist()) <= set(sent.flow_cookie.tolist())


def test_failed_firewall_keep_drops_at_the_gwlb(business_side):
    b, _ = business_side
    insp, _ = _inspect(False, b[:3000].copy())
    insp.set_health("fw-2", "unhealthy", int(b.ts_ns[3000]))
    ep = Gwlbe.from_config(topology_from_dict(EXAMPLE, "t.yaml").endpoints["gwlbe-a"], 0)
    rest = b[3000:].copy()
    res = insp.inspect(rest, ep)
    on_fw2 = res.status == PktStatus.FW_FAILED
    assert on_fw2.any() and not res.by_firewall[on_fw2].any()
    assert not (res.fw_index == 1).any()
