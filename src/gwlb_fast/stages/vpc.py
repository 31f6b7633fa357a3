"""Subnets, route tables and batched longest-prefix match (DESIGN.md section 1).

A :class:`VpcRouter` compiles every route table of one VPC (plus its subnets) into the flat arrays of
``_kernels/lpm.pyx``; lookups take a ``uint32`` destination column and return, per packet, the index of the
matching route, its next-hop id, or the subnet an address is in, with ``-1`` for "none", all without per-packet
Python. Next hops decode to ``(kind, name)``: ``("local", None)``, ``("gwlbe", "gwlbe-a")``, ``("natgw", "nat-a")``,
``("internet", None)``, ``("blackhole", None)``, ``("tr", "tr-1")``.

Every table holds its VPC's implicit local route (``config`` adds it), so an address of the VPC's CIDR that no more
specific route claims is local, as in AWS and Alibaba VPCs.

A :class:`TransitRouter` compiles a transit router's route tables the same way: a packet a VPC sends to it
(``tr:NAME``) is looked up in the table associated with that VPC's attachment, and a route to ``attachment:X``
hands it to X's VPC, where it enters at the route table of X's subnet (DESIGN.md section 13).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from .._kernels.lpm import lpm_lookup
from ..config import Route, Topology, Vpc
from ..config import TransitRouter as TransitRouterConfig
from ..status import PktStatus

__all__ = ["Lpm", "NextHop", "TransitRouter", "VpcRouter", "routers"]


class NextHop(NamedTuple):
    kind: str            # local | gwlbe | natgw | internet | blackhole
    name: str | None     # endpoint or NAT gateway name for gwlbe/natgw

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}" if self.name else self.kind


class Lpm:
    """Several prefix tables compiled into the DIR-16-8-8 arrays of ``lpm_lookup`` (256 KB per table).

    Parameters
    ----------
    tables : sequence of sequences of (network, prefix_len, value)
        One list per table; ``network`` in host order with no host bits set; ``value`` >= 0. Within a table,
        a (network, prefix_len) pair appears once.
    """

    def __init__(self, tables: Sequence[Sequence[tuple[int, int, int]]]):
        self.ntables = len(tables)
        l1 = np.full(max(self.ntables, 1) * 65536, -1, np.int32)
        l2: list[np.ndarray] = []
        l3: list[np.ndarray] = []
        for ti, entries in enumerate(tables):
            seen = set()
            for net, plen, val in entries:
                if not 0 <= plen <= 32:
                    raise ValueError(f"table {ti}: prefix length {plen} out of range 0..32")
                mask = (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF if plen else 0
                if net & ~mask & 0xFFFFFFFF or not 0 <= net <= 0xFFFFFFFF:
                    raise ValueError(f"table {ti}: {net:#010x}/{plen} has host bits set")
                if val < 0:
                    raise ValueError(f"table {ti}: value {val} must be >= 0")
                if (net, plen) in seen:
                    raise ValueError(f"table {ti}: duplicate prefix {net:#010x}/{plen}")
                seen.add((net, plen))
            base = ti * 65536
            # shorter prefixes first, so a longer one overwrites the part of the range it covers; and every prefix
            # that fills a level's entries comes before any longer one turns an entry into a child pointer
            for net, plen, val in sorted(entries, key=lambda e: e[1]):
                if plen <= 16:
                    i = base + (net >> 16)
                    l1[i : i + (1 << (16 - plen))] = val
                    continue
                c2 = _child(l1, base + (net >> 16), l2)
                if plen <= 24:
                    j = (net >> 8) & 0xFF
                    l2[c2][j : j + (1 << (24 - plen))] = val
                    continue
                c3 = _child(l2[c2], (net >> 8) & 0xFF, l3)
                l3[c3][net & 0xFF : (net & 0xFF) + (1 << (32 - plen))] = val
        self.l1 = l1
        self.l2 = np.concatenate(l2) if l2 else np.zeros(0, np.int32)
        self.l3 = np.concatenate(l3) if l3 else np.zeros(0, np.int32)

    @classmethod
    def stack(cls, parts: Sequence[Lpm], offsets: Sequence[int]) -> tuple[Lpm, np.ndarray]:
        """One Lpm holding the tables of ``parts`` one after another, the values of part ``k`` raised by
        ``offsets[k]``; and the number of the first table of each part, then the number of tables (part ``k``'s
        table ``t`` is table ``first[k] + t`` of the result, below ``first[k + 1]``). Lookups give what the parts
        give, shifted: nothing is rebuilt."""
        out = cls.__new__(cls)
        l1s, l2s, l3s, first = [], [], [], []
        n1 = n2 = n3 = 0
        for part, off in zip(parts, offsets):
            first.append(n1)
            l1s.append(_shifted(part.l1, off, n2))
            l2s.append(_shifted(part.l2, off, n3))
            l3s.append(_shifted(part.l3, off, 0))
            n1 += part.l1.shape[0] // 65536
            n2 += part.l2.shape[0] // 256
            n3 += part.l3.shape[0] // 256
        out.ntables = n1
        out.l1 = np.concatenate(l1s) if l1s else np.full(65536, -1, np.int32)
        out.l2 = np.concatenate(l2s) if l2s else np.zeros(0, np.int32)
        out.l3 = np.concatenate(l3s) if l3s else np.zeros(0, np.int32)
        return out, np.array(first + [n1], np.int32)

    def lookup(self, dst, table=0, out: np.ndarray | None = None) -> np.ndarray:
        """Value of the longest prefix matching each ``dst`` (uint32[n]) in ``table`` (int or int32[n]); -1 if none."""
        dst = np.ascontiguousarray(dst, dtype=np.uint32)
        tab = np.ascontiguousarray(np.atleast_1d(np.asarray(table)), dtype=np.int32)
        if out is None:
            out = np.empty(dst.shape[0], np.int32)
        if self.ntables == 0:
            out[:] = -1
            return out
        lpm_lookup(self.l1, self.l2, self.l3, tab, dst, out)
        return out


def _shifted(level: np.ndarray, value_offset: int, chunk_offset: int) -> np.ndarray:
    """A level of an Lpm with its values raised by ``value_offset`` and its chunk pointers moved ``chunk_offset``
    chunks on (-1, no route, stays)."""
    out = level.copy()
    out[level >= 0] += value_offset
    out[level <= -2] -= chunk_offset  # chunk c is encoded -c - 2
    return out


def _child(level: np.ndarray, i: int, chunks: list[np.ndarray]) -> int:
    """Index of the chunk entry ``i`` points to, creating it (inheriting the entry's value) if needed."""
    e = int(level[i])
    if e <= -2:
        return -e - 2
    chunks.append(np.full(256, e, np.int32))
    level[i] = -(len(chunks) - 1) - 2
    return len(chunks) - 1


class VpcRouter:
    """The compiled route tables and subnets of one VPC.

    Attributes
    ----------
    table_names : list[str]        table id -> route table name
    subnet_names : list[str]       subnet id -> subnet name
    subnet_table : int32[nsubnets] subnet id -> table id of its route table
    routes : list[Route]           global route index -> route (tables concatenated in ``table_names`` order)
    hops : list[NextHop]           next-hop id -> next hop (unique)
    route_hop : int32[nroutes]     route index -> next-hop id
    """

    def __init__(self, vpc: Vpc):
        self.vpc = vpc
        self.name = vpc.name
        self.table_names = list(vpc.route_tables)
        self.table_id = {n: i for i, n in enumerate(self.table_names)}
        self.subnet_names = list(vpc.subnets)
        self.subnet_id = {n: i for i, n in enumerate(self.subnet_names)}
        self.subnets = [vpc.subnets[n] for n in self.subnet_names]
        self.subnet_table = np.array([self.table_id[s.route_table] for s in self.subnets], np.int32)
        self.routes: list[Route] = []
        self.route_table_of: list[int] = []
        self.hops: list[NextHop] = []
        hop_id: dict[NextHop, int] = {}
        route_hop = []
        tables = []
        for ti, tname in enumerate(self.table_names):
            entries = []
            for r in vpc.route_tables[tname].routes:
                idx = len(self.routes)
                self.routes.append(r)
                self.route_table_of.append(ti)
                hop = NextHop(r.kind, r.target)
                if hop not in hop_id:
                    hop_id[hop] = len(self.hops)
                    self.hops.append(hop)
                route_hop.append(hop_id[hop])
                entries.append((r.net, r.plen, idx))
            tables.append(entries)
        self.hop_id = hop_id
        self.route_hop = np.array(route_hop, np.int32)
        self._routes = Lpm(tables)
        self._subnets = Lpm([[(s.net, s.plen, i) for i, s in enumerate(self.subnets)]])

    # ------------------------------------------------------------------ lookups
    def route_index(self, table, dst) -> np.ndarray:
        """Global index of the route each ``dst`` takes in ``table`` (name, id, or int32[n] ids); -1 = no route."""
        if isinstance(table, str):
            table = self.table_id[table]
        return self._routes.lookup(dst, table)

    def next_hop(self, table, dst) -> np.ndarray:
        """Next-hop id (index into ``hops``) for each ``dst`` in ``table``; -1 = no route."""
        idx = self.route_index(table, dst)
        out = np.full(idx.shape[0], -1, np.int32)
        hit = idx >= 0
        out[hit] = self.route_hop[idx[hit]]
        return out

    def subnet_of(self, ip) -> np.ndarray:
        """Subnet id (index into ``subnet_names``) of each address; -1 if it is in no subnet of this VPC."""
        return self._subnets.lookup(ip, 0)

    def table_of_subnet(self, subnet_ids) -> np.ndarray:
        """Route table id of each subnet id (-1 stays -1)."""
        s = np.asarray(subnet_ids, np.int32)
        out = np.full(s.shape[0], -1, np.int32)
        ok = s >= 0
        out[ok] = self.subnet_table[s[ok]]
        return out

    def route_packets(self, src_ip, dst_ip) -> tuple[np.ndarray, np.ndarray]:
        """Route each packet in the table of its source's subnet: ``(route index, next-hop id)``, int32[n] each.

        A source in no subnet of this VPC, or a destination with no route, gives -1 in both.
        """
        tables = self.table_of_subnet(self.subnet_of(src_ip))
        idx = self.route_index(tables, dst_ip)
        hop = np.full(idx.shape[0], -1, np.int32)
        hit = idx >= 0
        hop[hit] = self.route_hop[idx[hit]]
        return idx, hop

    def decode(self, hop_ids) -> list[NextHop | None]:
        """``NextHop`` of each id (None for -1); per-element Python, for reports and tests."""
        return [self.hops[h] if h >= 0 else None for h in np.asarray(hop_ids).tolist()]

    def hop_ids_of_kind(self, kind: str) -> np.ndarray:
        return np.array([i for i, h in enumerate(self.hops) if h.kind == kind], np.int32)


class TransitRouter:
    """The compiled route tables of one transit router, for batched forwarding between VPCs.

    Parameters
    ----------
    cfg : config.TransitRouter
    vpc_names : list[str]
        VPC index -> name, as the pipeline numbers them.
    vpc_routers : list[VpcRouter]
        The VPCs' routers in the same order (for the route table of each attachment's subnet).

    Attributes
    ----------
    vpc_table : int32[nvpcs]      VPC index -> id of the route table associated with its attachment (-1: none)
    route_att : int32[nroutes]    route index -> attachment index (-1: blackhole)
    att_vpc : int16[natt]         attachment index -> VPC index
    att_table : int32[natt]       attachment index -> route table id (in its VPC) of the attachment's subnet
    """

    def __init__(self, cfg: TransitRouterConfig, vpc_names: list[str], vpc_routers: list[VpcRouter]):
        self.cfg = cfg
        self.name = cfg.name
        self.table_names = list(cfg.route_tables)
        table_id = {n: i for i, n in enumerate(self.table_names)}
        self.att_names = list(cfg.attachments)
        att_id = {n: i for i, n in enumerate(self.att_names)}
        self.routes: list[Route] = []
        route_att = []
        tables = []
        for tname in self.table_names:
            entries = []
            for r in cfg.route_tables[tname].routes:
                entries.append((r.net, r.plen, len(self.routes)))
                self.routes.append(r)
                route_att.append(att_id[r.target] if r.kind == "attachment" else -1)
            tables.append(entries)
        self.route_att = np.array(route_att + [-1], np.int32)  # index -1 (no route) reads the sentinel
        self._routes = Lpm(tables)
        self.vpc_table = np.full(len(vpc_names), -1, np.int32)
        self.att_vpc = np.zeros(len(self.att_names), np.int16)
        self.att_table = np.zeros(len(self.att_names), np.int32)
        for i, n in enumerate(self.att_names):
            a = cfg.attachments[n]
            vi = vpc_names.index(a.vpc)
            self.vpc_table[vi] = table_id[a.route_table]
            self.att_vpc[i] = vi
            vr = vpc_routers[vi]
            self.att_table[i] = vr.subnet_table[vr.subnet_id[a.subnet]]

    def forward(self, vpc, dst) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Where each packet that VPC ``vpc`` (int16[n] indices) sends to this router goes.

        Returns ``(vpc, table, status)``: the VPC index and route table id it enters at, and ``OK``, ``NO_ROUTE``
        (no route in the attachment's table, or the VPC has no attachment) or ``BLACKHOLE``.
        """
        vpc = np.asarray(vpc, np.intp)
        tab = self.vpc_table[vpc]
        attached = tab >= 0
        idx = self._routes.lookup(dst, np.where(attached, tab, 0).astype(np.int32))
        idx[~attached] = -1
        att = self.route_att[idx]
        status = np.full(vpc.shape[0], PktStatus.OK, np.uint8)
        status[idx < 0] = PktStatus.NO_ROUTE
        status[(idx >= 0) & (att < 0)] = PktStatus.BLACKHOLE
        ok = status == PktStatus.OK
        a = np.where(ok, att, 0)
        out_vpc = np.where(ok, self.att_vpc[a], -1).astype(np.int16)
        out_table = np.where(ok, self.att_table[a], -1).astype(np.int32)
        return out_vpc, out_table, status


def routers(topo: Topology) -> dict[str, VpcRouter]:
    """A :class:`VpcRouter` per VPC of the topology."""
    return {name: VpcRouter(v) for name, v in topo.vpcs.items()}
