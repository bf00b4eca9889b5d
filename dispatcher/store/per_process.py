"""The one per-process cache of the service's connections: a database engine, a Redis pool, the
engine's services. A forked worker child must build its own (a pool or a socket shared across a
fork corrupts both sides), so every entry is keyed by the process id as well as by what it is for.

(The channel adapters keep their SDK clients in `channels.clients.PerProcess`, the same idea one
floor down: channels import nothing of dispatcher.)
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class PerProcess(Generic[K, V]):
    """`get(key, build)` calls `build()` at the key's first use in each process and keeps the value
    for that process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[tuple[int, K], V] = {}

    def get(self, key: K, build: Callable[[], V]) -> V:
        slot = (os.getpid(), key)
        item = self._items.get(slot)
        if item is None:
            with self._lock:
                item = self._items.get(slot)
                if item is None:
                    item = self._items[slot] = build()
        return item

    def inherited(self) -> list[V]:
        """What a forked child holds of its parent's: to let go of without closing the parent's sockets."""
        pid = os.getpid()
        return [value for (owner, _), value in self._items.items() if owner != pid]
