"""IPv4 fragments: the tracker kernel against its oracle (and raw bytes), and fragments along the whole path."""
import collections
import copy
import re
import shutil
import socket
import struct
import subprocess

import dpkt
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import gwlb_fast as gf
from gwlb_fast import synth
from gwlb_fast._kernels import frag as fk
from gwlb_fast.config import topology_from_dict
from gwlb_fast.pcapio import read_pcap, write_pcap
from gwlb_fast.pipeline import STAGES, Pipeline
from gwlb_fast.stages.fragments import FragmentTracker
from gwlb_fast.status import PktStatus
from tests.oracles import frag as oracle
from tests.shared_data import data_path
from tests.strategies import ipv4_packet
from tests.topologies import EXAMPLE, capture_topology

S_INPUT = STAGES.index("input")
has_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
ETH = b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00"


def _ip(s):
    return int.from_bytes(socket.inet_aton(s), "big")


def fragment(frame: bytes, sizes) -> list[bytes]:
    """Cut an Ethernet frame's IPv4 datagram into fragments whose payloads have the given sizes (multiples of 8
    but the last; the rest of the payload goes into the last fragment). dpkt writes the headers' checksums."""
    eth = dpkt.ethernet.Ethernet(frame)
    ip = eth.data
    payload = bytes(ip.data) if not isinstance(ip.data, bytes) else ip.data
    cuts, pos = [], 0
    for size in sizes:
        if pos + size >= len(payload):
            break
        cuts.append((pos, pos + size))
        pos += size
    cuts.append((pos, len(payload)))
    out = []
    for k, (a, b) in enumerate(cuts):
        f = bytearray(bytes(dpkt.ip.IP(src=ip.src, dst=ip.dst, p=ip.p, id=ip.id, ttl=ip.ttl, data=payload[a:b])))
        struct.pack_into("!H", f, 6, (a // 8) | (0x2000 if k < len(cuts) - 1 else 0))
        struct.pack_into("!H", f, 10, 0)
        struct.pack_into("!H", f, 10, dpkt.in_cksum(bytes(f[:20])))
        out.append(bytes(eth)[:14] + bytes(f))
    return out


def udp_frame(src, dst, sport, dport, payload, ip_id=7):
    ip = dpkt.ip.IP(src=socket.inet_aton(src), dst=socket.inet_aton(dst), p=17, id=ip_id, ttl=64,
                    data=dpkt.udp.UDP(sport=sport, dport=dport, data=payload))
    ip.data.ulen = 8 + len(payload)
    return ETH + bytes(ip)


# ------------------------------------------------------------------------------------------- the kernel vs oracle
def _run_kernel(packets, ts, fates, hold_ns=10**9, capacity=1024, now=None):
    b = gf.PacketBatch.from_packets(packets, ts_ns=ts).parse()
    parsed = b.status.copy()
    n = len(b)
    tr = FragmentTracker(capacity=capacity, hold_seconds=hold_ns / 1e9)
    slot, gen = np.full(n, -1, np.int64), np.zeros(n, np.int64)
    kind = tr.scan(b, 0, slot, gen)
    scanned = b.status.copy()
    stage = np.where(b.status != PktStatus.OK, S_INPUT, 255).astype(np.uint8)
    stage[kind == fk.K_LATER] = 255
    fw = np.full(n, -1, np.int16)
    delivered = np.zeros(n, np.uint8)
    for i, f in fates.items():  # what the walk did to each first fragment
        if kind[i] == fk.K_FIRST:
            b.status[i], stage[i], fw[i], delivered[i], b.src_ip[i], b.dst_ip[i] = f
    release = np.zeros(n, np.int64)
    fk.frag_settle(b.data, b.off, b.caplen, b.l3_off, kind, slot, gen, b.status, stage, fw, delivered, b.src_ip,
                   b.dst_ip, b.ts_ns, tr.tab, int(b.ts_ns.max()) if now is None else now, tr.hold_ns, S_INPUT,
                   release)
    return b, parsed, kind, scanned, stage, fw, delivered, release


@st.composite
def fragmented_traffic(draw):
    """A few UDP/ICMP datagrams cut into fragments (sometimes with a duplicate or an overlapping piece, sometimes
    missing their first fragment), all in one shuffled list, plus a fate for each first fragment."""
    packets = []
    for d in range(draw(st.integers(1, 4))):
        frame = udp_frame("10.1.1.5", "198.51.100.9", 1000 + d, 53, bytes(draw(st.integers(1, 400))), ip_id=d)
        pieces = fragment(frame, [8 * draw(st.integers(1, 8)) for _ in range(6)])
        if draw(st.booleans()) and len(pieces) > 1:
            pieces = pieces[1:]  # the first fragment never comes
        if draw(st.integers(0, 4)) == 0:
            pieces.append(draw(st.sampled_from(pieces)))  # a duplicate: overlaps
        packets += pieces
    packets += [udp_frame("10.1.1.6", "198.51.100.9", 5, 6, b"whole")]
    order = draw(st.permutations(range(len(packets))))
    packets = [packets[i] for i in order]
    fates = {}
    for i in range(len(packets)):  # (status, stage, firewall, delivered, src, dst) after the walk
        if draw(st.booleans()):
            fates[i] = (PktStatus.OK, 255, draw(st.integers(0, 2)), 1, _ip("203.0.113.10"), _ip("198.51.100.9"))
        else:
            fates[i] = (PktStatus.POLICY_DENY, 4, draw(st.integers(0, 2)), 0, _ip("10.1.1.5"), _ip("198.51.100.9"))
    return packets, fates


@given(fragmented_traffic())
@settings(max_examples=150)
def test_kernel_matches_oracle(case):
    packets, fates = case
    assert all(dpkt.in_cksum(p[14:34]) == 0 for p in packets)
    ts = list(range(1000, 1000 + len(packets)))
    b, parsed, kind, scanned, stage, fw, delivered, release = _run_kernel(packets, ts, fates)
    l3s = [14] * len(packets)
    okind, entries, ostatus = oracle.scan(packets, l3s, list(parsed), ts, 10**9)
    assert list(kind) == okind
    assert list(scanned) == [int(s) for s in ostatus]
    want = oracle.settle(okind, entries, {i: fates[i] for i in range(len(packets)) if okind[i] == fk.K_FIRST},
                         ts, max(ts), 10**9, S_INPUT)
    for i, w in enumerate(want):
        if w is None:
            continue
        status, stg, dlv, f, src, dst, rel, t = w
        assert (b.status[i], stage[i], release[i], b.ts_ns[i]) == (status, stg, rel, t), i
        if dlv is not None:
            assert (delivered[i], fw[i]) == (dlv, f)
        if src is not None:
            assert (b.src_ip[i], b.dst_ip[i]) == (src, dst)
            ip = dpkt.ip.IP(b.packet(i)[14:])  # the header was rewritten with a checksum that still verifies
            assert ip.src == socket.inet_aton("203.0.113.10")
            raw = bytes(ip)
            ip.sum = 0
            assert bytes(ip) == raw


@given(fragmented_traffic(), st.integers(1, 5), st.data())
@settings(max_examples=100)
def test_refs_kernel_matches_oracle(case, width, data):
    """``frag_refs``: each later fragment that took its first fragment's fate gets the refs the walk left on that
    first fragment's row; every other later fragment -1; other rows untouched."""
    packets, _fates = case
    ts = list(range(1000, 1000 + len(packets)))
    n = len(packets)
    b = gf.PacketBatch.from_packets(packets, ts_ns=ts).parse()
    parsed = b.status.copy()
    tr = FragmentTracker(capacity=1024, hold_seconds=1.0)
    slot, gen = np.full(n, -1, np.int64), np.zeros(n, np.int64)
    kind = tr.scan(b, 0, slot, gen)
    stage = np.where(b.status != PktStatus.OK, S_INPUT, 255).astype(np.uint8)
    stage[kind == fk.K_LATER] = 255
    fw, delivered = np.full(n, -1, np.int16), np.zeros(n, np.uint8)
    release = tr.settle(b, kind, slot, gen, stage, fw, delivered, S_INPUT)
    row_refs = np.array(data.draw(st.lists(st.lists(st.integers(-1, 10**6), min_size=width, max_size=width),
                                           min_size=n, max_size=n)), np.int64).reshape(n, width)
    given_refs = row_refs.copy()
    tr.refs = np.full((tr.tab.shape[0], width), -1, np.int64)
    tr.follow(kind, slot, gen, release, row_refs)
    okind, entries, _ = oracle.scan(packets, [14] * n, list(parsed), ts, 10**9)
    settled = oracle.settle(okind, entries, {i: (0, 255, -1, 0, 0, 0) for i in range(n) if okind[i] == fk.K_FIRST},
                            ts, max(ts), 10**9, S_INPUT)
    want = oracle.refs(okind, entries, settled, {i: given_refs[i].tolist() for i in range(n)})
    for i in range(n):
        if i in want:
            assert row_refs[i].tolist() == (want[i] if want[i] is not None else [-1] * width), i
        else:
            assert row_refs[i].tolist() == given_refs[i].tolist(), i
    with pytest.raises(ValueError, match="row_refs"):
        fk.frag_refs(kind, slot, gen, release, tr.tab, tr.refs, np.zeros((n, width + 1), np.int64))


@given(st.lists(st.one_of(ipv4_packet(), st.binary(max_size=60)), max_size=30), st.sampled_from([1, 228]))
def test_kernel_raw_bytes_fuzz(blobs, linktype):
    b = gf.PacketBatch.from_packets(blobs, linktype=linktype).parse()
    before = b.data.copy()
    n = len(b)
    tr = FragmentTracker(capacity=8, hold_seconds=1.0, max_held=4)
    slot, gen = np.full(n, -1, np.int64), np.zeros(n, np.int64)
    kind = tr.scan(b, 0, slot, gen)
    assert np.array_equal(b.data, before)
    assert set(np.unique(b.status)) <= {int(s) for s in PktStatus}
    stage = np.full(n, 255, np.uint8)
    tr.settle(b, kind, slot, gen, stage, np.zeros(n, np.int16), np.ones(n, np.uint8), S_INPUT)
    changed = np.flatnonzero(b.data != before)  # only address and checksum bytes of later fragments
    for pos in changed.tolist():
        i = int(np.searchsorted(b.off, pos, side="right")) - 1
        assert kind[i] == fk.K_LATER and 10 <= pos - b.off[i] - b.l3_off[i] < 20
    assert tr.n_held <= 4


def test_kernel_argument_checks():
    b = gf.PacketBatch.from_packets([udp_frame("10.0.0.1", "10.0.0.2", 1, 2, b"x")]).parse()
    kind, slot, gen = np.zeros(1, np.uint8), np.zeros(1, np.int64), np.zeros(1, np.int64)
    with pytest.raises(ValueError, match="multiple"):
        fk.frag_scan(b.data, b.off, b.caplen, b.l3_off, b.status, b.src_ip, b.dst_ip, b.proto, b.ts_ns,
                     np.zeros((3, fk.NF), np.int64), np.zeros((3, 2 * fk.MAX_RANGES), np.int32), 1, 0, kind, slot,
                     gen)
    with pytest.raises(ValueError, match="kind"):
        fk.frag_scan(b.data, b.off, b.caplen, b.l3_off, b.status, b.src_ip, b.dst_ip, b.proto, b.ts_ns,
                     np.zeros((4, fk.NF), np.int64), np.zeros((4, 2 * fk.MAX_RANGES), np.int32), 1, 0,
                     np.zeros(2, np.uint8), slot, gen)


def test_table_full_and_hold_expiry():
    frames = [fragment(udp_frame("10.1.1.5", "198.51.100.9", 1, 2, bytes(64), ip_id=i), [16])[1] for i in range(9)]
    b, *_ = _run_kernel(frames, list(range(9)), {}, capacity=4)
    # 4 rows hold 4 datagrams at most (one bucket may fill before the table does): the rest are refused
    assert np.count_nonzero(b.status == PktStatus.FRAGMENT) <= 4
    assert np.count_nonzero(b.status == PktStatus.FRAG_TABLE_FULL) >= 5
    # past the hold window, a fragment still waiting for its first fragment is dropped
    late = fragment(udp_frame("10.1.1.5", "198.51.100.9", 1, 2, bytes(64)), [16])[1:]
    b, *_, release = _run_kernel(late, [0], {}, hold_ns=1000, now=5000)
    assert b.status[0] == PktStatus.FRAG_NO_FIRST and release[0] == fk.R_DROPPED


# ------------------------------------------------------------------------------------------------ along the path
def _example():
    d = {**EXAMPLE, "events": []}
    return topology_from_dict(d, "example.yaml")


def _fragment_batch(batch, rng, max_frags=5):
    """Each UDP packet of ``batch`` with a payload of more than 16 bytes cut into fragments (random sizes, random
    order among themselves, same timestamp). Returns the new batch and the source row of each packet."""
    out, src, ts = [], [], []
    for i in range(len(batch)):
        pkt = batch.packet(i)
        ip = dpkt.ethernet.Ethernet(pkt).data
        if isinstance(ip, dpkt.ip.IP) and ip.p == 17 and len(ip.data) > 24 and rng.random() < 0.7:
            pieces = fragment(pkt, [8 * int(rng.integers(1, 4)) for _ in range(max_frags - 1)])
            order = rng.permutation(len(pieces))
            pieces = [pieces[k] for k in order]
        else:
            pieces = [pkt]
        out += pieces
        src += [i] * len(pieces)
        ts += [int(batch.ts_ns[i])] * len(pieces)
    return gf.PacketBatch.from_packets(out, ts_ns=np.array(ts, np.int64)), np.array(src)


def _reassemble(frames):
    """The IPv4 payload and the (src, dst) of fragments (Ethernet frames) of one datagram."""
    parts = sorted((dpkt.ethernet.Ethernet(f).data for f in frames), key=lambda ip: ip.offset)
    return parts[0].src, parts[0].dst, b"".join(bytes(p.data) if not isinstance(p.data, bytes) else p.data
                                                  for p in parts)


@given(st.integers(0, 2**32 - 1), st.sampled_from([7, 64, 4096]))
@settings(max_examples=12, deadline=None)
def test_fragmented_capture_has_the_fates_of_the_whole_one(seed, chunk):
    """Random fragmentation of synthetic traffic (SNAT'ed DNS, DNAT'ed and denied flows...): every datagram's
    fragments share the fate the unfragmented packet has (delivered or dropped at the same stage for the same
    reason, same firewall), and the delivered fragments reassemble to the unfragmented output packet (NAT
    translation and checksums included)."""
    rng = np.random.default_rng(seed)
    whole = synth.generate(flows=30, packets=200, seed=seed % 1000, duration=2.0)
    cut, src = _fragment_batch(whole, rng)
    ref = Pipeline(_example()).process(whole)
    pipe = Pipeline(_example())
    res = [pipe.process(cut[a:a + chunk]) for a in range(0, len(cut), chunk)]
    status = np.concatenate([r.status for r in res])
    stage = np.concatenate([r.stage for r in res])
    fw = np.concatenate([r.fw for r in res])
    out = gf.PacketBatch.concat([r.output for r in res])
    # a fragment held at the end of its chunk (its first fragment in a later one) is settled there: its fate shows
    # in that chunk's output or in the drop counters, checked below
    known = status != PktStatus.FRAGMENT
    assert np.array_equal(status[known], ref.status[src][known])
    assert np.array_equal(stage[known], ref.stage[src][known])
    assert np.array_equal(fw[known], ref.fw[src][known])
    pipe.finish()
    want_drops = collections.Counter()
    for st_, sg in zip(ref.status[src].tolist(), ref.stage[src].tolist()):
        if sg != 255:
            want_drops[(STAGES[sg], PktStatus(st_).name)] += 1
    got_drops = collections.Counter({(sg, r): c for sg, d in pipe.summary().drops.items() for r, c in d.items()})
    assert got_drops == want_drops
    # delivered: each datagram's fragments reassemble to the packet the whole capture delivered
    ref_out = {}
    ref_rows = np.flatnonzero(ref.delivered)
    for k, i in enumerate(ref_rows.tolist()):
        ip = dpkt.ethernet.Ethernet(ref.output.packet(k)).data
        ref_out[i] = (ip.src, ip.dst, bytes(ip.data))
    got = {}
    out_frames = out.packets()
    assert len(out_frames) == int(np.count_nonzero(ref.delivered[src]))
    # map each output frame back to its datagram by (addresses, IP id, protocol) in output order
    groups = {}
    for f in out_frames:
        ip = dpkt.ethernet.Ethernet(f).data
        groups.setdefault((ip.src, ip.dst, ip.p, ip.id), []).append(f)
    for frames in groups.values():
        s, d, payload = _reassemble(frames)
        got.setdefault((s, d, payload), 0)
        got[(s, d, payload)] += 1
    want = {}
    for v in ref_out.values():
        want[v] = want.get(v, 0) + 1
    assert got == want
    assert pipe.summary().packets_out == len(out_frames)


def _pipe_run(topo, frames, tmp_path, name="in.pcap", ts=None):
    src = tmp_path / name
    write_pcap(src, gf.PacketBatch.from_packets(frames, ts_ns=ts))
    pipe = Pipeline(topo)
    summary = pipe.run(str(src), str(tmp_path / "out.pcap"))
    return pipe, summary, next(iter(read_pcap(tmp_path / "out.pcap", chunk=1 << 16)), None)


def _tshark_fields(path, *fields, prefs=()):
    args = ["tshark", "-r", str(path), "-T", "fields"]
    for p in prefs:
        args += ["-o", p]
    for f in fields:
        args += ["-e", f]
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=120).stdout
    return [line.split("\t") for line in out.splitlines()]


CHECKSUMS = ("ip.check_checksum:TRUE", "udp.check_checksum:TRUE", "tcp.check_checksum:TRUE")


@has_tshark
def test_fragments_through_dnat_reassemble_in_tshark(tmp_path):
    """An inbound UDP datagram to a DNAT port, in three fragments, the first one last: every fragment reaches the
    server, rewritten; tshark reassembles the output and finds the UDP checksum right."""
    topo = capture_topology("10.1.0.0/16", "10.1.1.0/24", "10.1.2.0/24", "10.1.3.0/24",
                            dnat=[{"proto": "udp", "port": 5000, "to": "10.1.1.20:5001"}])
    frame = udp_frame("198.51.100.7", "203.0.113.10", 40000, 5000, bytes(range(256)) * 12, ip_id=0x4242)
    pieces = fragment(frame, [1480, 1480])
    assert len(pieces) == 3
    _, summary, _ = _pipe_run(topo, [pieces[1], pieces[2], pieces[0]], tmp_path,
                                   ts=np.array([0, 1000, 2000], np.int64))
    assert summary.packets_out == 3 and summary.dropped == 0
    rows = _tshark_fields(tmp_path / "out.pcap", "ip.src", "ip.dst", "ip.checksum.status", "udp.dstport",
                          "udp.checksum.status", "ip.frag_offset", prefs=CHECKSUMS)
    assert [r[1] for r in rows] == ["10.1.1.20"] * 3 and all(r[2] == "1" for r in rows)
    assert [r[5] for r in rows] == ["0", "185", "370"]  # the held ones follow their first fragment out
    reassembled = [r for r in rows if r[3]]
    assert reassembled and reassembled[0][3] == "5001" and reassembled[0][4] == "1"  # UDP checksum good


REAL = data_path("captures", "real")


@has_tshark
def test_real_fragments_through_snat(tmp_path):
    """ip_frag_source.pcapng: an ICMP echo of 3 fragments from 10.10.0.3 (IPv4 checksums left to the NIC) and
    its 3-fragment reply. All six go through SNAT and back; tshark reassembles both and every checksum is right."""
    src = REAL / "ip_frag_source.pcapng"
    if not src.exists():
        pytest.skip("real captures not present")
    topo = capture_topology("10.10.0.0/16", "10.10.0.0/24", "10.10.250.0/24", "10.10.251.0/24")
    summary = Pipeline(topo).run(str(src), str(tmp_path / "out.pcap"))
    assert (summary.packets_in, summary.packets_out, summary.dropped) == (6, 6, 0)
    assert summary.ip_checksums_filled == 3
    rows = _tshark_fields(tmp_path / "out.pcap", "ip.src", "ip.dst", "ip.checksum.status", "icmp.type",
                          "icmp.checksum.status", prefs=CHECKSUMS)
    assert [r[0] for r in rows].count("203.0.113.10") == 3 and [r[1] for r in rows].count("10.10.0.3") == 3
    assert all(r[2] == "1" for r in rows)
    assert sorted((r[3], r[4]) for r in rows if r[3]) == [("0", "1"), ("8", "1")]


def test_real_fragments_count_in_their_session(tmp_path):
    """ip_frag_source.pcapng (an ICMP echo and its reply, 3,568-byte datagrams in three fragments each): the flow
    log's record counts all six fragments, the IPv4 bytes each way as dpkt sums them; the SNAT mapping counts the
    request's three frames and the reply's (replayed in private form, counted as a public-form reply is), the GWLB
    all six frames (tshark's IPv4 conversation totals, else dpkt's)."""
    import json

    src = REAL / "ip_frag_source.pcapng"
    if not src.exists():
        pytest.skip("real captures not present")
    want = collections.defaultdict(lambda: [0, 0, 0])  # (src, dst) -> packets, IPv4 bytes, frame bytes
    with open(src, "rb") as f:
        for _, buf in dpkt.pcapng.Reader(f):
            ip = dpkt.ethernet.Ethernet(buf).data
            w = want[(socket.inet_ntoa(ip.src), socket.inet_ntoa(ip.dst))]
            w[0] += 1
            w[1] += ip.len
            w[2] += len(buf)
    assert sorted(want) == [("10.10.0.3", "192.168.0.128"), ("192.168.0.128", "10.10.0.3")]
    req, rep = want[("10.10.0.3", "192.168.0.128")], want[("192.168.0.128", "10.10.0.3")]
    topo = capture_topology("10.10.0.0/16", "10.10.0.0/24", "10.10.250.0/24", "10.10.251.0/24")
    pipe = Pipeline(topo)
    summary = pipe.run(str(src), str(tmp_path / "out.pcap"), flow_log=str(tmp_path / "flows.jsonl"))
    records = [json.loads(line) for line in (tmp_path / "flows.jsonl").read_text().splitlines()]
    assert len(records) == 1
    r = records[0]
    assert (r["src_ip"], r["dst_ip"], r["proto"], r["action"]) == ("10.10.0.3", "192.168.0.128", 1, "allow")
    assert (r["packets"], r["bytes"], r["packets_reply"], r["bytes_reply"]) == (req[0], req[1], rep[0], rep[1])
    assert (req[0], req[1]) == (3, 3568)
    m = pipe.nats[0].mappings()
    assert (m["packets"].tolist(), m["bytes"].tolist()) == ([req[0] + rep[0]], [req[2] + rep[2]])
    frames, nbytes = req[0] + rep[0], req[2] + rep[2]
    if shutil.which("tshark"):
        out = subprocess.run(["tshark", "-r", str(src), "-q", "-z", "conv,ip"], capture_output=True, text=True,
                             check=True, timeout=120).stdout
        (line,) = [x for x in out.splitlines() if "<->" in x]
        total = re.findall(r"(\d+) (\d+) bytes", line.replace(",", ""))
        frames, nbytes = int(total[2][0]), int(total[2][1])  # <-, ->, total
    assert sum(c["packets"] for c in summary.firewalls.values()) == frames == 6
    assert sum(c["bytes"] for c in summary.firewalls.values()) == nbytes


def test_fragments_of_a_denied_flow_are_dropped_like_it(tmp_path):
    """The first fragment decides: UDP to a port the policy denies, fragments before and after it, all dropped
    at the firewall with the same reason; a datagram whose first fragment never comes is held, then dropped
    (FRAG_NO_FIRST) when the run ends; an overlapping fragment is dropped (FRAG_OVERLAP)."""
    denied = fragment(udp_frame("10.1.1.5", "198.51.100.9", 4000, 9999, bytes(3000), ip_id=1), [1480, 1480])
    orphan = fragment(udp_frame("10.1.1.5", "198.51.100.9", 4001, 53, bytes(3000), ip_id=2), [1480, 1480])[1:]
    dns = fragment(udp_frame("10.1.1.5", "198.51.100.9", 4002, 53, bytes(3000), ip_id=3), [1480, 1480])
    over = dns[1]  # the same fragment again: overlaps
    frames = [denied[2], denied[0], denied[1], orphan[0], dns[0], dns[1], over, dns[2], orphan[1]]
    pipe, summary, out = _pipe_run(_example(), frames, tmp_path, ts=np.arange(len(frames), dtype=np.int64) * 1000)
    assert summary.drops["firewall"] == {"POLICY_DENY": 3}
    assert summary.drops["input"] == {"FRAG_NO_FIRST": 2, "FRAG_OVERLAP": 1}
    assert summary.packets_out == 3 and out is not None and len(out) == 3
    assert pipe.frags.stats["later_fragments"] == 6 and pipe.frags.stats["first_fragments"] == 2


# ------------------------------------------------------------------------------- later fragments in the counters
def tcp_frame(src, dst, sport, dport, payload, flags=dpkt.tcp.TH_ACK, ip_id=7):
    tcp = dpkt.tcp.TCP(sport=sport, dport=dport, flags=flags, seq=1000, ack=1, data=payload)
    ip = dpkt.ip.IP(src=socket.inet_aton(src), dst=socket.inet_aton(dst), p=6, id=ip_id, ttl=64, data=tcp)
    return ETH + bytes(ip)


# flows of the example topology, each with what records it: (kind, protocol, client, server, where counted)
_FLOW_KINDS = {
    "dns": ("udp", "10.1.1.5", "198.51.100.9", 53, "session"),      # allowed: a session, SNAT'ed, replies back
    "denied": ("udp", "10.1.1.6", "198.51.100.9", 9999, "session"),  # denied: the session counts, no reply
    "not-syn": ("tcp", "10.1.1.7", "198.51.100.9", 80, "log"),       # TCP_NOT_SYN: the flow log's drop record
    "local": ("udp", "10.1.1.8", "10.1.1.9", 7000, "log"),           # inside the subnet: a forward record
}


@st.composite
def fragmented_flows(draw):
    """A few flows of every kind, each a few datagrams one way (and, for DNS and local ones, back), each datagram
    cut into fragments of random sizes sent in a random order (its first fragment often not first), the flows'
    datagrams interleaved in time."""
    flows, datagrams = [], []
    for f in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(sorted(_FLOW_KINDS)))
        proto, client, server, port, _ = _FLOW_KINDS[kind]
        cport = 20000 + f
        flows.append((kind, proto, client, cport, server, port))
        n_req = draw(st.integers(1, 3))
        n_rep = draw(st.integers(0, 2)) if kind in ("dns", "local") else 0
        for d in range(n_req + n_rep):
            back = d >= n_req
            size = draw(st.integers(1, 900))
            a, pa, b, pb = (server, port, client, cport) if back else (client, cport, server, port)
            make = tcp_frame if proto == "tcp" else udp_frame
            frame = make(a, b, pa, pb, bytes(size), ip_id=(f << 8) | d)
            # the first fragment holds the whole L4 header (a TCP one cut short is dropped as L4_TRUNCATED)
            pieces = fragment(frame, [8 * draw(st.integers(3, 40)) for _ in range(draw(st.integers(1, 4)))])
            order = draw(st.permutations(range(len(pieces))))
            datagrams.append((f, back, [pieces[k] for k in order]))
    # requests before replies in each flow (the client sends first); otherwise interleaved at random
    datagrams.sort(key=lambda x: (x[1], draw(st.integers(0, 10**6))))
    frames, owner = [], []
    for f, back, pieces in datagrams:
        frames += pieces
        owner += [(f, back)] * len(pieces)
    return flows, frames, owner


def _oracle_counts(flows, frames, owner):
    """Plain-Python sums over every fragment (dpkt): per flow (client, cport, server, sport, proto), packets and
    bytes each way, the bytes as the record's counter measures them: the IPv4 packet a firewall gets out of
    Geneve for a session, the whole frame for the flow log's own records."""
    out = {}
    for (f, back), frame in zip(owner, frames):
        kind, proto, client, cport, server, sport = flows[f]
        where = _FLOW_KINDS[kind][4]
        ip = dpkt.ethernet.Ethernet(frame).data
        key = (client, cport, server, sport, 6 if proto == "tcp" else 17)
        rec = out.setdefault(key, [0, 0, 0, 0])
        rec[2 * back] += 1
        rec[2 * back + 1] += ip.len if where == "session" else len(frame)
    return out


@given(fragmented_flows(), st.sampled_from([3, 7, 64, 4096]))
@settings(max_examples=40, deadline=None)
def test_later_fragments_count_in_their_flow(case, chunk):
    """Every later fragment counts where its first fragment does, in the same direction, with its own length: the
    flow log's packets and bytes of each flow (firewall sessions, allowed or denied; drop and forward records)
    equal a plain-Python sum over all the flow's fragments, early ones held and released included, whatever the
    chunk size; the GWLB's flows and per-firewall counters and the drop counters count each fragment once."""
    import json
    import tempfile
    from pathlib import Path

    flows, frames, owner = case
    ts = np.arange(len(frames), dtype=np.int64) * 1000 + 10**9
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.pcap"
        write_pcap(src, gf.PacketBatch.from_packets(frames, ts_ns=ts))
        pipe = Pipeline(_example())
        summary = pipe.run(str(src), str(Path(tmp) / "out.pcap"), flow_log=str(Path(tmp) / "flows.jsonl"),
                           chunk=chunk)
        records = [json.loads(line) for line in (Path(tmp) / "flows.jsonl").read_text().splitlines()]
    got = {}
    for r in records:
        key = (r["src_ip"], r["src_port"], r["dst_ip"], r["dst_port"], r["proto"])
        assert key not in got, r
        got[key] = [r["packets"], r["bytes"], r["packets_reply"], r["bytes_reply"]]
    assert got == _oracle_counts(flows, frames, owner)
    # the GWLB: every fragment of the flows it balanced, once (per firewall and in its flow table)
    through = [i for i, (f, _) in enumerate(owner) if flows[f][0] != "local"]
    assert sum(c["packets"] for c in summary.firewalls.values()) == len(through)
    assert sum(c["bytes"] for c in summary.firewalls.values()) == sum(len(frames[i]) for i in through)
    lb = pipe.gwlbs["gwlb-1"].lb.flows
    live = lb.live_slots()
    assert int(lb.packets[live].sum()) == len(through)
    assert int(lb.bytes[live].sum()) == sum(len(frames[i]) for i in through)
    # drops: each fragment of a denied or not-SYN flow once, nothing else dropped
    want = collections.Counter()
    for f, _ in owner:
        if flows[f][0] == "denied":
            want[("firewall", "POLICY_DENY")] += 1
        elif flows[f][0] == "not-syn":
            want[("firewall", "TCP_NOT_SYN")] += 1
    assert collections.Counter({(sg, r): c for sg, d in summary.drops.items() for r, c in d.items()}) == want
    assert summary.packets_out == len(frames) - sum(want.values())


# ------------------------------------------------------------------------------ later fragments and idle timers
_T_LB, _T_FW, _T_NAT = 20, 30, 25  # idle timeouts (s) of UDP flows below: GWLB, firewall (its default), NAT gateway
_CLIENT, _SERVER = ("10.1.1.5", 4000), ("198.51.100.9", 53)


def _flow_frame(back, payload, ip_id):
    """A UDP datagram of the flow below: client to server, or back."""
    (a, pa), (b, pb) = (_SERVER, _CLIENT) if back else (_CLIENT, _SERVER)
    return udp_frame(a, b, pa, pb, payload, ip_id=ip_id)


def _timed_topology(pickup=False):
    d = copy.deepcopy(EXAMPLE)
    d["events"] = []
    d["gwlb"]["gwlb-1"]["idle_timeout"] = {"tcp": 350, "other": _T_LB}
    d["nat_gateways"]["nat-a"]["idle_timeout"] = {"tcp": 350, "other": _T_NAT}
    if pickup:
        d["replay"] = {"pickup": True}
    return topology_from_dict(d, "timed.yaml")


@st.composite
def sparse_first_fragments(draw):
    """One UDP flow (10.1.1.5:4000 -> 198.51.100.9:53, allowed and SNAT'ed) of datagrams in fragments: the first
    fragments far apart (gaps of up to 45 s, longer than the idle timeouts), each datagram's later fragments
    trailing it by up to 28 s (within the fragment table's hold time); some requests answered 0.5 s later by a
    reply (in private form, as the client sees it) in fragments too. Returns (frame, time ns, is reply, is first
    fragment) in time order."""
    events = []
    t = 1.0
    for d in range(draw(st.integers(1, 6))):
        t += draw(st.sampled_from([0.0, 5.0, 12.0, 19.0, 24.0, 29.0, 35.0, 45.0])) if d else 0.0
        for back in (False, True) if draw(st.booleans()) else (False,):
            start = t + (0.5 if back else 0.0)
            frame = _flow_frame(back, bytes(draw(st.integers(60, 300))), 2 * d + back)
            pieces = fragment(frame, [8 * draw(st.integers(2, 10)) for _ in range(draw(st.integers(1, 4)))])
            offs = sorted(draw(st.lists(st.integers(1, 28_000), min_size=len(pieces) - 1,
                                        max_size=len(pieces) - 1, unique=True)))
            events.append((pieces[0], start, back, True))
            events += [(p, start + o / 1000, back, False) for p, o in zip(pieces[1:], offs)]
    events.sort(key=lambda e: e[1])
    # distinct times (ns), in order
    return [(f, round(s * 1e9) + k, back, first) for k, (f, s, back, first) in enumerate(events)]


def _timer_model(events, timeout, nbytes):
    """Plain-Python idle timer of one table for the flow: a first fragment (a packet with its L4 header) finds its
    flow alive if it was last seen less than ``timeout`` seconds before, else ends it and starts a new one; a later
    fragment counts where its first fragment was counted, so in the flow only if the flow is still the
    incarnation its datagram's first fragment was counted in and alive at its time (keeping it alive). Returns
    every incarnation as [first_seen, last_seen, packets each way, bytes each way] (ns)."""
    out, to = [], timeout * 10**9
    counted_in = {}  # datagram (IP id) -> the incarnation its first fragment was counted in
    for frame, ts, back, first in events:
        cur = out[-1] if out else None
        alive = cur is not None and ts - cur[1] < to
        ip_id = dpkt.ethernet.Ethernet(frame).data.id
        if not first and (not alive or counted_in.get(ip_id) != len(out) - 1):
            continue
        if not alive:
            cur = [ts, ts, 0, 0, 0, 0]
            out.append(cur)
        if first:
            counted_in[ip_id] = len(out) - 1
        cur[1] = max(cur[1], ts)
        cur[2 + back] += 1
        cur[4 + back] += nbytes(frame)
    return out


def _ip_len(frame):
    return dpkt.ethernet.Ethernet(frame).data.len


def _timed_run(events, tmp_path, pickup=False):
    import json

    src = tmp_path / "in.pcap"
    write_pcap(src, gf.PacketBatch.from_packets([e[0] for e in events], ts_ns=np.array([e[1] for e in events])))
    pipe = Pipeline(_timed_topology(pickup))
    summary = pipe.run(str(src), str(tmp_path / "out.pcap"), flow_log=str(tmp_path / "flows.jsonl"), chunk=1)
    records = [json.loads(line) for line in (tmp_path / "flows.jsonl").read_text().splitlines()]
    return pipe, summary, records


def _datagrams(spec):
    """Events as sparse_first_fragments returns them, from (start s, is reply, IP id, later fragments' delays ms)."""
    events = []
    for start, back, ip_id, delays in spec:
        pieces = fragment(_flow_frame(back, bytes(100), ip_id), [16] * len(delays))
        events.append((pieces[0], start, back, True))
        events += [(p, start + d / 1000, back, False) for p, d in zip(pieces[1:], delays)]
    events.sort(key=lambda e: e[1])
    return [(f, round(t * 1e9) + k, back, first) for k, (f, t, back, first) in enumerate(events)]


@given(sparse_first_fragments())
@settings(max_examples=60, deadline=None)
# a reply's later fragment trails its first fragment into the flow's next incarnation at the GWLB (20 s idle): it
# counts nowhere there, as its first fragment was counted in the incarnation that ended
@example(_datagrams([(1.0, False, 0, [1]), (1.5, True, 1, [23_501]), (25.0, False, 2, [2])]))
def test_later_fragments_keep_their_flow_alive(events):
    """Later fragments move their flow's last_seen, so a flow whose only traffic for a while is later fragments
    does not age out under them: the firewall's sessions (the flow log: how many, their first and last packet
    times, packets and bytes each way), the GWLB's flows and the NAT gateway's mapping (how many incarnations,
    the live one's times and counts) equal a plain-Python model of each table's idle timer, packet by packet."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        pipe, summary, records = _timed_run(events, Path(tmp))
    assert summary.packets_out == len(events) and summary.dropped == 0
    # firewall sessions, from the flow log (bytes: the IPv4 packet the firewall gets out of Geneve)
    want = _timer_model(events, _T_FW, _ip_len)
    got = sorted([round(r["first_seen"] * 1e9), round(r["last_seen"] * 1e9), r["packets"], r["packets_reply"],
                  r["bytes"], r["bytes_reply"]] for r in records)
    assert [(r["src_ip"], r["src_port"], r["dst_ip"], r["dst_port"]) for r in records] == [_CLIENT + _SERVER] * len(
        records)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert abs(g[0] - w[0]) < 1000 and abs(g[1] - w[1]) < 1000 and g[2:] == w[2:]
    # the GWLB's flow (frame bytes): one entry in its table per incarnation, the live one as modelled
    want = _timer_model(events, _T_LB, len)
    lb = pipe.gwlbs["gwlb-1"].lb.flows
    assert lb.stats()["inserted"] == len(want)
    (s,) = lb.live_slots().tolist()
    w = want[-1]
    assert (int(lb.first_seen[s]), int(lb.last_seen[s]), int(lb.packets[s]), int(lb.bytes[s])) == (
        w[0], w[1], w[2] + w[3], w[4] + w[5])
    # the NAT gateway's mapping (frame bytes; replies counted in it as it translates them)
    want = _timer_model(events, _T_NAT, len)
    gw = pipe.nats[0]
    assert gw.stats["mappings_created"] + gw.table.stats()["restarted"] == len(want)
    m = gw.mappings()
    w = want[-1]
    assert (m["first_seen"].tolist(), m["last_seen"].tolist(), m["packets"].tolist(), m["bytes"].tolist()) == (
        [w[0]], [w[1]], [w[2] + w[3]], [w[4] + w[5]])


def test_trailing_fragments_keep_a_session_the_idle_timeout_would_end(tmp_path):
    """A datagram's first fragment at 1 s, its later fragments at 16 s and 29 s, the next datagram at 50 s (49 s
    after the last first fragment, more than every idle timeout; 21 s after the last fragment, less than the
    firewall's 30 s and the NAT gateway's 25 s, more than the GWLB's 20 s): one firewall session and one mapping
    for both datagrams, two GWLB flows."""
    one = fragment(_flow_frame(False, bytes(200), 1), [64, 64])
    two = _flow_frame(False, b"x" * 20, 2)
    frames = one + [two]
    events = [(f, t * 10**9, False, k in (0, 3)) for k, (f, t) in enumerate(zip(frames, (1, 16, 29, 50)))]
    pipe, summary, records = _timed_run(events, tmp_path)
    assert summary.packets_out == 4 and summary.dropped == 0
    assert len(records) == 1
    r = records[0]
    assert (r["first_seen"], r["last_seen"], r["packets"]) == (1.0, 50.0, 4)
    assert r["bytes"] == sum(_ip_len(f) for f in frames)
    assert pipe.gwlbs["gwlb-1"].lb.flows.stats()["inserted"] == 2
    m = pipe.nats[0].mappings()
    assert (m["first_seen"].tolist(), m["last_seen"].tolist(), m["packets"].tolist()) == ([10**9], [50 * 10**9], [4])
    assert pipe.nats[0].stats["mappings_created"] == 1 and pipe.nats[0].table.stats()["restarted"] == 0


def test_picked_up_reply_fragments_count_in_the_mapping(tmp_path):
    """With pickup, a capture that opens with a reply in private form (the mapping was made before the capture),
    in fragments: the mapping picked up from it counts every fragment (packets, frame bytes, last_seen), and so
    does it for a second reply datagram (the mapping then exists) and for a request the client sends after."""
    rep1 = fragment(_flow_frame(True, bytes(300), 1), [64, 64, 64])
    rep2 = fragment(_flow_frame(True, bytes(200), 2), [96])
    req = fragment(_flow_frame(False, bytes(150), 3), [72])
    frames = rep1 + rep2 + req
    ts = [10**9 + k * 10**8 for k in range(len(frames))]
    for chunk in (1, 4096):
        src = tmp_path / f"in{chunk}.pcap"
        write_pcap(src, gf.PacketBatch.from_packets(frames, ts_ns=np.array(ts, np.int64)))
        pipe = Pipeline(_timed_topology(pickup=True))
        summary = pipe.run(str(src), str(tmp_path / f"out{chunk}.pcap"), chunk=chunk)
        assert summary.packets_out == len(frames) and summary.dropped == 0
        gw = pipe.nats[0]
        assert gw.stats["mappings_picked_up"] == 1
        m = gw.mappings()
        assert m["priv_ip"].tolist() == [_ip(_CLIENT[0])] and m["priv_port"].tolist() == [_CLIENT[1]]
        assert (m["packets"].tolist(), m["bytes"].tolist()) == ([len(frames)], [sum(len(f) for f in frames)])
        assert (m["first_seen"].tolist(), m["last_seen"].tolist()) == ([ts[0]], [ts[-1]])
        # without the later fragments' counts the mapping would hold the three first fragments only
        assert len(frames) > 3
