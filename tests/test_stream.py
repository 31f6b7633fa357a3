"""Stream reassembly kernel against the plain-Python oracle (tests/oracles/stream.py), with dpkt-built packets."""
import itertools

import dpkt
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gwlb_fast._kernels import stream as _k
from gwlb_fast.batch import PacketBatch
from gwlb_fast.inspect.stream import COUNTER_NAMES, StreamTable
from tests.oracles.stream import StreamOracle

CLIENT, SERVER = b"\x0a\x01\x01\x05", b"\x5d\xb8\xd8\x22"


def tcp_frame(seq, flags, payload, pad=b""):
    tcp = dpkt.tcp.TCP(sport=40000, dport=80, seq=seq & 0xFFFFFFFF, flags=flags, data=payload)
    ip = dpkt.ip.IP(src=CLIENT, dst=SERVER, p=6, data=tcp)
    ip.len = 20 + len(bytes(tcp))
    return bytes(dpkt.ethernet.Ethernet(dst=b"\x02" * 6, src=b"\x04" * 6, type=0x0800, data=ip)) + pad


def udp_frame(payload):
    udp = dpkt.udp.UDP(sport=5353, dport=53, data=payload)
    udp.ulen = 8 + len(payload)
    ip = dpkt.ip.IP(src=CLIENT, dst=SERVER, p=17, data=udp)
    ip.len = 20 + len(bytes(udp))
    return bytes(dpkt.ethernet.Ethernet(dst=b"\x02" * 6, src=b"\x04" * 6, type=0x0800, data=ip))


def feed(table, frames, sd=0):
    batch = PacketBatch.from_packets(frames).parse()
    return batch, table.feed(batch, np.full(len(batch), sd, np.int64))


def delivered(batch, out, table, sd=0):
    """Bytes each packet made available, read as a matcher reads them (head below H, the packet above)."""
    h = table.head_size
    res = []
    for i in range(len(batch)):
        lo, hi = int(out["lo"][i]), int(out["hi"][i])
        if hi <= lo:
            continue
        bs = bytearray()
        for b in range(lo, hi):
            if b < h:
                bs.append(table.head[sd, b])
            else:
                bs.append(batch.data[out["pay"][i] + b - out["seg"][i]])
        res.append((lo, bytes(bs)))
    return res


@st.composite
def segmented_stream(draw):
    """A byte stream cut into segments, then shuffled, duplicated and overlapped."""
    data = draw(st.binary(min_size=1, max_size=600))
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(data) - 1)), max_size=12))))
    bounds = [0] + [c for c in cuts if c < len(data)] + [len(data)]
    segs = [(a, b) for a, b in itertools.pairwise(bounds) if b > a]
    extra = draw(st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(1, 80)), max_size=4))
    segs += [(a, min(len(data), a + ln)) for a, ln in extra]
    order = draw(st.permutations(range(len(segs))))
    isn = draw(st.integers(0, 2**32 - 1))
    head = draw(st.sampled_from([64, 128, 4096]))
    # a corrupted retransmission: the first copy must win
    flip = draw(st.booleans())
    return data, [segs[i] for i in order], isn, head, flip


@given(segmented_stream())
def test_reassembly_matches_oracle(case):
    data, segs, isn, head, flip = case
    frames = [tcp_frame(isn, 0x02, b"")]
    o = StreamOracle(head=head)
    o.feed(isn, 0x02, b"")
    seen = set()
    for a, b in segs:
        chunk = data[a:b]
        if flip and (a, b) in seen:
            chunk = bytes(x ^ 0xFF for x in chunk)
        seen.add((a, b))
        frames.append(tcp_frame(isn + 1 + a, 0x10, chunk))
        o.feed(isn + 1 + a, 0x10, chunk)
    table = StreamTable(capacity=1, head_size=head)
    batch, out = feed(table, frames)
    got = delivered(batch, out, table)
    assert got == o.delivered
    assert int(table.nxt[0]) == o.nxt
    assert bytes(table.head[0, :min(o.nxt, head)]) == bytes(o.head[:min(o.nxt, head)])
    st_ = table.stats()
    assert st_["bytes_retransmitted"] == o.retrans
    assert st_["gap_bytes"] == o.gap
    # every delivered byte is the stream's byte (only where nothing was skipped or corrupted)
    if not flip and o.gap == 0:
        for lo, bs in got:
            assert bs == data[lo:lo + len(bs)]


def test_in_order_stream_split_over_batches_is_whole():
    data = bytes(range(256)) * 40
    isn = 0xFFFFFF00  # the sequence space wraps inside the stream
    frames = [tcp_frame(isn, 0x02, b"")] + [tcp_frame(isn + 1 + a, 0x18, data[a:a + 1000])
                                             for a in range(0, len(data), 1000)]
    table = StreamTable(capacity=1, head_size=4096)
    got = []
    for part in (frames[:4], frames[4:]):
        batch, out = feed(table, part)
        got += delivered(batch, out, table)
    assert b"".join(bs for _, bs in got) == data
    assert bytes(table.head[0]) == data[:4096]
    assert table.flags[0] & _k.SF_HEAD_FULL


def test_hole_in_head_is_held_then_released():
    isn = 1000
    frames = [tcp_frame(isn, 0x02, b""), tcp_frame(isn + 1 + 5, 0x18, b"WORLD"), tcp_frame(isn + 1, 0x18, b"HELLO")]
    table = StreamTable(capacity=1, head_size=128)
    _batch, out = feed(table, frames)
    assert list(out["hi"]) == [0, 0, 10]
    assert out["src"][2] == _k.SRC_HEAD
    assert bytes(table.head[0, :10]) == b"HELLOWORLD"
    assert table.stats()["segments_out_of_order"] == 1


def test_ethernet_padding_is_not_payload():
    table = StreamTable(capacity=1, head_size=64)
    _batch, _out = feed(table, [tcp_frame(7, 0x02, b""), tcp_frame(8, 0x18, b"ab", pad=b"\x00" * 20)])
    assert int(table.nxt[0]) == 2


def test_udp_datagrams_each_a_unit_and_first_in_head():
    table = StreamTable(capacity=1, head_size=64)
    _batch, out = feed(table, [udp_frame(b"first"), udp_frame(b"second!")])
    assert list(out["hi"]) == [5, 7] and list(out["lo"]) == [0, 0]
    assert bytes(table.head[0, :5]) == b"first" and int(table.nxt[0]) == 5


def test_pickup_mid_stream_and_rows_not_inspected():
    table = StreamTable(capacity=2, head_size=64)
    frames = [tcp_frame(5000, 0x18, b"mid"), tcp_frame(5003, 0x18, b"dle")]
    batch = PacketBatch.from_packets(frames).parse()
    out = table.feed(batch, np.array([1, -1], np.int64))
    assert bytes(table.head[1, :3]) == b"mid" and int(table.nxt[1]) == 3
    assert out["hi"][1] == 0 and out["pay"][1] == -1
    assert table.flags[1] & _k.SF_GAP


def test_pool_refuses_beyond_capacity_and_counts():
    table = StreamTable(capacity=2, head_size=64)
    rows = table.allocate(3)
    assert sorted(rows[:2].tolist()) == [0, 1] and rows[2] == -1 and table.refused == 1
    table.release(rows[:1])
    assert table.allocate(1)[0] == rows[0]


@given(st.lists(st.binary(max_size=120), max_size=20), st.lists(st.integers(-1, 3), max_size=20))
def test_raw_fuzz_never_reads_out_of_bounds(pkts, sds):
    batch = PacketBatch.from_packets(pkts).parse()
    n = len(batch)
    sd = np.array((sds + [0] * n)[:n], np.int64)
    table = StreamTable(capacity=2, head_size=64)
    arena = batch.data.copy()
    out = table.feed(batch, sd)
    assert np.array_equal(arena, batch.data)
    assert np.all(table.nxt >= 0) and np.all(table.nxt[(table.flags & _k.SF_GAP) == 0] <= 2**31)
    for i in range(n):
        if out["pay"][i] >= 0:
            assert batch.off[i] <= out["pay"][i] <= batch.off[i] + batch.caplen[i]


def test_wrong_lengths_raise():
    table = StreamTable(capacity=1, head_size=64)
    batch = PacketBatch.from_packets([tcp_frame(1, 0x02, b"")]).parse()
    with pytest.raises(ValueError):
        table.feed(batch, np.zeros(2, np.int64))
    assert len(COUNTER_NAMES) == _k.N_COUNTERS
