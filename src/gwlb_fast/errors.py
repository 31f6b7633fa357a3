"""Exception classes. Each inherits from the builtin it refines and from ``GwlbError`` (one ``except`` in the CLI)."""


class GwlbError(Exception):
    """Base class of every error gwlb-fast raises on purpose."""


class ConfigError(ValueError, GwlbError):
    """An invalid topology, policy or events file: the message names the file, the key path and the problem."""


class PcapError(ValueError, GwlbError):
    """An unreadable capture: the message names the file, the byte offset and the problem."""

    def __init__(self, path, offset, problem):
        self.path = str(path)
        self.offset = offset
        self.problem = problem
        where = f" at byte {offset}" if offset is not None else ""
        super().__init__(f"{self.path}{where}: {problem}")

    def __reduce__(self):
        # pickled by its three arguments (the default passes the message alone), so it crosses process boundaries
        return type(self), (self.path, self.offset, self.problem)


class ClusterError(ConnectionError, GwlbError):
    """The Ray cluster that ``run --ray ADDRESS`` names does not answer: the message names the address and why."""


class WorkerError(RuntimeError, GwlbError):
    """A worker process of ``run --workers`` failed: the message names the capture, the worker and the problem;
    ``details`` holds the worker's traceback, if it sent one."""

    def __init__(self, message: str, details: str | None = None):
        super().__init__(message)
        self.details = details
