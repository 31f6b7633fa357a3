"""``run --workers N``: flow-sharded replay on every core (DESIGN.md section 14).

The parent maps the capture once, reads it chunk by chunk (``chunk * N`` packets) and computes the flow shard of
every packet (``_kernels/shard.pyx``: a symmetric hash of the two addresses, the public side of a NAT gateway
mapped to the flow behind it). It writes each chunk's core columns (offset in the file, lengths, timestamp, link
type) and shards into memory shared with the workers, and tells each worker the chunk's row range: no packet byte
crosses a pipe, and the capture is read and parsed once. Each worker is a forked process that maps the capture
itself, takes the rows of its shard and runs them through its own :class:`~gwlb_fast.pipeline.Pipeline`, built
from the same topology with its share of the capacities:

- every NAT gateway's SNAT port range is cut into ``N`` disjoint slices, shard ``k`` allocating only from slice
  ``k``, so the public form of a reply names its shard (the SNAT port may then differ from a one-worker run);
- flow tables (GWLB flows, firewall sessions, NAT mappings) hold ``capacity // N`` entries each.

The workers write their captures (delivered packets, taps) into rings of memory shared with the parent, which
merges them into the destinations in time order while they replay (:mod:`gwlb_fast.scale.rings`: stable, equal timestamps
keep the shard order, so a run is deterministic for a given ``N``). The flow logs go through temporary files, merged
by the parent at the end, and the summaries are summed; with ``--report`` each worker sends the report's numbers
with its summary (:class:`~gwlb_fast.outputs.htmlreport.ReportState`) and the parent merges them into one page.
Per-flow results (firewall, rule, verdict, NAT public IP) equal one worker's.

A gzip-compressed capture cannot be mapped: each worker then reads and parses it whole and keeps its shard.

The workers' flow logs go to a memory file system when it has room (``SCRATCH``), in a folder named after the run's
process; a run killed before its end (``SIGKILL``) cannot remove its folder, so each run first removes the folders
of this user's runs that are gone (:func:`clear_abandoned`).
"""
from __future__ import annotations

import copy
import csv
import io
import itertools
import json
import mmap
import os
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import replace
from pathlib import Path

import numpy as np

from .._kernels.heap import replay_memory
from ..batch import PacketBatch
from ..config import Topology, load_topology
from ..errors import ConfigError, GwlbError, PcapError, WorkerError
from ..outputs.drops import DropComments, DropsFile, DropsWriter
from ..outputs.htmlreport import ReportCollector, ReportState, check_report_path, write_report
from ..outputs.outfiles import OutputFile, refuse_overlap
from ..outputs.report import FlowLogWriter, Progress, Summary, ThreatLogWriter
from ..pcapio import OrderedWriter, PcapWriter, output_format, read_pcap
from ..pipeline import TAP_LINKS, TOP_NAMES, topology_policy
from .rings import CaptureRings, DiscardWriter, RingMerger, RingOutput, RingWriter

FRAG_TABLE = 1 << 16  # first fragments remembered on the public side (direct-mapped)
SHARED_TAPS = ("health",)  # taps every shard writes alike (taken from the first)
PCAP_RECORD_HEADER = 16  # classic pcap record header: ts_sec, ts_frac, caplen, wirelen
MIN_RECORD = 12  # the smallest record or block a capture holds (a pcapng block: type and two lengths)
PLACE_BUFFER = 8 << 20  # bytes gathered per write into a merged capture (merge_pcaps)
SCRATCH = "/dev/shm"  # the workers' flow logs, when it has room (see _scratch) ...
WORKERS_PREFIX = ".gwlb-fast-workers-"  # ... in a folder named this, the run's process id, "-" and a random part
MAX_LEAD = 256  # chunks the parent may announce ahead of the slowest worker
MERGE_POLL = 0.001  # seconds the parent waits for the workers when it could merge nothing
ABANDONED_AFTER = 60.0  # seconds without a change before the folder of a run that is gone is removed


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
    # the security policy (a thousand rules, say) is configuration the path only reads: shared, not copied
    t = copy.deepcopy(topo, {id(topo.security_policy): topo.security_policy})
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
        from .._kernels.shard import shard_packets

        if batch.status is None:
            batch.parse()
        out = np.empty(len(batch), np.int16)
        b = batch
        self.frag_misses += shard_packets(b.data, b.off, b.caplen, b.status, b.proto, b.src_ip, b.dst_ip, b.sport,
                                          b.dport, b.tcp_flags, b.l3_off, b.l4_off, self.pub, self.lo, self.hi,
                                          *self.dnat, self.n, self.frag_key, self.frag_shard, out)
        return out


# ---------------------------------------------------------------------------------------------------- the feed
class SharedColumns:
    """The capture's core columns and the shard of every packet, in anonymous shared memory: filled by the parent
    as it reads, read by the workers it forked before (the pages are shared, nothing is pickled).

    ``capacity`` bounds the records (a capture of ``S`` bytes holds fewer than ``S // 12 + 1``); only the pages
    the rows fill are ever allocated.
    """

    FIELDS = (("off", np.int64), ("ts_ns", np.int64), ("caplen", np.uint32), ("wirelen", np.uint32),
              ("linktype", np.uint16), ("shard", np.int16))

    def __init__(self, capacity: int, workers: int = 1):
        self.capacity = int(capacity)
        self.rows = 0
        size = sum(np.dtype(t).itemsize for _, t in self.FIELDS) * self.capacity
        self._mm = mmap.mmap(-1, 8 * workers + max(size, 1))  # MAP_SHARED | MAP_ANONYMOUS: inherited by fork
        self.taken = np.frombuffer(self._mm, np.int64, workers, 0)  # chunks each worker has taken so far
        pos = 8 * workers
        for name, t in self.FIELDS:  # widest first: every column is aligned
            setattr(self, name, np.frombuffer(self._mm, t, self.capacity, pos))
            pos += np.dtype(t).itemsize * self.capacity

    def append(self, batch: PacketBatch, base: int, shard: np.ndarray) -> tuple[int, int]:
        """Store a chunk read from the capture (its offsets count from file offset ``base``); its row range."""
        a, b = self.rows, self.rows + len(batch)
        if b > self.capacity:
            raise RuntimeError(f"run --workers: more than {self.capacity} records in the capture")
        np.add(batch.off, base, out=self.off[a:b])
        for name in ("ts_ns", "caplen", "wirelen", "linktype"):
            getattr(self, name)[a:b] = getattr(batch, name)
        self.shard[a:b] = shard
        self.rows = b
        return a, b


class ShardFeed:
    """A worker's input: its shard of each chunk the parent announces, over its own map of the capture. It stands
    in for the :class:`~gwlb_fast.pcapio.PcapReader` of :meth:`Pipeline.run` (``error``, ``skipped_bytes``,
    ``skipped_records`` come with the parent's last message)."""

    def __init__(self, path, cols: SharedColumns, k: int, conn, pipe):
        self.cols, self.k, self.conn, self.pipe = cols, k, conn, pipe
        self.error: PcapError | None = None
        self.skipped_bytes = self.skipped_records = 0
        self.release_pages = True  # the pipeline copies each batch into its own arena
        self._released = 0  # pages of the map before this offset were given back
        self._done_off = 0  # the previous chunk's packets (copied by the pipeline) end before this offset
        with open(path, "rb") as fh:
            self._mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        self.data = np.frombuffer(self._mm, np.uint8)

    def __iter__(self):
        return self

    def __next__(self) -> PacketBatch:
        if self.release_pages and self._done_off - self._released >= 1 << 24:
            upto = self._done_off // mmap.PAGESIZE * mmap.PAGESIZE
            self._mm.madvise(mmap.MADV_DONTNEED, self._released, upto - self._released)
            self._released = upto
        msg = self.conn.recv()
        if msg[0] == "end":
            if msg[1] is not None:
                self.error = PcapError(*msg[1])
            self.skipped_bytes, self.skipped_records = msg[2], msg[3]
            raise StopIteration
        _, a, b = msg
        c = self.cols
        c.taken[self.k] += 1
        if b > a:
            # the capture's clock, not the shard's: events count from the first packet, and at the end the
            # sessions idle at the last packet age out, whichever shard saw it
            ts = c.ts_ns[a:b]
            lo, hi = int(ts.min()), int(ts.max())
            p = self.pipe
            p.first_ts = lo if p.first_ts is None else min(p.first_ts, lo)
            p.last_ts = hi if p.last_ts is None else max(p.last_ts, hi)
            self._done_off = int(c.off[b - 1])
        rows = np.flatnonzero(c.shard[a:b] == self.k)
        rows += a
        return PacketBatch(self.data, c.off[rows], c.caplen[rows], c.wirelen[rows], c.ts_ns[rows],
                           c.linktype[rows])

    def close(self) -> None:
        pass


def _feed(reader, cols: SharedColumns, sharder: Sharder, conns, merge: _Merge) -> None:
    """The parent's loop: read, shard, share, announce, merge what the workers wrote meanwhile; then tell the
    workers how the capture ended. The parent stays at most ``MAX_LEAD`` chunks ahead of the slowest worker (a
    worker waiting for its ring to be merged does not read its pipe, which must not fill)."""
    start = reader.offset  # a batch's offsets count from the record the reader stood at
    for sent, batch in enumerate(reader):
        a, b = cols.append(batch, start, sharder.shards(batch))
        start = reader.offset
        merge.chunks.append((b, start))
        while sent - int(cols.taken.min()) >= MAX_LEAD:
            merge.wait()
        for c in conns:
            c.send(("chunk", a, b))
        merge.step()
    err = reader.error
    end = ("end", None if err is None else (err.path, err.offset, err.problem), reader.skipped_bytes,
           reader.skipped_records)
    for c in conns:
        c.send(end)


# ---------------------------------------------------------------------------------------------------- workers
def shard_pipeline(topo: Topology, k: int, n: int, opts: dict, taps: bool, policy=None):
    """The Pipeline of shard ``k`` of ``n`` (``opts``: seed, session_capacity, pickup; ``policy``: the topology's,
    built once for every shard, or None to build it)."""
    from ..pipeline import Pipeline

    return Pipeline(shard_topology(topo, k, n), policy, seed=opts["seed"], taps=taps,
                    session_capacity=max(1, opts["session_capacity"] // n), pickup=opts["pickup"])


def _die_with_parent(parent: int) -> None:
    """A worker is killed when the parent dies, on Linux (``PR_SET_PDEATHSIG``): a run killed outright leaves no
    worker behind (the next run removes its files, :func:`clear_abandoned`)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            import signal

            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1: PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # it died before the call
        os._exit(1)


def _worker(k: int, n: int, topo: Topology, policy, source, cols: SharedColumns | None, paths: dict, rings: dict,
            opts: dict, conn, parent_ends=(), parent: int | None = None) -> None:
    """Shard ``k``: replay its packets, its captures into its rings of ``rings`` (by name: ``output``,
    ``taps/LINK``), its flow log and threat log to ``paths["flow_log"]``, ``paths["threat_log"]``; then send back
    its summary (and, with ``opts["report"]``, its report's numbers, :class:`ReportState`). ``parent_ends``: the
    parent's
    ends of the pipes to the workers forked so far and to this one, which the fork copied: closed, so that a worker
    reads the end of its pipe when the parent is gone (a sibling holding it kept a worker waiting for ever)."""
    for c in parent_ends:
        c.close()
    if parent is not None:
        _die_with_parent(parent)
    try:
        pipe = shard_pipeline(topo, k, n, opts, any(name.startswith("taps/") for name in rings), policy)
        outs = {name: RingOutput(r, k, opts["format"]) if r.n == n or k == 0 else OrderedWriter(DiscardWriter())
                for name, r in rings.items() if name != "drops"}
        observers = [DropsWriter(None, sink=RingWriter(rings["drops"], k, "pcapng"))] if "drops" in rings else []
        report = ReportCollector(None) if opts.get("report") else None  # its numbers go to the parent
        if report is not None:
            observers.append(report)
        taps = {name.removeprefix("taps/"): w for name, w in outs.items() if name.startswith("taps/")} or None
        select = None
        if cols is not None:
            source = ShardFeed(source, cols, k, conn, pipe)
        else:  # a capture that cannot be mapped: read it whole, keep this shard
            sharder = Sharder(topo, n)

            def select(batch: PacketBatch) -> PacketBatch:
                if len(batch):
                    lo, hi = int(batch.ts_ns.min()), int(batch.ts_ns.max())
                    pipe.first_ts = lo if pipe.first_ts is None else min(pipe.first_ts, lo)
                    pipe.last_ts = hi if pipe.last_ts is None else max(pipe.last_ts, hi)
                return batch.filter(sharder.shards(batch) == k)

        summary = pipe.run(source, outs.get("output"), taps=taps, flow_log=paths.get("flow_log"),
                           threat_log=paths.get("threat_log"), events=opts["events"], chunk=opts["chunk"],
                           quiet=True, strict=False, select=select, observers=observers)
        if select is not None:  # every shard read the whole capture: each counted the same misses
            summary.shard_fragment_misses = sharder.frag_misses
        summary.inspection = pipe.inspection_summary(top=None)  # every name: the parent keeps the top ones
        conn.send(("ok", summary.as_dict(), None if report is None else report.state.as_dict()))
    except PcapError as e:  # its constructor takes three arguments: sent as them
        conn.send(("pcap", (e.path, e.offset, e.problem)))
    except (GwlbError, OSError) as e:
        conn.send(("error", e))
    except BaseException as e:  # noqa: BLE001 (reported by the parent, which exits non-zero)
        conn.send(("crash", f"failed: {type(e).__name__}: {e}", traceback.format_exc()))
    finally:
        for r in rings.values():  # the parent stops waiting for this worker's packets
            if r.n == n or k == 0:
                RingWriter(r, k).close()
        conn.close()


class _Merge:
    """The parent's merging of the workers' rings (``mergers``) while it waits for their results; ``progress``
    shows how far the slowest worker is (``cols.taken`` chunks of ``chunks``: rows and file offset at each one's
    end)."""

    def __init__(self, mergers, procs, conns, results: list, source, cols=None, progress=None):
        self.mergers, self.procs, self.conns, self.results, self.source = mergers, procs, conns, results, source
        self.waiting = dict(enumerate(conns))  # the workers whose result has not come
        self.cols, self.progress, self.chunks = cols, progress, []

    def step(self) -> int:
        """Merge what can be now; collect the results that came (a failure is raised)."""
        moved = sum(m.step() for m in self.mergers)
        if self.progress is not None and self.cols is not None:
            done = int(self.cols.taken.min()) - 1  # the chunk before the one the slowest worker took is done
            if 0 <= done < len(self.chunks):
                self.progress.update(*self.chunks[done])
        for k, c in list(self.waiting.items()):
            if c.poll():
                self._take(k)
        return moved

    def wait(self) -> None:
        """Merge; when nothing could be, wait a little for the workers (or for a result)."""
        if not self.step() and self.waiting:
            from multiprocessing.connection import wait

            for c in wait(list(self.waiting.values()), timeout=MERGE_POLL):
                self._take(next(k for k, x in self.waiting.items() if x is c))

    def drain(self) -> None:
        """Until every capture is merged and every worker has sent its result."""
        while self.waiting or not all(m.done for m in self.mergers):
            self.wait()

    def _take(self, k: int) -> None:
        r = self.results[k] = _result(k, self.procs[k], self.conns[k])
        del self.waiting[k]
        if r[0] != "ok":
            _raise_failure(self.results, self.source)


def _result(k: int, proc, conn):
    """The next message of worker ``k``; a worker that ended without one is a crash."""
    try:
        return conn.recv()
    except (EOFError, OSError):
        proc.join(5)
        code = proc.exitcode
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        return ("crash", f"ended without a result ({how})", None)


def _raise_failure(results, source) -> None:
    """Raise the first worker's failure: its own error, or a :class:`WorkerError` naming the capture and the
    worker."""
    for k, r in enumerate(results):
        if r is None:
            continue
        if r[0] == "pcap":
            raise PcapError(*r[1])
        if r[0] == "error":
            raise r[1]
        if r[0] == "crash":
            raise WorkerError(f"{source}: run --workers: worker {k} of {len(results)} {r[1]}", r[2])


def _scratch(size: int) -> str | None:
    """Where the workers' logs go: a memory file system (``SCRATCH``) when it has room for them (twice the
    capture's ``size``), else beside the destination (None). They are copied once more into the destination: in
    memory they never reach the disk."""
    try:
        st = os.statvfs(SCRATCH)
    except OSError:
        return None
    return SCRATCH if os.access(SCRATCH, os.W_OK) and st.f_bavail * st.f_frsize > 2 * size else None


def clear_abandoned(where, prefix: str, now: float | None = None) -> list[str]:
    """Remove the folders of workers' files that runs killed before their end left in ``where`` (a memory file
    system holds them until the machine restarts): this user's folders named ``prefix``, a process id and ``-``,
    whose process is gone and in which nothing changed for ``ABANDONED_AFTER`` seconds. Returns their names."""
    now = time.time() if now is None else now
    gone = []
    try:
        entries = list(os.scandir(where))
    except OSError:
        return gone
    for e in entries:
        pid = e.name[len(prefix):].split("-", 1)[0] if e.name.startswith(prefix) else ""
        if not pid.isdigit():
            continue
        try:
            if e.stat(follow_symlinks=False).st_uid != os.getuid() or not e.is_dir(follow_symlinks=False):
                continue
            os.kill(int(pid), 0)
            continue  # the run is still there (or another user's process has its id)
        except ProcessLookupError:
            pass
        except OSError:
            continue
        try:
            newest = max((os.stat(os.path.join(d, f)).st_mtime for d, _, fs in os.walk(e.path) for f in fs),
                         default=e.stat().st_mtime)
        except OSError:  # changing under us: not abandoned
            continue
        if now - newest >= ABANDONED_AFTER:
            shutil.rmtree(e.path, ignore_errors=True)
            gone.append(e.name)
    return gone


def _is_gzip(path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def run_parallel(topology, source, output=None, *, workers: int | None = None, taps=None, flow_log=None,
                 events=None, chunk: int = 65536, seed: int = 0, quiet: bool = True, strict: bool = True,
                 session_capacity: int = 1 << 18, pickup: bool | None = None, threat_log=None,
                 drops=None, report=None, title: str | None = None) -> Summary:
    """Replay ``source`` through ``topology`` (a path or a loaded Topology) on ``workers`` processes (default: every
    core), flow-sharded; the outputs and the summary are those of :meth:`Pipeline.run`, merged in time order.
    ``report``: the HTML report (``run --report``, titled ``title``, default the capture's name), from the
    shards' numbers merged (:meth:`ReportState.merge`)."""
    import multiprocessing as mp

    n = default_workers() if workers is None else int(workers)
    if n < 1:
        raise ValueError(f"run_parallel: workers must be >= 1, got {n}")
    topo = topology if isinstance(topology, Topology) else load_topology(topology)
    check_destinations(topo, source, output, taps, flow_log, events, threat_log, drops, report)
    read_pcap(source, chunk=1, parse=False).close()  # an unreadable capture fails here, once
    title = Path(source).name if title is None else title
    if n == 1:
        from ..pipeline import Pipeline

        observers = [DropsWriter(drops)] if drops is not None else []
        if report is not None:
            observers.append(ReportCollector(report, title=title))
        summary = Pipeline(topo, seed=seed, taps=taps is not None, session_capacity=session_capacity,
                           pickup=pickup).run(source, output, taps=taps, flow_log=flow_log, events=events,
                                              chunk=chunk, quiet=quiet, strict=strict, threat_log=threat_log,
                                              observers=observers)
        summary.workers = 1
        return summary
    for k in range(n):
        shard_topology(topo, k, n)  # configuration problems (too few ports) surface here, once
    t_start = time.perf_counter()
    policy = topology_policy(topo)  # built once, before the workers fork (they inherit it)
    fmt = output_format(output) if output is not None else "pcap"
    # every capture: a ring per worker in memory shared with this process, which merges them as they fill
    finals = {"output": output} if output is not None else {}
    finals.update({f"taps/{link}": Path(taps) / f"{link}.{fmt}" for link in TAP_LINKS} if taps is not None else {})
    # a classic pcap's records are made by the workers, and written from the rings as they are
    rings = {name: CaptureRings(1 if name.removeprefix("taps/") in SHARED_TAPS else n, records=fmt == "pcap")
             for name in finals}
    if drops is not None:  # the dropped packets, each with its drop's key (its comment, DropComments)
        rings["drops"] = CaptureRings(n)
    tmp, parts = None, [{} for _ in range(n)]
    clear_abandoned(SCRATCH, WORKERS_PREFIX)
    if flow_log is not None or threat_log is not None:  # the logs go through files, merged at the end
        where = _scratch(os.path.getsize(source))
        tmp, parts = shard_files(n, None, None, flow_log, f"{WORKERS_PREFIX}{os.getpid()}-", where, threat_log)
    procs, conns, mergers, logs = [], [], [], []
    progress = None
    results: list = [None] * n
    # the parent's chunks reuse each other's freed buffers too, and the workers inherit the setting
    with replay_memory():
        try:
            # the parent reads n chunks at a time and each worker replays its shard of them: about ``chunk`` packets
            # per batch
            opts = {"seed": seed, "events": events, "chunk": chunk * n, "session_capacity": session_capacity,
                    "pickup": pickup, "format": fmt, "report": report is not None}
            size = os.path.getsize(source)
            cols = SharedColumns(size // MIN_RECORD + 1, n) if size and not _is_gzip(source) else None
            ctx = mp.get_context("fork")
            for k in range(n):
                mine, theirs = ctx.Pipe(duplex=True)
                p = ctx.Process(target=_worker, args=(k, n, topo, policy, source, cols, parts[k], rings, opts,
                                                      theirs, [*conns, mine], os.getpid()),
                                daemon=True)
                p.start()
                theirs.close()
                procs.append(p)
                conns.append(mine)
            if taps is not None:
                Path(taps).mkdir(parents=True, exist_ok=True)
            for name, final in finals.items():
                writer = PcapWriter(final, linktype=1 if fmt == "pcap" else None, format=fmt)
                mergers.append(RingMerger(rings[name], range(rings[name].n), writer))
            if drops is not None:
                comments = DropComments(policy.rule_names, topo.firewall_names())
                mergers.append(RingMerger(rings["drops"], range(n), DropsFile(drops, comments), tags=True))
            progress = Progress(size, quiet=quiet)
            merge = _Merge(mergers, procs, conns, results, source, cols, progress)
            sharder = Sharder(topo, n)
            if cols is not None:
                reader = read_pcap(source, chunk=chunk * n, parse=True, strict=False, use_mmap=True)
                reader.release_pages = True  # the parent needs each chunk's headers only while it shards them
                try:
                    _feed(reader, cols, sharder, conns, merge)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # a worker ended early: its message (or its absence) says why
                finally:
                    reader.close()
            merge.drain()
            if flow_log is not None:
                out = OutputFile(flow_log, text=True)
                logs.append(out)
                _merge_flow_logs_into([pt["flow_log"] for pt in parts], flow_log, out.file)
            if threat_log is not None:
                out = OutputFile(threat_log, text=True)
                logs.append(out)
                _merge_threat_logs_into([pt["threat_log"] for pt in parts], out.file)
            for m in mergers:
                m.close()
            mergers = []
            for out in logs:
                out.commit()
            logs = []
        finally:
            if progress is not None:
                progress.close()
            for m in mergers:
                m.abort()
            for out in logs:
                out.discard()
            for c in conns:
                c.close()
            for p in procs:
                p.join(1)
                if p.is_alive():
                    p.terminate()
                    p.join()
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
    summary = merge_summaries([r[1] for r in results], time.perf_counter() - t_start)
    summary.workers = n
    if cols is not None:
        summary.shard_fragment_misses = sharder.frag_misses
    if report is not None:
        # the workers are done: their cores draw the charts
        write_report(report, title, ReportState.merge(ReportState.from_dict(r[2]) for r in results), summary,
                     processes=n)
    if summary.input_error is not None and strict:
        raise PcapError(source, None, summary.input_error.removeprefix(f"{source}: "))
    return summary


def check_destinations(topo: Topology, source, output, taps, flow_log, events, threat_log=None,
                       drops=None, report=None) -> None:
    """The checks of :meth:`Pipeline.run`, on the real destinations (the shards write rings and temporary logs)."""
    fmt = output_format(output) if output is not None else "pcap"
    tap_paths = [Path(taps) / f"{k}.{fmt}" for k in TAP_LINKS] if taps is not None else []
    if flow_log is not None:
        FlowLogWriter.check_path(flow_log)
    if threat_log is not None:
        ThreatLogWriter.check_path(threat_log)
    if drops is not None:
        DropsWriter.check_path(drops)
    inputs = [source, events if isinstance(events, (str, os.PathLike)) else None]
    if topo.source and os.path.isfile(topo.source):
        inputs.append(topo.source)
    if report is not None:
        check_report_path(report, inputs)
    refuse_overlap(inputs, [output, flow_log, threat_log, drops, report, *tap_paths])
    if taps is not None and Path(taps).exists() and not Path(taps).is_dir():
        raise ConfigError(f"{taps}: --taps needs a folder, and this is a file")


def shard_files(n: int, output, taps, flow_log, prefix: str, where=None, threat_log=None) -> tuple[Path, list[dict]]:
    """A temporary folder in ``where`` (default: beside the destination; remove it when done) and, in it, where
    shard ``k`` writes its ``output``, ``taps``, ``flow_log`` and ``threat_log`` (None where the run writes none),
    as :func:`merge_outputs` takes them."""
    if where is None:
        dest = next((d for d in (output, flow_log, threat_log) if d is not None), None)
        where = Path(dest).parent if dest is not None else None
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=where))
    parts = []
    for k in range(n):
        d = tmp / str(k)
        d.mkdir()
        parts.append({"output": d / "output.pcap" if output is not None else None,
                      "taps": d / "taps" if taps is not None else None,
                      "flow_log": d / f"flows{Path(flow_log).suffix}" if flow_log is not None else None,
                      "threat_log": d / "threats.jsonl" if threat_log is not None else None})
    return tmp, parts


# ---------------------------------------------------------------------------------------------------- merging
def merge_outputs(parts: list[dict], output, taps, flow_log) -> None:
    """Merge the shards' outputs (``parts[k]``: the paths shard ``k`` wrote its ``output``, ``taps`` folder and
    ``flow_log`` to, as pcap) into the destinations, in time order, in this process (``run_parallel`` has its
    workers copy the records instead)."""
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


def _pcap_header() -> bytes:
    """The file header :class:`PcapWriter` gives an Ethernet capture (what the merge writes, and the workers)."""
    buf = io.BytesIO()
    PcapWriter(buf, linktype=1).close()
    return buf.getvalue()


def record_index(path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ts_ns, offset, length)`` of every record (header included) of a classic pcap file as
    :class:`PcapWriter` writes an Ethernet capture; ValueError for any other file."""
    with open(path, "rb") as fh:
        head = fh.read(len(_pcap_header()))
    if head != _pcap_header():
        raise ValueError(f"{path}: not a capture in the merge's own format (nanosecond Ethernet pcap)")
    reader = read_pcap(path, chunk=1 << 20, parse=False, use_mmap=True)
    ts, off, length = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0, np.uint32)]
    start = reader.offset
    for b in reader:
        ts.append(b.ts_ns)
        off.append(b.off + (start - PCAP_RECORD_HEADER))
        length.append(b.caplen + np.uint32(PCAP_RECORD_HEADER))
        start = reader.offset
    return np.concatenate(ts), np.concatenate(off), np.concatenate(length)


def merge_plan(ts: list[np.ndarray], length: list[np.ndarray], header: int) -> tuple[int, list[np.ndarray]]:
    """Where the records of several captures go in their merge: in time order (a stable sort: equal timestamps keep
    the order of the parts, then each part's), after a ``header``-byte file header. Returns the merged file's size
    and, for each part, the file offset of each of its records."""
    total, dest, _ = _plan(ts, length, header)
    return total, np.split(dest, np.cumsum([t.shape[0] for t in ts[:-1]]))


def _plan(ts, length, header: int) -> tuple[int, np.ndarray, np.ndarray]:
    """:func:`merge_plan` over the parts put end to end: the size, every record's offset, and the merged order."""
    lens = np.concatenate([np.zeros(0, np.int64), *(x.astype(np.int64) for x in length)])
    order = np.argsort(np.concatenate([np.zeros(0, np.int64), *ts]), kind="stable")
    end = np.cumsum(lens[order])
    dest = np.empty(lens.shape[0], np.int64)
    dest[order] = end - lens[order] + header
    return header + (int(end[-1]) if end.shape[0] else 0), dest, order


def _stretches(index, n: int) -> tuple[int, list[tuple[np.ndarray, ...]]]:
    """The merge of the captures whose :func:`record_index` are ``index`` (after the merge's file header), cut into
    ``n`` stretches of the merged file of about equal bytes: the merged file's size and, for each stretch, the
    records it holds as ``(part, offset in the part, length, offset in the merged file)``, in file order."""
    header = len(_pcap_header())
    total, dest, order = _plan([x[0] for x in index], [x[2] for x in index], header)
    part = np.concatenate([np.zeros(0, np.int32), *(np.full(x[0].shape[0], i, np.int32) for i, x in enumerate(index))])
    off = np.concatenate([np.zeros(0, np.int64), *(x[1] for x in index)])[order]
    length = np.concatenate([np.zeros(0, np.uint32), *(x[2] for x in index)])[order]
    part, dest = part[order], dest[order]
    end = dest + length
    cuts = np.searchsorted(end, [(end[-1] if end.shape[0] else 0) * k // n for k in range(1, n)], side="right")
    bounds = [0, *cuts.tolist(), dest.shape[0]]
    return total, [(part[a:b], off[a:b], length[a:b], dest[a:b]) for a, b in itertools.pairwise(bounds)]


def place_records(srcs, part: np.ndarray, off: np.ndarray, length: np.ndarray, dest, dest_off: np.ndarray) -> None:
    """Write each record ``i``, ``srcs[part[i]][off[i]:+length[i]]``, at ``dest_off[i]`` in the file ``dest`` (already
    sized; the records in file order, back to back): gathered from maps of the sources into a buffer, written
    with ``pwrite``. Several processes may fill disjoint stretches of one file at once."""
    n = off.shape[0]
    if n == 0:
        return
    from .._kernels.parse import gather_packets

    maps = {}
    try:
        for i in np.flatnonzero(np.bincount(part, minlength=len(srcs))).tolist():
            with open(srcs[i], "rb") as fs:
                maps[i] = mmap.mmap(fs.fileno(), 0, access=mmap.ACCESS_READ)
        views = {i: np.frombuffer(m, np.uint8) for i, m in maps.items()}
        end = dest_off + length
        buf = np.empty(max(PLACE_BUFFER, int(length.max())), np.uint8)
        fd = os.open(dest, os.O_WRONLY)
        try:
            a = 0
            while a < n:
                base = int(dest_off[a])
                b = max(a + 1, int(np.searchsorted(end, base + buf.shape[0], side="right")))
                sel = part[a:b]
                for i, view in views.items():
                    rows = np.flatnonzero(sel == i) + a
                    if rows.shape[0]:
                        gather_packets(view, off[rows], length[rows], buf, dest_off[rows] - base)
                size = int(end[b - 1]) - base
                if os.pwrite(fd, buf[:size], base) != size:
                    raise OSError(f"{dest}: short write")
                a = b
        finally:
            os.close(fd)
        del views
    finally:
        for m in maps.values():
            try:
                m.close()
            except BufferError:  # an error left a view of it alive: the map goes with the view
                pass


def _reserve(out: OutputFile, size: int) -> None:
    """Give the file its final size with its blocks allocated: a full disk fails here, not in a worker's map."""
    out.file.flush()
    fd = out.file.fileno()
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as e:
        if e.errno not in (95, 22):  # EOPNOTSUPP, EINVAL: the file system cannot preallocate
            raise type(e)(e.errno, e.strerror, out.path) from None
        os.ftruncate(fd, size)


def merge_pcaps(paths, dest, chunk: int = 1 << 16) -> int:
    """Merge the captures at ``paths`` into ``dest`` in time order (a stable sort: equal timestamps keep the order
    of ``paths``, then each file's). Returns the packets written.

    Captures in the merge's own format (as the workers write them) into a classic pcap: the record index of each
    file, one plan, one copy of each record; anything else goes through :class:`PcapWriter` (``chunk`` packets
    per write)."""
    paths = [p for p in paths if os.path.exists(p)]
    if output_format(dest) == "pcap":
        try:
            index = [record_index(p) for p in paths]
        except (ValueError, PcapError):
            index = None
        if index is not None:
            total, jobs = _stretches(index, 1)
            with OutputFile(dest) as out:
                out.file.write(_pcap_header())
                _reserve(out, total)
                place_records(paths, *jobs[0][:3], out.tmp, jobs[0][3])
            return int(sum(x[0].shape[0] for x in index))
    return _merge_batches(paths, dest, chunk)


def _whole(path) -> PacketBatch:
    """Every record of a capture, as one batch over a memory map of the file."""
    if os.path.getsize(path) == 0:
        return PacketBatch.empty()
    reader = read_pcap(path, chunk=1 << 16, parse=False, use_mmap=True)
    cols: dict[str, list] = {"off": [], "caplen": [], "wirelen": [], "ts_ns": [], "linktype": []}
    start = reader.offset  # a batch's offsets count from the record the reader stood at
    for b in reader:
        cols["off"].append(b.off + start)
        for c in ("caplen", "wirelen", "ts_ns", "linktype"):
            cols[c].append(getattr(b, c))
        start = reader.offset
    if not cols["off"]:
        return PacketBatch.empty()
    data = np.memmap(path, np.uint8, mode="r")
    return PacketBatch(data, *(np.concatenate(cols[c]) for c in ("off", "caplen", "wirelen", "ts_ns", "linktype")))


def _merge_batches(paths, dest, chunk: int) -> int:
    """:func:`merge_pcaps` through batches: every record re-encoded by a :class:`PcapWriter` into ``dest`` (whose
    name gives the format)."""
    batches = [_whole(p) for p in paths]
    if not batches:
        batches = [PacketBatch.empty()]
    ts = np.concatenate([b.ts_ns for b in batches])
    src = np.repeat(np.arange(len(batches), dtype=np.int32), [len(b) for b in batches])
    row = np.concatenate([np.arange(len(b), dtype=np.int64) for b in batches])
    order = np.argsort(ts, kind="stable")
    fmt = output_format(dest)
    with PcapWriter(dest, linktype=1 if fmt == "pcap" else None, format=fmt) as w:
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
    equal times keep the shard order). ``dest`` is written under a temporary name and renamed when complete."""
    with OutputFile(dest, text=True) as out:
        return _merge_flow_logs_into(paths, dest, out.file)


def _merge_flow_logs_into(paths, dest, fh) -> int:
    """:func:`merge_flow_logs` into the open text file ``fh`` (``dest`` names the format)."""
    csv_format = Path(dest).suffix.lower() == ".csv"
    rows = []
    header = None
    for i, p in enumerate(paths):
        with open(p, newline="") as src:
            if csv_format:
                r = csv.reader(src)
                header = next(r, header)
                li, fi = header.index("last_seen"), header.index("first_seen")
                rows.extend(((float(x[li]), float(x[fi]), i), x) for x in r)
            else:
                for line in src:
                    d = json.loads(line)
                    rows.append(((d["last_seen"], d["first_seen"], i), line))
    rows.sort(key=lambda t: t[0])
    if csv_format:
        w = csv.writer(fh)
        if header is not None:
            w.writerow(header)
        w.writerows(x for _, x in rows)
    else:
        fh.writelines(x for _, x in rows)
    return len(rows)


def _merge_threat_logs_into(paths, fh) -> int:
    """The workers' threat logs into the open text file ``fh``, in time order (equal times keep the shard order,
    then each shard's)."""
    rows = []
    for i, p in enumerate(paths):
        with open(p) as src:
            rows.extend(((json.loads(line)["ts"], i), line) for line in src)
    rows.sort(key=lambda t: t[0])
    fh.writelines(x for _, x in rows)
    return len(rows)


def merge_inspection(parts: list[dict], top: int = TOP_NAMES) -> dict:
    """One inspection summary from the shards' (each with every name, ``Pipeline.inspection_summary(None)``):
    counters add up, and the ``top`` applications, categories and threats are those of the sums."""
    parts = [p for p in parts if p]
    if not parts:
        return {}
    counters: dict[str, int] = {}
    out: dict = {"counters": counters}
    for p in parts:
        for k, v in p.get("counters", {}).items():
            counters[k] = counters.get(k, 0) + v
    for key in ("applications", "categories", "threats"):
        tally: dict[str, int] = {}
        for p in parts:
            for name, v in p.get(key, ()):
                tally[name] = tally.get(name, 0) + v
        out[key] = sorted(tally.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    return out


# summary fields that describe the capture every worker read whole (the same in each shard): taken once
_SHARED_FIELDS = ("input_error", "input_skipped_bytes", "input_skipped_records", "events",
                  "shard_fragment_misses")


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
    s.inspection = merge_inspection([p.get("inspection", {}) for p in parts])
    s.capture_seconds = max((p.get("capture_seconds", 0.0) for p in parts), default=0.0)
    s.seconds = seconds
    return s


__all__ = [
    "ShardFeed",
    "Sharder",
    "SharedColumns",
    "check_destinations",
    "default_workers",
    "merge_flow_logs",
    "merge_inspection",
    "merge_outputs",
    "merge_pcaps",
    "merge_plan",
    "merge_summaries",
    "place_records",
    "port_slice",
    "record_index",
    "run_parallel",
    "shard_files",
    "shard_pipeline",
    "shard_topology",
]
