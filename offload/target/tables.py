"""Match engines for the pipeline's tables, with P4Runtime's match semantics.

- exact: one dict lookup on the tuple of key values;
- LPM (one LPM key): one dict per prefix length, tried longest first, so the longest prefix wins;
- ternary / range / optional (and any mix with exact): a list sorted by priority, highest
  first; the masked keys are packed into one integer so one entry costs one AND and compare
  plus its range checks. Fields an entry omits are wildcards.

Every table keeps its entries by their P4Runtime identity (the match, and the priority where
the table has one), which is also how Write finds the entry to modify or delete. Each entry
carries its direct counter (packets, bytes) and the time it was last hit, for idle timeouts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import cast

from offload.entries import Entry, Exact, FieldMatch, Lpm, Optional, Range, Ternary
from offload.p4schema import MatchKind, TableInfo
from offload.p4values import prefix_mask

_TernaryIdentity = tuple[int, int, tuple[tuple[int, int, int], ...], int]


class TableFull(Exception):
    """A table already holds its P4Info `size` entries."""


class StoredEntry:
    """One table entry as the target keeps it: decoded once, executed as plain values."""

    __slots__ = (
        "_entry",
        "action",
        "args",
        "build",
        "bytes",
        "controller_metadata",
        "identity",
        "idle_timeout_ns",
        "last_hit",
        "metadata",
        "packets",
        "priority",
        "ranges",
        "raw",
        "seq",
        "sort_key",
        "tmask",
        "tvalue",
        "wire",
    )

    def __init__(
        self,
        entry: Entry | None,
        args: tuple[int, ...],
        action: str = "",
        priority: int = 0,
        idle_timeout_ns: int = 0,
        build: Callable[..., Entry] | None = None,
        raw: object = None,
    ) -> None:
        # `entry` None: a fast-path write (offload.p4decode) gives the action, priority
        # and timeout, and its key values as `raw`; `build` makes the Entry from them on first
        # use (a Read), not on the write.
        self._entry = entry
        self.build = build
        self.raw = raw
        if entry is not None:
            action = entry.action
            priority = entry.priority
            idle_timeout_ns = entry.idle_timeout_ns
        self.action = action
        self.priority = priority
        self.idle_timeout_ns = idle_timeout_ns
        self.args = args  # action parameters in the action's declaration order
        self.identity: Hashable = None
        self.packets = 0
        self.bytes = 0
        self.last_hit = time.monotonic_ns()
        self.metadata = b""
        self.controller_metadata = 0
        self.seq = 0
        self.sort_key: tuple[int, int] = (0, 0)
        self.tmask = 0
        self.tvalue = 0
        self.ranges: tuple[tuple[int, int, int], ...] = ()
        self.wire: bytes | None = None  # encoded TableEntry for reads, built on first read

    @property
    def entry(self) -> Entry:
        """The entry as an `Entry` value."""
        entry = self._entry
        if entry is None:
            assert self.build is not None
            build = self.build
            entry = self._entry = build(
                self.raw, self.action, self.args, self.priority, self.idle_timeout_ns
            )
        return entry


class Table:
    """A table: its entries by identity, its default action and its match engine."""

    kind = "table"

    def __init__(self, info: TableInfo) -> None:
        self.info = info
        self.name = info.name
        self.size = info.size
        self.field_names = tuple(f.name for f in info.match_fields)
        self.entries: dict[Hashable, StoredEntry] = {}
        self.default: StoredEntry | None = None  # set by the pipeline from P4Info
        self._seq = 0

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[StoredEntry]:
        return iter(self.entries.values())

    def identity(self, entry: Entry) -> Hashable:
        """The P4Runtime identity of an entry in this table (its match and priority)."""
        raise NotImplementedError

    def raw_identity(self, vals: Sequence[object], priority: int) -> Hashable | None:
        """`identity` from the fast decoder's key values (P4Info order); None: decode fully."""
        return None

    def get(self, identity: Hashable) -> StoredEntry | None:
        """The entry with this identity, if any."""
        return self.entries.get(identity)

    def insert(self, rec: StoredEntry) -> None:
        """Add a new entry (the caller checked that its identity is free)."""
        if len(self.entries) >= self.size:
            raise TableFull(f"{self.name} is full ({self.size} entries)")
        self._seq += 1
        rec.seq = self._seq
        self.entries[rec.identity] = rec
        self._added(rec)

    def replace(self, old: StoredEntry, new: StoredEntry) -> None:
        """MODIFY: put `new` where `old` was, keeping its place among equal priorities."""
        new.seq = old.seq
        self.entries[new.identity] = new
        self._removed(old)
        self._added(new)

    def restore(self, rec: StoredEntry) -> None:
        """Put back an entry that a rolled-back batch deleted, in its old place."""
        self.entries[rec.identity] = rec
        self._added(rec)

    def remove(self, rec: StoredEntry) -> None:
        """Delete an entry."""
        del self.entries[rec.identity]
        self._removed(rec)

    def clear(self) -> None:
        """Remove every entry."""
        for rec in list(self.entries.values()):
            self.remove(rec)

    def _added(self, rec: StoredEntry) -> None:
        pass

    def _removed(self, rec: StoredEntry) -> None:
        pass


class KeylessTable(Table):
    """A table without keys (service_config): only its default action ever runs."""

    kind = "keyless"

    def identity(self, entry: Entry) -> Hashable:
        """Keyless tables hold no entries; the identity is never used."""
        return ()


class ExactTable(Table):
    """All keys exact: a dict from the tuple of key values to the entry."""

    kind = "exact"

    def __init__(self, info: TableInfo) -> None:
        super().__init__(info)
        # Entry.match is sorted by field name; this picks the values back in key order.
        by_name = sorted(range(len(self.field_names)), key=lambda i: self.field_names[i])
        self._order = tuple(by_name.index(i) for i in range(len(self.field_names)))

    def identity(self, entry: Entry) -> Hashable:
        """The tuple of key values, in P4Info key order."""
        match = entry.match
        # Every key of an exact table is present (decode_table_entry checks it) and Exact.
        return tuple([match[i][1].value for i in self._order])  # type: ignore[union-attr]

    def raw_identity(self, vals: Sequence[object], priority: int) -> Hashable | None:
        """The tuple of key values (all present: the decoder checks exact keys)."""
        return tuple(vals)

    def lookup(self, key: tuple[int, ...]) -> StoredEntry | None:
        """The entry matching a packet's key, if any."""
        return self.entries.get(key)


class LpmTable(Table):
    """One LPM key: a dict per prefix length, searched from the longest prefix down."""

    kind = "lpm"

    def __init__(self, info: TableInfo) -> None:
        super().__init__(info)
        self.width = info.match_fields[0].bitwidth
        self._by_len: dict[int, dict[int, StoredEntry]] = {}
        self._lengths: list[tuple[int, int, dict[int, StoredEntry]]] = []

    def identity(self, entry: Entry) -> Hashable:
        """(value, prefix length); an omitted key is the /0 prefix (matches everything)."""
        if not entry.match:
            return (0, 0)
        fm = entry.match[0][1]
        assert isinstance(fm, Lpm)
        return (fm.value, fm.prefix_len)

    def raw_identity(self, vals: Sequence[object], priority: int) -> Hashable | None:
        """(value, prefix length), as `identity` gives it."""
        value = vals[0]
        return (0, 0) if value is None else cast(Hashable, value)

    def lookup(self, value: int) -> StoredEntry | None:
        """The entry with the longest prefix covering `value`."""
        for _plen, mask, entries in self._lengths:
            rec = entries.get(value & mask)
            if rec is not None:
                return rec
        return None

    def _added(self, rec: StoredEntry) -> None:
        value, plen = cast(tuple[int, int], rec.identity)
        bucket = self._by_len.get(plen)
        if bucket is None:
            bucket = self._by_len[plen] = {}
            self._reindex()
        bucket[value] = rec

    def _removed(self, rec: StoredEntry) -> None:
        value, plen = cast(tuple[int, int], rec.identity)
        bucket = self._by_len[plen]
        if bucket.get(value) is rec:
            del bucket[value]
            if not bucket:
                del self._by_len[plen]
                self._reindex()

    def _reindex(self) -> None:
        self._lengths = [
            (plen, prefix_mask(plen, self.width), self._by_len[plen])
            for plen in sorted(self._by_len, reverse=True)
        ]


class TernaryTable(Table):
    """Ternary, range and optional keys with priorities: highest priority match wins."""

    kind = "ternary"

    def __init__(self, info: TableInfo) -> None:
        super().__init__(info)
        # Bit offset of each key in the packed integer that ternary-like keys share.
        self._offsets: dict[str, int] = {}
        self._index: dict[str, int] = {}
        offset = 0
        for i, f in reversed(list(enumerate(info.match_fields))):
            self._index[f.name] = i
            if f.kind != MatchKind.RANGE:
                self._offsets[f.name] = offset
                offset += f.bitwidth
        self._packers = tuple(
            (i, self._offsets[f.name])
            for i, f in enumerate(info.match_fields)
            if f.kind != MatchKind.RANGE
        )
        self._widths = {f.name: f.bitwidth for f in info.match_fields}
        self._raw_plan = tuple(
            (i, f.kind, self._offsets.get(f.name, 0), f.bitwidth)
            for i, f in enumerate(info.match_fields)
        )
        self._sorted: list[StoredEntry] = []
        self._dirty = False  # appended to, needs sorting
        self._stale = False  # entries removed, needs rebuilding from `entries`

    def identity(self, entry: Entry) -> Hashable:
        """(packed value, packed mask, ranges, priority): canonical for valid entries."""
        tvalue = tmask = 0
        ranges: list[tuple[int, int, int]] = []
        for name, fm in entry.match:
            if isinstance(fm, Range):
                ranges.append((self._index[name], fm.low, fm.high))
                continue
            value, mask = _value_mask(fm, self._widths[name])
            offset = self._offsets[name]
            tvalue |= value << offset
            tmask |= mask << offset
        return (tvalue, tmask, tuple(sorted(ranges)), entry.priority)

    def raw_identity(self, vals: Sequence[object], priority: int) -> Hashable | None:
        """What `identity` gives for the same entry, from the fast decoder's key values."""
        tvalue = tmask = 0
        ranges = []
        for i, kind, offset, width in self._raw_plan:
            v = vals[i]
            if v is None:
                continue
            if kind == MatchKind.TERNARY:
                value, mask = cast(tuple[int, int], v)
            elif kind == MatchKind.RANGE:
                low, high = cast(tuple[int, int], v)
                ranges.append((i, low, high))  # in key order, so sorted like `identity`'s
                continue
            elif kind == MatchKind.LPM:
                value, plen = cast(tuple[int, int], v)
                mask = prefix_mask(plen, width)
            else:
                value = cast(int, v)
                mask = (1 << width) - 1
            tvalue |= value << offset
            tmask |= mask << offset
        return (tvalue, tmask, tuple(ranges), priority)

    def pack(self, key: Sequence[int]) -> int:
        """Pack a packet's key values for the masked comparison."""
        packed = 0
        for i, offset in self._packers:
            packed |= key[i] << offset
        return packed

    def lookup(self, key: Sequence[int]) -> StoredEntry | None:
        """The highest-priority entry matching a packet's key."""
        if self._dirty:
            if self._stale:
                self._sorted = list(self.entries.values())
                self._stale = False
            self._sorted.sort(key=_sort_key)
            self._dirty = False
        packed = self.pack(key)
        for rec in self._sorted:
            if packed & rec.tmask == rec.tvalue:
                for i, low, high in rec.ranges:
                    if not low <= key[i] <= high:
                        break
                else:
                    return rec
        return None

    def _added(self, rec: StoredEntry) -> None:
        rec.tvalue, rec.tmask, rec.ranges, _prio = cast(_TernaryIdentity, rec.identity)
        # Highest priority first; among equal priorities the older entry first.
        rec.sort_key = (-rec.priority, rec.seq)
        if not self._stale:
            self._sorted.append(rec)
        self._dirty = True

    def _removed(self, rec: StoredEntry) -> None:
        # Rebuilt on the next lookup: removing from the middle of a long list one entry at a
        # time would make a batch delete quadratic.
        self._stale = self._dirty = True


def _sort_key(rec: StoredEntry) -> tuple[int, int]:
    return rec.sort_key


def _value_mask(fm: FieldMatch, width: int) -> tuple[int, int]:
    full = (1 << width) - 1
    if isinstance(fm, Ternary):
        return fm.value, fm.mask
    if isinstance(fm, Lpm):
        return fm.value, prefix_mask(fm.prefix_len, width)
    if isinstance(fm, Exact | Optional):
        return fm.value, full
    raise TypeError(f"not a masked match: {fm!r}")


def make_table(info: TableInfo) -> Table:
    """The match engine that fits a table's keys."""
    kinds = [f.kind for f in info.match_fields]
    if not kinds:
        return KeylessTable(info)
    if all(k == MatchKind.EXACT for k in kinds):
        return ExactTable(info)
    if kinds == [MatchKind.LPM]:
        return LpmTable(info)
    return TernaryTable(info)
