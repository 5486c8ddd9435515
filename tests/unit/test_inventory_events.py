"""Inventory events: each gives the minimal table diff, and tables that mean the right thing."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from controlplane.inventory import (
    InstanceCreated,
    InstanceDeleted,
    Inventory,
    InventoryError,
    TagAttached,
    TagDetached,
    WorkloadDown,
    WorkloadMoved,
    WorkloadUp,
)
from controlplane.policy import (
    Criteria,
    Group,
    Instance,
    Policy,
    Rule,
    Section,
    Workload,
    analysis,
    load_policy,
    load_policy_file,
)
from controlplane.policy.analysis import Flip
from offload import names
from offload.compiler import CompileOptions, Tables

EXAMPLE = Path(__file__).parent / "golden" / "templates_policy.yaml"
TCP = 6


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def inventory(clock: Clock | None = None, **options: object) -> Inventory:
    return Inventory(
        load_policy_file(EXAMPLE),
        CompileOptions(**options),  # type: ignore[arg-type]
        clock or Clock(),
    )


def verdict(inv: Inventory, src: str, dst: str, port: int) -> str:
    return Tables(inv.compiled.entries()).verdict(src, dst, TCP, 1000, port).action


def test_quarantine_tag_cuts_traffic_and_detaching_restores_it() -> None:
    inv = inventory()
    assert verdict(inv, "10.0.1.1", "10.0.2.1", 8080) == "allow"
    writes = inv.apply(TagAttached("app-a", "quarantine"))
    assert verdict(inv, "10.0.1.1", "10.0.2.1", 8080) == "drop"
    assert verdict(inv, "10.0.2.1", "10.0.3.1", 5432) == "drop"
    # Only app-a's classification entries change: no ACL entry, no other workload's entry.
    assert writes.inserts == [] and writes.deletes == []
    assert {e.table for e in writes.modifies} <= {names.SRC_CLASS, names.DST_CLASS}
    assert len(writes.modifies) <= 2
    inv.apply(TagDetached("app-a", "quarantine"))
    assert verdict(inv, "10.0.1.1", "10.0.2.1", 8080) == "allow"


def test_tags_expire() -> None:
    clock = Clock()
    inv = inventory(clock)
    inv.apply(TagAttached("web-b", "quarantine", expires_in=30))
    assert verdict(inv, "10.0.1.2", "10.0.2.2", 8080) == "drop"
    assert len(inv.expire()) == 0  # not yet
    clock.now += 31
    assert len(inv.expire()) > 0
    assert verdict(inv, "10.0.1.2", "10.0.2.2", 8080) == "allow"
    assert len(inv.tags) == 0


def test_a_new_instance_of_fifty_vms_gets_the_template_rules() -> None:
    inv = inventory()
    vms = tuple(
        Workload(
            f"vm-{i}",
            (ipaddress.ip_address(f"10.5.{i // 100}.{i % 100 + 1}"),),
            frozenset({("web", "app", "db")[i % 3]}),
        )
        for i in range(50)
    )
    writes = inv.apply(InstanceCreated(Instance("shop-c", "three-tier"), vms))
    # web vm-0 -> app vm-1 in shop-c; never across to shop-a.
    assert verdict(inv, "10.5.0.1", "10.5.0.2", 8080) == "allow"
    assert verdict(inv, "10.5.0.1", "10.0.2.1", 8080) == "drop"
    acl_writes = [e for e in writes.inserts if e.table == names.ACL]
    assert len(acl_writes) == 2  # web-to-app@shop-c and app-to-db@shop-c, one entry each
    inv.apply(InstanceDeleted("shop-c"))
    assert verdict(inv, "10.5.0.1", "10.5.0.2", 8080) == "drop"
    assert all(not n.startswith("vm-") for n in (w.name for w in inv.current.workloads))


def test_workload_up_down_and_moved() -> None:
    inv = inventory(host="h1")
    web = Workload(
        "web-z", (ipaddress.ip_address("10.0.1.9"),), frozenset({"web"}), "h1", instance="shop-a"
    )
    inv.apply(WorkloadUp(web))
    assert verdict(inv, "10.0.1.9", "10.0.2.1", 8080) == "allow"
    before = len(inv.compiled.src_class.entries)
    inv.apply(WorkloadMoved("web-z", "h2"))
    assert len(inv.compiled.src_class.entries) <= before
    inv.apply(WorkloadDown("web-z"))
    assert verdict(inv, "10.0.1.9", "10.0.2.1", 8080) == "drop"


@pytest.mark.parametrize(
    ("event", "message"),
    [
        (TagAttached("nobody", "x"), "unknown workload"),
        (TagAttached("web-a", "bad tag!"), "not a valid tag"),
        (TagAttached("web-a", "x", expires_in=-1), "positive"),
        (TagDetached("web-a", "never-attached"), "no dynamic tag"),
        (InstanceCreated(Instance("shop-a", "three-tier")), "exists already"),
        (InstanceCreated(Instance("i", "no-such-template")), "unknown template"),
        (InstanceDeleted("nope"), "unknown instance"),
        (
            WorkloadUp(Workload("dup", (ipaddress.ip_address("10.0.1.1"),))),
            "also belongs to web-a",
        ),
    ],
)
def test_bad_events_raise_and_change_nothing(event: object, message: str) -> None:
    inv = inventory()
    inv.apply(TagAttached("db-b", "keep", expires_in=60))
    before, state = inv.compiled, inv.current
    with pytest.raises(InventoryError, match=message):
        inv.apply(TagAttached("web-b", "quarantine"), event)  # type: ignore[arg-type]
    assert inv.compiled is before and inv.current is state
    assert [g.tag for g in inv.tags] == ["keep"]
    assert verdict(inv, "10.0.1.2", "10.0.2.2", 8080) == "allow"
    inv.apply(TagAttached("web-b", "quarantine"))  # still incremental and consistent after
    assert verdict(inv, "10.0.1.2", "10.0.2.2", 8080) == "drop"


def test_dry_run_reports_without_changing() -> None:
    inv = inventory()
    before = inv.compiled
    run = inv.dry_run(TagAttached("app-a", "quarantine"))
    assert inv.compiled is before and len(inv.tags) == 0
    assert run.workloads == {"app-a"}
    assert {"quarantined", "app"} & run.groups == {"quarantined"}
    assert len(run.diff) > 0 and run.rules == frozenset()
    assert len(inv.apply(TagAttached("app-a", "quarantine"))) == len(run.diff)


def test_dry_run_lists_the_workload_pairs_whose_verdict_flips_per_host() -> None:
    inv = inventory()
    run = inv.dry_run(TagAttached("app-a", "quarantine"))
    # From the policy: web-a -> app-a tcp/8080 (both on h1), app-a -> db-a tcp/5432 (h1 and
    # h2 filter it), bastion (no host) -> app-a tcp/22 (filtered on h1) are allowed until
    # app-a is quarantined; shop-b's pairs and anything app-a could not reach stay as they were.
    assert set(run.reachability) == {
        Flip("web-a", "app-a", TCP, 8080, "allow", "drop", "h1"),
        Flip("app-a", "db-a", TCP, 5432, "allow", "drop", "h1"),
        Flip("app-a", "db-a", TCP, 5432, "allow", "drop", "h2"),
        Flip("bastion", "app-a", TCP, 22, "allow", "drop", "h1"),
    }
    assert run.reachability_complete
    inv.apply(TagAttached("app-a", "quarantine"))
    back = inv.dry_run(TagDetached("app-a", "quarantine"))
    assert {(f.src, f.dst, f.port, f.host, f.before, f.after) for f in back.reachability} == {
        (f.src, f.dst, f.port, f.host, "drop", "allow") for f in run.reachability
    }
    # A move changes which hosts filter, but no rule here is host-scoped: nothing flips.
    assert inv.dry_run(WorkloadMoved("web-b", "h1")).reachability == ()


def test_dry_run_reachability_evaluates_host_scoped_rules_on_each_end() -> None:
    inv = Inventory(
        load_policy(
            """\
workloads:
  a: {addresses: [10.0.0.1], host: h1}
  b: {addresses: [10.0.0.2], host: h2}
groups:
  gb: {members: [b]}
  marked: {match: {tags: [x]}}
sections:
  - name: s
    rules:
      - {name: cut, source: any, destination: marked, action: drop, applied_to: [gb]}
      - {name: rest, source: any, destination: any, action: allow}
"""
        )
    )
    run = inv.dry_run(TagAttached("a", "x"))
    # `cut` is installed on h2 only: b -> a is dropped by b's NIC, a's NIC (h1) still allows.
    assert run.reachability == (Flip("b", "a", TCP, 0, "allow", "drop", "h2"),)


def test_dry_run_reachability_is_bounded_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    inv = inventory()
    monkeypatch.setattr(analysis, "MAX_PROBES", 3)
    run = inv.dry_run(TagAttached("app-a", "quarantine"))
    assert not run.reachability_complete and len(run.reachability) <= 3


def test_a_patched_workload_entry_keeps_what_it_inherits_from_enclosing_blocks() -> None:
    # w1 sits inside group blk's block; tagging it patches its /128 entry, which must still
    # carry blk's membership once the tag is gone again.
    ws = (Workload("w1", (ipaddress.ip_address("10.0.0.1"),)),)
    groups = (
        Group("blk", addresses=(ipaddress.ip_network("10.0.0.0/30"),)),
        Group("t", match=(Criteria(frozenset({"x"})),)),
    )
    rules = (Rule("r0", ("t",), None, "drop"), Rule("r1", ("blk",), None, "allow"))
    inv = Inventory(Policy(ws, groups, (), (Section("s", rules),), "drop"))
    pkt = ("10.0.0.1", "192.0.2.1", TCP, 1, 1)
    inv.apply(TagAttached("w1", "x"))
    assert Tables(inv.compiled.entries()).verdict(*pkt).action == "drop"
    inv.apply(TagDetached("w1", "x"))
    assert inv.compiler.incremental_tables >= 2  # patched, not rebuilt
    assert Tables(inv.compiled.entries()).verdict(*pkt).action == "allow"


def test_a_workload_a_group_names_cannot_go_down() -> None:
    ws = (Workload("w1", (ipaddress.ip_address("10.0.0.1"),)),)
    inv = Inventory(Policy(ws, (Group("pinned", members=("w1",)),)))
    with pytest.raises(InventoryError, match="named by group pinned"):
        inv.apply(WorkloadDown("w1"))
    assert [w.name for w in inv.current.workloads] == ["w1"]
