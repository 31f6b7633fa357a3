"""Plain-Python stateful firewall: the reference the batched Firewall is tested against.

One dict entry per session (canonical 5-tuple + endpoint id), packets applied one at a time, linear first-match
over the policy's rule ranges. It follows the semantics documented in ``gwlb_fast.stages.firewall``:

- zone from = zone to = the zone of the packet's endpoint; unknown endpoint -> UNKNOWN_ENDPOINT;
- a TCP session starts only with a SYN without ACK/RST (else TCP_NOT_SYN, no session);
- allowed sessions forward until an RST (forwarded; then SESSION_CLOSED) or FIN from both sides (tcp-fin, packets
  still pass); denied sessions drop (POLICY_DENY), reset sessions drop (POLICY_RESET) and answer each TCP packet
  that is not an RST with RSTs (RFC 9293 section 3.10.7.1 sequence numbers);
- a session idles out when ``ts - last >= timeout`` (TCP / other protocol timeout while open, the close timeout
  once closed by FIN or RST, the deny timeout when denied or reset); the next packet of its key then starts a new
  session; at the end of each batch every idle session at the latest packet time is expired (so the results do not
  depend on how the packets are cut into batches, only the batch a log record comes out with does).
"""
from __future__ import annotations

from typing import NamedTuple

from gwlb_fast.status import PktStatus

ALLOW, DENY, DROP, RESET_CLIENT, RESET_SERVER, RESET_BOTH = range(6)
AGED_OUT, TCP_FIN, RST_CLIENT, RST_SERVER, POLICY_DENY, EVICTED, END_OF_RUN = range(1, 8)
FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10


class Pkt(NamedTuple):
    ts: int
    endpoint: int
    src: int
    dst: int
    sport: int
    dport: int
    proto: int
    flags: int = 0
    seq: int = 0
    ack: int = 0
    paylen: int = 0

    @property
    def nbytes(self) -> int:
        return 20 + (20 if self.proto == 6 else 8) + self.paylen


def first_match(rules, src, dst, sport, dport, proto, zone) -> int:
    """Index of the first rule whose ranges hold the packet, -1 if none (linear scan over Rule ranges)."""
    point = (src, dst, sport, dport, proto, zone, zone)
    for i, r in enumerate(rules):
        if all(any(lo <= v <= hi for lo, hi in field) for v, field in zip(point, r.fields())):
            return i
    return -1


def rst_for(p: Pkt, to_sender: bool):
    """(src, dst, sport, dport, seq, ack, flags) of the RST answering / impersonating segment p."""
    seglen = p.paylen + (1 if p.flags & SYN else 0) + (1 if p.flags & FIN else 0)
    if to_sender:
        if p.flags & ACK:
            return (p.dst, p.src, p.dport, p.sport, p.ack, 0, RST)
        return (p.dst, p.src, p.dport, p.sport, 0, (p.seq + seglen) & 0xFFFFFFFF, RST | ACK)
    if p.flags & ACK:
        return (p.src, p.dst, p.sport, p.dport, (p.seq + seglen) & 0xFFFFFFFF, p.ack, RST | ACK)
    return (p.src, p.dst, p.sport, p.dport, (p.seq + seglen) & 0xFFFFFFFF, 0, RST)


class OracleFirewall:
    def __init__(self, policy, zone_of_endpoint, tcp_timeout_ns, other_timeout_ns, close_timeout_ns,
                 deny_timeout_ns):
        self.rules = policy.rules
        self.actions = [int(r.action) for r in policy.rules] + [int(policy.default_action)]
        self.default = len(policy.rules)
        self.zones = {ep: (policy.zone_names.index(z) if z in policy.zone_names else 255)
                      for ep, z in zone_of_endpoint.items()}
        self.tcp_to, self.other_to = tcp_timeout_ns, other_timeout_ns
        self.close_to, self.deny_to = close_timeout_ns, deny_timeout_ns
        self.table: dict = {}  # (canonical 5-tuple, endpoint) -> session
        self.hits = [0] * (len(policy.rules) + 1)
        self.log: list[tuple] = []
        self.now = None

    def _timeout(self, s) -> int:
        if s["state"] in ("fin-closed", "rst-closed"):
            return self.close_to
        if s["state"] in ("denied", "reset"):
            return self.deny_to
        return self.tcp_to if s["proto"] == 6 else self.other_to

    def _end(self, key, reason):
        s = self.table.pop(key)
        # same field order as gwlb_fast.stages.firewall.SESSION_DTYPE
        self.log.append((s["client"][0], s["server"][0], s["client"][1], s["server"][1], s["proto"], s["zone"],
                         s["action"], s["reason"] or reason, s["rule"], s["endpoint"], s["pc"], s["ps"], s["bc"],
                         s["bs"], s["start"], s["last"]))

    def process(self, pkts):
        """Apply a batch; returns per packet (status, rule, [frames]) with frames 'echo' or an RST tuple."""
        out = []
        for p in pkts:
            if p.endpoint not in self.zones:
                out.append((PktStatus.UNKNOWN_ENDPOINT, -1, []))
                continue
            zone = self.zones[p.endpoint]
            a, b = sorted([(p.src, p.sport), (p.dst, p.dport)])
            rev = 0 if (p.src, p.sport) == a else 1
            key = (a, b, p.proto, p.endpoint)
            s = self.table.get(key)
            if s is not None and p.ts - s["last"] >= self._timeout(s):
                self._end(key, AGED_OUT)
                s = None
            flags = p.flags if p.proto == 6 else 0
            if s is None:
                if p.proto == 6 and flags & (SYN | ACK | RST) != SYN:
                    out.append((PktStatus.TCP_NOT_SYN, -1, []))
                    continue
                r = first_match(self.rules, p.src, p.dst, p.sport, p.dport, p.proto, zone)
                if r < 0:
                    r = self.default
                act = self.actions[r]
                self.hits[r] += 1
                if act == ALLOW:
                    state = "open"
                elif p.proto == 6 and act in (RESET_CLIENT, RESET_SERVER, RESET_BOTH):
                    state = "reset"
                else:
                    state = "denied"
                s = self.table[key] = {"client": (p.src, p.sport), "server": (p.dst, p.dport), "proto": p.proto,
                                       "zone": zone, "endpoint": p.endpoint, "rule": r, "action": act,
                                       "state": state, "rev": rev, "pc": 0, "ps": 0, "bc": 0, "bs": 0,
                                       "start": p.ts, "last": p.ts, "fins": 0,
                                       "reason": 0 if state == "open" else POLICY_DENY}
            from_client = rev == s["rev"]
            if from_client:
                s["pc"] += 1
                s["bc"] += p.nbytes
            else:
                s["ps"] += 1
                s["bs"] += p.nbytes
            s["last"] = max(s["last"], p.ts)
            st = s["state"]
            if st in ("open", "fin-closed"):
                if flags & RST:
                    s["state"] = "rst-closed"
                    s["reason"] = RST_CLIENT if from_client else RST_SERVER
                elif flags & FIN:
                    s["fins"] |= 1 if from_client else 2
                    if s["fins"] == 3 and st == "open":
                        s["state"] = "fin-closed"
                        s["reason"] = TCP_FIN
                out.append((PktStatus.OK, s["rule"], ["echo"]))
            elif st == "rst-closed":
                out.append((PktStatus.SESSION_CLOSED, s["rule"], []))
            elif st == "denied":
                out.append((PktStatus.POLICY_DENY, s["rule"], []))
            else:
                frames = []
                if not flags & RST:
                    to_client = rst_for(p, to_sender=from_client)
                    to_server = rst_for(p, to_sender=not from_client)
                    frames = {RESET_CLIENT: [to_client], RESET_SERVER: [to_server],
                              RESET_BOTH: [to_client, to_server]}[s["action"]]
                out.append((PktStatus.POLICY_RESET, s["rule"], frames))
        if pkts:
            t = max(p.ts for p in pkts)
            self.now = t if self.now is None else max(self.now, t)
            self.expire(self.now)
        return out

    def expire(self, now):
        for key in list(self.table):
            if now - self.table[key]["last"] >= self._timeout(self.table[key]):
                self._end(key, AGED_OUT)

    def finish(self, now=None):
        now = self.now if now is None else now
        if now is not None:
            self.expire(now)
        for key in list(self.table):
            self._end(key, END_OF_RUN)
