"""Plain-Python reference of the stream kernel's semantics (one session direction at a time).

Segments are (seq, flags, payload). The first SYN sets byte 0 at seq + 1; without a SYN, the first segment with
payload is byte 0. Byte b of the stream is the first copy received (first copy wins); bytes are delivered to
inspection in stream order, each once. Out-of-order bytes are held only inside the head (the first ``head`` bytes)
and in at most ``max_held`` separate ranges; past the head, a segment after a hole skips the hole.
"""


def _s32(x):
    x &= 0xFFFFFFFF
    return x - (1 << 32) if x >= 1 << 31 else x


class StreamOracle:
    def __init__(self, head=4096, max_held=4):
        self.head_size = head
        self.max_held = max_held
        self.isn = None
        self.nxt = 0
        self.head = bytearray(head)
        self.held = []          # list of [lo, hi)
        self.delivered = []     # (lo, bytes) per delivery
        self.retrans = 0
        self.gap = 0

    def feed(self, seq, flags, payload):
        """Returns the (lo, hi) made available by this segment (lo == hi: none)."""
        if flags & 0x02:
            if self.isn is None or self.nxt == 0:
                self.isn = (seq + 1) & 0xFFFFFFFF
            seq = (seq + 1) & 0xFFFFFFFF
        if not payload or flags & 0x04:
            return (0, 0)
        if self.isn is None:
            self.isn = seq
        lo_seg = _s32(seq - self.isn)
        hi_seg = lo_seg + len(payload)
        h = self.head_size
        if hi_seg <= self.nxt:
            self.retrans += len(payload)
            return (0, 0)
        if lo_seg > self.nxt:
            if lo_seg < h:
                hi = min(hi_seg, h)
                for b in range(lo_seg, hi):
                    if not any(a <= b < z for a, z in self.held):
                        self.head[b] = payload[b - lo_seg]
                self._hold(lo_seg, hi)
                return (0, 0)
            self.gap += lo_seg - self.nxt
            self.nxt = lo_seg
        lo = max(lo_seg, self.nxt)
        self.retrans += lo - lo_seg
        for b in range(lo, min(hi_seg, h)):
            if not any(a <= b < z for a, z in self.held):
                self.head[b] = payload[b - lo_seg]
        hi = hi_seg
        if hi <= h:
            moved = True
            while moved:
                moved = False
                for r in list(self.held):
                    if r[0] <= hi:
                        if r[1] > hi:
                            hi = r[1]
                            moved = True
                        self.held.remove(r)
        data = bytes(self.head[b] if b < h else payload[b - lo_seg] for b in range(lo, hi))
        self.delivered.append((lo, data))
        self.nxt = hi
        return (lo, hi)

    def _hold(self, lo, hi):
        merged = [r for r in self.held if lo <= r[1] and r[0] <= hi]
        if not merged and len(self.held) >= self.max_held:
            return
        for r in merged:
            lo, hi = min(lo, r[0]), max(hi, r[1])
            self.held.remove(r)
        self.held.append([lo, hi])
