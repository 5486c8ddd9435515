"""The rule set of the fallback: a TupleMerge classifier updated incrementally on LOAD_RULES.

rte_acl can only rebuild; TupleMerge can insert and delete single rules, so a new rule array is
diffed against the current one (rules compared as their 64 raw bytes) and only the difference is
applied, when that gives the same first-match order as a build of the new array would:

- rules kept in both arrays keep their relative order among equal priorities, and
- an added rule comes after every kept rule of its priority (TupleMerge breaks priority ties by
  insertion order, and inserted rules go last).

Otherwise (or when more than half the rules change) the classifier is rebuilt. Either way the
service is single-threaded, so a batch sees the old rule set or the new one, never a mix.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from dpdk_app.classifier import TupleMerge
from dpdk_app.layout import ACT_ALLOW, ACT_DROP, ACT_REJECT, RULE_DTYPE
from dpdk_app.reference import first_match


class RuleError(ValueError):
    """A rule array the service refuses (message as nicfw_rule_check words it)."""


def check(rules: np.ndarray) -> None:
    """Raise RuleError naming the first inconsistent rule, as the C app does."""
    bad = (
        (rules["src_plen"] > 128, "src_plen > 128"),
        (rules["dst_plen"] > 128, "dst_plen > 128"),
        (rules["sport_lo"] > rules["sport_hi"], "sport_lo > sport_hi"),
        (rules["dport_lo"] > rules["dport_hi"], "dport_lo > dport_hi"),
        (
            ~np.isin(rules["action"], (ACT_ALLOW, ACT_DROP, ACT_REJECT)),
            "action is not ALLOW(1), DROP(2) or REJECT(3)",
        ),
    )
    first = len(rules)
    what = ""
    for mask, text in bad:
        hits = np.flatnonzero(mask)
        if len(hits) and hits[0] < first:
            first, what = int(hits[0]), text
    if what:
        raise RuleError(f"rule {first} (rule_id {int(rules['rule_id'][first])}): {what}")


@dataclass(frozen=True)
class LoadReport:
    """What one LOAD_RULES did."""

    build_ns: int
    generation: int
    memory_bytes: int
    inserted: int
    deleted: int
    rebuilt: bool


class RuleSet:
    """The current rules, their TupleMerge classifier and the slot of each rule."""

    def __init__(self) -> None:
        self.rules: np.ndarray | None = None  # None until the first LOAD_RULES
        self.slots = np.zeros(0, dtype=np.int64)
        self.tm: TupleMerge | None = None
        self.generation = 0
        self.build_ns = 0
        self.inserted = 0
        self.deleted = 0
        self.rebuilds = 0
        self._frag_rules: np.ndarray | None = None

    @property
    def loaded(self) -> bool:
        """Whether a rule set has been loaded (an empty one counts)."""
        return self.rules is not None

    def load(self, new: np.ndarray) -> LoadReport:
        """Validate and install a rule array; nothing changes when it is refused."""
        new = np.ascontiguousarray(new, dtype=RULE_DTYPE)
        check(new)
        t0 = time.monotonic_ns()
        plan = self._plan(new)
        if plan is None:
            tm = TupleMerge(new)  # built before the swap: a failure leaves the old set in place
            self.tm, self.slots = tm, np.arange(len(new), dtype=np.int64)
            ins, dels, rebuilt = len(new), len(self.rules) if self.rules is not None else 0, True
            self.rebuilds += 1
        else:
            ins, dels = self._apply(new, *plan)
            rebuilt = False
        self.rules = new.copy()
        self._frag_rules = None
        self.generation += 1
        self.build_ns = time.monotonic_ns() - t0
        self.inserted += ins
        self.deleted += dels
        assert self.tm is not None
        return LoadReport(
            self.build_ns, self.generation, self.tm.memory_bytes(), ins, dels, rebuilt
        )

    def _plan(self, new: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """(old index of each new rule or -1, old indexes to delete), or None to rebuild.

        The unchanged head and tail are found with array compares; only the middle, where the
        arrays differ, is matched rule by rule (a one-rule change costs O(N) numpy, not a dict
        of N rules).
        """
        old = self.rules
        if old is None or self.tm is None:
            return None
        ow, nw = _words(old), _words(new)
        m = min(len(old), len(new))
        diff = np.flatnonzero((ow[:m] != nw[:m]).any(axis=1))
        head = int(diff[0]) if len(diff) else m
        rest = m - head
        diff = np.flatnonzero((ow[::-1][:rest] != nw[::-1][:rest]).any(axis=1))
        tail = int(diff[0]) if len(diff) else rest
        from_old = np.full(len(new), -1, dtype=np.int64)
        from_old[:head] = np.arange(head)
        from_old[len(new) - tail :] = np.arange(len(old) - tail, len(old))
        by_bytes: dict[bytes, deque[int]] = {}
        for i in range(head, len(old) - tail):
            by_bytes.setdefault(ow[i].tobytes(), deque()).append(i)
        prio = new["priority"]
        last_old: dict[int, int] = {}
        for j in range(head, len(new) - tail):
            q = by_bytes.get(nw[j].tobytes())
            if q:
                oi = q.popleft()
                from_old[j] = oi
                if last_old.get(int(prio[j]), -1) > oi:
                    return None  # kept rules changed order among equal priorities
                last_old[int(prio[j])] = oi
        gone = np.array(sorted(i for q in by_bytes.values() for i in q), dtype=np.int64)
        added = np.flatnonzero(from_old < 0)
        if len(added) + len(gone) > max(16, len(new) // 2):
            return None
        if len(added):
            kept = np.flatnonzero(from_old >= 0)
            # The last kept position of each priority: an added rule before it would have to
            # win a tie against a kept rule, which inserting (always last) cannot give.
            uniq, rev = np.unique(prio[kept][::-1], return_index=True)
            last = kept[len(kept) - 1 - rev]
            pos = np.searchsorted(uniq, prio[added])
            at = np.minimum(pos, max(len(uniq) - 1, 0))
            if len(uniq) and ((uniq[at] == prio[added]) & (last[at] > added)).any():
                return None
        return from_old, gone

    def _apply(self, new: np.ndarray, from_old: np.ndarray, gone: np.ndarray) -> tuple[int, int]:
        assert self.tm is not None
        slots = np.empty(len(new), dtype=np.int64)
        kept = from_old >= 0
        slots[kept] = self.slots[from_old[kept]]
        if len(gone):
            self.tm.delete(self.slots[gone])
        add = np.flatnonzero(~kept)
        if len(add):
            slots[add] = self.tm.insert(new[add])
        self.slots = slots
        return len(add), len(gone)

    def classify(self, hdrs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(action, rule_id) of the winning rule of each header; (0, 0) where none."""
        if self.tm is None or len(hdrs) == 0:
            return np.zeros(len(hdrs), np.uint8), np.zeros(len(hdrs), np.uint32)
        slots = self.tm.classify(hdrs)
        return self.tm.actions(slots), self.tm.rule_ids(slots)

    def fragments(self, hdrs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(allowed, rule_id) of non-first fragments: the first rule that could match for some
        ports decides; it allows only if it is an allow with both port ranges 0-65535."""
        n = len(hdrs)
        ok, rid = np.zeros(n, np.uint8), np.zeros(n, np.uint32)
        if self.rules is None or n == 0 or len(self.rules) == 0:
            return ok, rid
        if self._frag_rules is None:
            wide = self.rules.copy()
            wide["sport_lo"], wide["sport_hi"] = 0, 0xFFFF
            wide["dport_lo"], wide["dport_hi"] = 0, 0xFFFF
            self._frag_rules = wide
        win = first_match(self._frag_rules, hdrs)
        hit = win >= 0
        r = self.rules[np.where(hit, win, 0)]
        wild = (r["sport_lo"] == 0) & (r["sport_hi"] == 0xFFFF)
        wild &= (r["dport_lo"] == 0) & (r["dport_hi"] == 0xFFFF)
        allow = hit & (r["action"] == ACT_ALLOW) & wild
        ok[allow] = 1
        rid[allow] = r["rule_id"][allow]
        return ok, rid

    def memory_bytes(self) -> int:
        """Bytes of the classifier's arrays."""
        return self.tm.memory_bytes() if self.tm is not None else 0


def _words(rules: np.ndarray) -> np.ndarray:
    """Rules as (N, 8) uint64 rows, for whole-rule compares."""
    return np.ascontiguousarray(rules).view(np.uint64).reshape(len(rules), 8)
