"""App-ID and field extraction: known answers built with dpkt / the payload builders (checked by dpkt's parsers),
splits across segments, raw fuzz, and agreement with Suricata's app_proto on the real captures."""
import json
import shutil
import subprocess

import dpkt
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import gwlb_fast as gf
from gwlb_fast.batch import PacketBatch
from gwlb_fast.inspect.inspector import Inspector, inspect_flows
from gwlb_fast.inspect.payloads import dns_query, http_request, tls_client_hello
from tests.shared_data import data_path

C, S = b"\x0a\x01\x01\x05", b"\x5d\xb8\xd8\x22"


def frame(payload, *, proto=6, seq=1, flags=0x18, reply=False, sport=40000, dport=443):
    src, dst = (S, C) if reply else (C, S)
    sp, dp = (dport, sport) if reply else (sport, dport)
    if proto == 6:
        l4 = dpkt.tcp.TCP(sport=sp, dport=dp, seq=seq & 0xFFFFFFFF, flags=flags, data=payload)
    else:
        l4 = dpkt.udp.UDP(sport=sp, dport=dp, data=payload)
        l4.ulen = 8 + len(payload)
    ip = dpkt.ip.IP(src=src, dst=dst, p=proto, data=l4)
    ip.len = 20 + len(bytes(l4))
    return bytes(dpkt.ethernet.Ethernet(dst=b"\x02" * 6, src=b"\x04" * 6, type=0x0800, data=ip))


def tcp_session(client_chunks, server_chunks=(), dport=443):
    """Handshake then client chunks (each one segment) then server chunks."""
    fr = [frame(b"", flags=0x02, seq=100, dport=dport), frame(b"", flags=0x12, seq=900, reply=True, dport=dport)]
    seq = 101
    for ch in client_chunks:
        fr.append(frame(ch, seq=seq, dport=dport))
        seq += len(ch)
    seq = 901
    for ch in server_chunks:
        fr.append(frame(ch, seq=seq, reply=True, dport=dport))
        seq += len(ch)
    return fr


def run(frames, chunk=None):
    batch = PacketBatch.from_packets(frames).parse()
    if chunk:
        batches = [batch[i:i + chunk] for i in range(0, len(batch), chunk)]
    else:
        batches = [batch]
    return inspect_flows(batches)


def test_builders_agree_with_dpkt():
    ch = dpkt.ssl.TLSRecord(tls_client_hello("shop.example.com", key_share_len=1216))
    hello = dpkt.ssl.TLSHandshake(ch.data).data
    assert isinstance(hello, dpkt.ssl.TLSClientHello)
    sni = next(d for t, d in hello.extensions if t == 0)
    assert sni[5:] == b"shop.example.com"
    q = dpkt.dns.DNS(dns_query("www.example.org"))
    assert q.qd[0].name == "www.example.org" and q.opcode == 0 and q.qr == 0
    req = dpkt.http.Request(http_request("h.test", "/a?b=1"))
    assert req.headers["host"] == "h.test" and req.uri == "/a?b=1"


def test_http_fields():
    (rec,) = run(tcp_session([http_request("www.example.com", "/x/y?z=1", method="POST", user_agent="UA/2")],
                             [b"HTTP/1.1 200 OK\r\n\r\n"], dport=8080))
    assert rec["application"] == "web-browsing"
    assert (rec["method"], rec["uri"], rec["host"], rec["user_agent"]) == ("POST", "/x/y?z=1", "www.example.com",
                                                                         "UA/2")


@pytest.mark.parametrize("split", [1, 5, 300, 1460])
@pytest.mark.parametrize("chunk", [None, 1, 3])
def test_sni_across_segments_and_batches(split, chunk):
    ch = tls_client_hello("pq.example.net", key_share_len=1216, padding=500)
    assert len(ch) > 1460
    parts = [ch[i:i + split] for i in range(0, len(ch), split)]
    (rec,) = run(tcp_session(parts, dport=8443), chunk=chunk)
    assert rec["application"] == "ssl" and rec["sni"] == "pq.example.net"


def test_sni_with_out_of_order_second_segment():
    ch = tls_client_hello("ooo.example.net", key_share_len=1216, padding=500)
    fr = tcp_session([ch[:1000], ch[1000:]])
    fr[2], fr[3] = fr[3], fr[2]
    (rec,) = run(fr)
    assert rec["sni"] == "ooo.example.net"


def test_no_sni_and_no_payload():
    (rec,) = run(tcp_session([tls_client_hello(None)]))
    assert rec["application"] == "ssl" and rec["sni"] is None
    (rec,) = run(tcp_session([]))
    assert rec["application"] == "incomplete"
    (rec,) = run(tcp_session([b"GE"]))
    assert rec["application"] == "insufficient-data"


def test_dns_udp_and_tcp():
    q = dns_query("mail.example.org")
    (rec,) = run([frame(q, proto=17, sport=5353, dport=5300)])   # not the DNS port: content decides
    assert rec["application"] == "dns" and rec["dns_query"] == "mail.example.org"
    (rec,) = run(tcp_session([len(q).to_bytes(2, "big") + q], dport=53))
    assert rec["application"] == "dns" and rec["dns_query"] == "mail.example.org"


@pytest.mark.parametrize("client,server,app", [
    ([b"SSH-2.0-OpenSSH_9.2\r\n"], [], "ssh"),
    ([], [b"SSH-2.0-OpenSSH_9.2\r\n"], "ssh"),
    ([], [b"220 mx.example.com ESMTP Postfix\r\n"], "smtp"),
    ([b"EHLO client\r\n"], [b"220 mx.example.com ready\r\n"], "smtp"),
    ([], [b"220 (vsFTPd 3.0.3)\r\n"], "ftp"),
    ([], [b"220 Welcome\r\n"], "insufficient-data"),
    ([b"USER anonymous\r\n"], [b"220 Welcome\r\n"], "ftp"),
    ([], [b"220 ProFTPD FTP Server ready\r\n"], "ftp"),
    ([], [b"\x4a\x00\x00\x00\x0a8.0.36\x00" + b"\x01" * 60], "mysql"),
    ([b"\x05\x01\x00"], [b"\x05\x00"], "socks"),
    ([b"\x04\x01\x00\x50\x5d\xb8\xd8\x22user\x00"], [], "socks"),
    ([b"\x00\x01\x02\x03" * 30], [], "unknown-tcp"),
])
def test_tcp_applications(client, server, app):
    (rec,) = run(tcp_session(client, server, dport=12345))
    assert rec["application"] == app


def test_udp_applications():
    ntp = bytes([0x23]) + bytes(47)
    quic = bytes([0xC3]) + (1).to_bytes(4, "big") + b"\x08" + b"\x01" * 8 + b"\x00" + bytes(1200)
    snmp = bytes.fromhex("302602010104067075626c6963a019020101020100020100300e300c06082b060102010101000500")
    for payload, app in ((ntp, "ntp"), (quic, "quic"), (snmp, "snmp"), (b"\x01\x02\x03", "unknown-udp")):
        (rec,) = run([frame(payload, proto=17, sport=40000, dport=40001)])
        assert rec["application"] == app, payload[:8]


def test_pool_full_sessions_not_inspected():
    insp = Inspector(8, capacity=1, head_size=128)
    b = PacketBatch.from_packets([frame(dns_query("a.b"), proto=17), frame(dns_query("c.d"), proto=17, sport=1)])
    b.parse()
    insp.process(b, np.array([0, 1]), np.array([1, 1], np.uint8), np.zeros(2, np.uint8))
    assert insp.streams.refused == 1
    res = insp.end(np.array([0, 1]))
    assert res["dns_query"] == [b"a.b", None]


@given(st.lists(st.binary(max_size=200), min_size=1, max_size=6), st.booleans())
def test_raw_payload_fuzz(chunks, udp):
    frames = [frame(c, proto=17) for c in chunks] if udp else tcp_session(chunks)
    recs = run(frames)
    for rec in recs:
        assert rec["application"] in gf.inspect.applications.APPLICATIONS
        for k in ("host", "uri", "sni", "dns_query"):
            assert rec[k] is None or len(rec[k]) <= 256


# ---------------------------------------------------------------- Suricata agreement on the real captures
SURICATA_APP = {"http": "web-browsing", "tls": "ssl", "dns": "dns", "ssh": "ssh", "smtp": "smtp", "ftp": "ftp",
                "quic": "quic", "ntp": "ntp", "snmp": "snmp", "mysql": "mysql", "socks": "socks"}
REAL = sorted(p.name for p in data_path("captures", "real").glob("*.pcap*")) if data_path("captures", "real").is_dir() \
    else []


def suricata_flows(pcap, outdir, rules=None):
    cmd = ["suricata", "-r", str(pcap), "-l", str(outdir), "-k", "none", "--runmode", "single"]
    if rules:
        cmd += ["-S", str(rules)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    events = [json.loads(ln) for ln in (outdir / "eve.json").read_text().splitlines() if ln.strip()]
    return events


def flow_key(proto, a, ap, b, bp):
    return (proto,) + tuple(sorted([(a, ap), (b, bp)]))


@pytest.mark.skipif(shutil.which("suricata") is None, reason="suricata not installed")
@pytest.mark.parametrize("name", REAL)
def test_app_id_agrees_with_suricata(name, tmp_path):
    pcap = data_path("captures", "real", name)
    events = suricata_flows(pcap, tmp_path)
    theirs = {}
    for ev in events:
        if ev.get("event_type") == "flow" and ev.get("app_proto") in SURICATA_APP and ":" not in ev["src_ip"]:
            p = {"TCP": 6, "UDP": 17}[ev["proto"]]
            theirs[flow_key(p, ev["src_ip"], ev["src_port"], ev["dest_ip"], ev["dest_port"])] = ev["app_proto"]
    ours = {flow_key(r["proto"], r["client_ip"], r["client_port"], r["server_ip"], r["server_port"]): r["application"]
            for r in inspect_flows(gf.read_pcap(pcap))}
    for key, proto in theirs.items():
        assert ours.get(key) == SURICATA_APP[proto], (key, proto)
