"""``run --report FILE.html``: one self-contained page of charts about a run (DESIGN.md section 11).

A :class:`ReportCollector` observes a run (``Pipeline.run(observers=...)``) and counts, batched per chunk
(``np.bincount`` over time bins), what the summary counts: per firewall the packets and bytes the GWLB forwarded
and the flows it placed (from the GWLB's opt-in activity log, the same rows its counters count), drops by stage and
reason, what each health event did (flows lost, moved, placed until the next event), rule hits, top talkers and
services (from the firewall sessions), NAT ports in use over time. The numbers live in a :class:`ReportState`
(numpy arrays and dicts), the one home of what a report counts: ``run --workers N`` has each flow shard collect
one and send it to the parent with its summary, which merges them (:meth:`ReportState.merge`) and writes one page.
The page is written at the end: matplotlib charts as inline SVG, tables with the numbers, and the same numbers as
JSON in a ``<script type="application/json" id="report-data">`` block; no script runs and nothing is fetched, so
it opens offline.
"""
from __future__ import annotations

import html
import io
import json
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..status import N_STATUS, PktStatus
from .report import ip_str

_NS = 1_000_000_000
MAX_BINS = 400
DROP_STAGES = 5  # input, route, nat, gwlb, firewall (pipeline.STAGES): the drop series' keys are stage * N_STATUS + code


def _halve(counts: np.ndarray, times: int) -> np.ndarray:
    """``counts`` (bins x keys) with neighbouring bins merged ``times`` times: bins twice as wide each time, from the
    same origin (so the result equals counting at the wider width in the first place)."""
    for _ in range(times):
        c = counts
        counts = np.zeros_like(c)
        counts[: MAX_BINS // 2] = c[0::2] + c[1::2]
    return counts


class TimeBins:
    """Counts per (time bin, key), for times relative to ``t0``; the bin width doubles (neighbouring bins merge) as
    the capture grows, so at most ``MAX_BINS`` bins are held whatever its length."""

    def __init__(self, nkeys: int, width_ns: int = 10_000_000):
        self.nkeys = nkeys
        self.width = width_ns
        self.counts = np.zeros((MAX_BINS, nkeys), np.float64)
        self.t0: int | None = None

    def add(self, ts: np.ndarray, key: np.ndarray, weights: np.ndarray | None = None) -> None:
        if ts.size == 0:
            return
        if self.t0 is None:
            self.t0 = int(ts.min())
        rel = np.maximum(ts.astype(np.int64) - self.t0, 0)
        while int(rel.max()) // self.width >= MAX_BINS:
            self.widen(self.width * 2)
        b = rel // self.width
        flat = np.bincount(b * self.nkeys + key.astype(np.int64), weights=weights, minlength=MAX_BINS * self.nkeys)
        self.counts += flat[: MAX_BINS * self.nkeys].reshape(MAX_BINS, self.nkeys)

    def widen(self, width: int) -> None:
        """Bins of ``width`` (this width times a power of two) from now on, the counts so far merged into them."""
        times = 0
        while self.width << times < width:
            times += 1
        if self.width << times != width:
            raise ValueError(f"TimeBins: width {width} ns is not {self.width} ns times a power of two")
        self.counts = _halve(self.counts, times)
        self.width = width

    def used(self) -> int:
        nz = np.flatnonzero(self.counts.any(axis=1))
        return int(nz[-1]) + 1 if nz.size else 0

    def times(self, n: int) -> np.ndarray:
        """Left edge of the first ``n`` bins, seconds after ``t0``."""
        return np.arange(n) * self.width / _NS


class ReportState:
    """What a report counts, for one pipeline: a whole run, or one flow shard of ``run --workers N``; the shards'
    states add up with :meth:`merge`.

    What merges exactly (the sum of the shards' equals one pipeline's on the same packets): every time series, since
    every shard takes the bin origin from the capture's clock (``origin``: the pipeline's ``first_ts`` when the
    first chunk came, the origin of the events' times too; each shard follows the whole capture's timestamps, not
    its own packets'), and a shard whose bins stayed narrower has them merged into the widest, which is what one
    pipeline would have counted; the totals; what each event did (a shard's counters between the event and the
    next; a shard with no packet after an event never applies it, and had nothing to count after it); the top
    talkers and services (every host and service summed before the top ten are taken). What is sampled, not
    counted: the NAT ports in use, taken at the end of each chunk on the capture's clock (a shard's chunk is its
    rows of the ``N * chunk`` packets the parent read); the merge adds the shards' step functions (a shard's count
    holds until its next sample, and it changes only with its packets) at every time one of them sampled, which
    is one pipeline's count at the end of each of the parent's chunks, but with ``1/N`` as many samples as one
    worker reading ``chunk`` packets at a time takes (and none between a chunk's events).
    """

    SERIES = ("pkts", "bytes", "flows", "drops")

    def __init__(self, fw_names=(), nat_names=()):
        self.fw_names = list(fw_names)
        self.nat_names = list(nat_names)
        k = max(1, len(self.fw_names))
        self.origin: int | None = None  # ns: the bins' origin
        self.first_ts: int | None = None  # ns: the capture's first packet, as known at the end (the times' zero)
        self.pkts, self.bytes, self.flows = TimeBins(k), TimeBins(k), TimeBins(k)
        self.drops = TimeBins(DROP_STAGES * N_STATUS)
        self.nat_ts: list[int] = []  # ns: when each NAT sample was taken ...
        self.nat_ports: list[list[int]] = []  # ... and the SNAT ports in use on each gateway then
        self.effects: list[dict] = []  # per health event: flows lost and moved, packets lost, flows placed
        self.talkers: dict[int, int] = {}  # host -> bytes of its sessions
        self.services: dict[tuple[int, int], list[int]] = {}  # (proto, server port) -> [sessions, bytes]

    # ------------------------------------------------------------------ counting
    def add(self, series: str, ts: np.ndarray, key: np.ndarray, weights: np.ndarray | None = None) -> None:
        """Count ``ts`` under ``key`` (optionally weighted) in one of ``SERIES``; every series keeps one origin and
        one bin width."""
        if ts.size == 0:
            return
        if self.origin is None:
            self.origin = int(ts.min())
        for b in self._bins():
            if b.t0 is None:
                b.t0 = self.origin
        getattr(self, series).add(ts, key, weights)
        w = max(b.width for b in self._bins())
        for b in self._bins():
            b.widen(w)

    def add_nat(self, ts: int, ports: list[int]) -> None:
        self.nat_ts.append(int(ts))
        self.nat_ports.append([int(p) for p in ports])

    def add_sessions(self, s: np.ndarray) -> None:
        """Ended firewall sessions (the flow table's records): their bytes per host and per service."""
        if s.shape[0] == 0:
            return
        total = (s["bytes_c2s"] + s["bytes_s2c"]).astype(np.int64)
        ips = np.concatenate([s["client_ip"], s["server_ip"]])
        w = np.concatenate([total, total])
        u, inv = np.unique(ips, return_inverse=True)
        sums = np.bincount(inv.reshape(-1), weights=w)
        for ip, b in zip(u.tolist(), sums.tolist()):
            self.talkers[ip] = self.talkers.get(ip, 0) + int(b)
        key = s["proto"].astype(np.int64) * 65536 + np.where(s["proto"] == 1, 0, s["server_port"])
        u, inv = np.unique(key, return_inverse=True)
        n = np.bincount(inv.reshape(-1))
        byt = np.bincount(inv.reshape(-1), weights=total)
        for kk, c, b in zip(u.tolist(), n.tolist(), byt.tolist()):
            e = self.services.setdefault((kk >> 16, kk & 0xFFFF), [0, 0])
            e[0] += c
            e[1] += int(b)

    def _bins(self) -> tuple[TimeBins, ...]:
        return tuple(getattr(self, s) for s in self.SERIES)

    # ------------------------------------------------------------------ between processes
    def as_dict(self) -> dict:
        """Plain numpy arrays, lists and dicts (what a worker sends its parent); the bins only up to the last one
        used."""
        n = max(b.used() for b in self._bins())
        return {"fw_names": self.fw_names, "nat_names": self.nat_names, "origin": self.origin,
                "first_ts": self.first_ts, "width": self.pkts.width,
                "counts": {s: getattr(self, s).counts[:n].copy() for s in self.SERIES},
                "nat_ts": np.array(self.nat_ts, np.int64),
                "nat_ports": np.array(self.nat_ports, np.int64).reshape(len(self.nat_ts), len(self.nat_names)),
                "effects": self.effects, "talkers": self.talkers, "services": self.services}

    @classmethod
    def from_dict(cls, d: dict) -> ReportState:
        st = cls(d["fw_names"], d["nat_names"])
        st.origin, st.first_ts = d["origin"], d["first_ts"]
        for s in cls.SERIES:
            b = getattr(st, s)
            c = np.asarray(d["counts"][s], np.float64)
            b.counts[: c.shape[0]] = c
            b.width = int(d["width"])
            b.t0 = st.origin
        st.nat_ts = np.asarray(d["nat_ts"]).tolist()
        st.nat_ports = np.asarray(d["nat_ports"]).tolist()
        st.effects = [dict(e, flows_placed=dict(e["flows_placed"])) for e in d["effects"]]
        st.talkers = dict(d["talkers"])
        st.services = {k: list(v) for k, v in d["services"].items()}
        return st

    @classmethod
    def merge(cls, parts) -> ReportState:
        """One state from the flow shards' (see the class's notes for what is exact)."""
        parts = list(parts)
        if not parts:
            return cls()
        out = cls(parts[0].fw_names, parts[0].nat_names)
        for p in parts[1:]:
            if p.fw_names != out.fw_names or p.nat_names != out.nat_names:
                raise ValueError("ReportState.merge: the shards name different firewalls or NAT gateways")
        origins = {p.origin for p in parts if p.origin is not None}
        if len(origins) > 1:
            raise ValueError(f"ReportState.merge: the shards' time bins start at different times {sorted(origins)}")
        out.origin = origins.pop() if origins else None
        firsts = [p.first_ts for p in parts if p.first_ts is not None]
        out.first_ts = min(firsts) if firsts else None
        width = max(p.pkts.width for p in parts)
        for s in cls.SERIES:
            acc = getattr(out, s)
            acc.t0, acc.width = out.origin, width
            for p in parts:
                b = getattr(p, s)
                acc.counts += _halve(b.counts, (width // b.width).bit_length() - 1)
        out._merge_nat(parts)
        out._merge_effects(parts)
        for p in parts:
            for ip, b in p.talkers.items():
                out.talkers[ip] = out.talkers.get(ip, 0) + b
            for key, (c, b) in p.services.items():
                e = out.services.setdefault(key, [0, 0])
                e[0] += c
                e[1] += b
        return out

    def _merge_nat(self, parts) -> None:
        g = len(self.nat_names)
        series = []
        for p in parts:
            if p.nat_ts:
                ts = np.asarray(p.nat_ts, np.int64)
                order = np.argsort(ts, kind="stable")
                series.append((ts[order], np.asarray(p.nat_ports, np.int64).reshape(-1, g)[order]))
        if not series:
            return
        at = np.unique(np.concatenate([ts for ts, _ in series]))
        total = np.zeros((at.shape[0], g), np.int64)
        for ts, ports in series:
            i = np.searchsorted(ts, at, side="right") - 1  # this shard's last sample at or before each time
            total += np.where((i >= 0)[:, None], ports[np.maximum(i, 0)], 0)
        self.nat_ts, self.nat_ports = at.tolist(), total.tolist()

    def _merge_effects(self, parts) -> None:
        merged: dict[tuple, dict] = {}
        for p in parts:
            seen: dict[tuple, int] = {}
            for e in p.effects:
                k0 = (e["at"], e["firewall"], e["state"])
                key = (*k0, seen.get(k0, 0))  # the same event twice: matched by its place among them
                seen[k0] = key[-1] + 1
                m = merged.get(key)
                if m is None:
                    merged[key] = dict(e, flows_placed=dict(e["flows_placed"]))
                    continue
                for f in ("flows_lost", "flows_moved", "packets_lost"):
                    m[f] += e[f]
                for name, v in e["flows_placed"].items():
                    m["flows_placed"][name] = m["flows_placed"].get(name, 0) + v
        self.effects = sorted(merged.values(), key=lambda e: e["at"])

    # ------------------------------------------------------------------ the page's numbers
    def numbers(self, summary, title: str) -> dict:
        """The page's numbers (also its JSON block), with the run's ``summary`` (the merged one for shards)."""
        from ..pipeline import STAGES

        bins = self._bins()
        n = max(b.used() for b in bins) if self.origin is not None else 0
        fw = {name: {"packets": int(self.pkts.counts[:, i].sum()), "bytes": int(self.bytes.counts[:, i].sum()),
                     "flows": int(self.flows.counts[:, i].sum())} for i, name in enumerate(self.fw_names)}
        drops: dict[str, dict[str, int]] = {}
        drop_series = {}
        tot = self.drops.counts.sum(axis=0)
        for key in np.flatnonzero(tot).tolist():
            stage, code = STAGES[key // N_STATUS], key % N_STATUS
            name = PktStatus(code).name if code in PktStatus._value2member_map_ else str(code)
            drops.setdefault(stage, {})[name] = int(tot[key])
            drop_series[f"{stage} {name}"] = self.drops.counts[:n, key].tolist()
        zero = self.first_ts if self.first_ts is not None else self.origin
        t0 = (self.origin - zero) / _NS if self.origin is not None else 0.0
        talkers = sorted(self.talkers.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
        services = sorted(self.services.items(), key=lambda kv: (-kv[1][0], kv[0]))[:10]
        pname = {6: "tcp", 17: "udp", 1: "icmp"}
        samples = [((t - zero) / _NS, p) for t, p in zip(self.nat_ts, self.nat_ports)] if zero is not None else []
        series = {key: dict(zip(self.fw_names, getattr(self, s).counts[:n].T.tolist()))
                  for key, s in (("packets", "pkts"), ("bytes", "bytes"), ("flows", "flows"))}
        return {
            "title": title,
            "packets_in": summary.packets_in, "packets_out": summary.packets_out, "dropped": summary.dropped,
            "workers": int(getattr(summary, "workers", 1) or 1),
            "bin_seconds": self.pkts.width / _NS, "bin_start": t0, "bins": n,
            "firewalls": fw,
            "series": {**series, "drops": drop_series},
            "drops": drops,
            "events": self.effects,
            "rules": dict(summary.rules),
            "top_talkers": [{"ip": ip_str(ip), "bytes": b} for ip, b in talkers],
            "services": [{"service": f"{pname.get(p, p)}/{port}" if p != 1 else "icmp", "sessions": c,
                          "bytes": b} for (p, port), (c, b) in services],
            "nat": {"gateways": list(self.nat_names), "samples": samples, "counters": dict(summary.nat)},
            "k": len(self.fw_names),
        }


def check_report_path(path, inputs=()) -> Path:
    """The report's destination, checked before anything runs: an ``.html`` name that is no input."""
    path = Path(path)
    if path.suffix.lower() not in (".html", ".htm"):
        raise ConfigError(f"{path}: the report must end in .html")
    from .outfiles import refuse_overlap

    refuse_overlap(inputs, [path])
    return path


def write_report(path, title: str, state: ReportState, summary, processes: int = 1) -> dict:
    """Write the page of ``state`` (and the run's ``summary``) to ``path``, its charts drawn by ``processes``
    processes at once (:func:`draw_charts`); its numbers."""
    data = state.numbers(summary, title)
    page = render_page(title, data, draw_charts(data, processes))
    from .outfiles import OutputFile

    with OutputFile(path, text=True) as f:
        f.file.write(page)
    return data


class ReportCollector:
    """Pipeline observer that fills a :class:`ReportState` and writes the HTML report when the run ends (with
    ``path`` None it only collects: a flow shard's, which its parent merges)."""

    def __init__(self, path, inputs=(), title: str = "gwlb-fast run", processes: int = 1):
        self.path = None if path is None else check_report_path(path, inputs)
        self.title = title
        self.processes = processes  # that draw the charts once the replay is over (draw_charts)
        self.data: dict = {}
        self.state = ReportState()

    # ------------------------------------------------------------------ collecting
    def start(self, pipe) -> None:
        for insp in pipe.gwlbs.values():
            insp.lb.activity = []
        self.state = ReportState(list(pipe.firewall_names), pipe.nat_names)
        self.snapshots: list[dict] = []

    def _origin(self, pipe) -> None:
        # the capture's clock (a flow shard follows the whole capture's), the same origin as the events' times
        if self.state.origin is None and pipe.first_ts is not None:
            self.state.origin = int(pipe.first_ts)

    def _drain(self, pipe) -> None:
        self._origin(pipe)
        st = self.state
        for g, insp in pipe.gwlbs.items():
            base = pipe.firewall_offsets[g]
            act, insp.lb.activity = insp.lb.activity, []
            for ts, fw, wl, nts, nfw in act:
                if ts is not None and ts.size:
                    st.add("pkts", ts, fw + base)
                    st.add("bytes", ts, fw + base, wl.astype(np.float64))
                if nts is not None and nts.size:
                    st.add("flows", nts, nfw.astype(np.int64) + base)

    def chunk(self, pipe, batch, res) -> None:
        self._drain(pipe)
        st = self.state
        rows = np.flatnonzero(res.stage != 255)
        if rows.size:
            st.add("drops", batch.ts_ns[rows], res.stage[rows].astype(np.int64) * N_STATUS + res.status[rows])
        g = res.resets
        if g is not None:
            gr = np.flatnonzero(g.stage != 255)
            if gr.size:
                st.add("drops", g.batch.ts_ns[gr], g.stage[gr].astype(np.int64) * N_STATUS + g.status[gr])
        if len(batch) and pipe.nats:
            # on the capture's clock (a flow shard's is the whole capture's): every shard samples at the end of each
            # chunk read, the same times
            at = pipe.last_ts if pipe.last_ts is not None else int(batch.ts_ns[-1])
            st.add_nat(at, [sum(gw.ports_in_use.values()) for gw in pipe.nats])

    def event(self, pipe, ev) -> None:
        self._drain(pipe)
        state = ev.get("cause") if ev.get("kind") == "alive" else ev.get("value", ev.get("state"))
        self.snapshots.append({"at": float(ev["at"]), "firewall": ev["firewall"], "state": str(state),
                               **self._counters(pipe)})

    @staticmethod
    def _counters(pipe) -> dict:
        lost = moved = 0
        placed = []
        for insp in pipe.gwlbs.values():
            lost += insp.lb.flows_lost
            moved += insp.lb.flows_rebalanced
            placed += insp.lb.flows_per_fw.tolist()
        return {"lost": int(lost), "moved": int(moved), "placed": placed,
                "fw_failed": int(pipe.counters["gwlb"].drops[PktStatus.FW_FAILED])}

    def sessions(self, pipe, gwlb, k, s) -> None:
        self.state.add_sessions(s)

    def close(self, pipe, summary) -> None:
        self._drain(pipe)
        for insp in pipe.gwlbs.values():
            insp.lb.activity = None
        end = self._counters(pipe)
        effects = []
        for i, snap in enumerate(self.snapshots):
            nxt = self.snapshots[i + 1] if i + 1 < len(self.snapshots) else end
            placed = [b - a for a, b in zip(snap["placed"], nxt["placed"])]
            effects.append({"at": snap["at"], "firewall": snap["firewall"], "state": snap["state"],
                            "flows_lost": nxt["lost"] - snap["lost"], "flows_moved": nxt["moved"] - snap["moved"],
                            "packets_lost": nxt["fw_failed"] - snap["fw_failed"],
                            "flows_placed": dict(zip(self.state.fw_names, placed))})
        self.state.effects = effects
        self.state.first_ts = pipe.first_ts
        if self.path is not None:
            self.data = write_report(self.path, self.title, self.state, summary, self.processes)


CHARTS = ("load", "drops", "events", "rules", "talkers", "nat")  # the page's sections, one chart each
RULES_CHARTED = 25  # bars of the rule chart: a policy of thousands of rules draws its most hit, then the rest as one


def charted_rules(rules: dict[str, int]) -> tuple[list[str], list[int], int]:
    """The rule chart's bars: the rules that took sessions, in policy order, the ``RULES_CHARTED`` most hit of them
    when there are more; and how many rules that took sessions are left out of the bars."""
    hit = [(r, n) for r, n in rules.items() if n]
    if len(hit) > RULES_CHARTED:
        top = set(sorted(range(len(hit)), key=lambda i: -hit[i][1])[:RULES_CHARTED])
        kept = [x for i, x in enumerate(hit) if i in top]
    else:
        kept = hit
    return [r for r, _ in kept], [n for _, n in kept], len(hit) - len(kept)


def draw_charts(d: dict, processes: int = 1) -> dict[str, str]:
    """Every chart of the page (inline SVG) from its numbers ``d``; with ``processes > 1``, that many processes draw
    their share at once (this one and forked ones). Drawing is most of the time a page takes (about 0.6 s for the
    six charts, and 0.35 s to import matplotlib) and the charts are independent: ``run --workers N`` draws them
    on its ``N`` cores once the replay is over. A forked process that fails leaves its charts to this one."""
    processes = max(1, min(int(processes), len(CHARTS)))
    if processes == 1:
        return _charts(d)
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    shares = [CHARTS[i::processes] for i in range(processes)]
    jobs = []
    for keys in shares[1:]:
        mine, theirs = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_draw_into, args=(d, keys, theirs), daemon=True)
        p.start()
        theirs.close()
        jobs.append((p, mine, keys))
    out = _charts(d, shares[0])
    for p, conn, keys in jobs:
        try:
            got = conn.recv()
        except (EOFError, OSError):
            got = None
        conn.close()
        p.join()
        out.update(_charts(d, keys) if got is None else got)
    return {k: out[k] for k in CHARTS}


def _draw_into(d: dict, keys, conn) -> None:
    """A forked process's share of :func:`draw_charts`: the charts, or None if drawing failed (the parent then
    draws them itself and meets the error there)."""
    try:
        got = _charts(d, keys)
    except BaseException:  # noqa: BLE001 (the parent draws these charts again and raises what it meets)
        got = None
    try:
        conn.send(got)
    finally:
        conn.close()


def _charts(d: dict, keys=CHARTS) -> dict[str, str]:
    """The charts ``keys`` of the page (inline SVG) from its numbers."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    n = d["bins"]
    t = d["bin_start"] + np.arange(n) * d["bin_seconds"]

    def finish(fig) -> str:
        buf = io.StringIO()
        fig.savefig(buf, format="svg", bbox_inches="tight")
        plt.close(fig)
        text = buf.getvalue()
        return text[text.find("<svg"):]

    def mark(ax):
        for e in d["events"]:
            ax.axvline(e["at"], color="crimson", ls="--", lw=1)
            ax.annotate(f"{e['firewall']} {e['state']}", (e["at"], 1), xycoords=("data", "axes fraction"),
                        fontsize=7, color="crimson", rotation=90, va="top", ha="right")

    def load() -> str:
        fig, axes = plt.subplots(3, 1, figsize=(9, 7), sharex=True)
        for ax, key, label in zip(axes, ("flows", "packets", "bytes"), ("flows placed", "packets", "bytes")):
            for name, ys in d["series"][key].items():
                ax.step(t, ys, where="post", label=name)
            ax.set_ylabel(f"{label} / {d['bin_seconds']:g} s")
            mark(ax)
        axes[0].legend(fontsize=8, loc="upper right")
        axes[-1].set_xlabel("capture time (s)")
        fig.suptitle("Load per firewall over capture time")
        return finish(fig)

    def drops() -> str:
        fig, ax = plt.subplots(figsize=(9, 3.5))
        if d["series"]["drops"]:
            ax.stackplot(t, *d["series"]["drops"].values(), labels=list(d["series"]["drops"]), step="post")
            ax.legend(fontsize=8, loc="upper right")
        else:
            ax.text(0.5, 0.5, "no packet was dropped", ha="center", va="center", transform=ax.transAxes)
        mark(ax)
        ax.set_xlabel("capture time (s)")
        ax.set_ylabel(f"packets / {d['bin_seconds']:g} s")
        ax.set_title("Drops by stage and reason over time")
        return finish(fig)

    def events() -> str:
        fig, ax = plt.subplots(figsize=(9, 3))
        if d["events"]:
            labels = [f"t={e['at']:g}s {e['firewall']} {e['state']}" for e in d["events"]]
            x = np.arange(len(labels))
            bars = (("flows lost", [e["flows_lost"] for e in d["events"]]),
                    ("packets lost", [e["packets_lost"] for e in d["events"]]),
                    ("flows moved", [e["flows_moved"] for e in d["events"]]),
                    ("new flows placed (until the next event)",
                     [sum(e["flows_placed"].values()) for e in d["events"]]))
            for j, (label, ys) in enumerate(bars):
                ax.bar_label(ax.bar(x + (j - 1.5) * 0.2, ys, 0.2, label=label), fontsize=7)
            ax.set_yscale("symlog")  # a handful of lost flows beside thousands placed stay visible
            ax.set_ylim(0, 10 * max(1, *(max(ys) for _, ys in bars)))
            ax.set_xticks(x, labels, fontsize=8)
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        else:
            ax.text(0.5, 0.5, "no health event in this run", ha="center", va="center", transform=ax.transAxes)
        ax.set_title("What each event did")
        return finish(fig)

    def rules() -> str:
        names, hits, rest = charted_rules(d["rules"])
        if rest:
            names, hits = [*names, f"({rest:,} more rules)"], [*hits, sum(d["rules"].values()) - sum(hits)]
        fig, ax = plt.subplots(figsize=(9, max(2.0, 0.35 * len(names) + 1)))
        if names:
            ax.barh(names[::-1], hits[::-1])
        else:
            ax.text(0.5, 0.5, "no rule took a session", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel("sessions")
        ax.set_title("Rule hits" + (f" (the {RULES_CHARTED} most hit)" if rest else ""))
        return finish(fig)

    def talkers() -> str:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
        tt = d["top_talkers"][::-1]
        a1.barh([x["ip"] for x in tt], [x["bytes"] for x in tt])
        a1.set_title("Top talkers (bytes in their sessions)")
        sv = d["services"][::-1]
        a2.barh([x["service"] for x in sv], [x["sessions"] for x in sv])
        a2.set_title("Services (sessions)")
        fig.tight_layout()
        return finish(fig)

    def nat() -> str:
        fig, ax = plt.subplots(figsize=(9, 3))
        samples = d["nat"]["samples"]
        if samples:
            ts = [s[0] for s in samples]
            for g, name in enumerate(d["nat"]["gateways"]):
                ax.step(ts, [s[1][g] for s in samples], where="post", label=name)
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no NAT gateway", ha="center", va="center", transform=ax.transAxes)
        mark(ax)
        ax.set_xlabel("capture time (s)")
        ax.set_ylabel("SNAT ports in use")
        ax.set_title("NAT port use")
        return finish(fig)

    draw = {"load": load, "drops": drops, "events": events, "rules": rules, "talkers": talkers, "nat": nat}
    return {k: draw[k]() for k in keys}


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1000px;
color:#222;background:#fff}h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ccc;padding-bottom:.2em;
margin-top:2em}table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:.2em .6em;
text-align:right}th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}svg{max-width:100%;height:auto}
"""


def _table(head: list[str], rows: list[list]) -> str:
    h = "".join(f"<th>{html.escape(str(x))}</th>" for x in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(f'{x:,}' if isinstance(x, int) else str(x))}</td>"
                                    for x in r) + "</tr>" for r in rows)
    return f"<table><tr>{h}</tr>{body}</table>"


def render_page(title: str, d: dict, charts: dict[str, str]) -> str:
    """The HTML page: one section per chart, with the numbers as tables and as JSON."""
    sec = []
    sec.append(("load", "Load per firewall",
                _table(["firewall", "flows", "packets", "bytes"],
                       [[n, v["flows"], v["packets"], v["bytes"]] for n, v in d["firewalls"].items()])))
    sec.append(("drops", "Drops by stage and reason",
                _table(["stage", "reason", "packets"],
                       [[s, r, c] for s, rs in d["drops"].items() for r, c in rs.items()])))
    sec.append(("events", "What each event did",
                _table(["at (s)", "firewall", "state", "flows lost", "packets lost", "flows moved",
                        "new flows placed"],
                       [[f"{e['at']:g}", e["firewall"], e["state"], e["flows_lost"], e["packets_lost"],
                         e["flows_moved"], ", ".join(f"{k} {v:,}" for k, v in e["flows_placed"].items())]
                        for e in d["events"]])))
    # every rule that took a session, in policy order; the others in one line (the JSON below lists them all)
    idle = sum(1 for n in d["rules"].values() if not n)
    sec.append(("rules", "Rule hits",
                _table(["rule", "sessions"], [[r, n] for r, n in d["rules"].items() if n])
                + (f"<p class=\"notes\">{idle:,} more rule{'s' if idle != 1 else ''} took no session.</p>"
                   if idle else "")))
    sec.append(("talkers", "Top talkers and services",
                (_table(["host", "bytes"], [[x["ip"], x["bytes"]] for x in d["top_talkers"]])
                 + _table(["service", "sessions", "bytes"],
                          [[x["service"], x["sessions"], x["bytes"]] for x in d["services"]]))))
    sec.append(("nat", "NAT port use",
                _table(["counter", "value"], [[k.replace("_", " "), v] for k, v in d["nat"]["counters"].items()])))
    parts = [(f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
              f"<style>{_CSS}</style></head><body>"),
             f"<h1>gwlb-fast report: {html.escape(title)}</h1>",
             (f"<p>{d['packets_in']:,} packets in, {d['packets_out']:,} out, {d['dropped']:,} dropped. "
              f"Time bins of {d['bin_seconds']:g} s from the capture's first packet.</p>")]
    workers = d.get("workers", 1)
    if workers > 1:
        parts.append(f"<p class=\"notes\">Replayed on {workers} flow shards (<code>--workers {workers}</code>), "
                     "their numbers merged: the time series, totals, events, top talkers and services are those "
                     "of one worker (every shard bins from the capture's first packet; hosts and services are "
                     "summed before the top ten are taken). The NAT ports in use are sampled, not counted: each "
                     "shard takes them at the end of every chunk the run read (its packets of "
                     f"{workers} times --chunk), and their sum is the count at those times, with 1/{workers} as "
                     "many samples as one worker takes.</p>")
    for key, name, table in sec:
        parts.append(f"<section id=\"{key}\"><h2>{html.escape(name)}</h2><figure class=\"chart\">{charts[key]}"
                     f"</figure>{table}</section>")
    data = json.dumps(d).replace("</", "<\\/")
    parts.append(f"<script type=\"application/json\" id=\"report-data\">{data}</script></body></html>")
    return "\n".join(parts)


__all__ = ["CHARTS", "RULES_CHARTED", "ReportCollector", "ReportState", "TimeBins", "charted_rules",
           "check_report_path", "draw_charts", "render_page", "write_report"]
