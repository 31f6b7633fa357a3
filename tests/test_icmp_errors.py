"""ICMP errors travel with the flow they quote: same firewall, related to its session, translated by the NAT
gateway in the outer and the quoted headers with every checksum right (RFC 5508 section 4), judged by tshark."""
import shutil
import socket
import subprocess

import dpkt
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import gwlb_fast as gf
from gwlb_fast._kernels.nat import NAT_DNAT_REPLY, NAT_SNAT_REPLY, nat_rewrite
from gwlb_fast.config import topology_from_dict
from gwlb_fast.pcapio import write_pcap
from gwlb_fast.pipeline import Pipeline
from gwlb_fast.stages.natgw import NatRecord
from gwlb_fast.status import PktStatus
from tests.shared_data import data_path
from tests.topologies import EXAMPLE, capture_topology

has_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
ETH = b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00"
PUBLIC = "203.0.113.10"


def _a(s):
    return socket.inet_aton(s)


def udp(src, dst, sport, dport, payload=b"q" * 24):
    u = dpkt.udp.UDP(sport=sport, dport=dport, data=payload)
    u.ulen = 8 + len(payload)
    return dpkt.ip.IP(src=_a(src), dst=_a(dst), p=17, ttl=64, id=99, data=u)


def tcp(src, dst, sport, dport, flags=dpkt.tcp.TH_SYN):
    return dpkt.ip.IP(src=_a(src), dst=_a(dst), p=6, ttl=64, id=98,
                      data=dpkt.tcp.TCP(sport=sport, dport=dport, flags=flags, seq=1000))


def icmp_error(src, dst, quoted: bytes, icmp_type=3, code=3) -> bytes:
    ip = dpkt.ip.IP(src=_a(src), dst=_a(dst), p=1, ttl=64, id=7,
                    data=dpkt.icmp.ICMP(type=icmp_type, code=code, data=dpkt.icmp.ICMP.Unreach(data=quoted)))
    return ETH + bytes(ip)


def frame(ip) -> bytes:
    return ETH + bytes(ip)


def _example():
    return topology_from_dict({**EXAMPLE, "events": []}, "example.yaml")


def _tshark(path, *fields):
    args = ["tshark", "-r", str(path), "-T", "fields", "-o", "ip.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE",
            "-o", "tcp.check_checksum:TRUE", "-E", "occurrence=a", "-E", "aggregator=,"]
    for f in fields:
        args += ["-e", f]
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=120).stdout
    return [line.split("\t") for line in out.splitlines()]


def _run(pipe, frames, tmp_path, name):
    """Each frame through the pipeline (one chunk each, in order); the delivered ones written to ``name``."""
    outs, res = [], []
    for k, f in enumerate(frames):
        r = pipe.process(gf.PacketBatch.from_packets([f], ts_ns=np.array([k * 1_000_000], np.int64)))
        res.append(r)
        outs.append(r.output)
    out = gf.PacketBatch.concat(outs)
    write_pcap(tmp_path / name, out)
    return res, out


@has_tshark
@pytest.mark.parametrize("router", [None, "192.0.2.77"])
def test_error_to_an_snat_flow_is_translated_back(tmp_path, router):
    """Inbound: port unreachable (or time exceeded from a router on the way) for a UDP flow SNAT'ed to the public
    address. The GWLB sends it to the flow's firewall, which passes it as related; the NAT gateway rewrites the
    outer destination and the quoted source (address and port) and every checksum stays right."""
    pipe = Pipeline(_example())
    out_ip = udp("10.1.1.5", "198.51.100.7", 40000, 53)
    res, out = _run(pipe, [frame(out_ip)], tmp_path, "first.pcap")
    sent = dpkt.ethernet.Ethernet(out.packet(0)).data
    assert sent.src == _a(PUBLIC)
    quoted = bytes(sent)  # the datagram as it crossed the Internet, quoted whole
    err = icmp_error(router or "198.51.100.7", PUBLIC, quoted, *((11, 0) if router else (3, 3)))
    res2, _ = _run(pipe, [err], tmp_path, "err.pcap")
    assert res2[0].status[0] == PktStatus.OK and res2[0].delivered[0] == 2  # to the host
    assert res2[0].fw[0] == res[0].fw[0]  # the flow's firewall
    rows = _tshark(tmp_path / "err.pcap", "ip.src", "ip.dst", "ip.checksum.status", "icmp.checksum.status",
                   "udp.srcport", "udp.checksum.status")
    (src, dst, ipsum, icsum, sport, udpsum), = rows
    # outer then quoted addresses: the outer destination and the quoted source are the private host's
    assert src == f"{router or '198.51.100.7'},10.1.1.5" and dst == "10.1.1.5,198.51.100.7"
    assert ipsum == "1,1" and icsum == "1" and sport == "40000" and udpsum == "1"


@has_tshark
def test_error_from_a_dnat_server_is_translated_out(tmp_path):
    """Outbound: the DNAT'ed server answers a SYN with port unreachable. The error is related to the session of
    the inbound flow; the NAT gateway rewrites its outer source and the quoted destination to the public
    address and port, and tshark finds the outer, ICMP, quoted IPv4 and quoted TCP checksums right."""
    pipe = Pipeline(_example())
    syn = tcp("198.51.100.7", PUBLIC, 5555, 443)
    res, out = _run(pipe, [frame(syn)], tmp_path, "syn.pcap")
    arrived = dpkt.ethernet.Ethernet(out.packet(0)).data
    assert arrived.dst == _a("10.1.1.20") and arrived.data.dport == 8443
    err = icmp_error("10.1.1.20", "198.51.100.7", bytes(arrived))
    res2, _ = _run(pipe, [err], tmp_path, "err.pcap")
    assert res2[0].status[0] == PktStatus.OK and res2[0].delivered[0] == 1  # to the Internet
    assert res2[0].fw[0] == res[0].fw[0]
    rows = _tshark(tmp_path / "err.pcap", "ip.src", "ip.dst", "ip.checksum.status", "icmp.checksum.status",
                   "tcp.dstport", "tcp.checksum.status")
    (src, dst, ipsum, icsum, dport, tcpsum), = rows
    assert src == f"{PUBLIC},198.51.100.7" and dst == f"198.51.100.7,{PUBLIC}"
    assert ipsum == "1,1" and icsum == "1" and dport == "443" and tcpsum == "1"


def test_error_without_a_session_is_dropped_at_the_firewall():
    """An error quoting a flow no firewall has a session for is dropped there (ICMP_NO_SESSION), and counted."""
    pipe = Pipeline(_example())
    quoted = bytes(udp("198.51.100.7", "10.1.1.5", 53, 40001))  # the app host never had this flow
    err = icmp_error("10.1.1.5", "198.51.100.7", quoted[:28], 3, 3)
    r = pipe.process(gf.PacketBatch.from_packets([err]))
    assert r.status[0] == PktStatus.ICMP_NO_SESSION
    assert pipe.summary().drops["firewall"] == {"ICMP_NO_SESSION": 1}


def _ones_complement_ok(b: bytes) -> bool:
    return dpkt.in_cksum(b) == 0


@given(st.sampled_from(["udp", "tcp", "echo"]), st.integers(8, 40), st.integers(1, 65535), st.integers(1, 65535),
       st.booleans())
@settings(max_examples=60)
def test_nat_rewrite_of_errors_keeps_checksums(kind, quoted_len, new_port, port, outbound):
    """nat_rewrite on ICMP errors, against a from-scratch rebuild: the translated error equals the error
    built around the translated quoted packet (every checksum recomputed by dpkt)."""
    assume(not (kind == "tcp" and quoted_len == 17))  # half a TCP checksum quoted: it cannot be updated, it stays
    a, b = ("10.1.1.20", "198.51.100.7") if outbound else (PUBLIC, "198.51.100.7")
    new_ip = PUBLIC if outbound else "10.1.1.5"

    def quoted_packet(addr, p):
        if kind == "udp":
            return udp(b, addr, 777, p) if outbound else udp(addr, b, p, 777)
        if kind == "tcp":
            return tcp(b, addr, 777, p) if outbound else tcp(addr, b, p, 777)
        e = dpkt.icmp.ICMP(type=8, data=dpkt.icmp.ICMP.Echo(id=p, seq=3, data=bytes(16)))
        return dpkt.ip.IP(src=_a(b), dst=_a(addr), p=1, ttl=64, id=98, data=e) if outbound else \
            dpkt.ip.IP(src=_a(addr), dst=_a(b), p=1, ttl=64, id=98, data=e)

    before = bytes(quoted_packet(a, port))[:20 + quoted_len]
    after = bytes(quoted_packet(new_ip, new_port))[:20 + quoted_len]
    outer = ("10.1.1.20", b) if outbound else (b, PUBLIC)
    new_outer = (PUBLIC, b) if outbound else (b, "10.1.1.5")
    pkt = icmp_error(*outer, before)
    want = icmp_error(*new_outer, after)
    batch = gf.PacketBatch.from_packets([pkt]).parse()
    n = 1
    side = 0 if outbound else 1
    ip_col = batch.src_ip if outbound else batch.dst_ip
    port_col, other = (batch.sport, batch.dport) if outbound else (batch.dport, batch.sport)
    done = nat_rewrite(batch.data, batch.off, batch.caplen, batch.l3_off, batch.l4_off, batch.proto, side,
                       np.array([int.from_bytes(_a(new_ip), "big")], np.uint32), np.array([new_port], np.int32),
                       batch.status, ip_col, port_col, other,
                       np.full(n, NAT_DNAT_REPLY if outbound else NAT_SNAT_REPLY, np.uint8), *NatRecord.empty(n).as_args())
    assert done == 1 and batch.status[0] == PktStatus.OK
    got = batch.packet(0)
    assert got == want
    assert _ones_complement_ok(got[14:34]) and _ones_complement_ok(got[34:])
    again = gf.PacketBatch.from_packets([got]).parse()
    assert (int(ip_col[0]), int(port_col[0])) == (int.from_bytes(_a(new_ip), "big"), new_port)
    assert (again.src_ip[0], again.dst_ip[0], again.sport[0], again.dport[0]) == (
        batch.src_ip[0], batch.dst_ip[0], batch.sport[0], batch.dport[0])


REAL = data_path("captures", "real")


@pytest.mark.parametrize("name,packets", [("icmp_traceroute.pcapng", 54), ("icmp_echo.pcapng", 8)])
def test_real_icmp_captures_go_through(tmp_path, name, packets):
    """The traceroute's time-exceeded errors (from the routers on the way, addressed to the host as it received
    them) meet the echo flow they quote: every packet goes through the flow's firewall, none is dropped."""
    src = REAL / name
    if not src.exists():
        pytest.skip("real captures not present")
    # the host 192.168.100.138 in the VPC; its gateway 192.168.100.1 (the first router) outside it
    topo = capture_topology("192.168.100.128/25", "192.168.100.128/26", "192.168.100.192/27", "192.168.100.224/27")
    pipe = Pipeline(topo)
    summary = pipe.run(str(src), str(tmp_path / "out.pcap"))
    assert (summary.packets_in, summary.packets_out, summary.dropped) == (packets, packets, 0)
    # one echo flow (one identifier), every packet through its firewall: the errors went with it
    assert sum(c["flows"] for c in summary.firewalls.values()) == 1
    assert sum(c["packets"] for c in summary.firewalls.values()) == packets
