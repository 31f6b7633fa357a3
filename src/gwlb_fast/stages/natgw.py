"""NAT gateway stage: SNAT with port allocation, DNAT rules, reverse translation, incremental checksums.

``NatGateway(cfg).outbound(batch)`` translates packets travelling from the private side to the Internet:

- a packet from a DNAT server (``proto``, ``to_ip:to_port`` of a rule) is a reply of an inbound DNAT flow: its
  source becomes ``public_ip:rule.port``;
- a packet from an SNAT source gets ``public_ip`` and the public port of its mapping, allocated on the first packet;
- anything else: ``NAT_NO_MAPPING``.

``.inbound(batch)`` translates packets from the Internet: a packet to ``public_ip:port`` whose port belongs to an
SNAT mapping goes back to the private address and port; one matching a DNAT rule goes to its server; anything else
is ``NAT_NO_MAPPING``. ICMP queries (echo, timestamp, ...) have their identifier translated like a port; other ICMP
messages and other protocols are ``NOT_FORWARDED``.

Mappings are endpoint independent (RFC 4787 section 4.1: one public port per private ``proto, ip, port``, whatever
the destination) and live in the shared :class:`~gwlb_fast._kernels.flowtable.FlowTable` keyed by
``(private ip, 0, private port, 0, proto)``; their public ports come from a per-protocol free-port FIFO
(deterministic: the lowest ports first, freed ports go to the back). Mappings expire after the idle timeout
(TCP 350 s, others 120 s by default) and free their port. No port left: ``NAT_PORT_EXHAUSTED``; table full:
``NAT_TABLE_FULL``. Ports used by DNAT rules are never allocated to SNAT.

Headers are rewritten in place on the batch's arena (the caller owns it; ``copy=True`` copies it first) with
RFC 1624 incremental checksum updates, and the parsed columns are updated to match. Only packets whose status is
OK are touched. Each call leaves a per-packet translation record in ``.last`` (a :class:`NatRecord`) for the flow log.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._kernels.flowtable import IS_NEW, FlowTable
from .._kernels.nat import (
    NAT_DNAT,
    NAT_DNAT_REPLY,
    NAT_NONE,
    NAT_SNAT,
    NAT_SNAT_REPLY,
    nat_alloc_ports,
    nat_classify_in,
    nat_classify_out,
    nat_release,
    nat_rewrite,
)
from ..batch import PacketBatch
from ..config import NatGateway as NatGatewayConfig
from ..status import N_STATUS, PktStatus, count_status

__all__ = ["NAT_DNAT", "NAT_DNAT_REPLY", "NAT_NONE", "NAT_SNAT", "NAT_SNAT_REPLY", "NatGateway", "NatRecord"]

NPORTS = 65536
_PIDX = {6: 0, 17: 1, 1: 2}
KIND_NAMES = {NAT_NONE: "none", NAT_SNAT: "snat", NAT_SNAT_REPLY: "snat-reply", NAT_DNAT: "dnat",
              NAT_DNAT_REPLY: "dnat-reply"}


@dataclass
class NatRecord:
    """Per-packet translation of one call: ``kind`` (NAT_* constant, NAT_NONE when untranslated), the private
    side ``priv_ip:priv_port`` and the public side ``pub_ip:pub_port`` (host order; ICMP: query identifier)."""

    kind: np.ndarray       # uint8[n]
    priv_ip: np.ndarray    # uint32[n]
    priv_port: np.ndarray  # uint16[n]
    pub_ip: np.ndarray     # uint32[n]
    pub_port: np.ndarray   # uint16[n]

    @classmethod
    def empty(cls, n: int) -> NatRecord:
        return cls(np.zeros(n, np.uint8), np.zeros(n, np.uint32), np.zeros(n, np.uint16), np.zeros(n, np.uint32),
                   np.zeros(n, np.uint16))

    @classmethod
    def uninitialized(cls, n: int) -> NatRecord:
        return cls(np.empty(n, np.uint8), np.empty(n, np.uint32), np.empty(n, np.uint16), np.empty(n, np.uint32),
                   np.empty(n, np.uint16))

    def as_args(self) -> tuple:
        return self.kind, self.priv_ip, self.priv_port, self.pub_ip, self.pub_port


class NatGateway:
    """The NAT gateway of DESIGN.md section 1, state carried across batches.

    Parameters
    ----------
    cfg : gwlb_fast.config.NatGateway
        ``public_ip``, SNAT sources and port range, DNAT rules, idle timeouts, capacity (mappings).
    expire_scan : int
        Slots of the mapping table examined for idle expiry per call (amortized sweep; a full sweep also runs
        whenever a protocol's free ports run short).
    """

    def __init__(self, cfg: NatGatewayConfig, expire_scan: int = 4096):
        self.cfg = cfg
        self.name = cfg.name
        self.public_ip = int(cfg.public_ip_int)
        self.expire_scan = int(expire_scan)
        self.table = FlowTable(int(cfg.capacity), tcp_timeout_ns=int(cfg.idle_timeout_tcp * 1e9),
                               other_timeout_ns=int(cfg.idle_timeout_other * 1e9))
        cap = self.table.capacity
        self.slot_port = np.full(cap, -1, np.int32)
        self.owner = np.full(3 * NPORTS, -1, np.int32)
        self.dnat_index = np.full(3 * NPORTS, -1, np.int32)
        rules = cfg.dnat
        self._dnat_proto = np.array([r.proto for r in rules], np.uint8)
        self._dnat_port = np.array([r.port for r in rules], np.uint16)
        self._dnat_to_ip = np.array([r.to_ip for r in rules], np.uint32)
        self._dnat_to_port = np.array([r.to_port for r in rules], np.uint16)
        for i, r in enumerate(rules):
            self.dnat_index[_PIDX[r.proto] * NPORTS + r.port] = i
        self._snat_net = np.array([net for net, _ in cfg.snat_sources], np.uint32)
        self._snat_mask = np.array([(0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF if plen else 0
                                    for _, plen in cfg.snat_sources], np.uint32)
        # free-port FIFOs: the configured range minus the DNAT ports of the same protocol
        R = cfg.port_hi - cfg.port_lo + 1
        self._R = R
        self.ring = np.zeros(3 * R, np.uint16)
        self.head = np.zeros(3, np.int64)
        self.count = np.zeros(3, np.int64)
        base = np.arange(cfg.port_lo, cfg.port_hi + 1, dtype=np.int64)
        for p in range(3):
            ports = base[self.dnat_index[p * NPORTS + base] < 0]
            self.ring[p * R : p * R + ports.shape[0]] = ports
            self.count[p] = ports.shape[0]
        self.pool_size = self.count.copy()
        self.counts = np.zeros(N_STATUS, np.int64)
        self.stats = {"snat_packets": 0, "snat_reply_packets": 0, "dnat_packets": 0, "dnat_reply_packets": 0,
                      "mappings_created": 0, "mappings_expired": 0, "port_exhausted_packets": 0,
                      "table_full_packets": 0, "no_mapping_packets": 0, "mappings_picked_up": 0,
                      "server_side_packets": 0}
        self.last = NatRecord.empty(0)

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _prepare(batch: PacketBatch, copy: bool) -> PacketBatch:
        if copy:
            out = batch[:]
            out.data = batch.data.copy()
            for name, col in out.columns().items():
                if name != "off":
                    setattr(out, name, col.copy())
            batch = out
        if not batch.data.flags.writeable:
            raise ValueError("NatGateway: batch.data is read-only (pass copy=True to translate a copy)")
        if batch.status is None:
            batch.parse()
        for name in ("src_ip", "dst_ip", "sport", "dport", "proto", "tcp_flags", "l3_off", "l4_off"):
            if getattr(batch, name) is None:
                raise ValueError(f"NatGateway: batch has a status column but no {name} column (call batch.parse())")
        for name in ("status", "src_ip", "dst_ip", "sport", "dport"):
            col = getattr(batch, name)
            if not col.flags.writeable or not col.flags.c_contiguous:
                setattr(batch, name, np.ascontiguousarray(col).copy())
        for name in ("proto", "tcp_flags", "l3_off", "l4_off", "off", "caplen", "wirelen", "ts_ns"):
            col = getattr(batch, name)
            if not col.flags.c_contiguous:
                setattr(batch, name, np.ascontiguousarray(col))
        return batch

    def _release(self, slots: np.ndarray, records: np.ndarray) -> None:
        if slots.shape[0]:
            proto = np.ascontiguousarray(records["proto"], dtype=np.uint8)
            nat_release(np.ascontiguousarray(slots, dtype=np.int64), proto, self.slot_port, self.ring, self.head,
                        self.count, self.owner)
            self.stats["mappings_expired"] += int(slots.shape[0])

    def expire(self, now_ns: int, full: bool = False) -> int:
        """Free mappings idle at ``now_ns`` (amortized sweep of ``expire_scan`` slots, or all with ``full``)."""
        if full:
            slots, recs = self.table.expire_all(int(now_ns))
        else:
            slots, recs = self.table.expire(int(now_ns), self.expire_scan)
        self._release(slots, recs)
        return int(slots.shape[0])

    def _count(self, status: np.ndarray, was_ok: np.ndarray) -> None:
        bad = status[was_ok]
        bad = bad[bad != PktStatus.OK]
        if bad.shape[0]:
            self.counts += count_status(bad)

    # ------------------------------------------------------------------ stage
    def outbound(self, batch: PacketBatch, copy: bool = False, counted: np.ndarray | None = None) -> PacketBatch:
        """Translate packets leaving the private side (SNAT, DNAT replies); returns the (rewritten) batch.
        ``counted`` (int64[n, 2], optional) receives the mapping slot each packet was counted in and the mapping's
        first_seen (-1 for the others), for :meth:`count_followers`."""
        batch = self._prepare(batch, copy)
        n = len(batch)
        if counted is not None:
            counted[:] = -1
        st = batch.status
        was_ok = st == PktStatus.OK
        action = np.empty(n, np.uint8)
        rule = np.empty(n, np.int32)
        nat_classify_out(st, batch.proto, batch.tcp_flags, batch.src_ip, batch.sport, self._snat_net,
                         self._snat_mask, self._dnat_proto, self._dnat_to_ip, self._dnat_to_port, action, rule)
        rec = NatRecord.uninitialized(n)
        new_ip = np.zeros(n, np.uint32)
        new_port = np.full(n, -1, np.int32)

        dr = np.flatnonzero(action == NAT_DNAT_REPLY)
        if dr.shape[0]:
            new_ip[dr] = self.public_ip
            new_port[dr] = self._dnat_port[rule[dr]]

        sn = np.flatnonzero(action == NAT_SNAT)
        if sn.shape[0] == n:
            sn = slice(None)           # every packet is SNAT: views, no gathers
            m = n
        else:
            m = sn.shape[0]
        if m:
            ts = batch.ts_ns[sn]
            now = int(ts.min())   # nothing this batch touches can be idle at its earliest timestamp
            self.expire(now)
            proto = batch.proto[sn]
            if self.count.min() < m:    # a pool may run short in this batch: sweep every idle mapping first
                need = np.bincount(np.where(proto == 6, 0, np.where(proto == 17, 1, 2)), minlength=3)
                if np.any(self.count < need):
                    self.expire(now, full=True)
            slot = np.empty(m, np.int64)
            is_new = np.empty(m, np.uint8)
            zeros32 = np.zeros(m, np.uint32)
            zeros16 = np.zeros(m, np.uint16)
            self.table.lookup_or_insert(batch.src_ip[sn], zeros32, batch.sport[sn], zeros16, proto, None, ts,
                                        batch.wirelen[sn], slot, is_new)
            self.table.take_ended()
            port = np.empty(m, np.int32)
            nat_alloc_ports(slot, is_new, proto, self.slot_port, self.ring, self.head, self.count, self.owner, port)
            self.stats["mappings_created"] += int(np.count_nonzero((is_new == IS_NEW) & (port >= 0)))
            refused = slot < 0
            exhausted = ~refused & (port < 0)
            idx = np.arange(n)[sn] if isinstance(sn, slice) else sn
            if refused.any():
                st[idx[refused]] = PktStatus.NAT_TABLE_FULL
            if exhausted.any():
                st[idx[exhausted]] = PktStatus.NAT_PORT_EXHAUSTED
            if exhausted.any():
                self.table.delete(np.unique(slot[exhausted]))
                self.slot_port[np.unique(slot[exhausted])] = -1
            ok = port >= 0
            if counted is not None:
                self._mark_counted(counted, idx[ok], slot[ok])
            if ok.all():
                new_ip[sn] = self.public_ip
                new_port[sn] = port
            else:
                new_ip[idx[ok]] = self.public_ip
                new_port[idx[ok]] = port[ok]

        nat_rewrite(batch.data, batch.off, batch.caplen, batch.l3_off, batch.l4_off, batch.proto, 0, new_ip,
                    new_port, st, batch.src_ip, batch.sport, batch.dport, action, *rec.as_args())
        self.last = rec
        kinds = np.bincount(rec.kind, minlength=5)
        self.stats["snat_packets"] += int(kinds[NAT_SNAT])
        self.stats["dnat_reply_packets"] += int(kinds[NAT_DNAT_REPLY])
        self._count(st, was_ok)
        return batch

    def inbound(self, batch: PacketBatch, copy: bool = False, counted: np.ndarray | None = None) -> PacketBatch:
        """Translate packets arriving from the Internet (SNAT replies, DNAT); returns the (rewritten) batch.
        ``counted``: as for :meth:`outbound`."""
        batch = self._prepare(batch, copy)
        n = len(batch)
        if counted is not None:
            counted[:] = -1
        st = batch.status
        was_ok = st == PktStatus.OK
        action = np.empty(n, np.uint8)
        ref = np.empty(n, np.int64)
        nat_classify_in(st, batch.proto, batch.tcp_flags, batch.dst_ip, batch.dport, self.public_ip, self.owner,
                        self.dnat_index, action, ref)
        rec = NatRecord.uninitialized(n)
        new_ip = np.zeros(n, np.uint32)
        new_port = np.full(n, -1, np.int32)

        rp = np.flatnonzero(action == NAT_SNAT_REPLY)
        if rp.shape[0]:
            slots = ref[rp]
            priv_ip = np.ascontiguousarray(self.table.a_ip[slots])
            priv_port = np.ascontiguousarray(self.table.a_port[slots])
            # a reply keeps its mapping alive: account it to the mapping's entry
            m = rp.shape[0]
            got = np.empty(m, np.int64)
            is_new = np.empty(m, np.uint8)
            self.table.lookup_or_insert(priv_ip, np.zeros(m, np.uint32), priv_port, np.zeros(m, np.uint16),
                                        batch.proto[rp], None, batch.ts_ns[rp], batch.wirelen[rp], got, is_new)
            self.table.take_ended()
            if counted is not None:
                hit = got >= 0
                self._mark_counted(counted, rp[hit], got[hit])
            new_ip[rp] = priv_ip
            new_port[rp] = priv_port

        dn = np.flatnonzero(action == NAT_DNAT)
        if dn.shape[0]:
            r = ref[dn]
            new_ip[dn] = self._dnat_to_ip[r]
            new_port[dn] = self._dnat_to_port[r]

        nat_rewrite(batch.data, batch.off, batch.caplen, batch.l3_off, batch.l4_off, batch.proto, 1, new_ip,
                    new_port, st, batch.dst_ip, batch.dport, batch.sport, action, *rec.as_args())
        self.last = rec
        kinds = np.bincount(rec.kind, minlength=5)
        self.stats["snat_reply_packets"] += int(kinds[NAT_SNAT_REPLY])
        self.stats["dnat_packets"] += int(kinds[NAT_DNAT])
        self._count(st, was_ok)
        return batch

    def _mark_counted(self, counted: np.ndarray, rows, slots: np.ndarray) -> None:
        """``counted`` (see :meth:`outbound`) of the packets ``rows``: counted in the mappings at ``slots``."""
        counted[rows, 0] = slots
        counted[rows, 1] = self.table.first_seen[slots]

    def count_followers(self, slot: np.ndarray, first_seen: np.ndarray, nbytes: np.ndarray,
                        ts_ns: np.ndarray | None = None) -> int:
        """Count packets that follow another packet's mapping without being translated by port (the later fragments
        of a datagram: see fragments.py) in the mapping at ``slot``, if it still holds the mapping first seen at
        ``first_seen``. With ``ts_ns`` (the packets' times) a packet counts only where the mapping is not
        idle-expired at its time, and keeps it alive as a translated packet does (last_seen moves to its time).
        Returns the packets counted."""
        return self.table.add_counts(slot, first_seen, np.ascontiguousarray(nbytes, np.uint32),
                                     None if ts_ns is None else np.ascontiguousarray(ts_ns, np.int64))

    # ------------------------------------------------------------------ captures taken elsewhere
    def dnat_rule_of_target(self, ip: np.ndarray, port: np.ndarray, proto: np.ndarray) -> np.ndarray:
        """int32[n]: the DNAT rule whose private target is each ``(ip, port, proto)``, -1 where none (rules are
        few: one vectorized compare per rule)."""
        out = np.full(np.asarray(ip).shape[0], -1, np.int32)
        for i in range(self._dnat_proto.shape[0] - 1, -1, -1):  # the first rule wins
            hit = (ip == self._dnat_to_ip[i]) & (port == self._dnat_to_port[i]) & (proto == self._dnat_proto[i])
            out[hit] = i
        return out

    def count_replies(self, priv_ip: np.ndarray, priv_port: np.ndarray, proto: np.ndarray, ts_ns: np.ndarray,
                      nbytes: np.ndarray, counted: np.ndarray | None = None) -> np.ndarray:
        """Replies to SNAT'ed flows as the private host receives them (a capture taken on the business side: the
        pipeline replays them in private form, their mapping found by its private ``(ip, port, proto)``), counted in
        their live mapping as :meth:`inbound` counts a reply in public form: packets, bytes and last_seen, which
        keeps the mapping alive. A key without a mapping is left alone. Returns int32[n]: the mapping's public
        port, -1 where none. ``counted``: as for :meth:`outbound`."""
        m = np.asarray(priv_ip).shape[0]
        if counted is not None:
            counted[:] = -1
        out = np.full(m, -1, np.int32)
        if m == 0:
            return out
        got = np.empty(m, np.int64)
        is_new = np.empty(m, np.uint8)
        self.table.lookup_or_insert(np.ascontiguousarray(priv_ip, np.uint32), np.zeros(m, np.uint32),
                                    np.ascontiguousarray(priv_port, np.uint16), np.zeros(m, np.uint16),
                                    np.ascontiguousarray(proto, np.uint8), None,
                                    np.ascontiguousarray(ts_ns, np.int64), np.ascontiguousarray(nbytes, np.uint32),
                                    got, is_new, insert=False)
        self.table.take_ended()
        if got.min() >= 0:  # every reply has its mapping (the usual case): no masks
            out = self.slot_port[got]
            if counted is not None:
                self._mark_counted(counted, slice(None), got)
            return out
        hit = got >= 0
        out[hit] = self.slot_port[got[hit]]
        if counted is not None:
            self._mark_counted(counted, hit, got[hit])
        return out

    def pickup(self, priv_ip: np.ndarray, priv_port: np.ndarray, proto: np.ndarray, ts_ns: np.ndarray,
               nbytes: np.ndarray, icmp_type: np.ndarray | None = None,
               counted: np.ndarray | None = None) -> np.ndarray:
        """SNAT mappings for flows that began before the capture, made from their replies as the private host
        receives them (``replay: {pickup: true}``): each private ``(ip, port, proto)`` that an SNAT source owns gets
        its mapping (an existing one, or a new one with the next free port, as its first outbound packet would
        have). ICMP: only query replies (``icmp_type``, the parsed ``tcp_flags`` column, 0, 14, 16 or 18; an error
        message quotes its flow and makes no mapping). Returns int32[n]: the public port, -1 where none (not an
        SNAT source, not TCP/UDP/ICMP query reply, no port or table space left). ``counted``: as for
        :meth:`outbound` (each reply is counted in the mapping it got)."""
        m = np.asarray(priv_ip).shape[0]
        out = np.full(m, -1, np.int32)
        if counted is not None:
            counted[:] = -1
        if m == 0:
            return out
        priv_ip = np.ascontiguousarray(priv_ip, np.uint32)
        proto = np.ascontiguousarray(proto, np.uint8)
        src = np.zeros(m, bool)
        for net, mask in zip(self._snat_net.tolist(), self._snat_mask.tolist()):
            src |= (priv_ip & np.uint32(mask)) == np.uint32(net)
        icmp_reply = proto == 1
        if icmp_type is not None:
            icmp_reply &= np.isin(icmp_type, (0, 14, 16, 18))
        else:
            icmp_reply[:] = False
        sel = np.flatnonzero(src & ((proto == 6) | (proto == 17) | icmp_reply))
        if sel.size == 0:
            return out
        ts = np.ascontiguousarray(ts_ns[sel], np.int64)
        self.expire(int(ts.min()))
        k = sel.size
        slot = np.empty(k, np.int64)
        is_new = np.empty(k, np.uint8)
        self.table.lookup_or_insert(priv_ip[sel], np.zeros(k, np.uint32),
                                    np.ascontiguousarray(priv_port[sel], np.uint16), np.zeros(k, np.uint16),
                                    proto[sel], None, ts, np.ascontiguousarray(nbytes[sel], np.uint32), slot, is_new)
        self.table.take_ended()
        port = np.empty(k, np.int32)
        nat_alloc_ports(slot, is_new, proto[sel], self.slot_port, self.ring, self.head, self.count, self.owner, port)
        made = int(np.count_nonzero((is_new == IS_NEW) & (port >= 0)))
        self.stats["mappings_created"] += made
        self.stats["mappings_picked_up"] += made
        lost = (slot >= 0) & (port < 0)
        if lost.any():
            gone = np.unique(slot[lost])
            self.table.delete(gone)
            self.slot_port[gone] = -1
        out[sel] = port
        if counted is not None:
            ok = port >= 0
            self._mark_counted(counted, sel[ok], slot[ok])
        return out

    # ------------------------------------------------------------------ reporting
    @property
    def ports_in_use(self) -> dict[str, int]:
        return {p: int(self.pool_size[i] - self.count[i]) for i, p in enumerate(("tcp", "udp", "icmp"))}

    def mappings(self) -> dict[str, np.ndarray]:
        """Live SNAT mappings as columns: proto, priv_ip, priv_port, pub_port, first_seen, last_seen, packets, bytes."""
        slots = self.table.live_slots()
        recs = self.table.records(slots)
        return {"proto": recs["proto"].copy(), "priv_ip": recs["a_ip"].copy(), "priv_port": recs["a_port"].copy(),
                "pub_port": self.slot_port[slots].astype(np.uint16), "first_seen": recs["first_seen"].copy(),
                "last_seen": recs["last_seen"].copy(), "packets": recs["packets"].copy(),
                "bytes": recs["bytes"].copy()}

    def summary(self) -> dict:
        from ..status import describe_counts

        return {"name": self.name, "public_ip": self.cfg.public_ip, **self.stats, "mappings_live": len(self.table),
                "ports_in_use": self.ports_in_use, "drops": describe_counts(self.counts)}
