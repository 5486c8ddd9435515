"""Dynamic security tags: attached to workloads at run time, optionally for a limited time.

A `TagStore` holds the tags the API/CLI or an event (an intrusion detector) attached, apart
from the tags a workload was reported with, so detaching a dynamic tag never removes one the
orchestrator gave. Expiry is by the store's clock (wall time by default, so `ls` can show when
a tag goes); `expired(now)` hands back what is due and the inventory detaches it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")


class TagError(ValueError):
    """A tag or expiry that cannot be used (nothing was changed)."""


@dataclass(frozen=True, slots=True)
class TagGrant:
    """One dynamic tag on one workload; `expires` is a clock time, None: until removed."""

    workload: str
    tag: str
    expires: float | None = None

    def to_json(self) -> dict[str, object]:
        """The grant as a JSON-ready mapping."""
        return {"workload": self.workload, "tag": self.tag, "expires": self.expires}


def check_tag(tag: str) -> str:
    """`tag` if it is a valid tag name, else `TagError`."""
    if not isinstance(tag, str) or not TAG.fullmatch(tag) or tag == "any":
        raise TagError(f"{tag!r} is not a valid tag (letters, digits, _ . -)")
    return tag


class TagStore:
    """Dynamic tags by workload, with expiry."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._grants: dict[tuple[str, str], TagGrant] = {}
        self._by_workload: dict[str, set[str]] = {}

    def add(self, workload: str, tag: str, expires_in: float | None = None) -> TagGrant:
        """Attach `tag` (again: the expiry is replaced); `expires_in` seconds, > 0."""
        check_tag(tag)
        if expires_in is not None and not expires_in > 0:
            raise TagError(f"expiry must be a positive number of seconds, not {expires_in!r}")
        expires = self.clock() + expires_in if expires_in is not None else None
        grant = TagGrant(workload, tag, expires)
        self._grants[(workload, tag)] = grant
        self._by_workload.setdefault(workload, set()).add(tag)
        return grant

    def remove(self, workload: str, tag: str) -> bool:
        """Detach `tag`; False when it was not attached."""
        if self._grants.pop((workload, tag), None) is None:
            return False
        tags = self._by_workload[workload]
        tags.discard(tag)
        if not tags:
            del self._by_workload[workload]
        return True

    def forget(self, workload: str) -> None:
        """Drop every tag of a workload that went away."""
        for tag in self._by_workload.pop(workload, set()):
            del self._grants[(workload, tag)]

    def tags_of(self, workload: str) -> frozenset[str]:
        """The dynamic tags of `workload`."""
        return frozenset(self._by_workload.get(workload, ()))

    def has(self, workload: str, tag: str) -> bool:
        """Whether `tag` is attached to `workload`."""
        return (workload, tag) in self._grants

    def expired(self, now: float | None = None) -> list[TagGrant]:
        """Grants whose time has come (not removed: the caller detaches them)."""
        now = self.clock() if now is None else now
        return [g for g in self._grants.values() if g.expires is not None and g.expires <= now]

    def next_expiry(self) -> float | None:
        """The earliest expiry, to sleep until."""
        return min((g.expires for g in self if g.expires is not None), default=None)

    def __iter__(self) -> Iterator[TagGrant]:
        return iter(sorted(self._grants.values(), key=lambda g: (g.workload, g.tag)))

    def __len__(self) -> int:
        return len(self._grants)
