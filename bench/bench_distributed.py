"""``run --ray`` (gwlb_fast.scale.distributed) beside the serial loop, on a local Ray instance (skipped without Ray).

Many captures: CAPTURES captures of PACKETS/CAPTURES packets each (bench_pipeline's 1,000-rule policy, 50 packets
per flow), replayed by ``replay_many`` (one Ray task per capture) beside a loop of ``Pipeline.run`` over them, the
baseline. One capture: PACKETS packets replayed by ``replay_split`` (byte ranges and flow shards, one per CPU of
the instance) beside one ``Pipeline.run``. Full mode (``GWLB_FAST_BENCH_FULL=1``) uses 1,000,000 packets, the smoke
run 20,000. The instance (every core, ``GWLB_FAST_BENCH_RAY_CPUS`` to change it) is started once, outside the
timing; its start-up time is recorded in ``extra_info``. Each round writes new outputs.
"""
import os
import sys
import time
from pathlib import Path

import pytest

import gwlb_fast as gf
from gwlb_fast import synth
from gwlb_fast.pipeline import Pipeline

sys.path.insert(0, str(Path(__file__).parent))
from bench_pipeline import FULL, PACKETS, policy_topology

CAPTURES = 4
CPUS = int(os.environ.get("GWLB_FAST_BENCH_RAY_CPUS", "0")) or None
_RESULTS: dict[tuple[str, str], float] = {}


@pytest.fixture(scope="module")
def ray_up():
    from gwlb_fast.scale.distributed import cluster_cpus, connected, require_ray

    try:
        require_ray(local=True)
    except ValueError:
        pytest.skip("ray not installed")

    t0 = time.perf_counter()
    with connected(num_cpus=CPUS) as ray:
        yield {"ray": ray, "start_seconds": round(time.perf_counter() - t0, 2), "cpus": cluster_cpus(ray)}


@pytest.fixture(scope="module")
def workload(tmp_path_factory):
    d = tmp_path_factory.mktemp("distributed")
    topo = d / "topology-1k.yaml"
    topo.write_text(policy_topology())
    per = PACKETS // CAPTURES
    caps = []
    for i in range(CAPTURES):
        caps.append(d / f"in{i}.pcap")
        gf.write_pcap(caps[-1], synth.generate(flows=max(1, per // 50), packets=per, seed=i))
    gf.write_pcap(d / "one.pcap", synth.generate(flows=max(1, PACKETS // 50), packets=PACKETS, seed=0))
    return {"topo": topo, "caps": caps, "one": d / "one.pcap", "dir": d}


def _record(benchmark, ray_up, key, packets, seconds_fallback):
    stats = getattr(benchmark, "stats", None)
    median = stats.stats.median if stats else seconds_fallback
    _RESULTS[key] = median
    benchmark.extra_info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    benchmark.extra_info["ray_start_seconds"] = ray_up["start_seconds"]
    benchmark.extra_info["ray_cpus"] = ray_up["cpus"]
    base = _RESULTS.get((key[0], "serial"))
    if key[1] == "ray" and base:
        benchmark.extra_info["speedup_vs_serial"] = round(base / median, 2)
        print(f"\n{key[0]}: Ray {median:.3f} s vs serial {base:.3f} s: {base / median:.2f}x on {ray_up['cpus']} "
              f"CPUs ({packets} packets, load average {os.getloadavg()[0]:.1f})")


@pytest.mark.parametrize("how", ["serial", "ray"])
def test_many_captures(benchmark, rate, ray_up, workload, how):
    from gwlb_fast.scale.distributed import replay_many

    benchmark.group = f"run --ray, {CAPTURES} captures, {PACKETS} packets in all"
    out = workload["dir"] / f"many-{how}"
    totals = []

    def run():
        out.mkdir(exist_ok=True)
        if how == "serial":
            ss = [Pipeline.from_yaml(workload["topo"]).run(c, out / c.name) for c in workload["caps"]]
            totals.append(sum(s.packets_in for s in ss))
        else:
            totals.append(replay_many(workload["topo"], workload["caps"], out).total.packets_in)

    benchmark.pedantic(run, rounds=3 if FULL else 1, iterations=1)
    assert totals[-1] == PACKETS // CAPTURES * CAPTURES
    rate(totals[-1])
    _record(benchmark, ray_up, ("many", how), totals[-1], 0.0)


@pytest.mark.parametrize("how", ["serial", "ray"])
def test_split_capture(benchmark, rate, ray_up, workload, how):
    from gwlb_fast.scale.distributed import replay_split

    benchmark.group = f"run --ray, one capture split, {PACKETS} packets"
    out = workload["dir"] / f"split-{how}.pcap"
    summaries = []

    def setup():
        out.unlink(missing_ok=True)
        return (), {}

    def run():
        if how == "serial":
            summaries.append(Pipeline.from_yaml(workload["topo"]).run(workload["one"], out))
        else:
            summaries.append(replay_split(workload["topo"], workload["one"], out))

    benchmark.pedantic(run, setup=setup, rounds=3 if FULL else 1, iterations=1)
    assert summaries[-1].packets_in == PACKETS
    rate(PACKETS)
    _record(benchmark, ray_up, ("split", how), PACKETS, summaries[-1].seconds)
