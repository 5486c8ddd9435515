"""Loading policy YAML: the demo loads; each kind of mistake is reported with path and line."""

from __future__ import annotations

import ipaddress
import textwrap
from pathlib import Path

import pytest

from controlplane.policy import (
    PolicyError,
    Problem,
    ServiceTerm,
    load_demo_policy,
    load_policy,
    load_policy_file,
)

HEAD = """\
workloads:
  web-1: {addresses: [10.0.1.10], tags: [web]}
  db-1: {addresses: [10.0.3.10], tags: [db]}
groups:
  web: {match: {tags: [web]}}
  db: {members: [db-1]}
services:
  pg: {protocol: tcp, ports: [5432]}
"""  # 8 lines: the rule cases below start at line 9


def problems(text: str) -> list[Problem]:
    with pytest.raises(PolicyError) as info:
        load_policy(textwrap.dedent(text), "test.yaml")
    assert info.value.filename == "test.yaml"
    return info.value.problems


def only_problem(text: str) -> Problem:
    found = problems(text)
    assert len(found) == 1, found
    return found[0]


def test_demo_policy_loads_with_every_part() -> None:
    policy = load_demo_policy()
    assert [w.name for w in policy.workloads] == ["web-1", "app-1", "db-1"]
    web = policy.workloads[0]
    assert web.mac == 0x020000000101 and web.port == 1 and web.host == "host-1"
    assert ipaddress.ip_address("2001:db8:1::10") in web.addresses
    assert {g.name for g in policy.groups} >= {"web", "app", "db", "tiers", "admin-net"}
    exporters = next(s for s in policy.services if s.name == "exporters")
    assert exporters.terms == (ServiceTerm(6, ((9100, 9199),)),)
    assert [s.name for s in policy.sections] == ["infrastructure", "application"]
    reject = policy.rules[-1]
    assert reject.action == "reject" and reject.log and reject.source == ("web",)
    assert policy.default_action == "drop"


def test_a_valid_snippet_loads_inline_terms_and_cidrs() -> None:
    policy = load_policy(
        HEAD
        + """\
sections:
  - name: s
    rules:
      - {name: r, source: [web, 192.0.2.0/24], destination: any, protocol: udp,
         ports: [53, "1000-2000"], source_ports: 53, action: allow, enabled: false}
"""
    )
    rule = policy.rules[0]
    assert rule.source == ("web", ipaddress.ip_network("192.0.2.0/24"))
    assert rule.destination is None
    assert rule.inline == (ServiceTerm(17, ((53, 53), (1000, 2000)), ((53, 53),)),)
    assert rule.enabled is False


def test_unquoted_mac_is_read_from_its_text_not_as_a_base60_number() -> None:
    # YAML 1.1 reads 12:34:56:00:01:01 as a sexagesimal integer; the loader uses the raw text.
    policy = load_policy("workloads:\n  a: {mac: 12:34:56:00:01:01}\n")
    assert policy.workloads[0].mac == 0x123456000101


CASES = [
    (
        "unknown group",
        """\
sections:
  - name: s
    rules:
      - name: r
        source: web
        destination: [db, dbb]
        action: allow
""",
        "sections[0].rules[0].destination[1]",
        14,
        "unknown group 'dbb'; did you mean 'db'?",
    ),
    (
        "port out of range",
        "services:\n  http: {protocol: tcp, ports: [80, 70000]}\n",
        "services.http.ports[1]",
        2,
        "port 70000 is out of range 0..65535",
    ),
    (
        "range low > high",
        'services:\n  alt:\n    protocol: tcp\n    ports: "8080-8000"\n',
        "services.alt.ports",
        4,
        "port range 8080-8000 is empty: 8080 > 8000",
    ),
    (
        "CIDR with host bits set",
        "groups:\n  net:\n    addresses:\n      - 192.0.2.0/24\n      - 10.0.0.1/24\n",
        "groups.net.addresses[1]",
        5,
        "10.0.0.1/24: host bits set; did you mean 10.0.0.0/24?",
    ),
    (
        "IPv4-mapped IPv6 block",
        "groups:\n  net: {addresses: ['::ffff:10.0.0.0/104']}\n",
        "groups.net.addresses[0]",
        2,
        "write the IPv4 network 10.0.0.0/8 instead",
    ),
    (
        "duplicate rule name across sections",
        """\
sections:
  - name: a
    rules:
      - {name: r, source: any, destination: db, action: drop}
  - name: b
    rules:
      - {name: r, source: any, destination: web, action: drop}
""",
        "sections[1].rules[0].name",
        15,
        "duplicate rule name 'r' (first at line 12)",
    ),
    (
        "unknown service",
        "sections:\n  - name: s\n    rules:\n"
        "      - {name: r, source: web, destination: db, service: pgg, action: allow}\n",
        "sections[0].rules[0].service",
        12,
        "unknown service 'pgg'; did you mean 'pg'?",
    ),
    (
        "group cycle",
        "groups:\n  a: {groups: [b]}\n  b: {groups: [c]}\n  c: {groups: [a]}\n",
        "groups.a",
        2,
        "group cycle: a -> b -> c -> a",
    ),
    (
        "duplicate key",
        "groups:\n  web2: {addresses: [10.0.0.0/8]}\n  web2: {}\n",
        "groups.web2",
        3,
        "duplicate key 'web2' (first at line 2)",
    ),
    (
        "unknown key",
        "sections:\n  - name: s\n    rules:\n"
        "      - {name: r, source: web, destinaton: db, destination: db, action: allow}\n",
        "sections[0].rules[0].destinaton",
        12,
        "unknown key 'destinaton'; did you mean 'destination'?",
    ),
    (
        "ports on a protocol without ports",
        "services:\n  ping: {protocol: icmp, ports: [8]}\n",
        "services.ping.ports",
        2,
        "ports need protocol tcp or udp, not icmp",
    ),
    (
        "bad action",
        "sections:\n  - name: s\n    rules:\n"
        "      - {name: r, source: web, destination: db, action: permit}\n",
        "sections[0].rules[0].action",
        12,
        "action 'permit' is not one of: allow, drop, reject",
    ),
    (
        "missing destination",
        "sections:\n  - name: s\n    rules:\n      - {name: r, source: web, action: drop}\n",
        "sections[0].rules[0]",
        12,
        "missing key 'destination'",
    ),
    (
        "address of two workloads",
        "workloads:\n  db-1: {addresses: [10.0.3.10]}\n  x: {addresses: [10.0.3.10]}\n",
        "workloads.x.addresses[0]",
        3,
        "address 10.0.3.10 also belongs to db-1",
    ),
    (
        "CPU port",
        "workloads:\n  x: {port: 255}\n",
        "workloads.x.port",
        2,
        "pipeline port 255 is the CPU port",
    ),
    (
        "identity groups reserved",
        "sections:\n  - name: s\n    rules:\n"
        "      - {name: r, source: web, destination: db, action: allow, identity: [admins]}\n",
        "sections[0].rules[0].identity",
        12,
        "identity groups are not supported yet",
    ),
    (
        "unknown member",
        "workloads:\n  web-1: {}\ngroups:\n  g: {members: [web-2]}\n",
        "groups.g.members[0]",
        4,
        "unknown workload 'web-2'; did you mean 'web-1'?",
    ),
]


@pytest.mark.parametrize(
    ("tail", "path", "line", "message"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_each_mistake_is_reported_with_path_and_line(
    tail: str, path: str, line: int, message: str
) -> None:
    # Rules need the head's workloads, groups and services; the other cases stand alone.
    found = problems(HEAD + tail if tail.startswith("sections:") else tail)
    assert len(found) == 1, found
    got = found[0]
    assert (got.path, got.line) == (path, line), got
    assert message in got.message, got.message


def test_yaml_syntax_error_names_its_line() -> None:
    got = only_problem("groups:\n  web: {members: [a, b}\n")
    assert got.line == 2 and "YAML syntax error" in got.message


def test_every_problem_is_reported_at_once_in_line_order() -> None:
    found = problems(
        """\
workloads:
  w: {addresses: [10.0.0.300], port: 999}
groups:
  g: {addresses: [10.0.0.1/8]}
default_action: reject
"""
    )
    assert [p.line for p in found] == [2, 2, 4, 5]
    assert "not an IPv4 or IPv6 address" in found[0].message
    assert "out of range 0..510" in found[1].message
    assert "did you mean 10.0.0.0/8?" in found[2].message
    assert "default_action 'reject' is not one of: allow, drop" in found[3].message


def test_the_error_text_reads_like_a_compiler_message() -> None:
    with pytest.raises(PolicyError) as info:
        load_policy("groups:\n  g: {addresses: [10.0.0.1/8]}\n", "site.yaml")
    text = str(info.value)
    assert text.splitlines()[0] == "1 problem in site.yaml:"
    assert text.splitlines()[1] == (
        "site.yaml:2: groups.g.addresses[0]: 10.0.0.1/8: host bits set; did you mean 10.0.0.0/8?"
    )


def test_follow_up_errors_are_not_invented_for_items_that_failed() -> None:
    # The service is broken; the rule using it must not add "unknown service".
    found = problems(
        "services:\n  s: {protocol: tcpp}\nsections:\n  - name: a\n    rules:\n"
        "      - {name: r, source: any, destination: any, service: s, action: drop}\n"
    )
    assert [p.path for p in found] == ["services.s.protocol"]
    assert "did you mean 'tcp'?" in found[0].message


def test_a_missing_file_is_a_policy_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(PolicyError) as info:
        load_policy_file(missing)
    assert info.value.filename == str(missing)
    assert "cannot read" in info.value.problems[0].message


def test_an_empty_file_is_an_empty_policy_that_drops() -> None:
    policy = load_policy("")
    assert policy.rules == () and policy.default_action == "drop"
