"""Table entries decoded from a Read's wire bytes: the client's bulk read-back path.

A desired-state re-sync reads every entry back first, and decoding each TableEntry from the
parsed protobuf costs about 12 us in Python (`EntryDecoder.decode`: one wrapper per field
access), half of reading 50,000 entries. `ReadDecoder` hands each serialized ReadResponse to a
numba kernel (`offload.target.wirekernel.decode_entities`, the row decoder the software target
uses for Writes), which reads every ordinary table entry into flat arrays; the rows become the
same `Entry` objects `EntryDecoder.decode` returns, a column (one key of every entry with the
same action and keys present) at a time. Entities the kernel does not take (anything unusual,
anything invalid, anything but a table entry) are decoded from the parsed message exactly as
`P4Client` always did, so results and errors are the same (tests/unit/test_p4readwire.py).

The kernel compiles (or loads from numba's cache) in the background on first use, through
`offload.target.wire`'s loader; until it is ready, and with NICFW_WIRE_DECODE=0, `kernel()` is
None and reads take the message path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError

from offload.entries import Entry, Exact, FieldMatch, Lpm, Optional, Range, Ternary
from offload.p4decode import (
    EXACT,
    LPM,
    OPTIONAL,
    RANGE,
    TERNARY,
    EntryDecoder,
    FastTableDecoder,
)
from offload.p4entity import EntityError
from offload.p4errors import P4ClientError
from offload.p4schema import P4Schema
from offload.proto import p4r, rpc_code
from offload.target import wire
from offload.target.wire import (
    KERNEL_KIND,
    MAX_KEYS,
    MAX_PARAMS,
    MAX_WIDTH,
    Kernel,
    column_ints,
)

# What gRPC reports when a ReadResponse does not parse (grpc/_channel.py), so the bytes path
# fails a Read the way the message path does.
UNPARSABLE = "Exception deserializing response!"


def _warm(kernel: Kernel) -> None:
    """Call the kernel once with arrays of the real types: compiles it, or loads it."""
    kernel(np.frombuffer(b"", np.uint8), *wire.warm_spec(), *wire.row_arrays(1, 1, 1))


_loader = wire.KernelLoader("decode_entities", _warm, "Reads")


def kernel(wait: bool = False) -> Kernel | None:
    """The compiled kernel; None while it compiles (unless `wait`), if off or unusable."""
    return _loader.get(wait) if wire.enabled() else None


def _eligible(decoder: FastTableDecoder) -> bool:
    if not decoder.usable or decoder.size > MAX_KEYS:
        return False
    if any(w > MAX_WIDTH for _i, w, _k, _f in decoder.fields.values()):
        return False
    return all(
        count <= MAX_PARAMS and all(w <= MAX_WIDTH for _j, w in params.values())
        for _name, params, count in decoder.actions.values()
    )


@dataclass(frozen=True, slots=True)
class _Action:
    """One action of one table, as a kernel action slot."""

    decoder: FastTableDecoder
    name: str
    params: tuple[tuple[str, int], ...]  # (name, argument slot), by name: the Entry's order


_MATCH_CLASSES: dict[int, Callable[..., FieldMatch]] = {
    EXACT: Exact,
    LPM: Lpm,
    TERNARY: Ternary,
    RANGE: Range,
    OPTIONAL: Optional,
}


def _column(kind: int, sub: np.ndarray) -> list[FieldMatch]:
    """One key of many rows (kv[rows, k]) as FieldMatch objects.

    A value that repeats (a protocol, a class bit) gets one object for all its rows: they are
    frozen, and building them is most of the time this path takes.
    """
    cls = _MATCH_CLASSES[kind]
    first = column_ints(sub[:, 0], sub[:, 1])
    keys: list[Any]
    if kind in (EXACT, OPTIONAL):
        columns: tuple[list[int], ...] = (first,)
        keys = first
    else:
        second = sub[:, 3].tolist() if kind == LPM else column_ints(sub[:, 2], sub[:, 3])
        columns = (first, second)
        keys = list(zip(first, second, strict=True))
    distinct = set(keys)
    if 2 * len(distinct) > len(keys):  # mostly distinct: one object each
        return list(map(cls, *columns))
    pairs = len(columns) == 2
    made = {k: cls(*k) if pairs else cls(k) for k in distinct}
    return list(map(made.__getitem__, keys))


class ReadDecoder:
    """The table entries of serialized ReadResponses, as `EntryDecoder.decode` gives them."""

    def __init__(self, schema: P4Schema) -> None:
        self.fallback = EntryDecoder(schema)
        chosen = [d for d in self.fallback.fast.values() if _eligible(d)]
        nkeys = max([d.size for d in chosen], default=1)
        max_acts = max([len(d.actions) for d in chosen], default=1)
        rows = max(len(chosen), 1)
        tspec = np.zeros((rows, 6), np.int64)
        kspec = np.zeros((rows, nkeys, 4), np.int64)
        acts = np.full((rows, max(max_acts, 1)), -1, np.int64)
        slots: list[tuple[int, dict[int, tuple[int, int]], int]] = []
        self.actions: list[_Action] = []
        for t, decoder in enumerate(chosen):
            info = decoder.table
            tspec[t] = (info.id, decoder.size, decoder.needs_priority, decoder.supports_idle,
                        0, len(decoder.actions))  # fmt: skip
            for fid, (i, width, kind, _full) in decoder.fields.items():
                kspec[t, i] = (fid, KERNEL_KIND[kind], width, 0)
            for j, (aid, (name, params, count)) in enumerate(sorted(decoder.actions.items())):
                acts[t, j] = len(slots)
                slots.append((aid, params, count))
                self.actions.append(_Action(decoder, name, decoder.param_names[name]))
        if not chosen:
            tspec[0, 0] = -1  # no table id matches
        nparams = max([c for _a, _p, c in slots], default=1)
        aspec = np.zeros((max(len(slots), 1), 2), np.int64)
        pspec = np.zeros((max(len(slots), 1), max(nparams, 1), 2), np.int64)
        for s, (aid, params, count) in enumerate(slots):
            aspec[s] = (aid, count)
            for pid, (j, width) in params.items():
                pspec[s, j] = (pid, width)
        self.spec = (tspec, kspec, acts, aspec, pspec)
        self.shape = (nkeys, max(nparams, 1))

    def decode(self, data: bytes, kern: Kernel) -> list[Entry]:
        """The table entries of one serialized ReadResponse, in order (other entities skipped).

        Raises P4ClientError as `P4Client` does on the message path: INTERNAL with gRPC's
        message when the response does not parse, INTERNAL "undecodable entry: ..." for the
        first entry that does not decode.
        """
        buf = np.frombuffer(data, np.uint8)
        count = kern(buf, *self.spec, *wire.row_arrays(0, *self.shape))
        out = wire.row_arrays(max(count, 0), *self.shape)
        if count > 0:
            kern(buf, *self.spec, *out)
        ok = out[0]
        if count >= 0 and ok.all():
            return self._rows(out, np.arange(count))  # every entity decoded (or none there)
        try:
            entities = p4r.ReadResponse.FromString(data).entities
        except DecodeError:
            raise P4ClientError("Read", rpc_code.INTERNAL, UNPARSABLE) from None
        if count < 0:
            return self._messages(entities, range(len(entities)), {})
        taken = np.flatnonzero(ok)
        decoded = dict(zip(taken.tolist(), self._rows(out, taken), strict=True))
        return self._messages(entities, range(count), decoded)

    def _messages(
        self, entities: Sequence[p4r.Entity], indexes: range, decoded: dict[int, Entry]
    ) -> list[Entry]:
        """Entries in entity order: decoded rows as they are, the others from the messages."""
        decode = self.fallback.decode
        entries: list[Entry] = []
        for u in indexes:
            entry = decoded.get(u)
            if entry is None:
                entity = entities[u]
                if entity.WhichOneof("entity") != "table_entry":
                    continue
                try:
                    entry = decode(entity.table_entry)
                except EntityError as exc:
                    raise P4ClientError(
                        "Read", rpc_code.INTERNAL, f"undecodable entry: {exc}"
                    ) from None
            entries.append(entry)
        return entries

    def _rows(self, out: tuple[np.ndarray, ...], rows: np.ndarray) -> list[Entry]:
        """The entries of decoded rows, in row order.

        Rows with the same action and the same keys present make one group, built a column
        at a time; the groups are then put back in row order.
        """
        if not rows.size:
            return []
        _ok, _tslots, aslots, prio, idle, present, kv, pv = out
        pres = present[rows]
        mask = pres @ (np.int64(1) << np.arange(pres.shape[1], dtype=np.int64))
        codes = aslots[rows] << MAX_KEYS | mask
        groups, inverse = np.unique(codes, return_inverse=True)
        if groups.size == 1:
            return self._group(int(groups[0]), rows, prio, idle, kv, pv)
        entries: list[Entry | None] = [None] * rows.size
        for g, code in enumerate(groups.tolist()):
            at = np.flatnonzero(inverse == g)
            built = self._group(code, rows[at], prio, idle, kv, pv)
            for i, entry in zip(at.tolist(), built, strict=True):
                entries[i] = entry
        return entries  # type: ignore[return-value]

    def _group(
        self,
        code: int,
        rows: np.ndarray,
        prio: np.ndarray,
        idle: np.ndarray,
        kv: np.ndarray,
        pv: np.ndarray,
    ) -> list[Entry]:
        """The entries of rows that share an action and the keys present."""
        action = self.actions[code >> MAX_KEYS]
        mask = code & ((1 << MAX_KEYS) - 1)
        m = rows.size
        kvs = kv[rows]
        keys = [
            zip(repeat(name), _column(kind, kvs[:, k]))
            for name, k, kind in action.decoder.by_name
            if mask >> k & 1
        ]
        matches: list[tuple[tuple[str, FieldMatch], ...]] = (
            list(zip(*keys, strict=True)) if keys else [()] * m
        )
        if action.params:
            pvs = pv[rows]
            cols = [zip(repeat(name), column_ints(pvs[:, j, 0], pvs[:, j, 1]))
                    for name, j in action.params]  # fmt: skip
            params: list[tuple[tuple[str, int], ...]] = list(zip(*cols, strict=True))
        else:
            params = [()] * m
        return list(
            map(
                Entry,
                repeat(action.decoder.table.name),
                matches,
                repeat(action.name),
                params,
                prio[rows].tolist(),
                idle[rows].tolist(),
                repeat(False),
            )
        )
