"""A minimal P4Runtime client for tests: raw grpc + offload.proto, nothing of offload.p4client.

Tests of a target must not lean on the controller library they will later test against it, so
this client is deliberately small: one StreamChannel with a reader thread, and the unary RPCs.
Write failures are decoded from `grpc-status-details-bin` into (index, p4.v1.Error) pairs, as
p4runtime-shell's P4RuntimeWriteException does.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import grpc

from offload.entries import Entry
from offload.p4entity import encode_table_entry
from offload.p4schema import P4Schema
from offload.p4values import encode_int
from offload.proto import p4i, p4r, p4r_grpc, rpc_code, rpc_status

Update = p4r.Update


class WriteError(Exception):
    """A failed Write: the gRPC code and the per-update errors that were not OK."""

    def __init__(self, error: grpc.RpcError) -> None:
        self.code: grpc.StatusCode = error.code()  # type: ignore[attr-defined]
        self.details: str = error.details()  # type: ignore[attr-defined]
        self.all: list[p4r.Error] = []
        for key, value in error.trailing_metadata() or ():  # type: ignore[attr-defined]
            if key == "grpc-status-details-bin":
                status = rpc_status.Status.FromString(value)
                for detail in status.details:
                    err = p4r.Error()
                    if not detail.Unpack(err):
                        raise AssertionError("a status detail that is not a p4.v1.Error")
                    self.all.append(err)
        self.errors = [(i, e) for i, e in enumerate(self.all) if e.canonical_code != rpc_code.OK]
        super().__init__(f"{self.code}: {self.details}: {self.errors}")

    def codes(self) -> list[int]:
        """The canonical code of every update, in order."""
        return [e.canonical_code for e in self.all]


@dataclass
class Election:
    """An election id as (high, low)."""

    high: int = 0
    low: int = 1

    def message(self) -> p4r.Uint128:
        """As protobuf."""
        return p4r.Uint128(high=self.high, low=self.low)


class Client:
    """One controller connection to one device."""

    def __init__(self, address: str, device_id: int = 1, election: Election | None = None) -> None:
        self.address = address
        self.device_id = device_id
        self.election = election or Election()
        self.channel = grpc.insecure_channel(
            address, options=[("grpc.max_receive_message_length", 256 << 20)]
        )
        self.stub = p4r_grpc.P4RuntimeStub(self.channel)
        self._requests: queue.SimpleQueue[p4r.StreamMessageRequest | None] = queue.SimpleQueue()
        self.responses: queue.Queue[p4r.StreamMessageResponse | grpc.RpcError] = queue.Queue()
        self._stream: Iterator[p4r.StreamMessageResponse] | None = None
        self._reader: threading.Thread | None = None
        self.schema: P4Schema | None = None

    # ---------------------------------------------------------------- stream
    def _request_iter(self) -> Iterator[p4r.StreamMessageRequest]:
        while True:
            msg = self._requests.get()
            if msg is None:
                return
            yield msg

    def open_stream(self) -> None:
        """Open the StreamChannel (without arbitrating)."""
        self._stream = self.stub.StreamChannel(self._request_iter())
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._stream is not None
        try:
            for msg in self._stream:
                self.responses.put(msg)
        except grpc.RpcError as exc:
            self.responses.put(exc)

    def send(self, msg: p4r.StreamMessageRequest) -> None:
        """Send a stream message."""
        if self._stream is None:
            self.open_stream()
        self._requests.put(msg)

    def arbitrate(
        self, election: Election | None = None, role: str = "", device_id: int | None = None
    ) -> p4r.MasterArbitrationUpdate:
        """Send a MasterArbitrationUpdate; the target's answer to it."""
        if election is not None:
            self.election = election
        msg = p4r.StreamMessageRequest()
        arb = msg.arbitration
        arb.device_id = self.device_id if device_id is None else device_id
        arb.election_id.CopyFrom(self.election.message())
        if role:
            arb.role.name = role
        self.send(msg)
        return self.next("arbitration").arbitration

    def next(self, kind: str, timeout: float = 5.0) -> p4r.StreamMessageResponse:
        """The next stream message of a kind (others of other kinds are dropped)."""
        while True:
            item = self.responses.get(timeout=timeout)
            if isinstance(item, grpc.RpcError):
                raise item
            if item.WhichOneof("update") == kind:
                return item

    def drain(self) -> list[p4r.StreamMessageResponse]:
        """Every stream message received so far."""
        out = []
        while True:
            try:
                item = self.responses.get_nowait()
            except queue.Empty:
                return out
            if not isinstance(item, grpc.RpcError):
                out.append(item)

    def packet_out(self, payload: bytes, **metadata: int) -> None:
        """Send a PacketOut with metadata by name (egress_port=..., flags=...)."""
        assert self.schema is not None
        header = self.schema.header("packet_out")
        msg = p4r.StreamMessageRequest()
        msg.packet.payload = payload
        for name, value in metadata.items():
            f = header.fields_by_name[name]
            msg.packet.metadata.add(metadata_id=f.id, value=encode_int(value, f.bitwidth))
        self.send(msg)

    def packet_in(self, timeout: float = 5.0) -> tuple[bytes, dict[str, int]]:
        """The next PacketIn: payload and metadata by name."""
        assert self.schema is not None
        header = self.schema.header("packet_in")
        pin = self.next("packet", timeout).packet
        meta = {
            header.fields_by_id[m.metadata_id].name: int.from_bytes(m.value, "big")
            for m in pin.metadata
        }
        return pin.payload, meta

    def close(self) -> None:
        """Close the stream and the channel."""
        self._requests.put(None)
        self.channel.close()
        if self._reader is not None:
            self._reader.join(timeout=5)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- unary RPCs
    def set_pipeline(
        self,
        p4info: p4i.P4Info,
        device_config: bytes = b"",
        action: int = p4r.SetForwardingPipelineConfigRequest.VERIFY_AND_COMMIT,
        cookie: int | None = None,
    ) -> None:
        """SetForwardingPipelineConfig."""
        req = p4r.SetForwardingPipelineConfigRequest(device_id=self.device_id, action=action)
        req.election_id.CopyFrom(self.election.message())
        req.config.p4info.CopyFrom(p4info)
        req.config.p4_device_config = device_config
        if cookie is not None:
            req.config.cookie.cookie = cookie
        self.stub.SetForwardingPipelineConfig(req, timeout=10)
        self.schema = P4Schema(p4info)

    def get_pipeline(self, response_type: int = 0) -> p4r.ForwardingPipelineConfig:
        """GetForwardingPipelineConfig."""
        req = p4r.GetForwardingPipelineConfigRequest(
            device_id=self.device_id, response_type=response_type
        )
        return self.stub.GetForwardingPipelineConfig(req, timeout=10).config

    def write(
        self,
        updates: Sequence[p4r.Update],
        atomicity: int = p4r.WriteRequest.CONTINUE_ON_ERROR,
    ) -> None:
        """Write a batch; raises WriteError with the per-update errors."""
        req = p4r.WriteRequest(device_id=self.device_id, atomicity=atomicity)
        req.election_id.CopyFrom(self.election.message())
        req.updates.extend(updates)
        try:
            self.stub.Write(req, timeout=60)
        except grpc.RpcError as exc:
            raise WriteError(exc) from None

    def read(self, entities: Iterable[p4r.Entity]) -> list[p4r.Entity]:
        """Read; all entities of all responses."""
        req = p4r.ReadRequest(device_id=self.device_id, entities=list(entities))
        out: list[p4r.Entity] = []
        for response in self.stub.Read(req, timeout=60):
            out.extend(response.entities)
        return out

    # ---------------------------------------------------------------- entries
    def update(self, utype: int, entry: Entry) -> p4r.Update:
        """An Update of a table entry."""
        assert self.schema is not None
        return p4r.Update(
            type=utype, entity=p4r.Entity(table_entry=encode_table_entry(self.schema, entry))
        )

    def insert(self, entries: Iterable[Entry]) -> None:
        """INSERT entries."""
        self.write([self.update(Update.INSERT, e) for e in entries])

    def delete(self, entries: Iterable[Entry]) -> None:
        """DELETE entries."""
        self.write([self.update(Update.DELETE, e) for e in entries])

    def read_table(self, table: str | int = 0, counters: bool = False) -> list[p4r.TableEntry]:
        """All entries of a table (0: of all tables)."""
        assert self.schema is not None
        query = p4r.TableEntry(table_id=0 if table == 0 else self.schema.table(table).id)
        if counters:
            query.counter_data.SetInParent()
        return [e.table_entry for e in self.read([p4r.Entity(table_entry=query)])]

    def group_update(
        self, utype: int, group_id: int, ports: Mapping[int, int] | Sequence[int]
    ) -> p4r.Update:
        """An Update of a multicast group (ports, or port -> instance)."""
        entity = p4r.Entity()
        group = entity.packet_replication_engine_entry.multicast_group_entry
        group.multicast_group_id = group_id
        items = ports.items() if isinstance(ports, Mapping) else ((p, 0) for p in ports)
        for port, instance in items:
            group.replicas.add(port=encode_int(port, 32), instance=instance)
        return p4r.Update(type=utype, entity=entity)
