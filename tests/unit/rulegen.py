"""Rule and header generators shared by the classifier tests (reference, numba, packets)."""

from __future__ import annotations

import ipaddress

import numpy as np
from hypothesis import strategies as st

from dpdk_app.classifier.headers import HEADER_DTYPE
from dpdk_app.layout import RULE_DTYPE

V4 = 0xFFFF << 32  # the IPv4-mapped tag of a 128-bit address


def v4(text: str) -> int:
    """An IPv4 address as the pipeline's 128-bit (IPv4-mapped) integer."""
    return V4 | int(ipaddress.IPv4Address(text))


def one_rule(**fields: int) -> np.ndarray:
    """One RULE_DTYPE rule that matches every IPv4 header, with `fields` overridden."""
    r = np.zeros(1, dtype=RULE_DTYPE)
    r["src_addr"][0, 10:12] = 0xFF
    r["dst_addr"][0, 10:12] = 0xFF
    r["src_plen"] = r["dst_plen"] = 96
    r["sport_hi"] = r["dport_hi"] = 65535
    r["priority"] = 1
    for key, value in fields.items():
        r[key] = value
    return r


@st.composite
def rule_sets(draw: st.DrawFn) -> np.ndarray:
    """Small rule sets mixing IPv4 and IPv6 prefixes, port ranges, protocol masks (including
    an unusual 0x0F), identity classes and equal priorities."""
    n = draw(st.integers(1, 12))
    r = np.zeros(n, dtype=RULE_DTYPE)
    for i in range(n):
        for side in ("src", "dst"):
            v6 = draw(st.booleans())
            value = draw(st.integers(0, 2**128 - 1)) if v6 else V4 | draw(st.integers(0, 15))
            plen = draw(st.integers(0, 128)) if v6 else 96 + draw(st.sampled_from([0, 28, 30, 32]))
            r[i][side + "_addr"] = np.frombuffer(value.to_bytes(16, "big"), np.uint8)
            r[i][side + "_plen"] = plen
        for port in ("sport", "dport"):
            lo = draw(st.integers(0, 20))
            r[i][port + "_lo"], r[i][port + "_hi"] = lo, lo + draw(st.integers(0, 5))
        r[i]["proto"] = draw(st.sampled_from([1, 6, 17]))
        r[i]["proto_mask"] = draw(st.sampled_from([0, 0xFF, 0x0F]))
        r[i]["id_class"] = draw(st.integers(0, 3))
        r[i]["id_mask"] = draw(st.integers(0, 3))
        r[i]["priority"] = draw(st.integers(1, 4))  # ties: the earlier rule wins
    return r


def near_headers(rules: np.ndarray, seed: int, n: int = 60) -> np.ndarray:
    """Headers at and around the rules' corners, so that many match and many just miss."""
    rng = np.random.default_rng(seed)
    h = np.zeros(n, dtype=HEADER_DTYPE)
    pick = rules[rng.integers(0, len(rules), n)]
    for side in ("src", "dst"):
        words = np.ascontiguousarray(pick[side + "_addr"]).view(">u8").reshape(n, 2)
        hi, lo = words[:, 0].astype(np.uint64), words[:, 1].astype(np.uint64)
        # A third each: the rule's own address, its last two bits changed, or one bit flipped
        # anywhere in the 128 (which also turns IPv4-mapped addresses into IPv6 lookalikes).
        how = rng.integers(0, 3, n)
        bit = rng.integers(0, 64, n).astype(np.uint64)
        in_hi = rng.random(n) < 0.5
        flip = np.uint64(1) << bit
        lo = np.where(how == 1, lo ^ rng.integers(0, 4, n, dtype=np.uint64), lo)
        lo = np.where((how == 2) & ~in_hi, lo ^ flip, lo)
        hi = np.where((how == 2) & in_hi, hi ^ flip, hi)
        h[side + "_hi"], h[side + "_lo"] = hi, lo
    h["sport"] = pick["sport_lo"].astype(np.int64) + rng.integers(-1, 3, n).clip(0)
    h["dport"] = pick["dport_hi"].astype(np.int64) + rng.integers(-1, 2, n)
    h["proto"] = rng.choice([1, 6, 17, 22], n)
    h["id_class"] = rng.integers(0, 4, n)
    h["valid"] = rng.random(n) < 0.95
    return h
