"""End to end: ``Pipeline.from_yaml(topology).run(in.pcap, out.pcap)`` (taps off) against the same path scripted on
dpkt (bench/reference_pipeline.py), on a synthetic capture (``gwlb_fast.synth``) and a 1,000-rule policy.

Two workloads of the same traffic mix: ``bench`` (50 packets per flow) and ``churn`` (10 packets per flow: five
times the flows, so five times the session, flow-table and NAT-mapping set-ups and expiries). Sizes: the smoke run
(CI, ``--benchmark-disable``) uses 20,000 packets for the pipeline and 2,000 for the reference;
``GWLB_FAST_BENCH_FULL=1`` uses 1,000,000 packets (20,000 flows, churn 100,000) for the pipeline and the first 50,000
packets of the same capture for the reference, whose time is scaled per packet for the ratio (it is a per-packet
loop: its cost per packet does not depend on the capture's length). ``GWLB_FAST_BENCH_PACKETS`` and
``GWLB_FAST_BENCH_REF_PACKETS`` override the two sizes.

Beside them, on the same capture, Suricata with no rules (``--runmode single``, ``-k none``, a minimal
configuration with no outputs; skipped when it is not installed): the packet rate of an IDS that decodes every
packet and tracks its flows and does nothing else. Its wall and CPU times (the child's resource usage), less those
of a one-packet run of the same command (start-up), give its rate; on a shared machine the CPU-time ratio is the
steadier one.

The policy (:func:`policy_topology`): the example topology with ``n_rules - 4`` generated rules placed before the
example's four, so that the traffic is still classified by the example's rules after scanning all the others (the
worst case of a first-match scan, and what a policy with a long list of specific rules above a general tail does).
"""
import os
import random
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

import gwlb_fast as gf
from gwlb_fast import synth
from gwlb_fast.config import example_topology_text
from gwlb_fast.pipeline import Pipeline

sys.path.insert(0, str(Path(__file__).parent))  # bench/reference_pipeline.py
from reference_pipeline import ReferencePipeline

FULL = os.environ.get("GWLB_FAST_BENCH_FULL") == "1"
PACKETS = int(os.environ.get("GWLB_FAST_BENCH_PACKETS", "1000000" if FULL else "20000"))
REF_PACKETS = min(PACKETS, int(os.environ.get("GWLB_FAST_BENCH_REF_PACKETS", "50000" if FULL else "2000")))
#: packets per flow of each workload
WORKLOADS = {"bench": 50, "churn": 10}
N_RULES = 1000

# destinations of the generated rules: blocks that the synthetic Internet hosts never use (private, shared address
# space, benchmarking), so that the generated rules never match the example traffic
_RULE_BLOCKS = ("172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "198.18.0.0/15")
_SERVICES = ([22], [25], [53], [80], [443], [80, 443], [3306], [5432], [6379], [8080, 8443], ["1024-65535"],
             ["8000-8999"], [389, 636], [123], [161, 162], [514])


def generated_rules(n: int, seed: int = 0) -> list[dict]:
    """``n`` rules in the YAML form of DESIGN.md section 6, as a firewall admin accumulates them: a /24-/32
    destination inside a private, shared or benchmarking block, from the app subnet, one of its hosts or anywhere,
    TCP or UDP to a service's ports; 60 % allow, 30 % deny, 10 % drop."""
    rng = random.Random(seed)
    blocks = [(int.from_bytes(bytes(map(int, b.split("/")[0].split("."))), "big"), int(b.split("/")[1]))
              for b in _RULE_BLOCKS]
    out = []
    for i in range(n):
        base, plen = rng.choice(blocks)
        dlen = rng.choice((24, 24, 26, 28, 30, 32, 32))
        host = rng.getrandbits(32 - plen) & ~((1 << (32 - dlen)) - 1)
        d = base | host
        dst = f"{d >> 24}.{(d >> 16) & 255}.{(d >> 8) & 255}.{d & 255}/{dlen}"
        r = rng.random()
        src = ["10.1.1.0/24"] if r < 0.5 else ([f"10.1.1.{rng.randrange(10, 60)}/32"] if r < 0.8 else ["any"])
        ports = rng.choice(_SERVICES)
        proto = "udp" if ports in ([53], [123], [161, 162], [514]) else rng.choice(("tcp", "tcp", "tcp", "udp"))
        action = rng.choices(("allow", "deny", "drop"), (6, 3, 1))[0]
        out.append({"name": f"gen-{i:04d}", "source": src, "destination": [dst], "protocol": proto, "port": ports,
                    "action": action})
    return out


def policy_topology(n_rules: int = N_RULES, seed: int = 0) -> str:
    """The example topology's YAML text with an ``n_rules``-rule policy (generated rules, then the example's) and
    no what-if events."""
    topo = yaml.safe_load(example_topology_text())
    example = topo["security_policy"]["rules"]
    topo["security_policy"]["rules"] = generated_rules(n_rules - len(example), seed) + example
    topo.pop("events", None)
    return yaml.safe_dump(topo, sort_keys=False)


@pytest.fixture(scope="module", params=list(WORKLOADS))
def workload(request, tmp_path_factory):
    name = request.param
    d = tmp_path_factory.mktemp(f"pipeline-{name}")
    topo = d / "topology-1k.yaml"
    topo.write_text(policy_topology())
    flows = max(1, PACKETS // WORKLOADS[name])
    batch = synth.generate(flows=flows, packets=PACKETS, seed=0)
    cap = d / "in.pcap"
    gf.write_pcap(cap, batch)
    sub = d / "in-ref.pcap"
    gf.write_pcap(sub, batch[:REF_PACKETS])
    one = d / "in-one.pcap"
    gf.write_pcap(one, batch[:1])
    return {"name": name, "flows": flows, "topo": topo, "cap": cap, "ref_cap": sub, "one_cap": one, "dir": d,
            "bytes": int(batch.caplen.sum()), "ref_bytes": int(batch.caplen[:REF_PACKETS].sum())}


def _group(w) -> str:
    return f"pipeline run, {w['name']}: {N_RULES}-rule policy, {PACKETS} packets, {w['flows']} flows"


#: per workload: the candidate's median wall and CPU time per packet, for the ratios of the baselines
_RESULTS: dict[str, dict[str, float]] = {}


def _median(benchmark, fallback: float) -> float:
    stats = getattr(benchmark, "stats", None)
    return stats.stats.median if stats else fallback


def test_pipeline_run(benchmark, rate, workload):
    """The candidate: the whole run, pcap in to pcap out, taps off; the pipeline is built outside the timing."""
    benchmark.group = _group(workload)
    out = workload["dir"] / "out.pcap"
    summaries, cpu = [], []

    def setup():
        # each round writes a new file: removing the last round's output (and its cached pages) is not the run's work
        out.unlink(missing_ok=True)
        return (Pipeline.from_yaml(workload["topo"]),), {}

    def run(pipe):
        c = time.process_time()
        summaries.append(pipe.run(workload["cap"], out))
        cpu.append(time.process_time() - c)

    benchmark.pedantic(run, setup=setup, rounds=3 if FULL else 1, iterations=1)
    s = summaries[-1]
    assert s.packets_in == PACKETS
    # the generated rules never match the synthetic traffic: every hit is on one of the example's rules
    assert sum(v for k, v in s.rules.items() if k.startswith("gen-")) == 0
    assert s.rules["allow-web-out"] > 0 and s.rules["block-rest"] > 0
    dropped = sum(sum(v.values()) for v in s.drops.values())
    assert s.packets_out + dropped == PACKETS + s.generated
    rate(PACKETS, workload["bytes"])
    median = _median(benchmark, s.seconds)
    cpu_s = sorted(cpu)[len(cpu) // 2]
    _RESULTS[workload["name"]] = {"s_per_packet": median / PACKETS, "cpu_per_packet": cpu_s / PACKETS}
    benchmark.extra_info["stage_seconds"] = s.stage_seconds
    benchmark.extra_info["packets_out"] = s.packets_out
    # process CPU time: on a loaded machine the figure closest to "per core"
    benchmark.extra_info["cpu_seconds"] = round(cpu_s, 3)
    benchmark.extra_info["Mpps_cpu"] = round(PACKETS / cpu_s / 1e6, 3) if cpu_s else None
    print(f"\npipeline ({workload['name']}): {PACKETS} packets, median {median:.3f} s, {PACKETS / median / 1e6:.3f} Mpps, "
          f"{workload['bytes'] / median / 1e9:.3f} GB/s; CPU {cpu_s:.3f} s; stage seconds {s.stage_seconds}")


def test_dpkt_reference(benchmark, rate, workload):
    """The baseline: the same path scripted on dpkt, on the first REF_PACKETS packets of the same capture."""
    benchmark.group = _group(workload)
    out = workload["dir"] / "out-ref.pcap"
    results, cpu = [], []

    def setup():
        return (ReferencePipeline(workload["topo"]),), {}

    def run(ref):
        c = time.process_time()
        results.append(ref.run(workload["ref_cap"], out))
        cpu.append(time.process_time() - c)

    benchmark.pedantic(run, setup=setup, rounds=1, iterations=1)
    r = results[-1]
    assert r["packets_in"] == REF_PACKETS
    assert not any(k.startswith("gen-") for k in r["hits"])
    rate(REF_PACKETS, workload["ref_bytes"])
    median = _median(benchmark, 0.0)
    per_packet = median / REF_PACKETS
    benchmark.extra_info["scaled_to_packets"] = PACKETS
    benchmark.extra_info["scaled_seconds"] = round(per_packet * PACKETS, 3)
    cpu_pp = cpu[-1] / REF_PACKETS
    benchmark.extra_info["cpu_seconds"] = round(cpu[-1], 3)
    got = _RESULTS.get(workload["name"], {})
    cand, cand_cpu = got.get("s_per_packet"), got.get("cpu_per_packet")
    if cand and median:
        benchmark.extra_info["candidate_speedup"] = round(per_packet / cand, 1)
        benchmark.extra_info["candidate_speedup_cpu"] = round(cpu_pp / cand_cpu, 1) if cand_cpu else None
        print(f"\ndpkt reference ({workload['name']}): {REF_PACKETS} packets, {median:.3f} s, {REF_PACKETS / median / 1e3:.1f} kpps; "
              f"scaled to {PACKETS} packets {per_packet * PACKETS:.1f} s; pipeline is {per_packet / cand:.1f}x "
              f"faster (wall), {cpu_pp / cand_cpu:.1f}x (CPU time)")


def test_pass_through_floor(benchmark, rate, workload):
    """What pcap in to pcap out costs with no stage: the run's own reading (the map, pages given back behind it),
    its copy of each chunk into one arena, the parse and the write of every packet to a new file. The candidate's
    time less this one is what the stages cost."""
    from gwlb_fast.pcapio import PcapWriter, read_pcap
    from gwlb_fast.pipeline import _own_copy

    benchmark.group = _group(workload)
    out = workload["dir"] / "out-floor.pcap"
    counts, cpu = [], []

    def setup():
        out.unlink(missing_ok=True)
        return (), {}

    def run():
        c = time.process_time()
        reader = read_pcap(workload["cap"], chunk=65536, parse=False, strict=False)
        reader.release_pages = True
        arena, n = np.zeros(0, np.uint8), 0
        with PcapWriter(out) as w:
            for b in reader:
                if arena.shape[0] < b.nbytes:
                    arena = np.empty(b.nbytes + b.nbytes // 4, np.uint8)
                work = _own_copy(b, arena)
                work.parse_counts()
                w.write(work)
                n += len(work)
        counts.append(n)
        cpu.append(time.process_time() - c)

    benchmark.pedantic(run, setup=setup, rounds=3 if FULL else 1, iterations=1)
    assert counts[-1] == PACKETS
    rate(PACKETS, workload["bytes"])
    median = _median(benchmark, 0.0)
    cpu_s = sorted(cpu)[len(cpu) // 2]
    benchmark.extra_info["cpu_seconds"] = round(cpu_s, 3)
    got = _RESULTS.get(workload["name"], {})
    if got and median:
        stages = got["s_per_packet"] * PACKETS - median
        benchmark.extra_info["candidate_minus_floor_seconds"] = round(stages, 3)
        print(f"\npass-through floor ({workload['name']}): {PACKETS} packets, median {median:.3f} s, "
              f"{PACKETS / median / 1e6:.2f} Mpps; CPU {cpu_s:.3f} s; the pipeline's stages add {stages:.3f} s")


def test_reference_matches_pipeline(workload):
    """Same work: on the reference's subset, both write the same delivered packets, byte for byte, and agree on the
    rule hits."""
    import dpkt

    d = workload["dir"]
    s = Pipeline.from_yaml(workload["topo"]).run(workload["ref_cap"], d / "check-cand.pcap")
    r = ReferencePipeline(workload["topo"]).run(workload["ref_cap"], d / "check-ref.pcap")
    with open(d / "check-cand.pcap", "rb") as f:
        cand = [bytes(b) for _, b in dpkt.pcap.Reader(f)]
    with open(d / "check-ref.pcap", "rb") as f:
        ref = [bytes(b) for _, b in dpkt.pcap.Reader(f)]
    assert len(cand) == s.packets_out == r["delivered"]
    assert cand == ref
    assert {k: v for k, v in s.rules.items() if v} == r["hits"]


#: Suricata with no rules: no outputs, warnings only (its stats counters stay on, with no logger)
_SURICATA_YAML = """%YAML 1.1
---
outputs: []
logging:
  default-log-level: warning
  outputs:
    - console:
        enabled: yes
"""


def test_suricata_no_rules(benchmark, workload):
    """The peer: Suricata with no rules on the same capture (decode and flow tracking only), timed as a whole command
    (wall, and CPU time from the child's resource usage), less a one-packet run of the same command (its start-up);
    skipped when Suricata is not installed."""
    if shutil.which("suricata") is None:
        pytest.skip("suricata is not installed")
    benchmark.group = _group(workload)
    d = workload["dir"]
    conf = d / "suricata-no-rules.yaml"
    conf.write_text(_SURICATA_YAML)

    def suricata(cap, log):
        log.mkdir(exist_ok=True)
        r0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
        subprocess.run(["suricata", "-c", str(conf), "--runmode", "single", "-k", "none", "-S", os.devnull,
                        "-r", str(cap), "-l", str(log)], check=True, capture_output=True)
        wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
        return wall, (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)

    def median(runs, i):
        return sorted(r[i] for r in runs)[len(runs) // 2]

    one = [suricata(workload["one_cap"], d / "suricata-one") for _ in range(3)]
    runs = []
    benchmark.pedantic(lambda: runs.append(suricata(workload["cap"], d / "suricata-full")),
                       rounds=3 if FULL else 1, iterations=1)
    wall, cpu, start, start_cpu = median(runs, 0), median(runs, 1), median(one, 0), median(one, 1)
    benchmark.extra_info.update({"suricata_wall_s": round(wall, 3), "suricata_startup_s": round(start, 3),
                                 "suricata_cpu_s": round(cpu, 3), "suricata_startup_cpu_s": round(start_cpu, 3)})
    got = _RESULTS.get(workload["name"], {})
    if wall - start < 0.05 or not got:   # the smoke size: its packet time is lost in the start-up's noise
        return
    per_packet, per_packet_cpu = (wall - start) / PACKETS, (cpu - start_cpu) / PACKETS
    ratio, ratio_cpu = per_packet / got["s_per_packet"], per_packet_cpu / got["cpu_per_packet"]
    benchmark.extra_info.update({"suricata_Mpps": round(1e-6 / per_packet, 3),
                                 "suricata_Mpps_cpu": round(1e-6 / per_packet_cpu, 3),
                                 "candidate_ratio": round(ratio, 2), "candidate_ratio_cpu": round(ratio_cpu, 2)})
    print(f"\nsuricata, no rules ({workload['name']}): {PACKETS} packets, wall {wall:.3f} s (start-up {start:.3f} s), "
          f"CPU {cpu:.3f} s (start-up {start_cpu:.3f} s): {1e-6 / per_packet:.3f} Mpps, "
          f"{1e-6 / per_packet_cpu:.3f} Mpps (CPU); the pipeline's rate is {ratio:.2f}x its rate ({ratio_cpu:.2f}x "
          f"in CPU time)")
