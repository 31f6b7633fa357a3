import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gwlb_fast._kernels.join import hold_replies


def oracle(src_ip, sport, dst_ip, dport, proto, senders, replies, asked, pending, g, held):
    """Plain Python, as the walk's bookkeeping reads: a reply is soon when an earlier sender left from its
    destination; from the first soon reply of a key on, the key's senders (by source) and its rows pending on g
    (by destination) wait."""
    n = len(src_ip)
    src = [(int(src_ip[i]), int(sport[i]), int(proto[i])) for i in range(n)]
    dst = [(int(dst_ip[i]), int(dport[i]), int(proto[i])) for i in range(n)]
    pending, held = [int(x) for x in pending], [bool(x) for x in held]
    sent = [i for i in range(n) if senders[i]]
    soon = [bool(asked[j]) and any(src[s] == dst[r] and s < r for s in sent) for j, r in enumerate(replies)]
    first = {}
    for j, r in enumerate(replies):
        if soon[j]:
            pending[r] = g
            first[dst[r]] = min(first.get(dst[r], r), r)
    for i in range(n):
        if (senders[i] and src[i] in first and i >= first[src[i]]) or (
                pending[i] == g and dst[i] in first and i >= first[dst[i]]):
            held[i] = True
    return soon, pending, held


# a small key space, so that keys repeat and collide in the table
small_ip = st.integers(0, 3).map(lambda x: x * 0x01000001)
packet = st.tuples(small_ip, st.integers(0, 2), small_ip, st.integers(0, 2), st.sampled_from([6, 17]),
                   st.booleans(), st.integers(-1, 2), st.booleans())


@settings(max_examples=200, deadline=None)
@given(st.lists(packet, min_size=1, max_size=50), st.integers(0, 2), st.data())
def test_matches_oracle(rows, g, data):
    a = np.array([r[:5] for r in rows], np.uint64)
    src_ip, sport, dst_ip, dport = (a[:, 0].astype(np.uint32), a[:, 1].astype(np.uint16), a[:, 2].astype(np.uint32),
                                    a[:, 3].astype(np.uint16))
    proto = a[:, 4].astype(np.uint8)
    senders = np.array([r[5] for r in rows], np.uint8)
    pending = np.array([r[6] for r in rows], np.int16)
    held = np.array([r[7] for r in rows], np.uint8)
    n = len(rows)
    replies = np.array(data.draw(st.lists(st.integers(0, n - 1), unique=True, max_size=n)), np.int64)
    asked = np.array(data.draw(st.lists(st.booleans(), min_size=replies.size, max_size=replies.size)), np.uint8)
    want = oracle(src_ip, sport, dst_ip, dport, proto, senders, replies.tolist(), asked, pending, g, held)
    soon = np.full(replies.size, 9, np.uint8)
    got = hold_replies(src_ip, sport, dst_ip, dport, proto, senders, replies, asked, pending, g, soon, held)
    assert soon.astype(bool).tolist() == want[0] and got == sum(want[0])
    assert pending.tolist() == want[1] and held.astype(bool).tolist() == want[2]


def test_full_width_keys_do_not_alias():
    """Keys differing only in the top address bits, the port or the protocol stay apart."""
    ip = np.array([0xFFFFFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF], np.uint32)
    port = np.array([65535, 65535, 65534, 65535, 65535], np.uint16)
    proto = np.array([255, 255, 255, 6, 255], np.uint8)
    senders = np.array([1, 1, 1, 1, 0], np.uint8)  # row 4 replies to row 0's key only
    replies = np.array([4], np.int64)
    pending, held, soon = np.full(5, -1, np.int16), np.zeros(5, np.uint8), np.zeros(1, np.uint8)
    assert hold_replies(ip, port, ip, port, proto, senders, replies, np.ones(1, np.uint8), pending, 1, soon,
                        held) == 1
    assert pending.tolist() == [-1, -1, -1, -1, 1] and held.tolist() == [0, 0, 0, 0, 1]


def test_many_rows():
    """50,000 rows of 500 keys: a soon reply's key holds from its first soon reply on (numpy reference)."""
    rng = np.random.default_rng(1)
    n = 50_000
    ip = rng.integers(0, 100, n).astype(np.uint32)
    port = rng.integers(0, 5, n).astype(np.uint16)
    proto = np.full(n, 6, np.uint8)
    senders = (rng.random(n) < 0.5).astype(np.uint8)
    replies = np.flatnonzero(senders == 0).astype(np.int64)
    pending, held, soon = np.full(n, -1, np.int16), np.zeros(n, np.uint8), np.zeros(replies.size, np.uint8)
    hold_replies(ip, port, ip, port, proto, senders, replies, np.ones(replies.size, np.uint8), pending, 0, soon,
                 held)
    key = (ip.astype(np.int64) << 16) | port
    first_sent = {}
    for i in np.flatnonzero(senders).tolist():
        first_sent.setdefault(int(key[i]), i)
    want_soon = np.array([first_sent.get(int(key[r]), n) < r for r in replies.tolist()])
    assert np.array_equal(soon.astype(bool), want_soon)
    first_soon = {}
    for r in replies[want_soon].tolist():
        first_soon.setdefault(int(key[r]), r)
    want_held = np.array([first_soon.get(int(key[i]), n) <= i and (senders[i] or pending[i] == 0)
                          for i in range(n)])
    assert np.array_equal(held.astype(bool), want_held)


def test_empty_and_readonly_inputs():
    z32, z16, z8 = np.zeros(3, np.uint32), np.zeros(3, np.uint16), np.zeros(3, np.uint8)
    for a in (z32, z16, z8):
        a.flags.writeable = False
    e = np.zeros(0, np.int64)
    pending, held = np.full(3, -1, np.int16), np.zeros(3, np.uint8)
    assert hold_replies(z32, z16, z32, z16, z8, z8, e, np.zeros(0, np.uint8), pending, 0, np.zeros(0, np.uint8),
                        held) == 0
    assert pending.tolist() == [-1] * 3 and held.tolist() == [0] * 3


def test_bad_arguments():
    ip, port, proto = np.zeros(3, np.uint32), np.zeros(3, np.uint16), np.zeros(3, np.uint8)
    rows, one = np.arange(3, dtype=np.int64), np.ones(3, np.uint8)

    def call(**kw):
        args = {"src_ip": ip, "sport": port, "dst_ip": ip, "dport": port, "proto": proto, "senders": one,
                "replies": rows, "asked": one, "pending": np.full(3, -1, np.int16), "g": 0,
                "soon": np.zeros(3, np.uint8), "held": np.zeros(3, np.uint8)}
        args.update(kw)
        return hold_replies(*args.values())

    assert call() == 2  # one key: rows 1 and 2 come after sender 0
    with pytest.raises(ValueError, match="src_ip"):
        call(src_ip=ip.astype(np.int64))
    with pytest.raises(ValueError, match="proto"):
        call(proto=proto[:2])
    with pytest.raises(ValueError, match="replies"):
        call(replies=rows.astype(np.int32))
    with pytest.raises(ValueError, match="soon"):
        call(soon=np.zeros(2, np.uint8))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        call(replies=np.array([0, -1, 2], np.int64))
    with pytest.raises(ValueError, match="g must be"):
        call(g=-1)
    ro = np.full(3, -1, np.int16)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        call(pending=ro)
