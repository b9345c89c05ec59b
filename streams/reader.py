"""Read or replay any range of topics straight from Kafka, verified.

Uses confluent-kafka with *assigned* partitions and auto-commit off: reading never joins
a consumer group, never commits offsets and never disturbs the live workers. A bounded
read stops at the high watermarks taken when it started, so "replay the log" has a
well-defined end even while producers keep writing.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaException, Message, TopicPartition

from swarmlog.streams import speedups
from swarmlog.streams.codec import SchemaStore
from swarmlog.streams.verify import Keyring, RawRecord, Verdict, Verifier

log = logging.getLogger(__name__)


class ReadError(RuntimeError):
    """The range could not be read (unknown topic, unreachable broker)."""


@dataclass(frozen=True, slots=True)
class PartitionRange:
    """Half-open offset range [start, stop) of one partition."""

    topic: str
    partition: int
    start: int
    stop: int | None  # None: follow forever


def _consumer(bootstrap: str, extra: dict[str, Any] | None = None) -> Consumer:
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        # librdkafka needs a group id even for assign(); nothing is ever committed under it.
        "group.id": f"swarmlog-reader-{uuid.uuid4()}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": False,
        "fetch.max.bytes": 52428800,
        "queued.max.messages.kbytes": 262144,
    }
    config.update(extra or {})
    return Consumer(config)


def plan_ranges(bootstrap: str, topics: Sequence[str], *, from_beginning: bool = True,
                follow: bool = False, partitions: Sequence[int] | None = None,
                start_offsets: dict[tuple[str, int], int] | None = None,
                timeout: float = 10.0) -> list[PartitionRange]:
    """Resolve topics into per-partition offset ranges (low/high watermarks now)."""
    consumer = _consumer(bootstrap)
    try:
        md = consumer.list_topics(timeout=timeout)
        planned: list[tuple[str, int, int, int]] = []
        for topic in topics:
            info = md.topics.get(topic)
            if info is None or info.error is not None:
                raise ReadError(f"topic {topic!r} does not exist")
            for pid in sorted(info.partitions):
                if partitions is not None and pid not in partitions:
                    continue
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, pid), timeout=timeout)
                planned.append((topic, pid, low, high))
    except KafkaException as exc:
        raise ReadError(f"cannot read metadata from {bootstrap}: {exc}") from None
    finally:
        consumer.close()
    # A followed range has no end; a bounded one needs the true end (see true_high_watermarks).
    ends = {} if follow and from_beginning else true_high_watermarks(
        bootstrap, [(t, p, low, high) for t, p, low, high in planned], timeout)
    ranges: list[PartitionRange] = []
    for topic, pid, low, high in planned:
        end = ends.get((topic, pid), high)
        if start_offsets and (topic, pid) in start_offsets:
            start = max(low, start_offsets[(topic, pid)])
        else:
            start = low if from_beginning else end
        ranges.append(PartitionRange(topic, pid, start, None if follow else end))
    return ranges


def true_high_watermarks(bootstrap: str, partitions: Sequence[tuple[str, int, int, int]],
                         timeout: float = 10.0) -> dict[tuple[str, int], int]:
    """The offset after the last record of each (topic, partition, low, high), even on
    brokers that under-report it.

    The embedded Tansu broker reports the high watermark as (base offset of the last
    record batch + 1) instead of (last offset + 1), so a bounded read would stop inside
    the last batch. A fetch from ``high - 1`` returns that whole batch: its last offset
    + 1 is the real end. On Apache Kafka this returns ``high`` unchanged. One consumer
    probes every partition at once.
    """
    ends = {(t, p): high for t, p, low, high in partitions}
    todo = {(t, p): high for t, p, low, high in partitions if high > low}
    if not todo:
        return ends
    consumer = _consumer(bootstrap)
    try:
        consumer.assign([TopicPartition(t, p, high - 1) for (t, p), high in todo.items()])
        deadline = time.monotonic() + timeout
        while todo and time.monotonic() < deadline:
            for msg in consumer.consume(10000, 0.2):
                topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
                if msg.error() is not None or topic is None or partition is None or offset is None:
                    continue
                key = (topic, partition)
                ends[key] = max(ends[key], offset + 1)
                todo.pop(key, None)
        if todo:
            missing = ", ".join(f"{t}[{p}]" for t, p in sorted(todo))
            raise ReadError(f"no record at the reported end of {missing} within {timeout:.0f}s")
        return ends
    finally:
        consumer.close()


def true_high_watermark(bootstrap: str, topic: str, partition: int, low: int, high: int,
                        timeout: float = 10.0) -> int:
    """``true_high_watermarks`` for one partition."""
    return true_high_watermarks(bootstrap, [(topic, partition, low, high)], timeout)[(topic, partition)]


def read_messages(bootstrap: str, ranges: Sequence[PartitionRange], *, batch: int = 10000,
                  idle_timeout: float | None = None, stop: Callable[[], bool] | None = None,
                  progress: Callable[[int], None] | None = None) -> Iterator[list[Message]]:
    """Yield batches of confluent-kafka messages of the ranges, each partition in order.

    Bounded ranges end at their stop offsets; unbounded ones (follow) run until ``stop()``
    returns true or nothing arrived for ``idle_timeout`` seconds. Error messages and
    messages past a range's end are already dropped. Batches (not single messages) so the
    hot loops of replay and archive run over a local list.
    """
    todo = [r for r in ranges if r.stop is None or r.start < r.stop]
    if not todo:
        return
    consumer = _consumer(bootstrap)
    stops = {(r.topic, r.partition): r.stop for r in todo}
    open_parts = set(stops)
    try:
        consumer.assign([TopicPartition(r.topic, r.partition, r.start) for r in todo])
        last_data = time.monotonic()
        while open_parts:
            if stop is not None and stop():
                return
            messages = consumer.consume(batch, 0.5)
            if not messages:
                if idle_timeout is not None and time.monotonic() - last_data > idle_timeout:
                    return
                continue
            last_data = time.monotonic()
            out: list[Message] = []
            append = out.append
            finished = False
            for msg in messages:
                if msg.error() is not None:
                    log.warning("read error on %s[%s]: %s", msg.topic(), msg.partition(), msg.error())
                    continue
                tp = (msg.topic(), msg.partition())
                limit = stops.get(tp)  # type: ignore[arg-type]
                if limit is not None:
                    offset = msg.offset()
                    if offset is None or offset >= limit:
                        continue
                    if offset >= limit - 1:
                        open_parts.discard(tp)
                        finished = True
                append(msg)
            if out:
                if progress is not None:
                    progress(len(out))
                yield out
            if finished:
                # Partitions that reached their stop are paused so the rest keep the fetch budget.
                consumer.pause([TopicPartition(t, p) for (t, p) in stops if (t, p) not in open_parts])
    except KafkaException as exc:
        raise ReadError(f"read failed: {exc}") from None
    finally:
        consumer.close()


def read_records(bootstrap: str, ranges: Sequence[PartitionRange], *, batch: int = 10000,
                 idle_timeout: float | None = None, stop: Callable[[], bool] | None = None,
                 progress: Callable[[int], None] | None = None) -> Iterator[RawRecord]:
    """Yield every record of the ranges in per-partition order (see ``read_messages``)."""
    for records in read_record_batches(bootstrap, ranges, batch=batch, idle_timeout=idle_timeout, stop=stop,
                                       progress=progress):
        yield from records


def read_record_batches(bootstrap: str, ranges: Sequence[PartitionRange], *, batch: int = 10000,
                        idle_timeout: float | None = None, stop: Callable[[], bool] | None = None,
                        progress: Callable[[int], None] | None = None) -> Iterator[list[RawRecord]]:
    """``read_records`` a fetched batch at a time: what ``Engine.feed_many`` / ``Verifier.feed_many`` take."""
    for messages in read_messages(bootstrap, ranges, batch=batch, idle_timeout=idle_timeout, stop=stop,
                                  progress=progress):
        yield records_of(messages)


_RECORD_SLOTS = ("topic", "partition", "offset", "key", "value", "timestamp_ms")


def records_of(messages: list[Message]) -> list[RawRecord]:
    """The ``RawRecord`` of each message (a missing value is ``b""``).

    Why columns: ``RawRecord`` is a frozen dataclass, whose ``__init__`` sets each field through
    ``object.__setattr__``; on replay that was ~2 us per record, more than raw consume itself.
    With the C extension the records are filled from columns in one call.
    """
    native = speedups.native
    if native is None:
        out = []
        for msg in messages:
            value = msg.value()
            out.append(RawRecord(msg.topic(), msg.partition(), msg.offset(), msg.key(),
                                 value if value is not None else b"", msg.timestamp()[1]))
        return out
    values = [msg.value() for msg in messages]
    if None in values:
        values = [value if value is not None else b"" for value in values]
    records: list[RawRecord] = native.slot_objects(
        RawRecord, _RECORD_SLOTS, ([msg.topic() for msg in messages], [msg.partition() for msg in messages],
                                   [msg.offset() for msg in messages], [msg.key() for msg in messages], values,
                                   [msg.timestamp()[1] for msg in messages]), len(messages))
    return records


def read_verified(bootstrap: str, topics: Sequence[str], *, from_beginning: bool = True,
                  follow: bool = False, store: SchemaStore | None = None, keyring: Keyring | None = None,
                  idle_timeout: float | None = None, verifier: Verifier | None = None,
                  progress: Callable[[int], None] | None = None) -> Iterator[Verdict]:
    """Read topics and yield a verdict for every record, in the order they are decided.

    Authenticated events come out in their authentication order (the order the reducers
    must fold them in); everything still undecided at the end comes out last as pending.
    Pass your own ``verifier`` to inspect its ``problems`` and ``counts`` afterwards.
    """
    ranges = plan_ranges(bootstrap, topics, from_beginning=from_beginning, follow=follow)
    if verifier is None:
        verifier = Verifier(store=store, keyring=keyring)
    verifier.from_start = from_beginning and all(r.start == 0 for r in ranges)
    for records in read_record_batches(bootstrap, ranges, idle_timeout=idle_timeout, progress=progress):
        yield from verifier.feed_many(records)
    yield from verifier.finish()


__all__ = ["OFFSET_BEGINNING", "OFFSET_END", "PartitionRange", "ReadError", "plan_ranges", "read_messages",
           "read_record_batches", "read_records", "read_verified", "records_of"]
