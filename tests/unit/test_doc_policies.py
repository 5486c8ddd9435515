"""The policies shown in the README and docs/policy.md load, resolve and compile as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from controlplane.policy import PolicyError, load_policy, resolve
from offload.compiler import compile_policy

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", ROOT / "docs" / "policy.md"]


def yaml_blocks() -> list[tuple[str, str]]:
    out = []
    for doc in DOCS:
        for i, block in enumerate(re.findall(r"```yaml\n(.*?)```", doc.read_text(), re.S)):
            if "sections:" in block or "workloads:" in block:  # whole policies, not fragments
                out.append((f"{doc.name}#{i}", block))
    return out


@pytest.mark.parametrize(("where", "text"), yaml_blocks(), ids=lambda v: v if "#" in v else "")
def test_documented_policy_compiles(where: str, text: str) -> None:
    try:
        policy = load_policy(text, where)
    except PolicyError as exc:
        pytest.fail(f"{where}: the documented policy does not load:\n{exc}")
    compiled = compile_policy(resolve(policy))
    assert compiled.stats.rules >= 1


def test_the_docs_show_policies() -> None:
    assert len(yaml_blocks()) >= 3
