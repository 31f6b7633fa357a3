"""Firewall stage: stateful sessions, policy actions, TCP resets inside Geneve, session log (vs a Python oracle)."""
import shutil
import socket
import struct
import subprocess

import dpkt
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gwlb_fast import geneve
from gwlb_fast._kernels import session as _s
from gwlb_fast._kernels import tcpreset as _r
from gwlb_fast.batch import LINKTYPE_IPV4, PacketBatch
from gwlb_fast.errors import ConfigError
from gwlb_fast.stages.firewall import (
    END_REASONS,
    KIND_ECHO,
    KIND_RST_TO_RECEIVER,
    KIND_RST_TO_SENDER,
    SESSION_DTYPE,
    Firewall,
    zone_of_endpoint_ids,
)
from gwlb_fast.stages.policy import Policy
from gwlb_fast.status import PktStatus
from tests.oracles.firewall import ACK, FIN, RST, SYN, OracleFirewall, Pkt, rst_for

S = 1_000_000_000
EP_A = 0x0A1B2C3D4E5F6071
EP_B = 0x0A1B2C3D4E5F6072
CLIENT = 0x0A010105  # 10.1.1.5
SERVER = 0x01020304  # 1.2.3.4

POLICY = {
    "zones": {"gwlb": ["gwlbe-a"]},
    "rules": [
        {"name": "allow-web-out", "source": ["10.1.1.0/24"], "protocol": "tcp", "port": [80, 443], "action": "allow"},
        {"name": "allow-dns", "source": ["10.1.1.0/24"], "protocol": "udp", "port": [53], "action": "allow"},
        {"name": "reset-ssh-both", "protocol": "tcp", "port": [22], "action": "reset-both"},
        {"name": "reset-telnet-client", "protocol": "tcp", "port": [23], "action": "reset-client"},
        {"name": "reset-smtp-server", "protocol": "tcp", "port": [25], "action": "reset-server"},
        {"name": "reset-udp", "protocol": "udp", "port": [69], "action": "reset-both"},
        {"name": "drop-icmp", "protocol": "icmp", "action": "drop"},
        {"name": "block-rest", "action": "deny"},
    ],
}


def ip_str(a: int) -> str:
    return socket.inet_ntoa(struct.pack("!I", a))


def inner_bytes(p: Pkt) -> bytes:
    payload = bytes(range(p.paylen % 256)) * (p.paylen // 256) + bytes(range(p.paylen % 256))
    payload = payload[: p.paylen]
    if p.proto == 6:
        l4 = dpkt.tcp.TCP(sport=p.sport, dport=p.dport, flags=p.flags, seq=p.seq, ack=p.ack, data=payload)
    elif p.proto == 17:
        l4 = dpkt.udp.UDP(sport=p.sport, dport=p.dport, data=payload)
        l4.ulen = 8 + len(payload)
    else:
        l4 = dpkt.icmp.ICMP(type=8, data=dpkt.icmp.ICMP.Echo(id=p.sport, seq=p.dport, data=payload))
    ip = dpkt.ip.IP(src=struct.pack("!I", p.src), dst=struct.pack("!I", p.dst), p=p.proto, ttl=64, data=l4)
    ip.len = 20 + len(bytes(l4))
    return bytes(ip)


def make_wire(pkts) -> PacketBatch:
    batch = PacketBatch.from_packets([inner_bytes(p) for p in pkts], ts_ns=[p.ts for p in pkts],
                                     linktype=LINKTYPE_IPV4)
    cookies = np.array([(p.src ^ p.dst ^ p.sport ^ p.dport) & 0xFFFFFFFF for p in pkts], np.uint32)
    wire = geneve.encap(batch, src="10.0.0.10", dst="10.0.1.11",
                        endpoint_id=np.array([p.endpoint for p in pkts], np.uint64),
                        attachment_id=np.uint64(0x1122334455667788), cookie=cookies)
    assert len(wire) == len(pkts)
    return wire


def make_fw(policy=POLICY, zones=None, **kw) -> Firewall:
    pol = Policy.from_yaml(policy)
    kw.setdefault("session_capacity", 4096)
    return Firewall("fw-1", 1, pol, {EP_A: "gwlb"} if zones is None else zones, **kw)


def tcp(ts, src, dst, sport, dport, flags, seq=0, ack=0, paylen=0, ep=EP_A):
    return Pkt(ts, ep, src, dst, sport, dport, 6, flags, seq, ack, paylen)


def decode(frame: bytes):
    """(eth, outer ip, udp, geneve+options bytes, inner ip) of one returned frame."""
    eth = dpkt.ethernet.Ethernet(frame)
    ip = eth.data
    udp = ip.data
    raw = bytes(udp)[8:]
    opt_len = (raw[0] & 0x3F) * 4
    inner = dpkt.ip.IP(raw[8 + opt_len:])
    return eth, ip, udp, raw[: 8 + opt_len], inner


def check_checksums(frame: bytes):
    _, ip, udp, _, inner = decode(frame)
    hdr = bytes(ip)[: ip.hl * 4]
    assert dpkt.in_cksum(hdr) == 0, "outer IPv4 checksum"
    assert dpkt.in_cksum(bytes(inner)[: inner.hl * 4]) == 0, "inner IPv4 checksum"
    if inner.p == 6:
        seg = bytes(inner)[inner.hl * 4: inner.len]
        pseudo = struct.pack("!4s4sBBH", inner.src, inner.dst, 0, 6, len(seg))
        assert dpkt.in_cksum(pseudo + seg) == 0, "inner TCP checksum"
    assert ip.len == len(frame) - 14
    assert udp.ulen == len(frame) - 14 - ip.hl * 4


def handshake(ts0=0, sport=40000, dport=80, ep=EP_A):
    c, s = CLIENT, SERVER
    return [
        tcp(ts0 + 1, c, s, sport, dport, SYN, seq=100),
        tcp(ts0 + 2, s, c, dport, sport, SYN | ACK, seq=900, ack=101),
        tcp(ts0 + 3, c, s, sport, dport, ACK, seq=101, ack=901),
        tcp(ts0 + 4, c, s, sport, dport, ACK, seq=101, ack=901, paylen=30),
        tcp(ts0 + 5, s, c, dport, sport, ACK, seq=901, ack=131, paylen=200),
        tcp(ts0 + 6, c, s, sport, dport, FIN | ACK, seq=131, ack=1101),
        tcp(ts0 + 7, s, c, dport, sport, FIN | ACK, seq=1101, ack=132),
        tcp(ts0 + 8, c, s, sport, dport, ACK, seq=132, ack=1102),
    ]


# ---------------------------------------------------------------------------------------------------- stateful
def test_allowed_session_and_replies_pass_with_echoed_geneve():
    fw = make_fw(keep_log=True)
    pkts = handshake()
    wire = make_wire(pkts)
    out = fw.process(wire)
    # the policy has no rule allowing 1.2.3.4:80 -> 10.1.1.0/24, yet the replies pass on the session
    assert out.status.tolist() == [PktStatus.OK] * len(pkts)
    assert out.rule.tolist() == [0] * len(pkts)
    assert out.source.tolist() == list(range(len(pkts)))
    assert (out.kind == KIND_ECHO).all()
    assert fw.hits[0] == 1 and fw.hits.sum() == 1
    for i in range(len(pkts)):
        sent, back = wire.packet(i), out.wire.packet(i)
        assert len(sent) == len(back)
        assert back[0:6] == sent[6:12] and back[6:12] == sent[0:6]  # MACs swapped
        assert back[26:30] == sent[30:34] and back[30:34] == sent[26:30]  # outer IPv4 swapped
        assert back[34:] == sent[34:]  # UDP, Geneve header + options (cookie included), inner: byte for byte
        assert back[12:26] == sent[12:26]
        check_checksums(back)
    assert (out.wire.fw_index == 1).all()
    assert out.wire.endpoint_id.tolist() == [EP_A] * len(pkts)
    log = fw.finish()
    assert log.dtype == SESSION_DTYPE and log.shape == (1,)
    rec = log[0]
    assert (rec["client_ip"], rec["server_ip"], rec["client_port"], rec["server_port"]) == (CLIENT, SERVER, 40000, 80)
    assert END_REASONS[int(rec["end_reason"])] == "tcp-fin"
    assert (rec["packets_c2s"], rec["packets_s2c"]) == (5, 3)
    assert rec["bytes_c2s"] == 5 * 40 + 30 and rec["bytes_s2c"] == 3 * 40 + 200
    assert (rec["start_ns"], rec["end_ns"]) == (1, 8)
    assert rec["endpoint_id"] == EP_A and rec["rule"] == 0
    d = fw.describe_sessions(log)[0]
    assert d["rule"] == "allow-web-out" and d["zone"] == "gwlb" and d["client_ip"] == "10.1.1.5"
    assert fw.session_log.shape == (1,)
    assert len(fw.table) == 0


def test_session_spans_batches():
    fw = make_fw()
    pkts = handshake()
    outs = [fw.process(make_wire([p])) for p in pkts]
    assert [int(o.status[0]) for o in outs] == [PktStatus.OK] * len(pkts)
    assert fw.hits.sum() == 1 and len(fw.table) == 1


def test_reply_direction_without_session_is_new_flow():
    fw = make_fw()
    pkts = [
        tcp(1, SERVER, CLIENT, 80, 40000, SYN, seq=5),  # a SYN from the outside: classified as its own flow
        tcp(2, SERVER, CLIENT, 80, 40001, SYN | ACK, seq=5, ack=9),  # a reply with no session: not a SYN
        Pkt(3, EP_A, SERVER, CLIENT, 53, 5353, 17, paylen=12),  # UDP "reply" with no session: new flow, denied
    ]
    out = fw.process(make_wire(pkts))
    block = POLICY["rules"].index(POLICY["rules"][-1])
    assert out.status.tolist() == [PktStatus.POLICY_DENY, PktStatus.TCP_NOT_SYN, PktStatus.POLICY_DENY]
    assert out.rule.tolist() == [block, -1, block]
    assert len(out.wire) == 0
    # the denied session is remembered: the inside host's packet of that flow is dropped too
    out = fw.process(make_wire([Pkt(4, EP_A, CLIENT, SERVER, 5353, 53, 17, paylen=12)]))
    assert out.status.tolist() == [PktStatus.POLICY_DENY] and out.rule.tolist() == [block]
    # the same exchange on a fresh flow started from the inside is allowed, and its reply passes
    out = fw.process(make_wire([Pkt(4, EP_A, CLIENT, SERVER, 5354, 53, 17, paylen=12),
                                Pkt(5, EP_A, SERVER, CLIENT, 53, 5354, 17, paylen=40)]))
    assert out.status.tolist() == [PktStatus.OK, PktStatus.OK]
    assert out.rule.tolist() == [1, 1]


def test_non_syn_first_packet_dropped_and_counted():
    fw = make_fw()
    pkts = [tcp(1, CLIENT, SERVER, 40000, 80, ACK, seq=5, ack=6),
            tcp(2, CLIENT, SERVER, 40000, 80, ACK | SYN, seq=5, ack=6),
            tcp(3, CLIENT, SERVER, 40000, 80, RST | SYN, seq=5),
            tcp(4, CLIENT, SERVER, 40000, 80, SYN, seq=5)]  # a SYN afterwards starts the session
    out = fw.process(make_wire(pkts))
    assert out.status.tolist() == [PktStatus.TCP_NOT_SYN] * 3 + [PktStatus.OK]
    assert out.rule.tolist() == [-1, -1, -1, 0]
    assert out.counts[PktStatus.TCP_NOT_SYN] == 3 and fw.counts[PktStatus.TCP_NOT_SYN] == 3
    assert fw.hits.sum() == 1
    log = fw.finish()
    assert log.shape == (1,) and log[0]["packets_c2s"] == 1 and log[0]["start_ns"] == 4
    # a lone non-SYN leaves no session behind
    fw = make_fw()
    fw.process(make_wire([tcp(1, CLIENT, SERVER, 40000, 80, ACK)]))
    assert len(fw.table) == 0 and fw.finish().shape == (0,)


def test_deny_remembered_and_logged_with_rule():
    fw = make_fw()
    pkts = [Pkt(i * S, EP_A, CLIENT, SERVER, 5000, 9999, 17, paylen=10) for i in range(3)]
    pkts.append(Pkt(3 * S, EP_A, SERVER, CLIENT, 9999, 5000, 17, paylen=10))
    out = fw.process(make_wire(pkts))
    block = len(POLICY["rules"]) - 1
    assert out.status.tolist() == [PktStatus.POLICY_DENY] * 4
    assert out.rule.tolist() == [block] * 4
    assert fw.hits[block] == 1  # one session, classified once
    log = fw.finish()
    assert log.shape == (1,)
    rec = fw.describe_sessions(log)[0]
    assert rec["rule"] == "block-rest" and rec["action"] == "deny" and rec["end_reason"] == "policy-deny"
    assert (rec["packets_c2s"], rec["packets_s2c"]) == (3, 1)


def test_default_action_when_no_rule_matches():
    pol = {"rules": [{"name": "only-web", "protocol": "tcp", "port": [80], "action": "allow"}], "default": "deny"}
    fw = make_fw(pol, zones={EP_A: "anything"})
    out = fw.process(make_wire([Pkt(1, EP_A, CLIENT, SERVER, 1, 2, 17)]))
    assert out.status[0] == PktStatus.POLICY_DENY and out.rule[0] == 1 == fw.default_rule
    assert fw.hits.tolist() == [0, 1]


def test_zones_from_endpoint():
    pol = {"zones": {"trust": ["gwlbe-a"], "untrust": ["gwlbe-b"]},
           "rules": [{"name": "trust-out", "from": ["trust"], "to": ["trust"], "action": "allow"},
                     {"name": "deny", "action": "deny"}]}
    fw = make_fw(pol, zones={EP_A: "trust", EP_B: "untrust"})
    out = fw.process(make_wire([Pkt(1, EP_A, CLIENT, SERVER, 1, 2, 17), Pkt(2, EP_B, CLIENT, SERVER, 1, 2, 17),
                                Pkt(3, 0xDEAD, CLIENT, SERVER, 1, 2, 17)]))
    assert out.status.tolist() == [PktStatus.OK, PktStatus.POLICY_DENY, PktStatus.UNKNOWN_ENDPOINT]
    assert out.rule.tolist() == [0, 1, -1]
    log = fw.finish()
    assert sorted(log["zone"].tolist()) == [0, 1]  # the two endpoints' sessions are distinct
    with pytest.raises(ConfigError, match="zone 'dmz'"):
        make_fw(pol, zones={EP_A: "dmz"})
    policy = Policy.from_yaml(pol)
    ids = {"gwlbe-a": EP_A, "gwlbe-b": EP_B, "x": 1}
    assert zone_of_endpoint_ids(policy, ids) == {EP_A: "trust", EP_B: "untrust"}
    with pytest.raises(ConfigError, match="gwlbe-b"):
        zone_of_endpoint_ids(policy, {"gwlbe-a": EP_A})


def test_rst_closes_session():
    fw = make_fw(close_timeout=2)
    c, s = CLIENT, SERVER
    pkts = handshake()[:4] + [tcp(10, s, c, 80, 40000, RST | ACK, seq=901, ack=131),
                              tcp(11, c, s, 40000, 80, ACK, seq=131, ack=901)]
    out = fw.process(make_wire(pkts))
    assert out.status.tolist() == [PktStatus.OK] * 5 + [PktStatus.SESSION_CLOSED]
    assert len(out.wire) == 5
    # after the close timeout the slot is gone: a new SYN starts a new session
    out = fw.process(make_wire([tcp(3 * S, c, s, 40000, 80, SYN, seq=7)]))
    assert out.status.tolist() == [PktStatus.OK]
    assert [END_REASONS[int(r)] for r in out.sessions["end_reason"]] == ["tcp-rst-from-server"]
    assert out.sessions[0]["end_ns"] == 11 and out.sessions[0]["packets_c2s"] == 4
    assert fw.hits[0] == 2


def test_short_timeouts_apply_inside_a_batch():
    # the RST close, the close timeout and the new SYN in ONE batch: same result as across batches
    fw = make_fw(close_timeout=2, deny_timeout=5)
    c, s = CLIENT, SERVER
    pkts = [tcp(0, c, s, 40000, 80, SYN), tcp(1, c, s, 40000, 80, RST | ACK, seq=1, ack=1),
            tcp(S, c, s, 40000, 80, SYN),  # within the close timeout: dropped
            tcp(4 * S, c, s, 40000, 80, SYN),  # after it: a new session
            tcp(5 * S, c, s, 40000, 22, SYN),  # reset-both, remembered for 5 s
            tcp(6 * S, c, s, 40000, 22, SYN),
            tcp(11 * S, c, s, 40000, 22, SYN)]  # 5 s after the last packet of the reset session: classified again
    out = fw.process(make_wire(pkts))
    assert out.status.tolist() == [PktStatus.OK, PktStatus.OK, PktStatus.SESSION_CLOSED, PktStatus.OK,
                                   PktStatus.POLICY_RESET, PktStatus.POLICY_RESET, PktStatus.POLICY_RESET]
    assert fw.hits[0] == 2 and fw.hits[2] == 2
    reasons = sorted(END_REASONS[int(r)] for r in out.sessions["end_reason"])
    assert reasons == ["policy-deny", "tcp-rst-from-client"]
    # the reopened session has the protocol timeout again in the flow table, not the close timeout
    slots = fw.table.live_slots()
    web = slots[(fw.table.a_port[slots] == 80) | (fw.table.b_port[slots] == 80)]
    assert fw.table.timeout[web].tolist() == [-1]
    assert sorted(END_REASONS[int(r)] for r in fw.finish()["end_reason"]) == ["end-of-run", "policy-deny"]


def test_idle_expiry_by_packet_time():
    fw = make_fw(other_timeout=5, tcp_timeout=100)
    out = fw.process(make_wire([Pkt(0, EP_A, CLIENT, SERVER, 5353, 53, 17),
                                tcp(1 * S, CLIENT, SERVER, 40000, 80, SYN)]))
    assert len(fw.table) == 2 and out.sessions.shape == (0,)
    # an unrelated packet 6 s later: the UDP session is idle (5 s), the TCP one is not (100 s)
    out = fw.process(make_wire([Pkt(6 * S, EP_A, CLIENT, SERVER, 5354, 53, 17)]))
    assert out.sessions.shape == (1,)
    assert END_REASONS[int(out.sessions[0]["end_reason"])] == "aged-out"
    assert out.sessions[0]["client_port"] == 5353 and out.sessions[0]["end_ns"] == 0
    # the same key coming back after its timeout is a new session (flow table restart), the old one is logged
    fw2 = make_fw(other_timeout=5)
    out = fw2.process(make_wire([Pkt(0, EP_A, CLIENT, SERVER, 5353, 53, 17),
                                 Pkt(10 * S, EP_A, CLIENT, SERVER, 5353, 53, 17)]))
    assert out.status.tolist() == [PktStatus.OK, PktStatus.OK]
    assert out.sessions.shape == (1,) and out.sessions[0]["end_ns"] == 0
    assert fw2.hits[1] == 2
    # finish at a later time ages out the rest; without a time they end with end-of-run
    log = fw.finish(200 * S)
    assert sorted(END_REASONS[int(r)] for r in log["end_reason"]) == ["aged-out", "aged-out"]
    assert [END_REASONS[int(r)] for r in fw2.finish()["end_reason"]] == ["end-of-run"]


def test_other_drop_reasons_and_empty_batch():
    fw = make_fw()
    out = fw.process(PacketBatch.empty())
    assert len(out.wire) == 0 and out.status.shape == (0,) and out.sessions.shape == (0,)
    good = make_wire([tcp(1, CLIENT, SERVER, 40000, 80, SYN)])
    frames = [good.packet(0), good.packet(0)[:60], b"\x00" * 10]
    not_geneve = bytearray(good.packet(0))
    not_geneve[36:38] = b"\x00\x35"  # UDP dst port 53
    frames.append(bytes(not_geneve))
    out = fw.process(PacketBatch.from_packets(frames))
    assert out.status[0] == PktStatus.OK
    assert out.status[3] == PktStatus.NOT_GENEVE
    assert (out.status[1:] != PktStatus.OK).all()
    assert out.counts.sum() == 4 and len(out.wire) == 1
    # ICMP: drop rule
    out = fw.process(make_wire([Pkt(2, EP_A, CLIENT, SERVER, 1, 1, 1, paylen=8)]))
    assert out.status[0] == PktStatus.POLICY_DENY and out.rule[0] == 6


# ---------------------------------------------------------------------------------------------------- resets
def rst_fields(frame: bytes):
    _, _, _, _, inner = decode(frame)
    t = inner.data
    return (struct.unpack("!I", inner.src)[0], struct.unpack("!I", inner.dst)[0], t.sport, t.dport, t.seq, t.ack,
            t.flags)


@pytest.mark.parametrize("dport,expect", [(22, "both"), (23, "client"), (25, "server")])
def test_reset_actions_build_rfc_rsts(dport, expect):
    fw = make_fw()
    c, s = CLIENT, SERVER
    syn = tcp(1, c, s, 40000, dport, SYN, seq=1000)
    retrans_ack = tcp(2, c, s, 40000, dport, ACK | FIN, seq=1001, ack=777, paylen=5)  # later packet, has ACK
    from_server = tcp(3, s, c, dport, 40000, ACK, seq=50, ack=1001, paylen=3)
    rst = tcp(4, c, s, 40000, dport, RST, seq=1001)
    pkts = [syn, retrans_ack, from_server, rst]
    wire = make_wire(pkts)
    out = fw.process(wire)
    assert out.status.tolist() == [PktStatus.POLICY_RESET] * 4
    expected = []
    for i, p in enumerate(pkts[:3]):
        from_client = p.src == c
        to_client = rst_for(p, to_sender=from_client)
        to_server = rst_for(p, to_sender=not from_client)
        want = {"both": [to_client, to_server], "client": [to_client], "server": [to_server]}[expect]
        expected += [(i, w) for w in want]
    # no RST is sent in answer to an RST
    assert out.source.tolist() == [i for i, _ in expected]
    got = [rst_fields(f) for f in out.wire.packets()]
    assert got == [w for _, w in expected]
    # the RFC 9293 rule, spelled out for the SYN: no ACK in it -> seq 0, ack = seq + 1, RST|ACK to the client
    if expect in ("both", "client"):
        assert got[0] == (s, c, dport, 40000, 0, 1001, RST | ACK)
    for j, frame in enumerate(out.wire.packets()):
        check_checksums(frame)
        sent = wire.packet(int(out.source[j]))
        _, _, _, gen_sent, _ = decode(sent)
        _, _, _, gen_back, inner = decode(frame)
        assert gen_back == gen_sent  # Geneve header and options echoed byte for byte
        assert frame[26:30] == sent[30:34] and frame[30:34] == sent[26:30]
        assert inner.len == 40 and inner.ttl == 64 and inner.data.win == 0
    kinds = out.kind.tolist()
    assert set(kinds) <= {KIND_RST_TO_SENDER, KIND_RST_TO_RECEIVER}
    log = fw.finish()
    assert log.shape == (1,) and END_REASONS[int(log[0]["end_reason"])] == "policy-deny"


def test_reset_action_on_udp_drops():
    fw = make_fw()
    out = fw.process(make_wire([Pkt(1, EP_A, CLIENT, SERVER, 5000, 69, 17)]))
    assert out.status[0] == PktStatus.POLICY_DENY and len(out.wire) == 0 and out.rule[0] == 5


@pytest.mark.tshark
@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_rsts_decode_in_tshark(tmp_path):
    fw = make_fw()
    c, s = CLIENT, SERVER
    pkts = [tcp(1, c, s, 40000, 22, SYN, seq=1000), tcp(2, c, s, 40000, 22, ACK, seq=1001, ack=4242, paylen=7)]
    out = fw.process(make_wire(pkts))
    assert len(out.wire) == 4
    path = tmp_path / "rst.pcap"
    with open(path, "wb") as fh:
        w = dpkt.pcap.Writer(fh, linktype=1)
        for i, f in enumerate(out.wire.packets()):
            w.writepkt(f, ts=1 + i)
    fields = ["ip.src", "ip.dst", "tcp.srcport", "tcp.dstport", "tcp.seq_raw", "tcp.ack_raw", "tcp.flags.reset",
              "tcp.flags.ack", "geneve.option.class", "tcp.checksum.status", "_ws.expert.message", "_ws.malformed",
              "geneve.option.type", "geneve.option.unknown.data"]
    cmd = ["tshark", "-n", "-r", str(path), "-o", "tcp.check_checksum:TRUE", "-o", "ip.check_checksum:TRUE",
           "-Y", "tcp.flags.reset==1", "-T", "fields", "-E", "separator=|", "-E", "occurrence=a"]
    for f in fields:
        cmd += ["-e", f]
    res = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    rows = [line.split("|") for line in res.stdout.strip().splitlines()]
    assert len(rows) == 4
    want = [rst_for(pkts[0], True), rst_for(pkts[0], False), rst_for(pkts[1], True), rst_for(pkts[1], False)]
    for row, (src, dst, sp, dp, seq, ack, flags) in zip(rows, want):
        # outer and inner addresses: ip.src lists the outer (firewall -> GWLB) then the inner
        assert row[0].split(",") == ["10.0.1.11", ip_str(src)]
        assert row[1].split(",") == ["10.0.0.10", ip_str(dst)]
        assert (int(row[2]), int(row[3])) == (sp, dp)
        assert int(row[4]) == seq
        if flags & ACK:
            assert int(row[5]) == ack
        assert row[6] in ("1", "True")
        assert row[7] in (("1", "True") if flags & ACK else ("0", "False"))
        assert "0x0108" in row[8].split(",") or "264" in row[8].split(",")
        assert row[9] in ("1", "Good")  # 0 bad, 1 good, 2 unverified
        # the only expert note is the RST itself (no checksum, length or malformed-packet complaints)
        assert set(row[10].split(",")) == {"Connection reset (RST)"}
        assert row[11] == ""
        # the GWLB options of the offending packet, echoed: endpoint id, attachment id, flow cookie
        assert row[12].split(",") == ["0x01", "0x02", "0x03"]
        cookie = (CLIENT ^ SERVER ^ 40000 ^ 22) & 0xFFFFFFFF
        assert row[13].split(",") == [f"{EP_A:016x}", "1122334455667788", f"{cookie:08x}"]


# ---------------------------------------------------------------------------------------------------- oracle
ENDPOINTS = [EP_A, EP_B, 0xBAD]
HOSTS = [CLIENT, 0x0A010106, SERVER, 0x08080808]
PORTS = [22, 23, 25, 53, 69, 80, 443, 40000, 40001]


@st.composite
def session_mix(draw):
    """Packets of a few interleaved conversations (TCP with flags, UDP, ICMP) over a few batches."""
    n = draw(st.integers(1, 60))
    pkts = []
    t = 0
    for _ in range(n):
        t += draw(st.sampled_from([0, 1, 1000, S, 3 * S, 20 * S]))
        proto = draw(st.sampled_from([6, 6, 6, 17, 1]))
        a, b = draw(st.sampled_from(HOSTS)), draw(st.sampled_from(HOSTS))
        pa, pb = draw(st.sampled_from(PORTS)), draw(st.sampled_from(PORTS))
        if proto == 1:
            pa = pb = 0
        flags = draw(st.sampled_from([SYN, SYN, ACK, SYN | ACK, FIN | ACK, RST, RST | ACK, ACK, ACK | 0x08]))
        pkts.append(Pkt(t, draw(st.sampled_from(ENDPOINTS)), a, b, pa, pb, proto, flags,
                        draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 40))))
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=3)))
    bounds = [0, *cuts, n]
    return [pkts[bounds[i]:bounds[i + 1]] for i in range(len(bounds) - 1)]


def _frames_of(out, i):
    rows = np.flatnonzero(out.source == i)
    res = []
    for j in rows:
        if out.kind[j] == KIND_ECHO:
            res.append("echo")
        else:
            res.append(rst_fields(out.wire.packet(int(j))))
    return res


@settings(max_examples=60, deadline=None)
@given(session_mix())
def test_matches_oracle_on_random_session_mixes(batches):
    pol = {"zones": {"gwlb": ["gwlbe-a"], "other": ["gwlbe-b"]},
           "rules": [*POLICY["rules"][:-1], {"name": "other-zone", "from": ["other"], "protocol": "udp",
                                              "action": "allow"}, POLICY["rules"][-1]]}
    zones = {EP_A: "gwlb", EP_B: "other"}
    kw = {"tcp_timeout": 60, "other_timeout": 10, "close_timeout": 2, "deny_timeout": 5}
    fw = make_fw(pol, zones=zones, **kw)
    oracle = OracleFirewall(fw.policy, zones, *(int(kw[k] * S) for k in ("tcp_timeout", "other_timeout",
                                                                          "close_timeout", "deny_timeout")))
    logs, outs = [], []
    for pkts in batches:
        if not pkts:
            continue
        out = fw.process(make_wire(pkts))
        outs.append(out)
        want = oracle.process(pkts)
        assert out.status.tolist() == [int(w[0]) for w in want]
        assert out.rule.tolist() == [w[1] for w in want]
        for i, w in enumerate(want):
            assert _frames_of(out, i) == w[2]
        logs.append(out.sessions)
        assert (np.diff(out.source) >= 0).all()
    logs.append(fw.finish())
    oracle.finish()
    assert fw.hits.tolist() == oracle.hits
    got = sorted(_l4_record(rec) for rec in np.concatenate(logs))
    assert got == sorted(oracle.log)
    assert len(fw.table) == 0
    # the same packets in one batch: same verdicts and the same log (batching changes nothing but timing of records)
    everything = [p for b in batches for p in b]
    one = make_fw(pol, zones=zones, **kw)
    out = one.process(make_wire(everything))
    assert out.status.tolist() == [int(w) for w in np.concatenate([o.status for o in outs])]
    assert sorted(_l4_record(rec) for rec in np.concatenate([out.sessions, one.finish()])) == got


@settings(max_examples=40, deadline=None)
@given(session_mix())
def test_without_echo_returns_exactly_the_resets(batches):
    """``echo=False`` builds the same frames as ``echo=True`` minus the echoes, with the same sources, and decides
    the same."""
    with_echo, without = make_fw(), make_fw()
    for pkts in batches:
        if not pkts:
            continue
        a, b = with_echo.process(make_wire(pkts)), without.process(make_wire(pkts), echo=False)
        assert a.status.tolist() == b.status.tolist() and a.rule.tolist() == b.rule.tolist()
        rst = np.flatnonzero(a.kind != KIND_ECHO)
        assert b.source.tolist() == a.source[rst].tolist() and b.kind.tolist() == a.kind[rst].tolist()
        assert b.wire.packets() == a.wire[rst].packets()
        for name in ("vni", "endpoint_id", "flow_cookie", "inner_off", "wirelen", "ts_ns"):
            assert getattr(b.wire, name).tolist() == getattr(a.wire, name)[rst].tolist()


@settings(max_examples=40, deadline=None)
@given(session_mix())
def test_inner_packets_without_frames_decide_and_reset_alike(batches):
    """``process_inner`` on ``geneve.carried`` views decides exactly as ``process(frames, echo=False)`` and builds the
    same reset frames, asking only for the frames of the packets it answers with a reset."""
    on_frames, on_inner = make_fw(), make_fw()
    for pkts in batches:
        if not pkts:
            continue
        wire = make_wire(pkts)
        inner_pk = PacketBatch.from_packets([inner_bytes(p) for p in pkts], ts_ns=[p.ts for p in pkts],
                                            linktype=LINKTYPE_IPV4)
        asked = []

        def frames(rows, wire=wire, asked=asked):
            asked.append(rows.tolist())
            return wire[rows]

        view = geneve.carried(inner_pk, endpoint_id=wire.endpoint_id, attachment_id=wire.attachment_id,
                              cookie=wire.flow_cookie)
        a, b = on_frames.process(wire, echo=False), on_inner.process_inner(view, frames)
        assert a.status.tolist() == b.status.tolist() and a.rule.tolist() == b.rule.tolist()
        assert b.source.tolist() == a.source.tolist() and b.kind.tolist() == a.kind.tolist()
        assert b.wire.packets() == a.wire.packets()
        for name in ("vni", "endpoint_id", "flow_cookie", "inner_off", "wirelen", "ts_ns", "linktype"):
            assert getattr(b.wire, name).tolist() == getattr(a.wire, name).tolist()
        assert asked == ([sorted(set(a.source.tolist()))] if len(a.source) else [])
        assert sorted(map(tuple, b.sessions.tolist())) == sorted(map(tuple, a.sessions.tolist()))
    assert on_frames.hits.tolist() == on_inner.hits.tolist()


@settings(max_examples=40, deadline=None)
@given(session_mix())
def test_inner_packets_with_only_the_columns_read_decide_alike(batches):
    """``process_inner`` on a carried view with only ``inner_columns`` (as the GWLB endpoint's inspection passes
    it) gives the same output as on the full view, its reset frames' Geneve columns taken from the frames built."""
    full, part = make_fw(), make_fw()
    assert part.inner_columns is not None
    for pkts in batches:
        if not pkts:
            continue
        wire = make_wire(pkts)
        inner_pk = PacketBatch.from_packets([inner_bytes(p) for p in pkts], ts_ns=[p.ts for p in pkts],
                                            linktype=LINKTYPE_IPV4).parse()
        view = geneve.carried(inner_pk, endpoint_id=wire.endpoint_id, attachment_id=wire.attachment_id,
                              cookie=wire.flow_cookie, parsed=True)
        if view.l4_off is None:  # not every packet parsed OK: the caller passes every column then
            continue
        rows = np.arange(len(view))
        less = view.take(rows, part.inner_columns)
        assert less.vni is None and less.inner_off is None and less.linktype is None

        def frames(r, wire=wire):
            return wire[r]

        a, b = full.process_inner(view[rows], frames), part.process_inner(less, frames)
        assert a.status.tolist() == b.status.tolist() and a.rule.tolist() == b.rule.tolist()
        assert b.source.tolist() == a.source.tolist() and b.kind.tolist() == a.kind.tolist()
        assert b.wire.packets() == a.wire.packets()
        for name in ("vni", "geneve_flags", "opt_len", "endpoint_id", "attachment_id", "flow_cookie", "inner_off",
                     "wirelen", "ts_ns", "linktype", "fw_index", "status"):
            assert getattr(b.wire, name).tolist() == getattr(a.wire, name).tolist(), name
        assert b.sessions.tobytes() == a.sessions.tobytes() and b.counts.tolist() == a.counts.tolist()
    assert full.hits.tolist() == part.hits.tolist()
    assert full.table.stats() == part.table.stats()


# ---------------------------------------------------------------------------------------------------- robustness
@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(max_size=120), min_size=1, max_size=8), st.binary(min_size=0, max_size=40))
def test_fuzzed_frames_never_crash(blobs, tail):
    good = make_wire([tcp(1, CLIENT, SERVER, 40000, 22, SYN)]).packet(0)
    frames = blobs + [good[:82] + tail, good]
    fw = make_fw()
    out = fw.process(PacketBatch.from_packets(frames))
    assert out.status.shape == (len(frames),)
    assert out.counts.sum() == len(frames)
    ok_or_reset = np.isin(out.status, [PktStatus.OK, PktStatus.POLICY_RESET])
    assert set(out.source.tolist()) <= set(np.flatnonzero(ok_or_reset).tolist())
    assert out.status[-1] == PktStatus.POLICY_RESET


def test_kernel_argument_checks():
    n = 3
    data = np.zeros(10, np.uint8)
    off = np.zeros(n, np.int64)
    cl = np.zeros(n, np.uint32)
    lt = np.ones(n, np.uint16)
    io = np.zeros(n, np.int32)
    with pytest.raises(ValueError, match="caplen"):
        _r.build_returns(data, off, cl[:2], lt, io, np.zeros(0, np.int64), np.zeros(0, np.uint8),
                         np.zeros(0, np.uint8), np.zeros(0, np.int64), np.zeros(0, np.uint8))
    with pytest.raises(ValueError, match="rows"):
        _r.build_returns(data, off, cl, lt, io, np.array([5], np.int64), np.zeros(1, np.uint8),
                         np.zeros(0, np.uint8), np.zeros(1, np.int64), np.zeros(1, np.uint8))
    with pytest.raises(ValueError):
        _r.build_returns(data, off.astype(np.int32), cl, lt, io, np.zeros(0, np.int64), np.zeros(0, np.uint8),
                         np.zeros(0, np.uint8), np.zeros(0, np.int64), np.zeros(0, np.uint8))
    # an output slot outside the arena is reported, not written
    st_out = np.full(1, 255, np.uint8)
    bad = _r.build_returns(data, off, np.full(n, 10, np.uint32), lt, io, np.zeros(1, np.int64),
                           np.zeros(1, np.uint8), np.zeros(4, np.uint8), np.zeros(1, np.int64), st_out)
    assert bad == 1 and st_out[0] == PktStatus.TRUNCATED

    def args(n=2, cap=4):
        cols = {"slot": np.int64, "is_new": np.uint8, "rev": np.uint8, "proto": np.uint8, "tcp_flags": np.uint8,
                "ts_ns": np.int64, "nbytes": np.uint32, "src_ip": np.uint32, "dst_ip": np.uint32,
                "sport": np.uint16, "dport": np.uint16, "endpoint": np.uint64, "zone": np.uint8, "rule": np.int32,
                "action": np.uint8}
        a = {k: np.zeros(n, t) for k, t in cols.items()}
        a["sess"] = np.zeros((cap, _s.NF), np.int64)
        a.update(status=np.zeros(n, np.uint8), out_rule=np.zeros(n, np.int32), out_n=np.zeros(n, np.uint8),
                 out_kind1=np.zeros(n, np.uint8), out_kind2=np.zeros(n, np.uint8), hits=np.zeros(1, np.int64),
                 ended=np.zeros((n + 1, _s.NF), np.int64), ended_slot=np.zeros(n + 1, np.int64), close_timeout_ns=10,
                 deny_timeout_ns=10)
        return a

    a = args()
    assert _s.session_update(**a) == (0, 2)
    assert a["status"].tolist() == [0, 0] and a["hits"][0] == 1 and a["out_n"].tolist() == [1, 1]
    # a row that would start a session without a rule stops the pass there; it resumes from that row
    a = args(n=3)
    a["slot"][:] = [0, 1, 1]
    a["rule"][:] = [0, -1, -1]
    a["is_new"][:] = [1, 1, 0]
    assert _s.session_update(**a) == (0, 1)
    assert a["hits"][0] == 1 and a["sess"][1, _s.F_STATE] == _s.S_EMPTY
    a["rule"][1] = 0
    assert _s.session_update(**a, start=1) == (0, 3)
    assert a["hits"][0] == 2 and a["out_rule"].tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="start"):
        _s.session_update(**a, start=4)
    with pytest.raises(ValueError, match="ended"):
        _s.session_update(**a, start=0, n_ended=2)
    a = args()
    a["zone"] = np.zeros(3, np.uint8)
    with pytest.raises(ValueError, match="zone"):
        _s.session_update(**a)
    a = args()
    a["slot"] = np.array([0, 4], np.int64)
    with pytest.raises(ValueError, match="slot"):
        _s.session_update(**a)
    a = args()
    a["rule"] = np.zeros(2, np.int64)
    with pytest.raises(ValueError):
        _s.session_update(**a)
    a = args()
    for k in ("slot", "is_new", "rev", "proto", "ts_ns", "src_ip"):
        a[k].flags.writeable = False
    assert _s.session_update(**a) == (0, 2)


def test_full_table_and_eviction_are_counted_and_logged():
    fw = make_fw(session_capacity=4, other_timeout=10)
    first = [Pkt(0, EP_A, CLIENT, SERVER, 1000 + i, 53, 17) for i in range(4)]
    out = fw.process(make_wire([*first, Pkt(1, EP_A, CLIENT, SERVER, 2000, 53, 17)]))
    assert out.status.tolist() == [PktStatus.OK] * 4 + [PktStatus.FLOW_TABLE_FULL]
    assert out.rule[-1] == -1 and len(fw.table) == 4
    # 11 s later the four sessions are idle: new flows in the same batch evict them (oldest idle in the probe
    # sequence) or, failing that, are refused; the scan after the batch ages out the rest. Nothing is lost.
    late = [Pkt(11 * S, EP_A, CLIENT, SERVER, 3000 + i, 53, 17) for i in range(16)]
    out = fw.process(make_wire(late))
    stats = fw.table.stats()
    reasons = [END_REASONS[int(r)] for r in out.sessions["end_reason"]]
    assert reasons.count("evicted") == stats["evicted"]
    assert len(reasons) == 4 and sorted(out.sessions["client_port"].tolist()) == [1000, 1001, 1002, 1003]
    assert (out.status == PktStatus.OK).sum() + (out.status == PktStatus.FLOW_TABLE_FULL).sum() == 16
    assert (out.status == PktStatus.OK).sum() == stats["evicted"]
    assert fw.finish().shape[0] == stats["evicted"]


def _l4_record(rec) -> tuple:
    """A session record without the content-inspection fields (the oracle models sessions, not inspection)."""
    return tuple(int(rec[f]) for f in rec.dtype.names if f not in ("application", "inspect_ref"))


# --------------------------------------------------------------------------- flows that began before the capture
def _pickup_fw(**kw):
    from gwlb_fast.replay import FlowSides

    return make_fw(pickup=FlowSides([(0x0A010000, 16)]), **kw)


def test_pickup_classifies_a_reply_first_flow_in_its_real_direction():
    """A flow first seen as the server's ACK (1.2.3.4:443 -> 10.1.1.5:40000) is the client's: allow-web-out
    (source 10.1.1.0/24, port 443) matches only client to server; the session records 10.1.1.5 as its client."""
    pkts = [tcp(1 * S, SERVER, CLIENT, 443, 40000, ACK, paylen=100), tcp(2 * S, CLIENT, SERVER, 40000, 443, ACK),
            tcp(3 * S, SERVER, CLIENT, 443, 40000, ACK | FIN)]
    plain = make_fw().process(make_wire(pkts))
    assert plain.status.tolist() == [PktStatus.TCP_NOT_SYN] * 3
    fw = _pickup_fw(keep_log=True)
    out = fw.process(make_wire(pkts))
    assert out.status.tolist() == [PktStatus.OK] * 3
    assert out.rule.tolist() == [0, 0, 0]  # allow-web-out
    assert fw.picked_up.tolist() == [1, 1]
    rec = fw.describe_sessions(fw.finish())[0]
    assert (rec["client_ip"], rec["client_port"], rec["server_ip"], rec["server_port"]) == \
        ("10.1.1.5", 40000, "1.2.3.4", 443)
    assert (rec["packets_c2s"], rec["packets_s2c"]) == (1, 2)


def test_pickup_keeps_the_direction_of_a_flow_seen_from_its_client():
    pkts = [tcp(1 * S, CLIENT, SERVER, 40000, 443, ACK), tcp(2 * S, SERVER, CLIENT, 443, 40000, ACK)]
    fw = _pickup_fw(keep_log=True)
    assert fw.process(make_wire(pkts)).status.tolist() == [PktStatus.OK] * 2
    assert fw.picked_up.tolist() == [1, 0]
    rec = fw.describe_sessions(fw.finish())[0]
    assert (rec["client_ip"], rec["packets_c2s"], rec["packets_s2c"]) == ("10.1.1.5", 1, 1)


def test_tcp_reject_non_syn_false_accepts_a_non_syn_first_packet_as_sent():
    """VM-Series's setting alone: the first packet starts the session in its own direction (no flip), so the
    server's packet first is classified from the server (block-rest), the client's first from the client."""
    reply_first = [tcp(1 * S, SERVER, CLIENT, 443, 40000, ACK), tcp(2 * S, CLIENT, SERVER, 40000, 443, ACK)]
    client_first = [tcp(1 * S, CLIENT, SERVER, 40001, 443, ACK), tcp(2 * S, SERVER, CLIENT, 443, 40001, ACK)]
    for fw in (make_fw(tcp_reject_non_syn=False),
               make_fw(dict(POLICY, tcp_reject_non_syn=False))):
        assert fw.accept_non_syn and fw.pickup is None
        assert fw.process(make_wire(reply_first)).status.tolist() == [PktStatus.POLICY_DENY] * 2
        assert fw.process(make_wire(client_first)).status.tolist() == [PktStatus.OK] * 2
        assert fw.picked_up.tolist() == [2, 0]
    # the default (true, as VM-Series) drops them
    assert make_fw().process(make_wire(client_first)).status.tolist() == [PktStatus.TCP_NOT_SYN] * 2


def test_tcp_reject_non_syn_must_be_a_boolean():
    with pytest.raises(ConfigError, match="tcp_reject_non_syn"):
        Policy.from_yaml(dict(POLICY, tcp_reject_non_syn="no"))


def test_mark_ended_names_the_end_reason_of_live_sessions_only():
    pkts = [tcp(1 * S, CLIENT, SERVER, 40000, 443, SYN), tcp(2 * S, SERVER, CLIENT, 443, 40000, SYN | ACK)]
    fw = make_fw(keep_log=True)
    fw.process(make_wire(pkts))
    col = lambda *v: np.array(v)
    assert fw.mark_ended(col(SERVER), col(CLIENT), col(443), col(40000), col(6), col(EP_A), _s.END_FW_FAILED) == 1
    # unknown flow, then a session that already has a reason: nothing marked
    assert fw.mark_ended(col(SERVER), col(CLIENT), col(443), col(40001), col(6), col(EP_A), _s.END_MOVED) == 0
    assert fw.mark_ended(col(SERVER), col(CLIENT), col(443), col(40000), col(6), col(EP_A), _s.END_MOVED) == 0
    assert [r["end_reason"] for r in fw.describe_sessions(fw.finish())] == ["fw-failed"]


def test_session_update_checks_the_pickup_arguments():
    fw = make_fw()
    wire = make_wire([tcp(1 * S, CLIENT, SERVER, 40000, 443, ACK)])
    inner = geneve.decap(wire)
    inner.parse()
    n = 1
    args = {"slot": np.zeros(n, np.int64), "is_new": np.ones(n, np.uint8), "rev": np.zeros(n, np.uint8),
                "proto": inner.proto, "tcp_flags": inner.tcp_flags, "ts_ns": inner.ts_ns, "nbytes": inner.wirelen,
                "src_ip": inner.src_ip, "dst_ip": inner.dst_ip, "sport": inner.sport, "dport": inner.dport,
                "endpoint": np.full(n, EP_A, np.uint64), "zone": np.zeros(n, np.uint8), "rule": np.zeros(n, np.int32),
                "action": np.zeros(n, np.uint8), "sess": fw.sessions, "status": np.zeros(n, np.uint8),
                "out_rule": np.empty(n, np.int32), "out_n": np.empty(n, np.uint8), "out_kind1": np.empty(n, np.uint8),
                "out_kind2": np.empty(n, np.uint8), "hits": fw.hits, "ended": np.empty((n + 1, _s.NF), np.int64),
                "ended_slot": np.empty(n + 1, np.int64), "close_timeout_ns": S, "deny_timeout_ns": S}
    with pytest.raises(ValueError, match="flip"):
        _s.session_update(**args, flip=np.zeros(2, np.uint8))
    with pytest.raises(ValueError, match="picked_up"):
        _s.session_update(**args, picked_up=np.zeros(3, np.int64))
    picked = np.zeros(2, np.int64)
    assert _s.session_update(**args, flip=np.ones(n, np.uint8), accept_non_syn=True, picked_up=picked) == (0, 1)
    assert picked.tolist() == [1, 1] and args["status"].tolist() == [PktStatus.OK]
    assert fw.sessions[0, _s.F_CLIENT_IP] == SERVER  # flipped: the destination is the client


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_admit_kernel_matches_python(data):
    """``session.admit`` against plain Python: the zone of each packet's endpoint (unknown ones: the unknown zone,
    and UNKNOWN_ENDPOINT where the packet was still OK), the canonical key as ``canonical_5tuple`` orders it, and
    the number of rows OK afterwards; for no, one and several endpoint ids."""
    ids = sorted(set(data.draw(st.lists(st.sampled_from([0, 1, 7, 2**63, 2**64 - 1, EP_A, EP_B]), max_size=5))))
    zones = data.draw(st.lists(st.integers(0, 254), min_size=len(ids), max_size=len(ids)))
    n = data.draw(st.integers(0, 40))
    lst = lambda elt: data.draw(st.lists(elt, min_size=n, max_size=n))
    ep = np.array(lst(st.sampled_from([0, 1, 3, 7, 2**63, 2**64 - 1, EP_A, EP_B])), np.uint64)
    src = np.array(lst(st.sampled_from([0, 1, 5, CLIENT, SERVER, 2**32 - 1])), np.uint32)
    dst = np.array(lst(st.sampled_from([0, 1, 5, CLIENT, SERVER, 2**32 - 1])), np.uint32)
    sp = np.array(lst(st.sampled_from([0, 1, 80, 40000, 65535])), np.uint16)
    dp = np.array(lst(st.sampled_from([0, 1, 80, 40000, 65535])), np.uint16)
    status = np.array(lst(st.sampled_from([PktStatus.OK, PktStatus.OK, PktStatus.TRUNCATED,
                                           PktStatus.GENEVE_TRUNCATED])), np.uint8)
    want_status, want = status.tolist(), []
    for i in range(n):
        e = int(ep[i])
        z = zones[ids.index(e)] if e in ids else 255
        if e not in ids and want_status[i] == PktStatus.OK:
            want_status[i] = PktStatus.UNKNOWN_ENDPOINT
        s_, d_ = (int(src[i]), int(sp[i])), (int(dst[i]), int(dp[i]))
        a, b, r = (s_, d_, 0) if s_ <= d_ else (d_, s_, 1)
        want.append((z, a[0], b[0], a[1], b[1], r))
    zone, rev = np.full(n, 99, np.uint8), np.full(n, 9, np.uint8)
    a_ip, b_ip = np.zeros(n, np.uint32), np.zeros(n, np.uint32)
    a_port, b_port = np.zeros(n, np.uint16), np.zeros(n, np.uint16)
    n_ok = _s.admit(ep, np.array(ids, np.uint64), np.array(zones, np.uint8), 255, src, dst, sp, dp, status, zone,
                    a_ip, b_ip, a_port, b_port, rev)
    assert status.tolist() == want_status
    assert n_ok == sum(x == PktStatus.OK for x in want_status)
    assert list(zip(*(c.tolist() for c in (zone, a_ip, b_ip, a_port, b_port, rev)))) == want
    with pytest.raises(ValueError, match="ep_zone"):
        _s.admit(ep, np.array(ids, np.uint64), np.zeros(len(ids) + 1, np.uint8), 255, src, dst, sp, dp, status,
                 zone, a_ip, b_ip, a_port, b_port, rev)
    with pytest.raises(ValueError, match="rev"):
        _s.admit(ep, np.array(ids, np.uint64), np.array(zones, np.uint8), 255, src, dst, sp, dp, status, zone,
                 a_ip, b_ip, a_port, b_port, np.zeros(n + 1, np.uint8))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_settle_kernel_matches_python(data):
    """``session.settle`` against plain Python: the rows' slots by their session's state (closed, denied or
    resetting, open only when a session reopened, no session), in row order; the rows per status (codes beyond the
    counters not counted) and the rows answered with a reset."""
    rows = data.draw(st.integers(1, 30))
    sess = np.zeros((rows, _s.NF), np.int64)
    sess[:, _s.F_STATE] = data.draw(st.lists(st.integers(0, 6), min_size=rows, max_size=rows))
    n = data.draw(st.integers(0, 50))
    lst = lambda elt: data.draw(st.lists(elt, min_size=n, max_size=n))
    slot = np.array(lst(st.integers(-1, rows - 1)), np.int64)
    status = np.array(lst(st.integers(0, 60)), np.uint8)
    out_n = np.array(lst(st.integers(0, 2)), np.uint8)
    k1 = np.array(lst(st.integers(0, 2)), np.uint8)
    k2 = np.array(lst(st.integers(0, 2)), np.uint8)
    reopened = data.draw(st.booleans())
    nc = data.draw(st.sampled_from([1, 50, 64]))
    counts = np.array(data.draw(st.lists(st.integers(0, 5), min_size=nc, max_size=nc)), np.int64)
    want_counts, want_reset = counts.tolist(), 0
    want = {"closed": [], "denied": [], "opened": [], "empty": []}
    for i in range(n):
        if status[i] < nc:
            want_counts[status[i]] += 1
        want_reset += bool((out_n[i] >= 1 and k1[i] != KIND_ECHO) or (out_n[i] >= 2 and k2[i] != KIND_ECHO))
        s = int(slot[i])
        if s < 0:
            continue
        state = int(sess[s, _s.F_STATE])
        if state in (_s.S_FIN_CLOSED, _s.S_RST_CLOSED):
            want["closed"].append(s)
        elif state in (_s.S_DENIED, _s.S_RESETTING):
            want["denied"].append(s)
        elif state == _s.S_OPEN and reopened:
            want["opened"].append(s)
        elif state == _s.S_EMPTY:
            want["empty"].append(s)
    *got, got_reset = _s.settle(slot, sess, status, out_n, k1, k2, reopened, counts)
    assert [g.tolist() for g in got] == [want[k] for k in ("closed", "denied", "opened", "empty")]
    assert got_reset == want_reset and counts.tolist() == want_counts
    with pytest.raises(ValueError, match="outside"):
        _s.settle(np.array([0, rows], np.int64), sess, np.zeros(2, np.uint8), np.zeros(2, np.uint8),
                  np.zeros(2, np.uint8), np.zeros(2, np.uint8), False, counts)
    with pytest.raises(ValueError, match="out_n"):
        _s.settle(slot, sess, status, np.zeros(n + 1, np.uint8), k1, k2, reopened, counts)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_session_add_matches_python(data):
    """``session.session_add`` against plain Python: a row counts 1 packet and its bytes in its direction where the
    slot still holds a session that started at the given time; nothing else changes."""
    rows = data.draw(st.integers(1, 20))
    sess = np.zeros((rows, _s.NF), np.int64)
    for c in (_s.F_STATE, _s.F_CLIENT_REV, _s.F_START):
        sess[:, c] = data.draw(st.lists(st.integers(0, 1 if c == _s.F_CLIENT_REV else 3), min_size=rows,
                                        max_size=rows))
    for c in (_s.F_PKTS_C2S, _s.F_PKTS_S2C, _s.F_BYTES_C2S, _s.F_BYTES_S2C):
        sess[:, c] = data.draw(st.lists(st.integers(0, 10**6), min_size=rows, max_size=rows))
    n = data.draw(st.integers(0, 40))
    slot = np.array(data.draw(st.lists(st.integers(-1, rows + 2), min_size=n, max_size=n)), np.int64)
    start = np.array(data.draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)), np.int64)
    rev = np.array(data.draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)), np.uint8)
    nbytes = np.array(data.draw(st.lists(st.integers(0, 2**32 - 1), min_size=n, max_size=n)), np.uint32)
    want = sess.tolist()
    done = 0
    for s, t, r, b in zip(slot.tolist(), start.tolist(), rev.tolist(), nbytes.tolist()):
        if 0 <= s < rows and want[s][_s.F_STATE] != _s.S_EMPTY and want[s][_s.F_START] == t:
            c2s = r == want[s][_s.F_CLIENT_REV]
            want[s][_s.F_PKTS_C2S if c2s else _s.F_PKTS_S2C] += 1
            want[s][_s.F_BYTES_C2S if c2s else _s.F_BYTES_S2C] += b
            done += 1
    assert _s.session_add(slot, start, rev, nbytes, sess) == done
    assert sess.tolist() == want
    with pytest.raises(ValueError, match="rev"):
        _s.session_add(slot, start, np.zeros(n + 1, np.uint8), nbytes, sess)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_timed_session_add_matches_python(data):
    """``session.session_add`` with the packets' times against plain Python: in row order, a counted row (the slot
    still holds a session that started at the given time) also moves the session's last packet time (F_LAST) to
    the row's time if later, never back; rows not counted change nothing."""
    rows = data.draw(st.integers(1, 20))
    sess = np.zeros((rows, _s.NF), np.int64)
    for c in (_s.F_STATE, _s.F_CLIENT_REV, _s.F_START):
        sess[:, c] = data.draw(st.lists(st.integers(0, 1 if c == _s.F_CLIENT_REV else 3), min_size=rows,
                                        max_size=rows))
    sess[:, _s.F_LAST] = data.draw(st.lists(st.integers(0, 100), min_size=rows, max_size=rows))
    n = data.draw(st.integers(0, 40))
    slot = np.array(data.draw(st.lists(st.integers(-1, rows + 2), min_size=n, max_size=n)), np.int64)
    start = np.array(data.draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)), np.int64)
    rev = np.array(data.draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)), np.uint8)
    nbytes = np.array(data.draw(st.lists(st.integers(0, 2**32 - 1), min_size=n, max_size=n)), np.uint32)
    when = np.array(data.draw(st.lists(st.integers(0, 100), min_size=n, max_size=n)), np.int64)
    want = sess.tolist()
    done = 0
    for s, t, r, b, w in zip(slot.tolist(), start.tolist(), rev.tolist(), nbytes.tolist(), when.tolist()):
        if 0 <= s < rows and want[s][_s.F_STATE] != _s.S_EMPTY and want[s][_s.F_START] == t:
            c2s = r == want[s][_s.F_CLIENT_REV]
            want[s][_s.F_PKTS_C2S if c2s else _s.F_PKTS_S2C] += 1
            want[s][_s.F_BYTES_C2S if c2s else _s.F_BYTES_S2C] += b
            want[s][_s.F_LAST] = max(want[s][_s.F_LAST], w)
            done += 1
    assert _s.session_add(slot, start, rev, nbytes, sess, when) == done
    assert sess.tolist() == want
    with pytest.raises(ValueError, match="ts_ns"):
        _s.session_add(slot, start, rev, nbytes, sess, np.zeros(n + 1, np.int64))
