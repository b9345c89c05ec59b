"""Build signed swarmlog logs in memory: several producers, real chains, seals and Kafka offsets.

The tests of the verifier, the engine and the projections all need "a log as the broker
would hold it"; this is the one place that knows how the real ``ChainWriter`` output maps
to ``RawRecord``s (partition = crc32(subject) % partitions, offsets per partition).
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from swarmlog.streams.chain import ChainWriter
from swarmlog.streams.codec import SchemaStore, default_store, encode_body
from swarmlog.streams.identity import Identity
from swarmlog.streams.verify import RawRecord


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


def interleave(records: Sequence[RawRecord], rng: random.Random) -> list[RawRecord]:
    """Any merge of the per-partition sequences (Kafka only orders within a partition)."""
    queues: dict[tuple[str, int], list[RawRecord]] = {}
    for rec in records:
        queues.setdefault((rec.topic, rec.partition), []).append(rec)
    merged = []
    while queues:
        key = rng.choice(sorted(queues))
        merged.append(queues[key].pop(0))
        if not queues[key]:
            del queues[key]
    return merged


def partition_records(records: Iterable[RawRecord], topic: str, partition: int) -> list[RawRecord]:
    return [r for r in records if (r.topic, r.partition) == (topic, partition)]
