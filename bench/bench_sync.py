"""Benchmark: desired-state sync of 50,000 entries to the nicfw software target.

Figures: the client-side encode rate (entries -> serialized WriteRequests, no target); a full
sync to an empty target (read, diff, encode, write) in entries/s, with the target in its own
process (`nicfw target`, as a daemon meets BMv2 or a SmartNIC's P4Runtime server) and in this
process (the embedded target of `nicfw run`), each with one Write request in flight at a time
and with `apply_diff`'s window of requests in flight while the next batch is encoded; a re-sync
with nothing to change; a one-entry change both through a full sync (reads everything back) and
through `apply_diff` (the incremental path, no read-back). Full syncs run three times onto
emptied tables; the median is shown. The target decodes bulk writes with a numba kernel
(offload/target/wire.py), loaded before the figures are taken; its load time is reported (a
first run compiles it: several seconds; later runs load numba's cache).

    .venv/bin/python bench/bench_sync.py [--entries 50000] [--batch-size 1000] [--json]
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from offload import names
from offload.entries import Entry, Exact, Optional, Range, Ternary
from offload.p4client import INSERT, P4Client
from offload.p4entity import TableEntryEncoder, gc_paused
from offload.p4schema import P4Schema
from offload.proto import p4r
from offload.sync import (
    DEFAULT_WINDOW,
    Diff,
    SyncReport,
    apply_diff,
    diff,
    managed_tables,
    read_state,
    sync,
)
from offload.target import wire
from offload.target.child import target_process

try:
    from bench import common
except ImportError:  # run as a script: bench/ itself is on sys.path
    import common  # type: ignore[no-redef]

V4 = 0xFFFF << 32  # IPv4-mapped prefix of the pipeline's 128-bit addresses


def make_entries(count: int) -> list[Entry]:
    """Half ACL entries over class bits and port ranges, half flow-cache 5-tuples."""
    out = []
    for i in range(count):
        if i % 2:
            bit = 1 << (i % 64)
            out.append(
                Entry.make(
                    names.ACL,
                    {
                        "src_class": Ternary(bit, bit),
                        "dst_class": Ternary(1 << (i // 64 % 64), 1 << (i // 64 % 64)),
                        "ip_proto": Optional(6 if i % 3 else 17),
                        "l4_dst": Range(1000 + i % 5000, 1000 + i % 5000 + i % 7),
                    },
                    names.ACL_ALLOW if i % 5 else names.ACL_DROP,
                    {"rule_id": i},
                    priority=i + 1,
                )
            )
        else:
            out.append(
                Entry.make(
                    names.FLOW_CACHE,
                    {
                        "ip_src": Exact(V4 | 0x0A000000 | i),
                        "ip_dst": Exact(V4 | 0x0A800000 | (i * 7919) & 0xFFFFFF),
                        "ip_proto": Exact(6),
                        "l4_src": Exact(1024 + i % 60000),
                        "l4_dst": Exact(443),
                    },
                    names.FLOW_ALLOW,
                    {"rule_id": i % 1000},
                )
            )
    return out


def best_of(runs: int, fn: Callable[[], object]) -> float:
    """The shortest of `runs` timings of `fn`, in seconds."""
    times = []
    for _ in range(runs):
        gc.collect()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def encode_only(schema: P4Schema, entries: Sequence[Entry], batch_size: int) -> None:
    """What a sync does on the client before the wire: encode and serialize every batch."""
    enc = TableEntryEncoder(schema)
    for start in range(0, len(entries), batch_size):
        request = p4r.WriteRequest(device_id=1)
        enc.add_updates(request, INSERT, entries[start : start + batch_size])
        request.SerializeToString()


def wire_kernel_load() -> float:
    """Load the target's wire-decoding kernel now; seconds it took (compile, or cache load)."""
    started = time.perf_counter()
    wire.kernel(wait=True)
    return time.perf_counter() - started


RUNS = 3  # full syncs per placement and window; the median is reported


def serial_sync(client: P4Client, schema: P4Schema, entries: Sequence[Entry]) -> SyncReport:
    """A full sync without overlap, for comparison: read, diff, encode every batch, then send
    them one at a time."""
    started = time.perf_counter()
    changes = diff(entries, read_state(client, schema, managed_tables(schema, None)))
    encoded = time.perf_counter()
    enc = client.encoder(schema)
    header = client.new_write_request().SerializeToString()
    size = client.batch_size
    with gc_paused():
        requests = [
            header + enc.updates_bytes(INSERT, changes.inserts[i : i + size])
            for i in range(0, len(changes.inserts), size)
        ]
        report = SyncReport(encode_s=time.perf_counter() - encoded)
        for i, data in enumerate(requests):
            if client.write_serialized(data, i * size):
                raise RuntimeError("the target refused entries of the benchmark")
    report.inserted = len(changes.inserts)
    report.total_s = time.perf_counter() - started
    report.diff_s = encoded - started  # with the read-back
    report.write_s = report.total_s - report.diff_s - report.encode_s
    return report


def full_syncs(
    client: P4Client, schema: P4Schema, entries: Sequence[Entry], window: int
) -> SyncReport:
    """The median (by time) of RUNS full syncs of `entries` onto emptied tables (window 0:
    `serial_sync`)."""
    reports = []
    for _ in range(RUNS):
        sync(client, schema, [])  # empty every table
        gc.collect()
        if window:
            reports.append(sync(client, schema, entries, window=window))
        else:
            reports.append(serial_sync(client, schema, entries))
    return sorted(reports, key=lambda r: r.total_s)[len(reports) // 2]


MODES = ((0, "serial"), (1, "w1"), (DEFAULT_WINDOW, "window"))


def sync_figures(
    prefix: str, client: P4Client, schema: P4Schema, entries: Sequence[Entry]
) -> dict[str, float]:
    """Full-sync figures without overlap, with one request in flight and with the window."""
    out: dict[str, float] = {}
    for window, name in MODES:
        report = full_syncs(client, schema, entries, window)
        out[f"{prefix}_{name}_entries_per_s"] = len(entries) / report.total_s
        out[f"{prefix}_{name}_s"] = report.total_s
        out[f"{prefix}_{name}_encode_s"] = report.encode_s
        out[f"{prefix}_{name}_diff_s"] = report.read_s + report.diff_s
        out[f"{prefix}_{name}_write_s"] = report.write_s
    return out


@contextmanager
def own_process_target() -> Iterator[str]:
    """`nicfw target` in a process of its own, its wire decoder loaded; yields its address."""
    with target_process("127.0.0.1:0") as child:
        if wire.enabled():  # "wire decoder ... ready", or "wire decoding unavailable"
            child.wait_for("wire decod", 180)
        yield child.address


def run(count: int, batch_size: int) -> dict[str, Any]:
    """Run every figure and return them by name."""
    from offload.target import SoftwareTarget

    schema = P4Schema.load()
    entries = make_entries(count)
    enc_s = best_of(3, lambda: encode_only(schema, entries, batch_size))
    results: dict[str, Any] = {"entries": count, "batch_size": batch_size}
    results["machine"] = common.machine()
    results["window"] = DEFAULT_WINDOW
    results["encode_entries_per_s"] = count / enc_s
    with own_process_target() as address:
        client = P4Client.connect(address, 1, 1, schema=schema, batch_size=batch_size)
        try:
            client.set_pipeline(schema)
            results.update(sync_figures("process", client, schema, entries))
        finally:
            client.close()
    # The target decodes bulk writes with a numba kernel, compiled (or loaded from numba's
    # cache) in the background on first use; the figures are of the warm path.
    results["wire_kernel_load_s"] = wire_kernel_load()
    with SoftwareTarget("127.0.0.1:0") as target:
        client = P4Client.connect(
            target.address, target.device_id, 1, schema=schema, batch_size=batch_size
        )
        try:
            client.set_pipeline(schema)
            results.update(sync_figures("inproc", client, schema, entries))

            again = sync(client, schema, entries)
            results["resync_unchanged_s"] = again.total_s
            results["resync_unchanged_read_s"] = again.read_s
            results["resync_unchanged_writes"] = again.writes

            changed = list(entries)
            old = changed[1]
            new = Entry.make(
                old.table,
                old.match_dict,
                names.ACL_DROP,
                {"rule_id": 999_999},
                priority=old.priority,
            )
            changed[1] = new
            one = sync(client, schema, changed)
            results["one_change_full_sync_s"] = one.total_s
            results["one_change_full_sync_writes"] = one.writes

            start = time.perf_counter()
            inc = apply_diff(client, schema, Diff(modifies=[old]))
            results["one_change_incremental_s"] = time.perf_counter() - start
            results["one_change_incremental_writes"] = inc.writes
        finally:
            client.close()
    return results


def _placement_rows(prefix: str, where: str) -> list[tuple[str, str, str, str]]:
    rate = "{:,.0f}"
    return [
        (f"{prefix}_serial_entries_per_s", f"full sync, target {where}: encode all, then write",
         "entries/s", rate),
        (f"{prefix}_w1_entries_per_s", "  encode the next batch while 1 request is in flight",
         "entries/s", rate),
        (f"{prefix}_window_entries_per_s", "  ... while up to {window} are in flight (default)",
         "entries/s", rate),
        (f"{prefix}_window_s", "    time", "s", "{:.2f}"),
        (f"{prefix}_window_encode_s", "    of which client encode", "s", "{:.2f}"),
        (f"{prefix}_window_diff_s", "    of which read + diff", "s", "{:.2f}"),
        (f"{prefix}_window_write_s", "    of which waiting on the target", "s", "{:.2f}"),
    ]  # fmt: skip


ROWS = [
    ("encode_entries_per_s", "client encode + serialize", "entries/s", "{:,.0f}"),
    *_placement_rows("process", "in its own process"),
    *_placement_rows("inproc", "in this process"),
    ("resync_unchanged_s", "re-sync, nothing changed (this process)", "s", "{:.2f}"),
    ("resync_unchanged_read_s", "  of which read-back", "s", "{:.2f}"),
    ("resync_unchanged_writes", "  writes", "updates", "{:d}"),
    ("one_change_full_sync_s", "one entry changed, full sync", "s", "{:.2f}"),
    ("one_change_full_sync_writes", "  writes", "updates", "{:d}"),
    ("one_change_incremental_s", "one entry changed, apply_diff", "s", "{:.4f}"),
    ("one_change_incremental_writes", "  writes", "updates", "{:d}"),
    ("wire_kernel_load_s", "target wire kernel: compile or cache load", "s", "{:.2f}"),
]


def render(results: dict[str, Any]) -> str:
    """The figures as a text table."""
    head = f"bench_sync: {results['entries']:,} entries (ACL + flow_cache), "
    head += f"batch {results['batch_size']}\nmachine: {results['machine']}"
    return common.render_rows(head, ROWS, results)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if not 2 <= args.entries <= 131_072:
        parser.error("--entries must be 2..131072 (the ACL and flow cache hold 65,536 each)")
    results = run(args.entries, args.batch_size)
    print(json.dumps(results, indent=2) if args.json else render(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
