"""Events whose seal never comes: given up by log position (``unsealed``), identically live and in replay."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from swarmlog.processors.runtime import PartitionedRuntime
from swarmlog.projections.base import MemoryStore, snapshot
from swarmlog.projections.engine import Engine
from swarmlog.streams.identity import Identity
from swarmlog.streams.settings import get_settings
from swarmlog.streams.verify import RawRecord, Status, Verifier
from tests.support.logs import LogBuilder, interleave
from tests.support.worker_app import CountingProjection

WINDOW = 6


@pytest.fixture(scope="module")
def people() -> tuple[Identity, Identity]:
    return Identity.generate("alice"), Identity.generate("bob")


@pytest.fixture
def window_setting(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The live runtime builds its verifiers from settings, like a worker does."""
    monkeypatch.setenv("SWARMLOG_UNSEALED_WINDOW", str(WINDOW))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def dl(i: int, reason: str = "test") -> dict[str, Any]:
    return dict(reason=reason, source_topic="src", source_partition=0, source_offset=i, original_value=b"v",
                recorded_ms=1)


def decisions(records: Sequence[RawRecord], verifier: Verifier) -> dict[tuple[str, int, int], tuple[str, str]]:
    """position of each event → (status, position of the record whose arrival decided it)."""
    out: dict[tuple[str, int, int], tuple[str, str]] = {}
    for record in records:
        for verdict in verifier.feed(record):
            if verdict.kind == "event" and verdict.status is not Status.PENDING:
                r = verdict.record
                out[(r.topic, r.partition, r.offset)] = (verdict.status.value, record.position)
    return out


def dead_producer_log(alice: Identity, bob: Identity, after: int = 12) -> tuple[LogBuilder, RawRecord]:
    """Alice writes one event and dies before sealing it; bob keeps writing into the same partition."""
    log = LogBuilder()
    log.append(bob, "deadletter.recorded", dl(0), subject="s", topic="events")
    log.seal(bob)
    stuck = log.append(alice, "deadletter.recorded", dl(1), subject="s", topic="events")
    log.append(alice, "deadletter.recorded", dl(2), subject="other", topic="events")  # another partition
    for i in range(after):
        log.append(bob, "deadletter.recorded", dl(10 + i), subject="s", topic="events")
        if i % 4 == 3:
            log.seal(bob)
    log.seal(bob)
    return log, stuck


def test_a_dead_producers_event_is_given_up_after_the_window(people: tuple[Identity, Identity]) -> None:
    alice, bob = people
    log, stuck = dead_producer_log(alice, bob)
    verifier = Verifier(unsealed_window=WINDOW)
    decided = decisions(log.records, verifier)
    status, at = decided[(stuck.topic, stuck.partition, stuck.offset)]
    assert status == "unsealed"
    # decided by the first record of its partition WINDOW offsets later: a position, not a time
    assert at == f"{stuck.topic}[{stuck.partition}]@{stuck.offset + WINDOW}"
    assert verifier.pending_positions() == {
        (r.topic, r.partition, r.offset) for r in log.records if r.key == b"other"}  # its partition stays quiet
    assert sum(1 for s, _ in decided.values() if s == "authenticated") == 1 + 1 + 12 + 1  # 2 ids + bob's events
    assert verifier.problems == []


def test_window_verdicts_do_not_depend_on_interleaving_or_where_the_reader_started(
        people: tuple[Identity, Identity]) -> None:
    alice, bob = people
    log, stuck = dead_producer_log(alice, bob)
    expected = decisions(log.records, Verifier(unsealed_window=WINDOW))
    for seed in range(5):
        assert decisions(interleave(log.records, random.Random(seed)), Verifier(unsealed_window=WINDOW)) == expected
    # a worker that joins mid-log, at the stuck event's offset (its committed offset), decides it the same way
    mid = [r for r in log.records if (r.topic, r.partition) != (stuck.topic, stuck.partition) or
           r.offset >= stuck.offset]
    late = decisions(mid, Verifier(unsealed_window=WINDOW, from_start=False))
    assert late[(stuck.topic, stuck.partition, stuck.offset)] == expected[(stuck.topic, stuck.partition, stuck.offset)]


def test_a_later_seal_that_skips_pending_events_gives_them_up(people: tuple[Identity, Identity]) -> None:
    alice, _ = people
    log = LogBuilder()
    skipped = [log.append(alice, "deadletter.recorded", dl(i), subject="s", topic="events") for i in range(3)]
    log.seal(alice, lost=True)  # the seal of the first batch never reached the broker
    kept = [log.append(alice, "deadletter.recorded", dl(i), subject="s", topic="events") for i in range(3, 5)]
    seal = [r for r in log.seal(alice) if r.topic == "events"]
    verifier = Verifier(unsealed_window=10_000)
    decided = decisions(log.records, verifier)
    assert [decided[(r.topic, r.partition, r.offset)] for r in skipped] == [("unsealed", seal[0].position)] * 3
    assert [decided[(r.topic, r.partition, r.offset)][0] for r in kept] == ["authenticated"] * 2
    assert verifier.pending_count() == 0 and verifier.problems == []


def test_a_seal_after_the_give_up_authenticates_nothing_and_is_reported(people: tuple[Identity, Identity]) -> None:
    alice, bob = people
    log = LogBuilder()
    slow = log.append(alice, "deadletter.recorded", dl(0), subject="s", topic="events")
    for i in range(WINDOW):
        log.append(bob, "deadletter.recorded", dl(i), subject="s", topic="events")
    log.seal(bob)
    log.seal(alice)  # too late: the window passed
    verifier = Verifier(unsealed_window=WINDOW)
    decided = decisions(log.records, verifier)
    assert decided[(slow.topic, slow.partition, slow.offset)][0] == "unsealed"
    assert [p.kind for p in verifier.problems] == ["sealed-after-give-up"]


def test_engine_dead_letters_unsealed_and_the_live_runtime_agrees_with_replay(
        people: tuple[Identity, Identity], window_setting: None) -> None:
    alice, bob = people
    log, stuck = dead_producer_log(alice, bob, after=20)
    replayed = Engine([CountingProjection()])
    outcome = replayed.feed_all(log.records)
    [dead] = outcome.dead_letters
    assert (dead.reason, dead.record) == ("unsealed", stuck)
    assert dead.payload("w", 0)["original_value"] == stuck.value
    # the live runtime: one engine per partition, batches of 5, a record still pending is not acknowledged
    runtime = PartitionedRuntime([CountingProjection()], lambda name: MemoryStore())
    live_dead: list[RawRecord] = []
    still_pending_at: list[bool] = []
    records = interleave(log.records, random.Random(7))
    for start in range(0, len(records), 5):
        batch, pending = runtime.process(records[start:start + 5])
        live_dead += [d.record for d in batch.dead_letters]
        still_pending_at.append((stuck.topic, stuck.partition, stuck.offset) in pending)
    assert live_dead == [stuck]
    assert any(still_pending_at) and not still_pending_at[-1]  # pending for a while, then let go: offsets advance
    assert snapshot(runtime.stores["counting"]) == snapshot(replayed.stores["counting"])
    assert runtime.counters.values.get("unsealed") == 1
