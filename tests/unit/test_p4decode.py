"""The fast TableEntry decoder must agree with the full decoder on every entry, good or bad."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from offload import names
from offload.entries import Entry, Optional, Range, Ternary
from offload.p4decode import EntryDecoder, fast_decoders
from offload.p4entity import EntityError, decode_table_entry, encode_table_entry
from offload.p4schema import P4Schema
from offload.proto import p4r
from offload.target.entities import EntityStore, Op, TableOp
from offload.target.pipeline import Pipeline
from offload.target.tables import StoredEntry

try:
    from .entrygen import entries
except ImportError:  # tests/unit on sys.path (pytest's default import mode)
    from entrygen import entries

SCHEMA = P4Schema.load()
DECODERS = fast_decoders(SCHEMA)
FAST = EntityStore(Pipeline(SCHEMA))
SLOW = EntityStore(Pipeline(SCHEMA))
READER = EntryDecoder(SCHEMA)
SLOW._fast = {}  # the reference: every entry through decode_table_entry
ALL_FIELD_IDS = sorted({f.id for t in SCHEMA.iter_tables() for f in t.match_fields})
ALL_ACTION_IDS = sorted({a for t in SCHEMA.iter_tables() for a in t.action_ids})


BYTES = st.one_of(
    st.just(b""),
    st.binary(min_size=1, max_size=20),
    st.sampled_from([b"\x00", b"\x01", b"\xff" * 16, b"\x00" * 17, b"\x01" + b"\x00" * 16]),
)
KINDS = ["exact", "lpm", "ternary", "range", "optional"]


def mutate_match(data: st.DataObject, msg: p4r.TableEntry, fm: p4r.FieldMatch) -> None:
    """Break (or harmlessly change) one key."""
    choice = data.draw(st.sampled_from(["id", "kind", "bytes", "pad"] + ["numbers"] * 3))
    which = fm.WhichOneof("field_match_type")
    if which is None:  # emptied by an earlier mutation
        fm.exact.value = data.draw(BYTES)
        return
    sub = getattr(fm, which)
    if choice == "id":
        fm.field_id = data.draw(st.sampled_from([0, 99, *ALL_FIELD_IDS]))
    elif choice == "kind":
        raw = sub.SerializeToString()
        fm.ClearField(which)
        getattr(fm, data.draw(st.sampled_from(KINDS))).MergeFromString(raw)
    elif choice in ("bytes", "pad"):
        names = [f.name for f in sub.DESCRIPTOR.fields if f.type == f.TYPE_BYTES]
        name = data.draw(st.sampled_from(names))
        if choice == "pad":  # leading zeros: still valid
            setattr(sub, name, b"\x00" * data.draw(st.integers(1, 3)) + getattr(sub, name))
        else:
            setattr(sub, name, data.draw(BYTES))
    elif which == "lpm":
        width = data.draw(st.sampled_from([0, 1, 8, 31, 32, 127, 128, 129, 200]))
        fm.lpm.prefix_len = width
        if data.draw(st.booleans()):
            fm.lpm.value = data.draw(st.sampled_from([b"\x00", b"\x01", b"\xff" * 16]))
    elif which == "ternary":
        fm.ternary.value, fm.ternary.mask = data.draw(
            st.sampled_from(
                [(b"\x02", b"\x01"), (b"\x01", b"\x00"), (b"\x00", b"\x00"), (b"\x01", b"\x01")]
            )
        )
    elif which == "range":
        kind = data.draw(st.sampled_from(["swap", "full", "wide"]))
        if kind == "swap":
            fm.range.low, fm.range.high = fm.range.high, fm.range.low
        else:
            width = key_width(msg, fm)
            fm.range.low = b"\x00"
            fm.range.high = ((1 << width) - (kind == "full")).to_bytes(width // 8 + 1, "big")
    else:
        sub.value = data.draw(BYTES)


def key_width(msg: p4r.TableEntry, fm: p4r.FieldMatch) -> int:
    """The width of a key (128 if the mutations made it unknown)."""
    f = SCHEMA.tables[msg.table_id].fields_by_id.get(fm.field_id)
    return 128 if f is None else f.bitwidth


def mutate(data: st.DataObject, msg: p4r.TableEntry) -> None:
    """Apply one random change to a valid TableEntry."""
    choice = data.draw(
        st.sampled_from(
            ["match"] * 4
            + ["dup", "drop", "priority", "default", "idle", "action", "param", "extra"]
        )
    )
    if choice == "match" and msg.match:
        mutate_match(data, msg, msg.match[data.draw(st.integers(0, len(msg.match) - 1))])
    elif choice == "dup" and msg.match:
        msg.match.append(msg.match[data.draw(st.integers(0, len(msg.match) - 1))])
    elif choice == "drop" and msg.match:
        del msg.match[data.draw(st.integers(0, len(msg.match) - 1))]
    elif choice == "priority":
        msg.priority = data.draw(st.sampled_from([0, -1, 1, 7, 2**31 - 1]))
    elif choice == "default":
        msg.is_default_action = True
    elif choice == "idle":
        msg.idle_timeout_ns = data.draw(st.sampled_from([0, 1, 10**9]))
    elif choice == "action":
        kind = data.draw(st.sampled_from(["id", "clear", "profile"]))
        if kind == "id":
            msg.action.action.action_id = data.draw(st.sampled_from([0, 1, *ALL_ACTION_IDS]))
        elif kind == "clear":
            msg.ClearField("action")
        else:
            msg.action.action_profile_member_id = 3
    elif choice == "param" and msg.action.action.params:
        params = msg.action.action.params
        p = params[data.draw(st.integers(0, len(params) - 1))]
        kind = data.draw(st.sampled_from(["id", "value", "dup", "drop"]))
        if kind == "id":
            p.param_id = data.draw(st.integers(0, 5))
        elif kind == "value":
            p.value = data.draw(BYTES)
        elif kind == "dup":
            params.append(p)
        else:
            params.remove(p)
    elif choice == "extra":
        field = data.draw(
            st.sampled_from(["counter_data", "time_since_last_hit", "meter_config", "metadata"])
        )
        if field == "counter_data":
            msg.counter_data.packet_count = 5
        elif field == "time_since_last_hit":
            msg.time_since_last_hit.elapsed_ns = 1
        elif field == "meter_config":
            msg.meter_config.cir = 1
        else:
            msg.metadata = b"cookie"
            msg.controller_metadata = 42


def outcome(store: EntityStore, update: p4r.Update) -> object:
    """What `prepare` makes of an update: the error, or everything the op carries."""
    try:
        op: Op = store.prepare(update)
    except EntityError as exc:
        return ("error", exc.code, str(exc))
    assert isinstance(op, TableOp)
    return (op.type, op.table.name, op.is_default, op.identity, op.counter, stored(op.rec))


def stored(rec: StoredEntry | None, raw: bool = False) -> tuple[object, ...] | None:
    """What a stored entry holds, comparable across decoders (`raw`: the fast path's own key
    values too)."""
    if rec is None:
        return None
    fields = (rec.entry, rec.action, rec.args, rec.priority, rec.idle_timeout_ns, rec.identity,
              rec.metadata, rec.controller_metadata)  # fmt: skip
    return (*fields, rec.raw) if raw else fields


@settings(max_examples=300, deadline=None)
@given(entries())
def test_fast_decoder_accepts_valid_entries_with_the_same_values(entry: Entry) -> None:
    msg = encode_table_entry(SCHEMA, entry)
    decoder = DECODERS[msg.table_id]
    decoded = decoder.decode(msg)
    assert decoded is not None  # the common case must take the fast path
    assert decoder.entry(*decoded) == entry == decode_table_entry(SCHEMA, msg)
    table = FAST.pipeline.tables[entry.table]
    vals, _action, _args, priority, _idle = decoded
    raw = table.raw_identity(vals, priority)
    assert raw is None or raw == table.identity(entry)


UPDATE_TYPES = st.sampled_from([p4r.Update.INSERT, p4r.Update.MODIFY, p4r.Update.DELETE])


@settings(max_examples=1500, deadline=None)
@given(entries(), st.data(), UPDATE_TYPES, st.integers(0, 3))
def test_fast_path_and_full_decoder_agree_on_mutated_entries(
    entry: Entry, data: st.DataObject, utype: p4r.Update.Type.ValueType, mutations: int
) -> None:
    update = p4r.Update(type=utype)
    msg = update.entity.table_entry
    msg.CopyFrom(encode_table_entry(SCHEMA, entry))
    for _ in range(mutations):
        mutate(data, msg)
    assert outcome(FAST, update) == outcome(SLOW, update)
    assert decoded(lambda: READER.decode(msg)) == decoded(lambda: decode_table_entry(SCHEMA, msg))


def decoded(decode: Callable[[], Entry]) -> object:
    """An entry, or the error decoding gave."""
    try:
        return decode()
    except EntityError as exc:
        return ("error", exc.code, str(exc))


@settings(max_examples=100, deadline=None)
@given(entries())
def test_fast_path_entries_build_their_entry_only_when_asked(entry: Entry) -> None:
    update = p4r.Update(type=p4r.Update.INSERT)
    update.entity.table_entry.CopyFrom(encode_table_entry(SCHEMA, entry))
    op = FAST.prepare(update)
    assert isinstance(op, TableOp) and op.rec is not None
    assert op.rec._entry is None  # taken by the fast path: no Entry built on the write
    assert op.rec.entry == entry
    assert op.rec.entry is op.rec.entry  # built once


def _acl_update() -> p4r.Update:
    entry = Entry.make(
        names.ACL,
        {
            "src_class": Ternary(4, 4),
            "ip_proto": Optional(6),
            "l4_dst": Range(80, 90),
        },
        names.ACL_ALLOW,
        {"rule_id": 7},
        priority=10,
    )
    update = p4r.Update(type=p4r.Update.INSERT)
    update.entity.table_entry.CopyFrom(encode_table_entry(SCHEMA, entry))
    return update


def _key(msg: p4r.TableEntry, name: str) -> p4r.FieldMatch:
    fid = SCHEMA.table(msg.table_id).match_field(name).id
    return next(fm for fm in msg.match if fm.field_id == fid)


def _full_range(m: p4r.TableEntry) -> None:
    _key(m, "l4_dst").range.low = b"\x00"
    _key(m, "l4_dst").range.high = b"\xff\xff"


BREAKS = {
    "ternary value outside mask": lambda m: setattr(_key(m, "src_class").ternary, "value", b"\x05"),
    "ternary mask 0": lambda m: setattr(_key(m, "src_class").ternary, "mask", b"\x00"),
    "ternary value too wide": lambda m: setattr(_key(m, "src_class").ternary, "mask", b"\x01" * 9),
    "range low > high": lambda m: setattr(_key(m, "l4_dst").range, "low", b"\x00\x64"),
    "full range": _full_range,
    "range too wide": lambda m: setattr(_key(m, "l4_dst").range, "high", b"\x01\x00\x00"),
    "optional empty": lambda m: setattr(_key(m, "ip_proto").optional, "value", b""),
    "wrong kind": lambda m: setattr(_key(m, "ip_proto").exact, "value", b"\x06"),
    "no priority": lambda m: setattr(m, "priority", 0),
    "duplicate key": lambda m: m.match.append(m.match[0]),
    "unknown key": lambda m: setattr(m.match[0], "field_id", 77),
    "duplicate param": lambda m: m.action.action.params.append(m.action.action.params[0]),
    "missing param": lambda m: m.action.action.ClearField("params"),
    "unknown param": lambda m: setattr(m.action.action.params[0], "param_id", 9),
    "param too wide": lambda m: setattr(m.action.action.params[0], "value", b"\x01" * 9),
    "foreign action": lambda m: setattr(m.action.action, "action_id", 1),
    "no action": lambda m: m.ClearField("action"),
    "idle timeout": lambda m: setattr(m, "idle_timeout_ns", 5),
    "counter data": lambda m: setattr(m.counter_data, "packet_count", 1),
}


@pytest.mark.parametrize("name", sorted(BREAKS))
def test_each_rule_rejects_the_same_way(name: str) -> None:
    update = _acl_update()
    BREAKS[name](update.entity.table_entry)
    fast, slow = outcome(FAST, update), outcome(SLOW, update)
    assert fast == slow
    if name != "counter data":  # counter data is a valid INSERT (taken by the full path)
        assert isinstance(slow, tuple) and slow[0] == "error", slow
