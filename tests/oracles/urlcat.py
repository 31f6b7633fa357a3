"""Plain-Python reference for URL categorisation: each PAN-OS URL-list entry as a regular expression.

Written from PAN-OS's guidelines for URL category exception lists (see ``gwlb_fast.inspect.urlcat``), independently
of the kernel's token programs and host tables.
"""
import re

SEPS = "./?&=;+"
_TOK = f"[^{re.escape(SEPS)}]+"
_HOST_STAR = f"{_TOK}(?:[{re.escape(SEPS.replace('/', ''))}]+{_TOK})*"
_PATH_STAR = f"{_TOK}(?:[{re.escape(SEPS)}]+{_TOK})*"


def entry_regex(entry: str) -> re.Pattern:
    t = entry.strip().lower()
    for scheme in ("http://", "https://"):
        t = t.removeprefix(scheme)
    if "/" not in t and not t.endswith("*"):
        t += "/"
    out = []
    in_host = True
    for part in re.split(f"([{re.escape(SEPS)}])", t):
        if part == "":
            continue
        if part in SEPS:
            out.append(re.escape(part))
            if part == "/":
                in_host = False
        elif part == "*":
            out.append(f"(?:{_HOST_STAR if in_host else _PATH_STAR})")
        elif part == "^":
            out.append(_TOK)
        else:
            out.append(re.escape(part))
    # The URL may go on after the entry, from a token boundary: after a separator anything, else a separator.
    tail = "" if t[-1] in SEPS else f"(?=$|[{re.escape(SEPS)}])"
    return re.compile("".join(out) + tail)


def normalize(host: str, path: str | None) -> tuple[str, str]:
    h = host.split(":", 1)[0].rstrip(".").lower()
    p = (path or "").lower()
    p = p.removeprefix("/")
    return h, h + "/" + p


def categorize(custom: dict, database: dict, names: list, host, path=None) -> list[int]:
    """Sorted category ids of one URL (``names``: id -> name; ``database``: domain -> [category names])."""
    if host is None:
        return []
    h, url = normalize(host, path)
    found = set()
    for name, entries in custom.items():
        if any(entry_regex(e).match(url) for e in entries):
            found.add(names.index(name))
    labels = h.split(".")
    for k in range(len(labels)):
        dom = ".".join(labels[k:])
        if dom in database:
            found.update(names.index(c) for c in database[dom])
            break
    if not found:
        found.add(names.index("unknown"))
    return sorted(found)
