"""The control API over a real UNIX socket, with a fake "apply diff" callback, and `nicfw tag`."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from controlplane.api import ApiError, ControlServer, TagService, request, tag_add, tag_ls, tag_rm
from controlplane.cli_tags import tag
from controlplane.inventory import Inventory
from controlplane.policy import load_policy_file
from offload.compiler import Tables
from offload.sync import Diff

EXAMPLE = Path(__file__).parents[1] / "unit" / "golden" / "templates_policy.yaml"


class FakeTarget:
    """Applies diffs to an entry list, as a target would."""

    def __init__(self, inventory: Inventory) -> None:
        self.entries = inventory.compiled.entries()
        self.writes: list[Diff] = []

    def __call__(self, writes: Diff) -> None:
        self.entries = writes.apply_to(self.entries)
        self.writes.append(writes)

    def verdict(self, src: str, dst: str, port: int) -> str:
        return Tables(self.entries).verdict(src, dst, 6, 1000, port).action


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, FakeTarget, Inventory]]:
    inv = Inventory(load_policy_file(EXAMPLE))
    target = FakeTarget(inv)
    path = str(tmp_path / "control.sock")
    server = ControlServer(path, TagService(inv, target), tick=0.05)
    server.start()
    try:
        yield path, target, inv
    finally:
        server.stop()
    assert not Path(path).exists()


def test_tagging_through_the_socket_changes_the_target(
    served: tuple[str, FakeTarget, Inventory],
) -> None:
    path, target, _ = served
    assert target.verdict("10.0.1.1", "10.0.2.1", 8080) == "allow"
    reply = tag_add(path, "app-a", "quarantine")
    assert reply["ok"] and reply["modifies"] + reply["inserts"] > 0
    assert target.verdict("10.0.1.1", "10.0.2.1", 8080) == "drop"
    assert tag_ls(path) == [{"workload": "app-a", "tag": "quarantine", "expires": None}]
    tag_rm(path, "app-a", "quarantine")
    assert target.verdict("10.0.1.1", "10.0.2.1", 8080) == "allow"
    assert tag_ls(path) == []


def test_expired_tags_are_detached_by_the_server(
    served: tuple[str, FakeTarget, Inventory],
) -> None:
    path, target, _ = served
    tag_add(path, "web-b", "quarantine", expires=0.2)
    assert target.verdict("10.0.1.2", "10.0.2.2", 8080) == "drop"
    deadline = time.monotonic() + 5
    while tag_ls(path) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert tag_ls(path) == []
    assert target.verdict("10.0.1.2", "10.0.2.2", 8080) == "allow"


def test_bad_requests_get_errors_and_change_nothing(
    served: tuple[str, FakeTarget, Inventory],
) -> None:
    path, target, _ = served
    for message, error in (
        ({"op": "tag.add", "workload": "nobody", "tag": "x"}, "unknown workload"),
        ({"op": "tag.add", "workload": "web-a", "tag": "no spaces"}, "not a valid tag"),
        ({"op": "tag.add", "workload": "web-a", "tag": "x", "expires": "soon"}, "seconds"),
        ({"op": "tag.rm", "workload": "web-a", "tag": "x"}, "no dynamic tag"),
        ({"op": "format-disk"}, "unknown op"),
        ({"op": "tag.add"}, "non-empty string"),
    ):
        with pytest.raises(ApiError, match=error):
            request(path, message)
    assert target.writes == []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(path)
        sock.sendall(b"not json\n[1]\n")
        f = sock.makefile("rb")
        assert "bad request" in json.loads(f.readline())["error"]
        assert "JSON object" in json.loads(f.readline())["error"]
    assert tag_ls(path) == []  # the server still answers


def test_the_client_says_when_no_daemon_listens(tmp_path: Path) -> None:
    with pytest.raises(ApiError, match="cannot reach"):
        tag_ls(tmp_path / "nothing.sock")


def test_cli_tag_commands(served: tuple[str, FakeTarget, Inventory]) -> None:
    path, target, _ = served
    runner = CliRunner()
    out = runner.invoke(tag, ["--socket", path, "add", "db-a", "quarantine", "--expires", "600"])
    assert out.exit_code == 0, out.output
    assert "attached" in out.output and "expires in 600 s" in out.output
    out = runner.invoke(tag, ["--socket", path, "ls"])
    assert "db-a" in out.output and "quarantine" in out.output
    listed = json.loads(runner.invoke(tag, ["--socket", path, "ls", "--json"]).output)
    assert listed[0]["workload"] == "db-a" and listed[0]["expires"] > time.time() + 500
    assert target.verdict("10.0.2.1", "10.0.3.1", 5432) == "drop"
    out = runner.invoke(tag, ["--socket", path, "rm", "db-a", "quarantine"])
    assert out.exit_code == 0 and "detached" in out.output
    out = runner.invoke(tag, ["--socket", path, "rm", "db-a", "quarantine"])
    assert out.exit_code != 0 and "no dynamic tag" in out.output
    out = runner.invoke(tag, ["--socket", path, "add", "db-a", "x", "--expires", "-1"])
    assert out.exit_code != 0


def test_a_write_the_target_refuses_leaves_the_tags_as_they_were(tmp_path: Path) -> None:
    inv = Inventory(load_policy_file(EXAMPLE))

    def refuse(writes: Diff) -> None:
        raise RuntimeError("RESOURCE_EXHAUSTED")

    path = str(tmp_path / "control.sock")
    server = ControlServer(path, TagService(inv, refuse))
    server.start()
    try:
        before = inv.compiled.entries()
        with pytest.raises(ApiError, match="target refused"):
            tag_add(path, "web-a", "quarantine")
        assert tag_ls(path) == []
        assert set(inv.compiled.entries()) == set(before)
    finally:
        server.stop()


def test_dry_run_says_what_would_change_and_changes_nothing(
    served: tuple[str, FakeTarget, Inventory],
) -> None:
    path, target, _ = served
    before = list(target.entries)
    out = CliRunner().invoke(tag, ["--socket", path, "add", "app-a", "quarantine", "--dry-run"])
    assert out.exit_code == 0, out.output
    plan = json.loads(out.output)
    assert plan["dry_run"] and plan["inserts"] + plan["modifies"] > 0
    assert plan["workloads"] == ["app-a"]
    assert "quarantined" in plan["groups"]
    # web-a and app-a both sit on h1; quarantining app-a cuts web-a -> app-a tcp/8080 there.
    assert {
        "src": "web-a",
        "dst": "app-a",
        "proto": 6,
        "port": 8080,
        "before": "allow",
        "after": "drop",
        "host": "h1",
    } in plan["reachability"]
    assert all(f["before"] == "allow" for f in plan["reachability"])
    assert plan["reachability_complete"] is True
    assert target.writes == [] and target.entries == before  # nothing was written
    assert tag_ls(path) == []
    assert target.verdict("10.0.1.1", "10.0.2.1", 8080) == "allow"
    # The real change writes what the dry run announced.
    reply = tag_add(path, "app-a", "quarantine")
    assert (reply["inserts"], reply["modifies"], reply["deletes"]) == (
        plan["inserts"],
        plan["modifies"],
        plan["deletes"],
    )
