"""rte_acl in the fast path answers exactly as the reference first-match evaluation.

One set of vectors runs through every rte_acl classify method the CPU offers (scalar, SSE,
AVX2, AVX-512) and the C linear scan, through the fast path's bench mode: a ClassBench set
shipped in ../shared/data/classbench, and a random rule set mixing IPv4 and IPv6 prefixes
(including prefixes around ::ffff:0:0/96, which decide whether a rule lands in the IPv4 or the
IPv6 rte_acl context). Expected answers come from dpdk_app.reference, never from the code under
test.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import numpy as np
import pytest

from dpdk_app import classbench, fastpath
from dpdk_app.dpdk_backend import run_bench
from dpdk_app.fastpath import FastPathError
from dpdk_app.layout import RULE_DTYPE

CLASSBENCH = Path(__file__).resolve().parents[3] / "shared" / "data" / "classbench"
if not CLASSBENCH.is_dir():
    CLASSBENCH = Path("/work/shared/data/classbench")
ALGS = ["scalar", "sse", "avx2", "avx512x16", "avx512x32"]

pytestmark = [
    pytest.mark.dpdk,
    pytest.mark.skipif(
        fastpath.find_binary() is None, reason="nicfw-fastpath is not built (make dpdk)"
    ),
]


def _prefix_text(addr: bytes, plen: int) -> str:
    ip = ipaddress.IPv6Address(bytes(addr))
    if plen >= 96 and ip.ipv4_mapped is not None:
        return f"{ip.ipv4_mapped}/{plen - 96}"
    return f"{ip}/{plen}"


def write_rules(path: Path, rules: np.ndarray) -> None:
    """A ClassBench rule file (IPv6 prefixes as the classbench.py extension allows)."""
    lines = []
    for r in rules:
        lines.append(
            f"@{_prefix_text(r['src_addr'], int(r['src_plen']))}\t"
            f"{_prefix_text(r['dst_addr'], int(r['dst_plen']))}\t"
            f"{r['sport_lo']} : {r['sport_hi']}\t{r['dport_lo']} : {r['dport_hi']}\t"
            f"0x{int(r['proto']):02X}/0x{int(r['proto_mask']):02X}\t0x0000/0x0000\n"
        )
    path.write_text("".join(lines))


def random_mixed_rules(n: int, seed: int) -> np.ndarray:
    """Random IPv4 and IPv6 rules, with broad prefixes that straddle the mapped space."""
    rng = np.random.default_rng(seed)
    broad = ["::/0", "::/1", "::/80", "::ffff:0:0/96", "2001:db8::/32", "8000::/1", "0.0.0.0/0"]
    rules = np.zeros(n, dtype=RULE_DTYPE)
    for i in range(n):
        picks = []
        for _ in range(2):
            kind = rng.integers(4)
            if kind == 0:
                picks.append(broad[rng.integers(len(broad))])
            elif kind == 1:
                addr = ipaddress.IPv4Address(int(rng.integers(0, 2**32)))
                picks.append(f"{addr}/{rng.integers(0, 33)}")
            else:
                low = int(rng.integers(0, 2**63)) << 16
                addr = ipaddress.IPv6Address((0x20010DB8 << 96) | low)
                picks.append(f"{addr}/{rng.integers(32, 129)}")
        proto = [None, 6, 17][rng.integers(3)]
        lo = sorted(int(x) for x in rng.integers(0, 65536, 2))
        dlo = sorted(int(x) for x in rng.integers(0, 65536, 2))
        sport = (0, 0xFFFF) if rng.random() < 0.6 else (lo[0], lo[1])
        dport = (0, 0xFFFF) if rng.random() < 0.3 else (dlo[0], dlo[1])
        rec = fastpath.make_rule(
            i + 1,
            priority=n - i,
            src=picks[0],
            dst=picks[1],
            proto=proto,
            sport=sport,
            dport=dport,
        )
        rules[i] = rec[0]
    return rules


def unambiguous(headers: np.ndarray) -> np.ndarray:
    """Headers the trace format can carry: an IPv6 address below 2**32 would read as IPv4."""
    ok = np.ones(len(headers), dtype=bool)
    for side in ("src", "dst"):
        ok &= ~((headers[side + "_hi"] == 0) & ((headers[side + "_lo"] >> np.uint64(32)) == 0))
    return ok


@pytest.fixture(scope="module")
def vector_sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path, int]]:
    """name -> (rule file, trace file, headers); traces answered by the reference."""
    out = {}
    tmp = tmp_path_factory.mktemp("classify")
    sets: dict[str, np.ndarray] = {"mixed_v4_v6": random_mixed_rules(300, seed=5)}
    if (CLASSBENCH / "fw1_1k").is_file():
        sets["fw1_1k"] = classbench.load_rules(CLASSBENCH / "fw1_1k")
    for name, rules in sets.items():
        trace = classbench.generate_trace(rules, per_rule=6, seed=9)
        keep = unambiguous(trace.headers)
        rules_path, trace_path = tmp / f"{name}.rules", tmp / f"{name}.trace"
        write_rules(rules_path, rules)
        classbench.write_trace(trace_path, trace.headers[keep], trace.expected[keep])
        assert (trace.expected[keep] == -1).sum() < keep.sum()  # the rules do match things
        out[name] = (rules_path, trace_path, int(keep.sum()))
    return out


@pytest.mark.parametrize("alg", ALGS)
@pytest.mark.parametrize("name", ["mixed_v4_v6", "fw1_1k"])
def test_every_classify_method_agrees_with_the_reference(
    vector_sets: dict[str, tuple[Path, Path, int]], name: str, alg: str
) -> None:
    if name not in vector_sets:
        pytest.skip(f"ClassBench set {name} not found under {CLASSBENCH}")
    rules_path, trace_path, n = vector_sets[name]
    try:
        fig = run_bench(
            rules_path, trace_path, repeat=1, alg=alg, verify_linear=alg == "avx2", min_time=0
        )
    except FastPathError as exc:
        if "not supported" in str(exc):
            pytest.skip(f"{alg} is not available on this CPU")
        raise
    assert fig["packets"] == n and fig["alg"] == alg
    assert fig["mismatches"] == 0, fig["mismatch_examples"]
    if alg == "avx2":
        assert fig["linear_mismatches"] == 0


def test_bench_reports_mismatches(
    vector_sets: dict[str, tuple[Path, Path, int]], tmp_path: Path
) -> None:
    """A wrong expected column is reported, packet by packet (the check can fail)."""
    rules_path, trace_path, _n = vector_sets["mixed_v4_v6"]
    lines = trace_path.read_text().splitlines()
    for i in (0, 5):
        cols = lines[i].split("\t")
        cols[-1] = str(int(cols[-1]) + 1)
        lines[i] = "\t".join(cols)
    bad = tmp_path / "bad.trace"
    bad.write_text("\n".join(lines) + "\n")
    fig = run_bench(rules_path, bad, repeat=1, alg="scalar", min_time=0)
    assert fig["mismatches"] == 2
    assert [m["packet"] for m in fig["mismatch_examples"]] == [0, 5]


def test_bench_rejects_a_malformed_rule_file(tmp_path: Path) -> None:
    rules = tmp_path / "bad.rules"
    rules.write_text("@10.0.0.0/8\t10.0.0.0/8\t0 : 65535\t9 : 8\t0x06/0xFF\t0x0000/0x0000\n")
    trace = tmp_path / "t.trace"
    trace.write_text("1\t2\t3\t4\t6\t0\t-1\n")
    with pytest.raises(FastPathError, match=r"bad.rules:1: not a ClassBench rule"):
        run_bench(rules, trace, repeat=1, min_time=0)
