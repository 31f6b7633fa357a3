"""End-to-end tests of the modelled path (DESIGN.md sections 1, 3, 6-8) on synthetic traffic with known ground truth.

The capture comes from ``synth.generate_with_truth`` (the example topology's addresses), so every packet's flow,
direction and expected fate is known: outbound flows are SNAT'ed, ``tcp-in`` flows DNAT'ed to 10.1.1.20:8443, and
the denied categories stop at the firewall (their replies at the NAT gateway, which never made a mapping).
"""
import collections
import copy
import importlib.resources
import ipaddress
import itertools
import json
import shutil
import subprocess

import dpkt
import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

import gwlb_fast as gf
from gwlb_fast import geneve, synth
from gwlb_fast.config import example_topology_text, load_topology, topology_from_dict
from gwlb_fast.pcapio import read_pcap, write_pcap
from gwlb_fast.pipeline import STAGES, TAP_LINKS, Pipeline
from gwlb_fast.stages import firewall as fw_module
from gwlb_fast.stages import gwlb
from gwlb_fast.status import PktStatus
from gwlb_fast.synth import CATEGORIES, Direction
from tests.shared_data import data_path
from tests.topologies import capture_topology

EXAMPLE_PATH = str(importlib.resources.files("gwlb_fast") / "examples" / "topology.yaml")
EXAMPLE = yaml.safe_load(example_topology_text())
PUBLIC = int(ipaddress.IPv4Address("203.0.113.10"))
SERVER = (int(ipaddress.IPv4Address("10.1.1.20")), 8443)
FW_NAMES = ("fw-1", "fw-2", "fw-3")
FW_ADDR = {int(ipaddress.IPv4Address(v["address"])): k for k, v in EXAMPLE["gwlb"]["gwlb-1"]["firewalls"].items()}
ENDPOINT_ID = 0x0A1B2C3D4E5F6071
S = {name: i for i, name in enumerate(STAGES)}
D_INTERNET, D_HOST = 1, 2
CHUNKS = (257, 4096, 65536)
CAT = {c: i for i, c in enumerate(CATEGORIES)}
OUT_ALLOWED = (CAT["tcp-out"], CAT["udp-dns"])

has_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")


def _ip(s):
    return int(ipaddress.IPv4Address(s))


def _topology(**gwlb_changes):
    d = copy.deepcopy(EXAMPLE)
    d["gwlb"]["gwlb-1"].update(gwlb_changes)
    d["events"] = []
    return topology_from_dict(d, "variant.yaml")


class Replay:
    """Per-packet outcome of a capture replayed with ``Pipeline.process`` chunk by chunk (events in between)."""

    def __init__(self, batch, chunk, topo=None, event=None):
        self.pipe = Pipeline(topo if topo is not None else _topology())
        n = len(batch)
        cut = n
        if event is not None:
            self.event_ns = int(batch.ts_ns[0]) + int(event["at"] * 1e9)
            cut = int(np.searchsorted(batch.ts_ns, self.event_ns))
        self.cut = cut
        parts = collections.defaultdict(list)
        for lo, hi in ((0, cut), (cut, n)):
            if lo == cut and event is not None:
                self.pipe.set_health(event["firewall"], event["state"], self.event_ns)
            for a in range(lo, hi, chunk):
                r = self.pipe.process(batch[a:min(a + chunk, hi)])
                for name in ("status", "stage", "delivered", "fw"):
                    parts[name].append(getattr(r, name).copy())
                parts["output"].append(r.output)
                parts["generated"].append(r.generated)
        for name in ("status", "stage", "delivered", "fw"):
            setattr(self, name, np.concatenate(parts[name]))
        self.output = gf.PacketBatch.concat(parts["output"])
        self.generated = sum(parts["generated"])
        self.summary = self.pipe.summary()


def _l4(pkt):
    """(src, dst, sport, dport, proto) of an Ethernet frame's IPv4 packet, with dpkt (ICMP echo: the id as both
    ports, as batch.parse does)."""
    ip = dpkt.ethernet.Ethernet(pkt).data
    src, dst = int.from_bytes(ip.src, "big"), int.from_bytes(ip.dst, "big")
    if ip.p in (6, 17):
        return src, dst, ip.data.sport, ip.data.dport, ip.p
    echo_id = ip.data.data.id if ip.p == 1 and ip.data.type in (0, 8) else 0
    return src, dst, echo_id, echo_id, ip.p


def _dpkt_read(path):
    with open(path, "rb") as fh:
        return [buf for _, buf in dpkt.pcap.Reader(fh)]


def _checksums_ok(frame):
    """IPv4 header and TCP/UDP checksums as dpkt recomputes them."""
    ip = dpkt.ethernet.Ethernet(frame).data
    raw = bytes(ip)
    again = dpkt.ip.IP(raw)
    again.sum = 0
    if isinstance(again.data, (dpkt.tcp.TCP, dpkt.udp.UDP)):
        again.data.sum = 0
    return bytes(again) == raw


# ---------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def traffic():
    return synth.generate_with_truth(300, 20_000, seed=7, duration=20.0)


@pytest.fixture(scope="module")
def replays(traffic):
    batch, _ = traffic
    return {c: Replay(batch, c) for c in CHUNKS}


@pytest.fixture(scope="module")
def files(traffic, tmp_path_factory):
    """``Pipeline.from_yaml(...).run(...)`` with every output, tiny chunks (state crosses 78 batches)."""
    batch, _ = traffic
    d = tmp_path_factory.mktemp("run")
    write_pcap(d / "in.pcap", batch)
    summary = Pipeline.from_yaml(EXAMPLE_PATH, taps=True).run(
        d / "in.pcap", d / "out.pcap", taps=d / "taps", flow_log=d / "flows.jsonl", events=[], chunk=257)
    log = [json.loads(line) for line in (d / "flows.jsonl").read_text().splitlines()]
    return d, summary, log


@pytest.fixture(scope="module")
def fw_tap(files):
    """The gwlb-to-fw tap: outer destination (firewall address), cookie and parsed inner packet per frame."""
    d, _, _ = files
    wire = gf.PacketBatch.concat(list(read_pcap(d / "taps" / "gwlb-to-fw.pcap", parse=True)))
    inner = geneve.decap(wire)
    assert (inner.status == PktStatus.OK).all()
    ep, cookie = inner.endpoint_id.copy(), inner.flow_cookie.copy()
    inner.parse()
    return wire, inner, ep, cookie


def _flow_key(src, dst, sport, dport, proto):
    """Direction-free key of a 5-tuple (numpy columns)."""
    a = (src.astype(np.uint64) << np.uint64(16)) | sport.astype(np.uint64)
    b = (dst.astype(np.uint64) << np.uint64(16)) | dport.astype(np.uint64)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    return list(zip(lo.tolist(), hi.tolist(), proto.tolist()))


def _truth_keys(gt):
    """Per flow: the key of the 5-tuple the firewall sees (pre-SNAT for outbound, post-DNAT for inbound)."""
    sip = np.where(gt.inbound, gt.reply_ip, gt.server_ip).astype(np.uint32)
    sport = np.where(gt.inbound, gt.reply_port, gt.server_port).astype(np.uint16)
    sport = np.where(gt.proto == 1, gt.client_port, sport).astype(np.uint16)  # ICMP echo: the id both ways
    return _flow_key(gt.client_ip, sip, gt.client_port, sport, gt.proto)


# ---------------------------------------------------------------------------------------------------- API
def test_library_entry_point_returns_the_summary(files, traffic):
    _, summary, _ = files
    from gwlb_fast.outputs.report import Summary

    assert isinstance(summary, Summary)
    assert summary.packets_in == len(traffic[0])
    d = summary.as_dict()
    for key in ("packets_in", "bytes_in", "packets_out", "bytes_out", "drops", "firewalls", "rules", "mpps"):
        assert key in d
    assert gf.Pipeline is Pipeline


# ---------------------------------------------------------------------------------------------------- ground truth
@pytest.mark.parametrize("chunk", CHUNKS)
def test_every_packet_delivered_or_dropped_for_a_counted_reason(replays, traffic, chunk):
    _, gt = traffic
    r = replays[chunk]
    n = gt.n_packets
    delivered = r.delivered != 0
    # per packet: delivered <=> OK <=> no drop stage
    assert ((r.status == PktStatus.OK) == delivered).all()
    assert ((r.stage == 255) == delivered).all()
    assert r.generated == 0 and len(r.output) == delivered.sum()
    # per the Summary: packets in = delivered + dropped by (stage, reason)
    s = r.summary
    assert s.packets_in == n and s.packets_out == delivered.sum()
    assert s.packets_in == s.packets_out + s.dropped
    expect = collections.defaultdict(dict)
    for (stage, status), k in collections.Counter(zip(r.stage[~delivered].tolist(),
                                                      r.status[~delivered].tolist())).items():
        expect[STAGES[stage]][PktStatus(status).name] = k
    assert s.drops == dict(expect)
    # what the example policy makes of the capture
    assert set(s.drops) == {"firewall", "nat"}
    assert s.drops["firewall"] == {"POLICY_DENY": int(((gt.direction != Direction.REPLY) & gt.denied[gt.flow]).sum())}
    assert s.drops["nat"] == {"NAT_NO_MAPPING": int(((gt.direction == Direction.REPLY) & gt.denied[gt.flow]).sum())}


def test_state_crosses_batches_identically(replays):
    """Tiny chunks, 4096 and one chunk (5 s slices) give the same outcome for every packet, and the same bytes."""
    a = replays[CHUNKS[0]]
    for c in CHUNKS[1:]:
        b = replays[c]
        for name in ("status", "stage", "delivered", "fw"):
            assert np.array_equal(getattr(a, name), getattr(b, name)), (c, name)
        assert np.array_equal(a.output.caplen, b.output.caplen)
        assert all(bytes(a.output.packet(i)) == bytes(b.output.packet(i)) for i in range(0, len(a.output), 97))


@pytest.fixture(scope="module")
def small():
    batch, gt = synth.generate_with_truth(60, 3000, seed=5, duration=3.0)
    return batch, gt, Replay(batch, 3000)


@settings(max_examples=6, deadline=None)
@given(cuts=st.lists(st.integers(1, 2999), max_size=12))
def test_any_chunking_gives_the_same_outcome(small, cuts):
    """Chunk boundaries anywhere (a flow's request and reply in different chunks or the same one) change nothing."""
    batch, _, whole = small
    pipe = Pipeline(_topology())
    bounds = [0, *sorted(set(cuts)), len(batch)]
    res = [pipe.process(batch[a:b]) for a, b in itertools.pairwise(bounds)]
    for name in ("status", "stage", "delivered", "fw"):
        assert np.array_equal(np.concatenate([getattr(r, name) for r in res]), getattr(whole, name)), name
    out = gf.PacketBatch.concat([r.output for r in res])
    assert np.array_equal(out.caplen, whole.output.caplen)
    assert bytes(out.data[: 1 << 14]) == bytes(whole.output.data[: 1 << 14])


def test_port_exhaustion_is_counted(small):
    """Eight SNAT ports for ~45 outbound flows: the rest are dropped at the NAT gateway with a reason, and still
    every packet in is delivered or counted."""
    batch, _, _ = small
    d = copy.deepcopy(EXAMPLE)
    d["events"] = []
    d["nat_gateways"]["nat-a"]["snat"]["ports"] = "1024-1031"
    r = Replay(batch, 500, topology_from_dict(d, "few-ports.yaml"))
    s = r.summary
    assert s.drops["nat"]["NAT_PORT_EXHAUSTED"] > 0
    assert s.packets_in == len(batch) == s.packets_out + s.dropped
    at_nat = r.stage == S["nat"]
    assert set(r.status[at_nat].tolist()) == {PktStatus.NAT_PORT_EXHAUSTED, PktStatus.NAT_NO_MAPPING}
    # the summary's NAT section agrees with the drops
    assert s.nat["port_exhausted_packets"] == int((r.status == PktStatus.NAT_PORT_EXHAUSTED).sum())
    assert s.nat["no_mapping_packets"] == s.drops["nat"]["NAT_NO_MAPPING"]


@pytest.fixture(scope="module")
def output_tuples(files, replays, traffic):
    """Per input row that was delivered: the 5-tuple of its packet in out.pcap (dpkt), as an (n, 5) array."""
    d, _, _ = files
    frames = _dpkt_read(d / "out.pcap")
    r = replays[257]
    rows = np.flatnonzero(r.delivered)
    assert len(frames) == rows.size
    # run() writes exactly what process() delivered
    assert all(frames[i] == bytes(r.output.packet(i)) for i in range(0, rows.size, 53))
    out = np.full((traffic[1].n_packets, 5), -1, np.int64)
    out[rows] = np.array([_l4(f) for f in frames], np.int64)
    return out, frames


def test_allowed_outbound_flows_leave_snatted_and_replies_come_back(replays, traffic, output_tuples, files):
    _, gt = traffic
    r = replays[257]
    out, frames = output_tuples
    flow, direction = gt.flow, gt.direction
    allowed = np.isin(gt.category, OUT_ALLOWED)
    req = allowed[flow] & (direction == Direction.OUTBOUND)
    rep = allowed[flow] & (direction == Direction.REPLY)
    assert req.sum() > 1000 and rep.sum() > 1000
    assert (r.delivered[req] == D_INTERNET).all()
    assert (r.delivered[rep] == D_HOST).all()
    # leaving: public source address, an allocated port, the destination untouched
    o = out[req]
    f = flow[req]
    assert (o[:, 0] == PUBLIC).all()
    assert (o[:, 1] == gt.server_ip[f]).all() and (o[:, 3] == gt.server_port[f]).all()
    assert ((o[:, 2] >= 1024) & (o[:, 2] <= 65535)).all()
    port_of = {}
    for fid, p in zip(f.tolist(), o[:, 2].tolist()):
        assert port_of.setdefault(fid, p) == p, "one public port per flow"
    by_private = {}
    for fid, p in port_of.items():
        priv = (int(gt.client_ip[fid]), int(gt.client_port[fid]), int(gt.proto[fid]))
        assert by_private.setdefault(priv, p) == p
    public = {(p, proto) for (_, _, proto), p in by_private.items()}
    assert len(public) == len(by_private), "distinct private sources get distinct ports (per protocol)"
    assert all(_checksums_ok(frames[i]) for i in np.searchsorted(np.flatnonzero(r.delivered),
                                                                   np.flatnonzero(req))[::37])
    # replies reach the app server translated back (the private address and port it sent from)
    o = out[rep]
    f = flow[rep]
    assert (o[:, 1] == gt.client_ip[f]).all() and (o[:, 3] == gt.client_port[f]).all()
    assert (o[:, 0] == gt.server_ip[f]).all() and (o[:, 2] == gt.server_port[f]).all()
    # ... after crossing the Internet to the public address and the flow's port (internet-to-nat tap)
    d, _, _ = files
    seen = collections.Counter(_l4(x) for x in _dpkt_read(d / "taps" / "internet-to-nat.pcap"))
    want = collections.Counter((int(gt.server_ip[x]), PUBLIC, int(gt.server_port[x]), port_of[x], int(gt.proto[x]))
                               for x in f.tolist())
    assert all(seen[k] == v for k, v in want.items())
    # and the nat-to-internet tap is the output's SNAT'ed packets
    nat_out = collections.Counter(_l4(x) for x in _dpkt_read(d / "taps" / "nat-to-internet.pcap"))
    assert all(nat_out[tuple(t)] >= 1 for t in out[req][::11].tolist())


def test_inbound_dnat_flows_reach_their_server(replays, traffic, output_tuples):
    _, gt = traffic
    r = replays[257]
    out, _ = output_tuples
    inbound = gt.category == CAT["tcp-in"]
    req = inbound[gt.flow] & (gt.direction == Direction.INBOUND)
    rep = inbound[gt.flow] & (gt.direction == Direction.REPLY)
    assert req.sum() > 100 and rep.sum() > 100
    assert (r.delivered[req] == D_HOST).all() and (r.delivered[rep] == D_INTERNET).all()
    f = gt.flow[req]
    o = out[req]
    assert (o[:, 1] == SERVER[0]).all() and (o[:, 3] == SERVER[1]).all()
    assert (o[:, 0] == gt.client_ip[f]).all() and (o[:, 2] == gt.client_port[f]).all()
    # the server's replies leave from the public address and port the client used
    f = gt.flow[rep]
    o = out[rep]
    assert (o[:, 0] == PUBLIC).all() and (o[:, 2] == 443).all()
    assert (o[:, 1] == gt.client_ip[f]).all() and (o[:, 3] == gt.client_port[f]).all()


def test_denied_flows_stop_at_the_firewall_and_are_logged(replays, traffic, files):
    _, gt = traffic
    r = replays[257]
    denied = gt.denied[gt.flow]
    initiator = denied & (gt.direction != Direction.REPLY)
    reply = denied & (gt.direction == Direction.REPLY)
    assert initiator.sum() > 50 and reply.sum() > 50
    assert (r.delivered[denied] == 0).all()
    assert (r.status[initiator] == PktStatus.POLICY_DENY).all() and (r.stage[initiator] == S["firewall"]).all()
    assert (r.fw[initiator] >= 0).all()
    # replies never reach a firewall: the NAT gateway has no mapping for a flow the firewall stopped
    assert (r.status[reply] == PktStatus.NAT_NO_MAPPING).all() and (r.stage[reply] == S["nat"]).all()
    assert (r.fw[reply] == -1).all()
    # one flow-log record per denied flow, with the denying rule and the firewall that denied it
    _, summary, log = files
    recs = {(_ip(x["src_ip"]), _ip(x["dst_ip"]), x["proto"], x["src_port"]): x for x in log}
    fw_of = {}
    for fid, k in zip(gt.flow[initiator].tolist(), r.fw[initiator].tolist()):
        assert fw_of.setdefault(fid, k) == k
    for fid in np.flatnonzero(gt.denied).tolist():
        x = recs[(int(gt.client_ip[fid]), int(gt.server_ip[fid]), int(gt.proto[fid]), int(gt.client_port[fid]))]
        assert (x["rule"], x["action"], x["end_reason"]) == ("block-rest", "deny", "policy-deny")
        assert x["firewall"] == FW_NAMES[fw_of[fid]]
        n_init = int(((gt.flow == fid) & (gt.direction != Direction.REPLY)).sum())
        assert (x["packets"], x["packets_reply"], x["nat_ip"]) == (n_init, 0, None)
    assert summary.rules["block-rest"] == int(gt.denied.sum())


def test_both_directions_cross_the_same_firewall(replays, traffic, fw_tap):
    _, gt = traffic
    r = replays[257]
    reached = r.fw >= 0
    assert (reached == (r.status != PktStatus.NAT_NO_MAPPING)).all()
    fws = collections.defaultdict(set)
    for fid, k in zip(gt.flow[reached].tolist(), r.fw[reached].tolist()):
        fws[fid].add(k)
    assert len(fws) == gt.n_flows and all(len(v) == 1 for v in fws.values())
    both = [f for f in fws if ((gt.flow == f) & (gt.direction == Direction.REPLY) & reached).any()]
    assert len(both) > 200
    assert {next(iter(v)) for v in fws.values()} == {0, 1, 2}
    # on the wire: the outer destination of every frame of a flow (both directions) is one firewall's address
    wire, inner, _, _ = fw_tap
    outer = collections.defaultdict(set)
    for key, dst in zip(_flow_key(inner.src_ip, inner.dst_ip, inner.sport, inner.dport, inner.proto),
                        wire.dst_ip.tolist()):
        outer[key].add(dst)
    assert all(len(v) == 1 for v in outer.values())
    keys = _truth_keys(gt)
    for fid, v in fws.items():
        assert FW_ADDR[next(iter(outer[keys[fid]]))] == FW_NAMES[next(iter(v))]


def test_firewall_sees_original_addresses(traffic, fw_tap, replays):
    """Inner packets on the gwlb-to-fw link: private sources before SNAT, the server after DNAT, never the public
    address; per flow exactly the packets that reached the firewall."""
    _, gt = traffic
    _, inner, _, _ = fw_tap
    assert not (inner.src_ip == PUBLIC).any() and not (inner.dst_ip == PUBLIC).any()
    seen = collections.Counter(_flow_key(inner.src_ip, inner.dst_ip, inner.sport, inner.dport, inner.proto))
    keys = _truth_keys(gt)
    r = replays[257]
    per_flow = np.bincount(gt.flow[r.fw >= 0], minlength=gt.n_flows)
    assert sum(seen.values()) == int(per_flow.sum())
    assert all(seen[keys[f]] == per_flow[f] for f in range(gt.n_flows))
    inb = np.flatnonzero(gt.inbound)
    assert all(seen[keys[f]] > 0 for f in inb)
    assert all((SERVER[0] << 16 | SERVER[1]) in keys[f][:2] for f in inb)


def test_flow_log_agrees_with_taps(files, fw_tap, traffic):
    _, summary, log = files
    wire, inner, ep, cookie = fw_tap
    _, gt = traffic
    assert len(log) == gt.n_flows
    keys = _flow_key(inner.src_ip, inner.dst_ip, inner.sport, inner.dport, inner.proto)
    frames = collections.Counter(keys)
    outer = {k: FW_ADDR[d] for k, d in zip(keys, wire.dst_ip.tolist())}
    per_fw = collections.Counter()
    for x in log:
        key = _flow_key(np.array([_ip(x["src_ip"])], np.uint32), np.array([_ip(x["dst_ip"])], np.uint32),
                        np.array([x["src_port"]], np.uint16), np.array([x["dst_port"]], np.uint16),
                        np.array([x["proto"]], np.uint8))[0]
        assert frames[key] == x["packets"] + x["packets_reply"], x
        assert outer[key] == x["firewall"]
        assert x["endpoint"] == "gwlbe-a"
        per_fw[x["firewall"]] += 1
    assert {k: v["flows"] for k, v in summary.firewalls.items()} == dict(per_fw)
    assert (ep == ENDPOINT_ID).all()
    # one cookie per flow, the same both ways
    ck = collections.defaultdict(set)
    for key, c in zip(_flow_key(inner.src_ip, inner.dst_ip, inner.sport, inner.dport, inner.proto), cookie.tolist()):
        ck[key].add(c)
    assert all(len(v) == 1 for v in ck.values())


def test_fw_to_gwlb_echoes_the_geneve_header(files):
    d, _, _ = files
    to_fw = gf.PacketBatch.concat(list(read_pcap(d / "taps" / "gwlb-to-fw.pcap", parse=True)))
    back = gf.PacketBatch.concat(list(read_pcap(d / "taps" / "fw-to-gwlb.pcap", parse=True)))
    gi, bi = geneve.decap(to_fw), geneve.decap(back)
    allowed = {bytes(gi.packet(i)): i for i in range(len(gi))}
    # every frame that came back was sent (denied packets do not come back; the example policy resets nothing)
    assert 0 < len(back) < len(to_fw)
    for j in range(0, len(back), 29):
        i = allowed[bytes(bi.packet(j))]
        assert (gi.endpoint_id[i], gi.flow_cookie[i]) == (bi.endpoint_id[j], bi.flow_cookie[j])
        assert (back.src_ip[j], back.dst_ip[j]) == (to_fw.dst_ip[i], to_fw.src_ip[i])


# ---------------------------------------------------------------------------------------------------- tshark
def _tshark(*args):
    p = subprocess.run(["tshark", *args], capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 0, p.stderr
    return p.stdout


def _merged(paths, out):
    """One pcapng holding the files in order, interface i = file i (one tshark start instead of one per file)."""
    p = subprocess.run(["mergecap", "-a", "-I", "none", "-w", str(out), *map(str, paths)],
                       capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stderr
    return out


@pytest.mark.tshark
@pytest.mark.skipif(shutil.which("tshark") is None or shutil.which("mergecap") is None,
                    reason="tshark/mergecap not installed")
def test_every_tap_opens_in_tshark_without_malformed_packets(files, tmp_path):
    d, _, _ = files
    paths = [d / "taps" / f"{link}.pcap" for link in TAP_LINKS] + [d / "out.pcap"]
    # a planted damaged file last, to show that the check sees damage: a Geneve frame cut inside its IPv4 header
    frame = next(iter(_dpkt_read(paths[1])))
    with open(tmp_path / "damaged.pcap", "wb") as fh:
        dpkt.pcap.Writer(fh).writepkt(frame[:30], 0)
    paths.append(tmp_path / "damaged.pcap")
    assert all(p.stat().st_size > 24 for p in paths)
    merged = _merged(paths, tmp_path / "all.pcapng")
    out = _tshark("-r", str(merged), "-Y", '_ws.malformed || _ws.expert.severity >= "error"', "-T", "fields",
                  "-e", "frame.interface_id")
    bad = collections.Counter(paths[int(x)].name for x in out.split())
    assert bad == {"damaged.pcap": 1}


@pytest.mark.tshark
@has_tshark
def test_geneve_taps_decode_with_endpoint_id_and_cookie(files, fw_tap, tmp_path):
    d, _, _ = files
    _, inner, _, cookie = fw_tap
    links = ("gwlb-to-fw", "fw-to-gwlb")
    merged = _merged([d / "taps" / f"{link}.pcap" for link in links], tmp_path / "geneve.pcapng")
    out = _tshark("-r", str(merged), "-T", "fields", "-E", "separator=|", "-e", "frame.interface_id",
                  "-e", "udp.dstport", "-e", "geneve.proto_type", "-e", "geneve.option.class",
                  "-e", "geneve.option.type", "-e", "geneve.option.unknown.data", "-e", "ip.dst")
    lines = out.splitlines()
    per_link = collections.Counter()
    fw_ips = {str(ipaddress.IPv4Address(a)) for a in FW_ADDR}
    cookies = {f"{c:08x}" for c in cookie.tolist()}
    for line in lines:
        iface, port, proto, cls, typ, data, dst = line.split("|")
        link = links[int(iface)]
        per_link[link] += 1
        assert port.split(",")[0] == "6081" and proto == "0x0800"
        # AWS's GWLB option class, type 1 endpoint id, 2 attachment id, 3 flow cookie
        assert cls == "0x0108,0x0108,0x0108" and typ == "0x01,0x02,0x03"
        ep, _attach, ck = data.split(",")
        assert ep == f"{ENDPOINT_ID:016x}" and ck in cookies
        assert (dst.split(",")[0] in fw_ips) == (link == "gwlb-to-fw")
    assert per_link["gwlb-to-fw"] == len(inner) and per_link["fw-to-gwlb"] > 1000


# ---------------------------------------------------------------------------------------------------- what-if
@pytest.fixture(scope="module")
def busy():
    """Flows overlap a lot (4 s capture): about 80 are open at t = 2 s."""
    return synth.generate_with_truth(300, 20_000, seed=11, duration=4.0)


EVENT = {"at": 2.0, "firewall": "fw-2", "state": "unhealthy"}


@pytest.fixture(scope="module")
def whatif(busy):
    batch, _ = busy
    base = Replay(batch, 1000)
    keep = Replay(batch, 1000, _topology(failover="keep"), EVENT)
    rebalance = Replay(batch, 1000, _topology(failover="rebalance"), EVENT)
    return base, keep, rebalance


def _on_fw2_before(r, gt):
    before = np.arange(gt.n_packets) < r.cut
    return np.unique(gt.flow[before & (r.fw == 1)])


def test_failover_keep_loses_fw2_flows_and_new_flows_avoid_it(busy, whatif):
    _, gt = busy
    base, keep, _ = whatif
    after = np.arange(gt.n_packets) >= keep.cut
    on2 = _on_fw2_before(keep, gt)
    hit = after & np.isin(gt.flow, on2) & (keep.status != PktStatus.NAT_NO_MAPPING)
    assert hit.sum() > 100 and len(np.unique(gt.flow[hit])) > 10
    assert (keep.status[hit] == PktStatus.FW_FAILED).all() and (keep.stage[hit] == S["gwlb"]).all()
    assert (keep.fw[hit] == -1).all()
    # no packet reaches fw-2 after the event; new flows spread over the other two
    assert not (keep.fw[after] == 1).any()
    new = np.isin(gt.flow, np.flatnonzero(gt.first_ns >= keep.event_ns))
    assert set(np.unique(keep.fw[new & (keep.fw >= 0)]).tolist()) == {0, 2}
    # everything else is as without the event
    other = ~hit
    assert np.array_equal(keep.status[other], base.status[other])
    assert keep.summary.drops["gwlb"] == {"FW_FAILED": int(hit.sum())}
    assert keep.summary.firewalls["fw-2"]["state"] == "unhealthy"


def test_failover_rebalance_moves_fw2_flows_to_healthy_firewalls(busy, whatif):
    """Rebalanced flows reach a firewall that has no session for them. The model's VM-Series requires a SYN to
    start a TCP session (firewall.py, step 5, PAN-OS's default reject of non-SYN TCP), so their mid-stream TCP
    packets are dropped there as TCP_NOT_SYN; other protocols start a new session, classified again from the first
    packet the new firewall sees."""
    assert "TCP_NOT_SYN" in fw_module.__doc__ and "rebalance" in gwlb.__doc__
    _, gt = busy
    base, _, reb = whatif
    after = np.arange(gt.n_packets) >= reb.cut
    on2 = _on_fw2_before(reb, gt)
    moved = after & np.isin(gt.flow, on2) & (reb.status != PktStatus.NAT_NO_MAPPING)
    assert moved.sum() > 100
    assert not (reb.fw[after] == 1).any()
    # each moved flow goes to one healthy firewall, both directions; the fleet shares them
    dest = collections.defaultdict(set)
    for fid, k in zip(gt.flow[moved].tolist(), reb.fw[moved].tolist()):
        dest[fid].add(k)
    assert all(len(v) == 1 and v <= {0, 2} for v in dest.values())
    assert set().union(*dest.values()) == {0, 2}
    tcp = moved & (gt.proto[gt.flow] == 6)
    assert tcp.sum() > 100
    assert (reb.status[tcp] == PktStatus.TCP_NOT_SYN).all() and (reb.stage[tcp] == S["firewall"]).all()
    assert "gwlb" not in reb.summary.drops
    # flows that started before the event elsewhere are untouched
    other = np.isin(gt.flow, np.flatnonzero(gt.first_ns < reb.event_ns)) & ~np.isin(gt.flow, on2)
    assert np.array_equal(reb.status[other], base.status[other])
    assert np.array_equal(reb.fw[other], base.fw[other])


def test_run_applies_events_like_process(busy, whatif, tmp_path):
    """``run(..., events=[...])`` cuts the capture at the event's time: same drops as the per-chunk replay."""
    batch, _ = busy
    _, keep, reb = whatif
    write_pcap(tmp_path / "in.pcap", batch)
    for failover, want in (("keep", keep), ("rebalance", reb)):
        d = copy.deepcopy(EXAMPLE)
        d["gwlb"]["gwlb-1"]["failover"] = failover
        topo = tmp_path / f"{failover}.yaml"
        topo.write_text(yaml.safe_dump(d))
        s = Pipeline.from_yaml(topo).run(tmp_path / "in.pcap", events=[EVENT], chunk=1000)
        assert s.drops == want.summary.drops
        assert s.events == [EVENT]
    # with no events given, the topology's own apply (the shipped one fails fw-2 at 5 s, after this capture)
    s = Pipeline.from_yaml(EXAMPLE_PATH).run(tmp_path / "in.pcap", chunk=1000)
    assert s.events == [] and s.drops == whatif[0].summary.drops


# ---------------------------------------------------------------------------------------------------- check
_BROKEN = {
    # planted mistake -> what `check` reports, and what a replay of the same traffic then shows
    "app-blackhole": ({"app": [{"dst": "0.0.0.0/0", "via": "blackhole"}]}, "black-hole", PktStatus.BLACKHOLE),
    "gwlbe-loop": ({"gwlbe": [{"dst": "0.0.0.0/0", "via": "gwlbe:gwlbe-a"}, {"dst": "10.1.1.0/24", "via": "local"}]},
                   "loop", PktStatus.ROUTE_LOOP),
    "nat-bypass": ({"nat": [{"dst": "10.1.1.0/24", "via": "local"}, {"dst": "0.0.0.0/0", "via": "internet"}]},
                   "bypass", None),
}


@pytest.mark.parametrize("name", list(_BROKEN))
def test_check_findings_match_what_the_path_does(name, busy):
    from gwlb_fast.check import check_topology

    tables, kind, drop = _BROKEN[name]
    d = copy.deepcopy(EXAMPLE)
    d["vpcs"]["business"]["route_tables"].update(tables)
    d["events"] = []
    topo = topology_from_dict(d, f"{name}.yaml")
    assert kind in {f.kind for f in check_topology(topo)}
    batch, gt = busy
    r = Replay(batch[:3000], 3000, topo)
    flow, direction = gt.flow[:3000], gt.direction[:3000]
    if drop is not None:
        outbound_req = (direction == Direction.OUTBOUND) & np.isin(gt.category[flow], OUT_ALLOWED)
        assert (r.status[outbound_req] == drop).all() and (r.stage[outbound_req] == S["route"]).all()
    else:
        # inbound DNAT traffic reaches the server without crossing any firewall
        inb = direction == Direction.INBOUND
        assert inb.any() and (r.delivered[inb] == D_HOST).all() and (r.fw[inb] == -1).all()


def test_shipped_example_is_clean_and_loads():
    from gwlb_fast.check import check_topology

    assert check_topology(load_topology(EXAMPLE_PATH)) == []


def test_design_section_8_call(tmp_path):
    """The library entry point exactly as DESIGN.md section 8 writes it: taps and flow log without extra setup."""
    b = synth.generate(flows=40, packets=2000, seed=11)
    write_pcap(tmp_path / "in.pcap", b)
    summary = gf.Pipeline.from_yaml(EXAMPLE_PATH).run(str(tmp_path / "in.pcap"), str(tmp_path / "out.pcap"),
                                                      taps=str(tmp_path / "taps"), flow_log=str(tmp_path / "f.jsonl"))
    assert summary.packets_in == 2000
    assert summary.packets_out + summary.dropped == 2000
    taps = {p.stem: p.stat().st_size for p in (tmp_path / "taps").glob("*.pcap")}
    assert set(taps) == set(TAP_LINKS)
    assert taps["gwlb-to-fw"] > 24 and taps["fw-to-gwlb"] > 24
    assert (tmp_path / "f.jsonl").read_text().count("\n") > 0


def test_run_reusing_its_arena_writes_what_process_returns(traffic, tmp_path):
    """``run`` copies each chunk into one reused buffer (a chunk spanning more than MAX_SLICE_SECONDS is split into
    slices sharing it): the capture it writes is what fresh ``process`` calls return, packet for packet."""
    batch, _ = traffic
    write_pcap(tmp_path / "in.pcap", batch)
    chunk = 7000  # about 7 s of this capture: every chunk is walked in two slices
    s = Pipeline.from_yaml(EXAMPLE_PATH).run(tmp_path / "in.pcap", tmp_path / "out.pcap", events=[], chunk=chunk)
    pipe = Pipeline.from_yaml(EXAMPLE_PATH)
    want = [p for a in range(0, len(batch), chunk) for p in pipe.process(batch[a : a + chunk]).output.packets()]
    got = [bytes(b) for b in _dpkt_read(tmp_path / "out.pcap")]
    assert s.packets_out == len(want) > 0
    assert got == want


# ---------------------------------------------------------------------------------- real captures: snaplen, checksums
REAL = data_path("captures", "real")


def _real(name):
    p = REAL / name
    if not p.exists():
        pytest.skip(f"{p} not present")
    return p


@pytest.mark.skipif(shutil.which("editcap") is None, reason="editcap not installed")
def test_snapped_capture_is_processed_and_keeps_wire_lengths(tmp_path):
    """``editcap -s 60``: every packet cut, L4 headers whole; each is processed (counted truncated), and the
    output keeps the original length on the wire."""
    src = _real("http_google.pcapng")
    cut = tmp_path / "cut.pcapng"
    subprocess.run(["editcap", "-s", "60", str(src), str(cut)], check=True, capture_output=True)
    full = next(iter(read_pcap(src, chunk=1 << 20)))
    cidrs = ("172.16.0.0/16", "172.16.16.0/24", "172.16.250.0/24", "172.16.251.0/24")
    ref_sum = Pipeline(capture_topology(*cidrs)).run(str(src), str(tmp_path / "ref.pcap"))
    summ = Pipeline(capture_topology(*cidrs)).run(str(cut), str(tmp_path / "out.pcap"))
    snapped = int(np.count_nonzero(full.caplen > 60))
    assert snapped > 0 and summ.truncated == snapped
    assert "IP_TRUNCATED" not in str(summ.drops)
    assert summ.packets_out == ref_sum.packets_out and summ.drops == ref_sum.drops
    out = next(iter(read_pcap(tmp_path / "out.pcap", chunk=1 << 20)))
    ref_out = next(iter(read_pcap(tmp_path / "ref.pcap", chunk=1 << 20)))
    assert np.array_equal(out.wirelen, ref_out.wirelen)  # lengths on the wire as without the snaplen
    assert np.all(out.caplen <= 60) and np.any(out.wirelen > out.caplen)
    # the captured bytes are the full run's bytes, cut (NAT rewrites are incremental, so they agree)
    assert all(out.packet(i) == ref_out.packet(i)[:60] for i in range(len(out)))


def test_bad_ip_header_checksum_is_dropped_and_counted(tmp_path):
    pipe = Pipeline(_topology())
    good = synth.generate(flows=4, packets=40, seed=3)
    raw = good.data.copy()
    bad_rows = np.arange(0, len(good), 7)
    for i in bad_rows.tolist():  # flip a bit of the header checksum of every 7th packet
        raw[int(good.off[i]) + 14 + 10] ^= 0x40
    batch = gf.PacketBatch(raw, good.off, good.caplen, good.wirelen, good.ts_ns, good.linktype)
    res = pipe.process(batch)
    assert np.all(res.status[bad_rows] == PktStatus.BAD_IP_CSUM)
    assert np.all(res.stage[bad_rows] == S["input"])
    assert pipe.summary().drops["input"]["BAD_IP_CSUM"] == bad_rows.size


@pytest.mark.parametrize("action", ["deny", "reset-both"])
def test_taps_change_nothing_but_the_tap_files(tmp_path, action):
    """With taps the firewalls receive real Geneve frames; without, the packets as they would decapsulate them
    (``geneve.carried``), and a frame only for each reset's headers: outputs, flow logs and counters are the same."""
    topo = copy.deepcopy(EXAMPLE)
    topo.pop("events", None)
    topo["security_policy"]["rules"][-1]["action"] = action
    (tmp_path / "topo.yaml").write_text(yaml.safe_dump(topo))
    write_pcap(tmp_path / "in.pcap", synth.generate(flows=300, packets=6000, seed=4))
    got = {}
    for taps in (False, True):
        d = tmp_path / f"taps-{taps}"
        d.mkdir()
        s = Pipeline.from_yaml(tmp_path / "topo.yaml").run(
            tmp_path / "in.pcap", d / "out.pcap", flow_log=d / "flows.jsonl", taps=d / "taps" if taps else None,
            chunk=1000)
        got[taps] = ((d / "out.pcap").read_bytes(), (d / "flows.jsonl").read_text(), s.drops, s.rules, s.firewalls,
                     s.generated)
    assert got[False] == got[True]
    assert (got[False][5] > 0) == (action == "reset-both")


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), shuffle=st.booleans(), fmt=st.sampled_from(["pcap", "pcapng"]),
       headroom=st.sampled_from([None, 1.0, 1.25]))
def test_own_copy_keeps_every_packet(tmp_path_factory, seed, shuffle, fmt, headroom):
    """The path's own copy of a chunk: the capture's stretch copied whole when the packets lie in order in it and it
    fits, gathered otherwise (rows out of order, an arena that is too small); either way every packet's bytes and
    core columns, and packets that no longer share memory with the capture."""
    from gwlb_fast.pipeline import FRAME_ROOM, _own_copy

    d = tmp_path_factory.mktemp("own")
    b = synth.generate(flows=5, packets=60, seed=seed)
    path = d / f"in.{fmt}"
    write_pcap(path, b)
    with read_pcap(path, chunk=100, parse=False) as r:
        chunk = next(iter(r))
        if shuffle:
            chunk = chunk[np.random.default_rng(seed).permutation(len(chunk))]
        arena = None if headroom is None else np.empty(int(chunk.nbytes * headroom), np.uint8)
        own = _own_copy(chunk, arena)
        assert own.packets() == chunk.packets()
        for c in ("caplen", "wirelen", "ts_ns", "linktype"):
            assert np.array_equal(getattr(own, c), getattr(chunk, c))
        room = FRAME_ROOM if int(chunk.off[0]) >= FRAME_ROOM else 0  # the bytes before the first packet, kept
        span = int(chunk.off[-1]) + int(chunk.caplen[-1]) - int(chunk.off[0]) + room
        whole = (not shuffle and span <= chunk.nbytes * 1.125 + room
                 and (arena is None or span <= arena.shape[0]))
        # in order: the stretch with the record headers between the packets (16 bytes each in a classic capture)
        # and before the first; else back to back
        assert own.data.shape[0] == (span if whole else chunk.nbytes)
        if whole and fmt == "pcap":
            assert span == chunk.nbytes + 16 * len(chunk) and int(own.off[0]) == 16
        if arena is not None:
            assert own.data.base is arena or own.data.base is arena.base
        own.data[:] = 0  # the copy is the path's own: the capture's packets are untouched
        assert chunk.packets() != own.packets()


@pytest.mark.parametrize("chunk", [700, 65536])
def test_output_written_from_the_arena_equals_the_gathered_output(tmp_path, monkeypatch, chunk):
    """Pipeline.run writes a classic pcap's delivered packets from its own copy of each chunk (their record
    headers written in place, PcapWriter.write_framed), alternating two arenas while the file is written: the file
    equals the one written by gathering every record (write_framed turned off), with resets, drops and a failure
    event in the capture, over many chunks."""
    batch = synth.generate(flows=300, packets=6000, seed=11)
    write_pcap(tmp_path / "in.pcap", batch)
    topo = tmp_path / "t.yaml"
    d = copy.deepcopy(EXAMPLE)
    d["events"] = [{"at": 0.5, "firewall": "fw-2", "state": "unhealthy"}]
    topo.write_text(yaml.safe_dump(d))
    used = []
    real = gf.pcapio.OrderedWriter.write_framed

    def counted(self, b, watermark=None):
        t = real(self, b, watermark)
        used.append(t is not None)
        return t

    monkeypatch.setattr(gf.pcapio.OrderedWriter, "write_framed", counted)
    framed = Pipeline.from_yaml(topo).run(tmp_path / "in.pcap", tmp_path / "framed.pcap", chunk=chunk)
    assert sum(used) >= len(used) // 2 > 0  # most chunks went from their arena (not those with resets)
    monkeypatch.setattr(gf.pcapio.OrderedWriter, "write_framed", lambda self, b, watermark=None: None)
    gathered = Pipeline.from_yaml(topo).run(tmp_path / "in.pcap", tmp_path / "gathered.pcap", chunk=chunk)
    assert framed.packets_out == gathered.packets_out > 0 and framed.generated == gathered.generated
    assert (tmp_path / "framed.pcap").read_bytes() == (tmp_path / "gathered.pcap").read_bytes()


def _summary_of(s):
    d = json.loads(s.to_json())
    for k in ("seconds", "stage_seconds", "mpps", "elapsed"):
        d.pop(k, None)
    return d


@pytest.mark.parametrize("case", ["slices", "small-chunks", "event", "resets", "corrupt", "pcapng"])
def test_run_on_chunks_the_reader_copied_into_the_arena_writes_what_it_did_before(traffic, busy, tmp_path,
                                                                                  monkeypatch, case):
    """``run`` on a capture by path has its reader copy each chunk into the path's arena as it scans it
    (PcapReader.arena_for) and walks it there; the outputs (capture, taps, flow log, summary) are those of a run
    on a reader opened apart (which copies each chunk from the capture, as before), byte for byte: chunks in two
    slices (each chunk copied out of the arena first), many small chunks in two arenas taken in turn, a chunk cut
    by an event, firewall failures (resets), a corrupt record, pcapng."""
    import gwlb_fast.pipeline as pipeline_mod

    batch = (busy if case == "event" else traffic)[0]
    topo = EXAMPLE_PATH
    if case == "resets":  # a firewall fails, then another one: the chunk cut by the second has resets before it
        batch = synth.generate(flows=300, packets=6000, seed=11, duration=4.0)
        d = copy.deepcopy(EXAMPLE)
        d["events"] = [{"at": 0.5, "firewall": "fw-2", "state": "unhealthy"},
                       {"at": 1.6, "firewall": "fw-1", "state": "unhealthy"}]
        topo = tmp_path / "t.yaml"
        topo.write_text(yaml.safe_dump(d))
    name = "in.pcapng" if case == "pcapng" else "in.pcap"
    write_pcap(tmp_path / name, batch)
    if case == "corrupt":
        raw = bytearray((tmp_path / name).read_bytes())
        at = 24 + int(batch.caplen[:5000].sum()) + 16 * 5000
        raw[at + 8: at + 12] = (1 << 30).to_bytes(4, "little")
        (tmp_path / name).write_bytes(bytes(raw))
    chunk, events = {"slices": (7000, []), "small-chunks": (257, []), "event": (3000, [EVENT]),
                     "resets": (700, None), "corrupt": (4000, []), "pcapng": (3000, [])}[case]
    in_place = []
    own_copy = pipeline_mod._own_copy

    def watched(b, arena):
        out = own_copy(b, arena)
        in_place.append(len(b) > 0 and out.data.ctypes.data == b.data.ctypes.data)
        return out

    monkeypatch.setattr(pipeline_mod, "_own_copy", watched)
    split = Pipeline._split_at_events
    cut = []

    def split_watched(self, b, evs, arena=None):
        parts = list(split(self, b, evs, arena))
        pieces = [x for x in parts if not isinstance(x, dict)]
        if arena is not None and len(pieces) > 1:
            # a chunk cut in pieces is walked out of the arena (a piece's resets go after it, over the next piece)
            cut.append(not any(np.shares_memory(x.data, arena) for x in pieces))
        return iter(parts)

    monkeypatch.setattr(Pipeline, "_split_at_events", split_watched)
    runs = {}
    for how in ("filled", "apart"):
        d = tmp_path / how
        d.mkdir()
        src = tmp_path / name if how == "filled" else read_pcap(tmp_path / name, chunk=chunk, parse=False,
                                                                strict=False)
        in_place.clear()
        s = Pipeline.from_yaml(topo).run(src, d / "out.pcap", taps=d / "taps", flow_log=d / "flows.jsonl",
                                         events=events, chunk=chunk, strict=False)
        runs[how] = (_summary_of(s), (d / "out.pcap").read_bytes(), (d / "flows.jsonl").read_bytes(),
                     {p.name: p.read_bytes() for p in sorted((d / "taps").iterdir())}, list(in_place))
    filled, apart = runs["filled"], runs["apart"]
    assert filled[:4] == apart[:4]
    assert filled[0]["packets_out"] > 0
    assert not any(apart[4])  # a reader opened apart: every chunk copied
    if case == "slices":
        assert not any(filled[4])  # walked in slices: each chunk first copied out of the arena the slices share
    else:
        assert sum(filled[4]) >= (2 if case in ("event", "resets") else len(filled[4]) // 2)  # most chunks walked where read
    if case == "corrupt":
        assert filled[0]["input_skipped_records"] == 1
    if case in ("event", "resets"):
        assert cut and all(cut)
