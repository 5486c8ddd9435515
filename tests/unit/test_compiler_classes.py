"""Class-id encodings: bitmap, packed fields, merged equivalence classes; LPM inheritance."""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import itertools
import random
from collections.abc import Iterable

import pytest

from offload import names
from offload.compiler import (
    AddressGroup,
    CompileError,
    CompileOptions,
    Compiler,
    EncodingError,
    Packet,
    ResolvedPolicy,
    ResolvedRule,
    ResolvedWorkload,
    Tables,
    compile_policy,
    evaluate,
)
from offload.compiler.classes import BARRIER, build_class_table, memberships
from offload.compiler.encoding import Encoding, choose_encoding
from offload.entries import Lpm, Ternary
from offload.p4values import ip_to_int128, network_to_lpm128

ALL = (1 << 64) - 1


def group(name: str, *blocks: str) -> AddressGroup:
    return AddressGroup(name, frozenset(network_to_lpm128(b) for b in blocks))


def key(addr: str) -> int:
    return ip_to_int128(addr)


def test_more_specific_prefixes_inherit_enclosing_memberships() -> None:
    groups = [
        group("big", "10.0.0.0/8"),
        group("mid", "10.1.0.0/16"),
        group("six", "2001:db8::/32"),
    ]
    eff, barriers = memberships(groups, [key("10.1.2.3"), key("192.0.2.1")])
    assert eff[network_to_lpm128("10.1.0.0/16")] == 0b011
    assert eff[(key("10.1.2.3"), 128)] == 0b011
    assert eff[(key("192.0.2.1"), 128)] == 0
    assert eff[network_to_lpm128("2001:db8::/32")] == 0b100
    assert barriers == set()


def test_ipv6_any_gets_a_barrier_so_ipv4_does_not_inherit_it() -> None:
    groups = [group("v6", "::/0"), group("v4", "10.0.0.0/8")]
    eff, barriers = memberships(groups, [key("192.0.2.1")])
    assert barriers == {BARRIER}
    assert eff[BARRIER] == 0 and eff[(key("192.0.2.1"), 128)] == 0
    assert eff[network_to_lpm128("10.0.0.0/8")] == 0b10
    table = build_class_table(names.SRC_CLASS, groups, {key("192.0.2.1"): 5})
    by_key = {e.match: e.params_dict for e in table.entries}
    assert by_key[()] == {"class_id": 1, "workload_id": 0}  # ::/0 is an omitted key
    assert by_key[(("ip_src", Lpm(*BARRIER)),)] == {"class_id": 0, "workload_id": 0}
    assert by_key[(("ip_src", Lpm(key("192.0.2.1"), 128)),)] == {"class_id": 0, "workload_id": 5}


def test_entries_equal_to_a_miss_are_left_out() -> None:
    table = build_class_table(names.DST_CLASS, [group("g", "10.0.0.0/8")], {})
    assert [e.match for e in table.entries] == [
        (("ip_dst", Lpm(*network_to_lpm128("10.0.0.0/8"))),)
    ]
    assert build_class_table(names.DST_CLASS, [group("empty")], {}).entries == ()


def test_bitmap_gives_each_group_one_bit() -> None:
    names_ = tuple(f"g{i}" for i in range(64))
    enc = choose_encoding(names_, {0b11, 1 << 63})
    assert enc.kind == "bitmap" and enc.bits == 64
    assert enc.codes["g63"] == (Ternary(1 << 63, 1 << 63),)
    assert enc.class_ids[0b11] == 0b11
    assert enc.groups_of(0b11) == ("g0", "g1")


def test_disjoint_groups_beyond_64_pack_into_one_field() -> None:
    names_ = tuple(f"g{i:03d}" for i in range(100))
    enc = choose_encoding(names_, {1 << i for i in range(100)})
    assert enc.kind == "packed" and enc.bits == 7
    values = {enc.codes[n][0].value for n in names_}
    assert len(values) == 100 and all(enc.codes[n][0].mask == 0x7F for n in names_)
    assert enc.class_ids[1 << 5] == enc.codes["g005"][0].value


def test_packed_fields_never_hold_two_groups_that_share_an_address() -> None:
    # 90 groups; g(2k) and g(2k+1) overlap pairwise, and g0 overlaps everything.
    n = 90
    masks = {1 << i for i in range(n)} | {
        (1 << (2 * k)) | (1 << (2 * k + 1)) for k in range(n // 2)
    }
    masks |= {1 | (1 << i) for i in range(1, n)}
    names_ = tuple(f"g{i:02d}" for i in range(n))
    enc = choose_encoding(names_, masks)
    assert enc.kind == "packed"
    for m in masks:
        members = [names_[i] for i in range(n) if m >> i & 1]
        fields = [f for f in enc.fields for g in members if g in f.members]
        assert len(fields) == len(set(map(id, fields))), m
    assert all(len(codes) == 1 for codes in enc.codes.values())


def overlapping_policy(n_groups: int) -> ResolvedPolicy:
    """Groups over nested and overlapping /28../32 blocks, one rule per group pair."""
    groups = {}
    for i in range(n_groups):
        base = 16 * (i % 5)
        blocks = {f"10.0.0.{base}/28", f"10.0.0.{(7 * i) % 64}/32", f"10.0.0.{(i * 4) % 64}/30"}
        groups[f"g{i}"] = group(f"g{i}", *blocks)
    names_ = list(groups)
    pairs = [(names_[k % n_groups], names_[(5 * k + 1) % n_groups]) for k in range(40)]
    rules = tuple(
        ResolvedRule(100 + k, f"r{k}", k, ("allow", "drop", "reject")[k % 3], (a,), (b,))
        for k, (a, b) in enumerate(pairs)
    )
    workloads = (ResolvedWorkload("w", 9, (key("10.0.0.17"),)),)
    return ResolvedPolicy(groups, rules, workloads, "allow")


def agree_everywhere(resolved: ResolvedPolicy, opts: CompileOptions) -> None:
    tables = Tables(compile_policy(resolved, opts).entries())
    for s, d in itertools.product(range(0, 70, 3), range(0, 70, 5)):
        pkt = Packet(f"10.0.0.{s}", f"10.0.0.{d}", 6, 1, 2)
        assert tables.verdict(*pkt) == evaluate(resolved, pkt), pkt


@pytest.mark.parametrize("bits", [64, 8, 5])
def test_too_few_bits_fall_back_to_classes_and_still_agree(bits: int) -> None:
    resolved = overlapping_policy(12)
    opts = CompileOptions(class_bits=bits)
    compiled = compile_policy(resolved, opts)
    stats = compiled.stats
    if bits == 64:
        assert stats.src_encoding == "bitmap" and stats.notes == []
    else:
        assert stats.src_encoding == "classes" and stats.src_bits <= bits
        assert stats.src_expanded > 0 and "equivalence classes" in stats.notes[0]
        assert stats.acl_entries > len(resolved.rules)  # the price, reported
    agree_everywhere(resolved, opts)


def test_forced_encodings_refuse_what_does_not_fit() -> None:
    resolved = overlapping_policy(12)
    with pytest.raises(EncodingError, match="do not fit a 4-bit bitmap"):
        compile_policy(resolved, CompileOptions(encoding="bitmap", class_bits=4))
    with pytest.raises(EncodingError, match="do not pack into 4 bits"):
        compile_policy(resolved, CompileOptions(encoding="packed", class_bits=4))
    with pytest.raises(EncodingError):
        compile_policy(resolved, CompileOptions(encoding="classes", class_bits=2))
    forced = compile_policy(resolved, CompileOptions(encoding="classes"))
    assert forced.stats.src_encoding == "classes"
    agree_everywhere(resolved, CompileOptions(encoding="classes"))


def test_labels_name_groups_for_people() -> None:
    compiled = compile_policy(overlapping_policy(3))
    enc = compiled.src_class.encoding
    assert enc.label(*_only(enc.codes["g0"])) == "g0"
    entry = next(e for e in compiled.src_class.entries if e.params_dict["workload_id"] == 9)
    assert set(enc.groups_of(entry.params_dict["class_id"])) <= {"g0", "g1", "g2"}


def _only(keys: tuple[Ternary, ...]) -> tuple[int, int]:
    assert len(keys) == 1
    return keys[0].value, keys[0].mask


def test_addresses_outside_every_group_match_only_any_rules() -> None:
    resolved = overlapping_policy(4)
    tables = Tables(compile_policy(resolved).entries())
    assert tables.classify(names.SRC_CLASS, "192.0.2.1") == (0, 0)
    assert tables.classify(names.SRC_CLASS, ipaddress.ip_address("10.0.0.17"))[1] == 9
    assert tables.verdict("192.0.2.1", "10.0.0.1", 6) == ("allow", 0)


def test_a_rule_that_would_explode_is_refused_by_name() -> None:
    resolved = overlapping_policy(12)
    opts = CompileOptions(encoding="classes", max_entries_per_rule=3)
    with pytest.raises(CompileError, match=r"rule r\d+ would need \d+ ACL entries \(limit 3\)"):
        compile_policy(resolved, opts)


@pytest.mark.parametrize("bits", [64, 8, 5])
def test_a_reused_compiler_follows_new_codes_under_unchanged_rules(bits: int) -> None:
    # Changing a group's blocks re-encodes the classes; rules over it did not change but
    # their entries must follow the new codes (the compiler must not reuse stale entries).
    resolved = overlapping_policy(12)
    compiler = Compiler(CompileOptions(class_bits=bits))
    compiler.compile(resolved)
    groups = dict(resolved.groups)
    groups["g0"] = group("g0", "10.0.0.32/27", "10.0.0.5/32")
    groups["g3"] = group("g3", "10.0.0.0/26")
    moved = dataclasses.replace(resolved, groups=groups)
    tables = Tables(compiler.compile(moved).entries())
    for s, d in itertools.product(range(0, 70, 3), range(0, 70, 5)):
        pkt = Packet(f"10.0.0.{s}", f"10.0.0.{d}", 6, 1, 2)
        assert tables.verdict(*pkt) == evaluate(moved, pkt), pkt


def _agrees(enc: Encoding, names_: tuple[str, ...], masks: Iterable[int]) -> None:
    for mask in masks:
        cid = enc.class_ids[mask]
        for i, name in enumerate(names_):
            hit = any(cid & t.mask == t.value for t in enc.codes[name])
            assert hit == bool(mask >> i & 1), (mask, name)


def test_a_full_field_takes_a_free_bit_and_keeps_every_code() -> None:
    # Three disjoint groups fill a 2-bit field (values 1..3); a workload then joins g0 and g1:
    # no free value, nothing to reclaim, so the field takes a free bit. Every existing code and
    # class id stays; only g1 gets one more code (g0's code already matches g0's value plus
    # the new bit), so only rules over g1 would be rewritten.
    names_ = ("g0", "g1", "g2")
    enc = choose_encoding(names_, {1, 2, 4}, "packed", bits=8)
    assert enc.bits == 2
    grown = enc.extended([0b011], live=lambda: {1, 2, 4}, limit=8)
    assert grown is not None and grown.generation == enc.generation and grown.bits == 3
    assert all(grown.class_ids[m] == enc.class_ids[m] for m in (1, 2, 4))
    added = {n: grown.codes[n][len(enc.codes[n]) :] for n in names_}
    assert all(grown.codes[n][: len(enc.codes[n])] == enc.codes[n] for n in names_)
    assert sum(len(v) for v in added.values()) == 1
    _agrees(grown, names_, (1, 2, 4, 0b011))
    # More combinations on top of that bit, then of two taken bits: still only new codes.
    more = grown.extended([0b110, 0b101, 0b111], live=lambda: {1, 2, 4, 3}, limit=8)
    assert more is not None and more.generation == enc.generation
    _agrees(more, names_, (1, 2, 4, 0b011, 0b110, 0b101, 0b111))
    assert all(more.class_ids[m] == grown.class_ids[m] for m in (1, 2, 4, 3))
    # No free bit at all (limit 2): the field cannot grow, the caller rebuilds.
    assert enc.extended([0b011], live=lambda: {1, 2, 4}, limit=2) is None


def test_dead_combinations_are_reclaimed_before_a_field_grows() -> None:
    names_ = ("g0", "g1", "g2")
    enc = choose_encoding(names_, {1, 2, 4}, "packed", bits=8)
    # Widen once for {g0, g1}; once no address holds that combination, {g1, g2} reuses room.
    first = enc.extended([0b011], live=lambda: {1, 2, 4}, limit=8)
    assert first is not None
    second = first.extended([0b110], live=lambda: {1, 2, 4}, limit=first.bits)
    assert second is not None and second.bits == first.bits
    for mask in (1, 2, 4, 0b110):
        cid = second.class_ids[mask]
        for i, name in enumerate(names_):
            hit = any(cid & t.mask == t.value for t in second.codes[name])
            assert hit == bool(mask >> i & 1), (mask, name)


def test_a_full_field_with_no_free_bit_spills_into_another_fields_free_value() -> None:
    # g0..g2 fill a 2-bit field; h0 and h1 (each overlapping a g) share another 2-bit field
    # with one value free; 4 bits in all, none free. {g0, g2} then needs a value: it is
    # carried by h's free value (the g field stays 0), for addresses in no h group.
    names_ = ("g0", "g1", "g2", "h0", "h1")
    masks = {0b00001, 0b00010, 0b00100, 0b01001, 0b10010}
    enc = choose_encoding(names_, masks, "packed", bits=4)
    assert enc.bits == 4 and len(enc.fields) == 2
    grown = enc.extended([0b00101], live=lambda: masks, limit=4)
    assert grown is not None and grown.generation == enc.generation and grown.bits == 4
    assert all(grown.class_ids[m] == enc.class_ids[m] for m in masks)
    gained = {n for n in names_ if grown.codes[n] != enc.codes[n]}
    assert gained == {"g0", "g2"}
    _agrees(grown, names_, (*masks, 0b00101))
    # The same combination again (another address) reuses the spilled value: no new code.
    again = grown.extended([0b00101], live=lambda: masks | {0b00101}, limit=4)
    assert again is grown
    # With an h group as well, neither field has room: the caller must rebuild.
    assert grown.extended([0b01101], limit=4) is None


@pytest.mark.parametrize(("seed", "bits"), [(s, b) for s in range(4) for b in (7, 8, 9)])
def test_random_new_combinations_keep_every_class_id_meaning_its_groups(
    seed: int, bits: int
) -> None:
    # Combinations arrive and die at random in few bits: fields fill up, take free bits,
    # reclaim values, spill into other fields and, with nothing left, are laid out again or
    # rebuilt; whatever happened, every live class id must match exactly its groups' codes.
    rng = random.Random(seed)
    n = 10
    names_ = tuple(f"g{i}" for i in range(n))
    live = {1 << i for i in range(n)} | {rng.getrandbits(n) & rng.getrandbits(n) or 1}
    enc = choose_encoding(names_, set(live), "auto", bits)
    assert enc.kind != "bitmap"
    for _ in range(80):
        new = {(rng.getrandbits(n) & rng.getrandbits(n)) | 1 << rng.randrange(n)}
        while rng.random() < 0.4 or len(live) > 2 * n:  # combinations die too
            live.discard(rng.choice(sorted(m for m in live if m & (m - 1)) or [0]))
            if len(live) <= n:
                break
        grown = enc.extended(new, live=functools.partial(set, live), limit=bits)
        live |= new
        if grown is None:  # no room at all: the caller rebuilds (one field, if need be)
            try:
                grown = choose_encoding(names_, set(live), "auto", bits)
            except EncodingError:
                grown = choose_encoding(names_, set(live), "classes", bits)
        enc = grown
        _agrees(enc, names_, live)
