"""The reference first-match evaluation over RULE_DTYPE rules: simple and obviously correct.

A rule matches a header when every field is inside the rule's box: both addresses under their
prefixes, both ports inside their ranges, protocol equal under the rule's mask, and the header's
identity class equal to the rule's under the rule's id mask. The winner is the matching rule of
highest priority; among equal priorities the one earlier in the array. Headers marked invalid
match nothing. Every classifier in dpdk_app is tested against this function.

It is vectorised with numpy (a header-chunk x rule matrix per field) and does not share code
with the classifiers beyond reading the same dtypes.
"""

from __future__ import annotations

import numpy as np

from dpdk_app.layout import RULE_DTYPE

NO_MATCH = -1
_CHUNK_CELLS = 1 << 21  # header x rule cells per step: bounds the temporary matrices (~16 MB)


def _words(addr: np.ndarray) -> np.ndarray:
    """(N, 16) network-order bytes -> (N, 2) native uint64 (hi, lo)."""
    return np.ascontiguousarray(addr, dtype=np.uint8).reshape(-1, 16).view(">u8").astype(np.uint64)


def _masks(plen: np.ndarray) -> np.ndarray:
    """(N,) prefix lengths -> (N, 2) uint64 (hi, lo) masks, built bit by bit from the length."""
    plen = plen.astype(np.int64)
    out = np.zeros((len(plen), 2), dtype=np.uint64)
    for word in range(2):
        bits = np.clip(plen - 64 * word, 0, 64)
        # Mask with `bits` leading ones: all ones minus (2**(64 - bits) - 1), in Python ints.
        out[:, word] = [((1 << 64) - (1 << (64 - int(b)))) for b in bits]
    return out


def first_match(rules: np.ndarray, headers: np.ndarray) -> np.ndarray:
    """Index (into `rules`) of the winning rule for each header, or -1 (NO_MATCH)."""
    rules = np.asarray(rules)
    if rules.dtype != RULE_DTYPE:
        raise TypeError(f"expected RULE_DTYPE rules, got {rules.dtype}")
    n_hdr = len(headers)
    result = np.full(n_hdr, NO_MATCH, dtype=np.int64)
    if n_hdr == 0 or len(rules) == 0:
        return result
    # Winner order: priority descending, then array position ascending.
    order = np.lexsort((np.arange(len(rules)), -rules["priority"].astype(np.int64)))
    r = rules[order]
    smask, dmask = _masks(r["src_plen"]), _masks(r["dst_plen"])
    sval, dval = _words(r["src_addr"]) & smask, _words(r["dst_addr"]) & dmask
    pmask = r["proto_mask"]
    pval = r["proto"] & pmask
    imask = r["id_mask"]
    ival = r["id_class"] & imask
    step = max(1, _CHUNK_CELLS // len(r))
    for start in range(0, n_hdr, step):
        h = headers[start : start + step]
        hit = np.repeat(h["valid"][:, None] != 0, len(r), axis=1)
        for hf, val, mask in (("src", sval, smask), ("dst", dval, dmask)):
            for word, part in enumerate(("_hi", "_lo")):
                hw = h[hf + part][:, None]
                hit &= (hw & mask[None, :, word]) == val[None, :, word]
        sport, dport = h["sport"][:, None], h["dport"][:, None]
        hit &= (sport >= r["sport_lo"][None, :]) & (sport <= r["sport_hi"][None, :])
        hit &= (dport >= r["dport_lo"][None, :]) & (dport <= r["dport_hi"][None, :])
        hit &= (h["proto"][:, None] & pmask[None, :]) == pval[None, :]
        hit &= (h["id_class"][:, None] & imask[None, :]) == ival[None, :]
        first = np.argmax(hit, axis=1)
        found = hit[np.arange(len(h)), first]
        result[start : start + step] = np.where(found, order[first], NO_MATCH)
    return result


def first_match_one(rules: np.ndarray, header: np.ndarray) -> int:
    """The winning rule index for one header record (a plain loop; for tests and debugging)."""
    best = NO_MATCH
    for i in range(len(rules)):
        if matches(rules[i], header) and (
            best == NO_MATCH or int(rules[i]["priority"]) > int(rules[best]["priority"])
        ):
            best = i
    return best


def matches(rule: np.void | np.ndarray, header: np.void | np.ndarray) -> bool:
    """Whether one rule matches one header, written field by field with Python integers."""
    if not header["valid"]:
        return False
    for side in ("src", "dst"):
        addr = (int(header[side + "_hi"]) << 64) | int(header[side + "_lo"])
        value = int.from_bytes(bytes(rule[side + "_addr"]), "big")
        plen = int(rule[side + "_plen"])
        if (addr >> (128 - plen)) != (value >> (128 - plen)):
            return False
    for port in ("sport", "dport"):
        if not int(rule[port + "_lo"]) <= int(header[port]) <= int(rule[port + "_hi"]):
            return False
    pmask = int(rule["proto_mask"])
    if int(header["proto"]) & pmask != int(rule["proto"]) & pmask:
        return False
    imask = int(rule["id_mask"])
    return int(header["id_class"]) & imask == int(rule["id_class"]) & imask
