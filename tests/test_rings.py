"""The workers' captures in shared memory, merged as they are written: against a stable sort of every packet."""
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gwlb_fast.batch import LINKTYPE_ETHERNET, PacketBatch
from gwlb_fast.pcapio import PcapWriter, read_pcap
from gwlb_fast.scale.rings import CaptureRings, RingMerger, RingOutput, RingWriter


def _batch(ts, sizes, k, seq0):
    """Packets whose bytes name their writer and sequence number (so the merged file says where each came from)."""
    pkts = []
    for i, n in enumerate(sizes):
        head = np.array([k, seq0 + i], np.uint32).tobytes()
        pkts.append((head * (n // 8 + 1))[:n])
    b = PacketBatch.from_packets(pkts, linktype=LINKTYPE_ETHERNET)
    b.ts_ns[:] = ts
    return b


@st.composite
def streams(draw):
    """For each of 1-4 writers: batches in time order (timestamps from a small range: many ties) and the watermark
    announced after each (at most the next batch's first timestamp)."""
    n = draw(st.integers(1, 4))
    out = []
    for k in range(n):
        t, seq, batches = 0, 0, []
        for _ in range(draw(st.integers(0, 6))):
            m = draw(st.integers(0, 12))
            steps = draw(st.lists(st.integers(0, 2), min_size=m, max_size=m))
            ts = t + np.cumsum(np.array(steps, np.int64))
            sizes = draw(st.lists(st.integers(14, 300), min_size=m, max_size=m))
            t = int(ts[-1]) if m else t
            batches.append((ts, sizes, seq))
            seq += m
        marks = [int(b[0][0]) if len(b[0]) else None for b in batches[1:]] + [None]
        out.append([(*b, w) for b, w in zip(batches, marks)])
    return out


def _expected(streams):
    rows = [(int(t), k, seq0 + i, sizes[i]) for k, bs in enumerate(streams) for ts, sizes, seq0, _ in bs
            for i, t in enumerate(ts)]
    return sorted(rows, key=lambda r: (r[0], r[1], r[2]))


def _run(streams, tmp_path, ring_bytes, ring_packets, fmt="pcap", records=False):
    rings = CaptureRings(len(streams), ring_bytes, ring_packets, records=records)
    dest = tmp_path / f"m.{fmt}"
    merger = RingMerger(rings, range(len(streams)), PcapWriter(dest, linktype=1 if fmt == "pcap" else None,
                                                                format=fmt))
    errors = []

    def write(k):
        try:
            w = RingWriter(rings, k)
            for ts, sizes, seq0, mark in streams[k]:
                w.write(_batch(ts, sizes, k, seq0))
                if mark is not None:
                    w.mark(mark)
            w.close()
        except BaseException as e:  # noqa: BLE001 (raised by the test)
            errors.append(e)
            RingWriter(rings, k).close()

    threads = [threading.Thread(target=write, args=(k,)) for k in range(len(streams))]
    for t in threads:
        t.start()
    while not merger.done:
        merger.step()
    merger.close()
    for t in threads:
        t.join()
    assert errors == []
    return dest


def _records(path):
    parts = list(read_pcap(path, parse=False))
    b = PacketBatch.concat(parts) if parts else PacketBatch.empty()
    who = [tuple(np.frombuffer(bytes(b.data[o:o + 8]), np.uint32).tolist()) for o in b.off.tolist()]
    return [(int(t), k, seq, int(c)) for t, (k, seq), c in zip(b.ts_ns.tolist(), who, b.caplen.tolist())]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(streams(), st.sampled_from([(600, 4), (2000, 64), (1 << 16, 1 << 10)]), st.booleans())
def test_merge_is_the_stable_sort_of_every_packet(tmp_path, streams, ring, records):
    """Small rings wrap, fill and make the writers wait; the result is the same whatever the scheduling, with the
    rings holding packets or the pcap records the writers made of them (16 bytes more each: the ring is as much
    larger, so that it still holds two of the largest)."""
    ring_bytes, ring_packets = ring
    got = _run(streams, tmp_path, ring_bytes + 32 * records, ring_packets, records=records)
    assert _records(got) == _expected(streams)


def test_a_packet_never_wraps_and_the_file_is_what_one_writer_writes(tmp_path):
    """Packets that do not fit before the ring's end go to its start; the merged file of one writer is byte for
    byte what a PcapWriter writes of the same packets, classic and pcapng."""
    sizes = [300, 250, 290, 100, 299, 60] * 5
    ts = np.arange(len(sizes), dtype=np.int64) * 1000
    streams = [[(ts, sizes, 0, None)]]
    for fmt, records in (("pcap", False), ("pcap", True), ("pcapng", False)):
        got = _run(streams, tmp_path, 700, 8, fmt, records).read_bytes()
        with PcapWriter(tmp_path / f"ref.{fmt}", linktype=1 if fmt == "pcap" else None) as w:
            w.write(_batch(ts, sizes, 0, 0))
        assert got == (tmp_path / f"ref.{fmt}").read_bytes()


def _mixed(ts):
    """Packets of every link type an Ethernet capture converts (raw IP v4/v6, Linux cooked v1/v2, null, PPP), some
    shorter than their link header, and two large ones."""
    ip = bytes([0x45, 0, 0, 58]) + bytes(12) + bytes([10, 0, 0, 2]) + b"x" * 38
    ip6 = bytes([0x60]) + bytes(47)
    sll = bytes([0, 0, 0, 1, 0, 6]) + bytes(range(1, 7)) + bytes(2) + bytes([8, 0]) + ip
    sll2 = bytes([8, 0, 0, 0, 0, 0, 0, 1, 0, 1, 6]) + bytes(range(1, 7)) + bytes(3) + ip
    pkts = [(ip, 101), (ip6, 101), (ip, 228), (sll, 113), (sll[:9], 113), (sll2, 276), (sll2[:5], 276),
            (bytes([2, 0, 0, 0]) + ip, 0), (bytes([0, 0x21]) + ip, 9), (bytes(64), 1), (bytes(70000), 1),
            (bytes(70000), 101)]
    b = PacketBatch.from_packets([p for p, _ in pkts], linktype=LINKTYPE_ETHERNET)
    b.linktype[:] = [lt for _, lt in pkts]
    b.ts_ns[:] = ts + np.arange(len(pkts), dtype=np.int64) * 7
    b.wirelen[-1] += 5
    return b


def test_records_of_converted_packets_are_what_a_pcap_writer_writes(tmp_path):
    """A ring of records holds the classic pcap records of packets of any link type, converted to Ethernet as a
    PcapWriter does: the merge of two writers is byte for byte a PcapWriter's file of
    the same packets in the same order, and each writer counts the bytes its records hold."""
    a, b = _mixed(1_000_000_000), _mixed(1_000_000_003)
    rings = CaptureRings(2, 1 << 18, 64, records=True)
    merger = RingMerger(rings, [0, 1], PcapWriter(tmp_path / "m.pcap", linktype=1))
    writers = [RingWriter(rings, 0), RingWriter(rings, 1)]
    for w, x in zip(writers, (a, b)):
        w.write(x)
        w.close()
    while not merger.done:
        merger.step()
    merger.close()
    both = PacketBatch.concat([a, b])
    both = both[np.argsort(both.ts_ns, kind="stable")]
    with PcapWriter(tmp_path / "ref.pcap", linktype=1) as ref:
        ref.write(both)
    assert (tmp_path / "m.pcap").read_bytes() == (tmp_path / "ref.pcap").read_bytes()
    assert writers[0].bytes + writers[1].bytes == ref.bytes and merger.writer.packets == len(both)


def test_a_ring_of_records_takes_only_what_its_file_holds(tmp_path):
    """Records are made for a nanosecond Ethernet pcap of the default snap length: a writer or a file of another
    kind is refused, and a packet that no Ethernet capture can hold is refused before anything is written."""
    rings = CaptureRings(1, 4096, 16, records=True)
    with pytest.raises(ValueError, match="default snap length"):
        RingWriter(rings, 0, snaplen=100).write(_batch(np.array([1], np.int64), [40], 0, 0))
    bad = _batch(np.array([1, 2], np.int64), [40, 40], 0, 0)
    bad.linktype[1] = 147  # a user link type: no conversion to Ethernet
    w = RingWriter(rings, 0)
    with pytest.raises(ValueError, match="link type 147"):
        w.write(bad)
    assert int(rings.counters[0, 0]) == 0 and w.packets == 0
    for kw in ({"format": "pcapng"}, {"nanosecond": False}, {"snaplen": 100}, {"linktype": 101}):
        with PcapWriter(tmp_path / "x.pcap", **kw) as pw, pytest.raises(ValueError, match="write_records"):
            pw.write_records(rings.data, np.zeros(1, np.int64), np.full(1, 16, np.uint32))


def test_writer_counts_what_a_classic_pcap_holds_and_refuses_a_packet_larger_than_the_ring(tmp_path):
    rings = CaptureRings(1, 1000, 8)
    w = RingWriter(rings, 0)
    b = _batch(np.arange(3, dtype=np.int64), [100, 200, 50], 0, 0)
    b.linktype[:] = 113  # Linux cooked: an Ethernet capture holds it as 14 + (len - 16) bytes
    assert w.write(b) == 3 and w.packets == 3 and w.bytes == 350 - 3 * 2
    with pytest.raises(ValueError, match="larger than the ring"):
        w.write(_batch(np.array([5], np.int64), [1001], 0, 3))


def test_output_announces_the_watermark_of_each_write(tmp_path):
    """RingOutput is the OrderedWriter of a ring: packets after the watermark are held, the watermark announced."""
    from gwlb_fast.scale.rings import MARK

    rings = CaptureRings(2, 4096, 16)
    out = RingOutput(rings, 1)
    out.write(_batch(np.array([1, 5, 9], np.int64), [20, 20, 20], 1, 0), 6)
    assert out.packets == 2 and int(rings.counters[1, MARK]) == 6
    merger = RingMerger(rings, [0, 1], PcapWriter(tmp_path / "m.pcap", linktype=1))
    assert merger.step() == 0  # writer 0 may still write a packet at time 0
    RingWriter(rings, 0).close()
    assert merger.step() == 2  # up to the watermark: the held packet at 9 may yet be followed by one at 6
    out.close()
    assert merger.step() == 1
    merger.step()
    assert merger.done
    merger.close()
    assert [r[0] for r in _records(tmp_path / "m.pcap")] == [1, 5, 9]


def test_a_packet_written_late_is_still_written_once(tmp_path):
    """A writer breaking its watermark (a packet earlier than one it announced) loses nothing: every packet is in
    the merged file once, and the merge ends."""
    late = [[(np.array([0, 5, 10], np.int64), [40] * 3, 0, 10), (np.array([3, 11], np.int64), [40] * 2, 3, None)],
            [(np.array([1, 2, 12], np.int64), [40] * 3, 0, None)]]
    got = _records(_run(late, tmp_path, 2000, 64))
    assert sorted(got) == sorted(_expected(late))
