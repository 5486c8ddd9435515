"""Decoding P4Runtime errors: per-update Write errors from grpc-status-details-bin, and the rest.

The status payloads are built by hand here, field by field as the P4Runtime spec (12.3)
describes them, so the decoder is checked against the wire format rather than against itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
import pytest

from offload.p4client import CONTINUE_ON_ERROR, ROLLBACK_ON_ERROR, P4Client
from offload.p4errors import (
    STATUS_DETAILS_KEY,
    NotPrimary,
    P4ClientError,
    TargetUnreachable,
    WriteError,
    code_name,
    decode_status_details,
    from_rpc_error,
    unreachable_reason,
    update_errors,
)
from offload.proto import p4r, rpc_code, rpc_status


def status_bin(codes: Sequence[int], messages: Sequence[str] | None = None) -> bytes:
    """A google.rpc.Status as a P4Runtime server sends it: one p4.v1.Error per update."""
    status = rpc_status.Status(code=rpc_code.UNKNOWN, message="write failed")
    for i, code in enumerate(codes):
        err = p4r.Error(canonical_code=code, message=messages[i] if messages else "")
        status.details.add().Pack(err)
    return status.SerializeToString()


class FakeRpcError(grpc.RpcError):
    """What a failed synchronous grpc call raises: code, details and trailing metadata."""

    def __init__(self, code: grpc.StatusCode, details: str, trailer: bytes | None = None) -> None:
        super().__init__(details)
        self._code = code
        self._details = details
        self._trailer = trailer

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[tuple[str, bytes], ...]:
        extra = ((STATUS_DETAILS_KEY, self._trailer),) if self._trailer is not None else ()
        return (("content-type", b"x"), *extra)


def updates(n: int) -> list[p4r.Update]:
    return [
        p4r.Update(
            type=p4r.Update.INSERT, entity=p4r.Entity(table_entry=p4r.TableEntry(table_id=i))
        )
        for i in range(n)
    ]


def test_decode_status_keeps_only_failing_updates_with_their_position() -> None:
    data = status_bin(
        [rpc_code.OK, rpc_code.ALREADY_EXISTS, rpc_code.OK, rpc_code.INVALID_ARGUMENT],
        ["", "entry exists", "", "bad mask"],
    )
    decoded = decode_status_details(data)
    assert decoded.code == rpc_code.UNKNOWN
    assert decoded.detail_count == 4
    assert decoded.details == [
        (1, rpc_code.ALREADY_EXISTS, "entry exists"),
        (3, rpc_code.INVALID_ARGUMENT, "bad mask"),
    ]


def test_details_that_are_not_p4_errors_are_skipped_but_keep_positions() -> None:
    status = rpc_status.Status(code=rpc_code.UNKNOWN)
    status.details.add().Pack(rpc_status.Status(code=3, message="not a p4.v1.Error"))
    status.details.add().Pack(p4r.Error(canonical_code=rpc_code.NOT_FOUND, message="gone"))
    decoded = decode_status_details(status.SerializeToString())
    assert decoded.details == [(1, rpc_code.NOT_FOUND, "gone")]


def test_update_errors_carry_global_index_and_the_update() -> None:
    ups = updates(3)
    error = FakeRpcError(
        grpc.StatusCode.UNKNOWN, "", status_bin([rpc_code.OK, rpc_code.OK, rpc_code.NOT_FOUND])
    )
    errors = update_errors(error, ups, offset=1000)
    assert errors is not None and len(errors) == 1
    err = errors[0]
    assert (err.index, err.code) == (1002, rpc_code.NOT_FOUND)
    assert err.update is not None and err.update.entity.table_entry.table_id == 2


def test_no_trailer_means_the_whole_request_failed() -> None:
    error = FakeRpcError(grpc.StatusCode.PERMISSION_DENIED, "Not primary")
    assert update_errors(error, updates(2)) is None
    converted = from_rpc_error("Write", error, "127.0.0.1:9559")
    assert isinstance(converted, NotPrimary)
    assert "PERMISSION_DENIED" in str(converted)


def test_unavailable_becomes_one_line_unreachable_error() -> None:
    details = (
        "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1:\n"
        "Failed to connect to remote host: Connection refused"
    )
    err = from_rpc_error("Write", FakeRpcError(grpc.StatusCode.UNAVAILABLE, details), "h:1")
    assert isinstance(err, TargetUnreachable)
    assert str(err) == "P4Runtime target h:1 unreachable: connection refused"
    assert unreachable_reason("DNS resolution failed for nohost:1") == "unknown host"
    assert unreachable_reason("weird\nthing") == "weird thing"


def test_code_name() -> None:
    assert code_name(rpc_code.NOT_FOUND) == "NOT_FOUND"
    assert code_name(999) == "999"


def test_write_error_message_names_failures_by_index() -> None:
    ups = updates(8)
    error = FakeRpcError(
        grpc.StatusCode.UNKNOWN, "", status_bin([rpc_code.INVALID_ARGUMENT] * 8, ["m"] * 8)
    )
    errors = update_errors(error, ups)
    assert errors is not None
    text = str(WriteError(errors, 8))
    assert text.startswith("Write failed: 8 of 8 updates failed: update #0: INVALID_ARGUMENT: m")
    assert "... 3 more" in text
    assert "\n" not in text


class FakeStub:
    """Stands in for the P4Runtime stub: Write fails the updates whose table_id is in `bad`."""

    def __init__(self, bad: set[int], refuse_after: int | None = None) -> None:
        self.bad = bad
        self.refuse_after = refuse_after
        self.requests: list[p4r.WriteRequest] = []

    def Write(self, request: p4r.WriteRequest, timeout: float) -> p4r.WriteResponse:
        self.requests.append(request)
        if self.refuse_after is not None and len(self.requests) > self.refuse_after:
            raise FakeRpcError(grpc.StatusCode.PERMISSION_DENIED, "Not primary")
        codes = [
            rpc_code.ALREADY_EXISTS if u.entity.table_entry.table_id in self.bad else rpc_code.OK
            for u in request.updates
        ]
        if any(codes):
            raise FakeRpcError(grpc.StatusCode.UNKNOWN, "", status_bin(codes, ["dup"] * len(codes)))
        return p4r.WriteResponse()


def client_with(stub: FakeStub, batch_size: int = 4) -> P4Client:
    client = P4Client("fake:1", device_id=7, election_id=(1 << 64) + 5, batch_size=batch_size)
    client._stub = stub  # type: ignore[assignment]
    return client


def test_write_batches_and_collects_errors_of_every_batch() -> None:
    stub = FakeStub(bad={1, 6, 9})
    client = client_with(stub)
    with pytest.raises(WriteError) as info:
        client.write(updates(10))
    assert [len(r.updates) for r in stub.requests] == [4, 4, 2]
    assert [e.index for e in info.value.errors] == [1, 6, 9]
    assert [e.update.entity.table_entry.table_id for e in info.value.errors if e.update] == [
        1,
        6,
        9,
    ]
    first = stub.requests[0]
    assert first.device_id == 7
    assert (first.election_id.high, first.election_id.low) == (1, 5)
    assert first.atomicity == CONTINUE_ON_ERROR


def test_write_without_errors_returns_count() -> None:
    stub = FakeStub(bad=set())
    assert client_with(stub, batch_size=3).write(updates(7)) == 7
    assert len(stub.requests) == 3


def test_atomic_write_stops_at_the_first_failing_batch() -> None:
    stub = FakeStub(bad={5})
    with pytest.raises(WriteError) as info:
        client_with(stub).write(updates(12), atomicity=ROLLBACK_ON_ERROR)
    assert len(stub.requests) == 2
    assert info.value.unsent == 4
    assert "4 updates not sent" in str(info.value)


def test_whole_request_refusal_raises_not_primary() -> None:
    stub = FakeStub(bad=set(), refuse_after=1)
    with pytest.raises(NotPrimary):
        client_with(stub).write(updates(8))


def test_closed_client_refuses_requests() -> None:
    client = P4Client("fake:1")
    with pytest.raises(P4ClientError, match="not open"):
        client.write(updates(1))
