"""A small reader of firewall.p4's declarations, for checking them against P4Info.

Not a P4 compiler: after preprocessing (p4cpp.py) it reads declarations only — typedefs,
constants, headers and structs, controls with their actions, tables and instances, and the
package instantiation. Statement bodies are skipped except to see which tables and control
instances `apply` calls, since p4c drops the ones never applied.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

try:  # tests/unit as a package, or as a directory on sys.path (pytest's default)
    from .p4cpp import (
        INCLUDE_DIRS,
        MAIN_P4,
        P4_DIR,
        REPO,
        P4SourceError,
        Preprocessor,
        eval_int,
        strip_comments,
    )
except ImportError:
    from p4cpp import (
        INCLUDE_DIRS,
        MAIN_P4,
        P4_DIR,
        REPO,
        P4SourceError,
        Preprocessor,
        eval_int,
        strip_comments,
    )

__all__ = [
    "INCLUDE_DIRS",
    "MAIN_P4",
    "P4_DIR",
    "REPO",
    "P4SourceError",
    "Preprocessor",
    "eval_int",
    "strip_comments",
]

# ------------------------------------------------------------------------------------------
# Declarations
# ------------------------------------------------------------------------------------------

_TOKEN_RE = re.compile(
    r"""(?P<ws>\s+)
    |(?P<string>"(?:\\.|[^"\\])*")
    |(?P<number>\d+[ws](?:0[xXbBoO][0-9a-fA-F_]+|\d[\d_]*)|0[xXbBoO][0-9a-fA-F_]+|\d[\d_]*)
    |(?P<ident>[A-Za-z_]\w*)
    |(?P<punct>&&&|\+\+|\.\.|<<|==|!=|<=|>=|&&|\|\||[{}()\[\];:,.<>=@!~&|^+\-*/%?])
    """,
    re.X,
)


def tokenize(text: str) -> list[str]:
    """Split preprocessed P4 into tokens (`>>` stays two tokens, as in `bit<bit<8>>`)."""
    tokens: list[str] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if m is None:
            raise P4SourceError(f"cannot tokenize near {text[pos : pos + 40]!r}")
        if m.lastgroup != "ws":
            tokens.append(m.group(0))
        pos = m.end()
    return tokens


@dataclass(frozen=True)
class Annotation:
    """`@name(body)`; body is the text between the parentheses."""

    name: str
    body: str

    @property
    def string(self) -> str:
        """The body as a string literal's value (for @name("x"), @controller_header("x"))."""
        m = re.fullmatch(r'\s*"((?:\\.|[^"\\])*)"\s*', self.body)
        if m is None:
            raise P4SourceError(f"@{self.name} needs one string, not ({self.body})")
        return m.group(1)


def find_annotation(annotations: Sequence[Annotation], name: str) -> Annotation | None:
    """The annotation called `name`, if present."""
    return next((a for a in annotations if a.name == name), None)


@dataclass(frozen=True)
class TypeRef:
    """A type as written: `bit` with a width, or a name (typedef, header, struct...)."""

    name: str
    width: int | None = None


@dataclass(frozen=True)
class Member:
    """A header/struct field, or a parameter (with its direction)."""

    name: str
    type: TypeRef
    direction: str = ""
    annotations: tuple[Annotation, ...] = ()


@dataclass
class TypeDecl:
    """A header or struct type."""

    kind: str
    name: str
    fields: list[Member]
    annotations: tuple[Annotation, ...]


@dataclass
class ActionDecl:
    """An action: its local name, annotations and parameters."""

    name: str
    annotations: tuple[Annotation, ...]
    params: list[Member]
    digests: list[str] = field(default_factory=list)


@dataclass
class KeyDecl:
    """One key element: `expr : match_kind @name("...")`."""

    expr: list[str]
    match_kind: str
    annotations: tuple[Annotation, ...]


@dataclass
class TableDecl:
    """A table's properties as written."""

    name: str
    annotations: tuple[Annotation, ...]
    keys: list[KeyDecl] = field(default_factory=list)
    actions: list[tuple[str, tuple[Annotation, ...]]] = field(default_factory=list)
    default_action: tuple[str, list[str]] | None = None
    const_default: bool = False
    properties: dict[str, str] = field(default_factory=dict)


@dataclass
class InstanceDecl:
    """`Type(args) name;`: an extern or control instance."""

    type_name: str
    args: list[str]
    name: str
    annotations: tuple[Annotation, ...]


@dataclass
class ControlDecl:
    """A control: parameters, local declarations and what its apply block applies."""

    name: str
    params: list[Member]
    actions: dict[str, ActionDecl] = field(default_factory=dict)
    tables: dict[str, TableDecl] = field(default_factory=dict)
    instances: dict[str, InstanceDecl] = field(default_factory=dict)
    variables: dict[str, TypeRef] = field(default_factory=dict)
    applied: set[str] = field(default_factory=set)
    digests: list[str] = field(default_factory=list)  # T of each `digest<T>(...)` call


@dataclass
class Program:
    """Everything the reader found, after preprocessing."""

    typedefs: dict[str, TypeRef] = field(default_factory=dict)
    types: dict[str, TypeDecl] = field(default_factory=dict)
    consts: dict[str, tuple[TypeRef, str]] = field(default_factory=dict)
    controls: dict[str, ControlDecl] = field(default_factory=dict)
    parsers: set[str] = field(default_factory=set)
    actions: dict[str, ActionDecl] = field(default_factory=dict)
    main: InstanceDecl | None = None
    macros: dict[str, str] = field(default_factory=dict)
    macro_files: dict[str, Path | None] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)

    def const_values(self) -> dict[str, int]:
        """Integer values of the `const` declarations that are plain constant expressions."""
        values: dict[str, int] = {}
        for name, (_, expr) in self.consts.items():
            try:
                values[name] = eval_int(expr, values)
            except P4SourceError:
                continue
        return values

    def width(self, t: TypeRef) -> int | None:
        """Bit width of a type, following typedefs; None for headers, structs, errors."""
        seen: set[str] = set()
        while t.width is None and t.name in self.typedefs and t.name not in seen:
            seen.add(t.name)
            t = self.typedefs[t.name]
        if t.name == "bool":
            return 1
        return t.width

    def struct(self, t: TypeRef) -> TypeDecl | None:
        """The header/struct a type names, following typedefs."""
        while t.name in self.typedefs:
            t = self.typedefs[t.name]
        if t.name == "standard_metadata_t":
            return STANDARD_METADATA
        return self.types.get(t.name)


# v1model's standard_metadata_t fields (the ones a key could use), so that key widths
# resolve without reading v1model.p4.
STANDARD_METADATA = TypeDecl(
    "struct",
    "standard_metadata_t",
    [
        Member(n, TypeRef("bit", w))
        for n, w in (
            ("ingress_port", 9),
            ("egress_spec", 9),
            ("egress_port", 9),
            ("instance_type", 32),
            ("packet_length", 32),
            ("mcast_grp", 16),
            ("egress_rid", 16),
            ("checksum_error", 1),
            ("priority", 3),
        )
    ],
    (),
)


class _Reader:
    """Recursive descent over the token list, declarations only."""

    def __init__(self, tokens: list[str], program: Program) -> None:
        self.t = tokens
        self.i = 0
        self.p = program

    # -- token helpers ------------------------------------------------------------------
    def peek(self, k: int = 0) -> str:
        j = self.i + k
        return self.t[j] if j < len(self.t) else ""

    def next(self) -> str:
        if self.i >= len(self.t):
            raise P4SourceError("unexpected end of program")
        tok = self.t[self.i]
        self.i += 1
        return tok

    def expect(self, tok: str) -> None:
        got = self.next()
        if got != tok:
            context = " ".join(self.t[max(0, self.i - 8) : self.i + 4])
            raise P4SourceError(f"expected {tok!r}, got {got!r} near: {context}")

    def accept(self, tok: str) -> bool:
        if self.peek() == tok:
            self.i += 1
            return True
        return False

    def ident(self) -> str:
        tok = self.next()
        if not re.fullmatch(r"[A-Za-z_]\w*", tok):
            raise P4SourceError(f"expected a name, got {tok!r}")
        return tok

    def balanced(self, open_: str, close: str) -> list[str]:
        """Tokens between a bracket pair; the opening one is next."""
        self.expect(open_)
        depth, body = 1, list[str]()
        while True:
            tok = self.next()
            if tok == open_:
                depth += 1
            elif tok == close:
                depth -= 1
                if depth == 0:
                    return body
            body.append(tok)

    def until(self, *stops: str) -> list[str]:
        """Tokens up to (not including) a stop token at bracket depth 0."""
        depth, body = 0, list[str]()
        while True:
            tok = self.peek()
            if depth == 0 and tok in stops:
                return body
            if tok in ("(", "[", "{"):
                depth += 1
            elif tok in (")", "]", "}"):
                depth -= 1
            body.append(self.next())

    def annotations(self) -> tuple[Annotation, ...]:
        found = []
        while self.peek() == "@":
            self.next()
            name = self.ident()
            body: list[str] = []
            if self.peek() == "(":
                body = self.balanced("(", ")")
            elif self.peek() == "[":
                body = self.balanced("[", "]")
            found.append(Annotation(name, " ".join(body)))
        return tuple(found)

    def type_ref(self) -> TypeRef:
        name = self.ident()
        if name in ("bit", "int", "varbit"):
            self.expect("<")
            width = self.until(">")
            self.expect(">")
            return TypeRef(name, eval_int(" ".join(width), self.p.const_values()))
        if self.peek() == "<":
            self.balanced("<", ">")  # generic instance type: the name is enough here
        return TypeRef(name)

    def members(self, *, with_direction: bool, close: str, sep: str) -> list[Member]:
        result = []
        while not self.accept(close):
            anns = self.annotations()
            direction = ""
            if with_direction and self.peek() in ("in", "out", "inout"):
                direction = self.next()
            t = self.type_ref()
            result.append(Member(self.ident(), t, direction, anns))
            if sep == ";" or self.peek() != close:
                self.expect(sep)
        return result

    # -- top level ----------------------------------------------------------------------
    def program(self) -> None:
        while self.i < len(self.t):
            anns = self.annotations()
            tok = self.peek()
            if tok in ("typedef", "type"):
                self.next()
                t = self.type_ref()
                self.p.typedefs[self.ident()] = t
                self.expect(";")
            elif tok == "const":
                self.next()
                t = self.type_ref()
                name = self.ident()
                self.expect("=")
                self.p.consts[name] = (t, " ".join(self.until(";")))
                self.expect(";")
            elif tok in ("header", "struct", "header_union"):
                self.next()
                name = self.ident()
                self.expect("{")
                fields = self.members(with_direction=False, close="}", sep=";")
                self.p.types[name] = TypeDecl(tok, name, fields, anns)
            elif tok in ("error", "match_kind"):
                self.next()
                self.balanced("{", "}")
            elif tok == "enum":
                self.until("{")
                self.balanced("{", "}")
            elif tok in ("parser", "control"):
                self.next()
                self.block(tok)
            elif tok == "action":
                action = self.action(anns)
                self.p.actions[action.name] = action
            elif tok in ("extern", "package"):
                self.until(";", "{")
                if self.peek() == "{":
                    self.balanced("{", "}")
                else:
                    self.expect(";")
            elif re.fullmatch(r"[A-Za-z_]\w*", tok) and self.peek(1) == "(":
                self.p.main = self.instance(anns)
            elif tok == ";":
                self.next()
            else:
                raise P4SourceError(f"unexpected {tok!r} at top level")

    def block(self, kind: str) -> None:
        name = self.ident()
        if self.peek() == "<":
            self.balanced("<", ">")
        self.expect("(")
        params = self.members(with_direction=True, close=")", sep=",")
        if self.peek() == "(":
            self.balanced("(", ")")  # constructor parameters
        if self.accept(";"):
            return  # a type declaration only
        if kind == "parser":
            self.balanced("{", "}")
            self.p.parsers.add(name)
            return
        control = ControlDecl(name, params)
        self.expect("{")
        while not self.accept("}"):
            anns = self.annotations()
            tok = self.peek()
            if tok == "action":
                action = self.action(anns)
                control.actions[action.name] = action
                control.digests += action.digests
            elif tok == "table":
                table = self.table(anns)
                control.tables[table.name] = table
            elif tok == "apply":
                self.next()
                body = self.balanced("{", "}")
                for j in range(len(body) - 3):
                    if body[j + 1 : j + 4] == [".", "apply", "("]:
                        control.applied.add(body[j])
                control.digests += _digest_calls(body)
            elif tok == "const":
                self.until(";")
                self.expect(";")
            elif self.peek(1) == "(" or (self.peek(1) == "<" and tok != "bit"):
                inst = self.instance(anns)
                control.instances[inst.name] = inst
            else:
                t = self.type_ref()
                control.variables[self.ident()] = t
                self.until(";")
                self.expect(";")
        self.p.controls[name] = control

    def instance(self, anns: tuple[Annotation, ...]) -> InstanceDecl:
        type_name = self.ident()
        if self.peek() == "<":
            self.balanced("<", ">")
        args = _split_commas(self.balanced("(", ")"))
        name = self.ident()
        self.expect(";")
        return InstanceDecl(type_name, args, name, anns)

    def action(self, anns: tuple[Annotation, ...]) -> ActionDecl:
        self.expect("action")
        name = self.ident()
        self.expect("(")
        params = self.members(with_direction=True, close=")", sep=",")
        body = self.balanced("{", "}")
        return ActionDecl(name, anns, params, _digest_calls(body))

    def table(self, anns: tuple[Annotation, ...]) -> TableDecl:
        self.expect("table")
        table = TableDecl(self.ident(), anns)
        self.expect("{")
        while not self.accept("}"):
            self.annotations()
            const = self.accept("const")
            prop = self.ident()
            self.expect("=")
            if prop == "key":
                self.expect("{")
                while not self.accept("}"):
                    expr = self.until(":")
                    self.expect(":")
                    kind = self.ident()
                    table.keys.append(KeyDecl(expr, kind, self.annotations()))
                    self.expect(";")
            elif prop == "actions":
                self.expect("{")
                while not self.accept("}"):
                    ref_anns = self.annotations()
                    ref = self.ident()
                    if self.peek() == "(":
                        self.balanced("(", ")")
                    table.actions.append((ref, ref_anns))
                    self.expect(";")
            elif prop == "default_action":
                name = self.ident()
                args = _split_commas(self.balanced("(", ")")) if self.peek() == "(" else []
                table.default_action = (name, args)
                table.const_default = const
                self.expect(";")
            elif prop == "entries":
                self.balanced("{", "}")
                table.properties[prop] = "..."
            else:
                table.properties[prop] = " ".join(self.until(";"))
                self.expect(";")
        return table


def _digest_calls(body: list[str]) -> list[str]:
    """The type argument of every `digest<T>(` call in a statement body."""
    return [
        body[j + 2]
        for j in range(len(body) - 4)
        if body[j] == "digest" and body[j + 1] == "<" and body[j + 3] == ">" and body[j + 4] == "("
    ]


def _split_commas(tokens: list[str]) -> list[str]:
    parts, depth, cur = list[str](), 0, list[str]()
    for tok in tokens:
        if tok in ("(", "[", "{"):
            depth += 1
        elif tok in (")", "]", "}"):
            depth -= 1
        if tok == "," and depth == 0:
            parts.append(" ".join(cur))
            cur = []
        else:
            cur.append(tok)
    if cur:
        parts.append(" ".join(cur))
    return parts


def read_program(
    main: Path = MAIN_P4,
    *,
    overrides: Mapping[Path, str] | None = None,
    defines: Mapping[str, str] | None = None,
    include_dirs: Sequence[Path] = INCLUDE_DIRS,
) -> Program:
    """Preprocess and read a P4 program; `overrides` replaces file contents (for mutations)."""
    patched = {p.resolve(): text for p, text in (overrides or {}).items()}

    def read(path: Path) -> str:
        if path in patched:
            return patched[path]
        return path.read_text()

    pre = Preprocessor(read, include_dirs, defines)
    text = pre.run(main)
    program = Program(macros=pre.macros, macro_files=pre.macro_files, files=pre.files)
    _Reader(tokenize(text), program).program()
    return program
