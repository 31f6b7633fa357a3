# Addresses a VPC router treats specially (DESIGN.md section 10), marked in one nogil pass.
#
# A VPC forwards neither broadcast nor multicast, and the loopback, "this network" and link-local ranges never leave
# a host: such packets are dropped with a reason before any route table sees them, so none reaches a NAT gateway or
# the Internet. Per packet, the first rule that applies wins:
#   destination 255.255.255.255 or a subnet broadcast address       -> BROADCAST
#   destination in 224.0.0.0/4                                      -> MULTICAST
#   either address in 0.0.0.0/8 or 127.0.0.0/8, or a source in 224.0.0.0/4 or 255.255.255.255  -> MARTIAN
#   either address in 169.254.0.0/16                                -> LINK_LOCAL
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memset

from gwlb_fast._kernels._status cimport ST_BROADCAST, ST_LINK_LOCAL, ST_MARTIAN, ST_MULTICAST, ST_OK


cdef inline bint _in_sorted(const uint32_t[::1] a, Py_ssize_t k, uint32_t v) noexcept nogil:
    cdef Py_ssize_t lo = 0, hi = k, mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if a[mid] < v:
            lo = mid + 1
        else:
            hi = mid
    return lo < k and a[lo] == v


cdef inline bint _martian(uint32_t ip) noexcept nogil:
    cdef uint32_t top = ip >> 24
    return top == 0 or top == 127


def mark_special(uint8_t[::1] status, const uint32_t[::1] src_ip, const uint32_t[::1] dst_ip,
                 const uint32_t[::1] subnet_broadcast):
    """Mark the packets to or from addresses a VPC router never routes.

    Parameters
    ----------
    status : uint8[n]
        In/out: only ``OK`` rows are examined; a special one gets its reason (below).
    src_ip, dst_ip : uint32[n]
        Host order.
    subnet_broadcast : uint32[k]
        The broadcast address (last address) of every subnet, sorted ascending.

    Returns
    -------
    int
        Rows marked.

    Notes
    -----
    Status codes set: ``BROADCAST`` (to 255.255.255.255 or a subnet broadcast address), ``MULTICAST`` (to
    224.0.0.0/4), ``MARTIAN`` (0.0.0.0/8 or 127.0.0.0/8 on either side, a multicast or broadcast source),
    ``LINK_LOCAL`` (169.254.0.0/16 on either side); the first that applies wins, in that order.
    """
    cdef Py_ssize_t n = status.shape[0], k = subnet_broadcast.shape[0], i, marked = 0
    cdef uint32_t s, d, ones = <uint32_t>0xFFFFFFFFUL
    # the low 16 bits of every subnet broadcast address, as a bitmap: most destinations are ruled out by one bit
    # test before the binary search
    cdef uint64_t low16[1024]
    memset(low16, 0, sizeof(low16))
    for i in range(k):
        d = subnet_broadcast[i] & 0xFFFF
        low16[d >> 6] |= (<uint64_t>1) << (d & 63)
    if src_ip.shape[0] != n or dst_ip.shape[0] != n:
        raise ValueError(f"src_ip, dst_ip: expected length {n}, got {src_ip.shape[0]} and {dst_ip.shape[0]}")
    for i in range(1, k):
        if subnet_broadcast[i] < subnet_broadcast[i - 1]:
            raise ValueError("subnet_broadcast: must be sorted ascending")
    with nogil:
        for i in range(n):
            if status[i] != ST_OK:
                continue
            s = src_ip[i]
            d = dst_ip[i]
            if d == ones or ((low16[(d & 0xFFFF) >> 6] >> (d & 63)) & 1 and _in_sorted(subnet_broadcast, k, d)):
                status[i] = ST_BROADCAST
            elif (d >> 28) == 0xE:
                status[i] = ST_MULTICAST
            elif _martian(s) or _martian(d) or (s >> 28) == 0xE or s == ones:
                status[i] = ST_MARTIAN
            elif (s >> 16) == 0xA9FE or (d >> 16) == 0xA9FE:
                status[i] = ST_LINK_LOCAL
            else:
                continue
            marked += 1
    return marked
