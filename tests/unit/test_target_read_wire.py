"""Reads serialized from the stored entries must give exactly what the message path gives.

`P4RuntimeService.ReadWire` (what the target registers for Read) writes table entries' bytes
with `offload.target.readwire` and leaves the rest to `P4RuntimeService.Read`, the message path.
Every test here runs the same request through both on the same entries, each time with the
stored bytes cleared first so neither reuses the other's, and compares the serialized
responses byte for byte, chunk by chunk, or the error (code and message): random entries of
every table, written through the kernel and through `prepare`, then modified and deleted; with
don't-care keys, idle timeouts, metadata; wildcard, per-table, priority- and match-filtered
reads, counters, default entries and requests that mix entity kinds.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator, Sequence

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from offload import names
from offload.entries import Entry, Lpm, Optional, Range, Ternary
from offload.p4client import INSERT, P4Client
from offload.p4entity import EntityError, encode_table_entry
from offload.p4schema import DEFAULT_P4INFO, P4Schema
from offload.proto import p4r
from offload.target import SoftwareTarget, readwire, wire
from offload.target.readwire import StoredEntryEncoder
from offload.target.tables import StoredEntry

try:
    from .entrygen import entries, flow_entry
except ImportError:  # tests/unit on sys.path (pytest's default import mode)
    from entrygen import entries, flow_entry

SCHEMA = P4Schema.load()
TABLE_IDS = [t.id for t in SCHEMA.iter_tables()]
COUNTED = [t.id for t in SCHEMA.iter_tables() if t.direct_counter_id]


@pytest.fixture(scope="module", autouse=True)
def _kernel() -> None:
    # Entries written through the numba kernel are stored like the others; read both kinds.
    assert wire.kernel(wait=True) is not None, "the wire kernel did not compile"


class Aborted(Exception):
    """What `context.abort` raised: (code, details)."""


class Context:
    """The part of grpc.ServicerContext that Read uses."""

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise Aborted(code, details)


def new_target() -> SoftwareTarget:
    """A target with firewall.p4 committed and no server (the service is called directly)."""
    return SoftwareTarget(p4info=DEFAULT_P4INFO)


def forget_bytes(target: SoftwareTarget) -> None:
    """Drop every stored entry's cached TableEntry bytes (and the Entry built for a read)."""
    assert target.pipeline is not None
    for table in target.pipeline.tables.values():
        for rec in table.entries.values():
            rec.wire = None
            if rec.raw is not None:
                rec._entry = None


def outcome(run: Callable[[], Iterator[bytes]]) -> object:
    """The serialized chunks, or the abort's code and message."""
    try:
        return list(run())
    except Aborted as exc:
        return ("aborted", *exc.args)


def read_new(target: SoftwareTarget, request: p4r.ReadRequest) -> object:
    """`ReadWire`'s chunks (or abort)."""
    return outcome(lambda: target.service.ReadWire(request, Context()))


def read_old(target: SoftwareTarget, request: p4r.ReadRequest) -> object:
    """The message path's responses, serialized (or abort)."""
    return outcome(lambda: (r.SerializeToString() for r in target.service.Read(request, Context())))


def compare(target: SoftwareTarget, request: p4r.ReadRequest) -> list[bytes]:
    """Both paths give the same chunks from cold caches, and again warm; returns them."""
    forget_bytes(target)
    got = read_new(target, request)
    forget_bytes(target)
    want = read_old(target, request)
    assert got == want
    assert read_new(target, request) == want  # the bytes the message path cached
    forget_bytes(target)
    read_new(target, request)
    assert read_old(target, request) == want  # the bytes this path cached
    if not isinstance(want, list):
        return []
    for chunk in want:
        p4r.ReadResponse.FromString(chunk)  # (both sides being garbage would not pass)
    return want


def read_request(*entities: p4r.Entity) -> p4r.ReadRequest:
    return p4r.ReadRequest(device_id=1, entities=list(entities))


def table_read(table_id: int = 0, **fields: object) -> p4r.Entity:
    entity = p4r.Entity()
    te = entity.table_entry
    te.table_id = table_id
    for name, value in fields.items():
        if name in ("counter_data", "time_since_last_hit"):
            getattr(te, name).SetInParent()
        else:
            setattr(te, name, value)
    return entity


def apply_batch(target: SoftwareTarget, updates: Sequence[p4r.Update], use_kernel: bool) -> None:
    """Prepare (from the wire bytes through the kernel, or the messages) and apply each."""
    store = target.entities
    assert store is not None
    request = p4r.WriteRequest(device_id=1, updates=list(updates))
    data = request.SerializeToString() if use_kernel else None
    for op in store.prepare_all(request.updates, data, min_wire=0):
        if not isinstance(op, EntityError):
            with contextlib.suppress(EntityError):  # ALREADY_EXISTS, NOT_FOUND
                store.apply(op)


def update(utype: int, entry: Entry, extra: int = 0) -> p4r.Update:
    """An update of `entry`; `extra` adds metadata, controller_metadata, counter data (bits)."""
    msg = p4r.Update(type=utype)  # type: ignore[arg-type]
    te = msg.entity.table_entry
    te.CopyFrom(encode_table_entry(SCHEMA, entry))
    if utype == p4r.Update.DELETE:
        te.ClearField("action")
        return msg
    if extra & 1:
        te.metadata = bytes(range(extra % 7 + 1))
    if extra & 2:
        te.controller_metadata = extra * 0x0123456789 % (1 << 64)
    if extra & 4 and te.table_id in COUNTED:
        te.counter_data.packet_count = extra  # written through the full decoder: no raw
    return msg


def changed(entry: Entry, seed: int) -> Entry:
    """The same key with other argument values (and maybe another action)."""
    info = SCHEMA.table(entry.table)
    actions = sorted(info.action_ids - info.default_only_action_ids)
    action = SCHEMA.action(actions[seed % len(actions)])
    params = {p.name: (seed * 7919 + p.id) % (1 << p.bitwidth) for p in action.params}
    return Entry.make(
        entry.table,
        entry.match_dict,
        action.name,
        params,
        priority=entry.priority,
        idle_timeout_ns=seed % 3 * 10**9 if info.supports_idle_timeout else 0,
    )


def key_read(entry: Entry) -> p4r.Entity:
    entity = p4r.Entity()
    entity.table_entry.CopyFrom(encode_table_entry(SCHEMA, entry))
    entity.table_entry.ClearField("action")
    return entity


def stored(target: SoftwareTarget) -> list[tuple[str, StoredEntry]]:
    assert target.pipeline is not None
    return [(t.name, rec) for t in target.pipeline.tables.values() for rec in t.entries.values()]


# ---------------------------------------------------------------------- the tests
@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(entries(), st.integers(0, 15)), min_size=1, max_size=30),
    st.randoms(use_true_random=False),
)
def test_random_entries_read_the_same(batch: list[tuple[Entry, int]], rng: random.Random) -> None:
    target = new_target()
    inserts = [update(p4r.Update.INSERT, e, x) for e, x in batch]
    apply_batch(target, inserts[::2], use_kernel=True)
    apply_batch(target, inserts[1::2], use_kernel=False)
    written = [e for e, _x in batch]
    modified = rng.sample(written, len(written) // 3)
    deleted = rng.sample(written, len(written) // 4)
    apply_batch(
        target,
        [update(p4r.Update.MODIFY, changed(e, rng.randrange(1000)), rng.randrange(16))
         for e in modified],
        use_kernel=rng.random() < 0.5,
    )  # fmt: skip
    apply_batch(target, [update(p4r.Update.DELETE, e) for e in deleted], use_kernel=True)

    # Every entry the fast decoders stored is encoded here, not left to the message path.
    encoder = StoredEntryEncoder(SCHEMA)
    for name, rec in stored(target):
        assert (encoder.table_entry(name, rec) is None) == (rec.raw is None)

    compare(target, read_request(table_read()))
    compare(target, read_request(table_read(counter_data=True)))
    for table_id in TABLE_IDS:
        compare(target, read_request(table_read(table_id)))
    some = rng.sample(written, min(3, len(written)))
    for entry in some:
        info = SCHEMA.table(entry.table)
        compare(target, read_request(key_read(entry)))
        compare(target, read_request(table_read(info.id, priority=entry.priority)))
        compare(target, read_request(table_read(info.id, is_default_action=True)))
    compare(target, read_request(table_read(), *[key_read(e) for e in some], table_read()))


def test_chunks_across_entities_of_every_kind() -> None:
    """Chunk boundaries fall where they did: 2,500 entries and other entities in one request."""
    target = new_target()
    flows = [flow_entry(i) for i in range(1800)]
    acls = [acl(i) for i in range(600)]
    lpms = [lpm(i) for i in range(100)]
    apply_batch(target, [update(p4r.Update.INSERT, e, i % 8) for i, e in enumerate(flows)], True)
    apply_batch(target, [update(p4r.Update.INSERT, e) for e in acls + lpms], False)
    group = p4r.Update(type=p4r.Update.INSERT)
    mcast = group.entity.packet_replication_engine_entry.multicast_group_entry
    mcast.multicast_group_id = 5
    mcast.replicas.add(egress_port=1)
    apply_batch(target, [group], False)
    groups = p4r.Entity()
    groups.packet_replication_engine_entry.multicast_group_entry.multicast_group_id = 0
    counters = p4r.Entity()
    counters.direct_counter_entry.table_entry.table_id = SCHEMA.table(names.ACL).id
    acl_id = SCHEMA.table(names.ACL).id
    chunks = compare(
        target,
        read_request(
            table_read(acl_id),
            groups,
            table_read(),
            counters,
            table_read(acl_id, counter_data=True),
            table_read(acl_id, is_default_action=True),
            key_read(acls[7]),
        ),
    )
    sizes = [len(p4r.ReadResponse.FromString(c).entities) for c in chunks]
    assert sizes[:-1] == [1000] * (len(sizes) - 1)
    assert sum(sizes) == 600 + 1 + 2500 + 600 + 600 + 1 + 1


def test_errors_are_the_same() -> None:
    target = new_target()
    apply_batch(target, [update(p4r.Update.INSERT, acl(1))], False)
    bad_key = key_read(acl(1))
    bad_key.table_entry.match[0].field_id = 99
    wide = key_read(acl(1))
    wide.table_entry.match[0].ternary.value = b"\x01" * 20
    requests = [
        read_request(table_read(0x02FFFFFF)),  # unknown table: NOT_FOUND
        read_request(table_read(0, priority=0, is_default_action=True)),
        read_request(table_read(), bad_key),
        read_request(wide),
        read_request(p4r.Entity(counter_entry=p4r.CounterEntry(counter_id=5))),
        read_request(p4r.Entity(value_set_entry=p4r.ValueSetEntry(value_set_id=1))),
    ]
    for_all_tables = key_read(acl(1))
    for_all_tables.table_entry.table_id = 0
    requests.append(read_request(table_read(), for_all_tables))
    for request in requests:
        forget_bytes(target)
        want = read_old(target, request)
        assert isinstance(want, tuple) and want[0] == "aborted"
        assert read_new(target, request) == want
    device = read_request(table_read())
    device.device_id = 9
    want = read_old(target, device)
    assert isinstance(want, tuple) and want[1] == grpc.StatusCode.NOT_FOUND
    assert read_new(target, device) == want


def test_time_since_last_hit_keeps_the_message_path() -> None:
    target = new_target()
    apply_batch(target, [update(p4r.Update.INSERT, flow_entry(i)) for i in range(5)], True)
    store = target.entities
    assert store is not None
    query = table_read(SCHEMA.table(names.FLOW_CACHE).id, time_since_last_hit=True)
    assert store.read_table_fields(query.table_entry) is None
    (chunk,) = target.service.ReadWire(read_request(query), Context())
    got = p4r.ReadResponse.FromString(chunk)
    (want,) = target.service.Read(read_request(query), Context())
    assert len(got.entities) == len(want.entities) == 5
    for a, b in zip(got.entities, want.entities, strict=True):
        assert a.table_entry.HasField("time_since_last_hit")
        a.table_entry.ClearField("time_since_last_hit")
        b.table_entry.ClearField("time_since_last_hit")
        assert a == b


def test_switched_off_it_serializes_the_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    target = new_target()
    apply_batch(target, [update(p4r.Update.INSERT, flow_entry(i)) for i in range(5)], True)
    monkeypatch.setenv("NICFW_WIRE_READ", "0")
    assert not readwire.enabled()
    forget_bytes(target)
    list(target.service.ReadWire(read_request(table_read()), Context()))
    assert all(rec._entry is not None for _n, rec in stored(target))
    monkeypatch.delenv("NICFW_WIRE_READ")
    forget_bytes(target)
    list(target.service.ReadWire(read_request(table_read()), Context()))
    assert all(rec._entry is None for _n, rec in stored(target))


def test_an_encoder_failure_falls_back_to_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    target = new_target()
    apply_batch(target, [update(p4r.Update.INSERT, flow_entry(i)) for i in range(5)], True)
    want = compare(target, read_request(table_read()))

    def broken(self: StoredEntryEncoder, table: str, rec: StoredEntry) -> bytes | None:
        raise RuntimeError("bug")

    monkeypatch.setattr(StoredEntryEncoder, "table_entry", broken)
    forget_bytes(target)
    assert list(target.service.ReadWire(read_request(table_read()), Context())) == want


def test_grpc_read_back_with_and_without(monkeypatch: pytest.MonkeyPatch) -> None:
    """`P4Client.read_table_entries` over gRPC: the entries written, either way."""
    written = [flow_entry(i) for i in range(1500)] + [acl(i) for i in range(700)] + [lpm(3)]
    results = []
    with SoftwareTarget("127.0.0.1:0") as target:
        client = P4Client.connect(target.address, target.device_id, 1, schema=SCHEMA)
        try:
            client.set_pipeline(SCHEMA)
            client.write_entries(SCHEMA, INSERT, written)
            for setting in ("1", "0"):
                monkeypatch.setenv("NICFW_WIRE_READ", setting)
                forget_bytes(target)
                results.append(
                    (
                        client.read_table_entries(SCHEMA),
                        client.read_table_entries(SCHEMA, names.ACL, with_counters=True),
                        client.read_default_entry(SCHEMA, names.ACL),
                    )
                )
        finally:
            client.close()
    assert results[0] == results[1]
    assert sorted(map(repr, results[0][0])) == sorted(map(repr, written))
    assert len(results[0][1]) == 700


def acl(i: int) -> Entry:
    match: dict[str, Ternary | Optional | Range] = {"l4_dst": Range(80, 80 + i)}
    if i % 3:
        match["src_class"] = Ternary(1 << (i % 64), 1 << (i % 64))
    if i % 2:
        match["ip_proto"] = Optional(6)
    return Entry.make(names.ACL, match, names.ACL_ALLOW, {"rule_id": i}, priority=i + 1)


def lpm(i: int) -> Entry:
    return Entry.make(
        names.SRC_CLASS,
        {"ip_src": Lpm(0xFFFF0A000000 | i << 8, 120)},
        names.SET_SRC_CLASS,
        {"class_id": 1 << (i % 64), "workload_id": i},
    )
