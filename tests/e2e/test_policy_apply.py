"""Policy to packets through the `nicfw` command: apply, send, count, change, re-apply.

The CLI runs as a real subprocess against the test's target; verdicts are read from what the
pipeline forwards and per-rule hits from `nicfw counters`, and a policy edit must write only
the entries it changes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from vectors.p4rt import Client
from vectors.session import connect, next_election, restore, snapshot
from vectors.targets import TargetHandle

POLICY = """
version: 1
workloads:
  web-1: {addresses: [10.0.1.10], mac: "02:00:00:00:01:01", port: 1, tags: [web]}
  app-1: {addresses: [10.0.2.10], mac: "02:00:00:00:02:01", port: 2, tags: [app]}
groups:
  web: {match: {tags: [web]}}
  app: {match: {tags: [app]}}
  clients: {addresses: [192.0.2.0/24]}
services:
  api: {protocol: tcp, ports: [8080]}
  http: {protocol: tcp, ports: [80]}
  dns: {protocol: udp, ports: [53]}
sections:
  - name: main
    rules:
      - {name: clients-web, source: clients, destination: web, service: http, action: allow}
      - {name: web-app, source: web, destination: app, service: api, action: allow}
      - {name: no-dns, source: any, destination: any, service: dns, action: drop}
default_action: drop
"""

WEB_MAC, APP_MAC = "02:00:00:00:01:01", "02:00:00:00:02:01"
UPLINK = 4


def nicfw(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the real `nicfw` command line."""
    return subprocess.run(
        [sys.executable, "-c", "from controlplane.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def nicfw_json(*args: str) -> object:
    result = nicfw(*args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def tcp(src: str, dst: str, dst_mac: str, dport: int) -> bytes:
    return bytes(Ether(dst=dst_mac) / IP(src=src, dst=dst) / TCP(sport=40000, dport=dport))


def forwarded(target: TargetHandle, port: int, frame: bytes, out_port: int) -> bool:
    """Send `frame` in on `port`; whether it came out of `out_port`."""
    target.receive(out_port)  # drain
    target.send(port, frame)
    target.settle()
    deadline = time.monotonic() + max(target.grace, 0.05)
    while True:
        if target.receive(out_port, timeout=0.05):
            return True
        if time.monotonic() > deadline:
            return False


@pytest.fixture
def undo(p4rt: Client, target: TargetHandle) -> Iterator[None]:
    """Put the target back as it was: the commands wrote as another, higher, primary."""
    before = snapshot(p4rt)
    yield
    checker = connect(target)
    try:
        restore(checker, before, snapshot(checker))
    finally:
        checker.close()


@pytest.fixture
def election() -> str:
    # The next of the session's election ids: above the p4rt fixture's, so that the command
    # becomes primary, and below the ones later tests take (the target remembers the highest).
    return str(next_election().low)


def test_apply_enforce_count_and_change(
    undo: None, target: TargetHandle, tmp_path: Path, election: str
) -> None:
    if not target.has_packets:
        pytest.skip(f"{target.name}: {target.packets_reason}")
    addr = ["--target", target.address, "--device-id", str(target.device_id)]
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)

    report = nicfw_json("policy", "apply", str(policy), *addr, "--election-id", election)
    assert report["failures"] == [] and report["inserted"] > 0

    assert forwarded(target, UPLINK, tcp("192.0.2.7", "10.0.1.10", WEB_MAC, 80), 1)
    assert forwarded(target, UPLINK, tcp("192.0.2.7", "10.0.1.10", WEB_MAC, 80), 1)
    assert forwarded(target, 1, tcp("10.0.1.10", "10.0.2.10", APP_MAC, 8080), 2)
    assert not forwarded(target, UPLINK, tcp("203.0.113.9", "10.0.1.10", WEB_MAC, 80), 1)
    assert not forwarded(target, 1, tcp("10.0.1.10", "10.0.2.10", APP_MAC, 22), 2)
    dns = bytes(Ether(dst=APP_MAC) / IP(src="10.0.1.10", dst="10.0.2.10") / UDP(dport=53))
    assert not forwarded(target, 1, dns, 2)

    hits = {
        row["rule"]: row["packets"]
        for row in nicfw_json("counters", *addr, "--policy", str(policy))
    }  # type: ignore[union-attr]
    assert hits["clients-web"] == 2
    assert hits["web-app"] == 1
    assert hits["no-dns"] == 1

    # Change one rule's port: the diff names exactly that rule's ACL entry, and the apply
    # writes nothing else.
    policy.write_text(POLICY.replace("ports: [8080]", "ports: [8443]"))
    changes = nicfw_json("policy", "diff", str(policy), *addr)
    assert isinstance(changes, dict)
    assert [r["table"] for r in changes["insert"]] == ["acl"]
    assert [r["table"] for r in changes["delete"]] == ["acl"]
    assert changes["modify"] == []
    assert "8443" in changes["insert"][0]["match"] and "8080" in changes["delete"][0]["match"]

    report = nicfw_json("policy", "apply", str(policy), *addr, "--election-id", election)
    assert (report["inserted"], report["modified"], report["deleted"]) == (1, 0, 1)
    assert report["unchanged"] > 0

    assert forwarded(target, 1, tcp("10.0.1.10", "10.0.2.10", APP_MAC, 8443), 2)
    assert not forwarded(target, 1, tcp("10.0.1.10", "10.0.2.10", APP_MAC, 8080), 2)

    # Turning on a rule's logging changes only the rule log's table, and the diff shows it.
    policy.write_text(
        POLICY.replace("ports: [8080]", "ports: [8443]").replace(
            "service: api, action: allow}", "service: api, action: allow, log: true}"
        )
    )
    changes = nicfw_json("policy", "diff", str(policy), *addr)
    assert isinstance(changes, dict)
    assert [r["table"] for r in changes["insert"]] == ["log_rules"]
    assert changes["modify"] == [] and changes["delete"] == []
    report = nicfw_json("policy", "apply", str(policy), *addr, "--election-id", election)
    assert (report["inserted"], report["modified"], report["deleted"]) == (1, 0, 0)
    assert nicfw_json("policy", "diff", str(policy), *addr) == {
        "insert": [],
        "modify": [],
        "delete": [],
        "unchanged": report["unchanged"] + 1,
    }
    # Counters of untouched rules survive the change: their entries were not rewritten.
    hits = {
        row["rule"]: row["packets"]
        for row in nicfw_json("counters", *addr, "--policy", str(policy))
    }  # type: ignore[union-attr]
    assert hits["clients-web"] == 2


def test_bad_policy_changes_nothing(
    undo: None, target: TargetHandle, tmp_path: Path, election: str
) -> None:
    addr = ["--target", target.address, "--device-id", str(target.device_id)]
    bad = tmp_path / "bad.yaml"
    bad.write_text(POLICY.replace("destination: app", "destination: nosuchgroup"))
    before = nicfw_json("tables", *addr)
    result = nicfw("policy", "apply", str(bad), *addr, "--election-id", election)
    assert result.returncode != 0
    assert "nosuchgroup" in result.stderr
    assert nicfw_json("tables", *addr) == before


def test_unreachable_target_is_one_clear_line(tmp_path: Path) -> None:
    result = nicfw("tables", "--target", "127.0.0.1:1")
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "127.0.0.1:1" in lines[0] and "unreachable" in lines[0]
