"""GWLB stage per batch (flow table + hash + Maglev + health checks) vs a pure-Python dict implementation."""
import sys
from pathlib import Path

import numpy as np
import pytest

from gwlb_fast.batch import PacketBatch
from gwlb_fast.stages.gwlb import Gwlb

sys.path.insert(0, str(Path(__file__).parent))  # bench/baselines.py (pytest runs with --import-mode=importlib)
from baselines import gwlb_python

LIVE = 1_000_000
N = 65_536


def _batch(src, dst, sp, dp, proto, ts):
    n = src.shape[0]
    return PacketBatch(np.zeros(1, np.uint8), np.zeros(n, np.int64), np.zeros(n, np.uint32),
                       wirelen=np.full(n, 500, np.uint32), ts_ns=np.full(n, ts, np.int64),
                       status=np.zeros(n, np.uint8), src_ip=src, dst_ip=dst, sport=sp, dport=dp, proto=proto,
                       endpoint_id=np.full(n, 7, np.uint64))


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(0)
    flows = (rng.integers(0, 2**32, LIVE, dtype=np.uint32), rng.integers(0, 2**32, LIVE, dtype=np.uint32),
             rng.integers(0, 65536, LIVE, dtype=np.uint16), rng.integers(0, 65536, LIVE, dtype=np.uint16),
             np.full(LIVE, 6, np.uint8))
    g = Gwlb([f"fw-{i}" for i in range(8)], flow_capacity=2 * LIVE)
    for s in range(0, LIVE, N):  # a million live flows
        g.process(_batch(*(c[s : s + N] for c in flows), ts=1_000_000_000))
    pick = rng.integers(0, LIVE, N)
    batch = _batch(*(c[pick] for c in flows), ts=2_000_000_000)
    return g, batch, flows, pick


def test_gwlb_process(benchmark, rate, setup):
    g, batch, _, _ = setup
    benchmark.group = f"gwlb stage, {N} packets, 1M live flows"
    benchmark(g.process, batch)
    assert (batch.status == 0).all() and (batch.fw_index >= 0).all()
    rate(N)


def test_gwlb_python_dict(benchmark, rate, setup):
    g, _, flows, pick = setup
    benchmark.group = f"gwlb stage, {N} packets, 1M live flows"
    pyflows = list(zip(*(c[: LIVE // 4].tolist() for c in flows)))
    table = g.maglev.table().tolist()
    state: dict = {}
    gwlb_python(pyflows, table, state)  # a quarter of a million live flows (memory)
    sel = [pyflows[i] for i in (pick % (LIVE // 4)).tolist()]
    benchmark.pedantic(gwlb_python, (sel, table, state), rounds=3, iterations=1)
    rate(N)
