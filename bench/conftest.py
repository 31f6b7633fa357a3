"""Shared helpers for the benchmarks (run: pytest bench -o python_files='bench_*.py').

Every group holds a candidate and its baseline, timed in the same run, so each figure has a ratio beside it.
"""
import pytest


def record_rate(benchmark, packets: int, nbytes: int | None = None) -> None:
    """Store Mpps (and GB/s) computed from the median in the benchmark's extra_info.

    Call after ``benchmark(...)`` / ``benchmark.pedantic(...)`` has run. With --benchmark-disable there are no
    stats and nothing is recorded.
    """
    stats = getattr(benchmark, "stats", None)
    if not stats:
        return
    median = stats.stats.median
    benchmark.extra_info["packets"] = packets
    benchmark.extra_info["Mpps"] = round(packets / median / 1e6, 3)
    if nbytes is not None:
        benchmark.extra_info["GB/s"] = round(nbytes / median / 1e9, 3)


@pytest.fixture
def rate(benchmark):
    """``rate(packets, nbytes=None)`` after timing: records Mpps/GB/s for this benchmark."""
    return lambda packets, nbytes=None: record_rate(benchmark, packets, nbytes)
