"""Desired-state sync, batched writes with per-update errors, and counters, on a real target."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

import pytest
from controller_state import primary_with_restore, schema_of

from offload import names
from offload.counters import hits_by_param
from offload.entries import Entry, Exact, Lpm, Optional, Range, Ternary
from offload.p4client import INSERT, ROLLBACK_ON_ERROR, P4Client
from offload.p4errors import WriteError
from offload.p4schema import P4Schema
from offload.p4values import ip_to_int128, network_to_lpm128
from offload.proto import rpc_code
from offload.sync import sync

# Keys no other test is likely to use: TCP destination ports 4200-4299 and 10.77.0.0/16.
TABLES = [names.ACL, names.SRC_CLASS, names.FLOW_CACHE]


def acl(port: int, rule: int, action: str = names.ACL_ALLOW, prio: int = 1000) -> Entry:
    return Entry.make(
        names.ACL,
        {"ip_proto": Optional(6), "l4_dst": Range(port, port)},
        action,
        {"rule_id": rule},
        priority=prio,
    )


def src_class(net: str, class_id: int) -> Entry:
    return Entry.make(
        names.SRC_CLASS,
        {"ip_src": Lpm(*network_to_lpm128(net))},
        names.SET_SRC_CLASS,
        {"class_id": class_id, "workload_id": 0},
    )


def flow(sport: int, rule: int) -> Entry:
    return Entry.make(
        names.FLOW_CACHE,
        {
            "ip_src": Exact(ip_to_int128("10.77.0.1")),
            "ip_dst": Exact(ip_to_int128("10.77.0.2")),
            "ip_proto": Exact(17),
            "l4_src": Exact(sport),
            "l4_dst": Exact(53),
        },
        names.FLOW_ALLOW,
        {"rule_id": rule},
    )


@pytest.fixture
def schema(target: Any) -> P4Schema:
    return schema_of(target)


@pytest.fixture
def client(target: Any, p4rt: Any) -> Iterator[P4Client]:
    """A primary P4Client; `p4rt` pushed the pipeline and fails the test if state is left."""
    with primary_with_restore(target) as c:
        yield c


@pytest.fixture
def baseline(client: P4Client, schema: P4Schema) -> list[Entry]:
    """What the managed tables hold before the test (kept by every sync of the test)."""
    return [e for t in TABLES for e in client.read_table_entries(schema, t)]


def desired_set() -> list[Entry]:
    return (
        [acl(4200 + i, i) for i in range(20)]
        + [src_class(f"10.77.{i}.0/24", 1 << i) for i in range(8)]
        + [flow(40000 + i, 7) for i in range(10)]
    )


def state(client: P4Client) -> set[Entry]:
    assert client.schema is not None
    return {e for t in TABLES for e in client.read_table_entries(client.schema, t)}


def test_sync_then_resync_writes_only_changes(
    client: P4Client, schema: P4Schema, baseline: list[Entry]
) -> None:
    desired = baseline + desired_set()
    report = sync(client, schema, desired, TABLES)
    assert report.inserted == 38 and report.ok
    assert state(client) == set(desired)

    again = sync(client, schema, desired, TABLES)
    assert again.writes == 0 and again.batches == 0
    assert again.unchanged == len(desired)

    changed = list(desired)
    changed[changed.index(acl(4205, 5))] = acl(4205, 5, names.ACL_DROP)
    one = sync(client, schema, changed, TABLES)
    assert (one.modified, one.inserted, one.deleted, one.batches) == (1, 0, 0, 1)
    assert acl(4205, 5, names.ACL_DROP) in state(client)

    changed.remove(flow(40003, 7))
    gone = sync(client, schema, changed, TABLES)
    assert (gone.deleted, gone.modified, gone.inserted) == (1, 0, 0)
    assert flow(40003, 7) not in state(client)
    assert state(client) == set(changed)


def test_sync_progress_and_batches(
    client: P4Client, schema: P4Schema, baseline: list[Entry]
) -> None:
    seen: list[tuple[int, int]] = []
    report = sync(
        client,
        schema,
        baseline + desired_set(),
        TABLES,
        batch_size=16,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert report.batches == 3
    assert seen == [(16, 38), (32, 38), (38, 38)]


def test_failing_updates_are_named_and_the_good_ones_land(
    client: P4Client, schema: P4Schema
) -> None:
    good = [acl(4250, 50), acl(4251, 51), acl(4252, 52)]
    client.write_entries(schema, INSERT, good[:1])
    bad_mask = Entry.make(  # a zero mask is a don't-care that must be omitted (spec 9.1.1)
        names.ACL, {"src_class": Ternary(0, 0)}, names.ACL_ALLOW, {"rule_id": 1}, priority=1000
    )
    batch = [good[1], good[0], bad_mask, good[2]]  # good[0] is already there
    with pytest.raises(WriteError) as info:
        client.write_entries(schema, INSERT, batch)
    errors = info.value.errors
    assert [(e.index, e.code) for e in errors] == [
        (1, rpc_code.ALREADY_EXISTS),
        (2, rpc_code.INVALID_ARGUMENT),
    ]
    assert "mask" in errors[1].message
    assert "update #2: INVALID_ARGUMENT" in str(info.value)
    assert set(good) <= state(client)


def test_atomic_batch_with_a_bad_update_changes_nothing(client: P4Client, schema: P4Schema) -> None:
    entries = [acl(4260, 60), acl(4261, 61), acl(4261, 61)]  # the last one is a duplicate
    with pytest.raises(WriteError) as info:
        client.write_entries(schema, INSERT, entries, atomicity=ROLLBACK_ON_ERROR)
    assert 2 in [e.index for e in info.value.errors]
    assert not set(entries) & state(client)


def test_sync_reports_exactly_the_entry_the_target_refused(
    client: P4Client, schema: P4Schema, baseline: list[Entry]
) -> None:
    from offload.sync import SyncError

    bad = Entry.make(
        names.ACL, {"l4_dst": Range(0, 65535)}, names.ACL_ALLOW, {"rule_id": 9}, priority=1000
    )  # the full range is a don't-care: refused
    desired = [*baseline, acl(4270, 70), bad, acl(4271, 71)]
    with pytest.raises(SyncError) as info:
        sync(client, schema, desired, TABLES)
    failures = info.value.report.failures
    assert [(f.op, f.entry, f.code) for f in failures] == [
        ("INSERT", bad, rpc_code.INVALID_ARGUMENT)
    ]
    assert info.value.report.inserted == 2
    assert {acl(4270, 70), acl(4271, 71)} <= state(client)


@pytest.mark.parametrize("window", [1, 4])
def test_sync_with_requests_in_flight_names_every_refused_entry(
    client: P4Client, schema: P4Schema, baseline: list[Entry], window: int
) -> None:
    from offload.sync import SyncError

    good = [acl(4280 + i, 80 + i) for i in range(15)]
    refused = [  # full ranges are don't-cares: refused, one per batch of 5 or so
        Entry.make(
            names.ACL,
            {"l4_dst": Range(0, 65535)},
            names.ACL_ALLOW,
            {"rule_id": 900 + i},
            priority=2000 + i,
        )
        for i in range(3)
    ]
    desired = baseline + good[:4] + refused[:1] + good[4:9] + refused[1:2] + good[9:] + refused[2:]
    with pytest.raises(SyncError) as info:
        sync(client, schema, desired, TABLES, batch_size=5, window=window)
    report = info.value.report
    assert sorted(f.entry.params for f in report.failures) == sorted(e.params for e in refused)
    assert all(f.code == rpc_code.INVALID_ARGUMENT for f in report.failures)
    assert report.inserted == len(good) and report.not_attempted == 0
    assert state(client) == set(baseline + good)


def tcp_frame(dport: int, src: str = "10.77.9.1", dst: str = "10.77.9.2") -> bytes:
    """Ethernet + IPv4 + TCP SYN, enough for the pipeline's parser and ACL."""
    ip_src, ip_dst = bytes(map(int, src.split("."))), bytes(map(int, dst.split(".")))
    tcp = struct.pack("!HHIIBBHHH", 33333, dport, 0, 0, 5 << 4, 0x02, 8192, 0, 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0, 64, 6, 0, ip_src, ip_dst)
    eth = b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00"
    return eth + ip + tcp


def test_direct_counters_count_per_entry_and_per_rule(
    target: Any, client: P4Client, schema: P4Schema
) -> None:
    if not target.has_packets:
        pytest.skip(target.packets_reason)
    entries = [acl(4280, 80), acl(4281, 81), acl(4282, 80, prio=999)]
    client.write_entries(schema, INSERT, entries)
    frames = [tcp_frame(4280)] * 3 + [tcp_frame(4282)] * 2
    for frame in frames:
        target.send(1, frame)
    target.settle()
    counts = client.read_direct_counters(schema)
    assert [counts[e].packets for e in entries] == [3, 0, 2]
    assert counts[entries[0]].bytes == 3 * len(frames[0])
    rules = hits_by_param({e: counts[e] for e in entries})
    assert rules[80].packets == 5 and rules[81].packets == 0
