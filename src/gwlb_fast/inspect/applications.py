"""App-ID application names (PAN-OS spelling) and their numeric ids, the one table every part of inspection shares.

An application id is an index into :data:`APPLICATIONS`. The policy's ``application:`` rule field, the App-ID kernel's
output column and the logs all use these ids. Two ids are states of identification rather than applications:
``APP_PENDING`` (the session is still being identified: PAN-OS allows it and looks the policy up again once the
application is known) and ``incomplete`` / ``insufficient-data`` (PAN-OS's labels for sessions that ended before
identification: no payload after the handshake, or too little to decide).

``DEFAULT_PORTS`` is each application's standard ports (``service: application-default``), as PAN-OS's Applipedia
lists them: (protocol number, port) pairs.
"""
from __future__ import annotations

APPLICATIONS: tuple[str, ...] = (
    "pending",            # 0: not identified yet (never logged as the final application)
    "incomplete",         # the handshake only, no payload
    "insufficient-data",  # payload too short to identify
    "unknown-tcp",
    "unknown-udp",
    "web-browsing",
    "ssl",
    "dns",
    "ssh",
    "smtp",
    "ftp",
    "quic",
    "ntp",
    "snmp",
    "mysql",
    "socks",
    "icmp",
    "ping",
    "traceroute",
    "unknown-p2p",
)
APP_ID: dict[str, int] = {name: i for i, name in enumerate(APPLICATIONS)}
APP_PENDING = APP_ID["pending"]

_TCP, _UDP = 6, 17
DEFAULT_PORTS: dict[str, tuple[tuple[int, int], ...]] = {
    "web-browsing": ((_TCP, 80),),
    "ssl": ((_TCP, 443),),
    "dns": ((_TCP, 53), (_UDP, 53)),
    "ssh": ((_TCP, 22),),
    "smtp": ((_TCP, 25), (_TCP, 587)),
    "ftp": ((_TCP, 21),),
    "quic": ((_UDP, 443), (_UDP, 80)),
    "ntp": ((_UDP, 123),),
    "snmp": ((_UDP, 161), (_UDP, 162)),
    "mysql": ((_TCP, 3306),),
    "socks": ((_TCP, 1080),),
}
