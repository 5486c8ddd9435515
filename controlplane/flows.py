"""Flow records: every connection the firewall service decided, and the rule that decided it.

The service controller feeds the fast path's flow records (NEW, UPDATE, END) into a
`FlowStore`: in memory, bounded, and optionally mirrored into a SQLite file so that another
process (`nicfw flows`) can answer "which rule allowed or dropped this connection?". The
store keeps the newest `max_flows` flows; ended flows are evicted first.
"""

from __future__ import annotations

import ipaddress
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Final

import numpy as np

from dpdk_app.layout import ACT_ALLOW, ACT_DROP, ACT_REJECT, EV_END, EV_NEW, EV_UPDATE

DEFAULT_MAX_FLOWS: Final = 100_000
DEFAULT_FLOWS_DB: Final = Path(os.environ.get("NICFW_FLOWS_DB", "/run/nicfw/flows.sqlite"))
VERDICTS: Final = {ACT_ALLOW: "allow", ACT_DROP: "drop", ACT_REJECT: "reject"}
EVENTS: Final = {EV_NEW: "new", EV_UPDATE: "update", EV_END: "end"}
STATES: Final = (
    "none",
    "syn_sent",
    "syn_recv",
    "established",
    "fin_wait",
    "time_wait",
    "closed",
    "unreplied",
    "replied",
)

FlowKey = tuple[int, int, int, int, int]  # (src, dst) 128-bit keys, proto, sport, dport


def _addr(key: int) -> str:
    a = ipaddress.IPv6Address(key)
    return str(a.ipv4_mapped or a)


@dataclass(frozen=True, slots=True)
class FlowRecord:
    """One connection as the service saw it (initiator's 5-tuple, lookup-key ports)."""

    src: int
    dst: int
    proto: int
    sport: int
    dport: int
    verdict: str
    rule_id: int
    rule: str = ""
    event: str = "new"
    state: str = "none"
    ingress_port: int = 0
    egress_port: int = 0
    workload_id: int = 0
    packets: int = 0
    bytes: int = 0
    first_seen_ns: int = 0
    last_seen_ns: int = 0
    offloaded: bool = False
    ended: bool = False

    @property
    def key(self) -> FlowKey:
        """The initiator's 5-tuple."""
        return (self.src, self.dst, self.proto, self.sport, self.dport)

    def to_dict(self) -> dict[str, Any]:
        """A printable row (addresses as text)."""
        row = asdict(self)
        row["src"], row["dst"] = _addr(self.src), _addr(self.dst)
        return row

    def describe(self) -> str:
        """One line: who talked to whom, and which rule decided."""
        rule = self.rule or (f"rule {self.rule_id}" if self.rule_id else "default")
        return (
            f"{_addr(self.src)}:{self.sport} -> {_addr(self.dst)}:{self.dport} proto {self.proto}"
            f" {self.verdict} by {rule} ({self.state}{', offloaded' if self.offloaded else ''})"
        )


def records_to_flows(
    records: np.ndarray, rule_names: Mapping[int, str] | None = None
) -> list[FlowRecord]:
    """Flow records (FLOW_RECORD_DTYPE) as FlowRecords, rule names filled in."""
    names = rule_names or {}
    out = []
    for rec in records:
        rule_id = int(rec["rule_id"])
        state = int(rec["tcp_state"])
        event = EVENTS.get(int(rec["event"]), "new")
        verdict = VERDICTS.get(int(rec["verdict"]), "drop")
        out.append(
            FlowRecord(
                src=int.from_bytes(bytes(rec["src_addr"]), "big"),
                dst=int.from_bytes(bytes(rec["dst_addr"]), "big"),
                proto=int(rec["proto"]),
                sport=int(rec["sport"]),
                dport=int(rec["dport"]),
                verdict=verdict,
                rule_id=rule_id,
                rule=names.get(rule_id, ""),
                event=event,
                state=STATES[state] if state < len(STATES) else str(state),
                ingress_port=int(rec["ingress_port"]),
                egress_port=int(rec["egress_port"]),
                workload_id=int(rec["workload_id"]),
                packets=int(rec["packets"]),
                bytes=int(rec["bytes"]),
                first_seen_ns=int(rec["first_seen_ns"]),
                last_seen_ns=int(rec["last_seen_ns"]),
                ended=event == "end" or verdict != "allow",  # a refusal leaves no state
            )
        )
    return out


_SCHEMA = """
CREATE TABLE IF NOT EXISTS flows (
    src TEXT, dst TEXT, proto INTEGER, sport INTEGER, dport INTEGER,
    verdict TEXT, rule_id INTEGER, rule TEXT, event TEXT, state TEXT,
    ingress_port INTEGER, egress_port INTEGER, workload_id INTEGER,
    packets INTEGER, bytes INTEGER, first_seen_ns INTEGER, last_seen_ns INTEGER,
    offloaded INTEGER, ended INTEGER, updated_ns INTEGER,
    PRIMARY KEY (src, dst, proto, sport, dport)
)
"""
_COLUMNS: Final = (
    *("src", "dst", "proto", "sport", "dport", "verdict", "rule_id", "rule", "event", "state"),
    *("ingress_port", "egress_port", "workload_id", "packets", "bytes", "first_seen_ns"),
    *("last_seen_ns", "offloaded", "ended"),
)
_KEY: Final = ("src", "dst", "proto", "sport", "dport")


class FlowStore:
    """The flows the service decided: newest `max_flows` in memory, optionally in SQLite."""

    def __init__(self, max_flows: int = DEFAULT_MAX_FLOWS, path: str | Path | None = None) -> None:
        if max_flows < 1:
            raise ValueError("max_flows must be at least 1")
        self.max_flows = max_flows
        self.path = Path(path) if path is not None else None
        self._flows: OrderedDict[FlowKey, FlowRecord] = OrderedDict()
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(_SCHEMA)
            self._db.commit()

    def close(self) -> None:
        """Close the SQLite file (the memory view stays readable)."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __len__(self) -> int:
        return len(self._flows)

    def update(self, flows: Iterable[FlowRecord]) -> list[FlowRecord]:
        """Merge records (NEW/UPDATE/END) into the store; returns the stored versions."""
        stored = []
        with self._lock:
            for f in flows:
                old = self._flows.pop(f.key, None)
                if old is not None and old.offloaded:
                    # only the controller knows (mark_offloaded); the rest comes from f
                    f = replace(f, offloaded=True)
                self._flows[f.key] = f
                stored.append(f)
            evicted = self._evict()
            self._persist(stored, evicted)
        return stored

    def mark_offloaded(self, key: FlowKey, offloaded: bool = True) -> None:
        """Record that the flow's flow-cache entries were written (or removed)."""
        with self._lock:
            f = self._flows.get(key)
            if f is not None and f.offloaded != offloaded:
                f = self._flows[key] = replace(f, offloaded=offloaded)
                self._persist([f])

    def get(self, key: FlowKey) -> FlowRecord | None:
        """The flow of an initiator 5-tuple."""
        return self._flows.get(key)

    def active(self) -> list[FlowRecord]:
        """Flows that have not ended."""
        with self._lock:
            return [f for f in self._flows.values() if not f.ended]

    def query(
        self, rule: str | None = None, active_only: bool = False, limit: int | None = None
    ) -> list[FlowRecord]:
        """Flows, newest last; `rule` is a rule name or id."""
        with self._lock:
            flows = list(self._flows.values())
        return filter_flows(flows, rule, active_only, limit)

    def _evict(self) -> list[FlowRecord]:
        excess = len(self._flows) - self.max_flows
        if excess <= 0:
            return []
        evicted = [
            self._flows.pop(k) for k in [k for k, f in self._flows.items() if f.ended][:excess]
        ]
        while len(self._flows) > self.max_flows:
            evicted.append(self._flows.popitem(last=False)[1])
        return evicted

    def _persist(self, flows: list[FlowRecord], evicted: Sequence[FlowRecord] = ()) -> None:
        if self._db is None or not (flows or evicted):
            return
        now = time.time_ns()
        rows = [(*(f.to_dict()[c] for c in _COLUMNS), now) for f in flows]
        marks = ",".join("?" * (len(_COLUMNS) + 1))
        self._db.executemany(f"INSERT OR REPLACE INTO flows VALUES ({marks})", rows)
        # the file holds what the memory holds
        gone = [tuple(f.to_dict()[c] for c in _KEY) for f in evicted]
        where = " AND ".join(f"{c} = ?" for c in _KEY)
        self._db.executemany(f"DELETE FROM flows WHERE {where}", gone)
        self._db.commit()


def filter_flows(
    flows: list[FlowRecord], rule: str | None, active_only: bool, limit: int | None
) -> list[FlowRecord]:
    """Flows decided by `rule` (name or id), only active ones if asked, the last `limit`."""
    if rule is not None:
        flows = [f for f in flows if rule in (f.rule, str(f.rule_id))]
    if active_only:
        flows = [f for f in flows if not f.ended]
    return flows[-limit:] if limit else flows


def read_flows_file(
    path: str | Path, rule: str | None = None, active_only: bool = False, limit: int | None = None
) -> list[FlowRecord]:
    """Flows from a store's SQLite file (what `nicfw flows` shows); oldest update first."""
    if not Path(path).exists():
        raise FileNotFoundError(f"no flow records at {path} (is `nicfw run --service-port` on?)")
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        cols = ",".join(_COLUMNS)
        rows = db.execute(f"SELECT {cols} FROM flows ORDER BY updated_ns").fetchall()
    finally:
        db.close()
    flows = []
    for row in rows:
        values = dict(zip(_COLUMNS, row, strict=True))
        for side in ("src", "dst"):
            ip = ipaddress.ip_address(values[side])
            values[side] = int(ip) | (0xFFFF << 32 if ip.version == 4 else 0)
        values["offloaded"], values["ended"] = bool(values["offloaded"]), bool(values["ended"])
        flows.append(FlowRecord(**values))
    return filter_flows(flows, rule, active_only, limit)


__all__ = ["FlowKey", "FlowRecord", "FlowStore", "read_flows_file", "records_to_flows"]
