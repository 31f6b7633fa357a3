"""The rows of a batch's columns (``PacketBatch[rows]``): take_columns against numpy's take, column by column, on a
batch with the columns a stage's share carries (21: core, parse, Geneve), 40,000 of 65,536 rows (same run)."""
import numpy as np
import pytest

from gwlb_fast import synth
from gwlb_fast._kernels.columns import take_columns
from gwlb_fast.batch import ALL_COLUMNS


@pytest.fixture(scope="module")
def share():
    b = synth.generate(flows=1000, packets=65_536, seed=0).parse()
    n = len(b)
    for name, dtype in ALL_COLUMNS.items():
        if getattr(b, name) is None:
            setattr(b, name, np.zeros(n, dtype))
    cols = [getattr(b, name) for name in ALL_COLUMNS]
    rows = np.sort(np.random.default_rng(0).choice(n, 40_000, replace=False)).astype(np.int64)
    return cols, rows


@pytest.mark.benchmark(group="columns-take-21x40k")
def test_take_columns(benchmark, rate, share):
    cols, rows = share
    out = benchmark(take_columns, rows, cols)
    assert all(np.array_equal(o, c.take(rows)) for o, c in zip(out, cols))
    rate(rows.shape[0])


@pytest.mark.benchmark(group="columns-take-21x40k")
def test_numpy_take(benchmark, rate, share):
    cols, rows = share
    benchmark(lambda: [c.take(rows) for c in cols])
    rate(rows.shape[0])
