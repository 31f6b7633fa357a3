"""Plain-Python checks for synthetic frames: Internet checksums and TCP sequence bookkeeping."""
import struct


def ones_sum(data: bytes, acc: int = 0) -> int:
    """One's-complement sum of 16-bit big-endian words (odd byte padded), folded to 16 bits (RFC 1071)."""
    if len(data) % 2:
        data += b"\x00"
    acc += sum(struct.unpack(f"!{len(data) // 2}H", data))
    while acc >> 16:
        acc = (acc & 0xFFFF) + (acc >> 16)
    return acc


def checksums_ok(frame: bytes) -> tuple[bool, bool]:
    """(IPv4 header checksum valid, L4 checksum valid) for an Ethernet/IPv4 frame without options."""
    ip = frame[14:]
    ihl = (ip[0] & 15) * 4
    total = struct.unpack_from("!H", ip, 2)[0]
    ip_ok = ones_sum(ip[:ihl]) == 0xFFFF
    proto = ip[9]
    l4 = ip[ihl:total]
    if proto == 1:
        return ip_ok, ones_sum(l4) == 0xFFFF
    if proto == 17 and struct.unpack_from("!H", l4, 6)[0] == 0:
        return ip_ok, False  # the generator always fills the UDP checksum
    pseudo = ip[12:20] + struct.pack("!BBH", 0, proto, len(l4))
    return ip_ok, ones_sum(pseudo + l4) == 0xFFFF


def check_tcp_session(segments) -> None:
    """Assert sequence/acknowledgment consistency of one TCP session.

    ``segments``: capture-ordered ``(from_client, seq, ack, flags, payload_len)``. The first segment is the
    client's SYN; each side's sequence number advances by its payload plus one for SYN and for FIN, and every ACK
    acknowledges everything the other side sent before (RFC 9293 section 3.4). A RST answering a SYN carries seq 0.
    """
    assert segments, "empty session"
    fc, seq, ack, flags, plen = segments[0]
    assert fc and flags == 0x02 and ack == 0, segments[0]
    nxt = {True: seq, False: None}
    for i, (fc, seq, ack, flags, plen) in enumerate(segments):
        syn, fin, rst, is_ack = flags & 2, flags & 1, flags & 4, flags & 0x10
        if nxt[fc] is None:
            assert syn or rst, (i, segments[i])
            nxt[fc] = 0 if rst else seq
        assert seq == nxt[fc], (i, segments[i], nxt)
        if is_ack:
            assert ack == nxt[not fc], (i, segments[i], nxt)
        nxt[fc] = (seq + plen + (1 if syn else 0) + (1 if fin else 0)) & 0xFFFFFFFF
