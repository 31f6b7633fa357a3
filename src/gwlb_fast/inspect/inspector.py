"""Content inspection of sessions: stream reassembly, App-ID and field extraction (DESIGN.md section 12).

:class:`Inspector` is the part a firewall runs beside its session table: the caller says which session (its own
slot index) and which direction each packet belongs to, and which sessions are new; the inspector keeps a bounded
pool of inspected sessions (:class:`StreamTable`), feeds their streams, identifies the application and extracts the
fields once enough bytes are in. Every step is a batched kernel; Python only gathers indices.

:func:`inspect_flows` runs the same over a capture on its own (sessions keyed by the canonical 5-tuple, the client
being the sender of the first packet, or the receiver of a first SYN-ACK): the tests and benchmarks compare that
with Suricata.
"""
from __future__ import annotations

import ipaddress

import numpy as np

from .._kernels import appid as _ak
from .._kernels import stream as _sk
from .._kernels.flowtable import FlowTable, canonical_5tuple
from .._kernels.heap import zeroed
from .appid import FIELDS, IDS, identify
from .applications import APP_PENDING, APPLICATIONS
from .stream import StreamTable

__all__ = ["MATCH_DEPTH", "Inspector", "inspect_flows"]

#: bytes of each stream direction matched by the signatures (Suricata's default stream.reassembly.depth, 1mb)
MATCH_DEPTH = 1 << 20


class Inspector:
    """Inspection state for sessions numbered by an outside table (a firewall's flow-table slots).

    Parameters
    ----------
    slots : int
        Size of the outside slot space (session slot indices are in ``[0, slots)``).
    capacity : int
        Sessions inspected at once (pool rows); sessions beyond it are not inspected (counted).
    head_size : int
        Bytes of each direction kept for App-ID and extraction.
    field_width : int
        Bytes kept of each extracted field (longer values are cut; PAN-OS logs cut URLs too).
    signatures : list of Signature or SignatureSet, optional
        Threat signatures matched on the sessions' streams and fields.
    block_on_drop : bool
        Report no more hits of a session after a drop / reject signature hit it (standalone use, as an IPS does);
        a firewall decides that with its profiles instead.
    match_depth : int
        Bytes of each TCP direction the signatures are matched on as a stream (Suricata's
        ``stream.reassembly.depth``, 1 MiB by default there and here); past it each packet is matched on its own
        (counted in ``match_bytes_past_depth``), see ``_match_ranges``.
    """

    def __init__(self, slots: int, capacity: int = 8192, head_size: int = 4096, field_width: int = 256,
                 signatures=None, block_on_drop: bool = True, match_depth: int = MATCH_DEPTH):
        self.streams = StreamTable(capacity, head_size)
        self.row_of_slot = np.full(int(slots), -1, np.int64)
        cap = self.streams.capacity
        self.slot_of_row = np.full(cap, -1, np.int64)
        self.proto = np.zeros(cap, np.uint8)
        self.app = np.zeros(cap, np.int32)
        self.done = np.zeros(cap, np.uint8)
        self.ended = np.zeros(cap, np.uint8)
        self.field_width = int(field_width)
        self.fields = zeroed((cap, len(FIELDS) * self.field_width), np.uint8)   # pages of its own, see StreamTable
        self.flen = np.full((cap, len(FIELDS)), -1, np.int32)
        self.seen_len = np.zeros(2 * cap, np.int64)
        self.app_pkt = np.full(cap, -1, np.int64)
        self.done_pkt = np.full(cap, -1, np.int64)
        self._changed = self._completed = np.zeros(0, np.int64)   # the rows whose marks the last batch set
        # the session's 5-tuple in client -> server order (signature headers), its serial number (alerts are
        # reported once per session and signature) and which directions have been seen (flow:established)
        self.client_ip = np.zeros(cap, np.uint32)
        self.server_ip = np.zeros(cap, np.uint32)
        self.client_port = np.zeros(cap, np.uint16)
        self.server_port = np.zeros(cap, np.uint16)
        self.serial = np.zeros(cap, np.int64)
        self.seen = np.zeros((cap, 2), np.uint8)
        # per pool row: 0 = its streams are not matched (the session's rule has no threat profile, see
        # stop_matching); past match_depth, TCP packets are matched one by one
        self.matching = np.ones(cap, np.uint8)
        self._not_matching = 0
        self.match_depth = int(match_depth)
        self.bytes_not_matched = 0
        self.bytes_past_depth = 0
        self._next_serial = 1
        self.sigs = None
        if signatures is not None and len(signatures):
            from .._kernels import match as _m
            from .signatures import SignatureSet

            self.sigs = signatures if isinstance(signatures, SignatureSet) else SignatureSet(signatures, cap)
            if self.sigs.n_rows < cap:
                raise ValueError(f"Inspector: the signature set has streams for {self.sigs.n_rows} sessions, "
                                 f"the pool {cap}")
            # rings of the buffers that had a literal match: their pages are committed only as matches come
            self._ring_pid = zeroed((cap * _m.N_BUFFERS, _m.RING), np.int32)
            self._ring_end = zeroed((cap * _m.N_BUFFERS, _m.RING), np.int64)
            self._ring_n = np.zeros(cap * _m.N_BUFFERS, np.int64)
            self._ev_cap = 1 << 18
            self._ev = (np.empty(self._ev_cap, np.int64), np.empty(self._ev_cap, np.uint8),
                        np.empty(self._ev_cap, np.int32), np.empty(self._ev_cap, np.int64),
                        np.empty(self._ev_cap, np.int64))
            self._hits_cap = 0   # (event, signature) hit arrays of _verify
        self._fired: dict[int, set[int]] = {}   # session serial -> the signatures that alerted on it
        self._blocked: dict[int, int] = {}   # session serial -> packet (run-wide index) a drop/reject fired at
        self._pkt_base = 0
        self.block_on_drop = bool(block_on_drop)
        self.alerts_suppressed = 0

    # ------------------------------------------------------------------ per batch
    def process(self, batch, slot: np.ndarray, is_new: np.ndarray, direction: np.ndarray) -> dict:
        """Inspect one parsed batch.

        Parameters
        ----------
        batch : PacketBatch (parsed)
        slot : int64[n]
            Outside session slot of each packet, -1 for packets not inspected (dropped before the session).
        is_new : uint8[n]
            Nonzero where the packet starts a new session in its slot (its inspection state is reset).
        direction : uint8[n]
            0 client -> server, 1 server -> client.

        Returns
        -------
        dict with ``stream`` (the stream kernel's per-packet outputs), ``sd`` (int64[n]), ``alerts``, ``changed``
        (outside slots whose application was decided in this batch) and ``completed`` (whose fields were
        completed), with the packets that did it (``changed_pkt``, ``completed_pkt``).
        """
        slot = np.asarray(slot, np.int64)
        new_rows = np.flatnonzero((np.asarray(is_new) != 0) & (slot >= 0))
        if new_rows.shape[0]:
            # a slot restarting a session lets go of the old session's row first
            new_slots, first_at = np.unique(slot[new_rows], return_index=True)
            old = self.row_of_slot[new_slots]
            self._free_rows(old[old >= 0])
            rows = self.streams.allocate(new_slots.shape[0])
            self.row_of_slot[new_slots] = rows
            got = rows >= 0
            r = rows[got]
            self.slot_of_row[r] = new_slots[got]
            first = new_rows[first_at]
            self.proto[r] = batch.proto[first][got]
            self.app[r] = APP_PENDING
            self.done[r] = 0
            self.ended[r] = 0
            self.flen[r] = -1
            self.seen_len[2 * r] = 0
            self.seen_len[2 * r + 1] = 0
            self.seen[r] = 0
            self._set_matching(r, 1)
            self.serial[r] = np.arange(self._next_serial, self._next_serial + r.shape[0])
            self._next_serial += r.shape[0]
            fi = first[got]
            d0 = np.asarray(direction)[fi] == 0
            self.client_ip[r] = np.where(d0, batch.src_ip[fi], batch.dst_ip[fi])
            self.server_ip[r] = np.where(d0, batch.dst_ip[fi], batch.src_ip[fi])
            self.client_port[r] = np.where(d0, batch.sport[fi], batch.dport[fi])
            self.server_port[r] = np.where(d0, batch.dport[fi], batch.sport[fi])
            if self.sigs is not None:
                self._reset_match(r)
        row = np.where(slot >= 0, self.row_of_slot[np.maximum(slot, 0)], -1)
        sd = np.where(row >= 0, 2 * row + np.asarray(direction, np.int64), -1)
        out = self.streams.feed(batch, sd, self.seen.reshape(-1))
        # the sessions decided / completed by the previous batch get their packet marks back to -1 (the kernel
        # lists the sessions whose mark it sets from -1)
        self.app_pkt[self._changed] = -1
        self.done_pkt[self._completed] = -1
        st = self.streams
        n = len(batch)
        changed, completed = np.empty(n, np.int64), np.empty(n, np.int64)
        n_ch, n_co = _ak.identify_packets(sd, out["lo"], out["hi"], batch.proto, st.head, st.nxt, self.seen_len,
                                          self.proto, IDS, self.app, self.done, self.fields, self.flen, self.app_pkt,
                                          self.done_pkt, changed, completed)
        changed, completed = np.sort(changed[:n_ch]), np.sort(completed[:n_co])
        self._changed, self._completed = changed, completed
        alerts = None
        if self.sigs is not None:
            alerts = self._match(batch, sd, out, completed)
        self._pkt_base += len(batch)
        return {"stream": out, "sd": sd, "alerts": alerts,
                "changed": self.slot_of_row[changed], "changed_pkt": self.app_pkt[changed],
                "completed": self.slot_of_row[completed], "completed_pkt": self.done_pkt[completed]}

    def end(self, slots: np.ndarray, release: bool = True, fields: bool = True) -> dict:
        """Sessions in ``slots`` ended: decide their application (incomplete / insufficient-data / unknown), return
        their results (:meth:`results`; ``fields=False``: only ``app``, the caller reads the fields from
        :attr:`fields` and :attr:`flen`) and ``alerts`` (hits of field signatures on fields the end completed),
        and free their rows (``release=False``: the caller frees them with :meth:`release` once it has read
        them)."""
        slots = np.asarray(slots, np.int64)
        rows = self.row_of_slot[slots]
        has = rows >= 0
        r = rows[has]
        self.ended[r] = 1
        done_before = self.done[r].copy()
        self._identify(r)
        if fields:
            res = self.results(slots)
        else:
            res = {"app": np.where(has, self.app[np.where(has, rows, 0)], APP_PENDING).astype(np.int32)}
        res["alerts"] = None
        if self.sigs is not None and self.sigs.fields is not None:
            fr = r[(self.done[r] != 0) & (done_before == 0)]
            hits = np.zeros((0, 4), np.int64)
            if fr.shape[0]:
                n_ev = self.sigs.fields.scan_fields(fr, self.fields, self.flen, *self._ev)
                if n_ev:
                    hits = self._dedupe(self._verify(n_ev, True))
            res["alerts"] = hits
        if release:
            self._free_rows(r)
        return res

    def release(self, slots: np.ndarray) -> None:
        """Free the rows of the sessions in ``slots`` (those that hold one)."""
        rows = self.row_of_slot[np.asarray(slots, np.int64)]
        self._free_rows(rows[rows >= 0])

    def results(self, slots: np.ndarray) -> dict:
        """``app`` (int32, APP_PENDING where not inspected) and each field (list of bytes or None) per slot."""
        slots = np.asarray(slots, np.int64)
        rows = self.row_of_slot[slots]
        has = rows >= 0
        app = np.full(slots.shape[0], APP_PENDING, np.int32)
        app[has] = self.app[rows[has]]
        res = {"app": app}
        fw = self.field_width
        for j, name in enumerate(FIELDS):
            vals = [None] * slots.shape[0]
            for i in np.flatnonzero(has):  # per ended session, for the logs (not per packet)
                ln = int(self.flen[rows[i], j])
                if ln >= 0:
                    vals[i] = bytes(self.fields[rows[i], j * fw:j * fw + ln])
            res[name] = vals
        return res

    def field_view(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(bytes uint8[capacity, field_width], lengths int32[capacity]) of one extracted field, per pool row."""
        j = FIELDS.index(name)
        fw = self.field_width
        return self.fields[:, j * fw:(j + 1) * fw], self.flen[:, j]

    def stats(self) -> dict:
        d = self.streams.stats()
        if self.sigs is not None:
            d["match_events_dropped"] = int(sum(lit.dropped_events for lit in (self.sigs.stream, self.sigs.fields)
                                                if lit is not None))
            d["match_stream_restarts"] = int(self.sigs.stream.resets) if self.sigs.stream is not None else 0
            d["match_bytes_not_matched"] = self.bytes_not_matched
            d["match_bytes_past_depth"] = self.bytes_past_depth
        return d

    # ------------------------------------------------------------------ signatures
    def stop_matching(self, slots: np.ndarray, stop: np.ndarray) -> None:
        """Stop (``stop`` nonzero) or resume matching the streams of the sessions in outside ``slots`` from their
        next bytes on (a firewall: the session's rule has no threat profile, so no alert of it would count)."""
        rows = self.row_of_slot[np.asarray(slots, np.int64)]
        has = rows >= 0
        self._set_matching(rows[has], (np.asarray(stop)[has] == 0).astype(np.uint8))

    def _set_matching(self, rows: np.ndarray, value) -> None:
        if rows.shape[0]:
            self.matching[rows] = value
            self._not_matching = self.matching.shape[0] - int(np.count_nonzero(self.matching))

    def _match_ranges(self, sd, out, proto):
        """(sd, lo, hi, pay, proto) of the stream scan. ``sd`` -1 where the row is not matched. Past ``match_depth``
        of a TCP direction, as Suricata past its stream.reassembly.depth, each packet's new bytes are matched on
        their own (handed to the scanner as a datagram: offsets from the packet's first new byte); a packet that
        crosses the depth is matched in the stream up to it, its bytes past it not at all."""
        lo, hi, pay = out["lo"], out["hi"], out["pay"]
        live = sd >= 0
        if self._not_matching:
            off = live & (self.matching[np.maximum(sd, 0) >> 1] == 0)
            if off.any():
                self.bytes_not_matched += int(np.maximum(hi[off] - out["lo"][off], 0).sum())
                sd = np.where(off, -1, sd)
                live &= ~off
        deep = live & (hi > self.match_depth) & (proto == 6)
        if deep.any():
            past = deep & (lo >= self.match_depth)
            cross = deep & ~past
            self.bytes_past_depth += int((hi[past] - lo[past]).sum())
            self.bytes_not_matched += int((hi[cross] - self.match_depth).sum())
            hi = np.where(cross, self.match_depth, np.where(past, hi - lo, hi))
            pay = np.where(past, pay + (lo - out["seg"]), pay)
            proto = np.where(past, np.uint8(17), proto)
            lo = np.where(past, 0, lo)
        return sd, lo, hi, pay, proto

    def _reset_match(self, rows: np.ndarray) -> None:
        from .._kernels import match as _m

        if self.sigs.stream is not None:
            self.sigs.stream.reset(np.concatenate([2 * rows, 2 * rows + 1]).astype(np.int64))
        nb = _m.N_BUFFERS
        self._ring_n[(rows[:, None] * nb + np.arange(nb)).ravel()] = 0

    def _verify(self, n_ev: int, is_field: bool) -> np.ndarray:
        from .._kernels import match as _m

        sg = self.sigs
        ev_row, ev_buf, ev_pid, ev_end, ev_pkt = self._ev
        start, users = sg.users[is_field]
        need = max(4 * n_ev, 16)
        if self._hits_cap < need:   # kept from call to call: a fresh array of a megabyte or more is a fresh mapping
            self._hits_cap = max(need, 2 * self._hits_cap)
            self._hit_event, self._hit_sig = np.empty(self._hits_cap, np.int64), np.empty(self._hits_cap, np.int32)
        out_event, out_sig = self._hit_event[:need], self._hit_sig[:need]
        k = _m.verify(ev_row, ev_buf, ev_pid, ev_end, n_ev, start, users, **sg.c, **sg.s,
                      row_client_ip=self.client_ip, row_server_ip=self.server_ip,
                      row_client_port=self.client_port, row_server_port=self.server_port, row_proto=self.proto,
                      row_app=self.app, row_seen=self.seen, ring_pid=self._ring_pid, ring_end=self._ring_end,
                      ring_n=self._ring_n, out_event=out_event, out_sig=out_sig)
        ev = out_event[:k]
        return np.stack([ev_row[ev], sg.sig_of_entry[out_sig[:k]].astype(np.int64), ev_pkt[ev],
                         ev_buf[ev].astype(np.int64)], axis=1) if k else np.zeros((0, 4), np.int64)

    def _match(self, batch, sd, out, field_rows) -> np.ndarray:
        """Alerts of this batch: int64[k, 4] rows (pool row, signature index, packet index or -1, buffer), the
        first hit of each (session, signature) only."""
        sg = self.sigs
        found = []
        if sg.stream is not None:
            start = 0
            n = len(batch)
            sd_m, lo_m, hi_m, pay_m, proto_m = self._match_ranges(sd, out, batch.proto)
            taken = np.zeros(n, np.uint8)   # each direction's consecutive segments are scanned in one call
            while start < n:
                n_ev, start = sg.stream.scan_streams(batch.data, sd_m, lo_m, hi_m, out["seg"], pay_m, proto_m,
                                                     self.streams.head, *self._ev, start, taken)
                if n_ev:
                    found.append(self._verify(n_ev, False))
        if sg.fields is not None and field_rows.shape[0]:
            n_ev = sg.fields.scan_fields(np.asarray(field_rows, np.int64), self.fields, self.flen, *self._ev)
            if n_ev:
                hits = self._verify(n_ev, True)
                hits[:, 2] = self.done_pkt[hits[:, 0]]   # the packet that completed the field
                found.append(hits)
        if not found:
            return np.zeros((0, 4), np.int64)
        return self._dedupe(np.concatenate(found))

    def _dedupe(self, hits: np.ndarray) -> np.ndarray:
        """First hit of each (session, signature); none after a drop or reject signature fired on the session (its
        packets are dropped from there on, as Suricata and PAN-OS stop inspecting a dropped session)."""
        keep = []
        sigs = self.sigs.signatures
        hits = hits[np.argsort(hits[:, 2], kind="stable")]
        for i, (r, si, pkt) in enumerate(hits[:, :3].tolist()):  # per alert, not per packet
            serial = int(self.serial[r])
            when = self._pkt_base + pkt
            fired = self._fired.setdefault(serial, set())
            if si in fired or self._blocked.get(serial, when) < when:
                self.alerts_suppressed += 1
                continue
            fired.add(si)
            if self.block_on_drop and sigs[si].action != "alert":
                self._blocked.setdefault(serial, when)
            keep.append(i)
        hits = hits[keep]
        hits[:, 0] = self.slot_of_row[hits[:, 0]]   # report outside slots
        return hits

    # ------------------------------------------------------------------ helpers
    def _identify(self, rows: np.ndarray) -> None:
        st = self.streams
        identify(rows, st.head, st.nxt, st.flags, self.proto, self.ended, self.app, self.done, self.fields,
                 self.flen, _sk.SF_HEAD_FULL)

    def _free_rows(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows, np.int64)
        if rows.shape[0] and self._fired:
            for g in self.serial[rows].tolist():   # per session ended (its alerts are forgotten with it)
                self._fired.pop(g, None)
                self._blocked.pop(g, None)
        if rows.shape[0]:
            self.row_of_slot[self.slot_of_row[rows]] = -1
            self.slot_of_row[rows] = -1
            self.streams.release(rows)


def inspect_flows(batches, *, capacity: int = 65536, head_size: int = 4096, flow_capacity: int = 1 << 18,
                  signatures=None, alerts: list | None = None) -> list[dict]:
    """Inspect every TCP/UDP flow of an iterable of parsed batches on its own (no topology, no policy).

    Returns one dict per flow: ``proto``, ``client_ip``, ``client_port``, ``server_ip``, ``server_port``,
    ``application`` (name) and the extracted fields (str, or None). ``inspector_hook(inspector, batch, res)`` is
    ``signatures`` (list of Signature): matched; each alert is appended to ``alerts`` as a dict with ``sid``,
    ``action``, ``msg`` and the flow's 5-tuple (client -> server).
    """
    table = FlowTable(flow_capacity)
    insp = Inspector(table.capacity, capacity=capacity, head_size=head_size, signatures=signatures)
    client_rev = np.zeros(table.capacity, np.uint8)
    client = np.zeros((table.capacity, 4), np.int64)
    flow_proto = np.zeros(table.capacity, np.uint8)
    flows_seen = []
    for batch in batches:
        n = len(batch)
        if not n:
            continue
        ok = (batch.status == 0) & ((batch.proto == 6) | (batch.proto == 17))
        a_ip = np.empty(n, np.uint32)
        b_ip = np.empty(n, np.uint32)
        a_p = np.empty(n, np.uint16)
        b_p = np.empty(n, np.uint16)
        rev = np.empty(n, np.uint8)
        canonical_5tuple(batch.src_ip, batch.dst_ip, batch.sport, batch.dport, a_ip, b_ip, a_p, b_p, rev)
        idx = np.flatnonzero(ok)
        slot = np.full(n, -1, np.int64)
        is_new = np.zeros(n, np.uint8)
        s_sub = np.empty(idx.shape[0], np.int64)
        n_sub = np.empty(idx.shape[0], np.uint8)
        table.lookup_or_insert(a_ip[idx], b_ip[idx], a_p[idx], b_p[idx], batch.proto[idx], None, batch.ts_ns[idx],
                               batch.wirelen[idx], s_sub, n_sub)
        slot[idx] = s_sub
        is_new[idx] = n_sub
        first = np.flatnonzero(is_new != 0)
        if first.shape[0]:
            fs = slot[first]
            synack = (batch.proto[first] == 6) & ((batch.tcp_flags[first] & 0x12) == 0x12)
            client_rev[fs] = rev[first] ^ synack.astype(np.uint8)
            c_ip = np.where(synack, batch.dst_ip[first], batch.src_ip[first])
            s_ip = np.where(synack, batch.src_ip[first], batch.dst_ip[first])
            c_p = np.where(synack, batch.dport[first], batch.sport[first])
            s_p = np.where(synack, batch.sport[first], batch.dport[first])
            client[fs] = np.stack([c_ip, c_p, s_ip, s_p], axis=1)
            flow_proto[fs] = batch.proto[first]
            flows_seen.append(np.stack([fs, batch.proto[first].astype(np.int64), c_ip.astype(np.int64),
                                        c_p.astype(np.int64), s_ip.astype(np.int64), s_p.astype(np.int64)], 1))
        direction = rev ^ client_rev[np.maximum(slot, 0)]
        res = insp.process(batch, slot, is_new, direction)
        _collect(alerts, res["alerts"], signatures, client, flow_proto)
    if not flows_seen:
        return []
    seen = np.concatenate(flows_seen)
    # a slot reused by a later flow would need end-of-session handling; standalone runs keep every flow
    res = insp.end(seen[:, 0])
    _collect(alerts, res["alerts"], signatures, client, flow_proto)
    out = []
    for i, (s, proto, c_ip, c_p, s_ip, s_p) in enumerate(seen.tolist()):
        rec = {"proto": proto, "client_ip": str(ipaddress.IPv4Address(c_ip)), "client_port": c_p,
               "server_ip": str(ipaddress.IPv4Address(s_ip)), "server_port": s_p,
               "application": APPLICATIONS[int(res["app"][i])] if res["app"][i] != APP_PENDING else None}
        for name in FIELDS:
            v = res[name][i]
            rec[name] = None if v is None else v.decode("latin-1")
        out.append(rec)
    return out


def _collect(alerts, hits, signatures, client, flow_proto) -> None:
    if alerts is None or hits is None:
        return
    for s, si, _pkt, _buf in hits.tolist():  # per alert
        sig = signatures[si]
        c_ip, c_p, s_ip, s_p = client[s].tolist()
        alerts.append({"sid": sig.sid, "action": sig.action, "msg": sig.msg, "proto": int(flow_proto[s]),
                       "client_ip": str(ipaddress.IPv4Address(c_ip)), "client_port": c_p,
                       "server_ip": str(ipaddress.IPv4Address(s_ip)), "server_port": s_p})
