"""Content inspection inside the firewall's sessions (DESIGN.md section 12): App-ID re-lookup, URL filtering,
threat prevention and the threat log.

A :class:`SessionInspection` belongs to one :class:`~gwlb_fast.firewall.Firewall`; it exists only when the policy
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
  the session (the address block itself is not modelled).

Each alert and URL event becomes one threat-log record (:data:`THREAT_FIELDS`).
"""
from __future__ import annotations

import numpy as np

from .._kernels import session as _s
from ..report import ip_strs
from ..status import PktStatus
from .appid import FIELDS
from .applications import APP_PENDING, APPLICATIONS
from .inspector import Inspector
from .profiles import SignatureAction, ThreatAction, UrlAction
from .signatures import SignatureSet, load_rules

__all__ = ["THREAT_FIELDS", "SessionInspection", "needs_inspection"]

#: threat-log record fields (PAN-OS threat log names; Suricata eve names where one exists: src_ip, src_port,
#: dest_* are spelled dst_* as PAN-OS does)
THREAT_FIELDS = ("type", "sid", "signature", "severity", "action", "src_ip", "src_port", "dst_ip", "dst_port",
                 "proto", "direction", "application", "url", "category", "firewall", "rule", "ts")
_SEVERITY = {1: "high", 2: "medium", 3: "low"}          # Suricata priority -> PAN-OS severity
_SIG_ACTION = {"alert": SignatureAction.ALERT, "drop": SignatureAction.DROP, "reject": SignatureAction.REJECT}
_F = {name: i for i, name in enumerate(FIELDS)}


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
            signatures = load_rules(policy.signature_files) if policy.signature_files else []
        self.signatures = list(signatures)
        sigset = SignatureSet(self.signatures, capacity) if self.signatures else None
        self.inspector = Inspector(firewall.table.capacity, capacity=capacity, head_size=head_size,
                                   signatures=sigset, block_on_drop=False)
        self.sig_action = np.array([_SIG_ACTION[s.action] for s in self.signatures], np.uint8)
        self.has_category_rules = any(r.category is not None for r in policy.rules)
        self.threat_log: list[dict] = []
        self.counts = {"relookups": 0, "app_shift_verdicts": 0, "url_events": 0, "threats": 0,
                       "sessions_ended_by_inspection": 0}
        self.top_apps: dict[str, int] = {}
        self.top_categories: dict[str, int] = {}
        self.top_threats: dict[str, int] = {}
        # per firewall slot: URL category of the session (primary id, -1 none)
        self.category = np.full(firewall.table.capacity, -1, np.int32)

    # ------------------------------------------------------------------ per batch
    def apply(self, inner, slot, is_new, rev, zone, status, out_rule, out_n, k1, k2) -> None:
        """Inspect the packets the session kernel forwarded and apply the verdicts (arrays changed in place)."""
        fw = self.fw
        sess = fw.sessions
        fwd = (status == PktStatus.OK) & (slot >= 0)
        if not fwd.any() and not is_new.any():
            return
        s0 = np.where(slot >= 0, slot, 0)
        direction = (rev ^ sess[s0, _s.F_CLIENT_REV].astype(np.uint8)).astype(np.uint8)
        new = (is_new != 0) & fwd
        self.category[slot[new]] = -1
        res = self.inspector.process(inner, np.where(fwd, slot, -1), new.astype(np.uint8), direction)
        # verdict events per slot: (packet index, slot, kind, extra)
        stop = {}                                   # slot -> (packet, action code)
        slots = np.concatenate([res["changed"], res["completed"]])
        pkts = np.concatenate([res["changed_pkt"], res["completed_pkt"]])
        if slots.shape[0]:
            order = np.argsort(pkts, kind="stable")
            slots, pkts = slots[order], pkts[order]
            keep = np.unique(slots, return_index=True)[1]
            slots, pkts = slots[keep], pkts[keep]
            self._relookup(slots, pkts, zone, stop, inner)
        alerts = res.get("alerts")
        if alerts is not None and alerts.shape[0]:
            self._threats(alerts, inner, direction, stop)
        if stop:
            self._enforce(stop, slot, status, out_rule, out_n, k1, k2, inner)

    def _session_cols(self, slots):
        sess = self.fw.sessions
        return (sess[slots, _s.F_CLIENT_IP].astype(np.uint32), sess[slots, _s.F_SERVER_IP].astype(np.uint32),
                sess[slots, _s.F_CLIENT_PORT].astype(np.uint16), sess[slots, _s.F_SERVER_PORT].astype(np.uint16),
                sess[slots, _s.F_PROTO].astype(np.uint8), sess[slots, _s.F_ZONE].astype(np.uint8))

    def _url_of(self, rows):
        """(host bytes list, path bytes list, url str list) of pool rows: Host + URI, else SNI, else DNS name."""
        insp = self.inspector
        fw_ = insp.field_width
        hosts, paths, urls = [], [], []
        def get(r, name):
            j = _F[name]
            k = int(insp.flen[r, j])
            return bytes(insp.fields[r, j * fw_:j * fw_ + k]) if k >= 0 else None

        for r in rows.tolist():  # per session whose URL just became known (not per packet)
            host = get(r, "host") or get(r, "sni") or get(r, "dns_query")
            path = get(r, "uri") if get(r, "host") is not None else None
            hosts.append(host)
            paths.append(path)
            urls.append(None if host is None else (host + (path or b"")).decode("latin-1"))
        return hosts, paths, urls

    def _relookup(self, slots, pkts, zone, stop, inner) -> None:
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
        urls = [None] * slots.shape[0]
        if done.any() and len(self.policy.url_categories):
            hosts, paths, urls = self._url_of(rows)
            prim, cats = self.policy.url_categories.categorize(hosts, paths)
            prim = np.where(done, prim, -1).astype(np.int32)
            cats = np.where(done[:, None], cats, -1).astype(np.int32)
        elif done.any():
            _, _, urls = self._url_of(rows)
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
        for i in np.flatnonzero(act != _s.ACT_ALLOW).tolist():
            self._stop(stop, int(slots[i]), int(pkts[i]), int(act[i]))
        # URL filtering on the (possibly new) rule
        if cats is not None:
            has = prim >= 0
            if has.any():
                ua = self.policy.url_action(rule[has], cats[has])
                names = self.policy.url_categories.names
                for j, i in enumerate(np.flatnonzero(has).tolist()):
                    a = UrlAction(int(ua[j]))
                    if a in (UrlAction.NONE, UrlAction.ALLOW):
                        continue
                    cname = names[int(prim[i])]
                    self.top_categories[cname] = self.top_categories.get(cname, 0) + 1
                    self.counts["url_events"] += 1
                    self._log("url", None, a.name.lower(), int(slots[i]), int(pkts[i]), 0, inner, urls[i], cname,
                              int(rule[i]), severity="informational")
                    if a in (UrlAction.BLOCK, UrlAction.CONTINUE, UrlAction.OVERRIDE):
                        self._stop(stop, int(slots[i]), int(pkts[i]), _s.ACT_RESET_BOTH
                                   if int(proto[i]) == 6 else _s.ACT_DROP)

    def _threats(self, alerts, inner, direction, stop) -> None:
        fw = self.fw
        slots = alerts[:, 0]
        sig = alerts[:, 1]
        pkt = alerts[:, 2]
        rule = fw.sessions[slots, _s.F_RULE].astype(np.int64)
        ta = self.policy.threat_action(rule, self.sig_action[sig])
        for i in np.argsort(pkt, kind="stable").tolist():  # per alert
            a = ThreatAction(int(ta[i]))
            s = int(slots[i])
            p = int(pkt[i])
            if a is ThreatAction.NONE:
                continue
            if s in stop and stop[s][0] < p:
                continue                             # the session was already ended earlier in the batch
            sg = self.signatures[int(sig[i])]
            self.counts["threats"] += 1
            self.top_threats[sg.msg or str(sg.sid)] = self.top_threats.get(sg.msg or str(sg.sid), 0) + 1
            d = int(direction[p]) if p >= 0 else 0
            row = self.inspector.row_of_slot[s]
            _, _, urls = self._url_of(np.array([row])) if row >= 0 else (None, None, [None])
            cat = int(self.category[s])
            cname = self.policy.url_categories.names[cat] if cat >= 0 else None
            self._log("signature", sg, a.name.lower().replace("_", "-"), s, p, d, inner, urls[0], cname, int(rule[i]),
                      severity=_SEVERITY.get(sg.priority, "informational"))
            if a is not ThreatAction.ALERT:
                code = {ThreatAction.DROP: _s.ACT_DROP, ThreatAction.BLOCK_IP: _s.ACT_DROP,
                        ThreatAction.RESET_CLIENT: _s.ACT_RESET_CLIENT, ThreatAction.RESET_SERVER: _s.ACT_RESET_SERVER,
                        ThreatAction.RESET_BOTH: _s.ACT_RESET_BOTH}[a]
                self._stop(stop, s, p, code)

    @staticmethod
    def _stop(stop, s, p, code) -> None:
        if s not in stop or stop[s][0] > p:
            stop[s] = (p, code)

    def _log(self, kind, sig, action, s, p, d, inner, url, cname, rule, severity) -> None:
        fw = self.fw
        cip, sip, cp, sp, proto, _z = self._session_cols(np.array([s]))
        if d:
            cip, sip, cp, sp = sip, cip, sp, cp
        row = self.inspector.row_of_slot[s]
        app = int(self.inspector.app[row]) if row >= 0 else APP_PENDING
        ts = int(inner.ts_ns[p]) if p >= 0 else int(fw.sessions[s, _s.F_LAST])
        self.threat_log.append({
            "type": kind, "sid": sig.sid if sig is not None else None,
            "signature": sig.msg if sig is not None else None, "severity": severity, "action": action,
            "src_ip": ip_strs(cip)[0], "src_port": int(cp[0]), "dst_ip": ip_strs(sip)[0], "dst_port": int(sp[0]),
            "proto": int(proto[0]), "direction": "server-to-client" if d else "client-to-server",
            "application": APPLICATIONS[app] if app != APP_PENDING else None, "url": url, "category": cname,
            "firewall": fw.name, "rule": fw.rule_names[rule] if 0 <= rule < len(fw.rule_names) else None,
            "ts": ts / 1e9,
        })

    def _enforce(self, stop, slot, status, out_rule, out_n, k1, k2, inner) -> None:
        """End sessions at the packet where inspection decided: that packet and the later ones of the session in
        this batch are dropped (the first one answered with the RSTs of a reset action); later batches see the
        session denied or resetting."""
        fw = self.fw
        sess = fw.sessions
        s_arr = np.array(list(stop), np.int64)
        p_arr = np.array([stop[s][0] for s in stop], np.int64)
        a_arr = np.array([stop[s][1] for s in stop], np.uint8)
        self.counts["sessions_ended_by_inspection"] += int(s_arr.shape[0])
        tcp = sess[s_arr, _s.F_PROTO] == 6
        reset = (a_arr >= _s.ACT_RESET_CLIENT) & tcp
        sess[s_arr, _s.F_ACTION] = a_arr
        sess[s_arr, _s.F_STATE] = np.where(reset, _s.S_RESETTING, _s.S_DENIED)
        sess[s_arr, _s.F_REASON] = _s.END_POLICY_DENY
        # rows of the batch from each session's stop packet on
        pos = np.full(fw.table.capacity, -1, np.int64)
        pos[s_arr] = p_arr
        live = slot >= 0
        idx = np.flatnonzero(live & (pos[np.where(live, slot, 0)] >= 0))
        idx = idx[idx >= pos[slot[idx]]]
        idx = idx[status[idx] == PktStatus.OK]
        act = sess[slot[idx], _s.F_ACTION]
        rs = sess[slot[idx], _s.F_STATE] == _s.S_RESETTING
        status[idx] = np.where(rs, PktStatus.POLICY_RESET, PktStatus.POLICY_DENY)
        out_n[idx] = 0
        first = idx[idx == pos[slot[idx]]]
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
        del act

    # ------------------------------------------------------------------ session ends
    def annotate(self, slots: np.ndarray) -> dict:
        """Application and fields of the sessions in ``slots`` (ending now), then their inspection rows freed.
        Returns arrays for the session records: ``application`` (int16, -1 not inspected), ``host``, ``sni``,
        ``url``, ``category`` (lists of str or None)."""
        slots = np.asarray(slots, np.int64)
        insp = self.inspector
        k = slots.shape[0]
        out = {"application": np.full(k, -1, np.int16), "host": [None] * k, "sni": [None] * k, "url": [None] * k,
               "category": [None] * k}
        if not k:
            return out
        rows = insp.row_of_slot[slots]
        has = np.flatnonzero(rows >= 0)
        if has.shape[0]:
            res = insp.end(slots[has])
            app = res["app"]
            out["application"][has] = np.where(app == APP_PENDING, -1, app).astype(np.int16)
            names = self.policy.url_categories.names
            for j, i in enumerate(has.tolist()):  # per ended session
                a = int(app[j])
                if a != APP_PENDING:
                    nm = APPLICATIONS[a]
                    self.top_apps[nm] = self.top_apps.get(nm, 0) + 1
                host = res["host"][j]
                sni = res["sni"][j]
                dns = res["dns_query"][j]
                uri = res["uri"][j]
                out["host"][i] = host.decode("latin-1") if host is not None else (
                    dns.decode("latin-1") if dns is not None else None)
                out["sni"][i] = sni.decode("latin-1") if sni is not None else None
                h = host if host is not None else (sni if sni is not None else dns)
                out["url"][i] = None if h is None else (h + (uri if host is not None and uri else b"")).decode(
                    "latin-1")
                cat = int(self.category[slots[i]])
                out["category"][i] = names[cat] if cat >= 0 else None
        self.category[slots] = -1
        return out

    def take_threats(self) -> list[dict]:
        out, self.threat_log = self.threat_log, []
        return out

    def stats(self) -> dict:
        d = dict(self.counts)
        d.update(self.inspector.stats())
        return d
