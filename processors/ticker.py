"""Writes ``clock.tick`` events into the quiet lanes this worker owns (see projections/ticks.py).

Every ``interval`` seconds the worker looks, for each partition it is assigned, at the tick-
aware tables of the domain: is the earliest open deadline of that lane already past? If so
it produces one signed ``clock.tick`` into exactly that partition (the Kafka key is chosen
so the producer's CRC-32 partitioner lands it there) and waits ``resend_after_s`` before
ticking the same lane again, so a lane that is waiting for its tick to be folded is not
flooded. Lanes with nothing due get nothing: an idle system writes no ticks.

Why a tick event rather than calling ``expire_due`` from a timer: a timer's expiry would be
a table write no event explains, so a replay could not reproduce it, and the write would
have no source partition to go to in the changelog. The tick is in the log; folding it is
an ordinary event of the lane.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Callable, Iterable, Mapping

from swarmlog.processors.runtime import OutputSink
from swarmlog.projections.base import StateStore
from swarmlog.projections.ticks import TICK, earliest_due

log = logging.getLogger(__name__)


def key_for_partition(partition: int, partitions: int) -> str:
    """The first key ``tick-<partition>-<n>`` that the producer's partitioner sends to ``partition``."""
    if not 0 <= partition < partitions:
        raise ValueError(f"partition {partition} is not in 0..{partitions - 1}")
    n = 0
    while True:
        key = f"tick-{partition}-{n}"
        if zlib.crc32(key.encode()) % partitions == partition:
            return key
        n += 1


class Ticker:
    """Decides which owned lanes need a tick, and writes them (rules in the module docstring)."""

    def __init__(self, topics: Iterable[str], stores: Mapping[str, StateStore], sink: Callable[[], OutputSink],
                 worker: str, resend_after_s: float = 5.0) -> None:
        self.topics = frozenset(topics)
        self.stores = dict(stores)
        self.sink = sink
        self.worker = worker
        self.resend_after_s = resend_after_s
        self._sent: dict[str, float] = {}  # lane -> monotonic time of its last tick
        self.ticks = 0

    def due_lanes(self, assigned: Iterable[tuple[str, int]], now_ms: int) -> list[tuple[str, int]]:
        due: list[tuple[str, int]] = []
        clock = time.monotonic()
        for topic, partition in sorted(assigned):
            if topic not in self.topics:
                continue
            lane = f"{topic}/{partition}"
            earliest = [at for at in (earliest_due(s, lane) for s in self.stores.values()) if at is not None]
            if not earliest or min(earliest) > now_ms:
                continue
            if clock - self._sent.get(lane, -self.resend_after_s) < self.resend_after_s:
                continue
            due.append((topic, partition))
        return due

    def tick(self, assigned: Iterable[tuple[str, int]], now_ms: int | None = None) -> int:
        """Write one tick into every owned lane with something due; returns how many."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        lanes = self.due_lanes(assigned, now)
        if not lanes:
            return 0
        sink = self.sink()
        for topic, partition in lanes:
            key = key_for_partition(partition, sink.producer.partitions(topic))
            sink.producer.produce(TICK, {"key": key, "ticker": self.worker}, topic=topic, timestamp_ms=now)
            self._sent[f"{topic}/{partition}"] = time.monotonic()
        sink.flush()
        self.ticks += len(lanes)
        return len(lanes)
