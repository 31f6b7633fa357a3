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

from .._kernels import stream as _sk
from .._kernels.flowtable import FlowTable, canonical_5tuple
from .appid import FIELDS, identify
from .applications import APP_PENDING, APPLICATIONS
from .stream import StreamTable

__all__ = ["Inspector", "inspect_flows"]


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
    """

    def __init__(self, slots: int, capacity: int = 8192, head_size: int = 4096, field_width: int = 256):
        self.streams = StreamTable(capacity, head_size)
        self.row_of_slot = np.full(int(slots), -1, np.int64)
        cap = self.streams.capacity
        self.slot_of_row = np.full(cap, -1, np.int64)
        self.proto = np.zeros(cap, np.uint8)
        self.app = np.zeros(cap, np.int32)
        self.done = np.zeros(cap, np.uint8)
        self.ended = np.zeros(cap, np.uint8)
        self.field_width = int(field_width)
        self.fields = np.zeros((cap, len(FIELDS) * self.field_width), np.uint8)
        self.flen = np.full((cap, len(FIELDS)), -1, np.int32)

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
        dict with ``stream`` (the stream kernel's per-packet outputs), ``sd`` (int64[n]), ``changed`` (outside
        slots whose application was decided in this batch) and ``rows`` (pool rows touched).
        """
        slot = np.asarray(slot, np.int64)
        new_rows = np.flatnonzero((np.asarray(is_new) != 0) & (slot >= 0))
        if new_rows.shape[0]:
            # a slot restarting a session lets go of the old session's row first
            new_slots = np.unique(slot[new_rows])
            old = self.row_of_slot[new_slots]
            self._free_rows(old[old >= 0])
            rows = self.streams.allocate(new_slots.shape[0])
            self.row_of_slot[new_slots] = rows
            got = rows >= 0
            r = rows[got]
            self.slot_of_row[r] = new_slots[got]
            first = new_rows[np.unique(slot[new_rows], return_index=True)[1]]
            self.proto[r] = batch.proto[first][got]
            self.app[r] = APP_PENDING
            self.done[r] = 0
            self.ended[r] = 0
            self.flen[r] = -1
        row = np.where(slot >= 0, self.row_of_slot[np.maximum(slot, 0)], -1)
        sd = np.where(row >= 0, 2 * row + np.asarray(direction, np.int64), -1)
        out = self.streams.feed(batch, sd)
        touched = np.unique(row[(row >= 0) & (out["pay"] >= 0)])
        pending = touched[(self.app[touched] == APP_PENDING) | (self.done[touched] == 0)]
        before = self.app[pending].copy()
        if pending.shape[0]:
            self._identify(pending)
        changed = pending[self.app[pending] != before]
        return {"stream": out, "sd": sd, "rows": touched, "changed": self.slot_of_row[changed]}

    def end(self, slots: np.ndarray) -> dict:
        """Sessions in ``slots`` ended: decide their application (incomplete / insufficient-data / unknown), return
        their results (:meth:`results`) and free their rows."""
        slots = np.asarray(slots, np.int64)
        rows = self.row_of_slot[slots]
        has = rows >= 0
        r = rows[has]
        self.ended[r] = 1
        self._identify(r)
        res = self.results(slots)
        self._free_rows(r)
        return res

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
        return self.streams.stats()

    # ------------------------------------------------------------------ helpers
    def _identify(self, rows: np.ndarray) -> None:
        st = self.streams
        identify(rows, st.head, st.nxt, st.flags, self.proto, self.ended, self.app, self.done, self.fields,
                 self.flen, _sk.SF_HEAD_FULL)

    def _free_rows(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows, np.int64)
        if rows.shape[0]:
            self.row_of_slot[self.slot_of_row[rows]] = -1
            self.slot_of_row[rows] = -1
            self.streams.release(rows)


def inspect_flows(batches, *, capacity: int = 65536, head_size: int = 4096, flow_capacity: int = 1 << 18,
                  inspector_hook=None) -> list[dict]:
    """Inspect every TCP/UDP flow of an iterable of parsed batches on its own (no topology, no policy).

    Returns one dict per flow: ``proto``, ``client_ip``, ``client_port``, ``server_ip``, ``server_port``,
    ``application`` (name) and the extracted fields (str, or None). ``inspector_hook(inspector, batch, res)`` is
    called after each batch (the signature matcher hooks in there).
    """
    table = FlowTable(flow_capacity)
    insp = Inspector(table.capacity, capacity=capacity, head_size=head_size)
    client_rev = np.zeros(table.capacity, np.uint8)
    client = np.zeros((table.capacity, 4), np.int64)
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
            flows_seen.append(np.stack([fs, batch.proto[first].astype(np.int64), c_ip.astype(np.int64),
                                        c_p.astype(np.int64), s_ip.astype(np.int64), s_p.astype(np.int64)], 1))
        direction = rev ^ client_rev[np.maximum(slot, 0)]
        res = insp.process(batch, slot, is_new, direction)
        if inspector_hook is not None:
            inspector_hook(insp, batch, res)
    if not flows_seen:
        return []
    seen = np.concatenate(flows_seen)
    # a slot reused by a later flow would need end-of-session handling; standalone runs keep every flow
    res = insp.end(seen[:, 0])
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
