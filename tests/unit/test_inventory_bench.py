"""bench/bench_tags.py runs at a small size, and tag changes write few entries (no timings)."""

from __future__ import annotations

import json

import pytest

from bench import bench_tags


def test_bench_tags_runs_small_and_writes_in_proportion(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--workloads", "400", "--groups", "80", "--rules", "300", "--changes", "5", "--json"]
    assert bench_tags.main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["entries"] > 1000
    # A quarantine tag on one workload rewrites that workload's classification entries (and at
    # worst the few rules over groups whose codes grew), never the whole table.
    assert out["quarantine"]["writes_mean"] < out["entries"] / 20
    assert out["instance_create_writes"] > 0 and out["incremental_tables"] > 0
    # The worst case is reported, and no change rewrote a class field or table whole.
    assert out["tier_change"]["writes_max"] >= out["tier_change"]["writes_p99"]
    assert out["tier_change"]["writes_max"] < out["entries"] / 20
    assert out["relaid_fields"] == 0 and out["rebuilt_tables"] == 0
