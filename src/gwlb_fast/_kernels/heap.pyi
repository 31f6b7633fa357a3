"""The C allocator's thresholds for a replay: freed chunk-sized buffers kept for the next chunk."""

from contextlib import AbstractContextManager

import numpy as np

MMAP_THRESHOLD: int
TRIM_THRESHOLD: int
TOP_PAD: int
HUGE_PAGE: int

def keep_freed_buffers() -> bool: ...
def numpy_huge_pages(on: bool) -> bool | None: ...
def zeroed(shape: int | tuple[int, ...], dtype, huge: bool = False) -> np.ndarray: ...
def replay_memory() -> AbstractContextManager[None]: ...
