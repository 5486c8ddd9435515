"""Writes decoded from the wire bytes must give exactly what `EntityStore.prepare` gives.

`EntityStore.prepare_all` hands a Write's serialized bytes to the numba kernel
(offload/target/wirekernel.py) and prepares what it declines the usual way. Every test here
compares it with `prepare` on the parsed message, update by update: the same op (entry, values,
identity, action, arguments) or the same error code and message, on valid batches, on entries
broken by the mutations of test_p4decode.py, and on hostile bytes (fields reordered,
duplicated or unknown, varints padded, bytes flipped, requests cut short).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from offload import names
from offload.entries import Entry, Lpm, Optional, Range, Ternary
from offload.p4entity import EntityError, encode_table_entry
from offload.p4schema import P4Schema
from offload.p4wire import varint
from offload.proto import p4r
from offload.target import wire
from offload.target.entities import EntityStore, Op, TableOp
from offload.target.pipeline import Pipeline

try:
    from .entrygen import entries, flow_entry
    from .test_p4decode import mutate, stored
except ImportError:  # tests/unit on sys.path (pytest's default import mode)
    from entrygen import entries, flow_entry
    from test_p4decode import mutate, stored

SCHEMA = P4Schema.load()
STORE = EntityStore(Pipeline(SCHEMA))
UPDATE_TYPES = st.sampled_from([p4r.Update.INSERT, p4r.Update.MODIFY, p4r.Update.DELETE])


@pytest.fixture(scope="module", autouse=True)
def _kernel() -> None:
    # numba is a dependency: a kernel that does not compile is a failure, not a skip.
    assert wire.kernel(wait=True) is not None, "the wire kernel did not compile"


def describe(result: Op | EntityError) -> object:
    """Everything an op carries (or the error), comparable across the two paths."""
    if isinstance(result, EntityError):
        return ("error", result.code, str(result))
    if not isinstance(result, TableOp):
        return (type(result).__name__, repr(result))
    # raw: the fast path's key values (the kernel must take exactly what it takes)
    return (result.type, result.table.name, result.is_default, result.identity, result.counter,
            stored(result.rec, raw=True))  # fmt: skip


def reference(store: EntityStore, updates: Sequence[p4r.Update]) -> list[object]:
    """Today's path: `prepare` of each parsed update."""
    out: list[object] = []
    for update in updates:
        try:
            out.append(describe(store.prepare(update)))
        except EntityError as exc:
            out.append(describe(exc))
    return out


def check(data: bytes) -> int:
    """Both paths agree on every update of a serialized request; how many the kernel took."""
    try:
        request = p4r.WriteRequest.FromString(data)
    except Exception:  # upb refuses it: the server fails the whole request (INTERNAL)
        return 0
    updates = request.updates
    got = [describe(r) for r in STORE.prepare_all(updates, data, min_wire=0)]
    assert got == reference(STORE, updates)
    decoder = STORE._wire_decoder
    assert decoder is not None
    ops = decoder.decode(data, len(updates))
    assert ops is not None
    return sum(op is not None for op in ops)


# ---------------------------------------------------------------------- wire surgery
def split(data: bytes) -> list[tuple[int, int, bytes]]:
    """A message's fields as (number, wire type, the field's bytes with its tag)."""
    out = []
    pos = 0
    while pos < len(data):
        start = pos
        tag, pos = _varint(data, pos)
        wt = tag & 7
        if wt == 0:
            _v, pos = _varint(data, pos)
        elif wt == 2:
            n, pos = _varint(data, pos)
            pos += n
        elif wt == 1:
            pos += 8
        elif wt == 5:
            pos += 4
        else:
            raise ValueError("group")
        out.append((tag >> 3, wt, data[start:pos]))
    return out


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


def body(field: bytes) -> bytes:
    """The payload of a length-delimited field."""
    _tag, pos = _varint(field, 0)
    _n, pos = _varint(field, pos)
    return field[pos:]


def delimited(number: int, payload: bytes) -> bytes:
    """A length-delimited field."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def padded(number: int, value: int, extra: int) -> bytes:
    """A varint field whose value has `extra` redundant continuation bytes (still valid)."""
    out = bytearray(varint(value))
    for _ in range(extra):
        out[-1] |= 0x80
        out.append(0)
    return varint(number << 3) + bytes(out)


SURGERY = ["none"] * 3 + [
    "shuffle",
    "dup_entry_field",
    "dup_match_field",
    "unknown",
    "pad_varint",
    "flip",
    "dup_update_field",
    "entity_twice",
]


def operate(rng: random.Random, how: str, update: bytes) -> bytes:
    """One serialized Update, changed at the wire level."""
    if how == "none":
        return update
    ufields = split(update)
    if how == "dup_update_field":
        return update + rng.choice(ufields)[2]
    if how == "flip":
        buf = bytearray(update)
        buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
        return bytes(buf)
    entity = next(f for n, _wt, f in ufields if n == 2)
    head = b"".join(f for n, _wt, f in ufields if n != 2)
    if how == "entity_twice":
        return head + entity + entity
    te = split(body(body(entity)))
    if how == "shuffle":
        rng.shuffle(te)
    elif how == "dup_entry_field":
        te.append(rng.choice(te))
    elif how == "unknown":
        te.insert(rng.randrange(len(te) + 1), (99, 0, varint(99 << 3) + b"\x01"))
    elif how == "pad_varint":
        spots = [i for i, (_n, wt, _f) in enumerate(te) if wt == 0]
        if spots:
            i = rng.choice(spots)
            n, _wt, f = te[i]
            value, _end = _varint(f, len(varint(n << 3)))
            te[i] = (n, 0, padded(n, value, rng.randint(1, 2)))
    elif how == "dup_match_field":
        spots = [i for i, (n, _wt, _f) in enumerate(te) if n == 2]
        if spots:
            i = rng.choice(spots)
            inner = split(body(te[i][2]))
            inner.insert(rng.randrange(len(inner) + 1), rng.choice(inner))
            te[i] = (2, 2, delimited(2, b"".join(f for _n, _wt, f in inner)))
    table_entry = b"".join(f for _n, _wt, f in te)
    return head + delimited(2, delimited(2, table_entry))


def request_bytes(updates: list[bytes], atomicity: int = 0) -> bytes:
    """A serialized WriteRequest with a header and these serialized updates."""
    head = p4r.WriteRequest(device_id=1, atomicity=atomicity)  # type: ignore[arg-type]
    head.election_id.low = 1
    return head.SerializeToString() + b"".join(delimited(4, u) for u in updates)


def update_bytes(entry: Entry, utype: int, data: st.DataObject | None, mutations: int) -> bytes:
    update = p4r.Update(type=utype)  # type: ignore[arg-type]
    msg = update.entity.table_entry
    msg.CopyFrom(encode_table_entry(SCHEMA, entry))
    if data is not None:
        for _ in range(mutations):
            mutate(data, msg)
    return update.SerializeToString()


# ---------------------------------------------------------------------- the tests
@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(entries(), UPDATE_TYPES), min_size=1, max_size=12))
def test_valid_batches_all_take_the_wire_path(batch: list[tuple[Entry, int]]) -> None:
    data = request_bytes([update_bytes(e, t, None, 0) for e, t in batch])
    assert check(data) == len(batch)


@settings(max_examples=600, deadline=None)
@given(
    st.lists(
        st.tuples(entries(), UPDATE_TYPES, st.integers(0, 2), st.sampled_from(SURGERY)),
        min_size=1,
        max_size=8,
    ),
    st.data(),
    st.randoms(use_true_random=False),
)
def test_mutated_and_hostile_updates_agree(
    batch: list[tuple[Entry, int, int, str]], data: st.DataObject, rng: random.Random
) -> None:
    updates = [operate(rng, how, update_bytes(e, t, data, m)) for e, t, m, how in batch]
    check(request_bytes(updates))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(entries(), UPDATE_TYPES), min_size=1, max_size=6),
    st.randoms(use_true_random=False),
)
def test_cut_and_flipped_requests_agree(batch: list[tuple[Entry, int]], rng: random.Random) -> None:
    data = bytearray(request_bytes([update_bytes(e, t, None, 0) for e, t in batch]))
    if rng.random() < 0.5:
        del data[rng.randrange(len(data)) :]
    else:
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    check(bytes(data))


def test_top_level_fields_after_and_between_updates() -> None:
    entry = flow_entry(1)
    ups = [update_bytes(entry, p4r.Update.INSERT, None, 0)] * 2
    head = p4r.WriteRequest(device_id=1, role="r").SerializeToString()
    data = delimited(4, ups[0]) + head + delimited(4, ups[1]) + padded(5, 1, 1)
    assert check(data) == 2


def acl_entry(i: int) -> Entry:
    return Entry.make(
        names.ACL,
        {
            "src_class": Ternary(1 << (i % 64), 1 << (i % 64)),
            "ip_proto": Optional(6),
            "l4_dst": Range(80, 80 + i),
        },
        names.ACL_ALLOW,
        {"rule_id": i},
        priority=i + 1,
    )


def lpm_entry(i: int) -> Entry:
    return Entry.make(
        names.SRC_CLASS,
        {"ip_src": Lpm(0xFFFF0A000000 | i << 8, 120)},
        names.SET_SRC_CLASS,
        {"class_id": 1 << (i % 64), "workload_id": i},
    )


def state(store: EntityStore) -> dict[str, dict[object, object]]:
    """Every table's entries by identity, with what they run."""
    return {
        name: {
            ident: (rec.entry, rec.action, rec.args, rec.priority, rec.idle_timeout_ns, rec.seq)
            for ident, rec in table.entries.items()
        }
        for name, table in store.pipeline.tables.items()
    }


def apply_all(store: EntityStore, data: bytes, use_wire: bool) -> list[object]:
    request = p4r.WriteRequest.FromString(data)
    results = store.prepare_all(request.updates, data if use_wire else None, min_wire=0)
    out: list[object] = []
    for r in results:
        if isinstance(r, EntityError):
            out.append(("error", r.code))
            continue
        try:
            store.apply(r)
            out.append("ok")
        except EntityError as exc:
            out.append(("error", exc.code))
    return out


def test_target_state_is_the_same_either_way() -> None:
    rng = random.Random(7)
    makers = [flow_entry, acl_entry, lpm_entry]
    first = [makers[i % 3](i) for i in range(300)]
    batch1 = [update_bytes(e, p4r.Update.INSERT, None, 0) for e in first]
    batch1 += batch1[:5]  # ALREADY_EXISTS
    changed = []
    for e in rng.sample(first, 60):
        params = {k: v + 1 for k, v in e.params}
        changed.append(Entry.make(e.table, e.match_dict, e.action, params, priority=e.priority))
    batch2 = [update_bytes(e, p4r.Update.MODIFY, None, 0) for e in changed]
    batch2 += [update_bytes(e, p4r.Update.DELETE, None, 0) for e in rng.sample(first, 60)]
    batch2 += [update_bytes(makers[i % 3](i), p4r.Update.DELETE, None, 0) for i in (900, 901)]
    stores = {True: EntityStore(Pipeline(SCHEMA)), False: EntityStore(Pipeline(SCHEMA))}
    results = {}
    for use_wire, store in stores.items():
        results[use_wire] = [
            apply_all(store, request_bytes(batch), use_wire) for batch in (batch1, batch2)
        ]
    assert results[True] == results[False]
    assert results[True][0].count(("error", 6)) == 5  # ALREADY_EXISTS
    assert state(stores[True]) == state(stores[False])
    acl = {s: stores[s].pipeline.acl for s in stores}
    assert 0 < len(acl[True]) < 100
    for i in range(200):  # and the match engines answer alike (priority order, ranges)
        key = (1 << (i % 64), 0, 6, 0, 80 + i % 120, 0)
        hits = [acl[s].lookup(key) for s in stores]
        assert [h and h.identity for h in hits] == [hits[0] and hits[0].identity] * 2


def test_without_the_bytes_or_below_the_threshold_nothing_changes() -> None:
    data = request_bytes([update_bytes(flow_entry(i), p4r.Update.INSERT, None, 0)
                          for i in range(3)])  # fmt: skip
    request = p4r.WriteRequest.FromString(data)
    for kwargs in ({"data": None}, {"data": data, "min_wire": 4}):
        got = [describe(r) for r in STORE.prepare_all(request.updates, **kwargs)]  # type: ignore[arg-type]
        assert got == reference(STORE, request.updates)


def test_a_decoder_without_tables_leaves_every_update_to_prepare() -> None:
    data = request_bytes([update_bytes(flow_entry(i), p4r.Update.INSERT, None, 0)
                          for i in range(3)])  # fmt: skip
    assert wire.WireDecoder({}).decode(data, 3) == [None] * 3
    decoder = wire.WireDecoder(STORE._fast)
    assert None not in (decoder.decode(data, 3) or [None])
    assert decoder.decode(data, 4) == [None] * 4  # a count upb disagrees with: all declined


def test_apply_each_does_what_apply_does() -> None:
    """The inlined bulk INSERT of `apply_each`: same errors (duplicates, a full table), same
    state, and MODIFY / DELETE / defaults still through `apply`."""
    makers = [flow_entry, acl_entry, lpm_entry]
    inserts = [makers[i % 3](i) for i in range(40)]
    batch1 = [update_bytes(e, p4r.Update.INSERT, None, 0) for e in inserts + inserts[:4]]
    batch2 = [update_bytes(e, p4r.Update.DELETE, None, 0) for e in inserts[:10]]
    batch2 += [update_bytes(e, p4r.Update.MODIFY, None, 0) for e in inserts[10:20]]
    batch2 += [update_bytes(e, p4r.Update.INSERT, None, 0) for e in inserts[:10]]
    stores = [EntityStore(Pipeline(SCHEMA)), EntityStore(Pipeline(SCHEMA))]
    results: list[list[object]] = [[], []]
    for n, store in enumerate(stores):
        store.pipeline.acl.size = 9  # the 10th ACL insert finds the table full
        for batch in (batch1, batch2):
            data = request_bytes(batch)
            prepared = store.prepare_all(p4r.WriteRequest.FromString(data).updates, data, 0)
            errors: list[EntityError | None] = [None] * len(prepared)
            ops = [(i, op) for i, op in enumerate(prepared) if not isinstance(op, EntityError)]
            if n == 0:
                for i, op in ops:
                    try:
                        store.apply(op)
                    except EntityError as exc:
                        errors[i] = exc
            else:
                store.apply_each(ops, errors)
            results[n].append([e and (e.code, str(e)) for e in errors])
    assert results[0] == results[1]
    codes = [e[0] for e in results[0][0] if e]  # type: ignore[index]
    assert codes.count(6) == 4 and codes.count(8) > 0  # ALREADY_EXISTS, RESOURCE_EXHAUSTED
    assert state(stores[0]) == state(stores[1])
