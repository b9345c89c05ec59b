"""Build signed swarmlog logs in memory: several producers, real chains, seals and Kafka offsets.

The tests of the verifier, the engine and the projections all need "a log as the broker
would hold it"; this is the one place that knows how the real ``ChainWriter`` output maps
to ``RawRecord``s (partition = crc32(subject) % partitions, offsets per partition).
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from swarmlog.projections.base import Derived, InvalidEvent, MemoryStore, Projection, Stores, fold
from swarmlog.streams.chain import ChainWriter, OutRecord
from swarmlog.streams.codec import SchemaStore, default_store, encode_body
from swarmlog.streams.envelope import Event
from swarmlog.streams.identity import Identity
from swarmlog.streams.verify import RawRecord

T = TypeVar("T")
P = TypeVar("P", bound=Projection)
Folded = tuple[Event, dict[str, Any]]


class LogBuilder:
    """Producers appending to one in-memory log; ``records`` is the log in write order."""

    def __init__(self, partitions: int = 3, store: SchemaStore | None = None, identity_topic: str = "trust") -> None:
        self.partitions = partitions
        self.store = store or default_store()
        self.identity_topic = identity_topic
        self.records: list[RawRecord] = []
        self._offsets: dict[tuple[str, int], int] = {}
        self._writers: dict[str, ChainWriter] = {}

    def partition_of(self, subject: str) -> int:
        return zlib.crc32(subject.encode()) % self.partitions

    def write(self, topic: str, partition: int, key: bytes | None, value: bytes, timestamp_ms: int = 0) -> RawRecord:
        """Append one record as Kafka would store it (also what a raw producer writes)."""
        offset = self._offsets.get((topic, partition), -1) + 1
        self._offsets[(topic, partition)] = offset
        record = RawRecord(topic, partition, offset, key, value, timestamp_ms)
        self.records.append(record)
        return record

    def writer(self, identity: Identity) -> ChainWriter:
        """The identity's chain writer; its identity document is written on first use."""
        writer = self._writers.get(identity.did)
        if writer is None:
            writer = self._writers[identity.did] = ChainWriter(identity, self.store)
            entry = self.store.for_event_type("trust.identity")
            _ref, value = writer.append(entry, encode_body(entry, writer.identity_payload()), identity.did,
                                        self.identity_topic, 0, sign=True)
            self.write(self.identity_topic, 0, identity.did.encode(), value)
        return writer

    def append(self, identity: Identity, event_type: str, payload: Mapping[str, Any], *, subject: str | None = None,
               topic: str | None = None, partition: int | None = None, sign: bool = False,
               timestamp_ms: int | None = None) -> RawRecord:
        """One event by ``identity``; topic and subject default to what the schema names."""
        entry = self.store.for_event_type(event_type)
        subject = subject if subject is not None else str(payload[entry.subject_field or ""])
        topic = topic or entry.topic or "events"
        partition = self.partition_of(subject) if partition is None else partition
        _ref, value = self.writer(identity).append(entry, encode_body(entry, dict(payload)), subject, topic, partition,
                                                   sign=sign, timestamp_ms=timestamp_ms)
        return self.write(topic, partition, subject.encode(), value, timestamp_ms or 0)

    def seal(self, identity: Identity, *, lost: bool = False) -> list[RawRecord]:
        """Seal what ``identity`` wrote since its last seal; ``lost``: the seal is built but never written."""
        out = self.writer(identity).seal()
        if lost:
            return []
        return [self.write(r.topic, r.partition, r.key, r.value) for r in out]


def to_raw(records: Iterable[OutRecord]) -> list[RawRecord]:
    """A writer's output records as the broker stores them: offsets counted per partition."""
    offsets: dict[tuple[str, int], int] = {}
    raw = []
    for rec in records:
        key = (rec.topic, rec.partition)
        offsets[key] = offsets.get(key, -1) + 1
        raw.append(RawRecord(rec.topic, rec.partition, offsets[key], rec.key, rec.value))
    return raw


def _partition_of(item: Any) -> Hashable:
    return (item.topic, item.partition)


def interleave(items: Sequence[T], rng: random.Random, key: Callable[[T], Hashable] = _partition_of) -> list[T]:
    """Any merge of the per-partition sequences (Kafka only orders within a partition).

    ``key`` names an item's partition: (topic, partition) of a record by default; a lane
    name for decoded events.
    """
    queues: dict[Hashable, list[T]] = {}
    for item in items:
        queues.setdefault(key(item), []).append(item)
    merged = []
    while queues:
        chosen = rng.choice(sorted(queues, key=repr))
        merged.append(queues[chosen].pop(0))
        if not queues[chosen]:
            del queues[chosen]
    return merged


@dataclass
class FoldRun(Generic[P]):
    """Folds decoded events into one store with ``fold`` (idempotence marks and all) and keeps
    what came out: derived events, and the reasons of the refused ones."""

    projection: P
    store: MemoryStore = field(default_factory=MemoryStore)
    derived: list[Derived] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    def feed(self, *events: Folded) -> list[Derived]:
        out: list[Derived] = []
        for event, payload in events:
            try:
                derived = fold(self.projection, Stores(self.store), event, payload)
            except InvalidEvent as exc:
                self.refused.append(exc.reason)
                continue
            out += derived or []
        self.derived += out
        return out


def partition_records(records: Iterable[RawRecord], topic: str, partition: int) -> list[RawRecord]:
    return [r for r in records if (r.topic, r.partition) == (topic, partition)]
