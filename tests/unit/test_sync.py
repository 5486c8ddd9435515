"""Desired-state sync: the diff by P4Runtime identity, and writing it to an in-memory device."""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from offload import names
from offload.entries import Entry, Exact, Lpm, Optional
from offload.p4client import DELETE, INSERT, MODIFY
from offload.p4entity import EntityError, TableEntryEncoder, decode_table_entry
from offload.p4errors import NotPrimary, UpdateError
from offload.p4schema import P4Schema
from offload.proto import p4r, rpc_code
from offload.sync import Diff, DiffError, SyncError, apply_diff, diff, sync

SCHEMA = P4Schema.load()


def acl(proto: int, rule: int, prio: int = 10, action: str = names.ACL_ALLOW) -> Entry:
    return Entry.make(
        names.ACL, {"ip_proto": Optional(proto)}, action, {"rule_id": rule}, priority=prio
    )


def src(net: int, plen: int, cls: int) -> Entry:
    value = ((0xFFFF << 32) | net << 24) >> (128 - plen) << (128 - plen)
    return Entry.make(
        names.SRC_CLASS,
        {"ip_src": Lpm(value, plen)},
        names.SET_SRC_CLASS,
        {"class_id": cls, "workload_id": 0},
    )


def acl_default(rule: int, action: str = names.ACL_DROP) -> Entry:
    return Entry.make(names.ACL, None, action, {"rule_id": rule}, is_default=True)


# -- diff -----------------------------------------------------------------------------------


def test_diff_sorts_entries_into_inserts_modifies_deletes() -> None:
    actual = [acl(6, 1), acl(17, 2), acl(1, 3)]
    desired = [acl(6, 1), acl(17, 20), acl(50, 4)]
    d = diff(desired, actual)
    assert d.inserts == [acl(50, 4)]
    assert d.modifies == [acl(17, 20)]
    assert d.deletes == [acl(1, 3)]
    assert d.unchanged == 1
    assert len(d) == 3


def test_priority_is_part_of_the_key_and_action_is_not() -> None:
    d = diff([acl(6, 1, prio=11)], [acl(6, 1, prio=10)])
    assert (len(d.inserts), len(d.deletes), len(d.modifies)) == (1, 1, 0)
    d = diff([acl(6, 1, action=names.ACL_DROP)], [acl(6, 1)])
    assert d.modifies == [acl(6, 1, action=names.ACL_DROP)] and not d.inserts


def test_idle_timeout_change_is_a_modify() -> None:
    base = Entry.make(
        names.FLOW_CACHE,
        {n: Exact(1) for n in ("ip_src", "ip_dst", "ip_proto", "l4_src", "l4_dst")},
        names.FLOW_ALLOW,
        {"rule_id": 1},
        idle_timeout_ns=10,
    )
    longer = Entry.make(
        base.table, base.match_dict, base.action, base.params_dict, idle_timeout_ns=20
    )
    assert diff([longer], [base]).modifies == [longer]


def test_default_entries_are_modified_never_inserted_or_deleted() -> None:
    assert diff([acl_default(5)], []).modifies == [acl_default(5)]
    assert diff([acl_default(0)], [acl_default(0)]).unchanged == 1
    assert len(diff([], [acl_default(3)])) == 0  # an unmentioned default is left alone


def test_default_entry_and_keyless_lpm_entry_are_different_entries() -> None:
    catch_all = Entry.make(
        names.SRC_CLASS, None, names.SET_SRC_CLASS, {"class_id": 1, "workload_id": 0}
    )
    default = Entry.make(names.SRC_CLASS, None, names.NO_ACTION, is_default=True)
    assert catch_all.key == default.key
    d = diff([catch_all, default], [default])
    assert d.inserts == [catch_all] and d.unchanged == 1


def test_contradictory_desired_state_is_refused() -> None:
    with pytest.raises(DiffError, match="share one key"):
        diff([acl(6, 1), acl(6, 2)], [])
    assert len(diff([acl(6, 1), acl(6, 1)], [])) == 1  # an exact duplicate is harmless


entry_pool = st.one_of(
    st.builds(acl, st.integers(0, 5), st.integers(0, 2), st.sampled_from([10, 20])),
    st.builds(src, st.integers(1, 4), st.sampled_from([8, 16, 24]), st.integers(0, 2)),
    st.builds(acl_default, st.integers(0, 2)),
)


def unique(entries: Iterable[Entry]) -> list[Entry]:
    """One entry per identity (the last wins), as a device holds them."""
    return list({(e.key, e.is_default): e for e in entries}.values())


@settings(max_examples=300)
@given(st.lists(entry_pool, max_size=25), st.lists(entry_pool, max_size=25))
def test_applying_the_diff_to_actual_yields_desired(want: list[Entry], have: list[Entry]) -> None:
    desired, actual = unique(want), unique(have)
    d = diff(desired, actual)
    result = d.apply_to(actual)
    kept_defaults = [
        e
        for e in actual
        if e.is_default and not any(x.is_default and x.key == e.key for x in desired)
    ]
    assert sorted(map(repr, result)) == sorted(map(repr, desired + kept_defaults))
    # minimal: every desired entry is written at most once, nothing equal is rewritten
    assert d.unchanged + len(d.modifies) + len(d.inserts) == len(desired)
    assert not set(d.modifies) & set(actual)
    assert len(diff(desired, desired)) == 0


# -- apply_diff and sync against an in-memory device ------------------------------------------


class Pending:
    """A request in flight on a MemoryDevice."""

    def __init__(self, device: MemoryDevice, request: p4r.WriteRequest, offset: int) -> None:
        self.device, self.request, self.offset = device, request, offset
        self.outcome: list[UpdateError] | Exception | None = None

    def result(self) -> list[UpdateError]:
        if self.outcome is None:
            self.device.answer_all()
        assert self.outcome is not None
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


class MemoryDevice:
    """A P4Runtime device reduced to what sync uses: it applies updates and answers reads.

    Requests sent without waiting (`submit_serialized`) stay in flight until an answer is asked
    for; then every request in flight is applied, the latest first (a target may apply
    concurrent requests in any order), and the kinds of update in flight together are recorded.
    """

    def __init__(self, batch_size: int = 3, refuse_from_batch: int | None = None) -> None:
        self.batch_size = batch_size
        self.entries: dict[tuple, Entry] = {}
        self.defaults: dict[str, Entry] = {}
        self.requests: list[list[tuple[int, Entry]]] = []
        self.refuse_from_batch = refuse_from_batch
        self.reject: set[Entry] = set()  # entries it refuses as INVALID_ARGUMENT
        self.reads = 0
        self.in_flight: list[Pending] = []
        self.max_in_flight = 0
        self.kinds_in_flight: list[set[int]] = []
        self._encoder = TableEntryEncoder(SCHEMA)

    def encoder(self, schema: P4Schema) -> TableEntryEncoder:
        return self._encoder

    def new_write_request(self, atomicity: int = 0) -> p4r.WriteRequest:
        return p4r.WriteRequest(device_id=1)

    def write_serialized(self, data: bytes, offset: int = 0) -> list[UpdateError]:
        return self.write_request(p4r.WriteRequest.FromString(data), offset)

    def submit_serialized(self, data: bytes, offset: int = 0) -> Pending:
        pending = Pending(self, p4r.WriteRequest.FromString(data), offset)
        self.in_flight.append(pending)
        self.max_in_flight = max(self.max_in_flight, len(self.in_flight))
        self.kinds_in_flight.append({u.type for p in self.in_flight for u in p.request.updates})
        return pending

    def answer_all(self) -> None:
        for pending in reversed(self.in_flight):
            try:
                pending.outcome = self.write_request(pending.request, pending.offset)
            except NotPrimary as exc:
                pending.outcome = exc
        self.in_flight.clear()

    def write_request(self, request: p4r.WriteRequest, offset: int = 0) -> list[UpdateError]:
        if self.refuse_from_batch is not None and len(self.requests) >= self.refuse_from_batch:
            self.requests.append([])  # counted, nothing applied
            raise NotPrimary("Write", "not primary")
        batch, errors = [], []
        for i, update in enumerate(request.updates):
            entry = decode_table_entry(SCHEMA, update.entity.table_entry)
            batch.append((update.type, entry))
            code = self._apply(update.type, entry)
            if code:
                errors.append(UpdateError(offset + i, code, f"code {code}", update))
        self.requests.append(batch)
        return errors

    def _apply(self, op: int, entry: Entry) -> int:
        if entry in self.reject:
            return rpc_code.INVALID_ARGUMENT
        if entry.is_default:
            self.defaults[entry.table] = entry
            return 0
        present = entry.key in self.entries
        if op == INSERT:
            if present:
                return rpc_code.ALREADY_EXISTS
            self.entries[entry.key] = entry
        elif not present:
            return rpc_code.NOT_FOUND
        elif op == MODIFY:
            self.entries[entry.key] = entry
        else:
            del self.entries[entry.key]
        return 0

    def read_table_entries(self, schema: P4Schema, table: str | None = None) -> list[Entry]:
        self.reads += 1
        return [e for e in self.entries.values() if table is None or e.table == table]

    def read_default_entry(self, schema: P4Schema, table: str) -> Entry | None:
        return self.defaults.get(table)

    @property
    def ops(self) -> list[int]:
        return [op for batch in self.requests for op, _ in batch]


def run_sync(device: MemoryDevice, desired: list[Entry], **kw: object):
    return sync(device, SCHEMA, desired, **kw)  # type: ignore[arg-type]


def test_sync_writes_only_the_difference_in_order_and_batches() -> None:
    dev = MemoryDevice(batch_size=2)
    first = [acl(p, p) for p in range(5)]
    report = run_sync(dev, first)
    assert (report.inserted, report.batches) == (5, 3)
    assert sorted(len(b) for b in dev.requests) == [1, 2, 2]  # answered out of order
    assert dev.max_in_flight == 3
    dev.requests.clear()
    report = run_sync(dev, first)
    assert report.writes == 0 and report.unchanged == 5 and dev.requests == []
    second = [acl(0, 0), acl(1, 99), acl(3, 3), acl(4, 4), acl(7, 7), acl(8, 8)]
    report = run_sync(dev, second)
    assert (report.deleted, report.modified, report.inserted, report.unchanged) == (1, 1, 2, 3)
    # deletes, then modifies, then inserts, never mixed in one request nor in flight together
    assert dev.ops == [DELETE, MODIFY, INSERT, INSERT]
    assert all(len({op for op, _ in b}) == 1 for b in dev.requests)
    assert all(len(kinds) == 1 for kinds in dev.kinds_in_flight)
    assert sorted(dev.entries.values(), key=repr) == sorted(second, key=repr)


def test_sync_only_touches_managed_tables() -> None:
    dev = MemoryDevice()
    flow = Entry.make(
        names.FLOW_CACHE,
        {n: Exact(2) for n in ("ip_src", "ip_dst", "ip_proto", "l4_src", "l4_dst")},
        names.FLOW_ALLOW,
        {"rule_id": 1},
    )
    dev.entries[flow.key] = flow
    run_sync(dev, [acl(6, 1)], tables=["acl"])  # alias accepted
    assert flow.key in dev.entries
    run_sync(dev, [acl(6, 1)])  # all tables: the flow entry is not desired
    assert flow.key not in dev.entries
    with pytest.raises(ValueError, match="outside the sync"):
        run_sync(dev, [flow], tables=[names.ACL])


def test_sync_sets_default_entries_by_modify() -> None:
    dev = MemoryDevice()
    dev.defaults[names.ACL] = acl_default(0)
    report = run_sync(dev, [acl_default(7, names.ACL_REJECT)], tables=[names.ACL])
    assert report.modified == 1 and dev.ops == [MODIFY]
    assert dev.defaults[names.ACL] == acl_default(7, names.ACL_REJECT)


def test_failed_updates_are_reported_by_entry_and_the_rest_land() -> None:
    dev = MemoryDevice(batch_size=2)
    bad = acl(3, 3)
    dev.reject.add(bad)
    desired = [acl(p, p) for p in range(6)]
    with pytest.raises(SyncError) as info:
        run_sync(dev, desired)
    report = info.value.report
    assert [(f.op, f.entry, f.code) for f in report.failures] == [
        ("INSERT", bad, rpc_code.INVALID_ARGUMENT)
    ]
    assert report.inserted == 5 and not report.ok
    assert "INSERT FirewallIngress.acl.acl failed: INVALID_ARGUMENT" in str(info.value)
    assert set(dev.entries.values()) == set(desired) - {bad}
    quiet = run_sync(dev, desired, raise_on_failure=False)  # retries only the missing one
    assert len(quiet.failures) == 1 and quiet.unchanged == 5


def test_whole_request_refusal_reports_what_was_not_sent() -> None:
    dev = MemoryDevice(batch_size=2, refuse_from_batch=1)
    with pytest.raises(SyncError) as info:
        run_sync(dev, [acl(p, p) for p in range(5)], window=1)
    report = info.value.report
    assert (report.inserted, report.not_attempted) == (2, 3)
    assert isinstance(info.value.cause, NotPrimary)
    assert len(dev.requests) == 2  # nothing sent after the refusal


def test_refusal_with_requests_in_flight_counts_each_request_by_its_answer() -> None:
    # Requests are answered latest first: of the three in flight, the last is applied and the
    # two before are refused; nothing is sent after the refusal.
    dev = MemoryDevice(batch_size=2, refuse_from_batch=1)
    desired = [acl(p, p) for p in range(9)]
    with pytest.raises(SyncError) as info:
        run_sync(dev, desired, window=3)
    report = info.value.report
    landed = set(dev.entries.values())
    assert landed == {acl(4, 4), acl(5, 5)}
    assert report.inserted == len(landed) and report.not_attempted == len(desired) - len(landed)
    assert len(dev.requests) == 3 and not report.failures


@pytest.mark.parametrize("window", [1, 2, 4])
def test_failures_are_named_by_entry_with_any_number_in_flight(window: int) -> None:
    dev = MemoryDevice(batch_size=3)
    desired = [acl(p, p) for p in range(20)]
    bad = {desired[i] for i in (1, 7, 8, 19)}
    dev.reject |= bad
    report = run_sync(dev, desired, window=window, raise_on_failure=False)
    assert {f.entry for f in report.failures} == bad
    assert all(f.op == "INSERT" and f.code == rpc_code.INVALID_ARGUMENT for f in report.failures)
    assert report.inserted == 16 and set(dev.entries.values()) == set(desired) - bad
    assert dev.max_in_flight == window


def test_an_entry_in_the_first_batch_that_cannot_be_encoded_changes_nothing() -> None:
    dev = MemoryDevice(batch_size=2)
    desired = [acl(0, 0), acl(300, 1), acl(2, 2)]  # ip_proto is 8 bits
    with pytest.raises(SyncError) as info:
        run_sync(dev, desired)
    assert isinstance(info.value.cause, EntityError) and "8 bits" in str(info.value)
    report = info.value.report
    assert [(f.op, f.entry, f.code) for f in report.failures] == [
        ("INSERT", acl(300, 1), rpc_code.INVALID_ARGUMENT)
    ]
    assert report.not_attempted == 2 and report.writes == 0
    assert dev.requests == [] and dev.entries == {}


def test_an_entry_that_cannot_be_encoded_stops_the_write_after_what_was_sent() -> None:
    dev = MemoryDevice(batch_size=2)
    desired = [acl(p, p) for p in range(5)] + [acl(300, 9), acl(6, 6)]
    with pytest.raises(SyncError) as info:
        run_sync(dev, desired, window=2)
    report = info.value.report
    assert [f.entry for f in report.failures] == [acl(300, 9)]
    # batches [0,1] [2,3] landed; [4, bad] and [6] were never sent
    assert report.inserted == 4 and report.not_attempted == 2
    assert set(dev.entries.values()) == set(desired[:4])
    assert dev.in_flight == []  # every request sent was answered before the raise


def test_window_must_be_positive() -> None:
    with pytest.raises(ValueError, match="window"):
        apply_diff(MemoryDevice(), SCHEMA, Diff(inserts=[acl(1, 1)]), window=0)  # type: ignore[arg-type]


def test_apply_diff_reports_progress_and_does_not_read() -> None:
    dev = MemoryDevice(batch_size=2)
    seen: list[tuple[int, int]] = []
    changes = Diff(inserts=[acl(p, p) for p in range(3)])
    report = apply_diff(dev, SCHEMA, changes, progress=lambda d, t: seen.append((d, t)))  # type: ignore[arg-type]
    assert seen == [(2, 3), (3, 3)]
    assert report.inserted == 3 and dev.reads == 0
    assert report.as_dict()["inserted"] == 3
