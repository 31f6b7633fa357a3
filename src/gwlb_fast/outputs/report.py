"""Counters, the end-of-run summary and the flow log (DESIGN.md section 7)."""
from __future__ import annotations

import csv
import io
import json
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..status import N_STATUS, describe_counts
from .outfiles import OutputFile


def ip_str(a: int) -> str:
    return socket.inet_ntoa(struct.pack("!I", int(a) & 0xFFFFFFFF))


def ip_strs(col: np.ndarray) -> list[str]:
    """Dotted quads for a uint32 column (vectorized through one bytes view)."""
    col = np.ascontiguousarray(col, dtype=">u4")
    raw = col.view(np.uint8).reshape(-1, 4)
    return [f"{a}.{b}.{c}.{d}" for a, b, c, d in raw.tolist()]


class StageCounters:
    """Per-stage drops by reason (``int64[N_STATUS]``)."""

    def __init__(self, name: str):
        self.name = name
        self.drops = np.zeros(N_STATUS, np.int64)

    def add_drops(self, status: np.ndarray) -> None:
        if status.size:
            self.drops += np.bincount(status, minlength=N_STATUS)[:N_STATUS]
        self.drops[0] = 0

    @property
    def dropped(self) -> int:
        return int(self.drops.sum())

    def as_dict(self) -> dict:
        return describe_counts(self.drops)


#: policies of up to this many rules have every rule in the summary's rule hits, those that took no session too
RULES_LISTED_WHOLE = 20


@dataclass
class Summary:
    """What a run did. ``str(summary)`` is the human summary; ``summary.as_dict()`` the JSON one."""

    packets_in: int = 0
    bytes_in: int = 0
    packets_out: int = 0
    bytes_out: int = 0
    generated: int = 0
    truncated: int = 0  # packets cut by a snaplen, processed as captured (not drops)
    ip_checksums_filled: int = 0  # IPv4 header checksums left to the NIC (0 in a sender-side capture), filled
    seconds: float = 0.0
    capture_seconds: float = 0.0
    drops: dict[str, dict[str, int]] = field(default_factory=dict)
    firewalls: dict[str, dict[str, int]] = field(default_factory=dict)
    rules: dict[str, int] = field(default_factory=dict)
    nat: dict[str, int] = field(default_factory=dict)
    events: list[dict] = field(default_factory=list)
    input_error: str | None = None
    input_skipped_bytes: int = 0
    input_skipped_records: int = 0
    out_of_order: int = 0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    hints: list[str] = field(default_factory=list)
    replay: dict[str, int] = field(default_factory=dict)
    workers: int = 1  # flow shards (run --workers): each with 1/workers of every flow table and SNAT port range
    #: later fragments to or from a NAT gateway's public address that came before their first fragment (or
    #: without one): with several shards, sharded by their addresses alone, so they may miss their flow's shard
    shard_fragment_misses: int = 0
    #: content inspection (only when the policy inspects): counters, top applications, categories and threats
    inspection: dict = field(default_factory=dict)

    @property
    def dropped(self) -> int:
        return sum(sum(v.values()) for v in self.drops.values())

    @property
    def mpps(self) -> float:
        return self.packets_in / self.seconds / 1e6 if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["dropped"] = self.dropped
        d["mpps"] = round(self.mpps, 3)
        return d

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2, sort_keys=False)

    def __str__(self) -> str:
        out = io.StringIO()
        w = out.write
        w(f"packets in   {self.packets_in:>12,}   bytes in   {self.bytes_in:>15,}\n")
        w(f"packets out  {self.packets_out:>12,}   bytes out  {self.bytes_out:>15,}\n")
        if self.generated:
            w(f"generated    {self.generated:>12,}   (TCP resets sent by firewalls)\n")
        if self.truncated:
            w(f"truncated    {self.truncated:>12,}   (cut by the capture's snaplen, processed as captured)\n")
        w(f"dropped      {self.dropped:>12,}\n")
        for stage, reasons in self.drops.items():
            for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1]):
                w(f"  {stage:<10} {reason:<22} {n:>12,}\n")
        if self.firewalls:
            w("firewalls                flows      packets\n")
            for name, c in self.firewalls.items():
                state = c.get("state", "")
                w(f"  {name:<18} {c.get('flows', 0):>10,} {c.get('packets', 0):>12,}  {state}\n")
        if self.rules:
            w("rule hits (sessions)\n")
            # a long policy (a firewall's hundreds of rules) lists the rules that took sessions, in policy order
            quiet = len(self.rules) > RULES_LISTED_WHOLE
            for name, n in self.rules.items():
                if n or not quiet:
                    w(f"  {name:<30} {n:>12,}\n")
            idle = sum(1 for n in self.rules.values() if not n)
            if quiet and idle:
                w(f"  ({idle:,} more rule(s) took no session; --json lists every rule)\n")
        if self.nat:
            w("nat gateway\n")
            items = [(k.replace("_packets", "").replace("_", " "), v) for k, v in self.nat.items()]
            for i in range(0, len(items), 3):
                w("  " + "".join(f"{k:<20}{v:>12,}    " for k, v in items[i : i + 3]).rstrip() + "\n")
        shown = {k: v for k, v in self.replay.items() if k != "pickup" and v}
        if shown or self.replay.get("pickup"):
            w("replay" + ("       pickup on" if self.replay.get("pickup") else "") + "\n")
            items = [(k.replace("_packets", "").replace("_", " "), v) for k, v in shown.items()]
            for i in range(0, len(items), 3):
                w("  " + "".join(f"{k:<20}{v:>12,}    " for k, v in items[i : i + 3]).rstrip() + "\n")
        for ev in self.events:
            what = ev.get("state") or ev.get("event")
            cause = f" ({ev['cause']})" if ev.get("cause") else ""
            w(f"event        t={ev['at']:.3f}s {ev['firewall']} -> {what}{cause}\n")
        if self.inspection:
            ins = self.inspection
            for title, key in (("top applications (sessions)", "applications"), ("top URL categories (events)",
                               "categories"), ("top threats (alerts)", "threats")):
                if ins.get(key):
                    w(title + "\n")
                    for name, n in ins[key]:
                        w(f"  {name:<40} {n:>12,}\n")
        if self.stage_seconds:
            w("time per stage  " + "  ".join(f"{k} {v:.3f}s" for k, v in self.stage_seconds.items()) + "\n")
        if self.workers > 1:
            w(f"workers      {self.workers:>12}   (flow shards; each holds 1/{self.workers} of every flow table and "
              f"SNAT port range; time per stage adds theirs)\n")
            if self.shard_fragment_misses:
                w(f"  {self.shard_fragment_misses:,} later fragment(s) on the public side came before their first "
                  f"fragment: sharded by their addresses, they may have missed their flow's shard (--workers 1 "
                  f"replays them with their flow)\n")
        w(f"elapsed      {self.seconds:.3f} s  ({self.mpps:.2f} Mpps)\n")
        if self.input_skipped_records:
            w(f"input skipped {self.input_skipped_bytes:,} bytes at {self.input_skipped_records:,} corrupt "
              f"record(s) (resynchronised on the next valid record)\n")
        if self.out_of_order:
            w(f"out of order {self.out_of_order:,} packets written after a later one (capture disorder beyond "
              f"the reorder window)\n")
        if self.input_error:
            w(f"input error  {self.input_error}\n")
        for line in self.hints:
            w(line + "\n")
        return out.getvalue()


FLOW_LOG_FIELDS = (
    "src_ip", "src_port", "dst_ip", "dst_port", "proto", "direction", "endpoint", "firewall", "rule", "action",
    "nat_ip", "nat_port", "packets", "bytes", "packets_reply", "bytes_reply", "first_seen", "last_seen",
    "end_reason", "application", "host", "sni", "url", "category",
)


_LOCAL_END = ("aged-out", "evicted", "end-of-run")


class DropLog:
    """Flow-log records of the flows that no firewall session records (DESIGN.md section 10: a record for every
    flow): flows dropped without a session, and flows delivered without inspection (inside their subnet, or by a
    route that bypasses the GWLBe, such as a VPC's implicit local route).

    Their packets are aggregated per conversation (canonical 5-tuple) in a bounded
    :class:`~gwlb_fast._kernels.flowtable.FlowTable`, batch by batch: the client is the sender of the conversation's
    first packet (with pickup, the side :class:`~gwlb_fast.replay.FlowSides` names), packets and bytes are counted
    per direction. A dropped conversation has action ``drop`` and the end reason of its first packet's drop
    (``tcp-not-syn``, ``no-route``, ``nat-no-mapping``, ...); a delivered one (status ``OK``) action ``forward`` and
    ``aged-out``, ``evicted`` or ``end-of-run``. A record is written when its conversation idles out (the GWLB's
    timeouts, 350 s for TCP and 120 s for others), when the table needs its slot, or at the end of the run.

    Parameters
    ----------
    direction_of : callable
        ``bool[k]`` per client address: True for outbound (client inside a VPC).
    firewall_names : list of str, optional
        Firewall index -> name for drops at a firewall (``TCP_NOT_SYN``).
    capacity : int
        Conversations held at once.
    """

    def __init__(self, direction_of, firewall_names=None, capacity: int = 1 << 16):
        from .._kernels.flowtable import FlowTable
        from .._kernels.heap import zeroed

        self._direction_of = direction_of
        self._fw_names = firewall_names
        self.table = FlowTable(capacity, evict="oldest-idle")
        cap = self.table.capacity
        self.client_rev = np.zeros(cap, np.uint8)
        self.reason = np.zeros(cap, np.uint8)
        self.fw = np.full(cap, -1, np.int16)
        self.packets = zeroed((cap, 2), np.int64)  # [slot, 0] client to server, [slot, 1] back
        self.bytes = zeroed((cap, 2), np.int64)
        self.now_ns: int | None = None
        self._pending: list[dict[str, list]] = []

    def add(self, src_ip, dst_ip, sport, dport, proto, ts_ns, nbytes, status, fw, sender_is_server=None) -> None:
        """Account packets (columns of equal length, in time order; ``status`` their drop reason, ``OK`` for
        packets delivered without inspection) to their conversations."""
        from .._kernels.flowtable import END_EVICTED
        from ..replay import flow_keys

        m = src_ip.shape[0]
        if m == 0:
            return
        a_ip, b_ip, a_pt, b_pt, rev = flow_keys(src_ip, dst_ip, sport, dport)
        ts = np.ascontiguousarray(ts_ns, np.int64)
        self.expire(int(ts.min()))
        slot = np.empty(m, np.int64)
        is_new = np.empty(m, np.uint8)
        self.table.lookup_or_insert(a_ip, b_ip, a_pt, b_pt, np.ascontiguousarray(proto, np.uint8), None, ts,
                                    np.ascontiguousarray(nbytes, np.uint32), slot, is_new)
        ended, recs, why = self.table.take_ended()
        if ended.size:
            self._emit(ended, recs, np.where(why == END_EVICTED, 1, 0))
        live = slot >= 0
        start = np.flatnonzero(live & (is_new != 0))
        if start.size:
            # the first packet of each new conversation sets its client, reason and firewall (a slot restarted
            # twice in one call keeps its last start: later rows come last in the fancy assignment)
            s0 = slot[start]
            first_rev = rev[start]
            if sender_is_server is not None:
                first_rev = first_rev ^ np.asarray(sender_is_server, bool)[start].astype(np.uint8)
            self.client_rev[s0] = first_rev
            self.reason[s0] = np.asarray(status)[start]
            self.fw[s0] = np.asarray(fw)[start]
            self.packets[s0] = 0
            self.bytes[s0] = 0
        sl = slot[live]
        back = (rev[live] != self.client_rev[sl]).astype(np.intp)
        np.add.at(self.packets, (sl, back), 1)
        np.add.at(self.bytes, (sl, back), np.asarray(nbytes, np.int64)[live])
        self.now_ns = int(ts.max()) if self.now_ns is None else max(self.now_ns, int(ts.max()))

    def expire(self, now_ns: int, full: bool = False) -> None:
        slots, recs = self.table.expire_all(now_ns) if full else self.table.expire(now_ns, 4096)
        if slots.size:
            self._emit(slots, recs, 0)

    def take(self, now_ns: int | None = None) -> dict[str, list]:
        """Records of the conversations that ended so far (flow-log columns, FLOW_LOG_FIELDS)."""
        if now_ns is not None:
            self.expire(now_ns)
        return self._columns()

    def finish(self) -> dict[str, list]:
        """End of run: every conversation still held ends (idle ones as they would have, the rest now)."""
        if self.now_ns is not None:
            self.expire(self.now_ns, full=True)
        slots, recs = self.table.drain()
        if slots.size:
            self._emit(slots, recs, 2)
        return self._columns()

    def _emit(self, slots: np.ndarray, recs: np.ndarray, why) -> None:
        """Records of ended conversations; ``why`` (per slot or one value) says how a local one ended: 0 idle
        timeout, 1 evicted, 2 end of run."""
        from ..status import PktStatus

        k = slots.shape[0]
        reason = self.reason[slots]
        local = reason == PktStatus.OK
        ends = np.broadcast_to(np.asarray(why), (k,)).tolist()
        c_rev = self.client_rev[slots].astype(bool)
        cip = np.where(c_rev, recs["b_ip"], recs["a_ip"])
        sip = np.where(c_rev, recs["a_ip"], recs["b_ip"])
        cport = np.where(c_rev, recs["b_port"], recs["a_port"])
        sport = np.where(c_rev, recs["a_port"], recs["b_port"])
        outbound = self._direction_of(cip)
        names = {int(c): PktStatus(int(c)).name.lower().replace("_", "-") if int(c) in PktStatus._value2member_map_
                 else f"status-{int(c)}" for c in np.unique(self.reason[slots]).tolist()}
        fw = self.fw[slots].tolist()
        fw_names = self._fw_names
        self._pending.append({
            "src_ip": ip_strs(cip), "src_port": cport.tolist(), "dst_ip": ip_strs(sip), "dst_port": sport.tolist(),
            "proto": recs["proto"].tolist(),
            "direction": ["outbound" if o else "inbound" for o in outbound.tolist()],
            "endpoint": [None] * k,
            "firewall": [fw_names[f] if fw_names is not None and 0 <= f < len(fw_names) else None for f in fw],
            "rule": [None] * k, "action": ["forward" if x else "drop" for x in local.tolist()],
            "nat_ip": [None] * k, "nat_port": [None] * k,
            "packets": self.packets[slots, 0].tolist(), "bytes": self.bytes[slots, 0].tolist(),
            "packets_reply": self.packets[slots, 1].tolist(), "bytes_reply": self.bytes[slots, 1].tolist(),
            "first_seen": (recs["first_seen"] / 1e9).tolist(), "last_seen": (recs["last_seen"] / 1e9).tolist(),
            "end_reason": [_LOCAL_END[e] if c == 0 else names[c] for c, e in zip(reason.tolist(), ends)],
            # dropped before any session: never inspected
            "application": [None] * k, "host": [None] * k, "sni": [None] * k, "url": [None] * k,
            "category": [None] * k,
        })

    def _columns(self) -> dict[str, list]:
        if not self._pending:
            return {}
        out = {f: [v for p in self._pending for v in p[f]] for f in FLOW_LOG_FIELDS}
        self._pending = []
        return out


class FlowLogWriter:
    """One record per session, to ``.jsonl`` or ``.csv`` (chosen by the file's suffix).

    The file is written under a temporary name beside ``path`` and renamed into place by :meth:`close`
    (:meth:`abort` removes it instead). A bad suffix raises ConfigError before anything is created.
    """

    @staticmethod
    def check_path(path) -> str:
        """The suffix (``.jsonl`` or ``.csv``) of a flow-log path, or ConfigError."""
        suffix = Path(path).suffix.lower()
        if suffix not in (".jsonl", ".csv"):
            raise ConfigError(f"{path}: flow log must end in .jsonl or .csv")
        return suffix

    def __init__(self, path):
        self.path = Path(path)
        suffix = self.check_path(self.path)
        self._out = OutputFile(self.path, text=True)
        self._fh = self._out.file
        self._csv = None
        if suffix == ".csv":
            self._csv = csv.writer(self._fh)
            self._csv.writerow(FLOW_LOG_FIELDS)
        self.records = 0

    def write(self, columns: dict[str, list]) -> None:
        """Write records given as equal-length lists per field of FLOW_LOG_FIELDS."""
        n = len(columns["src_ip"]) if columns else 0
        if not n:
            return
        cols = [columns[f] for f in FLOW_LOG_FIELDS]
        if self._csv is not None:
            self._csv.writerows(zip(*cols))
        else:
            dumps = json.dumps
            self._fh.writelines(dumps(dict(zip(FLOW_LOG_FIELDS, row))) + "\n" for row in zip(*cols))
        self.records += n

    def close(self) -> None:
        """Finish the file and rename it into place."""
        self._out.commit()

    def abort(self) -> None:
        """Remove the unfinished file; the destination is left as it was."""
        self._out.discard()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        if exc_type is None:
            self.close()
        else:
            self.abort()


class ThreatLogWriter:
    """``run --threat-log``: one JSON record per signature alert or URL event (DESIGN.md section 12), written under
    a temporary name and renamed into place by :meth:`close` (:meth:`abort` removes it), as the flow log."""

    @staticmethod
    def check_path(path) -> None:
        if Path(path).suffix.lower() != ".jsonl":
            raise ConfigError(f"{path}: threat log must end in .jsonl")

    def __init__(self, path):
        self.path = Path(path)
        self.check_path(self.path)
        self._out = OutputFile(self.path, text=True)
        self._fh = self._out.file
        self.records = 0

    def write(self, records: list[dict]) -> None:
        if records:
            self._fh.writelines(json.dumps(r) + "\n" for r in records)
            self.records += len(records)

    def close(self) -> None:
        self._out.commit()

    def abort(self) -> None:
        self._out.discard()


class Progress:
    """A one-line progress indicator on a terminal (stderr); silent elsewhere or when quiet."""

    def __init__(self, total_bytes: int | None, quiet: bool = False, stream=None):
        self.stream = stream or sys.stderr
        self.enabled = not quiet and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.total = total_bytes
        self.start = time.perf_counter()
        self._last = 0.0

    def update(self, packets: int, done_bytes: int | None = None) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self._last < 0.2:
            return
        self._last = now
        rate = packets / max(now - self.start, 1e-9) / 1e6
        if self.total and done_bytes is not None:
            frac = min(done_bytes / self.total, 1.0)
            bar = "#" * int(frac * 30)
            msg = f"\r[{bar:<30}] {frac * 100:5.1f}%  {packets:,} packets  {rate:.2f} Mpps"
        else:
            msg = f"\r{packets:,} packets  {rate:.2f} Mpps"
        self.stream.write(msg)
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r" + " " * 78 + "\r")
            self.stream.flush()


class UnmatchedHint:
    """Pipeline observer: the /24s of the packets that matched no subnet or route (``NO_ROUTE`` at the route stage),
    counted batched per chunk. :meth:`line` is the one-line hint ``run`` prints when they are more than
    ``threshold`` of the packets."""

    def __init__(self, capture=None, threshold: float = 0.10):
        self.capture = capture
        self.threshold = threshold
        self.unmatched = 0
        self._nets: dict[int, int] = {}

    def chunk(self, pipe, batch, res) -> None:
        from ..pipeline import S_ROUTE
        from ..status import PktStatus

        rows = np.flatnonzero((res.stage == S_ROUTE) & (res.status == PktStatus.NO_ROUTE))
        if rows.size == 0:
            return
        self.unmatched += int(rows.size)
        sub = batch[rows].copy().parse()  # the packets as captured (the walk may have rewritten its copy)
        addrs = np.concatenate([sub.src_ip, sub.dst_ip])
        inside = np.zeros(addrs.size, bool)
        for r in pipe.routers:
            inside |= r.subnet_of(addrs) >= 0
        nets, counts = np.unique(addrs[~inside] >> np.uint32(8), return_counts=True)
        for k, c in zip(nets.tolist(), counts.tolist()):
            self._nets[k] = self._nets.get(k, 0) + c

    def from_summary(self, summary, topology, capture) -> None:
        """For a run whose packets this observer did not see (``run --workers N``): the unmatched count from the
        summary and, when it calls for the hint, the /24s of the capture's addresses that lie in no subnet, from one
        more streamed pass (parse and subnet lookups, batched)."""
        from ..config import load_topology
        from ..pcapio import read_pcap
        from ..stages.vpc import VpcRouter

        self.unmatched = int(summary.drops.get("route", {}).get("NO_ROUTE", 0))
        if self.line(summary.packets_in) is None:
            return
        routers = [VpcRouter(v) for v in load_topology(topology).vpcs.values()]
        for b in read_pcap(capture, strict=False):
            ok = b.status == 0
            addrs = np.concatenate([b.src_ip[ok], b.dst_ip[ok]])
            inside = np.zeros(addrs.size, bool)
            for r in routers:
                inside |= r.subnet_of(addrs) >= 0
            nets, counts = np.unique(addrs[~inside] >> np.uint32(8), return_counts=True)
            for k, c in zip(nets.tolist(), counts.tolist()):
                self._nets[k] = self._nets.get(k, 0) + c

    def top(self, k: int = 3) -> list[tuple[str, int]]:
        items = sorted(self._nets.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
        return [(f"{ip_str(n << 8)}/24", c) for n, c in items]

    def line(self, packets_in: int) -> str | None:
        if packets_in == 0 or self.unmatched <= self.threshold * packets_in:
            return None
        top = ", ".join(f"{n} ({c:,})" for n, c in self.top())
        cap = self.capture if self.capture is not None else "CAPTURE"
        return (f"hint: {self.unmatched:,} of {packets_in:,} packets ({100 * self.unmatched / packets_in:.0f}%) "
                f"match no subnet or route; top unmatched /24s: {top or 'none'}; the topology does not describe "
                f"this capture: `gwlb-fast init {cap} -o topology.yaml` writes one that does")
