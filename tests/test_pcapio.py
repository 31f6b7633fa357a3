"""pcap/pcapng reading and classic pcap writing: agreement with dpkt, scapy, editcap and tshark; errors; fuzzing."""
import io
import math
import mmap
import shutil
import struct
import subprocess
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import dpkt
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.utils import PcapNgWriter, RawPcapNgReader, RawPcapReader, wrpcap

from gwlb_fast import PacketBatch
from gwlb_fast import pcapio as pcapio_mod
from gwlb_fast._kernels import pcap as k
from gwlb_fast.errors import PcapError
from gwlb_fast.pcapio import (
    CONVERTED_DST_MAC,
    CONVERTED_SRC_MAC,
    MAX_CAPLEN,
    PcapReader,
    PcapWriter,
    read_pcap,
    write_pcap,
)
from tests.oracles import pcap as O
from tests.shared_data import shared_data
from tests.strategies import ethernet_frame, ipv4_packet

LINKTYPES = [1, 101, 228, 113, 276]
REPO = Path(__file__).resolve().parents[1]
HAVE_TSHARK = shutil.which("tshark") is not None
HAVE_EDITCAP = shutil.which("editcap") is not None
# a fresh temporary file per hypothesis example (the tmp_path fixture is shared by all examples of a test)
fast = settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


# ---------------------------------------------------------------------------------------------------- helpers
MODES = {
    "mmap": {},  # regular files are mapped by default (an empty one cannot be: it is read)
    "read": {"use_mmap": False},
    "read-tiny": {"use_mmap": False, "buffer_size": 7},
}


def read_all(path, mode="mmap", chunk=65536, parse=False):
    """(list of (data, caplen, wirelen, ts_ns, linktype), error-or-None, batches) read non-strictly."""
    r = read_pcap(path, chunk=chunk, parse=parse, strict=False, **MODES[mode])
    batches = list(r)
    rows = []
    for b in batches:
        assert 0 < len(b) <= chunk
        b.validate()
        for i in range(len(b)):
            rows.append((b.packet(i), int(b.caplen[i]), int(b.wirelen[i]), int(b.ts_ns[i]), int(b.linktype[i])))
    return rows, r.error, batches


def as_rows(want):
    return [(w.data, len(w.data), w.wirelen, w.ts_ns, w.linktype) for w in want]


def write_file(tmp_path, data: bytes, name="f.pcap") -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


class TmpFiles:
    """Unique file names inside one tmp_path for hypothesis examples."""

    def __init__(self, root: Path):
        self.root = root
        self.n = 0

    def __call__(self, data: bytes, suffix=".pcap") -> Path:
        self.n += 1
        p = self.root / f"ex{self.n}{suffix}"
        p.write_bytes(data)
        return p


@pytest.fixture
def files(tmp_path):
    return TmpFiles(tmp_path)


# ---------------------------------------------------------------------------------------------------- strategies
@st.composite
def classic_records(draw, nanosecond):
    fmax = 999_999_999 if nanosecond else 999_999
    n = draw(st.integers(0, 12))
    recs = []
    for _ in range(n):
        data = draw(st.binary(max_size=120))
        recs.append((data, len(data) + draw(st.sampled_from([0, 0, 1, 1400])), draw(st.integers(0, 2**32 - 1)),
                     draw(st.integers(0, fmax))))
    return recs


TSRESOLS = [None, 6, 9, 3, 0, 12, 0x80 | 10, 0x80 | 20, 0x80 | 40]


@st.composite
def pcapng_sections(draw, max_sections=3, simple=False):
    """Sections with interfaces and packet/unknown blocks. simple=True: what dpkt and scapy read correctly
    (one section, one interface, EPBs and skipped blocks, no if_tsoffset)."""
    secs = []
    for _ in range(1 if simple else draw(st.integers(1, max_sections))):
        sec = O.Section(big=draw(st.booleans()))
        for _ in range(1 if simple else draw(st.integers(1, 3))):
            sec.interfaces.append((draw(st.sampled_from(LINKTYPES)),
                                   0 if simple else draw(st.sampled_from([0, 0, 64, 65535])),
                                   draw(st.sampled_from(TSRESOLS)),
                                   None if simple else draw(st.sampled_from([None, None, 0, 7, -3]))))
        kinds = ["epb", "epb", "raw"] if simple else ["epb", "epb", "opb", "spb", "raw"]
        for _ in range(draw(st.integers(0, 8))):
            kind = draw(st.sampled_from(kinds))
            if kind == "raw":
                btype = draw(st.sampled_from([4, 5, 0x00000BAD, 0x40000BAD, 9]))
                sec.items.append(("raw", (btype, draw(st.binary(max_size=40)))))
                continue
            ifid = draw(st.integers(0, len(sec.interfaces) - 1))
            data = draw(st.binary(max_size=100))
            wirelen = len(data) if kind == "spb" else len(data) + draw(st.sampled_from([0, 3, 1000]))
            units = draw(st.integers(0, 2**56))
            sec.items.append((kind, ifid, units, data, wirelen))
        secs.append(sec)
    return secs


# ---------------------------------------------------------------------------------------------------- classic pcap
@fast
@given(st.data())
def test_classic_agrees_with_expected_dpkt_and_scapy(files, data):
    nanosecond = data.draw(st.booleans())
    big = data.draw(st.booleans())
    lt = data.draw(st.sampled_from(LINKTYPES))
    recs = data.draw(classic_records(nanosecond))
    path = files(O.classic_pcap(recs, linktype=lt, nanosecond=nanosecond, big=big))
    want = as_rows(O.classic_expected(recs, lt, nanosecond))
    chunk = data.draw(st.sampled_from([1, 3, 65536]))
    mode = data.draw(st.sampled_from(list(MODES)))
    rows, err, _ = read_all(path, mode, chunk)
    assert err is None
    assert rows == want
    with open(path, "rb") as f:
        ref = list(dpkt.pcap.Reader(f))
    assert [buf for _, buf in ref] == [r[0] for r in rows]
    for (ts, _), r in zip(ref, rows):
        assert Decimal(ts) * 10**9 == r[3] if nanosecond else math.isclose(ts, r[3] / 1e9, abs_tol=1e-6)
    meta = list(RawPcapReader(str(path)))
    assert [m.wirelen for _, m in meta] == [r[2] for r in rows]
    assert [m.caplen for _, m in meta] == [r[1] for r in rows]
    assert [m.sec * 10**9 + m.usec * (1 if nanosecond else 1000) for _, m in meta] == [r[3] for r in rows]


def test_classic_header_fields(tmp_path):
    p = write_file(tmp_path, O.classic_pcap([(b"x" * 5, 9, 1, 2)], linktype=113, nanosecond=True, big=True,
                                            snaplen=1234))
    r = read_pcap(p, parse=False)
    assert (r.format, r.linktype, r.snaplen, r.nanosecond) == ("pcap", 113, 1234, True)
    (b,) = list(r)
    assert b.linktype.tolist() == [113] and b.ts_ns.tolist() == [1_000_000_002]
    assert r.packets == 1 and r.bytes == 5 and r.error is None


def test_empty_capture_yields_no_batch(tmp_path):
    for data in (O.classic_pcap([]), O.shb() + O.idb(1)):
        p = write_file(tmp_path, data)
        for mode in MODES:
            assert read_all(p, mode) == ([], None, [])


def test_fcs_bits_in_linktype_field_are_ignored(tmp_path):
    data = bytearray(O.classic_pcap([(b"abc", 3, 0, 0)]))
    data[20:24] = struct.pack("<I", 1 | (0x2 << 28) | (1 << 26))
    assert read_all(write_file(tmp_path, bytes(data)))[0][0][4] == 1


# ---------------------------------------------------------------------------------------------------- pcapng
@fast
@given(st.data())
def test_pcapng_agrees_with_expected(files, data):
    secs = data.draw(pcapng_sections())
    raw, want = O.pcapng(secs)
    path = files(raw, ".pcapng")
    chunk = data.draw(st.sampled_from([1, 2, 65536]))
    mode = data.draw(st.sampled_from(list(MODES)))
    rows, err, _ = read_all(path, mode, chunk)
    assert err is None
    assert rows == as_rows(want)


@fast
@given(st.data())
def test_pcapng_agrees_with_dpkt_and_scapy(files, data):
    secs = data.draw(pcapng_sections(simple=True))
    raw, want = O.pcapng(secs)
    path = files(raw, ".pcapng")
    rows, err, _ = read_all(path, data.draw(st.sampled_from(list(MODES))))
    assert err is None and rows == as_rows(want)
    with open(path, "rb") as f:
        ref = list(dpkt.pcapng.Reader(f))
    assert [buf for _, buf in ref] == [r[0] for r in rows]
    for (ts, _), r in zip(ref, rows):
        if abs(ts) < 9.2e9:  # beyond int64 nanoseconds the reader wraps, as documented
            assert math.isclose(ts, r[3] / 1e9, rel_tol=1e-12, abs_tol=1e-6)
    meta = list(RawPcapNgReader(str(path)))
    assert [bytes(d) for d, _ in meta] == [r[0] for r in rows]
    assert [m.wirelen for _, m in meta] == [r[2] for r in rows]
    assert [m.linktype for _, m in meta] == [r[4] for r in rows]
    exact = [math.floor(Fraction((m.tshigh << 32) | m.tslow) * 10**9 / Fraction(m.tsresol)) for _, m in meta]
    assert [((t + 2**63) % 2**64) - 2**63 for t in exact] == [r[3] for r in rows]


@fast
@given(st.lists(st.tuples(ethernet_frame(), st.integers(0, 2**31), st.integers(0, 999_999)), max_size=10))
def test_reads_scapy_pcapng_writer_output(files, pkts):
    from scapy.layers.l2 import Ether

    path = files(b"", ".pcapng")
    ws = []
    with PcapNgWriter(str(path)) as w:
        for frame, sec, usec in pkts:
            p = Ether(frame)
            p.time = Decimal(sec) + Decimal(usec) / 10**6
            w.write(p)
            ws.append((bytes(p), (sec * 10**6 + usec) * 1000))
    if not pkts:  # scapy writes nothing at all for no packets
        return
    rows, err, _ = read_all(path)
    assert err is None
    # scapy's writer rounds some times differently from what was asked: its own reader is the reference
    meta = [m for _, m in RawPcapNgReader(str(path))]
    want_ts = [((m.tshigh << 32) | m.tslow) * 10**9 // m.tsresol for m in meta]
    assert [(r[0], r[3], r[4]) for r in rows] == [(d, t, 1) for (d, _), t in zip(ws, want_ts)]
    assert all(abs(t - w) <= 1000 for t, (_, w) in zip(want_ts, ws))


@fast
@given(st.lists(st.tuples(ethernet_frame(), st.integers(0, 2**31), st.integers(0, 999_999)), min_size=1,
                max_size=10))
def test_reads_scapy_wrpcap_output(files, pkts):
    from scapy.layers.l2 import Ether

    path = files(b"")
    frames = []
    for frame, sec, usec in pkts:
        p = Ether(frame)
        p.time = Decimal(sec) + Decimal(usec) / 10**6
        frames.append(p)
    wrpcap(str(path), frames)
    rows, err, _ = read_all(path)
    assert err is None
    meta = list(RawPcapReader(str(path)))
    assert [(r[0], r[2], r[3]) for r in rows] == [(bytes(d), m.wirelen, m.sec * 10**9 + m.usec * 1000)
                                                  for d, m in meta]
    assert [r[0] for r in rows] == [bytes(p) for p in frames]


@pytest.mark.skipif(not HAVE_EDITCAP, reason="editcap not installed")
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_pcapng_converted_by_editcap(files, data):
    nanosecond = data.draw(st.booleans())
    recs = data.draw(classic_records(nanosecond))
    lt = data.draw(st.sampled_from(LINKTYPES))
    src = files(O.classic_pcap(recs, linktype=lt, nanosecond=nanosecond, big=data.draw(st.booleans())))
    dst = src.with_suffix(".pcapng")
    subprocess.run(["editcap", "-F", "pcapng", str(src), str(dst)], check=True, capture_output=True)
    assert dst.read_bytes()[:4] == b"\x0a\x0d\x0d\x0a"
    rows, err, _ = read_all(dst)
    assert err is None
    assert rows == as_rows(O.classic_expected(recs, lt, nanosecond))


def test_pcapng_binary_and_fine_resolutions():
    cases = [(0x80 | 0, 3, 3 * 10**9), (0x80 | 1, 3, 1_500_000_000), (0x80 | 64, 2**64 - 1, 999_999_999),
             (0x80 | 127, 2**64 - 1, 0), (12, 10**12 + 999, 10**9), (30, 2**64 - 1, 0), (0, 2, 2 * 10**9),
             (0x80 | 40, 1100, 1), (0x80 | 40, 2**64 - 1, 16777215999999999), (28, 2**64 - 1, 1), (28, 10**19 - 1, 0),
             (0x80 | 63, 2**63 + 2**62, 1_500_000_000), (0x80 | 100, 2**64 - 1, 0)]
    for res, units, ns in cases:
        raw, want = O.pcapng([O.Section(interfaces=[(1, 0, res, None)], items=[("epb", 0, units, b"a", 1)])])
        assert want[0].ts_ns == ns, res
        b = next(read_pcap(io.BytesIO(raw), parse=False))
        assert b.ts_ns.tolist() == [ns], res


def test_pcapng_idb_options_other_than_resolution_are_skipped():
    opts = O.option(2, b"eth0\x00") + O.option(3, b"a description")
    raw = O.shb() + O.idb(101, 0, 9, None, extra_options=opts) + O.epb(0, 5, b"\x45", 1)
    b = next(read_pcap(io.BytesIO(raw), parse=False))
    assert b.ts_ns.tolist() == [5] and b.linktype.tolist() == [101]


def test_pcapng_huge_unknown_block_is_skipped_without_buffering(tmp_path):
    big = O.block(0x00000BAD, bytes(3 << 20))
    raw = O.shb() + O.idb(1) + O.epb(0, 1, b"a", 1) + big + O.epb(0, 2, b"b", 1)
    p = write_file(tmp_path, raw)
    for mode in ("mmap", "read"):
        rows, err, _ = read_all(p, mode, chunk=1)
        assert err is None and [r[0] for r in rows] == [b"a", b"b"]
    r = read_pcap(p, chunk=1, parse=False, use_mmap=False)
    list(r)
    assert r.error is None
    # the same through a non-seekable stream, and a gzip-compressed one (no read(), only readinto())
    r = read_pcap(io.BufferedReader(io.BytesIO(raw)), chunk=1, parse=False)
    assert [b.packet(0) for b in r] == [b"a", b"b"]
    import gzip

    r = read_pcap(write_file(tmp_path, gzip.compress(raw), "f.pcapng.gz"), chunk=1, parse=False)
    assert [b.packet(0) for b in r] == [b"a", b"b"] and r.error is None
    r = read_pcap(write_file(tmp_path, gzip.compress(raw[:-200]), "cut.pcapng.gz"), chunk=1, parse=False,
                  strict=False)
    assert [b.packet(0) for b in r] == [b"a"] and "truncated block" in r.error.problem


# ---------------------------------------------------------------------------------------------------- chunking
@fast
@given(st.data())
def test_same_packets_whatever_chunk_and_buffer(files, data):
    if data.draw(st.booleans()):
        raw, want = O.pcapng(data.draw(pcapng_sections()))
    else:
        recs = data.draw(classic_records(True))
        raw, want = O.classic_pcap(recs, nanosecond=True), O.classic_expected(recs, 1, True)
    path = files(raw)
    chunk = data.draw(st.integers(1, 6))
    bs = data.draw(st.integers(1, 200))
    r = read_pcap(path, chunk=chunk, parse=False, use_mmap=False, buffer_size=bs)
    kept = list(r)  # every batch is kept while later ones are read
    assert all(len(b) == chunk for b in kept[:-1])
    rows = [(b.packet(i), int(b.caplen[i]), int(b.wirelen[i]), int(b.ts_ns[i]), int(b.linktype[i]))
            for b in kept for i in range(len(b))]
    assert rows == as_rows(want)


def test_batches_stay_valid_and_independent(tmp_path):
    recs = [(bytes([i]) * (i + 1), i + 1, i, 0) for i in range(200)]
    p = write_file(tmp_path, O.classic_pcap(recs))
    for opts in MODES.values():
        batches = list(read_pcap(p, chunk=16, parse=False, **opts))
        for b in batches:
            assert b.data.flags.writeable
            b.data[:] = 0xEE  # writing one batch's arena must not change the next ones, nor the file
        again = [x.packet(i) for x in read_pcap(p, chunk=16, parse=False, **opts) for i in range(len(x))]
        assert again == [r[0] for r in recs]


def test_read_buffer_is_bounded_by_chunk(tmp_path):
    recs = [(bytes(100), 100, i, 0) for i in range(20000)]
    p = write_file(tmp_path, O.classic_pcap(recs))
    r = read_pcap(p, chunk=100, parse=False, use_mmap=False)
    sizes = []
    for b in r:
        sizes.append(r._buf.shape[0])
        assert b.data.shape[0] <= 100 * 116
    # once the record size is known: about two chunks of 116-byte records plus one 64 KiB read, never the
    # 2.3 MB file (the first buffer, which serves several batches, is sized from a 1 KiB-per-record guess)
    assert len(sizes) == 200 and max(sizes) <= 2 * 100 * 1024 + (64 << 10)
    assert max(sizes[50:]) < 2 * 100 * 116 + (64 << 10) + 4096


def test_file_objects_and_streams(tmp_path):
    recs = [(b"p%d" % i, 3, i, i) for i in range(10)]
    raw = O.classic_pcap(recs)
    want = [r[0] for r in recs]
    assert [b.packet(i) for b in read_pcap(io.BytesIO(raw), chunk=3, parse=False) for i in range(len(b))] == want
    with open(write_file(tmp_path, raw), "rb") as f:
        f.read(0)
        assert sum(len(b) for b in read_pcap(f, parse=False)) == 10
    # a stream positioned after some junk: offsets in errors count from where reading started
    s = io.BytesIO(b"junk" + raw[:-1])
    s.seek(4)
    r = read_pcap(s, parse=False, strict=False)
    list(r)
    assert r.error.offset == 4 + len(raw) - (16 + 2)


# ---------------------------------------------------------------------------------------------------- parse=True
def test_parse_true_fills_columns(tmp_path):
    frames = [bytes(dpkt.ethernet.Ethernet(type=0x0800, data=dpkt.ip.IP(
        src=b"\x0a\x00\x00\x01", dst=b"\x0a\x00\x00\x02", p=17,
        data=dpkt.udp.UDP(sport=1000 + i, dport=53, data=b"q")))) for i in range(5)]
    p = write_file(tmp_path, O.classic_pcap([(f, len(f), 0, 0) for f in frames]))
    (b,) = list(read_pcap(p))
    ref = PacketBatch.from_packets(frames).parse()
    for col in ("status", "src_ip", "dst_ip", "sport", "dport", "proto", "l3_off", "l4_off"):
        assert np.array_equal(getattr(b, col), getattr(ref, col)), col
    assert b.sport.tolist() == [1000, 1001, 1002, 1003, 1004] and b.src_ip[0] == 0x0A000001


# ---------------------------------------------------------------------------------------------------- errors
def _rec(data, wirelen=None, e="<"):
    return struct.pack(e + "IIII", 0, 0, len(data), len(data) if wirelen is None else wirelen) + data


HDR = O.classic_pcap([])
GOOD = _rec(b"g" * 10)
SHB = O.shb()
IDB = O.idb(1)
EPB = O.epb(0, 1, b"e" * 5, 5)


def _with_len(blk: bytes, n: int) -> bytes:
    return blk[:4] + struct.pack("<I", n) + blk[8:]


ERROR_CASES = {
    # name: (file bytes, offset, words in the message)
    "empty": (b"", 0, "empty file"),
    "short-magic": (b"\xd4\xc3", 0, "before the 4-byte magic"),
    "bad-magic": (b"GIF89a" + bytes(30), 0, "not a pcap or pcapng file"),
    "short-global-header": (HDR[:17], 0, "truncated global header"),
    "bad-version": (HDR[:4] + struct.pack("<H", 3) + HDR[6:], 4, "unsupported pcap version"),
    "bad-linktype": (HDR[:20] + struct.pack("<I", 105), 20, "link type 105 not supported"),
    "short-record-header": (HDR + GOOD + GOOD[:7], 24 + 26, "truncated record header"),
    "short-record": (HDR + GOOD + _rec(b"x" * 100)[:60], 24 + 26, "truncated record: caplen 100"),
    "caplen-over-bound": (O.classic_pcap([], snaplen=0) + struct.pack("<IIII", 0, 0, MAX_CAPLEN + 1, 1), 24,
                          f"exceeds the {MAX_CAPLEN}-byte bound"),
    "caplen-huge": (O.classic_pcap([], snaplen=0xFFFFFFFF) + struct.pack("<IIII", 0, 0, 0xFFFFFFF0, 1), 24,
                    "exceeds the"),
    "ng-short-shb": (SHB[:10], 0, "truncated section header block"),
    "ng-bad-bom": (SHB[:8] + b"\x01\x02\x03\x04" + SHB[12:], 0, "bad byte-order magic"),
    "ng-bad-shb-len": (_with_len(SHB, 26), 0, "bad section header block length 26"),
    "ng-huge-shb": (_with_len(SHB, 1 << 24), 0, "exceeds the"),
    "ng-shb-truncated": (SHB[:-4], 0, "truncated section header block"),
    "ng-shb-trailer": (SHB[:-4] + b"\x00\x00\x00\x00", 0, "does not match its trailing copy"),
    "ng-version": (SHB[:12] + struct.pack("<H", 2) + SHB[14:], 0, "unsupported pcapng version 2.0"),
    "ng-block-len-odd": (SHB + IDB + EPB + _with_len(EPB, 33), len(SHB + IDB + EPB), "bad block length 33"),
    "ng-block-len-small": (SHB + IDB + _with_len(EPB, 8), len(SHB + IDB), "bad block length 8"),
    "ng-trailer": (SHB + IDB + EPB[:-4] + b"\x01\x00\x00\x00", len(SHB + IDB), "trailing copy 1"),
    "ng-truncated-block": (SHB + IDB + EPB + EPB[:-3], len(SHB + IDB + EPB), "truncated block: length"),
    "ng-truncated-header": (SHB + IDB + EPB + EPB[:6], len(SHB + IDB + EPB), "truncated block header"),
    "ng-unknown-iface": (SHB + IDB + O.epb(1, 0, b"x", 1), len(SHB + IDB), "names interface 1"),
    "ng-no-idb": (SHB + EPB, len(SHB), "names interface 0, but the section describes 0"),
    "ng-spb-no-idb": (SHB + O.spb(b"abcd", 4), len(SHB), "names interface 0"),
    "ng-epb-caplen-past-block": (SHB + IDB + EPB[:20] + struct.pack("<I", 9) + EPB[24:], len(SHB + IDB),
                                 "caplen 9 runs past the end of its 40-byte block"),
    "ng-epb-caplen-bound": (SHB + IDB + O.epb(0, 0, bytes(MAX_CAPLEN + 4), 1), len(SHB + IDB),
                            f"caplen {MAX_CAPLEN + 4} exceeds"),
    "ng-epb-huge-len": (SHB + IDB + _with_len(EPB, 1 << 30), len(SHB + IDB), "packet block length"),
    "ng-linktype": (SHB + O.idb(147) + EPB, len(SHB + O.idb(147)), "link type 147 not supported"),
    "ng-idb-too-short": (SHB + O.block(1, b"\x01\x00\x00\x00"), len(SHB), "interface description block too short"),
    "ng-idb-option-overrun": (SHB + O.block(1, struct.pack("<HHIHH", 1, 0, 0, 9, 40)), len(SHB) + 16,
                              "runs past its block"),
    "ng-huge-idb": (SHB + _with_len(IDB, 1 << 24), len(SHB), "interface description block length"),
    "ng-second-shb-bad": (SHB + IDB + EPB + SHB[:8] + b"zzzz", len(SHB + IDB + EPB), "bad byte-order magic"),
}


@pytest.mark.parametrize("name", list(ERROR_CASES))
@pytest.mark.parametrize("mode", list(MODES))
def test_bad_input_raises_pcap_error_naming_file_and_offset(tmp_path, name, mode):
    data, offset, words = ERROR_CASES[name]
    p = write_file(tmp_path, data, f"{name}.pcap")
    with pytest.raises(PcapError) as ei:
        for _ in read_pcap(p, parse=False, **MODES[mode]):
            pass
    e = ei.value
    assert e.path == str(p) and e.offset == offset and words in e.problem, (e.offset, e.problem)
    assert str(p) in str(e) and f"at byte {offset}" in str(e)
    assert isinstance(e, ValueError)


def test_truncated_last_record_delivers_good_packets_then_raises(tmp_path):
    recs = [(bytes([i]) * 20, 20, i, 0) for i in range(10)]
    raw = O.classic_pcap(recs)
    p = write_file(tmp_path, raw[:-5])
    got = []
    r = read_pcap(p, chunk=4, parse=False)
    with pytest.raises(PcapError, match="truncated record") as ei:
        for b in r:
            got += b.packets()
    assert got == [x[0] for x in recs[:9]]
    assert ei.value.offset == 24 + 9 * 36 and r.error is ei.value
    # strict=False: the iteration just stops, the error waits in reader.error
    r = read_pcap(p, chunk=4, parse=True, strict=False)
    n = sum(len(b) for b in r)
    assert n == 9 and r.error is not None and r.error.offset == 24 + 9 * 36 and r.packets == 9
    assert list(r) == []  # exhausted


def test_errors_from_read_pcap_itself(tmp_path):
    with pytest.raises(PcapError):
        read_pcap(write_file(tmp_path, b"nope"))
    with pytest.raises(FileNotFoundError):
        read_pcap(tmp_path / "missing.pcap")
    with pytest.raises(ValueError, match="chunk"):
        read_pcap(io.BytesIO(HDR), chunk=0)
    with pytest.raises(ValueError, match="use_mmap"):
        read_pcap(io.BytesIO(HDR), use_mmap=True)
    with pytest.raises(TypeError):
        read_pcap(12345.0)


# ---------------------------------------------------------------------------------------------------- fuzzing
def _outcome(path, mode, chunk):
    rows, err, _ = read_all(path, mode, chunk)
    return rows, None if err is None else err.offset


def _check_fuzz(path):
    """Only PcapError or success; the same packets and error offset in every mode and chunk size."""
    try:
        outcomes = [_outcome(path, mode, chunk) for mode, chunk in
                    (("mmap", 65536), ("read", 1), ("read-tiny", 2), ("mmap", 3))]
    except PcapError as e:  # raised by read_pcap itself (header problems): every mode agrees on it
        for opts in MODES.values():
            with pytest.raises(PcapError) as again:
                read_pcap(path, parse=True, **opts)
            assert again.value.offset == e.offset
        return
    assert all(o == outcomes[0] for o in outcomes[1:])
    # and the parse kernel copes with whatever came out
    for b in read_pcap(path, parse=True, strict=False):
        assert b.status is not None


@fast
@given(st.binary(max_size=300))
def test_fuzz_raw_bytes(files, data):
    _check_fuzz(files(data))


@fast
@given(st.sampled_from([b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\x3c\x4d", b"\x0a\x0d\x0d\x0a"]), st.binary(max_size=300))
def test_fuzz_raw_bytes_after_a_magic(files, magic, data):
    _check_fuzz(files(magic + data))


@st.composite
def mutated_file(draw):
    if draw(st.booleans()):
        raw, _ = O.pcapng(draw(pcapng_sections(max_sections=2)))
    else:
        ns = draw(st.booleans())
        raw = O.classic_pcap(draw(classic_records(ns)), linktype=draw(st.sampled_from(LINKTYPES)), nanosecond=ns,
                             big=draw(st.booleans()))
    raw = bytearray(raw)
    for _ in range(draw(st.integers(1, 6))):
        how = draw(st.sampled_from(["flip", "flip", "cut", "insert", "len"]))
        if not raw:
            break
        i = draw(st.integers(0, len(raw) - 1))
        if how == "flip":
            raw[i] = draw(st.integers(0, 255))
        elif how == "cut":
            del raw[i:]
        elif how == "insert":
            raw[i:i] = draw(st.binary(min_size=1, max_size=8))
        else:  # a plausible-looking but wrong length field
            v = draw(st.sampled_from([0, 1, 12, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, MAX_CAPLEN + 1]))
            raw[i:i + 4] = struct.pack("<I", v)
    return bytes(raw)


@fast
@given(mutated_file())
def test_fuzz_mutated_valid_files(files, raw):
    _check_fuzz(files(raw))


# ---------------------------------------------------------------------------------------------------- shared captures
@pytest.mark.parametrize("name", ["geneve.pcap", "geneve-gcp.pcap"])
def test_tcpdump_geneve_captures(name):
    root = shared_data()
    if root is None or not (root / "captures" / "tcpdump" / name).exists():
        pytest.skip("shared data folder absent (set GWLB_FAST_DATA)")
    path = root / "captures" / "tcpdump" / name
    batches = list(read_pcap(path, chunk=8))
    b = PacketBatch.concat(batches)
    with open(path, "rb") as f:
        ref = list(dpkt.pcap.Reader(f))
    assert len(b) == len(ref) > 0
    assert b.packets() == [buf for _, buf in ref]
    assert np.allclose(b.ts_ns / 1e9, [ts for ts, _ in ref], rtol=0, atol=1e-6)
    assert (b.status == 0).all() and (b.dport == 6081).all()


# ---------------------------------------------------------------------------------------------------- writing
@st.composite
def batches(draw, linktypes=(1,)):
    pkts = draw(st.lists(st.binary(max_size=200), max_size=15))
    n = len(pkts)
    ts = draw(st.lists(st.integers(0, 2**32 * 10**9 - 1), min_size=n, max_size=n))
    extra = draw(st.lists(st.sampled_from([0, 0, 7, 1500]), min_size=n, max_size=n))
    lts = draw(st.lists(st.sampled_from(linktypes), min_size=n, max_size=n))
    b = PacketBatch.from_packets(pkts, ts_ns=np.array(ts, np.int64), linktype=np.array(lts, np.uint16))
    b.wirelen += np.array(extra, np.uint32)
    return b


@fast
@given(st.lists(batches(), min_size=1, max_size=3), st.booleans(), st.sampled_from(LINKTYPES))
def test_write_reads_back_identically(files, bs, nanosecond, lt):
    for b in bs:
        b.linktype[:] = lt
    path = files(b"")
    assert write_pcap(path, bs, nanosecond=nanosecond) == sum(len(b) for b in bs)
    whole = PacketBatch.concat(bs)
    ts_want = whole.ts_ns if nanosecond else whole.ts_ns // 1000 * 1000
    rows, err, _ = read_all(path)
    assert err is None
    assert rows == [(whole.packet(i), int(whole.caplen[i]), int(whole.wirelen[i]), int(ts_want[i]), lt)
                    for i in range(len(whole))]
    with open(path, "rb") as f:
        r = dpkt.pcap.Reader(f)
        assert r.datalink() == (lt if len(whole) else 1)  # no packet to take a link type from
        ref = list(r)
    assert [buf for _, buf in ref] == whole.packets()
    if nanosecond:
        assert [int(Decimal(ts) * 10**9) for ts, _ in ref] == ts_want.tolist()
    meta = list(RawPcapReader(str(path)))
    assert [m.sec * 10**9 + m.usec * (1 if nanosecond else 1000) for _, m in meta] == ts_want.tolist()
    assert [m.wirelen for _, m in meta] == whole.wirelen.tolist()


def test_writer_streams_and_counts(tmp_path):
    b = PacketBatch.from_packets([b"ab", b"cde"], ts_ns=np.array([1, 2]))
    buf = io.BytesIO()
    with PcapWriter(buf) as w:
        assert w.write(b) == 2
        assert w.write(b[1:]) == 1
        assert w.write(PacketBatch.empty()) == 0
        assert (w.packets, w.bytes) == (3, 8)
    raw = buf.getvalue()
    assert raw[:4] == struct.pack("<I", 0xA1B23C4D) and len(raw) == 24 + 3 * 16 + 8
    assert [p for _, p in dpkt.pcap.Reader(io.BytesIO(raw))] == [b"ab", b"cde", b"cde"]


def test_writer_empty_file_is_valid(tmp_path):
    p = tmp_path / "empty.pcap"
    assert write_pcap(p, []) == 0
    assert len(p.read_bytes()) == 24 and read_all(p) == ([], None, [])
    with PcapWriter(tmp_path / "raw.pcap", linktype=101):
        pass
    assert read_pcap(tmp_path / "raw.pcap").linktype == 101


def test_writer_timestamps_negative_and_microsecond_truncation(tmp_path):
    b = PacketBatch.from_packets([b"a", b"b", b"c"], ts_ns=np.array([-1, 1_999_999_999, 5_000_000_999]))
    p = tmp_path / "t.pcap"
    write_pcap(p, b, nanosecond=False)
    meta = [m for _, m in RawPcapReader(str(p))]
    assert [(m.sec, m.usec) for m in meta] == [(2**32 - 1, 999_999), (1, 999_999), (5, 0)]


def test_writer_snaplen_cuts_long_packets(tmp_path):
    b = PacketBatch.from_packets([bytes(range(100)), b"short"])
    p = tmp_path / "s.pcap"
    write_pcap(p, b, snaplen=64)
    rows, err, _ = read_all(p)
    assert err is None and rows[0][:3] == (bytes(range(64)), 64, 100) and rows[1][0] == b"short"
    with pytest.raises(ValueError, match="snaplen"):
        PcapWriter(tmp_path / "x.pcap", snaplen=4)


def _cooked(ip: bytes, lt: int) -> bytes:
    mac = b"\x00\x11\x22\x33\x44\x55"
    if lt == 113:
        return struct.pack("!HHH", 0, 1, 6) + mac + b"\x00\x00" + struct.pack("!H", 0x0800) + ip
    if lt == 276:
        return struct.pack("!HHIHBB", 0x0800, 0, 2, 1, 0, 6) + mac + b"\x00\x00" + ip
    return ip


@fast
@given(st.lists(st.tuples(ipv4_packet(allow_frag=False), st.sampled_from(LINKTYPES)), min_size=1, max_size=12))
def test_mixed_linktypes_are_written_as_ethernet(files, items):
    lt_list = [lt for _, lt in items]
    pkts = [ethernet_with(ip) if lt == 1 else _cooked(ip, lt) for ip, lt in items]
    b = PacketBatch.from_packets(pkts, linktype=np.array(lt_list, np.uint16))
    b.parse()
    path = files(b"")
    write_pcap(path, b)
    r = read_pcap(path)
    (back,) = list(r)
    mixed = len(set(lt_list)) > 1
    assert r.linktype == (1 if mixed else lt_list[0])
    for col in ("status", "src_ip", "dst_ip", "sport", "dport", "proto", "tcp_flags"):
        assert np.array_equal(getattr(back, col), getattr(b, col)), col
    if not mixed:
        assert back.packets() == pkts
        return
    for i, (ip, lt) in enumerate(items):
        frame = back.packet(i)
        assert frame[14:] == ip
        if lt == 1:
            assert frame == pkts[i]
            continue
        assert frame[:6] == CONVERTED_DST_MAC and frame[12:14] == b"\x08\x00"
        assert frame[6:12] == (CONVERTED_SRC_MAC if lt in (101, 228) else b"\x00\x11\x22\x33\x44\x55")
        assert int(back.wirelen[i]) == len(ip) + 14
    with open(path, "rb") as f:
        # dpkt reads every record as Ethernet carrying IPv4 (the bytes compared raw: dpkt re-serialising an upper
        # layer, e.g. SCTP with its CRC, may change them)
        recs = [buf for _, buf in dpkt.pcap.Reader(f)]
    assert all(dpkt.ethernet.Ethernet(buf).type == dpkt.ethernet.ETH_TYPE_IP for buf in recs)
    assert [buf[14:] for buf in recs] == [ip for ip, _ in items]


def ethernet_with(ip: bytes) -> bytes:
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip


def test_conversion_edge_cases(tmp_path):
    v6 = bytes([0x60]) + bytes(39)
    b = PacketBatch.from_packets([v6, b"", b"\x00" * 5, b"\x00" * 3, ethernet_with(b"\x45" + bytes(19))],
                                 linktype=np.array([101, 101, 113, 276, 1], np.uint16))
    p = tmp_path / "c.pcap"
    write_pcap(p, b)
    rows, err, _ = read_all(p)
    assert err is None
    assert rows[0][0][12:14] == b"\x86\xdd" and rows[0][0][14:] == v6
    assert rows[1][0] == CONVERTED_DST_MAC + CONVERTED_SRC_MAC + b"\x08\x00"
    # cooked packets shorter than their header: a bare Ethernet header, ethertype 0
    assert rows[2][0] == rows[3][0] == CONVERTED_DST_MAC + CONVERTED_SRC_MAC + b"\x00\x00"
    # a file fixed to raw IP cannot take Ethernet packets
    w = PcapWriter(tmp_path / "r.pcap", linktype=101)
    with pytest.raises(ValueError, match="linktype=1"):
        w.write(b)
    w.close()
    # streaming: the first batch decides
    with PcapWriter(tmp_path / "s.pcap") as w:
        w.write(b[:2])
        assert w.linktype == 101
        with pytest.raises(ValueError, match="link type 113"):
            w.write(b[2:])


@pytest.mark.tshark
@pytest.mark.skipif(not HAVE_TSHARK, reason="tshark not installed")
@pytest.mark.parametrize("nanosecond", [True, False])
def test_written_file_reads_back_in_tshark(tmp_path, nanosecond):
    rng = np.random.default_rng(7)
    n = 120
    pkts = [bytes(rng.integers(0, 256, int(rng.integers(14, 300)), dtype=np.uint8)) for _ in range(n)]
    ts = rng.integers(10**18, 2 * 10**18, n, dtype=np.int64)
    lts = np.array([1, 101, 113, 276, 228] * (n // 5), np.uint16)
    b = PacketBatch.from_packets(pkts, ts_ns=ts, linktype=lts)
    b.wirelen += rng.integers(0, 100, n, dtype=np.uint32)
    p = tmp_path / "t.pcap"
    write_pcap(p, [b[:50], b[50:]], nanosecond=nanosecond)
    out = subprocess.run(["tshark", "-r", str(p), "-T", "fields", "-e", "frame.len", "-e", "frame.cap_len",
                          "-e", "frame.time_epoch"], check=True, capture_output=True, text=True).stdout
    lines = [ln.split("\t") for ln in out.splitlines()]
    rows, err, _ = read_all(p)
    assert err is None and len(lines) == len(rows) == n
    for (flen, clen, t), r in zip(lines, rows):
        assert (int(flen), int(clen)) == (r[2], r[1])
        assert int(Decimal(t) * 10**9) == r[3]
    want_ts = ts if nanosecond else ts // 1000 * 1000
    assert [r[3] for r in rows] == want_ts.tolist()


# ---------------------------------------------------------------------------------------------------- kernels
def test_kernels_check_their_arguments():
    buf = np.frombuffer(bytes(64), np.uint8)  # read-only input is fine
    cols = [np.empty(4, np.int64), np.empty(4, np.uint32), np.empty(4, np.uint32), np.empty(4, np.int64)]
    assert k.scan_pcap(buf, 0, 0, 0, False, 1, 100, *cols) == (0, 0, k.SCAN_OK, 0)
    assert k.scan_pcap(buf, 0, 0, 4, False, 1, 100, *cols)[:3] == (4, 64, k.SCAN_OK)
    with pytest.raises(ValueError, match="max_n"):
        k.scan_pcap(buf, 0, 0, 5, False, 1, 100, *cols)
    with pytest.raises(ValueError, match="origin"):
        k.scan_pcap(buf, 65, 0, 1, False, 1, 100, *cols)
    with pytest.raises(ValueError):
        k.scan_pcap(buf, 0, 0, 1, False, 1, 100, cols[0].astype(np.int32), *cols[1:])
    ifs = [np.zeros(1, np.uint16), np.zeros(1, np.uint32), np.ones(1, np.int64), np.zeros(1, np.uint64),
           np.full(1, -1, np.int32), np.zeros(1, np.int64)]
    with pytest.raises(ValueError, match="if_ts_div"):
        k.scan_pcapng(buf, 0, 0, 1, False, *ifs, 100, *cols, np.empty(4, np.uint16))
    ifs[1] = np.zeros(2, np.uint32)
    with pytest.raises(ValueError, match="if_snaplen"):
        k.scan_pcapng(buf, 0, 0, 1, False, *ifs, 100, *cols, np.empty(4, np.uint16))
    empty = PacketBatch.empty()
    assert k.pcap_write_size(empty.data, empty.off, empty.caplen, empty.linktype, 1, 100) == 0
    out = np.empty(0, np.uint8)
    assert k.write_pcap_records(empty.data, empty.off, empty.caplen, empty.wirelen, empty.ts_ns, empty.linktype,
                                1, True, 100, out) == 0
    b = PacketBatch.from_packets([b"abc"])
    with pytest.raises(ValueError, match="out has"):
        k.write_pcap_records(b.data, b.off, b.caplen, b.wirelen, b.ts_ns, b.linktype, 1, True, 100,
                             np.empty(5, np.uint8))
    with pytest.raises(ValueError, match="outside the arena"):
        k.write_pcap_records(b.data[:2], b.off, b.caplen, b.wirelen, b.ts_ns, b.linktype, 1, True, 100,
                             np.empty(19, np.uint8))
    assert k.pcap_write_size(b.data, b.off, b.caplen, np.array([113], np.uint16), 101, 100) == -1
    assert k.pcap_write_size(b.data[:2], b.off, b.caplen, np.array([113], np.uint16), 1, 100) == -1
    with pytest.raises(ValueError, match="lengths"):
        k.pcap_write_size(b.data, b.off[:0], b.caplen, b.linktype, 1, 100)
    assert k.pcapng_write_size(empty.caplen, 100) == 0
    with pytest.raises(ValueError, match="out has"):
        k.write_pcapng_records(b.data, b.off, b.caplen, b.wirelen, b.ts_ns, b.linktype, np.zeros(65536, np.uint32),
                               100, np.empty(5, np.uint8))
    with pytest.raises(ValueError, match="outside the arena"):
        k.write_pcapng_records(b.data[:2], b.off, b.caplen, b.wirelen, b.ts_ns, b.linktype,
                               np.zeros(65536, np.uint32), 100, np.empty(36, np.uint8))
    with pytest.raises(ValueError, match="if_of_linktype"):
        k.write_pcapng_records(b.data, b.off, b.caplen, b.wirelen, b.ts_ns, b.linktype, np.zeros(3, np.uint32),
                               100, np.empty(36, np.uint8))
    with pytest.raises(ValueError, match="outside"):
        k.resync_pcap(buf, len(buf) + 1, False, 10**9, 100, 0, 10, True)
    with pytest.raises(ValueError, match="outside"):
        k.resync_pcapng(buf, -1, False, 1, 100, True)


def test_pcap_reader_is_an_iterator_and_context_manager(tmp_path):
    p = write_file(tmp_path, O.classic_pcap([(b"a", 1, 0, 0)]))
    with read_pcap(p, parse=False) as r:
        assert isinstance(r, PcapReader) and iter(r) is r
        assert "PcapReader" in repr(r)
    assert list(r) == []  # closed


# ---------------------------------------------------------------------------------------------------- pcapng writing
def _pcapng_batch(n=90, seed=11, linktypes=(1,)):
    rng = np.random.default_rng(seed)
    pkts = [bytes(rng.integers(0, 256, int(rng.integers(1, 300)), dtype=np.uint8)) for _ in range(n)]
    ts = np.sort(rng.integers(10**18, 2 * 10**18, n, dtype=np.int64))
    lts = np.array([linktypes[i % len(linktypes)] for i in range(n)], np.uint16)
    b = PacketBatch.from_packets(pkts, ts_ns=ts, linktype=lts)
    b.wirelen += rng.integers(0, 100, n, dtype=np.uint32)
    return b


def test_pcapng_output_reads_back_in_dpkt_and_scapy_with_nanoseconds(tmp_path):
    b = _pcapng_batch()
    p = tmp_path / "out.pcapng"
    assert write_pcap(p, [b[:40], b[40:]]) == len(b)
    raw = p.read_bytes()
    assert struct.unpack_from("<I", raw)[0] == 0x0A0D0D0A
    with open(p, "rb") as f:
        ref = list(dpkt.pcapng.Reader(f))
    assert [buf for _, buf in ref] == b.packets()
    # dpkt gives float seconds; the block's 64-bit count in ns (if_tsresol 9) is checked through scapy's raw reader
    assert np.allclose([t for t, _ in ref], b.ts_ns / 1e9, rtol=0, atol=1e-6)
    with RawPcapNgReader(str(p)) as r:
        recs = list(r)
    assert [d for d, _ in recs] == b.packets()
    assert [(m.tshigh << 32) | m.tslow for _, m in recs] == b.ts_ns.tolist()
    assert [m.wirelen for _, m in recs] == b.wirelen.tolist()
    assert {m.tsresol for _, m in recs} == {1_000_000_000}
    rows, err, _ = read_all(p)
    assert err is None and [r[3] for r in rows] == b.ts_ns.tolist()


def test_pcapng_one_interface_per_link_type_no_conversion(tmp_path):
    b = _pcapng_batch(linktypes=(1, 113, 228, 0))
    p = tmp_path / "mixed.pcapng"
    with PcapWriter(p) as w:
        assert w.format == "pcapng"
        w.write(b[:3])
        w.write(b[3:])
    assert w.bytes == int(b.caplen.sum())
    raw = p.read_bytes()
    idbs, pos = [], 0
    while pos < len(raw):
        btype, blen = struct.unpack_from("<II", raw, pos)
        if btype == 1:
            idbs.append(raw[pos: pos + blen])
        pos += blen
    assert [struct.unpack_from("<H", x, 8)[0] for x in idbs] == [1, 113, 228, 0]
    assert all(x[16:24] == struct.pack("<HHB3x", 9, 1, 9) for x in idbs)  # if_tsresol = 9
    rows, err, _ = read_all(p)
    assert err is None
    assert [(r[0], r[4], r[3]) for r in rows] == list(zip(b.packets(), b.linktype.tolist(), b.ts_ns.tolist()))


@pytest.mark.tshark
@pytest.mark.skipif(not HAVE_TSHARK, reason="tshark not installed")
def test_pcapng_output_reads_back_in_tshark(tmp_path):
    b = _pcapng_batch(linktypes=(1, 113))
    p = tmp_path / "t.pcapng"
    write_pcap(p, b)
    out = subprocess.run(["tshark", "-r", str(p), "-T", "fields", "-e", "frame.len", "-e", "frame.cap_len",
                          "-e", "frame.time_epoch", "-e", "frame.interface_id"], check=True, capture_output=True,
                         text=True).stdout
    lines = [ln.split("\t") for ln in out.splitlines()]
    assert len(lines) == len(b)
    for (flen, clen, t, ifid), i in zip(lines, range(len(b))):
        assert (int(flen), int(clen)) == (int(b.wirelen[i]), int(b.caplen[i]))
        assert int(Decimal(t) * 10**9) == int(b.ts_ns[i])
        assert int(ifid) == i % 2
    info = subprocess.run(["capinfos", "-t", "-o", str(p)], check=True, capture_output=True, text=True).stdout
    assert "pcapng" in info and "True" in info.split("Strict time order:")[1].splitlines()[0]


def test_format_follows_the_name_and_can_be_forced(tmp_path):
    b = _pcapng_batch(n=3)
    for name, magic in (("a.pcap", MAGIC_NS_LE), ("a.PCAPNG", SHB_LE), ("a.cap", MAGIC_NS_LE)):
        write_pcap(tmp_path / name, b)
        assert (tmp_path / name).read_bytes()[:4] == magic, name
    write_pcap(tmp_path / "forced.pcap", b, format="pcapng")
    assert (tmp_path / "forced.pcap").read_bytes()[:4] == SHB_LE
    with pytest.raises(ValueError, match="format"):
        PcapWriter(tmp_path / "x.pcap", format="erf")
    buf = io.BytesIO()
    write_pcap(buf, b, format="pcapng")
    assert buf.getvalue()[:4] == SHB_LE
    assert [x.packets() for x in read_pcap(io.BytesIO(buf.getvalue()), parse=False)] == [b.packets()]


MAGIC_NS_LE = struct.pack("<I", 0xA1B23C4D)
SHB_LE = struct.pack("<I", 0x0A0D0D0A)


# ---------------------------------------------------------------------------------------------------- atomic outputs
def test_writer_renames_into_place_only_when_complete(tmp_path):
    p = tmp_path / "out.pcap"
    p.write_bytes(b"old contents")
    b = _pcapng_batch(n=5)
    w = PcapWriter(p)
    w.write(b)
    assert p.read_bytes() == b"old contents"  # not yet
    assert len(list(tmp_path.glob(".out.pcap.*.part"))) == 1
    w.close()
    assert [x.packets() for x in read_pcap(p)] == [b.packets()]
    assert list(tmp_path.glob("*.part")) == [] and list(tmp_path.glob(".*")) == []
    # an error inside the with block (or abort) leaves the destination as it was and no temporary file
    with pytest.raises(RuntimeError), PcapWriter(p) as w:
        w.write(b[:1])
        raise RuntimeError("boom")
    assert [x.packets() for x in read_pcap(p)] == [b.packets()]
    assert sorted(x.name for x in tmp_path.iterdir()) == ["out.pcap"]


def test_output_file_permissions_follow_the_umask(tmp_path):
    import os

    from gwlb_fast.outputs.outfiles import OutputFile

    old = os.umask(0o027)
    try:
        with OutputFile(tmp_path / "f.bin") as f:
            f.file.write(b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "f.bin").stat().st_mode & 0o777 == 0o640
    with pytest.raises(IsADirectoryError):
        OutputFile(tmp_path)


def test_refuse_overlap(tmp_path):
    import os

    from gwlb_fast.errors import ConfigError
    from gwlb_fast.outputs.outfiles import refuse_overlap, same_file

    a = tmp_path / "a.pcap"
    a.write_bytes(b"a")
    (tmp_path / "sym.pcap").symlink_to(a)
    os.link(a, tmp_path / "hard.pcap")
    (tmp_path / "sub").mkdir()
    for out in (a, tmp_path / "sym.pcap", tmp_path / "hard.pcap", tmp_path / "sub" / ".." / "a.pcap"):
        assert same_file(out, a)
        with pytest.raises(ConfigError, match="refusing to overwrite"):
            refuse_overlap([a, None], [tmp_path / "b.pcap", out])
    refuse_overlap([a, io.BytesIO()], [tmp_path / "b.pcap", None])
    assert not same_file(tmp_path / "b.pcap", a)
    with pytest.raises(ConfigError, match="named twice"):
        refuse_overlap([], [tmp_path / "c.pcap", tmp_path / "sub" / ".." / "c.pcap"])
    assert a.read_bytes() == b"a"


# ---------------------------------------------------------------------------------------------------- time order
@fast
@given(st.lists(st.lists(st.integers(0, 50), max_size=30), min_size=1, max_size=6), st.integers(0, 40))
def test_ordered_writer_sorts_within_the_window_and_loses_nothing(files, flushes, window):
    """Pieces whose timestamps go back by at most ``window`` behind the watermark come out sorted; nothing is
    lost; ``late`` counts exactly the packets that a bounded buffer could not put in order."""
    from gwlb_fast.pcapio import OrderedWriter

    path = files(b"")
    w = OrderedWriter(PcapWriter(path))
    sent = []
    base = 0
    for j, ts in enumerate(flushes):
        ts = [base + t for t in ts]
        pkts = [struct.pack("<II", j, i) for i in range(len(ts))]
        sent += list(zip(ts, pkts))
        half = len(ts) // 2
        parts = [PacketBatch.from_packets(pkts[:half], ts_ns=np.array(ts[:half], np.int64)),
                 PacketBatch.from_packets(pkts[half:], ts_ns=np.array(ts[half:], np.int64))]
        top = max(ts, default=base)
        w.write(parts, top - window)
        base = max(base, top - window)  # later pieces are never earlier than the watermark
    w.close()
    rows, err, _ = read_all(path)
    got = [(r[3], r[0]) for r in rows]
    assert err is None and sorted(got) == sorted(sent)
    assert w.late == 0 and [t for t, _ in got] == sorted(t for t, _ in got)
    # equal timestamps keep the order they arrived in (stable)
    for t in {t for t, _ in sent}:
        assert [p for tt, p in got if tt == t] == [p for tt, p in sent if tt == t]


def test_ordered_writer_counts_what_arrives_too_late(tmp_path):
    from gwlb_fast.pcapio import OrderedWriter

    p = tmp_path / "late.pcap"
    w = OrderedWriter(PcapWriter(p), max_held=2)
    mk = lambda ts: PacketBatch.from_packets([bytes([t]) for t in ts], ts_ns=np.array(ts, np.int64))
    w.write(mk([5, 1, 3, 9, 7]), 4)  # 1, 3 written; 5, 7, 9 held -> only 2 may be held: 5 goes too
    w.write(mk([2]), None)  # 2 is before 5, already written
    w.close()
    assert [r[3] for r in read_all(p)[0]] == [1, 3, 5, 2, 7, 9]
    assert w.late == 1


# ---------------------------------------------------------------------------------------------------- reading more
def test_caplen_above_the_snaplen_is_read(tmp_path):
    recs = [(b"a" * 100, 100, 1, 0), (b"b" * 3000, 3000, 2, 0), (b"c" * 60, 60, 3, 0)]
    p = write_file(tmp_path, O.classic_pcap(recs, snaplen=64))
    for mode in MODES:
        rows, err, _ = read_all(p, mode)
        assert err is None and [r[0] for r in rows] == [d for d, *_ in recs], mode
    big = (bytes(MAX_CAPLEN), MAX_CAPLEN, 4, 0)
    p = write_file(tmp_path, O.classic_pcap(recs + [big], snaplen=64), "max.pcap")
    rows, err, _ = read_all(p)
    assert err is None and len(rows) == 4 and rows[3][1] == MAX_CAPLEN


@pytest.mark.tshark
@pytest.mark.skipif(not HAVE_TSHARK, reason="tshark not installed")
def test_caplen_above_the_snaplen_agrees_with_tshark(tmp_path):
    recs = [(bytes([i]) * (50 + 700 * i), 50 + 700 * i, i, 0) for i in range(5)]
    p = write_file(tmp_path, O.classic_pcap(recs, snaplen=100))
    out = subprocess.run(["tshark", "-r", str(p), "-T", "fields", "-e", "frame.cap_len"], check=True,
                         capture_output=True, text=True).stdout.split()
    rows, err, _ = read_all(p)
    assert err is None and [r[1] for r in rows] == [int(x) for x in out] == [len(d) for d, *_ in recs]


def _records(n, size=40, sec0=1_700_000_000):
    return [(bytes([i % 256]) * size, size, sec0 + i, 1000 * i) for i in range(n)]


@pytest.mark.parametrize("mode", list(MODES))
def test_corrupt_classic_record_mid_file_resyncs_and_counts(tmp_path, mode):
    recs = _records(30)
    good = O.classic_pcap(recs)
    at = 24 + 10 * (16 + 40)  # record 10's header
    bad = bytearray(good)
    bad[at + 8: at + 12] = struct.pack("<I", 0x7FFFFFF0)  # its caplen: far beyond the maximum
    p = write_file(tmp_path, bytes(bad))
    r = read_pcap(p, parse=False, strict=True, **MODES[mode])
    got = [x for b in r for x in b.packets()]
    assert got == [d for d, *_ in recs[:10] + recs[11:]]
    assert r.error is None and r.skipped_records == 1 and r.skipped_bytes == 16 + 40
    # with resync=False the reader stops there, with the position
    r = read_pcap(p, parse=False, strict=False, resync=False, **MODES[mode])
    got = [x for b in r for x in b.packets()]
    assert got == [d for d, *_ in recs[:10]]
    assert r.error.offset == at and "caplen 2147483632 exceeds" in r.error.problem


def test_corrupt_record_with_nothing_valid_after_stops_with_position(tmp_path):
    recs = _records(5)
    good = O.classic_pcap(recs)
    at = 24 + 3 * 56
    p = write_file(tmp_path, good[:at] + struct.pack("<IIII", 1, 2, 0xFFFFFF00, 4) + b"\xff" * 300)
    r = read_pcap(p, parse=False, strict=False)
    assert [x for b in r for x in b.packets()] == [d for d, *_ in recs[:3]]
    assert r.error.offset == at and "no valid record after it" in r.error.problem
    assert r.skipped_records == 0


@pytest.mark.parametrize("mode", list(MODES))
def test_corrupt_pcapng_block_mid_file_resyncs_and_counts(tmp_path, mode):
    blocks = [O.epb(0, 1000 * i, bytes([i]) * (10 + i), 10 + i) for i in range(12)]
    bad = bytearray(blocks[5])
    bad[4:8] = struct.pack("<I", 0x12345)  # a block length that disagrees with its trailer, and is not / 4
    data = O.shb() + O.idb(1) + b"".join(blocks[:5]) + bytes(bad) + b"".join(blocks[6:])
    p = write_file(tmp_path, data, "c.pcapng")
    r = read_pcap(p, parse=False, **MODES[mode])
    got = [x for b in r for x in b.packets()]
    assert got == [bytes([i]) * (10 + i) for i in range(12) if i != 5]
    assert r.skipped_records == 1 and r.skipped_bytes == len(blocks[5])


def test_resync_kernels_need_two_plausible_records():
    recs = _records(3)
    body = O.classic_pcap(recs)[24:]
    buf = np.frombuffer(b"\x00" * 7 + body, np.uint8)
    assert k.resync_pcap(buf, 0, False, 10**6, MAX_CAPLEN, 0, 2**32 - 1, True)[0] == 7
    # only a header whose timestamp lies in the window counts
    assert k.resync_pcap(buf, 0, False, 10**6, MAX_CAPLEN, 0, 10, True) == (-1, len(buf))
    # not at EOF and the check needs more bytes: it says where to go on from
    part = buf[: 7 + 16 + 20]
    found, searched = k.resync_pcap(part, 0, False, 10**6, MAX_CAPLEN, 0, 2**32 - 1, False)
    assert found == -1 and searched <= 7


@fast
@given(st.binary(max_size=400), st.integers(0, 399), st.booleans())
def test_resync_fuzz_stays_in_bounds(data, pos, eof):
    buf = np.frombuffer(data, np.uint8)
    pos = min(pos, len(data))
    f, s = k.resync_pcap(buf, pos, False, 10**9, MAX_CAPLEN, 0, 2**32 - 1, eof)
    assert f == -1 or pos <= f <= len(data) - 16
    f, s = k.resync_pcapng(buf, pos, True, 2, 1 << 20, eof)
    assert f == -1 or pos <= f <= len(data) - 12
    assert pos <= s <= len(data)


@pytest.mark.parametrize("inner", ["pcap", "pcapng"])
def test_gzip_capture_reads_like_the_plain_one(tmp_path, inner):
    import gzip

    b = _pcapng_batch(n=20000, seed=3)
    plain = tmp_path / f"c.{inner}"
    write_pcap(plain, b)
    gz = tmp_path / f"c.{inner}.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    want = [(x.packets(), x.ts_ns.tolist()) for x in read_pcap(plain, chunk=3000)]
    r = read_pcap(gz, chunk=3000)
    got = [(x.packets(), x.ts_ns.tolist()) for x in r]
    assert r.compressed and got == want
    # streamed: the buffer holds about two chunks, not the file
    r = read_pcap(gz, chunk=50, parse=False)
    next(r)
    assert r._buf.shape[0] < plain.stat().st_size / 4
    r.close()
    with open(gz, "rb") as f:
        assert [x.packets() for x in read_pcap(f, chunk=3000)] == [w for w, _ in want]
    # several members, as `cat a.gz b.gz` makes, read as one stream
    two = tmp_path / "two.pcap.gz"
    raw = plain.read_bytes()
    two.write_bytes(gzip.compress(raw[:1000]) + gzip.compress(raw[1000:]))
    assert [x.packets() for x in read_pcap(two, chunk=3000)] == [w for w, _ in want]


def test_damaged_gzip_delivers_what_came_before_then_one_error(tmp_path):
    import gzip

    b = _pcapng_batch(n=3000, seed=4)
    plain = tmp_path / "c.pcap"
    write_pcap(plain, b)
    gz = gzip.compress(plain.read_bytes())
    p = write_file(tmp_path, gz[: len(gz) // 2], "cut.pcap.gz")
    r = read_pcap(p, parse=False, strict=False)
    got = [x for y in r for x in y.packets()]
    assert 0 < len(got) < len(b) and got == b.packets()[: len(got)]
    assert r.error is not None and "gzip" in r.error.problem
    with pytest.raises(PcapError, match="gzip"):
        read_pcap(write_file(tmp_path, gz[:12], "tiny.gz"))


def _short_link(linktype, pkt):
    if linktype == 0:
        return struct.pack("<I", 2) + pkt  # host order of a little-endian capturer
    if linktype == 108:
        return struct.pack(">I", 2) + pkt
    return b"\xff\x03\x00\x21" + pkt


@pytest.mark.parametrize("linktype", [0, 108, 9])
def test_null_loopback_and_ppp_captures(tmp_path, linktype):
    import dpkt as d

    pkts = []
    for i in range(20):
        ip = d.ip.IP(src=bytes([10, 1, 1, i + 1]), dst=bytes([93, 184, 216, 34]), p=6,
                     data=d.tcp.TCP(sport=40000 + i, dport=443, flags=2))
        ip.len = len(bytes(ip))
        pkts.append(_short_link(linktype, bytes(ip)))
    p = tmp_path / f"lt{linktype}.pcap"
    with open(p, "wb") as f:
        w = d.pcap.Writer(f, linktype=linktype)
        for i, x in enumerate(pkts):
            w.writepkt(x, ts=1_700_000_000 + i / 10)
    b = PacketBatch.concat(list(read_pcap(p)))
    assert (b.linktype == linktype).all() and (b.status == 0).all()
    assert b.sport.tolist() == [40000 + i for i in range(20)] and (b.dport == 443).all()
    if HAVE_TSHARK:
        out = subprocess.run(["tshark", "-r", str(p), "-T", "fields", "-e", "ip.src", "-e", "tcp.srcport"],
                             check=True, capture_output=True, text=True).stdout.split("\n")[:20]
        from gwlb_fast.outputs.report import ip_strs

        assert [ln.split("\t") for ln in out] == [[s, str(sp)] for s, sp in zip(ip_strs(b.src_ip),
                                                                                b.sport.tolist())]
    # a classic Ethernet output converts them (IPv4 ethertype), pcapng keeps them
    conv = tmp_path / "conv.pcap"
    write_pcap(conv, b, linktype=1)
    c = PacketBatch.concat(list(read_pcap(conv)))
    assert (c.linktype == 1).all() and (c.status == 0).all() and c.src_ip.tolist() == b.src_ip.tolist()
    assert all(x[12:14] == b"\x08\x00" and x[14:] == y[4:] for x, y in zip(c.packets(), pkts))


@fast
@given(st.lists(batches(linktypes=(1, 113, 228, 0, 9)), min_size=1, max_size=3), st.sampled_from([64, 262144]))
def test_pcapng_write_reads_back_identically(files, bs, snaplen):
    path = files(b"", ".pcapng")
    assert write_pcap(path, bs, snaplen=snaplen) == sum(len(b) for b in bs)
    whole = PacketBatch.concat(bs)
    rows, err, _ = read_all(path)
    assert err is None and len(rows) == len(whole)
    for i, r in enumerate(rows):
        data = whole.packet(i)[:snaplen]
        assert r == (data, len(data), max(int(whole.wirelen[i]), len(data)), int(whole.ts_ns[i]),
                     int(whole.linktype[i]))
    with RawPcapNgReader(str(path)) as rr:
        assert [d for d, _ in rr] == [r[0] for r in rows]


# ------------------------------------------------------------------------------------------------- write-behind
def _big_batches(k=4, n=1500, size=1400):
    """k batches of n packets of `size` bytes: each gather buffer over the write-behind size"""
    rng = np.random.default_rng(5)
    out = []
    for j in range(k):
        pkts = [rng.integers(0, 256, size, dtype=np.uint8).tobytes() for _ in range(n)]
        out.append(PacketBatch.from_packets(pkts, ts_ns=np.arange(n, dtype=np.int64) + j * n))
    assert n * (size + 16) >= pcapio_mod._WRITE_BEHIND_MIN
    return out


@pytest.mark.parametrize("name", ["out.pcap", "out.pcapng"])
def test_large_batches_written_behind_read_back_in_order(tmp_path, name):
    """Batches big enough to be written while the caller goes on (two gather buffers in turn) land whole and in
    order: dpkt reads back every packet of every batch."""
    batches = _big_batches()
    p = tmp_path / name
    with PcapWriter(p) as w:
        for b in batches:
            w.write(b)
    with open(p, "rb") as f:
        r = dpkt.pcapng.Reader(f) if name.endswith("pcapng") else dpkt.pcap.Reader(f)
        got = [bytes(buf) for _, buf in r]
    assert got == [x for b in batches for x in b.packets()]


@pytest.mark.parametrize("name", ["out.pcap", "out.pcapng"])
def test_batches_written_in_pieces_are_the_same_bytes(tmp_path, monkeypatch, name):
    """A batch gathered in many small pieces, two buffers at a time (written by the writer's thread for a path, at
    once for a file object), gives the bytes of one written whole."""
    batches = _big_batches(k=3, n=800)
    whole = tmp_path / f"whole-{name}"
    monkeypatch.setattr(pcapio_mod, "_WRITE_PIECE", 1 << 30)
    with PcapWriter(whole) as w:
        for b in batches:
            w.write(b)
    monkeypatch.setattr(pcapio_mod, "_WRITE_PIECE", 10_000)
    monkeypatch.setattr(pcapio_mod, "_IN_FLIGHT", 2)
    monkeypatch.setattr(pcapio_mod, "_WRITE_BEHIND_MIN", 1)
    pieces, sizes = tmp_path / name, []
    real = PcapWriter._write_all_now

    def spy(self, buf):
        sizes.append(len(buf))
        real(self, buf)

    monkeypatch.setattr(PcapWriter, "_write_all_now", spy)
    with PcapWriter(pieces) as w:
        for b in batches:
            w.write(b)
    assert pieces.read_bytes() == whole.read_bytes()
    assert len(sizes) > 3 * 100 and max(sizes) < 12_000  # about 800 * 1416 / 10,000 pieces a batch
    buf = io.BytesIO()
    with PcapWriter(buf, format=name.rsplit(".", 1)[1]) as w:
        for b in batches:
            w.write(b)
    assert buf.getvalue() == whole.read_bytes()


def test_write_behind_error_is_raised_and_nothing_is_left(tmp_path, monkeypatch):
    """A write that fails in the background (a full disk) is raised by the next write, and the temporary file is
    removed with the destination left as it was."""
    p = tmp_path / "out.pcap"
    p.write_bytes(b"old")
    batches = _big_batches(k=3)
    w = PcapWriter(p)
    real, calls = PcapWriter._write_all_now, []

    def failing(self, buf):
        calls.append(len(buf))
        if len(calls) == 2:  # the header went through; the first batch's write fails
            raise OSError(28, "No space left on device")
        real(self, buf)

    monkeypatch.setattr(PcapWriter, "_write_all_now", failing)
    w.write(batches[0])
    with pytest.raises(OSError, match="No space left"):
        w.write(batches[1])
        w.close()
    w.abort()
    assert p.read_bytes() == b"old"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["out.pcap"]


def test_write_behind_error_at_close(tmp_path, monkeypatch):
    p = tmp_path / "out.pcap"
    batches = _big_batches(k=1)

    def failing(self, buf):
        if len(buf) > 100:
            raise OSError(5, "Input/output error")
        self._f.write(buf)

    monkeypatch.setattr(PcapWriter, "_write_all_now", failing)
    w = PcapWriter(p)
    w.write(batches[0])
    with pytest.raises(OSError, match="Input/output"):
        w.close()
    assert not p.exists() and list(tmp_path.iterdir()) == []



def test_released_pages_of_done_chunks_are_given_back(tmp_path):
    """With release_pages (as Pipeline.run sets it), asking for a chunk gives the mapped pages of every chunk before
    it back to the kernel (MADV_DONTNEED), none of its own, so resident memory does not grow with the capture; the
    bytes of a released chunk still read right (the map is of the file, never written)."""
    if not hasattr(mmap, "MADV_DONTNEED"):
        pytest.skip("no madvise here")
    records = [(bytes([i % 251]) * 1400, 1400, i, 0) for i in range(1200)]
    p = write_file(tmp_path, O.classic_pcap(records, linktype=1))
    r = read_pcap(p, chunk=400, parse=False)
    r.release_pages = True
    advised = []

    class Map:  # the reader's map, its advice recorded
        def __init__(self, mm):
            self.mm = mm

        def madvise(self, advice, start, length):
            advised.append((advice, start, length))
            return self.mm.madvise(advice, start, length)

    r._mm = Map(r._mm)
    batches, done = [], 0
    for b in r:
        start = r.offset - b.data.nbytes  # file offset of this chunk's first record
        assert all(a == mmap.MADV_DONTNEED and s + n <= start for a, s, n in advised)
        released = sum(n for _, _, n in advised)
        assert released == done // mmap.PAGESIZE * mmap.PAGESIZE  # every whole page before it, once
        done = r.offset
        batches.append(b)
    assert len(batches) == 3 and advised
    first = batches[0]
    assert bytes(first.data[first.off[7]:first.off[7] + 1400]) == bytes([7]) * 1400


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 90), st.sampled_from([1, 101, 113, 228, 276, 0, 9])), max_size=30),
       st.integers(14, 80))
def test_record_sizes_are_the_records_write_pcap_records_makes(pkts, snaplen):
    """pcap_record_sizes: each record's size, header included, as the records write_pcap_records writes say (read
    back in plain Python from their headers); the sum is pcap_write_size."""
    data = bytes((7 * i + 3) % 256 for i in range(sum(n for n, _ in pkts) + 1))
    caplen = np.array([n for n, _ in pkts], np.uint32)
    off = np.zeros(len(pkts), np.int64)
    if len(pkts):
        np.cumsum(caplen[:-1], dtype=np.int64, out=off[1:])
    lt = np.array([t for _, t in pkts], np.uint16)
    buf = np.frombuffer(data, np.uint8)
    sizes = np.zeros(len(pkts), np.uint32)
    total = k.pcap_record_sizes(buf, off, caplen, lt, 1, snaplen, sizes)
    assert total == k.pcap_write_size(buf, off, caplen, lt, 1, snaplen)
    out = np.zeros(total, np.uint8)
    k.write_pcap_records(buf, off, caplen, caplen, np.arange(len(pkts), dtype=np.int64), lt, 1, True, snaplen, out)
    raw, pos, want = out.tobytes(), 0, []
    while pos < len(raw):
        incl = struct.unpack_from("<I", raw, pos + 8)[0]
        want.append(16 + incl)
        pos += 16 + incl
    assert sizes.tolist() == want


def test_record_sizes_name_the_packet_that_cannot_be_converted():
    buf = np.zeros(64, np.uint8)
    sizes = np.zeros(3, np.uint32)
    got = k.pcap_record_sizes(buf, np.array([0, 10, 20], np.int64), np.full(3, 10, np.uint32),
                              np.array([1, 147, 1], np.uint16), 1, 65535, sizes)
    assert got == -2 and sizes[0] == 26
    with pytest.raises(ValueError):
        k.pcap_record_sizes(buf, np.zeros(2, np.int64), np.full(2, 10, np.uint32), np.ones(2, np.uint16), 1,
                            65535, np.zeros(1, np.uint32))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(min_size=1, max_size=3000), st.data())
def test_write_pieces_writes_the_slices_in_order(tmp_path, blob, data):
    """write_pieces: the file holds the pieces in their order, as a plain join of the slices (adjacent ones
    merged, empty ones, repeats and more pieces than one writev takes included)."""
    m = data.draw(st.integers(0, 2500))
    starts = data.draw(st.lists(st.integers(0, len(blob) - 1), min_size=m, max_size=m))
    lens = [data.draw(st.integers(0, min(40, len(blob) - s))) for s in starts]
    if m and data.draw(st.booleans()):  # runs of adjacent pieces
        starts = [min(sum(lens[:i]) % len(blob), len(blob) - lens[i]) for i in range(m)]
    path = tmp_path / "pieces.bin"
    with open(path, "wb", buffering=0) as fh:
        got = k.write_pieces(fh.fileno(), np.frombuffer(blob, np.uint8), np.array(starts, np.int64),
                             np.array(lens, np.uint32))
    want = b"".join(blob[s:s + n] for s, n in zip(starts, lens))
    assert got == len(want) and path.read_bytes() == want


def test_write_pieces_checks_every_piece_first_and_raises_the_write_error(tmp_path):
    path = tmp_path / "p.bin"
    buf = np.arange(10, dtype=np.uint8)
    with open(path, "wb", buffering=0) as fh:
        with pytest.raises(ValueError, match="piece 1"):
            k.write_pieces(fh.fileno(), buf, np.array([0, 8], np.int64), np.array([2, 3], np.uint32))
        with pytest.raises(ValueError):
            k.write_pieces(fh.fileno(), buf, np.array([0], np.int64), np.array([2, 3], np.uint32))
    assert path.read_bytes() == b""
    with open(path, "rb") as fh, pytest.raises(OSError):
        k.write_pieces(fh.fileno(), buf, np.array([0], np.int64), np.array([4], np.uint32))


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 120), st.integers(16, 40), st.integers(-2, 60), st.sampled_from([1, 1, 1, 101])),
                min_size=1, max_size=40),
       st.integers(60, 200), st.booleans(), st.integers(-3 * 10**9, 4 * 10**9))
def test_framed_records_are_the_gathered_records(pkts, snaplen, nanosecond, t0):
    """frame_pcap_records + the stretches of the arena: byte for byte the records write_pcap_records gathers, for
    packets that qualify (Ethernet, within the snap length, room before each); a packet that does not qualify
    (another link type, cut by the snap length, too little room) is named and nothing is written."""
    gaps = [g for _, g, _, _ in pkts]
    caplen = np.array([n for n, _, _, _ in pkts], np.uint32)
    off = np.zeros(len(pkts), np.int64)
    pos = 0
    for i, (n, g, _, _) in enumerate(pkts):
        pos += g
        off[i] = pos
        pos += n
    arena = np.frombuffer(bytes((5 * i + 1) % 256 for i in range(pos + 8)), np.uint8).copy()
    before = arena.copy()
    wirelen = np.maximum(caplen.astype(np.int64) + np.array([w for _, _, w, _ in pkts]), 0).astype(np.uint32)
    ts = t0 + np.arange(len(pkts), dtype=np.int64) * 123_456_789
    lt = np.array([t for _, _, _, t in pkts], np.uint16)
    ok = all(g >= 16 for g in gaps) and bool((lt == 1).all()) and bool((caplen <= snaplen).all())
    got = k.frame_pcap_records(arena, off, caplen, wirelen, ts, lt, 1, nanosecond, snaplen)
    if not ok:
        first = next(i for i in range(len(pkts)) if gaps[i] < 16 or lt[i] != 1 or caplen[i] > snaplen)
        assert got == -(first + 1) and np.array_equal(arena, before)
        return
    assert got == len(pkts)
    framed = b"".join(arena[o - 16:o + n].tobytes() for o, n in zip(off, caplen))
    want = np.zeros(k.pcap_write_size(before, off, caplen, lt, 1, snaplen), np.uint8)
    k.write_pcap_records(before, off, caplen, wirelen, ts, lt, 1, nanosecond, snaplen, want)
    assert framed == want.tobytes()


def test_framed_write_is_the_gathered_write(tmp_path):
    """PcapWriter.write_framed from an arena copied with its record headers (as Pipeline.run copies a chunk of a
    classic pcap) writes the file write() writes; where it does not apply (pcapng, a batch without room before its
    packets, an output that is not a path) it writes nothing and says so."""
    frames = [bytes((i + j) % 256 for j in range(60 + i)) for i in range(300)]
    src = PacketBatch.from_packets(frames, ts_ns=np.arange(300, dtype=np.int64) * 10**7)
    write_pcap(tmp_path / "in.pcap", src)
    (batch,) = list(read_pcap(tmp_path / "in.pcap", parse=False, chunk=1000))
    lo = int(batch.off[0]) - 16
    arena = batch.data[lo:].copy()
    framed = PacketBatch(arena, batch.off - lo, batch.caplen, batch.wirelen, batch.ts_ns, batch.linktype)[::2]
    w = PcapWriter(tmp_path / "framed.pcap", linktype=1)
    t = w.write_framed(framed)
    assert t is not None
    w.close()
    g = PcapWriter(tmp_path / "gathered.pcap", linktype=1)
    g.write(framed)
    g.close()
    assert (tmp_path / "framed.pcap").read_bytes() == (tmp_path / "gathered.pcap").read_bytes()
    tight = PacketBatch(arena, batch.off - lo, batch.caplen, batch.wirelen, batch.ts_ns, batch.linktype)
    tight = tight.compact()
    for writer in (PcapWriter(tmp_path / "x.pcapng"), PcapWriter(tmp_path / "y.pcap", linktype=1),
                   PcapWriter(io.BytesIO(), linktype=1)):
        assert writer.write_framed(framed if writer.format == "pcapng" or writer._atomic is None else tight) is None
        writer.close()


# ---------------------------------------------------------------------------------------------------- arena_for
def _open(path, how, chunk):
    """A reader of ``path`` in one of the ways the reader gets its bytes."""
    import gzip

    if how == "gzip":
        return read_pcap(io.BytesIO(gzip.compress(Path(path).read_bytes())), chunk=chunk, parse=False, strict=False)
    if how == "stream":
        return read_pcap(io.BufferedReader(io.BytesIO(Path(path).read_bytes())), chunk=chunk, parse=False,
                         strict=False)
    return read_pcap(path, chunk=chunk, parse=False, strict=False, **MODES[how])


ARENA_WAYS = ["mmap", "read", "read-tiny", "gzip", "stream"]


class _Arenas:
    """Two arenas taken in turn, as Pipeline.run takes them, each ``room(nbytes)`` long when it grows."""

    def __init__(self, room):
        self.room = room
        self.arenas = [np.zeros(0, np.uint8), np.zeros(0, np.uint8)]
        self.asked = []

    def __call__(self, nbytes):
        turn = len(self.asked) % 2
        self.asked.append(nbytes)
        if self.arenas[turn].shape[0] < self.room(nbytes):
            self.arenas[turn] = np.full(self.room(nbytes), 0xA5, np.uint8)
        return self.arenas[turn]


def _check_arena_for(path, chunk, room):
    """Reading with ``arena_for`` gives every batch of a plain read, byte for byte (its whole ``data``, record headers
    included, and its columns), in the arena's start when it fits, and the same end (error, offset, skipped bytes
    and records)."""
    for how in ARENA_WAYS:
        plain = _open(path, how, chunk)
        want = list(plain)
        r = _open(path, how, chunk)
        r.arena_for = take = _Arenas(room)
        got = 0
        for b in r:
            w = want[got]
            got += 1
            assert len(take.asked) == got  # once per batch, before it is delivered
            arena = take.arenas[(got - 1) % 2]
            assert b.data.tobytes() == w.data.tobytes()
            for c in ("off", "caplen", "wirelen", "ts_ns", "linktype"):
                assert np.array_equal(getattr(b, c), getattr(w, c)), c
            fits = arena.shape[0] >= w.data.shape[0]
            assert (b.data.ctypes.data == arena.ctypes.data) == fits
            if not fits:
                assert not np.shares_memory(b.data, arena)
        assert got == len(want)
        assert (r.error is None) == (plain.error is None)
        if r.error is not None:
            assert (r.error.offset, r.error.problem) == (plain.error.offset, plain.error.problem)
        assert (r.skipped_bytes, r.skipped_records, r.packets, r.bytes) == (
            plain.skipped_bytes, plain.skipped_records, plain.packets, plain.bytes)


ROOMS = {"ample": lambda n: n + 64, "exact": lambda n: n, "half": lambda n: n // 2, "none": lambda n: 0}


@fast
@given(st.data())
def test_arena_for_gives_the_plain_batches(files, data):
    what = data.draw(st.sampled_from(["classic", "pcapng", "mutated"]))
    if what == "classic":
        ns = data.draw(st.booleans())
        raw = O.classic_pcap(data.draw(classic_records(ns)), nanosecond=ns, big=data.draw(st.booleans()))
    elif what == "pcapng":
        raw, _ = O.pcapng(data.draw(pcapng_sections()))
    else:
        raw = data.draw(mutated_file())
    path = files(raw)
    try:
        read_pcap(path).close()
    except PcapError:
        return  # refused by read_pcap itself, with or without an arena
    _check_arena_for(path, data.draw(st.integers(1, 7)), ROOMS[data.draw(st.sampled_from(list(ROOMS)))])


@pytest.mark.parametrize("room", list(ROOMS))
def test_arena_for_on_resync_truncation_and_skipped_blocks(tmp_path, room):
    recs = _records(300)
    raw = bytearray(O.classic_pcap(recs))
    raw[24 + 100 * 56 + 8: 24 + 100 * 56 + 12] = struct.pack("<I", MAX_CAPLEN + 1)  # a corrupt record mid-file
    p = write_file(tmp_path, bytes(raw[:-5]), "resync.pcap")  # and a truncated last one
    for chunk in (1, 64, 1000):
        _check_arena_for(p, chunk, ROOMS[room])
    big = O.block(0x00000BAD, bytes(3 << 20))  # too big to buffer: skipped in place
    raw = O.shb() + O.idb(1) + O.epb(0, 1, b"a", 1) + big + O.epb(0, 2, b"b", 1) + O.shb() + O.idb(228) + \
        O.epb(0, 3, b"c" * 20, 20)
    for chunk in (1, 3):
        _check_arena_for(write_file(tmp_path, raw, "skip.pcapng"), chunk, ROOMS[room])


def test_arena_for_reads_a_growing_file(tmp_path):
    """A file read from a stream while it is being written: the batches in the arenas are the file's records."""
    recs = _records(50)
    raw = O.classic_pcap(recs)
    p = tmp_path / "grow.pcap"
    p.write_bytes(raw[:24 + 20 * 56 + 7])
    with open(p, "rb") as f:
        r = read_pcap(f, chunk=8, parse=False, strict=False)
        arena = np.zeros(1 << 16, np.uint8)
        r.arena_for = lambda n: arena
        got = [next(r).packets(), next(r).packets()]  # 16 records; the 20 written are read ahead
        with open(p, "ab") as g:
            g.write(raw[24 + 20 * 56 + 7:])
        got += [b.packets() for b in r]
    assert [x for b in got for x in b] == [d for d, *_ in recs] and r.error is None
