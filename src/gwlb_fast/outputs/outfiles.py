"""Output files that never harm inputs (DESIGN.md section 10, "Files").

Every file a command writes goes through :class:`OutputFile`: it is created under a temporary name in the
destination's own directory (``.NAME.XXXXXX.part``) and renamed over the destination only when complete
(``commit``), so an interrupted or failed command leaves the destination as it was, and a reader of the
destination never sees half a file. ``discard`` removes the temporary file.

:func:`refuse_overlap` is called before anything is created: an output path that is an input, or resolves to one
(same real path, or same file through a symlink or a hard link: equal ``st_dev`` and ``st_ino``), raises
:class:`~gwlb_fast.errors.ConfigError` (the CLI's exit 2, one line), and nothing has been written.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable

from ..errors import ConfigError

__all__ = ["OutputFile", "refuse_overlap", "same_file"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def same_file(a, b) -> bool:
    """Whether paths a and b name the same file: equal real paths, or (both existing) equal device and inode."""
    a, b = os.fspath(a), os.fspath(b)
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def refuse_overlap(inputs: Iterable, outputs: Iterable) -> None:
    """Raise ConfigError if an output is, or resolves to, an input, or two outputs are the same file.

    ``inputs`` and ``outputs`` are paths (None entries are ignored; non-path inputs such as open file objects are
    ignored too). Called before any output is created.
    """
    ins = [os.fspath(p) for p in inputs if isinstance(p, (str, bytes, os.PathLike))]
    outs = [os.fspath(p) for p in outputs if isinstance(p, (str, bytes, os.PathLike))]
    for o in outs:
        for i in ins:
            if same_file(o, i):
                what = "is the input" if os.fspath(o) == os.fspath(i) else f"resolves to the input {os.fsdecode(i)}"
                raise ConfigError(f"{os.fsdecode(o)}: output {what}; refusing to overwrite it")
    for k, o in enumerate(outs):
        for o2 in outs[k + 1:]:
            if same_file(o, o2):
                raise ConfigError(f"{os.fsdecode(o)}: named twice as an output ({os.fsdecode(o2)})")


class OutputFile:
    """A file written under a temporary name beside ``path`` and renamed to ``path`` by :meth:`commit`.

    Parameters
    ----------
    path : str or os.PathLike
        The destination. Its directory must exist.
    text : bool
        Open the temporary file in text mode (``newline=""``, UTF-8) instead of unbuffered binary.

    Attributes
    ----------
    path : str
        The destination.
    file : file object
        The open temporary file (write to it).
    """

    def __init__(self, path, text: bool = False):
        self.path = os.fsdecode(os.fspath(path))
        directory, name = os.path.split(self.path)
        if os.path.isdir(self.path):
            raise IsADirectoryError(21, "is a directory", self.path)
        try:
            fd, self.tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=directory or ".")
        except OSError as e:
            # name the destination, not the temporary file (its folder is missing, read-only, ...)
            raise type(e)(e.errno, e.strerror, self.path) from None
        try:
            # mkstemp creates 0600; a finished output gets the permissions a plain open() would have given it
            os.fchmod(fd, 0o666 & ~_umask())
            if text:
                self.file = open(fd, "w", newline="", encoding="utf-8")  # noqa: SIM115 (closed by commit/discard)
            else:
                self.file = open(fd, "wb", buffering=0)  # noqa: SIM115 (closed by commit/discard)
        except BaseException:
            os.close(fd)
            os.unlink(self.tmp)
            raise
        self.done = False

    def commit(self) -> None:
        """Close the temporary file and rename it over the destination (atomic within one file system)."""
        if self.done:
            return
        self.done = True
        try:
            self.file.close()
            os.replace(self.tmp, self.path)
        except BaseException:
            self._unlink()
            raise

    def discard(self) -> None:
        """Close and remove the temporary file; the destination is left untouched."""
        if self.done:
            return
        self.done = True
        try:
            self.file.close()
        finally:
            self._unlink()

    def _unlink(self) -> None:
        try:
            os.unlink(self.tmp)
        except FileNotFoundError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()

    def __repr__(self) -> str:
        return f"OutputFile({self.path!r})"
