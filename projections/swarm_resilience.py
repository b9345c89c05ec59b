"""Swarm resilience (spec §2.7) and the orchestration tiers, pure.

Resilience: swarm health over member health statuses — ``functional_capacity =
(healthy + degraded / 2) / total`` (a real division), functional above 0.5 — redundancy
per role, backup activation when a role loses every working holder, and role switching
under stress. Roles are folded from ``swarm.role_changed`` events (one key per agent);
a change that names the wrong previous role is refused (``role-mismatch``: the spec's
role-verification check) and reported to the trust network as a FAILURE observation
about its signer (``swarm_checks``), and a backup activation must name the agent it replaces.

Tiers: every operation type is declared for the INDIVIDUAL tier (the command broker) or
the SWARM tier (voting, auctions, optimisation, formations, gossip). Routing an operation
to an unhealthy tier fails fast with the tier's reason instead of queueing it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from swarmlog.projections.base import Derived, EventContext, InvalidEvent, Projection, StateStore, Stores
from swarmlog.projections.swarm_checks import ROLE_VERIFICATION, observation

ROLE_CHANGED = "swarm.role_changed"
HEALTHY, DEGRADED, FAILED = "HEALTHY", "DEGRADED", "FAILED"
WORKING = frozenset({HEALTHY, DEGRADED})


# --------------------------------------------------------------------------- health
@dataclass(frozen=True)
class SwarmHealth:
    total: int
    healthy: int
    degraded: int
    failed: int
    functional_capacity: float
    functional: bool
    redundancy: dict[str, int]  # working holders per role
    redundancy_factor: float  # the weakest role's working holders (0 when a role has none)


def swarm_health(status: Mapping[str, str], roles: Mapping[str, str] | None = None) -> SwarmHealth:
    """Health of a swarm from each member's status (HEALTHY, DEGRADED, FAILED; anything else
    counts as FAILED — an agent that cannot say it works does not add capacity)."""
    total = len(status)
    healthy = sum(1 for s in status.values() if s == HEALTHY)
    degraded = sum(1 for s in status.values() if s == DEGRADED)
    failed = total - healthy - degraded
    capacity = (healthy + degraded / 2) / total if total else 0.0
    redundancy: dict[str, int] = {}
    for agent, role in sorted((roles or {}).items()):
        redundancy.setdefault(role, 0)
        if status.get(agent) in WORKING:
            redundancy[role] += 1
    factor = float(min(redundancy.values())) if redundancy else 0.0
    return SwarmHealth(total, healthy, degraded, failed, capacity, capacity > 0.5, redundancy, factor)


def plan_backups(status: Mapping[str, str], roles: Mapping[str, str], required: Iterable[str],
                 reserve_role: str = "reserve") -> list[dict[str, Any]]:
    """``swarm.role_changed`` payloads that refill every required role left with no working
    holder, taking working agents from ``reserve_role`` first, then from the role with the
    most working holders (never emptying it). Deterministic: sorted choices."""
    holders: dict[str, list[str]] = {}
    for agent, role in sorted(roles.items()):
        if status.get(agent) in WORKING:
            holders.setdefault(role, []).append(agent)
    changes: list[dict[str, Any]] = []
    for role in sorted(set(required)):
        if holders.get(role):
            continue
        failed_holders = sorted(a for a, r in roles.items() if r == role)
        donor_role = reserve_role if holders.get(reserve_role) else max(
            (r for r in holders if len(holders[r]) > 1 and r != role), key=lambda r: (len(holders[r]), r),
            default=None)
        if donor_role is None:
            continue  # nobody can be spared: the role stays empty (swarm_health shows it)
        agent = holders[donor_role].pop(0)
        holders.setdefault(role, []).append(agent)
        changes.append({"agent_id": agent, "swarm_id": None, "previous_role": donor_role, "role": role,
                        "reason": "backup_activation",
                        "replaces_agent": failed_holders[0] if failed_holders else None})
    return changes


def plan_stress_switches(load: Mapping[str, float], roles: Mapping[str, str], status: Mapping[str, str],
                         stressed_role: str, threshold: float = 0.8, spare_role: str = "reserve"
                         ) -> list[dict[str, Any]]:
    """Move working spare agents (by id) into ``stressed_role`` until the role's load, spread
    over its working holders, is at or below ``threshold`` per holder."""
    working = [a for a, r in sorted(roles.items()) if r == stressed_role and status.get(a) in WORKING]
    spares = [a for a, r in sorted(roles.items()) if r == spare_role and status.get(a) in WORKING]
    if not working:
        return []
    total = sum(load.get(a, 0.0) for a in working)
    changes = []
    while spares and total / len(working) > threshold:
        agent = spares.pop(0)
        working.append(agent)
        changes.append({"agent_id": agent, "swarm_id": None, "previous_role": spare_role, "role": stressed_role,
                        "reason": "stress", "replaces_agent": None})
    return changes


class RoleProjection(Projection):
    """Current role per agent, with role verification (see the module docstring)."""

    name: ClassVar[str] = "swarm_roles"
    event_types: ClassVar[frozenset[str]] = frozenset({ROLE_CHANGED})

    def apply(self, stores: Stores, ctx: EventContext, payload: dict[str, Any]) -> list[Derived]:
        store = stores.own
        agent = payload["agent_id"]
        if ctx.subject != agent:
            raise InvalidEvent("subject-mismatch", f"event keyed {ctx.subject!r} names agent {agent!r}")
        if not payload["role"]:
            raise InvalidEvent("invalid-role", "role must not be empty")
        current = store.get(f"role/{agent}")
        current_role = current["role"] if isinstance(current, dict) else None
        if payload.get("previous_role") != current_role:
            # role verification (swarm_checks): a claim about a role the agent does not hold is
            # refused and reported about whoever signed it (impersonation or a stale view)
            raise InvalidEvent("role-mismatch", f"{agent} holds {current_role!r}, not {payload.get('previous_role')!r}",
                               [observation(ctx.producer, "FAILURE", ROLE_VERIFICATION)])
        if payload["reason"] == "backup_activation" and not payload.get("replaces_agent"):
            raise InvalidEvent("invalid-role", "a backup activation names the agent it replaces")
        history = (current or {}).get("changes", 0) if isinstance(current, dict) else 0
        store.put(f"role/{agent}", {"agent_id": agent, "swarm_id": payload.get("swarm_id"), "role": payload["role"],
                                    "since_ms": ctx.timestamp_ms, "reason": payload["reason"],
                                    "replaces_agent": payload.get("replaces_agent"), "changes": history + 1,
                                    "changed_by": ctx.producer})
        return []


def roles_of(store: StateStore, swarm_id: str | None = None) -> dict[str, str]:
    return {v["agent_id"]: v["role"] for _, v in store.scan("role/")
            if isinstance(v, dict) and (swarm_id is None or v.get("swarm_id") == swarm_id)}


# --------------------------------------------------------------------------- tiers
INDIVIDUAL, SWARM = "INDIVIDUAL", "SWARM"
OPERATION_TIERS: Mapping[str, str] = {
    "command": INDIVIDUAL, "query": INDIVIDUAL, "session": INDIVIDUAL, "consensus": INDIVIDUAL,
    "vote": SWARM, "auction": SWARM, "optimize": SWARM, "formation": SWARM, "gossip": SWARM, "stigmergy": SWARM,
}


class TierUnavailable(RuntimeError):
    """The operation's tier is unhealthy: fail fast, with the tier's reason."""

    def __init__(self, tier: str, reason: str) -> None:
        super().__init__(f"{tier} tier unavailable: {reason}")
        self.tier = tier
        self.reason = reason


@dataclass(frozen=True)
class TierHealth:
    healthy: bool
    reason: str = ""


def individual_tier_health(live_agents: int, routed: int, route_failed: int,
                           max_failure_rate: float = 0.5) -> TierHealth:
    """The command broker is healthy with at least one live agent and a route-failure rate
    at or below ``max_failure_rate`` over the window the caller counted."""
    if live_agents == 0:
        return TierHealth(False, "no live agents in the registry")
    attempts = routed + route_failed
    if attempts and route_failed / attempts > max_failure_rate:
        return TierHealth(False, f"{route_failed} of {attempts} recent commands found no agent")
    return TierHealth(True)


def swarm_tier_health(health: SwarmHealth) -> TierHealth:
    if health.total == 0:
        return TierHealth(False, "the swarm has no members")
    if not health.functional:
        return TierHealth(False, f"functional capacity {health.functional_capacity:.2f} <= 0.50")
    return TierHealth(True)


def route_operation(operation: str, health: Mapping[str, TierHealth]) -> str:
    """The tier that runs ``operation``; raises ``TierUnavailable`` (fail fast) or ``KeyError``
    for an undeclared operation type."""
    try:
        tier = OPERATION_TIERS[operation]
    except KeyError:
        raise KeyError(f"undeclared operation type {operation!r} (declared: {', '.join(sorted(OPERATION_TIERS))})"
                       ) from None
    state = health.get(tier, TierHealth(False, "no health reported"))
    if not state.healthy:
        raise TierUnavailable(tier, state.reason)
    return tier


def bridge_assignment_to_command(assignment: Mapping[str, Any], task: Mapping[str, Any],
                                 command_id: str) -> dict[str, Any]:
    """Integration bridge, swarm → individual tier: a won task becomes a command for its winner
    (a ``commands.requested`` payload pinned to the assignee), so execution, receipts, load
    and reliability go through the command broker like any other command."""
    return {"command_id": command_id, "capability": (task.get("required_skills") or ["task"])[0],
            "target_agent": assignment["agent_id"], "task_id": assignment["task_id"],
            "payload": task.get("payload"), "priority": task.get("priority", 5)}


def member_statuses(agents: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Registry records → HEALTHY / DEGRADED / FAILED for ``swarm_health``."""
    out = {}
    for a in agents:
        status = a.get("health_status", "UNKNOWN")
        if a.get("status") != "ACTIVE":
            status = FAILED
        out[a["agent_id"]] = status if status in (HEALTHY, DEGRADED, FAILED) else (
            HEALTHY if a.get("health", 0) >= 0.8 else DEGRADED if a.get("health", 0) >= 0.5 else FAILED)
    return out
