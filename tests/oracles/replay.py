"""Plain-Python references for replay.py (which side of a flow is its client) and _kernels/special.pyx."""
import ipaddress

from gwlb_fast.status import PktStatus

ICMP_REPLIES = {0, 14, 16, 18}
ICMP_QUERIES = {8, 13, 15, 17}


def sender_is_server(src, dst, sport, dport, proto, flags, private_nets, dnat_targets):
    """One packet, the module docstring's rules in order. ``private_nets``: ipaddress networks; ``dnat_targets``:
    (proto, ip, port) tuples."""
    if proto == 6 and flags & 0x02 and not flags & 0x04:
        return bool(flags & 0x10)
    if proto == 1 and flags in ICMP_REPLIES:
        return True
    if proto == 1 and flags in ICMP_QUERIES:
        return False
    if (proto, dst, dport) in dnat_targets:
        return False
    if (proto, src, sport) in dnat_targets:
        return True
    ps = any(ipaddress.IPv4Address(src) in n for n in private_nets)
    pd = any(ipaddress.IPv4Address(dst) in n for n in private_nets)
    if ps != pd:
        return pd
    if proto in (6, 17) and sport != dport:
        if (sport < 1024) != (dport < 1024):
            return sport < 1024
        return sport < dport
    return False


def special_status(src, dst, subnet_broadcast):
    """The status mark_special gives one OK packet (OK when none applies)."""
    def martian(a):
        return a >> 24 in (0, 127)

    if dst == 0xFFFFFFFF or dst in subnet_broadcast:
        return PktStatus.BROADCAST
    if dst >> 28 == 0xE:
        return PktStatus.MULTICAST
    if martian(src) or martian(dst) or src >> 28 == 0xE or src == 0xFFFFFFFF:
        return PktStatus.MARTIAN
    if src >> 16 == 0xA9FE or dst >> 16 == 0xA9FE:
        return PktStatus.LINK_LOCAL
    return PktStatus.OK
