"""A policy dry run predicts a host's writes: applying the candidate through that host's agent
on a real target writes exactly the inserts, modifies and deletes the dry run listed for it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from controller_state import primary_with_restore, schema_of

from controlplane.agent import HostAgent
from controlplane.dryrun import policy_dry_run
from controlplane.policy import load_policy, resolve
from offload.compiler import CompileOptions
from offload.p4client import P4Client

ENFORCED = """
workloads:
  web-1: {addresses: [10.79.1.1], host: h1, mac: "02:00:00:00:79:01", port: 1, tags: [web]}
  app-1: {addresses: [10.79.2.1], host: h1, mac: "02:00:00:00:79:02", port: 2, tags: [app]}
  app-2: {addresses: [10.79.2.2], host: h2, mac: "02:00:00:00:79:03", port: 3, tags: [app]}
  db-1:  {addresses: [10.79.3.1], host: h2, mac: "02:00:00:00:79:04", port: 4, tags: [db]}
groups:
  web: {match: {tags: [web]}}
  app: {match: {tags: [app]}}
  db: {match: {tags: [db]}}
  h2-side: {members: [app-2]}
sections:
  - name: s
    rules:
      - {name: web-app, source: web, destination: app, protocol: tcp, ports: 8080, action: allow}
      - {name: app-db, source: app, destination: db, protocol: tcp, ports: 5432, action: allow,
         applied_to: [h2-side]}
default_action: drop
"""

# The candidate: web-app gains a port, app-db is applied to every host, app-2 moves to h1.
CANDIDATE = (
    ENFORCED.replace("ports: 8080,", "ports: [8080, 8443],")
    .replace(",\n         applied_to: [h2-side]}", "}")
    .replace("app-2: {addresses: [10.79.2.2], host: h2", "app-2: {addresses: [10.79.2.2], host: h1")
)


@pytest.fixture
def client(target: Any, p4rt: Any) -> Iterator[P4Client]:
    """A primary P4Client; `p4rt` pushed the pipeline and fails the test if state is left."""
    with primary_with_restore(target) as c:
        yield c


@pytest.mark.parametrize("host", ["h1", "h2"])
def test_the_agent_writes_what_the_dry_run_said(target: Any, client: P4Client, host: str) -> None:
    assert CANDIDATE.count("8443") == 1 and "applied_to" not in CANDIDATE
    old, new = load_policy(ENFORCED), load_policy(CANDIDATE)
    run = policy_dry_run(resolve(old), resolve(new))
    predicted = next(h for h in run.hosts if h.host == host).diff
    assert len(predicted) > 0
    agent = HostAgent(client, schema_of(target), CompileOptions(host=host))
    agent.apply(old)
    report = agent.apply(new).report
    assert (report.inserted, report.modified, report.deleted) == (
        len(predicted.inserts),
        len(predicted.modifies),
        len(predicted.deletes),
    )
    assert report.failures == [] if hasattr(report, "failures") else True
    on_target = set(client.read_table_entries(client.schema or schema_of(target)))
    assert set(predicted.inserts) <= on_target
    assert not set(predicted.deletes) & on_target
