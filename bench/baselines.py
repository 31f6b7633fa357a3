"""Reference implementations the benchmarks compare against (plain numpy, pure Python, dpkt loops).

Shared file: each topic appends its own section under a ``# --- <topic> ---`` comment.
"""


# --- synth ---
import dpkt


def synth_rows(batch):
    """Per-packet header fields and payloads of a synthetic batch (``gwlb_fast.synth`` layout: Ethernet, IPv4 without
    options, TCP/UDP/ICMP echo), as plain Python values: the input of ``dpkt_build_frames``."""
    rows = []
    for i in range(len(batch)):
        f = batch.packet(i)
        proto = f[23]
        l4hdr = (f[46] >> 4) * 4 if proto == 6 else 8
        u16 = int.from_bytes
        rows.append((f[6:12], f[0:6], f[26:30], f[30:34], proto, u16(f[18:20], "big"), f[22], f[20] & 0x40,
                     u16(f[34:36], "big") if proto != 1 else u16(f[38:40], "big"),
                     u16(f[36:38], "big") if proto != 1 else u16(f[40:42], "big"),
                     u16(f[38:42], "big"), u16(f[42:46], "big"), f[47] if proto == 6 else f[34],
                     u16(f[48:50], "big"), f[34 + l4hdr:]))
    return rows


def dpkt_build_frames(rows):
    """Build Ethernet/IPv4/TCP|UDP|ICMP-echo frames with dpkt, one per row, checksums computed by dpkt: the loop a
    dpkt user writes to synthesize traffic from per-packet fields."""
    out = []
    for smac, dmac, src, dst, proto, ip_id, ttl, df, sport, dport, seq, ack, flags, win, payload in rows:
        if proto == 6:
            l4 = dpkt.tcp.TCP(sport=sport, dport=dport, seq=seq, ack=ack, flags=flags, win=win, data=payload)
            if flags & dpkt.tcp.TH_SYN:
                l4.opts = b"\x02\x04\x05\xb4"
                l4.off = 6
        elif proto == 17:
            l4 = dpkt.udp.UDP(sport=sport, dport=dport, data=payload)
            l4.ulen = 8 + len(payload)
        else:
            l4 = dpkt.icmp.ICMP(type=flags, data=dpkt.icmp.ICMP.Echo(id=sport, seq=dport, data=payload))
        ip = dpkt.ip.IP(src=src, dst=dst, p=proto, id=ip_id, ttl=ttl, df=1 if df else 0, data=l4)
        ip.len = 20 + len(l4)
        out.append(bytes(dpkt.ethernet.Ethernet(src=smac, dst=dmac, type=0x0800, data=ip)))
    return out
