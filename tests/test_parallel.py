"""run --workers: flow-sharded replay equals one worker's per flow (except the SNAT port) and merges in time order."""
import csv
import itertools
import json

import numpy as np
import pytest

from gwlb_fast import synth
from gwlb_fast.batch import PacketBatch
from gwlb_fast.cli import main
from gwlb_fast.config import load_topology
from gwlb_fast.parallel import merge_pcaps, port_slice, run_parallel, shard_topology
from gwlb_fast.pcapio import read_pcap, write_pcap
from gwlb_fast.pipeline import TAP_LINKS, Pipeline

from .test_pipeline import EXAMPLE_PATH

PER_FLOW = ("direction", "endpoint", "firewall", "rule", "action", "nat_ip", "packets", "bytes", "packets_reply",
            "bytes_reply", "last_seen", "end_reason")


def _key(r):
    return (r["src_ip"], r["src_port"], r["dst_ip"], r["dst_port"], r["proto"], r["first_seen"])


def _read(path):
    parts = list(read_pcap(path, parse=True))
    return PacketBatch.concat(parts) if parts else None


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    d = tmp_path_factory.mktemp("par")
    # the example's failure event (fw-2 at 5 s) falls inside the capture
    write_pcap(d / "in.pcap", synth.generate(400, 30_000, seed=11, duration=40.0))
    return d


@pytest.fixture(scope="module")
def one(capture):
    d = capture / "w1"
    d.mkdir()
    s = Pipeline.from_yaml(EXAMPLE_PATH, taps=True).run(capture / "in.pcap", d / "out.pcap", taps=d / "taps",
                                                       flow_log=d / "flows.jsonl", chunk=4096)
    return d, s


@pytest.fixture(scope="module", params=[2, 3])
def many(capture, request):
    n = request.param
    d = capture / f"w{n}"
    d.mkdir()
    s = run_parallel(EXAMPLE_PATH, capture / "in.pcap", d / "out.pcap", workers=n, taps=d / "taps",
                     flow_log=d / "flows.jsonl", chunk=4096)
    return n, d, s


def test_summary_counts_equal_one_worker(one, many):
    _, s1 = one
    n, _, s = many
    assert s.workers == n
    for k in ("packets_in", "bytes_in", "packets_out", "bytes_out", "generated", "drops", "rules", "events",
              "capture_seconds"):
        assert getattr(s, k) == getattr(s1, k), k
    assert s.firewalls == s1.firewalls
    nat1 = {k: v for k, v in s1.nat.items() if k != "mappings_expired"}
    assert {k: v for k, v in s.nat.items() if k != "mappings_expired"} == nat1
    assert s.packets_in == 30_000 and s.events


def test_per_flow_results_equal_one_worker_but_the_snat_port(one, many, capture):
    d1, _ = one
    n, d, _ = many
    a = {_key(r): r for r in map(json.loads, (d1 / "flows.jsonl").read_text().splitlines())}
    b = {_key(r): r for r in map(json.loads, (d / "flows.jsonl").read_text().splitlines())}
    assert a.keys() == b.keys() and len(a) >= 400
    for k, r in a.items():
        assert {f: r[f] for f in PER_FLOW} == {f: b[k][f] for f in PER_FLOW}, k
    # each SNAT'ed flow's public port lies in its shard's slice, and the shards use every slice
    topo = load_topology(EXAMPLE_PATH)
    g = next(iter(topo.nat_gateways.values()))
    slices = [port_slice(g.port_lo, g.port_hi, k, n) for k in range(n)]
    dnat_ports = {x.port for x in g.dnat}
    used = set()
    for r in b.values():
        if r["nat_port"] is not None and r["nat_port"] not in dnat_ports:
            used |= {k for k, (lo, hi) in enumerate(slices) if lo <= r["nat_port"] <= hi}
    assert used == set(range(n))
    # the log is in time order
    last = [r["last_seen"] for r in map(json.loads, (d / "flows.jsonl").read_text().splitlines())]
    assert last == sorted(last)


def test_output_and_taps_in_time_order_with_the_same_packets(one, many):
    d1, _ = one
    _, d, _ = many
    for name in ["out.pcap"] + [f"taps/{link}.pcap" for link in TAP_LINKS]:
        x, y = _read(d1 / name), _read(d / name)
        if x is None:
            assert y is None, name
            continue
        assert len(x) == len(y), name
        assert np.all(np.diff(y.ts_ns) >= 0), name
        # the same packets, but for the SNAT port (and the checksums it is in): compare what it does not touch
        for col in ("ts_ns", "caplen", "wirelen", "proto", "tcp_flags"):
            assert np.array_equal(np.sort(getattr(x, col)), np.sort(getattr(y, col))), (name, col)
        for col in ("src_ip", "dst_ip"):
            assert np.array_equal(np.sort(getattr(x, col)), np.sort(getattr(y, col))), (name, col)


def test_deterministic_for_a_given_n(capture, many, tmp_path):
    n, d, _ = many
    run_parallel(EXAMPLE_PATH, capture / "in.pcap", tmp_path / "out.pcap", workers=n, flow_log=tmp_path / "f.jsonl",
                 chunk=4096)
    assert (tmp_path / "out.pcap").read_bytes() == (d / "out.pcap").read_bytes()
    assert (tmp_path / "f.jsonl").read_text() == (d / "flows.jsonl").read_text()


def test_one_worker_through_the_layer_is_the_plain_run(capture, one, tmp_path):
    d1, _ = one
    run_parallel(EXAMPLE_PATH, capture / "in.pcap", tmp_path / "out.pcap", workers=1, flow_log=tmp_path / "f.jsonl",
                 chunk=4096)
    assert (tmp_path / "out.pcap").read_bytes() == (d1 / "out.pcap").read_bytes()


def test_capacities_split_per_shard():
    topo = load_topology(EXAMPLE_PATH)
    parts = [shard_topology(topo, k, 3) for k in range(3)]
    for name, g in topo.nat_gateways.items():
        ranges = [(p.nat_gateways[name].port_lo, p.nat_gateways[name].port_hi) for p in parts]
        assert ranges[0][0] == g.port_lo and ranges[-1][1] == g.port_hi
        assert all(a[1] + 1 == b[0] for a, b in itertools.pairwise(ranges))
        assert all(p.nat_gateways[name].capacity == g.capacity // 3 for p in parts)
    for name, g in topo.gwlbs.items():
        assert all(p.gwlbs[name].flow_capacity == g.flow_capacity // 3 for p in parts)


def test_merge_keeps_each_part_and_time_order(tmp_path):
    a = synth.generate(20, 300, seed=1)
    b = synth.generate(20, 300, seed=2)
    write_pcap(tmp_path / "a.pcap", a)
    write_pcap(tmp_path / "b.pcap", b)
    write_pcap(tmp_path / "e.pcap", a[:0])
    assert merge_pcaps([tmp_path / "a.pcap", tmp_path / "e.pcap", tmp_path / "b.pcap"], tmp_path / "m.pcap",
                       chunk=64) == 600
    m = _read(tmp_path / "m.pcap")
    assert np.all(np.diff(m.ts_ns) >= 0)
    want = sorted(a.packets() + b.packets())
    assert sorted(m.packets()) == want


def test_cli_workers(capture, tmp_path, capsys):
    assert main(["run", str(EXAMPLE_PATH), str(capture / "in.pcap"), "-o", str(tmp_path / "o.pcap"), "--workers",
                 "2", "--flow-log", str(tmp_path / "f.csv"), "--json", "--quiet"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["workers"] == 2 and out["packets_in"] == 30_000
    with open(tmp_path / "f.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0][0] == "src_ip" and len(rows) > 400


def test_cli_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", str(EXAMPLE_PATH), "x.pcap", "--workers", "0"])
    assert e.value.code == 2
    capsys.readouterr()
    assert main(["run", str(EXAMPLE_PATH), str(tmp_path / "missing.pcap"), "--workers", "2"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gwlb-fast: ") and "no such file" in err[0]
    assert main(["run", str(EXAMPLE_PATH), str(EXAMPLE_PATH), "--workers", "2", "--report",
                 str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith("--report needs --workers 1")
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"\x00" * 40)
    assert main(["run", str(EXAMPLE_PATH), str(bad), "--workers", "2", "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"gwlb-fast: {bad}")
