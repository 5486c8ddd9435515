"""Packet classifiers in numba: TupleMerge (incremental updates) and a linear-scan baseline.

Rules are RULE_DTYPE records (dpdk_app/layout.py); headers are HEADER_DTYPE batches
(headers.py); answers are rule slots (rule i of a build is slot i), -1 for no match.
"""

from dpdk_app.classifier.headers import HEADER_DTYPE
from dpdk_app.classifier.tuplemerge import LinearScan, TupleMerge, warm_up

__all__ = ["HEADER_DTYPE", "LinearScan", "TupleMerge", "warm_up"]
