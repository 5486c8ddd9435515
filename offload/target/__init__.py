"""The nicfw software target: a P4Runtime server that executes firewall.p4 (see target.py)."""

from offload.target.target import SoftwareTarget

__all__ = ["SoftwareTarget"]
