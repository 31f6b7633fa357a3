"""Addresses a VPC router treats specially: broadcast, multicast, 0/8, 127/8, 169.254/16 (DESIGN.md section 10)."""
import numpy as np

def mark_special(
    status: np.ndarray,  # uint8[::1], shape (n,), in/out: OK rows examined, special ones get their reason
    src_ip: np.ndarray,  # const uint32[::1], shape (n,)
    dst_ip: np.ndarray,  # const uint32[::1], shape (n,)
    subnet_broadcast: np.ndarray,  # const uint32[::1], shape (k,), sorted ascending
) -> int:
    """Set BROADCAST, MULTICAST, MARTIAN or LINK_LOCAL on the OK rows that have such an address (first rule wins,
    in that order); returns the number of rows marked. ValueError on lengths or an unsorted broadcast list."""
