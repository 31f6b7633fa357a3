"""Fixed-capacity flow table shared by the GWLB (flows), the firewall (sessions) and the NAT gateway (translations).

Layout, chosen for the cache: a 1M-flow table does not fit in any cache, so each operation should cost as few
cache-line misses as possible.

* ``_buckets``: ``uint64[n_buckets]`` (power of two, linear probing in Robin Hood order). A bucket is 0
  (empty) or ``(slot + 1) << 32 | fp`` where ``fp`` is the low 32 bits of the key hash. The home bucket is
  ``fp & mask``, so Robin Hood distances and backward-shift deletion need no access to the entries, and the
  32 - log2(n_buckets) spare bits of ``fp`` filter almost every probe that is not the key without touching its
  entry. Robin Hood order keeps probe sequences short even at load 0.9 (plain linear probing reached ~1000
  buckets at 0.9 with 1M keys) and ends unsuccessful searches early.
* ``_arr``: ``FLOW_DTYPE[capacity]``, one 64-byte entry (one cache line) per slot holding the key and the
  statistics, so a hit costs one bucket line and one entry line. Slots come from a LIFO free stack; buckets move
  during deletion, slots never do, so slot indices stay stable while the entry lives.

Probes are software-prefetched a few packets ahead (bucket, then entry), which turns the two dependent misses
per packet into overlapped ones.
"""
cimport cython
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

import numpy as np

from .heap import zeroed

# The hash and the probe are C, forced inline: they run once per key in every batched loop, and gcc (its unit-growth
# limit spent on Cython's own helpers) otherwise kept them as out-of-line calls in lookup_or_insert, a call and
# register spills per key. The batched loops below stay Cython over typed memoryviews.
cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define GWLB_FT_PREFETCH(p) __builtin_prefetch((const void *)(p), 0, 3)
    #define GWLB_FT_PREFETCH_W(p) __builtin_prefetch((const void *)(p), 1, 3)
    #define GWLB_FT_INLINE static inline __attribute__((always_inline))
    #else
    #define GWLB_FT_PREFETCH(p) ((void)0)
    #define GWLB_FT_PREFETCH_W(p) ((void)0)
    #define GWLB_FT_INLINE static inline
    #endif

    /* one 64-byte entry (one cache line) per slot: the key, then the statistics */
    typedef struct {
        uint32_t a_ip;
        uint32_t b_ip;
        uint16_t a_port;
        uint16_t b_port;
        uint8_t proto;
        uint8_t state;
        uint8_t live;
        uint8_t _pad;
        uint64_t tag;
        int64_t first_seen;
        int64_t last_seen;
        uint64_t packets;
        uint64_t bytes;
        int64_t timeout;
    } gwlb_ft_entry;

    /* MurmurHash3 finalizer: every input bit affects every output bit */
    GWLB_FT_INLINE uint64_t gwlb_ft_fmix64(uint64_t h) {
        h ^= h >> 33;
        h *= 0xff51afd7ed558ccdULL;
        h ^= h >> 33;
        h *= 0xc4ceb9fe1a85ec53ULL;
        h ^= h >> 33;
        return h;
    }

    GWLB_FT_INLINE uint64_t gwlb_ft_hash_key(uint64_t seed, uint32_t a_ip, uint32_t b_ip, uint16_t a_port,
                                             uint16_t b_port, uint8_t proto, uint64_t tag) {
        uint64_t k0 = ((uint64_t)a_ip << 32) | b_ip;
        uint64_t k1 = ((uint64_t)a_port << 48) | ((uint64_t)b_port << 32) | ((uint64_t)proto << 24);
        uint64_t h = gwlb_ft_fmix64(k0 ^ seed);
        h = gwlb_ft_fmix64(h ^ k1 ^ 0x9e3779b97f4a7c15ULL);
        return gwlb_ft_fmix64(h ^ tag);
    }

    /* Robin Hood search for the key with hash h. Returns its slot, or -1 with *pos = the bucket where it would be
       inserted (an empty bucket, or the first resident closer to its home than the key would be). *probe = the
       number of buckets read. A bucket is 0 (empty) or (slot + 1) << 32 | the low 32 bits of its key's hash, so
       (i - b) & mask is the resident's distance from home. */
    GWLB_FT_INLINE int64_t gwlb_ft_find(const uint64_t *buckets, const gwlb_ft_entry *entries, uint64_t mask,
                                        uint64_t h, uint32_t a_ip, uint32_t b_ip, uint16_t a_port, uint16_t b_port,
                                        uint8_t proto, uint64_t tag, uint64_t *pos, uint64_t *probe) {
        uint64_t fp = h & 0xFFFFFFFFULL;
        uint64_t i = h & mask;
        uint64_t d = 0;
        int64_t s = -1;
        for (;;) {
            uint64_t b = buckets[i];
            if (b == 0 || ((i - b) & mask) < d) {
                s = -1;
                break;
            }
            if ((b & 0xFFFFFFFFULL) == fp) {
                const gwlb_ft_entry *e;
                s = (int64_t)(b >> 32) - 1;
                e = &entries[s];
                if (e->a_ip == a_ip && e->b_ip == b_ip && e->a_port == a_port && e->b_port == b_port
                        && e->proto == proto && e->tag == tag)
                    break;
            }
            i = (i + 1) & mask;
            d++;
        }
        *pos = i;
        *probe = d + 1;
        return s;
    }

    /* Prefetch the entry of the key's home bucket if its fingerprint matches h (the bucket line was prefetched a
       few packets earlier): most hits sit in their home bucket, and reading further buckets was measured slower. */
    GWLB_FT_INLINE void gwlb_ft_prefetch_entry(const uint64_t *buckets, const gwlb_ft_entry *entries,
                                               uint64_t mask, uint64_t h, int write) {
        uint64_t b = buckets[h & mask];
        if (b != 0 && (b & 0xFFFFFFFFULL) == (h & 0xFFFFFFFFULL)) {
            if (write)
                GWLB_FT_PREFETCH_W(&entries[(b >> 32) - 1]);
            else
                GWLB_FT_PREFETCH(&entries[(b >> 32) - 1]);
        }
    }
    """
    void GWLB_FT_PREFETCH(const void* p) noexcept nogil
    # for write: a hit updates its entry, so fetch the line exclusive at once
    void GWLB_FT_PREFETCH_W(const void* p) noexcept nogil

    ctypedef struct Entry "gwlb_ft_entry":
        uint32_t a_ip
        uint32_t b_ip
        uint16_t a_port
        uint16_t b_port
        uint8_t proto
        uint8_t state
        uint8_t live
        uint8_t _pad
        uint64_t tag
        int64_t first_seen
        int64_t last_seen
        uint64_t packets
        uint64_t bytes
        int64_t timeout

    uint64_t _hash_key "gwlb_ft_hash_key"(uint64_t seed, uint32_t a_ip, uint32_t b_ip, uint16_t a_port,
                                          uint16_t b_port, uint8_t proto, uint64_t tag) noexcept nogil
    int64_t _find_key "gwlb_ft_find"(const uint64_t* buckets, const Entry* entries, uint64_t mask, uint64_t h,
                                     uint32_t a_ip, uint32_t b_ip, uint16_t a_port, uint16_t b_port, uint8_t proto,
                                     uint64_t tag, uint64_t* pos, uint64_t* probe) noexcept nogil
    void _prefetch_entry "gwlb_ft_prefetch_entry"(const uint64_t* buckets, const Entry* entries, uint64_t mask,
                                                  uint64_t h, bint write) noexcept nogil


FLOW_DTYPE = np.dtype({
    "names": ["a_ip", "b_ip", "a_port", "b_port", "proto", "state", "live", "tag",
              "first_seen", "last_seen", "packets", "bytes", "timeout"],
    "formats": ["<u4", "<u4", "<u2", "<u2", "u1", "u1", "u1", "<u8", "<i8", "<i8", "<u8", "<u8", "<i8"],
    "offsets": [0, 4, 8, 10, 12, 13, 14, 16, 24, 32, 40, 48, 56],
    "itemsize": 64,
})
if sizeof(Entry) != 64 or FLOW_DTYPE.itemsize != 64:
    raise ImportError("flowtable: Entry layout is not 64 bytes on this platform")

cdef enum:
    C_IS_EXISTING = 0
    C_IS_NEW = 1
    C_IS_RESTARTED = 2
    C_END_RESTARTED = 1
    C_END_EVICTED = 2

IS_EXISTING = C_IS_EXISTING
IS_NEW = C_IS_NEW
IS_RESTARTED = C_IS_RESTARTED
END_RESTARTED = C_END_RESTARTED
END_EVICTED = C_END_EVICTED
DEFAULT_TCP_TIMEOUT_NS = 350_000_000_000
DEFAULT_OTHER_TIMEOUT_NS = 120_000_000_000

cdef enum:
    PF_RING = 32      # ring of precomputed hashes (power of two, > PF_BUCKET)
    PF_BUCKET = 16    # hash + prefetch the bucket this many packets ahead
    PF_ENTRY = 8      # read the (prefetched) bucket and prefetch the entry this many packets ahead
    EMPTY = 0         # an empty bucket
    MAX_CAPACITY = 1 << 30
    MAX_BUCKETS = 1 << 31
    EVICT_WINDOW = 32  # buckets examined for an eviction victim when the probe sequence is shorter


# ----------------------------------------------------------------------------------------------- argument checks
cdef object _need(object arr, str name, object dtype, Py_ssize_t n, bint out):
    """Check one array argument; returns it. n < 0: any length."""
    if not isinstance(arr, np.ndarray):
        raise ValueError(f"{name}: expected a numpy array of {np.dtype(dtype)}, got {type(arr).__name__}")
    if arr.dtype != dtype:
        raise ValueError(f"{name}: expected dtype {np.dtype(dtype)}, got {arr.dtype} (shape {arr.shape})")
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {arr.shape}")
    if n >= 0 and arr.shape[0] != n:
        raise ValueError(f"{name}: expected length {n}, got shape {arr.shape}")
    if not arr.flags.c_contiguous:
        raise ValueError(f"{name}: must be C-contiguous (shape {arr.shape}, strides {arr.strides})")
    if out and not arr.flags.writeable:
        raise ValueError(f"{name}: output array is read-only")
    return arr


cdef Py_ssize_t _length(object arr, str name) except -1:
    if not isinstance(arr, np.ndarray) or arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D numpy array, got {type(arr).__name__} "
                         f"{getattr(arr, 'shape', '')}")
    return arr.shape[0]


def canonical_5tuple(src_ip, dst_ip, sport, dport, out_a_ip, out_b_ip, out_a_port, out_b_port, out_reversed):
    """Order the two endpoints of each packet so that a flow and its reply give the same key.

    Parameters
    ----------
    src_ip, dst_ip : const uint32[::1], shape (n,)
    sport, dport : const uint16[::1], shape (n,)
    out_a_ip, out_b_ip : uint32[::1], shape (n,)
    out_a_port, out_b_port : uint16[::1], shape (n,)
    out_reversed : uint8[::1], shape (n,)

    Returns
    -------
    int
        n.

    Notes
    -----
    Endpoint a is the smaller of (src_ip, sport) and (dst_ip, dport) compared as (ip, port) pairs, b the other;
    ``out_reversed[i]`` is 0 when the packet's source is endpoint a, 1 when it is endpoint b. Sets no status.
    Raises ValueError naming the argument on a wrong dtype, length or layout.
    """
    cdef Py_ssize_t n = _length(src_ip, "src_ip")
    cdef const uint32_t[::1] s_ip = _need(src_ip, "src_ip", np.uint32, n, False)
    cdef const uint32_t[::1] d_ip = _need(dst_ip, "dst_ip", np.uint32, n, False)
    cdef const uint16_t[::1] sp = _need(sport, "sport", np.uint16, n, False)
    cdef const uint16_t[::1] dp = _need(dport, "dport", np.uint16, n, False)
    cdef uint32_t[::1] oa = _need(out_a_ip, "out_a_ip", np.uint32, n, True)
    cdef uint32_t[::1] ob = _need(out_b_ip, "out_b_ip", np.uint32, n, True)
    cdef uint16_t[::1] oap = _need(out_a_port, "out_a_port", np.uint16, n, True)
    cdef uint16_t[::1] obp = _need(out_b_port, "out_b_port", np.uint16, n, True)
    cdef uint8_t[::1] orev = _need(out_reversed, "out_reversed", np.uint8, n, True)
    cdef Py_ssize_t i
    cdef uint32_t si, di
    cdef uint16_t spi, dpi
    with nogil:
        for i in range(n):
            si = s_ip[i]
            di = d_ip[i]
            spi = sp[i]
            dpi = dp[i]
            if si < di or (si == di and spi <= dpi):
                oa[i] = si
                ob[i] = di
                oap[i] = spi
                obp[i] = dpi
                orev[i] = 0
            else:
                oa[i] = di
                ob[i] = si
                oap[i] = dpi
                obp[i] = spi
                orev[i] = 1
    return n


# ----------------------------------------------------------------------------------------------- the table
@cython.final  # cdef methods called directly (and inlined), not through the vtable
cdef class FlowTable:
    """Open-addressing hash table (linear probing in Robin Hood order, backward-shift deletion) over a pool of
    ``capacity`` slots. Not thread-safe (the batched methods release the GIL).

    Parameters
    ----------
    capacity : int
        Maximum number of live entries (1 .. 2**30). Inserts beyond it are refused (slot -1, counted) unless
        ``evict="oldest-idle"`` finds an idle-expired entry in the key's probe sequence to evict.
    max_load : float
        Upper bound on bucket occupancy in (0, 1]; the bucket count is the smallest power of two
        >= capacity / max_load.
    tcp_timeout_ns, other_timeout_ns : int
        Idle timeouts (ns) for proto 6 and for every other protocol.
    evict : {"none", "oldest-idle"}
        Policy when an insert finds the table full.
    seed : int
        Seed of the key hash.

    Notes
    -----
    See the module stub (flowtable.pyi) for the full contract of every method.
    """

    cdef uint64_t* _buckets
    cdef object _bucket_arr  # owns _buckets' pages
    cdef int32_t* _free
    cdef Entry* _e
    cdef object _arr
    cdef int64_t _cap
    cdef uint64_t _nb
    cdef uint64_t _mask
    cdef int64_t _nfree
    cdef int64_t _fresh  # slots [_fresh, _cap) were never handed out (live 0, not on the free stack)
    cdef uint64_t _seed
    cdef double _max_load
    cdef bint _evict
    cdef int64_t _tcp_to
    cdef int64_t _oth_to
    cdef int64_t _cursor
    # counters
    cdef int64_t _live
    cdef int64_t _inserted
    cdef int64_t _refused
    cdef int64_t _expired
    cdef int64_t _restarted
    cdef int64_t _deleted
    cdef int64_t _evicted
    cdef int64_t _drained
    cdef int64_t _max_probe
    # sessions ended inside lookup_or_insert (restart / eviction), until take_ended()
    cdef object _ended
    cdef object _ended_slots
    cdef object _ended_reason
    cdef int64_t _n_ended
    # scratch of the amortized expiry scan (kept: a fresh one per call, megabytes for large batches, fragmented the
    # allocator's heap as a capture went on)
    cdef object _scan_recs
    cdef object _scan_slots

    def __cinit__(self):
        self._buckets = NULL
        self._free = NULL

    def __init__(self, capacity, *, max_load=0.9, tcp_timeout_ns=DEFAULT_TCP_TIMEOUT_NS,
                 other_timeout_ns=DEFAULT_OTHER_TIMEOUT_NS, evict="none", seed=0):
        cdef int64_t cap = int(capacity)
        cdef double ml = float(max_load)
        cdef uint64_t nb = 1
        cdef uint8_t[::1] raw
        cdef uint64_t[::1] bk
        if self._buckets != NULL:
            raise RuntimeError("FlowTable.__init__ called twice")
        if cap < 1 or cap > MAX_CAPACITY:
            raise ValueError(f"capacity: must be in 1 .. {MAX_CAPACITY}, got {capacity}")
        if not (0.0 < ml <= 1.0):
            raise ValueError(f"max_load: must be in (0, 1], got {max_load}")
        if evict not in ("none", "oldest-idle"):
            raise ValueError(f"evict: must be 'none' or 'oldest-idle', got {evict!r}")
        # strictly more buckets than entries: every probe sequence ends at an empty bucket
        while <double>nb * ml < <double>cap or nb <= <uint64_t>cap:
            nb <<= 1
        if nb > MAX_BUCKETS:  # the home bucket is taken from the 32 hash bits kept in the bucket value
            raise ValueError(f"capacity / max_load: needs {nb} buckets, more than {MAX_BUCKETS}")
        self._cap = cap
        self._nb = nb
        self._mask = nb - 1
        self._max_load = ml
        self._evict = evict == "oldest-idle"
        self._seed = <uint64_t>(int(seed) & 0xFFFFFFFFFFFFFFFF)
        self.tcp_timeout_ns = tcp_timeout_ns
        self.other_timeout_ns = other_timeout_ns
        # zeroed pages of their own, which the kernel maps only when touched: a large table costs nothing until
        # it fills (start-up of a one-packet run), hence also the lazy free stack (_fresh); page-aligned, so an
        # entry is exactly one cache line
        self._bucket_arr = zeroed(nb, np.uint64, huge=True)
        bk = self._bucket_arr
        self._buckets = &bk[0]
        self._free = <int32_t*>malloc(cap * sizeof(int32_t))
        if self._free == NULL:
            raise MemoryError(f"FlowTable: cannot allocate {cap} slots")
        self._arr = zeroed(cap * 64, np.uint8).view(FLOW_DTYPE)
        raw = self._arr.view(np.uint8)
        self._e = <Entry*>&raw[0]
        self._ended = np.zeros(0, dtype=FLOW_DTYPE)
        self._ended_slots = np.zeros(0, dtype=np.int64)
        self._ended_reason = np.zeros(0, dtype=np.uint8)
        self._n_ended = 0
        self._scan_recs = np.zeros(0, dtype=FLOW_DTYPE)
        self._scan_slots = np.zeros(0, dtype=np.int64)
        self._nfree = self._fresh = 0
        self._live = 0
        self._cursor = 0

    def __dealloc__(self):
        free(self._free)

    cdef void _reset(self) noexcept:
        cdef int64_t k
        memset(self._buckets, 0, self._nb * sizeof(uint64_t))
        # slots are handed out from the free stack (top at _free[_nfree - 1]), then in order from _fresh:
        # slot 0 first
        for k in range(self._fresh):
            self._e[k].live = 0
        self._nfree = self._fresh = 0
        self._live = 0
        self._cursor = 0

    # ------------------------------------------------------------------------------------------- properties
    @property
    def capacity(self):
        return self._cap

    @property
    def n_buckets(self):
        return self._nb

    @property
    def max_load(self):
        return self._max_load

    @property
    def evict(self):
        return "oldest-idle" if self._evict else "none"

    @property
    def tcp_timeout_ns(self):
        return self._tcp_to

    @tcp_timeout_ns.setter
    def tcp_timeout_ns(self, value):
        if int(value) < 0:
            raise ValueError(f"tcp_timeout_ns: must be >= 0, got {value}")
        self._tcp_to = int(value)

    @property
    def other_timeout_ns(self):
        return self._oth_to

    @other_timeout_ns.setter
    def other_timeout_ns(self, value):
        if int(value) < 0:
            raise ValueError(f"other_timeout_ns: must be >= 0, got {value}")
        self._oth_to = int(value)

    def __len__(self):
        return self._live

    def __repr__(self):
        return (f"FlowTable(capacity={self._cap}, n_buckets={self._nb}, live={self._live}, "
                f"evict={self.evict!r})")

    cdef object _field(self, str name, bint writable):
        v = self._arr[name]
        v.flags.writeable = writable
        return v

    @property
    def entries(self):
        v = self._arr.view()
        v.flags.writeable = False
        return v

    @property
    def a_ip(self):
        return self._field("a_ip", False)

    @property
    def b_ip(self):
        return self._field("b_ip", False)

    @property
    def a_port(self):
        return self._field("a_port", False)

    @property
    def b_port(self):
        return self._field("b_port", False)

    @property
    def proto(self):
        return self._field("proto", False)

    @property
    def tag(self):
        return self._field("tag", False)

    @property
    def live(self):
        return self._field("live", False)

    @property
    def first_seen(self):
        return self._field("first_seen", False)

    @property
    def last_seen(self):
        return self._field("last_seen", False)

    @property
    def packets(self):
        return self._field("packets", False)

    @property
    def bytes(self):
        return self._field("bytes", False)

    @property
    def state(self):
        return self._field("state", True)

    @property
    def timeout(self):
        return self._field("timeout", True)

    def stats(self):
        """Counters: live, inserted, refused, expired, restarted, deleted, evicted, drained, max_probe."""
        return {
            "live": self._live,
            "inserted": self._inserted,
            "refused": self._refused,
            "expired": self._expired,
            "restarted": self._restarted,
            "deleted": self._deleted,
            "evicted": self._evicted,
            "drained": self._drained,
            "max_probe": self._max_probe,
        }

    # ------------------------------------------------------------------------------------------- core helpers
    cdef inline bint _is_expired(self, const Entry* e, int64_t now) noexcept nogil:
        cdef int64_t to = e.timeout
        if to < 0:
            to = self._tcp_to if e.proto == 6 else self._oth_to
        return now - e.last_seen >= to

    cdef inline uint64_t _slot_hash(self, int64_t s) noexcept nogil:
        cdef const Entry* e = &self._e[s]
        return _hash_key(self._seed, e.a_ip, e.b_ip, e.a_port, e.b_port, e.proto, e.tag)

    cdef inline uint64_t _bucket_of(self, int64_t s) noexcept nogil:
        """Bucket index holding live slot s (it is always present)."""
        cdef uint64_t i = self._slot_hash(s) & self._mask
        cdef uint64_t want = <uint64_t>(s + 1)
        while (self._buckets[i] >> 32) != want:
            i = (i + 1) & self._mask
        return i

    cdef inline void _unlink(self, uint64_t hole) noexcept nogil:
        """Backward-shift deletion of bucket ``hole``: the following entries that are not in their home bucket move
        back by one (Robin Hood order is kept; no tombstones)."""
        cdef uint64_t mask = self._mask
        cdef uint64_t i = hole
        cdef uint64_t j, b
        while True:
            j = (i + 1) & mask
            b = self._buckets[j]
            if b == EMPTY or ((j - b) & mask) == 0:
                break
            self._buckets[i] = b
            i = j
        self._buckets[i] = EMPTY

    cdef inline void _place(self, uint64_t pos, uint64_t carry) noexcept nogil:
        """Robin Hood insert of bucket value ``carry`` at ``pos`` (where its search ended): a resident closer to
        its home than the carried entry gives up its bucket and is carried on."""
        cdef uint64_t mask = self._mask
        cdef uint64_t i = pos
        cdef uint64_t b
        while True:
            b = self._buckets[i]
            if b == EMPTY:
                self._buckets[i] = carry
                return
            if ((i - b) & mask) < ((i - carry) & mask):
                self._buckets[i] = carry
                carry = b
            i = (i + 1) & mask

    cdef inline void _free_slot(self, int64_t s, uint64_t bucket) noexcept nogil:
        self._unlink(bucket)
        self._e[s].live = 0
        self._free[self._nfree] = <int32_t>s
        self._nfree += 1
        self._live -= 1

    cdef inline int64_t _find(self, uint64_t h, uint32_t a_ip, uint32_t b_ip, uint16_t a_port, uint16_t b_port,
                              uint8_t proto, uint64_t tag, uint64_t* pos) noexcept nogil:
        """Slot of the key, or -1 with *pos = the bucket where the key would be inserted (an empty bucket, or the
        first resident closer to its home than the key would be: Robin Hood order ends the search there). Counts the
        probe length in max_probe. The batched loops call _find_key themselves and keep the maximum in a local."""
        cdef uint64_t probe
        cdef int64_t s = _find_key(self._buckets, self._e, self._mask, h, a_ip, b_ip, a_port, b_port, proto, tag,
                                   pos, &probe)
        if <int64_t>probe > self._max_probe:
            self._max_probe = <int64_t>probe
        return s

    cdef inline int64_t _victim(self, uint64_t h, uint64_t end, int64_t now, uint64_t* vpos) noexcept nogil:
        """Idle-expired slot with the oldest last_seen among the buckets from the key's home to ``end`` (its probe
        sequence) or, if that is shorter, the EVICT_WINDOW buckets from home; -1 if none."""
        cdef uint64_t mask = self._mask
        cdef uint64_t i = h & mask
        cdef uint64_t span = (end - i) & mask
        cdef uint64_t b
        cdef int64_t best = -1
        cdef int64_t s
        cdef const Entry* e
        if span < EVICT_WINDOW:
            span = EVICT_WINDOW
        if span > self._nb:
            span = self._nb
        for _ in range(span):
            b = self._buckets[i]
            if b != EMPTY:
                s = <int64_t>(b >> 32) - 1
                e = &self._e[s]
                if self._is_expired(e, now) and (best < 0 or e.last_seen < self._e[best].last_seen):
                    best = s
                    vpos[0] = i
            i = (i + 1) & mask
        return best

    cdef Entry* _reserve_ended(self, Py_ssize_t n) except NULL:
        """Make room for n more ended records; returns the first free record (GIL held)."""
        cdef int64_t need = self._n_ended + n
        cdef uint8_t[::1] raw
        if self._ended.shape[0] < need or self._ended.shape[0] == 0:
            size = max(need, 2 * self._ended.shape[0], 16)
            grown = np.zeros(size, dtype=FLOW_DTYPE)
            grown[:self._n_ended] = self._ended[:self._n_ended]
            slots = np.zeros(size, dtype=np.int64)
            slots[:self._n_ended] = self._ended_slots[:self._n_ended]
            reason = np.zeros(size, dtype=np.uint8)
            reason[:self._n_ended] = self._ended_reason[:self._n_ended]
            self._ended, self._ended_slots, self._ended_reason = grown, slots, reason
        raw = self._ended.view(np.uint8)
        return <Entry*>&raw[0]

    # ------------------------------------------------------------------------------------------- batched ops
    def lookup_or_insert(self, a_ip, b_ip, a_port, b_port, proto, tag, ts_ns, nbytes, out_slot, out_is_new,
                         bint insert=True):
        """Find or insert each key in batch order and account the packet to it.

        Parameters
        ----------
        a_ip, b_ip : const uint32[::1], shape (n,)
        a_port, b_port : const uint16[::1], shape (n,)
        proto : const uint8[::1], shape (n,)
        tag : const uint64[::1], shape (n,), or None for 0
        ts_ns : const int64[::1], shape (n,)
        nbytes : const uint32[::1], shape (n,)
        out_slot : int64[::1], shape (n,)
            Slot of the packet's entry, -1 when the insert was refused (table full).
        out_is_new : uint8[::1], shape (n,)
            IS_EXISTING (0), IS_NEW (1) or IS_RESTARTED (2); 0 for refused packets.
        insert : bool
            False: a key that is not in the table is left out (slot -1, IS_EXISTING, not counted as refused);
            the keys found are accounted as with True (a lookup that counts, e.g. replies that may only join an
            existing entry).

        Returns
        -------
        int
            Number of refused packets in this call.

        Notes
        -----
        Packet i sees the inserts of packets j < i. A hit sets last_seen = max(last_seen, ts) and adds 1 packet and
        nbytes bytes. A hit on an entry idle-expired at ts ends that session (record kept for take_ended with
        END_RESTARTED; counted in expired and restarted) and restarts the slot as a new one. A miss inserts
        (first_seen = last_seen = ts, packets 1, bytes nbytes, state 0, timeout -1); a full table refuses (counted
        in refused) unless evict="oldest-idle" evicts the idle-expired entry with the oldest last_seen in the
        key's probe sequence (END_EVICTED; counted in evicted). Sets no packet status: the stage maps slot -1 to
        its own code (e.g. ST_FLOW_TABLE_FULL).
        """
        cdef Py_ssize_t n = _length(a_ip, "a_ip")
        cdef const uint32_t[::1] va = _need(a_ip, "a_ip", np.uint32, n, False)
        cdef const uint32_t[::1] vb = _need(b_ip, "b_ip", np.uint32, n, False)
        cdef const uint16_t[::1] vap = _need(a_port, "a_port", np.uint16, n, False)
        cdef const uint16_t[::1] vbp = _need(b_port, "b_port", np.uint16, n, False)
        cdef const uint8_t[::1] vpr = _need(proto, "proto", np.uint8, n, False)
        cdef const uint64_t[::1] vt
        cdef const int64_t[::1] vts = _need(ts_ns, "ts_ns", np.int64, n, False)
        cdef const uint32_t[::1] vnb = _need(nbytes, "nbytes", np.uint32, n, False)
        cdef int64_t[::1] os = _need(out_slot, "out_slot", np.int64, n, True)
        cdef uint8_t[::1] on = _need(out_is_new, "out_is_new", np.uint8, n, True)
        cdef const uint64_t* tp = NULL
        if tag is not None:
            vt = _need(tag, "tag", np.uint64, n, False)
            if n > 0:
                tp = &vt[0]
        if n == 0:
            return 0
        cdef Entry* ended = self._reserve_ended(n)
        cdef int64_t* ended_slots
        cdef uint8_t* ended_reason
        cdef int64_t[::1] es_mv = self._ended_slots
        cdef uint8_t[::1] er_mv = self._ended_reason
        ended_slots = &es_mv[0]
        ended_reason = &er_mv[0]

        # the table's geometry and timeouts in locals: the loop's stores into entries and outputs could otherwise
        # alias self's fields, and every packet would reload them
        cdef const uint64_t* buckets = self._buckets
        cdef Entry* entries = self._e
        cdef uint64_t mask = self._mask, seed = self._seed
        cdef int64_t tcp_to = self._tcp_to, oth_to = self._oth_to
        cdef uint64_t zero_tag = 0
        cdef size_t tmask = <size_t>-1  # tp[j & tmask]: the packet's tag, or tp = &zero_tag for every packet
        if tp == NULL:
            tp = &zero_tag
            tmask = 0
        cdef uint64_t hring[PF_RING]
        cdef Py_ssize_t i, j
        cdef uint64_t h, pos, vpos, probe, max_probe = <uint64_t>self._max_probe
        cdef int64_t s, v, ts, to
        cdef int64_t refused = 0
        cdef uint64_t t
        cdef Entry* e
        with nogil:
            for j in range(min(<Py_ssize_t>PF_BUCKET, n)):
                h = _hash_key(seed, va[j], vb[j], vap[j], vbp[j], vpr[j], tp[<size_t>j & tmask])
                hring[j & (PF_RING - 1)] = h
                GWLB_FT_PREFETCH(&buckets[h & mask])
            for i in range(n):
                j = i + PF_BUCKET
                if j < n:
                    h = _hash_key(seed, va[j], vb[j], vap[j], vbp[j], vpr[j], tp[<size_t>j & tmask])
                    hring[j & (PF_RING - 1)] = h
                    GWLB_FT_PREFETCH(&buckets[h & mask])
                j = i + PF_ENTRY
                if j < n:
                    _prefetch_entry(buckets, entries, mask, hring[j & (PF_RING - 1)], True)

                h = hring[i & (PF_RING - 1)]
                t = tp[<size_t>i & tmask]
                ts = vts[i]
                s = _find_key(buckets, entries, mask, h, va[i], vb[i], vap[i], vbp[i], vpr[i], t, &pos, &probe)
                if probe > max_probe:
                    max_probe = probe
                if s >= 0:
                    e = &entries[s]
                    to = e.timeout  # _is_expired, with the timeouts in locals
                    if to < 0:
                        to = tcp_to if e.proto == 6 else oth_to
                    if ts - e.last_seen >= to:
                        memcpy(&ended[self._n_ended], e, sizeof(Entry))
                        ended_slots[self._n_ended] = s
                        ended_reason[self._n_ended] = C_END_RESTARTED
                        self._n_ended += 1
                        self._expired += 1
                        self._restarted += 1
                        self._inserted += 1
                        e.first_seen = ts
                        e.last_seen = ts
                        e.packets = 1
                        e.bytes = vnb[i]
                        e.state = 0
                        e.timeout = -1
                        on[i] = C_IS_RESTARTED
                    else:
                        if ts > e.last_seen:
                            e.last_seen = ts
                        e.packets += 1
                        e.bytes += vnb[i]
                        on[i] = C_IS_EXISTING
                    os[i] = s
                    continue
                if not insert:
                    os[i] = -1
                    on[i] = C_IS_EXISTING
                    continue
                if self._nfree == 0 and self._fresh == self._cap:
                    v = -1
                    if self._evict:
                        v = self._victim(h, pos, ts, &vpos)
                    if v < 0:
                        refused += 1
                        os[i] = -1
                        on[i] = C_IS_EXISTING
                        continue
                    memcpy(&ended[self._n_ended], &self._e[v], sizeof(Entry))
                    ended_slots[self._n_ended] = v
                    ended_reason[self._n_ended] = C_END_EVICTED
                    self._n_ended += 1
                    self._evicted += 1
                    self._free_slot(v, vpos)
                    # the shift moved entries: find the key's insert position again
                    self._find(h, va[i], vb[i], vap[i], vbp[i], vpr[i], t, &pos)
                if self._nfree:
                    self._nfree -= 1
                    s = self._free[self._nfree]
                else:
                    s = self._fresh
                    self._fresh += 1
                e = &self._e[s]
                e.a_ip = va[i]
                e.b_ip = vb[i]
                e.a_port = vap[i]
                e.b_port = vbp[i]
                e.proto = vpr[i]
                e.state = 0
                e.live = 1
                e._pad = 0
                e.tag = t
                e.first_seen = ts
                e.last_seen = ts
                e.packets = 1
                e.bytes = vnb[i]
                e.timeout = -1
                self._place(pos, (<uint64_t>(s + 1) << 32) | (h & 0xFFFFFFFFULL))
                self._live += 1
                self._inserted += 1
                os[i] = s
                on[i] = C_IS_NEW
        if <int64_t>max_probe > self._max_probe:
            self._max_probe = <int64_t>max_probe
        self._refused += refused
        return refused

    def lookup(self, a_ip, b_ip, a_port, b_port, proto, tag, out_slot):
        """Find each key without inserting or touching its statistics.

        Parameters
        ----------
        a_ip, b_ip : const uint32[::1], shape (n,)
        a_port, b_port : const uint16[::1], shape (n,)
        proto : const uint8[::1], shape (n,)
        tag : const uint64[::1], shape (n,), or None for 0
        out_slot : int64[::1], shape (n,)
            Slot of the key, -1 when absent.

        Returns
        -------
        int
            Number of keys found.

        Notes
        -----
        An entry idle-expired but not yet reaped by expire() is still found. Sets no status.
        """
        cdef Py_ssize_t n = _length(a_ip, "a_ip")
        cdef const uint32_t[::1] va = _need(a_ip, "a_ip", np.uint32, n, False)
        cdef const uint32_t[::1] vb = _need(b_ip, "b_ip", np.uint32, n, False)
        cdef const uint16_t[::1] vap = _need(a_port, "a_port", np.uint16, n, False)
        cdef const uint16_t[::1] vbp = _need(b_port, "b_port", np.uint16, n, False)
        cdef const uint8_t[::1] vpr = _need(proto, "proto", np.uint8, n, False)
        cdef const uint64_t[::1] vt
        cdef int64_t[::1] os = _need(out_slot, "out_slot", np.int64, n, True)
        cdef const uint64_t* tp = NULL
        if tag is not None:
            vt = _need(tag, "tag", np.uint64, n, False)
            if n > 0:
                tp = &vt[0]
        cdef const uint64_t* buckets = self._buckets
        cdef const Entry* entries = self._e
        cdef uint64_t mask = self._mask, seed = self._seed
        cdef uint64_t zero_tag = 0
        cdef size_t tmask = <size_t>-1  # as in lookup_or_insert
        if tp == NULL:
            tp = &zero_tag
            tmask = 0
        cdef uint64_t hring[PF_RING]
        cdef Py_ssize_t i, j
        cdef uint64_t h, pos, probe, max_probe = <uint64_t>self._max_probe
        cdef int64_t s, found = 0
        with nogil:
            for j in range(min(<Py_ssize_t>PF_BUCKET, n)):
                h = _hash_key(seed, va[j], vb[j], vap[j], vbp[j], vpr[j], tp[<size_t>j & tmask])
                hring[j & (PF_RING - 1)] = h
                GWLB_FT_PREFETCH(&buckets[h & mask])
            for i in range(n):
                j = i + PF_BUCKET
                if j < n:
                    h = _hash_key(seed, va[j], vb[j], vap[j], vbp[j], vpr[j], tp[<size_t>j & tmask])
                    hring[j & (PF_RING - 1)] = h
                    GWLB_FT_PREFETCH(&buckets[h & mask])
                j = i + PF_ENTRY
                if j < n:
                    _prefetch_entry(buckets, entries, mask, hring[j & (PF_RING - 1)], False)
                s = _find_key(buckets, entries, mask, hring[i & (PF_RING - 1)], va[i], vb[i], vap[i], vbp[i], vpr[i],
                              tp[<size_t>i & tmask], &pos, &probe)
                if probe > max_probe:
                    max_probe = probe
                os[i] = s
                found += s >= 0
        if <int64_t>max_probe > self._max_probe:
            self._max_probe = <int64_t>max_probe
        return found

    cdef object _slots_arg(self, object slots, str name):
        _need(slots, name, np.int64, -1, False)
        if slots.shape[0] and (slots.min() < -1 or slots.max() >= self._cap):
            raise ValueError(f"{name}: slot indices must be -1 or in [0, {self._cap}), "
                             f"got range [{slots.min()}, {slots.max()}]")
        return slots

    def delete(self, slots):
        """Free the given slots (const int64[::1]); -1 and slots not live are ignored.

        Returns the number of entries deleted (counted in ``deleted``). ValueError for slots outside
        [-1, capacity).
        """
        cdef const int64_t[::1] vs = self._slots_arg(slots, "slots")
        cdef Py_ssize_t i, n = vs.shape[0]
        cdef int64_t s, done = 0
        with nogil:
            for i in range(n):
                s = vs[i]
                if s < 0 or not self._e[s].live:
                    continue
                self._free_slot(s, self._bucket_of(s))
                done += 1
        self._deleted += done
        return done

    cdef tuple _expire_range(self, int64_t now_ns, int64_t start, int64_t count, bint keep_scratch=False):
        cdef int64_t size = min(count, self._cap)
        if keep_scratch:
            if self._scan_slots.shape[0] < size:
                self._scan_recs = np.empty(size, dtype=FLOW_DTYPE)
                self._scan_slots = np.empty(size, dtype=np.int64)
            recs = self._scan_recs[:size]
            slots = self._scan_slots[:size]
        else:
            recs = np.empty(size, dtype=FLOW_DTYPE)
            slots = np.empty(size, dtype=np.int64)
        if size == 0:
            return slots, recs
        cdef uint8_t[::1] raw = recs.view(np.uint8)
        cdef Entry* out = <Entry*>&raw[0]
        cdef int64_t[::1] vs = slots
        cdef int64_t k = 0, s = start, left = size, run, i
        with nogil:
            while left > 0:
                if s >= self._fresh:
                    # slots from _fresh on were never handed out: passed over without reading their pages in
                    run = min(left, self._cap - s)
                else:
                    run = min(left, self._fresh - s)
                    for i in range(s, s + run):
                        if self._e[i].live and self._is_expired(&self._e[i], now_ns):
                            memcpy(&out[k], &self._e[i], sizeof(Entry))
                            vs[k] = i
                            k += 1
                            self._free_slot(i, self._bucket_of(i))
                s += run
                left -= run
                if s == self._cap:
                    s = 0
        self._expired += k
        return slots[:k].copy(), recs[:k].copy()

    def expire(self, now_ns, max_scan):
        """Amortized idle expiry: scan up to ``max_scan`` slots from a persistent cursor (wrapping around).

        Parameters
        ----------
        now_ns : int
            Current time (packet timestamps, ns).
        max_scan : int
            Number of slots to examine (>= 0; at most capacity are examined).

        Returns
        -------
        (slots int64[k], records FLOW_DTYPE[k])
            The expired entries, copied before their slots were freed, in scan order (counted in ``expired``).
        """
        if int(max_scan) < 0:
            raise ValueError(f"max_scan: must be >= 0, got {max_scan}")
        cdef int64_t count = min(int(max_scan), self._cap)
        cdef int64_t start = self._cursor
        out = self._expire_range(int(now_ns), start, count, True)
        self._cursor = (start + count) % self._cap
        return out

    def expire_all(self, now_ns):
        """Expire over every slot (cursor unchanged). Returns (slots int64[k], records FLOW_DTYPE[k])."""
        return self._expire_range(int(now_ns), 0, self._cap)

    def live_slots(self):
        """int64 array of the live slots, ascending."""
        # slots from _fresh on were never handed out: their pages are not read
        return np.flatnonzero(self._arr["live"][:self._fresh]).astype(np.int64)

    def records(self, slots):
        """Copy of the entries at ``slots`` (const int64[::1], each in [0, capacity)) as FLOW_DTYPE records."""
        _need(slots, "slots", np.int64, -1, False)
        if slots.shape[0] and (slots.min() < 0 or slots.max() >= self._cap):
            raise ValueError(f"slots: must be in [0, {self._cap}), got range [{slots.min()}, {slots.max()}]")
        return self._arr[slots]

    def drain(self):
        """Return every live entry (slots ascending, records FLOW_DTYPE) and empty the table (counted in drained)."""
        slots = self.live_slots()
        recs = self._arr[slots]
        self._drained += slots.shape[0]
        self._reset()
        return slots, recs

    def clear(self):
        """Remove every entry without counting (statistics kept; the expire cursor returns to 0)."""
        self._reset()

    def take_ended(self):
        """Sessions ended inside lookup_or_insert since the last call, in event order; clears the list.

        Returns (slots int64[k], records FLOW_DTYPE[k], reasons uint8[k]) with reasons END_RESTARTED or
        END_EVICTED.
        """
        k = self._n_ended
        out = (self._ended_slots[:k].copy(), self._ended[:k].copy(), self._ended_reason[:k].copy())
        self._n_ended = 0
        return out

    def set_timeout(self, slots, timeout_ns):
        """Per-slot idle timeout override in ns (int64 array or scalar; -1 = protocol default).

        slots: const int64[::1]; -1 and dead slots are ignored. Returns the number of slots set.
        """
        cdef const int64_t[::1] vs = self._slots_arg(slots, "slots")
        cdef Py_ssize_t i, n = vs.shape[0]
        cdef int64_t s, v = 0, done = 0
        cdef const int64_t[::1] vv
        cdef bint scalar = np.ndim(timeout_ns) == 0
        if scalar:
            if isinstance(timeout_ns, (bool, np.bool_)) or not isinstance(timeout_ns, (int, np.integer)):
                raise ValueError(f"timeout_ns: expected integers, got {type(timeout_ns).__name__}")
            v = timeout_ns
            if v < -1:
                raise ValueError(f"timeout_ns: must be >= -1, got {v}")
            vv = vs  # not read: every slot takes v
        else:
            arr = np.asarray(timeout_ns)
            if arr.dtype.kind not in "iu":
                raise ValueError(f"timeout_ns: expected integers, got dtype {arr.dtype}")
            arr = np.ascontiguousarray(np.broadcast_to(arr, (n,)), np.int64)
            if n and arr.min() < -1:
                raise ValueError(f"timeout_ns: must be >= -1, got {arr.min()}")
            vv = arr
        with nogil:
            for i in range(n):
                s = vs[i]
                if s < 0 or not self._e[s].live:
                    continue
                self._e[s].timeout = v if scalar else vv[i]
                done += 1
        return done

    def set_state(self, slots, state):
        """Set the per-slot ``state`` byte (uint8 array or scalar); -1 and dead slots ignored. Returns number set."""
        cdef const int64_t[::1] vs = self._slots_arg(slots, "slots")
        cdef Py_ssize_t i, n = vs.shape[0]
        cdef int64_t s, done = 0
        arr = np.asarray(state)
        if arr.dtype.kind not in "iu" or (arr.size and (arr.min() < 0 or arr.max() > 255)):
            raise ValueError(f"state: expected integers in 0..255, got dtype {arr.dtype}")
        cdef const uint8_t[::1] vv = np.ascontiguousarray(np.broadcast_to(arr, (n,)), np.uint8)
        with nogil:
            for i in range(n):
                s = vs[i]
                if s < 0 or not self._e[s].live:
                    continue
                self._e[s].state = vv[i]
                done += 1
        return done

    def add_counts(self, slots, first_seen, nbytes, ts_ns=None, out_counted=None):
        """Count packets that follow another packet's entry without being looked up (the later fragments of a
        datagram, which have no ports): row ``i`` adds 1 packet and ``nbytes[i]`` bytes to slot ``slots[i]`` if it
        is live and still holds the entry first seen at ``first_seen[i]``; -1, dead slots and slots reused since
        are ignored. With ``ts_ns`` (the packets' times) a row also keeps its entry alive as a packet found by
        lookup_or_insert does: it is counted only if the entry is not idle-expired at ``ts_ns[i]`` (a packet of
        the flow would end it there), and then moves last_seen to ``ts_ns[i]`` if later (never back); rows are
        applied in order, so each sees the last_seen of the rows before it. Without ``ts_ns`` nothing else
        changes. ``out_counted`` (uint8[n], optional) receives 1 for each row counted, 0 for the others. Returns
        the number of rows counted.

        slots: const int64[::1] (-1 or in [0, capacity)); first_seen: const int64[::1]; nbytes: const uint32[::1];
        ts_ns: const int64[::1] or None; out_counted: uint8[::1] or None.
        """
        cdef const int64_t[::1] vs = self._slots_arg(slots, "slots")
        cdef Py_ssize_t i, n = vs.shape[0]
        cdef const int64_t[::1] vf = _need(first_seen, "first_seen", np.int64, n, False)
        cdef const uint32_t[::1] vb = _need(nbytes, "nbytes", np.uint32, n, False)
        cdef bint timed = ts_ns is not None, marks = out_counted is not None
        cdef const int64_t[::1] vt = _need(ts_ns, "ts_ns", np.int64, n, False) if timed else np.zeros(1, np.int64)
        cdef uint8_t[::1] vo = (_need(out_counted, "out_counted", np.uint8, n, True) if marks
                                else np.zeros(1, np.uint8))
        cdef int64_t s, to, ts, done = 0
        cdef int64_t tcp_to = self._tcp_to, oth_to = self._oth_to
        cdef Entry* e
        with nogil:
            for i in range(n):
                if marks:
                    vo[i] = 0
                s = vs[i]
                if s < 0 or not self._e[s].live or self._e[s].first_seen != vf[i]:
                    continue
                e = &self._e[s]
                if timed:
                    ts = vt[i]
                    to = e.timeout  # _is_expired, with the timeouts in locals
                    if to < 0:
                        to = tcp_to if e.proto == 6 else oth_to
                    if ts - e.last_seen >= to:
                        continue
                    if ts > e.last_seen:
                        e.last_seen = ts
                e.packets += 1
                e.bytes += vb[i]
                if marks:
                    vo[i] = 1
                done += 1
        return done
