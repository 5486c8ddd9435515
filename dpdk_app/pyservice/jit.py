"""`kernel`: numba.njit cached on disk, stamped with the sources of this package too.

dpdk_app/classifier/jit.py stamps its cache with the classifier's sources; kernels here also
embed this package's code, so their stamp adds it: an edit here recompiles them, never loads a
stale kernel. Without numba's (non-public) cache classes kernels run uncached.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numba

from dpdk_app.classifier.jit import source_digest as classifier_digest

_PACKAGE = Path(__file__).resolve().parent


@functools.cache
def source_digest() -> str:
    """SHA-256 over the classifier's digest and every module of this package."""
    h = hashlib.sha256(classifier_digest().encode())
    for path in sorted(_PACKAGE.glob("*.py")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def _cache_class() -> Any:
    try:
        from numba.core import caching

        class _InTree(caching.InTreeCacheLocator):
            def get_source_stamp(self) -> str:
                return source_digest()

        class _UserWide(caching.UserWideCacheLocator):
            def get_source_stamp(self) -> str:
                return source_digest()

        class _Impl(caching.CompileResultCacheImpl):
            _locator_classes = [_InTree, _UserWide]

        class _Cache(caching.FunctionCache):
            _impl_class = _Impl

        return _Cache
    except (ImportError, AttributeError):
        return None


_CACHE = _cache_class()


def kernel(fn: Callable[..., Any] | None = None, **options: Any) -> Any:
    """Decorator: numba.njit(**options) with this package's cache stamp."""

    def wrap(func: Callable[..., Any]) -> Any:
        dispatcher = numba.njit(**options)(func)
        if _CACHE is not None:
            with contextlib.suppress(Exception):
                dispatcher._cache = _CACHE(dispatcher.py_func)
        return dispatcher

    return wrap(fn) if fn is not None else wrap
