"""The modelled data path, batch by batch, in the order of DESIGN.md section 1.

```
outbound  app subnet route table -> GWLBe -> GWLB ==> FW ==> GWLB -> GWLBe -> GWLBe subnet route table -> NAT (SNAT)
inbound   NAT (DNAT / reverse SNAT) -> NAT subnet route table -> GWLBe -> ... -> GWLBe subnet route table -> host
```

A capture is read as the business VPC sees it. A packet whose source lies in a VPC subnet enters at that subnet's
route table. Any other packet comes from the Internet and enters at the NAT gateway: either addressed to the
gateway's public IP (DNAT'ed inbound flows, replies to SNAT'ed flows as they cross the Internet), or addressed to a
private host, as the host receives a reply to its own SNAT'ed flow; such a packet is first put back in its public
form (the SNAT mapping must exist, or be created by an earlier packet of the same chunk) and then translated back
by the gateway like any reply.

From its entry point each packet follows route tables (batched longest-prefix match) until it is delivered to a
host in the VPC (``local``), leaves to the Internet (``internet`` or through a NAT gateway) or is dropped with a
reason: no route, blackhole, loop (a second visit to the same GWLBe or NAT gateway), or what a stage decided.
Firewall resets (TCP RSTs) join the path at the GWLBe that received them.

Every packet in is either delivered (the output capture) or dropped with a (stage, reason) pair: nothing is lost
without a count. State (flow tables, sessions, NAT mappings) carries over from one chunk to the next.
"""
from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._kernels.columns import group_rows, put_columns, take_columns
from ._kernels.heap import replay_memory
from ._kernels.join import hold_replies
from ._kernels.lpm import enter_subnets, next_hops
from ._kernels.parse import fill_ip_checksums
from ._kernels.special import mark_special
from .batch import CORE_COLUMNS, PacketBatch
from .config import Topology, load_events, load_topology
from .errors import ConfigError, PcapError
from .outputs.outfiles import refuse_overlap
from .outputs.report import DropLog, FlowLogWriter, Progress, StageCounters, Summary, ThreatLogWriter, ip_strs
from .pcapio import OrderedWriter, PcapWriter, output_format, read_pcap
from .replay import FlowSides, flow_keys
from .stages import fragments as fr
from .stages.fragments import K_LATER, FragmentTracker
from .stages.gwlbe import (
    COUNTED_FW_FIRST,
    COUNTED_FW_SLOT,
    COUNTED_FW_START,
    COUNTED_LB_FIRST,
    COUNTED_LB_FW,
    COUNTED_LB_SLOT,
    COUNTED_REV,
    Gwlbe,
    Inspection,
)
from .stages.natgw import NatGateway
from .stages.policy import Policy
from .stages.vpc import Lpm, TransitRouter, VpcRouter
from .status import PktStatus, describe_counts

STAGES = ("input", "route", "nat", "gwlb", "firewall")
S_INPUT, S_ROUTE, S_NAT, S_GWLB, S_FIREWALL = range(len(STAGES))

# next-hop kinds as small integers for vectorized dispatch
K_NONE, K_LOCAL, K_GWLBE, K_NATGW, K_INTERNET, K_BLACKHOLE, K_TR = range(7)
K_DONE = -1  # already dropped on the way (by a transit router): nothing left to do this hop
_KIND = {"local": K_LOCAL, "gwlbe": K_GWLBE, "natgw": K_NATGW, "internet": K_INTERNET, "blackhole": K_BLACKHOLE,
         "tr": K_TR}

# where a delivered packet went
D_NONE, D_INTERNET, D_HOST = 0, 1, 2

MAX_ROUTE_HOPS = 8
MAX_SLICE_SECONDS = 5  # longest time span walked at once (see Pipeline.process)
TOP_NAMES = 10  # applications, URL categories and threats the summary lists
REORDER_WINDOW_NS = 2_000_000_000  # out-of-order captures: how far back a later packet may be and still be sorted

TAP_LINKS = (
    "vpc-to-gwlbe",    # packets a route table hands to a GWLB endpoint
    "gwlb-to-fw",      # Geneve from the GWLB to a firewall
    "fw-to-gwlb",      # Geneve back from a firewall (echoed header; TCP resets too)
    "gwlbe-to-vpc",    # inspected packets leaving the GWLB endpoint into its subnet's route table
    "vpc-to-nat",      # to a NAT gateway from the VPC (before SNAT / reverse DNAT)
    "nat-to-internet",  # after SNAT / reverse DNAT
    "internet-to-nat",  # from the Internet, public addresses
    "nat-to-vpc",      # after DNAT / reverse SNAT
    "vpc-to-host",     # delivered to a host in the VPC
    "health",          # the GWLB's health-check probes to its firewalls and their answers (not Geneve)
)


@dataclass
class ChunkResult:
    """What :meth:`Pipeline.process` did to one chunk.

    ``output`` holds the delivered packets in input order (resets after the packet that caused them, a fragment
    that came before its first fragment right after that one); ``status``, ``stage`` and ``delivered`` are per
    input packet; ``fw`` the firewall that inspected it (-1 none; an index of ``Pipeline.firewall_names``), ``rule``
    the index of the rule of its firewall session (-1 none, ``len(policy.rules)`` the default action), ``failed_fw``
    the firewall of the flow of a packet dropped because that firewall failed (-1 elsewhere).
    ``resets`` holds the firewall resets (TCP RSTs) with their own ``status``, ``stage``, ``delivered`` and
    ``source`` (input row of the packet that caused each), or None when there were none. A fragment still held
    for its first fragment has status ``FRAGMENT`` and is neither delivered nor dropped yet (a later chunk's
    output, or drop, says).
    """

    output: PacketBatch
    status: np.ndarray
    stage: np.ndarray
    delivered: np.ndarray
    fw: np.ndarray
    generated: int = 0
    taps: dict[str, list[PacketBatch]] = field(default_factory=dict)
    rule: np.ndarray | None = None
    resets: Resets | None = None
    failed_fw: np.ndarray | None = None


@dataclass
class Resets:
    """The TCP resets firewalls sent while one chunk was walked, and what the path did with them."""

    batch: PacketBatch
    status: np.ndarray
    stage: np.ndarray
    delivered: np.ndarray
    source: np.ndarray

    @staticmethod
    def concat(parts: list[Resets | None], bases: list[int]) -> Resets | None:
        got = [(r, b) for r, b in zip(parts, bases) if r is not None]
        if not got:
            return None
        return Resets(PacketBatch.concat([r.batch for r, _ in got]),
                      *(np.concatenate([getattr(r, c) for r, _ in got]) for c in ("status", "stage", "delivered")),
                      np.concatenate([r.source + b for r, b in got]))


class Pipeline:
    """A deployment (topology + policy) that replays packets along the modelled path.

    Build it with :meth:`from_yaml` (or from a loaded :class:`~gwlb_fast.config.Topology`), then call :meth:`run` on
    a capture, or :meth:`process` on PacketBatch chunks and :meth:`finish` at the end.
    """

    def __init__(self, topo: Topology, policy: Policy | None = None, *, seed: int = 0,
                 session_capacity: int = 1 << 18, taps: bool = False, pickup: bool | None = None):
        self.topo = topo
        #: flows that began before the capture are taken as established (``replay: {pickup: true}``, or the
        #: ``pickup`` argument, which wins when given)
        self.pickup = topo.replay.pickup if pickup is None else bool(pickup)
        self.sides = FlowSides.from_topology(topo)
        if policy is None:
            policy = topology_policy(topo)
        self.policy = policy
        self.keep_taps = taps
        # VPCs and their route tables
        self.vpc_names = list(topo.vpcs)
        self.routers = [VpcRouter(topo.vpcs[v]) for v in self.vpc_names]
        # endpoints and GWLBs
        self.endpoints = [Gwlbe.from_config(ep, i) for i, ep in enumerate(topo.endpoints.values())]
        self.endpoint_index = {e.name: e.index for e in self.endpoints}
        zone_of_endpoint = {}
        for zone, members in policy.zones.items():
            for name in members:
                if name in topo.endpoints:
                    zone_of_endpoint[int(topo.endpoints[name].id)] = zone
        for e in self.endpoints:
            zone_of_endpoint.setdefault(e.id, policy.zone_names[0] if policy.zone_names else "default")
        classifier = policy.compile()
        self.gwlbs = {name: Inspection(cfg, policy, zone_of_endpoint, classifier=classifier, seed=seed,
                                       session_capacity=session_capacity, keep_taps=taps,
                                       pickup=self.sides if self.pickup else None)
                      for name, cfg in topo.gwlbs.items()}
        self._gwlb_index = {name: i for i, name in enumerate(self.gwlbs)}
        #: the path's firewall index (``ChunkResult.fw``, drop records) -> name, and each GWLB's first index
        self.firewall_names = topo.firewall_names()
        self.firewall_offsets = topo.firewall_offsets()
        # the broadcast address of every subnet (a /31 or /32 has none), for the special-address check
        bcast = {s.net | (~((0xFFFFFFFF << (32 - s.plen)) & 0xFFFFFFFF) & 0xFFFFFFFF)
                 for v in topo.vpcs.values() for s in v.subnets.values() if s.plen < 31}
        self._subnet_broadcast = np.array(sorted(bcast), np.uint32)
        # NAT gateways
        self.frags = FragmentTracker()
        self.nat_names = list(topo.nat_gateways)
        self.nats = [NatGateway(topo.nat_gateways[n]) for n in self.nat_names]
        self.nat_public = np.array([g.public_ip for g in self.nats], np.uint32)
        self.nat_entry = []  # (vpc index, route table id) where a NAT gateway hands packets to its VPC
        for name in self.nat_names:
            cfg = topo.nat_gateways[name]
            if cfg.vpc is None or cfg.subnet is None:
                raise ConfigError(f"{topo.source}: nat_gateways.{name}: cannot tell which subnet it lives in "
                                  f"(set vpc and subnet)")
            vi = self.vpc_names.index(cfg.vpc)
            self.nat_entry.append((vi, self.routers[vi].subnet_table[self.routers[vi].subnet_id[cfg.subnet]]))
        # per NAT gateway: the private addresses whose replies it translates back (its VPC's subnets and its SNAT
        # sources, which a centralized gateway has in other VPCs)
        self.nat_private = []
        for name in self.nat_names:
            cfg = topo.nat_gateways[name]
            pref = {(s.net, s.plen) for s in topo.vpcs[cfg.vpc].subnets.values()} | set(cfg.snat_sources)
            self.nat_private.append(Lpm([[(net, plen, 0) for net, plen in sorted(pref)]]))
        # transit routers (DESIGN.md section 13)
        self.transit = [TransitRouter(t, self.vpc_names, self.routers) for t in topo.transit_routers.values()]
        tr_index = {t.name: i for i, t in enumerate(self.transit)}
        # per router: next-hop id -> (kind, target index)
        self._hop_kind, self._hop_target = [], []
        for r in self.routers:
            kinds = np.array([_KIND[h.kind] for h in r.hops] + [K_NONE], np.int8)
            targets = np.array([self.endpoint_index.get(h.name, -1) if h.kind == "gwlbe"
                                else (self.nat_names.index(h.name) if h.kind == "natgw"
                                      else tr_index.get(h.name, -1) if h.kind == "tr" else -1)
                                for h in r.hops] + [-1], np.int32)
            self._hop_kind.append(kinds)  # index -1 (no route) reads the K_NONE sentinel at the end
            self._hop_target.append(targets)
        # every VPC's route tables in one LPM whose values are routes numbered across the VPCs, each with its
        # next hop's kind and target: one kernel call walks a hop of the whole batch (_Walk._walk_hops)
        firsts = np.cumsum([0] + [len(r.routes) for r in self.routers])[:-1].tolist()
        self._walk_lpm, self._walk_table_base = Lpm.stack([r._routes for r in self.routers], firsts)
        self._route_kind = np.concatenate([k[r.route_hop] for k, r in zip(self._hop_kind, self.routers)]
                                          + [np.zeros(0, np.int8)])
        self._route_target = np.concatenate([t[r.route_hop] for t, r in zip(self._hop_target, self.routers)]
                                            + [np.zeros(0, np.int32)])
        # counters
        self.counters = {s: StageCounters(s) for s in STAGES}
        self.stage_seconds = {s: 0.0 for s in ("parse", "route", "nat", "inspect", "output")}
        self.packets_in = self.bytes_in = self.packets_out = self.bytes_out = 0
        self.generated = 0
        self.truncated = 0
        self.ip_csum_filled = 0
        self.first_ts: int | None = None
        self.last_ts: int | None = None
        self.events_done: list[dict] = []
        # when a list: every step of the route walk is appended to it (``explain`` reads it; see _Walk._trace)
        self.trace: list[tuple[str, dict]] | None = None
        self._timeline = None
        self._raw_events: list[dict] = []
        self._probe_lo = 0
        self._ended_sessions: list[tuple[str, int, np.ndarray]] = []
        self.local_packets = 0  # delivered inside their own subnet, without a route table
        self.no_mapping_without_session = 0  # NAT_NO_MAPPING drops of flows no firewall knows (for the hint)
        #: flows dropped without a session, for the flow log (set by ``run`` when it writes one)
        self.drop_log: DropLog | None = None

    @classmethod
    def from_yaml(cls, path, **kw) -> Pipeline:
        """Load a topology file (DESIGN.md section 6) and build the pipeline."""
        return cls(load_topology(path), **kw)

    def record_taps(self, on: bool = True) -> None:
        """Keep (or stop keeping) every link's packets in ``ChunkResult.taps``: the firewalls then build their
        echoed Geneve frames, which the path does not need otherwise."""
        self.keep_taps = bool(on)
        for insp in self.gwlbs.values():
            insp.keep_taps = self.keep_taps

    # ------------------------------------------------------------------ health / what-if
    def set_health(self, firewall: str, state: str, now_ns: int = 0) -> None:
        """Change a firewall's health in every GWLB that has it (``healthy``, ``unhealthy``, ``draining``).

        New flows avoid a firewall that is not healthy. Its established flows, with ``failover: keep``, are dropped
        at the GWLB (``FW_FAILED``); with ``failover: rebalance`` they move, both directions together, to a healthy
        firewall, which has no session for them: mid-stream TCP is dropped there (``TCP_NOT_SYN``, as VM-Series
        does by default), other protocols start a new session classified from the first packet it sees.
        """
        found = False
        for insp in self.gwlbs.values():
            if firewall in insp.cfg.firewalls:
                insp.set_health(firewall, state, now_ns)
                found = True
        if not found:
            raise ConfigError(f"{self.topo.source}: no GWLB has a firewall named {firewall!r}")

    # ------------------------------------------------------------------ one chunk
    def process(self, batch: PacketBatch) -> ChunkResult:
        """Carry one chunk of packets along the path; returns the delivered packets and per-packet outcomes.

        A chunk whose timestamps span more than ``MAX_SLICE_SECONDS`` goes through in consecutive slices that
        do not: inside a slice, the replies of flows that start in it are walked after the flow's earlier packets
        (see ``_Walk._hold``), and the slice bound keeps the stages' idle timers (the shortest is the firewall's
        30 s) from running ahead of those replies.
        """
        return self._process(batch, None)

    def _process(self, batch: PacketBatch, arena: np.ndarray | None, core_output: bool = False) -> ChunkResult:
        """:meth:`process`, copying the packets into ``arena`` when it is large enough (the caller is done with the
        result before it passes the same buffer again), else into a fresh arena. ``core_output``: the result's
        output batch has the core columns only (for a writer; :meth:`run`)."""
        n = len(batch)
        if arena is not None and arena.shape[0] < batch.nbytes:
            arena = None
        if arena is not None and _in_arena(batch, arena) and not _stretch_in_place(batch, arena):
            batch = _detached(batch)  # a batch in the arena that cannot stay where it is: out of the way of the copy
        if n > 1:
            ts = batch.ts_ns
            span = MAX_SLICE_SECONDS * 1_000_000_000
            if int(ts[-1]) - int(ts[0]) > span and bool(np.all(ts[1:] >= ts[:-1])):
                cuts = [0]
                while cuts[-1] < n:
                    cuts.append(max(cuts[-1] + 1, int(np.searchsorted(ts, int(ts[cuts[-1]]) + span, "right"))))
                cuts[-1] = n
                if len(cuts) > 2:
                    if arena is not None and _in_arena(batch, arena):
                        batch = _detached(batch)  # the slices are copied into parts of the arena: out of their way
                    # each slice copies its packets into its own part of the arena (the results live together),
                    # with its share of the arena's headroom (the capture's stretch of a slice is a little larger
                    # than its packets, and the firewalls' resets join the delivered packets there)
                    base = np.zeros(n + 1, np.int64)
                    np.cumsum(batch.caplen, out=base[1:])
                    total = int(base[-1])
                    room = 0 if arena is None else arena.shape[0] - total
                    at = [int(base[c]) + (room * int(base[c]) // total if total else 0) for c in cuts]
                    parts = [self._process_slice(batch[a:b], None if arena is None else arena[at[k]:at[k + 1]],
                                                 core_output)
                             for k, (a, b) in enumerate(itertools.pairwise(cuts))]
                    taps = {k: [x for r in parts for x in r.taps.get(k, [])] for k in parts[0].taps}
                    # the slices' outputs point into parts of one arena: joined without a copy
                    return ChunkResult(PacketBatch.concat([r.output for r in parts], arena),
                                       *(np.concatenate([getattr(r, c) for r in parts])
                                         for c in ("status", "stage", "delivered", "fw")),
                                       generated=sum(r.generated for r in parts), taps=taps,
                                       rule=np.concatenate([r.rule for r in parts]),
                                       failed_fw=np.concatenate([r.failed_fw for r in parts]),
                                       resets=Resets.concat([r.resets for r in parts], cuts[:-1]))
        return self._process_slice(batch, arena, core_output)

    def _process_slice(self, batch: PacketBatch, arena: np.ndarray | None = None,
                       core_output: bool = False) -> ChunkResult:
        t0 = time.perf_counter()
        work = _own_copy(batch, arena)  # our own arena: NAT rewrites headers in place
        self.bytes_in += work.nbytes
        zero_csums, n_frags = work.parse_counts()
        # captured on the sending host before its NIC filled the IPv4 header checksum (offload): filled here
        if zero_csums:
            self.ip_csum_filled += fill_ip_checksums(work.data, work.off, work.caplen, work.l3_off, work.status)
        # cut by a snaplen but with whole L4 headers: processed as captured (their wire length is kept), counted
        self.truncated += int(np.count_nonzero((work.status == PktStatus.OK) & (work.wirelen > work.caplen)))
        # fragments held from earlier batches (their first fragment had not come) go in front, see fragments.py
        held, h_slot, h_gen = self.frags.take_held()
        h = 0 if held is None else len(held)
        if h:
            work = PacketBatch.concat([held, work])
        n = len(work)
        slot = np.full(n, -1, np.int64)
        fgen = np.zeros(n, np.int64)
        slot[:h], fgen[:h] = h_slot, h_gen
        # a batch with no fragment and none held has nothing to scan: every row is K_NONE
        kind = self.frags.scan(work, h, slot, fgen) if h or n_frags else np.zeros(n, np.uint8)
        taps: dict[str, list[PacketBatch]] = {k: [] for k in TAP_LINKS} if self.keep_taps else {}
        if n:
            ts0, ts1 = int(work.ts_ns.min()), int(work.ts_ns.max())
            self.first_ts = ts0 if self.first_ts is None else min(self.first_ts, ts0)
            self.last_ts = ts1 if self.last_ts is None else max(self.last_ts, ts1)
        st = work.status
        stage = np.full(n, 255, np.uint8)
        stage[st != PktStatus.OK] = S_INPUT
        frags = bool(kind.any())  # first fragments record their fate for later ones, later ones take it
        if frags:
            stage[kind == K_LATER] = 255  # settled after the walk, from their first fragment
        self.stage_seconds["parse"] += time.perf_counter() - t0

        # the packets' own addresses and ports, before NAT rewrites them, for the records of dropped flows
        before = (None if self.drop_log is None or not n
                  else (work.src_ip.copy(), work.dst_ip.copy(), work.sport.copy(), work.dport.copy()))
        walk = _Walk(self, work, taps, stage, counted=frags)
        walk.enter()
        walk.run()
        gen = walk.generated_walk()
        nm = np.flatnonzero((stage == S_NAT) & (work.status == PktStatus.NAT_NO_MAPPING))
        if nm.size:
            # replies of denied flows meet no mapping too: only flows no firewall knows may have begun earlier
            self.no_mapping_without_session += int(np.count_nonzero(~self._has_session(work, nm)))

        t0 = time.perf_counter()
        release = None
        later = followed = None
        if frags:
            release = self.frags.settle(work, kind, slot, fgen, stage, walk.fw, walk.delivered, S_INPUT)
            later = kind == K_LATER
        logged = flip = None
        if before is not None:
            # later fragments (no ports) count in their first fragment's record (below)
            logged, flip = self._drop_rows(work, before, stage, walk.fw, walk.delivered, later)
        if frags:
            # later fragments that took their first fragment's fate count where it was counted
            refs = walk.refs
            if logged is not None and logged.size:
                refs[logged, fr.REF_LOG] = 1
                refs[logged, fr.REF_SPORT] = before[2][logged]
                refs[logged, fr.REF_DPORT] = before[3][logged]
                refs[logged, fr.REF_FLIP] = 0 if flip is None else flip
            followed = self.frags.follow(kind, slot, fgen, release, refs)
            self._count_followers(work, followed, refs)
        if logged is not None:
            self._log_drops(work, before, logged, flip, followed, walk.refs, walk.fw)
        dl = np.flatnonzero(walk.delivered != D_NONE)
        out_main = work.take(dl, CORE_COLUMNS) if core_output else work[dl]
        # output order: input order, a firewall reset right after its packet, a fragment released by its first
        # fragment right after that one (keys 2 * row, 2 * row + 1)
        parts, order = [out_main], [2 * dl]
        resort = False
        if release is not None:
            rel = release[dl]
            early = rel >= 0
            if early.any():
                order[0] = np.where(early, 2 * rel + 1, 2 * dl)
                resort = True
        if gen is not None:
            parts.append(gen.batch.filter(gen.delivered != D_NONE))
            order.append(2 * gen.source[gen.delivered != D_NONE] + 1)
        key = np.concatenate(order)
        if (len(parts) > 1 or resort) and key.size:
            perm = np.argsort(key, kind="stable")
            if len(parts) == 1:
                out = parts[0][perm]  # columns only: the packets stay in the arena
            else:
                out = PacketBatch.concat(_beside(parts, work, arena), arena)[perm]
        else:
            out = parts[0]
        res = ChunkResult(out, st[h:], stage[h:], walk.delivered[h:], walk.fw[h:],
                          generated=0 if gen is None else len(gen.batch),
                          taps=taps, rule=walk.rule[h:], failed_fw=walk.failed_fw[h:],
                          resets=None if gen is None else Resets(gen.batch, gen.batch.status, gen.stage,
                                                                 gen.delivered, gen.source - h))
        self._account(res, gen)
        if h:  # held fragments of earlier batches dropped now (their packets were counted in then)
            self._count_drops(stage[:h], st[:h])
        self.stage_seconds["output"] += time.perf_counter() - t0
        return res

    def _drop_rows(self, work: PacketBatch, before, stage: np.ndarray, fw: np.ndarray, delivered: np.ndarray,
                   later: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        """The rows of packets of flows no firewall session records, for the drop log: dropped without a session, or
        delivered without inspection (inside their subnet, or by a route that bypasses the GWLBe); see
        :class:`~gwlb_fast.outputs.report.DropLog`. Rows where ``later`` is set (later fragments) are left out: they
        count in their first fragment's record. Returns the rows and, with pickup, whether each one's sender is
        the server (else None)."""
        st = work.status
        bypass = (delivered != D_NONE) & (fw < 0)
        sel = ((stage != 255) & (stage != S_INPUT)
               & (((fw < 0) & (st != PktStatus.FW_FAILED)) | np.isin(st, _NO_SESSION))) | bypass
        if later is not None:
            sel &= ~later
        rows = np.flatnonzero(sel)
        if rows.size == 0:
            return rows, None
        # a packet dropped or delivered before any firewall whose flow has a session there (a reply of a denied
        # flow, the uninspected direction of an asymmetric path) gets no record of its own: its flow's record is
        # that session's, which counts what the firewall saw (the packet itself is in the drops file)
        early = fw[rows] < 0
        if early.any():
            keep = np.ones(rows.size, bool)
            keep[early] = ~self._has_session(work, rows[early])
            rows = rows[keep]
            if rows.size == 0:
                return rows, None
        flip = None
        if self.pickup:
            flip = self.sides.sender_is_server(before[0][rows], before[1][rows], before[2][rows], before[3][rows],
                                               work.proto[rows], work.tcp_flags[rows])
        return rows, flip

    def _log_drops(self, work: PacketBatch, before, rows: np.ndarray, flip: np.ndarray | None,
                   followed: np.ndarray | None, refs: np.ndarray | None, fw: np.ndarray) -> None:
        """Hand the drop log the packets of ``rows`` (from :meth:`_drop_rows`) and the later fragments among
        ``followed`` whose first fragment it counted, with that one's ports."""
        src, dst, sp, dp = (c[rows] for c in before)
        if followed is not None and followed.size:
            f = followed[refs[followed, fr.REF_LOG] == 1]
            if f.size:
                order = np.argsort(np.concatenate([rows, f]), kind="stable")
                rows = np.concatenate([rows, f])[order]
                src = np.concatenate([src, before[0][f]])[order]
                dst = np.concatenate([dst, before[1][f]])[order]
                sp = np.concatenate([sp, refs[f, fr.REF_SPORT].astype(np.uint16)])[order]
                dp = np.concatenate([dp, refs[f, fr.REF_DPORT].astype(np.uint16)])[order]
                if flip is not None:
                    flip = np.concatenate([np.asarray(flip, bool), refs[f, fr.REF_FLIP] == 1])[order]
        if rows.size == 0:
            return
        st = work.status
        self.drop_log.add(src, dst, sp, dp, work.proto[rows], work.ts_ns[rows], work.wirelen[rows], st[rows],
                          fw[rows], flip)

    def _count_followers(self, work: PacketBatch, rows: np.ndarray, refs: np.ndarray) -> None:
        """Count the later fragments ``rows`` where their first fragments were counted (``refs``, see
        fragments.py): GWLB flow and per-firewall counters, firewall session, NAT mapping; each keeps the flow,
        session or mapping alive as a packet of it does (its last_seen moves to the fragment's time)."""
        if rows.size == 0:
            return
        r = refs[rows]
        ts, wl = work.ts_ns[rows], work.wirelen[rows]
        inner = None  # a firewall counts the IPv4 packet it gets out of Geneve, without the frame's link header
        gwlbs = list(self.gwlbs.values())
        col = np.ascontiguousarray
        for g in _present(r[:, fr.REF_GWLB][r[:, fr.REF_GWLB] >= 0], len(gwlbs)):
            sel = r[:, fr.REF_GWLB] == g
            q = r[sel]
            insp = gwlbs[g]
            insp.lb.count_followers(col(q[:, fr.REF_LB_SLOT]), col(q[:, fr.REF_LB_FIRST]), col(q[:, fr.REF_LB_FW]),
                                    ts[sel], wl[sel])
            has = q[:, fr.REF_FW_SLOT] >= 0
            if inner is None and has.any():
                inner = _inner_wirelen(work, rows)
            for k in _present(q[has, fr.REF_FW], len(insp.firewalls)):
                m = has & (q[:, fr.REF_FW] == k)
                insp.firewalls[k].count_followers(col(q[m, fr.REF_FW_SLOT]), col(q[m, fr.REF_FW_START]),
                                                  col(q[m, fr.REF_FW_FIRST]), q[m, fr.REF_REV].astype(np.uint8),
                                                  inner[sel][m], ts[sel][m])
        for g in _present(r[:, fr.REF_NAT][r[:, fr.REF_NAT] >= 0], len(self.nats)):
            sel = r[:, fr.REF_NAT] == g
            self.nats[g].count_followers(col(r[sel, fr.REF_NAT_SLOT]), col(r[sel, fr.REF_NAT_FIRST]), wl[sel],
                                         ts[sel])

    def _has_session(self, work: PacketBatch, rows: np.ndarray) -> np.ndarray:
        """bool per row: some firewall holds a session of the row's flow (as the row's columns address it)."""
        k = rows.size
        src, dst, sport, dport, proto = take_columns(rows, [work.src_ip, work.dst_ip, work.sport, work.dport,
                                                            work.proto])
        a_ip, b_ip, a_pt, b_pt, _ = flow_keys(src, dst, sport, dport)
        found = np.zeros(k, bool)
        slot = np.empty(k, np.int64)
        for e in self.endpoints:
            tag = np.full(k, e.id, np.uint64)
            for insp in self.gwlbs.values():
                for fw in insp.firewalls:
                    fw.table.lookup(a_ip, b_ip, a_pt, b_pt, proto, tag, slot)
                    found |= slot >= 0
        return found

    def _account(self, res: ChunkResult, gen) -> None:
        n = res.status.shape[0]
        self.packets_in += n
        self._count_drops(res.stage, res.status)
        if gen is not None:
            self._count_drops(gen.stage, gen.batch.status)
        self.packets_out += len(res.output)
        self.bytes_out += res.output.nbytes
        self.generated += res.generated

    def _count_drops(self, stage: np.ndarray, status: np.ndarray) -> None:
        """Count the dropped packets (``stage`` not 255) in their stage's counters, by status."""
        d = np.flatnonzero(stage != 255)
        if d.size == 0:
            return
        order, starts = group_rows(stage[d].astype(np.int16), len(STAGES))
        st = status[d]
        for s in np.flatnonzero(starts[1:] != starts[:-1]).tolist():
            self.counters[STAGES[s]].add_drops(st[order[starts[s]: starts[s + 1]]])

    # ------------------------------------------------------------------ end of run
    def finish(self) -> list[tuple[str, int, np.ndarray]]:
        """Close every firewall session (end of run); returns (gwlb, firewall index, sessions) triples. Fragments
        still held (their first fragment never came) are dropped (``FRAG_NO_FIRST``)."""
        held = self.frags.flush()
        if held is not None:
            self.counters["input"].add_drops(held.status)
        out = []
        for name, insp in self.gwlbs.items():
            for k, s in insp.finish(self.last_ts):
                out.append((name, k, s))
        return out

    def take_sessions(self) -> list[tuple[str, int, np.ndarray]]:
        """Sessions that ended since the last call, as (gwlb, firewall index, SESSION_DTYPE records)."""
        out, self._ended_sessions = self._ended_sessions, []
        return out

    # ------------------------------------------------------------------ flow log records
    def flow_records(self, gwlb: str, fw: int, sessions: np.ndarray) -> dict[str, list]:
        """Flow-log columns (report.FLOW_LOG_FIELDS) for sessions ended on one firewall."""
        from .stages.firewall import END_REASONS
        from .stages.policy import Action

        insp = self.gwlbs[gwlb]
        k = sessions.shape[0]
        cip, sip = sessions["client_ip"], sessions["server_ip"]
        cport, sport, proto = sessions["client_port"], sessions["server_port"], sessions["proto"]
        outbound = np.zeros(k, bool)
        server_inside = np.zeros(k, bool)
        for r in self.routers:
            outbound |= r.subnet_of(cip) >= 0
            server_inside |= r.subnet_of(sip) >= 0
        nat_ip = np.zeros(k, np.uint32)
        nat_port = np.full(k, -1, np.int32)
        for g, gw in enumerate(self.nats):
            # outbound flows: the SNAT mapping of the client, if it still lives
            pp = _public_port(gw, cip, cport, proto)
            hit = outbound & (pp >= 0) & (nat_port < 0)
            nat_ip[hit] = gw.public_ip
            nat_port[hit] = pp[hit]
            # inbound flows: the DNAT rule that leads to the server
            for rule in gw.cfg.dnat:
                hit = ~outbound & (sip == rule.to_ip) & (sport == rule.to_port) & (proto == rule.proto)
                hit &= nat_port < 0
                nat_ip[hit] = gw.public_ip
                nat_port[hit] = rule.port
        ep_name = {e.id: e.name for e in self.endpoints}
        rule_names = list(self.policy.rule_names) + ["default"]
        action_names = {int(a): a.name.lower().replace("_", "-") for a in Action}
        fw_name = insp.cfg.firewall_names[fw]
        nat_ip_s = ip_strs(nat_ip)
        return {
            "src_ip": ip_strs(cip), "src_port": cport.tolist(), "dst_ip": ip_strs(sip), "dst_port": sport.tolist(),
            "proto": proto.tolist(),
            "direction": ["inbound" if not o else "east-west" if e else "outbound"
                          for o, e in zip(outbound.tolist(), server_inside.tolist())],
            "endpoint": [ep_name.get(int(e), f"{int(e):#x}") for e in sessions["endpoint_id"].tolist()],
            "firewall": [fw_name] * k,
            "rule": [rule_names[r] if 0 <= r < len(rule_names) else None for r in sessions["rule"].tolist()],
            "action": [action_names.get(a) for a in sessions["action"].tolist()],
            "nat_ip": [s if p >= 0 else None for s, p in zip(nat_ip_s, nat_port.tolist())],
            "nat_port": [p if p >= 0 else None for p in nat_port.tolist()],
            "packets": sessions["packets_c2s"].tolist(), "bytes": sessions["bytes_c2s"].tolist(),
            "packets_reply": sessions["packets_s2c"].tolist(), "bytes_reply": sessions["bytes_s2c"].tolist(),
            "first_seen": (sessions["start_ns"] / 1e9).tolist(), "last_seen": (sessions["end_ns"] / 1e9).tolist(),
            "end_reason": [END_REASONS.get(int(r)) for r in sessions["end_reason"].tolist()],
            **self._inspection_columns(insp.firewalls[fw], sessions),
        }

    @staticmethod
    def _inspection_columns(firewall, sessions: np.ndarray) -> dict[str, list]:
        """Flow-log fields of content inspection: application (None when the session was not inspected), host,
        sni, url, category."""
        from .inspect.applications import APPLICATIONS

        k = sessions.shape[0]
        if firewall.inspection is None:
            return {"application": [None] * k, "host": [None] * k, "sni": [None] * k, "url": [None] * k,
                    "category": [None] * k}
        notes = firewall.inspected_fields(sessions["inspect_ref"].tolist())
        return {"application": [APPLICATIONS[a] if a >= 0 else None for a in sessions["application"].tolist()],
                "host": [n[0] for n in notes], "sni": [n[1] for n in notes], "url": [n[2] for n in notes],
                "category": [n[3] for n in notes]}

    def firewall_objects(self):
        """Every Firewall of every GWLB."""
        for g in self.gwlbs.values():
            yield from g.firewalls

    def take_threats(self) -> list[dict]:
        """Threat-log records (signature alerts, URL events) produced since the last call, in time order."""
        out = []
        for fw in self.firewall_objects():
            if fw.inspection is not None:
                out += fw.inspection.take_threats()
        out.sort(key=lambda r: r["ts"])
        return out

    def _threats_to(self, threat_w) -> None:
        """The threat-log records since the last call to ``threat_w``; without a threat log they are let go
        undecoded (the summary's counters and top threats are kept as they happen)."""
        if threat_w is not None:
            threat_w.write(self.take_threats())
            return
        for fw in self.firewall_objects():
            if fw.inspection is not None:
                fw.inspection.discard_threats()

    # ------------------------------------------------------------------ whole captures
    def run(self, source, output=None, *, taps=None, flow_log=None, events=None, chunk: int = 65536,
            quiet: bool = True, strict: bool = True, observers=(), select=None, threat_log=None) -> Summary:
        """Replay a capture (pcap or pcapng path) through the path.

        Parameters
        ----------
        source : path or reader
            The capture, as seen on the business side; or a reader already open: an iterator of PacketBatch with
            ``error``, ``skipped_bytes``, ``skipped_records`` and ``close()``, as :func:`~gwlb_fast.pcapio.read_pcap`
            returns.
        output : path or OrderedWriter, optional
            Where the delivered packets go: pcapng when the name ends in ``.pcapng`` (one interface per link
            type, nanosecond resolution), else classic pcap (Ethernet, nanosecond timestamps). An
            :class:`~gwlb_fast.pcapio.OrderedWriter` already open is written and closed as it is (``run
            --workers`` gives each worker one into memory shared with the parent, :mod:`gwlb_fast.scale.rings`).
        taps : folder or dict, optional
            One capture per link (``TAP_LINKS``), in the output's format; the GWLB <-> firewall links as Geneve
            frames. A dict gives an OrderedWriter for every link instead.

        Every output is written under a temporary name and renamed into place when the run completes (an error
        leaves no partial file), and each is in time order. An output that is, or resolves to, an input (the
        capture, the topology, the events file) raises ConfigError before anything is written.
        flow_log : path, optional
            One record per session (``.jsonl`` or ``.csv``).
        threat_log : path, optional
            One record per signature alert or URL event (``.jsonl``; DESIGN.md section 12).
        events : path or list, optional
            What-if health changes (``[{at, firewall, state}]``, seconds after the first packet); the topology's
            own ``events`` apply when this is None.
        chunk : int
            Packets per batch.
        quiet : bool
            No progress line on the terminal.
        strict : bool
            A damaged capture raises ``PcapError`` after every good packet before the damage went through the path
            (and the outputs were written); with False the problem is only reported in the summary.
        observers : sequence
            Objects told what the run does, in order: ``start(pipeline)``, ``chunk(pipeline, batch, result)`` after
            each piece of the
            capture went through (the input packets and their :class:`ChunkResult`), ``event(pipeline, event)`` at
            each health event, ``sessions(pipeline, gwlb, firewall index, sessions)`` for ended sessions, and
            ``close(pipeline, summary)`` at the end (each method is optional). The drops file and the HTML report
            are written by observers.
        select : callable, optional
            ``select(batch) -> batch``: the packets of each chunk read that this pipeline replays (``run --workers``
            gives each worker its flow shard this way, see :mod:`gwlb_fast.scale.parallel`).
        """
        evs = self._events(events)
        # every check before any file is created: a usage error leaves nothing behind, no output is an input
        out_open = output if isinstance(output, OrderedWriter) else None
        taps_open = dict(taps) if isinstance(taps, dict) else None
        if out_open is not None:
            output = None
        fmt = output_format(output) if output is not None else "pcap"
        tap_dir = Path(taps) if taps is not None and taps_open is None else None
        tap_paths = {k: tap_dir / f"{k}.{fmt}" for k in TAP_LINKS} if tap_dir is not None else {}
        if flow_log is not None:
            FlowLogWriter.check_path(flow_log)
        if threat_log is not None:
            ThreatLogWriter.check_path(threat_log)
        inputs = [source, events if isinstance(events, (str, os.PathLike)) else None]
        # the topology and the files it names (a PAN-OS export, a URL database, signature files) are inputs too
        for f in (self.topo.source, *getattr(self.policy, "input_files", ())):
            if f and os.path.isfile(f):
                inputs.append(f)
        refuse_overlap(inputs, [output, flow_log, threat_log, *tap_paths.values()])
        if tap_dir is not None and tap_dir.exists() and not tap_dir.is_dir():
            raise ConfigError(f"{tap_dir}: --taps needs a folder, and this is a file")
        if taps is not None and not self.keep_taps:
            self.record_taps(True)
        t_start = time.perf_counter()
        size = os.path.getsize(source) if isinstance(source, (str, os.PathLike)) and os.path.isfile(source) else None
        own_reader = not hasattr(source, "skipped_records")
        if not own_reader:
            reader = source  # already open: a PcapReader, or the pieces of a split capture (gwlb_fast.scale.distributed)
        else:
            reader = read_pcap(source, chunk=chunk, parse=False, strict=False)
            reader.release_pages = True  # every chunk is copied into the path's own arena (bounded resident memory)
        writers: dict[str, OrderedWriter] = taps_open or {}
        out_w, log_w, threat_w = out_open, None, None
        done = False
        with replay_memory():  # freed chunk buffers kept, no huge pages for short-lived arrays (_kernels/heap.pyx)
            try:
                if output is not None:
                    out_w = OrderedWriter(PcapWriter(output, linktype=1 if fmt == "pcap" else None))
                if flow_log is not None:
                    log_w = FlowLogWriter(flow_log)
                    self.drop_log = DropLog(self._direction_of, self.firewall_names)
                if threat_log is not None:
                    threat_w = ThreatLogWriter(threat_log)
                if tap_dir is not None:
                    tap_dir.mkdir(parents=True, exist_ok=True)
                    for k, path in tap_paths.items():
                        writers[k] = OrderedWriter(PcapWriter(path, linktype=1 if fmt == "pcap" else None))
                _notify(observers, "start", self)
                self._replay(reader, evs, out_w, writers, log_w, Progress(size, quiet=quiet), observers, select,
                             threat_w, fill=own_reader)
                if out_w is not None:
                    out_w.close()
                    self.bytes_out = out_w.bytes  # the records as written (Linux cooked input becomes Ethernet)
                for w in writers.values():
                    w.close()
                if log_w is not None:
                    log_w.close()
                if threat_w is not None:
                    threat_w.close()
                done = True
            finally:
                if not done:
                    for w in (out_w, log_w, threat_w, *writers.values()):
                        if w is not None:
                            w.abort()
                reader.close()
        input_error = str(reader.error) if reader.error is not None else None
        summary = self.summary(time.perf_counter() - t_start)
        summary.input_error = input_error
        summary.input_skipped_bytes = reader.skipped_bytes
        summary.input_skipped_records = reader.skipped_records
        summary.out_of_order = sum(w.late for w in (out_w, *writers.values()) if w is not None)
        _notify(observers, "close", self, summary)
        if input_error is not None and strict:
            raise reader.error
        return summary

    def _replay(self, reader, evs, out_w, writers, log_w, progress, observers=(), select=None,
                threat_w=None, fill=False) -> None:
        """The loop of :meth:`run`: chunks through the path, delivered packets and taps to their writers in time
        order, ended sessions to the flow log, alerts and URL events to the threat log. ``fill``: ``reader`` is a
        :class:`~gwlb_fast.pcapio.PcapReader` of the run's own, which may copy each chunk into the path's arena as
        it scans it (``arena_for``)."""
        # two arenas taken in turn: a chunk's delivered packets may be written from its arena by the output's
        # thread (PcapWriter.write_framed) while the next chunk goes through the path in the other one
        arenas = [np.zeros(0, np.uint8), np.zeros(0, np.uint8)]
        writing: list = [None, None]  # the thread still writing from each arena
        turn = 0
        filled = [False]  # the reader copied the chunk being read into arenas[turn]

        def take_arena(nbytes: int) -> np.ndarray:
            """The other arena, once its packets are in the file, with room for ``nbytes``."""
            nonlocal turn
            turn ^= 1
            if writing[turn] is not None:
                writing[turn].join()
                writing[turn] = None
            if arenas[turn].shape[0] < nbytes:
                # with headroom: chunks of varying sizes would otherwise grow it a little time after time, each
                # time a new buffer of a chunk's size, which fragments the allocator's heap
                arenas[turn] = np.empty(nbytes + nbytes // 4, np.uint8)
            return arenas[turn]

        def fill_arena(nbytes: int) -> np.ndarray:  # the reader's arena_for
            filled[0] = True
            return take_arena(nbytes)

        # the reader's scan copies each chunk into the arena the path works in (one pass over the capture's bytes):
        # when the path's copy of a chunk is its whole stretch, which selecting a flow shard spoils, and the input
        # packets as captured are not needed beside the path's copy, which the observers see
        if fill and select is None and not observers and hasattr(reader, "arena_for"):
            reader.arena_for = fill_arena
        in_order = True  # the capture's timestamps never went back so far
        last_in = max_in = None
        try:
            for batch in reader:
                if select is not None:
                    batch = select(batch)
                in_arena = filled[0] and _in_arena(batch, arenas[turn])
                filled[0] = False
                for part in self._split_at_events(batch, evs, arenas[turn] if in_arena else None):
                    if isinstance(part, dict):
                        self._apply(part)
                        _notify(observers, "event", self, part)
                        continue
                    if len(part):  # the health probes the GWLB sent up to this part's last packet
                        self._probes_to(writers, int(part.ts_ns.max()))
                    if in_arena:
                        in_arena = False  # the chunk's first part is copied in place: arenas[turn] as it was read
                    else:
                        take_arena(part.nbytes)
                    res = self._process(part, arenas[turn], core_output=True)  # only written: no parse columns
                    t0 = time.perf_counter()
                    ts = part.ts_ns
                    if len(part):
                        hi = int(ts.max())
                        if in_order and ((last_in is not None and int(ts[0]) < last_in)
                                         or not bool((ts[1:] >= ts[:-1]).all())):
                            in_order = False
                        last_in = int(ts[-1])
                        max_in = hi if max_in is None else max(max_in, hi)
                    # every packet the path makes carries the timestamp of an input packet: while the capture is
                    # in time order, nothing later can be earlier than its last packet; otherwise hold a window
                    mark = last_in if in_order else (None if max_in is None else max_in - REORDER_WINDOW_NS)
                    if out_w is not None:
                        writing[turn] = out_w.write_framed(res.output, mark)
                        if writing[turn] is None:
                            out_w.write(res.output, mark)  # gathered: the arena is free when it returns
                    for link, parts in res.taps.items():
                        writers[link].write(parts, mark)
                    _notify(observers, "chunk", self, part, res)
                    if log_w is not None or observers:
                        for g, k, s in self._collect_sessions():
                            if log_w is not None:
                                log_w.write(self.flow_records(g, k, s))
                            _notify(observers, "sessions", self, g, k, s)
                    if log_w is not None:
                        log_w.write(self.drop_log.take(int(part.ts_ns.max()) if len(part) else None))
                    self._threats_to(threat_w)
                    self.stage_seconds["output"] += time.perf_counter() - t0
                progress.update(self.packets_in, getattr(reader, "offset", None))
            if self.last_ts is not None:
                # the probes up to the capture's last packet: a flow shard of it (run --workers) may have seen
                # none of the last ones
                self._probes_to(writers, self.last_ts)
            for g, k, s in [*self._collect_sessions(), *self.finish()]:
                if log_w is not None:
                    log_w.write(self.flow_records(g, k, s))
                _notify(observers, "sessions", self, g, k, s)
            if log_w is not None:
                log_w.write(self.drop_log.finish())
            self._threats_to(threat_w)
        finally:
            progress.close()

    def _probes_to(self, writers, last: int) -> None:
        """The health probes the GWLB sent up to time ``last`` (ns) not yet written, to the ``health`` tap."""
        if not self.keep_taps or self._timeline is None:
            return
        probes = self._timeline.probe_packets(self.topo.gwlbs, self._probe_lo, last + 1)
        self._probe_lo = max(self._probe_lo, last + 1)
        if len(probes):
            writers["health"].write(probes)

    def what_if(self, batches, events=None):
        """Carry PacketBatch chunks along the path with a what-if script, as :meth:`run` does: yields one
        :class:`ChunkResult` per piece between two health actions (``events`` as in :meth:`run`)."""
        evs = self._events(events)
        for batch in batches:
            for part in self._split_at_events(batch, evs):
                if isinstance(part, dict):
                    self._apply(part)
                else:
                    yield self.process(part)

    def _collect_sessions(self):
        return self.take_sessions()

    def _direction_of(self, client_ip: np.ndarray) -> np.ndarray:
        """bool[k]: True where a flow's client is inside a VPC subnet (outbound), as the flow log says."""
        out = np.zeros(client_ip.shape[0], bool)
        for r in self.routers:
            out |= r.subnet_of(client_ip) >= 0
        return out

    def _events(self, events) -> list[dict]:
        if events is None:
            evs = self.topo.events
        elif isinstance(events, (str, os.PathLike)):
            evs = load_events(events, self.topo)
        else:
            evs = events
        out = []
        for e in evs:
            d = e if isinstance(e, dict) else {"at": e.at, "firewall": e.firewall, "state": e.state,
                                                "event": e.event, "gwlb": e.gwlb}
            out.append({"at": float(d["at"]), "firewall": d["firewall"], "state": d.get("state"),
                        "event": d.get("event"), "gwlb": d.get("gwlb")})
        self._raw_events = sorted(out, key=lambda d: d["at"])
        self._timeline = None
        return []   # expanded into the health timeline at the first packet (see _split_at_events)

    def _apply(self, part: dict) -> None:
        """Apply one action of the health timeline (the GWLB's view, or the appliance's own state)."""
        insp = self.gwlbs[part["gwlb"]]
        if part["kind"] == "alive":
            insp.set_alive(part["firewall"], part["value"])
            self.events_done.append({"at": part["at"], "firewall": part["firewall"], "event": part["cause"]})
            return
        insp.set_health(part["firewall"], part["value"], part["ts_ns"])
        rec = {"at": part["at"], "firewall": part["firewall"], "state": part["value"]}
        if part["cause"] != "event":
            rec["cause"] = part["cause"]
        self.events_done.append(rec)

    def _split_at_events(self, batch: PacketBatch, evs: list[dict], arena: np.ndarray | None = None):
        """Yield the batch in pieces, with the health actions that fall inside it in between. ``arena``: the
        batch's bytes are at its start (the reader copied the chunk there), where the path works on the batch's
        first piece in place: a batch cut in several pieces is first copied out of it (its later pieces must not
        be overwritten while the first one goes through)."""
        if self.first_ts is None and len(batch):
            self.first_ts = int(batch.ts_ns.min())
        if self._timeline is None and self.first_ts is not None:
            from .stages.health import HealthTimeline

            self._timeline = HealthTimeline.build(self.topo.gwlbs, getattr(self, "_raw_events", []), self.first_ts)
            self._probe_lo = self.first_ts
            evs.extend({"at": (a.at_ns - self.first_ts) / 1e9, "ts_ns": a.at_ns, "gwlb": a.gwlb,
                        "firewall": a.firewall, "kind": a.kind, "value": a.value, "cause": a.cause}
                       for a in self._timeline.actions)
        pending = [e for e in evs if not e.get("_done")]
        if not pending or not len(batch):
            yield batch
            return
        if arena is not None:
            cuts = np.searchsorted(batch.ts_ns, np.array([e["ts_ns"] for e in pending], np.int64), side="left")
            if bool(((cuts > 0) & (cuts < len(batch))).any()):
                batch = _detached(batch)
        start = 0
        for e in pending:
            t = e["ts_ns"]
            cut = int(np.searchsorted(batch.ts_ns, t, side="left"))
            if cut >= len(batch) and int(batch.ts_ns[-1]) < t:
                break
            if cut > start:
                yield batch[start:cut]
                start = cut
            e["_done"] = True
            yield e
        if start < len(batch):
            yield batch[start:]

    def summary(self, seconds: float = 0.0) -> Summary:
        s = Summary()
        s.packets_in = self.packets_in
        s.bytes_in = self.bytes_in
        s.packets_out = self.packets_out
        s.bytes_out = self.bytes_out
        s.generated = self.generated
        s.truncated = self.truncated
        s.ip_checksums_filled = self.ip_csum_filled
        s.seconds = seconds
        if self.first_ts is not None and self.last_ts is not None:
            s.capture_seconds = (self.last_ts - self.first_ts) / 1e9
        s.drops = {k: describe_counts(c.drops) for k, c in self.counters.items() if c.dropped}
        hits = np.zeros(len(self.policy.rules) + 1, np.int64)
        for gname, insp in self.gwlbs.items():
            c = insp.lb.counters()
            base = self.firewall_offsets[gname]
            for k, fw in enumerate(insp.firewalls):
                hits += fw.hits
                fc = c["firewalls"][fw.name]
                s.firewalls[self.firewall_names[base + k]] = {
                    "flows": fc["flows"], "packets": fc["packets"], "bytes": fc["bytes"], "state": fc["health"]}
        names = list(self.policy.rule_names) + ["default"]
        s.rules = {names[i]: int(h) for i, h in enumerate(hits) if h or i < len(names) - 1}
        nat = {}
        for gw in self.nats:
            for key, val in gw.stats.items():
                nat[key] = nat.get(key, 0) + int(val)
        # the NAT drops as the path counted them (the gateways' own stats leave these at 0; replies addressed to a
        # private host are refused by the pipeline itself)
        nat_drops = self.counters["nat"].drops
        for key, code in (("port_exhausted_packets", PktStatus.NAT_PORT_EXHAUSTED),
                          ("table_full_packets", PktStatus.NAT_TABLE_FULL),
                          ("no_mapping_packets", PktStatus.NAT_NO_MAPPING)):
            nat[key] = int(nat_drops[code])
        s.nat = nat
        picked = np.zeros(2, np.int64)
        for insp in self.gwlbs.values():
            for fw in insp.firewalls:
                picked += fw.picked_up
        s.replay = {"pickup": self.pickup, "local_packets": self.local_packets,
                    "sessions_picked_up": int(picked[0]), "sessions_reversed": int(picked[1]),
                    "mappings_picked_up": nat.get("mappings_picked_up", 0),
                    "server_side_packets": nat.get("server_side_packets", 0)}
        s.events = list(self.events_done)
        s.stage_seconds = {k: round(v, 4) for k, v in self.stage_seconds.items()}
        s.hints = self._hints()
        s.inspection = self.inspection_summary()
        return s

    def _hints(self) -> list[str]:
        """One line naming the setting that would keep the packets of flows that began before the capture, when
        they are more than 1% of the packets (TCP_NOT_SYN at a firewall, NAT_NO_MAPPING at a NAT gateway)."""
        if not self.packets_in:
            return []
        not_syn = int(self.counters["firewall"].drops[PktStatus.TCP_NOT_SYN])
        no_map = self.no_mapping_without_session
        share = (not_syn + no_map) / self.packets_in
        if share <= 0.01:
            return []
        what = " and ".join(f"{k:,} {name}" for k, name in ((not_syn, "TCP_NOT_SYN"), (no_map, "NAT_NO_MAPPING"))
                            if k)
        if not self.pickup:
            return [(f"hint: {what} drops ({share:.1%} of the packets) look like flows that began before the capture: "
                    f"set replay: {{pickup: true}} in the topology (or run --pickup) to take them as established")]
        if not_syn and self.policy.tcp_reject_non_syn:
            return [(f"hint: {what} drops ({share:.1%} of the packets): security_policy.tcp_reject_non_syn: false "
                    f"lets the firewalls accept a TCP session's non-SYN first packet (e.g. flows moved by a "
                    f"failover)")]
        return []

    def inspection_summary(self, top: int | None = TOP_NAMES) -> dict:
        """The inspection's counters and its ``top`` applications, URL categories and threats (None: all), as the
        summary holds them; {} when no firewall inspects."""
        fws = [fw for fw in self.firewall_objects() if fw.inspection is not None]
        if not fws:
            return {}
        counts: dict[str, int] = {}
        tops = {"applications": {}, "categories": {}, "threats": {}}
        for fw in fws:
            ins = fw.inspection
            for k, v in ins.stats().items():
                counts[k] = counts.get(k, 0) + int(v)
            for key, src in (("applications", ins.top_apps), ("categories", ins.top_categories),
                             ("threats", ins.top_threats)):
                for name, n in src.items():
                    tops[key][name] = tops[key].get(name, 0) + n
        out = {"counters": counts}
        for key, d in tops.items():
            out[key] = sorted(d.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
        return out


def topology_policy(topo: Topology) -> Policy:
    """The security policy of a topology's firewalls (its ``security_policy``), as a :class:`Pipeline` builds it."""
    if topo.security_policy is None:
        raise ConfigError(f"{topo.source}: security_policy: missing (every firewall needs a policy)")
    return Policy.from_yaml({"security_policy": topo.security_policy}, name=topo.source, home_net=topo.vpc_cidrs())


def _notify(observers, what: str, *args) -> None:
    for o in observers:
        f = getattr(o, what, None)
        if f is not None:
            f(*args)


def _public_port(gw: NatGateway, ip: np.ndarray, port: np.ndarray, proto: np.ndarray) -> np.ndarray:
    """The public port of each private (ip, port, proto)'s live SNAT mapping on ``gw``, -1 where none."""
    m = ip.shape[0]
    slot = np.empty(m, np.int64)
    gw.table.lookup(np.ascontiguousarray(ip, np.uint32), np.zeros(m, np.uint32),
                    np.ascontiguousarray(port, np.uint16), np.zeros(m, np.uint16),
                    np.ascontiguousarray(proto, np.uint8), None, slot)
    out = np.full(m, -1, np.int32)
    hit = slot >= 0
    out[hit] = gw.slot_port[slot[hit]]
    return out


class _Walk:
    """The route walk of one batch: per-packet position, visited stages and outcome, advanced stage by stage."""

    def __init__(self, pipe: Pipeline, batch: PacketBatch, taps: dict, stage: np.ndarray,
                 source: np.ndarray | None = None, counted: bool = False):
        self.p = pipe
        self.batch = batch
        self.taps = taps
        self.stage = stage
        n = len(batch)
        self.source = np.arange(n) if source is None else source
        self.vpc = np.full(n, -1, np.int16)
        self.table = np.full(n, -1, np.int32)
        self.delivered = np.zeros(n, np.uint8)
        self.inspected = np.zeros((n, max(1, len(pipe.endpoints))), bool)
        self.from_internet = np.zeros(n, bool)
        self.nat_out = np.zeros(n, bool)
        self.pending_nat = np.full(n, -1, np.int16)  # private-form reply whose SNAT mapping did not exist yet
        self.held = np.zeros(n, bool)  # waits for a later phase of the walk (see _hold)
        self.releases = 0
        self.fw = np.full(n, -1, np.int16)
        self.rule = np.full(n, -1, np.int32)
        self.failed_fw = np.full(n, -1, np.int16)
        self.is_resets = source is not None
        self.gen_parts: list[tuple[PacketBatch, np.ndarray, int]] = []
        # with ``counted`` (a batch with fragments): where each packet was counted, for the later fragments of
        # first fragments (fragments.REF_* columns)
        self.refs = np.full((n, fr.N_REF), -1, np.int64) if counted else None

    # ---------------------------------------------------------------- helpers
    def _drop(self, rows: np.ndarray, code: int, stage: int) -> None:
        if rows.size:
            self.batch.status[rows] = code
            self.stage[rows] = stage
            self._trace("drop", rows, status=code, stage=stage)

    def _tap(self, link: str, batch: PacketBatch) -> None:
        if self.taps and len(batch):
            self.taps[link].append(batch.copy())  # a copy: a later stage may rewrite the shared arena

    def _tap_rows(self, link: str, rows: np.ndarray) -> None:
        if self.taps and rows.size:
            self.taps[link].append(self.batch[rows].copy())

    def _trace(self, step: str, rows: np.ndarray, **info) -> None:
        """Record one step of the walk for the rows ``rows`` when the pipeline traces (``Pipeline.trace``)."""
        if self.p.trace is not None and rows.size:
            self.p.trace.append((step, {"walk": "resets" if self.is_resets else "packets",
                                        "rows": np.array(rows), **info}))

    def _sync(self, rows: np.ndarray, sub: PacketBatch) -> None:
        """Copy the columns a stage rewrote on ``sub`` (rows of our batch) back."""
        b = self.batch
        changed = (b.status[rows] == PktStatus.OK) & (sub.status != PktStatus.OK)
        put_columns(rows, [b.src_ip, b.dst_ip, b.sport, b.dport, b.status],
                    [sub.src_ip, sub.dst_ip, sub.sport, sub.dport, sub.status])
        return changed

    def _nat_counted(self, n: int) -> np.ndarray | None:
        """The ``counted`` argument of a NAT gateway's call on ``n`` packets when the walk keeps refs."""
        return None if self.refs is None else np.empty((n, 2), np.int64)

    def _nat_refs(self, rows: np.ndarray, g: int, counted: np.ndarray | None) -> None:
        """Keep where NAT gateway ``g`` counted the rows ``rows`` (its ``counted`` output)."""
        if counted is None:
            return
        hit = counted[:, 0] >= 0
        r = rows[hit]
        self.refs[r, fr.REF_NAT] = g
        self.refs[r, fr.REF_NAT_SLOT] = counted[hit, 0]
        self.refs[r, fr.REF_NAT_FIRST] = counted[hit, 1]

    def _count_replies(self, rows: np.ndarray, g: int) -> np.ndarray:
        """Count the private-form replies ``rows`` in their live SNAT mapping on gateway ``g`` (as a reply in public
        form is counted there: packets, bytes, last_seen) and keep where, for their later fragments. Returns each
        row's public port, -1 where it has no mapping (nothing counted)."""
        b = self.batch
        counted = self._nat_counted(rows.size)
        pport = self.p.nats[g].count_replies(*take_columns(rows, [b.dst_ip, b.dport, b.proto, b.ts_ns, b.wirelen]),
                                             counted)
        self._nat_refs(rows, g, counted)
        return pport

    # ---------------------------------------------------------------- entry
    def enter(self) -> None:
        """Where each packet enters: its subnet's route table, or the NAT gateway it came to from the Internet."""
        t0 = time.perf_counter()
        b, p = self.batch, self.p
        if len(b) and mark_special(b.status, b.src_ip, b.dst_ip, p._subnet_broadcast):
            self.stage[(b.status >= PktStatus.BROADCAST) & (b.status <= PktStatus.LINK_LOCAL)] = S_ROUTE
            if p.trace is not None:
                for code in (PktStatus.BROADCAST, PktStatus.MULTICAST, PktStatus.MARTIAN, PktStatus.LINK_LOCAL):
                    self._trace("drop", np.flatnonzero(b.status == code), status=int(code), stage=S_ROUTE)
        if p.trace is None:
            same_rows = np.empty(len(b), np.int64)
        ok = b.status == PktStatus.OK
        for vi, r in enumerate(p.routers):
            if p.trace is None:
                # one pass: the VPC and route table of the rows whose source is in one of its subnets, and the
                # delivery by the VPC itself of those whose destination is in the same subnet (below, traced)
                sn = r._subnets
                m = enter_subnets(sn.l1, sn.l2, sn.l3, r.subnet_table, vi, D_HOST, b.status, self.vpc, self.table,
                                  self.delivered, b.src_ip, b.dst_ip, same_rows)
                self._tap_rows("vpc-to-host", same_rows[:m])
                p.local_packets += m
                continue
            sub = r.subnet_of(b.src_ip)
            m = ok & (sub >= 0) & (self.vpc < 0)
            self.vpc[m] = vi
            self.table[m] = r.subnet_table[sub[m]]
            if p.trace is not None:  # the arguments cost two passes over the batch
                self._trace("enter-subnet", np.flatnonzero(m), vpc=vi, subnet=sub[m])
            # between two hosts of one subnet: delivered by the VPC itself, never through a route table
            same = np.flatnonzero(m & (r.subnet_of(b.dst_ip) == sub))
            if same.size:
                self.table[same] = -1
                self.delivered[same] = D_HOST
                self._tap_rows("vpc-to-host", same)
                self._trace("deliver", same, to="host", local=True)
                p.local_packets += int(same.size)
        outside = np.flatnonzero(ok & (self.vpc < 0))
        p.stage_seconds["route"] += time.perf_counter() - t0
        if outside.size == 0:
            return
        t0 = time.perf_counter()
        self.from_internet[outside] = True
        claimed = np.zeros(outside.size, bool)
        for g, gw in enumerate(p.nats):
            vi, table = p.nat_entry[g]
            # addressed to the public IP: DNAT, or a reply to an SNAT mapping
            pub = ~claimed & (b.dst_ip[outside] == gw.public_ip)
            if pub.any():
                rows = outside[pub]
                claimed |= pub
                sub = b[rows]
                self._tap("internet-to-nat", sub)
                before = _addresses(sub) if p.trace is not None else None
                counted = self._nat_counted(len(sub))
                gw.inbound(sub, counted=counted)
                self._nat_refs(rows, g, counted)
                if p.trace is not None:
                    self._trace("enter-nat", rows, nat=g, form="public", before=before, after=_addresses(sub),
                                status=sub.status.copy())
                bad = self._sync(rows, sub)
                self.stage[rows[bad]] = S_NAT
                good = rows[sub.status == PktStatus.OK]
                self.vpc[good], self.table[good] = vi, table
                self._tap_rows("nat-to-vpc", good)
            # addressed to a private host of the gateway's VPC or of its SNAT sources (a centralized gateway
            # translates other VPCs' flows): to a DNAT target, as the server sees it after the translation (a
            # capture taken at the server): put back in its public form and translated again
            priv = ~claimed & (p.nat_private[g].lookup(b.dst_ip[outside]) >= 0)
            if priv.any() and gw.cfg.dnat:
                cand = outside[priv]
                rule = gw.dnat_rule_of_target(b.dst_ip[cand], b.dport[cand], b.proto[cand])
                srv = rule >= 0
                if srv.any():
                    rows = cand[srv]
                    claimed[np.flatnonzero(priv)[srv]] = True
                    priv &= ~claimed
                    sub = b[rows]
                    _to_public(sub, gw.public_ip, gw._dnat_port[rule[srv]])
                    self._tap("internet-to-nat", sub)
                    counted = self._nat_counted(len(sub))
                    gw.inbound(sub, counted=counted)
                    self._nat_refs(rows, g, counted)
                    bad = self._sync(rows, sub)
                    self.stage[rows[bad]] = S_NAT
                    good = rows[sub.status == PktStatus.OK]
                    self.vpc[good], self.table[good] = vi, table
                    self._tap_rows("nat-to-vpc", good)
                    gw.stats["server_side_packets"] += int(rows.size)
            # otherwise a reply to the host's SNAT'ed flow as the host sees it
            if priv.any():
                rows = outside[priv]
                claimed |= priv
                pport = self._count_replies(rows, g)
                known = pport >= 0
                self._trace("enter-nat", rows, nat=g, form="private", public_port=pport)
                # no mapping yet: one may be made by an earlier packet of this chunk; the reply waits (with the
                # rest of its flow) until those packets have been walked, see _hold
                senders = ok & (self.vpc >= 0) & ~self.from_internet
                soon = self._hold(rows, ~known, senders, g)
                if p.pickup and not (known | soon).all():
                    # a flow that began before the capture: its mapping was made by packets we never saw (a flow
                    # a firewall knows did not: e.g. one it denied)
                    miss = np.flatnonzero(~known & ~soon)
                    miss = miss[~p._has_session(b, rows[miss])]
                    mr = rows[miss]
                    counted = self._nat_counted(mr.size)
                    pport[miss] = gw.pickup(b.dst_ip[mr], b.dport[mr], b.proto[mr], b.ts_ns[mr], b.wirelen[mr],
                                            b.tcp_flags[mr], counted=counted)
                    self._nat_refs(mr, g, counted)
                    known = pport >= 0
                self._drop(rows[~known & ~soon], PktStatus.NAT_NO_MAPPING, S_NAT)
                go = rows[known | soon]
                self.vpc[go], self.table[go] = vi, table
                if self.taps and known.any():
                    self._tap("internet-to-nat", _public_form(b[rows[known]], gw.public_ip, pport[known]))
                    self._tap("nat-to-vpc", b[rows[known]])
                gw.stats["snat_reply_packets"] += int(known.sum())
        self._drop(outside[~claimed], PktStatus.NO_ROUTE, S_ROUTE)
        p.stage_seconds["nat"] += time.perf_counter() - t0

    # ---------------------------------------------------------------- walking
    def run(self) -> None:
        """Walk every packet to its end, in phases: held packets (see _hold) wait for the phase after."""
        self._walk_hops()
        while self.held.any():
            self._release()
            self._walk_hops()

    def _walk_hops(self) -> None:
        b, p = self.batch, self.p
        n = len(b)
        if p.trace is None:
            rows, kinds, targets = np.empty(n, np.int64), np.empty(n, np.int8), np.empty(n, np.int32)
            lpm, held = p._walk_lpm, self.held.view(np.uint8)
        for _ in range(MAX_ROUTE_HOPS):
            t0 = time.perf_counter()
            if p.trace is None:
                # the rows still walking and their next hops in one pass (their tables reset to -1 there)
                m = next_hops(lpm.l1, lpm.l2, lpm.l3, p._walk_table_base, p._route_kind, p._route_target, K_NONE,
                              b.status, self.table, self.delivered, held, self.vpc, b.dst_ip, rows, kinds, targets)
                active, kind, target = rows[:m], kinds[:m], targets[:m]
            else:
                active = np.flatnonzero((b.status == PktStatus.OK) & (self.table >= 0)
                                        & (self.delivered == D_NONE) & ~self.held)
                kind, target = self._lookup(active)
            if active.size == 0:
                p.stage_seconds["route"] += time.perf_counter() - t0
                break
            if p.transit:
                # transit routers only route: a packet sent to one goes on, in this same hop, through the tables of
                # the VPC it enters, until it reaches a stage (or its end). So every packet meets the stages after
                # the same number of stages whatever tables and routers lie between (a request that crosses a
                # router and its reply that does not reach the firewall in one call, in capture order)
                for _ in range(MAX_ROUTE_HOPS):
                    via = kind == K_TR
                    if not via.any():
                        break
                    pos = np.flatnonzero(via)
                    for t in _present(target[pos], len(p.transit)):
                        sel = pos[target[pos] == t]
                        self._transit(active[sel], p.transit[t])
                    moved = pos[self.table[active[pos]] >= 0]
                    kind[pos] = K_DONE  # dropped by the router (status set) unless looked up again below
                    kind[moved], target[moved] = self._lookup(active[moved])
                stuck = kind == K_TR  # still between routers after MAX_ROUTE_HOPS of them: a loop
                self._drop(active[stuck], PktStatus.ROUTE_LOOP, S_ROUTE)
                kind[stuck] = K_DONE
            if p.transit or p.trace is not None:
                self.table[active] = -1  # each packet moves on from the table it was at
            # the rows of each kind of next hop, in order: one counting sort instead of a mask per kind
            key = kind.astype(np.int16)
            key -= K_DONE
            order, starts = group_rows(key, K_TR + 1 - K_DONE)
            of_kind = [order[starts[i]: starts[i + 1]] for i in range(K_TR + 1 - K_DONE)]  # by kind - K_DONE

            self._drop(active[of_kind[K_NONE - K_DONE]], PktStatus.NO_ROUTE, S_ROUTE)
            self._drop(active[of_kind[K_BLACKHOLE - K_DONE]], PktStatus.BLACKHOLE, S_ROUTE)
            host = active[of_kind[K_LOCAL - K_DONE]]
            if host.size:
                inside = np.zeros(host.size, bool)
                for vi, at in _groups(self.vpc[host], len(p.routers)):
                    inside[at] = p.routers[vi].subnet_of(b.dst_ip[host[at]]) >= 0
                self._drop(host[~inside], PktStatus.NO_ROUTE, S_ROUTE)
                there = host[inside]
                self.delivered[there] = D_HOST
                self._trace("deliver", there, to="host")
                self._tap_rows("vpc-to-host", there)
            out = active[of_kind[K_INTERNET - K_DONE]]
            self.delivered[out] = D_INTERNET
            self._trace("deliver", out, to="internet")
            p.stage_seconds["route"] += time.perf_counter() - t0
            to_nat, to_gwlbe = of_kind[K_NATGW - K_DONE], of_kind[K_GWLBE - K_DONE]
            for g, at in _groups(target[to_nat], len(p.nats)):
                self._nat_out(active[to_nat[at]], g)
            for e, at in _groups(target[to_gwlbe], len(p.endpoints)):
                self._inspect(active[to_gwlbe[at]], e)
        left = np.flatnonzero((b.status == PktStatus.OK) & (self.delivered == D_NONE) & ~self.held)
        self._drop(left, PktStatus.ROUTE_LOOP, S_ROUTE)

    def _lookup(self, active: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Next-hop kind and target of each row of ``active`` in the route table it is at."""
        b, p = self.batch, self.p
        kind = np.empty(active.size, np.int8)
        target = np.empty(active.size, np.int32)
        for vi, r in enumerate(p.routers):
            sel = self.vpc[active] == vi
            if not sel.any():
                continue
            rows = active[sel]
            hop = r.next_hop(np.ascontiguousarray(self.table[rows]), b.dst_ip[rows])
            if p.trace is not None:
                tab = np.ascontiguousarray(self.table[rows])
                self._trace("route", rows, vpc=vi, table=tab, route=r.route_index(tab, b.dst_ip[rows]), hop=hop)
            kind[sel] = p._hop_kind[vi][hop]
            target[sel] = p._hop_target[vi][hop]
        return kind, target

    def _transit(self, rows: np.ndarray, tr: TransitRouter) -> None:
        """Packets a VPC sent to transit router ``tr``: looked up in the table of their VPC's attachment, then handed
        to the attachment's VPC at its subnet's route table (or dropped: blackhole, no route)."""
        b = self.batch
        vpc, table, code = tr.forward(self.vpc[rows], b.dst_ip[rows])
        self._drop(rows[code == PktStatus.NO_ROUTE], PktStatus.NO_ROUTE, S_ROUTE)
        self._drop(rows[code == PktStatus.BLACKHOLE], PktStatus.BLACKHOLE, S_ROUTE)
        go = code == PktStatus.OK
        self.vpc[rows[go]] = vpc[go]
        self.table[rows] = table  # -1 where the router dropped it

    def _nat_out(self, rows: np.ndarray, g: int) -> None:
        t0 = time.perf_counter()
        loop = self.from_internet[rows] | self.nat_out[rows]
        self._drop(rows[loop], PktStatus.ROUTE_LOOP, S_ROUTE)
        rows = rows[~loop]
        if rows.size:
            gw = self.p.nats[g]
            sub = self.batch[rows]
            self._tap("vpc-to-nat", sub)
            tracing = self.p.trace is not None
            before = _addresses(sub) if tracing else None
            counted = self._nat_counted(len(sub))
            gw.outbound(sub, counted=counted)
            self._nat_refs(rows, g, counted)
            if tracing:
                self._trace("nat-out", rows, nat=g, before=before, after=_addresses(sub), status=sub.status.copy())
            bad = self._sync(rows, sub)
            self.stage[rows[bad]] = S_NAT
            good = rows[sub.status == PktStatus.OK]
            self.nat_out[good] = True
            self.delivered[good] = D_INTERNET
            self._tap_rows("nat-to-internet", good)
        self.p.stage_seconds["nat"] += time.perf_counter() - t0

    def _inspect(self, rows: np.ndarray, e: int) -> None:
        t0 = time.perf_counter()
        loop = self.inspected[rows, e]
        self._drop(rows[loop], PktStatus.ROUTE_LOOP, S_ROUTE)
        rows = rows[~loop]
        if rows.size == 0:
            return
        p, b = self.p, self.batch
        ep = p.endpoints[e]
        insp = p.gwlbs.get(ep.gwlb)
        if insp is None:
            self._drop(rows, PktStatus.NO_ROUTE, S_ROUTE)
            return
        sub = b[rows]
        self._tap("vpc-to-gwlbe", sub)
        res = insp.inspect(sub, ep, counted=self.refs is not None)
        if res.counted is not None:
            c = res.counted
            lb = c[:, COUNTED_LB_SLOT] >= 0
            r = rows[lb]
            self.refs[r, fr.REF_GWLB] = p._gwlb_index[ep.gwlb]
            self.refs[r, fr.REF_LB_SLOT] = c[lb, COUNTED_LB_SLOT]
            self.refs[r, fr.REF_LB_FIRST] = c[lb, COUNTED_LB_FIRST]
            self.refs[r, fr.REF_LB_FW] = c[lb, COUNTED_LB_FW]
            self.refs[r, fr.REF_FW] = -1
            self.refs[r, fr.REF_FW_SLOT] = -1
            ses = c[:, COUNTED_FW_SLOT] >= 0
            r = rows[ses]
            self.refs[r, fr.REF_FW] = res.fw_index[ses]
            self.refs[r, fr.REF_FW_SLOT] = c[ses, COUNTED_FW_SLOT]
            self.refs[r, fr.REF_FW_START] = c[ses, COUNTED_FW_START]
            self.refs[r, fr.REF_FW_FIRST] = c[ses, COUNTED_FW_FIRST]
            self.refs[r, fr.REF_REV] = c[ses, COUNTED_REV]
        if p.trace is not None:  # the copies only when someone reads them
            self._trace("inspect", rows, endpoint=e, gwlb=ep.gwlb, fw=res.fw_index.copy(),
                        status=res.status.copy(), by_firewall=res.by_firewall.copy(), rule=res.rule.copy(),
                        cookie=sub.flow_cookie.copy(), tuple=(sub.src_ip.copy(), sub.dst_ip.copy(), sub.sport.copy(),
                                                              sub.dport.copy(), sub.proto.copy()))
        self.inspected[rows, e] = True
        base = p.firewall_offsets[ep.gwlb]  # the GWLB's firewall k is the path's firewall base + k
        fw = res.fw_index.astype(np.int16)
        failed = res.failed_fw.astype(np.int16)
        if base:
            fw[fw >= 0] += base
            failed[failed >= 0] += base
        put_columns(rows, [self.fw, self.failed_fw, self.rule, b.status],
                    [fw, failed, res.rule.astype(np.int32, copy=False), res.status])
        bad = res.status != PktStatus.OK
        self.stage[rows[bad]] = np.where(res.by_firewall[bad], S_FIREWALL, S_GWLB)
        good = rows[~bad]
        # back at the endpoint: the route table of its subnet
        vi = p.vpc_names.index(ep.vpc)
        r = p.routers[vi]
        self.vpc[good] = vi
        self.table[good] = r.subnet_table[r.subnet_id[ep.subnet]]
        if self.taps:
            self.taps["gwlb-to-fw"].extend(w.compact() for w in res.to_fw)
            self.taps["fw-to-gwlb"].extend(w.compact() for w in res.from_fw)
            self._tap_rows("gwlbe-to-vpc", good)
        for k, s in res.sessions:
            p._ended_sessions.append((insp.name, k, s))
        if len(res.generated):
            self.gen_parts.append((res.generated, self.source[rows[res.generated_source]]
                                   if res.generated_source.size else res.generated_source, e))
        p.stage_seconds["inspect"] += time.perf_counter() - t0

    def _hold(self, rows: np.ndarray, asked: np.ndarray, senders: np.ndarray, g: int) -> np.ndarray:
        """The replies ``rows`` (where ``asked``: those without a mapping yet) whose SNAT mapping on gateway ``g``
        may be made by an earlier packet of this chunk (one of ``senders`` left from the reply's destination): they
        wait for the next phase of the walk (pending on ``g``), and so does every later packet of the same private
        (ip, port, proto) in either direction, so that each flow keeps its order through the firewall. Only after
        the earlier packets went through the firewall and the NAT gateway does the gateway know whether the mapping
        exists; a reply without one is dropped there (``NAT_NO_MAPPING``) and never reaches the firewall, as
        replies to denied flows do, whatever the chunk boundaries. Returns which of ``rows`` wait (bool)."""
        b = self.batch
        soon = np.zeros(rows.size, np.uint8)
        hold_replies(b.src_ip, b.sport, b.dst_ip, b.dport, b.proto, senders.view(np.uint8),
                     rows.astype(np.int64, copy=False), asked.view(np.uint8), self.pending_nat, g, soon,
                     self.held.view(np.uint8))
        return soon.view(bool)

    def _release(self) -> None:
        """Start the next phase: held replies are admitted if their mapping now exists, dropped if none can come,
        or, on the first release only, held again (with their flow) if a packet released with them may still make
        it. Bounding the phases to three keeps a denied flow from taking one phase per packet; the price: a reply
        whose mapping is made only by a third try of its flow's first packet in the same slice is dropped."""
        b, p = self.batch, self.p
        held = self.held.copy()
        may_wait = self.releases == 0
        self.releases += 1
        self.held[:] = False
        ok = b.status == PktStatus.OK
        for g, gw in enumerate(p.nats):
            rows = np.flatnonzero(held & (self.pending_nat == g) & ok)
            if rows.size == 0:
                continue
            pport = self._count_replies(rows, g)
            known = pport >= 0
            senders = held & ok & (self.vpc >= 0) & ~self.from_internet & (self.pending_nat < 0)
            self.pending_nat[rows[known]] = -1
            soon = self._hold(rows, ~known, senders, g) if may_wait else np.zeros(rows.size, bool)
            self._drop(rows[~known & ~soon], PktStatus.NAT_NO_MAPPING, S_NAT)
            gw.stats["snat_reply_packets"] += int(known.sum())
            if self.taps and known.any():
                self._tap("internet-to-nat", _public_form(b[rows[known]], gw.public_ip, pport[known]))
                self._tap_rows("nat-to-vpc", rows[known])

    def generated_walk(self) -> _Walk | None:
        """Walk the firewall resets from the endpoint that received them (they are never inspected again)."""
        if not self.gen_parts:
            return None
        batch = PacketBatch.concat([g for g, _, _ in self.gen_parts])
        batch.parse()
        source = np.concatenate([s for _, s, _ in self.gen_parts])
        ep_of = np.concatenate([np.full(len(g), e, np.int32) for g, _, e in self.gen_parts])
        stage = np.full(len(batch), 255, np.uint8)
        w = _Walk(self.p, batch, self.taps, stage, source=source)
        for e in np.unique(ep_of).tolist():
            ep = self.p.endpoints[e]
            vi = self.p.vpc_names.index(ep.vpc)
            r = self.p.routers[vi]
            sel = ep_of == e
            w.vpc[sel] = vi
            w.table[sel] = r.subnet_table[r.subnet_id[ep.subnet]]
            w.inspected[sel, e] = True
        w.run()
        return w


def _beside(parts: list[PacketBatch], work: PacketBatch, arena: np.ndarray | None) -> list[PacketBatch]:
    """``parts`` with the packets of ``parts[1:]`` (the firewalls' resets, a few) copied into the room ``arena``
    has after ``work``'s packets, so that ``PacketBatch.concat(parts, arena)`` joins them all without a copy of
    ``parts[0]`` (the delivered packets, views of ``work``'s arena); ``parts`` as they are when ``work``'s arena is
    not the start of ``arena`` or the room is too small."""
    if arena is None or work.data.shape[0] == 0 or work.data.ctypes.data != arena.ctypes.data:
        return parts
    used = work.data.shape[0]
    if sum(p.nbytes for p in parts[1:]) > arena.shape[0] - used:
        return parts
    out = [parts[0]]
    for p in parts[1:]:
        out.append(p.compact(into=arena[used: used + p.nbytes]))
        used += p.nbytes
    return out


#: bytes of the capture before a chunk's first packet that the path's copy keeps (a classic pcap record header)
FRAME_ROOM = 16


def _own_copy(batch: PacketBatch, arena: np.ndarray | None) -> PacketBatch:
    """The packets of ``batch`` in ``arena`` (a fresh one if None), with copies of the core columns and none of the
    others.

    A chunk as the reader gives it lies in order in one stretch of the capture, its packets separated by their
    record headers: that stretch is copied whole (one copy, at memory speed, instead of one per packet: about twice
    as fast on the bench capture), when it is not much larger than the packets and fits the arena. Otherwise the
    packets are gathered back to back. The stretch starts with the 16 bytes before the first packet when the
    capture has them (its record header, in a classic pcap), so that every packet has room before it for the
    header of its record in the output (``PcapWriter.write_framed``)."""
    from ._kernels.parse import gather_packets

    n = len(batch)
    total = batch.nbytes
    if arena is not None and _in_arena(batch, arena):
        if _stretch_in_place(batch, arena):
            # the reader copied the chunk here (PcapReader.arena_for): already where it would be copied to
            end = int(batch.off[-1]) + int(batch.caplen[-1])
            return PacketBatch(batch.data[:end], batch.off.copy(), batch.caplen.copy(), batch.wirelen.copy(),
                               batch.ts_ns.copy(), batch.linktype.copy())
        arena = None  # never copied over itself
    if n:
        src, caplen = batch.off, batch.caplen
        lo = int(src[0])
        if lo >= FRAME_ROOM:
            lo -= FRAME_ROOM
        span = int(src[-1]) + int(caplen[-1]) - lo
        if (0 <= lo and lo + span <= batch.data.shape[0] and span <= total + total // 8 + FRAME_ROOM
                and (arena is None or span <= arena.shape[0])
                and bool(np.all(src[1:] >= src[:-1] + caplen[:-1]))):
            data = np.empty(span, np.uint8) if arena is None else arena[:span]
            data[:] = batch.data[lo: lo + span]
            return PacketBatch(data, src - lo, caplen.copy(), batch.wirelen.copy(), batch.ts_ns.copy(),
                               batch.linktype.copy())
    off = np.zeros(n, np.int64)
    if n:
        np.cumsum(batch.caplen[:-1], dtype=np.int64, out=off[1:])
    data = np.empty(total, np.uint8) if arena is None else arena[:total]
    gather_packets(batch.data, batch.off, batch.caplen, data, off)
    return PacketBatch(data, off, batch.caplen.copy(), batch.wirelen.copy(), batch.ts_ns.copy(),
                       batch.linktype.copy())


def _in_arena(batch: PacketBatch, arena: np.ndarray) -> bool:
    """Whether the batch's bytes lie in ``arena`` (the reader copied its chunk there)."""
    a, d = arena.ctypes.data, batch.data.ctypes.data
    return a <= d < a + arena.shape[0] or (batch.data.shape[0] == 0 and d == a)


def _detached(batch: PacketBatch) -> PacketBatch:
    """``batch`` with a copy of its arena up to its last packet's end (the packets where they were, with the record
    headers between them: the path's copy of it is still one stretch) and its columns as they are."""
    out = batch[:]
    end = int((batch.off + batch.caplen).max()) if len(batch) else 0
    out.data = batch.data[:end].copy()
    return out


def _stretch_in_place(batch: PacketBatch, arena: np.ndarray) -> bool:
    """Whether ``_own_copy`` of a batch whose bytes lie in ``arena`` leaves them where they are: the batch is a
    chunk as the reader copied it to the arena's start, its packets in order in one stretch (the copy's
    conditions), the ``FRAME_ROOM`` bytes before the first one, and nothing of the arena after it in use."""
    n = len(batch)
    if n == 0 or batch.data.ctypes.data != arena.ctypes.data:
        return False
    src, caplen = batch.off, batch.caplen
    lo = int(src[0]) - FRAME_ROOM
    end = int(src[-1]) + int(caplen[-1])
    total = batch.nbytes
    return (lo >= 0 and end <= batch.data.shape[0] and end - lo <= total + total // 8 + FRAME_ROOM
            and bool(np.all(src[1:] >= src[:-1] + caplen[:-1])))


#: firewall drops that leave no session behind (the drop log records their flows)
_NO_SESSION = np.array([PktStatus.TCP_NOT_SYN, PktStatus.UNKNOWN_ENDPOINT, PktStatus.FLOW_TABLE_FULL], np.uint8)


def _groups(keys: np.ndarray, k: int):
    """The positions of each key (in ``[0, k)``) present in ``keys``: ``(key, positions)`` for each, ascending, the
    positions in order (a slice of every position when there is one key, the usual case: no sort)."""
    if keys.size == 0:
        return
    keys = np.ascontiguousarray(keys)
    if bool((keys == keys[0]).all()):
        if not 0 <= int(keys[0]) < k:
            raise ValueError(f"key {int(keys[0])} outside [0, {k})")
        yield int(keys[0]), slice(None)
        return
    order, starts = group_rows(keys, k)
    for t in np.flatnonzero(starts[1:] != starts[:-1]).tolist():
        yield t, order[starts[t]: starts[t + 1]]


def _present(index: np.ndarray, k: int) -> list[int]:
    """The values in ``index`` (gateway or endpoint indices in ``[0, k)``), ascending: np.unique without its sort."""
    return np.flatnonzero(np.bincount(index, minlength=k)).tolist() if index.size else []


def _inner_wirelen(b: PacketBatch, rows: np.ndarray) -> np.ndarray:
    """The wire length of the IPv4 packets of the rows ``rows`` (whose IPv4 headers were captured), as Geneve
    carries them to a firewall (geneve.carried, decap): the frame from its IPv4 header to the end of the IP packet
    (or of the capture), plus what a snaplen cut off."""
    l3 = b.l3_off[rows].astype(np.int64)
    at = b.off[rows] + l3
    total = (b.data[at + 2].astype(np.int64) << 8) | b.data[at + 3]
    cap = b.caplen[rows].astype(np.int64)
    return (np.minimum(l3 + total, cap) - l3 + np.maximum(b.wirelen[rows].astype(np.int64) - cap, 0)).astype(np.uint32)


def _addresses(sub: PacketBatch) -> tuple[np.ndarray, ...]:
    """Copies of the columns NAT rewrites, (src_ip, sport, dst_ip, dport), for the trace."""
    return sub.src_ip.copy(), sub.sport.copy(), sub.dst_ip.copy(), sub.dport.copy()


def _to_public(batch: PacketBatch, public_ip: int, public_port: np.ndarray) -> None:
    """Rewrite packets to a DNAT target back to the public address and port they reached the gateway on, in place
    (their arena and columns)."""
    from ._kernels.nat import NAT_DNAT, nat_rewrite
    from .stages.natgw import NatRecord

    n = len(batch)
    for name in ("status", "dst_ip", "dport", "sport"):
        col = getattr(batch, name)
        if not col.flags.writeable or not col.flags.c_contiguous:
            setattr(batch, name, np.ascontiguousarray(col).copy())
    nat_rewrite(batch.data, batch.off, batch.caplen, batch.l3_off, batch.l4_off, batch.proto, 1,
                np.full(n, public_ip, np.uint32), np.ascontiguousarray(public_port, np.int32), batch.status,
                batch.dst_ip, batch.dport, batch.sport, np.full(n, NAT_DNAT, np.uint8), *NatRecord.empty(n).as_args())


def _public_form(batch: PacketBatch, public_ip: int, public_port: np.ndarray) -> PacketBatch:
    """A copy of replies addressed to private hosts, rewritten to the public address and port they crossed the
    Internet with (for the internet-to-nat tap)."""
    from ._kernels.nat import NAT_SNAT_REPLY, nat_rewrite
    from .stages.natgw import NatRecord

    c = batch.copy()
    n = len(c)
    nat_rewrite(c.data, c.off, c.caplen, c.l3_off, c.l4_off, c.proto, 1, np.full(n, public_ip, np.uint32),
                public_port.astype(np.int32), c.status, c.dst_ip, c.dport, c.sport,
                np.full(n, NAT_SNAT_REPLY, np.uint8), *NatRecord.empty(n).as_args())
    return c


__all__ = ["STAGES", "TAP_LINKS", "ChunkResult", "PcapError", "Pipeline"]
