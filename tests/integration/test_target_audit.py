"""Audit mode on a real target: an audit drop ahead of an allow counts, and the packet passes.

The policy is applied by the host agent (acl_audit is one of its managed tables), a frame goes
through the target's pipeline, and the counters are read back both directly and through
`nicfw counters`, which names each rule's mode.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner
from controller_state import primary_with_restore, schema_of
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from controlplane.agent import HostAgent
from controlplane.cli import cli
from controlplane.policy import Policy, load_policy, resolve
from offload import names
from offload.counters import hits_by_param
from offload.p4client import P4Client
from offload.p4schema import P4Schema

WEB_MAC, APP_MAC = "02:00:00:00:77:01", "02:00:00:00:77:02"
POLICY = f"""
workloads:
  web-77: {{addresses: [10.77.1.10], mac: "{WEB_MAC}", port: 1, tags: [web77]}}
  app-77: {{addresses: [10.77.2.10], mac: "{APP_MAC}", port: 2, tags: [app77]}}
groups:
  web77: {{match: {{tags: [web77]}}}}
  app77: {{match: {{tags: [app77]}}}}
sections:
  - name: trial
    audit: true
    rules:
      - {{name: trial-drop, source: web77, destination: app77, protocol: tcp, ports: 8080,
          action: drop}}
  - name: main
    rules:
      - {{name: web-app, source: web77, destination: app77, protocol: tcp, ports: 8080,
          action: allow}}
default_action: drop
"""


@pytest.fixture
def schema(target: Any) -> P4Schema:
    schema = schema_of(target)
    if not any(t.name == names.ACL_AUDIT for t in schema.iter_tables()):
        pytest.skip(f"{target.name}: its P4Info has no {names.ACL_AUDIT}")
    return schema


@pytest.fixture
def client(target: Any, p4rt: Any, schema: P4Schema) -> Iterator[P4Client]:
    """A primary P4Client; `p4rt` pushed the pipeline and fails the test if state is left."""
    with primary_with_restore(target) as c:
        yield c


def rule_id(policy: Policy, name: str) -> int:
    return next(r.rule_id for r in resolve(policy).rules if r.name == name)


def frame(dport: int) -> bytes:
    ip = IP(src="10.77.1.10", dst="10.77.2.10")
    return bytes(Ether(dst=APP_MAC, src=WEB_MAC) / ip / TCP(sport=40000, dport=dport))


def test_audit_drop_counts_but_the_allow_forwards(
    target: Any, client: P4Client, schema: P4Schema
) -> None:
    if not target.has_packets:
        pytest.skip(f"{target.name}: {target.packets_reason}")
    policy = load_policy(POLICY, "audit.yaml")
    trial, allow = rule_id(policy, "trial-drop"), rule_id(policy, "web-app")
    result = HostAgent(client, schema).apply(policy)
    assert result.report.inserted > 0

    audit_entries = client.read_table_entries(schema, names.ACL_AUDIT)
    assert [e.params_dict["rule_id"] for e in audit_entries] == [trial]
    assert trial not in {e.params_dict["rule_id"] for e in client.read_table_entries(schema)
                         if e.table == names.ACL}  # fmt: skip

    target.receive(2)  # drain
    target.send(1, frame(8080))
    target.settle()
    assert target.receive(2, timeout=2.0), "the audit drop must not drop: web-app allows"
    # Traffic the audit rule does not match leaves its counter alone (and is dropped).
    target.send(1, frame(8081))
    target.settle()

    audit = hits_by_param(client.read_direct_counters(schema, names.ACL_AUDIT))
    enforced = hits_by_param(client.read_direct_counters(schema))
    assert audit[trial].packets == 1
    assert enforced[allow].packets == 1
    assert trial not in enforced

    runner = CliRunner()
    out = runner.invoke(
        cli,
        ["counters", "--target", target.address, "--device-id", str(target.device_id), "--json"],
    )
    assert out.exit_code == 0, out.output
    rows = {row["rule_id"]: row for row in json.loads(out.stdout)}
    assert (rows[trial]["mode"], rows[trial]["packets"]) == ("audit", 1)
    assert (rows[allow]["mode"], rows[allow]["packets"]) == ("enforced", 1)
