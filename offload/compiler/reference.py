"""Two ways to ask "what happens to this packet?", so tests can compare them by meaning.

- `evaluate(resolved, packet)`: the reference — first match over the resolved rules, with the
  policy's meaning of groups (address prefixes, IPv4 and IPv6 never mixing); no tables.
- `Tables(entries).verdict(...)`: the compiled entries run with P4Runtime match semantics, the
  way the pipeline runs them (`src_class`/`dst_class` longest prefix, ACL by priority), like
  faucet's fake OpenFlow table.

Rules in audit mode never take part in a verdict; `evaluate_audit` and `Tables.audit` say
which one a packet hits (what `acl_audit` records).

Packets are given by their lookup key (docs/pipeline.md): for ICMP, `sport` is the identifier
and `dport` is `type << 8 | code`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import NamedTuple

from offload import names
from offload.compiler.rules import ResolvedPolicy, ResolvedRule
from offload.entries import Entry, Exact, FieldMatch, Lpm, Optional, Range, Ternary
from offload.p4values import ip_to_int128

Address = str | int | ipaddress.IPv4Address | ipaddress.IPv6Address

_VERDICTS = {
    names.ACL_ALLOW: "allow",
    names.ACL_DROP: "drop",
    names.ACL_REJECT: "reject",
    names.ACL_SERVICE: "service",
}


class Verdict(NamedTuple):
    """What happened to a packet and which rule decided (0: the default action)."""

    action: str  # allow, drop, reject, or service (punted to the firewall service)
    rule_id: int


class Packet(NamedTuple):
    """A packet's lookup key: addresses, IP protocol, and the L4 key fields."""

    src: Address
    dst: Address
    proto: int
    sport: int = 0
    dport: int = 0


def address_key(address: Address) -> int:
    """An address as the pipeline's 128-bit key (ints are taken as keys already)."""
    if isinstance(address, int):
        return address
    return ip_to_int128(address)


def _first_match(
    resolved: ResolvedPolicy, packet: Packet, host: str | None, audit: bool
) -> ResolvedRule | None:
    """The first rule on `host` (among audit rules, or among enforced ones) matching."""
    src, dst = address_key(packet.src), address_key(packet.dst)
    groups = resolved.groups
    for rule in resolved.rules:
        if rule.audit != audit or not rule.applies_on(host):
            continue
        if rule.sources is not None and not any(groups[g].contains(src) for g in rule.sources):
            continue
        if rule.destinations is not None and not any(
            groups[g].contains(dst) for g in rule.destinations
        ):
            continue
        if any(t.matches(packet.proto, packet.sport, packet.dport) for t in rule.terms):
            return rule
    return None


def evaluate(resolved: ResolvedPolicy, packet: Packet, host: str | None = None) -> Verdict:
    """First match over the enforced rules installed on `host`, else the default action."""
    rule = _first_match(resolved, packet, host, audit=False)
    if rule is None:
        return Verdict(resolved.default_action, 0)
    return Verdict(rule.action, rule.rule_id)


def evaluate_audit(resolved: ResolvedPolicy, packet: Packet, host: str | None = None) -> int:
    """The id of the first audit rule on `host` the packet matches (0: none)."""
    rule = _first_match(resolved, packet, host, audit=True)
    return 0 if rule is None else rule.rule_id


def field_matches(fm: FieldMatch, value: int) -> bool:
    """P4Runtime semantics of one key against a packet's field value."""
    match fm:
        case Exact(v) | Optional(v):
            return value == v
        case Ternary(v, m):
            return value & m == v
        case Range(lo, hi):
            return lo <= value <= hi
        case Lpm(v, plen):
            raise TypeError(f"an LPM key ({v:#x}/{plen}) is looked up by Tables.lookup_lpm")
    raise TypeError(f"unknown field match {fm!r}")


class AmbiguousMatch(AssertionError):
    """Entries of equal priority with different actions match one packet: undefined on targets."""


class Tables:
    """Compiled entries as a fake pipeline: ask it about packets by meaning."""

    def __init__(self, entries: Iterable[Entry]) -> None:
        self.lpm: dict[str, dict[int, dict[int, Entry]]] = {}
        self.acl: list[Entry] = []
        self.acl_audit: list[Entry] = []
        self.defaults: dict[str, Entry] = {}
        self.l2: dict[int, Entry] = {}
        seen: set[object] = set()
        for e in entries:
            if e.is_default:
                self.defaults[e.table] = e
                continue
            if e.key in seen:  # a target refuses a second INSERT of one key
                raise ValueError(f"two entries with one key: {e}")
            seen.add(e.key)
            if e.table in (names.SRC_CLASS, names.DST_CLASS):
                lpm = e.match[0][1] if e.match else Lpm(0, 0)  # /0: the key is omitted
                if not isinstance(lpm, Lpm):
                    raise TypeError(f"{e.table} is keyed by LPM, not {lpm!r}")
                self.lpm.setdefault(e.table, {}).setdefault(lpm.prefix_len, {})[lpm.value] = e
            elif e.table == names.ACL:
                self.acl.append(e)
            elif e.table == names.ACL_AUDIT:
                self.acl_audit.append(e)
            elif e.table == names.L2_FORWARD:
                mac = e.match_dict["eth_dst"]
                if not isinstance(mac, Exact):
                    raise TypeError(f"{e.table} is keyed by exact MAC, not {mac!r}")
                self.l2[mac.value] = e
        self.acl.sort(key=lambda e: -e.priority)
        self.acl_audit.sort(key=lambda e: -e.priority)
        self._lengths = {t: sorted(by_len, reverse=True) for t, by_len in self.lpm.items()}

    def lookup_lpm(self, table: str, key: int) -> Entry | None:
        """The longest-prefix entry of `table` for a 128-bit key."""
        by_len = self.lpm.get(table, {})
        for plen in self._lengths.get(table, ()):
            shift = 128 - plen
            hit = by_len[plen].get(key >> shift << shift)
            if hit is not None:
                return hit
        return None

    def classify(self, table: str, address: Address) -> tuple[int, int]:
        """(class id, workload id) of an address in `src_class` or `dst_class`; (0, 0) on a miss."""
        hit = self.lookup_lpm(table, address_key(address))
        if hit is None:
            return 0, 0
        params = hit.params_dict
        return params["class_id"], params["workload_id"]

    def acl_lookup(self, fields: dict[str, int], audit: bool = False) -> Entry | None:
        """The highest-priority ACL (or acl_audit) entry matching the key fields, or None."""
        best: Entry | None = None
        for e in self.acl_audit if audit else self.acl:
            if best is not None and e.priority < best.priority:
                break
            if all(field_matches(fm, fields[k]) for k, fm in e.match):
                if best is None:
                    best = e
                elif not best.same_action(e):
                    raise AmbiguousMatch(f"{best} and {e} both match {fields}")
        return best

    def _fields(
        self, src: Address, dst: Address, proto: int, sport: int, dport: int
    ) -> dict[str, int]:
        src_class, _ = self.classify(names.SRC_CLASS, src)
        dst_class, _ = self.classify(names.DST_CLASS, dst)
        return {
            "src_class": src_class,
            "dst_class": dst_class,
            "ip_proto": proto,
            "l4_src": sport,
            "l4_dst": dport,
            "id_class": 0,
        }

    def audit(self, src: Address, dst: Address, proto: int, sport: int = 0, dport: int = 0) -> int:
        """The audit rule `acl_audit` records for a packet (0: none); verdicts ignore it."""
        hit = self.acl_lookup(self._fields(src, dst, proto, sport, dport), audit=True)
        return 0 if hit is None else hit.params_dict["rule_id"]

    def verdict(
        self, src: Address, dst: Address, proto: int, sport: int = 0, dport: int = 0
    ) -> Verdict:
        """Run a packet's lookup key through classification and the ACL."""
        fields = self._fields(src, dst, proto, sport, dport)
        hit = self.acl_lookup(fields) or self.defaults.get(names.ACL)
        if hit is None:  # firewall.p4's initial default is acl_drop(0)
            return Verdict("drop", 0)
        return Verdict(_VERDICTS[hit.action], hit.params_dict["rule_id"])

    def egress_port(self, mac: int) -> int | None:
        """Where `l2_forward` sends a frame for `mac` (None: dropped, the default)."""
        hit = self.l2.get(mac)
        return None if hit is None else hit.params_dict["port"]
