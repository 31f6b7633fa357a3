"""Plain-Python reference of the GWLB stage semantics (DESIGN.md section 3), packet by packet.

Firewall choice uses the stage's own Maglev tables (tested separately) with the reference hash; flow cookies are
random in the stage, so the model records the cookie the stage gave a flow and checks that the flow keeps it and
that a restarted 5-tuple gets a different one.
"""
from dataclasses import dataclass

from . import flowhash as fh

OK, NO_HEALTHY_FW, FW_FAILED = 0, 36, 37
HEALTHY, UNHEALTHY, DRAINING = 0, 1, 2


@dataclass
class Flow:
    fw: int
    cookie: int | None
    last_seen: int
    lost: bool = False


class GwlbModel:
    def __init__(self, gwlb, tcp_timeout_ns, other_timeout_ns):
        self.g = gwlb  # only its Maglev, seed, stickiness, failover and health arrays are read
        self.tcp, self.other = tcp_timeout_ns, other_timeout_ns
        self.flows: dict[tuple, Flow] = {}
        self.prev_cookie: dict[tuple, int] = {}
        k = len(gwlb.names)
        self.flows_lost = 0
        self.flows_rebalanced = 0
        self.flows_per_fw = [0] * k
        self.packets_per_fw = [0] * k

    def _hash32(self, s, d, sp, dp, p):
        st, seed = self.g.stickiness, self.g.seed
        if st == "5-tuple":
            h = fh.hash_5tuple(s, d, sp, dp, p, seed)
        elif st == "3-tuple":
            h = fh.hash_3tuple(s, d, p, seed)
        else:
            h = fh.hash_2tuple(s, d, seed)
        return fh.to32(h)

    def _pick(self, h32):
        table = self.g.maglev.table(self.g.health == HEALTHY)
        return int(table[fh.maglev_slot(h32, table.shape[0])])

    def _serves(self, f, ts):
        state = int(self.g.health[f])
        return state == HEALTHY or (state == DRAINING and ts < int(self.g.drain_deadline[f]))

    def batch(self, packets, observed_cookie):
        """packets: list of (src, dst, sport, dport, proto, endpoint, ts, status). Returns [(status, fw)]; checks
        cookies against ``observed_cookie`` (the stage's output) as it goes."""
        out = []
        for i, (s, d, sp, dp, p, ep, ts, st) in enumerate(packets):
            if st != OK:
                out.append((st, -1))
                continue
            a, b = (s, sp), (d, dp)
            key = (min(a, b), max(a, b), p, ep)
            h32 = self._hash32(s, d, sp, dp, p)
            fl = self.flows.get(key)
            timeout = self.tcp if p == 6 else self.other
            if fl is not None and ts - fl.last_seen >= timeout:
                self.prev_cookie[key] = fl.cookie
                fl = None
            if fl is None:
                fw = self._pick(h32)
                fl = self.flows[key] = Flow(fw, None, ts)
                if fw >= 0:
                    self.flows_per_fw[fw] += 1
                ck = int(observed_cookie[i])
                assert ck != 0 and ck != self.prev_cookie.get(key), "new flow must get a fresh cookie"
                fl.cookie = ck
            else:
                fl.last_seen = max(fl.last_seen, ts)
                assert int(observed_cookie[i]) == fl.cookie, "a flow keeps its cookie"
            status = OK
            if fl.fw >= 0 and not self._serves(fl.fw, ts):
                if self.g.failover == "keep":
                    status = FW_FAILED
                    if not fl.lost:
                        fl.lost = True
                        self.flows_lost += 1
                else:
                    fl.fw = self._pick(h32)
                    if fl.fw >= 0:
                        self.flows_rebalanced += 1
                        self.flows_per_fw[fl.fw] += 1
            if status == OK and fl.fw < 0:
                status = NO_HEALTHY_FW
            fw = fl.fw if status == OK else -1
            if fw >= 0:
                self.packets_per_fw[fw] += 1
            out.append((status, fw))
        for key in [k for k, f in self.flows.items() if f.fw < 0]:
            self.prev_cookie[key] = self.flows[key].cookie
            del self.flows[key]
        return out
