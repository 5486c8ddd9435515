"""ClassBench rule/trace files, trace generation, and the reference first-match evaluator."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dpdk_app import classbench
from dpdk_app.classbench import ClassBenchError
from dpdk_app.classifier.headers import headers_from_ints
from dpdk_app.layout import ACT_ALLOW
from dpdk_app.reference import first_match, first_match_one

try:  # tests/unit as a package, or as a directory on sys.path (pytest's default)
    from .rulegen import V4, near_headers, one_rule, rule_sets, v4
except ImportError:
    from rulegen import V4, near_headers, one_rule, rule_sets, v4

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "classbench"
SIZES = {
    "acl1_1k": 942,
    "acl1_10k": 9774,
    "fw1_1k": 857,
    "fw1_10k": 9379,
    "ipc1_1k": 974,
    "ipc1_10k": 9518,
}

LINES = [
    "@176.19.181.33/32\t90.145.23.162/32\t0 : 65535\t1550 : 1550\t0x06/0xFF\t0x0000/0x0200\n",
    "# a comment, then a blank line\n",
    "\n",
    "@209.32.125.231/28\t0.0.0.0/0\t88 : 88\t80 : 90\t0x00/0x00\t0x0000/0x0000\n",
    "@2001:db8::1/32 ::/0 1 : 2 3 : 4 0x11/0xFF\n",
]


def addr_int(raw: np.ndarray) -> int:
    return int.from_bytes(bytes(raw), "big")


def test_parse_rules_fields() -> None:
    rs = classbench.parse_rules(LINES, "x.rules")
    r = rs.rules
    assert len(r) == 3  # comment and blank lines are not rules
    assert addr_int(r[0]["src_addr"]) == v4("176.19.181.33")
    assert (r[0]["src_plen"], r[0]["dst_plen"]) == (128, 128)
    assert (r[0]["sport_lo"], r[0]["sport_hi"], r[0]["dport_lo"], r[0]["dport_hi"]) == (
        0,
        65535,
        1550,
        1550,
    )
    assert (r[0]["proto"], r[0]["proto_mask"]) == (6, 0xFF)
    assert tuple(rs.flags[0]) == (0x0000, 0x0200)
    # Host bits below the prefix are cleared; /0 stays inside IPv4-mapped space (/96).
    assert addr_int(r[1]["src_addr"]) == v4("209.32.125.224")
    assert (r[1]["src_plen"], r[1]["dst_plen"]) == (96 + 28, 96)
    assert addr_int(r[1]["dst_addr"]) == V4
    assert r[1]["proto_mask"] == 0
    # The IPv6 extension, without the flags column.
    assert addr_int(r[2]["src_addr"]) == int(ipaddress.IPv6Address("2001:db8::"))
    assert (r[2]["src_plen"], r[2]["dst_plen"]) == (32, 0)
    # Line order is priority: first rule highest; ids from 1; priorities >= 1.
    assert list(r["priority"]) == [3, 2, 1]
    assert list(r["rule_id"]) == [1, 2, 3]
    assert set(r["action"]) == {ACT_ALLOW}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("176.19.181.33/32 1.2.3.4/32 0 : 1 0 : 1 0x06/0xFF", "starts with '@'"),
        ("@1.2.3.4/33 1.2.3.4/32 0 : 1 0 : 1 0x06/0xFF", "prefix length"),
        ("@1.2.3.4/32 1.2.3.4/32 5 : 1 0 : 1 0x06/0xFF", "reversed"),
        ("@1.2.3.4/32 1.2.3.4/32 0 : 70000 0 : 1 0x06/0xFF", "outside"),
        ("@1.2.3.4/32 1.2.3.4/32 0 - 1 0 : 1 0x06/0xFF", "lo : hi"),
        ("@1.2.3.4/32 1.2.3.4/32 0 : 1 0 : 1", "fields"),
        ("@1.2.3.4/32 1.2.3.4/32 0 : 1 0 : 1 0x106/0xFF", "8 bits"),
        ("@1.2.3.4 1.2.3.4/32 0 : 1 0 : 1 0x06/0xFF", "length"),
        ("@1.2.3.400/32 1.2.3.4/32 0 : 1 0 : 1 0x06/0xFF", "does not appear"),
    ],
)
def test_parse_rules_errors_name_file_and_line(line: str, message: str) -> None:
    with pytest.raises(ClassBenchError, match=rf"f\.rules:2: .*{message}"):
        classbench.parse_rules([LINES[0], line], "f.rules")


def test_trace_roundtrip_ipv4_and_ipv6(tmp_path: Path) -> None:
    hdrs = headers_from_ints(
        [v4("10.0.0.1"), int(ipaddress.IPv6Address("2001:db8::5"))],
        [v4("255.255.255.255"), v4("0.0.0.0")],
        [0, 65535],
        [80, 1],
        [6, 255],
        tcp_flags=[0x12, 0],
    )
    path = tmp_path / "t.trace"
    classbench.write_trace(path, hdrs, np.array([3, -1]))
    lines = path.read_text().splitlines()
    # ClassBench's format: IPv4 as 32-bit integers, tab separated, rule column last.
    assert lines[0].split("\t") == ["167772161", "4294967295", "0", "80", "6", "18", "3"]
    back = classbench.read_trace(path)
    assert np.array_equal(back.headers, hdrs)
    assert list(back.expected) == [3, -1]


def test_trace_six_columns_and_errors() -> None:
    t = classbench.parse_trace(["1\t2\t3\t4\t6\t7\n"])
    assert t.headers[0]["src_lo"] == V4 | 1 and t.headers[0]["tcp_flags"] == 0
    assert t.expected[0] == 7
    for bad in ("1 2 3 4 6", "1 2 70000 4 6 0 1", "1 2 3 4 6 0 x", "1 2 3 4 300 0 0"):
        with pytest.raises(ClassBenchError, match="t:1:"):
            classbench.parse_trace([bad], "t")


def test_generate_trace_corners_interior_and_determinism() -> None:
    rules = classbench.parse_rules(
        ["@10.1.2.0/24 192.168.0.0/16 1000 : 2000 53 : 53 0x11/0xFF 0x0000/0x0000"]
    ).rules
    t = classbench.generate_trace(rules, per_rule=200, seed=5)
    again = classbench.generate_trace(rules, per_rule=200, seed=5)
    assert np.array_equal(t.headers, again.headers)
    assert not np.array_equal(t.headers, classbench.generate_trace(rules, 200, seed=6).headers)
    src = t.headers["src_lo"] & np.uint64(0xFFFFFFFF)
    assert np.all((src >> np.uint64(8)) == np.uint64(0x0A0102))
    assert {int(src.min()), int(src.max())} == {0x0A010200, 0x0A0102FF}  # corners reached
    assert len(np.unique(src)) > 20  # interior points too
    assert set(t.headers["sport"]) >= {1000, 2000} and len(set(t.headers["sport"])) > 20
    assert set(t.headers["dport"]) == {53} and set(t.headers["proto"]) == {17}
    assert np.all(t.expected == 0)


def test_generate_trace_answer_is_first_match_not_the_drawn_rule() -> None:
    rules = classbench.parse_rules(
        [
            "@10.0.0.0/8 0.0.0.0/0 0 : 65535 0 : 65535 0x00/0x00",
            "@10.1.0.0/16 0.0.0.0/0 0 : 65535 80 : 80 0x06/0xFF",
        ]
    ).rules
    t = classbench.generate_trace(rules, per_rule=8, seed=1)
    assert len(t.headers) == 16
    assert np.all(t.expected == 0)  # rule 0 covers every header drawn from rule 1


def test_generated_traces_agree_with_a_plain_python_evaluator() -> None:
    rules = classbench.parse_rules(LINES).rules
    t = classbench.generate_trace(rules, per_rule=10, seed=3)
    for i in range(len(t.headers)):
        assert t.expected[i] == first_match_one(rules, t.headers[i])


# -- reference evaluator, by property ------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(rule_sets(), st.integers(0, 2**32))
def test_reference_vectorised_equals_plain_python(rules: np.ndarray, seed: int) -> None:
    hdrs = near_headers(rules, seed)
    got = first_match(rules, hdrs)
    for i in range(len(hdrs)):
        assert got[i] == first_match_one(rules, hdrs[i])


def test_reference_invalid_headers_and_ties() -> None:
    r = np.concatenate([one_rule(priority=5, rule_id=1), one_rule(priority=5, rule_id=2)])
    h = headers_from_ints([v4("1.2.3.4")] * 2, [v4("5.6.7.8")] * 2, [1, 1], [2, 2], [6, 6])
    h["valid"][1] = 0
    assert list(first_match(r, h)) == [0, -1]  # equal priority: earlier rule; invalid: none


# -- the shipped ClassBench sets ---------------------------------------------------------------

needs_data = pytest.mark.skipif(
    not DATA.is_dir(), reason=f"ClassBench data folder {DATA} is absent"
)


@needs_data
@pytest.mark.parametrize("name", sorted(SIZES))
def test_classbench_sets_parse_with_documented_sizes(name: str) -> None:
    rs = classbench.load_ruleset(DATA / name)
    assert len(rs.rules) == SIZES[name]
    assert np.all(rs.rules["src_plen"] >= 96) and np.all(rs.rules["dst_plen"] >= 96)
    assert set(np.unique(rs.rules["proto_mask"])) <= {0, 0xFF}
