# Firewall return path, batched: echo allowed Geneve frames and build TCP RSTs inside Geneve.
#
# Every output row copies the outer headers (link layer, IPv4, UDP, Geneve base header and options) of one input
# Geneve frame byte for byte, except that the outer source and destination (MAC and IPv4) are swapped so that the
# frame goes back to the GWLB that sent it. The IPv4 header checksum is invariant under the swap (one's-complement
# sum is commutative), so an echo needs no checksum work.
#
# An RST row replaces the inner packet with a 40-byte IPv4 + TCP RST (RFC 9293 section 3.10.7.1 for the sequence
# numbers) and fixes the outer IPv4 total length and header checksum and the UDP length (UDP checksum 0, as RFC 8926
# section 3.3 allows over IPv4).
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t
from libc.string cimport memcpy

from gwlb_fast._kernels._link cimport find_l3
from gwlb_fast._kernels._bytes cimport csum_add, csum_fold, load_be16, load_be32, store_be16, store_be32
from gwlb_fast._kernels._status cimport ST_BAD_IHL, ST_L4_TRUNCATED, ST_NOT_IPV4, ST_OK, ST_TRUNCATED

KIND_ECHO = 0
KIND_RST_TO_SENDER = 1
KIND_RST_TO_RECEIVER = 2
RST_INNER_LEN = 40

cdef enum:
    _ECHO = 0
    _TO_SENDER = 1
    _TO_RECEIVER = 2
    _LT_ETHERNET = 1
    _LT_RAW = 101
    _LT_SLL = 113
    _LT_IPV4 = 228
    _LT_SLL2 = 276
    _SYN = 0x02
    _FIN = 0x01
    _RST = 0x04
    _ACK = 0x10


cdef inline Py_ssize_t _outer_l3(const uint8_t* p, Py_ssize_t caplen, uint16_t linktype) noexcept nogil:
    """Offset of the outer IPv4 header, or -1 (link layer cut short, not IPv4)."""
    cdef Py_ssize_t l3 = -1
    return l3 if find_l3(p, caplen, linktype, &l3) == ST_OK else -1


cdef inline void _swap(uint8_t* a, uint8_t* b, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t k
    cdef uint8_t t
    for k in range(n):
        t = a[k]
        a[k] = b[k]
        b[k] = t


cdef inline uint16_t _ipv4_csum(const uint8_t* h, Py_ssize_t ihl) noexcept nogil:
    """Header checksum of the IPv4 header at h, computed with the checksum field taken as 0."""
    cdef uint32_t acc = csum_add(0, h, 10)
    acc = csum_add(acc, h + 12, ihl - 12)
    return csum_fold(acc)


def build_returns(const uint8_t[::1] data, const int64_t[::1] off, const uint32_t[::1] caplen,
                  const uint16_t[::1] linktype, const int32_t[::1] inner_off, const int64_t[::1] rows,
                  const uint8_t[::1] kind, uint8_t[::1] out, const int64_t[::1] out_off, uint8_t[::1] out_status):
    """Write the frames a firewall returns to the GWLB: echoed Geneve frames and TCP RSTs inside Geneve.

    Parameters
    ----------
    data : uint8[::1]
        Arena of the input Geneve frames (not modified).
    off : int64[n], caplen : uint32[n], linktype : uint16[n]
        Input frames.
    inner_off : int32[n]
        Offset of each frame's inner IPv4 packet from the frame start (the Geneve decoder's ``inner_off``).
    rows : int64[m]
        Input frame of every output frame (any order, repeats allowed).
    kind : uint8[m]
        ``KIND_ECHO`` (0): copy the frame with the outer MACs and IPv4 addresses swapped; output length
        ``caplen[row]``. ``KIND_RST_TO_SENDER`` (1): an RST answering the inner TCP segment, from its destination to
        its source: with ACK in the segment ``<SEQ=SEG.ACK><CTL=RST>``, else ``<SEQ=0><ACK=SEG.SEQ+SEG.LEN>
        <CTL=RST,ACK>`` (RFC 9293 section 3.10.7.1; SEG.LEN counts SYN and FIN). ``KIND_RST_TO_RECEIVER`` (2): an RST
        sent on behalf of the segment's source to its destination, ``<SEQ=SEG.SEQ+SEG.LEN><CTL=RST>`` plus
        ``<ACK=SEG.ACK>`` and the ACK flag when the segment carries ACK (the next sequence number the receiver
        expects, so it accepts the RST). RST output length ``inner_off[row] + 40``.
    out : uint8[::1]
        Output arena; frame j is written at ``out_off[j]``.
    out_off : int64[m]
    out_status : uint8[m]
        Output: ``ST_OK``, or why frame j could not be built (its bytes are then unspecified; drop it):
        ``ST_TRUNCATED`` (input frame or output slot outside its arena, outer header cut short), ``ST_NOT_IPV4``
        (outer or inner not IPv4), ``ST_BAD_IHL``, ``ST_L4_TRUNCATED`` (RST rows: inner TCP header not captured).

    Returns
    -------
    int
        Number of frames with a status other than ``ST_OK``.

    Notes
    -----
    Inner RST: IPv4 version 4, IHL 5, TOS 0, total length 40, id 0, DF, TTL 64, protocol 6, checksum; TCP data offset 5,
    window 0, urgent 0, checksum over the pseudo-header. Outer: IPv4 total length and checksum and UDP length updated.
    """
    cdef Py_ssize_t n = off.shape[0], m = rows.shape[0], size = data.shape[0], osize = out.shape[0]
    cdef Py_ssize_t j, r, o, cl, l3, ihl, l4, ilen, oo, in_ihl, in_tot, t4, doff, seglen, ql
    cdef const uint8_t* p
    cdef uint8_t* q
    cdef uint8_t* ip
    cdef uint8_t* tcp
    cdef uint8_t fl, k, rflags
    cdef uint32_t seq, ack, rseq, rack, acc
    cdef Py_ssize_t bad = 0
    if caplen.shape[0] != n:
        raise ValueError(f"caplen: expected length {n}, got {caplen.shape[0]}")
    if linktype.shape[0] != n:
        raise ValueError(f"linktype: expected length {n}, got {linktype.shape[0]}")
    if inner_off.shape[0] != n:
        raise ValueError(f"inner_off: expected length {n}, got {inner_off.shape[0]}")
    if kind.shape[0] != m:
        raise ValueError(f"kind: expected length {m}, got {kind.shape[0]}")
    if out_off.shape[0] != m:
        raise ValueError(f"out_off: expected length {m}, got {out_off.shape[0]}")
    if out_status.shape[0] != m:
        raise ValueError(f"out_status: expected length {m}, got {out_status.shape[0]}")
    for j in range(m):
        if rows[j] < 0 or rows[j] >= n:
            raise ValueError(f"rows: row {rows[j]} at position {j} is outside [0, {n})")
    with nogil:
        for j in range(m):
            out_status[j] = ST_OK
            r = rows[j]
            k = kind[j]
            o = off[r]
            cl = caplen[r]
            if o < 0 or o > size or cl > size - o:
                out_status[j] = ST_TRUNCATED
                bad += 1
                continue
            p = &data[0] + o
            ilen = inner_off[r]
            ql = cl if k == _ECHO else ilen + 40
            oo = out_off[j]
            if oo < 0 or oo > osize or ql > osize - oo or ilen < 0 or ilen > cl:
                out_status[j] = ST_TRUNCATED
                bad += 1
                continue
            q = &out[0] + oo
            l3 = _outer_l3(p, cl, linktype[r])
            if l3 < 0 or l3 + 20 > ilen:
                out_status[j] = ST_NOT_IPV4 if l3 < 0 else ST_TRUNCATED
                bad += 1
                for t4 in range(ql):
                    q[t4] = 0
                continue
            ihl = (p[l3] & 0x0F) * 4
            if (p[l3] >> 4) != 4 or ihl < 20 or l3 + ihl + 8 > ilen:
                out_status[j] = ST_BAD_IHL
                bad += 1
                for t4 in range(ql):
                    q[t4] = 0
                continue
            l4 = l3 + ihl
            if k == _ECHO:
                memcpy(q, p, cl)
            else:
                # inner TCP segment of the offending packet
                if ilen + 20 > cl or (p[ilen] >> 4) != 4:
                    out_status[j] = ST_NOT_IPV4 if ilen + 20 <= cl else ST_L4_TRUNCATED
                    bad += 1
                    for t4 in range(ql):
                        q[t4] = 0
                    continue
                in_ihl = (p[ilen] & 0x0F) * 4
                in_tot = load_be16(p + ilen + 2)
                t4 = ilen + in_ihl
                if in_ihl < 20 or t4 + 20 > cl or p[ilen + 9] != 6:
                    out_status[j] = ST_L4_TRUNCATED
                    bad += 1
                    for t4 in range(ql):
                        q[t4] = 0
                    continue
                doff = (p[t4 + 12] >> 4) * 4
                fl = p[t4 + 13]
                seq = load_be32(p + t4 + 4)
                ack = load_be32(p + t4 + 8)
                seglen = in_tot - in_ihl - doff
                if seglen < 0:
                    seglen = 0
                if fl & _SYN:
                    seglen += 1
                if fl & _FIN:
                    seglen += 1
                memcpy(q, p, ilen)
                ip = q + ilen
                tcp = ip + 20
                ip[0] = 0x45
                ip[1] = 0
                store_be16(ip + 2, 40)
                store_be16(ip + 4, 0)
                store_be16(ip + 6, 0x4000)
                ip[8] = 64
                ip[9] = 6
                store_be16(ip + 10, 0)
                if k == _TO_SENDER:
                    memcpy(ip + 12, p + ilen + 16, 4)
                    memcpy(ip + 16, p + ilen + 12, 4)
                    memcpy(tcp, p + t4 + 2, 2)
                    memcpy(tcp + 2, p + t4, 2)
                    if fl & _ACK:
                        rseq = ack
                        rack = 0
                        rflags = _RST
                    else:
                        rseq = 0
                        rack = <uint32_t>(seq + <uint32_t>seglen)
                        rflags = _RST | _ACK
                else:
                    memcpy(ip + 12, p + ilen + 12, 8)
                    memcpy(tcp, p + t4, 4)
                    rseq = <uint32_t>(seq + <uint32_t>seglen)
                    if fl & _ACK:
                        rack = ack
                        rflags = _RST | _ACK
                    else:
                        rack = 0
                        rflags = _RST
                store_be16(ip + 10, csum_fold(csum_add(0, ip, 20)))
                store_be32(tcp + 4, rseq)
                store_be32(tcp + 8, rack)
                tcp[12] = 0x50
                tcp[13] = rflags
                store_be16(tcp + 14, 0)
                store_be16(tcp + 16, 0)
                store_be16(tcp + 18, 0)
                # pseudo-header: src, dst, zero, protocol 6, TCP length 20
                acc = csum_add(0, ip + 12, 8)
                acc += 6 + 20
                acc = csum_add(acc, tcp, 20)
                store_be16(tcp + 16, csum_fold(acc))
                # outer IPv4 total length + checksum, UDP length and checksum 0
                store_be16(q + l3 + 2, <uint16_t>(ilen + 40 - l3))
                store_be16(q + l3 + 10, _ipv4_csum(q + l3, ihl))
                store_be16(q + l4 + 4, <uint16_t>(ilen + 40 - l4))
                store_be16(q + l4 + 6, 0)
            # toward the GWLB: swap the outer addresses
            _swap(q + l3 + 12, q + l3 + 16, 4)
            if linktype[r] == _LT_ETHERNET:
                _swap(q, q + 6, 6)
    return bad
