"""Geneve decoder, encoder and echo: oracle, scapy, tshark and tcpdump agreement, round trips, fuzzing."""
from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import dpkt
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gwlb_fast import geneve as gv
from gwlb_fast._kernels import geneve as kg
from gwlb_fast.batch import LINKTYPE_ETHERNET, LINKTYPE_IPV4, PacketBatch
from gwlb_fast.status import PktStatus as S
from tests.oracles import geneve as oracle
from tests.shared_data import data_path

CAPTURES = data_path("captures", "tcpdump")
COLS = ("vni", "geneve_flags", "opt_len", "endpoint_id", "attachment_id", "flow_cookie", "inner_off")
ORACLE_KEYS = {"vni": "vni", "geneve_flags": "flags", "opt_len": "opt_len", "endpoint_id": "endpoint_id",
                   "attachment_id": "attachment_id", "flow_cookie": "flow_cookie", "inner_off": "inner_off"}


# ------------------------------------------------------------------------------------------------ packet builders
def ip_packet(src=0x0A010105, dst=0x08080808, proto=6, sport=1234, dport=443, payload=b"", frag=0) -> bytes:
    if proto == 6:
        l4 = dpkt.tcp.TCP(sport=sport, dport=dport, flags=dpkt.tcp.TH_SYN, data=payload)
    elif proto == 17:
        l4 = dpkt.udp.UDP(sport=sport, dport=dport, data=payload)
    elif proto == 1:
        l4 = dpkt.icmp.ICMP(type=8, data=dpkt.icmp.ICMP.Echo(id=sport, seq=dport, data=payload))
    else:
        l4 = payload
    ip = bytearray(bytes(dpkt.ip.IP(src=src.to_bytes(4, "big"), dst=dst.to_bytes(4, "big"), p=proto, ttl=63,
                                    id=sport, data=l4)))
    if frag:
        ip[6:8] = struct.pack("!H", frag)
        ip[10:12] = b"\0\0"
        ip[10:12] = struct.pack("!H", oracle.ip_checksum(bytes(ip[:20])))
    return bytes(ip)


inner_packets = st.builds(
    ip_packet,
    src=st.integers(0, 2**32 - 1), dst=st.integers(0, 2**32 - 1), proto=st.sampled_from([6, 17, 1, 47]),
    sport=st.integers(0, 65535), dport=st.integers(0, 65535), payload=st.binary(max_size=300),
    frag=st.sampled_from([0, 0, 0, 0x2000, 0x0010]),
)


def geneve_frame(inner: bytes, options: bytes = b"", vni=0, ver=0, flags=0, proto=0x0800, vlan=False,
                 dport=6081) -> bytes:
    """An Ethernet/IPv4/UDP/Geneve frame built by hand (any version, flags or option bytes)."""
    assert len(options) % 4 == 0
    gen = bytes([(ver << 6) | (len(options) // 4), flags]) + struct.pack("!HI", proto, vni << 8) + options
    udp = struct.pack("!HHHH", 5555, dport, 8 + len(gen) + len(inner), 0)
    ip = bytes(dpkt.ip.IP(src=b"\x14\x00\x00\x01", dst=b"\x14\x00\x00\x02", p=17, data=udp + gen + inner))
    l2 = b"\x02" * 6 + b"\x04" * 6 + (b"\x81\x00\x00\x07" if vlan else b"") + b"\x08\x00"
    return l2 + ip


def tlv(cls: int, typ: int, data: bytes) -> bytes:
    return struct.pack("!HBB", cls, typ, len(data) // 4) + data


def batch_of(packets, linktype=LINKTYPE_ETHERNET) -> PacketBatch:
    return PacketBatch.from_packets(packets, linktype=linktype)


def decode_rows(packets, linktype=LINKTYPE_ETHERNET, option_class=0x0108):
    b = gv.parse_geneve(batch_of(packets, linktype), option_class=option_class)
    return b


def assert_matches_oracle(batch: PacketBatch, option_class=0x0108):
    for i, pkt in enumerate(batch.packets()):
        want = oracle.decode(pkt, int(batch.linktype[i]), option_class)
        assert batch.status[i] == want["status"], (i, S(int(batch.status[i])), want["status"], pkt.hex())
        for col, key in ORACLE_KEYS.items():
            assert int(getattr(batch, col)[i]) == want[key], (i, col, pkt.hex())


# ------------------------------------------------------------------------------------------------ encoder
@given(st.lists(inner_packets, min_size=1, max_size=8), st.integers(0, 2**24 - 1), st.integers(0, 2**64 - 1),
       st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1), st.integers(0, 0xFFFF))
@settings(max_examples=60)
def test_encap_matches_oracle(inners, vni, ep, att, cookie, cls):
    b = batch_of(inners, LINKTYPE_IPV4)
    ports = gv.flow_ports(b)
    wire = gv.encap(b, src="10.0.0.10", dst="10.0.1.11", vni=vni, endpoint_id=ep, attachment_id=att, cookie=cookie,
                    option_class=cls)
    assert len(wire) == len(inners)
    for i, inner in enumerate(inners):
        want = oracle.encode(inner, 0x0A00000A, 0x0A00010B, int(ports[i]), vni, ep, att, cookie, cls)
        assert wire.packet(i) == want
        assert 49152 <= ports[i] <= 65535
    assert (wire.vni == vni).all() and (wire.flow_cookie == cookie).all()


def test_encap_per_packet_arrays_and_scapy_decodes():
    from scapy.contrib.geneve import GENEVE
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    inners = [ip_packet(sport=1000 + i, payload=bytes(i)) for i in range(5)]
    b = batch_of(inners, LINKTYPE_IPV4)
    dst = np.array([0x0A00010B + (i % 3) for i in range(5)], np.uint32)
    ep = np.arange(5, dtype=np.uint64) + 2**63
    wire = gv.encap(b, src="10.0.0.10", dst=dst, endpoint_id=ep, attachment_id=99, cookie=np.arange(5) + 7,
                    vni=np.arange(5, dtype=np.uint32), sport=np.arange(5, dtype=np.uint16) + 50000)
    for i in range(5):
        e = Ether(wire.packet(i))
        assert e[IP].dst == f"10.0.1.{11 + i % 3}" and e[IP].src == "10.0.0.10"
        assert e[IP].flags == "DF" and e[IP].ttl == 64
        assert e[UDP].dport == 6081 and e[UDP].sport == 50000 + i and e[UDP].chksum == 0
        g = e[GENEVE]
        assert g.version == 0 and g.vni == i and g.proto == 0x0800 and g.optionlen == 8
        opts = [(o.classid, o.type, o.length, bytes(o.data)) for o in g.options]
        assert opts == [(0x0108, 1, 2, int(ep[i]).to_bytes(8, "big")), (0x0108, 2, 2, (99).to_bytes(8, "big")),
                        (0x0108, 3, 1, (7 + i).to_bytes(4, "big"))]
        assert bytes(g.payload) == inners[i]
    # IPv4 header checksum verifies (one's-complement sum of the header is 0xffff)
    for i in range(5):
        assert oracle.ip_checksum(wire.packet(i)[14:34]) == 0


def test_encap_headers_share_the_payload():
    mix = synthetic_mix(40, seed=9)
    frames = [b"\x01" * 12 + b"\x08\x00" + p for p in mix] + [b"\x01" * 12 + b"\x86\xdd" + bytes(40)]
    b = batch_of(frames)
    kw = {"dst": np.arange(41, dtype=np.uint32) + 7, "endpoint_id": 5, "cookie": np.arange(41), "vni": 3}
    wire = gv.encap(b, **kw)
    st_out = np.empty(41, np.uint8)
    headers, rows, start, ln = gv.encap_headers(b, status_out=st_out, **kw)
    assert headers.shape == (40, 82) and list(rows) == list(range(40)) and st_out[40] == S.NOT_IPV4
    for j in range(40):
        assert headers[j].tobytes() + b.data[start[j] : start[j] + ln[j]].tobytes() == wire.packet(j)


def test_encap_into_a_reused_arena():
    mix = synthetic_mix(30, seed=4)
    b = batch_of([b"\x01" * 12 + b"\x08\x00" + p for p in mix])
    kw = {"dst": np.arange(30, dtype=np.uint32) + 7, "endpoint_id": 5, "cookie": np.arange(30), "vni": 3}
    want = gv.encap(b, **kw)
    big = np.full(want.data.shape[0] + 100, 0xEE, np.uint8)
    got = gv.encap(b, arena=big, **kw)
    assert np.shares_memory(got.data, big) and got.data.shape == want.data.shape
    assert got.packets() == want.packets() and np.array_equal(got.off, want.off)
    small = np.zeros(10, np.uint8)
    got = gv.encap(b, arena=small, **kw)  # too small: a fresh arena, the buffer untouched
    assert not np.shares_memory(got.data, small) and not small.any() and got.packets() == want.packets()
    ro = big.copy()
    ro.flags.writeable = False
    for bad in (ro, big.astype(np.int8), big[::2]):
        with pytest.raises(ValueError, match="arena"):
            gv.encap(b, arena=bad, **kw)


def test_encap_ethernet_input_with_vlan_carries_ip_part():
    inner = ip_packet(payload=b"abc")
    frame = b"\x01" * 6 + b"\x02" * 6 + b"\x81\x00\x00\x05\x08\x00" + inner + b"\0" * 7  # padded
    wire = gv.encap(batch_of([frame]))
    back = gv.decap(wire)
    assert back.status[0] == S.OK and back.packet(0) == inner


def test_encap_statuses_too_big_and_unencodable():
    prof = gv.get_profile("alibaba")
    ok = ip_packet(payload=bytes(1500 - 40))
    big = ip_packet(payload=bytes(1501 - 40))
    assert len(ok) == 1500 and len(big) == 1501
    arp = b"\xff" * 6 + b"\x02" * 6 + b"\x08\x06" + bytes(28)
    whole = ip_packet(payload=bytes(100))
    snapped = whole[:60]
    b = PacketBatch.from_packets([ok, big, ok, snapped], linktype=LINKTYPE_IPV4)
    b.wirelen[3] = len(whole)
    eth = batch_of([arp])
    st_out = np.empty(4, np.uint8)
    wire = gv.encap(b, profile=prof, status_out=st_out)
    assert list(st_out) == [S.OK, S.TOO_BIG, S.OK, S.OK]
    assert len(wire) == 3 and wire.packet(1)[82:] == ok
    assert gv.counts(st_out) == {"OK": 3, "TOO_BIG": 1}
    # a snapped packet travels as captured; the outer lengths and the frame's wire length are the real ones
    assert wire.packet(2)[82:] == snapped and int(wire.caplen[2]) == 82 + 60
    assert int(wire.wirelen[2]) == 82 + len(whole)
    frame = wire.packet(2)
    assert struct.unpack_from("!H", frame, 16)[0] == 68 + len(whole)  # outer IPv4 total length
    assert struct.unpack_from("!H", frame, 38)[0] == 48 + len(whole)  # outer UDP length
    back = gv.decap(wire)
    assert back.packet(2) == snapped and int(back.wirelen[2]) == len(whole)
    st_eth = np.empty(1, np.uint8)
    assert len(gv.encap(eth, status_out=st_eth)) == 0 and st_eth[0] == S.NOT_IPV4
    # aws forwards up to 8500 bytes
    assert len(gv.encap(PacketBatch.from_packets([big], linktype=LINKTYPE_IPV4), profile="aws")) == 1


def test_tencent_profile_direction_bits():
    b = batch_of([ip_packet()], LINKTYPE_IPV4)
    wire = gv.encap(b, profile="tencent", cookie=0x12345678, direction=5)
    assert wire.packet(0)[50:52] == b"\x01\x67"
    ck = wire.flow_cookie
    assert ck[0] == (5 << 29) | (0x12345678 & 0x1FFFFFFF)
    d, fid = gv.split_cookie(gv.decap(wire, profile="tencent").flow_cookie, "tencent")
    assert d[0] == 5 and fid[0] == 0x12345678 & 0x1FFFFFFF
    with pytest.raises(ValueError, match="direction"):
        gv.encap(b, profile="aws", direction=1)
    with pytest.raises(ValueError, match="profile"):
        gv.encap(b, profile="gcp")


def test_flow_port_is_symmetric():
    a = ip_packet(src=1, dst=2, sport=10, dport=20)
    r = ip_packet(src=2, dst=1, sport=20, dport=10)
    other = ip_packet(src=1, dst=2, sport=11, dport=20)
    p = gv.flow_ports(batch_of([a, r, other], LINKTYPE_IPV4))
    assert p[0] == p[1] and p[0] != p[2]


def test_encap_argument_errors():
    b = batch_of([ip_packet()], LINKTYPE_IPV4)
    with pytest.raises(ValueError, match="src"):
        gv.encap(b, src="10.0.0.300")
    with pytest.raises(ValueError, match="vni"):
        gv.encap(b, vni=2**24)
    with pytest.raises(ValueError, match="dst"):
        gv.encap(b, dst=np.zeros(3, np.uint32))
    with pytest.raises(ValueError, match="src_mac"):
        gv.encap(b, src_mac="01:02")
    with pytest.raises(ValueError, match="status_out"):
        gv.encap(b, status_out=np.zeros(2, np.uint8))


def test_encap_n0_and_readonly_input():
    assert len(gv.encap(PacketBatch.empty(LINKTYPE_IPV4))) == 0
    pkt = ip_packet(payload=b"ro")
    data = np.frombuffer(pkt, np.uint8)  # read-only
    b = PacketBatch(data, [0], [len(pkt)], linktype=LINKTYPE_IPV4)
    assert gv.decap(gv.encap(b)).packet(0) == pkt


# ------------------------------------------------------------------------------------------------ round trip
def synthetic_mix(n: int, seed: int = 1) -> list[bytes]:
    rng = np.random.default_rng(seed)
    sizes = rng.choice([0, 10, 200, 536, 1400, 1460], size=n, p=[0.4, 0.1, 0.1, 0.1, 0.1, 0.2])
    protos = rng.choice([6, 17, 1], size=n, p=[0.7, 0.25, 0.05])
    return [ip_packet(src=int(rng.integers(2**32)), dst=int(rng.integers(2**32)), proto=int(protos[i]),
                      sport=int(rng.integers(65536)), dport=int(rng.integers(65536)),
                      payload=rng.bytes(int(sizes[i]))) for i in range(n)]


def test_encap_decap_round_trip_bit_for_bit():
    mix = synthetic_mix(500)
    b = batch_of(mix, LINKTYPE_IPV4)
    wire = gv.encap(b, endpoint_id=0x0A1B2C3D4E5F6071, attachment_id=3, cookie=0xCAFE)
    inner = gv.decap(wire)
    assert inner.data is wire.data  # shares the arena: no copy
    inner.validate()
    assert (inner.status == S.OK).all()
    assert (inner.linktype == LINKTYPE_IPV4).all()
    assert inner.packets() == mix
    assert (inner.endpoint_id == 0x0A1B2C3D4E5F6071).all() and (inner.flow_cookie == 0xCAFE).all()
    assert (inner.inner_off == 82).all() and (inner.off - inner.inner_off == wire.off).all()


def test_encap_decap_round_trip_on_synth_mix():
    synth = pytest.importorskip("gwlb_fast.synth")
    frames = synth.generate(flows=200, packets=3000, seed=11)
    wire = gv.encap(frames, endpoint_id=9, cookie=1)
    inner = gv.decap(wire)
    assert len(inner) == len(frames) and (inner.status == S.OK).all()
    for i, f in enumerate(frames.packets()):
        tot = struct.unpack_from("!H", f, 16)[0]  # Ethernet, no VLAN in the synthetic mix
        assert f[12:14] == b"\x08\x00" and inner.packet(i) == f[14 : 14 + tot]
    assert (inner.ts_ns == frames.ts_ns).all()


def _snapped_too_big_and_bad(frames: PacketBatch) -> PacketBatch:
    """``frames`` with a packet cut by a snaplen, one too big for the Alibaba profile and one that is not IPv4."""
    pk = frames.packets()
    pk[1] = pk[1][:40]
    pk[2] = pk[2][:14] + ip_packet(payload=bytes(1600))
    pk[3] = pk[3][:12] + b"\x86\xdd" + pk[3][14:]
    b = batch_of(pk)
    b.wirelen = frames.wirelen.copy()
    b.wirelen[2] = len(pk[2])
    b.ts_ns = frames.ts_ns.copy()
    return b


@pytest.mark.parametrize("profile", ["aws", "alibaba", "tencent"])
def test_carried_is_decap_of_encap_without_the_frames(profile):
    """``carried`` gives every column ``decap(encap(...))`` gives, and the same inner bytes, from the input arena."""
    synth = pytest.importorskip("gwlb_fast.synth")
    frames = _snapped_too_big_and_bad(synth.generate(flows=50, packets=600, seed=3))
    n = len(frames)
    rng = np.random.default_rng(5)
    kw = {"endpoint_id": 0x0A1B2C3D4E5F6071, "attachment_id": 77, "profile": profile,
          "cookie": rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32)}
    st_enc, st_car = np.empty(n, np.uint8), np.empty(n, np.uint8)
    want = gv.decap(gv.encap(frames, dst=rng.integers(1, 2**32, n, dtype=np.uint64).astype(np.uint32),
                             status_out=st_enc, **kw), profile=profile)
    got = gv.carried(frames, status_out=st_car, **kw)
    assert st_car.tolist() == st_enc.tolist() and (st_enc != S.OK).sum() == (2 if profile == "alibaba" else 1)
    assert got.data is frames.data
    got.validate()
    assert got.packets() == want.packets()
    for name, col in want.columns().items():
        if name != "off":
            assert getattr(got, name).tolist() == col.tolist(), name
    assert got.parse().status.tolist() == want.parse().status.tolist()


def test_echo_swaps_outer_and_keeps_geneve_bytes():
    inners = [ip_packet(sport=i) for i in range(3)]
    wire = gv.encap(batch_of(inners, LINKTYPE_IPV4), dst=np.array([1, 2, 3], np.uint32) + 0x0A000100,
                    endpoint_id=42, cookie=0xABCD)
    wire_bytes = wire.packets()
    back = gv.echo(wire)
    assert wire.packets() == wire_bytes  # input untouched
    assert (back.status == S.OK).all()
    for i in range(3):
        got = back.packet(i)
        assert got == oracle.echo(wire_bytes[i])
        assert got[34:] == wire_bytes[i][34:]  # UDP, Geneve, options, inner byte for byte
        assert oracle.ip_checksum(got[14:34]) == 0
        assert got[26:30] == wire_bytes[i][30:34]
    again = gv.echo(back)
    assert again.packets() == wire_bytes
    # a non-Geneve packet comes back unchanged with its reason
    mixed = gv.echo(batch_of([ip_packet()], LINKTYPE_IPV4))
    assert mixed.status[0] == S.NOT_GENEVE and mixed.packet(0) == ip_packet()


# ------------------------------------------------------------------------------------------------ decoder
options_st = st.lists(
    st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFF), st.integers(0, 31).map(lambda k: k * 4)),
    max_size=12,
)


@st.composite
def geneve_packets(draw):
    inner = draw(inner_packets)
    raw = b""
    for cls, typ, ln in draw(options_st):
        raw += tlv(cls, typ, draw(st.binary(min_size=ln, max_size=ln)))
    if draw(st.booleans()):  # the largest option area: 63 words
        raw = raw[:252] if len(raw) >= 252 else raw + tlv(0x0102, 0x10, bytes(248 - len(raw)))
    raw = raw[:252]
    if len(raw) % 4:
        raw = raw[: len(raw) // 4 * 4]
    # only whole TLVs: rebuild by walking
    good, pos = b"", 0
    while pos + 4 <= len(raw) and pos + 4 + (raw[pos + 3] & 31) * 4 <= len(raw):
        ln = 4 + (raw[pos + 3] & 31) * 4
        good += raw[pos : pos + ln]
        pos += ln
    known = draw(st.lists(st.sampled_from([1, 2, 3]), max_size=3, unique=True))
    for t in known:
        data = draw(st.binary(min_size=8 if t < 3 else 4, max_size=8 if t < 3 else 4))
        if len(good) + 4 + len(data) <= 252:
            good += tlv(0x0108, t, data)
    vni = draw(st.integers(0, 2**24 - 1))
    flags = draw(st.sampled_from([0, 0x80, 0x40, 0xC0]))
    return geneve_frame(inner, good, vni=vni, flags=flags, vlan=draw(st.booleans()))


@given(st.lists(geneve_packets(), min_size=1, max_size=6))
@settings(max_examples=60)
def test_decoder_agrees_with_scapy(packets):
    from scapy.contrib.geneve import GENEVE
    from scapy.layers.l2 import Ether

    b = decode_rows(packets)
    inner = gv.decap(b)
    for i, pkt in enumerate(packets):
        g = Ether(pkt)[GENEVE]
        # an unknown critical option drops the packet (RFC 8926 section 3.5) but every column is still filled
        crit = any(o.type & 0x80 for o in g.options)
        assert b.status[i] == (S.GENEVE_CRITICAL if crit else S.OK), S(int(b.status[i]))
        assert b.vni[i] == g.vni
        assert b.geneve_flags[i] >> 7 == g.oam and (b.geneve_flags[i] >> 6) & 1 == g.critical
        assert b.opt_len[i] == g.optionlen * 4
        want = {1: 0, 2: 0, 3: 0}
        for o in g.options:
            if o.classid == 0x0108 and o.type in want:
                want[o.type] = int.from_bytes(bytes(o.data), "big")
        assert (b.endpoint_id[i], b.attachment_id[i], b.flow_cookie[i]) == (want[1], want[2], want[3])
        assert inner.packet(i) == bytes(g.payload)
        # unknown options are kept intact in the arena, in order
        area = pkt[b.inner_off[i] - b.opt_len[i] : b.inner_off[i]]
        assert area == b"".join(bytes(o) for o in g.options)
    assert_matches_oracle(b)


def test_max_option_length_and_empty_option_area():
    inner = ip_packet()
    full = tlv(0x0108, 1, bytes(8)) + tlv(0x0999, 0x22, bytes(124)) + tlv(0x0999, 0x23, bytes(108))
    assert len(full) == 252
    b = decode_rows([geneve_frame(inner, full), geneve_frame(inner, b"")])
    assert list(b.status) == [S.OK, S.OK]
    assert list(b.opt_len) == [252, 0]
    assert gv.decap(b).packets() == [inner, inner]


def test_decoder_statuses():
    inner = ip_packet()
    crit = tlv(0x0000, 0x80, b"\0\0\0\x0c")
    cases = {
        S.NOT_GENEVE: geneve_frame(inner, dport=4789),
        S.GENEVE_TRUNCATED: None,
        S.GENEVE_BAD_VERSION: geneve_frame(inner, crit, vni=7, ver=1),
        S.GENEVE_OPT_OVERRUN: None,
        S.GENEVE_BAD_TLV: geneve_frame(inner, b"\x01\x08\x01\x05" + bytes(8)),
        S.GENEVE_CRITICAL: geneve_frame(inner, crit, vni=10, flags=0x40),
        S.GENEVE_BAD_PROTO: geneve_frame(inner, proto=0x86DD),
        S.GENEVE_INNER_BAD: geneve_frame(b"\x60" + bytes(39)),
        S.NOT_IPV4: b"\xff" * 12 + b"\x86\xdd" + bytes(40),
        S.TRUNCATED: b"\x00" * 10,
        S.FRAGMENT: None,
    }
    # short Geneve header: UDP payload of 4 bytes
    udp = struct.pack("!HHHH", 1, 6081, 12, 0) + b"\0\0\x08\0"
    cases[S.GENEVE_TRUNCATED] = b"\x02" * 12 + b"\x08\x00" + bytes(dpkt.ip.IP(p=17, data=udp))
    over = bytearray(geneve_frame(b"", b""))
    over[42] = 0x05  # five words of options, none present
    cases[S.GENEVE_OPT_OVERRUN] = bytes(over)
    cases[S.FRAGMENT] = b"\x02" * 12 + b"\x08\x00" + bytes(dpkt.ip.IP(p=17, mf=1, data=bytes(16)))
    pkts = list(cases.values())
    b = decode_rows(pkts)
    assert [S(int(s)) for s in b.status] == list(cases)
    assert_matches_oracle(b)
    # a dropped packet's columns are still filled (DESIGN.md section 2)
    i_crit = list(cases).index(S.GENEVE_CRITICAL)
    assert b.vni[i_crit] == 10 and b.geneve_flags[i_crit] == 0x40 and b.opt_len[i_crit] == 8
    assert b.inner_off[i_crit] == 58
    i_ver = list(cases).index(S.GENEVE_BAD_VERSION)
    assert b.vni[i_ver] == 7 and b.opt_len[i_ver] == 8
    inner_b = gv.decap(batch_of(pkts))
    assert inner_b.packet(i_crit) == inner  # still inspectable
    assert inner_b.caplen[0] == 0  # NOT_GENEVE: no inner packet
    counts = gv.counts(b.status)
    assert all(counts[s.name] == 1 for s in cases)


def test_known_option_with_wrong_length_is_bad_tlv_and_other_class_is_kept():
    inner = ip_packet()
    b = decode_rows([geneve_frame(inner, tlv(0x0108, 1, bytes(4))), geneve_frame(inner, tlv(0x0132, 1, bytes(4)))])
    assert list(b.status) == [S.GENEVE_BAD_TLV, S.OK]
    assert b.endpoint_id[1] == 0


@given(st.lists(st.binary(max_size=120), max_size=8), st.sampled_from([1, 101, 113, 228, 276, 9]))
@settings(max_examples=150)
def test_fuzz_raw_bytes(packets, linktype):
    b = batch_of(packets, linktype)
    before = b.data.copy()
    gv.parse_geneve(b)
    assert (b.data == before).all()
    assert set(b.status.tolist()) <= {int(s) for s in S}
    assert_matches_oracle(b)


@given(geneve_packets(), st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), min_size=1, max_size=6),
       st.integers(0, 200))
@settings(max_examples=150)
def test_fuzz_mutated_geneve(pkt, edits, cut):
    m = bytearray(pkt)
    for pos, val in edits:
        if pos < len(m):
            m[pos] = val
    m = bytes(m[: max(0, len(m) - cut)])
    b = batch_of([m, pkt, m])
    gv.parse_geneve(b)
    assert_matches_oracle(b)
    counts = gv.counts(b.status)
    assert sum(counts.values()) == 3
    # decap of anything never points outside the arena
    inner = gv.decap(b)
    inner.validate()


def test_packet_at_end_of_arena_and_offsets_outside():
    pkt = geneve_frame(ip_packet(), tlv(0x0108, 3, b"\0\0\0\x09"))
    data = np.frombuffer(b"\xee" * 5 + pkt, np.uint8)
    b = PacketBatch(data, [5], [len(pkt)], linktype=1)
    gv.parse_geneve(b)
    assert b.status[0] == S.OK and b.flow_cookie[0] == 9
    n = 2
    out = [np.empty(n, d) for d in (np.uint8, np.uint32, np.uint8, np.uint16, np.uint64, np.uint64, np.uint32,
                                    np.int32, np.uint32, np.uint16)]
    kg.parse_geneve(data, np.array([5, data.shape[0] - 3], np.int64), np.array([len(pkt), 10], np.uint32),
                    np.ones(n, np.uint16), 0x0108, *out)
    assert list(out[0]) == [S.OK, S.TRUNCATED]


def test_kernel_argument_checks():
    b = batch_of([geneve_frame(ip_packet())])
    out = [np.empty(1, d) for d in (np.uint8, np.uint32, np.uint8, np.uint16, np.uint64, np.uint64, np.uint32,
                                    np.int32, np.uint32, np.uint16)]
    with pytest.raises(ValueError):
        kg.parse_geneve(b.data, b.off, b.caplen.astype(np.int64), b.linktype, 0x0108, *out)
    bad = list(out)
    bad[1] = np.empty(2, np.uint32)
    with pytest.raises(ValueError, match="vni"):
        kg.parse_geneve(b.data, b.off, b.caplen, b.linktype, 0x0108, *bad)
    with pytest.raises(ValueError, match="option_class"):
        gv.parse_geneve(b, option_class=0x10000)


def test_n0_and_n1():
    e = gv.decap(PacketBatch.empty())
    assert len(e) == 0 and e.status.shape == (0,)
    one = gv.decap(batch_of([geneve_frame(ip_packet())]))
    assert len(one) == 1 and one.status[0] == S.OK
    assert len(gv.echo(PacketBatch.empty())) == 0


# ------------------------------------------------------------------------------------------------ tcpdump goldens
OPT_RE = re.compile(r"class [^(]*\((0x[0-9a-f]+)\) type (0x[0-9a-f]+)(?:\(C\))? len (\d+) data ([0-9a-f ]*)")


def parse_tcpdump_vv(text: str) -> list[dict]:
    """Geneve fields of each packet in a ``tcpdump -vv`` listing."""
    out = []
    blocks = re.split(r"^\s+\d+\s+\d{4}-\d\d-\d\d ", text, flags=re.MULTILINE)[1:]
    for blk in blocks:
        m = re.search(r"Geneve, Flags \[([^\]]*)\], vni (0x[0-9a-f]+)(?:, options \[(.*?)\])?\n", blk)
        lines = blk.split("\n")
        inner_line = lines[3].strip()
        src, sp, dst, dp = re.match(r"(\d+\.\d+\.\d+\.\d+)(?:\.(\d+))? > (\d+\.\d+\.\d+\.\d+)(?:\.(\d+))?:",
                                    inner_line).groups()
        opts = [(int(c, 16), int(t, 16), int(ln), bytes.fromhex(d.replace(" ", "")))
                for c, t, ln, d in OPT_RE.findall(m.group(3) or "")]
        out.append({"flags": m.group(1), "vni": int(m.group(2), 16), "options": opts, "src": src, "dst": dst,
                        "ports": None if sp is None else (int(sp), int(dp))})
    return out


def read_pcap_dpkt(path: Path) -> PacketBatch:
    with open(path, "rb") as f:
        r = dpkt.pcap.Reader(f)
        pk = [bytes(buf) for _, buf in r]
        return PacketBatch.from_packets(pk, linktype=r.datalink())


def walk_options(area: bytes):
    opts, pos = [], 0
    while pos < len(area):
        ln = (area[pos + 3] & 31) * 4
        opts.append((struct.unpack_from("!H", area, pos)[0], area[pos + 2], 4 + ln, area[pos + 4 : pos + 4 + ln]))
        pos += 4 + ln
    return opts


def ip_str(b: bytes) -> str:
    return ".".join(str(x) for x in b)


@pytest.mark.skipif(not CAPTURES.is_dir(), reason="shared tcpdump captures absent")
@pytest.mark.parametrize("pcap,out", [("geneve.pcap", "geneve-vv.out"), ("geneve-gcp.pcap", "geneve-gcp.out")])
def test_tcpdump_golden(pcap, out):
    want = parse_tcpdump_vv((CAPTURES / out).read_text())
    wire = read_pcap_dpkt(CAPTURES / pcap)
    inner = gv.decap(wire)
    assert len(inner) == len(want) > 0
    for i, w in enumerate(want):
        crit = any(t & 0x80 for _, t, _, _ in w["options"])
        assert inner.status[i] == (S.GENEVE_CRITICAL if crit else S.OK)
        assert inner.vni[i] == w["vni"]
        flags = {"none": 0, "C": 0x40, "O": 0x80, "O, C": 0xC0}[w["flags"]]
        assert inner.geneve_flags[i] == flags
        o = int(wire.off[i])
        area = wire.data[o + inner.inner_off[i] - inner.opt_len[i] : o + inner.inner_off[i]].tobytes()
        assert walk_options(area) == w["options"]
        pkt = inner.packet(i)
        l3 = 14 if inner.linktype[i] == LINKTYPE_ETHERNET else 0
        assert (ip_str(pkt[l3 + 12 : l3 + 16]), ip_str(pkt[l3 + 16 : l3 + 20])) == (w["src"], w["dst"])
        if w["ports"] is not None:
            l4 = l3 + (pkt[l3] & 15) * 4
            assert struct.unpack_from("!HH", pkt, l4) == w["ports"]


@pytest.mark.skipif(not CAPTURES.is_dir(), reason="shared tcpdump captures absent")
def test_tcpdump_vni_filter_count():
    """geneve-vni.out lists the packets with VNI 0xb: the decoder selects the same ones."""
    lines = [ln for ln in (CAPTURES / "geneve-vni.out").read_text().splitlines() if ln.strip()]
    b = gv.parse_geneve(read_pcap_dpkt(CAPTURES / "geneve.pcap"))
    assert int((b.vni == 0xB).sum()) == len(lines)


@pytest.mark.skipif(not CAPTURES.is_dir(), reason="shared tcpdump captures absent")
def test_tcpdump_tcp_filter_count():
    """geneve-tcp.out lists the Geneve packets carrying TCP: the decoder's inner packets say the same."""
    lines = [ln for ln in (CAPTURES / "geneve-tcp.out").read_text().splitlines() if ln.strip()]
    inner = gv.decap(read_pcap_dpkt(CAPTURES / "geneve.pcap"))
    tcp = [p[14 + 9] == 6 for p in inner.packets()]  # Ethernet inner packets, IPv4 protocol byte
    assert sum(tcp) == len(lines)
    assert all(f"vni 0x{v:x}" in ln for v, ln in zip(inner.vni[np.array(tcp)], lines))


# ------------------------------------------------------------------------------------------------ tshark
def write_pcap(path: Path, batch: PacketBatch, linktype: int) -> None:
    with open(path, "wb") as f:
        w = dpkt.pcap.Writer(f, linktype=linktype)
        for p in batch.packets():
            w.writepkt(p, ts=0)


@pytest.mark.tshark
@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_tshark_decodes_encoder_output(tmp_path):
    inners = synthetic_mix(20, seed=7)
    b = batch_of(inners, LINKTYPE_IPV4)
    ep = np.arange(20, dtype=np.uint64) * 0x0101010101 + 1
    wire = gv.encap(b, endpoint_id=ep, attachment_id=0xA77AC4, cookie=np.arange(20) * 1000, vni=0)
    f = tmp_path / "enc.pcap"
    write_pcap(f, wire, 1)
    fields = ["geneve.vni", "geneve.option.class", "geneve.option.type", "geneve.option.length",
              "geneve.option.unknown.data", "ip.src", "ip.dst", "udp.dstport", "_ws.expert"]
    cmd = ["tshark", "-r", str(f), "-T", "fields", "-E", "separator=|", "-E", "occurrence=a", "-E", "aggregator=,"]
    for fld in fields:
        cmd += ["-e", fld]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=120)
    rows = [r.split("|") for r in res.stdout.strip().splitlines()]
    assert len(rows) == 20
    for i, r in enumerate(rows):
        vni, cls, typ, ln, data, ipsrc, ipdst, dport, expert = r
        assert int(vni, 0) == 0
        assert [int(x, 0) for x in cls.split(",")] == [0x0108] * 3
        assert [int(x, 0) for x in typ.split(",")] == [1, 2, 3]
        # the first is the base header's option area (bytes); then each option, its 4-byte header included
        assert [int(x, 0) for x in ln.split(",")] == [32, 12, 12, 8]
        assert [bytes.fromhex(x.replace(":", "")) for x in data.split(",")] == [
            int(ep[i]).to_bytes(8, "big"), (0xA77AC4).to_bytes(8, "big"), (i * 1000).to_bytes(4, "big")]
        inner = inners[i]
        assert ipsrc.split(",") == ["10.0.0.10", ip_str(inner[12:16])]
        assert ipdst.split(",") == ["10.0.1.11", ip_str(inner[16:20])]
        assert dport.split(",")[0] == "6081"
        assert "Malformed" not in expert and "Warning" not in expert and "Error" not in expert, expert
    ex = subprocess.run(["tshark", "-r", str(f), "-q", "-z", "expert,warn"], capture_output=True, text=True,
                        check=True, timeout=120)
    assert "Malformed" not in ex.stdout and "Warning" not in ex.stdout and "Error" not in ex.stdout, ex.stdout
    # and tshark verifies every IPv4 header checksum, outer and inner, as good (status 1)
    ck = subprocess.run(["tshark", "-r", str(f), "-o", "ip.check_checksum:TRUE", "-T", "fields", "-E",
                         "occurrence=a", "-e", "ip.checksum.status"], capture_output=True, text=True, check=True,
                        timeout=120)
    status = ck.stdout.replace(",", "\n").split()
    assert len(status) == 40 and set(status) == {"1"}


def test_flow_port_matches_flowhash_kernel():
    fh = pytest.importorskip("gwlb_fast._kernels.flowhash")
    rng = np.random.default_rng(3)
    pk = [ip_packet(src=int(rng.integers(2**32)), dst=int(rng.integers(2**32)), proto=int(p),
                    sport=int(rng.integers(65536)), dport=int(rng.integers(65536))) for p in [6, 17] * 50]
    b = batch_of(pk, LINKTYPE_IPV4)
    src = np.array([int.from_bytes(p[12:16], "big") for p in pk], np.uint32)
    dst = np.array([int.from_bytes(p[16:20], "big") for p in pk], np.uint32)
    sp = np.array([int.from_bytes(p[20:22], "big") for p in pk], np.uint16)
    dp = np.array([int.from_bytes(p[22:24], "big") for p in pk], np.uint16)
    proto = np.array([p[9] for p in pk], np.uint8)
    for seed in (0, 12345):
        h = np.empty(len(pk), np.uint64)
        fh.hash_5tuple(src, dst, sp, dp, proto, seed, h)
        want = np.empty(len(pk), np.uint16)
        fh.geneve_udp_sport(h, want)
        assert (gv.flow_ports(b, hash_seed=seed) == want).all()
        assert (gv.encap(b, hash_seed=seed).packets()[0][34:36] == int(want[0]).to_bytes(2, "big"))


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_encap_then_decap_streams_in_chunks(tmp_path, capsys):
    from gwlb_fast.cli import main
    from gwlb_fast.pcapio import read_pcap, write_pcap

    mix = synthetic_mix(50, seed=5)
    big = ip_packet(payload=bytes(1600))
    src = tmp_path / "in.pcap"
    write_pcap(src, batch_of(mix + [big], LINKTYPE_IPV4))
    enc, dec = tmp_path / "enc.pcap", tmp_path / "dec.pcap"
    assert main(["encap", str(src), "-o", str(enc), "--src", "10.0.0.10", "--dst", "10.0.1.12", "--endpoint-id",
                 "0x0a1b2c3d4e5f6071", "--cookie", "99", "--profile", "alibaba", "--chunk", "7"]) == 0
    out = capsys.readouterr().out
    assert "encap: 51 packets in, 50 written" in out and "TOO_BIG: 1" in out
    wire = PacketBatch.concat(list(read_pcap(enc, parse=False)))
    assert len(wire) == 50 and (wire.linktype == LINKTYPE_ETHERNET).all()
    gv.parse_geneve(wire)
    assert (wire.status == S.OK).all() and (wire.endpoint_id == 0x0A1B2C3D4E5F6071).all()
    assert main(["decap", str(enc), "-o", str(dec), "--chunk", "16"]) == 0
    assert "decap: 50 packets in, 50 written" in capsys.readouterr().out
    back = PacketBatch.concat(list(read_pcap(dec, parse=False)))
    assert (back.linktype == LINKTYPE_IPV4).all() and back.packets() == mix


@pytest.mark.skipif(not CAPTURES.is_dir(), reason="shared tcpdump captures absent")
def test_cli_decap_counts_reasons(tmp_path, capsys):
    from gwlb_fast.cli import main
    from gwlb_fast.pcapio import read_pcap

    dec = tmp_path / "dec.pcap"
    assert main(["decap", str(CAPTURES / "geneve.pcap"), "-o", str(dec)]) == 0
    out = capsys.readouterr().out
    assert "decap: 39 packets in, 20 written" in out and "GENEVE_CRITICAL: 19" in out
    back = PacketBatch.concat(list(read_pcap(dec, parse=False)))
    assert len(back) == 20 and (back.linktype == LINKTYPE_ETHERNET).all()


def test_cli_errors(tmp_path, capsys):
    from gwlb_fast.cli import main
    from gwlb_fast.pcapio import write_pcap

    src = tmp_path / "in.pcap"
    write_pcap(src, batch_of([ip_packet()], LINKTYPE_IPV4))
    base = ["encap", str(src), "-o", str(tmp_path / "o.pcap"), "--dst", "10.0.1.11"]
    assert main(base + ["--src", "10.0.0.300"]) == 2
    assert main(base + ["--src", "10.0.0.10", "--vni", "0x1000000"]) == 2
    assert main(base + ["--src", "10.0.0.10", "--direction", "1"]) == 2  # aws has no direction bits
    assert main(["decap", str(tmp_path / "missing.pcap"), "-o", str(tmp_path / "x.pcap")]) == 1
    err = capsys.readouterr().err
    assert "--src" in err and "--vni" in err and "missing.pcap" in err


def test_carried_parsed_takes_the_columns_of_a_parsed_batch():
    """``parsed=True``: the L3/L4 columns a parse of the inner packets gives, without the parse; None when a carried
    packet's status is not OK (or the batch is not parsed)."""
    synth = pytest.importorskip("gwlb_fast.synth")
    frames = synth.generate(flows=50, packets=600, seed=8)
    frames.parse()
    names = ("status", "src_ip", "dst_ip", "sport", "dport", "proto", "tcp_flags", "l3_off", "l4_off")
    got = gv.carried(frames, endpoint_id=1, parsed=True)
    want = gv.decap(gv.encap(frames, endpoint_id=1)).parse()
    assert (got.status == S.OK).all()
    for name in names:
        assert getattr(got, name).tolist() == getattr(want, name).tolist(), name
    assert gv.carried(frames, endpoint_id=1).l4_off is None
    frames.status[3] = S.BAD_IP_CSUM
    assert gv.carried(frames, endpoint_id=1, parsed=True).l4_off is None


# ------------------------------------------------------------------------------------------------ carried's plan
def _framed(ip: bytes, link: str, pad: int) -> tuple[bytes, int]:
    """``ip`` in a frame of link type ``link`` with ``pad`` trailing bytes (Ethernet padding), and the link type."""
    if link == "raw":
        return ip + bytes(pad), LINKTYPE_IPV4
    if link == "vlan":
        return b"\x02" * 12 + b"\x81\x00\x00\x07\x08\x00" + ip + bytes(pad), LINKTYPE_ETHERNET
    if link == "sll":
        return b"\x00\x00\x00\x01\x00\x06" + b"\x02" * 8 + b"\x08\x00" + ip + bytes(pad), 113
    return b"\x02" * 12 + b"\x08\x00" + ip + bytes(pad), LINKTYPE_ETHERNET


def _plan_carried(b: PacketBatch, max_inner: int, parsed: bool):
    n = len(b)
    outs = (np.empty(n, np.uint8), np.empty(n, np.int64), np.empty(n, np.uint32), np.empty(n, np.uint32),
            np.empty(n if parsed else 0, np.int32))
    cols = (b.status, b.l3_off, b.l4_off) if parsed else (np.zeros(0, np.uint8), np.zeros(0, np.int32),
                                                          np.zeros(0, np.int32))
    counts = kg.plan_carried(b.data, b.off, b.caplen, b.wirelen, b.linktype, *cols, max_inner, *outs)
    return counts, outs


def _assert_plan_matches_oracle(b: PacketBatch, max_inner: int, parsed: bool):
    (n_ok, n_pok), (st_, start, ilen, wlen, l4) = _plan_carried(b, max_inner, parsed)
    pk = b.packets()
    for i, p in enumerate(pk):
        want = oracle.plan(p, int(b.linktype[i]), int(b.wirelen[i]), max_inner)
        got = (int(st_[i]), int(start[i] - b.off[i]) if st_[i] == S.OK else 0, int(ilen[i]), int(wlen[i]))
        assert got == want, (i, got, want)
        if parsed and st_[i] == S.OK and b.status[i] == S.OK:
            assert l4[i] == b.l4_off[i] - b.l3_off[i]
    assert n_ok == int((st_ == S.OK).sum())
    assert n_pok == (int(((st_ == S.OK) & (b.status == S.OK)).sum()) if parsed else 0)
    # plan_encap plans the same
    st2, start2, ilen2 = np.empty(len(b), np.uint8), np.empty(len(b), np.int64), np.empty(len(b), np.uint32)
    kg.plan_encap(b.data, b.off, b.caplen, b.linktype, max_inner, st2, start2, ilen2)
    assert st2.tolist() == st_.tolist() and start2.tolist() == start.tolist() and ilen2.tolist() == ilen.tolist()


@given(st.lists(st.tuples(inner_packets, st.sampled_from(["eth", "vlan", "raw", "sll"]), st.integers(0, 8),
                          st.integers(0, 80), st.integers(-4, 3)), min_size=1, max_size=8),
       st.sampled_from([0, 40, 60, 1500, 8500, 2**32 - 1]))
@settings(max_examples=120)
def test_plan_carried_matches_oracle(packets, max_inner):
    """The plan ``carried`` makes (status, inner start, length captured and on the wire) with and without the parse
    columns: that of a plain-Python walk, and of ``plan_encap``; padded, snapped and too big packets included."""
    pk, lts, wire = [], [], []
    for ip, link, pad, cut, extra in packets:
        frame, lt = _framed(ip, link, pad)
        cap = frame[: max(0, len(frame) - cut)]
        pk.append(cap)
        lts.append(lt)
        wire.append(max(0, len(frame) + extra))  # below the bytes captured too: bad input is planned alike
    b = PacketBatch.from_packets(pk, linktype=np.array(lts, np.uint16))
    b.wirelen = np.array(wire, np.uint32)
    b.parse()
    _assert_plan_matches_oracle(b, max_inner, parsed=True)
    _assert_plan_matches_oracle(b, max_inner, parsed=False)


@given(st.lists(st.binary(max_size=100), min_size=1, max_size=8), st.sampled_from([1, 101, 113, 228, 276, 9]),
       st.lists(st.tuples(st.integers(0, 255), st.integers(-5, 130), st.integers(-5, 130)), min_size=8,
                max_size=8), st.booleans())
@settings(max_examples=200)
def test_fuzz_plan_carried_raw_bytes_and_wrong_columns(packets, linktype, cols, parse_first):
    """Raw bytes, with their true parse columns or with any status and offsets: never a read or a result outside
    a packet; with true columns, the oracle's plan."""
    b = batch_of(packets, linktype)
    if parse_first:
        b.parse()
        _assert_plan_matches_oracle(b, 1500, parsed=True)
    n = len(b)
    b.status = np.array([c[0] for c in cols[:n]], np.uint8)
    b.l3_off = np.array([c[1] for c in cols[:n]], np.int32)
    b.l4_off = np.array([c[2] for c in cols[:n]], np.int32)
    (n_ok, _), (st_, start, ilen, wlen, _) = _plan_carried(b, 1500, parsed=True)
    ok = st_ == S.OK
    assert n_ok == int(ok.sum())
    assert set(st_.tolist()) <= {int(s) for s in S}
    assert (start[ok] >= b.off[ok]).all()
    assert (start[ok] + ilen[ok] <= b.off[ok] + b.caplen[ok]).all()
    assert (ilen[~ok] == 0).all() and (wlen[~ok] == 0).all()


def test_plan_carried_reads_the_header_at_l3_off_and_walks_when_it_does_not_check():
    """With the parse columns, a parsed-OK packet's header is taken at ``l3_off`` (no link-layer walk); when the
    bytes there are not an IPv4 header the packet is walked from the start instead."""
    ip = ip_packet(payload=bytes(30))
    frame, _ = _framed(ip, "eth", 4)
    b = batch_of([frame, frame])
    b.parse()
    b.data[b.off[1] + 12] = 0x86  # second frame's ethertype now IPv6: the walk says NOT_IPV4
    b.data[b.off[1] + 13] = 0xDD
    (n_ok, n_pok), (st_, _, ilen, _, _) = _plan_carried(b, 1500, parsed=True)
    assert st_.tolist() == [S.OK, S.OK] and n_ok == n_pok == 2  # the columns say OK at l3_off 14: trusted
    assert ilen.tolist() == [len(ip), len(ip)]
    b.l3_off[1] = 2  # no IPv4 header there: walked, NOT_IPV4
    (n_ok, n_pok), (st_, _, _, _, _) = _plan_carried(b, 1500, parsed=True)
    assert st_.tolist() == [S.OK, S.NOT_IPV4] and n_ok == n_pok == 1
    b.status[0] = S.BAD_IP_CSUM  # not parsed OK: walked, and still carried
    (n_ok, n_pok), (st_, _, _, _, _) = _plan_carried(b, 1500, parsed=True)
    assert st_.tolist() == [S.OK, S.NOT_IPV4] and (n_ok, n_pok) == (1, 0)
