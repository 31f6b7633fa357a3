"""run --ray: on a local two-worker Ray instance, four captures replayed one task each and one capture split into
byte ranges and flow shards give the single-machine results; the record-boundary search agrees with the reader."""
import gzip
import json
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gwlb_fast import synth
from gwlb_fast.batch import PacketBatch
from gwlb_fast.cli import main
from gwlb_fast.pcapio import PcapWriter, read_pcap, write_pcap
from gwlb_fast.pipeline import TAP_LINKS, Pipeline
from gwlb_fast.scale.distributed import (
    capture_name,
    cluster_cpus,
    connected,
    record_ranges,
    replay_many,
    replay_split,
    require_ray,
)
from gwlb_fast.scale.parallel import run_parallel

from .shared_data import data_path
from .test_parallel import PER_FLOW
from .test_pipeline import EXAMPLE_PATH
from .test_real_captures import topology_for

REAL = data_path("captures", "real", "tcp_ports.pcapng")
needs_real = pytest.mark.skipif(not REAL.is_file(), reason="shared captures absent")
#: summary fields a distributed run must reproduce exactly
COUNTS = ("packets_in", "bytes_in", "packets_out", "bytes_out", "generated", "drops", "firewalls", "rules", "events",
          "capture_seconds", "input_error", "input_skipped_bytes", "input_skipped_records")


@pytest.fixture(scope="module")
def ray_local():
    try:
        require_ray(local=True)  # before Ray is imported: the local instance listens on 127.0.0.1 only
    except ValueError:
        pytest.skip("ray not installed")
    with connected(num_cpus=2) as ray:
        assert cluster_cpus(ray) == 2
        assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}
        yield ray


def _flows(path) -> dict:
    recs = [json.loads(x) for x in path.read_text().splitlines()]
    out = {(r["src_ip"], r["src_port"], r["dst_ip"], r["dst_port"], r["proto"], r["first_seen"]): r for r in recs}
    assert len(out) == len(recs)
    return out


def _same_flows(a, b) -> None:
    fa, fb = _flows(a), _flows(b)
    assert fa.keys() == fb.keys()
    for k, r in fa.items():
        assert {f: r[f] for f in PER_FLOW} == {f: fb[k][f] for f in PER_FLOW}, k


def _packets(path):
    parts = list(read_pcap(path, parse=True))
    return PacketBatch.concat(parts) if parts else PacketBatch.empty().parse()


def _same_packets(a, b) -> None:
    """The same packets but for the SNAT port (and the checksums it is in), in time order."""
    x, y = _packets(a), _packets(b)
    assert len(x) == len(y)
    assert np.all(np.diff(y.ts_ns) >= 0)
    key = ("ts_ns", "caplen", "wirelen", "src_ip", "dst_ip", "proto", "tcp_flags")
    sx = np.lexsort([getattr(x, c) for c in key])
    sy = np.lexsort([getattr(y, c) for c in key])
    for c in key:
        assert np.array_equal(getattr(x, c)[sx], getattr(y, c)[sy]), c


def _same_summary(s, s1) -> None:
    for k in COUNTS:
        assert getattr(s, k) == getattr(s1, k), k
    drop_expired = {k: v for k, v in s1.nat.items() if k != "mappings_expired"}
    assert {k: v for k, v in s.nat.items() if k != "mappings_expired"} == drop_expired


# ---------------------------------------------------------------------------------------------------- many captures
@pytest.fixture(scope="module")
def four(tmp_path_factory):
    d = tmp_path_factory.mktemp("four")
    caps = []
    for i, (flows, packets) in enumerate([(200, 6000), (50, 1500), (120, 4000)]):
        caps.append(d / f"synth{i}.pcap")
        write_pcap(caps[-1], synth.generate(flows, packets, seed=20 + i, duration=12.0))
    if REAL.is_file():
        caps.append(d / REAL.name)
        shutil.copy(REAL, caps[-1])
    return d, caps


@needs_real
def test_four_captures_one_task_each_equal_the_single_machine_runs(ray_local, four, tmp_path):
    _, caps = four
    assert len(caps) == 4
    res = replay_many(EXAMPLE_PATH, caps, tmp_path / "out", flow_log_dir=tmp_path / "logs", taps_dir=tmp_path / "taps")
    assert list(res.summaries) == [capture_name(c) for c in caps]
    for c in caps:
        name = capture_name(c)
        one = tmp_path / "one" / name
        one.mkdir(parents=True)
        s1 = Pipeline.from_yaml(EXAMPLE_PATH, taps=True).run(c, one / "o.pcap", flow_log=one / "f.jsonl",
                                                             taps=one / "taps")
        _same_summary(res.summaries[name], s1)
        # the same code on one machine: the same bytes
        assert (tmp_path / "out" / f"{name}.pcap").read_bytes() == (one / "o.pcap").read_bytes()
        assert (tmp_path / "logs" / f"{name}.jsonl").read_text() == (one / "f.jsonl").read_text()
        for link in TAP_LINKS:
            assert (tmp_path / "taps" / name / f"{link}.pcap").read_bytes() == (one / "taps" / f"{link}.pcap").read_bytes()
    assert res.total.packets_in == sum(s.packets_in for s in res.summaries.values())
    assert res.total.dropped == sum(s.dropped for s in res.summaries.values()) > 0


def test_many_captures_refuse_clashing_names_and_overwriting_inputs(ray_local, four, tmp_path):
    d, caps = four
    other = tmp_path / "x"
    other.mkdir()
    shutil.copy(caps[0], other / caps[0].name)
    with pytest.raises(ValueError, match="two captures take the output name"):
        replay_many(EXAMPLE_PATH, [caps[0], other / caps[0].name], tmp_path / "out")
    with pytest.raises(ValueError, match="refusing to overwrite"):
        replay_many(EXAMPLE_PATH, caps[:2], d)  # the outputs would be the inputs' own names in their folder
    with pytest.raises(ValueError, match="names a folder"):
        replay_many(EXAMPLE_PATH, caps[:2], tmp_path / "out", flow_log_dir=tmp_path / "flows.jsonl")
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"\x00" * 40)
    with pytest.raises(ValueError, match="not a pcap or pcapng file"):
        replay_many(EXAMPLE_PATH, [caps[0], bad], tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------------- one capture, split
@pytest.fixture(scope="module")
def big(tmp_path_factory):
    d = tmp_path_factory.mktemp("split")
    # the example's failure event (fw-2 at 5 s) falls inside the capture
    write_pcap(d / "in.pcap", synth.generate(400, 30_000, seed=11, duration=40.0))
    one = d / "one"
    one.mkdir()
    s1 = Pipeline.from_yaml(EXAMPLE_PATH, taps=True).run(d / "in.pcap", one / "out.pcap", taps=one / "taps",
                                                         flow_log=one / "flows.jsonl", chunk=4096)
    return d, s1


def test_split_capture_equals_the_single_machine_run(ray_local, big, tmp_path):
    d, s1 = big
    assert len(record_ranges(d / "in.pcap", 5)) == 5
    s = replay_split(EXAMPLE_PATH, d / "in.pcap", tmp_path / "out.pcap", taps=tmp_path / "taps",
                     flow_log=tmp_path / "flows.jsonl", parts=5, shards=2, chunk=4096)
    assert s.workers == 2 and not s.hints and s.events
    _same_summary(s, s1)
    _same_flows(d / "one" / "flows.jsonl", tmp_path / "flows.jsonl")
    for name in ["out.pcap"] + [f"taps/{link}.pcap" for link in TAP_LINKS]:
        _same_packets(d / "one" / name, tmp_path / name)
    # two flow shards on Ray are the two workers of run --workers 2, packet for packet
    w = tmp_path / "w2"
    w.mkdir()
    run_parallel(EXAMPLE_PATH, d / "in.pcap", w / "out.pcap", workers=2, flow_log=w / "flows.jsonl", chunk=4096)
    assert (w / "out.pcap").read_bytes() == (tmp_path / "out.pcap").read_bytes()
    assert (w / "flows.jsonl").read_text() == (tmp_path / "flows.jsonl").read_text()


@needs_real
def test_split_real_pcapng_capture_equals_the_single_machine_run(ray_local, tmp_path):
    topo = tmp_path / "topology.yaml"
    topo.write_text(yaml.safe_dump(topology_for(REAL)))
    s1 = Pipeline.from_yaml(topo).run(REAL, tmp_path / "one.pcap", flow_log=tmp_path / "one.jsonl", chunk=256)
    s = replay_split(topo, REAL, tmp_path / "split.pcap", flow_log=tmp_path / "split.jsonl", parts=3, shards=2,
                     chunk=256)
    assert not s.hints and s1.packets_out > 400
    _same_summary(s, s1)
    _same_flows(tmp_path / "one.jsonl", tmp_path / "split.jsonl")
    _same_packets(tmp_path / "one.pcap", tmp_path / "split.pcap")


def test_gzip_capture_is_replayed_whole(ray_local, big, tmp_path):
    d, s1 = big
    gz = tmp_path / "in.pcap.gz"
    gz.write_bytes(gzip.compress((d / "in.pcap").read_bytes(), compresslevel=1))
    s = replay_split(EXAMPLE_PATH, gz, tmp_path / "out.pcap", parts=4, shards=2, chunk=4096)
    assert any("gzip-compressed capture cannot be cut by byte range: replayed whole" in h for h in s.hints)
    _same_summary(s, s1)
    assert (tmp_path / "out.pcap").read_bytes() == (d / "one" / "out.pcap").read_bytes()


def _fake_records(n: int) -> bytes:
    """``n`` plausible classic record headers with 4-byte bodies: a chain the boundary search takes for records."""
    return b"".join(struct.pack("<IIII", 1_700_000_000, i, 4, 4) + b"ABCD" for i in range(n))


def test_a_false_boundary_inside_a_record_is_found_out_and_the_capture_replayed_whole(ray_local, tmp_path):
    batch = synth.generate(40, 600, seed=5, duration=3.0)
    pkts = batch.packets()
    # the middle packet carries a payload that looks like a run of records, and holds the file's middle byte
    pkts[300] = pkts[300] + _fake_records(7000)
    write_pcap(tmp_path / "in.pcap", PacketBatch.from_packets(pkts, ts_ns=batch.ts_ns))
    raw = (tmp_path / "in.pcap").read_bytes()
    starts = _record_starts(raw, False)
    (_, b), _ = record_ranges(tmp_path / "in.pcap", 2)
    assert starts[300] < b < starts[301]  # taken in: the cut is inside the record
    s1 = Pipeline.from_yaml(EXAMPLE_PATH).run(tmp_path / "in.pcap", tmp_path / "one.pcap", flow_log=tmp_path / "1.jsonl",
                                              chunk=128)
    s = replay_split(EXAMPLE_PATH, tmp_path / "in.pcap", tmp_path / "split.pcap", flow_log=tmp_path / "2.jsonl",
                     parts=2, shards=2, chunk=128)
    assert any("did not end at a record boundary" in h for h in s.hints), s.hints
    _same_summary(s, s1)
    assert (tmp_path / "one.pcap").read_bytes() == (tmp_path / "split.pcap").read_bytes()


def test_a_pcapng_interface_block_after_the_first_packet(ray_local, tmp_path):
    """Raw-IPv4 packets in the middle of an Ethernet pcapng: the writer describes their interface where they begin.
    A range that starts at that block reads it; a range that holds it, with ranges after it, sends the capture
    to be replayed whole; the results are one machine's."""
    b = synth.generate(30, 600, seed=8, duration=4.0)
    raw = PacketBatch.from_packets([p[14:] for p in b[200:400].packets()], ts_ns=b.ts_ns[200:400], linktype=101)
    path = tmp_path / "mixed.pcapng"
    with PcapWriter(path) as w:
        w.write(b[:200])
        w.write(raw)
        w.write(b[400:])
    idb = _block_starts(path.read_bytes(), 1)[1]  # the second interface block, just before the 201st packet
    assert idb < _record_starts(path.read_bytes(), True)[200]
    s1 = Pipeline.from_yaml(EXAMPLE_PATH).run(path, tmp_path / "one.pcap", flow_log=tmp_path / "one.jsonl",
                                              chunk=64)
    assert s1.packets_in == 600 and s1.drops.get("input", {}) == {}
    seen = set()  # whether the capture went whole
    for parts in (2, 3, 5, 8):
        ranges = record_ranges(path, parts)
        inside = any(a < idb < b for a, b in ranges[:-1])
        s = replay_split(EXAMPLE_PATH, path, tmp_path / f"{parts}.pcap", flow_log=tmp_path / f"{parts}.jsonl",
                         parts=parts, shards=2, chunk=64)
        whole = any("pcapng section or interface block" in h for h in s.hints)
        assert whole == inside, (parts, ranges, idb)
        seen.add(whole)
        _same_summary(s, s1)
        _same_flows(tmp_path / "one.jsonl", tmp_path / f"{parts}.jsonl")
        _same_packets(tmp_path / "one.pcap", tmp_path / f"{parts}.pcap")
    assert True in seen
    # a range that starts at the interface block reads it
    with read_pcap(path, parse=False, start=idb) as r:
        lt = np.concatenate([x.linktype for x in r])
        assert r.error is None and r.control_blocks == 1
    assert lt.tolist() == [101] * 200 + [1] * 200


def test_a_capture_without_records(ray_local, tmp_path):
    write_pcap(tmp_path / "empty.pcap", PacketBatch.empty())
    s = replay_split(EXAMPLE_PATH, tmp_path / "empty.pcap", tmp_path / "out.pcap", parts=3, shards=2)
    assert s.packets_in == 0 and not s.hints and (tmp_path / "out.pcap").is_file()


# ---------------------------------------------------------------------------------------------------- the CLI
def test_cli_ray_one_capture_and_a_glob(ray_local, big, four, tmp_path, capsys):
    d, s1 = big
    assert main(["run", str(EXAMPLE_PATH), str(d / "in.pcap"), "--ray", "--parts", "3", "--shards", "2", "-o",
                 str(tmp_path / "o.pcap"), "--flow-log", str(tmp_path / "f.jsonl"), "--chunk", "4096", "--json",
                 "--quiet"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["workers"] == 2 and out["packets_in"] == s1.packets_in and out["packets_out"] == s1.packets_out
    _same_flows(d / "one" / "flows.jsonl", tmp_path / "f.jsonl")
    fd, _ = four
    assert main(["run", str(EXAMPLE_PATH), str(fd / "synth*.pcap"), "--ray", "-o", str(tmp_path / "many"),
                 "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "synth0: 6,000 packets in" in text and "total of 3 captures" in text
    assert sorted(p.name for p in (tmp_path / "many").iterdir()) == ["synth0.pcap", "synth1.pcap", "synth2.pcap"]
    # usage errors: one line, exit 2
    assert main(["run", str(EXAMPLE_PATH), str(d / "in.pcap"), "--ray", "--report", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith("--report does not work with --ray")
    assert main(["run", str(EXAMPLE_PATH), str(d / "in.pcap"), str(fd / "synth0.pcap")]) == 2
    assert capsys.readouterr().err.strip().endswith("several captures need --ray")
    assert main(["run", str(EXAMPLE_PATH), "--ray", str(d / "in.pcap"), str(fd / "synth0.pcap")]) == 2
    assert "not a cluster address" in capsys.readouterr().err


def _cli(*args) -> subprocess.CompletedProcess:
    code = ("import sys; sys.modules['ray'] = None\n"  # as if Ray were not installed
            "from gwlb_fast.cli import main\n"
            f"sys.exit(main({list(args)!r}))")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)


def test_without_ray_run_ray_exits_2_saying_how_to_install_it(tmp_path):
    p = _cli("run", str(EXAMPLE_PATH), str(tmp_path / "in.pcap"), "--ray", "--quiet")
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == ["gwlb-fast: run --ray needs Ray: pip install 'gwlb-fast[ray]'"]


def test_importing_the_package_does_not_import_ray():
    code = "import sys, gwlb_fast, gwlb_fast.cli, gwlb_fast.scale.distributed; print('ray' in sys.modules)"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 0 and p.stdout.strip() == "False"


# ---------------------------------------------------------------------------------------------------- record boundaries
def _block_starts(raw: bytes, *types: int) -> list[int]:
    """Where each pcapng block of one of ``types`` begins, walking the blocks' own lengths."""
    out, q = [], 0
    while q < len(raw):
        btype, blen = struct.unpack_from("<II", raw, q)
        if btype in types:
            out.append(q)
        q += blen
    return out


def _record_starts(raw: bytes, pcapng: bool) -> list[int]:
    """Where each packet record begins, walking the file's own length fields (an oracle independent of the reader)."""
    if pcapng:
        return _block_starts(raw, 3, 6)
    out, q = [], 24
    while q < len(raw):
        out.append(q)
        q += 16 + struct.unpack_from("<I", raw, q + 8)[0]
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sizes=st.lists(st.integers(14, 1600), min_size=1, max_size=40), seed=st.integers(0, 2**32 - 1),
       cuts=st.lists(st.floats(0, 1), min_size=1, max_size=6), pcapng=st.booleans())
def test_record_boundary_gives_the_records_that_begin_at_or_after_the_cut(tmp_path, sizes, seed, cuts, pcapng):
    rng = np.random.default_rng(seed)
    pkts = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in sizes]
    ts = np.cumsum(rng.integers(1, 10**9, len(pkts))) + 1_600_000_000 * 10**9
    path = tmp_path / ("c.pcapng" if pcapng else "c.pcap")
    write_pcap(path, PacketBatch.from_packets(pkts, ts_ns=ts))
    raw = path.read_bytes()
    starts = _record_starts(raw, pcapng)
    assert len(starts) == len(pkts)
    with read_pcap(path, use_mmap=True, parse=False) as r:
        bounds = [r.record_boundary(int(c * len(raw))) for c in cuts]
    for c, b in zip(cuts, bounds):
        cut = int(c * len(raw))
        later = [i for i, s in enumerate(starts) if s >= cut]
        assert b == (starts[later[0]] if later else len(raw))
        with read_pcap(path, parse=False, start=b) as r:
            got = [p for batch in r for p in batch.packets()]
            assert r.error is None
        assert got == [pkts[i] for i in later]
    # ranges cover every record once, in order
    parts = [p for a, b in record_ranges(path, 1 + len(cuts))
             for batch in read_pcap(path, parse=False, start=a, stop=b) for p in batch.packets()]
    assert parts == pkts
