"""Read responses serialized from the stored entries: the software target's bulk read path.

The message path builds a `p4r.Entity` per entry (from an `Entry`, itself built on the first
read of an entry written through the fast decoders), copies it into a ReadResponse and
serializes that: about 17 us per entry on the first read, 3 us on later ones (the TableEntry
bytes are cached in `StoredEntry.wire`). `StoredEntryEncoder` writes an entry's TableEntry bytes
straight from the values the target stores (`StoredEntry.raw`, its arguments, priority, timeout
and metadata), fields in the order protobuf serializes them, so the bytes equal
`SerializeToString()` of the message the usual path builds; a ReadResponse is the concatenation
of its `entities` fields (`entity_field`): about 3 us per entry on the first read, 0.3 us later
(bench/bench_target.py). Entries it does not take (no stored key values, a value out of range)
return None and go through `EntityStore.encode_into`, which caches its bytes in the same place.
tests/unit/test_target_read_wire.py compares whole responses with the message path.

NICFW_WIRE_READ=0 turns the path off: Read then builds and serializes messages.
"""

from __future__ import annotations

import os
from typing import Any

from offload.p4schema import MatchKind, P4Schema, SchemaError
from offload.p4wire import (
    T_ACTION,
    T_ACTION_ID,
    T_FIELD_ID,
    T_HIGH,
    T_IDLE,
    T_MATCH,
    T_PARAM_ID,
    T_PARAM_VALUE,
    T_PARAMS,
    T_PREFIX_LEN,
    T_PRIORITY,
    T_TABLE_ACTION,
    T_TABLE_ENTRY,
    T_TABLE_ID,
    T_VALUE,
    one_value_heads,
    two_value_heads,
    varint,
)
from offload.proto import p4r
from offload.target.tables import StoredEntry

_SMALL = tuple(varint(i) for i in range(4096))
_INT32 = 1 << 31
_INT64 = 1 << 63
_UINT64 = 1 << 64
_MAX_WIDTH = 8 * 1000  # wider keys or params: the usual path (keeps every length in _SMALL)

T_ENTITIES = varint(p4r.ReadResponse.DESCRIPTOR.fields_by_name["entities"].number << 3 | 2)
T_CONTROLLER_METADATA = varint(
    p4r.TableEntry.DESCRIPTOR.fields_by_name["controller_metadata"].number << 3
)
T_METADATA = varint(p4r.TableEntry.DESCRIPTOR.fields_by_name["metadata"].number << 3 | 2)
_KIND_TAG = {
    kind: varint(p4r.FieldMatch.DESCRIPTOR.fields_by_name[kind.name.lower()].number << 3 | 2)
    for kind in MatchKind
}

# How a key's stored value (offload.p4decode.KeyValue) is laid out: one value (exact,
# optional), a value and a second value (ternary mask, range high), or an LPM (value, length).
_ONE, _TWO, _LPM = range(3)
_CODE = {
    MatchKind.EXACT: _ONE,
    MatchKind.OPTIONAL: _ONE,
    MatchKind.TERNARY: _TWO,
    MatchKind.RANGE: _TWO,
    MatchKind.LPM: _LPM,
}

# A key: (slot in the stored values, layout, width, heads). Heads are the bytes before the
# value(s), by value length: heads[n] (one value), heads[n][k] (two), the kind's prefix (LPM).
_Key = tuple[int, int, int, object]
# A table: (table_id field, keys in the order the entry's fields go out, per action name:
# (action_id field, params as (argument slot, width, heads by value length)) or None).
_Param = tuple[int, int, list[bytes]]
_Action = tuple[bytes, tuple[_Param, ...]]
_Plan = tuple[bytes, tuple[_Key, ...], dict[str, _Action | None]]


def enabled() -> bool:
    """Whether Read serializes responses from stored bytes (NICFW_WIRE_READ=0 turns it off)."""
    return os.environ.get("NICFW_WIRE_READ", "1") != "0"


def _length(n: int) -> bytes:
    return _SMALL[n] if n < 4096 else varint(n)


def _entity_head(n: int) -> bytes:
    """The bytes before an n-byte TableEntry in a ReadResponse's `entities` field."""
    entity = T_TABLE_ENTRY + _length(n)
    return T_ENTITIES + _length(len(entity) + n) + entity


_ENTITY_HEADS = tuple(_entity_head(n) for n in range(4096))


def entity_field(table_entry: bytes) -> bytes:
    """One `entities` field of a ReadResponse holding an Entity with this TableEntry."""
    n = len(table_entry)
    return (_ENTITY_HEADS[n] if n < 4096 else _entity_head(n)) + table_entry


def message_field(entity: p4r.Entity) -> bytes:
    """One `entities` field of a ReadResponse holding this Entity."""
    data = entity.SerializeToString()
    return T_ENTITIES + _length(len(data)) + data


class StoredEntryEncoder:
    """Serialized TableEntry bytes of stored entries; None means "encode the usual way"."""

    def __init__(self, schema: P4Schema) -> None:
        self.schema = schema
        self._plans: dict[str, _Plan | None] = {}
        self._mask_heads = [T_HIGH + _SMALL[k] for k in range(_MAX_WIDTH // 8 + 1)]

    def _plan(self, name: str) -> _Plan | None:
        try:
            table = self.schema.table(name)
        except SchemaError:
            return None
        if not table.id:
            return None
        keys: list[tuple[str, _Key]] = []
        for slot, f in enumerate(table.match_fields):
            if not f.id or f.bitwidth > _MAX_WIDTH:
                return None
            code = _CODE[f.kind]
            prefix = T_FIELD_ID + varint(f.id) + _KIND_TAG[f.kind]
            nbytes = (f.bitwidth + 7) // 8 or 1
            heads: object = prefix
            if code == _ONE:
                heads = one_value_heads(prefix, nbytes)
            elif code == _TWO:
                heads = two_value_heads(prefix, nbytes)
            keys.append((f.name, (slot, code, f.bitwidth, heads)))
        keys.sort(key=lambda named: named[0])  # an Entry's match (and so its message) by name
        actions = {self.schema.action(a).name: self._action(a) for a in table.action_ids}
        return (T_TABLE_ID + varint(table.id), tuple(k for _n, k in keys), actions)

    def _action(self, action_id: int) -> _Action | None:
        action = self.schema.action(action_id)
        params: list[tuple[str, _Param]] = []
        for j, p in enumerate(action.params):
            if not p.id or p.bitwidth > _MAX_WIDTH:
                return None
            head = T_PARAM_ID + varint(p.id) + T_PARAM_VALUE
            heads = [b""]
            for n in range(1, (p.bitwidth + 7) // 8 + 1):
                param = head + _SMALL[n]
                heads.append(T_PARAMS + _SMALL[len(param) + n] + param)
            params.append((p.name, (j, p.bitwidth, heads)))
        params.sort(key=lambda named: named[0])  # an Entry's params by name
        return T_ACTION_ID + varint(action.id), tuple(p for _n, p in params)

    def table_entry(self, table: str, rec: StoredEntry) -> bytes | None:
        """The stored entry of `table` as serialized TableEntry bytes; None: the usual path.

        Only entries written through the fast decoders (their key values kept as `raw`), with
        values an encoder writes as they are: what `WireEncoder.table_entry` would decline
        (a value too wide, a number out of its field's range) is declined here too.
        """
        vals: tuple[Any, ...] | None = rec.raw  # type: ignore[assignment]
        if vals is None:
            return None
        plans = self._plans
        if table in plans:
            plan = plans[table]
        else:
            plan = plans[table] = self._plan(table)
        if plan is None:
            return None
        head, keys, actions = plan
        action = actions.get(rec.action)
        if action is None:
            return None
        mask_heads = self._mask_heads
        parts = [head]
        add = parts.append
        heads: Any
        for slot, code, width, heads in keys:
            v = vals[slot]
            if v is None:
                continue
            if code == _ONE:
                if v >> width:
                    return None
                n = (v.bit_length() + 7) >> 3 or 1
                add(heads[n])
                add(v.to_bytes(n, "big"))
            elif code == _TWO:
                a, b = v
                if a >> width or b >> width:
                    return None
                n = (a.bit_length() + 7) >> 3 or 1
                k = (b.bit_length() + 7) >> 3 or 1
                add(heads[n][k])
                add(a.to_bytes(n, "big"))
                add(mask_heads[k])
                add(b.to_bytes(k, "big"))
            else:
                a, plen = v
                if a >> width or not 0 <= plen < _INT32:
                    return None
                vb = a.to_bytes((a.bit_length() + 7) >> 3 or 1, "big")
                inner = T_VALUE + _SMALL[len(vb)] + vb
                if plen:
                    inner += T_PREFIX_LEN + varint(plen)
                body = heads + _SMALL[len(inner)] + inner
                add(T_MATCH + _SMALL[len(body)] + body)
        action_head, params = action
        args = rec.args
        if len(args) != len(params):
            return None
        act = [action_head]
        for j, width, pheads in params:
            v = args[j]
            if v >> width:
                return None
            n = (v.bit_length() + 7) >> 3 or 1
            act.append(pheads[n])
            act.append(v.to_bytes(n, "big"))
        body = b"".join(act)
        n = len(body)
        table_action = T_TABLE_ACTION + (_SMALL[n] if n < 4096 else varint(n)) + body
        n = len(table_action)
        add(T_ACTION + (_SMALL[n] if n < 4096 else varint(n)))
        add(table_action)
        # The fields after the match and action, in field-number order as protobuf writes them.
        priority = rec.priority
        if priority:
            if not 0 < priority < _INT32:
                return None
            add(T_PRIORITY + varint(priority))
        cookie = rec.controller_metadata
        if cookie:
            if not 0 < cookie < _UINT64:
                return None
            add(T_CONTROLLER_METADATA + varint(cookie))
        idle = rec.idle_timeout_ns
        if idle:
            if not 0 < idle < _INT64:
                return None
            add(T_IDLE + varint(idle))
        metadata = rec.metadata
        if metadata:
            n = len(metadata)
            add(T_METADATA + (_SMALL[n] if n < 4096 else varint(n)) + metadata)
        return b"".join(parts)
