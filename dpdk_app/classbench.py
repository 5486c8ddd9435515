"""ClassBench rule files and header traces: parsing, writing and trace generation.

Rule files (Taylor & Turner's ClassBench filter format), one rule a line, whitespace separated:

    @176.19.181.33/32  90.145.23.162/32  0 : 65535  1550 : 1550  0x06/0xFF  0x0000/0x0200

source prefix (after '@'), destination prefix, source port range `lo : hi`, destination port
range, protocol value/mask in hex (`0x00/0x00` = any), and an optional TCP flags value/mask
(16 bit) that every classifier here ignores, as DPDK's test-acl does. Blank lines and lines
starting with '#' are skipped; they do not count as rules. As an extension, the prefixes may be
IPv6 (`@2001:db8::/32`); ClassBench itself only has IPv4.

Mapping to RULE_DTYPE (dpdk_app/layout.py): rule k (0-based among the rule lines) gets
rule_id = k + 1 (0 is "no rule" in flow records), priority = N - k (higher wins, so line order is
first-match order; all priorities are >= 1 as rte_acl requires), action = ACT_ALLOW. Addresses
are IPv4-mapped: a.b.c.d/p becomes ::ffff:a.b.c.d/(96 + p), with host bits cleared. The protocol
is kept as value/mask; ClassBench only uses masks 0x00 and 0xFF.

Trace files (the format of ClassBench's trace generator, as read by the DPDK application too),
one header a line, tab separated decimal integers:

    src_ip  dst_ip  sport  dport  proto  flags  rule

IPv4 addresses are 32-bit integers (host order value of a.b.c.d, e.g. 10.0.0.1 = 167772161);
an integer above 2**32 - 1 is a full 128-bit IPv6 address (written only for IPv6 rule sets).
`flags` is the TCP flags value (ignored when matching). `rule` is the expected answer: the
0-based index of the first rule of the rule file that matches the header (the reference
first-match evaluation, dpdk_app/reference.py), or -1 when no rule matches. Readers also accept
the older six-column form without `flags`.

Trace generation follows ClassBench's generator and the data README: for every rule, headers at
random corners of the rule's box and at random interior points, shuffled with a fixed seed; the
expected answer is computed by the reference evaluator, never taken from the rule a header was
drawn from (an earlier rule often covers it).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dpdk_app.classifier.headers import (
    HEADER_DTYPE,
    V4_MAPPED_LO_TAG,
    V4_PLEN_BASE,
    int128_to_words,
    is_v4_mapped,
    prefix_masks,
    words_to_addr_bytes,
)
from dpdk_app.layout import ACT_ALLOW, RULE_DTYPE
from dpdk_app.reference import first_match

DEFAULT_SEED = 1


class ClassBenchError(ValueError):
    """A rule or trace file is malformed; the message names the file and line."""


@dataclass(frozen=True)
class RuleSet:
    """A parsed ClassBench rule file: RULE_DTYPE records plus the (ignored) TCP flags column."""

    rules: np.ndarray
    flags: np.ndarray  # (N, 2) uint16 value, mask
    source: str


@dataclass(frozen=True)
class Trace:
    """A header batch (HEADER_DTYPE) with each header's expected first-matching rule index."""

    headers: np.ndarray
    expected: np.ndarray  # int64, -1 = no rule matches


def _parse_prefix(token: str) -> tuple[int, int]:
    """'a.b.c.d/p' or an IPv6 prefix -> (128-bit value with host bits cleared, 128-bit plen)."""
    addr, sep, plen_text = token.partition("/")
    if not sep:
        raise ValueError(f"prefix {token!r} has no '/length'")
    ip = ipaddress.ip_address(addr)
    plen = int(plen_text)
    width = 32 if ip.version == 4 else 128
    if not 0 <= plen <= width:
        raise ValueError(f"prefix length {plen} outside 0..{width}")
    value = int(ip) & (((1 << plen) - 1) << (width - plen))
    if ip.version == 4:
        return V4_MAPPED_LO_TAG | value, V4_PLEN_BASE + plen
    return value, plen


def _parse_range(lo: str, colon: str, hi: str) -> tuple[int, int]:
    if colon != ":":
        raise ValueError(f"port range {lo} {colon} {hi} is not 'lo : hi'")
    low, high = int(lo), int(hi)
    if not 0 <= low <= high <= 0xFFFF:
        raise ValueError(f"port range {low} : {high} outside 0..65535 or reversed")
    return low, high


def _parse_masked(token: str, bits: int) -> tuple[int, int]:
    value, sep, mask = token.partition("/")
    if not sep:
        raise ValueError(f"{token!r} is not value/mask")
    v, m = int(value, 16), int(mask, 16)
    if v >> bits or m >> bits:
        raise ValueError(f"{token!r} does not fit {bits} bits")
    return v, m


def parse_rules(lines: Iterable[str], source: str = "<rules>") -> RuleSet:
    """Parse ClassBench rule lines into a RuleSet (priority = descending line order)."""
    parsed: list[tuple[int, int, int, int, int, int, int, int, int, int, int, int]] = []
    for lineno, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        tokens = line.split()
        try:
            if not tokens[0].startswith("@"):
                raise ValueError("a rule starts with '@'")
            if len(tokens) not in (9, 10):
                raise ValueError(f"expected 9 or 10 fields, found {len(tokens)}")
            src, splen = _parse_prefix(tokens[0][1:])
            dst, dplen = _parse_prefix(tokens[1])
            sp = _parse_range(*tokens[2:5])
            dp = _parse_range(*tokens[5:8])
            proto, pmask = _parse_masked(tokens[8], 8)
            fval, fmask = _parse_masked(tokens[9], 16) if len(tokens) == 10 else (0, 0)
        except (ValueError, IndexError) as exc:
            raise ClassBenchError(f"{source}:{lineno}: {exc}") from None
        parsed.append((src, splen, dst, dplen, *sp, *dp, proto, pmask, fval, fmask))
    n = len(parsed)
    rules = np.zeros(n, dtype=RULE_DTYPE)
    flags = np.zeros((n, 2), dtype=np.uint16)
    if n == 0:
        return RuleSet(rules, flags, source)
    cols = list(zip(*parsed, strict=True))
    src_w = np.array([int128_to_words(v) for v in cols[0]], dtype=np.uint64)
    dst_w = np.array([int128_to_words(v) for v in cols[2]], dtype=np.uint64)
    rules["src_addr"] = words_to_addr_bytes(src_w[:, 0], src_w[:, 1])
    rules["dst_addr"] = words_to_addr_bytes(dst_w[:, 0], dst_w[:, 1])
    rules["src_plen"] = cols[1]
    rules["dst_plen"] = cols[3]
    rules["sport_lo"], rules["sport_hi"] = cols[4], cols[5]
    rules["dport_lo"], rules["dport_hi"] = cols[6], cols[7]
    rules["proto"], rules["proto_mask"] = cols[8], cols[9]
    flags[:, 0], flags[:, 1] = cols[10], cols[11]
    rules["rule_id"] = np.arange(1, n + 1)
    rules["priority"] = np.arange(n, 0, -1)
    rules["action"] = ACT_ALLOW
    return RuleSet(rules, flags, source)


def load_ruleset(path: str | Path) -> RuleSet:
    """Read a ClassBench rule file."""
    path = Path(path)
    with path.open(encoding="ascii", errors="replace") as fh:
        return parse_rules(fh, str(path))


def load_rules(path: str | Path) -> np.ndarray:
    """Read a ClassBench rule file as RULE_DTYPE records."""
    return load_ruleset(path).rules


def _addr_to_trace_int(hi: int, lo: int) -> int:
    if hi == 0 and lo >> 32 == 0xFFFF:
        return lo & 0xFFFFFFFF
    return (hi << 64) | lo


def write_trace(path: str | Path, headers: np.ndarray, expected: np.ndarray) -> None:
    """Write a header trace in ClassBench's trace format (see the module docstring)."""
    if len(headers) != len(expected):
        raise ValueError("headers and expected answers differ in length")
    lines = []
    for h, e in zip(headers.tolist(), np.asarray(expected).tolist(), strict=True):
        # tolist() of a HEADER_DTYPE row is a tuple in field order.
        src_hi, src_lo, dst_hi, dst_lo, _id, sport, dport, proto, _valid, flags, _r = h
        src = _addr_to_trace_int(src_hi, src_lo)
        dst = _addr_to_trace_int(dst_hi, dst_lo)
        lines.append(f"{src}\t{dst}\t{sport}\t{dport}\t{proto}\t{flags}\t{e}\n")
    Path(path).write_text("".join(lines), encoding="ascii")


def _trace_addr(value: int) -> tuple[int, int]:
    if value < 0 or value >> 128:
        raise ValueError(f"address {value} outside 0..2**128-1")
    if value <= 0xFFFFFFFF:
        return 0, V4_MAPPED_LO_TAG | value
    return int128_to_words(value)


def parse_trace(lines: Iterable[str], source: str = "<trace>") -> Trace:
    """Parse trace lines (seven columns, or six without flags) into a Trace."""
    rows: list[tuple[int, int, int, int, int, int, int, int]] = []
    expected: list[int] = []
    for lineno, raw in enumerate(lines, start=1):
        tokens = raw.split()
        if not tokens or tokens[0].startswith("#"):
            continue
        try:
            if len(tokens) not in (6, 7):
                raise ValueError(f"expected 6 or 7 columns, found {len(tokens)}")
            nums = [int(t) for t in tokens]
            src_hi, src_lo = _trace_addr(nums[0])
            dst_hi, dst_lo = _trace_addr(nums[1])
            sport, dport, proto = nums[2:5]
            flags = nums[5] if len(nums) == 7 else 0
            if not (0 <= sport <= 0xFFFF and 0 <= dport <= 0xFFFF and 0 <= proto <= 0xFF):
                raise ValueError("port or protocol out of range")
            if not 0 <= flags <= 0xFFFF or nums[-1] < -1:
                raise ValueError("flags or rule column out of range")
        except ValueError as exc:
            raise ClassBenchError(f"{source}:{lineno}: {exc}") from None
        rows.append((src_hi, src_lo, dst_hi, dst_lo, sport, dport, proto, flags))
        expected.append(nums[-1])
    headers = np.zeros(len(rows), dtype=HEADER_DTYPE)
    if rows:
        cols = list(zip(*rows, strict=True))
        for name, col in zip(
            ("src_hi", "src_lo", "dst_hi", "dst_lo", "sport", "dport", "proto", "tcp_flags"),
            cols,
            strict=True,
        ):
            headers[name] = np.array(col, dtype=np.uint64)
        headers["valid"] = 1
    return Trace(headers, np.array(expected, dtype=np.int64))


def read_trace(path: str | Path) -> Trace:
    """Read a trace file in ClassBench's trace format."""
    path = Path(path)
    with path.open(encoding="ascii", errors="replace") as fh:
        return parse_trace(fh, str(path))


def _random_u64(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 1 << 64, size=n, dtype=np.uint64, endpoint=False)


def generate_trace(
    rules: np.ndarray,
    per_rule: int = 4,
    seed: int = DEFAULT_SEED,
    flags: np.ndarray | None = None,
    draw_from: np.ndarray | None = None,
) -> Trace:
    """Headers at corners and interior points of every rule's box, shuffled, with answers.

    Half of each rule's `per_rule` headers (rounded up) are random corners, the rest uniform
    interior points. `draw_from` (rule indices) limits which rules headers are drawn from; the
    expected answer is always the reference first match over all of `rules`.
    """
    if per_rule < 1:
        raise ValueError("per_rule must be >= 1")
    rules = np.asarray(rules)
    rng = np.random.default_rng(seed)
    drawn = np.arange(len(rules)) if draw_from is None else np.asarray(draw_from, dtype=np.int64)
    idx = np.repeat(drawn, per_rule)
    corner = np.tile(np.arange(per_rule) < (per_rule + 1) // 2, len(drawn))
    n = len(idx)
    r = rules[idx]
    headers = np.zeros(n, dtype=HEADER_DTYPE)

    def pick(lo: np.ndarray, hi: np.ndarray, interior: np.ndarray) -> np.ndarray:
        """A corner (lo or hi, at random) where `corner`, else the given interior point."""
        use_hi = rng.random(n) < 0.5
        return np.where(corner, np.where(use_hi, hi, lo), interior)

    for field, plen_field, out in (
        ("src_addr", "src_plen", "src"),
        ("dst_addr", "dst_plen", "dst"),
    ):
        words = np.ascontiguousarray(r[field]).view(">u8").reshape(n, 2).astype(np.uint64)
        mhi, mlo = prefix_masks(r[plen_field])
        lo_hi, lo_lo = words[:, 0] & mhi, words[:, 1] & mlo
        top_hi, top_lo = lo_hi | ~mhi, lo_lo | ~mlo
        in_hi = lo_hi | (_random_u64(rng, n) & ~mhi)
        in_lo = lo_lo | (_random_u64(rng, n) & ~mlo)
        # Corners pick both words from the same end so that they are real corners.
        use_hi = rng.random(n) < 0.5
        headers[out + "_hi"] = np.where(corner, np.where(use_hi, top_hi, lo_hi), in_hi)
        headers[out + "_lo"] = np.where(corner, np.where(use_hi, top_lo, lo_lo), in_lo)
    for port in ("sport", "dport"):
        lo = r[port + "_lo"].astype(np.int64)
        hi = r[port + "_hi"].astype(np.int64)
        headers[port] = pick(lo, hi, rng.integers(lo, hi + 1))
    pmask = r["proto_mask"].astype(np.int64)
    pval = r["proto"].astype(np.int64) & pmask
    headers["proto"] = pick(pval, pval | (~pmask & 0xFF), pval | (rng.integers(0, 256, n) & ~pmask))
    if flags is not None:
        f = np.asarray(flags, dtype=np.int64)[idx]
        headers["tcp_flags"] = f[:, 0] & f[:, 1]
    headers["id_class"] = r["id_class"] & r["id_mask"]
    headers["valid"] = 1
    headers = headers[rng.permutation(n)]
    return Trace(headers, first_match(rules, headers))


def trace_is_ipv4(headers: np.ndarray) -> bool:
    """Whether every header of a batch is IPv4 (so the trace file holds 32-bit addresses)."""
    return bool(
        np.all(is_v4_mapped(headers["src_hi"], headers["src_lo"]))
        and np.all(is_v4_mapped(headers["dst_hi"], headers["dst_lo"]))
    )
