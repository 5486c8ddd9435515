"""The dynamic tag store: attach, detach, expiry by its clock, names checked."""

from __future__ import annotations

import pytest

from controlplane.tags import TagError, TagGrant, TagStore


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_attach_detach_and_list() -> None:
    store = TagStore(Clock())
    store.add("vm-1", "quarantine")
    store.add("vm-1", "pci")
    store.add("vm-2", "pci")
    assert store.tags_of("vm-1") == {"quarantine", "pci"}
    assert [(g.workload, g.tag) for g in store] == [
        ("vm-1", "pci"),
        ("vm-1", "quarantine"),
        ("vm-2", "pci"),
    ]
    assert store.remove("vm-1", "pci") and not store.remove("vm-1", "pci")
    store.forget("vm-2")
    assert len(store) == 1 and store.tags_of("vm-2") == frozenset()


def test_expiry_follows_the_clock_and_reattaching_replaces_it() -> None:
    clock = Clock()
    store = TagStore(clock)
    store.add("vm-1", "quarantine", expires_in=10)
    store.add("vm-2", "quarantine")
    assert store.next_expiry() == 110.0 and store.expired() == []
    clock.now = 110.0
    assert store.expired() == [TagGrant("vm-1", "quarantine", 110.0)]
    store.add("vm-1", "quarantine", expires_in=5)  # renewed
    assert store.expired() == [] and store.next_expiry() == 115.0
    store.add("vm-1", "quarantine")  # made permanent
    assert store.next_expiry() is None


@pytest.mark.parametrize(
    ("tag", "expires", "message"),
    [("bad tag", None, "not a valid tag"), ("any", None, "not a valid tag"), ("ok", 0, "positive")],
)
def test_bad_tags_and_expiries_are_refused(tag: str, expires: float | None, message: str) -> None:
    store = TagStore(Clock())
    with pytest.raises(TagError, match=message):
        store.add("vm-1", tag, expires)
    assert len(store) == 0
