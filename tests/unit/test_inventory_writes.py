"""Tag changes write in proportion to what changed: never a full rewrite, verdicts still right.

Many random tag moves (attach/detach of a dynamic tag, tier swaps, app moves) on a policy whose
groups overlap more than the class-id bits hold one per group, so fields fill up, take free
bits, reclaim values and spill into other fields along the way. After each event:

- the writes (inserts + modifies + deletes) stay within the bound below;
- no class-id field was laid out again and no classification table rebuilt;
- the tables give the reference evaluator's verdict for packets between workloads.

The bound, per event: one classification entry per table for each address of the changed
workload, plus, for each rule naming a group the workload is in before or after the event,
every entry of that rule before and after (its codes may have grown: it is rewritten whole).
A new combination of groups gives new codes only to groups the changed workload is in, so
rules over any other group, and every other workload's class entries, must not be written.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import random

import pytest

from controlplane.inventory import Inventory, TagAttached, TagDetached, WorkloadUp
from controlplane.policy import Criteria, Group, Policy, Rule, Section, Workload
from controlplane.policy.model import ServiceTerm
from offload.compiler import CompileOptions, Packet, ResolvedPolicy, Tables, evaluate

TIERS = ("web", "app", "db")
APPS = 12
PER_APP = 6


def _policy(seed: int) -> Policy:
    rng = random.Random(seed)
    workloads = []
    for i in range(APPS * PER_APP):
        app, k = divmod(i, PER_APP)
        addrs: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...] = (
            ipaddress.IPv4Address(f"10.0.{app}.{k + 10}"),
        )
        if i % 3 == 0:
            addrs += (ipaddress.IPv6Address(f"2001:db8:{app:x}::{k + 10:x}"),)
        workloads.append(
            Workload(f"vm{i}", addrs, frozenset({f"app{app}", TIERS[i % 3], f"env{app % 2}"}))
        )
    names_ = [w.name for w in workloads]
    groups = [Group("quarantined", match=(Criteria(frozenset({"quarantine"})),))]
    for a in range(APPS):
        groups.append(Group(f"app{a}", match=(Criteria(frozenset({f"app{a}"})),)))
        for t in TIERS[:2]:
            groups.append(Group(f"app{a}-{t}", match=(Criteria(frozenset({f"app{a}", t})),)))
    groups += [Group(f"all-{t}", match=(Criteria(frozenset({t})),)) for t in TIERS]
    groups += [Group(f"env{e}", match=(Criteria(frozenset({f"env{e}"})),)) for e in range(2)]
    for s in range(10):
        members = tuple(sorted(rng.sample(names_, rng.randint(3, 8))))
        groups.append(Group(f"static{s}", members=members))
    for s in range(4):
        nets = (ipaddress.ip_network(f"10.0.{rng.randrange(APPS)}.0/24"),)
        groups.append(Group(f"subnet{s}", addresses=nets))
    group_names = [g.name for g in groups]
    rules = [
        Rule("q-out", ("quarantined",), None, "drop"),
        Rule("q-in", None, ("quarantined",), "drop"),
    ]
    for r in range(90):
        src = tuple(dict.fromkeys(rng.sample(group_names, rng.choice((1, 1, 2)))))
        dst = (rng.choice(group_names),)
        port = rng.choice((22, 80, 443, 5432, 8080))
        action = rng.choice(("allow", "allow", "drop"))
        inline = (ServiceTerm(6, ((port, port),)),)
        rules.append(Rule(f"r{r}", src, dst, action, inline=inline))  # type: ignore[arg-type]
    return Policy(
        workloads=tuple(workloads),
        groups=tuple(groups),
        sections=(Section("main", tuple(rules)),),
        default_action="drop",
    )


def _groups_of(resolved: ResolvedPolicy, name: str) -> set[str]:
    return {g for g, ag in resolved.groups.items() if name in ag.workloads}


def _bound(inv: Inventory, before: ResolvedPolicy, old_acl: dict[int, int], name: str) -> int:
    after = inv.resolved
    groups = _groups_of(before, name) | _groups_of(after, name)
    addresses = {
        a for rw in (*before.workloads, *after.workloads) if rw.name == name for a in rw.addresses
    }
    bound = 2 * len(addresses)  # src_class and dst_class
    for rule in after.rules:
        named = {*(rule.sources or ()), *(rule.destinations or ())}
        if named & groups:
            bound += old_acl.get(rule.rule_id, 0) + len(inv.compiled.acl.get(rule.rule_id, ()))
    return bound


def _event(rng: random.Random, inv: Inventory, names_: list[str]) -> tuple[str, object]:
    w = inv.workload(rng.choice(names_))
    roll = rng.random()
    if roll < 0.35:
        dynamic = inv.tags.tags_of(w.name)
        if "quarantine" in dynamic:
            return w.name, TagDetached(w.name, "quarantine")
        return w.name, TagAttached(w.name, "quarantine")
    if roll < 0.8:  # a tier swap, or a second tier on top (groups then overlap more)
        tier = rng.choice(TIERS)
        tags = w.tags - set(TIERS) | {tier} if rng.random() < 0.7 else w.tags | {tier}
    else:  # the workload moves to another application
        tags = {t for t in w.tags if not t.startswith("app")} | {f"app{rng.randrange(APPS)}"}
    reported = dataclasses.replace(w, tags=frozenset(tags) - inv.tags.tags_of(w.name))
    return w.name, WorkloadUp(reported)


@pytest.mark.parametrize(("seed", "bits"), [(1, 32), (2, 40), (3, 32)])
def test_random_tag_moves_write_within_the_bound_and_keep_verdicts(seed: int, bits: int) -> None:
    policy = _policy(seed)
    inv = Inventory(policy, CompileOptions(class_bits=bits))
    # Tight enough that groups share fields (no bitmap), loose enough for a few free bits.
    assert inv.compiled.stats.src_encoding != "bitmap"
    rng = random.Random(seed)
    names_ = [w.name for w in policy.workloads]
    worst = 0.0
    grew = 0
    for step in range(160):
        before = inv.resolved
        old_acl = {rid: len(e) for rid, e in inv.compiled.acl.items()}
        old_codes = inv.compiled.src_class.encoding.codes
        name, event = _event(rng, inv, names_)
        writes = inv.apply(event)  # type: ignore[arg-type]
        assert inv.compiler.relaid_fields == 0 and inv.compiler.rebuilt_tables == 0, step
        written = len(writes.inserts) + len(writes.modifies) + len(writes.deletes)
        bound = _bound(inv, before, old_acl, name)
        assert written <= bound, (step, event, written, bound)
        worst = max(worst, written / max(1, bound))
        grew += inv.compiled.src_class.encoding.codes is not old_codes
        if step % 8 == 0:
            tables = Tables(inv.compiled.entries())
            workloads = inv.resolved.workloads
            for _ in range(12):
                s, d = rng.choice(workloads), rng.choice(workloads)
                pkt = Packet(
                    str(ipaddress.ip_address(_v4(s.addresses[0]))),
                    str(ipaddress.ip_address(_v4(d.addresses[0]))),
                    6,
                    1000,
                    rng.choice((22, 80, 443, 5432, 8080)),
                )
                assert tables.verdict(*pkt) == evaluate(inv.resolved, pkt), (step, pkt)
    assert grew > 0  # codes did change along the way: the bound was exercised, not idle


def _v4(key: int) -> int:
    return key & 0xFFFFFFFF if key >> 32 == 0xFFFF else key
