"""Replaying real captures: flows that began before the capture (pickup), server-side captures, special addresses,
local delivery inside a subnet, a flow-log record for every flow, and the summary's hint (DESIGN.md section 10)."""
import copy
import importlib.resources
import ipaddress
import json
import struct

import dpkt
import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

import gwlb_fast as gf
from gwlb_fast._kernels.special import mark_special
from gwlb_fast.config import example_topology_text, topology_from_dict
from gwlb_fast.errors import ConfigError
from gwlb_fast.pcapio import read_pcap, write_pcap
from gwlb_fast.pipeline import STAGES, Pipeline
from gwlb_fast.replay import FlowSides
from tests.oracles.replay import sender_is_server, special_status

EXAMPLE = yaml.safe_load(example_topology_text())
EXAMPLE_PATH = str(importlib.resources.files("gwlb_fast") / "examples" / "topology.yaml")
S = 1_000_000_000
T0 = 1_700_000_000 * S
ST = {name: i for i, name in enumerate(STAGES)}
SYN, ACK, FIN, PSH = 0x02, 0x10, 0x01, 0x08


def ip(s: str) -> int:
    return int(ipaddress.IPv4Address(s))


def frame(src, dst, proto=6, sport=0, dport=0, flags=ACK, payload=b"", icmp_type=8):
    if proto == 6:
        l4 = dpkt.tcp.TCP(sport=sport, dport=dport, flags=flags, seq=1000, ack=2000, data=payload)
    elif proto == 17:
        l4 = dpkt.udp.UDP(sport=sport, dport=dport, data=payload)
        l4.ulen = 8 + len(payload)
    else:
        l4 = dpkt.icmp.ICMP(type=icmp_type, data=dpkt.icmp.ICMP.Echo(id=sport, seq=1, data=payload))
    pkt = dpkt.ip.IP(src=struct.pack("!I", ip(src)), dst=struct.pack("!I", ip(dst)), p=proto, ttl=64, data=l4)
    pkt.len = 20 + len(bytes(l4))
    return bytes(dpkt.ethernet.Ethernet(src=b"\x02" * 6, dst=b"\x04" * 6, type=0x0800, data=pkt))


def batch(frames, step=S // 100):
    return gf.PacketBatch.from_packets(frames, ts_ns=[T0 + i * step for i in range(len(frames))])


def topo(**changes):
    d = copy.deepcopy(EXAMPLE)
    d["events"] = []
    for key, val in changes.items():
        d[key] = val
    return topology_from_dict(d, "replay.yaml")


def run(tmp_path, frames, topology=None, name="in.pcap", **kw):
    """Pipeline.run on the frames, with taps and a flow log; returns (summary, flow-log records, taps dir)."""
    write_pcap(tmp_path / name, batch(frames))
    pipe = Pipeline(topology if topology is not None else topo(), **kw)
    summary = pipe.run(tmp_path / name, tmp_path / "out.pcap", taps=tmp_path / "taps",
                       flow_log=tmp_path / "flows.jsonl")
    log = [json.loads(line) for line in (tmp_path / "flows.jsonl").read_text().splitlines()]
    return summary, log, tmp_path / "taps"


def tap(d, link):
    return gf.PacketBatch.concat(list(read_pcap(d / f"{link}.pcap", parse=True)))


# --------------------------------------------------------------------------- the rules that name a flow's client
PRIVATE = [ipaddress.IPv4Network("10.1.0.0/16")]
TARGETS = {(6, ip("10.1.1.20"), 8443)}
addresses = st.one_of(st.integers(0, 2**32 - 1), st.sampled_from([ip("10.1.1.20"), ip("10.1.1.5"), ip("8.8.8.8")]))
ports = st.one_of(st.integers(0, 65535), st.sampled_from([53, 443, 8443, 1023, 1024, 40000]))


@settings(max_examples=300)
@given(st.lists(st.tuples(addresses, addresses, ports, ports, st.sampled_from([1, 6, 17, 47]),
                          st.integers(0, 255)), min_size=1, max_size=30))
def test_flow_sides_follow_the_documented_rules(rows):
    sides = FlowSides([(ip("10.1.0.0"), 16)], [(6, ip("10.1.1.20"), 8443)])
    cols = [np.array(c) for c in zip(*rows)]
    got = sides.sender_is_server(*cols)
    want = [sender_is_server(*r, PRIVATE, TARGETS) for r in rows]
    assert got.tolist() == want


def test_flow_sides_examples():
    sides = FlowSides.from_topology(topo())
    rows = [  # (src, dst, sport, dport, proto, flags) -> sender is the server
        (("93.184.216.34", "10.1.1.5", 443, 40000, 6, ACK), True),     # SNAT: the private host is the client
        (("10.1.1.5", "93.184.216.34", 40000, 443, 6, ACK), False),
        (("8.8.8.8", "10.1.1.20", 40000, 8443, 6, ACK), False),        # to the DNAT target: from a client
        (("10.1.1.20", "8.8.8.8", 8443, 40000, 6, ACK), True),
        (("10.1.1.5", "10.1.1.6", 50000, 22, 6, ACK), False),          # both private: the service port
        (("10.1.1.6", "10.1.1.5", 22, 50000, 6, ACK), True),
        (("10.1.1.6", "10.1.1.5", 22, 50000, 6, SYN | ACK), True),     # SYN+ACK: from the server
        (("10.1.1.6", "10.1.1.5", 50000, 22, 6, SYN), False),
        (("10.1.1.6", "10.1.1.5", 7, 7, 1, 0), True),                  # ICMP echo reply
    ]
    for (src, dst, sp, dp, pr, fl), want in rows:
        got = sides.sender_is_server(np.array([ip(src)]), np.array([ip(dst)]), np.array([sp]), np.array([dp]),
                                     np.array([pr]), np.array([fl]))
        assert got.tolist() == [want], (src, dst, sp, dp)


# --------------------------------------------------------------------------- special addresses (kernel)
special_ips = st.one_of(st.integers(0, 2**32 - 1), st.sampled_from(
    [0xFFFFFFFF, ip("10.1.1.255"), ip("224.0.0.251"), ip("239.255.255.250"), ip("0.0.0.0"), ip("127.0.0.1"),
     ip("169.254.169.254"), ip("10.1.1.5"), ip("8.8.8.8"), ip("10.2.1.255")]))  # 10.2.1.255: 10.1.1.255's low half


@settings(max_examples=300)
@given(st.lists(st.tuples(special_ips, special_ips, st.sampled_from([0, 0, 0, 1, 46])), max_size=40),
       st.lists(special_ips, max_size=5))
def test_mark_special_matches_the_oracle(rows, bcast):
    bc = np.array(sorted(set(bcast)), np.uint32)
    status = np.array([r[2] for r in rows], np.uint8)
    src = np.array([r[0] for r in rows], np.uint32)
    dst = np.array([r[1] for r in rows], np.uint32)
    before = status.copy()
    n = mark_special(status, src, dst, bc)
    want = [special_status(s, d, set(bcast)) if b == 0 else b for s, d, b in zip(src.tolist(), dst.tolist(),
                                                                               before.tolist())]
    assert status.tolist() == [int(w) for w in want]
    assert n == int(np.count_nonzero(status != before))


def test_mark_special_checks_its_arguments():
    z = np.zeros(3, np.uint32)
    with pytest.raises(ValueError, match="src_ip"):
        mark_special(np.zeros(3, np.uint8), np.zeros(2, np.uint32), z, np.zeros(0, np.uint32))
    with pytest.raises(ValueError, match="sorted"):
        mark_special(np.zeros(3, np.uint8), z, z, np.array([5, 1], np.uint32))
    assert mark_special(np.zeros(0, np.uint8), z[:0], z[:0], np.zeros(0, np.uint32)) == 0


# --------------------------------------------------------------------------- special addresses, local delivery
def test_special_addresses_never_reach_a_nat_gateway_or_the_internet(tmp_path):
    app = "10.1.1.5"
    frames = [frame(app, "255.255.255.255", 17, 68, 67), frame("0.0.0.0", "255.255.255.255", 17, 68, 67),
              frame(app, "10.1.1.255", 17, 137, 137), frame(app, "224.0.0.251", 17, 5353, 5353),
              frame(app, "239.255.255.250", 17, 50000, 1900), frame(app, "127.0.0.1", 6, 40000, 80),
              frame(app, "0.1.2.3", 6, 40000, 80), frame(app, "169.254.169.254", 6, 40000, 80),
              frame("169.254.10.10", app, 6, 80, 40000), frame(app, "93.184.216.34", 6, 40000, 443, SYN)]
    summary, log, taps = run(tmp_path, frames)
    assert summary.drops["route"] == {"BROADCAST": 3, "MULTICAST": 2, "MARTIAN": 2, "LINK_LOCAL": 2}
    assert summary.packets_out == 1
    for link in ("vpc-to-nat", "nat-to-internet", "vpc-to-gwlbe"):
        assert len(tap(taps, link)) == 1  # only the unicast SYN
    # every one of them has its flow-log record, naming the reason
    reasons = sorted(r["end_reason"] for r in log if r["action"] == "drop")
    assert reasons == sorted(["broadcast"] * 3 + ["multicast"] * 2 + ["martian"] * 2 + ["link-local"] * 2)


def test_traffic_inside_one_subnet_is_delivered_locally(tmp_path):
    """A ping and a TCP exchange between two hosts of the app subnet never reach the GWLBe (whose route table
    would send them through a firewall); a host of another subnet still goes through its route table."""
    a, b = "10.1.1.5", "10.1.1.6"
    frames = [frame(a, b, 1, 7, 7, icmp_type=8), frame(b, a, 1, 7, 7, icmp_type=0),
              frame(a, b, 6, 40000, 22, SYN), frame(b, a, 6, 22, 40000, SYN | ACK)]
    summary, log, taps = run(tmp_path, frames)
    assert summary.packets_out == 4 and summary.dropped == 0
    assert summary.replay["local_packets"] == 4
    # no firewall session records them: each conversation has its own record, forwarded without inspection
    assert sorted((r["src_ip"], r["dst_ip"], r["proto"], r["action"], r["end_reason"], r["packets"],
                   r["packets_reply"], r["firewall"]) for r in log) == [
        ("10.1.1.5", "10.1.1.6", 1, "forward", "end-of-run", 1, 1, None),
        ("10.1.1.5", "10.1.1.6", 6, "forward", "end-of-run", 1, 1, None)]
    assert len(tap(taps, "vpc-to-host")) == 4
    assert len(tap(taps, "vpc-to-gwlbe")) == 0
    out = gf.PacketBatch.concat(list(read_pcap(tmp_path / "out.pcap")))
    assert [bytes(out.packet(i)) for i in range(4)] == frames  # delivered untouched


# --------------------------------------------------------------------------- pickup along the path
def midstream(client="10.1.1.5", server="93.184.216.34", cport=40000, sport=443, n=4):
    """A TCP flow seen from its server's data segment on: reply, ACK, reply, ... (no SYN)."""
    out = []
    for i in range(n):
        out.append(frame(server, client, 6, sport, cport, ACK | PSH, b"x" * 10) if i % 2 == 0
                   else frame(client, server, 6, cport, sport, ACK))
    return out


def test_without_pickup_a_midstream_capture_drops_and_the_summary_names_the_setting(tmp_path):
    summary, log, _ = run(tmp_path, midstream())
    assert summary.packets_out == 0
    assert summary.drops == {"nat": {"NAT_NO_MAPPING": 2}, "firewall": {"TCP_NOT_SYN": 2}}
    assert len(summary.hints) == 1 and "replay: {pickup: true}" in summary.hints[0]
    assert summary.hints[0] in str(summary)
    # the dropped flow has one record, ended by its first drop
    assert [(r["action"], r["end_reason"], r["packets"] + r["packets_reply"]) for r in log] == \
        [("drop", "nat-no-mapping", 4)]


def test_pickup_takes_a_midstream_flow_as_established_at_every_stage(tmp_path):
    """SNAT mapping made from the reply, GWLB flow, firewall session classified client to server
    (allow-web-out), the same firewall both ways, the reply's public port the one the client's packets use."""
    summary, log, taps = run(tmp_path, midstream(), pickup=True)
    assert summary.dropped == 0 and summary.packets_out == 4
    assert summary.hints == []
    assert summary.replay["mappings_picked_up"] == 1
    assert summary.replay["sessions_picked_up"] == 1 and summary.replay["sessions_reversed"] == 1
    assert summary.rules["allow-web-out"] == 1
    assert sum(f["flows"] for f in summary.firewalls.values()) == 1  # one GWLB flow
    [rec] = log
    assert (rec["src_ip"], rec["src_port"], rec["dst_ip"], rec["dst_port"]) == ("10.1.1.5", 40000,
                                                                                 "93.184.216.34", 443)
    assert (rec["direction"], rec["rule"], rec["action"], rec["packets"], rec["packets_reply"]) == \
        ("outbound", "allow-web-out", "allow", 2, 2)
    out_nat = tap(taps, "nat-to-internet")
    in_nat = tap(taps, "internet-to-nat")
    assert set(out_nat.sport.tolist()) == set(in_nat.dport.tolist()) == {rec["nat_port"]}
    assert set(in_nat.dst_ip.tolist()) == {ip("203.0.113.10")}
    fw = tap(taps, "gwlb-to-fw")
    assert len(set(fw.dst_ip.tolist())) == 1 and len(fw) == 4


def test_pickup_from_the_topology_and_the_command_line(tmp_path):
    t = topo(replay={"pickup": True})
    assert t.replay.pickup and Pipeline(t).pickup
    assert not Pipeline(t, pickup=False).pickup
    with pytest.raises(ConfigError, match=r"replay\.pickup"):
        topo(replay={"pickup": "yes"})
    with pytest.raises(ConfigError, match=r"replay\.pick: unknown key"):
        topo(replay={"pick": True})
    write_pcap(tmp_path / "in.pcap", batch(midstream()))
    from gwlb_fast.cli import main

    assert main(["run", EXAMPLE_PATH, str(tmp_path / "in.pcap"), "-o", str(tmp_path / "a.pcap"), "--quiet",
                 "--json", "--events", str(_no_events(tmp_path))]) == 0
    assert main(["run", EXAMPLE_PATH, str(tmp_path / "in.pcap"), "-o", str(tmp_path / "b.pcap"), "--quiet",
                 "--pickup", "--events", str(_no_events(tmp_path))]) == 0
    assert len(gf.PacketBatch.concat(list(read_pcap(tmp_path / "a.pcap")))) == 0
    assert len(gf.PacketBatch.concat(list(read_pcap(tmp_path / "b.pcap")))) == 4


def _no_events(tmp_path):
    p = tmp_path / "events.yaml"
    p.write_text("[]\n")
    return p


def test_pickup_leaves_replies_of_denied_flows_alone(tmp_path):
    """A reply of a flow the firewall denied gets no mapping from pickup: it is a reply of a flow seen from its
    start, and its drop stays in the denied session's record."""
    frames = [frame("10.1.1.5", "93.184.216.34", 17, 40000, 123), frame("93.184.216.34", "10.1.1.5", 17, 123, 40000)]
    summary, log, _ = run(tmp_path, frames, pickup=True)
    assert summary.drops == {"firewall": {"POLICY_DENY": 1}, "nat": {"NAT_NO_MAPPING": 1}}
    assert summary.replay["mappings_picked_up"] == 0 and summary.hints == []
    assert [(r["action"], r["end_reason"]) for r in log] == [("deny", "policy-deny")]


def test_server_side_capture_is_replayed_in_its_public_form(tmp_path):
    """Captured at the DNAT target (10.1.1.20:8443) after translation: the client's packets are put back in their
    public form (203.0.113.10:443), translated by the gateway, inspected, delivered; the server's replies leave
    with the public source. With pickup, a capture that starts mid-stream from the server's side works too."""
    client, server = "198.51.100.7", "10.1.1.20"
    frames = [frame(client, server, 6, 50000, 8443, SYN), frame(server, client, 6, 8443, 50000, SYN | ACK),
              frame(client, server, 6, 50000, 8443, ACK), frame(server, client, 6, 8443, 50000, ACK | PSH, b"hi")]
    summary, log, taps = run(tmp_path, frames)
    assert summary.dropped == 0 and summary.packets_out == 4
    assert summary.replay["server_side_packets"] == 2
    pub = tap(taps, "internet-to-nat")
    assert set(pub.dst_ip.tolist()) == {ip("203.0.113.10")} and set(pub.dport.tolist()) == {443}
    assert set(tap(taps, "nat-to-internet").sport.tolist()) == {443}
    [rec] = log
    assert (rec["direction"], rec["rule"], rec["nat_port"]) == ("inbound", "allow-https-in", 443)
    # checksums still valid after the round trip public -> private (dpkt recomputes them)
    for i, raw in enumerate(tap(taps, "nat-to-vpc").packets()):
        pkt = dpkt.ethernet.Ethernet(bytes(raw)).data
        want = (pkt.sum, pkt.data.sum)
        pkt.sum = 0
        pkt.data.sum = 0
        again = dpkt.ip.IP(bytes(pkt))
        assert (again.sum, again.data.sum) == want, i
    # mid-stream, server's reply first: the DNAT target is the server
    summary, log, _ = run(tmp_path, frames[3:] + frames[2:3], pickup=True)
    assert summary.dropped == 0 and summary.replay["sessions_reversed"] == 1
    assert [(r["src_ip"], r["dst_port"], r["rule"]) for r in log] == [(client, 8443, "allow-https-in")]


# --------------------------------------------------------------------------- a record for every flow
def test_flows_dropped_without_a_session_have_a_record(tmp_path):
    t = copy.deepcopy(EXAMPLE)
    t["events"] = []
    t["vpcs"]["business"]["route_tables"]["app"].insert(0, {"dst": "192.0.2.0/24", "via": "blackhole"})
    frames = [frame("10.1.1.5", "93.184.216.34", 6, 40000, 443, ACK),     # mid-stream: TCP_NOT_SYN
              frame("10.1.1.5", "93.184.216.34", 6, 40000, 443, ACK),
              frame("93.184.216.34", "10.1.1.5", 6, 443, 40000, ACK),     # its reply: TCP_NOT_SYN as well
              frame("10.1.1.5", "192.0.2.1", 17, 5000, 53),                # blackhole
              frame("198.51.100.9", "203.0.113.10", 6, 1234, 22, SYN),     # no DNAT rule for port 22
              frame("10.1.1.5", "93.184.216.34", 6, 40001, 443, SYN)]      # a normal flow
    _summary, log, _ = run(tmp_path, frames, topology_from_dict(t, "t.yaml"))
    drops = sorted((r["src_ip"], r["dst_port"], r["end_reason"], r["packets"], r["packets_reply"], r["firewall"])
                   for r in log if r["action"] == "drop")
    fw_of_flow = next(r for r in log if r["action"] == "drop" and r["end_reason"] == "tcp-not-syn")["firewall"]
    assert fw_of_flow in ("fw-1", "fw-2", "fw-3")
    assert drops == [("10.1.1.5", 53, "blackhole", 1, 0, None), ("10.1.1.5", 443, "tcp-not-syn", 2, 1, fw_of_flow),
                     ("198.51.100.9", 22, "nat-no-mapping", 1, 0, None)]
    assert [r["action"] for r in log].count("allow") == 1


@pytest.mark.parametrize("failover,reason", [("keep", "fw-failed"), ("rebalance", "moved")])
def test_flows_cut_by_a_firewall_failure_say_so(tmp_path, failover, reason):
    """Flows established on a firewall that fails end as fw-failed (keep) or moved (rebalance) on it; with
    rebalance the new firewall picks them up only with pickup (else TCP_NOT_SYN)."""
    t = copy.deepcopy(EXAMPLE)
    t["gwlb"]["gwlb-1"]["failover"] = failover
    clients = [f"10.1.1.{i}" for i in range(10, 40)]
    first = [frame(c, "93.184.216.34", 6, 40000, 443, SYN) for c in clients]
    later = [frame(c, "93.184.216.34", 6, 40000, 443, ACK) for c in clients]
    probe = Pipeline(topology_from_dict(dict(t, events=[]), "t.yaml"))
    res = probe.process(batch(first))
    victim = probe.gwlbs["gwlb-1"].cfg.firewall_names[int(np.bincount(res.fw[res.fw >= 0]).argmax())]
    on_victim = int(np.count_nonzero(res.fw == probe.gwlbs["gwlb-1"].cfg.firewall_names.index(victim)))
    t["events"] = [{"at": 1.0, "firewall": victim, "state": "unhealthy"}]
    frames = first + later
    write_pcap(tmp_path / "in.pcap", gf.PacketBatch.from_packets(
        frames, ts_ns=[T0 + (0 if i < len(first) else 2 * S) + i for i in range(len(frames))]))
    for pickup in (False, True):
        summary = Pipeline(topology_from_dict(t, "t.yaml"), pickup=pickup).run(
            tmp_path / "in.pcap", tmp_path / "out.pcap", flow_log=tmp_path / "flows.jsonl")
        log = [json.loads(x) for x in (tmp_path / "flows.jsonl").read_text().splitlines()]
        cut = [r for r in log if r["firewall"] == victim and r["action"] == "allow"]
        assert len(cut) == on_victim and all(r["end_reason"] == reason for r in cut)
        assert all(r["end_reason"] != reason for r in log if r["firewall"] != victim)
        if failover == "keep":
            assert summary.drops["gwlb"] == {"FW_FAILED": on_victim}
            assert not [r for r in log if r["action"] == "drop"]  # the sessions' records carry the cut
        elif pickup:
            assert summary.dropped == 0
            assert summary.replay["sessions_picked_up"] == on_victim
        else:
            assert summary.drops["firewall"] == {"TCP_NOT_SYN": on_victim}
            assert summary.hints and "tcp_reject_non_syn" not in summary.hints[0]
