"""Application payloads for synthetic traffic (issue 11 item 8): HTTP requests, TLS ClientHellos, DNS queries.

Built from the RFCs' layouts with ``struct``; the tests check them with dpkt's parsers. A ClientHello can carry a
large key share (``key_share_len``: an X25519MLKEM768 share is 1216 bytes, RFC draft-ietf-tls-ecdhe-mlkem), which
makes it longer than one 1460-byte segment, as post-quantum browsers' ClientHellos are.
"""
from __future__ import annotations

import struct

__all__ = ["dns_query", "http_request", "tls_client_hello"]


def http_request(host: str, path: str = "/", method: str = "GET", user_agent: str = "gwlb-fast-synth/1.0") -> bytes:
    """An HTTP/1.1 request (RFC 9112) with Host and User-Agent."""
    return (f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {user_agent}\r\nAccept: */*\r\n\r\n"
            .encode("latin-1"))


def tls_client_hello(sni: str | None, key_share_len: int = 32, random: bytes = b"\x11" * 32, padding: int = 0) -> bytes:
    """One TLS record holding a ClientHello (RFC 8446 section 4.1.2) with server_name (RFC 6066 section 3),
    supported_versions, a key_share entry of ``key_share_len`` bytes and ``padding`` bytes of the padding extension
    (RFC 7685)."""
    exts = b""
    if sni is not None:
        name = sni.encode("idna") if sni else b""
        entry = b"\x00" + struct.pack("!H", len(name)) + name
        body = struct.pack("!H", len(entry)) + entry
        exts += struct.pack("!HH", 0, len(body)) + body
    sv = b"\x02\x03\x04"
    exts += struct.pack("!HH", 43, len(sv) + 1) + bytes([len(sv)]) + sv
    group = 0x11EC if key_share_len > 32 else 0x001D
    ks_entry = struct.pack("!HH", group, key_share_len) + bytes((i * 7) & 0xFF for i in range(key_share_len))
    ks = struct.pack("!H", len(ks_entry)) + ks_entry
    exts += struct.pack("!HH", 51, len(ks)) + ks
    if padding:
        exts += struct.pack("!HH", 21, padding) + bytes(padding)
    suites = b"\x13\x01\x13\x02\x13\x03\xc0\x2f"
    hello = (b"\x03\x03" + random + b"\x20" + b"\x22" * 32 + struct.pack("!H", len(suites)) + suites + b"\x01\x00"
             + struct.pack("!H", len(exts)) + exts)
    hs = b"\x01" + struct.pack("!I", len(hello))[1:] + hello
    return b"\x16\x03\x01" + struct.pack("!H", len(hs)) + hs


def dns_query(name: str, qid: int = 0x1234, qtype: int = 1) -> bytes:
    """A recursive DNS query for ``name`` (RFC 1035 section 4.1)."""
    q = b"".join(bytes([len(lab)]) + lab for lab in name.encode("ascii").split(b".") if lab) + b"\x00"
    return struct.pack("!HHHHHH", qid & 0xFFFF, 0x0100, 1, 0, 0, 0) + q + struct.pack("!HH", qtype, 1)
