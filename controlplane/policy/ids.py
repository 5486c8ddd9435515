"""Stable ids for rules (32-bit) and workloads (16-bit), derived from names.

A rule's id is what its ACL entries carry and what its counters are read by, so it must not
change when other rules are edited: it is a hash of the rule's name unless the policy fixes it.
On a collision the later item (in policy order) probes to the next free value.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from functools import lru_cache


@lru_cache(maxsize=1 << 16)
def name_hash(name: str, bits: int) -> int:
    """A non-zero `bits`-bit hash of a name (blake2b, so stable across runs and machines)."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    value = int.from_bytes(digest, "big") & ((1 << bits) - 1)
    return value or 1


class IdSpaceFull(ValueError):
    """More items than ids."""


def assign_ids(names: Iterable[str], fixed: dict[str, int], bits: int) -> dict[str, int]:
    """Ids for `names` in order: fixed ones as given, others hashed from the name then probed."""
    space = (1 << bits) - 1
    taken = set(fixed.values())
    out = dict(fixed)
    for name in names:
        if name in out:
            continue
        if len(taken) >= space:
            raise IdSpaceFull(f"more than {space} items need {bits}-bit ids")
        value = name_hash(name, bits)
        while value in taken:
            value = value % space + 1  # stays in 1..space
        taken.add(value)
        out[name] = value
    return out
