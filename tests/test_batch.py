import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gwlb_fast import PacketBatch
from gwlb_fast.batch import CORE_COLUMNS

packets = st.lists(st.binary(max_size=40), max_size=20)


@given(packets)
def test_from_packets_roundtrip(pkts):
    b = PacketBatch.from_packets(pkts)
    assert b.packets() == pkts and len(b) == len(pkts) and b.nbytes == sum(map(len, pkts))


@given(packets, st.data())
def test_slice_is_a_view_and_mask_shares_arena(pkts, data):
    b = PacketBatch.from_packets(pkts, ts_ns=np.arange(len(pkts)))
    lo = data.draw(st.integers(0, len(pkts)))
    s = b[lo:]
    assert s.data is b.data and s.packets() == pkts[lo:]
    if lo < len(pkts):
        assert np.shares_memory(s.off, b.off)
    mask = np.array(data.draw(st.lists(st.booleans(), min_size=len(pkts), max_size=len(pkts))), bool)
    f = b.filter(mask)
    assert f.data is b.data
    assert f.packets() == [p for p, m in zip(pkts, mask) if m]
    assert list(f.ts_ns) == list(np.flatnonzero(mask))


@given(packets, st.data())
def test_take_of_the_core_columns(pkts, data):
    """take(rows, CORE_COLUMNS): the packets at rows (repeats and any order), the core columns as self[rows] has
    them, every other column None, the arena shared."""
    b = PacketBatch.from_packets(pkts, ts_ns=np.arange(len(pkts)) * 7)
    b.parse()
    rows = np.array(data.draw(st.lists(st.integers(0, max(len(pkts) - 1, 0)), max_size=len(pkts) and 30)),
                    np.int64)
    c, full = b.take(rows, CORE_COLUMNS), b[rows]
    assert c.data is b.data and c.packets() == [pkts[i] for i in rows.tolist()]
    for name in ("off", "caplen", "wirelen", "ts_ns", "linktype"):
        got = getattr(c, name)
        assert got.dtype == getattr(b, name).dtype and got.tolist() == getattr(full, name).tolist()
    assert c.status is None and c.src_ip is None and c.flow_cookie is None


@given(st.lists(packets, max_size=4))
def test_concat_and_compact(lists):
    batches = [PacketBatch.from_packets(p) for p in lists]
    c = PacketBatch.concat(batches)
    assert c.packets() == [x for p in lists for x in p]
    c.validate()
    if lists and lists[0]:
        half = batches[0][::2].compact()
        assert half.packets() == lists[0][::2]
        assert half.data.shape[0] == sum(map(len, lists[0][::2]))


def test_concat_keeps_common_columns_only():
    a = PacketBatch.from_packets([b"ab"]).parse()
    b = PacketBatch.from_packets([b"cd"])
    c = PacketBatch.concat([a, b])
    assert c.status is None
    assert PacketBatch.concat([a, a]).status.shape == (2,)


@given(packets, st.data())
def test_concat_of_parts_of_one_arena_copies_nothing(pkts, data):
    """Batches whose arenas are parts of one buffer join over that buffer; any other batch among them: a copy."""
    whole = PacketBatch.from_packets(pkts, ts_ns=np.arange(len(pkts)))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(pkts)), max_size=3)))
    bounds = [0, *cuts, len(pkts)]
    parts = []
    for a, b in itertools.pairwise(bounds):
        lo = int(whole.off[a]) if a < len(pkts) else whole.data.shape[0]
        hi = int(whole.off[b]) if b < len(pkts) else whole.data.shape[0]
        part = whole[a:b].filter(np.ones(b - a, bool))
        part.data, part.off = whole.data[lo:hi], part.off - lo  # the packets in their own part of the arena
        parts.append(part)
    joined = PacketBatch.concat(parts, whole.data)
    assert joined.packets() == pkts and joined.ts_ns.tolist() == list(range(len(pkts)))
    joined.validate()
    if len(parts) > 1:
        assert joined.data is whole.data
        other = PacketBatch.concat([*parts, PacketBatch.from_packets([b"xy"])], whole.data)
        assert other.data is not whole.data and other.packets() == [*pkts, b"xy"]


def test_validate_rejects_bad_columns():
    with pytest.raises(ValueError, match="outside the arena"):
        PacketBatch(np.zeros(4, np.uint8), [2], [4])
    with pytest.raises(ValueError, match="src_ip"):
        PacketBatch(np.zeros(4, np.uint8), [0], [4], src_ip=np.zeros(2, np.uint32))
    with pytest.raises(TypeError, match="unknown column"):
        PacketBatch(np.zeros(4, np.uint8), [0], [4], bogus=np.zeros(1))


def test_ensure_allocates_once():
    b = PacketBatch.from_packets([b"x", b"y"])
    col = b.ensure("fw_index", fill=-1)
    assert col.dtype == np.int16 and list(col) == [-1, -1] and b.ensure("fw_index") is col


@given(packets)
def test_copy_shares_nothing(pkts):
    b = PacketBatch.from_packets(pkts).parse()
    c = b.copy()
    assert c.packets() == pkts
    assert not np.shares_memory(c.data, b.data) or c.data.size == 0
    assert not np.shares_memory(c.status, b.status) or len(pkts) == 0
    assert b.compact() is b  # from_packets is already tight


def test_compact_into_a_given_buffer():
    """``compact(into=buf)`` gathers the packets back to back at the start of ``buf`` (even a tight batch), every
    column kept."""
    b = PacketBatch.from_packets([b"abc", b"", b"defgh"], ts_ns=np.array([1, 2, 3], np.int64))
    buf = np.zeros(20, np.uint8)
    c = b.compact(into=buf)
    assert c is not b and np.shares_memory(c.data, buf) and c.data.ctypes.data == buf.ctypes.data
    assert bytes(buf[:8]) == b"abcdefgh" and c.off.tolist() == [0, 3, 3]
    assert c.packets() == b.packets() and c.ts_ns.tolist() == [1, 2, 3]
