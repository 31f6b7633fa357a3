import numpy as np

GENEVE_PORT: int
GENEVE_HDR_LEN: int
GWLB_OPTIONS_LEN: int
ENCAP_HDR_LEN: int
PROTO_IPV4: int
PROTO_ETHERNET: int

def mix_seed(seed: int) -> int: ...
def parse_geneve(
    data: np.ndarray,  # const uint8[::1]
    off: np.ndarray,  # const int64[n]
    caplen: np.ndarray,  # const uint32[n]
    linktype: np.ndarray,  # const uint16[n]
    option_class: int,
    status: np.ndarray,  # uint8[n] out
    vni: np.ndarray,  # uint32[n] out
    flags: np.ndarray,  # uint8[n] out (O 0x80, C 0x40)
    opt_len: np.ndarray,  # uint16[n] out (bytes)
    endpoint_id: np.ndarray,  # uint64[n] out
    attachment_id: np.ndarray,  # uint64[n] out
    flow_cookie: np.ndarray,  # uint32[n] out
    inner_off: np.ndarray,  # int32[n] out (-1 when unknown)
    inner_len: np.ndarray,  # uint32[n] out
    inner_linktype: np.ndarray,  # uint16[n] out (228, 1, or 0)
) -> None: ...
def plan_encap(
    data: np.ndarray,  # const uint8[::1]
    off: np.ndarray,  # const int64[n]
    caplen: np.ndarray,  # const uint32[n]
    linktype: np.ndarray,  # const uint16[n]
    max_inner: int,
    status: np.ndarray,  # uint8[n] out
    inner_start: np.ndarray,  # int64[n] out
    inner_len: np.ndarray,  # uint32[n] out
) -> int: ...
def plan_carried(
    data: np.ndarray,  # const uint8[::1]
    off: np.ndarray,  # const int64[n]
    caplen: np.ndarray,  # const uint32[n]
    wirelen: np.ndarray,  # const uint32[n]
    linktype: np.ndarray,  # const uint16[n]
    parsed_status: np.ndarray,  # const uint8[n] or [0]
    l3_off: np.ndarray,  # const int32[n] or [0]
    l4_off: np.ndarray,  # const int32[n] or [0]
    max_inner: int,
    status: np.ndarray,  # uint8[n] out
    inner_start: np.ndarray,  # int64[n] out
    inner_len: np.ndarray,  # uint32[n] out
    inner_wirelen: np.ndarray,  # uint32[n] out
    inner_l4_off: np.ndarray,  # int32[n] or [0] out
) -> tuple[int, int]: ...
def fill_encap(
    data: np.ndarray,  # const uint8[::1]
    inner_start: np.ndarray,  # const int64[n]
    inner_len: np.ndarray,  # const uint32[n]
    rows: np.ndarray,  # const int64[m]
    out: np.ndarray,  # uint8[::1] out
    out_off: np.ndarray,  # const int64[m]
    macs: np.ndarray,  # const uint8[12] (dst then src)
    src: np.ndarray,  # const uint32[n] or [1]
    dst: np.ndarray,  # const uint32[n] or [1]
    sport: np.ndarray,  # const uint16[n], [1] or [0] (hash)
    vni: np.ndarray,  # const uint32[n] or [1]
    endpoint_id: np.ndarray,  # const uint64[n] or [1]
    attachment_id: np.ndarray,  # const uint64[n] or [1]
    cookie: np.ndarray,  # const uint32[n] or [1]
    option_class: int,
    ttl: int,
    hash_seed: int = 0,
    copy_inner: bool = True,
) -> None: ...
def flow_ports(
    data: np.ndarray,  # const uint8[::1]
    inner_start: np.ndarray,  # const int64[n]
    inner_len: np.ndarray,  # const uint32[n]
    out: np.ndarray,  # uint16[n] out
    hash_seed: int,
) -> None: ...
def swap_outer(
    data: np.ndarray,  # uint8[::1] in/out
    off: np.ndarray,  # const int64[n]
    caplen: np.ndarray,  # const uint32[n]
    linktype: np.ndarray,  # const uint16[n]
    status: np.ndarray,  # const uint8[n]
) -> int: ...
