"""Flow table lookup-or-insert with a million live flows: the kernel vs a plain-numpy table (sorted packed-key
hashes, np.unique + searchsorted) and a Python dict, on the same batch in the same run."""
import sys
from pathlib import Path

import numpy as np
import pytest

from gwlb_fast._kernels.flowtable import FlowTable

sys.path.insert(0, str(Path(__file__).parent))  # bench/baselines.py (pytest runs with --import-mode=importlib)
from baselines import NumpyFlowTable, dict_lookup_or_insert

LIVE = 1_000_000
N = 65_536
CAPACITY = 1 << 20
HIT_GROUP = f"flowtable lookup_or_insert, {N} packets, 1M live flows"
NEW_GROUP = f"flowtable lookup_or_insert, {N} packets, 1M live flows, 10% new flows"


def _flows(rng, n):
    return [rng.integers(0, 2**32, n, dtype=np.uint32), rng.integers(0, 2**32, n, dtype=np.uint32),
            rng.integers(0, 65536, n, dtype=np.uint16), rng.integers(0, 65536, n, dtype=np.uint16),
            rng.choice(np.array([6, 17], np.uint8), n), rng.integers(1, 4, n, dtype=np.uint64)]


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    flows = _flows(rng, LIVE)
    pick = rng.integers(0, LIVE, N)
    hits = [c[pick] for c in flows]
    fresh = _flows(rng, N)  # 10 % of the second batch are flows the table has never seen
    new_mask = rng.random(N) < 0.1
    mixed = [np.where(new_mask, f, h) for f, h in zip(fresh, hits)]
    ts = np.full(N, 2_000_000_000, np.int64)
    nbytes = rng.integers(60, 1500, N, dtype=np.uint32)
    return flows, hits, mixed, ts, nbytes


@pytest.fixture(scope="module")
def kernel_table(data):
    flows = data[0]
    t = FlowTable(CAPACITY)
    t.lookup_or_insert(*flows, np.full(LIVE, 1_000_000_000, np.int64), np.full(LIVE, 100, np.uint32),
                       np.empty(LIVE, np.int64), np.empty(LIVE, np.uint8))
    assert len(t) == LIVE
    return t


@pytest.fixture(scope="module")
def numpy_table(data):
    t = NumpyFlowTable(4 * CAPACITY)  # no expiry in the baseline: room for the new flows of every round
    t.lookup_or_insert(*data[0], np.full(LIVE, 1_000_000_000, np.int64), np.full(LIVE, 100, np.uint32))
    assert t.live == LIVE
    return t


@pytest.fixture(scope="module")
def dict_table(data):
    table, stats = {}, []
    dict_lookup_or_insert(table, stats, *data[0], np.full(LIVE, 1_000_000_000, np.int64),
                          np.full(LIVE, 100, np.uint32))
    assert len(table) == LIVE
    return table, stats


def _kernel(t, cols, ts, nbytes):
    slot, new = np.empty(N, np.int64), np.empty(N, np.uint8)
    t.lookup_or_insert(*cols, ts, nbytes, slot, new)
    return slot


def _kernel_new(t, cols, ts, nbytes):
    slot = _kernel(t, cols, ts, nbytes)
    t.delete(slot[t.first_seen[slot] == ts[0]])  # keep the table at 1M live flows for the next round
    return slot


@pytest.mark.benchmark(group=HIT_GROUP)
def test_kernel_hits(benchmark, rate, data, kernel_table):
    _, hits, _, ts, nbytes = data
    slot = benchmark(_kernel, kernel_table, hits, ts, nbytes)
    assert (slot >= 0).all() and len(kernel_table) == LIVE
    rate(N)


@pytest.mark.benchmark(group=HIT_GROUP)
def test_numpy_hits(benchmark, rate, data, numpy_table):
    _, hits, _, ts, nbytes = data
    slot = benchmark(numpy_table.lookup_or_insert, *hits, ts, nbytes)
    assert (slot >= 0).all() and numpy_table.live == LIVE and numpy_table.mismatches == 0
    rate(N)


@pytest.mark.benchmark(group=HIT_GROUP)
def test_dict_hits(benchmark, rate, data, dict_table):
    _, hits, _, ts, nbytes = data
    slots = benchmark.pedantic(dict_lookup_or_insert, (*dict_table, *hits, ts, nbytes), rounds=3, iterations=1)
    assert len(slots) == N and len(dict_table[0]) == LIVE
    rate(N)


@pytest.mark.benchmark(group=NEW_GROUP)
def test_kernel_new_flows(benchmark, rate, data, kernel_table):
    _, _, mixed, ts, nbytes = data
    slot = benchmark(_kernel_new, kernel_table, mixed, ts, nbytes)  # includes deleting the new flows again
    assert (slot >= 0).all() and len(kernel_table) == LIVE
    rate(N)


@pytest.mark.benchmark(group=NEW_GROUP)
def test_numpy_new_flows(benchmark, rate, data):
    _, _, mixed, ts, nbytes = data
    flows = data[0]

    def fresh_table():  # inserting grows the sorted arrays: each round starts again from the 1M live flows
        t = NumpyFlowTable(CAPACITY + N)
        t.lookup_or_insert(*flows, np.full(LIVE, 1_000_000_000, np.int64), np.full(LIVE, 100, np.uint32))
        return (t, *mixed, ts, nbytes), {}

    slot = benchmark.pedantic(lambda t, *a: t.lookup_or_insert(*a), setup=fresh_table, rounds=3, iterations=1)
    assert (slot >= 0).all()
    rate(N)


@pytest.mark.benchmark(group=NEW_GROUP)
def test_dict_new_flows(benchmark, rate, data, dict_table):
    _, _, mixed, ts, nbytes = data
    slots = benchmark.pedantic(dict_lookup_or_insert, (*dict_table, *mixed, ts, nbytes), rounds=3, iterations=1)
    assert len(slots) == N  # the dict keeps the new flows: it grows by ~6.5k per round
    rate(N)
