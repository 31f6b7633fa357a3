"""``run --drops FILE.pcapng`` and ``run --report FILE.html`` (DESIGN.md section 11).

The drops file is judged by tshark (``frame.comment``) and by a plain reading of the pcapng blocks; the report by
its own numbers against the run's summary, and by headless Chromium (no console error, a screenshot that is not
blank, one chart per section). The report of ``--workers 2`` is judged against one worker's, on synthetic traffic
and on real captures, and the merge of report states against one state fed every shard's numbers.
"""
import itertools
import json
import re
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from gwlb_fast.batch import PacketBatch
from gwlb_fast.cli import main
from gwlb_fast.outputs.drops import CommentedPcapngWriter
from gwlb_fast.outputs.htmlreport import RULES_CHARTED, ReportState, TimeBins, charted_rules
from gwlb_fast.pcapio import read_pcap, write_pcap
from gwlb_fast.synth import generate

from .shared_data import data_path

SECTIONS = ("load", "drops", "events", "rules", "talkers", "nat")


def _example():
    import importlib.resources

    return str(importlib.resources.files("gwlb_fast") / "examples" / "topology.yaml")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One run of the example topology (fw-2 fails at 5 s) on 20,000 synthetic packets over 10 s."""
    d = tmp_path_factory.mktemp("report")
    cap = d / "in.pcap"
    write_pcap(cap, generate(flows=300, packets=20_000, seed=4, duration=10.0))
    drops, report = d / "drops.pcapng", d / "report.html"
    rc = main(["run", _example(), str(cap), "-o", str(d / "out.pcap"), "--drops", str(drops), "--report",
               str(report), "--json", "--quiet"])
    assert rc == 0
    return cap, drops, report


@pytest.fixture(scope="module")
def summary(run):
    cap, _, _ = run
    from gwlb_fast.pipeline import Pipeline

    return Pipeline.from_yaml(_example()).run(cap).as_dict()


def _read_pcapng(path):
    """(interface linktypes, [(interface, ts, caplen, wirelen, data, comment)]) by walking the blocks."""
    raw = path.read_bytes()
    pos, ifaces, pkts = 0, [], []
    while pos < len(raw):
        btype, blen = struct.unpack_from("<II", raw, pos)
        assert blen % 4 == 0 and blen >= 12 and struct.unpack_from("<I", raw, pos + blen - 4)[0] == blen
        body = raw[pos + 8: pos + blen - 4]
        if btype == 1:
            ifaces.append(struct.unpack_from("<H", body)[0])
        elif btype == 6:
            iface, hi, lo, cap, wire = struct.unpack_from("<IIIII", body)
            data = body[20: 20 + cap]
            opts = body[20 + ((cap + 3) & ~3):]
            comment = None
            while len(opts) >= 4:
                code, olen = struct.unpack_from("<HH", opts)
                if code == 0:
                    break
                if code == 1:
                    comment = opts[4: 4 + olen].decode()
                opts = opts[4 + ((olen + 3) & ~3):]
            pkts.append((iface, (hi << 32) | lo, cap, wire, data, comment))
        pos += blen
    return ifaces, pkts


def test_drops_file_holds_exactly_the_dropped_packets(run, summary):
    cap, drops, _ = run
    _, pkts = _read_pcapng(drops)
    assert len(pkts) == summary["dropped"] > 0
    assert all(c and c.startswith("dropped at ") for *_, c in pkts)
    ts = [p[1] for p in pkts]
    assert ts == sorted(ts)
    # per stage and reason, the comments count what the summary counts
    counts = {}
    for *_, c in pkts:
        m = re.match(r"dropped at (\w+): (\w+)", c)
        counts.setdefault(m.group(1), {}).setdefault(m.group(2), 0)
        counts[m.group(1)][m.group(2)] += 1
    assert counts == summary["drops"]
    # every dropped packet is an input packet, byte for byte
    inputs = {(int(t), bytes(b.data[o:o + c])) for b in read_pcap(cap, parse=False)
              for t, o, c in zip(b.ts_ns, b.off, b.caplen)}
    assert all((t, data) in inputs for _, t, _, _, data, _ in pkts)
    fw_named = [c for *_, c in pkts if "POLICY_DENY" in c or "FW_FAILED" in c]
    assert fw_named and all("; firewall fw-" in c for c in fw_named)
    assert all("; rule block-rest" in c for c in fw_named if "POLICY_DENY" in c)


def test_workers_write_the_drops_file_of_one_worker(run, tmp_path):
    """run --workers 2 --drops: the workers' dropped packets merged in time order, each with the comment one worker
    gives it (the same packets, bytes and comments)."""
    cap, drops, _ = run
    rc = main(["run", _example(), str(cap), "--drops", str(tmp_path / "w2.pcapng"), "--workers", "2", "--quiet"])
    assert rc == 0
    ifaces1, one = _read_pcapng(drops)
    ifaces2, two = _read_pcapng(tmp_path / "w2.pcapng")
    assert [p[1] for p in two] == sorted(p[1] for p in two) and len(two) > 0
    assert sorted((ifaces1[i], *rest) for i, *rest in one) == sorted((ifaces2[i], *rest) for i, *rest in two)


@pytest.mark.tshark
@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_tshark_reads_the_comments(run, summary):
    _, drops, _ = run
    out = subprocess.run(["tshark", "-r", str(drops), "-T", "fields", "-e", "frame.comment"], capture_output=True,
                         text=True, check=True).stdout.splitlines()
    assert len(out) == summary["dropped"]
    assert all(line.startswith("dropped at ") for line in out)
    assert sum("FW_FAILED" in line and "firewall fw-2" in line for line in out) == \
        summary["drops"]["gwlb"]["FW_FAILED"]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.binary(min_size=1, max_size=90), st.integers(0, 2**40), st.sampled_from([1, 101]),
                          st.integers(0, 3)), min_size=0, max_size=20))
def test_commented_writer_round_trip(tmp_path_factory, pkts):
    comments = [b"", b"a", b"dropped at route: NO_ROUTE", "no \u00e9".encode()]
    path = tmp_path_factory.mktemp("w") / "x.pcapng"
    w = CommentedPcapngWriter(path)
    if pkts:
        b = PacketBatch.from_packets([p[0] for p in pkts], ts_ns=[p[1] for p in pkts], linktype=[p[2] for p in pkts])
        b.wirelen = b.caplen + 7
        w.write(b, np.array([p[3] for p in pkts]), comments)
    w.close()
    ifaces, got = _read_pcapng(path)
    assert len(got) == len(pkts)
    for (data, ts, lt, c), (iface, gts, cap, wire, gdata, comment) in zip(pkts, got):
        assert (ifaces[iface], gts, cap, wire, gdata) == (lt, ts, len(data), len(data) + 7, data)
        assert comment == (comments[c].decode() if comments[c] else None)


def _report_data(path):
    text = path.read_text()
    m = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', text, re.DOTALL)
    return text, json.loads(m.group(1).replace("<\\/", "</"))


def test_report_numbers_equal_the_summary(run, summary):
    _, _, report = run
    text, d = _report_data(report)
    assert d["packets_in"] == summary["packets_in"] and d["dropped"] == summary["dropped"]
    for name, c in summary["firewalls"].items():
        assert d["firewalls"][name] == {k: c[k] for k in ("flows", "packets", "bytes")}, name
        assert round(sum(d["series"]["packets"][name])) == c["packets"]
    assert d["drops"] == summary["drops"]
    assert d["rules"] == summary["rules"]
    ev = d["events"]
    assert [(e["at"], e["firewall"]) for e in ev] == [(5.0, "fw-2")]
    assert ev[0]["packets_lost"] == summary["drops"]["gwlb"]["FW_FAILED"] > 0
    assert ev[0]["flows_placed"]["fw-2"] == 0  # an unhealthy firewall takes no new flow
    # one chart per section, inline SVG, nothing fetched
    for s in SECTIONS:
        sec = re.search(rf'<section id="{s}">(.*?)</section>', text, re.DOTALL).group(1)
        assert sec.count("<svg") == 1, s
    assert not re.search(r'(src|href)="(https?:)?//', text)
    assert "<script src" not in text


def test_time_bins_merge_and_keep_totals():
    rng = np.random.default_rng(0)
    tb = TimeBins(3, width_ns=1000)
    ts = np.sort(rng.integers(0, 10**9, 5000))
    key = rng.integers(0, 3, 5000)
    for a in range(0, 5000, 700):
        tb.add(ts[a:a + 700], key[a:a + 700])
    assert tb.counts.sum() == 5000
    assert np.array_equal(tb.counts.sum(axis=0), np.bincount(key, minlength=3))
    b = (ts - ts[0]) // tb.width
    assert np.array_equal(tb.counts[: b.max() + 1, 1], np.bincount(b[key == 1], minlength=b.max() + 1))


def _renders_in_chromium(report, tmp_path):
    """The page in headless Chromium: no console error, every section, a screenshot that is not blank."""
    import matplotlib.image

    url = report.resolve().as_uri()
    dom = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                          "--v=0", "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True)
    assert "CONSOLE" not in dom.stderr, dom.stderr
    for s in SECTIONS:
        assert f'<section id="{s}">' in dom.stdout
    shot = tmp_path / "shot.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                    "--window-size=1100,2400", url], capture_output=True, timeout=120, check=True)
    img = matplotlib.image.imread(shot)
    assert img.shape[0] >= 2000 and img[..., :3].std() > 0.05  # not blank


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not installed")
def test_report_renders_in_headless_chromium(run, tmp_path):
    _, _, report = run
    _renders_in_chromium(report, tmp_path)
    # the checker itself: a page with a console error is caught
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><script>console.error('boom')</script></body></html>")
    dom = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                          "--v=0", "--dump-dom", bad.resolve().as_uri()], capture_output=True, text=True, timeout=120,
                         check=True)
    assert "CONSOLE" in dom.stderr


def test_outputs_never_overwrite_inputs(tmp_path, capsys):
    cap = tmp_path / "in.pcap"
    write_pcap(cap, generate(flows=5, packets=50, seed=1))
    before = cap.read_bytes()
    assert main(["run", _example(), str(cap), "--drops", str(cap), "--quiet"]) == 2
    assert main(["run", _example(), str(cap), "--report", str(cap), "--quiet"]) == 2
    assert main(["run", _example(), str(cap), "--drops", str(tmp_path / "d.pcap"), "--quiet"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and all(e.startswith("gwlb-fast: ") for e in err)
    assert cap.read_bytes() == before and not list(tmp_path.glob("*.part"))


# ---------------------------------------------------------------------------------------------------- --workers N
@pytest.fixture(scope="module")
def run2(run, tmp_path_factory):
    """The capture of ``run`` with --workers 2 and small chunks (many chunks per worker, events inside them)."""
    cap, _, _ = run
    d = tmp_path_factory.mktemp("report2")
    report = d / "report.html"
    rc = main(["run", _example(), str(cap), "-o", str(d / "out.pcap"), "--drops", str(d / "drops.pcapng"),
               "--report", str(report), "--workers", "2", "--chunk", "997", "--json", "--quiet"])
    assert rc == 0
    return report


def _assert_same_report(one: dict, two: dict) -> None:
    """What the report of --workers N shares with one worker's: every total and every time series bin by bin;
    the NAT samples (taken at the end of each chunk read, more chunks with one worker) agree at the end, when both
    hold the ports in use after the last packet."""
    for k in ("packets_in", "packets_out", "dropped", "firewalls", "drops", "rules", "events", "top_talkers",
              "services", "bin_seconds", "bin_start", "bins", "k"):
        assert two[k] == one[k], k
    assert two["series"].keys() == one["series"].keys()
    for key in one["series"]:
        assert two["series"][key] == one["series"][key], key
    assert two["nat"]["gateways"] == one["nat"]["gateways"] and two["nat"]["counters"] == one["nat"]["counters"]
    a, b = one["nat"]["samples"], two["nat"]["samples"]
    assert bool(a) == bool(b)
    if b:
        assert b[-1] == a[-1]
        assert all(x[0] < y[0] for x, y in itertools.pairwise(b))


def test_workers_report_equals_one_workers(run, run2, summary):
    _, _, report = run
    _, one = _report_data(report)
    text, two = _report_data(run2)
    assert one["workers"] == 1 and two["workers"] == 2
    _assert_same_report(one, two)
    # the test's capture exercises what the merge must get right: an event, drops, several firewalls, NAT
    assert one["events"] and one["drops"]["gwlb"]["FW_FAILED"] > 0 and len(one["firewalls"]) == 3
    assert sum(v["packets"] for v in two["firewalls"].values()) > 0 and one["nat"]["samples"]
    assert two["firewalls"] == {n: {k: c[k] for k in ("flows", "packets", "bytes")}
                                for n, c in summary["firewalls"].items()}
    assert "Replayed on 2 flow shards" in text and "Replayed on" not in report.read_text()
    for sec in SECTIONS:
        body = re.search(rf'<section id="{sec}">(.*?)</section>', text, re.DOTALL).group(1)
        assert body.count("<svg") == 1, sec


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not installed")
def test_workers_report_renders_in_headless_chromium(run2, tmp_path):
    _renders_in_chromium(run2, tmp_path)


REAL = data_path("captures", "real")
REAL_REPORTED = [n for n in ("http_espn.pcapng", "synscan.pcapng", "tcp_ports.pcapng") if (REAL / n).is_file()]


@pytest.mark.skipif(not REAL_REPORTED, reason="shared captures absent")
@pytest.mark.parametrize("name", REAL_REPORTED)
def test_workers_report_of_a_real_capture_equals_one_workers(name, tmp_path):
    from .test_real_captures import topology_for

    cap = REAL / name
    topo = tmp_path / "topology.yaml"
    topo.write_text(yaml.safe_dump(topology_for(cap)))
    pages = {}
    for n, chunk in ((1, 64), (2, 32)):
        pages[n] = tmp_path / f"r{n}.html"
        assert main(["run", str(topo), str(cap), "--report", str(pages[n]), "--workers", str(n), "--chunk",
                     str(chunk), "--quiet", "--json"]) == 0
    _, one = _report_data(pages[1])
    _, two = _report_data(pages[2])
    assert one["packets_in"] > 100 and sum(v["packets"] for v in one["firewalls"].values()) > 0
    _assert_same_report(one, two)
    # the parent of 2 workers reads 2 x 32 packets at a time, as one worker reads 64: the same NAT samples
    assert len(one["nat"]["samples"]) > 5 and two["nat"]["samples"] == one["nat"]["samples"]


_SESSION = np.dtype([("client_ip", np.uint32), ("server_ip", np.uint32), ("proto", np.uint8),
                     ("server_port", np.uint16), ("bytes_c2s", np.uint64), ("bytes_s2c", np.uint64)])


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_merged_report_states_equal_one_state_fed_everything(data):
    """Numbers dealt to 1-4 shards chunk by chunk (as --workers does: every shard sees every chunk, with only its
    rows), each shard's state through as_dict/from_dict (the pipe), merged: the same bins, width, talkers and
    services as one state fed every row; the NAT samples are the sum of the shards' step functions."""
    n = data.draw(st.integers(1, 4), label="shards")
    m = data.draw(st.integers(0, 200), label="rows")
    span = data.draw(st.sampled_from([10**6, 10**9, 10**11]), label="span")  # within a bin ... many doublings
    ts = np.array(data.draw(st.lists(st.integers(0, span), min_size=m, max_size=m)), np.int64) + 10**15
    if data.draw(st.booleans(), label="in time order"):
        ts.sort()
    key = np.array(data.draw(st.lists(st.integers(0, 2), min_size=m, max_size=m)), np.int64)
    shard = np.array(data.draw(st.lists(st.integers(0, n - 1), min_size=m, max_size=m)), np.int64)
    cuts = sorted(data.draw(st.lists(st.integers(0, m), max_size=6), label="chunk ends"))
    names = ["fw-1", "fw-2", "fw-3"]
    whole = ReportState(names, ["nat-a"])
    parts = [ReportState(names, ["nat-a"]) for _ in range(n)]
    for st_ in (whole, *parts):  # the capture's clock: one origin everywhere
        st_.origin = int(ts[0]) if m else None
    sess = np.zeros(m, _SESSION)
    sess["client_ip"] = key + 1
    sess["server_ip"] = (ts % 5).astype(np.uint32) + 100
    sess["proto"] = np.where(key == 2, 1, 6)
    sess["server_port"] = ts % 3 + 80
    sess["bytes_c2s"], sess["bytes_s2c"] = ts % 1000, key * 7
    nat = {k: [] for k in range(n)}
    for c, (a, b) in enumerate(itertools.pairwise([0, *cuts, m])):
        for st_, sel in ((whole, np.ones(b - a, bool)), *((parts[k], shard[a:b] == k) for k in range(n))):
            t, kk = ts[a:b][sel], key[a:b][sel]
            st_.add("pkts", t, kk)
            st_.add("bytes", t, kk, (t % 1500).astype(np.float64))
            st_.add("drops", t, kk * 17 + 3)
            st_.add_sessions(sess[a:b][sel])
        for k in range(n):
            if np.any(shard[a:b] == k):
                nat[k].append((int(ts[a:b][shard[a:b] == k].max()), c + k))
                parts[k].add_nat(*nat[k][-1][:1], [nat[k][-1][1]])
    merged = ReportState.merge(ReportState.from_dict(p.as_dict()) for p in parts)
    assert merged.origin == whole.origin
    for s in ReportState.SERIES:
        a, b = getattr(merged, s), getattr(whole, s)
        assert a.width == b.width, s
        assert np.array_equal(a.counts, b.counts), s
    assert merged.talkers == whole.talkers and merged.services == whole.services
    times = sorted({t for v in nat.values() for t, _ in v})
    want = []
    for t in times:
        total = 0
        for v in nat.values():
            last = [x for tt, x in sorted(v, key=lambda p: p[0]) if tt <= t]
            total += last[-1] if last else 0
        want.append([total])
    assert merged.nat_ts == times and merged.nat_ports == want


def test_merged_events_add_each_shards_effect():
    """Each event's effect is the sum of the shards'; an event a shard never applied (no packet after it) adds
    nothing from it; a firewall's flows placed add per firewall."""
    a, b = ReportState(["fw-1", "fw-2"]), ReportState(["fw-1", "fw-2"])
    ev = lambda at, lost, placed: {"at": at, "firewall": "fw-2", "state": "unhealthy" if at < 9 else "healthy",
                                   "flows_lost": lost, "flows_moved": 1, "packets_lost": 2 * lost,
                                   "flows_placed": {"fw-1": placed, "fw-2": 0}}
    a.effects = [ev(5.0, 3, 10), ev(9.0, 0, 4)]
    b.effects = [ev(5.0, 1, 7)]
    m = ReportState.merge([a, b])
    assert [(e["at"], e["flows_lost"], e["flows_moved"], e["packets_lost"], e["flows_placed"]) for e in m.effects] == [
        (5.0, 4, 2, 8, {"fw-1": 17, "fw-2": 0}), (9.0, 0, 1, 0, {"fw-1": 4, "fw-2": 0})]
    assert a.effects[0]["flows_lost"] == 3  # the parts are left as they were
    c = ReportState(["fw-1", "fw-2"])
    c.origin, a.origin = 1, 2
    with pytest.raises(ValueError, match="different times"):
        ReportState.merge([a, c])


def _without_metadata(svg: str) -> str:
    return re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.DOTALL)


def test_charts_drawn_by_several_processes_are_the_serial_ones(run, monkeypatch):
    """draw_charts(d, N): every chart, the same SVG as one process draws; a forked process that fails leaves its
    charts to the caller, which draws them."""
    import os

    import matplotlib

    from gwlb_fast.outputs import htmlreport

    monkeypatch.setitem(matplotlib.rcParams, "svg.hashsalt", "report-test")  # fixed ids, in the forks too
    _, _, report = run
    _, d = _report_data(report)
    serial = htmlreport.draw_charts(d, 1)
    assert list(serial) == list(htmlreport.CHARTS) and all(v.startswith("<svg") for v in serial.values())
    for n in (2, 3, 6, 10):
        got = htmlreport.draw_charts(d, n)
        assert list(got) == list(htmlreport.CHARTS)
        assert {k: _without_metadata(v) for k, v in got.items()} == {k: _without_metadata(v)
                                                                    for k, v in serial.items()}, n
    me, real = os.getpid(), htmlreport._charts

    def fails_in_a_fork(d, keys=htmlreport.CHARTS):
        if os.getpid() != me:
            raise RuntimeError("boom")
        return real(d, keys)

    monkeypatch.setattr(htmlreport, "_charts", fails_in_a_fork)
    got = htmlreport.draw_charts(d, 3)
    assert {k: _without_metadata(v) for k, v in got.items()} == {k: _without_metadata(v) for k, v in serial.items()}


@given(st.dictionaries(st.text(alphabet="abcdefgh-", min_size=1, max_size=6), st.integers(0, 50), max_size=80))
def test_rule_chart_keeps_the_most_hit_rules_in_policy_order(rules):
    """The chart's bars: every rule that took a session, or the RULES_CHARTED most hit (ties: the earlier rule),
    in policy order; the count of the rest."""
    names, hits, rest = charted_rules(rules)
    order = list(rules)
    hit = [r for r in order if rules[r]]
    want = sorted(hit, key=lambda r: (-rules[r], order.index(r)))[:RULES_CHARTED]
    assert names == [r for r in order if r in want]
    assert hits == [rules[r] for r in names]
    assert rest == len(hit) - len(names)


def test_report_of_a_thousand_rule_policy_stays_small(tmp_path):
    """A policy of 1,000 rules (most of which take no session): the rules chart draws the rules that took sessions,
    the table lists them and says how many took none; the numbers (JSON) keep every rule."""
    topo = yaml.safe_load(Path(_example()).read_text())
    topo.pop("events", None)
    extra = [{"name": f"gen-{i}", "source": ["192.0.2.0/24"], "destination": ["198.18.0.0/15"], "protocol": "udp",
              "port": [40000 + i], "action": "allow"} for i in range(996)]
    topo["security_policy"]["rules"] = extra + topo["security_policy"]["rules"]
    (tmp_path / "topo.yaml").write_text(yaml.safe_dump(topo))
    write_pcap(tmp_path / "in.pcap", generate(flows=200, packets=4000, seed=3))
    report = tmp_path / "report.html"
    assert main(["run", str(tmp_path / "topo.yaml"), str(tmp_path / "in.pcap"), "-o", str(tmp_path / "out.pcap"),
                 "--report", str(report), "--quiet", "--workers", "1"]) == 0
    text, d = _report_data(report)
    assert len(d["rules"]) >= 1000
    sec = re.search(r'<section id="rules">(.*?)</section>', text, re.DOTALL).group(1)
    rows = re.findall(r"<tr><td>([^<]*)</td><td>([^<]*)</td></tr>", sec)
    took = {r: n for r, n in d["rules"].items() if n}
    assert [(r, f"{n:,}") for r, n in took.items()] == rows
    idle = len(d["rules"]) - len(took)
    assert f"{idle:,} more rules took no session." in sec
    assert len(sec) < 200_000  # the chart of 1,000 bars was over 1 MB of SVG
