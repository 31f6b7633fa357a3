"""Content inspection inside the firewall's sessions (DESIGN.md section 12): App-ID re-lookup, URL filtering,
threat prevention and the threat log.

A :class:`SessionInspection` belongs to one :class:`~gwlb_fast.stages.firewall.Firewall`; it exists only when the policy
asks for inspection (a rule with ``application``, ``service: application-default``, ``category`` or ``profile``, or
signature files), so a policy without any of them costs nothing. After the session kernel has decided each packet,
:meth:`apply` feeds the forwarded packets to an :class:`~gwlb_fast.inspect.inspector.Inspector` keyed by the
firewall's own session slots, then, at the packet where it happens:

- the application is identified: the policy is looked up again with it (``Classifier.classify(app=...)``), and with
  the URL category once the Host / SNI / DNS name is known; a rule whose action is not allow ends the session as it
  says (deny / drop: the packet and the rest are dropped; reset-*: the packet is answered with the RSTs);
- a URL is known: its categories (``Policy.url_categories``) and the session rule's URL-filtering action
  (``Policy.url_action``, most severe wins): ``alert`` logs, ``block`` / ``continue`` / ``override`` log and
  reset the session (no user is there to click through a continue or override page), ``allow`` passes;
- a signature matches: the rule's threat profile decides (``Policy.threat_action``; no threat profile: the session
  is not inspected for threats, as on PAN-OS): alert logs, drop drops the session, reset-* resets it, block-ip drops
  the session and blocks its source (the alert's sender; with ``track_by: source-and-destination`` only towards the
  alert's destination) for the profile's duration: from the packet after the alert on (its later packets of the same batch
  too, their alerts not logged), every packet from it is dropped and its session ended (flow-log ``end_reason`` block-ip), counted in ``packets_blocked_ip`` (one block list per
  firewall, as on PAN-OS).

Each alert and URL event becomes one threat-log record (:data:`THREAT_FIELDS`).
"""
from __future__ import annotations

import numpy as np

from .._kernels import session as _s
from ..outputs.report import ip_strs
from ..status import PktStatus
from .appid import FIELDS
from .applications import APP_PENDING, APPLICATIONS
from .inspector import Inspector
from .profiles import SignatureAction, ThreatAction, UrlAction
from .signatures import SignatureSet, load_rules

__all__ = ["THREAT_FIELDS", "EndedFields", "SessionInspection", "needs_inspection"]

#: threat-log record fields (PAN-OS threat log names; Suricata eve names where one exists: src_ip, src_port,
#: dest_* are spelled dst_* as PAN-OS does)
THREAT_FIELDS = ("type", "sid", "signature", "severity", "action", "src_ip", "src_port", "dst_ip", "dst_port",
                 "proto", "direction", "application", "url", "category", "firewall", "rule", "ts")
_SEVERITY = {1: 0, 2: 1, 3: 2}        # Suricata priority -> PAN-OS severity (_SEVERITY_NAMES)
_SIG_ACTION = {"alert": SignatureAction.ALERT, "drop": SignatureAction.DROP, "reject": SignatureAction.REJECT}
_F = {name: i for i, name in enumerate(FIELDS)}
_HOST, _SNI, _DNS, _URI = _F["host"], _F["sni"], _F["dns_query"], _F["uri"]
_SIG, _URL = "signature", "url"
# enum members as plain ints for the per-batch array compares (an IntEnum attribute costs a lookup each time)
_OK, _POLICY_RESET, _POLICY_DENY = int(PktStatus.OK), int(PktStatus.POLICY_RESET), int(PktStatus.POLICY_DENY)
_UA_NONE, _UA_ALLOW = int(UrlAction.NONE), int(UrlAction.ALLOW)
_UA_BLOCK, _UA_CONTINUE, _UA_OVERRIDE = int(UrlAction.BLOCK), int(UrlAction.CONTINUE), int(UrlAction.OVERRIDE)
_TA_NONE, _TA_ALERT, _TA_BLOCK_IP = int(ThreatAction.NONE), int(ThreatAction.ALERT), int(ThreatAction.BLOCK_IP)
_SEVERITY_NAMES = np.array(["high", "medium", "low", "informational"], object)
_INFORMATIONAL = 3
_URL_ACTION_NAMES = np.array([a.name.lower() for a in UrlAction], object)
_THREAT_ACTION_NAMES = np.array([a.name.lower().replace("_", "-") for a in ThreatAction], object)
#: session action code of each ThreatAction that ends the session (block-ip: the session is dropped)
_THREAT_CODE = np.zeros(len(ThreatAction), np.uint8)
_THREAT_CODE[[ThreatAction.DROP, ThreatAction.BLOCK_IP, ThreatAction.RESET_CLIENT, ThreatAction.RESET_SERVER,
              ThreatAction.RESET_BOTH]] = [_s.ACT_DROP, _s.ACT_DROP, _s.ACT_RESET_CLIENT, _s.ACT_RESET_SERVER,
                                           _s.ACT_RESET_BOTH]


def needs_inspection(policy) -> bool:
    """Whether any part of the policy needs content inspection."""
    return bool(policy.signature_files) or any(r.constrained() or r.profile for r in policy.rules)


class SessionInspection:
    """Inspection state of one firewall (see the module docstring).

    Parameters
    ----------
    firewall : Firewall
    capacity : int
        Sessions inspected at once (the inspector's pool; beyond it sessions are not inspected, counted).
    """

    def __init__(self, firewall, capacity: int = 16384, head_size: int = 4096, signatures=None):
        self.fw = firewall
        policy = firewall.policy
        self.policy = policy
        if signatures is None:
            signatures = load_rules(policy.signature_files, policy.signature_vars) if policy.signature_files else []
        self.signatures = list(signatures)
        sigset = SignatureSet(self.signatures, capacity) if self.signatures else None
        self.inspector = Inspector(firewall.table.capacity, capacity=capacity, head_size=head_size,
                                   signatures=sigset, block_on_drop=False)
        self.sig_action = np.array([_SIG_ACTION[s.action] for s in self.signatures], np.uint8)
        self.sig_severity = np.array([_SEVERITY.get(s.priority, _INFORMATIONAL) for s in self.signatures], np.int64)
        self._sig_names = [s.msg or str(s.sid) for s in self.signatures]
        self.has_category_rules = any(r.category is not None for r in policy.rules)
        # per rule (the last entry: none): whether it has a threat profile
        self._rule_threat = np.array([bool(tp) for tp in policy.profiles.rule_threat_profiles] + [False], bool)
        self._pending: list[dict] = []     # threat-log records as columns, see _log
        self.counts = {"relookups": 0, "app_shift_verdicts": 0, "url_events": 0, "threats": 0,
                       "sessions_ended_by_inspection": 0, "ip_blocks": 0, "packets_blocked_ip": 0}
        # block-ip: source ip -> blocked until (ns); (source, destination) -> until, and their sorted forms
        self._block_src: dict[int, int] = {}
        self._block_pair: dict[tuple[int, int], int] = {}
        self._block_tables = None
        self.top_apps: dict[str, int] = {}
        self.top_categories: dict[str, int] = {}
        self.top_threats: dict[str, int] = {}
        # per firewall slot: URL category of the session (primary id, -1 none)
        self.category = np.full(firewall.table.capacity, -1, np.int32)
        # per firewall slot: the batch row a verdict ends the session at (-1 outside _enforce)
        self._stop_pos = np.full(firewall.table.capacity, -1, np.int64)

    # ------------------------------------------------------------------ per batch
    def apply(self, inner, slot, is_new, rev, zone, status, out_rule, out_n, k1, k2) -> None:
        """Inspect the packets the session kernel forwarded and apply the verdicts (arrays changed in place)."""
        fw = self.fw
        sess = fw.sessions
        fwd = (status == _OK) & (slot >= 0)
        if not fwd.any() and not is_new.any():
            return
        s0 = np.where(slot >= 0, slot, 0)
        direction = (rev ^ sess[s0, _s.F_CLIENT_REV].astype(np.uint8)).astype(np.uint8)
        # verdicts: (slot, packet index, action code) triples; the earliest packet of a slot wins
        stops = []
        blocked = self._blocked(inner, fwd) if self._block_src or self._block_pair else None
        if blocked is not None:
            fwd &= ~blocked
            b = np.flatnonzero(blocked)
            first = b[np.unique(slot[b], return_index=True)[1]]
            stops.append((slot[first], first, np.full(first.shape[0], _s.ACT_DROP, np.uint8)))
            self.counts["packets_blocked_ip"] += int(b.shape[0])
        new = (is_new != 0) & fwd
        self.category[slot[new]] = -1
        res = self.inspector.process(inner, np.where(fwd, slot, -1), new.astype(np.uint8), direction)
        slots = np.concatenate([res["changed"], res["completed"]])
        pkts = np.concatenate([res["changed_pkt"], res["completed_pkt"]])
        if slots.shape[0]:
            order = np.argsort(pkts, kind="stable")
            slots, pkts = slots[order], pkts[order]
            keep = np.unique(slots, return_index=True)[1]
            self._relookup(slots[keep], pkts[keep], inner, stops)
        stop_slot, stop_pkt, stop_code = _first_stops(stops)
        alerts = res.get("alerts")
        if alerts is not None and alerts.shape[0]:
            more, late = self._threats(alerts, inner, direction, stop_slot, stop_pkt)
            if late is not None:
                earlier = [(stop_slot, stop_pkt, stop_code)] + ([more] if more is not None else [])
                late, late_stops = self._late_stops(late & fwd & (slot >= 0), slot, earlier)
                if late_stops is not None:
                    more = late_stops if more is None else _first_stops([late_stops, more])  # the block first
                    blocked = late if blocked is None else blocked | late
            if more is not None:
                stop_slot, stop_pkt, stop_code = _first_stops([(stop_slot, stop_pkt, stop_code), more])
        if stop_slot.shape[0]:
            self._enforce(stop_slot, stop_pkt, stop_code, slot, status, out_n, k1, k2, inner)
            if blocked is not None:
                # sessions ended by the block list (not by an earlier verdict of this batch)
                bs = stop_slot[blocked[stop_pkt] & (slot[stop_pkt] == stop_slot)]
                sess[bs, _s.F_REASON] = _s.END_BLOCK_IP

    def _session_cols(self, slots, srow=None):
        """(client ip, server ip, client port, server port, proto, zone) of the sessions in ``slots``, or of the
        session rows ``srow`` (sessions whose slot already holds a new one)."""
        sr = self.fw.sessions[slots] if srow is None else srow
        return (sr[:, _s.F_CLIENT_IP].astype(np.uint32), sr[:, _s.F_SERVER_IP].astype(np.uint32),
                sr[:, _s.F_CLIENT_PORT].astype(np.uint16), sr[:, _s.F_SERVER_PORT].astype(np.uint16),
                sr[:, _s.F_PROTO].astype(np.uint8), sr[:, _s.F_ZONE].astype(np.uint8))

    def _url_fields(self, rows):
        """The URL of pool rows as fixed-width fields: (host uint8[k, w], host_len int64[k], path uint8[k, w],
        path_len int64[k]): Host + URI, else SNI, else the DNS name (no path); length -1: none."""
        insp = self.inspector
        # only the two fields a URL is made of are gathered (not the pool rows' every field)
        f = insp.fields.reshape(insp.fields.shape[0], len(FIELDS), insp.field_width)
        ln = insp.flen[rows].astype(np.int64)
        has_host = ln[:, _HOST] >= 0
        pick = np.where(has_host, _HOST, np.where(ln[:, _SNI] >= 0, _SNI, _DNS))
        ar = np.arange(rows.shape[0])
        path_len = np.where(has_host, ln[:, _URI], -1)
        return f[rows, pick], ln[ar, pick], f[rows, _URI], path_len

    def _url_raw(self, rows):
        """The URLs of pool rows (-1: none) for log records, as fields (``_url_fields`` of the rows that have one,
        and their positions): copies, decoded only if the threat log is taken (:func:`_decode_urls`)."""
        rows = np.asarray(rows, np.int64)
        has = np.flatnonzero(rows >= 0)
        return (rows.shape[0], has, *self._url_fields(rows[has])) if has.shape[0] else (rows.shape[0], has)

    def _relookup(self, slots, pkts, inner, stops) -> None:
        fw = self.fw
        insp = self.inspector
        rows = insp.row_of_slot[slots]
        ok = rows >= 0
        slots, pkts, rows = slots[ok], pkts[ok], rows[ok]
        if not slots.shape[0]:
            return
        app = insp.app[rows]
        cip, sip, cp, sp, proto, z = self._session_cols(slots)
        cats = None
        prim = np.full(slots.shape[0], -1, np.int32)
        done = insp.done[rows] != 0
        if done.any() and len(self.policy.url_categories):
            host, hl, path, pl = self._url_fields(rows)
            prim, cats = self.policy.url_categories.categorize((host, hl), (path, pl))
            prim = np.where(done, prim, -1).astype(np.int32)
            cats = np.where(done[:, None], cats, -1).astype(np.int32)
        self.category[slots] = prim
        rule = fw.classifier.classify(cip, sip, cp, sp, proto, z, z, app=app, category=cats)
        rule = np.where(rule < 0, fw.default_rule, rule).astype(np.int32)
        self.counts["relookups"] += int(slots.shape[0])
        sess = fw.sessions
        old = sess[slots, _s.F_RULE]
        act = fw._actions[rule]
        changed = rule != old
        if changed.any():
            # hits move to the rule the session ends up on
            np.subtract.at(fw.hits, old[changed], 1)
            np.add.at(fw.hits, rule[changed], 1)
            sess[slots[changed], _s.F_RULE] = rule[changed]
            sess[slots[changed], _s.F_ACTION] = act[changed]
            self.counts["app_shift_verdicts"] += int(changed.sum())
        deny = act != _s.ACT_ALLOW
        stops.append((slots[deny], pkts[deny], act[deny].astype(np.uint8)))
        if insp.sigs is not None:
            # a decided session whose rule has no threat profile: no alert of it would count, so its streams are
            # not matched from here on (and again if an application shift moves it to a rule with one)
            decided = (app != APP_PENDING) & done
            insp.stop_matching(slots[decided], ~self._rule_threat[np.minimum(rule[decided], len(self._rule_threat) - 1)])
        # URL filtering on the (possibly new) rule
        if cats is None:
            return
        has = np.flatnonzero(prim >= 0)
        if not has.shape[0]:
            return
        ua = self.policy.url_action(rule[has], cats[has])
        logged = (ua != _UA_NONE) & (ua != _UA_ALLOW)
        ev = has[logged]
        if not ev.shape[0]:
            return
        ua = ua[logged]
        _count_names(self.top_categories, self.policy.url_categories.names, prim[ev])
        self.counts["url_events"] += int(ev.shape[0])
        self._log(_URL, None, _URL_ACTION_NAMES[ua], slots[ev], pkts[ev], np.zeros(ev.shape[0], np.uint8), inner,
                  rows[ev], prim[ev], rule[ev], np.full(ev.shape[0], _INFORMATIONAL, np.int64))
        blk = (ua == _UA_BLOCK) | (ua == _UA_CONTINUE) | (ua == _UA_OVERRIDE)
        # no user is there to click through a continue or override page: the session is reset (TCP) or dropped
        code = np.where(proto[ev] == 6, _s.ACT_RESET_BOTH, _s.ACT_DROP).astype(np.uint8)
        stops.append((slots[ev][blk], pkts[ev][blk], code[blk]))

    def _threats(self, alerts, inner, direction, stop_slot, stop_pkt, srow=None):
        """Log the alerts the rule's threat profile acts on, up to the packet where the session ends (the earliest
        of ``stop_*`` and its first alert whose action ends it); returns the sessions the alerts end (slot, packet,
        action code) or None, and the packets of the batch that its block-ip alerts block (bool, or None). ``srow``: the session rows of the alerts (default: their slots' sessions); an alert
        at packet -1 (raised as its session ended) takes the session's last time and the client-to-server
        direction, and ``inner`` may then be None."""
        fw = self.fw
        o = np.argsort(alerts[:, 2], kind="stable")
        alerts = alerts[o]
        slots = alerts[:, 0]
        sig = alerts[:, 1]
        pkt = alerts[:, 2]
        srow = fw.sessions[slots] if srow is None else srow[o]
        rule = srow[:, _s.F_RULE].astype(np.int64)
        ta = self.policy.threat_action(rule, self.sig_action[sig])
        act = ta != _TA_NONE
        slots, sig, pkt, rule, ta, srow = slots[act], sig[act], pkt[act], rule[act], ta[act], srow[act]
        if not slots.shape[0]:
            return None, None
        # the packet each session already ends at in this batch (verdicts of the re-lookup), then its first alert
        # whose action ends it, if no earlier than that
        limit = np.full(slots.shape[0], np.iinfo(np.int64).max, np.int64)
        if stop_slot.shape[0]:
            o = np.argsort(stop_slot)
            pos = np.searchsorted(stop_slot[o], slots)
            posc = np.minimum(pos, o.shape[0] - 1)
            hit = stop_slot[o][posc] == slots
            limit[hit] = stop_pkt[o][posc[hit]]
        ends = (ta != _TA_ALERT) & (pkt <= limit)
        e_first = np.flatnonzero(ends)
        e_first = e_first[np.unique(slots[e_first], return_index=True)[1]]   # the first by packet (sorted)
        more = None
        if e_first.shape[0]:
            es, ep, ec = slots[e_first], pkt[e_first], _THREAT_CODE[ta[e_first]]
            o = np.argsort(es)
            pos = np.minimum(np.searchsorted(es[o], slots), es.shape[0] - 1)
            hit = es[o][pos] == slots
            limit[hit] = np.minimum(limit[hit], ep[o][pos[hit]])
            more = (es, ep, ec)
        logged = pkt <= limit
        slots, sig, pkt, rule, ta, srow = slots[logged], sig[logged], pkt[logged], rule[logged], ta[logged], \
            srow[logged]
        late = self._late_packets(pkt, rule, ta, inner)
        if late is not None:   # alerts at blocked packets: those never reach inspection
            keep = (pkt < 0) | ~late[np.maximum(pkt, 0)]
            slots, sig, pkt, rule, ta, srow = slots[keep], sig[keep], pkt[keep], rule[keep], ta[keep], srow[keep]
        self.counts["threats"] += int(slots.shape[0])
        _count_names(self.top_threats, self._sig_names, sig)
        d = np.zeros(pkt.shape[0], np.uint8)
        at = pkt >= 0
        if at.any():
            d[at] = direction[pkt[at]]
        self._log(_SIG, sig, _THREAT_ACTION_NAMES[ta], slots, pkt, d, inner, self.inspector.row_of_slot[slots],
                  self.category[slots], rule, self.sig_severity[sig], srow)
        blk = np.flatnonzero(ta == _TA_BLOCK_IP)
        if blk.shape[0]:
            self._block(slots[blk], pkt[blk], d[blk], rule[blk], inner, srow[blk])
        return more, late

    def _late_stops(self, late, slot, earlier):
        """Packets after a block-ip alert of this batch from its sender (``late``, forwarded) are dropped from there
        on, as the block's later batches are, but for sessions that a verdict in ``earlier`` (stop triples) ends
        before them (at the same packet the block comes first). Returns the late packets left and the sessions
        they end (slot, packet, action code), or (None, None)."""
        b = np.flatnonzero(late)
        es, ep, _ec = _first_stops(earlier)
        if es.shape[0] and b.shape[0]:
            o = np.argsort(es)
            at = np.minimum(np.searchsorted(es[o], slot[b]), es.shape[0] - 1)
            ended = (es[o][at] == slot[b]) & (ep[o][at] < b)
            late[b[ended]] = False
            b = b[~ended]
        if not b.shape[0]:
            return None, None
        self.counts["packets_blocked_ip"] += int(b.shape[0])
        first = b[np.unique(slot[b], return_index=True)[1]]
        return late, (slot[first], first, np.full(first.shape[0], _s.ACT_DROP, np.uint8))

    def _late_packets(self, pkt, rule, ta, inner) -> np.ndarray | None:
        """bool per packet of the batch: later than a block-ip alert (``pkt`` sorted; one at a blocked packet does
        not count), from that alert's sender (to its destination, by pair); None when none is."""
        first = np.flatnonzero((ta == _TA_BLOCK_IP) & (pkt >= 0))
        if not first.shape[0]:
            return None
        src, dst = inner.src_ip, inner.dst_ip
        idx = np.arange(src.shape[0])
        pair, _dur = self.policy.profiles.block_ip(rule[first])
        out = np.zeros(src.shape[0], bool)
        for k, by_pair in zip(pkt[first].tolist(), pair.tolist()):   # per block-ip alert
            if not out[k]:
                m = (idx > k) & (src == src[k])
                out |= (m & (dst == dst[k])) if by_pair else m
        return out if out.any() else None

    def _block(self, slots, pkts, d, rule, inner, srow=None) -> None:
        """Block the senders of block-ip alerts (their source, or source and destination) for the rule's
        duration from the alert's packet on."""
        cip, sip, _cp, _sp, _proto, _z = self._session_cols(slots, srow)
        rev = d != 0
        src, dst = np.where(rev, sip, cip), np.where(rev, cip, sip)
        ts = self._event_ts(slots, pkts, inner, srow)
        pair, dur = self.policy.profiles.block_ip(rule)
        for a, b, p, until in zip(src.tolist(), dst.tolist(), pair.tolist(), (ts + dur).tolist()):  # per block
            table, key = (self._block_pair, (a, b)) if p else (self._block_src, a)
            if key not in table:
                self.counts["ip_blocks"] += 1
            table[key] = max(until, table.get(key, 0))
        self._block_tables = None

    def _blocked(self, inner, fwd) -> np.ndarray | None:
        """bool per packet of the batch: forwarded, from a blocked source (to a blocked destination) before its
        block ends; None when none is. Blocks that ended before the batch are let go."""
        ts = inner.ts_ns
        if ts.shape[0] == 0:
            return None
        t0 = int(ts.min())
        for table in (self._block_src, self._block_pair):
            for k in [k for k, until in table.items() if until <= t0]:   # per block ended
                del table[k]
                self._block_tables = None
        if self._block_tables is None:
            src = np.array(sorted(self._block_src), np.uint64)
            pair = np.array(sorted((a << 32) | b for a, b in self._block_pair), np.uint64)
            self._block_tables = (src, np.array([self._block_src[int(k)] for k in src], np.int64), pair,
                                  np.array([self._block_pair[(int(k) >> 32, int(k) & 0xFFFFFFFF)] for k in pair],
                                           np.int64))
        src_keys, src_until, pair_keys, pair_until = self._block_tables
        out = np.zeros(ts.shape[0], bool)
        for keys, until, col in ((src_keys, src_until, inner.src_ip.astype(np.uint64)),
                                 (pair_keys, pair_until, (inner.src_ip.astype(np.uint64) << np.uint64(32))
                                  | inner.dst_ip.astype(np.uint64))):
            if keys.shape[0]:
                i = np.minimum(np.searchsorted(keys, col), keys.shape[0] - 1)
                out |= (keys[i] == col) & (ts < until[i])
        out &= fwd
        return out if out.any() else None

    def _event_ts(self, slots, pkts, inner, srow=None) -> np.ndarray:
        """Time of each event: its packet's, or (packet -1: raised as the session ended) the session's last."""
        ts = (self.fw.sessions[slots, _s.F_LAST] if srow is None else srow[:, _s.F_LAST]).astype(np.int64)
        at = pkts >= 0
        if at.any():
            ts[at] = inner.ts_ns[pkts[at]]
        return ts

    def _log(self, kind, sig, action, slots, pkts, d, inner, rows, cat, rule, severity, srow=None) -> None:
        """Threat-log records of k events, kept as columns until :meth:`take_threats` (``sig`` None or
        signature indices, ``action`` names, ``d`` directions, ``rows`` pool rows for the URL, ``cat`` category
        ids, ``severity`` indices into ``_SEVERITY_NAMES``)."""
        cip, sip, cp, sp, proto, _z = self._session_cols(slots, srow)
        rev = d != 0
        app = np.where(rows >= 0, self.inspector.app[np.maximum(rows, 0)], APP_PENDING)
        ts = self._event_ts(slots, pkts, inner, srow)
        self._pending.append({
            "kind": kind, "sig": sig, "action": action, "severity": severity,
            "src_ip": np.where(rev, sip, cip), "src_port": np.where(rev, sp, cp),
            "dst_ip": np.where(rev, cip, sip), "dst_port": np.where(rev, cp, sp), "proto": proto, "d": d,
            "app": app, "url": self._url_raw(rows), "cat": cat, "rule": rule, "ts": ts})

    def _enforce(self, s_arr, p_arr, a_arr, slot, status, out_n, k1, k2, inner) -> None:
        """End sessions ``s_arr`` at packets ``p_arr`` with actions ``a_arr``: that packet and the later ones of the
        session in this batch are dropped (the first one answered with the RSTs of a reset action); later batches
        see the session denied or resetting."""
        sess = self.fw.sessions
        self.counts["sessions_ended_by_inspection"] += int(s_arr.shape[0])
        tcp = sess[s_arr, _s.F_PROTO] == 6
        reset = (a_arr >= _s.ACT_RESET_CLIENT) & tcp
        sess[s_arr, _s.F_ACTION] = a_arr
        sess[s_arr, _s.F_STATE] = np.where(reset, _s.S_RESETTING, _s.S_DENIED)
        sess[s_arr, _s.F_REASON] = _s.END_POLICY_DENY
        # rows of the batch from each session's stop packet on
        pos = self._stop_pos
        pos[s_arr] = p_arr
        live = slot >= 0
        idx = np.flatnonzero(live & (pos[np.where(live, slot, 0)] >= 0))
        idx = idx[idx >= pos[slot[idx]]]
        idx = idx[status[idx] == _OK]
        rs = sess[slot[idx], _s.F_STATE] == _s.S_RESETTING
        status[idx] = np.where(rs, _POLICY_RESET, _POLICY_DENY)
        out_n[idx] = 0
        first = idx[idx == pos[slot[idx]]]
        pos[s_arr] = -1
        first = first[(sess[slot[first], _s.F_STATE] == _s.S_RESETTING) & ((inner.tcp_flags[first] & 0x04) == 0)]
        if first.shape[0]:
            client = (inner.src_ip[first] == sess[slot[first], _s.F_CLIENT_IP].astype(np.uint32)) & \
                (inner.sport[first] == sess[slot[first], _s.F_CLIENT_PORT].astype(np.uint16))
            to_client = np.where(client, _s.OUT_RST_TO_SENDER, _s.OUT_RST_TO_RECEIVER).astype(np.uint8)
            to_server = np.where(client, _s.OUT_RST_TO_RECEIVER, _s.OUT_RST_TO_SENDER).astype(np.uint8)
            a = sess[slot[first], _s.F_ACTION]
            out_n[first] = np.where(a == _s.ACT_RESET_BOTH, 2, 1)
            k1[first] = np.where(a == _s.ACT_RESET_SERVER, to_server, to_client)
            k2[first] = to_server

    # ------------------------------------------------------------------ session ends
    def annotate(self, slots: np.ndarray, sessions: np.ndarray) -> dict:
        """Application and fields of the sessions in ``slots`` (ending now; ``sessions``: their session rows, in
        the same order), the alerts of signatures on fields that only their end completed logged, then their
        inspection rows freed. Returns ``application`` (int16 per session, -1 not inspected) and ``fields``
        (:class:`EndedFields`: host, sni, url and category per session, decoded when read; None when none was
        inspected)."""
        slots = np.asarray(slots, np.int64)
        insp = self.inspector
        k = slots.shape[0]
        out = {"application": np.full(k, -1, np.int16), "fields": None}
        if not k:
            return out
        rows = insp.row_of_slot[slots]
        has = np.flatnonzero(rows >= 0)
        if has.shape[0]:
            res = insp.end(slots[has], release=False, fields=False)
            r = rows[has]
            out["fields"] = EndedFields(k, has, insp.fields[r], insp.flen[r], self.category[slots[has]],
                                        insp.field_width, self.policy.url_categories.names)
            hits = res["alerts"]
            if hits is not None and hits.shape[0]:
                hits = hits.copy()
                hits[:, 2] = -1  # raised by the session's end, after its last packet
                by_slot = np.argsort(slots[has], kind="stable")
                srow = np.asarray(sessions)[has[by_slot[np.searchsorted(slots[has], hits[:, 0], sorter=by_slot)]]]
                none = np.zeros(0, np.int64)
                self._threats(hits, None, None, none, none, srow)  # the session is over: nothing left to stop
            insp.release(slots[has])
            app = res["app"]
            out["application"][has] = np.where(app == APP_PENDING, -1, app).astype(np.int16)
            _count_names(self.top_apps, APPLICATIONS, app[app != APP_PENDING])
        self.category[slots] = -1
        return out

    def take_threats(self) -> list[dict]:
        """The threat-log records since the last call (:data:`THREAT_FIELDS`), in event order."""
        out = []
        fw = self.fw
        names = self.policy.url_categories.names
        for c in self._pending:
            k = c["url"][0]
            if c["sig"] is None:
                sid = msg = [None] * k
            else:
                sigs = [self.signatures[i] for i in c["sig"].tolist()]
                sid, msg = [g.sid for g in sigs], [g.msg for g in sigs]
            app = [APPLICATIONS[a] if a != APP_PENDING else None for a in c["app"].tolist()]
            cat = [names[x] if x >= 0 else None for x in c["cat"].tolist()]
            rule = [fw.rule_names[r] if 0 <= r < len(fw.rule_names) else None for r in c["rule"].tolist()]
            direction = np.where(c["d"] != 0, "server-to-client", "client-to-server").tolist()
            cols = zip(sid, msg, _SEVERITY_NAMES[c["severity"]].tolist(), c["action"].tolist(),
                       ip_strs(c["src_ip"]), c["src_port"].tolist(), ip_strs(c["dst_ip"]), c["dst_port"].tolist(),
                       c["proto"].tolist(), direction, app, _decode_urls(c["url"]), cat, rule, (c["ts"] / 1e9).tolist())
            kind = c["kind"]
            out += [{"type": kind, "sid": a, "signature": b, "severity": sv, "action": ac, "src_ip": si,
                     "src_port": sp, "dst_ip": di, "dst_port": dp, "proto": pr, "direction": dr, "application": ap,
                     "url": u, "category": ca, "firewall": fw.name, "rule": ru, "ts": t}
                    for a, b, sv, ac, si, sp, di, dp, pr, dr, ap, u, ca, ru, t in cols]  # per log record
        self._pending = []
        return out

    def discard_threats(self) -> None:
        """Forget the threat-log records since the last call (no threat log is written: nothing is decoded)."""
        self._pending = []

    def stats(self) -> dict:
        d = dict(self.counts)
        d.update(self.inspector.stats())
        return d


class EndedFields:
    """Host, SNI, URL and URL category of ended sessions for the flow log, kept as the inspection pool's field
    bytes (copies) and decoded only when a record reads them (:meth:`get`).

    Parameters
    ----------
    k : int
        Sessions ended.
    has : int64[h]
        Those of them that were inspected (positions in ``[0, k)``), with their pool ``fields`` (uint8[h, w * F]),
        ``flen`` (int32[h, F], -1 none) and URL ``category`` (int32[h], -1 none).
    """

    __slots__ = ("_at", "_cat", "_fields", "_flen", "_names", "_w", "noted")

    def __init__(self, k, has, fields, flen, category, width, names):
        ln = flen.astype(np.int64)
        any_field = (ln[:, _HOST] >= 0) | (ln[:, _SNI] >= 0) | (ln[:, _DNS] >= 0)
        #: bool[k]: the session has a host, SNI, URL or category (a flow-log reference)
        self.noted = np.zeros(k, bool)
        self.noted[has] = any_field | (category >= 0)
        self._at = np.full(k, -1, np.int64)
        self._at[has] = np.arange(has.shape[0])
        self._fields, self._flen, self._cat = fields, flen, category
        self._w, self._names = int(width), names

    def get(self, i: int) -> tuple:
        """(host, sni, url, category) of ended session ``i`` (str or None each)."""
        j = int(self._at[i])
        if j < 0:
            return (None, None, None, None)
        row, w = self._fields[j], self._w

        def field(name):
            f = _F[name]
            ln = int(self._flen[j, f])
            return bytes(row[f * w:f * w + ln]) if ln >= 0 else None

        host, sni, dns, uri = field("host"), field("sni"), field("dns_query"), field("uri")
        h = host if host is not None else (sni if sni is not None else dns)
        cat = int(self._cat[j])
        return (host.decode("latin-1") if host is not None else (dns.decode("latin-1") if dns is not None else None),
                sni.decode("latin-1") if sni is not None else None,
                None if h is None else (h + (uri if host is not None and uri else b"")).decode("latin-1"),
                self._names[cat] if cat >= 0 else None)


def _decode_urls(raw) -> list:
    """URL strings (or None) of the log records whose fields :meth:`SessionInspection._url_raw` kept."""
    out = [None] * raw[0]
    if len(raw) > 2:
        _k, has, host, hl, path, pl = raw
        for j, i in enumerate(has.tolist()):  # per log record
            if hl[j] >= 0:
                out[i] = (host[j, :hl[j]].tobytes() + path[j, :max(int(pl[j]), 0)].tobytes()).decode("latin-1")
    return out


def _count_names(counter: dict, names, ids) -> None:
    """Add the occurrences of each id of ``ids`` (ints indexing ``names``) to ``counter`` (name -> count)."""
    ids = np.asarray(ids)
    if ids.shape[0] > 64:   # a batch's worth (the session ends of a run's end): counted per distinct id
        vals, cnt = np.unique(ids, return_counts=True)
        for v, c in zip(vals.tolist(), cnt.tolist()):  # per distinct name
            counter[names[v]] = counter.get(names[v], 0) + c
        return
    for v in ids.tolist():  # per event of a batch (a few)
        counter[names[v]] = counter.get(names[v], 0) + 1


def _first_stops(parts):
    """(slot, packet, action code) arrays of sessions to end, the earliest packet of each slot (the first part
    given wins a tie) from a list of such triples."""
    parts = [p for p in parts if p[0].shape[0]]
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.uint8)
    s = np.concatenate([p[0] for p in parts]).astype(np.int64)
    k = np.concatenate([p[1] for p in parts]).astype(np.int64)
    c = np.concatenate([p[2] for p in parts]).astype(np.uint8)
    o = np.lexsort((k, s))                       # by slot, then packet; stable: the first part first on ties
    first = o[np.r_[True, s[o][1:] != s[o][:-1]]]
    return s[first], k[first], c[first]
