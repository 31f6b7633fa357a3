import numpy as np

def lpm_lookup(
    l1: np.ndarray,     # int32[ntables * 65536]: first level (top 16 bits) of every table
    l2: np.ndarray,     # int32[k2 * 256]: second-level chunks (bits 15..8)
    l3: np.ndarray,     # int32[k3 * 256]: third-level chunks (bits 7..0)
    table: np.ndarray,  # int32[n] or int32[1]
    dst: np.ndarray,    # uint32[n]
    out: np.ndarray,    # int32[n], written: value, -1 = no match
) -> int: ...

def next_hops(
    l1: np.ndarray,            # int32: every VPC's route tables (lpm_lookup's arrays)
    l2: np.ndarray,
    l3: np.ndarray,
    table_base: np.ndarray,    # int32[nvpc + 1]: VPC v's table t is table table_base[v] + t < table_base[v + 1]
    route_kind: np.ndarray,    # int8[nroutes]: next-hop kind of each route (the LPM's values)
    route_target: np.ndarray,  # int32[nroutes]
    no_route: int,             # kind of a row with no route (target -1)
    status: np.ndarray,        # uint8[n]
    table: np.ndarray,         # int32[n]: route table of each row; written: -1 on the rows walking
    delivered: np.ndarray,     # uint8[n]
    held: np.ndarray,          # uint8[n]
    vpc: np.ndarray,           # int16[n]
    dst: np.ndarray,           # uint32[n]
    rows: np.ndarray,          # int64[n] out: the rows walking, in order (first m)
    kind: np.ndarray,          # int8[n] out
    target: np.ndarray,        # int32[n] out
) -> int: ...  # m

def enter_subnets(
    l1: np.ndarray,            # int32: the VPC's subnets (one table, values subnet ids)
    l2: np.ndarray,
    l3: np.ndarray,
    subnet_table: np.ndarray,  # int32[nsubnets]: route table of each subnet
    vpc_id: int,
    local: int,                # the delivered code of a packet delivered inside its subnet
    status: np.ndarray,        # uint8[n]
    vpc: np.ndarray,           # int16[n], written: vpc_id on the rows entering here
    table: np.ndarray,         # int32[n], written
    delivered: np.ndarray,     # uint8[n], written: local on the rows delivered inside their subnet
    src: np.ndarray,           # uint32[n]
    dst: np.ndarray,           # uint32[n]
    same: np.ndarray,          # int64[n] out: the rows delivered inside their subnet, in order (first m)
) -> int: ...  # m
