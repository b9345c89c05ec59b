"""What every swarmlog worker agent does with a batch of records, independent of the domain.

    raw records ─► Engine (verify ─► decode ─► fold) ─► table writes
                                  ├─► derived events  ─► signed producer
                                  └─► dead letters    ─► ``deadletter`` topic

Acks are manual: a record is acknowledged only once it is decided (applied, refused or a
duplicate), after its outputs are delivered. A record still waiting for its seal is not
acknowledged, so Faust never commits past it and a replacement worker reads it again —
nothing is lost when a worker dies between an event and its seal. Redelivered records are
harmless: ``fold`` skips what the table's marks say was applied.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from swarmlog.projections.base import JSON, Projection, StateStore
from swarmlog.projections.engine import Engine, Outcome
from swarmlog.projections.ledger import LedgerRecorder
from swarmlog.streams.codec import SchemaStore, default_store
from swarmlog.streams.producer import EventProducer
from swarmlog.streams.verify import RawRecord

log = logging.getLogger(__name__)


class TableLike(Protocol):
    """The part of a Faust table (or any mapping) a ``TableStore`` needs."""

    def get(self, key: Any, default: Any = None) -> Any: ...

    def __setitem__(self, key: Any, value: Any) -> None: ...

    def __delitem__(self, key: Any) -> None: ...

    def items(self) -> Any: ...


class TableStore:
    """A projection store on a Faust table (RocksDB + changelog); values are JSON."""

    def __init__(self, table: TableLike) -> None:
        self.table = table

    def get(self, key: str) -> JSON | None:
        return self.table.get(key)

    def put(self, key: str, value: JSON) -> None:
        self.table[key] = value

    def delete(self, key: str) -> None:
        with contextlib.suppress(KeyError):
            del self.table[key]

    def scan(self, prefix: str = "") -> Iterator[tuple[str, JSON]]:
        yield from sorted((k, v) for k, v in self.table.items() if str(k).startswith(prefix))


@dataclass
class Counters:
    """Per-reason counters of one worker; exported as metrics and in run summaries."""

    values: dict[str, int] = field(default_factory=dict)

    def add(self, counts: dict[str, int]) -> None:
        for key, value in counts.items():
            self.values[key] = self.values.get(key, 0) + value


class OutputSink:
    """Signs and sends derived events and dead letters with the worker's identity."""

    def __init__(self, producer: EventProducer, worker_name: str, topic_prefix: str = "") -> None:
        self.producer = producer
        self.worker_name = worker_name
        self.topic_prefix = topic_prefix
        self.derived = 0
        self.dead_letters = 0

    def emit(self, outcome: Outcome) -> None:
        for source, derived in outcome.derived:
            self.producer.produce(derived.event_type, derived.payload, subject=derived.subject or source.subject)
            self.derived += 1
        now = int(time.time() * 1000)
        for dead in outcome.dead_letters:
            self.producer.produce("deadletter.recorded", dead.payload(self.worker_name, now),
                                  subject=dead.record.topic)
            self.dead_letters += 1
            log.warning("dead letter %s: %s (%s)", dead.record.position, dead.reason, dead.detail)

    def flush(self) -> None:
        """Seal and deliver everything emitted so far (raises ProduceError on loss)."""
        self.producer.flush()


class PartitionedRuntime:
    """One engine per source partition for a domain's projections; stores are shared tables.

    ``store_factory(name)`` returns the store for projection ``name`` (a TableStore in a
    worker, a MemoryStore in tests); ``extra_stores`` are read-only stores of projections
    this runtime does not own (e.g. the registry replica routing reads).
    """

    def __init__(self, projections: Sequence[Projection], store_factory: Callable[[str], StateStore], *,
                 extra_stores: dict[str, StateStore] | None = None, schema_store: SchemaStore | None = None) -> None:
        self.projections = list(projections)
        self.schema_store = schema_store or default_store()
        self.stores: dict[str, StateStore] = {p.name: store_factory(p.name) for p in self.projections}
        self.stores.update(extra_stores or {})
        self.engines: dict[tuple[str, int], Engine] = {}
        self.last_offset: dict[tuple[str, int], int] = {}
        self.counters = Counters()
        #: optional audit ledger (projections/ledger.py): fed each record's authenticated events
        self.ledger: LedgerRecorder | None = None

    def engine(self, topic: str, partition: int) -> Engine:
        key = (topic, partition)
        engine = self.engines.get(key)
        if engine is None:
            engine = Engine(self.projections, self.stores, schema_store=self.schema_store)
            # A worker joins mid-log: a sealed event before its first record is not "missing".
            engine.verifier.from_start = False
            self.engines[key] = engine
        return engine

    def revoke(self, topic: str, partition: int) -> None:
        """Partition moved away: forget its verifier state (the new owner rebuilds its own)."""
        self.engines.pop((topic, partition), None)
        self.last_offset.pop((topic, partition), None)

    def process(self, records: Sequence[RawRecord], before_each: Callable[[int], None] | None = None,
                ) -> tuple[Outcome, set[tuple[str, int, int]]]:
        """Feed a batch; return the outcome and the positions that are still pending.

        ``before_each(i)`` runs before record ``i`` is fed (Faust needs the current event
        set so table writes go to that record's changelog partition).
        """
        outcome = Outcome()
        touched: set[tuple[str, int]] = set()
        for index, record in enumerate(records):
            tp = (record.topic, record.partition)
            if record.offset <= self.last_offset.get(tp, -1):
                # the consumer delivered this offset again (rebalance, retry): already fed
                self.counters.add({"redelivered": 1})
                continue
            self.last_offset[tp] = record.offset
            if before_each is not None:
                before_each(index)
            engine = self.engine(record.topic, record.partition)
            before = dict(engine.counts)
            fed = engine.feed(record)
            if self.ledger is not None:  # same current event: ledger writes go to this record's changelog
                fed.derived.extend(self.ledger.record(fed.authenticated))
            outcome.extend(fed)
            self.counters.add({k: v - before.get(k, 0) for k, v in engine.counts.items() if v != before.get(k, 0)})
            touched.add(tp)
        pending: set[tuple[str, int, int]] = set()
        for key in touched:
            pending |= self.engines[key].verifier.pending_positions()
        return outcome, pending
