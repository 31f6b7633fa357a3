"""Multi-literal matching on Hyperscan (streaming per session direction, block mode for fields) and signature
verification from the literal matches, nogil."""
import numpy as np

# buffers an event comes from (ev_buf): BUF_FIELD0 + appid's F_* for the extracted fields
BUF_TO_SERVER: int
BUF_TO_CLIENT: int
BUF_FIELD0: int
N_BUFFERS: int
RING: int  # recent literal matches kept per (session, buffer)
# signature header flags (s_flags)
SIG_TO_SERVER: int
SIG_TO_CLIENT: int
SIG_ESTABLISHED: int
SIG_BIDIR: int

class Literals:
    """A compiled set of literals (bytes matched exactly, NULs included) with its scratch space and, in streaming
    mode (``n_streams > 0``), one stream per session direction."""

    n_streams: int
    n_patterns: int
    streaming: bool
    dropped_events: int  # match events lost because the event arrays were full
    resets: int
    def __init__(self, patterns: list[bytes], caseless: list[bool], n_streams: int = 0) -> None: ...
    @property
    def database_bytes(self) -> int: ...
    @property
    def stream_bytes(self) -> int: ...
    def reset(self, sds: np.ndarray) -> None:  # const int64[k]
        """Start the given session directions anew (a new session took their row)."""
    def scan_streams(
        self,
        data: np.ndarray,  # const uint8[::1]
        sd: np.ndarray,  # const int64[n], session direction of each packet
        lo: np.ndarray,  # const int64[n], stream range the packet made available: [lo, hi)
        hi: np.ndarray,  # const int64[n]
        seg: np.ndarray,  # const int64[n], stream offset of the packet's first payload byte
        pay: np.ndarray,  # const int64[n], where that byte is in data (-1: no payload)
        proto: np.ndarray,  # const uint8[n]
        head: np.ndarray,  # const uint8[m, H], m <= n_streams
        ev_row: np.ndarray,  # int64[cap] out
        ev_buf: np.ndarray,  # uint8[cap] out
        ev_pid: np.ndarray,  # int32[cap] out
        ev_end: np.ndarray,  # int64[cap] out
        ev_pkt: np.ndarray,  # int64[cap] out
        start: int = 0,
        taken: np.ndarray | None = None,  # uint8[n] in/out: packets already scanned in a run of segments
    ) -> tuple[int, int]:
        """Scan the bytes each packet made available, in packet order; returns (events written, next packet): the
        pass stops before a packet when the event arrays run short; call again from there."""
    def scan_fields(
        self,
        rows: np.ndarray,  # const int64[k]
        fields: np.ndarray,  # const uint8[m, N_FIELDS * FW]
        flen: np.ndarray,  # const int32[m, N_FIELDS]
        ev_row: np.ndarray,  # int64[cap] out
        ev_buf: np.ndarray,  # uint8[cap] out
        ev_pid: np.ndarray,  # int32[cap] out
        ev_end: np.ndarray,  # int64[cap] out
        ev_pkt: np.ndarray,  # int64[cap] out
    ) -> int:
        """Scan the extracted fields of ``rows`` (block mode); returns the events written."""

def verify(
    ev_row: np.ndarray,  # const int64[E]
    ev_buf: np.ndarray,  # const uint8[E]
    ev_pid: np.ndarray,  # const int32[E]
    ev_end: np.ndarray,  # const int64[E]
    n_events: int,
    p_start: np.ndarray,  # const int64[n_literals + 1]: contents using each literal
    p_users: np.ndarray,  # const int32[*]
    c_sig: np.ndarray,  # const int32[C], per content
    c_buf: np.ndarray,  # const uint8[C]
    c_pid: np.ndarray,  # const int32[C]
    c_len: np.ndarray,  # const int32[C]
    c_offset: np.ndarray,  # const int32[C]
    c_depth: np.ndarray,  # const int32[C]
    c_distance: np.ndarray,  # const int32[C]
    c_within: np.ndarray,  # const int32[C]
    c_rel: np.ndarray,  # const uint8[C]
    s_first: np.ndarray,  # const int32[S], per signature
    s_n: np.ndarray,  # const int32[S]
    s_proto: np.ndarray,  # const uint8[S]
    s_app: np.ndarray,  # const int32[S]
    s_flags: np.ndarray,  # const uint8[S], SIG_*
    s_src_a: np.ndarray,  # const int64[S + 1], address ranges of each signature's source
    sa_lo: np.ndarray,  # const uint32[*]
    sa_hi: np.ndarray,  # const uint32[*]
    s_dst_a: np.ndarray,  # const int64[S + 1]
    da_lo: np.ndarray,  # const uint32[*]
    da_hi: np.ndarray,  # const uint32[*]
    s_src_p: np.ndarray,  # const int64[S + 1], port ranges
    sp_lo: np.ndarray,  # const uint32[*]
    sp_hi: np.ndarray,  # const uint32[*]
    s_dst_p: np.ndarray,  # const int64[S + 1]
    dp_lo: np.ndarray,  # const uint32[*]
    dp_hi: np.ndarray,  # const uint32[*]
    row_client_ip: np.ndarray,  # const uint32[m], per session row
    row_server_ip: np.ndarray,  # const uint32[m]
    row_client_port: np.ndarray,  # const uint16[m]
    row_server_port: np.ndarray,  # const uint16[m]
    row_proto: np.ndarray,  # const uint8[m]
    row_app: np.ndarray,  # const int32[m]
    row_seen: np.ndarray,  # const uint8[m, 2]: each direction seen
    ring_pid: np.ndarray,  # int32[m * N_BUFFERS, RING] in/out
    ring_end: np.ndarray,  # int64[m * N_BUFFERS, RING] in/out
    ring_n: np.ndarray,  # int64[m * N_BUFFERS] in/out
    out_event: np.ndarray,  # int64[cap] out
    out_sig: np.ndarray,  # int32[cap] out
) -> int:
    """Signatures that match, from literal events in scan order; returns the (event, signature) hits written."""
