import numpy as np

SCAN_OK: int
SCAN_NEED_MORE: int
SCAN_BAD_CAPLEN: int
SCAN_CONTROL: int
SCAN_BAD_BLOCK_LEN: int
SCAN_BAD_TRAILER: int
SCAN_BAD_IFACE: int
SCAN_BAD_LINKTYPE: int
SCAN_BLOCK_CAPLEN: int
CONVERTED_DST_MAC: bytes
CONVERTED_SRC_MAC: bytes

def scan_pcap(
    buf: np.ndarray,  # const uint8[::1]
    pos: int,
    origin: int,
    max_n: int,
    big_endian: bool,
    frac_ns: int,
    max_caplen: int,
    off: np.ndarray,  # int64[>= max_n] out
    caplen: np.ndarray,  # uint32[>= max_n] out
    wirelen: np.ndarray,  # uint32[>= max_n] out
    ts_ns: np.ndarray,  # int64[>= max_n] out
) -> tuple[int, int, int, int]: ...  # (n, pos, code, aux)
def scan_pcapng(
    buf: np.ndarray,  # const uint8[::1]
    pos: int,
    origin: int,
    max_n: int,
    big_endian: bool,
    if_linktype: np.ndarray,  # const uint16[m]
    if_snaplen: np.ndarray,  # const uint32[m]
    if_ts_mul: np.ndarray,  # const int64[m]
    if_ts_div: np.ndarray,  # const uint64[m]
    if_ts_shift: np.ndarray,  # const int32[m]
    if_ts_off: np.ndarray,  # const int64[m]
    max_caplen: int,
    off: np.ndarray,  # int64[>= max_n] out
    caplen: np.ndarray,  # uint32[>= max_n] out
    wirelen: np.ndarray,  # uint32[>= max_n] out
    ts_ns: np.ndarray,  # int64[>= max_n] out
    linktype: np.ndarray,  # uint16[>= max_n] out
) -> tuple[int, int, int, int]: ...  # (n, pos, code, aux)
def resync_pcap(
    buf: np.ndarray,  # const uint8[::1]
    pos: int,
    big_endian: bool,
    frac_limit: int,
    max_caplen: int,
    sec_lo: int,
    sec_hi: int,
    at_eof: bool,
) -> tuple[int, int]: ...  # (found index or -1, first index not yet ruled out)
def resync_pcapng(
    buf: np.ndarray,  # const uint8[::1]
    pos: int,
    big_endian: bool,
    n_interfaces: int,
    max_block: int,
    at_eof: bool,
) -> tuple[int, int]: ...  # (found index or -1, first index not yet ruled out)
def pcap_write_size(
    data: np.ndarray,  # const uint8[::1]
    off: np.ndarray,  # const int64[n]
    caplen: np.ndarray,  # const uint32[n]
    linktype: np.ndarray,  # const uint16[n]
    out_linktype: int,
    snaplen: int,
) -> int: ...  # bytes, or -(i + 1) when packet i cannot be converted
def frame_pcap_records(
    data: np.ndarray,  # uint8[::1], written: the 16 bytes before each packet
    off: np.ndarray,  # const int64[n]
    caplen: np.ndarray,  # const uint32[n]
    wirelen: np.ndarray,  # const uint32[n]
    ts_ns: np.ndarray,  # const int64[n]
    linktype: np.ndarray,  # const uint16[n]
    out_linktype: int,
    nanosecond: bool,
    snaplen: int,
) -> int: ...  # n, or -(i + 1) for the first packet that does not qualify (nothing written then)
def write_pcap_records(
    data: np.ndarray,  # const uint8[::1]
    off: np.ndarray,  # const int64[n]
    caplen: np.ndarray,  # const uint32[n]
    wirelen: np.ndarray,  # const uint32[n]
    ts_ns: np.ndarray,  # const int64[n]
    linktype: np.ndarray,  # const uint16[n]
    out_linktype: int,
    nanosecond: bool,
    snaplen: int,
    out: np.ndarray,  # uint8[pcap_write_size(...)] out
) -> int: ...
def pcapng_write_size(
    caplen: np.ndarray,  # const uint32[n]
    snaplen: int,
) -> int: ...
def write_pcapng_records(
    data: np.ndarray,  # const uint8[::1]
    off: np.ndarray,  # const int64[n]
    caplen: np.ndarray,  # const uint32[n]
    wirelen: np.ndarray,  # const uint32[n]
    ts_ns: np.ndarray,  # const int64[n]
    linktype: np.ndarray,  # const uint16[n]
    if_of_linktype: np.ndarray,  # const uint32[65536]
    snaplen: int,
    out: np.ndarray,  # uint8[pcapng_write_size(...)] out
) -> int: ...
def pcap_record_sizes(
    data: np.ndarray,  # const uint8[::1]
    off: np.ndarray,  # const int64[n]
    caplen: np.ndarray,  # const uint32[n]
    linktype: np.ndarray,  # const uint16[n]
    out_linktype: int,
    snaplen: int,
    out: np.ndarray,  # uint32[n] out
) -> int: ...  # the sum, or -(i + 1)
def write_pieces(
    fd: int,
    data: np.ndarray,  # const uint8[::1]
    off: np.ndarray,  # const int64[n]
    length: np.ndarray,  # const uint32[n]
) -> int: ...
