# Stream reassembly for content inspection (DESIGN.md section 12; issue 11 item 1).
#
# State is kept per *session direction* ("sd": row index into the state arrays; a session has two, client -> server
# and server -> client). Each sd owns a head buffer of H bytes holding the first H bytes of its stream (App-ID and the
# HTTP / TLS / DNS extraction read it) and a few held ranges: out-of-order TCP segments inside the head are written
# into it at their stream offset and held until the hole before them fills (the bounded reassembly window). Beyond
# the head nothing is stored: in-order bytes are handed to the matcher straight from the packet, and a segment that
# starts past a hole skips the hole (counted as a gap) so inspection goes on without holding memory.
#
# Retransmitted and overlapping bytes are inspected once: bytes below the contiguous point are skipped (counted), and
# inside the head the first copy of a byte wins. UDP: every datagram is its own unit (stream offsets restart at 0);
# the first datagram of each direction fills the head.
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t
from libc.string cimport memcpy

from gwlb_fast._kernels._bytes cimport load_be16, load_be32
from gwlb_fast._kernels._prefetch cimport GWLB_PREFETCH, GWLB_PREFETCH_W

cdef enum:
    IPPROTO_TCP = 6
    IPPROTO_UDP = 17
    TH_FIN = 0x01
    TH_SYN = 0x02
    TH_RST = 0x04

cpdef enum:
    # state flags (flags[sd])
    SF_BASE = 1          # the stream's first byte (isn) is known
    SF_HEAD_FULL = 2     # H contiguous bytes (or the first datagram) are in the head
    SF_GAP = 4           # a gap was skipped: the stream is no longer contiguous from byte 0

    # source of a packet's new bytes (out_src)
    SRC_NONE = 0         # nothing new for inspection
    SRC_PACKET = 1       # bytes [new_lo, new_hi) of the stream; the part >= H read from the packet, below H from head
    SRC_HEAD = 2         # released held bytes: all inside the head

    # counters (ctr[...])
    C_SEGMENTS = 0        # TCP segments with payload seen
    C_BYTES_NEW = 1       # payload bytes made available to inspection in order
    C_BYTES_RETRANS = 2   # bytes skipped because they were inspected already (retransmission / overlap)
    C_SEGMENTS_OOO = 3    # segments that arrived ahead of a hole
    C_BYTES_HELD = 4      # out-of-order bytes held in the head window
    C_HELD_LIMIT = 5      # out-of-order segments not held (held ranges full, or beyond the head): counted, skipped
    C_GAP_BYTES = 6       # bytes of holes skipped past the head (never seen in order)
    C_DATAGRAMS = 7       # UDP datagrams with payload
    C_BAD = 8             # packets whose headers do not locate a payload (skipped)
    N_COUNTERS = 9

    MAX_HELD = 4          # held ranges per sd (pairs in held[sd, 2*k], held[sd, 2*k+1])

cdef enum:
    PF_STATE = 16         # prefetch a packet's headers and its sd's state this many packets ahead
    PF_HEAD = 8           # and, this many ahead, where its bytes go in the head


cdef inline void _held_insert(int64_t* h, int64_t lo, int64_t hi, int64_t* ctr) noexcept nogil:
    """Add [lo, hi) to the held ranges (sorted is not required; merged with any that touch). Full -> counted."""
    cdef int k, free_k = -1
    # merge with overlapping/touching ranges
    for k in range(MAX_HELD):
        if h[2 * k + 1] > h[2 * k]:
            if lo <= h[2 * k + 1] and h[2 * k] <= hi:
                if h[2 * k] < lo:
                    lo = h[2 * k]
                if h[2 * k + 1] > hi:
                    hi = h[2 * k + 1]
                h[2 * k] = 0
                h[2 * k + 1] = 0
                if free_k < 0:
                    free_k = k
        elif free_k < 0:
            free_k = k
    if free_k < 0:
        ctr[C_HELD_LIMIT] += 1
        return
    h[2 * free_k] = lo
    h[2 * free_k + 1] = hi


cdef inline int64_t _held_release(int64_t* h, int64_t nxt) noexcept nogil:
    """Advance the contiguous point through held ranges that start at or before it; drop ranges below it."""
    cdef int k
    cdef bint moved = True
    while moved:
        moved = False
        for k in range(MAX_HELD):
            if h[2 * k + 1] > h[2 * k] and h[2 * k] <= nxt:
                if h[2 * k + 1] > nxt:
                    nxt = h[2 * k + 1]
                    moved = True
                h[2 * k] = 0
                h[2 * k + 1] = 0
    return nxt


cdef inline void _copy_head(uint8_t* head, int64_t hsize, const uint8_t* pay, int64_t seg_lo, int64_t lo,
                            int64_t hi, const int64_t* h) noexcept nogil:
    """Write stream bytes [lo, hi) (clipped to the head) from a segment starting at stream offset seg_lo, except
    the bytes a held range already holds: the first copy of a byte is the one inspected."""
    cdef int k
    cdef int64_t b
    cdef bint any_held = False
    if hi > hsize:
        hi = hsize
    if lo >= hi:
        return
    for k in range(MAX_HELD):
        if h[2 * k + 1] > h[2 * k] and h[2 * k] < hi and lo < h[2 * k + 1]:
            any_held = True
    if not any_held:
        memcpy(head + lo, pay + (lo - seg_lo), <size_t>(hi - lo))
        return
    for b in range(lo, hi):
        for k in range(MAX_HELD):
            if h[2 * k] <= b < h[2 * k + 1]:
                break
        else:
            head[b] = pay[b - seg_lo]


def stream_feed(const uint8_t[::1] data, const int64_t[::1] off, const uint32_t[::1] caplen,
                const int32_t[::1] l3_off, const int32_t[::1] l4_off, const uint8_t[::1] proto,
                const uint8_t[::1] tcp_flags, const int64_t[::1] sd,
                uint32_t[::1] isn, int64_t[::1] nxt, uint8_t[::1] flags, int64_t[:, ::1] held,
                uint8_t[:, ::1] head,
                int64_t[::1] out_lo, int64_t[::1] out_hi, int64_t[::1] out_seg, int64_t[::1] out_pay,
                uint8_t[::1] out_src, int64_t[::1] ctr, uint8_t[::1] seen=None):
    """Reassemble the payload of a batch of packets into their session directions, in batch order.

    Parameters
    ----------
    data, off, caplen : the batch arena and packet locations
    l3_off, l4_off : int32[n]
        IPv4 and L4 header offsets from each packet's start (the parse kernel's columns).
    proto, tcp_flags : uint8[n]
    sd : int64[n]
        Session-direction row of each packet in the state arrays, -1 for packets not inspected.
    isn : uint32[m]
        Sequence number of each sd's stream byte 0 (valid once ``flags & SF_BASE``).
    nxt : int64[m]
        Contiguous length of each sd's stream (stream offset of the next byte expected); for UDP the bytes of the
        first datagram kept in the head.
    flags : uint8[m]
        SF_* bits. A new sd starts with ``flags = 0, nxt = 0, held = 0``.
    held : int64[m, 2 * MAX_HELD]
        Held out-of-order ranges [lo, hi) inside the head.
    head : uint8[m, H]
        The first H bytes of each sd's stream.
    out_lo, out_hi : int64[n] out
        Stream offsets of the bytes this packet makes available to inspection (``out_lo == out_hi``: none). For UDP,
        offsets inside the datagram.
    out_seg : int64[n] out
        Stream offset of the packet's first payload byte (so that stream offset s >= H is at packet byte
        ``out_pay + s - out_seg``).
    out_pay : int64[n] out
        Arena offset of the packet's payload (-1 when it has none).
    out_src : uint8[n] out
        SRC_NONE, SRC_PACKET (bytes below H come from the head, the rest from the packet) or SRC_HEAD (released
        held bytes, all inside the head).
    ctr : int64[N_COUNTERS] in/out
    seen : uint8[m], optional
        Set to 1 for the sd of every packet with ``0 <= sd < m`` (the direction has been seen: flow:established).

    Notes
    -----
    Raises ValueError on inconsistent lengths before the loop; inside it, a packet whose headers do not locate a
    payload inside its captured bytes is skipped and counted (C_BAD), never read out of bounds.
    """
    cdef Py_ssize_t n = off.shape[0], m = isn.shape[0], i
    cdef int64_t hsize = head.shape[1]
    if not (caplen.shape[0] == n and l3_off.shape[0] == n and l4_off.shape[0] == n and proto.shape[0] == n
            and tcp_flags.shape[0] == n and sd.shape[0] == n and out_lo.shape[0] == n and out_hi.shape[0] == n
            and out_seg.shape[0] == n and out_pay.shape[0] == n and out_src.shape[0] == n):
        raise ValueError("stream_feed: per-packet arrays must all have length n = len(off)")
    if not (nxt.shape[0] == m and flags.shape[0] == m and held.shape[0] == m and head.shape[0] == m):
        raise ValueError("stream_feed: state arrays must all have the same length")
    if held.shape[1] != 2 * MAX_HELD:
        raise ValueError(f"stream_feed: held must have {2 * MAX_HELD} columns, got {held.shape[1]}")
    if ctr.shape[0] < N_COUNTERS:
        raise ValueError(f"stream_feed: ctr must have {N_COUNTERS} entries")
    cdef bint mark = seen is not None
    if mark and seen.shape[0] != m:
        raise ValueError(f"stream_feed: seen must have {m} entries, got {seen.shape[0]}")
    cdef int64_t s, o, end, l3, l4, iplen, pay, plen, seg_lo, seg_hi, lo, hi, nx, dlen
    cdef uint32_t seq
    cdef uint8_t fl
    cdef Py_ssize_t datalen = data.shape[0], j
    cdef int64_t sj, oj
    with nogil:
        for i in range(n):
            # packets of many sessions interleave: fetch the next ones' TCP headers and stream state ahead
            j = i + PF_STATE
            if j < n:
                sj = sd[j]
                if 0 <= sj < m:
                    oj = off[j] + l4_off[j]
                    if 0 <= oj < datalen:
                        GWLB_PREFETCH(&data[oj])
                    GWLB_PREFETCH_W(&nxt[sj])
                    GWLB_PREFETCH_W(&isn[sj])
                    GWLB_PREFETCH_W(&flags[sj])
                    GWLB_PREFETCH_W(&held[sj, 0])
            j = i + PF_HEAD
            if j < n:
                sj = sd[j]
                if 0 <= sj < m and nxt[sj] < hsize:
                    GWLB_PREFETCH_W(&head[sj, nxt[sj]])
            out_lo[i] = 0
            out_hi[i] = 0
            out_seg[i] = 0
            out_pay[i] = -1
            out_src[i] = SRC_NONE
            s = sd[i]
            if s < 0 or s >= m:
                continue
            if mark:
                seen[s] = 1
            o = off[i]
            end = o + caplen[i]
            if o < 0 or end > datalen:
                ctr[C_BAD] += 1
                continue
            l3 = l3_off[i]
            l4 = l4_off[i]
            if l3 < 0 or l4 < l3 + 20 or o + l3 + 4 > end:
                ctr[C_BAD] += 1
                continue
            iplen = load_be16(&data[o + l3 + 2])
            if o + l3 + iplen < end:
                end = o + l3 + iplen          # Ethernet padding is not payload
            if proto[i] == IPPROTO_UDP:
                if o + l4 + 8 > end:
                    ctr[C_BAD] += 1
                    continue
                pay = o + l4 + 8
                plen = end - pay
                if plen <= 0:
                    continue
                ctr[C_DATAGRAMS] += 1
                out_pay[i] = pay
                out_seg[i] = 0
                out_lo[i] = 0
                out_hi[i] = plen
                out_src[i] = SRC_PACKET
                if not (flags[s] & SF_HEAD_FULL):
                    # the first datagram of the direction is kept in the head
                    dlen = plen if plen < hsize else hsize
                    memcpy(&head[s, 0], &data[pay], <size_t>dlen)
                    nxt[s] = dlen
                    flags[s] |= SF_HEAD_FULL | SF_BASE
                continue
            if proto[i] != IPPROTO_TCP:
                continue
            if o + l4 + 20 > end:
                ctr[C_BAD] += 1
                continue
            seq = load_be32(&data[o + l4 + 4])
            fl = tcp_flags[i]
            pay = o + l4 + 4 * (data[o + l4 + 12] >> 4)
            if pay < o + l4 + 20 or pay > end:
                ctr[C_BAD] += 1
                continue
            plen = end - pay
            if fl & TH_SYN:
                if not (flags[s] & SF_BASE) or nxt[s] == 0:
                    isn[s] = seq + 1
                    flags[s] |= SF_BASE
                seq = seq + 1                   # data on a SYN starts after the SYN's sequence number
            if plen <= 0:
                continue
            if fl & TH_RST:
                continue                        # an RST's payload is a diagnostic, not stream data
            ctr[C_SEGMENTS] += 1
            if not (flags[s] & SF_BASE):
                # picked up mid-stream: this segment is byte 0
                isn[s] = seq
                flags[s] |= SF_BASE | SF_GAP
            seg_lo = <int64_t><int32_t>(seq - isn[s])   # wraps: a segment before byte 0 is negative
            seg_hi = seg_lo + plen
            out_pay[i] = pay
            out_seg[i] = seg_lo
            nx = nxt[s]
            if seg_hi <= nx:
                ctr[C_BYTES_RETRANS] += plen
                continue
            if seg_lo > nx:
                # ahead of a hole
                ctr[C_SEGMENTS_OOO] += 1
                if seg_lo < hsize:
                    lo = seg_lo
                    hi = seg_hi if seg_hi < hsize else hsize
                    _copy_head(&head[s, 0], hsize, &data[pay], seg_lo, lo, hi, &held[s, 0])
                    _held_insert(&held[s, 0], lo, hi, &ctr[0])
                    ctr[C_BYTES_HELD] += hi - lo
                    if seg_hi > hsize:
                        ctr[C_HELD_LIMIT] += 1
                    continue
                # past the head: skip the hole and go on from this segment
                ctr[C_GAP_BYTES] += seg_lo - nx
                flags[s] |= SF_GAP
                nx = seg_lo
            lo = seg_lo if seg_lo > nx else nx
            if lo > seg_lo:
                ctr[C_BYTES_RETRANS] += lo - seg_lo
            _copy_head(&head[s, 0], hsize, &data[pay], seg_lo, lo, seg_hi, &held[s, 0])
            hi = seg_hi
            if hi <= hsize:
                hi = _held_release(&held[s, 0], hi)
            ctr[C_BYTES_NEW] += hi - lo
            nxt[s] = hi
            out_lo[i] = lo
            out_hi[i] = hi
            out_src[i] = SRC_PACKET if hi <= seg_hi else SRC_HEAD
            if hi >= hsize:
                flags[s] |= SF_HEAD_FULL
    return n
