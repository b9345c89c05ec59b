"""The router honours circuit breakers and bulkheads (issue 6): pure units, the Fabric harness, and an
Engine replay of a signed log in which receipts open a breaker and a later command avoids the agent."""

from __future__ import annotations

import json
import random
import zlib
from typing import Any

from swarmlog.projections.base import MemoryStore, canonical_json, snapshot
from swarmlog.projections.engine import replay
from swarmlog.projections.registry import RegistryProjection, breaker_key, bulkhead_of, in_flight
from swarmlog.projections.resilience import OPEN, ROUTING_BREAKER, force_open, new_breaker, state_at
from swarmlog.projections.routing import (
    RoutingProjection,
    audit_routed,
    candidates_for,
    guard_eligible,
    guard_failure,
    receipts_lane,
)
from tests.test_registry import PARTITIONS, Fabric, receipt, registered, requested
from tests.test_routing import LOG_PARTITIONS, LogBuilder, interleave

CAP = "db.query"
WAIT = ROUTING_BREAKER.wait_open_ms


def ids_in(partition: int, n: int, prefix: str, partitions: int = PARTITIONS) -> list[str]:
    """``n`` command ids whose commands and receipts land in ``partition`` (crc32 of the id, as the harness)."""
    out: list[str] = []
    i = 0
    while len(out) < n:
        cid = f"{prefix}{i}"
        if zlib.crc32(cid.encode()) % partitions == partition:
            out.append(cid)
        i += 1
    return out


def derived(result: list[Any]) -> dict[str, Any]:
    (d,) = result
    return {"type": d.event_type, **d.payload}


# ---------------------------------------------------------------------------- pure units
def test_receipts_lane_pairs_the_commands_partition() -> None:
    assert receipts_lane("commands/3") == "receipts/3"
    assert receipts_lane("run-7.commands/0") == "run-7.receipts/0"
    assert receipts_lane("other/1") == "other/1"


def test_guard_failure_names_the_cause() -> None:
    assert guard_failure([{"agent_id": "a", "reason": "circuit OPEN"}]) == "CIRCUIT_OPEN"
    assert guard_failure([{"agent_id": "a", "reason": "circuit OPEN"},
                          {"agent_id": "b", "reason": "bulkhead full (1 concurrent)"}]) == "OVER_CAPACITY"


def test_bulkhead_comes_from_metadata() -> None:
    assert bulkhead_of({"metadata": {"bulkhead.db.query": "2", "bulkhead": "5"}}, CAP) == 2
    assert bulkhead_of({"metadata": {"bulkhead": "5"}}, CAP) == 5
    assert bulkhead_of({"metadata": {"bulkhead": "lots"}}, CAP) is None
    assert bulkhead_of({"metadata": {"bulkhead": "0"}}, CAP) is None
    assert bulkhead_of({"metadata": {}}, CAP) is None


def test_guard_eligible_reads_breakers_of_the_paired_lane_only() -> None:
    store = MemoryStore()
    store.put(breaker_key("a", CAP, "receipts/1"), force_open(new_breaker(), 1_000))
    cands = [{"agent_id": "a", "metadata": {}}, {"agent_id": "b", "metadata": {}}]
    allowed, excluded, retry = guard_eligible(store, cands, CAP, "commands/1", 2_000)
    assert [c["agent_id"] for c in allowed] == ["b"]
    assert excluded == [{"agent_id": "a", "reason": "circuit OPEN"}] and retry == 1_000 + WAIT - 2_000
    allowed, excluded, retry = guard_eligible(store, cands, CAP, "commands/0", 2_000)  # another shard's breaker
    assert len(allowed) == 2 and excluded == [] and retry is None
    # after the wait: HALF_OPEN admits while fewer than permitted_half_open calls are in flight
    later = 1_000 + WAIT
    assert guard_eligible(store, cands, CAP, "commands/1", later)[1] == []
    store.put("flight/a/" + CAP, [ROUTING_BREAKER.permitted_half_open, 0])
    assert guard_eligible(store, cands, CAP, "commands/1", later)[1] == [{"agent_id": "a",
                                                                          "reason": "circuit HALF_OPEN"}]


# ---------------------------------------------------------------------------- the Fabric harness
def open_breaker(f: Fabric, agent: str, partition: int) -> None:
    """ROUTING_BREAKER.minimum_calls failed receipts for ``agent`` in one receipts partition."""
    for cid in ids_in(partition, ROUTING_BREAKER.minimum_calls, f"fail-{agent}-"):
        f.receipt(cid, agent, CAP, success=False, duration=30)


def test_receipts_open_the_breaker_and_the_router_avoids_then_probes_the_agent() -> None:
    f = Fabric()
    f.register("a", [CAP], max_concurrency=8)
    f.register("b", [CAP], max_concurrency=8)
    open_breaker(f, "a", 0)
    b = f.registry_store.get(breaker_key("a", CAP, "receipts/0"))
    assert state_at(b, f.now, ROUTING_BREAKER) == OPEN
    c0, c1, c2 = ids_in(0, 3, "next-")
    out = derived(f.request(c0, CAP, "MIN_LATENCY"))
    assert out["type"] == "commands.routed" and out["agent_id"] == "b"
    assert out["excluded"] == [{"agent_id": "a", "reason": "circuit OPEN"}] and out["eligible"] == 1
    # the audit re-runs the decision on the registry's candidates minus the recorded exclusions
    assert audit_routed(out, candidates_for(f.registry_store, CAP, f.now)) == []
    # pinned to a: refused with the breaker as the cause and the remaining wait as the retry hint
    pinned = derived(f.request(c1, CAP, "BEST_FIT", target="a"))
    assert pinned["reason"] == "TARGET_UNAVAILABLE" and "CIRCUIT_OPEN" in pinned["detail"]
    assert 0 < pinned["retry_after_ms"] <= WAIT
    # a command routed from the other shard does not see shard 0's breaker
    (other,) = ids_in(1, 1, "other-")
    assert derived(f.request(other, CAP, "BEST_FIT", target="a"))["type"] == "commands.routed"
    # after the wait the breaker is HALF_OPEN: a gets probes again
    f.tick(WAIT)
    assert derived(f.request(c2, CAP, "BEST_FIT", target="a"))["agent_id"] == "a"


def test_every_capable_agent_behind_an_open_breaker_is_circuit_open_not_silence() -> None:
    f = Fabric()
    f.register("a", [CAP])
    f.register("b", [CAP])
    open_breaker(f, "a", 1)
    open_breaker(f, "b", 1)
    (cid,) = ids_in(1, 1, "cmd-")
    out = derived(f.request(cid, CAP, "BEST_FIT"))
    assert out["type"] == "commands.route_failed" and out["reason"] == "CIRCUIT_OPEN"
    assert "a: circuit OPEN" in out["detail"] and "b: circuit OPEN" in out["detail"]
    assert 0 < out["retry_after_ms"] <= WAIT
    assert f.routing_store.get(f"cmd/{cid}")["status"] == "ROUTE_FAILED"


def test_bulkhead_caps_concurrent_calls_per_agent_and_capability() -> None:
    f = Fabric()
    f.emit("a", "agents.registered", {**registered("a", [CAP, "other"], max_concurrency=8),
                                      "metadata": {f"bulkhead.{CAP}": "1"}})
    first, second, third = ids_in(0, 3, "bh-")
    assert derived(f.request(first, CAP))["agent_id"] == "a"
    assert in_flight(f.registry_store, "a", CAP) == 1
    full = derived(f.request(second, CAP))
    assert full["reason"] == "OVER_CAPACITY" and "bulkhead full (1 concurrent)" in full["detail"]
    (other_cap,) = ids_in(0, 1, "oc-")
    assert derived(f.request(other_cap, "other"))["agent_id"] == "a"  # the bulkhead is per capability
    f.receipt(first, "a", CAP)
    assert derived(f.request(third, CAP))["agent_id"] == "a"


# ---------------------------------------------------------------------------- a signed log through the Engine
def test_engine_replay_of_a_log_where_receipts_open_a_breaker() -> None:
    """Live (the worker's shadow, fed in production order) decides; the log records it; every replay in any
    interleaving of the partitions folds the same registry (breakers included) and routing state."""
    log = LogBuilder()
    log.write(log.actors, "agents.registered", registered("agent-0", [CAP], max_concurrency=50))
    log.write(log.actors, "agents.registered", registered("agent-1", [CAP], max_concurrency=50, latency=400.0))
    part = 2
    # agent-0 (faster) wins MIN_LATENCY; its commands in partition 2 fail until the breaker opens
    routed: list[dict[str, Any]] = []
    for cid in ids_in(part, ROUTING_BREAKER.minimum_calls + 2, "cmd-", LOG_PARTITIONS):
        result = log.write(log.actors, "commands.requested", requested(cid, CAP, "MIN_LATENCY"))
        for d in result["routing"]:
            log.write(log.worker, d.event_type, d.payload)
            routed.append(d.payload)
            log.write(log.actors, "commands.receipt", {
                **receipt(cid, d.payload["agent_id"], CAP, duration=20, success=d.payload["agent_id"] != "agent-0",
                          finished=log.now - 1_700_000_000_000)})
    winners = [p["agent_id"] for p in routed]
    n = ROUTING_BREAKER.minimum_calls
    assert winners[:n] == ["agent-0"] * n  # MIN_LATENCY keeps choosing the fast agent while the breaker closes
    assert winners[n:] == ["agent-1", "agent-1"]  # then the open breaker sends the command elsewhere
    assert routed[n]["excluded"] == [{"agent_id": "agent-0", "reason": "circuit OPEN"}]
    live = (canonical_json(snapshot(log.shadow.registry_store)), canonical_json(snapshot(log.shadow.routing_store)))
    records = log.records()

    def stores(order: list[Any]) -> tuple[str, str]:
        engine, outcome = replay(order, [RegistryProjection(), RoutingProjection()])
        assert outcome.dead_letters == [] or {d.reason for d in outcome.dead_letters} <= {"duplicate"}
        return (canonical_json(snapshot(engine.stores["registry"])),
                canonical_json(snapshot(engine.stores["routing"])))

    reference = stores(records)
    rng = random.Random(7)
    for _ in range(3):
        assert stores(interleave(records, rng)) == reference
    registry = json.loads(reference[0])
    brk = registry[breaker_key("agent-0", CAP, f"receipts/{part}")]
    assert brk["state"] == OPEN
    # live routing state == replayed (the decisions are folded from the recorded events)
    assert live == reference


def heal_action(action: str, target: str, action_id: str) -> dict[str, Any]:
    return {"action_id": action_id, "target": target, "action": action, "reason": "error-spike on " + target,
            "diagnosis_id": None, "parameters": {"failure": "error-spike"}, "canary": False, "rollback_of": None,
            "recommendation_id": None}


def test_a_heal_open_circuit_action_opens_every_lane_for_one_wait_and_close_circuit_lifts_it() -> None:
    f = Fabric()
    f.register("a", [CAP])
    f.emit("healer", "heal.action", heal_action("OPEN_CIRCUIT", "a", "act-1"))
    f.emit("healer", "heal.action", heal_action("RESTART", "a", "act-2"))  # not the router's business
    for part in range(PARTITIONS):
        (cid,) = ids_in(part, 1, f"forced-{part}-")
        out = derived(f.request(cid, CAP))
        assert out["reason"] == "CIRCUIT_OPEN" and "a: circuit OPEN" in out["detail"]
    f.tick(WAIT)
    (cid,) = ids_in(0, 1, "after-wait-")
    assert derived(f.request(cid, CAP))["agent_id"] == "a"
    f.emit("healer", "heal.action", heal_action("OPEN_CIRCUIT", "a", "act-3"))
    f.emit("healer", "heal.action", heal_action("CLOSE_CIRCUIT", "a", "act-4"))
    (cid,) = ids_in(1, 1, "closed-")
    assert derived(f.request(cid, CAP))["agent_id"] == "a"
