"""Differential tests: the numba classifiers agree with the reference first-match evaluation.

On all six ClassBench sets (a few thousand generated headers each, plus incremental delete and
insert sequences), and by property on small random rule sets that mix IPv4 and IPv6, equal
priorities, protocol masks and identity classes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dpdk_app import classbench
from dpdk_app.classifier.headers import headers_from_ints
from dpdk_app.classifier.tuplemerge import LinearScan, TupleMerge, warm_up
from dpdk_app.layout import ACT_DROP, RULE_DTYPE
from dpdk_app.reference import first_match

try:  # tests/unit as a package, or as a directory on sys.path (pytest's default)
    from .rulegen import near_headers, one_rule, rule_sets, v4
except ImportError:
    from rulegen import near_headers, one_rule, rule_sets, v4

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "classbench"
SETS = ("acl1_1k", "acl1_10k", "fw1_1k", "fw1_10k", "ipc1_1k", "ipc1_10k")
HEADERS_PER_SET = 2500


def reference_slots(rules: np.ndarray, slots: np.ndarray, headers: np.ndarray) -> np.ndarray:
    """The reference answer as classifier slots: rules[i] lives in slots[i]."""
    idx = first_match(rules, headers)
    if len(slots) == 0:
        return idx  # all -1
    return np.where(idx >= 0, slots[np.maximum(idx, 0)], -1)


@pytest.fixture(scope="module", params=SETS)
def classbench_set(request: pytest.FixtureRequest) -> tuple[str, np.ndarray, classbench.Trace]:
    if not DATA.is_dir():
        pytest.skip(f"ClassBench data folder {DATA} is absent")
    rules = classbench.load_rules(DATA / request.param)
    k = min(len(rules), HEADERS_PER_SET // 2)
    draw = np.random.default_rng(11).choice(len(rules), k, replace=False)
    return request.param, rules, classbench.generate_trace(rules, 2, seed=11, draw_from=draw)


def test_classbench_build_agrees_with_reference(classbench_set: tuple) -> None:
    name, rules, trace = classbench_set
    tm = TupleMerge(rules)
    got = tm.classify(trace.headers)
    bad = np.nonzero(got != trace.expected)[0]
    assert len(bad) == 0, f"{name}: {len(bad)} mismatches, first at header {bad[:5]}"
    assert np.array_equal(LinearScan(rules).classify(trace.headers), trace.expected)
    # The answers name rules: ids and actions come from the matched rule.
    assert np.array_equal(tm.rule_ids(got), np.where(got >= 0, rules["rule_id"][got], 0))


def test_classbench_incremental_updates_agree_with_reference(classbench_set: tuple) -> None:
    name, rules, trace = classbench_set
    rng = np.random.default_rng(12)
    n = len(rules)
    # Start from half the rules inserted in random order, one call per chunk ...
    first = rng.permutation(n)[: n // 2]
    tm = TupleMerge(collide_limit=4, capacity=16)  # small: exercises splits and every growth
    slot_of = np.full(n, -1, dtype=np.int64)
    for chunk in np.array_split(first, 7):
        slot_of[chunk] = tm.insert(rules[chunk])
    # ... then delete a third of them (some singly) and insert the other half.
    gone = rng.choice(first, len(first) // 3, replace=False)
    for s in slot_of[gone[:50]]:
        assert tm.delete(s) == 1
    assert tm.delete(slot_of[gone[50:]]) == len(gone) - 50
    assert tm.delete(slot_of[gone[:10]]) == 0  # already deleted: ignored
    slot_of[gone] = -1
    rest = np.setdiff1d(np.arange(n), first)
    for i in rest[:100]:
        slot_of[i] = tm.insert(rules[i : i + 1])[0]
    slot_of[rest[100:]] = tm.insert(rules[rest[100:]])
    live = np.nonzero(slot_of >= 0)[0]  # ascending: equal priorities resolve the same way
    assert tm.n_rules == len(live)
    expected = reference_slots(rules[live], slot_of[live], trace.headers)
    bad = np.nonzero(tm.classify(trace.headers) != expected)[0]
    assert len(bad) == 0, f"{name}: {len(bad)} mismatches after updates"
    # Deleting everything leaves a classifier that matches nothing.
    tm.delete(slot_of[live])
    assert tm.n_rules == 0 and tm.n_tables == 0
    assert np.all(tm.classify(trace.headers) == -1)


# -- properties on small random rule sets ------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(rule_sets(), st.integers(0, 2**32), st.sampled_from([1, 2, 10]))
def test_random_rules_agree_with_reference(rules: np.ndarray, seed: int, limit: int) -> None:
    hdrs = near_headers(rules, seed, n=80)
    expected = first_match(rules, hdrs)
    assert np.array_equal(TupleMerge(rules, collide_limit=limit).classify(hdrs), expected)
    assert np.array_equal(LinearScan(rules).classify(hdrs), expected)


@settings(max_examples=60, deadline=None)
@given(
    rule_sets(),
    rule_sets(),
    st.lists(st.tuples(st.booleans(), st.integers(0, 40)), max_size=30),
    st.integers(0, 2**32),
)
def test_random_update_sequences_agree_with_reference(
    initial: np.ndarray, extra: np.ndarray, ops: list[tuple[bool, int]], seed: int
) -> None:
    pool = np.concatenate([initial, extra])
    tm = TupleMerge(collide_limit=1)
    live: list[tuple[int, int]] = []  # (pool index, slot) in insertion order
    for i, s in enumerate(tm.insert(initial)):
        live.append((i, int(s)))
    for is_insert, k in ops:
        if is_insert:
            i = k % len(pool)
            live.append((i, int(tm.insert(pool[i : i + 1])[0])))
        elif live:
            _, slot = live.pop(k % len(live))
            assert tm.delete(slot) == 1
    hdrs = near_headers(pool, seed, n=80)
    rules = pool[[i for i, _ in live]] if live else pool[:0]
    slots = np.array([s for _, s in live], dtype=np.int64)
    assert np.array_equal(tm.classify(hdrs), reference_slots(rules, slots, hdrs))


# -- edges -------------------------------------------------------------------------------------


def test_invalid_headers_never_match() -> None:
    tm = TupleMerge(one_rule(proto_mask=0))  # matches every IPv4 header
    h = headers_from_ints([v4("1.1.1.1")] * 2, [v4("2.2.2.2")] * 2, [1, 1], [2, 2], [6, 6])
    h["valid"][1] = 0
    assert list(tm.classify(h)) == [0, -1]
    assert list(LinearScan(tm_rules := one_rule(proto_mask=0)).classify(h)) == [0, -1]
    assert len(tm_rules) == 1


def test_bad_rules_are_refused_and_change_nothing() -> None:
    tm = TupleMerge(one_rule())
    h = headers_from_ints([v4("1.1.1.1")], [v4("2.2.2.2")], [1], [2], [6])
    bad = np.concatenate([one_rule(priority=9), one_rule(dport_lo=9, dport_hi=3)])
    with pytest.raises(ValueError, match="rule 1: dport_lo > dport_hi"):
        tm.insert(bad)
    with pytest.raises(TypeError):
        tm.insert(np.zeros(2, dtype=np.int64))
    assert tm.n_rules == 1 and list(tm.classify(h)) == [0]


def test_growth_of_every_array_from_tiny_capacity(monkeypatch: pytest.MonkeyPatch) -> None:
    # Distinct tuples, one rule at a time, into a classifier with room for 2 tables and 1 rule.
    monkeypatch.setattr(TupleMerge, "initial_tables", 2)
    rules = np.concatenate(
        [
            one_rule(src_plen=96 + a, dst_plen=96 + b, proto=6, proto_mask=m, priority=a + b)
            for a in (32, 24, 16, 8, 0)
            for b in (32, 20, 0)
            for m in (0, 0xFF)
        ]
    )
    for i, r in enumerate(rules):
        r["src_addr"][12:] = (10, i % 3, 0, 0)
    tm = TupleMerge(capacity=1, collide_limit=1)
    slots = np.concatenate([tm.insert(rules[i : i + 1]) for i in range(len(rules))])
    assert tm.n_tables > 2
    hdrs = near_headers(rules, 3, n=300)
    assert np.array_equal(tm.classify(hdrs), reference_slots(rules, slots, hdrs))


def test_slots_are_reused_and_ids_actions_reported() -> None:
    rules = np.concatenate([one_rule(rule_id=7, priority=2), one_rule(rule_id=8, action=ACT_DROP)])
    tm = TupleMerge(rules)
    h = headers_from_ints([v4("1.1.1.1")], [v4("2.2.2.2")], [1], [2], [6])
    assert list(tm.classify(h)) == [0]
    assert tm.delete([0]) == 1
    slot = tm.classify(h)
    assert list(slot) == [1] and list(tm.rule_ids(slot)) == [8]
    assert list(tm.actions(slot)) == [ACT_DROP]
    assert [list(a) for a in tm.lookup(h)] == [[1], [8], [ACT_DROP]]
    assert list(tm.insert(rules[:1])) == [0]  # the freed slot comes back
    assert list(tm.rule_ids(tm.classify(h))) == [7]
    assert list(tm.rule_ids(np.array([-1]))) == [0]


def test_warm_up_runs_every_kernel() -> None:
    warm_up()  # table, slot and bucket growth included; must not raise


def test_empty_classifier_and_empty_batch() -> None:
    tm = TupleMerge(np.zeros(0, dtype=RULE_DTYPE))
    h = headers_from_ints([v4("1.1.1.1")], [v4("2.2.2.2")], [1], [2], [6])
    assert list(tm.classify(h)) == [-1]
    assert len(tm.classify(h[:0])) == 0
