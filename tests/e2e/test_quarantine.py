"""Tagging a workload `quarantine` through `nicfw tag` cuts its traffic, offloaded flows included.

    [ns h1] --veth-- port 1 | software target | port 2 --veth-- [ns h2]
                              port 3 (service) --veth-- fast path

The daemon runs in this process with its control socket; the tag commands run as the real CLI.
An established TCP connection between h1 and h2 is offloaded to the flow cache; `nicfw tag add
h1 quarantine` must take its flow entries out and install the quarantine rules within one
second, and the connection's next packet is dropped (the quarantine rule's counter moves);
`nicfw tag rm` lets new connections through again.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from netns import ADDR, CLIENT, MAC, SERVER, hosts, veth_pair

from controlplane.daemon import Daemon, DaemonOptions
from dpdk_app.fastpath import find_binary
from offload.target import SoftwareTarget

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
    pytest.mark.skipif(shutil.which("ip") is None, reason="`ip` (iproute2) is not installed"),
]

SERVICE_PORT = 3
PORT = 5001
POLICY = f"""
version: 1
workloads:
  h1: {{addresses: [{ADDR[1]}], mac: "{MAC[1]}", port: 1, tags: [client]}}
  h2: {{addresses: [{ADDR[2]}], mac: "{MAC[2]}", port: 2, tags: [server]}}
groups:
  clients: {{match: {{tags: [client]}}}}
  servers: {{match: {{tags: [server]}}}}
  quarantine: {{match: {{tags: [quarantine]}}}}
sections:
  - name: quarantine
    rules:
      - {{name: quarantine-out, source: quarantine, destination: any, action: drop}}
      - {{name: quarantine-in, source: any, destination: quarantine, action: drop}}
  - name: app
    rules:
      - {{name: web, source: clients, destination: servers, protocol: tcp, ports: [{PORT}],
          action: allow}}
default_action: drop
"""


def nicfw(*args: str) -> subprocess.CompletedProcess[str]:
    """The real command line."""
    return subprocess.run(
        [sys.executable, "-c", "from controlplane.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def wait_for(predicate: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def backend() -> str:
    if find_binary() is not None:
        return "dpdk"
    if importlib.util.find_spec("dpdk_app.pyservice") is None:
        pytest.skip("no fast path backend (make dpdk, or dpdk_app.pyservice)")
    return "numba"


def test_quarantine_tag_cuts_offloaded_connection_and_removal_restores(tmp_path: Path) -> None:
    tag = f"{os.getpid() % 100000}q"
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    sock = str(tmp_path / "control.sock")
    with (
        hosts(tag, prefix="nfq") as topo,
        veth_pair(f"nfqt-{tag}", f"nfqf-{tag}", mtu=9000) as (svc_target, svc_fastpath),
    ):
        topo.static_arp()
        interfaces = {**topo.switch_if, SERVICE_PORT: svc_target}
        with SoftwareTarget("127.0.0.1:0", interfaces=interfaces) as target:
            daemon = Daemon(
                DaemonOptions(
                    target=target.address,
                    policy_path=policy,
                    service_port=SERVICE_PORT,
                    service_iface=svc_fastpath,
                    fastpath=backend(),  # type: ignore[arg-type]
                    flows_db=tmp_path / "flows.sqlite",
                    control_socket=sock,
                )
            )
            thread = threading.Thread(target=daemon.run, daemon=True)
            thread.start()
            try:
                assert wait_for(lambda: daemon.tags is not None, 60), "daemon did not start"
                service = daemon.service
                assert service is not None
                server = topo.popen(2, sys.executable, "-c", SERVER, str(PORT), "65536", "hold")
                assert server.stdout is not None and server.stdout.readline().strip() == "ready"
                client = topo.popen(
                    1, sys.executable, "-c", CLIENT, ADDR[2], str(PORT), "65536", "20", "2",
                    stdin=subprocess.PIPE,
                )  # fmt: skip
                assert client.stdout is not None and client.stdin is not None

                def ping() -> str:
                    client.stdin.write("still there?\n")  # type: ignore[union-attr]
                    client.stdin.flush()  # type: ignore[union-attr]
                    return client.stdout.readline().strip()  # type: ignore[union-attr]

                try:
                    assert client.stdout.readline().startswith("65536")
                    assert wait_for(lambda: len(service.offloaded()) >= 1, 5), "not offloaded"
                    assert ping() == "alive"

                    started = time.monotonic()
                    added = nicfw("tag", "--socket", sock, "add", "h1", "quarantine")
                    assert added.returncode == 0, added.stderr
                    assert wait_for(lambda: not service.offloaded(), 1.0)
                    assert time.monotonic() - started < 1.0
                    assert ping().startswith("cut")

                    counts = nicfw("counters", "--target", target.address, "--policy",
                                   str(policy), "--json")  # fmt: skip
                    assert counts.returncode == 0, counts.stderr
                    hits = {r["rule"]: r["packets"] for r in json.loads(counts.stdout)}
                    assert hits.get("quarantine-out", 0) + hits.get("quarantine-in", 0) >= 1

                    listed = nicfw("tag", "--socket", sock, "ls", "--json")
                    assert listed.returncode == 0, listed.stderr
                    assert any(t["workload"] == "h1" and t["tag"] == "quarantine"
                               for t in json.loads(listed.stdout))  # fmt: skip
                finally:
                    for p in (client, server):
                        p.kill()
                        p.wait()

                removed = nicfw("tag", "--socket", sock, "rm", "h1", "quarantine")
                assert removed.returncode == 0, removed.stderr
                server = topo.popen(2, sys.executable, "-c", SERVER, str(PORT), "4096")
                assert server.stdout is not None and server.stdout.readline().strip() == "ready"
                run = topo.run(1, sys.executable, "-c", CLIENT, ADDR[2], str(PORT), "4096", "10",
                               timeout=30)  # fmt: skip
                server.kill()
                server.wait()
                assert run.returncode == 0 and run.stdout.startswith("4096"), run.stderr
            finally:
                daemon.stop()
                thread.join(timeout=20)
            assert not thread.is_alive()
