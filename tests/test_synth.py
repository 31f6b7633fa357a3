import ipaddress
import shutil
import struct
import subprocess

import dpkt
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gwlb_fast import PktStatus, synth
from gwlb_fast._kernels.synth import PAY_COPY, build_packets
from gwlb_fast.batch import LINKTYPE_ETHERNET
from gwlb_fast.synth import CATEGORIES, Close, Direction, FlowKind, generate, generate_with_truth
from tests.oracles.synth import check_tcp_session, checksums_ok


def ip(s):
    return int(ipaddress.IPv4Address(s))


def cat_mask(truth, name):
    return truth.category == CATEGORIES.index(name)


@pytest.fixture(scope="module")
def mid():
    return generate_with_truth(1000, 100_000, seed=0)


@pytest.fixture(scope="module")
def small():
    return generate_with_truth(60, 3000, seed=11)


def be32(data, pos):
    pos = np.asarray(pos, np.int64)
    return ((data[pos].astype(np.uint32) << 24) | (data[pos + 1].astype(np.uint32) << 16)
            | (data[pos + 2].astype(np.uint32) << 8) | data[pos + 3])


def be16(data, pos):
    pos = np.asarray(pos, np.int64)
    return (data[pos].astype(np.uint32) << 8) | data[pos + 1]


# ----------------------------------------------------------------------------------------------- counts, shape
@pytest.mark.parametrize("flows,packets", [(1, 2), (1, 3), (7, 14), (100, 250), (1000, 100_000)])
def test_counts_honoured(flows, packets):
    b, t = generate_with_truth(flows, packets, seed=3)
    assert len(b) == packets == t.n_packets
    assert t.n_flows == flows
    assert np.array_equal(np.bincount(t.flow, minlength=flows), t.packets)
    assert (t.packets >= 2).all()
    assert int(t.bytes.sum()) == b.nbytes
    assert (b.linktype == LINKTYPE_ETHERNET).all()
    b.validate()


def test_category_counts_follow_mix():
    t = generate_with_truth(1000, 10_000, seed=1)[1]
    counts = dict(zip(CATEGORIES, np.bincount(t.category, minlength=len(CATEGORIES))))
    assert counts == {c: round(1000 * synth.DEFAULT_MIX.get(c, 0)) for c in CATEGORIES}
    t = generate_with_truth(10, 20, seed=1, mix={"udp-dns": 1})[1]
    assert (t.kind == FlowKind.UDP_DNS).all()


def test_east_west_flows_follow_the_address_plan():
    plan = synth.CENTRALIZED_PLAN
    b, t = generate_with_truth(200, 2000, seed=2, mix=synth.CENTRALIZED_MIX, plan=plan)
    ew = t.category == CATEGORIES.index("tcp-east-west")
    assert ew.sum() == round(200 * synth.CENTRALIZED_MIX["tcp-east-west"])
    ips = lambda names: {int(ipaddress.IPv4Address(a)) for a in names}
    assert set(t.client_ip[ew].tolist()) <= ips(plan.east_west_clients)
    assert set(t.server_ip[ew].tolist()) <= ips(plan.east_west_servers)
    assert (t.server_port[ew] == 443).all() and (t.reply_ip[ew] == t.server_ip[ew]).all()
    inb = t.inbound
    assert (t.server_ip[inb] == int(ipaddress.IPv4Address(plan.nat_public_ip))).all()
    assert (t.reply_ip[inb] == int(ipaddress.IPv4Address(plan.dnat_target[0]))).all()
    out = ~inb & ~ew
    assert set(t.client_ip[out].tolist()) <= ips(plan.app_servers)
    b.parse()
    # every packet carries its flow's addresses, as dpkt reads them
    for i in range(0, len(b), 37):
        f = t.flow[i]
        ip = dpkt.ethernet.Ethernet(bytes(b.packet(i))).data
        pair = {int.from_bytes(ip.src, "big"), int.from_bytes(ip.dst, "big")}
        if ew[f]:
            assert pair == {int(t.client_ip[f]), int(t.server_ip[f])}
    with pytest.raises(ValueError, match="east-west"):
        generate_with_truth(10, 20, mix={"tcp-east-west": 1})


def test_empty():
    b, t = generate_with_truth(0, 0)
    assert len(b) == 0 and t.n_flows == 0 and b.data.shape == (0,)
    assert t.summary()["packets"] == 0


@pytest.mark.parametrize("kwargs", [
    {"flows": 10, "packets": 19}, {"flows": 0, "packets": 5}, {"flows": -1, "packets": 0}, {"duration": 0},
    {"duration": float("nan")}, {"mix": {"tcp-out": 1, "bogus": 1}}, {"mix": {"tcp-out": 0}},
    {"mix": {"tcp-out": -1, "icmp": 2}},
])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        generate(**{"flows": 10, "packets": 100, **kwargs})


def test_deterministic_by_seed():
    a, ta = generate_with_truth(50, 2000, seed=5)
    b, tb = generate_with_truth(50, 2000, seed=5)
    c = generate(50, 2000, seed=6)
    assert np.array_equal(a.data, b.data) and np.array_equal(a.ts_ns, b.ts_ns) and np.array_equal(a.off, b.off)
    assert np.array_equal(ta.flow, tb.flow) and np.array_equal(ta.direction, tb.direction)
    assert not np.array_equal(a.data[: c.data.shape[0]], c.data[: a.data.shape[0]])


# ----------------------------------------------------------------------------------------------- bytes on the wire
def assert_checksums(batch, idx):
    bad = [(int(i), checksums_ok(batch.packet(int(i)))) for i in idx]
    bad = [x for x in bad if not all(x[1])]
    assert not bad, bad[:5]


def test_checksums_whole_small_batch(small):
    b, _ = small
    assert_checksums(b, range(len(b)))


def test_checksums_sample(mid):
    b, _ = mid
    idx = np.random.default_rng(0).choice(len(b), 4000, replace=False)
    assert_checksums(b, idx)


def test_checksum_oracle_detects_corruption(small):
    pkt = bytearray(small[0].packet(0))
    pkt[-1] ^= 0x55
    assert checksums_ok(bytes(pkt)) == (True, False)
    pkt = bytearray(small[0].packet(0))
    pkt[22] ^= 1  # TTL
    assert checksums_ok(bytes(pkt))[0] is False


def expected_endpoints(t, i):
    """(src_ip, dst_ip, sport, dport) packet i must carry, from the ground truth."""
    f = int(t.flow[i])
    if t.direction[i] == Direction.REPLY:
        return int(t.reply_ip[f]), int(t.client_ip[f]), int(t.reply_port[f]), int(t.client_port[f])
    return int(t.client_ip[f]), int(t.server_ip[f]), int(t.client_port[f]), int(t.server_port[f])


def dissect_and_compare(b, t, idx):
    for i in idx:
        i = int(i)
        eth = dpkt.ethernet.Ethernet(b.packet(i))
        ipk = eth.data
        assert isinstance(ipk, dpkt.ip.IP), i
        assert ipk.len == len(b.packet(i)) - 14
        f = int(t.flow[i])
        src, dst, sp, dp = expected_endpoints(t, i)
        assert (struct.unpack("!I", ipk.src)[0], struct.unpack("!I", ipk.dst)[0]) == (src, dst), i
        assert ipk.p == t.proto[f]
        l4 = ipk.data
        if ipk.p == 6:
            assert isinstance(l4, dpkt.tcp.TCP)
            assert (l4.sport, l4.dport) == (sp, dp)
            assert ipk.df == 1
            if l4.flags & dpkt.tcp.TH_SYN:
                assert dpkt.tcp.parse_opts(l4.opts) == [(dpkt.tcp.TCP_OPT_MSS, b"\x05\xb4")]
        elif ipk.p == 17:
            assert isinstance(l4, dpkt.udp.UDP)
            assert (l4.sport, l4.dport) == (sp, dp) and l4.ulen == len(ipk.data)
            assert ipk.df == 0
            if t.kind[f] == FlowKind.UDP_DNS:
                msg = dpkt.dns.DNS(l4.data)
                assert msg.qd[0].type == dpkt.dns.DNS_A
                reply = t.direction[i] == Direction.REPLY
                assert msg.qr == reply and len(msg.an) == int(reply)
        else:
            assert isinstance(l4, dpkt.icmp.ICMP)
            reply = t.direction[i] == Direction.REPLY
            assert l4.type == (0 if reply else 8)
            assert l4.data.id == t.client_port[f]


def test_dissects_dpkt_whole_small_batch(small):
    b, t = small
    dissect_and_compare(b, t, range(len(b)))


def test_dissects_dpkt_sample(mid):
    b, t = mid
    dissect_and_compare(b, t, np.random.default_rng(1).choice(len(b), 3000, replace=False))


def test_scapy_checksums_sample(mid):
    scapy_all = pytest.importorskip("scapy.all")
    b, _ = mid
    for i in np.random.default_rng(2).choice(len(b), 600, replace=False):
        raw = b.packet(int(i))
        p = scapy_all.Ether(raw)
        q = p.copy()
        del q[scapy_all.IP].chksum
        l4 = q[scapy_all.IP].payload
        del l4.chksum
        q = scapy_all.Ether(bytes(q))
        assert p[scapy_all.IP].chksum == q[scapy_all.IP].chksum
        assert p[scapy_all.IP].payload.chksum == q[scapy_all.IP].payload.chksum, p.summary()
        assert bytes(q) == raw


def test_parse_agrees(mid):
    b, t = mid
    b.parse()
    assert (b.status == PktStatus.OK).all()
    f = t.flow
    rep = t.direction == Direction.REPLY
    assert np.array_equal(b.src_ip, np.where(rep, t.reply_ip[f], t.client_ip[f]))
    assert np.array_equal(b.dst_ip, np.where(rep, t.client_ip[f], t.server_ip[f]))
    assert np.array_equal(b.proto, t.proto[f])
    nonicmp = t.kind[f] != FlowKind.ICMP
    assert np.array_equal(b.sport[nonicmp], np.where(rep, t.reply_port[f], t.client_port[f])[nonicmp])
    assert np.array_equal(b.dport[nonicmp], np.where(rep, t.client_port[f], t.server_port[f])[nonicmp])
    assert np.array_equal(b.sport[~nonicmp], t.client_port[f][~nonicmp])  # echo id
    assert (b.l3_off == 14).all() and (b.l4_off == 34).all()


def test_ip_ids_and_df(mid):
    b, _ = mid
    ids = be16(b.data, b.off + 18)
    assert (np.diff(ids.astype(np.int64)) % 65536 == 1).all()
    window = ids[:65536]
    assert np.unique(window).shape[0] == window.shape[0]
    df = (b.data[b.off + 20] & 0x40) != 0
    assert np.array_equal(df, b.data[b.off + 23] == 6)


# ----------------------------------------------------------------------------------------------- TCP sessions
def tcp_sessions(b, t):
    f = t.flow
    tcp = t.proto[f] == 6
    l4 = b.off + 34
    seq = be32(b.data, l4 + 4)
    ack = be32(b.data, l4 + 8)
    flags = b.data[l4 + 13]
    doff = (b.data[l4 + 12] >> 4).astype(np.int64) * 4
    plen = b.caplen.astype(np.int64) - 34 - doff
    from_client = t.direction != Direction.REPLY
    sessions = {}
    for i in np.flatnonzero(tcp):
        sessions.setdefault(int(f[i]), []).append(
            (bool(from_client[i]), int(seq[i]), int(ack[i]), int(flags[i]), int(plen[i])))
    return sessions


def check_all_sessions(b, t):
    sessions = tcp_sessions(b, t)
    assert set(sessions) == set(np.flatnonzero(t.kind == FlowKind.TCP).tolist())
    for fl, segs in sessions.items():
        check_tcp_session(segs)
        flags = [s[3] for s in segs]
        close = t.close[fl]
        if close == Close.REFUSED:
            assert flags == [0x02, 0x14]
        elif close == Close.NONE:
            assert flags == [0x02, 0x12, 0x10]
        else:
            assert flags[:3] == [0x02, 0x12, 0x10]
            if close == Close.FIN:
                assert flags[-4:] == [0x11, 0x10, 0x11, 0x10]
                assert segs[-4][0] == segs[-1][0] != segs[-3][0] == segs[-2][0]
            else:
                assert flags[-1] == 0x14
            assert all(fl == 0x18 for fl in flags[3: len(flags) - (4 if close == Close.FIN else 1)])
    return sessions


def test_tcp_seq_ack_consistent(mid):
    b, t = mid
    sessions = check_all_sessions(b, t)
    closes = np.bincount(t.close[t.kind == FlowKind.TCP], minlength=len(Close))
    assert closes[Close.FIN] > 0 and closes[Close.RST] > 0
    assert len(sessions) > 500


def test_tcp_oracle_detects_bad_ack(small):
    b, t = small
    _fl, segs = next((k, v) for k, v in tcp_sessions(b, t).items() if len(v) > 6)
    segs = list(segs)
    fc, seq, ack, flags, plen = segs[4]
    segs[4] = (fc, seq, ack + 1, flags, plen)
    with pytest.raises(AssertionError):
        check_tcp_session(segs)


# ----------------------------------------------------------------------------------------------- traffic semantics
def test_directions_and_topology(mid):
    _b, t = mid
    dirs = np.bincount(t.direction, minlength=3)
    assert (dirs > 0).all()
    per_flow_dirs = np.zeros((t.n_flows, 3), np.int64)
    np.add.at(per_flow_dirs, (t.flow, t.direction), 1)
    assert (per_flow_dirs[:, Direction.REPLY] > 0).all()
    assert (per_flow_dirs[t.inbound, Direction.INBOUND] > 0).all()
    assert (per_flow_dirs[~t.inbound, Direction.OUTBOUND] > 0).all()
    app = ipaddress.ip_network(synth.APP_CIDR)
    in_app = (t.client_ip & int(app.netmask)) == int(app.network_address)
    assert np.array_equal(in_app, ~t.inbound)
    assert (t.server_ip[t.inbound] == ip("203.0.113.10")).all() and (t.server_port[t.inbound] == 443).all()
    assert (t.reply_ip[t.inbound] == ip("10.1.1.20")).all() and (t.reply_port[t.inbound] == 8443).all()
    assert np.isin(t.server_port[cat_mask(t, "tcp-out")], (80, 443)).all()
    assert np.isin(t.server_port[cat_mask(t, "tcp-denied")], (22, 3389)).all()
    assert (t.server_port[cat_mask(t, "udp-denied")] == 123).all()
    assert (t.server_port[cat_mask(t, "udp-dns")] == 53).all()
    denied = cat_mask(t, "icmp") | cat_mask(t, "tcp-denied") | cat_mask(t, "udp-denied")
    assert np.array_equal(t.denied, denied)
    # no two flows share a 5-tuple
    tuples = set(zip(t.client_ip.tolist(), t.client_port.tolist(), t.server_ip.tolist(), t.server_port.tolist(),
                     t.proto.tolist()))
    assert len(tuples) == t.n_flows


def test_size_mix(mid):
    b, t = mid
    data_pkts = (t.proto[t.flow] == 6) & (b.data[b.off + 47] == 0x18)
    iplen = be16(b.data, b.off[data_pkts] + 16)
    sizes, counts = np.unique(iplen, return_counts=True)
    assert sizes.tolist() == [64, 576, 1500]
    share = counts / counts.sum()
    assert np.allclose(share, np.array([7, 4, 1]) / 12, atol=0.02)


def test_timestamps(mid):
    b, t = mid
    assert (np.diff(b.ts_ns) > 0).all()
    assert b.ts_ns[0] >= synth.DEFAULT_START_NS
    assert b.ts_ns[-1] - b.ts_ns[0] <= 60 * 10**9
    assert b.ts_ns[-1] - b.ts_ns[0] > 30 * 10**9
    assert t.summary()["duration_s"] == (b.ts_ns[-1] - b.ts_ns[0]) / 1e9
    b2 = generate(20, 400, seed=1, duration=0.5, start_ns=10**9)
    assert b2.ts_ns[0] >= 10**9 and b2.ts_ns[-1] - b2.ts_ns[0] <= 5 * 10**8


def test_summary(mid):
    _, t = mid
    s = t.summary()
    assert s["flows"] == 1000 and s["packets"] == 100_000
    assert sum(s["flows_by_category"].values()) == 1000
    assert sum(s["packets_by_direction"].values()) == 100_000
    assert s["denied_packets"] == int(t.packets[t.denied].sum()) > 0
    text = synth.format_summary(s)
    assert "flows     1,000" in text and "packets   100,000" in text


@settings(max_examples=25, deadline=None)
@given(flows=st.integers(0, 40), extra=st.integers(0, 400), seed=st.integers(0, 2**32 - 1))
def test_hypothesis_any_shape(flows, extra, seed):
    packets = 2 * flows + (extra if flows else 0)
    b, t = generate_with_truth(flows, packets, seed=seed)
    assert len(b) == packets and t.n_flows == flows
    assert np.array_equal(np.bincount(t.flow, minlength=flows), t.packets)
    assert_checksums(b, range(len(b)))
    b.parse()
    assert (b.status == PktStatus.OK).all()
    assert (np.diff(b.ts_ns) > 0).all()
    check_all_sessions(b, t)


# ----------------------------------------------------------------------------------------------- kernel contract
def kernel_args(n=1, caplen=60, proto=6, pay_off=0, tpl_len=100):
    def u(dt, v=0):
        return np.full(n, v, dt)

    return {
        "data": np.full(n * 100, 0xEE, np.uint8), "off": np.arange(n, dtype=np.int64) * 100,
        "caplen": u(np.uint32, caplen), "mac_src": u(np.uint64, 1), "mac_dst": u(np.uint64, 2),
        "src_ip": u(np.uint32, 1), "dst_ip": u(np.uint32, 2), "proto": u(np.uint8, proto), "ip_id": u(np.uint16),
        "ttl": u(np.uint8, 64), "df": u(np.uint8, 1), "sport": u(np.uint16, 1), "dport": u(np.uint16, 2),
        "seq": u(np.uint32), "ack": u(np.uint32), "flags": u(np.uint8, 0x10), "win": u(np.uint16),
        "pay_off": u(np.int64, pay_off), "pay_style": u(np.uint8, PAY_COPY), "pay_arg": u(np.uint16),
        "templates": np.arange(tpl_len, dtype=np.uint8), "status": u(np.uint8, 255),
    }


def test_kernel_writes_valid_frame():
    a = kernel_args(caplen=60)
    assert build_packets(**a) == 0
    frame = a["data"][:60].tobytes()
    assert checksums_ok(frame) == (True, True)
    assert frame[54:] == bytes(range(6)) and a["status"][0] == PktStatus.OK
    assert (a["data"][60:] == 0xEE).all()


@pytest.mark.parametrize("kw,status", [
    ({"caplen": 40}, PktStatus.TRUNCATED), ({"caplen": 101}, PktStatus.TRUNCATED),
    ({"proto": 50}, PktStatus.L4_TRUNCATED), ({"pay_off": 97}, PktStatus.L4_TRUNCATED),
    ({"pay_off": -1}, PktStatus.L4_TRUNCATED),
])
def test_kernel_flags_bad_rows(kw, status):
    a = kernel_args(**kw)
    assert build_packets(**a) == 1
    assert a["status"][0] == status
    assert (a["data"] == 0xEE).all()


def test_kernel_n0_and_readonly_inputs():
    a = kernel_args(n=0)
    assert build_packets(**a) == 0
    a = kernel_args(n=2)
    for k, v in a.items():
        if k not in ("data", "status"):
            v.setflags(write=False)
    assert build_packets(**a) == 0


@pytest.mark.parametrize("name", ["caplen", "seq", "status", "pay_off"])
def test_kernel_wrong_length(name):
    a = kernel_args(n=3)
    a[name] = a[name][:2]
    with pytest.raises(ValueError, match=name):
        build_packets(**a)


def test_kernel_wrong_dtype():
    a = kernel_args(n=3)
    a["src_ip"] = a["src_ip"].astype(np.int64)
    with pytest.raises(ValueError):
        build_packets(**a)


# ----------------------------------------------------------------------------------------------- pcap, tshark, CLI
def _write_pcap(path, batch):
    """Classic nanosecond pcap (stand-in until gwlb_fast.pcapio is merged; tests only)."""
    try:
        from gwlb_fast.pcapio import write_pcap
    except ImportError:
        with open(path, "wb") as fh:
            fh.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 65535, LINKTYPE_ETHERNET))
            for i in range(len(batch)):
                ts = int(batch.ts_ns[i])
                p = batch.packet(i)
                fh.write(struct.pack("<IIII", ts // 10**9, ts % 10**9, len(p), len(p)) + p)
        return
    write_pcap(path, batch)


def tshark_expert(path):
    out = subprocess.run(
        ["tshark", "-r", str(path), "-o", "tcp.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE",
         "-o", "ip.check_checksum:TRUE", "-z", "expert", "-q"],
        capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.tshark
@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_tshark_no_malformed_or_checksum_errors(tmp_path):
    b = generate(300, 20_000, seed=4)
    path = tmp_path / "synth.pcap"
    _write_pcap(path, b)
    report = tshark_expert(path)
    assert "Malformed" not in report and "Checksum" not in report and "checksum" not in report, report
    assert "Errors" not in report, report
    # the same check sees a corrupted checksum
    raw = bytearray(path.read_bytes())
    first = 24 + 16
    raw[first + 14 + 10] ^= 0xFF
    path.write_bytes(bytes(raw))
    assert "hecksum" in tshark_expert(path)


def test_cli_synth(tmp_path, capsys):
    pcapio = pytest.importorskip("gwlb_fast.pcapio")
    from gwlb_fast.cli import main

    out = tmp_path / "s.pcap"
    assert main(["synth", "-o", str(out), "--flows", "20", "--packets", "500", "--seed", "3"]) == 0
    text = capsys.readouterr().out
    assert "flows     20" in text and "packets   500" in text
    got = list(pcapio.read_pcap(str(out)))
    ref = generate(20, 500, seed=3)
    assert sum(len(x) for x in got) == 500
    assert [p for x in got for p in x.packets()] == ref.packets()
    assert np.array_equal(np.concatenate([x.ts_ns for x in got]), ref.ts_ns)


def test_cli_synth_bad_counts(tmp_path, capsys):
    from gwlb_fast.cli import main

    assert main(["synth", "-o", str(tmp_path / "x.pcap"), "--flows", "10", "--packets", "5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gwlb-fast: synth: packets (5) must be at least 2 * flows")
    assert not (tmp_path / "x.pcap").exists()


# ----------------------------------------------------------------------------------------------- application payloads
@pytest.fixture(scope="module")
def with_payloads():
    return generate_with_truth(400, 20_000, seed=5, payloads=True)


def test_payloads_off_is_the_default():
    """The opt-in leaves the default bytes alone, and changes only TCP payload bytes and what follows from them."""
    a, ta = generate_with_truth(200, 8000, seed=7)
    b, _ = generate_with_truth(200, 8000, seed=7, payloads=False)
    assert a.packets() == b.packets() and np.array_equal(a.ts_ns, b.ts_ns)
    c, tc = generate_with_truth(200, 8000, seed=7, payloads=True)
    assert len(c) == len(a) and c.packets() != a.packets()
    assert np.array_equal(ta.category, tc.category) and np.array_equal(ta.client_ip, tc.client_ip)
    assert np.array_equal(ta.packets, tc.packets) and np.array_equal(ta.close, tc.close)

    # UDP and ICMP flows carry the same payloads (their packets may sit elsewhere in the capture: a large ClientHello
    # turns a server segment into a client one, which moves the TCP flow's timing)
    def l4_payloads(batch, truth):
        out = {}
        for i in np.flatnonzero(truth.proto[truth.flow] != 6):
            out.setdefault(int(truth.flow[i]), []).append(bytes(dpkt.ethernet.Ethernet(batch.packet(i)).data.data.data))
        return out
    assert l4_payloads(a, ta) == l4_payloads(c, tc) != {}


def _client_streams(b, t):
    """Per TCP flow: the client's payload bytes in sequence order, and the number of client data segments."""
    streams = {}
    for i in range(len(b)):
        fl = int(t.flow[i])
        if t.proto[fl] != 6 or t.direction[i] == Direction.REPLY:
            continue
        eth = dpkt.ethernet.Ethernet(b.packet(i))
        tcp = eth.data.data
        if tcp.data:
            streams.setdefault(fl, []).append((tcp.seq, bytes(tcp.data)))
    return {fl: b"".join(d for _, d in sorted(segs)) for fl, segs in streams.items()}, \
        {fl: [len(d) for _, d in segs] for fl, segs in streams.items()}


def _tls_sni(record: bytes) -> str | None:
    rec = dpkt.ssl.TLSRecord(record)
    hello = dpkt.ssl.TLSHandshake(rec.data).data
    assert isinstance(hello, dpkt.ssl.TLSClientHello)
    for ext_type, ext in hello.extensions:
        if ext_type == 0:
            return ext[5:].decode()
    return None


def test_payloads_decode_with_dpkt(with_payloads):
    b, t = with_payloads
    check_all_sessions(b, t)   # sequence and acknowledgment numbers still consistent
    streams, seglens = _client_streams(b, t)
    n_http = n_tls = n_big = 0
    for fl, data in streams.items():
        port = int(t.server_port[fl])
        if port == 80:
            req = dpkt.http.Request(data[: data.index(b"\r\n\r\n") + 4])
            assert req.headers["host"] in synth.HTTP_HOSTS and req.method == "GET"
            n_http += 1
        elif port == 443:
            n = struct.unpack("!H", data[3:5])[0] + 5
            assert _tls_sni(data[:n]) in synth.TLS_HOSTS
            n_tls += 1
            if n > 1460:
                assert seglens[fl][:2] == [1460, n - 1460]   # spans the first two client segments
                n_big += 1
    assert n_http > 20 and n_tls > 60 and 0.1 < n_big / n_tls < 0.45
    # every TCP flow to 80/443 with a client data segment has its request
    has_data = {fl for fl in streams if t.server_port[fl] in (80, 443)}
    assert has_data and n_http + n_tls == len(has_data)
    # DNS flows: dpkt reads the query names
    qnames = set()
    for i in np.flatnonzero((t.kind[t.flow] == FlowKind.UDP_DNS) & (t.direction != Direction.REPLY))[:200]:
        dns = dpkt.dns.DNS(dpkt.ethernet.Ethernet(b.packet(int(i))).data.data.data)
        assert dns.qr == dpkt.dns.DNS_Q
        qnames.add(dns.qd[0].name)
    assert qnames and qnames <= set(synth._DNS_NAMES)


@pytest.mark.tshark
@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_payloads_tshark_fields(with_payloads, tmp_path):
    """tshark (reassembling TCP) reads every Host, SNI (also of the ClientHellos spanning two segments) and qname."""
    b, t = with_payloads
    path = tmp_path / "p.pcap"
    _write_pcap(path, b)
    out = subprocess.run(
        ["tshark", "-r", str(path), "-o", "tcp.desegment_tcp_streams:TRUE", "-Y",
         "http.request or tls.handshake.type == 1 or (dns.flags.response == 0)", "-T", "fields",
         "-e", "http.host", "-e", "tls.handshake.extensions_server_name", "-e", "dns.qry.name"],
        capture_output=True, text=True, timeout=120, check=True).stdout
    hosts, snis, qnames = set(), [], set()
    for ln in out.splitlines():
        h, s, q = (ln.split("\t") + ["", "", ""])[:3]
        if h:
            hosts.add(h)
        if s:
            snis.append(s)
        if q:
            qnames.add(q)
    streams, _ = _client_streams(b, t)
    n_tls = sum(1 for fl in streams if t.server_port[fl] == 443)
    assert hosts and hosts <= set(synth.HTTP_HOSTS)
    assert len(snis) == n_tls and set(snis) <= set(synth.TLS_HOSTS)
    assert qnames and qnames <= set(synth._DNS_NAMES)
    report = tshark_expert(path)
    assert "Malformed" not in report and "Errors" not in report, report


def test_payloads_app_id(with_payloads):
    """The inspection's App-ID labels the flows by their content: web-browsing, ssl, dns. (Outbound flows: the two
    directions of an inbound flow have different 5-tuples in the capture, before DNAT, so the standalone inspection
    sees two half flows; the pipeline's NAT gateway joins them.)"""
    from gwlb_fast.inspect.inspector import inspect_flows

    b, t = with_payloads
    b.parse()
    streams, _ = _client_streams(b, t)
    want = {}
    for fl in streams:
        p = int(t.server_port[fl])
        if p in (80, 443) and not t.inbound[fl]:
            want[(int(t.client_ip[fl]), int(t.client_port[fl]))] = "web-browsing" if p == 80 else "ssl"
    for fl in np.flatnonzero(t.kind == FlowKind.UDP_DNS):
        want[(int(t.client_ip[fl]), int(t.client_port[fl]))] = "dns"
    got = {}
    for r in inspect_flows([b]):
        ip_ = r["client_ip"] if isinstance(r["client_ip"], int) else ip(r["client_ip"])
        got[(ip_, int(r["client_port"]))] = r["application"]
    assert want and {k: got.get(k) for k in want} == want


def test_cli_synth_payloads(tmp_path, capsys):
    pcapio = pytest.importorskip("gwlb_fast.pcapio")
    from gwlb_fast.cli import main

    out = tmp_path / "p.pcap"
    assert main(["synth", "-o", str(out), "--flows", "20", "--packets", "500", "--seed", "3", "--payloads"]) == 0
    got = [p for x in pcapio.read_pcap(str(out)) for p in x.packets()]
    assert got == generate(20, 500, seed=3, payloads=True).packets() != generate(20, 500, seed=3).packets()
