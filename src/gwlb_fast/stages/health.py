"""Failure as the GWLB sees it: health checks, their timing per cloud profile, and the probe packets (DESIGN.md 13).

Events of a what-if script come in two kinds:

- ``state: healthy | unhealthy | draining`` sets the GWLB's view of a firewall directly (as before);
- ``event: down | up | remove`` happens to the appliance itself. After ``down`` it forwards nothing and answers no
  health check, but the GWLB keeps sending it traffic (new flows hashed to it, and its existing flows) until its
  health check declares it unhealthy; those packets are lost and counted (``FW_DOWN``). After ``up`` it forwards
  and answers again, and the GWLB takes it back once the healthy threshold is met. ``remove`` deregisters it: it
  takes no new flow, its existing flows drain for ``draining_timeout`` (then fail over per ``failover``), and it
  is no longer probed.

When the GWLB notices, per ``geneve.profile`` and the ``health_check`` settings (interval I, timeout T, unhealthy
threshold U, healthy threshold H, the response time R of a successful TCP probe, 1 ms here):

=========  ==================================  ================================
profile    declared unhealthy after ``down``   declared healthy after ``up``
=========  ==================================  ================================
alibaba    T x U + I x (U - 1)                 R x H + I x (H - 1)
aws        I x U                               I x H
tencent    I x U                               I x H
=========  ==================================  ================================

Alibaba documents both windows ("health check time window", GWLB health check overview,
https://help.aliyun.com/zh/slb/health-check ; https://www.alibabacloud.com/help/en/slb/gateway-based-load-balancing-
gwlb/user-guide/health-check): each probe waits up to the response timeout, the next one is sent an interval
later. AWS gives the minimum time to fail over an unhealthy target as "interval times threshold" (Gateway Load
Balancer target group attributes, target failover: https://docs.aws.amazon.com/elasticloadbalancing/latest/gateway/
edit-target-group-attributes.html). Tencent publishes no formula; its probes are periodic like AWS's, so the AWS
rule is used (an assumption, stated here and in the README). The model starts the first failing probe at the
moment of the failure, the case the documented windows describe.

The probes themselves go to the ``health`` tap, real packets timed by the same rule: a TCP check is a SYN from the
GWLB address to the firewall's health-check port, answered by a SYN-ACK while the firewall is up, then closed by
the GWLB with an RST (Alibaba's description); an HTTP check opens the connection the same way and sends
``GET <path>``, answered by ``HTTP/1.1 200 OK``. A probe to a down firewall is a SYN that nobody answers, followed
by the GWLB's RST when the timeout ends. Probes are not Geneve-encapsulated (Alibaba: "request messages are not
encapsulated using the Geneve protocol").
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

from ..batch import LINKTYPE_ETHERNET, PacketBatch
from ..config import Gwlb as GwlbConfig
from ..config import HealthCheck

__all__ = ["PROBE_RTT", "Action", "HealthTimeline", "healthy_window", "probe_packets", "unhealthy_window"]

#: response time of a successful probe (Alibaba's "health check success response time", negligible for TCP)
PROBE_RTT = 0.001
_NS = 1_000_000_000


def unhealthy_window(hc: HealthCheck, profile: str) -> float:
    """Seconds from ``down`` to the GWLB declaring the firewall unhealthy, by the profile's documented rule."""
    u = hc.unhealthy_threshold
    if profile == "alibaba":
        return hc.timeout * u + hc.interval * (u - 1)
    return hc.interval * u


def healthy_window(hc: HealthCheck, profile: str) -> float:
    """Seconds from ``up`` to the GWLB declaring the firewall healthy again."""
    h = hc.healthy_threshold
    if profile == "alibaba":
        return PROBE_RTT * h + hc.interval * (h - 1)
    return hc.interval * h


def _failing_gap(hc: HealthCheck, profile: str) -> float:
    """Seconds between the sends of two consecutive unanswered probes."""
    return hc.timeout + hc.interval if profile == "alibaba" else hc.interval


def _passing_gap(hc: HealthCheck, profile: str) -> float:
    return PROBE_RTT + hc.interval if profile == "alibaba" else hc.interval


@dataclass(frozen=True)
class Action:
    """One change at ``at_ns`` (absolute, packet-timestamp time): ``kind`` ``state`` (the GWLB's view becomes
    ``value``) or ``alive`` (the appliance forwards, ``value`` True, or not). ``cause`` says why, for the summary."""

    at_ns: int
    gwlb: str
    firewall: str
    kind: str
    value: object
    cause: str


@dataclass(frozen=True)
class _Segment:
    """Probes sent every ``gap`` ns from ``first`` while ``start <= t < stop``, answered or not."""

    start: int
    stop: int
    first: int
    gap: int
    answered: bool

    def sends(self, lo: int, hi: int) -> np.ndarray:
        a, b = max(lo, self.first, self.start), min(hi, self.stop)
        if a >= b:
            return np.zeros(0, np.int64)
        k0 = -(-(a - self.first) // self.gap)
        k1 = -(-(b - self.first) // self.gap)
        return self.first + self.gap * np.arange(k0, k1, dtype=np.int64)


@dataclass
class HealthTimeline:
    """The what-if script expanded into the actions the path applies, and every health probe the GWLB sends.

    Built once per run from the events (times relative to ``t0_ns``, the capture's first packet) and the GWLBs'
    settings; ``actions`` are sorted by time, and ``segments[(gwlb, firewall)]`` give every probe's send time and
    whether it was answered (:meth:`probe_times`).
    """

    actions: list[Action] = field(default_factory=list)
    segments: dict[tuple[str, str], list[_Segment]] = field(default_factory=dict)

    @classmethod
    def build(cls, gwlbs: dict[str, GwlbConfig], events: list[dict], t0_ns: int) -> HealthTimeline:
        tl = cls()
        by_fw: dict[tuple[str, str], list[dict]] = {}
        for e in sorted(events, key=lambda d: d["at"]):
            owners = [e["gwlb"]] if e.get("gwlb") else [g for g, cfg in gwlbs.items() if e["firewall"] in cfg.firewalls]
            for g in owners:
                by_fw.setdefault((g, e["firewall"]), []).append(e)
        for g, cfg in gwlbs.items():
            for k, name in enumerate(cfg.firewall_names):
                tl._expand(cfg, name, k, by_fw.get((g, name), []), t0_ns)
        tl.actions.sort(key=lambda a: a.at_ns)
        return tl

    def _expand(self, cfg: GwlbConfig, fw: str, k: int, evs: list[dict], t0: int) -> None:
        hc, profile = cfg.health_check, cfg.geneve.profile
        gap_fail, gap_pass = round(_failing_gap(hc, profile) * _NS), round(_passing_gap(hc, profile) * _NS)
        interval, timeout, rtt = round(hc.interval * _NS), round(hc.timeout * _NS), round(PROBE_RTT * _NS)
        # steady probing starts at the capture's start, the firewalls staggered over one interval
        n_fw = max(1, len(cfg.firewalls))
        alive, removed_at = True, None
        segments = [(t0, True, t0 + (interval * k) // n_fw, gap_pass)]   # (from, answered, first probe, gap)
        for e in evs:
            at = t0 + round(float(e["at"]) * _NS)
            kind = e.get("event")
            if kind is None:   # the GWLB's view, set directly
                self.actions.append(Action(at, cfg.name, fw, "state", e["state"], "event"))
                continue
            if removed_at is not None:
                continue
            if kind == "down" and alive:
                alive = False
                self.actions.append(Action(at, cfg.name, fw, "alive", False, "down"))
                # the first failing probe at the failure (the case the documented windows describe); AWS's
                # periodic checks give their verdict at the end of each interval
                segments.append((at, False, at if profile == "alibaba" else at + interval - timeout, gap_fail))
            elif kind == "up" and not alive:
                alive = True
                self.actions.append(Action(at, cfg.name, fw, "alive", True, "up"))
                segments.append((at, True, at if profile == "alibaba" else at + interval - rtt, gap_pass))
            elif kind == "remove":
                removed_at = at
                self.actions.append(Action(at, cfg.name, fw, "state", "draining", "remove"))
        out = self.segments[(cfg.name, fw)] = []
        for i, (start, up, first, gap) in enumerate(segments):
            stop = segments[i + 1][0] if i + 1 < len(segments) else np.iinfo(np.int64).max
            if removed_at is not None:
                stop = min(stop, removed_at)
            if start < stop:
                out.append(_Segment(start, stop, first, gap, up))
        self._declare(cfg.name, fw, hc, out, rtt, timeout)

    def _declare(self, gwlb: str, fw: str, hc: HealthCheck, segments: list[_Segment], rtt: int,
                 timeout: int) -> None:
        """The GWLB's verdicts, probe by probe: a failed probe is known when its timeout ends, an answered one
        after the response time; ``unhealthy_threshold`` failures in a row make a healthy firewall unhealthy,
        ``healthy_threshold`` answers in a row make it healthy again."""
        u, h = hc.unhealthy_threshold, hc.healthy_threshold
        # within a segment every probe has the same result: past its first few the state cannot change, and only its
        # last few can have verdicts that come after the next segment's first ones
        enough = max(u, h) + 1
        verdicts = []
        for seg in segments:
            last = seg.stop if seg.stop < np.iinfo(np.int64).max else seg.first + enough * seg.gap
            head = seg.sends(seg.start, min(last, seg.first + enough * seg.gap))
            tail = seg.sends(max(seg.start, last - enough * seg.gap), last)
            for t in sorted(set(head.tolist()) | set(tail.tolist())):  # np.union1d imports numpy.ma (start-up)
                verdicts.append((t + (rtt if seg.answered else timeout), seg.answered))
        verdicts.sort()
        state, fails, oks = "healthy", 0, 0
        for at, ok in verdicts:
            fails, oks = (0, oks + 1) if ok else (fails + 1, 0)
            if state == "healthy" and fails >= u:
                state = "unhealthy"
                self.actions.append(Action(at, gwlb, fw, "state", state, "health check"))
            elif state == "unhealthy" and oks >= h:
                state = "healthy"
                self.actions.append(Action(at, gwlb, fw, "state", state, "health check"))

    def probe_times(self, gwlb: str, fw: str, lo_ns: int, hi_ns: int) -> tuple[np.ndarray, np.ndarray]:
        """Send times (int64 ns) of the probes to ``fw`` in ``[lo_ns, hi_ns)`` and whether each was answered."""
        ts, ans = [], []
        for seg in self.segments.get((gwlb, fw), []):
            t = seg.sends(lo_ns, hi_ns)
            ts.append(t)
            ans.append(np.full(t.shape[0], seg.answered))
        if not ts:
            return np.zeros(0, np.int64), np.zeros(0, bool)
        return np.concatenate(ts), np.concatenate(ans)

    # ------------------------------------------------------------------ probe packets
    def probe_packets(self, gwlbs: dict[str, GwlbConfig], lo_ns: int, hi_ns: int) -> PacketBatch:
        """Every probe packet (probes, answers, the GWLB's resets) timed in ``[lo_ns, hi_ns)``, in time order: calls
        over consecutive windows give each packet once, in order across the windows."""
        frames: list[tuple[int, bytes]] = []
        for g, fw in self.segments:
            cfg = gwlbs[g]
            hc = cfg.health_check
            src, dst = cfg.ip, cfg.firewalls[fw].ip
            timeout = round(hc.timeout * _NS)
            span = max(timeout, 2 * round(PROBE_RTT * _NS) + 2000)   # from a probe's SYN to its last packet
            ts, ans = self.probe_times(g, fw, lo_ns - span, hi_ns)
            # a few probes per interval and firewall: per-probe Python here is off the packet path
            for t, a in zip(ts.tolist(), ans.tolist()):
                sport = 32768 + (t // 1000 + dst) % 28232
                frames += probe_packets(src, dst, sport, hc, t, a, timeout)
        frames = sorted((f for f in frames if lo_ns <= f[0] < hi_ns), key=lambda f: f[0])
        return _batch(frames)


# ---------------------------------------------------------------------------------------------------- packets
def probe_packets(src: int, dst: int, sport: int, hc: HealthCheck, t_ns: int, answered: bool,
                  timeout_ns: int) -> list[tuple[int, bytes]]:
    """The frames of one probe as ``(timestamp ns, Ethernet frame)`` pairs (see the module docstring)."""
    rtt = round(PROBE_RTT * _NS)
    isn_c, isn_s = (sport * 2654435761) & 0xFFFFFFFF, (dst * 40503 + sport) & 0xFFFFFFFF
    port = hc.port
    syn = _tcp(src, dst, sport, port, isn_c, 0, 0x02, b"", mss=1460)
    if not answered:
        return [(t_ns, syn), (t_ns + timeout_ns, _tcp(src, dst, sport, port, isn_c + 1, 0, 0x04, b""))]
    out = [(t_ns, syn), (t_ns + rtt, _tcp(dst, src, port, sport, isn_s, isn_c + 1, 0x12, b"", mss=1460))]
    if hc.protocol == "tcp":
        out.append((t_ns + rtt + 1000, _tcp(src, dst, sport, port, isn_c + 1, isn_s + 1, 0x14, b"")))
        return out
    host = ".".join(str((dst >> s) & 0xFF) for s in (24, 16, 8, 0))
    get = f"GET {hc.path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: gwlb-health-check\r\nConnection: close\r\n\r\n"
    body = b"OK"
    resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n" + body
    g = get.encode()
    out.append((t_ns + rtt + 1000, _tcp(src, dst, sport, port, isn_c + 1, isn_s + 1, 0x18, g)))
    out.append((t_ns + 2 * rtt + 1000, _tcp(dst, src, port, sport, isn_s + 1, isn_c + 1 + len(g), 0x18, resp)))
    out.append((t_ns + 2 * rtt + 2000, _tcp(src, dst, sport, port, isn_c + 1 + len(g), isn_s + 1 + len(resp), 0x14,
                                            b"")))
    return out


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    s = int(np.frombuffer(data, ">u2").astype(np.uint64).sum())
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _tcp(src: int, dst: int, sport: int, dport: int, seq: int, ack: int, flags: int, payload: bytes,
         mss: int | None = None) -> bytes:
    """An Ethernet + IPv4 + TCP frame with valid checksums (RFC 791, RFC 9293)."""
    opts = struct.pack("!BBH", 2, 4, mss) if mss else b""
    off = (20 + len(opts)) // 4
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, off << 4, flags, 65535, 0,
                      0) + opts + payload
    pseudo = struct.pack("!IIBBH", src, dst, 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", _csum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBHII", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", _csum(ip)) + ip[12:]
    eth = (0x020000000000 | dst).to_bytes(6, "big") + (0x020000000000 | src).to_bytes(6, "big") + b"\x08\x00"
    return eth + ip + tcp


def _batch(frames: list[tuple[int, bytes]]) -> PacketBatch:
    n = len(frames)
    data = np.frombuffer(b"".join(f for _, f in frames), np.uint8).copy() if n else np.zeros(0, np.uint8)
    caplen = np.array([len(f) for _, f in frames], np.uint32)
    off = np.zeros(n, np.int64)
    if n:
        np.cumsum(caplen[:-1], dtype=np.int64, out=off[1:])
    ts = np.array([t for t, _ in frames], np.int64)
    return PacketBatch(data, off, caplen, ts_ns=ts, linktype=LINKTYPE_ETHERNET)
