"""``run --drops FILE.pcapng`` and ``run --report FILE.html`` (DESIGN.md section 11).

The drops file is judged by tshark (``frame.comment``) and by a plain reading of the pcapng blocks; the report by
its own numbers against the run's summary, and by headless Chromium (no console error, a screenshot that is not
blank, one chart per section).
"""
import json
import re
import shutil
import struct
import subprocess

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gwlb_fast.batch import PacketBatch
from gwlb_fast.cli import main
from gwlb_fast.outputs.drops import CommentedPcapngWriter
from gwlb_fast.outputs.htmlreport import TimeBins
from gwlb_fast.pcapio import read_pcap, write_pcap
from gwlb_fast.synth import generate

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


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not installed")
def test_report_renders_in_headless_chromium(run, tmp_path):
    import matplotlib.image

    _, _, report = run
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
