"""Table entries written straight to protobuf wire bytes, for bulk writes.

Setting fields on upb messages one by one costs a few hundred nanoseconds per field (each
submessage access makes a Python wrapper), which made encoding most of a sync's client time.
`WireEncoder` builds a TableEntry's serialized bytes from per-table and per-action prefixes
worked out once; `TableEntryEncoder.add_updates` joins them into a batch and parses that into
the WriteRequest in one call. It handles the ordinary entry only: for anything else (an unknown
name, a key of the wrong kind, a value that does not fit, an out-of-range number) it returns
None and the caller encodes the entry the usual way, which raises the usual error. The bytes
parse to exactly the message `encode_table_entry` builds (tests/unit/test_p4wire.py).
"""

from __future__ import annotations

from google.protobuf.message import Message

from offload.entries import Entry, Exact, Lpm, Optional, Range, Ternary
from offload.p4schema import MatchKind, P4Schema, SchemaError
from offload.proto import p4r


def varint(n: int) -> bytes:
    """Protobuf base-128 varint of a non-negative integer."""
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# Lengths and small numbers by table look-up: a match body is never near this long.
_SMALL = tuple(varint(i) for i in range(4096))
_MAX_WIDTH = 8 * 1000  # wider keys or params: the usual path (keeps lengths in _SMALL)


def _tag(message: type[Message], field: str) -> bytes:
    fd = message.DESCRIPTOR.fields_by_name[field]
    wire_type = 2 if fd.type in (fd.TYPE_BYTES, fd.TYPE_MESSAGE, fd.TYPE_STRING) else 0
    return varint(fd.number << 3 | wire_type)


_FM = p4r.FieldMatch
T_UPDATES = _tag(p4r.WriteRequest, "updates")
T_UPDATE_TYPE = _tag(p4r.Update, "type")
T_UPDATE_ENTITY = _tag(p4r.Update, "entity")
T_TABLE_ENTRY = _tag(p4r.Entity, "table_entry")
T_TABLE_ID = _tag(p4r.TableEntry, "table_id")
T_MATCH = _tag(p4r.TableEntry, "match")
T_ACTION = _tag(p4r.TableEntry, "action")
T_PRIORITY = _tag(p4r.TableEntry, "priority")
T_IS_DEFAULT = _tag(p4r.TableEntry, "is_default_action")
T_IDLE = _tag(p4r.TableEntry, "idle_timeout_ns")
T_FIELD_ID = _tag(_FM, "field_id")
T_KIND = {
    Exact: _tag(_FM, "exact"),
    Ternary: _tag(_FM, "ternary"),
    Lpm: _tag(_FM, "lpm"),
    Range: _tag(_FM, "range"),
    Optional: _tag(_FM, "optional"),
}
T_VALUE = _tag(_FM.Exact, "value")  # value, ternary value, LPM value, range low: field 1
T_MASK = _tag(_FM.Ternary, "mask")
T_HIGH = _tag(_FM.Range, "high")
T_PREFIX_LEN = _tag(_FM.LPM, "prefix_len")
T_TABLE_ACTION = _tag(p4r.TableAction, "action")
T_ACTION_ID = _tag(p4r.Action, "action_id")
T_PARAMS = _tag(p4r.Action, "params")
T_PARAM_ID = _tag(p4r.Action.Param, "param_id")
T_PARAM_VALUE = _tag(p4r.Action.Param, "value")
assert T_VALUE == _tag(_FM.Ternary, "value") == _tag(_FM.LPM, "value") == _tag(_FM.Range, "low")
assert _tag(_FM.Optional, "value") == T_VALUE and T_MASK == T_HIGH

_KIND_CLASS: dict[MatchKind, type] = {
    MatchKind.EXACT: Exact,
    MatchKind.LPM: Lpm,
    MatchKind.TERNARY: Ternary,
    MatchKind.RANGE: Range,
    MatchKind.OPTIONAL: Optional,
}
_INT32 = 1 << 31
_INT64 = 1 << 63

# Per key, the bytes before its value(s), by value length in bytes (index 0 unused):
# one-value kinds (exact, optional): head[n]; two-value kinds (ternary, range): head[n][k], and
# the second value's own head is T_MASK + _SMALL[k]. LPM keys are rare: built in full.
_ONE, _TWO, _LPM = range(3)
_KindCode = {Exact: _ONE, Optional: _ONE, Ternary: _TWO, Range: _TWO, Lpm: _LPM}
_Heads = list[bytes] | list[list[bytes]]
# per table: (table_id field bytes, {key name: (class, kind code, width, heads or prefix)})
_TablePlan = tuple[bytes, dict[str, tuple[type, int, int, object]]]
# per action: (action_id field bytes, {param name: (width, head by value length)})
_ActionPlan = tuple[bytes, dict[str, tuple[int, list[bytes]]]]
_MASK_HEADS = [T_MASK + _SMALL[k] for k in range(_MAX_WIDTH // 8 + 2)]


def one_value_heads(prefix: bytes, nbytes: int) -> list[bytes]:
    """Per value length n (index 0 unused): a one-value key's bytes before its value."""
    heads = [b""]
    for n in range(1, nbytes + 1):
        body = prefix + _SMALL[n + 2] + T_VALUE + _SMALL[n]
        heads.append(T_MATCH + varint(len(body) + n) + body)
    return heads


def two_value_heads(prefix: bytes, nbytes: int) -> list[list[bytes]]:
    """Per value lengths n, k: a two-value key's bytes before its first value (the second's
    own head is T_MASK + its length)."""
    heads: list[list[bytes]] = [[]]
    for n in range(1, nbytes + 1):
        row = [b""]
        for k in range(1, nbytes + 1):
            body = prefix + _SMALL[n + k + 4] + T_VALUE + _SMALL[n]
            row.append(T_MATCH + varint(len(body) + n + 2 + k) + body)
        heads.append(row)
    return heads


class WireEncoder:
    """Serialized TableEntry bytes for ordinary entries; None means "encode the usual way"."""

    def __init__(self, schema: P4Schema) -> None:
        self.schema = schema
        self._tables: dict[str, _TablePlan | None] = {}
        self._actions: dict[str, _ActionPlan | None] = {}

    def _table(self, name: str) -> _TablePlan | None:
        try:
            t = self.schema.table(name)
        except SchemaError:
            return None
        fields: dict[str, tuple[type, int, int, object]] = {}
        for f in t.match_fields:
            if not f.id or f.bitwidth > _MAX_WIDTH:
                return None
            cls = _KIND_CLASS[f.kind]
            code = _KindCode[cls]
            prefix = T_FIELD_ID + varint(f.id) + T_KIND[cls]
            nbytes = (f.bitwidth + 7) // 8 or 1
            heads: object = prefix
            if code == _ONE:
                heads = one_value_heads(prefix, nbytes)
            elif code == _TWO:
                heads = two_value_heads(prefix, nbytes)
            fields[f.name] = (cls, code, f.bitwidth, heads)
        return (T_TABLE_ID + varint(t.id) if t.id else b"", fields)

    def _action(self, name: str) -> _ActionPlan | None:
        try:
            a = self.schema.action(name)
        except SchemaError:
            return None
        params = {}
        for p in a.params:
            if p.bitwidth > _MAX_WIDTH:
                return None
            pid = T_PARAM_ID + varint(p.id) if p.id else b""
            heads = [b""]
            for n in range(1, (p.bitwidth + 7) // 8 + 2):
                param = pid + T_PARAM_VALUE + _SMALL[n]
                heads.append(T_PARAMS + varint(len(param) + n) + param)
            params[p.name] = (p.bitwidth, heads)
        return (T_ACTION_ID + varint(a.id), params) if a.id else None

    def table_entry(self, entry: Entry, key_only: bool) -> bytes | None:
        """The entry as serialized TableEntry bytes, or None if it needs the usual path."""
        small = _SMALL
        tables = self._tables
        if entry.table in tables:
            tplan = tables[entry.table]
        else:
            tplan = tables[entry.table] = self._table(entry.table)
        if tplan is None:
            return None
        head, fields = tplan
        parts = [head]
        add = parts.append
        for name, fm in entry.match:
            spec = fields.get(name)
            if spec is None:
                return None
            cls, code, width, heads = spec
            if type(fm) is not cls:
                return None
            if code == _ONE:
                v = fm.value  # type: ignore[union-attr]
                if v >> width:  # also catches negative values
                    return None
                n = (v.bit_length() + 7) >> 3 or 1
                add(heads[n])  # type: ignore[index]
                add(v.to_bytes(n, "big"))
            elif code == _TWO:
                if cls is Ternary:
                    v, m = fm.value, fm.mask  # type: ignore[union-attr]
                else:
                    v, m = fm.low, fm.high  # type: ignore[union-attr]
                if v >> width or m >> width:
                    return None
                n = (v.bit_length() + 7) >> 3 or 1
                k = (m.bit_length() + 7) >> 3 or 1
                add(heads[n][k])  # type: ignore[index]
                add(v.to_bytes(n, "big"))
                add(_MASK_HEADS[k])
                add(m.to_bytes(k, "big"))
            else:
                v, plen = fm.value, fm.prefix_len  # type: ignore[union-attr]
                if v >> width or not 0 <= plen < _INT32:
                    return None
                vb = v.to_bytes((v.bit_length() + 7) >> 3 or 1, "big")
                inner = T_VALUE + small[len(vb)] + vb
                if plen:
                    inner += T_PREFIX_LEN + varint(plen)
                body = heads + small[len(inner)] + inner  # type: ignore[operator]
                add(T_MATCH + small[len(body)] + body)
        priority = entry.priority
        if priority:
            if not 0 < priority < _INT32:
                return None
            add(T_PRIORITY + varint(priority))
        if entry.is_default:
            add(T_IS_DEFAULT + b"\x01")
        if not key_only:
            actions = self._actions
            if entry.action in actions:
                aplan = actions[entry.action]
            else:
                aplan = actions[entry.action] = self._action(entry.action)
            if aplan is None:
                return None
            action_head, params = aplan
            act = [action_head]
            for pname, v in entry.params:
                pspec = params.get(pname)
                if pspec is None:
                    return None
                width, pheads = pspec
                if v >> width:
                    return None
                n = (v.bit_length() + 7) >> 3 or 1
                act.append(pheads[n])
                act.append(v.to_bytes(n, "big"))
            action = b"".join(act)
            n = len(action)
            table_action = T_TABLE_ACTION + (small[n] if n < 4096 else varint(n)) + action
            n = len(table_action)
            add(T_ACTION + (small[n] if n < 4096 else varint(n)))
            add(table_action)
        idle = entry.idle_timeout_ns
        if idle:
            if not 0 < idle < _INT64:
                return None
            add(T_IDLE + varint(idle))
        return b"".join(parts)


def update_bytes(update_type: int, table_entry: bytes) -> bytes:
    """One `updates` element of a WriteRequest, serialized."""
    n = len(table_entry)
    entity = T_TABLE_ENTRY + (_SMALL[n] if n < 4096 else varint(n)) + table_entry
    n = len(entity)
    update = T_UPDATE_ENTITY + (_SMALL[n] if n < 4096 else varint(n)) + entity
    if update_type:
        update = T_UPDATE_TYPE + varint(update_type) + update
    n = len(update)
    return T_UPDATES + (_SMALL[n] if n < 4096 else varint(n)) + update
