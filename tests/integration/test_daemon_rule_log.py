"""The daemon's rule log end to end: a software target, `nicfw run` (the Daemon) in a thread, a
frame that an audit rule watches, and the log line it leaves — in python logging, in the JSON
lines file, over the control socket and through `nicfw log`."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from controlplane.api import ApiError, log_recent
from controlplane.cli import cli
from controlplane.daemon import Daemon, DaemonOptions
from offload.target import SoftwareTarget

WEB_MAC, DB_MAC = "02:00:00:00:79:01", "02:00:00:00:79:02"
POLICY = f"""
workloads:
  web-79: {{addresses: [10.79.1.10], mac: "{WEB_MAC}", port: 1, tags: [web79]}}
  db-79: {{addresses: [10.79.2.10], mac: "{DB_MAC}", port: 2, tags: [db79]}}
groups:
  web79: {{match: {{tags: [web79]}}}}
  db79: {{match: {{tags: [db79]}}}}
sections:
  - name: lockdown-trial
    audit: true
    rules:
      - {{name: no-web-to-db, source: web79, destination: db79, protocol: tcp, ports: 5432,
          action: drop}}
  - name: main
    rules:
      - {{name: web-db, source: web79, destination: db79, protocol: tcp, ports: 5432,
          action: allow}}
      - {{name: web-db-ssh, source: web79, destination: db79, protocol: tcp, ports: 22,
          action: allow, log: true}}
default_action: drop
"""


@dataclass
class Running:
    target: SoftwareTarget
    daemon: Daemon
    socket: str
    log_path: Path


def wait_for(what: str, check: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(check) and check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    target = SoftwareTarget("127.0.0.1:0")
    address = target.start()
    sock = str(tmp_path / "control.sock")
    log_path = tmp_path / "state" / "rule-log.jsonl"
    options = DaemonOptions(
        target=address,
        policy_path=policy,
        control_socket=sock,
        rule_log=log_path,
        interval=0.05,
    )
    daemon = Daemon(options)
    thread = threading.Thread(target=daemon.run, name="daemon", daemon=True)
    thread.start()
    try:
        wait_for("the control socket", lambda: Path(sock).exists())
        yield Running(target, daemon, sock, log_path)
    finally:
        daemon.stop()
        thread.join(timeout=10)
        target.stop()
    assert not thread.is_alive()


def frame(sport: int, dport: int) -> bytes:
    ip = IP(src="10.79.1.10", dst="10.79.2.10")
    return bytes(Ether(dst=DB_MAC, src=WEB_MAC) / ip / TCP(sport=sport, dport=dport))


def records(sock: str) -> list[dict]:
    try:
        return list(log_recent(sock)["records"])
    except ApiError:
        return []


def test_an_audit_hit_leaves_a_log_line(running: Running, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="nicfw.rulelog")
    out = running.target.inject(1, frame(43000, 5432))
    assert [port for port, _ in out] == [2], "an audit drop is never enforced: web-db allows"
    wait_for("an audit record", lambda: records(running.socket))
    (rec,) = records(running.socket)
    assert rec["audit"] is True
    assert (rec["audit_rule"], rec["audit_section"]) == ("no-web-to-db", "lockdown-trial")
    assert (rec["rule"], rec["section"], rec["verdict"]) == ("web-db", "main", "allow")
    assert (rec["src"], rec["sport"], rec["dst"], rec["dport"], rec["proto"]) == (
        "10.79.1.10",
        43000,
        "10.79.2.10",
        5432,
        6,
    )
    lines = [json.loads(x) for x in running.log_path.read_text().splitlines()]
    assert lines == [rec]
    text = [r.getMessage() for r in caplog.records if r.name == "nicfw.rulelog"]
    assert any("audit=yes" in t and "audit_rule=no-web-to-db" in t for t in text), text

    # A logged (non-audit) rule, then the CLI: --audit shows only the audit hit.
    running.target.inject(1, frame(43001, 22))
    wait_for("the logged rule's record", lambda: len(records(running.socket)) == 2)
    runner = CliRunner()
    shown = runner.invoke(cli, ["log", "--socket", running.socket, "--json"])
    assert shown.exit_code == 0, shown.output
    rules = [json.loads(x)["rule"] for x in shown.output.splitlines()]
    assert rules == ["web-db", "web-db-ssh"]
    audit = runner.invoke(cli, ["log", "--socket", running.socket, "--audit"])
    assert audit.exit_code == 0, audit.output
    assert audit.output.count("\n") == 1 and "AUDIT no-web-to-db [lockdown-trial]" in audit.output


def test_nicfw_log_without_a_daemon_fails_clearly(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["log", "--socket", str(tmp_path / "none.sock")])
    assert result.exit_code != 0
    assert "cannot reach the nicfw daemon" in result.output
