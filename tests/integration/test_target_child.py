"""The software target as a child process, and the daemon's embedded target that uses it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from controlplane.daemon import Daemon, DaemonOptions
from offload.p4client import P4Client
from offload.p4errors import P4ClientError
from offload.p4schema import P4Schema
from offload.target.child import TargetProcessError, target_process

POLICY = """
version: 1
workloads:
  web-1: {addresses: [10.0.1.10], mac: "02:00:00:00:01:01", port: 1}
groups:
  web: {members: [web-1]}
sections:
  - name: s
    rules:
      - {name: to-web, source: any, destination: web, protocol: tcp, ports: [80], action: allow}
default_action: drop
"""


def test_the_child_listens_where_it_says_and_stops_on_exit() -> None:
    schema = P4Schema.load()
    with target_process("127.0.0.1:0", device_id=3) as child:
        host, port = child.address.rsplit(":", 1)
        assert host == "127.0.0.1" and int(port) > 0
        with P4Client.connect(child.address, 3, 1, schema=schema) as client:
            client.set_pipeline(schema)
            assert client.read_table_entries(schema) == []
        proc = child.proc
    assert proc.poll() is not None  # stopped with the context


def test_a_child_that_cannot_start_says_why() -> None:
    with (
        pytest.raises(TargetProcessError, match="bogus"),
        target_process("127.0.0.1:0", interfaces=["bogus"], timeout=60),
    ):
        pass  # pragma: no cover - never reached


def test_the_daemon_runs_its_embedded_target_as_a_child(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    options = DaemonOptions(
        policy_path=policy,
        embedded_address="127.0.0.1:0",
        control_socket=None,
        rule_log=tmp_path / "rule-log.jsonl",
    )
    daemon = Daemon(options)
    daemon.run(once=True)
    out = capsys.readouterr().out
    assert f"policy enforced on {daemon.address}:" in out
    inserted = int(out.split(f"{daemon.address}: ", 1)[1].split(" inserted")[0])
    assert inserted > 0
    # The child target is gone with the daemon: nothing listens there any more.
    with pytest.raises(P4ClientError, match="unreachable"):
        P4Client.connect(daemon.address, 1, None, connect_timeout=1)


ABANDON = """
import os, sys
from offload.target.child import target_process
with target_process("127.0.0.1:0") as child:
    print(child.proc.pid, flush=True)
    os._exit(0)  # dies without stopping the child
"""


def test_a_child_whose_parent_dies_stops_by_itself() -> None:
    run = subprocess.run(
        [sys.executable, "-c", ABANDON], capture_output=True, text=True, timeout=120
    )
    pid = int(run.stdout.split()[0])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by init) counts as gone
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ", 1)[1][0] != "Z"
