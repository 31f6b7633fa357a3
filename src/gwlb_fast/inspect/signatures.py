"""Threat signatures in a documented subset of Suricata's rule language (DESIGN.md section 12, issue 11 item 4).

Subset (anything else is refused with ``file:line`` and the keyword, never half-understood):

- actions ``alert``, ``drop``, ``reject``; header protocols ``tcp``, ``udp``, ``ip`` (TCP and UDP sessions),
  ``http``, ``tls``, ``dns`` (the session's App-ID must be web-browsing, ssl or dns);
- addresses: ``any``, IPv4 addresses and CIDRs, ``[lists]`` (nested), ``!`` negation, ``$VARIABLES`` (from the
  topology's ``security_policy.vars``, see :func:`signature_vars`; HOME_NET defaults to the topology's VPC CIDRs,
  the other names to Suricata's defaults, :data:`DEFAULT_VARS`); ports: ``any``,
  numbers, ``lo:hi`` / ``lo:`` / ``:hi`` ranges, lists, negation, variables; direction ``->`` or ``<>``;
- options ``msg``, ``sid``, ``rev``, ``classtype``, ``priority``, ``content`` (with ``|hex|``), ``nocase``,
  ``depth``, ``offset``, ``distance``, ``within``, ``flow`` (``established``, ``to_server``, ``to_client`` and
  their aliases ``from_client`` / ``from_server``), the sticky buffers ``http.uri``, ``http.host``,
  ``http.method``, ``http.user_agent``, ``tls.sni``, ``dns.query`` (one buffer per signature), and the
  informational ``reference`` and ``metadata``.

Semantics, as Suricata's: contents in the stream buffer are matched on the reassembled stream of the direction the
signature's ``flow`` names (both without one), offsets counted from the start of the stream (TCP) or of the datagram
(UDP); ``offset`` is where a match may start, ``depth`` how many bytes from there it may end in; ``distance`` and
``within`` place a content relative to the end of the previous one (``within`` counted from that end plus
``distance``). A signature with several contents matches when all of them are placed on the buffer's last 32
literal matches (the bounded memory of the stream matcher). Sticky-buffer contents match the field the App-ID
kernel extracted (the first request of a session for HTTP, the ClientHello's SNI, the first DNS question).
``http.host`` is compared as Suricata normalises it (lowercase): its contents must be lowercase or ``nocase``.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from .applications import APP_ID

__all__ = ["DEFAULT_VARS", "Content", "Signature", "SignatureError", "SignatureSet", "load_rules", "parse_rules",
           "signature_vars"]

ACTIONS = ("alert", "drop", "reject")
PROTOCOLS = {"tcp": (6, -1), "udp": (17, -1), "ip": (0, -1), "http": (6, APP_ID["web-browsing"]),
             "tls": (6, APP_ID["ssl"]), "dns": (0, APP_ID["dns"])}
#: buffer ids (the verification kernel's BUF_*: 0 to-server stream, 1 to-client stream, 2.. extracted fields)
STICKY = {"http.method": 2, "http.uri": 3, "http.host": 4, "http.user_agent": 5, "tls.sni": 6, "dns.query": 7}
STICKY_PROTO = {"http.method": "http", "http.uri": "http", "http.host": "http", "http.user_agent": "http",
                "tls.sni": "tls", "dns.query": "dns"}
INFORMATIONAL = ("reference", "metadata")
#: Suricata's default address and port groups (suricata.yaml)
DEFAULT_VARS = {
    "HOME_NET": "[192.168.0.0/16,10.0.0.0/8,172.16.0.0/12]",
    "EXTERNAL_NET": "!$HOME_NET",
    "HTTP_SERVERS": "$HOME_NET", "SMTP_SERVERS": "$HOME_NET", "SQL_SERVERS": "$HOME_NET",
    "DNS_SERVERS": "$HOME_NET", "TELNET_SERVERS": "$HOME_NET", "AIM_SERVERS": "$EXTERNAL_NET",
    "DC_SERVERS": "$HOME_NET", "DNP3_SERVER": "$HOME_NET", "DNP3_CLIENT": "$HOME_NET",
    "MODBUS_CLIENT": "$HOME_NET", "MODBUS_SERVER": "$HOME_NET", "ENIP_CLIENT": "$HOME_NET",
    "ENIP_SERVER": "$HOME_NET",
    "HTTP_PORTS": "80", "SHELLCODE_PORTS": "!80", "ORACLE_PORTS": "1521", "SSH_PORTS": "22",
    "DNP3_PORTS": "20000", "MODBUS_PORTS": "502", "FILE_DATA_PORTS": "[$HTTP_PORTS,110,143]",
    "FTP_PORTS": "21", "GENEVE_PORTS": "6081", "VXLAN_PORTS": "4789", "TEREDO_PORTS": "3544",
}


class SignatureError(ConfigError):
    """A rule outside the subset or malformed: the message is ``file:line: problem``."""


@dataclass
class Content:
    pattern: bytes
    nocase: bool = False
    offset: int = 0
    depth: int = -1
    distance: int = 0
    within: int = -1
    relative: bool = False
    buffer: int = -1          # -1: the stream of the signature's direction(s)


@dataclass
class Signature:
    action: str
    proto: str
    src: list
    src_ports: list
    dst: list
    dst_ports: list
    bidirectional: bool
    sid: int
    rev: int = 1
    msg: str = ""
    classtype: str = ""
    priority: int = 3
    contents: list[Content] = field(default_factory=list)
    to_server: bool = False
    to_client: bool = False
    established: bool = False
    source: str = ""          # file:line


def _split_options(body: str, where: str) -> list[tuple[str, str | None]]:
    """``key: value;`` pairs; values may hold quoted strings with escaped ``"``, ``;`` and ``\\``."""
    out = []
    i, n = 0, len(body)
    while i < n:
        while i < n and body[i] in " \t":
            i += 1
        if i >= n:
            break
        j = i
        while j < n and body[j] not in ":;":
            j += 1
        key = body[i:j].strip()
        if j < n and body[j] == ";":
            out.append((key, None))
            i = j + 1
            continue
        if j >= n:
            if key:
                raise SignatureError(f"{where}: option {key!r} is not ended by ';'")
            break
        j += 1
        val = []
        quoted = False
        while j < n:
            ch = body[j]
            if ch == "\\" and j + 1 < n:
                val.append(body[j:j + 2])
                j += 2
                continue
            if ch == '"':
                quoted = not quoted
            elif ch == ";" and not quoted:
                break
            val.append(ch)
            j += 1
        if j >= n:
            raise SignatureError(f"{where}: option {key!r} is not ended by ';'")
        out.append((key, "".join(val).strip()))
        i = j + 1
    return out


def _unquote(v: str, where: str, key: str) -> str:
    if len(v) < 2 or v[0] != '"' or v[-1] != '"':
        raise SignatureError(f"{where}: {key}: value must be in double quotes, got {v!r}")
    s = v[1:-1]
    return re.sub(r"\\(.)", r"\1", s)


def _content_bytes(v: str, where: str) -> bytes:
    if v.startswith("!"):
        raise SignatureError(f"{where}: content: negated content (!) is outside the supported subset")
    s = _unquote(v, where, "content")
    out = bytearray()
    parts = s.split("|")
    if len(parts) % 2 == 0:
        raise SignatureError(f"{where}: content: unbalanced '|' in {v}")
    for k, part in enumerate(parts):
        if k % 2:
            hx = part.replace(" ", "")
            if not re.fullmatch(r"(?:[0-9A-Fa-f]{2})*", hx):
                raise SignatureError(f"{where}: content: bad hex {part!r}")
            out += bytes.fromhex(hx)
        else:
            out += part.encode("latin-1")
    if not out:
        raise SignatureError(f"{where}: content: empty pattern")
    return bytes(out)


def _int(v: str | None, where: str, key: str, lo: int = 0) -> int:
    try:
        x = int(str(v).strip())
    except ValueError:
        raise SignatureError(f"{where}: {key}: not an integer: {v!r}") from None
    if x < lo:
        raise SignatureError(f"{where}: {key}: must be >= {lo}, got {x}")
    return x


def _tokens_list(s: str, where: str) -> list[str]:
    """Split a bracketed list at top-level commas."""
    items, depth, cur = [], 0, []
    for ch in s:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise SignatureError(f"{where}: unbalanced ']' in {s!r}")
        if ch == "," and depth == 0:
            items.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if depth:
        raise SignatureError(f"{where}: unbalanced '[' in {s!r}")
    items.append("".join(cur).strip())
    return [x for x in items if x]


def _intervals_union(iv):
    iv = sorted(iv)
    out = []
    for a, b in iv:
        if out and a <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [tuple(x) for x in out]


def _complement(iv, top):
    out, cur = [], 0
    for a, b in _intervals_union(iv):
        if a > cur:
            out.append((cur, a - 1))
        cur = b + 1
    if cur <= top:
        out.append((cur, top))
    return out


def _resolve(spec: str, vars_: dict, where: str, kind: str, seen=()) -> list[tuple[int, int]]:
    """Address (kind 'addr', 0..2**32-1) or port (kind 'port', 0..65535) spec -> sorted intervals."""
    top = 2**32 - 1 if kind == "addr" else 65535
    spec = spec.strip()
    if not spec:
        raise SignatureError(f"{where}: empty {'address' if kind == 'addr' else 'port'}")
    if spec.startswith("!"):
        return _complement(_resolve(spec[1:], vars_, where, kind, seen), top)
    if spec.startswith("["):
        if not spec.endswith("]"):
            raise SignatureError(f"{where}: unbalanced list {spec!r}")
        pos, neg = [], []
        for item in _tokens_list(spec[1:-1], where):
            if item.startswith("!"):
                neg += _resolve(item[1:], vars_, where, kind, seen)
            else:
                pos += _resolve(item, vars_, where, kind, seen)
        base = _intervals_union(pos) if pos else [(0, top)]
        if neg:
            nn = _complement(neg, top)
            base = [(max(a, c), min(b, d)) for a, b in base for c, d in nn if max(a, c) <= min(b, d)]
        return _intervals_union(base)
    if spec.lower() == "any":
        return [(0, top)]
    if spec.startswith("$"):
        name = spec[1:]
        if name in seen:
            chain = " -> ".join(f"${v}" for v in seen[seen.index(name):] + (name,))
            raise SignatureError(f"{where}: variable ${name} refers to itself ({chain})")
        if name not in vars_:
            raise SignatureError(f"{where}: unknown variable ${name}")
        return _resolve(str(vars_[name]), vars_, where, kind, seen + (name,))
    if kind == "addr":
        try:
            net = ipaddress.ip_network(spec, strict=False)
        except ValueError:
            raise SignatureError(f"{where}: not an IPv4 address or CIDR: {spec!r}") from None
        if net.version != 4:
            raise SignatureError(f"{where}: IPv6 address {spec!r} is outside the supported subset")
        return [(int(net.network_address), int(net.broadcast_address))]
    m = re.fullmatch(r"(\d*)\s*:\s*(\d*)", spec)
    if m:
        lo = int(m.group(1)) if m.group(1) else 0
        hi = int(m.group(2)) if m.group(2) else 65535
    elif spec.isdigit():
        lo = hi = int(spec)
    else:
        raise SignatureError(f"{where}: not a port, range or list: {spec!r}")
    if not 0 <= lo <= hi <= 65535:
        raise SignatureError(f"{where}: bad port range {spec!r}")
    return [(lo, hi)]


_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _var_spec(value, where: str) -> str:
    """A ``vars`` value (rule-language string, port number, or a list of them, nested) as rule-language text."""
    if isinstance(value, bool) or value is None:
        raise SignatureError(f"{where}: expected an address, port, $VARIABLE or a list of them, got {value!r}")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        if not value.strip():
            raise SignatureError(f"{where}: empty value")
        return value.strip()
    if isinstance(value, (list, tuple)):
        if not value:
            raise SignatureError(f"{where}: empty list")
        return "[" + ",".join(_var_spec(v, f"{where}[{i}]") for i, v in enumerate(value)) + "]"
    raise SignatureError(f"{where}: expected an address, port, $VARIABLE or a list of them, got "
                         f"{type(value).__name__}")


def signature_vars(raw, where: str = "vars", home_net=None, where_of=None) -> dict[str, str]:
    """The signature variables of a policy (``security_policy.vars``) as rule-language text, checked.

    ``raw``: mapping NAME -> value (an address, CIDR, port, range, ``any``, ``!``-negation, ``$OTHER`` or a list of
    them, nested). ``home_net``: the default ``HOME_NET`` (the topology's VPC CIDRs) when ``raw`` does not set it;
    the other names default to Suricata's (:data:`DEFAULT_VARS`, ``EXTERNAL_NET`` = ``!$HOME_NET``). Each variable
    given must resolve as addresses or as ports; unknown variables and cycles are refused. ``where_of(name)``: the
    prefix of the error message for a variable (default ``where.NAME``), e.g. with its file and line.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SignatureError(f"{where}: expected a mapping NAME -> addresses or ports, got {type(raw).__name__}")
    out = {}
    if home_net:
        out["HOME_NET"] = _var_spec(list(home_net), f"{where}.HOME_NET (the topology's VPC CIDRs)")
    for name in raw:
        if not isinstance(name, str) or not _VAR_NAME.fullmatch(name):
            raise SignatureError(f"{where}: {name!r}: a variable name is letters, digits and '_' (no '$')")
    for name, value in raw.items():
        out[name] = _checked(name, where, where_of, _var_spec, value, f"{where}.{name}")
    merged = {**DEFAULT_VARS, **out}
    for name, spec in out.items():
        at = f"{where}.{name}" if name in raw else f"{where}.HOME_NET (the topology's VPC CIDRs)"
        _checked(name, where, where_of, _addr_or_port, spec, merged, at)
    return out


def _checked(name, where, where_of, fn, *args):
    """``fn(*args)``, its error message's ``where.NAME`` prefix replaced by ``where_of(name)`` (file and line)."""
    try:
        return fn(*args)
    except SignatureError as exc:
        msg, prefix = str(exc), f"{where}.{name}"
        if where_of is not None and msg.startswith(prefix):
            msg = where_of(name) + msg[len(prefix):]
        raise SignatureError(msg) from None


def _addr_or_port(spec: str, vars_: dict, at: str) -> None:
    try:
        _resolve(spec, vars_, at, "addr")
    except SignatureError as as_addr:
        try:
            _resolve(spec, vars_, at, "port")
        except SignatureError as as_port:
            for e in (as_addr, as_port):   # a variable missing or in a cycle is the problem either way
                if "unknown variable" in str(e) or "refers to itself" in str(e):
                    raise SignatureError(str(e)) from None
            raise SignatureError(f"{as_addr}; nor a port: {str(as_port)[len(at) + 2:]}") from None


_HEADER = re.compile(r"^\s*(\S+)\s+(\S+)\s+(\[[^\]]*(?:\][^\s]*)?|\S+)\s+(\[[^\]]*\]|\S+)\s+(->|<>)\s+"
                     r"(\[[^\]]*(?:\][^\s]*)?|\S+)\s+(\[[^\]]*\]|\S+)\s*\((.*)\)\s*$", re.DOTALL)


def _header_fields(text: str, where: str) -> list[str]:
    """action proto src sport dir dst dport, with bracketed lists that may hold spaces."""
    i = text.find("(")
    if i < 0 or not text.rstrip().endswith(")"):
        raise SignatureError(f"{where}: a rule is 'action proto src sport -> dst dport (options)'")
    head = text[:i]
    toks, cur, depth = [], [], 0
    for ch in head:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch in " \t" and depth == 0:
            if cur:
                toks.append("".join(cur))
                cur = []
        else:
            cur.append(ch)
    if cur:
        toks.append("".join(cur))
    if len(toks) != 7:
        raise SignatureError(f"{where}: a rule header has 7 fields (action proto src sport -> dst dport), "
                             f"got {len(toks)}")
    return toks + [text[i + 1:text.rstrip().rindex(")")]]


def parse_rule(text: str, where: str, vars_: dict | None = None) -> Signature:
    vars_ = {**DEFAULT_VARS, **(vars_ or {})}
    action, proto, src, sport, arrow, dst, dport, body = _header_fields(text, where)
    if action not in ACTIONS:
        raise SignatureError(f"{where}: action {action!r} is outside the supported subset ({', '.join(ACTIONS)})")
    if proto not in PROTOCOLS:
        raise SignatureError(f"{where}: protocol {proto!r} is outside the supported subset "
                             f"({', '.join(PROTOCOLS)})")
    if arrow not in ("->", "<>"):
        raise SignatureError(f"{where}: direction {arrow!r}: use -> or <>")
    sig = Signature(action, proto, _resolve(src, vars_, where, "addr"), _resolve(sport, vars_, where, "port"),
                    _resolve(dst, vars_, where, "addr"), _resolve(dport, vars_, where, "port"), arrow == "<>",
                    sid=-1, source=where)
    buffer = -1
    buffer_name = None
    for key, val in _split_options(body, where):
        if key == "msg":
            sig.msg = _unquote(val or "", where, key)
        elif key == "sid":
            sig.sid = _int(val, where, key, 1)
        elif key == "rev":
            sig.rev = _int(val, where, key, 0)
        elif key == "classtype":
            sig.classtype = (val or "").strip()
        elif key == "priority":
            sig.priority = _int(val, where, key, 1)
        elif key == "content":
            sig.contents.append(Content(_content_bytes(val or "", where), buffer=buffer))
        elif key in ("nocase", "depth", "offset", "distance", "within"):
            if not sig.contents:
                raise SignatureError(f"{where}: {key}: no content before it")
            c = sig.contents[-1]
            if key == "nocase":
                if val is not None:
                    raise SignatureError(f"{where}: nocase takes no value")
                c.nocase = True
            elif key == "depth":
                c.depth = _int(val, where, key, 1)
            elif key == "offset":
                c.offset = _int(val, where, key, 0)
            elif key == "distance":
                c.distance = _int(val, where, key, -65535)
                c.relative = True
            else:
                c.within = _int(val, where, key, 1)
                c.relative = True
            if c.relative and (c.depth >= 0 or c.offset):
                raise SignatureError(f"{where}: {key}: a content cannot be both absolute (offset/depth) and "
                                     "relative (distance/within)")
            if c.within >= 0 and c.within < len(c.pattern):
                raise SignatureError(f"{where}: within {c.within} is shorter than the content")
            if c.depth >= 0 and c.depth < len(c.pattern):
                raise SignatureError(f"{where}: depth {c.depth} is shorter than the content")
        elif key == "flow":
            for opt in (val or "").split(","):
                opt = opt.strip()
                if opt in ("to_server", "from_client"):
                    sig.to_server = True
                elif opt in ("to_client", "from_server"):
                    sig.to_client = True
                elif opt == "established":
                    sig.established = True
                else:
                    raise SignatureError(f"{where}: flow:{opt} is outside the supported subset "
                                         "(established, to_server, to_client)")
            if sig.to_server and sig.to_client:
                raise SignatureError(f"{where}: flow: to_server and to_client together never match")
        elif key in STICKY:
            if val is not None:
                raise SignatureError(f"{where}: {key} takes no value")
            if buffer_name is not None and buffer_name != key:
                raise SignatureError(f"{where}: {key}: one sticky buffer per signature in the supported subset "
                                     f"(already {buffer_name})")
            buffer, buffer_name = STICKY[key], key
            if PROTOCOLS[proto][1] >= 0 and proto != STICKY_PROTO[key]:
                raise SignatureError(f"{where}: {key} on a {proto} signature never matches")
        elif key in INFORMATIONAL:
            pass
        else:
            raise SignatureError(f"{where}: keyword {key!r} is outside the supported subset")
    if sig.sid < 0:
        raise SignatureError(f"{where}: no sid")
    if not sig.contents:
        raise SignatureError(f"{where}: no content (signatures without content are outside the supported subset)")
    if any(c.buffer != sig.contents[-1].buffer for c in sig.contents):
        raise SignatureError(f"{where}: contents both before and after a sticky buffer: one buffer per signature "
                             "in the supported subset")
    if buffer_name is not None:
        if sig.to_client:
            raise SignatureError(f"{where}: {buffer_name} is a to-server buffer; flow:to_client never matches")
        if PROTOCOLS[proto][1] < 0:
            sig.proto = STICKY_PROTO[buffer_name] if proto in ("tcp", "udp", "ip") else proto
        if buffer_name == "http.host":
            for c in sig.contents:
                if not c.nocase and c.pattern != c.pattern.lower():
                    raise SignatureError(f"{where}: http.host is lowercase: content {c.pattern!r} never "
                                         "matches without nocase")
    return sig


def parse_rules(text: str, source: str = "<rules>", vars_: dict | None = None) -> list[Signature]:
    """Every rule of a rules file (``#`` comments, blank lines, ``\\`` line continuations)."""
    sigs, seen = [], {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        start = i
        line = lines[i].rstrip()
        while line.endswith("\\") and i + 1 < len(lines):
            i += 1
            line = line[:-1] + lines[i].rstrip()
        i += 1
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        where = f"{source}:{start + 1}"
        sig = parse_rule(s, where, vars_)
        if sig.sid in seen:
            raise SignatureError(f"{where}: sid {sig.sid} already defined at {seen[sig.sid]}")
        seen[sig.sid] = where
        sigs.append(sig)
    return sigs


def load_rules(paths, vars_: dict | None = None) -> list[Signature]:
    out = []
    for p in paths:
        p = Path(p)
        try:
            text = p.read_text(encoding="utf-8", errors="replace")
        except OSError as e:
            raise SignatureError(f"{p}: cannot read: {e.strerror or e}") from None
        out += parse_rules(text, str(p), vars_)
    return out


class SignatureSet:
    """Signatures compiled for the kernels: Hyperscan literal databases and the verification tables.

    Parameters
    ----------
    signatures : list of Signature
    n_rows : int
        Inspected sessions (pool rows): one Hyperscan stream per direction is opened for each.
    """

    def __init__(self, signatures: list[Signature], n_rows: int):
        from .._kernels import match as _m

        self.signatures = list(signatures)
        self.n_rows = int(n_rows)
        lit_id: dict[tuple[bytes, bool, bool], int] = {}   # (pattern, nocase, field?) -> pid
        stream_pats, field_pats = [], []
        c_sig, c_buf, c_pid, c_len, c_off, c_dep, c_dist, c_within, c_rel = ([] for _ in range(9))
        s_first, s_n, s_proto, s_app, s_flags = [], [], [], [], []
        sa_lo, sa_hi, da_lo, da_hi, sp_lo, sp_hi, dp_lo, dp_hi = ([] for _ in range(8))
        s_src_a, s_dst_a, s_src_p, s_dst_p = [0], [0], [0], [0]
        users: dict[int, list[int]] = {}
        # stream contents of one direction or both: a signature without flow direction gets its contents once
        # per buffer, so each buffer's events see their own copy
        self._sig_of_entry = []
        for si, sig in enumerate(self.signatures):
            is_field = sig.contents[0].buffer >= 0
            if is_field:
                bufs = [sig.contents[0].buffer]
            elif sig.to_server:
                bufs = [_m.BUF_TO_SERVER]
            elif sig.to_client:
                bufs = [_m.BUF_TO_CLIENT]
            else:
                bufs = [_m.BUF_TO_SERVER, _m.BUF_TO_CLIENT]
            proto_num, app = PROTOCOLS[sig.proto]
            for buf in bufs:
                entry = len(s_first)
                self._sig_of_entry.append(si)
                s_first.append(len(c_sig))
                s_n.append(len(sig.contents))
                s_proto.append(proto_num)
                s_app.append(app)
                s_flags.append((_m.SIG_TO_SERVER if sig.to_server else 0) | (_m.SIG_TO_CLIENT if sig.to_client else 0)
                               | (_m.SIG_ESTABLISHED if sig.established else 0)
                               | (_m.SIG_BIDIR if sig.bidirectional else 0))
                for ivs, lo, hi, starts in ((sig.src, sa_lo, sa_hi, s_src_a), (sig.dst, da_lo, da_hi, s_dst_a),
                                            (sig.src_ports, sp_lo, sp_hi, s_src_p),
                                            (sig.dst_ports, dp_lo, dp_hi, s_dst_p)):
                    for a, b in ivs:
                        lo.append(a)
                        hi.append(b)
                    starts.append(len(lo))
                for c in sig.contents:
                    key = (c.pattern.lower() if c.nocase else c.pattern, c.nocase, is_field)
                    if key not in lit_id:
                        pats = field_pats if is_field else stream_pats
                        lit_id[key] = len(pats)
                        pats.append(key)
                    pid = lit_id[key]
                    ci = len(c_sig)
                    users.setdefault((pid, is_field), []).append(ci)
                    c_sig.append(entry)
                    c_buf.append(buf)
                    c_pid.append(pid)
                    c_len.append(len(c.pattern))
                    c_off.append(c.offset)
                    c_dep.append(c.depth)
                    c_dist.append(c.distance)
                    c_within.append(c.within)
                    c_rel.append(1 if c.relative else 0)
        i32 = lambda x: np.asarray(x, np.int32)
        self.c = {"c_sig": i32(c_sig), "c_buf": np.asarray(c_buf, np.uint8), "c_pid": i32(c_pid),
                  "c_len": i32(c_len), "c_offset": i32(c_off), "c_depth": i32(c_dep),
                  "c_distance": i32(c_dist), "c_within": i32(c_within), "c_rel": np.asarray(c_rel, np.uint8)}
        self.s = {"s_first": i32(s_first), "s_n": i32(s_n), "s_proto": np.asarray(s_proto, np.uint8),
                  "s_app": i32(s_app), "s_flags": np.asarray(s_flags, np.uint8),
                  "s_src_a": np.asarray(s_src_a, np.int64), "s_dst_a": np.asarray(s_dst_a, np.int64),
                  "s_src_p": np.asarray(s_src_p, np.int64), "s_dst_p": np.asarray(s_dst_p, np.int64)}
        for name, vals in (("sa_lo", sa_lo), ("sa_hi", sa_hi), ("da_lo", da_lo), ("da_hi", da_hi),
                           ("sp_lo", sp_lo), ("sp_hi", sp_hi), ("dp_lo", dp_lo), ("dp_hi", dp_hi)):
            self.s[name] = np.asarray(vals, np.uint32)
        self.sig_of_entry = np.asarray(self._sig_of_entry, np.int32)
        self.users = {}
        for is_field, pats in ((False, stream_pats), (True, field_pats)):
            start = np.zeros(len(pats) + 1, np.int64)
            flat = []
            for pid in range(len(pats)):
                u = users.get((pid, is_field), [])
                flat += u
                start[pid + 1] = start[pid] + len(u)
            self.users[is_field] = (start, np.asarray(flat, np.int32))
        self.stream = _m.Literals([p for p, _, _ in stream_pats], [nc for _, nc, _ in stream_pats],
                                  2 * self.n_rows) if stream_pats else None
        self.fields = _m.Literals([p for p, _, _ in field_pats], [nc for _, nc, _ in field_pats], 0) \
            if field_pats else None
        # c_pid of field contents index the field database: split the users per database in verify
        self.n_stream_patterns = len(stream_pats)
        self.n_field_patterns = len(field_pats)

    def __len__(self) -> int:
        return len(self.signatures)

    @property
    def memory_bytes(self) -> int:
        """Hyperscan databases, stream states and the verification tables."""
        total = sum(a.nbytes for a in self.c.values()) + sum(a.nbytes for a in self.s.values())
        for lit in (self.stream, self.fields):
            if lit is not None:
                total += lit.database_bytes + lit.stream_bytes * lit.n_streams
        return total
