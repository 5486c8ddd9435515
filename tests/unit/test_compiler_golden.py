"""Golden renderings of the demo policy's entries, reviewed by hand when they change.

To accept a deliberate change, regenerate with NICFW_REGEN_GOLDEN=1, then read the diff of
tests/unit/golden/ line by line before committing it: these files are the spec by example.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from controlplane.policy import load_demo_policy, resolve
from offload import names
from offload.compiler import CompileOptions, compile_policy
from offload.compiler.report import render

GOLDEN = Path(__file__).parent / "golden"

CASES = {
    "demo_range.txt": (CompileOptions(), None),
    "demo_ternary_acl.txt": (CompileOptions(range_kind="ternary"), (names.ACL,)),
    "demo_classes_stateful.txt": (
        CompileOptions(encoding="classes", stateful=True),
        (names.SRC_CLASS, names.DST_CLASS, names.ACL),
    ),
}


@pytest.mark.parametrize("filename", sorted(CASES))
def test_demo_entries_match_the_reviewed_rendering(filename: str) -> None:
    options, tables = CASES[filename]
    text = render(compile_policy(resolve(load_demo_policy()), options), tables)
    path = GOLDEN / filename
    if os.environ.get("NICFW_REGEN_GOLDEN") == "1":
        path.write_text(text)
    assert text == path.read_text(), f"{filename} changed; see this module's docstring"
