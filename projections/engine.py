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
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from swarmlog.projections.access import store_access
from swarmlog.projections.base import (
    Derived,
    EventContext,
    InvalidEvent,
    MemoryStore,
    Projection,
    StateStore,
    Stores,
    mark_key_of,
)
from swarmlog.streams import speedups
from swarmlog.streams.codec import CodecError, SchemaStore, default_store
from swarmlog.streams.envelope import Event
from swarmlog.streams.verify import RawRecord, Status, Verdict, Verifier, gc_paused

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
    #: every event the verifier authenticated, with its record, in release order (the ledger's leaves)
    authenticated: list[tuple[RawRecord, Event]] = field(default_factory=list)

    def extend(self, other: Outcome) -> None:
        self.applied.extend(other.applied)
        self.authenticated.extend(other.authenticated)
        self.derived.extend(other.derived)
        self.dead_letters.extend(other.dead_letters)
        self.duplicates_skipped += other.duplicates_skipped


def _finite(value: Any) -> bool:
    """Reducers must never see NaN or infinities: they poison every aggregate they touch.

    Decoded Avro holds only dict, list, str, bytes, int, float, bool and None; this walks
    dicts and lists with type checks instead of a generator per level (it ran for every
    folded event and was a tenth of replay time).
    """
    kind = type(value)
    if kind is float:
        return _isfinite(value)
    if kind is dict:
        values: Iterable[Any] = value.values()
    elif kind is list:
        values = value
    else:
        return not isinstance(value, float) or _isfinite(value)
    for item in values:
        kind = type(item)
        if kind is float:
            if not _isfinite(item):
                return False
        elif (kind is dict or kind is list or isinstance(item, float)) and not _finite(item):
            return False
    return True


_isfinite = math.isfinite
_FLOAT_TYPES = frozenset({"float", "double"})
_NO_FLOAT_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "bytes", "string"})


def _has_floats(schema: Any, named: Mapping[str, Any], seen: frozenset[str] = frozenset()) -> bool:
    """Whether an Avro schema (parsed JSON) can carry a float or double anywhere.

    Named references are followed through ``named`` (the store's named types); an unknown
    name counts as "may hold floats", so a payload is never waved through by mistake.
    """
    if isinstance(schema, str):
        if schema in _FLOAT_TYPES:
            return True
        if schema in _NO_FLOAT_PRIMITIVES or schema in seen:
            return False
        target = named.get(schema)
        return True if target is None else _has_floats(target, named, seen | {schema})
    if isinstance(schema, list):
        return any(_has_floats(s, named, seen) for s in schema)
    if isinstance(schema, dict):
        kind = schema.get("type")
        name = schema.get("name")
        if isinstance(name, str):
            seen = seen | {name, f"{schema.get('namespace')}.{name}"}
        if kind in ("record", "error"):
            return any(_has_floats(f.get("type"), named, seen) for f in schema.get("fields", []))
        if kind in ("enum", "fixed"):
            return False
        if kind == "array":
            return _has_floats(schema.get("items"), named, seen)
        if kind == "map":
            return _has_floats(schema.get("values"), named, seen)
        return _has_floats(kind, named, seen)
    return False


_DECODE_ERRORS = (IndexError, ValueError, struct.error, OverflowError)
# (compiled body decoder of the writer schema or None, schema name, finiteness check or None, folds)
_Plan = tuple[Callable[[bytes, int], tuple[Any, int]] | None, str, Callable[[dict[str, Any]], bool] | None,
              list[tuple[Projection, Stores, Callable[[str], Any], Callable[[str, Any], None]]]]


def _float_checker(schema: Any, named: Mapping[str, Any]) -> Callable[[dict[str, Any]], bool] | None:
    """A finiteness check specialised to a record schema: None when it cannot hold floats;
    top-level float fields checked directly; only fields that nest floats walked."""
    if not _has_floats(schema, named):
        return None
    if not isinstance(schema, dict) or schema.get("type") != "record":
        return _finite
    scalars: list[str] = []
    maps: list[str] = []  # map<float|double>: every value is a number
    arrays: list[str] = []  # array<float|double>
    nested: list[str] = []
    for f in schema.get("fields", []):
        ftype = f.get("type")
        branches = ftype if isinstance(ftype, list) else [ftype]
        if not _has_floats(ftype, named):
            continue
        if all(isinstance(b, str) and (b in _FLOAT_TYPES or b == "null") for b in branches):
            scalars.append(f["name"])
        elif isinstance(ftype, dict) and ftype.get("type") == "map" and _is_float_name(ftype.get("values")):
            maps.append(f["name"])
        elif isinstance(ftype, dict) and ftype.get("type") == "array" and _is_float_name(ftype.get("items")):
            arrays.append(f["name"])
        else:
            nested.append(f["name"])

    def check(payload: dict[str, Any], scalars: tuple[str, ...] = tuple(scalars), maps: tuple[str, ...] = tuple(maps),
              arrays: tuple[str, ...] = tuple(arrays), nested: tuple[str, ...] = tuple(nested)) -> bool:
        for name in scalars:
            value = payload.get(name)
            if value is not None and not _isfinite(value):
                return False
        for name in maps:
            value = payload.get(name)
            if (type(value) is not dict or not _all_finite(value.values())) and not _finite(value):
                return False
        for name in arrays:
            value = payload.get(name)
            if (type(value) is not list or not _all_finite(value)) and not _finite(value):
                return False
        return all(_finite(payload.get(name)) for name in nested) if nested else True

    return check


def _is_float_name(schema: Any) -> bool:
    return isinstance(schema, str) and schema in _FLOAT_TYPES


def _all_finite(values: Iterable[Any]) -> bool:
    """Every value a finite number; False also when one is not a number (the caller then asks ``_finite``)."""
    try:
        return all(map(_isfinite, values))
    except (TypeError, OverflowError):
        return False


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
        # per (writer fingerprint, event type): see _plan
        self._plans: dict[tuple[bytes, str], _Plan] = {}
        self._mark_keys: dict[tuple[bytes, str], str] = {}
        # per event type: (projection, its stores, get and put of its own store) of every projection
        # folding it, in order; get/put are the dict's own methods for a MemoryStore (see _apply)
        self._folds: dict[str, list[tuple[Projection, Stores, Callable[[str], Any], Callable[[str, Any], None]]]] = {
            t: [(p, self._stores_for[p.name], *store_access(self._stores_for[p.name].own)) for p in ps]
            for t, ps in self._by_type.items()}

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

    def feed_many(self, records: Iterable[RawRecord], batch: int = 4096) -> Outcome:
        """``feed_all`` for bulk input (replay, audit): the same outcome, counts and state.

        Why: per record, ``feed`` pays an ``Outcome``, a verifier call and a decision call;
        here the verifier decodes each chunk of ``batch`` records at once (``Verifier.feed_many``)
        and the authenticated events are folded in one loop.
        """
        outcome = Outcome()
        feed_many = self.verifier.feed_many
        if type(records) is list and len(records) <= batch:
            with gc_paused():
                self._decide_many(feed_many(records), outcome)
            return outcome
        it = iter(records)
        while chunk := list(islice(it, batch)):
            with gc_paused():
                self._decide_many(feed_many(chunk), outcome)
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
        outcome.authenticated.append((verdict.record, event))
        self._apply(verdict.record, event, outcome)

    def _decide_many(self, verdicts: list[Verdict], outcome: Outcome) -> None:
        """``_decide`` of each verdict in order; authenticated events take an inlined path, their
        contexts built for the whole batch at once."""
        authenticated = Status.AUTHENTICATED
        events = [v.event for v in verdicts if v.status is authenticated and v.kind == "event"]
        if not events:
            for verdict in verdicts:
                self._decide(verdict, outcome)
            return
        contexts = _contexts(events)
        apply = self._apply
        auth_append = outcome.authenticated.append
        counts = self.counts
        n_auth = 0
        try:
            for verdict in verdicts:
                if verdict.status is authenticated and verdict.kind == "event":
                    if not n_auth:  # keep the counters' key order what _decide gives
                        counts.setdefault("authenticated", 0)
                    record, event = verdict.record, verdict.event
                    assert event is not None
                    auth_append((record, event))
                    ctx = contexts[n_auth]
                    n_auth += 1
                    apply(record, event, outcome, ctx)
                else:
                    self._decide(verdict, outcome)
        finally:
            if n_auth:
                counts["authenticated"] += n_auth

    def _plan(self, event: Event) -> _Plan:
        """How to fold events of this (writer schema, event type): (the writer's compiled body decoder
        or None, the schema's name, the finiteness check or None, the folds of the type).

        Why: ``Event.decode_payload`` looks the schemas up and compares them on every call;
        when the writer schema is the current one (nearly always) the compiled decoder can
        be called directly. Anything else (old writer versions, mismatches, unknown
        fingerprints) keeps going through ``decode_payload``, which resolves or refuses it.
        """
        key = (event.payload_schema, event.event_type)
        if len(self._plans) > 10_000:  # bounded: writer fingerprints are the producers' to choose
            self._plans.clear()
        folds = self._folds.get(event.event_type, [])
        if not folds:  # nothing to decode: the event is counted as not folded
            plan: _Plan = (None, "", None, folds)
            self._plans[key] = plan
            return plan
        store = self.schema_store
        decode: Callable[[bytes, int], tuple[Any, int]] | None = None
        name = ""
        check: Callable[[dict[str, Any]], bool] | None = _finite
        try:
            writer = store.by_fingerprint(event.payload_schema)
            reader = store.for_event_type(event.event_type) if writer.event_type else writer
        except CodecError:
            writer = reader = None
        if writer is not None and reader is not None and reader.fingerprint == writer.fingerprint:
            decode, name = writer.decode_body, writer.full_name
        if reader is not None:
            check = _float_checker(reader.parsed, store.named_types)
            native_check = getattr(speedups.native, "all_finite", None)
            if check is not None and native_check is not None:
                # the same verdict: the specialised check walks exactly the fields that can hold floats,
                # the C walk all of them (the others hold none); in one C call
                check = native_check
        plan = self._plans[key] = (decode, name, check, folds)
        return plan

    def _apply(self, record: RawRecord, event: Event, outcome: Outcome, ctx: EventContext | None = None) -> None:
        """Decode, check and fold one authenticated event; ``ctx`` is ``EventContext.of(event)`` when
        the caller built it already."""
        plan = self._plans.get((event.payload_schema, event.event_type))
        if plan is None:
            plan = self._plan(event)
        decode, name, check, folds = plan
        if not folds:
            self._count("not-folded")  # authentic, but no projection here folds this type
            return
        problem = ""
        if decode is not None:  # the compiled decoder, with SchemaStore.decode_body's checks
            data = event.payload_bytes
            try:
                payload, end = decode(data, 0)
            except _DECODE_ERRORS as exc:
                problem = f"undecodable {name} body: {exc}"
            else:
                if end != len(data):
                    problem = f"{len(data) - end} trailing bytes after {name} body"
                elif type(payload) is not dict:
                    problem = "payload is not a record"
        else:
            try:
                payload = event.decode_payload(self.schema_store)
            except CodecError as exc:
                problem = str(exc)
        if problem:
            self._count("invalid-payload")
            outcome.dead_letters.append(DeadLetter("invalid-payload", problem, record, event))
            return
        if check is not None and not check(payload):
            self._count("invalid-payload")
            outcome.dead_letters.append(DeadLetter("invalid-payload", "NaN or infinite number", record, event))
            return
        # one context and one mark key per event, whatever the number of projections folding it
        if ctx is None:
            ctx = EventContext.of(event)
        stream_key = (event.stream_id, event.lane)
        mark_key = self._mark_keys.get(stream_key)
        if mark_key is None:
            if len(self._mark_keys) > 100_000:  # bounded: many short-lived producer streams
                self._mark_keys.clear()
            mark_key = self._mark_keys[stream_key] = mark_key_of(event)
        applied = False
        seq = event.seq
        for projection, stores, get, put in folds:
            # base.fold(projection, stores, event, payload, ctx, mark_key), inlined: the same mark check
            # and writes, through the store's get/put (a MemoryStore's dict methods: no frame per call)
            mark = get(mark_key)
            if isinstance(mark, int) and seq <= mark:
                outcome.duplicates_skipped += 1
                continue
            try:
                derived = projection.apply(stores, ctx, payload)
            except InvalidEvent as exc:
                put(mark_key, seq)
                self._count(exc.reason)
                outcome.dead_letters.append(DeadLetter(exc.reason, f"{projection.name}: {exc.detail}", record, event))
                outcome.derived.extend((event, d) for d in exc.derived)
                continue
            put(mark_key, seq)
            applied = True
            if derived:
                outcome.derived.extend((event, d) for d in derived)
        if applied:
            counts = self.counts
            counts["applied"] = counts.get("applied", 0) + 1
            outcome.applied.append(event)


def _contexts(events: list[Event]) -> list[EventContext]:
    """``EventContext.of`` of each event; in one C call when the extension is in use."""
    native = speedups.native
    if native is not None:
        built: list[EventContext] | None = native.event_contexts(EventContext, events)
        if built is not None:
            return built
    return [EventContext.of(event) for event in events]


def replay(records: Iterable[RawRecord], projections: Sequence[Projection], *,
           schema_store: SchemaStore | None = None) -> tuple[Engine, Outcome]:
    """Fold a bounded sequence of records into fresh in-memory stores."""
    engine = Engine(projections, schema_store=schema_store)
    outcome = engine.feed_many(records)
    outcome.extend(engine.finish())
    return engine, outcome
