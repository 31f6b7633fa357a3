"""The allocator thresholds a replay sets (gwlb_fast._kernels.heap)."""
import platform
import subprocess
import sys

import numpy as np
import pytest

from gwlb_fast._kernels import heap

# in a fresh interpreter, after keep_freed_buffers: allocate, fill and free a buffer of the given size, then do it
# again; print the page faults of the second time (a buffer the allocator kept faults nothing in)
_PROBE = """
import ctypes, resource, sys
from gwlb_fast._kernels import heap
assert heap.keep_freed_buffers()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
size = int(sys.argv[1])
a = libc.malloc(size); libc.memset(a, 1, size); libc.free(a)
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
b = libc.malloc(size); libc.memset(b, 1, size); libc.free(b)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
"""


def _faults(size: int) -> int:
    out = subprocess.run([sys.executable, "-c", _PROBE, str(size)], check=True, capture_output=True, text=True).stdout
    return int(out)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the thresholds are glibc's")
def test_freed_chunk_buffers_stay_in_the_heap():
    """After keep_freed_buffers a freed 768 KiB buffer (one of a large chunk's columns) stays in the heap and the next
    allocation reuses its pages; a block past MMAP_THRESHOLD is still mapped on its own, and unmapped on free, so
    the next one faults every page in anew (which also shows the probe sees faults). With glibc's defaults the
    768 KiB buffer is mapped and unmapped until a free raises glibc's moving threshold: how often depends on what
    the interpreter allocated before, so the defaults are no baseline to compare against."""
    assert 768 << 10 < heap.MMAP_THRESHOLD < heap.TRIM_THRESHOLD
    assert _faults(768 << 10) < 10
    big = heap.MMAP_THRESHOLD * 3 // 2  # 1.5 MiB: no aligned 2 MiB huge page fits in its mapping
    assert _faults(big) > big // 4096 // 2


def test_numpy_huge_page_advice_is_off_during_a_run_and_restored(tmp_path, monkeypatch):
    """Pipeline.run turns NumPy's huge-page advice off while it replays and gives the caller's setting back."""
    import gwlb_fast as gf
    from gwlb_fast import synth
    from gwlb_fast.config import example_topology_text

    prev = heap.numpy_huge_pages(True)
    if prev is None:
        pytest.skip("this NumPy has no huge-page switch")
    seen = []
    real = gf.Pipeline._replay

    def spy(self, *a, **k):
        now = heap.numpy_huge_pages(False)  # reads the setting (and keeps it off)
        seen.append(now)
        return real(self, *a, **k)

    monkeypatch.setattr(gf.Pipeline, "_replay", spy)
    topo = tmp_path / "t.yaml"
    topo.write_text(example_topology_text())
    cap = tmp_path / "in.pcap"
    gf.write_pcap(cap, synth.generate(flows=10, packets=200, seed=1))
    gf.Pipeline.from_yaml(topo).run(cap, tmp_path / "out.pcap")
    assert seen == [False]
    assert heap.numpy_huge_pages(prev) is True  # restored to the caller's setting


# in a fresh interpreter: keep freed buffers, leave 96 MiB of freed memory in the heap, fork (as run --workers
# does), and in the child build the tables of a firewall's share; print the child's page faults for it
_TABLES = """
import os, resource, sys
import numpy as np
from gwlb_fast._kernels import heap
from gwlb_fast._kernels.flowtable import FlowTable
assert heap.keep_freed_buffers()
junk = [np.ones(768 << 10, np.uint8) for _ in range(128)]
del junk
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = FlowTable(1 << 17)
    sessions = heap.zeroed((t.capacity, 12), np.int64)
    os.write(w, str(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0).encode())
    os._exit(0)
os.waitpid(pid, 0)
print(int(os.read(r, 64)))
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the heap's reuse is glibc's")
def test_tables_take_no_pages_until_used_even_from_a_full_heap():
    """A worker forked after the parent kept its freed buffers found room in the heap for its flow tables (8 MiB of
    entries, 2 MiB of buckets, 12 MiB of session rows), and calloc cleared them there: every page faulted in, and
    copied from the parent's. Tables from ``zeroed`` take their own pages, only as they are used."""
    out = subprocess.run([sys.executable, "-c", _TABLES], check=True, capture_output=True, text=True).stdout
    assert int(out) < 200  # the 5,632 pages of the tables, untouched


def test_zeroed_arrays():
    a = heap.zeroed((3, 5), np.int64)
    assert a.shape == (3, 5) and a.dtype == np.int64 and not a.any() and a.flags.writeable
    assert a.ctypes.data % 4096 == 0  # page-aligned: a 64-byte table entry is one cache line
    a[2, 4] = 7
    assert a.sum() == 7
    assert heap.zeroed(0, np.uint8).shape == (0,)
    big = heap.zeroed(heap.HUGE_PAGE, np.uint8, huge=True)
    assert big.shape == (heap.HUGE_PAGE,) and not big[:: 4096].any()


def test_replay_memory_gives_the_setting_back_after_an_error():
    prev = heap.numpy_huge_pages(True)
    if prev is None:
        pytest.skip("this NumPy has no huge-page switch")
    with pytest.raises(RuntimeError), heap.replay_memory():
        assert heap.numpy_huge_pages(False) is False  # off inside
        raise RuntimeError("a replay failed")
    assert heap.numpy_huge_pages(prev) is True
