"""pcap read + 5-tuple extraction (``read_pcap`` with parse) against the dpkt loop a user would write and against
``cat``-ing the file from the page cache (the I/O ceiling); pcap writing against dpkt's writer loop.

The capture is the synthetic business-VPC mix (``gwlb_fast.synth``: TCP sessions, DNS, ICMP, IMIX-like sizes).
"""
import os
import struct

import numpy as np
import pytest

from bench.baselines import cat_file, dpkt_read_5tuple, dpkt_write_pcap
from gwlb_fast import synth
from gwlb_fast.pcapio import read_pcap, write_pcap

N = 200_000


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    batch = synth.generate(N // 100, N, seed=1)
    path = tmp_path_factory.mktemp("pcap") / "synth.pcap"
    write_pcap(path, batch)
    size = path.stat().st_size
    assert cat_file(path) == size  # also warms the page cache
    # both sides extract the same 5-tuples
    ours = [b for b in read_pcap(path, chunk=65536)]
    ref = dpkt_read_5tuple(path)
    b0 = ours[0]
    got = [(struct.pack("!I", int(b0.src_ip[i])), struct.pack("!I", int(b0.dst_ip[i])),
            int(b0.sport[i]) if b0.proto[i] in (6, 17) else 0, int(b0.dport[i]) if b0.proto[i] in (6, 17) else 0,
            int(b0.proto[i])) for i in range(2000)]
    assert got == ref[:2000]
    return path, size, batch


def _consume(path, **kw) -> int:
    n = 0
    for b in read_pcap(path, **kw):
        n += len(b)
    return n


@pytest.mark.benchmark(group="pcap-read-200k")
def test_read_pcap_parse(benchmark, rate, capture):
    path, size, _ = capture
    assert benchmark(_consume, path) == N
    rate(N, size)


@pytest.mark.benchmark(group="pcap-read-200k")
def test_read_pcap_no_parse(benchmark, rate, capture):
    path, size, _ = capture
    assert benchmark(_consume, path, parse=False) == N
    rate(N, size)


@pytest.mark.benchmark(group="pcap-read-200k")
def test_read_pcap_parse_without_mmap(benchmark, rate, capture):
    path, size, _ = capture
    assert benchmark(_consume, path, use_mmap=False) == N
    rate(N, size)


@pytest.mark.benchmark(group="pcap-read-200k")
def test_cat_page_cache(benchmark, rate, capture):
    path, size, _ = capture
    assert benchmark(cat_file, path) == size
    rate(N, size)


@pytest.mark.benchmark(group="pcap-read-200k")
def test_dpkt_read_5tuple(benchmark, rate, capture):
    path, size, _ = capture
    out = benchmark.pedantic(dpkt_read_5tuple, args=(path,), rounds=3, iterations=1)
    assert len(out) == N
    rate(N, size)


@pytest.fixture(scope="module")
def to_write(capture):
    _, _, batch = capture
    return batch, batch.packets(), (batch.ts_ns / 1e9).tolist()


@pytest.mark.benchmark(group="pcap-write-200k")
def test_write_pcap(benchmark, rate, capture, to_write, tmp_path):
    batch = to_write[0]
    benchmark(write_pcap, tmp_path / "out.pcap", batch)
    rate(N, batch.nbytes)


@pytest.mark.benchmark(group="pcap-write-200k")
def test_dpkt_write_pcap(benchmark, rate, to_write, tmp_path):
    batch, packets, ts = to_write
    benchmark.pedantic(dpkt_write_pcap, args=(tmp_path / "dpkt.pcap", packets, ts), rounds=3, iterations=1)
    assert (tmp_path / "dpkt.pcap").stat().st_size == 24 + 16 * N + int(np.sum(batch.caplen, dtype=np.int64))
    rate(N, batch.nbytes)


@pytest.mark.benchmark(group="pcap-write-200k")
def test_write_pcap_devnull(benchmark, rate, to_write):
    """The gather and one write, without the filesystem's cost of growing a 74 MB file."""
    batch = to_write[0]
    with open(os.devnull, "wb", buffering=0) as null:
        benchmark(write_pcap, null, batch)
    rate(N, batch.nbytes)


@pytest.mark.benchmark(group="pcap-write-200k")
def test_write_pcapng(benchmark, rate, to_write, tmp_path):
    """pcapng (one interface, if_tsresol 9, an Enhanced Packet Block per packet), gathered the same way."""
    batch = to_write[0]
    benchmark(write_pcap, tmp_path / "out.pcapng", batch)
    rate(N, batch.nbytes)


def _dpkt_write_pcapng(path, packets, ts) -> None:
    import dpkt

    with open(path, "wb") as f:
        w = dpkt.pcapng.Writer(f)
        for buf, t in zip(packets, ts):
            w.writepkt(buf, ts=t)


@pytest.mark.benchmark(group="pcap-write-200k")
def test_dpkt_write_pcapng(benchmark, rate, to_write, tmp_path):
    batch, packets, ts = to_write
    benchmark.pedantic(_dpkt_write_pcapng, args=(tmp_path / "dpkt.pcapng", packets, ts), rounds=3, iterations=1)
    assert sum(len(b) for b in read_pcap(tmp_path / "dpkt.pcapng", parse=False)) == N
    rate(N, batch.nbytes)


@pytest.fixture(scope="module")
def gz_capture(capture, tmp_path_factory):
    import gzip

    path, size, _ = capture
    gz = tmp_path_factory.mktemp("gz") / "synth.pcap.gz"
    gz.write_bytes(gzip.compress(path.read_bytes(), compresslevel=6))
    return gz, size


def _zcat(path) -> int:
    """The decompression ceiling: Python's gzip module reading the whole stream in 1 MiB pieces."""
    import gzip

    n = 0
    with gzip.open(path, "rb") as f:
        while piece := f.read(1 << 20):
            n += len(piece)
    return n


@pytest.mark.benchmark(group="pcap-read-gzip-200k")
def test_read_pcap_gzip_parse(benchmark, rate, gz_capture):
    gz, size = gz_capture
    assert benchmark(_consume, gz) == N
    rate(N, size)


@pytest.mark.benchmark(group="pcap-read-gzip-200k")
def test_gzip_decompress_only(benchmark, rate, gz_capture):
    gz, size = gz_capture
    assert benchmark(_zcat, gz) == size
    rate(N, size)
