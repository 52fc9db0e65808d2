"""A byte-bounded cache of rendered response bodies.

Pages are pure functions of (portal, portal data version, request), so a repeated scan of an
unchanged portal is served from memory instead of regenerating every deal. When a portal's
data version changes, its older entries are dropped. When the budget is full, new entries
are not admitted (rather than evicting old ones): a sequential scan larger than the budget
then still hits on its first part, where an LRU would miss on every page.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable


class ResponseCache:
    """Thread-safe cache of ``bytes`` per (group, version, key), bounded by total size."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max(0, int(max_bytes))
        self._data: dict[tuple[str, int, Hashable], bytes] = {}
        self._versions: dict[str, int] = {}
        self._size = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, group: str, version: int, key: Hashable) -> bytes | None:
        """The cached body, or None."""
        if not self.max_bytes:
            return None
        with self._lock:
            body = self._data.get((group, version, key))
            if body is None:
                self.misses += 1
            else:
                self.hits += 1
            return body

    def put(self, group: str, version: int, key: Hashable, body: bytes) -> None:
        """Remember ``body`` if it fits in the budget; forget ``group``'s older versions."""
        if not self.max_bytes:
            return
        with self._lock:
            known = self._versions.get(group)
            if known is not None and known > version:
                return  # rendered from data that has changed since
            if known is not None and known < version:
                stale = [k for k in self._data if k[0] == group and k[1] < version]
                for k in stale:
                    self._size -= len(self._data.pop(k))
            self._versions[group] = version
            k = (group, version, key)
            if k in self._data or self._size + len(body) > self.max_bytes:
                return
            self._data[k] = body
            self._size += len(body)

    def clear(self) -> None:
        """Drop everything."""
        with self._lock:
            self._data.clear()
            self._versions.clear()
            self._size = 0

    @property
    def size(self) -> int:
        """Bytes currently held."""
        return self._size
