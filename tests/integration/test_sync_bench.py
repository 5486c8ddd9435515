"""bench/bench_sync.py end to end at a small size: both target placements, every write mode."""

from __future__ import annotations

import json

import pytest

from bench import bench_sync


def test_sync_bench_runs_every_mode_against_both_placements(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert bench_sync.main(["--entries", "400", "--batch-size", "50", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    for prefix in ("process", "inproc"):
        for _window, mode in bench_sync.MODES:
            assert results[f"{prefix}_{mode}_entries_per_s"] > 0
            parts = ("encode_s", "diff_s", "write_s")
            total = sum(results[f"{prefix}_{mode}_{p}"] for p in parts)
            assert total == pytest.approx(results[f"{prefix}_{mode}_s"], rel=0.05, abs=0.005)
    assert results["resync_unchanged_writes"] == 0
    assert results["one_change_full_sync_writes"] == results["one_change_incremental_writes"] == 1


def test_serial_sync_leaves_the_same_tables_as_sync() -> None:
    from offload.p4client import P4Client
    from offload.p4schema import P4Schema
    from offload.sync import read_state, sync
    from offload.target import SoftwareTarget

    schema = P4Schema.load()
    entries = bench_sync.make_entries(300)
    with (
        SoftwareTarget("127.0.0.1:0") as target,
        P4Client.connect(target.address, 1, 1, schema=schema, batch_size=40) as client,
    ):
        client.set_pipeline(schema)
        report = bench_sync.serial_sync(client, schema, entries)
        assert report.inserted == len(entries)
        tables = [t.name for t in schema.iter_tables()]
        assert set(read_state(client, schema, tables)) == set(entries)
        assert sync(client, schema, entries).writes == 0
