"""Chunked sorted lists kept in a ``StateStore``: ordered views a reducer maintains and a query walks.

Why: a top-k query over one big key ("every listing of a capability") reads and ranks
every row, and every write copies the whole row set. A view split into chunks of at most
``CHUNK_MAX`` sorted entries, with a small directory of chunk lower bounds, costs a write
O(chunks + CHUNK_MAX) pointer moves and lets a query stop after the chunks holding its
first ``limit`` entries (the registry's ``fit/`` buckets do the same over a fixed score
grid; a directory of bounds does not care how the scores are distributed).

Layout of a view named by ``(dir_key, chunk_prefix)``:

* ``dir_key`` -> ``{"firsts": [sort key, ...], "ids": [chunk id, ...], "next": next chunk
  id}``: chunks in order; every key in chunk ``i`` is ``>= firsts[i]`` and ``< firsts[i + 1]``.
  It is rewritten only when a chunk splits, merges, empties or gets a new first key.
* ``chunk_prefix + str(id)`` -> ``[[*sort key, payload], ...]`` sorted: an entry is its sort
  key with the payload appended, so entries compare (and ``bisect`` / ``sort`` them) in C
  by their keys — a key is a prefix of its own entry, hence sorts just before it.

Sort keys are JSON lists (so they compare the same after a store round-trip) and must be
unique within a view (end them with an id), so two entries never compare payloads.
Stored values are never mutated in place: every change writes new lists, as
``MemoryStore`` hands out references.

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

CHUNK_MAX = 64  # a chunk above this splits in two halves
CHUNK_MIN = 8  # a chunk below this after a removal merges with its successor when both fit in CHUNK_MAX

Entry = list[Any]  # [*sort key, payload]


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
        """Number of entries (reads every chunk: for reports, not for hot paths)."""
        d = self.directory(store)
        return sum(len(store.get(self._chunk_key(c)) or ()) for c in d["ids"]) if d else 0

    def entries(self, store: StateStore, directory: dict[str, Any] | None = None) -> Iterator[Entry]:
        """Entries in sort order, reading one chunk at a time (lazily: stop early, read less)."""
        d = self.directory(store) if directory is None else directory
        if not d:
            return
        get = store.get
        for chunk_id in d["ids"]:
            yield from get(self._chunk_key(chunk_id)) or ()

    def upsert(self, store: StateStore, key: list[Any], payload: Any) -> None:
        """Insert ``[*key, payload]``, or replace the payload of the entry with that key."""
        entry = [*key, payload]
        d = store.get(self.dir_key)
        if d is None:
            store.put(self._chunk_key(0), [entry])
            store.put(self.dir_key, {"firsts": [key], "ids": [0], "next": 1})
            return
        firsts = d["firsts"]
        i = max(0, bisect_right(firsts, key) - 1)
        chunk_key = self._chunk_key(d["ids"][i])
        chunk: list[Entry] = store.get(chunk_key) or []
        j = bisect_left(chunk, key)
        new = chunk.copy()
        if j < len(chunk) and chunk[j][:-1] == key:
            new[j] = entry  # same place in the order: the directory does not change
            store.put(chunk_key, new)
            return
        new.insert(j, entry)
        if len(new) > CHUNK_MAX:
            half = len(new) // 2
            nxt = d["next"]
            store.put(chunk_key, new[:half])
            store.put(self._chunk_key(nxt), new[half:])
            firsts = firsts.copy()
            ids = d["ids"].copy()
            firsts[i] = new[0][:-1]
            firsts.insert(i + 1, new[half][:-1])
            ids.insert(i + 1, nxt)
            store.put(self.dir_key, {"firsts": firsts, "ids": ids, "next": nxt + 1})
            return
        store.put(chunk_key, new)
        if j == 0 and firsts[i] != key:
            firsts = firsts.copy()
            firsts[i] = key
            store.put(self.dir_key, {"firsts": firsts, "ids": d["ids"], "next": d["next"]})

    def remove(self, store: StateStore, key: list[Any]) -> bool:
        """Remove the entry with ``key``; False if there is none. An emptied view deletes its keys."""
        d = store.get(self.dir_key)
        if d is None:
            return False
        firsts, ids = d["firsts"], d["ids"]
        i = max(0, bisect_right(firsts, key) - 1)
        chunk_key = self._chunk_key(ids[i])
        chunk: list[Entry] = store.get(chunk_key) or []
        j = bisect_left(chunk, key)
        if j == len(chunk) or chunk[j][:-1] != key:
            return False
        new = chunk.copy()
        del new[j]
        if not new:
            store.delete(chunk_key)
            if len(ids) == 1:
                store.delete(self.dir_key)
                return True
            firsts, ids = firsts.copy(), ids.copy()
            del firsts[i], ids[i]
        elif len(new) < CHUNK_MIN and i + 1 < len(ids):
            follower_key = self._chunk_key(ids[i + 1])
            follower: list[Entry] = store.get(follower_key) or []
            if len(new) + len(follower) > CHUNK_MAX:
                store.put(chunk_key, new)
                if j > 0:
                    return True
                firsts = firsts.copy()
                firsts[i] = new[0][:-1]
            else:
                store.delete(follower_key)
                store.put(chunk_key, new + follower)
                firsts, ids = firsts.copy(), ids.copy()
                firsts[i] = new[0][:-1]
                del firsts[i + 1], ids[i + 1]
        else:
            store.put(chunk_key, new)
            if j > 0:
                return True
            firsts = firsts.copy()
            firsts[i] = new[0][:-1]
        store.put(self.dir_key, {"firsts": firsts, "ids": ids, "next": d["next"]})
        return True


__all__ = ["CHUNK_MAX", "CHUNK_MIN", "SortedView"]
