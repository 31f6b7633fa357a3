"""``run --ray [ADDRESS]``: replays spread over a Ray cluster (DESIGN.md section 14).

Two ways, both on Ray's own primitives (tasks, actors, the object store):

- :func:`replay_many`: one Ray task per capture, each an ordinary single-process :meth:`Pipeline.run`; the result
  holds each capture's summary and their total.
- :func:`replay_split`: one capture cut into byte ranges at record boundaries (found with the reader's
  resynchronisation kernels, :meth:`~gwlb_fast.pcapio.PcapReader.record_boundary`). One Ray task per range reads
  and parses its records, shards them by flow (:class:`~gwlb_fast.scale.parallel.Sharder`) and puts one piece per flow
  shard into the object store; one Ray actor per shard replays its pieces in range order, which is capture order,
  with the flow-table capacities and SNAT port slice :func:`~gwlb_fast.scale.parallel.shard_topology` gives it, as a
  ``run --workers`` worker does. The outputs are merged in time order and the summaries added with
  :mod:`gwlb_fast.scale.parallel`'s merges, so per-flow results equal a single-machine run's except the SNAT port.

A gzip-compressed capture cannot be cut by byte range: it is replayed whole, by one task. So is a capture whose
ranges do not join up (a range read up to its end meets a record running past it, or a damaged record it cannot
resynchronise over, or a pcapng section or interface block that the ranges after it would not know about): the
summary's hints say so.

Files: every node opens the captures, the topology (and the files it names) and an events file at the paths
given, and the shards and tasks write their outputs at paths on the machine that calls (beside the destinations):
on a cluster of several machines those paths must be on a filesystem every node shares.

Ray is optional (``pip install 'gwlb-fast[ray]'``): importing this module does not import it.
"""
from __future__ import annotations

import contextlib
import glob
import itertools
import logging
import os
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..batch import PacketBatch
from ..config import Topology, load_topology
from ..errors import ClusterError, ConfigError, GwlbError, PcapError
from ..outputs.outfiles import refuse_overlap
from ..outputs.report import Summary
from ..pcapio import read_pcap
from ..pipeline import TAP_LINKS
from .parallel import (
    Sharder,
    check_destinations,
    merge_outputs,
    merge_summaries,
    shard_files,
    shard_pipeline,
    shard_topology,
)

RAY_MISSING = "run --ray needs Ray: pip install 'gwlb-fast[ray]'"
#: bytes before a range that its reader shards without keeping, so that the public side's later fragments find
#: their first fragment (the Sharder's state) when the two fall on either side of a cut
LOOKBACK = 4 << 20
#: a range per this many bytes at least (a range's pieces sit in the object store until their shards take them)
RANGE_BYTES = 256 << 20
_CAPTURE_SUFFIXES = (".gz", ".pcapng", ".pcap", ".cap")


def require_ray(local: bool = False):
    """The ray module, or ConfigError saying how to install it. ``local``: for a local instance, which then listens
    on 127.0.0.1 only (Ray's switch for single-machine platforms) and sends no usage statistics; both settings are
    read when Ray is imported, and kept when the environment sets them."""
    if local:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError:
        raise ConfigError(RAY_MISSING) from None
    return ray


@contextlib.contextmanager
def connected(address: str | None = None, num_cpus: int | None = None):
    """Ray, connected for the duration of the ``with`` block.

    A connection this process already has is used as it is (and kept). Otherwise ``address`` is joined as
    ``ray.init`` understands it (``"auto"``, ``"HOST:6379"``, ``"ray://HOST:10001"``), or, when None, a local
    instance is started with ``num_cpus`` (default: every core) on the loopback address only, with no dashboard and
    no usage reports; either is left at the end. An address ``HOST:PORT`` (or ``ray://HOST:PORT``) where nothing
    accepts a connection within ``CONNECT_SECONDS`` raises ClusterError at once.
    """
    ray = require_ray(local=address is None)
    if ray.is_initialized():
        yield ray
        return
    kw = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
    if address is None:
        ray.init(address="local", num_cpus=num_cpus, **kw)  # a new instance, even beside a running cluster
    else:
        _answers(address)
        try:
            ray.init(address=address, **kw)
        except (ConnectionError, RuntimeError, ValueError) as e:
            # Ray's own words (an unknown cluster, a missing authentication token, ...): their first line
            first = next((x.strip() for x in str(e).splitlines() if x.strip()), type(e).__name__)
            raise ClusterError(f"--ray {address}: {first}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


#: seconds to wait for a cluster's address to accept a connection
CONNECT_SECONDS = 5.0


def _answers(address: str) -> None:
    """Raise ClusterError unless something accepts a TCP connection at ``address`` (``HOST:PORT`` or
    ``ray://HOST:PORT``; ``auto`` and other forms are left to Ray). Ray itself would retry a dead address for
    minutes before it gives up."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_SECONDS).close()
    except OSError as e:
        why = f"no answer within {CONNECT_SECONDS:g} s" if isinstance(e, TimeoutError) else (e.strerror or e)
        raise ClusterError(f"--ray {address}: no Ray cluster answers there ({why})") from None


def cluster_cpus(ray) -> int:
    """The CPUs of the connected cluster."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def _get(ray, refs):
    """``ray.get``, raising a task's own GwlbError or OSError as it is (one line for the CLI)."""
    try:
        return ray.get(refs)
    except ray.exceptions.RayTaskError as e:
        if isinstance(e.cause, (GwlbError, OSError)):
            raise e.cause from None
        raise


def _topology(topology) -> Topology:
    return topology if isinstance(topology, Topology) else load_topology(topology)


def _opts(events, chunk, seed, session_capacity, pickup) -> dict:
    return {"events": events, "chunk": int(chunk), "seed": seed, "session_capacity": session_capacity,
            "pickup": pickup}


# ---------------------------------------------------------------------------------------------------- many captures
@dataclass
class ManyResult:
    """What :func:`replay_many` did: each capture's summary (by its name, in the order given) and their total
    (counts added up; what describes one capture, such as an input error, taken from the first that has it)."""

    summaries: dict[str, Summary] = field(default_factory=dict)
    total: Summary = field(default_factory=Summary)

    def as_dict(self) -> dict:
        return {"captures": {k: s.as_dict() for k, s in self.summaries.items()}, "total": self.total.as_dict()}


def expand_captures(patterns) -> list[str]:
    """Capture paths from paths and glob patterns (``*``, ``?``, ``[``), in the order given, each pattern's matches
    sorted; a pattern that matches nothing raises FileNotFoundError."""
    out: list[str] = []
    for p in map(os.fspath, patterns):
        if glob.has_magic(p):
            hits = sorted(glob.glob(p))
            if not hits:
                raise FileNotFoundError(2, "no capture matches", p)
            out += hits
        else:
            out.append(p)
    return out


def capture_name(path) -> str:
    """The name a capture's outputs take: its file name without ``.gz``, ``.pcap``, ``.pcapng`` or ``.cap``."""
    name = Path(path).name
    for suffix in _CAPTURE_SUFFIXES:
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
    return name


def many_destinations(captures, out_dir=None, flow_log_dir=None, taps_dir=None) -> dict[str, dict]:
    """Each capture's outputs, by its name: ``OUT_DIR/NAME.pcap``, ``FLOW_LOG_DIR/NAME.jsonl`` and the tap folder
    ``TAPS_DIR/NAME/``. Two captures with one name, a folder that is a file, or an output that is an input raise
    ConfigError."""
    dests: dict[str, dict] = {}
    for c in captures:
        name = capture_name(c)
        if name in dests:
            raise ConfigError(f"{c}: two captures take the output name {name!r} ({dests[name]['capture']})")
        dests[name] = {"capture": os.fspath(c),
                       "output": None if out_dir is None else Path(out_dir) / f"{name}.pcap",
                       "flow_log": None if flow_log_dir is None else Path(flow_log_dir) / f"{name}.jsonl",
                       "taps": None if taps_dir is None else Path(taps_dir) / name}
    for d in (out_dir, flow_log_dir, taps_dir):
        if d is None:
            continue
        if Path(d).exists() and not Path(d).is_dir():
            raise ConfigError(f"{d}: with several captures this names a folder, and it is a file")
        if not Path(d).exists() and Path(d).suffix.lower() in (".pcap", ".pcapng", ".jsonl", ".csv"):
            raise ConfigError(f"{d}: with several captures this names a folder (one file per capture in it)")
    taps = [d["taps"] / f"{link}.pcap" for d in dests.values() if d["taps"] is not None for link in TAP_LINKS]
    refuse_overlap(list(captures), [x for d in dests.values() for x in (d["output"], d["flow_log"])] + taps)
    return dests


def _replay_one(topo: Topology, capture, dest: dict, opts: dict) -> dict:
    """A Ray task: one capture through one Pipeline, its outputs written where ``dest`` says; its summary."""
    from ..pipeline import Pipeline

    pipe = Pipeline(topo, seed=opts["seed"], taps=dest.get("taps") is not None,
                    session_capacity=opts["session_capacity"], pickup=opts["pickup"])
    summary = pipe.run(capture, dest.get("output"), taps=dest.get("taps"), flow_log=dest.get("flow_log"),
                       events=opts["events"], chunk=opts["chunk"], quiet=True, strict=False)
    summary.inspection = pipe.inspection_summary(top=None)  # every name: the total keeps the top ones of the sums
    return summary.as_dict()


def replay_many(topology, captures, out_dir=None, *, flow_log_dir=None, taps_dir=None, events=None,
                chunk: int = 65536, seed: int = 0, session_capacity: int = 1 << 18, pickup: bool | None = None,
                address: str | None = None) -> ManyResult:
    """Replay every capture of ``captures`` (paths or glob patterns) through ``topology`` on Ray, one task per
    capture, each exactly a single-process :meth:`Pipeline.run`.

    Outputs are named after each capture (:func:`many_destinations`): the delivered packets in ``out_dir``, flow
    logs in ``flow_log_dir``, taps in ``taps_dir`` (each None: not written); folders are created. ``address``: see
    :func:`connected`. A damaged capture is reported in its summary's ``input_error``, as with ``strict=False``.
    """
    topo = _topology(topology)
    paths = expand_captures(captures)
    dests = many_destinations(paths, out_dir, flow_log_dir, taps_dir)
    for d in dests.values():
        check_destinations(topo, d["capture"], d["output"], d["taps"], d["flow_log"], events)
        if not os.path.exists(d["capture"]):
            raise FileNotFoundError(2, "no such file", d["capture"])
        read_pcap(d["capture"], chunk=1, parse=False).close()  # an unreadable capture fails here, before any runs
    for d in (out_dir, flow_log_dir, taps_dir):
        if d is not None:
            Path(d).mkdir(parents=True, exist_ok=True)
    opts = _opts(events, chunk, seed, session_capacity, pickup)
    t0 = time.perf_counter()
    with connected(address) as ray:
        task = ray.remote(_replay_one)
        topo_ref = ray.put(topo)
        refs = [task.remote(topo_ref, d["capture"], d, opts) for d in dests.values()]
        parts = _get(ray, refs)
    out = ManyResult()
    for name, d in zip(dests, parts):
        out.summaries[name] = merge_summaries([d], d["seconds"])
    out.total = merge_summaries(parts, time.perf_counter() - t0)
    return out


# ---------------------------------------------------------------------------------------------------- one capture
def record_ranges(path, parts: int) -> list[tuple[int, int]]:
    """About ``parts`` byte ranges ``[start, stop)`` of an uncompressed capture that cover its records, each
    starting at a record boundary at or after an equal cut (empty ranges are left out)."""
    with read_pcap(path, chunk=1, parse=False, use_mmap=True) as r:
        size = os.path.getsize(path)
        first = r.record_boundary(0)
        span = size - first
        cuts = sorted({first, *(r.record_boundary(first + span * i // parts) for i in range(1, parts))})
    bounds = [*cuts, size]
    return [(a, b) for a, b in itertools.pairwise(bounds) if b > a]


def _read_range(topo: Topology, path, look: int, start: int, stop: int, n: int, chunk: int):
    """A Ray task: the records beginning in ``[start, stop)``, parsed and sharded; returns a description of the
    range and one PacketBatch per shard (the core columns, the packets back to back)."""
    sharder = Sharder(topo, n)
    if look < start:
        # first fragments just before the cut: their later fragments in this range follow them
        with read_pcap(path, chunk=chunk, strict=False, start=look, stop=start) as r:
            for b in r:
                sharder.shards(b)
        sharder.frag_misses = 0
    pieces: list[list[PacketBatch]] = [[] for _ in range(n)]
    meta = {"start": start, "stop": stop, "packets": 0, "first_ts": None, "hi": None}
    reader = read_pcap(path, chunk=chunk, strict=False, start=start, stop=stop)
    for b in reader:
        s = sharder.shards(b)
        ts = b.ts_ns
        hi = int(ts.max())
        if meta["first_ts"] is None:
            meta["first_ts"] = int(ts.min())  # a single run's clock starts at its first chunk's earliest packet
        meta["hi"] = hi if meta["hi"] is None else max(meta["hi"], hi)
        meta["packets"] += len(b)
        order = np.argsort(s, kind="stable")
        ends = np.cumsum(np.bincount(s, minlength=n))
        for k in range(n):
            rows = order[(ends[k - 1] if k else 0): ends[k]]
            if rows.size:
                sub = b[rows]  # a view of the map: the piece is gathered once, at the end
                pieces[k].append(PacketBatch(sub.data, sub.off, sub.caplen, sub.wirelen, sub.ts_ns, sub.linktype))
    meta.update(error=None if reader.error is None else str(reader.error), skipped_bytes=reader.skipped_bytes,
                skipped_records=reader.skipped_records, control_blocks=reader.control_blocks,
                frag_misses=sharder.frag_misses)
    return (meta, *(PacketBatch.concat(p) for p in pieces))


class _Pieces:
    """A shard's pieces, one per range in range order, taken from the object store one at a time and handed to
    :meth:`Pipeline.run` as a reader of ``chunk``-packet batches. The capture's clock, not the shard's: the
    pipeline's last packet time moves to each range's last packet as that range begins (sessions idle at the end
    age out whichever shard saw the capture's last packet)."""

    error = None
    skipped_bytes = 0
    skipped_records = 0

    def __init__(self, ray, refs, his, chunk: int, pipe):
        self._ray, self._refs, self._his, self._chunk, self._pipe = ray, refs, his, chunk, pipe

    def __iter__(self):
        pipe = self._pipe
        for ref, hi in zip(self._refs, self._his):
            piece = self._ray.get(ref)
            if hi is not None:
                pipe.last_ts = hi if pipe.last_ts is None else max(pipe.last_ts, hi)
            for a in range(0, len(piece), self._chunk):
                yield piece[a: a + self._chunk]

    def close(self) -> None:
        self._refs = []


class _Shard:
    """A Ray actor: flow shard ``k`` of ``n``, a Pipeline with its share of the capacities and SNAT ports."""

    def __init__(self, topo: Topology, k: int, n: int, opts: dict, paths: dict):
        self.pipe = shard_pipeline(topo, k, n, opts, taps=paths.get("taps") is not None)
        self.opts, self.paths = opts, paths

    def run(self, refs: list, first_ts: int | None, his: list) -> dict:
        import ray

        pipe, opts, paths = self.pipe, self.opts, self.paths
        pipe.first_ts = first_ts  # events and health timing count from the capture's first packet
        summary = pipe.run(_Pieces(ray, refs, his, opts["chunk"], pipe), paths.get("output"), taps=paths.get("taps"),
                           flow_log=paths.get("flow_log"), events=opts["events"], chunk=opts["chunk"], quiet=True,
                           strict=False)
        summary.inspection = pipe.inspection_summary(top=None)  # every name: the merge keeps the top ones
        return summary.as_dict()


def replay_split(topology, capture, output=None, *, taps=None, flow_log=None, events=None, parts: int | None = None,
                 shards: int | None = None, chunk: int = 65536, seed: int = 0, session_capacity: int = 1 << 18,
                 pickup: bool | None = None, lookback: int = LOOKBACK, strict: bool = True,
                 address: str | None = None) -> Summary:
    """Replay one capture on Ray, cut into ``parts`` byte ranges (default: one per cluster CPU, and at least one
    per ``RANGE_BYTES``) and ``shards`` flow shards (default: the cluster's CPUs; each actor takes one CPU).

    The outputs and the summary are those of :meth:`Pipeline.run` (the arguments mean the same), merged in time
    order; per-flow results equal one machine's except the SNAT port, as with ``run --workers``.
    """
    topo = _topology(topology)
    check_destinations(topo, capture, output, taps, flow_log, events)
    if not os.path.exists(capture):
        raise FileNotFoundError(2, "no such file", os.fspath(capture))
    with read_pcap(capture, chunk=1, parse=False) as r:  # an unreadable capture fails here, once
        compressed = r.compressed
    opts = _opts(events, chunk, seed, session_capacity, pickup)
    t0 = time.perf_counter()
    with connected(address) as ray:
        cpus = cluster_cpus(ray)
        n = cpus if shards is None else int(shards)
        if n < 1:
            raise ValueError(f"replay_split: shards must be >= 1, got {n}")
        if n > cpus:
            raise ConfigError(f"{capture}: {n} shards need {n} CPUs, and the Ray cluster has {cpus}")
        for k in range(n):
            shard_topology(topo, k, n)  # configuration problems (too few ports) surface here, once
        if compressed:
            return _whole(ray, topo, capture, output, taps, flow_log, opts, strict, t0,
                          "a gzip-compressed capture cannot be cut by byte range: replayed whole")
        size = os.path.getsize(capture)
        want = max(cpus, -(-size // RANGE_BYTES)) if parts is None else int(parts)
        if want < 1:
            raise ValueError(f"replay_split: parts must be >= 1, got {want}")
        ranges = record_ranges(capture, want)
        if not ranges:  # no record at all
            return _whole(ray, topo, capture, output, taps, flow_log, opts, strict, t0)
        reader = ray.remote(_read_range)
        topo = ray.put(topo)
        looks = [max(ranges[0][0], a - lookback) for a, _ in ranges]
        outs = [reader.options(num_returns=n + 1).remote(topo, capture, lk, a, b, n, int(chunk))
                for lk, (a, b) in zip(looks, ranges)]
        metas = _get(ray, [o[0] for o in outs])
        # a range that did not end cleanly, or a pcapng block that changes what later ranges needed to know
        broken = [m for m in metas[:-1] if m["error"] is not None or m["control_blocks"]]
        if broken:
            m = broken[0]
            why = m["error"] or "a pcapng section or interface block inside it"
            return _whole(ray, topo, capture, output, taps, flow_log, opts, strict, t0,
                          f"the byte range [{m['start']}, {m['stop']}) did not end at a record boundary ({why}): "
                          f"replayed whole")
        first_ts = next((m["first_ts"] for m in metas if m["first_ts"] is not None), None)
        his = [m["hi"] for m in metas]
        tmp, paths = shard_files(n, output, taps, flow_log, ".gwlb-fast-ray-")
        actor = ray.remote(num_cpus=1)(_Shard)
        shard_actors = []
        try:
            shard_actors = [actor.remote(topo, k, n, opts, paths[k]) for k in range(n)]
            runs = [a.run.remote([o[k + 1] for o in outs], first_ts, his) for k, a in enumerate(shard_actors)]
            del outs  # the driver holds no piece: each is freed once the actor that took it is done
            results = _get(ray, runs)
            merge_outputs(paths, output, taps, flow_log)
        finally:
            for a in shard_actors:
                ray.kill(a)
            shutil.rmtree(tmp, ignore_errors=True)
    summary = merge_summaries(results, time.perf_counter() - t0)
    summary.workers = n
    summary.shard_fragment_misses = sum(m["frag_misses"] for m in metas)
    last = metas[-1]
    summary.input_error = last["error"]
    summary.input_skipped_bytes = sum(m["skipped_bytes"] for m in metas)
    summary.input_skipped_records = sum(m["skipped_records"] for m in metas)
    if summary.input_error is not None and strict:
        raise PcapError(capture, None, summary.input_error.removeprefix(f"{capture}: "))
    return summary


def _whole(ray, topo, capture, output, taps, flow_log, opts, strict, t0, why: str | None = None) -> Summary:
    """The capture replayed whole by one task (with a hint saying why, if given)."""
    dest = {"output": output, "taps": taps, "flow_log": flow_log}
    d = _get(ray, ray.remote(_replay_one).remote(topo, os.fspath(capture), dest, opts))
    summary = merge_summaries([d], time.perf_counter() - t0)
    if why is not None:
        summary.hints = [*summary.hints, f"{capture}: {why}"]
    if summary.input_error is not None and strict:
        raise PcapError(capture, None, summary.input_error.removeprefix(f"{capture}: "))
    return summary


__all__ = ["LOOKBACK", "RAY_MISSING", "ManyResult", "capture_name", "cluster_cpus", "connected", "expand_captures",
           "many_destinations", "record_ranges", "replay_many", "replay_split", "require_ray"]
