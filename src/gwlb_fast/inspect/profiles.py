"""Security profiles and profile groups: what a rule's ``profile:`` does with threats and URLs.

``security_policy.profiles`` maps a name to one of:

- ``{threat: {action: A, severity: {critical: A1, high: A2, ...}}}``: a vulnerability / anti-spyware style profile;
  ``A`` is ``default`` (each signature's own action: alert, drop, or reject = reset the sender of the matching
  packet, taken as the client), ``allow`` (no action, no log), ``alert``, ``drop``, ``reset-client``,
  ``reset-server``, ``reset-both`` or ``block-ip``; ``severity`` (optional) gives other actions to signatures of those severities (``critical``,
  ``high``, ``medium``, ``low``, ``informational``), as a PAN-OS profile's rules by severity do; ``block_ip``
  (optional) ``{track_by: source | source-and-destination, duration: SECONDS}`` says what block-ip blocks and for
  how long (1 to 3600 s as on PAN-OS; here source and 300 s when not given);
- ``{url_filtering: {ACTION: [categories], ...}}`` with ACTION one of ``allow``, ``alert``, ``continue``,
  ``override``, ``block``; ``any`` in a list is the action of every category not listed (default: allow);
- ``{group: [profile names]}``: a profile group.

A rule's profiles (groups flattened) combine by severity, the most severe wins: for URLs
``block > override > continue > alert > allow`` (PAN-OS's order, also across a URL's several categories), for
threats ``block-ip > drop > reset-both > reset-server > reset-client > alert``.  A rule without a URL-filtering
(threat) profile gives ``UrlAction.NONE`` (``ThreatAction.NONE``): the session is not URL-filtered (not inspected
for threats), as on PAN-OS.
"""
from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum

import numpy as np

from ..errors import ConfigError

__all__ = ["BLOCK_IP_SECONDS", "SEVERITY_UNKNOWN", "Profiles", "Severity", "SignatureAction", "ThreatAction",
           "UrlAction"]

#: block-ip duration when a profile does not give one (seconds)
BLOCK_IP_SECONDS = 300


class UrlAction(IntEnum):
    """URL-filtering action, in increasing severity."""

    NONE = 0
    ALLOW = 1
    ALERT = 2
    CONTINUE = 3
    OVERRIDE = 4
    BLOCK = 5


class ThreatAction(IntEnum):
    """Threat-prevention action, in increasing severity."""

    NONE = 0
    ALERT = 1
    RESET_CLIENT = 2
    RESET_SERVER = 3
    RESET_BOTH = 4
    DROP = 5
    BLOCK_IP = 6


class Severity(IntEnum):
    """PAN-OS threat severity (the threat log's ``severity``)."""

    INFORMATIONAL = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4


#: ``severity`` value meaning "not known": the profile's ``action`` applies.
SEVERITY_UNKNOWN = len(Severity)


class SignatureAction(IntEnum):
    """A signature's own action (Suricata rule syntax)."""

    ALERT = 0
    DROP = 1
    REJECT = 2


_DEFAULT_FOR_SIGNATURE = {SignatureAction.ALERT: ThreatAction.ALERT, SignatureAction.DROP: ThreatAction.DROP,
                          SignatureAction.REJECT: ThreatAction.RESET_CLIENT}
_URL_BY_NAME = {a.name.lower(): a for a in UrlAction if a is not UrlAction.NONE}
_THREAT_BY_NAME = {a.name.lower().replace("_", "-"): a for a in ThreatAction if a is not ThreatAction.NONE}
_THREAT_BY_NAME["allow"] = ThreatAction.NONE  # PAN-OS's allow: no action, no log


class Profile:
    """One profile: ``kind`` is ``threat``, ``url_filtering`` or ``group``."""

    def __init__(self, name, kind, action=None, url_table=None, members=(), by_severity=None, block_ip=None):
        self.name = name
        #: threat: (track by source and destination?, duration in seconds) of its block-ip action
        self.block_ip = block_ip if block_ip is not None else (False, BLOCK_IP_SECONDS)
        self.kind = kind
        self.action = action            # threat: ThreatAction, or None for default
        #: threat: action per Severity (None = default), then the one for an unknown severity
        self.by_severity = list(by_severity) if by_severity is not None else [action] * (SEVERITY_UNKNOWN + 1)
        self.url_table = url_table      # url_filtering: uint8[n_categories]
        self.members = tuple(members)   # group

    def __repr__(self) -> str:
        return f"Profile({self.name!r}, {self.kind})"


class Profiles:
    """Named profiles and groups; after :meth:`bind`, per-rule action tables.

    ``url_action`` and ``threat_action`` take the firewall's rule column: ``0 .. n_rules - 1`` for rules,
    ``n_rules`` (the default action) or -1 for no rule, both without profiles.
    """

    def __init__(self, profiles: Mapping[str, Profile] | None = None, n_categories: int = 0):
        self.by_name: dict[str, Profile] = dict(profiles or {})
        self.n_categories = n_categories
        self.bind([])

    @property
    def names(self) -> list[str]:
        return list(self.by_name)

    def __contains__(self, name) -> bool:
        return name in self.by_name

    def __len__(self) -> int:
        return len(self.by_name)

    def __repr__(self) -> str:
        return f"Profiles({', '.join(f'{p.name}:{p.kind}' for p in self.by_name.values())})"

    @classmethod
    def from_config(cls, raw, urlcats) -> Profiles:
        """From ``security_policy.profiles``; errors are ConfigError messages starting with ``.NAME...: ``."""
        if raw is None:
            return cls({}, len(urlcats.names))
        if not isinstance(raw, Mapping):
            raise ConfigError(f": expected a mapping name -> profile, got {type(raw).__name__}")
        out: dict[str, Profile] = {}
        for name, body in raw.items():
            if not isinstance(name, str) or not name.strip() or name.lower() == "any":
                raise ConfigError(f": bad profile name {name!r}")
            if not isinstance(body, Mapping) or len(body) != 1 or next(iter(body)) not in (
                    "threat", "url_filtering", "group"):
                raise ConfigError(f".{name}: expected one of {{threat: ...}}, {{url_filtering: ...}}, {{group: [...]}}")
            kind, spec = next(iter(body.items()))
            where = f".{name}.{kind}"
            if kind == "threat":
                out[name] = threat_profile(name, spec, where)
            elif kind == "url_filtering":
                out[name] = url_profile(name, spec, urlcats, where)
            else:
                members = [spec] if isinstance(spec, str) else spec
                if not isinstance(members, list) or not members or not all(isinstance(m, str) for m in members):
                    raise ConfigError(f"{where}: expected a list of profile names")
                out[name] = Profile(name, "group", members=members)
        for p in out.values():
            for m in p.members:
                if m not in out:
                    raise ConfigError(f".{p.name}.group: unknown profile {m!r}")
                if out[m].kind == "group":
                    raise ConfigError(f".{p.name}.group: {m!r} is a group (groups hold profiles, not groups)")
        return cls(out, len(urlcats.names))

    # ------------------------------------------------------------------ per rule
    def _flatten(self, names):
        seen: dict[str, Profile] = {}
        for n in names:
            p = self.by_name[n]
            for q in ([self.by_name[m] for m in p.members] if p.kind == "group" else [p]):
                seen[q.name] = q
        return list(seen.values())

    def bind(self, rule_profiles) -> None:
        """Build the action tables of rules ``0 .. len(rule_profiles) - 1`` (each a tuple of profile names)."""
        nc = self.n_categories
        n = len(rule_profiles)
        self.n_rules = n
        url_combo: dict[tuple, int] = {(): 0}
        thr_combo: dict[tuple, int] = {(): 0}
        url_rows = [np.zeros(nc + 1, np.uint8)]
        thr_rows = [np.zeros((SEVERITY_UNKNOWN + 1, len(SignatureAction)), np.uint8)]
        self._rule_url = np.zeros(n + 1, np.int32)
        self._rule_thr = np.zeros(n + 1, np.int32)
        # per rule: block-ip by source and destination (else by source), its duration in ns (the longest of the
        # rule's threat profiles; by source when any of them says so)
        self._rule_block_pair = np.zeros(n + 1, bool)
        self._rule_block_ns = np.zeros(n + 1, np.int64)
        #: Per rule: names of the URL-filtering / threat profiles in force (groups flattened).
        self.rule_url_profiles: list[tuple[str, ...]] = []
        self.rule_threat_profiles: list[tuple[str, ...]] = []
        for i, names in enumerate(rule_profiles):
            flat = self._flatten(names)
            up = tuple(p.name for p in flat if p.kind == "url_filtering")
            tp = tuple(p.name for p in flat if p.kind == "threat")
            self.rule_url_profiles.append(up)
            self.rule_threat_profiles.append(tp)
            if up not in url_combo:
                row = np.zeros(nc + 1, np.uint8)
                for name in up:
                    np.maximum(row[:nc], self.by_name[name].url_table, out=row[:nc])
                url_combo[up] = len(url_rows)
                url_rows.append(row)
            if tp not in thr_combo:
                row = np.zeros((SEVERITY_UNKNOWN + 1, len(SignatureAction)), np.uint8)
                for name in tp:
                    for sev, act in enumerate(self.by_name[name].by_severity):
                        for s in SignatureAction:
                            a = _DEFAULT_FOR_SIGNATURE[s] if act is None else act
                            row[sev, s] = max(row[sev, s], int(a))
                thr_combo[tp] = len(thr_rows)
                thr_rows.append(row)
            self._rule_url[i] = url_combo[up]
            self._rule_thr[i] = thr_combo[tp]
            blockers = [self.by_name[name].block_ip for name in tp
                        if ThreatAction.BLOCK_IP in self.by_name[name].by_severity]
            if blockers:
                self._rule_block_pair[i] = all(pair for pair, _ in blockers)
                self._rule_block_ns[i] = max(d for _, d in blockers) * 1_000_000_000
        self._url_tab = np.ascontiguousarray(np.stack(url_rows))
        self._thr_tab = np.ascontiguousarray(np.stack(thr_rows))

    def block_ip(self, rule_index) -> tuple[np.ndarray, np.ndarray]:
        """(by source and destination? bool[n], duration ns int64[n]) of the block-ip action of each rule."""
        return self._rows(rule_index, self._rule_block_pair), self._rows(rule_index, self._rule_block_ns)

    def _rows(self, rule_index, table) -> np.ndarray:
        r = np.asarray(rule_index)
        if r.dtype.kind not in "iu":
            raise ValueError(f"rule_index must be an integer array, got {r.dtype}")
        r = r.astype(np.int64)
        if r.size and (r.min() < -1 or r.max() > self.n_rules):
            raise ValueError(f"rule_index out of range -1..{self.n_rules}")
        return table[np.where(r < 0, self.n_rules, r)]

    def url_action(self, rule_index, category_ids) -> np.ndarray:
        """``UrlAction`` (uint8[n]) of each session: the most severe over its rule's URL-filtering profiles and its
        URL's categories.

        Parameters
        ----------
        rule_index : integer array [n]
            Rule of each session (-1 or ``n_rules``: none).
        category_ids : integer array [n] or [n, k]
            The URL's category ids (``UrlCategories.categorize``'s matches), -1 = none; a row of -1 (no URL) gives
            ``NONE``.
        """
        combo = self._rows(rule_index, self._rule_url)
        c = np.asarray(category_ids)
        if c.ndim == 1:
            c = c[:, None]
        if c.ndim != 2 or c.shape[0] != combo.shape[0] or c.dtype.kind not in "iu":
            raise ValueError(f"category_ids must be an integer array [n] or [n, k] with n = {combo.shape[0]}")
        c = c.astype(np.int64)
        if c.size and (c.min() < -1 or c.max() >= self.n_categories):
            raise ValueError(f"category ids out of range -1..{self.n_categories - 1}")
        c = np.where(c < 0, self.n_categories, c)
        out = self._url_tab[combo[:, None], c].max(axis=1) if c.shape[1] else np.zeros(c.shape[0], np.uint8)
        return out.astype(np.uint8)

    def threat_action(self, rule_index, signature_action, severity=None) -> np.ndarray:
        """``ThreatAction`` (uint8[n]) of each signature match: the most severe over the rule's threat profiles
        (``default`` = the signature's own action); ``NONE`` when the rule has no threat profile.

        ``severity`` (``Severity`` codes, ``SEVERITY_UNKNOWN`` allowed; None = unknown for all) picks a profile's
        per-severity action."""
        combo = self._rows(rule_index, self._rule_thr)
        s = np.asarray(signature_action)
        if s.shape != combo.shape or s.dtype.kind not in "iu":
            raise ValueError(f"signature_action must be an integer array of length {combo.shape[0]}")
        if s.size and (s.min() < 0 or s.max() >= len(SignatureAction)):
            raise ValueError("signature_action must hold SignatureAction codes (0 alert, 1 drop, 2 reject)")
        if severity is None:
            sev = np.full(combo.shape, SEVERITY_UNKNOWN, np.int64)
        else:
            sev = np.asarray(severity)
            if sev.shape != combo.shape or sev.dtype.kind not in "iu":
                raise ValueError(f"severity must be an integer array of length {combo.shape[0]}")
            if sev.size and (sev.min() < 0 or sev.max() > SEVERITY_UNKNOWN):
                raise ValueError(f"severity must hold Severity codes 0..{SEVERITY_UNKNOWN}")
            sev = sev.astype(np.int64)
        return self._thr_tab[combo, sev, s.astype(np.int64)].astype(np.uint8)


def _threat_act(value, where):
    act = str(value).strip().lower()
    if act == "default":
        return None
    if act not in _THREAT_BY_NAME:
        raise ConfigError(f"{where}: unknown action {value!r} (default, {', '.join(_THREAT_BY_NAME)})")
    return _THREAT_BY_NAME[act]


def threat_profile(name, spec, where) -> Profile:
    if not isinstance(spec, Mapping) or set(spec) - {"action", "severity", "block_ip"}:
        raise ConfigError(f"{where}: expected {{action: default|{'|'.join(_THREAT_BY_NAME)}, severity: {{...}}, "
                          "block_ip: {track_by: source|source-and-destination, duration: SECONDS}}")
    base = _threat_act(spec.get("action", "default"), f"{where}.action")
    by_sev = [base] * (SEVERITY_UNKNOWN + 1)
    sev = spec.get("severity") or {}
    if not isinstance(sev, Mapping):
        raise ConfigError(f"{where}.severity: expected a mapping severity -> action")
    names = {s.name.lower(): s for s in Severity}
    for k, v in sev.items():
        if str(k).lower() not in names:
            raise ConfigError(f"{where}.severity.{k}: unknown severity (one of {', '.join(names)})")
        by_sev[names[str(k).lower()]] = _threat_act(v, f"{where}.severity.{k}")
    return Profile(name, "threat", action=base, by_severity=by_sev,
                   block_ip=_block_ip(spec.get("block_ip"), f"{where}.block_ip"))


def _block_ip(spec, where) -> tuple[bool, int]:
    """(track by source and destination?, duration s) of ``block_ip: {track_by, duration}``."""
    if spec is None:
        return False, BLOCK_IP_SECONDS
    if not isinstance(spec, Mapping) or set(spec) - {"track_by", "duration"}:
        raise ConfigError(f"{where}: expected {{track_by: source|source-and-destination, duration: SECONDS}}")
    track = str(spec.get("track_by", "source")).strip().lower()
    if track not in ("source", "source-and-destination"):
        raise ConfigError(f"{where}.track_by: expected source or source-and-destination, got {spec['track_by']!r}")
    dur = spec.get("duration", BLOCK_IP_SECONDS)
    if isinstance(dur, bool) or not isinstance(dur, int) or not 1 <= dur <= 3600:
        raise ConfigError(f"{where}.duration: expected whole seconds from 1 to 3600, got {dur!r}")
    return track == "source-and-destination", dur


def url_profile(name, spec, urlcats, where) -> Profile:
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where}: expected a mapping action -> [categories]")
    nc = len(urlcats.names)
    table = np.zeros(nc, np.uint8)
    listed = np.zeros(nc, bool)
    any_action = UrlAction.ALLOW
    seen: dict[str, str] = {}
    for act, cats in spec.items():
        a = _URL_BY_NAME.get(str(act).lower())
        if a is None:
            raise ConfigError(f"{where}.{act}: unknown action (one of {', '.join(_URL_BY_NAME)})")
        cats = [cats] if isinstance(cats, str) else cats
        if not isinstance(cats, list):
            raise ConfigError(f"{where}.{act}: expected a list of URL categories")
        for c in cats:
            if not isinstance(c, str):
                raise ConfigError(f"{where}.{act}: bad category {c!r}")
            if c in seen:
                raise ConfigError(f"{where}.{act}: category {c!r} already has action {seen[c]!r}")
            seen[c] = str(act)
            if c.lower() == "any":
                any_action = a
                continue
            if c not in urlcats.index:
                raise ConfigError(f"{where}.{act}: unknown URL category {c!r} (categories: "
                                  f"{', '.join(urlcats.names)})")
            table[urlcats.index[c]] = a
            listed[urlcats.index[c]] = True
    table[~listed] = any_action
    return Profile(name, "url_filtering", url_table=table)
