"""The VM-Series stage: one firewall behind the GWLB, with its own session table (DESIGN.md sections 1-3 and 6).

``Firewall.process(wire)`` takes Geneve frames as the GWLB sent them and, all vectorized or in kernels:

1. decapsulates (``geneve.decap``, no copy) and parses the inner IPv4 packet (``batch.parse``);
2. maps the GWLB endpoint id to its zone (unknown endpoint -> ``UNKNOWN_ENDPOINT``);
3. finds or creates the session in a :class:`FlowTable` keyed by the canonical 5-tuple and the endpoint id, so a
   flow and its reply share one session;
4. classifies only the packets that may start a session (the first packet of each new table entry, and every
   packet of an entry whose first packet was a TCP non-SYN) with the compiled policy; the *from* zone is the zone
   of the endpoint the packet entered by, and the *to* zone is the same zone: behind a GWLB the firewall receives
   and returns every packet on the one Geneve interface, so it sees intrazone traffic (a rule with ``from``/``to``
   lists the endpoint's zone on both sides to match);
5. applies the packets to their sessions in batch order in one nogil kernel (``_kernels.session``): TCP sessions
   must start with a SYN (else ``TCP_NOT_SYN``, dropped, no session); allowed sessions forward both directions
   until an RST (the RST passes, later packets are ``SESSION_CLOSED`` until the close timeout removes the session
   and a new SYN may start a new one) or a FIN from each side (later packets, e.g. the last ACK, still pass until
   the close timeout); denied sessions are remembered for ``deny_timeout`` and drop every packet (``POLICY_DENY``
   with the rule); reset sessions drop (``POLICY_RESET``) and answer each TCP packet with the RST(s) of the action;
6. builds the frames returned to the GWLB in input order (``_kernels.tcpreset``): allowed packets with the Geneve
   header echoed byte for byte and the outer addresses swapped, and TCP RSTs inside a copy of the offending
   packet's outer headers, with sequence numbers per RFC 9293 section 3.10.7.1;
7. idle-expires sessions from packet timestamps (amortized scan of the table after each batch) and logs every
   session that ends (:data:`SESSION_DTYPE`).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import numpy as np

from .. import geneve
from .._kernels import session as _s
from .._kernels import tcpreset as _r
from .._kernels.flowtable import END_EVICTED, FlowTable
from .._kernels.heap import zeroed
from .._kernels.parse import icmp_errors
from ..batch import OPTIONAL_COLUMNS, PacketBatch
from ..errors import ConfigError
from ..replay import FlowSides, flow_keys
from ..status import N_STATUS, PktStatus
from .policy import ZONE_UNKNOWN, Action, Classifier, Policy

__all__ = [
    "END_REASONS",
    "KIND_ECHO",
    "KIND_RST_TO_RECEIVER",
    "KIND_RST_TO_SENDER",
    "SESSION_DTYPE",
    "Firewall",
    "FirewallOutput",
    "zone_of_endpoint_ids",
]

NS = 1_000_000_000
_RELATED = 255  # placeholder status of related ICMP errors while the session kernel runs (never a PktStatus)

KIND_ECHO = _r.KIND_ECHO
KIND_RST_TO_SENDER = _r.KIND_RST_TO_SENDER
KIND_RST_TO_RECEIVER = _r.KIND_RST_TO_RECEIVER

#: the Geneve columns of the frames a firewall returns
_GENEVE_COLUMNS = ("vni", "geneve_flags", "opt_len", "endpoint_id", "attachment_id", "flow_cookie", "inner_off")
#: the columns of a parsed batch that Firewall.process_inner reads (without content inspection)
_INNER_COLUMNS = ("off", "caplen", "wirelen", "ts_ns", "status", "src_ip", "dst_ip", "sport", "dport", "proto",
                  "tcp_flags", "l3_off", "l4_off", "endpoint_id")
#: the columns of a batch of no returned frames (zero-length arrays, shared: they hold nothing to write to)
_NONE_RETURNED = {"data": np.zeros(0, np.uint8), "off": np.zeros(0, np.int64), "caplen": np.zeros(0, np.uint32),
                  "wirelen": np.zeros(0, np.uint32), "ts_ns": np.zeros(0, np.int64),
                  "linktype": np.zeros(0, np.uint16), "status": np.zeros(0, np.uint8),
                  "fw_index": np.zeros(0, np.int16),
                  **{c: np.zeros(0, OPTIONAL_COLUMNS[c]) for c in _GENEVE_COLUMNS}}

#: one ended session: client = the side that sent the session's first packet
SESSION_DTYPE = np.dtype([
    ("client_ip", np.uint32), ("server_ip", np.uint32), ("client_port", np.uint16), ("server_port", np.uint16),
    ("proto", np.uint8), ("zone", np.uint8), ("action", np.uint8), ("end_reason", np.uint8),
    ("rule", np.int32), ("endpoint_id", np.uint64),
    ("packets_c2s", np.uint64), ("packets_s2c", np.uint64), ("bytes_c2s", np.uint64), ("bytes_s2c", np.uint64),
    ("start_ns", np.int64), ("end_ns", np.int64),
    # content inspection (DESIGN.md section 12): application id (-1: not inspected) and the key of the session's
    # host / SNI / URL / category in Firewall.inspected (-1: none)
    ("application", np.int16), ("inspect_ref", np.int64),
])

#: end_reason code -> name (PAN-OS session end reasons where one exists)
END_REASONS = {
    _s.END_AGED_OUT: "aged-out",
    _s.END_TCP_FIN: "tcp-fin",
    _s.END_TCP_RST_FROM_CLIENT: "tcp-rst-from-client",
    _s.END_TCP_RST_FROM_SERVER: "tcp-rst-from-server",
    _s.END_POLICY_DENY: "policy-deny",
    _s.END_EVICTED: "evicted",
    _s.END_OF_RUN: "end-of-run",
    _s.END_FW_FAILED: "fw-failed",
    _s.END_MOVED: "moved",
    _s.END_BLOCK_IP: "block-ip",
}

assert [int(a) for a in Action] == [_s.ACT_ALLOW, _s.ACT_DENY, _s.ACT_DROP, _s.ACT_RESET_CLIENT, _s.ACT_RESET_SERVER,
                                    _s.ACT_RESET_BOTH]


def zone_of_endpoint_ids(policy: Policy, endpoint_ids: dict[str, int]) -> dict[int, str]:
    """``{endpoint id: zone name}`` for :class:`Firewall` from the policy's ``zones`` (zone -> endpoint names) and the
    topology's endpoint ids by name. Endpoints in no zone are left out (their packets are UNKNOWN_ENDPOINT); a zone
    member that is not an endpoint of the topology is a ConfigError."""
    out = {}
    for zone, members in policy.zones.items():
        for name in members:
            if name not in endpoint_ids:
                raise ConfigError(f"{policy.source}: security_policy.zones.{zone}: {name!r} is not a GWLB endpoint "
                                  f"(endpoints: {', '.join(sorted(endpoint_ids)) or 'none'})")
            out[int(endpoint_ids[name])] = zone
    return out


@dataclass
class FirewallOutput:
    """What one ``Firewall.process`` call produced.

    Attributes
    ----------
    wire : PacketBatch
        Geneve frames returned to the GWLB, in input order: each allowed packet echoed, and the RSTs generated for
        reset actions (reset-both: the RST to the client first). Geneve columns filled, ``fw_index`` set.
    source : int64[m]
        Input row each returned frame comes from.
    kind : uint8[m]
        ``KIND_ECHO``, ``KIND_RST_TO_SENDER`` or ``KIND_RST_TO_RECEIVER`` (relative to the offending packet).
    status : uint8[n]
        Per input packet: ``OK`` (forwarded) or why it was dropped (Geneve/inner parse reasons,
        ``UNKNOWN_ENDPOINT``, ``FLOW_TABLE_FULL``, ``TCP_NOT_SYN``, ``POLICY_DENY``, ``POLICY_RESET``,
        ``SESSION_CLOSED``).
    rule : int32[n]
        Rule of the packet's session (``len(policy.rules)`` = default action), -1 for packets without a session.
    counts : int64[N_STATUS]
        Input packets per status.
    sessions : SESSION_DTYPE[k]
        Sessions that ended during this call.
    slot : int64[n]
        Session slot each input packet was looked up in (-1 for packets dropped before the lookup); a slot whose
        session is empty after the call counted nothing.
    rev : uint8[n]
        Canonical direction of each packet (1: from the key's endpoint b), as the session's ``client_rev`` reads it.
    """

    wire: PacketBatch
    source: np.ndarray
    kind: np.ndarray
    status: np.ndarray
    rule: np.ndarray
    counts: np.ndarray
    sessions: np.ndarray
    slot: np.ndarray | None = None
    rev: np.ndarray | None = None

    @property
    def n_rst(self) -> int:
        return int(np.count_nonzero(self.kind != KIND_ECHO))


class Firewall:
    """One VM-Series instance: session table, policy, actions, hit counters and session log.

    Parameters
    ----------
    name : str
    index : int
        The firewall's index in its GWLB's target list (written to ``fw_index`` of the frames it returns).
    policy : Policy
    zone_of_endpoint : dict[int, str]
        GWLB endpoint id -> zone name (a zone of ``policy.zones``; any name when the policy defines no zones, then
        only rules without ``from``/``to`` can match). Packets from other endpoints are dropped
        (``UNKNOWN_ENDPOINT``).
    session_capacity : int
        Session table size (sessions beyond it evict the oldest idle one in the probe sequence, else
        ``FLOW_TABLE_FULL``).
    tcp_timeout, other_timeout : float
        Idle timeouts in seconds (PAN-OS defaults: TCP 3600, UDP/other 30).
    close_timeout : float
        How long a session closed by FIN (both sides) or RST stays before removal (PAN-OS TCP time-wait, 15 s).
    deny_timeout : float
        How long a denied or reset session is remembered (PAN-OS discard timeout, 60 s).
    option_class : int
        Geneve option class of the GWLB metadata options.
    classifier : Classifier, optional
        ``policy.compile()`` result to share between firewalls (compiled here when None).
    expire_scan : int, optional
        Slots scanned for idle expiry after each batch (default ``max(4096, 2 * batch size)``).
    keep_log : bool
        Also keep every ended session in :attr:`session_log` (for tests and small runs; a pipeline streams
        ``FirewallOutput.sessions`` instead).
    pickup : FlowSides, optional
        Take flows that began before the capture as established (``replay: {pickup: true}``): a session may start
        with any packet, and one whose first packet travels from the server (:class:`~gwlb_fast.replay.FlowSides`
        decides) is classified and recorded in its real direction.
    tcp_reject_non_syn : bool, optional
        VM-Series's setting: a TCP session must start with a SYN (default: the policy's, itself true by default).

    Attributes
    ----------
    hits : int64[n_rules + 1]
        Sessions classified per rule (the last entry: the policy's default action), as PAN-OS counts rule hits.
    counts : int64[N_STATUS]
        Packets per status over every call.
    table : FlowTable
        The session table; ``sessions`` (int64[capacity, NF]) holds the per-slot session state beside it.

    Notes
    -----
    Memory per session slot: 64 bytes of flow table entry, 8-16 bytes of hash buckets and 152 bytes of session row,
    about 230 bytes; the session rows are allocated zeroed, so their pages are committed only as slots are used
    (default capacity 2**20: about 85 MB at creation, up to 240 MB full). A FIN-closed session keeps forwarding
    (the last ACK, retransmissions, a reused port's SYN) until its close timeout; an RST-closed one drops with
    ``SESSION_CLOSED`` until then, after which the next SYN of the same 5-tuple starts a new session.
    """

    def __init__(self, name: str, index: int, policy: Policy, zone_of_endpoint: dict[int, str], *,
                 session_capacity: int = 1 << 20, tcp_timeout: float = 3600, other_timeout: float = 30,
                 close_timeout: float = 15, deny_timeout: float = 60, option_class: int = 0x0108,
                 classifier: Classifier | None = None, expire_scan: int | None = None, keep_log: bool = False,
                 pickup: FlowSides | None = None, tcp_reject_non_syn: bool | None = None):
        if not isinstance(policy, Policy):
            raise TypeError(f"firewall {name}: policy must be a Policy, got {type(policy).__name__}")
        for key, val in (("tcp_timeout", tcp_timeout), ("other_timeout", other_timeout),
                         ("close_timeout", close_timeout), ("deny_timeout", deny_timeout)):
            if not val > 0:
                raise ConfigError(f"firewall {name}: {key} must be > 0 seconds, got {val!r}")
        self.name = str(name)
        self.index = int(index)
        self.policy = policy
        self.classifier = policy.compile() if classifier is None else classifier
        self.option_class = int(option_class)
        self.tcp_timeout_ns = int(tcp_timeout * NS)
        self.other_timeout_ns = int(other_timeout * NS)
        self.close_timeout_ns = int(close_timeout * NS)
        self.deny_timeout_ns = int(deny_timeout * NS)
        self.expire_scan = expire_scan
        self.keep_log = keep_log
        self.pickup = pickup
        reject = policy.tcp_reject_non_syn if tcp_reject_non_syn is None else bool(tcp_reject_non_syn)
        self.accept_non_syn = pickup is not None or not reject
        #: sessions started by a TCP packet that is not a SYN, and sessions started by a packet from the server
        self.picked_up = np.zeros(2, np.int64)
        self.table = FlowTable(int(session_capacity), tcp_timeout_ns=self.tcp_timeout_ns,
                               other_timeout_ns=self.other_timeout_ns, evict="oldest-idle")
        cap = self.table.capacity
        # pages of their own, committed only for the slots a run touches
        self.sessions = zeroed((cap, _s.NF), np.int64)
        self._mark = zeroed(cap, np.uint8)
        n_rules = len(policy.rules)
        self.default_rule = n_rules
        self.hits = np.zeros(n_rules + 1, np.int64)
        self._actions = np.append(policy.actions.astype(np.uint8), np.uint8(policy.default_action))
        self.rule_names = list(policy.rule_names) + ["default"]
        self.zone_of_endpoint = dict(zone_of_endpoint)
        ids, zones = [], []
        for ep, zname in self.zone_of_endpoint.items():
            ep = int(ep)
            if not 0 <= ep < 2**64:
                raise ConfigError(f"firewall {name}: endpoint id {ep} is not a 64-bit unsigned integer")
            if zname in policy.zone_names:
                zones.append(policy.zone_names.index(zname))
            elif policy.zone_names:
                raise ConfigError(f"firewall {name}: endpoint {ep:#x}: zone {zname!r} is not a zone of the policy "
                                  f"({', '.join(policy.zone_names)})")
            else:
                zones.append(ZONE_UNKNOWN)
            ids.append(ep)
        order = np.argsort(np.array(ids, np.uint64), kind="stable")
        self._ep_ids = np.array(ids, np.uint64)[order]
        self._ep_zone = np.array(zones, np.uint8)[order]
        self.counts = np.zeros(N_STATUS, np.int64)
        self.now_ns = np.iinfo(np.int64).min
        self.rst_build_failed = 0
        self._log: list[np.ndarray] = []
        self._ended = np.zeros((0, _s.NF), np.int64)
        # content inspection only when the policy asks for it: a policy without App-ID, URL or threat parts costs
        # nothing here
        from ..inspect.session import SessionInspection, needs_inspection

        self.inspection = SessionInspection(self) if needs_inspection(policy) else None
        #: (first inspect_ref, last + 1, EndedFields, their positions) of ended inspected sessions, until the flow
        #: log takes them
        self.inspected: list[tuple] = []
        self._inspected_prev: list[tuple] = []
        self._next_ref = 0

    def __repr__(self) -> str:
        return (f"Firewall({self.name!r}, index={self.index}, {len(self.policy.rules)} rules, "
                f"{len(self.table)} sessions)")

    # ------------------------------------------------------------------ per batch
    def process(self, wire: PacketBatch, echo: bool = True) -> FirewallOutput:
        """Inspect a batch of Geneve frames from the GWLB; see the module docstring for the steps.

        With ``echo=False`` the echoed frames of allowed packets are not built (``out.wire`` then holds only the
        TCP resets): a caller that does not record the firewall's return link saves a copy of every packet, since an
        echoed frame is the received frame with its outer addresses swapped. Everything else is the same.
        """
        inner = geneve.decap(wire, option_class=self.option_class)
        gst = inner.status
        inner.status = None
        inner.parse()
        status = np.where(gst != PktStatus.OK, gst, inner.status).astype(np.uint8)
        return self._process(inner, status, wire, echo)

    def process_inner(self, inner: PacketBatch, frames) -> FirewallOutput:
        """:meth:`process` with ``echo=False`` on frames that were never built: ``inner`` is what
        ``geneve.decap`` would return for them (``geneve.carried``), and ``frames(rows)`` builds the frames of the
        rows ``rows`` of ``inner`` (a PacketBatch, in the order of ``rows``), called only for the packets answered
        with a TCP reset, whose frames copy the offending frame's outer headers. The output is the same as
        ``process(frames(all rows), echo=False)``'s. An ``inner`` that ``carried`` parsed (``l4_off`` set) is not
        parsed again, and needs only the columns :attr:`inner_columns` names."""
        if inner.l4_off is None:
            inner.status = None
            inner.parse()
        return self._process(inner, inner.status.copy(), frames, False)

    @property
    def inner_columns(self) -> tuple[str, ...] | None:
        """The columns of its ``inner`` batch that :meth:`process_inner` reads when that batch is parsed (a caller
        may leave the others None), or None for all of them (content inspection reads the packets' bytes on its
        own terms). The Geneve columns of the frames it returns are then those of the frames ``frames`` builds."""
        return None if self.inspection is not None else _INNER_COLUMNS

    def _process(self, inner: PacketBatch, status: np.ndarray, wire, echo: bool) -> FirewallOutput:
        """The steps after the decapsulation; ``wire`` is the received frames, or the callable of
        :meth:`process_inner`."""
        n = len(inner)
        if self.inspected or self._inspected_prev:
            self._inspected_prev, self.inspected = self.inspected, []

        # endpoint -> zone (unknown endpoint -> UNKNOWN_ENDPOINT) and the canonical key, in one pass
        ep = inner.endpoint_id
        zone = np.empty(n, np.uint8)
        a_ip = np.empty(n, np.uint32)
        b_ip = np.empty(n, np.uint32)
        a_port = np.empty(n, np.uint16)
        b_port = np.empty(n, np.uint16)
        rev = np.empty(n, np.uint8)
        n_ok = _s.admit(ep, self._ep_ids, self._ep_zone, ZONE_UNKNOWN, inner.src_ip, inner.dst_ip, inner.sport,
                        inner.dport, status, zone, a_ip, b_ip, a_port, b_port, rev)

        # session lookup on the packets still OK
        related, related_slot = self._related_icmp_errors(inner, status, a_ip, b_ip, a_port, b_port, ep)
        if related is not None:  # ICMP errors took some rows out
            n_ok = int(np.count_nonzero(status == PktStatus.OK))
        refused = 0
        if n_ok == n:  # every row gets its slot and is_new
            slot = np.empty(n, np.int64)
            is_new = np.empty(n, np.uint8)
            refused = self.table.lookup_or_insert(a_ip, b_ip, a_port, b_port, inner.proto, ep, inner.ts_ns,
                                                  inner.wirelen, slot, is_new)
        else:
            slot = np.full(n, -1, np.int64)
            is_new = np.zeros(n, np.uint8)
        if 0 < n_ok < n:
            ok = np.flatnonzero(status == PktStatus.OK)
            sub_slot = np.empty(ok.shape[0], np.int64)
            sub_new = np.empty(ok.shape[0], np.uint8)
            refused = self.table.lookup_or_insert(a_ip[ok], b_ip[ok], a_port[ok], b_port[ok], inner.proto[ok],
                                                  ep[ok], inner.ts_ns[ok], inner.wirelen[ok], sub_slot, sub_new)
            slot[ok] = sub_slot
            is_new[ok] = sub_new
        ended_slots, _, ended_why = self.table.take_ended()
        evicted = ended_slots[ended_why == END_EVICTED]
        if refused:  # the refused packets are the OK ones without a slot
            status[(status == PktStatus.OK) & (slot < 0)] = PktStatus.FLOW_TABLE_FULL

        # classify the packets that may start a session: the first packet of each new (or restarted) entry, and,
        # where that one is a TCP packet without a pure SYN (no session yet), every packet of that entry
        rule = np.full(n, -1, np.int32)
        action = np.zeros(n, np.uint8)
        flip = np.zeros(n, np.uint8) if self.pickup is not None else None
        if is_new.any():
            first = is_new != 0
            cls = first
            nosyn = first & (inner.proto == 6) & ((inner.tcp_flags & np.uint8(0x16)) != np.uint8(0x02))
            if not self.accept_non_syn and np.any(nosyn):
                marked = slot[nosyn]
                self._mark[marked] = 1
                live = slot >= 0
                cls = first | (live & (self._mark[np.where(live, slot, 0)] != 0))
                self._mark[marked] = 0
            self._classify(np.flatnonzero(cls), inner, zone, rule, action, flip)

        # per-packet session state machine, in order
        out_rule = np.empty(n, np.int32)
        out_n = np.empty(n, np.uint8)
        k1 = np.empty(n, np.uint8)
        k2 = np.empty(n, np.uint8)
        ended = self._ended_rows(n + 1)
        ended_slot = np.empty(n + 1, np.int64)
        ne, start = 0, 0
        while True:
            ne, stop = _s.session_update(slot, is_new, rev, inner.proto, inner.tcp_flags, inner.ts_ns, inner.wirelen,
                                         inner.src_ip, inner.dst_ip, inner.sport, inner.dport, ep, zone, rule,
                                         action, self.sessions, status, out_rule, out_n, k1, k2, self.hits, ended,
                                         ended_slot, self.close_timeout_ns, self.deny_timeout_ns, start, ne,
                                         flip, self.accept_non_syn, self.picked_up)
            if stop >= n:
                break
            # a closed/denied session timed out inside the batch and its slot starts anew at row `stop`: classify
            # the remaining unclassified packets of slots that are not open (rare: one extra pass per such event)
            rest = np.arange(stop, n)
            rs = slot[rest]
            cand = rest[(rs >= 0) & (rule[rest] < 0) & (status[rest] == PktStatus.OK)]
            cand = cand[self.sessions[slot[cand], _s.F_STATE] != _s.S_OPEN]
            self._classify(cand, inner, zone, rule, action, flip)
            start = stop
        logs = [ended[:ne]]
        notes = []
        if self.inspection is not None:
            # sessions ended by a restart of their slot: take their inspection results before the slot's new
            # session is inspected, then inspect the batch and apply the verdicts
            notes.append(self.inspection.annotate(ended_slot[:ne], ended[:ne]))
            self.inspection.apply(inner, slot, is_new, rev, zone, status, out_rule, out_n, k1, k2)
        if related is not None:  # related ICMP errors pass back to the GWLB, echoed, under their session's rule
            status[related] = PktStatus.OK
            out_n[related] = 1
            k1[related] = KIND_ECHO
            out_rule[related] = self.sessions[related_slot, _s.F_RULE]

        # closed / denied sessions get their short timeout in the flow table, sessions reopened inside the batch
        # get the protocol default back; slots that never became a session are freed (one pass, which also counts
        # the statuses and the packets answered with a reset)
        counts = np.zeros(N_STATUS, np.int64)
        closed, denied, opened, empty, n_reset = _s.settle(slot, self.sessions, status, out_n, k1, k2, ne > 0, counts)
        if closed.shape[0]:
            self.table.set_timeout(closed, self.close_timeout_ns)
        if denied.shape[0]:
            self.table.set_timeout(denied, self.deny_timeout_ns)
        if opened.shape[0]:
            self.table.set_timeout(opened, -1)
        if empty.shape[0]:
            self.table.delete(np.unique(empty))
        # evicted sessions whose slot was not reused in this batch (reused ones were logged by the kernel)
        if evicted.shape[0]:
            evicted = np.unique(evicted)
            logs.append(self._log_freed(evicted[self.table.live[evicted] == 0], _s.END_EVICTED, notes))

        # idle expiry, driven by packet time
        if n:
            self.now_ns = max(self.now_ns, int(inner.ts_ns.max()))
            scan = self.expire_scan if self.expire_scan is not None else max(4096, 2 * n)
            exp_slots, _ = self.table.expire(self.now_ns, scan)
            if exp_slots.shape[0] or self.inspection is not None:
                logs.append(self._log_freed(exp_slots, _s.END_AGED_OUT, notes))

        # frames back to the GWLB
        out, source, kind = self._returns(wire, inner, out_n, k1, k2, echo, n_reset)
        self.counts += counts
        sessions = self._records(np.concatenate(logs) if len(logs) > 1 else logs[0])
        if notes:
            self._note(sessions, notes)
        if self.keep_log and sessions.shape[0]:
            self._log.append(sessions)
        return FirewallOutput(out, source, kind, status, out_rule, counts, sessions, slot, rev)

    def count_followers(self, slot: np.ndarray, start_ns: np.ndarray, first_seen: np.ndarray, rev: np.ndarray,
                        nbytes: np.ndarray, ts_ns: np.ndarray | None = None) -> int:
        """Count packets that follow another packet's session without being inspected (the later fragments of a
        datagram, which have no ports: see fragments.py): packets and bytes in the session at ``slot`` (and its
        flow-table entry), in direction ``rev``, where the slot still holds the session that started at
        ``start_ns`` (entry first seen at ``first_seen``). With ``ts_ns`` (the packets' times) a packet counts only
        where the entry is not idle-expired at its time (its timeout: the protocol's, or the close / deny timeout
        of a closed or denied session) and keeps the session alive as a packet of it does: the entry's last_seen
        and the session's last packet time move to its time. Returns the packets counted in sessions."""
        nbytes = np.ascontiguousarray(nbytes, np.uint32)
        if ts_ns is None:
            self.table.add_counts(slot, first_seen, nbytes)
            return _s.session_add(slot, start_ns, rev, nbytes, self.sessions)
        ts_ns = np.ascontiguousarray(ts_ns, np.int64)
        alive = np.empty(slot.shape[0], np.uint8)
        self.table.add_counts(slot, first_seen, nbytes, ts_ns, alive)
        return _s.session_add(np.where(alive != 0, slot, -1), start_ns, rev, nbytes, self.sessions, ts_ns)

    def refs_of(self, slot: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For :meth:`count_followers`, after a call that returned ``slot``: (slot, session start, entry first
        seen) of the packets that were counted in a session (-1 elsewhere)."""
        live = slot >= 0
        s = np.where(live, slot, 0)
        live &= self.sessions[s, _s.F_STATE] != _s.S_EMPTY
        return (np.where(live, slot, -1), np.where(live, self.sessions[s, _s.F_START], -1),
                np.where(live, self.table.first_seen[s], -1))

    def _related_icmp_errors(self, inner, status, a_ip, b_ip, a_port, b_port, ep):
        """ICMP errors (their parse columns hold the flow they quote) belong to that flow's session: with an open
        session they pass as related traffic, without one they are dropped (``ICMP_NO_SESSION``); they never start
        or change a session. Returns the related rows (their status set to a placeholder that keeps them out of
        the session machinery until the caller restores it) and their session slots, or (None, None)."""
        n = len(inner)
        err = np.empty(n, np.uint8)
        if n == 0 or icmp_errors(inner.data, inner.off, inner.caplen, inner.l3_off, inner.l4_off, inner.proto,
                                   inner.tcp_flags, status, err) == 0:
            return None, None
        e = np.flatnonzero(err)
        slot = np.empty(e.size, np.int64)
        self.table.lookup(a_ip[e], b_ip[e], a_port[e], b_port[e], inner.proto[e], ep[e], slot)
        live = slot >= 0
        live[live] = self.sessions[slot[live], _s.F_STATE] == _s.S_OPEN
        status[e[~live]] = PktStatus.ICMP_NO_SESSION
        status[e[live]] = _RELATED
        return e[live], slot[live]

    def mark_ended(self, src_ip, dst_ip, sport, dport, proto, endpoint_id, reason: int) -> int:
        """Give the live sessions of these packets' flows the end reason ``reason`` (``END_FW_FAILED``: the GWLB
        found this firewall failed; ``END_MOVED``: it moved the flow to another firewall), unless they already have
        one; the session ends as usual (idle timeout, end of run) and its record names this reason. Returns the
        number of sessions marked."""
        m = np.asarray(src_ip).shape[0]
        if m == 0:
            return 0
        a_ip, b_ip, a_pt, b_pt, _ = flow_keys(src_ip, dst_ip, sport, dport)
        slot = np.empty(m, np.int64)
        self.table.lookup(a_ip, b_ip, a_pt, b_pt, np.ascontiguousarray(proto, np.uint8),
                          np.ascontiguousarray(endpoint_id, np.uint64), slot)
        slot = np.unique(slot[slot >= 0])
        rows = self.sessions[slot]
        hit = slot[(rows[:, _s.F_STATE] != _s.S_EMPTY) & (rows[:, _s.F_REASON] == 0)]
        self.sessions[hit, _s.F_REASON] = int(reason)
        return int(hit.size)

    # ------------------------------------------------------------------ end of run
    def finish(self, now_ns: int | None = None) -> np.ndarray:
        """End of run: expire the sessions idle at ``now_ns`` (default: the last packet time seen), then close the
        rest with reason end-of-run. Returns the ended sessions (SESSION_DTYPE); the table is empty afterwards."""
        logs = []
        notes = [] if self.inspection is not None else None
        if now_ns is None:
            now_ns = self.now_ns
        if now_ns is not None and now_ns != np.iinfo(np.int64).min:
            exp_slots, _ = self.table.expire_all(int(now_ns))
            logs.append(self._log_freed(exp_slots, _s.END_AGED_OUT, notes))
        drained, _ = self.table.drain()
        logs.append(self._log_freed(drained, _s.END_OF_RUN, notes))
        sessions = self._records(np.concatenate(logs))
        if notes:
            self._note(sessions, notes)
        if self.keep_log and sessions.shape[0]:
            self._log.append(sessions)
        return sessions

    @property
    def session_log(self) -> np.ndarray:
        """Every session ended so far (``keep_log=True``), SESSION_DTYPE, in the order they ended."""
        if not self._log:
            return np.zeros(0, SESSION_DTYPE)
        if len(self._log) > 1:
            self._log = [np.concatenate(self._log)]
        return self._log[0]

    def stats(self) -> dict:
        """Counters: packets per drop reason, hits per rule name, session table statistics."""
        from ..status import describe_counts

        return {
            "firewall": self.name,
            "drops": describe_counts(self.counts),
            "packets": int(self.counts.sum()),
            "forwarded": int(self.counts[PktStatus.OK]),
            "hits": {name: int(h) for name, h in zip(self.rule_names, self.hits)},
            "sessions": self.table.stats(),
            "rst_build_failed": self.rst_build_failed,
            **({"inspection": self.inspection.stats()} if self.inspection is not None else {}),
        }

    def describe_sessions(self, sessions: np.ndarray) -> list[dict]:
        """Session records as dicts with names (addresses dotted, zone, rule, action, end reason) for logs."""
        zones = self.policy.zone_names
        actions = {int(a): a.name.lower().replace("_", "-") for a in Action}
        out = []
        for rec in sessions:
            z = int(rec["zone"])
            r = int(rec["rule"])
            out.append({
                "client_ip": str(ipaddress.IPv4Address(int(rec["client_ip"]))),
                "client_port": int(rec["client_port"]),
                "server_ip": str(ipaddress.IPv4Address(int(rec["server_ip"]))),
                "server_port": int(rec["server_port"]),
                "proto": int(rec["proto"]),
                "zone": zones[z] if z < len(zones) else None,
                "endpoint_id": int(rec["endpoint_id"]),
                "firewall": self.name,
                "rule": self.rule_names[r] if 0 <= r < len(self.rule_names) else None,
                "action": actions.get(int(rec["action"])),
                "packets_c2s": int(rec["packets_c2s"]),
                "packets_s2c": int(rec["packets_s2c"]),
                "bytes_c2s": int(rec["bytes_c2s"]),
                "bytes_s2c": int(rec["bytes_s2c"]),
                "start_ns": int(rec["start_ns"]),
                "end_ns": int(rec["end_ns"]),
                "end_reason": END_REASONS.get(int(rec["end_reason"])),
            })
        return out

    # ------------------------------------------------------------------ helpers
    def _classify(self, rows, inner, zone, rule, action, flip=None) -> None:
        """Classify ``rows`` (zone from = zone to = the endpoint's zone); fill ``rule`` and ``action`` there.

        With ``flip`` (pickup), the rows whose packet travels from the server (``self.pickup``) are marked there
        and classified in the flow's real direction, client to server."""
        z = zone[rows]
        src, dst = inner.src_ip[rows], inner.dst_ip[rows]
        sp, dp = inner.sport[rows], inner.dport[rows]
        if flip is not None and rows.size:
            f = self.pickup.sender_is_server(src, dst, sp, dp, inner.proto[rows], inner.tcp_flags[rows])
            flip[rows] = f
            if f.any():
                src, dst = np.where(f, dst, src), np.where(f, src, dst)
                sp, dp = np.where(f, dp, sp), np.where(f, sp, dp)
        r = self.classifier.classify(src, dst, sp, dp, inner.proto[rows], z, z)
        r[r < 0] = self.default_rule
        rule[rows] = r
        action[rows] = self._actions[r]

    def _ended_rows(self, m: int) -> np.ndarray:
        """A scratch buffer of ``m`` session rows for the session kernel's ended sessions (copied out by
        :meth:`_records` before the next call). Kept from call to call: a fresh one of a batch's size (megabytes)
        per call lands in the allocator's heap among long-lived arrays and fragments it, so that resident memory
        grows with the capture's length."""
        if self._ended.shape[0] < m:
            self._ended = np.empty((max(m, self._ended.shape[0] + self._ended.shape[0] // 4), _s.NF), np.int64)
        return self._ended[:m]

    def _log_freed(self, slots: np.ndarray, reason: int, notes: list | None = None) -> np.ndarray:
        """Session rows of freed table slots (those holding a session), with their end reason; clears them.
        With ``notes`` (a list), the inspection results of those sessions are appended to it."""
        slots = np.asarray(slots, np.int64)
        rows = self.sessions[slots]
        held = rows[:, _s.F_STATE] != _s.S_EMPTY
        rows = rows[held]
        if notes is not None and self.inspection is not None:
            notes.append(self.inspection.annotate(slots[held], rows))
        rows[rows[:, _s.F_REASON] == 0, _s.F_REASON] = reason
        self.sessions[slots, _s.F_STATE] = _s.S_EMPTY
        return rows

    def _note(self, sessions: np.ndarray, notes: list) -> None:
        """Fill the inspection fields of session records from ``annotate`` results (in the records' order)."""
        app = np.concatenate([n["application"] for n in notes]) if notes else np.zeros(0, np.int16)
        if app.shape[0] != sessions.shape[0]:
            return
        sessions["application"] = app
        i = 0
        for n in notes:
            k = n["application"].shape[0]
            f = n["fields"]
            if f is not None:
                at = np.flatnonzero(f.noted)
                if at.shape[0]:
                    sessions["inspect_ref"][i + at] = np.arange(self._next_ref, self._next_ref + at.shape[0])
                    self.inspected.append((self._next_ref, self._next_ref + at.shape[0], f, at))
                    self._next_ref += at.shape[0]
            i += k

    def inspected_fields(self, refs) -> list[tuple]:
        """(host, sni, url, category) per ``inspect_ref`` (None for -1) of sessions that ended in this call of
        :meth:`process` or the one before (the flow log reads them right after each batch)."""
        none = (None, None, None, None)
        blocks = self.inspected + self._inspected_prev
        out = []
        for r in refs:  # per flow-log record
            got = none
            if r >= 0:
                for lo, hi, f, at in blocks:
                    if lo <= r < hi:
                        got = f.get(int(at[r - lo]))
                        break
            out.append(got)
        return out

    @staticmethod
    def _records(rows: np.ndarray) -> np.ndarray:
        out = np.empty(rows.shape[0], SESSION_DTYPE)
        if rows.shape[0] == 0:  # the usual batch: no session ended
            return out
        out["application"] = -1
        out["inspect_ref"] = -1
        for field, col in (("client_ip", _s.F_CLIENT_IP), ("server_ip", _s.F_SERVER_IP),
                           ("client_port", _s.F_CLIENT_PORT), ("server_port", _s.F_SERVER_PORT),
                           ("proto", _s.F_PROTO), ("zone", _s.F_ZONE), ("action", _s.F_ACTION),
                           ("end_reason", _s.F_REASON), ("rule", _s.F_RULE), ("endpoint_id", _s.F_ENDPOINT),
                           ("packets_c2s", _s.F_PKTS_C2S), ("packets_s2c", _s.F_PKTS_S2C),
                           ("bytes_c2s", _s.F_BYTES_C2S), ("bytes_s2c", _s.F_BYTES_S2C),
                           ("start_ns", _s.F_START), ("end_ns", _s.F_LAST)):
            out[field] = rows[:, col].astype(SESSION_DTYPE[field], copy=False) if field != "endpoint_id" \
                else rows[:, col].view(np.uint64)
        return out

    def _no_returns(self) -> PacketBatch:
        """The frames of :meth:`_returns` when there are none: an empty batch with the Geneve columns."""
        none = _NONE_RETURNED
        out = PacketBatch.__new__(PacketBatch)
        for name in PacketBatch.__slots__:
            setattr(out, name, none.get(name))
        return out

    def _returns(self, wire, inner: PacketBatch, out_n, k1, k2, echo: bool = True, n_reset: int | None = None):
        """Build the frames returned to the GWLB: (batch, source rows, kinds); only the resets without echo.
        ``wire`` is the received frames, or a callable that builds the frames of given rows (no echo then).
        ``n_reset``: the number of rows answered with a reset, when known. With the callable, the Geneve columns
        of the returned frames are taken from ``inner`` where it has them, else from the frames built (the same
        values: those of the frames the rows came in)."""
        n = len(inner)
        if echo:
            rows = np.arange(n, dtype=np.int64)
        else:
            # only the rows with a reset among their returns (usually none): the echoes are left out anyway
            if n_reset == 0:  # no reset: nothing to build (the batch's usual case)
                return self._no_returns(), np.zeros(0, np.int64), np.zeros(0, np.uint8)
            rows = np.flatnonzero(((out_n >= 1) & (k1 != KIND_ECHO)) | ((out_n >= 2) & (k2 != KIND_ECHO)))
            if rows.shape[0] == 0:
                return self._no_returns(), np.zeros(0, np.int64), np.zeros(0, np.uint8)
        counts = out_n[rows].astype(np.int64)
        m = int(counts.sum())
        j = np.repeat(np.arange(rows.shape[0], dtype=np.int64), counts)  # position in rows of each return
        source = rows[j]
        first = np.zeros(rows.shape[0], np.int64)
        if rows.shape[0]:
            np.cumsum(counts[:-1], out=first[1:])
        second = (np.arange(m, dtype=np.int64) - first[j]) > 0
        kind = np.where(second, k2[source], k1[source]).astype(np.uint8)
        if not echo:
            keep = kind != KIND_ECHO
            source, kind = source[keep], kind[keep]
            m = source.shape[0]
        # offset of the inner IPv4 header in each frame (inner Ethernet for protocol type 0x6558 is skipped)
        at = source  # the row of each return's received frame in `wire`
        if callable(wire):
            # only the frames the resets copy their outer headers from are built
            need = np.unique(source)
            wire = wire(need) if m else self._no_returns()
            at = np.searchsorted(need, source)
            got = inner.inner_off[need] if inner.inner_off is not None else wire.inner_off
            ip_off = np.where(got >= 0, got + np.maximum(inner.l3_off[need], 0), 0).astype(np.int32)
        else:
            ip_off = np.where(inner.inner_off >= 0, inner.inner_off + np.maximum(inner.l3_off, 0), 0).astype(np.int32)
        size = np.where(kind == KIND_ECHO, wire.caplen[at].astype(np.int64),
                        ip_off[at].astype(np.int64) + _r.RST_INNER_LEN)
        out_off = np.zeros(m, np.int64)
        if m:
            np.cumsum(size[:-1], out=out_off[1:])
        data = np.empty(int(size.sum()), np.uint8)
        st = np.empty(m, np.uint8)
        bad = _r.build_returns(wire.data, wire.off, wire.caplen, wire.linktype, ip_off, at, kind, data, out_off, st)
        wirelen = np.where(kind == KIND_ECHO, wire.wirelen[at].astype(np.int64), size).astype(np.uint32)
        cols = {c: getattr(inner, c)[source] if getattr(inner, c) is not None else getattr(wire, c)[at]
                for c in _GENEVE_COLUMNS}
        out = PacketBatch(data, out_off, size.astype(np.uint32), wirelen, wire.ts_ns[at], wire.linktype[at],
                          status=np.zeros(m, np.uint8), fw_index=np.full(m, self.index, np.int16), **cols)
        if bad:
            self.rst_build_failed += int(bad)
            keep = st == PktStatus.OK
            out, source, kind = out[keep], source[keep], kind[keep]
        return out, source, kind
