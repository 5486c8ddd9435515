"""Readable rows for table entries: names, addresses, ports and protocols, not raw bytes."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from offload.compiler.report import icmp_text
from offload.entries import Entry, Exact, FieldMatch, Lpm, Optional, Range, Ternary
from offload.p4values import int128_to_ip, lpm128_to_network

if TYPE_CHECKING:
    from controlplane.dryrun import ReachFlip
    from controlplane.hostdiff import HostChanges

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
        proto = entry.match_dict.get("ip_proto")
        icmp = isinstance(proto, Exact | Optional) and proto.value in (1, 58)
        row["match"] = (
            " ".join(
                f"{k}={(icmp and k == 'l4_dst' and icmp_text(v)) or field_text(k, v, labels)}"
                for k, v in entry.match
            )
            or "*"
        )
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


def rule_instance(name: str) -> tuple[str, str]:
    """(rule, template instance) of a compiled rule name: `web-to-app@shop-a` is one rule's
    instance; a plain rule has instance "" (rule names cannot contain "@")."""
    rule, _, instance = name.partition("@")
    return rule, instance


def service_text(proto: int, port: int) -> str:
    """`tcp/8080`, `icmp/type 8 code 0`, or the protocol alone when it has no ports."""
    if proto in (1, 58):
        return f"{proto_name(proto)}/type {port >> 8} code {port & 0xFF}"
    if proto in (6, 17, 132):
        return f"{proto_name(proto)}/{port}"
    return proto_name(proto)


def flip_row(flip: ReachFlip) -> dict[str, Any]:
    """A reachability flip as a row (also the `--json` form)."""
    return {
        "src": flip.src,
        "dst": flip.dst,
        "service": service_text(flip.proto, flip.port),
        "proto": flip.proto,
        "port": flip.port,
        "host": flip.host,
        "before": flip.before,
        "before_rule": flip.before_rule,
        "after": flip.after,
        "after_rule": flip.after_rule,
    }


def host_rows(hosts: Iterable[HostChanges], shown: int = 3) -> list[dict[str, Any]]:
    """Per-host write counts per table, hosts with identical counts on one row."""
    same: dict[tuple[tuple[str, int, int, int], ...], list[str]] = {}
    for h in hosts:
        counts = h.counts()
        key = tuple((t, c["insert"], c["modify"], c["delete"]) for t, c in sorted(counts.items()))
        same.setdefault(key, []).append(h.host or "(single view)")
    rows = []
    for key, names in sorted(same.items(), key=lambda kv: (-len(kv[1]), kv[1][0])):
        listed = ", ".join(names[:shown]) + (
            f" (+{len(names) - shown})" if len(names) > shown else ""
        )
        for table, ins, mod, dele in key or (("-", 0, 0, 0),):
            rows.append(
                {
                    "hosts": listed,
                    "n_hosts": len(names),
                    "table": table,
                    "insert": ins,
                    "modify": mod,
                    "delete": dele,
                }
            )
    return rows


def counter_rows(
    hits: Iterable[tuple[int, str, int, int]],
    rule_names: Mapping[int, str],
    by: str | None = None,
) -> list[dict[str, Any]]:
    """Rows for (rule id, mode, packets, bytes) hits: one per rule id, with the rule and its
    template instance apart (`instance` "" for a plain rule); `by` "rule" sums a template
    rule's instances, "instance" sums each instance's rules (per mode, enforced or audit)."""
    rows: list[dict[str, Any]] = []
    for rid, mode, packets, nbytes in sorted(hits, key=lambda h: (h[0], h[1])):
        name = rule_names.get(rid)
        rule, instance = rule_instance(name) if name else ("(default)" if rid == 0 else "", "")
        rows.append(
            {
                "rule_id": rid,
                "rule": rule,
                "instance": instance,
                "mode": mode,
                "packets": packets,
                "bytes": nbytes,
            }
        )
    if by is None:
        return rows
    if by not in ("rule", "instance"):
        raise ValueError(f"cannot group counters by {by!r} (rule or instance)")
    grouped: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        # A rule not named by the policy given keeps its id, so unnamed rules stay apart.
        key = row[by] if row["rule"] else f"#{row['rule_id']}"
        out = grouped.get((key, row["mode"]))
        if out is None:
            out = grouped[(key, row["mode"])] = {
                by: key,
                "mode": row["mode"],
                "rule_ids": [],
                "rules" if by == "instance" else "instances": [],
                "packets": 0,
                "bytes": 0,
            }
        out["rule_ids"].append(row["rule_id"])
        other = row["rule"] if by == "instance" else row["instance"]
        members = out["rules" if by == "instance" else "instances"]
        if other and other not in members:
            members.append(other)
        out["packets"] += row["packets"]
        out["bytes"] += row["bytes"]
    return sorted(grouped.values(), key=lambda r: (r[by], r["mode"]))
