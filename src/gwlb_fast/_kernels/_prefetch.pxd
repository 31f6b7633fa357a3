# Software prefetch for kernels whose loop reads rows of large tables in an order the hardware cannot guess (one
# session's state, then another's): the row of a packet a few ahead is fetched while this one is worked on.
cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define GWLB_PREFETCH(p) __builtin_prefetch((const void *)(p), 0, 3)
    #define GWLB_PREFETCH_W(p) __builtin_prefetch((const void *)(p), 1, 3)
    #else
    #define GWLB_PREFETCH(p) ((void)0)
    #define GWLB_PREFETCH_W(p) ((void)0)
    #endif
    """
    void GWLB_PREFETCH(const void* p) noexcept nogil
    # for write: the row is updated, so fetch the line exclusive at once
    void GWLB_PREFETCH_W(const void* p) noexcept nogil
