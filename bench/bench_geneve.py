"""Geneve decode and encode: gwlb_fast kernels vs a dpkt/struct loop and scapy, in the same run.

Run: PYTHONPATH=src python -m pytest bench/bench_geneve.py -o python_files='bench_*.py' \
         --benchmark-columns=median,ops
Rates (Mpps, GB/s) are in each benchmark's extra_info; baselines run on fewer packets (they are per-packet
Python), which does not change a per-packet rate. On a shared machine add --benchmark-timer=time.process_time:
wall-clock medians of runs longer than a scheduler slice then include the time other processes held the core.
"""
import numpy as np
import pytest

from bench import baselines
from gwlb_fast import geneve as gv
from gwlb_fast.batch import LINKTYPE_IPV4, PacketBatch

N = 65_536
N_DPKT = 4_096
N_SCAPY = 256
N_1500 = 16_384


def _inner_packets(n: int, sizes, probs, seed: int) -> list[bytes]:
    """n raw IPv4 TCP/UDP packets of the given total sizes; up to 2048 distinct flows, tiled."""
    import dpkt

    rng = np.random.default_rng(seed)
    distinct = []
    for _ in range(min(n, 2048)):
        size = int(rng.choice(sizes, p=probs))
        udp = rng.random() < 0.25
        hdr = 28 if udp else 40
        l4 = (dpkt.udp.UDP if udp else dpkt.tcp.TCP)(sport=int(rng.integers(1024, 65536)),
                                                     dport=int(rng.choice([443, 80, 53, 8443])),
                                                     data=rng.bytes(size - hdr))
        ip = dpkt.ip.IP(src=int(rng.integers(2**32)).to_bytes(4, "big"), dst=int(rng.integers(2**32)).to_bytes(4, "big"),
                        p=17 if udp else 6, ttl=64, data=l4)
        distinct.append(bytes(ip))
    return [distinct[i % len(distinct)] for i in range(n)]


ENCAP_ARGS = {"endpoint_id": 0x0A1B2C3D4E5F6071, "attachment_id": 0x1122334455667788, "cookie": 0xC0FFEE}


@pytest.fixture(scope="module")
def mix():
    """The synthetic business-VPC mix (gwlb_fast.synth): Ethernet frames whose IPv4 packets get encapsulated."""
    from gwlb_fast import synth

    frames = synth.generate(flows=2000, packets=N, seed=1)
    wire = gv.encap(frames, **ENCAP_ARGS)
    inner = gv.decap(wire)
    return inner.packets()[:N_DPKT], frames, wire, wire.packets()[:N_DPKT]


@pytest.fixture(scope="module")
def big():
    pk = _inner_packets(N_1500, [1500], [1.0], seed=2)
    inner = PacketBatch.from_packets(pk, linktype=LINKTYPE_IPV4)
    wire = gv.encap(inner, **ENCAP_ARGS)
    return pk, inner, wire, wire.packets()[:N_DPKT // 2]


def _dpkt_encap(pk):
    return baselines.dpkt_geneve_encap(pk, b"\x0a\x00\x00\x0a", b"\x0a\x00\x01\x0b", **ENCAP_ARGS)


# ------------------------------------------------------------------------------------------------ decode
@pytest.mark.benchmark(group="geneve-decode-mix")
def test_decap_mix_gwlb_fast(benchmark, rate, mix):
    wire = mix[2]
    out = benchmark(gv.decap, wire)
    assert (out.status == 0).all()
    rate(len(wire), wire.nbytes)


@pytest.mark.benchmark(group="geneve-decode-mix")
def test_parse_geneve_mix_gwlb_fast(benchmark, rate, mix):
    wire = mix[2]
    benchmark(gv.parse_geneve, wire)
    rate(len(wire), wire.nbytes)


@pytest.mark.benchmark(group="geneve-decode-mix")
def test_decap_mix_dpkt(benchmark, rate, mix):
    frames = mix[3]
    out = benchmark(baselines.dpkt_geneve_decap, frames)
    assert out[0][2] == ENCAP_ARGS["endpoint_id"]
    rate(len(frames), sum(map(len, frames)))


@pytest.mark.benchmark(group="geneve-decode-mix")
def test_decap_mix_scapy(benchmark, rate, mix):
    frames = mix[3][:N_SCAPY]
    out = benchmark.pedantic(baselines.scapy_geneve_decap, (frames,), rounds=3, iterations=1)
    assert out[0][4] == ENCAP_ARGS["cookie"]
    rate(len(frames), sum(map(len, frames)))


@pytest.mark.benchmark(group="geneve-decode-1500")
def test_decap_1500_gwlb_fast(benchmark, rate, big):
    wire = big[2]
    benchmark(gv.decap, wire)
    rate(len(wire), wire.nbytes)


@pytest.mark.benchmark(group="geneve-decode-1500")
def test_decap_1500_dpkt(benchmark, rate, big):
    frames = big[3]
    benchmark(baselines.dpkt_geneve_decap, frames)
    rate(len(frames), sum(map(len, frames)))


# ------------------------------------------------------------------------------------------------ encode
@pytest.mark.benchmark(group="geneve-encode-mix")
def test_encap_mix_gwlb_fast(benchmark, rate, mix):
    inner = mix[1]
    out = benchmark(gv.encap, inner, **ENCAP_ARGS)
    assert len(out) == len(inner)
    rate(len(inner), inner.nbytes)


@pytest.mark.benchmark(group="geneve-encode-mix")
def test_encap_headers_mix_gwlb_fast(benchmark, rate, mix):
    """Headers only, payload shared (no copy of the inner packets)."""
    inner = mix[1]
    benchmark(gv.encap_headers, inner, **ENCAP_ARGS)
    rate(len(inner), inner.nbytes)


@pytest.mark.benchmark(group="geneve-encode-mix")
def test_encap_mix_dpkt(benchmark, rate, mix):
    pk = mix[0][:N_DPKT]
    benchmark(_dpkt_encap, pk)
    rate(len(pk), sum(map(len, pk)))


@pytest.mark.benchmark(group="geneve-encode-mix")
def test_encap_mix_scapy(benchmark, rate, mix):
    pk = mix[0][:N_SCAPY]
    benchmark.pedantic(baselines.scapy_geneve_encap, (pk, "10.0.0.10", "10.0.1.11"), ENCAP_ARGS, rounds=3,
                       iterations=1)
    rate(len(pk), sum(map(len, pk)))


@pytest.mark.benchmark(group="geneve-encode-1500")
def test_encap_1500_gwlb_fast(benchmark, rate, big):
    inner = big[1]
    benchmark(gv.encap, inner, **ENCAP_ARGS)
    rate(len(inner), inner.nbytes)


@pytest.mark.benchmark(group="geneve-encode-1500")
def test_encap_1500_dpkt(benchmark, rate, big):
    pk = big[0][:N_DPKT // 2]
    benchmark(_dpkt_encap, pk)
    rate(len(pk), sum(map(len, pk)))


# ------------------------------------------------------------------------------------------------ echo
@pytest.mark.benchmark(group="geneve-echo-mix")
def test_echo_mix_gwlb_fast(benchmark, rate, mix):
    wire = mix[2]
    benchmark(gv.echo, wire)
    rate(len(wire), wire.nbytes)


def _dpkt_echo(frames):
    import dpkt

    out = []
    for buf in frames:
        eth = dpkt.ethernet.Ethernet(buf)
        ip = eth.data
        eth.src, eth.dst = eth.dst, eth.src
        ip.src, ip.dst = ip.dst, ip.src
        ip.sum = 0
        out.append(bytes(eth))
    return out


@pytest.mark.benchmark(group="geneve-echo-mix")
def test_echo_mix_dpkt(benchmark, rate, mix):
    frames = mix[3]
    benchmark(_dpkt_echo, frames)
    rate(len(frames), sum(map(len, frames)))
