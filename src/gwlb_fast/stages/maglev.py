"""Maglev consistent hashing over a set of named backends (DESIGN.md section 3; Eisenbud et al., NSDI 2016).

``Maglev(names)`` builds the paper's lookup table (prime size, 65537 by default) over every configured backend once.
``table(active)`` derives the table for the backends currently allowed to take new flows: a slot whose Maglev owner
is active keeps it, any other slot goes to the active backend ranked first for that slot by rendezvous hashing. The
table is therefore a pure function of the active set: taking one backend out moves exactly its own slots (about 1/N
of the table) and nothing else, and putting it back restores the original table. See ``_kernels/maglev.pyx``.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from .._kernels.maglev import maglev_fill, maglev_lookup, maglev_populate

DEFAULT_TABLE_SIZE = 65537


def is_prime(m: int) -> bool:
    if m < 2:
        return False
    if m % 2 == 0:
        return m == 2
    f = 3
    while f * f <= m:
        if m % f == 0:
            return False
        f += 2
    return True


def _name_hashes(name: str, seed: int) -> tuple[int, int, int]:
    """Three independent 64-bit hashes of a backend name (offset, skip, rendezvous key)."""
    d = hashlib.blake2b(name.encode(), digest_size=24, key=int(seed & (2**64 - 1)).to_bytes(8, "little")).digest()
    return tuple(int.from_bytes(d[i : i + 8], "little") for i in (0, 8, 16))


class Maglev:
    """Maglev lookup tables for ``names`` (backend index = position in ``names``).

    Parameters
    ----------
    names : sequence of str
        Backend names or ids; unique. At most 32767.
    size : int
        Table size M, a prime (default 65537). Should be well above 100 * len(names) for balance.
    seed : int
        Salts the name hashes.
    """

    def __init__(self, names: Sequence[str], size: int = DEFAULT_TABLE_SIZE, seed: int = 0):
        names = [str(n) for n in names]
        if len(set(names)) != len(names):
            raise ValueError("Maglev: backend names must be unique")
        if not is_prime(size):
            raise ValueError(f"Maglev: table size must be prime, got {size}")
        self.names = names
        self.size = size
        k = len(names)
        hs = [_name_hashes(n, seed) for n in names]
        self.offset = np.array([h[0] % size for h in hs], np.uint32)
        self.skip = np.array([h[1] % (size - 1) + 1 for h in hs], np.uint32)
        self.key = np.array([h[2] for h in hs], np.uint64)
        self.base = maglev_populate(self.offset, self.skip, np.empty(size, np.int16))
        self._cache: dict[bytes, np.ndarray] = {}
        self._all = np.ones(k, np.uint8)

    def __len__(self) -> int:
        return len(self.names)

    def table(self, active=None) -> np.ndarray:
        """int16[M] table for the active backends (bool/uint8 mask of length k; None = all). Read-only, cached."""
        act = self._all if active is None else np.ascontiguousarray(active, dtype=bool).view(np.uint8)
        if act.shape != (len(self.names),):
            raise ValueError(f"active must have length {len(self.names)}, got {act.shape}")
        ck = act.tobytes()
        t = self._cache.get(ck)
        if t is None:
            if len(self.names) == 0:
                t = np.full(self.size, -1, np.int16)
            else:
                t = np.empty(self.size, np.int16)
                maglev_fill(self.base, self.key, act, t)
            t.flags.writeable = False
            if len(self._cache) >= 64:
                self._cache.clear()
            self._cache[ck] = t
        return t

    def lookup(self, hash: np.ndarray, active=None, out: np.ndarray | None = None) -> np.ndarray:
        """Backend index (int16, -1 if none active) for each flow hash (uint32 or uint64)."""
        if out is None:
            out = np.empty(hash.shape[0], np.int16)
        return maglev_lookup(self.table(active), hash, out)
