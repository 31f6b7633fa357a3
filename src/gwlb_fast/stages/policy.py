"""Security policy: rules from YAML (DESIGN.md section 6) or ClassBench files, compiled to a first-match classifier.

A rule matches a packet when every field matches: ``source`` / ``destination`` (CIDR lists or ``any``), ``protocol``
(tcp, udp, icmp, a number, or any), ``port`` / ``source_port`` (numbers and ``lo-hi`` ranges), ``from`` / ``to``
(zones, each a list of endpoint names).  The first matching rule wins; with no match the policy's ``default`` action
applies (deny).  A rule whose fields hold lists is the union of the cross product of its values: it expands into
several *boxes* (one per source range x destination range x source-port range x port range x protocol range x zone
pair) that all map to the rule's index.  :meth:`Policy.compile` builds the decision tree of
``gwlb_fast._kernels.classify`` over these boxes.
"""
from __future__ import annotations

import ipaddress
import itertools
import os
import re
import time
from collections.abc import Mapping
from enum import IntEnum
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .._kernels.classify import DOMAIN_HI, F_APP, F_APPDEF, F_CAT, NDIMS, ZONE_UNKNOWN, ClassifierTree
from ..errors import ConfigError
from ..inspect.applications import APP_ID, APP_PENDING, APPLICATIONS, DEFAULT_PORTS

__all__ = ["ZONE_UNKNOWN", "Action", "Classifier", "Policy", "Rule", "generate_trace", "partition_boxes"]


class Action(IntEnum):
    """What the firewall does with the first packet of a session that a rule (or the default) selects."""

    ALLOW = 0
    DENY = 1
    DROP = 2
    RESET_CLIENT = 3
    RESET_SERVER = 4
    RESET_BOTH = 5


_ACTION_BY_NAME = {a.name.lower().replace("_", "-"): a for a in Action}
_PROTO_BY_NAME = {"tcp": 6, "udp": 17, "icmp": 1}
_RULE_KEYS = {"name", "description", "source", "destination", "protocol", "port", "source_port", "from", "to",
              "action", "application", "service", "category", "profile"}
_POLICY_KEYS = {"zones", "rules", "default", "panos", "tcp_reject_non_syn", "signatures", "url_categories",
                "url_database", "profiles", "vars"}
_ANY32 = ((0, 0xFFFFFFFF),)
_ANY16 = ((0, 0xFFFF),)
_ANY8 = ((0, 0xFF),)
MAX_ZONES = ZONE_UNKNOWN  # zone indices 0..254; 255 is "unknown"

Range = tuple[int, int]


class Rule(NamedTuple):
    """One rule as inclusive ranges per field (the union of their cross product is what it matches)."""

    name: str
    src: tuple[Range, ...]
    dst: tuple[Range, ...]
    sport: tuple[Range, ...]
    dport: tuple[Range, ...]
    proto: tuple[Range, ...]
    zone_from: tuple[Range, ...]
    zone_to: tuple[Range, ...]
    action: Action
    #: Application ids the rule accepts (``gwlb_fast.inspect.applications``); None = any.
    application: tuple[int, ...] | None = None
    #: ``any``, ``application-default`` or ``ports`` (then ``l4`` holds them).
    service: str = "any"
    #: (protocol range, destination port range) pairs that replace the cross product ``proto x dport`` in the boxes:
    #: a ``service`` port list, or the default ports of the rule's applications for ``application-default``.
    l4: tuple[tuple[Range, Range], ...] | None = None
    #: URL category ids (``Policy.url_categories.names``); None = any.
    category: tuple[int, ...] | None = None
    #: Names of the security profiles / profile groups attached (``Policy.profiles``).
    profile: tuple[str, ...] = ()

    def fields(self) -> tuple[tuple[Range, ...], ...]:
        """The seven range lists in the classifier's dimension order (``proto`` / ``dport`` ignore ``l4``)."""
        return (self.src, self.dst, self.sport, self.dport, self.proto, self.zone_from, self.zone_to)

    def l4_pairs(self) -> tuple[tuple[Range, Range], ...]:
        """The (protocol range, destination port range) pairs the rule matches: ``proto x dport``, or ``l4`` cut
        to the rule's protocols."""
        if self.l4 is None:
            return tuple(itertools.product(self.proto, self.dport))
        out = []
        for (plo, phi), dr in self.l4:
            for qlo, qhi in self.proto:
                lo, hi = max(plo, qlo), min(phi, qhi)
                if lo <= hi:
                    out.append(((lo, hi), dr))
        return tuple(out)

    def constrained(self) -> bool:
        """True when the rule has a content match (application, application-default service, URL category)."""
        return self.application is not None or self.service == "application-default" or self.category is not None

    def n_boxes(self) -> int:
        return len(self.src) * len(self.dst) * len(self.sport) * len(self.l4_pairs()) * len(self.zone_from) * len(
            self.zone_to)


class _RuleError(Exception):
    def __init__(self, field, problem):
        self.field = field
        self.problem = problem


def _as_list(value):
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _merge(ranges) -> tuple[Range, ...]:
    """Sorted, coalesced ranges (fewer boxes, same set)."""
    out: list[list[int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return tuple((lo, hi) for lo, hi in out)


#: an IPv4 address or CIDR in dotted-quad form, decimal octets without leading zeros (as ipaddress accepts them)
_OCTET = r"(0|[1-9][0-9]{0,2})"
_CIDR = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}(?:/([0-9]{{1,2}}))?\Z")


def _parse_addr(field, value) -> tuple[Range, ...]:
    if value is None:
        return _ANY32
    items = _as_list(value)
    if not items:
        raise _RuleError(field, "empty list (use 'any' to match every address)")
    ranges = []
    for item in items:
        if not isinstance(item, str):
            raise _RuleError(field, f"{item!r} is not a CIDR string")
        text = item.strip()
        if text.lower() == "any":
            return _ANY32
        fast = _CIDR.match(text)
        if fast is not None:
            # the common dotted-quad form, parsed here as ipaddress.ip_network(strict=False) would (1,000 rules:
            # a tenth of the start-up); anything else, errors included, goes through ipaddress below
            *octets, plen = fast.groups()
            a, b, c, d = map(int, octets)
            plen = 32 if plen is None else int(plen)
            if max(a, b, c, d) <= 255 and plen <= 32:
                ip = a << 24 | b << 16 | c << 8 | d
                host = (1 << (32 - plen)) - 1
                ranges.append((ip & ~host, ip | host))
                continue
        try:
            if "-" in text and "/" not in text:
                a, b = (ipaddress.IPv4Address(p.strip()) for p in text.split("-", 1))
                if int(a) > int(b):
                    raise _RuleError(field, f"address range {item!r} has its start after its end")
                ranges.append((int(a), int(b)))
            else:
                net = ipaddress.ip_network(text, strict=False)
                if net.version != 4:
                    raise _RuleError(field, f"{item!r} is not IPv4 (only IPv4 is supported)")
                ranges.append((int(net.network_address), int(net.broadcast_address)))
        except ValueError as exc:
            raise _RuleError(field, f"bad address {item!r}: {exc}") from None
    return _merge(ranges)


def _parse_ports(field, value) -> tuple[Range, ...]:
    if value is None:
        return _ANY16
    items = _as_list(value)
    if not items:
        raise _RuleError(field, "empty list (leave the field out to match every port)")
    ranges = []
    for item in items:
        if isinstance(item, bool):
            raise _RuleError(field, f"{item!r} is not a port")
        if isinstance(item, int):
            lo = hi = item
        elif isinstance(item, str):
            text = item.strip()
            if text.lower() == "any":
                return _ANY16
            parts = text.split("-")
            try:
                if len(parts) == 1:
                    lo = hi = int(parts[0])
                elif len(parts) == 2:
                    lo, hi = int(parts[0]), int(parts[1])
                else:
                    raise ValueError
            except ValueError:
                raise _RuleError(field, f"bad port {item!r} (a number 0-65535 or a 'lo-hi' range)") from None
        else:
            raise _RuleError(field, f"bad port {item!r} (a number 0-65535 or a 'lo-hi' range)")
        if not (0 <= lo <= 65535 and 0 <= hi <= 65535):
            raise _RuleError(field, f"port {item!r} out of range 0-65535")
        if lo > hi:
            raise _RuleError(field, f"port range {item!r} has its start after its end")
        ranges.append((lo, hi))
    return _merge(ranges)


def _parse_proto(value) -> tuple[Range, ...]:
    if value is None:
        return _ANY8
    items = _as_list(value)
    if not items:
        raise _RuleError("protocol", "empty list")
    ranges = []
    for item in items:
        if isinstance(item, bool):
            raise _RuleError("protocol", f"{item!r} is not a protocol")
        if isinstance(item, str):
            text = item.strip().lower()
            if text == "any":
                return _ANY8
            if text in _PROTO_BY_NAME:
                num = _PROTO_BY_NAME[text]
            elif text.isdigit():
                num = int(text)
            else:
                raise _RuleError("protocol", f"unknown protocol {item!r} (tcp, udp, icmp, a number 0-255, or any)")
        elif isinstance(item, int):
            num = item
        else:
            raise _RuleError("protocol", f"unknown protocol {item!r} (tcp, udp, icmp, a number 0-255, or any)")
        if not 0 <= num <= 255:
            raise _RuleError("protocol", f"protocol number {num} out of range 0-255")
        ranges.append((num, num))
    return _merge(ranges)


def _parse_zones(field, value, zone_index) -> tuple[Range, ...]:
    if value is None:
        return _ANY8
    items = _as_list(value)
    if not items:
        raise _RuleError(field, "empty list (leave the field out to match every zone)")
    ranges = []
    for item in items:
        if isinstance(item, str) and item.strip().lower() == "any":
            return _ANY8
        if not isinstance(item, str) or item not in zone_index:
            known = ", ".join(sorted(zone_index)) or "none defined"
            raise _RuleError(field, f"unknown zone {item!r} (zones: {known})")
        z = zone_index[item]
        ranges.append((z, z))
    return _merge(ranges)


def _parse_action(field, value) -> Action:
    if not isinstance(value, str) or value.strip().lower() not in _ACTION_BY_NAME:
        raise _RuleError(field, f"unknown action {value!r} (one of {', '.join(_ACTION_BY_NAME)})")
    return _ACTION_BY_NAME[value.strip().lower()]


def _names(field, value) -> list[str] | None:
    """A name list (``[a, b]`` or ``a``); None for ``any`` / absent."""
    if value is None:
        return None
    items = _as_list(value)
    if not items:
        raise _RuleError(field, "empty list (leave the field out, or 'any', to match everything)")
    out = []
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise _RuleError(field, f"bad name {item!r}")
        if item.strip().lower() == "any":
            return None
        out.append(item.strip())
    return out


def _parse_application(value) -> tuple[int, ...] | None:
    names = _names("application", value)
    if names is None:
        return None
    ids = set()
    for name in names:
        if name not in APP_ID or APP_ID[name] == APP_PENDING:
            raise _RuleError("application", f"unknown application {name!r} (one of "
                                            f"{', '.join(a for a in APPLICATIONS if APP_ID[a] != APP_PENDING)})")
        ids.add(APP_ID[name])
    return tuple(sorted(ids))


def _app_default_pairs(apps) -> tuple[tuple[Range, Range], ...]:
    pairs = set()
    for a in apps:
        for proto, port in DEFAULT_PORTS.get(APPLICATIONS[a], ()):
            pairs.add(((proto, proto), (port, port)))
    return tuple(sorted(pairs))


def _parse_service(value, application):
    """``(service, l4)`` from a rule's ``service:`` (any, application-default, or ports: 80, "8000-8080", "tcp/80",
    "udp/53", a bare port meaning TCP and UDP)."""
    if value is None:
        return "any", None
    if isinstance(value, str) and value.strip().lower() in ("any", "application-default"):
        kind = value.strip().lower()
        if kind == "any":
            return "any", None
        return kind, (_app_default_pairs(application) if application is not None else None)
    pairs = []
    for item in _as_list(value):
        text = str(item).strip().lower() if isinstance(item, (str, int)) and not isinstance(item, bool) else None
        if text is None:
            raise _RuleError("service", f"bad service {item!r} (any, application-default, or ports: 80, "
                                        "'8000-8080', 'tcp/80', 'udp/53')")
        if text in ("any", "application-default"):
            raise _RuleError("service", f"{text!r} cannot be mixed with ports")
        proto, sep, ports = text.partition("/")
        if not sep:
            protos, ports = ((6, 6), (17, 17)), proto
        elif proto in ("tcp", "udp"):
            protos = ((_PROTO_BY_NAME[proto],) * 2,)
        else:
            raise _RuleError("service", f"bad service {item!r} (protocol tcp or udp before '/')")
        for dr in _parse_ports("service", ports):
            for pr in protos:
                pairs.append((pr, dr))
    if not pairs:
        raise _RuleError("service", "empty list (any, application-default, or ports)")
    return "ports", tuple(sorted(set(pairs)))


class _Names:
    """What rule fields may refer to: zones, URL categories, profiles."""

    def __init__(self, zone_index, category_index=None, profiles=()):
        self.zone_index = zone_index
        self.category_index = category_index or {}
        self.profiles = set(profiles)


def _parse_category(value, names: _Names) -> tuple[int, ...] | None:
    items = _names("category", value)
    if items is None:
        return None
    ids = set()
    for name in items:
        if name not in names.category_index:
            known = ", ".join(sorted(names.category_index)) or "none defined"
            raise _RuleError("category", f"unknown URL category {name!r} (categories: {known})")
        ids.add(names.category_index[name])
    return tuple(sorted(ids))


def _parse_profile(value, names: _Names) -> tuple[str, ...]:
    items = _names("profile", value)
    if items is None:
        return ()
    for name in items:
        if name not in names.profiles:
            known = ", ".join(sorted(names.profiles)) or "none defined"
            raise _RuleError("profile", f"unknown security profile or group {name!r} (profiles: {known})")
    return tuple(dict.fromkeys(items))


def _parse_rule(i, raw, zone_index) -> Rule:
    if not isinstance(raw, Mapping):
        raise _RuleError("rule", f"expected a mapping, got {type(raw).__name__}")
    unknown = set(raw) - _RULE_KEYS
    if unknown:
        raise _RuleError(min(map(str, unknown)), f"unknown key (allowed: {', '.join(sorted(_RULE_KEYS))})")
    name = raw.get("name", f"rule-{i}")
    if not isinstance(name, str) or not name:
        raise _RuleError("name", f"bad name {name!r}")
    if "action" not in raw:
        raise _RuleError("action", "missing (one of " + ", ".join(_ACTION_BY_NAME) + ")")
    names = zone_index if isinstance(zone_index, _Names) else _Names(zone_index)
    proto = _parse_proto(raw.get("protocol"))
    sport = _parse_ports("source_port", raw.get("source_port"))
    dport = _parse_ports("port", raw.get("port"))
    if proto == ((1, 1),) and (sport != _ANY16 or dport != _ANY16):
        raise _RuleError("port" if dport != _ANY16 else "source_port", "ports need protocol tcp, udp or a number")
    application = _parse_application(raw.get("application"))
    service, l4 = _parse_service(raw.get("service"), application)
    if service != "any" and dport != _ANY16:
        raise _RuleError("service", "give the destination ports either as 'port' or as 'service', not both")
    return Rule(
        name=name,
        src=_parse_addr("source", raw.get("source")),
        dst=_parse_addr("destination", raw.get("destination")),
        sport=sport,
        dport=dport,
        proto=proto,
        zone_from=_parse_zones("from", raw.get("from"), names.zone_index),
        zone_to=_parse_zones("to", raw.get("to"), names.zone_index),
        action=_parse_action("action", raw.get("action")),
        application=application,
        service=service,
        l4=l4,
        category=_parse_category(raw.get("category"), names),
        profile=_parse_profile(raw.get("profile"), names),
    )


def _signature_vars(raw, src_name, key, home_net) -> dict[str, str]:
    """``security_policy.vars`` checked (``inspect.signatures.signature_vars``); errors name the file, the line of
    the variable when the file can say it, and its key path."""
    from ..inspect.signatures import signature_vars

    def where_of(name):
        line = _yaml_line(src_name, [key, "vars", name]) or _yaml_line(src_name, ["vars", name])
        return f"{src_name}:{line}: {key}.vars.{name}" if line else f"{src_name}: {key}.vars.{name}"

    try:
        return signature_vars(raw, f"{src_name}: {key}.vars", home_net, where_of)
    except ConfigError as exc:
        raise ConfigError(str(exc)) from None


def _yaml_line(path, keys) -> int | None:
    """1-based line of the mapping key at ``keys`` (a key path) in a YAML file, None when it is not there."""
    import yaml

    try:
        node = yaml.compose(Path(path).read_text())
    except (OSError, ValueError, yaml.YAMLError):
        return None
    line = None
    for k in keys:
        if not isinstance(node, yaml.MappingNode):
            return None
        for kn, vn in node.value:
            if kn.value == k:
                node, line = vn, kn.start_mark.line + 1
                break
        else:
            return None
    return line


def _coerce_action(value) -> Action:
    """An Action from an Action, its int code or its YAML name ('reset-client')."""
    if isinstance(value, str):
        try:
            return _parse_action("action", value)
        except _RuleError as exc:
            raise ValueError(exc.problem) from None
    return Action(value)


class Policy:
    """An ordered rule list (first match wins), a default action and the zone of every endpoint.

    Attributes
    ----------
    rules : list[Rule]
    rule_names : list[str]
    actions : int8[n_rules]
        ``Action`` code of each rule.
    default_action : Action
        Applies when no rule matches.
    zone_names : list[str]
        Zone index -> name (the classifier's zone columns hold these indices).
    endpoint_zone : dict[str, int]
        Endpoint name -> zone index (the firewall maps endpoint ids to these).
    source : str
        Where the policy came from (file name), used in error messages.
    """

    def __init__(self, rules, default=Action.DENY, zones=None, source="<policy>", *, url_categories=None,
                 profiles=None, signature_files=(), tcp_reject_non_syn=True, unsupported=(), signature_vars=None):
        from ..inspect.profiles import Profiles
        from ..inspect.urlcat import UrlCategories

        self.source = str(source)
        #: Custom URL categories and the optional category database (``categorize``); an empty set by default.
        self.url_categories: UrlCategories = url_categories if url_categories is not None else UrlCategories()
        #: Security profiles and profile groups, resolved per rule (``url_action``, ``threat_action``).
        self.profiles: Profiles = profiles if profiles is not None else Profiles({}, len(self.url_categories))
        if self.profiles.n_categories != len(self.url_categories):
            raise ConfigError(f"{self.source}: profiles were built for {self.profiles.n_categories} URL categories, "
                              f"the policy has {len(self.url_categories)}")
        #: Signature files (``security_policy.signatures``), resolved relative to the file that names them.
        self.signature_files: list[Path] = [Path(p) for p in signature_files]
        #: Signature variables (``security_policy.vars``, checked; HOME_NET defaults to the topology's VPC CIDRs),
        #: rule-language text per name; names not set take Suricata's defaults (``inspect.signatures.DEFAULT_VARS``).
        self.signature_vars: dict[str, str] = dict(signature_vars or {})
        self.tcp_reject_non_syn = bool(tcp_reject_non_syn)
        #: Elements of an imported configuration that are not modelled: (XPath, what) pairs (``from_panos``).
        self.unsupported: list[tuple[str, str]] = list(unsupported)
        self.rules: list[Rule] = list(rules)
        self.default_action = _coerce_action(default)
        self.zones: dict[str, tuple[str, ...]] = {k: tuple(v) for k, v in (zones or {}).items()}
        self.zone_names = list(self.zones)
        self.endpoint_zone: dict[str, int] = {}
        for z, members in enumerate(self.zones.values()):
            for ep in members:
                self.endpoint_zone[ep] = z
        self.rule_names = [r.name for r in self.rules]
        self.actions = np.fromiter((int(r.action) for r in self.rules), dtype=np.int8, count=len(self.rules))
        for i, r in enumerate(self.rules):
            for c in r.category or ():
                if not 0 <= c < self.n_categories:
                    raise ConfigError(f"{self.source}: rule {i} ({r.name}): category id {c} is not a URL category "
                                      f"of the policy ({self.n_categories} defined)")
            for name in r.profile:
                if name not in self.profiles:
                    raise ConfigError(f"{self.source}: rule {i} ({r.name}): unknown security profile {name!r}")
        self.profiles.bind([r.profile for r in self.rules])

    @property
    def input_files(self) -> list[Path]:
        """Every file the policy was read from: its source (a YAML or PAN-OS XML file), the URL database and the
        signature files (an output must never overwrite one)."""
        files = [Path(self.source)] if self.source and not self.source.startswith("<") else []
        if self.url_categories.database is not None:
            files.append(self.url_categories.database)
        return files + list(self.signature_files)

    def url_action(self, rule_index, category_ids) -> np.ndarray:
        """URL-filtering action (``UrlAction``, uint8) of each session: see ``Profiles.url_action``."""
        return self.profiles.url_action(rule_index, category_ids)

    def threat_action(self, rule_index, signature_action, severity=None) -> np.ndarray:
        """Threat-prevention action (``ThreatAction``, uint8) of each alert: see ``Profiles.threat_action``."""
        return self.profiles.threat_action(rule_index, signature_action, severity)

    def __len__(self) -> int:
        return len(self.rules)

    def __repr__(self) -> str:
        return f"Policy({len(self.rules)} rules, default={self.default_action.name.lower()}, source={self.source!r})"

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_yaml(cls, source, name: str | None = None, key: str | None = None, home_net=None) -> Policy:
        """Load a policy from a YAML file or an already-parsed mapping.

        Parameters
        ----------
        source : str, os.PathLike or Mapping
            A file holding ``security_policy:`` (e.g. the topology file) or the bare ``{zones, rules, default}``
            mapping; or that mapping itself (as the topology loader hands it over).  ``security_policy`` may also
            name a separate policy file, relative to the file that holds it (for a mapping: to ``name`` when that
            is a file).
        name : str, optional
            Name used in error messages when ``source`` is a mapping (default ``<policy>``); for a file, its path.
        key : str, optional
            Key path of the policy mapping in error messages (default ``security_policy``), e.g. the topology
            loader's ``Topology.security_policy_path``.
        home_net : list of str, optional
            The signatures' ``$HOME_NET`` when ``vars`` does not set it (the topology's VPC CIDRs); without it,
            Suricata's default (the private ranges).

        Raises
        ------
        ConfigError
            Naming the source, the rule (index and name) and the field.
        """
        base = None
        if isinstance(source, Mapping):
            src_name = name or "<policy>"
            data = source
            if name and Path(name).is_file():
                base = Path(name).parent
        else:
            import yaml

            from ..config import yaml_load

            path = Path(os.fspath(source))
            src_name = name or str(path)
            base = path.parent
            try:
                text = path.read_text()
            except OSError as exc:
                raise ConfigError(f"{src_name}: cannot read: {exc.strerror or exc}") from None
            try:
                data = yaml_load(text)
            except yaml.YAMLError as exc:
                raise ConfigError(f"{src_name}: invalid YAML: {exc}".replace("\n", " ")) from None
        key = key or "security_policy"
        if isinstance(data, Mapping) and "security_policy" in data:
            data = data["security_policy"]
            if isinstance(data, (str, os.PathLike)):
                # ``security_policy: policy.yaml``: a separate file, relative to the file that names it.
                path = Path(data)
                if base is not None and not path.is_absolute():
                    path = base / path
                return cls.from_yaml(path, key=key, home_net=home_net)
        elif not (isinstance(data, Mapping) and ("rules" in data or "panos" in data)):
            raise ConfigError(f"{src_name}: no security_policy (expected a mapping with 'security_policy' or 'rules')")
        if not isinstance(data, Mapping):
            raise ConfigError(f"{src_name}: {key}: expected a mapping with zones, rules and default")
        unknown = set(data) - _POLICY_KEYS
        if unknown:
            raise ConfigError(f"{src_name}: {key}.{min(map(str, unknown))}: unknown key "
                              f"(allowed: {', '.join(sorted(_POLICY_KEYS))})")
        zones = cls._parse_zone_map(src_name, key, data.get("zones"))
        zone_index = {z: i for i, z in enumerate(zones)}
        extra = cls._parse_content_keys(src_name, key, data, base)
        sig_vars = _signature_vars(data.get("vars"), src_name, key, home_net)
        if "panos" in data:
            both = sorted(k for k in ("rules", "profiles", "url_categories", "default") if k in data)
            if both:
                raise ConfigError(f"{src_name}: {key}.{both[0]}: not allowed with 'panos' (the PAN-OS "
                                  "configuration holds the rules, profiles and URL categories)")
            panos = data["panos"]
            opts = {}
            if isinstance(panos, Mapping):
                bad = set(panos) - {"file", "device_group", "vsys"}
                if bad or "file" not in panos:
                    raise ConfigError(f"{src_name}: {key}.panos: expected a file name or "
                                      "{file: FILE.xml, device_group: NAME, vsys: NAME}")
                opts = {k: str(panos[k]) for k in ("device_group", "vsys") if panos.get(k) is not None}
                panos = panos["file"]
            if not isinstance(panos, (str, os.PathLike)) or not str(panos):
                raise ConfigError(f"{src_name}: {key}.panos: expected a file name, got {panos!r}")
            path = Path(panos)
            if base is not None and not path.is_absolute():
                path = base / path
            pol = cls.from_panos(path, zones=zones, url_database=extra["url_database"],
                                 signature_files=extra["signature_files"],
                                 tcp_reject_non_syn=extra["tcp_reject_non_syn"], **opts)
            pol.signature_vars = sig_vars
            return pol
        from ..inspect.profiles import Profiles
        from ..inspect.urlcat import UrlCategories

        try:
            urlcats = UrlCategories.from_config(data.get("url_categories"), extra["url_database"])
        except ConfigError as exc:
            raise ConfigError(f"{src_name}: {key}.{exc}") from None
        try:
            profiles = Profiles.from_config(data.get("profiles"), urlcats)
        except ConfigError as exc:
            raise ConfigError(f"{src_name}: {key}.profiles{exc}") from None
        names = _Names(zone_index, urlcats.index, profiles.names)
        content = {"url_categories": urlcats, "profiles": profiles, "signature_files": extra["signature_files"],
                   "tcp_reject_non_syn": extra["tcp_reject_non_syn"], "signature_vars": sig_vars}
        default = Action.DENY
        if "default" in data:
            try:
                default = _parse_action("default", data["default"])
            except _RuleError as exc:
                raise ConfigError(f"{src_name}: {key}.default: {exc.problem}") from None
        raw_rules = data.get("rules")
        if isinstance(raw_rules, str):
            # A ClassBench rule file in place of the rule list (benchmarks), relative to the YAML file.
            cb = Path(raw_rules)
            if base is not None and not cb.is_absolute():
                cb = base / cb
            pol = cls.from_classbench(cb, default=default)
            return cls(pol.rules, default, zones, source=src_name, **content)
        if raw_rules is None:
            raw_rules = []
        if not isinstance(raw_rules, list):
            raise ConfigError(f"{src_name}: {key}.rules: expected a list of rules, got {type(raw_rules).__name__}")
        rules = []
        seen: dict[str, int] = {}
        for i, raw in enumerate(raw_rules):
            rname = raw.get("name") if isinstance(raw, Mapping) else None
            rname = rname if isinstance(rname, str) and rname else f"rule-{i}"
            try:
                rule = _parse_rule(i, raw, names)
            except _RuleError as exc:
                raise ConfigError(f"{src_name}: {key}.rules[{i}] ({rname}): {exc.field}: {exc.problem}") from None
            if rule.name in seen:
                raise ConfigError(f"{src_name}: {key}.rules[{i}] ({rule.name}): name: duplicate of rules[{seen[rule.name]}]")
            seen[rule.name] = i
            rules.append(rule)
        return cls(rules, default, zones, source=src_name, **content)

    @classmethod
    def from_panos(cls, path, zones=None, url_database=None, signature_files=(), tcp_reject_non_syn=True,
                   device_group=None, vsys=None) -> Policy:
        """Load the policy from a PAN-OS firewall or Panorama XML configuration export.

        Security rules, address / service / application groups, custom URL categories, URL-filtering and threat
        profiles, profile groups (see ``gwlb_fast.inspect.panos``); ``zones`` maps the configuration's zones to GWLB
        endpoint names.  Elements not modelled are listed in ``policy.unsupported`` as (XPath, what).

        Raises
        ------
        ConfigError
            A file that cannot be read or parsed, an ambiguous device group / vsys, a zone mapping naming a zone the
            configuration lacks.
        """
        from ..inspect.panos import load_panos

        if zones is not None and not isinstance(zones, Mapping):
            raise ConfigError(f"{path}: zones: expected a mapping zone -> [endpoint names]")
        return load_panos(path, zones=zones, url_database=url_database, signature_files=signature_files,
                          tcp_reject_non_syn=tcp_reject_non_syn, device_group=device_group, vsys=vsys)

    @staticmethod
    def _parse_content_keys(src_name, key, data, base) -> dict:
        """``signatures``, ``url_database`` (paths relative to the policy's file) and ``tcp_reject_non_syn``."""
        def rel(p):
            p = Path(p)
            return base / p if base is not None and not p.is_absolute() else p

        sigs = data.get("signatures")
        files = []
        if sigs is not None:
            for i, item in enumerate(_as_list(sigs)):
                if not isinstance(item, (str, os.PathLike)) or not str(item):
                    raise ConfigError(f"{src_name}: {key}.signatures[{i}]: expected a file name, got {item!r}")
                files.append(rel(item))
        db = data.get("url_database")
        if db is not None:
            if not isinstance(db, (str, os.PathLike)) or not str(db):
                raise ConfigError(f"{src_name}: {key}.url_database: expected a file name, got {db!r}")
            db = rel(db)
        rej = data.get("tcp_reject_non_syn", True)
        if not isinstance(rej, bool):
            raise ConfigError(f"{src_name}: {key}.tcp_reject_non_syn: expected true or false, got {rej!r}")
        return {"signature_files": files, "url_database": db, "tcp_reject_non_syn": rej}

    @staticmethod
    def _parse_zone_map(src_name, key, raw) -> dict[str, tuple[str, ...]]:
        if raw is None:
            return {}
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{src_name}: {key}.zones: expected a mapping zone -> [endpoint names]")
        if len(raw) > MAX_ZONES:
            raise ConfigError(f"{src_name}: {key}.zones: {len(raw)} zones, at most {MAX_ZONES} are supported")
        zones: dict[str, tuple[str, ...]] = {}
        owner: dict[str, str] = {}
        for zname, members in raw.items():
            if not isinstance(zname, str) or not zname or zname.lower() == "any":
                raise ConfigError(f"{src_name}: {key}.zones: bad zone name {zname!r}")
            members = _as_list(members) if members is not None else []
            for ep in members:
                if not isinstance(ep, str) or not ep:
                    raise ConfigError(f"{src_name}: {key}.zones.{zname}: bad endpoint name {ep!r}")
                if ep in owner:
                    raise ConfigError(f"{src_name}: {key}.zones.{zname}: endpoint {ep!r} is already in zone "
                                      f"{owner[ep]!r}")
                owner[ep] = zname
            zones[zname] = tuple(members)
        return zones

    @classmethod
    def from_classbench(cls, path, action=Action.ALLOW, default=Action.DENY) -> Policy:
        """Load a ClassBench rule file (``@src/len dst/len lo : hi lo : hi proto/mask flags/mask``).

        Line order is priority.  Every rule gets ``action``; the flags column is ignored.  A protocol mask other
        than 0x00 / 0xFF matches the values ``v`` with ``v & mask == value & mask``.  Rule names are ``cb<line>``.

        Raises
        ------
        ConfigError
            Naming the file, the line and the field.
        """
        src_name = os.fspath(path)
        try:
            with open(path) as fh:
                lines = fh.read().splitlines()
        except OSError as exc:
            raise ConfigError(f"{src_name}: cannot read: {exc.strerror or exc}") from None
        action = _coerce_action(action)
        default = _coerce_action(default)
        rules = []
        proto_cache: dict[tuple[int, int], tuple[Range, ...]] = {}
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            i = len(rules)
            where = f"{src_name}: line {lineno} (rule {i})"
            if not line.startswith("@"):
                raise ConfigError(f"{where}: expected a line starting with '@'")
            cols = [c.strip() for c in line[1:].split("\t")]
            cols = [c for c in cols if c]
            if len(cols) < 5:
                raise ConfigError(f"{where}: expected at least 5 tab-separated fields, got {len(cols)}")
            fields = ("source", "destination", "source_port", "port", "protocol")
            try:
                k = 0
                src = _cb_prefix(cols[0])
                k = 1
                dst = _cb_prefix(cols[1])
                k = 2
                sport = _cb_range(cols[2])
                k = 3
                dport = _cb_range(cols[3])
                k = 4
                pv, pm = (int(x, 16) for x in cols[4].split("/"))
                if not (0 <= pv <= 255 and 0 <= pm <= 255):
                    raise ValueError("protocol value/mask out of range")
                proto = proto_cache.get((pv, pm))
                if proto is None:
                    proto = _merge((v, v) for v in range(256) if v & pm == pv & pm)
                    proto_cache[(pv, pm)] = proto
            except ValueError as exc:
                raise ConfigError(f"{where}: {fields[k]}: bad value {cols[k]!r}: {exc}") from None
            rules.append(Rule(f"cb{lineno}", (src,), (dst,), (sport,), (dport,), proto, _ANY8, _ANY8, action))
        return cls(rules, default, None, source=src_name)

    # ------------------------------------------------------------------ compiling
    def boxes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Expand the rules into priority-ordered boxes: ``(lo uint32[nb, 7], hi uint32[nb, 7], rule int32[nb])``."""
        los: list[tuple[int, ...]] = []
        his: list[tuple[int, ...]] = []
        rule: list[int] = []
        for i, r in enumerate(self.rules):
            for s, d, sp, (pr, dp), zf, zt in itertools.product(r.src, r.dst, r.sport, r.l4_pairs(), r.zone_from,
                                                                 r.zone_to):
                los.append((s[0], d[0], sp[0], dp[0], pr[0], zf[0], zt[0]))
                his.append((s[1], d[1], sp[1], dp[1], pr[1], zf[1], zt[1]))
                rule.append(i)
        if not rule:
            return (np.empty((0, NDIMS), dtype=np.uint32), np.empty((0, NDIMS), dtype=np.uint32),
                    np.empty(0, dtype=np.int32))
        return (np.array(los, dtype=np.uint32), np.array(his, dtype=np.uint32), np.array(rule, dtype=np.int32))

    def compile(self, binth: int = 2, partition: bool = True, max_leaf_entries: int = -1) -> Classifier:
        """Build the first-match classifier (see ``gwlb_fast._kernels.classify``).

        Parameters
        ----------
        binth : int
            Boxes per leaf before a node is split.
        partition : bool
            Split the boxes into groups by which fields are narrow (:func:`partition_boxes`), one tree per group,
            as CutSplit does: a wildcard field is never cut inside its group, which bounds replication.
        max_leaf_entries : int
            Memory bound on replicated leaf boxes (default ``32 * n_boxes + 4096``); beyond it nodes stop splitting.
        """
        t0 = time.perf_counter()
        lo, hi, rule = self.boxes()
        group = partition_boxes(lo, hi) if partition else None
        tree = ClassifierTree(lo, hi, rule, group, binth, max_leaf_entries, **self._constraint_tables())
        return Classifier(self, tree, time.perf_counter() - t0, len(rule))

    @property
    def n_categories(self) -> int:
        """Number of URL category ids (``url_categories.names``; 0 without URL categories)."""
        return len(self.url_categories.names) if self.url_categories is not None else 0

    def _constraint_tables(self) -> dict:
        """The per-rule content constraints of ``ClassifierTree`` (empty when no rule has one)."""
        if not any(r.constrained() for r in self.rules):
            return {}
        n = len(self.rules)
        napps = len(APPLICATIONS)
        app_words = (napps + 63) // 64
        cat_words = max(1, (self.n_categories + 63) // 64)
        flags = np.zeros(n, np.uint8)
        app_bits = np.zeros((n, app_words), np.uint64)
        cat_bits = np.zeros((n, cat_words), np.uint64)
        for i, r in enumerate(self.rules):
            if r.application is not None:
                flags[i] |= F_APP
                for a in r.application:
                    app_bits[i, a >> 6] |= np.uint64(1 << (a & 63))
            if r.service == "application-default":
                flags[i] |= F_APPDEF
            if r.category is not None:
                flags[i] |= F_CAT
                for c in r.category:
                    cat_bits[i, c >> 6] |= np.uint64(1 << (c & 63))
        start = [0]
        keys: list[int] = []
        for name in APPLICATIONS:
            keys.extend((proto << 16) | port for proto, port in DEFAULT_PORTS.get(name, ()))
            start.append(len(keys))
        return {"rule_flags": flags, "app_bits": app_bits, "cat_bits": cat_bits,
                "appdef_start": np.array(start, np.int32), "appdef_key": np.array(keys, np.uint32),
                "app_pending": APP_PENDING}

    def action_of(self, rule_index: np.ndarray) -> np.ndarray:
        """``Action`` code (int8) for each classification result, the default action where it is -1."""
        idx = np.asarray(rule_index)
        if len(self.actions) == 0:
            return np.full(idx.shape, int(self.default_action), dtype=np.int8)
        return np.where(idx >= 0, self.actions[np.clip(idx, 0, None)], np.int8(self.default_action)).astype(np.int8)


def partition_boxes(lo: np.ndarray, hi: np.ndarray, addr_bits: int = 16, port_span: int = 1024) -> np.ndarray:
    """Group id (int32) of every box, by which field is narrow (CutSplit's small/big field split).

    An address is narrow when its range spans at most ``2**(32 - addr_bits)`` values (a /16 or longer prefix), a
    port when it spans at most ``port_span`` values.  Groups: 0 source address narrow, 1 destination address narrow
    (source wide), 2 both addresses wide and destination port narrow, 3 the rest.  Inside a group the tree cuts the
    narrow field first, which crosses few boxes, so wildcards are rarely replicated (measured on ClassBench fw1_10k:
    one tree over all boxes needs > 2 GB, four groups 0.7 MB).
    """
    span = hi.astype(np.int64) - lo.astype(np.int64)
    group = np.full(len(lo), 3, dtype=np.int32)
    group[span[:, 3] < port_span] = 2
    group[span[:, 1] < (1 << (32 - addr_bits))] = 1
    group[span[:, 0] < (1 << (32 - addr_bits))] = 0
    return group


def _cb_prefix(text: str) -> Range:
    addr, _, plen = text.partition("/")
    parts = addr.split(".")
    if len(parts) != 4 or not plen:
        raise ValueError("expected a.b.c.d/len")
    value = 0
    for p in parts:
        b = int(p)
        if not 0 <= b <= 255:
            raise ValueError("address byte out of range")
        value = (value << 8) | b
    n = int(plen)
    if not 0 <= n <= 32:
        raise ValueError("prefix length out of range")
    mask = (0xFFFFFFFF << (32 - n)) & 0xFFFFFFFF
    return (value & mask, (value & mask) | (~mask & 0xFFFFFFFF))


def _cb_range(text: str) -> Range:
    lo, sep, hi = text.partition(":")
    if not sep:
        raise ValueError("expected 'lo : hi'")
    a, b = int(lo), int(hi)
    if not (0 <= a <= b <= 65535):
        raise ValueError("port range out of order or out of 0-65535")
    return (a, b)


_COLS = (("src_ip", np.dtype(np.uint32)), ("dst_ip", np.dtype(np.uint32)), ("sport", np.dtype(np.uint16)),
         ("dport", np.dtype(np.uint16)), ("proto", np.dtype(np.uint8)), ("zone_from", np.dtype(np.uint8)),
         ("zone_to", np.dtype(np.uint8)))
_INT32 = np.dtype(np.int32)


def _column(name, arr, dtype, n):
    """``arr`` as a contiguous 1-D column of ``dtype``: exact columns pass as they are; other integer arrays, lists
    and scalars (Python or numpy) are converted when every value fits the field (a 0-d result is broadcast by the
    caller). ValueError, naming the column, for anything else (kernel convention)."""
    if isinstance(arr, np.ndarray) and arr.dtype == dtype and arr.ndim == 1:
        if n is not None and arr.shape[0] != n:
            raise ValueError(f"{name} has length {arr.shape[0]}, expected {n}")
        return arr if arr.flags.c_contiguous else np.ascontiguousarray(arr)
    try:
        a = np.asarray(arr)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be integers (a scalar, a list or a 1-D integer array), "
                         f"got {type(arr).__name__}") from None
    if a.dtype.kind not in "iu" or a.ndim > 1:
        raise ValueError(f"{name} must be integers (a scalar, a list or a 1-D integer array), got "
                         f"{type(arr).__name__} of {a.dtype} with shape {a.shape}")
    if a.size:
        lo, hi = int(a.min()), int(a.max())
        top = int(np.iinfo(dtype).max)
        if lo < 0 or hi > top:
            raise ValueError(f"{name}: value {lo if lo < 0 else hi} does not fit {dtype} (0..{top})")
    if a.ndim == 1 and n is not None and a.shape[0] != n:
        raise ValueError(f"{name} has length {a.shape[0]}, expected {n}")
    a = a.astype(dtype, copy=False)
    return np.ascontiguousarray(a) if a.ndim else a  # ascontiguousarray makes a 0-d value 1-d


class Classifier:
    """A compiled policy: ``classify`` returns the index of the first matching rule per packet (-1 if none).

    Attributes
    ----------
    policy : Policy
    build_seconds : float
        Time spent in ``Policy.compile`` (box expansion + tree build).
    memory_bytes : int
        Bytes of the compiled structure (tree nodes + leaf boxes).
    n_boxes, n_nodes, n_leaf_entries, depth : int
        Size of the expanded rule set and shape of the tree.
    """

    def __init__(self, policy: Policy, tree: ClassifierTree, build_seconds: float, n_boxes: int):
        self.policy = policy
        self._tree = tree
        self.build_seconds = build_seconds
        self.n_boxes = n_boxes

    @property
    def memory_bytes(self) -> int:
        return self._tree.memory_bytes

    @property
    def n_nodes(self) -> int:
        return self._tree.n_nodes

    @property
    def n_leaf_entries(self) -> int:
        return self._tree.n_leaf_entries

    @property
    def depth(self) -> int:
        return self._tree.depth

    @property
    def n_groups(self) -> int:
        return self._tree.n_groups

    def __repr__(self) -> str:
        return (f"Classifier({len(self.policy)} rules, {self.n_boxes} boxes, {self.n_nodes} nodes, "
                f"{self.n_leaf_entries} leaf entries, {self.n_groups} groups, depth {self.depth}, {self.memory_bytes / 1e6:.2f} MB, "
                f"built in {self.build_seconds * 1e3:.1f} ms)")

    def classify(self, src_ip, dst_ip, sport, dport, proto, zone_from=None, zone_to=None, *, app=None,
                 category=None, out=None) -> np.ndarray:
        """Index of the first matching rule for every packet, -1 where none matches.

        Content fields follow PAN-OS's lookups of a session.  While the application is not identified yet
        (``app`` is ``APP_PENDING``, or ``app`` is None), a rule's ``application`` list, its
        ``service: application-default`` (beyond the default ports of the rule's applications, which bound its
        destination ports) and its ``category`` list all count as matching: that is the provisional lookup of a
        session's first packet, which PAN-OS allows on the first such rule.  Once ``app`` holds the identified
        application, the lookup is final: the application must be in the rule's list, the destination port one of
        its default ports for ``application-default``, and for a rule with a ``category`` list one of the session's
        URL categories (``category``) must be in it; with no URL known (-1) such a rule does not match.  The
        caller looks the policy up again with the application once it is known and on every application shift.
        ``incomplete`` and ``insufficient-data`` are application ids like the others (they match only rules that
        name them or have no application list); PAN-OS keeps the provisional verdict for such sessions.

        Parameters
        ----------
        src_ip, dst_ip : uint32[n]
            Host byte order.
        sport, dport : uint16[n]
        proto : uint8[n]
            Each column may also be any integer array, a list or a scalar (Python or numpy) whose values fit the
            field; scalars apply to every row.
        zone_from, zone_to : uint8[n], optional
            Zone index (``policy.zone_names``) of the packet's ingress / egress; None means unknown
            (``ZONE_UNKNOWN``): then only rules without a ``from`` / ``to`` restriction can match.
        app : integer array [n], optional
            Application id of each packet's session (``gwlb_fast.inspect.applications``); None = all pending.
        category : integer array [n] or [n, k], optional
            URL category id(s) of each packet's session (``policy.url_categories.names``), -1 = none: a URL belongs
            to several categories (a row of ``categorize``'s matches), a rule matches if any of them is in its list.
            None = no URL known.
        out : int32[n], optional
            Output column to fill (allocated when None).

        Returns
        -------
        int32[n], or an int when every column is a scalar (and ``out`` is None)

        Raises
        ------
        ValueError
            Naming the column that is not integers, has a value outside its field, more than one dimension or
            the wrong length.
        """
        given = (src_ip, dst_ip, sport, dport, proto, zone_from, zone_to)
        # the batch length: the first column given as a sequence (scalars broadcast to it); all scalars -> one row
        n = next((len(a) for a in given if a is not None and np.ndim(a) == 1), None)
        cols = []
        for (name, dtype), arr in zip(_COLS, given):
            if arr is None and name.startswith("zone"):
                cols.append(None)
                continue
            col = _column(name, arr, dtype, n)
            cols.append(col if col.ndim == 1 else np.full(1 if n is None else n, col, dtype))
        if n is None and out is None:
            one = {k: None if v is None else np.atleast_1d(np.asarray(v)) for k, v in (("app", app),
                                                                                    ("category", category))}
            if one["category"] is not None and one["category"].ndim == 1 and np.ndim(category) == 1:
                one["category"] = one["category"][None, :]  # the categories of the one row
            return int(self.classify(*cols, **one)[0])
        if out is None:
            out = np.empty(cols[0].shape[0], dtype=np.int32)
        else:
            if not isinstance(out, np.ndarray) or out.dtype != _INT32 or out.shape != (cols[0].shape[0],):
                raise ValueError(f"out must be a 1-D int32 array of length {cols[0].shape[0]}, got "
                                 f"{getattr(out, 'dtype', type(out).__name__)} with shape {np.shape(out)}")
            if not out.flags.writeable or not out.flags.c_contiguous:
                raise ValueError("out must be a writeable, contiguous int32 array")
        nrow = cols[0].shape[0]
        app_col = cat_col = None
        if app is not None:
            app_col = np.asarray(app)
            if app_col.ndim != 1 or app_col.shape[0] != nrow or app_col.dtype.kind not in "iu":
                raise ValueError(f"app must be a 1-D integer array of length {nrow}, got {app_col.dtype} with shape "
                                 f"{app_col.shape}")
            if app_col.dtype != np.uint16:
                if nrow and (app_col.min() < 0 or app_col.max() > 0xFFFF):
                    raise ValueError("app ids must be in 0..65535")
                app_col = app_col.astype(np.uint16)
            app_col = np.ascontiguousarray(app_col)
        if category is not None:
            cat_col = np.asarray(category)
            if cat_col.ndim == 1:
                cat_col = cat_col[:, None]
            if cat_col.ndim != 2 or cat_col.shape[0] != nrow or cat_col.dtype.kind not in "iu":
                raise ValueError(f"category must be an integer array [n] or [n, k] with n = {nrow}, got "
                                 f"{cat_col.dtype} with shape {np.shape(category)}")
            if cat_col.dtype != np.int32:
                if cat_col.size and (cat_col.min() < -1 or cat_col.max() > 0x7FFFFFFF):
                    raise ValueError("category ids must be -1 (none) or non-negative int32")
                cat_col = cat_col.astype(np.int32)
            cat_col = np.ascontiguousarray(cat_col)
        self._tree.lookup(*cols, out, app_col, cat_col)
        return out


def generate_trace(policy: Policy, n: int, seed: int = 0, edge_fraction: float = 0.3) -> dict[str, np.ndarray]:
    """Packet headers that hit the policy's boxes: inside them and on / just beyond their edges.

    Each packet picks a random box; per dimension it takes, with probability ``edge_fraction``, one of ``lo``,
    ``hi``, ``lo - 1``, ``hi + 1`` (clipped to the field's domain), else a uniform value in ``[lo, hi]``.  ClassBench's
    trace_generator picks interior points; the edges exercise the tree's cuts.  Returns the keyword columns of
    :meth:`Classifier.classify` (``zone_from`` / ``zone_to`` only when the policy defines zones).
    """
    rng = np.random.default_rng(seed)
    lo, hi, _ = policy.boxes()
    if len(lo) == 0:
        lo = np.zeros((1, NDIMS), dtype=np.uint32)
        hi = np.array([DOMAIN_HI], dtype=np.uint32)
    pick = rng.integers(0, len(lo), size=n)
    blo = lo[pick].astype(np.int64)
    bhi = hi[pick].astype(np.int64)
    span = bhi - blo + 1
    vals = blo + (rng.random((n, NDIMS)) * span).astype(np.int64)
    vals = np.minimum(vals, bhi)
    which = rng.integers(0, 4, size=(n, NDIMS))
    edge = np.choose(which, [blo, bhi, blo - 1, bhi + 1])
    use_edge = rng.random((n, NDIMS)) < edge_fraction
    vals = np.where(use_edge, edge, vals)
    vals = np.clip(vals, 0, np.array(DOMAIN_HI, dtype=np.int64))
    out = {}
    for d, (name, dtype) in enumerate(_COLS):
        if name.startswith("zone"):
            if not policy.zone_names:
                continue
            # Known zones and, now and then, the unknown zone.
            col = np.minimum(vals[:, d], len(policy.zone_names))
            col = np.where(col >= len(policy.zone_names), ZONE_UNKNOWN, col)
            out[name] = col.astype(dtype)
        else:
            out[name] = vals[:, d].astype(dtype)
    return out
