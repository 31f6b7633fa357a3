"""Plain-Python pcap/pcapng writers for the tests (any byte order, resolution, block mix) and the expected packets.

The reader under test must return, for each packet, exactly what ``Expected`` holds; the writers here are written
from the format documents (pcap: tcpdump.org/manpages/pcap-savefile.5; pcapng: draft-ietf-opsawg-pcapng) with
``struct``, independently of the code under test.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from fractions import Fraction


@dataclass
class Expected:
    data: bytes
    wirelen: int
    ts_ns: int
    linktype: int


def classic_pcap(records, linktype=1, nanosecond=False, big=False, snaplen=65535, version=(2, 4)) -> bytes:
    """records: iterable of (data, wirelen, ts_sec, ts_frac) written as given (frac in us or ns)."""
    e = ">" if big else "<"
    magic = 0xA1B23C4D if nanosecond else 0xA1B2C3D4
    out = [struct.pack(e + "IHHiIII", magic, version[0], version[1], 0, 0, snaplen, linktype)]
    for data, wirelen, sec, frac in records:
        out.append(struct.pack(e + "IIII", sec, frac, len(data), wirelen) + data)
    return b"".join(out)


def classic_expected(records, linktype=1, nanosecond=False) -> list[Expected]:
    mult = 1 if nanosecond else 1000
    return [Expected(d, w, s * 1_000_000_000 + f * mult, linktype) for d, w, s, f in records]


def _pad4(b: bytes) -> bytes:
    return b + bytes(-len(b) % 4)


def block(btype: int, body: bytes, e: str = "<") -> bytes:
    body = _pad4(body)
    n = len(body) + 12
    return struct.pack(e + "II", btype, n) + body + struct.pack(e + "I", n)


def option(code: int, value: bytes, e: str = "<") -> bytes:
    return struct.pack(e + "HH", code, len(value)) + _pad4(value)


def end_of_options(e: str = "<") -> bytes:
    return struct.pack(e + "HH", 0, 0)


def shb(e: str = "<", options: bytes = b"") -> bytes:
    return block(0x0A0D0D0A, struct.pack(e + "IHHq", 0x1A2B3C4D, 1, 0, -1) + options, e)


def idb(linktype: int, snaplen: int = 0, tsresol: int | None = None, tsoffset: int | None = None,
        e: str = "<", extra_options: bytes = b"") -> bytes:
    opts = extra_options
    if tsresol is not None:
        opts += option(9, bytes([tsresol]), e)
    if tsoffset is not None:
        opts += option(14, struct.pack(e + "q", tsoffset), e)
    if opts:
        opts += end_of_options(e)
    return block(1, struct.pack(e + "HHI", linktype, 0, snaplen) + opts, e)


def epb(ifid: int, units: int, data: bytes, wirelen: int, e: str = "<", options: bytes = b"") -> bytes:
    body = struct.pack(e + "IIIII", ifid, units >> 32, units & 0xFFFFFFFF, len(data), wirelen) + _pad4(data)
    return block(6, body + options, e)


def opb(ifid: int, units: int, data: bytes, wirelen: int, e: str = "<") -> bytes:
    body = struct.pack(e + "HHIIII", ifid, 0, units >> 32, units & 0xFFFFFFFF, len(data), wirelen) + data
    return block(2, body, e)


def spb(data: bytes, wirelen: int, e: str = "<") -> bytes:
    return block(3, struct.pack(e + "I", wirelen) + data, e)


def units_to_ns(units: int, tsresol: int | None, tsoffset: int | None) -> int:
    """Reference conversion: floor(units * resolution in ns) + offset, exact (wrapped to int64 like the reader)."""
    r = 6 if tsresol is None else tsresol
    per_unit = Fraction(1, 2 ** (r & 0x7F)) if r & 0x80 else Fraction(1, 10**r)
    ns = int(units * per_unit * 1_000_000_000) + (tsoffset or 0) * 1_000_000_000
    return ((ns + 2**63) % 2**64) - 2**63


@dataclass
class Section:
    big: bool = False
    interfaces: list = field(default_factory=list)  # (linktype, snaplen, tsresol, tsoffset)
    items: list = field(default_factory=list)  # ("epb"|"opb"|"spb", ifid, units, data, wirelen) or ("raw", bytes)


def pcapng(sections: list[Section]) -> tuple[bytes, list[Expected]]:
    """A pcapng file and the packets a reader must return. Interfaces are declared before any item."""
    out, want = [], []
    for sec in sections:
        e = ">" if sec.big else "<"
        out.append(shb(e))
        for lt, snap, res, toff in sec.interfaces:
            out.append(idb(lt, snap, res, toff, e))
        for item in sec.items:
            kind = item[0]
            if kind == "raw":
                out.append(item[1] if isinstance(item[1], bytes) else block(item[1][0], item[1][1], e))
                continue
            _, ifid, units, data, wirelen = item
            lt, snap, res, toff = sec.interfaces[ifid]
            if kind == "epb":
                out.append(epb(ifid, units, data, wirelen, e))
                want.append(Expected(data, wirelen, units_to_ns(units, res, toff), lt))
            elif kind == "opb":
                out.append(opb(ifid, units, data, wirelen, e))
                want.append(Expected(data, wirelen, units_to_ns(units, res, toff), lt))
            else:  # spb: interface 0, caplen = min(wirelen, snaplen), no timestamp
                cap = min(wirelen, snap) if snap else wirelen
                data = data[:cap]
                out.append(spb(data, wirelen, e))
                want.append(Expected(data, wirelen, 0, sec.interfaces[0][0]))
    return b"".join(out), want
