"""Signature subset: the parser (file:line errors), the Hyperscan-backed matcher across segments, and agreement
with Suricata on (sid, flow) alert sets over the real captures (skipped without suricata)."""
import ipaddress
import itertools
import json
import shutil
import subprocess

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import gwlb_fast as gf
from gwlb_fast._kernels.match import Literals
from gwlb_fast.batch import PacketBatch
from gwlb_fast.inspect.inspector import inspect_flows
from gwlb_fast.inspect.payloads import http_request, tls_client_hello
from gwlb_fast.inspect.signatures import SignatureError, load_rules, parse_rules
from tests.shared_data import REPO, data_path
from tests.test_appid import flow_key, frame, tcp_session

RULES = REPO / "tests" / "data" / "agreement.rules"


def alerts_of(frames, rules, chunk=None):
    batch = PacketBatch.from_packets(frames).parse()
    batches = [batch[i:i + chunk] for i in range(0, len(batch), chunk)] if chunk else [batch]
    al = []
    inspect_flows(batches, signatures=parse_rules(rules), alerts=al)
    return sorted(a["sid"] for a in al)


# ---------------------------------------------------------------- parser
@pytest.mark.parametrize("rule,needle", [
    ('alert tcp any any -> any any (content:"a"; pcre:"/x/"; sid:1;)', "keyword 'pcre'"),
    ('pass tcp any any -> any any (content:"a"; sid:1;)', "action 'pass'"),
    ('alert icmp any any -> any any (content:"a"; sid:1;)', "protocol 'icmp'"),
    ('alert tcp any any -> any any (content:"a";)', "no sid"),
    ('alert tcp any any -> any any (sid:1;)', "no content"),
    ('alert tcp any any -> any any (content:!"a"; sid:1;)', "negated content"),
    ('alert tcp any any -> any any (content:"|4g|"; sid:1;)', "bad hex"),
    ('alert tcp any any -> any any (content:"abc"; depth:2; sid:1;)', "depth 2 is shorter"),
    ('alert tcp $NOPE any -> any any (content:"a"; sid:1;)', "unknown variable $NOPE"),
    ('alert tcp any any -> any 70000 (content:"a"; sid:1;)', "bad port range"),
    ('alert tcp any any -> any any (flow:stateless; content:"a"; sid:1;)', "flow:stateless"),
    ('alert tcp any any -> any any (http.uri; content:"a"; tls.sni; content:"b"; sid:1;)', "one sticky buffer"),
    ('alert http any any -> any any (http.host; content:"Example"; sid:1;)', "http.host is lowercase"),
    ('alert tcp any any - any any (content:"a"; sid:1;)', "direction"),
    ('alert tcp any any -> any any (content:"a"; offset:1; distance:2; sid:1;)', "both absolute"),
])
def test_refused_with_file_and_line(rule, needle):
    text = "# comment\n\n" + rule + "\n"
    with pytest.raises(SignatureError) as e:
        parse_rules(text, "threats.rules")
    assert str(e.value).startswith("threats.rules:3: ") and needle in str(e.value)


def test_duplicate_sid_and_continuation_lines(tmp_path):
    p = tmp_path / "x.rules"
    p.write_text('alert tcp any any -> any any (msg:"a;b"; \\\n content:"x\\"y"; sid:7;)\n'
                 'alert tcp any any -> any any (content:"z"; sid:7;)\n')
    with pytest.raises(SignatureError, match=r"x.rules:3: sid 7 already defined at .*x.rules:1"):
        load_rules([p])
    (sig,) = parse_rules('alert tcp any any -> any any (msg:"a;b"; content:"x\\"y|3b|"; sid:7;)')
    assert sig.msg == "a;b" and sig.contents[0].pattern == b'x"y;'


def test_addresses_ports_variables():
    (sig,) = parse_rules("alert tcp [10.0.0.0/8,!10.1.0.0/16] ![80,443] <> $DNS any (content:\"a\"; sid:1;)",
                         vars_={"DNS": "[192.0.2.53, 192.0.2.54]"})
    assert sig.src == [(0x0A000000, 0x0A00FFFF), (0x0A020000, 0x0AFFFFFF)]
    assert sig.src_ports == [(0, 79), (81, 442), (444, 65535)]
    assert sig.dst == [(0xC0000235, 0xC0000236)] and sig.bidirectional


# ---------------------------------------------------------------- matching
def test_content_across_segments_and_batches():
    req = http_request("www.example.com", "/attack/payload.bin")
    parts = [req[:9], req[9:12], req[12:]]   # "/attack/p" split over three segments
    rules = ('alert tcp any any -> any any (flow:to_server; content:"/attack/payload"; sid:1;)\n'
             'alert tcp any any -> any any (content:"GET"; depth:3; content:"payload"; distance:5; within:20; '
             'sid:2;)\n'
             'alert tcp any any -> any any (content:"GET"; depth:3; content:"payload"; within:7; sid:3;)\n'
             'alert tcp any any -> any any (flow:to_client; content:"/attack/"; sid:4;)\n'
             'alert http any any -> any any (http.uri; content:"/ATTACK/"; nocase; sid:5;)\n'
             'alert http any any -> any any (http.uri; content:"/ATTACK/"; sid:6;)\n'
             'alert tcp any any -> any any (content:"attack"; offset:6; sid:7;)\n')
    for chunk in (None, 1, 2):
        assert alerts_of(tcp_session(parts, dport=80), rules, chunk) == [1, 2, 5], chunk


def test_tls_sni_and_split_client_hello():
    ch = tls_client_hello("evil.example.net", key_share_len=1216, padding=500)
    rules = ('alert tls any any -> any any (tls.sni; content:"evil.example"; sid:10;)\n'
             'alert tls any any -> any any (tls.sni; content:"good"; sid:11;)\n'
             'alert tcp any any -> any any (content:"evil.example.net"; sid:12;)\n')
    assert alerts_of(tcp_session([ch[:1460], ch[1460:]]), rules) == [10, 12]


def test_drop_stops_later_alerts_of_the_session():
    rules = ('drop tcp any any -> any any (content:"first"; sid:1;)\n'
             'alert tcp any any -> any any (content:"second"; sid:2;)\n')
    assert alerts_of(tcp_session([b"first ", b"second"]), rules) == [1]
    assert alerts_of(tcp_session([b"second", b"first "]), rules) == [1, 2]


def test_block_scan_of_fields_matches_and_refuses_bad_shapes():
    """scan_fields finds a literal in the field it lies in, and refuses fields and event arrays whose shapes would
    make it read or write outside them."""
    lits = Literals([b"evil"], [False], 0)
    fields = np.zeros((2, 2 * 16), np.uint8)
    fields[1, 16:16 + 9] = np.frombuffer(b"xx evil x", np.uint8)  # row 1, field 1
    flen = np.array([[0, 0], [0, 9]], np.int32)
    ev = [np.empty(64, t) for t in (np.int64, np.uint8, np.int32, np.int64, np.int64)]
    n = lits.scan_fields(np.array([0, 1], np.int64), fields, flen, *ev)
    assert n == 1 and ev[0][0] == 1 and ev[3][0] == 7
    with pytest.raises(ValueError, match="flen"):
        lits.scan_fields(np.array([1], np.int64), fields[:1], flen, *ev)  # fewer field rows than flen's
    with pytest.raises(ValueError, match="flen"):
        lits.scan_fields(np.array([0], np.int64), fields, np.zeros((2, 0), np.int32), *ev)  # no field at all
    with pytest.raises(ValueError, match="same length"):
        lits.scan_fields(np.array([0], np.int64), fields, flen, ev[0], ev[1][:8], *ev[2:])


@given(st.binary(min_size=1, max_size=300), st.binary(min_size=1, max_size=6), st.lists(st.integers(1, 299),
                                                                                       max_size=6))
def test_streaming_literal_matches_equal_bytes_find(data, lit, cuts):
    """Hyperscan streaming over arbitrary cuts finds exactly the end offsets Python's bytes.find finds."""
    lits = Literals([lit], [False], 2)
    frames = [frame(b"", flags=0x02, seq=10)]
    bounds = sorted({0, len(data), *[c for c in cuts if c < len(data)]})
    for a, b in itertools.pairwise(bounds):
        frames.append(frame(data[a:b], seq=11 + a))
    batch = PacketBatch.from_packets(frames).parse()
    from gwlb_fast.inspect.stream import StreamTable

    table = StreamTable(capacity=1, head_size=64)
    out = table.feed(batch, np.zeros(len(batch), np.int64))
    ev = [np.empty(4096, t) for t in (np.int64, np.uint8, np.int32, np.int64, np.int64)]
    n, _ = lits.scan_streams(batch.data, np.zeros(len(batch), np.int64), out["lo"], out["hi"], out["seg"],
                             out["pay"], batch.proto, table.head, *ev)
    want = [i + len(lit) for i in range(len(data) - len(lit) + 1) if data[i:i + len(lit)] == lit]
    assert sorted(ev[3][:n].tolist()) == want


@given(st.lists(st.tuples(st.binary(min_size=1, max_size=400), st.lists(st.integers(1, 399), max_size=8)),
                min_size=1, max_size=4),
       st.randoms(use_true_random=False), st.sampled_from([64, 1 << 12]), st.integers(0, 3))
def test_streaming_runs_give_the_events_of_the_packet_by_packet_scan(sessions, rnd, cap, lost):
    """With ``taken``, each direction's consecutive segments of a batch are scanned in one call: the events (row,
    buffer, literal, end offset, packet) equal those of the packet by packet scan, each stream's in the same order,
    over interleaved sessions, segments lost (holes), retransmitted, heads of 64 bytes and event arrays small
    enough that the pass stops early and resumes."""
    from gwlb_fast.inspect.stream import StreamTable

    pats = [b"ab", b"abc", b"b", b"\x00\x00"]
    frames, sds = [], []
    for k, (data, cuts) in enumerate(sessions):
        sport = 40000 + k
        segs = [[frame(b"", flags=0x02, seq=10, sport=sport)]]
        bounds = sorted({0, len(data), *[c for c in cuts if c < len(data)]})
        for j, (a, b) in enumerate(itertools.pairwise(bounds)):
            if lost and j % 4 == lost:
                continue                                   # a hole
            segs.append([frame(data[a:b], seq=11 + a, sport=sport)])
            if j % 3 == 2:
                segs.append([frame(data[a:b], seq=11 + a, sport=sport)])   # a retransmission
        frames.append([f for g in segs for f in g])
    batch_frames = []
    while any(frames):                                     # interleave the sessions, each in its own order
        k = rnd.choice([i for i, q in enumerate(frames) if q])
        sds.append(2 * k)
        batch_frames.append(frames[k].pop(0))
    batch = PacketBatch.from_packets(batch_frames).parse()
    sd = np.array(sds, np.int64)
    table = StreamTable(capacity=len(sessions), head_size=64)
    out = table.feed(batch, sd)

    def scan(runs):
        lits = Literals(pats, [False, True, False, False], 2 * len(sessions))
        ev = [np.empty(cap, t) for t in (np.int64, np.uint8, np.int32, np.int64, np.int64)]
        taken = np.zeros(len(batch), np.uint8) if runs else None
        got, start = [], 0
        while start < len(batch):
            n, start = lits.scan_streams(batch.data, sd, out["lo"], out["hi"], out["seg"], out["pay"], batch.proto,
                                         table.head, *ev, start, taken)
            got += list(zip(*(e[:n].tolist() for e in ev)))
        return got, lits.dropped_events, lits.resets

    one, runs = scan(False), scan(True)
    assert sorted(one[0]) == sorted(runs[0]) and one[1:] == runs[1:]
    for key in {(e[0], e[1]) for e in one[0]}:
        assert [e for e in one[0] if e[:2] == key] == [e for e in runs[0] if e[:2] == key]


# ---------------------------------------------------------------- Suricata agreement
REAL = sorted(p.name for p in data_path("captures", "real").glob("*.pcap*")) \
    if data_path("captures", "real").is_dir() else []


def suricata_alerts(pcap, rules, outdir):
    subprocess.run(["suricata", "-r", str(pcap), "-S", str(rules), "-l", str(outdir), "-k", "none", "--runmode",
                    "single"], check=True, capture_output=True, timeout=120)
    return eve_alert_pairs(outdir / "eve.json")


def eve_alert_pairs(eve) -> set:
    """(sid, flow_key) of the IPv4 alerts of a Suricata eve.json (a signature alerting several times on one flow,
    e.g. once per DNS transaction, counts once)."""
    out = set()
    for ln in eve.read_text().splitlines():
        ev = json.loads(ln)
        if ev.get("event_type") == "alert" and ":" not in ev["src_ip"]:
            p = {"TCP": 6, "UDP": 17}.get(ev["proto"], 0)
            out.add((ev["alert"]["signature_id"],) + flow_key(p, ev["src_ip"], ev["src_port"], ev["dest_ip"],
                                                               ev["dest_port"]))
    return out


@pytest.mark.skipif(shutil.which("suricata") is None, reason="suricata not installed")
@pytest.mark.parametrize("name", REAL)
def test_alerts_agree_with_suricata(name, tmp_path):
    pcap = data_path("captures", "real", name)
    theirs = suricata_alerts(pcap, RULES, tmp_path)
    al = []
    inspect_flows(gf.read_pcap(pcap), signatures=load_rules([RULES]), alerts=al)
    ours = {(a["sid"],) + flow_key(a["proto"], a["client_ip"], a["client_port"], a["server_ip"], a["server_port"])
            for a in al}
    assert ours == theirs


def two_sided_flows(batches) -> set:
    """flow_key of the TCP / UDP flows of parsed batches that have packets in both directions."""
    from gwlb_fast._kernels.flowtable import canonical_5tuple

    keys = []
    for b in batches:
        n = len(b)
        cols = [np.empty(n, t) for t in (np.uint32, np.uint32, np.uint16, np.uint16, np.uint8)]
        canonical_5tuple(b.src_ip, b.dst_ip, b.sport, b.dport, *cols)
        ok = (b.status == 0) & ((b.proto == 6) | (b.proto == 17))
        keys.append(np.stack([c[ok].astype(np.int64) for c in cols[:4]] + [b.proto[ok].astype(np.int64),
                                                                           cols[4][ok].astype(np.int64)], 1))
    k = np.unique(np.concatenate(keys), axis=0)
    flows, count = np.unique(k[:, :5], axis=0, return_counts=True)   # a flow seen both ways has rev 0 and 1
    ip = lambda a: str(ipaddress.IPv4Address(int(a)))
    return {flow_key(int(p), ip(a), int(ap), ip(b_), int(bp)) for a, b_, ap, bp, p in flows[count == 2].tolist()}


@pytest.mark.skipif(shutil.which("suricata") is None, reason="suricata not installed")
def test_synthetic_payload_alerts_agree_with_suricata(tmp_path):
    """The full-path benchmark's capture and signatures, small: (sid, flow) sets equal Suricata's on the flows the
    capture holds both ways. Its inbound flows are captured on both sides of the NAT gateway (the request to the
    public address, the answer from the private one): Suricata sees two one-sided flows that never complete a
    handshake and inspects neither; here the request side is inspected (the firewall sees the session whole)."""
    from bench.bench_inspect import _MATCHING_RULES, random_rules
    from gwlb_fast import synth

    batch = synth.generate(flows=80, packets=4000, seed=0, payloads=True)
    cap = tmp_path / "in.pcap"
    gf.write_pcap(cap, batch)
    rules = tmp_path / "sigs.rules"
    rules.write_text(random_rules(20) + _MATCHING_RULES)
    theirs = suricata_alerts(cap, rules, tmp_path)
    batches = list(gf.read_pcap(cap))
    al = []
    inspect_flows(batches, signatures=load_rules([rules]), alerts=al)
    ours = {(a["sid"],) + flow_key(a["proto"], a["client_ip"], a["client_port"], a["server_ip"], a["server_port"])
            for a in al}
    both = two_sided_flows(batches)
    assert {a[0] for a in theirs} >= {3001, 3002, 3003, 3004, 3005}
    assert {a for a in ours if a[1:] in both} == theirs
    one_sided = ours - theirs
    assert one_sided and all(a[0] == 3003 and ("203.0.113.10", 443) in a[2:] for a in one_sided)


def _long_session(total: int, needles) -> list[bytes]:
    """One HTTP-port TCP session: handshake, ``total`` client bytes in 1448-byte segments (each ACKed), with the
    ``needles`` (offset, bytes) written in, then FINs."""
    import dpkt

    from tests.test_appid import C, S

    def fr(payload, seq, ack, flags, reply=False):
        src, dst = (S, C) if reply else (C, S)
        sp, dp = (80, 40000) if reply else (40000, 80)
        t = dpkt.tcp.TCP(sport=sp, dport=dp, seq=seq, ack=ack, flags=flags, data=payload, win=65535)
        ip = dpkt.ip.IP(src=src, dst=dst, p=6, data=t)
        ip.len = 20 + len(bytes(t))
        return bytes(dpkt.ethernet.Ethernet(dst=b"\x02" * 6, src=b"\x04" * 6, type=0x0800, data=ip))

    body = bytearray(b"x" * total)
    for off, lit in needles:
        body[off:off + len(lit)] = lit
    out = [fr(b"", 100, 0, 0x02), fr(b"", 900, 101, 0x12, True), fr(b"", 101, 901, 0x10)]
    seq = 101
    for i in range(0, total, 1448):
        out.append(fr(bytes(body[i:i + 1448]), seq, 901, 0x18))
        seq += len(body[i:i + 1448])
        out.append(fr(b"", 901, seq, 0x10, True))
    return out + [fr(b"", seq, 901, 0x11), fr(b"", 901, seq + 1, 0x11, True), fr(b"", seq + 1, 902, 0x10)]


DEPTH_RULES = """\
alert tcp any any -> any any (msg:"before the depth"; content:"needle-aaaa"; sid:1;)
alert tcp any any -> any any (msg:"in the packet that crosses 1 MiB"; content:"needle-bbbb"; sid:2;)
alert tcp any any -> any any (msg:"past the depth, inside one packet"; content:"needle-cccc"; sid:3;)
alert tcp any any -> any any (msg:"past the depth, across two packets"; content:"needle-dddd"; sid:4;)
"""


def test_stream_match_depth_as_suricata(tmp_path):
    """Past 1 MiB of a direction (Suricata's stream.reassembly.depth) each packet is matched on its own: a
    literal inside one packet alerts, one across two packets or in the packet that crosses the depth does not."""
    seg0 = 1448 * 740                       # a segment boundary past 1 MiB
    frames = _long_session(1_100_000, [(900_000, b"needle-aaaa"), (1_048_570, b"needle-bbbb"),
                                       (1_060_000, b"needle-cccc"), (seg0 - 5, b"needle-dddd")])
    batch = PacketBatch.from_packets(frames).parse()
    al = []
    inspect_flows([batch], signatures=parse_rules(DEPTH_RULES), alerts=al)
    assert sorted(a["sid"] for a in al) == [1, 3]
    if shutil.which("suricata"):
        cap = tmp_path / "long.pcap"
        gf.write_pcap(cap, batch)
        rules = tmp_path / "depth.rules"
        rules.write_text(DEPTH_RULES)
        assert {a[0] for a in suricata_alerts(cap, rules, tmp_path)} == {1, 3}
