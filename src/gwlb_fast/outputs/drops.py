"""``run --drops FILE.pcapng``: every dropped packet, with a comment saying where and why (DESIGN.md section 11).

Each dropped packet is written as captured (before any NAT rewrite), in time order, as a pcapng Enhanced Packet
Block whose ``opt_comment`` (option 1, pcapng spec section 4.3) reads, e.g.::

    dropped at firewall: POLICY_DENY (security rule with action deny ...); firewall fw-2; rule block-rest

tshark shows it as ``frame.comment``. Comments are built once per distinct (stage, reason, firewall, rule) and the
blocks are assembled batched: a block's fixed fields are scattered as uint32 words, the packet bytes gathered by
``gather_packets``, each distinct comment scattered into the rows that carry it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .._kernels.parse import gather_packets
from ..batch import PacketBatch
from ..errors import ConfigError
from ..status import PktStatus

_SHB_MAGIC = 0x1A2B3C4D
_BT_SHB, _BT_IDB, _BT_EPB = 0x0A0D0D0A, 0x00000001, 0x00000006
_OPT_COMMENT, _IF_TSRESOL = 1, 9
_EPB_FIXED = 28  # block type, length, interface id, timestamp (2 words), captured and original length

#: short description of each drop reason (the comment's "why")
REASONS = {
    PktStatus.NO_ROUTE: "no route matched, or the next hop does not exist",
    PktStatus.BLACKHOLE: "route to blackhole",
    PktStatus.ROUTE_LOOP: "the route sends the packet back where it came from",
    PktStatus.UNKNOWN_ENDPOINT: "endpoint id not in any zone",
    PktStatus.NO_HEALTHY_FW: "no healthy firewall behind the GWLB",
    PktStatus.FW_FAILED: "its flow's firewall failed (failover: keep)",
    PktStatus.FLOW_TABLE_FULL: "flow table full",
    PktStatus.TOO_BIG: "inner packet larger than the GWLB forwards",
    PktStatus.STALE_COOKIE: "flow cookie is not the flow's",
    PktStatus.POLICY_DENY: "security rule denies",
    PktStatus.POLICY_RESET: "security rule resets (RST sent)",
    PktStatus.TCP_NOT_SYN: "first packet of a TCP session is not a SYN",
    PktStatus.SESSION_CLOSED: "session closed by RST",
    PktStatus.NAT_PORT_EXHAUSTED: "no free SNAT port",
    PktStatus.NAT_NO_MAPPING: "no DNAT rule or translation",
    PktStatus.NAT_TABLE_FULL: "translation table full",
    PktStatus.NOT_FORWARDED: "protocol not forwarded",
}


def reason_text(code: int) -> str:
    try:
        name = PktStatus(code).name
    except ValueError:
        return f"status {code}"
    why = REASONS.get(code)
    return f"{name} ({why})" if why else name


def _pad4(n):
    return (n + 3) & ~3


def _shb() -> bytes:
    words = np.array([_BT_SHB, 28, _SHB_MAGIC, 1, 0xFFFFFFFF, 0xFFFFFFFF, 28], np.uint32)
    words[3] = 1  # major 1, minor 0 (little-endian halves)
    return words.tobytes()


def _idb(linktype: int) -> bytes:
    # if_tsresol = 9: nanosecond timestamps
    body = np.array([linktype & 0xFFFF, 0], np.uint16).tobytes() + np.uint32(0).tobytes()
    opt = np.array([_IF_TSRESOL, 1], np.uint16).tobytes() + bytes([9, 0, 0, 0]) + bytes(4)
    length = 8 + len(body) + len(opt) + 4
    return (np.array([_BT_IDB, length], np.uint32).tobytes() + body + opt
            + np.uint32(length).tobytes())


class CommentedPcapngWriter:
    """A pcapng file of packets, each with its own comment (EPB ``opt_comment``), little-endian, ns timestamps.

    ``write(batch, comment_id, comments)`` writes ``batch``'s packets; packet i gets ``comments[comment_id[i]]``.
    One Interface Description Block per link type, written when the type first appears. The file appears under its
    name only when complete (``outfiles.OutputFile``: a temporary name beside it, renamed by :meth:`close`).
    """

    def __init__(self, path):
        from .outfiles import OutputFile

        self.path = Path(path)
        self._out = OutputFile(self.path)
        self._fh = self._out.file
        self._fh.write(_shb())
        self._iface: dict[int, int] = {}
        self.packets = 0

    def _interfaces(self, linktypes: np.ndarray) -> np.ndarray:
        for lt in np.unique(linktypes).tolist():
            if lt not in self._iface:
                self._iface[lt] = len(self._iface)
                self._fh.write(_idb(lt))
        lut = np.zeros(max(self._iface) + 1, np.uint32)
        for lt, i in self._iface.items():
            lut[lt] = i
        return lut[linktypes]

    def write(self, batch: PacketBatch, comment_id: np.ndarray, comments: list[bytes]) -> None:
        n = len(batch)
        if n == 0:
            return
        comment_id = np.asarray(comment_id, np.int64)
        clen = np.array([len(c) for c in comments], np.int64)[comment_id]
        cap = batch.caplen.astype(np.int64)
        data_len = (cap + 3) & ~3
        opt_len = np.where(clen > 0, 4 + ((clen + 3) & ~3) + 4, 0)  # the comment, then opt_endofopt
        blen = _EPB_FIXED + data_len + opt_len + 4
        start = np.zeros(n, np.int64)
        np.cumsum(blen[:-1], out=start[1:])
        total = int(start[-1] + blen[-1])
        buf = np.zeros(total, np.uint8)
        words = buf.view(np.uint32)  # every block starts on a 4-byte boundary
        w0 = start // 4
        ts = batch.ts_ns.astype(np.uint64)
        words[w0] = _BT_EPB
        words[w0 + 1] = blen
        words[w0 + 2] = self._interfaces(batch.linktype)
        words[w0 + 3] = (ts >> np.uint64(32)).astype(np.uint32)
        words[w0 + 4] = (ts & np.uint64(0xFFFFFFFF)).astype(np.uint32)
        words[w0 + 5] = batch.caplen
        words[w0 + 6] = batch.wirelen
        gather_packets(batch.data, batch.off, batch.caplen, buf, start + _EPB_FIXED)
        opt = start + _EPB_FIXED + data_len
        has = clen > 0
        half = buf.view(np.uint16)
        half[opt[has] // 2] = _OPT_COMMENT
        half[opt[has] // 2 + 1] = clen[has]
        for c in np.flatnonzero(np.bincount(comment_id, minlength=len(comments))).tolist():
            text = np.frombuffer(comments[c], np.uint8)
            if text.size == 0:
                continue
            rows = opt[comment_id == c] + 4
            buf[rows[:, None] + np.arange(text.size)] = text
        words[(start + blen) // 4 - 1] = blen
        self._fh.write(buf.tobytes())
        self.packets += n

    def close(self) -> None:
        self._out.commit()

    def abort(self) -> None:
        self._out.discard()


def drop_keys(stage, status, fw, rule) -> np.ndarray:
    """One int64 per dropped packet naming what its comment says: the stage, the status, the firewall and the rule
    (-1: none)."""
    return ((stage.astype(np.int64) * 256 + status) * 65536 + (fw.astype(np.int64) + 1)) * 65536 + (rule + 1)


class DropComments:
    """The comments of drop keys (:func:`drop_keys`), numbered as they first come: ``rule_names`` and
    ``firewall_names`` name the rule and firewall indices."""

    def __init__(self, rule_names, firewall_names):
        self.rule_names = [*rule_names, "default"]
        self.firewall_names = list(firewall_names)
        self.texts: list[bytes] = []
        self._ids: dict[int, int] = {}

    def ids(self, keys: np.ndarray) -> np.ndarray:
        """The comment number of every key (new comments appended to :attr:`texts`)."""
        from ..pipeline import STAGES

        uniq, inv = np.unique(keys, return_inverse=True)
        out = np.empty(uniq.size, np.int64)
        for j, k in enumerate(uniq.tolist()):
            if k not in self._ids:
                r = k % 65536 - 1
                f = (k // 65536) % 65536 - 1
                code = (k // 65536 ** 2) % 256
                text = f"dropped at {STAGES[k // (65536 ** 2 * 256)]}: {reason_text(code)}"
                if f >= 0:
                    text += f"; firewall {self.firewall_names[f]}"
                if r >= 0:
                    text += f"; rule {self.rule_names[r] if r < len(self.rule_names) else r}"
                self._ids[k] = len(self.texts)
                self.texts.append(text.encode())
            out[j] = self._ids[k]
        return out[inv.reshape(-1)]


class DropsFile:
    """The drops file: packets with their drop keys in, commented packets out (:class:`CommentedPcapngWriter`,
    made at the first write or at :meth:`close`: an empty file says "nothing was dropped")."""

    def __init__(self, path, comments: DropComments):
        self.path, self.comments = path, comments
        self._w: CommentedPcapngWriter | None = None
        self.packets = 0

    def write(self, batch: PacketBatch, keys: np.ndarray) -> None:
        if self._w is None:
            self._w = CommentedPcapngWriter(self.path)
        self._w.write(batch, self.comments.ids(keys), self.comments.texts)
        self.packets += len(batch)

    def close(self) -> None:
        if self._w is None:
            self._w = CommentedPcapngWriter(self.path)
        self._w.close()

    def abort(self) -> None:
        if self._w is not None:
            self._w.abort()


class DropsWriter:
    """Pipeline observer: every dropped packet of a run, with its comment, in time order.

    Each chunk's drops (input packets, and firewall resets the path dropped later) are sorted by time (stable);
    chunks arrive in capture order, so the file is in time order when the capture is. ``sink``: where the packets
    and their drop keys go instead of the file ``path`` (``run --workers``: a ring its parent merges), an object
    with ``write(batch, keys)`` and ``close()``.
    """

    def __init__(self, path, inputs=(), sink=None):
        if sink is None:
            path = Path(path)
            self.check_path(path)
            from .outfiles import refuse_overlap

            refuse_overlap(inputs, [path])
        self.path = path
        self._sink = sink
        self.packets = 0

    @staticmethod
    def check_path(path) -> None:
        if Path(path).suffix.lower() != ".pcapng":
            raise ConfigError(f"{path}: the drops file must end in .pcapng (its packets carry comments)")

    def start(self, pipe) -> None:
        if self._sink is None:
            self._sink = DropsFile(self.path, DropComments(pipe.policy.rule_names, pipe.firewall_names))

    def chunk(self, pipe, batch: PacketBatch, res) -> None:
        rows = np.flatnonzero(res.stage != 255)
        parts = []
        if rows.size:
            fw = res.fw[rows].astype(np.int64)
            if res.failed_fw is not None:
                fw = np.where(fw < 0, res.failed_fw[rows], fw)
            parts.append((batch[rows], res.stage[rows], res.status[rows], fw,
                          res.rule[rows].astype(np.int64) if res.rule is not None else np.full(rows.size, -1)))
        g = res.resets
        if g is not None:
            gr = np.flatnonzero(g.stage != 255)
            if gr.size:
                parts.append((g.batch[gr], g.stage[gr], g.status[gr], res.fw[g.source[gr]].astype(np.int64),
                              res.rule[g.source[gr]].astype(np.int64)))
        if not parts:
            return
        sub = PacketBatch.concat([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
        stage, status, fw, rule = (np.concatenate([p[i] for p in parts]) for i in range(1, 5))
        order = np.argsort(sub.ts_ns, kind="stable")
        self._sink.write(sub[order], drop_keys(stage[order], status[order], fw[order], rule[order]))
        self.packets += int(order.size)

    def close(self, pipe, summary) -> None:
        self._sink.close()


__all__ = ["CommentedPcapngWriter", "DropComments", "DropsFile", "DropsWriter", "drop_keys",
           "reason_text"]
