"""Synthetic traffic as the business VPC sees it, for the demo, the tests and the benchmarks.

The topology is the example of DESIGN.md section 6: app subnet 10.1.1.0/24 with the app servers, NAT gateway
public IP 203.0.113.10, DNAT tcp/443 -> 10.1.1.20:8443. Every flow is one of these categories:

==============  =========  ==========================================================================  ==========
category        kind       what it is                                                                  example
                                                                                                       policy
==============  =========  ==========================================================================  ==========
``tcp-out``     TCP        app server -> Internet host, port 443 (70 %) or 80                          allow
``tcp-in``      TCP        Internet client -> 203.0.113.10:443, served by 10.1.1.20:8443 (DNAT)        allow
``udp-dns``     UDP_DNS    app server -> public resolver, port 53, DNS A query and answer              allow
``icmp``        ICMP       app server -> Internet host, echo request and reply (ping)                  deny
``tcp-denied``  TCP        app server -> Internet host, port 22 or 3389                                deny
``udp-denied``  UDP        app server -> public NTP server, port 123                                   deny
``tcp-east-``   TCP        app server -> a server of another VPC, port 443, through a transit router   allow
``west``                   (only with an address plan that has east-west servers, share 0 by default)
==============  =========  ==========================================================================  ==========

The addresses come from an :class:`AddressPlan`: ``DEFAULT_PLAN`` is the example above; ``CENTRALIZED_PLAN`` is
``examples/centralized.yaml`` (DESIGN.md section 13): app servers in two spoke VPCs (10.1.1.0/24, 10.2.1.0/24),
NAT public IP 203.0.113.20, DNAT tcp/443 -> 10.2.1.20:8443 in spoke-b, east-west flows from spoke-a to servers
10.2.1.30-34:443 in spoke-b.

"example policy" is the ``security_policy`` of DESIGN.md section 6 (web out, DNS out, https in to 10.1.1.20:8443,
everything else denied); ``GroundTruth.denied`` holds it per flow.

How each direction appears in the capture (DESIGN.md section 7: ``run`` reads the capture as seen on the business
side; packets from a VPC subnet enter at their subnet's route table, packets from outside enter at the NAT gateway):

- outbound flows (every category but ``tcp-in``): the app server's packets carry its private address and port
  (10.1.1.x:eph -> remote:port), before SNAT; the replies carry the private destination too
  (remote:port -> 10.1.1.x:eph), i.e. as the app server receives them after the NAT gateway's reverse translation.
- inbound flows (``tcp-in``): the Internet client's packets are addressed to the public side, client:eph ->
  203.0.113.10:443, as they arrive at the NAT gateway before DNAT; the server's replies are
  10.1.1.20:8443 -> client:eph, as the server sends them, before the reverse translation.

So the 5-tuples of the two directions of an inbound flow differ; ``GroundTruth`` records both (``server_ip`` /
``server_port`` for the first, ``reply_ip`` / ``reply_port`` for the second).

Every category is generated as offered traffic, complete in both directions, whatever the policy says: a flow the
example policy denies still has its replies in the capture, so that a replay shows every one of its packets dropped
(the requests by the firewall, the replies at the NAT gateway, which has no translation for them).

TCP sessions have a three-way handshake (SYN and SYN-ACK carry an MSS option), data both ways with consistent
sequence and acknowledgment numbers (IMIX sizes: IPv4 total length 64/576/1500 with weights 7:4:1, so payloads of
24/536/1460 bytes), then a FIN exchange by either side or an RST; a 2-packet TCP flow is a refused connection (SYN,
RST-ACK), a 3-packet one a bare handshake. Data on port 443/8443 is framed as TLS application-data records. UDP and
ICMP flows alternate request and answer (an odd count ends with an unanswered request). IPv4 header, TCP, UDP and
ICMP checksums are valid; the IP id counts up by one per packet of the capture (so any 65,536 consecutive packets
have distinct ids); DF is set on TCP. Timestamps are strictly increasing and span at most ``duration`` seconds.

Generation is vectorized with numpy (flow and packet columns), and one Cython kernel writes the frames with their
checksums; no Python runs per packet. The same arguments give the same bytes.

With ``payloads=True`` (opt-in; the default bytes are unchanged) the client's first data segment of a TCP flow carries
its application's opening message, from a handful of templates (``inspect/payloads.py``) that the same kernel copies:
an HTTP request with Host on port 80, a TLS ClientHello with SNI on 443 (in one flow of four a post-quantum-sized one,
about 1,650 bytes, over the client's first two segments). DNS flows carry real queries either way.
"""
from __future__ import annotations

import argparse
import functools
import ipaddress
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from ._kernels.synth import PAY_COPY, PAY_ID16, PAY_TLS, build_packets
from .batch import LINKTYPE_ETHERNET, PacketBatch

__all__ = ["CATEGORIES", "CENTRALIZED_MIX", "CENTRALIZED_PLAN", "DEFAULT_MIX", "DEFAULT_PLAN", "AddressPlan", "Close", "Direction", "FlowKind", "GroundTruth", "add_cli", "format_summary",
           "generate", "generate_with_truth"]

# --- the example topology (DESIGN.md section 6) -------------------------------------------------------------------
APP_CIDR = "10.1.1.0/24"
APP_GATEWAY = "10.1.1.1"
APP_SERVERS = tuple(f"10.1.1.{h}" for h in range(10, 60))
NAT_PUBLIC_IP = "203.0.113.10"
DNAT_PORT = 443
DNAT_TARGET = ("10.1.1.20", 8443)
DNS_RESOLVERS = ("8.8.8.8", "8.8.4.4", "1.1.1.1", "9.9.9.9")

#: default start of the capture: 2026-01-01T00:00:00Z in ns
DEFAULT_START_NS = 1_767_225_600 * 1_000_000_000

CATEGORIES = ("tcp-out", "tcp-in", "udp-dns", "icmp", "tcp-denied", "udp-denied", "tcp-east-west")
DEFAULT_MIX = {"tcp-out": 0.55, "tcp-in": 0.10, "udp-dns": 0.20, "icmp": 0.05, "tcp-denied": 0.05,
               "udp-denied": 0.05}
#: north-south and east-west together, for the centralized example
CENTRALIZED_MIX = {"tcp-out": 0.40, "tcp-in": 0.10, "udp-dns": 0.15, "icmp": 0.05, "tcp-denied": 0.05,
                   "udp-denied": 0.05, "tcp-east-west": 0.20}


@dataclass(frozen=True)
class AddressPlan:
    """Where the synthetic hosts live: app servers (clients of outbound flows), the NAT gateway's public IP, the
    DNAT target, and the clients and servers of east-west flows (empty: no east-west flows)."""

    app_servers: tuple[str, ...] = APP_SERVERS
    app_gateway: str = APP_GATEWAY
    nat_public_ip: str = NAT_PUBLIC_IP
    dnat_target: tuple[str, int] = DNAT_TARGET
    east_west_clients: tuple[str, ...] = ()
    east_west_servers: tuple[str, ...] = ()


DEFAULT_PLAN = AddressPlan()
CENTRALIZED_PLAN = AddressPlan(
    app_servers=tuple(f"10.1.1.{h}" for h in range(10, 40)) + tuple(f"10.2.1.{h}" for h in range(40, 60)),
    app_gateway="10.1.1.1", nat_public_ip="203.0.113.20", dnat_target=("10.2.1.20", 8443),
    east_west_clients=tuple(f"10.1.1.{h}" for h in range(10, 40)),
    east_west_servers=tuple(f"10.2.1.{h}" for h in range(30, 35)))

#: IMIX (IPv4 total lengths and weights) for TCP data packets
IMIX_SIZES = (64, 576, 1500)
IMIX_WEIGHTS = (7, 4, 1)


class FlowKind(IntEnum):
    TCP = 0
    UDP_DNS = 1
    ICMP = 2
    UDP = 3


class Direction(IntEnum):
    OUTBOUND = 0   # sent by the initiator of an outbound flow (an app server)
    INBOUND = 1    # sent by the initiator of an inbound flow (an Internet client)
    REPLY = 2      # sent by the responder of either


class Close(IntEnum):
    NONE = 0       # UDP, ICMP, or a TCP handshake with nothing after it
    FIN = 1        # FIN exchange (either side first)
    RST = 2        # reset by either side after the handshake
    REFUSED = 3    # SYN answered by RST-ACK


_CAT_KIND = np.array([FlowKind.TCP, FlowKind.TCP, FlowKind.UDP_DNS, FlowKind.ICMP, FlowKind.TCP, FlowKind.UDP,
                      FlowKind.TCP], np.uint8)
_CAT_PROTO = np.array([6, 6, 17, 1, 6, 17, 6], np.uint8)
_CAT_INBOUND = np.array([False, True, False, False, False, False, False])
_CAT_DENIED = np.array([False, False, False, True, True, True, False])
# relative share of the packets beyond each flow's first two (multiplied by a lognormal draw for TCP)
_CAT_WEIGHT = np.array([1.0, 1.0, 0.002, 0.1, 0.2, 0.002, 1.0])

_TCP_SYN, _TCP_FIN, _TCP_RST, _TCP_PSH, _TCP_ACK = 0x02, 0x01, 0x04, 0x08, 0x10
# TCP packet roles inside a session
_R_DATA, _R_SYN, _R_SYNACK, _R_ACK3, _R_FIN1, _R_FINACK1, _R_FIN2, _R_FINACK2, _R_RST = range(9)
_ROLE_FLAGS = np.array([_TCP_PSH | _TCP_ACK, _TCP_SYN, _TCP_SYN | _TCP_ACK, _TCP_ACK, _TCP_FIN | _TCP_ACK,
                        _TCP_ACK, _TCP_FIN | _TCP_ACK, _TCP_ACK, _TCP_RST | _TCP_ACK], np.uint8)

_ETH_IP = 14 + 20
_ICMP_PAYLOAD = 56      # Linux ping default
_NTP_LEN = 48
_RANDOM_POOL = 1 << 16  # bytes of random payload shared by TCP data and ICMP
_TEXT_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_MAC_BASE = 0x0200_0000_0000  # locally administered: 02:00 followed by the IPv4 address

_DNS_NAMES = ("www.example.com", "api.example.net", "cdn.example.org", "updates.example.com",
              "login.example.net", "static.example.org", "mail.example.com", "time.example.net")
_RESERVED = [ipaddress.ip_network(c) for c in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12", "192.0.0.0/24",
    "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/3")]


def _ip(s: str) -> int:
    return int(ipaddress.IPv4Address(s))


@dataclass(frozen=True, eq=False)
class GroundTruth:
    """What the generator put in the capture: per-flow facts (index = flow id) and per-packet labels.

    Per flow (length ``n_flows``): ``category`` (index into ``CATEGORIES``), ``kind`` (``FlowKind``), ``proto``,
    ``inbound``, ``denied`` (by the example policy), ``client_ip``/``client_port`` (the initiator; the echo id for
    ICMP), ``server_ip``/``server_port`` (where the initiator sends), ``reply_ip``/``reply_port`` (where replies come
    from; differs from the server for inbound flows), ``close`` (``Close``), ``packets``, ``bytes`` (frame bytes),
    ``first_ns``/``last_ns``. Addresses are ``uint32`` in host order.

    Per packet, in capture order (length ``n_packets``): ``flow`` (flow id) and ``direction`` (``Direction``).
    """

    category: np.ndarray
    kind: np.ndarray
    proto: np.ndarray
    inbound: np.ndarray
    denied: np.ndarray
    client_ip: np.ndarray
    client_port: np.ndarray
    server_ip: np.ndarray
    server_port: np.ndarray
    reply_ip: np.ndarray
    reply_port: np.ndarray
    close: np.ndarray
    packets: np.ndarray
    bytes: np.ndarray
    first_ns: np.ndarray
    last_ns: np.ndarray
    flow: np.ndarray
    direction: np.ndarray

    @property
    def n_flows(self) -> int:
        return self.category.shape[0]

    @property
    def n_packets(self) -> int:
        return self.flow.shape[0]

    def summary(self) -> dict:
        """Flows per category, packets, bytes, denied flows and packets, directions, duration (seconds)."""
        cats = np.bincount(self.category, minlength=len(CATEGORIES))
        dirs = np.bincount(self.direction, minlength=len(Direction))
        denied_pkts = int(self.packets[self.denied].sum()) if self.n_flows else 0
        dur = (int(self.last_ns.max()) - int(self.first_ns.min())) / 1e9 if self.n_flows else 0.0
        return {
            "flows": self.n_flows,
            "flows_by_category": {c: int(k) for c, k in zip(CATEGORIES, cats)},
            "packets": self.n_packets,
            "packets_by_direction": {d.name.lower(): int(dirs[d]) for d in Direction},
            "bytes": int(self.bytes.sum()),
            "denied_flows": int(self.denied.sum()),
            "denied_packets": denied_pkts,
            "duration_s": dur,
        }


def generate(flows: int = 1000, packets: int = 100_000, seed: int = 0, *, duration: float = 60.0,
             start_ns: int = DEFAULT_START_NS, mix: dict[str, float] | None = None,
             plan: AddressPlan = DEFAULT_PLAN, payloads: bool = False) -> PacketBatch:
    """Synthetic Ethernet traffic as the business VPC sees it (see the module docstring).

    Parameters
    ----------
    flows : int
        Number of flows (exact).
    packets : int
        Number of packets (exact); at least ``2 * flows`` (every flow has a request and an answer).
    seed : int
        Same seed and arguments, same bytes.
    duration : float
        Seconds between the first and the last packet, at most.
    start_ns : int
        Timestamp of the capture's start, ns since the epoch.
    mix : dict, optional
        Share of flows per category (keys from ``CATEGORIES``; missing keys are 0); ``DEFAULT_MIX`` by default.
        The flow counts per category are the shares rounded so that they add up to ``flows``.
    plan : AddressPlan
        Where the hosts are (``DEFAULT_PLAN``: the example topology; ``CENTRALIZED_PLAN``: the centralized one).
    payloads : bool
        Real application payloads (opt-in; off, the bytes are those of earlier versions): the client's first data
        segment of a port-80 flow is an HTTP request with a Host, of a 443/8443 flow a TLS ClientHello with an SNI
        (one flow in four has a post-quantum key share that spans its first two client segments). DNS flows carry
        real queries either way.

    Returns
    -------
    PacketBatch
        Link type Ethernet, packets in time order; only the core columns are set (call ``parse()``).
    """
    return generate_with_truth(flows, packets, seed, duration=duration, start_ns=start_ns, mix=mix, plan=plan,
                               payloads=payloads)[0]


def generate_with_truth(flows: int = 1000, packets: int = 100_000, seed: int = 0, *, duration: float = 60.0,
                        start_ns: int = DEFAULT_START_NS,
                        mix: dict[str, float] | None = None,
                        plan: AddressPlan = DEFAULT_PLAN,
                        payloads: bool = False) -> tuple[PacketBatch, GroundTruth]:
    """``generate`` plus the ``GroundTruth`` describing every flow and labelling every packet."""
    flows, packets = int(flows), int(packets)
    shares = _check_args(flows, packets, duration, mix)
    if shares[CATEGORIES.index("tcp-east-west")] > 0 and not (plan.east_west_servers and plan.east_west_clients):
        raise ValueError("synth: tcp-east-west flows need an address plan with east-west clients and servers")
    nat_public_ip, dnat_target = plan.nat_public_ip, plan.dnat_target
    rng = np.random.default_rng(seed)
    F, P = flows, packets

    # ---------------------------------------------------------------- flows
    per_cat = _apportion(F, shares)
    cat = rng.permutation(np.repeat(np.arange(len(CATEGORIES), dtype=np.uint8), per_cat))
    kind = _CAT_KIND[cat]
    proto = _CAT_PROTO[cat]
    inbound = _CAT_INBOUND[cat]
    is_tcp = kind == FlowKind.TCP

    weight = _CAT_WEIGHT[cat] * np.where(is_tcp, rng.lognormal(0.0, 1.3, F), 1.0)
    npk = np.full(F, 2, np.int64)
    if F and P > 2 * F:
        npk += rng.multinomial(P - 2 * F, weight / weight.sum())

    app = np.array([_ip(a) for a in plan.app_servers], np.uint32)
    remote_pool = _public_addresses(rng, min(max(F // 4, 16), 1 << 16))
    client_ip = np.where(inbound, _public_addresses(rng, F), app[rng.integers(0, app.shape[0], F)]).astype(np.uint32)
    server_ip = remote_pool[rng.integers(0, remote_pool.shape[0], F)]
    resolvers = np.array([_ip(a) for a in DNS_RESOLVERS], np.uint32)
    server_ip = np.where(kind == FlowKind.UDP_DNS, resolvers[rng.integers(0, resolvers.shape[0], F)], server_ip)
    server_ip = np.where(inbound, np.uint32(_ip(nat_public_ip)), server_ip).astype(np.uint32)
    c = CATEGORIES.index
    ew = cat == c("tcp-east-west")
    if ew.any():
        # drawn only when present, so that a plan without east-west flows gives the same bytes as before
        ew_c = np.array([_ip(a) for a in plan.east_west_clients], np.uint32)
        ew_s = np.array([_ip(a) for a in plan.east_west_servers], np.uint32)
        client_ip[ew] = ew_c[rng.integers(0, ew_c.shape[0], int(ew.sum()))]
        server_ip[ew] = ew_s[rng.integers(0, ew_s.shape[0], int(ew.sum()))]
    server_port = np.select(
        [cat == c("tcp-out"), cat == c("tcp-in"), cat == c("udp-dns"), cat == c("tcp-denied"), cat == c("udp-denied"),
         ew],
        [np.where(rng.random(F) < 0.7, 443, 80), DNAT_PORT, 53, np.where(rng.random(F) < 0.5, 22, 3389), 123, 443],
        0).astype(np.uint16)
    reply_ip = np.where(inbound, np.uint32(_ip(dnat_target[0])), server_ip).astype(np.uint32)
    reply_port = np.where(inbound, np.uint16(dnat_target[1]), server_port).astype(np.uint16)
    client_port = _ephemeral_ports(client_ip)

    close = np.full(F, Close.NONE, np.uint8)
    close[is_tcp & (npk == 2)] = Close.REFUSED
    use_fin = (npk >= 7) & (rng.random(F) >= 0.15)
    close[is_tcp & (npk >= 4)] = np.where(use_fin, Close.FIN, Close.RST)[is_tcp & (npk >= 4)]
    closer_rev = rng.random(F) < 0.4          # the server side sends the first FIN / the RST
    isn_c = rng.integers(0, 1 << 32, F, dtype=np.int64)
    isn_s = np.where(close == Close.REFUSED, 0, rng.integers(0, 1 << 32, F, dtype=np.int64))
    rtt = np.clip(rng.lognormal(np.log(0.03), 0.6, F), 0.001, 0.5)
    remote_ttl = rng.integers(44, 58, F).astype(np.uint8)
    dns_name = rng.integers(0, len(_DNS_NAMES), F)
    txid = rng.integers(0, 1 << 16, F)
    icmp_off = rng.integers(0, _RANDOM_POOL - _ICMP_PAYLOAD, F)

    # ---------------------------------------------------------------- packets, flow-major order
    first = np.zeros(F, np.int64)
    if F:
        np.cumsum(npk[:-1], out=first[1:])
    fid = np.repeat(np.arange(F, dtype=np.int64), npk)
    j = np.arange(P, dtype=np.int64) - first[fid]
    nn = npk[fid]
    k = nn - 1 - j
    pkind = kind[fid]
    ptcp = pkind == FlowKind.TCP
    pclose = close[fid]
    pcloser = closer_rev[fid]

    # TCP roles and directions
    role = np.full(P, _R_DATA, np.uint8)
    fin = pclose == Close.FIN
    rst = pclose == Close.RST
    role[fin & (k == 3)] = _R_FIN1
    role[fin & (k == 2)] = _R_FINACK1
    role[fin & (k == 1)] = _R_FIN2
    role[fin & (k == 0)] = _R_FINACK2
    role[rst & (k == 0)] = _R_RST
    role[j == 0] = _R_SYN
    role[(j == 1) & (nn == 2)] = _R_RST
    role[(j == 1) & (nn >= 3)] = _R_SYNACK
    role[(j == 2) & (nn >= 3)] = _R_ACK3
    rev_tcp = rng.random(P) < 0.65
    rev_tcp[j == 3] = False                   # the client speaks first (request)
    if payloads:
        app_tpl, app_big = _app_flows(seed, F, first, npk, role, server_port)
        rev_tcp[(j == 4) & app_big[fid]] = False  # the second segment of a large ClientHello
    rev_tcp = np.select(
        [role == _R_SYN, role == _R_SYNACK, role == _R_ACK3, (role == _R_FIN1) | (role == _R_FINACK2),
         (role == _R_FINACK1) | (role == _R_FIN2), (role == _R_RST) & (nn == 2), role == _R_RST],
        [False, True, False, pcloser, ~pcloser, True, pcloser], rev_tcp)
    rev = np.where(ptcp, rev_tcp, (j & 1) == 1)

    tcp_flags = np.where(ptcp, _ROLE_FLAGS[role], 0).astype(np.uint8)
    imix = np.array(IMIX_SIZES, np.int64)[rng.choice(len(IMIX_SIZES), P, p=np.array(IMIX_WEIGHTS) / sum(IMIX_WEIGHTS))]
    tcp_pay = np.where(ptcp & (role == _R_DATA), imix - 40, 0)
    if payloads:
        # the application's first client segment(s): a template's first (up to 1460) bytes, then the rest
        a_len = np.array([len(t) for t in _app_templates()], np.int64)
        ptpl = app_tpl[fid]
        app_pkt = (ptpl >= 0) & ((j == 3) | ((j == 4) & app_big[fid]))
        app_part = np.where(app_pkt, j - 3, 0)
        app_seg_len = np.where(app_part == 0, np.minimum(a_len[ptpl], 1460), a_len[ptpl] - 1460)
        tcp_pay = np.where(app_pkt, app_seg_len, tcp_pay)
    syn = (tcp_flags & _TCP_SYN) != 0

    # sequence numbers: each side's ISN plus what that side consumed before this packet (RFC 9293 section 3.4)
    consumed = tcp_pay + syn + ((tcp_flags & _TCP_FIN) != 0)
    sent_c = _exclusive_segment_cumsum(np.where(rev, 0, consumed), first, fid)
    sent_s = _exclusive_segment_cumsum(np.where(rev, consumed, 0), first, fid)
    seq = np.where(rev, isn_s[fid] + sent_s, isn_c[fid] + sent_c)
    ack = np.where(rev, isn_c[fid] + sent_c, isn_s[fid] + sent_s)
    ack = np.where(tcp_flags & _TCP_ACK, ack, 0)
    pair = j >> 1
    seq = np.where(ptcp, seq, 0) & 0xFFFFFFFF
    ack = np.where(ptcp, ack, 0) & 0xFFFFFFFF

    # frame lengths and payloads
    dns_q, dns_a, tpl = _templates(rng)
    if payloads:
        app_base = tpl.shape[0]
        a_off = app_base + np.concatenate([[0], np.cumsum(a_len)[:-1]]).astype(np.int64)
        tpl = np.concatenate([tpl, np.frombuffer(b"".join(_app_templates()), np.uint8)])
    pdns = pkind == FlowKind.UDP_DNS
    picmp = pkind == FlowKind.ICMP
    pudp = pkind == FlowKind.UDP
    name = dns_name[fid]
    dns_len = np.where(rev, dns_a[1][name], dns_q[1][name])
    paylen = np.select([ptcp, pdns, picmp, pudp], [tcp_pay, dns_len, _ICMP_PAYLOAD, _NTP_LEN])
    l4hdr = np.select([ptcp, picmp], [20 + 4 * syn, 8], 8)
    caplen = (_ETH_IP + l4hdr + paylen).astype(np.uint32)
    rand_off = rng.integers(0, _RANDOM_POOL - 1500, P)
    rand_off += np.where(np.isin(reply_port, (80,))[fid], _RANDOM_POOL, 0)
    pay_off = np.select(
        [ptcp, pdns, picmp, pudp],
        [rand_off, np.where(rev, dns_a[0][name], dns_q[0][name]),
         (icmp_off[fid] + pair) % (_RANDOM_POOL - _ICMP_PAYLOAD),
         np.where(rev, 2 * _RANDOM_POOL + _NTP_LEN, 2 * _RANDOM_POOL)]).astype(np.int64)
    tls = np.isin(reply_port, (443, 8443))[fid]
    pay_style = np.select([ptcp & tls, pdns], [PAY_TLS, PAY_ID16], PAY_COPY).astype(np.uint8)
    if payloads:
        pay_off = np.where(app_pkt, a_off[ptpl] + 1460 * app_part, pay_off).astype(np.int64)
        pay_style[app_pkt] = PAY_COPY
    pay_arg = ((txid[fid] + pair) & 0xFFFF).astype(np.uint16)

    # timing: the capture point is on the business side, so a remote host's packet after a local one waits a
    # round trip, a local host answers at once
    local_src = rev == inbound[fid]
    prev_local = np.roll(local_src, 1)
    frtt = rtt[fid]
    u = rng.random(P)
    e = rng.exponential(1.0, P)
    gap_tcp = np.where(local_src, 0.0002 + 0.002 * e,
                       np.where(prev_local, frtt * (0.9 + 0.2 * u), frtt * 0.05 * e))
    gap_req = np.where(picmp, 1.0 + 0.001 * e, 2.0 * e)   # ping interval; next DNS/NTP query
    gap = np.where(ptcp, gap_tcp, np.where(rev, frtt * (0.9 + 0.2 * u), gap_req))
    gap[first] = 0.0
    t = np.cumsum(gap)
    t -= t[first][fid] if F else 0.0
    span = t[first + npk - 1] if F else np.zeros(0)
    scale = np.minimum(1.0, 0.9 * duration / np.maximum(span, 1e-12))
    start = rng.random(F) * (duration - span * scale)
    ts = start_ns + np.round((start[fid] + t * scale[fid]) * 1e9).astype(np.int64)

    # ---------------------------------------------------------------- capture order
    order = np.argsort(ts, kind="stable")
    ts = ts[order]
    if P:
        # ties broken by 1 ns: strictly increasing, and a flow's packets keep their order
        ar = np.arange(P, dtype=np.int64)
        ts = np.maximum.accumulate(ts - ar) + ar
    fid, rev, local_src = fid[order], rev[order], local_src[order]
    p_in = inbound[fid]
    src_ip = np.where(rev, reply_ip[fid], client_ip[fid]).astype(np.uint32)
    dst_ip = np.where(rev, client_ip[fid], server_ip[fid]).astype(np.uint32)
    picmp = picmp[order]
    sport = np.where(rev & ~picmp, reply_port[fid], client_port[fid]).astype(np.uint16)
    dport = np.where(picmp, (pair[order] + 1) & 0xFFFF, np.where(rev, client_port[fid], server_port[fid]))
    dport = dport.astype(np.uint16)
    flags = np.where(picmp, np.where(rev, 0, 8), tcp_flags[order]).astype(np.uint8)
    local_ip = np.where(p_in, np.uint32(_ip(dnat_target[0])), client_ip[fid]).astype(np.uint64)
    host_mac = np.uint64(_MAC_BASE) | local_ip
    router_mac = np.uint64(_MAC_BASE | _ip(plan.app_gateway))
    mac_src = np.where(local_src, host_mac, router_mac).astype(np.uint64)
    mac_dst = np.where(local_src, router_mac, host_mac).astype(np.uint64)
    ttl = np.where(local_src, 64, remote_ttl[fid]).astype(np.uint8)
    ptcp = ptcp[order]
    win = np.where(syn[order], np.where(rev, 65160, 64240), 65535).astype(np.uint16)
    caplen = caplen[order]
    off = np.zeros(P, np.int64)
    if P:
        np.cumsum(caplen[:-1], dtype=np.int64, out=off[1:])
    total = int(off[-1] + caplen[-1]) if P else 0
    data = np.empty(total, np.uint8)
    status = np.empty(P, np.uint8)
    ip_id = ((int(rng.integers(0, 1 << 16)) + np.arange(P)) & 0xFFFF).astype(np.uint16)
    bad = build_packets(data, off, caplen, mac_src, mac_dst, src_ip, dst_ip, _CAT_PROTO[cat][fid].copy(), ip_id, ttl,
                        ptcp.astype(np.uint8), sport, dport, seq[order].astype(np.uint32),
                        ack[order].astype(np.uint32), flags, win, pay_off[order], pay_style[order],
                        pay_arg[order], tpl, status)
    if bad:
        raise RuntimeError(f"synth: {bad} packets could not be written (internal error)")
    batch = PacketBatch(data, off, caplen, ts_ns=ts, linktype=LINKTYPE_ETHERNET)

    direction = np.where(rev, Direction.REPLY, np.where(p_in, Direction.INBOUND, Direction.OUTBOUND)).astype(np.uint8)
    nbytes = np.bincount(fid, weights=caplen, minlength=F).astype(np.int64)
    first_ns = np.full(F, np.iinfo(np.int64).max, np.int64)
    last_ns = np.full(F, np.iinfo(np.int64).min, np.int64)
    np.minimum.at(first_ns, fid, ts)
    np.maximum.at(last_ns, fid, ts)
    truth = GroundTruth(
        category=cat, kind=kind, proto=proto, inbound=inbound, denied=_CAT_DENIED[cat], client_ip=client_ip,
        client_port=client_port, server_ip=server_ip, server_port=server_port, reply_ip=reply_ip,
        reply_port=reply_port, close=close, packets=npk, bytes=nbytes, first_ns=first_ns, last_ns=last_ns,
        flow=fid.astype(np.uint32), direction=direction)
    return batch, truth


# ------------------------------------------------------------------------------------------------------- helpers
def _check_args(flows: int, packets: int, duration: float, mix) -> np.ndarray:
    if flows < 0 or packets < 0:
        raise ValueError(f"synth: flows and packets must be >= 0, got flows={flows}, packets={packets}")
    if packets < 2 * flows:
        raise ValueError(f"synth: packets ({packets}) must be at least 2 * flows ({2 * flows}): every flow has a "
                         "request and an answer")
    if flows == 0 and packets:
        raise ValueError(f"synth: {packets} packets need at least one flow")
    if not duration > 0 or not np.isfinite(duration):
        raise ValueError(f"synth: duration must be a positive number of seconds, got {duration}")
    mix = DEFAULT_MIX if mix is None else mix
    unknown = set(mix) - set(CATEGORIES)
    if unknown:
        raise ValueError(f"synth: unknown flow categories {sorted(unknown)}; known: {', '.join(CATEGORIES)}")
    shares = np.array([float(mix.get(c, 0.0)) for c in CATEGORIES])
    if (shares < 0).any() or not np.isfinite(shares).all() or shares.sum() <= 0:
        raise ValueError(f"synth: mix shares must be finite, >= 0 and not all 0, got {dict(mix)}")
    return shares / shares.sum()


def _apportion(total: int, shares: np.ndarray) -> np.ndarray:
    """Integer counts proportional to ``shares`` that add up to ``total`` (largest remainder)."""
    exact = shares * total
    counts = np.floor(exact).astype(np.int64)
    rest = total - int(counts.sum())
    if rest:
        counts[np.argsort(-(exact - counts), kind="stable")[:rest]] += 1
    return counts


def _public_addresses(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` random unicast addresses outside private, reserved and documentation blocks (uint32)."""
    out = rng.integers(1 << 24, 224 << 24, n, dtype=np.int64)
    while True:
        bad = np.zeros(n, bool)
        for net in _RESERVED:
            bad |= (out & int(net.netmask)) == int(net.network_address)
        if not bad.any():
            return out.astype(np.uint32)
        out[bad] = rng.integers(1 << 24, 224 << 24, int(bad.sum()), dtype=np.int64)


def _ephemeral_ports(client_ip: np.ndarray) -> np.ndarray:
    """Per client, consecutive ports from a per-host start in Linux's range 32768-60999, so that a client's flows
    use distinct ports until it has more than 28,232 of them."""
    n = client_ip.shape[0]
    order = np.argsort(client_ip, kind="stable")
    sorted_ip = client_ip[order]
    new_group = np.ones(n, bool)
    new_group[1:] = sorted_ip[1:] != sorted_ip[:-1]
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(n), 0))
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n) - group_start
    start = ((client_ip.astype(np.uint64) * np.uint64(2654435761)) >> np.uint64(11)) % np.uint64(28232)
    return (32768 + (start.astype(np.int64) + rank) % 28232).astype(np.uint16)


def _exclusive_segment_cumsum(x: np.ndarray, first: np.ndarray, fid: np.ndarray) -> np.ndarray:
    """Sum of ``x`` over the earlier packets of the same flow (flows are contiguous runs starting at ``first``)."""
    c = np.cumsum(x, dtype=np.int64) - x
    return c - c[first][fid] if first.shape[0] else c


#: hosts of the opt-in application payloads (documentation and example names, RFC 2606)
HTTP_HOSTS = ("www.example.com", "news.example.org", "shop.example.net", "downloads.example.com")
TLS_HOSTS = ("api.example.net", "login.example.com", "cdn.example.org", "mail.example.com")
#: key share of the large ClientHellos (X25519MLKEM768: 1216 bytes) and padding that makes them span two segments
_BIG_KEY_SHARE, _BIG_PADDING = 1216, 300


@functools.cache
def _app_templates() -> tuple[bytes, ...]:
    """HTTP requests, small ClientHellos, large ClientHellos (longer than 1460 bytes, at most 2920)."""
    from .inspect.payloads import http_request, tls_client_hello

    http = tuple(http_request(h, f"/index{i}.html") for i, h in enumerate(HTTP_HOSTS))
    small = tuple(tls_client_hello(h) for h in TLS_HOSTS)
    big = tuple(tls_client_hello(h, key_share_len=_BIG_KEY_SHARE, padding=_BIG_PADDING) for h in TLS_HOSTS)
    return http + small + big


_N_HTTP, _N_TLS = len(HTTP_HOSTS), len(TLS_HOSTS)


def _app_flows(seed: int, F: int, first: np.ndarray, npk: np.ndarray, role: np.ndarray, server_port: np.ndarray):
    """Per flow: the application template of its first client segment (-1: none) and whether it spans two.

    Drawn from a generator of its own, so that the rest of the capture is the one without payloads."""
    rng = np.random.default_rng([seed, 0x11])
    tpl = np.full(F, -1, np.int64)
    big = np.zeros(F, bool)
    if not F:
        return tpl, big
    r3 = np.full(F, -1, np.int64)
    r4 = np.full(F, -1, np.int64)
    r3[npk > 3] = role[first[npk > 3] + 3]
    r4[npk > 4] = role[first[npk > 4] + 4]
    data3 = r3 == _R_DATA
    http = data3 & (server_port == 80)
    tls = data3 & (server_port == 443)       # tcp-out, tcp-in (DNAT to 8443) and east-west all ask for 443
    big = tls & (r4 == _R_DATA) & (rng.random(F) < 0.25)
    pick_h = rng.integers(0, _N_HTTP, F)
    pick_t = rng.integers(0, _N_TLS, F)
    tpl = np.where(http, pick_h, tpl)
    tpl = np.where(tls, _N_HTTP + pick_t + np.where(big, _N_TLS, 0), tpl)
    return tpl, big


def _dns_message(name: str, answer_ip: int | None) -> bytes:
    # RFC 1035 section 4.1: header (id patched per packet), one question, optionally one A answer
    qname = b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\x00"
    question = qname + b"\x00\x01\x00\x01"
    if answer_ip is None:
        return b"\x00\x00\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + question
    rr = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x01\x2c\x00\x04" + answer_ip.to_bytes(4, "big")
    return b"\x00\x00\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00" + question + rr


def _templates(rng: np.random.Generator):
    """The payload arena: random bytes, text bytes, NTP client and server messages, DNS queries and answers per name.

    Returns ``(dns_query_off, dns_query_len), (dns_answer_off, dns_answer_len), arena``.
    """
    parts = [rng.integers(0, 256, _RANDOM_POOL, dtype=np.uint8).tobytes()]
    # printable text without line breaks for plain-HTTP data: dissectors show it as continuation data instead of
    # trying random bytes as HTTP header lines
    parts.append(np.frombuffer(_TEXT_ALPHABET, np.uint8)[rng.integers(0, 64, _RANDOM_POOL)].tobytes())
    # NTPv4 (RFC 5905 section 7.3): client mode 3 with a transmit timestamp; server mode 4, stratum 2
    ntp_client = bytes([0x23, 0, 6, 0xE9]) + bytes(36) + rng.integers(0, 256, 8, dtype=np.uint8).tobytes()
    ntp_server = (bytes([0x24, 2, 6, 0xE9, 0, 0, 0, 0x10, 0, 0, 0, 0x20]) + bytes([192, 0, 2, 1])
                  + rng.integers(0, 256, 32, dtype=np.uint8).tobytes())
    parts += [ntp_client, ntp_server]
    pos = 2 * _RANDOM_POOL + 2 * _NTP_LEN
    answers = _public_addresses(rng, len(_DNS_NAMES))
    q_off, q_len, a_off, a_len = [], [], [], []
    for name, addr in zip(_DNS_NAMES, answers):
        q, a = _dns_message(name, None), _dns_message(name, int(addr))
        q_off.append(pos)
        q_len.append(len(q))
        a_off.append(pos + len(q))
        a_len.append(len(a))
        parts += [q, a]
        pos += len(q) + len(a)
    arena = np.frombuffer(b"".join(parts), np.uint8).copy()
    i64 = np.int64
    return (np.array(q_off, i64), np.array(q_len, i64)), (np.array(a_off, i64), np.array(a_len, i64)), arena


# ----------------------------------------------------------------------------------------------------------- CLI
def add_cli(sub) -> None:
    """Add the ``synth`` subcommand to the ``gwlb-fast`` parser."""
    p = sub.add_parser("synth", help="write synthetic business-VPC traffic to a pcap",
                       description="Write seeded synthetic traffic (TCP, DNS, ICMP, denied and inbound flows) as the "
                                   "business VPC sees it to a pcap, and print its statistics.")
    p.add_argument("-o", "--output", required=True, metavar="OUT.pcap", help="pcap file to write")
    p.add_argument("--flows", type=_nonneg_int, default=1000, help="number of flows (default 1000)")
    p.add_argument("--packets", type=_nonneg_int, default=100_000, help="number of packets (default 100000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds the capture spans (default 60)")
    p.add_argument("--payloads", action="store_true",
                   help="real application payloads: HTTP requests with Host on port 80, TLS ClientHellos with SNI "
                        "on 443 (one in four spanning two segments)")
    p.set_defaults(func=_cli_synth)


def _nonneg_int(s: str) -> int:
    try:
        v = int(s.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {s!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {v}")
    return v


def _cli_synth(args) -> int:
    from .errors import ConfigError

    try:
        batch, truth = generate_with_truth(args.flows, args.packets, args.seed, duration=args.duration,
                                           payloads=args.payloads)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    from .pcapio import write_pcap

    write_pcap(args.output, batch)
    print(f"wrote {args.output}")
    print(format_summary(truth.summary()))
    return 0


def format_summary(s: dict) -> str:
    """The statistics ``gwlb-fast synth`` prints, one item a line."""
    cats = ", ".join(f"{c} {k:,}" for c, k in s["flows_by_category"].items())
    dirs = ", ".join(f"{d} {k:,}" for d, k in s["packets_by_direction"].items())
    return "\n".join([
        f"flows     {s['flows']:,} ({cats})",
        f"packets   {s['packets']:,} ({dirs})",
        f"bytes     {s['bytes']:,}",
        f"denied    {s['denied_flows']:,} flows, {s['denied_packets']:,} packets (by the example policy)",
        f"duration  {s['duration_s']:.3f} s",
    ])
