"""``run --workers N``: flow-sharded replay on every core (DESIGN.md section 14).

Each worker is a forked process that maps the capture itself (no packet bytes cross a pipe), reads every chunk,
keeps the packets of its flow shard (``_kernels/shard.pyx``: a symmetric hash of the two addresses, the public side
of a NAT gateway mapped to the flow behind it) and runs them through its own :class:`~gwlb_fast.pipeline.Pipeline`,
built from the same topology with its share of the capacities:

- every NAT gateway's SNAT port range is cut into ``N`` disjoint slices, shard ``k`` allocating only from slice
  ``k``, so the public form of a reply names its shard (the SNAT port may then differ from a one-worker run);
- flow tables (GWLB flows, firewall sessions, NAT mappings) hold ``capacity // N`` entries each.

The workers write their outputs (delivered packets, taps, flow log) to temporary files beside the destination;
the parent merges them in time order (stable: equal timestamps keep the shard order, so a run is deterministic for
a given ``N``) and sums the summaries. Per-flow results (firewall, rule, verdict, NAT public IP) equal one worker's.
"""
from __future__ import annotations

import copy
import csv
import json
import os
import shutil
import tempfile
import time
import traceback
from dataclasses import replace
from pathlib import Path

import numpy as np

from .batch import PacketBatch
from .config import Topology, load_topology
from .errors import ConfigError, GwlbError, PcapError
from .outfiles import refuse_overlap
from .pcapio import output_format, read_pcap
from .pipeline import TAP_LINKS
from .report import FlowLogWriter, Summary

FRAG_TABLE = 1 << 16  # first fragments remembered on the public side (direct-mapped)
SHARED_TAPS = ("health",)  # taps every shard writes alike (taken from the first)


def default_workers() -> int:
    """Every core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def port_slice(lo: int, hi: int, k: int, n: int) -> tuple[int, int]:
    """Shard ``k``'s slice of the port range ``[lo, hi]``: the ports ``p`` with ``(p - lo) * n // (hi - lo + 1) == k``
    (the rule the shard kernel applies to a public-side port)."""
    span = hi - lo + 1
    return lo + -(-k * span // n), lo + -(-(k + 1) * span // n) - 1


def shard_topology(topo: Topology, k: int, n: int) -> Topology:
    """The topology shard ``k`` of ``n`` runs: its slice of every SNAT port range, ``1/n`` of every flow table."""
    t = copy.deepcopy(topo)
    if n == 1:
        return t
    for name, g in t.nat_gateways.items():
        if g.port_hi - g.port_lo + 1 < n:
            raise ConfigError(f"{topo.source}: nat_gateways.{name}: snat.ports {g.port_lo}-{g.port_hi} has fewer "
                              f"ports than --workers {n}")
        lo, hi = port_slice(g.port_lo, g.port_hi, k, n)
        t.nat_gateways[name] = replace(g, port_lo=lo, port_hi=hi, capacity=max(1, g.capacity // n))
    for name, g in t.gwlbs.items():
        t.gwlbs[name] = replace(g, flow_capacity=max(1, g.flow_capacity // n))
    return t


class Sharder:
    """The flow shard of every packet of a chunk (state: the public side's first fragments)."""

    def __init__(self, topo: Topology, n: int):
        gws = list(topo.nat_gateways.values())
        self.n = int(n)
        self.pub = np.array([g.public_ip_int for g in gws], np.uint32)
        self.lo = np.array([g.port_lo for g in gws], np.int32)
        self.hi = np.array([g.port_hi for g in gws], np.int32)
        rules = [(gi, r) for gi, g in enumerate(gws) for r in g.dnat]
        self.dnat = (np.array([gi for gi, _ in rules], np.int32), np.array([r.proto for _, r in rules], np.uint8),
                     np.array([r.port for _, r in rules], np.uint16), np.array([r.to_ip for _, r in rules], np.uint32))
        self.frag_key = np.zeros(FRAG_TABLE, np.uint64)
        self.frag_shard = np.full(FRAG_TABLE, -1, np.int16)
        self.frag_misses = 0

    def shards(self, batch: PacketBatch) -> np.ndarray:
        from ._kernels.shard import shard_packets

        if batch.status is None:
            batch.parse()
        out = np.empty(len(batch), np.int16)
        b = batch
        self.frag_misses += shard_packets(b.data, b.off, b.caplen, b.status, b.proto, b.src_ip, b.dst_ip, b.sport,
                                          b.dport, b.tcp_flags, b.l3_off, b.l4_off, self.pub, self.lo, self.hi,
                                          *self.dnat, self.n, self.frag_key, self.frag_shard, out)
        return out


# ---------------------------------------------------------------------------------------------------- workers
def shard_pipeline(topo: Topology, k: int, n: int, opts: dict, taps: bool):
    """The Pipeline of shard ``k`` of ``n`` (``opts``: seed, session_capacity, pickup)."""
    from .pipeline import Pipeline

    return Pipeline(shard_topology(topo, k, n), seed=opts["seed"], taps=taps,
                    session_capacity=max(1, opts["session_capacity"] // n), pickup=opts["pickup"])


def _worker(k: int, n: int, topo: Topology, source, paths: dict, opts: dict, conn) -> None:
    """Shard ``k``: replay its packets, write its outputs to ``paths``, send back its summary."""
    try:
        pipe = shard_pipeline(topo, k, n, opts, taps=paths.get("taps") is not None)
        sharder = Sharder(topo, n)

        def select(batch: PacketBatch) -> PacketBatch:
            # the capture's clock, not the shard's: events count from the first packet, and at the end the
            # sessions idle at the last packet age out, whichever shard saw it
            if len(batch):
                lo, hi = int(batch.ts_ns.min()), int(batch.ts_ns.max())
                pipe.first_ts = lo if pipe.first_ts is None else min(pipe.first_ts, lo)
                pipe.last_ts = hi if pipe.last_ts is None else max(pipe.last_ts, hi)
            return batch.filter(sharder.shards(batch) == k)

        summary = pipe.run(source, paths.get("output"), taps=paths.get("taps"), flow_log=paths.get("flow_log"),
                           events=opts["events"], chunk=opts["chunk"], quiet=True, strict=False, select=select)
        conn.send(("ok", summary.as_dict(), sharder.frag_misses))
    except PcapError as e:  # its constructor takes three arguments: sent as them
        conn.send(("pcap", (e.path, e.offset, e.problem)))
    except (GwlbError, OSError) as e:
        conn.send(("error", e))
    except BaseException:  # noqa: BLE001 (reported by the parent, which exits non-zero)
        conn.send(("crash", traceback.format_exc()))
    finally:
        conn.close()


def run_parallel(topology, source, output=None, *, workers: int | None = None, taps=None, flow_log=None,
                 events=None, chunk: int = 65536, seed: int = 0, quiet: bool = True, strict: bool = True,
                 session_capacity: int = 1 << 18, pickup: bool | None = None) -> Summary:
    """Replay ``source`` through ``topology`` (a path or a loaded Topology) on ``workers`` processes (default: every
    core), flow-sharded; the outputs and the summary are those of :meth:`Pipeline.run`, merged in time order."""
    import multiprocessing as mp

    n = default_workers() if workers is None else int(workers)
    if n < 1:
        raise ValueError(f"run_parallel: workers must be >= 1, got {n}")
    topo = topology if isinstance(topology, Topology) else load_topology(topology)
    check_destinations(topo, source, output, taps, flow_log, events)
    read_pcap(source, chunk=1, parse=False).close()  # an unreadable capture fails here, once
    if n > 1:
        for k in range(n):
            shard_topology(topo, k, n)  # configuration problems (too few ports) surface here, once
    t_start = time.perf_counter()
    tmp, parts = shard_files(n, output, taps, flow_log, ".gwlb-fast-workers-")
    try:
        # each worker reads n chunks at a time and replays its shard of them: about ``chunk`` packets per batch
        opts = {"seed": seed, "events": events, "chunk": chunk * n, "session_capacity": session_capacity,
                "pickup": pickup}
        ctx = mp.get_context("fork")
        procs, conns = [], []
        for k in range(n):
            recv, send = ctx.Pipe(duplex=False)
            p = ctx.Process(target=_worker, args=(k, n, topo, source, parts[k], opts, send), daemon=True)
            p.start()
            send.close()
            procs.append(p)
            conns.append(recv)
        results = []
        for k, (p, c) in enumerate(zip(procs, conns)):
            try:
                results.append(c.recv())
            except EOFError:
                results.append(("crash", f"worker {k} ended without a result (exit code {p.exitcode})"))
            p.join()
        for r in results:
            if r[0] == "pcap":
                raise PcapError(*r[1])
            if r[0] == "error":
                raise r[1]
            if r[0] == "crash":
                raise RuntimeError(f"run --workers: a worker failed:\n{r[1]}")
        merge_outputs(parts, output, taps, flow_log)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    summary = merge_summaries([r[1] for r in results], time.perf_counter() - t_start)
    summary.workers = n
    if summary.input_error is not None and strict:
        raise PcapError(source, None, summary.input_error.removeprefix(f"{source}: "))
    return summary


def check_destinations(topo: Topology, source, output, taps, flow_log, events) -> None:
    """The checks of :meth:`Pipeline.run`, on the real destinations (the shards write temporary files)."""
    fmt = output_format(output) if output is not None else "pcap"
    tap_paths = [Path(taps) / f"{k}.{fmt}" for k in TAP_LINKS] if taps is not None else []
    if flow_log is not None:
        FlowLogWriter.check_path(flow_log)
    inputs = [source, events if isinstance(events, (str, os.PathLike)) else None]
    if topo.source and os.path.isfile(topo.source):
        inputs.append(topo.source)
    refuse_overlap(inputs, [output, flow_log, *tap_paths])
    if taps is not None and Path(taps).exists() and not Path(taps).is_dir():
        raise ConfigError(f"{taps}: --taps needs a folder, and this is a file")


def shard_files(n: int, output, taps, flow_log, prefix: str) -> tuple[Path, list[dict]]:
    """A temporary folder beside the destination (remove it when done) and, in it, where shard ``k`` writes its
    ``output``, ``taps`` and ``flow_log`` (None where the run writes none), as :func:`merge_outputs` takes them."""
    where = Path(output).parent if output is not None else (Path(flow_log).parent if flow_log else None)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=where))
    parts = []
    for k in range(n):
        d = tmp / str(k)
        d.mkdir()
        parts.append({"output": d / "output.pcap" if output is not None else None,
                      "taps": d / "taps" if taps is not None else None,
                      "flow_log": d / f"flows{Path(flow_log).suffix}" if flow_log is not None else None})
    return tmp, parts


# ---------------------------------------------------------------------------------------------------- merging
def merge_outputs(parts: list[dict], output, taps, flow_log) -> None:
    """Merge the shards' outputs (``parts[k]``: the paths shard ``k`` wrote its ``output``, ``taps`` folder and
    ``flow_log`` to, as pcap) into the destinations, in time order."""
    if output is not None:
        merge_pcaps([pt["output"] for pt in parts], output)
    if taps is not None:
        fmt = output_format(output) if output is not None else "pcap"
        Path(taps).mkdir(parents=True, exist_ok=True)
        for link in TAP_LINKS:
            # the GWLB's health probes do not depend on the packets: every shard writes the same ones
            shards = parts[:1] if link in SHARED_TAPS else parts
            merge_pcaps([pt["taps"] / f"{link}.pcap" for pt in shards], Path(taps) / f"{link}.{fmt}")
    if flow_log is not None:
        merge_flow_logs([pt["flow_log"] for pt in parts], flow_log)


def _whole(path) -> PacketBatch:
    """Every record of a capture the workers wrote, as one batch over a memory map of the file."""
    if os.path.getsize(path) == 0:
        return PacketBatch.empty()
    reader = read_pcap(path, chunk=1 << 16, parse=False, use_mmap=True)
    cols: dict[str, list] = {"off": [], "caplen": [], "wirelen": [], "ts_ns": []}
    start = reader.offset  # a batch's offsets count from the record the reader stood at
    for b in reader:
        cols["off"].append(b.off + start)
        cols["caplen"].append(b.caplen)
        cols["wirelen"].append(b.wirelen)
        cols["ts_ns"].append(b.ts_ns)
        start = reader.offset
    if not cols["off"]:
        return PacketBatch.empty()
    data = np.memmap(path, np.uint8, mode="r")
    return PacketBatch(data, *(np.concatenate(cols[c]) for c in ("off", "caplen", "wirelen", "ts_ns")))


def merge_pcaps(paths, dest, chunk: int = 1 << 16) -> int:
    """Merge the captures at ``paths`` into ``dest`` in time order (a stable sort: equal timestamps keep the order
    of ``paths``, then each file's). Returns the packets written."""
    from .pcapio import PcapWriter

    batches = [_whole(p) for p in paths if os.path.exists(p)]
    ts = np.concatenate([b.ts_ns for b in batches])
    src = np.repeat(np.arange(len(batches), dtype=np.int32), [len(b) for b in batches])
    row = np.concatenate([np.arange(len(b), dtype=np.int64) for b in batches])
    order = np.argsort(ts, kind="stable")
    with PcapWriter(dest, linktype=1 if output_format(dest) == "pcap" else None) as w:
        for a in range(0, order.size, chunk):
            sel = order[a:a + chunk]
            s, r = src[sel], row[sel]
            pieces, pos = [], np.empty(sel.size, np.int64)
            base = 0
            for i, b in enumerate(batches):
                m = np.flatnonzero(s == i)
                if m.size:
                    pieces.append(b[r[m]])
                    pos[m] = base + np.arange(m.size)
                    base += m.size
            w.write(PacketBatch.concat(pieces)[pos])
    return int(order.size)


def merge_flow_logs(paths, dest) -> int:
    """Merge the workers' flow logs (.jsonl or .csv) into ``dest`` in time order (by last_seen, then first_seen;
    equal times keep the shard order)."""
    dest = Path(dest)
    rows = []
    header = None
    for i, p in enumerate(paths):
        with open(p, newline="") as fh:
            if dest.suffix.lower() == ".csv":
                r = csv.reader(fh)
                header = next(r, header)
                li, fi = header.index("last_seen"), header.index("first_seen")
                rows.extend(((float(x[li]), float(x[fi]), i), x) for x in r)
            else:
                for line in fh:
                    d = json.loads(line)
                    rows.append(((d["last_seen"], d["first_seen"], i), line))
    rows.sort(key=lambda t: t[0])
    with open(dest, "w", newline="") as fh:
        if dest.suffix.lower() == ".csv":
            w = csv.writer(fh)
            if header is not None:
                w.writerow(header)
            w.writerows(x for _, x in rows)
        else:
            fh.writelines(x for _, x in rows)
    return len(rows)


# summary fields that describe the capture every worker read whole (the same in each shard): taken once
_SHARED_FIELDS = ("input_error", "input_skipped_bytes", "input_skipped_records", "events")


def _add(acc, v):
    """Sum numbers, recursively in dicts; anything else keeps the first shard's value."""
    if isinstance(v, bool) or not isinstance(v, (int, float, dict)):
        return v if acc is None else acc
    if isinstance(v, dict):
        acc = {} if acc is None else acc
        for k, x in v.items():
            acc[k] = _add(acc.get(k), x)
        return acc
    return v if acc is None else acc + v


def merge_summaries(parts: list[dict], seconds: float) -> Summary:
    """One summary from the shards' (``Summary.as_dict()``): counts add up, time per stage adds the shards' CPU
    seconds, what describes the capture itself (read whole by every shard) and per-firewall states are taken once,
    the capture's span is the longest."""
    s = Summary()
    names = set(s.__dataclass_fields__)
    for key in names - {"seconds", "workers", "capture_seconds"}:
        vals = [p[key] for p in parts if key in p]
        if not vals:
            continue
        if key in _SHARED_FIELDS:
            v = next((x for x in vals if x), vals[0])
        else:
            v = None
            for x in vals:
                v = _add(v, x)
        setattr(s, key, round(v, 4) if isinstance(v, float) else v)
    s.stage_seconds = {k: round(v, 4) for k, v in s.stage_seconds.items()}
    s.capture_seconds = max((p.get("capture_seconds", 0.0) for p in parts), default=0.0)
    s.seconds = seconds
    return s


__all__ = ["Sharder", "check_destinations", "default_workers", "merge_flow_logs", "merge_outputs", "merge_pcaps",
           "merge_summaries", "port_slice", "run_parallel", "shard_files", "shard_pipeline", "shard_topology"]
