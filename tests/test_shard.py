"""The flow-shard kernel (run --workers): against the plain-Python oracle, symmetry, and raw-bytes fuzz."""
import socket
import struct

import dpkt
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gwlb_fast._kernels.shard import shard_packets
from gwlb_fast.batch import PacketBatch
from tests.strategies import ethernet_frame, mutated

from .oracles import parse as parse_ref
from .oracles import shard as ref

PUB = 0xCB007105  # 203.0.113.5
PUB2 = 0xCB007106
HOSTS = [0x0A010105, 0x0A010106, 0x0A020107, 0x5DB8D822, 0x08080808, PUB, PUB2]
# (public ip, port_lo, port_hi, [(proto, port, to_ip)])
GATEWAYS = [(PUB, 1024, 65535, [(6, 443, 0x0A010106), (17, 53, 0x0A010105)]),
            (PUB2, 20000, 20099, [(6, 8080, 0x0A020107)])]

addr = st.one_of(st.sampled_from(HOSTS), st.integers(0, 2**32 - 1))
port = st.one_of(st.sampled_from([443, 53, 8080, 1024, 20000, 20050, 20099, 40000, 65535]), st.integers(0, 65535))


def _ip(a):
    return socket.inet_aton(socket.inet_ntoa(struct.pack("!I", a)))


@st.composite
def l4(draw, quoted=False):
    kind = draw(st.sampled_from(["tcp", "udp", "echo", "error"] if not quoted else ["tcp", "udp", "echo"]))
    if kind == "tcp":
        return 6, dpkt.tcp.TCP(sport=draw(port), dport=draw(port), flags=2)
    if kind == "udp":
        return 17, dpkt.udp.UDP(sport=draw(port), dport=draw(port), data=b"x")
    if kind == "echo":
        return 1, dpkt.icmp.ICMP(type=draw(st.sampled_from([0, 8])), data=dpkt.icmp.ICMP.Echo(id=draw(port)))
    p, inner = draw(l4(quoted=True))
    q = bytes(dpkt.ip.IP(src=_ip(draw(addr)), dst=_ip(draw(addr)), p=p, data=inner))
    q = q[: draw(st.sampled_from([len(q), 28, 24, 20, 12]))]
    return 1, dpkt.icmp.ICMP(type=draw(st.sampled_from([3, 11, 5])), data=dpkt.icmp.ICMP.Unreach(data=q))


@st.composite
def frame(draw):
    p, seg = draw(l4())
    ip = dpkt.ip.IP(src=_ip(draw(addr)), dst=_ip(draw(addr)), p=p, id=draw(st.integers(0, 3)), data=seg)
    frag = draw(st.sampled_from(["no", "no", "first", "later"]))
    if frag == "first":
        ip.mf = 1
    elif frag == "later":
        ip.offset = 8 * draw(st.integers(1, 4))
    return b"\x00" * 12 + b"\x08\x00" + bytes(ip)


def _columns(frames):
    b = PacketBatch.from_packets(frames)
    b.parse()
    return b


def _tables():
    pub = np.array([g[0] for g in GATEWAYS], np.uint32)
    lo = np.array([g[1] for g in GATEWAYS], np.int32)
    hi = np.array([g[2] for g in GATEWAYS], np.int32)
    rows = [(gi, p, port_, to) for gi, g in enumerate(GATEWAYS) for p, port_, to in g[3]]
    return (pub, lo, hi, np.array([r[0] for r in rows], np.int32), np.array([r[1] for r in rows], np.uint8),
            np.array([r[2] for r in rows], np.uint16), np.array([r[3] for r in rows], np.uint32))


def _later_fragments(frames):
    """A later fragment of each first fragment among ``frames`` (same addresses, protocol and IP id)."""
    out = []
    for f in frames:
        ip = dpkt.ip.IP(f[14:])
        if ip.mf and ip.offset == 0:
            ip.mf, ip.offset, ip.sum = 0, 16, 0
            out.append(f[:14] + bytes(ip))
    return out


def run_kernel(b, n, state=None):
    if state is None:
        state = (np.zeros(1 << 12, np.uint64), np.full(1 << 12, -1, np.int16))
    out = np.full(len(b), -7, np.int16)
    shard_packets(b.data, b.off, b.caplen, b.status, b.proto, b.src_ip, b.dst_ip, b.sport, b.dport, b.tcp_flags,
                  b.l3_off, b.l4_off, *_tables(), n, *state, out)
    return out


@settings(max_examples=150, deadline=None)
@given(st.lists(frame(), max_size=30), st.integers(1, 5), st.integers(0, 30))
def test_matches_oracle_across_calls(frames, n, cut):
    frames = frames + _later_fragments(frames)
    b = _columns(frames)
    state = (np.zeros(1 << 12, np.uint64), np.full(1 << 12, -1, np.int16))
    got = np.concatenate([run_kernel(b[:cut], n, state), run_kernel(b[cut:], n, state)])
    oracle = ref.Sharder(GATEWAYS, n)
    want = [oracle.shard(f, parse_ref.parse(f)) for f in frames]
    assert got.tolist() == want
    assert all(0 <= s < n for s in got.tolist())


@given(st.lists(st.tuples(addr, addr, port, port, st.sampled_from([6, 17])), min_size=1, max_size=20),
       st.integers(2, 8))
def test_both_directions_one_shard(flows, n):
    def pkt(s, d, sp, dp, p):
        seg = dpkt.tcp.TCP(sport=sp, dport=dp) if p == 6 else dpkt.udp.UDP(sport=sp, dport=dp)
        return b"\x00" * 12 + b"\x08\x00" + bytes(dpkt.ip.IP(src=_ip(s), dst=_ip(d), p=p, data=seg))
    private = [f for f in flows if f[0] not in (PUB, PUB2) and f[1] not in (PUB, PUB2)]
    if not private:
        return
    fwd = run_kernel(_columns([pkt(*f) for f in private]), n)
    rev = run_kernel(_columns([pkt(f[1], f[0], f[3], f[2], f[4]) for f in private]), n)
    assert fwd.tolist() == rev.tolist()


def test_public_side_follows_its_flow():
    """A DNAT'ed inbound packet meets its server's replies; an SNAT reply meets the shard owning its port."""
    def pkt(s, d, sp, dp, p=6, **kw):
        seg = dpkt.tcp.TCP(sport=sp, dport=dp) if p == 6 else dpkt.udp.UDP(sport=sp, dport=dp, data=b"y" * 64)
        return b"\x00" * 12 + b"\x08\x00" + bytes(dpkt.ip.IP(src=_ip(s), dst=_ip(d), p=p, data=seg, **kw))
    inet = 0x5DB8D822
    n = 4
    got = run_kernel(_columns([pkt(inet, PUB, 5555, 443), pkt(0x0A010106, inet, 443, 5555)]), n)
    assert got[0] == got[1]
    span = 65535 - 1024 + 1
    for k in range(n):
        lo = 1024 + -(-k * span // n)
        hi = 1024 + -(-(k + 1) * span // n) - 1
        assert run_kernel(_columns([pkt(inet, PUB, 80, lo), pkt(inet, PUB, 80, hi)]), n).tolist() == [k, k]
    # fragments of a reply to the public IP follow their first fragment
    frags = [pkt(inet, PUB, 53, 40000, p=17, id=9, mf=1), pkt(inet, PUB, 53, 40000, p=17, id=9, offset=8)]
    got = run_kernel(_columns(frags), n)
    assert got[0] == got[1] == (40000 - 1024) * n // span


@given(st.lists(mutated(ethernet_frame()), max_size=20), st.integers(1, 6))
def test_raw_bytes_fuzz(frames, n):
    b = _columns(frames)
    out = run_kernel(b, n)
    assert ((out >= 0) & (out < n)).all()


@given(st.binary(max_size=300), st.integers(0, 40), st.integers(1, 4))
def test_columns_out_of_range_never_read_outside(blob, k, n):
    """Columns that lie (offsets past the arena, l3/l4 past the packet) are refused or clamped, never read."""
    data = np.frombuffer(blob, np.uint8).copy() if blob else np.zeros(0, np.uint8)
    rng = np.random.default_rng(k)
    off = rng.integers(-5, 400, k).astype(np.int64)
    caplen = rng.integers(0, 400, k).astype(np.uint32)
    cols = [np.zeros(k, np.uint8), rng.choice([1, 6, 17], k).astype(np.uint8),
            rng.choice(HOSTS, k).astype(np.uint32), rng.choice(HOSTS, k).astype(np.uint32),
            rng.integers(0, 65536, k).astype(np.uint16), rng.integers(0, 65536, k).astype(np.uint16),
            rng.choice([3, 11, 0], k).astype(np.uint8), rng.integers(-3, 400, k).astype(np.int32),
            rng.integers(-3, 400, k).astype(np.int32)]
    cols[0][rng.random(k) < 0.3] = 7  # FRAGMENT
    out = np.zeros(k, np.int16)
    shard_packets(data, off, caplen, *cols, *_tables(), n, np.zeros(64, np.uint64), np.full(64, -1, np.int16), out)
    assert ((out >= 0) & (out < n)).all()


def test_bad_arguments_refused():
    b = _columns([b"\x00" * 60])
    with pytest.raises(ValueError):
        run_kernel(b, 0)
    out = np.zeros(1, np.int16)
    with pytest.raises(ValueError):
        shard_packets(b.data, b.off, b.caplen, b.status, b.proto, b.src_ip, b.dst_ip, b.sport, b.dport,
                      b.tcp_flags, b.l3_off, b.l4_off, *_tables(), 2, np.zeros(3, np.uint64),
                      np.zeros(3, np.int16), out)
