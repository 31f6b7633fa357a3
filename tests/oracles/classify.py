"""Linear first-match references for the policy classifier.

``first_match`` is the executable specification: it walks the rules in order and tests each field's range list
directly (no box expansion, no tree).  ``first_match_numpy`` is the same linear scan over the expanded boxes,
vectorised over packets, fast enough to label traces of the 10K-rule ClassBench sets; a test checks it against
``first_match`` on the 1K sets.
"""
import numpy as np

ZONE_UNKNOWN = 255


def _in(ranges, v):
    for lo, hi in ranges:
        if lo <= v <= hi:
            return True
    return False


def first_match(rules, src, dst, sport, dport, proto, zone_from=ZONE_UNKNOWN, zone_to=ZONE_UNKNOWN):
    """Index of the first rule (``gwlb_fast.stages.policy.Rule``) matching one packet, -1 if none."""
    for i, r in enumerate(rules):
        if (_in(r.src, src) and _in(r.dst, dst) and _in(r.sport, sport) and _in(r.dport, dport)
                and _in(r.proto, proto) and _in(r.zone_from, zone_from) and _in(r.zone_to, zone_to)):
            return i
    return -1


def first_match_all(rules, cols):
    """``first_match`` for every packet of a column dict (as ``generate_trace`` returns)."""
    n = len(cols["src_ip"])
    zf = cols.get("zone_from")
    zt = cols.get("zone_to")
    out = np.empty(n, dtype=np.int32)
    for i in range(n):
        out[i] = first_match(
            rules, int(cols["src_ip"][i]), int(cols["dst_ip"][i]), int(cols["sport"][i]), int(cols["dport"][i]),
            int(cols["proto"][i]), ZONE_UNKNOWN if zf is None else int(zf[i]), ZONE_UNKNOWN if zt is None else int(zt[i]))
    return out


def first_match_numpy(lo, hi, rule, cols):
    """Linear first match over priority-ordered boxes (lo/hi uint32[nb, 7], rule int32[nb]), vectorised over packets."""
    n = len(cols["src_ip"])
    pts = np.empty((n, 7), dtype=np.uint32)
    for d, name in enumerate(("src_ip", "dst_ip", "sport", "dport", "proto", "zone_from", "zone_to")):
        col = cols.get(name)
        pts[:, d] = ZONE_UNKNOWN if col is None else col
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
