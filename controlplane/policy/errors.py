"""What is wrong with a policy, and where: one exception carrying every problem found."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, order=True)
class Problem:
    """One error or warning: line (1-based, 0 if unknown), path to the item, what is wrong."""

    line: int
    path: str
    message: str

    def format(self, filename: str = "<policy>") -> str:
        """`file:line: path: message`, the way compilers report."""
        where = f"{filename}:{self.line}" if self.line else filename
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class PolicyError(ValueError):
    """A policy that cannot be used; `problems` lists every error found, in file order."""

    def __init__(self, problems: Iterable[Problem], filename: str = "<policy>") -> None:
        self.problems = sorted(set(problems))
        self.filename = filename
        lines = [p.format(filename) for p in self.problems]
        count = len(lines)
        super().__init__(
            f"{count} problem{'s' if count != 1 else ''} in {filename}:\n" + "\n".join(lines)
        )
