"""The rule log's digest on a real target over gRPC: DigestEntry config, DigestList, acks.

A policy with a logged rule and an audit rule is applied by the host agent (acl.log_rules is
one of its tables); frames go through the target; the primary's stream must carry exactly one
digest per new flow until the list is acked, audit hits must be reported without changing the
verdict, and bad DigestEntry writes must be refused and change nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from controller_state import primary_with_restore, schema_of
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from controlplane.agent import HostAgent
from controlplane.policy import Policy, load_policy, resolve
from offload import names
from offload.digests import DigestList, digest_infos
from offload.p4client import P4Client
from offload.p4errors import WriteError
from offload.p4schema import P4Schema
from offload.p4values import ip_to_int128
from offload.proto import p4r, rpc_code

WEB_MAC, APP_MAC = "02:00:00:00:78:01", "02:00:00:00:78:02"
POLICY = f"""
workloads:
  web-78: {{addresses: [10.78.1.10], mac: "{WEB_MAC}", port: 1, tags: [web78]}}
  app-78: {{addresses: [10.78.2.10], mac: "{APP_MAC}", port: 2, tags: [app78]}}
groups:
  web78: {{match: {{tags: [web78]}}}}
  app78: {{match: {{tags: [app78]}}}}
sections:
  - name: trial
    audit: true
    rules:
      - {{name: trial-drop, source: web78, destination: app78, protocol: tcp, ports: 9090,
          action: drop}}
  - name: main
    rules:
      - {{name: web-app-logged, source: web78, destination: app78, protocol: tcp, ports: 8080,
          action: allow, log: true}}
      - {{name: web-app-quiet, source: web78, destination: app78, protocol: tcp, ports: 9090,
          action: allow}}
default_action: drop
"""
WAIT = 2.0


@pytest.fixture
def schema(target: Any) -> P4Schema:
    schema = schema_of(target)
    if names.LOG_DIGEST not in digest_infos(schema.p4info):
        pytest.skip(f"{target.name}: its P4Info has no {names.LOG_DIGEST} digest")
    return schema


@pytest.fixture
def client(target: Any, p4rt: Any, schema: P4Schema) -> Iterator[P4Client]:
    """A primary client that acks by hand; the digest is unconfigured again afterwards."""
    if not target.has_packets:
        pytest.skip(f"{target.name}: {target.packets_reason}")
    with primary_with_restore(target) as c:
        c.auto_ack_digests = False
        try:
            yield c
        finally:
            if c.read_digest_config(schema, names.LOG_DIGEST) is not None:
                digest_id = digest_infos(schema.p4info)[names.LOG_DIGEST].id
                request = c.new_write_request()
                update = request.updates.add(type=p4r.Update.DELETE)
                update.entity.digest_entry.digest_id = digest_id
                assert c.write_request(request) == []


def rule_id(policy: Policy, name: str) -> int:
    return next(r.rule_id for r in resolve(policy).rules if r.name == name)


def frame(sport: int, dport: int) -> bytes:
    ip = IP(src="10.78.1.10", dst="10.78.2.10")
    return bytes(Ether(dst=APP_MAC, src=WEB_MAC) / ip / TCP(sport=sport, dport=dport))


def drain(client: P4Client) -> list[DigestList]:
    out = []
    while (got := client.digest_list(timeout=0.3)) is not None:
        out.append(got)
    return out


def send(target: Any, *frames: bytes) -> None:
    for f in frames:
        target.send(1, f)
    target.settle()


def test_a_logged_rule_is_reported_once_per_flow_until_acked(
    target: Any, client: P4Client, schema: P4Schema
) -> None:
    policy = load_policy(POLICY, "log.yaml")
    logged = rule_id(policy, "web-app-logged")
    HostAgent(client, schema).apply(policy)
    entries = client.read_table_entries(schema, names.LOG_RULES)
    assert [e.match_dict["rule_id"].value for e in entries] == [logged]

    send(target, frame(41000, 8080))  # digest not configured yet: nothing
    client.configure_digest(schema, names.LOG_DIGEST, max_list_size=1, ack_timeout_ns=60 * 10**9)
    config = client.read_digest_config(schema, names.LOG_DIGEST)
    assert config is not None and (config.max_list_size, config.ack_timeout_ns) == (1, 60 * 10**9)
    target.receive(2)
    send(target, frame(41001, 8080), frame(41001, 8080), frame(41002, 8080), frame(41003, 9091))
    assert len(target.receive(2, timeout=WAIT)) == 3  # logging never drops
    lists = drain(client)
    flows = [(s["l4_src"], s["rule_id"], s["verdict"]) for d in lists for s in d.samples]
    assert flows == [(41001, logged, names.Verdict.ALLOW), (41002, logged, names.Verdict.ALLOW)]
    sample = lists[0].samples[0]
    assert (sample["ip_src"], sample["ip_dst"], sample["ip_proto"], sample["l4_dst"]) == (
        ip_to_int128("10.78.1.10"),
        ip_to_int128("10.78.2.10"),
        6,
        8080,
    )
    assert sample["audit_rule_id"] == 0

    send(target, frame(41001, 8080))  # not acked yet: still suppressed
    assert drain(client) == []
    client.ack_digest(lists[0].digest_id, lists[0].list_id)
    time.sleep(0.5)  # an ack is a stream message with no reply: let the target take it
    send(target, frame(41001, 8080), frame(41002, 8080))  # 41001 acked: reported again
    again = drain(client)
    assert [s["l4_src"] for d in again for s in d.samples] == [41001]


def test_an_audit_hit_is_reported_and_the_verdict_stands(
    target: Any, client: P4Client, schema: P4Schema
) -> None:
    policy = load_policy(POLICY, "log.yaml")
    trial, quiet = rule_id(policy, "trial-drop"), rule_id(policy, "web-app-quiet")
    HostAgent(client, schema).apply(policy)
    client.configure_digest(schema, names.LOG_DIGEST, max_list_size=1)
    target.receive(2)
    send(target, frame(42000, 9090))
    assert target.receive(2, timeout=WAIT), "an audit drop must not drop: web-app-quiet allows"
    (got,) = drain(client)
    (sample,) = got.samples
    assert (sample["rule_id"], sample["audit_rule_id"], sample["verdict"]) == (
        quiet,
        trial,
        names.Verdict.ALLOW,
    )


def test_bad_digest_config_is_refused_and_changes_nothing(
    client: P4Client, schema: P4Schema
) -> None:
    digest_id = digest_infos(schema.p4info)[names.LOG_DIGEST].id

    def write(utype: int, entry: p4r.DigestEntry) -> int:
        request = client.new_write_request()
        request.updates.add(type=utype).entity.digest_entry.CopyFrom(entry)
        errors = client.write_request(request)
        return errors[0].code if errors else rpc_code.OK

    negative = p4r.DigestEntry(digest_id=digest_id)
    negative.config.max_timeout_ns = -1
    assert write(p4r.Update.INSERT, negative) == rpc_code.INVALID_ARGUMENT
    assert client.read_digest_config(schema, names.LOG_DIGEST) is None
    unknown = p4r.DigestEntry(digest_id=digest_id ^ 0xFF)
    unknown.config.max_list_size = 1
    assert write(p4r.Update.INSERT, unknown) == rpc_code.NOT_FOUND
    no_config = p4r.DigestEntry(digest_id=digest_id)
    assert write(p4r.Update.INSERT, no_config) == rpc_code.INVALID_ARGUMENT
    good = p4r.DigestEntry(digest_id=digest_id)
    good.config.max_list_size = 4
    assert write(p4r.Update.MODIFY, good) == rpc_code.NOT_FOUND
    assert write(p4r.Update.INSERT, good) == rpc_code.OK
    assert write(p4r.Update.INSERT, good) == rpc_code.ALREADY_EXISTS
    client.configure_digest(schema, names.LOG_DIGEST, max_list_size=8)  # INSERT, then MODIFY
    config = client.read_digest_config(schema, names.LOG_DIGEST)
    assert config is not None and config.max_list_size == 8
    with pytest.raises(WriteError):
        client.configure_digest(schema, names.LOG_DIGEST, ack_timeout_ns=-5)
