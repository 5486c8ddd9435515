"""`nicfw policy diff|apply --service-port`: compiled as a stateful daemon compiles, so a
target a daemon programs in stateful mode shows no spurious changes and is not rewritten."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from controlplane.agent import HostAgent
from controlplane.cli import cli
from controlplane.policy import load_policy_file
from offload.compiler import CompileOptions
from offload.p4client import P4Client
from offload.p4schema import P4Schema
from offload.target import SoftwareTarget

POLICY = """
version: 1
workloads:
  web-1: {addresses: [10.0.1.10], mac: "02:00:00:00:01:01", port: 1}
  app-1: {addresses: [10.0.2.10], mac: "02:00:00:00:02:01", port: 2}
groups:
  web: {members: [web-1]}
  app: {members: [app-1]}
sections:
  - name: s
    rules:
      - {name: web-app, source: web, destination: app, protocol: tcp, ports: [8080],
         action: allow}
      - {name: no-icmp, source: any, destination: any, protocol: icmp, action: drop}
default_action: drop
"""


@pytest.fixture
def stateful_target(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A target programmed by a stateful agent (service port 3), and the policy file."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    schema = P4Schema.load()
    with SoftwareTarget("127.0.0.1:0") as target:
        client = P4Client.connect(target.address, 1, 5, schema=schema)
        try:
            client.set_pipeline(schema)
            options = CompileOptions(stateful=True, service_port=3)
            HostAgent(client, schema, options).apply(load_policy_file(policy))
        finally:
            client.close()
        yield target.address, policy


def diff(address: str, policy: Path, *extra: str) -> dict[str, list[dict[str, str]]]:
    args = ["policy", "diff", str(policy), "--target", address, "--json", *extra]
    out = CliRunner().invoke(cli, args)
    assert out.exit_code == 0, out.output
    return json.loads(out.output)  # type: ignore[no-any-return]


def test_diff_and_apply_with_the_daemons_service_port_change_nothing(
    stateful_target: tuple[str, Path],
) -> None:
    address, policy = stateful_target
    same = diff(address, policy, "--service-port", "3")
    assert (same["insert"], same["modify"], same["delete"]) == ([], [], [])
    # Compiled statelessly, the allows and the default would be rewritten and the ICMP-error
    # entries deleted: what `policy apply` without the option would do to a stateful host.
    plain = diff(address, policy)
    assert {r["action"].split("(")[0] for r in plain["modify"]} >= {"acl_allow", "acl_drop"}
    assert sum("l4_dst=type" in r["match"] for r in plain["delete"]) == 3
    applied = CliRunner().invoke(
        cli, ["policy", "apply", str(policy), "--target", address, "--json",
              "--service-port", "3"],
    )  # fmt: skip
    assert applied.exit_code == 0, applied.output
    report = json.loads(applied.output)
    assert (report["inserted"], report["modified"], report["deleted"]) == (0, 0, 0)


def test_dry_run_against_an_enforced_file_takes_the_option_too(tmp_path: Path) -> None:
    old = tmp_path / "old.yaml"
    new = tmp_path / "new.yaml"
    old.write_text(POLICY)
    new.write_text(POLICY.replace("ports: [8080]", "ports: [8443]"))
    args = ["policy", "diff", str(new), "--enforced", str(old), "--json"]
    stateful = json.loads(CliRunner().invoke(cli, [*args, "--service-port", "3"]).output)
    plain = json.loads(CliRunner().invoke(cli, args).output)
    text = json.dumps(stateful)
    assert "acl_service" in text and "acl_allow" not in text
    assert "acl_allow" in json.dumps(plain)


def test_a_draft_dry_run_takes_the_option_too(tmp_path: Path) -> None:
    enforced = tmp_path / "policy.yaml"
    enforced.write_text(POLICY)
    candidate = tmp_path / "candidate.yaml"
    candidate.write_text(POLICY.replace("ports: [8080]", "ports: [8443]"))
    state = ["--state-dir", str(tmp_path / "state")]
    saved = CliRunner().invoke(cli, ["policy", "draft", "save", "next", str(candidate), *state])
    assert saved.exit_code == 0, saved.output
    args = ["policy", "draft", "diff", "next", "--enforced", str(enforced), *state, "--json"]
    stateful = CliRunner().invoke(cli, [*args, "--service-port", "3"])
    assert stateful.exit_code == 0, stateful.output
    assert "acl_service" in stateful.output and "acl_allow" not in stateful.output
    assert "acl_allow" in CliRunner().invoke(cli, args).output
