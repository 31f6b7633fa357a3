"""Plain-Python reference of the fragment tracker (``_kernels/frag.pyx``): scan, then settle with given fates.

The table here is unbounded (a dict): use it where the kernel's table cannot fill (few datagrams, a large table).
"""
import struct

from gwlb_fast.status import PktStatus as S

K_NONE, K_FIRST, K_LATER = 0, 1, 2
R_FOLLOW, R_HELD, R_DROPPED = -1, -2, -3
MAX_RANGES = 16


def frag_fields(pkt: bytes, l3: int):
    """(key, start, end, more fragments) of an IPv4 fragment, or None for a whole datagram."""
    fl = struct.unpack_from("!H", pkt, l3 + 6)[0]
    mf = bool(fl & 0x2000)
    if not mf and fl & 0x1FFF == 0:
        return None
    ihl = (pkt[l3] & 15) * 4
    tot = struct.unpack_from("!H", pkt, l3 + 2)[0]
    s = (fl & 0x1FFF) * 8
    key = (pkt[l3 + 12:l3 + 16], pkt[l3 + 16:l3 + 20], pkt[l3 + 9], pkt[l3 + 4:l3 + 6])
    return key, s, s + tot - ihl, mf


class Entry:
    def __init__(self, born):
        self.born = born
        self.ranges = []      # merged, sorted [start, end)
        self.total = None
        self.first_row = None
        self.first_ns = None
        self.fate = None      # (status, stage, fw, delivered, new_src, new_dst)


def scan(packets, l3s, statuses, ts, hold_ns):
    """kind, entry and status per row (statuses: what the parser said)."""
    table, kinds, entries, status = {}, [], [], list(statuses)
    for i, (pkt, l3) in enumerate(zip(packets, l3s)):
        kinds.append(K_NONE)
        entries.append(None)
        if status[i] not in (S.OK, S.FRAGMENT):
            continue
        f = frag_fields(pkt, l3)
        if f is None:
            continue
        key, s, t, mf = f
        if t > 65535 - 20:
            status[i] = S.BAD_IP_LEN
            continue
        e = table.get(key)
        if e is None or ts[i] - e.born > hold_ns:
            e = table[key] = Entry(ts[i])
        last_end = e.ranges[-1][1] if e.ranges else 0
        if (not mf and e.total is not None and e.total != t) or (e.total is not None and t > e.total) or (
                not mf and last_end > t) or any(s < b and a < t for a, b in e.ranges):
            status[i] = S.FRAG_OVERLAP
            continue
        merged = sorted(e.ranges + [[s, t]])
        out = []
        for a, b in merged:
            if out and out[-1][1] == a:
                out[-1][1] = b
            else:
                out.append([a, b])
        if len(out) > MAX_RANGES:
            status[i] = S.FRAG_TABLE_FULL
            continue
        e.ranges = out
        if not mf:
            e.total = t
        kinds[i] = K_FIRST if s == 0 else K_LATER
        entries[i] = e
        if s == 0:
            e.first_row, e.first_ns = i, ts[i]
    return kinds, entries, status


def settle(kinds, entries, fates, ts, now_ns, hold_ns, drop_stage):
    """Per row: (status, stage, delivered, fw, new_src, new_dst, release, ts) for later fragments, given each
    first fragment row's fate ``fates[i] = (status, stage, fw, delivered, new_src, new_dst)``; None for other
    rows (None also for what a held or dropped-unseen fragment does not have)."""
    for i, k in enumerate(kinds):
        if k == K_FIRST:
            entries[i].fate = fates[i]
    out = []
    for i, k in enumerate(kinds):
        if k != K_LATER:
            out.append(None)
            continue
        e = entries[i]
        if e.fate is None:
            if now_ns - e.born > hold_ns:
                out.append((S.FRAG_NO_FIRST, drop_stage, None, None, None, None, R_DROPPED, ts[i]))
            else:
                out.append((S.FRAGMENT, 255, None, None, None, None, R_HELD, ts[i]))
            continue
        status, stage, fw, delivered, src, dst = e.fate
        early = e.first_row > i
        rel = e.first_row if early else R_FOLLOW
        t = e.first_ns if early else ts[i]
        if delivered:
            out.append((S.OK, 255, delivered, fw, src, dst, rel, t))
        else:
            out.append((status, stage, 0, fw, None, None, rel, t))
    return out


def refs(kinds, entries, settled, first_refs):
    """Per later fragment: the refs of its datagram's first fragment (``first_refs[row]``) when it took that one's
    fate (release R_FOLLOW or a row, in ``settled`` from :func:`settle`), else None (every column -1)."""
    out = {}
    for i, k in enumerate(kinds):
        if k != K_LATER:
            continue
        rel = settled[i][6]
        e = entries[i]
        out[i] = first_refs[e.first_row] if rel == R_FOLLOW or rel >= 0 else None
    return out
