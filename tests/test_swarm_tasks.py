"""Swarm task market: the spec's bid score, qualified winners only, one assignment, lifecycle."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarmlog.projections.base import Derived, EventContext, InvalidEvent, MemoryStore, Stores, canonical_json
from swarmlog.projections.registry import RegistryProjection
from swarmlog.projections.swarm_tasks import (
    ASSIGNED,
    BID,
    COMPLETED,
    POSTED,
    SwarmTaskProjection,
    agent_load,
    bid_score,
    get_task,
    market_metrics,
)


class Market:
    def __init__(self, agents: dict[str, list[str]] | None = None) -> None:
        self.registry = MemoryStore()
        self.store = MemoryStore()
        self.projection = SwarmTaskProjection(bid_window_ms=1_000)
        self.seq = 0
        self.assigned: list[dict[str, Any]] = []
        self.observations: list[dict[str, Any]] = []  # trust evidence from the bid-reliability check
        reg = RegistryProjection()
        for agent, caps in (agents or {}).items():
            self.seq += 1
            ctx = EventContext(f"r{self.seq}", "agents.registered", agent, agent, 0, "agents/0", self.seq, "r")
            reg.apply(Stores(self.registry), ctx, dict(agent_id=agent, address="a", capabilities=caps,
                                                       max_concurrency=4))

    def feed(self, event_type: str, task: str, producer: str, ts: int, payload: dict[str, Any]) -> list[Derived]:
        self.seq += 1
        ctx = EventContext(f"e{self.seq}", event_type, producer, task, ts, "swarm/1", self.seq, "s")
        derived = self.projection.apply(Stores(self.store, {"registry": self.registry}), ctx, payload)
        for d in derived:
            if d.event_type == "trust.observation":  # folded by the trust domain, not here
                self.observations.append(d.payload)
                continue
            self.assigned.append(d.payload)
            self.feed(d.event_type, d.subject or "", "did:key:worker", ts, d.payload)
        return derived

    def post(self, task: str, skills: list[str], reward: float = 100.0, ts: int = 0) -> None:
        self.feed(POSTED, task, "poster", ts, dict(task_id=task, poster="poster", swarm_id=None, description="",
                                                   required_skills=skills, deadline_ms=None, reward=reward,
                                                   priority=5, payload=None))

    def bid(self, task: str, agent: str, price: float = 10.0, ms: int = 1000, conf: float = 0.9, load: int = 0,
            ts: int = 10) -> None:
        self.feed(BID, task, agent, ts, dict(task_id=task, agent_id=agent, bid_price=price,
                                             estimated_completion_ms=ms, confidence=conf, current_load=load))

    def close(self, task: str, ts: int = 5_000) -> dict[str, Any]:
        for d in self.projection.expire_due(Stores(self.store, {"registry": self.registry}), ts):
            self.assigned.append(d.payload)
            self.feed(d.event_type, d.subject or "", "did:key:worker", ts, d.payload)
        for d in self.projection.expire_due(Stores(self.store, {"registry": self.registry}), ts):
            raise AssertionError(f"closed twice: {d}")
        result = get_task(self.store, task)
        assert result is not None
        return result


def test_bid_score_is_the_spec_formula() -> None:
    assert bid_score(10.0, 2, 3000, 0.9) == pytest.approx(10.0 * 1.2 * 3.0 * (1 / 1.0))
    assert bid_score(0.0, 0, 1000, 1.0) == 0.01  # floored


def test_lowest_score_among_qualified_agents_wins_and_load_updates() -> None:
    m = Market({"cheap-unqualified": ["gpu"], "good": ["gpu", "cuda"], "pricey": ["gpu", "cuda"]})
    m.post("t1", ["gpu", "cuda"])
    m.bid("t1", "cheap-unqualified", price=1.0)
    m.bid("t1", "good", price=10.0)
    m.bid("t1", "pricey", price=20.0)
    m.bid("t1", "stranger", price=0.5)  # not registered at all
    derived = m.projection.expire_due(Stores(m.store, {"registry": m.registry}), 2_000)
    assert [d.payload["agent_id"] for d in derived] == ["good"] and derived[0].payload["bid_count"] == 4
    m.feed(ASSIGNED, "t1", "did:key:worker", 2_000, derived[0].payload)  # the recorded assignment
    task = get_task(m.store, "t1")
    assert task is not None and task["status"] == "ASSIGNED" and task["assignee"] == "good"
    assert agent_load(m.store, "good") == 1
    m.feed(COMPLETED, "t1", "good", 3_000, dict(task_id="t1", agent_id="good", success=True, duration_ms=900,
                                                result_hash=None, detail=""))
    assert agent_load(m.store, "good") == 0 and get_task(m.store, "t1")["status"] == "COMPLETED"  # type: ignore[index]
    metrics = market_metrics(m.store)
    assert (metrics["posted"], metrics["completed"], metrics["open"], metrics["competition"]) == (1, 1, 0, 4.0)


def test_a_bid_after_the_window_closes_the_auction_first_and_is_late() -> None:
    m = Market({"a": ["x"], "b": ["x"]})
    m.post("t", ["x"])
    m.bid("t", "a", price=50.0)
    m.bid("t", "b", price=1.0, ts=1_500)  # after the 1 s window: closes with a's bid only
    task = get_task(m.store, "t")
    assert task is not None and task["assignee"] == "a" and task["late_bids"] == 1
    assert len(m.assigned) == 1


def test_nobody_qualified_leaves_the_task_unassigned() -> None:
    m = Market({"a": ["x"]})
    m.post("t", ["y"])
    m.bid("t", "a")
    task = m.close("t")
    assert task["status"] == "UNASSIGNED" and m.assigned == []
    assert market_metrics(m.store)["open"] == 0


def test_only_the_assignee_completes_and_only_once_assigned() -> None:
    m = Market({"a": ["x"], "b": ["x"]})
    m.post("t", ["x"])
    done = dict(task_id="t", agent_id="a", success=True, duration_ms=1, result_hash=None, detail="")
    with pytest.raises(InvalidEvent, match="not-assigned"):
        m.feed(COMPLETED, "t", "a", 20, done)
    m.bid("t", "a")
    m.close("t")
    with pytest.raises(InvalidEvent, match="not-assignee"):
        m.feed(COMPLETED, "t", "b", 6_000, {**done, "agent_id": "b"})
    with pytest.raises(InvalidEvent, match="invalid-completion"):
        m.feed(COMPLETED, "t", "a", 6_000, {**done, "duration_ms": -5})


@pytest.mark.parametrize("change,reason", [
    ({"agent_id": "someone-else"}, "agent-mismatch"),
    ({"bid_price": 1e9}, "invalid-bid"),
    ({"confidence": 1.5}, "invalid-bid"),
    ({"estimated_completion_ms": 0}, "invalid-bid"),
    ({"current_load": -1}, "invalid-bid"),
    ({"task_id": "nope"}, "unknown-task"),
])
def test_bad_bids_are_refused_without_writing(change: dict[str, Any], reason: str) -> None:
    m = Market({"a": ["x"]})
    m.post("t", ["x"])
    before = canonical_json(dict(m.store.scan("")))
    body = {**dict(task_id="t", agent_id="a", bid_price=5.0, estimated_completion_ms=100, confidence=0.5,
                   current_load=0), **change}
    with pytest.raises(InvalidEvent) as refused:
        m.feed(BID, body["task_id"], "a", 10, body)
    assert refused.value.reason == reason
    assert canonical_json(dict(m.store.scan(""))) == before


def test_a_second_different_bid_is_a_duplicate_and_a_second_assignment_is_a_no_op() -> None:
    m = Market({"a": ["x"]})
    m.post("t", ["x"])
    m.bid("t", "a", price=5.0)
    with pytest.raises(InvalidEvent, match="duplicate-bid"):
        m.bid("t", "a", price=4.0)
    m.close("t")
    before = canonical_json(dict(m.store.scan("")))
    m.feed(ASSIGNED, "t", "did:key:worker2", 6_000, m.assigned[0])
    assert canonical_json(dict(m.store.scan(""))) == before


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abcdef"), st.floats(0, 100), st.integers(1, 10_000), st.floats(0, 1),
                          st.integers(0, 9)), min_size=1, max_size=12, unique_by=lambda b: b[0]),
       st.randoms(use_true_random=False))
def test_exactly_one_winner_and_it_has_the_best_qualified_score(bids: list[tuple[str, float, int, float, int]],
                                                                 rnd: random.Random) -> None:
    caps = {a: (["x"] if a in "abcd" else ["y"]) for a in "abcdef"}
    m = Market(caps)
    m.post("t", ["x"])
    rnd.shuffle(bids)
    for agent, price, ms, conf, load in bids:
        m.bid("t", agent, price=price, ms=ms, conf=conf, load=load)
    task = m.close("t")
    eligible = [(bid_score(p, ld, ms, c), a) for a, p, ms, c, ld in bids if caps[a] == ["x"]]
    if not eligible:
        assert task["status"] == "UNASSIGNED" and m.assigned == []
    else:
        assert len(m.assigned) == 1 and m.assigned[0]["agent_id"] == min(eligible)[1]
