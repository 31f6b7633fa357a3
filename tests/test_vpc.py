import ipaddress

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gwlb_fast._kernels.lpm import enter_subnets, lpm_lookup, next_hops
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


def _addresses_near(tables, draw):
    ips = draw(st.lists(st.integers(0, 0xFFFFFFFF), max_size=20))
    for entries in tables:
        for net, plen, _ in entries:
            size = 1 << (32 - plen)
            ips += [net, (net + size - 1) & 0xFFFFFFFF, (net + size) & 0xFFFFFFFF]
    return ips


@settings(max_examples=60)
@given(st.lists(prefix_tables(), min_size=1, max_size=3), st.data())
def test_stacked_lpm_gives_each_part_its_values_shifted(parts, data):
    """Lpm.stack: part k's table t is table first[k] + t, its values raised by offsets[k]; the oracle per part."""
    offsets = data.draw(st.lists(st.integers(0, 1000), min_size=len(parts), max_size=len(parts)))
    both, first = Lpm.stack([Lpm(t) for t in parts], offsets)
    assert both.ntables == sum(len(t) for t in parts) and first.tolist() == np.cumsum([0] + [len(t) for t in parts]).tolist()
    for k, tables in enumerate(parts):
        ips = np.array(_addresses_near(tables, data.draw), np.uint32)
        for t, entries in enumerate(tables):
            want = [(v + offsets[k]) if v >= 0 else -1 for v in (oracle_lpm(entries, int(ip)) for ip in ips.tolist())]
            assert both.lookup(ips, int(first[k]) + t).tolist() == want


@settings(max_examples=60)
@given(st.lists(prefix_tables(), min_size=1, max_size=3), st.data())
def test_next_hops_walks_the_rows_still_walking_like_the_oracle(parts, data):
    """next_hops against plain Python: the rows with status 0, a table, not delivered and not held, in order, each
    with the kind and target of its route in its VPC's table (no_route and -1 without one, or with a VPC out of
    range), and those rows' tables set to -1; the other rows untouched."""
    nroutes = [sum(len(e) for e in tables) for tables in parts]
    # LPM values are route numbers within a VPC; route r of VPC v is route base[v] + r across the VPCs
    numbered = []
    for tables in parts:
        at, out = 0, []
        for entries in tables:
            out.append([(net, plen, at + i) for i, (net, plen, _) in enumerate(entries)])
            at += len(entries)
        numbered.append(out)
    base = np.cumsum([0] + nroutes)[:-1].tolist()
    lpm, first = Lpm.stack([Lpm(t) for t in numbered], base)
    total = sum(nroutes)
    route_kind = np.array(data.draw(st.lists(st.integers(0, 6), min_size=total, max_size=total)), np.int8)
    route_target = np.array(data.draw(st.lists(st.integers(-1, 9), min_size=total, max_size=total)), np.int32)
    ips = []
    for tables in numbered:
        ips += _addresses_near(tables, data.draw)
    n = len(ips)
    ints = lambda lo, hi: data.draw(st.lists(st.integers(lo, hi), min_size=n, max_size=n))
    status = np.array(ints(0, 2), np.uint8)
    vpc = np.array(ints(-1, len(parts)), np.int16)
    table = np.array([data.draw(st.integers(-1, len(parts[v]))) if 0 <= v < len(parts) else data.draw(
        st.integers(-1, 2)) for v in vpc.tolist()], np.int32)
    delivered = np.array(ints(0, 1), np.uint8)
    held = np.array(ints(0, 1), np.uint8)
    dst = np.array(ips, np.uint32)
    want_rows, want_kind, want_target, want_table = [], [], [], table.copy()
    for i in range(n):
        if status[i] or table[i] < 0 or delivered[i] or held[i]:
            continue
        v, t = int(vpc[i]), int(table[i])
        r = oracle_lpm(numbered[v][t], int(dst[i])) if 0 <= v < len(parts) and t < len(parts[v]) else -1
        want_rows.append(i)
        want_kind.append(int(route_kind[base[v] + r]) if r >= 0 else 5)
        want_target.append(int(route_target[base[v] + r]) if r >= 0 else -1)
        want_table[i] = -1
    rows, kind, target = np.empty(n, np.int64), np.empty(n, np.int8), np.empty(n, np.int32)
    m = next_hops(lpm.l1, lpm.l2, lpm.l3, first, route_kind, route_target, 5, status, table, delivered, held, vpc,
                  dst, rows, kind, target)
    assert rows[:m].tolist() == want_rows
    assert kind[:m].tolist() == want_kind and target[:m].tolist() == want_target
    assert table.tolist() == want_table.tolist()


@settings(max_examples=60)
@given(prefix_tables(), st.data())
def test_enter_subnets_like_the_oracle(tables, data):
    """enter_subnets against plain Python: rows with status 0 and no VPC whose source is in a subnet take the VPC and
    the subnet's table; those whose destination is in the same subnet are delivered (table -1) and listed."""
    subnets = tables[:1]
    lpm = Lpm(subnets)
    nsub = len(subnets[0])
    subnet_table = np.array(data.draw(st.lists(st.integers(-1, 5), min_size=nsub, max_size=nsub)), np.int32)
    ips = _addresses_near(subnets, data.draw)
    n = len(ips)
    src = np.array(ips, np.uint32)
    dst = np.array(data.draw(st.permutations(ips)), np.uint32)
    status = np.array(data.draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)), np.uint8)
    vpc = np.array(data.draw(st.lists(st.integers(-1, 1), min_size=n, max_size=n)), np.int16)
    table = np.array(data.draw(st.lists(st.integers(-1, 3), min_size=n, max_size=n)), np.int32)
    delivered = np.array(data.draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)), np.uint8)
    w_vpc, w_table, w_del, w_same = vpc.copy(), table.copy(), delivered.copy(), []
    for i in range(n):
        if status[i] or vpc[i] >= 0:
            continue
        s = oracle_lpm(subnets[0], int(src[i]))
        if s < 0:
            continue
        w_vpc[i], w_table[i] = 7, subnet_table[s]
        if oracle_lpm(subnets[0], int(dst[i])) == s:
            w_table[i], w_del[i] = -1, 2
            w_same.append(i)
    same = np.empty(n, np.int64)
    m = enter_subnets(lpm.l1, lpm.l2, lpm.l3, subnet_table, 7, 2, status, vpc, table, delivered, src, dst, same)
    assert same[:m].tolist() == w_same
    assert vpc.tolist() == w_vpc.tolist() and table.tolist() == w_table.tolist()
    assert delivered.tolist() == w_del.tolist()


def test_next_hops_checks_lengths():
    lpm = Lpm([[(0, 0, 0)]])
    z = lambda d, k=3: np.zeros(k, d)
    args = [lpm.l1, lpm.l2, lpm.l3, np.array([0, 1], np.int32), z(np.int8, 1), z(np.int32, 1), 0, z(np.uint8),
            z(np.int32), z(np.uint8), z(np.uint8), z(np.int16), z(np.uint32), z(np.int64), z(np.int8), z(np.int32)]
    assert next_hops(*args) == 3
    for k in range(8, 16):
        bad = list(args)
        bad[k] = bad[k][:2]
        with pytest.raises(ValueError, match="length"):
            next_hops(*bad)
    bad = list(args)
    bad[5] = z(np.int32, 2)
    with pytest.raises(ValueError, match="route_target"):
        next_hops(*bad)


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


def test_enter_subnets_checks_lengths():
    lpm = Lpm([[(0, 0, 0)]])
    args = [lpm.l1, lpm.l2, lpm.l3, np.zeros(1, np.int32), 0, 2, np.zeros(3, np.uint8), np.full(3, -1, np.int16),
            np.zeros(3, np.int32), np.zeros(3, np.uint8), np.zeros(3, np.uint32), np.zeros(3, np.uint32),
            np.zeros(3, np.int64)]
    assert enter_subnets(*args) == 3  # 0.0.0.0/0 holds every source and its destination
    for k in range(7, 13):
        bad = list(args)
        bad[k] = bad[k][:2]
        with pytest.raises(ValueError, match="length"):
            enter_subnets(*bad)
