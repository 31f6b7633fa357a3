"""NAT gateway: SNAT outbound and reverse translation inbound, against a dpkt loop and a plain-numpy rewrite.

4,096 private sockets (TCP and UDP) x 16 packets = 65,536 packets; the mappings exist before timing (steady state:
table lookup + in-place rewrite with incremental checksums). Each round translates a fresh copy of the batch (the
copy is made in setup, outside the timing).
"""
import socket
import sys
from pathlib import Path

import dpkt
import numpy as np
import pytest

from gwlb_fast.batch import PacketBatch
from gwlb_fast.config import example_topology_text, load_topology
from gwlb_fast.stages.natgw import NatGateway
from gwlb_fast.status import PktStatus

sys.path.insert(0, str(Path(__file__).parent))  # bench/baselines.py
from baselines import dpkt_snat, dpkt_unsnat, numpy_snat_rewrite

N = 65_536
SOCKETS = 4096
PUB = "203.0.113.10"
GROUP_OUT = f"nat outbound (SNAT), {N} packets"
GROUP_IN = f"nat inbound (reply reverse translation), {N} packets"


def _frame(proto, src, dst, sport, dport, payload):
    if proto == 6:
        l4 = dpkt.tcp.TCP(sport=sport, dport=dport, seq=1, ack=1, flags=dpkt.tcp.TH_ACK, data=payload)
    else:
        l4 = dpkt.udp.UDP(sport=sport, dport=dport, ulen=8 + len(payload), data=payload)
    ip = dpkt.ip.IP(src=socket.inet_aton(src), dst=socket.inet_aton(dst), p=proto, ttl=64, data=l4)
    return bytes(dpkt.ethernet.Ethernet(src=b"\x02" * 6, dst=b"\x04" * 6, type=0x0800, data=ip))


def _copy(b: PacketBatch) -> PacketBatch:
    out = b[:]
    out.data = b.data.copy()
    for name, col in out.columns().items():
        setattr(out, name, col.copy())
    return out


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(3)
    socks = [(6 if k % 4 else 17, f"10.1.1.{k % 250 + 1}", 20000 + k, f"93.184.{k % 200}.{k % 250 + 1}")
             for k in range(SOCKETS)]
    payload = bytes(range(200)) * 2
    out_frames = [_frame(p, s, d, sp, 443, payload[: 64 + (sp % 300)]) for p, s, sp, d in socks]
    order = rng.integers(0, SOCKETS, N)
    frames = [out_frames[i] for i in order.tolist()]
    cfg = load_topology(example_topology_text()).nat_gateways["nat-a"]
    nat = NatGateway(cfg)
    base = PacketBatch.from_packets(frames).parse()
    warm = nat.outbound(_copy(base))       # creates the 4,096 mappings
    assert (warm.status == PktStatus.OK).all()
    replies = [_frame(p, d, PUB, 443, int(warm.sport[np.flatnonzero(order == k)[0]]), b"ok" * 40)
               for k, (p, s, sp, d) in enumerate(socks) if (order == k).any()]
    rep_frames = [replies[i % len(replies)] for i in range(N)]
    rep = PacketBatch.from_packets(rep_frames).parse()
    return nat, base, frames, rep, warm, rep_frames


def test_nat_outbound_kernel(benchmark, rate, setup):
    nat, base, _, _, warm, _ = setup
    benchmark.group = GROUP_OUT
    last = {}

    def run(b):
        last["b"] = nat.outbound(b)

    benchmark.pedantic(run, setup=lambda: ((_copy(base),), {}), rounds=20, iterations=1)
    assert (last["b"].status == PktStatus.OK).all() and np.array_equal(last["b"].data, warm.data)
    rate(N, base.nbytes)


def test_nat_outbound_dpkt(benchmark, rate, setup):
    _, _, frames, _, warm, _ = setup
    benchmark.group = GROUP_OUT
    sub = frames[:8192]
    maps: dict = {}
    dpkt_snat(sub, maps, socket.inet_aton(PUB))
    out = benchmark.pedantic(dpkt_snat, (sub, maps, socket.inet_aton(PUB)), rounds=3, iterations=1)
    assert out[0][26:30] == socket.inet_aton(PUB) and len(out[0]) == len(warm.packet(0))
    rate(len(sub), sum(map(len, sub)))


def test_nat_outbound_numpy_rewrite(benchmark, rate, setup):
    _, base, _, _, warm, _ = setup
    benchmark.group = GROUP_OUT
    new_ip = np.full(N, int.from_bytes(socket.inet_aton(PUB), "big"), np.uint32)
    new_port = warm.sport.copy()
    last = {}

    def run(b):
        numpy_snat_rewrite(b.data, b.off, b.l3_off, b.l4_off, b.proto, new_ip, new_port)
        last["b"] = b

    benchmark.pedantic(run, setup=lambda: ((_copy(base),), {}), rounds=10, iterations=1)
    assert np.array_equal(last["b"].data, warm.data)
    rate(N, base.nbytes)


def test_nat_inbound_kernel(benchmark, rate, setup):
    nat, _, _, rep, _, _ = setup
    benchmark.group = GROUP_IN
    last = {}

    def run(b):
        last["b"] = nat.inbound(b)

    benchmark.pedantic(run, setup=lambda: ((_copy(rep),), {}), rounds=20, iterations=1)
    b = last["b"]
    assert (b.status == PktStatus.OK).all() and ((b.dst_ip >> 8) == (10 << 16 | 1 << 8 | 1)).all()
    rate(N, rep.nbytes)


def test_nat_rewrite_kernel_only(benchmark, rate, setup):
    """The rewrite kernel alone (addresses and ports given): the like-for-like counterpart of the numpy rewrite."""
    from gwlb_fast._kernels.nat import nat_rewrite

    _, base, _, _, warm, _ = setup
    benchmark.group = GROUP_OUT
    new_ip = np.full(N, int.from_bytes(socket.inet_aton(PUB), "big"), np.uint32)
    new_port = warm.sport.astype(np.int32)
    action = np.ones(N, np.uint8)
    rec = [np.empty(N, t) for t in (np.uint8, np.uint32, np.uint16, np.uint32, np.uint16)]
    last = {}

    def run(b):
        nat_rewrite(b.data, b.off, b.caplen, b.l3_off, b.l4_off, b.proto, 0, new_ip, new_port, b.status, b.src_ip,
                    b.sport, b.dport, action, *rec)
        last["b"] = b

    benchmark.pedantic(run, setup=lambda: ((_copy(base),), {}), rounds=20, iterations=1)
    assert np.array_equal(last["b"].data, warm.data)
    rate(N, base.nbytes)


def test_nat_inbound_dpkt(benchmark, rate, setup):
    nat, _, _, _, _, rep_frames = setup
    benchmark.group = GROUP_IN
    m = nat.mappings()
    owner = {(int(p), int(q)): (socket.inet_aton(socket.inet_ntoa(int(ip).to_bytes(4, "big"))), int(sp))
             for p, q, ip, sp in zip(m["proto"], m["pub_port"], m["priv_ip"], m["priv_port"])}
    sub = rep_frames[:8192]
    out = benchmark.pedantic(dpkt_unsnat, (sub, owner), rounds=3, iterations=1)
    assert out[0][30:33] == bytes([10, 1, 1])
    rate(len(sub), sum(map(len, sub)))
