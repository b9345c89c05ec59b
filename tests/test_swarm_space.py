"""Pheromone, position, formation and gossip events folded into the swarm-space projection."""

from __future__ import annotations

import gzip
from typing import Any

import pytest

from swarmlog.projections.base import EventContext, InvalidEvent, MemoryStore, Stores, canonical_json
from swarmlog.projections.flocking import formation_separation, formation_tick
from swarmlog.projections.gossip import compress
from swarmlog.projections.stigmergy import FieldParams, PheromoneField
from swarmlog.projections.swarm_space import (
    FORMATION,
    MESSAGE,
    PHEROMONE,
    POSITION,
    SwarmSpaceProjection,
    formation_targets,
    gossip_history,
    pheromone_field,
    steering,
    swarm_boids,
    swarm_metrics,
)


class Space:
    def __init__(self) -> None:
        self.projection = SwarmSpaceProjection(FieldParams(decay_rate=0.1, diffusion=0.1))
        self.store = MemoryStore()
        self.seq = 0

    def feed(self, event_type: str, subject: str, producer: str, ts: int, payload: dict[str, Any]) -> None:
        self.seq += 1
        ctx = EventContext(f"e{self.seq}", event_type, producer, subject, ts, "swarm/2", self.seq, "s")
        self.projection.apply(Stores(self.store), ctx, payload)

    def deposit(self, x: int, y: int, kind: str, amount: float, ts: int, who: str = "a") -> None:
        self.feed(PHEROMONE, "f", who, ts, dict(field_id="f", x=x, y=y, pheromone_type=kind, intensity=amount,
                                                depositor=who))

    def position(self, agent: str, x: float, y: float, vx: float = 1.0, vy: float = 0.0, ts: int = 1,
                 swarm: str | None = "s") -> None:
        self.feed(POSITION, agent, agent, ts, dict(agent_id=agent, swarm_id=swarm, x=x, y=y, vx=vx, vy=vy))


def test_the_stored_field_equals_the_pure_field_fed_the_same_deposits() -> None:
    space = Space()
    pure = PheromoneField(FieldParams(decay_rate=0.1, diffusion=0.1))
    for x, y, kind, amount, ts in [(0, 0, "food", 1.0, 0), (1, 0, "food", 0.5, 2_000), (3, 3, "danger", 0.9, 2_500),
                                   (0, 0, "food", 0.2, 7_000)]:
        space.deposit(x, y, kind, amount, ts)
        pure.deposit(x, y, kind, amount, ts)
    field = pheromone_field(space.store, "f")
    assert field is not None and field.to_json() == pure.to_json()
    later = pheromone_field(space.store, "f", at_ms=60_000)
    assert later is not None and later.intensity(0, 0) < field.intensity(0, 0)
    assert pheromone_field(space.store, "f") is not None and pheromone_field(space.store, "f").to_json() == \
        pure.to_json()  # a read never writes


@pytest.mark.parametrize("change,reason", [
    ({"intensity": 1.5}, "invalid-deposit"),
    ({"intensity": float("nan")}, "invalid-deposit"),
    ({"pheromone_type": ""}, "invalid-deposit"),
    ({"depositor": "someone-else"}, "depositor-mismatch"),
    ({"field_id": "other"}, "subject-mismatch"),
])
def test_bad_deposits_are_refused(change: dict[str, Any], reason: str) -> None:
    space = Space()
    body = {**dict(field_id="f", x=0, y=0, pheromone_type="food", intensity=0.5, depositor="a"), **change}
    with pytest.raises(InvalidEvent) as refused:
        space.feed(PHEROMONE, "f", "a", 1, body)
    assert refused.value.reason == reason and len(space.store) == 0


def test_positions_formations_steering_and_metrics() -> None:
    space = Space()
    for i in range(6):
        space.position(f"agent-{i}", 10.0 * i, 0.0, vx=1.0, vy=0.1 * i)
    space.position("outsider", 0.0, 0.0, swarm=None)
    space.position("agent-0", 99.0, 99.0, ts=0)  # older than the stored report: ignored
    boids = swarm_boids(space.store, "s")
    assert sorted(boids) == [f"agent-{i}" for i in range(6)] and boids["agent-0"].x == 0.0
    forces = steering(space.store, "s")
    assert set(forces) == set(boids) and all(abs(fx) < 1 for fx, _ in forces.values())
    space.feed(FORMATION, "s", "did:key:leader", 2, dict(swarm_id="s", shape="CIRCLE", anchor_x=100.0,
                                                        anchor_y=100.0, spacing=30.0, heading_rad=0.0, members=[]))
    targets = formation_targets(space.store, "s")
    assert sorted(targets) == sorted(boids)
    before = swarm_metrics(space.store, "s")["formation_error"]
    # agents steer to their slots and report again: the error the projection sees falls
    for _ in range(400):
        boids = formation_tick(boids, targets, transit_separation=formation_separation(30.0))
    for agent, b in boids.items():
        space.position(agent, b.x, b.y, b.vx, b.vy, ts=10)
    after = swarm_metrics(space.store, "s")
    assert after["formation_error"] < 0.5 < before and after["min_distance"] >= 25.0 - 1e-6


@pytest.mark.parametrize("event_type,subject,producer,body,reason", [
    (POSITION, "a", "b", dict(agent_id="a", swarm_id="s", x=0.0, y=0.0, vx=0.0, vy=0.0), "agent-mismatch"),
    (POSITION, "a", "a", dict(agent_id="a", swarm_id="s", x=float("inf"), y=0.0, vx=0.0, vy=0.0),
     "invalid-position"),
    (FORMATION, "s", "l", dict(swarm_id="s", shape="STAR", anchor_x=0.0, anchor_y=0.0, spacing=1.0,
                               heading_rad=0.0, members=[]), "invalid-formation"),
    (FORMATION, "s", "l", dict(swarm_id="s", shape="LINE", anchor_x=0.0, anchor_y=0.0, spacing=-1.0,
                               heading_rad=0.0, members=[]), "invalid-formation"),
])
def test_bad_positions_and_formations_are_refused(event_type: str, subject: str, producer: str,
                                                  body: dict[str, Any], reason: str) -> None:
    space = Space()
    with pytest.raises(InvalidEvent) as refused:
        space.feed(event_type, subject, producer, 1, body)
    assert refused.value.reason == reason


def message(hop: int = 0, ttl: int = 20, content: bytes = b"hello", compression: str = "NONE",
            seen_by: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    return {**dict(message_id="m", sender="origin", swarm_id=None, scope="GLOBAL_ALERT", region=None, ttl=ttl,
                   hop=hop, content=content, content_type="text/plain", compression=compression,
                   seen_by=seen_by or []), **extra}


def test_gossip_history_follows_relays() -> None:
    space = Space()
    body = b"cpu high on node 7 " * 20
    space.feed(MESSAGE, "m", "origin", 1, message(content=compress(body), compression="GZIP", seen_by=["origin"]))
    space.feed(MESSAGE, "m", "r1", 2, message(hop=1, ttl=19, content=compress(body), compression="GZIP",
                                              seen_by=["origin", "r1"]))
    space.feed(MESSAGE, "m", "r2", 3, message(hop=2, ttl=18, content=compress(body), compression="GZIP",
                                              seen_by=["origin", "r1", "r2", "r9"]))
    history = gossip_history(space.store, "m")
    assert history is not None
    assert history["relays"] == 3 and history["seen_by"] == ["origin", "r1", "r2", "r9"]
    assert [h["hop"] for h in history["history"]] == [0, 1, 2]
    assert history["bytes"] < history["body_bytes"]  # real compression, measured


@pytest.mark.parametrize("producer,body,reason", [
    ("r1", message(hop=1, ttl=20), "invalid-ttl"),  # ttl not decremented
    ("r1", message(hop=0, ttl=-1), "invalid-ttl"),
    ("r1", message(hop=0, ttl=20), "sender-mismatch"),
    ("origin", message(compression="UNKNOWN"), "unsupported-compression"),
    ("origin", message(compression="GZIP", content=b"not gzip"), "bad-content"),
    ("origin", message(compression="GZIP", content=gzip.compress(b"\0" * (2 << 20))), "bad-content"),
])
def test_bad_gossip_is_refused(producer: str, body: dict[str, Any], reason: str) -> None:
    space = Space()
    with pytest.raises(InvalidEvent) as refused:
        space.feed(MESSAGE, "m", producer, 1, body)
    assert refused.value.reason == reason and len(space.store) == 0


def test_a_relay_that_alters_the_sender_is_refused() -> None:
    space = Space()
    space.feed(MESSAGE, "m", "origin", 1, message())
    before = canonical_json(dict(space.store.scan("")))
    with pytest.raises(InvalidEvent, match="altered-relay"):
        space.feed(MESSAGE, "m", "r1", 2, message(hop=1, ttl=19, sender="impostor"))
    assert canonical_json(dict(space.store.scan(""))) == before
