# cython: language_level=3
"""URL categorisation: PAN-OS URL-list patterns and a domain category database, batched over URLs.

A URL is ``host`` + ``path`` (``path`` starts with ``/``; an absent one is ``/``), compared case-insensitively.
The host loses a ``:port`` suffix and a trailing dot.  Both the URL and a pattern are sequences of *tokens* and
*separators* (``. / ? & = ; +``), as PAN-OS's URL category exception lists define them.

Pattern programs (``pat_*`` arrays, one element per token or separator of a pattern, built by
``gwlb_fast.inspect.urlcat``): ``E_LIT`` (a literal token), ``E_SEP`` (one separator character), ``E_CARET`` (``^``:
exactly one token), ``E_STAR`` (``*``: one or more tokens with the separators between them; inside the host part of
a pattern it never crosses the end of the host).  A pattern matches when it matches a prefix of the URL's elements:
the URL may go on after it (``example.com/`` matches ``example.com/search``) but only on a token boundary, which
token-level matching gives for free (``example.com/news`` does not match ``example.com/newsletter``).

Host entries (``key_*``, sorted by the FNV-1a hash of the key): ``K_DB`` (a database domain: the domain and its
subdomains, the most specific domain wins), ``K_EXACT`` (``example.com/``: this host), ``K_STAR`` (``*.example.com/``:
one or more labels before it), ``K_CARET`` (``^.example.com/``: exactly one label before it).  They are the fast path
of the common pattern shapes; every other pattern runs its program.
"""
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t

cdef enum:
    E_LIT = 0
    E_SEP = 1
    E_CARET = 2
    E_STAR = 3
    K_DB = 0
    K_EXACT = 1
    K_STAR = 2
    K_CARET = 3
    MAX_URL = 2048
    MAX_ELEMS = 512
    T_TOKEN = 0
    T_SEP = 1

ELEM_LIT = E_LIT
ELEM_SEP = E_SEP
ELEM_CARET = E_CARET
ELEM_STAR = E_STAR
KEY_DB = K_DB
KEY_EXACT = K_EXACT
KEY_STAR = K_STAR
KEY_CARET = K_CARET
MAX_URL_BYTES = MAX_URL


cdef inline bint _is_sep(uint8_t c) noexcept nogil:
    return c == 46 or c == 47 or c == 63 or c == 38 or c == 61 or c == 59 or c == 43  # . / ? & = ; +


cdef inline uint8_t _lower(uint8_t c) noexcept nogil:
    return c + 32 if 65 <= c <= 90 else c


cdef inline bint _bytes_eq(const uint8_t* a, const uint8_t* b, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t k
    for k in range(n):
        if a[k] != b[k]:
            return False
    return True


cdef inline uint64_t _fnv(const uint8_t* p, Py_ssize_t n) noexcept nogil:
    cdef uint64_t h = 14695981039346656037ULL
    cdef Py_ssize_t k
    for k in range(n):
        h = (h ^ p[k]) * 1099511628211ULL
    return h


def hash_keys(const uint8_t[::1] data not None, const int64_t[::1] off not None, const int64_t[::1] length not None,
              uint64_t[::1] out not None):
    """FNV-1a 64 of each key ``data[off[i] : off[i] + length[i]]`` (keys already lower-case) into ``out``.

    Raises
    ------
    ValueError
        On lengths that disagree or a key outside ``data``.
    """
    cdef Py_ssize_t n = off.shape[0], i
    if length.shape[0] != n or out.shape[0] != n:
        raise ValueError(f"off, length and out must have the same length, got {n}, {length.shape[0]}, {out.shape[0]}")
    for i in range(n):
        if off[i] < 0 or length[i] < 0 or off[i] + length[i] > data.shape[0]:
            raise ValueError(f"key {i} lies outside data")
    with nogil:
        for i in range(n):
            out[i] = _fnv(&data[0] + off[i] if length[i] > 0 else NULL, length[i])


cdef struct Url:
    uint8_t buf[MAX_URL]
    int32_t n          # bytes in buf
    int32_t host_len   # host = buf[0:host_len]; buf[host_len] == '/'
    int32_t el_kind[MAX_ELEMS]
    int32_t el_off[MAX_ELEMS]
    int32_t el_len[MAX_ELEMS]
    int32_t nel
    int32_t host_elems  # elements of the host part


cdef struct Prog:
    const uint8_t* kind
    const uint8_t* in_host
    const int64_t* off
    const int32_t* length
    const uint8_t* text


cdef bint _elem_eq(const Url* u, int32_t e, const Prog* pg, Py_ssize_t pe) noexcept nogil:
    cdef int32_t n = u.el_len[e], k
    if pg.length[pe] != n:
        return False
    for k in range(n):
        if u.buf[u.el_off[e] + k] != pg.text[pg.off[pe] + k]:
            return False
    return True


cdef bint _match(const Url* u, int32_t e, const Prog* pg, Py_ssize_t pe, Py_ssize_t pend, int depth) noexcept nogil:
    """Does the program pg[pe:pend] match a prefix of the URL's elements from element e on?"""
    cdef uint8_t k
    cdef int32_t j, limit
    if depth > 64:
        return False  # bounded backtracking (patterns with more wildcards are refused when compiled)
    while pe < pend:
        k = pg.kind[pe]
        if k == E_STAR:
            if e >= u.nel or u.el_kind[e] != T_TOKEN:
                return False
            if pg.in_host[pe] and e >= u.host_elems:
                return False  # a wildcard of the pattern's host never matches path tokens
            limit = u.host_elems if pg.in_host[pe] else u.nel
            # One or more tokens: the match ends after a token; try every such end, longest first.
            j = limit - 1
            while j >= e:
                if u.el_kind[j] == T_TOKEN and _match(u, j + 1, pg, pe + 1, pend, depth + 1):
                    return True
                j -= 1
            return False
        if e >= u.nel:
            return False
        if k == E_CARET:
            if u.el_kind[e] != T_TOKEN:
                return False
        elif k == E_LIT:
            if u.el_kind[e] != T_TOKEN or not _elem_eq(u, e, pg, pe):
                return False
        else:
            if u.el_kind[e] != T_SEP or not _elem_eq(u, e, pg, pe):
                return False
        e += 1
        pe += 1
    return True


cdef int _normalize(Url* u, const uint8_t* h, Py_ssize_t hn, const uint8_t* p, Py_ssize_t pn) noexcept nogil:
    """Fill u from a host and a path; 0, or 1 when the URL was cut at MAX_URL bytes / MAX_ELEMS elements."""
    cdef Py_ssize_t k, colon = -1, start
    cdef int cut = 0
    cdef int32_t n = 0
    cdef uint8_t c
    # Host: lower-case, without ":port" and the trailing dot of a fully qualified name.
    for k in range(hn):
        if h[k] == 58:  # ':'
            colon = k
            break
    if colon >= 0:
        hn = colon
    while hn > 0 and h[hn - 1] == 46:
        hn -= 1
    if hn > MAX_URL - 2:
        hn = MAX_URL - 2
        cut = 1
    for k in range(hn):
        u.buf[n] = _lower(h[k])
        n += 1
    u.host_len = n
    u.buf[n] = 47
    n += 1
    start = 1 if pn > 0 and p[0] == 47 else 0
    for k in range(start, pn):
        if n >= MAX_URL:
            cut = 1
            break
        u.buf[n] = _lower(p[k])
        n += 1
    u.n = n
    # Elements: tokens (maximal runs without separators) and single separator characters.
    u.nel = 0
    u.host_elems = -1
    k = 0
    while k < n:
        if u.nel >= MAX_ELEMS:
            cut = 1
            break
        if k == u.host_len and u.host_elems < 0:
            u.host_elems = u.nel
        c = u.buf[k]
        u.el_off[u.nel] = <int32_t>k
        if _is_sep(c):
            u.el_kind[u.nel] = T_SEP
            u.el_len[u.nel] = 1
            k += 1
        else:
            u.el_kind[u.nel] = T_TOKEN
            start = k
            while k < n and not _is_sep(u.buf[k]):
                k += 1
            u.el_len[u.nel] = <int32_t>(k - start)
        u.nel += 1
    if u.host_elems < 0:
        u.host_elems = u.nel
    return cut


cdef inline int _add(int32_t* row, int32_t* cnt, Py_ssize_t kmax, int32_t cat) noexcept nogil:
    """Insert cat into the sorted row (no duplicates); 1 when an id had to be dropped (row full)."""
    cdef int32_t j, m = cnt[0]
    cdef int dropped = 0
    for j in range(m):
        if row[j] == cat:
            return 0
    if m >= kmax:
        # Full: keep the smallest ids (custom categories come first), drop the largest.
        if cat > row[m - 1]:
            return 1
        m -= 1
        dropped = 1
    j = m
    while j > 0 and row[j - 1] > cat:
        row[j] = row[j - 1]
        j -= 1
    row[j] = cat
    cnt[0] = m + 1
    return dropped


cdef Py_ssize_t _lower_bound(const uint64_t* a, Py_ssize_t n, uint64_t v) noexcept nogil:
    cdef Py_ssize_t lo = 0, hi = n, mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if a[mid] < v:
            lo = mid + 1
        else:
            hi = mid
    return lo


def categorize_urls(const uint8_t[::1] host_data not None, const int64_t[::1] host_off not None,
                    const int64_t[::1] host_len not None, const uint8_t[::1] path_data not None,
                    const int64_t[::1] path_off not None, const int64_t[::1] path_len not None,
                    const uint64_t[::1] key_hash not None, const uint8_t[::1] key_text not None,
                    const int64_t[::1] key_off not None, const int32_t[::1] key_len not None,
                    const uint8_t[::1] key_kind not None, const int32_t[::1] key_cat not None,
                    const int64_t[::1] prog_start not None, const int32_t[::1] prog_cat not None,
                    const uint64_t[::1] prog_mask not None,
                    const uint8_t[::1] pe_kind not None, const uint8_t[::1] pe_in_host not None,
                    const int64_t[::1] pe_off not None, const int32_t[::1] pe_len not None,
                    const uint8_t[::1] pe_text not None, int32_t unknown_cat,
                    int32_t[:, ::1] out not None, int32_t[::1] count not None, uint8_t[::1] flags not None):
    """Categorise n URLs: every matching category id into ``out[i, :count[i]]`` (ascending, -1 after).

    Parameters
    ----------
    host_data, host_off, host_len : uint8[*], int64[n], int64[n]
        Host of URL i: ``host_data[host_off[i] : host_off[i] + host_len[i]]``; ``host_len[i] < 0`` means no URL (the
        row stays -1, count 0).
    path_data, path_off, path_len : uint8[*], int64[n], int64[n]
        Path of URL i (``path_len[i] <= 0``: ``/``).
    key_hash, key_text, key_off, key_len, key_kind, key_cat : host entries sorted by ``key_hash`` (see module doc).
    prog_start : int64[n_progs + 1]
        Pattern p's elements are ``pe_*[prog_start[p] : prog_start[p + 1]]``; its category is ``prog_cat[p]``.
    prog_mask : uint64[n_progs]
        Bit ``fnv(token) & 63`` of every literal token of pattern p: a URL lacking one of them is skipped without
        running the program (a 64-bit Bloom filter of the URL's tokens).
    pe_kind, pe_in_host, pe_off, pe_len, pe_text : the elements of every pattern (literal text in ``pe_text``).
    unknown_cat : int32
        Category of a URL that matches nothing (-1: none).
    out : int32[n, kmax]
        Matches of each URL, smallest ids first; when more than kmax match, the smallest kmax are kept.
    count : int32[n]
        Number of ids written per URL.
    flags : uint8[n]
        Bit 0: the URL was longer than the kernel's limits (2,048 bytes / 512 elements) and matched on its start;
        bit 1: more categories matched than ``out`` has columns.

    Raises
    ------
    ValueError
        On arrays whose lengths disagree or offsets outside their arenas (checked before the loop).
    """
    cdef Py_ssize_t n = host_off.shape[0], i, nk = key_hash.shape[0], npg = prog_cat.shape[0], kmax = out.shape[1]
    cdef Py_ssize_t b, lo, q, p
    cdef Url* u
    cdef Prog pg
    cdef uint64_t h, umask
    cdef int32_t* row
    cdef int32_t cnt
    cdef bint db_done, first_label
    cdef uint8_t f
    cdef const uint8_t* hp
    cdef const uint8_t* pp
    cdef Py_ssize_t hl, pl
    for name, arr_n in (("host_len", host_len.shape[0]), ("path_off", path_off.shape[0]),
                        ("path_len", path_len.shape[0]), ("out", out.shape[0]), ("count", count.shape[0]),
                        ("flags", flags.shape[0])):
        if arr_n != n:
            raise ValueError(f"{name} has length {arr_n}, expected {n}")
    if kmax < 1:
        raise ValueError("out needs at least one column")
    for name, arr_n in (("key_text offsets", key_off.shape[0]), ("key_len", key_len.shape[0]),
                        ("key_kind", key_kind.shape[0]), ("key_cat", key_cat.shape[0])):
        if arr_n != nk:
            raise ValueError(f"{name} has length {arr_n}, expected {nk}")
    for q in range(nk):
        if key_off[q] < 0 or key_len[q] < 0 or key_off[q] + key_len[q] > key_text.shape[0] or key_kind[q] > K_CARET:
            raise ValueError(f"host entry {q} is malformed")
        if q > 0 and key_hash[q] < key_hash[q - 1]:
            raise ValueError("key_hash must be sorted")
    if prog_mask.shape[0] != npg:
        raise ValueError(f"prog_mask has length {prog_mask.shape[0]}, expected {npg}")
    if prog_start.shape[0] != npg + 1 or prog_start[0] != 0 or prog_start[npg] != pe_kind.shape[0]:
        raise ValueError("prog_start must hold n_progs + 1 offsets from 0 to len(pe_kind)")
    for name, arr_n in (("pe_in_host", pe_in_host.shape[0]), ("pe_off", pe_off.shape[0]),
                        ("pe_len", pe_len.shape[0])):
        if arr_n != pe_kind.shape[0]:
            raise ValueError(f"{name} has length {arr_n}, expected {pe_kind.shape[0]}")
    for p in range(npg):
        if prog_start[p] > prog_start[p + 1]:
            raise ValueError("prog_start must be non-decreasing")
    for q in range(pe_kind.shape[0]):
        if pe_kind[q] > E_STAR or pe_off[q] < 0 or pe_len[q] < 0 or pe_off[q] + pe_len[q] > pe_text.shape[0]:
            raise ValueError(f"pattern element {q} is malformed")
    for i in range(n):
        if host_len[i] >= 0 and (host_off[i] < 0 or host_off[i] + host_len[i] > host_data.shape[0]):
            raise ValueError(f"host {i} lies outside host_data")
        if path_len[i] > 0 and (path_off[i] < 0 or path_off[i] + path_len[i] > path_data.shape[0]):
            raise ValueError(f"path {i} lies outside path_data")
    u = <Url*>PyMem_Malloc(sizeof(Url))
    if u == NULL:
        raise MemoryError()
    pg.kind = &pe_kind[0] if pe_kind.shape[0] else NULL
    pg.in_host = &pe_in_host[0] if pe_kind.shape[0] else NULL
    pg.off = &pe_off[0] if pe_kind.shape[0] else NULL
    pg.length = &pe_len[0] if pe_kind.shape[0] else NULL
    pg.text = &pe_text[0] if pe_text.shape[0] else NULL
    try:
        with nogil:
            for i in range(n):
                row = &out[i, 0]
                for q in range(kmax):
                    row[q] = -1
                count[i] = 0
                flags[i] = 0
                if host_len[i] < 0:
                    continue
                hl = host_len[i]
                pl = path_len[i] if path_len[i] > 0 else 0
                hp = &host_data[0] + host_off[i] if hl > 0 else NULL
                pp = &path_data[0] + path_off[i] if pl > 0 else NULL
                f = <uint8_t>_normalize(u, hp, hl, pp, pl)
                cnt = 0
                # Host entries: every label boundary b of the host, longest suffix first.
                db_done = False
                first_label = True
                b = 0
                while b <= u.host_len and nk > 0:
                    h = _fnv(&u.buf[b], u.host_len - b)
                    lo = _lower_bound(&key_hash[0], nk, h)
                    q = lo
                    while q < nk and key_hash[q] == h:
                        if key_len[q] == u.host_len - b and _bytes_eq(&key_text[0] + key_off[q], &u.buf[b], key_len[q]):
                            if ((key_kind[q] == K_DB and not db_done) or (key_kind[q] == K_EXACT and b == 0)
                                    or (key_kind[q] == K_STAR and b > 0)
                                    or (key_kind[q] == K_CARET and b > 0 and first_label)):
                                if _add(row, &cnt, kmax, key_cat[q]):
                                    f |= 2
                        q += 1
                    # The most specific database domain decides; shorter suffixes still take wildcard entries.
                    q = lo
                    while q < nk and key_hash[q] == h:
                        if key_kind[q] == K_DB and key_len[q] == u.host_len - b and _bytes_eq(
                                &key_text[0] + key_off[q], &u.buf[b], key_len[q]):
                            db_done = True
                        q += 1
                    if b > 0:
                        first_label = False
                    # Next label boundary.
                    while b < u.host_len and u.buf[b] != 46:
                        b += 1
                    b += 1
                    if b > u.host_len:
                        break
                umask = 0
                for q in range(u.nel):
                    if u.el_kind[q] == T_TOKEN:
                        umask |= (<uint64_t>1) << (_fnv(&u.buf[u.el_off[q]], u.el_len[q]) & 63)
                for p in range(npg):
                    if prog_mask[p] & ~umask:
                        continue  # a literal token of the pattern is not in the URL
                    if _match(u, 0, &pg, prog_start[p], prog_start[p + 1], 0):
                        if _add(row, &cnt, kmax, prog_cat[p]):
                            f |= 2
                if cnt == 0 and unknown_cat >= 0:
                    row[0] = unknown_cat
                    cnt = 1
                count[i] = cnt
                flags[i] = f
    finally:
        PyMem_Free(u)


