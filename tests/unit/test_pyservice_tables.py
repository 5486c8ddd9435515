"""Unit tests of the numba fallback service's tables: incremental rule sets, hash tables, args.

No processes: the RuleSet and Datapath objects are driven directly. The incremental LOAD_RULES
path is checked against the reference first match after every step of random edit sequences.
"""

from __future__ import annotations

import random
import sys

import numpy as np
import pytest

from dpdk_app import fastpath
from dpdk_app.classbench import generate_trace
from dpdk_app.fastpath import FastPath, make_identity, make_rule
from dpdk_app.layout import ACT_ALLOW, ACT_DROP, ACT_REJECT, RULE_DTYPE
from dpdk_app.pyservice import tables as tb
from dpdk_app.pyservice.datapath import Config, Datapath, Table
from dpdk_app.pyservice.rules import RuleError, RuleSet
from dpdk_app.pyservice.service import parse_args
from dpdk_app.reference import first_match


def random_rules(rng: random.Random, n: int, first_id: int) -> np.ndarray:
    """n rules over a small space (10.0.0.0/8, few ports) so that they overlap a lot."""
    out = []
    for i in range(n):
        lo = rng.randrange(0, 60)
        out.append(
            make_rule(
                first_id + i,
                rng.choice((ACT_ALLOW, ACT_DROP, ACT_REJECT)),
                priority=rng.randrange(1, 6),
                src=f"10.{rng.randrange(4)}.0.0/{rng.choice((8, 14, 16, 24))}",
                dst=f"10.{rng.randrange(4)}.{rng.randrange(4)}.0/{rng.choice((8, 16, 24, 32))}",
                proto=rng.choice((None, 6, 17)),
                dport=(lo, lo + rng.randrange(0, 30)),
            )
        )
    return np.concatenate(out)


def answers(rs: RuleSet, rules: np.ndarray, hdrs: np.ndarray) -> None:
    act, rid = rs.classify(hdrs)
    win = first_match(rules, hdrs)
    want_act = np.where(win >= 0, rules["action"][np.maximum(win, 0)], 0)
    want_id = np.where(win >= 0, rules["rule_id"][np.maximum(win, 0)], 0)
    assert np.array_equal(act, want_act)
    assert np.array_equal(rid, want_id)


def test_incremental_loads_answer_like_the_reference() -> None:
    rng = random.Random(4)
    rules = random_rules(rng, 60, 1)
    rs = RuleSet()
    assert rs.load(rules).rebuilt
    hdrs = generate_trace(random_rules(rng, 200, 1000), per_rule=2, seed=3).headers
    answers(rs, rules, hdrs)
    incremental = 0
    next_id = 100
    for step in range(50):
        cur = rules.copy()
        op = step % 5
        if op == 0:  # append a few rules
            cur = np.concatenate([cur, random_rules(rng, rng.randrange(1, 4), next_id)])
            next_id += 4
        elif op == 1:  # delete a few
            drop = rng.sample(range(len(cur)), min(3, len(cur) - 1))
            cur = np.delete(cur, drop)
        elif op == 2:  # change one rule's action in place (= delete + insert)
            j = rng.randrange(len(cur))
            cur["action"][j] = ACT_DROP if cur["action"][j] != ACT_DROP else ACT_ALLOW
        elif op == 3:  # move a rule to the front: ties may now need a rebuild
            j = rng.randrange(len(cur))
            cur = np.concatenate([cur[j : j + 1], np.delete(cur, j)])
        else:  # an exact duplicate of an existing rule, somewhere in the middle
            j = rng.randrange(len(cur))
            cur = np.insert(cur, rng.randrange(len(cur)), cur[j])
        rep = rs.load(cur)
        incremental += not rep.rebuilt
        rules = cur
        answers(rs, rules, hdrs)
    assert incremental >= 20  # most edits went in without a rebuild
    assert rs.inserted > 0 and rs.deleted > 0


def test_an_added_rule_that_must_win_a_tie_forces_a_rebuild() -> None:
    a = make_rule(1, ACT_ALLOW, proto=6)
    b = make_rule(2, ACT_DROP, proto=6)
    rs = RuleSet()
    rs.load(a)
    rep = rs.load(np.concatenate([b, a]))  # b first at the same priority: b must win
    assert rep.rebuilt
    hdrs = generate_trace(np.concatenate([b, a]), per_rule=2).headers
    answers(rs, np.concatenate([b, a]), hdrs)
    rep = rs.load(np.concatenate([b, a, make_rule(3, ACT_ALLOW, proto=17)]))
    assert not rep.rebuilt and (rep.inserted, rep.deleted) == (1, 0)


def test_bad_rules_are_refused_and_change_nothing() -> None:
    rs = RuleSet()
    good = np.concatenate([make_rule(1, ACT_ALLOW), make_rule(12, ACT_DROP, proto=6)])
    rs.load(good)
    bad = good.copy()
    bad["sport_lo"][1], bad["sport_hi"][1] = 9, 8
    with pytest.raises(RuleError, match=r"rule 1 \(rule_id 12\): sport_lo > sport_hi"):
        rs.load(bad)
    bad = good.copy()
    bad["action"][0] = 9
    with pytest.raises(RuleError, match="action"):
        rs.load(bad)
    bad = good.copy()
    bad["dst_plen"][0] = 129
    with pytest.raises(RuleError, match="dst_plen > 128"):
        rs.load(bad)
    assert rs.generation == 1 and np.array_equal(rs.rules, good)


def test_empty_rule_set_drops_everything() -> None:
    rs = RuleSet()
    rs.load(np.zeros(0, dtype=RULE_DTYPE))
    hdrs = generate_trace(make_rule(1), per_rule=4).headers
    act, rid = rs.classify(hdrs)
    assert rs.loaded and not act.any() and not rid.any()


def test_hash_table_add_find_delete_against_a_dict() -> None:
    """Random adds and deletes on a small, crowded table (backward-shift deletion)."""
    rng = random.Random(9)
    t = Table(64)
    seed = 12345
    live: dict[tuple[int, ...], int] = {}
    for _ in range(3000):
        key = tuple(rng.randrange(4) for _ in range(5))
        t.keys[-1] = key
        p = tb.tbl_find(t.index, t.keys, t.cap, np.uint64(seed))
        assert (p >= 0) == (key in live) and (p < 0 or live[key] == p)
        if key in live and rng.random() < 0.6:
            assert tb.tbl_del(t.index, t.keys, t.free, t.meta, p, seed)
            del live[key]
        elif key not in live:
            p = tb.tbl_add(t.index, t.keys, t.free, t.meta, t.cap, seed)
            assert (p >= 0) == (len(live) < 64)
            if p >= 0:
                live[key] = p
        assert t.count == len(live)
    for key, p in live.items():
        t.keys[-1] = key
        assert tb.tbl_find(t.index, t.keys, t.cap, np.uint64(seed)) == p


def test_identity_table_replace_and_delete() -> None:
    dp = Datapath(Config(max_flows=64, max_identities=64))
    ids = np.concatenate(
        [
            make_identity("10.1.0.1", "10.2.0.1", 1, 2, 6, 4),
            make_identity("::1", "::2", 3, 4, 17, 5),
        ]
    )
    assert dp.identity_add(ids) == (2, False)
    ids["id_class"] = 7
    assert dp.identity_add(ids) == (2, False) and dp.ids.count == 2
    assert set(dp.id_class[:64][dp.id_class[:64] != 0].tolist()) == {7}
    assert dp.identity_del(ids[:1]) == 1 and dp.identity_del(ids[:1]) == 0
    many = np.concatenate([make_identity("10.0.0.1", "10.0.0.2", p, 80, 6, 1) for p in range(70)])
    written, full = dp.identity_add(many)
    assert full and written == 63  # 64 entries, one already used


def test_command_line_is_the_binarys() -> None:
    o = parse_args(
        ["--no-huge", "-l", "0", "--vdev=net_af_packet0,iface=svc0", "--", "--ctrl", "/x.sock",
         "--udp-timeout", "5", "--no-tcp-pickup", "--wait-rules"]
    )  # fmt: skip
    assert (o.ctrl, o.vdev, o.wait_rules) == ("/x.sock", "net_af_packet0,iface=svc0", True)
    assert o.cfg.timeouts["udp"] == 5 and not o.cfg.tcp_pickup
    assert parse_args(["--", "--ctrl", "c", "--no-port"]).vdev is None
    with pytest.raises(SystemExit):
        parse_args(["--", "--ctrl", "c"])  # no vdev, no --no-port: port 0 does not exist
    with pytest.raises(SystemExit):
        parse_args(["--vdev", "net_null0", "--", "--ctrl", "c", "--max-flows", "1"])


def test_fastpath_backend_picks_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    fp = FastPath(["net_null0"], backend="numba", options=("--no-port",))
    try:
        assert fp.argv[:3] == [sys.executable, "-m", "dpdk_app.pyservice"]
        assert fp.argv[fp.argv.index("--") + 1 :][:1] == ["--ctrl"]
        assert "--vdev=net_null0" in fp.argv
    finally:
        fp.close()
    monkeypatch.setattr(fastpath, "find_binary", lambda asan=False: None)
    fp = FastPath(["net_null0"], backend="auto")
    assert fp.backend == "numba"
    fp.close()
    monkeypatch.setenv(fastpath.ENV_BACKEND, "numba")
    fp = FastPath(["net_null0"])
    assert fp.backend == "numba"
    fp.close()
    with pytest.raises(ValueError, match="backend"):
        FastPath(["net_null0"], backend="p4")


def test_random_frames_never_crash_and_only_parsed_frames_pass() -> None:
    """Garbage, truncations and bit flips of a valid SYN through the datapath, allow-all rules."""
    from dpdk_app.packets import PARSE_OK, parse_frames
    from dpdk_app.pyservice.warm import _tcp

    rng = random.Random(21)
    dp = Datapath(Config(max_flows=256, max_identities=64))
    dp.rules.load(make_rule(1, ACT_ALLOW))
    good = _tcp(1000, 80, 0x02)
    frames = [good[:n] for n in range(len(good))]
    frames += [bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 90))) for _ in range(300)]
    for _ in range(300):
        b = bytearray(good)
        for _ in range(rng.randrange(1, 4)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        frames.append(bytes(b))
    out = dp.process(frames)
    _hdrs, info = parse_frames(frames)
    parsed = {frames[i][26:] for i in np.flatnonzero(info["drop"] == PARSE_OK)}
    # A flipped reason byte can make a frame the pipeline's reject (reason 5): those are
    # answered, not forwarded; every forwarded frame is a parsed one (rule id rewritten).
    fwd = [f for f in out if f[18] != 5]
    assert all(f[26:] in parsed for f in fwd)
    s = dp.stats_dict()
    assert s["allowed"] + s["dropped"] + s["rejected"] == len(frames)
    assert s["allowed"] == len(fwd) and s["allowed"] < len(frames) // 2
    assert len(out) - len(fwd) == s["reject_sent"] <= s["rejected"]
