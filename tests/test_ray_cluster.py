"""run --ray ADDRESS against a cluster of its own: a Ray head started with ``ray start --head`` on 127.0.0.1 (as the
README tells a user to start one), joined by address from another process, as a user points gwlb-fast at a real
cluster. The head is stopped (its process group) at the end, whatever the test did."""
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from gwlb_fast import synth
from gwlb_fast.errors import ClusterError
from gwlb_fast.pcapio import write_pcap
from gwlb_fast.pipeline import Pipeline
from gwlb_fast.scale.distributed import _answers, connected

from .test_distributed import _same_flows
from .test_pipeline import EXAMPLE_PATH

RAY_CLI = Path(sys.executable).with_name("ray")
pytestmark = pytest.mark.skipif(not RAY_CLI.is_file(), reason="ray not installed")
START_SECONDS = 90  # a loaded 2-core machine starts a head in 5-20 s
RUN_SECONDS = 300


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


#: the home of the head and of its clients: Ray keeps state there (an authentication token that a local instance
#: of another test may have written, which a head started later would then ask of every client)
_HOME = tempfile.mkdtemp(prefix="gwlbrayhome")


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env["HOME"] = _HOME
    return env


@pytest.fixture(scope="module")
def head():
    """A one-node cluster on loopback: ``ray start --head --block`` in a process group of its own."""
    gcs, agent = _free_ports(2)
    temp = tempfile.mkdtemp(prefix="gwlbray")  # short: Ray's socket paths live under it
    proc = subprocess.Popen(
        [str(RAY_CLI), "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(gcs),
         "--dashboard-agent-listen-port", str(agent),
         "--num-cpus", "2", "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", temp],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env(), start_new_session=True)
    address = f"127.0.0.1:{gcs}"
    try:
        deadline = time.monotonic() + START_SECONDS
        while True:
            if proc.poll() is not None:
                pytest.fail(f"ray start --head exited {proc.returncode}: {proc.stderr.read()[-2000:]}")
            st = subprocess.run([str(RAY_CLI), "status", "--address", address], capture_output=True, text=True,
                                env=_env(), timeout=60, check=False)
            if st.returncode == 0:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"the Ray head did not answer within {START_SECONDS} s: {st.stderr[-2000:]}")
            time.sleep(1)
        yield address
    finally:
        # the head's --block process stops its services when terminated; the group takes any straggler
        for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        subprocess.run(["rm", "-rf", temp, _HOME], check=False)


def _run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gwlb_fast", *map(str, args)], capture_output=True, text=True,
                          env=_env(), timeout=RUN_SECONDS, check=False)


def test_run_ray_address_joins_a_started_cluster_and_equals_the_single_machine_run(head, tmp_path):
    cap = tmp_path / "in.pcap"
    write_pcap(cap, synth.generate(300, 20_000, seed=7, duration=20.0))
    one = Pipeline.from_yaml(EXAMPLE_PATH).run(cap, tmp_path / "one.pcap", flow_log=tmp_path / "one.jsonl")

    r = _run("run", EXAMPLE_PATH, cap, "-o", tmp_path / "out.pcap", "--flow-log", tmp_path / "f.jsonl",
             "--shards", "2", "--parts", "2", "--json", "--quiet", f"--ray={head}")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["workers"] == 2
    assert (s["packets_in"], s["packets_out"], s["drops"]) == (one.packets_in, one.packets_out, one.drops)
    assert s["firewalls"] == one.firewalls and s["rules"] == one.rules
    _same_flows(tmp_path / "one.jsonl", tmp_path / "f.jsonl")

    # several captures on the same cluster: one task each, each exactly the single-machine run
    caps = tmp_path / "many"
    caps.mkdir()
    for i in range(3):
        write_pcap(caps / f"c{i}.pcap", synth.generate(50 + 20 * i, 2_000, seed=30 + i, duration=8.0))
    r = _run("run", EXAMPLE_PATH, caps / "c*.pcap", "-o", tmp_path / "outs", "--quiet", f"--ray={head}")
    assert r.returncode == 0, r.stderr
    assert "total of 3 captures" in r.stdout
    for i in range(3):
        Pipeline.from_yaml(EXAMPLE_PATH).run(caps / f"c{i}.pcap", tmp_path / f"one{i}.pcap")
        assert (tmp_path / "outs" / f"c{i}.pcap").read_bytes() == (tmp_path / f"one{i}.pcap").read_bytes()


def test_run_ray_with_an_address_nobody_answers_fails_in_one_line(tmp_path):
    (port,) = _free_ports(1)
    cap = tmp_path / "in.pcap"
    write_pcap(cap, synth.generate(10, 100, seed=1))
    t = time.monotonic()
    r = _run("run", EXAMPLE_PATH, cap, "-o", tmp_path / "out.pcap", f"--ray=127.0.0.1:{port}")
    assert time.monotonic() - t < 60  # Ray alone retries a dead address for minutes
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        f"gwlb-fast: --ray 127.0.0.1:{port}: no Ray cluster answers there (Connection refused)"]
    assert not (tmp_path / "out.pcap").exists()


def test_an_address_is_checked_before_ray_is_asked(tmp_path):
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        _answers(f"127.0.0.1:{srv.getsockname()[1]}")  # something answers: Ray is asked to join
        _answers(f"ray://127.0.0.1:{srv.getsockname()[1]}")
        (dead,) = _free_ports(1)
        for a in (f"127.0.0.1:{dead}", f"ray://127.0.0.1:{dead}"):
            with pytest.raises(ClusterError, match="no Ray cluster answers there"):
                _answers(a)
    _answers("auto")  # forms Ray resolves itself are left to it


def test_what_ray_says_when_it_cannot_join_is_one_line(monkeypatch):
    """Ray's own refusal (here: its error for a cluster that wants an authentication token this machine lacks) is
    the one line the command line prints, not Ray's traceback."""
    import ray

    def refuse(**kw):
        raise ConnectionError("Failed to connect to Ray cluster at 127.0.0.1:1\nsee the logs for more")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda address=None, **kw: refuse(**kw))
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        address = f"127.0.0.1:{srv.getsockname()[1]}"
        with pytest.raises(ClusterError) as e, connected(address):
            pass
    assert str(e.value) == f"--ray {address}: Failed to connect to Ray cluster at 127.0.0.1:1"
