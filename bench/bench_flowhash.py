"""Symmetric flow hash + Maglev lookup: kernels vs plain numpy vs a pure-Python loop (same run)."""
import sys
from pathlib import Path

import numpy as np
import pytest

from gwlb_fast._kernels.flowhash import geneve_udp_sport, hash_5tuple
from gwlb_fast._kernels.maglev import maglev_fill, maglev_lookup
from gwlb_fast.stages.maglev import Maglev

sys.path.insert(0, str(Path(__file__).parent))  # bench/baselines.py (pytest runs with --import-mode=importlib)
from baselines import hash_5tuple_numpy, hash_lookup_numpy, hash_lookup_python

SIZES = [65_536, 1_000_000]


@pytest.fixture(scope="module")
def table():
    return Maglev([f"fw-{i}" for i in range(8)]).table()


@pytest.fixture(scope="module", params=SIZES)
def flows(request):
    n = request.param
    rng = np.random.default_rng(0)
    return (rng.integers(0, 2**32, n, dtype=np.uint32), rng.integers(0, 2**32, n, dtype=np.uint32),
            rng.integers(0, 65536, n, dtype=np.uint16), rng.integers(0, 65536, n, dtype=np.uint16),
            rng.choice(np.array([6, 17], np.uint8), n))


def _kernel(f, table, h, out):
    hash_5tuple(*f, 0, h)
    return maglev_lookup(table, h, out)


def test_hash_lookup_kernel(benchmark, rate, flows, table):
    n = flows[0].shape[0]
    benchmark.group = f"hash+maglev n={n}"
    h, out = np.empty(n, np.uint64), np.empty(n, np.int16)
    res = benchmark(_kernel, flows, table, h, out)
    assert np.array_equal(h, hash_5tuple_numpy(*flows))
    assert np.array_equal(res, table[(((h >> np.uint64(32)) * np.uint64(table.size)) >> np.uint64(32))])
    rate(n)


def test_hash_lookup_numpy(benchmark, rate, flows, table):
    n = flows[0].shape[0]
    benchmark.group = f"hash+maglev n={n}"
    benchmark(hash_lookup_numpy, *flows, table)
    rate(n)


def test_hash_lookup_python(benchmark, rate, flows, table):
    n = flows[0].shape[0]
    if n > 65_536:
        pytest.skip("pure-Python loop only at the small size")
    benchmark.group = f"hash+maglev n={n}"
    pyflows = list(zip(*(c.tolist() for c in flows)))
    pytable = table.tolist()
    benchmark.pedantic(hash_lookup_python, (pyflows, pytable), rounds=3, iterations=1)
    rate(n)


def test_hash_only_kernel(benchmark, rate, flows):
    n = flows[0].shape[0]
    benchmark.group = f"hash only n={n}"
    h = np.empty(n, np.uint64)
    benchmark(hash_5tuple, *flows, 0, h)
    rate(n)


def test_hash_only_numpy(benchmark, rate, flows):
    n = flows[0].shape[0]
    benchmark.group = f"hash only n={n}"
    benchmark(hash_5tuple_numpy, *flows)
    rate(n)


def test_udp_sport_kernel(benchmark, rate, flows):
    n = flows[0].shape[0]
    benchmark.group = f"geneve udp sport n={n}"
    h = hash_5tuple(*flows, 0, np.empty(n, np.uint64))
    out = np.empty(n, np.uint16)
    benchmark(geneve_udp_sport, h, out)
    rate(n)


def test_udp_sport_numpy(benchmark, rate, flows):
    n = flows[0].shape[0]
    benchmark.group = f"geneve udp sport n={n}"
    h = hash_5tuple(*flows, 0, np.empty(n, np.uint64))
    benchmark(lambda: (np.uint16(49152) + (h % np.uint64(16384)).astype(np.uint16)))
    rate(n)


def test_maglev_fill(benchmark, table):
    benchmark.group = "maglev table for a health change (64 fws, one down)"
    mg = Maglev([f"fw-{i}" for i in range(64)])
    act = np.ones(64, bool)
    act[5] = False
    out = np.empty(mg.size, np.int16)
    benchmark(maglev_fill, mg.base, mg.key, act.view(np.uint8), out)
