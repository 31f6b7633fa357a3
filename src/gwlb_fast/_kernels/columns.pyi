"""Rows of many columns at once: the gather behind ``PacketBatch[rows]``; per-key packet and byte tallies."""
import numpy as np

def take_columns(rows: np.ndarray, cols: list[np.ndarray]) -> list[np.ndarray]: ...

def put_columns(rows: np.ndarray, dsts: list[np.ndarray], srcs: list[np.ndarray]) -> None:
    """for d, s in zip(dsts, srcs): d[rows] = s, in place (typed loops; NumPy's assignment for what they can't
    take)."""

def tally(
    keys: np.ndarray,  # const int16/int32/int64[::1], shape (n,); rows with a negative key are skipped
    nbytes: np.ndarray,  # const uint32[::1], shape (n,)
    out_packets: np.ndarray,  # int64[::1], shape (k,): += rows per key
    out_bytes: np.ndarray,  # int64[::1], shape (k,): += their nbytes per key
) -> int:
    """np.bincount of the rows with a key >= 0 (count and nbytes sums) added into the counters in one pass; returns
    the rows counted. ValueError (naming the argument) on a wrong dtype, length or layout, or a key >= k (counters
    left unchanged)."""

def group_rows(
    keys: np.ndarray,  # const int16/int32/int64[::1], shape (n,), every key in [0, k)
    k: int,
) -> tuple[np.ndarray, np.ndarray]:
    """(order int64[n], starts int64[k + 1]): the rows of key j, ascending, are order[starts[j]:starts[j + 1]]
    (np.flatnonzero(keys == j)); a stable counting sort. ValueError (naming the argument) on a wrong dtype or
    layout, k < 0 or a key outside [0, k)."""
