"""PacketBatch: packets as struct-of-arrays (DESIGN.md section 5).

One contiguous ``uint8`` arena holds the packet bytes exactly as captured (wire byte order lives only there);
``off``/``caplen`` locate each packet in it. Parsed fields are separate columns in host byte order. Views share
the arena: slicing and filtering copy only the per-packet columns, never packet bytes; ``compact()`` and
``concat()`` are the only operations that copy bytes.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from ._kernels.columns import take_columns

# pcap link types the engine reads (tcpdump.org link-layer header types)
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_LINUX_SLL2 = 276
LINKTYPE_NULL = 0
LINKTYPE_PPP = 9
LINKTYPE_LOOP = 108
SUPPORTED_LINKTYPES = (LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_LINUX_SLL, LINKTYPE_IPV4, LINKTYPE_LINUX_SLL2,
                       LINKTYPE_NULL, LINKTYPE_PPP, LINKTYPE_LOOP)

#: per-packet columns every batch has
CORE_COLUMNS = {
    "off": np.int64,
    "caplen": np.uint32,
    "wirelen": np.uint32,
    "ts_ns": np.int64,
    "linktype": np.uint16,
}

#: columns a stage fills when it needs them (None until then); all in host byte order
OPTIONAL_COLUMNS = {
    # L2-L4 parse (parse kernel)
    "status": np.uint8,
    "src_ip": np.uint32,
    "dst_ip": np.uint32,
    "sport": np.uint16,
    "dport": np.uint16,
    "proto": np.uint8,
    "tcp_flags": np.uint8,
    "l3_off": np.int32,
    "l4_off": np.int32,
    # Geneve (decoder, or set by the GWLB before encapsulation)
    "vni": np.uint32,
    "geneve_flags": np.uint8,
    "opt_len": np.uint16,
    "endpoint_id": np.uint64,
    "attachment_id": np.uint64,
    "flow_cookie": np.uint32,
    "inner_off": np.int32,
    "fw_index": np.int16,
}

ALL_COLUMNS = {**CORE_COLUMNS, **OPTIONAL_COLUMNS}


class PacketBatch:
    """A batch of packets: one byte arena plus per-packet columns.

    Parameters
    ----------
    data : uint8[::1]
        The arena. Packet ``i`` is ``data[off[i] : off[i] + caplen[i]]``.
    off : int64[n]
    caplen : uint32[n]
    wirelen : uint32[n], optional
        Original length on the wire (defaults to ``caplen``).
    ts_ns : int64[n], optional
        Capture time in nanoseconds since the epoch (defaults to 0).
    linktype : int or uint16[n]
        pcap link type of each packet (one value broadcasts).
    **columns
        Any of ``OPTIONAL_COLUMNS``.
    """

    __slots__ = ("data", *ALL_COLUMNS)

    def __init__(self, data, off, caplen, wirelen=None, ts_ns=None, linktype=LINKTYPE_ETHERNET, **columns):
        self.data = np.ascontiguousarray(data, dtype=np.uint8) if not _is_u8_contig(data) else data
        self.off = np.ascontiguousarray(off, dtype=np.int64)
        n = self.off.shape[0]
        self.caplen = np.ascontiguousarray(caplen, dtype=np.uint32)
        self.wirelen = self.caplen.copy() if wirelen is None else np.ascontiguousarray(wirelen, dtype=np.uint32)
        self.ts_ns = np.zeros(n, np.int64) if ts_ns is None else np.ascontiguousarray(ts_ns, dtype=np.int64)
        if np.ndim(linktype) == 0:
            self.linktype = np.full(n, int(linktype), np.uint16)
        else:
            self.linktype = np.ascontiguousarray(linktype, dtype=np.uint16)
        for name in OPTIONAL_COLUMNS:
            setattr(self, name, None)
        for name, value in columns.items():
            if name not in OPTIONAL_COLUMNS:
                raise TypeError(f"PacketBatch: unknown column {name!r}")
            if value is not None:
                setattr(self, name, np.ascontiguousarray(value, dtype=OPTIONAL_COLUMNS[name]))
        self.validate()

    # ------------------------------------------------------------------ construction
    @classmethod
    def empty(cls, linktype=LINKTYPE_ETHERNET) -> PacketBatch:
        return cls(np.zeros(0, np.uint8), np.zeros(0, np.int64), np.zeros(0, np.uint32), linktype=linktype)

    @classmethod
    def from_packets(cls, packets: Sequence[bytes], ts_ns=None, linktype=LINKTYPE_ETHERNET) -> PacketBatch:
        """Build a batch from a list of ``bytes`` (tests, small tools; not for hot paths)."""
        lens = np.fromiter((len(p) for p in packets), dtype=np.int64, count=len(packets))
        off = np.zeros(len(packets), np.int64)
        if len(packets):
            np.cumsum(lens[:-1], out=off[1:])
        data = np.frombuffer(b"".join(packets), dtype=np.uint8).copy()
        return cls(data, off, lens.astype(np.uint32), ts_ns=ts_ns, linktype=linktype)

    # ------------------------------------------------------------------ basics
    def __len__(self) -> int:
        return self.off.shape[0]

    def __repr__(self) -> str:
        cols = [c for c in OPTIONAL_COLUMNS if getattr(self, c) is not None]
        return f"PacketBatch(n={len(self)}, bytes={self.nbytes}, columns={cols})"

    @property
    def nbytes(self) -> int:
        """Captured bytes in the batch's packets (not the arena size)."""
        return int(self.caplen.sum(dtype=np.int64))

    def packet(self, i: int) -> bytes:
        o = int(self.off[i])
        return self.data[o : o + int(self.caplen[i])].tobytes()

    def packets(self) -> list[bytes]:
        """Every packet as ``bytes`` (tests and debugging; per-packet Python)."""
        return [self.packet(i) for i in range(len(self))]

    def columns(self) -> dict[str, np.ndarray]:
        """Every per-packet column that is set, by name."""
        return {c: getattr(self, c) for c in ALL_COLUMNS if getattr(self, c) is not None}

    def ensure(self, name: str, fill=0) -> np.ndarray:
        """Return column ``name``, allocating it (filled with ``fill``) if the batch does not have it yet."""
        col = getattr(self, name)
        if col is None:
            col = np.full(len(self), fill, dtype=OPTIONAL_COLUMNS[name])
            setattr(self, name, col)
        return col

    def validate(self) -> None:
        """Check dtypes, lengths and that every packet lies inside the arena; raise ValueError otherwise."""
        n = len(self)
        if self.data.ndim != 1 or self.data.dtype != np.uint8:
            raise ValueError(f"PacketBatch.data must be 1-D uint8, got {self.data.dtype} with shape {self.data.shape}")
        for name, dtype in ALL_COLUMNS.items():
            col = getattr(self, name)
            if col is None:
                continue
            if col.dtype != dtype or col.shape != (n,):
                raise ValueError(f"PacketBatch.{name} must be {np.dtype(dtype)}[{n}], got {col.dtype}{list(col.shape)}")
        if n and (self.off.min() < 0 or int((self.off + self.caplen).max()) > self.data.shape[0]):
            raise ValueError("PacketBatch: a packet lies outside the arena")

    # ------------------------------------------------------------------ views and copies
    def _with_columns(self, index) -> PacketBatch:
        out = PacketBatch.__new__(PacketBatch)
        out.data = self.data
        if isinstance(index, slice):
            for name in ALL_COLUMNS:
                col = getattr(self, name)
                setattr(out, name, None if col is None else col[index])
        else:
            # rows: every column taken in one kernel call (typed loops, the rows' bounds checked once)
            names = [name for name in ALL_COLUMNS if getattr(self, name) is not None]
            for name in ALL_COLUMNS:
                setattr(out, name, None)
            for name, col in zip(names, take_columns(index, [getattr(self, name) for name in names])):
                setattr(out, name, col)
        return out

    def __getitem__(self, index) -> PacketBatch:
        """``batch[a:b]`` is a view (no copy); an integer array or boolean mask copies the columns only."""
        if isinstance(index, slice) and index.step in (None, 1):
            return self._with_columns(index)
        if isinstance(index, slice):
            index = np.arange(len(self))[index]
        index = np.asarray(index)
        if index.dtype == bool:
            if index.shape != (len(self),):
                raise ValueError(f"mask must be bool[{len(self)}], got shape {index.shape}")
            index = np.flatnonzero(index)
        return self._with_columns(index.astype(np.intp, copy=False))

    def take(self, rows, columns) -> PacketBatch:
        """The packets at ``rows`` (an integer array) with only the named ``columns`` of this batch's (the other
        optional columns None; every named column must be set here), in one kernel call; the arena is shared.
        For a reader that uses only some columns: the others are not gathered."""
        out = PacketBatch.__new__(PacketBatch)
        out.data = self.data
        for name in ALL_COLUMNS:
            setattr(out, name, None)
        names = list(columns)
        for name, col in zip(names, take_columns(np.asarray(rows, np.intp), [getattr(self, name) for name in names])):
            setattr(out, name, col)
        return out

    def filter(self, mask) -> PacketBatch:
        """Packets where ``mask`` is true; the arena is shared, not copied."""
        return self[np.asarray(mask, dtype=bool)]

    def compact(self, into: np.ndarray | None = None) -> PacketBatch:
        """A batch whose arena holds exactly its packets, back to back (one gather; ``self`` if it already does).
        ``into``: a uint8 buffer of at least ``nbytes`` whose start becomes the arena (always gathered)."""
        from ._kernels.parse import gather_packets

        n = len(self)
        new_off = np.zeros(n, np.int64)
        if n:
            np.cumsum(self.caplen[:-1], dtype=np.int64, out=new_off[1:])
        total = int(new_off[-1] + self.caplen[-1]) if n else 0
        if into is None and total == self.data.shape[0] and np.array_equal(new_off, self.off):
            return self  # already tight: nothing to copy
        data = np.empty(total, np.uint8) if into is None else into[:total]
        gather_packets(self.data, self.off, self.caplen, data, new_off)
        out = self._with_columns(slice(None))
        out.data = data
        out.off = new_off
        return out

    def copy(self) -> PacketBatch:
        """A tight batch with its own arena and its own columns (nothing shared with ``self``)."""
        out = self.compact()
        if out.data is self.data:
            out = self._with_columns(slice(None))
            out.data = self.data.copy()
        for name in ALL_COLUMNS:
            col = getattr(out, name)
            if col is not None and np.shares_memory(col, getattr(self, name)):
                setattr(out, name, col.copy())
        return out

    @staticmethod
    def concat(batches: Iterable[PacketBatch], arena: np.ndarray | None = None) -> PacketBatch:
        """One batch holding every packet of ``batches`` in order; columns present in all inputs are kept.

        With ``arena`` (a uint8 buffer): when the arena of every batch lies inside it (views of its parts), the
        result's arena is ``arena`` itself and no packet byte is copied; otherwise the packets are copied as
        without it."""
        batches = list(batches)
        if arena is not None and len(batches) > 1:
            shifts = _shifts_in(arena, [b.data for b in batches])
            if shifts is not None:
                return _joined(arena, batches, shifts)
        if not batches:
            return PacketBatch.empty()
        if len(batches) == 1:
            return batches[0].compact()
        from ._kernels.parse import gather_packets

        # one gather of every packet straight into the new arena (not a compact copy of each, then a second copy)
        caplen = np.concatenate([b.caplen for b in batches])
        off = np.zeros(caplen.shape[0], np.int64)
        if off.shape[0]:
            np.cumsum(caplen[:-1], dtype=np.int64, out=off[1:])
        data = np.empty(int(off[-1] + caplen[-1]) if off.shape[0] else 0, np.uint8)
        at = 0
        for b in batches:
            gather_packets(b.data, b.off, b.caplen, data, off[at: at + len(b)])
            at += len(b)
        return _joined(data, batches, off=off)

    # ------------------------------------------------------------------ parsing
    def parse(self) -> PacketBatch:
        """Fill the L2-L4 columns (status, addresses, ports, proto, TCP flags, offsets) in place; return self."""
        self.parse_counts()
        return self

    def parse_counts(self) -> tuple[int, int]:
        """:meth:`parse`, returning what the parse saw on the way: (IPv4 headers whose checksum field is 0,
        IPv4 fragments). A stage skips the checksum fill and the fragment scan of a batch that has neither."""
        from ._kernels.parse import parse_packets

        n = len(self)
        for name in ("status", "src_ip", "dst_ip", "sport", "dport", "proto", "tcp_flags", "l3_off", "l4_off"):
            col = getattr(self, name)
            if col is None or not col.flags.writeable:
                setattr(self, name, np.empty(n, OPTIONAL_COLUMNS[name]))
        return parse_packets(self.data, self.off, self.caplen, self.linktype, self.status, self.src_ip,
                             self.dst_ip, self.sport, self.dport, self.proto, self.tcp_flags, self.l3_off,
                             self.l4_off)


def _joined(data: np.ndarray, batches: list[PacketBatch], shifts=None, off=None) -> PacketBatch:
    """The batches' rows in order over ``data``, where batch ``k``'s arena starts at ``data[shifts[k]]`` (or, with
    ``off``, where the rows' packets are)."""
    out = PacketBatch.__new__(PacketBatch)
    out.data = data
    for name in ALL_COLUMNS:
        cols = [getattr(b, name) for b in batches]
        setattr(out, name, None if any(c is None for c in cols) else np.concatenate(cols))
    if off is None:
        off = np.concatenate([b.off + int(shift) for b, shift in zip(batches, shifts)])
    out.off = off
    return out


def _shifts_in(arena: np.ndarray, parts: list[np.ndarray]) -> list[int] | None:
    """Where each of ``parts`` starts in ``arena`` (bytes), or None unless every one lies inside it."""
    if not _is_u8_contig(arena):
        return None
    lo = arena.__array_interface__["data"][0]
    hi = lo + arena.shape[0]
    out = []
    for d in parts:
        at = d.__array_interface__["data"][0]
        if not _is_u8_contig(d) or at < lo or at + d.shape[0] > hi:
            return None
        out.append(at - lo)
    return out


def _is_u8_contig(a) -> bool:
    return isinstance(a, np.ndarray) and a.dtype == np.uint8 and a.ndim == 1 and a.flags.c_contiguous
