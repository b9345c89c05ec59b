"""Chunked sorted lists kept in a ``StateStore``: ordered views a reducer maintains and a query walks.

Why: a top-k query over one big key ("every listing of a capability") reads and ranks
every row, and every write copies the whole row set. A view split into chunks of at most
``CHUNK_MAX`` sorted entries, with a small directory of chunk lower bounds, costs a write
O(chunks + CHUNK_MAX) pointer moves and lets a query stop after the chunks holding its
first ``limit`` entries (the registry's ``fit/`` buckets do the same over a fixed score
grid; a directory of bounds does not care how the scores are distributed).

Layout of a view named by ``(dir_key, chunk_prefix)``:

* ``dir_key`` -> ``{"firsts": [sort key, ...], "ids": [chunk id, ...], "sizes": [n, ...],
  "next": next chunk id}``: chunks in order; every key in chunk ``i`` is ``>= firsts[i]``
  and ``< firsts[i + 1]``.
* ``chunk_prefix + str(id)`` -> ``[[sort key, payload], ...]`` sorted by sort key.

Sort keys are JSON lists (so they compare the same after a store round-trip) and must be
unique within a view (end them with an id). Stored values are never mutated in place:
every change writes new lists, as ``MemoryStore`` hands out references.

Determinism: the layout (where chunks split and merge, chunk ids) is a function of the
sequence of operations applied to the view, so a view fed from one lane is identical in
a live worker and in a replay of that lane.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from swarmlog.projections.base import StateStore

CHUNK_MAX = 128  # a chunk above this splits in two halves
CHUNK_MIN = 16  # a chunk below this after a removal merges with its successor when both fit in CHUNK_MAX

Entry = list[Any]  # [sort key (list), payload]


def _sort_key(entry: Entry) -> list[Any]:
    return entry[0]  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class SortedView:
    """One chunked sorted list: ``dir_key`` holds the directory, chunks live under ``chunk_prefix``."""

    dir_key: str
    chunk_prefix: str

    def _chunk_key(self, chunk_id: int) -> str:
        return f"{self.chunk_prefix}{chunk_id}"

    def directory(self, store: StateStore) -> dict[str, Any] | None:
        value = store.get(self.dir_key)
        return value if isinstance(value, dict) else None

    def size(self, store: StateStore) -> int:
        d = self.directory(store)
        return sum(d["sizes"]) if d else 0

    def entries(self, store: StateStore, directory: dict[str, Any] | None = None) -> Iterator[Entry]:
        """Entries in sort order, reading one chunk at a time (lazily: stop early, read less)."""
        d = self.directory(store) if directory is None else directory
        if not d:
            return
        get = store.get
        for chunk_id in d["ids"]:
            yield from get(self._chunk_key(chunk_id)) or ()

    def _locate(self, d: dict[str, Any], key: list[Any]) -> int:
        return max(0, bisect_right(d["firsts"], key) - 1)

    def upsert(self, store: StateStore, key: list[Any], payload: Any) -> None:
        """Insert ``[key, payload]``, or replace the payload of the entry with that key."""
        entry = [key, payload]
        d = self.directory(store)
        if d is None:
            store.put(self._chunk_key(0), [entry])
            store.put(self.dir_key, {"firsts": [key], "ids": [0], "sizes": [1], "next": 1})
            return
        i = self._locate(d, key)
        chunk_key = self._chunk_key(d["ids"][i])
        chunk: list[Entry] = store.get(chunk_key) or []
        j = bisect_left(chunk, key, key=_sort_key)
        new = chunk.copy()
        if j < len(chunk) and chunk[j][0] == key:
            new[j] = entry  # same place in the order: the directory does not change
            store.put(chunk_key, new)
            return
        new.insert(j, entry)
        firsts, ids, sizes = d["firsts"].copy(), d["ids"].copy(), d["sizes"].copy()
        nxt = d["next"]
        if j == 0:
            firsts[i] = key
        if len(new) > CHUNK_MAX:
            half = len(new) // 2
            left, right = new[:half], new[half:]
            store.put(chunk_key, left)
            store.put(self._chunk_key(nxt), right)
            firsts.insert(i + 1, right[0][0])
            ids.insert(i + 1, nxt)
            sizes[i] = len(left)
            sizes.insert(i + 1, len(right))
            nxt += 1
        else:
            store.put(chunk_key, new)
            sizes[i] = len(new)
        store.put(self.dir_key, {"firsts": firsts, "ids": ids, "sizes": sizes, "next": nxt})

    def remove(self, store: StateStore, key: list[Any]) -> bool:
        """Remove the entry with ``key``; False if there is none. An emptied view deletes its keys."""
        d = self.directory(store)
        if d is None:
            return False
        i = self._locate(d, key)
        chunk_key = self._chunk_key(d["ids"][i])
        chunk: list[Entry] = store.get(chunk_key) or []
        j = bisect_left(chunk, key, key=_sort_key)
        if j == len(chunk) or chunk[j][0] != key:
            return False
        new = chunk.copy()
        del new[j]
        firsts, ids, sizes = d["firsts"].copy(), d["ids"].copy(), d["sizes"].copy()
        if not new:
            store.delete(chunk_key)
            del firsts[i], ids[i], sizes[i]
            if not ids:
                store.delete(self.dir_key)
                return True
        elif len(new) < CHUNK_MIN and i + 1 < len(ids) and len(new) + sizes[i + 1] <= CHUNK_MAX:
            follower_key = self._chunk_key(ids[i + 1])
            merged = new + (store.get(follower_key) or [])
            store.delete(follower_key)
            store.put(chunk_key, merged)
            firsts[i], sizes[i] = merged[0][0], len(merged)
            del firsts[i + 1], ids[i + 1], sizes[i + 1]
        else:
            store.put(chunk_key, new)
            firsts[i], sizes[i] = new[0][0], len(new)
        store.put(self.dir_key, {"firsts": firsts, "ids": ids, "sizes": sizes, "next": d["next"]})
        return True


__all__ = ["CHUNK_MAX", "CHUNK_MIN", "SortedView"]
