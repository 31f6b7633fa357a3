"""Plain-Python reference for _kernels/flowhash.pyx and the Maglev kernels (executable specification)."""
M64 = 2**64 - 1
SEED_SALT = 0x9E3779B97F4A7C15


def fmix64(k: int) -> int:
    k &= M64
    k ^= k >> 33
    k = (k * 0xFF51AFD7ED558CCD) & M64
    k ^= k >> 33
    k = (k * 0xC4CEB9FE1A85EC53) & M64
    k ^= k >> 33
    return k


def fmix32(h: int) -> int:
    m = 2**32 - 1
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & m
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & m
    h ^= h >> 16
    return h


def _seed(seed: int) -> int:
    return fmix64((seed & M64) ^ SEED_SALT)


def hash_5tuple(src: int, dst: int, sport: int, dport: int, proto: int, seed: int) -> int:
    x, y = (src << 16) | sport, (dst << 16) | dport
    lo, hi = min(x, y), max(x, y)
    return fmix64(fmix64(_seed(seed) ^ (lo | (proto << 48))) ^ (hi | (5 << 56)))


def hash_3tuple(src: int, dst: int, proto: int, seed: int) -> int:
    lo, hi = min(src, dst), max(src, dst)
    return fmix64(fmix64(_seed(seed) ^ (lo | (hi << 32))) ^ (proto | (3 << 8)))


def hash_2tuple(src: int, dst: int, seed: int) -> int:
    lo, hi = min(src, dst), max(src, dst)
    return fmix64(fmix64(_seed(seed) ^ (lo | (hi << 32))) ^ (2 << 8))


def to32(h64: int) -> int:
    return h64 >> 32


def geneve_udp_sport(h32: int, lo: int = 49152, hi: int = 65535) -> int:
    return lo + ((fmix32(h32) * (hi - lo + 1)) >> 32)


def maglev_slot(h32: int, m: int) -> int:
    return (h32 * m) >> 32


def maglev_populate(offset: list[int], skip: list[int], m: int) -> list[int]:
    """Pseudocode 1 of the Maglev paper with permutation[i][j] = (offset[i] + j * skip[i]) % m."""
    k = len(offset)
    table = [-1] * m
    if k == 0:
        return table
    nxt = [0] * k
    filled = 0
    while True:
        for i in range(k):
            c = (offset[i] + nxt[i] * skip[i]) % m
            while table[c] >= 0:
                nxt[i] += 1
                c = (offset[i] + nxt[i] * skip[i]) % m
            table[c] = i
            nxt[i] += 1
            filled += 1
            if filled == m:
                return table


def maglev_fill(base: list[int], key: list[int], active: list[bool]) -> list[int]:
    """Active base owners keep their slot; other slots go to the active backend with the highest rendezvous score."""
    if not any(active):
        return [-1] * len(base)
    out = []
    for s, b in enumerate(base):
        if active[b]:
            out.append(b)
            continue
        sm = (s * 0x9E3779B97F4A7C15) & M64
        scores = [(fmix64(key[j] ^ sm), -j) for j in range(len(key)) if active[j]]
        out.append(-max(scores)[1])
    return out
