"""Captures written by several processes and merged in time order as they are written (``run --workers``).

Each worker writes the packets of one capture (the delivered packets, or one tap) into a *ring* of memory shared
with the parent: the packet bytes into a data area, and for each packet its timestamp, place and lengths into an
index. With each batch it announces a *watermark*: no packet it writes later has an earlier timestamp. The parent
merges the rings into the destination with a :class:`~gwlb_fast.pcapio.PcapWriter` while the workers go on,
freeing the ring space it has written. For a classic pcap the workers write each packet as its record in the file
(``CaptureRings(records=True)``) and the parent hands the file the records in merged order straight from the rings
(``writev``), copying none of them itself. The destination is written once, by one process, and the rings' pages are
reused lap after lap: no worker file is written and read back.

The merged order is that of a stable sort of all the workers' packets by timestamp, ties in worker order, then in
each worker's order. The parent writes a packet only once no worker can still write one that sorts before it: a
packet of worker ``k`` with timestamp ``t`` goes when, for every other worker ``j`` still writing, ``t`` is
below ``j``'s watermark (or equal to it, for ``j > k``). A worker whose ring is full waits for the parent; the
worker with the lowest watermark can always be written out entirely, so the merge never stalls, and its result
does not depend on how the processes are scheduled.
"""
from __future__ import annotations

import mmap
import os
import time

import numpy as np

from .._kernels import pcap as _pk
from .._kernels.parse import gather_packets
from ..batch import PacketBatch
from ..pcapio import DEFAULT_SNAPLEN, OrderedWriter

RING_BYTES = 32 << 20  # packet bytes a worker may be ahead of the parent, per capture: about a chunk of output
RING_PACKETS = 1 << 19  # index entries, likewise
WAIT_SECONDS = 0.0002  # a worker's pause while its ring is full
_PCAP_REC_HDR = 16
_NO_MARK = np.iinfo(np.int64).min
_CLOSED = np.iinfo(np.int64).max

# the counters of a ring (int64): written by the worker ...
W_COUNT, W_BYTES, MARK = 0, 1, 2
# ... and by the parent
R_COUNT, R_BYTES = 3, 4
_NCOUNTERS = 8


class CaptureRings:
    """The shared memory of one capture written by ``n`` workers: ring ``k`` is worker ``k``'s. Made before the
    workers fork (the map is inherited); only the pages the rings use are ever allocated.

    With ``records`` the workers write each packet as the classic pcap record the merged file holds (an Ethernet,
    nanosecond capture of snap length ``DEFAULT_SNAPLEN``, as :class:`~gwlb_fast.pcapio.PcapWriter` writes it), and
    an index entry's ``caplen`` is the record's size: the parent's merge writes the records straight from the rings
    (:meth:`~gwlb_fast.pcapio.PcapWriter.write_records`), without copying them first."""

    def __init__(self, n: int, ring_bytes: int | None = None, ring_packets: int | None = None,
                 records: bool = False):
        self.n = int(n)
        self.records = bool(records)
        self.size = int(RING_BYTES if ring_bytes is None else ring_bytes)
        self.cap = int(RING_PACKETS if ring_packets is None else ring_packets)
        per = self.cap * (8 + 8 + 8 + 4 + 4 + 2)
        self._mm = mmap.mmap(-1, self.n * (self.size + per + 8 * _NCOUNTERS))  # MAP_SHARED | MAP_ANONYMOUS
        self.data = np.frombuffer(self._mm, np.uint8, self.n * self.size, 0)
        pos = self.n * self.size
        cols = {}
        for name, t in (("ts_ns", np.int64), ("pos", np.int64), ("tag", np.int64), ("caplen", np.uint32),
                        ("wirelen", np.uint32), ("linktype", np.uint16)):
            cols[name] = np.frombuffer(self._mm, t, self.n * self.cap, pos).reshape(self.n, self.cap)
            pos += self.n * self.cap * np.dtype(t).itemsize
        self.ts_ns, self.pos, self.tag, self.caplen, self.wirelen, self.linktype = (
            cols[c] for c in ("ts_ns", "pos", "tag", "caplen", "wirelen", "linktype"))
        self.counters = np.frombuffer(self._mm, np.int64, self.n * _NCOUNTERS, pos).reshape(self.n, _NCOUNTERS)
        self.counters[:, MARK] = _NO_MARK


class RingWriter:
    """Worker ``k``'s writer of a capture into its ring: what :class:`~gwlb_fast.pcapio.PcapWriter` is to a file
    (``write``, ``close``, ``abort``, ``packets``, ``bytes``). ``format`` is the destination's, for ``bytes``
    (a classic pcap converts other link types to Ethernet)."""

    def __init__(self, rings: CaptureRings, k: int, format: str = "pcap", snaplen: int = DEFAULT_SNAPLEN):
        self.rings, self.k, self.format, self.snaplen = rings, int(k), format, int(snaplen)
        self.c = rings.counters[k]
        self.data = rings.data[k * rings.size:(k + 1) * rings.size]
        self.packets = self.bytes = 0
        self._parent = os.getppid()

    def write(self, batch: PacketBatch, tags: np.ndarray | None = None) -> int:
        """Copy a batch (in time order) into the ring, waiting for room when the parent is behind; ``tags``: an int64
        a packet that goes with it (the drops file's comment keys)."""
        n = len(batch)
        if n == 0:
            return 0
        r, c = self.rings, self.c
        sizes = batch.caplen  # what each packet takes in the ring (with records: its record)
        if r.records:
            if self.format != "pcap" or self.snaplen != DEFAULT_SNAPLEN:
                raise ValueError("RingWriter: a ring of records holds an Ethernet pcap of the default snap length")
            sizes = np.empty(n, np.uint32)
            size = _pk.pcap_record_sizes(batch.data, batch.off, batch.caplen, batch.linktype, 1, self.snaplen, sizes)
        elif self.format == "pcap":
            size = _pk.pcap_write_size(batch.data, batch.off, batch.caplen, batch.linktype, 1, self.snaplen)
        else:
            size = None
            self.bytes += int(np.minimum(batch.caplen, self.snaplen).sum(dtype=np.int64))
        if size is not None:
            if size < 0:
                raise ValueError(f"run --workers: packet of link type {int(batch.linktype[-size - 1])} cannot be "
                                 f"written to an Ethernet capture")
            self.bytes += size - _PCAP_REC_HDR * n
        caplen = sizes.astype(np.int64)
        if int(caplen.max()) > r.size:
            raise ValueError(f"run --workers: a packet of {int(caplen.max())} bytes is larger than the ring")
        ends = np.cumsum(caplen)
        i = 0
        while i < n:
            count, wbytes = int(c[W_COUNT]), int(c[W_BYTES])
            at = wbytes % r.size
            room = r.size - (wbytes - int(c[R_BYTES]))
            slots = r.cap - (count - int(c[R_COUNT]))
            base = int(ends[i - 1]) if i else 0
            # the packets that fit before the ring's end and in its free space
            limit = min(room, r.size - at)
            j = min(n, i + slots, int(np.searchsorted(ends, base + limit, side="right")))
            if j == i:
                if caplen[i] > r.size - at and room >= r.size - at + caplen[i]:
                    c[W_BYTES] = wbytes + r.size - at  # the rest of the ring is skipped: a packet never wraps
                    continue
                self._wait()
                continue
            dst = at + (ends[i:j] - caplen[i:j] - base)
            if r.records:  # the records of packets i..j, back to back from ``at``
                _pk.write_pcap_records(batch.data, batch.off[i:j], batch.caplen[i:j], batch.wirelen[i:j],
                                       batch.ts_ns[i:j], batch.linktype[i:j], 1, True, self.snaplen,
                                       self.data[at:at + int(ends[j - 1]) - base])
            else:
                gather_packets(batch.data, batch.off[i:j], batch.caplen[i:j], self.data, dst)
            slot = (count + np.arange(j - i)) % r.cap
            r.ts_ns[self.k, slot] = batch.ts_ns[i:j]
            r.pos[self.k, slot] = wbytes + dst - at
            r.caplen[self.k, slot] = sizes[i:j]
            if not r.records:
                r.wirelen[self.k, slot] = batch.wirelen[i:j]
                r.linktype[self.k, slot] = batch.linktype[i:j]
            if tags is not None:
                r.tag[self.k, slot] = tags[i:j]
            # published in this order: the parent reads the watermark first, then the count
            c[W_BYTES] = wbytes + int(dst[-1] - at) + int(caplen[j - 1])
            c[W_COUNT] = count + (j - i)
            # the batch is in time order, and so is what follows it: nothing later is earlier than its next packet
            # (or its last)
            self.mark(int(batch.ts_ns[min(j, n - 1)]))
            i = j
        self.packets += n
        return n

    def mark(self, ts: int) -> None:
        """Announce that no packet written from now on is earlier than ``ts``."""
        if ts > int(self.c[MARK]):
            self.c[MARK] = ts

    def _wait(self) -> None:
        if os.getppid() != self._parent:
            raise RuntimeError("run --workers: the parent process is gone")
        time.sleep(WAIT_SECONDS)

    def close(self) -> None:
        """Nothing more comes: the parent may write out everything."""
        self.c[MARK] = _CLOSED

    abort = close


class DiscardWriter:
    """A writer that keeps nothing (the workers but the first of a capture every worker writes alike)."""

    packets = bytes = 0

    def write(self, batch: PacketBatch) -> int:
        return len(batch)

    def close(self) -> None:
        pass

    abort = close


class RingOutput(OrderedWriter):
    """The :class:`~gwlb_fast.pcapio.OrderedWriter` of a worker's capture into its ring: each write's watermark is
    announced to the parent once the packets up to it are in the ring."""

    def __init__(self, rings: CaptureRings, k: int, format: str = "pcap"):
        super().__init__(RingWriter(rings, k, format))

    def write(self, parts, watermark: int | None = None) -> None:
        super().write(parts, watermark)
        if watermark is not None:
            self.writer.mark(int(watermark))


class RingMerger:
    """The parent's side of a capture: the rings of the workers ``sources`` merged into ``writer`` (a
    :class:`~gwlb_fast.pcapio.PcapWriter`, or with ``tags`` an object whose ``write(batch, tags)`` takes each
    packet's tag too; ``close`` and ``abort`` as the writer's). Call :meth:`step` whenever the workers may have
    written; :attr:`done` once every source closed and all was written; then :meth:`close`."""

    def __init__(self, rings: CaptureRings, sources, writer, tags: bool = False):
        self.rings, self.sources = rings, list(sources)
        self.writer, self.tags = writer, tags
        self.taken = {k: 0 for k in self.sources}  # index entries of each source read so far
        self.done = False

    def step(self) -> int:
        """Write what can be written now; returns the packets written."""
        if self.done:
            return 0
        r = self.rings
        marks, counts = {}, {}
        for k in self.sources:
            marks[k] = int(r.counters[k, MARK])  # the watermark first: the count read after it is at least its
            counts[k] = int(r.counters[k, W_COUNT])
        open_ = [k for k in self.sources if marks[k] != _CLOSED]
        # the frontier: the lowest watermark of a source still writing (the lowest such source on a tie)
        front = min(((marks[k], k) for k in open_), default=None)
        picks = []
        for k in self.sources:
            a, c = self.taken[k], counts[k]
            if c == a:
                continue
            ts = _entries(r.ts_ns[k], a, c - a)
            if front is None:
                m = ts.shape[0]
            else:
                # the packets before the frontier: a prefix (a packet never overtakes another of its source),
                # found by bisection as the ring is in time order; checked, for a packet written late
                later = k > front[1]
                m = int(np.searchsorted(ts, front[0], side="left" if later else "right"))
                if m and int(ts[:m].max()) > front[0] - later:
                    ok = ts < front[0] if later else ts <= front[0]
                    m = ts.shape[0] if bool(ok.all()) else int(np.argmin(ok))
            if m:
                picks.append((k, m))
        if not picks:
            if front is None and all(self.taken[k] == counts[k] for k in self.sources):
                self.done = True
            return 0
        cols = {}
        names = ("ts_ns", "pos", "caplen") if r.records else ("ts_ns", "pos", "caplen", "wirelen", "linktype")
        for name in (*names, *(("tag",) if self.tags else ())):
            col = getattr(r, name)
            cols[name] = np.concatenate([_entries(col[k], self.taken[k], m) for k, m in picks])
        src = np.repeat(np.array([k for k, _ in picks], np.int64), [m for _, m in picks])
        pos = cols["pos"]
        order = np.argsort(cols["ts_ns"], kind="stable")  # ties keep the sources' order, then each source's
        off = (pos % r.size + src * r.size)[order]
        if r.records:  # the records as they go in the file: written from the rings
            self.writer.write_records(r.data, off, cols["caplen"][order])
        else:
            batch = PacketBatch(r.data, off, cols["caplen"][order], cols["wirelen"][order], cols["ts_ns"][order],
                                cols["linktype"][order])
            if self.tags:
                self.writer.write(batch, cols["tag"][order])
            else:
                self.writer.write(batch)
        end = 0
        for k, m in picks:  # the writer copied the packets: their space is free again
            end += m
            r.counters[k, R_BYTES] = int(pos[end - 1]) + int(cols["caplen"][end - 1])
            r.counters[k, R_COUNT] = self.taken[k] + m
            self.taken[k] += m
        return int(order.shape[0])

    def close(self) -> None:
        self.writer.close()

    def abort(self) -> None:
        self.writer.abort()


def _entries(col: np.ndarray, a: int, m: int) -> np.ndarray:
    """The ``m`` index entries of a ring's column from entry number ``a`` on (a view, unless they wrap)."""
    i = a % col.shape[0]
    if i + m <= col.shape[0]:
        return col[i:i + m]
    return np.concatenate([col[i:], col[:i + m - col.shape[0]]])


__all__ = ["RING_BYTES", "RING_PACKETS", "CaptureRings", "DiscardWriter", "RingMerger", "RingOutput", "RingWriter"]
