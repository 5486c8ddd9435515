"""The P4Runtime contract of a pipeline, without ids: derived from P4 source or from P4Info.

Both sides are reduced to the same `Pipeline` (names, widths, match kinds, action scopes,
defaults, sizes, idle timeouts, direct counters, controller headers, digests and the fields
of their structs) so that `diff` can say
in words where firewall.p4 and firewall.p4info.txtpb disagree. `check_ids` checks what only
P4Info has: ids, their resource-type prefixes, and the references between them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from offload.p4schema import P4Schema, Prefix
from offload.proto import p4i

try:  # tests/unit as a package, or as a directory on sys.path (pytest's default)
    from .p4source import (
        Annotation,
        ControlDecl,
        P4SourceError,
        Program,
        TableDecl,
        TypeRef,
        eval_int,
        find_annotation,
    )
except ImportError:
    from p4source import (
        Annotation,
        ControlDecl,
        P4SourceError,
        Program,
        TableDecl,
        TypeRef,
        eval_int,
        find_annotation,
    )

V1MODEL_INGRESS, V1MODEL_EGRESS = 2, 3  # positions in V1Switch(...)
COUNTER_UNITS = {"packets": "PACKETS", "bytes": "BYTES", "packets_and_bytes": "BOTH"}
SCOPES = {"@tableonly": "TABLE_ONLY", "@defaultonly": "DEFAULT_ONLY"}


@dataclass(frozen=True)
class Key:
    """A match field: name, width, match kind (P4Info spelling: EXACT, LPM...)."""

    name: str
    bitwidth: int
    match_kind: str


@dataclass(frozen=True)
class Table:
    """A table's contract."""

    name: str
    keys: tuple[Key, ...]
    actions: tuple[tuple[str, str], ...]  # (action name, scope), sorted by name
    default_action: str
    default_args: tuple[tuple[str, int], ...]
    const_default: bool
    size: int
    idle_timeout: bool
    direct_counter: str | None


@dataclass(frozen=True)
class Pipeline:
    """Everything P4Info says about a pipeline, by name."""

    tables: dict[str, Table]
    actions: dict[str, tuple[tuple[str, int], ...]]  # name -> ((param, width), ...)
    direct_counters: dict[str, tuple[str, str]]  # name -> (unit, table)
    controller_headers: dict[str, tuple[tuple[str, int], ...]]
    # digest name (p4c: its struct type's name) -> ((member, width), ...)
    digests: dict[str, tuple[tuple[str, int], ...]] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------
# From source
# ------------------------------------------------------------------------------------------


class _SourceModel:
    def __init__(self, program: Program) -> None:
        self.p = program
        self.consts = program.const_values()
        self.tables: dict[str, Table] = {}
        self.actions: dict[str, tuple[tuple[str, int], ...]] = {}
        self.counters: dict[str, tuple[str, str]] = {}
        self.digests: dict[str, tuple[tuple[str, int], ...]] = {}
        self.problems: list[str] = []

    def build(self) -> Pipeline:
        main = self.p.main
        if main is None or main.type_name != "V1Switch" or len(main.args) != 6:
            raise P4SourceError("no `V1Switch(...) main;` with six arguments")
        for position in (V1MODEL_INGRESS, V1MODEL_EGRESS):
            control = main.args[position].split("(")[0].strip()
            # p4c names a top-level block after its type: FirewallIngress.<instance>...
            self.control(control, control, set())
        headers = {}
        for decl in self.p.types.values():
            ann = find_annotation(decl.annotations, "controller_header")
            if decl.kind == "header" and ann is not None:
                headers[ann.string] = tuple(
                    (f.name, self.width(f.type, f.name)) for f in decl.fields
                )
        return Pipeline(self.tables, self.actions, self.counters, headers, self.digests)

    def digest(self, type_name: str, prefix: str) -> None:
        decl = self.p.types.get(type_name)
        if decl is None or decl.kind != "struct":
            raise P4SourceError(f"{prefix}: digest<{type_name}> needs a struct type")
        self.digests[type_name] = tuple(
            (f.name, self.width(f.type, f"{type_name}.{f.name}")) for f in decl.fields
        )

    def width(self, t: TypeRef, what: str) -> int:
        width = self.p.width(t)
        if width is None:
            raise P4SourceError(f"{what}: no bit width for type {t}")
        return width

    def control(self, type_name: str, prefix: str, stack: set[str]) -> None:
        if type_name in stack:
            raise P4SourceError(f"control {type_name} instantiates itself")
        control = self.p.controls.get(type_name)
        if control is None:
            raise P4SourceError(f"{prefix}: no control named {type_name}")
        for name, inst in control.instances.items():
            if inst.type_name == "direct_counter":
                continue  # reported with the table that uses it
            if inst.type_name not in self.p.controls:
                raise P4SourceError(f"{prefix}.{name}: unknown type {inst.type_name}")
            if name not in control.applied:
                self.problems.append(f"{prefix}.{name} is never applied: p4c drops it")
                continue
            self.control(
                inst.type_name, _qualify(prefix, name, inst.annotations), stack | {type_name}
            )
        for type_name in control.digests:
            self.digest(type_name, prefix)
        used_counters = set()
        for table in control.tables.values():
            if table.name not in control.applied:
                self.problems.append(f"{prefix}.{table.name} is never applied: p4c drops it")
                continue
            used_counters.add(table.properties.get("counters", ""))
            self.table(control, table, prefix)
        for name, inst in control.instances.items():
            if inst.type_name == "direct_counter" and name not in used_counters:
                self.problems.append(f"direct counter {prefix}.{name} is attached to no table")

    def table(self, control: ControlDecl, table: TableDecl, prefix: str) -> None:
        fq = _qualify(prefix, table.name, table.annotations)
        keys = []
        for k in table.keys:
            ann = find_annotation(k.annotations, "name")
            name = ann.string if ann else ".".join(k.expr).replace(" ", "")
            width = self.key_width(control, k.expr, f"{fq} key {name}")
            keys.append(Key(name, width, k.match_kind.upper()))
        actions: dict[str, str] = {}
        local_names: dict[str, str] = {}
        for ref, anns in table.actions:
            scopes = [SCOPES["@" + a.name] for a in anns if "@" + a.name in SCOPES]
            if len(scopes) > 1:
                self.problems.append(f"{fq}: action {ref} is both @tableonly and @defaultonly")
            action_name = self.action(control, ref, prefix)
            local_names[ref] = action_name
            actions[action_name] = scopes[0] if scopes else "TABLE_AND_DEFAULT"
        default, default_args = "NoAction", tuple[tuple[str, int], ...]()
        if table.default_action is not None:
            ref, args = table.default_action
            if ref not in local_names:
                self.problems.append(f"{fq}: default action {ref} is not in its action list")
                local_names[ref] = self.action(control, ref, prefix)
            default = local_names[ref]
            params = self.actions[default]
            if len(args) != len(params):
                self.problems.append(f"{fq}: default action {ref} takes {len(params)} arguments")
            default_args = tuple(
                (pname, eval_int(arg, self.consts))
                for (pname, _), arg in zip(params, args, strict=False)
            )
        else:
            # p4c would pick NoAction; the contract should not rest on a compiler default.
            self.problems.append(f"{fq}: no default_action; write it out")
        size_expr = table.properties.get("size")
        if size_expr is None:
            self.problems.append(f"{fq}: no size; every table's size belongs in size.p4")
        counter = table.properties.get("counters")
        counter_name = None
        if counter is not None:
            inst = control.instances.get(counter)
            if inst is None or inst.type_name != "direct_counter":
                raise P4SourceError(f"{fq}: counters = {counter} is not a direct_counter")
            unit = inst.args[0].split(".")[-1].strip() if inst.args else ""
            counter_name = _qualify(prefix, counter, inst.annotations)
            self.counters[counter_name] = (COUNTER_UNITS.get(unit, unit), fq)
        self.tables[fq] = Table(
            name=fq,
            keys=tuple(keys),
            actions=tuple(sorted(actions.items())),
            default_action=default,
            default_args=default_args,
            const_default=table.const_default,
            size=eval_int(size_expr, self.consts) if size_expr else 0,
            idle_timeout=table.properties.get("support_timeout", "false") == "true",
            direct_counter=counter_name,
        )

    def action(self, control: ControlDecl, ref: str, prefix: str) -> str:
        if ref in control.actions:
            decl = control.actions[ref]
            name = _qualify(prefix, ref, decl.annotations)
        elif ref in self.p.actions:
            decl = self.p.actions[ref]
            ann = find_annotation(decl.annotations, "name")
            name = ann.string.lstrip(".") if ann else ref
        elif ref == "NoAction":  # core.p4
            self.actions["NoAction"] = ()
            return "NoAction"
        else:
            raise P4SourceError(f"{prefix}: no action named {ref}")
        # Parameters with a direction are bound by the caller; P4Info lists the others.
        self.actions[name] = tuple(
            (p.name, self.width(p.type, f"{name}({p.name})"))
            for p in decl.params
            if not p.direction
        )
        return name

    def key_width(self, control: ControlDecl, expr: list[str], what: str) -> int:
        """Width of a key expression: a field path, optionally sliced."""
        tokens = list(expr)
        if len(tokens) >= 6 and tokens[-1] == "]" and tokens[-5] == "[" and tokens[-3] == ":":
            hi, lo = eval_int(tokens[-4], self.consts), eval_int(tokens[-2], self.consts)
            return hi - lo + 1
        path = [t for t in tokens if t != "."]
        if len(path) * 2 - 1 != len(tokens):
            raise P4SourceError(f"{what}: cannot read key expression {' '.join(expr)!r}")
        params = {p.name: p.type for p in control.params}
        t = params.get(path[0]) or control.variables.get(path[0])
        if t is None:
            raise P4SourceError(f"{what}: {path[0]} is not a parameter of {control.name}")
        for member in path[1:]:
            decl = self.p.struct(t)
            found = decl and next((f for f in decl.fields if f.name == member), None)
            if not found:
                raise P4SourceError(f"{what}: {t.name} has no field {member}")
            t = found.type
        return self.width(t, what)


def _qualify(prefix: str, local: str, annotations: tuple[Annotation, ...]) -> str:
    ann = find_annotation(annotations, "name")
    if ann is None:
        return f"{prefix}.{local}"
    name = ann.string
    return name[1:] if name.startswith(".") else f"{prefix}.{name}"


def pipeline_from_source(program: Program) -> tuple[Pipeline, list[str]]:
    """The contract a P4 program implies, and problems p4c would complain or warn about."""
    model = _SourceModel(program)
    pipeline = model.build()
    return pipeline, model.problems


# ------------------------------------------------------------------------------------------
# From P4Info
# ------------------------------------------------------------------------------------------


def pipeline_from_p4info(schema: P4Schema) -> Pipeline:
    """The contract a P4Info states, ids resolved to names."""
    info = schema.p4info
    actions = {a.preamble.name: tuple((p.name, p.bitwidth) for p in a.params) for a in info.actions}
    action_names = {a.preamble.id: a.preamble.name for a in info.actions}
    counters = {c.preamble.id: c for c in info.direct_counters}
    table_names = {t.preamble.id: t.preamble.name for t in info.tables}
    tables = {}
    for t in info.tables:
        default = t.initial_default_action
        default_name = action_names.get(default.action_id, f"<id {default.action_id:#x}>")
        params = dict(schema.action(default_name).params_by_id) if default_name in actions else {}
        tables[t.preamble.name] = Table(
            name=t.preamble.name,
            keys=tuple(
                Key(m.name, m.bitwidth, p4i.MatchField.MatchType.Name(m.match_type))
                for m in t.match_fields
            ),
            actions=tuple(
                sorted(
                    (
                        action_names.get(r.id, f"<id {r.id:#x}>"),
                        p4i.ActionRef.Scope.Name(r.scope),
                    )
                    for r in t.action_refs
                )
            ),
            default_action=default_name,
            default_args=tuple(
                (
                    params[a.param_id].name if a.param_id in params else f"<id {a.param_id}>",
                    int.from_bytes(a.value, "big"),
                )
                for a in default.arguments
            ),
            const_default=t.const_default_action_id != 0,
            size=t.size,
            idle_timeout=t.idle_timeout_behavior == p4i.Table.NOTIFY_CONTROL,
            direct_counter=next(
                (counters[r].preamble.name for r in t.direct_resource_ids if r in counters), None
            ),
        )
    direct_counters = {
        c.preamble.name: (
            p4i.CounterSpec.Unit.Name(c.spec.unit),
            table_names.get(c.direct_table_id, f"<id {c.direct_table_id:#x}>"),
        )
        for c in info.direct_counters
    }
    headers = {
        h.name: tuple((f.name, f.bitwidth) for f in h.fields) for h in schema.headers.values()
    }
    return Pipeline(tables, actions, direct_counters, headers, _digests(info))


def _member_width(spec: p4i.P4DataTypeSpec) -> int:
    """A bitstring member's width; -1 for anything a digest struct cannot hold."""
    if spec.WhichOneof("type_spec") != "bitstring":
        return -1
    bits = spec.bitstring
    kind = bits.WhichOneof("type_spec")
    return getattr(bits, kind).bitwidth if kind in ("bit", "int") else -1


def _digests(info: p4i.P4Info) -> dict[str, tuple[tuple[str, int], ...]]:
    out = {}
    for d in info.digests:
        struct = info.type_info.structs.get(d.type_spec.struct.name)
        members = struct.members if struct is not None else []
        out[d.preamble.name] = tuple((m.name, _member_width(m.type_spec)) for m in members)
    return out


# ------------------------------------------------------------------------------------------
# Comparison and id checks
# ------------------------------------------------------------------------------------------


def _diff_names(kind: str, a: set[str], b: set[str], a_name: str, b_name: str) -> list[str]:
    out = [f"{kind} {n} is in {a_name} but not in {b_name}" for n in sorted(a - b)]
    out += [f"{kind} {n} is in {b_name} but not in {a_name}" for n in sorted(b - a)]
    return out


def diff(a: Pipeline, b: Pipeline, a_name: str = "source", b_name: str = "P4Info") -> list[str]:
    """Every difference between two contracts, one sentence each; [] when they agree."""
    out: list[str] = []
    out += _diff_names("table", set(a.tables), set(b.tables), a_name, b_name)
    for name in sorted(set(a.tables) & set(b.tables)):
        ta, tb = a.tables[name], b.tables[name]
        if [k.name for k in ta.keys] != [k.name for k in tb.keys]:
            out.append(
                f"table {name}: keys {[k.name for k in ta.keys]} in {a_name}, "
                f"{[k.name for k in tb.keys]} in {b_name}"
            )
        for ka, kb in zip(ta.keys, tb.keys, strict=False):
            if ka.name == kb.name and ka != kb:
                out.append(
                    f"table {name} key {ka.name}: {ka.match_kind} {ka.bitwidth} bits in {a_name}, "
                    f"{kb.match_kind} {kb.bitwidth} bits in {b_name}"
                )
        for attr in (
            "actions",
            "default_action",
            "default_args",
            "const_default",
            "size",
            "idle_timeout",
            "direct_counter",
        ):
            va, vb = getattr(ta, attr), getattr(tb, attr)
            if va != vb:
                out.append(f"table {name}: {attr} {va!r} in {a_name}, {vb!r} in {b_name}")
    out += _diff_names("action", set(a.actions), set(b.actions), a_name, b_name)
    for name in sorted(set(a.actions) & set(b.actions)):
        if a.actions[name] != b.actions[name]:
            out.append(
                f"action {name}: parameters {a.actions[name]} in {a_name}, "
                f"{b.actions[name]} in {b_name}"
            )
    out += _diff_names(
        "direct counter", set(a.direct_counters), set(b.direct_counters), a_name, b_name
    )
    for name in sorted(set(a.direct_counters) & set(b.direct_counters)):
        if a.direct_counters[name] != b.direct_counters[name]:
            out.append(
                f"direct counter {name}: (unit, table) {a.direct_counters[name]} in {a_name}, "
                f"{b.direct_counters[name]} in {b_name}"
            )
    out += _diff_names(
        "controller header", set(a.controller_headers), set(b.controller_headers), a_name, b_name
    )
    for name in sorted(set(a.controller_headers) & set(b.controller_headers)):
        if a.controller_headers[name] != b.controller_headers[name]:
            out.append(
                f"controller header {name}: fields {a.controller_headers[name]} in {a_name}, "
                f"{b.controller_headers[name]} in {b_name}"
            )
    out += _diff_names("digest", set(a.digests), set(b.digests), a_name, b_name)
    for name in sorted(set(a.digests) & set(b.digests)):
        if a.digests[name] != b.digests[name]:
            out.append(
                f"digest {name}: fields {a.digests[name]} in {a_name}, "
                f"{b.digests[name]} in {b_name}"
            )
    return out


def _sequential(what: str, ids: list[int]) -> list[str]:
    want = list(range(1, len(ids) + 1))
    return [] if ids == want else [f"{what}: ids {ids}, p4c numbers them {want}"]


def check_ids(info: p4i.P4Info) -> list[str]:
    """Problems with P4Info ids and references; [] when all is well."""
    out: list[str] = []
    resources = [
        ("table", Prefix.TABLE, [t.preamble for t in info.tables]),
        ("action", Prefix.ACTION, [a.preamble for a in info.actions]),
        ("direct counter", Prefix.DIRECT_COUNTER, [c.preamble for c in info.direct_counters]),
        (
            "controller header",
            Prefix.CONTROLLER_HEADER,
            [h.preamble for h in info.controller_packet_metadata],
        ),
        ("digest", Prefix.DIGEST, [d.preamble for d in info.digests]),
    ]
    all_ids: Counter[int] = Counter()
    for kind, prefix, preambles in resources:
        aliases: Counter[str] = Counter()
        for pre in preambles:
            all_ids[pre.id] += 1
            if pre.id >> 24 != prefix or pre.id & 0xFFFFFF == 0:
                out.append(
                    f"{kind} {pre.name}: id {pre.id:#010x} lacks the {prefix:#04x} prefix "
                    f"of {prefix.name}"
                )
            alias = pre.alias or pre.name
            aliases[alias] += 1
            if not (alias == pre.name or pre.name.endswith("." + alias)):
                out.append(f"{kind} {pre.name}: alias {alias!r} is not a suffix of its name")
        out += [f"{kind} alias {a!r} is used {n} times" for a, n in aliases.items() if n > 1]
    out += [f"id {i:#010x} is used {n} times" for i, n in all_ids.items() if n > 1]

    actions = {a.preamble.id: a for a in info.actions}
    counters = {c.preamble.id: c for c in info.direct_counters}
    referenced = set()
    for t in info.tables:
        name = t.preamble.name
        out += _sequential(f"table {name} match fields", [m.id for m in t.match_fields])
        scopes = {}
        for ref in t.action_refs:
            referenced.add(ref.id)
            scopes[ref.id] = ref.scope
            if ref.id not in actions:
                out.append(f"table {name}: action ref {ref.id:#010x} is not an action")
            want = {1: ["@tableonly"], 2: ["@defaultonly"]}.get(ref.scope, [])
            if [a for a in ref.annotations if a in SCOPES] != want:
                out.append(
                    f"table {name}: action ref {ref.id:#010x} annotations disagree with scope"
                )
        default = t.initial_default_action.action_id
        if default and default not in scopes:
            out.append(f"table {name}: initial default action is not one of its actions")
        elif default and scopes[default] == p4i.ActionRef.TABLE_ONLY:
            out.append(f"table {name}: initial default action is @tableonly")
        elif default:
            nparams = len(actions[default].params) if default in actions else 0
            if len(t.initial_default_action.arguments) != nparams:
                out.append(f"table {name}: initial default action needs {nparams} arguments")
        for rid in t.direct_resource_ids:
            if rid not in counters:
                out.append(f"table {name}: direct resource {rid:#010x} is not a direct counter")
            elif counters[rid].direct_table_id != t.preamble.id:
                out.append(f"table {name}: its direct counter points at another table")
    for c in info.direct_counters:
        owners = [t for t in info.tables if c.preamble.id in t.direct_resource_ids]
        if len(owners) != 1:
            out.append(f"direct counter {c.preamble.name}: listed by {len(owners)} tables")
    for a in info.actions:
        out += _sequential(f"action {a.preamble.name} params", [p.id for p in a.params])
        if a.preamble.id not in referenced:
            out.append(f"action {a.preamble.name} is used by no table")
    for h in info.controller_packet_metadata:
        out += _sequential(f"controller header {h.preamble.name}", [m.id for m in h.metadata])
        bits = sum(m.bitwidth for m in h.metadata)
        if bits % 8:
            out.append(f"controller header {h.preamble.name}: {bits} bits is not whole bytes")
    for d in info.digests:
        name = d.preamble.name
        if d.type_spec.WhichOneof("type_spec") != "struct":
            out.append(f"digest {name}: its type is not a struct")
            continue
        struct_name = d.type_spec.struct.name
        if struct_name not in info.type_info.structs:
            out.append(f"digest {name}: struct {struct_name!r} is not in type_info")
        elif struct_name != name:
            out.append(f"digest {name}: p4c names a digest after its struct {struct_name!r}")
        else:
            members = [m.name for m in info.type_info.structs[struct_name].members]
            if len(set(members)) != len(members) or not members:
                out.append(f"digest {name}: struct members {members} are empty or repeated")
    return out
