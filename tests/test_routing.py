"""Routing projection: every strategy's answer, failures with the right reason, receipts, audit, idempotence.

Uses the harness of ``test_registry.py`` (real envelopes, ``base.fold``, the routed →
registry feedback loop).
"""

from __future__ import annotations

import json
import random
import zlib
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from swarmlog.projections.base import Derived, InvalidEvent, canonical_json, snapshot
from swarmlog.projections.engine import replay
from swarmlog.projections.registry import (
    RegistryProjection,
    capacity_factor,
    find_by_capability,
    fitness,
    latency_factor,
)
from swarmlog.projections.routing import (
    RoutingProjection,
    applied_strategy,
    audit_routed,
    candidate_from_inputs,
    choose,
    resolve,
    route_inputs,
)
from swarmlog.streams.chain import ChainWriter, OutRecord
from swarmlog.streams.codec import default_store, encode_body
from swarmlog.streams.identity import Identity
from swarmlog.streams.verify import RawRecord
from tests.support.logs import to_raw
from tests.test_registry import (
    AGENTS,
    CAPS,
    CODEC,
    Delivery,
    Fabric,
    check_registry,
    frozen,
    health_changed,
    identity,
    play_agents_op,
    receipt,
    refusal,
    registered,
    requested,
    schedule,
)

STORE = default_store()


def only(derived: list[Derived]) -> Derived:
    assert len(derived) == 1, derived
    return derived[0]


def routed_to(derived: list[Derived]) -> str:
    d = only(derived)
    assert d.event_type == "commands.routed", d.payload
    return str(d.payload["agent_id"])


def failure(derived: list[Derived]) -> dict[str, Any]:
    d = only(derived)
    assert d.event_type == "commands.route_failed", d.payload
    return d.payload


def four_agents() -> Fabric:
    """a1 best fit, a2 fastest, a3 most reliable, a4 least loaded (numbers in the test below)."""
    f = Fabric()
    for agent_id, health, latency, reliability, load in [
        ("a1", 1.0, 50.0, 0.95, 1),
        ("a2", 0.7, 10.0, 0.70, 2),
        ("a3", 0.8, 300.0, 0.99, 2),
        ("a4", 0.6, 400.0, 0.60, 0),
    ]:
        f.register(agent_id, ["db.query"], max_concurrency=4)
        f.occupy(agent_id, load)  # load = commands routed and not receipted
        f.heartbeat(agent_id, health=health, latency=latency, reliability=reliability, load=load)
    return f


# ---------------------------------------------------------------------------- strategies
@pytest.mark.parametrize("strategy,winner,score", [
    ("BEST_FIT", "a1", 0.3 * 1.0 + 0.3 / 1.5 + 0.2 * 0.95 + 0.2 * 0.75),
    ("MIN_LATENCY", "a2", 1 / 1.1),
    ("MAX_RELIABILITY", "a3", 0.99),
    ("LEAST_LOADED", "a4", 1.0),
    ("ROUND_ROBIN", "a1", 0.3 * 1.0 + 0.3 / 1.5 + 0.2 * 0.95 + 0.2 * 0.75),  # cursor 0 → first by id
    # predicted = latency × (1 + load/max) ÷ reliability: a2 10 × 1.5 / 0.7 ≈ 21 ms beats a1 50 × 1.25 / 0.95 ≈ 66
    ("PREDICTED", "a2", 1 / (1 + 10 * 1.5 / 0.7 / 100)),
])
def test_each_strategy_picks_its_known_answer(strategy: str, winner: str, score: float) -> None:
    f = four_agents()
    chosen = f.agent(winner)  # as the router saw it, before its own routed event came back
    d = only(f.request("c1", "db.query", strategy))
    assert d.event_type == "commands.routed"
    assert d.subject == "c1"
    p = d.payload
    assert (p["agent_id"], p["strategy"], p["candidates"], p["eligible"]) == (winner, strategy, 4, 4)
    assert p["score"] == pytest.approx(score)
    assert p["inputs"]["fitness"] == fitness(chosen)
    assert p["inputs"]["latency_factor"] == latency_factor(chosen["latency_ms"])
    assert len(p["alternatives"]) == 3
    assert winner not in [a["agent_id"] for a in p["alternatives"]]
    if strategy != "ROUND_ROBIN":
        scores = [a["score"] for a in p["alternatives"]]
        assert scores == sorted(scores, reverse=True) and scores[0] <= p["score"]
    cmd = f.routing_store.get("cmd/c1")  # the folded routed event, not the derivation, set the decision
    assert (cmd["status"], cmd["agent"], cmd["strategy"], cmd["score"]) == ("ROUTED", winner, strategy, p["score"])
    assert f.agent(winner)["load"] == chosen["load"] + 1  # after the routed event came back


def test_ties_fall_to_fitness_then_agent_id() -> None:
    f = Fabric()
    for agent_id in ("c", "b", "a"):
        f.register(agent_id, ["db.query"])
        f.heartbeat(agent_id, latency=20.0)
    f.heartbeat("b", latency=20.0, health=0.9)  # same latency, lower fitness
    assert routed_to(f.request("c1", "db.query", "MIN_LATENCY", feedback=False)) == "a"
    assert routed_to(f.request("c2", "db.query", "LEAST_LOADED", feedback=False)) == "a"
    assert routed_to(f.request("c3", "db.query", "BEST_FIT", feedback=False)) == "a"
    f.heartbeat("a", latency=20.0, health=0.9)
    assert routed_to(f.request("c4", "db.query", "MIN_LATENCY", feedback=False)) == "c"


def test_round_robin_cycles_over_the_sorted_candidates_per_lane() -> None:
    """One cursor per capability and source lane: c0-c3 hash to commands/1, c4-c6 to commands/0
    (crc32 % 2), so each lane rotates on its own."""
    runs = []
    for _ in range(2):
        f = Fabric()
        for agent_id in ("c", "a", "b"):
            f.register(agent_id, ["db.query", "fs.read"], max_concurrency=100)
        picks = [routed_to(f.request(f"c{i}", "db.query", "ROUND_ROBIN")) for i in range(7)]
        assert (f.routing_store.get("rr/db.query/commands/1"), f.routing_store.get("rr/db.query/commands/0")) == (4, 3)
        assert [f.routing_store.get(f"cmd/c{i}")["cursor"] for i in range(7)] == [0, 1, 2, 3, 0, 1, 2]
        assert routed_to(f.request("other", "fs.read", "ROUND_ROBIN")) == "a"  # cursors are per capability
        assert routed_to(f.request("c9", "db.query", "ROUND_ROBIN", target="c")) == "c"  # pinned: no move
        assert f.routing_store.get("rr/db.query/commands/1") == 4
        runs.append(picks)
    assert runs[0] == runs[1] == ["a", "b", "c", "a", "a", "b", "c"]


def test_least_loaded_spreads_load_then_over_capacity() -> None:
    """Spec §8.1: the broker picks the least loaded agent and the load it adds is seen by the next pick."""
    f = Fabric()
    for agent_id in ("a", "b", "c"):
        f.register(agent_id, ["db.query"], max_concurrency=2)
    picks = [routed_to(f.request(f"c{i}", "db.query", "LEAST_LOADED")) for i in range(6)]
    assert sorted(picks) == ["a", "a", "b", "b", "c", "c"]
    assert picks[:3] == ["a", "b", "c"]
    p = failure(f.request("c6", "db.query", "LEAST_LOADED"))
    assert (p["reason"], p["candidates"], p["retry_after_ms"]) == ("OVER_CAPACITY", 3, 1_000)
    f.receipt("c1", "b", "db.query")
    assert routed_to(f.request("c7", "db.query", "LEAST_LOADED")) == "b"
    check_registry(f.registry_store)


@pytest.mark.parametrize("requested", ["TRUST_WEIGHTED", "MIN_COST"])
def test_unimplemented_strategies_fall_back_to_best_fit(requested: str) -> None:
    f = four_agents()
    d = only(f.request("c1", "db.query", requested))
    assert (d.payload["agent_id"], d.payload["strategy"]) == ("a1", "BEST_FIT")
    cmd = f.routing_store.get("cmd/c1")
    assert (cmd["requested_strategy"], cmd["strategy"]) == (requested, "BEST_FIT")
    assert applied_strategy(requested) == "BEST_FIT"


# ---------------------------------------------------------------------------- failures
def test_no_capable_agent_and_expired_agents() -> None:
    f = Fabric(ttl_ms=30_000)
    p = failure(f.request("c1", "db.query"))
    assert (p["reason"], p["candidates"], p["strategy"]) == ("NO_CAPABLE_AGENT", 0, "BEST_FIT")
    f.register("a", ["db.query"])
    f.tick(31_000)
    p = failure(f.request("c2", "db.query"))
    assert p["reason"] == "NO_CAPABLE_AGENT"
    assert "1 registered" in p["detail"]
    f.heartbeat("a")
    assert routed_to(f.request("c3", "db.query")) == "a"
    assert f.routing_store.get("cmd/c1")["status"] == "ROUTE_FAILED"


def test_unhealthy_and_failed_agents_give_all_unhealthy() -> None:
    f = Fabric()
    f.register("a", ["db.query"])
    f.register("b", ["db.query"])
    f.heartbeat("a", health=0.3)
    f.emit("monitor", "agents.health_changed", health_changed("b", "FAILED", 0.9))
    p = failure(f.request("c1", "db.query"))
    assert (p["reason"], p["candidates"], p["retry_after_ms"]) == ("ALL_UNHEALTHY", 2, 10_000)
    f.emit("monitor", "agents.health_changed", health_changed("b", "DEGRADED", 0.6))
    assert routed_to(f.request("c2", "db.query")) == "b"  # DEGRADED stays routable


def test_unhealthy_plus_full_gives_over_capacity() -> None:
    f = Fabric()
    f.register("a", ["db.query"], max_concurrency=1)
    f.register("b", ["db.query"])
    f.occupy("a", 1)
    f.heartbeat("b", health=0.1)
    assert failure(f.request("c1", "db.query"))["reason"] == "OVER_CAPACITY"


def test_request_level_refusals() -> None:
    f = four_agents()
    p = failure(f.request("c1", "db.query", min_trust=0.8))
    assert p["reason"] == "BELOW_MIN_TRUST"  # fails closed: no trust projection here
    assert routed_to(f.request("c2", "db.query", min_trust=0.0)) == "a1"
    assert failure(f.request("c3", "db.query", deadline_ms=f.now - 1))["reason"] == "DEADLINE_PASSED"
    assert routed_to(f.request("c4", "db.query", deadline_ms=f.now + 60_000)) == "a1"
    assert failure(f.request("c5", "db.query", encrypted=True))["reason"] == "OTHER"
    before = frozen(f.routing_store, marks=False)
    for i, bad in enumerate((1.5, float("nan"))):
        with pytest.raises(InvalidEvent) as info:
            f.request(f"c-bad-{i}", "db.query", min_trust=bad)
        assert info.value.reason == "invalid-payload"
    assert frozen(f.routing_store, marks=False) == before


def test_target_agent_pins_the_route_or_fails() -> None:
    f = four_agents()
    f.register("x", ["fs.read"])
    d = only(f.request("c1", "db.query", "BEST_FIT", target="a4"))
    assert (d.payload["agent_id"], d.payload["candidates"], d.payload["eligible"]) == ("a4", 1, 1)
    assert d.payload["score"] == d.payload["inputs"]["fitness"]  # BEST_FIT scores by fitness
    assert d.payload["inputs"]["current_load"] == 0 and f.agent("a4")["load"] == 1
    assert d.payload["alternatives"] == []
    for target, why in [("x", "does not serve"), ("ghost", "not registered")]:
        p = failure(f.request(f"c-{target}", "db.query", target=target))
        assert p["reason"] == "TARGET_UNAVAILABLE" and why in p["detail"]
    f.occupy("a2", 2)  # 2 + 2 = max_concurrency
    p = failure(f.request("c-full", "db.query", target="a2"))
    assert (p["reason"], p["retry_after_ms"]) == ("TARGET_UNAVAILABLE", 1_000)
    assert "OVER_CAPACITY" in p["detail"]
    f.emit("a3", "agents.deregistered", {"agent_id": "a3", "reason": "SHUTDOWN"})
    assert "DEREGISTERED" in failure(f.request("c-gone", "db.query", target="a3"))["detail"]
    assert routed_to(f.request("c-enc", "db.query", target="a1", encrypted=True)) == "a1"


def test_duplicate_command_is_refused_without_writing() -> None:
    f = four_agents()
    f.request("c1", "db.query")
    before_routing, before_registry = frozen(f.routing_store, marks=False), frozen(f.registry_store)
    with pytest.raises(InvalidEvent) as info:
        f.request("c1", "db.query", "MIN_LATENCY")
    assert info.value.reason == "duplicate-command"
    assert frozen(f.routing_store, marks=False) == before_routing
    assert frozen(f.registry_store) == before_registry


# ---------------------------------------------------------------------------- receipts
def test_receipts_complete_or_fail_the_command() -> None:
    f = four_agents()
    agent = routed_to(f.request("c1", "db.query"))
    f.receipt("c1", agent, "db.query", duration=25)
    cmd = f.routing_store.get("cmd/c1")
    assert (cmd["status"], cmd["duration_ms"], cmd["success"]) == ("COMPLETED", 25, True)
    agent = routed_to(f.request("c2", "db.query"))
    f.receipt("c2", agent, "db.query", success=False)
    assert f.routing_store.get("cmd/c2")["status"] == "FAILED"
    agent = routed_to(f.request("c3", "db.query"))
    f.receipt("c3", agent, "db.query", timed_out=True)
    assert f.routing_store.get("cmd/c3")["status"] == "FAILED"


def test_mismatched_receipts_are_kept_but_do_not_complete_the_command() -> None:
    """A receipt lives on another topic than its command: whether the decision was folded first
    depends on the interleaving, so the receipt is never refused for what the decision says; it is
    stored and ``problem`` names the mismatch."""
    f = four_agents()
    agent = routed_to(f.request("c1", "db.query"))
    failure(f.request("c-failed", "db.query", min_trust=0.5))
    f.receipt("c1", "a4", "db.query")
    cmd = f.routing_store.get("cmd/c1")
    assert (cmd["status"], cmd["problem"]) == ("ROUTED", f"agent-mismatch: routed to {agent}, receipts from a4")
    f.receipt("c-failed", agent, "db.query")
    cmd = f.routing_store.get("cmd/c-failed")
    assert cmd["status"] == "ROUTE_FAILED" and cmd["problem"].startswith("not-routed")
    f.receipt("c1", agent, "db.query", duration=25)  # the routed agent's own receipt still completes it
    cmd = f.routing_store.get("cmd/c1")
    assert (cmd["status"], cmd["duration_ms"], sorted(cmd["receipts"])) == ("COMPLETED", 25, sorted(["a4", agent]))
    agent2 = routed_to(f.request("c2", "db.query"))
    f.receipt("c2", agent2, "fs.read")
    assert f.routing_store.get("cmd/c2")["problem"].startswith("capability-mismatch")
    assert f.routing_store.get("cmd/c2")["status"] == "ROUTED"


def test_receipt_refusals_decided_within_the_receipts_partition() -> None:
    f = four_agents()
    agent = routed_to(f.request("c1", "db.query"))
    f.receipt("c1", agent, "db.query")
    for payload, reason in [(receipt("c1", agent, "db.query"), "duplicate-receipt"),
                            (receipt("c1", agent, "db.query", duration=-1), "invalid-payload")]:
        before = frozen(f.routing_store, marks=False)
        assert refusal(f.emit(agent, "commands.receipt", payload), "routing").reason == reason
        assert frozen(f.routing_store, marks=False) == before


def test_a_receipt_before_its_request_and_decision_resolves_when_they_arrive() -> None:
    f = four_agents()
    early = f.make("a1", "commands.receipt", receipt("c1", "a1", "db.query", duration=7))
    assert f.record(early)["routing"] == []
    assert f.routing_store.get("cmd/c1")["status"] == "RECEIPTED"
    d = only(f.request("c1", "db.query", feedback=False))
    assert f.routing_store.get("cmd/c1")["status"] == "REQUESTED"  # the derivation stores no decision
    f.record(f.make("router", d.event_type, d.payload))  # the worker's routed event comes back
    cmd = f.routing_store.get("cmd/c1")
    assert (cmd["status"], cmd["agent"], cmd["duration_ms"], cmd["problem"]) == ("COMPLETED", "a1", 7, None)
    f.deliver(early)  # redelivered: skipped by its mark
    assert f.routing_store.get("cmd/c1") == cmd


def test_decisions_are_folded_from_the_recorded_event() -> None:
    f = four_agents()
    d = only(f.request("c1", "db.query", feedback=False))
    forged = {**d.payload, "agent_id": "a3", "score": 0.5}  # whatever the worker recorded is what counts
    f.record(f.make("worker-2", "commands.routed", forged))
    cmd = f.routing_store.get("cmd/c1")
    assert (cmd["status"], cmd["agent"], cmd["score"]) == ("ROUTED", "a3", 0.5)
    cases = [
        (d.payload, "duplicate-decision"),
        ({**d.payload, "command_id": "c-never"}, "unknown-command"),
    ]
    for payload, reason in cases:
        before = frozen(f.routing_store, marks=False)
        assert refusal(f.record(f.make("worker-2", "commands.routed", payload)), "routing").reason == reason
        assert frozen(f.routing_store, marks=False) == before
    d2 = only(f.request("c2", "db.query", feedback=False))
    bad = {**d2.payload, "capability": "fs.read"}
    assert refusal(f.record(f.make("worker-2", "commands.routed", bad)), "routing").reason == "invalid-payload"
    failed = failure(f.request("c3", "db.query", min_trust=0.9))
    cmd = f.routing_store.get("cmd/c3")
    assert (cmd["status"], cmd["reason"], cmd["agent"]) == ("ROUTE_FAILED", failed["reason"], None)


# ---------------------------------------------------------------------------- schema and audit
def test_derived_payloads_are_valid_avro() -> None:
    f = four_agents()
    derived = [*f.request("c1", "db.query", "ROUND_ROBIN"), *f.request("c2", "nobody.serves"),
               *f.request("c3", "db.query", target="ghost")]
    for d in derived:
        entry = STORE.for_event_type(d.event_type)
        body = encode_body(entry, d.payload)
        assert STORE.decode_body(entry, entry, body, 0) == d.payload


@pytest.mark.parametrize("strategy", ["BEST_FIT", "MIN_LATENCY", "MAX_RELIABILITY", "LEAST_LOADED", "ROUND_ROBIN"])
def test_choose_rerun_on_the_recorded_inputs_gives_the_recorded_choice(strategy: str) -> None:
    f = four_agents()
    f.request("warm-up", "db.query", "ROUND_ROBIN")  # moves the cursor to 1
    now = max(f.registry_store.get("clock/now_ms"), f.now + 1)
    seen = [dict(c) for c in find_by_capability(f.registry_store, "db.query", now)]
    d = only(f.request("c1", "db.query", strategy))
    cursor = f.routing_store.get("cmd/c1")["cursor"] or 0
    assert audit_routed(d.payload, seen, cursor) == []
    agent_id, score, reason = choose(seen, strategy, cursor)
    assert (agent_id, score, reason) == (d.payload["agent_id"], d.payload["score"], "")
    # the recorded inputs alone reproduce the chosen agent's score and fitness
    rebuilt = candidate_from_inputs(d.payload["agent_id"], d.payload["inputs"])
    assert route_inputs(rebuilt) == d.payload["inputs"]
    # a tampered decision is caught
    forged = {**d.payload, "agent_id": "a4" if d.payload["agent_id"] != "a4" else "a3"}
    assert audit_routed(forged, seen, cursor)
    inflated = {**d.payload, "inputs": {**d.payload["inputs"], "fitness": 0.99}}
    assert audit_routed(inflated, seen, cursor)


def test_choose_reports_failure_reasons() -> None:
    full = {"agent_id": "a", "health": 1.0, "health_status": "HEALTHY", "latency_ms": 5.0, "reliability": 1.0,
            "load": 2, "max_concurrency": 2}
    sick = {**full, "agent_id": "b", "health": 0.2, "load": 0}
    assert choose([], "BEST_FIT", 0) == (None, 0.0, "NO_CAPABLE_AGENT")
    assert choose([sick], "BEST_FIT", 0) == (None, 0.0, "ALL_UNHEALTHY")
    assert choose([full, sick], "BEST_FIT", 0) == (None, 0.0, "OVER_CAPACITY")
    assert choose([{**full, "load": 1}], "LEAST_LOADED", 0) == ("a", capacity_factor(1, 2), "")
    with pytest.raises(ValueError):
        choose([{**full, "load": 0}], "TRUST_WEIGHTED", 0)


def test_engine_replay_folds_both_projections() -> None:
    """The engine (verify → decode → fold) drives both projections; 'registry' is read by 'routing'."""
    writer = ChainWriter(identity(), STORE)
    out: list[OutRecord] = []
    id_entry = STORE.for_event_type("trust.identity")
    _ref, value = writer.append(id_entry, encode_body(id_entry, writer.identity_payload()), writer.did, "trust", 0,
                                sign=True)
    out.append(OutRecord("trust", 0, b"", value))
    for event_type, payload in [("agents.registered", registered("a", ["db.query"])),
                                ("agents.registered", registered("b", ["db.query"], latency=5.0)),
                                ("commands.requested", requested("c1", "db.query", "MIN_LATENCY"))]:
        entry = STORE.for_event_type(event_type)
        subject = payload["agent_id" if event_type.startswith("agents") else "command_id"]
        _ref, value = writer.append(entry, encode_body(entry, payload), subject, str(entry.topic), 0)
        out.append(OutRecord(str(entry.topic), 0, subject.encode(), value))
    out.extend(writer.seal())
    engine, outcome = replay(to_raw(out), [RegistryProjection(), RoutingProjection()])
    assert outcome.dead_letters == []
    assert [(d.event_type, d.payload["agent_id"]) for _e, d in outcome.derived] == [("commands.routed", "b")]
    cmd = snapshot(engine.stores["routing"])["cmd/c1"]
    assert (cmd["status"], cmd["agent"]) == ("REQUESTED", None)  # this log holds no recorded decision


# ---------------------------------------------------------------------------- idempotence (hypothesis)
COMMANDS = [f"k{i}" for i in range(5)]
STRATEGIES = ["BEST_FIT", "MIN_LATENCY", "MAX_RELIABILITY", "ROUND_ROBIN", "LEAST_LOADED", "TRUST_WEIGHTED"]

_request_op = st.tuples(st.just("request"), st.sampled_from(COMMANDS), st.sampled_from(CAPS),
                       st.sampled_from(STRATEGIES), st.one_of(st.none(), st.none(), st.sampled_from(AGENTS)))
_receipt_op = st.tuples(st.just("receipt"), st.sampled_from(COMMANDS), st.booleans(), st.sampled_from(AGENTS),
                        st.booleans())
fabric_ops = st.tuples(
    # a prelude that registers someone, so that requests have a chance to route
    st.lists(st.tuples(st.just("register"), st.sampled_from(AGENTS),
                       st.lists(st.sampled_from(CAPS), min_size=1, max_size=2), st.integers(1, 2)),
             min_size=1, max_size=3),
    st.lists(st.one_of(
        st.tuples(st.just("register"), st.sampled_from(AGENTS), st.lists(st.sampled_from(CAPS), max_size=2),
                  st.integers(1, 2)),
        st.tuples(st.just("heartbeat"), st.sampled_from(AGENTS), st.sampled_from([0.3, 0.9, 1.0]),
                  st.integers(0, 2), st.sampled_from([5.0, 250.0])),
        st.tuples(st.just("health"), st.sampled_from(AGENTS), st.sampled_from(["HEALTHY", "FAILED"])),
        st.tuples(st.just("deregister"), st.sampled_from(AGENTS)),
        _request_op, _request_op, _receipt_op, _receipt_op,
        st.tuples(st.just("tick"), st.sampled_from([500, 500, 5_000, 40_000])),
    ), min_size=6, max_size=22),
).map(lambda parts: [*parts[0], *parts[1]])


def play(f: Fabric, ops: list[tuple[Any, ...]]) -> None:
    for op in ops:
        kind, rest = op[0], op[1:]
        if play_agents_op(f, op, 0.8):
            continue
        if kind == "request":
            try:
                f.request(rest[0], rest[1], rest[2], target=rest[3])
            except InvalidEvent as exc:
                assert exc.reason == "duplicate-command"
        elif kind == "receipt":
            command_id, use_routed, other_agent, success = rest
            cmd = f.routing_store.get(f"cmd/{command_id}")
            agent = cmd["agent"] if use_routed and cmd and cmd["agent"] else other_agent
            capability = cmd["capability"] if cmd and cmd["capability"] else CAPS[0]
            f.receipt(command_id, agent, capability, success=success)


def check_routing(f: Fabric) -> None:
    for key, cmd in snapshot(f.routing_store).items():
        if key.startswith("cmd/"):
            assert cmd == resolve(cmd)  # status, problem and the flat receipt follow from the parts
            assert cmd["status"] in ("RECEIPTED", "REQUESTED", "ROUTED", "ROUTE_FAILED", "COMPLETED", "FAILED")
            if cmd["decided_ms"] is not None:
                assert (cmd["agent"] is None) == (cmd["status"] == "ROUTE_FAILED")
            assert 0 <= cmd["eligible"] <= cmd["candidates"]
        elif key.startswith("rr/"):
            assert isinstance(cmd, int) and cmd >= 1


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=fabric_ops, data=st.data())
def test_redelivery_anywhere_later_gives_the_same_stores(ops: list[tuple[Any, ...]], data: st.DataObject) -> None:
    reference = Fabric()
    play(reference, ops)
    check_registry(reference.registry_store)
    check_routing(reference)
    replayed = Fabric()
    first_seen: set[int] = set()
    order = schedule(data, len(reference.log))
    routed = sum(d.event.event_type == "commands.routed" for d in reference.log)
    receipted = sum(d.event.event_type == "commands.receipt" for d in reference.log)
    event(f"routed commands: {'3+' if routed >= 3 else routed}; receipts: {'2+' if receipted >= 2 else receipted}")
    event(f"redeliveries: {'4+' if len(order) - len(reference.log) >= 4 else len(order) - len(reference.log)}")
    for i in order:
        result = replayed.deliver(reference.log[i])
        if i in first_seen:  # a redelivery derives nothing new
            assert all(r is None or isinstance(r, InvalidEvent) for r in result.values()), result
        else:
            first_seen.add(i)
            assert {k: _shape(v) for k, v in result.items()} == {
                k: _shape(v) for k, v in reference.outcomes[i].items()}
    assert frozen(replayed.registry_store) == frozen(reference.registry_store)
    assert frozen(replayed.routing_store) == frozen(reference.routing_store)


def _shape(outcome: list[Derived] | InvalidEvent | None) -> Any:
    if isinstance(outcome, InvalidEvent):
        return ("refused", outcome.reason)
    return outcome


# ---------------------------------------------------------------------------- determinism across interleavings
LOG_PARTITIONS = 3
DET_AGENTS = ["agent-0", "agent-1", "agent-2", "agent-3"]
_WORKER: list[Identity] = []


def worker_identity() -> Identity:
    """The routing worker's identity: a second producer, distinct from the agents' and requesters'."""
    if not _WORKER:
        _WORKER.append(Identity.generate("routing-worker"))
    return _WORKER[0]


det_ops = st.lists(st.one_of(
    st.tuples(st.just("register"), st.sampled_from(DET_AGENTS), st.lists(st.sampled_from(CAPS), min_size=1,
                                                                         max_size=2), st.integers(1, 3)),
    st.tuples(st.just("heartbeat"), st.sampled_from(DET_AGENTS), st.sampled_from([0.3, 0.9, 1.0]),
              st.integers(0, 3), st.sampled_from([5.0, 80.0, 250.0])),
    st.tuples(st.just("request"), st.sampled_from(CAPS), st.sampled_from(STRATEGIES),
              st.one_of(st.none(), st.none(), st.none(), st.sampled_from(DET_AGENTS))),
    st.tuples(st.just("request"), st.sampled_from(CAPS), st.just("ROUND_ROBIN"), st.none()),
    st.tuples(st.just("receipt"), st.integers(0, 30), st.booleans(), st.integers(0, 900), st.booleans()),
    st.tuples(st.just("receipt"), st.integers(0, 30), st.booleans(), st.integers(0, 900), st.booleans()),
    st.tuples(st.just("tick"), st.sampled_from([200, 5_000, 70_000, 400_000])),
), min_size=4, max_size=40)


class LogBuilder:
    """A multi-topic log as swarmlog producers write it: real ChainWriter envelopes and seals,
    partition = crc32(subject) % 3. The worker's decisions come from a live shadow of the two
    projections fed in production order (its own routed events come back to it too)."""

    def __init__(self) -> None:
        self.actors = ChainWriter(identity(), STORE)  # agents, requesters (one producer stream)
        self.worker = ChainWriter(worker_identity(), STORE)
        self.out: list[OutRecord] = []
        self.shadow = Fabric()
        self.now = 1_700_000_000_000
        id_entry = STORE.for_event_type("trust.identity")
        for writer in (self.actors, self.worker):
            _ref, value = writer.append(id_entry, encode_body(id_entry, writer.identity_payload()), writer.did,
                                        "trust", 0, sign=True)
            self.out.append(OutRecord("trust", 0, b"", value))

    def write(self, writer: ChainWriter, event_type: str, payload: dict[str, Any]) -> Any:
        entry = STORE.for_event_type(event_type)
        assert entry.subject_field and entry.topic
        subject = str(payload[entry.subject_field])
        partition = zlib.crc32(subject.encode()) % LOG_PARTITIONS
        self.now += 1
        _ref, value = writer.append(entry, encode_body(entry, payload), subject, entry.topic, partition,
                                    timestamp_ms=self.now)
        self.out.append(OutRecord(entry.topic, partition, subject.encode(), value))
        event = CODEC.decode(value)
        return self.shadow.deliver(Delivery(event, event.decode_payload(STORE)))

    def records(self) -> list[RawRecord]:
        self.out.extend(self.actors.seal())
        self.out.extend(self.worker.seal())
        offsets: dict[tuple[str, int], int] = {}
        records = []
        for rec in self.out:
            offsets[(rec.topic, rec.partition)] = offsets.get((rec.topic, rec.partition), -1) + 1
            records.append(RawRecord(rec.topic, rec.partition, offsets[(rec.topic, rec.partition)], rec.key,
                                     rec.value))
        return records


def build_log(ops: list[tuple[Any, ...]]) -> list[RawRecord]:
    log = LogBuilder()
    commands: list[str] = []
    for n, op in enumerate(ops):
        kind, rest = op[0], op[1:]
        if kind == "register":
            log.write(log.actors, "agents.registered", registered(rest[0], rest[1], max_concurrency=rest[2]))
        elif kind == "heartbeat":
            log.write(log.actors, "agents.heartbeat", {
                "agent_id": rest[0], "health_score": rest[1], "current_load": rest[2], "latency_ms": rest[3],
                "reliability": None, "max_concurrency": None, "interval_ms": 0})
        elif kind == "request":
            command_id = f"cmd-{n}"
            commands.append(command_id)
            result = log.write(log.actors, "commands.requested", requested(command_id, rest[0], rest[1], rest[2]))
            for derived in result["routing"] if isinstance(result["routing"], list) else []:
                log.write(log.worker, derived.event_type, derived.payload)  # the worker records its decision
        elif kind == "receipt" and commands:
            command_id = commands[rest[0] % len(commands)]
            cmd = log.shadow.routing_store.get(f"cmd/{command_id}")
            agent = cmd["agent"] if cmd["agent"] and not rest[3] else DET_AGENTS[rest[0] % len(DET_AGENTS)]
            log.write(log.actors, "commands.receipt", {
                **receipt(command_id, agent, cmd["capability"], duration=rest[2], success=rest[1],
                          finished=log.now - 1_700_000_000_000), "timed_out": rest[2] > 800})
        elif kind == "tick":
            log.now += rest[0]
        if n % 9 == 8:  # batches close now and then, as the producers' seal timers do
            log.out.extend(log.actors.seal())
            log.out.extend(log.worker.seal())
    return log.records()


def interleave(records: list[RawRecord], rng: random.Random) -> list[RawRecord]:
    """A random merge of the per-partition sequences, with at-least-once redelivery: sometimes a record
    twice in a row, sometimes a partition rewound a few records (a consumer restarting from an older offset)."""
    queues: dict[tuple[str, int], list[RawRecord]] = {}
    for rec in records:
        queues.setdefault((rec.topic, rec.partition), []).append(rec)
    delivered: dict[tuple[str, int], list[RawRecord]] = {key: [] for key in queues}
    merged: list[RawRecord] = []
    while queues:
        key = rng.choice(sorted(queues))
        rec = queues[key].pop(0)
        merged.append(rec)
        delivered[key].append(rec)
        roll = rng.random()
        if roll < 0.1:
            merged.append(rec)
        elif roll < 0.15:
            back = rng.randint(1, min(4, len(delivered[key])))
            queues[key][:0] = delivered[key][-back:]
            del delivered[key][-back:]
        if not queues[key]:
            del queues[key]
    return merged


REDUCER_REFUSALS = frozenset({"unknown-agent", "duplicate-receipt", "duplicate", "invalid-payload"})


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=det_ops, seed=st.integers(0, 2**32 - 1))
def test_replay_in_any_interleaving_gives_the_same_registry_and_routing(ops: list[tuple[Any, ...]],
                                                                        seed: int) -> None:
    """The live worker and every replay read the partitions in different orders, with redeliveries:
    the registry and routing stores must come out identical (derived events may differ: the log's
    recorded routed events are what count)."""
    records = build_log(ops)
    rng = random.Random(seed)

    def stores(order: list[RawRecord]) -> tuple[str, str]:
        engine, outcome = replay(order, [RegistryProjection(), RoutingProjection()])
        assert engine.counts.get("pending", 0) == 0
        assert {d.reason for d in outcome.dead_letters} <= REDUCER_REFUSALS, outcome.dead_letters
        check_registry(engine.stores["registry"])
        return (canonical_json(snapshot(engine.stores["registry"])),
                canonical_json(snapshot(engine.stores["routing"])))

    reference = stores(records)
    decided = sum(1 for _k, v in json.loads(reference[1]).items() if isinstance(v, dict) and v["decided_ms"])
    event(f"decided commands: {'5+' if decided >= 5 else decided}")
    for _ in range(3):
        assert stores(interleave(records, rng)) == reference


def test_predicted_strategy_prefers_effective_speed_and_a_learned_prediction() -> None:
    fast_flaky = {"agent_id": "f", "health": 1.0, "health_status": "HEALTHY", "latency_ms": 20.0,
                  "reliability": 0.1, "load": 0, "max_concurrency": 4}
    steady = {**fast_flaky, "agent_id": "s", "latency_ms": 60.0, "reliability": 0.99}
    # 20 ms at 10 % success costs 200 ms per success; 60 ms at 99 % costs ≈ 61 ms
    assert choose([fast_flaky, steady], "PREDICTED", 0)[0] == "s"
    assert choose([fast_flaky, steady], "MIN_LATENCY", 0)[0] == "f"
    learned = {**fast_flaky, "predicted_latency_ms": 5.0}  # a model says f has recovered
    agent, score, _ = choose([learned, steady], "PREDICTED", 0)
    assert (agent, score) == ("f", latency_factor(5.0))
    assert applied_strategy("PREDICTED") == "PREDICTED"
