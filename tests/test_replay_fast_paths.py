"""The replay3 fast paths against the code they shortcut.

Why these tests: the fold path now reads and writes in-memory stores through their dict's own
methods (``projections.access.store_access``), the engine inlines ``base.fold`` and checks payloads
for NaN/∞ in C (``_speedups.all_finite``), and the verifier inlines the usual unsigned event of a
batch. Each is only allowed to be faster: the state, marks, outcomes and verdicts must be the ones
the general path (a store with its own methods, ``base.fold``, ``engine._finite``) gives.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from swarmlog.projections.access import store_access
from swarmlog.projections.base import (
    JSON,
    EventContext,
    InvalidEvent,
    MemoryStore,
    Stores,
    canonical_json,
    fold,
    snapshot,
)
from swarmlog.projections.engine import Engine, Outcome, _finite
from swarmlog.projections.registry import RegistryProjection
from swarmlog.streams import speedups
from swarmlog.streams import verify as verify_module
from swarmlog.streams.envelope import Event
from swarmlog.streams.identity import Identity
from swarmlog.streams.verify import RawRecord, Verifier
from tests.support.logs import LogBuilder
from tests.test_registry import check_registry, deregistered, health_changed, heartbeat, receipt, registered
from tests.test_replay_batch import _outcome_rows, _registry_log

native = speedups.native


class CountingStore(MemoryStore):
    """A store with its own get/put (as a RocksDB table has): ``store_access`` must keep its methods."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def get(self, key: str) -> JSON | None:
        self.calls += 1
        return super().get(key)

    def put(self, key: str, value: JSON) -> None:
        self.calls += 1
        super().put(key, value)


# ---------------------------------------------------------------------------- store access
def test_store_access_uses_the_dict_of_a_plain_memory_store_only() -> None:
    plain = MemoryStore()
    get, put = store_access(plain)
    put("k", [1])
    assert get("k") == [1] and plain.get("k") == [1] and get("missing") is None
    counting = CountingStore()
    get, put = store_access(counting)
    put("k", 2)
    assert get("k") == 2 and counting.calls == 2  # its own methods, not its dict's


@pytest.mark.parametrize("seed", range(3))
def test_registry_state_through_the_fast_store_equals_a_store_with_its_own_methods(alice: Identity, bob: Identity,
                                                                                 seed: int) -> None:
    """The whole log (registrations, heartbeats, refusals, duplicates, garbage) folded into a plain
    MemoryStore (dict fast path) and into a store with its own methods: same outcome, same state and marks."""
    records = _registry_log(alice, bob, seed, beats=400)
    fast = Engine([RegistryProjection()])
    slow_store = CountingStore()
    slow = Engine([RegistryProjection()], {"registry": slow_store})
    got, expected = fast.feed_many(records), slow.feed_many(records)
    got.extend(fast.finish())
    expected.extend(slow.finish())
    assert _outcome_rows(got) == _outcome_rows(expected)
    assert list(fast.counts.items()) == list(slow.counts.items())
    assert {"applied", "unknown-agent", "invalid-payload"} <= set(fast.counts)
    assert slow_store.calls > 0
    assert canonical_json(snapshot(fast.stores["registry"], include_marks=True)) == canonical_json(
        snapshot(slow_store, include_marks=True))


def test_inlined_fold_equals_base_fold_on_redelivery_and_refusal(alice: Identity, bob: Identity) -> None:
    """``Engine._apply`` inlines ``base.fold``: the same state and marks, refused events marked, and a
    redelivery (a restarted reader: new verifier, same store) skipped event by event."""
    records = _registry_log(alice, bob, seed=3, beats=300)
    engine = Engine([RegistryProjection()])
    outcome = engine.feed_many(records)
    reference_store = MemoryStore()
    projection, stores = RegistryProjection(), Stores(reference_store, {})

    def fold_all() -> tuple[int, int]:
        skipped = refused = 0
        for _record, event in outcome.authenticated:
            if event.event_type not in RegistryProjection.event_types:
                continue  # not folded here (the identity documents): no mark either
            payload = event.decode_payload()
            if not _finite(payload):
                continue  # the engine dead-letters these before any fold
            try:
                if fold(projection, stores, event, payload) is None:
                    skipped += 1
            except InvalidEvent:
                refused += 1
        return skipped, refused

    skipped, refused = fold_all()
    assert skipped == outcome.duplicates_skipped and refused > 0  # skipped: released after a later seq's mark
    assert canonical_json(snapshot(engine.stores["registry"], include_marks=True)) == canonical_json(
        snapshot(reference_store, include_marks=True))
    again = Engine([RegistryProjection()], {"registry": engine.stores["registry"]}).feed_many(records)
    skipped_again, _ = fold_all()
    assert again.applied == [] and again.duplicates_skipped == skipped_again > 0


# ---------------------------------------------------------------------------- the finiteness check in C
class Real(float):
    pass


class Mapping(dict[str, Any]):
    pass


_bad = st.sampled_from([math.nan, math.inf, -math.inf])
_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=3), st.binary(max_size=3),
                  st.floats(), _bad, st.floats(allow_nan=True).map(Real))
_json = st.recursive(_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=3), inner, max_size=4),
    st.dictionaries(st.text(max_size=3), inner, max_size=3).map(Mapping)), max_leaves=20)


@settings(max_examples=400, deadline=None)
@given(value=_json)
def test_all_finite_says_what_the_python_walk_says(value: Any) -> None:
    if native is None:
        pytest.skip("C extension not built (no compiler) or SWARMLOG_SPEEDUPS=0")
    assert native.all_finite(value) is _finite(value)


def test_all_finite_on_deep_nesting_raises_recursion_error_as_python_does() -> None:
    if native is None:
        pytest.skip("C extension not built (no compiler) or SWARMLOG_SPEEDUPS=0")
    deep: Any = [1.0]
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(RecursionError):
        native.all_finite(deep)
    assert native.all_finite([[[[math.inf]]]]) is False and native.all_finite({"a": [{"b": 1.5}]}) is True


def test_engine_dead_letters_non_finite_payloads_with_and_without_c(alice: Identity, bob: Identity,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    records = _registry_log(alice, bob, seed=1, beats=400)
    with_c = Engine([RegistryProjection()])
    got = with_c.feed_many(records)
    monkeypatch.setattr(speedups, "native", None)
    without = Engine([RegistryProjection()])
    expected = without.feed_many(records)
    assert _outcome_rows(got) == _outcome_rows(expected)
    assert any(d.detail == "NaN or infinite number" for d in expected.dead_letters)
    assert canonical_json(snapshot(with_c.stores["registry"], include_marks=True)) == canonical_json(
        snapshot(without.stores["registry"], include_marks=True))


# ---------------------------------------------------------------------------- C slot filling
def test_slot_filling_functions_refuse_non_slot_names_alike() -> None:
    """decode_events and slot_objects share one member check: the same refusal, named after the caller."""
    if native is None:
        pytest.skip("C extension not built (no compiler) or SWARMLOG_SPEEDUPS=0")
    plain = type("Plain", (), dict.fromkeys(verify_module._EVENT_SLOTS))  # attributes, but no slots
    with pytest.raises(TypeError, match="slot_objects: every name must be a __slots__ member"):
        native.slot_objects(plain, ("event_id",), (b"x",), 1)
    codec = verify_module.EnvelopeCodec(verify_module.default_store())
    header = verify_module.MAGIC + codec.envelope_fingerprint
    with pytest.raises(TypeError, match="decode_events: every name must be a __slots__ member"):
        native.decode_events(codec.entry.decode_body, header, plain, verify_module._EVENT_SLOTS, [])
    with pytest.raises(AttributeError):
        native.slot_objects(RawRecord, ("topic", "nope"), ("t", 1), 1)
    built = native.slot_objects(Event, ("lane", "seq"), ("agents/0", [1, 2]), 2)
    assert [(e.lane, e.seq) for e in built] == [("agents/0", 1), ("agents/0", 2)]


# ---------------------------------------------------------------------------- the unchanged-heartbeat path
class FullPath(RegistryProjection):
    skip_unchanged = False


_agents = st.sampled_from(["a0", "a1", "a2"])
_heartbeat = st.tuples(st.just("heartbeat"), _agents, st.sampled_from([1.0, 0.0, -0.0]),
                       st.sampled_from([20.0, 0.0, -0.0]), st.sampled_from([None, 0.9, 0.0, -0.0]),
                       st.sampled_from([None, 4]), st.sampled_from([0, 5_000, 60_000]), st.integers(0, 9))
_op = st.one_of(
    _heartbeat, _heartbeat, _heartbeat, _heartbeat,
    st.tuples(st.just("registered"), _agents, st.sampled_from([None, 0.0, 20.0]), st.sampled_from([None, 0.0, 0.9])),
    st.tuples(st.just("routed"), _agents),
    st.tuples(st.just("receipt"), _agents, st.integers(1, 900), st.booleans(), st.integers(0, 400_000)),
    st.tuples(st.just("health"), _agents, st.sampled_from(["HEALTHY", "FAILED", "DEGRADED"])),
    st.tuples(st.just("deregistered"), _agents),
)


def _payload(op: tuple[Any, ...]) -> tuple[str, dict[str, Any]]:
    kind, agent = op[0], op[1]
    if kind == "registered":
        return "agents.registered", registered(agent, ["db.query", "ml.inference"], latency=op[2], reliability=op[3])
    if kind == "heartbeat":
        return "agents.heartbeat", heartbeat(agent, health=op[2], latency=op[3], reliability=op[4],
                                             max_concurrency=op[5], interval_ms=op[6], load=op[7])
    if kind == "routed":
        return "commands.routed", {"agent_id": agent, "capability": "db.query"}
    if kind == "receipt":
        return "commands.receipt", receipt("c", agent, "db.query", duration=op[2], success=op[3], finished=op[4])
    if kind == "health":
        return "agents.health_changed", health_changed(agent, op[2], 0.8)
    return "agents.deregistered", deregistered(agent)


_REG = ("registered", "a0", None, None)


@settings(max_examples=400, deadline=None)
@given(ops=st.lists(st.tuples(_op, st.integers(0, 60_000)), max_size=40))
@example(ops=[(_REG, 0), (("heartbeat", "a0", 1.0, 0.0, None, None, 0, 0), 1),
              (("heartbeat", "a0", 1.0, -0.0, None, None, 0, 0), 2)])  # a signed zero must not be skipped
@example(ops=[(_REG, 0), (("heartbeat", "a0", 1.0, 20.0, None, None, 0, 0), 1), (("receipt", "a0", 5, True, 9), 50_000),
              (("heartbeat", "a0", 1.0, 20.0, None, None, 0, 0), 2)])  # the receipt's later time keeps it live
def test_unchanged_heartbeats_write_what_the_full_commit_writes(ops: list[tuple[tuple[Any, ...], int]]) -> None:
    """Repeated self-reports (the skip), changed ones, signed zeros, receipts and routed commands between
    them, health changes and deregistrations, times out of order: byte-identical state with and without
    the skip."""
    fast_store, full_store = MemoryStore(), MemoryStore()
    fast, full = RegistryProjection(), FullPath()
    for i, (op, ts) in enumerate(ops):
        event_type, payload = _payload(op)
        subject = op[1] if event_type.startswith("agents.") else "c"
        ctx = EventContext(f"id{i}", event_type, "did:key:z", subject, ts, "agents/0", i, "00")
        outcomes = []
        for projection, store in ((fast, fast_store), (full, full_store)):
            try:
                projection.apply(Stores(store, {}), ctx, payload)
                outcomes.append("ok")
            except InvalidEvent as exc:
                outcomes.append(exc.reason)
        assert outcomes[0] == outcomes[1]
    assert canonical_json(snapshot(fast_store)) == canonical_json(snapshot(full_store))
    check_registry(fast_store)


# ---------------------------------------------------------------------------- payload decoding in the engine
@pytest.mark.parametrize("damage", ["trailing", "truncated", "fine"])
def test_damaged_payloads_are_dead_lettered_with_the_decoder_s_reason(alice: Identity, bob: Identity,
                                                                     damage: str) -> None:
    """The engine calls the compiled body decoder itself (no wrapper): a body with trailing bytes or
    cut short is still refused as invalid-payload, with the reason ``SchemaStore.decode_body`` gives."""
    records = _registry_log(alice, bob, seed=0, beats=40)
    outcome = Engine([RegistryProjection()]).feed_many(records)
    record, event = next((r, e) for r, e in outcome.authenticated if e.event_type == "agents.heartbeat")
    body = event.payload_bytes
    damaged = {"trailing": body + b"\x00\x00", "truncated": body[:3], "fine": body}[damage]
    engine = Engine([RegistryProjection()])
    got = Outcome()
    engine._apply(record, dataclasses.replace(event, payload_bytes=damaged), got)
    if damage == "fine":
        assert got.dead_letters == [] or got.dead_letters[0].reason == "unknown-agent"
        return
    [letter] = got.dead_letters
    assert letter.reason == "invalid-payload" and engine.counts == {"invalid-payload": 1}
    expected = ("2 trailing bytes after swarmlog.agents.AgentHeartbeat body" if damage == "trailing"
                else "undecodable swarmlog.agents.AgentHeartbeat body: ")
    assert letter.detail.startswith(expected)


# ---------------------------------------------------------------------------- chain links at seal time
@pytest.mark.parametrize("use_c", [True, False])
@pytest.mark.parametrize("broken_seq", [2, 4])  # inside the first seal; the first event of the second seal
def test_a_broken_prev_hash_is_reported_once_and_the_event_still_authenticated(
        alice: Identity, monkeypatch: pytest.MonkeyPatch, use_c: bool, broken_seq: int) -> None:
    """``_apply_seal`` checks each accepted event's chain link (fast path and general branch share it):
    one chain-broken problem at the event whose prev_hash is not its predecessor's hash, per record or batch."""
    if use_c and native is None:
        pytest.skip("C extension not built (no compiler) or SWARMLOG_SPEEDUPS=0")
    if not use_c:
        monkeypatch.setattr(speedups, "native", None)
    log = LogBuilder(partitions=1)
    for i in range(6):
        if i == broken_seq:
            lane = log.writer(alice)._lanes[("agents", 0)]
            lane.last_hash = b"\x07" * 32  # the producer chains this event to a hash that is not its predecessor's
        log.append(alice, "agents.registered", registered(f"a{i}", ["db.query"]), timestamp_ms=i + 1)
        if i == 3:
            log.seal(alice)
    log.seal(alice)
    one, many = Verifier(), Verifier()
    by_record = [v for r in log.records for v in one.feed(r)]
    batched = many.feed_many(log.records)
    for verifier, verdicts in ((one, by_record), (many, batched)):
        assert [(p.kind, p.seq) for p in verifier.problems] == [("chain-broken", broken_seq)]
        assert sum(v.ok and v.kind == "event" for v in verdicts) == 7  # identity document + 6 events
