"""Swarm space: pheromone fields, positions and formations, gossip propagation — as projections.

Each key is fed from one lane (the schemas' subjects): a pheromone field is one key
(``field_id``), a position belongs to its agent, a formation to its swarm, a gossip
message to its id. Steering, formation targets and swarm-wide metrics are **queries**
over the stored positions (pure functions from ``flocking``), so they never write a key
from another lane.
"""

from __future__ import annotations

import math
import zlib
from typing import Any, ClassVar

from swarmlog.projections.base import Derived, EventContext, InvalidEvent, Projection, StateStore, Stores
from swarmlog.projections.flocking import (
    SHAPES,
    Boid,
    FlockParams,
    assign_nearest,
    assign_slots,
    flocking_force,
    formation_error,
    formation_slots,
    min_pair_distance,
    polarization,
)
from swarmlog.projections.gossip import initial_ttl
from swarmlog.projections.registry import get_agent
from swarmlog.projections.stigmergy import FieldParams, PheromoneField
from swarmlog.projections.swarm_checks import (
    ALERT_CONTENT_TYPE,
    PHEROMONE_SPOOFING,
    AlertError,
    alert_observation,
    classify_alert,
    deposit_speed_ok,
    observation,
    parse_alert,
)

PHEROMONE = "swarm.pheromone"
POSITION = "swarm.position"
FORMATION = "swarm.formation"
MESSAGE = "swarm.message"
MAX_CONTENT_BYTES = 1 << 20  # a decompressed gossip body larger than this is refused (zip bombs)
MAX_HISTORY = 64


def _finite(*values: Any) -> bool:
    return all(isinstance(v, int | float) and math.isfinite(v) for v in values)


class SwarmSpaceProjection(Projection):
    """Pheromone fields, agent positions, formations and gossip histories (see module docstring)."""

    name: ClassVar[str] = "swarm_space"
    event_types: ClassVar[frozenset[str]] = frozenset({PHEROMONE, POSITION, FORMATION, MESSAGE})
    #: alert validation reads the registry (replica in a worker); without it alerts go unchecked
    reads: ClassVar[tuple[str, ...]] = ("registry",)

    def __init__(self, field_params: FieldParams | None = None) -> None:
        self.field_params = field_params or FieldParams()

    def apply(self, stores: Stores, ctx: EventContext, payload: dict[str, Any]) -> list[Derived]:
        store = stores.own
        if ctx.event_type == PHEROMONE:
            self._deposit(store, ctx, payload)
        elif ctx.event_type == POSITION:
            self._position(store, ctx, payload)
        elif ctx.event_type == FORMATION:
            self._formation(store, ctx, payload)
        else:
            return self._message(stores, ctx, payload)
        return []

    # ------------------------------------------------------------------ pheromones
    def _deposit(self, store: StateStore, ctx: EventContext, p: dict[str, Any]) -> None:
        if ctx.subject != p["field_id"]:
            raise InvalidEvent("subject-mismatch", f"event keyed {ctx.subject!r} names field {p['field_id']!r}")
        if p["depositor"] != ctx.producer:  # pheromone spoofing: marks in another agent's name
            raise InvalidEvent("depositor-mismatch", "a deposit is its depositor's own statement",
                               [observation(ctx.producer, "FAILURE", PHEROMONE_SPOOFING)])
        if not (_finite(p["intensity"]) and 0.0 <= p["intensity"] <= 1.0) or not p["pheromone_type"]:
            raise InvalidEvent("invalid-deposit", "intensity must be in [0, 1] and the type non-empty")
        trail_key = f"trail/{p['field_id']}/{ctx.producer}"
        last = store.get(trail_key)
        if not deposit_speed_ok(last if isinstance(last, dict) else None, p["x"], p["y"], ctx.timestamp_ms):
            # pheromone spoofing: a depositor cannot be in two places faster than it can move
            raise InvalidEvent("pheromone-spoofing", f"{ctx.producer} cannot reach ({p['x']}, {p['y']}) "
                               f"from its last deposit {last} by {ctx.timestamp_ms}",
                               [observation(ctx.producer, "FAILURE", PHEROMONE_SPOOFING)])
        if not isinstance(last, dict) or ctx.timestamp_ms >= last["ts"]:
            store.put(trail_key, {"x": p["x"], "y": p["y"], "ts": ctx.timestamp_ms})
        key = f"field/{p['field_id']}"
        state = store.get(key)
        field = PheromoneField.from_json(state, self.field_params) if isinstance(state, dict) \
            else PheromoneField(self.field_params)
        field.deposit(p["x"], p["y"], p["pheromone_type"], p["intensity"], ctx.timestamp_ms)
        store.put(key, field.to_json())

    # ------------------------------------------------------------------ positions and formations
    def _position(self, store: StateStore, ctx: EventContext, p: dict[str, Any]) -> None:
        if ctx.subject != p["agent_id"] or p["agent_id"] != ctx.producer:
            raise InvalidEvent("agent-mismatch", "a position is reported by the agent itself, keyed by it")
        if not _finite(p["x"], p["y"], p["vx"], p["vy"]):
            raise InvalidEvent("invalid-position", "coordinates and velocity must be finite")
        key = f"pos/{p['agent_id']}"
        old = store.get(key)
        if isinstance(old, dict) and old["ts"] > ctx.timestamp_ms:
            return  # an older report arriving late never moves an agent back in time
        store.put(key, {"agent_id": p["agent_id"], "swarm_id": p.get("swarm_id"), "x": p["x"], "y": p["y"],
                        "vx": p["vx"], "vy": p["vy"], "ts": ctx.timestamp_ms})

    def _formation(self, store: StateStore, ctx: EventContext, p: dict[str, Any]) -> None:
        if ctx.subject != p["swarm_id"]:
            raise InvalidEvent("subject-mismatch", f"event keyed {ctx.subject!r} names swarm {p['swarm_id']!r}")
        if p["shape"] not in SHAPES:
            raise InvalidEvent("invalid-formation", f"unknown shape {p['shape']!r}")
        if not (_finite(p["anchor_x"], p["anchor_y"], p["spacing"], p.get("heading_rad", 0.0)) and p["spacing"] > 0):
            raise InvalidEvent("invalid-formation", "anchor, spacing (> 0) and heading must be finite")
        store.put(f"formation/{p['swarm_id']}", {
            "swarm_id": p["swarm_id"], "shape": p["shape"], "anchor": [p["anchor_x"], p["anchor_y"]],
            "spacing": p["spacing"], "heading_rad": p.get("heading_rad", 0.0), "members": list(p.get("members", [])),
            "ordered_by": ctx.producer, "ts": ctx.timestamp_ms})

    # ------------------------------------------------------------------ gossip
    def _message(self, stores: Stores, ctx: EventContext, p: dict[str, Any]) -> list[Derived]:
        store = stores.own
        if ctx.subject != p["message_id"]:
            raise InvalidEvent("subject-mismatch", f"event keyed {ctx.subject!r} names message {p['message_id']!r}")
        hop, ttl = p.get("hop", 0), p["ttl"]
        if ttl < 0 or hop < 0 or ttl + hop != initial_ttl(p["scope"]):
            raise InvalidEvent("invalid-ttl", f"ttl {ttl} + hop {hop} must equal the {p['scope']} TTL")
        if hop == 0 and p["sender"] != ctx.producer:
            raise InvalidEvent("sender-mismatch", "hop 0 is the sender's own message")
        body = self._body(p)
        alert = None
        if p["scope"] == "GLOBAL_ALERT" and p.get("content_type") == ALERT_CONTENT_TYPE:
            try:
                alert = parse_alert(body)
            except AlertError as exc:
                raise InvalidEvent("invalid-alert", str(exc)) from None
        key = f"msg/{p['message_id']}"
        state = store.get(key)
        if not isinstance(state, dict):  # the first copy folded; a relay may arrive before the original
            state = {"message_id": p["message_id"], "sender": p["sender"], "scope": p["scope"],
                     "first_seen_hop": hop, "seen_by": [], "relays": 0, "history": [], "bytes": len(p["content"]),
                     "body_bytes": len(body)}
        elif state["sender"] != p["sender"] or state["scope"] != p["scope"]:
            raise InvalidEvent("altered-relay", "a relay must carry the original sender and scope")
        derived: list[Derived] = []
        if alert is not None and hop == 0 and "alert" not in state:
            kind, agent_id, claimed = alert
            state["alert"] = {"kind": kind, "agent_id": agent_id, "claimed_severity": claimed}
            derived = self._validate_alert(stores, ctx, kind, agent_id)
        seen = set(state["seen_by"]) | set(p.get("seen_by", [])) | {ctx.producer}
        state["seen_by"] = sorted(seen)
        state["relays"] += 1
        if len(state["history"]) < MAX_HISTORY:
            state["history"].append({"by": ctx.producer, "hop": hop, "ttl": ttl, "ts": ctx.timestamp_ms})
        store.put(key, state)
        return derived

    @staticmethod
    def _validate_alert(stores: Stores, ctx: EventContext, kind: str, agent_id: str) -> list[Derived]:
        """Alert validation (swarm_checks): the registry confirms the claim or exposes a false alarm.

        The verdict only leaves as a recorded observation; this projection's state never depends
        on the registry replica (another lane), so replay and live tables stay equal. Without a
        registry (a bare replay) there is nothing to check against and nothing is reported.
        """
        registry = stores.others.get("registry")
        if registry is None:
            return []
        confirmed, _severity = classify_alert(kind, get_agent(registry, agent_id, ctx.timestamp_ms))
        return [alert_observation(ctx.producer, confirmed)]

    @staticmethod
    def _body(p: dict[str, Any]) -> bytes:
        codec, content = p.get("compression", "NONE"), p["content"]
        if codec == "NONE":
            return bytes(content)
        if codec != "GZIP":
            raise InvalidEvent("unsupported-compression", str(codec))
        try:
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            body = inflater.decompress(content, MAX_CONTENT_BYTES)
            if inflater.unconsumed_tail:
                raise InvalidEvent("bad-content", f"decompressed body exceeds {MAX_CONTENT_BYTES} bytes")
        except zlib.error as exc:
            raise InvalidEvent("bad-content", f"GZIP content does not decompress: {exc}") from None
        return body


# ---------------------------------------------------------------------------- queries
def pheromone_field(store: StateStore, field_id: str, params: FieldParams | None = None,
                    at_ms: int | None = None) -> PheromoneField | None:
    """The field as of its last deposit, or advanced to ``at_ms`` (a read: nothing is written)."""
    state = store.get(f"field/{field_id}")
    if not isinstance(state, dict):
        return None
    field = PheromoneField.from_json(state, params)
    if at_ms is not None:
        field.advance_to(at_ms)
    return field


def swarm_boids(store: StateStore, swarm_id: str) -> dict[str, Boid]:
    return {v["agent_id"]: Boid(v["x"], v["y"], v["vx"], v["vy"]) for _, v in store.scan("pos/")
            if isinstance(v, dict) and v.get("swarm_id") == swarm_id}


def steering(store: StateStore, swarm_id: str, params: FlockParams | None = None) -> dict[str, tuple[float, float]]:
    """Each member's flocking acceleration from the latest reported positions."""
    boids = swarm_boids(store, swarm_id)
    p = params or FlockParams()
    return {agent: flocking_force(agent, boids, p) for agent in sorted(boids)}


def formation_targets(store: StateStore, swarm_id: str) -> dict[str, tuple[float, float]]:
    """Slot per member of the swarm's current formation: in the order the command lists, or,
    for "all members", each agent to a near slot (``assign_nearest``)."""
    order = store.get(f"formation/{swarm_id}")
    if not isinstance(order, dict):
        return {}
    boids = swarm_boids(store, swarm_id)
    members = order["members"] or sorted(boids)
    slots = formation_slots(order["shape"], len(members), (order["anchor"][0], order["anchor"][1]),
                            order["spacing"], order["heading_rad"])
    if order["members"]:
        return assign_slots(members, slots)
    return assign_nearest(boids, slots)  # no order given: nearest slots, short uncrossed paths


def swarm_metrics(store: StateStore, swarm_id: str) -> dict[str, float]:
    boids = swarm_boids(store, swarm_id)
    targets = {k: v for k, v in formation_targets(store, swarm_id).items() if k in boids}
    return {"members": len(boids), "polarization": polarization(boids) if boids else 0.0,
            "formation_error": formation_error(boids, targets),
            "min_distance": min_pair_distance(boids) if len(boids) > 1 else math.inf}


def gossip_history(store: StateStore, message_id: str) -> dict[str, Any] | None:
    state = store.get(f"msg/{message_id}")
    return state if isinstance(state, dict) else None
