"""Swarm health, backups, role switching and verification; orchestration tiers."""

from __future__ import annotations

from typing import Any

import pytest

from swarmlog.projections.base import EventContext, InvalidEvent, MemoryStore, Stores
from swarmlog.projections.swarm_resilience import (
    ROLE_CHANGED,
    RoleProjection,
    TierHealth,
    TierUnavailable,
    bridge_assignment_to_command,
    individual_tier_health,
    plan_backups,
    plan_stress_switches,
    roles_of,
    route_operation,
    swarm_health,
    swarm_tier_health,
)


def test_functional_capacity_is_a_real_division_and_the_spec_threshold() -> None:
    health = swarm_health({"a": "HEALTHY", "b": "DEGRADED", "c": "FAILED"})
    assert health.functional_capacity == pytest.approx((1 + 0.5) / 3) and health.functional is False
    assert swarm_health({"a": "HEALTHY", "b": "HEALTHY", "c": "DEGRADED"}).functional_capacity == pytest.approx(2.5 / 3)
    assert swarm_health({}).functional_capacity == 0.0 and not swarm_health({}).functional
    assert swarm_health({"a": "UNKNOWN"}).failed == 1


def test_redundancy_per_role_counts_working_holders() -> None:
    health = swarm_health({"a": "HEALTHY", "b": "FAILED", "c": "DEGRADED", "d": "HEALTHY"},
                          {"a": "scout", "b": "scout", "c": "worker", "d": "worker"})
    assert health.redundancy == {"scout": 1, "worker": 2} and health.redundancy_factor == 1.0


def test_backup_activation_refills_a_role_that_lost_its_holder() -> None:
    status = {"lead": "FAILED", "r1": "HEALTHY", "r2": "HEALTHY", "w1": "HEALTHY"}
    roles = {"lead": "coordinator", "r1": "reserve", "r2": "reserve", "w1": "worker"}
    [change] = plan_backups(status, roles, required=["coordinator", "worker"])
    assert change == {"agent_id": "r1", "swarm_id": None, "previous_role": "reserve", "role": "coordinator",
                      "reason": "backup_activation", "replaces_agent": "lead"}
    # no reserve: the best-staffed role gives one agent but is never emptied
    status2 = {"lead": "FAILED", "w1": "HEALTHY", "w2": "HEALTHY", "s1": "HEALTHY"}
    roles2 = {"lead": "coordinator", "w1": "worker", "w2": "worker", "s1": "scout"}
    [change2] = plan_backups(status2, roles2, required=["coordinator", "worker", "scout"])
    assert change2["previous_role"] == "worker" and change2["agent_id"] == "w1"
    assert plan_backups({"lead": "FAILED", "s1": "HEALTHY"}, {"lead": "coordinator", "s1": "scout"},
                        required=["coordinator", "scout"]) == []


def test_role_switching_under_stress_moves_spares_until_load_drops() -> None:
    roles = {"w1": "worker", "w2": "worker", "r1": "reserve", "r2": "reserve", "r3": "reserve"}
    status = dict.fromkeys(roles, "HEALTHY")
    changes = plan_stress_switches({"w1": 1.0, "w2": 1.0}, roles, status, "worker", threshold=0.6)
    # mean load 2/2 = 1.0 > 0.6 -> r1; 2/3 = 0.67 > 0.6 -> r2; 2/4 = 0.5: enough
    assert [c["agent_id"] for c in changes] == ["r1", "r2"] and changes[0]["reason"] == "stress"
    assert plan_stress_switches({"w1": 0.2, "w2": 0.2}, roles, status, "worker") == []


def role_event(store: MemoryStore, agent: str, role: str, previous: str | None, reason: str = "assigned",
               replaces: str | None = None, seq: int = 1) -> None:
    ctx = EventContext(f"e{seq}", ROLE_CHANGED, "did:key:coordinator", agent, seq, "swarm/0", seq, "s")
    RoleProjection().apply(Stores(store), ctx, dict(agent_id=agent, swarm_id="s", previous_role=previous, role=role,
                                                    reason=reason, replaces_agent=replaces))


def test_role_verification_refuses_a_wrong_previous_role() -> None:
    store = MemoryStore()
    role_event(store, "a", "scout", None)
    role_event(store, "a", "worker", "scout", seq=2)
    with pytest.raises(InvalidEvent, match="role-mismatch"):
        role_event(store, "a", "coordinator", "scout", seq=3)  # claims a role it no longer holds
    with pytest.raises(InvalidEvent, match="invalid-role"):
        role_event(store, "a", "coordinator", "worker", reason="backup_activation", seq=4)
    assert roles_of(store) == {"a": "worker"}


def test_tiers_route_by_declared_type_and_fail_fast() -> None:
    healthy = {"INDIVIDUAL": TierHealth(True), "SWARM": TierHealth(True)}
    assert route_operation("command", healthy) == "INDIVIDUAL" and route_operation("auction", healthy) == "SWARM"
    sick = {**healthy, "SWARM": swarm_tier_health(swarm_health({"a": "FAILED", "b": "HEALTHY"}))}
    with pytest.raises(TierUnavailable) as down:
        route_operation("vote", sick)
    assert down.value.tier == "SWARM" and "functional capacity 0.50" in down.value.reason
    assert route_operation("query", sick) == "INDIVIDUAL"
    with pytest.raises(KeyError, match="undeclared operation"):
        route_operation("teleport", healthy)
    assert not individual_tier_health(0, 0, 0).healthy
    assert not individual_tier_health(5, 2, 8).healthy and individual_tier_health(5, 8, 2).healthy


def test_the_bridge_turns_a_won_task_into_a_pinned_command() -> None:
    task: dict[str, Any] = {"required_skills": ["etl"], "payload": b"x", "priority": 7}
    command = bridge_assignment_to_command({"task_id": "t", "agent_id": "w"}, task, "c-1")
    assert (command["capability"], command["target_agent"], command["priority"]) == ("etl", "w", 7)
