"""The service controller: runs the firewall service fast path and offloads its decisions.

The fast path (dpdk_app: the DPDK binary on the service interface through net_af_packet, or
any process speaking the same control channel, such as the numba drop-in
`python -m dpdk_app.pyservice`) decides the packets the pipeline punts to it. This controller
loads the compiled rule set into it, follows its flow records and, for each NEW allow, writes
`flows.flow_cache` entries for both directions of the connection (idle timeout set), so the
rest of the connection is decided in the target.

Timeouts, hardware and software: while a flow is offloaded the fast path sees none of its
packets, so its own state ages; the hardware's idle timeout is what says a flow went quiet.
- A fast-path END for FIN/RST removes the flow's entries; an END for a fast-path timeout of a
  flow that is offloaded does not (the hardware carries it; its idle timeout decides).
- A hardware idle timeout removes the flow on both sides once both directions are idle: the
  entries are deleted, then the fast path is told (FLOW_DEL) to forget the connection unless it
  saw a packet of it after the hardware's last hit (notification time minus the idle timeout:
  then the flow is alive in software, its state stays, and the reconcile loop re-offloads it
  as soon as FLOW_DUMP shows a `last_seen_ns` newer than the demotion). Deleting the entries
  first closes the race: a packet arriving in between reaches the fast path with its state
  still there, and so is newer than the mark.
- Idle but open TCP connections (decided here): the state of a connection quiet for the whole
  hardware idle timeout is gone on both sides. When its initiator speaks again, the segment
  misses the flow cache and reaches the fast path mid-stream; TCP pickup (the default of both
  backends) re-creates the state as ESTABLISHED if the rules still allow the connection, and
  the NEW record offloads it again (counted as `reoffloaded`): the connection survives, under
  the current rules. If the responder speaks first, its segment is decided as a new flow from
  the responder (dropped unless the rules allow that direction): keep the idle timeout above
  the connections' keepalive interval when servers may push first after a long silence.
- The fast path's TCP established timeout must be at least the hardware idle timeout.

Denied flows: a 5-tuple the rule set drops keeps reaching the service for every packet (in
stateful mode the ACL's default sends misses here). After `drop_offload_after` drop records of
one 5-tuple within `drop_offload_window_s`, the controller writes a `flow_drop` entry for that
direction only, so the rest is dropped in the target; at most `drop_offload` of them at once
(the oldest go first), so a scan of many 5-tuples cannot take the flow cache from allowed
flows. A one-packet probe never gets an entry. Rejects are never offloaded (the service must
answer each packet), nor are drops of invalid connection state (they leave no record). An
allowed flow whose reply key holds a drop entry has the entry deleted before its own are
written; a policy change deletes every drop entry the new rules no longer drop by the same
rule; an idle drop entry is deleted.

On a policy change the new rule set is loaded, the fast path RESIMULATEs its tracked flows and
the controller re-checks every offloaded flow against the new rules (they may have outlived
their fast-path state): entries of flows no longer allowed are deleted, still-allowed flows
are left as they are (a changed deciding rule is a MODIFY of the rule id). A NEW record
decided by the previous rule set that arrives after the change is checked against the new
rules before it is offloaded.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np

from controlplane.flows import FlowKey, FlowRecord, FlowStore, records_to_flows
from dpdk_app.classifier.headers import headers_from_ints
from dpdk_app.fastpath import ControlClient, FastPath, FastPathError, FlowSubscription, find_binary
from dpdk_app.layout import ACT_ALLOW, ACT_DROP, EV_END, EV_NEW, EV_UPDATE, FLOW_DEL_DTYPE
from dpdk_app.reference import NO_MATCH, first_match
from offload import names
from offload.compiler.fastpath import FastPathRules, compile_fastpath
from offload.compiler.rules import ResolvedPolicy
from offload.entries import Entry, EntryKey, Exact
from offload.p4client import DELETE, INSERT, MODIFY, P4Client
from offload.p4errors import WriteError
from offload.p4schema import P4Schema
from offload.proto import rpc_code

log = logging.getLogger(__name__)

Backend = Literal["dpdk", "numba", "auto"]
BACKENDS: Final = ("dpdk", "numba", "auto")
ICMP_ECHO_REPLY: Final = {1: (8, 0), 58: (128, 129)}  # proto -> (request type, reply type)
TCP_DONE_STATES: Final = frozenset({5, 6})  # TIME_WAIT (both FINs), CLOSED (RST)


class ServiceError(RuntimeError):
    """The service could not be started or configured as asked."""


@dataclass(frozen=True)
class ServiceOptions:
    """How the firewall service runs and how its flows are offloaded."""

    service_port: int
    iface: str | None = None  # the interface the fast path polls (the service port's peer)
    backend: Backend = "auto"
    ctrl_path: str | None = None  # attach to a running fast path instead of starting one
    idle_timeout_s: float = 60.0  # flow_cache idle timeout
    tcp_est_timeout_s: int = 7440  # the fast path's; >= idle_timeout_s
    batch_size: int = 64
    reconcile_interval_s: float = 0.5
    flows_db: Path | None = None
    max_flows: int = 100_000
    fastpath_options: tuple[str, ...] = ()
    drop_offload: int = 1024  # flow_drop entries at most at once; 0: never offload a drop
    drop_offload_after: int = 2  # drop records of one 5-tuple before its entry is written
    drop_offload_window_s: float = 10.0  # ... within this many seconds

    def check(self) -> None:
        """Raise ServiceError on inconsistent options."""
        if self.backend not in BACKENDS:
            raise ServiceError(f"backend must be one of {', '.join(BACKENDS)}: {self.backend!r}")
        if not 0 < self.service_port < names.CPU_PORT:
            raise ServiceError(f"service port {self.service_port} out of range")
        if self.ctrl_path is None and not self.iface:
            raise ServiceError("the service needs an interface (--service-iface) or a ctrl path")
        if self.drop_offload < 0 or self.drop_offload_after < 1 or self.drop_offload_window_s <= 0:
            raise ServiceError(
                f"drop offload needs a limit >= 0 and a record count >= 1, not "
                f"{self.drop_offload} and {self.drop_offload_after}"
            )
        if self.idle_timeout_s <= 0 or self.tcp_est_timeout_s < self.idle_timeout_s:
            raise ServiceError(
                f"the fast path's TCP established timeout ({self.tcp_est_timeout_s} s) must be "
                f"at least the hardware idle timeout ({self.idle_timeout_s} s), both > 0"
            )


def choose_backend(backend: Backend) -> Literal["dpdk", "numba"]:
    """`auto` is dpdk when the binary is built, else numba."""
    if backend == "auto":
        return "dpdk" if find_binary() is not None else "numba"
    return backend


def launch(options: ServiceOptions) -> FastPath:
    """Start the fast path on the service interface; the numba drop-in takes the same argv."""
    backend = choose_backend(options.backend)
    fp_options = ["--tcp-est-timeout", str(int(options.tcp_est_timeout_s))]
    fp_options += list(options.fastpath_options)
    vdevs = [f"net_af_packet0,iface={options.iface}"]
    fp = FastPath(vdevs, options=fp_options, backend=backend)
    try:
        return fp.start()
    except FastPathError as exc:
        fp.close()
        raise ServiceError(f"the {backend} fast path did not start: {exc}") from exc


def flow_keys(flow: FlowRecord) -> list[tuple[int, int, int, int, int]]:
    """flow_cache keys for the flow: its own direction, then the reply direction if any."""
    fwd = (flow.src, flow.dst, flow.proto, flow.sport, flow.dport)
    if flow.proto in ICMP_ECHO_REPLY:
        request, reply = ICMP_ECHO_REPLY[flow.proto]
        if flow.dport >> 8 != request:
            return [fwd]  # only echo has a reply the pipeline could key on
        return [fwd, (flow.dst, flow.src, flow.proto, flow.sport, reply << 8)]
    return [fwd, (flow.dst, flow.src, flow.proto, flow.dport, flow.sport)]


def flow_entry(
    key: tuple[int, int, int, int, int],
    rule_id: int,
    idle_ns: int,
    action: str = names.FLOW_ALLOW,
) -> Entry:
    """One flow_cache entry allowing (or with FLOW_DROP, dropping) a 5-tuple for `rule_id`."""
    src, dst, proto, sport, dport = key
    match = {
        "ip_src": Exact(src),
        "ip_dst": Exact(dst),
        "ip_proto": Exact(proto),
        "l4_src": Exact(sport),
        "l4_dst": Exact(dport),
    }
    return Entry.make(
        names.FLOW_CACHE, match, action, {"rule_id": rule_id}, idle_timeout_ns=idle_ns
    )


@dataclass
class ResimulationReport:
    """What a policy change did to the flows."""

    rules: int = 0
    build_ns: int = 0
    fastpath_checked: int = 0
    fastpath_removed: int = 0
    fastpath_ns: int = 0
    offloaded_checked: int = 0
    offloads_removed: int = 0
    offloads_updated: int = 0
    drops_removed: int = 0  # flow_drop entries the new rules no longer drop by the same rule
    controller_ns: int = 0

    @property
    def seconds(self) -> float:
        """Resimulation time, fast path and controller together."""
        return (self.fastpath_ns + self.controller_ns) / 1e9


@dataclass
class _Offload:
    flow: FlowRecord
    entries: tuple[Entry, ...]
    idle: dict[int, float] = field(default_factory=dict)  # entry index -> monotonic time


class ServiceController:
    """Loads rules into the fast path and keeps flow_cache in step with its decisions."""

    def __init__(
        self,
        client: P4Client,
        schema: P4Schema,
        options: ServiceOptions,
        fastpath: FastPath | None = None,
        store: FlowStore | None = None,
        control: ControlClient | None = None,
    ) -> None:
        options.check()
        self.client = client
        self.schema = schema
        self.options = options
        self.fastpath = fastpath
        self.store = store or FlowStore(options.max_flows, options.flows_db)
        self.rule_names: dict[int, str] = {}
        self.rules: FastPathRules | None = None
        self.idle_ns = int(options.idle_timeout_s * 1e9)
        self._offloads: dict[FlowKey, _Offload] = {}
        self._by_entry: dict[EntryKey, tuple[FlowKey, int]] = {}
        self._demoted: dict[FlowKey, int] = {}  # flow -> wall ns of its last hardware hit
        # flows removed on both sides by an idle timeout (a later NEW is a re-offload)
        self._idled_out: OrderedDict[FlowKey, None] = OrderedDict()
        self._lock = threading.RLock()
        self._ctl_lock = threading.Lock()
        self._ctl = control  # an already connected control client (tests, embedding)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.counters = {"offloaded": 0, "reoffloaded": 0, "removed": 0, "write_errors": 0}
        self.counters["refused"] = 0
        self.counters["idle_removed"] = 0  # idle on both sides: fast-path state removed too
        self.counters["idle_kept"] = 0  # idle in hardware, alive in the fast path
        self._last_error_log = -1e9
        self._rules_since_ns = 0  # wall clock of the last rule-set swap
        # first packet seen by the fast path -> flow_cache written, wall ns (recent NEW flows)
        self.offload_latency_ns: deque[int] = deque(maxlen=4096)
        # denied flows: flow_drop entries (oldest first), and drop records not yet offloaded
        self._drops: OrderedDict[FlowKey, Entry] = OrderedDict()
        self._drop_keys: dict[EntryKey, FlowKey] = {}
        self._drop_seen: OrderedDict[FlowKey, tuple[int, float]] = OrderedDict()
        self.counters["drops_offloaded"] = 0
        self.counters["drops_removed"] = 0

    # ------------------------------------------------------------------ lifecycle
    @property
    def ctrl_path(self) -> str:
        """The fast path's control socket."""
        if self.fastpath is not None:
            return str(self.fastpath.ctrl_path)
        assert self.options.ctrl_path is not None
        return self.options.ctrl_path

    def start(self) -> ServiceController:
        """Start (or attach to) the fast path and follow its flow records."""
        if self.fastpath is None and self.options.ctrl_path is None:
            self.fastpath = launch(self.options)
        if self._ctl is None:
            self._ctl = ControlClient(self.ctrl_path)
        subscription = FlowSubscription(self.ctrl_path)
        previous = self.client.on_idle_timeout
        if previous is not None and previous != self.on_idle_timeout:
            log.warning("replacing the P4 client's idle-timeout handler")
        self.client.on_idle_timeout = self.on_idle_timeout
        self._thread = threading.Thread(
            target=self._follow, args=(subscription,), name="nicfw-service", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop following records; stop the fast path if this controller started it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.client.on_idle_timeout == self.on_idle_timeout:
            self.client.on_idle_timeout = None
        if self._ctl is not None:
            self._ctl.close()
        if self.fastpath is not None and self.options.ctrl_path is None:
            self.fastpath.close()
        self.store.close()

    def __enter__(self) -> ServiceController:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _control(self) -> ControlClient:
        if self._ctl is None:
            raise ServiceError("the service controller is not started")
        return self._ctl

    def fastpath_stats(self) -> dict[str, Any]:
        """The fast path's counters (rx, tx, allowed, flows_active, ...)."""
        with self._ctl_lock:
            return self._control().stats()

    def offloaded(self) -> list[FlowRecord]:
        """Flows whose flow_cache entries are written."""
        with self._lock:
            return [o.flow for o in self._offloads.values()]

    def stats(self) -> dict[str, Any]:
        """The controller's counters and offload figures, and the fast path's own counters
        (or the error reaching it): what `nicfw service` shows."""
        with self._lock:
            latency = sorted(self.offload_latency_ns)
            controller: dict[str, Any] = dict(self.counters)
            controller["flows_offloaded_now"] = len(self._offloads)
            controller["drop_entries_now"] = len(self._drops)
        for name, q in (("p50", 0.5), ("p99", 0.99)):
            value = latency[min(len(latency) - 1, int(q * len(latency)))] / 1e6 if latency else 0
            controller[f"offload_latency_{name}_ms"] = value
        controller["offload_latency_samples"] = len(latency)
        try:
            fastpath: dict[str, Any] = self.fastpath_stats()
        except (ServiceError, FastPathError, OSError) as exc:
            fastpath = {"error": str(exc)}
        return {"controller": controller, "fastpath": fastpath}

    def api_stats(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """The control socket's `service.stats` op."""
        return {"ok": True, **self.stats()}

    def offloaded_drops(self) -> list[Entry]:
        """The flow_drop entries written for denied flows, oldest first."""
        with self._lock:
            return list(self._drops.values())

    # ------------------------------------------------------------------ rules
    def load_policy(self, resolved: ResolvedPolicy, host: str | None = None) -> ResimulationReport:
        """Load the policy's rule set; after the first load, resimulate the flows."""
        rules = compile_fastpath(resolved, host)
        first = self.rules is None
        report = ResimulationReport(rules=len(rules))
        with self._ctl_lock:
            ctl = self._control()
            loaded = ctl.load_rules(rules.rules)
            report.build_ns = loaded.build_ns
            self.rules, self.rule_names = rules, dict(resolved.rule_names)
            self._rules_since_ns = time.time_ns()
            if first:
                return report
            resim = ctl.resimulate()
        report.fastpath_checked, report.fastpath_ns = resim.checked, resim.elapsed_ns
        report.fastpath_removed = int(np.count_nonzero(resim.records["event"] == EV_END))
        self.handle_records(resim.records, resimulated=True)
        self._recheck_offloads(rules, report)
        log.info(
            "resimulation: fast path %d flows (%d removed) in %.1f ms; %d offloaded flows "
            "(%d removed, %d updated) in %.1f ms",
            report.fastpath_checked,
            report.fastpath_removed,
            report.fastpath_ns / 1e6,
            report.offloaded_checked,
            report.offloads_removed,
            report.offloads_updated,
            report.controller_ns / 1e6,
        )
        return report

    def _recheck_offloads(self, rules: FastPathRules, report: ResimulationReport) -> None:
        start = time.perf_counter_ns()
        with self._lock:
            items = list(self._offloads.items())
        report.offloaded_checked = len(items)
        if items:
            flows = [o.flow for _, o in items]
            headers = headers_from_ints(
                [f.src for f in flows],
                [f.dst for f in flows],
                [f.sport for f in flows],
                [f.dport for f in flows],
                [f.proto for f in flows],
            )
            winners = first_match(rules.rules, headers)
            actions = rules.rules["action"][winners]
            rule_ids = rules.rules["rule_id"][winners]
            gone, changed = [], []
            for (key, off), idx, act, rid in zip(items, winners, actions, rule_ids, strict=True):
                if idx == NO_MATCH or act != ACT_ALLOW:
                    gone.append(key)
                elif int(rid) != off.flow.rule_id:
                    changed.append((key, int(rid)))
            self._unoffload(gone)
            self._modify_rule(changed)
            report.offloads_removed, report.offloads_updated = len(gone), len(changed)
        with self._lock:
            drops = list(self._drops.items())
        if drops:
            keep = _drops_by(rules, [k for k, _ in drops])
            stale = [k for (k, e), rid in zip(drops, keep, strict=True) if rid != _rule_of(e)]
            report.drops_removed = self._unoffload_drops(stale)
        report.controller_ns = time.perf_counter_ns() - start

    # ------------------------------------------------------------------ records
    def _follow(self, subscription: FlowSubscription) -> None:
        last_reconcile = time.monotonic()
        with subscription:
            while not self._stop.is_set():
                try:
                    records = subscription.read(timeout=0.1)
                except (FastPathError, OSError) as exc:
                    if not self._stop.is_set():
                        log.error("flow record stream ended: %s", exc)
                    return
                try:
                    if len(records):
                        self.handle_records(records)
                    now = time.monotonic()
                    if self._demoted and now - last_reconcile >= self.options.reconcile_interval_s:
                        last_reconcile = now
                        self.reconcile()
                except Exception:  # one bad batch must not end offloading
                    log.exception("handling flow records failed")

    def handle_records(self, records: np.ndarray, resimulated: bool = False) -> None:
        """Store flow records and offload, update or remove flows accordingly."""
        flows = self.store.update(records_to_flows(records, self.rule_names))
        # A batch can hold a flow's END and then its NEW (FLOW_DEL of an idle flow, and the
        # next packet picking it up again), or the other way round: the later event wins.
        new: dict[FlowKey, FlowRecord] = {}
        denied: list[FlowRecord] = []
        done: dict[FlowKey, None] = {}
        changed: list[tuple[FlowKey, int]] = []
        for flow, rec in zip(flows, records, strict=True):
            event = int(rec["event"])
            if event == EV_NEW and flow.verdict == "allow":
                done.pop(flow.key, None)
                new[flow.key] = flow
            elif event == EV_NEW and flow.verdict == "drop" and not resimulated:
                denied.append(flow)
            elif event == EV_UPDATE and flow.verdict == "allow" and flow.key in self._offloads:
                if self._offloads[flow.key].flow.rule_id != flow.rule_id:
                    changed.append((flow.key, flow.rule_id))
            elif event == EV_END:
                self._demoted.pop(flow.key, None)
                new.pop(flow.key, None)
                # A fast-path timeout of an offloaded flow: the hardware carried its packets,
                # so the hardware idle timeout decides (see the module docstring).
                timed_out = flow.verdict == "allow" and int(rec["tcp_state"]) not in TCP_DONE_STATES
                if resimulated or not timed_out or flow.key not in self._offloads:
                    done[flow.key] = None
        self._unoffload(done)
        self.offload(new.values())
        if new:
            now = time.time_ns()
            self.offload_latency_ns.extend(
                now - f.first_seen_ns for f in new.values() if f.first_seen_ns
            )
        self._modify_rule(changed)
        if denied:
            self.offload_drops(denied)

    def offload(self, flows: Iterable[FlowRecord], again: bool = False) -> int:
        """Write flow_cache entries (both directions) for allowed flows; ALREADY_EXISTS is fine.

        A flow whose entries the target refused (flow_cache full, ...) is not recorded as
        offloaded: its packets keep going to the service, which still decides them.
        """
        batch: list[Entry] = []
        owners: list[FlowKey] = []
        flows = self._still_allowed(list(flows))
        # A drop entry on one of the flow's keys (its reply's, most likely: the 5-tuple was
        # denied the other way) would drop what is now allowed: it goes first.
        self._unoffload_drops(k for f in flows for k in flow_keys(f))
        with self._lock:
            for flow in flows:
                if flow.key in self._offloads:
                    continue
                keys = flow_keys(flow)
                entries = tuple(flow_entry(k, flow.rule_id, self.idle_ns) for k in keys)
                off = self._offloads[flow.key] = _Offload(flow, entries)
                for i, e in enumerate(off.entries):
                    self._by_entry[e.key] = (flow.key, i)
                batch.extend(entries)
                owners.extend([flow.key] * len(entries))
                self._demoted.pop(flow.key, None)
                self.store.mark_offloaded(flow.key)
                resumed = flow.key in self._idled_out  # came back after an idle timeout
                self._idled_out.pop(flow.key, None)
                self.counters["reoffloaded" if again or resumed else "offloaded"] += 1
        failed = self._write(INSERT, batch, rpc_code.ALREADY_EXISTS)
        if failed:
            refused = {owners[i] for i in failed}
            self._unoffload(refused)
            self.counters["refused"] += len(refused)
        return len(batch) - len(failed)

    def offload_drops(self, flows: Iterable[FlowRecord]) -> int:
        """Count drop records; write flow_drop entries for 5-tuples seen often enough.

        Returns how many entries were written (see the module docstring for the limits).
        """
        limit, after = self.options.drop_offload, self.options.drop_offload_after
        if limit == 0:
            return 0
        flows = list(flows)
        rules = self.rules
        if rules is not None:  # a record decided by the previous rules must still be dropped
            stale = [f for f in flows if f.first_seen_ns < self._rules_since_ns]
            if stale:
                keys = [f.key for f in stale]
                now_by = dict(zip(keys, _drops_by(rules, keys), strict=True))
                flows = [f for f in flows if now_by.get(f.key, f.rule_id) == f.rule_id]
        now = time.monotonic()
        window = self.options.drop_offload_window_s
        batch: list[Entry] = []
        evicted: list[Entry] = []
        with self._lock:
            for flow in flows:
                key = flow.key
                if key in self._drops:
                    continue  # written; these records left the service before it landed
                entry = flow_entry(key, flow.rule_id, self.idle_ns, names.FLOW_DROP)
                if entry.key in self._by_entry:
                    continue  # an allowed flow's reply key: never overwritten by a drop
                count, first = self._drop_seen.pop(key, (0, now))
                if now - first > window:
                    count, first = 0, now
                count += 1
                if count < after:
                    self._drop_seen[key] = (count, first)
                    continue
                self._drops[key] = entry
                self._drop_keys[entry.key] = key
                batch.append(entry)
            while len(self._drop_seen) > 4 * limit:
                self._drop_seen.popitem(last=False)
            while len(self._drops) > limit:
                old = self._forget_drop(next(iter(self._drops)))
                assert old is not None
                evicted.append(old)
            batch = [e for e in batch if e.key in self._drop_keys]  # (not evicted at once)
        self._write(DELETE, evicted, rpc_code.NOT_FOUND)  # the oldest make room
        failed = self._write(INSERT, batch, rpc_code.ALREADY_EXISTS)
        with self._lock:
            for i in failed:  # flow_cache full, ...: the service keeps deciding them
                self._forget_drop(_key_of(batch[i]))
        self.counters["drops_offloaded"] += len(batch) - len(failed)
        self.counters["drops_removed"] += len(evicted)
        return len(batch) - len(failed)

    def _forget_drop(self, key: FlowKey) -> Entry | None:
        entry = self._drops.pop(key, None)
        if entry is not None:
            self._drop_keys.pop(entry.key, None)
        return entry

    def _unoffload_drops(self, keys: Iterable[FlowKey]) -> int:
        """Delete the flow_drop entries of these 5-tuples (those that have one)."""
        with self._lock:
            gone = [e for e in (self._forget_drop(k) for k in keys) if e is not None]
        self._write(DELETE, gone, rpc_code.NOT_FOUND)
        self.counters["drops_removed"] += len(gone)
        return len(gone)

    def _still_allowed(self, flows: list[FlowRecord]) -> list[FlowRecord]:
        # A record decided by the previous rule set can arrive after a policy change was
        # resimulated; it is checked against the current rules so it cannot outlive them.
        rules = self.rules
        stale = [f for f in flows if f.first_seen_ns and f.first_seen_ns < self._rules_since_ns]
        if rules is None or not stale:
            return flows
        refused = {f.key for f in stale if not _allows(rules, f)}
        return [f for f in flows if f.key not in refused]

    def _unoffload(self, keys: Iterable[FlowKey]) -> int:
        batch: list[Entry] = []
        with self._lock:
            for key in keys:
                off = self._offloads.pop(key, None)
                if off is None:
                    continue
                for e in off.entries:
                    self._by_entry.pop(e.key, None)
                batch.extend(off.entries)
                self.store.mark_offloaded(key, False)
                self.counters["removed"] += 1
        self._write(DELETE, batch, rpc_code.NOT_FOUND)
        return len(batch)

    def _modify_rule(self, changed: Iterable[tuple[FlowKey, int]]) -> None:
        batch: list[Entry] = []
        with self._lock:
            for key, rule_id in changed:
                off = self._offloads.get(key)
                if off is None:
                    continue
                entries = tuple(flow_entry(_key_of(e), rule_id, self.idle_ns) for e in off.entries)
                off.entries = entries
                off.flow = replace(off.flow, rule_id=rule_id, rule=self.rule_names.get(rule_id, ""))
                batch.extend(entries)
        self._write(MODIFY, batch, rpc_code.NOT_FOUND)

    def _write(self, op: int, entries: list[Entry], tolerated: int) -> list[int]:
        """Write in batches; the indexes of the entries that failed for another reason."""
        if not entries:
            return []
        try:
            self.client.write_entries(self.schema, op, entries, batch_size=self.options.batch_size)
        except WriteError as exc:
            failed = [e for e in exc.errors if e.code != tolerated]
            if failed:
                self.counters["write_errors"] += len(failed)
                now = time.monotonic()
                if now - self._last_error_log >= 5.0:  # a full flow_cache fails every write
                    self._last_error_log = now
                    shown = "; ".join(str(e) for e in failed[:3])
                    log.error(
                        "flow_cache write: %d of %d failed (%d failures so far): %s",
                        len(failed),
                        len(entries),
                        self.counters["write_errors"],
                        shown,
                    )
            return [e.index for e in failed if 0 <= e.index < len(entries)]
        return []

    # ------------------------------------------------------------------ idle timeouts
    def on_idle_timeout(self, entries: list[Entry]) -> None:
        """P4Runtime idle timeouts: remove a flow on both sides once all its entries are idle."""
        now = time.monotonic()
        window = self.options.idle_timeout_s * 1.5
        idle_flows: list[FlowKey] = []
        with self._lock:
            idle_drops = [self._drop_keys[e.key] for e in entries if e.key in self._drop_keys]
        if idle_drops:
            self._unoffload_drops(idle_drops)  # a denied flow that went quiet
        with self._lock:
            for e in entries:
                hit = self._by_entry.get(e.key)
                if hit is None:
                    continue  # not ours (or already gone)
                key, index = hit
                off = self._offloads[key]
                off.idle[index] = now
                if all(now - off.idle.get(i, -1e18) <= window for i in range(len(off.entries))):
                    idle_flows.append(key)
        if not idle_flows:
            return
        wall = time.time_ns()
        # The flow's last hardware hit: this notification says the latest idle entry has not
        # been hit for the idle timeout (a late notification only moves the mark later, and
        # while the entries existed no packet of the flow could reach the fast path).
        last_hit = max(1, wall - self.idle_ns)
        with self._lock:
            # Marked before FLOW_DEL: once it returns, the next packet's NEW record can be
            # handled (and counted as a re-offload) before this thread runs again.
            for key in idle_flows:
                self._idled_out[key] = None
            while len(self._idled_out) > self.options.max_flows:
                self._idled_out.popitem(last=False)
        self._unoffload(idle_flows)  # entries first: see the module docstring
        removed = self._forget(idle_flows, last_hit)
        with self._lock:
            for key in idle_flows:
                if key in removed:
                    continue
                self._idled_out.pop(key, None)  # kept by the fast path: not idled out
                flow = self.store.get(key)
                if flow is not None and not flow.ended:
                    # Alive in the fast path: it saw a packet after the last hardware hit (that
                    # is why FLOW_DEL kept it), and that packet may well be the last one for a
                    # while, so the next reconcile re-offloads on the same mark.
                    self._demoted[key] = last_hit
        self.counters["idle_removed"] += len(removed)
        self.counters["idle_kept"] += len(idle_flows) - len(removed)

    def _forget(self, keys: list[FlowKey], idle_before_ns: int) -> set[FlowKey]:
        """FLOW_DEL the flows not seen by the fast path after idle_before_ns; -> those removed."""
        dels = np.zeros(len(keys), dtype=FLOW_DEL_DTYPE)
        for i, (src, dst, proto, sport, dport) in enumerate(keys):
            dels[i]["src_addr"] = np.frombuffer(src.to_bytes(16, "big"), np.uint8)
            dels[i]["dst_addr"] = np.frombuffer(dst.to_bytes(16, "big"), np.uint8)
            dels[i]["sport"], dels[i]["dport"], dels[i]["proto"] = sport, dport, proto
        dels["idle_before_ns"] = idle_before_ns
        try:
            with self._ctl_lock:
                res = self._control().flow_del(dels)
        except (FastPathError, OSError) as exc:
            # The fast path's own timeout still ends the flow; only the early removal is lost.
            log.error("FLOW_DEL of %d idle flows failed: %s", len(keys), exc)
            return set()
        # Their END records also arrive on the record stream and update the flow store.
        return {f.key for f in records_to_flows(res.records, self.rule_names)}

    def reconcile(self) -> int:
        """Re-offload demoted flows the fast path has seen since their entries went."""
        with self._ctl_lock:
            dump = self._control().flow_dump()
        seen = {f.key: f for f in records_to_flows(dump.records, self.rule_names)}
        again = []
        with self._lock:
            for key, since in list(self._demoted.items()):
                flow = seen.get(key)
                if flow is None:
                    del self._demoted[key]  # the fast path forgot it; a new packet is a NEW
                elif flow.last_seen_ns > since and flow.verdict == "allow":
                    again.append(flow)
        if again:
            self.offload(again, again=True)
        return len(again)


def _drops_by(rules: FastPathRules, keys: list[FlowKey]) -> list[int]:
    """For each 5-tuple, the rule id that drops it under `rules`; -1 if they do not drop it."""
    if not keys:
        return []
    src, dst, proto, sport, dport = (list(col) for col in zip(*keys, strict=True))
    winners = first_match(rules.rules, headers_from_ints(src, dst, sport, dport, proto))
    out = []
    for w in winners:
        if w == NO_MATCH:
            out.append(0)  # no rule: the service's default drop, rule 0
        elif int(rules.rules["action"][w]) == ACT_DROP:
            out.append(int(rules.rules["rule_id"][w]))
        else:
            out.append(-1)
    return out


def _rule_of(entry: Entry) -> int:
    return entry.params_dict["rule_id"]


def _allows(rules: FastPathRules, flow: FlowRecord) -> bool:
    header = headers_from_ints([flow.src], [flow.dst], [flow.sport], [flow.dport], [flow.proto])
    index = int(first_match(rules.rules, header)[0])
    return index != NO_MATCH and int(rules.rules["action"][index]) == ACT_ALLOW


def _key_of(entry: Entry) -> tuple[int, int, int, int, int]:
    m = entry.match_dict
    vals = [m[k] for k in ("ip_src", "ip_dst", "ip_proto", "l4_src", "l4_dst")]
    out = [v.value for v in vals if isinstance(v, Exact)]
    return out[0], out[1], out[2], out[3], out[4]


__all__ = [
    "ResimulationReport",
    "ServiceController",
    "ServiceError",
    "ServiceOptions",
    "choose_backend",
    "flow_entry",
    "flow_keys",
    "launch",
]
