"""The live inventory: workloads, dynamic tags and template instances, changed by events.

An `Inventory` holds a policy's groups, rules and templates fixed, and the workloads and
instances that events change. Each event (or batch) goes through one `Resolver` and one
`Compiler`, which recompute only the groups and rules it touches, and comes back as the
minimal `offload.sync.Diff` between the tables before and after. A bad event raises
`InventoryError` and changes nothing.

    inv = Inventory(policy)
    writes = inv.apply(TagAttached("web-1", "quarantine", expires_in=600))
    apply_diff(client, writes)
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from controlplane.dryrun import inventory_flips
from controlplane.policy import PolicyError, Resolver, validate
from controlplane.policy.analysis import Flip
from controlplane.policy.model import Instance, Policy, Workload
from controlplane.tags import TagError, TagGrant, TagStore, check_tag
from offload.compiler import (
    CompiledPolicy,
    CompileError,
    CompileOptions,
    Compiler,
    EncodingError,
    ResolvedPolicy,
)
from offload.compiler.delta import diff
from offload.sync import Diff


class InventoryError(ValueError):
    """An event that cannot be applied; the inventory is unchanged."""


@dataclass(frozen=True, slots=True)
class WorkloadUp:
    """A workload came up (or was updated): its tags include its template's."""

    workload: Workload


@dataclass(frozen=True, slots=True)
class WorkloadDown:
    """A workload went away (its dynamic tags go with it)."""

    name: str


@dataclass(frozen=True, slots=True)
class WorkloadMoved:
    """A workload moved to another host (and pipeline port, MAC unchanged unless given)."""

    name: str
    host: str | None
    port: int | None = None


@dataclass(frozen=True, slots=True)
class TagAttached:
    """A dynamic tag attached to a workload, for `expires_in` seconds (None: until detached)."""

    name: str
    tag: str
    expires_in: float | None = None


@dataclass(frozen=True, slots=True)
class TagDetached:
    """A dynamic tag detached from a workload."""

    name: str
    tag: str


@dataclass(frozen=True, slots=True)
class InstanceCreated:
    """A template instance stamped out, with its workloads (all at once)."""

    instance: Instance
    workloads: tuple[Workload, ...] = ()


@dataclass(frozen=True, slots=True)
class InstanceDeleted:
    """A template instance torn down, its workloads with it."""

    id: str


Event = (
    WorkloadUp
    | WorkloadDown
    | WorkloadMoved
    | TagAttached
    | TagDetached
    | InstanceCreated
    | InstanceDeleted
)


@dataclass(frozen=True)
class DryRun:
    """What events would change: the writes, the workloads whose memberships change (so
    whose reachability may), the groups whose members change, the rules whose entries do,
    and (dry runs only) the sampled verdicts between workloads that flip."""

    diff: Diff
    workloads: frozenset[str]
    groups: frozenset[str]
    rules: frozenset[int]
    reachability: tuple[Flip, ...] = ()
    reachability_complete: bool = True  # False: the probe budget ran out


class Inventory:
    """Workloads, tags and instances over a fixed policy, compiled incrementally."""

    def __init__(
        self,
        policy: Policy,
        options: CompileOptions | None = None,
        clock: Callable[[], float] = time.time,
        tags: TagStore | None = None,
    ) -> None:
        """`tags`: dynamic tags to keep (a policy reload)."""
        validate(policy)
        self.policy = policy
        self.tags = TagStore(clock)
        self._reported: dict[str, Workload] = {w.name: w for w in policy.workloads}
        for g in tags or ():
            if g.workload in self._reported:
                self.tags.add(g.workload, g.tag)
                self.tags._grants[(g.workload, g.tag)] = g  # keep the expiry as it was
        self._workloads = {n: self._effective(w) for n, w in self._reported.items()}
        self._instances: dict[str, Instance] = {i.id: i for i in policy.instances}
        self._static = {m: f"group {g.name}" for g in policy.groups for m in g.members}
        self._static.update((m, f"instance {i.id}") for i in policy.instances for m in i.members)
        # address/MAC/id -> the workload that holds it, in the enforced state (built on first
        # use, then kept up to date per commit so a check costs the changed workloads only).
        self._owners: dict[tuple[str, object], str] | None = None
        self.resolver = Resolver()
        self.compiler = Compiler(options)
        self.current: Policy = self._policy() if len(self.tags) else policy
        self.resolved: ResolvedPolicy = self.resolver.resolve(self.current)
        self.compiled: CompiledPolicy = self.compiler.compile(self.resolved)

    # -- state --------------------------------------------------------------------------

    def workload(self, name: str) -> Workload:
        """A workload as resolved: reported tags plus dynamic ones."""
        try:
            return self._workloads[name]
        except KeyError:
            raise InventoryError(f"unknown workload {name!r}") from None

    def _effective(self, reported: Workload) -> Workload:
        dynamic = self.tags.tags_of(reported.name)
        if not dynamic or dynamic <= reported.tags:
            return reported
        return dataclasses.replace(reported, tags=reported.tags | dynamic)

    def _policy(self) -> Policy:
        return dataclasses.replace(
            self.policy,
            workloads=tuple(self._workloads.values()),
            instances=tuple(self._instances.values()),
        )

    # -- events ---------------------------------------------------------------------------

    def apply(self, *events: Event) -> Diff:
        """Apply events as one change; the writes that take the target there."""
        return self._commit(events, keep=True).diff

    def dry_run(self, *events: Event) -> DryRun:
        """What `apply(*events)` would write and whom it touches, changing nothing."""
        return self._commit(events, keep=False)

    def expire(self, now: float | None = None) -> Diff:
        """Detach the dynamic tags whose time has come."""
        due = self.tags.expired(now)
        return self.apply(*(TagDetached(g.workload, g.tag) for g in due))

    def _commit(self, events: Sequence[Event], keep: bool) -> DryRun:
        saved = (dict(self._reported), dict(self._workloads), dict(self._instances))
        saved_tags = list(self.tags)
        before = self.compiled
        try:
            changed: set[str] = set()
            for event in events:
                changed |= self._event(event)
            for name in changed:
                reported = self._reported.get(name)
                if reported is None:
                    self._workloads.pop(name, None)
                    self.tags.forget(name)
                else:
                    self._workloads[name] = self._effective(reported)
            if any(not isinstance(e, TagAttached | TagDetached) for e in events):
                self._check(changed, saved[0])
            policy = self._policy()
            resolved = self.resolver.resolve(policy, changed)
            after = self.compiler.compile(resolved)
        except (InventoryError, PolicyError, TagError, CompileError, EncodingError) as exc:
            self._restore(saved, saved_tags)
            if isinstance(exc, InventoryError):
                raise
            raise InventoryError(str(exc)) from exc
        writes = diff(before, after)
        rules: frozenset[int] = frozenset()
        delta = after.acl_delta
        if delta is not None and delta[0] is before.acl and delta[1] is after.acl:
            rules = frozenset(r for r in delta[2] if before.acl.get(r) is not after.acl.get(r))
        elif after.acl is not before.acl:
            rules = frozenset(
                rid for rid, e in after.acl.items() if before.acl.get(rid) is not e
            ) | frozenset(rid for rid in before.acl if rid not in after.acl)
        result = DryRun(writes, frozenset(changed), frozenset(self.resolver.touched), rules)
        if not keep:
            flips, complete = inventory_flips(self.resolved, resolved, changed)
            result = dataclasses.replace(
                result, reachability=tuple(flips), reachability_complete=complete
            )
        if keep:
            self.compiled, self.current, self.resolved = after, policy, resolved
            self._reindex(changed, saved[0])
        else:
            self._restore(saved, saved_tags)
            # Bring resolver and compiler back to the enforced state (incremental again).
            self.resolved = self.resolver.resolve(self.current)
            self.compiler.compile(self.resolved)
        return result

    def _restore(
        self,
        saved: tuple[dict[str, Workload], dict[str, Workload], dict[str, Instance]],
        tags: Iterable[TagGrant],
    ) -> None:
        self._reported, self._workloads, self._instances = saved
        store = TagStore(self.tags.clock)
        for g in tags:
            store._grants[(g.workload, g.tag)] = g
            store._by_workload.setdefault(g.workload, set()).add(g.tag)
        self.tags = store

    def _event(self, event: Event) -> set[str]:
        """Change the reported state for one event; the names whose workload changed."""
        match event:
            case WorkloadUp(w):
                self._reported[w.name] = w
                return {w.name}
            case WorkloadDown(name):
                self._known(name)
                del self._reported[name]
                return {name}
            case WorkloadMoved(name, host, port):
                w = self._known(name)
                self._reported[name] = dataclasses.replace(w, host=host, port=port)
                return {name}
            case TagAttached(name, tag, expires_in):
                self._known(name)
                self.tags.add(name, check_tag(tag), expires_in)
                return {name}
            case TagDetached(name, tag):
                self._known(name)
                if not self.tags.remove(name, tag):
                    raise InventoryError(f"workload {name!r} has no dynamic tag {tag!r}")
                return {name}
            case InstanceCreated(instance, workloads):
                if instance.id in self._instances:
                    raise InventoryError(f"instance {instance.id!r} exists already")
                known = {t.id for t in self.policy.templates}
                if instance.template not in known:
                    raise InventoryError(f"unknown template {instance.template!r}")
                self._instances[instance.id] = instance
                for w in workloads:
                    if w.instance not in (None, instance.id):
                        raise InventoryError(f"workload {w.name!r} is in {w.instance!r}")
                    self._reported[w.name] = dataclasses.replace(
                        w, instance=instance.id, template=w.template or instance.template
                    )
                return {w.name for w in workloads} | set(instance.members)
            case InstanceDeleted(iid):
                if iid not in self._instances:
                    raise InventoryError(f"unknown instance {iid!r}")
                instance = self._instances.pop(iid)
                gone = {n for n, w in self._reported.items() if w.instance == iid}
                gone |= set(instance.members) & self._reported.keys()
                for n in gone:
                    del self._reported[n]
                return gone
        raise InventoryError(f"unknown event {event!r}")

    def _owner_index(self, enforced: dict[str, Workload]) -> dict[tuple[str, object], str]:
        if self._owners is None:
            owners: dict[tuple[str, object], str] = {}
            for each in enforced.values():
                for key in _keys(each):
                    owners.setdefault(key, each.name)
            self._owners = owners
        return self._owners

    def _reindex(self, changed: set[str], before: dict[str, Workload]) -> None:
        """Bring the owner index to the committed state: the changed workloads' keys only."""
        owners = self._owners
        if owners is None:
            return
        for name in changed:
            old = before.get(name)
            for key in _keys(old) if old is not None else ():
                if owners.get(key) == name:
                    del owners[key]
        for name in changed:
            new = self._reported.get(name)
            for key in _keys(new) if new is not None else ():
                owners.setdefault(key, name)

    def _check(self, changed: set[str], before: dict[str, Workload]) -> None:
        """What `validate` would find wrong with the changed workloads, without checking the
        whole policy again: unique addresses, MACs and ids; known templates; no workload that
        a group or instance lists by name may go."""
        owners = self._owner_index(before)
        claimed: dict[tuple[str, object], str] = {}
        templates = {t.id for t in self.policy.templates}
        for name in sorted(changed):
            w = self._reported.get(name)
            if w is None:
                if name in self._static:
                    raise InventoryError(f"workload {name!r} is named by {self._static[name]}")
                continue
            for key in _keys(w):
                other = owners.get(key)
                if other is None or other == name or other in changed:
                    # A changed workload's new keys are checked against each other below.
                    other = claimed.setdefault(key, name)
                if other != name:
                    what = f"{key[0]} {key[1]}" if key[0] != "address" else f"address {key[1]}"
                    raise InventoryError(f"{name}: {what} also belongs to {other}")
            if w.template is not None and w.template not in templates:
                raise InventoryError(f"{name}: unknown template {w.template!r}")
            inst = self._instances.get(w.instance) if w.instance is not None else None
            if inst is not None and w.template not in (None, inst.template):
                raise InventoryError(
                    f"{name}: template {w.template!r} differs from instance {inst.id!r}'s"
                )

    def _known(self, name: str) -> Workload:
        w = self._reported.get(name)
        if w is None:
            raise InventoryError(f"unknown workload {name!r}")
        return w


def _keys(w: Workload) -> list[tuple[str, object]]:
    """What must be unique to one workload: its addresses, MAC and fixed id."""
    keys: list[tuple[str, object]] = [("address", a) for a in w.addresses]
    if w.mac is not None:
        keys.append(("mac", ":".join(f"{b:02x}" for b in w.mac.to_bytes(6, "big"))))
    if w.id is not None:
        keys.append(("id", w.id))
    return keys
