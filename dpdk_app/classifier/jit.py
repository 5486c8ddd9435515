"""`kernel`: numba.njit with an on-disk cache that a change to ANY classifier source invalidates.

numba's own cache (`njit(cache=True)`) checks only the file that defines a function, yet a
compiled kernel embeds the code of every jitted function it calls and the value of every
global constant it reads, from whatever module they come from. Editing the hash in one file
would leave the cached kernels of another file hashing the old way: wrong verdicts, silently.
Here the cache stamp is a digest of every source the kernels depend on (this package and the
shared dtypes), so any edit recompiles everything.
`kernel_decorator(stamp)` makes the same decorator for kernels elsewhere whose stamp adds
their own sources (`stacked_digest`, used by dpdk_app/pyservice/jit.py).

This uses numba's cache classes (numba.core.caching), which are not a public API; if they ever
differ, kernels simply run uncached (slower start, same results).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numba

_PACKAGE = Path(__file__).resolve().parent
_DEPENDENCIES = (_PACKAGE.parent / "layout.py", _PACKAGE.parent / "packets.py")


@functools.cache
def source_digest() -> str:
    """SHA-256 over the sources every kernel may depend on: every module of this package that
    defines kernels (so editing a pure-Python wrapper does not force a recompile)."""
    h = hashlib.sha256(numba.__version__.encode())
    for path in sorted(_PACKAGE.glob("*.py")) + [p for p in _DEPENDENCIES if p.exists()]:
        source = path.read_bytes()
        if b"@kernel" in source or path.parent != _PACKAGE or path.name == "jit.py":
            h.update(path.name.encode())
            h.update(source)
    return h.hexdigest()


def stacked_digest(package: Path) -> str:
    """SHA-256 over source_digest() and every module of `package`: the stamp of kernels there,
    which embed the classifier's code and their own package's."""
    h = hashlib.sha256(source_digest().encode())
    for path in sorted(package.glob("*.py")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def _cache_class(stamp: Callable[[], str]) -> Any:
    """A numba FunctionCache whose freshness stamp is stamp(), or None."""
    try:
        from numba.core import caching

        class _InTree(caching.InTreeCacheLocator):
            def get_source_stamp(self) -> str:
                return stamp()

        class _UserWide(caching.UserWideCacheLocator):
            def get_source_stamp(self) -> str:
                return stamp()

        class _Impl(caching.CompileResultCacheImpl):
            _locator_classes = [_InTree, _UserWide]

        class _Cache(caching.FunctionCache):
            _impl_class = _Impl

        return _Cache
    except (ImportError, AttributeError):
        return None


def kernel_decorator(stamp: Callable[[], str]) -> Callable[..., Any]:
    """A `kernel` decorator whose on-disk cache is stamped with stamp() (a source digest)."""
    cache = _cache_class(stamp)

    def kernel(fn: Callable[..., Any] | None = None, **options: Any) -> Any:
        """Decorator: numba.njit(**options) with the stamped cache (no `cache` option)."""

        def wrap(func: Callable[..., Any]) -> Any:
            dispatcher = numba.njit(**options)(func)
            if cache is not None:
                # No writable cache location, or numba internals moved on: run uncached.
                with contextlib.suppress(Exception):
                    dispatcher._cache = cache(dispatcher.py_func)
            return dispatcher

        return wrap(fn) if fn is not None else wrap

    return kernel


kernel = kernel_decorator(source_digest)
