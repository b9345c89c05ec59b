"""The registry's heartbeat commit (``_commit_heartbeat``) against the general ``_commit``.

Why: heartbeats that move fitness (a fresh latency each time, as real agents send) take a
specialised commit that computes the row's buckets once and edits the ``fit/`` views through the
store's fast get/put. It may only be faster: the state must be byte-identical to what ``_commit``
writes, on a benchmark-like jittered log and on adversarial sequences (rows crossing buckets,
leaving and re-entering the views through health, load and max_concurrency, FAILED agents,
deregistered agents, receipts between heartbeats).
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from swarmlog.projections.base import EventContext, InvalidEvent, MemoryStore, Stores, canonical_json, snapshot
from swarmlog.projections.registry import FIT_BUCKETS_PREFIX, FIT_PREFIX, RegistryProjection
from tests.test_registry import check_registry, deregistered, health_changed, heartbeat, receipt, registered


class GeneralCommit(RegistryProjection):
    fast_heartbeat = False


class GeneralFullCommit(RegistryProjection):
    fast_heartbeat = False
    skip_unchanged = False


def _fold(events: list[tuple[str, str, dict[str, Any], int]]) -> list[tuple[MemoryStore, list[str]]]:
    """Each event through the fast path, the general commit, and the general commit without the skip."""
    out = []
    for projection in (RegistryProjection(), GeneralCommit(), GeneralFullCommit()):
        store, reasons = MemoryStore(), []
        stores = Stores(store, {})
        for i, (event_type, subject, payload, ts) in enumerate(events):
            ctx = EventContext(f"id{i}", event_type, "did:key:z", subject, ts, "agents/0", i, "00")
            try:
                projection.apply(stores, ctx, payload)
                reasons.append("ok")
            except InvalidEvent as exc:
                reasons.append(exc.reason)
        out.append((store, reasons))
    return out


def _assert_same(events: list[tuple[str, str, dict[str, Any], int]]) -> MemoryStore:
    (fast, fast_reasons), *others = _fold(events)
    expected = canonical_json(snapshot(fast))
    for store, reasons in others:
        assert reasons == fast_reasons
        assert canonical_json(snapshot(store)) == expected
    check_registry(fast)
    return fast


def test_a_jittered_benchmark_like_log_gives_the_general_commit_s_state() -> None:
    """The replay benchmark's log (steady health, ±5 % latency jitter, varying load), 200 agents over two
    capabilities, plus what the benchmark lacks: health dips below 0.5, load at max_concurrency, a
    shrinking max_concurrency, a FAILED agent, a deregistered one and receipts."""
    agents = [f"agent-{i:03d}" for i in range(200)]
    events: list[tuple[str, str, dict[str, Any], int]] = []
    ts = 1_000
    for n, agent in enumerate(agents):
        caps = ["ml.inference"] if n % 3 else ["db.query", "ml.inference"]
        events.append(("agents.registered", agent, registered(agent, caps, max_concurrency=16, latency=20.0,
                                                              reliability=0.99), ts))
        ts += 1
    for i in range(12_000):
        agent = agents[i % len(agents)]
        rnd = i // len(agents)
        level = 12.5 + (i % 50)
        jitter = ((7 * rnd + i) % 11 - 5) / 100
        health = 0.9 + (i % 10) / 100 if i % 97 else 0.4  # now and then below the routable threshold
        max_concurrency = 32 if i % 89 else 4
        events.append(("agents.heartbeat", agent, heartbeat(agent, health=health, load=i % 17,
                                                            latency=round(level * (1 + jitter) * (1 + i % 7), 3),
                                                            reliability=0.99, max_concurrency=max_concurrency,
                                                            interval_ms=5000), ts))
        if i % 501 == 0:
            events.append(("commands.receipt", "c", receipt(f"c{i}", agent, "ml.inference", duration=5 + i % 300,
                                                            success=i % 2 == 0, finished=ts), ts))
        if i == 3_000:
            events.append(("agents.health_changed", agents[1], health_changed(agents[1], "FAILED", 0.2), ts))
        if i == 5_000:
            events.append(("agents.deregistered", agents[2], deregistered(agents[2]), ts))
        ts += 7
    store = _assert_same(events)
    views = [k for k in store.data if k.startswith(FIT_PREFIX)]
    assert len(views) > 10  # the rows were spread over many buckets, so cross-bucket moves happened
    assert store.get(FIT_BUCKETS_PREFIX + "db.query")


_agents = st.sampled_from(["a0", "a1", "a2", "a3"])
_heartbeat = st.tuples(st.just("heartbeat"), _agents, st.sampled_from([1.0, 0.9, 0.5, 0.49, 0.0]),
                       st.floats(0.0, 2_000.0), st.sampled_from([None, 0.9, 0.0]),
                       st.sampled_from([None, 1, 4, 32]), st.integers(0, 40))
_op = st.one_of(
    _heartbeat, _heartbeat, _heartbeat, _heartbeat, _heartbeat,
    st.tuples(st.just("registered"), _agents, st.sampled_from([["db.query"], ["db.query", "ml.inference"]])),
    st.tuples(st.just("routed"), _agents),
    st.tuples(st.just("receipt"), _agents, st.integers(1, 900), st.booleans(), st.integers(0, 400_000)),
    st.tuples(st.just("health"), _agents, st.sampled_from(["HEALTHY", "FAILED", "DEGRADED"])),
    st.tuples(st.just("deregistered"), _agents),
)


def _event(op: tuple[Any, ...], ts: int) -> tuple[str, str, dict[str, Any], int]:
    kind, agent = op[0], op[1]
    if kind == "heartbeat":
        return ("agents.heartbeat", agent, heartbeat(agent, health=op[2], latency=op[3], reliability=op[4],
                                                     max_concurrency=op[5], load=op[6]), ts)
    if kind == "registered":
        return "agents.registered", agent, registered(agent, op[2]), ts
    if kind == "routed":
        return "commands.routed", "c", {"agent_id": agent, "capability": "db.query"}, ts
    if kind == "receipt":
        return ("commands.receipt", "c", receipt("c", agent, "db.query", duration=op[2], success=op[3],
                                                 finished=op[4]), ts)
    if kind == "health":
        return "agents.health_changed", agent, health_changed(agent, op[2], 0.8), ts
    return "agents.deregistered", agent, deregistered(agent), ts


@settings(max_examples=300, deadline=None)
@given(ops=st.lists(st.tuples(_op, st.integers(0, 60_000)), max_size=60))
def test_any_sequence_gives_the_general_commit_s_state(ops: list[tuple[tuple[Any, ...], int]]) -> None:
    _assert_same([_event(op, ts) for op, ts in ops])
