"""App-ID by content and extraction of HTTP Host / method / URI / User-Agent, TLS SNI and DNS query names
(DESIGN.md section 12, issue 11 items 2 and 3).

The identification reads the two heads a :class:`~gwlb_fast.inspect.stream.StreamTable` keeps per session, in one
nogil pass over the sessions that got new bytes (``_kernels.appid.identify``). Protocols are recognised by their
first bytes, never by port: HTTP request methods and ``HTTP/1.x`` responses (web-browsing), TLS handshake records
carrying a ClientHello or ServerHello (ssl), DNS messages with a well-formed first question over UDP or TCP (dns),
``SSH-`` banners, SMTP and FTP banners and first commands, the MySQL server greeting, SOCKS 4/5 requests, QUIC long
headers of known versions in a padded Initial, NTP modes 1-5 in 48-byte messages and SNMP v1/v2c/v3 BER messages.
A session is ``pending`` while a prefix may still become one of them (at most 64 client bytes), then the application
or ``unknown-tcp`` / ``unknown-udp``; a session that ends with no payload is ``incomplete``, one that ends on an
undecided prefix ``insufficient-data``.
"""
from __future__ import annotations

import numpy as np

from .._kernels import appid as _k
from .applications import APP_ID

__all__ = ["FIELDS", "IDS", "identify"]

#: extracted field names, in the kernel's column order
FIELDS = ("method", "uri", "host", "user_agent", "sni", "dns_query")
assert len(FIELDS) == _k.N_FIELDS

#: application ids in the kernel's I_* order
IDS = np.array([APP_ID[name] for name in (
    "pending", "insufficient-data", "unknown-tcp", "unknown-udp", "web-browsing", "ssl", "dns", "ssh", "smtp",
    "ftp", "quic", "ntp", "snmp", "mysql", "socks", "incomplete")], np.int32)
assert IDS.shape[0] == _k.N_IDS


def identify(rows, head, nxt, sflags, proto, ended, app, done, fields, flen, full_flag) -> None:
    """Identify ``rows`` of a session pool in place (see ``_kernels.appid.identify``)."""
    _k.identify(np.ascontiguousarray(rows, np.int64), head, nxt, sflags, proto, ended, IDS, app, done, fields,
                flen, int(full_flag))
