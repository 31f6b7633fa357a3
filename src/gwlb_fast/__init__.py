"""gwlb-fast: a batched packet engine modelling a cloud Gateway Load Balancer and its firewall fleet.

outbound: app -> GWLBe -> GWLB ==Geneve==> FW -> GWLB -> GWLBe -> NAT gateway -> Internet (and the mirror path back).

Stable entry points (DESIGN.md section 8): ``read_pcap``, ``write_pcap``, ``geneve.encap``/``geneve.decap``,
``Policy.from_yaml``/``Policy.from_classbench``/``compile().classify``, ``Pipeline.from_yaml(...).run(...)``.
"""
import os as _os
import sys as _sys

_collect_later = False  # the command line turned the garbage collector off until its configuration is loaded

# The command line's own process (``gwlb-fast``, ``python -m gwlb_fast``), not a program that imports the engine:
# - NumPy's BLAS, which the engine never calls, starts no threads of its own (each spins on a core after NumPy's
#   import: 0.14 s of CPU time and 26 ms of wall time of a one-packet run of the 1,000-rule topology, hyperfine
#   medians);
# - the cyclic garbage collector waits until the configuration is loaded (cli.collect_from_here): imports, the YAML
#   and a thousand rules make objects that all live to the end, and the collector walked them over and over
#   (one-packet run of the 1,000-rule topology: 1.16x faster without).
if "numpy" not in _sys.modules and (_os.path.basename(getattr(_sys, "argv", [""])[0] or "") == "gwlb-fast"
                                    or getattr(_sys, "argv", [""])[:1] == ["-m"]):
    import gc as _gc

    _os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    if _gc.isenabled():
        _gc.disable()
        _collect_later = True

from . import geneve
from .batch import PacketBatch
from .errors import ConfigError, GwlbError, PcapError
from .pcapio import PcapReader, PcapWriter, read_pcap, write_pcap
from .pipeline import Pipeline
from .stages.policy import Action, Policy
from .status import PktStatus

__version__ = "0.1.0"


def __getattr__(name: str):
    # ``gwlb_fast.synth`` is imported on first use: the commands that replay a capture never need it (start-up)
    if name == "synth":
        import importlib

        return importlib.import_module(".synth", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "Action", "ConfigError", "GwlbError", "PacketBatch", "PcapError", "PcapReader", "PcapWriter", "Pipeline",
    "PktStatus", "Policy", "__version__", "geneve", "read_pcap", "synth", "write_pcap",
]
