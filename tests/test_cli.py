"""The ``gwlb-fast`` command (DESIGN.md section 7): run, demo, outputs, and one clear line for every bad input."""
import csv
import importlib.resources
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gwlb_fast
from gwlb_fast.batch import PacketBatch
from gwlb_fast.cli import main
from gwlb_fast.errors import PcapError
from gwlb_fast.outputs.report import FLOW_LOG_FIELDS
from gwlb_fast.pcapio import read_pcap, write_pcap
from gwlb_fast.pipeline import TAP_LINKS, Pipeline
from gwlb_fast.synth import generate_with_truth
from tests.shared_data import data_path

EXAMPLE = str(importlib.resources.files("gwlb_fast") / "examples" / "topology.yaml")
DATA = Path(__file__).parent / "data"
FLOWS, PACKETS = 40, 3000
SUMMARY_FIELDS = ("packets_in", "bytes_in", "packets_out", "bytes_out", "dropped", "drops", "firewalls",
                  "rules", "nat", "events", "mpps", "seconds", "stage_seconds")


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    """A small synthetic capture (2 s, so flows are open when fw-2 fails at 1 s) and its ground truth."""
    d = tmp_path_factory.mktemp("cli")
    batch, truth = generate_with_truth(FLOWS, PACKETS, seed=3, duration=2.0)
    path = d / "in.pcap"
    write_pcap(path, batch)
    return path, truth


def _count(path):
    return sum(len(b) for b in read_pcap(path))


def _one_line(err):
    """The error output is exactly one line, ``gwlb-fast: ...``."""
    assert err.startswith("gwlb-fast: ") and err.endswith("\n") and err.count("\n") == 1, repr(err)
    return err


# ---------------------------------------------------------------------------------------------------- run
def test_run_json_and_every_output(capture, tmp_path, capsys):
    path, truth = capture
    out, taps, log = tmp_path / "out.pcap", tmp_path / "taps", tmp_path / "flows.csv"
    rc = main(["run", EXAMPLE, str(path), "-o", str(out), "--taps", str(taps), "--flow-log", str(log),
               "--chunk", "300", "--json", "--quiet"])
    cap = capsys.readouterr()
    assert rc == 0 and cap.err == ""
    s = json.loads(cap.out)
    for key in SUMMARY_FIELDS:
        assert key in s, key
    assert s["packets_in"] == PACKETS == s["packets_out"] + s["dropped"]
    assert s["dropped"] == sum(n for reasons in s["drops"].values() for n in reasons.values())
    assert set(s["firewalls"]) == {"fw-1", "fw-2", "fw-3"}
    assert sum(s["rules"].values()) == FLOWS
    # the topology's own event (fw-2 unhealthy at 5 s) lies after this 2 s capture
    assert s["events"] == []
    assert _count(out) == s["packets_out"]
    assert sorted(p.name for p in taps.iterdir()) == sorted(f"{k}.pcap" for k in TAP_LINKS)
    with open(log, newline="") as fh:
        rows = list(csv.reader(fh))
    assert tuple(rows[0]) == FLOW_LOG_FIELDS and len(rows) == FLOWS + 1
    recs = [dict(zip(rows[0], r)) for r in rows[1:]]
    assert sum(int(r["packets"]) + int(r["packets_reply"]) for r in recs) == _count(taps / "gwlb-to-fw.pcap")
    assert {r["direction"] for r in recs} <= {"outbound", "inbound"}
    assert sum(r["action"] == "deny" for r in recs) == int(truth.denied.sum())


def test_run_human_summary_and_jsonl_flow_log(capture, tmp_path, capsys):
    path, _ = capture
    log = tmp_path / "flows.jsonl"
    assert main(["run", EXAMPLE, str(path), "--flow-log", str(log), "--quiet"]) == 0
    out = capsys.readouterr().out
    for words in ("packets in", "packets out", "dropped", "POLICY_DENY", "firewalls", "fw-2", "rule hits", "Mpps"):
        assert words in out
    recs = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(recs) == FLOWS and set(recs[0]) == set(FLOW_LOG_FIELDS)


def test_run_events_file(capture, tmp_path, capsys):
    path, _ = capture
    events = DATA / "events-fw2-fails.yaml"
    assert main(["run", EXAMPLE, str(path), "--events", str(events), "--json", "--quiet"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["events"] == [{"at": 1.0, "firewall": "fw-2", "state": "unhealthy"}]
    assert s["firewalls"]["fw-2"]["state"] == "unhealthy"
    assert s["drops"]["gwlb"]["FW_FAILED"] > 0  # flows established on fw-2 are lost (failover: keep)
    # the library takes the same file
    lib = Pipeline.from_yaml(EXAMPLE).run(path, events=events)
    assert lib.drops == s["drops"] and lib.packets_out == s["packets_out"]


def test_demo_writes_its_outputs(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--flows", "30", "--packets", "2000", "--json", "--quiet"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["packets_in"] == 2000 and s["packets_out"] > 0
    # the shipped topology scripts fw-2 failing at 5 s; the default capture spans 60 s
    assert s["events"] == [{"at": 5.0, "firewall": "fw-2", "state": "unhealthy"}]
    for name in ("input.pcap", "output.pcap", "flows.jsonl", "topology.yaml"):
        assert (out / name).stat().st_size > 0, name
    assert _count(out / "output.pcap") == s["packets_out"]
    assert {p.name for p in (out / "taps").iterdir()} == {f"{k}.pcap" for k in TAP_LINKS}
    assert len((out / "flows.jsonl").read_text().splitlines()) == 30


def test_demo_says_how_many_workers_ran(tmp_path, capsys, monkeypatch):
    """demo takes run's default: one worker below AUTO_WORKERS_MIN_BYTES, every core from it (here 2), and says
    which; the report is written either way."""
    from gwlb_fast import cli
    from gwlb_fast.scale import parallel as par

    argv = ["demo", "--flows", "30", "--packets", "2000", "--json"]
    assert main([*argv, "--out", str(tmp_path / "one")]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["workers"] == 1 and "replayed on 1 worker (" in out.err
    monkeypatch.setattr(cli, "AUTO_WORKERS_MIN_BYTES", 1)
    monkeypatch.setattr(par, "default_workers", lambda: 2)
    assert main([*argv, "--out", str(tmp_path / "two")]) == 0
    out = capsys.readouterr()
    s = json.loads(out.out)
    assert s["workers"] == 2 and "replayed on 2 workers;" in out.err
    assert s["events"] == [{"at": 5.0, "firewall": "fw-2", "state": "unhealthy"}]
    for name in ("output.pcap", "flows.jsonl", "drops.pcapng", "report.html"):
        assert (tmp_path / "two" / name).stat().st_size > 0, name
    assert _count(tmp_path / "two" / "output.pcap") == s["packets_out"]
    assert '"workers": 2' in (tmp_path / "two" / "report.html").read_text()


def test_report_takes_the_automatic_workers(capture, tmp_path, capsys, monkeypatch):
    """--report merges across workers, so a big capture with --report runs on every core by default."""
    from gwlb_fast import cli
    from gwlb_fast.scale import parallel as par

    path, _ = capture
    monkeypatch.setattr(cli, "AUTO_WORKERS_MIN_BYTES", 1)
    monkeypatch.setattr(par, "default_workers", lambda: 2)
    assert main(["run", EXAMPLE, str(path), "--report", str(tmp_path / "r.html"), "--json", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["workers"] == 2
    assert '"workers": 2' in (tmp_path / "r.html").read_text()


@pytest.mark.parametrize("opts", [["--drops", "d.pcapng"], ["--threat-log", "t.jsonl"], ["--report", "r.html"],
                                  ["--workers", "2"], ["--report", "r.html", "--drops", "d.pcapng"]])
def test_ray_refuses_the_options_it_would_ignore(capture, tmp_path, capsys, opts):
    """run --ray does not write the drops file, the threat log or the report (and has no --workers): asking for
    them is refused with one line naming the capture and the options, whether Ray is installed or not, and no
    file is written."""
    path, _ = capture
    argv = [a if a.startswith("-") or a.isdigit() else str(tmp_path / a) for a in opts]
    assert main(["run", EXAMPLE, str(path), *argv, "--ray"]) == 2
    err = _one_line(capsys.readouterr().err)
    names = ", ".join(sorted(a for a in opts if a.startswith("--")))
    assert err == f"gwlb-fast: {path}: {names} does not work with --ray\n"
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------------- bad input
def _corrupt(kind, good: Path, d: Path) -> Path:
    raw = good.read_bytes()
    p = d / f"{kind}.pcap"
    if kind == "truncated":
        p.write_bytes(raw[: len(raw) // 2])
    elif kind == "bad-magic":
        p.write_bytes(b"\x00\x01\x02\x03" + raw[4:])
    elif kind == "empty":
        p.write_bytes(b"")
    elif kind == "text":
        p.write_text("this is not a capture\n")
    return p


@pytest.mark.parametrize("kind, words", [
    ("truncated", "truncated record"),
    ("bad-magic", "not a pcap or pcapng file"),
    ("empty", "empty file"),
    ("text", "not a pcap or pcapng file"),
])
def test_corrupt_capture_one_line_exit_1(capture, tmp_path, capsys, kind, words):
    path, _ = capture
    bad = _corrupt(kind, path, tmp_path)
    out = tmp_path / "out.pcap"
    assert main(["run", EXAMPLE, str(bad), "-o", str(out), "--quiet"]) == 1
    cap = capsys.readouterr()
    err = _one_line(cap.err)
    assert err.startswith(f"gwlb-fast: {bad}") and words in err
    if kind == "truncated":
        # every good packet before the damage went through, and the summary says so
        assert 0 < _count(out) < PACKETS and "input error" in cap.out
        with pytest.raises(PcapError, match="truncated record"):
            Pipeline.from_yaml(EXAMPLE).run(bad)


@pytest.mark.parametrize("case, rc, words", [
    ("missing-capture", 1, "no such file"),
    ("missing-topology", 1, "no such file"),
    ("capture-is-dir", 1, "is a directory"),
    ("invalid-yaml", 2, "invalid YAML"),
    ("unknown-endpoint", 2, "vpcs.business.route_tables.app[0].via: unknown endpoint 'nope'"),
    ("gwlb-missing", 2, "endpoints.gwlbe-a.gwlb"),
    ("events-unknown-fw", 2, "unknown firewall 'fw-9'"),
    ("missing-events", 1, "no such file"),
    ("flow-log-suffix", 2, "flow log must end in .jsonl or .csv"),
])
def test_bad_input_one_line(capture, tmp_path, capsys, case, rc, words):
    path, _ = capture
    topo, cap, extra = EXAMPLE, str(path), []
    named = None
    if case == "missing-capture":
        cap = named = str(tmp_path / "nope.pcap")
    elif case == "missing-topology":
        topo = named = str(tmp_path / "nope.yaml")
    elif case == "capture-is-dir":
        cap = named = str(tmp_path)
    elif case in ("invalid-yaml", "unknown-endpoint", "gwlb-missing"):
        topo = named = str(DATA / f"topology-{case}.yaml")
    elif case == "events-unknown-fw":
        named = str(DATA / "events-unknown-fw.yaml")
        extra = ["--events", named]
    elif case == "missing-events":
        named = str(tmp_path / "nope-events.yaml")
        extra = ["--events", named]
    elif case == "flow-log-suffix":
        named = str(tmp_path / "flows.txt")
        extra = ["--flow-log", named]
    assert main(["run", topo, cap, "--quiet", *extra]) == rc
    err = _one_line(capsys.readouterr().err)
    assert err.startswith(f"gwlb-fast: {named}") and words in err, err


def test_usage_errors_exit_2(capture, capsys):
    path, _ = capture
    for argv in (["run", EXAMPLE], ["run", EXAMPLE, str(path), "--chunk", "0"], ["demo", "--flows", "x"], []):
        with pytest.raises(SystemExit) as ei:
            main(argv)
        assert ei.value.code == 2
        assert "usage: gwlb-fast" in capsys.readouterr().err


def test_python_dash_m_reports_one_line(capture, tmp_path):
    """``python -m gwlb_fast`` end to end in a fresh interpreter: a corrupt capture, then a good run."""
    path, _ = capture
    bad = _corrupt("bad-magic", path, tmp_path)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(gwlb_fast.__file__).parent.parent), env.get("PYTHONPATH", "")])
    p = subprocess.run([sys.executable, "-m", "gwlb_fast", "run", EXAMPLE, str(bad), "--quiet"],
                       capture_output=True, text=True, env=env, timeout=120, check=False)
    assert p.returncode == 1 and p.stdout == ""
    assert _one_line(p.stderr).startswith(f"gwlb-fast: {bad} at byte 0: not a pcap or pcapng file")


# ---------------------------------------------------------------------------------------------------- output safety
LAB = str(DATA / "topology-lab.yaml")
HAVE_CAPINFOS = shutil.which("capinfos") is not None
HAVE_TSHARK = shutil.which("tshark") is not None


def _snapshot(d: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}


@pytest.mark.parametrize("how", ["same", "dot-slash", "symlink", "hardlink", "taps-dir"])
@pytest.mark.parametrize("command", ["run", "encap", "decap"])
def test_output_that_is_the_input_is_refused_and_the_input_intact(capture, tmp_path, capsys, how, command):
    path, _ = capture
    src = tmp_path / "v.pcap"
    src.write_bytes(path.read_bytes())
    if how == "taps-dir":
        if command != "run":
            pytest.skip("only run has taps")
        src = tmp_path / "vpc-to-gwlbe.pcap"
        src.write_bytes(path.read_bytes())
        out_args = ["--taps", str(tmp_path)]
    else:
        out = {"same": src, "dot-slash": tmp_path / "." / "v.pcap", "symlink": tmp_path / "link.pcap",
               "hardlink": tmp_path / "hard.pcap"}[how]
        if how == "symlink":
            out.symlink_to(src)
        elif how == "hardlink":
            os.link(src, out)
        out_args = ["-o", str(out)]
    before = _snapshot(tmp_path)
    argv = {"run": ["run", EXAMPLE, str(src), "--quiet"],
            "encap": ["encap", str(src), "--src", "10.0.0.10", "--dst", "10.0.1.11"],
            "decap": ["decap", str(src)]}[command] + out_args
    assert main(argv) == 2
    cap = capsys.readouterr()
    err = _one_line(cap.err)
    assert "refusing to overwrite" in err and cap.out == ""
    assert _snapshot(tmp_path) == before  # nothing written, nothing changed, no temporary file left
    assert _count(src) == PACKETS


def test_topology_and_events_files_are_inputs_too(capture, tmp_path, capsys):
    path, _ = capture
    topo = tmp_path / "topo.yaml"
    topo.write_text(Path(EXAMPLE).read_text())
    assert main(["run", str(topo), str(path), "--flow-log", str(topo.with_suffix(".csv")), "-o",
                 str(topo), "--quiet"]) == 2
    assert "refusing to overwrite" in _one_line(capsys.readouterr().err)
    assert topo.read_text() == Path(EXAMPLE).read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["topo.yaml"]
    events = tmp_path / "events.yaml"
    events.write_text("- {at: 0.5, firewall: fw-1, state: unhealthy}\n")
    assert main(["run", EXAMPLE, str(path), "--events", str(events), "-o", str(events), "--quiet"]) == 2
    assert "refusing to overwrite" in _one_line(capsys.readouterr().err)
    assert events.read_text() == "- {at: 0.5, firewall: fw-1, state: unhealthy}\n"


@pytest.mark.parametrize("extra", [[], ["--taps", "TAPS"]])
def test_bad_flow_log_suffix_leaves_no_file(capture, tmp_path, capsys, extra):
    path, _ = capture
    extra = [str(tmp_path / "taps") if a == "TAPS" else a for a in extra]
    rc = main(["run", EXAMPLE, str(path), "-o", str(tmp_path / "out.pcap"), "--flow-log", str(tmp_path / "f.txt"),
               "--quiet", *extra])
    assert rc == 2 and "flow log must end in" in _one_line(capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []


def test_failed_run_keeps_the_previous_outputs(capture, tmp_path, capsys):
    """Outputs are renamed into place only when complete: a run that fails half-way leaves the old ones."""
    path, _ = capture
    out, log = tmp_path / "out.pcap", tmp_path / "flows.jsonl"
    out.write_bytes(b"previous run")
    log.write_text("previous log\n")
    pipe = Pipeline.from_yaml(EXAMPLE)
    calls = []

    def boom(*a, **kw):
        calls.append(1)
        raise RuntimeError("disk on fire")

    pipe.flow_records = boom  # fails at the first ended session, after output has been written
    with pytest.raises(RuntimeError):
        pipe.run(path, out, flow_log=log, chunk=500)
    assert calls and out.read_bytes() == b"previous run" and log.read_text() == "previous log\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flows.jsonl", "out.pcap"]


def test_missing_output_folder_names_the_output(capture, tmp_path, capsys):
    path, _ = capture
    out = tmp_path / "nope" / "out.pcap"
    assert main(["run", EXAMPLE, str(path), "-o", str(out), "--quiet"]) == 1
    assert _one_line(capsys.readouterr().err) == f"gwlb-fast: {out}: no such file\n"


def test_pcapng_output_and_taps_follow_its_format(capture, tmp_path, capsys):
    path, _ = capture
    out, taps = tmp_path / "out.pcapng", tmp_path / "taps"
    assert main(["run", EXAMPLE, str(path), "-o", str(out), "--taps", str(taps), "--json", "--quiet"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert out.read_bytes()[:4] == b"\x0a\x0d\x0d\x0a"
    assert {p.name for p in taps.iterdir()} == {f"{k}.pcapng" for k in TAP_LINKS}
    r = read_pcap(out)
    assert sum(len(b) for b in r) == s["packets_out"] and r.format == "pcapng"


def _in_time_order(paths):
    out = subprocess.run(["capinfos", "-o", "-T", "-r", *map(str, paths)], check=True, capture_output=True,
                         text=True).stdout
    return {Path(ln.split("\t")[0]).name: ln.split("\t")[-1] for ln in out.splitlines()}


@pytest.mark.skipif(not HAVE_CAPINFOS, reason="capinfos not installed")
def test_output_and_taps_strictly_in_time_order_on_demo_traffic(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--flows", "300", "--packets", "30000", "--quiet"]) == 0
    capsys.readouterr()
    files = [out / "output.pcap", *sorted((out / "taps").iterdir())]
    order = _in_time_order(files)
    assert order == {p.name: "True" for p in files}
    assert all(_count(p) > 0 for p in files)


@pytest.mark.skipif(not HAVE_CAPINFOS, reason="capinfos not installed")
@pytest.mark.parametrize("name", ["http_espn.pcapng", "tcp_ports.pcapng", "synscan.pcapng", "sessionhijacking.pcapng"])
def test_output_and_taps_strictly_in_time_order_on_real_captures(tmp_path, capsys, name):
    cap = data_path("captures", "real", name)
    if not cap.exists():
        pytest.skip("shared captures absent")
    out, taps = tmp_path / "out.pcapng", tmp_path / "taps"
    assert main(["run", LAB, str(cap), "-o", str(out), "--taps", str(taps), "--json", "--quiet"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["packets_out"] > 0
    files = [out, *sorted(taps.iterdir())]
    assert _in_time_order(files) == {p.name: "True" for p in files}


def _as_linux_cooked(src: Path, dst: Path) -> int:
    """The Ethernet capture rewritten as Linux cooked v1 (16-byte header, as `tcpdump -i any` writes)."""
    import struct

    b = PacketBatch.concat(list(read_pcap(src, parse=False)))
    pkts = [struct.pack("!HHH6sxxH", 0, 1, 6, p[6:12], 0x0800) + p[14:] for p in b.packets()]
    sll = PacketBatch.from_packets(pkts, ts_ns=b.ts_ns, linktype=113)
    write_pcap(dst, sll)
    return len(pkts)


def test_bytes_out_is_what_was_written_for_linux_cooked_input(capture, tmp_path, capsys):
    path, _ = capture
    sll = tmp_path / "sll.pcap"
    _as_linux_cooked(path, sll)
    for name in ("out.pcap", "out.pcapng"):
        out = tmp_path / name
        assert main(["run", EXAMPLE, str(sll), "-o", str(out), "--json", "--quiet"]) == 0
        s = json.loads(capsys.readouterr().out)
        written = PacketBatch.concat(list(read_pcap(out, parse=False)))
        assert s["packets_out"] == len(written) > 0
        assert s["bytes_out"] == int(written.caplen.sum()), name
        if name == "out.pcap":  # converted to Ethernet: 2 bytes shorter a packet than the cooked ones
            assert (written.linktype == 1).all()
        else:
            assert (written.linktype == 113).all()
    # classic pcap on disk: record headers + captured bytes
    size = (tmp_path / "out.pcap").stat().st_size
    assert size == 24 + 16 * s["packets_out"] + int(PacketBatch.concat(
        list(read_pcap(tmp_path / "out.pcap", parse=False))).caplen.sum())


@pytest.mark.skipif(not HAVE_TSHARK, reason="tshark not installed")
def test_attachment_id_option_is_carried(tmp_path, capsys):
    """The lab topology's endpoint sets attachment_id 0x1122334455667788: every Geneve frame to a firewall carries
    it (option type 2, after the endpoint id), as tshark decodes the options."""
    cap = data_path("captures", "real", "http_espn.pcapng")
    if not cap.exists():
        pytest.skip("shared captures absent")
    taps = tmp_path / "taps"
    assert main(["run", LAB, str(cap), "--taps", str(taps), "--quiet"]) == 0
    capsys.readouterr()
    out = subprocess.run(["tshark", "-r", str(taps / "gwlb-to-fw.pcap"), "-T", "fields", "-e",
                          "geneve.option.type", "-e", "geneve.option.unknown.data"], check=True,
                         capture_output=True, text=True).stdout.splitlines()
    assert len(out) == _count(taps / "gwlb-to-fw.pcap") > 0
    for ln in out:
        types, data = ln.split("\t")
        assert [int(t, 0) for t in types.split(",")] == [1, 2, 3]
        assert data.split(",")[:2] == ["0a1b2c3d4e5f6071", "1122334455667788"]


def test_attachment_id_key_default_and_bounds(tmp_path):
    from gwlb_fast.config import load_topology
    from gwlb_fast.errors import ConfigError

    assert load_topology(EXAMPLE).endpoints["gwlbe-a"].attachment_id == 0
    assert load_topology(LAB).endpoints["gwlbe-a"].attachment_id == 0x1122334455667788
    bad = tmp_path / "bad.yaml"
    bad.write_text(Path(LAB).read_text().replace("attachment_id: 0x1122334455667788", "attachment_id: -1"))
    with pytest.raises(ConfigError, match="endpoints.gwlbe-a.attachment_id"):
        load_topology(bad)


def test_corrupt_record_mid_capture_is_skipped_and_counted(capture, tmp_path, capsys):
    import struct

    path, _ = capture
    raw = bytearray(path.read_bytes())
    pos, i = 24, 0
    while i < PACKETS // 2:  # walk to the middle record
        pos += 16 + struct.unpack_from("<I", raw, pos + 8)[0]
        i += 1
    cl = struct.unpack_from("<I", raw, pos + 8)[0]
    raw[pos + 8: pos + 12] = struct.pack("<I", 0xDEADBEEF)
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(bytes(raw))
    out = tmp_path / "out.pcap"
    assert main(["run", EXAMPLE, str(bad), "-o", str(out), "--json", "--quiet"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["packets_in"] == PACKETS - 1 and s["input_error"] is None
    assert (s["input_skipped_records"], s["input_skipped_bytes"]) == (1, 16 + cl)
    assert main(["run", EXAMPLE, str(bad), "--quiet"]) == 0
    assert "input skipped" in capsys.readouterr().out


def test_out_of_order_capture_is_written_in_time_order(capture, tmp_path, capsys):
    """A capture whose packets go back in time by less than the reorder window (as multi-queue captures do)
    comes out sorted, output and taps."""
    path, _ = capture
    b = PacketBatch.concat(list(read_pcap(path, parse=False)))
    rng = np.random.default_rng(1)
    perm = np.arange(len(b))
    for j in rng.integers(0, len(b) - 3, 200):  # swap neighbours
        perm[j], perm[j + 2] = perm[j + 2], perm[j]
    shuffled = b[perm]
    assert not bool((np.diff(shuffled.ts_ns) >= 0).all())
    src = tmp_path / "shuffled.pcap"
    write_pcap(src, shuffled)
    out, taps = tmp_path / "out.pcap", tmp_path / "taps"
    assert main(["run", EXAMPLE, str(src), "-o", str(out), "--taps", str(taps), "--chunk", "250", "--json",
                 "--quiet"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["out_of_order"] == 0 and s["packets_out"] > 0
    for p in [out, *taps.iterdir()]:
        ts = np.concatenate([x.ts_ns for x in read_pcap(p, parse=False)] or [np.zeros(0, np.int64)])
        assert bool((np.diff(ts) >= 0).all()), p.name


@pytest.mark.parametrize("linktype", [0, 108, 9])
def test_null_loopback_and_ppp_input_replays_like_ethernet(capture, tmp_path, capsys, linktype):
    import struct

    path, _ = capture
    b = PacketBatch.concat(list(read_pcap(path, parse=False)))
    head = {0: struct.pack("<I", 2), 108: struct.pack(">I", 2), 9: b"\xff\x03\x00\x21"}[linktype]
    other = PacketBatch.from_packets([head + p[14:] for p in b.packets()], ts_ns=b.ts_ns, linktype=linktype)
    src = tmp_path / f"lt{linktype}.pcap"
    write_pcap(src, other)
    runs = []
    for cap in (path, src):
        out = tmp_path / f"out-{cap.stem}.pcapng"
        assert main(["run", EXAMPLE, str(cap), "-o", str(out), "--json", "--quiet"]) == 0
        s = json.loads(capsys.readouterr().out)
        # the same path, packet for packet (the firewalls' byte counts include each frame's link header)
        fws = {k: {c: v for c, v in f.items() if c != "bytes"} for k, f in s["firewalls"].items()}
        runs.append((s["packets_out"], s["drops"], fws, s["rules"], s["nat"]))
        w = PacketBatch.concat(list(read_pcap(out)))
        assert s["bytes_out"] == int(w.caplen.sum())
    assert runs[0] == runs[1]


def test_signature_file_named_by_the_topology_is_an_input(capture, tmp_path, capsys):
    path, _ = capture
    rules = tmp_path / "threats.rules"
    rules.write_text('alert tcp any any -> any 80 (msg:"x"; content:"zzzz"; sid:1;)\n')
    topo = tmp_path / "topo.yaml"
    topo.write_text(Path(EXAMPLE).read_text().replace("security_policy:", "security_policy:\n  signatures: "
                                                                          "[threats.rules]", 1))
    before = rules.read_bytes()
    assert main(["run", str(topo), str(path), "--flow-log", str(tmp_path / "x.jsonl"), "-o", str(rules),
                 "--quiet"]) == 2
    assert "refusing to overwrite" in _one_line(capsys.readouterr().err)
    assert rules.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["threats.rules",
                                                                                          "topo.yaml"]


@pytest.mark.parametrize("argv0, cli", [("-m", True), ("/usr/local/bin/gwlb-fast", True), ("myprogram.py", False)])
def test_blas_threads_only_left_out_of_the_command_line(argv0, cli):
    """The command line's process starts no BLAS threads (the engine never calls BLAS); a program that imports the
    engine keeps its own settings."""
    import subprocess
    import sys

    code = (f"import os, sys; sys.argv = [{argv0!r}]; os.environ.pop('OPENBLAS_NUM_THREADS', None); "
            "import gwlb_fast; print(os.environ.get('OPENBLAS_NUM_THREADS'), len(os.listdir('/proc/self/task')))")
    env_value, threads = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                        text=True).stdout.split()
    if cli:
        assert env_value == "1" and threads == "1"
    else:
        assert env_value == "None"


@pytest.mark.parametrize("argv0, cli", [("-m", True), ("myprogram.py", False)])
def test_garbage_collector_held_back_only_while_the_command_line_loads(argv0, cli, tmp_path):
    """The command line's process collects no garbage while it imports and loads its configuration, then collects
    again for the replay, with what it loaded frozen; a program that imports the engine keeps its collector."""
    import subprocess
    import sys

    cap = tmp_path / "in.pcap"
    write_pcap(cap, generate_with_truth(flows=3, packets=20, seed=1)[0])
    code = (f"import gc, sys; sys.argv = [{argv0!r}]; import gwlb_fast; print(gc.isenabled()); "
            "from gwlb_fast.pipeline import Pipeline; from gwlb_fast.cli import main; real = Pipeline.run\n"
            "def spy(self, *a, **k):\n"
            "    print(gc.isenabled(), gc.get_freeze_count() > 1000)\n"
            "    return real(self, *a, **k)\n"
            f"Pipeline.run = spy; main(['run', {EXAMPLE!r}, {str(cap)!r}, '-o', {str(tmp_path / 'o.pcap')!r}, "
            "'--json'])")
    lines = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split("\n")
    if cli:
        assert lines[0] == "False" and lines[1] == "True True"
    else:
        assert lines[0] == "True" and lines[1] == "True False"
