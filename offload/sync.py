"""Desired-state sync: make the target's tables hold exactly the compiled entries.

`sync` reads what the target really holds in the tables it manages, diffs that against the
desired set by P4Runtime identity (`Entry.key`), and writes only the difference. `apply_diff`
is the incremental path for callers that already know the change (no read-back). Every failing
update is reported with its entry, so a partly applied change is never silent.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field

from offload.entries import Entry, EntryKey
from offload.p4client import DELETE, INSERT, MODIFY, P4Client, PendingWrite
from offload.p4entity import EntityError, TableEntryEncoder, gc_paused
from offload.p4errors import P4ClientError, code_name
from offload.p4schema import P4Schema

Progress = Callable[[int, int], None]  # (updates done, updates in total)

# Write requests in flight at once: enough to keep the target busy while the next batch is
# encoded (bench/bench_sync.py measures 1 against this).
DEFAULT_WINDOW = 4

_OP_NAMES = {INSERT: "INSERT", MODIFY: "MODIFY", DELETE: "DELETE"}

# A default-action entry and a real entry of a table can share `Entry.key` (an LPM entry with
# its only key omitted has an empty match, like the default), so identity includes the flag.
_Ident = tuple[EntryKey, bool]


def _ident(entry: Entry) -> _Ident:
    return (entry.key, entry.is_default)


class DiffError(ValueError):
    """The desired state contradicts itself (two different entries with one key)."""


@dataclass
class Diff:
    """The writes that turn one entry set into another."""

    inserts: list[Entry] = field(default_factory=list)
    modifies: list[Entry] = field(default_factory=list)
    deletes: list[Entry] = field(default_factory=list)
    unchanged: int = 0

    def __len__(self) -> int:
        return len(self.inserts) + len(self.modifies) + len(self.deletes)

    def apply_to(self, entries: Iterable[Entry]) -> list[Entry]:
        """The entry set that results from applying this diff to `entries` (for checking)."""
        state = {_ident(e): e for e in entries}
        for e in self.deletes:
            del state[_ident(e)]
        for e in self.modifies:
            if not e.is_default and _ident(e) not in state:
                raise KeyError(f"MODIFY of a missing entry: {e}")
            state[_ident(e)] = e
        for e in self.inserts:
            if _ident(e) in state:
                raise KeyError(f"INSERT of an existing entry: {e}")
            state[_ident(e)] = e
        return list(state.values())


def diff(desired: Iterable[Entry], actual: Iterable[Entry]) -> Diff:
    """The inserts, modifies and deletes that make `actual` equal `desired`.

    Entries must be built with `Entry.make` (sorted keys), as `decode_table_entry` builds them.
    Default-action entries always exist on the target, so a desired one is a MODIFY when it
    differs; a default in `actual` that `desired` does not mention is left alone.
    """
    # Hashing an entry's key hashes every field match (Python-level dataclass hashes): the
    # keys are hashed once each, with the collector paused (nothing here forms cycles).
    with gc_paused():
        wanted = desired if isinstance(desired, list) else list(desired)
        want = dict(zip([(e.key, e.is_default) for e in wanted], wanted, strict=True))
        if len(want) != len(wanted):  # a key given twice: fine only if the entries are equal
            want = {}
            for e in wanted:
                prev = want.setdefault(_ident(e), e)
                if prev is not e and prev != e:
                    raise DiffError(f"two desired entries share one key: {prev} and {e}")
                want[_ident(e)] = e
        have = {_ident(e): e for e in actual}
        return _changes(want, have)


def _changes(want: dict[_Ident, Entry], have: dict[_Ident, Entry]) -> Diff:
    out = Diff()
    if not have:  # nothing on the target (a first sync): no look-ups, no second hash
        out.inserts = [e for e in want.values() if not e.is_default]
        if len(out.inserts) != len(want):
            out.modifies = [e for e in want.values() if e.is_default]
        return out
    for k, e in want.items():
        cur = have.pop(k, None)
        if cur is None:
            (out.modifies if e.is_default else out.inserts).append(e)
        elif cur.same_action(e):
            out.unchanged += 1
        else:
            out.modifies.append(e)
    out.deletes.extend(e for e in have.values() if not e.is_default)
    return out


@dataclass(frozen=True)
class SyncFailure:
    """One entry the target refused: the operation, the entry, the target's code and message."""

    op: str
    entry: Entry
    code: int
    message: str

    def __str__(self) -> str:
        return f"{self.op} {self.entry.table} failed: {code_name(self.code)}: {self.message}"


@dataclass
class SyncReport:
    """What a sync did: counts, failures (by entry) and where the time went."""

    inserted: int = 0
    modified: int = 0
    deleted: int = 0
    unchanged: int = 0
    failures: list[SyncFailure] = field(default_factory=list)
    not_attempted: int = 0  # updates never sent because the target refused a whole request
    batches: int = 0
    read_s: float = 0.0
    diff_s: float = 0.0
    encode_s: float = 0.0
    write_s: float = 0.0
    total_s: float = 0.0

    @property
    def ok(self) -> bool:
        """Whether every planned write landed."""
        return not self.failures and not self.not_attempted

    @property
    def writes(self) -> int:
        """Updates that landed on the target."""
        return self.inserted + self.modified + self.deleted

    def as_dict(self) -> dict[str, object]:
        """The report as plain values (for `--json`)."""
        return {
            "inserted": self.inserted,
            "modified": self.modified,
            "deleted": self.deleted,
            "unchanged": self.unchanged,
            "failures": [
                {
                    "op": f.op,
                    "table": f.entry.table,
                    "code": code_name(f.code),
                    "message": f.message,
                }
                for f in self.failures
            ],
            "not_attempted": self.not_attempted,
            "batches": self.batches,
            "read_s": self.read_s,
            "diff_s": self.diff_s,
            "encode_s": self.encode_s,
            "write_s": self.write_s,
            "total_s": self.total_s,
        }


class SyncError(Exception):
    """A sync that did not fully land; `report` says exactly which entries failed."""

    def __init__(self, report: SyncReport, cause: Exception | None = None) -> None:
        self.report = report
        self.cause = cause
        parts = [str(f) for f in report.failures[:3]]
        if len(report.failures) > 3:
            parts.append(f"... {len(report.failures) - 3} more")
        if cause is not None:
            parts.append(f"stopped with {report.not_attempted} updates not sent: {cause}")
        super().__init__(f"sync incomplete: {len(report.failures)} failed; " + "; ".join(parts))


def apply_diff(
    client: P4Client,
    schema: P4Schema,
    changes: Diff,
    *,
    batch_size: int | None = None,
    window: int = DEFAULT_WINDOW,
    progress: Progress | None = None,
    raise_on_failure: bool = True,
) -> SyncReport:
    """Write a diff: deletes, then modifies, then inserts, each in batches.

    Deletes go first because they free table capacity that the inserts may need, and each kind
    gets its own WriteRequests because a target may apply the updates of one request in any
    order (P4Runtime spec 12.2); a delete-then-insert of a full table in one request could fail
    on the insert. Within a kind, up to `window` requests are in flight while the next batch is
    encoded (a kind's updates are independent of each other, so their order does not matter);
    the first request of a kind is sent only when every request of the kind before has been
    answered. `window=1` waits for each answer before encoding the next batch.

    Every failing update is reported with its entry, whether the target refused it or it could
    not be encoded. An entry that cannot be encoded stops the write like a refused request:
    what was sent before it is reported as landed, the rest as not attempted (`SyncError`, with
    the encoder's error as the cause).
    """
    if window < 1:
        raise ValueError(f"window must be at least 1, not {window}")
    report = SyncReport(unchanged=changes.unchanged)
    started = time.perf_counter()
    size = batch_size or client.batch_size
    enc = client.encoder(schema)
    # Requests go out as the bytes the encoder makes: no parse into a message and
    # serialization again (a tenth of a full sync's time).
    header = client.new_write_request().SerializeToString()
    writer = _Writer(client, report, len(changes), progress, started)
    # No collections while writing: each would walk every live entry (all of them, when the
    # target runs in this process), for garbage without cycles.
    with gc_paused():
        try:
            for op, entries in (
                (DELETE, changes.deletes),
                (MODIFY, changes.modifies),
                (INSERT, changes.inserts),
            ):
                for start in range(0, len(entries), size):
                    batch = entries[start : start + size]
                    encode_started = time.perf_counter()
                    try:
                        data = header + enc.updates_bytes(op, batch)
                    except EntityError as exc:
                        writer.drain()
                        writer.unencodable(op, batch, enc)
                        raise writer.stopped(exc, unsent=len(changes) - writer.done - 1) from exc
                    finally:
                        report.encode_s += time.perf_counter() - encode_started
                    writer.send(op, entries, start, len(batch), data, window)
                writer.drain()  # the next kind waits for every answer of this one
        except P4ClientError as exc:
            writer.drain(refused=True)
            raise writer.stopped(exc, unsent=len(changes) - writer.done) from exc
    writer.finish()
    if raise_on_failure and not report.ok:
        raise SyncError(report)
    return report


class _Writer:
    """The requests of `apply_diff` in flight, and what their answers say."""

    def __init__(
        self,
        client: P4Client,
        report: SyncReport,
        total: int,
        progress: Progress | None,
        started: float,
    ) -> None:
        self.client = client
        self.report = report
        self.total = total
        self.progress = progress
        self.done = 0  # updates answered (landed or refused one by one)
        self.landed = {INSERT: 0, MODIFY: 0, DELETE: 0}
        self.pending: deque[tuple[int, Sequence[Entry], int, PendingWrite]] = deque()
        self.started = started

    def send(
        self, op: int, entries: Sequence[Entry], start: int, count: int, data: bytes, window: int
    ) -> None:
        while len(self.pending) >= window:
            self._take()
        self.pending.append((op, entries, count, self.client.submit_serialized(data, start)))

    def _take(self) -> None:
        op, entries, count, pending = self.pending.popleft()
        failed = pending.result()  # raises when the whole request is refused
        self.report.batches += 1
        for err in failed:
            self.report.failures.append(
                SyncFailure(_OP_NAMES[op], entries[err.index], err.code, err.message)
            )
        self.landed[op] += count - len(failed)
        self.done += count
        if self.progress is not None:
            self.progress(self.done, self.total)

    def drain(self, refused: bool = False) -> None:
        """Take every answer; after a refusal, the other answers are taken as they are."""
        while self.pending:
            if not refused:
                self._take()
                continue
            with suppress(P4ClientError):  # also refused: its updates count as not attempted
                self._take()

    def unencodable(self, op: int, batch: Sequence[Entry], enc: TableEntryEncoder) -> None:
        """Report the first entry of `batch` that cannot be encoded."""
        for entry in batch:
            try:
                enc.updates_bytes(op, (entry,))
            except EntityError as exc:
                self.report.failures.append(SyncFailure(_OP_NAMES[op], entry, exc.code, str(exc)))
                return

    def stopped(self, cause: Exception, unsent: int) -> SyncError:
        """The error that ends a write cut short, `unsent` updates never sent."""
        self.report.not_attempted = unsent
        self.finish()
        return SyncError(self.report, cause)

    def finish(self) -> None:
        report = self.report
        report.inserted = self.landed[INSERT]
        report.modified = self.landed[MODIFY]
        report.deleted = self.landed[DELETE]
        report.total_s = time.perf_counter() - self.started
        report.write_s = report.total_s - report.encode_s


def managed_tables(schema: P4Schema, tables: Iterable[str] | None) -> list[str]:
    """Full names of the tables a sync manages (aliases accepted; None means all of them)."""
    if tables is None:
        return [t.name for t in schema.iter_tables()]
    return [schema.table(t).name for t in tables]


def read_state(
    client: P4Client, schema: P4Schema, tables: Sequence[str], defaults: Iterable[str] = ()
) -> list[Entry]:
    """The target's entries in `tables`, plus the default entries of the tables in `defaults`."""
    if len(tables) == len(schema.tables):
        actual = client.read_table_entries(schema)  # one wildcard read
    else:
        actual = [e for t in tables for e in client.read_table_entries(schema, t)]
    for t in defaults:
        default = client.read_default_entry(schema, t)
        if default is not None:
            actual.append(default)
    return actual


def sync(
    client: P4Client,
    schema: P4Schema,
    desired: Iterable[Entry],
    tables: Iterable[str] | None = None,
    *,
    batch_size: int | None = None,
    window: int = DEFAULT_WINDOW,
    progress: Progress | None = None,
    raise_on_failure: bool = True,
) -> SyncReport:
    """Make the managed tables hold exactly `desired`; entries not in it are deleted.

    `tables` names the tables this sync owns (all of the P4Info when None). Pass it whenever
    another writer shares the target, e.g. the fast path's flow-cache entries.
    """
    started = time.perf_counter()
    managed = managed_tables(schema, tables)
    owned = set(managed)
    wanted = list(desired)
    strays = {e.table for e in wanted} - owned
    if strays:
        raise ValueError(
            f"desired entries for tables outside the sync: {', '.join(sorted(strays))}"
        )
    defaults = sorted({e.table for e in wanted if e.is_default})
    actual = read_state(client, schema, managed, defaults)
    read_s = time.perf_counter() - started
    changes = diff(wanted, actual)
    diff_s = time.perf_counter() - started - read_s
    try:
        report = apply_diff(
            client,
            schema,
            changes,
            batch_size=batch_size,
            window=window,
            progress=progress,
            raise_on_failure=raise_on_failure,
        )
    except SyncError as exc:
        _timings(exc.report, read_s, diff_s, started)
        raise
    _timings(report, read_s, diff_s, started)
    return report


def _timings(report: SyncReport, read_s: float, diff_s: float, started: float) -> None:
    report.read_s = read_s
    report.diff_s = diff_s
    report.total_s = time.perf_counter() - started
