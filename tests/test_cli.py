"""The ``gwlb-fast`` command (DESIGN.md section 7): run, demo, outputs, and one clear line for every bad input."""
import csv
import importlib.resources
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import gwlb_fast
from gwlb_fast.cli import main
from gwlb_fast.errors import PcapError
from gwlb_fast.pcapio import read_pcap, write_pcap
from gwlb_fast.pipeline import TAP_LINKS, Pipeline
from gwlb_fast.report import FLOW_LOG_FIELDS
from gwlb_fast.synth import generate_with_truth

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
