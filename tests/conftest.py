"""Fixtures shared by every tier: the P4Info, and a P4Runtime target to test against.

`target` starts the nicfw software target in this process by default. NICFW_TARGET=bmv2 runs
simple_switch_grpc with the p4c-built firewall.p4 instead (skipped, with the reason, when p4c
or simple_switch_grpc is missing); NICFW_TARGET_ADDR=host:port uses a target that is already
running. `p4rt` hands a test a primary controller connection with the pipeline in place, and
fails the test if it leaves entries, groups or default actions behind.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
for path in (TESTS, TESTS.parent):  # `vectors` and `bench` import however pytest was started
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from vectors.p4rt import Client  # noqa: E402
from vectors.session import connect, restore, snapshot  # noqa: E402
from vectors.targets import TargetHandle, Unavailable, select_target  # noqa: E402


@pytest.fixture(scope="session")
def p4info_path() -> Path:
    """p4/firewall.p4info.txtpb."""
    return TESTS.parent / "p4" / "firewall.p4info.txtpb"


@pytest.fixture(scope="session")
def target() -> Iterator[TargetHandle]:
    """The P4Runtime target of this run (see the module docstring)."""
    try:
        handle = select_target()
    except Unavailable as exc:
        pytest.skip(str(exc))
    try:
        yield handle
    finally:
        handle.close()


@pytest.fixture
def p4rt(target: TargetHandle) -> Iterator[Client]:
    """A primary connection to `target` with firewall.p4 pushed; checks the test cleaned up."""
    client = connect(target)
    before = snapshot(client)
    try:
        yield client
    finally:
        client.close()
        checker = connect(target)
        try:
            after = snapshot(checker)
            if after != before:
                restore(checker, before, after)
                pytest.fail("the test left entries, groups or default actions behind")
        finally:
            checker.close()
