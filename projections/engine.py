"""The processing engine: raw records → verdicts → folded projections, derived events, dead letters.

One engine serves the live workers (stores backed by RocksDB tables), the replay and audit
paths (empty in-memory stores) and the tests, so "replaying the log gives the live
state" holds by construction: the same verifier decides the same order, the same
reducers fold it. The engine is pure — the caller does all I/O: it feeds records and
writes out what ``Outcome`` lists.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from swarmlog.projections.base import Derived, InvalidEvent, MemoryStore, Projection, StateStore, Stores, fold
from swarmlog.streams.codec import CodecError, SchemaStore, default_store
from swarmlog.streams.envelope import Event
from swarmlog.streams.verify import RawRecord, Status, Verdict, Verifier

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record refused by verification or by a reducer, with everything to inspect it."""

    reason: str
    detail: str
    record: RawRecord
    event: Event | None = None

    def payload(self, worker: str, recorded_ms: int) -> dict[str, Any]:
        """The ``deadletter.recorded`` payload for this refusal."""
        return {
            "reason": self.reason, "detail": self.detail[:2000], "source_topic": self.record.topic,
            "source_partition": self.record.partition, "source_offset": self.record.offset,
            "original_key": self.record.key, "original_value": self.record.value,
            "event_id": self.event.event_id if self.event is not None else None,
            "worker": worker, "recorded_ms": recorded_ms,
        }


@dataclass
class Outcome:
    """What one ``feed`` decided: folded events, derived events to emit, refusals."""

    applied: list[Event] = field(default_factory=list)
    derived: list[tuple[Event, Derived]] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    duplicates_skipped: int = 0

    def extend(self, other: Outcome) -> None:
        self.applied.extend(other.applied)
        self.derived.extend(other.derived)
        self.dead_letters.extend(other.dead_letters)
        self.duplicates_skipped += other.duplicates_skipped


def _finite(value: Any) -> bool:
    """Reducers must never see NaN or infinities: they poison every aggregate they touch."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return True


class Engine:
    """Verifies records and folds authenticated events into projections.

    ``stores`` maps projection name → its store; a projection's ``reads`` must be present.
    Counters (``counts``) are per verdict / reason, for metrics and run summaries.
    """

    def __init__(self, projections: Sequence[Projection], stores: Mapping[str, StateStore] | None = None, *,
                 schema_store: SchemaStore | None = None, verifier: Verifier | None = None) -> None:
        self.projections = list(projections)
        self.stores: dict[str, StateStore] = dict(stores or {})
        for projection in self.projections:
            self.stores.setdefault(projection.name, MemoryStore())
            missing = [name for name in projection.reads if name not in self.stores]
            if missing:
                raise ValueError(f"projection {projection.name} reads {missing}, which this engine does not hold")
        self.schema_store = schema_store or default_store()
        self.verifier = verifier if verifier is not None else Verifier(store=self.schema_store)
        self._by_type: dict[str, list[Projection]] = {}
        for projection in self.projections:
            for event_type in projection.event_types:
                self._by_type.setdefault(event_type, []).append(projection)
        self._stores_for = {
            p.name: Stores(self.stores[p.name], {n: self.stores[n] for n in p.reads}) for p in self.projections
        }
        self.counts: dict[str, int] = {}

    # ------------------------------------------------------------------ feeding
    def feed(self, record: RawRecord) -> Outcome:
        """Verify one record and fold whatever it authenticated (possibly a whole sealed batch)."""
        outcome = Outcome()
        for verdict in self.verifier.feed(record):
            self._decide(verdict, outcome)
        return outcome

    def feed_all(self, records: Iterable[RawRecord]) -> Outcome:
        outcome = Outcome()
        for record in records:
            outcome.extend(self.feed(record))
        return outcome

    def decide(self, verdicts: Iterable[Verdict]) -> Outcome:
        """Fold verdicts some other verifier already decided.

        Why: an audit verifies each record once and hands the authenticated ones to several
        engines (one per domain); re-verifying per engine would multiply the cost.
        """
        outcome = Outcome()
        for verdict in verdicts:
            self._decide(verdict, outcome)
        return outcome

    def finish(self) -> Outcome:
        """End of a bounded input: what is still pending is reported (not dead-lettered)."""
        outcome = Outcome()
        for verdict in self.verifier.finish():
            self._decide(verdict, outcome)
        return outcome

    def _count(self, key: str) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1

    def _decide(self, verdict: Verdict, outcome: Outcome) -> None:
        if verdict.status is Status.PENDING:
            self._count("pending")
            return
        if verdict.kind == "seal":
            if verdict.status is not Status.AUTHENTICATED:
                self._count(f"seal-{verdict.status.value}")
                outcome.dead_letters.append(DeadLetter(f"seal-{verdict.status.value}", verdict.reason,
                                                       verdict.record))
            return
        if verdict.status is not Status.AUTHENTICATED:
            self._count(verdict.status.value)
            outcome.dead_letters.append(DeadLetter(verdict.status.value, verdict.reason, verdict.record,
                                                   verdict.event))
            return
        event = verdict.event
        assert event is not None
        self._count("authenticated")
        self._apply(verdict.record, event, outcome)

    def _apply(self, record: RawRecord, event: Event, outcome: Outcome) -> None:
        projections = self._by_type.get(event.event_type)
        if not projections:
            self._count("not-folded")  # authentic, but no projection here folds this type
            return
        try:
            payload = event.decode_payload(self.schema_store)
        except CodecError as exc:
            self._count("invalid-payload")
            outcome.dead_letters.append(DeadLetter("invalid-payload", str(exc), record, event))
            return
        if not _finite(payload):
            self._count("invalid-payload")
            outcome.dead_letters.append(DeadLetter("invalid-payload", "NaN or infinite number", record, event))
            return
        applied = False
        for projection in projections:
            try:
                derived = fold(projection, self._stores_for[projection.name], event, payload)
            except InvalidEvent as exc:
                self._count(exc.reason)
                outcome.dead_letters.append(DeadLetter(exc.reason, f"{projection.name}: {exc.detail}", record, event))
                continue
            if derived is None:
                outcome.duplicates_skipped += 1
                continue
            applied = True
            outcome.derived.extend((event, d) for d in derived)
        if applied:
            self._count("applied")
            outcome.applied.append(event)


def replay(records: Iterable[RawRecord], projections: Sequence[Projection], *,
           schema_store: SchemaStore | None = None) -> tuple[Engine, Outcome]:
    """Fold a bounded sequence of records into fresh in-memory stores."""
    engine = Engine(projections, schema_store=schema_store)
    outcome = engine.feed_all(records)
    outcome.extend(engine.finish())
    return engine, outcome
