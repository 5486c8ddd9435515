"""Compiled entries as readable text (for people and golden files) and the compile report."""

from __future__ import annotations

from typing import Any

from offload import names
from offload.compiler.compile import CompiledPolicy
from offload.compiler.encoding import Encoding
from offload.entries import Entry, Exact, FieldMatch, Lpm, Optional, Range, Ternary
from offload.p4values import lpm128_to_network

_PROTOCOLS = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6"}


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def icmp_text(fm: FieldMatch) -> str | None:
    """An ICMP l4_dst key (type << 8 | code) as `type T`, `types T-U` or `type T code C`, when
    it is one."""
    match fm:
        case Range(lo, hi) if lo >> 8 == hi >> 8 and (lo & 0xFF, hi & 0xFF) == (0, 0xFF):
            return f"type {lo >> 8}"
        case Range(lo, hi) if (lo & 0xFF, hi & 0xFF) == (0, 0xFF):
            return f"types {lo >> 8}-{hi >> 8}"
        case Range(lo, hi) if lo == hi:
            return f"type {lo >> 8} code {lo & 0xFF}"
        case Exact(v):
            return f"type {v >> 8} code {v & 0xFF}"
        case Ternary(v, 0xFF00):
            return f"type {v >> 8}"
        case Ternary(v, 0xFFFF):
            return f"type {v >> 8} code {v & 0xFF}"
    return None


def _key_text(name: str, fm: FieldMatch, compiled: CompiledPolicy, icmp: bool = False) -> str:
    if icmp and name == "l4_dst":
        text = icmp_text(fm)
        if text is not None:
            return text
    if name in ("src_class", "dst_class") and isinstance(fm, Ternary):
        enc = compiled.src_class.encoding if name == "src_class" else compiled.dst_class.encoding
        return enc.label(fm.value, fm.mask)
    match fm:
        case Lpm(v, plen):
            return str(lpm128_to_network(v, plen))
        case Optional(v) | Exact(v) if name == "ip_proto":
            return _PROTOCOLS.get(v, str(v))
        case Exact(v) if name == "eth_dst":
            return ":".join(f"{b:02x}" for b in v.to_bytes(6, "big"))
        case Exact(v) | Optional(v):
            return str(v)
        case Range(lo, hi):
            return str(lo) if lo == hi else f"{lo}-{hi}"
        case Ternary(v, m) if (
            name in ("l4_src", "l4_dst") and (m ^ 0xFFFF) & ((m ^ 0xFFFF) + 1) == 0
        ):
            # A prefix of a port range: show the ports it covers too.
            hi = v | (m ^ 0xFFFF)
            return f"{v:#x}&&&{m:#x}({v}-{hi})" if hi != v else f"{v:#x}&&&{m:#x}({v})"
        case Ternary(v, m):
            return f"{v:#x}&&&{m:#x}"
    return repr(fm)


def _class_text(encoding: Encoding, class_id: int) -> str:
    return f"{class_id:#x} {{{','.join(encoding.groups_of(class_id))}}}"


def entry_text(entry: Entry, compiled: CompiledPolicy) -> str:
    """One entry as `keys -> action(params)`, with group and rule names."""
    if entry.is_default:
        keys = "(default)"
    else:
        proto = entry.match_dict.get("ip_proto")
        icmp = isinstance(proto, Optional | Exact) and proto.value in (1, 58)
        keys = " ".join(f"{k}={_key_text(k, fm, compiled, icmp)}" for k, fm in entry.match)
        keys = keys or "*"
    params = []
    for k, v in entry.params:
        if k == "rule_id" and v in compiled.rule_names:
            params.append(f"rule={compiled.rule_names[v]}")
        elif k == "class_id":
            enc = (
                compiled.src_class.encoding
                if entry.table == names.SRC_CLASS
                else compiled.dst_class.encoding
            )
            params.append(f"class={_class_text(enc, v)}")
        else:
            params.append(f"{k}={v}")
    prio = f"[{entry.priority}] " if entry.priority else ""
    return f"{prio}{keys} -> {_short(entry.action)}({', '.join(params)})"


def sort_key(entry: Entry) -> tuple[object, ...]:
    """Defaults last, then highest priority first, then by keys: a stable order for output."""
    keys = tuple(
        (name, type(fm).__name__, *(getattr(fm, slot) for slot in fm.__slots__))
        for name, fm in entry.match
    )
    return (entry.table, entry.is_default, -entry.priority, keys)


def render(compiled: CompiledPolicy, tables: tuple[str, ...] | None = None) -> str:
    """Every entry of the chosen tables, one per line, under a header per table."""
    lines: list[str] = []
    by_table = compiled.tables()
    for table in tables or tuple(by_table):
        entries = by_table.get(table, [])
        count = sum(1 for e in entries if not e.is_default)
        default = " and the default entry" if count < len(entries) else ""
        lines.append(f"# {table}: {count} entries{default}")
        ordered = sorted(entries, key=sort_key)
        lines.extend(entry_text(e, compiled) for e in ordered)
    return "\n".join(lines) + "\n"


def stats_rows(compiled: CompiledPolicy) -> list[dict[str, Any]]:
    """The compile report as rows of (figure, value): entries per table, expansion, encoding."""
    s = compiled.stats
    rows: list[dict[str, Any]] = [
        {"figure": f"entries {_short(t)}", "value": n} for t, n in s.entries.items()
    ]
    rows += [
        {"figure": "rules compiled", "value": s.rules},
        {"figure": "ACL entries per rule", "value": round(s.expansion, 3)},
        {"figure": "max ACL entries of a rule", "value": s.max_entries_per_rule},
        {"figure": "src_class encoding", "value": f"{s.src_encoding} ({s.src_bits} bits)"},
        {"figure": "dst_class encoding", "value": f"{s.dst_encoding} ({s.dst_bits} bits)"},
        {"figure": "compile seconds", "value": round(s.seconds, 4)},
    ]
    return rows
