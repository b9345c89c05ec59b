"""The pure projection framework: state stores, reducer contract, idempotent folding.

A projection is a pure function of the authenticated event sequence: ``apply`` reads and
writes its own key-value store (and may read other projections' stores) and returns the
events it derives (a routing decision, a consensus decision ...). No Kafka, no Faust, no
clock: time is the event's ``timestamp_ms``. That is what lets the live workers, the
replay engine and the tests run the same code and reach the same state.

Idempotence: the embedded broker gives at-least-once delivery, so ``fold`` keeps a
high-water mark per (producer stream, lane) in the store itself and skips anything at or
below it; writing the mark with the state makes redelivery harmless.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from swarmlog.streams.envelope import Event
from swarmlog.streams.ids import uuid_text

JSON = Any  # JSON-compatible: dict, list, str, int, float, bool, None
APPLIED_PREFIX = "__applied/"


class StateStore(Protocol):
    """Key-value state of one projection; values are JSON-compatible."""

    def get(self, key: str) -> JSON | None: ...

    def put(self, key: str, value: JSON) -> None: ...

    def delete(self, key: str) -> None: ...

    def scan(self, prefix: str = "") -> Iterator[tuple[str, JSON]]:
        """Every (key, value) whose key starts with ``prefix``, in key order."""
        ...


class MemoryStore:
    """Dict-backed store: replay into an empty store, tests, benchmarks."""

    def __init__(self) -> None:
        self.data: dict[str, JSON] = {}

    def get(self, key: str) -> JSON | None:
        return self.data.get(key)

    def put(self, key: str, value: JSON) -> None:
        self.data[key] = value

    def delete(self, key: str) -> None:
        self.data.pop(key, None)

    def scan(self, prefix: str = "") -> Iterator[tuple[str, JSON]]:
        for key in sorted(k for k in self.data if k.startswith(prefix)):
            yield key, self.data[key]

    def __len__(self) -> int:
        return len(self.data)


@dataclass(frozen=True, slots=True)
class EventContext:
    """What a reducer may know about an event besides its payload."""

    event_id: str
    event_type: str
    producer: str
    subject: str
    timestamp_ms: int
    lane: str
    seq: int
    stream_id: str

    @classmethod
    def of(cls, event: Event) -> EventContext:
        return cls(uuid_text(event.event_id), event.event_type, event.producer, event.subject,
                   event.timestamp_ms, event.lane, event.seq, event.stream_id.hex())


@dataclass(frozen=True, slots=True)
class Derived:
    """An event a reducer wants emitted (signed by the worker that derived it)."""

    event_type: str
    payload: dict[str, Any]
    subject: str | None = None


#: A derived payload's top-level string value equal to this is replaced, when the worker signs
#: the event, by the worker's own DID: a reducer is pure and cannot know who runs it, yet a
#: ``trust.observation`` must name its signer as the observer (the trust projection refuses
#: anything else).
SIGNER = "$signer"


class InvalidEvent(ValueError):
    """An authenticated event whose content a reducer refuses (unknown agent, bad value).

    The worker sends it to the dead-letter topic with ``reason``; state is unchanged.
    ``derived`` are events the refusal itself produces: a false claim caught by a check
    (a spoofed deposit, a role the agent does not hold) is refused *and* reported to the
    trust network as an observation about whoever signed it.
    """

    def __init__(self, reason: str, detail: str = "", derived: Sequence[Derived] = ()) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.derived = list(derived)


@dataclass
class Stores:
    """The store of the projection being applied, plus read access to others by name."""

    own: StateStore
    others: Mapping[str, StateStore] = field(default_factory=dict)

    def read(self, name: str) -> StateStore:
        try:
            return self.others[name]
        except KeyError:
            raise KeyError(f"projection store {name!r} is not available here") from None


class Projection(ABC):
    """One domain's state: which events it folds, how, and what it derives."""

    name: ClassVar[str]
    event_types: ClassVar[frozenset[str]]
    reads: ClassVar[tuple[str, ...]] = ()  # other projections whose stores ``apply`` reads

    @abstractmethod
    def apply(self, stores: Stores, ctx: EventContext, payload: dict[str, Any]) -> list[Derived]:
        """Fold one authenticated event; raise ``InvalidEvent`` to refuse it (no state change)."""


def fold(projection: Projection, stores: Stores, event: Event, payload: dict[str, Any],
         ctx: EventContext | None = None, mark_key: str | None = None) -> list[Derived] | None:
    """Apply ``event`` once: None if this (stream, lane, seq) was already decided.

    A refusal is a decision too: when the reducer raises ``InvalidEvent`` the mark is
    written (the reducer wrote nothing else) and the exception propagates. Otherwise a
    redelivered refused event would be judged again against *later* state — a heartbeat
    refused as unknown-agent would be accepted after the agent registered — and replay
    would no longer reproduce the live decision.

    ``ctx`` and ``mark_key`` may be passed precomputed (the engine builds them once per event,
    not once per projection); they must be ``EventContext.of(event)`` and ``mark_key_of(event)``.
    """
    if mark_key is None:
        mark_key = mark_key_of(event)
    mark = stores.own.get(mark_key)
    if isinstance(mark, int) and event.seq <= mark:
        return None
    try:
        derived = projection.apply(stores, ctx if ctx is not None else EventContext.of(event), payload)
    except InvalidEvent:
        stores.own.put(mark_key, event.seq)
        raise
    stores.own.put(mark_key, event.seq)
    return derived


def mark_key_of(event: Event) -> str:
    """Where ``fold`` keeps the high-water mark of the event's (producer stream, lane)."""
    return f"{APPLIED_PREFIX}{event.stream_id.hex()}/{event.lane}"


def snapshot(store: StateStore, include_marks: bool = False) -> dict[str, JSON]:
    """The store as a plain dict (sorted keys), for determinism checks and audits."""
    return {k: v for k, v in store.scan("") if include_marks or not k.startswith(APPLIED_PREFIX)}


def canonical_json(value: JSON) -> str:
    """Stable text of a JSON value: what two projections are compared by."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
