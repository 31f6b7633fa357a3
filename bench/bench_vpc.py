"""Route lookup: the LPM kernel against a plain-numpy masked-compare loop, on the example table and on 1,000 routes."""
import sys
from pathlib import Path

import numpy as np
import pytest

from gwlb_fast.config import example_topology_text, load_topology
from gwlb_fast.stages.vpc import Lpm, VpcRouter

sys.path.insert(0, str(Path(__file__).parent))  # bench/baselines.py
from baselines import numpy_lpm

N = 65_536


def _random_table(rng, k):
    seen = {(0, 0)}
    out = [(0, 0, 0)]
    while len(out) < k:
        plen = int(rng.choice([8, 12, 16, 20, 22, 24, 24, 24, 28, 32]))
        net = int(rng.integers(0, 2**32)) & ((0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF)
        if (net, plen) not in seen:
            seen.add((net, plen))
            out.append((net, plen, len(out)))
    return out


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(1)
    topo = load_topology(example_topology_text())
    router = VpcRouter(topo.vpcs["business"])
    tid = router.table_id["gwlbe"]
    gw = [(r.net, r.plen, i) for i, r in enumerate(router.routes) if router.route_table_of[i] == tid]
    big = _random_table(rng, 1000)
    # half the destinations inside the table's prefixes, half random
    nets = np.array([p[0] for p in big], np.uint32)
    dst = np.where(rng.random(N) < 0.5, nets[rng.integers(0, len(big), N)] | rng.integers(0, 256, N, dtype=np.uint32),
                   rng.integers(0, 2**32, N, dtype=np.uint32)).astype(np.uint32)
    return router, gw, big, dst


@pytest.mark.parametrize("impl", ["kernel", "numpy"])
def test_lpm_example_table(benchmark, rate, inputs, impl):
    router, gw, _, dst = inputs
    benchmark.group = f"lpm, example gwlbe table (2 routes), {N} lookups"
    if impl == "kernel":
        out = benchmark(router.route_index, "gwlbe", dst)
    else:
        out = benchmark(numpy_lpm, gw, dst)
    assert np.array_equal(out, numpy_lpm(gw, dst))
    rate(N)


@pytest.mark.parametrize("impl", ["kernel", "numpy"])
def test_lpm_1k_routes(benchmark, rate, inputs, impl):
    _, _, big, dst = inputs
    benchmark.group = f"lpm, 1000 routes, {N} lookups"
    if impl == "kernel":
        lpm = Lpm([big])
        out = benchmark(lpm.lookup, dst)
    else:
        out = benchmark.pedantic(numpy_lpm, (big, dst), rounds=3, iterations=1)
    assert np.array_equal(out, Lpm([big]).lookup(dst))
    rate(N)
