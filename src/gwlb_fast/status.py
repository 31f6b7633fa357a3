"""Per-packet status codes and drop reasons.

Every kernel writes one ``uint8`` status per packet; the first problem found wins. ``OK`` (0) means the packet
is good so far. Codes below 32 describe what a parser found in the bytes; codes from 32 on are the reasons a
stage of the modelled path dropped a packet. ``_kernels/_status.pxd`` mirrors this enum value for value (a
test asserts the two agree), so kernels and Python speak the same numbers.
"""
from enum import IntEnum

import numpy as np


class PktStatus(IntEnum):
    OK = 0
    # --- what the L2-L4 parser finds -------------------------------------------------------------------------
    TRUNCATED = 1          # frame too short for its L2/L3 header
    NOT_IPV4 = 2           # ARP, IPv6, other ethertypes: kept and counted, never parsed further
    BAD_IP_VERSION = 3     # raw-IP link type whose first nibble is not 4
    BAD_IHL = 4            # IHL < 5, or header longer than the captured bytes
    BAD_IP_LEN = 5         # IPv4 total length below the header length
    IP_TRUNCATED = 6       # IPv4 total length beyond the captured bytes and no whole L4 header to go on (encap)
    FRAGMENT = 7           # non-first IPv4 fragment: no L4 header, ports 0 (the fragment tracker fills them)
    L4_TRUNCATED = 8       # TCP/UDP/ICMP header cut short
    BAD_TCP_OFF = 9        # TCP data offset < 5 or past the IP payload
    BAD_IP_CSUM = 10       # IPv4 header checksum does not verify (RFC 791 section 3.1): dropped, as hosts do
    # --- what the Geneve decoder finds (RFC 8926) ----------------------------------------------------------
    NOT_GENEVE = 16        # not IPv4/UDP to port 6081
    GENEVE_TRUNCATED = 17  # shorter than the 8-byte Geneve base header
    GENEVE_BAD_VERSION = 18  # version field != 0 (RFC 8926 section 3.4: drop)
    GENEVE_OPT_OVERRUN = 19  # option length runs past the packet
    GENEVE_BAD_TLV = 20    # an option TLV overruns the option area
    GENEVE_CRITICAL = 21   # unknown option with the critical bit set (RFC 8926 section 3.5: drop)
    GENEVE_BAD_PROTO = 22  # protocol type other than IPv4 (0x0800) or Ethernet (0x6558)
    GENEVE_INNER_BAD = 23  # inner packet malformed
    # --- why a stage of the modelled path dropped a packet -----------------------------------------------------
    NO_ROUTE = 32          # no route matched, or the next hop does not exist
    BLACKHOLE = 33         # route to blackhole
    ROUTE_LOOP = 34        # the route sends the packet back where it came from
    UNKNOWN_ENDPOINT = 35  # endpoint id not configured
    NO_HEALTHY_FW = 36     # no healthy firewall behind the GWLB
    FW_FAILED = 37         # established flow on a firewall that failed (failover: keep)
    FLOW_TABLE_FULL = 38   # flow table full and nothing could be evicted
    TOO_BIG = 39           # inner packet larger than the GWLB forwards
    STALE_COOKIE = 40      # returning Geneve packet whose flow cookie is not the flow's
    POLICY_DENY = 41       # security rule with action deny or drop (or default deny)
    POLICY_RESET = 42      # security rule with a reset action: original dropped, RST sent
    TCP_NOT_SYN = 43       # first packet of a TCP session is not a SYN
    SESSION_CLOSED = 44    # packet after the session was closed by RST
    NAT_PORT_EXHAUSTED = 45  # no free SNAT port
    NAT_NO_MAPPING = 46    # inbound to the public address with no DNAT rule or translation
    NAT_TABLE_FULL = 47    # translation table full
    NOT_FORWARDED = 48     # protocol the modelled path does not forward (e.g. non-IPv4)
    FW_DOWN = 49           # sent to a firewall that is down (before its health check noticed, or kept there)
    # --- fragments and ICMP errors (their own block, clear of the codes above) --------------------------------
    FRAG_NO_FIRST = 56     # non-first fragment whose first fragment did not come within the hold window
    FRAG_OVERLAP = 57      # fragment overlapping bytes already seen of its datagram
    FRAG_TABLE_FULL = 58   # no room left in the fragment table (or in its hold count)
    ICMP_NO_SESSION = 59   # ICMP error quoting a packet of no known flow/session (nothing to be related to)
    # --- addresses a VPC router treats specially (never routed to a NAT gateway or the Internet) -------------
    BROADCAST = 60         # to 255.255.255.255 or to a subnet's broadcast address (a VPC forwards no broadcast)
    MULTICAST = 61         # to 224.0.0.0/4 (no multicast domain is modelled)
    MARTIAN = 62           # 0.0.0.0/8 or 127.0.0.0/8 on either side, or from a broadcast or multicast source
    LINK_LOCAL = 63        # 169.254.0.0/16 on either side: served by the host (metadata, DNS), never routed


N_STATUS = 64
"""Size of every per-reason counter array (``np.bincount(status, minlength=N_STATUS)``)."""

assert max(PktStatus) < N_STATUS


def count_status(status: np.ndarray) -> np.ndarray:
    """Count packets per status code: ``int64[N_STATUS]``."""
    return np.bincount(np.asarray(status, dtype=np.uint8), minlength=N_STATUS).astype(np.int64)


def describe_counts(counts: np.ndarray) -> dict[str, int]:
    """Non-zero, non-OK entries of a counter array as ``{reason_name: count}``."""
    out = {}
    for code in np.flatnonzero(counts):
        if code == PktStatus.OK:
            continue
        try:
            name = PktStatus(int(code)).name
        except ValueError:
            name = f"STATUS_{int(code)}"
        out[name] = int(counts[code])
    return out
