"""Auction rules: sealed-bid commitments, the Vickrey outcome, and the spec's Dutch task auction.

Two mechanisms (spec: ``AuctionMechanism`` for scarce capabilities; §2.5 task markets):

* **Sealed-bid second-price (Vickrey)** on AUCTION listings (``market.bid`` →
  ``market.bid_revealed`` → ``market.auction_closed``; folded by ``market.MarketProjection``).
  A sealed bid publishes only ``commitment_of(amount, nonce, bidder)``; after bidding
  closes the bidder reveals amount and nonce. ``auction_outcome``: among the *revealed*
  bids at or above the reserve, the highest wins (ties: the earlier bid) and pays the
  second-highest revealed amount, or the reserve if it is alone (truthful bidding is the
  dominant strategy). Unrevealed bids never win and never set the price. Open (not
  sealed) auctions are ascending: the highest bid wins and pays its own amount.
* **Dutch task auction** on the swarm task market (``swarm.task_posted`` / ``task_bid`` /
  ``task_assigned`` / ``task_completed``, keyed by task id; ``TaskMarketProjection``):
  the poster's reward is the ceiling, bids ask at most that, and the **lowest score**
  wins, ``score = max(bid_price × load_factor × time_factor × confidence_factor, 0.01)``
  with ``load_factor = 1 + 0.1 current_load``, ``time_factor = estimated_ms / 1000`` and
  ``confidence_factor = 1 / (confidence + 0.1)`` (spec §2.5). The poster closes the
  auction with ``swarm.task_assigned``; the projection recomputes the winner from the
  folded bids and refuses a claim that differs.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

from swarmlog.projections.base import Derived, EventContext, InvalidEvent, Projection, StateStore, Stores

MIN_SCORE = 0.01
LOAD_WEIGHT = 0.1
CONFIDENCE_OFFSET = 0.1
MAX_PARTITIONS = 256


# ---------------------------------------------------------------------------- sealed bids
def commitment_of(amount: float, nonce: bytes, bidder: str) -> bytes:
    """SHA-256 over (amount as big-endian IEEE double, nonce length, nonce, bidder UTF-8): the bid's commitment.

    The bidder is inside the hash so a commitment copied by someone else cannot be opened by them.
    """
    return hashlib.sha256(struct.pack(">dI", float(amount), len(nonce)) + nonce + bidder.encode()).digest()


def auction_outcome(bids: Sequence[Mapping[str, Any]], reserve: float | None, sealed: bool) -> dict[str, Any]:
    """The AuctionClosed fields for ``bids`` in placement order (see the module doc)."""
    floor = reserve or 0.0
    valid = [(i, b) for i, b in enumerate(bids) if b["revealed"] and b["amount"] is not None and b["amount"] >= floor]
    if not valid:
        return {"winning_bid_id": None, "winner": None, "clearing_price": None, "bid_count": 0}
    ranked = sorted(valid, key=lambda ib: (-ib[1]["amount"], ib[0]))
    winner = ranked[0][1]
    price = (max(ranked[1][1]["amount"], floor) if len(ranked) > 1 else floor) if sealed else winner["amount"]
    return {"winning_bid_id": winner["bid_id"], "winner": winner["bidder"], "clearing_price": float(price),
            "bid_count": len(valid)}


# ---------------------------------------------------------------------------- Dutch task auction
def task_bid_score(bid_price: float, current_load: int, estimated_completion_ms: int, confidence: float) -> float:
    """The spec's bid score (lower is better)."""
    load_factor = 1.0 + current_load * LOAD_WEIGHT
    time_factor = estimated_completion_ms / 1000.0
    confidence_factor = 1.0 / (confidence + CONFIDENCE_OFFSET)
    return max(bid_price * load_factor * time_factor * confidence_factor, MIN_SCORE)


def dutch_winner(bids: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The lowest-scoring bid; ties go to the earlier bid (``seq``)."""
    return min(bids, key=lambda b: (b["score"], b["seq"]), default=None)


def _partition(lane: str) -> int:
    try:
        return int(lane.rsplit("/", 1)[1])
    except (IndexError, ValueError):
        raise InvalidEvent("invalid-payload", f"lane {lane!r} has no partition") from None


class TaskMarketProjection(Projection):
    """The swarm task market: tasks, Dutch-auction bids, assignment, completion, agent load and counts.

    Keys: ``task/<task_id>`` (one task partition), ``load/<agent>/<partition>`` and
    ``counts/<partition>`` (written only by tasks of that partition; queries sum over
    partitions), so every key has one writer partition.
    """

    name: ClassVar[str] = "taskmarket"
    event_types: ClassVar[frozenset[str]] = frozenset({
        "swarm.task_posted", "swarm.task_bid", "swarm.task_assigned", "swarm.task_completed",
    })

    def apply(self, stores: Stores, ctx: EventContext, payload: dict[str, Any]) -> list[Derived]:
        own = stores.own
        try:
            if ctx.event_type == "swarm.task_posted":
                self._posted(own, ctx, payload)
            elif ctx.event_type == "swarm.task_bid":
                self._bid(own, ctx, payload)
            elif ctx.event_type == "swarm.task_assigned":
                self._assigned(own, ctx, payload)
            elif ctx.event_type == "swarm.task_completed":
                self._completed(own, ctx, payload)
            else:
                raise InvalidEvent("unexpected-event-type", ctx.event_type)
        except (KeyError, TypeError) as exc:
            raise InvalidEvent("invalid-payload", f"{type(exc).__name__}: {exc}") from None
        return []

    @staticmethod
    def _count(own: StateStore, ctx: EventContext, **deltas: int) -> None:
        key = f"counts/{_partition(ctx.lane)}"
        counts = dict(own.get(key) or {})
        for name, delta in deltas.items():
            counts[name] = counts.get(name, 0) + delta
        own.put(key, counts)

    @staticmethod
    def _load(own: StateStore, ctx: EventContext, agent: str, delta: int) -> None:
        key = f"load/{agent}/{_partition(ctx.lane)}"
        own.put(key, (own.get(key) or 0) + delta)

    @staticmethod
    def _task(own: StateStore, task_id: Any) -> dict[str, Any]:
        task = own.get(f"task/{task_id}")
        if task is None:
            raise InvalidEvent("unknown-task", str(task_id))
        return dict(task)

    def _posted(self, own: StateStore, ctx: EventContext, p: dict[str, Any]) -> None:
        task_id = p["task_id"]
        if not isinstance(task_id, str) or not task_id or ctx.subject != task_id:
            raise InvalidEvent("invalid-payload", "task_id must be the subject")
        if p["poster"] != ctx.producer:
            raise InvalidEvent("producer-mismatch", "the poster must be the producer")
        reward = p["reward"]
        if not isinstance(reward, int | float) or not math.isfinite(reward) or reward < 0:
            raise InvalidEvent("invalid-payload", "reward must be a finite number >= 0")
        if own.get(f"task/{task_id}") is not None:
            raise InvalidEvent("duplicate-task", task_id)
        own.put(f"task/{task_id}", {
            "task_id": task_id, "poster": p["poster"], "required_skills": list(p["required_skills"]),
            "reward": float(reward), "deadline_ms": p.get("deadline_ms"), "priority": p.get("priority", 5),
            "status": "OPEN", "bids": {}, "posted_ms": ctx.timestamp_ms, "assigned": None,
        })
        self._count(own, ctx, open=1)

    def _bid(self, own: StateStore, ctx: EventContext, p: dict[str, Any]) -> None:
        task = self._task(own, p["task_id"])
        agent = p["agent_id"]
        if agent != ctx.producer:
            raise InvalidEvent("producer-mismatch", "the bidder must be the producer")
        if task["status"] != "OPEN":
            raise InvalidEvent("task-closed", f"{task['task_id']} is {task['status']}")
        if task["deadline_ms"] is not None and ctx.timestamp_ms > task["deadline_ms"]:
            raise InvalidEvent("bid-too-late", f"deadline {task['deadline_ms']}")
        price, confidence = p["bid_price"], p["confidence"]
        eta, load = p["estimated_completion_ms"], p["current_load"]
        if not (0.0 <= price <= task["reward"]):
            raise InvalidEvent("bid-above-reward", f"{price} not in [0, {task['reward']}]")
        if not 0.0 <= confidence <= 1.0 or eta < 0 or load < 0:
            raise InvalidEvent("invalid-payload", "confidence in [0,1], estimated_completion_ms and load >= 0")
        score = task_bid_score(price, load, eta, confidence)
        task["bids"] = {**task["bids"], agent: {"agent_id": agent, "bid_price": float(price), "score": score,
                                                "seq": len(task["bids"]) if agent not in task["bids"]
                                                else task["bids"][agent]["seq"]}}
        own.put(f"task/{task['task_id']}", task)

    def _assigned(self, own: StateStore, ctx: EventContext, p: dict[str, Any]) -> None:
        task = self._task(own, p["task_id"])
        if ctx.producer != task["poster"]:
            raise InvalidEvent("producer-mismatch", "only the poster closes its task auction")
        if task["status"] != "OPEN":
            raise InvalidEvent("task-closed", f"{task['task_id']} is {task['status']}")
        best = dutch_winner(task["bids"].values())
        if best is None:
            raise InvalidEvent("no-bids", task["task_id"])
        if (p["agent_id"] != best["agent_id"] or p["bid_count"] != len(task["bids"])
                or not math.isclose(p["score"], best["score"], rel_tol=1e-12)
                or not math.isclose(p["bid_price"], best["bid_price"], rel_tol=1e-12)):
            raise InvalidEvent("auction-mismatch", f"lowest score is {best['agent_id']} ({best['score']})")
        task.update({"status": "ASSIGNED", "assigned": best["agent_id"], "price": best["bid_price"],
                     "score": best["score"], "assigned_ms": ctx.timestamp_ms})
        own.put(f"task/{task['task_id']}", task)
        self._count(own, ctx, open=-1, assigned=1)
        self._load(own, ctx, best["agent_id"], 1)

    def _completed(self, own: StateStore, ctx: EventContext, p: dict[str, Any]) -> None:
        task = self._task(own, p["task_id"])
        if task["status"] != "ASSIGNED" or p["agent_id"] != task["assigned"] or ctx.producer != task["assigned"]:
            raise InvalidEvent("not-assigned", f"{task['task_id']} is {task['status']} to {task['assigned']}")
        task.update({"status": "COMPLETED" if p["success"] else "FAILED", "duration_ms": p["duration_ms"],
                     "completed_ms": ctx.timestamp_ms})
        own.put(f"task/{task['task_id']}", task)
        self._count(own, ctx, assigned=-1, completed=1 if p["success"] else 0, failed=0 if p["success"] else 1)
        self._load(own, ctx, task["assigned"], -1)


def task_market_metrics(store: StateStore) -> dict[str, int]:
    """Open / assigned / completed / failed task counts over every partition."""
    total: dict[str, int] = {"open": 0, "assigned": 0, "completed": 0, "failed": 0}
    for partition in range(MAX_PARTITIONS):
        for name, value in (store.get(f"counts/{partition}") or {}).items():
            total[name] = total.get(name, 0) + value
    return total


def agent_task_load(store: StateStore, agent: str) -> int:
    """Tasks assigned to ``agent`` and not yet completed."""
    return sum(store.get(f"load/{agent}/{p}") or 0 for p in range(MAX_PARTITIONS))
