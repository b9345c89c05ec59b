"""Clock ticks: how a deadline in a quiet lane is reached, event-sourced.

Deadlines are decided in event time — the first event of a lane at or after a deadline
expires it — so a replay decides exactly as the live worker did. A lane that goes quiet
would then never close its pools, auctions, proposals or sessions. A worker that owns such
a lane therefore writes a signed ``clock.tick`` into it (``processors/ticker.py``) once
something there is due; the tick is an event like any other, so folding it expires what
is due at the tick's timestamp, and a replay of the log expires the same things at the
same position.

Open deadlines are kept as ``due/<lane>/<deadline:020d>/<id>`` — the layout of
``consensus.DeadlineIndex`` in lane scope — so the ticker can ask any tick-aware store
"is anything due in this lane?" with one ordered prefix scan.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from swarmlog.projections.base import StateStore

TICK = "clock.tick"


def due_key(lane: str, at_ms: int, ident: str) -> str:
    return f"due/{lane}/{at_ms:020d}/{ident}"


def due_ids(store: StateStore, now_ms: int, lanes: Iterable[str] | None = None) -> Iterator[str]:
    """Ids whose deadline is ``<= now_ms``, per lane in deadline order (all lanes if None)."""
    if lanes is None:
        for key, ident in list(store.scan("due/")):
            _, _topic, _partition, at, _ = key.split("/", 4)
            if int(at) <= now_ms:
                yield str(ident)
        return
    for lane in lanes:
        prefix = f"due/{lane}/"
        for key, ident in list(store.scan(prefix)):
            if int(key[len(prefix):].split("/", 1)[0]) > now_ms:
                break
            yield str(ident)


def earliest_due(store: StateStore, lane: str) -> int | None:
    """The earliest open deadline of ``lane`` in this store, or None."""
    prefix = f"due/{lane}/"
    for key, _ in store.scan(prefix):
        return int(key[len(prefix):].split("/", 1)[0])
    return None
