"""The classification benchmark library: figures, verification, pluggable backends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dpdk_app import classbench, classify_bench
from dpdk_app.classify_bench import BenchError

RULES = """\
@10.0.0.0/8\t192.168.1.0/24\t0 : 65535\t80 : 80\t0x06/0xFF\t0x0000/0x0000
@10.1.0.0/16\t0.0.0.0/0\t1024 : 65535\t53 : 53\t0x11/0xFF\t0x0000/0x0000
@0.0.0.0/0\t192.168.0.0/16\t0 : 65535\t0 : 65535\t0x00/0x00\t0x0000/0x0000
@172.16.5.4/32\t172.16.5.5/32\t22 : 22\t1000 : 2000\t0x06/0xFF\t0x1000/0x1000
"""


@pytest.fixture
def rules_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(classify_bench, "MIN_TIME_S", 0.0)
    path = tmp_path / "small.rules"
    path.write_text(RULES)
    return path


def test_run_generates_a_trace_and_verifies_every_answer(rules_file: Path) -> None:
    report = classify_bench.run(rules_file, None, verify=True, classifiers=["tuplemerge", "linear"])
    assert report["n_rules"] == 4 and report["n_headers"] == 16
    assert report["trace_mismatches"] == 0
    tm = report["classifiers"]["tuplemerge"]
    for key in ("mpps", "build_s", "memory_bytes", "insert_rate", "delete_rate"):
        assert tm[key] > 0, key
    assert tm["mismatches"] == 0 and tm["verified_against"] == "reference"
    assert tm["update_consistent"] is True
    assert report["classifiers"]["linear"]["mismatches"] == 0
    assert "tuplemerge/linear" in report["ratios"]
    text = classify_bench.format_report(report)
    assert "tuplemerge" in text and "linear" in text and "single thread" in text


def test_plugged_in_backends_are_verified_and_failures_isolated(
    rules_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trace = tmp_path / "small.trace"
    t = classbench.generate_trace(classbench.load_rules(rules_file), per_rule=4, seed=2)
    classbench.write_trace(trace, t.headers, t.expected)

    def wrong(rules_path: Path, trace_path: Path) -> dict[str, Any]:
        results = classbench.read_trace(trace_path).expected.copy()
        results[3] = -1 if results[3] != -1 else 0
        return {"mpps": 2.0, "results": results}

    def broken(rules_path: Path, trace_path: Path) -> dict[str, Any]:
        raise RuntimeError("binary missing")

    monkeypatch.setitem(classify_bench.BACKENDS, "rte_acl", wrong)
    monkeypatch.setitem(classify_bench.BACKENDS, "broken", broken)
    report = classify_bench.run(rules_file, trace, True, ["tuplemerge", "rte_acl", "broken"])
    acl = report["classifiers"]["rte_acl"]
    assert acl["mismatches"] == 1 and acl["mismatch_examples"][0]["header"] == 3
    assert report["classifiers"]["broken"] == {"error": "RuntimeError: binary missing"}
    assert report["classifiers"]["tuplemerge"]["mismatches"] == 0
    ratio = report["ratios"]["tuplemerge/rte_acl"]
    assert ratio == pytest.approx(report["classifiers"]["tuplemerge"]["mpps"] / 2.0)


def test_a_wrong_trace_column_is_reported(rules_file: Path, tmp_path: Path) -> None:
    t = classbench.generate_trace(classbench.load_rules(rules_file), per_rule=2, seed=2)
    expected = t.expected.copy()
    expected[0] = 3 if expected[0] != 3 else 2
    trace = tmp_path / "bad.trace"
    classbench.write_trace(trace, t.headers, expected)
    report = classify_bench.run(rules_file, trace, True, ["tuplemerge"])
    assert report["trace_mismatches"] == 1
    assert report["classifiers"]["tuplemerge"]["mismatches"] == 0  # against the reference


def test_bad_input_gives_clear_errors(rules_file: Path, tmp_path: Path) -> None:
    with pytest.raises(BenchError, match="unknown classifier"):
        classify_bench.run(rules_file, None, False, ["nope"])
    empty = tmp_path / "empty.rules"
    empty.write_text("# nothing\n")
    with pytest.raises(BenchError, match="no rules"):
        classify_bench.run(empty, None, False, ["tuplemerge"])
    bad = tmp_path / "bad.rules"
    bad.write_text("@1.2.3.4/40 1.2.3.4/32 0 : 1 0 : 1 0x06/0xFF\n")
    with pytest.raises(classbench.ClassBenchError, match=r"bad\.rules:1"):
        classify_bench.run(bad, None, False, ["tuplemerge"])


def test_cached_trace_is_reused(rules_file: Path, tmp_path: Path) -> None:
    first = classify_bench.cached_trace(rules_file, tmp_path / "cache")
    stamp = first.stat().st_mtime_ns
    again = classify_bench.cached_trace(rules_file, tmp_path / "cache")
    assert again == first and again.stat().st_mtime_ns == stamp
    assert np.all(classbench.read_trace(first).expected >= 0)
