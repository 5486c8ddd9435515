"""The part of the C preprocessor that p4c runs and firewall.p4 uses, and constant expressions.

#include (quoted: the including file's folder, then the include folders; <core.p4> and
<v1model.p4> are p4c's own and skipped), object-like #define and #undef, #if / #ifdef /
#ifndef / #elif / #else / #endif with defined(), !, &&, ||, == and !=, and #error.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
P4_DIR = REPO / "p4"
MAIN_P4 = P4_DIR / "firewall.p4"
INCLUDE_DIRS = (P4_DIR / "include",)
# Shipped with p4c; not read here.
SYSTEM_INCLUDES = frozenset({"core.p4", "v1model.p4"})


class P4SourceError(ValueError):
    """Source that this reader does not understand, or that cannot compile."""


# ------------------------------------------------------------------------------------------
# Preprocessor
# ------------------------------------------------------------------------------------------

_COMMENT_RE = re.compile(r'//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\\n])*"', re.S)
_DIRECTIVE_RE = re.compile(r"^\s*#\s*(\w+)\s*(.*?)\s*$")
_IDENT_OR_STRING_RE = re.compile(r'"(?:\\.|[^"\\])*"|[A-Za-z_]\w*')


def strip_comments(text: str) -> str:
    """Blank out comments, keeping string literals and the line count."""

    def repl(m: re.Match[str]) -> str:
        s = m.group(0)
        return s if s.startswith('"') else "\n" * s.count("\n") or " "

    return _COMMENT_RE.sub(repl, text)


class Preprocessor:
    """The subset of cpp that p4c runs and firewall.p4 uses."""

    def __init__(
        self,
        read: Callable[[Path], str],
        include_dirs: Sequence[Path] = INCLUDE_DIRS,
        defines: Mapping[str, str] | None = None,
    ) -> None:
        self.read = read
        self.include_dirs = tuple(include_dirs)
        self.macros: dict[str, str] = dict(defines or {})
        self.macro_files: dict[str, Path | None] = dict.fromkeys(self.macros)
        self.files: list[Path] = []

    def run(self, path: Path) -> str:
        """Preprocess one file and everything it includes."""
        out: list[str] = []
        self._file(path.resolve(), out, depth=0)
        return "\n".join(out)

    def _file(self, path: Path, out: list[str], depth: int) -> None:
        if depth > 20:
            raise P4SourceError(f"#include nested too deep at {path}")
        self.files.append(path)
        text = strip_comments(self.read(path).replace("\\\n", ""))
        # Each entry: (this branch active, some branch taken, enclosing active).
        stack: list[tuple[bool, bool, bool]] = []
        active = True
        for line in text.split("\n"):
            m = _DIRECTIVE_RE.match(line)
            if m is None:
                if active:
                    out.append(self._expand(line, set()))
                continue
            name, rest = m.group(1), m.group(2)
            if name in ("if", "ifdef", "ifndef"):
                if name == "if":
                    cond = active and self._eval(rest)
                else:
                    cond = active and ((rest in self.macros) == (name == "ifdef"))
                stack.append((cond, cond, active))
                active = cond
            elif name == "elif":
                if not stack:
                    raise P4SourceError(f"{path}: #elif without #if")
                _, taken, outer = stack[-1]
                cond = outer and not taken and self._eval(rest)
                stack[-1] = (cond, taken or cond, outer)
                active = cond
            elif name == "else":
                if not stack:
                    raise P4SourceError(f"{path}: #else without #if")
                _, taken, outer = stack[-1]
                stack[-1] = (outer and not taken, True, outer)
                active = outer and not taken
            elif name == "endif":
                if not stack:
                    raise P4SourceError(f"{path}: #endif without #if")
                active = stack.pop()[2]
            elif not active:
                continue
            elif name == "define":
                dm = re.match(r"([A-Za-z_]\w*)(\()?\s*(.*)$", rest)
                if dm is None or dm.group(2):
                    raise P4SourceError(f"{path}: unsupported #define {rest!r}")
                self.macros[dm.group(1)] = dm.group(3)
                self.macro_files[dm.group(1)] = path
            elif name == "undef":
                self.macros.pop(rest, None)
            elif name == "include":
                self._include(path, rest, out, depth)
            elif name == "error":
                raise P4SourceError(f"{path}: #error {rest}")
            elif name not in ("pragma", "line", "warning"):
                raise P4SourceError(f"{path}: unsupported directive #{name}")
        if stack:
            raise P4SourceError(f"{path}: #if without #endif")

    def _include(self, path: Path, spec: str, out: list[str], depth: int) -> None:
        m = re.fullmatch(r'"([^"]+)"|<([^>]+)>', spec)
        if m is None:
            raise P4SourceError(f"{path}: bad #include {spec!r}")
        name = m.group(1) or m.group(2)
        if name in SYSTEM_INCLUDES:
            return
        dirs = ([path.parent] if m.group(1) else []) + list(self.include_dirs)
        for d in dirs:
            candidate = (d / name).resolve()
            try:
                self.read(candidate)
            except FileNotFoundError:
                continue
            self._file(candidate, out, depth + 1)
            return
        raise P4SourceError(f"{path}: #include {spec} not found")

    def _expand(self, text: str, active: set[str]) -> str:
        def repl(m: re.Match[str]) -> str:
            word = m.group(0)
            if word.startswith('"') or word not in self.macros or word in active:
                return word
            return self._expand(self.macros[word], active | {word})

        return _IDENT_OR_STRING_RE.sub(repl, text)

    def _eval(self, expr: str) -> bool:
        """Evaluate an #if expression: defined(X), !, &&, ||, ==, !=, integers."""
        expr = re.sub(r"defined\s*\(\s*(\w+)\s*\)|defined\s+(\w+)", self._defined, expr)
        expr = self._expand(expr, set())
        expr = re.sub(r"\b[A-Za-z_]\w*\b", "0", expr)  # cpp: unknown identifiers are 0
        expr = expr.replace("&&", " and ").replace("||", " or ")
        expr = re.sub(r"!(?!=)", " not ", expr)
        return bool(eval_int(expr, {}))

    def _defined(self, m: re.Match[str]) -> str:
        return "1" if (m.group(1) or m.group(2)) in self.macros else "0"


# ------------------------------------------------------------------------------------------
# Constant expressions
# ------------------------------------------------------------------------------------------

_P4_INT_RE = re.compile(r"\b(\d+)[ws](0[xXbBoO][0-9a-fA-F_]+|\d[\d_]*)\b")


def p4_int(text: str) -> int:
    """The value of a P4 integer literal (16w0x88B5, 0x88B5, 8w0, 42)."""
    m = _P4_INT_RE.fullmatch(text)
    body = m.group(2) if m else text
    return int(body.replace("_", ""), 0)


_BINOPS: dict[type, Callable[[int, int], int]] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.LShift: lambda a, b: a << b,
    ast.RShift: lambda a, b: a >> b,
    ast.BitOr: lambda a, b: a | b,
    ast.BitAnd: lambda a, b: a & b,
}


def eval_int(expr: str, names: Mapping[str, int]) -> int:
    """Evaluate an integer constant expression (literals, names, + - * << >> | & and or not)."""
    py = _P4_INT_RE.sub(lambda m: str(p4_int(m.group(0))), expr)
    try:
        tree = ast.parse(py.strip(), mode="eval")
    except SyntaxError:
        raise P4SourceError(f"not a constant expression: {expr!r}") from None

    def ev(node: ast.AST) -> int:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return int(node.value)
        if isinstance(node, ast.Name) and node.id in names:
            return names[node.id]
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return _BINOPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return int(not ev(node.operand))
        if isinstance(node, ast.BoolOp):
            values = [ev(v) for v in node.values]
            return int(all(values) if isinstance(node.op, ast.And) else any(values))
        if isinstance(node, ast.Compare) and len(node.ops) == 1:
            a, b = ev(node.left), ev(node.comparators[0])
            if isinstance(node.ops[0], ast.Eq):
                return int(a == b)
            if isinstance(node.ops[0], ast.NotEq):
                return int(a != b)
        raise P4SourceError(f"not a constant expression: {expr!r}")

    return ev(tree)
