"""The GWLB stage: flow table, symmetric hashing, Maglev choice, health and failover (DESIGN.md section 3).

Per batch (all vectorized; no per-packet Python):

1. the symmetric hash for the configured stickiness (5-, 3- or 2-tuple) of every packet still ``OK``;
2. flow-table lookup-or-insert keyed by the canonical 5-tuple plus the endpoint id (``batch.endpoint_id``, 0 when
   the batch has none), so a flow and its reply share one entry;
3. a new flow (or a 5-tuple back after its flow idled out) gets a firewall by Maglev over the firewalls that take new
   flows (healthy ones) and a fresh random flow cookie, different from the slot's previous one;
4. an established flow keeps its firewall while that firewall is healthy, or draining and inside its draining
   timeout. Otherwise, with ``failover="keep"`` its packets are dropped (``FW_FAILED``) and counted, with
   ``failover="rebalance"`` the flow is re-pinned by Maglev over the healthy firewalls (same hash, so all of a flow's
   packets, both directions, move together). A draining firewall past its timeout behaves as a removed one: its
   flows fail over the same way.

Outputs: ``batch.fw_index`` (int16, -1 when not forwarded), ``batch.flow_cookie`` (uint32) and ``batch.status``
(``NO_HEALTHY_FW``, ``FW_FAILED``, ``FLOW_TABLE_FULL``). :meth:`Gwlb.check_return` validates Geneve packets coming
back from a firewall (known flow and matching cookie, else ``STALE_COOKIE``); :meth:`Gwlb.check_passed` does the
same for rows of the batch just processed, on the flow slots the forward pass found (a lookup only where a slot may
have changed flow since).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .._kernels.columns import take_columns, tally
from .._kernels.flowhash import geneve_udp_sport, hash_2tuple, hash_3tuple, hash_5tuple
from .._kernels.flowtable import IS_EXISTING, FlowTable, canonical_5tuple
from .._kernels.heap import zeroed
from ..status import PktStatus
from .maglev import DEFAULT_TABLE_SIZE, Maglev

STICKINESS = ("5-tuple", "3-tuple", "2-tuple")
FAILOVER = ("keep", "rebalance")
HEALTHY, UNHEALTHY, DRAINING = 0, 1, 2
HEALTH_STATES = {"healthy": HEALTHY, "unhealthy": UNHEALTHY, "draining": DRAINING}

_NS = 1_000_000_000
_NEVER = np.iinfo(np.int64).max


class Gwlb:
    """Gateway Load Balancer stage over a fleet of firewalls.

    Parameters
    ----------
    firewalls : sequence of str, or mapping name -> anything (e.g. address)
        Firewall names; ``fw_index`` is the position in this order.
    stickiness : {"5-tuple", "3-tuple", "2-tuple"}
        Which fields choose the firewall of a new flow (the flow table is always per 5-tuple and endpoint).
    failover : {"keep", "rebalance"}
        What happens to established flows of a firewall that fails (or whose draining timeout ends).
    idle_timeouts : mapping with "tcp" and "other", seconds
        Flow idle timeouts (default 350 s and 120 s).
    draining_timeout : float
        Seconds a draining firewall keeps its flows (default 300).
    flow_capacity : int
        Most flows held at once; beyond it new flows are dropped with ``FLOW_TABLE_FULL`` unless an idle-expired
        flow can be evicted.
    seed : int
        Seeds the flow hash, the Maglev name hashes, the flow table and the cookie generator.
    table_size : int
        Maglev table size (prime, default 65537).
    """

    def __init__(
        self,
        firewalls: Sequence[str] | Mapping[str, object],
        stickiness: str = "5-tuple",
        failover: str = "keep",
        idle_timeouts: Mapping[str, float] | None = None,
        draining_timeout: float = 300.0,
        flow_capacity: int = 1 << 20,
        seed: int = 0,
        table_size: int = DEFAULT_TABLE_SIZE,
    ):
        names = list(firewalls.keys() if isinstance(firewalls, Mapping) else firewalls)
        if not names:
            raise ValueError("Gwlb: at least one firewall is required")
        if len(names) > 32767:
            raise ValueError("Gwlb: at most 32767 firewalls")
        if stickiness not in STICKINESS:
            raise ValueError(f"Gwlb: stickiness must be one of {', '.join(STICKINESS)}, got {stickiness!r}")
        if failover not in FAILOVER:
            raise ValueError(f"Gwlb: failover must be one of {', '.join(FAILOVER)}, got {failover!r}")
        timeouts = {"tcp": 350.0, "other": 120.0, **(idle_timeouts or {})}
        if set(timeouts) != {"tcp", "other"} or min(timeouts.values()) <= 0:
            raise ValueError(f"Gwlb: idle_timeouts takes positive 'tcp' and 'other' seconds, got {idle_timeouts!r}")
        if draining_timeout < 0:
            raise ValueError(f"Gwlb: draining_timeout must be >= 0, got {draining_timeout}")
        self.names = [str(n) for n in names]
        self.stickiness = stickiness
        self.failover = failover
        self.draining_timeout_ns = round(draining_timeout * _NS)
        self.seed = int(seed)
        self.maglev = Maglev(self.names, size=table_size, seed=seed)
        self.flows = FlowTable(
            int(flow_capacity),
            tcp_timeout_ns=round(timeouts["tcp"] * _NS),
            other_timeout_ns=round(timeouts["other"] * _NS),
            evict="oldest-idle",
            seed=seed,
        )
        cap = self.flows.capacity
        self._slot_fw = np.full(cap, -1, np.int16)
        self._slot_cookie = zeroed(cap, np.uint32)
        self._slot_lost = zeroed(cap, np.uint8)  # 1: this slot's flow was already counted in flows_lost
        self._min_timeout_ns = min(self.flows.tcp_timeout_ns, self.flows.other_timeout_ns)
        self._rng = np.random.default_rng(seed)
        k = len(self.names)
        self.health = np.zeros(k, np.uint8)
        self.drain_deadline = np.full(k, _NEVER, np.int64)
        # counters
        self.flows_per_fw = np.zeros(k, np.int64)
        self.packets_per_fw = np.zeros(k, np.int64)
        self.bytes_per_fw = np.zeros(k, np.int64)
        self.flows_lost = 0  # established flows whose packets met a failed firewall under failover=keep
        self.flows_rebalanced = 0
        self.drops = {"NO_HEALTHY_FW": 0, "FW_FAILED": 0, "FLOW_TABLE_FULL": 0, "STALE_COOKIE": 0}
        # when a list: each process() call appends (ts, fw, wirelen) of the packets it forwarded and (ts, fw) of the
        # flows it placed (new and rebalanced), the same rows the counters above count; whoever set it drains it
        self.activity: list[tuple[np.ndarray, ...]] | None = None
        # per packet of the last process() call: the firewall of its flow where it was dropped FW_FAILED, else -1
        self.failed_fw = np.zeros(0, np.int16)

    @classmethod
    def from_spec(cls, spec: Mapping, **overrides) -> Gwlb:
        """Build from one ``gwlb:`` entry of the topology file (DESIGN.md section 6): ``firewalls`` (mapping or
        list, required), ``stickiness``, ``failover``, ``idle_timeout: {tcp, other}``, ``draining_timeout``,
        ``flow_capacity``, ``seed``. Other keys (``address``, ``geneve``) belong to other stages and are ignored.
        ``overrides`` take precedence over the spec."""
        if "firewalls" not in spec and "firewalls" not in overrides:
            raise ValueError("Gwlb: the gwlb spec has no 'firewalls'")
        keys = {"firewalls": "firewalls", "stickiness": "stickiness", "failover": "failover",
                "idle_timeout": "idle_timeouts", "draining_timeout": "draining_timeout",
                "flow_capacity": "flow_capacity", "seed": "seed"}
        kwargs = {arg: spec[key] for key, arg in keys.items() if key in spec}
        kwargs.update(overrides)
        return cls(**kwargs)

    # ------------------------------------------------------------------ health
    def fw_id(self, fw: int | str) -> int:
        if isinstance(fw, str):
            try:
                return self.names.index(fw)
            except ValueError:
                raise ValueError(f"Gwlb: unknown firewall {fw!r}") from None
        if not 0 <= int(fw) < len(self.names):
            raise ValueError(f"Gwlb: firewall index {fw} out of range")
        return int(fw)

    def set_health(self, fw: int | str, state: str, now_ns: int = 0) -> None:
        """Set a firewall ``healthy``, ``unhealthy`` or ``draining``.

        Draining ends ``draining_timeout`` after ``now_ns`` (packet-timestamp time); after that the firewall behaves as
        removed: its flows fail over per ``failover``. Setting draining again while draining keeps the deadline.
        """
        if state not in HEALTH_STATES:
            raise ValueError(f"Gwlb: health state must be one of {', '.join(HEALTH_STATES)}, got {state!r}")
        i = self.fw_id(fw)
        if state == "draining":
            if self.health[i] != DRAINING:  # a repeated draining event does not extend the deadline
                self.drain_deadline[i] = int(now_ns) + self.draining_timeout_ns
        else:
            self.drain_deadline[i] = _NEVER
        self.health[i] = HEALTH_STATES[state]

    def accepting(self) -> np.ndarray:
        """bool[k]: firewalls that take new flows (healthy)."""
        return self.health == HEALTHY

    # ------------------------------------------------------------------ hashing
    def flow_hash(self, src_ip, dst_ip, sport, dport, proto) -> np.ndarray:
        """uint64 symmetric hash for the configured stickiness."""
        out = np.empty(src_ip.shape[0], np.uint64)
        if self.stickiness == "5-tuple":
            return hash_5tuple(src_ip, dst_ip, sport, dport, proto, self.seed, out)
        if self.stickiness == "3-tuple":
            return hash_3tuple(src_ip, dst_ip, proto, self.seed, out)
        return hash_2tuple(src_ip, dst_ip, self.seed, out)

    def udp_sport(self, batch, lo: int = 49152, hi: int = 65535) -> np.ndarray:
        """Geneve outer UDP source port per packet (uint16) from the flow hash (RFC 8926 section 3.3)."""
        b = batch
        h = self.flow_hash(b.src_ip, b.dst_ip, b.sport, b.dport, b.proto)
        return geneve_udp_sport(h, np.empty(len(b), np.uint16), lo, hi)

    # ------------------------------------------------------------------ the stage
    @staticmethod
    def _need(batch, *names):
        for name in names:
            if getattr(batch, name) is None:
                raise ValueError(f"Gwlb: batch has no {name} column (parse it first)")

    def _canonical(self, b, idx):
        src = b.src_ip[idx]
        n = src.shape[0]
        a_ip, b_ip = np.empty(n, np.uint32), np.empty(n, np.uint32)
        a_pt, b_pt = np.empty(n, np.uint16), np.empty(n, np.uint16)
        rev = np.empty(n, np.uint8)
        canonical_5tuple(src, b.dst_ip[idx], b.sport[idx], b.dport[idx], a_ip, b_ip, a_pt, b_pt, rev)
        tag = None if b.endpoint_id is None else np.ascontiguousarray(b.endpoint_id[idx])
        return a_ip, b_ip, a_pt, b_pt, np.ascontiguousarray(b.proto[idx]), tag

    def _hash_rows(self, batch, idx, pos, m):
        """The flow hash of the OK packets at positions ``pos`` (of the ``m`` at batch rows ``idx``): only the
        packets that need a Maglev choice are hashed."""
        if pos.shape[0] == m:
            rows = idx
        else:
            rows = pos if isinstance(idx, slice) else idx[pos]
        return self.flow_hash(batch.src_ip[rows], batch.dst_ip[rows], batch.sport[rows], batch.dport[rows],
                              np.ascontiguousarray(batch.proto[rows]))

    def process(self, batch, counted: np.ndarray | None = None):
        """Assign each ``OK`` packet of ``batch`` (parsed L3/L4 columns) a firewall and a flow cookie, in place.

        Packets whose status is not ``OK`` are left alone (``fw_index`` -1). Returns the batch. ``counted``
        (int64[n, 2], optional) receives, for each packet sent to a firewall, the flow slot it was counted in and
        that flow's first_seen (-1 for the others), for :meth:`count_followers`.
        """
        self._need(batch, "status", "src_ip", "dst_ip", "sport", "dport", "proto")
        fw_col = batch.ensure("fw_index", -1)
        cookie_col = batch.ensure("flow_cookie", 0)
        status = batch.status
        self.last_cut = None
        self._last = None
        if counted is not None:
            counted[:] = -1
        if status.any():
            idx = np.flatnonzero(status == PktStatus.OK)
            fw_col[:] = -1
            if idx.size == 0:
                return batch
            m = idx.shape[0]
        else:
            idx = slice(None)  # every packet OK: views of the columns instead of gathered copies
            m = len(batch)
            if m == 0:
                return batch
        self.failed_fw = np.zeros(0, np.int16)
        ts = np.ascontiguousarray(batch.ts_ns[idx])
        now = int(ts.min())  # reap only what is idle-expired for every packet of this batch
        span = int(ts.max()) - now
        a_ip, b_ip, a_pt, b_pt, proto, tag = self._canonical(batch, idx)
        nbytes = np.ascontiguousarray(batch.wirelen[idx])

        # amortized idle expiry: a bounded scan per batch keeps reaping ahead of insertion (restarts of a key that
        # comes back after its timeout are exact per packet inside lookup_or_insert)
        self.flows.expire(now, max(2 * m, 4096))
        slot = np.empty(m, np.int64)
        is_new = np.empty(m, np.uint8)
        refused = self.flows.lookup_or_insert(a_ip, b_ip, a_pt, b_pt, proto, tag, ts, nbytes, slot, is_new)
        # the GWLB keeps no session log (the list must not grow); the slots whose flow ended here (restart,
        # eviction) may hold another flow than the one an earlier packet of this batch found there
        ended = self.flows.take_ended()[0]
        full = slot < 0 if refused else None
        new_pos = np.flatnonzero(is_new != IS_EXISTING)  # IS_NEW or IS_RESTARTED (refused: IS_EXISTING)

        acc = self.accepting()
        k = len(self.names)
        choice = cookie = old_fw = old_cookie = None
        # A slot can hold two flows within one batch only if an entry idled out (restart or eviction) between two
        # of the batch's packets, i.e. the batch spans at least the shortest idle timeout; only then each packet
        # must be matched to the flow current at its arrival (sort-based path); otherwise the slot's last
        # assignment is every packet's.
        multi = new_pos.size > 0 and span >= self._min_timeout_ns
        if new_pos.size:
            new_slots = slot[new_pos]
            choice = self.maglev.lookup(self._hash_rows(batch, idx, new_pos, m), acc)
            old_cookie = self._slot_cookie[new_slots]
            old_fw = self._slot_fw[new_slots]
            cookie = self._rng.integers(1, 2**32, new_pos.size, dtype=np.uint32)
            cookie[cookie == old_cookie] ^= np.uint32(1)
            self._slot_fw[new_slots] = choice
            self._slot_cookie[new_slots] = cookie
            self.flows_per_fw += np.bincount(choice[choice >= 0], minlength=k)
        if multi:
            fw, pkt_cookie = self._per_packet_incarnation(slot, new_pos, choice, cookie, old_fw, old_cookie)
        elif full is None:
            fw, pkt_cookie = take_columns(slot, [self._slot_fw, self._slot_cookie])
        else:
            fw = np.full(m, -1, np.int16)
            live = ~full
            fw[live] = self._slot_fw[slot[live]]
            pkt_cookie = np.where(full, 0, self._slot_cookie[np.where(full, 0, slot)]).astype(np.uint32)

        # established flows whose firewall can no longer serve them (none while every firewall is healthy)
        st = None  # per packet status; None while every packet is OK
        if self.health.any():
            st = np.zeros(m, np.uint8)
            has_fw = fw >= 0
            f = np.where(has_fw, fw, 0)
            hf = self.health[f]
            ok_fw = (hf == HEALTHY) | ((hf == DRAINING) & (ts < self.drain_deadline[f]))
            failed = has_fw & ~ok_fw
            if failed.any():
                fpos = np.flatnonzero(failed)
                fslots = slot[fpos]
                cut_fw = fw[fpos].copy()
                if self.failover == "keep":
                    st[fpos] = PktStatus.FW_FAILED
                    failed_fw = np.full(len(batch), -1, np.int16)
                    failed_fw[np.arange(len(batch))[idx][fpos]] = fw[fpos]
                    self.failed_fw = failed_fw
                    fw[fpos] = -1
                    # the flow stays pinned to its firewall (and resumes if it comes back); count each lost flow
                    # once (failed packets belong to a flow older than this batch: new flows never pick a failed
                    # firewall)
                    ls = np.unique(fslots)
                    ls = ls[self._slot_lost[ls] == 0]
                    self.flows_lost += ls.size
                    self._slot_lost[ls] = 1
                else:
                    repick = self.maglev.lookup(self._hash_rows(batch, idx, fpos, m), acc)
                    fw[fpos] = repick
                    # a slot whose flow restarted later in this batch keeps the new flow's pick
                    pinned = ~np.isin(fslots, slot[new_pos]) if new_pos.size else slice(None)
                    self._slot_fw[fslots[pinned]] = repick[pinned]
                    _, first = np.unique(fslots, return_index=True)
                    moved = repick[first] >= 0
                    self.flows_rebalanced += int(moved.sum())
                    self.flows_per_fw += np.bincount(repick[first][moved], minlength=k)
                    if self.activity is not None:
                        self.activity.append((None, None, None, ts[fpos[first][moved]], repick[first][moved]))
                rows = np.arange(len(batch))[idx][fpos]
                self.last_cut = (rows, cut_fw, fw[fpos] >= 0)
        if new_pos.size:
            self._slot_lost[slot[new_pos]] = 0  # after the accounting above, which saw the slots' earlier flows
        # packets left without a firewall (no firewall accepts new flows): drop, and forget their flows so that
        # they get a real pick once one is healthy again
        dead = None
        if st is not None or full is not None or fw.min() < 0:
            if st is None:
                st = np.zeros(m, np.uint8)
            nofw = (fw < 0) & (st == 0)
            if full is not None:
                nofw &= ~full
            if nofw.any():
                st[nofw] = PktStatus.NO_HEALTHY_FW
                dead = np.unique(slot[nofw])
                dead = dead[self._slot_fw[dead] < 0]
                self.flows.delete(dead)
            if full is not None:
                st[full] = PktStatus.FLOW_TABLE_FULL
            fw[st != 0] = -1  # from here on, a packet is forwarded (st 0) exactly where fw >= 0
            status[idx] = st
        fw_col[idx] = fw
        cookie_col[idx] = pkt_cookie
        if self.activity is not None:
            ok = fw >= 0
            placed = choice >= 0 if choice is not None else None
            self.activity.append((ts[ok], fw[ok], batch.wirelen[idx][ok],
                                  ts[new_pos][placed] if placed is not None else ts[:0],
                                  choice[placed] if placed is not None else fw[:0]))
        tally(fw, nbytes, self.packets_per_fw, self.bytes_per_fw)
        if st is not None:
            per_status = np.bincount(st, minlength=256)
            for name in ("NO_HEALTHY_FW", "FW_FAILED", "FLOW_TABLE_FULL"):
                self.drops[name] += int(per_status[PktStatus[name]])
        if counted is not None:
            ok = fw >= 0
            rows = np.arange(len(batch))[idx][ok]
            counted[rows, 0] = slot[ok]
            counted[rows, 1] = self.flows.first_seen[slot[ok]]
        # for check_passed: each packet's slot, and the slots that may have changed flow after a packet found them
        unsure = ended if dead is None else np.concatenate([ended, dead])
        self._last = (batch, idx, slot, unsure, self._table_marks())
        return batch

    def count_followers(self, slot: np.ndarray, first_seen: np.ndarray, fw: np.ndarray, ts_ns: np.ndarray,
                        nbytes: np.ndarray) -> None:
        """Count packets that follow another packet's flow without being balanced (the later fragments of a
        datagram, which have no ports: see fragments.py), as :meth:`process` counts the packets it sends to
        firewall ``fw``: in the flow at ``slot`` (if it still holds the flow first seen at ``first_seen`` and the
        flow is not idle-expired at the packet's time ``ts_ns``, which then keeps it alive: its last_seen moves to
        that time), in the per-firewall packets and bytes and in ``activity``."""
        nbytes = np.ascontiguousarray(nbytes, np.uint32)
        self.flows.add_counts(slot, first_seen, nbytes, np.ascontiguousarray(ts_ns, np.int64))
        k = len(self.names)
        self.packets_per_fw += np.bincount(fw, minlength=k)
        self.bytes_per_fw += np.bincount(fw, weights=nbytes, minlength=k).astype(np.int64)
        if self.activity is not None:
            self.activity.append((ts_ns, fw, nbytes, ts_ns[:0], fw[:0]))

    #: after :meth:`process`: what :meth:`check_passed` needs (the batch, its OK rows, their slots, the slots whose
    #: flow may have changed within the call, the table's marks), None before
    _last = None

    #: after :meth:`process`: None, or ``(rows, firewall, moved)`` for the packets of established flows whose
    #: firewall could no longer serve them: batch rows, the firewall the flow was on, and whether the flow moved to
    #: another one (``failover: rebalance``) rather than being cut (``FW_FAILED``)
    last_cut = None

    def _per_packet_incarnation(self, slot, new_pos, choice, cookie, old_fw, old_cookie):
        """fw and cookie per packet when a slot may hold more than one flow within the batch: each packet gets the
        values of the latest flow start at or before it in its slot, or the slot's pre-batch values."""
        m = slot.shape[0]
        fw = np.full(m, -1, np.int16)
        ck = np.zeros(m, np.uint32)
        if new_pos.size == 0:
            return fw, ck
        order = np.argsort(np.where(slot < 0, np.iinfo(np.int64).max, slot), kind="stable")
        s_sorted = slot[order]
        start = np.ones(m, bool)
        start[1:] = s_sorted[1:] != s_sorted[:-1]
        grp_start = np.maximum.accumulate(np.where(start, np.arange(m), 0))
        ev_of_pkt = np.full(m, -1, np.int64)
        ev_of_pkt[new_pos] = np.arange(new_pos.size)
        ev_sorted = ev_of_pkt[order]
        last = np.maximum.accumulate(np.where(ev_sorted >= 0, np.arange(m), -1))
        has_ev = last >= grp_start
        ev_idx = ev_sorted[np.maximum(last, 0)]
        # pre-batch values: the slot's current arrays, except slots that start a flow here (overwritten already)
        live = s_sorted >= 0
        sl = np.maximum(s_sorted, 0)
        fw_s = np.where(live, self._slot_fw[sl], -1).astype(np.int16)
        ck_s = np.where(live, self._slot_cookie[sl], 0).astype(np.uint32)
        starts = np.flatnonzero(start)
        big = np.iinfo(np.int64).max
        grp_first_ev = np.minimum.reduceat(np.where(ev_sorted >= 0, ev_sorted, big), starts)
        first_ev = np.repeat(grp_first_ev, np.diff(np.append(starts, m)))
        # each slot ends the batch with its last flow start (explicit: fancy assignment order is unspecified)
        grp_last_ev = np.maximum.reduceat(ev_sorted, starts)
        g = (grp_last_ev >= 0) & (s_sorted[starts] >= 0)
        self._slot_fw[s_sorted[starts][g]] = choice[grp_last_ev[g]]
        self._slot_cookie[s_sorted[starts][g]] = cookie[grp_last_ev[g]]
        had = first_ev != big
        fe = np.where(had, first_ev, 0)
        fw_s = np.where(had, old_fw[fe], fw_s)
        ck_s = np.where(had, old_cookie[fe], ck_s)
        fw_s = np.where(has_ev, choice[np.maximum(ev_idx, 0)], fw_s)
        ck_s = np.where(has_ev, cookie[np.maximum(ev_idx, 0)], ck_s)
        fw[order] = fw_s
        ck[order] = ck_s
        return fw, ck

    def check_return(self, batch):
        """Check Geneve packets coming back from a firewall, in place.

        ``batch`` holds the decapsulated view: the inner packet's L3/L4 columns plus ``endpoint_id`` and
        ``flow_cookie`` from the Geneve options. A packet of a known flow whose cookie matches stays ``OK``; any other
        ``OK`` packet gets ``STALE_COOKIE``. ``fw_index`` is set to the flow's firewall (-1 when unknown). Returns
        the batch.
        """
        self._need(batch, "status", "src_ip", "dst_ip", "sport", "dport", "proto", "flow_cookie")
        status = batch.status
        fw_col = batch.ensure("fw_index", -1)
        fw_col[:] = -1
        idx = np.flatnonzero(status == PktStatus.OK)
        if idx.size == 0:
            return batch
        good, s = self._returning(batch, idx)
        status[idx[~good]] = PktStatus.STALE_COOKIE
        fw_col[idx[good]] = self._slot_fw[s[good]]
        self.drops["STALE_COOKIE"] += int(np.count_nonzero(~good))
        return batch

    def check_return_rows(self, batch, rows) -> np.ndarray:
        """:meth:`check_return` of rows ``rows`` of ``batch`` (taken as ``OK``), leaving the batch untouched.

        Returns bool per row: True where the flow is known and the cookie matches; the other rows are counted as
        ``STALE_COOKIE``. For a caller that checks some rows of a batch without gathering them into a batch.
        """
        self._need(batch, "src_ip", "dst_ip", "sport", "dport", "proto", "flow_cookie")
        rows = np.asarray(rows, np.intp)
        if rows.size == 0:
            return np.zeros(0, bool)
        good, _ = self._returning(batch, rows)
        self.drops["STALE_COOKIE"] += int(np.count_nonzero(~good))
        return good

    def check_passed(self, batch, rows) -> np.ndarray:
        """:meth:`check_return_rows` of rows of the batch the last :meth:`process` call placed, on their way back
        from the firewalls with the values they were sent with (nothing touched the flow table in between).

        The forward pass found each packet's flow slot; a row whose slot still holds the flow it found there (the
        slot did not end and restart or lose its flow to an eviction or a deletion later in that call) is checked
        on the slot's cookie and firewall directly, which is what a lookup of its key would find; the other rows,
        and every row when ``batch`` is not that call's batch or the table changed since, are looked up.
        """
        last, self._last = self._last, None
        rows = np.asarray(rows, np.intp)
        if last is None or last[0] is not batch or last[4] != self._table_marks():
            return self.check_return_rows(batch, rows)
        if rows.size == 0:
            return np.zeros(0, bool)
        _, idx, slot, unsure, _ = last
        if not isinstance(idx, slice):
            at = np.full(len(batch), -1, np.int64)
            at[idx] = slot
            slot = at
        s, ck = take_columns(rows, [slot, batch.flow_cookie])
        sure = None  # None: every row's slot is sure
        if unsure.size or s.min() < 0:
            sure = (s >= 0) & ~np.isin(s, unsure)
        if sure is None or sure.all():
            slot_ck, slot_fw = take_columns(s, [self._slot_cookie, self._slot_fw])
            good = (slot_ck == ck) & (slot_fw >= 0)
        else:
            good = np.empty(rows.size, bool)
            p = np.flatnonzero(sure)
            slot_ck, slot_fw = take_columns(s[p], [self._slot_cookie, self._slot_fw])
            good[p] = (slot_ck == ck[p]) & (slot_fw >= 0)
            q = np.flatnonzero(~sure)
            good[q] = self._returning(batch, rows[q])[0]
        self.drops["STALE_COOKIE"] += int(rows.size - np.count_nonzero(good))
        return good

    def release(self) -> None:
        """Forget what :meth:`check_passed` keeps of the last :meth:`process` call (it holds that call's batch)."""
        self._last = None

    def _table_marks(self) -> tuple:
        """Counters of the flow table that change whenever an entry is added or removed."""
        st = self.flows.stats()
        return (len(self.flows), st["inserted"], st["expired"], st["restarted"], st["deleted"], st["evicted"],
                st["drained"])

    def _returning(self, batch, idx):
        """(good, slot) for rows ``idx``: the flow is known, its cookie matches and it has a firewall."""
        a_ip, b_ip, a_pt, b_pt, proto, tag = self._canonical(batch, idx)
        slot = np.empty(idx.size, np.int64)
        self.flows.lookup(a_ip, b_ip, a_pt, b_pt, proto, tag, slot)
        known = slot >= 0
        s = np.where(known, slot, 0)
        good = known & (self._slot_cookie[s] == batch.flow_cookie[idx]) & (self._slot_fw[s] >= 0)
        return good, s

    # ------------------------------------------------------------------ reporting
    def counters(self) -> dict:
        """Flows and packets per firewall, drops by reason, flow-table statistics."""
        return {
            "firewalls": {
                name: {"health": next(k for k, v in HEALTH_STATES.items() if v == self.health[i]),
                       "flows": int(self.flows_per_fw[i]), "packets": int(self.packets_per_fw[i]),
                       "bytes": int(self.bytes_per_fw[i])}
                for i, name in enumerate(self.names)
            },
            "flows_lost": int(self.flows_lost),
            "flows_rebalanced": int(self.flows_rebalanced),
            "drops": dict(self.drops),
            "flow_table": self.flows.stats(),
        }
