"""The batch replay path (``Verifier.feed_many``, ``Engine.feed_many``, ``_speedups.decode_events``)
against the per-record path it speeds up, on real signed logs with every kind of bad record.

Why these tests: replay, audit and the live workers must decide exactly the same things; the
batch path is only allowed to be faster. Each test compares the two paths on the same log —
verdicts (status, record, event, reason, kind) in order, counters in order, problems, what is
still pending, folded state byte for byte — with and without the C extension.
"""

from __future__ import annotations

import gc
import math
import random
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swarmlog.projections.base import EventContext, canonical_json, snapshot
from swarmlog.projections.engine import Engine, Outcome, _finite, _float_checker, _has_floats
from swarmlog.projections.registry import RegistryProjection
from swarmlog.streams import speedups
from swarmlog.streams import verify as verify_module
from swarmlog.streams.codec import CodecError, default_store
from swarmlog.streams.envelope import EnvelopeCodec, Event
from swarmlog.streams.identity import Identity
from swarmlog.streams.reader import records_of
from swarmlog.streams.verify import RawRecord, Verdict, Verifier, gc_paused
from tests.support.logs import LogBuilder
from tests.test_registry import check_registry, heartbeat, registered
from tests.test_schemas import CURRENT_NAMES, _entry_strategy

STORE = default_store()
CODEC = EnvelopeCodec(STORE)
native = speedups.native


@pytest.fixture(params=["c", "python"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Run the test with the C extension in use (when built) and with the pure-Python path."""
    if request.param == "c" and native is None:
        pytest.skip("C extension not built (no compiler) or SWARMLOG_SPEEDUPS=0")
    if request.param == "python":
        monkeypatch.setattr(speedups, "native", None)
    yield request.param


def _registry_log(alice: Identity, bob: Identity, seed: int, agents: int = 12, beats: int = 300) -> list[RawRecord]:
    """Registrations and heartbeats by two producers, sealed in uneven batches, with bad input mixed in:
    unknown agents, out-of-range values, NaN, inline-signed events, tampered, duplicated, reordered,
    truncated and garbage records, and a lost seal."""
    rng = random.Random(seed)
    log = LogBuilder(partitions=3)
    names = [f"agent-{i:02d}" for i in range(agents)]
    caps = ["db.query", "ml.inference", "web.fetch"]
    for i, name in enumerate(names):
        log.append(alice, "agents.registered", registered(name, rng.sample(caps, 1 + i % 3), max_concurrency=1 + i % 4,
                                                          latency=10.0 * (i % 5)), timestamp_ms=1_000 + i)
    log.seal(alice)
    for i in range(beats):
        who = bob if rng.random() < 0.2 else alice
        name = rng.choice(names) if rng.random() > 0.03 else "nobody"
        health = rng.choice([1.0, 0.97, 0.96, 0.4, 0.9]) if rng.random() > 0.02 else rng.choice([1.5, float("nan")])
        log.append(who, "agents.heartbeat", heartbeat(name, health=health, load=rng.randrange(5),
                                                      latency=50.0 + rng.random() * (3 if rng.random() < 0.8 else 300),
                                                      interval_ms=rng.choice([0, 5_000])),
                   timestamp_ms=2_000 + i, sign=rng.random() < 0.03)
        if rng.random() < 0.05:
            log.seal(who, lost=rng.random() < 0.1)
    log.seal(alice)
    log.seal(bob)
    records = list(log.records)
    # bad records: tamper, duplicate, reorder within a partition, truncate, garbage
    for _ in range(6):
        i = rng.randrange(len(records))
        r = records[i]
        if rng.random() < 0.5 and len(r.value) > 40:
            value = bytearray(r.value)
            value[-5] ^= 0x01
            records[i] = RawRecord(r.topic, r.partition, r.offset, r.key, bytes(value), r.timestamp_ms)
        else:
            records.insert(rng.randrange(i, len(records) + 1), r)
    for _ in range(4):
        i = rng.randrange(len(records) - 1)
        if records[i].topic == records[i + 1].topic and records[i].partition == records[i + 1].partition:
            records[i], records[i + 1] = records[i + 1], records[i]
    for value in (b"", b"\xc3\x01", records[3].value[:-7], b"\xc3\x01" + bytes(rng.randrange(256) for _ in range(60))):
        records.insert(rng.randrange(len(records)), RawRecord("agents", 0, 10_000 + len(records), None, value, 0))
    return records


def _verdict_rows(verdicts: list[Verdict]) -> list[tuple[Any, ...]]:
    return [(v.status, v.record, v.event, v.reason, v.kind) for v in verdicts]


def _chunks(records: list[RawRecord], rng: random.Random) -> Iterator[list[RawRecord]]:
    i = 0
    while i < len(records):
        n = rng.choice([1, 2, 7, 64, 1000])
        yield records[i:i + n]
        i += n


# ---------------------------------------------------------------------------- C envelope decoder
def test_decode_events_builds_what_the_envelope_codec_decodes(alice: Identity, bob: Identity) -> None:
    if native is None:
        pytest.skip("C extension not built (no compiler) or SWARMLOG_SPEEDUPS=0")
    records = _registry_log(alice, bob, seed=1)
    values = [r.value for r in records]
    decoded = native.decode_events(CODEC.entry.decode_body, verify_module.MAGIC + CODEC.envelope_fingerprint, Event,
                                   verify_module._EVENT_SLOTS, values)
    built = 0
    for value, event in zip(values, decoded, strict=True):
        try:
            reference: Event | None = CODEC.decode(value)
        except CodecError:
            reference = None
        if event is not None:
            built += 1
            assert event == reference  # every field, the hash and the raw value
        else:  # declined: a seal, an inline-signed envelope, or something Python refuses
            assert reference is None or reference.auth is not None
    assert built > 300  # the unsigned events did take the C path


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(0, 400), flip=st.integers(0, 400), junk=st.binary(max_size=8))
def test_decode_events_on_damaged_envelopes_matches_python_or_declines(alice: Identity, cut: int, flip: int,
                                                                      junk: bytes) -> None:
    if native is None:
        pytest.skip("C extension not built (no compiler) or SWARMLOG_SPEEDUPS=0")
    log = LogBuilder(partitions=1)
    value = log.append(alice, "agents.heartbeat", heartbeat("a", latency=12.5)).value
    damaged = bytearray(value[:cut] + junk + value[cut:])
    if flip < len(damaged):
        damaged[flip] ^= 0x80
    for candidate in (bytes(damaged), value[:cut], value + junk):
        [event] = native.decode_events(CODEC.entry.decode_body, verify_module.MAGIC + CODEC.envelope_fingerprint,
                                       Event, verify_module._EVENT_SLOTS, [candidate])
        try:
            reference: Event | None = CODEC.decode(candidate)
        except CodecError:
            reference = None
        assert event is None or event == reference


def test_decode_events_refuses_a_class_or_decoder_it_cannot_fill() -> None:
    if native is None:
        pytest.skip("C extension not built (no compiler) or SWARMLOG_SPEEDUPS=0")
    header = verify_module.MAGIC + CODEC.envelope_fingerprint
    with pytest.raises(ValueError):
        native.decode_events(CODEC.entry.decode_body, header, Event, verify_module._EVENT_SLOTS[:-1], [])
    with pytest.raises(AttributeError):
        native.decode_events(CODEC.entry.decode_body, header, dict, verify_module._EVENT_SLOTS, [])
    plain = type("Plain", (), dict.fromkeys(verify_module._EVENT_SLOTS))  # attributes, but no slots
    with pytest.raises(TypeError):
        native.decode_events(CODEC.entry.decode_body, header, plain, verify_module._EVENT_SLOTS, [])
    with pytest.raises(ValueError):  # the seal's decoder: another record
        native.decode_events(CODEC.seal_entry.decode_body, header, Event, verify_module._EVENT_SLOTS, [])


# ---------------------------------------------------------------------------- verifier
@pytest.mark.parametrize("seed", range(6))
def test_feed_many_decides_what_feed_decides(alice: Identity, bob: Identity, path: str, seed: int) -> None:
    records = _registry_log(alice, bob, seed)
    window = 40 if seed % 2 else 10_000  # small window: the unsealed give-up rule fires too
    one = Verifier(unsealed_window=window)
    expected = [v for r in records for v in one.feed(r)]
    many = Verifier(unsealed_window=window)
    assert (many._decode_events is not None) == (path == "c")
    got: list[Verdict] = []
    for chunk in _chunks(records, random.Random(seed)):
        got += many.feed_many(chunk)
    assert _verdict_rows(got) == _verdict_rows(expected)
    assert list(many.counts.items()) == list(one.counts.items())
    assert many.problems == one.problems
    assert many.pending_positions() == one.pending_positions()
    assert _verdict_rows(many.finish()) == _verdict_rows(one.finish())
    assert list(many.counts.items()) == list(one.counts.items())
    statuses = {v.status for v in expected}
    assert len(statuses) >= 4  # the log does exercise several verdicts, not only the happy path


# ---------------------------------------------------------------------------- engine
def _outcome_rows(outcome: Outcome) -> tuple[Any, ...]:
    return (outcome.applied, outcome.derived, outcome.dead_letters, outcome.duplicates_skipped,
            outcome.authenticated)


@pytest.mark.parametrize("seed", range(4))
def test_engine_feed_many_folds_what_feed_all_folds(alice: Identity, bob: Identity, path: str, seed: int) -> None:
    records = _registry_log(alice, bob, seed, beats=500)
    one = Engine([RegistryProjection()])
    expected = one.feed_all(records)
    expected.extend(one.finish())
    many = Engine([RegistryProjection()])
    got = many.feed_many(iter(records), batch=97)
    got.extend(many.finish())
    assert _outcome_rows(got) == _outcome_rows(expected)
    assert list(many.counts.items()) == list(one.counts.items())
    assert {"applied", "unknown-agent", "invalid-payload"} <= set(one.counts)
    mine, theirs = many.stores["registry"], one.stores["registry"]
    assert canonical_json(snapshot(mine, include_marks=True)) == canonical_json(snapshot(theirs, include_marks=True))
    check_registry(mine)


def test_feed_many_of_a_list_in_one_batch_equals_record_by_record(alice: Identity, bob: Identity) -> None:
    records = _registry_log(alice, bob, seed=9)
    one = Engine([RegistryProjection()])
    expected = one.feed_all(records)
    many = Engine([RegistryProjection()])
    assert _outcome_rows(many.feed_many(records)) == _outcome_rows(expected)
    assert many.stores["registry"].data == one.stores["registry"].data  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------- registry heartbeat path
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(beats=st.lists(st.tuples(st.integers(0, 5), st.sampled_from([1.0, 0.995, 0.99, 0.6, 0.3]),
                                st.integers(0, 4), st.floats(0.0, 400.0)), max_size=60))
def test_heartbeats_keep_the_fitness_view_equal_to_the_records(alice: Identity,
                                                              beats: list[tuple[int, float, int, float]]) -> None:
    """Rows moving inside a bucket, across buckets, out of the view (unhealthy, full) and back in."""
    log = LogBuilder(partitions=2)
    for i in range(6):
        log.append(alice, "agents.registered",
                   registered(f"a{i}", ["db.query", "ml.inference"][: 1 + i % 2], max_concurrency=1 + i % 3),
                   timestamp_ms=10 + i)
    for n, (i, health, load, latency) in enumerate(beats):
        log.append(alice, "agents.heartbeat", heartbeat(f"a{i}", health=health, load=load, latency=latency),
                   timestamp_ms=100 + n)
    log.seal(alice)
    engine = Engine([RegistryProjection()])
    engine.feed_many(log.records)
    assert engine.counts.get("applied") == 6 + len(beats)
    check_registry(engine.stores["registry"])


# ---------------------------------------------------------------------------- contexts and records
def test_event_contexts_are_event_context_of(alice: Identity, bob: Identity) -> None:
    if native is None:
        pytest.skip("C extension not built (no compiler) or SWARMLOG_SPEEDUPS=0")
    verifier = Verifier()
    events = [v.event for v in verifier.feed_many(_registry_log(alice, bob, seed=3)) if v.ok and v.event is not None]
    built = native.event_contexts(EventContext, events)
    assert built is not None and built == [EventContext.of(e) for e in events]
    assert len({c.event_id for c in built}) == len(built)
    odd = Event(**{**{f: getattr(events[0], f) for f in verify_module._EVENT_SLOTS}, "event_id": b"short"})
    assert native.event_contexts(EventContext, [events[0], odd]) is None  # Python decides (and raises)
    with pytest.raises(ValueError):
        EventContext.of(odd)


class _Message:
    """The confluent-kafka Message accessors ``records_of`` calls (Message has no public constructor)."""

    def __init__(self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None) -> None:
        self._row = (topic, partition, offset, key, value)

    def topic(self) -> str:
        return self._row[0]  # type: ignore[return-value]

    def partition(self) -> int:
        return self._row[1]  # type: ignore[return-value]

    def offset(self) -> int:
        return self._row[2]  # type: ignore[return-value]

    def key(self) -> bytes | None:
        return self._row[3]  # type: ignore[return-value]

    def value(self) -> bytes | None:
        return self._row[4]  # type: ignore[return-value]

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_700_000_000_000 + self._row[2])  # type: ignore[operator]


@pytest.mark.parametrize("with_none", [False, True])
def test_records_of_builds_the_same_raw_records_with_and_without_c(path: str, with_none: bool) -> None:
    messages = [_Message("t", i % 3, i, f"k{i}".encode() if i % 5 else None,
                         None if with_none and i % 7 == 0 else f"v{i}".encode()) for i in range(50)]
    got = records_of(messages)  # type: ignore[arg-type]
    assert got == [RawRecord(m.topic(), m.partition(), m.offset(), m.key(), m.value() or b"", m.timestamp()[1])
                   for m in messages]
    assert all(type(r) is RawRecord for r in got)


def test_gc_paused_switches_the_collector_back_only_if_it_switched_it_off() -> None:
    assert gc.isenabled()
    with pytest.raises(RuntimeError), gc_paused():
        assert not gc.isenabled()
        raise RuntimeError("a failing batch")
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # someone else's pause stays
    finally:
        gc.enable()


# ---------------------------------------------------------------------------- the finiteness check
@pytest.mark.parametrize("full_name", CURRENT_NAMES)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_float_check_of_every_shipped_schema_decides_as_the_generic_walk(full_name: str,
                                                                          data: st.DataObject) -> None:
    """The per-schema check (scalars, map/array of numbers, nested walk) says what ``_finite`` says,
    also with NaN and infinities planted in each field the schema lets hold a float."""
    entry = STORE.current(full_name)
    check = _float_checker(entry.parsed, STORE.named_types)  # builds for every schema shape
    record = data.draw(_entry_strategy(full_name))[1]
    assert (check(record) if check is not None else True) == _finite(record)
    if check is None:
        return
    bad = data.draw(st.sampled_from([math.nan, math.inf, -math.inf]))
    float_fields = {f["name"] for f in entry.parsed["fields"] if _has_floats(f["type"], STORE.named_types)}
    for name, value in record.items():
        if name not in float_fields:
            continue  # the schema cannot put a float there; the check rightly does not look
        poisoned = dict(record)
        if isinstance(value, float):
            poisoned[name] = bad
        elif isinstance(value, dict) and value:
            poisoned[name] = {**value, next(iter(value)): bad}
        elif isinstance(value, list) and value:
            poisoned[name] = [bad, *value[1:]]
        else:
            continue
        assert check(poisoned) == _finite(poisoned), name
