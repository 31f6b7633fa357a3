"""Reference implementations the benchmarks compare against (plain numpy, pure Python, dpkt loops).

Shared file: each topic appends its own section under a ``# --- <topic> ---`` comment.
"""
import numpy as np

# --- classify ---


def classify_numpy_linear(lo: np.ndarray, hi: np.ndarray, rule: np.ndarray, cols: dict) -> np.ndarray:
    """Linear first match in numpy: one vectorised test per rule box over the packets still unmatched.

    ``lo``/``hi`` uint32[nb, 7] and ``rule`` int32[nb] as ``Policy.boxes()`` returns; ``cols`` holds the uint32/uint16/
    uint8 columns src_ip, dst_ip, sport, dport, proto (and optionally zone_from, zone_to; 255 when absent).
    """
    n = len(cols["src_ip"])
    pts = np.empty((n, 7), dtype=np.uint32)
    for d, name in enumerate(("src_ip", "dst_ip", "sport", "dport", "proto", "zone_from", "zone_to")):
        col = cols.get(name)
        pts[:, d] = 255 if col is None else col
    out = np.full(n, -1, dtype=np.int32)
    remaining = np.arange(n)
    for k in range(len(lo)):
        if remaining.size == 0:
            break
        p = pts[remaining]
        hit = np.all((p >= lo[k]) & (p <= hi[k]), axis=1)
        if hit.any():
            out[remaining[hit]] = rule[k]
            remaining = remaining[~hit]
    return out


def python_boxes(lo: np.ndarray, hi: np.ndarray, rule: np.ndarray) -> list[tuple]:
    """Boxes as flat tuples (s0, s1, d0, d1, sp0, sp1, dp0, dp1, p0, p1, rule) for ``classify_python``."""
    return [(int(a[0]), int(b[0]), int(a[1]), int(b[1]), int(a[2]), int(b[2]), int(a[3]), int(b[3]), int(a[4]),
             int(b[4]), int(r)) for a, b, r in zip(lo, hi, rule)]


def classify_python(boxes: list[tuple], cols: dict) -> list[int]:
    """Pure-Python first match (5-tuple, no zones): per packet, the boxes in order until one contains it."""
    out = []
    for s, d, sp, dp, p in zip(cols["src_ip"].tolist(), cols["dst_ip"].tolist(), cols["sport"].tolist(),
                               cols["dport"].tolist(), cols["proto"].tolist()):
        found = -1
        for s0, s1, d0, d1, sp0, sp1, dp0, dp1, p0, p1, r in boxes:
            if s0 <= s <= s1 and d0 <= d <= d1 and dp0 <= dp <= dp1 and sp0 <= sp <= sp1 and p0 <= p <= p1:
                found = r
                break
        out.append(found)
    return out
