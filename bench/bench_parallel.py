"""``run --workers N`` (gwlb_fast.scale.parallel) beside one worker, on the bench workload and a high-churn workload.

Workloads: bench_pipeline's own captures and topology (its ``workload`` fixture: 1,000-rule policy; ``bench`` has
PACKETS packets in PACKETS/50 flows, ``churn`` PACKETS/10 flows, most packets starting or answering a new flow);
Suricata 7 with no rules on the same captures is bench_pipeline's ``test_suricata_no_rules``. Full mode (``GWLB_FAST_BENCH_FULL=1``)
uses 1,000,000 packets, the smoke run 20,000. Each round writes a new output (the last one is removed outside the
timing). One worker is ``Pipeline.run``, the baseline; two workers are ``run_parallel(workers=2)`` (the parent
reads and shards the capture, forked workers replay their shards into shared rings, the parent merges them into the
output as they fill).

As a script, it times the command line instead, ``--workers 1`` and ``--workers 2`` alternately on both workloads
(wall time and the CPU time of the processes, medians of ``--rounds`` rounds, with the load average), and, in each
round, the two workloads' one-worker runs started at once: the ceiling of the machine for two processes that share
nothing (each run's wall time against its run alone; on a machine whose two cores are fully its own, about 1x)::

    python bench/bench_parallel.py [--packets 1000000] [--rounds 5] [--dir DIR]
"""
import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import gwlb_fast as gf
from gwlb_fast import synth
from gwlb_fast.pipeline import Pipeline
from gwlb_fast.scale.parallel import run_parallel

sys.path.insert(0, str(Path(__file__).parent))
import bench_pipeline
from bench_pipeline import FULL, PACKETS, WORKLOADS, policy_topology

workload = bench_pipeline.workload  # the fixture: the same captures as the one-core benchmark

_RESULTS: dict[tuple[str, int], float] = {}


@pytest.mark.parametrize("workers", [1, 2])
def test_workers(benchmark, rate, workload, workers):
    benchmark.group = f"run --workers, {workload['name']} workload, {PACKETS} packets"
    out = workload["dir"] / f"out-{workers}.pcap"
    summaries = []

    def setup():
        out.unlink(missing_ok=True)
        return (), {}

    def run():
        if workers == 1:
            summaries.append(Pipeline.from_yaml(workload["topo"]).run(workload["cap"], out))
        else:
            summaries.append(run_parallel(workload["topo"], workload["cap"], out, workers=workers))

    benchmark.pedantic(run, setup=setup, rounds=3 if FULL else 1, iterations=1)
    s = summaries[-1]
    assert s.packets_in == PACKETS
    rate(PACKETS, workload["bytes"])
    stats = getattr(benchmark, "stats", None)
    median = stats.stats.median if stats else s.seconds
    _RESULTS[(workload["name"], workers)] = median
    benchmark.extra_info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    benchmark.extra_info["stage_seconds"] = s.stage_seconds
    one = _RESULTS.get((workload["name"], 1))
    if workers > 1 and one:
        benchmark.extra_info["speedup_vs_1"] = round(one / median, 2)
        print(f"\n{workload['name']}: --workers {workers} {median:.3f} s vs 1 worker {one:.3f} s: "
              f"{one / median:.2f}x (load average {os.getloadavg()[0]:.1f})")


def cli_round(topo: Path, cap: Path, out: Path, workers: int) -> tuple[float, float]:
    """One ``gwlb-fast run`` (a new output): wall seconds and the CPU seconds (user + system) of its processes."""
    out.unlink(missing_ok=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "gwlb_fast.cli", "run", str(topo), str(cap), "-o", str(out), "--workers",
                    str(workers), "--quiet"], check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def pair_round(topo: Path, caps: dict, d: Path) -> dict[str, float]:
    """The one-worker runs of every capture in ``caps`` started at once: each one's wall seconds."""
    procs, t = {}, time.perf_counter()
    for name, cap in caps.items():
        out = d / f"pair-{name}.pcap"
        out.unlink(missing_ok=True)
        procs[name] = subprocess.Popen([sys.executable, "-m", "gwlb_fast.cli", "run", str(topo), str(cap), "-o",
                                        str(out), "--workers", "1", "--quiet"], stdout=subprocess.DEVNULL)
    walls: dict[str, float] = {}
    while len(walls) < len(procs):
        for name, p in procs.items():
            if name not in walls and p.poll() is not None:
                if p.returncode:
                    raise subprocess.CalledProcessError(p.returncode, p.args)
                walls[name] = time.perf_counter() - t
        time.sleep(0.002)
    return walls


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="gwlb-fast run --workers 1 vs 2, alternately, on both workloads")
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--dir", help="where the captures go (default: a temporary folder)")
    args = ap.parse_args(argv)
    d = Path(args.dir or tempfile.mkdtemp(prefix="bench-parallel-"))
    d.mkdir(parents=True, exist_ok=True)
    try:
        return _rounds(args, d)
    finally:
        if not args.dir:
            shutil.rmtree(d, ignore_errors=True)


def _rounds(args, d: Path) -> int:
    topo = d / "topology-1k.yaml"
    topo.write_text(policy_topology())
    caps = {}
    for name, share in WORKLOADS.items():
        caps[name] = d / f"{name}-{args.packets}.pcap"
        if not caps[name].exists():
            gf.write_pcap(caps[name], synth.generate(flows=max(1, args.packets // share), packets=args.packets, seed=0))
    times: dict[tuple[str, int], list[tuple[float, float]]] = {}
    loads = []
    for r in range(args.rounds):
        for name, cap in caps.items():
            for workers in (1, 2):
                wall, cpu = cli_round(topo, cap, d / f"out-{workers}.pcap", workers)
                times.setdefault((name, workers), []).append((wall, cpu))
                loads.append(os.getloadavg()[0])
                print(f"round {r} {name} --workers {workers}: wall {wall:.3f} s, CPU {cpu:.3f} s, load {loads[-1]:.2f}",
                      file=sys.stderr)
        for name, wall in pair_round(topo, caps, d).items():
            times.setdefault((name, "pair"), []).append((wall, 0.0))
            print(f"round {r} {name} --workers 1 beside the other workload's: wall {wall:.3f} s", file=sys.stderr)
    print(f"{args.packets:,} packets, medians of {args.rounds} alternating rounds, load average "
          f"{min(loads):.2f}-{max(loads):.2f}")
    for name in caps:
        med = {w: [statistics.median(x[i] for x in times[(name, w)]) for i in (0, 1)] for w in (1, 2)}
        print(f"{name}: --workers 1 wall {med[1][0]:.3f} s CPU {med[1][1]:.3f} s | --workers 2 wall {med[2][0]:.3f} s "
              f"CPU {med[2][1]:.3f} s | speed-up {med[1][0] / med[2][0]:.2f}x")
    if len(caps) > 1:
        pair = {name: statistics.median(x[0] for x in times[(name, "pair")]) for name in caps}
        alone = {name: statistics.median(x[0] for x in times[(name, 1)]) for name in caps}
        slow = [pair[n] / alone[n] for n in caps]
        print("one-worker runs of both workloads at once: " + ", ".join(f"{n} {pair[n]:.3f} s" for n in caps)
              + f" ({min(slow):.2f}-{max(slow):.2f}x their time alone): two processes that share nothing get "
              f"{len(caps) / max(slow):.2f}x one here")
    return 0


if __name__ == "__main__":
    sys.exit(main())
