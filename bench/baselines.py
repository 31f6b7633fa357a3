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


# --- geneve ---
import struct  # dpkt comes from the synth section above

_GENEVE_OPT = struct.Struct("!HBB")
_GENEVE_BASE = struct.Struct("!BBHI")


def dpkt_geneve_decap(frames: list[bytes], option_class: int = 0x0108) -> list[tuple]:
    """Per packet with dpkt for Ethernet/IPv4/UDP and struct for Geneve (dpkt has no Geneve layer).

    Returns ``(vni, flags, endpoint_id, attachment_id, cookie, inner_bytes)`` per Geneve packet, ``None`` otherwise.
    """
    out = []
    for buf in frames:
        try:
            eth = dpkt.ethernet.Ethernet(buf)
            ip = eth.data
            if not isinstance(ip, dpkt.ip.IP) or ip.p != 17:
                out.append(None)
                continue
            udp = ip.data
            if udp.dport != 6081:
                out.append(None)
                continue
            g = bytes(udp.data)
            b0, flags, _proto, vni = _GENEVE_BASE.unpack_from(g, 0)
            if b0 >> 6:
                out.append(None)
                continue
            oend = 8 + (b0 & 0x3F) * 4
            pos, ep, att, ck = 8, 0, 0, 0
            while pos < oend:
                cls, typ, ln = _GENEVE_OPT.unpack_from(g, pos)
                ln = (ln & 0x1F) * 4
                if cls == option_class:
                    if typ == 1:
                        ep = int.from_bytes(g[pos + 4 : pos + 12], "big")
                    elif typ == 2:
                        att = int.from_bytes(g[pos + 4 : pos + 12], "big")
                    elif typ == 3:
                        ck = int.from_bytes(g[pos + 4 : pos + 8], "big")
                pos += 4 + ln
            out.append((vni >> 8, flags, ep, att, ck, g[oend:]))
        except (dpkt.UnpackError, struct.error):
            out.append(None)
    return out


def dpkt_geneve_encap(packets: list[bytes], src: bytes, dst: bytes, endpoint_id: int, attachment_id: int,
                      cookie: int, vni: int = 0, option_class: int = 0x0108,
                      src_mac: bytes = b"\x02\x00\x0a\x00\x00\x0a", dst_mac: bytes = b"\x02\x00\x0a\x00\x01\x0b"
                      ) -> list[bytes]:
    """Per packet: struct for the Geneve header and options, dpkt for UDP/IPv4 (checksum) and Ethernet."""
    opts = (struct.pack("!HBBQ", option_class, 1, 2, endpoint_id) + struct.pack("!HBBQ", option_class, 2, 2,
            attachment_id) + struct.pack("!HBBI", option_class, 3, 1, cookie))
    gen = struct.pack("!BBHI", len(opts) // 4, 0, 0x0800, vni << 8) + opts
    out = []
    for inner in packets:
        sport = 49152 + (hash(inner[12:20]) & 0x3FFF)
        # UDP as bytes: given a dpkt UDP object, dpkt would fill in the checksum that RFC 8926 lets us leave 0
        udp = struct.pack("!HHHH", sport, 6081, 8 + len(gen) + len(inner), 0) + gen + inner
        ip = dpkt.ip.IP(src=src, dst=dst, p=17, ttl=64, df=1, data=udp)
        eth = dpkt.ethernet.Ethernet(src=src_mac, dst=dst_mac, type=0x0800, data=bytes(ip))
        out.append(bytes(eth))
    return out


def scapy_geneve_decap(frames: list[bytes], option_class: int = 0x0108) -> list[tuple]:
    """Per packet with scapy's Geneve layer."""
    from scapy.contrib.geneve import GENEVE
    from scapy.layers.l2 import Ether

    out = []
    for buf in frames:
        e = Ether(buf)
        if GENEVE not in e:
            out.append(None)
            continue
        g = e[GENEVE]
        vals = {1: 0, 2: 0, 3: 0}
        for o in g.options:
            if o.classid == option_class and o.type in vals:
                vals[o.type] = int.from_bytes(bytes(o.data), "big")
        out.append((g.vni, g.oam << 7 | g.critical << 6, vals[1], vals[2], vals[3], bytes(g.payload)))
    return out


def scapy_geneve_encap(packets: list[bytes], src: str, dst: str, endpoint_id: int, attachment_id: int, cookie: int,
                       vni: int = 0, option_class: int = 0x0108) -> list[bytes]:
    """Per packet with scapy: Ether/IP/UDP/GENEVE(options)/Raw."""
    from scapy.contrib.geneve import GENEVE, GeneveOptions
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw

    opts = [GeneveOptions(classid=option_class, type=1, data=endpoint_id.to_bytes(8, "big")),
            GeneveOptions(classid=option_class, type=2, data=attachment_id.to_bytes(8, "big")),
            GeneveOptions(classid=option_class, type=3, data=cookie.to_bytes(4, "big"))]
    out = []
    for inner in packets:
        p = (Ether(src="02:00:0a:00:00:0a", dst="02:00:0a:00:01:0b") / IP(src=src, dst=dst, flags="DF", ttl=64)
             / UDP(sport=49152 + (hash(inner[12:20]) & 0x3FFF), dport=6081, chksum=0)
             / GENEVE(vni=vni, proto=0x0800, options=opts) / Raw(inner))
        out.append(bytes(p))


import numpy as np

# --- flowhash / maglev ---

_U64 = np.uint64


def _fmix64_np(k: np.ndarray) -> np.ndarray:
    k = k ^ (k >> _U64(33))
    k = k * _U64(0xFF51AFD7ED558CCD)
    k = k ^ (k >> _U64(33))
    k = k * _U64(0xC4CEB9FE1A85EC53)
    return k ^ (k >> _U64(33))


def hash_5tuple_numpy(src_ip, dst_ip, sport, dport, proto, seed: int = 0) -> np.ndarray:
    """Same symmetric hash as ``flowhash.hash_5tuple`` (uint64), written as whole-array numpy operations."""
    s = _fmix64_np(np.array([(seed & (2**64 - 1)) ^ 0x9E3779B97F4A7C15], np.uint64))[0]
    x = (src_ip.astype(np.uint64) << _U64(16)) | sport.astype(np.uint64)
    y = (dst_ip.astype(np.uint64) << _U64(16)) | dport.astype(np.uint64)
    lo, hi = np.minimum(x, y), np.maximum(x, y)
    h = _fmix64_np(s ^ (lo | (proto.astype(np.uint64) << _U64(48))))
    return _fmix64_np(h ^ (hi | _U64(5 << 56)))


def hash_lookup_numpy(src_ip, dst_ip, sport, dport, proto, table: np.ndarray, seed: int = 0) -> np.ndarray:
    """Symmetric hash + Maglev lookup ``table[hash % M]`` in plain numpy."""
    h = hash_5tuple_numpy(src_ip, dst_ip, sport, dport, proto, seed)
    return table[h % _U64(table.shape[0])]


def hash_lookup_python(flows: list[tuple[int, int, int, int, int]], table: list[int]) -> list[int]:
    """Pure-Python loop: canonical endpoint order, built-in tuple hash, ``table[hash % M]``."""
    m = len(table)
    out = []
    for src, dst, sp, dp, proto in flows:
        a, b = (src, sp), (dst, dp)
        key = (a, b, proto) if a <= b else (b, a, proto)
        out.append(table[hash(key) % m])
    return out


def gwlb_python(flows: list[tuple[int, int, int, int, int]], table: list[int], state: dict) -> list[int]:
    """Pure-Python GWLB fast path: dict flow table keyed by the canonical 5-tuple, Maglev pick on a miss."""
    m = len(table)
    out = []
    for src, dst, sp, dp, proto in flows:
        a, b = (src, sp), (dst, dp)
        key = (a, b, proto) if a <= b else (b, a, proto)
        fw = state.get(key)
        if fw is None:
            fw = state[key] = table[hash(key) % m]
        out.append(fw)


# --- classify ---


# the numpy linear first match a user would write is the classifier's test oracle itself: one copy of it
from tests.oracles.classify import first_match_numpy as classify_numpy_linear  # noqa: F401


def python_boxes(lo: np.ndarray, hi: np.ndarray, rule: np.ndarray) -> list[tuple]:
    """Boxes as flat tuples (s0, s1, d0, d1, sp0, sp1, dp0, dp1, p0, p1, rule) for ``classify_python``."""
    return [(int(a[0]), int(b[0]), int(a[1]), int(b[1]), int(a[2]), int(b[2]), int(a[3]), int(b[3]), int(a[4]),
             int(b[4]), int(r)) for a, b, r in zip(lo, hi, rule)]


def classify_python(boxes: list[tuple], cols: dict) -> list[int]:
    """Pure-Python first match (5-tuple, no zones): per packet, the boxes in order until one contains it."""
    out = []
    for s, d, sp, dp, p in zip(cols["src_ip"].tolist(), cols["dst_ip"].tolist(), cols["sport"].tolist(),
                               cols["dport"].tolist(), cols["proto"].tolist()):
        found = -1
        for s0, s1, d0, d1, sp0, sp1, dp0, dp1, p0, p1, r in boxes:
            if s0 <= s <= s1 and d0 <= d <= d1 and dp0 <= dp <= dp1 and sp0 <= sp <= sp1 and p0 <= p <= p1:
                found = r
                break
        out.append(found)
    return out


# --- firewall ---
_FW_GENEVE = struct.Struct("!BBHI")
_FW_OPT = struct.Struct("!HBB")


def _fw_rst(inner, to_sender: bool) -> bytes:
    """A 40-byte IPv4 + TCP RST for segment ``inner`` (dpkt objects), RFC 9293 section 3.10.7.1 numbers."""
    t = inner.data
    seglen = len(t.data) + (1 if t.flags & dpkt.tcp.TH_SYN else 0) + (1 if t.flags & dpkt.tcp.TH_FIN else 0)
    has_ack = t.flags & dpkt.tcp.TH_ACK
    if to_sender:
        src, dst, sp, dp = inner.dst, inner.src, t.dport, t.sport
        seq, ack = (t.ack, 0) if has_ack else (0, (t.seq + seglen) & 0xFFFFFFFF)
        flags = dpkt.tcp.TH_RST if has_ack else dpkt.tcp.TH_RST | dpkt.tcp.TH_ACK
    else:
        src, dst, sp, dp = inner.src, inner.dst, t.sport, t.dport
        seq, ack = (t.seq + seglen) & 0xFFFFFFFF, (t.ack if has_ack else 0)
        flags = dpkt.tcp.TH_RST | (dpkt.tcp.TH_ACK if has_ack else 0)
    rst = dpkt.tcp.TCP(sport=sp, dport=dp, seq=seq, ack=ack, flags=flags, win=0)
    ip = dpkt.ip.IP(src=src, dst=dst, p=6, ttl=64, df=1, data=rst)
    ip.len = 40
    return bytes(ip)


def dpkt_firewall(frames: list[bytes], rules: list, actions: list[int], default_action: int,
                  zone_of_endpoint: dict[int, int], state: dict, option_class: int = 0x0108) -> list[bytes]:
    """Stateful firewall a dpkt user would write: per frame, dpkt for Ethernet/IPv4/UDP/inner IPv4, struct for
    Geneve, a dict of sessions keyed by the sorted 5-tuple and the endpoint, linear first match over ``rules``
    (lists of inclusive (lo, hi) ranges per field: src, dst, sport, dport, proto, zone from, zone to) for a
    session's first packet, TCP SYN check, FIN/RST close, echo with swapped outer addresses, RSTs for reset actions
    (0 allow, 1 deny, 2 drop, 3 reset-client, 4 reset-server, 5 reset-both). Returns the frames sent back."""
    out = []
    syn, ack_f, rst_f, fin = dpkt.tcp.TH_SYN, dpkt.tcp.TH_ACK, dpkt.tcp.TH_RST, dpkt.tcp.TH_FIN
    for buf in frames:
        eth = dpkt.ethernet.Ethernet(buf)
        ip = eth.data
        if not isinstance(ip, dpkt.ip.IP) or ip.p != 17:
            continue
        udp = ip.data
        if udp.dport != 6081:
            continue
        g = bytes(udp.data)
        vo, _, ptype, _ = _FW_GENEVE.unpack_from(g)
        olen = (vo & 0x3F) * 4
        endpoint = None
        pos = 8
        while pos + 4 <= 8 + olen:
            cls, typ, ln = _FW_OPT.unpack_from(g, pos)
            ln = (ln & 0x1F) * 4
            if cls == option_class and typ == 1:
                endpoint = int.from_bytes(g[pos + 4: pos + 12], "big")
            pos += 4 + ln
        if endpoint not in zone_of_endpoint or ptype != 0x0800:
            continue
        zone = zone_of_endpoint[endpoint]
        inner = dpkt.ip.IP(g[8 + olen:])
        l4 = inner.data
        sp, dp = (l4.sport, l4.dport) if inner.p in (6, 17) else (0, 0)
        a, b = (inner.src, sp), (inner.dst, dp)
        fwd = a <= b
        key = (a, b, inner.p, endpoint) if fwd else (b, a, inner.p, endpoint)
        flags = l4.flags if inner.p == 6 else 0
        sess = state.get(key)
        if sess is None:
            if inner.p == 6 and flags & (syn | ack_f | rst_f) != syn:
                continue
            point = (int.from_bytes(inner.src, "big"), int.from_bytes(inner.dst, "big"), sp, dp, inner.p, zone, zone)
            act = default_action
            for i, fields in enumerate(rules):
                if all(any(lo <= v <= hi for lo, hi in f) for v, f in zip(point, fields)):
                    act = actions[i]
                    break
            sess = state[key] = {"act": act, "fwd": fwd, "fins": 0, "closed": False, "pkts": [0, 0]}
        from_client = fwd == sess["fwd"]
        sess["pkts"][0 if from_client else 1] += 1
        act = sess["act"]
        if act == 0:
            if sess["closed"]:
                continue
            if flags & rst_f:
                sess["closed"] = True
            elif flags & fin:
                sess["fins"] |= 1 if from_client else 2
            ip.src, ip.dst = ip.dst, ip.src
            eth.src, eth.dst = eth.dst, eth.src
            out.append(bytes(eth))
        elif act >= 3 and inner.p == 6 and not flags & rst_f:
            for to_client in {3: (True,), 4: (False,), 5: (True, False)}[act]:
                o = dpkt.ethernet.Ethernet(buf)
                payload = g[: 8 + olen] + _fw_rst(inner, to_sender=to_client == from_client)
                o.data.data.data = payload
                o.data.data.ulen = 8 + len(payload)
                o.data.data.sum = 0
                o.data.len = o.data.hl * 4 + 8 + len(payload)
                o.data.sum = 0
                o.data.src, o.data.dst = o.data.dst, o.data.src
                o.src, o.dst = o.dst, o.src
                out.append(bytes(o))
    return out


# --- natvpc ---
import numpy as _np_natvpc


def numpy_lpm(prefixes, dst):
    """Longest-prefix match in plain numpy: one masked compare over the whole column per prefix, longest first.

    ``prefixes``: list of (network, prefix_len, value); returns int32 values, -1 where nothing matches."""
    out = _np_natvpc.full(dst.shape[0], -1, _np_natvpc.int32)
    for net, plen, val in sorted(prefixes, key=lambda p: -p[1]):
        mask = _np_natvpc.uint32((0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF if plen else 0)
        hit = ((dst & mask) == net) & (out < 0)
        out[hit] = val
    return out


def dpkt_snat(frames, maps, public_ip, port_lo=1024):
    """SNAT the way a dpkt user scripts it: parse each frame, look the (proto, src, sport) mapping up in a dict
    (allocating the next port on a miss), set the source, zero the checksums and let dpkt recompute them."""
    out = []
    for buf in frames:
        eth = dpkt.ethernet.Ethernet(buf)
        ip = eth.data
        l4 = ip.data
        key = (ip.p, ip.src, l4.sport)
        port = maps.get(key)
        if port is None:
            port = maps[key] = port_lo + len(maps)
        ip.src = public_ip
        l4.sport = port
        ip.sum = 0
        l4.sum = 0
        out.append(bytes(eth))
    return out


def numpy_snat_rewrite(data, off, l3_off, l4_off, proto, new_ip, new_port):
    """Source rewrite with RFC 1624 incremental checksums, vectorized in numpy (TCP/UDP with checksum only;
    addresses and ports given). The plain-numpy counterpart of the nat_rewrite kernel."""
    np = _np_natvpc

    def get16(pos):
        return (data[pos].astype(np.uint32) << 8) | data[pos + 1]

    def put16(pos, v):
        data[pos] = (v >> 8).astype(np.uint8)
        data[pos + 1] = (v & 0xFF).astype(np.uint8)

    def upd(c, old, new):
        acc = ((~c) & 0xFFFF) + ((~old) & 0xFFFF) + new
        acc = (acc & 0xFFFF) + (acc >> 16)
        acc = (acc & 0xFFFF) + (acc >> 16)
        return (~acc) & 0xFFFF

    l3 = off + l3_off
    l4 = off + l4_off
    old_hi, old_lo = get16(l3 + 12), get16(l3 + 14)
    new_hi, new_lo = (new_ip >> 16).astype(np.uint32), (new_ip & 0xFFFF).astype(np.uint32)
    put16(l3 + 10, upd(upd(get16(l3 + 10), old_hi, new_hi), old_lo, new_lo))
    put16(l3 + 12, new_hi)
    put16(l3 + 14, new_lo)
    cf = l4 + np.where(proto == 6, 16, 6)
    c = get16(cf)
    nc = upd(upd(upd(c, old_hi, new_hi), old_lo, new_lo), get16(l4), new_port.astype(np.uint32))
    nc = np.where((proto == 17) & (nc == 0), 0xFFFF, nc)
    put16(cf, np.where((proto == 17) & (c == 0), 0, nc).astype(np.uint32))
    put16(l4, new_port.astype(np.uint32))


def dpkt_unsnat(frames, owner):
    """Reverse translation of replies with dpkt: (proto, dst port) -> (private ip bytes, port) from a dict, set the
    destination, zero the checksums and let dpkt recompute them."""
    out = []
    for buf in frames:
        eth = dpkt.ethernet.Ethernet(buf)
        ip = eth.data
        l4 = ip.data
        hit = owner.get((ip.p, l4.dport))
        if hit is not None:
            ip.dst, l4.dport = hit
            ip.sum = 0
            l4.sum = 0
        out.append(bytes(eth))
    return out


# --- pcap ---
import os


def dpkt_read_5tuple(path) -> list[tuple]:
    """The loop a dpkt user writes to pull the 5-tuple out of a capture: dpkt.pcap.Reader + dpkt.ethernet.Ethernet,
    then src, dst, sport, dport, proto of every IPv4 packet (ports 0 for other protocols)."""
    out = []
    with open(path, "rb") as f:
        for _ts, buf in dpkt.pcap.Reader(f):
            ip = dpkt.ethernet.Ethernet(buf).data
            if not isinstance(ip, dpkt.ip.IP):
                continue
            l4 = ip.data
            if isinstance(l4, (dpkt.tcp.TCP, dpkt.udp.UDP)):
                out.append((ip.src, ip.dst, l4.sport, l4.dport, ip.p))
            else:
                out.append((ip.src, ip.dst, 0, 0, ip.p))
    return out


def cat_file(path, bufsize: int = 1 << 20) -> int:
    """``cat FILE > /dev/null`` in Python: large reads into one reused buffer, written to /dev/null (the I/O
    ceiling for reading a capture from the page cache). Returns the bytes read."""
    buf = bytearray(bufsize)
    view = memoryview(buf)
    total = 0
    with open(path, "rb", buffering=0) as f, open(os.devnull, "wb", buffering=0) as null:
        while n := f.readinto(view):
            null.write(view[:n])
            total += n
    return total


def dpkt_write_pcap(path, packets: list[bytes], ts: list[float]) -> None:
    """The loop a dpkt user writes to save packets: dpkt.pcap.Writer.writepkt per packet (nanosecond file)."""
    with open(path, "wb") as f:
        w = dpkt.pcap.Writer(f, nano=True)
        for buf, t in zip(packets, ts):
            w.writepkt(buf, t)


# --- pipeline ---
# The dpkt reference of the whole path (parse, route, GWLB hash and flow table, Geneve, firewall first match and
# sessions, NAT, write) is large: it lives in bench/reference_pipeline.py (ReferencePipeline), used by
# bench/bench_pipeline.py.


# --- flowtable ---
def _fmix64_ft(x: np.ndarray) -> np.ndarray:
    x = x ^ (x >> np.uint64(33))
    x = x * np.uint64(0xFF51AFD7ED558CCD)
    x = x ^ (x >> np.uint64(33))
    x = x * np.uint64(0xC4CEB9FE1A85EC53)
    return x ^ (x >> np.uint64(33))


def flowkey_hash_numpy(a_ip, b_ip, a_port, b_port, proto, tag) -> np.ndarray:
    """64-bit hash of the flow-table key, vectorized: the packed key a plain-numpy table sorts and searches."""
    k0 = (a_ip.astype(np.uint64) << np.uint64(32)) | b_ip
    k1 = ((a_port.astype(np.uint64) << np.uint64(48)) | (b_port.astype(np.uint64) << np.uint64(32))
          | (proto.astype(np.uint64) << np.uint64(24)))
    return _fmix64_ft(_fmix64_ft(_fmix64_ft(k0) ^ k1) ^ tag)


class NumpyFlowTable:
    """Plain-numpy flow table: a sorted array of 64-bit packed-key hashes (np.unique + searchsorted) mapping to
    stable slots, with the keys verified on hits and the statistics updated with ufunc.at.

    What a numpy user writes without a compiled hash table. Its weak points are what the kernel avoids: a batch
    sorts and merges (O(live) per batch with new flows), and 64-bit hash collisions would merge two flows (it
    only counts key mismatches on hits).
    """

    def __init__(self, capacity: int):
        self.sorted_h = np.empty(0, np.uint64)
        self.sorted_slot = np.empty(0, np.int64)
        self.keys = [np.zeros(capacity, d) for d in (np.uint32, np.uint32, np.uint16, np.uint16, np.uint8, np.uint64)]
        self.first_seen = np.zeros(capacity, np.int64)
        self.last_seen = np.zeros(capacity, np.int64)
        self.packets = np.zeros(capacity, np.uint64)
        self.bytes = np.zeros(capacity, np.uint64)
        self.live = 0
        self.mismatches = 0

    def lookup_or_insert(self, a_ip, b_ip, a_port, b_port, proto, tag, ts_ns, nbytes) -> np.ndarray:
        cols = (a_ip, b_ip, a_port, b_port, proto, tag)
        h = flowkey_hash_numpy(*cols)
        slot = np.full(h.shape[0], -1, np.int64)
        if self.sorted_h.shape[0]:
            pos = np.minimum(np.searchsorted(self.sorted_h, h), self.sorted_h.shape[0] - 1)
            hit = self.sorted_h[pos] == h
            slot[hit] = self.sorted_slot[pos[hit]]
            s = slot[hit]
            same = np.ones(s.shape[0], bool)
            for stored, col in zip(self.keys, cols):
                same &= stored[s] == col[hit]
            self.mismatches += int((~same).sum())
        miss = slot < 0
        if miss.any():
            uh, first, inv = np.unique(h[miss], return_index=True, return_inverse=True)
            new_slots = self.live + np.arange(uh.shape[0], dtype=np.int64)  # no free list: capacity not checked
            src = np.flatnonzero(miss)[first]
            for stored, col in zip(self.keys, cols):
                stored[new_slots] = col[src]
            self.first_seen[new_slots] = ts_ns[src]
            self.last_seen[new_slots] = ts_ns[src]
            at = np.searchsorted(self.sorted_h, uh)
            self.sorted_h = np.insert(self.sorted_h, at, uh)
            self.sorted_slot = np.insert(self.sorted_slot, at, new_slots)
            self.live += uh.shape[0]
            slot[miss] = new_slots[inv.ravel()]
        np.add.at(self.packets, slot, np.uint64(1))
        np.add.at(self.bytes, slot, nbytes.astype(np.uint64))
        np.maximum.at(self.last_seen, slot, ts_ns)
        return slot


def dict_lookup_or_insert(table: dict, stats: list, a_ip, b_ip, a_port, b_port, proto, tag, ts_ns, nbytes) -> list:
    """Pure-Python flow table: dict of key tuples -> slot, per-slot [first_seen, last_seen, packets, bytes] lists."""
    out = []
    for key, t, nb in zip(zip(a_ip.tolist(), b_ip.tolist(), a_port.tolist(), b_port.tolist(), proto.tolist(),
                              tag.tolist()), ts_ns.tolist(), nbytes.tolist()):
        s = table.get(key)
        if s is None:
            s = table[key] = len(stats)
            stats.append([t, t, 1, nb])
        else:
            st = stats[s]
            st[1] = max(st[1], t)
            st[2] += 1
            st[3] += nb
        out.append(s)
    return out


def compile_python_categorizer(entries: dict, names: list) -> list:
    """(category id, compiled regex) of every URL-list entry (tests/oracles/urlcat.py's translation)."""
    from tests.oracles.urlcat import entry_regex

    return [(names.index(c), entry_regex(e)) for c, es in entries.items() for e in es]


def categorize_python(compiled: list, database: dict, names: list, hosts) -> list:
    """Pure-Python URL categorisation: the entries as compiled regexes, the database as a dict of domains; the
    primary (smallest) category id of each host."""
    unknown = names.index("unknown")
    db_ids = {d: [names.index(c) for c in cs] for d, cs in database.items()} if database else {}
    out = []
    for h in hosts:
        h = h.lower()
        url = h + "/"
        found = {c for c, rx in compiled if rx.match(url)}
        labels = h.split(".")
        for k in range(len(labels)):
            d = ".".join(labels[k:])
            if d in db_ids:
                found.update(db_ids[d])
                break
        out.append(min(found) if found else unknown)
    return out
