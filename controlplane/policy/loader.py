"""Policy YAML -> `Policy`, or `PolicyError` listing every problem with its line and path.

Loading is a pure function of the text: it either returns a whole, checked policy or raises,
so a bad file can never be half applied. Field syntax is checked here (types, ranges, address
and port syntax); names that refer to other items are checked by `references.check`.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import yaml

from controlplane.policy.errors import PolicyError, Problem
from controlplane.policy.model import (
    ANY,
    HOST_PREFIX,
    PROTOCOLS,
    Criteria,
    Endpoint,
    Group,
    Instance,
    IPAddress,
    Network,
    Policy,
    PortRange,
    Rule,
    Section,
    Service,
    ServiceTerm,
    Template,
    TemplateMatch,
    Workload,
)
from controlplane.policy.references import check
from controlplane.policy.yamlnodes import At, Reader, suggest

NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")
GROUP_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
_MAC = re.compile(r"[0-9A-Fa-f]{2}([:-][0-9A-Fa-f]{2}){5}")
_PORT_RANGE = re.compile(r"([0-9]+)\s*-\s*([0-9]+)")
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_TOP = (
    *("version", "workloads", "groups", "services", "sections", "default_action"),
    *("templates", "instances"),
)
_WORKLOAD = (
    *("addresses", "tags", "host", "port", "mac", "id", "description", "template", "instance"),
)
_GROUP = ("members", "addresses", "groups", "match", "description")
_CRITERIA = (
    *("tags", "name", "host", "template", "instance", "template_match", "addresses", "group"),
    *("all", "any", "not"),
)
_TEMPLATE_MATCH = ("id", "name", "version", "owner")
_TEMPLATE = ("name", "version", "owner", "tags", "rules", "description")
_INSTANCE = ("template", "members", "description")
_TERM = ("protocol", "ports", "source_ports", "type", "code")
_RULE = (
    *("name", "source", "destination", "service", "services", "action", "applied_to"),
    *("log", "enabled", "id", "identity", "description", "scope", "template", "audit"),
    *_TERM,
)
MAX_PIPELINE_PORT = 510  # 9-bit ports; 511 is BMv2's drop port


def parse_address(text: str) -> IPAddress | str:
    """A host address, or a message saying what is wrong with it."""
    host = text[:-3] if text.endswith("/32") else text[:-4] if text.endswith("/128") else text
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return f"{text!r} is not an IPv4 or IPv6 address"
    if addr.version == 6 and addr.ipv4_mapped is not None:
        return f"{text} is an IPv4-mapped address; write {addr.ipv4_mapped} instead"
    return addr


def parse_network(text: str) -> Network | str:
    """An address block (a bare address is a /32 or /128), or a message saying what is wrong."""
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        try:
            loose = ipaddress.ip_network(text, strict=False)
        except ValueError:
            return f"{text!r} is not an IPv4 or IPv6 network ({exc})"
        return f"{text}: host bits set; did you mean {loose}?"
    if isinstance(net, ipaddress.IPv6Network) and net.subnet_of(_MAPPED):
        v4 = ipaddress.IPv4Network((int(net.network_address) & 0xFFFFFFFF, net.prefixlen - 96))
        return f"{text} is IPv4-mapped; write the IPv4 network {v4} instead"
    return net


def parse_mac(text: str) -> int | None:
    """aa:bb:cc:dd:ee:ff (or with dashes) as an integer."""
    if not _MAC.fullmatch(text):
        return None
    return int(re.sub("[:-]", "", text), 16)


class Loader(Reader):
    """Builds the model from nodes; problems accumulate and are raised together."""

    def __init__(self) -> None:
        super().__init__()
        self.broken: set[str] = set()  # named items that are present but failed to load

    def name(self, at: At, what: str, pattern: re.Pattern[str] = NAME) -> str | None:
        """A name: letters, digits, `_`, `.`, `-`."""
        value = self.text(at, what)
        if value is None:
            return None
        if not pattern.fullmatch(value) or value == ANY:
            self.problem(at, f"{value!r} is not a valid {what} (letters, digits, _ . -)")
            return None
        return value

    def names(self, at: At, what: str, pattern: re.Pattern[str] = NAME) -> tuple[str, ...]:
        """One name or a list of names."""
        out = []
        for _, item in self.texts(at, what):
            value = self.name(item, what, pattern)
            if value is not None:
                out.append(value)
        return tuple(out)

    def workload(self, name: str, at: At) -> Workload | None:
        """One entry of `workloads`."""
        spec = self.mapping(at, _WORKLOAD, "a workload (addresses, tags, host, port, mac, id)")
        if spec is None:
            return None
        addresses: list[IPAddress] = []
        if "addresses" in spec:
            for text, item in self.texts(spec["addresses"], "an IP address"):
                addr = parse_address(text)
                if isinstance(addr, str):
                    self.problem(item, addr)
                else:
                    addresses.append(addr)
        mac = None
        if "mac" in spec:
            raw = self.text(spec["mac"], "a MAC address")
            mac = parse_mac(raw) if raw is not None else None
            if raw is not None and mac is None:
                self.problem(spec["mac"], f"{raw!r} is not a MAC address (aa:bb:cc:dd:ee:ff)")
        return Workload(
            name,
            tuple(addresses),
            frozenset(self.names(spec["tags"], "tag")) if "tags" in spec else frozenset(),
            self.name(spec["host"], "host name") if "host" in spec else None,
            self.port_number(spec["port"]) if "port" in spec else None,
            mac,
            self.integer(spec["id"], 1, 0xFFFF, "workload id") if "id" in spec else None,
            self.name(spec["template"], "template id") if "template" in spec else None,
            self.name(spec["instance"], "instance id") if "instance" in spec else None,
        )

    def port_number(self, at: At) -> int | None:
        """A pipeline port a workload sits behind."""
        port = self.integer(at, 0, MAX_PIPELINE_PORT, "pipeline port")
        if port == 255:
            self.problem(at, "pipeline port 255 is the CPU port")
            return None
        return port

    def criteria(self, at: At, depth: int = 0) -> Criteria | None:
        """One `match` mapping of a group: conditions that must all hold, `all`/`any`/`not`
        over nested criteria."""
        spec = self.mapping(
            at,
            _CRITERIA,
            "match criteria (tags, name, host, template, instance, template_match, addresses, "
            "group, all, any, not)",
        )
        if spec is None:
            return None
        if not spec:
            self.problem(at, "empty match criteria would match every workload; use name: '*'")
            return None
        if depth > 16:
            self.problem(at, "criteria nested deeper than 16 levels")
            return None
        nested: dict[str, tuple[Criteria, ...]] = {}
        failed = False
        for key in ("all", "any", "not"):
            if key not in spec:
                continue
            items = self.one_or_many(spec[key])
            if not items:
                self.problem(spec[key], f"{key!r} needs at least one criteria mapping")
                failed = True
            found = []
            for item in items:
                c = self.criteria(item, depth + 1)
                if c is None:
                    failed = True
                else:
                    found.append(c)
            nested[key] = tuple(found)
        blocks: list[Network] = []
        for text, item in self.texts(spec["addresses"], "a CIDR") if "addresses" in spec else ():
            net = parse_network(text)
            if isinstance(net, str):
                self.problem(item, net)
                failed = True
            else:
                blocks.append(net)
        template_match = None
        if "template_match" in spec:
            tm = self.mapping(spec["template_match"], _TEMPLATE_MATCH, "template criteria")
            if not tm:
                if tm is not None:
                    self.problem(spec["template_match"], "empty template_match")
                return None
            template_match = TemplateMatch(
                *(self.text(tm[k], k) if k in tm else None for k in _TEMPLATE_MATCH)
            )
        if failed:
            return None
        return Criteria(
            frozenset(self.names(spec["tags"], "tag")) if "tags" in spec else frozenset(),
            self.text(spec["name"], "a name pattern") if "name" in spec else None,
            self.name(spec["host"], "host name") if "host" in spec else None,
            self.name(spec["template"], "template id") if "template" in spec else None,
            self.name(spec["instance"], "instance id") if "instance" in spec else None,
            template_match,
            tuple(blocks),
            self.name(spec["group"], "group name", GROUP_NAME) if "group" in spec else None,
            nested.get("all", ()),
            nested.get("any", ()),
            nested.get("not", ()),
        )

    def group(self, name: str, at: At) -> Group | None:
        """One entry of `groups`."""
        spec = self.mapping(at, _GROUP, "a group (members, addresses, groups, match)")
        if spec is None:
            return None
        networks: list[Network] = []
        for text, item in self.texts(spec["addresses"], "a CIDR") if "addresses" in spec else ():
            net = parse_network(text)
            if isinstance(net, str):
                self.problem(item, net)
            else:
                networks.append(net)
        match: list[Criteria] = []
        if "match" in spec:
            for item in self.one_or_many(spec["match"]):
                crit = self.criteria(item)
                if crit is not None:
                    match.append(crit)
        return Group(
            name,
            self.names(spec["members"], "workload name") if "members" in spec else (),
            tuple(networks),
            self.names(spec["groups"], "group name", GROUP_NAME) if "groups" in spec else (),
            tuple(match),
        )

    def ports(self, at: At) -> tuple[PortRange, ...]:
        """Ports: numbers and "lo-hi" ranges, one or a list."""
        out: list[PortRange] = []
        for text, item in self.texts(at, "a port or port range"):
            m = _PORT_RANGE.fullmatch(text)
            lo, hi = (int(m[1]), int(m[2])) if m else (None, None)
            if m is None:
                port = self.integer(item, 0, 0xFFFF, "port")
                if port is None:
                    continue
                lo = hi = port
            assert lo is not None and hi is not None
            if hi > 0xFFFF or lo > 0xFFFF:
                self.problem(item, f"port range {text} is out of range 0..65535")
            elif lo > hi:
                self.problem(item, f"port range {text} is empty: {lo} > {hi}; write {hi}-{lo}")
            else:
                out.append((lo, hi))
        return tuple(out)

    def term(self, at: At, spec: dict[str, At]) -> ServiceTerm | None:
        """Protocol, ports, ICMP type/code, from a service entry or written on a rule."""
        if "protocol" not in spec:
            self.problem(at, "missing key 'protocol' (tcp, udp, icmp, icmpv6, any or 0..255)")
            return None
        raw = self.text(spec["protocol"], "a protocol")
        if raw is None:
            return None
        proto: int | None
        if raw == ANY:
            proto = None
        elif raw in PROTOCOLS:
            proto = PROTOCOLS[raw]
        elif raw.isdigit():
            proto = self.integer(spec["protocol"], 0, 255, "protocol")
            if proto is None:
                return None
        else:
            choices = (*PROTOCOLS, ANY)
            self.problem(
                spec["protocol"],
                f"unknown protocol {raw!r}{suggest(raw, choices)} (expected "
                f"{', '.join(choices)}, or a number 0..255)",
            )
            return None
        ok = True
        for key in ("ports", "source_ports"):
            if key in spec and proto not in (6, 17):
                self.problem(spec[key], f"{key} need protocol tcp or udp, not {raw}")
                ok = False
        for key in ("type", "code"):
            if key in spec and proto not in (1, 58):
                self.problem(spec[key], f"ICMP {key} needs protocol icmp or icmpv6, not {raw}")
                ok = False
        if "code" in spec and "type" not in spec:
            self.problem(spec["code"], "an ICMP code needs an ICMP type")
            ok = False
        if not ok:
            return None
        return ServiceTerm(
            proto,
            self.ports(spec["ports"]) if "ports" in spec else (),
            self.ports(spec["source_ports"]) if "source_ports" in spec else (),
            self.integer(spec["type"], 0, 255, "ICMP type") if "type" in spec else None,
            self.integer(spec["code"], 0, 255, "ICMP code") if "code" in spec else None,
        )

    def service(self, name: str, at: At) -> Service | None:
        """One entry of `services`: a term, or a list of terms."""
        terms: list[ServiceTerm] = []
        failed = False
        for item in self.one_or_many(at):
            spec = self.mapping(item, _TERM, "a service (protocol, ports, source_ports, type)")
            term = self.term(item, spec) if spec is not None else None
            if term is None:
                failed = True
            else:
                terms.append(term)
        return None if failed else Service(name, tuple(terms))

    def endpoints(self, at: At, what: str) -> tuple[Endpoint, ...] | None:
        """Groups and CIDRs of a rule's source or destination; None stands for `any`."""
        node = at.node
        if at.is_null or (isinstance(node, yaml.SequenceNode) and not node.value):
            self.problem(at, f"empty {what}: write group names, CIDRs, or 'any'")
            return ()
        items = self.texts(at, f"a group, CIDR or {ANY!r}")
        if any(text == ANY for text, _ in items):
            return None
        out: list[Endpoint] = []
        for text, item in items:
            if "/" in text or ":" in text or text[0].isdigit():
                net = parse_network(text)
                if isinstance(net, str):
                    self.problem(item, net)
                else:
                    out.append(net)
            elif GROUP_NAME.fullmatch(text):
                out.append(text)
            else:
                self.problem(item, f"{text!r} is neither a group name nor a CIDR")
        return tuple(out)

    def applied_to(self, at: At) -> tuple[str, ...]:
        """Group names and `host:NAME` items."""
        out = []
        for text, item in self.texts(at, "a group name or host:NAME"):
            host = text.removeprefix(HOST_PREFIX)
            ok = NAME.fullmatch(host) if host != text else GROUP_NAME.fullmatch(text)
            if ok and text != ANY:
                out.append(text)
            else:
                self.problem(item, f"{text!r} is neither a group name nor host:NAME")
        return tuple(out)

    def rule(self, at: At, template: str | None = None) -> Rule | None:
        """One rule of a section, or of a template (bound to it, same instance by default)."""
        spec = self.mapping(at, _RULE, "a rule", required=("name", "source", "destination"))
        if spec is None or "name" not in spec:
            return None
        name = self.name(spec["name"], "rule name")
        source = self.endpoints(spec["source"], "source") if "source" in spec else ()
        destination = (
            self.endpoints(spec["destination"], "destination") if "destination" in spec else ()
        )
        action = None
        if "action" not in spec:
            self.problem(at, "missing key 'action' (allow, drop or reject)")
        else:
            action = self.choice(spec["action"], ("allow", "drop", "reject"), "action")
        services: tuple[str, ...] = ()
        for key in ("service", "services"):
            if key in spec:
                services += self.names(spec[key], "service name", GROUP_NAME)
        inline: tuple[ServiceTerm, ...] = ()
        term_keys = {k: v for k, v in spec.items() if k in _TERM}
        if term_keys and services:
            first = next(iter(term_keys.values()))
            self.problem(first, "give either a service or an inline protocol/ports, not both")
        elif term_keys:
            term = self.term(at, term_keys)
            inline = (term,) if term is not None else ()
        flags = {
            k: self.boolean(spec[k], k) if k in spec else None for k in ("log", "enabled", "audit")
        }
        identity = self.names(spec["identity"], "identity group") if "identity" in spec else ()
        if identity:
            self.problem(
                spec["identity"],
                "identity groups are not supported yet (needs the identity module)",
            )
        description = ""
        if "description" in spec:
            description = self.text(spec["description"], "a description") or ""
        scope = "same_instance" if template is not None else "any"
        if "scope" in spec:
            scope = self.choice(spec["scope"], ("any", "same_instance"), "scope") or scope
        bound = template
        if "template" in spec:
            if template is not None:
                self.problem(spec["template"], "a template's rules are bound to it already")
            else:
                bound = self.name(spec["template"], "template id")
        if scope == "same_instance" or bound is not None:
            for key, ends in (("source", source), ("destination", destination)):
                if ends and any(not isinstance(e, str) for e in ends):
                    self.problem(
                        spec[key],
                        "a template rule matches instance members: use groups, not CIDRs",
                    )
                    return None
        if name is None or action is None or source == () or destination == ():
            return None
        return Rule(
            name,
            source,
            destination,
            action,  # type: ignore[arg-type]
            services,
            inline,
            self.applied_to(spec["applied_to"]) if "applied_to" in spec else (),
            bool(flags["log"]),
            flags["enabled"] is not False,
            self.integer(spec["id"], 1, 0xFFFFFFFF, "rule id") if "id" in spec else None,
            identity,
            description,
            scope,  # type: ignore[arg-type]
            bound,
            bool(flags["audit"]),
        )

    def section(self, at: At) -> Section | None:
        """One section: a name and its rules."""
        keys = ("name", "rules", "description", "audit")
        spec = self.mapping(at, keys, "a section", ("name",))
        if spec is None or "name" not in spec:
            return None
        name = self.text(spec["name"], "a section name")
        rules = []
        items = self.sequence(spec["rules"], "a list of rules") if "rules" in spec else []
        for item in items or []:
            rule = self.rule(item)
            if rule is not None:
                rules.append(rule)
        audit = self.boolean(spec["audit"], "audit") if "audit" in spec else None
        return Section(name or "", tuple(rules), bool(audit))

    def template(self, tid: str, at: At) -> Template | None:
        """One entry of `templates`: what it matches on, its tags, its rules."""
        spec = self.mapping(at, _TEMPLATE, "a template (name, version, owner, tags, rules)")
        if spec is None:
            return None
        rules = []
        for item in (
            self.sequence(spec["rules"], "a list of rules") or [] if "rules" in spec else []
        ):
            rule = self.rule(item, tid)
            if rule is not None:
                rules.append(rule)
        name, version, owner = (
            (self.text(spec[k], k) or "") if k in spec else "" for k in ("name", "version", "owner")
        )
        return Template(
            tid,
            name,
            version,
            owner,
            frozenset(self.names(spec["tags"], "tag")) if "tags" in spec else frozenset(),
            tuple(rules),
        )

    def instance(self, iid: str, at: At) -> Instance | None:
        """One entry of `instances`: its template and members."""
        spec = self.mapping(at, _INSTANCE, "an instance (template, members)", ("template",))
        if spec is None or "template" not in spec:
            return None
        template = self.name(spec["template"], "template id")
        members = self.names(spec["members"], "workload name") if "members" in spec else ()
        return Instance(iid, template, members) if template is not None else None

    def named(
        self, top: dict[str, At], key: str, pattern: re.Pattern[str], what: str
    ) -> list[tuple[str, At]]:
        """The (name, spec) pairs of a top-level mapping, with valid names only."""
        if key not in top:
            return []
        out = []
        for name, item in self.pairs(top[key], f"a mapping of {key} by name") or []:
            if not pattern.fullmatch(name) or name == ANY:
                self.problem(item, f"{name!r} is not a valid {what} (letters, digits, _ . -)")
            else:
                out.append((name, item))
        return out

    def policy(self, root: At, filename: str) -> Policy:
        """The whole document."""
        top = self.mapping(root, _TOP, "a policy")
        if top is None:
            return Policy(filename=filename)
        if "version" in top:
            self.integer(top["version"], 1, 1, "policy version")
        workloads: list[Workload] = []
        groups: list[Group] = []
        services: list[Service] = []
        for name, item in self.named(top, "workloads", NAME, "workload name"):
            w = self.workload(name, item)
            if w is None:
                self.broken.add(name)
            else:
                workloads.append(w)
        for name, item in self.named(top, "groups", GROUP_NAME, "group name"):
            g = self.group(name, item)
            if g is None:
                self.broken.add(name)
            else:
                groups.append(g)
        for name, item in self.named(top, "services", GROUP_NAME, "service name"):
            svc = self.service(name, item)
            if svc is None:
                self.broken.add(name)
            else:
                services.append(svc)
        templates: list[Template] = []
        for tid, item in self.named(top, "templates", NAME, "template id"):
            t = self.template(tid, item)
            if t is None:
                self.broken.add(tid)
            else:
                templates.append(t)
        instances: list[Instance] = []
        for iid, item in self.named(top, "instances", NAME, "instance id"):
            inst = self.instance(iid, item)
            if inst is None:
                self.broken.add(iid)
            else:
                instances.append(inst)
        sections = []
        if "sections" in top:
            for item in self.sequence(top["sections"], "a list of sections") or []:
                section = self.section(item)
                if section is not None:
                    sections.append(section)
        default = "drop"
        if "default_action" in top:
            default = (
                self.choice(top["default_action"], ("allow", "drop"), "default_action") or "drop"
            )
        return Policy(
            tuple(workloads),
            tuple(groups),
            tuple(services),
            tuple(sections),
            default,  # type: ignore[arg-type]
            filename,
            self.locations,
            tuple(templates),
            tuple(instances),
        )


def load_policy(text: str, filename: str = "<policy>") -> Policy:
    """Parse and check a policy; raise `PolicyError` with every problem found."""
    loader = Loader()
    root = loader.parse(text)
    if root is None:
        if not loader.problems:
            return Policy(filename=filename)
        raise PolicyError(loader.problems, filename)
    policy = loader.policy(root, filename)
    # References are checked even when some items failed to load (names of those count as
    # defined), so that one run reports as much as it can without inventing follow-up errors.
    problems = loader.problems + check(policy, defined=loader.broken)
    if problems:
        raise PolicyError(problems, filename)
    return policy


def load_policy_file(path: str | Path) -> Policy:
    """Read and load a policy file (its name appears in every message)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError([Problem(0, "", f"cannot read: {exc.strerror or exc}")], str(p)) from exc
    return load_policy(text, str(p))
