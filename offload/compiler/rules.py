"""Resolved rules: the compiler's input, free of names the policy file uses for convenience.

The policy layer (`controlplane.policy`) resolves groups to address prefixes, services to
protocol/port terms and rule names to stable ids; the compiler and the reference evaluator only
ever see these values. Addresses live in the pipeline's 128-bit key space (IPv4 mapped into
IPv6, `offload.p4values`), so a prefix is `(value, prefix_len)` over 128 bits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

from offload.p4values import V4_MAPPED, V4_MAPPED_PREFIX

Prefix = tuple[int, int]  # (128-bit value, prefix length)
PortRange = tuple[int, int]  # inclusive (low, high)
Action = Literal["allow", "drop", "reject"]

ADDRESS_BITS: Final = 128
FULL_PORTS: Final = (0, 0xFFFF)
# l4_dst of ICMP/ICMPv6 in the lookup key is type << 8 | code (docs/pipeline.md).
ICMP_PROTOCOLS: Final = frozenset({1, 58})
PORT_PROTOCOLS: Final = frozenset({6, 17})


def is_v4_prefix(prefix: Prefix) -> bool:
    """Whether a 128-bit prefix stands for an IPv4 network (inside ::ffff:0:0/96)."""
    value, plen = prefix
    return plen >= V4_MAPPED_PREFIX and value >> 32 == V4_MAPPED >> 32


def is_v4_key(key: int) -> bool:
    """Whether a 128-bit address key is an IPv4 address."""
    return key >> 32 == V4_MAPPED >> 32


def prefix_contains(prefix: Prefix, key: int) -> bool:
    """Whether `key` is in `prefix`, by the policy's meaning: families never mix.

    An IPv6 block such as ::/0 numerically contains the IPv4-mapped range, but an IPv6 block
    in a policy means IPv6 addresses only.
    """
    value, plen = prefix
    if is_v4_key(key) != is_v4_prefix(prefix):
        return False
    shift = ADDRESS_BITS - plen
    return key >> shift == value >> shift


@dataclass(frozen=True, slots=True)
class Term:
    """One protocol/ports alternative of a rule's service; empty port tuples mean any port."""

    protocol: int | None = None
    src_ports: tuple[PortRange, ...] = ()
    dst_ports: tuple[PortRange, ...] = ()

    def matches(self, protocol: int, sport: int, dport: int) -> bool:
        """Whether a packet's protocol and lookup-key ports fall in this term."""
        if self.protocol is not None and protocol != self.protocol:
            return False
        if self.src_ports and not any(lo <= sport <= hi for lo, hi in self.src_ports):
            return False
        return not self.dst_ports or any(lo <= dport <= hi for lo, hi in self.dst_ports)


ANY_TERM: Final = Term()


@dataclass(frozen=True, slots=True)
class AddressGroup:
    """A group resolved to the address prefixes of its members (workload addresses are /128)."""

    name: str
    prefixes: frozenset[Prefix]
    workloads: frozenset[str] = frozenset()

    def contains(self, key: int) -> bool:
        """Whether the 128-bit address `key` belongs to the group."""
        return any(prefix_contains(p, key) for p in self.prefixes)


@dataclass(frozen=True, slots=True)
class ResolvedWorkload:
    """A workload with its stable 16-bit id, addresses as 128-bit keys, and where it sits."""

    name: str
    workload_id: int
    addresses: tuple[int, ...]
    host: str | None = None
    port: int | None = None
    mac: int | None = None


@dataclass(frozen=True, slots=True)
class ResolvedRule:
    """One enabled rule: first match wins in `position` order; `None` source/destination = any."""

    rule_id: int
    name: str
    position: int
    action: Action
    sources: tuple[str, ...] | None
    destinations: tuple[str, ...] | None
    terms: tuple[Term, ...] = (ANY_TERM,)
    hosts: frozenset[str] | None = None  # None: applied everywhere
    log: bool = False
    section: str = ""
    audit: bool = False  # counted in acl_audit, never part of the verdict

    def applies_on(self, host: str | None) -> bool:
        """Whether the rule is installed on `host` (None: every rule, a single-host view)."""
        return host is None or self.hosts is None or host in self.hosts


@dataclass(frozen=True, slots=True)
class ResolvedPolicy:
    """Everything the compiler needs: groups by name, enabled rules in order, workloads."""

    groups: Mapping[str, AddressGroup]
    rules: tuple[ResolvedRule, ...]
    workloads: tuple[ResolvedWorkload, ...] = ()
    default_action: Literal["allow", "drop"] = "drop"
    rule_names: Mapping[int, str] = field(default_factory=dict)

    def local_workloads(self, host: str | None) -> tuple[ResolvedWorkload, ...]:
        """The workloads on `host` (all of them for the single-host view, host None)."""
        if host is None:
            return self.workloads
        return tuple(w for w in self.workloads if w.host == host)
