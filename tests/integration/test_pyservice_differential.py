"""Differential test: DPDK path, numba path and the reference give the same verdicts.

ICMP errors (test_icmp_related.py's scenario plus errors around mutated quotes: cut, flipped,
overwritten, checksums kept right) run through both backends, which must agree on every frame's
fate and rule id, on the counters, the records and the connection table left behind.

For each ClassBench 1K rule set (../shared/data/classbench/), a generated trace is turned into
service-encapsulated frames (TCP SYN, UDP, ICMP as the pipeline keys it, other protocols with
ports 0), one frame per connection so that connection state never decides, and replayed
through each backend on net_pcap. Every third rule is made a drop. Expected: a frame is
forwarded iff the reference first match (dpdk_app/reference.py) is an allow, carrying that
rule's id in its service header; the drop counters split into rule and default as the
reference says.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import test_dpdk_fastpath as dpdk_tests
import test_icmp_related as related
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from dpdk_app import fastpath
from dpdk_app.classbench import generate_trace, load_rules
from dpdk_app.fastpath import FastPath
from dpdk_app.layout import ACT_ALLOW, ACT_DROP
from dpdk_app.reference import first_match

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "classbench"
SETS = ("acl1_1k", "fw1_1k", "ipc1_1k")
L2 = Ether(src="02:00:00:00:00:0a", dst="02:00:00:00:00:0b")


def _v4(lo: int) -> str:
    v = int(lo) & 0xFFFFFFFF
    return f"{v >> 24}.{(v >> 16) & 255}.{(v >> 8) & 255}.{v & 255}"


def trace_frames(rules: np.ndarray) -> tuple[list[bytes], np.ndarray]:
    """(encapsulated frames, reference winner index per frame) for a generated trace."""
    hdrs = generate_trace(rules, per_rule=1, seed=5).headers.copy()
    frames: list[bytes] = []
    keep: list[int] = []
    seen: set[tuple[int, frozenset[str], frozenset[int]]] = set()
    for i, h in enumerate(hdrs):
        proto, sport, dport = int(h["proto"]), int(h["sport"]), int(h["dport"])
        if proto not in (1, 6, 17):
            sport = dport = 0  # no L4 header the service would read ports from
            hdrs[i]["sport"] = hdrs[i]["dport"] = 0
        if (proto == 6 and (sport == 0 or dport == 0)) or (proto == 17 and dport == 0):
            continue  # port 0 is malformed (bad_l4): not a classification question
        src, dst = _v4(h["src_lo"]), _v4(h["dst_lo"])
        conn = (proto, frozenset((src, dst)), frozenset((sport, dport)))
        if conn in seen:
            continue  # a second packet of a connection is decided by its state
        seen.add(conn)
        ip = L2 / IP(src=src, dst=dst)
        if proto == 6:
            pkt = ip / TCP(sport=sport, dport=dport, flags="S")
        elif proto == 17:
            pkt = ip / UDP(sport=sport, dport=dport) / Raw(b"q")
        elif proto == 1:
            pkt = ip / ICMP(type=dport >> 8, code=dport & 255, id=sport)
        else:
            pkt = L2 / (IP(src=src, dst=dst, proto=proto) / Raw(b"x" * 8))
        frames.append(dpdk_tests.svc(len(frames), pkt))
        keep.append(i)
    return frames, first_match(rules, hdrs[np.array(keep)])


@pytest.mark.parametrize("backend", ["dpdk", "numba"])
@pytest.mark.parametrize("name", SETS)
def test_classbench_trace_verdicts_equal_reference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, backend: str
) -> None:
    if not (DATA / name).exists():
        pytest.skip(f"ClassBench set {DATA / name} is not available")
    if backend == "dpdk" and fastpath.find_binary() is None:
        pytest.skip("nicfw-fastpath is not built (make dpdk)")
    monkeypatch.setattr(dpdk_tests, "FastPath", functools.partial(FastPath, backend=backend))
    rules = load_rules(DATA / name)
    rules["action"][2::3] = ACT_DROP
    frames, win = trace_frames(rules)
    assert len(frames) > 300
    run = dpdk_tests.run_pcap(tmp_path, frames, rules)
    assert run.exit_code == 0, run.log
    action = np.where(win >= 0, rules["action"][np.maximum(win, 0)], 0)
    want = {i for i in range(len(frames)) if action[i] == ACT_ALLOW}
    assert want and len(want) < len(frames)  # both verdicts occur
    got = run.forwarded()
    assert sorted(got - want) == [] and sorted(want - got) == []
    for h, _inner in run.out:
        i = h.egress_port - 1000
        assert h.rule_id == int(rules["rule_id"][win[i]]), f"frame {i}"
    drops = run.stats["drop"]
    assert drops["rule"] == int((action == ACT_DROP).sum())
    assert drops["default"] == int((win < 0).sum())
    assert run.stats["dropped"] == drops["rule"] + drops["default"]


def _rows(recs: np.ndarray, fields: tuple[str, ...]) -> list[tuple[object, ...]]:
    """Records as sorted tuples of some fields (addresses as bytes)."""
    return sorted(
        tuple(bytes(r[f]) if f.endswith("addr") else int(r[f]) for f in fields) for r in recs
    )


def _outcome(run: dpdk_tests.Run) -> dict[str, object]:
    """What a run did, without times: fates, rule ids, counters, records, flows."""
    fields = ("src_addr", "dst_addr", "sport", "dport", "proto", "verdict", "rule_id", "event")
    stats = {k: run.stats[k] for k in ("rx", "allowed", "dropped", "ct_related", "ct_new")}
    assert run.flows is not None
    return {
        "out": sorted((h.egress_port, h.rule_id, inner) for h, inner in run.out),
        "stats": stats | {"drop": run.stats["drop"]},
        "records": _rows(run.records, fields),
        "flows": _rows(run.flows, (*fields, "tcp_state", "packets", "bytes")),
    }


def test_icmp_errors_get_the_same_verdicts_in_both_backends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps = related.scenario()
    frames = related.frames_of(steps)
    frames += [
        dpdk_tests.svc(len(frames) + j, m) for j, m in enumerate(related.mutants(steps, 600, 8))
    ]
    got, fwd = {}, set()
    for backend in ("dpdk", "numba"):
        (tmp_path / backend).mkdir()
        run = related.run_backend(tmp_path / backend, monkeypatch, backend, frames)
        assert run.exit_code == 0, run.log
        got[backend] = _outcome(run)
        fwd = run.forwarded()
    assert got["dpdk"] == got["numba"]
    mutated = set(range(len(steps), len(frames)))
    assert fwd & mutated and mutated - fwd  # mutants both related and not
