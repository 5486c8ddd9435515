"""The rule log: what logged rules and audit rules saw, from the pipeline's digests.

The pipeline sends a `log_digest_t` digest when the rule that decided a packet has `log: true`
or when an audit rule matched it (p4/include/control/acl.p4). The daemon configures the digest,
hands each DigestList to `RuleLog.handle`, and acks it. Each sample becomes one `LogRecord`
with the rule's name and section (not only its id), whether it was an audit hit, the verdict
that was enforced, and the 5-tuple; it is written as one structured line to the
`nicfw.rulelog` logger and as one JSON line appended to the log file, and the last records are
kept for `nicfw log` (control socket op `log.recent`). The file rotates by size the way
`logging.handlers.RotatingFileHandler` does (rule-log.jsonl.1, .2, ...: the newest first).

The target reports a flow once until the daemon acks the list; since the daemon acks at once, a
repeat of the same record within `repeat_s` seconds is counted, not written again.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from offload.compiler.logrules import RuleInfo
from offload.digests import DigestList
from offload.names import LOG_DIGEST, Verdict
from offload.p4values import int128_to_ip

log = logging.getLogger("nicfw.rulelog")

VERDICT_NAMES = {
    Verdict.ALLOW: "allow",
    Verdict.DROP: "drop",
    Verdict.REJECT: "reject",
    Verdict.SERVICE: "service",
}
PROTOCOLS = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6"}
DEFAULT_KEEP = 1000
DEFAULT_REPEAT_S = 10.0
DEFAULT_MAX_BYTES = 64 * 1024 * 1024  # the file rotates beyond this
DEFAULT_BACKUPS = 5  # rotated files kept

# Digest config the daemon writes: lists of up to 64 samples, sent within 100 ms; an unacked
# list frees its samples for a resend after 5 s.
DIGEST_CONFIG = {"max_timeout_ns": 100_000_000, "max_list_size": 64, "ack_timeout_ns": 5 * 10**9}


def default_log_path() -> Path:
    """$NICFW_RULE_LOG, else rule-log.jsonl in $NICFW_STATE_DIR (default /var/lib/nicfw)."""
    explicit = os.environ.get("NICFW_RULE_LOG")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("NICFW_STATE_DIR", "/var/lib/nicfw")) / "rule-log.jsonl"


@dataclass(frozen=True)
class LogRecord:
    """One logged packet: which rule, which section, audit or not, the verdict, the 5-tuple."""

    seq: int
    time: float  # epoch seconds when the daemon received it
    rule_id: int
    rule: str
    section: str
    audit: bool
    audit_rule_id: int
    audit_rule: str | None
    audit_section: str | None
    verdict: str
    src: str
    dst: str
    proto: int
    sport: int
    dport: int

    def to_json(self) -> dict[str, Any]:
        """The record as a JSON object."""
        return asdict(self)

    def line(self) -> str:
        """One structured log line (key=value; names, not only ids)."""
        proto = PROTOCOLS.get(self.proto, str(self.proto))
        text = (
            f"rule={self.rule} section={self.section or '-'} audit={'yes' if self.audit else 'no'} "
            f"verdict={self.verdict} proto={proto} src={self.src} sport={self.sport} "
            f"dst={self.dst} dport={self.dport}"
        )
        if self.audit:
            text += f" audit_rule={self.audit_rule} audit_section={self.audit_section or '-'}"
        return text


def _address(value: int) -> str:
    return str(int128_to_ip(value))


class _JsonLines(logging.handlers.RotatingFileHandler):
    """The rule log file: one JSON object per line, rotated by size; errors counted."""

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        super().__init__(path, maxBytes=max_bytes, backupCount=backups, delay=True)
        self.setFormatter(logging.Formatter("%(message)s"))
        self.failed: OSError | None = None

    def write(self, line: str) -> OSError | None:
        """Append `line`; the error if it could not be written."""
        self.failed = None
        self.handle(logging.makeLogRecord({"msg": line, "levelno": logging.INFO}))
        return self.failed

    def handleError(self, record: logging.LogRecord) -> None:
        error = sys.exc_info()[1]
        self.failed = error if isinstance(error, OSError) else OSError(str(error))


class RuleLog:
    """Turns log digests into records: logged, appended to a file, kept for `nicfw log`."""

    def __init__(
        self,
        rules: Callable[[], Mapping[int, RuleInfo]],
        path: Path | None = None,
        keep: int = DEFAULT_KEEP,
        repeat_s: float = DEFAULT_REPEAT_S,
        clock: Callable[[], float] = time.time,
        max_bytes: int = DEFAULT_MAX_BYTES,
        backups: int = DEFAULT_BACKUPS,
    ) -> None:
        if max_bytes < 1 or backups < 1:
            raise ValueError("the rule log needs max_bytes >= 1 and backups >= 1")
        self.rules = rules
        self.path = path
        self._file = _JsonLines(path, max_bytes, backups) if path is not None else None
        self.repeat_s = repeat_s
        self.clock = clock
        self.records: deque[LogRecord] = deque(maxlen=keep)
        self.repeats = 0
        self.file_errors = 0
        self._seen: dict[tuple[int, ...], float] = {}
        self._seq = 0
        self._lock = threading.Lock()

    def handle(self, digests: DigestList) -> list[LogRecord]:
        """Record every sample of a log DigestList; the new records (repeats left out)."""
        if digests.name != LOG_DIGEST:
            return []
        rules = self.rules()
        now = self.clock()
        fresh: list[LogRecord] = []
        with self._lock:
            self._expire(now)
            for sample in digests.samples:
                key = tuple(sample.values())
                if key in self._seen:
                    self.repeats += 1
                    continue
                self._seen[key] = now
                self._seq += 1
                fresh.append(self._record(self._seq, now, sample, rules))
            self.records.extend(fresh)
        for rec in fresh:
            log.info("%s", rec.line())
        self._append(fresh)
        return fresh

    def _expire(self, now: float) -> None:
        if len(self._seen) > 4 * (self.records.maxlen or DEFAULT_KEEP) or any(
            now - t >= self.repeat_s for t in self._seen.values()
        ):
            self._seen = {k: t for k, t in self._seen.items() if now - t < self.repeat_s}

    @staticmethod
    def _record(
        seq: int, now: float, s: Mapping[str, int], rules: Mapping[int, RuleInfo]
    ) -> LogRecord:
        rule_id, audit_id = s["rule_id"], s["audit_rule_id"]
        rule = rules.get(rule_id)
        audit = rules.get(audit_id) if audit_id else None
        return LogRecord(
            seq=seq,
            time=now,
            rule_id=rule_id,
            rule=rule.name if rule else ("default" if rule_id == 0 else f"#{rule_id}"),
            section=rule.section if rule else "",
            audit=audit_id != 0,
            audit_rule_id=audit_id,
            audit_rule=(audit.name if audit else f"#{audit_id}") if audit_id else None,
            audit_section=(audit.section if audit else "") if audit_id else None,
            verdict=VERDICT_NAMES.get(s["verdict"], str(s["verdict"])),
            src=_address(s["ip_src"]),
            dst=_address(s["ip_dst"]),
            proto=s["ip_proto"],
            sport=s["l4_src"],
            dport=s["l4_dst"],
        )

    def _append(self, records: list[LogRecord]) -> None:
        if not records or self._file is None or self.path is None:
            return
        error: OSError | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            error = exc
        for rec in records if error is None else ():
            error = self._file.write(json.dumps(rec.to_json(), sort_keys=True))
            if error is not None:
                break
        if error is not None:  # the log never stops the daemon; say so once in a while
            self.file_errors += 1
            if self.file_errors == 1 or self.file_errors % 1000 == 0:
                log.warning("cannot append to the rule log %s: %s", self.path, error)

    def close(self) -> None:
        """Close the log file (it reopens on the next record)."""
        if self._file is not None:
            self._file.close()

    def recent(self, since: int = 0, audit_only: bool = False, limit: int = 100) -> list[LogRecord]:
        """The kept records with seq > `since` (audit hits only, if asked), oldest first."""
        with self._lock:
            out = [r for r in self.records if r.seq > since and (r.audit or not audit_only)]
        return out[-limit:] if limit > 0 else out

    def api_recent(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """The control socket's `log.recent` op: since, audit, limit -> records."""
        since, limit = request.get("since", 0), request.get("limit", 100)
        for name, value in (("since", since), ("limit", limit)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, not {value!r}")
        records = self.recent(since, bool(request.get("audit")), limit)
        return {
            "ok": True,
            "records": [r.to_json() for r in records],
            "last": self._seq,
            "repeats": self.repeats,
            "path": str(self.path) if self.path else None,
        }
