# pcap / pcapng record scanners and the classic-pcap record writer.
#
# The scanners walk record or block headers in a byte buffer and fill the per-packet columns of a batch in one
# nogil pass. They never trust a length: every record must lie inside the buffer, caplen is checked against a
# bound before anything depends on it, and the first problem stops the scan with a code (the caller turns it
# into a PcapError naming the file offset, after delivering the packets scanned before it).
from libc.errno cimport EINTR, EIO, errno
from libc.stdint cimport UINT32_MAX, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset
from posix.uio cimport iovec, writev

from gwlb_fast._kernels._bytes cimport load_be16, load_be32, load_le16, load_le32, store_be16, store_le32
from gwlb_fast._kernels._link cimport short_link_header

import os

cdef enum:
    _S_OK = 0             # stopped at max_n packets or exactly at the end of the buffer
    _S_NEED_MORE = 1      # the record/block at pos is incomplete; aux = its total length (0: header incomplete)
    _S_BAD_CAPLEN = 2     # caplen above the bound; aux = caplen
    _S_CONTROL = 3        # pcapng section header or interface description block at pos; aux = block type
    _S_BAD_BLOCK_LEN = 4  # pcapng block length < minimum or not a multiple of 4; aux = length
    _S_BAD_TRAILER = 5    # pcapng trailing block length differs from the leading one; aux = trailing length
    _S_BAD_IFACE = 6      # packet block names an interface not described in this section; aux = interface id
    _S_BAD_LINKTYPE = 7   # packet on an interface whose link type is not supported; aux = link type
    _S_BLOCK_CAPLEN = 8   # captured length runs past the block body; aux = caplen

SCAN_OK = _S_OK
SCAN_NEED_MORE = _S_NEED_MORE
SCAN_BAD_CAPLEN = _S_BAD_CAPLEN
SCAN_CONTROL = _S_CONTROL
SCAN_BAD_BLOCK_LEN = _S_BAD_BLOCK_LEN
SCAN_BAD_TRAILER = _S_BAD_TRAILER
SCAN_BAD_IFACE = _S_BAD_IFACE
SCAN_BAD_LINKTYPE = _S_BAD_LINKTYPE
SCAN_BLOCK_CAPLEN = _S_BLOCK_CAPLEN

cdef enum:
    PCAP_REC_HDR = 16
    BT_SHB = 0x0A0D0D0A
    BT_IDB = 1
    BT_OPB = 2            # obsolete Packet Block (pcapng draft); still written by old tools
    BT_SPB = 3
    BT_EPB = 6
    LT_NULL = 0
    LT_ETHERNET = 1
    LT_PPP = 9
    LT_RAW = 101
    LT_LOOP = 108
    LT_LINUX_SLL = 113
    LT_IPV4 = 228
    LT_LINUX_SLL2 = 276
    ETH_HLEN = 14
    SLL_HLEN = 16
    SLL2_HLEN = 20
    NS_PER_S = 1000000000  # a constant, not a variable: divisions by it compile to multiplies

cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define GWLB_PREFETCH(p) __builtin_prefetch((const void *)(p))
    #else
    #define GWLB_PREFETCH(p) ((void)0)
    #endif
    """
    void GWLB_PREFETCH(const void* p) noexcept nogil

cdef extern from *:
    """
    /* floor(a * b / 2^s) modulo 2^64, exact: 64x64 -> 128-bit product from 32-bit halves (no __int128 needed) */
    static inline uint64_t gwlb_mul_shr(uint64_t a, uint64_t b, unsigned s) {
        uint64_t a0 = (uint32_t)a, a1 = a >> 32, b0 = (uint32_t)b, b1 = b >> 32;
        uint64_t p00 = a0 * b0, p01 = a0 * b1, p10 = a1 * b0, p11 = a1 * b1;
        uint64_t mid = (p00 >> 32) + (uint32_t)p01 + (uint32_t)p10;
        uint64_t lo = (mid << 32) | (uint32_t)p00;
        uint64_t hi = p11 + (p01 >> 32) + (p10 >> 32) + (mid >> 32);
        if (s == 0) return lo;
        if (s < 64) return (lo >> s) | (hi << (64 - s));
        if (s < 128) return hi >> (s - 64);
        return 0;
    }
    """
    uint64_t gwlb_mul_shr(uint64_t a, uint64_t b, unsigned s) noexcept nogil

# Record headers form a chain (each position depends on the previous caplen), so a plain scan waits on one cache
# miss per record. Prefetching the lines ahead of the cursor turns that into a sequential stream; the lines are
# also the packet headers the parse kernel reads next.
cdef enum:
    PREFETCH_AHEAD = 4096
    CACHE_LINE = 64


cdef inline uint32_t _ld32(const uint8_t* p, bint big) noexcept nogil:
    return load_be32(p) if big else load_le32(p)


cdef inline uint16_t _ld16(const uint8_t* p, bint big) noexcept nogil:
    return load_be16(p) if big else load_le16(p)


cdef inline bint _linktype_ok(uint32_t lt) noexcept nogil:
    return (lt == LT_ETHERNET or lt == LT_RAW or lt == LT_LINUX_SLL or lt == LT_IPV4 or lt == LT_LINUX_SLL2
            or lt == LT_NULL or lt == LT_LOOP or lt == LT_PPP)


cdef inline int64_t _units_to_ns(uint64_t units, int64_t mul, uint64_t div, int32_t shift,
                                 int64_t offset) noexcept nogil:
    """pcapng timestamp units -> ns, floored and exact. Decimal resolutions use ``units * mul // div``, binary ones
    (2^-shift, shift >= 0) a 128-bit product. Unsigned arithmetic wraps (defined behaviour) on absurd values."""
    cdef uint64_t ns
    if shift < 0:
        ns = (units * <uint64_t>mul) / div
    else:
        ns = gwlb_mul_shr(units, NS_PER_S, <unsigned>shift)
    return <int64_t>(ns + <uint64_t>offset)


cdef int _check_out(str kernel, Py_ssize_t max_n, object cols) except -1:
    for name, col in cols:
        if col.shape[0] < max_n:
            raise ValueError(f"{kernel}: {name} has length {col.shape[0]}, need at least max_n={max_n}")
    return 0


def scan_pcap(const uint8_t[::1] buf, Py_ssize_t pos, Py_ssize_t origin, Py_ssize_t max_n, bint big_endian,
              int64_t frac_ns, uint32_t max_caplen, int64_t[::1] off, uint32_t[::1] caplen,
              uint32_t[::1] wirelen, int64_t[::1] ts_ns):
    """Scan classic pcap records from ``buf[pos:]`` and fill the packet columns.

    Record header (16 bytes, file byte order): ts_sec u32 | ts_frac u32 (us or ns) | caplen u32 | wirelen u32.

    Parameters
    ----------
    buf : uint8[::1]
        Valid file bytes (the buffer ends where the read data ends).
    pos : int
        Index of the first record header in ``buf``.
    origin : int
        Index in ``buf`` of the batch's arena start: ``off[i]`` is stored relative to it.
    max_n : int
        Stop after this many packets.
    big_endian : bool
        Byte order of the record headers (the file's magic said).
    frac_ns : int64
        Nanoseconds per unit of ts_frac: 1000 for the microsecond magic, 1 for the nanosecond one.
    max_caplen : uint32
        Largest acceptable caplen (the file's snaplen, capped by the reader's sane bound).
    off : int64[>= max_n] out
    caplen, wirelen : uint32[>= max_n] out
    ts_ns : int64[>= max_n] out

    Returns
    -------
    (n, pos, code, aux) : tuple of int
        Packets written, index after the last complete record scanned, SCAN_* code, detail for the code.

    Notes
    -----
    Codes: SCAN_OK (max_n reached or buffer ends on a record boundary), SCAN_NEED_MORE (the record at ``pos`` is
    cut by the end of the buffer; aux = its total length, 0 when the 16-byte header itself is cut),
    SCAN_BAD_CAPLEN (caplen > max_caplen; aux = caplen).
    """
    if max_n < 0:
        raise ValueError(f"scan_pcap: max_n must be >= 0, got {max_n}")
    if pos < 0 or pos > buf.shape[0] or origin < 0 or origin > pos:
        raise ValueError(f"scan_pcap: need 0 <= origin <= pos <= len(buf), got {origin}, {pos}, {buf.shape[0]}")
    _check_out("scan_pcap", max_n, (("off", off), ("caplen", caplen), ("wirelen", wirelen), ("ts_ns", ts_ns)))
    cdef Py_ssize_t end = buf.shape[0], n = 0
    cdef int code = _S_OK
    cdef uint64_t aux = 0
    cdef const uint8_t* p
    cdef uint32_t sec, frac, cl, wl
    cdef Py_ssize_t pf = pos
    cdef const uint8_t* base = &buf[0] if end > 0 else NULL
    with nogil:
        while n < max_n:
            while pf < pos + PREFETCH_AHEAD and pf < end:
                GWLB_PREFETCH(base + pf)
                pf += CACHE_LINE
            if end - pos < PCAP_REC_HDR:
                if end != pos:
                    code = _S_NEED_MORE
                break
            p = &buf[pos]
            sec = _ld32(p, big_endian)
            frac = _ld32(p + 4, big_endian)
            cl = _ld32(p + 8, big_endian)
            wl = _ld32(p + 12, big_endian)
            if cl > max_caplen:
                code = _S_BAD_CAPLEN
                aux = cl
                break
            if <Py_ssize_t>cl > end - pos - PCAP_REC_HDR:
                code = _S_NEED_MORE
                aux = PCAP_REC_HDR + <uint64_t>cl
                break
            off[n] = pos + PCAP_REC_HDR - origin
            caplen[n] = cl
            wirelen[n] = wl
            ts_ns[n] = <int64_t>(<uint64_t>sec * NS_PER_S + <uint64_t>frac * <uint64_t>frac_ns)
            pos += PCAP_REC_HDR + cl
            n += 1
    return n, pos, code, aux


def scan_pcapng(const uint8_t[::1] buf, Py_ssize_t pos, Py_ssize_t origin, Py_ssize_t max_n, bint big_endian,
                const uint16_t[::1] if_linktype, const uint32_t[::1] if_snaplen, const int64_t[::1] if_ts_mul,
                const uint64_t[::1] if_ts_div, const int32_t[::1] if_ts_shift, const int64_t[::1] if_ts_off,
                uint32_t max_caplen, int64_t[::1] off, uint32_t[::1] caplen, uint32_t[::1] wirelen,
                int64_t[::1] ts_ns, uint16_t[::1] linktype):
    """Scan pcapng blocks of one section from ``buf[pos:]``; fill the columns for packet blocks.

    Block: type u32 | total length u32 | body | total length u32 (section byte order, length a multiple of 4).
    Enhanced Packet Block (6) body: interface id u32 | ts high u32 | ts low u32 | caplen u32 | orig len u32 |
    data padded to 4 | options. Simple Packet Block (3) body: orig len u32 | data (interface 0, no timestamp:
    ts_ns 0). Obsolete Packet Block (2): interface id u16 | drops u16 | then as the EPB. Other block types are
    skipped (their trailing length is still checked); section header (0x0A0D0D0A) and interface description (1)
    blocks stop the scan so that the caller can update the byte order and the interface table.

    Parameters
    ----------
    buf : uint8[::1]
        Valid file bytes.
    pos, origin, max_n : int
        As for ``scan_pcap``.
    big_endian : bool
        The current section's byte order.
    if_linktype : uint16[m]
        Link type per interface of the current section.
    if_snaplen : uint32[m]
        Snap length per interface (0: none); bounds Simple Packet Block captures.
    if_ts_mul : int64[m]
    if_ts_div : uint64[m]
        Decimal resolutions: ``ns = units * mul // div``.
    if_ts_shift : int32[m]
        Binary resolutions 2^-shift (shift >= 0), or -1 for a decimal one.
    if_ts_off : int64[m]
        if_tsoffset in ns, added to every timestamp.
    max_caplen : uint32
        Sane bound on caplen.
    off : int64[>= max_n] out
    caplen, wirelen : uint32[>= max_n] out
    ts_ns : int64[>= max_n] out
    linktype : uint16[>= max_n] out

    Returns
    -------
    (n, pos, code, aux) : tuple of int

    Notes
    -----
    Codes: SCAN_OK, SCAN_NEED_MORE (aux = block length, 0 when fewer than 12 bytes remain), SCAN_CONTROL
    (aux = block type), SCAN_BAD_BLOCK_LEN, SCAN_BAD_TRAILER, SCAN_BAD_IFACE, SCAN_BAD_LINKTYPE, SCAN_BAD_CAPLEN,
    SCAN_BLOCK_CAPLEN.
    """
    cdef Py_ssize_t m = if_linktype.shape[0], i
    if max_n < 0:
        raise ValueError(f"scan_pcapng: max_n must be >= 0, got {max_n}")
    if pos < 0 or pos > buf.shape[0] or origin < 0 or origin > pos:
        raise ValueError(f"scan_pcapng: need 0 <= origin <= pos <= len(buf), got {origin}, {pos}, {buf.shape[0]}")
    for name, col in (("if_snaplen", if_snaplen), ("if_ts_mul", if_ts_mul), ("if_ts_div", if_ts_div),
                      ("if_ts_shift", if_ts_shift), ("if_ts_off", if_ts_off)):
        if col.shape[0] != m:
            raise ValueError(f"scan_pcapng: {name} has length {col.shape[0]}, expected {m} (as if_linktype)")
    for i in range(m):
        if if_ts_shift[i] < 0 and if_ts_div[i] == 0:
            raise ValueError(f"scan_pcapng: if_ts_div[{i}] must be > 0 for a decimal resolution")
    _check_out("scan_pcapng", max_n, (("off", off), ("caplen", caplen), ("wirelen", wirelen), ("ts_ns", ts_ns),
                                      ("linktype", linktype)))
    cdef Py_ssize_t end = buf.shape[0], n = 0, avail, hdr
    cdef int code = _S_OK
    cdef uint64_t aux = 0
    cdef const uint8_t* p
    cdef uint32_t btype, blen, ifid, cl, wl, lt
    cdef uint64_t units
    cdef Py_ssize_t pf = pos
    cdef const uint8_t* base = &buf[0] if end > 0 else NULL
    with nogil:
        while n < max_n:
            while pf < pos + PREFETCH_AHEAD and pf < end:
                GWLB_PREFETCH(base + pf)
                pf += CACHE_LINE
            avail = end - pos
            if avail < 12:
                if avail >= 4 and _ld32(&buf[pos], big_endian) == BT_SHB:
                    # the SHB's own byte-order magic decides how to read it: the caller's job
                    code = _S_CONTROL
                    aux = BT_SHB
                elif avail != 0:
                    code = _S_NEED_MORE
                break
            p = &buf[pos]
            btype = _ld32(p, big_endian)
            if btype == BT_SHB:
                code = _S_CONTROL
                aux = btype
                break
            blen = _ld32(p + 4, big_endian)
            if blen < 12 or (blen & 3) != 0:
                code = _S_BAD_BLOCK_LEN
                aux = blen
                break
            if <Py_ssize_t>blen > avail:
                code = _S_NEED_MORE
                aux = blen
                break
            if _ld32(p + blen - 4, big_endian) != blen:
                code = _S_BAD_TRAILER
                aux = _ld32(p + blen - 4, big_endian)
                break
            if btype == BT_IDB:
                code = _S_CONTROL
                aux = btype
                break
            if btype == BT_EPB or btype == BT_OPB or btype == BT_SPB:
                if btype == BT_SPB:
                    hdr = 12
                    if blen < 16:
                        code = _S_BAD_BLOCK_LEN
                        aux = blen
                        break
                    ifid = 0
                    wl = _ld32(p + 8, big_endian)
                    cl = wl
                    if cl > blen - 16:
                        cl = blen - 16
                    if m > 0 and if_snaplen[0] != 0 and cl > if_snaplen[0]:
                        cl = if_snaplen[0]
                    units = 0
                else:
                    hdr = 28
                    if blen < 32:
                        code = _S_BAD_BLOCK_LEN
                        aux = blen
                        break
                    ifid = _ld32(p + 8, big_endian) if btype == BT_EPB else _ld16(p + 8, big_endian)
                    units = (<uint64_t>_ld32(p + 12, big_endian) << 32) | _ld32(p + 16, big_endian)
                    cl = _ld32(p + 20, big_endian)
                    wl = _ld32(p + 24, big_endian)
                if ifid >= <uint64_t>m:
                    code = _S_BAD_IFACE
                    aux = ifid
                    break
                if cl > max_caplen:
                    code = _S_BAD_CAPLEN
                    aux = cl
                    break
                if <uint64_t>cl > <uint64_t>(blen - 4 - hdr):
                    code = _S_BLOCK_CAPLEN
                    aux = cl
                    break
                lt = if_linktype[ifid]
                if not _linktype_ok(lt):
                    code = _S_BAD_LINKTYPE
                    aux = lt
                    break
                off[n] = pos + hdr - origin
                caplen[n] = cl
                wirelen[n] = wl
                linktype[n] = <uint16_t>lt
                if btype == BT_SPB:
                    ts_ns[n] = 0
                else:
                    ts_ns[n] = _units_to_ns(units, if_ts_mul[ifid], if_ts_div[ifid], if_ts_shift[ifid],
                                            if_ts_off[ifid])
                n += 1
            pos += blen
    return n, pos, code, aux


# ---------------------------------------------------------------------------------------------------- resync
# A corrupt record (a caplen beyond the format's maximum, a pcapng block whose lengths disagree, ...) leaves the
# reader without a record boundary. These kernels look for the next plausible one, so that one damaged record does
# not cost the rest of the capture: a candidate must look like a record header and be followed by a second one
# (or end exactly at the end of the file), which a run of packet bytes almost never does twice in a row.
cdef inline bint _pcap_hdr_ok(const uint8_t* p, bint big, uint32_t frac_limit, uint32_t max_caplen,
                              int64_t sec_lo, int64_t sec_hi) noexcept nogil:
    cdef uint32_t sec = _ld32(p, big), frac = _ld32(p + 4, big), cl = _ld32(p + 8, big), wl = _ld32(p + 12, big)
    # a packet has at least one byte: runs of zeros (padding, zeroed pages) never pass
    return (frac < frac_limit and cl >= 1 and cl <= max_caplen and wl >= cl and wl <= max_caplen * 4
            and <int64_t>sec >= sec_lo and <int64_t>sec <= sec_hi)


def resync_pcap(const uint8_t[::1] buf, Py_ssize_t pos, bint big_endian, uint32_t frac_limit, uint32_t max_caplen,
                int64_t sec_lo, int64_t sec_hi, bint at_eof):
    """Find the next plausible classic record header at or after ``buf[pos]``.

    A candidate at q: frac < frac_limit (1e6 for microseconds, 1e9 for nanoseconds), 1 <= caplen <= max_caplen,
    caplen <= wirelen <= 4 * max_caplen, sec_lo <= ts_sec <= sec_hi; and the record after it is a candidate too, or
    the candidate ends exactly at the end of the buffer when ``at_eof``.

    Returns
    -------
    (found, searched) : tuple of int
        ``found``: index of the record, or -1. ``searched``: when nothing was found, the first index not yet ruled
        out (the caller reads more bytes and calls again from there; at EOF it is the buffer's end).
    """
    cdef Py_ssize_t end = buf.shape[0], q, q2
    cdef uint32_t cl
    if pos < 0 or pos > end:
        raise ValueError(f"resync_pcap: pos {pos} outside the buffer of {end} bytes")
    cdef Py_ssize_t found = -1
    q = pos
    with nogil:
        while q + PCAP_REC_HDR <= end:
            if _pcap_hdr_ok(&buf[q], big_endian, frac_limit, max_caplen, sec_lo, sec_hi):
                cl = _ld32(&buf[q + 8], big_endian)
                q2 = q + PCAP_REC_HDR + cl
                if q2 == end and at_eof:
                    found = q
                    break
                if q2 + PCAP_REC_HDR <= end:
                    if _pcap_hdr_ok(&buf[q2], big_endian, frac_limit, max_caplen, sec_lo, sec_hi):
                        found = q
                        break
                elif not at_eof:
                    break  # the check needs bytes beyond the buffer
            q += 1
    if found >= 0:
        return found, found
    return -1, (end if at_eof else q)


cdef inline bint _known_block(uint32_t btype) noexcept nogil:
    # pcapng block types: IDB, OPB, SPB, NRB, ISB, EPB, DSB, SHB
    return (btype == 1 or btype == 2 or btype == 3 or btype == 4 or btype == 5 or btype == 6 or btype == 10
            or btype == BT_SHB)


def resync_pcapng(const uint8_t[::1] buf, Py_ssize_t pos, bint big_endian, uint32_t n_interfaces,
                  uint32_t max_block, bint at_eof):
    """Find the next plausible pcapng block at or after ``buf[pos]``, on 4-byte steps from ``pos``.

    A candidate at q: a known block type (a section header block is recognised by its byte-order magic, in either
    order); for other types, a length that is >= 12, a multiple of 4 and <= max_block, whose trailing copy agrees;
    for packet blocks, an interface id below ``n_interfaces``.

    Returns
    -------
    (found, searched) : tuple of int
        As for ``resync_pcap``.
    """
    cdef Py_ssize_t end = buf.shape[0], q
    cdef uint32_t btype, blen, ifid
    if pos < 0 or pos > end:
        raise ValueError(f"resync_pcapng: pos {pos} outside the buffer of {end} bytes")
    cdef Py_ssize_t found = -1
    cdef bint need = False
    q = pos
    with nogil:
        while q + 12 <= end:
            btype = _ld32(&buf[q], big_endian)
            if (load_be32(&buf[q]) == BT_SHB
                    and ((buf[q + 8] == 0x1A and buf[q + 9] == 0x2B and buf[q + 10] == 0x3C and buf[q + 11] == 0x4D)
                         or (buf[q + 8] == 0x4D and buf[q + 9] == 0x3C and buf[q + 10] == 0x2B
                             and buf[q + 11] == 0x1A))):
                found = q
                break
            if _known_block(btype) and btype != BT_SHB:
                blen = _ld32(&buf[q + 4], big_endian)
                if blen >= 12 and (blen & 3) == 0 and blen <= max_block:
                    if <Py_ssize_t>blen > end - q:
                        if not at_eof:
                            need = True
                            break
                    elif _ld32(&buf[q + blen - 4], big_endian) == blen:
                        if btype == BT_EPB or btype == BT_OPB:
                            if blen >= 32:
                                ifid = _ld32(&buf[q + 8], big_endian) if btype == BT_EPB else _ld16(&buf[q + 8],
                                                                                                   big_endian)
                                if ifid < n_interfaces:
                                    found = q
                                    break
                        else:
                            found = q
                            break
            q += 4
    if found >= 0:
        return found, found
    return -1, (end if at_eof and not need else q)


# ---------------------------------------------------------------------------------------------------- writing
# Conversion to LINKTYPE_ETHERNET for classic files whose batches mix link types: raw IP gets a 14-byte Ethernet
# header with fixed locally administered MACs; Linux cooked (v1/v2), null/loopback and PPP headers are replaced by
# one (source MAC from a cooked header when it carries a 6-byte address). A packet shorter than its link header
# becomes a bare Ethernet header with ethertype 0.
cdef uint8_t[6] CONV_DST_MAC
cdef uint8_t[6] CONV_SRC_MAC
CONV_DST_MAC[:] = [0x02, 0, 0, 0, 0, 0x02]
CONV_SRC_MAC[:] = [0x02, 0, 0, 0, 0, 0x01]
CONVERTED_DST_MAC = bytes(CONV_DST_MAC[:6])
CONVERTED_SRC_MAC = bytes(CONV_SRC_MAC[:6])


cdef inline int _in_skip(const uint8_t* src, uint16_t lt, uint16_t out_lt, uint32_t cl, uint16_t* et) noexcept nogil:
    """Bytes of the packet's own link header dropped when converting, -1 if lt cannot become out_lt; et[0] gets
    the ethertype of the Ethernet header that replaces it.

    A result r >= 0 with out_lt != lt means: drop r bytes, prepend a 14-byte Ethernet header.
    """
    cdef Py_ssize_t h
    et[0] = 0
    if lt == out_lt:
        return 0
    if out_lt != LT_ETHERNET:
        return -1
    if lt == LT_RAW or lt == LT_IPV4:
        et[0] = 0x86DD if (lt == LT_RAW and cl > 0 and (src[0] >> 4) == 6) else 0x0800
        return 0
    if lt == LT_LINUX_SLL:
        if cl >= SLL_HLEN:
            et[0] = load_be16(src + 14)
            return SLL_HLEN
        return <int>cl
    if lt == LT_LINUX_SLL2:
        if cl >= SLL2_HLEN:
            et[0] = load_be16(src)
            return SLL2_HLEN
        return <int>cl
    if lt == LT_NULL or lt == LT_LOOP or lt == LT_PPP:
        h = short_link_header(src, cl, lt, et)
        return <int>cl if h < 0 else <int>h
    return -1


cdef inline int64_t _record_size(const uint8_t[::1] data, Py_ssize_t dlen, int64_t off, uint32_t caplen,
                                 uint16_t lt, uint16_t out_lt, uint32_t snaplen) noexcept nogil:
    """The size of the record ``write_pcap_records`` makes of one packet (its 16-byte header included), or -1 when
    it cannot be converted to ``out_lt`` (or, needing conversion, lies outside the arena)."""
    cdef int64_t cl = caplen
    cdef int skip
    cdef uint16_t et
    if lt != out_lt:
        if off < 0 or off + <int64_t>caplen > dlen:
            return -1
        skip = _in_skip(&data[0] + off if dlen > 0 else NULL, lt, out_lt, caplen, &et)
        if skip < 0:
            return -1
        cl = <int64_t>caplen - skip + ETH_HLEN
    if cl > snaplen:
        cl = snaplen
    return PCAP_REC_HDR + cl


def pcap_write_size(const uint8_t[::1] data, const int64_t[::1] off, const uint32_t[::1] caplen,
                    const uint16_t[::1] linktype, uint16_t out_linktype, uint32_t snaplen):
    """Bytes that ``write_pcap_records`` will produce (record headers included).

    Parameters
    ----------
    data : uint8[::1]
        Arena (a PPP header's length depends on its bytes).
    off : int64[n]
    caplen : uint32[n]
    linktype : uint16[n]
    out_linktype : uint16
        The file's link type.
    snaplen : uint32
        Captures longer than this (after conversion) are cut to it.

    Returns
    -------
    int
        Total size, or ``-(i + 1)`` when packet ``i`` cannot be converted to ``out_linktype`` (or lies outside
        the arena).
    """
    cdef Py_ssize_t n = caplen.shape[0], i, dlen = data.shape[0]
    if linktype.shape[0] != n or off.shape[0] != n:
        raise ValueError(f"pcap_write_size: off/linktype have lengths {off.shape[0]}/{linktype.shape[0]}, "
                         f"expected {n}")
    if snaplen < ETH_HLEN:
        raise ValueError(f"pcap_write_size: snaplen must be >= {ETH_HLEN}, got {snaplen}")
    cdef int64_t total = 0, size
    with nogil:
        for i in range(n):
            size = _record_size(data, dlen, off[i], caplen[i], linktype[i], out_linktype, snaplen)
            if size < 0:
                total = -(i + 1)
                break
            total += size
    return total


def pcap_record_sizes(const uint8_t[::1] data, const int64_t[::1] off, const uint32_t[::1] caplen,
                      const uint16_t[::1] linktype, uint16_t out_linktype, uint32_t snaplen, uint32_t[::1] out):
    """The size of each record ``write_pcap_records`` will produce (its 16-byte header included) into ``out``.

    Parameters as :func:`pcap_write_size`; ``out`` : uint32[n] out.

    Returns
    -------
    int
        Their sum, or ``-(i + 1)`` when packet ``i`` cannot be converted to ``out_linktype`` (or lies outside the
        arena); ``out`` then holds the sizes of the packets before it.
    """
    cdef Py_ssize_t n = caplen.shape[0], i, dlen = data.shape[0]
    if linktype.shape[0] != n or off.shape[0] != n or out.shape[0] != n:
        raise ValueError(f"pcap_record_sizes: off/linktype/out have lengths {off.shape[0]}/{linktype.shape[0]}/"
                         f"{out.shape[0]}, expected {n}")
    if snaplen < ETH_HLEN:
        raise ValueError(f"pcap_record_sizes: snaplen must be >= {ETH_HLEN}, got {snaplen}")
    cdef int64_t total = 0, size
    with nogil:
        for i in range(n):
            size = _record_size(data, dlen, off[i], caplen[i], linktype[i], out_linktype, snaplen)
            if size < 0:
                total = -(i + 1)
                break
            out[i] = <uint32_t>size
            total += size
    return total


cdef enum:
    _IOV_BATCH = 1024  # IOV_MAX on Linux


def write_pieces(int fd, const uint8_t[::1] data, const int64_t[::1] off, const uint32_t[::1] length):
    """Write ``data[off[i]:off[i] + length[i]]`` for each ``i`` in order to the file descriptor ``fd`` with
    ``writev`` (pieces that follow each other in ``data`` go as one; short writes and EINTR are resumed).

    Returns
    -------
    int
        Bytes written (the sum of ``length``).

    Raises
    ------
    ValueError
        ``off`` and ``length`` differ in length, or a piece lies outside ``data`` (checked before anything is
        written).
    OSError
        ``writev`` failed (the bytes before the failing call are in the file).
    """
    cdef Py_ssize_t n = off.shape[0], i, dlen = data.shape[0], k, j
    if length.shape[0] != n:
        raise ValueError(f"write_pieces: length has {length.shape[0]} entries, off has {n}")
    cdef Py_ssize_t bad = -1
    cdef int64_t total = 0, o
    cdef iovec[_IOV_BATCH] iov
    cdef uint8_t* base = <uint8_t*>&data[0] if dlen > 0 else NULL
    cdef Py_ssize_t got
    cdef size_t left
    cdef int err = 0
    with nogil:
        for i in range(n):
            if off[i] < 0 or off[i] + <int64_t>length[i] > dlen:
                bad = i
                break
            total += length[i]
        if bad < 0:
            i = 0
            while i < n and err == 0:
                k = 0
                # up to _IOV_BATCH pieces, each run of adjacent pieces as one
                while i < n and k < _IOV_BATCH:
                    if length[i] == 0:
                        i += 1
                        continue
                    o = off[i]
                    if k and <uint8_t*>iov[k - 1].iov_base + iov[k - 1].iov_len == base + o:
                        iov[k - 1].iov_len += length[i]
                    else:
                        iov[k].iov_base = base + o
                        iov[k].iov_len = length[i]
                        k += 1
                    i += 1
                j = 0
                while j < k:
                    got = writev(fd, &iov[j], <int>(k - j))
                    if got <= 0:
                        if got < 0 and errno == EINTR:
                            continue
                        err = errno if got < 0 else EIO  # nothing written: it would never end
                        break
                    # skip the pieces written whole, shorten the one written in part
                    left = <size_t>got
                    while j < k and left >= iov[j].iov_len:
                        left -= iov[j].iov_len
                        j += 1
                    if j < k:
                        iov[j].iov_base = <uint8_t*>iov[j].iov_base + left
                        iov[j].iov_len -= left
    if bad >= 0:
        raise ValueError(f"write_pieces: piece {bad} lies outside the buffer")
    if err:
        raise OSError(err, os.strerror(err))
    return total


cdef inline void _store_record_header(uint8_t* q, int64_t t, bint nanosecond, uint32_t cl,
                                      uint32_t wl) noexcept nogil:
    """A classic pcap record header (little-endian) at ``q``: floor seconds of ``t`` (ns) and the non-negative
    remainder in ns or us (truncated), then the captured and wire lengths."""
    cdef int64_t sec = t // <int64_t>NS_PER_S
    cdef int64_t frac = t - sec * <int64_t>NS_PER_S
    if frac < 0:
        sec -= 1
        frac += <int64_t>NS_PER_S
    if not nanosecond:
        frac = frac // 1000
    store_le32(q, <uint32_t>sec)
    store_le32(q + 4, <uint32_t>frac)
    store_le32(q + 8, cl)
    store_le32(q + 12, wl)


def frame_pcap_records(uint8_t[::1] data, const int64_t[::1] off, const uint32_t[::1] caplen,
                       const uint32_t[::1] wirelen, const int64_t[::1] ts_ns, const uint16_t[::1] linktype,
                       uint16_t out_linktype, bint nanosecond, uint32_t snaplen):
    """Write each packet's record header into the 16 bytes of ``data`` just before it, so that record ``i`` is
    ``data[off[i] - 16 : off[i] + caplen[i]]``, byte for byte what ``write_pcap_records`` makes of it (and the
    records of packets that follow each other in ``data`` with 16 bytes between them are one stretch).

    Only for packets that need no conversion and no cut: every link type equal to ``out_linktype``, every
    ``caplen`` at most ``snaplen``, and room for a header before each packet that no other packet uses (in order:
    ``off[i] >= 16`` and ``off[i] >= off[i - 1] + caplen[i - 1] + 16``, every packet inside ``data``). Checked
    first: when a packet does not qualify nothing is written.

    Returns
    -------
    int
        ``n``, or ``-(i + 1)`` for the first packet ``i`` that does not qualify.
    """
    cdef Py_ssize_t n = off.shape[0], i, bad = -1
    cdef int64_t dlen = data.shape[0], end = 0
    for name, col in (("caplen", caplen), ("wirelen", wirelen), ("ts_ns", ts_ns), ("linktype", linktype)):
        if col.shape[0] != n:
            raise ValueError(f"frame_pcap_records: {name} has length {col.shape[0]}, expected {n}")
    with nogil:
        for i in range(n):
            if (linktype[i] != out_linktype or caplen[i] > snaplen or off[i] < end + PCAP_REC_HDR
                    or off[i] + <int64_t>caplen[i] > dlen):
                bad = i
                break
            end = off[i] + <int64_t>caplen[i]
        if bad < 0:
            for i in range(n):
                _store_record_header(&data[off[i] - PCAP_REC_HDR], ts_ns[i], nanosecond, caplen[i],
                                     wirelen[i] if wirelen[i] >= caplen[i] else caplen[i])
    return n if bad < 0 else -(bad + 1)


def write_pcap_records(const uint8_t[::1] data, const int64_t[::1] off, const uint32_t[::1] caplen,
                       const uint32_t[::1] wirelen, const int64_t[::1] ts_ns, const uint16_t[::1] linktype,
                       uint16_t out_linktype, bint nanosecond, uint32_t snaplen, uint8_t[::1] out):
    """Gather record headers (little-endian) and packet bytes into ``out`` in one pass.

    Parameters
    ----------
    data : uint8[::1]
        Arena; packet i is ``data[off[i]:off[i] + caplen[i]]``.
    off : int64[n]
    caplen, wirelen : uint32[n]
    ts_ns : int64[n]
        Written as floor seconds (low 32 bits) and the non-negative remainder in ns or us (truncated).
    linktype : uint16[n]
        Packets whose link type differs from ``out_linktype`` are converted to Ethernet (see module comment).
    out_linktype : uint16
    nanosecond : bool
        Remainder in ns (file magic a1b23c4d) or us (a1b2c3d4).
    snaplen : uint32
    out : uint8[::1] out
        Exactly ``pcap_write_size(...)`` bytes.

    Returns
    -------
    int
        Bytes written (== len(out)).

    Raises
    ------
    ValueError
        Column lengths differ, a packet lies outside the arena, a link type cannot be converted, or ``out`` has
        the wrong size. Checked before anything is written.
    """
    cdef Py_ssize_t n = off.shape[0], i, dlen = data.shape[0], olen = out.shape[0]
    for name, col in (("caplen", caplen), ("wirelen", wirelen), ("ts_ns", ts_ns), ("linktype", linktype)):
        if col.shape[0] != n:
            raise ValueError(f"write_pcap_records: {name} has length {col.shape[0]}, expected {n}")
    if snaplen < ETH_HLEN:
        raise ValueError(f"write_pcap_records: snaplen must be >= {ETH_HLEN}, got {snaplen}")
    cdef int64_t need = 0, cl, wl
    cdef int skip
    cdef Py_ssize_t bad = -1, pos = 0, o
    cdef int problem = 0
    cdef uint8_t* q
    cdef const uint8_t* src
    cdef uint16_t et, lt
    with nogil:
        for i in range(n):
            if off[i] < 0 or off[i] + <int64_t>caplen[i] > dlen:
                bad = i
                problem = 2
                break
            src = &data[0] + off[i] if dlen > 0 else NULL
            skip = _in_skip(src, linktype[i], out_linktype, caplen[i], &et)
            if skip < 0:
                bad = i
                problem = 1
                break
            cl = <int64_t>caplen[i] - skip + (ETH_HLEN if linktype[i] != out_linktype else 0)
            if cl > snaplen:
                cl = snaplen
            need += PCAP_REC_HDR + cl
        if bad < 0 and need == olen:
            for i in range(n):
                lt = linktype[i]
                o = off[i]
                src = &data[0] + o if dlen > 0 else NULL
                skip = _in_skip(src, lt, out_linktype, caplen[i], &et)
                q = &out[pos]
                cl = <int64_t>caplen[i] - skip
                wl = <int64_t>wirelen[i] - skip
                if wl < cl:
                    wl = cl
                pos += PCAP_REC_HDR
                if lt != out_linktype:
                    # Ethernet header: fixed MACs (a cooked header's own source MAC when it has one), the ethertype
                    # the replaced header named
                    memcpy(&out[pos], CONV_DST_MAC, 6)
                    memcpy(&out[pos + 6], CONV_SRC_MAC, 6)
                    if lt == LT_LINUX_SLL and skip == SLL_HLEN:
                        if load_be16(src + 4) == 6:
                            memcpy(&out[pos + 6], src + 6, 6)
                    elif lt == LT_LINUX_SLL2 and skip == SLL2_HLEN:
                        if src[11] == 6:
                            memcpy(&out[pos + 6], src + 12, 6)
                    store_be16(&out[pos + 12], et)
                    cl += ETH_HLEN
                    wl += ETH_HLEN
                    if cl > snaplen:
                        cl = snaplen
                    if cl > ETH_HLEN:
                        memcpy(&out[pos + ETH_HLEN], src + skip, <size_t>(cl - ETH_HLEN))
                else:
                    if cl > snaplen:
                        cl = snaplen
                    if cl > 0:
                        memcpy(&out[pos], src, <size_t>cl)
                if wl > <int64_t>UINT32_MAX:
                    wl = UINT32_MAX
                _store_record_header(q, ts_ns[i], nanosecond, <uint32_t>cl, <uint32_t>wl)
                pos += cl
    if problem == 1:
        raise ValueError(f"write_pcap_records: packet {bad} has link type {linktype[bad]}, which cannot be "
                         f"written to a file of link type {out_linktype}")
    if problem == 2:
        raise ValueError(f"write_pcap_records: packet {bad} lies outside the arena")
    if need != olen:
        raise ValueError(f"write_pcap_records: out has {olen} bytes, the records need {need}")
    return pos


# Enhanced Packet Block (pcapng, little-endian section): type 6 u32 | block length u32 | interface id u32 |
# timestamp high u32 | timestamp low u32 | captured length u32 | original length u32 | data, padded to 4 |
# block length u32. The writer's interfaces all have if_tsresol 9, so the timestamp is ts_ns itself.
cdef enum:
    EPB_FIXED = 32


def pcapng_write_size(const uint32_t[::1] caplen, uint32_t snaplen):
    """Bytes that ``write_pcapng_records`` will produce: one EPB per packet, captures cut to ``snaplen``."""
    cdef Py_ssize_t n = caplen.shape[0], i
    cdef int64_t total = 0, cl
    with nogil:
        for i in range(n):
            cl = caplen[i]
            if cl > snaplen:
                cl = snaplen
            total += EPB_FIXED + ((cl + 3) & ~3)
    return total


def write_pcapng_records(const uint8_t[::1] data, const int64_t[::1] off, const uint32_t[::1] caplen,
                         const uint32_t[::1] wirelen, const int64_t[::1] ts_ns, const uint16_t[::1] linktype,
                         const uint32_t[::1] if_of_linktype, uint32_t snaplen, uint8_t[::1] out):
    """Gather little-endian Enhanced Packet Blocks into ``out`` in one pass.

    Parameters
    ----------
    data : uint8[::1]
        Arena; packet i is ``data[off[i]:off[i] + caplen[i]]``.
    off : int64[n]
    caplen, wirelen : uint32[n]
    ts_ns : int64[n]
        Nanoseconds (the interfaces' if_tsresol is 9), written as a 64-bit count (two's complement if negative).
    linktype : uint16[n]
    if_of_linktype : uint32[65536]
        Interface id of each link type (the caller has written an interface description block for every link
        type of the batch).
    snaplen : uint32
        Captures longer than this are cut to it (original length kept).
    out : uint8[::1] out
        Exactly ``pcapng_write_size(caplen, snaplen)`` bytes.

    Returns
    -------
    int
        Bytes written.

    Raises
    ------
    ValueError
        Column lengths differ, a packet lies outside the arena, or ``out`` has the wrong size. Checked before
        anything is written.
    """
    cdef Py_ssize_t n = off.shape[0], i, dlen = data.shape[0], olen = out.shape[0]
    for name, col in (("caplen", caplen), ("wirelen", wirelen), ("ts_ns", ts_ns), ("linktype", linktype)):
        if col.shape[0] != n:
            raise ValueError(f"write_pcapng_records: {name} has length {col.shape[0]}, expected {n}")
    if if_of_linktype.shape[0] != 65536:
        raise ValueError(f"write_pcapng_records: if_of_linktype has length {if_of_linktype.shape[0]}, "
                         f"expected 65536")
    cdef int64_t need = 0, cl, blen
    cdef Py_ssize_t bad = -1, pos = 0
    cdef uint64_t units
    cdef uint8_t* q
    with nogil:
        for i in range(n):
            if off[i] < 0 or off[i] + <int64_t>caplen[i] > dlen:
                bad = i
                break
            cl = caplen[i]
            if cl > snaplen:
                cl = snaplen
            need += EPB_FIXED + ((cl + 3) & ~3)
        if bad < 0 and need == olen:
            for i in range(n):
                cl = caplen[i]
                if cl > snaplen:
                    cl = snaplen
                blen = EPB_FIXED + ((cl + 3) & ~3)
                q = &out[pos]
                units = <uint64_t>ts_ns[i]
                store_le32(q, BT_EPB)
                store_le32(q + 4, <uint32_t>blen)
                store_le32(q + 8, if_of_linktype[linktype[i]])
                store_le32(q + 12, <uint32_t>(units >> 32))
                store_le32(q + 16, <uint32_t>units)
                store_le32(q + 20, <uint32_t>cl)
                store_le32(q + 24, wirelen[i] if wirelen[i] >= cl else <uint32_t>cl)
                if cl > 0:
                    memcpy(q + 28, &data[0] + off[i], <size_t>cl)
                # padding and the trailing length
                memset(q + 28 + cl, 0, <size_t>(blen - 4 - 28 - cl))
                store_le32(q + blen - 4, <uint32_t>blen)
                pos += blen
    if bad >= 0:
        raise ValueError(f"write_pcapng_records: packet {bad} lies outside the arena")
    if need != olen:
        raise ValueError(f"write_pcapng_records: out has {olen} bytes, the records need {need}")
    return pos
