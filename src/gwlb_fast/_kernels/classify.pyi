"""Type stub for gwlb_fast._kernels.classify (first-match decision-tree classifier)."""
import numpy as np

NDIMS: int  # 7: src_ip, dst_ip, sport, dport, proto, zone_from, zone_to
DOMAIN_HI: tuple[int, ...]  # inclusive upper bound of each dimension
ZONE_UNKNOWN: int  # 255: zone value of packets whose zone is not given
F_APP: int  # rule flag: application list
F_APPDEF: int  # rule flag: service application-default
F_CAT: int  # rule flag: URL category list

class ClassifierTree:
    def __init__(
        self,
        lo: np.ndarray,  # uint32[nboxes, 7]
        hi: np.ndarray,  # uint32[nboxes, 7]
        rule: np.ndarray,  # int32[nboxes], non-decreasing
        group: np.ndarray | None = None,  # int32[nboxes], 0..63: one tree per group
        binth: int = 8,
        max_leaf_entries: int = -1,  # default 32 * nboxes + 4096
        rule_flags: np.ndarray | None = None,  # uint8[n_rules]: F_APP | F_APPDEF | F_CAT
        app_bits: np.ndarray | None = None,  # uint64[n_rules, app_words]
        cat_bits: np.ndarray | None = None,  # uint64[n_rules, cat_words]
        appdef_start: np.ndarray | None = None,  # int32[n_apps + 1]
        appdef_key: np.ndarray | None = None,  # uint32[m]: proto << 16 | port
        app_pending: int = 0,
    ) -> None: ...
    @property
    def n_nodes(self) -> int: ...
    @property
    def n_leaf_entries(self) -> int: ...
    @property
    def depth(self) -> int: ...
    @property
    def n_groups(self) -> int: ...
    @property
    def over_budget(self) -> bool: ...
    @property
    def memory_bytes(self) -> int: ...
    def lookup(
        self,
        src_ip: np.ndarray,  # uint32[::1]
        dst_ip: np.ndarray,  # uint32[::1]
        sport: np.ndarray,  # uint16[::1]
        dport: np.ndarray,  # uint16[::1]
        proto: np.ndarray,  # uint8[::1]
        zone_from: np.ndarray | None,  # uint8[::1]
        zone_to: np.ndarray | None,  # uint8[::1]
        out: np.ndarray,  # int32[::1]
        app: np.ndarray | None = None,  # uint16[::1]
        category: np.ndarray | None = None,  # int32[n, k]; -1 = none
    ) -> None: ...
