"""The bulk entry encoder must produce exactly what `encode_table_entry` produces."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from offload import names
from offload.entries import Entry, Exact, FieldMatch, Lpm, Optional, Range, Ternary
from offload.p4entity import (
    EntityError,
    TableEntryEncoder,
    decode_table_entry,
    encode_table_entry,
)
from offload.p4schema import MatchKind, P4Schema
from offload.proto import p4r

SCHEMA = P4Schema.load()
ENCODER = TableEntryEncoder(SCHEMA)


def field_match(kind: MatchKind, width: int) -> st.SearchStrategy[FieldMatch]:
    """Well-formed keys of one kind (canonical: no don't-care masks, ranges or prefixes)."""
    top = (1 << width) - 1
    value = st.integers(0, top)
    if kind == MatchKind.EXACT:
        return value.map(Exact)
    if kind == MatchKind.OPTIONAL:
        return value.map(Optional)
    if kind == MatchKind.TERNARY:
        return st.tuples(value, st.integers(1, top)).map(lambda vm: Ternary(vm[0] & vm[1], vm[1]))
    if kind == MatchKind.LPM:

        def lpm(vp: tuple[int, int]) -> Lpm:
            v, plen = vp
            return Lpm(v >> (width - plen) << (width - plen), plen)

        return st.tuples(value, st.integers(1, width)).map(lpm)
    return (
        st.tuples(value, value)
        .map(lambda lh: Range(min(lh), max(lh)))
        .filter(lambda r: not (r.low == 0 and r.high == top))
    )


@st.composite
def entries(draw: st.DrawFn) -> Entry:
    """Random valid entries of the firewall tables that take entries."""
    tables = [t for t in SCHEMA.iter_tables() if t.match_fields]
    table = draw(st.sampled_from(tables))
    match = {}
    for f in table.match_fields:
        if f.kind == MatchKind.EXACT or draw(st.booleans()):
            match[f.name] = draw(field_match(f.kind, f.bitwidth))
    actions = sorted(table.action_ids - table.default_only_action_ids)
    action = SCHEMA.action(draw(st.sampled_from(actions)))
    params = {p.name: draw(st.integers(0, (1 << p.bitwidth) - 1)) for p in action.params}
    priority = draw(st.integers(1, 2**31 - 1)) if table.needs_priority else 0
    idle = draw(st.integers(0, 10**12)) if table.supports_idle_timeout else 0
    return Entry.make(
        table.name, match, action.name, params, priority=priority, idle_timeout_ns=idle
    )


@settings(max_examples=300, deadline=None)
@given(entries())
def test_bulk_encoder_equals_reference_encoder_and_round_trips(entry: Entry) -> None:
    msg = ENCODER.encode(entry)
    assert msg == encode_table_entry(SCHEMA, entry)
    assert decode_table_entry(SCHEMA, msg) == entry


def test_key_only_encoding_for_deletes() -> None:
    entry = Entry.make(
        names.ACL, {"ip_proto": Optional(6)}, names.ACL_ALLOW, {"rule_id": 1}, priority=3
    )
    msg = ENCODER.encode(entry, key_only=True)
    assert not msg.HasField("action")
    assert msg.priority == 3 and len(msg.match) == 1


def test_add_updates_appends_in_order() -> None:
    es = [
        Entry.make(names.ACL, {"ip_proto": Optional(p)}, names.ACL_DROP, {"rule_id": p}, priority=1)
        for p in (1, 2, 3)
    ]
    request = p4r.WriteRequest()
    ENCODER.add_updates(request, p4r.Update.MODIFY, es)
    assert [u.type for u in request.updates] == [p4r.Update.MODIFY] * 3
    assert [decode_table_entry(SCHEMA, u.entity.table_entry) for u in request.updates] == es


def test_default_entry_encoding() -> None:
    entry = Entry.make(names.ACL, None, names.ACL_DROP, {"rule_id": 0}, is_default=True)
    assert ENCODER.encode(entry) == encode_table_entry(SCHEMA, entry)


@pytest.mark.parametrize(
    ("entry", "needle"),
    [
        (
            Entry.make(
                names.ACL, {"ip_proto": Optional(256)}, names.ACL_DROP, {"rule_id": 1}, priority=1
            ),
            "8 bits",
        ),
        (
            Entry.make(
                names.ACL, {"ip_proto": Optional(-1)}, names.ACL_DROP, {"rule_id": 1}, priority=1
            ),
            "8 bits",
        ),
        (
            Entry.make(
                names.ACL, {"ip_proto": Exact(6)}, names.ACL_DROP, {"rule_id": 1}, priority=1
            ),
            "Optional key",
        ),
        (
            Entry.make(names.ACL, {"nope": Exact(6)}, names.ACL_DROP, {"rule_id": 1}, priority=1),
            "nope",
        ),
        (Entry.make(names.ACL, {}, names.ACL_DROP, {"rule": 1}, priority=1), "rule"),
        (Entry.make(names.ACL, {}, names.ACL_DROP, {"rule_id": 1 << 32}, priority=1), "32 bits"),
        (Entry.make("no.such.table", {}, names.ACL_DROP, {}), "no.such.table"),
        (
            Entry.make(
                names.ACL, {"l4_dst": Range(0, 1 << 16)}, names.ACL_DROP, {"rule_id": 1}, priority=1
            ),
            "16 bits",
        ),
    ],
)
def test_bad_entries_raise_a_clear_entity_error(entry: Entry, needle: str) -> None:
    with pytest.raises(EntityError, match=needle):
        ENCODER.encode(entry)
