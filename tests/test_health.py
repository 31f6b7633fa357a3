"""Failure as the GWLB sees it (DESIGN.md section 13): health-check timing per profile, down / up / remove events,
and the probes of the ``health`` tap.

The what-if tests replay many short flows (``synth``, flows starting all through the capture) through the shipped
distributed example with one firewall failing, and compare every packet's fate with what the documented rule of the
configured profile says: during the detection window new flows hashed to the dead firewall are lost (``FW_DOWN``);
after it no new flow reaches it; after ``up`` and the healthy window it takes new flows again.
"""
import copy
import shutil
import subprocess

import dpkt
import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from gwlb_fast import synth
from gwlb_fast.config import HealthCheck, example_topology_text, topology_from_dict
from gwlb_fast.pcapio import write_pcap
from gwlb_fast.pipeline import Pipeline
from gwlb_fast.stages.health import PROBE_RTT, HealthTimeline, healthy_window, unhealthy_window
from gwlb_fast.status import PktStatus

EXAMPLE = yaml.safe_load(example_topology_text())
FWS = ("fw-1", "fw-2", "fw-3")
NS = 1_000_000_000


def _topo(profile="alibaba", failover="keep", events=(), **hc):
    d = copy.deepcopy(EXAMPLE)
    g = d["gwlb"]["gwlb-1"]
    g["geneve"] = {"profile": profile}
    g["failover"] = failover
    g["health_check"] = {"interval": 2, "timeout": 1, "healthy_threshold": 3, "unhealthy_threshold": 3, **hc}
    g["draining_timeout"] = 3
    d["events"] = list(events)
    return topology_from_dict(d, "whatif.yaml")


# ---------------------------------------------------------------------------------------------------- the rules
@settings(max_examples=50, deadline=None)
@given(interval=st.floats(1, 300), timeout=st.floats(1, 60), u=st.integers(1, 10), h=st.integers(1, 10))
def test_windows_follow_the_documented_rules(interval, timeout, u, h):
    hc = HealthCheck(interval=interval, timeout=timeout, healthy_threshold=h, unhealthy_threshold=u)
    # Alibaba: timeout x unhealthy threshold + interval x (unhealthy threshold - 1); success: response time x
    # healthy threshold + interval x (healthy threshold - 1)
    assert unhealthy_window(hc, "alibaba") == pytest.approx(timeout * u + interval * (u - 1))
    assert healthy_window(hc, "alibaba") == pytest.approx(PROBE_RTT * h + interval * (h - 1))
    # AWS: interval x threshold
    for profile in ("aws", "tencent"):
        assert unhealthy_window(hc, profile) == pytest.approx(interval * u)
        assert healthy_window(hc, profile) == pytest.approx(interval * h)


def test_defaults_give_twenty_seconds():
    # the figure: 20 s with the defaults (interval 10 s, timeout 5 s, thresholds 2)
    assert unhealthy_window(HealthCheck(), "alibaba") == 20.0
    assert unhealthy_window(HealthCheck(), "aws") == 20.0


@settings(max_examples=200, deadline=None)
@given(profile=st.sampled_from(["alibaba", "aws"]), down=st.floats(0, 30), up_after=st.floats(0.1, 60),
       interval=st.integers(2, 30), u=st.integers(1, 5), h=st.integers(1, 5))
def test_timeline_against_a_probe_by_probe_oracle(profile, down, up_after, interval, u, h):
    """The declarations equal what counting consecutive probe results gives, probe by probe (plain Python)."""
    timeout = interval / 2
    t = _topo(profile, events=[{"at": down, "firewall": "fw-2", "event": "down"},
                               {"at": down + up_after, "firewall": "fw-2", "event": "up"}],
              interval=interval, timeout=timeout, unhealthy_threshold=u, healthy_threshold=h)
    t0 = 10 * NS
    evs = [{"at": e.at, "firewall": e.firewall, "event": e.event, "state": e.state} for e in t.events]
    tl = HealthTimeline.build(t.gwlbs, evs, t0)
    got = [(a.at_ns, a.value) for a in tl.actions if a.firewall == "fw-2" and a.kind == "state"]
    # oracle: walk the probes in time order; a failed probe is known at its timeout, an answered one after the
    # response time (Alibaba) or at the end of its interval (AWS, whose verdicts come once an interval)
    ts, ans = tl.probe_times("gwlb-1", "fw-2", t0, t0 + round((down + up_after + 100 * interval) * NS))
    d_ns, u_ns = t0 + round(down * NS), t0 + round((down + up_after) * NS)
    assert ((ts >= d_ns) & (ts < u_ns) == ~ans).all(), "probes while down go unanswered, the others are answered"
    state, run_f, run_s, oracle = "healthy", 0, 0, []
    verdicts = sorted((s + (round(PROBE_RTT * NS) if a else round(timeout * NS)), a)
                      for s, a in zip(ts.tolist(), ans.tolist()))
    for verdict_at, a in verdicts:
        if a:
            run_s, run_f = run_s + 1, 0
            if state == "unhealthy" and run_s >= h:
                state = "healthy"
                oracle.append((verdict_at, "healthy"))
        else:
            run_f, run_s = run_f + 1, 0
            if state == "healthy" and run_f >= u:
                state = "unhealthy"
                oracle.append((verdict_at, "unhealthy"))
    assert got == oracle
    hc = t.gwlbs["gwlb-1"].health_check
    in_flight = any(s + round(timeout * NS) > u_ns for s, a in zip(ts.tolist(), ans.tolist()) if not a)
    if up_after < unhealthy_window(hc, profile) or in_flight:
        return   # back before the GWLB could tell, or a failed probe's verdict still to come: no clean windows
    assert [v for _, v in got] == ["unhealthy", "healthy"]
    for g, v in got:
        if v == "unhealthy":
            assert g == d_ns + round(unhealthy_window(t.gwlbs["gwlb-1"].health_check, profile) * NS)
        else:
            assert g == u_ns + round(healthy_window(t.gwlbs["gwlb-1"].health_check, profile) * NS)


# ---------------------------------------------------------------------------------------------------- what-if
@pytest.fixture(scope="module")
def traffic():
    # many short flows starting all through 30 s
    return synth.generate_with_truth(3000, 12_000, seed=3, duration=30.0, mix={"tcp-out": 0.7, "udp-dns": 0.3})


def _replay(topo, batch, chunk=2048):
    pipe = Pipeline(topo)
    parts = list(pipe.what_if(batch[a:a + chunk] for a in range(0, len(batch), chunk)))
    cat = {k: np.concatenate([getattr(r, k) for r in parts]) for k in ("status", "stage", "delivered", "fw")}
    return pipe, cat


def _first_packets(gt):
    first = np.zeros(gt.n_flows, np.int64)
    seen = np.zeros(gt.n_flows, bool)
    for i, f in enumerate(gt.flow.tolist()):
        if not seen[f]:
            seen[f] = True
            first[f] = i
    return first


def _maglev_pick(batch, pipe):
    """Which firewall the full fleet's Maglev table gives each packet (the GWLB's pick for a new flow)."""
    insp = pipe.gwlbs["gwlb-1"]
    b = batch.copy()
    b.parse()
    h = insp.lb.flow_hash(b.src_ip, b.dst_ip, b.sport, b.dport, b.proto)
    return insp.lb.maglev.lookup(np.ascontiguousarray(h), np.ones(3, bool))


@pytest.mark.parametrize("profile", ["alibaba", "aws"])
@pytest.mark.parametrize("failover", ["keep", "rebalance"])
def test_down_then_up_per_profile(traffic, profile, failover):
    batch, gt = traffic
    down, up = 8.0, 20.0
    topo = _topo(profile, failover, [{"at": down, "firewall": "fw-2", "event": "down"},
                                     {"at": up, "firewall": "fw-2", "event": "up"}])
    hc = topo.gwlbs["gwlb-1"].health_check
    w_down, w_up = unhealthy_window(hc, profile), healthy_window(hc, profile)
    assert w_down == (1 * 3 + 2 * 2 if profile == "alibaba" else 2 * 3)
    pipe, r = _replay(topo, batch)
    t = (batch.ts_ns - batch.ts_ns[0]) / NS
    first = _first_packets(gt)
    is_first = np.zeros(len(batch), bool)
    is_first[first] = True
    pick = _maglev_pick(batch, pipe)
    fw2 = FWS.index("fw-2")
    in_window = (t >= down) & (t < down + w_down)
    # new flows hashed to fw-2 in the detection window: lost at the firewall, counted
    lost_new = is_first & in_window & (pick == fw2)
    assert lost_new.sum() > 20
    assert (r["status"][lost_new] == PktStatus.FW_DOWN).all()
    assert (r["fw"][lost_new] == fw2).all()
    # ... and no other first packet in the window is lost
    assert (r["status"][is_first & in_window & (pick != fw2)] == PktStatus.OK).all()
    # after detection, until it is healthy again: no new flow reaches fw-2
    after = (t >= down + w_down) & (t < up + w_up)
    assert (r["fw"][is_first & after] != fw2).all()
    assert (r["status"][is_first & after] == PktStatus.OK).all()
    # no packet at all reaches fw-2 (alive) between the failure and its return
    assert not ((r["fw"] == fw2) & (r["status"] == PktStatus.OK) & (t >= down) & (t < up)).any()
    # after the healthy window its share of new flows comes back
    back = is_first & (t >= up + w_up) & (pick == fw2)
    assert back.sum() > 10 and (r["fw"][back] == fw2).all() and (r["status"][back] == PktStatus.OK).all()
    # every FW_DOWN packet was sent in the window (after it the GWLB keeps the dead firewall's flows only with keep,
    # and they are dropped at the GWLB as FW_FAILED)
    dead = r["status"] == PktStatus.FW_DOWN
    assert (t[dead] >= down).all() and (t[dead] < down + w_down).all()
    failed = r["status"] == PktStatus.FW_FAILED
    if failover == "keep":
        assert failed.any() and (t[failed] >= down + w_down).all()
    else:
        assert not failed.any()
    s = pipe.summary()
    assert s.drops["firewall"]["FW_DOWN"] == int(dead.sum())
    assert [(e["firewall"], e.get("event") or e["state"]) for e in s.events] == \
        [("fw-2", "down"), ("fw-2", "unhealthy"), ("fw-2", "up"), ("fw-2", "healthy")]
    assert s.events[1]["at"] == pytest.approx(down + w_down) and s.events[1]["cause"] == "health check"
    assert s.events[3]["at"] == pytest.approx(up + w_up)


def test_up_before_detection_cancels_it(traffic):
    batch, _gt = traffic
    topo = _topo("alibaba", "keep", [{"at": 8.0, "firewall": "fw-2", "event": "down"},
                                     {"at": 10.0, "firewall": "fw-2", "event": "up"}])
    pipe, r = _replay(topo, batch)
    t = (batch.ts_ns - batch.ts_ns[0]) / NS
    dead = r["status"] == PktStatus.FW_DOWN
    assert dead.any() and (t[dead] >= 8.0).all() and (t[dead] < 10.0).all()
    s = pipe.summary()
    assert [e.get("event") or e["state"] for e in s.events] == ["down", "up"]
    assert s.firewalls["fw-2"]["state"] == "healthy"


def test_state_event_still_sets_the_view_at_once(traffic):
    batch, gt = traffic
    topo = _topo(events=[{"at": 8.0, "firewall": "fw-2", "state": "unhealthy"}])
    _pipe, r = _replay(topo, batch)
    t = (batch.ts_ns - batch.ts_ns[0]) / NS
    first = _first_packets(gt)
    late = np.zeros(len(batch), bool)
    late[first] = t[first] >= 8.0
    assert (r["fw"][late] != FWS.index("fw-2")).all()
    assert not (r["status"] == PktStatus.FW_DOWN).any()


@pytest.fixture(scope="module")
def long_flows():
    # fewer, longer flows: some outlive the drain timeout
    return synth.generate_with_truth(150, 30_000, seed=4, duration=30.0, mix={"tcp-out": 1.0})


@pytest.mark.parametrize("failover", ["keep", "rebalance"])
def test_remove_drains_then_fails_over(long_flows, failover):
    batch, gt = long_flows
    topo = _topo("alibaba", failover, [{"at": 8.0, "firewall": "fw-2", "event": "remove"}])
    pipe, r = _replay(topo, batch)
    t = (batch.ts_ns - batch.ts_ns[0]) / NS
    first = _first_packets(gt)
    fw2 = FWS.index("fw-2")
    is_first = np.zeros(len(batch), bool)
    is_first[first] = True
    # no new flow after the removal
    assert (r["fw"][is_first & (t >= 8.0)] != fw2).all()
    # its existing flows keep going to it for the drain timeout (3 s here) ...
    on_fw2 = (r["fw"] == fw2) & (r["status"] == PktStatus.OK)
    assert on_fw2[(t >= 8.0) & (t < 11.0)].any()
    assert not on_fw2[t >= 11.0].any()
    # ... then fail over per failover
    failed = r["status"] == PktStatus.FW_FAILED
    if failover == "keep":
        assert failed.any() and (t[failed] >= 11.0).all()
    else:
        # rehashed onto the others, which never saw the flows' SYNs (VM-Series drops them: TCP_NOT_SYN)
        assert not failed.any()
        moved = (r["status"] == PktStatus.TCP_NOT_SYN) & (t >= 11.0)
        assert moved.any() and (r["fw"][moved] != fw2).all()
    assert pipe.summary().events == [{"at": 8.0, "firewall": "fw-2", "state": "draining", "cause": "remove"}]
    # a removed firewall is not probed any more
    tl = pipe._timeline
    ts, _ = tl.probe_times("gwlb-1", "fw-2", int(batch.ts_ns[0]), int(batch.ts_ns[-1]) + 1)
    assert ((ts - batch.ts_ns[0]) / NS < 8.0).all()


# ---------------------------------------------------------------------------------------------------- health tap
def _frames(path):
    with open(path, "rb") as fh:
        return [(int(ts * 1_000_000_000), dpkt.ethernet.Ethernet(buf)) for ts, buf in dpkt.pcap.Reader(fh)]


@pytest.mark.parametrize("protocol", ["tcp", "http"])
def test_health_tap_shows_when_the_gwlb_notices(traffic, tmp_path, protocol):
    batch, _ = traffic
    down, up = 8.0, 20.0
    topo = _topo("alibaba", "keep", [{"at": down, "firewall": "fw-2", "event": "down"},
                                     {"at": up, "firewall": "fw-2", "event": "up"}], protocol=protocol, port=8080,
                 path="/healthz")
    write_pcap(tmp_path / "in.pcap", batch)
    Pipeline(topo).run(tmp_path / "in.pcap", taps=tmp_path / "taps", chunk=257)  # probes cross many chunks
    frames = _frames(tmp_path / "taps" / "health.pcap")
    t0 = int(batch.ts_ns[0])
    gw = bytes([10, 0, 0, 10])
    fw2 = bytes([10, 0, 1, 12])
    assert frames and all(isinstance(e.data.data, dpkt.tcp.TCP) for _, e in frames)
    ts = [t for t, _ in frames]
    assert ts == sorted(ts)
    # every probe goes from the GWLB address to the health-check port; answers come back from it
    for _, e in frames:
        ip, tcp = e.data, e.data.data
        assert (ip.src == gw and tcp.dport == 8080) or (ip.dst == gw and tcp.sport == 8080)
    syns = [((t - t0) / NS, e) for t, e in frames if e.data.data.flags == dpkt.tcp.TH_SYN and e.data.dst == fw2]
    answers = {e.data.data.dport for t, e in frames if e.data.src == fw2}
    unanswered = [t for t, e in syns if e.data.data.sport not in answers]
    # the probes to the dead firewall: from the failure on, every interval + timeout, unanswered until it is up
    assert unanswered and min(unanswered) == pytest.approx(down, abs=1e-6)
    assert all(down - 1e-6 <= t < up for t in unanswered)
    gaps = np.diff(unanswered)
    assert np.allclose(gaps, 1.0 + 2.0)   # timeout 1 + interval 2 (Alibaba)
    # the third failure (unhealthy threshold 3) times out exactly when the GWLB declares it unhealthy
    w = unhealthy_window(topo.gwlbs["gwlb-1"].health_check, "alibaba")
    assert unanswered[2] + 1.0 == pytest.approx(down + w)
    # answered again from the up on
    answered_after = [t for t, e in syns if e.data.data.sport in answers and t >= up]
    assert answered_after and answered_after[0] == pytest.approx(up, abs=1e-6)
    if protocol == "http":
        gets = [e for _, e in frames if e.data.data.data.startswith(b"GET /healthz HTTP/1.1\r\n")]
        oks = [e for _, e in frames if e.data.data.data.startswith(b"HTTP/1.1 200 OK\r\n")]
        assert gets and len(gets) == len(oks)
    # checksums as dpkt recomputes them
    for _, e in frames[:40]:
        raw = bytes(e.data)
        again = dpkt.ip.IP(raw)
        again.sum = 0
        again.data.sum = 0
        assert bytes(again) == raw


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_tshark_reads_the_http_probes(traffic, tmp_path):
    batch, _ = traffic
    topo = _topo("alibaba", "keep", [], protocol="http", port=80, path="/status")
    write_pcap(tmp_path / "in.pcap", batch[:2000])
    Pipeline(topo).run(tmp_path / "in.pcap", taps=tmp_path / "taps")
    out = subprocess.run(["tshark", "-r", str(tmp_path / "taps" / "health.pcap"), "-Y", "http", "-T", "fields",
                          "-e", "http.request.uri", "-e", "http.response.code"], capture_output=True, text=True,
                         check=True).stdout.split("\n")
    assert "/status\t" in out and "\t200" in out
