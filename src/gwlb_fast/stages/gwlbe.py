"""The GWLB endpoint (GWLBe) and the inspection round trip it starts: GWLBe -> GWLB ==> FW ==> GWLB -> GWLBe.

A :class:`Gwlbe` is the consumer-side hop in the business VPC: it tags each packet with its 64-bit endpoint id and
hands it to its GWLB; inspected packets come back to it and leave through its own subnet's route table.
:class:`Inspection` is the service behind one GWLB: the :class:`~gwlb_fast.stages.gwlb.Gwlb` stage picks a firewall per
flow, the packet travels to that firewall inside Geneve (``geneve.encap``), the firewall (:class:`Firewall`)
inspects it and returns it (or TCP resets) inside the echoed Geneve header, and the GWLB checks the returning
packet's flow cookie before handing the inner packet back to the endpoint. Everything is per batch.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import geneve
from .._kernels.columns import group_rows
from .._kernels.session import END_FW_FAILED, END_MOVED
from ..batch import PacketBatch
from ..config import Endpoint
from ..config import Gwlb as GwlbConfig
from ..replay import FlowSides
from ..status import PktStatus
from .firewall import KIND_ECHO, SESSION_DTYPE, Firewall
from .gwlb import Gwlb
from .policy import Classifier, Policy


@dataclass
class Gwlbe:
    """One GWLB endpoint: ``index`` is its position in the pipeline's endpoint list."""

    name: str
    index: int
    id: int
    vpc: str
    subnet: str
    gwlb: str
    attachment_id: int = 0

    @classmethod
    def from_config(cls, ep: Endpoint, index: int) -> Gwlbe:
        return cls(ep.name, index, int(ep.id), ep.vpc, ep.subnet, ep.gwlb, int(getattr(ep, "attachment_id", 0)))

    def tag(self, batch: PacketBatch) -> PacketBatch:
        """Stamp every packet with this endpoint's id (the Geneve endpoint-id option the GWLB will send)."""
        batch.endpoint_id = np.full(len(batch), self.id, np.uint64)
        return batch


@dataclass
class InspectionResult:
    """What one round trip through the GWLB and its firewalls did to a batch.

    ``status`` (per input packet): OK when the packet came back from its firewall, else why it did not (GWLB,
    Geneve or firewall reasons). ``stage`` says which side dropped it (``"gwlb"`` or ``"firewall"``). ``fw_index``
    is the firewall that took each packet (-1 when none), ``rule`` the index of its session's rule (-1 when none,
    ``len(policy.rules)`` for the default action); ``failed_fw`` the firewall of the flow of each packet dropped
    with ``FW_FAILED`` (-1 elsewhere). ``generated`` holds the TCP resets the firewalls sent
    (raw IPv4 inner packets, already checked by the GWLB), ``generated_source`` their input row. ``counted``
    (when asked for) says where each packet was counted, for packets that follow it uninspected (later fragments,
    see fragments.py): int64[n, 7], columns COUNTED_*, -1 where it was not.
    """

    status: np.ndarray
    by_firewall: np.ndarray
    fw_index: np.ndarray
    generated: PacketBatch
    generated_source: np.ndarray
    rule: np.ndarray | None = None
    failed_fw: np.ndarray | None = None
    to_fw: list[PacketBatch] = field(default_factory=list)
    from_fw: list[PacketBatch] = field(default_factory=list)
    sessions: list[tuple[int, np.ndarray]] = field(default_factory=list)
    counted: np.ndarray | None = None


# columns of InspectionResult.counted: the GWLB's flow slot, its first_seen and the firewall it sent the packet to;
# the firewall's session slot, the session's start, its flow entry's first_seen and the packet's direction
COUNTED_LB_SLOT, COUNTED_LB_FIRST, COUNTED_LB_FW, COUNTED_FW_SLOT, COUNTED_FW_START, COUNTED_FW_FIRST, \
    COUNTED_REV = range(7)


class Inspection:
    """One GWLB with its firewall fleet, as configured (``config.Gwlb``), sharing one compiled policy.

    Parameters
    ----------
    cfg : config.Gwlb
    policy : Policy
    zone_of_endpoint : dict[int, str]
        Endpoint id -> zone name, for the firewalls.
    classifier : Classifier, optional
        Shared compiled policy (compiled once for the whole fleet).
    seed : int
    session_capacity : int
        Session-table size of each firewall.
    keep_taps : bool
        Keep the Geneve batches sent to and received from the firewalls (for tap files).
    pickup : FlowSides, optional
        The firewalls take flows that began before the capture as established (``replay: {pickup: true}``).
    """

    def __init__(self, cfg: GwlbConfig, policy: Policy, zone_of_endpoint: dict[int, str],
                 classifier: Classifier | None = None, seed: int = 0, session_capacity: int = 1 << 18,
                 keep_taps: bool = False, pickup: FlowSides | None = None):
        self.cfg = cfg
        self.name = cfg.name
        self.address = int(cfg.ip)
        self.profile = cfg.geneve.profile
        self.option_class = int(cfg.geneve.option_class)
        self.max_inner = int(cfg.geneve.max_inner)
        self.lb = Gwlb(cfg.firewall_names, stickiness=cfg.stickiness, failover=cfg.failover,
                       idle_timeouts={"tcp": cfg.idle_timeout_tcp, "other": cfg.idle_timeout_other},
                       draining_timeout=cfg.draining_timeout, flow_capacity=cfg.flow_capacity, seed=seed)
        classifier = policy.compile() if classifier is None else classifier
        self.firewalls = [
            Firewall(name, i, policy, zone_of_endpoint, session_capacity=session_capacity,
                     option_class=self.option_class, classifier=classifier, pickup=pickup)
            for i, name in enumerate(cfg.firewall_names)
        ]
        self.fw_ip = np.array([fw.ip for fw in cfg.firewalls.values()], np.uint32)
        self.keep_taps = keep_taps
        self.too_big = 0
        # the appliances themselves: False while one is down (it forwards nothing, whatever the GWLB thinks)
        self.alive = np.ones(len(self.firewalls), bool)
        self.lost_down = np.zeros(len(self.firewalls), np.int64)

    def set_health(self, firewall: str, state: str, now_ns: int) -> None:
        self.lb.set_health(firewall, state, now_ns)

    def set_alive(self, firewall: str, alive: bool) -> None:
        """The appliance stops (``False``) or resumes forwarding; the GWLB's view changes only by its health check."""
        self.alive[self.lb.fw_id(firewall)] = bool(alive)

    def inspect(self, batch: PacketBatch, endpoint: Gwlbe, counted: bool = False) -> InspectionResult:
        """Send every packet of ``batch`` (parsed, status OK, tagged by ``endpoint``) through the GWLB and its
        firewalls and back; with ``counted``, say where each packet was counted (``InspectionResult.counted``)."""
        n = len(batch)
        endpoint.tag(batch)
        where = np.full((n, 7), -1, np.int64) if counted else None
        lb_counted = np.empty((n, 2), np.int64) if counted else None
        # fw_index, flow_cookie; status NO_HEALTHY_FW / FW_FAILED / FLOW_TABLE_FULL
        self.lb.process(batch, counted=lb_counted)
        if counted:
            where[:, COUNTED_LB_SLOT: COUNTED_LB_FIRST + 1] = lb_counted
            where[:, COUNTED_LB_FW] = np.where(lb_counted[:, 0] >= 0, batch.fw_index, -1)
        if self.lb.last_cut is not None:
            self._mark_cut(batch, *self.lb.last_cut)
        status = batch.status.copy()
        failed = self.lb.failed_fw if self.lb.failed_fw.shape[0] == n else np.full(n, -1, np.int16)
        by_fw = np.zeros(n, bool)
        fw_index = batch.fw_index.copy()
        res = InspectionResult(status, by_fw, fw_index, PacketBatch.empty(228), np.zeros(0, np.int64),
                               rule=np.full(n, -1, np.int32), failed_fw=failed, counted=where)

        go = np.flatnonzero(status == PktStatus.OK) if status.any() else np.arange(n)
        if go.size and not self.alive.all():
            # sent to a firewall that is down: lost there (the GWLB has not noticed, or keeps the flow on it)
            dead = ~self.alive[fw_index[go]]
            if dead.any():
                status[go[dead]] = PktStatus.FW_DOWN
                by_fw[go[dead]] = True
                self.lost_down += np.bincount(fw_index[go[dead]], minlength=len(self.firewalls))
                go = go[~dead]
        if go.size == 0:
            self.lb.release()
            return res
        sub = batch if go.size == n else batch[go]  # nothing below writes to sub: no copy when every row goes
        enc_status = np.empty(go.size, np.uint8)
        opts = {"endpoint_id": endpoint.id, "attachment_id": endpoint.attachment_id, "option_class": self.option_class,
                "profile": self.profile, "max_inner": self.max_inner}
        if self.keep_taps:
            wire = geneve.encap(sub, src=self.address, dst=self.fw_ip[sub.fw_index], cookie=sub.flow_cookie,
                                sport=self.lb.udp_sport(sub), status_out=enc_status, hash_seed=self.lb.seed, **opts)
            res.to_fw.append(wire)
            # a firewall reads only the frames' bytes and core columns: its share of the frames carries just
            # those, so that splitting the batch by firewall does not gather every Geneve column
            frames = PacketBatch(wire.data, wire.off, wire.caplen, wire.wirelen, wire.ts_ns, wire.linktype)
        else:
            # no tap records the link: the firewalls get the packets as they would decapsulate them, without the
            # frames being built (a copy of every packet) and decoded again
            # (and without parsing them again: the path keeps each packet's columns up to date with its bytes)
            frames = geneve.carried(sub, cookie=sub.flow_cookie, status_out=enc_status, parsed=True, **opts)
        bad = enc_status != PktStatus.OK
        if bad.any():
            status[go[bad]] = enc_status[bad]
            fw_index[go[bad]] = -1
            self.too_big += int(np.count_nonzero(enc_status == PktStatus.TOO_BIG))
            sub_rows = np.flatnonzero(~bad)  # row of sub of each frame
            sent = go[sub_rows]  # input row of each frame
            wire_fw = fw_index[sent]
        else:
            sub_rows = None  # frame j is row j of sub
            sent = go
            wire_fw = fw_index if go.size == n else fw_index[sent]

        gen_parts, gen_src, passed = [], [], []
        by_k, bounds = group_rows(wire_fw, len(self.firewalls))  # each firewall's frames: one counting sort
        for k in np.flatnonzero(np.diff(bounds)).tolist():
            pick = by_k[bounds[k]: bounds[k + 1]]  # np.flatnonzero(wire_fw == k)
            rows = pick if sent.size == n else sent[pick]  # every row sent: sent is 0 .. n-1
            if self.keep_taps:
                out = self.firewalls[k].process(frames[pick], echo=True)
            else:
                # the firewall's share of the frames' columns: only those it reads, when it says which (and none
                # gathered when it gets every frame: it only reads them then)
                cols = self.firewalls[k].inner_columns if frames.l4_off is not None else None
                if cols is None:
                    part = frames[pick]
                else:
                    part = frames if pick.shape[0] == len(frames) else frames.take(pick, cols)
                out = self.firewalls[k].process_inner(part, self._frames_of(sub, pick if sub_rows is None
                                                                            else sub_rows[pick], opts))
            status[rows] = out.status
            every_ok = out.counts[PktStatus.OK] == rows.shape[0]  # the usual case: no mask to take
            if not every_ok:
                by_fw[rows[out.status != PktStatus.OK]] = True
            res.rule[rows] = out.rule
            if counted:
                (where[rows, COUNTED_FW_SLOT], where[rows, COUNTED_FW_START],
                 where[rows, COUNTED_FW_FIRST]) = self.firewalls[k].refs_of(out.slot)
                where[rows, COUNTED_REV] = out.rev
            if out.sessions.shape[0]:
                res.sessions.append((k, out.sessions))
            if not self.keep_taps:
                passed.append(rows if every_ok else rows[out.status == PktStatus.OK])
            if len(out.wire) == 0:
                continue
            if self.keep_taps:
                res.from_fw.append(out.wire)
            # back at the GWLB: decapsulate, check the flow and its cookie
            inner = geneve.decap(out.wire, option_class=self.option_class)
            gst = inner.status.copy()
            ep, ck = inner.endpoint_id, inner.flow_cookie
            inner.parse()
            inner.status = np.where(gst != PktStatus.OK, gst, inner.status).astype(np.uint8)
            inner.endpoint_id, inner.flow_cookie = ep, ck
            self.lb.check_return(inner)
            src_rows = rows[out.source]
            echo = out.kind == KIND_ECHO
            ret_bad = echo & (inner.status != PktStatus.OK)
            status[src_rows[ret_bad]] = inner.status[ret_bad]
            rst = (~echo) & (inner.status == PktStatus.OK)
            if rst.any():
                gen_parts.append(inner.filter(rst))
                gen_src.append(src_rows[rst])
        if passed:
            # no return link to record: the echoed frames (the sent frames with outer addresses swapped) were not
            # built, and the GWLB checks each passed packet's flow and cookie on the values the echo carries (one
            # check for every firewall's packets: the firewalls do not touch the GWLB's flow table, so the slots
            # the GWLB found on the way in still hold the flows, except where its own call restarted or evicted one)
            passed = np.concatenate(passed)
            good = self.lb.check_passed(batch, passed)
            if not good.all():
                status[passed[~good]] = PktStatus.STALE_COOKIE
        if gen_parts:
            gen = PacketBatch.concat(gen_parts)
            gen.parse()
            res.generated = gen
            res.generated_source = np.concatenate(gen_src)
        self.lb.release()  # the GWLB holds the batch for check_passed until then
        return res

    def _frames_of(self, sub: PacketBatch, sub_rows: np.ndarray, opts: dict):
        """The callable ``Firewall.process_inner`` asks for the frames of some of its rows with (row ``j`` of the
        firewall's share is row ``sub_rows[j]`` of ``sub``): the frames ``encap`` sends them in."""
        def frames(rows: np.ndarray) -> PacketBatch:
            part = sub[sub_rows[rows]]
            return geneve.encap(part, src=self.address, dst=self.fw_ip[part.fw_index], cookie=part.flow_cookie,
                                sport=self.lb.udp_sport(part), hash_seed=self.lb.seed, **opts)
        return frames

    def _mark_cut(self, batch: PacketBatch, rows: np.ndarray, fw: np.ndarray, moved: np.ndarray) -> None:
        """Sessions of flows the GWLB cut from a failed firewall end as ``fw-failed``, or ``moved`` when the flow
        went to another firewall (their records say so when they end on the old firewall)."""
        for k in np.flatnonzero(np.bincount(fw, minlength=len(self.firewalls))).tolist():
            on_k = fw == k
            for reason, sel in ((END_MOVED, on_k & moved), (END_FW_FAILED, on_k & ~moved)):
                r = rows[sel]
                if r.size:
                    self.firewalls[k].mark_ended(batch.src_ip[r], batch.dst_ip[r], batch.sport[r], batch.dport[r],
                                                 batch.proto[r], batch.endpoint_id[r], reason)

    def finish(self, now_ns: int | None = None) -> list[tuple[int, np.ndarray]]:
        """End of run: every firewall closes its sessions; returns (firewall index, sessions) pairs."""
        out = []
        for k, fw in enumerate(self.firewalls):
            s = fw.finish(now_ns)
            if s.shape[0]:
                out.append((k, s))
        return out

    def counters(self) -> dict:
        c = self.lb.counters()
        c["too_big"] = self.too_big
        c["lost_down"] = {fw.name: int(self.lost_down[k]) for k, fw in enumerate(self.firewalls)}
        c["firewall_stats"] = {fw.name: fw.stats() for fw in self.firewalls}
        return c


__all__ = ["SESSION_DTYPE", "Gwlbe", "Inspection", "InspectionResult"]
