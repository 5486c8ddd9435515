"""The DPDK fast path's live service-port tests, run against the numba fallback.

Same veth pair, same raw-socket pipeline, same tests (imported from test_dpdk_service_port.py);
the fast path is `python -m dpdk_app.pyservice` on an AF_PACKET socket instead of nicfw-fastpath
on net_af_packet. Needs root (veth, AF_PACKET), not the DPDK binary.
"""

from __future__ import annotations

import functools
import os
import shutil

import pytest
import test_dpdk_service_port as dpdk_tests
from test_dpdk_service_port import (  # noqa: F401 - fixtures and tests, numba backend here
    open_port,
    test_a_storm_of_garbage_changes_nothing,
    test_flow_del_removes_both_directions_unless_seen_since,
    test_flush_forgets_every_flow,
    test_idle_timeouts_end_flows_and_an_open_connection_resumes,
    test_resimulation_removes_only_flows_no_longer_allowed,
    veth,
)

from dpdk_app.fastpath import FastPath

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="veth pairs and AF_PACKET need root"),
    pytest.mark.skipif(shutil.which("ip") is None, reason="iproute2 (ip) is not installed"),
]


@pytest.fixture(autouse=True)
def numba_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every FastPath the imported tests start is the numba service."""
    monkeypatch.setattr(dpdk_tests, "FastPath", functools.partial(FastPath, backend="numba"))
