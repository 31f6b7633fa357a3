# cython: language_level=3
"""The C allocator's thresholds for a replay: freed chunk-sized buffers kept for the next chunk.

Every chunk of a replay allocates and frees the same set of column and scratch arrays (a 65,536-packet chunk's
columns are up to 512 KiB each). With glibc's defaults the heap's free top is trimmed, and the larger blocks mapped
and unmapped, after every chunk, so the next chunk faults the same memory in again and the kernel zeroes it.
Raising the trim threshold keeps those pages in the heap, where the next chunk's allocations find them; what is
kept is bounded by what the run had in use at its peak (the chunk and its temporaries), so resident memory stays
bounded by the chunk. The mmap threshold is pinned at 1 MiB (glibc would raise it up to 32 MiB as blocks are
freed), so that a block of a megabyte or more that the heap has no room for is mapped on its own (a second
Pipeline built in the same process after a run grew by 202 MB with a 64 MiB threshold, 13 MB with this one, 17 MB
with glibc's defaults).

The threshold decides only when the heap has no room: glibc serves a large request from the heap's free memory
or its top first, and calloc then clears it whole. After a run, or in a worker forked after the parent set these
thresholds (its heap has the 64 MiB top pad), a flow table of 8 MiB came from the heap and was cleared at once:
every page faulted in at construction, used or not (two workers: 40,000 of 180,000 page faults). The engine's
tables therefore come from :func:`zeroed`, a mapping of their own whatever the heap holds.

On a C library other than glibc this does nothing.

NumPy also asks the kernel for transparent huge pages (madvise) on every array of 4 MiB or more. A replay's arrays
are short-lived and touched once: each of their 2 MiB pages is zeroed whole at its first fault, whatever part of it
the array uses. Measured on the 1M-packet bench run (CLI, three runs each): system time 0.38-0.40 s without that
advice against 0.50-1.16 s with it (two workers: 1.03-1.14 s against 1.73-1.76 s). :func:`numpy_huge_pages` turns
it off for the length of a run.
"""
import contextlib
import math
import mmap

import numpy as np

cdef extern from *:
    """
    #if defined(__GLIBC__)
    #include <malloc.h>
    static int gf_mallopt(int p, int v) { return mallopt(p, v); }
    #define GF_M_TRIM_THRESHOLD M_TRIM_THRESHOLD
    #define GF_M_TOP_PAD M_TOP_PAD
    #define GF_M_MMAP_THRESHOLD M_MMAP_THRESHOLD
    #else
    static int gf_mallopt(int p, int v) { (void)p; (void)v; return 0; }
    #define GF_M_TRIM_THRESHOLD 0
    #define GF_M_TOP_PAD 0
    #define GF_M_MMAP_THRESHOLD 0
    #endif
    """
    int gf_mallopt(int p, int v) nogil
    int GF_M_TRIM_THRESHOLD
    int GF_M_TOP_PAD
    int GF_M_MMAP_THRESHOLD

#: allocations at or above this size are mapped on their own (tables); below it (a chunk's columns) from the heap
MMAP_THRESHOLD = 1 << 20
#: free memory at the heap's top is returned to the system only past this much
TRIM_THRESHOLD = 512 << 20
#: extra heap requested each time the heap grows (fewer, larger growths)
TOP_PAD = 64 << 20

#: a transparent huge page
HUGE_PAGE = 2 << 20

cdef bint _done = False


def keep_freed_buffers() -> bool:
    """Set the allocator's thresholds once per process (later calls do nothing); True when glibc took them."""
    global _done
    if _done:
        return True
    ok = (gf_mallopt(GF_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and gf_mallopt(GF_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
          and gf_mallopt(GF_M_TOP_PAD, TOP_PAD) == 1)
    _done = ok
    return ok


def numpy_huge_pages(bint on):
    """Whether NumPy advises huge pages for its large arrays; returns the previous setting (None when this NumPy has
    no such switch, and then nothing changes)."""
    switch = getattr(getattr(getattr(np, "_core", None), "multiarray", None), "_set_madvise_hugepage", None)
    if switch is None:
        switch = getattr(getattr(getattr(np, "core", None), "multiarray", None), "_set_madvise_hugepage", None)
    if switch is None:
        return None
    return bool(switch(on))


def zeroed(shape, dtype, bint huge=False) -> np.ndarray:
    """An array of zeros on pages of its own (a private anonymous mapping, page-aligned): the kernel maps each page
    at its first touch, so a table costs memory only for what a run uses, and its pages go back when it is freed.
    ``huge``: advise transparent huge pages (for a table that hashing touches all over)."""
    dt = np.dtype(dtype)
    count = math.prod(int(d) for d in (shape if isinstance(shape, tuple) else (shape,)))
    if count == 0:
        return np.zeros(shape, dt)
    buf = mmap.mmap(-1, count * dt.itemsize, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if huge and count * dt.itemsize >= HUGE_PAGE and hasattr(mmap, "MADV_HUGEPAGE"):
        buf.madvise(mmap.MADV_HUGEPAGE)
    return np.frombuffer(buf, dt, count).reshape(shape)


@contextlib.contextmanager
def replay_memory():
    """The memory settings of a replay, for its length: the allocator keeps freed buffers (:func:`keep_freed_buffers`,
    once per process) and NumPy advises no huge pages (the caller's setting is given back after)."""
    keep_freed_buffers()
    huge = numpy_huge_pages(False)
    try:
        yield
    finally:
        if huge is not None:
            numpy_huge_pages(huge)
