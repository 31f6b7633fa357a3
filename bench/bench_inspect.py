"""Content inspection benchmarks: the Hyperscan streaming multi-literal kernel's GB/s on 1,000 literals, signature
compile time and memory at 1K and 10K signatures, and the standalone inspection path (stream, App-ID, extraction,
1,000 content signatures) on the real http_espn capture beside Suricata --runmode single on the same file and rules.

Run: GWLB_FAST_BENCH_FULL=1 python -m pytest bench/bench_inspect.py --benchmark-enable
"""
import json
import random
import shutil
import subprocess
import time

import numpy as np
import pytest
from gwlb_fast._kernels.match import Literals

import gwlb_fast as gf
from gwlb_fast.inspect.inspector import inspect_flows
from gwlb_fast.inspect.signatures import SignatureSet, parse_rules
from tests.shared_data import data_path

ESPN = data_path("captures", "real", "http_espn.pcapng")


def random_rules(n: int, seed: int = 1) -> str:
    """n content signatures with random 8-12 byte lowercase literals (alert tcp any any -> any any)."""
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        lit = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(8, 12)))
        nc = " nocase;" if i % 2 else ""
        lines.append(f'alert tcp any any -> any any (msg:"r{i}"; content:"{lit}";{nc} sid:{100000 + i};)')
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def stream_input():
    """32 MB of random bytes as 1460-byte segments of 64 streams, laid out as the stream kernel hands them over."""
    seg, per = 1460, 360
    n = 64 * per
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, n * seg, dtype=np.uint8)
    sd = np.repeat(np.arange(64, dtype=np.int64), per)
    k = np.tile(np.arange(per, dtype=np.int64), 64)
    lo = 8192 + k * seg          # past the head: every byte is read from the packet
    return {"data": data, "sd": sd, "lo": lo, "hi": lo + seg, "seg": lo.copy(),
            "pay": np.arange(n, dtype=np.int64) * seg, "proto": np.full(n, 6, np.uint8),
            "head": np.zeros((64, 64), np.uint8), "nbytes": n * seg}


@pytest.mark.benchmark(group="inspect-literals-1k")
def test_hyperscan_streaming_1k_literals(benchmark, stream_input, rate):
    sigs = parse_rules(random_rules(1000))
    pats = [(c.pattern.lower() if c.nocase else c.pattern, c.nocase) for s in sigs for c in s.contents]
    lit = Literals([p for p, _ in pats], [nc for _, nc in pats], 64)
    ev = [np.empty(1 << 18, t) for t in (np.int64, np.uint8, np.int32, np.int64, np.int64)]
    x = stream_input

    def scan():
        lit.reset(np.arange(64, dtype=np.int64))   # each stream then restarts at its first segment (a gap)
        return lit.scan_streams(x["data"], x["sd"], x["lo"], x["hi"], x["seg"], x["pay"], x["proto"], x["head"],
                                *ev)
    benchmark(scan)
    rate(len(x["sd"]), x["nbytes"])


@pytest.mark.parametrize("n", [1_000, 10_000])
def test_signature_compile_time_and_memory(n, benchmark):
    text = random_rules(n)
    t0 = time.perf_counter()
    sigs = parse_rules(text)
    t_parse = time.perf_counter() - t0

    def compile_():
        return SignatureSet(sigs, 8192)
    ss = benchmark.pedantic(compile_, rounds=1, iterations=1)
    benchmark.extra_info.update({"signatures": n, "parse_s": round(t_parse, 3),
                                 "memory_MB": round(ss.memory_bytes / 1e6, 2),
                                 "hyperscan_db_kB": round(ss.stream.database_bytes / 1e3, 1),
                                 "stream_state_bytes": ss.stream.stream_bytes})


@pytest.mark.skipif(not ESPN.exists(), reason="real captures not available")
@pytest.mark.benchmark(group="inspect-espn-1k-signatures")
def test_inspect_flows_espn(benchmark, rate, tmp_path):
    rules = tmp_path / "r.rules"
    rules.write_text(random_rules(1000))
    sigs = parse_rules(rules.read_text())
    batches = list(gf.read_pcap(ESPN))
    n = sum(len(b) for b in batches)
    benchmark(lambda: inspect_flows(batches, signatures=sigs, alerts=[], capacity=4096, flow_capacity=1 << 14))
    rate(n)
    if shutil.which("suricata"):
        t0 = time.perf_counter()
        subprocess.run(["suricata", "-r", str(ESPN), "-S", str(rules), "-l", str(tmp_path), "-k", "none",
                        "--runmode", "single"], check=True, capture_output=True)
        wall = time.perf_counter() - t0
        stats = [json.loads(ln) for ln in (tmp_path / "eve.json").read_text().splitlines()]
        benchmark.extra_info["suricata_wall_s"] = round(wall, 3)
        benchmark.extra_info["suricata_events"] = len(stats)
