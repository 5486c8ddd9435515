"""The rule compiler: resolved policy -> P4 table entries, plus a reference evaluator.

`offload.compiler.delta.diff(old, new)` gives the writes between two compiled policies.
"""

from offload.compiler.classes import ClassTable
from offload.compiler.compile import (
    CompiledPolicy,
    CompileError,
    CompileOptions,
    Compiler,
    CompileStats,
    compile_policy,
)
from offload.compiler.encoding import Encoding, EncodingError
from offload.compiler.reference import Packet, Tables, Verdict, evaluate, evaluate_audit
from offload.compiler.rules import (
    AddressGroup,
    ResolvedPolicy,
    ResolvedRule,
    ResolvedWorkload,
    Term,
)

__all__ = [
    "AddressGroup",
    "ClassTable",
    "CompileError",
    "CompileOptions",
    "CompileStats",
    "CompiledPolicy",
    "Compiler",
    "Encoding",
    "EncodingError",
    "Packet",
    "ResolvedPolicy",
    "ResolvedRule",
    "ResolvedWorkload",
    "Tables",
    "Term",
    "Verdict",
    "compile_policy",
    "evaluate",
    "evaluate_audit",
]
