"""Readable rows for entries: ICMP keys read as types and codes, other ports as numbers."""

from __future__ import annotations

import pytest

from controlplane.render import entry_row
from offload import names
from offload.entries import Entry, Exact, FieldMatch, Optional, Range, Ternary


def acl(proto: int, l4_dst: FieldMatch) -> Entry:
    return Entry.make(
        names.ACL,
        {"ip_proto": Optional(proto), "l4_dst": l4_dst},
        names.ACL_SERVICE,
        {"rule_id": 0},
        priority=5,
    )


@pytest.mark.parametrize(
    ("proto", "key", "text"),
    [
        (1, Range(0x0300, 0x03FF), "ip_proto=icmp l4_dst=type 3"),
        (1, Range(0x0B00, 0x0CFF), "ip_proto=icmp l4_dst=types 11-12"),
        (58, Range(0x0100, 0x04FF), "ip_proto=icmpv6 l4_dst=types 1-4"),
        (1, Range(0x0304, 0x0304), "ip_proto=icmp l4_dst=type 3 code 4"),
        (1, Ternary(0x0800, 0xFF00), "ip_proto=icmp l4_dst=type 8"),
        (1, Range(0x0301, 0x0304), "ip_proto=icmp l4_dst=769-772"),  # not whole types: numbers
        (6, Range(0x0300, 0x03FF), "ip_proto=tcp l4_dst=768-1023"),  # a port range stays one
        (17, Range(53, 53), "ip_proto=udp l4_dst=53"),
    ],
)
def test_acl_keys(proto: int, key: FieldMatch, text: str) -> None:
    assert entry_row(acl(proto, key))["match"] == text


def test_a_flow_entry_of_an_echo_reply() -> None:
    entry = Entry.make(
        names.FLOW_CACHE,
        {
            "ip_src": Exact(0xFFFF0A000002),
            "ip_dst": Exact(0xFFFF0A000001),
            "ip_proto": Exact(1),
            "l4_src": Exact(7),
            "l4_dst": Exact(0),
        },
        names.FLOW_ALLOW,
        {"rule_id": 3},
    )
    assert entry_row(entry)["match"] == (
        "ip_dst=10.0.0.1 ip_proto=icmp ip_src=10.0.0.2 l4_dst=type 0 code 0 l4_src=7"
    )
