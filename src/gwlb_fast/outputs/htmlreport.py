"""``run --report FILE.html``: one self-contained page of charts about a run (DESIGN.md section 11).

A :class:`ReportCollector` observes a run (``Pipeline.run(observers=...)``) and counts, batched per chunk
(``np.bincount`` over time bins), what the summary counts: per firewall the packets and bytes the GWLB forwarded
and the flows it placed (from the GWLB's opt-in activity log, the same rows its counters count), drops by stage and
reason, what each health event did (flows lost, moved, placed until the next event), rule hits, top talkers and
services (from the firewall sessions), NAT ports in use over time. The page is written at the end: matplotlib
charts as inline SVG, tables with the numbers, and the same numbers as JSON in a ``<script type=
"application/json" id="report-data">`` block; no script runs and nothing is fetched, so it opens offline.
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
            c = self.counts
            self.counts = np.zeros_like(c)
            self.counts[: MAX_BINS // 2] = c[0::2] + c[1::2]
            self.width *= 2
        b = rel // self.width
        flat = np.bincount(b * self.nkeys + key.astype(np.int64), weights=weights, minlength=MAX_BINS * self.nkeys)
        self.counts += flat[: MAX_BINS * self.nkeys].reshape(MAX_BINS, self.nkeys)

    def used(self) -> int:
        nz = np.flatnonzero(self.counts.any(axis=1))
        return int(nz[-1]) + 1 if nz.size else 0

    def times(self, n: int) -> np.ndarray:
        """Left edge of the first ``n`` bins, seconds after ``t0``."""
        return np.arange(n) * self.width / _NS


class ReportCollector:
    """Pipeline observer that writes the HTML report when the run ends."""

    def __init__(self, path, inputs=(), title: str = "gwlb-fast run"):
        path = Path(path)
        if path.suffix.lower() not in (".html", ".htm"):
            raise ConfigError(f"{path}: the report must end in .html")
        from .outfiles import refuse_overlap

        refuse_overlap(inputs, [path])
        self.path = path
        self.title = title
        self.data: dict = {}

    # ------------------------------------------------------------------ collecting
    def start(self, pipe) -> None:
        self.fw_names = []
        self.fw_base = {}
        for g, insp in pipe.gwlbs.items():
            self.fw_base[g] = len(self.fw_names)
            self.fw_names += [n if len(pipe.gwlbs) == 1 else f"{g}/{n}" for n in insp.cfg.firewall_names]
            insp.lb.activity = []
        k = max(1, len(self.fw_names))
        self.pkts = TimeBins(k)
        self.bytes = TimeBins(k)
        self.flows = TimeBins(k)
        self.drops = TimeBins(len(("input", "route", "nat", "gwlb", "firewall")) * N_STATUS)
        self.nat_samples: list[tuple[float, list[int]]] = []
        self.snapshots: list[dict] = []
        self.talkers: dict[int, int] = {}
        self.services: dict[tuple[int, int], list[int]] = {}
        self._t0 = None

    def _bins_all(self):
        return (self.pkts, self.bytes, self.flows, self.drops)

    def _drain(self, pipe) -> None:
        for g, insp in pipe.gwlbs.items():
            base = self.fw_base[g]
            act, insp.lb.activity = insp.lb.activity, []
            for ts, fw, wl, nts, nfw in act:
                if ts is not None and ts.size:
                    self._add(self.pkts, ts, fw + base)
                    self._add(self.bytes, ts, fw + base, wl.astype(np.float64))
                if nts is not None and nts.size:
                    self._add(self.flows, nts, nfw.astype(np.int64) + base)

    def _add(self, bins: TimeBins, ts, key, weights=None) -> None:
        if self._t0 is None:
            self._t0 = int(ts.min())
        for b in self._bins_all():  # one time origin for every series
            if b.t0 is None:
                b.t0 = self._t0
        bins.add(ts, key, weights)
        # keep every series at the same bin width
        w = max(b.width for b in self._bins_all())
        for b in self._bins_all():
            while b.width < w:
                c = b.counts
                b.counts = np.zeros_like(c)
                b.counts[: MAX_BINS // 2] = c[0::2] + c[1::2]
                b.width *= 2

    def chunk(self, pipe, batch, res) -> None:
        self._drain(pipe)
        rows = np.flatnonzero(res.stage != 255)
        if rows.size:
            self._add(self.drops, batch.ts_ns[rows], res.stage[rows].astype(np.int64) * N_STATUS + res.status[rows])
        g = res.resets
        if g is not None:
            gr = np.flatnonzero(g.stage != 255)
            if gr.size:
                self._add(self.drops, g.batch.ts_ns[gr], g.stage[gr].astype(np.int64) * N_STATUS + g.status[gr])
        if len(batch) and pipe.nats:
            t = (int(batch.ts_ns[-1]) - (pipe.first_ts or 0)) / _NS
            self.nat_samples.append((t, [sum(gw.ports_in_use.values()) for gw in pipe.nats]))

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

    # ------------------------------------------------------------------ the page
    def close(self, pipe, summary) -> None:
        self._drain(pipe)
        for insp in pipe.gwlbs.values():
            insp.lb.activity = None
        end = self._counters(pipe)
        self.data = self._numbers(pipe, summary, end)
        page = render_page(self.title, self.data, self._charts(pipe, summary))
        from .outfiles import OutputFile

        with OutputFile(self.path, text=True) as f:
            f.file.write(page)

    def _series(self, bins: TimeBins, n: int) -> list[list[float]]:
        return bins.counts[:n].T.tolist()

    def _numbers(self, pipe, summary, end) -> dict:
        from ..pipeline import STAGES

        n = max(b.used() for b in self._bins_all()) if self._t0 is not None else 0
        k = len(self.fw_names)
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
        t0 = (self._t0 - pipe.first_ts) / _NS if self._t0 is not None and pipe.first_ts is not None else 0.0
        effects = []
        for i, snap in enumerate(self.snapshots):
            nxt = self.snapshots[i + 1] if i + 1 < len(self.snapshots) else end
            placed = [b - a for a, b in zip(snap["placed"], nxt["placed"])]
            effects.append({"at": snap["at"], "firewall": snap["firewall"], "state": snap["state"],
                            "flows_lost": nxt["lost"] - snap["lost"], "flows_moved": nxt["moved"] - snap["moved"],
                            "packets_lost": nxt["fw_failed"] - snap["fw_failed"],
                            "flows_placed": dict(zip(self.fw_names, placed))})
        talkers = sorted(self.talkers.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
        services = sorted(self.services.items(), key=lambda kv: (-kv[1][0], kv[0]))[:10]
        pname = {6: "tcp", 17: "udp", 1: "icmp"}
        return {
            "title": self.title,
            "packets_in": summary.packets_in, "packets_out": summary.packets_out, "dropped": summary.dropped,
            "bin_seconds": self.pkts.width / _NS, "bin_start": t0, "bins": n,
            "firewalls": fw,
            "series": {"packets": dict(zip(self.fw_names, self._series(self.pkts, n))),
                       "bytes": dict(zip(self.fw_names, self._series(self.bytes, n))),
                       "flows": dict(zip(self.fw_names, self._series(self.flows, n))),
                       "drops": drop_series},
            "drops": drops,
            "events": effects,
            "rules": dict(summary.rules),
            "top_talkers": [{"ip": ip_str(ip), "bytes": b} for ip, b in talkers],
            "services": [{"service": f"{pname.get(p, p)}/{port}" if p != 1 else "icmp", "sessions": c,
                          "bytes": b} for (p, port), (c, b) in services],
            "nat": {"gateways": list(pipe.nat_names), "samples": self.nat_samples, "counters": dict(summary.nat)},
            "k": k,
        }

    def _charts(self, pipe, summary) -> dict[str, str]:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        d = self.data
        n = d["bins"]
        t = d["bin_start"] + np.arange(n) * d["bin_seconds"]
        out = {}

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

        fig, axes = plt.subplots(3, 1, figsize=(9, 7), sharex=True)
        for ax, key, label in zip(axes, ("flows", "packets", "bytes"), ("flows placed", "packets", "bytes")):
            for name, ys in d["series"][key].items():
                ax.step(t, ys, where="post", label=name)
            ax.set_ylabel(f"{label} / {d['bin_seconds']:g} s")
            mark(ax)
        axes[0].legend(fontsize=8, loc="upper right")
        axes[-1].set_xlabel("capture time (s)")
        fig.suptitle("Load per firewall over capture time")
        out["load"] = finish(fig)

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
        out["drops"] = finish(fig)

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
        out["events"] = finish(fig)

        fig, ax = plt.subplots(figsize=(9, max(2.0, 0.35 * len(d["rules"]) + 1)))
        names = list(d["rules"])
        ax.barh(names[::-1], [d["rules"][r] for r in names][::-1])
        ax.set_xlabel("sessions")
        ax.set_title("Rule hits")
        out["rules"] = finish(fig)

        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
        tt = d["top_talkers"][::-1]
        a1.barh([x["ip"] for x in tt], [x["bytes"] for x in tt])
        a1.set_title("Top talkers (bytes in their sessions)")
        sv = d["services"][::-1]
        a2.barh([x["service"] for x in sv], [x["sessions"] for x in sv])
        a2.set_title("Services (sessions)")
        fig.tight_layout()
        out["talkers"] = finish(fig)

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
        out["nat"] = finish(fig)
        return out


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
    sec.append(("rules", "Rule hits", _table(["rule", "sessions"], [[r, n] for r, n in d["rules"].items()])))
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
    for key, name, table in sec:
        parts.append(f"<section id=\"{key}\"><h2>{html.escape(name)}</h2><figure class=\"chart\">{charts[key]}"
                     f"</figure>{table}</section>")
    data = json.dumps(d).replace("</", "<\\/")
    parts.append(f"<script type=\"application/json\" id=\"report-data\">{data}</script></body></html>")
    return "\n".join(parts)


__all__ = ["ReportCollector", "TimeBins", "render_page"]
