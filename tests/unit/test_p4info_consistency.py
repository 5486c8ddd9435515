"""firewall.p4 and the hand-kept firewall.p4info.txtpb must state the same P4Runtime contract.

p4c cannot be installed here, so the P4 source is read by a small declaration reader
(p4source.py) and both sides are reduced to one id-free model (p4contract.py). Mutation
tests change a copy of either side and check that the checker reports it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from offload import names
from offload.p4schema import P4Schema
from offload.proto import p4i

try:  # tests/unit as a package, or as a directory on sys.path (pytest's default)
    from . import p4contract, p4source
except ImportError:
    import p4contract
    import p4source

REPO = p4source.REPO
P4_DIR = p4source.P4_DIR
INCLUDE = P4_DIR / "include"
CONTROL_DIR = INCLUDE / "control"


@pytest.fixture(scope="module")
def program() -> p4source.Program:
    return p4source.read_program()


@pytest.fixture(scope="module")
def schema() -> P4Schema:
    return P4Schema.load()


@pytest.fixture(scope="module")
def source_pipeline(program: p4source.Program) -> p4contract.Pipeline:
    pipeline, problems = p4contract.pipeline_from_source(program)
    assert problems == []
    return pipeline


def check_source(
    overrides: dict[Path, str] | None = None, defines: dict[str, str] | None = None
) -> list[str]:
    """Every problem and difference between (possibly changed) source and the P4Info."""
    program = p4source.read_program(overrides=overrides, defines=defines)
    pipeline, problems = p4contract.pipeline_from_source(program)
    return problems + p4contract.diff(pipeline, p4contract.pipeline_from_p4info(P4Schema.load()))


def check_p4info(info: p4i.P4Info, source: p4contract.Pipeline) -> list[str]:
    """Every id problem of a P4Info, and every difference from the source."""
    return p4contract.check_ids(info) + p4contract.diff(
        source, p4contract.pipeline_from_p4info(P4Schema(info))
    )


def replace_once(path: Path, old: str, new: str) -> dict[Path, str]:
    """A copy of one file with `old` replaced; `old` must occur exactly once."""
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times in {path}"
    return {path: text.replace(old, new)}


# ------------------------------------------------------------------------------------------
# The real files agree
# ------------------------------------------------------------------------------------------


def test_source_and_p4info_agree() -> None:
    assert check_source() == []


def test_p4info_ids_are_well_formed(schema: P4Schema) -> None:
    assert p4contract.check_ids(schema.p4info) == []


def test_model_covers_every_p4info_object(
    source_pipeline: p4contract.Pipeline, schema: P4Schema
) -> None:
    # Guards against a reader that finds nothing and so "agrees" with an empty P4Info.
    info = schema.p4info
    assert len(source_pipeline.tables) == len(info.tables) == 9
    assert len(source_pipeline.actions) == len(info.actions) == 16
    assert len(source_pipeline.direct_counters) == len(info.direct_counters) == 3
    assert len(source_pipeline.controller_headers) == len(info.controller_packet_metadata) == 2
    assert len(source_pipeline.digests) == len(info.digests) == 1
    assert len(source_pipeline.digests[names.LOG_DIGEST]) == 8
    keys = sum(len(t.keys) for t in source_pipeline.tables.values())
    assert keys == sum(len(t.match_fields) for t in info.tables) == 26


def test_names_module_matches_p4info(schema: P4Schema) -> None:
    tables = {names.SERVICE_CONFIG, names.L2_FORWARD, names.SRC_CLASS, names.DST_CLASS}
    tables |= {names.FLOW_CACHE, names.IDENTITY, names.ACL, names.ACL_AUDIT, names.LOG_RULES}
    assert tables == {t.preamble.name for t in schema.p4info.tables}
    actions = (
        {v for k, v in vars(names).items() if isinstance(v, str) and k.isupper() and "." in v}
        - tables
        - {names.ACL_COUNTER, names.ACL_AUDIT_COUNTER, names.FLOW_COUNTER}
    )
    assert actions | {names.NO_ACTION} == {a.preamble.name for a in schema.p4info.actions}
    assert {names.ACL_COUNTER, names.ACL_AUDIT_COUNTER, names.FLOW_COUNTER} == {
        c.preamble.name for c in schema.p4info.direct_counters
    }
    assert {names.PACKET_IN, names.PACKET_OUT} == set(schema.headers)
    assert [d.preamble.name for d in schema.p4info.digests] == [names.LOG_DIGEST]


def test_constants_match_names_module(program: p4source.Program) -> None:
    consts = program.const_values()
    assert consts["CPU_PORT"] == names.CPU_PORT
    assert consts["ETHERTYPE_SERVICE"] == names.SERVICE_ETHERTYPE
    for reason in ("MISS", "PUNT", "ALG", "IDENTITY_PENDING", "REJECT"):
        assert consts[f"REASON_{reason}"] == getattr(names.Reason, reason), reason
    for direction in ("UNKNOWN", "OUTBOUND", "INBOUND"):
        assert consts[f"DIRECTION_{direction}"] == getattr(names.Direction, direction)
    for verdict in ("ALLOW", "DROP", "REJECT", "SERVICE"):
        assert consts[f"VERDICT_{verdict}"] == getattr(names.Verdict, verdict), verdict


def test_service_header_is_packet_in_layout(program: p4source.Program) -> None:
    def layout(type_name: str) -> list[tuple[str, int | None]]:
        return [(f.name, program.width(f.type)) for f in program.types[type_name].fields]

    assert layout("service_t") == layout("packet_in_t")
    assert sum(w or 0 for _, w in layout("service_t")) == 8 * names.SERVICE_HEADER_LEN


# ------------------------------------------------------------------------------------------
# Layout conventions (CONVENTIONS.md: P4 layout, stable names, sizes in one place)
# ------------------------------------------------------------------------------------------


def test_each_control_file_has_one_guarded_control() -> None:
    files = sorted(CONTROL_DIR.glob("*.p4"))
    assert {f.stem for f in files} >= {"svc", "fwd", "classify", "flows", "ident", "acl"}
    for path in files:
        text = p4source.strip_comments(path.read_text())
        directives = re.findall(r"^\s*#\s*(\w+)\s*(\S*)", text, re.M)
        guard = directives[0][1]
        assert directives[0] == ("ifndef", guard), path
        assert directives[1] == ("define", guard), path
        assert directives[-1][0] == "endif", path
        assert len(re.findall(r"^\s*control\s+\w+", text, re.M)) == 1, path


def test_firewall_p4_holds_only_top_level_controls() -> None:
    text = p4source.strip_comments(p4source.MAIN_P4.read_text())
    assert not re.search(r"\b(table|action)\s+\w+", text)
    assert not re.search(r"^\s*(header|struct|parser)\b", text, re.M)
    controls = re.findall(r"^control\s+(\w+)", text, re.M)
    assert controls == [
        "FirewallVerifyChecksum",
        "FirewallIngress",
        "FirewallEgress",
        "FirewallComputeChecksum",
    ]
    assert "V1Switch(" in text


def test_every_table_size_comes_from_size_p4(program: p4source.Program) -> None:
    sizes = []
    for path in program.files:
        text = p4source.strip_comments(path.read_text())
        sizes += re.findall(r"\bsize\s*=\s*([^;]+);", text)
        if path.name != "size.p4":
            assert not re.search(r"#\s*define\s+\w*_SIZE\b", text), path
    assert len(sizes) == 9
    for expr in sizes:
        assert re.fullmatch(r"[A-Z0-9_]+_TABLE_SIZE", expr.strip()), expr
        defined_in = program.macro_files.get(expr.strip())
        assert defined_in is not None and defined_in.name == "size.p4", expr


def test_every_key_and_table_action_has_a_stable_name(program: p4source.Program) -> None:
    for control in program.controls.values():
        for table in control.tables.values():
            for key in table.keys:
                assert p4source.find_annotation(key.annotations, "name"), (table.name, key.expr)
            for ref, _ in table.actions:
                if ref in control.actions:
                    ann = p4source.find_annotation(control.actions[ref].annotations, "name")
                    assert ann is not None and ann.string == ref, (table.name, ref)


# ------------------------------------------------------------------------------------------
# Target macros (arch.p4)
# ------------------------------------------------------------------------------------------


def test_bmv2_is_the_default_target(program: p4source.Program) -> None:
    assert "TARGET_BMV2_V1MODEL" in program.macros
    assert program.macros["ACL_RANGE_MATCH"] == "range"
    assert program.macros["ACL_OPTIONAL_MATCH"] == "optional"


def test_ternary_target_changes_only_the_range_and_optional_keys() -> None:
    problems = check_source(defines={"TARGET_TERNARY_ACL": ""})
    assert sorted(problems) == [
        line
        for acl in (names.ACL, names.ACL_AUDIT)
        for line in (
            f"table {acl} key ip_proto: TERNARY 8 bits in source, OPTIONAL 8 bits in P4Info",
            f"table {acl} key l4_dst: TERNARY 16 bits in source, RANGE 16 bits in P4Info",
            f"table {acl} key l4_src: TERNARY 16 bits in source, RANGE 16 bits in P4Info",
        )
    ]


# ------------------------------------------------------------------------------------------
# The checker catches changes to the source...
# ------------------------------------------------------------------------------------------

SOURCE_MUTATIONS = [
    (
        "lpm-to-ternary",
        "control/classify.p4",
        'meta.lookup.ip_src : lpm @name("ip_src")',
        'meta.lookup.ip_src : ternary @name("ip_src")',
        f"table {names.SRC_CLASS} key ip_src: TERNARY 128 bits in source, LPM",
    ),
    (
        "key-renamed",
        "control/acl.p4",
        '@name("l4_dst");     // 16\n            meta.id_class        : ternary            '
        '@name("id_class");   // 32\n        }\n        actions = {\n            acl_allow',
        '@name("l4_dport");     // 16\n            meta.id_class        : ternary            '
        '@name("id_class");   // 32\n        }\n        actions = {\n            acl_allow',
        f"table {names.ACL}: keys",
    ),
    (
        "key-narrowed",
        "header.p4",
        "bit<8>    ip_proto;",
        "bit<4>    ip_proto;",
        f"table {names.FLOW_CACHE} key ip_proto: EXACT 4 bits in source",
    ),
    (
        "size",
        "size.p4",
        "#define ACL_TABLE_SIZE            65536",
        "#define ACL_TABLE_SIZE            1024",
        f"table {names.ACL}: size 1024 in source, 65536 in P4Info",
    ),
    (
        "param-width",
        "define.p4",
        "typedef bit<32>  rule_id_t;",
        "typedef bit<24>  rule_id_t;",
        f"action {names.ACL_ALLOW}: parameters (('rule_id', 24),)",
    ),
    (
        "no-idle-timeout",
        "control/flows.p4",
        "support_timeout = true;",
        "",
        f"table {names.FLOW_CACHE}: idle_timeout False in source, True in P4Info",
    ),
    (
        "scope-dropped",
        "control/flows.p4",
        "@tableonly flow_allow;",
        "flow_allow;",
        f"table {names.FLOW_CACHE}: actions",
    ),
    (
        "default-argument",
        "control/acl.p4",
        "default_action = acl_drop(0);",
        "default_action = acl_drop(7);",
        f"table {names.ACL}: default_args (('rule_id', 7),) in source",
    ),
    (
        "default-action",
        "control/acl.p4",
        "default_action = acl_drop(0);",
        "default_action = acl_allow(0);",
        f"table {names.ACL}: default_action '{names.ACL_ALLOW}' in source",
    ),
    (
        "default-not-listed",
        "control/fwd.p4",
        "            drop;\n",
        "",
        f"{names.L2_FORWARD}: default action drop is not in its action list",
    ),
    (
        "controller-header-width",
        "header.p4",
        "bit<8>  reason;        // REASON_*",
        "bit<16> reason;        // REASON_*",
        "controller header packet_in: fields",
    ),
    (
        "counter-detached",
        "control/acl.p4",
        "counters = acl_counter;",
        "",
        f"direct counter {names.ACL_COUNTER} is attached to no table",
    ),
    (
        "counter-unit",
        "control/flows.p4",
        "CounterType.packets_and_bytes",
        "CounterType.packets",
        f"direct counter {names.FLOW_COUNTER}: (unit, table) ('PACKETS'",
    ),
    (
        "instance-renamed",
        "../firewall.p4",
        "Acl() acl;",
        "Acl() acls;",
        f"table {names.ACL} is in P4Info but not in source",
    ),
    (
        "action-renamed",
        "control/svc.p4",
        '@name("set_service_port")',
        '@name("set_svc_port")',
        "action FirewallIngress.svc.set_svc_port is in source but not in P4Info",
    ),
    (
        "table-not-applied",
        "control/ident.p4",
        "identity.apply();",
        "",
        f"{names.IDENTITY} is never applied",
    ),
    (
        "digest-field-narrowed",
        "header.p4",
        "bit<8>     verdict;        // VERDICT_*",
        "bit<4>     verdict;        // VERDICT_*",
        f"digest {names.LOG_DIGEST}: fields",
    ),
    (
        "digest-field-dropped",
        "header.p4",
        "    bit<16>    l4_dst;\n}",
        "}",
        f"digest {names.LOG_DIGEST}: fields",
    ),
    (
        "digest-not-emitted",
        "control/acl.p4",
        "digest<log_digest_t>(LOG_DIGEST_RECEIVER, {",
        "log_tuple(LOG_DIGEST_RECEIVER, {",
        f"digest {names.LOG_DIGEST} is in P4Info but not in source",
    ),
    (
        "log-table-not-applied",
        "control/acl.p4",
        "log_rules.apply();",
        "",
        f"{names.LOG_RULES} is never applied",
    ),
    (
        "arch-macro",
        "arch.p4",
        "#define ACL_RANGE_MATCH    range",
        "#define ACL_RANGE_MATCH    ternary",
        f"table {names.ACL} key l4_src: TERNARY 16 bits in source, RANGE",
    ),
]


@pytest.mark.parametrize(
    ("path", "old", "new", "expected"),
    [m[1:] for m in SOURCE_MUTATIONS],
    ids=[m[0] for m in SOURCE_MUTATIONS],
)
def test_source_mutation_is_reported(path: str, old: str, new: str, expected: str) -> None:
    problems = check_source(overrides=replace_once(INCLUDE / path, old, new))
    assert any(expected in p for p in problems), problems


# ------------------------------------------------------------------------------------------
# ...and changes to the P4Info
# ------------------------------------------------------------------------------------------


def _table(info: p4i.P4Info, name: str) -> p4i.Table:
    return next(t for t in info.tables if t.preamble.name == name)


def _action(info: p4i.P4Info, name: str) -> p4i.Action:
    return next(a for a in info.actions if a.preamble.name == name)


def _set_key_width(info: p4i.P4Info) -> None:
    _table(info, names.ACL).match_fields[0].bitwidth = 32


def _set_key_kind(info: p4i.P4Info) -> None:
    _table(info, names.FLOW_CACHE).match_fields[2].match_type = p4i.MatchField.TERNARY


def _drop_action_ref(info: p4i.P4Info) -> None:
    del _table(info, names.L2_FORWARD).action_refs[1]


def _bad_table_prefix(info: p4i.P4Info) -> None:
    _table(info, names.SERVICE_CONFIG).preamble.id = 0x01000001


def _bad_counter_prefix(info: p4i.P4Info) -> None:
    counter = info.direct_counters[0]
    table = next(t for t in info.tables if counter.preamble.id in t.direct_resource_ids)
    counter.preamble.id = 0x12000001
    table.direct_resource_ids[:] = [0x12000001]


def _duplicate_id(info: p4i.P4Info) -> None:
    info.controller_packet_metadata[1].preamble.id = info.controller_packet_metadata[0].preamble.id


def _resize(info: p4i.P4Info) -> None:
    _table(info, names.ACL).size = 1024


def _no_idle_timeout(info: p4i.P4Info) -> None:
    _table(info, names.FLOW_CACHE).idle_timeout_behavior = p4i.Table.NO_TIMEOUT


def _rename_header_field(info: p4i.P4Info) -> None:
    info.controller_packet_metadata[1].metadata[1].name = "flag"


def _counter_unit(info: p4i.P4Info) -> None:
    info.direct_counters[0].spec.unit = p4i.CounterSpec.PACKETS


def _rename_param(info: p4i.P4Info) -> None:
    _action(info, names.SET_DST_CLASS).params[0].name = "class"


def _scope_without_annotation(info: p4i.P4Info) -> None:
    _table(info, names.ACL).action_refs[0].scope = p4i.ActionRef.TABLE_ONLY


def _default_argument(info: p4i.P4Info) -> None:
    _table(info, names.ACL).initial_default_action.arguments[0].value = b"\x01"


def _param_ids(info: p4i.P4Info) -> None:
    _action(info, names.SET_SRC_CLASS).params[1].id = 3


def _counter_on_wrong_table(info: p4i.P4Info) -> None:
    counter = next(c for c in info.direct_counters if c.preamble.name == names.FLOW_COUNTER)
    counter.direct_table_id = _table(info, names.ACL).preamble.id


def _digest_member_width(info: p4i.P4Info) -> None:
    struct = info.type_info.structs[names.LOG_DIGEST]
    struct.members[0].type_spec.bitstring.bit.bitwidth = 16


def _digest_renamed(info: p4i.P4Info) -> None:
    info.digests[0].preamble.name = info.digests[0].preamble.alias = "log_t"


def _digest_prefix(info: p4i.P4Info) -> None:
    info.digests[0].preamble.id = 0x02000123


def _digest_struct_missing(info: p4i.P4Info) -> None:
    del info.type_info.structs[names.LOG_DIGEST]


def _digest_dropped(info: p4i.P4Info) -> None:
    del info.digests[:]


P4INFO_MUTATIONS: list[tuple[Callable[[p4i.P4Info], None], str]] = [
    (_set_key_width, f"table {names.ACL} key src_class: TERNARY 64 bits in source, TERNARY 32"),
    (_set_key_kind, f"table {names.FLOW_CACHE} key ip_proto: EXACT 8 bits in source, TERNARY"),
    (_drop_action_ref, f"action {names.SET_MCAST_GROUP} is used by no table"),
    (_bad_table_prefix, f"table {names.SERVICE_CONFIG}: id 0x01000001 lacks the 0x02 prefix"),
    (_bad_counter_prefix, "id 0x12000001 lacks the 0x13 prefix of DIRECT_COUNTER"),
    (_duplicate_id, "is used 2 times"),
    (_resize, f"table {names.ACL}: size 65536 in source, 1024 in P4Info"),
    (_no_idle_timeout, f"table {names.FLOW_CACHE}: idle_timeout True in source, False"),
    (_rename_header_field, "controller header packet_out: fields"),
    (_counter_unit, "(unit, table) ('BOTH'"),
    (_rename_param, f"action {names.SET_DST_CLASS}: parameters"),
    (_scope_without_annotation, "annotations disagree with scope"),
    (_default_argument, f"table {names.ACL}: default_args (('rule_id', 0),) in source"),
    (_param_ids, f"action {names.SET_SRC_CLASS} params: ids [1, 3]"),
    (_counter_on_wrong_table, f"table {names.FLOW_CACHE}: its direct counter points at another"),
    (_digest_member_width, f"digest {names.LOG_DIGEST}: fields (('rule_id', 32)"),
    (_digest_renamed, "digest log_t is in P4Info but not in source"),
    (_digest_prefix, "digest log_digest_t: id 0x02000123 lacks the 0x05 prefix of DIGEST"),
    (_digest_struct_missing, "struct 'log_digest_t' is not in type_info"),
    (_digest_dropped, f"digest {names.LOG_DIGEST} is in source but not in P4Info"),
]


@pytest.mark.parametrize(
    ("mutate", "expected"), P4INFO_MUTATIONS, ids=[m[0].__name__[1:] for m in P4INFO_MUTATIONS]
)
def test_p4info_mutation_is_reported(
    mutate: Callable[[p4i.P4Info], None],
    expected: str,
    schema: P4Schema,
    source_pipeline: p4contract.Pipeline,
) -> None:
    info = p4i.P4Info()
    info.CopyFrom(schema.p4info)
    mutate(info)
    problems = check_p4info(info, source_pipeline)
    assert any(expected in p for p in problems), problems


# ------------------------------------------------------------------------------------------
# The preprocessor subset
# ------------------------------------------------------------------------------------------


def _preprocess(files: dict[str, str], defines: dict[str, str] | None = None) -> str:
    root = Path("/virtual")

    def read(path: Path) -> str:
        try:
            return files[str(path.relative_to(root))]
        except (KeyError, ValueError):
            raise FileNotFoundError(path) from None

    pre = p4source.Preprocessor(read, [root / "inc"], defines)
    return " ".join(pre.run(root / "main.p4").split())


def test_preprocessor_conditionals_and_macros() -> None:
    main = """
    #include <core.p4>
    #include "a.p4"
    #include "a.p4"
    #if defined(X) && !defined(Y)
    x_only
    #elif defined(Y) || Z == 2
    y_or_z SIZE
    #else
    neither "SIZE" // SIZE
    #endif
    """
    a = "#ifndef A\n#define A\n#define SIZE (4 * 2)\nonce\n#endif\n"
    files = {"main.p4": main, "inc/a.p4": a}
    assert _preprocess(files) == 'once neither "SIZE"'
    assert _preprocess(files, {"X": ""}) == "once x_only"
    assert _preprocess(files, {"X": "", "Y": ""}) == "once y_or_z (4 * 2)"
    assert _preprocess(files, {"Z": "2"}) == "once y_or_z (4 * 2)"


@pytest.mark.parametrize(
    ("main", "message"),
    [
        ('#include "missing.p4"', "not found"),
        ("#if 1\n", "without #endif"),
        ("#endif\n", "without #if"),
        ("#define F(x) x\n", "unsupported #define"),
        ("#error stop here\n", "#error stop here"),
    ],
)
def test_preprocessor_rejects(main: str, message: str) -> None:
    with pytest.raises(p4source.P4SourceError, match=re.escape(message)):
        _preprocess({"main.p4": main})


# ------------------------------------------------------------------------------------------
# With p4c: the compiler's own P4Info
# ------------------------------------------------------------------------------------------


@pytest.mark.bmv2
@pytest.mark.skipif(
    shutil.which("p4c") is None,
    reason="p4c is not on PATH (not installable from the registries here): "
    "cannot compile firewall.p4 and compare p4c's P4Info with the hand-kept one",
)
def test_p4c_generates_the_hand_kept_p4info(schema: P4Schema) -> None:
    result = subprocess.run(
        ["make", "-C", str(REPO), "p4"], capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    generated = P4Schema.load(REPO / "build" / "p4" / "firewall.p4info.txtpb")
    # Ids differ (p4c hashes names); everything else must be the same.
    assert (
        p4contract.diff(
            p4contract.pipeline_from_p4info(generated),
            p4contract.pipeline_from_p4info(schema),
            "p4c's P4Info",
            "the hand-kept P4Info",
        )
        == []
    )
    assert p4contract.check_ids(generated.p4info) == []
