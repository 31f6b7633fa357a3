"""The C allocator's thresholds for a replay: freed chunk-sized buffers kept for the next chunk."""

MMAP_THRESHOLD: int
TRIM_THRESHOLD: int
TOP_PAD: int

def keep_freed_buffers() -> bool: ...
def numpy_huge_pages(on: bool) -> bool | None: ...
