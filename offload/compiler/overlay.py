"""Copy-on-write mappings: a patched version of a large dict without copying it.

A classification table keeps per-prefix maps of tens of thousands of entries, and an inventory
event changes a handful of them. Copying such a dict costs milliseconds (tuple keys of 128-bit
integers are hashed again), so a patched table shares its predecessor's dict and records the
changes beside it; the changes fold into a fresh dict only once they grow to a share of it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Final, Generic, TypeVar, cast

K = TypeVar("K")
V = TypeVar("V")

_GONE: Final = object()  # a key removed by a layer
FOLD_MIN: Final = 1024  # changes kept beside the root dict before folding, at least
FOLD_SHARE: Final = 8  # ... or one change per this many root entries


class Overlay(Mapping[K, V], Generic[K, V]):
    """`root` with `changes` on top (a value `_GONE` removes the key); read-only."""

    __slots__ = ("_changes", "_len", "_root")

    def __init__(self, root: dict[K, V], changes: dict[K, object], length: int) -> None:
        """Use `patch` to make one."""
        self._root = root
        self._changes = changes
        self._len = length

    def __getitem__(self, key: K) -> V:
        """The value of `key` (KeyError if absent)."""
        v = self._changes.get(key, self._root)  # the root dict itself: "not changed here"
        if v is self._root:
            return self._root[key]
        if v is _GONE:
            raise KeyError(key)
        return cast(V, v)

    def get(self, key: K, default: V | None = None) -> V | None:  # type: ignore[override]
        """The value of `key`, else `default`."""
        v = self._changes.get(key, self._root)
        if v is self._root:
            return self._root.get(key, default)
        return default if v is _GONE else cast(V, v)

    def __contains__(self, key: object) -> bool:
        """Whether `key` is present."""
        changes: dict[object, object] = self._changes  # type: ignore[assignment]
        v = changes.get(key, self._root)
        return key in self._root if v is self._root else v is not _GONE

    def __len__(self) -> int:
        """How many keys."""
        return self._len

    def __iter__(self) -> Iterator[K]:
        """Keys: the root's in its order (changed ones in place), then new ones."""
        changes = self._changes
        for k in self._root:
            if changes.get(k, self._root) is not _GONE:
                yield k
        for k, v in changes.items():
            if v is not _GONE and k not in self._root:
                yield k


def patch(base: Mapping[K, V], updates: Mapping[K, V], removed: Iterable[K] = ()) -> Mapping[K, V]:
    """`base` with `updates` set and `removed` gone, sharing `base`'s storage when it can."""
    if isinstance(base, Overlay):
        root: dict[K, V] = base._root
        changes: dict[K, object] = dict(base._changes)
        length = base._len
    else:
        root = base if isinstance(base, dict) else dict(base)
        changes = {}
        length = len(root)
    for k in removed:
        if k in updates:
            continue
        was = changes.get(k, root)
        present = k in root if was is root else was is not _GONE
        if present:
            length -= 1
            changes[k] = _GONE
    for k, v in updates.items():
        was = changes.get(k, root)
        present = k in root if was is root else was is not _GONE
        if not present:
            length += 1
        changes[k] = v
    if len(changes) > max(FOLD_MIN, len(root) // FOLD_SHARE):
        folded = {k: v for k, v in root.items() if changes.get(k, root) is not _GONE}
        for k, change in changes.items():
            if change is not _GONE:
                folded[k] = cast(V, change)
        return folded
    return Overlay(root, changes, length)
