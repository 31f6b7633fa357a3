"""take_columns (the gather behind PacketBatch[rows]) against numpy.take; tally against np.bincount; group_rows
against np.argsort(kind="stable") and np.flatnonzero."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gwlb_fast._kernels.columns import group_rows, put_columns, take_columns, tally

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


# ---------------------------------------------------------------- put_columns (the scatter back)
def _numpy_put(dsts, rows, srcs):
    """The reference: NumPy's assignment, one column at a time, into copies."""
    out = [d.copy() for d in dsts]
    for d, c in zip(out, srcs):
        d[rows] = c
    return out


@given(columns_and_rows(), st.data())
def test_put_equals_numpy_assignment(case, data):
    """Repeated rows, rows in any order, sources of the same or another dtype (NumPy's conversion), or a value
    per row: the columns end as NumPy's assignment leaves them."""
    cols, rows = case
    srcs = []
    for c in cols:
        dt = data.draw(st.sampled_from([c.dtype, c.dtype, np.dtype(np.uint8)]))
        srcs.append(data.draw(hnp.arrays(dt, rows.shape[0])))
    want = _numpy_put(cols, rows, srcs)
    put_columns(rows, cols, srcs)
    for g, w in zip(cols, want):
        assert np.array_equal(g, w, equal_nan=g.dtype.kind == "f")


@given(st.integers(1, 30), st.integers(-40, 70))
def test_put_rows_out_of_range_behave_as_numpy(n, bad):
    rows = np.array([0, bad], np.int64)
    src = np.array([7, 9], np.uint32)
    try:
        (want,) = _numpy_put([np.zeros(n, np.uint32)], rows, [src])
    except IndexError:
        with pytest.raises(IndexError):
            put_columns(rows, [np.zeros(n, np.uint32)], [src])
        return
    got = np.zeros(n, np.uint32)
    put_columns(rows, [got], [src])
    assert np.array_equal(got, want)


def test_put_other_layouts_and_arguments():
    base = np.zeros(40, np.uint16)
    strided = base[::2]
    rows = np.array([3, 1, 1, 0], np.int64)
    put_columns(rows, [strided], [np.array([5, 6, 7, 8], np.uint16)])
    assert strided[[0, 1, 3]].tolist() == [8, 7, 5] and base[1] == 0
    col = np.zeros(5, np.int32)
    put_columns(rows, [col], [np.int32(4)])  # a scalar broadcasts, as in NumPy
    assert col.tolist() == [4, 4, 0, 4, 0]
    frozen = np.zeros(5, np.int32)
    frozen.flags.writeable = False
    with pytest.raises(ValueError):
        put_columns(rows, [frozen], [np.ones(4, np.int32)])
    with pytest.raises(ValueError, match="2 destinations, 1 sources"):
        put_columns(rows, [col, col], [col])


# ---------------------------------------------------------------- tally (per-key packets and bytes)
@st.composite
def tally_case(draw):
    k = draw(st.integers(1, 40))
    n = draw(st.integers(0, 300))
    dt = draw(st.sampled_from([np.int16, np.int32, np.int64]))
    keys = draw(hnp.arrays(dt, n, elements=st.integers(-3, k - 1)))
    nbytes = draw(hnp.arrays(np.uint32, n))
    start_p = draw(hnp.arrays(np.int64, k, elements=st.integers(0, 2**40)))
    start_b = draw(hnp.arrays(np.int64, k, elements=st.integers(0, 2**40)))
    return keys, nbytes, start_p, start_b


@given(tally_case())
def test_tally_equals_bincount(case):
    keys, nbytes, start_p, start_b = case
    k = start_p.shape[0]
    p, b = start_p.copy(), start_b.copy()
    keys_in, nbytes_in = keys.copy(), nbytes.copy()
    got = tally(keys, nbytes, p, b)
    sel = keys >= 0
    want_p = start_p + np.bincount(keys[sel], minlength=k)
    # exact integer sums (np.bincount's weights are float64: exact while a sum stays below 2**53)
    want_b = start_b.copy()
    np.add.at(want_b, keys[sel].astype(np.intp), nbytes[sel].astype(np.int64))
    assert got == int(sel.sum())
    assert np.array_equal(p, want_p) and np.array_equal(b, want_b)
    assert np.array_equal(b - start_b, np.bincount(keys[sel], weights=nbytes[sel], minlength=k).astype(np.int64))
    assert np.array_equal(keys, keys_in) and np.array_equal(nbytes, nbytes_in)  # inputs untouched


@given(st.integers(1, 10), st.integers(0, 20), st.integers(0, 30))
def test_tally_key_out_of_range_leaves_counters(k, extra, row):
    keys = np.zeros(row + 1, np.int64)
    keys[row] = k + extra
    p, b = np.arange(k, dtype=np.int64), np.arange(k, dtype=np.int64) * 7
    with pytest.raises(ValueError, match=f"key {k + extra} at row {row}"):
        tally(keys, np.ones(row + 1, np.uint32), p, b)
    assert np.array_equal(p, np.arange(k)) and np.array_equal(b, np.arange(k) * 7)


def test_tally_bad_arguments_name_them():
    k16, nb, out = np.zeros(4, np.int16), np.zeros(4, np.uint32), np.zeros(2, np.int64)
    cases = [
        ((k16.astype(np.uint16), nb, out, out.copy()), "keys must be"),
        ((k16, nb.astype(np.int32), out, out.copy()), "nbytes must be uint32"),
        ((k16, nb, out.astype(np.int32), out.copy()), "out_packets and out_bytes must be int64"),
        ((k16, nb[:3], out, out.copy()), "nbytes has 3 rows"),
        ((k16, nb, out, np.zeros(3, np.int64)), "out_bytes has 3 counters"),
        ((np.zeros(8, np.int16)[::2], nb, out, out.copy()), "keys must be a 1-D contiguous"),
        ((k16, [0, 0, 0, 0], out, out.copy()), "nbytes must be a 1-D contiguous"),
    ]
    for args, msg in cases:
        with pytest.raises(ValueError, match=msg):
            tally(*args)
    ro = np.zeros(2, np.int64)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writable"):
        tally(k16, nb, ro, out)


# ---------------------------------------------------------------- group_rows (rows by key, stable)
@given(st.integers(0, 30), st.sampled_from([np.int16, np.int32, np.int64]), st.data())
def test_group_rows_equals_flatnonzero_per_key(k, dt, data):
    n = data.draw(st.integers(0, 300)) if k else 0
    keys = data.draw(hnp.arrays(dt, n, elements=st.integers(0, max(k - 1, 0))))
    keys_in = keys.copy()
    order, starts = group_rows(keys, k)
    assert order.dtype == np.int64 and starts.dtype == np.int64 and starts.shape == (k + 1,)
    assert np.array_equal(order, np.argsort(keys, kind="stable"))
    for j in range(k):
        assert np.array_equal(order[starts[j]:starts[j + 1]], np.flatnonzero(keys == j))
    assert starts[0] == 0 and starts[-1] == n
    assert np.array_equal(keys, keys_in)


@given(st.integers(1, 10), st.integers(0, 40), st.sampled_from([-1, 0, 5]))
def test_group_rows_key_outside_raises(k, row, extra):
    keys = np.full(row + 1, k - 1, np.int32)  # valid keys before the bad one
    keys[row] = -1 if extra == -1 else k + extra
    with pytest.raises(ValueError, match=f"key {int(keys[row])} at row {row} is outside"):
        group_rows(keys, k)


def test_group_rows_bad_arguments_name_them():
    for args, msg in [((np.zeros(3, np.uint16), 2), "keys must be int16"),
                      ((np.zeros(6, np.int16)[::2], 2), "keys must be a 1-D contiguous"),
                      (([0, 1], 2), "keys must be a 1-D contiguous"),
                      ((np.zeros(3, np.int16), -1), "k must be >= 0")]:
        with pytest.raises(ValueError, match=msg):
            group_rows(*args)
