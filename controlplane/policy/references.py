"""Cross-reference checks: every name a policy uses exists, is unique, and groups do not loop.

Works on the model, so policies built in code (the benchmarks, an API) get the same checks
as files; lines come from `Policy.locations` when the policy was loaded from a file.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from controlplane.policy.criteria import criteria_refs
from controlplane.policy.errors import Problem
from controlplane.policy.model import HOST_PREFIX, Criteria, Policy, Rule
from controlplane.policy.yamlnodes import suggest


class _Checker:
    def __init__(self, policy: Policy, defined: Collection[str]) -> None:
        self.policy = policy
        self.defined = set(defined)
        self.problems: list[Problem] = []

    def add(self, path: str, message: str) -> None:
        # A scalar written where a list is allowed has no `[0]` path: report its parent.
        shown = path
        if path not in self.policy.locations and path.endswith("]"):
            parent = path[: path.rfind("[")]
            if parent in self.policy.locations:
                shown = parent
        self.problems.append(Problem(self.policy.line(shown), shown, message))

    def unique(self, items: Iterable[tuple[str, str]], what: str) -> None:
        first: dict[str, str] = {}
        for name, path in items:
            if name in first:
                line = self.policy.line(first[name])
                at = f"line {line}" if line else first[name]
                self.add(path, f"duplicate {what} {name!r} (first at {at})")
            else:
                first[name] = path

    def workloads(self) -> None:
        p = self.policy
        self.unique(((w.name, f"workloads.{w.name}") for w in p.workloads), "workload name")
        owner: dict[object, str] = {}
        for w in p.workloads:
            base = f"workloads.{w.name}"
            for i, addr in enumerate(w.addresses):
                other = owner.setdefault(addr, w.name)
                if other != w.name:
                    self.add(f"{base}.addresses[{i}]", f"address {addr} also belongs to {other}")
            for key, value in (("mac", w.mac), ("id", w.id)):
                if value is None:
                    continue
                other = owner.setdefault((key, value), w.name)
                if other != w.name:
                    shown = str(value)
                    if key == "mac":
                        shown = ":".join(f"{b:02x}" for b in value.to_bytes(6, "big"))
                    self.add(f"{base}.{key}", f"{key} {shown} is also {other}'s")

    def groups(self) -> set[str]:
        p = self.policy
        self.unique(((g.name, f"groups.{g.name}") for g in p.groups), "group name")
        workloads = {w.name for w in p.workloads} | self.defined
        groups = {g.name for g in p.groups} | self.defined
        for g in p.groups:
            base = f"groups.{g.name}"
            for i, m in enumerate(g.members):
                if m not in workloads:
                    self.add(
                        f"{base}.members[{i}]", f"unknown workload {m!r}{suggest(m, workloads)}"
                    )
            for i, n in enumerate(g.groups):
                if n not in groups:
                    self.add(f"{base}.groups[{i}]", f"unknown group {n!r}{suggest(n, groups)}")
            for i, c in enumerate(g.match):
                self.criteria(c, f"{base}.match[{i}]", groups)
        self.cycles()
        return groups

    def criteria(self, c: Criteria, path: str, groups: set[str]) -> None:
        """Templates and groups a criteria tree names exist (instances may come later)."""
        templates = {t.id for t in self.policy.templates} | self.defined
        if c.template is not None and c.template not in templates:
            self.add(
                f"{path}.template",
                f"unknown template {c.template!r}{suggest(c.template, templates)}",
            )
        if c.group is not None and c.group not in groups:
            self.add(f"{path}.group", f"unknown group {c.group!r}{suggest(c.group, groups)}")
        for key, items in (("all", c.all_of), ("any", c.any_of), ("not", c.none_of)):
            for i, x in enumerate(items):
                self.criteria(x, f"{path}.{key}[{i}]", groups)

    def templates(self) -> None:
        """Template ids unique; instances name a known template and known members; workloads
        name known templates and agree with their instance's."""
        p = self.policy
        self.unique(((t.id, f"templates.{t.id}") for t in p.templates), "template id")
        self.unique(((i.id, f"instances.{i.id}") for i in p.instances), "instance id")
        templates = {t.id for t in p.templates} | self.defined
        workloads = {w.name for w in p.workloads} | self.defined
        of_instance = {i.id: i.template for i in p.instances}
        listed: dict[str, str] = {}
        for inst in p.instances:
            base = f"instances.{inst.id}"
            if inst.template not in templates:
                self.add(
                    f"{base}.template",
                    f"unknown template {inst.template!r}{suggest(inst.template, templates)}",
                )
            for k, m in enumerate(inst.members):
                if m not in workloads:
                    self.add(
                        f"{base}.members[{k}]", f"unknown workload {m!r}{suggest(m, workloads)}"
                    )
                elif listed.setdefault(m, inst.id) != inst.id:
                    self.add(f"{base}.members[{k}]", f"{m!r} is in instance {listed[m]!r} already")
        for w in p.workloads:
            base = f"workloads.{w.name}"
            if w.template is not None and w.template not in templates:
                self.add(
                    f"{base}.template",
                    f"unknown template {w.template!r}{suggest(w.template, templates)}",
                )
            where = w.instance or listed.get(w.name)
            if w.instance is not None and listed.get(w.name, w.instance) != w.instance:
                self.add(f"{base}.instance", f"also listed in instance {listed[w.name]!r}")
            expected = of_instance.get(where) if where is not None else None
            if w.template is not None and expected is not None and expected != w.template:
                self.add(
                    f"{base}.template",
                    f"template {w.template!r} differs from instance {where!r}'s ({expected!r})",
                )

    def cycles(self) -> None:
        nested = {
            g.name: (*g.groups, *(r for c in g.match for r in criteria_refs(c)))
            for g in self.policy.groups
        }
        state: dict[str, int] = {}  # 1: on the current path, 2: done
        for start in nested:
            stack: list[tuple[str, int]] = [(start, 0)]
            path: list[str] = []
            while stack:
                name, i = stack.pop()
                if i == 0:
                    if state.get(name) == 2:
                        continue
                    state[name] = 1
                    path.append(name)
                children = [c for c in nested.get(name, ()) if c in nested]
                if i < len(children):
                    stack.append((name, i + 1))
                    child = children[i]
                    if state.get(child) == 1:
                        loop = [*path[path.index(child) :], child]
                        self.add(f"groups.{child}", "group cycle: " + " -> ".join(loop))
                    elif state.get(child) != 2:
                        stack.append((child, 0))
                else:
                    state[name] = 2
                    path.pop()

    def rules(self, groups: set[str]) -> None:
        p = self.policy
        services = {s.name for s in p.services} | self.defined
        self.unique(((s.name, f"services.{s.name}") for s in p.services), "service name")
        for svc in p.services:
            if not svc.terms and svc.name not in self.defined:
                # An empty service must not read as "any service" in a rule.
                self.add(f"services.{svc.name}", "a service needs at least one protocol entry")
        self.unique(((s.name, f"sections[{i}]") for i, s in enumerate(p.sections)), "section name")
        names: list[tuple[str, str]] = []
        ids: list[tuple[str, str]] = []
        templates = {t.id for t in p.templates} | self.defined
        placed: list[tuple[str, Rule]] = [
            (f"sections[{i}].rules[{j}]", rule)
            for i, section in enumerate(p.sections)
            for j, rule in enumerate(section.rules)
        ]
        placed += [
            (f"templates.{t.id}.rules[{j}]", rule)
            for t in p.templates
            for j, rule in enumerate(t.rules)
        ]
        for base, rule in placed:
            names.append((rule.name, f"{base}.name"))
            if rule.template is not None and rule.template not in templates:
                self.add(
                    f"{base}.template",
                    f"unknown template {rule.template!r}{suggest(rule.template, templates)}",
                )
            if rule.id is not None:
                ids.append((str(rule.id), f"{base}.id"))
            for key, endpoints in (("source", rule.source), ("destination", rule.destination)):
                for k, e in enumerate(endpoints or ()):
                    if isinstance(e, str) and e not in groups:
                        self.add(
                            f"{base}.{key}[{k}]",
                            f"unknown group {e!r}{suggest(e, groups)} "
                            "(expected a group name, a CIDR, or 'any')",
                        )
            for k, s in enumerate(rule.services):
                if s not in services:
                    self.add(f"{base}.service[{k}]", f"unknown service {s!r}{suggest(s, services)}")
            for k, a in enumerate(rule.applied_to):
                if not a.startswith(HOST_PREFIX) and a not in groups:
                    self.add(
                        f"{base}.applied_to[{k}]",
                        f"unknown group {a!r}{suggest(a, groups)} (or write host:NAME)",
                    )
        self.unique(names, "rule name")
        self.unique(ids, "rule id")


def check(policy: Policy, defined: Collection[str] = ()) -> list[Problem]:
    """Every reference problem of `policy` (empty when consistent); `defined` names count as
    existing (items that failed to load, whose errors are reported already)."""
    checker = _Checker(policy, defined)
    checker.workloads()
    checker.templates()
    groups = checker.groups()
    checker.rules(groups)
    return checker.problems
