"""`nicfw counters` on a real target: a same-instance template rule counts per instance, shown
as rule and instance columns, summed per rule or per instance with `--by`.

The policy is applied by the host agent; frames of two template instances go through the
target's pipeline; the counters are read back through the CLI.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from controller_state import primary_with_restore, schema_of
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from controlplane.agent import HostAgent
from controlplane.cli import cli
from controlplane.policy import load_policy, resolve
from offload.p4client import P4Client
from offload.p4schema import P4Schema

MACS = {n: f"02:00:00:00:78:{i:02x}" for i, n in enumerate(("web-a", "app-a", "web-b", "app-b"))}
ADDRS = {"web-a": "10.78.1.1", "app-a": "10.78.2.1", "web-b": "10.78.1.2", "app-b": "10.78.2.2"}
PORTS = {"web-a": 1, "app-a": 2, "web-b": 3, "app-b": 4}
POLICY = f"""
templates:
  shop:
    name: shop-78
    rules:
      - {{name: web-to-app, source: web78, destination: app78, protocol: tcp, ports: 8080,
          action: allow}}
instances:
  shop-a: {{template: shop}}
  shop-b: {{template: shop}}
workloads:
  web-a: {{addresses: [{ADDRS["web-a"]}], mac: "{MACS["web-a"]}", port: 1, tags: [web78],
           instance: shop-a}}
  app-a: {{addresses: [{ADDRS["app-a"]}], mac: "{MACS["app-a"]}", port: 2, tags: [app78],
           instance: shop-a}}
  web-b: {{addresses: [{ADDRS["web-b"]}], mac: "{MACS["web-b"]}", port: 3, tags: [web78],
           instance: shop-b}}
  app-b: {{addresses: [{ADDRS["app-b"]}], mac: "{MACS["app-b"]}", port: 4, tags: [app78],
           instance: shop-b}}
groups:
  web78: {{match: {{tags: [web78]}}}}
  app78: {{match: {{tags: [app78]}}}}
sections:
  - name: main
    rules:
      - {{name: plain, source: web78, destination: app78, protocol: tcp, ports: 9090,
          action: allow}}
default_action: drop
"""


@pytest.fixture
def client(target: Any, p4rt: Any) -> Iterator[P4Client]:
    """A primary P4Client; `p4rt` pushed the pipeline and fails the test if state is left."""
    with primary_with_restore(target) as c:
        yield c


def frame(src: str, dst: str, dport: int) -> bytes:
    ip = IP(src=ADDRS[src], dst=ADDRS[dst])
    return bytes(Ether(dst=MACS[dst], src=MACS[src]) / ip / TCP(sport=40000, dport=dport))


def counters(target: Any, *args: str) -> list[dict[str, Any]]:
    out = CliRunner().invoke(
        cli,
        ["counters", "--target", target.address, "--device-id", str(target.device_id), *args],
    )
    assert out.exit_code == 0, out.output
    rows: list[dict[str, Any]] = json.loads(out.stdout)
    return rows


def test_counters_by_rule_and_template_instance(
    target: Any, client: P4Client, tmp_path: Path
) -> None:
    if not target.has_packets:
        pytest.skip(f"{target.name}: {target.packets_reason}")
    schema: P4Schema = schema_of(target)
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(POLICY, encoding="utf-8")
    policy = load_policy(POLICY, str(policy_file))
    ids = {r.name: r.rule_id for r in resolve(policy).rules}
    assert {"web-to-app@shop-a", "web-to-app@shop-b", "plain"} <= ids.keys()
    HostAgent(client, schema).apply(policy)

    target.receive(2)
    sent = [
        ("web-a", "app-a", 8080),
        ("web-a", "app-a", 8080),
        ("web-b", "app-b", 8080),
        ("web-a", "app-a", 9090),
    ]
    for src, dst, dport in sent:
        target.send(PORTS[src], frame(src, dst, dport))
    target.settle()

    rows = counters(target, "--policy", str(policy_file), "--json")
    by_id = {r["rule_id"]: r for r in rows}
    a, b, plain = ids["web-to-app@shop-a"], ids["web-to-app@shop-b"], ids["plain"]
    assert (by_id[a]["rule"], by_id[a]["instance"], by_id[a]["packets"]) == (
        "web-to-app",
        "shop-a",
        2,
    )
    assert (by_id[b]["rule"], by_id[b]["instance"], by_id[b]["packets"]) == (
        "web-to-app",
        "shop-b",
        1,
    )
    assert (by_id[plain]["rule"], by_id[plain]["instance"], by_id[plain]["packets"]) == (
        "plain",
        "",
        1,
    )

    per_rule = {
        r["rule"]: r
        for r in counters(target, "--policy", str(policy_file), "--by", "rule", "--json")
    }
    assert per_rule["web-to-app"]["packets"] == 3
    assert sorted(per_rule["web-to-app"]["instances"]) == ["shop-a", "shop-b"]
    assert sorted(per_rule["web-to-app"]["rule_ids"]) == sorted([a, b])
    assert per_rule["plain"]["packets"] == 1

    per_instance = {
        r["instance"]: r
        for r in counters(target, "--policy", str(policy_file), "--by", "instance", "--json")
    }
    assert per_instance["shop-a"]["packets"] == 2 and per_instance["shop-a"]["rules"] == [
        "web-to-app"
    ]
    assert per_instance["shop-b"]["packets"] == 1
    assert per_instance[""]["packets"] == 1  # rules outside any template instance

    text = CliRunner().invoke(
        cli,
        ["counters", "--target", target.address, "--device-id", str(target.device_id),
         "--policy", str(policy_file)],
    )  # fmt: skip
    assert text.exit_code == 0, text.output
    line = next(ln for ln in text.output.splitlines() if "shop-b" in ln)
    assert "web-to-app" in line and str(b) in line
