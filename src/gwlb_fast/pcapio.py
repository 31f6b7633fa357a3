"""pcap and pcapng files <-> PacketBatch, streamed in chunks (DESIGN.md sections 5 and 8).

Reading
-------
``read_pcap(path, chunk=65536)`` returns a :class:`PcapReader`, an iterator of :class:`PacketBatch` of up to
``chunk`` packets each. It reads classic pcap (magics ``a1b2c3d4`` microseconds and ``a1b23c4d`` nanoseconds,
either byte order) and pcapng (any number of sections, each in its own byte order; interface description blocks
with ``if_tsresol`` and ``if_tsoffset``; enhanced, simple and obsolete packet blocks; other blocks skipped). Link
types 1 (Ethernet), 101 and 228 (raw IPv4), 113 and 276 (Linux cooked v1/v2) are read; pcapng interfaces may mix
them, so every batch carries a per-packet ``linktype`` column.

A Cython kernel walks the record or block headers and fills ``off``/``caplen``/``wirelen``/``ts_ns`` (and
``linktype``) for a whole chunk in one nogil pass; no Python runs per packet (only per pcapng section or
interface description). The arena of a batch is the file's own bytes for that chunk, record headers included,
which ``off`` skips:

* a regular file opened by path is memory-mapped copy-on-write (``mmap.ACCESS_COPY``) and each batch's ``data``
  is a view of its region of the map: no copy, writable (writes stay private to the process, the file is never
  changed), and valid for as long as the batch is referenced, whatever the reader does next;
* any other source (a pipe, an open file object, or ``use_mmap=False``) is read with large ``readinto`` calls
  into buffers that the reader never writes again once a batch views them, so batches stay valid there too.

Memory is bounded by the chunk: the per-packet columns of one chunk, plus (when reading, not mapping) a buffer of
about twice a chunk's bytes; a mapped file's pages belong to the page cache.

Untrusted lengths are never used to allocate: a caplen above the file's snaplen (classic) or above
``MAX_CAPLEN`` (256 KiB) is an error, and a pcapng block too long to be a plausible packet or interface block is
an error, while an unknown block of any length is skipped without being buffered whole.

Errors
------
A file that is not pcap, a truncated global header or an unsupported link type raise :class:`PcapError` from
``read_pcap`` itself. A problem met later (truncated or corrupt record, caplen above the bound, ...) is reported
after every packet before it has been delivered: the reader yields the batches holding the good packets, then
raises ``PcapError(path, offset, problem)``; with ``strict=False`` it stops instead and leaves the error in
``reader.error``, so that a command can write the good packets and report the problem afterwards.

Writing
-------
``write_pcap(path, batches)`` and the streaming :class:`PcapWriter` write classic little-endian pcap, nanosecond
resolution by default. A batch becomes buffers of about ``_WRITE_PIECE`` bytes (record headers and packet bytes,
gathered by a kernel), one ``write`` each; a path's writer writes them on a thread of its own while the caller goes
on, with at most ``_IN_FLIGHT`` buffers gathered and not yet written. A classic file has one link type: batches
that mix link types are written as Ethernet, raw IP packets getting a 14-byte header (destination
``02:00:00:00:00:02``, source ``02:00:00:00:00:01``, ethertype 0x0800, or 0x86DD for IPv6 under link type 101) and
Linux cooked headers being replaced by an Ethernet header (same fixed destination; source from the cooked header
when it is a 6-byte address).
"""
from __future__ import annotations

import io
import mmap
import os
import stat
import struct
import threading
import zlib
from collections.abc import Iterable, Iterator

import numpy as np

from ._kernels import pcap as _k
from ._kernels.parse import parse_packets as _parse_packets
from .batch import ALL_COLUMNS as _ALL_COLUMNS
from .batch import LINKTYPE_ETHERNET, SUPPORTED_LINKTYPES, PacketBatch
from .errors import PcapError
from .outputs.outfiles import OutputFile

#: a path's writer writes a batch of at least this size while the caller goes on (PcapWriter._write_pieces)
_WRITE_BEHIND_MIN = 1 << 20
#: a batch is gathered in pieces of about this many bytes ...
_WRITE_PIECE = 4 << 20
#: ... of which this many may wait to be written: the writer's memory (a 65,536-packet chunk of 350-byte packets
#: is 23 MB: gathered whole, twice over, its buffers were 58 MB, each page faulted in at first use). With 4 the
#: caller waited for the writes 0.09-0.12 s of a 1M-packet run, with 8 or 16 0.02 s (cProfile, two runs each).
_IN_FLIGHT = 8

__all__ = [
    "CONVERTED_DST_MAC",
    "CONVERTED_SRC_MAC",
    "DEFAULT_SNAPLEN",
    "MAX_CAPLEN",
    "OrderedWriter",
    "PcapReader",
    "PcapWriter",
    "output_format",
    "read_pcap",
    "write_pcap",
]

MAX_CAPLEN = 256 * 1024
"""Largest captured length accepted from any file (tcpdump's default snaplen)."""

DEFAULT_SNAPLEN = 262144
"""Snap length written in a classic header; longer captures are cut to it."""

CONVERTED_DST_MAC = _k.CONVERTED_DST_MAC
CONVERTED_SRC_MAC = _k.CONVERTED_SRC_MAC

MAGIC_US = 0xA1B2C3D4
MAGIC_NS = 0xA1B23C4D
PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_IDB = 1
_PACKET_BLOCKS = (2, 3, 6)
_PCAP_HDR_LEN = 24
_PCAP_REC_HDR = 16

_MAX_CONTROL_BLOCK = 1 << 20  # largest section header / interface description block accepted
_MAX_PACKET_BLOCK = MAX_CAPLEN + (1 << 20)  # a packet block: caplen bound + room for options
_MAX_INTERFACES = 1 << 16  # interface descriptions per section
_MAX_BATCH_BYTES = 256 << 20  # a batch is cut short rather than buffering more than this (read mode)
_MIN_READ = 64 << 10

_LINKTYPE_NAMES = ("0 and 108 (null/loopback), 1 (Ethernet), 9 (PPP), 101 and 228 (raw IPv4), 113 and 276 "
                   "(Linux cooked)")

_MORE_OK, _MORE_EOF, _MORE_FULL = 0, 1, 2
_RESYNC_CODES = (_k.SCAN_BAD_CAPLEN, _k.SCAN_BAD_BLOCK_LEN, _k.SCAN_BAD_TRAILER, _k.SCAN_BAD_IFACE,
                 _k.SCAN_BLOCK_CAPLEN)

# Packets scanned (and parsed) per kernel call: about 1.5 MB of typical traffic, so that the parse kernel finds the
# headers that the scanner's prefetches brought into cache. Whole chunks at once run several times slower.
_SCAN_BLOCK = 4096

_READ_COLUMNS = ("off", "ts_ns", "caplen", "wirelen", "linktype")
_PARSE_COLUMNS = ("src_ip", "dst_ip", "l3_off", "l4_off", "sport", "dport", "status", "proto", "tcp_flags")
_PARSE_ARGS = ("off", "caplen", "linktype", "status", "src_ip", "dst_ip", "sport", "dport", "proto", "tcp_flags",
               "l3_off", "l4_off")


def _alloc_columns(n: int, parse: bool) -> dict[str, np.ndarray]:
    """Every column of a batch of n packets, carved from one allocation (largest items first, so each view is
    aligned): one fresh block per batch costs one allocation instead of up to fourteen page-faulting ones."""
    names = _READ_COLUMNS + (_PARSE_COLUMNS if parse else ())
    dtypes = sorted(((name, np.dtype(_ALL_COLUMNS[name])) for name in names), key=lambda t: -t[1].itemsize)
    block = np.empty(n * sum(dt.itemsize for _, dt in dtypes), np.uint8)
    cols, at = {}, 0
    for name, dt in dtypes:
        cols[name] = block[at: at + n * dt.itemsize].view(dt)
        at += n * dt.itemsize
    return cols


def read_pcap(source, chunk: int = 65536, parse: bool = True, strict: bool = True, *, use_mmap=None,
              buffer_size: int | None = None, resync: bool = True, start: int | None = None,
              stop: int | None = None) -> PcapReader:
    """Stream a pcap or pcapng capture as PacketBatch chunks.

    Parameters
    ----------
    source : str, os.PathLike or binary file object
        A path (memory-mapped when it is a regular file) or an object with ``readinto``/``read``, read from its
        current position.
    chunk : int
        Packets per batch (every batch but the last holds exactly ``chunk`` packets, unless a batch would exceed
        256 MiB of buffered bytes when reading without a memory map).
    parse : bool
        Fill the L2-L4 columns, exactly as ``batch.parse()`` does (same kernel, same columns), block by block
        as the records are scanned, while the packet headers are still in cache.
    strict : bool
        On a format error met after the header: raise ``PcapError`` once the good packets before it have been
        yielded (True), or stop and keep the error in ``reader.error`` (False).
    use_mmap : bool or None
        None: map regular files opened by path, read anything else. False: always read. True: require a map.
    buffer_size : int or None
        Read mode only: bytes per buffer (default: about two chunks at the capture's average record size).
    resync : bool
        On a corrupt record (a caplen beyond ``MAX_CAPLEN``, a pcapng block whose lengths disagree, a packet
        block naming an interface that does not exist): look for the next plausible record and go on, counting
        what was skipped in ``reader.skipped_bytes`` and ``reader.skipped_records`` (True); or stop there with
        the error (False). When no plausible record follows, the reader stops with the error either way.
    start, stop : int, optional
        Read only the records that begin in the byte range ``[start, stop)`` of an uncompressed file opened by
        path (memory-mapped): both must be record boundaries (:meth:`PcapReader.record_boundary`), or the file's
        size for ``stop``. A record that runs past ``stop`` is a truncated record, as at the end of a file: that is
        how a range whose end is not a boundary shows. Before ``start``, only the headers are read (a pcapng
        section's interface blocks that come before its first packet block; ``reader.control_blocks`` counts the
        section header and interface blocks met inside the range, which a later range would not know).

    Returns
    -------
    PcapReader
        An iterator of PacketBatch; also a context manager.

    Raises
    ------
    PcapError
        Not a pcap/pcapng file, truncated global or section header, unsupported link type (classic).
    OSError
        The file cannot be opened.
    """
    return PcapReader(source, chunk=chunk, parse=parse, strict=strict, use_mmap=use_mmap, buffer_size=buffer_size,
                      resync=resync, start=start, stop=stop)


class PcapReader(Iterator[PacketBatch]):
    """Iterator of PacketBatch chunks over a pcap or pcapng capture; see :func:`read_pcap`.

    Attributes
    ----------
    path : str
        The file name used in error messages.
    format : str
        ``"pcap"`` or ``"pcapng"``.
    linktype : int or None
        The classic file's link type (None for pcapng, whose interfaces each have one).
    snaplen : int or None
        The classic file's snap length.
    nanosecond : bool or None
        Classic files: whether the magic says nanosecond timestamps.
    packets, bytes : int
        Packets and captured bytes delivered so far.
    error : PcapError or None
        The problem that ended the capture early (set in both modes; with ``strict=True`` it is also raised).
    skipped_bytes, skipped_records : int
        Bytes passed over to resynchronise after corrupt records, and how many corrupt records there were.
    compressed : bool
        The file is gzip-compressed (read as a stream, decompressed in pieces).
    first_record : int
        File offset of the first record (pcapng: the first block after the section header and the interface
        blocks that precede every packet block); known once :meth:`record_boundary` or a range read needed it.
    control_blocks : int
        pcapng section header and interface blocks handled (after ``first_record`` once that is known).
    """

    def __init__(self, source, chunk: int = 65536, parse: bool = True, strict: bool = True, *, use_mmap=None,
                 buffer_size: int | None = None, resync: bool = True, start: int | None = None,
                 stop: int | None = None):
        chunk = int(chunk)
        if chunk < 1:
            raise ValueError(f"read_pcap: chunk must be >= 1, got {chunk}")
        if buffer_size is not None and int(buffer_size) < 1:
            raise ValueError(f"read_pcap: buffer_size must be >= 1, got {buffer_size}")
        self.chunk = chunk
        self.parse = bool(parse)
        self.strict = bool(strict)
        self.error: PcapError | None = None
        self.packets = 0
        self.bytes = 0
        self.format = ""
        self.linktype: int | None = None
        self.snaplen: int | None = None
        self.nanosecond: bool | None = None
        self._buffer_size = None if buffer_size is None else int(buffer_size)
        self._f = None
        self._own = False
        self._buf = np.zeros(0, np.uint8)
        self._base = 0  # file offset of _buf[0]
        self._pos = 0  # next record/block to scan
        self._origin = 0  # start of the current batch's arena
        self._end = 0  # valid bytes in _buf
        self._eof = False
        self._mapped = False
        self._size_hint: int | None = None
        self._seekable = False
        self._est = 1024.0  # bytes per record, refined after each batch
        self._done = False
        self._pending: PcapError | None = None
        self.resync = bool(resync)
        self.skipped_bytes = 0
        self.skipped_records = 0
        self.compressed = False
        self._resync_problem: str | None = None  # a corrupt record at _pos: find the next one first
        self._last_sec: int | None = None
        self._raw = None  # the compressed file under a gzip stream
        self._gz_problem: str | None = None
        # pcapng section state
        self._big = False
        self._if_lists: list[list] = [[], [], [], [], [], []]
        self._if_arrays = None
        self.first_record = 0
        self.control_blocks = 0
        self._preamble = False
        try:
            self._open(source, use_mmap if start is None and stop is None else True)
            self._read_header()
            if start is not None or stop is not None:
                self._limit(start, stop)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ public
    def __iter__(self) -> PcapReader:
        return self

    def __next__(self) -> PacketBatch:
        if not self._done and self._pending is None:
            batch = self._next_batch()
            if batch is not None:
                return batch
        self._done = True
        if self._gz_problem is not None:
            # the stream's own damage explains any truncated record that follows from it
            self._pending = PcapError(self.path, self._base + self._end, self._gz_problem)
            self._gz_problem = None
        err, self._pending = self._pending, None
        self.close()
        if err is not None:
            self.error = err
            if self.strict:
                raise err
        raise StopIteration

    @property
    def offset(self) -> int:
        """File offset of the next record to read (progress reporting)."""
        return self._base + self._pos

    def close(self) -> None:
        """Release the file. Batches already yielded stay valid (a map lives as long as a batch views it)."""
        self._done = True
        if self._own and self._f is not None:
            self._f.close()
        if self._raw is not None:
            self._raw.close()
            self._raw = None
        self._f = None
        self._buf = np.zeros(0, np.uint8)
        self._mm = None
        self._pos = self._origin = self._end = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PcapReader({self.path!r}, format={self.format!r}, chunk={self.chunk}, packets={self.packets})"

    # ------------------------------------------------------------------ byte ranges
    def record_boundary(self, offset: int, confirm: int = 8) -> int:
        """The first record boundary at or after file offset ``offset`` of a mapped capture (the file's size when
        no record begins there), found with the resynchronisation kernels: a plausible record header whose next
        ``confirm`` records (or the records up to the end of the file) are plausible too. A boundary inside a
        record whose bytes happen to look like a chain of records is not ruled out; a reader of the range before
        it then meets a truncated record at its end (see ``stop`` in :func:`read_pcap`)."""
        if not self._mapped:
            raise ValueError(f"read_pcap: {self.path}: record boundaries need a memory-mapped file")
        self._read_preamble()
        buf = self._buf
        size = buf.shape[0]
        q = max(int(offset), self.first_record)
        if q == self.first_record:
            return q
        classic = self.format == "pcap"
        if not classic:
            q += -(q - self.first_record) % 4  # blocks are whole multiples of 4 bytes
        while q < size:
            found = self._plausible(buf, q)
            if found < 0:
                return size
            if self._chain(buf, found, confirm):
                return found
            q = found + (1 if classic else 4)
        return size

    def _plausible(self, buf, q: int) -> int:
        if self.format == "pcap":
            frac_limit = 1_000_000_000 if self.nanosecond else 1_000_000
            return _k.resync_pcap(buf, q, self._big, frac_limit, MAX_CAPLEN, 0, 0xFFFFFFFF, True)[0]
        return _k.resync_pcapng(buf, q, self._big, len(self._if_lists[0]), _MAX_PACKET_BLOCK, True)[0]

    def _chain(self, buf, q: int, confirm: int) -> bool:
        """Whether the ``confirm`` records after the one at ``q`` are plausible (or end the file exactly)."""
        size = buf.shape[0]
        e = ">" if self._big else "<"
        for _ in range(confirm):
            if self.format == "pcap":
                (cl,) = struct.unpack_from(e + "I", buf, q + 8)
                q += _PCAP_REC_HDR + cl
            else:
                (blen,) = struct.unpack_from(e + "I", buf, q + 4)
                q += blen
            if q == size:
                return True
            if q > size or self._plausible(buf, q) != q:
                return False
        return True

    def _read_preamble(self) -> None:
        """Stand at the first record: for pcapng, after the section header and the interface blocks that come
        before the first packet block (a range that starts later needs them). Read before any batch."""
        if self._preamble:
            return
        self._preamble = True
        if self.format == "pcapng":
            cols = _alloc_columns(1, False)
            while not self._done:
                _got, at, code, aux = _k.scan_pcapng(self._buf[: self._end], self._pos, self._pos, 1, self._big,
                                                     *self._interfaces(), MAX_CAPLEN, cols["off"], cols["caplen"],
                                                     cols["wirelen"], cols["ts_ns"], cols["linktype"])
                if code != _k.SCAN_CONTROL:
                    break  # the first packet block (or damage, which the first batch meets again)
                self._pos = self._origin = at
                if not (self._handle_shb() if aux == PCAPNG_SHB else self._handle_idb()):
                    break
            self._origin = self._pos
        self.first_record = self._pos
        self.control_blocks = 0

    def _limit(self, start: int | None, stop: int | None) -> None:
        self._read_preamble()
        size = self._buf.shape[0]
        start = self.first_record if start is None else int(start)
        stop = size if stop is None else int(stop)
        if not self.first_record <= start <= stop <= size:
            raise ValueError(f"read_pcap: {self.path}: byte range [{start}, {stop}) is not within the records "
                             f"[{self.first_record}, {size})")
        self._pos = self._origin = start
        self._end = stop

    # ------------------------------------------------------------------ opening and headers
    def _open(self, source, use_mmap) -> None:
        if isinstance(source, (str, bytes, os.PathLike)):
            self.path = os.fsdecode(source)
            self._f = open(source, "rb", buffering=0)  # noqa: SIM115 (closed by close())
            self._own = True
            st = os.fstat(self._f.fileno())
            regular = stat.S_ISREG(st.st_mode)
            if regular and self._gzip_magic():
                if use_mmap is True:
                    raise ValueError(f"read_pcap: {self.path} is gzip-compressed and cannot be memory-mapped")
                self._open_gzip()
                return
            if regular:
                self._size_hint = st.st_size
                self._seekable = True
            if use_mmap is not False and regular and st.st_size > 0:
                mm = mmap.mmap(self._f.fileno(), 0, access=mmap.ACCESS_COPY)
                if hasattr(mmap, "MADV_SEQUENTIAL"):
                    mm.madvise(mmap.MADV_SEQUENTIAL)
                self._buf = np.frombuffer(mm, dtype=np.uint8)
                self._end = self._buf.shape[0]
                self._eof = True
                self._mapped = True
                self._mm = mm
                # the map holds its own descriptor; batches keep the map alive
                self._f.close()
                self._f = None
                self._own = False
                return
            if use_mmap is True:
                raise ValueError(f"read_pcap: {self.path} cannot be memory-mapped (not a non-empty regular file)")
            return
        if use_mmap is True:
            raise ValueError("read_pcap: use_mmap=True needs a path, not a file object")
        if not (hasattr(source, "readinto") or hasattr(source, "read")):
            raise TypeError(f"read_pcap: expected a path or a binary file object, got {type(source).__name__}")
        self.path = str(getattr(source, "name", "<stream>"))
        self._f = source
        try:
            self._seekable = bool(source.seekable())
            if self._seekable:
                self._base = source.tell()
        except (AttributeError, OSError, ValueError):
            self._seekable = False
        if self._seekable and self._gzip_magic():
            self._own = False
            self._open_gzip()

    def _gzip_magic(self) -> bool:
        """Whether the file starts (at its current position) with the gzip magic 1f 8b; the position is kept."""
        f = self._f
        here = f.tell()
        try:
            head = f.read(2)
        finally:
            f.seek(here)
        return head == b"\x1f\x8b"

    def _open_gzip(self) -> None:
        """Read the decompressed stream (gzip members in pieces, never the whole file) instead of the file."""
        self._raw = self._f if self._own else None
        self._f = _Gunzip(self._f)
        self._own = True
        self._seekable = False
        self._size_hint = None
        self._base = 0
        self.compressed = True

    def _read_header(self) -> None:
        self._more(4)
        if self._gz_problem is not None and self._end < _PCAP_HDR_LEN:
            raise PcapError(self.path, self._end, self._gz_problem)
        avail = self._end
        if avail < 4:
            what = "empty file" if avail == 0 else f"file ends after {avail} bytes, before the 4-byte magic"
            raise PcapError(self.path, self._base, what)
        head = bytes(self._buf[0:4])
        (le,) = struct.unpack("<I", head)
        (be,) = struct.unpack(">I", head)
        if le == PCAPNG_SHB:
            self.format = "pcapng"
            if not self._handle_shb():
                err, self._pending = self._pending, None
                raise err
            return
        if le in (MAGIC_US, MAGIC_NS):
            big = False
        elif be in (MAGIC_US, MAGIC_NS):
            big = True
        else:
            raise PcapError(self.path, self._base, f"not a pcap or pcapng file (magic {head.hex()})")
        self.format = "pcap"
        self._more(_PCAP_HDR_LEN)
        if self._end < _PCAP_HDR_LEN:
            raise PcapError(self.path, self._base,
                            f"truncated global header: file ends after {self._end} of {_PCAP_HDR_LEN} bytes")
        e = ">" if big else "<"
        magic, vmaj, vmin, _zone, _sigfigs, snaplen, network = struct.unpack(
            e + "IHHiIII", bytes(self._buf[0:_PCAP_HDR_LEN]))
        if vmaj != 2:
            raise PcapError(self.path, self._base + 4, f"unsupported pcap version {vmaj}.{vmin}")
        linktype = network & 0x03FFFFFF  # the top 6 bits describe an FCS, not the link type
        if linktype not in SUPPORTED_LINKTYPES:
            raise PcapError(self.path, self._base + 20, f"link type {linktype} not supported (supported: "
                                                        f"{_LINKTYPE_NAMES})")
        self._big = big
        self.nanosecond = magic == MAGIC_NS
        self.linktype = linktype
        self.snaplen = snaplen
        self._frac_ns = 1 if self.nanosecond else 1000
        # tshark reads records up to the format's maximum whatever the header's snaplen says; so does the reader
        self._max_caplen = MAX_CAPLEN
        self._pos = self._origin = _PCAP_HDR_LEN

    # ------------------------------------------------------------------ buffering
    def _target_capacity(self) -> int:
        if self._buffer_size is not None:
            return self._buffer_size
        cap = int(2 * self.chunk * self._est) + _MIN_READ
        cap = max(_MIN_READ, min(cap, _MAX_BATCH_BYTES))
        if self._size_hint is not None:
            remaining = self._size_hint - (self._base + self._end)
            cap = min(cap, (self._end - self._origin) + max(remaining, 0) + 1)
        return cap

    def _more(self, upto: int) -> int:
        """Make ``_buf[:upto]`` valid (indices as before the call; the buffer may move, so callers re-read
        ``_pos``). Returns _MORE_OK, _MORE_EOF (the file ends first) or _MORE_FULL (the current batch would
        exceed the byte budget; it should end)."""
        while self._end < upto:
            if self._eof:
                return _MORE_EOF
            cap = self._buf.shape[0]
            if cap - self._end <= 0 or cap < upto:
                keep = self._end - self._origin
                need = upto - self._origin
                if need > _MAX_BATCH_BYTES and self._pos > self._origin:
                    return _MORE_FULL
                min_read = self._buffer_size if self._buffer_size is not None else _MIN_READ
                new_cap = max(need, keep + min_read, self._target_capacity())
                new = np.empty(new_cap, np.uint8)
                # only the current batch's bytes move; earlier batches keep viewing the old buffer
                new[:keep] = self._buf[self._origin:self._end]
                shift = self._origin
                upto -= shift
                self._base += shift
                self._pos -= shift
                self._end -= shift
                self._origin = 0
                self._buf = new
            self._read_some()
        return _MORE_OK

    def _read_some(self) -> None:
        view = memoryview(self._buf)[self._end:]
        f = self._f
        try:
            if hasattr(f, "readinto"):
                got = f.readinto(view)
            else:
                data = f.read(len(view))
                got = len(data)
                view[:got] = data
        except (EOFError, OSError, zlib.error) as e:
            if not self.compressed:
                raise
            # a damaged or cut gzip stream: what was decompressed before is still delivered
            self._gz_problem = f"gzip stream: {e}"
            got = 0
        if got is None:  # non-blocking stream with nothing ready: treat as the end
            got = 0
        if got == 0:
            self._eof = True
        self._end += got

    def _skip_in_place(self, pos: int, blen: int) -> bool:
        """Skip an unknown pcapng block too large to buffer: drop its bytes from the file without keeping them."""
        start = self._base + pos
        have = self._end - pos
        rest = blen - have
        self._end = pos
        self._base += blen  # buffer indices from pos on now map to the bytes after the block
        if self._seekable and self._size_hint is not None and hasattr(self._f, "seek"):
            here = self._f.tell()
            if here + rest > self._size_hint:
                self._fail(start, f"truncated block: length {blen}, but the file ends after "
                                  f"{self._size_hint - start} bytes")
                return False
            self._f.seek(rest, io.SEEK_CUR)
            return True
        scratch = memoryview(bytearray(max(0, min(rest, 1 << 20)))) if hasattr(self._f, "readinto") else None
        while rest > 0:
            if scratch is not None:  # a file or the gzip stream (which has no read)
                got = self._f.readinto(scratch[: min(rest, len(scratch))]) or 0
            else:
                got = len(self._f.read(min(rest, 1 << 20)))
            if not got:
                self._fail(start, f"truncated block: length {blen}, but the file ends after {blen - rest} bytes")
                return False
            rest -= got
        return True

    # ------------------------------------------------------------------ scanning
    def _fail(self, offset: int, problem: str) -> None:
        self._pending = PcapError(self.path, offset, problem)
        self._done = True

    #: A mapped capture gives the pages of the batches before the next one back to the kernel (``MADV_DONTNEED``)
    #: when that one is asked for, so resident memory does not grow with the capture. For callers that never write
    #: into a batch's bytes (the map is copy-on-write: a written page would be lost; an unwritten one is read back
    #: from the file if a kept batch touches it again), such as :meth:`Pipeline.run`, which copies every chunk.
    release_pages = False
    _mm = None
    _released = 0

    #: None, or ``arena_for(nbytes) -> uint8 array``: each batch's stretch of the capture (record headers included,
    #: exactly the bytes its ``data`` would view) is copied into the start of the array it returns, block by block
    #: right after the block is scanned, while its bytes are in cache; the batch's ``data`` is then that array's
    #: start, its ``off`` as without it. Called once per batch delivered, when its first block is scanned, with an
    #: estimate of the batch's bytes; a batch that outgrows the array moves to a buffer of its own (its ``data`` is then not
    #: the array). For a caller that copies every chunk anyway (:meth:`Pipeline.run`): one pass over the bytes
    #: instead of a scan and a copy. The caller owns the array and must not pass it again while a batch in it is
    #: in use.
    arena_for = None

    def _release_consumed(self) -> None:
        upto = self._pos // mmap.PAGESIZE * mmap.PAGESIZE
        if upto > self._released:
            self._mm.madvise(mmap.MADV_DONTNEED, self._released, upto - self._released)
            self._released = upto

    def _next_batch(self) -> PacketBatch | None:
        if self.release_pages and self._mapped and self._mm is not None and hasattr(mmap, "MADV_DONTNEED"):
            self._release_consumed()
        while True:
            if self._resync_problem is not None and not self._resync():
                return None
            batch = self._scan_batch()
            if batch is not None or self._resync_problem is None:
                return batch

    def _scan_batch(self) -> PacketBatch | None:
        chunk = self.chunk
        classic = self.format == "pcap"
        cols = _alloc_columns(chunk, self.parse)
        off, caplen, wirelen, ts_ns, linktype = (cols[c] for c in ("off", "caplen", "wirelen", "ts_ns", "linktype"))
        if classic:
            linktype.fill(self.linktype)
        self._origin = self._pos
        n = parsed = 0
        fill = None if self.arena_for is None else [None, 0]  # [the arena, bytes copied into it]
        while n < chunk:
            buf = self._buf[: self._end]
            # scan a cache-sized block, then parse it while its headers are still in cache
            want = min(_SCAN_BLOCK, chunk - n)
            if classic:
                got, pos, code, aux = _k.scan_pcap(buf, self._pos, self._origin, want, self._big,
                                                   self._frac_ns, self._max_caplen, off[n:], caplen[n:],
                                                   wirelen[n:], ts_ns[n:])
            else:
                ifa = self._interfaces()
                got, pos, code, aux = _k.scan_pcapng(buf, self._pos, self._origin, want, self._big, *ifa,
                                                     MAX_CAPLEN, off[n:], caplen[n:], wirelen[n:], ts_ns[n:],
                                                     linktype[n:])
            n += got
            self._pos = pos
            if fill is not None:
                self._fill(fill, n)
            if self.parse and got:
                self._parse_block(cols, parsed, n)
                parsed = n
            if code == _k.SCAN_OK:
                if n == chunk or got == want:
                    continue
                more = self._more(self._end + 1)
                if more == _MORE_EOF:
                    self._done = True
                    break
                if more == _MORE_FULL:
                    break
                continue
            if code == _k.SCAN_NEED_MORE:
                if not self._need_more(aux):
                    break
                continue
            if code == _k.SCAN_CONTROL:
                ok = self._handle_shb() if aux == PCAPNG_SHB else self._handle_idb()
                if not ok:
                    break
                continue
            if self.resync and code in _RESYNC_CODES:
                # end this batch at the damage; the next one starts at the next plausible record
                self._resync_problem = self._scan_problem(code, aux)
                break
            self._scan_error(code, aux)
            break
        if n == 0:
            return None
        if fill is None:
            data = self._buf[self._origin: self._pos]
        else:
            self._fill(fill, n)  # a control block handled after the last scan
            data = fill[0][: self._pos - self._origin]
        if n < chunk:
            cols = {name: col[:n] for name, col in cols.items()}
        self._est = max(16.0, (self._pos - self._origin) / n)
        batch = PacketBatch.__new__(PacketBatch)
        batch.data = data
        for name in _ALL_COLUMNS:
            setattr(batch, name, cols.get(name))
        self.packets += n
        self.bytes += int(cols["caplen"].sum(dtype=np.int64))
        self._last_sec = int(cols["ts_ns"][n - 1]) // 1_000_000_000
        return batch

    def _fill(self, fill: list, n: int) -> None:
        """Copy the batch's bytes scanned since the last call (``_buf[_origin + fill[1]: _pos]``) into its arena
        (``fill[0]``, asked of ``arena_for`` the first time, or a larger buffer of the reader's own)."""
        upto = self._pos - self._origin
        done = fill[1]
        if upto <= done or n == 0:
            return  # nothing yet, or only control blocks: the arena is asked for with the batch's first packet
        arena = fill[0]
        if arena is None:
            # the chunk's bytes at the rate of the packets so far, a little over (never past the end of the data)
            est = upto + (upto // n + 1) * (self.chunk - n) + (upto >> 4)
            if self._eof:
                est = min(est, self._end - self._origin)
            arena = fill[0] = self.arena_for(max(est, upto))
        if arena.shape[0] < upto:
            grown = np.empty(max(upto + (upto >> 2), 2 * arena.shape[0]), np.uint8)
            grown[:done] = arena[:done]
            arena = fill[0] = grown
        start = self._origin + done
        arena[done:upto] = self._buf[start: start + upto - done]
        fill[1] = upto

    def _resync(self) -> bool:
        """Find the next plausible record after the corrupt one at _pos; count the bytes passed over."""
        problem, self._resync_problem = self._resync_problem, None
        start = self._base + self._pos
        classic = self.format == "pcap"
        q = self._pos + (1 if classic else 4)
        if classic and self._last_sec is not None:
            lo, hi = self._last_sec - 86400, self._last_sec + 86400  # within a day of the last good record
        else:
            lo, hi = 0, 0xFFFFFFFF
        frac_limit = 1_000_000_000 if self.nanosecond else 1_000_000
        while True:
            self._pos = self._origin = min(q, self._end)  # bytes before q are no longer needed
            q = self._pos
            buf = self._buf[: self._end]
            if classic:
                found, searched = _k.resync_pcap(buf, q, self._big, frac_limit, MAX_CAPLEN, lo, hi, self._eof)
            else:
                found, searched = _k.resync_pcapng(buf, q, self._big, len(self._if_lists[0]), _MAX_PACKET_BLOCK,
                                                   self._eof)
            if found >= 0:
                break
            if self._eof:
                self._pos = self._origin = self._end
                self._fail(start, f"{problem} (no valid record after it)")
                return False
            self._pos = self._origin = searched
            self._more(self._end + max(_MIN_READ, self._end - searched + 1))
            q = self._pos
        self.skipped_bytes += self._base + found - start
        self.skipped_records += 1
        self._pos = self._origin = found
        return True

    def _parse_block(self, cols, a: int, b: int) -> None:
        # the same kernel and columns as PacketBatch.parse(), on packets a..b of the batch being built
        _parse_packets(self._buf[self._origin: self._end], *(cols[c][a:b] for c in _PARSE_ARGS))

    def _need_more(self, aux: int) -> bool:
        """The record or block at _pos is incomplete in the buffer: read more, or fail / end the batch."""
        pos = self._pos
        classic = self.format == "pcap"
        if not classic and aux:
            btype = struct.unpack_from(">I" if self._big else "<I", self._buf, pos)[0]
            if btype in _PACKET_BLOCKS and aux > _MAX_PACKET_BLOCK:
                self._fail(self._base + pos, f"packet block length {aux} exceeds the {_MAX_PACKET_BLOCK}-byte bound")
                return False
            if btype == PCAPNG_IDB and aux > _MAX_CONTROL_BLOCK:
                self._fail(self._base + pos, f"interface description block length {aux} exceeds the "
                                             f"{_MAX_CONTROL_BLOCK}-byte bound")
                return False
            if btype not in _PACKET_BLOCKS and btype != PCAPNG_IDB and aux > _MAX_CONTROL_BLOCK and not self._eof:
                return self._skip_in_place(pos, aux)
        need = aux if aux else (_PCAP_REC_HDR if classic else 12)
        more = self._more(pos + need)
        if more == _MORE_OK:
            return True
        if more == _MORE_FULL:
            return False
        pos = self._pos
        avail = self._end - pos
        at = self._base + pos
        if classic:
            if aux == 0:
                self._fail(at, f"truncated record header: file ends after {avail} of {_PCAP_REC_HDR} bytes")
            else:
                self._fail(at, f"truncated record: caplen {aux - _PCAP_REC_HDR}, but the file ends after "
                               f"{avail - _PCAP_REC_HDR} bytes of packet data")
        elif aux == 0:
            self._fail(at, f"truncated block header: file ends after {avail} of 12 bytes")
        else:
            self._fail(at, f"truncated block: length {aux}, but the file ends after {avail} bytes")
        return False

    def _scan_error(self, code: int, aux: int) -> None:
        self._fail(self._base + self._pos, self._scan_problem(code, aux))

    def _scan_problem(self, code: int, aux: int) -> str:
        pos = self._pos
        if code == _k.SCAN_BAD_CAPLEN:
            return f"caplen {aux} exceeds the {MAX_CAPLEN}-byte bound"
        e = ">" if self._big else "<"
        btype, blen = struct.unpack_from(e + "II", self._buf, pos)
        if code == _k.SCAN_BAD_BLOCK_LEN:
            return f"bad block length {aux} (block type 0x{btype:08x})"
        if code == _k.SCAN_BAD_TRAILER:
            return f"block length {blen} does not match its trailing copy {aux} (block type 0x{btype:08x})"
        if code == _k.SCAN_BAD_IFACE:
            m = len(self._if_lists[0])
            return f"packet block names interface {aux}, but the section describes {m}"
        if code == _k.SCAN_BAD_LINKTYPE:
            return f"link type {aux} not supported (supported: {_LINKTYPE_NAMES})"
        if code == _k.SCAN_BLOCK_CAPLEN:
            return f"caplen {aux} runs past the end of its {blen}-byte block"
        return f"scan error {code}"  # pragma: no cover - every kernel code is handled above

    # ------------------------------------------------------------------ pcapng control blocks
    def _interfaces(self):
        if self._if_arrays is None:
            lt, snap, mul, div, shift, tsoff = self._if_lists
            self._if_arrays = (np.array(lt, np.uint16), np.array(snap, np.uint32), np.array(mul, np.int64),
                               np.array(div, np.uint64), np.array(shift, np.int32), np.array(tsoff, np.int64))
        return self._if_arrays

    def _handle_shb(self) -> bool:
        start = self._base + self._pos
        more = self._more(self._pos + 12)
        if more == _MORE_FULL:
            return False
        if more == _MORE_EOF:
            self._fail(start, f"truncated section header block: file ends after {self._end - self._pos} bytes")
            return False
        pos = self._pos
        bom = bytes(self._buf[pos + 8: pos + 12])
        if bom == b"\x4d\x3c\x2b\x1a":
            big = False
        elif bom == b"\x1a\x2b\x3c\x4d":
            big = True
        else:
            self._fail(start, f"bad byte-order magic {bom.hex()} in section header block")
            return False
        e = ">" if big else "<"
        (blen,) = struct.unpack_from(e + "I", self._buf, pos + 4)
        if blen < 28 or blen % 4:
            self._fail(start, f"bad section header block length {blen}")
            return False
        if blen > _MAX_CONTROL_BLOCK:
            self._fail(start, f"section header block length {blen} exceeds the {_MAX_CONTROL_BLOCK}-byte bound")
            return False
        more = self._more(self._pos + blen)
        pos = self._pos
        if self._end - pos < blen:
            if more == _MORE_EOF:
                self._fail(start, f"truncated section header block: length {blen}, but the file ends after "
                                  f"{self._end - pos} bytes")
            return False
        (trail,) = struct.unpack_from(e + "I", self._buf, pos + blen - 4)
        if trail != blen:
            self._fail(start, f"block length {blen} does not match its trailing copy {trail} (section header)")
            return False
        vmaj, vmin = struct.unpack_from(e + "HH", self._buf, pos + 12)
        if vmaj != 1:
            self._fail(start, f"unsupported pcapng version {vmaj}.{vmin}")
            return False
        self._big = big
        self._if_lists = [[], [], [], [], [], []]
        self._if_arrays = None
        self._pos = pos + blen
        self.control_blocks += 1
        return True

    def _handle_idb(self) -> bool:
        # the kernel has checked that the block is whole and its trailing length agrees
        pos = self._pos
        start = self._base + pos
        e = ">" if self._big else "<"
        (blen,) = struct.unpack_from(e + "I", self._buf, pos + 4)
        if blen < 20:
            self._fail(start, f"interface description block too short ({blen} bytes)")
            return False
        if len(self._if_lists[0]) >= _MAX_INTERFACES:
            self._fail(start, f"more than {_MAX_INTERFACES} interfaces in one section")
            return False
        lt, _reserved, snaplen = struct.unpack_from(e + "HHI", self._buf, pos + 8)
        mul, div, shift, tsoff = 1000, 1, -1, 0  # default resolution: microseconds
        body = bytes(self._buf[pos + 16: pos + blen - 4])
        i = 0
        while i + 4 <= len(body):
            code, olen = struct.unpack_from(e + "HH", body, i)
            if code == 0:
                break
            if i + 4 + olen > len(body):
                self._fail(start + 16 + i, f"interface option {code} of length {olen} runs past its block")
                return False
            if code == 9 and olen >= 1:  # if_tsresol
                v = body[i + 4]
                if v & 0x80:
                    shift = v & 0x7F
                else:
                    shift = -1
                    if v <= 9:
                        mul, div = 10 ** (9 - v), 1
                    elif 10 ** (v - 9) < 2**64:
                        mul, div = 1, 10 ** (v - 9)
                    else:
                        mul, div = 0, 1
            elif code == 14 and olen >= 8:  # if_tsoffset, seconds
                (secs,) = struct.unpack_from(e + "q", body, i + 4)
                tsoff = ((secs * 1_000_000_000 + 2**63) % 2**64) - 2**63
            i += 4 + ((olen + 3) & ~3)
        lists = self._if_lists
        for col, v in zip(lists, (lt, snaplen, mul, div, shift, tsoff)):
            col.append(v)
        self._if_arrays = None
        self._pos = pos + blen
        self.control_blocks += 1
        return True


class _Gunzip:
    """A gzip stream (one or more members, RFC 1952) decompressed piece by piece straight into the reader's
    buffer: ``readinto`` reads at most 1 MiB of compressed bytes at a time, so memory stays bounded by that
    buffer, and everything decompressed before a damaged or cut stream is delivered before the error is raised."""

    _PIECE = 1 << 20

    def __init__(self, raw):
        self.raw = raw
        self.name = getattr(raw, "name", "<gzip>")
        self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._carry = b""  # compressed bytes of the next member, read with the end of the previous one
        self._eof = False
        self._started = False  # inside a member (the input ending there is an error)
        self._problem: str | None = None

    def readinto(self, view) -> int:
        want = len(view)
        got = 0
        while got < want and not self._eof:
            data = self._z.unconsumed_tail
            if not data:
                data, self._carry = self._carry, b""
            if not data:
                data = self.raw.read(self._PIECE)
            if not data:
                self._eof = True
                if self._started:
                    self._problem = "compressed file ended before the end-of-stream marker was reached"
                break
            self._started = True
            out = self._z.decompress(data, want - got)
            view[got: got + len(out)] = out
            got += len(out)
            if self._z.eof:
                rest = self._z.unused_data
                self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
                self._started = False
                if rest.lstrip(b"\0"):  # another member follows (trailing zeros are padding)
                    self._carry = rest
        if got == 0 and self._problem is not None:
            problem, self._problem = self._problem, None
            raise EOFError(problem)
        return got

    def close(self) -> None:
        self._carry = b""


# ---------------------------------------------------------------------------------------------------- writing
def output_format(path, default: str = "pcap") -> str:
    """``"pcapng"`` when the file name ends in ``.pcapng`` (any case), ``"pcap"`` when it ends in ``.pcap``, else
    ``default``: the format the writers use for a path."""
    name = os.fsdecode(os.fspath(path)).lower()
    if name.endswith(".pcapng"):
        return "pcapng"
    if name.endswith(".pcap"):
        return "pcap"
    return default


class PcapWriter:
    """Stream PacketBatch chunks into a classic pcap or a pcapng file.

    Parameters
    ----------
    dest : str, os.PathLike or binary file object
        A path is written under a temporary name in its directory and renamed to it by :meth:`close` (an error,
        or :meth:`abort`, removes the temporary file and leaves ``dest`` as it was). A batch of 1 MiB or more is
        written to a path's file by a thread of the writer while the caller goes on (the next ``write`` or
        ``close`` waits for it and raises its error).
    nanosecond : bool
        Classic pcap: nanosecond timestamps (magic a1b23c4d, default) or microseconds (a1b2c3d4; ns truncated).
        pcapng always has nanosecond interfaces (if_tsresol 9).
    linktype : int or None
        Classic pcap: the file's link type. None: the first non-empty batch decides (its link type if all its
        packets share one, Ethernet otherwise). Packets of another link type are converted to Ethernet when the
        file is Ethernet; any other mismatch raises ValueError. pcapng: ignored; every link type gets its own
        interface description block and no packet is converted.
    snaplen : int
        Written in the header (classic) or in each interface description (pcapng); captures longer than this are
        cut to it (wirelen kept).
    format : str or None
        ``"pcap"`` or ``"pcapng"``; None: from the file name (``.pcapng`` means pcapng), classic for file objects.

    Attributes
    ----------
    packets, bytes : int
        Packets and captured bytes (after conversion: the sum of the written records' captured lengths) so far.
    """

    def __init__(self, dest, nanosecond: bool = True, linktype: int | None = None, snaplen: int = DEFAULT_SNAPLEN,
                 format: str | None = None):
        snaplen = int(snaplen)
        if not 14 <= snaplen <= 0x7FFFFFFF:
            raise ValueError(f"PcapWriter: snaplen must be in [14, 2**31), got {snaplen}")
        if linktype is not None and not 0 <= int(linktype) <= 0xFFFF:
            raise ValueError(f"PcapWriter: linktype must be a 16-bit value, got {linktype}")
        is_path = isinstance(dest, (str, bytes, os.PathLike))
        if format is None:
            format = output_format(dest) if is_path else "pcap"
        if format not in ("pcap", "pcapng"):
            raise ValueError(f"PcapWriter: format must be 'pcap' or 'pcapng', got {format!r}")
        self.format = format
        self.nanosecond = bool(nanosecond)
        self.linktype = None if linktype is None else int(linktype)
        self.snaplen = snaplen
        self.packets = 0
        self.bytes = 0
        self._atomic: OutputFile | None = None
        if is_path:
            self.path = os.fsdecode(dest)
            self._atomic = OutputFile(dest)
            self._f = self._atomic.file
            self._own = True
        else:
            if not hasattr(dest, "write"):
                raise TypeError(f"PcapWriter: expected a path or a binary file object, got {type(dest).__name__}")
            self.path = str(getattr(dest, "name", "<stream>"))
            self._f = dest
            self._own = False
        self._header_done = False
        # gather buffers: free ones, and how many exist (at most _IN_FLIGHT); a path's writer thread gives each back
        # once written
        self._free: list[np.ndarray] = []
        self._n_bufs = 0
        self._freed = threading.Condition()
        self._behind: threading.Thread | None = None  # the writes of the last batch, for a path's file
        self._behind_error: BaseException | None = None
        self._if_of_lt: np.ndarray | None = None  # pcapng: interface id per link type (0xFFFFFFFF: none yet)
        self._n_if = 0

    def _write_all(self, buf) -> None:
        self._wait()
        self._write_all_now(buf)

    def _write_pieces(self, n: int, size: int, piece_size, gather) -> None:
        """Write a batch of ``n`` records, ``size`` bytes, as pieces of about ``_WRITE_PIECE`` bytes: each piece
        ``[a, b)`` of ``piece_size(a, b)`` bytes is gathered by ``gather(a, b, out)`` into a free buffer, then
        written. A path's file of a batch of ``_WRITE_BEHIND_MIN`` bytes or more is written by a thread while the
        caller goes on (the file's write releases the GIL): one thread a batch, which first waits for the one
        before, so the pieces land in order; an error of those writes is raised by the next write or by close."""
        k = max(1, -(-size // _WRITE_PIECE))
        step = -(-n // k)
        behind = self._atomic is not None and size >= _WRITE_BEHIND_MIN
        if behind:
            if self._behind_error is not None:
                self._wait()  # raises it
            queue: list = []  # the thread's pieces to write (None: the batch's end)
            cond = threading.Condition()
            prev = self._behind
            self._behind = threading.Thread(target=self._write_queue, args=(prev, queue, cond),
                                            name="gwlb-fast-write", daemon=True)
            self._behind.start()
        else:
            self._wait()
        try:
            for a in range(0, n, step):
                b = min(n, a + step)
                m = size if k == 1 else piece_size(a, b)
                buf = self._take_buffer(m)
                try:
                    gather(a, b, buf[:m])
                except BaseException:
                    self._give_buffer(buf)
                    raise
                if behind:
                    with cond:
                        queue.append((buf, m))
                        cond.notify()
                else:
                    try:
                        self._write_all_now(buf[:m])
                    finally:
                        self._give_buffer(buf)
        finally:
            if behind:
                with cond:
                    queue.append(None)
                    cond.notify()

    def _write_queue(self, prev: threading.Thread | None, queue: list, cond: threading.Condition) -> None:
        """The writer thread of one batch: after the batch before, write its pieces as they come, in order, giving
        each buffer back; after an error, only give them back (the error waits for the caller)."""
        if prev is not None:
            prev.join()
        while True:
            with cond:
                while not queue:
                    cond.wait()
                item = queue.pop(0)
            if item is None:
                return
            buf, m = item
            try:
                if self._behind_error is None:
                    self._write_all_now(buf[:m])
            except BaseException as e:  # noqa: BLE001 (handed to the caller's thread by _wait)
                self._behind_error = e
            finally:
                self._give_buffer(buf)

    def _take_buffer(self, size: int) -> np.ndarray:
        """A free gather buffer of at least ``size`` bytes (waits for one when ``_IN_FLIGHT`` are being written)."""
        with self._freed:
            while not self._free and self._n_bufs >= _IN_FLIGHT:
                self._freed.wait()
            if self._free:
                buf = self._free.pop()
            else:
                self._n_bufs += 1
                buf = np.zeros(0, np.uint8)
        if buf.shape[0] < size:
            # with headroom: pieces of varying sizes would otherwise each get a fresh buffer, faulted in anew
            buf = np.empty(size + size // 4, np.uint8)
        return buf

    def _give_buffer(self, buf: np.ndarray) -> None:
        with self._freed:
            self._free.append(buf)
            self._freed.notify()

    def _write_all_now(self, buf) -> None:
        view = memoryview(buf).cast("B")
        while len(view):
            n = self._f.write(view)
            if n is None or n == len(view):
                return
            view = view[n:]

    def _wait(self) -> None:
        """Until the write in progress is done; its error, if any, is raised here."""
        t = self._behind
        if t is not None:
            t.join()
            self._behind = None
        e, self._behind_error = self._behind_error, None
        if e is not None:
            raise e

    def _header(self) -> None:
        if self._header_done:
            return
        if self.format == "pcapng":
            # section header block: byte-order magic, version 1.0, section length unknown (-1), shb_userappl
            appl = b"gwlb-fast"
            opts = struct.pack("<HH", 4, len(appl)) + appl + bytes(-len(appl) % 4) + struct.pack("<HH", 0, 0)
            blen = 28 + len(opts)
            self._write_all(struct.pack("<IIIHHq", PCAPNG_SHB, blen, 0x1A2B3C4D, 1, 0, -1) + opts +
                            struct.pack("<I", blen))
            self._if_of_lt = np.full(65536, 0xFFFFFFFF, np.uint32)
        else:
            if self.linktype is None:
                self.linktype = LINKTYPE_ETHERNET
            magic = MAGIC_NS if self.nanosecond else MAGIC_US
            self._write_all(struct.pack("<IHHiIII", magic, 2, 4, 0, 0, self.snaplen, self.linktype))
        self._header_done = True

    def _interfaces_for(self, linktype: np.ndarray) -> None:
        """pcapng: an interface description block (if_tsresol 9: nanoseconds) for each new link type."""
        lut = self._if_of_lt
        kinds = np.unique(linktype)
        for lt in kinds[lut[kinds] == 0xFFFFFFFF].tolist():
            opts = struct.pack("<HHB3x", 9, 1, 9) + struct.pack("<HH", 0, 0)
            blen = 20 + len(opts)
            self._write_all(struct.pack("<IIHHI", PCAPNG_IDB, blen, lt, 0, self.snaplen) + opts +
                            struct.pack("<I", blen))
            lut[lt] = self._n_if
            self._n_if += 1

    def write(self, batch: PacketBatch) -> int:
        """Append one batch (gathered and written in pieces of about ``_WRITE_PIECE`` bytes). Returns the packets
        written."""
        if self._f is None:
            raise ValueError("PcapWriter: write to a closed writer")
        if not isinstance(batch, PacketBatch):
            raise TypeError(f"PcapWriter.write: expected a PacketBatch, got {type(batch).__name__}")
        n = len(batch)
        if n == 0:
            return 0
        if self.format == "pcapng":
            self._header()
            self._interfaces_for(batch.linktype)
            size = _k.pcapng_write_size(batch.caplen, self.snaplen)
            b = batch
            self._write_pieces(
                n, size, lambda i, j: _k.pcapng_write_size(b.caplen[i:j], self.snaplen),
                lambda i, j, out: _k.write_pcapng_records(b.data, b.off[i:j], b.caplen[i:j], b.wirelen[i:j],
                                                          b.ts_ns[i:j], b.linktype[i:j], self._if_of_lt,
                                                          self.snaplen, out))
            self.packets += n
            self.bytes += int(np.minimum(batch.caplen, self.snaplen).sum(dtype=np.int64))
            return n
        self.linktype = self._file_linktype(batch)
        self._header()
        size = _k.pcap_write_size(batch.data, batch.off, batch.caplen, batch.linktype, self.linktype, self.snaplen)
        if size < 0:
            i = -size - 1
            raise ValueError(
                f"PcapWriter: packet {i} has link type {int(batch.linktype[i])}, which a file of link type "
                f"{self.linktype} cannot hold (open the writer with linktype=1 to convert raw IP, Linux cooked, "
                f"null/loopback and PPP packets to Ethernet)")
        b, lt = batch, self.linktype
        self._write_pieces(
            n, size, lambda i, j: _k.pcap_write_size(b.data, b.off[i:j], b.caplen[i:j], b.linktype[i:j], lt,
                                                     self.snaplen),
            lambda i, j, out: _k.write_pcap_records(b.data, b.off[i:j], b.caplen[i:j], b.wirelen[i:j], b.ts_ns[i:j],
                                                    b.linktype[i:j], lt, self.nanosecond, self.snaplen, out))
        self.packets += n
        self.bytes += size - _PCAP_REC_HDR * n
        return n

    def _file_linktype(self, batch: PacketBatch) -> int:
        """A classic pcap's link type: the one set, or its first batch's when every packet has it, else Ethernet."""
        if self.linktype is not None:
            return self.linktype
        first = int(batch.linktype[0])
        return first if bool((batch.linktype == first).all()) else LINKTYPE_ETHERNET

    def write_framed(self, batch: PacketBatch) -> threading.Thread | None:
        """Write a batch whose arena has 16 bytes free before each packet (a copy of a classic pcap's stretch, its
        record headers between the packets): each record header is written there and the records go from the
        arena to the file with ``writev``, by a thread (after the writes before it), without being gathered.
        Only for a path's classic pcap file and packets that need no conversion or cut
        (``frame_pcap_records``); returns None, having written nothing, when it does not apply (then
        :meth:`write`). Otherwise returns the thread: the arena must stay as it is until it is done."""
        n = len(batch)
        if (n == 0 or self._f is None or self._atomic is None or self.format != "pcap"
                or not batch.data.flags.writeable):
            return None
        lt = self._file_linktype(batch)
        if self._behind_error is not None:
            self._wait()  # raises it
        if _k.frame_pcap_records(batch.data, batch.off, batch.caplen, batch.wirelen, batch.ts_ns, batch.linktype,
                                 lt, self.nanosecond, self.snaplen) < 0:
            return None
        self.linktype = lt
        self._header()
        off = batch.off - _PCAP_REC_HDR
        length = batch.caplen + np.uint32(_PCAP_REC_HDR)
        t = threading.Thread(target=self._write_framed, args=(self._behind, batch.data, off, length),
                             name="gwlb-fast-write", daemon=True)
        self._behind = t
        t.start()
        self.packets += n
        self.bytes += int(batch.caplen.sum(dtype=np.int64))
        return t

    def _write_framed(self, prev: threading.Thread | None, data, off, length) -> None:
        if prev is not None:
            prev.join()
        try:
            if self._behind_error is None:
                _k.write_pieces(self._f.fileno(), data, off, length)
        except BaseException as e:  # noqa: BLE001 (handed to the caller's thread by _wait)
            self._behind_error = e

    def write_records(self, data: np.ndarray, off: np.ndarray, length: np.ndarray) -> int:
        """Append records already encoded as this file's: record ``i`` is ``data[off[i]:off[i] + length[i]]``, its
        16-byte header included (as ``write_pcap_records`` makes them for a classic Ethernet nanosecond file of
        ``DEFAULT_SNAPLEN``, the only kind that takes them). A path's file gets them straight from ``data`` with
        ``writev``, in this thread; a file object, gathered into a buffer. Returns the records written."""
        if self._f is None:
            raise ValueError("PcapWriter: write to a closed writer")
        if (self.format != "pcap" or not self.nanosecond or self.snaplen != DEFAULT_SNAPLEN
                or self.linktype not in (None, LINKTYPE_ETHERNET)):
            raise ValueError("PcapWriter.write_records: records are written to a nanosecond Ethernet pcap of the "
                             "default snap length only")
        n = int(off.shape[0])
        if n == 0:
            return 0
        self.linktype = LINKTYPE_ETHERNET
        self._header()
        self._wait()  # the file's earlier writes go first
        size = int(length.sum(dtype=np.int64))
        if self._atomic is not None:
            _k.write_pieces(self._f.fileno(), data, off, length)
        else:
            from ._kernels.parse import gather_packets

            buf = np.empty(size, np.uint8)
            dst = np.zeros(n, np.int64)
            np.cumsum(length[:-1], dtype=np.int64, out=dst[1:])
            gather_packets(data, off, length, buf, dst)
            self._write_all_now(buf)
        self.packets += n
        self.bytes += size - _PCAP_REC_HDR * n
        return n

    def close(self) -> None:
        """Write the header if nothing was written (an empty capture is still a valid file), close, and (for a
        path) rename the finished file into place."""
        if self._f is None:
            return
        try:
            self._wait()
            self._header()
            if hasattr(self._f, "flush"):
                self._f.flush()
        except BaseException:
            self.abort()
            raise
        self._f = None
        self._free, self._n_bufs = [], 0
        if self._atomic is not None:
            self._atomic.commit()

    def abort(self) -> None:
        """Stop without finishing: a path's temporary file is removed and the destination left as it was (a file
        object is only left alone)."""
        try:
            self._wait()
        except BaseException:  # noqa: BLE001, S110 (the file is being thrown away: its write error does not matter)
            pass
        self._f = None
        self._free, self._n_bufs = [], 0
        if self._atomic is not None:
            self._atomic.discard()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __repr__(self) -> str:
        return f"PcapWriter({self.path!r}, format={self.format!r}, linktype={self.linktype}, packets={self.packets})"


def write_pcap(dest, batches: PacketBatch | Iterable[PacketBatch], nanosecond: bool = True,
               linktype: int | None = None, snaplen: int = DEFAULT_SNAPLEN, format: str | None = None) -> int:
    """Write one PacketBatch or an iterable of them to a classic pcap or a pcapng file.

    Parameters
    ----------
    dest : str, os.PathLike or binary file object
        A path is written under a temporary name and renamed into place when complete.
    batches : PacketBatch or iterable of PacketBatch
    nanosecond : bool
        Nanosecond timestamps (default) or microseconds (classic pcap).
    linktype : int or None
        Classic pcap: None means the link type the packets share, or Ethernet (with conversion) when they mix
        link types. For a list or tuple every batch is looked at first; for other iterables the first non-empty
        batch decides (see :class:`PcapWriter`).
    snaplen : int
    format : str or None
        ``"pcap"``, ``"pcapng"``, or None: from the file name.

    Returns
    -------
    int
        Packets written.
    """
    if isinstance(batches, PacketBatch):
        batches = [batches]
    elif isinstance(batches, (list, tuple)) and linktype is None:
        kinds = {int(v) for b in batches for v in np.unique(b.linktype)}
        if len(kinds) > 1:
            linktype = LINKTYPE_ETHERNET
    with PcapWriter(dest, nanosecond=nanosecond, linktype=linktype, snaplen=snaplen, format=format) as w:
        for b in batches:
            w.write(b)
    return w.packets


class OrderedWriter:
    """A :class:`PcapWriter` that keeps its file in time order when packets arrive out of order in bounded ways.

    :meth:`write` takes the pieces produced since the last call (for example one tap's parts of one chunk, which
    the path's stages produce round by round) and a *watermark*: no packet passed later will have an earlier
    timestamp. The pieces, with what was held back before, are put in time order (stable, so packets with equal
    timestamps keep their arrival order); those up to the watermark are written and the rest held. The held
    packets are bounded (``max_held``): beyond it the oldest are written anyway. A packet that arrives with a
    timestamp earlier than one already written is still written (never dropped) and counted in ``late``.

    Parameters
    ----------
    writer : PcapWriter
    max_held : int
        Largest number of packets held back.

    Attributes
    ----------
    late : int
        Packets written after a packet with a later timestamp (the file is in strict time order iff 0).
    """

    def __init__(self, writer: PcapWriter, max_held: int = 1 << 18):
        self.writer = writer
        self.max_held = int(max_held)
        self.late = 0
        self._held: PacketBatch | None = None
        self._last: int | None = None  # timestamp of the last packet written

    @property
    def packets(self) -> int:
        return self.writer.packets

    @property
    def bytes(self) -> int:
        return self.writer.bytes

    def write_framed(self, batch: PacketBatch, watermark: int | None = None):
        """:meth:`write` of one batch by :meth:`PcapWriter.write_framed` when nothing is held back, the batch is in
        time order, after everything written and up to ``watermark``: returns its thread, or None, having
        written nothing (then :meth:`write`)."""
        if self._held is not None or len(batch) == 0 or not hasattr(self.writer, "write_framed"):
            return None
        ts = batch.ts_ns
        if ((self._last is not None and int(ts[0]) < self._last) or (watermark is not None and int(ts[-1]) > watermark)
                or (ts.shape[0] > 1 and not bool((ts[1:] >= ts[:-1]).all()))):
            return None
        t = self.writer.write_framed(batch)
        if t is not None:
            self._last = int(ts[-1])
        return t

    def write(self, parts, watermark: int | None = None) -> None:
        """Write the pieces (a PacketBatch or a list of them) up to ``watermark`` (None: everything) in time order."""
        if isinstance(parts, PacketBatch):
            parts = [parts]
        parts = [p for p in parts if len(p)]
        if self._held is not None:
            parts.insert(0, self._held)
            self._held = None
        if not parts:
            return
        batch = parts[0] if len(parts) == 1 else PacketBatch.concat(parts)
        ts = batch.ts_ns
        if ts.shape[0] > 1 and not bool((ts[1:] >= ts[:-1]).all()):
            batch = batch[np.argsort(ts, kind="stable")]
            ts = batch.ts_ns
        cut = ts.shape[0] if watermark is None else int(np.searchsorted(ts, watermark, side="right"))
        cut = max(cut, ts.shape[0] - self.max_held)
        if cut < ts.shape[0]:
            self._held = batch[cut:].copy()  # a copy: the caller reuses the arena of its chunk
            batch = batch[:cut]
        if len(batch):
            if self._last is not None:
                self.late += int(np.count_nonzero(batch.ts_ns < self._last))
            self._last = int(batch.ts_ns[-1]) if self._last is None else max(self._last, int(batch.ts_ns[-1]))
            self.writer.write(batch)

    def close(self) -> None:
        """Write what is held and close (rename into place) the file."""
        try:
            self.write([], None)
        except BaseException:
            self.writer.abort()
            raise
        self.writer.close()

    def abort(self) -> None:
        self._held = None
        self.writer.abort()
