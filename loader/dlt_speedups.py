"""dlt's type-hint checks in configuration lookups, remembered per hint.

dlt resolves a configuration (writer buffers, normalizers, destination client, load jobs) some
150 times per scan, and for every field and every provider it asks two questions of the field's
type hint: is it a secret (``is_secret_hint``), and what does it unwrap to
(``extract_inner_hint``). Both walk the hint with ``typing`` introspection each time, and were a
tenth of the CPU of an incremental scan in a worker's scan process (cProfile; about 0.07 of 0.54
CPU seconds per scan after a 1% change, README "Performance"). The answers depend only on the
hint (and the flags passed), so :func:`install` wraps both in an LRU cache. A hint that cannot
be hashed is answered by dlt's function as before.

Every binding of the original functions in the dlt modules loaded so far is replaced (modules
imported later take the wrapped ones from where dlt defines them). Installing twice does nothing.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

#: The functions of ``dlt.common.configuration.specs.base_configuration`` that get a cache.
MEMOIZED = ("is_secret_hint", "extract_inner_hint")
#: Hints remembered per function (dlt's configurations use a few hundred).
CACHE_SIZE = 4096


def memoize(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with an LRU cache of its answers; unhashable arguments go to ``fn`` itself."""
    cached = functools.lru_cache(maxsize=CACHE_SIZE)(fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return cached(*args, **kwargs)
        except TypeError:  # an unhashable hint (or a wrong call: fn raises it again)
            return fn(*args, **kwargs)

    wrapper.__wrapped_original__ = fn  # type: ignore[attr-defined]
    wrapper.cache_info = cached.cache_info  # type: ignore[attr-defined]
    return wrapper


def install() -> None:
    """Put the cached functions in place of dlt's (idempotent)."""
    from dlt.common.configuration.specs import base_configuration

    for name in MEMOIZED:
        original = vars(base_configuration)[name]
        if hasattr(original, "__wrapped_original__"):
            continue
        wrapped = memoize(original)
        for module in list(sys.modules.values()):
            namespace = getattr(module, "__dict__", None)
            # vars(), not getattr(): some dlt packages answer unknown attributes lazily (and
            # raise for optional extras that are not installed).
            if (namespace is not None and getattr(module, "__name__", "").startswith("dlt")
                    and namespace.get(name) is original):
                setattr(module, name, wrapped)
