"""The agents directory refuses exactly what the registry refuses in the agents topic, and keeps one key per agent."""

from __future__ import annotations

import random

from swarmlog.projections.base import snapshot
from swarmlog.projections.directory import AgentDirectoryProjection
from swarmlog.projections.engine import Engine
from swarmlog.projections.registry import RegistryProjection
from swarmlog.streams.identity import Identity
from tests.support.logs import LogBuilder, interleave

IDS = [Identity.generate(f"agent-{i}") for i in range(4)]


def registered(did: str) -> dict[str, object]:
    return {"agent_id": did, "address": "h:1", "capabilities": ["db.query"], "max_concurrency": 4}


def heartbeat(did: str, health: float = 1.0) -> dict[str, object]:
    return {"agent_id": did, "health_score": health, "current_load": 0, "latency_ms": 5.0}


def agents_log() -> LogBuilder:
    log = LogBuilder(partitions=3)
    a, b, stranger, liar = IDS
    log.append(a, "agents.registered", registered(a.did))
    log.append(b, "agents.registered", registered(b.did))
    log.append(a, "agents.heartbeat", heartbeat(a.did, 0.9))
    log.append(stranger, "agents.heartbeat", heartbeat(stranger.did))  # never registered
    log.append(b, "agents.heartbeat", heartbeat(b.did, 7.0))  # out of range
    log.append(liar, "agents.heartbeat", heartbeat(a.did), subject=liar.did)  # keyed by another agent
    log.append(b, "agents.deregistered", {"agent_id": b.did, "reason": "SHUTDOWN"})
    for identity in IDS:
        log.seal(identity)
    return log


def test_refusals_match_the_registry_and_only_agent_records_are_kept() -> None:
    log = agents_log()
    directory = Engine([AgentDirectoryProjection()])
    registry = Engine([RegistryProjection()])
    refused = sorted((d.reason, d.record.offset) for d in directory.feed_all(log.records).dead_letters)
    assert refused == sorted((d.reason, d.record.offset) for d in registry.feed_all(log.records).dead_letters)
    assert [r for r, _ in refused] == sorted(["unknown-agent", "invalid-payload", "subject-mismatch"])
    state = snapshot(directory.stores["agents"])
    assert sorted(state) == sorted(f"agent/{i.did}" for i in IDS[:2])
    a, b = IDS[0].did, IDS[1].did
    assert state[f"agent/{a}"]["health"] == 0.9 and state[f"agent/{b}"]["status"] == "DEREGISTERED"
    for key in ("agent_id", "capabilities", "status", "health", "registered_ms"):
        assert state[f"agent/{a}"][key] == registry.stores["registry"].get(f"agent/{a}")[key]


def test_any_interleaving_of_partitions_gives_the_same_directory() -> None:
    log = agents_log()
    expected = Engine([AgentDirectoryProjection()])
    expected.feed_all(log.records)
    for seed in range(6):
        engine = Engine([AgentDirectoryProjection()])
        engine.feed_all(interleave(log.records, random.Random(seed)))
        assert snapshot(engine.stores["agents"], include_marks=True) == \
            snapshot(expected.stores["agents"], include_marks=True)
