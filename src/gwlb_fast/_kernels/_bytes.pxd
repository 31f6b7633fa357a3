# Byte-order helpers shared by every kernel (inlined into each module that cimports them).
# Shifts, not casts: packet fields are unaligned and the wire is big-endian.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t


cdef inline uint16_t load_be16(const uint8_t* p) noexcept nogil:
    return (<uint16_t>p[0] << 8) | p[1]


cdef inline uint32_t load_be32(const uint8_t* p) noexcept nogil:
    return ((<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3])


cdef inline uint64_t load_be64(const uint8_t* p) noexcept nogil:
    return (<uint64_t>load_be32(p) << 32) | load_be32(p + 4)


cdef inline uint16_t load_le16(const uint8_t* p) noexcept nogil:
    return (<uint16_t>p[1] << 8) | p[0]


cdef inline uint32_t load_le32(const uint8_t* p) noexcept nogil:
    return ((<uint32_t>p[3] << 24) | (<uint32_t>p[2] << 16) | (<uint32_t>p[1] << 8) | p[0])


cdef inline void store_be16(uint8_t* p, uint16_t v) noexcept nogil:
    p[0] = <uint8_t>(v >> 8)
    p[1] = <uint8_t>v


cdef inline void store_be32(uint8_t* p, uint32_t v) noexcept nogil:
    p[0] = <uint8_t>(v >> 24)
    p[1] = <uint8_t>(v >> 16)
    p[2] = <uint8_t>(v >> 8)
    p[3] = <uint8_t>v


cdef inline void store_be64(uint8_t* p, uint64_t v) noexcept nogil:
    store_be32(p, <uint32_t>(v >> 32))
    store_be32(p + 4, <uint32_t>v)


cdef inline void store_le32(uint8_t* p, uint32_t v) noexcept nogil:
    p[0] = <uint8_t>v
    p[1] = <uint8_t>(v >> 8)
    p[2] = <uint8_t>(v >> 16)
    p[3] = <uint8_t>(v >> 24)


cdef inline uint32_t csum_add(uint32_t acc, const uint8_t* p, Py_ssize_t n) noexcept nogil:
    """Add n bytes (big-endian 16-bit words, odd byte padded) to a one's-complement accumulator."""
    cdef Py_ssize_t i = 0
    while i + 1 < n:
        acc += (<uint32_t>p[i] << 8) | p[i + 1]
        i += 2
    if i < n:
        acc += <uint32_t>p[i] << 8
    return acc


cdef inline bint csum_words_ok(const uint8_t* p, Py_ssize_t nwords) noexcept nogil:
    """Whether ``nwords`` 32-bit words at ``p`` (a header with its checksum field, e.g. IPv4's) add up to 0xFFFF in
    one's complement: its checksum is right. The words are added as they lie in memory (little-endian), four bytes
    at a time: a one's-complement sum taken in the other byte order is the byte-swapped sum (RFC 1071, section 2),
    and 0xFFFF is its own swap."""
    cdef uint64_t acc = 0, low32 = <uint64_t>0xFFFFFFFFUL
    cdef Py_ssize_t i
    for i in range(nwords):
        acc += load_le32(p + 4 * i)
    acc = (acc & low32) + (acc >> 32)
    acc = (acc & low32) + (acc >> 32)
    acc = (acc & 0xFFFF) + (acc >> 16)
    acc = (acc & 0xFFFF) + (acc >> 16)
    return acc == 0xFFFF


cdef inline uint16_t csum_fold(uint32_t acc) noexcept nogil:
    """Fold a one's-complement accumulator and complement it (RFC 1071)."""
    while acc >> 16:
        acc = (acc & 0xFFFF) + (acc >> 16)
    return <uint16_t>(~acc & 0xFFFF)


cdef inline uint16_t csum_update16(uint16_t old_csum, uint16_t old_val, uint16_t new_val) noexcept nogil:
    """Incremental checksum update for one 16-bit field: HC' = ~(~HC + ~m + m') (RFC 1624, eqn. 3)."""
    cdef uint32_t acc = (~old_csum & 0xFFFF) + (~old_val & 0xFFFF) + new_val
    while acc >> 16:
        acc = (acc & 0xFFFF) + (acc >> 16)
    return <uint16_t>(~acc & 0xFFFF)
