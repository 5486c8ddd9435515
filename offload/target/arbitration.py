"""Client arbitration: primary and backup controllers per role (P4Runtime spec section 5).

Each StreamChannel is a `Session`. The first MasterArbitrationUpdate on a stream registers it;
later ones may change its election id. A controller becomes (or stays) primary when its
election id is at least the highest the device has ever seen for the role
(`election_id_past`); when the primary leaves or demotes itself the role has no primary until
someone claims it that way. Every change of primary is announced to all controllers of the
role: OK to the primary, ALREADY_EXISTS to backups, NOT_FOUND to all when there is no primary.
"""

from __future__ import annotations

import itertools
import queue
import threading
from dataclasses import dataclass, field

import grpc

from offload.proto import p4r, rpc_code

# What a session's queue carries besides responses: the end of the stream, with a status.
Close = tuple[grpc.StatusCode, str]


class ArbitrationError(Exception):
    """A MasterArbitrationUpdate that terminates the stream with `code`."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def election_int(msg: p4r.Uint128) -> int:
    """A Uint128 election id as an integer."""
    return msg.high << 64 | msg.low


_ids = itertools.count(1)


@dataclass(eq=False)
class Session:
    """One StreamChannel: the controller's arbitration state and its outgoing messages."""

    peer: str = ""
    id: int = field(default_factory=lambda: next(_ids))
    queue: queue.SimpleQueue[p4r.StreamMessageResponse | Close] = field(
        default_factory=queue.SimpleQueue
    )
    device_id: int | None = None  # set by the first arbitration message
    role: str = ""
    election_id: int | None = None  # None: the controller sent no election id
    dropped: int = 0  # packet-ins dropped because the client was not reading

    def send(self, msg: p4r.StreamMessageResponse) -> None:
        """Queue a message for the client."""
        self.queue.put(msg)

    def close(self, code: grpc.StatusCode = grpc.StatusCode.OK, message: str = "") -> None:
        """End the stream with a status."""
        self.queue.put((code, message))


class Arbiter:
    """The primary controller of each role, for one device."""

    def __init__(self, device_id: int) -> None:
        self.device_id = device_id
        self._lock = threading.Lock()
        self._sessions: list[Session] = []
        self._primary: dict[str, Session] = {}
        self._highest: dict[str, int] = {}  # election_id_past, per role

    def update(self, session: Session, msg: p4r.MasterArbitrationUpdate) -> None:
        """Handle a MasterArbitrationUpdate; raises ArbitrationError to end the stream."""
        role = msg.role.name if msg.HasField("role") else ""
        if msg.HasField("role") and msg.role.HasField("config") and msg.role.config.type_url:
            raise ArbitrationError(
                grpc.StatusCode.INVALID_ARGUMENT, "role config is not supported by this target"
            )
        election_id = election_int(msg.election_id) if msg.HasField("election_id") else None
        with self._lock:
            first = session.device_id is None
            if first:
                if msg.device_id != self.device_id:
                    raise ArbitrationError(
                        grpc.StatusCode.NOT_FOUND, f"unknown device id {msg.device_id}"
                    )
            else:
                if msg.device_id != session.device_id:
                    raise ArbitrationError(
                        grpc.StatusCode.FAILED_PRECONDITION, "device id of a stream cannot change"
                    )
                if role != session.role:
                    raise ArbitrationError(
                        grpc.StatusCode.FAILED_PRECONDITION, "role of a stream cannot change"
                    )
            if election_id is not None and any(
                s is not session and s.role == role and s.election_id == election_id
                for s in self._sessions
            ):
                raise ArbitrationError(
                    grpc.StatusCode.INVALID_ARGUMENT, "Election id already exists"
                )
            if first:
                session.device_id = msg.device_id
                session.role = role
                self._sessions.append(session)
            session.election_id = election_id
            past = self._highest.get(role)
            was_primary = self._primary.get(role) is session
            if election_id is not None and (past is None or election_id >= past):
                self._primary[role] = session
                self._highest[role] = election_id
                self._notify(role, None)
            elif was_primary:  # demoted itself: no primary until someone claims it
                del self._primary[role]
                self._notify(role, None)
            else:
                self._notify(role, session)

    def remove(self, session: Session) -> None:
        """Forget a closed stream; if it was the primary, tell the others."""
        with self._lock:
            if session not in self._sessions:
                return
            self._sessions.remove(session)
            if self._primary.get(session.role) is session:
                del self._primary[session.role]
                self._notify(session.role, None)

    def _notify(self, role: str, only: Session | None) -> None:
        """Send the advisory MasterArbitrationUpdate to one session or to the whole role."""
        primary = self._primary.get(role)
        for s in self._sessions:
            if s.role != role or (only is not None and s is not only):
                continue
            msg = p4r.StreamMessageResponse()
            arb = msg.arbitration
            arb.device_id = self.device_id
            if role:
                arb.role.name = role
            highest = self._highest.get(role)
            if highest is not None:
                arb.election_id.high = highest >> 64
                arb.election_id.low = highest & 0xFFFFFFFFFFFFFFFF
            if primary is None:
                arb.status.code = rpc_code.NOT_FOUND
                arb.status.message = "no primary controller"
            elif s is primary:
                arb.status.code = rpc_code.OK
                arb.status.message = "you are the primary controller"
            else:
                arb.status.code = rpc_code.ALREADY_EXISTS
                arb.status.message = "another controller is primary"
            s.send(msg)

    def is_primary(self, device_id: int, role: str, election_id: int | None) -> bool:
        """Whether (device, role, election id) names the current primary (for Write)."""
        with self._lock:
            primary = self._primary.get(role)
            return (
                primary is not None
                and device_id == self.device_id
                and election_id is not None
                and primary.election_id == election_id
            )

    def session_is_primary(self, session: Session) -> bool:
        """Whether a stream is the primary of its role (for PacketOut)."""
        with self._lock:
            return self._primary.get(session.role) is session

    def primaries(self) -> list[Session]:
        """The primary stream of every role (packet-ins and notifications go there)."""
        with self._lock:
            return list(self._primary.values())

    def close_all(self, message: str) -> None:
        """End every stream (the target is stopping)."""
        with self._lock:
            sessions = list(self._sessions)
        for s in sessions:
            s.close(grpc.StatusCode.UNAVAILABLE, message)
