"""Staged policy changes: drafts are checked, publish is atomic, revert restores any revision."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from controlplane.cli import cli
from controlplane.policy import PolicyError, demo_policy_text
from controlplane.revisions import RevisionError, RevisionStore

V1 = demo_policy_text()
V2 = V1.replace("ports: [8080]", "ports: [8443]")


@pytest.fixture
def store(tmp_path: Path) -> RevisionStore:
    return RevisionStore(tmp_path / "state")


def test_publish_history_and_revert(store: RevisionStore, tmp_path: Path) -> None:
    enforced = tmp_path / "policy.yaml"
    store.save_draft("v1", V1)
    store.save_draft("v2", V2)
    assert store.drafts() == ["v1", "v2"]
    r1 = store.publish("v1", enforced)
    assert enforced.read_text() == V1
    changes = store.diff("v2", enforced)
    assert len(changes.inserts) == 1 and len(changes.deletes) == 1 and not changes.modifies
    r2 = store.publish("v2", enforced)
    assert enforced.read_text() == V2 and (r1.number, r2.number) == (1, 2)
    r3 = store.revert(1, enforced)
    assert enforced.read_text() == V1 and r3.source == "revert of 1"
    assert [r.number for r in store.history()] == [1, 2, 3]
    assert store.revision(2) == V2  # nothing published is lost
    assert not list(enforced.parent.glob(".policy.yaml.*"))  # no temporary files left


def test_bad_drafts_and_names_change_nothing(store: RevisionStore, tmp_path: Path) -> None:
    store.save_draft("good", V1)
    with pytest.raises(PolicyError):
        store.save_draft("good", V1.replace("destination: app", "destination: nosuchgroup"))
    assert store.draft("good") == V1
    with pytest.raises(RevisionError):
        store.save_draft("../escape", V1)
    with pytest.raises(RevisionError):
        store.publish("missing", tmp_path / "p.yaml")
    with pytest.raises(RevisionError):
        store.revert(7, tmp_path / "p.yaml")
    assert not (tmp_path / "p.yaml").exists() and store.history() == []


def test_cli_stage_publish_revert(tmp_path: Path) -> None:
    runner = CliRunner()
    state = ["--state-dir", str(tmp_path / "state")]
    enforced = tmp_path / "enforced.yaml"
    draft = tmp_path / "draft.yaml"
    draft.write_text(V1)
    assert runner.invoke(cli, ["policy", "draft", "save", "one", str(draft), *state]).exit_code == 0
    out = runner.invoke(cli, ["policy", "publish", "one", "--enforced", str(enforced), *state])
    assert out.exit_code == 0, out.output
    draft.write_text(V2)
    assert runner.invoke(cli, ["policy", "draft", "save", "two", str(draft), *state]).exit_code == 0
    out = runner.invoke(
        cli, ["policy", "draft", "diff", "two", "--enforced", str(enforced), "--json", *state]
    )
    assert out.exit_code == 0, out.output
    plan = json.loads(out.output)
    assert len(plan["insert"]) == 1 and "8443" in plan["insert"][0]["match"]
    runner.invoke(cli, ["policy", "publish", "two", "--enforced", str(enforced), *state])
    out = runner.invoke(cli, ["policy", "revert", "1", "--enforced", str(enforced), *state])
    assert out.exit_code == 0 and enforced.read_text() == V1
    history = json.loads(runner.invoke(cli, ["policy", "history", "--json", *state]).output)
    assert [h["source"] for h in history] == ["one", "two", "revert of 1"]
