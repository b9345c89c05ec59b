"""Fast get/put of a state store for the hot fold paths (engine marks, registry heartbeat)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from swarmlog.projections.base import MemoryStore, StateStore

Getter = Callable[[str], Any]
Putter = Callable[[str, Any], None]


def store_access(store: StateStore) -> tuple[Getter, Putter]:
    """``store.get`` and ``store.put``; for a plain ``MemoryStore`` its dict's own methods, which do the same.

    Why: on replay (in-memory stores) a heartbeat reads and writes the store nine times (the
    engine's idempotence mark included), and each call through ``MemoryStore``'s Python methods
    cost a frame: ≈ 2 µs per heartbeat in all. Other stores (RocksDB tables) keep their methods.
    The pair stays valid as long as the store's ``data`` dict is not replaced (nothing does).
    """
    if type(store) is MemoryStore:
        data = store.data
        return data.get, data.__setitem__
    return store.get, store.put
