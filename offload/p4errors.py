"""Errors of a P4Runtime conversation, decoded from gRPC into values a caller can act on.

A failed Write carries one `p4.v1.Error` per update in the `grpc-status-details-bin` trailer
(P4Runtime spec section 12.3: a google.rpc.Status whose details hold the errors in request
order, OK for the updates that worked). `WriteError` keeps only the failing ones, each with its
index, code, message and the update itself, as p4runtime-shell's P4RuntimeWriteException does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from offload.proto import p4r, rpc_code, rpc_status

STATUS_DETAILS_KEY = "grpc-status-details-bin"


def code_name(code: int) -> str:
    """The name of a google.rpc.Code (`NOT_FOUND`), or the number when it is not one."""
    try:
        return str(rpc_code.Code.Name(code))
    except ValueError:
        return str(code)


def _one_line(text: str) -> str:
    return " ".join(text.split())


class P4ClientError(Exception):
    """A P4Runtime request the target refused or could not answer."""

    def __init__(self, operation: str, code: int, message: str) -> None:
        super().__init__(f"{operation} failed: {code_name(code)}: {_one_line(message)}")
        self.operation = operation
        self.code = code
        self.message = message


class TargetUnreachable(P4ClientError):
    """No P4Runtime server answers at the address (down, refused, unknown host, timed out)."""

    def __init__(self, address: str, reason: str) -> None:
        Exception.__init__(self, f"P4Runtime target {address} unreachable: {_one_line(reason)}")
        self.operation = "connect"
        self.code = rpc_code.UNAVAILABLE
        self.message = reason
        self.address = address


class NotPrimary(P4ClientError):
    """This client is not the primary controller of the device, so it may not change it."""

    def __init__(self, operation: str, message: str) -> None:
        super().__init__(operation, rpc_code.PERMISSION_DENIED, message)


@dataclass(frozen=True)
class UpdateError:
    """One failing update of a Write: its index in the whole write, the target's verdict."""

    index: int
    code: int
    message: str
    update: p4r.Update | None

    def __str__(self) -> str:
        return f"update #{self.index}: {code_name(self.code)}: {_one_line(self.message)}"


class WriteError(P4ClientError):
    """A Write in which some updates failed; `errors` lists only those, by index."""

    MAX_SHOWN = 5  # the message names the first few; `errors` holds all of them

    def __init__(
        self, errors: Sequence[UpdateError], total: int, *, unsent: int = 0, message: str = ""
    ) -> None:
        self.errors = list(errors)
        self.total = total
        self.unsent = unsent
        shown = "; ".join(str(e) for e in self.errors[: self.MAX_SHOWN])
        more = len(self.errors) - self.MAX_SHOWN
        text = f"{len(self.errors)} of {total} updates failed: {shown}"
        if more > 0:
            text += f"; ... {more} more"
        if unsent:
            text += f"; {unsent} updates not sent after the failure"
        if message and not self.errors:
            text = f"{total} updates failed: {_one_line(message)}"
        Exception.__init__(self, f"Write failed: {text}")
        self.operation = "Write"
        self.code = rpc_code.UNKNOWN
        self.message = message or text


@dataclass(frozen=True)
class DecodedStatus:
    """A google.rpc.Status with its P4Runtime errors: (position, code, message) for non-OK ones."""

    code: int
    message: str
    details: list[tuple[int, int, str]]
    detail_count: int


def decode_status_details(data: bytes) -> DecodedStatus:
    """Decode a `grpc-status-details-bin` value; details that are not p4.v1.Error are skipped."""
    status = rpc_status.Status()
    status.ParseFromString(data)
    failing: list[tuple[int, int, str]] = []
    for i, detail in enumerate(status.details):
        err = p4r.Error()
        if not detail.Unpack(err):
            continue
        if err.canonical_code != rpc_code.OK:
            failing.append((i, err.canonical_code, err.message))
    return DecodedStatus(status.code, status.message, failing, len(status.details))


def status_details_bin(error: grpc.RpcError) -> bytes | None:
    """The raw `grpc-status-details-bin` trailer of a failed call, if the server sent one."""
    trailing = getattr(error, "trailing_metadata", None)
    if trailing is None:
        return None
    for key, value in trailing() or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            return value
    return None


def rpc_code_of(error: grpc.RpcError) -> int:
    """The numeric gRPC status code of a failed call."""
    code = getattr(error, "code", None)
    status = code() if code is not None else None
    return int(status.value[0]) if status is not None else rpc_code.UNKNOWN


def rpc_details_of(error: grpc.RpcError) -> str:
    """The status message of a failed call, on one line."""
    details = getattr(error, "details", None)
    text = details() if details is not None else None
    return _one_line(text or str(error))


def update_errors(
    error: grpc.RpcError, updates: Sequence[p4r.Update], offset: int = 0
) -> list[UpdateError] | None:
    """Per-update errors of a failed Write of `updates`, numbered from `offset`.

    None when the server sent no per-update details (the whole request was refused).
    """
    data = status_details_bin(error)
    if data is None:
        return None
    decoded = decode_status_details(data)
    if decoded.detail_count == 0:
        return None
    return [
        UpdateError(offset + i, code, message, updates[i] if i < len(updates) else None)
        for i, code, message in decoded.details
    ]


def from_rpc_error(operation: str, error: grpc.RpcError, address: str = "") -> P4ClientError:
    """The nicfw error for a failed call without per-update details."""
    code = rpc_code_of(error)
    message = rpc_details_of(error)
    if code == rpc_code.UNAVAILABLE and address:
        return TargetUnreachable(address, unreachable_reason(message))
    if code == rpc_code.PERMISSION_DENIED:
        return NotPrimary(operation, message)
    return P4ClientError(operation, code, message)


def unreachable_reason(details: str) -> str:
    """Shorten gRPC's connection failure text to its cause ("Connection refused", ...)."""
    text = _one_line(details)
    lowered = text.lower()
    for needle, reason in (
        ("connection refused", "connection refused"),
        ("name or service not known", "unknown host"),
        ("dns resolution failed", "unknown host"),
        ("domain name not found", "unknown host"),
        ("lookup error", "unknown host"),
        ("no address associated", "unknown host"),
        ("deadline exceeded", "timed out"),
        ("connection reset", "connection reset"),
        ("socket closed", "connection closed by the target"),
    ):
        if needle in lowered:
            return reason
    return text or "no answer"
