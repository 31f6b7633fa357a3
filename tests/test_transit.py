"""Transit routers and the centralized security VPC (DESIGN.md section 13) on synthetic traffic with ground truth.

``examples/centralized.yaml``: two spokes and a security VPC (GWLB endpoint, NAT gateway) joined by transit router
tr-1. The capture (``synth.CENTRALIZED_PLAN``) holds east-west flows from spoke-a to servers in spoke-b and
north-south flows of both spokes (SNAT'ed outbound, DNAT'ed inbound to 10.2.1.20:8443), each direction as the
spokes see it. Every flow must reach its destination with its original addresses, both directions through one
firewall, the firewall seeing pre-SNAT / post-DNAT addresses, and every packet delivered or counted.
"""
import collections
import copy
import importlib.resources
import ipaddress
import itertools
import json
from pathlib import Path

import dpkt
import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

import gwlb_fast as gf
from gwlb_fast import synth
from gwlb_fast.config import load_topology, topology_from_dict
from gwlb_fast.errors import ConfigError
from gwlb_fast.pipeline import STAGES, Pipeline
from gwlb_fast.stages.vpc import TransitRouter, VpcRouter
from gwlb_fast.status import PktStatus
from gwlb_fast.synth import CATEGORIES, Direction
from tests.test_pipeline import Replay, _l4

CENTRAL_PATH = str(importlib.resources.files("gwlb_fast") / "examples" / "centralized.yaml")
CENTRAL = yaml.safe_load(Path(CENTRAL_PATH).read_text())
CAT = {c: i for i, c in enumerate(CATEGORIES)}
D_INTERNET, D_HOST = 1, 2
PUBLIC = int(ipaddress.IPv4Address("203.0.113.20"))
SERVER = (int(ipaddress.IPv4Address("10.2.1.20")), 8443)


def _ip(s):
    return int(ipaddress.IPv4Address(s))


def _topo(d=None, name="central.yaml"):
    d = copy.deepcopy(CENTRAL if d is None else d)
    d["events"] = []
    return topology_from_dict(d, name)


@pytest.fixture(scope="module")
def traffic():
    return synth.generate_with_truth(300, 20_000, seed=7, duration=20.0, mix=synth.CENTRALIZED_MIX,
                                     plan=synth.CENTRALIZED_PLAN)


@pytest.fixture(scope="module")
def replays(traffic):
    return {c: Replay(traffic[0], c, _topo()) for c in (257, 65536)}


@pytest.fixture(scope="module")
def out_tuples(replays, traffic):
    r = replays[257]
    rows = np.flatnonzero(r.delivered)
    out = np.full((traffic[1].n_packets, 5), -1, np.int64)
    out[rows] = np.array([_l4(bytes(r.output.packet(i))) for i in range(len(r.output))], np.int64)
    return out


# ---------------------------------------------------------------------------------------------------- example
def test_example_loads_and_checks_clean():
    t = load_topology(CENTRAL_PATH)
    assert set(t.transit_routers) == {"tr-1"}
    tr = t.transit_routers["tr-1"]
    assert {a.vpc for a in tr.attachments.values()} == {"spoke-a", "spoke-b", "security"}
    from gwlb_fast.check import check_topology

    assert check_topology(t) == []
    assert [(e.event, e.state) for e in t.events] == [("down", None), ("up", None)]


def test_transit_router_forwarding_against_a_plain_python_oracle():
    t = load_topology(CENTRAL_PATH)
    names = list(t.vpcs)
    vr = [VpcRouter(t.vpcs[n]) for n in names]
    tr = TransitRouter(t.transit_routers["tr-1"], names, vr)
    rng = np.random.default_rng(1)
    dst = np.concatenate([rng.integers(0, 1 << 32, 500, dtype=np.uint64).astype(np.uint32),
                          np.array([_ip(a) for a in ("10.1.1.5", "10.2.1.20", "10.100.2.1", "10.3.0.1")], np.uint32)])
    vpc = rng.integers(0, len(names), dst.size).astype(np.int16)
    got_vpc, got_table, got_status = tr.forward(vpc, dst)
    cfg = t.transit_routers["tr-1"]
    for i in range(dst.size):
        att = cfg.attachment_of_vpc(names[vpc[i]])
        best = None
        for r in cfg.route_tables[att.route_table].routes:
            mask = (0xFFFFFFFF << (32 - r.plen)) & 0xFFFFFFFF if r.plen else 0
            if int(dst[i]) & mask == r.net and (best is None or r.plen > best.plen):
                best = r
        if best is None:
            assert got_status[i] == PktStatus.NO_ROUTE
            continue
        assert got_status[i] == PktStatus.OK
        to = cfg.attachments[best.target]
        v = names.index(to.vpc)
        assert got_vpc[i] == v
        assert vr[v].table_names[got_table[i]] == t.vpcs[to.vpc].subnets[to.subnet].route_table


# ---------------------------------------------------------------------------------------------------- ground truth
@pytest.mark.parametrize("chunk", (257, 65536))
def test_every_packet_delivered_or_dropped_for_a_counted_reason(replays, traffic, chunk):
    _, gt = traffic
    r = replays[chunk]
    delivered = r.delivered != 0
    assert ((r.status == PktStatus.OK) == delivered).all()
    assert ((r.stage == 255) == delivered).all()
    s = r.summary
    assert s.packets_in == gt.n_packets == s.packets_out + s.dropped
    expect = collections.defaultdict(dict)
    for (stage, status), k in collections.Counter(zip(r.stage[~delivered].tolist(),
                                                      r.status[~delivered].tolist())).items():
        expect[STAGES[stage]][PktStatus(status).name] = k
    assert s.drops == dict(expect)
    # only what the policy denies is dropped: the requests by the firewall, their replies at the NAT gateway
    assert s.drops["firewall"] == {"POLICY_DENY": int(((gt.direction != Direction.REPLY) & gt.denied[gt.flow]).sum())}
    assert s.drops["nat"] == {"NAT_NO_MAPPING": int(((gt.direction == Direction.REPLY) & gt.denied[gt.flow]).sum())}
    assert (delivered == ~gt.denied[gt.flow]).all()


def test_chunking_changes_nothing(replays):
    a, b = replays[257], replays[65536]
    for name in ("status", "stage", "delivered", "fw"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name


def test_east_west_flows_arrive_unchanged_through_one_firewall(replays, traffic, out_tuples):
    batch, gt = traffic
    r = replays[257]
    ew = (gt.category == CAT["tcp-east-west"])[gt.flow]
    assert ew.sum() > 1000 and (gt.direction[ew] == Direction.REPLY).sum() > 300
    assert (r.delivered[ew] == D_HOST).all()
    # original addresses and bytes: no NAT between VPCs
    rows = np.flatnonzero(r.delivered)
    pos = np.searchsorted(rows, np.flatnonzero(ew))
    assert all(bytes(r.output.packet(int(p))) == bytes(batch.packet(int(i)))
               for p, i in zip(pos[::17], np.flatnonzero(ew)[::17]))
    f = gt.flow[ew]
    o = out_tuples[ew]
    fwd = gt.direction[ew] != Direction.REPLY
    assert (o[fwd, 0] == gt.client_ip[f[fwd]]).all() and (o[fwd, 1] == gt.server_ip[f[fwd]]).all()
    assert (o[~fwd, 1] == gt.client_ip[f[~fwd]]).all() and (o[~fwd, 0] == gt.server_ip[f[~fwd]]).all()
    # both directions of each flow crossed one firewall
    fw_of = collections.defaultdict(set)
    for fid, k in zip(f.tolist(), r.fw[ew].tolist()):
        fw_of[fid].add(k)
    assert all(len(v) == 1 and -1 not in v for v in fw_of.values())
    assert len({next(iter(v)) for v in fw_of.values()}) == 3   # spread over the fleet


def test_north_south_flows_are_translated_by_the_central_nat(replays, traffic, out_tuples):
    _, gt = traffic
    r = replays[257]
    flow, d = gt.flow, gt.direction
    out_ok = np.isin(gt.category, (CAT["tcp-out"], CAT["udp-dns"]))[flow]
    req, rep = out_ok & (d == Direction.OUTBOUND), out_ok & (d == Direction.REPLY)
    assert req.sum() > 1000 and rep.sum() > 1000
    # spoke-a and spoke-b both send (to one NAT gateway in the security VPC)
    assert {int(ip) >> 16 for ip in gt.client_ip[flow[req]]} == {0x0A01, 0x0A02}
    assert (r.delivered[req] == D_INTERNET).all() and (r.delivered[rep] == D_HOST).all()
    o, f = out_tuples[req], flow[req]
    assert (o[:, 0] == PUBLIC).all() and (o[:, 1] == gt.server_ip[f]).all() and (o[:, 3] == gt.server_port[f]).all()
    o, f = out_tuples[rep], flow[rep]
    assert (o[:, 1] == gt.client_ip[f]).all() and (o[:, 3] == gt.client_port[f]).all()
    inb = (gt.category == CAT["tcp-in"])[flow]
    req, rep = inb & (d == Direction.INBOUND), inb & (d == Direction.REPLY)
    assert (r.delivered[req] == D_HOST).all() and (r.delivered[rep] == D_INTERNET).all()
    o = out_tuples[req]
    assert (o[:, 1] == SERVER[0]).all() and (o[:, 3] == SERVER[1]).all()
    o = out_tuples[rep]
    assert (o[:, 0] == PUBLIC).all() and (o[:, 2] == 443).all()
    for sel in (out_ok, inb):
        fw_of = collections.defaultdict(set)
        for fid, k in zip(flow[sel].tolist(), r.fw[sel].tolist()):
            fw_of[fid].add(k)
        assert all(len(v) == 1 and -1 not in v for v in fw_of.values())


def test_firewall_sees_pre_snat_and_post_dnat_addresses(traffic, tmp_path):
    batch, gt = traffic
    gf.write_pcap(tmp_path / "in.pcap", batch)
    Pipeline(_topo()).run(tmp_path / "in.pcap", tmp_path / "out.pcap", flow_log=tmp_path / "flows.jsonl",
                          events=[], chunk=4096)
    log = [json.loads(x) for x in (tmp_path / "flows.jsonl").read_text().splitlines()]
    seen = {(_ip(e["src_ip"]), e["src_port"], _ip(e["dst_ip"]), e["dst_port"], e["proto"]): e for e in log}
    allowed = np.flatnonzero(~gt.denied)
    assert allowed.size > 100
    for fid in allowed.tolist():
        sip = gt.reply_ip[fid] if gt.inbound[fid] else gt.server_ip[fid]
        sport = gt.reply_port[fid] if gt.inbound[fid] else gt.server_port[fid]
        key = (int(gt.client_ip[fid]), int(gt.client_port[fid]), int(sip), int(sport), int(gt.proto[fid]))
        e = seen[key]
        cat = CATEGORIES[gt.category[fid]]
        assert e["direction"] == {"tcp-in": "inbound", "tcp-east-west": "east-west"}.get(cat, "outbound"), cat
        assert e["endpoint"] == "gwlbe-c"
        assert e["packets"] + e["packets_reply"] == gt.packets[fid]
        if cat == "tcp-east-west":
            assert e["rule"] == "allow-east-west-https" and e["nat_ip"] is None


@settings(max_examples=5, deadline=None)
@given(cuts=st.lists(st.integers(1, 2999), max_size=10))
def test_any_chunking_gives_the_same_outcome(cuts):
    batch, _ = synth.generate_with_truth(60, 3000, seed=5, duration=3.0, mix=synth.CENTRALIZED_MIX,
                                         plan=synth.CENTRALIZED_PLAN)
    whole = Pipeline(_topo()).process(batch)
    pipe = Pipeline(_topo())
    bounds = [0, *sorted(set(cuts)), len(batch)]
    res = [pipe.process(batch[a:b]) for a, b in itertools.pairwise(bounds)]
    for name in ("status", "stage", "delivered", "fw"):
        assert np.array_equal(np.concatenate([getattr(x, name) for x in res]), getattr(whole, name)), name


# ---------------------------------------------------------------------------------------------------- mistakes
def _one_packet(src, dst, sport=40000, dport=443):
    eth = dpkt.ethernet.Ethernet(src=b"\x02" * 6, dst=b"\x04" * 6, type=0x0800)
    tcp = dpkt.tcp.TCP(sport=sport, dport=dport, flags=dpkt.tcp.TH_SYN, seq=1)
    ip = dpkt.ip.IP(src=ipaddress.IPv4Address(src).packed, dst=ipaddress.IPv4Address(dst).packed, p=6, ttl=64,
                    data=tcp)
    ip.len = 20 + len(bytes(tcp))
    eth.data = ip
    return bytes(eth)


def _batch(frames):
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        with open(f"{d}/x.pcap", "wb") as fh:
            w = dpkt.pcap.Writer(fh)
            for i, f in enumerate(frames):
                w.writepkt(f, ts=1_700_000_000 + i * 1e-3)
        return gf.PacketBatch.concat(list(gf.read_pcap(f"{d}/x.pcap", parse=False)))


def test_transit_blackhole_and_loop_are_dropped_with_reasons():
    d = copy.deepcopy(CENTRAL)
    routes = d["transit_routers"]["tr-1"]["route_tables"]
    # spoke-b's 10.2.5.0/24 is black-holed; the spokes' table sends 10.9/16 back to spoke-a, whose table sends
    # it to the router again: a loop
    routes["security"].append({"dst": "10.2.5.0/24", "via": "blackhole"})
    routes["spokes"].append({"dst": "10.9.0.0/16", "via": "attachment:spoke-a"})
    pipe = Pipeline(_topo(d))
    frames = [_one_packet("10.1.1.10", "10.2.5.7"), _one_packet("10.1.1.10", "10.9.0.1"),
              _one_packet("10.1.1.10", "10.2.1.30"), _one_packet("10.1.1.10", "10.1.1.11")]
    r = pipe.process(_batch(frames))
    assert r.status.tolist() == [PktStatus.BLACKHOLE, PktStatus.ROUTE_LOOP, PktStatus.OK, PktStatus.OK]
    assert r.stage.tolist()[:2] == [STAGES.index("route")] * 2
    assert r.delivered.tolist()[2:] == [D_HOST, D_HOST]
    # the last one stayed in spoke-a (the implicit local route): no firewall saw it
    assert r.fw.tolist()[3] == -1 and r.fw.tolist()[2] >= 0


@pytest.mark.parametrize("change, words", [
    (lambda d: d["vpcs"]["spoke-a"]["route_tables"]["app"].append({"dst": "10.9.0.0/16", "via": "tr:tr-9"}),
     "vpcs.spoke-a.route_tables.app[1].via: unknown transit router 'tr-9'"),
    (lambda d: d["transit_routers"]["tr-1"]["route_tables"]["spokes"].append(
        {"dst": "10.9.0.0/16", "via": "attachment:spoke-c"}),
     "transit_routers.tr-1.route_tables.spokes[1].via: unknown attachment 'spoke-c'"),
    (lambda d: d["transit_routers"]["tr-1"]["attachments"]["spoke-a"].update(subnet="web"),
     "transit_routers.tr-1.attachments.spoke-a.subnet: unknown subnet 'web'"),
    (lambda d: d["transit_routers"]["tr-1"]["attachments"]["spoke-a"].update(route_table="nope"),
     "transit_routers.tr-1.attachments.spoke-a.route_table: unknown route table 'nope'"),
    (lambda d: (d["transit_routers"]["tr-1"]["attachments"].pop("spoke-b"),
                d["transit_routers"]["tr-1"]["route_tables"]["security"].pop()),
     "vpcs.spoke-b.route_tables.app[0].via: VPC 'spoke-b' has no attachment to transit router 'tr-1'"),
    (lambda d: d["transit_routers"]["tr-1"]["route_tables"]["spokes"].append({"dst": "10.9.0.0/16", "via": "local"}),
     "transit_routers.tr-1.route_tables.spokes[1].via: unknown next hop 'local'"),
    (lambda d: d["events"].append({"at": 1, "firewall": "fw-1", "state": "healthy", "event": "down"}),
     "events[2]: needs one of 'state'"),
    (lambda d: d["events"].append({"at": 1, "firewall": "fw-1", "event": "explode"}),
     "events[2].event: unknown value 'explode'"),
])
def test_configuration_errors_name_the_key(change, words):
    d = copy.deepcopy(CENTRAL)
    change(d)
    with pytest.raises(ConfigError) as e:
        topology_from_dict(d, "bad.yaml")
    assert str(e.value).startswith("bad.yaml: ") and words in str(e.value), str(e.value)


def test_existing_example_runs_unchanged_in_its_vpc():
    # no transit routers: the walk has none to take
    t = load_topology(str(importlib.resources.files("gwlb_fast") / "examples" / "topology.yaml"))
    assert t.transit_routers == {} and Pipeline(t).transit == []


def test_demo_runs_the_centralized_example(tmp_path, capsys):
    from gwlb_fast.cli import main

    out = tmp_path / "demo"
    assert main(["demo", "--topology", "centralized", "--out", str(out), "--flows", "60", "--packets", "3000",
                 "--json", "--quiet"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert (out / "topology.yaml").read_text() == Path(CENTRAL_PATH).read_text()
    assert s["packets_in"] == 3000 and s["packets_out"] > 1000
    recs = [json.loads(x) for x in (out / "flows.jsonl").read_text().splitlines()]
    assert {r["direction"] for r in recs} == {"outbound", "inbound", "east-west"}
    assert (out / "taps" / "health.pcap").stat().st_size > 24
    with pytest.raises(SystemExit) as e:
        main(["demo", "--topology", "mesh", "--out", str(out)])
    assert e.value.code == 2


def _mixed_design():
    """Centralized and distributed together: spoke-c has its own GWLB endpoint (its own zone) and NAT gateway for
    the Internet, and reaches the other spokes through the transit router and the security VPC."""
    d = copy.deepcopy(CENTRAL)
    d["vpcs"]["spoke-c"] = {
        "cidr": "10.3.0.0/16",
        "subnets": {"app": {"cidr": "10.3.1.0/24", "route_table": "app"},
                    "gwlbe": {"cidr": "10.3.2.0/24", "route_table": "gwlbe"},
                    "nat": {"cidr": "10.3.3.0/24", "route_table": "nat"},
                    "tr": {"cidr": "10.3.9.0/24", "route_table": "tr"}},
        "route_tables": {"app": [{"dst": "0.0.0.0/0", "via": "gwlbe:gwlbe-d"}, {"dst": "10.0.0.0/8", "via": "tr:tr-1"}],
                         "gwlbe": [{"dst": "0.0.0.0/0", "via": "natgw:nat-d"}],
                         "nat": [{"dst": "10.3.1.0/24", "via": "gwlbe:gwlbe-d"}, {"dst": "0.0.0.0/0", "via": "internet"}],
                         "tr": []}}
    d["endpoints"]["gwlbe-d"] = {"vpc": "spoke-c", "subnet": "gwlbe", "id": 0x0D, "gwlb": "gwlb-1"}
    d["nat_gateways"]["nat-d"] = {"vpc": "spoke-c", "subnet": "nat", "public_ip": "203.0.113.30",
                                  "snat": {"sources": ["10.3.1.0/24"]}}
    tr = d["transit_routers"]["tr-1"]
    tr["attachments"]["spoke-c"] = {"vpc": "spoke-c", "subnet": "tr", "route_table": "spokes"}
    tr["route_tables"]["security"].append({"dst": "10.3.0.0/16", "via": "attachment:spoke-c"})
    pol = d["security_policy"]
    pol["zones"]["spoke-c"] = ["gwlbe-d"]
    # spoke-c's own Internet traffic is classified in its zone (intrazone at its endpoint's sub-interface)
    pol["rules"].insert(0, {"name": "spoke-c-web", "from": ["spoke-c"], "to": ["spoke-c"], "protocol": "tcp",
                            "port": [443], "action": "allow"})
    pol["rules"].insert(1, {"name": "spoke-c-rest", "from": ["spoke-c"], "to": ["spoke-c"], "action": "deny"})
    pol["rules"].insert(2, {"name": "allow-a-to-c", "source": ["10.1.0.0/16"], "destination": ["10.3.0.0/16"],
                            "protocol": "tcp", "port": [443], "action": "allow"})
    return d


def test_centralized_and_distributed_together():
    d = _mixed_design()
    t = _topo(d)
    from gwlb_fast.check import check_topology

    assert check_topology(t) == []
    pipe = Pipeline(t)
    frames = [_one_packet("10.3.1.10", "93.184.216.34", 40001, 443),   # spoke-c to the Internet: its own GWLBe
              _one_packet("10.3.1.10", "93.184.216.34", 40002, 22),    # denied in zone spoke-c
              _one_packet("10.3.1.10", "10.2.1.30", 40003, 443),       # spoke-c to spoke-b: central inspection
              _one_packet("10.1.1.10", "10.3.1.10", 40004, 443)]       # spoke-a to spoke-c
    r = pipe.process(_batch(frames))
    assert r.status.tolist() == [PktStatus.OK, PktStatus.POLICY_DENY, PktStatus.POLICY_DENY, PktStatus.OK]
    assert r.delivered.tolist() == [D_INTERNET, 0, 0, D_HOST]
    # the first left through spoke-c's own NAT gateway
    assert pipe.nats[pipe.nat_names.index("nat-d")].stats["snat_packets"] == 1
    # the third: spoke-c's east-west, classified centrally in zone security, where 10.3/16 -> 10.2/16 port 443 is
    # not allowed (allow-east-west-https is from 10.1/16), so block-east-west denies it
    hits = sum(f.hits for f in pipe.gwlbs["gwlb-1"].firewalls)
    names = list(pipe.policy.rule_names) + ["default"]
    assert {names[i] for i in np.flatnonzero(hits)} == {"spoke-c-web", "spoke-c-rest", "block-east-west",
                                                        "allow-a-to-c"}
