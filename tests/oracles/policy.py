"""Plain-Python reference for the content fields of the policy (application, service, category).

``first_match`` walks the rules in order and decides every field from the rule as parsed, without boxes, trees or
bitmaps: the executable form of the semantics in ``Classifier.classify``'s docstring.
"""
from gwlb_fast.inspect.applications import APP_PENDING, APPLICATIONS, DEFAULT_PORTS

ZONE_UNKNOWN = 255


def _in(ranges, v):
    return any(lo <= v <= hi for lo, hi in ranges)


def _defaults(app_id):
    name = APPLICATIONS[app_id] if 0 <= app_id < len(APPLICATIONS) else None
    return set(DEFAULT_PORTS.get(name, ()))


def rule_matches(r, src, dst, sport, dport, proto, zf, zt, app, cats):
    if not (_in(r.src, src) and _in(r.dst, dst) and _in(r.sport, sport) and _in(r.proto, proto)
            and _in(r.zone_from, zf) and _in(r.zone_to, zt) and _in(r.dport, dport)):
        return False
    pending = app == APP_PENDING
    if r.service == "ports":
        if not any(_in([pr], proto) and _in([dr], dport) for pr, dr in r.l4):
            return False
    elif r.service == "application-default":
        if pending:
            if r.application is not None:
                allowed = set()
                for a in r.application:
                    allowed |= _defaults(a)
                if (proto, dport) not in allowed:
                    return False
        elif (proto, dport) not in _defaults(app):
            return False
    if r.application is not None and not pending and app not in r.application:
        return False
    if r.category is not None:
        known = [c for c in cats if c >= 0]
        if not known:
            return pending
        if not any(c in r.category for c in known):
            return False
    return True


def first_match(rules, src, dst, sport, dport, proto, zf=ZONE_UNKNOWN, zt=ZONE_UNKNOWN, app=APP_PENDING, cats=()):
    for i, r in enumerate(rules):
        if rule_matches(r, src, dst, sport, dport, proto, zf, zt, app, cats):
            return i
    return -1
