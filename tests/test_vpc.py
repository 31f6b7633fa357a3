import ipaddress

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gwlb_fast._kernels.lpm import lpm_lookup
from gwlb_fast.config import example_topology_text, ip_to_int, load_topology
from gwlb_fast.stages.vpc import Lpm, NextHop, VpcRouter, routers


def oracle_lpm(entries, ip):
    """Plain-Python LPM: value of the longest prefix containing ip, -1 if none."""
    best, best_len = -1, -1
    for net, plen, val in entries:
        mask = (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF if plen else 0
        if ip & mask == net and plen > best_len:
            best, best_len = val, plen
    return best


@st.composite
def prefix_tables(draw):
    ntables = draw(st.integers(1, 3))
    tables = []
    for _ in range(ntables):
        seen = set()
        entries = []
        for _ in range(draw(st.integers(0, 12))):
            plen = draw(st.sampled_from([0, 1, 8, 15, 16, 23, 24, 28, 31, 32]))
            ip = draw(st.integers(0, 0xFFFFFFFF))
            mask = (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF if plen else 0
            net = ip & mask
            if (net, plen) not in seen:
                seen.add((net, plen))
                entries.append((net, plen, len(entries)))
        tables.append(entries)
    return tables


@settings(max_examples=60)
@given(prefix_tables(), st.data())
def test_lpm_matches_oracle(tables, data):
    lpm = Lpm(tables)
    # addresses: random ones plus ones inside (and right next to) each prefix
    ips = data.draw(st.lists(st.integers(0, 0xFFFFFFFF), max_size=20))
    for entries in tables:
        for net, plen, _ in entries:
            size = 1 << (32 - plen)
            ips += [net, (net + size - 1) & 0xFFFFFFFF, (net + size) & 0xFFFFFFFF, (net - 1) & 0xFFFFFFFF]
    ips = np.array(ips, np.uint32)
    tab = np.array(data.draw(st.lists(st.integers(-1, len(tables)), min_size=len(ips), max_size=len(ips))),
                   np.int32)
    got = lpm.lookup(ips, tab)
    want = [oracle_lpm(tables[t], int(ip)) if 0 <= t < len(tables) else -1 for ip, t in zip(ips.tolist(), tab)]
    assert got.tolist() == want


def test_lpm_edges():
    lpm = Lpm([[(0, 0, 7), (ip_to_int("10.0.0.0"), 8, 1), (ip_to_int("10.1.0.0"), 16, 2),
                (ip_to_int("10.1.1.1"), 32, 3)]])
    ips = np.array([ip_to_int(a) for a in ["10.1.1.1", "10.1.1.2", "10.2.0.0", "11.0.0.0", "255.255.255.255"]],
                   np.uint32)
    assert lpm.lookup(ips).tolist() == [3, 2, 1, 7, 7]
    assert lpm.lookup(np.zeros(0, np.uint32)).tolist() == []
    assert lpm.lookup(ips[:1]).tolist() == [3]
    empty = Lpm([[]])
    assert empty.lookup(ips).tolist() == [-1] * 5
    # read-only input works
    ro = ips.copy()
    ro.flags.writeable = False
    assert lpm.lookup(ro).tolist() == [3, 2, 1, 7, 7]


def test_lpm_rejects_bad_arguments():
    lpm = Lpm([[(0, 0, 0), (ip_to_int("10.1.1.0"), 28, 1)]])
    dst = np.zeros(3, np.uint32)
    one = np.zeros(1, np.int32)
    with pytest.raises(ValueError, match="out"):
        lpm_lookup(lpm.l1, lpm.l2, lpm.l3, one, dst, np.zeros(2, np.int32))
    with pytest.raises(ValueError, match="table"):
        lpm_lookup(lpm.l1, lpm.l2, lpm.l3, np.zeros(2, np.int32), dst, np.zeros(3, np.int32))
    with pytest.raises(ValueError):
        lpm_lookup(lpm.l1, lpm.l2, lpm.l3, one, dst.astype(np.int64), np.zeros(3, np.int32))
    with pytest.raises(ValueError, match="l1"):
        lpm_lookup(lpm.l1[:100], lpm.l2, lpm.l3, one, dst, np.zeros(3, np.int32))
    with pytest.raises(ValueError, match="l2"):
        lpm_lookup(lpm.l1, lpm.l2[:100], lpm.l3, one, dst, np.zeros(3, np.int32))
    # a pointer to a chunk that does not exist is a miss, never an out-of-bounds read
    bad = lpm.l1.copy()
    bad[:] = -1000
    out = np.zeros(3, np.int32)
    assert lpm_lookup(bad, lpm.l2, lpm.l3, one, dst, out) == 3 and out.tolist() == [-1] * 3
    with pytest.raises(ValueError, match="host bits"):
        Lpm([[(1, 8, 0)]])
    with pytest.raises(ValueError, match="duplicate"):
        Lpm([[(0, 8, 0), (0, 8, 1)]])
    assert Lpm([]).lookup(dst).tolist() == [-1] * 3


def test_router_on_example():
    topo = load_topology(example_topology_text())
    r = routers(topo)["business"]
    ips = np.array([ip_to_int(a) for a in ["10.1.1.5", "8.8.8.8", "10.1.2.9", "10.1.3.1", "10.9.0.1"]], np.uint32)
    assert [r.subnet_names[i] if i >= 0 else None for i in r.subnet_of(ips)] == ["app", None, "gwlbe", "nat", None]
    # every table holds the implicit local route for the VPC's 10.1.0.0/16; more specific routes override it
    loc, ep, nat, inet = NextHop("local", None), NextHop("gwlbe", "gwlbe-a"), NextHop("natgw", "nat-a"), \
        NextHop("internet", None)
    assert r.decode(r.next_hop("app", ips)) == [loc, ep, loc, loc, ep]
    assert r.decode(r.next_hop("gwlbe", ips)) == [loc, nat, loc, loc, nat]
    assert r.decode(r.next_hop("nat", ips)) == [ep, inet, loc, loc, inet]
    # per-packet tables: each address routed in the table of its own subnet
    src = np.array([ip_to_int("10.1.1.5"), ip_to_int("10.1.3.1"), ip_to_int("10.1.2.1")], np.uint32)
    dst = np.array([ip_to_int("1.1.1.1"), ip_to_int("10.1.1.7"), ip_to_int("10.1.1.7")], np.uint32)
    tables = r.table_of_subnet(r.subnet_of(src))
    assert [str(h) for h in r.decode(r.next_hop(tables, dst))] == ["gwlbe:gwlbe-a", "gwlbe:gwlbe-a", "local"]
    routes = r.route_index(tables, dst)
    assert [r.routes[i].key for i in routes] == ["vpcs.business.route_tables.app[0]",
                                                 "vpcs.business.route_tables.nat[0]",
                                                 "vpcs.business.route_tables.gwlbe[1]"]


def test_route_packets_from_source_subnet():
    r = routers(load_topology(example_topology_text()))["business"]
    src = np.array([ip_to_int(a) for a in ["10.1.1.5", "10.1.2.7", "10.1.3.9", "10.1.9.9", "8.8.8.8"]], np.uint32)
    dst = np.array([ip_to_int(a) for a in ["8.8.8.8", "10.1.1.5", "10.1.1.5", "8.8.8.8", "10.1.1.5"]], np.uint32)
    idx, hop = r.route_packets(src, dst)
    assert [str(h) if h else None for h in r.decode(hop)] == ["gwlbe:gwlbe-a", "local", "gwlbe:gwlbe-a", None, None]
    assert idx.tolist()[3:] == [-1, -1]
    assert r.route_packets(np.zeros(0, np.uint32), np.zeros(0, np.uint32))[0].shape == (0,)


def test_no_route_and_blackhole():
    topo = load_topology("""
vpcs:
  v:
    cidr: 10.0.0.0/16
    subnets: {a: {cidr: 10.0.1.0/24, route_table: t}}
    route_tables:
      t: [{dst: 10.0.0.0/16, via: local}, {dst: 192.168.0.0/16, via: blackhole}]
""")
    r = VpcRouter(topo.vpcs["v"])
    ips = np.array([ip_to_int("10.0.5.5"), ip_to_int("192.168.1.1"), ip_to_int("8.8.8.8")], np.uint32)
    assert r.decode(r.next_hop("t", ips)) == [NextHop("local", None), NextHop("blackhole", None), None]
    assert r.subnet_of(ips).tolist() == [-1, -1, -1]
    assert r.subnet_of(np.array([ip_to_int("10.0.1.255")], np.uint32)).tolist() == [0]


@settings(max_examples=30)
@given(st.lists(st.integers(0, 0xFFFFFFFF), max_size=50))
def test_subnet_of_matches_ipaddress(ips):
    topo = load_topology(example_topology_text())
    r = routers(topo)["business"]
    got = r.subnet_of(np.array(ips, np.uint32)).tolist()
    nets = [ipaddress.IPv4Network(s.cidr) for s in r.subnets]
    want = [next((i for i, n in enumerate(nets) if ipaddress.IPv4Address(ip) in n), -1) for ip in ips]
    assert got == want
