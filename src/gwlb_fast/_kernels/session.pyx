# Firewall session state, batched: one nogil pass over the packets in batch order.
#
# The firewall keeps its sessions in a FlowTable (keyed by the canonical 5-tuple and the endpoint id) and, beside it,
# one row of NF int64 per table slot (``sess[slot, F_*]``): state, client direction, rule, action, packets and bytes
# each way, start and last packet time, FIN bits, close reason, the client/server 5-tuple, endpoint and zone.
# ``session_update`` applies every packet to its slot in order (so a SYN, its reply and a FIN of the same batch see
# each other), decides its status and what goes back to the GWLB, and copies out the rows of sessions that end when
# their slot restarts (idle timeout) or is reused after an eviction.
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t

import numpy as np

from gwlb_fast._kernels._status cimport (
    ST_OK, ST_POLICY_DENY, ST_POLICY_RESET, ST_SESSION_CLOSED, ST_TCP_NOT_SYN, ST_UNKNOWN_ENDPOINT,
)

# per-slot columns of the session matrix
F_STATE = 0
F_CLIENT_REV = 1
F_RULE = 2
F_ACTION = 3
F_PKTS_C2S = 4
F_PKTS_S2C = 5
F_BYTES_C2S = 6
F_BYTES_S2C = 7
F_START = 8
F_LAST = 9
F_FINS = 10
F_REASON = 11
F_CLIENT_IP = 12
F_SERVER_IP = 13
F_CLIENT_PORT = 14
F_SERVER_PORT = 15
F_PROTO = 16
F_ENDPOINT = 17
F_ZONE = 18
NF = 19

# session states
S_EMPTY = 0
S_OPEN = 1
S_FIN_CLOSED = 2
S_RST_CLOSED = 3
S_DENIED = 4
S_RESETTING = 5

# kernel action codes
ACT_ALLOW = 0
ACT_DENY = 1
ACT_DROP = 2
ACT_RESET_CLIENT = 3
ACT_RESET_SERVER = 4
ACT_RESET_BOTH = 5

# end reasons (0 = still open)
END_AGED_OUT = 1
END_TCP_FIN = 2
END_TCP_RST_FROM_CLIENT = 3
END_TCP_RST_FROM_SERVER = 4
END_POLICY_DENY = 5
END_EVICTED = 6
END_OF_RUN = 7
END_FW_FAILED = 8  # set by the firewall stage: the GWLB found the firewall failed (failover: keep)
END_MOVED = 9      # set by the firewall stage: the GWLB moved the flow to another firewall (failover: rebalance)
END_BLOCK_IP = 10  # set by content inspection: a threat profile's block-ip blocked the session's source

# pickup counters (``picked_up``)
PICKUP_NON_SYN = 0   # sessions started by a TCP packet that is not a SYN
PICKUP_REVERSED = 1  # sessions whose first packet travels from the server (``flip``)

# output kinds (same values as tcpreset.KIND_*)
OUT_ECHO = 0
OUT_RST_TO_SENDER = 1
OUT_RST_TO_RECEIVER = 2

cdef enum:
    _F_STATE = 0
    _F_CLIENT_REV = 1
    _F_RULE = 2
    _F_ACTION = 3
    _F_PKTS_C2S = 4
    _F_PKTS_S2C = 5
    _F_BYTES_C2S = 6
    _F_BYTES_S2C = 7
    _F_START = 8
    _F_LAST = 9
    _F_FINS = 10
    _F_REASON = 11
    _F_CLIENT_IP = 12
    _F_SERVER_IP = 13
    _F_CLIENT_PORT = 14
    _F_SERVER_PORT = 15
    _F_PROTO = 16
    _F_ENDPOINT = 17
    _F_ZONE = 18
    _NF = 19
    _S_EMPTY = 0
    _S_OPEN = 1
    _S_FIN_CLOSED = 2
    _S_RST_CLOSED = 3
    _S_DENIED = 4
    _S_RESETTING = 5
    _A_ALLOW = 0
    _A_DENY = 1
    _A_DROP = 2
    _A_RESET_CLIENT = 3
    _A_RESET_SERVER = 4
    _A_RESET_BOTH = 5
    _E_AGED_OUT = 1
    _E_TCP_FIN = 2
    _E_RST_CLIENT = 3
    _E_RST_SERVER = 4
    _E_POLICY_DENY = 5
    _E_EVICTED = 6
    _IS_RESTARTED = 2
    _FIN = 0x01
    _SYN = 0x02
    _RST = 0x04
    _ACK = 0x10
    _TO_SENDER = 1
    _TO_RECEIVER = 2


def session_update(const int64_t[::1] slot, const uint8_t[::1] is_new, const uint8_t[::1] rev,
                   const uint8_t[::1] proto, const uint8_t[::1] tcp_flags, const int64_t[::1] ts_ns,
                   const uint32_t[::1] nbytes, const uint32_t[::1] src_ip, const uint32_t[::1] dst_ip,
                   const uint16_t[::1] sport, const uint16_t[::1] dport, const uint64_t[::1] endpoint,
                   const uint8_t[::1] zone, const int32_t[::1] rule, const uint8_t[::1] action,
                   int64_t[:, ::1] sess, uint8_t[::1] status, int32_t[::1] out_rule, uint8_t[::1] out_n,
                   uint8_t[::1] out_kind1, uint8_t[::1] out_kind2, int64_t[::1] hits, int64_t[:, ::1] ended,
                   int64_t[::1] ended_slot, int64_t close_timeout_ns, int64_t deny_timeout_ns,
                   Py_ssize_t start=0, Py_ssize_t n_ended=0, const uint8_t[::1] flip=None,
                   bint accept_non_syn=False, int64_t[::1] picked_up=None):
    """Apply the packets ``start, start+1, ...`` to their sessions in batch order.

    Parameters
    ----------
    slot : int64[n]
        FlowTable slot of each packet (``lookup_or_insert``); rows with a negative slot are skipped.
    is_new : uint8[n]
        ``out_is_new`` of ``lookup_or_insert``: 0 existing, 1 new, 2 restarted after the idle timeout.
    rev : uint8[n]
        ``canonical_5tuple``'s ``out_reversed``: which way the packet travels in its canonical key.
    proto, tcp_flags : uint8[n]
    ts_ns : int64[n]
    nbytes : uint32[n]
        Bytes accounted to the session (the inner packet's length).
    src_ip, dst_ip : uint32[n]; sport, dport : uint16[n]; endpoint : uint64[n]; zone : uint8[n]
        Inner 5-tuple, GWLB endpoint id and zone index, stored when a packet starts a session.
    rule : int32[n]
        Rule index for packets that may start a session (index into ``hits``; the last entry is the default
        action), -1 for rows not classified. When a row that is not classified would start a session (its slot's
        closed or denied session timed out within the batch), the pass stops there: classify it and call again
        with ``start`` = that row.
    action : uint8[n]
        Action code (``ACT_*``) of ``rule`` for the same rows.
    sess : int64[capacity, NF]
        Per-slot session rows, updated in place (``F_*`` columns; ``F_STATE`` 0 = no session).
    status : uint8[n]
        In/out: rows not ``ST_OK`` on entry are skipped; on exit ``ST_OK`` (forward), ``ST_TCP_NOT_SYN``,
        ``ST_POLICY_DENY``, ``ST_POLICY_RESET`` or ``ST_SESSION_CLOSED``.
    out_rule : int32[n]
        Output: rule of the packet's session, -1 for packets without one.
    out_n, out_kind1, out_kind2 : uint8[n]
        Output: number of frames the packet returns to the GWLB (0, 1 or 2) and their kinds (``OUT_ECHO``,
        ``OUT_RST_TO_SENDER``, ``OUT_RST_TO_RECEIVER``); for reset-both the RST to the client comes first.
    hits : int64[n_rules + 1]
        In/out: sessions started per rule (last entry: default action).
    ended : int64[m, NF]
        Output (``m >= n_ended + n - start``, e.g. ``n + 1``): copies of the session rows that ended in this call
        (slot restarted or reused), with ``F_REASON`` set to the end reason (``END_*``).
    ended_slot : int64[m]
        Output: their slots.
    close_timeout_ns, deny_timeout_ns : int
        Idle time after which a closed (FIN both ways, RST) or a denied/reset session ends, checked against the
        session's last packet within the batch (the flow table applies them between batches).
    start : int
        First row to process (rows before it are left as they are).
    n_ended : int
        Rows of ``ended`` already filled by earlier calls for this batch.
    flip : uint8[n], optional
        1 where a packet that starts a session travels from the server to the client (a flow picked up mid-stream
        in its reply direction): the session's client is then the packet's destination. None: all 0.
    accept_non_syn : bool
        A TCP session may start with a packet that is not a SYN (VM-Series ``tcp_reject_non_syn: false``, or a
        flow picked up mid-stream); by default such a packet is ``ST_TCP_NOT_SYN``.
    picked_up : int64[2], optional
        In/out: sessions started by a non-SYN TCP packet (``PICKUP_NON_SYN``) and by a packet with ``flip``
        (``PICKUP_REVERSED``).

    Returns
    -------
    (int, int)
        Rows filled in ``ended`` / ``ended_slot`` (including ``n_ended``), and the row where the pass stopped for
        classification (``n`` when it went through).

    Notes
    -----
    A TCP session starts only with a SYN without ACK or RST (else ``ST_TCP_NOT_SYN``, the slot stays empty).
    Allowed sessions forward every packet until an RST (forwarded; later packets ``ST_SESSION_CLOSED``); a FIN from
    each side closes the session with reason tcp-fin (later packets, such as the last ACK, still pass). Denied and
    reset sessions drop every packet (``ST_POLICY_DENY`` / ``ST_POLICY_RESET``); a reset session answers every TCP
    packet that is not itself an RST with the RST(s) its action asks for; for other protocols a reset action drops.
    """
    cdef Py_ssize_t n = slot.shape[0], cap = sess.shape[0], nh = hits.shape[0]
    cdef Py_ssize_t i, f, ne = n_ended, stop = n
    cdef int64_t s, st, r, a
    cdef uint8_t fl, pr, from_client, to_client_kind, to_server_kind, fp
    cdef bint has_flip = flip is not None, count_pickup = picked_up is not None
    if has_flip and flip.shape[0] != n:
        raise ValueError(f"flip: expected length {n}, got {flip.shape[0]}")
    if count_pickup and picked_up.shape[0] != 2:
        raise ValueError(f"picked_up: expected int64[2], got length {picked_up.shape[0]}")
    cdef int64_t* row
    cdef int64_t* erow
    for name, ln in (("is_new", is_new.shape[0]), ("rev", rev.shape[0]), ("proto", proto.shape[0]),
                     ("tcp_flags", tcp_flags.shape[0]), ("ts_ns", ts_ns.shape[0]), ("nbytes", nbytes.shape[0]),
                     ("src_ip", src_ip.shape[0]), ("dst_ip", dst_ip.shape[0]), ("sport", sport.shape[0]),
                     ("dport", dport.shape[0]), ("endpoint", endpoint.shape[0]), ("zone", zone.shape[0]),
                     ("rule", rule.shape[0]), ("action", action.shape[0]), ("status", status.shape[0]),
                     ("out_rule", out_rule.shape[0]), ("out_n", out_n.shape[0]), ("out_kind1", out_kind1.shape[0]),
                     ("out_kind2", out_kind2.shape[0])):
        if ln != n:
            raise ValueError(f"{name}: expected length {n}, got {ln}")
    if sess.shape[1] != _NF:
        raise ValueError(f"sess: expected {_NF} columns, got {sess.shape[1]}")
    if ended.shape[1] != _NF:
        raise ValueError(f"ended: expected {_NF} columns, got {ended.shape[1]}")
    if nh < 1:
        raise ValueError("hits: needs at least one entry (the default action)")
    for i in range(n):
        if slot[i] >= cap:
            raise ValueError(f"slot: {slot[i]} at row {i} is outside the session rows [0, {cap})")
    if start < 0 or start > n:
        raise ValueError(f"start: {start} is outside [0, {n}]")
    if n_ended < 0 or n_ended > n:
        raise ValueError(f"n_ended: {n_ended} is outside [0, {n}]")
    # each row ends at most one session, and a resumed row none again: n_ended + (n - start) rows are enough
    if ended.shape[0] < n_ended + (n - start) or ended_slot.shape[0] != ended.shape[0]:
        raise ValueError(f"ended, ended_slot: need the same length >= n_ended + n - start = {n_ended + n - start}, "
                         f"got {ended.shape[0]} and {ended_slot.shape[0]}")
    with nogil:
        for i in range(start, n):
            out_rule[i] = -1
            out_n[i] = 0
            out_kind1[i] = 0
            out_kind2[i] = 0
            s = slot[i]
            if status[i] != ST_OK or s < 0:
                continue
            row = &sess[s, 0]
            pr = proto[i]
            fl = tcp_flags[i] if pr == 6 else 0
            if is_new[i] != 0 and row[_F_STATE] != _S_EMPTY:
                # the slot's previous session ended: idle timeout (restart) or eviction (slot reused)
                erow = &ended[ne, 0]
                for f in range(_NF):
                    erow[f] = row[f]
                if erow[_F_REASON] == 0:
                    erow[_F_REASON] = _E_AGED_OUT if is_new[i] == _IS_RESTARTED else _E_EVICTED
                ended_slot[ne] = s
                ne += 1
                row[_F_STATE] = _S_EMPTY
            elif is_new[i] == 0:
                # a closed or denied session idle for its short timeout ends here (not only between batches)
                st = row[_F_STATE]
                if (((st == _S_FIN_CLOSED or st == _S_RST_CLOSED) and ts_ns[i] - row[_F_LAST] >= close_timeout_ns)
                        or ((st == _S_DENIED or st == _S_RESETTING)
                            and ts_ns[i] - row[_F_LAST] >= deny_timeout_ns)):
                    erow = &ended[ne, 0]
                    for f in range(_NF):
                        erow[f] = row[f]
                    ended_slot[ne] = s
                    ne += 1
                    row[_F_STATE] = _S_EMPTY
            if row[_F_STATE] == _S_EMPTY:
                if pr == 6 and (fl & (_SYN | _ACK | _RST)) != _SYN and not accept_non_syn:
                    status[i] = ST_TCP_NOT_SYN
                    continue
                r = rule[i]
                if r < 0:
                    stop = i
                    break
                a = action[i]
                fp = flip[i] if has_flip else 0
                if count_pickup:
                    if pr == 6 and (fl & (_SYN | _ACK | _RST)) != _SYN:
                        picked_up[0] += 1
                    if fp:
                        picked_up[1] += 1
                row[_F_RULE] = r
                row[_F_ACTION] = a
                row[_F_PKTS_C2S] = 0
                row[_F_PKTS_S2C] = 0
                row[_F_BYTES_C2S] = 0
                row[_F_BYTES_S2C] = 0
                row[_F_START] = ts_ns[i]
                row[_F_LAST] = ts_ns[i]
                row[_F_FINS] = 0
                row[_F_REASON] = 0
                if fp:
                    row[_F_CLIENT_REV] = 1 - rev[i]
                    row[_F_CLIENT_IP] = dst_ip[i]
                    row[_F_SERVER_IP] = src_ip[i]
                    row[_F_CLIENT_PORT] = dport[i]
                    row[_F_SERVER_PORT] = sport[i]
                else:
                    row[_F_CLIENT_REV] = rev[i]
                    row[_F_CLIENT_IP] = src_ip[i]
                    row[_F_SERVER_IP] = dst_ip[i]
                    row[_F_CLIENT_PORT] = sport[i]
                    row[_F_SERVER_PORT] = dport[i]
                row[_F_PROTO] = pr
                row[_F_ENDPOINT] = <int64_t>endpoint[i]
                row[_F_ZONE] = zone[i]
                if r >= nh:
                    row[_F_RULE] = -1
                    row[_F_ACTION] = _A_DENY
                    row[_F_STATE] = _S_DENIED
                    row[_F_REASON] = _E_POLICY_DENY
                else:
                    hits[r] += 1
                    if a == _A_ALLOW:
                        row[_F_STATE] = _S_OPEN
                    else:
                        row[_F_REASON] = _E_POLICY_DENY
                        if pr == 6 and (a == _A_RESET_CLIENT or a == _A_RESET_SERVER or a == _A_RESET_BOTH):
                            row[_F_STATE] = _S_RESETTING
                        else:
                            row[_F_STATE] = _S_DENIED
            # account the packet to its session
            from_client = rev[i] == row[_F_CLIENT_REV]
            if from_client:
                row[_F_PKTS_C2S] += 1
                row[_F_BYTES_C2S] += nbytes[i]
            else:
                row[_F_PKTS_S2C] += 1
                row[_F_BYTES_S2C] += nbytes[i]
            if ts_ns[i] > row[_F_LAST]:
                row[_F_LAST] = ts_ns[i]
            out_rule[i] = <int32_t>row[_F_RULE]
            st = row[_F_STATE]
            if st == _S_OPEN or st == _S_FIN_CLOSED:
                out_n[i] = 1
                out_kind1[i] = 0
                if fl & _RST:
                    row[_F_STATE] = _S_RST_CLOSED
                    row[_F_REASON] = _E_RST_CLIENT if from_client else _E_RST_SERVER
                elif fl & _FIN:
                    row[_F_FINS] |= 1 if from_client else 2
                    if row[_F_FINS] == 3 and st == _S_OPEN:
                        row[_F_STATE] = _S_FIN_CLOSED
                        row[_F_REASON] = _E_TCP_FIN
            elif st == _S_RST_CLOSED:
                status[i] = ST_SESSION_CLOSED
            elif st == _S_DENIED:
                status[i] = ST_POLICY_DENY
            else:
                status[i] = ST_POLICY_RESET
                if fl & _RST:
                    continue
                # RST toward the client: answer the sender if the sender is the client, else impersonate the sender
                to_client_kind = _TO_SENDER if from_client else _TO_RECEIVER
                to_server_kind = _TO_RECEIVER if from_client else _TO_SENDER
                a = row[_F_ACTION]
                if a == _A_RESET_CLIENT:
                    out_n[i] = 1
                    out_kind1[i] = to_client_kind
                elif a == _A_RESET_SERVER:
                    out_n[i] = 1
                    out_kind1[i] = to_server_kind
                else:
                    out_n[i] = 2
                    out_kind1[i] = to_client_kind
                    out_kind2[i] = to_server_kind
    return ne, stop



def session_add(const int64_t[::1] slot, const int64_t[::1] start_ns, const uint8_t[::1] rev,
                const uint32_t[::1] nbytes, int64_t[:, ::1] sess, ts_ns=None):
    """Count packets that follow another packet's session without walking the session machine (the later
    fragments of a datagram, which have no ports): row ``i`` adds 1 packet and ``nbytes[i]`` bytes to session
    ``slot[i]`` in the direction ``rev[i]`` (the canonical direction of the packet it follows: client to server
    when equal to the session's ``F_CLIENT_REV``), if that slot still holds the session that started at
    ``start_ns[i]`` (a slot reused by another session since, an empty one, or ``slot[i] < 0``: not counted).
    With ``ts_ns`` (const int64[n], the packets' times) a counted row also moves the session's ``F_LAST`` to
    ``ts_ns[i]`` if later (never back), as a packet applied by ``session_update`` does; whether the session is
    still alive at that time is the caller's to decide (the firewall asks its flow table: ``add_counts``).
    Nothing else changes (state, start). Returns the number of rows counted."""
    cdef Py_ssize_t n = slot.shape[0], cap = sess.shape[0], i
    cdef int64_t s, done = 0
    cdef int64_t* row
    cdef bint timed = ts_ns is not None
    cdef const int64_t[::1] vt = ts_ns if timed else np.zeros(1, np.int64)
    for name, ln in (("start_ns", start_ns.shape[0]), ("rev", rev.shape[0]), ("nbytes", nbytes.shape[0]),
                     ("ts_ns", vt.shape[0] if timed else n)):
        if ln != n:
            raise ValueError(f"session_add: {name} has length {ln}, expected {n}")
    if sess.shape[1] != _NF:
        raise ValueError(f"session_add: sess: expected {_NF} columns, got {sess.shape[1]}")
    with nogil:
        for i in range(n):
            s = slot[i]
            if s < 0 or s >= cap:
                continue
            row = &sess[s, 0]
            if row[_F_STATE] == _S_EMPTY or row[_F_START] != start_ns[i]:
                continue
            if rev[i] == row[_F_CLIENT_REV]:
                row[_F_PKTS_C2S] += 1
                row[_F_BYTES_C2S] += nbytes[i]
            else:
                row[_F_PKTS_S2C] += 1
                row[_F_BYTES_S2C] += nbytes[i]
            if timed and vt[i] > row[_F_LAST]:
                row[_F_LAST] = vt[i]
            done += 1
    return done


def admit(const uint64_t[::1] endpoint, const uint64_t[::1] ep_ids, const uint8_t[::1] ep_zone,
          uint8_t unknown_zone, const uint32_t[::1] src_ip, const uint32_t[::1] dst_ip,
          const uint16_t[::1] sport, const uint16_t[::1] dport, uint8_t[::1] status, uint8_t[::1] zone,
          uint32_t[::1] a_ip, uint32_t[::1] b_ip, uint16_t[::1] a_port, uint16_t[::1] b_port, uint8_t[::1] rev):
    """The firewall's first pass over a batch, before the session lookup, in one loop: each packet's zone (that of
    its GWLB endpoint id in ``ep_ids``, sorted ascending and without repeats, with the zones ``ep_zone``; else
    ``unknown_zone``), status ``ST_UNKNOWN_ENDPOINT`` for the packets still ``ST_OK`` whose endpoint is not in
    ``ep_ids``, and the canonical 5-tuple key (``flowtable.canonical_5tuple``: endpoint a is the smaller of (src_ip,
    sport) and (dst_ip, dport), ``rev`` 1 when the packet's source is endpoint b), written for every row.
    ``status`` is in/out, ``zone``, ``a_ip``, ``b_ip``, ``a_port``, ``b_port`` and ``rev`` are outputs, all of the
    batch's length. Returns the number of rows ``ST_OK`` on exit."""
    cdef Py_ssize_t n = endpoint.shape[0], m = ep_ids.shape[0], i, lo, hi, mid
    cdef Py_ssize_t n_ok = 0
    cdef uint64_t e, one = 0
    cdef uint32_t si, di
    cdef uint16_t spi, dpi
    cdef uint8_t z
    for name, ln in (("src_ip", src_ip.shape[0]), ("dst_ip", dst_ip.shape[0]), ("sport", sport.shape[0]),
                     ("dport", dport.shape[0]), ("status", status.shape[0]), ("zone", zone.shape[0]),
                     ("a_ip", a_ip.shape[0]), ("b_ip", b_ip.shape[0]), ("a_port", a_port.shape[0]),
                     ("b_port", b_port.shape[0]), ("rev", rev.shape[0])):
        if ln != n:
            raise ValueError(f"admit: {name}: expected length {n}, got {ln}")
    if ep_zone.shape[0] != m:
        raise ValueError(f"admit: ep_zone: expected length {m} (one per endpoint id), got {ep_zone.shape[0]}")
    if m:
        one = ep_ids[0]
    cdef uint8_t zone_one = ep_zone[0] if m else unknown_zone
    cdef uint8_t c
    cdef bint sw
    with nogil:
        if m == 1:  # the common deployment: a compare instead of a search
            for i in range(n):
                c = status[i]
                if endpoint[i] == one:
                    zone[i] = zone_one
                else:
                    zone[i] = unknown_zone
                    if c == ST_OK:
                        c = ST_UNKNOWN_ENDPOINT
                        status[i] = c
                n_ok += c == ST_OK
        else:
            for i in range(n):
                e = endpoint[i]
                z = unknown_zone
                lo = 0
                hi = m
                while lo < hi:  # first id >= e
                    mid = (lo + hi) >> 1
                    if ep_ids[mid] < e:
                        lo = mid + 1
                    else:
                        hi = mid
                c = status[i]
                if lo < m and ep_ids[lo] == e:
                    z = ep_zone[lo]
                elif c == ST_OK:
                    c = ST_UNKNOWN_ENDPOINT
                    status[i] = c
                zone[i] = z
                n_ok += c == ST_OK
        for i in range(n):  # the canonical key, branch-free
            si = src_ip[i]
            di = dst_ip[i]
            spi = sport[i]
            dpi = dport[i]
            sw = si > di or (si == di and spi > dpi)
            a_ip[i] = di if sw else si
            b_ip[i] = si if sw else di
            a_port[i] = dpi if sw else spi
            b_port[i] = spi if sw else dpi
            rev[i] = sw
    return n_ok


def settle(const int64_t[::1] slot, const int64_t[:, ::1] sess, const uint8_t[::1] status,
           const uint8_t[::1] out_n, const uint8_t[::1] out_kind1, const uint8_t[::1] out_kind2,
           bint reopened, int64_t[::1] counts):
    """The firewall's last pass over a batch, after :func:`session_update` (and content inspection), in one loop.

    Sorts the rows with ``slot >= 0`` by the state of their session (``sess[slot, F_STATE]``): closed (FIN or
    RST) sessions, to get the close timeout in the flow table; denied or resetting ones, to get the deny timeout;
    with ``reopened`` (a session ended in the batch, so a slot may hold a new one) open ones, to get the protocol
    default back; and slots without a session, to be freed. Also adds each row's status to ``counts`` (int64[k];
    a status >= k is not counted) and counts the rows whose returns include a TCP reset (``out_n`` >= 1 with
    ``out_kind1`` not ``OUT_ECHO``, or >= 2 with ``out_kind2`` not ``OUT_ECHO``).

    Returns ``(closed, denied, opened, empty, n_reset)``: four int64 arrays of slots in row order (a slot once per
    row that has it; ``opened`` empty without ``reopened``) and the number of rows with a reset."""
    cdef Py_ssize_t n = slot.shape[0], rows = sess.shape[0], nc = counts.shape[0], i
    cdef Py_ssize_t kc = 0, kd = 0, ko = 0, ke = 0, n_reset = 0
    cdef int64_t s, st
    cdef bint bad = False
    cdef uint8_t c
    for name, ln in (("status", status.shape[0]), ("out_n", out_n.shape[0]), ("out_kind1", out_kind1.shape[0]),
                     ("out_kind2", out_kind2.shape[0])):
        if ln != n:
            raise ValueError(f"settle: {name}: expected length {n}, got {ln}")
    if n and sess.shape[1] <= _F_STATE:
        raise ValueError("settle: sess has no state column")
    with nogil:
        for i in range(n):  # bounds first: the loop below reads without checks
            if slot[i] >= rows:
                bad = True
                break
    if bad:
        raise ValueError(f"settle: slot {slot[i]} of row {i} is outside the {rows} session rows")
    closed = np.empty(n, np.int64)
    denied = np.empty(n, np.int64)
    opened = np.empty(n if reopened else 0, np.int64)
    empty = np.empty(n, np.int64)
    cdef int64_t[::1] oc = closed, od = denied, oo = opened, oe = empty
    with nogil:
        for i in range(n):
            c = status[i]
            if c < nc:
                counts[c] += 1
            if out_n[i] >= 1 and (out_kind1[i] != 0 or (out_n[i] >= 2 and out_kind2[i] != 0)):
                n_reset += 1
            s = slot[i]
            if s < 0:
                continue
            st = sess[s, _F_STATE]
            if st == _S_OPEN:
                if reopened:
                    oo[ko] = s
                    ko += 1
            elif st == _S_FIN_CLOSED or st == _S_RST_CLOSED:
                oc[kc] = s
                kc += 1
            elif st == _S_DENIED or st == _S_RESETTING:
                od[kd] = s
                kd += 1
            elif st == _S_EMPTY:
                oe[ke] = s
                ke += 1
    return closed[:kc], denied[:kd], opened[:ko], empty[:ke], n_reset
