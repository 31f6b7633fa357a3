import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gwlb_fast._kernels.flowhash import geneve_udp_sport, hash_2tuple, hash_3tuple, hash_5tuple
from gwlb_fast.stages.maglev import Maglev

from .oracles import flowhash as ref

u32 = st.integers(0, 2**32 - 1)
u16 = st.integers(0, 65535)
u8 = st.integers(0, 255)
seeds = st.integers(0, 2**64 - 1)
flows = st.lists(st.tuples(u32, u32, u16, u16, u8), min_size=0, max_size=40)


def cols(fl):
    a = np.array(fl, dtype=np.uint64).reshape(-1, 5)
    return (a[:, 0].astype(np.uint32), a[:, 1].astype(np.uint32), a[:, 2].astype(np.uint16),
            a[:, 3].astype(np.uint16), a[:, 4].astype(np.uint8))


def run(mode, src, dst, sp, dp, pr, seed, dtype=np.uint64):
    out = np.zeros(src.shape[0], dtype)
    if mode == 5:
        return hash_5tuple(src, dst, sp, dp, pr, seed, out)
    if mode == 3:
        return hash_3tuple(src, dst, pr, seed, out)
    return hash_2tuple(src, dst, seed, out)


def oracle(mode, f, seed):
    s, d, sp, dp, p = f
    if mode == 5:
        return ref.hash_5tuple(s, d, sp, dp, p, seed)
    if mode == 3:
        return ref.hash_3tuple(s, d, p, seed)
    return ref.hash_2tuple(s, d, seed)


@pytest.mark.parametrize("mode", [5, 3, 2])
@given(fl=flows, seed=seeds)
def test_matches_oracle(mode, fl, seed):
    c = cols(fl)
    h64 = run(mode, *c, seed)
    h32 = run(mode, *c, seed, np.uint32)
    want = [oracle(mode, f, seed) for f in fl]
    assert h64.tolist() == want
    assert h32.tolist() == [ref.to32(w) for w in want]


@pytest.mark.parametrize("mode", [5, 3, 2])
@given(fl=flows, seed=seeds)
def test_symmetric(mode, fl, seed):
    src, dst, sp, dp, pr = cols(fl)
    fwd = run(mode, src, dst, sp, dp, pr, seed)
    rev = run(mode, dst, src, dp, sp, pr, seed)
    assert np.array_equal(fwd, rev)


def test_fields_and_seed_matter():
    src, dst = np.array([1, 1], np.uint32), np.array([2, 2], np.uint32)
    sp, dp, pr = np.array([10, 11], np.uint16), np.array([20, 20], np.uint16), np.array([6, 6], np.uint8)
    h = run(5, src, dst, sp, dp, pr, 0)
    assert h[0] != h[1]
    assert run(5, src, dst, sp, dp, pr, 1)[0] != h[0]
    assert run(3, src, dst, sp, dp, pr, 0)[0] == run(3, src, dst, sp, dp, pr, 0)[1]  # ports ignored
    assert run(3, src, dst, sp, dp, np.array([6, 17], np.uint8), 0).tolist()[0] != \
        run(3, src, dst, sp, dp, np.array([17, 17], np.uint8), 0).tolist()[0]
    # (ip, port) pairs are ordered as a whole: swapping only the ports is a different flow
    assert run(5, src, dst, dp, sp, pr, 0)[0] != h[0] or run(5, src, dst, dp, sp, pr, 0)[1] != h[1]


@given(h=st.lists(st.integers(0, 2**64 - 1), max_size=40), rng=st.sampled_from([(49152, 65535), (1024, 65535),
                                                                                  (7, 7), (0, 65535)]))
def test_udp_sport_matches_oracle(h, rng):
    lo, hi = rng
    h64 = np.array(h, np.uint64)
    out = geneve_udp_sport(h64, np.zeros(len(h), np.uint16), lo, hi)
    want = [ref.geneve_udp_sport(ref.to32(x), lo, hi) for x in h]
    assert out.tolist() == want
    out32 = geneve_udp_sport((h64 >> np.uint64(32)).astype(np.uint32), np.zeros(len(h), np.uint16), lo, hi)
    assert out32.tolist() == want
    assert all(lo <= p <= hi for p in want)


def test_udp_sport_spread_within_one_firewall():
    # the port must not be correlated with the Maglev slot: flows on one firewall still use the whole range
    rng = np.random.default_rng(5)
    h = rng.integers(0, 2**63, 200_000, dtype=np.uint64)
    fw = Maglev([f"fw-{i}" for i in range(8)]).lookup(h)
    ports = geneve_udp_sport(h, np.empty(h.shape[0], np.uint16))
    sel = ports[fw == 3]
    counts = np.bincount((sel.astype(np.int64) - 49152) // 1024, minlength=16)
    assert counts.min() > 0.8 * sel.shape[0] / 16


def test_edge_cases_and_errors():
    e32, e16, e8 = np.zeros(0, np.uint32), np.zeros(0, np.uint16), np.zeros(0, np.uint8)
    assert hash_5tuple(e32, e32, e16, e16, e8, 0, np.zeros(0, np.uint64)).shape == (0,)
    one = np.array([0x0A000001], np.uint32)
    ro = [np.array([v], dt) for v, dt in [(1, np.uint32), (2, np.uint32), (3, np.uint16), (4, np.uint16), (6, np.uint8)]]
    for a in ro:
        a.flags.writeable = False
    out = hash_5tuple(*ro, 7, np.zeros(1, np.uint64))
    assert out[0] == ref.hash_5tuple(1, 2, 3, 4, 6, 7)
    with pytest.raises(ValueError, match="src_ip"):
        hash_2tuple(one.astype(np.int64), one, 0, np.zeros(1, np.uint64))
    with pytest.raises(ValueError, match="dst_ip"):
        hash_2tuple(one, np.zeros(2, np.uint32), 0, np.zeros(1, np.uint64))
    with pytest.raises(ValueError, match="out"):
        hash_2tuple(one, one, 0, np.zeros(1, np.int64))
    with pytest.raises(ValueError, match="out"):
        hash_2tuple(one, one, 0, np.zeros(2, np.uint32))
    ro_out = np.zeros(1, np.uint64)
    ro_out.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        hash_2tuple(one, one, 0, ro_out)
    with pytest.raises(ValueError, match="sport"):
        hash_5tuple(one, one, np.zeros(1, np.uint32), np.zeros(1, np.uint16), np.zeros(1, np.uint8), 0,
                    np.zeros(1, np.uint64))
    with pytest.raises(ValueError, match="proto"):
        hash_3tuple(one, one, np.zeros(1, np.uint16), 0, np.zeros(1, np.uint64))
    with pytest.raises(ValueError, match="port range"):
        geneve_udp_sport(np.zeros(1, np.uint64), np.zeros(1, np.uint16), 10, 5)
    with pytest.raises(ValueError, match="hash"):
        geneve_udp_sport(np.zeros(1, np.int32), np.zeros(1, np.uint16))


# ----------------------------------------------------------------------------------------------- uniformity
# chi-square critical values at alpha = 0.001 for k-1 degrees of freedom (scipy.stats.chi2.ppf(0.999, k-1))
CHI2_CRIT_0001 = {2: 10.828, 3: 13.816, 8: 24.322, 64: 103.442}


def _random_flows(n, seed):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 2**32, n, dtype=np.uint32), rng.integers(0, 2**32, n, dtype=np.uint32),
            rng.integers(0, 65536, n, dtype=np.uint16), rng.integers(0, 65536, n, dtype=np.uint16),
            rng.choice(np.array([6, 17, 1], np.uint8), n))


def _realistic_flows(n, seed):
    """Few clients in one /24, few servers, ephemeral source ports: the address structure real captures have."""
    rng = np.random.default_rng(seed)
    src = (0x0A010100 + rng.integers(1, 60, n)).astype(np.uint32)
    dst = rng.choice(np.array([0x08080808, 0x01010101, 0xC0A80001, 0x5DB8D822], np.uint32), n)
    sp = rng.integers(32768, 61000, n, dtype=np.uint16)
    dp = rng.choice(np.array([443, 80, 53], np.uint16), n)
    return src, dst, sp, dp, np.where(dp == 53, 17, 6).astype(np.uint8)


def share_stats(n_fw, flows, seed=0):
    h = run(5, *flows, seed)
    fw = Maglev([f"fw-{i}" for i in range(n_fw)]).lookup(h)
    counts = np.bincount(fw, minlength=n_fw)
    even = h.shape[0] / n_fw
    return np.abs(counts / even - 1).max(), float(((counts - even) ** 2 / even).sum())


@pytest.mark.parametrize("n_fw", [2, 3, 8, 64])
def test_uniformity_random_flows(n_fw):
    # 1M flows. For 64 firewalls the binomial standard deviation of a share is 0.8 % of even, so even an ideal
    # hash lands one of 64 shares beyond 2 % about half the time at 1M flows; 4M flows (sd 0.4 %) makes the 2 %
    # bound a real test of the hash rather than of sampling luck. The chi-square test applies at 1M for every N.
    dev, chi2 = share_stats(n_fw, _random_flows(1_000_000, n_fw))
    assert chi2 < CHI2_CRIT_0001[n_fw]
    if n_fw == 64:
        dev, chi2 = share_stats(n_fw, _random_flows(4_000_000, 99))
        assert chi2 < CHI2_CRIT_0001[n_fw]
    assert dev < 0.02


@pytest.mark.parametrize("n_fw", [2, 3, 8, 64])
def test_uniformity_realistic_flows(n_fw):
    dev, chi2 = share_stats(n_fw, _realistic_flows(1_000_000 if n_fw < 64 else 4_000_000, n_fw), seed=3)
    assert chi2 < CHI2_CRIT_0001[n_fw]
    assert dev < 0.02


def test_chi2_critical_values():
    stats = pytest.importorskip("scipy.stats")
    for k, crit in CHI2_CRIT_0001.items():
        assert abs(stats.chi2.ppf(0.999, k - 1) - crit) < 1e-3
