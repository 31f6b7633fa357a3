# cython: language_level=3
"""First-match packet classification over rule boxes: a HyperSplit-style decision tree.

A rule set is a list of *boxes*, one per (source CIDR x destination CIDR x port range x ... ) combination of a rule,
in priority order (box k belongs to rule ``rule[k]``, non-decreasing).  A box spans seven dimensions, inclusive
``[lo, hi]`` per dimension:

====  ==========  ===========
dim   field       domain
====  ==========  ===========
0     src_ip      0..2^32-1
1     dst_ip      0..2^32-1
2     sport       0..65535
3     dport       0..65535
4     proto       0..255
5     zone_from   0..255
6     zone_to     0..255
====  ==========  ===========

Build (HyperSplit, Qi et al., INFOCOM 2009, with rule pruning): a node holds the boxes that intersect its region, in
priority order.  Every box after the first one that covers the whole region can never be the first match there and is
dropped.  A node with at most ``binth`` boxes (or no split that makes progress) becomes a leaf; otherwise it is cut in
two on the dimension and value that minimise ``2*max(nL, nR) + min(nL, nR)`` over the box end points (balance first,
then little replication).  The leaf scan returns the first box containing the point, so the answer is exactly the
linear first match.

Partitions (CutSplit, Li et al., INFOCOM 2018): the boxes may be split into groups (``group``), one tree each, so that
wildcard fields of one group never get cut by the narrow fields of another; fw-style sets otherwise replicate rules
into gigabytes.  Groups are visited in order of their best rule and a packet stops as soon as no later group can hold
an earlier rule; leaf scans stop at the first box whose rule cannot beat the answer found so far.  A leaf-entry budget
(``max_leaf_entries``) bounds memory in any case: past it, nodes stop splitting (larger leaves, same answers).

Lookup walks BLOCK packets through a tree level by level for the tree's depth (leaves step to themselves), so the walk
has no data-dependent branch and BLOCK independent loads are in flight.

Content dimensions (App-ID application, URL categories, ``service: application-default``) are not cut by the tree:
they are per-rule *constraints* checked in the leaf scan, only when the lookup is given an ``app`` or ``category``
column (otherwise every constraint counts as met, which is the provisional lookup of a session whose application is
not known yet).  A box whose rule has a constraint never shadows later boxes at build time, since it may fail the
constraint at lookup.  A rule with constraints (``rule_flags[r] != 0``) matches a packet when:

- ``F_APP``: the application is ``app_pending`` (not identified yet: possible match) or bit ``app`` of
  ``app_bits[r]`` is set;
- ``F_APPDEF`` (service application-default): the application is pending, or (protocol << 16 | destination port) is
  one of that application's default ports (``appdef_key[appdef_start[app]:appdef_start[app + 1]]``);
- ``F_CAT``: one of the packet's categories (a row of ``category``, -1 = none) has its bit set in ``cat_bits[r]``;
  with no category at all (no URL known) only while the application is pending.
"""
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, qsort, realloc
from libc.string cimport memcpy

cdef enum:
    NDIM = 7
    MAX_DEPTH = 128
    ZONE_UNK = 255
    BLOCK = 16

cdef uint32_t[NDIM] _DOMAIN_HI = [0xFFFFFFFF, 0xFFFFFFFF, 0xFFFF, 0xFFFF, 0xFF, 0xFF, 0xFF]

NDIMS = NDIM
F_APP = 1
F_APPDEF = 2
F_CAT = 4
DOMAIN_HI = (0xFFFFFFFF, 0xFFFFFFFF, 0xFFFF, 0xFFFF, 0xFF, 0xFF, 0xFF)
ZONE_UNKNOWN = 255


cdef struct Node:
    # Inner node: go to child + (point[dim] > split).  Leaf: split = 0xFFFFFFFF and child = itself, so stepping
    # a leaf stays there; its boxes are leaf[lstart : lstart + lcount].
    uint32_t split
    int32_t child
    int32_t lstart
    int32_t lcount
    int32_t dim


cdef struct Box:
    uint32_t lo[NDIM]
    uint32_t hi[NDIM]
    int32_t rule


cdef int _cmp_u32(const void* a, const void* b) noexcept nogil:
    cdef uint32_t x = (<const uint32_t*>a)[0]
    cdef uint32_t y = (<const uint32_t*>b)[0]
    return (x > y) - (x < y)


cdef inline Py_ssize_t _upper_bound(const uint32_t* a, Py_ssize_t n, uint32_t v) noexcept nogil:
    """Number of elements <= v in the sorted array a[0:n]."""
    cdef Py_ssize_t lo = 0, hi = n, mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if a[mid] <= v:
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef inline bint _contains(const Box* b, const uint32_t* pt) noexcept nogil:
    # Source and destination first: they reject most boxes in the leaves of real rule sets.
    return (b.lo[0] <= pt[0] and pt[0] <= b.hi[0] and b.lo[1] <= pt[1] and pt[1] <= b.hi[1]
            and b.lo[3] <= pt[3] and pt[3] <= b.hi[3] and b.lo[2] <= pt[2] and pt[2] <= b.hi[2]
            and b.lo[4] <= pt[4] and pt[4] <= b.hi[4] and b.lo[5] <= pt[5] and pt[5] <= b.hi[5]
            and b.lo[6] <= pt[6] and pt[6] <= b.hi[6])


cdef struct Ctx:
    # Per-rule content constraints (see the module docstring) and one packet's content values.
    const uint8_t* flags
    const uint64_t* app_bits
    const uint64_t* cat_bits
    const int32_t* appdef_start
    const uint32_t* appdef_key
    Py_ssize_t n_rules
    Py_ssize_t app_words
    Py_ssize_t cat_words
    Py_ssize_t n_apps
    uint32_t app_pending
    uint32_t app
    const int32_t* cats
    Py_ssize_t ncat


cdef inline bint _rule_ok(const Ctx* c, int32_t r, const uint32_t* pt) noexcept nogil:
    cdef uint8_t f
    cdef uint32_t a = c.app, key
    cdef bint pending = a == c.app_pending, known = False
    cdef Py_ssize_t k
    cdef int32_t v
    if r >= c.n_rules:
        return True
    f = c.flags[r]
    if f == 0:
        return True
    if f & 1 and not pending:
        if a >= <uint32_t>(c.app_words * 64) or not (c.app_bits[r * c.app_words + (a >> 6)] >> (a & 63)) & 1:
            return False
    if f & 2 and not pending:
        if a >= <uint32_t>c.n_apps:
            return False
        key = (pt[4] << 16) | pt[3]
        k = c.appdef_start[a]
        while k < c.appdef_start[a + 1] and c.appdef_key[k] != key:
            k += 1
        if k == c.appdef_start[a + 1]:
            return False
    if f & 4:
        for k in range(c.ncat):
            v = c.cats[k]
            if v < 0:
                continue
            known = True
            if v < c.cat_words * 64 and (c.cat_bits[r * c.cat_words + (v >> 6)] >> (v & 63)) & 1:
                return True
        return pending and not known
    return True


cdef inline int32_t _scan_leaf_ctx(const Node* nd, const Box* leaf, const uint32_t* pt, int32_t best,
                                   const Ctx* c) noexcept nogil:
    """_scan_leaf with the rules' content constraints checked."""
    cdef int32_t k = nd.lstart
    cdef int32_t end = nd.lstart + nd.lcount
    while k < end and leaf[k].rule < best:
        if _contains(&leaf[k], pt) and _rule_ok(c, leaf[k].rule, pt):
            return leaf[k].rule
        k += 1
    return best


cdef inline int32_t _scan_leaf(const Node* nd, const Box* leaf, const uint32_t* pt, int32_t best) noexcept nogil:
    """First rule < best among the leaf's boxes containing pt, else best."""
    cdef int32_t k = nd.lstart
    cdef int32_t end = nd.lstart + nd.lcount
    # Leaf boxes are in priority order: stop as soon as they cannot beat the answer of an earlier group.
    while k < end and leaf[k].rule < best:
        if _contains(&leaf[k], pt):
            return leaf[k].rule
        k += 1
    return best


cdef class ClassifierTree:
    """Compiled first-match classifier over priority-ordered boxes (see the module docstring).

    Parameters
    ----------
    lo, hi : uint32[nboxes, 7]
        Inclusive bounds per box and dimension (src, dst, sport, dport, proto, zone_from, zone_to); each within the
        dimension's domain and ``lo <= hi``.
    rule : int32[nboxes]
        Rule index of each box, non-decreasing (priority order), >= 0.
    group : int32[nboxes] or None
        Partition of the boxes (0..63), one tree per non-empty group; None puts every box in one tree.
    binth : int
        Leaf size threshold (boxes per leaf before a node is split), >= 1.
    max_leaf_entries : int
        Bound on the boxes stored in leaves (replication included); -1 means ``32 * nboxes + 4096``.
    rule_flags : uint8[n_rules] or None
        Content constraints of each rule (``F_APP | F_APPDEF | F_CAT``, see the module docstring); None: none.
    app_bits : uint64[n_rules, app_words] or None
        Bitmap of the application ids each ``F_APP`` rule accepts.
    cat_bits : uint64[n_rules, cat_words] or None
        Bitmap of the URL category ids each ``F_CAT`` rule accepts.
    appdef_start : int32[n_apps + 1] or None
        Application id -> slice of ``appdef_key`` holding its default ports.
    appdef_key : uint32[m] or None
        ``protocol << 16 | port`` of each application's default ports.
    app_pending : int
        The application id meaning "not identified yet".
    """

    cdef Node* nodes
    cdef Py_ssize_t n_nodes_, cap_nodes
    cdef Box* leaf
    cdef Py_ssize_t n_leaf_, cap_leaf
    cdef Box* boxes
    cdef Py_ssize_t nboxes
    cdef uint32_t* scratch_lo
    cdef uint32_t* scratch_hi
    cdef int32_t* roots
    cdef int32_t* group_min
    cdef int32_t* group_depth
    cdef Py_ssize_t ngroups
    cdef Py_ssize_t budget
    cdef int depth_
    cdef int cur_depth
    cdef int binth
    cdef bint over_budget_
    cdef uint8_t* rflags
    cdef uint64_t* app_bits
    cdef uint64_t* cat_bits
    cdef int32_t* appdef_start
    cdef uint32_t* appdef_key
    cdef Py_ssize_t n_rules, app_words, cat_words, n_apps
    cdef bint has_constraints
    cdef uint32_t app_pending_

    def __cinit__(self):
        self.nodes = NULL
        self.leaf = NULL
        self.boxes = NULL
        self.scratch_lo = NULL
        self.scratch_hi = NULL
        self.roots = NULL
        self.group_min = NULL
        self.group_depth = NULL
        self.n_nodes_ = self.cap_nodes = self.n_leaf_ = self.cap_leaf = self.nboxes = self.ngroups = 0
        self.depth_ = 0
        self.over_budget_ = False
        self.rflags = NULL
        self.app_bits = NULL
        self.cat_bits = NULL
        self.appdef_start = NULL
        self.appdef_key = NULL
        self.n_rules = self.app_words = self.cat_words = self.n_apps = 0
        self.has_constraints = False

    def __dealloc__(self):
        free(self.nodes)
        free(self.leaf)
        free(self.boxes)
        free(self.scratch_lo)
        free(self.scratch_hi)
        free(self.roots)
        free(self.group_min)
        free(self.group_depth)
        free(self.rflags)
        free(self.app_bits)
        free(self.cat_bits)
        free(self.appdef_start)
        free(self.appdef_key)

    def __init__(self, const uint32_t[:, ::1] lo not None, const uint32_t[:, ::1] hi not None,
                 const int32_t[::1] rule not None, const int32_t[::1] group=None, int binth=8,
                 Py_ssize_t max_leaf_entries=-1, const uint8_t[::1] rule_flags=None,
                 const uint64_t[:, ::1] app_bits=None, const uint64_t[:, ::1] cat_bits=None,
                 const int32_t[::1] appdef_start=None, const uint32_t[::1] appdef_key=None, uint32_t app_pending=0):
        cdef Py_ssize_t n = lo.shape[0], k, d, g, m, ng = 1
        cdef int32_t* idx
        cdef uint32_t rlo[NDIM]
        cdef uint32_t rhi[NDIM]
        if lo.shape[1] != NDIM or hi.shape[1] != NDIM:
            raise ValueError(f"lo and hi must have {NDIM} columns, got {lo.shape[1]} and {hi.shape[1]}")
        if hi.shape[0] != n or rule.shape[0] != n:
            raise ValueError(f"lo, hi and rule must have the same length, got {n}, {hi.shape[0]}, {rule.shape[0]}")
        if group is not None and group.shape[0] != n:
            raise ValueError(f"group has length {group.shape[0]}, expected {n}")
        if binth < 1:
            raise ValueError(f"binth must be >= 1, got {binth}")
        if n >= 0x7FFFFFFF:
            raise ValueError(f"too many boxes: {n}")
        for k in range(n):
            if rule[k] < 0 or (k > 0 and rule[k] < rule[k - 1]):
                raise ValueError(f"rule must be non-negative and non-decreasing (box {k})")
            for d in range(NDIM):
                if lo[k, d] > hi[k, d] or hi[k, d] > _DOMAIN_HI[d]:
                    raise ValueError(f"box {k} dimension {d}: bad range [{lo[k, d]}, {hi[k, d]}]")
            if group is not None:
                if group[k] < 0 or group[k] >= 64:
                    raise ValueError(f"group[{k}] = {group[k]} out of range 0..63")
                if group[k] + 1 > ng:
                    ng = group[k] + 1
        if rule_flags is not None:
            self._set_constraints(rule_flags, app_bits, cat_bits, appdef_start, appdef_key, app_pending, rule)
        self.binth = binth
        self.nboxes = n
        # Memory bound: past this many leaf entries, nodes stop splitting (larger leaves, same answers).
        self.budget = max_leaf_entries if max_leaf_entries >= 0 else 32 * n + 4096
        self.boxes = <Box*>malloc(max(n, 1) * sizeof(Box))
        self.scratch_lo = <uint32_t*>malloc(max(n, 1) * sizeof(uint32_t))
        self.scratch_hi = <uint32_t*>malloc(max(n, 1) * sizeof(uint32_t))
        self.roots = <int32_t*>malloc(ng * sizeof(int32_t))
        self.group_min = <int32_t*>malloc(ng * sizeof(int32_t))
        self.group_depth = <int32_t*>malloc(ng * sizeof(int32_t))
        idx = <int32_t*>malloc(max(n, 1) * sizeof(int32_t))
        if (self.boxes == NULL or self.scratch_lo == NULL or self.scratch_hi == NULL or idx == NULL
                or self.roots == NULL or self.group_min == NULL or self.group_depth == NULL):
            free(idx)
            raise MemoryError()
        try:
            for k in range(n):
                for d in range(NDIM):
                    self.boxes[k].lo[d] = lo[k, d]
                    self.boxes[k].hi[d] = hi[k, d]
                self.boxes[k].rule = rule[k]
            # One tree per non-empty group; groups are visited in order of their best (lowest) rule at lookup.
            for g in range(ng):
                m = 0
                for k in range(n):
                    if (group[k] if group is not None else 0) == g:
                        idx[m] = <int32_t>k
                        m += 1
                if m == 0 and not (g == 0 and n == 0):
                    continue
                for d in range(NDIM):
                    rlo[d] = 0
                    rhi[d] = _DOMAIN_HI[d]
                self.roots[self.ngroups] = <int32_t>self._new_node()
                self.cur_depth = 0
                self._build(self.roots[self.ngroups], idx, m, rlo, rhi, 0)
                self.group_depth[self.ngroups] = self.cur_depth
                self.group_min[self.ngroups] = self.boxes[idx[0]].rule if m > 0 else 0x7FFFFFFF
                self.ngroups += 1
            self._sort_groups()
        finally:
            free(idx)
            # The build inputs are no longer needed: only nodes and leaves stay resident.
            free(self.boxes)
            free(self.scratch_lo)
            free(self.scratch_hi)
            self.boxes = NULL
            self.scratch_lo = NULL
            self.scratch_hi = NULL
        # Trim the growable arrays to their final size.
        if self.n_leaf_ > 0 and self.n_leaf_ < self.cap_leaf:
            self.leaf = <Box*>realloc(self.leaf, self.n_leaf_ * sizeof(Box))
            self.cap_leaf = self.n_leaf_
        if self.n_nodes_ < self.cap_nodes:
            self.nodes = <Node*>realloc(self.nodes, self.n_nodes_ * sizeof(Node))
            self.cap_nodes = self.n_nodes_

    cdef _set_constraints(self, const uint8_t[::1] rule_flags, const uint64_t[:, ::1] app_bits,
                          const uint64_t[:, ::1] cat_bits, const int32_t[::1] appdef_start,
                          const uint32_t[::1] appdef_key, uint32_t app_pending, const int32_t[::1] rule):
        cdef Py_ssize_t nr = rule_flags.shape[0], k, na = 0, nk = 0
        cdef Py_ssize_t aw = app_bits.shape[1] if app_bits is not None else 0
        cdef Py_ssize_t cw = cat_bits.shape[1] if cat_bits is not None else 0
        if rule.shape[0] > 0 and rule[rule.shape[0] - 1] >= nr:
            raise ValueError(f"rule_flags has {nr} entries, but box rules go up to {rule[rule.shape[0] - 1]}")
        if app_bits is not None and app_bits.shape[0] != nr:
            raise ValueError(f"app_bits has {app_bits.shape[0]} rows, expected {nr}")
        if cat_bits is not None and cat_bits.shape[0] != nr:
            raise ValueError(f"cat_bits has {cat_bits.shape[0]} rows, expected {nr}")
        if (appdef_start is None) != (appdef_key is None):
            raise ValueError("appdef_start and appdef_key go together")
        if appdef_start is not None:
            na = appdef_start.shape[0] - 1
            nk = appdef_key.shape[0]
            if na < 0 or appdef_start[0] != 0 or appdef_start[na] != nk:
                raise ValueError("appdef_start must start at 0 and end at len(appdef_key)")
            for k in range(na):
                if appdef_start[k] > appdef_start[k + 1]:
                    raise ValueError(f"appdef_start must be non-decreasing (entry {k})")
        for k in range(nr):
            if rule_flags[k] & ~7:
                raise ValueError(f"rule_flags[{k}] = {rule_flags[k]}: unknown flag")
            if rule_flags[k] & 1 and aw == 0:
                raise ValueError(f"rule {k} has F_APP but app_bits is missing")
            if rule_flags[k] & 4 and cw == 0:
                raise ValueError(f"rule {k} has F_CAT but cat_bits is missing")
            if rule_flags[k] & 2 and na == 0:
                raise ValueError(f"rule {k} has F_APPDEF but appdef_start is missing")
            if rule_flags[k]:
                self.has_constraints = True
        self.rflags = <uint8_t*>malloc(max(nr, 1))
        self.app_bits = <uint64_t*>malloc(max(nr * aw, 1) * sizeof(uint64_t))
        self.cat_bits = <uint64_t*>malloc(max(nr * cw, 1) * sizeof(uint64_t))
        self.appdef_start = <int32_t*>malloc((na + 1) * sizeof(int32_t))
        self.appdef_key = <uint32_t*>malloc(max(nk, 1) * sizeof(uint32_t))
        if (self.rflags == NULL or self.app_bits == NULL or self.cat_bits == NULL or self.appdef_start == NULL
                or self.appdef_key == NULL):
            raise MemoryError()
        for k in range(nr):
            self.rflags[k] = rule_flags[k]
        if aw:
            memcpy(self.app_bits, &app_bits[0, 0], nr * aw * sizeof(uint64_t))
        if cw:
            memcpy(self.cat_bits, &cat_bits[0, 0], nr * cw * sizeof(uint64_t))
        self.appdef_start[0] = 0
        for k in range(na):
            self.appdef_start[k + 1] = appdef_start[k + 1]
        for k in range(nk):
            self.appdef_key[k] = appdef_key[k]
        self.n_rules = nr
        self.app_words = aw
        self.cat_words = cw
        self.n_apps = na
        self.app_pending_ = app_pending

    cdef void _sort_groups(self) noexcept:
        cdef Py_ssize_t i, j
        cdef int32_t r, m, dp
        for i in range(1, self.ngroups):
            r = self.roots[i]
            m = self.group_min[i]
            dp = self.group_depth[i]
            j = i - 1
            while j >= 0 and self.group_min[j] > m:
                self.roots[j + 1] = self.roots[j]
                self.group_min[j + 1] = self.group_min[j]
                self.group_depth[j + 1] = self.group_depth[j]
                j -= 1
            self.roots[j + 1] = r
            self.group_min[j + 1] = m
            self.group_depth[j + 1] = dp

    cdef Py_ssize_t _new_node(self) except -1:
        cdef Py_ssize_t cap
        cdef Node* p
        if self.n_nodes_ == self.cap_nodes:
            cap = max(64, self.cap_nodes * 2)
            p = <Node*>realloc(self.nodes, cap * sizeof(Node))
            if p == NULL:
                raise MemoryError()
            self.nodes = p
            self.cap_nodes = cap
        self.n_nodes_ += 1
        return self.n_nodes_ - 1

    cdef int _make_leaf(self, Py_ssize_t node, const int32_t* idx, Py_ssize_t n) except -1:
        cdef Py_ssize_t cap, k
        cdef Box* p
        if self.n_leaf_ + n > self.cap_leaf:
            cap = max(256, self.cap_leaf * 2, self.n_leaf_ + n)
            p = <Box*>realloc(self.leaf, cap * sizeof(Box))
            if p == NULL:
                raise MemoryError()
            self.leaf = p
            self.cap_leaf = cap
        if self.n_leaf_ + n >= 0x7FFFFFFF:
            raise MemoryError("classifier leaf array too large")
        for k in range(n):
            memcpy(&self.leaf[self.n_leaf_ + k], &self.boxes[idx[k]], sizeof(Box))
        self.nodes[node].dim = 0
        self.nodes[node].split = 0xFFFFFFFF
        self.nodes[node].child = <int32_t>node
        self.nodes[node].lstart = <int32_t>self.n_leaf_
        self.nodes[node].lcount = <int32_t>n
        self.n_leaf_ += n
        return 0

    cdef int _build(self, Py_ssize_t node, int32_t* idx, Py_ssize_t n, uint32_t* rlo, uint32_t* rhi,
                    int depth) except -1:
        """Fill node (already allocated) with the subtree over boxes idx[0:n] inside the region [rlo, rhi]."""
        cdef Py_ssize_t k, j, d, nl, nr, child, best_dim = -1
        cdef int64_t cost, best_cost = -1, mx, mn
        cdef uint32_t s, best_split = 0, save, v
        cdef const Box* b
        cdef bint cover, spans
        cdef int32_t* lidx
        cdef int32_t* ridx
        cdef uint32_t* L = self.scratch_lo
        cdef uint32_t* H = self.scratch_hi
        if depth > self.depth_:
            self.depth_ = depth
        if depth > self.cur_depth:
            self.cur_depth = depth
        # Boxes after the first one covering the whole region are shadowed there.
        for k in range(n):
            b = &self.boxes[idx[k]]
            if self.rflags != NULL and self.rflags[b.rule]:
                continue  # a constrained rule may fail its constraint at lookup: it shadows nothing
            cover = True
            for d in range(NDIM):
                if b.lo[d] > rlo[d] or b.hi[d] < rhi[d]:
                    cover = False
                    break
            if cover:
                n = k + 1
                break
        if n <= self.binth or depth >= MAX_DEPTH or self.n_leaf_ + n > self.budget:
            self.over_budget_ = self.over_budget_ or self.n_leaf_ + n > self.budget
            self._make_leaf(node, idx, n)
            return 0
        for d in range(NDIM):
            if rlo[d] == rhi[d]:
                continue
            spans = True
            for k in range(n):
                b = &self.boxes[idx[k]]
                L[k] = b.lo[d] if b.lo[d] > rlo[d] else rlo[d]
                H[k] = b.hi[d] if b.hi[d] < rhi[d] else rhi[d]
                if L[k] != rlo[d] or H[k] != rhi[d]:
                    spans = False
            if spans:
                continue  # every box spans the region on this dimension: no cut helps
            qsort(L, n, sizeof(uint32_t), _cmp_u32)
            qsort(H, n, sizeof(uint32_t), _cmp_u32)
            # Candidate cuts: just below each box start and at each box end (left = [rlo, s], right = [s+1, rhi]).
            for j in range(2 * n):
                if j < n:
                    v = L[j]
                    if v == rlo[d] or (j > 0 and L[j - 1] == v):
                        continue
                    s = v - 1
                else:
                    v = H[j - n]
                    if v == rhi[d] or (j > n and H[j - n - 1] == v):
                        continue
                    s = v
                nl = _upper_bound(L, n, s)
                nr = n - _upper_bound(H, n, s)
                mx = nl if nl > nr else nr
                mn = nr if nl > nr else nl
                if mx >= n:
                    continue
                cost = 2 * mx + mn
                if best_cost < 0 or cost < best_cost:
                    best_cost = cost
                    best_dim = d
                    best_split = s
        if best_dim < 0:
            self._make_leaf(node, idx, n)
            return 0
        lidx = <int32_t*>malloc(n * sizeof(int32_t))
        ridx = <int32_t*>malloc(n * sizeof(int32_t))
        if lidx == NULL or ridx == NULL:
            free(lidx)
            free(ridx)
            raise MemoryError()
        try:
            nl = nr = 0
            for k in range(n):
                b = &self.boxes[idx[k]]
                if b.lo[best_dim] <= best_split:
                    lidx[nl] = idx[k]
                    nl += 1
                if b.hi[best_dim] > best_split:
                    ridx[nr] = idx[k]
                    nr += 1
            # Children are adjacent (left, left + 1) so that lookup picks one without a branch.
            child = self._new_node()
            self._new_node()
            self.nodes[node].dim = <int32_t>best_dim
            self.nodes[node].split = best_split
            self.nodes[node].child = <int32_t>child
            self.nodes[node].lstart = 0
            self.nodes[node].lcount = 0
            save = rhi[best_dim]
            rhi[best_dim] = best_split
            self._build(child, lidx, nl, rlo, rhi, depth + 1)
            rhi[best_dim] = save
            save = rlo[best_dim]
            rlo[best_dim] = best_split + 1
            self._build(child + 1, ridx, nr, rlo, rhi, depth + 1)
            rlo[best_dim] = save
        finally:
            free(lidx)
            free(ridx)
        return 0

    @property
    def n_nodes(self):
        """Number of tree nodes (inner nodes and leaves)."""
        return self.n_nodes_

    @property
    def n_leaf_entries(self):
        """Number of boxes stored in the leaves (boxes are replicated where a cut crosses them)."""
        return self.n_leaf_

    @property
    def depth(self):
        """Depth of the deepest leaf (root = 0)."""
        return self.depth_

    @property
    def n_groups(self):
        """Number of subtrees (rule partitions)."""
        return self.ngroups

    @property
    def over_budget(self):
        """True when the leaf-entry budget stopped some splits (correct answers, slower leaves)."""
        return self.over_budget_

    @property
    def memory_bytes(self):
        """Bytes held by the compiled structure (nodes + leaf boxes + group table)."""
        return (self.n_nodes_ * sizeof(Node) + self.n_leaf_ * sizeof(Box) + self.ngroups * 3 * sizeof(int32_t)
                + (self.n_rules + 8 * self.n_rules * (self.app_words + self.cat_words) if self.rflags != NULL else 0))

    def lookup(self, const uint32_t[::1] src_ip not None, const uint32_t[::1] dst_ip not None,
               const uint16_t[::1] sport not None, const uint16_t[::1] dport not None,
               const uint8_t[::1] proto not None, const uint8_t[::1] zone_from, const uint8_t[::1] zone_to,
               int32_t[::1] out not None, const uint16_t[::1] app=None, const int32_t[:, ::1] category=None):
        """Write the index of the first matching rule of every packet into ``out`` (-1 when no rule matches).

        Parameters
        ----------
        src_ip, dst_ip : uint32[n]
            Addresses in host byte order.
        sport, dport : uint16[n]
            Ports (0 for protocols without ports).
        proto : uint8[n]
            IP protocol number.
        zone_from, zone_to : uint8[n] or None
            Zone index of each packet's ingress / egress; None means unknown (``ZONE_UNKNOWN``, 255), which matches
            only rules without a zone restriction.
        out : int32[n]
            Output column.
        app : uint16[n] or None
            Application id of each packet's session; None: every packet's application is pending.
        category : int32[n, k] or None
            URL category ids of each packet's session (-1 = none: a row of -1 means no URL known); None: no URL
            known anywhere.

        Returns
        -------
        None
            The result is written into ``out``.

        Notes
        -----
        No status codes: every packet gets an answer. The loop runs without the GIL.
        """
        cdef Py_ssize_t n = src_ip.shape[0], i, j, m, base, g, _lvl
        cdef bint has_zf = zone_from is not None, has_zt = zone_to is not None, need
        cdef uint32_t pts[BLOCK][NDIM]
        cdef int32_t cur[BLOCK]
        cdef int32_t best[BLOCK]
        cdef const Node* nodes = self.nodes
        cdef const Node* nd
        cdef const Box* leaf = self.leaf
        cdef const int32_t* roots = self.roots
        cdef const int32_t* gmin = self.group_min
        cdef const int32_t* gdepth = self.group_depth
        cdef Py_ssize_t ng = self.ngroups
        cdef int32_t root, depth, gm
        cdef Ctx ctx
        cdef Ctx* cx = &ctx
        cdef bint use_ctx
        cdef Py_ssize_t ncat = 0
        cdef int32_t no_cat = -1
        cdef const int32_t* catp = &no_cat
        cdef const uint16_t* appp = NULL
        if dst_ip.shape[0] != n:
            raise ValueError(f"dst_ip has length {dst_ip.shape[0]}, expected {n} (length of src_ip)")
        if sport.shape[0] != n:
            raise ValueError(f"sport has length {sport.shape[0]}, expected {n} (length of src_ip)")
        if dport.shape[0] != n:
            raise ValueError(f"dport has length {dport.shape[0]}, expected {n} (length of src_ip)")
        if proto.shape[0] != n:
            raise ValueError(f"proto has length {proto.shape[0]}, expected {n} (length of src_ip)")
        if out.shape[0] != n:
            raise ValueError(f"out has length {out.shape[0]}, expected {n} (length of src_ip)")
        if has_zf and zone_from.shape[0] != n:
            raise ValueError(f"zone_from has length {zone_from.shape[0]}, expected {n}")
        if has_zt and zone_to.shape[0] != n:
            raise ValueError(f"zone_to has length {zone_to.shape[0]}, expected {n}")
        if nodes == NULL:
            raise ValueError("classifier is not built")
        if app is not None and app.shape[0] != n:
            raise ValueError(f"app has length {app.shape[0]}, expected {n}")
        if category is not None and category.shape[0] != n:
            raise ValueError(f"category has {category.shape[0]} rows, expected {n}")
        # Without content columns every constraint is met (pending application, no URL): the plain leaf scan.
        use_ctx = self.has_constraints and (app is not None or category is not None)
        ctx.flags = self.rflags
        ctx.app_bits = self.app_bits
        ctx.cat_bits = self.cat_bits
        ctx.appdef_start = self.appdef_start
        ctx.appdef_key = self.appdef_key
        ctx.n_rules = self.n_rules
        ctx.app_words = self.app_words
        ctx.cat_words = self.cat_words
        ctx.n_apps = self.n_apps
        ctx.app_pending = self.app_pending_
        ctx.app = self.app_pending_
        ctx.cats = catp
        ctx.ncat = 1
        if app is not None and n > 0:
            appp = &app[0]
        if category is not None and n > 0 and category.shape[1] > 0:
            ncat = category.shape[1]
            catp = &category[0, 0]
            ctx.ncat = ncat
        with nogil:
            # Packets go through the trees BLOCK at a time, level by level for a fixed number of levels (leaves
            # step to themselves): no data-dependent branch in the walk, and BLOCK independent loads in flight.
            if not use_ctx:
                base = 0
                while base < n:
                    m = n - base if n - base < BLOCK else BLOCK
                    for j in range(m):
                        i = base + j
                        pts[j][0] = src_ip[i]
                        pts[j][1] = dst_ip[i]
                        pts[j][2] = sport[i]
                        pts[j][3] = dport[i]
                        pts[j][4] = proto[i]
                        pts[j][5] = zone_from[i] if has_zf else ZONE_UNK
                        pts[j][6] = zone_to[i] if has_zt else ZONE_UNK
                        best[j] = 0x7FFFFFFF
                    for g in range(ng):
                        gm = gmin[g]
                        need = False
                        for j in range(m):
                            if gm < best[j]:
                                need = True
                        if not need:
                            break  # groups are sorted by their best rule: later ones cannot win either
                        root = roots[g]
                        depth = gdepth[g]
                        for j in range(m):
                            cur[j] = root
                        for _lvl in range(depth):
                            for j in range(m):
                                nd = nodes + cur[j]
                                cur[j] = nd.child + <int32_t>(pts[j][nd.dim] > nd.split)
                        for j in range(m):
                            if gm < best[j]:
                                best[j] = _scan_leaf(nodes + cur[j], leaf, pts[j], best[j])
                    for j in range(m):
                        out[base + j] = best[j] if best[j] != 0x7FFFFFFF else -1
                    base += m
            else:
                # The same walk, the leaf scan checking the rules' content constraints.
                base = 0
                while base < n:
                    m = n - base if n - base < BLOCK else BLOCK
                    for j in range(m):
                        i = base + j
                        pts[j][0] = src_ip[i]
                        pts[j][1] = dst_ip[i]
                        pts[j][2] = sport[i]
                        pts[j][3] = dport[i]
                        pts[j][4] = proto[i]
                        pts[j][5] = zone_from[i] if has_zf else ZONE_UNK
                        pts[j][6] = zone_to[i] if has_zt else ZONE_UNK
                        best[j] = 0x7FFFFFFF
                    for g in range(ng):
                        gm = gmin[g]
                        need = False
                        for j in range(m):
                            if gm < best[j]:
                                need = True
                        if not need:
                            break  # groups are sorted by their best rule: later ones cannot win either
                        root = roots[g]
                        depth = gdepth[g]
                        for j in range(m):
                            cur[j] = root
                        for _lvl in range(depth):
                            for j in range(m):
                                nd = nodes + cur[j]
                                cur[j] = nd.child + <int32_t>(pts[j][nd.dim] > nd.split)
                        for j in range(m):
                            if gm < best[j]:
                                i = base + j
                                if appp != NULL:
                                    cx.app = appp[i]
                                if ncat > 0:
                                    cx.cats = catp + i * ncat
                                best[j] = _scan_leaf_ctx(nodes + cur[j], leaf, pts[j], best[j], cx)
                    for j in range(m):
                        out[base + j] = best[j] if best[j] != 0x7FFFFFFF else -1
                    base += m
