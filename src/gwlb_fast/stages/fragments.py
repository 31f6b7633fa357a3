"""IPv4 fragments along the modelled path: tracked, not reassembled (DESIGN.md section 10).

Only a datagram's first fragment (offset 0) carries the L4 header, so only it can be hashed to a firewall by its
5-tuple, matched against port rules and translated by port. The GWLB (whose flows are 5-tuples, so it needs the
L4 header), the firewall and the NAT gateway therefore act on the first fragment, and every later fragment of the
datagram (same source, destination, protocol and IP id, RFC 791 section 2.3) follows it: the same firewall, the
same verdict (delivered, or dropped with the same stage and reason) and the same address rewrite. No port is
rewritten in a later fragment (it has none); the transport checksum, which covers the whole datagram, lives in
the first fragment and is updated there.

A later fragment that arrives before its first fragment is held (bounded: ``max_held`` packets, each for at most
``hold_seconds`` after its datagram's first-seen fragment) and released right after the first fragment when it
comes, stamped with the first fragment's time (the time it leaves); when the hold time runs out it is dropped
(``FRAG_NO_FIRST``). A fragment overlapping bytes already seen of its datagram is dropped (``FRAG_OVERLAP``), as
Linux does since 4.19 for IPv4 (and RFC 5722 requires for IPv6). The table holds ``capacity`` datagrams at once;
beyond that a new datagram's fragments are dropped (``FRAG_TABLE_FULL``).

Every later fragment that takes its first fragment's fate also counts where the first fragment was counted, in
the same direction, with its own length on the wire: its firewall session (packets and bytes, so the flow log's
record), the GWLB's flow and per-firewall counters, the NAT gateway's mapping, or the flow log's record of a flow
dropped or forwarded without a session. The walk leaves, per first fragment, where it was counted (the ``REF_*``
columns); the tracker keeps that beside the datagram's entry for the later fragments that come after it. A later
fragment also keeps what it counts in alive, as a packet of the flow does: the session's, flow's and mapping's
last_seen move to its time (never back), unless the entry has already idled out at that time (its table's
timeout for it: the protocol's, or a closed or denied session's shorter one), in which case it counts nowhere.
The later fragments of a batch are counted after the batch's walk, so inside one batch the packets with ports
meet the tables before them.

One :class:`FragmentTracker` serves a whole pipeline: :meth:`scan` enters the fragments of a batch before the
path is walked (later fragments keep status ``FRAGMENT``, so the walk leaves them alone), :meth:`settle` gives
them their first fragment's fate after the walk, :meth:`follow` where to count them.
"""
from __future__ import annotations

import numpy as np

from .._kernels import frag as _k
from ..batch import PacketBatch
from ..status import PktStatus

DEFAULT_HOLD_SECONDS = 30.0   # Linux's ipfrag_time: how long a datagram's fragments wait for the rest
DEFAULT_CAPACITY = 4096       # datagrams tracked at once
DEFAULT_MAX_HELD = 4096       # early fragments held at once (their bytes are kept)

K_NONE, K_FIRST, K_LATER = _k.K_NONE, _k.K_FIRST, _k.K_LATER
R_FOLLOW, R_HELD, R_DROPPED = _k.R_FOLLOW, _k.R_HELD, _k.R_DROPPED

# where a first fragment was counted (int64, -1: nowhere): the GWLB (pipeline index) that balanced it, its flow slot
# and first_seen there and the firewall it sent it to; the firewall, its session slot, the session's start, its flow
# entry's first_seen and the packet's canonical direction; the NAT gateway (pipeline index) whose mapping counted
# it, the mapping's slot and first_seen; and whether the flow log's record of a flow without a session counted it
# (1), with the packet's ports before NAT and whether its sender is the server (pickup)
(REF_GWLB, REF_LB_SLOT, REF_LB_FIRST, REF_LB_FW, REF_FW, REF_FW_SLOT, REF_FW_START, REF_FW_FIRST, REF_REV, REF_NAT,
 REF_NAT_SLOT, REF_NAT_FIRST, REF_LOG, REF_SPORT, REF_DPORT, REF_FLIP) = range(16)
N_REF = 16


class FragmentTracker:
    """The fragment table of one pipeline, plus the early fragments it holds.

    Parameters
    ----------
    capacity : int
        Datagrams tracked at once (rounded up to a multiple of the table's associativity).
    hold_seconds : float
        How long a datagram's entry lives after its first-seen fragment; an early fragment waits at most that long.
    max_held : int
        Most early fragments held at once; more are dropped (``FRAG_TABLE_FULL``).
    """

    def __init__(self, capacity: int = DEFAULT_CAPACITY, hold_seconds: float = DEFAULT_HOLD_SECONDS,
                 max_held: int = DEFAULT_MAX_HELD):
        if capacity < 1 or hold_seconds <= 0 or max_held < 0:
            raise ValueError(f"FragmentTracker: capacity >= 1, hold_seconds > 0 and max_held >= 0, got "
                             f"{capacity}, {hold_seconds}, {max_held}")
        rows = -(-int(capacity) // _k.WAYS) * _k.WAYS
        self.tab = np.zeros((rows, _k.NF), np.int64)
        self.ranges = np.zeros((rows, 2 * _k.MAX_RANGES), np.int32)
        self.hold_ns = round(hold_seconds * 1e9)
        self.max_held = int(max_held)
        self.held: PacketBatch | None = None   # early fragments of earlier batches (parsed columns kept)
        self.held_slot = np.zeros(0, np.int64)
        self.held_gen = np.zeros(0, np.int64)
        self.refs = np.full((rows, N_REF), -1, np.int64)  # per entry: where its first fragment was counted
        self.stats = {"first_fragments": 0, "later_fragments": 0, "followed": 0, "released": 0}

    @property
    def n_held(self) -> int:
        return 0 if self.held is None else len(self.held)

    def take_held(self) -> tuple[PacketBatch | None, np.ndarray, np.ndarray]:
        """The held fragments (to go in front of the next batch), with their table rows and generations."""
        out = (self.held, self.held_slot, self.held_gen)
        self.held, self.held_slot, self.held_gen = None, np.zeros(0, np.int64), np.zeros(0, np.int64)
        return out

    def scan(self, batch: PacketBatch, start: int, slot: np.ndarray, gen: np.ndarray) -> np.ndarray:
        """Enter the fragments of ``batch[start:]`` (parsed); rows before ``start`` are held fragments whose
        ``slot``/``gen`` are given. Fills ``slot``/``gen`` for the rest and returns the kind of every row."""
        n = len(batch)
        kind = np.zeros(n, np.uint8)
        kind[:start] = K_LATER
        if n == start:
            return kind
        _k.frag_scan(batch.data, batch.off, batch.caplen, batch.l3_off, batch.status, batch.src_ip, batch.dst_ip,
                     batch.proto, batch.ts_ns, self.tab, self.ranges, self.hold_ns, start, kind, slot, gen)
        self.stats["first_fragments"] += int(np.count_nonzero(kind[start:] == K_FIRST))
        self.stats["later_fragments"] += int(np.count_nonzero(kind[start:] == K_LATER))
        return kind

    def settle(self, batch: PacketBatch, kind: np.ndarray, slot: np.ndarray, gen: np.ndarray, stage: np.ndarray,
               fw: np.ndarray, delivered: np.ndarray, drop_stage: int) -> np.ndarray:
        """After the walk: later fragments take their first fragment's fate (see ``frag_settle``); returns the
        release column (first fragment's row for fragments released by it, else the R_* code)."""
        n = len(batch)
        release = np.zeros(n, np.int64)
        now = int(batch.ts_ns.max()) if n else 0
        _k.frag_settle(batch.data, batch.off, batch.caplen, batch.l3_off, kind, slot, gen, batch.status, stage, fw,
                       delivered, batch.src_ip, batch.dst_ip, batch.ts_ns, self.tab, now, self.hold_ns,
                       drop_stage, release)
        later = kind == K_LATER
        self.stats["followed"] += int(np.count_nonzero(later & ((release == R_FOLLOW) | (release >= 0))))
        self.stats["released"] += int(np.count_nonzero(later & (release >= 0)))
        held = np.flatnonzero(later & (release == R_HELD))
        if held.size:
            keep = held[: self.max_held]
            over = held[self.max_held:]
            batch.status[over] = PktStatus.FRAG_TABLE_FULL
            stage[over] = drop_stage
            release[over] = R_DROPPED
            self.held = batch[keep].copy()
            self.held_slot = slot[keep].copy()
            self.held_gen = gen[keep].copy()
        return release

    def follow(self, kind: np.ndarray, slot: np.ndarray, gen: np.ndarray, release: np.ndarray,
               refs: np.ndarray) -> np.ndarray:
        """After :meth:`settle`: ``refs`` (int64[n, N_REF]) holds where the walk counted each first fragment; it is
        kept for the datagram's later fragments, and every later fragment that followed its first fragment gets
        its datagram's (-1 for the others). Returns the rows of the later fragments that followed."""
        _k.frag_refs(kind, slot, gen, release, self.tab, self.refs, refs)
        later = kind == K_LATER
        return np.flatnonzero(later & ((release == R_FOLLOW) | (release >= 0)))

    def flush(self) -> PacketBatch | None:
        """End of run: the fragments still held never saw their first fragment; returns them (status
        ``FRAG_NO_FIRST``) for the caller to count."""
        held, _, _ = self.take_held()
        if held is not None:
            held.status[:] = PktStatus.FRAG_NO_FIRST
        return held


__all__ = ["DEFAULT_CAPACITY", "DEFAULT_HOLD_SECONDS", "DEFAULT_MAX_HELD", "N_REF", "FragmentTracker"]
