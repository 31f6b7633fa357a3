"""Synthetic traffic generation: ``synth.generate`` against building the same frames with dpkt (the loop a user
would write, fed the per-packet fields ready-made) and against copying the arena with numpy (the memory bound)."""
import numpy as np
import pytest

from bench.baselines import dpkt_build_frames, synth_rows
from gwlb_fast import synth

N_DPKT = 20_000
N_BIG = 1_000_000


@pytest.fixture(scope="module")
def small():
    batch = synth.generate(N_DPKT // 100, N_DPKT, seed=0)
    rows = synth_rows(batch)
    assert dpkt_build_frames(rows[:2000]) == batch.packets()[:2000]  # same frames, byte for byte
    return batch, rows


@pytest.fixture(scope="module")
def big():
    return synth.generate(N_BIG // 100, N_BIG, seed=0)


@pytest.mark.benchmark(group="synth-20k")
def test_synth_generate_20k(benchmark, rate, small):
    batch, _ = small
    benchmark(synth.generate, N_DPKT // 100, N_DPKT, seed=0)
    rate(N_DPKT, batch.nbytes)


@pytest.mark.benchmark(group="synth-20k")
def test_dpkt_build_20k(benchmark, rate, small):
    batch, rows = small
    benchmark.pedantic(dpkt_build_frames, args=(rows,), rounds=3, iterations=1)
    rate(N_DPKT, batch.nbytes)


@pytest.mark.benchmark(group="synth-1M")
def test_synth_generate_1m(benchmark, rate, big):
    benchmark.pedantic(synth.generate, args=(N_BIG // 100, N_BIG), kwargs={"seed": 0}, rounds=5, iterations=1)
    rate(N_BIG, big.nbytes)


@pytest.mark.benchmark(group="synth-1M")
def test_numpy_copy_arena_1m(benchmark, rate, big):
    benchmark(np.copy, big.data)
    rate(N_BIG, big.nbytes)
