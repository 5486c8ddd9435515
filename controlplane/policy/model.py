"""The policy as written: workloads, groups, services, ordered sections of rules, a default.

Values are frozen dataclasses; equal policies compare equal (source lines do not take part), so
an edit can be found by comparing old and new objects. Nothing here resolves names: that is
`controlplane.policy.resolve`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Final, Literal

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Endpoint = str | Network  # a group name or an address block written in the rule
PortRange = tuple[int, int]
RuleAction = Literal["allow", "drop", "reject"]
DefaultAction = Literal["allow", "drop"]
RuleScope = Literal["any", "same_instance"]

ANY: Final = "any"
PROTOCOLS: Final = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58}
HOST_PREFIX: Final = "host:"  # applied_to: `host:NAME` names a host, a bare name a group
TEMPLATE_PREFIX: Final = "template:"  # the section holding a template's rules


@dataclass(frozen=True, slots=True)
class Workload:
    """A VM or container: its addresses, tags, and where it sits (host, pipeline port, MAC)."""

    name: str
    addresses: tuple[IPAddress, ...] = ()
    tags: frozenset[str] = frozenset()
    host: str | None = None
    port: int | None = None
    mac: int | None = None
    id: int | None = None  # a fixed 16-bit workload id; derived from the name when absent
    template: str | None = None  # the template it was stamped from (or its instance's)
    instance: str | None = None  # the template instance it belongs to


@dataclass(frozen=True, slots=True)
class TemplateMatch:
    """Criteria over a workload's template: its id, a name glob, version, owner."""

    id: str | None = None
    name: str | None = None
    version: str | None = None
    owner: str | None = None


@dataclass(frozen=True, slots=True)
class Criteria:
    """A predicate over one workload: every condition given must hold (AND).

    `any_of` holds when one of its criteria does (OR), `all_of` when all do, `none_of` when
    none does (NOT); `group` when the workload is a member of that group (nesting).
    """

    tags: frozenset[str] = frozenset()
    name: str | None = None
    host: str | None = None
    template: str | None = None
    instance: str | None = None
    template_match: TemplateMatch | None = None
    addresses: tuple[Network, ...] = ()  # the workload has an address in one of the blocks
    group: str | None = None
    all_of: tuple[Criteria, ...] = ()
    any_of: tuple[Criteria, ...] = ()
    none_of: tuple[Criteria, ...] = ()


@dataclass(frozen=True, slots=True)
class Group:
    """Static members, address blocks, nested groups, and criteria (any one of them matches)."""

    name: str
    members: tuple[str, ...] = ()
    addresses: tuple[Network, ...] = ()
    groups: tuple[str, ...] = ()
    match: tuple[Criteria, ...] = ()


@dataclass(frozen=True, slots=True)
class ServiceTerm:
    """A protocol (None: any) with destination/source ports, or an ICMP type and code."""

    protocol: int | None = None
    ports: tuple[PortRange, ...] = ()
    source_ports: tuple[PortRange, ...] = ()
    icmp_type: int | None = None
    icmp_code: int | None = None


@dataclass(frozen=True, slots=True)
class Service:
    """A named service: one or more protocol/port terms (e.g. DNS over UDP and TCP)."""

    name: str
    terms: tuple[ServiceTerm, ...]


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule; `None` source/destination means any; no services and no inline terms: any."""

    name: str
    source: tuple[Endpoint, ...] | None
    destination: tuple[Endpoint, ...] | None
    action: RuleAction
    services: tuple[str, ...] = ()
    inline: tuple[ServiceTerm, ...] = ()
    applied_to: tuple[str, ...] = ()
    log: bool = False
    enabled: bool = True
    id: int | None = None  # a fixed 32-bit rule id; derived from the name when absent
    identity: tuple[str, ...] = ()  # identity (user) groups: reserved for the identity module
    description: str = ""
    scope: RuleScope = "any"  # same_instance: source and destination in one template instance
    template: str | None = None  # only workloads of this template (as destination, or both)
    audit: bool = False  # counted and logged, never enforced: watch a rule before it bites


@dataclass(frozen=True, slots=True)
class Template:
    """A blueprint workloads are stamped from: tags it gives them, rules for every instance."""

    id: str
    name: str = ""
    version: str = ""
    owner: str = ""
    tags: frozenset[str] = frozenset()
    rules: tuple[Rule, ...] = ()  # scope same_instance unless the rule says otherwise


@dataclass(frozen=True, slots=True)
class Instance:
    """One template instance; its members are the workloads naming it (and `members`)."""

    id: str
    template: str
    members: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Section:
    """An ordered, named list of rules; `audit` puts every one of them in audit mode."""

    name: str
    rules: tuple[Rule, ...] = ()
    audit: bool = False


@dataclass(frozen=True, slots=True)
class Policy:
    """A whole policy. `locations` maps item paths to source lines, for messages only."""

    workloads: tuple[Workload, ...] = ()
    groups: tuple[Group, ...] = ()
    services: tuple[Service, ...] = ()
    sections: tuple[Section, ...] = ()
    default_action: DefaultAction = "drop"
    filename: str = field(default="<policy>", compare=False)
    locations: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)
    templates: tuple[Template, ...] = ()
    instances: tuple[Instance, ...] = ()

    @property
    def rules(self) -> tuple[Rule, ...]:
        """Every rule, in evaluation order (template rules after the sections)."""
        return tuple(r for s in self.all_sections() for r in s.rules)

    def all_sections(self) -> tuple[Section, ...]:
        """The sections, then one per template with rules (`template:ID`), in that order."""
        extra = tuple(
            Section(f"{TEMPLATE_PREFIX}{t.id}", tuple(_on_template(r, t.id) for r in t.rules))
            for t in self.templates
            if t.rules
        )
        return self.sections + extra if extra else self.sections

    def line(self, path: str) -> int:
        """The source line of `path`, or of its closest enclosing item (0 if unknown)."""
        while path:
            line = self.locations.get(path)
            if line is not None:
                return line
            cut = max(path.rfind("."), path.rfind("["))
            path = path[:cut] if cut > 0 else ""
        return 0


def _on_template(rule: Rule, template: str) -> Rule:
    """A template's rule as placed in the policy: bound to the template."""
    if rule.template == template:
        return rule
    return replace(rule, template=template)
