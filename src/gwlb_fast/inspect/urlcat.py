"""URL categories: custom categories (PAN-OS URL lists with wildcards) and an optional category database.

A URL is the HTTP ``Host`` + request path, a TLS SNI or a DNS query name (path ``/``).  Matching follows PAN-OS's
guidelines for URL category exception lists (PAN-OS 10.2 and later, "append ending token" on):

- entries are case-insensitive, ``http://`` / ``https://`` are dropped;
- the token separators are ``. / ? & = ; +``; a wildcard is a whole token: ``*`` stands for one or more tokens,
  ``^`` for exactly one (``example*.com`` and ``li^.example.com`` are refused, as is a ``^`` after the first ``/``);
- an entry without a ``/`` that does not end in ``*`` gets a trailing ``/``: ``example.com`` is ``example.com/``,
  which matches ``example.com`` and every path on it, but not ``www.example.com`` nor ``example.com.evil.net``;
- ``*.example.com`` (``*.example.com/``) needs at least one subdomain: ``www.example.com``, ``a.b.example.com``, not
  ``example.com``; ``^.example.com`` exactly one: ``www.example.com``, not ``a.b.example.com``;
- ``example.com/*`` needs a non-empty path; ``www.example.*`` any domain endings after ``www.example``.

An entry matches a URL when it matches the URL's beginning up to a token boundary (a wildcard in the entry's domain
part never reaches into the path).  The database (``url_database: categories.csv``, lines ``domain,category``)
categorises a domain and its subdomains; the most specific listed domain decides, as a URL database does.  A URL in
no category is in ``unknown`` (PAN-OS's name for uncategorised sites).  Ids: custom categories in definition order,
then the database's in order of appearance, then ``unknown``; a URL's *primary* category is its smallest id (custom
categories take precedence over the database).

Categorisation is batched: ``gwlb_fast._kernels.urlcat.categorize_urls`` runs over an arena of hosts and paths.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .._kernels import urlcat as _k
from ..errors import ConfigError

__all__ = ["UNKNOWN", "UrlCategories", "parse_entry"]

UNKNOWN = "unknown"
_SEPS = frozenset("./?&=;+")
_MAX_WILDCARDS = 16
_MAX_COLUMNS = 8


def parse_entry(entry: str) -> list[tuple[int, str, bool]]:
    """A URL-list entry as its elements ``(kind, text, in_host)`` (kinds: ``ELEM_LIT/SEP/CARET/STAR``).

    Raises
    ------
    ValueError
        Naming what is wrong with the entry.
    """
    if not isinstance(entry, str):
        raise TypeError(f"{entry!r} is not a string")
    t = entry.strip().lower()
    for scheme in ("http://", "https://"):
        t = t.removeprefix(scheme)
    if not t or t[0] in _SEPS:
        raise ValueError(f"bad entry {entry!r} (a domain, optionally with a path)")
    if any(c.isspace() for c in t):
        raise ValueError(f"bad entry {entry!r}: contains white space")
    if "/" not in t and not t.endswith("*"):
        t += "/"  # PAN-OS's ending token
    host = t.split("/", 1)[0]
    if ":" in host:
        raise ValueError(f"bad entry {entry!r}: ports are not part of URL entries")
    out: list[tuple[int, str, bool]] = []
    in_host = True
    i = 0
    wild = 0
    while i < len(t):
        c = t[i]
        if c in _SEPS:
            out.append((_k.ELEM_SEP, c, in_host))
            if c == "/":
                in_host = False
            i += 1
            continue
        j = i
        while j < len(t) and t[j] not in _SEPS:
            j += 1
        tok = t[i:j]
        if "*" in tok or "^" in tok:
            if tok not in ("*", "^"):
                raise ValueError(f"bad entry {entry!r}: a wildcard must be the only character of its token "
                                 f"({tok!r})")
            if tok == "^" and not in_host:
                raise ValueError(f"bad entry {entry!r}: '^' cannot be used after a '/'")
            wild += 1
            out.append((_k.ELEM_STAR if tok == "*" else _k.ELEM_CARET, "", in_host))
        else:
            out.append((_k.ELEM_LIT, tok, in_host))
        i = j
    if wild > _MAX_WILDCARDS:
        raise ValueError(f"bad entry {entry!r}: more than {_MAX_WILDCARDS} wildcards")
    return out


def _host_key(elems) -> tuple[int, str] | None:
    """``(key kind, host)`` when the entry is one of the fast shapes ``host/``, ``*.host/``, ``^.host/``."""
    if len(elems) < 2 or elems[-1][:2] != (_k.ELEM_SEP, "/"):
        return None
    body = elems[:-1]
    kind = _k.KEY_EXACT
    if body[0][0] in (_k.ELEM_STAR, _k.ELEM_CARET):
        if len(body) < 3 or body[1][:2] != (_k.ELEM_SEP, "."):
            return None
        kind = _k.KEY_STAR if body[0][0] == _k.ELEM_STAR else _k.KEY_CARET
        body = body[2:]
    if any(e[0] not in (_k.ELEM_LIT, _k.ELEM_SEP) or (e[0] == _k.ELEM_SEP and e[1] != ".") for e in body):
        return None
    return kind, "".join(e[1] for e in body)


class UrlCategories:
    """Custom URL categories and a category database, compiled for batched categorisation.

    Attributes
    ----------
    names : list[str]
        Category id -> name (custom, then database, then ``unknown``).
    index : dict[str, int]
        Name -> id.
    entries : dict[str, list[str]]
        The custom categories' entries as written.
    database : Path or None
    """

    def __init__(self, custom: Mapping[str, list[str]] | None = None, database=None, extra_names=()):
        self.entries: dict[str, list[str]] = {}
        self.names: list[str] = []
        self.index: dict[str, int] = {}
        self.database = Path(database) if database is not None else None
        keys: list[tuple[str, int, int]] = []  # (host, kind, category)
        progs: list[tuple[list, int]] = []
        for name, items in (custom or {}).items():
            cid = self._add_name(name)
            self.entries[name] = list(items)
            for item in items:
                try:
                    elems = parse_entry(item)
                except (TypeError, ValueError) as exc:
                    raise ConfigError(f"url_categories.{name}: {exc}") from None
                hk = _host_key(elems)
                if hk is not None:
                    keys.append((hk[1], hk[0], cid))
                else:
                    progs.append((elems, cid))
        if self.database is not None:
            keys.extend(self._read_database(self.database))
        for name in extra_names:
            self._add_name(name)
        self._add_name(UNKNOWN)
        self.unknown = self.index[UNKNOWN]
        self._compile(keys, progs)

    # ------------------------------------------------------------------ building
    @classmethod
    def from_config(cls, custom, database=None) -> UrlCategories:
        """From ``security_policy.url_categories`` (``{name: [entries]}``) and ``url_database`` (a path)."""
        if custom is None:
            custom = {}
        if not isinstance(custom, Mapping):
            raise ConfigError(f"url_categories: expected a mapping name -> [URL entries], got {type(custom).__name__}")
        clean: dict[str, list[str]] = {}
        for name, items in custom.items():
            if not isinstance(name, str) or not name.strip() or name.strip().lower() == "any":
                raise ConfigError(f"url_categories: bad category name {name!r}")
            if isinstance(items, str):
                items = [items]
            if not isinstance(items, list) or not items:
                raise ConfigError(f"url_categories.{name}: expected a non-empty list of URL entries")
            clean[name] = items
        return cls(clean, database)

    def _add_name(self, name: str) -> int:
        if name not in self.index:
            self.index[name] = len(self.names)
            self.names.append(name)
        return self.index[name]

    def _read_database(self, path: Path) -> list[tuple[str, int, int]]:
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"url_database: {path}: cannot read: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"url_database: {path}: not a text file") from None
        out = []
        for lineno, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = [p.strip() for p in line.split(",")]
            if lineno == 1 and [p.lower() for p in parts] == ["domain", "category"]:
                continue
            if len(parts) != 2 or not parts[0] or not parts[1]:
                raise ConfigError(f"url_database: {path}:{lineno}: expected 'domain,category', got {line!r}")
            domain = parts[0].lower().rstrip(".")
            if not domain or any(c in _SEPS - {"."} or c.isspace() or c in "*^:" for c in domain) or (
                    domain.startswith(".") or ".." in domain):
                raise ConfigError(f"url_database: {path}:{lineno}: bad domain {parts[0]!r}")
            if parts[1].lower() == "any":
                raise ConfigError(f"url_database: {path}:{lineno}: 'any' is not a category name")
            out.append((domain, _k.KEY_DB, self._add_name(parts[1])))
        return out

    def _compile(self, keys, progs) -> None:
        texts = [k[0].encode() for k in keys]
        off = np.zeros(len(texts), np.int64)
        if texts:
            off[1:] = np.cumsum([len(t) for t in texts])[:-1]
        blob = np.frombuffer(b"".join(texts), np.uint8) if texts else np.zeros(0, np.uint8)
        klen = np.array([len(t) for t in texts], np.int32)
        h = np.empty(len(texts), np.uint64)
        _k.hash_keys(np.ascontiguousarray(blob), off, klen.astype(np.int64), h)
        order = np.argsort(h, kind="stable")
        self._key_hash = np.ascontiguousarray(h[order])
        self._key_text = np.ascontiguousarray(blob) if len(blob) else np.zeros(1, np.uint8)
        self._key_off = np.ascontiguousarray(off[order])
        self._key_len = np.ascontiguousarray(klen[order])
        self._key_kind = np.array([keys[i][1] for i in order], np.uint8)
        self._key_cat = np.array([keys[i][2] for i in order], np.int32)
        kinds, in_host, poff, plen, text, start, pcat = [], [], [], [], [], [0], []
        pos = 0
        for elems, cid in progs:
            for kind, t, h_ in elems:
                b = t.encode()
                kinds.append(kind)
                in_host.append(h_)
                poff.append(pos)
                plen.append(len(b))
                text.append(b)
                pos += len(b)
            start.append(len(kinds))
            pcat.append(cid)
        self._pe_kind = np.array(kinds, np.uint8)
        self._pe_in_host = np.array(in_host, np.uint8)
        self._pe_off = np.array(poff, np.int64)
        self._pe_len = np.array(plen, np.int32)
        self._pe_text = np.frombuffer(b"".join(text) or b"\0", np.uint8).copy()
        self._prog_start = np.array(start, np.int64)
        self._prog_cat = np.array(pcat, np.int32)
        # Bloom bits of each program's literal tokens (the kernel skips URLs that lack one).
        lit = self._pe_kind == _k.ELEM_LIT
        lh = np.empty(int(lit.sum()), np.uint64)
        _k.hash_keys(self._pe_text, np.ascontiguousarray(self._pe_off[lit]),
                     np.ascontiguousarray(self._pe_len[lit].astype(np.int64)), lh)
        bits = np.zeros(len(self._pe_kind), np.uint64)
        bits[lit] = np.left_shift(np.uint64(1), lh & np.uint64(63))
        prog_of = np.repeat(np.arange(len(progs)), np.diff(self._prog_start))
        self._prog_mask = np.zeros(len(progs), np.uint64)
        np.bitwise_or.at(self._prog_mask, prog_of, bits)
        self.n_host_entries = len(keys)
        self.n_programs = len(progs)

    # ------------------------------------------------------------------ use
    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        return (f"UrlCategories({len(self.names)} categories, {self.n_host_entries} host entries, "
                f"{self.n_programs} wildcard programs)")

    def categorize(self, hosts, paths=None) -> tuple[np.ndarray, np.ndarray]:
        """Category ids of n URLs.

        Parameters
        ----------
        hosts : sequence of str / bytes / None, an arena ``(data uint8[*], off int64[n], length int64[n])``, or
                fixed-width fields ``(uint8[n, width], length[n])`` (``Inspector.field_view``)
            Hosts (HTTP Host, TLS SNI, DNS name); None or a negative length: no URL (categories -1).
        paths : same forms, optional
            Request paths (default ``/``).

        Returns
        -------
        primary : int32[n]
            Smallest matching id (``unknown`` when nothing matches), -1 where there is no URL.
        matches : int32[n, k]
            Every matching id, ascending, -1 after (k >= 1; at most 8 are kept, the smallest): the ``category``
            argument of ``Classifier.classify`` and ``Policy.url_action``.
        """
        hd, ho, hl = _arena(hosts, "hosts")
        n = ho.shape[0]
        if paths is None:
            pd, po, pl = np.zeros(1, np.uint8), np.zeros(n, np.int64), np.zeros(n, np.int64)
        else:
            pd, po, pl = _arena(paths, "paths")
            if po.shape[0] != n:
                raise ValueError(f"paths has {po.shape[0]} entries, expected {n} (one per host)")
        kmax = min(_MAX_COLUMNS, max(1, len(self.names)))
        out = np.empty((n, kmax), np.int32)
        count = np.empty(n, np.int32)
        flags = np.empty(n, np.uint8)
        _k.categorize_urls(hd, ho, hl, pd, po, pl, self._key_hash, self._key_text, self._key_off, self._key_len,
                           self._key_kind, self._key_cat, self._prog_start, self._prog_cat, self._prog_mask, self._pe_kind,
                           self._pe_in_host, self._pe_off, self._pe_len, self._pe_text, self.unknown, out, count,
                           flags)
        used = max(1, int(count.max())) if n else 1
        self.last_flags = flags
        return out[:, 0].copy(), np.ascontiguousarray(out[:, :used])


def _arena(value, what):
    """(data, off, length) from an arena tuple, fixed-width fields or a sequence of str/bytes/None."""
    if isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, np.ndarray) for v in value):
        mat, length = value
        if mat.dtype != np.uint8 or mat.ndim != 2 or length.ndim != 1 or length.shape[0] != mat.shape[0]:
            raise ValueError(f"{what}: expected (uint8[n, width], lengths[n]), got {mat.dtype}{mat.shape} and "
                             f"{length.dtype}{length.shape}")
        length = length.astype(np.int64)
        if length.size and length.max() > mat.shape[1]:
            raise ValueError(f"{what}: a length exceeds the field width {mat.shape[1]}")
        data = np.ascontiguousarray(mat).reshape(-1)
        off = np.arange(mat.shape[0], dtype=np.int64) * mat.shape[1]
        return (data if data.size else np.zeros(1, np.uint8)), off, length
    if isinstance(value, tuple) and len(value) == 3 and all(isinstance(v, np.ndarray) for v in value):
        data, off, length = value
        if data.dtype != np.uint8 or data.ndim != 1:
            raise ValueError(f"{what}: data must be 1-D uint8, got {data.dtype} with shape {data.shape}")
        data = np.ascontiguousarray(data) if data.size else np.zeros(1, np.uint8)
        return data, np.ascontiguousarray(off, np.int64), np.ascontiguousarray(length, np.int64)
    items = list(value)
    enc = []
    for v in items:
        if v is None:
            enc.append(None)
        elif isinstance(v, bytes):
            enc.append(v)
        elif isinstance(v, str):
            enc.append(v.encode("utf-8", "surrogateescape"))
        elif isinstance(v, os.PathLike):
            raise ValueError(f"{what}: {v!r} is not a host")
        else:
            raise ValueError(f"{what}: {v!r} is not str, bytes or None")
    lens = np.array([-1 if b is None else len(b) for b in enc], np.int64)
    off = np.zeros(len(enc), np.int64)
    if len(enc):
        off[1:] = np.cumsum(np.maximum(lens, 0))[:-1]
    blob = b"".join(b for b in enc if b)
    data = np.frombuffer(blob, np.uint8).copy() if blob else np.zeros(1, np.uint8)
    return data, off, lens
