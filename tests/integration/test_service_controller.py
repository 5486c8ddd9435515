"""The service controller against a software target over gRPC: flow records in, flow_cache out.

The fast path's side is a stand-in for its control channel (what LOAD_RULES, RESIMULATE and
FLOW_DUMP answer is set by the test); the P4Runtime side is real: entries are read back from
the target, idle-timeout notifications come from its scanner.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from controller_state import election

from controlplane.flows import FlowStore, records_to_flows
from controlplane.policy import Policy, Rule, Section, load_policy, resolve
from controlplane.service import ServiceController, ServiceError, ServiceOptions, flow_keys
from dpdk_app.fastpath import FastPathError, FlowsResult, LoadResult
from dpdk_app.layout import ACT_ALLOW, ACT_DROP, EV_END, EV_NEW, FLOW_DEL_DTYPE, FLOW_RECORD_DTYPE
from offload import names
from offload.entries import Entry, Exact
from offload.p4client import P4Client
from offload.p4schema import P4Schema
from offload.p4values import ip_to_int128
from offload.target import SoftwareTarget

H1, H2, H3 = "10.0.0.1", "10.0.0.2", "10.0.0.3"
POLICY = f"""
version: 1
groups:
  h1: {{addresses: [{H1}/32, "2001:db8::1"]}}
  h2: {{addresses: [{H2}/32, "2001:db8::2"]}}
  h3: {{addresses: [{H3}/32]}}
sections:
  - name: s
    rules:
      - {{name: web, source: h1, destination: h2, protocol: tcp, ports: [5001], action: allow}}
      - {{name: other, source: h1, destination: h3, protocol: tcp, ports: [5001], action: allow}}
      - {{name: ping, source: any, destination: any, protocol: icmp, type: 8, action: allow}}
      - {{name: ping6, source: any, destination: any, protocol: icmpv6, type: 128, action: allow}}
default_action: drop
"""


class FakeControl:
    """Answers the control requests the controller makes, as the test sets them."""

    def __init__(self) -> None:
        self.loaded: list[np.ndarray] = []
        self.resim = np.zeros(0, FLOW_RECORD_DTYPE)
        self.dump = np.zeros(0, FLOW_RECORD_DTYPE)
        self.tracked: dict[tuple[int, ...], int] = {}  # what FLOW_DEL finds: key -> last seen
        self.deleted: list[tuple[tuple[int, ...], int]] = []  # FLOW_DEL entries received
        self.offloaded_at_del: list[bool] = []  # were entries still written at FLOW_DEL time?
        self.svc: ServiceController | None = None

    def load_rules(self, rules: np.ndarray) -> LoadResult:
        self.loaded.append(rules)
        return LoadResult(len(rules), 1000, len(self.loaded), 0)

    def resimulate(self) -> FlowsResult:
        return FlowsResult(len(self.resim), 5000, self.resim)

    def flow_dump(self) -> FlowsResult:
        return FlowsResult(len(self.dump), 5000, self.dump)

    def stats(self) -> dict[str, Any]:
        return {}

    def flow_del(self, dels: np.ndarray) -> FlowsResult:
        """FLOW_DEL over `tracked` (key -> last_seen_ns), either direction, as the fast path."""
        assert dels.dtype == FLOW_DEL_DTYPE
        gone = []
        for d in dels:
            src = int.from_bytes(bytes(d["src_addr"]), "big")
            dst = int.from_bytes(bytes(d["dst_addr"]), "big")
            sport, dport, proto = int(d["sport"]), int(d["dport"]), int(d["proto"])
            self.deleted.append(((src, dst, proto, sport, dport), int(d["idle_before_ns"])))
            self.offloaded_at_del.append(self.svc is not None and bool(self.svc.offloaded()))
            for key in ((src, dst, proto, sport, dport), (dst, src, proto, dport, sport)):
                seen = self.tracked.get(key)
                before = int(d["idle_before_ns"])
                if seen is not None and (before == 0 or seen <= before):
                    del self.tracked[key]
                    gone.append(key)
        recs = np.zeros(len(gone), FLOW_RECORD_DTYPE)
        for r, (src, dst, proto, sport, dport) in zip(recs, gone, strict=True):
            r["src_addr"] = np.frombuffer(src.to_bytes(16, "big"), np.uint8)
            r["dst_addr"] = np.frombuffer(dst.to_bytes(16, "big"), np.uint8)
            r["proto"], r["sport"], r["dport"] = proto, sport, dport
            r["verdict"], r["event"], r["tcp_state"] = ACT_ALLOW, EV_END, 3
        return FlowsResult(len(dels), 1000, recs)

    def close(self) -> None:
        pass


def record(
    src: str,
    dst: str,
    proto: int = 6,
    sport: int = 40000,
    dport: int = 5001,
    *,
    rule_id: int = 0,
    verdict: int = ACT_ALLOW,
    event: int = EV_NEW,
    state: int = 1,
    last_seen_ns: int = 0,
) -> np.ndarray:
    rec = np.zeros(1, FLOW_RECORD_DTYPE)
    rec["src_addr"] = np.frombuffer(ip_to_int128(src).to_bytes(16, "big"), np.uint8)
    rec["dst_addr"] = np.frombuffer(ip_to_int128(dst).to_bytes(16, "big"), np.uint8)
    rec["proto"], rec["sport"], rec["dport"] = proto, sport, dport
    rec["rule_id"], rec["verdict"], rec["event"], rec["tcp_state"] = rule_id, verdict, event, state
    rec["last_seen_ns"] = last_seen_ns
    return rec


@pytest.fixture(scope="module")
def target() -> Iterator[SoftwareTarget]:
    with SoftwareTarget("127.0.0.1:0") as t:
        yield t


@pytest.fixture
def client(target: SoftwareTarget) -> Iterator[P4Client]:
    schema = P4Schema.load()
    c = P4Client.connect(target.address, 1, election(), schema=schema, wait_for_target=True)
    c.set_pipeline(schema, b"")  # a fresh pipeline: empty tables
    yield c
    c.close()


def make(client: P4Client, **kw: Any) -> tuple[ServiceController, FakeControl]:
    ctl = FakeControl()
    opts = ServiceOptions(service_port=3, ctrl_path="/nonexistent", **kw)
    svc = ServiceController(client, P4Schema.load(), opts, store=FlowStore(), control=ctl)  # type: ignore[arg-type]
    client.on_idle_timeout = svc.on_idle_timeout
    ctl.svc = svc
    return svc, ctl


def flow_cache(client: P4Client) -> dict[tuple[int, ...], Entry]:
    out = {}
    for e in client.read_table_entries(P4Schema.load(), names.FLOW_CACHE):
        m = e.match_dict
        key = [m[k] for k in ("ip_src", "ip_dst", "ip_proto", "l4_src", "l4_dst")]
        out[tuple(v.value for v in key if isinstance(v, Exact))] = e
    return out


def k(src: str, dst: str, proto: int, sport: int, dport: int) -> tuple[int, ...]:
    return (ip_to_int128(src), ip_to_int128(dst), proto, sport, dport)


def rule_id(resolved: Any, name: str) -> int:
    return next(r.rule_id for r in resolved.rules if r.name == name)


def test_new_allow_offloads_both_directions(client: P4Client) -> None:
    resolved = resolve(load_policy(POLICY))
    svc, _ = make(client, idle_timeout_s=30)
    svc.load_policy(resolved)
    web = rule_id(resolved, "web")
    svc.handle_records(record(H1, H2, rule_id=web))
    svc.handle_records(record(H1, H3, dport=80, rule_id=0, verdict=ACT_DROP))
    cache = flow_cache(client)
    assert set(cache) == {k(H1, H2, 6, 40000, 5001), k(H2, H1, 6, 5001, 40000)}
    for e in cache.values():
        assert e.action == names.FLOW_ALLOW and e.params_dict == {"rule_id": web}
        assert e.idle_timeout_ns == 30 * 10**9
    flows = svc.store.query()
    assert [(f.verdict, f.rule, f.offloaded) for f in flows] == [
        ("allow", "web", True),
        ("drop", "", False),
    ]
    assert [f.dport for f in svc.store.query(rule="web")] == [5001]
    # The same decision again (another controller, or a replay): ALREADY_EXISTS is fine.
    svc2, _ = make(client)
    svc2.handle_records(record(H1, H2, rule_id=web))
    assert svc2.counters["write_errors"] == 0 and len(flow_cache(client)) == 2


def test_icmp_echo_reverse_keys() -> None:
    v4 = records_to_flows(record(H1, H2, 1, sport=7, dport=8 << 8))[0]
    v6 = records_to_flows(record("2001:db8::1", "2001:db8::2", 58, sport=7, dport=128 << 8))[0]
    unreachable = records_to_flows(record(H1, H2, 1, sport=0, dport=3 << 8 | 1))[0]
    udp = records_to_flows(record(H1, H2, 17, sport=5353, dport=53))[0]
    assert flow_keys(v4)[1] == k(H2, H1, 1, 7, 0)
    assert flow_keys(v6)[1] == k("2001:db8::2", "2001:db8::1", 58, 7, 129 << 8)
    assert len(flow_keys(unreachable)) == 1
    assert flow_keys(udp)[1] == k(H2, H1, 17, 53, 5353)


def test_end_records(client: P4Client) -> None:
    svc, _ = make(client)
    svc.handle_records(np.concatenate([record(H1, H2, sport=1), record(H1, H2, sport=2)]))
    assert len(flow_cache(client)) == 4
    # RST (CLOSED) ends flow 1; a fast-path timeout of offloaded flow 2 leaves it offloaded:
    # the hardware carried its packets, its idle timeout decides.
    svc.handle_records(record(H1, H2, sport=1, event=EV_END, state=6))
    svc.handle_records(record(H1, H2, sport=2, event=EV_END, state=3))
    assert set(flow_cache(client)) == {k(H1, H2, 6, 2, 5001), k(H2, H1, 6, 5001, 2)}


def test_the_later_of_an_end_and_a_new_in_one_batch_wins(client: P4Client) -> None:
    svc, _ = make(client)
    # An idle flow forgotten on both sides (its END), then picked up again by its next packet
    # (NEW), read in one batch: it is offloaded, not removed after.
    svc.handle_records(
        np.concatenate(
            [record(H1, H2, sport=3, event=EV_END, state=3), record(H1, H2, sport=3, state=3)]
        )
    )
    assert set(flow_cache(client)) == {k(H1, H2, 6, 3, 5001), k(H2, H1, 6, 5001, 3)}
    assert [f.key for f in svc.offloaded()] == [k(H1, H2, 6, 3, 5001)]
    # A flow that starts and is reset within one batch is never written.
    svc.handle_records(
        np.concatenate([record(H1, H2, sport=4), record(H1, H2, sport=4, event=EV_END, state=6)])
    )
    assert k(H1, H2, 6, 4, 5001) not in flow_cache(client)
    assert len(svc.offloaded()) == 1


def wait_idle_out(client: P4Client) -> None:
    """Until the target's own idle notifications have emptied flow_cache."""
    deadline = time.monotonic() + 5
    while flow_cache(client) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert flow_cache(client) == {}


def test_idle_timeout_removes_the_flow_on_both_sides(client: P4Client) -> None:
    svc, ctl = make(client, idle_timeout_s=0.3, tcp_est_timeout_s=60)
    key = k(H1, H2, 6, 9, 5001)
    ctl.tracked[key] = time.time_ns()  # the fast path last saw it before the offload
    svc.handle_records(record(H1, H2, sport=9))
    fwd, _rev = flow_cache(client).values()
    # one direction idle (a one-way stream): nothing goes, the fast path is not told
    svc.on_idle_timeout([fwd])
    assert len(flow_cache(client)) == 2 and ctl.deleted == []
    # the target's own notifications: both directions idle -> entries and fast-path state go
    start = time.time_ns()
    wait_idle_out(client)
    assert [d[0] for d in ctl.deleted] == [key] and ctl.tracked == {}
    assert ctl.offloaded_at_del == [False]  # the entries went first
    mark = ctl.deleted[0][1]  # the hardware's last hit: notification time - idle timeout
    assert start - int(0.3e9) - int(1e9) < mark <= time.time_ns() - int(0.3e9)
    assert svc.counters["idle_removed"] == 1 and svc.counters["idle_kept"] == 0
    assert svc.reconcile() == 0  # nothing left to re-offload from the fast path's state
    # The connection was idle but open: its initiator's next segment is picked up by the fast
    # path (a NEW record) and offloaded again.
    svc.handle_records(record(H1, H2, sport=9, state=3))
    assert len(flow_cache(client)) == 2 and svc.counters["reoffloaded"] == 1
    svc.handle_records(record(H1, H2, sport=9, event=EV_END, state=5))
    assert flow_cache(client) == {}


def test_idle_timeout_keeps_a_flow_alive_in_software(client: P4Client) -> None:
    svc, ctl = make(client, idle_timeout_s=0.3, tcp_est_timeout_s=60)
    key = k(H1, H2, 6, 10, 5001)
    svc.handle_records(record(H1, H2, sport=10))
    # the fast path saw a packet after the hardware's last hit: its state stays
    ctl.tracked[key] = time.time_ns() + 60 * 10**9
    wait_idle_out(client)
    assert [d[0] for d in ctl.deleted] == [key] and key in ctl.tracked
    assert svc.counters["idle_kept"] == 1 and svc.counters["idle_removed"] == 0
    # once the fast path has seen it after the demotion, it is offloaded again
    ctl.dump = record(H1, H2, sport=10, state=3, last_seen_ns=1)
    assert svc.reconcile() == 0 and flow_cache(client) == {}
    ctl.dump = record(H1, H2, sport=10, state=3, last_seen_ns=time.time_ns())
    assert svc.reconcile() == 1
    assert len(flow_cache(client)) == 2 and svc.counters["reoffloaded"] == 1
    svc.handle_records(record(H1, H2, sport=10, event=EV_END, state=5))
    assert flow_cache(client) == {}


def test_idle_timeout_survives_a_failing_fast_path(client: P4Client) -> None:
    svc, ctl = make(client, idle_timeout_s=0.3, tcp_est_timeout_s=60)

    def broken(dels: np.ndarray) -> FlowsResult:
        raise FastPathError("control channel closed by the fast path")

    ctl.flow_del = broken  # type: ignore[method-assign]
    svc.handle_records(record(H1, H2, sport=11))
    wait_idle_out(client)  # the hardware side still goes
    assert svc.counters["idle_removed"] == 0 and svc.counters["idle_kept"] == 1


def test_policy_change_resimulates(client: P4Client) -> None:
    resolved = resolve(load_policy(POLICY))
    svc, ctl = make(client)
    svc.load_policy(resolved)
    web, other = rule_id(resolved, "web"), rule_id(resolved, "other")
    svc.handle_records(
        np.concatenate([record(H1, H2, sport=5, rule_id=web), record(H1, H3, rule_id=other)])
    )
    before = flow_cache(client)
    assert len(before) == 4
    # remove the rule that allowed h1 -> h3; the fast path had forgotten that flow already
    edited = POLICY.replace(
        "{name: other, source: h1, destination: h3", "{name: other, source: h3, destination: h1"
    )
    report = svc.load_policy(resolve(load_policy(edited)))
    after = flow_cache(client)
    assert set(after) == {k(H1, H2, 6, 5, 5001), k(H2, H1, 6, 5001, 5)}
    assert all(after[key] == before[key] for key in after)  # untouched
    assert (report.offloaded_checked, report.offloads_removed, report.offloads_updated) == (2, 1, 0)
    assert report.seconds > 0 and len(ctl.loaded) == 2
    assert svc.store.get(tuple(k(H1, H3, 6, 40000, 5001))).offloaded is False  # type: ignore[arg-type, union-attr]


def test_policy_change_from_fastpath_resimulation(client: P4Client) -> None:
    policy = Policy(
        sections=(Section("s", (Rule("all", None, None, "allow"),)),), default_action="drop"
    )
    resolved = resolve(policy)
    svc, ctl = make(client)
    svc.load_policy(resolved)
    rid = resolved.rules[0].rule_id
    svc.handle_records(record(H1, H2, 17, sport=1, dport=53, rule_id=rid))
    # the fast path reports the flow gone (END, new verdict drop): its entries go
    ctl.resim = record(H1, H2, 17, sport=1, dport=53, verdict=ACT_DROP, event=EV_END, state=7)
    report = svc.load_policy(resolved)
    assert report.fastpath_removed == 1 and flow_cache(client) == {}


def test_bad_options_are_refused(client: P4Client) -> None:
    with pytest.raises(ServiceError, match="at least the hardware idle timeout"):
        ServiceOptions(3, ctrl_path="x", idle_timeout_s=100, tcp_est_timeout_s=10).check()
    with pytest.raises(ServiceError, match="backend"):
        ServiceOptions(3, ctrl_path="x", backend="gpu").check()  # type: ignore[arg-type]
    with pytest.raises(ServiceError, match="interface"):
        ServiceOptions(3).check()


def test_record_from_the_previous_rules_is_not_offloaded(client: P4Client) -> None:
    resolved = resolve(load_policy(POLICY))
    svc, _ = make(client)
    svc.load_policy(resolved)
    other = rule_id(resolved, "other")
    decided = time.time_ns()
    edited = POLICY.replace(
        "other, source: h1, destination: h3", "other, source: h3, destination: h1"
    )
    svc.load_policy(resolve(load_policy(edited)))
    # NEW for h1 -> h3, decided before the change but arriving after its resimulation
    late = record(H1, H3, rule_id=other)
    late["first_seen_ns"] = decided
    fresh = record(H1, H2, sport=6, rule_id=rule_id(resolved, "web"))
    fresh["first_seen_ns"] = decided
    svc.handle_records(np.concatenate([late, fresh]))
    assert set(flow_cache(client)) == {k(H1, H2, 6, 6, 5001), k(H2, H1, 6, 5001, 6)}


# -- denied flows --------------------------------------------------------------------------


def drops(client: P4Client) -> dict[tuple[int, ...], int]:
    """flow_drop entries in the target: key -> rule id."""
    return {
        key: e.params_dict["rule_id"]
        for key, e in flow_cache(client).items()
        if e.action == names.FLOW_DROP
    }


def denied(src: str, dst: str, dport: int, sport: int = 40000, rule: int = 0) -> np.ndarray:
    return record(src, dst, sport=sport, dport=dport, rule_id=rule, verdict=ACT_DROP)


def test_a_denied_flow_seen_twice_is_dropped_in_the_target(client: P4Client) -> None:
    svc, _ = make(client, idle_timeout_s=20)
    svc.load_policy(resolve(load_policy(POLICY)))
    svc.handle_records(denied(H2, H1, 22))
    svc.handle_records(denied(H3, H1, 23))  # a one-packet probe: never an entry
    assert drops(client) == {}
    svc.handle_records(denied(H2, H1, 22))
    assert drops(client) == {k(H2, H1, 6, 40000, 22): 0}
    (entry,) = svc.offloaded_drops()
    assert entry.idle_timeout_ns == 20 * 10**9 and entry.action == names.FLOW_DROP
    svc.handle_records(denied(H2, H1, 22))  # in flight before the entry landed: no rewrite
    assert svc.counters["drops_offloaded"] == 1 and svc.counters["write_errors"] == 0
    # rejects must be answered by the service: never offloaded
    reject = record(H2, H1, dport=25, verdict=3)
    svc.handle_records(np.concatenate([reject, reject, reject]))
    assert set(drops(client)) == {k(H2, H1, 6, 40000, 22)}


def test_drop_entries_are_limited_oldest_out(client: P4Client) -> None:
    svc, _ = make(client, drop_offload=3, drop_offload_after=1)
    svc.load_policy(resolve(load_policy(POLICY)))
    svc.handle_records(np.concatenate([denied(H2, H1, port) for port in range(100, 105)]))
    assert set(drops(client)) == {k(H2, H1, 6, 40000, p) for p in (102, 103, 104)}
    assert svc.counters["drops_offloaded"] == 3  # the first two were never written
    svc.handle_records(denied(H2, H1, 105))
    assert set(drops(client)) == {k(H2, H1, 6, 40000, p) for p in (103, 104, 105)}
    off, _ = make(client, drop_offload=0, drop_offload_after=1)
    off.handle_records(denied(H3, H1, 106))
    assert k(H3, H1, 6, 40000, 106) not in drops(client)


def test_an_allowed_flow_clears_a_drop_entry_on_its_reply_key(client: P4Client) -> None:
    resolved = resolve(load_policy(POLICY))
    svc, _ = make(client, drop_offload_after=1)
    svc.load_policy(resolved)
    svc.handle_records(denied(H2, H1, 40000, sport=5001))  # h2 -> h1 is denied ...
    assert set(drops(client)) == {k(H2, H1, 6, 5001, 40000)}
    svc.handle_records(record(H1, H2, rule_id=rule_id(resolved, "web")))  # ... its reply is not
    cache = flow_cache(client)
    assert set(cache) == {k(H1, H2, 6, 40000, 5001), k(H2, H1, 6, 5001, 40000)}
    assert all(e.action == names.FLOW_ALLOW for e in cache.values())
    assert svc.offloaded_drops() == []
    # and a later drop record on an allowed flow's key never overwrites it
    svc.handle_records(denied(H2, H1, 40000, sport=5001))
    assert drops(client) == {} and svc.offloaded_drops() == []


def test_policy_change_deletes_drops_the_new_rules_do_not_make(client: P4Client) -> None:
    svc, _ = make(client, drop_offload_after=1)
    svc.load_policy(resolve(load_policy(POLICY)))
    svc.handle_records(np.concatenate([denied(H1, H3, 80), denied(H1, H3, 81)]))
    assert len(drops(client)) == 2
    edited = POLICY.replace(
        "destination: h3, protocol: tcp, ports: [5001]",
        "destination: h3, protocol: tcp, ports: [80, 5001]",
    )
    report = svc.load_policy(resolve(load_policy(edited)))
    assert report.drops_removed == 1
    assert set(drops(client)) == {k(H1, H3, 6, 40000, 81)}
    # a drop record decided by the old rules, arriving after the change, is checked again
    stale = denied(H1, H3, 80)
    stale["first_seen_ns"] = 1
    svc.handle_records(stale)
    assert set(drops(client)) == {k(H1, H3, 6, 40000, 81)}


def test_an_idle_drop_entry_is_deleted(client: P4Client) -> None:
    svc, ctl = make(client, drop_offload_after=1)
    svc.load_policy(resolve(load_policy(POLICY)))
    svc.handle_records(denied(H2, H1, 22))
    (entry,) = svc.offloaded_drops()
    svc.on_idle_timeout([entry])
    assert drops(client) == {} and svc.offloaded_drops() == []
    assert ctl.deleted == []  # the fast path keeps no state for denied flows: no FLOW_DEL


def test_drop_offload_options_are_checked(client: P4Client) -> None:
    with pytest.raises(ServiceError, match="drop offload"):
        make(client, drop_offload_after=0)
    with pytest.raises(ServiceError, match="drop offload"):
        make(client, drop_offload=-1)


def test_nicfw_service_shows_the_controller_and_fast_path_counters(
    client: P4Client, tmp_path: Any
) -> None:
    from click.testing import CliRunner

    from controlplane.api import ControlServer, TagService
    from controlplane.cli import cli
    from controlplane.inventory import Inventory

    resolved = resolve(load_policy(POLICY))
    svc, ctl = make(client, drop_offload_after=1)
    svc.load_policy(resolved)
    svc.handle_records(record(H1, H2, rule_id=rule_id(resolved, "web")))
    svc.handle_records(denied(H2, H1, 22))
    ctl.stats = lambda: {"rx": 7, "drop.default": 1}  # type: ignore[method-assign]
    tags = TagService(Inventory(load_policy(POLICY)), lambda diff: None)
    tags.extra_ops["service.stats"] = svc.api_stats
    path = str(tmp_path / "control.sock")
    server = ControlServer(path, tags, tick=0.05)
    server.start()
    try:
        out = CliRunner().invoke(cli, ["service", "--json", "--socket", path])
        assert out.exit_code == 0, out.output
        stats = json.loads(out.output)
        assert stats["fastpath"] == {"rx": 7, "drop.default": 1}
        c = stats["controller"]
        assert (c["offloaded"], c["flows_offloaded_now"]) == (1, 1)
        assert (c["drops_offloaded"], c["drop_entries_now"]) == (1, 1)
        assert c["offload_latency_samples"] == 0  # the test's records carry no first-seen time
        table = CliRunner().invoke(cli, ["service", "--socket", path])
        assert table.exit_code == 0 and "drops_offloaded" in table.output and "rx" in table.output

        def unreachable() -> dict[str, Any]:
            raise OSError("fast path gone")

        ctl.stats = unreachable  # type: ignore[method-assign]
        gone = json.loads(CliRunner().invoke(cli, ["service", "--json", "--socket", path]).output)
        assert gone["fastpath"] == {"error": "fast path gone"} and gone["controller"]["offloaded"]
    finally:
        server.stop()
    missing = CliRunner().invoke(cli, ["service", "--socket", str(tmp_path / "none.sock")])
    assert missing.exit_code != 0 and "cannot reach" in missing.output
