"""The engine: verify → fold → derived events and dead letters, idempotent across restarts."""

from __future__ import annotations

import random
import zlib
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swarmlog.projections.base import (
    Derived,
    EventContext,
    InvalidEvent,
    MemoryStore,
    Projection,
    Stores,
    canonical_json,
    snapshot,
)
from swarmlog.projections.engine import Engine, replay
from swarmlog.streams.chain import ChainWriter, OutRecord
from swarmlog.streams.codec import default_store, encode_body
from swarmlog.streams.identity import Identity
from swarmlog.streams.verify import RawRecord
from tests.support.logs import to_raw

STORE = default_store()
IDENTITY_ENTRY = STORE.for_event_type("trust.identity")
DEAD = STORE.for_event_type("deadletter.recorded")


class CountingProjection(Projection):
    """Counts dead letters per source topic (a commutative update: any partition may feed it)
    and keeps the last event per *subject* (order-dependent, so keyed by the partitioning key);
    refuses reason 'refuse'; derives one event per 3rd."""

    name: ClassVar[str] = "counting"
    event_types: ClassVar[frozenset[str]] = frozenset({"deadletter.recorded"})

    def apply(self, stores: Stores, ctx: EventContext, payload: dict[str, Any]) -> list[Derived]:
        if payload["reason"] == "refuse":
            raise InvalidEvent("refused-by-test", payload["detail"])
        key = f"count/{payload['source_topic']}"
        count = (stores.own.get(key) or 0) + 1
        stores.own.put(key, count)
        stores.own.put(f"last/{ctx.subject}", ctx.event_id)
        if count % 3 == 0:
            return [Derived("deadletter.recorded", {**payload, "reason": "derived"}, subject=ctx.subject)]
        return []


@pytest.fixture(scope="module")
def producer_identity() -> Identity:
    return Identity.generate("engine-test")


def make_log(identity: Identity, payloads: list[dict[str, Any]], partitions: int = 3,
             seal_every: int = 5) -> list[RawRecord]:
    writer = ChainWriter(identity)
    out: list[OutRecord] = []
    _ref, value = writer.append(IDENTITY_ENTRY, encode_body(IDENTITY_ENTRY, writer.identity_payload()), identity.did,
                               "trust", 0, sign=True)
    out.append(OutRecord("trust", 0, b"", value))
    for i, body in enumerate(payloads):
        subject = f"s{i % 4}"
        partition = zlib.crc32(subject.encode()) % partitions  # as every swarmlog producer does
        _ref, value = writer.append(DEAD, encode_body(DEAD, body), subject, "events", partition)
        out.append(OutRecord("events", partition, subject.encode(), value))
        if (i + 1) % seal_every == 0:
            out.extend(writer.seal())
    out.extend(writer.seal())
    return to_raw(out)


def dl(topic: str, reason: str = "x", offset: int = 0) -> dict[str, Any]:
    return dict(reason=reason, detail="d", source_topic=topic, source_partition=0, source_offset=offset,
                original_value=b"v", recorded_ms=1)


def test_fold_derive_and_refuse(producer_identity: Identity) -> None:
    payloads = [dl("a", offset=i) for i in range(6)] + [dl("b", "refuse")] + [dl("b")]
    engine, outcome = replay(make_log(producer_identity, payloads), [CountingProjection()])
    state = snapshot(engine.stores["counting"])
    assert state["count/a"] == 6 and state["count/b"] == 1
    assert sorted(k for k in state if k.startswith("last/")) == ["last/s0", "last/s1", "last/s2", "last/s3"]
    assert [d.payload["reason"] for _, d in outcome.derived] == ["derived", "derived"]
    assert [(d.reason, d.event is not None) for d in outcome.dead_letters] == [("refused-by-test", True)]
    assert engine.counts["applied"] == 7 and engine.counts["refused-by-test"] == 1


def test_restart_with_fresh_verifier_never_applies_twice(producer_identity: Identity) -> None:
    """A worker that crashes re-reads from its last committed offset with a new verifier; the
    marks kept in the store (not the verifier) stop the second application."""
    records = make_log(producer_identity, [dl("a", offset=i) for i in range(20)])
    store = MemoryStore()
    first = Engine([CountingProjection()], {"counting": store})
    before_crash = first.feed_all(records[:15])
    restarted = Engine([CountingProjection()], {"counting": store})
    after_restart = restarted.feed_all(records)  # everything again, from offset 0
    restarted.finish()
    assert store.get("count/a") == 20
    assert after_restart.duplicates_skipped == len(before_crash.applied)
    # every third count derives an event: 20 // 3 in total, none derived twice
    assert len(before_crash.derived) + len(after_restart.derived) == 20 // 3


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(), n=st.integers(1, 25))
def test_any_interleaving_and_redelivery_gives_the_same_state(producer_identity: Identity, seed: int,
                                                                n: int) -> None:
    rng = random.Random(seed)
    records = make_log(producer_identity, [dl(rng.choice("abc"), offset=i) for i in range(n)])
    reference, _ = replay(records, [CountingProjection()])
    # merge partitions in a random order and redeliver random records (at-least-once)
    queues: dict[tuple[str, int], list[RawRecord]] = {}
    for rec in records:
        queues.setdefault((rec.topic, rec.partition), []).append(rec)
    merged: list[RawRecord] = []
    while queues:
        key = rng.choice(sorted(queues))
        rec = queues[key].pop(0)
        merged.append(rec)
        if rng.random() < 0.2:
            merged.append(rec)
        if not queues[key]:
            del queues[key]
    other, _ = replay(merged, [CountingProjection()])
    assert canonical_json(snapshot(other.stores["counting"])) == canonical_json(
        snapshot(reference.stores["counting"]))


def test_bad_records_become_dead_letters_and_processing_continues(producer_identity: Identity) -> None:
    records = make_log(producer_identity, [dl("a", offset=i) for i in range(4)], partitions=1, seal_every=100)
    garbage = RawRecord("events", 0, 99, b"k", b"\x00garbage")
    engine, outcome = replay([records[0], garbage, *records[1:]], [CountingProjection()])
    assert engine.stores["counting"].get("count/a") == 4
    assert [d.reason for d in outcome.dead_letters] == ["malformed"]
    payload = outcome.dead_letters[0].payload("worker-1", 123)
    assert payload["original_value"] == b"\x00garbage" and payload["source_offset"] == 99
    assert encode_body(DEAD, payload)  # the dead letter itself is a valid event payload


def test_nan_payload_is_refused() -> None:
    class Floats(Projection):
        name: ClassVar[str] = "floats"
        event_types: ClassVar[frozenset[str]] = frozenset({"agents.heartbeat"})

        def apply(self, stores: Stores, ctx: EventContext, payload: dict[str, Any]) -> list[Derived]:
            stores.own.put(payload["agent_id"], payload["health_score"])
            return []

    identity = Identity.generate()
    entry = STORE.for_event_type("agents.heartbeat")
    writer = ChainWriter(identity)
    _, ident = writer.append(IDENTITY_ENTRY, encode_body(IDENTITY_ENTRY, writer.identity_payload()), identity.did,
                             "trust", 0, sign=True)
    hb = {"agent_id": "a1", "health_score": float("nan"), "current_load": 0, "latency_ms": 1.0, "reliability": None,
          "max_concurrency": None, "interval_ms": 1000, "resources": {}}
    _, bad = writer.append(entry, encode_body(entry, hb), "a1", "agents", 0)
    seals = writer.seal()
    records = [RawRecord("trust", 0, 0, b"", ident), RawRecord("agents", 0, 0, b"a1", bad)]
    records += [RawRecord(s.topic, s.partition, 1, s.key, s.value) for s in seals]
    engine, outcome = replay(records, [Floats()])
    assert [d.reason for d in outcome.dead_letters] == ["invalid-payload"]
    assert engine.stores["floats"].get("a1") is None
