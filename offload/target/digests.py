"""The software target's digest engine: DigestEntry config, batching, dedup, acks.

It behaves as BMv2 behind PI's DigestMgr does:

- Samples are dropped until the controller configures the digest (DigestEntry INSERT).
- With `ack_timeout_ns` > 0 a sample equal to one already queued or sent but not yet acked
  (or expired) is dropped: a flow that keeps hitting a logged rule is reported once until the
  controller acks the list that carried it. With 0 nothing is cached and every sample goes.
- A list is sent when it holds `max_list_size` samples (0: no limit), when its oldest sample
  has waited `max_timeout_ns`, or at once when `max_timeout_ns` is 0.
- A DigestListAck frees the list's samples from the cache; so does `ack_timeout_ns` passing
  without one (then the samples may be sent again).
- DELETE forgets the config, the queued samples and the cache.

Timeouts are checked by `sweep`, which the server calls every 100 ms (PI's minimum period).
The engine has its own lock: the pipeline learns under the target's lock, acks arrive on the
stream thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from offload.digests import DigestInfo, digest_infos, encode_sample
from offload.p4entity import EntityError
from offload.p4schema import P4Schema
from offload.proto import p4r, rpc_code

INSERT = p4r.Update.INSERT
MODIFY = p4r.Update.MODIFY
DELETE = p4r.Update.DELETE

Sample = tuple[int, ...]
Send = Callable[[p4r.StreamMessageResponse], None]


@dataclass
class _SentList:
    samples: list[Sample]
    sent_ns: int


@dataclass
class _Digest:
    """One digest's state (PI's DigestData)."""

    info: DigestInfo
    config: p4r.DigestEntry.Config | None = None
    cache: set[Sample] = field(default_factory=set)
    pending: list[Sample] = field(default_factory=list)
    pending_cached: list[Sample] = field(default_factory=list)
    first_ns: int = 0
    next_list_id: int = 1
    unacked: dict[int, _SentList] = field(default_factory=dict)

    def reset(self) -> None:
        self.config = None
        self.cache.clear()
        self.pending.clear()
        self.pending_cached.clear()
        self.unacked.clear()


@dataclass(slots=True)
class DigestOp:
    """A validated DigestEntry write."""

    type: int
    digest_id: int
    config: p4r.DigestEntry.Config | None


def _invalid(message: str) -> EntityError:
    return EntityError(rpc_code.INVALID_ARGUMENT, message)


class DigestEngine:
    """Digest config and delivery for one pipeline's P4Info."""

    def __init__(self, schema: P4Schema, send: Send | None = None) -> None:
        self.send = send
        self.lock = threading.Lock()
        self.sent_lists = 0
        self.dropped_samples = 0  # unconfigured, or a repeat of unacked data
        self._digests: dict[int, _Digest] = {}
        self._by_name: dict[str, _Digest] = {}
        self.rebind(schema)

    def rebind(self, schema: P4Schema) -> None:
        """Adopt a P4Info (RECONCILE_AND_COMMIT): state is kept by digest name."""
        infos = digest_infos(schema.p4info)
        with self.lock:
            old = self._by_name
            self._digests, self._by_name = {}, {}
            for name, info in infos.items():
                state = old.get(name)
                if state is None or state.info.fields != info.fields:
                    state = _Digest(info)
                else:
                    state.info = info
                self._digests[info.id] = state
                self._by_name[name] = state

    def reset(self) -> None:
        """Forget every config, queued sample and cached sample (a fresh pipeline's state)."""
        with self.lock:
            for state in self._digests.values():
                state.reset()

    # ------------------------------------------------------------------ config (Write/Read)
    def prepare(self, utype: int, entry: p4r.DigestEntry) -> DigestOp:
        """Validate a DigestEntry update; nothing changes yet."""
        if entry.digest_id not in self._digests:
            raise EntityError(rpc_code.NOT_FOUND, f"{entry.digest_id} is not a valid digest id")
        if utype == DELETE:
            return DigestOp(utype, entry.digest_id, None)
        if utype not in (INSERT, MODIFY):
            raise _invalid(f"update type {utype} is not valid for a DigestEntry")
        if not entry.HasField("config"):
            raise _invalid("INSERT and MODIFY of a DigestEntry need a config")
        cfg = entry.config
        for name in ("max_timeout_ns", "max_list_size", "ack_timeout_ns"):
            if getattr(cfg, name) < 0:
                raise _invalid(f"digest config {name} must not be negative")
        config = p4r.DigestEntry.Config()
        config.CopyFrom(cfg)
        return DigestOp(utype, entry.digest_id, config)

    def apply(self, op: DigestOp) -> Callable[[], None]:
        """Apply a validated write; returns how to undo it (config only)."""
        with self.lock:
            state = self._digests.get(op.digest_id)
            if state is None:
                raise EntityError(rpc_code.NOT_FOUND, f"{op.digest_id} is not a valid digest id")
            old = state.config
            if op.type == INSERT and old is not None:
                raise EntityError(
                    rpc_code.ALREADY_EXISTS, f"digest {state.info.name} already configured"
                )
            if op.type != INSERT and old is None:
                raise EntityError(rpc_code.NOT_FOUND, f"digest {state.info.name} not configured")
            if op.type == DELETE:
                state.reset()
            else:
                state.config = op.config

        def undo() -> None:
            with self.lock:
                state.config = old

        return undo

    def read(self, entry: p4r.DigestEntry) -> Iterator[p4r.Entity]:
        """DigestEntry reads: one digest's config, or every configured one for id 0."""
        with self.lock:
            if entry.digest_id == 0:
                states = [s for s in self._digests.values() if s.config is not None]
            else:
                state = self._digests.get(entry.digest_id)
                if state is None:
                    raise EntityError(
                        rpc_code.NOT_FOUND, f"{entry.digest_id} is not a valid digest id"
                    )
                if state.config is None:
                    raise EntityError(
                        rpc_code.NOT_FOUND, f"digest {state.info.name} not configured"
                    )
                states = [state]
            out = []
            for s in states:
                assert s.config is not None
                entity = p4r.Entity()
                entity.digest_entry.digest_id = s.info.id
                entity.digest_entry.config.CopyFrom(s.config)
                out.append(entity)
        return iter(out)

    def configured(self, name: str) -> bool:
        """Whether the controller has configured the digest called `name`."""
        state = self._by_name.get(name)
        return state is not None and state.config is not None

    # ------------------------------------------------------------------ data plane
    def learn(self, name: str, sample: Sample, now: int | None = None) -> None:
        """A `digest<T>(...)` call of the pipeline: queue the sample, send if due."""
        msg = None
        with self.lock:
            state = self._by_name.get(name)
            if state is None or state.config is None:
                self.dropped_samples += 1
                return
            cfg = state.config
            if cfg.ack_timeout_ns > 0:
                if sample in state.cache:
                    self.dropped_samples += 1
                    return
                state.cache.add(sample)
                state.pending_cached.append(sample)
            now = time.monotonic_ns() if now is None else now
            if not state.pending:
                state.first_ns = now
            state.pending.append(sample)
            full = cfg.max_list_size > 0 and len(state.pending) >= cfg.max_list_size
            if full or cfg.max_timeout_ns == 0:
                msg = self._take_list(state, now)
        if msg is not None:
            self._send(msg)

    def ack(self, digest_id: int, list_id: int) -> bool:
        """A DigestListAck: free the list's samples; False for an unknown digest id."""
        with self.lock:
            state = self._digests.get(digest_id)
            if state is None:
                return False
            sent = state.unacked.pop(list_id, None)
            if sent is not None:
                state.cache.difference_update(sent.samples)
            return True

    def sweep(self, now: int | None = None) -> int:
        """Send lists whose oldest sample waited max_timeout_ns; expire unacked lists."""
        now = time.monotonic_ns() if now is None else now
        out = []
        with self.lock:
            for state in self._digests.values():
                cfg = state.config
                if cfg is None:
                    continue
                if state.pending and now - state.first_ns >= cfg.max_timeout_ns:
                    out.append(self._take_list(state, now))
                if cfg.ack_timeout_ns > 0:
                    for list_id, sent in list(state.unacked.items()):
                        if now - sent.sent_ns >= cfg.ack_timeout_ns:
                            del state.unacked[list_id]
                            state.cache.difference_update(sent.samples)
        for msg in out:
            self._send(msg)
        return len(out)

    def _take_list(self, state: _Digest, now: int) -> p4r.StreamMessageResponse:
        msg = p4r.StreamMessageResponse()
        dl = msg.digest
        dl.digest_id = state.info.id
        dl.list_id = state.next_list_id
        dl.timestamp = time.time_ns()
        for sample in state.pending:
            dl.data.append(encode_sample(state.info, sample))
        if state.pending_cached:
            state.unacked[state.next_list_id] = _SentList(state.pending_cached, now)
        state.next_list_id += 1
        state.pending, state.pending_cached = [], []
        self.sent_lists += 1
        return msg

    def _send(self, msg: p4r.StreamMessageResponse) -> None:
        if self.send is not None:
            self.send(msg)

    def stats(self) -> dict[str, int]:
        """Lists sent, samples dropped, and samples waiting for an ack."""
        with self.lock:
            cached = sum(len(s.cache) for s in self._digests.values())
        return {"lists": self.sent_lists, "dropped": self.dropped_samples, "unacked": cached}
