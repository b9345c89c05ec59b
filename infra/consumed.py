"""Wait until a worker group has consumed its topics to their end (committed offset = end offset).

The main job compares the worker's live tables with a replay of the log; stopping the
worker the moment the simulation has *sent* its last events compares a table that has
not folded them yet (the last receipts were still in flight: found by the determinism
check failing on ``routing`` when the worker carried one more domain).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from confluent_kafka import Consumer, TopicPartition

from swarmlog.streams.reader import plan_ranges, true_high_watermarks


def group_id(prefix: str, app_id: str = "swarmlog") -> str:
    """The Faust app (consumer group) name a worker uses for a topic prefix (processors/app.py)."""
    return f"{app_id}{'-' + prefix.strip('.-_') if prefix else ''}"


def lagging(bootstrap: str, group: str, topics: Sequence[str]) -> dict[tuple[str, int], int]:
    """(topic, partition) → records not yet committed by ``group``; empty when it has consumed everything."""
    ranges = plan_ranges(bootstrap, topics)
    ends = true_high_watermarks(bootstrap, [(r.topic, r.partition, r.start, r.stop or r.start) for r in ranges])
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        committed = consumer.committed([TopicPartition(t, p) for t, p in ends], timeout=10)
    finally:
        consumer.close()
    done = {(tp.topic, tp.partition): max(tp.offset, 0) for tp in committed}
    return {tp: end - done.get(tp, 0) for tp, end in ends.items() if end > done.get(tp, 0)}


def wait_consumed(bootstrap: str, group: str, topics: Sequence[str], timeout: float = 30.0,
                  quiet_for: float = 1.0) -> dict[tuple[str, int], int]:
    """Poll until nothing is left to consume for ``quiet_for`` seconds (the worker's own outputs
    add records while it catches up); returns what was still lagging at the timeout."""
    deadline = time.monotonic() + timeout
    caught_up_since: float | None = None
    lag = lagging(bootstrap, group, topics)
    while time.monotonic() < deadline:
        if not lag:
            caught_up_since = caught_up_since or time.monotonic()
            if time.monotonic() - caught_up_since >= quiet_for:
                return {}
        else:
            caught_up_since = None
        time.sleep(0.25)
        lag = lagging(bootstrap, group, topics)
    return lag
