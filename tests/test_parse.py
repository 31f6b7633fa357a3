import socket
import struct

import dpkt
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gwlb_fast import PacketBatch, PktStatus
from gwlb_fast._kernels.parse import fill_ip_checksums, gather_packets, icmp_errors, parse_packets
from tests.oracles.parse import parse as oracle
from tests.strategies import ethernet_frame, ipv4_packet, mutated

FIELDS = ("status", "src_ip", "dst_ip", "sport", "dport", "proto", "tcp_flags", "l3_off", "l4_off")


def parsed_rows(packets, linktype=1):
    b = PacketBatch.from_packets(packets, linktype=linktype).parse()
    return [{f: int(getattr(b, f)[i]) for f in FIELDS} for i in range(len(b))]


def assert_matches_oracle(packets, linktype=1):
    for pkt, row in zip(packets, parsed_rows(packets, linktype)):
        assert row == {k: int(v) for k, v in oracle(pkt, linktype).items()}, pkt.hex()


def dpkt_columns(frame: bytes):
    """What a dpkt user reads from a valid Ethernet frame."""
    eth = dpkt.ethernet.Ethernet(frame)
    ip = eth.data
    assert isinstance(ip, dpkt.ip.IP)
    src, dst = struct.unpack("!II", ip.src + ip.dst)
    sport = dport = flags = 0
    l4 = ip.data
    if ip.offset == 0 and isinstance(l4, dpkt.tcp.TCP):
        sport, dport, flags = l4.sport, l4.dport, l4.flags
    elif ip.offset == 0 and isinstance(l4, dpkt.udp.UDP):
        sport, dport = l4.sport, l4.dport
    elif ip.offset == 0 and isinstance(l4, dpkt.icmp.ICMP):
        flags = l4.type
        if l4.type in (0, 8, 13, 14, 15, 16, 17, 18):
            sport = dport = struct.unpack("!H", bytes(l4)[4:6])[0]
    return {"src_ip": src, "dst_ip": dst, "proto": ip.p, "sport": sport, "dport": dport, "tcp_flags": flags}


@given(st.lists(ethernet_frame(), max_size=20))
def test_agrees_with_dpkt_on_valid_frames(frames):
    for frame, row in zip(frames, parsed_rows(frames)):
        if row["status"] == PktStatus.NOT_IPV4:
            assert struct.unpack_from("!H", frame, row["l3_off"] - 2 if row["l3_off"] > 0 else 12)[0] != 0x0800 \
                or dpkt.ethernet.Ethernet(frame).type != dpkt.ethernet.ETH_TYPE_IP
            continue
        assert row["status"] in (PktStatus.OK, PktStatus.FRAGMENT)
        want = dpkt_columns(frame)
        if want["proto"] == 1 and want["tcp_flags"] in (3, 4, 5, 11, 12) and row["proto"] != 1 or (
                row["proto"] == 1 and row["tcp_flags"] != want["tcp_flags"]):
            continue  # an ICMP error whose body reads as a quoted IPv4 header: its flow's columns (oracle tests)
        assert {k: row[k] for k in want} == want


@given(st.lists(ethernet_frame(), max_size=20))
def test_valid_frames_match_oracle(frames):
    assert_matches_oracle(frames)


@given(st.lists(mutated(ethernet_frame()), max_size=20))
def test_mutated_frames_match_oracle(frames):
    assert_matches_oracle(frames)


@given(st.lists(mutated(ipv4_packet()), max_size=10), st.sampled_from([101, 228]))
def test_raw_ip_link_types(packets, linktype):
    assert_matches_oracle(packets, linktype)


@given(st.lists(ipv4_packet(), max_size=5), st.sampled_from([113, 276]))
def test_linux_cooked(packets, linktype):
    hdr = (bytes(14) + b"\x08\x00") if linktype == 113 else (b"\x08\x00" + bytes(18))
    frames = [hdr + p for p in packets]
    rows = parsed_rows(frames, linktype)
    for p, row in zip(packets, rows):
        assert row == {k: int(v) for k, v in oracle(p, 228).items()} | {
            "l3_off": len(hdr), "l4_off": oracle(p, 228)["l4_off"] + len(hdr)}


def _short_link_header(linktype: int, family: int, order: str, hdlc: bool, pfc: bool) -> bytes:
    """A null/loopback header (address family in the given byte order) or a PPP header (0xff03 optional,
    protocol one byte with protocol-field compression), written from tcpdump.org/linktypes.html."""
    if linktype in (0, 108):
        return struct.pack(order + "I", family)
    proto = {2: 0x0021, 24: 0x0057}.get(family, family)
    head = b"\xff\x03" if hdlc else b""
    return head + (bytes([proto]) if pfc and proto < 0x100 and proto & 1 else struct.pack("!H", proto))


@given(st.lists(ipv4_packet(), max_size=5), st.sampled_from([0, 108, 9]), st.sampled_from([2, 24, 30, 7, 0x0281]),
       st.sampled_from(["<", ">"]), st.booleans(), st.booleans())
def test_null_loopback_and_ppp(packets, linktype, family, order, hdlc, pfc):
    hdr = _short_link_header(linktype, family, order, hdlc, pfc)
    frames = [hdr + p for p in packets]
    rows = parsed_rows(frames, linktype)
    ipv4 = family == 2 and (linktype != 108 or order == ">")
    for p, row in zip(packets, rows):
        if not ipv4:
            assert row["status"] == PktStatus.NOT_IPV4
            continue
        want = oracle(p, 228)
        assert row == {k: int(v) for k, v in want.items()} | {"l3_off": len(hdr), "l4_off": want["l4_off"] + len(hdr)}
    assert_matches_oracle(frames, linktype)


@given(st.lists(st.binary(max_size=80), max_size=30), st.sampled_from([0, 1, 9, 101, 108, 113, 228, 276, 999]))
def test_raw_bytes_fuzz(blobs, linktype):
    b = PacketBatch.from_packets(blobs, linktype=linktype)
    before = b.data.copy()
    b.parse()
    assert np.array_equal(b.data, before)
    assert set(np.unique(b.status)) <= {int(s) for s in PktStatus}
    assert_matches_oracle(blobs, linktype)


def test_arp_and_ipv6_are_flagged_not_dropped():
    arp = bytes(12) + b"\x08\x06" + bytes(28)
    v6 = bytes(12) + b"\x86\xdd" + bytes(40)
    b = PacketBatch.from_packets([arp, v6]).parse()
    assert list(b.status) == [PktStatus.NOT_IPV4] * 2 and len(b) == 2


def test_known_answer_tcp_syn():
    ip = dpkt.ip.IP(src=socket.inet_aton("10.1.1.5"), dst=socket.inet_aton("93.184.216.34"), p=6,
                    data=dpkt.tcp.TCP(sport=40000, dport=443, flags=dpkt.tcp.TH_SYN))
    frame = bytes(dpkt.ethernet.Ethernet(type=0x0800, data=ip))
    (row,) = parsed_rows([frame])
    assert row == {"status": 0, "src_ip": 0x0A010105, "dst_ip": 0x5DB8D822, "sport": 40000, "dport": 443,
                   "proto": 6, "tcp_flags": 2, "l3_off": 14, "l4_off": 34}


def test_packet_outside_arena_is_truncated_not_read():
    data = np.zeros(10, np.uint8)
    n = 2
    out = {f: np.empty(n, PacketBatch.__init__.__globals__["OPTIONAL_COLUMNS"][f]) for f in FIELDS}
    parse_packets(data, np.array([5, -1], np.int64), np.array([20, 4], np.uint32), np.ones(n, np.uint16),
                  *(out[f] for f in FIELDS))
    assert list(out["status"]) == [PktStatus.TRUNCATED] * 2


def test_empty_and_wrong_lengths():
    b = PacketBatch.empty().parse()
    assert len(b.status) == 0
    with pytest.raises(ValueError, match="status"):
        parse_packets(np.zeros(4, np.uint8), np.zeros(1, np.int64), np.zeros(1, np.uint32), np.ones(1, np.uint16),
                      np.zeros(2, np.uint8), *(np.zeros(1, t) for t in
                                               (np.uint32, np.uint32, np.uint16, np.uint16, np.uint8, np.uint8,
                                                np.int32, np.int32)))
    with pytest.raises((ValueError, TypeError)):
        parse_packets(np.zeros(4, np.uint8), np.zeros(1, np.int32), np.zeros(1, np.uint32), np.ones(1, np.uint16),
                      *(np.zeros(1, t) for t in (np.uint8, np.uint32, np.uint32, np.uint16, np.uint16, np.uint8,
                                                 np.uint8, np.int32, np.int32)))


def test_read_only_arena():
    frame = bytes(12) + b"\x08\x00" + bytes(dpkt.ip.IP(p=17, data=dpkt.udp.UDP(sport=1, dport=2)))
    data = np.frombuffer(frame, np.uint8)
    assert not data.flags.writeable
    b = PacketBatch(data, [0], [len(frame)]).parse()
    assert (b.status[0], b.sport[0], b.dport[0]) == (0, 1, 2)


def test_gather_checks_bounds():
    with pytest.raises(ValueError, match="outside"):
        gather_packets(np.zeros(4, np.uint8), np.array([2], np.int64), np.array([4], np.uint32),
                       np.zeros(8, np.uint8), np.array([0], np.int64))


# ---------------------------------------------------------------------------------------- IPv4 header checksum
def _tcp_frame(payload=b"", **ip_kw):
    ip = dpkt.ip.IP(src=socket.inet_aton("10.1.1.5"), dst=socket.inet_aton("93.184.216.34"), p=6, **ip_kw,
                    data=dpkt.tcp.TCP(sport=40000, dport=443, flags=dpkt.tcp.TH_ACK, data=payload))
    return bytes(dpkt.ethernet.Ethernet(type=0x0800, data=ip))


def _with_ip_csum(frame: bytes, csum: int) -> bytes:
    return frame[:24] + struct.pack("!H", csum) + frame[26:]


def test_bad_ip_header_checksum_is_flagged_with_its_columns():
    good = _tcp_frame()
    csum = struct.unpack_from("!H", good, 24)[0]
    bad = _with_ip_csum(good, csum ^ 0x0101)
    rows = parsed_rows([good, bad])
    assert rows[0]["status"] == PktStatus.OK
    assert rows[1]["status"] == PktStatus.BAD_IP_CSUM
    assert {k: rows[1][k] for k in ("src_ip", "sport", "dport")} == {"src_ip": 0x0A010105, "sport": 40000,
                                                                      "dport": 443}


def _ones_sum16(data: bytes) -> int:
    """RFC 1071 one's-complement sum of big-endian 16-bit words, folded (plain Python)."""
    acc = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while acc >> 16:
        acc = (acc & 0xFFFF) + (acc >> 16)
    return acc


@given(st.integers(5, 15), st.binary(min_size=60, max_size=60), st.sampled_from(["right", "random", "zero-body"]))
def test_ip_header_checksum_check_agrees_with_rfc1071(ihl, body, csum_kind):
    """Any header length, any header bytes: BAD_IP_CSUM exactly where the header's words do not add up to 0xFFFF
    (a checksum field of 0 is offload, never bad)."""
    hlen = 4 * ihl
    hdr = bytearray(body[:hlen])
    if csum_kind == "zero-body":
        hdr[:] = bytes(hlen)
    hdr[0] = 0x40 | ihl
    hdr[2:4] = struct.pack("!H", hlen)  # total length: the header alone
    hdr[6:8] = b"\0\0"  # not a fragment
    if csum_kind == "right":
        hdr[10:12] = b"\0\0"
        hdr[10:12] = struct.pack("!H", ~_ones_sum16(bytes(hdr)) & 0xFFFF)
    row = parsed_rows([bytes(hdr)], linktype=228)[0]
    if hdr[10:12] == b"\0\0":
        assert row["status"] != PktStatus.BAD_IP_CSUM
    else:
        assert (row["status"] == PktStatus.BAD_IP_CSUM) == (_ones_sum16(bytes(hdr)) != 0xFFFF), bytes(hdr).hex()


def test_zero_ip_checksum_is_offload_and_filled():
    good = _tcp_frame(payload=b"x" * 10)
    zero = _with_ip_csum(good, 0)
    b = PacketBatch.from_packets([zero, good]).parse()
    assert list(b.status) == [PktStatus.OK, PktStatus.OK]
    assert fill_ip_checksums(b.data, b.off, b.caplen, b.l3_off, b.status) == 1
    assert b.packet(0) == good and b.packet(1) == good  # dpkt's checksum; the good one untouched


@given(st.lists(ipv4_packet(), min_size=1, max_size=10))
def test_fill_ip_checksums_matches_dpkt(packets):
    zeroed = [p[:10] + b"\0\0" + p[12:] for p in packets]
    b = PacketBatch.from_packets(zeroed, linktype=228).parse()
    fill_ip_checksums(b.data, b.off, b.caplen, b.l3_off, b.status)
    for i, (orig, st_) in enumerate(zip(packets, b.status)):
        if st_ in (PktStatus.OK, PktStatus.FRAGMENT):
            assert b.packet(i) == orig  # dpkt computed the original checksum
    assert set(np.unique(b.status)) <= {int(PktStatus.OK), int(PktStatus.FRAGMENT), int(PktStatus.L4_TRUNCATED),
                                        int(PktStatus.BAD_TCP_OFF)}


@given(st.lists(st.binary(max_size=80), max_size=30), st.sampled_from([1, 228]))
def test_fill_ip_checksums_raw_bytes_fuzz(blobs, linktype):
    b = PacketBatch.from_packets(blobs, linktype=linktype).parse()
    before = b.data.copy()
    fill_ip_checksums(b.data, b.off, b.caplen, b.l3_off, b.status)
    changed = np.flatnonzero(b.data != before)
    for pos in changed.tolist():  # only checksum bytes of OK (or FRAGMENT) rows
        i = int(np.searchsorted(b.off, pos, side="right")) - 1
        assert b.status[i] in (PktStatus.OK, PktStatus.FRAGMENT) and pos - b.off[i] - b.l3_off[i] in (10, 11)
    # every OK header now carries a checksum that verifies: read again, none is BAD_IP_CSUM
    again = PacketBatch(b.data.copy(), b.off, b.caplen, linktype=linktype).parse()
    assert np.array_equal(again.status, b.status)


# statuses of rows whose IPv4 header the parse read whole (the rows parse_counts looks at)
_HEADER_READ = {int(PktStatus.OK), int(PktStatus.BAD_IP_CSUM), int(PktStatus.FRAGMENT), int(PktStatus.L4_TRUNCATED),
                int(PktStatus.BAD_TCP_OFF)}


@given(st.lists(st.one_of(ethernet_frame(), mutated(ethernet_frame()), st.binary(max_size=80)), max_size=30))
def test_parse_counts_zero_checksums_and_fragments(frames):
    """parse_counts' two figures, counted from the oracle's rows: headers read whole with checksum field 0, and
    fragments (MF or an offset); when either is 0 the stage skips the pass it would gate, so it must never
    undercount."""
    want_zero = want_frag = 0
    for f in frames:
        o = oracle(f, 1)
        if int(o["status"]) in _HEADER_READ:
            ip = f[o["l3_off"]:]
            want_zero += ip[10:12] == b"\0\0"
            want_frag += (struct.unpack("!H", ip[6:8])[0] & 0x3FFF) != 0
    b = PacketBatch.from_packets(frames)
    assert b.parse_counts() == (want_zero, want_frag)
    if want_zero == 0:  # nothing for the fill to do
        assert fill_ip_checksums(b.data, b.off, b.caplen, b.l3_off, b.status) == 0


def test_fill_ip_checksums_checks_lengths():
    with pytest.raises(ValueError, match="status"):
        fill_ip_checksums(np.zeros(4, np.uint8), np.zeros(1, np.int64), np.zeros(1, np.uint32),
                          np.zeros(1, np.int32), np.zeros(2, np.uint8))


# ---------------------------------------------------------------------------------------- snapped packets
def test_snapped_packet_with_whole_l4_header_is_ok():
    frame = _tcp_frame(payload=b"y" * 200)
    rows = parsed_rows([frame[:60], frame[:54], frame[:40]])
    assert rows[0]["status"] == PktStatus.OK and (rows[0]["sport"], rows[0]["dport"]) == (40000, 443)
    assert rows[1]["status"] == PktStatus.OK  # exactly the 20-byte TCP header
    assert rows[2]["status"] == PktStatus.L4_TRUNCATED


# ---------------------------------------------------------------------------------------- ICMP errors
def _icmp_error(icmp_type, quoted: bytes, outer_src="192.0.2.1", outer_dst="10.1.1.5"):
    icmp = dpkt.icmp.ICMP(type=icmp_type, code=0, data=dpkt.icmp.ICMP.Unreach(data=quoted))
    ip = dpkt.ip.IP(src=socket.inet_aton(outer_src), dst=socket.inet_aton(outer_dst), p=1, data=icmp)
    return bytes(dpkt.ethernet.Ethernet(type=0x0800, data=ip))


@given(st.sampled_from([3, 4, 5, 11, 12]), st.sampled_from(["udp", "tcp", "echo"]), st.integers(8, 40),
       st.integers(1, 65535), st.integers(1, 65535))
def test_icmp_error_carries_the_quoted_flow(icmp_type, kind, quoted_l4, a, b):
    if kind == "echo":
        l4 = bytes(dpkt.icmp.ICMP(type=8, data=dpkt.icmp.ICMP.Echo(id=a, seq=b, data=bytes(32))))
        proto = 1
    elif kind == "udp":
        l4, proto = bytes(dpkt.udp.UDP(sport=a, dport=b, data=bytes(32))), 17
    else:
        l4, proto = bytes(dpkt.tcp.TCP(sport=a, dport=b)), 6
    quoted_ip = dpkt.ip.IP(src=socket.inet_aton("10.1.1.5"), dst=socket.inet_aton("198.51.100.7"), p=proto, data=l4)
    frame = _icmp_error(icmp_type, bytes(quoted_ip)[:20 + quoted_l4])
    (row,) = parsed_rows([frame])
    assert row == {k: int(v) for k, v in oracle(frame).items()}
    assert (row["status"], row["src_ip"], row["dst_ip"], row["proto"]) == (0, 0xC6336407, 0x0A010105, proto)
    assert (row["sport"], row["dport"]) == ((b, a) if kind != "echo" else (a, a))
    b_ = PacketBatch.from_packets([frame, _tcp_frame()]).parse()
    out = np.empty(2, np.uint8)
    assert icmp_errors(b_.data, b_.off, b_.caplen, b_.l3_off, b_.l4_off, b_.proto, b_.tcp_flags, b_.status, out) == 1
    assert list(out) == [1, 0]


@st.composite
def _error_or_not(draw):
    """A frame that is an ICMP error (of any type, quoting TCP with or without flags, UDP or ICMP), or any other."""
    if draw(st.booleans()):
        return draw(mutated(ethernet_frame()))
    proto = draw(st.sampled_from([1, 6, 17]))
    icmp_type = draw(st.sampled_from([0, 3, 4, 5, 8, 11, 12, 13]))
    l4 = bytes(dpkt.tcp.TCP(sport=1, dport=2, flags=draw(st.integers(0, 255)))) if proto == 6 else bytes(8)
    quoted = dpkt.ip.IP(src=socket.inet_aton("10.1.1.5"), dst=socket.inet_aton("198.51.100.7"), p=proto, data=l4)
    return _icmp_error(icmp_type, bytes(quoted)[:draw(st.integers(0, 40))])


@given(st.lists(_error_or_not(), min_size=1, max_size=24))
def test_icmp_errors_marks_what_the_oracle_calls_an_error(frames):
    """An OK packet whose outer IPv4 protocol is ICMP with an error type (3, 4, 5, 11, 12), by the oracle's
    offsets; the kernel's shortcut on the parse columns (TCP with flags is no error) changes nothing."""
    b = PacketBatch.from_packets(frames).parse()
    out = np.empty(len(b), np.uint8)
    k = icmp_errors(b.data, b.off, b.caplen, b.l3_off, b.l4_off, b.proto, b.tcp_flags, b.status, out)
    want = []
    for f in frames:
        o = oracle(f, 1)
        l3, l4 = int(o["l3_off"]), int(o["l4_off"])
        want.append(int(o["status"] == 0 and 0 <= l3 and l4 >= l3 + 20 and l4 < len(f) and f[l3 + 9] == 1
                        and f[l4] in (3, 4, 5, 11, 12)))
    assert out.tolist() == want and k == sum(want)


def test_icmp_error_quoting_too_little_is_plain_icmp():
    frame = _icmp_error(11, bytes(12))  # not a whole IPv4 header
    (row,) = parsed_rows([frame])
    assert (row["status"], row["proto"], row["sport"], row["tcp_flags"]) == (0, 1, 0, 11)
