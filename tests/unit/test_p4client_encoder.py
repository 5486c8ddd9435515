"""The bulk entry encoder must produce exactly what `encode_table_entry` produces."""

from __future__ import annotations

import pytest
from hypothesis import given, settings

from offload import names
from offload.entries import Entry, Exact, Optional, Range
from offload.p4entity import (
    EntityError,
    TableEntryEncoder,
    decode_table_entry,
    encode_table_entry,
)
from offload.p4schema import P4Schema
from offload.proto import p4r

try:
    from .entrygen import entries
except ImportError:  # tests/unit on sys.path (pytest's default import mode)
    from entrygen import entries

SCHEMA = P4Schema.load()
ENCODER = TableEntryEncoder(SCHEMA)


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
