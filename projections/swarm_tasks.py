"""Swarm task market (spec §2.5): tasks with skill requirements, scored bids, one winner.

* ``swarm.task_posted`` opens a task (required skills, optional deadline, maximum reward).
  Bidding stays open for ``bid_window_ms`` of event time after the post (or until the
  deadline, whichever is first).
* ``swarm.task_bid`` — from the bidder itself (``agent-mismatch``), with a price ≤ reward,
  a positive time estimate, confidence in [0, 1] and a load ≥ 0 (``invalid-bid``); one
  bid per agent per task (a different second bid is ``duplicate-bid``). The spec's score,
  lower wins: ``max(price × (1 + 0.1 load) × (estimate_ms / 1000) × 1/(confidence + 0.1), 0.01)``.
* **Closing** (the first event of the task's lane at or after the window's end, or the
  ``clock.tick`` a worker writes into a quiet lane, ``projections/ticks.py``) derives one
  ``swarm.task_assigned`` for the best bid among **qualified** bidders — registered, live,
  and serving every required skill, checked against the registry (``reads``) at that moment
  — ties broken by agent id. Like routing, the task's state folds the **recorded**
  assignment, so replay and racing workers agree whatever their registry replica looked
  like. A task nobody qualified for ends UNASSIGNED (no event: ``swarm.task_assigned`` has
  no "none" form).
* ``swarm.task_completed`` must come from the assignee (``not-assignee``) of an ASSIGNED
  task (``not-assigned``); the task becomes COMPLETED or FAILED, and the bid-reliability
  check (``swarm_checks``) reports to the trust network whether the winner kept its estimate.
* Agent load and market metrics are per-lane counters (``load/<agent>/<lane>``,
  ``metrics/<lane>``) — increments commute, so they may be fed from any partition and
  are summed at query time.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, ClassVar

from swarmlog.projections.base import Derived, EventContext, InvalidEvent, Projection, StateStore, Stores
from swarmlog.projections.registry import ACTIVE, get_agent
from swarmlog.projections.swarm_checks import BID_RELIABILITY, bid_outcome, observation
from swarmlog.projections.ticks import TICK, due_ids, due_key

POSTED = "swarm.task_posted"
BID = "swarm.task_bid"
ASSIGNED = "swarm.task_assigned"
COMPLETED = "swarm.task_completed"
DEFAULT_BID_WINDOW_MS = 5_000


def bid_score(price: float, load: int, estimated_ms: int, confidence: float) -> float:
    """The spec's score (lower is better)."""
    load_factor = 1.0 + load * 0.1
    time_factor = estimated_ms / 1000.0
    confidence_factor = 1.0 / (confidence + 0.1)
    return max(price * load_factor * time_factor * confidence_factor, 0.01)


def qualified(registry: StateStore | None, agent_id: str, skills: Iterable[str], now_ms: int) -> bool:
    """Registered, live and serving every skill. Without a registry store, everyone qualifies."""
    if registry is None:
        return True
    agent = get_agent(registry, agent_id, now_ms)
    if agent is None or agent.get("status") != ACTIVE or agent.get("health_status") == "FAILED":
        return False
    have = set(agent.get("capabilities") or [])
    return set(skills) <= have


def _task_key(task_id: str) -> str:
    return f"task/{task_id}"


def _due_key(task: dict[str, Any]) -> str:
    return due_key(task.get("lane", "*"), task["closes_at_ms"], task["task_id"])


class SwarmTaskProjection(Projection):
    """The swarm's task auctions; rules in the module docstring."""

    name: ClassVar[str] = "swarm_tasks"
    event_types: ClassVar[frozenset[str]] = frozenset({POSTED, BID, ASSIGNED, COMPLETED, TICK})
    reads: ClassVar[tuple[str, ...]] = ("registry",)

    def __init__(self, bid_window_ms: int = DEFAULT_BID_WINDOW_MS) -> None:
        self.bid_window_ms = bid_window_ms

    def apply(self, stores: Stores, ctx: EventContext, payload: dict[str, Any]) -> list[Derived]:
        store = stores.own
        if ctx.event_type == TICK:  # a quiet lane's clock (projections/ticks.py)
            return self.expire_due(stores, ctx.timestamp_ms, [ctx.lane])
        task_id = str(payload.get("task_id", ""))
        if not task_id or ctx.subject != task_id:
            raise InvalidEvent("subject-mismatch", f"event keyed {ctx.subject!r} names task {task_id!r}")
        if ctx.event_type == POSTED:
            return self._post(store, ctx, payload)
        task = store.get(_task_key(task_id))
        if not isinstance(task, dict):
            raise InvalidEvent("unknown-task", task_id)
        if ctx.event_type == ASSIGNED:
            self._fold_assignment(store, ctx, task, payload)
            return []
        if ctx.event_type == COMPLETED:
            return self._complete(store, ctx, task, payload)
        self._check_bid(ctx, task, payload)
        derived = self._close_if_due(stores, task, ctx.timestamp_ms)
        if task["status"] == "OPEN":
            self._bid(store, ctx, task, payload)
        else:
            task["late_bids"] += 1
            store.put(_task_key(task_id), task)
        return derived

    # ------------------------------------------------------------------ lifecycle
    def _post(self, store: StateStore, ctx: EventContext, payload: dict[str, Any]) -> list[Derived]:
        task_id = payload["task_id"]
        existing = store.get(_task_key(task_id))
        if isinstance(existing, dict):
            if existing["event_id"] == ctx.event_id:
                return []
            raise InvalidEvent("duplicate-task", task_id)
        if payload["poster"] != ctx.producer:
            raise InvalidEvent("poster-mismatch", f"{payload['poster']} did not sign this task")
        reward = payload["reward"]
        if not (math.isfinite(reward) and reward >= 0) or not 1 <= payload.get("priority", 5) <= 10:
            raise InvalidEvent("invalid-task", "reward must be finite and >= 0, priority 1..10")
        closes = ctx.timestamp_ms + self.bid_window_ms
        if payload.get("deadline_ms") is not None:
            closes = min(closes, payload["deadline_ms"])
        store.put(_task_key(task_id), {
            "task_id": task_id, "poster": payload["poster"], "swarm_id": payload.get("swarm_id"),
            "required_skills": sorted(set(payload["required_skills"])), "reward": reward,
            "priority": payload.get("priority", 5), "deadline_ms": payload.get("deadline_ms"),
            "posted_ms": ctx.timestamp_ms, "closes_at_ms": closes, "status": "OPEN", "event_id": ctx.event_id,
            "bids": {}, "late_bids": 0, "assignee": None, "lane": ctx.lane,
        })
        store.put(due_key(ctx.lane, closes, task_id), task_id)
        self._metric(store, ctx, "posted")
        return []

    def _check_bid(self, ctx: EventContext, task: dict[str, Any], payload: dict[str, Any]) -> None:
        if payload["agent_id"] != ctx.producer:
            raise InvalidEvent("agent-mismatch", f"{payload['agent_id']} did not sign this bid")
        price, conf = payload["bid_price"], payload["confidence"]
        if not (math.isfinite(price) and 0 <= price <= task["reward"]):
            raise InvalidEvent("invalid-bid", f"price must be in [0, reward {task['reward']}]")
        if not (math.isfinite(conf) and 0.0 <= conf <= 1.0) or payload["estimated_completion_ms"] <= 0 \
                or payload["current_load"] < 0:
            raise InvalidEvent("invalid-bid", "confidence in [0, 1], estimate > 0 and load >= 0 required")
        previous = task["bids"].get(payload["agent_id"])
        if previous is not None and previous["event_id"] != ctx.event_id and any(
                previous[k] != payload[k] for k in ("bid_price", "estimated_completion_ms", "confidence",
                                                    "current_load")):
            raise InvalidEvent("duplicate-bid", payload["agent_id"])

    def _bid(self, store: StateStore, ctx: EventContext, task: dict[str, Any], payload: dict[str, Any]) -> None:
        agent = payload["agent_id"]
        if agent in task["bids"]:
            return  # the identical bid again
        task["bids"][agent] = {
            "bid_price": payload["bid_price"], "estimated_completion_ms": payload["estimated_completion_ms"],
            "confidence": payload["confidence"], "current_load": payload["current_load"], "event_id": ctx.event_id,
            "score": bid_score(payload["bid_price"], payload["current_load"], payload["estimated_completion_ms"],
                               payload["confidence"]),
        }
        store.put(_task_key(task["task_id"]), task)
        self._metric(store, ctx, "bids")

    def _close_if_due(self, stores: Stores, task: dict[str, Any], now_ms: int) -> list[Derived]:
        if task["status"] != "OPEN" or now_ms < task["closes_at_ms"]:
            return []
        store = stores.own
        store.delete(_due_key(task))
        registry = stores.others.get("registry")
        ranked = sorted((bid["score"], agent, bid) for agent, bid in task["bids"].items()
                        if qualified(registry, agent, task["required_skills"], now_ms))
        task["status"] = "CLOSED" if ranked else "UNASSIGNED"
        store.put(_task_key(task["task_id"]), task)
        if not ranked:
            return []
        score, agent, bid = ranked[0]
        return [Derived(ASSIGNED, {"task_id": task["task_id"], "agent_id": agent, "bid_price": bid["bid_price"],
                                   "score": score, "bid_count": len(task["bids"])}, task["task_id"])]

    def expire_due(self, stores: Stores, now_ms: int, lanes: Iterable[str] | None = None) -> list[Derived]:
        """Close every open auction whose window ended at or before ``now_ms`` (in ``lanes``, or all)."""
        derived: list[Derived] = []
        for task_id in due_ids(stores.own, now_ms, lanes):
            task = stores.own.get(_task_key(task_id))
            if isinstance(task, dict):
                derived += self._close_if_due(stores, task, now_ms)
        return derived

    def _fold_assignment(self, store: StateStore, ctx: EventContext, task: dict[str, Any],
                         payload: dict[str, Any]) -> None:
        if task["assignee"] is not None:
            return  # a second worker's copy of the same close
        if payload["agent_id"] not in task["bids"]:
            raise InvalidEvent("not-a-bidder", payload["agent_id"])
        if task["status"] == "OPEN":
            store.delete(_due_key(task))
        task.update(status="ASSIGNED", assignee=payload["agent_id"], price=payload["bid_price"],
                    score=payload["score"], assigned_event=ctx.event_id)
        store.put(_task_key(task["task_id"]), task)
        self._load(store, ctx, payload["agent_id"], +1)
        self._metric(store, ctx, "assigned")

    def _complete(self, store: StateStore, ctx: EventContext, task: dict[str, Any],
                  payload: dict[str, Any]) -> list[Derived]:
        if task["status"] in ("COMPLETED", "FAILED") and task.get("completed_event") == ctx.event_id:
            return []
        if task["status"] != "ASSIGNED":
            raise InvalidEvent("not-assigned", f"task {task['task_id']} is {task['status']}")
        if payload["agent_id"] != task["assignee"] or ctx.producer != task["assignee"]:
            raise InvalidEvent("not-assignee", payload["agent_id"])
        if payload["duration_ms"] < 0:
            raise InvalidEvent("invalid-completion", "duration_ms must be >= 0")
        # bid reliability (swarm_checks): did the winner keep the estimate it won with?
        promised = task["bids"][task["assignee"]]["estimated_completion_ms"]
        kept = bid_outcome(payload["success"], payload["duration_ms"], promised)
        task.update(status="COMPLETED" if payload["success"] else "FAILED", duration_ms=payload["duration_ms"],
                    completed_event=ctx.event_id, bid_kept=kept)
        store.put(_task_key(task["task_id"]), task)
        self._load(store, ctx, task["assignee"], -1)
        self._metric(store, ctx, "completed" if payload["success"] else "failed")
        skills = task["required_skills"]
        return [observation(task["assignee"], kept, BID_RELIABILITY, duration_ms=payload["duration_ms"],
                            capability=skills[0] if len(skills) == 1 else None)]

    # ------------------------------------------------------------------ commutative counters
    @staticmethod
    def _lane(ctx: EventContext) -> str:
        return ctx.lane.replace("/", ":")

    def _load(self, store: StateStore, ctx: EventContext, agent: str, delta: int) -> None:
        key = f"load/{agent}/{self._lane(ctx)}"
        value = store.get(key)
        store.put(key, (value if isinstance(value, int) else 0) + delta)

    def _metric(self, store: StateStore, ctx: EventContext, name: str) -> None:
        key = f"metrics/{self._lane(ctx)}"
        metrics = store.get(key) or {}
        assert isinstance(metrics, dict)
        metrics[name] = metrics.get(name, 0) + 1
        store.put(key, metrics)


# ---------------------------------------------------------------------------- queries
def get_task(store: StateStore, task_id: str) -> dict[str, Any] | None:
    task = store.get(_task_key(task_id))
    return task if isinstance(task, dict) else None


def agent_load(store: StateStore, agent: str) -> int:
    return sum(v for _, v in store.scan(f"load/{agent}/") if isinstance(v, int))


def market_metrics(store: StateStore) -> dict[str, float]:
    """Open / assigned / completed tasks and the mean bids per task (competition)."""
    totals: dict[str, int] = {}
    for _key, metrics in store.scan("metrics/"):
        assert isinstance(metrics, dict)
        for name, value in metrics.items():
            totals[name] = totals.get(name, 0) + int(value)
    posted = totals.get("posted", 0)
    assigned = totals.get("assigned", 0)
    done = totals.get("completed", 0) + totals.get("failed", 0)
    return {"posted": posted, "open": posted - assigned - _unassigned(store), "assigned": assigned - done,
            "completed": totals.get("completed", 0), "failed": totals.get("failed", 0),
            "competition": totals.get("bids", 0) / posted if posted else 0.0}


def _unassigned(store: StateStore) -> int:
    return sum(1 for _, t in store.scan("task/") if isinstance(t, dict) and t["status"] == "UNASSIGNED")
