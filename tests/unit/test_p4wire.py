"""`add_updates` writes wire bytes directly: they must parse to what the message path builds."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from offload import names
from offload.entries import Entry, Exact, FieldMatch, Lpm, Optional, Range, Ternary
from offload.p4entity import EntityError, TableEntryEncoder, encode_table_entry
from offload.p4schema import MatchKind, P4Schema
from offload.p4wire import WireEncoder, varint
from offload.proto import p4r

SCHEMA = P4Schema.load()
ENCODER = TableEntryEncoder(SCHEMA)
WIRE = WireEncoder(SCHEMA)
UPDATE_TYPES = [p4r.Update.INSERT, p4r.Update.MODIFY, p4r.Update.DELETE]


def field_match(kind: MatchKind, width: int) -> st.SearchStrategy[FieldMatch]:
    """Keys of one kind, any values that fit (the encoder does not judge canonical form)."""
    value = st.integers(0, (1 << width) - 1)
    if kind == MatchKind.EXACT:
        return value.map(Exact)
    if kind == MatchKind.OPTIONAL:
        return value.map(Optional)
    if kind == MatchKind.TERNARY:
        return st.builds(Ternary, value, value)
    if kind == MatchKind.LPM:
        return st.builds(Lpm, value, st.integers(0, width))
    return st.builds(Range, value, value)


@st.composite
def entries(draw: st.DrawFn) -> Entry:
    """Entries of every table, default ones too, with edge-case numbers."""
    table = draw(st.sampled_from(list(SCHEMA.iter_tables())))
    match = {}
    for f in table.match_fields:
        if draw(st.booleans()):
            match[f.name] = draw(field_match(f.kind, f.bitwidth))
    action = SCHEMA.action(draw(st.sampled_from(sorted(table.action_ids))))
    params = {p.name: draw(st.integers(0, (1 << p.bitwidth) - 1)) for p in action.params}
    return Entry.make(
        table.name,
        match,
        action.name,
        params,
        priority=draw(st.sampled_from([0, 1, 127, 128, 2**31 - 1])),
        idle_timeout_ns=draw(st.sampled_from([0, 1, 10**12, 2**63 - 1])),
        is_default=draw(st.booleans()),
    )


def reference(update_type: int, batch: list[Entry]) -> p4r.WriteRequest:
    request = p4r.WriteRequest(device_id=1)
    for entry in batch:
        msg = encode_table_entry(SCHEMA, entry)
        if update_type == p4r.Update.DELETE:
            msg.ClearField("action")
        request.updates.add(type=update_type).entity.table_entry.CopyFrom(msg)
    return request


@settings(max_examples=400, deadline=None)
@given(st.lists(entries(), max_size=4), st.sampled_from(UPDATE_TYPES))
def test_add_updates_parses_to_the_reference_messages(batch: list[Entry], utype: int) -> None:
    request = p4r.WriteRequest(device_id=1)
    ENCODER.add_updates(request, utype, batch)
    assert request == reference(utype, batch)


@settings(max_examples=200, deadline=None)
@given(entries())
def test_ordinary_entries_take_the_wire_path(entry: Entry) -> None:
    data = WIRE.table_entry(entry, False)
    assert data is not None
    assert p4r.TableEntry.FromString(data) == encode_table_entry(SCHEMA, entry)


@pytest.mark.parametrize(
    "entry",
    [
        Entry.make(
            names.ACL, {"ip_proto": Optional(256)}, names.ACL_DROP, {"rule_id": 1}, priority=1
        ),
        Entry.make(
            names.ACL, {"ip_proto": Optional(-1)}, names.ACL_DROP, {"rule_id": 1}, priority=1
        ),
        Entry.make(names.ACL, {"ip_proto": Exact(6)}, names.ACL_DROP, {"rule_id": 1}, priority=1),
        Entry.make(names.ACL, {"nope": Exact(6)}, names.ACL_DROP, {"rule_id": 1}, priority=1),
        Entry.make(names.ACL, {}, names.ACL_DROP, {"rule": 1}, priority=1),
        Entry.make(names.ACL, {}, names.ACL_DROP, {"rule_id": 1 << 32}, priority=1),
        Entry.make("no.such.table", {}, names.ACL_DROP, {}),
        Entry.make(names.ACL, {}, "no.such.action", {}, priority=1),
    ],
)
def test_bad_entries_raise_the_message_paths_error_and_change_nothing(entry: Entry) -> None:
    assert WIRE.table_entry(entry, False) is None
    with pytest.raises(EntityError) as expected:
        ENCODER.encode(entry)
    good = Entry.make(names.ACL, {}, names.ACL_DROP, {"rule_id": 1}, priority=1)
    request = p4r.WriteRequest(device_id=1)
    with pytest.raises(EntityError) as got:
        ENCODER.add_updates(request, p4r.Update.INSERT, [good, entry])
    assert (got.value.code, str(got.value)) == (expected.value.code, str(expected.value))
    assert request == p4r.WriteRequest(device_id=1)


def test_negative_priority_falls_back_to_the_message_path() -> None:
    entry = Entry.make(names.ACL, {}, names.ACL_DROP, {"rule_id": 1}, priority=-5)
    assert WIRE.table_entry(entry, False) is None
    request = p4r.WriteRequest(device_id=1)
    ENCODER.add_updates(request, p4r.Update.INSERT, [entry])
    assert request == reference(p4r.Update.INSERT, [entry])


@pytest.mark.parametrize("n", [0, 1, 127, 128, 300, 16383, 16384, 2**63 - 1])
def test_varint(n: int) -> None:
    msg = p4r.TableEntry(idle_timeout_ns=n)
    assert (b"\x48" + varint(n) if n else b"") == msg.SerializeToString()
