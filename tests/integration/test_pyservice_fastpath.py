"""The DPDK fast path's pcap tests, run against the numba fallback (python -m dpdk_app.pyservice).

The vectors, frames and expectations are those of test_dpdk_fastpath.py, imported unchanged:
only the process they run against differs (FastPath(backend="numba"), same command line, same
control channel). Together with that module this is the differential test of issue 4: one table
of vectors, the DPDK path and the numba path, the same verdicts, drop reasons and records.
The AddressSanitizer run is C-only and is not repeated here.
"""

from __future__ import annotations

import functools

import pytest
import test_dpdk_fastpath as dpdk_tests
from test_dpdk_fastpath import (  # noqa: F401 - collected here, against the numba backend
    test_bad_requests_change_nothing,
    test_every_truncation_and_bit_flip_is_survived,
    test_identity_class_decides_identity_rules,
    test_malformed_frames_are_dropped_and_valid_ones_forwarded,
    test_no_tcp_pickup_drops_mid_stream_segments,
    test_reject_answers_with_rst_and_icmp,
    test_tcp_udp_icmp_connection_tracking,
)

from dpdk_app.fastpath import FastPath


@pytest.fixture(autouse=True)
def numba_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every FastPath the imported tests start is the numba service."""
    monkeypatch.setattr(dpdk_tests, "FastPath", functools.partial(FastPath, backend="numba"))
