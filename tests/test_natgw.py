import socket
import struct

import dpkt
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether

from gwlb_fast._kernels.nat import nat_alloc_ports, nat_classify_in, nat_classify_out, nat_release, nat_rewrite
from gwlb_fast.batch import PacketBatch
from gwlb_fast.config import example_topology_text, ip_to_int, load_topology
from gwlb_fast.stages.natgw import NAT_DNAT, NAT_DNAT_REPLY, NAT_SNAT, NAT_SNAT_REPLY, NatGateway
from gwlb_fast.status import PktStatus as S

from .oracles.nat import NatOracle, checksum
from .oracles.parse import parse

PUB = "203.0.113.10"
SEC = 1_000_000_000


def cfg(**kw):
    t = load_topology(example_topology_text())
    c = t.nat_gateways["nat-a"]
    for k, v in kw.items():
        setattr(c, k, v)
    return c


def frame(proto, src, dst, sport=0, dport=0, payload=b"", icmp_type=8, udp_csum=True, ident=None):
    if proto == 6:
        l4 = dpkt.tcp.TCP(sport=sport, dport=dport, seq=1, flags=dpkt.tcp.TH_SYN, data=payload)
    elif proto == 17:
        l4 = dpkt.udp.UDP(sport=sport, dport=dport, ulen=8 + len(payload), data=payload)
    else:
        l4 = dpkt.icmp.ICMP(type=icmp_type, data=dpkt.icmp.ICMP.Echo(id=sport if ident is None else ident, seq=7,
                                                                     data=payload))
    ip = dpkt.ip.IP(src=socket.inet_aton(src), dst=socket.inet_aton(dst), p=proto, ttl=64, data=l4)
    raw = bytes(ip)
    if proto == 17 and not udp_csum:
        raw = raw[:26] + b"\0\0" + raw[28:]
    return bytes(6) + b"\x02" + bytes(5) + b"\x08\x00" + raw


def batch_of(pkts, ts=None):
    b = PacketBatch.from_packets(pkts, ts_ns=ts)
    return b.parse()


def scapy_checksums_ok(pkt: bytes) -> bool:
    """Delete every checksum field, let scapy rebuild them, and compare with the packet as it is."""
    e = Ether(pkt)
    ip = e[IP]
    del ip.chksum
    if TCP in e:
        del e[TCP].chksum
    elif UDP in e:
        if e[UDP].chksum == 0:
            return bytes(Ether(bytes(e))) == pkt
        del e[UDP].chksum
    elif ICMP in e:
        del e[ICMP].chksum
    return bytes(e.__class__(bytes(e))) == pkt


# ------------------------------------------------------------------------------------------ hypothesis vs oracle
pkt_spec = st.tuples(
    st.sampled_from([6, 17, 1, 1]),
    st.one_of(st.integers(ip_to_int("10.1.1.0"), ip_to_int("10.1.1.255")), st.integers(0, 2**32 - 1)),
    st.integers(0, 2**32 - 1),
    st.integers(0, 65535),
    st.integers(0, 65535),
    st.binary(max_size=41),
    st.booleans(),
)


def build(spec):
    proto, src, dst, sport, dport, payload, flag = spec
    return frame(proto, socket.inet_ntoa(struct.pack("!I", src)), socket.inet_ntoa(struct.pack("!I", dst)), sport,
                 dport, payload, icmp_type=8 if flag else 3, udp_csum=flag or proto != 17)


@settings(max_examples=60)
@given(st.lists(pkt_spec, max_size=30), st.sampled_from([(1024, 65535), (2000, 2003)]))
def test_outbound_agrees_with_oracle(specs, ports):
    c = cfg(port_lo=ports[0], port_hi=ports[1])
    pkts = [build(s) for s in specs]
    # the same private source twice: must keep its port
    pkts += pkts[:3]
    nat, ora = NatGateway(c), NatOracle(c)
    b = batch_of(pkts)
    nat.outbound(b)
    for i, pkt in enumerate(pkts):
        want_st, want_bytes, kind = ora.outbound(pkt)
        assert b.status[i] == want_st, (i, S(int(b.status[i])), want_st)
        assert b.packet(i) == want_bytes
        assert nat.last.kind[i] == kind
        p = parse(want_bytes)
        assert (b.src_ip[i], b.dst_ip[i], b.sport[i], b.dport[i]) == (p["src_ip"], p["dst_ip"], p["sport"],
                                                                      p["dport"])
        if kind:
            assert scapy_checksums_ok(b.packet(i))
            orig = parse(pkt)
            assert (nat.last.priv_ip[i], nat.last.priv_port[i]) == (orig["src_ip"], orig["sport"])
            assert (nat.last.pub_ip[i], nat.last.pub_port[i]) == (ip_to_int(PUB), p["sport"])


@settings(max_examples=40)
@given(st.lists(pkt_spec.filter(lambda s: s[0] != 1 or s[6]), min_size=1, max_size=20), st.randoms())
def test_round_trip_and_inbound_oracle(specs, rnd):
    c = cfg()
    nat, ora = NatGateway(c), NatOracle(c)
    specs = [(s[0], ip_to_int("10.1.1.0") + s[1] % 256, *s[2:]) for s in specs]
    pkts = [build(s) for s in specs]
    out = batch_of(pkts)
    nat.outbound(out)
    for p in pkts:
        ora.outbound(p)
    # replies: swap addresses and ports of every translated packet (ICMP: echo reply, same identifier)
    replies = []
    for i, s in enumerate(specs):
        if out.status[i] != S.OK:
            continue
        t = parse(out.packet(i))
        proto = s[0]
        replies.append((i, frame(proto, socket.inet_ntoa(struct.pack("!I", t["dst_ip"])), PUB, t["dport"],
                                 t["sport"], b"re", icmp_type=0, udp_csum=s[6] or proto != 17)))
    rnd.shuffle(replies)
    back = batch_of([r for _, r in replies])
    nat.inbound(back)
    for j, (i, rep) in enumerate(replies):
        st_, want, kind = ora.inbound(rep)
        assert back.status[j] == S.OK == st_
        assert back.packet(j) == want and kind == nat.last.kind[j] == NAT_SNAT_REPLY
        orig = parse(pkts[i])
        assert (back.dst_ip[j], back.dport[j]) == (orig["src_ip"], orig["sport"])
        assert scapy_checksums_ok(back.packet(j))


def test_dnat_and_reply():
    nat = NatGateway(cfg())
    b = batch_of([frame(6, "198.51.100.7", PUB, 40000, 443, b"hello"),
                  frame(17, "198.51.100.7", PUB, 40000, 443),          # no UDP rule
                  frame(6, "198.51.100.7", PUB, 40000, 444),           # no rule, no mapping
                  frame(6, "198.51.100.7", "203.0.113.11", 40000, 443)])  # not our address
    nat.inbound(b)
    assert b.status.tolist() == [S.OK, S.NAT_NO_MAPPING, S.NAT_NO_MAPPING, S.NAT_NO_MAPPING]
    assert nat.last.kind.tolist() == [NAT_DNAT, 0, 0, 0]
    e = Ether(b.packet(0))
    assert (e[IP].dst, e[TCP].dport, e[IP].src, e[TCP].sport) == ("10.1.1.20", 8443, "198.51.100.7", 40000)
    assert scapy_checksums_ok(b.packet(0))
    assert (nat.last.priv_ip[0], nat.last.priv_port[0], nat.last.pub_port[0]) == (ip_to_int("10.1.1.20"), 8443, 443)
    r = batch_of([frame(6, "10.1.1.20", "198.51.100.7", 8443, 40000, b"world")])
    nat.outbound(r)
    e = Ether(r.packet(0))
    assert (e[IP].src, e[TCP].sport) == (PUB, 443) and nat.last.kind[0] == NAT_DNAT_REPLY
    assert scapy_checksums_ok(r.packet(0))
    assert nat.counts[S.NAT_NO_MAPPING] == 3 and nat.stats["dnat_packets"] == 1
    assert nat.stats["dnat_reply_packets"] == 1
    # the DNAT port is never handed out to SNAT
    c = cfg(port_lo=442, port_hi=444)
    nat = NatGateway(c)
    b = batch_of([frame(6, "10.1.1.5", "8.8.8.8", 1000 + k, 80) for k in range(3)])
    nat.outbound(b)
    assert b.sport.tolist()[:2] == [442, 444] and b.status[2] == S.NAT_PORT_EXHAUSTED


def test_icmp_echo_identifier():
    nat = NatGateway(cfg())
    b = batch_of([frame(1, "10.1.1.9", "8.8.8.8", ident=777, payload=b"ping")])
    nat.outbound(b)
    e = Ether(b.packet(0))
    assert e[IP].src == PUB and e[ICMP].id == 1024 and b.sport[0] == b.dport[0] == 1024
    assert scapy_checksums_ok(b.packet(0))
    r = batch_of([frame(1, "8.8.8.8", PUB, ident=1024, icmp_type=0, payload=b"ping")])
    nat.inbound(r)
    e = Ether(r.packet(0))
    assert e[IP].dst == "10.1.1.9" and e[ICMP].id == 777 and r.sport[0] == r.dport[0] == 777
    assert scapy_checksums_ok(r.packet(0))
    # ICMP errors are not translated
    b = batch_of([frame(1, "10.1.1.9", "8.8.8.8", icmp_type=3)])
    nat.outbound(b)
    r = batch_of([frame(1, "8.8.8.8", PUB, icmp_type=11)])
    nat.inbound(r)
    assert b.status[0] == r.status[0] == S.NOT_FORWARDED and nat.counts[S.NOT_FORWARDED] == 2


def test_udp_zero_checksum_stays_zero():
    nat = NatGateway(cfg())
    b = batch_of([frame(17, "10.1.1.3", "8.8.4.4", 5353, 53, b"q", udp_csum=False)])
    nat.outbound(b)
    raw = b.packet(0)
    assert raw[40:42] == b"\0\0" and Ether(raw)[UDP].sport == 1024
    assert checksum(raw[14:34]) == 0


def test_exhaustion_and_expiry_free_ports():
    c = cfg(port_lo=5000, port_hi=5003, idle_timeout_other=120.0)
    nat = NatGateway(c)
    pkts = [frame(17, f"10.1.1.{10 + k}", "8.8.8.8", 3333, 53) for k in range(6)]
    b = batch_of(pkts, ts=np.full(6, 1 * SEC, np.int64))
    nat.outbound(b)
    assert b.status.tolist() == [S.OK] * 4 + [S.NAT_PORT_EXHAUSTED] * 2
    assert b.sport.tolist()[:4] == [5000, 5001, 5002, 5003]
    assert nat.counts[S.NAT_PORT_EXHAUSTED] == 2 and nat.ports_in_use["udp"] == 4
    assert b.packet(4) == pkts[4]           # a dropped packet is left as it was
    # TCP has its own pool
    t = batch_of([frame(6, "10.1.1.50", "8.8.8.8", 3333, 80)], ts=np.array([2 * SEC]))
    nat.outbound(t)
    assert t.status[0] == S.OK and t.sport[0] == 5000
    # 60 s later: one mapping kept alive, still no room
    keep = batch_of([pkts[0]], ts=np.array([61 * SEC]))
    nat.outbound(keep)
    assert keep.sport[0] == 5000
    late = batch_of([pkts[4]], ts=np.array([100 * SEC]))
    nat.outbound(late)
    assert late.status[0] == S.NAT_PORT_EXHAUSTED
    # after the idle timeout the three idle mappings are freed; the kept-alive one stays
    later = batch_of([pkts[4], pkts[5], pkts[0]], ts=np.full(3, 125 * SEC, np.int64))
    nat.outbound(later)
    assert later.status.tolist() == [S.OK] * 3
    assert later.sport[2] == 5000 and set(later.sport[:2].tolist()) <= {5001, 5002, 5003}
    assert nat.stats["mappings_expired"] == 3 and nat.ports_in_use["udp"] == 3
    # a reply to an expired mapping's port finds nothing (port now free)
    free_port = ({5001, 5002, 5003} - set(later.sport[:2].tolist())).pop()
    r = batch_of([frame(17, "8.8.8.8", PUB, 53, free_port)], ts=np.array([126 * SEC]))
    nat.inbound(r)
    assert r.status[0] == S.NAT_NO_MAPPING


def test_table_full():
    c = cfg(capacity=2)
    nat, ora = NatGateway(c), NatOracle(c)
    pkts = [frame(6, f"10.1.1.{k}", "8.8.8.8", 1000, 80) for k in range(1, 5)]
    b = batch_of(pkts)
    nat.outbound(b)
    assert b.status.tolist() == [ora.outbound(p)[0] for p in pkts] == [S.OK, S.OK, S.NAT_TABLE_FULL,
                                                                       S.NAT_TABLE_FULL]
    assert nat.counts[S.NAT_TABLE_FULL] == 2


def test_no_mapping_sources_and_bad_packets_untouched():
    nat = NatGateway(cfg())
    pkts = [frame(6, "10.1.2.5", "8.8.8.8", 1, 2), frame(6, "10.1.1.5", "8.8.8.8", 1, 2)[:30],
            bytes(6) + b"\x02" + bytes(5) + b"\x86\xdd" + bytes(40)]
    b = batch_of(pkts)
    nat.outbound(b)
    assert b.status.tolist() == [S.NAT_NO_MAPPING, S.TRUNCATED, S.NOT_IPV4]
    assert b.packets() == pkts and nat.last.kind.tolist() == [0, 0, 0]
    assert nat.counts[S.NAT_NO_MAPPING] == 1 and nat.counts[S.TRUNCATED] == 0   # parse drops are not NAT's


def test_empty_single_copy_and_readonly():
    nat = NatGateway(cfg())
    e = PacketBatch.empty()
    assert len(nat.outbound(e)) == 0 and len(nat.inbound(e)) == 0
    pkt = frame(6, "10.1.1.5", "8.8.8.8", 1, 2)
    b = batch_of([pkt])
    b.data.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        nat.outbound(b)
    out = nat.outbound(b, copy=True)
    assert b.packet(0) == pkt and out.packet(0) != pkt and out.sport[0] == 1024 and b.sport[0] == 1
    # a status column without the parse columns is a caller error, not a silent re-parse
    half = PacketBatch.from_packets([pkt])
    half.status = np.zeros(1, np.uint8)
    with pytest.raises(ValueError, match="no src_ip column"):
        nat.outbound(half)
    # unparsed batch: parsed on the way in
    u = PacketBatch.from_packets([pkt])
    nat.outbound(u)
    assert u.sport[0] == 1024 and u.status[0] == S.OK


@settings(max_examples=60)
@given(st.lists(st.binary(max_size=80), max_size=10), st.booleans())
def test_raw_fuzz(raws, inbound):
    pkts = [bytes(6) + b"\x02" + bytes(5) + b"\x08\x00" + r for r in raws]
    nat = NatGateway(cfg())
    b = batch_of(pkts)
    before = b.status.copy()
    (nat.inbound if inbound else nat.outbound)(b)
    for i, pkt in enumerate(pkts):
        assert b.status[i] in set(S)
        if b.status[i] != S.OK or before[i] != S.OK:
            assert b.packet(i) == pkt
        if nat.last.kind[i]:
            assert b.packet(i) != pkt or nat.last.kind[i] in (NAT_SNAT, NAT_SNAT_REPLY)


def test_kernel_argument_errors():
    n = 3
    st_ = np.zeros(n, np.uint8)
    u8, u16, u32 = np.zeros(n, np.uint8), np.zeros(n, np.uint16), np.zeros(n, np.uint32)
    with pytest.raises(ValueError, match="sport"):
        nat_classify_out(st_, u8, u8, u32, np.zeros(2, np.uint16), np.zeros(0, np.uint32), np.zeros(0, np.uint32),
                         np.zeros(0, np.uint8), np.zeros(0, np.uint32), np.zeros(0, np.uint16), u8.copy(),
                         np.zeros(n, np.int32))
    with pytest.raises(ValueError, match="owner"):
        nat_classify_in(st_, u8, u8, u32, u16, 0, np.zeros(5, np.int32), np.zeros(3 * 65536, np.int32), u8.copy(),
                        np.zeros(n, np.int64))
    with pytest.raises(ValueError):
        nat_classify_in(st_, u8, u8, u32.astype(np.int64), u16, 0, np.zeros(3 * 65536, np.int32),
                        np.zeros(3 * 65536, np.int32), u8.copy(), np.zeros(n, np.int64))
    with pytest.raises(ValueError, match="side"):
        nat_rewrite(np.zeros(10, np.uint8), np.zeros(n, np.int64), u32, np.zeros(n, np.int32), np.zeros(n, np.int32),
                    u8, 2, u32, np.zeros(n, np.int32), st_, u32.copy(), u16.copy(), u16.copy(), u8, u8.copy(),
                    u32.copy(), u16.copy(), u32.copy(), u16.copy())
    with pytest.raises(ValueError, match="rec_pub_port"):
        nat_rewrite(np.zeros(10, np.uint8), np.zeros(n, np.int64), u32, np.zeros(n, np.int32), np.zeros(n, np.int32),
                    u8, 0, u32, np.zeros(n, np.int32), st_, u32.copy(), u16.copy(), u16.copy(), u8, u8.copy(),
                    u32.copy(), u16.copy(), u32.copy(), np.zeros(1, np.uint16))
    with pytest.raises(ValueError, match="head"):
        nat_alloc_ports(np.zeros(1, np.int64), np.zeros(1, np.uint8), np.zeros(1, np.uint8), np.zeros(4, np.int32),
                        np.zeros(6, np.uint16), np.zeros(2, np.int64), np.zeros(3, np.int64),
                        np.zeros(3 * 65536, np.int32), np.zeros(1, np.int32))
    with pytest.raises(ValueError, match="proto"):
        nat_release(np.zeros(2, np.int64), np.zeros(1, np.uint8), np.zeros(4, np.int32), np.zeros(6, np.uint16),
                    np.zeros(3, np.int64), np.zeros(3, np.int64), np.zeros(3 * 65536, np.int32))


def test_summary_and_mappings():
    nat = NatGateway(cfg())
    b = batch_of([frame(6, "10.1.1.5", "8.8.8.8", 1111, 80, b"x"), frame(6, "10.1.1.5", "8.8.8.8", 1111, 80)],
                 ts=np.array([SEC, 2 * SEC]))
    nat.outbound(b)
    m = nat.mappings()
    assert m["priv_ip"].tolist() == [ip_to_int("10.1.1.5")] and m["priv_port"].tolist() == [1111]
    assert m["pub_port"].tolist() == [1024] and m["packets"].tolist() == [2]
    s = nat.summary()
    assert s["snat_packets"] == 2 and s["mappings_created"] == 1 and s["ports_in_use"]["tcp"] == 1
