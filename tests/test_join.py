import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gwlb_fast._kernels.join import first_row_join


def oracle(bip, bpt, proto, brows, qip, qpt, qrows):
    """Plain Python: smallest build row per key, looked up for each probe row."""
    first = {}
    for r in brows.tolist():
        k = (int(bip[r]), int(bpt[r]), int(proto[r]))
        first[k] = min(first.get(k, r), r)
    return [first.get((int(qip[q]), int(qpt[q]), int(proto[q])), -1) for q in qrows.tolist()]


def join(bip, bpt, proto, brows, qip, qpt, qrows):
    out = np.full(qrows.size, -7, np.int64)
    res = first_row_join(bip, bpt, proto, brows, qip, qpt, qrows, out)
    assert res is out
    return out.tolist()


# a small key space, so that keys repeat and collide in the table
small_ip = st.integers(0, 3).map(lambda x: x * 0x01000001)
columns = st.lists(st.tuples(small_ip, st.integers(0, 2), st.sampled_from([6, 17]), small_ip, st.integers(0, 2)),
                   min_size=1, max_size=60)


@settings(max_examples=150, deadline=None)
@given(columns, st.data())
def test_matches_oracle(rows, data):
    a = np.array(rows, np.uint64).reshape(-1, 5)
    bip, bpt, proto = a[:, 0].astype(np.uint32), a[:, 1].astype(np.uint16), a[:, 2].astype(np.uint8)
    qip, qpt = a[:, 3].astype(np.uint32), a[:, 4].astype(np.uint16)
    n = len(rows)
    idx = st.lists(st.integers(0, n - 1), max_size=2 * n).map(lambda x: np.array(x, np.int64))
    brows, qrows = data.draw(idx), data.draw(idx)
    assert join(bip, bpt, proto, brows, qip, qpt, qrows) == oracle(bip, bpt, proto, brows, qip, qpt, qrows)


def test_full_width_keys_do_not_alias():
    # keys differing only in the top address bits, the port or the protocol stay apart
    ip = np.array([0xFFFFFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF], np.uint32)
    port = np.array([65535, 65535, 65534, 65535], np.uint16)
    proto = np.array([255, 255, 255, 6], np.uint8)
    rows = np.arange(4, dtype=np.int64)
    assert join(ip, port, proto, rows, ip, port, rows) == [0, 1, 2, 3]


def test_many_rows_smallest_wins():
    rng = np.random.default_rng(1)
    n = 50_000
    ip = rng.integers(0, 1000, n).astype(np.uint32)
    port = rng.integers(0, 50, n).astype(np.uint16)
    proto = np.full(n, 6, np.uint8)
    brows = rng.permutation(n).astype(np.int64)  # build order does not matter
    qrows = np.arange(n, dtype=np.int64)
    key = (ip.astype(np.int64) << 16) | port
    _, inv = np.unique(key, return_inverse=True)
    first = np.full(inv.max() + 1, n, np.int64)
    np.minimum.at(first, inv, np.arange(n))
    assert join(ip, port, proto, brows, ip, port, qrows) == first[inv].tolist()


def test_empty_and_readonly():
    z32, z16, z8 = np.zeros(3, np.uint32), np.zeros(3, np.uint16), np.zeros(3, np.uint8)
    for a in (z32, z16, z8):
        a.flags.writeable = False
    e = np.zeros(0, np.int64)
    assert join(z32, z16, z8, e, z32, z16, np.arange(3, dtype=np.int64)) == [-1, -1, -1]
    assert join(z32, z16, z8, np.arange(3, dtype=np.int64), z32, z16, e) == []
    z = np.zeros(0, np.uint32)
    assert join(z, z.astype(np.uint16), z.astype(np.uint8), e, z, z.astype(np.uint16), e) == []


def test_bad_arguments():
    ip, port, proto = np.zeros(3, np.uint32), np.zeros(3, np.uint16), np.zeros(3, np.uint8)
    rows, out = np.arange(3, dtype=np.int64), np.zeros(3, np.int64)
    with pytest.raises(ValueError, match="build_ip"):
        first_row_join(ip.astype(np.int64), port, proto, rows, ip, port, rows, out)
    with pytest.raises(ValueError, match="proto"):
        first_row_join(ip, port, proto[:2], rows, ip, port, rows, out)
    with pytest.raises(ValueError, match="probe_rows"):
        first_row_join(ip, port, proto, rows, ip, port, rows.astype(np.int32), out)
    with pytest.raises(ValueError, match="out"):
        first_row_join(ip, port, proto, rows, ip, port, rows, out[:2])
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        first_row_join(ip, port, proto, np.array([3], np.int64), ip, port, rows, out)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        first_row_join(ip, port, proto, rows, ip, port, np.array([0, -1, 2], np.int64), out)
    ro = out.copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        first_row_join(ip, port, proto, rows, ip, port, rows, ro)
