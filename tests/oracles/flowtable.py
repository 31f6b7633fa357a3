"""Plain-Python reference of the flow table (gwlb_fast._kernels.flowtable): a dict of keys plus a slot pool.

It fixes the observable contract: which slot a key gets (slots come from a LIFO free stack, slot 0 first), the
per-slot statistics, idle expiry, the order of expired/ended records and every counter. What it cannot know is
the bucket layout, so it does not choose eviction victims itself: ``lookup_or_insert`` takes the victims the table
reported and checks that evicting each one was allowed (table full, victim idle-expired at the packet's time).
"""
from __future__ import annotations

from dataclasses import dataclass, field

Key = tuple[int, int, int, int, int, int]  # (a_ip, b_ip, a_port, b_port, proto, tag)

IS_EXISTING, IS_NEW, IS_RESTARTED = 0, 1, 2
END_RESTARTED, END_EVICTED = 1, 2
RECORD_FIELDS = ("a_ip", "b_ip", "a_port", "b_port", "proto", "state", "tag", "first_seen", "last_seen", "packets",
                 "bytes", "timeout")


def canonical(src_ip: int, dst_ip: int, sport: int, dport: int) -> tuple[int, int, int, int, int]:
    """(a_ip, b_ip, a_port, b_port, reversed): endpoint a is the smaller (ip, port) pair."""
    if (src_ip, sport) <= (dst_ip, dport):
        return src_ip, dst_ip, sport, dport, 0
    return dst_ip, src_ip, dport, sport, 1


@dataclass
class Rec:
    key: Key
    first_seen: int
    last_seen: int
    packets: int
    bytes: int
    state: int = 0
    timeout: int = -1

    def as_dict(self) -> dict[str, int]:
        a_ip, b_ip, a_port, b_port, proto, tag = self.key
        return {"a_ip": a_ip, "b_ip": b_ip, "a_port": a_port, "b_port": b_port, "proto": proto, "state": self.state,
                "tag": tag, "first_seen": self.first_seen, "last_seen": self.last_seen, "packets": self.packets,
                "bytes": self.bytes, "timeout": self.timeout}


@dataclass
class FlowTableOracle:
    capacity: int
    tcp_timeout: int = 350_000_000_000
    other_timeout: int = 120_000_000_000
    slot_of: dict[Key, int] = field(default_factory=dict)
    recs: dict[int, Rec] = field(default_factory=dict)
    free: list[int] = field(default_factory=list)
    cursor: int = 0
    ended: list[tuple[int, dict[str, int], int]] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.free = list(range(self.capacity - 1, -1, -1))
        self.counters = dict.fromkeys(
            ("inserted", "refused", "expired", "restarted", "deleted", "evicted", "drained"), 0)

    # -- helpers
    def expired(self, rec: Rec, now: int) -> bool:
        to = rec.timeout if rec.timeout >= 0 else (self.tcp_timeout if rec.key[4] == 6 else self.other_timeout)
        return now - rec.last_seen >= to

    def _remove(self, slot: int) -> Rec:
        rec = self.recs.pop(slot)
        del self.slot_of[rec.key]
        self.free.append(slot)
        return rec

    def stats(self) -> dict[str, int]:
        return {"live": len(self.recs), **self.counters}

    # -- operations
    def lookup_or_insert(self, keys: list[Key], ts: list[int], nbytes: list[int],
                         table_slots: list[int] | None = None, evict: bool = False,
                         insert: bool = True) -> tuple[list[int], list[int]]:
        """Returns (slots, is_new). ``table_slots``: the table's answer, used only to learn eviction victims.
        ``insert=False``: keys not in the table are left out (slot -1, IS_EXISTING, not refused)."""
        slots, is_new = [], []
        for i, (key, t, nb) in enumerate(zip(keys, ts, nbytes)):
            s = self.slot_of.get(key)
            if s is not None:
                rec = self.recs[s]
                if self.expired(rec, t):
                    self.ended.append((s, rec.as_dict(), END_RESTARTED))
                    self.counters["expired"] += 1
                    self.counters["restarted"] += 1
                    self.counters["inserted"] += 1
                    self.recs[s] = Rec(key, t, t, 1, nb)
                    is_new.append(IS_RESTARTED)
                else:
                    rec.last_seen = max(rec.last_seen, t)
                    rec.packets += 1
                    rec.bytes += nb
                    is_new.append(IS_EXISTING)
                slots.append(s)
                continue
            if not insert:
                slots.append(-1)
                is_new.append(IS_EXISTING)
                continue
            if not self.free:
                victim = table_slots[i] if (evict and table_slots is not None) else -1
                if victim < 0:
                    self.counters["refused"] += 1
                    slots.append(-1)
                    is_new.append(IS_EXISTING)
                    continue
                assert victim in self.recs, f"evicted slot {victim} is not live"
                assert self.expired(self.recs[victim], t), f"evicted slot {victim} is not idle-expired at {t}"
                self.ended.append((victim, self.recs[victim].as_dict(), END_EVICTED))
                self.counters["evicted"] += 1
                self._remove(victim)
            s = self.free.pop()
            self.slot_of[key] = s
            self.recs[s] = Rec(key, t, t, 1, nb)
            self.counters["inserted"] += 1
            slots.append(s)
            is_new.append(IS_NEW)
        return slots, is_new

    def lookup(self, keys: list[Key]) -> list[int]:
        return [self.slot_of.get(k, -1) for k in keys]

    def delete(self, slots: list[int]) -> int:
        done = 0
        for s in slots:
            if s >= 0 and s in self.recs:
                self._remove(s)
                done += 1
        self.counters["deleted"] += done
        return done

    def _expire_scan(self, now: int, start: int, count: int) -> list[tuple[int, dict[str, int]]]:
        out = []
        s = start
        for _ in range(min(count, self.capacity)):
            rec = self.recs.get(s)
            if rec is not None and self.expired(rec, now):
                out.append((s, rec.as_dict()))
                self._remove(s)
            s = (s + 1) % self.capacity
        self.counters["expired"] += len(out)
        return out

    def expire(self, now: int, max_scan: int) -> list[tuple[int, dict[str, int]]]:
        count = min(max_scan, self.capacity)
        out = self._expire_scan(now, self.cursor, count)
        self.cursor = (self.cursor + count) % self.capacity
        return out

    def expire_all(self, now: int) -> list[tuple[int, dict[str, int]]]:
        return self._expire_scan(now, 0, self.capacity)

    def drain(self) -> list[tuple[int, dict[str, int]]]:
        out = [(s, self.recs[s].as_dict()) for s in sorted(self.recs)]
        self.counters["drained"] += len(out)
        self.slot_of.clear()
        self.recs.clear()
        self.free = list(range(self.capacity - 1, -1, -1))
        self.cursor = 0
        return out

    def set_timeout(self, slots: list[int], values: list[int]) -> int:
        done = 0
        for s, v in zip(slots, values):
            if s in self.recs:
                self.recs[s].timeout = v
                done += 1
        return done

    def set_state(self, slots: list[int], values: list[int]) -> int:
        done = 0
        for s, v in zip(slots, values):
            if s in self.recs:
                self.recs[s].state = v
                done += 1
        return done

    def take_ended(self) -> list[tuple[int, dict[str, int], int]]:
        out, self.ended = self.ended, []
        return out
