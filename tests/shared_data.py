"""Where the project's shared data lives (ClassBench rule sets, tcpdump's Geneve captures): one home for the lookup.

``$GWLB_FAST_DATA`` if set, else ``shared/data`` beside the repository (or beside a worktree nested deeper).
``$GWLB_FAST_CLASSBENCH`` still names the ClassBench folder directly. Tests skip cleanly when the data is absent.
"""
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def shared_data() -> Path | None:
    """The shared data folder, or None when there is none."""
    env = os.environ.get("GWLB_FAST_DATA")
    candidates = [Path(env)] if env else []
    candidates += [up / "shared" / "data" for up in REPO.parents[:3]]
    for p in candidates:
        if p.is_dir():
            return p
    return None


def data_path(*parts: str) -> Path:
    """A path inside the shared data folder (it may not exist: callers skip)."""
    if parts and parts[0] == "classbench" and os.environ.get("GWLB_FAST_CLASSBENCH"):
        return Path(os.environ["GWLB_FAST_CLASSBENCH"]).joinpath(*parts[1:])
    root = shared_data()
    return (root if root is not None else REPO.parent / "shared" / "data").joinpath(*parts)
