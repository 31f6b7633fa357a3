"""Firewall session state machine: one nogil pass over a batch, in packet order, over per-slot session rows."""
import numpy as np

# columns of the per-slot session matrix sess[capacity, NF] (int64)
F_STATE: int
F_CLIENT_REV: int
F_RULE: int
F_ACTION: int
F_PKTS_C2S: int
F_PKTS_S2C: int
F_BYTES_C2S: int
F_BYTES_S2C: int
F_START: int
F_LAST: int
F_FINS: int
F_REASON: int
F_CLIENT_IP: int
F_SERVER_IP: int
F_CLIENT_PORT: int
F_SERVER_PORT: int
F_PROTO: int
F_ENDPOINT: int
F_ZONE: int
NF: int

# session states (sess[:, F_STATE])
S_EMPTY: int
S_OPEN: int
S_FIN_CLOSED: int
S_RST_CLOSED: int
S_DENIED: int
S_RESETTING: int

# action codes
ACT_ALLOW: int
ACT_DENY: int
ACT_DROP: int
ACT_RESET_CLIENT: int
ACT_RESET_SERVER: int
ACT_RESET_BOTH: int

# end reasons
END_AGED_OUT: int
END_TCP_FIN: int
END_TCP_RST_FROM_CLIENT: int
END_TCP_RST_FROM_SERVER: int
END_POLICY_DENY: int
END_EVICTED: int
END_OF_RUN: int
END_FW_FAILED: int
END_MOVED: int

# pickup counters: indices into session_update's picked_up
PICKUP_NON_SYN: int
PICKUP_REVERSED: int

# kinds of returned frames (same values as tcpreset.KIND_*)
OUT_ECHO: int
OUT_RST_TO_SENDER: int
OUT_RST_TO_RECEIVER: int

def session_update(
    slot: np.ndarray,  # const int64[n]
    is_new: np.ndarray,  # const uint8[n]
    rev: np.ndarray,  # const uint8[n]
    proto: np.ndarray,  # const uint8[n]
    tcp_flags: np.ndarray,  # const uint8[n]
    ts_ns: np.ndarray,  # const int64[n]
    nbytes: np.ndarray,  # const uint32[n]
    src_ip: np.ndarray,  # const uint32[n]
    dst_ip: np.ndarray,  # const uint32[n]
    sport: np.ndarray,  # const uint16[n]
    dport: np.ndarray,  # const uint16[n]
    endpoint: np.ndarray,  # const uint64[n]
    zone: np.ndarray,  # const uint8[n]
    rule: np.ndarray,  # const int32[n]
    action: np.ndarray,  # const uint8[n]
    sess: np.ndarray,  # int64[capacity, NF] in/out
    status: np.ndarray,  # uint8[n] in/out
    out_rule: np.ndarray,  # int32[n] out
    out_n: np.ndarray,  # uint8[n] out
    out_kind1: np.ndarray,  # uint8[n] out
    out_kind2: np.ndarray,  # uint8[n] out
    hits: np.ndarray,  # int64[n_rules + 1] in/out
    ended: np.ndarray,  # int64[m, NF] out, m >= n_ended + n - start (n + 1 covers every resume)
    ended_slot: np.ndarray,  # int64[m] out
    close_timeout_ns: int,
    deny_timeout_ns: int,
    start: int = 0,
    n_ended: int = 0,
    flip: np.ndarray | None = None,  # const uint8[n]: 1 = a session started here has the destination as client
    accept_non_syn: bool = False,  # a TCP session may start without a SYN
    picked_up: np.ndarray | None = None,  # int64[2] in/out: sessions started without SYN / reversed
) -> tuple[int, int]:
    """Apply packets start.. to their sessions in batch order; returns (rows filled in ended, stop row): the pass
    stops (stop < n) at a row that would start a session but has rule -1; classify it and call again from there."""
def session_add(
    slot: np.ndarray,  # const int64[n]
    start_ns: np.ndarray,  # const int64[n]
    rev: np.ndarray,  # const uint8[n]
    nbytes: np.ndarray,  # const uint32[n]
    sess: np.ndarray,  # int64[capacity, NF], in/out
    ts_ns: np.ndarray | None = None,  # const int64[n]: F_LAST moves to ts_ns[i] where later
) -> int:
    """Add 1 packet and nbytes[i] bytes to session slot[i] (direction rev[i]) where the slot still holds the session
    started at start_ns[i] (and with ts_ns, move its F_LAST to ts_ns[i] if later); returns the rows counted."""
def admit(
    endpoint: np.ndarray,  # const uint64[n]
    ep_ids: np.ndarray,  # const uint64[m], ascending, no repeats
    ep_zone: np.ndarray,  # const uint8[m]
    unknown_zone: int,
    src_ip: np.ndarray, dst_ip: np.ndarray,  # const uint32[n]
    sport: np.ndarray, dport: np.ndarray,  # const uint16[n]
    status: np.ndarray,  # uint8[n], in/out: OK rows of an unknown endpoint -> UNKNOWN_ENDPOINT
    zone: np.ndarray,  # uint8[n], out
    a_ip: np.ndarray, b_ip: np.ndarray,  # uint32[n], out
    a_port: np.ndarray, b_port: np.ndarray,  # uint16[n], out
    rev: np.ndarray,  # uint8[n], out
) -> int:
    """Zone, UNKNOWN_ENDPOINT status and canonical 5-tuple of every row in one pass; returns the rows OK on exit."""
def settle(
    slot: np.ndarray,  # const int64[n]
    sess: np.ndarray,  # const int64[capacity, NF]
    status: np.ndarray,  # const uint8[n]
    out_n: np.ndarray, out_kind1: np.ndarray, out_kind2: np.ndarray,  # const uint8[n]
    reopened: bool,
    counts: np.ndarray,  # int64[k], in/out: rows per status
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """(closed, denied, opened, empty slots, rows with a reset) after session_update; see the kernel's docstring."""
