"""P4Runtime entities on the pipeline: what Write changes and what Read returns.

Writes come in two steps. `prepare` decodes and validates one Update (through
`offload.p4entity.decode_table_entry`, the same rules the controller applies; the ordinary
entry through `offload.p4decode`'s fast path, which stores key values and builds no `Entry`
until a Read needs one, and leaves everything else to the full decoder) without touching
the pipeline, so it runs outside the pipeline lock; `apply` then changes the pipeline and
returns how to undo the change, for ROLLBACK_ON_ERROR batches. Both raise `EntityError`
carrying the gRPC code of the failure (ALREADY_EXISTS, NOT_FOUND, INVALID_ARGUMENT,
RESOURCE_EXHAUSTED, ...).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from offload.entries import Entry
from offload.p4decode import FastTableDecoder, fast_decoders
from offload.p4entity import EntityError, TableEntryEncoder, decode_table_entry
from offload.p4schema import P4Schema, SchemaError
from offload.p4wire import WireEncoder
from offload.proto import p4r, rpc_code
from offload.target.digests import DigestOp
from offload.target.pipeline import Pipeline, default_entry
from offload.target.readwire import StoredEntryEncoder, entity_field
from offload.target.tables import StoredEntry, Table, TableFull

if TYPE_CHECKING:
    from offload.target.wire import WireDecoder

log = logging.getLogger(__name__)

INSERT = p4r.Update.INSERT
MODIFY = p4r.Update.MODIFY
DELETE = p4r.Update.DELETE

Undo = Callable[[], None]


def _declined(table: str, rec: StoredEntry) -> bytes | None:
    return None


def _invalid(message: str) -> EntityError:
    return EntityError(rpc_code.INVALID_ARGUMENT, message)


@dataclass(slots=True)
class TableOp:
    """A validated table-entry update, ready to apply."""

    type: int
    table: Table
    is_default: bool
    rec: StoredEntry | None  # the new entry (INSERT, MODIFY)
    identity: object
    counter: tuple[int, int] | None  # (packets, bytes) given with the update


@dataclass(slots=True)
class GroupOp:
    """A validated multicast group update."""

    type: int
    group_id: int
    ports: tuple[int, ...]
    message: p4r.MulticastGroupEntry


@dataclass(slots=True)
class CounterOp:
    """A validated DirectCounterEntry write (sets an entry's counter)."""

    table: Table
    identity: object
    counter: tuple[int, int]


Op = TableOp | GroupOp | CounterOp | DigestOp


class EntityStore:
    """The target's P4Runtime-visible state over one pipeline."""

    def __init__(self, pipeline: Pipeline, previous: EntityStore | None = None) -> None:
        self.pipeline = pipeline
        self.schema: P4Schema = pipeline.schema
        self.groups: dict[int, p4r.MulticastGroupEntry] = {}
        # Idle timeouts: a heap of (deadline ns, tie-breaker, table, entry); stale items are
        # skipped when they come up.
        self._aging: list[tuple[int, int, Table, StoredEntry]] = []
        self._tie = itertools.count()
        self._param_order: dict[str, tuple[int, ...]] = {}
        self._encoder = TableEntryEncoder(self.schema)
        self._wire = WireEncoder(self.schema)
        self._wire_decoder: WireDecoder | None = None  # built on the first bulk Write
        self._read_encoder: StoredEntryEncoder | None = None  # built on the first wire Read
        self._fast = {
            table_id: (decoder, pipeline.tables[decoder.table.name])
            for table_id, decoder in fast_decoders(self.schema).items()
            if decoder.table.name in pipeline.tables
        }
        if previous is not None:  # RECONCILE_AND_COMMIT keeps the forwarding state
            self.groups = previous.groups
            self._aging = previous._aging
            self._tie = previous._tie

    # ---------------------------------------------------------------- write: validate
    def prepare(self, update: p4r.Update) -> Op:
        """Decode and validate one update; nothing changes yet."""
        utype = update.type
        if utype not in (INSERT, MODIFY, DELETE):
            raise _invalid(f"update type {utype} is not INSERT, MODIFY or DELETE")
        which = update.entity.WhichOneof("entity")
        if which == "table_entry":
            return self._prepare_table(utype, update.entity.table_entry)
        if which == "packet_replication_engine_entry":
            return self._prepare_pre(utype, update.entity.packet_replication_engine_entry)
        if which == "direct_counter_entry":
            if utype != MODIFY:
                raise _invalid("direct counter entries can only be modified")
            return self._prepare_counter(update.entity.direct_counter_entry)
        if which == "digest_entry":
            return self.pipeline.digests.prepare(utype, update.entity.digest_entry)
        if which is None:
            raise _invalid("update without an entity")
        raise EntityError(rpc_code.UNIMPLEMENTED, f"{which} is not supported by this target")

    def prepare_all(
        self, updates: Sequence[p4r.Update], data: bytes | None = None, min_wire: int = 8
    ) -> list[Op | EntityError]:
        """`prepare` of every update, in order: its op, or the error it raises.

        Given the request's wire bytes (and at least `min_wire` updates), the ordinary table
        entries are decoded from those by `offload.target.wire` (the same ops, without reading
        each field through protobuf); every other update goes through `prepare`.
        """
        ops: list[TableOp | None] | None = None
        if data is not None and len(updates) >= min_wire:
            if self._wire_decoder is None:
                from offload.target.wire import WireDecoder

                self._wire_decoder = WireDecoder(self._fast)
            try:
                ops = self._wire_decoder.decode(data, len(updates))
            except Exception:  # a bug there must not fail Writes: the usual path
                log.exception("wire decoding failed; decoding the messages instead")
        out = cast(list[Op | EntityError | None], [None] * len(updates) if ops is None else ops)
        # (`op is None`, not `None in out`: that would call the dataclasses' __eq__.)
        for i in [i for i, op in enumerate(out) if op is None]:
            try:
                out[i] = self.prepare(updates[i])
            except EntityError as exc:
                out[i] = exc
        return cast(list[Op | EntityError], out)

    def _prepare_table(self, utype: int, msg: p4r.TableEntry) -> TableOp:
        fast = self._fast.get(msg.table_id)
        if fast is not None:
            op = self._prepare_fast(utype, msg, *fast)
            if op is not None:
                return op
        entry = decode_table_entry(self.schema, msg)
        table = self.pipeline.tables[entry.table]
        info = table.info
        if msg.HasField("time_since_last_hit"):
            raise _invalid(f"{table.name}: time_since_last_hit must be unset in a write")
        if msg.HasField("meter_config") or msg.HasField("meter_counter_data"):
            raise _invalid(f"{table.name} has no direct meter")
        counter = None
        if msg.HasField("counter_data"):
            if not info.direct_counter_id:
                raise _invalid(f"{table.name} has no direct counter")
            counter = (msg.counter_data.packet_count, msg.counter_data.byte_count)
        if entry.is_default:
            if utype != MODIFY:
                raise _invalid(f"{table.name}: the default entry can only be modified")
            if info.const_default_action_id:
                raise EntityError(rpc_code.PERMISSION_DENIED, f"{table.name}: const default")
            if entry.idle_timeout_ns or counter is not None:
                raise _invalid(f"{table.name}: a default entry has no idle timeout or counter")
            if entry.action:
                new = StoredEntry(entry, self._args(entry))
            else:  # MODIFY without an action resets the default entry
                new = default_entry(self.schema, info)
            return TableOp(utype, table, True, new, None, None)
        identity = table.identity(entry)
        rec = None
        if utype != DELETE:
            if not entry.action:
                raise _invalid(f"{table.name}: INSERT and MODIFY need an action")
            rec = StoredEntry(entry, self._args(entry))
            rec.identity = identity
            rec.metadata = msg.metadata
            rec.controller_metadata = msg.controller_metadata
        return TableOp(utype, table, False, rec, identity, counter)

    def _prepare_fast(
        self, utype: int, msg: p4r.TableEntry, decoder: FastTableDecoder, table: Table
    ) -> TableOp | None:
        """The common ordinary entry, without building an `Entry`; None: decode fully.

        Anything out of the ordinary (a default entry, counter data, any error) goes through
        `_prepare_table`'s full decode, which reports errors the one way.
        """
        if (
            msg.HasField("counter_data")
            or msg.HasField("time_since_last_hit")
            or msg.HasField("meter_config")
            or msg.HasField("meter_counter_data")
        ):
            return None
        decoded = decoder.decode(msg)
        if decoded is None:
            return None
        vals, action, args, priority, idle = decoded
        identity = table.raw_identity(vals, priority)
        if identity is None:
            return None
        if utype == DELETE:
            return TableOp(utype, table, False, None, identity, None)
        if not action:
            return None
        rec = StoredEntry(None, args, action, priority, idle, decoder.entry, vals)
        rec.identity = identity
        rec.metadata = msg.metadata
        rec.controller_metadata = msg.controller_metadata
        return TableOp(utype, table, False, rec, identity, None)

    def _args(self, entry: Entry) -> tuple[int, ...]:
        """The action's parameter values in declaration order (Entry keeps them by name)."""
        order = self._param_order.get(entry.action)
        if order is None:
            declared = [p.name for p in self.schema.action(entry.action).params]
            by_name = sorted(declared)
            order = self._param_order[entry.action] = tuple(by_name.index(n) for n in declared)
        params = entry.params
        return tuple([params[i][1] for i in order])

    def _prepare_pre(self, utype: int, msg: p4r.PacketReplicationEngineEntry) -> GroupOp:
        if msg.WhichOneof("type") != "multicast_group_entry":
            raise EntityError(rpc_code.UNIMPLEMENTED, "only multicast groups are supported")
        group = msg.multicast_group_entry
        if group.multicast_group_id == 0:
            raise _invalid("multicast group id 0 is not valid")
        ports: list[int] = []
        seen: set[tuple[int, int]] = set()
        for replica in group.replicas:
            if replica.WhichOneof("port_kind") == "port":
                if not replica.port:
                    raise _invalid("replica with an empty port")
                port = int.from_bytes(replica.port, "big")
            else:
                port = replica.egress_port
            if port >= 511 or port == self.pipeline.cpu_port:
                raise _invalid(f"replica port {port} is not a data plane port")
            if (port, replica.instance) in seen:
                raise _invalid(f"replica (port {port}, instance {replica.instance}) given twice")
            seen.add((port, replica.instance))
            ports.append(port)
        return GroupOp(utype, group.multicast_group_id, tuple(ports), group)

    def _prepare_counter(self, msg: p4r.DirectCounterEntry) -> CounterOp:
        entry = decode_table_entry(self.schema, msg.table_entry)
        table = self.pipeline.tables[entry.table]
        if not table.info.direct_counter_id:
            raise _invalid(f"{table.name} has no direct counter")
        if entry.is_default:
            raise _invalid(f"{table.name}: the default entry has no counter")
        data = msg.data
        return CounterOp(table, table.identity(entry), (data.packet_count, data.byte_count))

    # ---------------------------------------------------------------- write: apply
    def apply(self, op: Op) -> Undo:
        """Apply a prepared update to the pipeline; returns how to undo it."""
        if isinstance(op, TableOp):
            return self._apply_table(op)
        if isinstance(op, GroupOp):
            return self._apply_group(op)
        if isinstance(op, DigestOp):
            return self.pipeline.digests.apply(op)
        return self._apply_counter(op)

    def apply_each(self, ops: Sequence[tuple[int, Op]], errors: list[EntityError | None]) -> None:
        """`apply` each (index, op) in order, an error to its index; nothing to undo.

        The common op of a bulk write, a plain INSERT, is done here as `_apply_table` does it
        (same checks, same errors) without the call layers and the undo closure.
        """
        apply = self.apply
        track = self._track_idle
        for i, op in ops:
            if (
                type(op) is TableOp
                and op.type == INSERT
                and not op.is_default
                and op.counter is None
            ):
                table = op.table
                rec = op.rec
                assert rec is not None
                if op.identity in table.entries:
                    errors[i] = EntityError(
                        rpc_code.ALREADY_EXISTS, f"{table.name}: entry already exists"
                    )
                    continue
                try:
                    table.insert(rec)
                except TableFull as exc:
                    errors[i] = EntityError(rpc_code.RESOURCE_EXHAUSTED, str(exc))
                    continue
                if rec.idle_timeout_ns:
                    track(table, rec)
                continue
            try:
                apply(op)
            except EntityError as exc:
                errors[i] = exc

    def _apply_table(self, op: TableOp) -> Undo:
        table = op.table
        rec = op.rec
        if op.is_default:
            old_default = table.default
            assert rec is not None and old_default is not None
            table.default = rec

            def restore_default() -> None:
                table.default = old_default

            return restore_default
        old = table.entries.get(op.identity)
        if op.type == INSERT:
            assert rec is not None
            if old is not None:
                raise EntityError(rpc_code.ALREADY_EXISTS, f"{table.name}: entry already exists")
            if op.counter is not None:
                rec.packets, rec.bytes = op.counter
            try:
                table.insert(rec)
            except TableFull as exc:
                raise EntityError(rpc_code.RESOURCE_EXHAUSTED, str(exc)) from None
            self._track_idle(table, rec)
            return lambda: table.remove(rec)
        if old is None:
            raise EntityError(rpc_code.NOT_FOUND, f"{table.name}: no such entry")
        if op.type == DELETE:
            table.remove(old)
            return lambda: table.restore(old)
        assert rec is not None
        rec.packets, rec.bytes = op.counter if op.counter is not None else (old.packets, old.bytes)
        table.replace(old, rec)
        self._track_idle(table, rec)
        return lambda: table.replace(rec, old)

    def _apply_group(self, op: GroupOp) -> Undo:
        groups = self.pipeline.mcast_groups
        old_ports = groups.get(op.group_id)
        old_msg = self.groups.get(op.group_id)
        if op.type == INSERT and old_ports is not None:
            raise EntityError(rpc_code.ALREADY_EXISTS, f"multicast group {op.group_id} exists")
        if op.type != INSERT and old_ports is None:
            raise EntityError(rpc_code.NOT_FOUND, f"no multicast group {op.group_id}")
        if op.type == DELETE:
            del groups[op.group_id]
            del self.groups[op.group_id]
        else:
            groups[op.group_id] = op.ports
            self.groups[op.group_id] = op.message

        def undo() -> None:
            if old_ports is None or old_msg is None:
                groups.pop(op.group_id, None)
                self.groups.pop(op.group_id, None)
            else:
                groups[op.group_id] = old_ports
                self.groups[op.group_id] = old_msg

        return undo

    def _apply_counter(self, op: CounterOp) -> Undo:
        rec = op.table.entries.get(op.identity)
        if rec is None:
            raise EntityError(rpc_code.NOT_FOUND, f"{op.table.name}: no such entry")
        old = (rec.packets, rec.bytes)
        rec.packets, rec.bytes = op.counter

        def undo() -> None:
            rec.packets, rec.bytes = old

        return undo

    # ---------------------------------------------------------------- idle timeouts
    def _track_idle(self, table: Table, rec: StoredEntry) -> None:
        if rec.idle_timeout_ns:
            deadline = rec.last_hit + rec.idle_timeout_ns
            heapq.heappush(self._aging, (deadline, next(self._tie), table, rec))

    def expired(self, now: int | None = None) -> list[tuple[Table, StoredEntry]]:
        """Entries idle for their timeout; their timers restart (spec: notify once per TTL)."""
        now = time.monotonic_ns() if now is None else now
        out: list[tuple[Table, StoredEntry]] = []
        aging = self._aging
        while aging and aging[0][0] <= now:
            _deadline, _tie, table, rec = heapq.heappop(aging)
            if table.entries.get(rec.identity) is not rec or not rec.idle_timeout_ns:
                continue  # deleted or replaced since
            deadline = rec.last_hit + rec.idle_timeout_ns
            if deadline <= now:
                out.append((table, rec))
                rec.last_hit = now
                deadline = now + rec.idle_timeout_ns
            heapq.heappush(aging, (deadline, next(self._tie), table, rec))
        return out

    # ---------------------------------------------------------------- read
    def encode_into(self, rec: StoredEntry, msg: p4r.TableEntry) -> None:
        """Fill an empty TableEntry with a stored entry (without counter data)."""
        if rec.wire is None:
            data = self._wire.table_entry(rec.entry, False)
            if data is None:
                self._encoder.encode_into(rec.entry, msg)
            else:
                msg.ParseFromString(data)
            if rec.metadata:
                msg.metadata = rec.metadata
            if rec.controller_metadata:
                msg.controller_metadata = rec.controller_metadata
            rec.wire = msg.SerializeToString()
        else:
            msg.ParseFromString(rec.wire)

    def read_table(self, request: p4r.TableEntry) -> Iterator[p4r.Entity]:
        """Select what a TableEntry read asks for (now), then encode it (lazily).

        Wildcards as the spec defines them: table_id 0 reads every table, no match reads
        every entry of the table (only those of `priority`, if given), `is_default_action`
        reads the default entry. Counters and time since last hit only when asked for.
        """
        tables = self._read_tables(request)
        if request.is_default_action:
            rec = tables[0].default
            assert rec is not None
            return iter([p4r.Entity(table_entry=self._encoder.encode(rec.entry))])
        with_counter = request.HasField("counter_data")
        with_hit = request.HasField("time_since_last_hit")
        selected: list[tuple[Table, StoredEntry, int, int, int]] = []
        for table, rec in self._select(tables, request):
            selected.append((table, rec, rec.packets, rec.bytes, rec.last_hit))
        return self._render_table(selected, with_counter, with_hit)

    def read_table_fields(self, request: p4r.TableEntry) -> Iterator[bytes] | None:
        """`read_table`'s entities as serialized ReadResponse `entities` fields (the same
        bytes); None for the reads it leaves to `read_table`: the default entry, counter data,
        time since last hit. Selects now, encodes lazily, raises what `read_table` raises."""
        if (
            request.is_default_action
            or request.HasField("counter_data")
            or request.HasField("time_since_last_hit")
        ):
            return None
        selected = list(self._select(self._read_tables(request), request))
        return self._render_fields(selected)

    def _render_fields(self, selected: list[tuple[Table, StoredEntry]]) -> Iterator[bytes]:
        encoder = self._read_encoder
        if encoder is None:
            encoder = self._read_encoder = StoredEntryEncoder(self.schema)
        encode = encoder.table_entry
        for table, rec in selected:
            data = rec.wire
            if data is None:
                try:
                    data = encode(table.name, rec)
                except Exception:  # a bug there must not fail Reads: messages from here on
                    log.exception("encoding a stored entry failed; encoding messages instead")
                    encode = _declined
                    data = None
                if data is None:  # (`encode_into` caches the bytes it serializes)
                    self.encode_into(rec, p4r.TableEntry())
                    data = rec.wire
                    assert data is not None
                else:
                    rec.wire = data
            yield entity_field(data)

    def _read_tables(self, request: p4r.TableEntry) -> list[Table]:
        if request.table_id == 0:
            if request.match or request.is_default_action:
                raise _invalid("a read over all tables (table_id 0) takes no match")
            return list(self.pipeline.tables.values())
        return [self._table(request.table_id)]

    def _table(self, table_id: int) -> Table:
        try:
            return self.pipeline.tables[self.schema.table(table_id).name]
        except SchemaError:
            raise EntityError(rpc_code.NOT_FOUND, f"unknown table id {table_id}") from None

    def _select(
        self, tables: list[Table], request: p4r.TableEntry
    ) -> Iterator[tuple[Table, StoredEntry]]:
        if request.match:
            entry = decode_table_entry(self.schema, request)
            rec = tables[0].entries.get(tables[0].identity(entry))
            if rec is not None:
                yield tables[0], rec
            return
        prio = request.priority
        for table in tables:
            for rec in table.entries.values():
                if not prio or rec.priority == prio:
                    yield table, rec

    def _render_table(
        self,
        selected: list[tuple[Table, StoredEntry, int, int, int]],
        with_counter: bool,
        with_hit: bool,
    ) -> Iterator[p4r.Entity]:
        now = time.monotonic_ns()
        for table, rec, packets, nbytes, last_hit in selected:
            entity = p4r.Entity()
            msg = entity.table_entry
            self.encode_into(rec, msg)
            if with_counter and table.info.direct_counter_id:
                msg.counter_data.packet_count = packets
                msg.counter_data.byte_count = nbytes
            if with_hit and table.info.supports_idle_timeout:
                msg.time_since_last_hit.elapsed_ns = max(0, now - last_hit)
            yield entity

    def read_direct_counter(self, request: p4r.DirectCounterEntry) -> Iterator[p4r.Entity]:
        """DirectCounterEntry reads: one entry, all entries of a table, or of every table."""
        query = request.table_entry
        if query.table_id == 0:
            if query.match:
                raise _invalid("a read over all tables (table_id 0) takes no match")
            tables = [t for t in self.pipeline.tables.values() if t.info.direct_counter_id]
        else:
            tables = [self._table(query.table_id)]
            if not tables[0].info.direct_counter_id:
                raise _invalid(f"{tables[0].name} has no direct counter")
        selected = [(rec, rec.packets, rec.bytes) for _t, rec in self._select(tables, query)]
        return self._render_counters(selected)

    def _render_counters(
        self, selected: list[tuple[StoredEntry, int, int]]
    ) -> Iterator[p4r.Entity]:
        for rec, packets, nbytes in selected:
            entity = p4r.Entity()
            out = entity.direct_counter_entry
            self.encode_into(rec, out.table_entry)
            out.data.packet_count = packets
            out.data.byte_count = nbytes
            yield entity

    def read_pre(self, request: p4r.PacketReplicationEngineEntry) -> Iterator[p4r.Entity]:
        """Multicast group reads: one group, or all of them for group id 0."""
        if request.WhichOneof("type") != "multicast_group_entry":
            return iter(())
        group_id = request.multicast_group_entry.multicast_group_id
        ids = sorted(self.groups) if group_id == 0 else [group_id]
        out = []
        for gid in ids:
            msg = self.groups.get(gid)
            if msg is not None:
                entity = p4r.Entity()
                entity.packet_replication_engine_entry.multicast_group_entry.CopyFrom(msg)
                out.append(entity)
        return iter(out)
