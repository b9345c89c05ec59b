"""Agent directory: the ``agents`` topic alone, sharded by agent id, in the live consumer group.

Why it exists: the registry is folded by every worker's *replica* (a reader outside the
consumer group, over all partitions), so no single worker owns an ``agents`` record and
the replica cannot dead-letter what it refuses — every worker would send the same dead
letter. This projection runs in the group like the other domains: each ``agents``
partition has one owner, which folds the partition's events through the registry's own
handlers and so refuses exactly what the registry refuses there (``unknown-agent`` for a
heartbeat, health change or deregistration of an agent never registered,
``invalid-payload``, ``subject-mismatch``) — those refusals are decided inside the
agent's own partition, hence identically by the replica, the directory and a replay.
Refused events go to the dead-letter topic once, from the partition's owner.

Store: ``agent/<agent_id>`` — the agent record as the ``agents`` partition alone defines
it (registration, health, self-reports, status; the command-derived measurements stay
at their no-receipt defaults: those live in the registry replica). Only keys of the
event's own agent are written, so the table obeys the determinism rule (rule 1).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

from swarmlog.projections.base import JSON, Derived, EventContext, Projection, Stores
from swarmlog.projections.registry import AGENTS_EVENTS, DEFAULT_TTL_MS, RegistryProjection, agent_key


class _AgentOverlay:
    """A scratch store: the one agent record read through from the table, everything else empty.

    The registry handlers also maintain the capability index and fitness views; here they
    write into the scratch space and are dropped — only the agent record is kept.
    """

    def __init__(self, base: Any, key: str) -> None:
        self.base = base
        self.key = key
        self.data: dict[str, JSON] = {}

    def get(self, key: str) -> JSON | None:
        if key in self.data:
            return self.data[key]
        return self.base.get(key) if key == self.key else None

    def put(self, key: str, value: JSON) -> None:
        self.data[key] = value

    def delete(self, key: str) -> None:
        self.data[key] = None

    def scan(self, prefix: str = "") -> Iterator[tuple[str, JSON]]:
        for key in sorted(k for k, v in self.data.items() if k.startswith(prefix) and v is not None):
            yield key, self.data[key]


class AgentDirectoryProjection(Projection):
    """``agents`` events through the registry's handlers, keeping only ``agent/<id>``; see the module doc."""

    name: ClassVar[str] = "agents"
    event_types: ClassVar[frozenset[str]] = AGENTS_EVENTS

    def __init__(self, ttl_ms: int = DEFAULT_TTL_MS) -> None:
        self.registry = RegistryProjection(ttl_ms)

    def apply(self, stores: Stores, ctx: EventContext, payload: dict[str, Any]) -> list[Derived]:
        key = agent_key(str(payload.get("agent_id") or ""))
        overlay = _AgentOverlay(stores.own, key)
        self.registry.apply(Stores(overlay), ctx, payload)  # raises InvalidEvent before any write
        if key in overlay.data and overlay.data[key] is not None:
            stores.own.put(key, overlay.data[key])
        return []
