"""Fixed-capacity flow table (open addressing, batched, nogil) shared by the GWLB, the firewall and the NAT gateway.

Key: (a_ip uint32, b_ip uint32, a_port uint16, b_port uint16, proto uint8, tag uint64), taken AS GIVEN (directional).
Use :func:`canonical_5tuple` first when a flow and its reply must share one entry. ``tag`` is the GWLB endpoint id, a
firewall zone/endpoint, or 0 for NAT (``tag=None`` means 0 for every packet).

Slots: every live entry has a slot index in ``[0, capacity)`` that stays the same while the entry lives (the hash
buckets hold slot indices; backward-shift deletion moves bucket entries, never slots). Stages keep their own
per-slot value arrays (``np.empty(table.capacity, ...)``: firewall index, cookie, NAT port...) indexed by slot and
re-initialise them whenever ``out_is_new != 0``.

Idle expiry is driven by packet timestamps: an entry is idle-expired at time ``t`` when
``t - last_seen >= timeout`` where ``timeout`` is the slot's override if it is >= 0, else ``tcp_timeout_ns`` for
proto 6 and ``other_timeout_ns`` for every other protocol.

Records: ``expire``, ``expire_all``, ``drain``, ``records`` and ``take_ended`` return copies of entries as a numpy
structured array of :data:`FLOW_DTYPE` (fields ``a_ip b_ip a_port b_port proto state live tag first_seen last_seen
packets bytes timeout``), taken BEFORE the slot is freed, so a stage can log the session (its per-slot arrays still
hold the ended session's values until the stage overwrites them).
"""
from typing import Literal

import numpy as np

FLOW_DTYPE: np.dtype
"""Structured dtype of one entry (64 bytes, explicit offsets): a_ip <u4, b_ip <u4, a_port <u2, b_port <u2,
proto u1, state u1, live u1, tag <u8, first_seen <i8, last_seen <i8, packets <u8, bytes <u8, timeout <i8."""

IS_EXISTING: int  # 0: out_is_new value for a packet of a known, live flow
IS_NEW: int  # 1: a new entry was inserted (fresh slot, or a slot freed by eviction)
IS_RESTARTED: int  # 2: the key was found idle-expired: its old session ended, the same slot restarted as new

END_RESTARTED: int  # 1: take_ended() reason: the key came back after its idle timeout (slot reused by it)
END_EVICTED: int  # 2: take_ended() reason: evicted (evict="oldest-idle") to make room for another key

DEFAULT_TCP_TIMEOUT_NS: int  # 350 s
DEFAULT_OTHER_TIMEOUT_NS: int  # 120 s

def canonical_5tuple(
    src_ip: np.ndarray,  # const uint32[::1], shape (n,)
    dst_ip: np.ndarray,  # const uint32[::1], shape (n,)
    sport: np.ndarray,  # const uint16[::1], shape (n,)
    dport: np.ndarray,  # const uint16[::1], shape (n,)
    out_a_ip: np.ndarray,  # uint32[::1], shape (n,)
    out_b_ip: np.ndarray,  # uint32[::1], shape (n,)
    out_a_port: np.ndarray,  # uint16[::1], shape (n,)
    out_b_port: np.ndarray,  # uint16[::1], shape (n,)
    out_reversed: np.ndarray,  # uint8[::1], shape (n,)
) -> int:
    """Order the two endpoints of each packet so that a flow and its reply give the same key.

    Endpoint a is the smaller of (src_ip, sport) and (dst_ip, dport) compared as (ip, port) pairs; b the other.
    ``out_reversed[i]`` is 0 when the packet travels a -> b (its source is endpoint a), 1 when it travels b -> a.
    Returns n. Raises ValueError (naming the argument) on a wrong dtype, length or non-contiguous array.
    """

class FlowTable:
    """Open-addressing hash table (linear probing in Robin Hood order, backward-shift deletion) over a pool of
    ``capacity`` slots. Not thread-safe: the batched methods release the GIL, so one table must not be used
    from two threads at once.

    Parameters
    ----------
    capacity : int
        Maximum number of live entries (1 .. 2**30). Inserts beyond it are refused (slot -1, counted in
        ``refused``) unless ``evict="oldest-idle"`` finds an idle-expired entry near the key's home bucket (its
        probe sequence, at least 32 buckets) to evict. Memory: 64 bytes per slot + 8 bytes per bucket.
    max_load : float
        Upper bound on bucket occupancy, in (0, 1]; the bucket count is the smallest power of two
        >= capacity / max_load and > capacity (default 0.9), at most 2**31 (ValueError beyond).
    tcp_timeout_ns, other_timeout_ns : int
        Idle timeouts in ns for proto 6 and for every other protocol (default 350 s and 120 s). Also settable
        as attributes.
    evict : {"none", "oldest-idle"}
        Policy when an insert finds the table full.
    seed : int
        Seed of the key hash (uint64).

    Attributes (numpy views of the table's own memory, length ``capacity``, indexed by slot; values at slots
    whose ``live`` is 0 are unspecified). They are strided views into one array of :data:`FLOW_DTYPE`, read-only
    except ``state`` and ``timeout``, which a stage may write (or use :meth:`set_state` / :meth:`set_timeout`).
    """

    def __init__(
        self,
        capacity: int,
        *,
        max_load: float = 0.9,
        tcp_timeout_ns: int = 350_000_000_000,
        other_timeout_ns: int = 120_000_000_000,
        evict: Literal["none", "oldest-idle"] = "none",
        seed: int = 0,
    ) -> None: ...
    @property
    def capacity(self) -> int: ...
    @property
    def n_buckets(self) -> int: ...
    @property
    def max_load(self) -> float: ...
    @property
    def evict(self) -> str: ...
    tcp_timeout_ns: int
    other_timeout_ns: int
    def __len__(self) -> int:
        """Number of live entries."""
    # --- per-slot numpy views (length capacity) ---
    @property
    def entries(self) -> np.ndarray:
        """Read-only structured view (FLOW_DTYPE) of every slot."""
    @property
    def a_ip(self) -> np.ndarray: ...  # uint32, read-only view
    @property
    def b_ip(self) -> np.ndarray: ...  # uint32, read-only view
    @property
    def a_port(self) -> np.ndarray: ...  # uint16, read-only view
    @property
    def b_port(self) -> np.ndarray: ...  # uint16, read-only view
    @property
    def proto(self) -> np.ndarray: ...  # uint8, read-only view
    @property
    def tag(self) -> np.ndarray: ...  # uint64, read-only view
    @property
    def live(self) -> np.ndarray: ...  # uint8 (1 = slot holds a live entry), read-only view
    @property
    def first_seen(self) -> np.ndarray: ...  # int64 ns, read-only view
    @property
    def last_seen(self) -> np.ndarray: ...  # int64 ns, read-only view
    @property
    def packets(self) -> np.ndarray: ...  # uint64, read-only view
    @property
    def bytes(self) -> np.ndarray: ...  # uint64, read-only view
    @property
    def state(self) -> np.ndarray: ...  # uint8, WRITABLE view: free for the stage (0 on insert)
    @property
    def timeout(self) -> np.ndarray: ...  # int64 ns, WRITABLE view: per-slot override, -1 = protocol default
    # --- batched operations (each one nogil loop) ---
    def lookup_or_insert(
        self,
        a_ip: np.ndarray,  # const uint32[::1], shape (n,)
        b_ip: np.ndarray,  # const uint32[::1], shape (n,)
        a_port: np.ndarray,  # const uint16[::1], shape (n,)
        b_port: np.ndarray,  # const uint16[::1], shape (n,)
        proto: np.ndarray,  # const uint8[::1], shape (n,)
        tag: np.ndarray | None,  # const uint64[::1], shape (n,); None = 0 for all
        ts_ns: np.ndarray,  # const int64[::1], shape (n,)
        nbytes: np.ndarray,  # const uint32[::1], shape (n,) (e.g. batch.wirelen)
        out_slot: np.ndarray,  # int64[::1], shape (n,)
        out_is_new: np.ndarray,  # uint8[::1], shape (n,)
        insert: bool = True,  # False: keys not in the table are left out (slot -1, not refused)
    ) -> int:
        """Find or insert each key in batch order, and account the packet to it.

        Packet i sees every insert made by packets j < i of the same call. On a hit: last_seen = max(last_seen,
        ts), packets += 1, bytes += nbytes; out_is_new = IS_EXISTING. A hit on an entry that is idle-expired at ts
        restarts it in place (the old record goes to :meth:`take_ended` with END_RESTARTED, counted in
        ``expired`` and ``restarted``); out_is_new = IS_RESTARTED. On a miss a new entry is inserted with
        first_seen = last_seen = ts, packets = 1, bytes = nbytes, state 0, timeout -1; out_is_new = IS_NEW. When
        the table holds ``capacity`` live entries the insert is refused (out_slot = -1, out_is_new = 0, counted in
        ``refused``) unless evict="oldest-idle" evicts the idle-expired entry with the oldest last_seen among the buckets
        of the key's probe sequence, or the 32 buckets from its home bucket when the sequence is shorter (record
        to take_ended with END_EVICTED, counted in ``evicted``; the new key gets the victim's slot).

        Returns the number of refused packets in this call. ValueError on wrong dtype/length.
        """
    def lookup(
        self,
        a_ip: np.ndarray,  # const uint32[::1], shape (n,)
        b_ip: np.ndarray,  # const uint32[::1], shape (n,)
        a_port: np.ndarray,  # const uint16[::1], shape (n,)
        b_port: np.ndarray,  # const uint16[::1], shape (n,)
        proto: np.ndarray,  # const uint8[::1], shape (n,)
        tag: np.ndarray | None,  # const uint64[::1], shape (n,); None = 0 for all
        out_slot: np.ndarray,  # int64[::1], shape (n,)
    ) -> int:
        """Find each key without inserting or touching its statistics: out_slot = slot, or -1 when absent.

        An entry that is idle-expired but not yet reaped by expire() is still found. Returns the number found.
        """
    def delete(self, slots: np.ndarray) -> int:  # const int64[::1]
        """Free the given slots (-1 and slots not live are ignored). Returns the number deleted (``deleted``)."""
    def expire(self, now_ns: int, max_scan: int) -> tuple[np.ndarray, np.ndarray]:
        """Amortized idle expiry: scan up to ``max_scan`` slots from a persistent cursor (wrapping around).

        Frees each live entry idle-expired at ``now_ns`` and returns ``(slots int64[k], records FLOW_DTYPE[k])``
        with the records copied before freeing, in scan order. Counted in ``expired``.
        """
    def expire_all(self, now_ns: int) -> tuple[np.ndarray, np.ndarray]:
        """Expire over every slot (same as expire with max_scan = capacity, cursor unchanged)."""
    def drain(self) -> tuple[np.ndarray, np.ndarray]:
        """Return every live entry (slots ascending, records) and empty the table (end of run: session logs).

        Drained entries are counted in ``drained``, not in ``expired``/``deleted``.
        """
    def live_slots(self) -> np.ndarray:
        """int64 array of the live slots, ascending."""
    def records(self, slots: np.ndarray) -> np.ndarray:
        """Copy of the entries at ``slots`` (const int64[::1], all in [0, capacity)) as FLOW_DTYPE records."""
    def take_ended(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sessions ended inside lookup_or_insert since the last call: (slots int64[k], records FLOW_DTYPE[k],
        reasons uint8[k] END_RESTARTED/END_EVICTED), in event order; clears the list. Call after each
        lookup_or_insert if the stage logs sessions (the list keeps growing until taken)."""
    def set_timeout(self, slots: np.ndarray, timeout_ns: np.ndarray | int) -> int:
        """Per-slot idle timeout override (int64 ns; -1 restores the protocol default), e.g. a short timeout for a
        closed TCP session. slots const int64[::1]; -1 / dead slots ignored. Returns the number set."""
    def set_state(self, slots: np.ndarray, state: np.ndarray | int) -> int:
        """Set the per-slot ``state`` byte (uint8 array or scalar); -1 / dead slots ignored. Returns number set."""
    def add_counts(self, slots: np.ndarray, first_seen: np.ndarray, nbytes: np.ndarray,
                   ts_ns: np.ndarray | None = None, out_counted: np.ndarray | None = None) -> int:
        """Add 1 packet and nbytes[i] bytes to live slot slots[i] still holding the entry first seen at
        first_seen[i] (int64, int64, uint32 arrays); -1, dead or reused slots ignored. With ts_ns (int64): only
        where the entry is not idle-expired at ts_ns[i], whose last_seen then moves to ts_ns[i] if later.
        out_counted (uint8, optional): 1 per row counted. Returns the rows counted."""
    def clear(self) -> None:
        """Remove every entry without counting (statistics are kept; the expire cursor returns to 0)."""
    def stats(self) -> dict[str, int]:
        """Counters: live, inserted, refused, expired, restarted, deleted, evicted, drained, max_probe (longest
        probe sequence seen, in buckets examined)."""
