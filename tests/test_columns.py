"""take_columns (the gather behind PacketBatch[rows]) against numpy.take."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gwlb_fast._kernels.columns import take_columns

DTYPES = [np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.uint64, np.int64, np.bool_, np.float64]


@st.composite
def columns_and_rows(draw):
    n = draw(st.integers(0, 60))
    cols = [draw(hnp.arrays(dt, n)) for dt in draw(st.lists(st.sampled_from(DTYPES), max_size=6))]
    rows = draw(hnp.arrays(draw(st.sampled_from([np.int64, np.intp, np.int32, np.uint32])), draw(st.integers(0, 80)),
                           elements=st.integers(0, max(n - 1, 0)) if n else st.just(0)))
    if not n:
        rows = rows[:0]
    return cols, rows


@given(columns_and_rows())
def test_equals_numpy_take(case):
    cols, rows = case
    got = take_columns(rows, cols)
    assert len(got) == len(cols)
    for g, c in zip(got, cols):
        want = np.take(c, rows)
        assert g.dtype == want.dtype and g.shape == want.shape
        assert np.array_equal(g, want, equal_nan=g.dtype.kind == "f")
        assert g.base is None or g.base is not c  # a copy, never a view of the column


@given(st.integers(1, 30), st.integers(-40, 70))
def test_rows_out_of_range_behave_as_numpy(n, bad):
    col = np.arange(n, dtype=np.uint32)
    rows = np.array([0, bad], np.int64)
    try:
        want = np.take(col, rows)
    except IndexError:
        with pytest.raises(IndexError):
            take_columns(rows, [col])
        return
    assert np.array_equal(take_columns(rows, [col])[0], want)  # negative rows count from the end


def test_non_contiguous_and_other_layouts_go_through_numpy():
    base = np.arange(40, dtype=np.uint16)
    strided = base[::2]
    two_d = base.reshape(4, 10)
    rows = np.array([3, 1, 1, 0], np.int64)
    a, b = take_columns(rows, [strided, two_d])
    assert np.array_equal(a, strided.take(rows)) and np.array_equal(b, np.take(two_d, rows))
    assert take_columns(np.array([], np.int64), [base])[0].shape == (0,)
    assert np.array_equal(take_columns([2, 0], [base])[0], [2, 0])  # a list of rows
