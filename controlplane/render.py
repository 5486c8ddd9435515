"""Readable rows for table entries: names, addresses, ports and protocols, not raw bytes."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from offload.entries import Entry, Exact, FieldMatch, Lpm, Optional, Range, Ternary
from offload.p4values import int128_to_ip, lpm128_to_network

_ADDRESS_FIELDS = {"ip_src", "ip_dst"}
_PORT_FIELDS = {"l4_src", "l4_dst", "port"}
_PROTO_FIELDS = {"ip_proto"}
_CLASS_FIELDS = {"src_class", "dst_class", "class_id"}
_MAC_FIELDS = {"eth_dst"}


def proto_name(number: int) -> str:
    """`tcp`, `udp`, `icmp`... or the number."""
    names = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp", 47: "gre"}
    return names.get(number, str(number))


def mac_text(value: int) -> str:
    """aa:bb:cc:dd:ee:ff."""
    return ":".join(f"{b:02x}" for b in value.to_bytes(6, "big"))


@dataclass
class Labels:
    """What the renderer knows beyond the entries: group names of class bits, rule names."""

    class_names: Callable[[str, int, int], str] | None = None  # (field, value, mask) -> "web"
    rule_names: Mapping[int, str] = field(default_factory=dict)


def field_text(name: str, fm: FieldMatch, labels: Labels | None = None) -> str:
    """One key as text."""
    match fm:
        case Exact(value) | Optional(value):
            if name in _ADDRESS_FIELDS:
                return str(int128_to_ip(value))
            if name in _PROTO_FIELDS:
                return proto_name(value)
            if name in _MAC_FIELDS:
                return mac_text(value)
            if name in _CLASS_FIELDS and labels and labels.class_names:
                return labels.class_names(name, value, (1 << 64) - 1)
            return str(value)
        case Lpm(value, prefix_len):
            if name in _ADDRESS_FIELDS:
                return str(lpm128_to_network(value, prefix_len))
            return f"{value:#x}/{prefix_len}"
        case Ternary(value, mask):
            if name in _CLASS_FIELDS and labels and labels.class_names:
                return labels.class_names(name, value, mask)
            return f"{value:#x}&&&{mask:#x}"
        case Range(low, high):
            return str(low) if low == high else f"{low}-{high}"
    return repr(fm)


def param_text(name: str, value: int, labels: Labels | None = None) -> str:
    """One action parameter as text."""
    if name == "rule_id" and labels and value in labels.rule_names:
        return f"{labels.rule_names[value]} ({value})"
    if name in _CLASS_FIELDS:
        return f"{value:#x}"
    return str(value)


def short(name: str) -> str:
    """The last component of a fully qualified P4 name."""
    return name.rsplit(".", 1)[-1]


def entry_row(entry: Entry, labels: Labels | None = None) -> dict[str, Any]:
    """An entry as a flat row of readable strings (also the `--json` form)."""
    row: dict[str, Any] = {"table": short(entry.table)}
    if entry.is_default:
        row["match"] = "(default)"
    else:
        row["match"] = " ".join(f"{k}={field_text(k, v, labels)}" for k, v in entry.match) or "*"
    params = ", ".join(f"{k}={param_text(k, v, labels)}" for k, v in entry.params)
    row["action"] = f"{short(entry.action)}({params})"
    if entry.priority:
        row["priority"] = entry.priority
    if entry.idle_timeout_ns:
        row["idle_timeout_s"] = entry.idle_timeout_ns / 1e9
    return row


def entry_rows(
    entries: Iterable[Entry],
    labels: Labels | None = None,
    counters: Mapping[Entry, tuple[int, int]] | None = None,
) -> list[dict[str, Any]]:
    """Rows for many entries, highest priority first within a table, with counters if given."""
    ordered = sorted(entries, key=lambda e: (e.table, -e.priority, repr(e.match)))
    rows = []
    for e in ordered:
        row = entry_row(e, labels)
        if counters is not None and e in counters:
            row["packets"], row["bytes"] = counters[e]
        rows.append(row)
    return rows
