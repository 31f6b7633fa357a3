"""Plain-Python reference of the L2-L4 parse kernel (the executable specification)."""
import struct

from gwlb_fast.status import PktStatus as S

from .link import find_l3


def parse(pkt: bytes, linktype: int = 1) -> dict:
    r = {"status": S.OK, "src_ip": 0, "dst_ip": 0, "sport": 0, "dport": 0, "proto": 0, "tcp_flags": 0,
         "l3_off": -1, "l4_off": -1}
    n = len(pkt)
    st, l3 = find_l3(pkt, linktype)
    if st != S.OK:
        return {**r, "status": st}
    r["l3_off"] = l3
    if l3 + 20 > n:
        return {**r, "status": S.TRUNCATED}
    ihl = (pkt[l3] & 15) * 4
    tot = struct.unpack_from("!H", pkt, l3 + 2)[0]
    if pkt[l3] >> 4 != 4:
        return {**r, "status": S.BAD_IP_VERSION}
    if ihl < 20 or l3 + ihl > n:
        return {**r, "status": S.BAD_IHL}
    if tot < ihl:
        return {**r, "status": S.BAD_IP_LEN}
    r["src_ip"], r["dst_ip"] = struct.unpack_from("!II", pkt, l3 + 12)
    r["proto"] = proto = pkt[l3 + 9]
    st = S.OK
    words = sum(struct.unpack_from(f"!{ihl // 2}H", pkt, l3))
    while words >> 16:
        words = (words & 0xFFFF) + (words >> 16)
    if words != 0xFFFF and struct.unpack_from("!H", pkt, l3 + 10)[0] != 0:  # 0: left to the NIC (offload)
        st = S.BAD_IP_CSUM
    lim = min(l3 + tot, n)  # a snapped packet: parsed as far as it was captured
    l4 = r["l4_off"] = l3 + ihl
    frag = struct.unpack_from("!H", pkt, l3 + 6)[0] & 0x1FFF

    def first(code):
        return st if st != S.OK else code

    if frag:
        st = first(S.FRAGMENT)
    elif proto == 6:
        if l4 + 20 > lim:
            st = first(S.L4_TRUNCATED)
        else:
            r["sport"], r["dport"] = struct.unpack_from("!HH", pkt, l4)
            r["tcp_flags"] = pkt[l4 + 13]
            doff = (pkt[l4 + 12] >> 4) * 4
            if doff < 20 or l4 + doff > l3 + tot:
                st = first(S.BAD_TCP_OFF)
    elif proto == 17:
        if l4 + 8 > lim:
            st = first(S.L4_TRUNCATED)
        else:
            r["sport"], r["dport"] = struct.unpack_from("!HH", pkt, l4)
    elif proto == 1:
        if l4 + 4 > lim:
            st = first(S.L4_TRUNCATED)
        else:
            r["tcp_flags"] = t = pkt[l4]
            if t in (0, 8) or 13 <= t <= 18:
                if l4 + 8 > lim:
                    st = first(S.L4_TRUNCATED)
                else:
                    r["sport"] = r["dport"] = struct.unpack_from("!H", pkt, l4 + 4)[0]
    r["status"] = st
    return r
