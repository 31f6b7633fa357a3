# IPv4 fragment tracking without reassembly: the later fragments of a datagram follow its first fragment.
#
# Only the first fragment (offset 0, MF set) carries the L4 header, so only it can be load-balanced, classified
# and NAT'ed by port. A datagram is keyed by (source, destination, protocol, IP id) (RFC 791 section 2.3); its
# entry in a bounded table remembers which byte ranges of its payload were seen (an overlap is dropped, as Linux
# does since 4.19 and RFC 5722 asks for IPv6) and, once the first fragment went through the path, its fate: the
# status, stage, firewall and delivery of the first fragment, and its addresses after NAT. Every later fragment
# copies that fate and gets the same address rewrite; one that arrives before its first fragment waits in the
# entry (the caller holds its bytes) until the first fragment comes or the entry's hold time runs out.
#
# Table: int64[C, NF] (one row per entry, columns F_*) and int32[C, 2 * MAX_RANGES] (byte ranges [start, end) of
# the payload seen, kept merged and sorted). C = buckets * WAYS; a datagram lives in the WAYS rows of its bucket
# (set-associative: no tombstones, a full bucket reuses its expired rows or refuses with FRAG_TABLE_FULL).
from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t

from gwlb_fast._kernels._bytes cimport csum_update16, load_be16, load_be32, store_be16, store_be32
from gwlb_fast._kernels._hash cimport fmix64
from gwlb_fast._kernels._status cimport (
    ST_BAD_IP_LEN, ST_FRAG_NO_FIRST, ST_FRAG_OVERLAP, ST_FRAG_TABLE_FULL, ST_FRAGMENT, ST_OK,
)

# entry columns, states, packet kinds, release codes and sizes (Python names; the kernels use the _ twins)
F_SRC = 0
F_DST = 1
F_PID = 2          # protocol << 16 | IP id
F_GEN = 3          # bumped each time the row starts a new datagram
F_STATE = 4
F_BORN = 5         # arrival of the datagram's first-seen fragment (the hold window starts here)
F_TOTAL = 6        # payload length once the last fragment (MF clear) was seen, -1 before
F_NRANGE = 7
F_FIRST_ROW = 8    # row of the first fragment in the batch being settled, -1 otherwise
F_FIRST_NS = 9     # arrival of the first fragment
F_STATUS = 10      # fate of the first fragment: status, stage, firewall, delivered, addresses after the path
F_STAGE = 11
F_FW = 12
F_DELIVERED = 13
F_NEW_SRC = 14
F_NEW_DST = 15
F_COMPLETE = 16    # every byte of the datagram seen
NF = 17

E_FREE = 0
E_WAITING = 1      # later fragments seen, the first one not yet
E_FIRST = 2        # the first fragment is in the batch being walked (fate not known yet)
E_FATE = 3         # the first fragment's fate is known

K_NONE = 0         # not a fragment (or not looked at)
K_FIRST = 1        # offset 0, MF set: has the L4 header
K_LATER = 2        # offset > 0: follows its first fragment

R_FOLLOW = -1      # took its first fragment's fate in place
R_HELD = -2        # its first fragment has not come: still held
R_DROPPED = -3     # dropped (FRAG_NO_FIRST)

WAYS = 4
MAX_RANGES = 16

cdef enum:
    _F_SRC = 0
    _F_DST = 1
    _F_PID = 2
    _F_GEN = 3
    _F_STATE = 4
    _F_BORN = 5
    _F_TOTAL = 6
    _F_NRANGE = 7
    _F_FIRST_ROW = 8
    _F_FIRST_NS = 9
    _F_STATUS = 10
    _F_STAGE = 11
    _F_FW = 12
    _F_DELIVERED = 13
    _F_NEW_SRC = 14
    _F_NEW_DST = 15
    _F_COMPLETE = 16
    _NF = 17
    _E_FREE = 0
    _E_WAITING = 1
    _E_FIRST = 2
    _E_FATE = 3
    _K_NONE = 0
    _K_FIRST = 1
    _K_LATER = 2
    _R_FOLLOW = -1
    _R_HELD = -2
    _R_DROPPED = -3
    _WAYS = 4
    _MAX_RANGES = 16


cdef inline Py_ssize_t _bucket(uint32_t src, uint32_t dst, uint32_t pid, Py_ssize_t nb) noexcept nogil:
    cdef uint64_t h = fmix64((<uint64_t>src << 32 | dst) ^ fmix64(<uint64_t>pid ^ 0x9E3779B97F4A7C15ULL))
    return <Py_ssize_t>(h % <uint64_t>nb)


cdef inline int _add_range(int32_t[:, ::1] rng, int64_t[:, ::1] tab, Py_ssize_t e, int32_t s, int32_t t) noexcept nogil:
    """Insert [s, t) into entry e's sorted, merged ranges: 0 done, 1 overlap, 2 no room."""
    cdef Py_ssize_t k, j, nr = tab[e, _F_NRANGE], pos
    for k in range(nr):
        if s < rng[e, 2 * k + 1] and rng[e, 2 * k] < t:
            return 1
    pos = 0
    while pos < nr and rng[e, 2 * pos] < s:
        pos += 1
    # adjacent to the range before and/or after: merge instead of inserting
    if pos > 0 and rng[e, 2 * pos - 1] == s:
        rng[e, 2 * pos - 1] = t
        if pos < nr and rng[e, 2 * pos] == t:
            rng[e, 2 * pos - 1] = rng[e, 2 * pos + 1]
            for j in range(pos, nr - 1):
                rng[e, 2 * j] = rng[e, 2 * j + 2]
                rng[e, 2 * j + 1] = rng[e, 2 * j + 3]
            tab[e, _F_NRANGE] = nr - 1
        return 0
    if pos < nr and rng[e, 2 * pos] == t:
        rng[e, 2 * pos] = s
        return 0
    if nr >= _MAX_RANGES:
        return 2
    j = nr
    while j > pos:
        rng[e, 2 * j] = rng[e, 2 * j - 2]
        rng[e, 2 * j + 1] = rng[e, 2 * j - 1]
        j -= 1
    rng[e, 2 * pos] = s
    rng[e, 2 * pos + 1] = t
    tab[e, _F_NRANGE] = nr + 1
    return 0


def frag_scan(const uint8_t[::1] data, const int64_t[::1] off, const uint32_t[::1] caplen,
              const int32_t[::1] l3_off, uint8_t[::1] status, const uint32_t[::1] src_ip,
              const uint32_t[::1] dst_ip, const uint8_t[::1] proto, const int64_t[::1] ts_ns,
              int64_t[:, ::1] tab, int32_t[:, ::1] ranges, int64_t hold_ns, Py_ssize_t start,
              uint8_t[::1] kind, int64_t[::1] slot, int64_t[::1] gen):
    """Enter every fragment of rows ``start..n-1`` (in order) into the fragment table.

    Parameters
    ----------
    data, off, caplen, l3_off, status, src_ip, dst_ip, proto, ts_ns : the parsed batch (length n)
        Only rows whose status is OK or FRAGMENT are looked at.
    tab : int64[C, NF], ranges : int32[C, 2 * MAX_RANGES]
        The table, updated. C must be a multiple of WAYS.
    hold_ns : int
        How long an entry lives after its first-seen fragment (the hold window of early fragments).
    start : int
        First row to scan (rows before it are held fragments of earlier batches, already entered).
    kind : uint8[n], slot : int64[n], gen : int64[n]
        Output for scanned rows: K_NONE / K_FIRST / K_LATER, the entry row (-1 none) and its generation.

    Notes
    -----
    Status codes set: FRAG_OVERLAP (bytes of the datagram already seen, or beyond its last fragment),
    FRAG_TABLE_FULL (no free row in the bucket, or too many separate ranges), BAD_IP_LEN (offset + length past
    65535). A later fragment keeps FRAGMENT (the caller settles it after the walk); a first fragment keeps OK.
    """
    cdef Py_ssize_t n = off.shape[0], i, e, w, b, free_e, nb, datalen = data.shape[0]
    cdef Py_ssize_t o, l3, ihl
    cdef const uint8_t* ip
    cdef uint16_t fl
    cdef uint32_t pid, sa, da
    cdef int32_t s, t
    cdef int64_t now
    cdef int r
    cdef bint mf
    for name, col in (("caplen", caplen.shape[0]), ("l3_off", l3_off.shape[0]), ("status", status.shape[0]),
                      ("src_ip", src_ip.shape[0]), ("dst_ip", dst_ip.shape[0]), ("proto", proto.shape[0]),
                      ("ts_ns", ts_ns.shape[0]), ("kind", kind.shape[0]), ("slot", slot.shape[0]),
                      ("gen", gen.shape[0])):
        if col != n:
            raise ValueError(f"frag_scan: {name} has length {col}, expected {n}")
    if tab.shape[1] != _NF or ranges.shape[1] != 2 * _MAX_RANGES or ranges.shape[0] != tab.shape[0]:
        raise ValueError("frag_scan: tab must be int64[C, NF] and ranges int32[C, 2 * MAX_RANGES]")
    if tab.shape[0] == 0 or tab.shape[0] % _WAYS:
        raise ValueError(f"frag_scan: the table's rows ({tab.shape[0]}) must be a positive multiple of {_WAYS}")
    if start < 0 or start > n:
        raise ValueError(f"frag_scan: start {start} outside 0..{n}")
    nb = tab.shape[0] // _WAYS
    with nogil:
        for i in range(start, n):
            kind[i] = _K_NONE
            slot[i] = -1
            gen[i] = 0
            if status[i] != ST_OK and status[i] != ST_FRAGMENT:
                continue
            o = off[i]
            l3 = l3_off[i]
            if o < 0 or l3 < 0 or l3 + 20 > <Py_ssize_t>caplen[i] or o + caplen[i] > datalen:
                continue
            ip = &data[o + l3]
            fl = load_be16(ip + 6)
            mf = (fl & 0x2000) != 0
            if (fl & 0x1FFF) == 0 and not mf:
                continue
            ihl = (ip[0] & 0x0F) * 4
            s = (fl & 0x1FFF) * 8
            t = s + <int32_t>load_be16(ip + 2) - <int32_t>ihl
            if t > 65535 - 20:
                status[i] = ST_BAD_IP_LEN
                continue
            kind[i] = _K_LATER if s > 0 else _K_FIRST
            sa = load_be32(ip + 12)
            da = load_be32(ip + 16)
            pid = (<uint32_t>ip[9] << 16) | load_be16(ip + 4)
            now = ts_ns[i]
            b = _bucket(sa, da, pid, nb)
            e = -1
            free_e = -1
            for w in range(_WAYS):
                r = <int>(b * _WAYS + w)
                if tab[r, _F_STATE] != _E_FREE and now - tab[r, _F_BORN] > hold_ns and tab[r, _F_STATE] != _E_FIRST:
                    tab[r, _F_STATE] = _E_FREE  # past its hold window: the row may be reused
                if tab[r, _F_STATE] == _E_FREE:
                    if free_e < 0:
                        free_e = r
                elif tab[r, _F_SRC] == sa and tab[r, _F_DST] == da and tab[r, _F_PID] == pid:
                    e = r
                    break
            if e < 0:
                if free_e < 0:
                    status[i] = ST_FRAG_TABLE_FULL
                    continue
                e = free_e
                tab[e, _F_SRC] = sa
                tab[e, _F_DST] = da
                tab[e, _F_PID] = pid
                tab[e, _F_GEN] += 1
                tab[e, _F_STATE] = _E_WAITING
                tab[e, _F_BORN] = now
                tab[e, _F_TOTAL] = -1
                tab[e, _F_NRANGE] = 0
                tab[e, _F_FIRST_ROW] = -1
                tab[e, _F_COMPLETE] = 0
            # the last fragment fixes the datagram's length: nothing may lie beyond it
            if (not mf and tab[e, _F_TOTAL] >= 0 and tab[e, _F_TOTAL] != t) or (
                    tab[e, _F_TOTAL] >= 0 and t > tab[e, _F_TOTAL]) or (
                    not mf and tab[e, _F_NRANGE] > 0 and ranges[e, 2 * tab[e, _F_NRANGE] - 1] > t):
                status[i] = ST_FRAG_OVERLAP
                kind[i] = _K_NONE
                continue
            r = _add_range(ranges, tab, e, s, t)
            if r != 0:
                status[i] = ST_FRAG_OVERLAP if r == 1 else ST_FRAG_TABLE_FULL
                kind[i] = _K_NONE
                continue
            if not mf:
                tab[e, _F_TOTAL] = t
            if tab[e, _F_TOTAL] >= 0 and tab[e, _F_NRANGE] == 1 and ranges[e, 0] == 0 and \
                    ranges[e, 1] == tab[e, _F_TOTAL]:
                tab[e, _F_COMPLETE] = 1
            if s == 0:
                tab[e, _F_STATE] = _E_FIRST
                tab[e, _F_FIRST_ROW] = i
                tab[e, _F_FIRST_NS] = now
            slot[i] = e
            gen[i] = tab[e, _F_GEN]


cdef inline uint16_t _upd32(uint16_t c, uint32_t old, uint32_t new) noexcept nogil:
    c = csum_update16(c, <uint16_t>(old >> 16), <uint16_t>(new >> 16))
    return csum_update16(c, <uint16_t>(old & 0xFFFF), <uint16_t>(new & 0xFFFF))


def frag_settle(uint8_t[::1] data, const int64_t[::1] off, const uint32_t[::1] caplen,
                const int32_t[::1] l3_off, const uint8_t[::1] kind, const int64_t[::1] slot,
                const int64_t[::1] gen, uint8_t[::1] status, uint8_t[::1] stage, int16_t[::1] fw,
                uint8_t[::1] delivered, uint32_t[::1] src_ip, uint32_t[::1] dst_ip, int64_t[::1] ts_ns,
                int64_t[:, ::1] tab, int64_t now_ns, int64_t hold_ns, uint8_t drop_stage,
                int64_t[::1] release):
    """After the walk: record each first fragment's fate, then give every later fragment its datagram's fate.

    Parameters
    ----------
    data : uint8[::1]
        Arena, written in place (the addresses of delivered later fragments).
    off, caplen, l3_off : the batch's packet locations (length n)
    kind, slot, gen : from ``frag_scan`` (or carried with held rows)
    status, stage, fw, delivered : the walk's outcome per row, in/out
    src_ip, dst_ip : address columns, in/out (a first fragment's are read after NAT; a follower's rewritten)
    ts_ns : in/out: a fragment released by a first fragment that came after it leaves at the first one's time
    tab : int64[C, NF]
    now_ns : int
        Latest arrival in the batch: a held fragment whose entry is older than ``hold_ns`` is dropped.
    drop_stage : int
        Stage code written for FRAG_NO_FIRST drops.
    release : int64[n]
        Output for K_LATER rows: the row of the first fragment that released it when that one came later,
        R_FOLLOW (settled in place, and every other row), R_HELD (still waiting) or R_DROPPED.

    Notes
    -----
    A follower of a dropped first fragment is dropped with the same status and stage; a follower of a delivered
    one is delivered the same way with its addresses set to the first fragment's final ones (the IPv4 header
    checksum updated incrementally, RFC 1624). Status codes set: FRAG_NO_FIRST.
    """
    cdef Py_ssize_t n = off.shape[0], i, e, o, l3, datalen = data.shape[0], cap = tab.shape[0]
    cdef uint8_t* ip
    cdef uint32_t a_old, a_new
    cdef uint16_t c
    for name, col in (("caplen", caplen.shape[0]), ("l3_off", l3_off.shape[0]), ("kind", kind.shape[0]),
                      ("slot", slot.shape[0]), ("gen", gen.shape[0]), ("status", status.shape[0]),
                      ("stage", stage.shape[0]), ("fw", fw.shape[0]), ("delivered", delivered.shape[0]),
                      ("src_ip", src_ip.shape[0]), ("dst_ip", dst_ip.shape[0]), ("ts_ns", ts_ns.shape[0]),
                      ("release", release.shape[0])):
        if col != n:
            raise ValueError(f"frag_settle: {name} has length {col}, expected {n}")
    if tab.shape[1] != _NF:
        raise ValueError("frag_settle: tab must be int64[C, NF]")
    with nogil:
        for i in range(n):
            release[i] = _R_FOLLOW
            e = slot[i]
            if kind[i] != _K_FIRST or e < 0 or e >= cap or tab[e, _F_GEN] != gen[i]:
                continue
            tab[e, _F_STATE] = _E_FATE
            tab[e, _F_STATUS] = status[i]
            tab[e, _F_STAGE] = stage[i]
            tab[e, _F_FW] = fw[i]
            tab[e, _F_DELIVERED] = delivered[i]
            tab[e, _F_NEW_SRC] = src_ip[i]
            tab[e, _F_NEW_DST] = dst_ip[i]
        for i in range(n):
            e = slot[i]
            if kind[i] != _K_LATER or e < 0 or e >= cap:
                continue
            if tab[e, _F_GEN] != gen[i] or tab[e, _F_STATE] == _E_FREE:
                # the entry timed out (and maybe started another datagram) before the first fragment came
                status[i] = ST_FRAG_NO_FIRST
                stage[i] = drop_stage
                release[i] = _R_DROPPED
                continue
            if tab[e, _F_STATE] != _E_FATE:
                if now_ns - tab[e, _F_BORN] > hold_ns:
                    status[i] = ST_FRAG_NO_FIRST
                    stage[i] = drop_stage
                    release[i] = _R_DROPPED
                else:
                    status[i] = ST_FRAGMENT
                    stage[i] = 255
                    release[i] = _R_HELD
                continue
            fw[i] = <int16_t>tab[e, _F_FW]
            if tab[e, _F_FIRST_ROW] > i:
                release[i] = tab[e, _F_FIRST_ROW]
                ts_ns[i] = tab[e, _F_FIRST_NS]
            else:
                release[i] = _R_FOLLOW
            if tab[e, _F_DELIVERED] == 0:
                status[i] = <uint8_t>tab[e, _F_STATUS]
                stage[i] = <uint8_t>tab[e, _F_STAGE]
                delivered[i] = 0
                continue
            status[i] = ST_OK
            stage[i] = 255
            delivered[i] = <uint8_t>tab[e, _F_DELIVERED]
            o = off[i]
            l3 = l3_off[i]
            if o >= 0 and l3 >= 0 and l3 + 20 <= <Py_ssize_t>caplen[i] and o + caplen[i] <= datalen:
                ip = &data[o + l3]
                c = load_be16(ip + 10)
                a_old = load_be32(ip + 12)
                a_new = <uint32_t>tab[e, _F_NEW_SRC]
                if a_old != a_new:
                    c = _upd32(c, a_old, a_new)
                    store_be32(ip + 12, a_new)
                a_old = load_be32(ip + 16)
                a_new = <uint32_t>tab[e, _F_NEW_DST]
                if a_old != a_new:
                    c = _upd32(c, a_old, a_new)
                    store_be32(ip + 16, a_new)
                store_be16(ip + 10, c)
                src_ip[i] = <uint32_t>tab[e, _F_NEW_SRC]
                dst_ip[i] = <uint32_t>tab[e, _F_NEW_DST]
        # the batch's rows are gone after this call; a datagram seen whole and settled needs its entry no more
        for i in range(n):
            e = slot[i]
            if kind[i] != _K_NONE and e >= 0 and e < cap and tab[e, _F_GEN] == gen[i]:
                tab[e, _F_FIRST_ROW] = -1
                if tab[e, _F_COMPLETE] != 0 and tab[e, _F_STATE] == _E_FATE:
                    tab[e, _F_STATE] = _E_FREE


def frag_refs(const uint8_t[::1] kind, const int64_t[::1] slot, const int64_t[::1] gen,
              const int64_t[::1] release, const int64_t[:, ::1] tab, int64_t[:, ::1] refs,
              int64_t[:, ::1] row_refs):
    """After ``frag_settle``: what each first fragment's walk left to count its datagram's later fragments in (the
    caller's columns: session slots, directions, ...) is kept in its entry, and every later fragment that took its
    first fragment's fate gets its datagram's.

    Parameters
    ----------
    kind, slot, gen : from ``frag_scan`` (or carried with held rows), length n
    release : int64[n], from ``frag_settle``
    tab : int64[C, NF]
    refs : int64[C, R], in/out
        Per entry: the row_refs of its first fragment.
    row_refs : int64[n, R], in/out
        In: the rows of first fragments (K_FIRST) hold what their walk left; out: a later fragment (K_LATER) that
        followed its first fragment (release R_FOLLOW or a row) gets its entry's refs, any other later fragment -1
        everywhere. Other rows are left alone.
    """
    cdef Py_ssize_t n = kind.shape[0], i, j, e, cap = tab.shape[0], nr = refs.shape[1]
    for name, col in (("slot", slot.shape[0]), ("gen", gen.shape[0]), ("release", release.shape[0]),
                      ("row_refs", row_refs.shape[0])):
        if col != n:
            raise ValueError(f"frag_refs: {name} has length {col}, expected {n}")
    if tab.shape[1] != _NF or refs.shape[0] != cap or row_refs.shape[1] != nr:
        raise ValueError(f"frag_refs: tab must be int64[C, NF], refs int64[C, R] and row_refs int64[n, R], got "
                         f"{tab.shape[0]}x{tab.shape[1]}, {refs.shape[0]}x{nr} and {row_refs.shape[0]}x"
                         f"{row_refs.shape[1]}")
    with nogil:
        for i in range(n):
            e = slot[i]
            if kind[i] != _K_FIRST or e < 0 or e >= cap or tab[e, _F_GEN] != gen[i]:
                continue
            for j in range(nr):
                refs[e, j] = row_refs[i, j]
        for i in range(n):
            if kind[i] != _K_LATER:
                continue
            e = slot[i]
            if (release[i] == _R_FOLLOW or release[i] >= 0) and e >= 0 and e < cap and tab[e, _F_GEN] == gen[i]:
                for j in range(nr):
                    row_refs[i, j] = refs[e, j]
            else:
                for j in range(nr):
                    row_refs[i, j] = -1
