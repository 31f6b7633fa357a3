"""Geneve (RFC 8926) encapsulation and decapsulation with the GWLB metadata options (DESIGN.md section 2).

``encap`` wraps each IPv4 packet of a batch in outer Ethernet + IPv4 + UDP 6081 + Geneve with three options
(endpoint id, attachment id, flow cookie); ``decap`` finds the inner packets of a batch of Geneve frames;
``parse_geneve`` fills the Geneve columns of a batch in place; ``echo`` is what a firewall sends back.

Copies: ``decap`` copies no packet bytes. Its batch shares the outer batch's arena and its offsets point at
the inner packets, so the outer headers stay readable at ``data[off - inner_off : off]``. ``encap`` writes
each 82-byte outer header from a template in one kernel pass and copies the inner packet once with
``memcpy``, into an output arena sized by a first pass (a pcap writer needs contiguous frames, so the copy is
the one a gather-write would make anyway). ``echo`` copies the arena once and swaps the addresses in place.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import numpy as np

from ._kernels import geneve as _k
from .batch import LINKTYPE_ETHERNET, LINKTYPE_IPV4, PacketBatch
from .status import N_STATUS, PktStatus, count_status

GENEVE_PORT = _k.GENEVE_PORT
GENEVE_HDR_LEN = _k.GENEVE_HDR_LEN
#: outer Ethernet + IPv4 + UDP + Geneve + the three GWLB options written by ``encap``
ENCAP_HDR_LEN = _k.ENCAP_HDR_LEN
#: bytes of the three GWLB options ``encap`` writes (endpoint id 12, attachment id 12, flow cookie 8)
OPTIONS_LEN = 32
#: the same without the outer Ethernet header: what the appliance MTU must add to the inner packet size
OVERHEAD = ENCAP_HDR_LEN - 14
PROTO_IPV4 = _k.PROTO_IPV4
PROTO_ETHERNET = _k.PROTO_ETHERNET

OPT_ENDPOINT_ID = 1
OPT_ATTACHMENT_ID = 2
OPT_FLOW_COOKIE = 3

#: Geneve flag bits as stored in the ``geneve_flags`` column (second header byte)
FLAG_OAM = 0x80
FLAG_CRITICAL = 0x40

DEFAULT_SRC_MAC = "02:00:0a:00:00:0a"
DEFAULT_DST_MAC = "02:00:0a:00:01:0b"


@dataclass(frozen=True)
class Profile:
    """Cloud defaults that differ between GWLB implementations.

    Attributes
    ----------
    name : str
    option_class : int
        Option class of the metadata options.
    max_inner : int
        Largest inner packet (bytes) the GWLB forwards; larger ones are dropped with ``TOO_BIG``.
    direction_bits : int
        Bits at the top of the flow cookie that carry the flow direction (Tencent: 3), 0 if none.
    """

    name: str
    option_class: int
    max_inner: int
    direction_bits: int = 0


PROFILES = {
    "aws": Profile("aws", 0x0108, 8500),
    # Alibaba does not publish its option class: it is a deployment setting, 0x0108 until configured
    "alibaba": Profile("alibaba", 0x0108, 1500),
    "tencent": Profile("tencent", 0x0167, 8500, direction_bits=3),
}


def get_profile(profile: str | Profile = "aws") -> Profile:
    """The ``Profile`` named ``profile`` (aws, alibaba, tencent); a ``Profile`` passes through."""
    if isinstance(profile, Profile):
        return profile
    try:
        return PROFILES[str(profile).lower()]
    except KeyError:
        raise ValueError(f"unknown Geneve profile {profile!r}; expected one of {', '.join(PROFILES)}") from None


def split_cookie(flow_cookie, profile: str | Profile = "tencent"):
    """Split flow cookies into ``(direction, flow_id)`` arrays for a profile with direction bits."""
    prof = get_profile(profile)
    cookie = np.asarray(flow_cookie, dtype=np.uint32)
    shift = 32 - prof.direction_bits
    if prof.direction_bits == 0:
        return np.zeros_like(cookie, dtype=np.uint8), cookie.copy()
    return (cookie >> np.uint32(shift)).astype(np.uint8), cookie & np.uint32((1 << shift) - 1)


# ---------------------------------------------------------------------------------------------------- decoding
def _decode(batch: PacketBatch, option_class: int):
    n = len(batch)
    cols = {
        "status": np.empty(n, np.uint8),
        "vni": np.empty(n, np.uint32),
        "geneve_flags": np.empty(n, np.uint8),
        "opt_len": np.empty(n, np.uint16),
        "endpoint_id": np.empty(n, np.uint64),
        "attachment_id": np.empty(n, np.uint64),
        "flow_cookie": np.empty(n, np.uint32),
        "inner_off": np.empty(n, np.int32),
    }
    inner_len = np.empty(n, np.uint32)
    inner_lt = np.empty(n, np.uint16)
    _k.parse_geneve(batch.data, batch.off, batch.caplen, batch.linktype, _u16("option_class", option_class),
                    cols["status"], cols["vni"], cols["geneve_flags"], cols["opt_len"], cols["endpoint_id"],
                    cols["attachment_id"], cols["flow_cookie"], cols["inner_off"], inner_len, inner_lt)
    return cols, inner_len, inner_lt


def _option_class(option_class, profile) -> int:
    return get_profile(profile).option_class if option_class is None else option_class


def parse_geneve(batch: PacketBatch, option_class: int | None = None, profile: str | Profile = "aws") -> PacketBatch:
    """Fill the Geneve columns of ``batch`` in place and return it.

    Sets ``status``, ``vni``, ``geneve_flags`` (O bit 0x80, C bit 0x40), ``opt_len`` (bytes), ``endpoint_id``,
    ``attachment_id``, ``flow_cookie`` (options of ``option_class``, 0 when absent) and ``inner_off`` (offset of
    the inner packet in each outer packet, -1 when unknown). ``status`` is replaced: OK or the first problem
    (see ``_kernels.geneve.parse_geneve``). A packet dropped for an unknown critical option or a bad version
    still has its columns filled.
    """
    cols, _, _ = _decode(batch, _option_class(option_class, profile))
    for name, col in cols.items():
        setattr(batch, name, col)
    return batch


def decap(wire: PacketBatch, option_class: int | None = None, profile: str | Profile = "aws") -> PacketBatch:
    """The inner packets of a batch of Geneve frames, one row per outer packet, sharing the outer arena.

    Row ``i`` of the result is the inner packet of ``wire[i]``: raw IPv4 (link type 228) for protocol type
    0x0800, Ethernet (1) for 0x6558. ``status`` says whether it decoded (OK) or why not; rows with no inner
    packet (e.g. ``NOT_GENEVE``) have ``caplen`` 0. The Geneve columns are filled as by ``parse_geneve``;
    ``inner_off`` is where the inner packet starts in the outer one, so ``data[off - inner_off : off]`` is the
    outer header. No packet bytes are copied: ``result.data is wire.data``.
    """
    cols, inner_len, inner_lt = _decode(wire, _option_class(option_class, profile))
    has_inner = cols["inner_off"] >= 0
    off = wire.off + np.where(has_inner, cols["inner_off"], 0)
    snapped = wire.wirelen.astype(np.int64) - wire.caplen
    wirelen = np.where(has_inner, inner_len + np.maximum(snapped, 0), 0).astype(np.uint32)
    out = PacketBatch.__new__(PacketBatch)
    out.data = wire.data
    for name in PacketBatch.__slots__[1:]:
        setattr(out, name, None)
    out.off = off
    out.caplen = inner_len
    out.wirelen = wirelen
    out.ts_ns = wire.ts_ns.copy()
    out.linktype = inner_lt
    for name, col in cols.items():
        setattr(out, name, col)
    return out


def echo(wire: PacketBatch, option_class: int | None = None, profile: str | Profile = "aws") -> PacketBatch:
    """What a firewall returns: each Geneve packet with its outer MACs and IPv4 addresses swapped.

    The Geneve header and options (cookie included) are kept byte for byte and the outer IPv4 checksum is
    recomputed; UDP ports are kept. Packets that do not decode (status not OK) are returned unchanged, with
    their status. The result has its own arena (one copy of ``wire.data``) and the Geneve columns filled.
    """
    cols, _, _ = _decode(wire, _option_class(option_class, profile))
    data = wire.data.copy()
    _k.swap_outer(data, wire.off, wire.caplen, wire.linktype, cols["status"])
    return PacketBatch(data, wire.off.copy(), wire.caplen.copy(), wire.wirelen.copy(), wire.ts_ns.copy(),
                       wire.linktype.copy(), **cols)


# ---------------------------------------------------------------------------------------------------- encoding
def encap(batch: PacketBatch, src="10.0.0.10", dst="10.0.1.11", *, endpoint_id=0, attachment_id=0, cookie=0,
          vni=0, option_class: int | None = None, profile: str | Profile = "aws", sport=None, direction=None,
          src_mac=DEFAULT_SRC_MAC, dst_mac=DEFAULT_DST_MAC, ttl: int = 64, max_inner: int | None = None,
          hash_seed: int = 0, status_out: np.ndarray | None = None, arena: np.ndarray | None = None) -> PacketBatch:
    """Wrap every IPv4 packet of ``batch`` in Ethernet + IPv4 + UDP 6081 + Geneve with the GWLB options.

    Parameters
    ----------
    batch : PacketBatch
        Raw IPv4 packets, or frames (Ethernet with VLAN tags, SLL, SLL2) whose IPv4 packet is carried.
    src, dst : str, int or uint32 array
        Outer IPv4 source and destination (dotted quad, host-order integer, or one per packet: the GWLB sends
        each packet to its firewall's address).
    endpoint_id, attachment_id : int or uint64 array
        Option types 1 and 2.
    cookie : int or uint32 array
        Option type 3, the flow cookie.
    vni : int or uint32 array
        24-bit VNI (0 for a GWLB).
    option_class : int, optional
        Option class; defaults to the profile's.
    profile : str or Profile
        ``aws`` (class 0x0108, inner packets up to 8500 bytes), ``alibaba`` (1500 bytes) or ``tencent``
        (class 0x0167, 3-bit direction at the top of the cookie).
    sport : int or uint16 array, optional
        UDP source port; by default a symmetric hash of the inner 5-tuple mapped to 49152-65535 (the value
        ``flowhash.geneve_udp_sport(flowhash.hash_5tuple(..., hash_seed))`` gives).
    direction : int or array, optional
        Flow direction for profiles with direction bits (Tencent), written into the top of the cookie.
    src_mac, dst_mac : str or bytes
        Outer Ethernet addresses.
    ttl : int
        Outer IPv4 TTL.
    max_inner : int, optional
        Largest inner packet; defaults to the profile's.
    hash_seed : int
        Seed of the source-port flow hash.
    status_out : uint8[n], optional
        Receives each input packet's status: OK, or why it was not encapsulated (TOO_BIG, NOT_IPV4, ...).
    arena : uint8 array, optional
        A buffer to build the frames in when it is large enough (the result's ``data`` is then a view of its
        start; otherwise a new arena is allocated). For a caller that is done with the frames before its next
        call: reusing one buffer spares the page faults of a fresh arena per call.

    Returns
    -------
    PacketBatch
        Ethernet frames of the packets that were encapsulated, in input order, with the Geneve columns set.
        Packets that were not (see ``status_out``) are left out.
    """
    a = _prepare(batch, src, dst, endpoint_id, attachment_id, cookie, vni, option_class, profile, sport, direction,
                 src_mac, dst_mac, ttl, max_inner, hash_seed, status_out)
    st, start, ilen, total = a["status"], a["start"], a["ilen"], a["total"]
    src_a, dst_a, vni_a, ep_a, att_a, ck_a = a["src"], a["dst"], a["vni"], a["ep"], a["att"], a["ck"]
    rows = np.flatnonzero(st == PktStatus.OK).astype(np.int64)
    m = rows.shape[0]
    lens = ilen[rows].astype(np.int64) + ENCAP_HDR_LEN
    out_off = np.zeros(m, np.int64)
    if m:
        np.cumsum(lens[:-1], out=out_off[1:])
    if arena is not None and (arena.dtype != np.uint8 or arena.ndim != 1 or not arena.flags.c_contiguous
                              or not arena.flags.writeable):
        raise ValueError("arena must be a writeable contiguous 1-D uint8 array")
    out = arena[: int(total)] if arena is not None and arena.shape[0] >= total else np.empty(int(total), np.uint8)
    _k.fill_encap(batch.data, start, ilen, rows, out, out_off, a["macs"], src_a, dst_a, a["sport"], vni_a, ep_a, att_a,
                  ck_a, a["cls"], a["ttl"], a["seed"])
    caplen = lens.astype(np.uint32)
    # a snapped inner packet is carried as captured: the frame's length on the wire adds the bytes not captured
    snapped = batch.wirelen[rows].astype(np.int64) - batch.caplen[rows]
    wirelen = (lens + np.maximum(snapped, 0)).astype(np.uint32)
    return PacketBatch(
        out, out_off, caplen, wirelen, batch.ts_ns[rows], LINKTYPE_ETHERNET,
        status=np.zeros(m, np.uint8),
        src_ip=_gather(src_a, rows), dst_ip=_gather(dst_a, rows), proto=np.full(m, 17, np.uint8),
        dport=np.full(m, GENEVE_PORT, np.uint16),
        vni=_gather(vni_a, rows), geneve_flags=np.zeros(m, np.uint8), opt_len=np.full(m, OPTIONS_LEN, np.uint16),
        endpoint_id=_gather(ep_a, rows), attachment_id=_gather(att_a, rows), flow_cookie=_gather(ck_a, rows),
        inner_off=np.full(m, ENCAP_HDR_LEN, np.int32), l3_off=np.full(m, 14, np.int32),
        l4_off=np.full(m, 34, np.int32),
    )


def _prepare(batch, src, dst, endpoint_id, attachment_id, cookie, vni, option_class, profile, sport, direction,
             src_mac, dst_mac, ttl, max_inner, hash_seed, status_out, plan: bool = True) -> dict:
    """Check encap's arguments and run the sizing pass (unless ``plan`` is False: the caller runs its own; the
    status array and the size limit are in the result)."""
    prof = get_profile(profile)
    cls = _u16("option_class", prof.option_class if option_class is None else option_class)
    limit = prof.max_inner if max_inner is None else int(max_inner)
    if limit < 0:
        raise ValueError(f"max_inner must be >= 0, got {limit}")
    n = len(batch)
    st = np.empty(n, np.uint8) if status_out is None else status_out
    if not isinstance(st, np.ndarray) or st.dtype != np.uint8 or st.shape != (n,):
        raise ValueError(f"status_out must be uint8[{n}]")
    src_a = _per_packet_ip("src", src, n)
    dst_a = _per_packet_ip("dst", dst, n)
    vni_a = _per_packet("vni", vni, n, np.uint32, 0xFFFFFF)
    ep_a = _per_packet("endpoint_id", endpoint_id, n, np.uint64, 2**64 - 1)
    att_a = _per_packet("attachment_id", attachment_id, n, np.uint64, 2**64 - 1)
    ck_a = _per_packet("cookie", cookie, n, np.uint32, 2**32 - 1)
    if direction is not None:
        if prof.direction_bits == 0:
            raise ValueError(f"profile {prof.name!r} has no direction bits in the cookie")
        shift = 32 - prof.direction_bits
        dir_a = _per_packet("direction", direction, n, np.uint32, (1 << prof.direction_bits) - 1)
        ck_a = (ck_a & np.uint32((1 << shift) - 1)) | (dir_a << np.uint32(shift))
    sp_a = np.zeros(0, np.uint16) if sport is None else _per_packet("sport", sport, n, np.uint16, 0xFFFF)
    macs = np.frombuffer(_mac("dst_mac", dst_mac) + _mac("src_mac", src_mac), np.uint8)
    ttl = int(ttl)
    if not 0 <= ttl <= 255:
        raise ValueError(f"ttl must be 0-255, got {ttl}")
    limit = min(limit, 0xFFFFFFFF)
    if plan:
        start = np.empty(n, np.int64)
        ilen = np.empty(n, np.uint32)
        total = _k.plan_encap(batch.data, batch.off, batch.caplen, batch.linktype, limit, st, start, ilen)
    else:
        start = ilen = total = None
    return {"status": st, "limit": limit, "start": start, "ilen": ilen, "total": total, "src": src_a, "dst": dst_a, "vni": vni_a, "ep": ep_a, "att": att_a,
                "ck": ck_a, "sport": sp_a, "macs": macs, "cls": cls, "ttl": ttl, "seed": _k.mix_seed(int(hash_seed) & 0xFFFFFFFFFFFFFFFF)}


def carried(batch: PacketBatch, *, endpoint_id=0, attachment_id=0, cookie=0, vni=0,
            option_class: int | None = None, profile: str | Profile = "aws", max_inner: int | None = None,
            status_out: np.ndarray | None = None, parsed: bool = False) -> PacketBatch:
    """What ``decap(encap(batch, ...))`` returns, without building the frames: the inner packets the frames would
    carry, as views of ``batch``'s own arena, with the Geneve columns the receiver would decode.

    Arguments as for ``encap`` (the outer addresses, ports and MACs are left out: they change no column of the
    decapsulated view). Row ``j`` is the packet ``encap`` would put in its frame ``j`` (the rows ``status_out``
    says OK, in input order); only ``data`` and ``off`` differ from the real decapsulation, which points into the
    frames' arena. For a receiver that reads the inner packet and the options and never looks at the outer bytes
    (a firewall when no tap records the link): it spares the copy of every packet into its frame and the decode.

    With ``parsed=True``, for a ``batch`` whose parse columns describe its current bytes (parsed, and kept up to
    date by whatever rewrote them): when every carried packet's status is OK, the result is parsed too, without a
    parse. Its L3/L4 columns are ``batch``'s with the offsets moved to the inner packet (``l3_off`` 0): what
    ``parse`` of the raw IPv4 packet gives, since it reads the same bytes and the frame's inner packet ends where
    the IPv4 packet ends in the capture, where the parse of ``batch`` stops reading too. Otherwise (or by
    default) ``status`` is the decoder's (OK) and the L3/L4 columns are None. When every packet is carried, the
    columns taken from ``batch`` are ``batch``'s own arrays, not copies.
    """
    a = _prepare(batch, 0, 0, endpoint_id, attachment_id, cookie, vni, option_class, profile, None, None,
                 DEFAULT_SRC_MAC, DEFAULT_DST_MAC, 64, max_inner, 0, status_out, plan=False)
    n = len(batch)
    use_parse = parsed and batch.status is not None and batch.l4_off is not None
    st = a["status"]
    start = np.empty(n, np.int64)
    ilen = np.empty(n, np.uint32)
    wirelen = np.empty(n, np.uint32)
    if use_parse:
        parse_cols = (batch.status, batch.l3_off, batch.l4_off)
        l4_off = np.empty(n, np.int32)
    else:
        parse_cols = (np.zeros(0, np.uint8), np.zeros(0, np.int32), np.zeros(0, np.int32))
        l4_off = parse_cols[2]
    # one pass: the status, where each inner packet starts, its length captured and on the wire (what decap's
    # view says: what it captured plus what the snaplen cut off) and where its L4 starts
    m, m_parsed = _k.plan_carried(batch.data, batch.off, batch.caplen, batch.wirelen, batch.linktype, *parse_cols,
                                  a["limit"], st, start, ilen, wirelen, l4_off)
    every = m == n
    rows = None if every else np.flatnonzero(st == PktStatus.OK)

    def take(col: np.ndarray) -> np.ndarray:
        return col if every else col[rows]

    def per_packet(col: np.ndarray) -> np.ndarray:  # a Geneve column: its own array, never the argument's
        if col.shape[0] == 1:
            return np.full(m, col[0], col.dtype)
        return col.copy() if every else col[rows]

    out = PacketBatch.__new__(PacketBatch)
    out.data = batch.data
    for name in PacketBatch.__slots__[1:]:
        setattr(out, name, None)
    out.off = take(start)
    out.caplen = take(ilen)
    out.wirelen = take(wirelen)
    out.ts_ns = take(batch.ts_ns)
    out.linktype = np.full(m, LINKTYPE_IPV4, np.uint16)
    out.status = np.zeros(m, np.uint8)
    out.vni = per_packet(a["vni"])
    out.geneve_flags = np.zeros(m, np.uint8)
    out.opt_len = np.full(m, OPTIONS_LEN, np.uint16)
    out.endpoint_id = per_packet(a["ep"])
    out.attachment_id = per_packet(a["att"])
    out.flow_cookie = per_packet(a["ck"])
    out.inner_off = np.full(m, ENCAP_HDR_LEN, np.int32)
    if use_parse and m_parsed == m:
        # every carried packet parsed OK
        if every:
            out.status = batch.status
        for name in ("src_ip", "dst_ip", "sport", "dport", "proto", "tcp_flags"):
            setattr(out, name, take(getattr(batch, name)))
        out.l3_off = np.zeros(m, np.int32)
        out.l4_off = take(l4_off)
    return out


def encap_headers(batch: PacketBatch, src="10.0.0.10", dst="10.0.1.11", *, endpoint_id=0, attachment_id=0,
                  cookie=0, vni=0, option_class: int | None = None, profile: str | Profile = "aws", sport=None,
                  direction=None, src_mac=DEFAULT_SRC_MAC, dst_mac=DEFAULT_DST_MAC, ttl: int = 64,
                  max_inner: int | None = None, hash_seed: int = 0, status_out: np.ndarray | None = None):
    """``encap`` without copying the inner packets: the outer headers in their own buffer, the payload shared.

    Arguments as for ``encap``. Returns ``(headers, rows, inner_start, inner_len)``: ``headers`` is
    ``uint8[m, 82]``, one outer header per encapsulated packet, and packet ``j`` on the wire is
    ``headers[j]`` followed by ``batch.data[inner_start[j] : inner_start[j] + inner_len[j]]`` (the input arena,
    untouched); ``rows`` are the input rows. For a writer that gathers the two parts itself (``os.writev``,
    a NIC with scatter-gather), this skips the copy ``encap`` makes.
    """
    a = _prepare(batch, src, dst, endpoint_id, attachment_id, cookie, vni, option_class, profile, sport, direction,
                 src_mac, dst_mac, ttl, max_inner, hash_seed, status_out)
    rows = np.flatnonzero(a["status"] == PktStatus.OK).astype(np.int64)
    m = rows.shape[0]
    headers = np.empty((m, ENCAP_HDR_LEN), np.uint8)
    out_off = np.arange(m, dtype=np.int64) * ENCAP_HDR_LEN
    _k.fill_encap(batch.data, a["start"], a["ilen"], rows, headers.reshape(-1), out_off, a["macs"], a["src"],
                  a["dst"], a["sport"], a["vni"], a["ep"], a["att"], a["ck"], a["cls"], a["ttl"], a["seed"],
                  copy_inner=False)
    return headers, rows, a["start"][rows], a["ilen"][rows]


def flow_ports(batch: PacketBatch, hash_seed: int = 0) -> np.ndarray:
    """The UDP source port ``encap`` would choose for each packet (uint16[n]; 49152 where it has no IPv4)."""
    n = len(batch)
    st = np.empty(n, np.uint8)
    start = np.empty(n, np.int64)
    ilen = np.empty(n, np.uint32)
    _k.plan_encap(batch.data, batch.off, batch.caplen, batch.linktype, 0xFFFFFFFF, st, start, ilen)
    out = np.empty(n, np.uint16)
    _k.flow_ports(batch.data, start, ilen, out, _k.mix_seed(hash_seed & 0xFFFFFFFFFFFFFFFF))
    return out


def counts(status: np.ndarray) -> dict[str, int]:
    """Packets per status name (OK included) for a status column."""
    c = count_status(status)
    out = {}
    for code in np.flatnonzero(c[:N_STATUS]):
        try:
            name = PktStatus(int(code)).name
        except ValueError:
            name = f"STATUS_{int(code)}"
        out[name] = int(c[code])
    return out


# ---------------------------------------------------------------------------------------------------- helpers
def _u16(name: str, v) -> int:
    v = int(v)
    if not 0 <= v <= 0xFFFF:
        raise ValueError(f"{name} must be 0-0xffff, got {v:#x}")
    return v


def _gather(a: np.ndarray, rows: np.ndarray) -> np.ndarray:
    return np.full(rows.shape[0], a[0], a.dtype) if a.shape[0] == 1 else a[rows]


def _per_packet(name: str, v, n: int, dtype, vmax: int) -> np.ndarray:
    """A scalar as a length-1 array (the kernel broadcasts it) or a per-packet array of length n."""
    if np.ndim(v) == 0:
        v = int(v)
        if not 0 <= v <= vmax:
            raise ValueError(f"{name} must be 0-{vmax:#x}, got {v}")
        return np.array([v], dtype)
    a = np.asarray(v)
    if a.shape != (n,):
        raise ValueError(f"{name} must be a scalar or an array of length {n}, got shape {a.shape}")
    if a.dtype.kind not in "ui":
        raise ValueError(f"{name} must be integers, got {a.dtype}")
    if a.size and (a.min() < 0 or int(a.max()) > vmax):
        raise ValueError(f"{name} values must be 0-{vmax:#x}")
    return np.ascontiguousarray(a, dtype=dtype)


def _per_packet_ip(name: str, v, n: int) -> np.ndarray:
    if isinstance(v, (str, ipaddress.IPv4Address)):
        try:
            v = int(ipaddress.IPv4Address(v))
        except ValueError:
            raise ValueError(f"{name} is not an IPv4 address: {v!r}") from None
    return _per_packet(name, v, n, np.uint32, 0xFFFFFFFF)


def _mac(name: str, v) -> bytes:
    if isinstance(v, (bytes, bytearray)):
        b = bytes(v)
    else:
        try:
            b = bytes(int(x, 16) for x in str(v).replace("-", ":").split(":"))
        except ValueError:
            raise ValueError(f"{name} is not a MAC address: {v!r}") from None
    if len(b) != 6:
        raise ValueError(f"{name} is not a MAC address: {v!r}")
    return b


def ip_to_int(ip) -> int:
    """Dotted quad (or int) -> host-order integer."""
    return int(ipaddress.IPv4Address(ip))


# ---------------------------------------------------------------------------------------------------- CLI
def add_cli(sub) -> None:
    """Add the ``encap`` and ``decap`` subcommands (DESIGN.md section 7) to an argparse subparsers object."""
    p = sub.add_parser("encap", help="wrap each IPv4 packet of a capture in Geneve with the GWLB options",
                       description="Wrap each IPv4 packet in Ethernet + IPv4 + UDP 6081 + Geneve + GWLB options, "
                                   "streaming the capture chunk by chunk. Prints packets per status.")
    p.add_argument("input", metavar="IN.pcap")
    p.add_argument("-o", "--output", required=True, metavar="OUT.pcap")
    p.add_argument("--src", required=True, help="outer source IPv4 (the GWLB)")
    p.add_argument("--dst", required=True, help="outer destination IPv4 (the firewall)")
    p.add_argument("--endpoint-id", default="0", help="option type 1 (64 bits; decimal or 0x...)")
    p.add_argument("--attachment-id", default="0", help="option type 2 (64 bits)")
    p.add_argument("--cookie", default="0", help="option type 3, flow cookie (32 bits)")
    p.add_argument("--direction", default=None, help="flow direction in the cookie's top bits (tencent profile)")
    p.add_argument("--vni", default="0", help="24-bit VNI (default 0)")
    p.add_argument("--option-class", default=None, help="option class (default: the profile's)")
    p.add_argument("--profile", default="aws", choices=sorted(PROFILES), help="cloud defaults (default aws)")
    p.add_argument("--sport", default=None, help="fixed UDP source port (default: flow hash of the inner 5-tuple)")
    p.add_argument("--max-inner", default=None, help="largest inner packet (default: the profile's)")
    p.add_argument("--chunk", type=int, default=65536, help="packets per batch (default 65536)")
    p.set_defaults(func=_cli_encap)

    d = sub.add_parser("decap", help="strip Geneve, keep the inner packets",
                       description="Write the inner packet of every Geneve packet that decodes; print packets per "
                                   "status (packets that are not Geneve or are malformed are counted, not written).")
    d.add_argument("input", metavar="IN.pcap")
    d.add_argument("-o", "--output", required=True, metavar="OUT.pcap")
    d.add_argument("--option-class", default=None, help="option class of the GWLB options (default: the profile's)")
    d.add_argument("--profile", default="aws", choices=sorted(PROFILES))
    d.add_argument("--linktype", default="auto", choices=["auto", "raw", "ethernet"],
                   help="output link type: raw IPv4 (228), Ethernet (1; raw inner packets get an Ethernet header), "
                        "or auto: raw if the first chunk's inner packets are all raw IPv4, else Ethernet")
    d.add_argument("--chunk", type=int, default=65536, help="packets per batch (default 65536)")
    d.set_defaults(func=_cli_decap)


def _num(opt: str, value, lo: int = 0, hi: int = 2**64 - 1):
    from .errors import ConfigError

    if value is None:
        return None
    try:
        v = int(str(value), 0)
    except ValueError:
        raise ConfigError(f"{opt}: not a number: {value!r}") from None
    if not lo <= v <= hi:
        raise ConfigError(f"{opt}: {v} is out of range {lo}-{hi}")
    return v


def _print_counts(verb: str, total: int, done: int, counts: np.ndarray) -> None:
    from .status import describe_counts

    print(f"{verb}: {total} packets in, {done} written")
    for name, c in sorted(describe_counts(counts).items(), key=lambda kv: -kv[1]):
        print(f"  {name}: {c}")


def _cli_encap(args) -> int:
    from .errors import ConfigError
    from .pcapio import PcapWriter, read_pcap

    if args.chunk < 1:
        raise ConfigError(f"--chunk: must be >= 1, got {args.chunk}")
    for opt in ("src", "dst"):
        try:
            ipaddress.IPv4Address(getattr(args, opt))
        except ValueError:
            raise ConfigError(f"--{opt}: not an IPv4 address: {getattr(args, opt)!r}") from None
    prof = get_profile(args.profile)
    kw = {
        "endpoint_id": _num("--endpoint-id", args.endpoint_id), "attachment_id": _num("--attachment-id", args.attachment_id),
        "cookie": _num("--cookie", args.cookie, hi=2**32 - 1), "vni": _num("--vni", args.vni, hi=2**24 - 1),
        "option_class": _num("--option-class", args.option_class, hi=0xFFFF), "sport": _num("--sport", args.sport, hi=0xFFFF),
        "max_inner": _num("--max-inner", args.max_inner, hi=2**32 - 1),
        "direction": _num("--direction", args.direction, hi=(1 << prof.direction_bits) - 1 if prof.direction_bits else 0),
    }
    if kw["direction"] is not None and not prof.direction_bits:
        raise ConfigError(f"--direction: profile {prof.name} has no direction bits")
    from .outputs.outfiles import refuse_overlap

    refuse_overlap([args.input], [args.output])
    counts = np.zeros(N_STATUS, np.int64)
    total = done = 0
    with PcapWriter(args.output, linktype=LINKTYPE_ETHERNET) as w:
        for batch in read_pcap(args.input, chunk=args.chunk, parse=False):
            st = np.empty(len(batch), np.uint8)
            wire = encap(batch, src=args.src, dst=args.dst, profile=prof, status_out=st, **kw)
            w.write(wire)
            counts += count_status(st)
            total += len(batch)
            done += len(wire)
    _print_counts("encap", total, done, counts)
    return 0


def _cli_decap(args) -> int:
    from .batch import LINKTYPE_IPV4
    from .errors import ConfigError
    from .pcapio import PcapWriter, read_pcap

    if args.chunk < 1:
        raise ConfigError(f"--chunk: must be >= 1, got {args.chunk}")
    cls = _num("--option-class", args.option_class, hi=0xFFFF)
    linktype = {"raw": LINKTYPE_IPV4, "ethernet": LINKTYPE_ETHERNET, "auto": None}[args.linktype]
    from .outputs.outfiles import refuse_overlap

    refuse_overlap([args.input], [args.output])
    counts = np.zeros(N_STATUS, np.int64)
    total = done = 0
    w = None
    ok = False
    try:
        for wire in read_pcap(args.input, chunk=args.chunk, parse=False):
            inner = decap(wire, option_class=cls, profile=args.profile)
            good = inner.filter(inner.status == PktStatus.OK)
            if w is None and (len(good) or linktype is not None):
                if linktype is None:
                    linktype = LINKTYPE_IPV4 if bool((good.linktype == LINKTYPE_IPV4).all()) else LINKTYPE_ETHERNET
                w = PcapWriter(args.output, linktype=linktype)
            if len(good):
                if linktype == LINKTYPE_IPV4 and not bool((good.linktype == LINKTYPE_IPV4).all()):
                    raise ConfigError(f"{args.input}: Ethernet inner packets (protocol type 0x6558) after raw IPv4 "
                                      "ones: use --linktype ethernet")
                w.write(good)
            counts += count_status(inner.status)
            total += len(wire)
            done += len(good)
        if w is None:  # nothing decoded: still write a valid (empty) capture
            w = PcapWriter(args.output, linktype=LINKTYPE_IPV4 if linktype is None else linktype)
        ok = True
    finally:
        if w is not None:
            if ok:
                w.close()
            else:
                w.abort()  # an error leaves no partial output
    _print_counts("decap", total, done, counts)
    return 0
