"""A P4Runtime client on grpc: arbitration, pipeline, batched writes, reads, the packet stream.

Synchronous by design: the daemon and the CLI call it from ordinary code. One background thread
reads the StreamChannel and hands what arrives to whoever asked for it: arbitration updates to
the client itself, PacketIn messages to a callback or a queue (decoded by name through the
schema's `packet_in` header), idle-timeout notifications to a callback as decoded entries,
DigestLists to a callback or a queue as decoded samples (acked after the callback returns).
Everything that converts entries to protobuf goes through `offload.p4entity`.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, overload

import grpc

from offload.counters import Counts, read_direct_counters
from offload.digests import DigestInfo, DigestList, decode_digest_list, digest_infos
from offload.entries import Entry
from offload.names import ACL
from offload.p4decode import EntryDecoder
from offload.p4entity import EntityError, TableEntryEncoder, decode_table_entry, gc_paused
from offload.p4errors import (
    NotPrimary,
    P4ClientError,
    TargetUnreachable,
    UpdateError,
    WriteError,
    from_rpc_error,
    rpc_code_of,
    rpc_details_of,
    unreachable_reason,
    update_errors,
)
from offload.p4schema import P4Schema
from offload.packetio import PacketError, PacketIn, decode_metadata, encode_metadata
from offload.proto import p4i, p4r, p4r_grpc, rpc_code

LOG = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 1000
_MAX_MESSAGE = 256 * 1024 * 1024  # a full-table read arrives as large ReadResponses
# A Write of 1000 failing updates returns ~100 KB of per-update errors in one trailer; gRPC's
# default 8 KB limit would turn that into a bare RESOURCE_EXHAUSTED without the details.
_MAX_METADATA = 16 * 1024 * 1024
_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", _MAX_MESSAGE),
    ("grpc.max_send_message_length", _MAX_MESSAGE),
    ("grpc.max_metadata_size", _MAX_METADATA),
]

INSERT: int = p4r.Update.INSERT
MODIFY: int = p4r.Update.MODIFY
DELETE: int = p4r.Update.DELETE
CONTINUE_ON_ERROR: int = p4r.WriteRequest.CONTINUE_ON_ERROR
ROLLBACK_ON_ERROR: int = p4r.WriteRequest.ROLLBACK_ON_ERROR
DATAPLANE_ATOMIC: int = p4r.WriteRequest.DATAPLANE_ATOMIC
VERIFY_AND_COMMIT: int = p4r.SetForwardingPipelineConfigRequest.VERIFY_AND_COMMIT

_STOP = object()


def uint128(value: int | None) -> p4r.Uint128 | None:
    """An election id as P4Runtime's Uint128 (None stays None: no election id)."""
    if value is None:
        return None
    return p4r.Uint128(high=value >> 64, low=value & (1 << 64) - 1)


@dataclass(frozen=True)
class PipelineConfig:
    """The target's forwarding pipeline: P4Info (None when none is set), device config, cookie."""

    p4info: p4i.P4Info | None
    device_config: bytes
    cookie: int


class PendingWrite:
    """A Write sent by `P4Client.submit_serialized` whose answer has not been taken yet."""

    __slots__ = ("_client", "_data", "_future", "_offset")

    def __init__(
        self, client: P4Client, data: bytes, offset: int, future: grpc.Future | None
    ) -> None:
        self._client = client
        self._data = data
        self._offset = offset
        self._future = future

    def result(self) -> list[UpdateError]:
        """Wait for the answer: the failing updates (numbered from the offset) or a raise."""
        if self._future is None:
            request = p4r.WriteRequest.FromString(self._data)
            return self._client.write_request(request, self._offset)
        try:
            self._future.result()
        except grpc.RpcError as exc:
            return self._client._write_failed(exc, self._data, self._offset)
        return []


class P4Client:
    """A P4Runtime controller connection to one device."""

    def __init__(
        self,
        address: str,
        device_id: int = 1,
        election_id: int | None = 1,
        *,
        schema: P4Schema | None = None,
        timeout: float = 30.0,
        batch_size: int = DEFAULT_BATCH_SIZE,
        packet_queue_size: int = 4096,
    ) -> None:
        self.address = address
        self.device_id = device_id
        self.election_id = election_id
        self.schema = schema
        self.timeout = timeout
        self.batch_size = batch_size
        self.on_packet_in: Callable[[PacketIn], None] | None = None
        self.on_idle_timeout: Callable[[list[Entry]], None] | None = None
        self.on_digest: Callable[[DigestList], object] | None = None
        self.auto_ack_digests = True  # ack each DigestList once it is handed over
        self._digest_lists: queue.Queue[DigestList] = queue.Queue(packet_queue_size)
        self._digest_infos: tuple[P4Schema, dict[int, DigestInfo]] | None = None
        self.packets_dropped = 0  # PacketIns lost because the queue was full
        self.stream_errors: deque[p4r.StreamError] = deque(maxlen=100)
        self._packets: queue.Queue[PacketIn] = queue.Queue(packet_queue_size)
        self._channel: grpc.Channel | None = None
        self._stub: p4r_grpc.P4RuntimeStub | None = None
        self._write_bytes: grpc.UnaryUnaryMultiCallable | None = None  # Write of bytes
        self._requests: queue.Queue[object] = queue.Queue()
        self._responses: grpc.Future | None = None
        self._reader: threading.Thread | None = None
        self._arbitrated = threading.Event()
        self._closing = False
        self._is_primary = False
        self._primary_election_id: int | None = None
        self._stream_failure: P4ClientError | None = None
        self._encoders: dict[int, TableEntryEncoder] = {}

    # -- connection ---------------------------------------------------------------------------

    @classmethod
    def connect(
        cls,
        address: str,
        device_id: int = 1,
        election_id: int | None = 1,
        *,
        schema: P4Schema | None = None,
        connect_timeout: float = 5.0,
        wait_for_target: bool = False,
        require_primary: bool = True,
        **kwargs: object,
    ) -> P4Client:
        """Open a connection, arbitrate, and return the client (primary unless told otherwise).

        With `election_id=None` the client opens no stream and only reads: inspection tools
        use that so that they never take the device from the controller that programs it.
        """
        client = cls(address, device_id, election_id, schema=schema, **kwargs)  # type: ignore[arg-type]
        client.open(
            connect_timeout=connect_timeout,
            wait_for_target=wait_for_target,
            require_primary=require_primary,
        )
        return client

    def open(
        self,
        *,
        connect_timeout: float = 5.0,
        wait_for_target: bool = False,
        require_primary: bool = True,
    ) -> None:
        """Connect and send the arbitration request; raise if the target is down or refuses.

        With `wait_for_target`, a target that is still starting gets `connect_timeout` seconds
        to come up; otherwise the first failed connection attempt is reported at once.
        """
        if self._channel is not None:
            raise RuntimeError("P4Client is already open")
        self._channel = grpc.insecure_channel(self.address, options=_CHANNEL_OPTIONS)
        self._stub = p4r_grpc.P4RuntimeStub(self._channel)
        self._write_bytes = self._channel.unary_unary(
            "/p4.v1.P4Runtime/Write", response_deserializer=p4r.WriteResponse.FromString
        )
        try:
            self._reach(connect_timeout, wait_for_target)
            if self.election_id is None:
                return  # read-only: no arbitration
            self._start_stream(connect_timeout)
            if require_primary and not self._is_primary:
                raise NotPrimary(
                    "arbitration",
                    f"election id {self.election_id} is not the highest for device "
                    f"{self.device_id}; primary holds {self._primary_election_id}",
                )
        except BaseException:
            self.close()
            raise

    def _reach(self, timeout: float, wait: bool) -> None:
        assert self._channel is not None and self._stub is not None
        if wait:
            try:
                grpc.channel_ready_future(self._channel).result(timeout=timeout)
            except grpc.FutureTimeoutError:
                raise TargetUnreachable(self.address, f"no answer within {timeout:g} s") from None
        try:
            self._stub.Capabilities(p4r.CapabilitiesRequest(), timeout=timeout)
        except grpc.RpcError as exc:
            code = rpc_code_of(exc)
            if code == rpc_code.UNAVAILABLE:
                reason = unreachable_reason(rpc_details_of(exc))
                raise TargetUnreachable(self.address, reason) from None
            if code == rpc_code.DEADLINE_EXCEEDED:
                raise TargetUnreachable(self.address, f"no answer within {timeout:g} s") from None
            # UNIMPLEMENTED and the like: something that speaks gRPC is there; go on.

    def _start_stream(self, timeout: float) -> None:
        assert self._stub is not None and self.election_id is not None
        self._responses = self._stub.StreamChannel(self._request_iterator())
        self._reader = threading.Thread(
            target=self._read_stream, name=f"p4rt-stream-{self.address}", daemon=True
        )
        self._reader.start()
        self._send(
            p4r.StreamMessageRequest(
                arbitration=p4r.MasterArbitrationUpdate(
                    device_id=self.device_id, election_id=uint128(self.election_id)
                )
            )
        )
        if not self._arbitrated.wait(timeout):
            raise TargetUnreachable(self.address, f"no arbitration answer within {timeout:g} s")
        if self._stream_failure is not None:
            raise self._stream_failure

    def close(self) -> None:
        """End the stream and the channel; the client cannot be reopened."""
        self._closing = True
        self._requests.put(_STOP)
        if self._responses is not None:
            self._responses.cancel()
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(timeout=5)
        if self._channel is not None:
            self._channel.close()
        self._channel = None
        self._stub = None
        self._write_bytes = None
        self._is_primary = False

    def __enter__(self) -> P4Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def is_primary(self) -> bool:
        """Whether the target last told this client that it is the primary controller."""
        return self._is_primary

    @property
    def primary_election_id(self) -> int | None:
        """The election id of the current primary, as the target last reported it."""
        return self._primary_election_id

    def _stub_or_raise(self) -> p4r_grpc.P4RuntimeStub:
        if self._stub is None:
            raise P4ClientError("request", rpc_code.FAILED_PRECONDITION, "client is not open")
        return self._stub

    def _error(self, operation: str, exc: grpc.RpcError) -> P4ClientError:
        return from_rpc_error(operation, exc, self.address)

    # -- the stream ---------------------------------------------------------------------------

    def _request_iterator(self) -> Iterator[p4r.StreamMessageRequest]:
        while True:
            item = self._requests.get()
            if item is _STOP:
                return
            assert isinstance(item, p4r.StreamMessageRequest)
            yield item

    def _send(self, msg: p4r.StreamMessageRequest) -> None:
        if self._closing or self._responses is None:
            raise P4ClientError("stream", rpc_code.FAILED_PRECONDITION, "client is not open")
        if self._stream_failure is not None:
            raise self._stream_failure
        self._requests.put(msg)

    def _read_stream(self) -> None:
        assert self._responses is not None
        try:
            for msg in self._responses:
                self._dispatch(msg)
        except grpc.RpcError as exc:
            if not self._closing:
                self._stream_failure = self._error("StreamChannel", exc)
                if self._arbitrated.is_set():  # before that, open() raises it instead
                    LOG.warning("P4Runtime stream ended: %s", self._stream_failure)
        else:
            if not self._closing:
                self._stream_failure = P4ClientError(
                    "StreamChannel", rpc_code.UNAVAILABLE, "the target closed the stream"
                )
        self._is_primary = False
        self._arbitrated.set()

    def _dispatch(self, msg: p4r.StreamMessageResponse) -> None:
        which = msg.WhichOneof("update")
        try:
            if which == "arbitration":
                arb = msg.arbitration
                self._is_primary = arb.status.code == rpc_code.OK
                if arb.HasField("election_id"):
                    eid = arb.election_id
                    self._primary_election_id = eid.high << 64 | eid.low
                self._arbitrated.set()
            elif which == "packet":
                self._packet_in(msg.packet)
            elif which == "idle_timeout_notification":
                self._idle_timeout(msg.idle_timeout_notification)
            elif which == "digest":
                self._digest(msg.digest)
            elif which == "error":
                self.stream_errors.append(msg.error)
                LOG.warning("P4Runtime stream error from %s: %s", self.address, msg.error.message)
        except Exception:
            # a faulty callback or an undecodable message must not end the stream
            LOG.exception("handling a %s message from %s failed", which, self.address)

    def _packet_in(self, packet: p4r.PacketIn) -> None:
        if self.schema is None:
            raise PacketError("a PacketIn arrived but the client has no schema to decode it")
        pin = PacketIn(
            packet.payload, decode_metadata(self.schema.header("packet_in"), packet.metadata)
        )
        callback = self.on_packet_in
        if callback is not None:
            callback(pin)
            return
        try:
            self._packets.put_nowait(pin)
        except queue.Full:
            self.packets_dropped += 1

    def _idle_timeout(self, note: p4r.IdleTimeoutNotification) -> None:
        callback = self.on_idle_timeout
        if callback is None or self.schema is None:
            return
        callback([decode_table_entry(self.schema, te) for te in note.table_entry])

    def _digest(self, msg: p4r.DigestList) -> None:
        if self.schema is None:
            raise PacketError("a DigestList arrived but the client has no schema to decode it")
        if self._digest_infos is None or self._digest_infos[0] is not self.schema:
            infos = {d.id: d for d in digest_infos(self.schema.p4info).values()}
            self._digest_infos = (self.schema, infos)
        digests = decode_digest_list(self._digest_infos[1], msg)
        callback = self.on_digest
        if callback is not None:
            callback(digests)  # raises: no ack, the target resends after its ack timeout
        else:
            try:
                self._digest_lists.put_nowait(digests)
            except queue.Full:
                self.packets_dropped += 1
        if self.auto_ack_digests:
            self.ack_digest(msg.digest_id, msg.list_id)

    def digest_list(self, timeout: float | None = None) -> DigestList | None:
        """The next queued DigestList (when no `on_digest` callback is set), or None."""
        try:
            return self._digest_lists.get(timeout=timeout)
        except queue.Empty:
            return None

    def ack_digest(self, digest_id: int, list_id: int) -> None:
        """Acknowledge a DigestList: the target may report the same data again."""
        ack = p4r.DigestListAck(digest_id=digest_id, list_id=list_id)
        self._send(p4r.StreamMessageRequest(digest_ack=ack))

    def configure_digest(
        self,
        schema: P4Schema,
        name: str,
        *,
        max_timeout_ns: int = 0,
        max_list_size: int = 1,
        ack_timeout_ns: int = 0,
    ) -> None:
        """Enable a digest (DigestEntry INSERT, or MODIFY when it is already configured)."""
        infos = digest_infos(schema.p4info)
        if name not in infos:
            raise P4ClientError("Write", rpc_code.NOT_FOUND, f"P4Info has no digest {name!r}")
        entry = p4r.DigestEntry(digest_id=infos[name].id)
        entry.config.max_timeout_ns = max_timeout_ns
        entry.config.max_list_size = max_list_size
        entry.config.ack_timeout_ns = ack_timeout_ns
        for utype in (INSERT, MODIFY):
            request = self.new_write_request()
            request.updates.add(type=utype).entity.digest_entry.CopyFrom(entry)
            errors = self.write_request(request)
            if not errors:
                return
            if errors[0].code != rpc_code.ALREADY_EXISTS:
                raise WriteError(errors, 1)
        raise WriteError(errors, 1)

    def read_digest_config(self, schema: P4Schema, name: str) -> p4r.DigestEntry.Config | None:
        """A digest's config on the target; None when it is not configured."""
        digest_id = digest_infos(schema.p4info)[name].id
        query = p4r.Entity(digest_entry=p4r.DigestEntry(digest_id=digest_id))
        try:
            for entity in self.read([query]):
                return entity.digest_entry.config
        except P4ClientError as exc:
            if exc.code == rpc_code.NOT_FOUND:
                return None
            raise
        return None

    def packet_in(self, timeout: float | None = None) -> PacketIn | None:
        """The next queued PacketIn (when no `on_packet_in` callback is set), or None."""
        try:
            return self._packets.get(timeout=timeout)
        except queue.Empty:
            return None

    def packet_out(self, payload: bytes, metadata: Mapping[str, int]) -> None:
        """Send a packet into the pipeline with `packet_out` metadata given by name."""
        if self.schema is None:
            raise PacketError("packet_out needs a schema to encode its metadata")
        md = encode_metadata(self.schema.header("packet_out"), metadata)
        self._send(p4r.StreamMessageRequest(packet=p4r.PacketOut(payload=payload, metadata=md)))

    # -- pipeline -----------------------------------------------------------------------------

    def set_pipeline(
        self,
        p4info: P4Schema | p4i.P4Info,
        device_config: bytes = b"",
        *,
        action: int = VERIFY_AND_COMMIT,
        cookie: int = 0,
    ) -> None:
        """Push P4Info and the target's device config (BMv2 JSON; empty for the nicfw target)."""
        if isinstance(p4info, P4Schema):
            self.schema = p4info
            p4info = p4info.p4info
        request = p4r.SetForwardingPipelineConfigRequest(
            device_id=self.device_id,
            election_id=uint128(self.election_id),
            action=action,  # type: ignore[arg-type]
            config=p4r.ForwardingPipelineConfig(
                p4info=p4info,
                p4_device_config=device_config,
                cookie=p4r.ForwardingPipelineConfig.Cookie(cookie=cookie),
            ),
        )
        try:
            self._stub_or_raise().SetForwardingPipelineConfig(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            raise self._error("SetForwardingPipelineConfig", exc) from None

    def get_pipeline(self, response_type: int = 0) -> PipelineConfig:
        """The pipeline the target runs (response_type as in GetForwardingPipelineConfig)."""
        request = p4r.GetForwardingPipelineConfigRequest(
            device_id=self.device_id,
            response_type=response_type,  # type: ignore[arg-type]
        )
        try:
            reply = self._stub_or_raise().GetForwardingPipelineConfig(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            if rpc_code_of(exc) == rpc_code.FAILED_PRECONDITION:
                return PipelineConfig(None, b"", 0)  # BMv2's answer when none is set
            raise self._error("GetForwardingPipelineConfig", exc) from None
        config = reply.config
        p4info = config.p4info if config.HasField("p4info") else None
        return PipelineConfig(p4info, config.p4_device_config, config.cookie.cookie)

    def capabilities(self) -> str:
        """The P4Runtime API version the target implements."""
        try:
            reply = self._stub_or_raise().Capabilities(
                p4r.CapabilitiesRequest(), timeout=self.timeout
            )
        except grpc.RpcError as exc:
            raise self._error("Capabilities", exc) from None
        return str(reply.p4runtime_api_version)

    # -- writes -------------------------------------------------------------------------------

    def new_write_request(self, atomicity: int = CONTINUE_ON_ERROR) -> p4r.WriteRequest:
        """An empty WriteRequest addressed from this client, to fill in place."""
        return p4r.WriteRequest(
            device_id=self.device_id,
            election_id=uint128(self.election_id),
            atomicity=atomicity,  # type: ignore[arg-type]
        )

    def write_serialized(self, data: bytes, offset: int = 0) -> list[UpdateError]:
        """`write_request` of an already serialized WriteRequest (no second serialization).

        The request is parsed only if the target reports per-update errors, to name them.
        """
        return self.submit_serialized(data, offset).result()

    def submit_serialized(self, data: bytes, offset: int = 0) -> PendingWrite:
        """Send a serialized WriteRequest without waiting for the answer.

        `PendingWrite.result()` then returns or raises as `write_serialized` would. Requests in
        flight together may be applied in any order (P4Runtime promises an order only between a
        reply and the requests sent after it), so only independent updates belong in them.
        """
        self._stub_or_raise()
        if self._write_bytes is None:  # a stub without a channel (tests): the message path
            return PendingWrite(self, data, offset, None)
        return PendingWrite(
            self, data, offset, self._write_bytes.future(data, timeout=self.timeout)
        )

    def _write_failed(self, exc: grpc.RpcError, data: bytes, offset: int) -> list[UpdateError]:
        """The per-update errors of a refused serialized Write; raises for a whole refusal."""
        errors = update_errors(exc, p4r.WriteRequest.FromString(data).updates, offset)
        if errors is None:
            raise self._error("Write", exc) from None
        if not errors:
            raise P4ClientError("Write", rpc_code_of(exc), rpc_details_of(exc)) from None
        return errors

    def write_request(self, request: p4r.WriteRequest, offset: int = 0) -> list[UpdateError]:
        """Send one WriteRequest; return its failing updates, numbered from `offset`.

        Raises when the whole request is refused without per-update details (not primary,
        target gone, malformed request).
        """
        try:
            self._stub_or_raise().Write(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            errors = update_errors(exc, request.updates, offset)
            if errors is None:
                raise self._error("Write", exc) from None
            if not errors:
                raise P4ClientError("Write", rpc_code_of(exc), rpc_details_of(exc)) from None
            return errors
        return []

    def write(
        self,
        updates: Iterable[p4r.Update],
        *,
        atomicity: int = CONTINUE_ON_ERROR,
        batch_size: int | None = None,
    ) -> int:
        """Write updates in batches; raise WriteError naming every failing update by index.

        Atomicity holds per batch. With CONTINUE_ON_ERROR every batch is sent and the errors
        of all are collected; with the atomic modes the first failing batch stops the write.
        Returns the number of updates written.
        """
        size = batch_size or self.batch_size
        errors: list[UpdateError] = []
        sent = 0
        batch: list[p4r.Update] = []
        pending = iter(updates)
        while True:
            batch.clear()
            for update in pending:
                batch.append(update)
                if len(batch) >= size:
                    break
            if not batch:
                break
            request = self.new_write_request(atomicity)
            request.updates.extend(batch)
            failed = self.write_request(request, sent)
            sent += len(batch)
            errors.extend(failed)
            if failed and atomicity != CONTINUE_ON_ERROR:
                unsent = sum(1 for _ in pending)
                raise WriteError(errors, sent + unsent, unsent=unsent)
        if errors:
            raise WriteError(errors, sent)
        return sent

    def encoder(self, schema: P4Schema) -> TableEntryEncoder:
        """The bulk entry encoder for a schema (kept, so its look-up caches stay warm)."""
        enc = self._encoders.get(id(schema))
        if enc is None or enc.schema is not schema:
            enc = self._encoders[id(schema)] = TableEntryEncoder(schema)
        return enc

    def write_entries(
        self,
        schema: P4Schema,
        update_type: int,
        entries: Sequence[Entry],
        *,
        atomicity: int = CONTINUE_ON_ERROR,
        batch_size: int | None = None,
    ) -> int:
        """INSERT, MODIFY or DELETE entries, encoding every batch before the first is sent."""
        size = batch_size or self.batch_size
        enc = self.encoder(schema)
        requests = []
        for start in range(0, len(entries), size):
            request = self.new_write_request(atomicity)
            enc.add_updates(request, update_type, entries[start : start + size])
            requests.append(request)
        errors: list[UpdateError] = []
        for i, request in enumerate(requests):
            failed = self.write_request(request, i * size)
            errors.extend(failed)
            if failed and atomicity != CONTINUE_ON_ERROR:
                unsent = len(entries) - (i + 1) * size
                raise WriteError(errors, len(entries), unsent=max(0, unsent))
        if errors:
            raise WriteError(errors, len(entries))
        return len(entries)

    # -- reads --------------------------------------------------------------------------------

    def read(self, entities: Iterable[p4r.Entity]) -> Iterator[p4r.Entity]:
        """Read entities (wildcards allowed), yielding what the target returns."""
        request = p4r.ReadRequest(device_id=self.device_id, entities=list(entities))
        try:
            for reply in self._stub_or_raise().Read(request, timeout=self.timeout):
                yield from reply.entities
        except grpc.RpcError as exc:
            raise self._error("Read", exc) from None

    def _read_entries(
        self, schema: P4Schema, table: str | None, with_counters: bool, default: bool = False
    ) -> Iterator[tuple[Entry, Counts | None]]:
        entity = p4r.Entity()
        te = entity.table_entry
        te.table_id = schema.table(table).id if table is not None else 0
        if default:
            te.is_default_action = True
        if with_counters:
            te.counter_data.SetInParent()
        decode = EntryDecoder(schema).decode
        for result in self.read([entity]):
            if result.WhichOneof("entity") != "table_entry":
                continue
            msg = result.table_entry
            try:
                entry = decode(msg)
            except EntityError as exc:
                raise P4ClientError(
                    "Read", rpc_code.INTERNAL, f"undecodable entry: {exc}"
                ) from None
            counts = None
            if msg.HasField("counter_data"):
                cd = msg.counter_data
                counts = Counts(cd.packet_count, cd.byte_count)
            yield entry, counts

    @overload
    def read_table_entries(
        self, schema: P4Schema, table: str | None = ..., *, with_counters: Literal[False] = ...
    ) -> list[Entry]: ...

    @overload
    def read_table_entries(
        self, schema: P4Schema, table: str | None = ..., *, with_counters: Literal[True]
    ) -> list[tuple[Entry, Counts]]: ...

    def read_table_entries(
        self, schema: P4Schema, table: str | None = None, *, with_counters: bool = False
    ) -> list[Entry] | list[tuple[Entry, Counts]]:
        """The entries of one table (all tables when None); with their counters if asked."""
        with gc_paused():
            if not with_counters:
                entries = self._read_wire(schema, table)
                if entries is not None:
                    return entries
                return [e for e, _ in self._read_entries(schema, table, False)]
            return [(e, c or Counts(0, 0)) for e, c in self._read_entries(schema, table, True)]

    def _read_wire(self, schema: P4Schema, table: str | None) -> list[Entry] | None:
        """`read_table_entries` decoded from the responses' bytes; None without that path.

        The path needs the channel (a stub alone reads messages) and the numba kernel, which
        loads in the background on first use: until then reads take the message path.
        """
        if self._channel is None:
            return None
        # Imported here: the kernel's module pulls in the target's wire decoder, which
        # a client that never reads does not need.
        from offload import p4readwire

        kernel = p4readwire.kernel()
        if kernel is None:
            return None
        entity = p4r.Entity()
        entity.table_entry.table_id = schema.table(table).id if table is not None else 0
        request = p4r.ReadRequest(device_id=self.device_id, entities=[entity])
        read = self._channel.unary_stream(
            "/p4.v1.P4Runtime/Read",
            request_serializer=p4r.ReadRequest.SerializeToString,
            response_deserializer=None,  # each ReadResponse as its bytes
        )
        decoder = p4readwire.ReadDecoder(schema)
        entries: list[Entry] = []
        responses = read(request, timeout=self.timeout)
        try:
            for data in responses:
                entries.extend(decoder.decode(data, kernel))
        except grpc.RpcError as exc:
            raise self._error("Read", exc) from None
        finally:
            responses.cancel()  # a response that failed to decode ends the call
        return entries

    def read_direct_counters(self, schema: P4Schema, table: str = ACL) -> dict[Entry, Counts]:
        """Each entry of `table` (the ACL by default) with its direct counter's value."""
        return read_direct_counters(self, schema, table)

    def read_default_entry(self, schema: P4Schema, table: str) -> Entry | None:
        """The default action entry of a table, as the target reports it."""
        for entry, _ in self._read_entries(schema, table, False, default=True):
            return entry
        return None
