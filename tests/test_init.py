"""``gwlb-fast init`` (DESIGN.md section 11): a topology that replays a capture as written, on every real capture.

The expectations per capture are counted independently of gwlb-fast: dpkt reads the capture and counts its IPv4
unicast packets; every one of them must come out of ``run`` on the topology ``init`` wrote.
"""
import ipaddress
import socket
import struct
from pathlib import Path

import dpkt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gwlb_fast.check import check_topology
from gwlb_fast.cli import main
from gwlb_fast.config import TOP_KEYS, load_topology
from gwlb_fast.pcapio import write_pcap
from gwlb_fast.pipeline import Pipeline
from gwlb_fast.scaffold import init, is_private

from .shared_data import data_path

REAL = data_path("captures", "real")
CAPTURES = sorted(p.name for p in REAL.glob("*.pcap*")) if REAL.is_dir() else []
PICKUP = "replay" in TOP_KEYS

# what waits on another team's item, and why (strict: each turns into a failure once the item lands)
WAITS = {
}


def _unicast_ipv4(path: Path) -> int:
    """IPv4 packets to a unicast address (not broadcast, not multicast), counted by dpkt."""
    with open(path, "rb") as fh:
        magic = fh.read(4)
        fh.seek(0)
        reader = dpkt.pcapng.Reader(fh) if magic == b"\x0a\x0d\x0d\x0a" else dpkt.pcap.Reader(fh)
        n = 0
        for _ts, buf in reader:
            eth = dpkt.ethernet.Ethernet(buf)
            ip = eth.data
            if not isinstance(ip, dpkt.ip.IP):
                continue
            dst = ipaddress.IPv4Address(ip.dst)
            if dst.is_multicast or dst == ipaddress.IPv4Address("255.255.255.255"):
                continue
            n += 1
    return n


@pytest.mark.parametrize("name", CAPTURES)
def test_init_then_run_delivers_every_unicast_ipv4_packet(name, tmp_path, request):
    if name in WAITS:
        request.applymarker(pytest.mark.xfail(strict=True, reason=WAITS[name]))
    cap = REAL / name
    topo = tmp_path / "topology.yaml"
    assert main(["init", str(cap), "-o", str(topo), "--quiet"]) == 0
    assert check_topology(load_topology(topo)) == []
    assert main(["check", str(topo)]) == 0
    summary = Pipeline.from_yaml(topo).run(cap, tmp_path / "out.pcap")
    want = _unicast_ipv4(cap)
    # every IPv4 unicast packet delivered; what is dropped is no IPv4 unicast (ARP, IPv6, multicast)
    assert summary.packets_out - summary.generated == want, summary.drops
    assert summary.packets_in - summary.dropped == summary.packets_out - summary.generated


def test_laptop_capture_with_the_example_topology_gets_the_hint(tmp_path, capsys):
    import importlib.resources

    cap = REAL / "http_espn.pcapng"
    if not cap.exists():
        pytest.skip("no real captures")
    example = str(importlib.resources.files("gwlb_fast") / "examples" / "topology.yaml")
    assert main(["run", example, str(cap), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "hint:" in err and "172.16.0.0/24" in err and "gwlb-fast init" in err
    # flow-sharded workers give the same line
    assert main(["run", example, str(cap), "--quiet", "--workers", "2"]) == 0
    assert capsys.readouterr().err == err
    # with the topology init writes, no hint
    topo = tmp_path / "t.yaml"
    assert main(["init", str(cap), "-o", str(topo), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["run", str(topo), str(cap), "--quiet"]) == 0
    assert "hint:" not in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------- the plan
def _frame(src, dst, proto, sport, dport, flags=0):
    if proto == 6:
        l4 = dpkt.tcp.TCP(sport=sport, dport=dport, flags=flags, seq=1)
    else:
        l4 = dpkt.udp.UDP(sport=sport, dport=dport, data=b"x")
    ip = dpkt.ip.IP(src=socket.inet_aton(src), dst=socket.inet_aton(dst), p=proto, data=l4)
    ip.len = len(ip)
    return bytes(dpkt.ethernet.Ethernet(src=b"\x02" * 6, dst=b"\x04" * 6, type=0x0800, data=ip))


private_ip = st.one_of(
    st.tuples(st.just(10), st.integers(0, 3), st.integers(0, 3), st.integers(1, 254)),
    st.tuples(st.just(192), st.just(168), st.integers(0, 3), st.integers(1, 254)),
).map(lambda t: ".".join(map(str, t)))
public_ip = st.tuples(st.sampled_from([8, 93, 151]), st.integers(0, 255), st.integers(0, 255),
                      st.integers(1, 254)).map(lambda t: ".".join(map(str, t)))
flow = st.tuples(private_ip, public_ip, st.sampled_from([6, 17]), st.integers(1024, 65535),
                 st.sampled_from([53, 80, 443, 8080]), st.booleans(), st.booleans())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flows=st.lists(flow, min_size=1, max_size=12))
def test_plan_follows_the_capture(tmp_path_factory, flows):
    """Oracle: per flow (private client, public server, proto, ports, opened by the private side?, first packet a
    SYN?), the subnets, VPCs, DNAT rules and pickup decision follow from the list itself."""
    from gwlb_fast.batch import PacketBatch

    d = tmp_path_factory.mktemp("plan")
    frames, ts = [], []
    for i, (priv, pub, proto, eport, sport, outbound, syn) in enumerate(flows):
        flags = 0x02 if syn else 0x10
        if outbound:
            frames.append(_frame(priv, pub, proto, eport, sport, flags))
        else:  # an Internet host opens a service on the private host
            frames.append(_frame(pub, priv, proto, eport, sport, flags))
        ts.append(i * 1000)
    cap = d / "c.pcap"
    write_pcap(cap, PacketBatch.from_packets(frames, ts_ns=ts))
    out = d / "t.yaml"
    plan = init(cap, out)
    topo = load_topology(out)
    privs = {f[0] for f in flows}
    want24 = {str(ipaddress.ip_network(p + "/24", strict=False)) for p in privs}
    want16 = {str(ipaddress.ip_network(p + "/16", strict=False)) for p in privs}
    assert {v.cidr for v in topo.vpcs.values()} == want16
    apps = {s.cidr for v in topo.vpcs.values() for s in v.subnets.values() if s.route_table == "app"}
    assert apps == want24
    # DNAT: a rule for every service an Internet host opened (TCP with a SYN; UDP from a high port to the service)
    want_dnat = set()
    for priv, _pub, proto, eport, sport, outbound, syn in flows:
        if outbound:
            continue
        # the sender of a flow's first packet opened it, unless it sends from a well-known port to a high one
        # (a SYN always opens; the generated ports never look like a reply)
        if not (eport < 1024 <= sport):
            want_dnat.add((proto, priv, sport))
    got_dnat = {(r.proto, str(ipaddress.IPv4Address(r.to_ip)), r.to_port)
                for n in topo.nat_gateways.values() for r in n.dnat}
    assert got_dnat == want_dnat
    # pickup: some TCP flow's first packet is no SYN
    assert plan.pickup == any(proto == 6 and not syn for _, _, proto, *_rest, syn in flows)
    assert ("\nreplay: {pickup: true}" in out.read_text()) == (plan.pickup and PICKUP)
    # the NAT gateways' public IPs are not in the capture
    used = {f[0] for f in flows} | {f[1] for f in flows}
    assert all(n.public_ip not in used for n in topo.nat_gateways.values())
    assert all(is_private(__import__("numpy").array([int(ipaddress.IPv4Address(p))], "uint32"))[0] for p in privs)


def test_never_overwrites(tmp_path, capsys):
    cap = tmp_path / "c.pcap"
    from gwlb_fast.batch import PacketBatch

    write_pcap(cap, PacketBatch.from_packets([_frame("10.0.0.5", "8.8.8.8", 17, 5000, 53)]))
    before = cap.read_bytes()
    out = tmp_path / "t.yaml"
    out.write_text("mine\n")
    assert main(["init", str(cap), "-o", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already exists" in err and out.read_text() == "mine\n"
    assert main(["init", str(cap), "-o", str(cap), "--force", "--quiet"]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err and cap.read_bytes() == before
    assert main(["init", str(cap), "-o", str(out), "--force"]) == 0
    text = capsys.readouterr().out
    assert "wrote" in text and len(text.splitlines()) <= 6
    assert load_topology(out).vpcs and not list(tmp_path.glob(".*.part"))
    assert main(["init", str(tmp_path / "missing.pcap"), "-o", str(tmp_path / "x.yaml")]) == 1


def test_server_side_capture_gets_dnat(tmp_path):
    from gwlb_fast.batch import PacketBatch

    frames = [_frame("198.18.0.9", "10.9.9.20", 6, 40000, 443, 0x02),
              _frame("10.9.9.20", "198.18.0.9", 6, 443, 40000, 0x12),
              _frame("198.18.0.9", "10.9.9.20", 6, 40000, 443, 0x10)]
    cap = tmp_path / "server.pcap"
    write_pcap(cap, PacketBatch.from_packets(frames, ts_ns=[0, 1000, 2000]))
    init(cap, tmp_path / "t.yaml")
    topo = load_topology(tmp_path / "t.yaml")
    (nat,) = topo.nat_gateways.values()
    assert [(r.proto, r.port, str(ipaddress.IPv4Address(r.to_ip)), r.to_port) for r in nat.dnat] == \
        [(6, 443, "10.9.9.20", 443)]
    assert struct.pack("!I", nat.public_ip_int) not in cap.read_bytes()
    # replayed in its public form through the DNAT rule: every packet delivered
    summary = Pipeline.from_yaml(tmp_path / "t.yaml").run(cap)
    assert summary.packets_out == 3 and summary.dropped == 0, summary.drops


# ---------------------------------------------------------------------------------------------------- east-west
@settings(max_examples=200, deadline=None)
@given(hosts=st.sets(st.integers(1, 254), min_size=1, max_size=12), data=st.data())
def test_split_for_east_west_parts_every_pair(hosts, data):
    """Oracle: the blocks hold every host once, are equal, part every talking pair, keep every host off a block's
    network and broadcast address (below /32), and are the largest such blocks."""
    from gwlb_fast.scaffold import split_for_east_west

    base = int(ipaddress.IPv4Address("10.4.7.0"))
    hs = sorted(base + h for h in hosts)
    pairs = data.draw(st.lists(st.tuples(st.sampled_from(hs), st.sampled_from(hs)).filter(lambda p: p[0] != p[1]),
                               max_size=6)) if len(hs) > 1 else []
    nets = [ipaddress.ip_network(c) for c in split_for_east_west(hs, pairs)]

    def fits(plen):
        size = 1 << (32 - plen)
        ok_pairs = all((a - base) // size != (b - base) // size for a, b in pairs)
        ok_hosts = plen == 32 or all(0 < (h - base) % size < size - 1 for h in hs)
        return ok_pairs and ok_hosts

    plens = {n.prefixlen for n in nets}
    assert len(plens) == 1
    (plen,) = plens
    held = [[n for n in nets if ipaddress.IPv4Address(h) in n] for h in hs]
    assert all(len(x) == 1 for x in held)  # every host in exactly one block
    assert all(any(ipaddress.IPv4Address(h) in n for h in hs) for n in nets)  # no empty block
    if not pairs:
        assert plen == 24
    else:
        assert plen > 24 and fits(plen)
        assert not any(fits(p) for p in range(25, plen))


def test_east_west_flows_cross_the_firewalls(tmp_path):
    """Flows between inside hosts of one /24 and of two /24s of one VPC get different app subnets and the VPC's
    CIDR routed to the GWLBe: every packet reaches a firewall, each flow is a session logged as east-west; a flow
    to the Internet still leaves through the NAT gateway."""
    import json

    from gwlb_fast.batch import PacketBatch

    frames = [_frame("10.5.1.10", "10.5.1.20", 6, 40000, 80, 0x02),
              _frame("10.5.1.20", "10.5.1.10", 6, 80, 40000, 0x12),
              _frame("10.5.1.10", "10.5.1.20", 6, 40000, 80, 0x10),
              _frame("10.5.2.30", "10.5.1.20", 17, 5353, 53), _frame("10.5.1.20", "10.5.2.30", 17, 53, 5353),
              _frame("10.5.1.10", "93.184.216.34", 6, 40001, 443, 0x02),
              _frame("93.184.216.34", "10.5.1.10", 6, 443, 40001, 0x12)]
    cap = tmp_path / "ew.pcap"
    write_pcap(cap, PacketBatch.from_packets(frames, ts_ns=[i * 1000 for i in range(len(frames))]))
    topo_path = tmp_path / "t.yaml"
    plan = init(cap, topo_path)
    (v,) = plan.vpcs.values()
    assert v["east_west"] == 2 and plan.cross_vpc_flows == 0
    topo = load_topology(topo_path)
    apps = {s.cidr for vpc in topo.vpcs.values() for s in vpc.subnets.values() if s.route_table == "app"}
    # 10.5.1.10 and .20 talk: /28 blocks are the largest that part them; 10.5.2.30 talks across /24s: its /24 stays
    assert apps == {"10.5.1.0/28", "10.5.1.16/28", "10.5.2.0/24"}
    hosts = ["10.5.1.10", "10.5.1.20", "10.5.2.30"]
    nets = [ipaddress.ip_network(c) for c in apps]
    homes = [[str(n) for n in nets if ipaddress.IPv4Address(h) in n] for h in hosts]
    assert all(len(x) == 1 for x in homes) and len({x[0] for x in homes}) == 3
    assert check_topology(topo) == []
    flows = tmp_path / "flows.jsonl"
    summary = Pipeline.from_yaml(topo_path).run(cap, tmp_path / "out.pcap", flow_log=flows)
    assert summary.dropped == 0 and summary.packets_out == len(frames)
    assert sum(f["packets"] for f in summary.firewalls.values()) == len(frames)
    assert summary.rules["allow-all"] == 3
    recs = [json.loads(line) for line in flows.read_text().splitlines()]
    assert sorted(r["direction"] for r in recs) == ["east-west", "east-west", "outbound"]
    assert [r["nat_ip"] is not None for r in recs if r["direction"] == "outbound"] == [True]


def test_east_west_real_captures_reach_the_firewalls(tmp_path):
    """Real captures between two hosts of one LAN: every IPv4 packet crosses a firewall (before, the VPC delivered
    them itself and the firewalls saw none)."""
    for name, want in (("http_dvwa_sqlinjection.pcapng", 35), ("sessionhijacking.pcapng", 133)):
        cap = REAL / name
        if not cap.exists():
            pytest.skip("no real captures")
        topo = tmp_path / f"{name}.yaml"
        init(cap, topo)
        summary = Pipeline.from_yaml(topo).run(cap, tmp_path / "out.pcap")
        assert sum(f["packets"] for f in summary.firewalls.values()) == want == _unicast_ipv4(cap)
