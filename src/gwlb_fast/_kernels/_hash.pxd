# Hash mixers shared by the flow hash, Maglev and the Geneve source-port kernels (one home: a flow hashes alike
# wherever it is hashed). murmur3 finalizers; the 5-tuple hash orders the two endpoints so a flow and its reply agree.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t

cdef enum:
    HASH_MODE5 = 5


cdef inline uint64_t fmix64(uint64_t k) noexcept nogil:
    k ^= k >> 33
    k *= 0xFF51AFD7ED558CCDULL
    k ^= k >> 33
    k *= 0xC4CEB9FE1A85EC53ULL
    k ^= k >> 33
    return k


cdef inline uint32_t fmix32(uint32_t h) noexcept nogil:
    h ^= h >> 16
    h *= 0x85EBCA6BU
    h ^= h >> 13
    h *= 0xC2B2AE35U
    h ^= h >> 16
    return h


cdef inline uint64_t seed_mix(uint64_t seed) noexcept nogil:
    """The pre-mixed form of a user seed that the hash functions take."""
    return fmix64(seed ^ 0x9E3779B97F4A7C15ULL)


cdef inline uint64_t hash5(uint64_t s, uint32_t a, uint32_t b, uint16_t pa, uint16_t pb, uint8_t proto) noexcept nogil:
    """Symmetric 5-tuple hash with pre-mixed seed s: endpoints (ip << 16 | port) in canonical order, two rounds."""
    cdef uint64_t x = (<uint64_t>a << 16) | pa
    cdef uint64_t y = (<uint64_t>b << 16) | pb
    cdef uint64_t lo = x if x < y else y
    cdef uint64_t hi = y if x < y else x
    return fmix64(fmix64(s ^ (lo | (<uint64_t>proto << 48))) ^ (hi | (<uint64_t>HASH_MODE5 << 56)))
