"""The shared pipeline vectors (tests/vectors/pipeline_vectors.py), run over P4Runtime.

Against the software target by default; NICFW_TARGET=bmv2 runs the very same table against
simple_switch_grpc, so that the two implementations of firewall.p4 are held to one standard.
"""

from __future__ import annotations

import pytest
from vectors.p4rt import Client
from vectors.pipeline_vectors import VECTORS, Vector
from vectors.runner import run_vector
from vectors.targets import TargetHandle


@pytest.mark.parametrize("vector", VECTORS, ids=[v.name for v in VECTORS])
def test_vector(p4rt: Client, target: TargetHandle, vector: Vector) -> None:
    if not target.has_packets:
        pytest.skip(target.packets_reason)
    run_vector(p4rt, target, vector)


def test_vectors_cover_every_table_and_match_kind() -> None:
    """The table itself: every table of firewall.p4 and every match kind appear in it."""
    from offload.entries import Exact, Lpm, Optional, Range, Ternary
    from offload.p4schema import P4Schema

    tables = {e.table for v in VECTORS for e in v.entries}
    assert tables == {t.name for t in P4Schema.load().iter_tables()}
    kinds = {type(m) for v in VECTORS for e in v.entries for _, m in e.match}
    assert kinds == {Exact, Lpm, Ternary, Range, Optional}
    assert any(v.packet_in for v in VECTORS) and any(v.packet_out_port for v in VECTORS)
    assert any(v.groups for v in VECTORS) and any(v.counters for v in VECTORS)
