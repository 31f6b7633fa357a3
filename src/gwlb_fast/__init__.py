"""gwlb-fast: a batched packet engine modelling a cloud Gateway Load Balancer and its firewall fleet.

outbound: app -> GWLBe -> GWLB ==Geneve==> FW -> GWLB -> GWLBe -> NAT gateway -> Internet (and the mirror path back).

Stable entry points (DESIGN.md section 8): ``read_pcap``, ``write_pcap``, ``geneve.encap``/``geneve.decap``,
``Policy.from_yaml``/``Policy.from_classbench``/``compile().classify``, ``Pipeline.from_yaml(...).run(...)``.
"""
from . import geneve, synth
from .batch import PacketBatch
from .errors import ConfigError, GwlbError, PcapError
from .pcapio import PcapReader, PcapWriter, read_pcap, write_pcap
from .pipeline import Pipeline
from .policy import Action, Policy
from .status import PktStatus

__version__ = "0.1.0"

__all__ = [
    "Action", "ConfigError", "GwlbError", "PacketBatch", "PcapError", "PcapReader", "PcapWriter", "Pipeline",
    "PktStatus", "Policy", "__version__", "geneve", "read_pcap", "synth", "write_pcap",
]
