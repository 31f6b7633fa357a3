# Multi-literal matching on Hyperscan (Debian's libhyperscan-dev, linked from C; issue 11 item 5) and the
# verification of signatures from the literal matches (issue 11 item 4).
#
# Stream buffers are scanned in streaming mode: one Hyperscan stream per session direction, so a literal that spans
# two TCP segments (even two batches) is found as a stream engine finds it, with no copy of past bytes. UDP datagrams
# and the extracted fields (http.uri, tls.sni, ...) are each scanned on their own. The match callback is a C function
# appending (row, buffer, literal, end offset, packet) events to preallocated arrays; no Python runs per packet.
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

from gwlb_fast._kernels._prefetch cimport GWLB_PREFETCH

cdef extern from "hs/hs.h" nogil:
    ctypedef int hs_error_t
    ctypedef struct hs_database_t:
        pass
    ctypedef struct hs_scratch_t:
        pass
    ctypedef struct hs_stream_t:
        pass
    ctypedef struct hs_platform_info_t:
        pass
    ctypedef struct hs_compile_error_t:
        char* message
        int expression
    ctypedef int (*match_event_handler)(unsigned int id, unsigned long long frm, unsigned long long to,
                                        unsigned int flags, void* ctx) noexcept nogil
    hs_error_t hs_compile_lit_multi(const char* const* expressions, const unsigned* flags, const unsigned* ids,
                                    const size_t* lens, unsigned elements, unsigned mode,
                                    const hs_platform_info_t* platform, hs_database_t** db,
                                    hs_compile_error_t** error)
    hs_error_t hs_free_compile_error(hs_compile_error_t* error)
    hs_error_t hs_free_database(hs_database_t* db)
    hs_error_t hs_alloc_scratch(const hs_database_t* db, hs_scratch_t** scratch)
    hs_error_t hs_free_scratch(hs_scratch_t* scratch)
    hs_error_t hs_open_stream(const hs_database_t* db, unsigned int flags, hs_stream_t** stream)
    hs_error_t hs_close_stream(hs_stream_t* id, hs_scratch_t* scratch, match_event_handler onEvent, void* ctx)
    hs_error_t hs_reset_stream(hs_stream_t* id, unsigned int flags, hs_scratch_t* scratch,
                               match_event_handler onEvent, void* ctx)
    hs_error_t hs_scan_stream(hs_stream_t* id, const char* data, unsigned int length, unsigned int flags,
                              hs_scratch_t* scratch, match_event_handler onEvent, void* ctx)
    hs_error_t hs_scan(const hs_database_t* db, const char* data, unsigned int length, unsigned int flags,
                       hs_scratch_t* scratch, match_event_handler onEvent, void* ctx)
    hs_error_t hs_stream_size(const hs_database_t* db, size_t* size)
    hs_error_t hs_database_size(const hs_database_t* db, size_t* size)
    int HS_SUCCESS
    unsigned HS_FLAG_CASELESS
    unsigned HS_MODE_STREAM
    unsigned HS_MODE_BLOCK

cdef enum:
    PF_SCAN = 4           # prefetch the bytes and the stream state of the packet this many ahead
    RUN_BYTES = 65535     # bytes of one session direction's consecutive segments scanned in one call (one packet's most)

cpdef enum:
    # buffers an event comes from (ev_buf); fields follow _kernels.appid's F_* order, shifted by BUF_FIELD0
    BUF_TO_SERVER = 0
    BUF_TO_CLIENT = 1
    BUF_FIELD0 = 2
    N_BUFFERS = 8
    RING = 32             # recent literal matches kept per (session, buffer) for multi-content signatures
    # header flags of a signature (s_flags)
    SIG_TO_SERVER = 1
    SIG_TO_CLIENT = 2
    SIG_ESTABLISHED = 4
    SIG_BIDIR = 8

ctypedef struct _Ctx:
    int64_t* row
    uint8_t* buf
    int32_t* pid
    int64_t* end
    int64_t* pkt
    int64_t n
    int64_t cap
    int64_t dropped
    int64_t cur_row
    int64_t cur_base
    int64_t cur_pkt
    uint8_t cur_buf


cdef inline int _ctx_over(_Ctx* ctx, int64_t[::1] ev_row, uint8_t[::1] ev_buf, int32_t[::1] ev_pid,
                           int64_t[::1] ev_end, int64_t[::1] ev_pkt) except -1:
    """Point a match context at empty event arrays, which must have one length (the context's capacity)."""
    cdef Py_ssize_t cap = ev_row.shape[0]
    if not (ev_buf.shape[0] == cap and ev_pid.shape[0] == cap and ev_end.shape[0] == cap
            and ev_pkt.shape[0] == cap):
        raise ValueError("event arrays must have the same length")
    ctx.row = &ev_row[0] if cap else NULL
    ctx.buf = &ev_buf[0] if cap else NULL
    ctx.pid = &ev_pid[0] if cap else NULL
    ctx.end = &ev_end[0] if cap else NULL
    ctx.pkt = &ev_pkt[0] if cap else NULL
    ctx.n = 0
    ctx.cap = cap
    ctx.dropped = 0
    return 0


cdef int _on_match(unsigned int id, unsigned long long frm, unsigned long long to, unsigned int flags,
                   void* ctx) noexcept nogil:
    cdef _Ctx* c = <_Ctx*>ctx
    if c.n >= c.cap:
        c.dropped += 1
        return 0                       # never stop a stream: the event is lost and counted
    c.row[c.n] = c.cur_row
    c.buf[c.n] = c.cur_buf
    c.pid[c.n] = <int32_t>id
    c.end[c.n] = c.cur_base + <int64_t>to
    c.pkt[c.n] = c.cur_pkt
    c.n += 1
    return 0


cdef class Literals:
    """A compiled set of literals (Hyperscan literal API: bytes are matched exactly, NULs included) with the
    scratch space and, in streaming mode, one stream per session direction.

    Parameters
    ----------
    patterns : list of bytes
    caseless : list of bool
    n_streams : int
        Session directions (0 for a block-mode set, used for datagrams' fields).
    """
    cdef hs_database_t* db
    cdef hs_scratch_t* scratch
    cdef hs_stream_t** streams
    cdef readonly Py_ssize_t n_streams
    cdef readonly Py_ssize_t n_patterns
    cdef readonly bint streaming
    cdef int64_t[::1] base      # stream offset of each stream's byte 0 (after a reset)
    cdef int64_t[::1] scanned   # stream offset of the next byte to scan
    cdef public int64_t dropped_events
    cdef public int64_t resets

    def __cinit__(self, patterns, caseless, Py_ssize_t n_streams=0):
        self.db = NULL
        self.scratch = NULL
        self.streams = NULL
        cdef Py_ssize_t k = len(patterns), i
        if k == 0:
            raise ValueError("Literals: no patterns")
        self.n_patterns = k
        self.streaming = n_streams > 0
        self.n_streams = n_streams
        cdef const char** ex = <const char**>malloc(k * sizeof(char*))
        cdef unsigned* fl = <unsigned*>malloc(k * sizeof(unsigned))
        cdef unsigned* ids = <unsigned*>malloc(k * sizeof(unsigned))
        cdef size_t* lens = <size_t*>malloc(k * sizeof(size_t))
        cdef hs_compile_error_t* err = NULL
        cdef hs_error_t rc
        keep = [bytes(p) for p in patterns]
        try:
            for i in range(k):
                if len(keep[i]) == 0:
                    raise ValueError(f"Literals: pattern {i} is empty")
                ex[i] = <const char*>keep[i]
                lens[i] = len(keep[i])
                ids[i] = <unsigned>i
                fl[i] = HS_FLAG_CASELESS if caseless[i] else 0
            rc = hs_compile_lit_multi(ex, fl, ids, lens, <unsigned>k,
                                      HS_MODE_STREAM if self.streaming else HS_MODE_BLOCK, NULL, &self.db, &err)
            if rc != HS_SUCCESS:
                msg = err.message.decode() if err != NULL and err.message != NULL else f"error {rc}"
                which = err.expression if err != NULL else -1
                if err != NULL:
                    hs_free_compile_error(err)
                raise ValueError(f"Literals: Hyperscan cannot compile pattern {which}: {msg}")
        finally:
            free(ex)
            free(fl)
            free(ids)
            free(lens)
        if hs_alloc_scratch(self.db, &self.scratch) != HS_SUCCESS:
            raise MemoryError("Literals: hs_alloc_scratch failed")
        if self.streaming:
            self.streams = <hs_stream_t**>malloc(n_streams * sizeof(hs_stream_t*))
            if self.streams == NULL:
                raise MemoryError("Literals: no memory for the streams")
            for i in range(n_streams):
                self.streams[i] = NULL
            for i in range(n_streams):
                if hs_open_stream(self.db, 0, &self.streams[i]) != HS_SUCCESS:
                    raise MemoryError("Literals: hs_open_stream failed")
        import numpy as np
        self.base = np.zeros(max(n_streams, 1), np.int64)
        self.scanned = np.zeros(max(n_streams, 1), np.int64)
        self.dropped_events = 0
        self.resets = 0

    def __dealloc__(self):
        cdef Py_ssize_t i
        if self.streams != NULL:
            for i in range(self.n_streams):
                if self.streams[i] != NULL:
                    hs_close_stream(self.streams[i], NULL, NULL, NULL)
            free(self.streams)
        if self.scratch != NULL:
            hs_free_scratch(self.scratch)
        if self.db != NULL:
            hs_free_database(self.db)

    @property
    def database_bytes(self) -> int:
        cdef size_t s = 0
        hs_database_size(self.db, &s)
        return s

    @property
    def stream_bytes(self) -> int:
        cdef size_t s = 0
        if self.streaming:
            hs_stream_size(self.db, &s)
        return s

    def reset(self, const int64_t[::1] sds):
        """Start the given session directions anew (a new session took their row)."""
        cdef Py_ssize_t i, s
        if not self.streaming:
            return
        with nogil:
            for i in range(sds.shape[0]):
                s = sds[i]
                if 0 <= s < self.n_streams:
                    hs_reset_stream(self.streams[s], 0, NULL, NULL, NULL)
                    self.base[s] = 0
                    self.scanned[s] = 0

    def scan_streams(self, const uint8_t[::1] data, const int64_t[::1] sd, const int64_t[::1] lo,
                     const int64_t[::1] hi, const int64_t[::1] seg, const int64_t[::1] pay,
                     const uint8_t[::1] proto, const uint8_t[:, ::1] head,
                     int64_t[::1] ev_row, uint8_t[::1] ev_buf, int32_t[::1] ev_pid, int64_t[::1] ev_end,
                     int64_t[::1] ev_pkt, Py_ssize_t start=0, uint8_t[::1] taken=None):
        """Scan the bytes each packet made available (the stream kernel's outputs) in packet order.

        Stream offsets >= H are read from the packet, those below H from the head (where the first copy of each
        byte is). A TCP range that does not continue what was scanned (a gap was skipped) restarts the direction's
        Hyperscan stream there; each UDP datagram is scanned on its own. Events get ``row = sd // 2`` and
        ``buf = sd % 2`` (BUF_TO_SERVER / BUF_TO_CLIENT); UDP datagrams add a marker event (pid -1) before their
        matches, so that the verification starts their buffer afresh.

        Returns (events written, next packet): the pass stops early, before a packet, when fewer than 65,536 event
        slots (half the arrays when they are smaller) are left; call again from there after consuming the events.

        ``taken`` (uint8[n], zeros for a new batch, the same array on every call for the batch): the TCP segments of
        one direction that continue each other in the batch are scanned in one call (their bytes copied one after
        the other, at most RUN_BYTES), at the place of the first of them; each match is given the packet its last
        byte is in, so the events are those of the packet by packet scan, each direction's in the same order
        (directions interleave differently). The packets scanned are marked in ``taken``.
        """
        if not self.streaming:
            raise ValueError("scan_streams needs a streaming Literals (n_streams > 0)")
        cdef Py_ssize_t n = sd.shape[0], i = start, cap = ev_row.shape[0]
        cdef int64_t hsize = head.shape[1], s, a, b, cut
        cdef Py_ssize_t datalen = data.shape[0], m = head.shape[0]
        if not (lo.shape[0] == n and hi.shape[0] == n and seg.shape[0] == n and pay.shape[0] == n
                and proto.shape[0] == n):
            raise ValueError("scan_streams: per-packet arrays must have the same length")
        if m > self.n_streams:
            raise ValueError("scan_streams: more head rows than streams")
        cdef _Ctx ctx
        _ctx_over(&ctx, ev_row, ev_buf, ev_pid, ev_end, ev_pkt)
        cdef int64_t room = 65536 if cap >= 131072 else cap // 2
        cdef Py_ssize_t j
        cdef int64_t sj, aj
        cdef bint runs = taken is not None
        if runs and taken.shape[0] != n:
            raise ValueError("scan_streams: taken must have one entry per packet")
        # runs: the next packet of the same direction (-1: none), the last one seen per direction, and a run's
        # bytes with the stream end and packet of each of its segments
        cdef int64_t* next_pkt = NULL
        cdef int64_t* last = NULL
        cdef int64_t* run_end = NULL
        cdef int64_t* run_pkt = NULL
        cdef uint8_t* run_buf = NULL
        cdef Py_ssize_t k, nr, lo_k, hi_k, mid
        cdef int64_t total, p, e
        if runs and n > start:
            next_pkt = <int64_t*>malloc((n - start) * sizeof(int64_t))
            last = <int64_t*>malloc(m * sizeof(int64_t))
            nr = n - start if n - start < RUN_BYTES else RUN_BYTES
            run_end = <int64_t*>malloc(nr * sizeof(int64_t))
            run_pkt = <int64_t*>malloc(nr * sizeof(int64_t))
            run_buf = <uint8_t*>malloc(RUN_BYTES)
            if next_pkt == NULL or last == NULL or run_end == NULL or run_pkt == NULL or run_buf == NULL:
                free(next_pkt)
                free(last)
                free(run_end)
                free(run_pkt)
                free(run_buf)
                raise MemoryError("scan_streams: no memory for the runs")
        with nogil:
            if runs and n > start:
                for k in range(m):
                    last[k] = -1
                for k in range(start, n):
                    next_pkt[k - start] = -1
                    s = sd[k]
                    if taken[k] or s < 0 or s >= m or hi[k] <= lo[k] or pay[k] < 0:
                        continue
                    if last[s] >= 0:
                        next_pkt[last[s] - start] = k
                    last[s] = k
            while i < n:
                if ctx.cap - ctx.n < room and i > start:
                    break
                if runs and taken[i]:
                    i += 1
                    continue
                # sessions interleave: fetch the first bytes and the stream state of a packet a few ahead
                j = i + PF_SCAN
                if j < n:
                    sj = sd[j]
                    aj = lo[j]
                    if 0 <= sj < m and hi[j] > aj and pay[j] >= 0:
                        GWLB_PREFETCH(self.streams[sj])
                        if 0 <= aj < hsize and proto[j] != 17:
                            GWLB_PREFETCH(&head[sj, aj])
                        elif 0 <= pay[j] + (aj - seg[j]) < datalen:
                            GWLB_PREFETCH(&data[pay[j] + (aj - seg[j])])
                s = sd[i]
                a = lo[i]
                b = hi[i]
                if s < 0 or s >= m or b <= a or pay[i] < 0:
                    i += 1
                    continue
                ctx.cur_row = s >> 1
                ctx.cur_buf = <uint8_t>(s & 1)
                ctx.cur_pkt = i
                if proto[i] == 17:
                    if pay[i] + b > datalen:
                        i += 1
                        continue
                    hs_reset_stream(self.streams[s], 0, NULL, NULL, NULL)
                    if ctx.n < ctx.cap:
                        ctx.row[ctx.n] = ctx.cur_row
                        ctx.buf[ctx.n] = ctx.cur_buf
                        ctx.pid[ctx.n] = -1
                        ctx.end[ctx.n] = 0
                        ctx.pkt[ctx.n] = i
                        ctx.n += 1
                    ctx.cur_base = 0
                    hs_scan_stream(self.streams[s], <const char*>&data[pay[i]], <unsigned>b, 0, self.scratch,
                                   _on_match, &ctx)
                    hs_reset_stream(self.streams[s], 0, NULL, NULL, NULL)
                    self.scanned[s] = 0
                    i += 1
                    continue
                if a != self.scanned[s]:
                    # a skipped hole: matches must not span it
                    hs_reset_stream(self.streams[s], 0, NULL, NULL, NULL)
                    self.base[s] = a
                    self.resets += 1
                ctx.cur_base = self.base[s]
                if runs:
                    taken[i] = 1
                    # the segments of this direction that continue this one (TCP, their bytes where the packet
                    # path reads them), gathered into one buffer
                    nr = 0
                    total = 0
                    j = i
                    while j >= 0 and proto[j] != 17 and total + (hi[j] - lo[j]) <= RUN_BYTES \
                            and (nr == 0 or lo[j] == run_end[nr - 1]) \
                            and (hi[j] <= hsize or (lo[j] >= seg[j] and pay[j] + (lo[j] - seg[j]) >= 0
                                                    and pay[j] + (hi[j] - seg[j]) <= datalen)):
                        run_end[nr] = hi[j]
                        run_pkt[nr] = j
                        nr += 1
                        total += hi[j] - lo[j]
                        j = next_pkt[j - start]
                    if nr > 1:
                        total = 0
                        for k in range(nr):
                            p = run_pkt[k]
                            a = lo[p]
                            b = hi[p]
                            if a < hsize:
                                cut = b if b < hsize else hsize
                                memcpy(run_buf + total, &head[s, a], <size_t>(cut - a))
                                total += cut - a
                                a = cut
                            if a < b:
                                memcpy(run_buf + total, &data[pay[p] + (a - seg[p])], <size_t>(b - a))
                                total += b - a
                            taken[p] = 1
                        k = ctx.n
                        hs_scan_stream(self.streams[s], <const char*>run_buf, <unsigned>total, 0, self.scratch,
                                       _on_match, &ctx)
                        # each event's packet: the first of the run whose bytes end at or past the match's end
                        while k < ctx.n:
                            e = ctx.end[k]
                            lo_k = 0
                            hi_k = nr - 1
                            while lo_k < hi_k:
                                mid = (lo_k + hi_k) >> 1
                                if run_end[mid] >= e:
                                    hi_k = mid
                                else:
                                    lo_k = mid + 1
                            ctx.pkt[k] = run_pkt[lo_k]
                            k += 1
                        self.scanned[s] = run_end[nr - 1]
                        i += 1
                        continue
                if a < hsize:
                    cut = b if b < hsize else hsize
                    hs_scan_stream(self.streams[s], <const char*>&head[s, a], <unsigned>(cut - a), 0,
                                   self.scratch, _on_match, &ctx)
                    a = cut
                if a < b:
                    if pay[i] + (a - seg[i]) < 0 or pay[i] + (b - seg[i]) > datalen or a < seg[i]:
                        i += 1
                        continue
                    hs_scan_stream(self.streams[s], <const char*>&data[pay[i] + (a - seg[i])], <unsigned>(b - a),
                                   0, self.scratch, _on_match, &ctx)
                self.scanned[s] = b
                i += 1
        free(next_pkt)
        free(last)
        free(run_end)
        free(run_pkt)
        free(run_buf)
        self.dropped_events += ctx.dropped
        return ctx.n, i

    def scan_fields(self, const int64_t[::1] rows, const uint8_t[:, ::1] fields, const int32_t[:, ::1] flen,
                    int64_t[::1] ev_row, uint8_t[::1] ev_buf, int32_t[::1] ev_pid, int64_t[::1] ev_end,
                    int64_t[::1] ev_pkt):
        """Scan the extracted fields of ``rows`` (block mode): events with ``buf = BUF_FIELD0 + field``."""
        if self.streaming:
            raise ValueError("scan_fields needs a block-mode Literals (n_streams = 0)")
        cdef Py_ssize_t k = rows.shape[0], j, f, nf = flen.shape[1], cap = ev_row.shape[0]
        if nf == 0 or fields.shape[0] != flen.shape[0] or fields.shape[1] % nf:
            raise ValueError(f"scan_fields: fields ({fields.shape[0]} x {fields.shape[1]}) must hold flen's "
                             f"{flen.shape[0]} rows of {nf} equal-width fields")
        cdef int64_t r, fw = fields.shape[1] // nf, ln
        cdef _Ctx ctx
        _ctx_over(&ctx, ev_row, ev_buf, ev_pid, ev_end, ev_pkt)
        ctx.cur_base = 0
        ctx.cur_pkt = -1
        with nogil:
            for j in range(k):
                r = rows[j]
                if r < 0 or r >= flen.shape[0]:
                    continue
                ctx.cur_row = r
                for f in range(nf):
                    ln = flen[r, f]
                    if ln <= 0:
                        continue
                    if ln > fw:
                        ln = fw
                    ctx.cur_buf = <uint8_t>(BUF_FIELD0 + f)
                    hs_scan(self.db, <const char*>&fields[r, f * fw], <unsigned>ln, 0, self.scratch, _on_match,
                            &ctx)
        self.dropped_events += ctx.dropped
        return ctx.n


# ---------------------------------------------------------------------------------------------------------------
# verification


cdef inline bint _in_ranges(const uint32_t* lo, const uint32_t* hi, int64_t a, int64_t b, uint32_t v) noexcept nogil:
    cdef int64_t i
    for i in range(a, b):
        if lo[i] <= v <= hi[i]:
            return True
    return False


ctypedef struct _Sigs:
    const int32_t* c_pid
    const int32_t* c_len
    const int32_t* c_offset
    const int32_t* c_depth
    const int32_t* c_distance
    const int32_t* c_within
    const uint8_t* c_rel
    const int32_t* r_pid
    const int64_t* r_end
    int64_t r_base
    int64_t r_count


cdef bint _assign(_Sigs* S, int64_t first, int64_t n, int64_t j, int64_t fixed_c, int64_t fixed_end,
                  int64_t prev_end) noexcept nogil:
    """Can contents j.. of the signature (contents first..first+n) be placed on recent matches of the buffer, with
    content fixed_c on the match ending at fixed_end? prev_end: end of content j - 1's placement."""
    cdef int64_t c, k, e, st, cnt, idx
    if j == n:
        return True
    c = first + j
    cnt = S.r_count if S.r_count < RING else RING
    for k in range(cnt + 1):
        if c == fixed_c:
            if k > 0:
                return False
            e = fixed_end
        else:
            if k == cnt:
                break
            idx = S.r_base + ((S.r_count - 1 - k) % RING)
            if S.r_pid[idx] != S.c_pid[c]:
                continue
            e = S.r_end[idx]
        st = e - S.c_len[c]
        if st < S.c_offset[c]:
            continue
        if S.c_depth[c] >= 0 and e > S.c_offset[c] + S.c_depth[c]:
            continue
        if S.c_rel[c] and j > 0:
            if st < prev_end + S.c_distance[c]:
                continue
            if S.c_within[c] >= 0 and e > prev_end + S.c_distance[c] + S.c_within[c]:
                continue
        if _assign(S, first, n, j + 1, fixed_c, fixed_end, e):
            return True
    return False


def verify(const int64_t[::1] ev_row, const uint8_t[::1] ev_buf, const int32_t[::1] ev_pid,
           const int64_t[::1] ev_end, Py_ssize_t n_events,
           const int64_t[::1] p_start, const int32_t[::1] p_users,
           const int32_t[::1] c_sig, const uint8_t[::1] c_buf, const int32_t[::1] c_pid, const int32_t[::1] c_len,
           const int32_t[::1] c_offset, const int32_t[::1] c_depth, const int32_t[::1] c_distance,
           const int32_t[::1] c_within, const uint8_t[::1] c_rel,
           const int32_t[::1] s_first, const int32_t[::1] s_n, const uint8_t[::1] s_proto,
           const int32_t[::1] s_app, const uint8_t[::1] s_flags,
           const int64_t[::1] s_src_a, const uint32_t[::1] sa_lo, const uint32_t[::1] sa_hi,
           const int64_t[::1] s_dst_a, const uint32_t[::1] da_lo, const uint32_t[::1] da_hi,
           const int64_t[::1] s_src_p, const uint32_t[::1] sp_lo, const uint32_t[::1] sp_hi,
           const int64_t[::1] s_dst_p, const uint32_t[::1] dp_lo, const uint32_t[::1] dp_hi,
           const uint32_t[::1] row_client_ip, const uint32_t[::1] row_server_ip,
           const uint16_t[::1] row_client_port, const uint16_t[::1] row_server_port,
           const uint8_t[::1] row_proto, const int32_t[::1] row_app, const uint8_t[:, ::1] row_seen,
           int32_t[:, ::1] ring_pid, int64_t[:, ::1] ring_end, int64_t[::1] ring_n,
           int64_t[::1] out_event, int32_t[::1] out_sig):
    """Signatures that match, from literal events in scan order.

    Each event is first recorded in its (session row, buffer) ring of the last RING matches, then every content
    that uses its literal is tried: the signature's header (protocol, application, flow direction and state,
    addresses and ports in the event's direction, or both with ``<>``; ``row_seen[r]``: whether each direction
    has been seen, established once both have) must hold, and all its contents must be
    placed on recent matches of the same buffer with the event's one among them (offset/depth absolute; distance/
    within relative to the previous content's match). A pid of -1 clears the buffer's ring (a new datagram).

    Returns the number of (event, signature) hits written to out_event / out_sig (at most their length).
    """
    cdef Py_ssize_t i, u, hits = 0, cap = out_event.shape[0], n_rows = ring_n.shape[0] // N_BUFFERS
    cdef int64_t r, rb, c, s, first, nn, ppos
    cdef int32_t pid
    cdef uint8_t buf, fl
    cdef uint32_t sip, dip, sp, dp
    cdef bint ok
    cdef _Sigs S
    if ring_pid.shape[1] != RING or ring_end.shape[1] != RING or ring_pid.shape[0] != ring_n.shape[0]:
        raise ValueError(f"verify: rings must be [rows * {N_BUFFERS}, {RING}]")
    if row_seen.shape[1] != 2 or row_seen.shape[0] < n_rows:
        raise ValueError("verify: row_seen must be [rows, 2]")
    S.c_pid = &c_pid[0]
    S.c_len = &c_len[0]
    S.c_offset = &c_offset[0]
    S.c_depth = &c_depth[0]
    S.c_distance = &c_distance[0]
    S.c_within = &c_within[0]
    S.c_rel = &c_rel[0]
    with nogil:
        for i in range(n_events):
            r = ev_row[i]
            buf = ev_buf[i]
            pid = ev_pid[i]
            if r < 0 or r >= n_rows or buf >= N_BUFFERS:
                continue
            rb = r * N_BUFFERS + buf
            if pid < 0:
                ring_n[rb] = 0
                continue
            if pid + 1 >= p_start.shape[0]:
                continue
            ppos = ring_n[rb] % RING
            ring_pid[rb, ppos] = pid
            ring_end[rb, ppos] = ev_end[i]
            ring_n[rb] += 1
            S.r_pid = &ring_pid[rb, 0]
            S.r_end = &ring_end[rb, 0]
            S.r_base = 0
            S.r_count = ring_n[rb]
            for u in range(p_start[pid], p_start[pid + 1]):
                c = p_users[u]
                if c_buf[c] != buf:
                    continue
                s = c_sig[c]
                fl = s_flags[s]
                if s_proto[s] != 0 and s_proto[s] != row_proto[r]:
                    continue
                if s_app[s] >= 0 and s_app[s] != row_app[r]:
                    continue
                if (fl & SIG_ESTABLISHED) and not (row_seen[r, 0] and row_seen[r, 1]):
                    continue
                # direction of the data: client -> server for the to-server stream and every field
                if buf == BUF_TO_CLIENT:
                    if fl & SIG_TO_SERVER:
                        continue
                    sip, dip = row_server_ip[r], row_client_ip[r]
                    sp, dp = row_server_port[r], row_client_port[r]
                else:
                    if fl & SIG_TO_CLIENT:
                        continue
                    sip, dip = row_client_ip[r], row_server_ip[r]
                    sp, dp = row_client_port[r], row_server_port[r]
                ok = (_in_ranges(&sa_lo[0], &sa_hi[0], s_src_a[s], s_src_a[s + 1], sip)
                      and _in_ranges(&da_lo[0], &da_hi[0], s_dst_a[s], s_dst_a[s + 1], dip)
                      and _in_ranges(&sp_lo[0], &sp_hi[0], s_src_p[s], s_src_p[s + 1], sp)
                      and _in_ranges(&dp_lo[0], &dp_hi[0], s_dst_p[s], s_dst_p[s + 1], dp))
                if not ok and (fl & SIG_BIDIR):
                    ok = (_in_ranges(&sa_lo[0], &sa_hi[0], s_src_a[s], s_src_a[s + 1], dip)
                          and _in_ranges(&da_lo[0], &da_hi[0], s_dst_a[s], s_dst_a[s + 1], sip)
                          and _in_ranges(&sp_lo[0], &sp_hi[0], s_src_p[s], s_src_p[s + 1], dp)
                          and _in_ranges(&dp_lo[0], &dp_hi[0], s_dst_p[s], s_dst_p[s + 1], sp))
                if not ok:
                    continue
                first = s_first[s]
                nn = s_n[s]
                if _assign(&S, first, nn, 0, c, ev_end[i], 0):
                    if hits < cap:
                        out_event[hits] = i
                        out_sig[hits] = <int32_t>s
                        hits += 1
    return hits
