"""gwlb-fast: a batched packet engine modelling a cloud Gateway Load Balancer and its firewall fleet.

outbound: app -> GWLBe -> GWLB ==Geneve==> FW -> GWLB -> GWLBe -> NAT gateway -> Internet (and the mirror path back).
"""
from .batch import PacketBatch
from .errors import ConfigError, GwlbError, PcapError
from .status import PktStatus

__version__ = "0.1.0"

__all__ = ["PacketBatch", "PktStatus", "GwlbError", "ConfigError", "PcapError", "__version__"]
