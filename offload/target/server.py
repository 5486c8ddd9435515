"""The P4Runtime service of the software target (gRPC, p4.v1.P4Runtime).

Every RPC checks the device id; Write and SetForwardingPipelineConfig also check that the
caller is the primary controller (`arbitration.Arbiter`). Write reports failures the way the
spec and p4runtime-shell expect: gRPC status UNKNOWN with a google.rpc.Status in the
`grpc-status-details-bin` trailer whose details hold one p4.v1.Error per update, in order (OK
for the updates that succeeded). Packet-ins, idle-timeout notifications and arbitration
updates go out on the StreamChannel of the primary.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, NoReturn

import grpc
from google.protobuf import any_pb2

from offload.p4entity import EntityError, gc_paused
from offload.p4schema import ControllerHeaderInfo, P4Schema
from offload.p4values import encode_int
from offload.proto import p4r, p4r_grpc, rpc_code, rpc_status
from offload.target import readwire
from offload.target.arbitration import Arbiter, ArbitrationError, Session, election_int
from offload.target.config import ConfigError, PipelineConfig, check_p4info
from offload.target.entities import EntityStore, Op, Undo

if TYPE_CHECKING:
    from offload.target.target import SoftwareTarget

log = logging.getLogger(__name__)

API_VERSION = "1.4.0"
SERVICE = "p4.v1.P4Runtime"
ERROR_SPACE = "nicfw-software-v1model"
NO_PIPELINE = "No forwarding pipeline config set for this device."
READ_CHUNK = 1000  # entities per ReadResponse
WRITE_CHUNK = 500  # updates applied per hold of the pipeline lock (CONTINUE_ON_ERROR)
IDLE_SCAN_S = 0.1
MAX_QUEUED_PACKET_INS = 10000

Atomicity = p4r.WriteRequest.Atomicity
PipelineAction = p4r.SetForwardingPipelineConfigRequest.Action
ResponseType = p4r.GetForwardingPipelineConfigRequest.ResponseType


def pack_header(info: ControllerHeaderInfo, values: dict[int, int]) -> bytes:
    """Lay out a controller header's fields (by metadata id) as the P4 header's bytes."""
    packed = bits = 0
    for f in info.fields:
        packed = packed << f.bitwidth | values.get(f.id, 0)
        bits += f.bitwidth
    return packed.to_bytes((bits + 7) // 8, "big")


def unpack_header(info: ControllerHeaderInfo, data: bytes) -> list[tuple[int, int, int]]:
    """The fields of a controller header at the start of `data`: (id, value, bit width)."""
    bits = sum(f.bitwidth for f in info.fields)
    packed = int.from_bytes(data[: (bits + 7) // 8], "big")
    out = []
    for f in reversed(info.fields):
        out.append((f.id, packed & ((1 << f.bitwidth) - 1), f.bitwidth))
        packed >>= f.bitwidth
    out.reverse()
    return out


def header_len(info: ControllerHeaderInfo) -> int:
    """A controller header's length in bytes."""
    return (sum(f.bitwidth for f in info.fields) + 7) // 8


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    context.abort(code, message)
    raise AssertionError("unreachable")  # context.abort raises


class P4RuntimeService(p4r_grpc.P4RuntimeServicer):
    """p4.v1.P4Runtime over one SoftwareTarget."""

    def __init__(self, target: SoftwareTarget) -> None:
        self.target = target
        self.arbiter = Arbiter(target.device_id)
        self._stop = threading.Event()
        self._idle = threading.Thread(target=self._idle_loop, name="nicfw-idle", daemon=True)

    def start(self) -> None:
        """Start the idle-timeout scanner."""
        self._idle.start()

    def stop(self) -> None:
        """End every stream and the scanner."""
        self._stop.set()
        self.arbiter.close_all("target stopping")
        if self._idle.is_alive():
            self._idle.join(timeout=2)

    # ------------------------------------------------------------------ helpers
    def _check_device(self, device_id: int, context: grpc.ServicerContext) -> None:
        if device_id != self.target.device_id:
            _abort(context, grpc.StatusCode.NOT_FOUND, f"unknown device id {device_id}")

    def _check_primary(
        self,
        request: p4r.WriteRequest | p4r.SetForwardingPipelineConfigRequest,
        context: grpc.ServicerContext,
    ) -> None:
        election = election_int(request.election_id) if request.HasField("election_id") else None
        if not self.arbiter.is_primary(request.device_id, request.role, election):
            _abort(
                context,
                grpc.StatusCode.PERMISSION_DENIED,
                "not the primary controller (device id, role and election id must match it)",
            )

    def _entities(self, context: grpc.ServicerContext) -> EntityStore:
        entities = self.target.entities
        if entities is None:
            _abort(context, grpc.StatusCode.FAILED_PRECONDITION, NO_PIPELINE)
        return entities

    # ------------------------------------------------------------------ Capabilities
    def Capabilities(
        self, request: p4r.CapabilitiesRequest, context: grpc.ServicerContext
    ) -> p4r.CapabilitiesResponse:
        """The P4Runtime API version this server implements."""
        return p4r.CapabilitiesResponse(p4runtime_api_version=API_VERSION)

    # ------------------------------------------------------------------ pipeline config
    def SetForwardingPipelineConfig(
        self, request: p4r.SetForwardingPipelineConfigRequest, context: grpc.ServicerContext
    ) -> p4r.SetForwardingPipelineConfigResponse:
        """Verify, save and/or commit a pipeline config (firewall.p4's P4Info only)."""
        self._check_device(request.device_id, context)
        self._check_primary(request, context)
        action = request.action
        if action == PipelineAction.COMMIT:
            if request.HasField("config") and request.config.HasField("p4info"):
                _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "COMMIT takes no config")
            saved = self.target.saved
            if saved is None:
                _abort(context, grpc.StatusCode.FAILED_PRECONDITION, "no saved config to commit")
            self.target.commit(saved, keep_state=False)
            return p4r.SetForwardingPipelineConfigResponse()
        if action not in (
            PipelineAction.VERIFY,
            PipelineAction.VERIFY_AND_SAVE,
            PipelineAction.VERIFY_AND_COMMIT,
            PipelineAction.RECONCILE_AND_COMMIT,
        ):
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"unknown action {action}")
        config = self._verify(request, context)
        if action == PipelineAction.VERIFY_AND_SAVE:
            self.target.saved = config
        elif action == PipelineAction.VERIFY_AND_COMMIT:
            self.target.commit(config, keep_state=False)
        elif action == PipelineAction.RECONCILE_AND_COMMIT:
            self.target.commit(config, keep_state=True)
        return p4r.SetForwardingPipelineConfigResponse()

    def _verify(
        self, request: p4r.SetForwardingPipelineConfigRequest, context: grpc.ServicerContext
    ) -> PipelineConfig:
        if not request.HasField("config") or not request.config.HasField("p4info"):
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "the request carries no P4Info")
        cfg = request.config
        try:
            schema = P4Schema(cfg.p4info)
            check_p4info(self.target.reference, schema)
        except (ConfigError, ValueError, LookupError) as exc:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"P4Info rejected: {exc}")
        cookie = cfg.cookie.cookie if cfg.HasField("cookie") else None
        return PipelineConfig(schema, cfg.p4_device_config, cookie)

    def GetForwardingPipelineConfig(
        self, request: p4r.GetForwardingPipelineConfigRequest, context: grpc.ServicerContext
    ) -> p4r.GetForwardingPipelineConfigResponse:
        """The committed config, with the fields `response_type` asks for."""
        self._check_device(request.device_id, context)
        config = self.target.config
        if config is None:
            _abort(context, grpc.StatusCode.FAILED_PRECONDITION, NO_PIPELINE)
        out = p4r.GetForwardingPipelineConfigResponse()
        rtype = request.response_type
        if config.cookie is not None:
            out.config.cookie.cookie = config.cookie
        if rtype in (ResponseType.ALL, ResponseType.P4INFO_AND_COOKIE):
            out.config.p4info.CopyFrom(config.p4info)
        if rtype in (ResponseType.ALL, ResponseType.DEVICE_CONFIG_AND_COOKIE):
            out.config.p4_device_config = config.device_config
        return out

    # ------------------------------------------------------------------ Write
    def Write(self, request: p4r.WriteRequest, context: grpc.ServicerContext) -> p4r.WriteResponse:
        """Apply a batch of updates; per-update errors in grpc-status-details-bin."""
        return self._write(request, None, context)

    def WriteWire(
        self, request: tuple[p4r.WriteRequest, bytes], context: grpc.ServicerContext
    ) -> p4r.WriteResponse:
        """Write, given the parsed request and its wire bytes (see `add_to_server`)."""
        return self._write(request[0], request[1], context)

    def _write(
        self, request: p4r.WriteRequest, data: bytes | None, context: grpc.ServicerContext
    ) -> p4r.WriteResponse:
        self._check_device(request.device_id, context)
        self._check_primary(request, context)
        entities = self._entities(context)
        atomicity = request.atomicity
        if atomicity not in (
            Atomicity.CONTINUE_ON_ERROR,
            Atomicity.ROLLBACK_ON_ERROR,
            Atomicity.DATAPLANE_ATOMIC,
        ):
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"unknown atomicity {atomicity}")
        updates = request.updates
        errors: list[EntityError | None] = [None] * len(updates)
        ops: list[tuple[int, Op]] = []
        # Decoding allocates many short-lived objects and no cycles: collections in the
        # middle of a batch would only walk the (large) tables again and again.
        with gc_paused():
            prepared = entities.prepare_all(updates, data)
            failed = [i for i, op in enumerate(prepared) if isinstance(op, EntityError)]
            if failed:
                for i in failed:
                    errors[i] = prepared[i]  # type: ignore[assignment]
                ops = [(i, op) for i, op in enumerate(prepared) if not isinstance(op, EntityError)]
            else:
                ops = list(enumerate(prepared))  # type: ignore[arg-type]
            if atomicity == Atomicity.CONTINUE_ON_ERROR:
                self._apply_each(entities, ops, errors)
            else:
                # All or nothing; the whole batch under one hold of the lock, so packets see
                # the tables either before or after it (DATAPLANE_ATOMIC too).
                self._apply_atomic(entities, ops, errors)
        if errors.count(None) != len(errors):  # (a C-level scan; any() over 1000 is not)
            self._fail_write(context, errors)
        return p4r.WriteResponse()

    def _apply_each(
        self, entities: EntityStore, ops: list[tuple[int, Op]], errors: list[EntityError | None]
    ) -> None:
        for start in range(0, len(ops), WRITE_CHUNK):
            with self.target.lock:
                if self.target.entities is not entities:
                    for i, _op in ops[start:]:
                        errors[i] = EntityError(rpc_code.ABORTED, "the pipeline was replaced")
                    return
                entities.apply_each(ops[start : start + WRITE_CHUNK], errors)

    def _apply_atomic(
        self, entities: EntityStore, ops: list[tuple[int, Op]], errors: list[EntityError | None]
    ) -> None:
        aborted = EntityError(rpc_code.ABORTED, "not applied: another update of the batch failed")
        if errors.count(None) != len(errors):
            for i, _op in ops:
                errors[i] = aborted
            return
        undo: list[Undo] = []
        with self.target.lock:
            if self.target.entities is not entities:
                for i, _op in ops:
                    errors[i] = EntityError(rpc_code.ABORTED, "the pipeline was replaced")
                return
            for i, op in ops:
                try:
                    undo.append(entities.apply(op))
                except EntityError as exc:
                    errors[i] = exc
                    for step in reversed(undo):
                        step()
                    for j, _op in ops:
                        if j != i:
                            errors[j] = aborted
                    return

    def _fail_write(self, context: grpc.ServicerContext, errors: list[EntityError | None]) -> None:
        status = rpc_status.Status(code=rpc_code.UNKNOWN)
        failed = 0
        for exc in errors:
            detail = p4r.Error(canonical_code=rpc_code.OK)
            if exc is not None:
                failed += 1
                detail.canonical_code = exc.code
                detail.message = str(exc)
                detail.space = ERROR_SPACE
            packed = any_pb2.Any()
            packed.Pack(detail)
            status.details.append(packed)
        status.message = f"{failed} of {len(errors)} updates failed"
        context.set_trailing_metadata((("grpc-status-details-bin", status.SerializeToString()),))
        _abort(context, grpc.StatusCode.UNKNOWN, status.message)

    # ------------------------------------------------------------------ Read
    def Read(
        self, request: p4r.ReadRequest, context: grpc.ServicerContext
    ) -> Iterator[p4r.ReadResponse]:
        """Stream the entities the request selects, in chunks."""
        self._check_device(request.device_id, context)
        entities = self._entities(context)
        results: list[Iterator[p4r.Entity]] = []
        try:
            with self.target.lock:
                # Selection and counter snapshots under the lock; encoding after it.
                for entity in request.entities:
                    results.append(self._select(entities, entity, context))
        except EntityError as exc:
            _abort(context, status_code(exc.code), str(exc))
        response = p4r.ReadResponse()
        for result in results:
            for out in result:
                response.entities.append(out)
                if len(response.entities) >= READ_CHUNK:
                    yield response
                    response = p4r.ReadResponse()
        if response.entities:
            yield response

    def ReadWire(self, request: p4r.ReadRequest, context: grpc.ServicerContext) -> Iterator[bytes]:
        """Read, each ReadResponse serialized here (see `add_to_server`): table entries from
        their stored bytes (`EntityStore.read_table_fields`), other entities as messages; the
        same chunks as `Read`. NICFW_WIRE_READ=0: `Read`'s messages, serialized."""
        if not readwire.enabled():
            for response in self.Read(request, context):
                yield response.SerializeToString()
            return
        self._check_device(request.device_id, context)
        entities = self._entities(context)
        results: list[Iterator[bytes]] = []
        try:
            with self.target.lock:
                for entity in request.entities:
                    fields = None
                    if entity.WhichOneof("entity") == "table_entry":
                        fields = entities.read_table_fields(entity.table_entry)
                    if fields is None:
                        selected = self._select(entities, entity, context)
                        fields = map(readwire.message_field, selected)
                    results.append(fields)
        except EntityError as exc:
            _abort(context, status_code(exc.code), str(exc))
        chunk: list[bytes] = []
        for result in results:
            for field in result:
                chunk.append(field)
                if len(chunk) >= READ_CHUNK:
                    yield b"".join(chunk)
                    chunk = []
        if chunk:
            yield b"".join(chunk)

    def _select(
        self, entities: EntityStore, entity: p4r.Entity, context: grpc.ServicerContext
    ) -> Iterator[p4r.Entity]:
        which = entity.WhichOneof("entity")
        if which == "table_entry":
            return entities.read_table(entity.table_entry)
        if which == "direct_counter_entry":
            return entities.read_direct_counter(entity.direct_counter_entry)
        if which == "packet_replication_engine_entry":
            return entities.read_pre(entity.packet_replication_engine_entry)
        if which == "digest_entry":
            return entities.pipeline.digests.read(entity.digest_entry)
        if which in ("counter_entry", "meter_entry", "register_entry", "direct_meter_entry"):
            ident = getattr(getattr(entity, which), which.split("_entry")[0] + "_id", 0)
            if ident:
                raise EntityError(rpc_code.NOT_FOUND, f"firewall.p4 has no {which} {ident}")
            return iter(())
        raise EntityError(rpc_code.UNIMPLEMENTED, f"reading {which} is not supported")

    # ------------------------------------------------------------------ StreamChannel
    def StreamChannel(
        self, request_iterator: Iterator[p4r.StreamMessageRequest], context: grpc.ServicerContext
    ) -> Iterator[p4r.StreamMessageResponse]:
        """Arbitration, packet I/O and notifications for one controller."""
        session = Session(peer=context.peer())
        context.add_callback(lambda: session.close(grpc.StatusCode.CANCELLED, "stream closed"))
        reader = threading.Thread(
            target=self._read_stream,
            args=(session, request_iterator),
            name=f"nicfw-stream-{session.id}",
            daemon=True,
        )
        reader.start()
        try:
            while True:
                item = session.queue.get()
                if isinstance(item, tuple):
                    code, message = item
                    if code != grpc.StatusCode.OK:
                        context.set_code(code)
                        context.set_details(message)
                    return
                yield item
        finally:
            self.arbiter.remove(session)

    def _read_stream(self, session: Session, requests: Iterator[p4r.StreamMessageRequest]) -> None:
        try:
            for request in requests:
                which = request.WhichOneof("update")
                if which == "arbitration":
                    try:
                        self.arbiter.update(session, request.arbitration)
                    except ArbitrationError as exc:
                        session.close(exc.code, str(exc))
                        return
                elif session.device_id is None:
                    session.close(
                        grpc.StatusCode.FAILED_PRECONDITION,
                        "the first stream message must be a MasterArbitrationUpdate",
                    )
                    return
                elif which == "packet":
                    self._packet_out(session, request.packet)
                elif which == "digest_ack":
                    self._digest_ack(session, request.digest_ack)
                else:
                    error = p4r.StreamMessageResponse()
                    error.error.canonical_code = rpc_code.UNIMPLEMENTED
                    error.error.message = f"stream message {which} is not supported"
                    error.error.other.SetInParent()
                    session.send(error)
        except grpc.RpcError:
            pass  # the client went away
        except Exception:  # a bug must not leave the stream hanging
            log.exception("stream %s failed", session.id)
            session.close(grpc.StatusCode.INTERNAL, "internal error")
            return
        session.close()

    def _stream_error(
        self, session: Session, code: int, message: str, packet: p4r.PacketOut | None = None
    ) -> None:
        msg = p4r.StreamMessageResponse()
        msg.error.canonical_code = code
        msg.error.message = message
        msg.error.space = ERROR_SPACE
        if packet is not None:
            msg.error.packet_out.packet_out.CopyFrom(packet)
        else:
            msg.error.other.SetInParent()
        session.send(msg)

    def _packet_out(self, session: Session, packet: p4r.PacketOut) -> None:
        if not self.arbiter.session_is_primary(session):
            self._stream_error(
                session, rpc_code.PERMISSION_DENIED, "only the primary may send packets", packet
            )
            return
        config = self.target.config
        if config is None:
            self._stream_error(session, rpc_code.FAILED_PRECONDITION, NO_PIPELINE, packet)
            return
        info = config.schema.header("packet_out")
        values: dict[int, int] = {}
        for meta in packet.metadata:
            f = info.fields_by_id.get(meta.metadata_id)
            if f is None:
                self._stream_error(
                    session,
                    rpc_code.INVALID_ARGUMENT,
                    f"unknown packet_out metadata id {meta.metadata_id}",
                    packet,
                )
                return
            value = int.from_bytes(meta.value, "big")
            if not meta.value or value >> f.bitwidth or f.id in values:
                self._stream_error(
                    session, rpc_code.INVALID_ARGUMENT, f"bad packet_out {f.name} value", packet
                )
                return
            values[f.id] = value
        if info.fields_by_name["egress_port"].id not in values:
            self._stream_error(
                session, rpc_code.INVALID_ARGUMENT, "packet_out needs egress_port", packet
            )
            return
        self.target.inject(self.target.cpu_port, pack_header(info, values) + packet.payload)

    def _digest_ack(self, session: Session, ack: p4r.DigestListAck) -> None:
        if not self.arbiter.session_is_primary(session):
            self._stream_error(session, rpc_code.PERMISSION_DENIED, "only the primary may ack")
            return
        pipeline = self.target.pipeline
        if pipeline is None or not pipeline.digests.ack(ack.digest_id, ack.list_id):
            self._stream_error(session, rpc_code.NOT_FOUND, f"unknown digest id {ack.digest_id}")

    def send_digest(self, msg: p4r.StreamMessageResponse) -> None:
        """Send a DigestList to the primary (none connected: the list is lost, as on BMv2)."""
        for session in self.arbiter.primaries():
            session.send(msg)

    def packet_in(self, data: bytes) -> None:
        """Send a frame the pipeline sent to the CPU port (packet_in header first) as PacketIn."""
        config = self.target.config
        if config is None:
            return
        info = config.schema.header("packet_in")
        size = header_len(info)
        if len(data) < size:
            return
        msg = p4r.StreamMessageResponse()
        pin = msg.packet
        pin.payload = data[size:]
        for ident, value, width in unpack_header(info, data):
            pin.metadata.add(metadata_id=ident, value=encode_int(value, width))
        for session in self.arbiter.primaries():
            if session.queue.qsize() > MAX_QUEUED_PACKET_INS:
                session.dropped += 1
                continue
            session.send(msg)

    # ------------------------------------------------------------------ idle timeouts
    def _idle_loop(self) -> None:
        while not self._stop.wait(IDLE_SCAN_S):
            try:
                self.scan_idle()
                pipeline = self.target.pipeline
                if pipeline is not None:
                    pipeline.digests.sweep()
            except Exception:
                log.exception("idle-timeout scan failed")

    def scan_idle(self) -> int:
        """Notify the primary of entries idle for their TTL; the number notified."""
        with self.target.lock:
            entities = self.target.entities
            expired = entities.expired() if entities is not None else []
        if not expired or entities is None:
            return 0
        msg = p4r.StreamMessageResponse()
        note = msg.idle_timeout_notification
        for _table, rec in expired:
            entities.encode_into(rec, note.table_entry.add())
        note.timestamp = time.time_ns()
        for session in self.arbiter.primaries():
            session.send(msg)
        return len(expired)


def _parse_write(data: bytes) -> tuple[p4r.WriteRequest, bytes]:
    # A request that does not parse fails as grpc fails any undecodable request (INTERNAL).
    return p4r.WriteRequest.FromString(data), data


def add_to_server(service: P4RuntimeService, server: grpc.Server) -> None:
    """Register the service, as `p4r_grpc.add_P4RuntimeServicer_to_server` does, except that
    Write also gets the request's wire bytes (`EntityStore.prepare_all` decodes from them) and
    Read's responses are serialized by the service (`P4RuntimeService.ReadWire`)."""
    unary, stream = grpc.unary_unary_rpc_method_handler, grpc.unary_stream_rpc_method_handler
    handlers = {
        "Write": unary(
            service.WriteWire,
            request_deserializer=_parse_write,
            response_serializer=p4r.WriteResponse.SerializeToString,
        ),
        "Read": stream(
            service.ReadWire,
            request_deserializer=p4r.ReadRequest.FromString,
            response_serializer=None,  # ReadWire yields serialized ReadResponses
        ),
        "SetForwardingPipelineConfig": unary(
            service.SetForwardingPipelineConfig,
            request_deserializer=p4r.SetForwardingPipelineConfigRequest.FromString,
            response_serializer=p4r.SetForwardingPipelineConfigResponse.SerializeToString,
        ),
        "GetForwardingPipelineConfig": unary(
            service.GetForwardingPipelineConfig,
            request_deserializer=p4r.GetForwardingPipelineConfigRequest.FromString,
            response_serializer=p4r.GetForwardingPipelineConfigResponse.SerializeToString,
        ),
        "StreamChannel": grpc.stream_stream_rpc_method_handler(
            service.StreamChannel,
            request_deserializer=p4r.StreamMessageRequest.FromString,
            response_serializer=p4r.StreamMessageResponse.SerializeToString,
        ),
        "Capabilities": unary(
            service.Capabilities,
            request_deserializer=p4r.CapabilitiesRequest.FromString,
            response_serializer=p4r.CapabilitiesResponse.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_registered_method_handlers(SERVICE, handlers)


def status_code(code: int) -> grpc.StatusCode:
    """The grpc.StatusCode of a google.rpc code number."""
    for status in grpc.StatusCode:
        if status.value[0] == code:
            return status
    return grpc.StatusCode.UNKNOWN
