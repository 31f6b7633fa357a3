"""``gwlb-fast explain``: one packet's path, hop by hop, with the reasons (DESIGN.md section 11).

The answer is the pipeline's own: the capture is replayed through a :class:`~gwlb_fast.pipeline.Pipeline` (events
applied as ``run`` applies them) up to the packet asked about, which then goes through ``Pipeline.process`` alone
with the walk traced (``Pipeline.trace``) and every link tapped. The explanation reads that trace and those taps:
which route of which table matched, the GWLB's flow hash, Maglev slot and firewall (and why: established flow,
health, draining, events so far), the Geneve frame it sent, the firewall's zone and rule (the earlier rules that did
not match and the later ones the match shadows, from the policy's own boxes), the NAT translation and the fate.
Nothing here decides a packet's fate itself.
"""
from __future__ import annotations

import ipaddress
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .batch import PacketBatch
from .errors import ConfigError
from .outputs.drops import reason_text
from .outputs.report import ip_str
from .pipeline import D_HOST, D_INTERNET, STAGES, Pipeline
from .stages.gwlb import HEALTH_STATES

PROTOS = {"tcp": 6, "udp": 17, "icmp": 1}
_PROTO_NAME = {v: k for k, v in PROTOS.items()}
_HEALTH_NAME = {v: k for k, v in HEALTH_STATES.items()}
_NS = 1_000_000_000


# ---------------------------------------------------------------------------------------------------- a flow's packet
def parse_flow(text: str) -> tuple[int, int, int, int, int]:
    """``"tcp 10.1.1.5:40000 > 93.184.216.34:443"`` (or ``"icmp 10.1.1.5 > 8.8.8.8"``) -> (proto, src, sport, dst,
    dport) with addresses as integers."""
    parts = text.replace("->", ">").split()
    try:
        proto_s, src_s, arrow, dst_s = parts
        if arrow != ">":
            raise ValueError
        proto = PROTOS[proto_s.lower()] if not proto_s.isdigit() else int(proto_s)

        def ep(s):
            if proto in (6, 17):
                host, port = s.rsplit(":", 1)
                port = int(port)
                if not 0 <= port <= 65535:
                    raise ValueError
            else:
                host, port = s, 0
            return int(ipaddress.IPv4Address(host)), port

        src, sport = ep(src_s)
        dst, dport = ep(dst_s)
    except (ValueError, KeyError):
        raise ConfigError(f"--flow: {text!r}: expected 'PROTO SRC:PORT > DST:PORT' "
                          "(e.g. 'tcp 10.1.1.5:40000 > 93.184.216.34:443', or 'icmp 10.1.1.5 > 8.8.8.8')") from None
    return proto, src, sport, dst, dport


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def flow_packet(proto: int, src: int, sport: int, dst: int, dport: int, ts_ns: int) -> PacketBatch:
    """The first packet of such a flow (TCP SYN, empty UDP datagram, ICMP echo request) in an Ethernet frame."""
    if proto == 6:
        l4 = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, 0x02, 65535, 0, 0)
    elif proto == 17:
        l4 = struct.pack("!HHHH", sport, dport, 8, 0)
    elif proto == 1:
        l4 = struct.pack("!BBHHH", 8, 0, 0, 1, 1)
        l4 = l4[:2] + struct.pack("!H", _csum(l4)) + l4[4:]
    else:
        l4 = b""
    if proto in (6, 17):
        pseudo = struct.pack("!IIBBH", src, dst, 0, proto, len(l4))
        c = _csum(pseudo + l4)
        at = 16 if proto == 6 else 6
        l4 = l4[:at] + struct.pack("!H", c) + l4[at + 2:]
    ip = struct.pack("!BBHHHBBHII", 0x45, 0, 20 + len(l4), 1, 0x4000, 64, proto, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", _csum(ip)) + ip[12:]
    eth = bytes.fromhex("020000000002020000000001") + b"\x08\x00"
    return PacketBatch.from_packets([eth + ip + l4], ts_ns=np.array([ts_ns], np.int64))


# ---------------------------------------------------------------------------------------------------- replay
@dataclass
class Explanation:
    """One packet's path: ``hops`` (lines of text, in order) and the facts that ``run`` also reports."""

    packet: dict
    hops: list[str] = field(default_factory=list)
    firewall: str | None = None
    rule: str | None = None
    nat: dict | None = None
    fate: str = ""
    delivered: str | None = None       # "internet", "host" or None
    drop: dict | None = None           # {stage, reason} when dropped
    out: dict | None = None            # the packet as delivered (addresses and ports after NAT)
    steps: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"packet": self.packet, "firewall": self.firewall, "rule": self.rule, "nat": self.nat,
                "fate": self.fate, "delivered": self.delivered, "drop": self.drop, "out": self.out,
                "hops": self.hops,
                "steps": self.steps}

    def __str__(self) -> str:
        p = self.packet
        head = f"packet {p['number']}" if p.get("number") else "flow"
        lines = [f"{head}: {p['summary']}  (t={p['time']:.6f} s)"]
        lines += [f"  {i + 1:>2}. {h}" for i, h in enumerate(self.hops)]
        lines.append(f"  => {self.fate}")
        return "\n".join(lines) + "\n"


class Replayer:
    """Feeds a capture through a pipeline as ``run`` does (chunks, events at their times) and explains chosen
    packets on the way: each one goes through alone, traced."""

    def __init__(self, pipe: Pipeline, events=None):
        self.pipe = pipe
        self.evs = pipe._events(events)

    def feed(self, batch: PacketBatch) -> None:
        for part in self.pipe._split_at_events(batch, self.evs):
            if isinstance(part, dict):
                self.pipe._apply(part)
            elif len(part):
                self.pipe.process(part)

    def explain(self, one: PacketBatch, number: int | None = None) -> Explanation:
        """Send the one-packet batch ``one`` through the path (after the events due by its time) and explain it."""
        pipe = self.pipe
        for part in pipe._split_at_events(one, self.evs):  # the health actions due by the packet's time
            if isinstance(part, dict):
                pipe._apply(part)
        probe = one.copy().parse()
        before = _gwlb_state(pipe, probe)
        was_taps = pipe.keep_taps
        pipe.record_taps(True)
        pipe.trace = []
        logs = {g: insp.lb.activity for g, insp in pipe.gwlbs.items()}
        for insp in pipe.gwlbs.values():
            insp.lb.activity = []  # which flows the GWLB placed (new) or moved (rebalanced) for this packet
        try:
            res = pipe.process(one)
            trace = pipe.trace
            for g, insp in pipe.gwlbs.items():
                act = insp.lb.activity
                before[g] = {"new": any(a[0] is not None and a[3].size for a in act),
                             "moved": any(a[0] is None and a[3].size for a in act)}
        finally:
            pipe.trace = None
            pipe.record_taps(was_taps)
            for g, insp in pipe.gwlbs.items():
                insp.lb.activity = logs[g]
        return _explain(pipe, probe, res, trace, before, number)


def _gwlb_state(pipe: Pipeline, b: PacketBatch) -> dict:
    """Per GWLB and endpoint, before the packet: its flow's firewall and cookie if the flow exists, and health."""
    out = {}
    for ep in pipe.endpoints:
        insp = pipe.gwlbs.get(ep.gwlb)
        if insp is None:
            continue
        lb = insp.lb
        out[ep.index] = {"health": lb.health.copy(), "drain_deadline": lb.drain_deadline.copy()}
    return out


def _lookup_flow(lb, tup, endpoint_id: int):
    from ._kernels.flowtable import canonical_5tuple

    src, dst, sp, dp, proto = (np.ascontiguousarray(x) for x in tup)
    a, b = np.empty(1, np.uint32), np.empty(1, np.uint32)
    pa, pb = np.empty(1, np.uint16), np.empty(1, np.uint16)
    rev = np.empty(1, np.uint8)
    canonical_5tuple(src, dst, sp, dp, a, b, pa, pb, rev)
    slot = np.empty(1, np.int64)
    lb.flows.lookup(a, b, pa, pb, proto, np.array([endpoint_id], np.uint64), slot)
    return int(slot[0])


def _matching_rules(policy, tup, zone: int) -> np.ndarray:
    """Indices of every rule whose boxes contain the tuple (ascending): the policy's own compiled boxes."""
    lo, hi, rule = policy.boxes()
    if rule.size == 0:
        return rule
    pt = np.array([tup[0], tup[1], tup[2], tup[3], tup[4], zone, zone], np.uint32)
    inside = np.all((lo <= pt) & (pt <= hi), axis=1)
    return np.unique(rule[inside])


def _fmt_tuple(src, sport, dst, dport, proto) -> str:
    name = _PROTO_NAME.get(int(proto), str(int(proto)))
    if int(proto) in (6, 17):
        return f"{name} {ip_str(src)}:{int(sport)} > {ip_str(dst)}:{int(dport)}"
    return f"{name} {ip_str(src)} > {ip_str(dst)}"


def _explain(pipe: Pipeline, probe: PacketBatch, res, trace, before, number) -> Explanation:
    from .geneve import decap

    t = (int(probe.ts_ns[0]) - (pipe.first_ts or 0)) / 1e9
    st0 = int(probe.status[0])
    summary = (_fmt_tuple(probe.src_ip[0], probe.sport[0], probe.dst_ip[0], probe.dport[0], probe.proto[0])
               if st0 == 0 else f"not forwardable ({reason_text(st0)})")
    ex = Explanation({"number": number, "time": t, "summary": summary, "src_ip": ip_str(probe.src_ip[0]),
                      "dst_ip": ip_str(probe.dst_ip[0]), "src_port": int(probe.sport[0]),
                      "dst_port": int(probe.dport[0]), "proto": int(probe.proto[0])})
    rule_names = list(pipe.policy.rule_names) + ["default"]
    geneve_frames = list(res.taps.get("gwlb-to-fw", []))
    for step, info in trace:
        rows = info["rows"]
        if info["walk"] != "packets" or 0 not in rows.tolist():
            continue
        j = int(np.flatnonzero(rows == 0)[0])
        d = {"step": step}
        if step == "enter-subnet":
            r = pipe.routers[info["vpc"]]
            sn = r.subnets[int(info["subnet"][j])]
            d.update(vpc=r.name, subnet=sn.name, route_table=sn.route_table)
            ex.hops.append(f"enters VPC {r.name} from subnet {sn.name} ({sn.cidr}): route table {sn.route_table}")
        elif step == "enter-nat":
            gw = pipe.nats[info["nat"]]
            name = pipe.nat_names[info["nat"]]
            if info["form"] == "public":
                b4 = [int(x[j]) for x in info["before"]]
                af = [int(x[j]) for x in info["after"]]
                ok = int(info["status"][j]) == 0
                d.update(nat=name, before=b4, after=af, ok=ok)
                if ok:
                    ex.nat = {"gateway": name, "kind": "inbound", "public": f"{ip_str(b4[2])}:{b4[3]}",
                              "private": f"{ip_str(af[2])}:{af[3]}"}
                rule = next((r for r in gw.cfg.dnat if r.proto == ex.packet["proto"] and r.port == b4[3]
                             and r.to_ip == af[2] and r.to_port == af[3]), None)
                how = (f"DNAT rule {_PROTO_NAME.get(rule.proto, rule.proto)}/{rule.port} -> {rule.to}" if rule
                       else "the reverse of an SNAT mapping")
                ex.hops.append(f"from the Internet to NAT gateway {name} ({ip_str(gw.public_ip)}): "
                               + (f"destination {ip_str(b4[2])}:{b4[3]} -> {ip_str(af[2])}:{af[3]} ({how})"
                                  if ok else f"no translation ({reason_text(int(info['status'][j]))})"))
            else:
                pport = int(info["public_port"][j])
                d.update(nat=name, public_port=pport)
                if pport >= 0:
                    ex.nat = {"gateway": name, "kind": "reply", "public": f"{ip_str(gw.public_ip)}:{pport}",
                              "private": f"{ip_str(probe.dst_ip[0])}:{int(probe.dport[0])}"}
                    ex.hops.append(f"from the Internet, a reply to {name}'s SNAT mapping {ip_str(gw.public_ip)}:"
                                   f"{pport} -> {ip_str(probe.dst_ip[0])}:{int(probe.dport[0])} (captured in "
                                   f"private form, as the host receives it)")
                else:
                    ex.hops.append(f"from the Internet to private host {ip_str(probe.dst_ip[0])} through NAT "
                                   f"gateway {name}: no SNAT mapping for it yet")
            vi, tab = pipe.nat_entry[info["nat"]]
            d["route_table"] = pipe.routers[vi].table_names[tab]
        elif step == "route":
            r = pipe.routers[info["vpc"]]
            tname = r.table_names[int(info["table"][j])]
            ri = int(info["route"][j])
            if ri >= 0:
                route = r.routes[ri]
                d.update(vpc=r.name, table=tname, route=route.dst, via=route.via)
                ex.hops.append(f"route table {tname} ({r.name}): {route.dst} via {route.via}")
            else:
                d.update(vpc=r.name, table=tname, route=None)
                ex.hops.append(f"route table {tname} ({r.name}): no route matches")
        elif step == "inspect":
            _explain_inspect(pipe, ex, d, info, j, before, geneve_frames, rule_names, decap)
        elif step == "nat-out":
            name = pipe.nat_names[info["nat"]]
            b4 = [int(x[j]) for x in info["before"]]
            af = [int(x[j]) for x in info["after"]]
            ok = int(info["status"][j]) == 0
            d.update(nat=name, before=b4, after=af, ok=ok)
            if ok:
                if (b4[0], b4[1]) != (af[0], af[1]):
                    ex.nat = {"gateway": name, "kind": "snat", "private": f"{ip_str(b4[0])}:{b4[1]}",
                              "public": f"{ip_str(af[0])}:{af[1]}"}
                    ex.hops.append(f"NAT gateway {name}: SNAT source {ip_str(b4[0])}:{b4[1]} -> "
                                   f"{ip_str(af[0])}:{af[1]}")
                else:
                    ex.nat = {"gateway": name, "kind": "dnat-reply", "private": f"{ip_str(b4[0])}:{b4[1]}",
                              "public": f"{ip_str(af[0])}:{af[1]}"}
                    ex.hops.append(f"NAT gateway {name}: translated {_fmt_tuple(*b4, ex.packet['proto'])} -> "
                                   f"{_fmt_tuple(*af, ex.packet['proto'])}")
            else:
                ex.hops.append(f"NAT gateway {name}: {reason_text(int(info['status'][j]))}")
        elif step == "deliver":
            d["to"] = info["to"]
            ex.hops.append("delivered to the host in its subnet" if info["to"] == "host"
                           else "leaves to the Internet")
        elif step == "drop":
            d.update(stage=STAGES[info["stage"]], reason=_status_name(info["status"]))
        ex.steps.append(d)
    # the fate, as the chunk result has it
    stage = int(res.stage[0])
    if stage != 255:
        code = int(res.status[0])
        ex.drop = {"stage": STAGES[stage], "reason": _status_name(code)}
        ex.fate = f"dropped at {STAGES[stage]}: {reason_text(code)}"
    else:
        dv = int(res.delivered[0])
        ex.delivered = {D_INTERNET: "internet", D_HOST: "host"}.get(dv)
        o = res.output[:1].copy().parse()
        ex.out = {"src_ip": ip_str(o.src_ip[0]), "src_port": int(o.sport[0]), "dst_ip": ip_str(o.dst_ip[0]),
                  "dst_port": int(o.dport[0]), "proto": int(o.proto[0])}
        ex.fate = (f"delivered to the {'Internet' if ex.delivered == 'internet' else 'host'} as "
                   f"{_fmt_tuple(o.src_ip[0], o.sport[0], o.dst_ip[0], o.dport[0], o.proto[0])}")
    fw = int(res.fw[0])
    if fw >= 0 and ex.firewall is None:
        ex.firewall = pipe.firewall_names[fw]
    r = int(res.rule[0]) if res.rule is not None else -1
    ex.rule = rule_names[r] if 0 <= r < len(rule_names) else None
    if res.resets is not None:
        mine = res.resets.source == 0
        for k in np.flatnonzero(mine).tolist():
            rb = res.resets.batch[k:k + 1]
            st = int(res.resets.stage[k])
            where = (f"dropped at {STAGES[st]}: {reason_text(int(res.resets.status[k]))}" if st != 255
                     else f"delivered ({ {D_INTERNET: 'internet', D_HOST: 'host'}.get(int(res.resets.delivered[k])) })")
            ex.hops.append(f"the firewall answers with a TCP reset {_fmt_tuple(rb.src_ip[0], rb.sport[0], rb.dst_ip[0], rb.dport[0], 6)}: {where}")
    return ex


def _status_name(code: int) -> str:
    from .status import PktStatus

    try:
        return PktStatus(int(code)).name
    except ValueError:
        return str(int(code))


def _explain_inspect(pipe, ex, d, info, j, before, frames, rule_names, decap) -> None:
    e = info["endpoint"]
    ep = pipe.endpoints[e]
    insp = pipe.gwlbs[info["gwlb"]]
    lb = insp.lb
    tup = tuple(np.ascontiguousarray(x[j:j + 1]) for x in info["tuple"])
    ex.hops.append(f"GWLB endpoint {ep.name} (endpoint id {ep.id:#018x}) hands it to GWLB {insp.name} "
                   f"({ip_str(insp.address)})")
    h = lb.flow_hash(*tup)
    hv = int(h[0])
    size = lb.maglev.size
    slot = ((hv >> 32) * size) >> 32  # the slot maglev_lookup reads for a uint64 hash
    state = before.get(e, {"health": lb.health, "drain_deadline": lb.drain_deadline})
    health = state["health"]
    accepting = health == HEALTH_STATES["healthy"]
    owner_all = int(lb.maglev.table(None)[slot])
    owner_now = int(lb.maglev.table(accepting)[slot]) if accepting.any() else -1
    fw = int(info["fw"][j])
    status = int(info["status"][j])
    health_s = ", ".join(f"{n} {_HEALTH_NAME[int(hh)]}" for n, hh in zip(lb.names, health.tolist()))
    d.update(endpoint=ep.name, gwlb=insp.name, flow_hash=f"{hv:#018x}", stickiness=lb.stickiness,
             maglev_slot=slot, maglev_size=size, slot_owner=lb.names[owner_all], health=health_s)
    ex.hops.append(f"GWLB {insp.name}: {lb.stickiness} flow hash {hv:#018x} -> Maglev slot {slot} of {size}, "
                   f"whose full-fleet owner is {lb.names[owner_all]}; health: {health_s}")
    evs = [f"t={ev['at']:g}s {ev['firewall']} {ev.get('state') or ev.get('event')}" for ev in pipe.events_done]
    if evs:
        ex.hops.append("events so far: " + "; ".join(evs))
    # established flow or a new one: the flow table after the packet says which firewall it is pinned to; its
    # state before the packet is what the GWLB saw
    placed = before.get(insp.name, {})
    if fw >= 0:
        d["firewall"] = lb.names[fw]
        d["flow"] = "new" if placed.get("new") else ("moved" if placed.get("moved") else "established")
        ex.firewall = lb.names[fw]
        if placed.get("moved"):
            why = (f"its flow's firewall is no longer healthy (failover: {lb.failover}): the flow moves to the "
                   f"highest-ranked active firewall for the slot")
        elif not placed.get("new"):
            why = f"the flow is established on {lb.names[fw]} (the flow table keeps it there)"
        elif fw == owner_now and owner_now == owner_all:
            why = f"the slot's owner {lb.names[fw]} takes new flows"
        elif fw == owner_now:
            why = (f"the slot's owner {lb.names[owner_all]} is {_HEALTH_NAME[int(health[owner_all])]}, so the "
                   f"highest-ranked active firewall for the slot, {lb.names[fw]}, takes it")
        else:
            why = f"the flow is established on {lb.names[fw]} (the flow table keeps it there)"
        ex.hops.append(f"GWLB picks {lb.names[fw]} ({ip_str(insp.fw_ip[fw])}): {why}")
    else:
        ex.hops.append(f"GWLB: {reason_text(status)}")
    # the Geneve frame it sent
    for wire in frames:
        if len(wire) == 0:
            continue
        g = decap(wire, option_class=insp.option_class)
        outer = wire.copy().parse()
        k = 0
        d["geneve"] = {"outer_src": ip_str(outer.src_ip[k]), "outer_dst": ip_str(outer.dst_ip[k]),
                       "udp_sport": int(outer.sport[k]), "udp_dport": int(outer.dport[k]),
                       "vni": int(g.vni[k]) if g.vni is not None else 0, "option_class": f"{insp.option_class:#06x}",
                       "endpoint_id": f"{int(g.endpoint_id[k]):#018x}",
                       "attachment_id": f"{int(g.attachment_id[k]):#x}" if g.attachment_id is not None else None,
                       "flow_cookie": f"{int(g.flow_cookie[k]):#010x}"}
        gv = d["geneve"]
        ex.hops.append(f"Geneve to the firewall: {gv['outer_src']}:{gv['udp_sport']} > {gv['outer_dst']}:"
                       f"{gv['udp_dport']}, VNI {gv['vni']}, options (class {gv['option_class']}): "
                       f"type 1 endpoint id {gv['endpoint_id']}, type 2 attachment id {gv['attachment_id']}, "
                       f"type 3 flow cookie {gv['flow_cookie']}")
        frames.remove(wire)
        break
    if fw < 0:
        return
    # the firewall: zone, rule
    pol = pipe.policy
    zone = next((z for z, members in pol.zones.items() if ep.name in members),
                pol.zone_names[0] if pol.zone_names else "default")
    zi = pol.zone_names.index(zone) if zone in pol.zone_names else 255
    r = int(info["rule"][j])
    flat = [int(x[0]) for x in tup]
    fwd = _matching_rules(pol, flat, zi)
    rev = _matching_rules(pol, [flat[1], flat[0], flat[3], flat[2], flat[4]], zi)
    direction = "this packet"
    matches = fwd
    if r >= 0 and (fwd.size == 0 or int(fwd[0]) != r) and rev.size and int(rev[0]) == r:
        matches, direction = rev, "the session's first packet (the reverse direction)"
    d.update(zone=zone, rule=rule_names[r] if 0 <= r < len(rule_names) else None)
    ex.hops.append(f"firewall {lb.names[fw]}: zone {zone} (endpoint {ep.name}), intrazone")
    if r >= 0:
        n_rules = len(pol.rules)
        first = int(matches[0]) if matches.size else n_rules
        earlier = [rule_names[i] for i in range(min(first, r)) if i < n_rules]
        later = [rule_names[int(i)] for i in matches if int(i) > r]
        action = pol.actions[r] if r < n_rules else int(pol.default_action)
        from .stages.policy import Action

        act = Action(int(action)).name.lower().replace("_", "-")
        text = (f"rule {rule_names[r]} ({act}) matches {direction}" if r < n_rules
                else f"no rule matches {direction}: default action {act}")
        if earlier:
            text += f"; earlier rules that do not match: {', '.join(earlier)}"
        if later:
            text += f"; later rules it shadows: {', '.join(later)}"
        ex.hops.append(text)
        d.update(earlier=earlier, shadows=later, action=act)
    if int(info["status"][j]) != 0 and info["by_firewall"][j]:
        ex.hops.append(f"firewall {lb.names[fw]}: {reason_text(int(info['status'][j]))}")
    elif int(info["status"][j]) == 0:
        ex.hops.append(f"firewall {lb.names[fw]} returns it to the GWLB with the Geneve header echoed; the GWLB "
                       f"checks the flow cookie and hands it back to {ep.name}")
    else:
        ex.hops.append(f"GWLB: {reason_text(int(info['status'][j]))}")


# ---------------------------------------------------------------------------------------------------- entry points
def explain_packets(topology, capture, numbers, events=None, chunk: int = 65536) -> dict[int, Explanation]:
    """Explain the packets ``numbers`` (1-based, as tshark numbers frames) of ``capture``, in one replay."""
    from .pcapio import read_pcap

    pipe = topology if isinstance(topology, Pipeline) else Pipeline.from_yaml(topology)
    rp = Replayer(pipe, events)
    want = sorted({int(n) for n in numbers})
    if want and want[0] < 1:
        raise ConfigError(f"--packet: packet numbers start at 1, got {want[0]}")
    out: dict[int, Explanation] = {}
    seen = 0
    wi = 0
    reader = read_pcap(capture, chunk=chunk, parse=False, strict=True)
    try:
        for batch in reader:
            n = len(batch)
            start = 0
            while wi < len(want) and want[wi] <= seen + n:
                i = want[wi] - 1 - seen
                if i > start:
                    rp.feed(batch[start:i])
                out[want[wi]] = rp.explain(batch[i:i + 1], want[wi])
                start = i + 1
                wi += 1
            if wi == len(want):
                break
            if start < n:
                rp.feed(batch[start:])
            seen += n
    finally:
        close = getattr(reader, "close", None)
        if close:
            close()
    if wi < len(want):
        raise ConfigError(f"{capture}: has {seen} packets; no packet {want[wi]}")
    return out


def explain_flow(topology, flow: str, at: float = 0.0, capture=None, events=None) -> Explanation:
    """Explain the first packet of ``flow`` sent ``at`` seconds into the run (after the capture's packets before
    that time when ``capture`` is given)."""
    from .pcapio import read_pcap

    proto, src, sport, dst, dport = parse_flow(flow)
    pipe = topology if isinstance(topology, Pipeline) else Pipeline.from_yaml(topology)
    rp = Replayer(pipe, events)
    t_ns = round(at * _NS)
    if capture is not None:
        reader = read_pcap(capture, parse=False, strict=True)
        try:
            for batch in reader:
                if pipe.first_ts is None and len(batch):
                    pipe.first_ts = int(batch.ts_ns[0])
                cut = int(np.searchsorted(batch.ts_ns, pipe.first_ts + t_ns, "right"))
                rp.feed(batch[:cut])
                if cut < len(batch):
                    break
        finally:
            close = getattr(reader, "close", None)
            if close:
                close()
    if pipe.first_ts is None:
        pipe.first_ts = 0
    return rp.explain(flow_packet(proto, src, sport, dst, dport, pipe.first_ts + t_ns))


def add_cli(sub) -> None:
    p = sub.add_parser("explain", help="one packet's path, hop by hop, with the reasons",
                       description="Show the path one packet takes (route tables, GWLBe, the GWLB's flow hash, "
                                   "Maglev slot and firewall, the Geneve header, the firewall's zone and rule, "
                                   "the NAT translation and its fate), from the same pipeline `run` uses.")
    p.add_argument("topology", help="topology YAML")
    p.add_argument("--flow", help="a flow's first packet: 'tcp 10.1.1.5:40000 > 93.184.216.34:443'")
    p.add_argument("--capture", metavar="FILE", help="replay this capture first")
    p.add_argument("--packet", type=int, metavar="N", help="explain packet N of the capture (1-based, as tshark)")
    p.add_argument("--at", type=float, default=0.0, metavar="SECONDS",
                   help="with --flow: send it this long after the capture's first packet (default 0)")
    p.add_argument("--events", metavar="FILE", help="what-if health changes instead of the topology's")
    p.add_argument("--json", action="store_true", help="print the explanation as JSON")
    p.set_defaults(func=_cmd_explain)


def _cmd_explain(args) -> int:
    if (args.flow is None) == (args.packet is None):
        raise ConfigError("explain: give either --flow or --capture FILE --packet N")
    if args.packet is not None and args.capture is None:
        raise ConfigError("explain: --packet needs --capture FILE")
    if args.capture is not None and not Path(args.capture).exists():
        raise FileNotFoundError(2, "no such file", args.capture)
    if args.flow is not None:
        ex = explain_flow(args.topology, args.flow, at=args.at, capture=args.capture, events=args.events)
    else:
        ex = explain_packets(args.topology, args.capture, [args.packet], events=args.events)[args.packet]
    print(json.dumps(ex.as_dict(), indent=2) if args.json else ex, end="\n" if args.json else "")
    return 0


__all__ = ["Explanation", "Replayer", "explain_flow", "explain_packets", "flow_packet", "parse_flow"]
