# App-ID by content and extraction of the fields URL filtering and sticky-buffer signatures read (issue 11 items 2-3).
#
# Input: per inspected session k, the head of each direction (the first H bytes of its stream, or its first UDP
# datagram), as the stream kernel keeps them: head[2k] client -> server, head[2k+1] server -> client.
# Output per session: an application id (gwlb_fast.inspect.applications; the ids are passed in, so this module and
# that table cannot disagree) and the extracted fields, copied (bounded) into fields[k, F_*, :].
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t
from libc.string cimport memcpy

from gwlb_fast._kernels._bytes cimport load_be16, load_be32

cdef enum:
    IPPROTO_TCP = 6
    IPPROTO_UDP = 17

cpdef enum:
    # extracted fields (columns of fields / flen)
    F_METHOD = 0
    F_URI = 1
    F_HOST = 2
    F_USER_AGENT = 3
    F_SNI = 4
    F_DNS_QUERY = 5
    N_FIELDS = 6

    # app ids vector (ids[...]): positions of the applications this kernel names
    I_PENDING = 0
    I_INSUFFICIENT = 1
    I_UNKNOWN_TCP = 2
    I_UNKNOWN_UDP = 3
    I_HTTP = 4
    I_SSL = 5
    I_DNS = 6
    I_SSH = 7
    I_SMTP = 8
    I_FTP = 9
    I_QUIC = 10
    I_NTP = 11
    I_SNMP = 12
    I_MYSQL = 13
    I_SOCKS = 14
    I_INCOMPLETE = 15
    N_IDS = 16

    # bytes of one direction that end the wait for a protocol to show itself
    DECIDE_BYTES = 64

# result of one protocol test on a prefix
cdef enum:
    NO = 0       # cannot be this protocol
    MAYBE = 1    # a prefix of it: wait for more bytes
    YES = 2


cdef inline uint8_t _lower(uint8_t c) noexcept nogil:
    if 65 <= c <= 90:
        return c + 32
    return c


cdef inline int _prefix(const uint8_t* p, int64_t n, const char* lit, int64_t m) noexcept nogil:
    """YES when p starts with lit, MAYBE when p is a proper prefix of lit, else NO (exact case)."""
    cdef int64_t i, k = n if n < m else m
    for i in range(k):
        if p[i] != <uint8_t>lit[i]:
            return NO
    return YES if n >= m else MAYBE


cdef int _http_request(const uint8_t* p, int64_t n) noexcept nogil:
    cdef int r, best = NO
    r = _prefix(p, n, b"GET ", 4)
    if r > best: best = r
    r = _prefix(p, n, b"POST ", 5)
    if r > best: best = r
    r = _prefix(p, n, b"HEAD ", 5)
    if r > best: best = r
    r = _prefix(p, n, b"PUT ", 4)
    if r > best: best = r
    r = _prefix(p, n, b"DELETE ", 7)
    if r > best: best = r
    r = _prefix(p, n, b"OPTIONS ", 8)
    if r > best: best = r
    r = _prefix(p, n, b"CONNECT ", 8)
    if r > best: best = r
    r = _prefix(p, n, b"PATCH ", 6)
    if r > best: best = r
    r = _prefix(p, n, b"TRACE ", 6)
    if r > best: best = r
    return best


cdef int _tls_hello(const uint8_t* p, int64_t n, uint8_t hs_type) noexcept nogil:
    """A TLS handshake record (content type 22, version 3.x) whose first message is hs_type."""
    if n >= 1 and p[0] != 22:
        return NO
    if n >= 2 and p[1] != 3:
        return NO
    if n >= 3 and p[2] > 4:
        return NO
    if n >= 6 and p[5] != hs_type:
        return NO
    return YES if n >= 6 else MAYBE


cdef int _dns_msg(const uint8_t* p, int64_t n, bint query) noexcept nogil:
    """A DNS message: header, QDCOUNT 1..8, and a well-formed first question name (RFC 1035 section 4.1)."""
    cdef int64_t i = 12, lab
    cdef uint16_t qd
    if n < 12:
        return MAYBE
    if query and (p[2] & 0x80):
        return NO
    if ((p[2] >> 3) & 0x0f) > 6:
        return NO            # opcode beyond the assigned ones
    qd = load_be16(p + 4)
    if qd < 1 or qd > 8:
        return NO
    while i < n:
        lab = p[i]
        if lab == 0:
            return YES if i + 5 <= n else MAYBE
        if lab & 0xc0:
            return NO        # a compression pointer cannot start the first question
        if lab > 63:
            return NO
        i += lab + 1
    return MAYBE


cdef int _quic_initial(const uint8_t* p, int64_t n) noexcept nogil:
    """A QUIC long-header packet (RFC 9000 section 17.2) of version 1, 2 or a draft, with sane connection ids."""
    cdef uint32_t ver
    if n < 7:
        return NO
    if (p[0] & 0xc0) != 0xc0:
        return NO
    ver = load_be32(p + 1)
    if not (ver == 1 or ver == <uint32_t>0x6b3343cf or (ver & <uint32_t>0xffffff00) == <uint32_t>0xff000000):
        return NO
    if p[5] > 20:
        return NO
    if n < 1200 and (p[0] & 0x30) == 0:
        return NO            # a client Initial is padded to at least 1200 bytes (RFC 9000 section 14.1)
    return YES


cdef int _ntp(const uint8_t* p, int64_t n) noexcept nogil:
    cdef uint8_t ver = (p[0] >> 3) & 7, mode = p[0] & 7
    if n != 48 and n != 68 and n != 72 and n != 60:
        return NO
    if ver < 1 or ver > 4 or mode < 1 or mode > 5:
        return NO
    return YES


cdef int _snmp(const uint8_t* p, int64_t n) noexcept nogil:
    """SNMP v1/v2c/v3 message: SEQUENCE { INTEGER version (0, 1, 3), ... } (RFC 3416 / 3412), BER."""
    cdef int64_t i = 2
    if n < 7 or p[0] != 0x30:
        return NO
    if p[1] & 0x80:
        i = 2 + (p[1] & 0x7f)
        if p[1] & 0x7f > 2:
            return NO
    if i + 3 > n:
        return NO
    if p[i] != 0x02 or p[i + 1] != 0x01 or not (p[i + 2] == 0 or p[i + 2] == 1 or p[i + 2] == 3):
        return NO
    if p[i + 2] != 3 and (i + 3 >= n or p[i + 3] != 0x04):
        return NO
    return YES


cdef int _mysql_greeting(const uint8_t* p, int64_t n) noexcept nogil:
    """MySQL initial handshake packet: 3-byte length, sequence 0, protocol version 10, a NUL-terminated version."""
    cdef int64_t ln, i
    if n < 5:
        return MAYBE
    ln = p[0] | (<int64_t>p[1] << 8) | (<int64_t>p[2] << 16)
    if p[3] != 0 or p[4] != 10 or ln < 20 or ln > 1024:
        return NO
    for i in range(5, n if n < 4 + ln else 4 + ln):
        if p[i] == 0:
            return YES if i > 5 else NO
        if p[i] < 32 or p[i] > 126:
            return NO
    return MAYBE


cdef int _socks(const uint8_t* p, int64_t n) noexcept nogil:
    """SOCKS5 method selection (RFC 1928: VER 5, NMETHODS, METHODS, nothing after) or a SOCKS4 CONNECT/BIND."""
    if n < 1:
        return MAYBE
    if p[0] == 5:
        if n < 2:
            return MAYBE
        if p[1] == 0 or n > 2 + p[1]:
            return NO
        return YES if n == 2 + p[1] else MAYBE
    if p[0] == 4:
        if n < 9:
            return MAYBE
        if (p[1] == 1 or p[1] == 2) and p[n - 1] == 0:
            return YES
        return NO
    return NO


cdef inline bint _line_has(const uint8_t* p, int64_t n, const char* lit, int64_t m) noexcept nogil:
    """The first line of p (up to CRLF) contains lit, case-insensitively (lit given lowercase)."""
    cdef int64_t i, j
    for i in range(n):
        if p[i] == 13 or p[i] == 10:
            return False
        if i + m > n:
            return False
        for j in range(m):
            if _lower(p[i + j]) != <uint8_t>lit[j]:
                break
        else:
            return True
    return False


cdef inline bint _has_eol(const uint8_t* p, int64_t n) noexcept nogil:
    cdef int64_t i
    for i in range(n):
        if p[i] == 10:
            return True
    return False


cdef int _smtp_ftp_client(const uint8_t* p, int64_t n) noexcept nogil:
    """1 for an SMTP command, 2 for an FTP command, 0 otherwise (the client's first line, case-insensitive)."""
    cdef uint8_t c[5]
    cdef int i
    if n < 5:
        return 0
    for i in range(5):
        c[i] = _lower(p[i])
    # EHLO / HELO (RFC 5321 section 4.1.1.1)
    if (c[0] == 101 and c[1] == 104 and c[2] == 108 and c[3] == 111 and c[4] == 32) or \
            (c[0] == 104 and c[1] == 101 and c[2] == 108 and c[3] == 111 and c[4] == 32):
        return 1
    # USER / AUTH / FEAT / SYST / OPTS (FTP, RFC 959 / 2228 / 2389)
    if (c[0] == 117 and c[1] == 115 and c[2] == 101 and c[3] == 114 and c[4] == 32):
        return 2
    if (c[0] == 102 and c[1] == 101 and c[2] == 97 and c[3] == 116) or \
            (c[0] == 115 and c[1] == 121 and c[2] == 115 and c[3] == 116):
        return 2
    return 0


cdef int32_t _identify(const uint8_t* c, int64_t cn, bint cfull, const uint8_t* s, int64_t sn, bint sfull,
                       uint8_t proto, bint ended, const int32_t* ids) noexcept nogil:
    """The application of one session from its two heads; ids[I_PENDING] while undecided."""
    cdef int r, maybe = 0, k
    if proto == IPPROTO_UDP:
        if cn > 0:
            r = _dns_msg(c, cn, False)        # a capture may start with the answer
            if r == YES:
                return ids[I_DNS]
            if _quic_initial(c, cn) == YES:
                return ids[I_QUIC]
            if _ntp(c, cn) == YES:
                return ids[I_NTP]
            if _snmp(c, cn) == YES:
                return ids[I_SNMP]
        if sn > 0:
            if _dns_msg(s, sn, False) == YES:
                return ids[I_DNS]
            if _ntp(s, sn) == YES:
                return ids[I_NTP]
            if _snmp(s, sn) == YES:
                return ids[I_SNMP]
            if _quic_initial(s, sn) == YES:
                return ids[I_QUIC]
        if cn > 0 or sn > 0:
            return ids[I_UNKNOWN_UDP]
        return ids[I_INCOMPLETE] if ended else ids[I_PENDING]
    if proto != IPPROTO_TCP:
        return ids[I_PENDING]
    # client speaks first
    if cn > 0:
        r = _http_request(c, cn)
        if r == YES:
            return ids[I_HTTP]
        maybe |= r == MAYBE
        r = _tls_hello(c, cn, 1)
        if r == YES:
            return ids[I_SSL]
        maybe |= r == MAYBE
        r = _prefix(c, cn, b"SSH-", 4)
        if r == YES:
            return ids[I_SSH]
        maybe |= r == MAYBE
        # DNS over TCP (RFC 1035 section 4.2.2): a 2-byte length, then the message (it may come in pieces)
        if cn < 2:
            maybe = 1
        elif load_be16(c) >= 17:
            r = _dns_msg(c + 2, cn - 2, True)
            if r == YES and cn >= 2 + load_be16(c):
                return ids[I_DNS]
            if r != NO and cn < 2 + load_be16(c):
                maybe = 1
        k = _smtp_ftp_client(c, cn)
        if k == 1:
            return ids[I_SMTP]
        if k == 2:
            return ids[I_FTP]
        r = _socks(c, cn)
        if r == YES and sn == 0:
            return ids[I_SOCKS]
        if r == YES and sn == 2 and s[0] == 5:
            return ids[I_SOCKS]
        maybe |= r != NO
    # server speaks first (or answers)
    if sn > 0:
        if _prefix(s, sn, b"HTTP/1.", 7) == YES:
            return ids[I_HTTP]
        if _tls_hello(s, sn, 2) == YES:
            return ids[I_SSL]
        r = _prefix(s, sn, b"SSH-", 4)
        if r == YES:
            return ids[I_SSH]
        maybe |= r == MAYBE
        r = _mysql_greeting(s, sn)
        if r == YES:
            return ids[I_MYSQL]
        maybe |= r == MAYBE
        r = _prefix(s, sn, b"220", 3)
        if r == YES:
            if _line_has(s, sn, b"smtp", 4):
                return ids[I_SMTP]
            if _line_has(s, sn, b"ftp", 3):
                return ids[I_FTP]
            if not _has_eol(s, sn) and not sfull:
                maybe = 1
            elif cn < 5 and not cfull:
                maybe = 1            # a banner without a hint: the client's first command decides
        elif r == MAYBE:
            maybe = 1
    if cn == 0 and sn == 0:
        return ids[I_INCOMPLETE] if ended else ids[I_PENDING]
    if maybe and not ended and cn < DECIDE_BYTES and sn < DECIDE_BYTES * 4 and not cfull and not sfull:
        return ids[I_PENDING]
    if maybe and ended:
        return ids[I_INSUFFICIENT]
    return ids[I_UNKNOWN_TCP]


cdef inline int64_t _put(uint8_t* dst, int64_t cap, const uint8_t* src, int64_t n) noexcept nogil:
    if n > cap:
        n = cap
    if n > 0:
        memcpy(dst, src, <size_t>n)
    return n


cdef void _http_fields(const uint8_t* p, int64_t n, uint8_t* f, int64_t fw, int32_t* fl) noexcept nogil:
    """Method, request URI, Host and User-Agent of the HTTP request at the start of p (RFC 9112 section 3)."""
    cdef int64_t i = 0, sp1 = -1, sp2 = -1, eol = -1, ls, cs, ve, vs
    while i < n:
        if p[i] == 32:
            if sp1 < 0:
                sp1 = i
            elif sp2 < 0:
                sp2 = i
        if p[i] == 10:
            eol = i
            break
        i += 1
    if eol < 0 or sp1 < 0:
        return
    if sp2 < 0:
        sp2 = eol - 1 if eol > 0 and p[eol - 1] == 13 else eol   # HTTP/0.9 style
    fl[F_METHOD] = <int32_t>_put(f + F_METHOD * fw, fw, p, sp1)
    fl[F_URI] = <int32_t>_put(f + F_URI * fw, fw, p + sp1 + 1, sp2 - sp1 - 1)
    # header lines until the empty line or the end of what the head holds
    ls = eol + 1
    while ls < n:
        i = ls
        while i < n and p[i] != 10:
            i += 1
        if i >= n:
            return                        # an incomplete line: not taken
        ve = i
        if ve > ls and p[ve - 1] == 13:
            ve -= 1
        if ve == ls:
            return                        # end of the headers
        cs = ls
        while cs < ve and p[cs] != 58:
            cs += 1
        if cs < ve:
            vs = cs + 1
            while vs < ve and (p[vs] == 32 or p[vs] == 9):
                vs += 1
            while ve > vs and (p[ve - 1] == 32 or p[ve - 1] == 9):
                ve -= 1
            if cs - ls == 4 and _lower(p[ls]) == 104 and _lower(p[ls + 1]) == 111 and _lower(p[ls + 2]) == 115 \
                    and _lower(p[ls + 3]) == 116 and fl[F_HOST] < 0:
                fl[F_HOST] = <int32_t>_put(f + F_HOST * fw, fw, p + vs, ve - vs)
            elif cs - ls == 10 and fl[F_USER_AGENT] < 0 and _lower(p[ls]) == 117 and _lower(p[ls + 1]) == 115 \
                    and _lower(p[ls + 2]) == 101 and _lower(p[ls + 3]) == 114 and p[ls + 4] == 45 \
                    and _lower(p[ls + 5]) == 97 and _lower(p[ls + 6]) == 103 and _lower(p[ls + 7]) == 101 \
                    and _lower(p[ls + 8]) == 110 and _lower(p[ls + 9]) == 116:
                fl[F_USER_AGENT] = <int32_t>_put(f + F_USER_AGENT * fw, fw, p + vs, ve - vs)
        ls = i + 1


cdef int _tls_sni(const uint8_t* p, int64_t n, uint8_t* f, int64_t fw, int32_t* fl) noexcept nogil:
    """SNI of the ClientHello at the start of p (RFC 8446 section 4.1.2, RFC 6066 section 3), possibly spanning
    several TLS records. Returns 1 when decided (found or absent), 0 when more bytes are needed."""
    # gather the handshake message from consecutive records into a bounded scratch area
    cdef uint8_t buf[16384]
    cdef int64_t have = 0, pos = 0, rlen, need = -1, i, e, end, el, et, nl
    while pos + 5 <= n:
        if p[pos] != 22:
            return 1
        rlen = load_be16(p + pos + 3)
        if pos + 5 + rlen > n:
            # a partial record: take what is there
            rlen = n - pos - 5
            if have + rlen > 16384:
                rlen = 16384 - have
            memcpy(buf + have, p + pos + 5, <size_t>rlen)
            have += rlen
            break
        if have + rlen > 16384:
            rlen = 16384 - have
        memcpy(buf + have, p + pos + 5, <size_t>rlen)
        have += rlen
        pos += 5 + load_be16(p + pos + 3)
        if have >= 4:
            need = 4 + ((<int64_t>buf[1] << 16) | (<int64_t>buf[2] << 8) | buf[3])
            if have >= need:
                break
    if have < 4:
        return 0
    if buf[0] != 1:
        return 1
    need = 4 + ((<int64_t>buf[1] << 16) | (<int64_t>buf[2] << 8) | buf[3])
    if need > 16384:
        need = 16384
    if have < need:
        return 0
    end = need
    i = 4 + 2 + 32
    if i + 1 > end:
        return 1
    i += 1 + buf[i]                                  # session id
    if i + 2 > end:
        return 1
    i += 2 + load_be16(buf + i)                      # cipher suites
    if i + 1 > end:
        return 1
    i += 1 + buf[i]                                  # compression methods
    if i + 2 > end:
        return 1
    e = i + 2 + load_be16(buf + i)
    if e > end:
        e = end
    i += 2
    while i + 4 <= e:
        et = load_be16(buf + i)
        el = load_be16(buf + i + 2)
        if et == 0 and i + 4 + el <= e and el >= 5:
            # server_name_list: length(2), name_type(1) = host_name 0, length(2), name
            if buf[i + 6] == 0:
                nl = load_be16(buf + i + 7)
                if i + 9 + nl <= i + 4 + el:
                    fl[F_SNI] = <int32_t>_put(f + F_SNI * fw, fw, buf + i + 9, nl)
            return 1
        i += 4 + el
    return 1


cdef void _dns_qname(const uint8_t* p, int64_t n, uint8_t* f, int64_t fw, int32_t* fl) noexcept nogil:
    """The first question's name, dotted, as Suricata's dns.query shows it (no trailing dot)."""
    cdef int64_t i = 12, lab, w = 0, j
    cdef uint8_t* d = f + F_DNS_QUERY * fw
    if n < 13:
        return
    while i < n:
        lab = p[i]
        if lab == 0:
            fl[F_DNS_QUERY] = <int32_t>w
            return
        if lab & 0xc0 or i + 1 + lab > n:
            return
        if w > 0 and w < fw:
            d[w] = 46
            w += 1
        for j in range(lab):
            if w < fw:
                d[w] = p[i + 1 + j]
                w += 1
        i += lab + 1


cdef bint _blank_line(const uint8_t* p, int64_t n) noexcept nogil:
    """The request's header block is complete (an empty line after the request line)."""
    cdef int64_t i
    for i in range(n - 1):
        if p[i] == 10 and (p[i + 1] == 10 or (i + 2 < n and p[i + 1] == 13 and p[i + 2] == 10)):
            return True
    return False


cdef bint _step(Py_ssize_t r, int64_t cn, int64_t sn, bint cfull, bint sfull, bint ended,
                const uint8_t[:, ::1] head, const uint8_t[::1] proto, const int32_t* ids, int32_t[::1] app,
                uint8_t[::1] done, uint8_t[:, ::1] fields, int32_t[:, ::1] flen, int64_t fw) noexcept nogil:
    """Identify one session from cn / sn bytes of its heads and extract its fields; True when its fields got
    complete in this step."""
    cdef int32_t a
    cdef bint cd
    if app[r] == ids[I_PENDING]:
        app[r] = _identify(&head[2 * r, 0], cn, cfull, &head[2 * r + 1, 0], sn, sfull, proto[r], ended, ids)
    a = app[r]
    if done[r] or a == ids[I_PENDING]:
        return False
    cd = True
    if a == ids[I_HTTP]:
        if flen[r, F_METHOD] < 0:
            _http_fields(&head[2 * r, 0], cn, &fields[r, 0], fw, &flen[r, 0])
        cd = flen[r, F_METHOD] >= 0 and (flen[r, F_HOST] >= 0 or cfull or ended or _blank_line(&head[2 * r, 0], cn))
        if not cd and not ended and not cfull:
            flen[r, F_METHOD] = -1
            flen[r, F_URI] = -1
            flen[r, F_HOST] = -1
            flen[r, F_USER_AGENT] = -1
    elif a == ids[I_SSL]:
        cd = _tls_sni(&head[2 * r, 0], cn, &fields[r, 0], fw, &flen[r, 0]) or cfull or ended
    elif a == ids[I_DNS]:
        if proto[r] == IPPROTO_UDP:
            if cn > 0:
                _dns_qname(&head[2 * r, 0], cn, &fields[r, 0], fw, &flen[r, 0])
            elif sn > 0:
                _dns_qname(&head[2 * r + 1, 0], sn, &fields[r, 0], fw, &flen[r, 0])
        elif cn > 2:
            _dns_qname(&head[2 * r, 2], cn - 2, &fields[r, 0], fw, &flen[r, 0])
        cd = flen[r, F_DNS_QUERY] >= 0 or cfull or ended or proto[r] == IPPROTO_UDP
    if cd:
        done[r] = 1
        return True
    return False


def identify(const int64_t[::1] sessions, const uint8_t[:, ::1] head, const int64_t[::1] nxt,
             const uint8_t[::1] sflags, const uint8_t[::1] proto, const uint8_t[::1] ended,
             const int32_t[::1] ids, int32_t[::1] app, uint8_t[::1] done, uint8_t[:, ::1] fields,
             int32_t[:, ::1] flen, int64_t full_flag):
    """Identify the application of the given sessions and extract their fields.

    Parameters
    ----------
    sessions : int64[k]
        Session rows to look at (row r owns head rows 2r, client -> server, and 2r + 1).
    head : uint8[2m, H]
    nxt : int64[2m]
        Bytes held in each head row (contiguous from stream byte 0; a UDP head holds one datagram).
    sflags : uint8[2m]
        Stream flags; ``full_flag`` is the bit meaning "the head is full" (no more bytes will come into it).
    proto : uint8[m]
    ended : uint8[m]
        1 for sessions that are over (decide now: incomplete, insufficient-data or unknown).
    ids : int32[N_IDS]
        Application ids in the order of the I_* constants.
    app : int32[m] in/out
        Application of each session; only rows still at ids[I_PENDING] are identified again.
    done : uint8[m] in/out
        1 once the fields of a session are extracted for good (they are not read again).
    fields : uint8[m, N_FIELDS * FW] in/out, flen : int32[m, N_FIELDS] in/out
        Extracted field bytes (at most FW each) and lengths (-1: absent). Start rows at flen -1.
    """
    cdef Py_ssize_t k = sessions.shape[0], j, r, m = proto.shape[0]
    cdef int64_t hsize = head.shape[1], fw, cn, sn
    if fields.shape[1] % N_FIELDS:
        raise ValueError(f"identify: fields must have a multiple of {N_FIELDS} columns")
    fw = fields.shape[1] // N_FIELDS
    if head.shape[0] != 2 * m or nxt.shape[0] != 2 * m or sflags.shape[0] != 2 * m:
        raise ValueError("identify: head, nxt and sflags must have 2 rows per session")
    if (ended.shape[0] != m or app.shape[0] != m or done.shape[0] != m or fields.shape[0] != m
            or flen.shape[0] != m or flen.shape[1] != N_FIELDS):
        raise ValueError("identify: per-session arrays must have one row per session")
    if ids.shape[0] != N_IDS:
        raise ValueError(f"identify: ids must have {N_IDS} entries")
    with nogil:
        for j in range(k):
            r = sessions[j]
            if r < 0 or r >= m:
                continue
            cn = nxt[2 * r]
            sn = nxt[2 * r + 1]
            if cn > hsize:
                cn = hsize
            if sn > hsize:
                sn = hsize
            if cn < 0:
                cn = 0
            if sn < 0:
                sn = 0
            _step(r, cn, sn, (sflags[2 * r] & full_flag) != 0, (sflags[2 * r + 1] & full_flag) != 0, ended[r] != 0,
                  head, proto, &ids[0], app, done, fields, flen, fw)
    return k


def identify_packets(const int64_t[::1] sd, const int64_t[::1] lo, const int64_t[::1] hi, const uint8_t[::1] pproto,
                     const uint8_t[:, ::1] head, const int64_t[::1] nxt, int64_t[::1] seen_len,
                     const uint8_t[::1] proto, const int32_t[::1] ids, int32_t[::1] app, uint8_t[::1] done,
                     uint8_t[:, ::1] fields, int32_t[:, ::1] flen, int64_t[::1] app_pkt, int64_t[::1] done_pkt,
                     int64_t[::1] out_changed, int64_t[::1] out_completed):
    """Identify sessions packet by packet, in batch order, as each packet's bytes arrive.

    ``seen_len[sd]`` is how many bytes of each head identification has read so far (start a new sd at 0): a packet
    that advances its direction's contiguous stream (``hi > lo``, the stream kernel's outputs) raises it to ``hi``
    (TCP) or to the first datagram's length (UDP), and the session is looked at again with exactly the bytes known
    at that packet. Since the head's first bytes never change once contiguous, the decision is the one an inline
    engine makes at that packet. ``app_pkt[r]`` / ``done_pkt[r]`` get the packet index at which session r's
    application was decided / its fields completed (left as they are otherwise). Sessions whose ``app_pkt`` /
    ``done_pkt`` this call sets while it is -1 are listed in ``out_changed`` / ``out_completed`` (int64, n entries
    at least) in the order that happens: with both at -1 before the call (the caller resets the listed ones after
    reading them), they are exactly the sessions decided / completed by this batch.

    Returns (sessions listed in out_changed, in out_completed).
    """
    cdef Py_ssize_t n = sd.shape[0], i, r, m = proto.shape[0]
    cdef int64_t hsize = head.shape[1], fw, s, cn, sn, v
    cdef int32_t before
    if fields.shape[1] % N_FIELDS:
        raise ValueError(f"identify_packets: fields must have a multiple of {N_FIELDS} columns")
    fw = fields.shape[1] // N_FIELDS
    if not (lo.shape[0] == n and hi.shape[0] == n and pproto.shape[0] == n):
        raise ValueError("identify_packets: per-packet arrays must have the same length")
    if head.shape[0] != 2 * m or nxt.shape[0] != 2 * m or seen_len.shape[0] != 2 * m:
        raise ValueError("identify_packets: head, nxt and seen_len must have 2 rows per session")
    if (app.shape[0] != m or done.shape[0] != m or fields.shape[0] != m or flen.shape[0] != m
            or app_pkt.shape[0] != m or done_pkt.shape[0] != m or flen.shape[1] != N_FIELDS):
        raise ValueError("identify_packets: per-session arrays must have one row per session")
    if ids.shape[0] != N_IDS:
        raise ValueError(f"identify_packets: ids must have {N_IDS} entries")
    if out_changed.shape[0] < n or out_completed.shape[0] < n:
        raise ValueError(f"identify_packets: out_changed and out_completed must have {n} entries at least")
    cdef Py_ssize_t n_changed = 0, n_completed = 0
    with nogil:
        for i in range(n):
            s = sd[i]
            if s < 0 or s >= 2 * m or hi[i] <= lo[i]:
                continue
            r = s >> 1
            if done[r] and app[r] != ids[I_PENDING]:
                continue
            v = nxt[s] if pproto[i] == IPPROTO_UDP else hi[i]
            if v > hsize:
                v = hsize
            if v > seen_len[s]:
                seen_len[s] = v
            cn = seen_len[2 * r]
            sn = seen_len[2 * r + 1]
            before = app[r]
            if _step(r, cn, sn, cn >= hsize or (proto[r] == IPPROTO_UDP and cn > 0),
                     sn >= hsize or (proto[r] == IPPROTO_UDP and sn > 0), False, head, proto, &ids[0], app, done,
                     fields, flen, fw):
                if done_pkt[r] < 0:
                    out_completed[n_completed] = r
                    n_completed += 1
                done_pkt[r] = i
            if app[r] != before:
                if app_pkt[r] < 0:
                    out_changed[n_changed] = r
                    n_changed += 1
                app_pkt[r] = i
    return n_changed, n_completed
