"""NAT gateway kernels (see nat.pyx): classify, allocate SNAT ports, release ports, rewrite headers."""
import numpy as np

NAT_NONE: int  # 0
NAT_SNAT: int  # 1: outbound, private source -> public_ip:allocated port
NAT_SNAT_REPLY: int  # 2: inbound reply to an SNAT mapping
NAT_DNAT: int  # 3: inbound to a DNAT rule
NAT_DNAT_REPLY: int  # 4: outbound reply of a DNAT server

def nat_classify_out(
    status: np.ndarray,  # uint8[n], in/out
    proto: np.ndarray,  # uint8[n]
    icmp_type: np.ndarray,  # uint8[n] (parse's tcp_flags column)
    src_ip: np.ndarray,  # uint32[n]
    sport: np.ndarray,  # uint16[n]
    snat_net: np.ndarray,  # uint32[k]
    snat_mask: np.ndarray,  # uint32[k]
    dnat_proto: np.ndarray,  # uint8[r]
    dnat_to_ip: np.ndarray,  # uint32[r]
    dnat_to_port: np.ndarray,  # uint16[r]
    action: np.ndarray,  # uint8[n], written
    rule: np.ndarray,  # int32[n], written
) -> int: ...
def nat_classify_in(
    status: np.ndarray,  # uint8[n], in/out
    proto: np.ndarray,  # uint8[n]
    icmp_type: np.ndarray,  # uint8[n]
    dst_ip: np.ndarray,  # uint32[n]
    dport: np.ndarray,  # uint16[n]
    public_ip: int,
    owner: np.ndarray,  # int32[3 * 65536]
    dnat_index: np.ndarray,  # int32[3 * 65536]
    action: np.ndarray,  # uint8[n], written
    ref: np.ndarray,  # int64[n], written
) -> int: ...
def nat_alloc_ports(
    slot: np.ndarray,  # int64[m]
    is_new: np.ndarray,  # uint8[m]
    proto: np.ndarray,  # uint8[m]
    slot_port: np.ndarray,  # int32[capacity], in/out
    ring: np.ndarray,  # uint16[3 * R], in/out
    head: np.ndarray,  # int64[3], in/out
    count: np.ndarray,  # int64[3], in/out
    owner: np.ndarray,  # int32[3 * 65536], in/out
    port_out: np.ndarray,  # int32[m], written
) -> int: ...
def nat_release(
    slots: np.ndarray,  # int64[k]
    proto: np.ndarray,  # uint8[k]
    slot_port: np.ndarray,  # int32[capacity], in/out
    ring: np.ndarray,  # uint16[3 * R], in/out
    head: np.ndarray,  # int64[3], in/out
    count: np.ndarray,  # int64[3], in/out
    owner: np.ndarray,  # int32[3 * 65536], in/out
) -> int: ...
def nat_rewrite(
    data: np.ndarray,  # uint8[::1], written in place
    off: np.ndarray,  # int64[n]
    caplen: np.ndarray,  # uint32[n]
    l3_off: np.ndarray,  # int32[n]
    l4_off: np.ndarray,  # int32[n]
    proto: np.ndarray,  # uint8[n]
    side: int,  # 0 source, 1 destination
    new_ip: np.ndarray,  # uint32[n]
    new_port: np.ndarray,  # int32[n], -1 = leave the packet alone
    status: np.ndarray,  # uint8[n], in/out
    ip_col: np.ndarray,  # uint32[n], updated
    port_col: np.ndarray,  # uint16[n], updated
    other_port_col: np.ndarray,  # uint16[n], updated for ICMP queries
    action: np.ndarray,  # uint8[n]: NAT_* kind of each packet
    rec_kind: np.ndarray,  # uint8[n], written (0 where not rewritten)
    rec_priv_ip: np.ndarray,  # uint32[n], written
    rec_priv_port: np.ndarray,  # uint16[n], written
    rec_pub_ip: np.ndarray,  # uint32[n], written
    rec_pub_port: np.ndarray,  # uint16[n], written
) -> int: ...
