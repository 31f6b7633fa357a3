"""Per-session stream state for content inspection (DESIGN.md section 12, issue 11 item 1).

A :class:`StreamTable` is a pool of ``capacity`` inspected sessions. Row ``r`` of the pool owns two *session
directions* (sd ``2r``: client -> server, ``2r + 1``: server -> client), each with a head buffer of ``head_size``
bytes (the first bytes of its stream: what App-ID and the HTTP / TLS / DNS field extraction read) and up to
``MAX_HELD`` held out-of-order ranges inside it. Memory is fixed at creation: ``capacity * 2 * (head_size + 80)``
bytes, allocated zeroed so pages are committed only as rows are used. When every row is taken, new sessions are
not inspected and are counted (``refused``), never a crash.

The reassembly itself is one nogil pass in ``_kernels.stream.stream_feed``: see its docstring for the semantics
(in-order bytes, retransmissions and overlaps inspected once, holes past the head skipped and counted).
"""
from __future__ import annotations

import numpy as np

from .._kernels import stream as _k
from .._kernels.heap import zeroed

__all__ = ["COUNTER_NAMES", "StreamTable"]

COUNTER_NAMES = ("segments", "bytes_new", "bytes_retransmitted", "segments_out_of_order", "bytes_held",
                 "held_limit", "gap_bytes", "datagrams", "bad_headers")
assert len(COUNTER_NAMES) == _k.N_COUNTERS


class StreamTable:
    """Bounded pool of inspected sessions and their two stream directions.

    Parameters
    ----------
    capacity : int
        Sessions inspected at once.
    head_size : int
        Bytes of each direction's stream kept for App-ID and field extraction (the reassembly window). A TLS
        ClientHello with a post-quantum key share is about 1.8 kB; the default 4096 holds it.
    """

    def __init__(self, capacity: int = 8192, head_size: int = 4096):
        if capacity < 1 or head_size < 64:
            raise ValueError(f"StreamTable: capacity must be >= 1 and head_size >= 64, got {capacity}, {head_size}")
        self.capacity = int(capacity)
        self.head_size = int(head_size)
        m = 2 * self.capacity
        self.isn = np.zeros(m, np.uint32)
        self.nxt = np.zeros(m, np.int64)
        self.flags = np.zeros(m, np.uint8)
        # the per-direction tables on pages of their own, without huge pages: a page is committed (and zeroed) at
        # the first bytes a session writes to it, not 2 MiB at a time
        self.held = zeroed((m, 2 * _k.MAX_HELD), np.int64)
        self.head = zeroed((m, self.head_size), np.uint8)
        self.counters = np.zeros(_k.N_COUNTERS, np.int64)
        self._free = np.arange(self.capacity - 1, -1, -1, dtype=np.int64)  # a stack: pop from the end
        self._n_free = self.capacity
        self.refused = 0

    def __len__(self) -> int:
        return self.capacity - self._n_free

    def allocate(self, k: int) -> np.ndarray:
        """Rows for ``k`` new sessions (reset); -1 for those beyond the free rows (counted in ``refused``)."""
        take = min(k, self._n_free)
        rows = np.full(k, -1, np.int64)
        if take:
            rows[:take] = self._free[self._n_free - take:self._n_free][::-1]
            self._n_free -= take
            self.reset(rows[:take])
        self.refused += k - take
        return rows

    def release(self, rows: np.ndarray) -> None:
        """Return rows to the pool (each at most once)."""
        rows = np.asarray(rows, np.int64)
        rows = rows[rows >= 0]
        if rows.shape[0]:
            self._free[self._n_free:self._n_free + rows.shape[0]] = rows
            self._n_free += rows.shape[0]

    def reset(self, rows: np.ndarray) -> None:
        sds = np.concatenate([2 * rows, 2 * rows + 1])
        self.isn[sds] = 0
        self.nxt[sds] = 0
        self.flags[sds] = 0
        self.held[sds] = 0

    def feed(self, batch, sd: np.ndarray, seen: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Reassemble the batch's payload into the session directions ``sd`` (int64[n], -1: not inspected);
        ``seen`` (uint8[2 * capacity], optional) is set to 1 for the sd of every packet.

        Returns the kernel's per-packet outputs: ``lo``, ``hi`` (stream offsets made available by the packet),
        ``seg`` (stream offset of its first payload byte), ``pay`` (arena offset of its payload, -1 if none),
        ``src`` (``_kernels.stream.SRC_*``).
        """
        n = len(batch)
        out = {name: np.empty(n, np.int64) for name in ("lo", "hi", "seg", "pay")}
        out["src"] = np.empty(n, np.uint8)
        _k.stream_feed(batch.data, batch.off, batch.caplen, batch.l3_off, batch.l4_off, batch.proto,
                       batch.tcp_flags, np.ascontiguousarray(sd, np.int64), self.isn, self.nxt, self.flags,
                       self.held, self.head, out["lo"], out["hi"], out["seg"], out["pay"], out["src"],
                       self.counters, seen)
        return out

    def stats(self) -> dict[str, int]:
        d = {name: int(v) for name, v in zip(COUNTER_NAMES, self.counters)}
        d["sessions_refused"] = int(self.refused)
        return d
