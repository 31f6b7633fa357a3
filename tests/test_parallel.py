"""run --workers: flow-sharded replay equals one worker's per flow (except the SNAT port) and merges in time order."""
import csv
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from gwlb_fast import synth
from gwlb_fast.batch import PacketBatch
from gwlb_fast.cli import main
from gwlb_fast.config import load_topology
from gwlb_fast.errors import PcapError, WorkerError
from gwlb_fast.pcapio import PcapWriter, read_pcap, write_pcap
from gwlb_fast.pipeline import TAP_LINKS, Pipeline
from gwlb_fast.scale.parallel import (
    merge_pcaps,
    merge_plan,
    place_records,
    port_slice,
    record_index,
    run_parallel,
    shard_topology,
)

from .shared_data import data_path
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
    cap = tmp_path / "in.pcap"
    write_pcap(cap, synth.generate(5, 50, seed=1))
    assert main(["run", str(EXAMPLE_PATH), str(cap), "--workers", "2", "--report", str(tmp_path / "r.txt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"gwlb-fast: {tmp_path / 'r.txt'}: the report must end in .html"]
    assert not (tmp_path / "r.txt").exists()
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"\x00" * 40)
    assert main(["run", str(EXAMPLE_PATH), str(bad), "--workers", "2", "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"gwlb-fast: {bad}")


# ---------------------------------------------------------------------------------------------------- real captures
REAL_CAPTURES = sorted(data_path("captures", "real").glob("*.pcap*")) if data_path("captures", "real").is_dir() else []


@pytest.mark.skipif(not REAL_CAPTURES, reason="shared captures absent")
@pytest.mark.parametrize("path", REAL_CAPTURES, ids=[p.name for p in REAL_CAPTURES])
def test_real_capture_per_flow_results_equal_one_worker(path, tmp_path):
    from .test_real_captures import topology_for

    topo = tmp_path / "topology.yaml"
    topo.write_text(yaml.safe_dump(topology_for(path)))
    s1 = Pipeline.from_yaml(topo).run(path, tmp_path / "o1.pcap", flow_log=tmp_path / "f1.jsonl", chunk=64)
    s2 = run_parallel(topo, path, tmp_path / "o2.pcap", workers=2, flow_log=tmp_path / "f2.jsonl", chunk=32)
    for k in ("packets_in", "packets_out", "drops", "rules", "firewalls"):
        assert getattr(s2, k) == getattr(s1, k), k
    a = {_key(r): r for r in map(json.loads, (tmp_path / "f1.jsonl").read_text().splitlines())}
    b = {_key(r): r for r in map(json.loads, (tmp_path / "f2.jsonl").read_text().splitlines())}
    assert a.keys() == b.keys()
    for k, r in a.items():
        assert {f: r[f] for f in PER_FLOW} == {f: b[k][f] for f in PER_FLOW}, k
    x, y = _read(tmp_path / "o1.pcap"), _read(tmp_path / "o2.pcap")
    assert (x is None) == (y is None)
    if x is not None:
        assert np.array_equal(np.sort(x.ts_ns), y.ts_ns)


# ---------------------------------------------------------------------------------------------------- the merge
def _engine_capture(path, batch):
    """A capture as the workers write theirs (PcapWriter, Ethernet)."""
    with PcapWriter(path, linktype=1) as w:
        w.write(batch)


@pytest.fixture()
def parts(tmp_path):
    """Three captures in time order each, with timestamps shared between them (the merge's ties) and one empty."""
    rng = np.random.default_rng(5)
    out = []
    for i, n in enumerate((700, 0, 450, 900)):
        b = synth.generate(30, max(n, 60), seed=20 + i)[:n]
        b.ts_ns = np.sort(rng.integers(0, 400, n)).astype(np.int64) * 1000  # many equal timestamps across parts
        _engine_capture(tmp_path / f"p{i}.pcap", b)
        out.append(tmp_path / f"p{i}.pcap")
    return out


def test_placed_merge_is_byte_identical_to_the_batch_merge(parts, tmp_path):
    from gwlb_fast.scale.parallel import _merge_batches

    assert merge_pcaps(parts, tmp_path / "placed.pcap") == 2050
    assert _merge_batches(parts, tmp_path / "batched.pcap", 64) == 2050
    assert (tmp_path / "placed.pcap").read_bytes() == (tmp_path / "batched.pcap").read_bytes()


@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_stretches_filled_apart_make_the_same_file(parts, tmp_path, n):
    """What the workers do: the plan cut into n stretches, each filled on its own (any order), gives the merge."""
    import dpkt

    from gwlb_fast.scale.parallel import _pcap_header, _stretches

    index = [record_index(p) for p in parts]
    header = _pcap_header()
    total, jobs = _stretches(index, n)
    assert total == merge_plan([x[0] for x in index], [x[2] for x in index], len(header))[0]
    out = tmp_path / "m.pcap"
    out.write_bytes(header + bytes(total - len(header)))
    assert len(jobs) == n and sum(len(j[0]) for j in jobs) == 2050
    for job in reversed(jobs):
        place_records(parts, *job[:3], out, job[3])
    merge_pcaps(parts, tmp_path / "ref.pcap")
    assert out.read_bytes() == (tmp_path / "ref.pcap").read_bytes()
    # an independent reference: dpkt reads every part and the merge, and the merge is the stable sort of the parts
    with open(out, "rb") as fh:
        got = [(ts, buf) for ts, buf in dpkt.pcap.Reader(fh)]
    want = []
    for i, p in enumerate(parts):
        with open(p, "rb") as fh:
            want += [(ts, i, j, buf) for j, (ts, buf) in enumerate(dpkt.pcap.Reader(fh))]
    want.sort(key=lambda t: (t[0], t[1], t[2]))
    assert got == [(ts, buf) for ts, _, _, buf in want]


def test_merge_of_captures_in_another_format_goes_through_batches(tmp_path):
    a = synth.generate(10, 200, seed=3)
    write_pcap(tmp_path / "a.pcapng", a)  # not the workers' format: re-encoded
    write_pcap(tmp_path / "b.pcap", a, nanosecond=False)
    assert merge_pcaps([tmp_path / "a.pcapng", tmp_path / "b.pcap"], tmp_path / "m.pcap") == 400
    m = _read(tmp_path / "m.pcap")
    assert np.all(np.diff(m.ts_ns) >= 0) and sorted(m.packets()) == sorted(a.packets() * 2)


def test_record_index_refuses_other_formats(tmp_path):
    write_pcap(tmp_path / "us.pcap", synth.generate(5, 20, seed=1), nanosecond=False)
    with pytest.raises(ValueError, match="merge's own format"):
        record_index(tmp_path / "us.pcap")


# ---------------------------------------------------------------------------------------------------- inputs
def test_gzip_capture_gives_the_same_outputs(capture, many, tmp_path):
    import gzip

    n, d, _ = many
    gz = tmp_path / "in.pcap.gz"
    gz.write_bytes(gzip.compress((capture / "in.pcap").read_bytes(), compresslevel=1))
    run_parallel(EXAMPLE_PATH, gz, tmp_path / "out.pcap", workers=n, flow_log=tmp_path / "f.jsonl", chunk=4096)
    assert (tmp_path / "out.pcap").read_bytes() == (d / "out.pcap").read_bytes()
    assert (tmp_path / "f.jsonl").read_text() == (d / "flows.jsonl").read_text()


def test_pcapng_destination(capture, many, tmp_path):
    n, d, _ = many
    run_parallel(EXAMPLE_PATH, capture / "in.pcap", tmp_path / "out.pcapng", workers=n, chunk=4096)
    x, y = _read(d / "out.pcap"), _read(tmp_path / "out.pcapng")
    assert np.array_equal(x.ts_ns, y.ts_ns) and x.packets() == y.packets()


def test_damaged_capture_replays_what_comes_before_like_one_worker(capture, tmp_path):
    raw = (capture / "in.pcap").read_bytes()
    bad = tmp_path / "cut.pcap"
    bad.write_bytes(raw[: len(raw) * 2 // 3 + 5])  # a record cut short
    s1 = Pipeline.from_yaml(EXAMPLE_PATH).run(bad, tmp_path / "o1.pcap", strict=False, chunk=4096)
    s2 = run_parallel(EXAMPLE_PATH, bad, tmp_path / "o2.pcap", workers=2, strict=False, chunk=2048)
    assert s2.input_error == s1.input_error and s1.input_error
    assert s2.packets_in == s1.packets_in and s2.packets_out == s1.packets_out
    with pytest.raises(PcapError):
        run_parallel(EXAMPLE_PATH, bad, tmp_path / "o3.pcap", workers=2, chunk=2048)


# ---------------------------------------------------------------------------------------------------- failures
@pytest.fixture
def made(monkeypatch):
    """The temporary folders of the workers' files that the test's runs make (other runs on the machine may have
    theirs in the same memory file system at the same time)."""
    import gwlb_fast.scale.parallel as par

    folders = []
    real = par.shard_files

    def spy(*a, **k):
        out = real(*a, **k)
        folders.append(out[0])
        return out

    monkeypatch.setattr(par, "shard_files", spy)
    return folders


def _left_behind(d, made):
    """Temporary files left in the destination's folder ``d``, and the run's scratch folders still there."""
    assert made  # the spy saw the run's folders
    return sorted(p.name for p in d.iterdir() if p.name.startswith(".")) + [p.name for p in made if p.exists()]


@pytest.mark.parametrize("scratch", ["memory", "beside"])
def test_worker_files_in_memory_or_beside_the_destination(capture, many, tmp_path, monkeypatch, scratch, made):
    import gwlb_fast.scale.parallel as par

    n, d, _ = many
    if scratch == "beside":  # no memory file system (or no room in it): beside the destination
        monkeypatch.setattr(par, "SCRATCH", str(tmp_path / "absent"))
    run_parallel(EXAMPLE_PATH, capture / "in.pcap", tmp_path / "out.pcap", workers=n, chunk=4096,
                 flow_log=tmp_path / "flows.jsonl")
    assert (tmp_path / "out.pcap").read_bytes() == (d / "out.pcap").read_bytes()
    assert (tmp_path / "flows.jsonl").read_bytes() == (d / "flows.jsonl").read_bytes()
    assert made[0].parent == (tmp_path if scratch == "beside" else Path(par.SCRATCH))
    assert _left_behind(tmp_path, made) == []


def test_captures_alone_need_no_worker_files(capture, many, tmp_path, made):
    """The captures go through memory shared with the parent: without a flow log the workers write no file."""
    n, d, _ = many
    run_parallel(EXAMPLE_PATH, capture / "in.pcap", tmp_path / "out.pcap", workers=n, chunk=4096,
                 taps=tmp_path / "taps")
    assert (tmp_path / "out.pcap").read_bytes() == (d / "out.pcap").read_bytes()
    for link in TAP_LINKS:
        assert (tmp_path / "taps" / f"{link}.pcap").read_bytes() == (d / "taps" / f"{link}.pcap").read_bytes()
    assert made == [] and sorted(p.name for p in tmp_path.iterdir()) == ["out.pcap", "taps"]


def test_folders_of_killed_runs_are_cleared(capture, many, tmp_path, monkeypatch, made):
    """A run killed before its end leaves its workers' folder in memory: the next run removes this user's folders
    whose process is gone and that did not change for a minute, and leaves the others."""
    import subprocess

    import gwlb_fast.scale.parallel as par

    n, d, _ = many
    shm = tmp_path / "shm"
    shm.mkdir()
    monkeypatch.setattr(par, "SCRATCH", str(shm))
    dead_pid = subprocess.Popen(["true"])  # a process id that no process has any longer
    dead_pid.wait()
    old = time.time() - 3600
    folders = {"gone": f"{par.WORKERS_PREFIX}{dead_pid.pid}-abc", "fresh": f"{par.WORKERS_PREFIX}{dead_pid.pid}-def",
               "alive": f"{par.WORKERS_PREFIX}{os.getpid()}-ghi", "other": ".gwlb-fast-ray-1-x", "mine": "notes"}
    for what, name in folders.items():
        f = shm / name / "0" / "output.pcap"
        f.parent.mkdir(parents=True)
        f.write_bytes(b"x")
        if what != "fresh":
            os.utime(f, (old, old))
    run_parallel(EXAMPLE_PATH, capture / "in.pcap", tmp_path / "out.pcap", workers=n, chunk=4096,
                 flow_log=tmp_path / "flows.jsonl")
    assert (tmp_path / "out.pcap").read_bytes() == (d / "out.pcap").read_bytes()
    assert sorted(p.name for p in shm.iterdir()) == sorted(v for k, v in folders.items() if k != "gone")
    assert made[0].parent == shm and made[0].name.startswith(f"{par.WORKERS_PREFIX}{os.getpid()}-")


# a run killed outright (SIGKILL) while its workers replay (as it first merges what they wrote): the parent writes
# their process ids, then dies
_KILLED = """
import multiprocessing, os, signal, sys
import gwlb_fast.scale.parallel as par
par.SCRATCH = sys.argv[5]
def killed(*a, **k):
    with open(sys.argv[4], "w") as f:
        f.write(" ".join(str(p.pid) for p in multiprocessing.active_children()))
    os.kill(os.getpid(), signal.SIGKILL)
par._Merge.step = killed
par.run_parallel(sys.argv[1], sys.argv[2], sys.argv[3], workers=2, chunk=4096, flow_log=sys.argv[3] + ".jsonl")
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads /proc")
def test_workers_end_with_a_killed_run_and_the_next_run_clears_its_files(capture, tmp_path):
    """The workers of a run killed outright end too (they waited for ever on a pipe whose other end a sibling held
    open); the folder of their files is left, and a later run removes it."""
    import gwlb_fast.scale.parallel as par

    shm = tmp_path / "shm"
    shm.mkdir()
    pids = tmp_path / "pids"
    with open(tmp_path / "stderr", "w") as err:  # a file: a worker left behind would hold a pipe open
        r = subprocess.run([sys.executable, "-c", _KILLED, str(EXAMPLE_PATH), str(capture / "in.pcap"),
                            str(tmp_path / "out.pcap"), str(pids), str(shm)], stdout=subprocess.DEVNULL, stderr=err,
                           timeout=120, check=False)
    assert r.returncode == -9, (tmp_path / "stderr").read_text()
    workers = [int(x) for x in pids.read_text().split()]
    assert len(workers) == 2
    deadline = time.time() + 10
    while time.time() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.05)
    assert not any(_alive(p) for p in workers)
    left = [p.name for p in shm.iterdir()]
    assert len(left) == 1 and not (tmp_path / "out.pcap").exists()
    assert par.clear_abandoned(shm, par.WORKERS_PREFIX, now=time.time() + par.ABANDONED_AFTER) == left
    assert list(shm.iterdir()) == []


@pytest.mark.parametrize("where", ["write", "merge", "exit", "replay"])
def test_a_failing_worker_is_an_error_and_leaves_no_output(capture, tmp_path, monkeypatch, where, made):
    """A worker failing while it writes its packets, dying without a word, the parent failing while it merges: the
    run raises, every destination keeps what it held, nothing temporary stays (the workers fork: the patch is
    theirs)."""
    import gwlb_fast.scale.parallel as par
    from gwlb_fast.scale import rings

    def boom(*a, **k):
        if where == "exit":
            os._exit(3)
        raise RuntimeError(f"injected failure in {where}")

    if where == "replay":  # dies after its first chunk, while the parent may still be feeding it
        nxt = par.ShardFeed.__next__
        monkeypatch.setattr(par.ShardFeed, "__next__", lambda self: os._exit(3) if self.pipe.packets_in else nxt(self))
    else:
        monkeypatch.setattr(rings.RingMerger if where == "merge" else rings.RingWriter, "write" if where != "merge"
                            else "step", boom)
    (tmp_path / "out.pcap").write_bytes(b"before")
    if where == "merge":
        raises = pytest.raises(RuntimeError, match="injected failure in merge")
    else:
        raises = pytest.raises(WorkerError, match="worker [01] of 2 " + (
            "failed: RuntimeError: injected failure" if where == "write" else r"ended .*exit code 3"))
    with raises:
        run_parallel(EXAMPLE_PATH, capture / "in.pcap", tmp_path / "out.pcap", workers=2, taps=tmp_path / "taps",
                     flow_log=tmp_path / "f.jsonl", chunk=4096)
    assert (tmp_path / "out.pcap").read_bytes() == b"before"
    assert not (tmp_path / "f.jsonl").exists()
    assert _left_behind(tmp_path, made) == []
    assert not (tmp_path / "taps").exists() or list((tmp_path / "taps").iterdir()) == []


def test_cli_worker_failure_exits_non_zero(capture, tmp_path, monkeypatch, capsys, made):
    from gwlb_fast.scale import rings

    monkeypatch.setattr(rings.RingWriter, "write", lambda *a: os.kill(os.getpid(), 9))
    assert main(["run", str(EXAMPLE_PATH), str(capture / "in.pcap"), "-o", str(tmp_path / "o.pcap"), "--workers",
                 "2", "--quiet", "--flow-log", str(tmp_path / "f.jsonl")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"gwlb-fast: {capture / 'in.pcap'}: run --workers: worker ")
    assert err[0].endswith("ended without a result (killed by signal 9)")
    assert not (tmp_path / "o.pcap").exists() and _left_behind(tmp_path, made) == []


def test_fragment_misses_of_the_sharder_are_reported(tmp_path):
    """A later fragment to the public address that comes before its first fragment cannot be sharded with its
    flow (its ports are in the first): the summary of a sharded run says how many there were; one worker has no
    sharder and none to report."""
    import dpkt

    from .test_fragments import fragment

    base = synth.generate(flows=20, packets=400, seed=3)
    seg = dpkt.tcp.TCP(sport=40000, dport=443, flags=0x18, seq=1, ack=1, data=b"q" * 1200)
    ip = dpkt.ip.IP(src=bytes([198, 51, 100, 7]), dst=bytes([203, 0, 113, 10]), p=6, id=99, ttl=60, data=seg)
    frame = b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02\x08\x00" + bytes(ip)
    first, later = fragment(frame, [800])
    t = int(base.ts_ns[200])
    extra = PacketBatch.from_packets([later, first], ts_ns=np.array([t, t + 1000], np.int64))
    cap = tmp_path / "in.pcap"
    write_pcap(cap, PacketBatch.concat([base[:200], extra, base[200:]]))
    two = run_parallel(EXAMPLE_PATH, cap, tmp_path / "w2.pcap", workers=2, chunk=128)
    one = run_parallel(EXAMPLE_PATH, cap, tmp_path / "w1.pcap", workers=1, chunk=128)
    assert two.shard_fragment_misses == 1
    assert "1 later fragment(s) on the public side came before their first fragment" in str(two)
    assert one.shard_fragment_misses == 0 and "later fragment(s)" not in str(one)
    # a capture that cannot be mapped (gzip): each worker shards it whole; the count is taken once
    import gzip

    gz = tmp_path / "in.pcap.gz"
    gz.write_bytes(gzip.compress(cap.read_bytes()))
    assert run_parallel(EXAMPLE_PATH, gz, tmp_path / "g2.pcap", workers=2, chunk=128).shard_fragment_misses == 1


def test_progress_follows_the_slowest_worker_on_a_terminal(capture, tmp_path, monkeypatch):
    """On a terminal, a run on several workers shows how far its slowest worker is (chunks of the capture done),
    and clears the line at the end; quiet, it shows nothing."""
    import io

    import gwlb_fast.scale.parallel as par

    class Tty(io.StringIO):
        def isatty(self):
            return True

    class EveryUpdate(par.Progress):  # no 0.2 s between two updates: each one shows
        def update(self, packets, done_bytes=None):
            self._last = -1e9
            super().update(packets, done_bytes)

    monkeypatch.setattr(par, "Progress", EveryUpdate)
    for quiet in (False, True):
        tty = Tty()
        monkeypatch.setattr(sys, "stderr", tty)
        run_parallel(EXAMPLE_PATH, capture / "in.pcap", tmp_path / "out.pcap", workers=2, chunk=2048, quiet=quiet)
        shown = [x for x in tty.getvalue().split("\r") if x.strip()]
        if quiet:
            assert shown == []
        else:
            assert shown and all("packets" in x and "%" in x for x in shown)
            assert tty.getvalue().endswith("\r" + " " * 78 + "\r")


def test_health_probes_up_to_the_capture_end_whatever_shard_has_the_packets(tmp_path):
    """The health tap is written by the first shard: its probes reach the capture's last packet even when that
    shard has none of the packets (they were missing)."""
    from gwlb_fast.scale.parallel import Sharder

    b = synth.generate(60, 3000, seed=5, duration=20.0)
    b.parse()
    b = b.filter(Sharder(load_topology(EXAMPLE_PATH), 2).shards(b) == 1)  # every packet in the second shard
    write_pcap(tmp_path / "in.pcap", b)
    Pipeline.from_yaml(EXAMPLE_PATH, taps=True).run(tmp_path / "in.pcap", taps=tmp_path / "one", chunk=512)
    run_parallel(EXAMPLE_PATH, tmp_path / "in.pcap", workers=2, taps=tmp_path / "two", chunk=256)
    one = (tmp_path / "one" / "health.pcap").read_bytes()
    assert len(one) > 24 and (tmp_path / "two" / "health.pcap").read_bytes() == one
