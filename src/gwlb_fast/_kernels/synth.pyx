# Synthetic traffic writer: Ethernet + IPv4 + TCP/UDP/ICMP frames, checksums included, into one arena.
#
# Frame layout written for packet i (offsets from off[i]):
#   0   Ethernet II   dst MAC (6) | src MAC (6) | ethertype 0x0800 (2)
#   14  IPv4 (RFC 791 section 3.1, no options)
#         +0 version 4 / IHL 5   +1 TOS 0   +2 total length   +4 identification   +6 flags (DF) / fragment offset 0
#         +8 TTL   +9 protocol   +10 header checksum   +12 source   +16 destination
#   34  TCP (RFC 9293 section 3.1): sport, dport, seq, ack, data offset (5, or 6 with the MSS option on SYNs),
#         flags, window, checksum, urgent 0 [, MSS option kind 2 len 4 value 1460]
#       UDP (RFC 768): sport, dport, length, checksum (0 transmitted as 0xFFFF)
#       ICMP echo (RFC 792): type, code 0, checksum, identifier, sequence number
#   ..  payload: copied from the template arena, optionally with a small prefix (see PAY_* below)
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy

from gwlb_fast._kernels._bytes cimport csum_add, csum_fold, store_be16, store_be32
from gwlb_fast._kernels._status cimport ST_OK, ST_TRUNCATED, ST_L4_TRUNCATED

cdef enum:
    ETH_LEN = 14
    IP_LEN = 20
    UDP_LEN = 8
    ICMP_LEN = 8
    MSS = 1460

PAY_COPY = 0
PAY_TLS = 1
PAY_ID16 = 2

cdef enum:
    _PAY_COPY = 0
    _PAY_TLS = 1       # TLS 1.2 application-data record header (17 03 03 len16) then template bytes
    _PAY_ID16 = 2      # big-endian pay_arg in the first two bytes (DNS transaction id), then template bytes


cdef inline void _store_mac(uint8_t* p, uint64_t mac) noexcept nogil:
    p[0] = <uint8_t>(mac >> 40)
    p[1] = <uint8_t>(mac >> 32)
    store_be32(p + 2, <uint32_t>mac)


cdef inline uint32_t _pseudo(uint32_t src, uint32_t dst, uint8_t proto, uint32_t l4len) noexcept nogil:
    # RFC 9293 section 3.1 / RFC 768 pseudo-header: src, dst, zero + protocol, L4 length
    return ((src >> 16) + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF) + proto + l4len)


def _check(name, arr, Py_ssize_t n):
    if arr.shape[0] != n:
        raise ValueError(f"{name} must have length {n}, got {arr.shape[0]}")


def build_packets(uint8_t[::1] data, const int64_t[::1] off, const uint32_t[::1] caplen,
                  const uint64_t[::1] mac_src, const uint64_t[::1] mac_dst,
                  const uint32_t[::1] src_ip, const uint32_t[::1] dst_ip, const uint8_t[::1] proto,
                  const uint16_t[::1] ip_id, const uint8_t[::1] ttl, const uint8_t[::1] df,
                  const uint16_t[::1] sport, const uint16_t[::1] dport,
                  const uint32_t[::1] seq, const uint32_t[::1] ack, const uint8_t[::1] flags,
                  const uint16_t[::1] win,
                  const int64_t[::1] pay_off, const uint8_t[::1] pay_style, const uint16_t[::1] pay_arg,
                  const uint8_t[::1] templates, uint8_t[::1] status):
    """Write complete Ethernet/IPv4/L4 frames with valid checksums into ``data``.

    Parameters
    ----------
    data : uint8[::1]
        Output arena; packet ``i`` occupies ``data[off[i] : off[i] + caplen[i]]``.
    off : int64[n]
    caplen : uint32[n]
        Frame length; the payload length is what remains after the headers.
    mac_src, mac_dst : uint64[n]
        48-bit MAC addresses in the low bits.
    src_ip, dst_ip : uint32[n]
        Host byte order.
    proto : uint8[n]
        6 (TCP), 17 (UDP) or 1 (ICMP echo).
    ip_id : uint16[n]
    ttl : uint8[n]
    df : uint8[n]
        Non-zero sets the IPv4 Don't Fragment bit.
    sport, dport : uint16[n]
        TCP/UDP ports; for ICMP, the echo identifier and the echo sequence number.
    seq, ack : uint32[n]
        TCP sequence and acknowledgment numbers (ignored for UDP and ICMP).
    flags : uint8[n]
        TCP flags; for ICMP, the ICMP type (8 echo request, 0 echo reply).
    win : uint16[n]
        TCP window.
    pay_off : int64[n]
        Offset in ``templates`` of the payload bytes.
    pay_style : uint8[n]
        ``PAY_COPY`` (0) copies the template; ``PAY_TLS`` (1) writes a TLS application-data record header
        (``17 03 03`` + length) and fills the rest from the template; ``PAY_ID16`` (2) writes ``pay_arg`` big-endian
        in the first two bytes (a DNS transaction id) and the rest from the template.
    pay_arg : uint16[n]
    templates : uint8[::1]
        Payload source bytes.
    status : uint8[n]
        Output: ``ST_OK``, or why the packet was not written.

    Returns
    -------
    int
        Number of packets not written (status other than ``ST_OK``).

    Notes
    -----
    Status codes: ``TRUNCATED`` when the frame lies outside ``data`` or is shorter than its headers (or longer than
    65535 - 14 bytes of IP), ``L4_TRUNCATED`` when the payload would read past ``templates`` or the protocol is not
    6, 17 or 1. A packet that is not written leaves its bytes in ``data`` untouched.
    """
    cdef Py_ssize_t n = off.shape[0]
    for name, arr in (("caplen", caplen), ("mac_src", mac_src), ("mac_dst", mac_dst), ("src_ip", src_ip),
                      ("dst_ip", dst_ip), ("proto", proto), ("ip_id", ip_id), ("ttl", ttl), ("df", df),
                      ("sport", sport), ("dport", dport), ("seq", seq), ("ack", ack), ("flags", flags),
                      ("win", win), ("pay_off", pay_off), ("pay_style", pay_style), ("pay_arg", pay_arg),
                      ("status", status)):
        _check(name, arr, n)
    cdef Py_ssize_t i, hdr, l4len, paylen, cap
    cdef int64_t o, po
    cdef int64_t dlen = data.shape[0]
    cdef int64_t tlen = templates.shape[0]
    cdef uint8_t* p
    cdef uint8_t* l4
    cdef uint8_t* pay
    cdef uint8_t pr, doff
    cdef uint32_t acc
    cdef uint16_t c
    cdef Py_ssize_t bad = 0
    with nogil:
        for i in range(n):
            o = off[i]
            cap = caplen[i]
            pr = proto[i]
            if pr == 6:
                doff = 6 if (flags[i] & 0x02) else 5
                hdr = ETH_LEN + IP_LEN + 4 * doff
            elif pr == 17:
                doff = 0
                hdr = ETH_LEN + IP_LEN + UDP_LEN
            elif pr == 1:
                doff = 0
                hdr = ETH_LEN + IP_LEN + ICMP_LEN
            else:
                status[i] = ST_L4_TRUNCATED
                bad += 1
                continue
            if o < 0 or o > dlen or cap > dlen - o or cap < hdr or cap > 65535 + ETH_LEN:
                status[i] = ST_TRUNCATED
                bad += 1
                continue
            paylen = cap - hdr
            po = pay_off[i]
            if po < 0 or po > tlen or paylen > tlen - po:
                status[i] = ST_L4_TRUNCATED
                bad += 1
                continue
            p = &data[o]
            # Ethernet II
            _store_mac(p, mac_dst[i])
            _store_mac(p + 6, mac_src[i])
            store_be16(p + 12, 0x0800)
            # IPv4
            p[14] = 0x45
            p[15] = 0
            store_be16(p + 16, <uint16_t>(cap - ETH_LEN))
            store_be16(p + 18, ip_id[i])
            store_be16(p + 20, 0x4000 if df[i] else 0)
            p[22] = ttl[i]
            p[23] = pr
            store_be16(p + 24, 0)
            store_be32(p + 26, src_ip[i])
            store_be32(p + 30, dst_ip[i])
            store_be16(p + 24, csum_fold(csum_add(0, p + 14, IP_LEN)))
            # payload first: the L4 checksum covers it
            l4 = p + ETH_LEN + IP_LEN
            pay = p + hdr
            if paylen > 0:
                memcpy(pay, &templates[po], <size_t>paylen)
                if pay_style[i] == _PAY_TLS and paylen >= 5:
                    pay[0] = 0x17
                    pay[1] = 0x03
                    pay[2] = 0x03
                    store_be16(pay + 3, <uint16_t>(paylen - 5))
                elif pay_style[i] == _PAY_ID16 and paylen >= 2:
                    store_be16(pay, pay_arg[i])
            l4len = cap - ETH_LEN - IP_LEN
            if pr == 6:
                store_be16(l4, sport[i])
                store_be16(l4 + 2, dport[i])
                store_be32(l4 + 4, seq[i])
                store_be32(l4 + 8, ack[i])
                l4[12] = <uint8_t>(doff << 4)
                l4[13] = flags[i]
                store_be16(l4 + 14, win[i])
                store_be16(l4 + 16, 0)
                store_be16(l4 + 18, 0)
                if doff == 6:
                    l4[20] = 2
                    l4[21] = 4
                    store_be16(l4 + 22, MSS)
                acc = _pseudo(src_ip[i], dst_ip[i], 6, <uint32_t>l4len)
                store_be16(l4 + 16, csum_fold(csum_add(acc, l4, l4len)))
            elif pr == 17:
                store_be16(l4, sport[i])
                store_be16(l4 + 2, dport[i])
                store_be16(l4 + 4, <uint16_t>l4len)
                store_be16(l4 + 6, 0)
                acc = _pseudo(src_ip[i], dst_ip[i], 17, <uint32_t>l4len)
                c = csum_fold(csum_add(acc, l4, l4len))
                # RFC 768: a computed zero is transmitted as all ones (zero means "no checksum")
                store_be16(l4 + 6, 0xFFFF if c == 0 else c)
            else:
                l4[0] = flags[i]
                l4[1] = 0
                store_be16(l4 + 2, 0)
                store_be16(l4 + 4, sport[i])
                store_be16(l4 + 6, dport[i])
                store_be16(l4 + 2, csum_fold(csum_add(0, l4, l4len)))
            status[i] = ST_OK
    return bad
