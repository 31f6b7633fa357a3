"""Replaying captures that begin mid-stream: which side of a flow is its client (DESIGN.md section 10).

With ``replay: {pickup: true}`` a flow whose first packet in the capture is mid-stream, or travels in the flow's
reply direction, is taken as established before the capture. The firewall then classifies its session in the flow's
real direction, which the first packet alone does not always show. :class:`FlowSides` decides it per packet, all
vectorized, by the first rule that applies:

1. TCP: a SYN without ACK comes from the client, a SYN+ACK from the server. ICMP: a reply (echo, timestamp,
   information, address mask replies: types 0, 14, 16, 18) comes from the server.
2. DNAT targets: a packet to a DNAT rule's private ``ip:port`` comes from a client, one from it from the server.
3. A private host (an address inside a VPC of the topology) talking to a public one is the client: behind a NAT
   gateway, flows from the Internet reach private hosts only through DNAT (rule 2), so the private side of any other
   flow opened it (SNAT).
4. TCP and UDP otherwise: the service port is the server's: a port below 1024 against one of 1024 or more, else the
   lower port. Equal ports: the sender is the client.

Anything else (other protocols, no rule deciding): the sender is the client, as without pickup.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np

__all__ = ["ICMP_REPLY_TYPES", "FlowSides", "flow_keys"]

#: ICMP query replies (RFC 792 / 950): echo reply, timestamp reply, information reply, address mask reply
ICMP_REPLY_TYPES = (0, 14, 16, 18)
_ICMP_QUERY_TYPES = (8, 13, 15, 17)


def flow_keys(src_ip, dst_ip, sport, dport) -> tuple[np.ndarray, ...]:
    """``(a_ip, b_ip, a_port, b_port, reversed)``: the direction-free key of each packet's flow
    (:func:`~gwlb_fast._kernels.flowtable.canonical_5tuple`), for the tables keyed by it."""
    from ._kernels.flowtable import canonical_5tuple

    m = np.asarray(src_ip).shape[0]
    a_ip, b_ip = np.empty(m, np.uint32), np.empty(m, np.uint32)
    a_pt, b_pt = np.empty(m, np.uint16), np.empty(m, np.uint16)
    rev = np.empty(m, np.uint8)
    canonical_5tuple(np.ascontiguousarray(src_ip, np.uint32), np.ascontiguousarray(dst_ip, np.uint32),
                     np.ascontiguousarray(sport, np.uint16), np.ascontiguousarray(dport, np.uint16),
                     a_ip, b_ip, a_pt, b_pt, rev)
    return a_ip, b_ip, a_pt, b_pt, rev


class FlowSides:
    """Which side of a flow is the client, from one of its packets (the rules of the module docstring).

    Parameters
    ----------
    private : iterable of (network, prefix_len)
        The address ranges of the VPCs (host order); an empty iterable turns rule 3 off.
    dnat_targets : iterable of (proto, ip, port)
        The private side of every DNAT rule (host order).
    """

    def __init__(self, private: Iterable[tuple[int, int]] = (), dnat_targets: Iterable[tuple[int, int, int]] = ()):
        from .stages.vpc import Lpm

        nets = sorted({(int(n), int(p)) for n, p in private})
        self._private = Lpm([[(n, p, 0) for n, p in nets]]) if nets else None
        t = sorted({(int(a), int(b), int(c)) for a, b, c in dnat_targets})
        self._dnat_proto = np.array([x[0] for x in t], np.uint8)
        self._dnat_ip = np.array([x[1] for x in t], np.uint32)
        self._dnat_port = np.array([x[2] for x in t], np.uint16)

    @classmethod
    def from_topology(cls, topo) -> FlowSides:
        """The VPC ranges and DNAT targets of a :class:`~gwlb_fast.config.Topology`."""
        private = [(v.net, v.plen) for v in topo.vpcs.values()]
        targets = [(r.proto, r.to_ip, r.to_port) for g in topo.nat_gateways.values() for r in g.dnat]
        return cls(private, targets)

    def _is_private(self, ip: np.ndarray) -> np.ndarray:
        if self._private is None:
            return np.zeros(ip.shape[0], bool)
        return self._private.lookup(ip) >= 0

    def _is_target(self, ip, port, proto) -> np.ndarray:
        hit = np.zeros(ip.shape[0], bool)
        for p, a, b in zip(self._dnat_proto.tolist(), self._dnat_ip.tolist(), self._dnat_port.tolist()):
            hit |= (ip == a) & (port == b) & (proto == p)
        return hit

    def sender_is_server(self, src_ip, dst_ip, sport, dport, proto, tcp_flags) -> np.ndarray:
        """bool[n]: True where the packet travels from the flow's server to its client.

        ``tcp_flags`` is the parsed column (the ICMP type for ICMP packets)."""
        src_ip = np.asarray(src_ip, np.uint32)
        dst_ip = np.asarray(dst_ip, np.uint32)
        sport = np.asarray(sport, np.uint16)
        dport = np.asarray(dport, np.uint16)
        proto = np.asarray(proto, np.uint8)
        flags = np.asarray(tcp_flags, np.uint8)
        n = src_ip.shape[0]
        out = np.zeros(n, bool)
        decided = np.zeros(n, bool)

        def take(where, value):
            new = where & ~decided
            out[new] = value[new] if isinstance(value, np.ndarray) else value
            decided[new] = True

        tcp = proto == 6
        syn = tcp & ((flags & 0x02) != 0) & ((flags & 0x04) == 0)
        take(syn & ((flags & 0x10) == 0), False)
        take(syn & ((flags & 0x10) != 0), True)
        icmp = proto == 1
        take(icmp & np.isin(flags, ICMP_REPLY_TYPES), True)
        take(icmp & np.isin(flags, _ICMP_QUERY_TYPES), False)
        if self._dnat_ip.size:
            take(self._is_target(dst_ip, dport, proto), False)
            take(self._is_target(src_ip, sport, proto), True)
        ps, pd = self._is_private(src_ip), self._is_private(dst_ip)
        take(ps & ~pd, False)
        take(pd & ~ps, True)
        l4 = tcp | (proto == 17)
        s_low, d_low = sport < 1024, dport < 1024
        by_port = np.where(s_low != d_low, s_low, sport < dport)
        take(l4 & (sport != dport), by_port)
        return out
