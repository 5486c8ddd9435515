"""Rules -> P4 table entries: classification, ACL, L2 forwarding and the ACL default.

`Compiler.compile(resolved)` turns a `ResolvedPolicy` into a `CompiledPolicy`. Priorities keep
rule order (the first rule has the highest priority, `priority_base - position`, so appending a
rule shifts nothing); `any` source/destination and protocol are omitted keys; port ranges are
range keys or their minimal prefix expansion (`range_kind`). A `Compiler` remembers its last
result: rules whose resolved form and group codes did not change keep their entry tuples (the
same objects), which is what makes `offload.compiler.delta` cheap after a small edit.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import product
from typing import Final

from offload import names
from offload.compiler.classes import ClassTable, build_class_table, update_class_table
from offload.compiler.encoding import CLASS_BITS, RESERVE, EncodingKind
from offload.compiler.ranges import RangeKind, port_matches
from offload.compiler.rules import (
    AddressGroup,
    ResolvedPolicy,
    ResolvedRule,
    ResolvedWorkload,
    Term,
)
from offload.entries import Entry, Exact, FieldMatch, Optional, Ternary

_ACTIONS: Final = {
    "allow": names.ACL_ALLOW,
    "drop": names.ACL_DROP,
    "reject": names.ACL_REJECT,
}
DEFAULT_PRIORITY_BASE: Final = 1 << 24
# ICMP errors by lookup l4_dst (type << 8 | code): IPv4 destination unreachable (3), time
# exceeded (11), parameter problem (12); ICMPv6 destination unreachable, packet too big, time
# exceeded, parameter problem (1-4). In stateful mode they go to the service first, which lets
# those about a connection it tracks through (as related) and decides the rest by the rules.
ICMP_ERRORS: Final = ((1, ((0x0300, 0x03FF), (0x0B00, 0x0CFF))), (58, ((0x0100, 0x04FF),)))


class CompileError(ValueError):
    """The resolved policy cannot be compiled with these options."""


@dataclass(frozen=True, slots=True)
class CompileOptions:
    """What the target supports and how to encode."""

    range_kind: RangeKind = "range"
    stateful: bool = False  # allow rules punt to the service (acl_service), which offloads flows
    host: str | None = None  # compile for one host (applied-to, local workloads); None: all
    encoding: EncodingKind = "auto"
    class_bits: int = CLASS_BITS
    priority_base: int = DEFAULT_PRIORITY_BASE
    service_port: int | None = None  # also write svc.service_config's default action
    max_entries_per_rule: int = 1 << 16  # a rule needing more is refused, not half-built
    # Class-id bits a merged (tight) layout leaves free, so that a field that fills up later
    # takes one instead of being laid out again; costs ACL entries when groups barely fit.
    spare_bits: int = RESERVE


@dataclass(frozen=True)
class CompileStats:
    """Entry counts and expansion: what the compile costs the target."""

    entries: Mapping[str, int]
    rules: int
    acl_entries: int
    max_entries_per_rule: int
    src_encoding: str
    dst_encoding: str
    src_bits: int
    dst_bits: int
    src_expanded: int  # groups that need more than one class-id code
    dst_expanded: int
    seconds: float

    @property
    def expansion(self) -> float:
        """ACL entries per compiled rule."""
        return self.acl_entries / self.rules if self.rules else 0.0

    @property
    def notes(self) -> list[str]:
        """Things worth telling the operator (fallback encodings)."""
        out = []
        for side, kind, residual in (
            ("src_class", self.src_encoding, self.src_expanded),
            ("dst_class", self.dst_encoding, self.dst_expanded),
        ):
            if kind == "classes":
                out.append(
                    f"{side}: groups do not fit {CLASS_BITS} bits even packed; using "
                    f"equivalence classes, {residual} groups match more than one class id "
                    "(rules over them get more ACL entries)"
                )
        return out


AclDelta = tuple[Mapping[int, tuple[Entry, ...]], Mapping[int, tuple[Entry, ...]], frozenset[int]]


@dataclass(frozen=True)
class CompiledPolicy:
    """The desired state of the target, kept in chunks so that diffs can skip what is shared."""

    src_class: ClassTable
    dst_class: ClassTable
    # rule id -> its entries, in rule order (an audit rule's are in acl_audit, not acl)
    acl: Mapping[int, tuple[Entry, ...]]
    acl_default: Entry
    l2: tuple[Entry, ...]
    service: tuple[Entry, ...]
    rule_names: Mapping[int, str]
    stats: CompileStats
    # Set when `acl` was patched from a previous mapping: (that mapping, this one, the rule
    # ids whose entries may differ), so a diff need not walk every rule.
    acl_delta: AclDelta | None = field(default=None, repr=False, compare=False)

    def chunks(self) -> Iterator[tuple[object, tuple[Entry, ...]]]:
        """(chunk key, entries) pairs, the unit `delta.diff` compares by identity."""
        yield ("table", names.SRC_CLASS), self.src_class.entries
        yield ("table", names.DST_CLASS), self.dst_class.entries
        yield ("table", names.L2_FORWARD), self.l2
        yield ("table", names.SERVICE_CONFIG), self.service
        for rule_id, entries in self.acl.items():
            yield ("rule", rule_id), entries
        yield ("default", names.ACL), (self.acl_default,)

    def other_chunks(self) -> Iterator[tuple[object, tuple[Entry, ...]]]:
        """The chunks that are neither classification tables nor rules."""
        yield ("table", names.L2_FORWARD), self.l2
        yield ("table", names.SERVICE_CONFIG), self.service
        yield ("default", names.ACL), (self.acl_default,)

    def entries(self) -> list[Entry]:
        """Every entry, the ACL default included."""
        return [e for _, chunk in self.chunks() for e in chunk]

    def tables(self) -> dict[str, list[Entry]]:
        """Entries grouped by table."""
        out: dict[str, list[Entry]] = {}
        for e in self.entries():
            out.setdefault(e.table, []).append(e)
        return out


def _acl_match(
    src: Ternary | None,
    dst: Ternary | None,
    proto: FieldMatch | None,
    l4_src: FieldMatch | None,
    l4_dst: FieldMatch | None,
) -> tuple[tuple[str, FieldMatch], ...]:
    # Keys in name order, as Entry.make would sort them; omitted keys are don't-care.
    keys: list[tuple[str, FieldMatch]] = []
    if dst is not None:
        keys.append(("dst_class", dst))
    if proto is not None:
        keys.append(("ip_proto", proto))
    if l4_dst is not None:
        keys.append(("l4_dst", l4_dst))
    if l4_src is not None:
        keys.append(("l4_src", l4_src))
    if src is not None:
        keys.append(("src_class", src))
    return tuple(keys)


Codes = Mapping[str, tuple[Ternary, ...]]
_LastPass = tuple[
    tuple[ResolvedRule, ...],
    Codes,
    Codes,
    list[ResolvedRule],
    list[str],
    list[str],
    Mapping[int, tuple[Entry, ...]],
]
TermKeys = list[tuple[FieldMatch | None, FieldMatch | None, FieldMatch | None]]


def _side(groups: tuple[str, ...] | None, codes: Codes) -> list[Ternary | None]:
    if groups is None:
        return [None]
    return list(dict.fromkeys(t for g in groups for t in codes.get(g, ())))


class Compiler:
    """Compiles resolved policies, reusing unchanged pieces of its previous result."""

    def __init__(self, options: CompileOptions | None = None) -> None:
        self.options = options or CompileOptions()
        self._tables: dict[str, tuple[tuple[object, ...], ClassTable, Mapping[int, int]]] = {}
        self._rules: dict[int, tuple[ResolvedRule, Codes, Codes, tuple[Entry, ...]]] = {}
        self._terms: dict[Term, TermKeys] = {}
        # The last rule pass: its inputs, the rules on this host, the groups they name, the ACL.
        self._last: _LastPass | None = None
        self.incremental_tables = 0  # class tables updated in place rather than rebuilt
        # Class tables built anew although one existed (a block changed, or the encoding had
        # no room), and fields laid out again: after inventory events both should stay 0.
        self.rebuilt_tables = 0
        self.relaid_fields = 0
        self._l2: tuple[tuple[ResolvedWorkload, ...], tuple[Entry, ...]] | None = None
        self._acl_size: tuple[Mapping[int, tuple[Entry, ...]], int, int, int] | None = None
        self._names: tuple[Mapping[int, str], dict[int, str]] | None = None
        # Rules by the groups they name, per side: which rules a code change touches.
        self._users: tuple[dict[str, list[ResolvedRule]], dict[str, list[ResolvedRule]]] = (
            {},
            {},
        )

    def _class_table(
        self,
        table: str,
        groups: Sequence[AddressGroup],
        local: tuple[ResolvedWorkload, ...],
    ) -> ClassTable:
        # Unchanged inputs are usually the very same objects (the Resolver reuses them), so
        # this comparison is mostly identity checks.
        key = (tuple(groups), local)
        cached = self._tables.get(table)
        if cached is not None and cached[0] == key:
            return cached[1]
        workload_ids: Mapping[int, int]
        if cached is not None and cached[0][1] == local:
            workload_ids = cached[2]
        else:
            workload_ids = {a: w.workload_id for w in local for a in w.addresses}
        opts = self.options
        built: ClassTable | None = None
        if cached is not None:
            # A workload event changes /128 memberships only: patch the table, keep the codes.
            old_groups: Sequence[AddressGroup] = cached[0][0]  # type: ignore[assignment]
            built = update_class_table(
                cached[1], old_groups, groups, cached[2], workload_ids, opts.class_bits
            )
            self.incremental_tables += built is not None
            if built is None:
                self.rebuilt_tables += 1  # a block changed, or no room: laid out anew
            elif built is not None and built.encoding.generation != cached[1].encoding.generation:
                self.relaid_fields += built.encoding.generation - cached[1].encoding.generation
        if built is None:
            previous = cached[1].encoding if cached is not None else None
            built = build_class_table(
                table,
                groups,
                workload_ids,
                opts.encoding,
                opts.class_bits,
                previous,
                opts.spare_bits,
            )
        self._tables[table] = (key, built, workload_ids)
        return built

    def _term_keys(self, term: Term) -> TermKeys:
        keys = self._terms.get(term)
        if keys is None:
            kind = self.options.range_kind
            proto = Optional(term.protocol) if term.protocol is not None else None
            keys = [
                (proto, s, d)
                for s, d in product(
                    port_matches(term.src_ports, kind), port_matches(term.dst_ports, kind)
                )
            ]
            self._terms[term] = keys
        return keys

    def _icmp_errors(self) -> tuple[Entry, ...]:
        """ACL entries above every rule sending ICMP errors to the service (`ICMP_ERRORS`)."""
        priority = self.options.priority_base + 1
        return tuple(
            Entry(
                names.ACL,
                _acl_match(None, None, Optional(proto), None, m),
                names.ACL_SERVICE,
                (("rule_id", 0),),
                priority,
            )
            for proto, ranges in ICMP_ERRORS
            for m in port_matches(ranges, self.options.range_kind)
        )

    def rule_entries(self, rule: ResolvedRule, src_codes: Codes, dst_codes: Codes) -> list[Entry]:
        """The ACL entries of one rule: sources x destinations x expanded service terms.

        An audit rule gets the same matches in acl_audit, whose action only records the rule.
        """
        priority = self.options.priority_base - rule.position
        if priority <= 0:
            raise CompileError(f"rule {rule.name}: position {rule.position} exceeds priority base")
        srcs = _side(rule.sources, src_codes)
        dsts = _side(rule.destinations, dst_codes)
        need = len(srcs) * len(dsts) * sum(len(self._term_keys(t)) for t in rule.terms)
        if need > self.options.max_entries_per_rule:
            raise CompileError(
                f"rule {rule.name} would need {need} ACL entries "
                f"(limit {self.options.max_entries_per_rule}): its groups overlap too much "
                "for the class-id bits, or its port ranges expand too far"
            )
        table, action = names.ACL, _ACTIONS[rule.action]
        if rule.audit:
            table, action = names.ACL_AUDIT, names.AUDIT_HIT
        elif rule.action == "allow" and self.options.stateful:
            action = names.ACL_SERVICE
        params = (("rule_id", rule.rule_id),)
        out: dict[tuple[tuple[str, FieldMatch], ...], None] = {}
        for term in rule.terms:
            for proto, l4_src, l4_dst in self._term_keys(term):
                for s in srcs:
                    for d in dsts:
                        out[_acl_match(s, d, proto, l4_src, l4_dst)] = None
        return [Entry(table, m, action, params, priority) for m in out]

    def compile(self, resolved: ResolvedPolicy) -> CompiledPolicy:
        """Compile `resolved` for `options.host` into the target's desired state."""
        started = time.perf_counter()
        opts = self.options
        last = self._last
        if last is not None and last[0] is resolved.rules:
            rules, src_names, dst_names = last[3], last[4], last[5]
        else:
            rules = [r for r in resolved.rules if r.applies_on(opts.host)]
            src_names = sorted({g for r in rules if r.sources for g in r.sources})
            dst_names = sorted({g for r in rules if r.destinations for g in r.destinations})
        local = resolved.local_workloads(opts.host)
        for n in (*src_names, *dst_names):
            if n not in resolved.groups:
                raise CompileError(f"a rule refers to group {n!r}, which was not resolved")
        src = self._class_table(names.SRC_CLASS, [resolved.groups[n] for n in src_names], local)
        dst = self._class_table(names.DST_CLASS, [resolved.groups[n] for n in dst_names], local)
        src_codes, dst_codes = src.encoding.codes, dst.encoding.codes
        delta: AclDelta | None = None
        if last is not None and last[0] is resolved.rules:
            if last[1] is src_codes and last[2] is dst_codes:
                # The same rules over the same codes (an inventory event): the very same ACL.
                acl = last[6]
            else:
                # Codes of a few groups changed (a new combination in a class field): only the
                # rules over those groups get new entries.
                acl, redone = self._recode(last[6], (last[1], src_codes), (last[2], dst_codes))
                delta = (last[6], acl, redone)
        else:
            acl = self._rule_pass(rules, src_codes, dst_codes)
        self._last = (resolved.rules, src_codes, dst_codes, rules, src_names, dst_names, acl)
        return self._finish(resolved, rules, local, src, dst, acl, started, delta)

    def _recode(
        self,
        previous: Mapping[int, tuple[Entry, ...]],
        src: tuple[Codes, Codes],
        dst: tuple[Codes, Codes],
    ) -> tuple[dict[int, tuple[Entry, ...]], frozenset[int]]:
        acl = dict(previous)
        redo: dict[int, ResolvedRule] = {}
        for (old, new), users in zip((src, dst), self._users, strict=True):
            if old is new:
                continue
            for name in old.keys() | new.keys():
                if old.get(name) != new.get(name):
                    redo.update((r.rule_id, r) for r in users.get(name, ()))
        src_codes, dst_codes = src[1], dst[1]
        for rid, rule in redo.items():
            entries = tuple(self.rule_entries(rule, src_codes, dst_codes))
            acl[rid] = entries
            self._rules[rid] = (rule, src_codes, dst_codes, entries)
        return acl, frozenset(redo)

    def _rule_pass(
        self, rules: list[ResolvedRule], src_codes: Codes, dst_codes: Codes
    ) -> dict[int, tuple[Entry, ...]]:
        src_users: dict[str, list[ResolvedRule]] = {}
        dst_users: dict[str, list[ResolvedRule]] = {}
        for rule in rules:
            for g in rule.sources or ():
                src_users.setdefault(g, []).append(rule)
            for g in rule.destinations or ():
                dst_users.setdefault(g, []).append(rule)
        self._users = (src_users, dst_users)
        # Groups whose codes differ from the last pass's: a rule over none of them is unchanged
        # there, without comparing its code tuples one by one.
        last = self._last
        prev_src = last[1] if last is not None else None
        prev_dst = last[2] if last is not None else None
        src_diff = _recoded(prev_src, src_codes)
        dst_diff = _recoded(prev_dst, dst_codes)
        acl: dict[int, tuple[Entry, ...]] = {}
        cache: dict[int, tuple[ResolvedRule, Codes, Codes, tuple[Entry, ...]]] = {}
        for rule in rules:
            if rule.rule_id in acl:
                raise CompileError(f"rule {rule.name}: rule id {rule.rule_id} is used twice")
            hit = self._rules.get(rule.rule_id)
            if (
                hit is not None
                and (hit[0] is rule or hit[0] == rule)
                and (
                    hit[1] is src_codes
                    or (hit[1] is prev_src and not _uses(rule.sources, src_diff))
                    or _same_codes(rule.sources, hit[1], src_codes)
                )
                and (
                    hit[2] is dst_codes
                    or (hit[2] is prev_dst and not _uses(rule.destinations, dst_diff))
                    or _same_codes(rule.destinations, hit[2], dst_codes)
                )
            ):
                entries = hit[3]
            else:
                entries = tuple(self.rule_entries(rule, src_codes, dst_codes))
            acl[rule.rule_id] = entries
            cache[rule.rule_id] = (rule, src_codes, dst_codes, entries)
        self._rules = cache
        return acl

    def _finish(
        self,
        resolved: ResolvedPolicy,
        rules: list[ResolvedRule],
        local: tuple[ResolvedWorkload, ...],
        src: ClassTable,
        dst: ClassTable,
        acl: Mapping[int, tuple[Entry, ...]],
        started: float,
        delta: AclDelta | None = None,
    ) -> CompiledPolicy:
        opts = self.options
        default_action = names.ACL_ALLOW if resolved.default_action == "allow" else names.ACL_DROP
        if default_action == names.ACL_DROP and opts.stateful and opts.service_port is not None:
            # With a service, an ACL miss goes to it instead of being dropped: the replies of a
            # connection it allowed reach the pipeline before their flow_cache entries are
            # written, and only its connection state can let them through. Its rule set ends
            # with the policy's default, so the rest is still dropped there.
            default_action = names.ACL_SERVICE
        acl_default = Entry(names.ACL, (), default_action, (("rule_id", 0),), is_default=True)
        if self._l2 is not None and self._l2[0] == local:
            l2 = self._l2[1]
        else:
            l2 = tuple(
                Entry(
                    names.L2_FORWARD,
                    (("eth_dst", Exact(w.mac)),),
                    names.SET_EGRESS_PORT,
                    (("port", w.port),),
                )
                for w in sorted(local, key=lambda w: w.mac or 0)
                if w.mac is not None and w.port is not None
            )
            self._l2 = (local, l2)
        size = self._acl_size
        if size is not None and delta is not None and size[0] is delta[0]:
            # Patched from the last ACL: adjust the totals by the rules redone only.
            _, total, top, audit = size
            for rid in delta[2]:
                old, new = delta[0].get(rid, ()), acl.get(rid, ())
                total += len(new) - len(old)
                if old and old[0].table == names.ACL_AUDIT:
                    audit -= len(old)
                if new and new[0].table == names.ACL_AUDIT:
                    audit += len(new)
                if len(old) == top and len(new) < top:
                    top = -1  # the largest rule shrank: count again below
                elif top >= 0:
                    top = max(top, len(new))
            if top < 0:
                top = max((len(e) for e in acl.values()), default=0)
            self._acl_size = (acl, total, top, audit)
        elif size is None or size[0] is not acl:
            sizes = [len(e) for e in acl.values()]
            audit = sum(len(e) for e in acl.values() if e and e[0].table == names.ACL_AUDIT)
            self._acl_size = (acl, sum(sizes), max(sizes, default=0), audit)
        assert self._acl_size is not None
        _, acl_total, acl_max, audit_total = self._acl_size
        service: tuple[Entry, ...] = ()
        if opts.service_port is not None:
            service = (
                Entry(
                    names.SERVICE_CONFIG,
                    (),
                    names.SET_SERVICE_PORT,
                    (("port", opts.service_port),),
                    is_default=True,
                ),
            )
            if opts.stateful:
                service += self._icmp_errors()
        counts = {
            names.SRC_CLASS: len(src),
            names.DST_CLASS: len(dst),
            names.ACL: acl_total - audit_total + sum(e.table == names.ACL for e in service),
            names.L2_FORWARD: len(l2),
        }
        if audit_total:
            counts[names.ACL_AUDIT] = audit_total
        stats = CompileStats(
            entries=counts,
            rules=len(rules),
            acl_entries=acl_total,
            max_entries_per_rule=acl_max,
            src_encoding=src.encoding.kind,
            dst_encoding=dst.encoding.kind,
            src_bits=src.encoding.bits,
            dst_bits=dst.encoding.bits,
            src_expanded=src.encoding.expanded,
            dst_expanded=dst.encoding.expanded,
            seconds=time.perf_counter() - started,
        )
        if self._names is None or self._names[0] is not resolved.rule_names:
            self._names = (resolved.rule_names, dict(resolved.rule_names))
        return CompiledPolicy(src, dst, acl, acl_default, l2, service, self._names[1], stats, delta)


def _recoded(old: Codes | None, new: Codes) -> set[str]:
    """Names whose codes differ between two code maps."""
    if old is None or old is new:
        return set()
    return {n for n in old.keys() | new.keys() if old.get(n) != new.get(n)}


def _uses(groups: tuple[str, ...] | None, names_: set[str]) -> bool:
    return groups is not None and any(g in names_ for g in groups)


def _same_codes(groups: tuple[str, ...] | None, old: Codes, new: Codes) -> bool:
    return groups is None or all(old.get(g) == new.get(g) for g in groups)


def compile_policy(
    resolved: ResolvedPolicy, options: CompileOptions | None = None
) -> CompiledPolicy:
    """Compile once, without reuse (see `Compiler` for repeated compiles)."""
    return Compiler(options).compile(resolved)
