"""Content inspection benchmarks: the Hyperscan streaming multi-literal kernel's GB/s on 1,000 literals, signature
compile time and memory at 1K and 10K signatures, and the standalone inspection path (stream, App-ID, extraction,
1,000 content signatures) on the real http_espn capture beside Suricata --runmode single on the same file and rules;
and the full path (``Pipeline.run`` with App-ID rules, URL filtering on a custom category and 1,000 content
signatures) on a synthetic capture with application payloads (``synth.generate(..., payloads=True)``) beside Suricata
on the same capture and signature file, and the same run with inspection off (the example policy, L4 only).

Sizes of the full path: ``GWLB_FAST_BENCH_FULL=1`` 1,000,000 packets (20,000 flows: generated and written once per
session, about 5 s and 1 GB resident, 350 MB of capture in the module's temporary folder), else 5,000 (the smoke
pass); ``GWLB_FAST_BENCH_INSPECT_PACKETS`` overrides. At a million packets Suricata's packet time is several times
its start-up (about 0.5 s: loading and compiling the signatures), so its rate can be given with the start-up
subtracted: its whole command is timed (wall, and CPU time from the child's resource usage), less a one-packet run
of the same command, as ``bench_pipeline.py`` does for its no-rule run. The rounds alternate: before each round of
``Pipeline.run`` (3 with FULL, else 1) Suricata runs once on the capture and once on its first packet, so both sides
see the same load. Reported per run (``extra_info`` and a printed line): gwlb-fast's Mpps from the median wall and
the median CPU time of ``Pipeline.run`` (the pipeline is built outside the timing, ``build_s``), Suricata's Mpps
with its start-up subtracted (wall and CPU), the ratios (wall and CPU), and Suricata's whole-command wall beside
``Pipeline.run``'s. On a shared machine the CPU-time ratio is the steadier one.

Run: GWLB_FAST_BENCH_FULL=1 python -m pytest bench/bench_inspect.py -s --benchmark-enable -k full_path
"""
import json
import os
import random
import resource
import shutil
import subprocess
import time

import numpy as np
import pytest
import yaml

import gwlb_fast as gf
from gwlb_fast import synth
from gwlb_fast._kernels.match import Literals
from gwlb_fast.config import example_topology_text
from gwlb_fast.inspect.inspector import inspect_flows
from gwlb_fast.inspect.signatures import SignatureSet, parse_rules
from gwlb_fast.pipeline import Pipeline
from tests.shared_data import data_path

ESPN = data_path("captures", "real", "http_espn.pcapng")
FULL = os.environ.get("GWLB_FAST_BENCH_FULL") == "1"
PACKETS = int(os.environ.get("GWLB_FAST_BENCH_INSPECT_PACKETS", "1000000" if FULL else "5000"))
FLOWS = max(1, PACKETS // 50)


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


# ------------------------------------------------------------------------------ full path on synthetic payloads
#: signatures that fire on the synthetic payloads (the other 995 are random literals that never do)
_MATCHING_RULES = """\
alert http any any -> any any (msg:"shop host"; http.host; content:"shop.example"; sid:3001;)
alert http any any -> any any (msg:"index page"; http.uri; content:"/index2"; sid:3002;)
alert tls any any -> any any (msg:"login sni"; tls.sni; content:"login.example"; sid:3003;)
alert dns any any -> any any (msg:"mail query"; dns.query; content:"mail.example"; sid:3004;)
alert tcp any any -> any 80 (msg:"user agent"; flow:to_server; content:"gwlb-fast-synth"; sid:3005;)
"""


def inspect_topology(rules_file: str) -> str:
    """The example topology with App-ID rules, URL filtering (a custom category blocked, one alerted) and the
    signature file on every allowed rule."""
    topo = yaml.safe_load(example_topology_text())
    topo.pop("events", None)
    topo["security_policy"].update({
        "signatures": [rules_file],
        "url_categories": {"shopping": ["shop.example.net"], "news": ["*.example.org"]},
        "profiles": {"ips": {"threat": {"action": "default"}},
                     "web": {"url_filtering": {"block": ["shopping"], "alert": ["news"]}}},
        "rules": [
            {"name": "dns-out", "source": ["10.1.1.0/24"], "application": ["dns"], "service": "application-default",
             "profile": ["ips"], "action": "allow"},
            {"name": "web-out", "source": ["10.1.1.0/24"], "application": ["web-browsing", "ssl"],
             "service": "application-default", "profile": ["ips", "web"], "action": "allow"},
            {"name": "https-in", "destination": ["10.1.1.20/32"], "application": ["ssl"], "service": ["tcp/8443"],
             "profile": ["ips", "web"], "action": "allow"},
            {"name": "block-rest", "action": "deny"}]})
    return yaml.safe_dump(topo, sort_keys=False)


@pytest.fixture(scope="module")
def payload_workload(tmp_path_factory):
    d = tmp_path_factory.mktemp("inspect-full")
    rules = d / "sigs.rules"
    rules.write_text(random_rules(995) + _MATCHING_RULES)
    topo = d / "inspect.yaml"
    topo.write_text(inspect_topology(rules.name))
    off = d / "l4.yaml"
    t = yaml.safe_load(example_topology_text())
    t.pop("events", None)
    off.write_text(yaml.safe_dump(t, sort_keys=False))
    batch = synth.generate(flows=FLOWS, packets=PACKETS, seed=0, payloads=True)
    cap = d / "in.pcap"
    gf.write_pcap(cap, batch)
    one = d / "one.pcap"
    gf.write_pcap(one, batch[:1])
    return {"dir": d, "rules": rules, "topo": topo, "topo_off": off, "cap": cap, "one": one,
            "bytes": int(batch.caplen.sum())}


_FULL: dict[str, float] = {}


def _pipeline_rounds(benchmark, topo, cap, out, before_round=None):
    """Rounds of ``Pipeline.run`` (the pipeline built outside the timing); ``before_round()``, if given, runs
    before each round's build (outside the timing too)."""
    summaries, cpu, build = [], [], []

    def setup():
        if before_round is not None:
            before_round()
        out.unlink(missing_ok=True)
        t0 = time.perf_counter()
        pipe = Pipeline.from_yaml(topo)
        build.append(time.perf_counter() - t0)
        return (pipe,), {}

    def run(pipe):
        c = time.process_time()
        summaries.append(pipe.run(cap, out))
        cpu.append(time.process_time() - c)

    benchmark.pedantic(run, setup=setup, rounds=3 if FULL else 1, iterations=1)
    s = summaries[-1]
    assert s.packets_in == PACKETS
    stats = getattr(benchmark, "stats", None)
    median = stats.stats.median if stats else s.seconds
    cpu_s = sorted(cpu)[len(cpu) // 2]
    benchmark.extra_info.update({"packets": PACKETS, "Mpps": round(PACKETS / median / 1e6, 3),
                                 "cpu_seconds": round(cpu_s, 3),
                                 "Mpps_cpu": round(PACKETS / cpu_s / 1e6, 3) if cpu_s else None,
                                 "build_s": round(sorted(build)[len(build) // 2], 3),
                                 "stage_seconds": s.stage_seconds, "packets_out": s.packets_out})
    return s, median, cpu_s


def _median(xs):
    return sorted(xs)[len(xs) // 2]


@pytest.mark.benchmark(group="inspect-full-path-synthetic-payloads")
def test_full_path_inspection_on(benchmark, payload_workload):
    """Pipeline.run with App-ID rules, URL filtering and 1,000 content signatures on the synthetic capture with
    payloads, beside Suricata --runmode single on the same capture and signature file."""
    w = payload_workload
    have_suricata = shutil.which("suricata") is not None
    runs: dict[str, list] = {"full": [], "one_packet": []}

    def suricata():
        """One whole command on the capture and one on its first packet: (wall, CPU) of each."""
        for key, cap in (("full", w["cap"]), ("one_packet", w["one"])):
            log = w["dir"] / f"suricata-{key}"
            log.mkdir(exist_ok=True)
            r0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
            subprocess.run(["suricata", "-r", str(cap), "-S", str(w["rules"]), "-k", "none", "--runmode", "single",
                            "-l", str(log)], check=True, capture_output=True)
            wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
            runs[key].append((wall, (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)))

    s, median, cpu_s = _pipeline_rounds(benchmark, w["topo"], w["cap"], w["dir"] / "out-on.pcap",
                                        suricata if have_suricata else None)
    apps = dict(s.inspection["applications"])
    assert apps.get("web-browsing", 0) > 0 and apps.get("ssl", 0) > 0 and apps.get("dns", 0) > 0
    assert s.rules["web-out"] > 0 and s.rules["dns-out"] > 0
    mpps, mpps_cpu = PACKETS / median / 1e6, PACKETS / cpu_s / 1e6
    _FULL["on_Mpps"] = mpps
    benchmark.extra_info["applications"] = apps
    benchmark.extra_info["threats"] = s.inspection.get("threats")
    if not have_suricata:
        return
    eve = [json.loads(ln) for ln in (w["dir"] / "suricata-full" / "eve.json").read_text().splitlines()]
    alerts = sum(1 for e in eve if e.get("event_type") == "alert")
    benchmark.extra_info.update(_alert_sets(w, w["dir"] / "suricata-full" / "eve.json"))
    # Suricata's times include loading and compiling the rules (gwlb-fast builds its pipeline outside the timing):
    # its packet time is the full run less a one-packet run of the same command (medians of the rounds)
    wall, cpu = (_median([r[i] for r in runs["full"]]) for i in (0, 1))
    start, start_cpu = (_median([r[i] for r in runs["one_packet"]]) for i in (0, 1))
    benchmark.extra_info.update({
        "suricata_wall_s": round(wall, 3), "suricata_startup_s": round(start, 3), "suricata_cpu_s": round(cpu, 3),
        "suricata_startup_cpu_s": round(start_cpu, 3), "suricata_Mpps_with_startup": round(PACKETS / wall / 1e6, 3),
        "suricata_alerts": alerts, "suricata_whole_wall_over_pipeline_run": round(wall / median, 2)})
    if wall - start < 0.05 or cpu - start_cpu < 0.05:   # the smoke size: its packet time is lost in the noise
        return
    sur_mpps, sur_mpps_cpu = PACKETS / (wall - start) / 1e6, PACKETS / (cpu - start_cpu) / 1e6
    benchmark.extra_info.update({"suricata_Mpps": round(sur_mpps, 3), "suricata_Mpps_cpu": round(sur_mpps_cpu, 3),
                                 "ratio_vs_suricata": round(mpps / sur_mpps, 2),
                                 "ratio_vs_suricata_cpu": round(mpps_cpu / sur_mpps_cpu, 2)})
    print(f"\nfull path: {PACKETS} packets; Pipeline.run {median:.3f} s wall, {cpu_s:.3f} s CPU: {mpps:.3f} Mpps, "
          f"{mpps_cpu:.3f} Mpps (CPU); suricata whole command {wall:.3f} s wall, {cpu:.3f} s CPU (start-up "
          f"{start:.3f} s, {start_cpu:.3f} s CPU): {sur_mpps:.3f} Mpps, {sur_mpps_cpu:.3f} Mpps (CPU) with the "
          f"start-up subtracted; ratio {mpps / sur_mpps:.2f} ({mpps_cpu / sur_mpps_cpu:.2f} in CPU time); "
          f"Suricata's whole wall / Pipeline.run's {wall / median:.2f}")


def _alert_sets(w, eve) -> dict:
    """(sid, flow) alert sets of the capture beside Suricata's (outside the timing): the engine standalone on the
    capture as it is (no path, no policy), as Suricata reads it. Equal on the flows the capture holds both ways; the
    rest are inbound sessions captured on both sides of the NAT gateway (the request to the public address, the
    answer from the private one), two one-sided flows to Suricata that never complete a handshake, so it inspects
    neither, while here the request side is inspected (and the firewall, behind the DNAT, sees the session whole).
    Suricata's alert count is higher than its pairs: it alerts once per DNS transaction, this once per session."""
    from tests.test_appid import flow_key
    from tests.test_signatures import eve_alert_pairs, two_sided_flows

    theirs = eve_alert_pairs(eve)
    batches = list(gf.read_pcap(w["cap"]))
    al = []
    inspect_flows(batches, signatures=parse_rules(w["rules"].read_text()), alerts=al, capacity=1 << 16)
    ours = {(a["sid"],) + flow_key(a["proto"], a["client_ip"], a["client_port"], a["server_ip"], a["server_port"])
            for a in al}
    both = two_sided_flows(batches)
    assert {a for a in ours if a[1:] in both} == theirs
    return {"alert_pairs": len(ours), "suricata_alert_pairs": len(theirs),
            "alert_pairs_on_one_sided_flows": len(ours - theirs)}


@pytest.mark.benchmark(group="inspect-full-path-synthetic-payloads")
def test_full_path_inspection_off(benchmark, payload_workload):
    """The same capture through the example policy (L4 only: no inspection)."""
    w = payload_workload
    s, median, _ = _pipeline_rounds(benchmark, w["topo_off"], w["cap"], w["dir"] / "out-off.pcap")
    assert not s.inspection or not s.inspection.get("applications")
    mpps = PACKETS / median / 1e6
    if "on_Mpps" in _FULL:
        benchmark.extra_info["inspection_on_over_off"] = round(_FULL["on_Mpps"] / mpps, 2)
