"""Reading composed YAML nodes with their paths and lines, collecting problems as it goes.

PyYAML's composed nodes keep each value's source position and its raw text. Working on nodes
rather than on loaded Python values gives messages a line number, catches duplicate keys (which
`yaml.safe_load` silently merges), and avoids YAML 1.1 surprises: `12:34:56:00:01:01` loads as a
base-60 integer and `no` as false, but the raw text is what an address or a name needs.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass

import yaml

from controlplane.policy.errors import Problem

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_NULL = "tag:yaml.org,2002:null"
_BOOL = "tag:yaml.org,2002:bool"
_TRUE = {"true", "yes", "on", "y"}
_DIGITS = re.compile(r"[0-9]+")


@dataclass(frozen=True, slots=True)
class At:
    """A node and the path that leads to it (`sections[0].rules[2].source`)."""

    node: yaml.Node
    path: str
    key_line: int = 0  # the line of the mapping key that holds the node, if any

    @property
    def line(self) -> int:
        """The 1-based source line of the item (its key's line for a mapping value)."""
        return self.key_line or int(self.node.start_mark.line) + 1

    @property
    def is_null(self) -> bool:
        """Whether the node is an empty value (`key:` or `~`)."""
        return isinstance(self.node, yaml.ScalarNode) and self.node.tag == _NULL


def describe(node: yaml.Node) -> str:
    """What a node holds, for 'expected X, got Y' messages."""
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if node.tag == _NULL:
        return "nothing"
    return f"{node.value!r}"


def suggest(word: str, choices: Iterable[str]) -> str:
    """`; did you mean 'x'?` when a close match exists, else an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


class Reader:
    """Converts nodes to values; every problem lands in `problems`, every path in `locations`."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.locations: dict[str, int] = {}

    def at(self, node: yaml.Node, path: str, key_line: int = 0) -> At:
        """Wrap a node, remembering where its path starts in the file."""
        cursor = At(node, path, key_line)
        self.locations.setdefault(path, cursor.line)
        return cursor

    def problem(self, at: At, message: str) -> None:
        """Record a problem at a node."""
        self.problems.append(Problem(at.line, at.path, message))

    def parse(self, text: str) -> At | None:
        """Compose a document; a YAML syntax error becomes a problem with its line."""
        try:
            node = yaml.compose(text, Loader=_Loader)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark is not None else 0
            what = " ".join(p for p in (exc.context, exc.problem) if p)
            self.problems.append(Problem(line, "", f"YAML syntax error: {what}"))
            return None
        except yaml.YAMLError as exc:
            self.problems.append(Problem(0, "", f"YAML error: {exc}"))
            return None
        if node is None:
            return None
        return self.at(node, "")

    @staticmethod
    def child(path: str, key: str) -> str:
        """The path of a mapping key under `path`."""
        return f"{path}.{key}" if path else key

    def pairs(self, at: At, what: str) -> list[tuple[str, At]] | None:
        """A mapping's (key, value) pairs in order; duplicate keys are problems."""
        if at.is_null:
            return []
        if not isinstance(at.node, yaml.MappingNode):
            self.problem(at, f"expected {what}, got {describe(at.node)}")
            return None
        out: list[tuple[str, At]] = []
        seen: dict[str, int] = {}
        for key_node, value_node in at.node.value:
            key_at = At(key_node, at.path)
            if not isinstance(key_node, yaml.ScalarNode) or key_at.is_null:
                self.problem(key_at, f"expected a name as key, got {describe(key_node)}")
                continue
            key = str(key_node.value)
            if key in seen:
                self.problem(
                    At(key_node, self.child(at.path, key)),
                    f"duplicate key {key!r} (first at line {seen[key]})",
                )
                continue
            seen[key] = key_at.line
            out.append((key, self.at(value_node, self.child(at.path, key), key_at.line)))
        return out

    def mapping(
        self,
        at: At,
        keys: Collection[str],
        what: str,
        required: Collection[str] = (),
    ) -> dict[str, At] | None:
        """A mapping with known keys: unknown keys and missing required ones are problems."""
        pairs = self.pairs(at, what)
        if pairs is None:
            return None
        out: dict[str, At] = {}
        for key, value in pairs:
            if key not in keys:
                self.problem(
                    At(value.node, value.path),
                    f"unknown key {key!r}{suggest(key, keys)} (expected one of: "
                    f"{', '.join(sorted(keys))})",
                )
                continue
            out[key] = value
        for key in required:
            if key not in out:
                self.problem(at, f"missing key {key!r} in {what}")
        return out

    def sequence(self, at: At, what: str) -> list[At] | None:
        """A list's items (an empty value is an empty list)."""
        if at.is_null:
            return []
        if not isinstance(at.node, yaml.SequenceNode):
            self.problem(at, f"expected {what}, got {describe(at.node)}")
            return None
        return [self.at(n, f"{at.path}[{i}]") for i, n in enumerate(at.node.value)]

    def one_or_many(self, at: At) -> list[At]:
        """A list's items, or the node itself when it is not a list."""
        if isinstance(at.node, yaml.SequenceNode):
            return [self.at(n, f"{at.path}[{i}]") for i, n in enumerate(at.node.value)]
        return [at]

    def text(self, at: At, what: str) -> str | None:
        """A scalar's raw text, whatever YAML would have made of it."""
        if not isinstance(at.node, yaml.ScalarNode) or at.is_null:
            self.problem(at, f"expected {what}, got {describe(at.node)}")
            return None
        value = str(at.node.value).strip()
        if not value:
            self.problem(at, f"expected {what}, got an empty string")
            return None
        return value

    def texts(self, at: At, what: str) -> list[tuple[str, At]]:
        """One text or a list of texts, each with its node."""
        if at.is_null:
            return []
        out = []
        for item in self.one_or_many(at):
            value = self.text(item, what)
            if value is not None:
                out.append((value, item))
        return out

    def integer(self, at: At, low: int, high: int, what: str) -> int | None:
        """A decimal integer in [low, high]."""
        raw = self.text(at, what)
        if raw is None:
            return None
        if not _DIGITS.fullmatch(raw):
            self.problem(at, f"expected {what} (a number {low}..{high}), got {raw!r}")
            return None
        value = int(raw)
        if not low <= value <= high:
            self.problem(at, f"{what} {value} is out of range {low}..{high}")
            return None
        return value

    def boolean(self, at: At, what: str) -> bool | None:
        """true or false."""
        if not isinstance(at.node, yaml.ScalarNode) or at.node.tag != _BOOL:
            self.problem(at, f"expected true or false for {what}, got {describe(at.node)}")
            return None
        return str(at.node.value).lower() in _TRUE

    def choice(self, at: At, choices: Collection[str], what: str) -> str | None:
        """One of a fixed set of words."""
        raw = self.text(at, what)
        if raw is None:
            return None
        if raw not in choices:
            self.problem(
                at,
                f"{what} {raw!r} is not one of: {', '.join(choices)}{suggest(raw, choices)}",
            )
            return None
        return raw
