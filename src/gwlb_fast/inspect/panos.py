"""The security policy from a PAN-OS firewall or Panorama XML configuration export.

``Policy.from_panos(path)`` and ``security_policy: {panos: FILE.xml}`` read:

- a firewall's vsys (``/config/devices/entry/vsys/entry``) or a Panorama device group
  (``/config/devices/entry/device-group/entry``), plus ``/config/shared``; a name in the device group / vsys hides
  the shared object of the same name;
- security rules: the vsys ``rulebase``, or Panorama's shared pre-rules, the device group's pre-rules, its
  post-rules, then the shared post-rules, in that order (first match wins); ``default-security-rules``
  (intrazone-default allow and interzone-default deny unless overridden): interzone-default is the policy's default
  action, intrazone-default (when it differs) becomes one rule ``intrazone-default:ZONE`` per zone;
- address objects (``ip-netmask``, ``ip-range``) and static address groups; literal addresses in rules;
- service objects (tcp / udp destination ports) and service groups, ``service-http`` / ``service-https``,
  ``application-default``;
- application groups (of the App-ID names ``gwlb_fast.inspect.applications`` models);
- custom URL categories of type URL List; predefined category names become categories that only a
  ``url_database`` fills;
- URL-filtering profiles (allow / alert / continue / override / block per category), vulnerability and
  anti-spyware profiles (their rules' actions by severity; threat-name filters are not modelled), profile groups,
  and rules' ``profile-setting``;
- zones: the VM-Series plugin associates each GWLB endpoint with a sub-interface and its zone; the topology's
  ``zones:`` mapping (zone -> endpoint names) stands in for that association.

Every other element is listed in ``Policy.unsupported`` as (XPath, what), never silently dropped.  A rule that
refers to something not modelled keeps the members that are (the member is listed); a rule left without any member
in a field is not imported (listed).  Metadata that does not change a verdict (description, tags, log settings) is
read over.
"""
from __future__ import annotations

import ipaddress
import os
import xml.etree.ElementTree as ET
from pathlib import Path

from ..errors import ConfigError
from .applications import APP_ID, APP_PENDING

__all__ = ["load_panos"]

_PREDEFINED_SERVICES = {"service-http": ["tcp/80", "tcp/8080"], "service-https": ["tcp/443"]}
_RULE_ACTIONS = {"allow", "deny", "drop", "reset-client", "reset-server", "reset-both"}
_THREAT_ACTIONS = {"default", "allow", "alert", "drop", "reset-client", "reset-server", "reset-both", "block-ip"}
_URL_ACTIONS = ("allow", "alert", "continue", "override", "block")
_METADATA = {"description", "tag", "log-setting", "log-start", "log-end", "group-tag"}
_RULE_FIELDS = {"from", "to", "source", "destination", "application", "service", "category", "action",
                "profile-setting", "disabled", "rule-type", "source-user", "source-hip", "destination-hip",
                "negate-source", "negate-destination"}


def _q(name: str) -> str:
    return "'" + name.replace("'", "&apos;") + "'"


class _Scope:
    """Objects of one scope (shared, a vsys, a device group) with the XPath of their container."""

    def __init__(self, el, xpath):
        self.el = el
        self.xpath = xpath

    def entries(self, *path):
        """(name, element, xpath) of ``path/entry`` children."""
        node = self.el
        for p in path:
            node = node.find(p) if node is not None else None
        if node is None:
            return []
        base = self.xpath + "/" + "/".join(path)
        return [(e.get("name", ""), e, f"{base}/entry[@name={_q(e.get('name', ''))}]") for e in node.findall("entry")]


class _Loader:
    def __init__(self, path, device_group=None, vsys=None):
        self.path = Path(path)
        self.unsupported: list[tuple[str, str]] = []
        try:
            root = ET.parse(os.fspath(self.path)).getroot()
        except OSError as exc:
            raise ConfigError(f"{self.path}: cannot read: {exc.strerror or exc}") from None
        except ET.ParseError as exc:
            raise ConfigError(f"{self.path}: invalid XML: {exc}") from None
        if root.tag != "config":
            raise ConfigError(f"{self.path}: not a PAN-OS configuration (root element <{root.tag}>, expected <config>)")
        self.root = root
        dev = root.find("devices/entry")
        dev_x = f"/config/devices/entry[@name={_q(dev.get('name', ''))}]" if dev is not None else None
        shared = root.find("shared")
        self.scopes: list[_Scope] = []  # most specific first
        dgs = dev.findall("device-group/entry") if dev is not None else []
        vs = dev.findall("vsys/entry") if dev is not None else []
        self.panorama = bool(dgs) or (device_group is not None)
        if self.panorama:
            chosen = self._choose(dgs, device_group, "device group", "device_group")
            self.main = _Scope(chosen, f"{dev_x}/device-group/entry[@name={_q(chosen.get('name', ''))}]")
        elif vs:
            chosen = self._choose(vs, vsys, "vsys", "vsys")
            self.main = _Scope(chosen, f"{dev_x}/vsys/entry[@name={_q(chosen.get('name', ''))}]")
        else:
            raise ConfigError(f"{self.path}: no vsys (firewall) and no device group (Panorama) under "
                              "/config/devices/entry")
        self.scopes.append(self.main)
        if shared is not None:
            self.shared = _Scope(shared, "/config/shared")
            self.scopes.append(self.shared)
        else:
            self.shared = None

    def _choose(self, entries, name, what, key):
        names = [e.get("name", "") for e in entries]
        if name is None:
            if len(entries) != 1:
                raise ConfigError(f"{self.path}: {len(entries)} {what}s ({', '.join(names)}): name one with "
                                  f"panos.{key}")
            return entries[0]
        for e in entries:
            if e.get("name") == name:
                return e
        raise ConfigError(f"{self.path}: no {what} {name!r} (found: {', '.join(names) or 'none'})")

    def skip(self, xpath, what):
        self.unsupported.append((xpath, what))

    # ------------------------------------------------------------------ objects
    def collect(self, *path):
        """name -> (element, xpath) over the scopes (the most specific one wins)."""
        out = {}
        for scope in reversed(self.scopes):
            for name, el, xp in scope.entries(*path):
                out[name] = (el, xp)
        return out

    def load_objects(self):
        self.addresses = {}
        for name, (el, xp) in self.collect("address").items():
            kids = [c for c in el if c.tag not in _METADATA]
            rng = None
            for c in kids:
                text = (c.text or "").strip()
                if c.tag == "ip-netmask":
                    try:
                        net = ipaddress.ip_network(text, strict=False)
                    except ValueError:
                        self.skip(f"{xp}/ip-netmask", f"address {name}: bad ip-netmask {text!r}")
                        continue
                    if net.version != 4:
                        self.skip(f"{xp}/ip-netmask", f"address {name}: IPv6 is not modelled")
                        continue
                    rng = text
                elif c.tag == "ip-range":
                    rng = text
                else:
                    self.skip(f"{xp}/{c.tag}", f"address {name}: <{c.tag}> is not modelled")
            if rng is not None:
                self.addresses[name] = [rng]
        self.address_groups = {}
        for name, (el, xp) in self.collect("address-group").items():
            st = el.find("static")
            if st is None:
                self.skip(xp + "/" + (el[0].tag if len(el) else ""), f"address group {name}: only static groups "
                          "are modelled")
                continue
            self.address_groups[name] = ([m.text.strip() for m in st.findall("member") if m.text], xp + "/static")
        self.services = {}
        for name, (el, xp) in self.collect("service").items():
            ports = []
            proto_el = el.find("protocol")
            for p in (list(proto_el) if proto_el is not None else []):
                if p.tag not in ("tcp", "udp"):
                    self.skip(f"{xp}/protocol/{p.tag}", f"service {name}: protocol {p.tag} is not modelled")
                    continue
                for c in p:
                    if c.tag == "port":
                        ports.extend(f"{p.tag}/{x.strip()}" for x in (c.text or "").split(",") if x.strip())
                    elif c.tag == "source-port":
                        self.skip(f"{xp}/protocol/{p.tag}/source-port", f"service {name}: source ports are not "
                                  "modelled (the service matches any source port)")
                    elif c.tag != "override":
                        self.skip(f"{xp}/protocol/{p.tag}/{c.tag}", f"service {name}: <{c.tag}> is not modelled")
            if ports:
                self.services[name] = ports
        self.service_groups = {n: ([m.text.strip() for m in el.findall("members/member") if m.text], xp)
                               for n, (el, xp) in self.collect("service-group").items()}
        self.app_groups = {n: ([m.text.strip() for m in el.findall("members/member") if m.text], xp)
                           for n, (el, xp) in self.collect("application-group").items()}
        for what in ("application-filter", "application"):
            for n, (_el, xp) in self.collect(what).items():
                self.skip(xp, f"{what} {n}: custom applications and filters are not modelled")
        self.url_lists = {}
        for name, (el, xp) in self.collect("profiles", "custom-url-category").items():
            typ = (el.findtext("type") or "URL List").strip()
            if typ != "URL List":
                self.skip(f"{xp}/type", f"custom URL category {name}: type {typ!r} is not modelled")
                continue
            members = [m.text.strip() for m in el.findall("list/member") if m.text and m.text.strip()]
            if members:
                self.url_lists[name] = members
            else:
                self.skip(f"{xp}/list", f"custom URL category {name}: empty list")

    # ------------------------------------------------------------------ resolving rule members
    def resolve_addresses(self, names, xp, depth=0):
        out = []
        for n in names:
            if n in self.addresses:
                out.extend(self.addresses[n])
            elif n in self.address_groups and depth < 16:
                members, gxp = self.address_groups[n]
                out.extend(self.resolve_addresses(members, gxp, depth + 1))
            else:
                try:
                    if "-" in n and "/" not in n:
                        for part in n.split("-", 1):
                            ipaddress.IPv4Address(part.strip())
                    else:
                        net = ipaddress.ip_network(n, strict=False)
                        if net.version != 4:
                            raise ValueError
                    out.append(n)
                except ValueError:
                    self.skip(f"{xp}/member[text()={_q(n)}]", f"address {n!r}: not a modelled address object, "
                              "group or IPv4 literal")
        return out

    def resolve_services(self, names, xp, depth=0):
        out = []
        for n in names:
            if n in self.services:
                out.extend(self.services[n])
            elif n in self.service_groups and depth < 16:
                members, gxp = self.service_groups[n]
                out.extend(self.resolve_services(members, gxp + "/members", depth + 1))
            elif n in _PREDEFINED_SERVICES:
                out.extend(_PREDEFINED_SERVICES[n])
            else:
                self.skip(f"{xp}/member[text()={_q(n)}]", f"service {n!r}: not a modelled service or group")
        return out

    def resolve_apps(self, names, xp, depth=0):
        out = []
        for n in names:
            if n in APP_ID and APP_ID[n] != APP_PENDING:
                out.append(n)
            elif n in self.app_groups and depth < 16:
                members, gxp = self.app_groups[n]
                out.extend(self.resolve_apps(members, gxp + "/members", depth + 1))
            else:
                self.skip(f"{xp}/member[text()={_q(n)}]", f"application {n!r}: not one App-ID identifies here")
        return list(dict.fromkeys(out))

    # ------------------------------------------------------------------ profiles
    def load_profiles(self):
        """YAML-shaped profiles {name: {...}} and the category names they and the rules use."""
        profiles = {}
        self.profile_kind = {}
        self.categories_used: set[str] = set()
        for name, (el, xp) in self.collect("profiles", "url-filtering").items():
            spec = {}
            taken: set[str] = set()
            for c in el:
                if c.tag in _URL_ACTIONS:
                    cats = [m.text.strip() for m in c.findall("member") if m.text]
                    for x in cats:
                        if x in taken:
                            self.skip(f"{xp}/{c.tag}/member[text()={_q(x)}]", f"URL-filtering profile {name}: "
                                      f"category {x!r} already has an action (the first one is kept)")
                    cats = [x for x in cats if x not in taken]
                    taken.update(cats)
                    if cats:
                        spec[c.tag] = cats
                        self.categories_used.update(cats)
                elif c.tag not in _METADATA:
                    self.skip(f"{xp}/{c.tag}", f"URL-filtering profile {name}: <{c.tag}> is not modelled")
            profiles[name] = {"url_filtering": spec}
            self.profile_kind[name] = "url-filtering"
        for kind in ("vulnerability", "spyware"):
            for name, (el, xp) in self.collect("profiles", kind).items():
                # PAN-OS evaluates the profile's rules top-down: the first rule naming a severity (or any) decides.
                rules = []
                block_ip = None
                for rname, rel, rxp in _Scope(el, xp).entries("rules"):
                    act = rel.find("action")
                    a = act[0].tag if act is not None and len(act) else "default"
                    if a == "block-ip" and block_ip is None:
                        # <block-ip><track-by>source</track-by><duration>120</duration></block-ip>: the first
                        # rule's settings stand for the profile
                        track = (act[0].findtext("track-by") or "source").strip()
                        dur = (act[0].findtext("duration") or "").strip()
                        block_ip = {"track_by": track}
                        if dur.isdigit():
                            block_ip["duration"] = int(dur)
                    if a not in _THREAT_ACTIONS:
                        self.skip(f"{rxp}/action/{a}", f"{kind} profile {name}, rule {rname}: action {a} is not "
                                  "modelled (taken as default)")
                        a = "default"
                    tn = (rel.findtext("threat-name") or "any").strip()
                    if tn != "any":
                        self.skip(f"{rxp}/threat-name", f"{kind} profile {name}, rule {rname}: threat-name filters "
                                  "are not modelled; rule left out")
                        continue
                    for c in rel:
                        if c.tag not in ("action", "severity", "threat-name", "category", "packet-capture", "host",
                                         "cve", "vendor-id", *_METADATA):
                            self.skip(f"{rxp}/{c.tag}", f"{kind} profile {name}, rule {rname}: <{c.tag}> is not "
                                      "modelled")
                    for tag in ("host", "category"):
                        v = (rel.findtext(tag) or "any").strip()
                        if v != "any":
                            self.skip(f"{rxp}/{tag}", f"{kind} profile {name}, rule {rname}: {tag} {v!r} is not "
                                      "modelled (taken as any)")
                    sev = [m.text.strip() for m in rel.findall("severity/member") if m.text] or ["any"]
                    rules.append((sev, a))
                for c in el:
                    if c.tag not in ("rules", *_METADATA):
                        self.skip(f"{xp}/{c.tag}", f"{kind} profile {name}: <{c.tag}> is not modelled")
                if name in profiles:
                    self.skip(xp, f"{kind} profile {name}: the name is taken by another profile")
                    continue
                by_sev = {}
                for level in ("critical", "high", "medium", "low", "informational"):
                    hit = next((a for sev, a in rules if level in sev or "any" in sev), "allow")
                    by_sev[level] = hit
                base = next((a for sev, a in rules if "any" in sev), "allow" if rules else "default")
                profiles[name] = {"threat": {"action": base, "severity": by_sev,
                                             **({"block_ip": block_ip} if block_ip else {})}}
                self.profile_kind[name] = kind
        for kind in ("virus", "file-blocking", "wildfire-analysis", "data-filtering", "dos-protection"):
            for name, (_el, xp) in self.collect("profiles", kind).items():
                self.skip(xp, f"{kind} profile {name}: not modelled")
        for name, (el, xp) in self.collect("profile-group").items():
            members = []
            for c in el:
                ms = [m.text.strip() for m in c.findall("member") if m.text]
                if c.tag in ("url-filtering", "vulnerability", "spyware"):
                    for m in ms:
                        if self.profile_kind.get(m) == c.tag:
                            members.append(m)
                        else:
                            self.skip(f"{xp}/{c.tag}/member[text()={_q(m)}]", f"profile group {name}: no "
                                      f"{c.tag} profile {m!r}")
                elif ms:
                    self.skip(f"{xp}/{c.tag}", f"profile group {name}: {c.tag} profiles are not modelled")
            if name in profiles:
                self.skip(xp, f"profile group {name}: the name is taken by a profile")
                continue
            profiles[name] = {"group": members} if members else None
            if not members:
                del profiles[name]
                self.profile_kind[name] = "empty-group"
                continue
            self.profile_kind[name] = "group"
        return profiles

    # ------------------------------------------------------------------ rules
    def rulebases(self):
        """(xpath, <rules> element) in evaluation order."""
        out = []
        if self.panorama:
            order = []
            if self.shared is not None:
                order.append((self.shared, "pre-rulebase"))
            order += [(self.main, "pre-rulebase"), (self.main, "post-rulebase")]
            if self.shared is not None:
                order.append((self.shared, "post-rulebase"))
            for scope, rb in order:
                el = scope.el.find(f"{rb}/security/rules")
                if el is not None:
                    out.append((f"{scope.xpath}/{rb}/security/rules", el))
            for scope in self.scopes:
                if scope.el.find("rulebase/security/rules") is not None:
                    self.skip(f"{scope.xpath}/rulebase/security", "a Panorama scope's local rulebase is not "
                              "pushed to firewalls")
        else:
            el = self.main.el.find("rulebase/security/rules")
            if el is not None:
                out.append((f"{self.main.xpath}/rulebase/security/rules", el))
        return out

    def default_rules(self):
        """(intrazone action, interzone action) from default-security-rules."""
        acts = {"intrazone-default": "allow", "interzone-default": "deny"}
        places = [(s, "rulebase") for s in self.scopes] + [(s, rb) for s in self.scopes
                                                           for rb in ("pre-rulebase", "post-rulebase")]
        for scope, rb in reversed(places):
            for name, el, xp in _Scope(scope.el, scope.xpath).entries(rb, "default-security-rules", "rules"):
                if name not in acts:
                    self.skip(xp, f"default rule {name!r}: unknown")
                    continue
                a = (el.findtext("action") or acts[name]).strip()
                if a not in _RULE_ACTIONS:
                    self.skip(f"{xp}/action", f"default rule {name}: action {a!r} is not modelled")
                    continue
                acts[name] = a
                for c in el:
                    if c.tag not in ("action", *_METADATA):
                        self.skip(f"{xp}/{c.tag}", f"default rule {name}: <{c.tag}> is not modelled")
        return acts["intrazone-default"], acts["interzone-default"]


def _members(el, tag):
    node = el.find(tag)
    if node is None:
        return None
    return [m.text.strip() for m in node.findall("member") if m.text and m.text.strip()]


def load_panos(path, zones=None, url_database=None, signature_files=(), tcp_reject_non_syn=True,
               device_group=None, vsys=None):
    """A :class:`~gwlb_fast.stages.policy.Policy` from a PAN-OS / Panorama XML export (see the module docstring).

    Parameters
    ----------
    path : str or os.PathLike
    zones : dict[str, list[str]], optional
        Zone name -> GWLB endpoint names (stands in for the VM-Series plugin's endpoint association).
    url_database : path, optional
        ``domain,category`` lines that fill predefined URL categories.
    device_group, vsys : str, optional
        Which Panorama device group / firewall vsys to read when the file has several.

    Raises
    ------
    ConfigError
        A file that cannot be read or parsed, or an ambiguous device group / vsys.
    """
    from ..stages.policy import Policy, _Names, _parse_rule, _RuleError
    from .profiles import Profiles
    from .urlcat import UrlCategories

    ld = _Loader(path, device_group, vsys)
    src = str(ld.path)
    ld.load_objects()
    profiles_raw = ld.load_profiles()
    # Zones: the configuration's zones, in order, each with the endpoints the topology maps to it.
    xml_zones = [n for n, _el, _xp in ld.main.entries("zone")]
    if ld.panorama:
        for tmpl_zone in ld.root.iterfind("devices/entry/template/entry/config/devices/entry/vsys/entry/zone/entry"):
            xml_zones.append(tmpl_zone.get("name", ""))
    zone_map = {z: tuple(eps) for z, eps in (zones or {}).items()}
    for z in zone_map:
        if xml_zones and z not in xml_zones:
            raise ConfigError(f"{src}: zone {z!r} of the topology's zones mapping is not a zone of the configuration "
                              f"({', '.join(xml_zones)})")
    all_zones = {z: zone_map.get(z, ()) for z in dict.fromkeys(xml_zones)}
    for z, eps in zone_map.items():
        all_zones.setdefault(z, eps)
    zone_index = {z: i for i, z in enumerate(all_zones)}

    raw_rules = []
    for rxp, rules_el in ld.rulebases():
        for entry in rules_el.findall("entry"):
            name = entry.get("name", "")
            xp = f"{rxp}/entry[@name={_q(name)}]"
            if (entry.findtext("disabled") or "no").strip() == "yes":
                ld.skip(xp, f"rule {name}: disabled (not in force)")
                continue
            raw, ok = {"name": name}, True
            for c in entry:
                if c.tag in _METADATA or c.tag in _RULE_FIELDS:
                    continue
                ld.skip(f"{xp}/{c.tag}", f"rule {name}: <{c.tag}> is not modelled")
            for tag in ("source-user", "source-hip", "destination-hip"):
                m = _members(entry, tag)
                if m and m != ["any"]:
                    ld.skip(f"{xp}/{tag}", f"rule {name}: {tag} is not modelled (taken as any)")
            for tag in ("negate-source", "negate-destination"):
                if (entry.findtext(tag) or "no").strip() == "yes":
                    ld.skip(f"{xp}/{tag}", f"rule {name}: {tag} is not modelled; rule not imported")
                    ok = False
            rtype = (entry.findtext("rule-type") or "universal").strip()
            if rtype != "universal":
                ld.skip(f"{xp}/rule-type", f"rule {name}: rule-type {rtype} is not modelled (taken as universal)")
            for tag, key in (("from", "from"), ("to", "to")):
                m = _members(entry, tag) or ["any"]
                if m != ["any"]:
                    known = [z for z in m if z in zone_index]
                    for z in m:
                        if z not in zone_index:
                            ld.skip(f"{xp}/{tag}/member[text()={_q(z)}]", f"rule {name}: unknown zone {z!r}")
                    if not known:
                        ok = False
                    raw[key] = known
            for tag in ("source", "destination"):
                m = _members(entry, tag) or ["any"]
                if m != ["any"]:
                    got = ld.resolve_addresses(m, f"{xp}/{tag}")
                    if not got:
                        ok = False
                    raw[tag] = got
            apps = _members(entry, "application") or ["any"]
            if apps != ["any"]:
                got = ld.resolve_apps(apps, f"{xp}/application")
                if not got:
                    ok = False
                raw["application"] = got
            svc = _members(entry, "service") or ["any"]
            if svc in (["any"], ["application-default"]):
                raw["service"] = svc[0]
            else:
                got = ld.resolve_services(svc, f"{xp}/service")
                if not got:
                    ok = False
                raw["service"] = got
            cats = _members(entry, "category") or ["any"]
            if cats != ["any"]:
                raw["category"] = cats
                ld.categories_used.update(cats)
            act = (entry.findtext("action") or "").strip()
            if act not in _RULE_ACTIONS:
                ld.skip(f"{xp}/action", f"rule {name}: action {act!r} is not modelled; rule not imported")
                ok = False
            raw["action"] = act
            ps = entry.find("profile-setting")
            if ps is not None:
                profs = []
                for g in _members(ps, "group") or []:
                    if ld.profile_kind.get(g) == "group":
                        profs.append(g)
                    elif ld.profile_kind.get(g) != "empty-group":
                        ld.skip(f"{xp}/profile-setting/group/member[text()={_q(g)}]",
                                f"rule {name}: unknown profile group {g!r}")
                inline = ps.find("profiles")
                for c in (list(inline) if inline is not None else []):
                    for m in [x.text.strip() for x in c.findall("member") if x.text]:
                        if ld.profile_kind.get(m) == c.tag:
                            profs.append(m)
                        else:
                            ld.skip(f"{xp}/profile-setting/profiles/{c.tag}/member[text()={_q(m)}]",
                                    f"rule {name}: {c.tag} profile {m!r} is not modelled")
                if profs:
                    raw["profile"] = profs
            if not ok:
                ld.skip(xp, f"rule {name}: not imported (a field has no modelled member)")
                continue
            raw_rules.append((raw, xp))

    # URL categories: the custom lists, then predefined names that rules and profiles use.
    extra = sorted(c for c in ld.categories_used if c not in ld.url_lists and c != "any")
    try:
        urlcats = UrlCategories(ld.url_lists, url_database, extra_names=extra)
    except ConfigError as exc:
        raise ConfigError(f"{src}: {exc}") from None
    try:
        profiles = Profiles.from_config(profiles_raw, urlcats)
    except ConfigError as exc:
        raise ConfigError(f"{src}: profiles{exc}") from None
    names = _Names(zone_index, urlcats.index, profiles.names)
    rules = []
    seen = set()
    for raw, xp in raw_rules:
        if raw["name"] in seen:
            ld.skip(xp, f"rule {raw['name']}: a rule of that name came earlier; not imported")
            continue
        try:
            rules.append(_parse_rule(len(rules), raw, names))
        except _RuleError as exc:
            ld.skip(xp, f"rule {raw['name']}: {exc.field}: {exc.problem}; not imported")
            continue
        seen.add(raw["name"])
    intra, inter = ld.default_rules()
    if intra != inter:
        for z in all_zones:
            raw = {"name": f"intrazone-default:{z}", "from": [z], "to": [z], "action": intra}
            rules.append(_parse_rule(len(rules), raw, names))
    return Policy(rules, inter, all_zones, source=src, url_categories=urlcats, profiles=profiles,
                  signature_files=signature_files, tcp_reject_non_syn=tcp_reject_non_syn,
                  unsupported=ld.unsupported)
