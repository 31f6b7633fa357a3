"""Flow shard of each packet for ``run --workers N``: a symmetric hash of the two addresses, the public side of a
NAT gateway mapped first (DNAT port to its target, SNAT port to the shard owning its slice)."""
import numpy as np

SHARD_SEED: int

def shard_packets(
    data: np.ndarray,  # const uint8[::1]
    off: np.ndarray,  # const int64[::1], shape (n,)
    caplen: np.ndarray,  # const uint32[::1]
    status: np.ndarray,  # const uint8[::1]
    proto: np.ndarray,  # const uint8[::1]
    src_ip: np.ndarray,  # const uint32[::1]
    dst_ip: np.ndarray,  # const uint32[::1]
    sport: np.ndarray,  # const uint16[::1]
    dport: np.ndarray,  # const uint16[::1]
    tcp_flags: np.ndarray,  # const uint8[::1] (ICMP type for ICMP)
    l3_off: np.ndarray,  # const int32[::1]
    l4_off: np.ndarray,  # const int32[::1]
    pub_ip: np.ndarray,  # const uint32[::1], shape (g,)
    port_lo: np.ndarray,  # const int32[::1], shape (g,)
    port_hi: np.ndarray,  # const int32[::1], shape (g,)
    dnat_gw: np.ndarray,  # const int32[::1], shape (r,)
    dnat_proto: np.ndarray,  # const uint8[::1], shape (r,)
    dnat_port: np.ndarray,  # const uint16[::1], shape (r,)
    dnat_to: np.ndarray,  # const uint32[::1], shape (r,)
    nshards: int,
    frag_key: np.ndarray,  # uint64[::1], power-of-two size (state)
    frag_shard: np.ndarray,  # int16[::1], same size (state, -1 = empty)
    out: np.ndarray,  # int16[::1], shape (n,)
) -> int: ...
