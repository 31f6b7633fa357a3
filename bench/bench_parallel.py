"""``run --workers N`` (gwlb_fast.parallel) beside one worker, on the bench workload and a high-churn workload, and
Suricata 7 with no rules reading the same capture (skipped when absent).

Workloads: ``bench`` is bench_pipeline's (1,000-rule policy, PACKETS packets in PACKETS/50 flows); ``churn`` has
PACKETS packets in PACKETS/10 flows (most packets start or answer a new flow). Full mode (``GWLB_FAST_BENCH_FULL=1``)
uses 1,000,000 packets, the smoke run 20,000. Each round writes a new output (the last one is removed outside the
timing). One worker is ``Pipeline.run``, the baseline; two workers are ``run_parallel(workers=2)`` (forked
processes, each mapping the capture and replaying its flow shard, outputs merged in time order).
"""
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import gwlb_fast as gf
from gwlb_fast import synth
from gwlb_fast.parallel import run_parallel
from gwlb_fast.pipeline import Pipeline

sys.path.insert(0, str(Path(__file__).parent))
from bench_pipeline import FULL, PACKETS, policy_topology

WORKLOADS = {"bench": max(1, PACKETS // 50), "churn": max(1, PACKETS // 10)}
_RESULTS: dict[tuple[str, int], float] = {}


@pytest.fixture(scope="module", params=sorted(WORKLOADS))
def workload(request, tmp_path_factory):
    name = request.param
    d = tmp_path_factory.mktemp(f"parallel-{name}")
    topo = d / "topology-1k.yaml"
    topo.write_text(policy_topology())
    batch = synth.generate(flows=WORKLOADS[name], packets=PACKETS, seed=0)
    cap = d / "in.pcap"
    gf.write_pcap(cap, batch)
    return {"name": name, "topo": topo, "cap": cap, "dir": d, "bytes": int(batch.caplen.sum())}


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


@pytest.mark.skipif(shutil.which("suricata") is None, reason="suricata not installed")
def test_suricata_no_rules(benchmark, rate, workload, tmp_path):
    """The peer: Suricata 7 reading the same capture, no rules, one thread."""
    benchmark.group = f"run --workers, {workload['name']} workload, {PACKETS} packets"
    rules = tmp_path / "empty.rules"
    rules.write_text("")
    logs = tmp_path / "logs"

    def setup():
        shutil.rmtree(logs, ignore_errors=True)
        logs.mkdir()
        return (), {}

    def run():
        t = time.perf_counter()
        subprocess.run(["suricata", "-r", str(workload["cap"]), "-k", "none", "--runmode", "single", "-l",
                        str(logs), "-S", str(rules)], check=True, capture_output=True)
        return time.perf_counter() - t

    benchmark.pedantic(run, setup=setup, rounds=3 if FULL else 1, iterations=1)
    rate(PACKETS, workload["bytes"])
