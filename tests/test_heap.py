"""The allocator thresholds a replay sets (gwlb_fast._kernels.heap)."""
import platform
import subprocess
import sys

import pytest

from gwlb_fast._kernels import heap

# in a fresh interpreter: allocate, fill and free a buffer of a chunk's size, then do it again; print the page
# faults of the second time (a buffer the allocator kept faults nothing in)
_PROBE = """
import ctypes, resource, sys
from gwlb_fast._kernels import heap
if sys.argv[1] == "keep":
    assert heap.keep_freed_buffers()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
size = 768 << 10
a = libc.malloc(size); libc.memset(a, 1, size); libc.free(a)
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
b = libc.malloc(size); libc.memset(b, 1, size); libc.free(b)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], check=True, capture_output=True, text=True).stdout
    return int(out)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the thresholds are glibc's")
def test_freed_chunk_buffers_stay_in_the_heap():
    """A 768 KiB buffer (one of a large chunk's columns) is unmapped on free with glibc's defaults, and the next one
    comes from fresh heap pages, faulted in anew; after keep_freed_buffers it stays in the heap and the next
    allocation reuses its pages."""
    assert 768 << 10 < heap.MMAP_THRESHOLD < heap.TRIM_THRESHOLD
    pages = (768 << 10) // 4096
    assert _faults("default") > pages // 2
    assert _faults("keep") < 10


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
