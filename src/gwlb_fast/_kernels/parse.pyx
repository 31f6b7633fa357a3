# L2-L4 parse kernel: Ethernet / 802.1Q / 802.1ad / Linux cooked / raw IPv4 -> IPv4 -> TCP, UDP, ICMP.
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t
from libc.string cimport memcpy

from gwlb_fast._kernels._bytes cimport csum_add, csum_fold, csum_words_ok, load_be16, load_be32
from gwlb_fast._kernels._link cimport find_l3
from gwlb_fast._kernels._status cimport (
    ST_BAD_IHL, ST_BAD_IP_CSUM, ST_BAD_IP_LEN, ST_BAD_IP_VERSION, ST_BAD_TCP_OFF, ST_FRAGMENT, ST_L4_TRUNCATED,
    ST_OK, ST_TRUNCATED,
)

cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define GWLB_PARSE_PREFETCH(p) __builtin_prefetch((const void *)(p), 0, 3)
    #else
    #define GWLB_PARSE_PREFETCH(p) ((void)(p))
    #endif
    """
    void GWLB_PARSE_PREFETCH(const void* p) noexcept nogil

cdef enum:
    # packets ahead whose headers are prefetched: a batch of rows picked out of a larger arena (a firewall's share
    # of the Geneve frames) is read out of order, where the hardware prefetcher does not help (prefetching an
    # address never faults, even outside the arena)
    _AHEAD = 8
    IPPROTO_ICMP = 1
    IPPROTO_TCP = 6
    IPPROTO_UDP = 17


cdef inline bint _icmp_has_id(uint8_t icmp_type) noexcept nogil:
    # echo (0, 8), timestamp (13, 14), information (15, 16), address mask (17, 18): queries carrying an identifier
    return icmp_type == 0 or icmp_type == 8 or (13 <= icmp_type <= 18)


cdef inline bint _icmp_is_error(uint8_t icmp_type) noexcept nogil:
    # destination unreachable, source quench, redirect, time exceeded, parameter problem (RFC 792): they quote
    # the IP header and first 8 bytes of the packet that caused them
    return icmp_type == 3 or icmp_type == 4 or icmp_type == 5 or icmp_type == 11 or icmp_type == 12


def parse_packets(const uint8_t[::1] data, const int64_t[::1] off, const uint32_t[::1] caplen,
                  const uint16_t[::1] linktype, uint8_t[::1] status, uint32_t[::1] src_ip, uint32_t[::1] dst_ip,
                  uint16_t[::1] sport, uint16_t[::1] dport, uint8_t[::1] proto, uint8_t[::1] tcp_flags,
                  int32_t[::1] l3_off, int32_t[::1] l4_off):
    """Parse every packet down to L4 and fill the columns.

    Parameters
    ----------
    data : uint8[::1]
        Arena; packet i is ``data[off[i]:off[i] + caplen[i]]``.
    off : int64[n]
    caplen : uint32[n]
    linktype : uint16[n]
        pcap link type per packet: 1 Ethernet, 101 raw IP, 113 Linux cooked, 228 raw IPv4, 276 Linux cooked v2.
    status, src_ip, dst_ip, sport, dport, proto, tcp_flags, l3_off, l4_off : outputs, length n
        Addresses and ports in host order. ``tcp_flags`` holds the TCP flags byte for TCP and the ICMP type for
        ICMP. ICMP queries (echo, timestamp, information, mask) put their identifier in both ``sport`` and
        ``dport``, as connection trackers do, so a request and its reply form one flow. An ICMP error (types 3, 4,
        5, 11, 12) whose quoted IPv4 header is captured whole holds the 5-tuple of the flow it belongs to, in the
        direction it travels: source = the quoted destination, destination = the quoted source, the quoted ports
        swapped (0 when not captured or the quoted packet is a later fragment), ``proto`` the quoted protocol and
        ``tcp_flags`` 0 (the quoted ICMP type for a quoted ICMP query, whose identifier is then both ports);
        ``icmp_errors`` tells such packets apart. ``l3_off``/``l4_off`` are offsets from the packet's start (the
        outer headers), -1 where absent.

    Returns
    -------
    (int, int)
        The number of IPv4 headers, captured whole, whose checksum field is 0 (``fill_ip_checksums`` has nothing
        to do when it is 0) and the number of IPv4 fragments, first or later (the fragment scan has nothing to do
        when it is 0): counted in the parse's own pass, so that a batch with neither needs no second pass.

    Notes
    -----
    Status codes (first problem wins): TRUNCATED, NOT_IPV4 (ARP, IPv6, unknown link type; kept and counted),
    BAD_IP_VERSION, BAD_IHL, BAD_IP_LEN, BAD_IP_CSUM (the header checksum is not 0 and does not verify, RFC 791
    section 3.1: addresses and ports are still filled; 0 is left to the NIC by checksum offload, see
    ``fill_ip_checksums``), FRAGMENT (non-first fragment: ports 0), L4_TRUNCATED, BAD_TCP_OFF.
    A packet lying outside the arena is TRUNCATED. A packet cut by a snaplen (IPv4 total length beyond the
    captured bytes) whose L4 header is whole is OK: the caller tells it by ``caplen < wirelen``; if its L4
    header is cut too it is L4_TRUNCATED. L4 checksums are never verified (offloaded ones are wrong in captures).
    """
    cdef Py_ssize_t n = off.shape[0]
    cdef str name
    for name, col in (("caplen", caplen), ("linktype", linktype), ("status", status), ("src_ip", src_ip),
                      ("dst_ip", dst_ip), ("sport", sport), ("dport", dport), ("proto", proto),
                      ("tcp_flags", tcp_flags), ("l3_off", l3_off), ("l4_off", l4_off)):
        if col.shape[0] != n:
            raise ValueError(f"parse_packets: {name} has length {col.shape[0]}, expected {n}")
    cdef Py_ssize_t i, start, end, l3, l4, ihl, tot, lim, q, ql4, datalen = data.shape[0]
    cdef Py_ssize_t n_zero_csum = 0, n_fragments = 0
    cdef const uint8_t* p
    cdef const uint8_t* ip
    cdef uint8_t st, pr, fl, doff
    cdef uint16_t sp, dp, frag
    cdef uint8_t empty = 0
    with nogil:
        for i in range(n):
            if i + _AHEAD < n and datalen > 0:
                GWLB_PARSE_PREFETCH(&data[0] + off[i + _AHEAD])
            st = ST_OK
            sp = 0
            dp = 0
            pr = 0
            fl = 0
            src_ip[i] = 0
            dst_ip[i] = 0
            l3_off[i] = -1
            l4_off[i] = -1
            start = off[i]
            end = start + caplen[i]
            if start < 0 or end > datalen:
                st = ST_TRUNCATED
            else:
                # an empty arena has no &data[0]; a zero-length packet is then read from a dummy byte (never, n = 0)
                p = &data[0] + start if datalen > 0 else &empty
                st = find_l3(p, end - start, linktype[i], &l3)
                if st == ST_OK:
                    l3_off[i] = <int32_t>l3
                    if l3 + 20 > end - start:
                        st = ST_TRUNCATED
                    else:
                        ip = p + l3
                        ihl = (ip[0] & 0x0F) * 4
                        tot = load_be16(ip + 2)
                        if (ip[0] >> 4) != 4:
                            st = ST_BAD_IP_VERSION
                        elif ihl < 20 or l3 + ihl > end - start:
                            st = ST_BAD_IHL
                        elif tot < ihl:
                            st = ST_BAD_IP_LEN
                        else:
                            src_ip[i] = load_be32(ip + 12)
                            dst_ip[i] = load_be32(ip + 16)
                            pr = ip[9]
                            # the header is captured whole (checked above): its checksum is verified, unless it
                            # is 0, which a capture taken on the sending host shows when the NIC computes it
                            # (header checksum offload; fill_ip_checksums then does what the NIC would)
                            if load_be16(ip + 10) == 0:
                                n_zero_csum += 1
                            elif not csum_words_ok(ip, ihl >> 2):
                                st = ST_BAD_IP_CSUM
                            if load_be16(ip + 6) & 0x3FFF:  # MF or an offset: a fragment, first or later
                                n_fragments += 1
                            # a snapped packet is parsed as far as it was captured
                            lim = end - start if l3 + tot > end - start else l3 + tot
                            l4 = l3 + ihl
                            l4_off[i] = <int32_t>l4
                            frag = load_be16(ip + 6) & 0x1FFF
                            if frag != 0:
                                if st == ST_OK:
                                    st = ST_FRAGMENT
                            elif pr == IPPROTO_TCP:
                                if l4 + 20 > lim:
                                    if st == ST_OK:
                                        st = ST_L4_TRUNCATED
                                else:
                                    sp = load_be16(p + l4)
                                    dp = load_be16(p + l4 + 2)
                                    fl = p[l4 + 13]
                                    doff = (p[l4 + 12] >> 4) * 4
                                    if st == ST_OK and (doff < 20 or l4 + doff > l3 + tot):
                                        st = ST_BAD_TCP_OFF
                            elif pr == IPPROTO_UDP:
                                if l4 + 8 > lim:
                                    if st == ST_OK:
                                        st = ST_L4_TRUNCATED
                                else:
                                    sp = load_be16(p + l4)
                                    dp = load_be16(p + l4 + 2)
                            elif pr == IPPROTO_ICMP:
                                if l4 + 4 > lim:
                                    if st == ST_OK:
                                        st = ST_L4_TRUNCATED
                                else:
                                    fl = p[l4]
                                    if _icmp_has_id(fl):
                                        if l4 + 8 > lim:
                                            if st == ST_OK:
                                                st = ST_L4_TRUNCATED
                                        else:
                                            sp = load_be16(p + l4 + 4)
                                            dp = sp
                                    elif _icmp_is_error(fl) and l4 + 28 <= lim and (p[l4 + 8] >> 4) == 4 \
                                            and (p[l4 + 8] & 0x0F) >= 5 and l4 + 8 + (p[l4 + 8] & 0x0F) * 4 <= lim:
                                        # an error belongs to the flow of the packet it quotes: the columns hold
                                        # that flow's 5-tuple in the direction the error travels (back to the
                                        # quoted packet's sender)
                                        q = l4 + 8
                                        ql4 = q + (p[q] & 0x0F) * 4
                                        src_ip[i] = load_be32(p + q + 16)
                                        dst_ip[i] = load_be32(p + q + 12)
                                        pr = p[q + 9]
                                        fl = 0
                                        if (load_be16(p + q + 6) & 0x1FFF) == 0:
                                            if (pr == IPPROTO_TCP or pr == IPPROTO_UDP) and ql4 + 4 <= lim:
                                                sp = load_be16(p + ql4 + 2)
                                                dp = load_be16(p + ql4)
                                            elif pr == IPPROTO_ICMP and ql4 + 8 <= lim and _icmp_has_id(p[ql4]):
                                                fl = p[ql4]
                                                sp = load_be16(p + ql4 + 4)
                                                dp = sp
            status[i] = st
            sport[i] = sp
            dport[i] = dp
            proto[i] = pr
            tcp_flags[i] = fl
    return n_zero_csum, n_fragments


cdef inline bint _maybe_icmp_error(uint8_t proto, uint8_t tcp_flags) noexcept nogil:
    """False for a packet whose parse columns rule out an ICMP error: an error holds the quoted protocol and, for
    quoted TCP, flags 0 (see ``parse_packets``), so a TCP row with flags set is TCP itself."""
    return not (proto == IPPROTO_TCP and tcp_flags != 0)


def icmp_errors(const uint8_t[::1] data, const int64_t[::1] off, const uint32_t[::1] caplen,
                const int32_t[::1] l3_off, const int32_t[::1] l4_off, const uint8_t[::1] proto,
                const uint8_t[::1] tcp_flags, const uint8_t[::1] status, uint8_t[::1] out):
    """Mark the OK packets that are ICMP errors (types 3, 4, 5, 11, 12): ``out[i]`` = 1, else 0.

    Their parse columns hold the flow they quote (see ``parse_packets``); ``proto`` and ``tcp_flags`` are those
    columns, which spare reading the bytes of TCP packets with flags. Returns the number marked.
    """
    cdef Py_ssize_t n = off.shape[0], i, j, l3, l4, datalen = data.shape[0], k = 0
    for name, m in (("caplen", caplen.shape[0]), ("l3_off", l3_off.shape[0]), ("l4_off", l4_off.shape[0]),
                    ("proto", proto.shape[0]), ("tcp_flags", tcp_flags.shape[0]), ("status", status.shape[0]),
                    ("out", out.shape[0])):
        if m != n:
            raise ValueError(f"icmp_errors: {name} has length {m}, expected {n}")
    with nogil:
        for i in range(n):
            # a firewall's rows lie far apart in the path's arena, out of cache: the IP header of a packet a few
            # rows ahead is fetched while this one is checked (when its columns leave it in doubt)
            j = i + _AHEAD
            if j < n and datalen > 0 and _maybe_icmp_error(proto[j], tcp_flags[j]) and off[j] >= 0 \
                    and l3_off[j] >= 0:
                GWLB_PARSE_PREFETCH(&data[0] + off[j] + l3_off[j])
            out[i] = 0
            if not _maybe_icmp_error(proto[i], tcp_flags[i]):
                continue
            l3 = l3_off[i]
            l4 = l4_off[i]
            if status[i] != ST_OK or l3 < 0 or l4 < l3 + 20 or off[i] < 0 or l4 + 1 > <Py_ssize_t>caplen[i] \
                    or off[i] + caplen[i] > datalen:
                continue
            if data[off[i] + l3 + 9] == IPPROTO_ICMP and _icmp_is_error(data[off[i] + l4]):
                out[i] = 1
                k += 1
    return k


def fill_ip_checksums(uint8_t[::1] data, const int64_t[::1] off, const uint32_t[::1] caplen,
                      const int32_t[::1] l3_off, const uint8_t[::1] status):
    """Write the IPv4 header checksum of every OK (or FRAGMENT) packet whose checksum field is 0, in place.

    A capture taken on the sending host holds such packets when the NIC computes the header checksum (offload);
    the packet on the wire has the right one, and the path's incremental updates (RFC 1624) need it. Other rows
    and rows whose header is not inside the arena are left alone.

    Parameters
    ----------
    data : uint8[::1]
        Arena, written in place.
    off : int64[n], caplen : uint32[n], l3_off : int32[n], status : uint8[n]
        From ``parse_packets``.

    Returns
    -------
    int
        Number of checksums written.
    """
    cdef Py_ssize_t n = off.shape[0], i, l3, ihl, datalen = data.shape[0], done = 0
    cdef uint8_t* ip
    cdef uint16_t c
    for name, m in (("caplen", caplen.shape[0]), ("l3_off", l3_off.shape[0]), ("status", status.shape[0])):
        if m != n:
            raise ValueError(f"fill_ip_checksums: {name} has length {m}, expected {n}")
    with nogil:
        for i in range(n):
            l3 = l3_off[i]
            if (status[i] != ST_OK and status[i] != ST_FRAGMENT) or l3 < 0 or off[i] < 0 or l3 + 20 > <Py_ssize_t>caplen[i] \
                    or off[i] + caplen[i] > datalen:
                continue
            ip = &data[0] + off[i] + l3
            if ip[10] != 0 or ip[11] != 0:
                continue
            ihl = (ip[0] & 0x0F) * 4
            if ihl < 20 or l3 + ihl > <Py_ssize_t>caplen[i]:
                continue
            c = csum_fold(csum_add(0, ip, ihl))
            if c != 0:  # 0: the header's words sum to 0xFFFF, its checksum is the 0 it holds
                ip[10] = <uint8_t>(c >> 8)
                ip[11] = <uint8_t>c
                done += 1
    return done


def gather_packets(const uint8_t[::1] src, const int64_t[::1] src_off, const uint32_t[::1] caplen,
                   uint8_t[::1] dst, const int64_t[::1] dst_off):
    """Copy packet i from ``src[src_off[i]:+caplen[i]]`` to ``dst[dst_off[i]:]`` (compaction and concatenation).

    Raises ValueError before copying anything if a source or destination range lies outside its buffer.
    """
    cdef Py_ssize_t n = src_off.shape[0], i
    if caplen.shape[0] != n or dst_off.shape[0] != n:
        raise ValueError("gather_packets: src_off, caplen and dst_off must have the same length")
    cdef Py_ssize_t ns = src.shape[0], nd = dst.shape[0]
    cdef bint bad = False
    with nogil:
        for i in range(n):
            if (src_off[i] < 0 or src_off[i] + caplen[i] > ns or dst_off[i] < 0
                    or dst_off[i] + caplen[i] > nd):
                bad = True
                break
        if not bad:
            for i in range(n):
                if caplen[i]:
                    memcpy(&dst[dst_off[i]], &src[src_off[i]], caplen[i])
    if bad:
        raise ValueError(f"gather_packets: packet {i} lies outside its source or destination buffer")
