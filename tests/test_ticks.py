"""Clock ticks close deadlines in quiet lanes, through the log (projections/ticks.py, processors/ticker.py)."""

from __future__ import annotations

import time
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarmlog.infra.run import compare_live_tables
from swarmlog.processors.ticker import Ticker, key_for_partition
from swarmlog.projections.base import EventContext, MemoryStore, Stores
from swarmlog.projections.consensus import ConsensusProjection
from swarmlog.projections.swarm_tasks import BID, POSTED, SwarmTaskProjection
from swarmlog.projections.swarm_voting import CREATED, VOTE, VotingPoolProjection, get_pool
from swarmlog.projections.ticks import TICK, due_ids, earliest_due
from swarmlog.streams.identity import Identity
from tests.support.live import LiveSetup, authenticated_payloads, wait_for


def ctx(event_type: str, subject: str, ts: int, seq: int, lane: str, producer: str = "did:key:p") -> EventContext:
    return EventContext(f"e{seq}", event_type, producer, subject, ts, lane, seq, "s")


@given(st.integers(1, 64).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n - 1))))
def test_a_tick_key_lands_on_its_partition(case: tuple[int, int]) -> None:
    partitions, partition = case
    assert zlib.crc32(key_for_partition(partition, partitions).encode()) % partitions == partition


def test_a_tick_key_for_a_partition_that_does_not_exist_is_an_error() -> None:
    with pytest.raises(ValueError):
        key_for_partition(3, 3)


def _pool(projection: VotingPoolProjection, store: MemoryStore, pool: str, lane: str, closes: int, seq: int) -> None:
    projection.apply(Stores(store), ctx(CREATED, pool, 0, seq, lane, "did:key:c"), dict(
        pool_id=pool, creator="did:key:c", question="q", options=["yes", "no"], rule="SIMPLE_MAJORITY",
        closes_at_ms=closes, weight_threshold=None, min_confidence=0.0, swarm_id=None))


def test_a_tick_closes_the_due_pools_of_its_own_lane_only() -> None:
    projection, store = VotingPoolProjection(), MemoryStore()
    _pool(projection, store, "p0", "swarm/0", 1_000, 1)
    _pool(projection, store, "p0-later", "swarm/0", 9_000, 2)
    _pool(projection, store, "p1", "swarm/1", 1_000, 3)
    projection.apply(Stores(store), ctx(VOTE, "p0", 10, 4, "swarm/0", "did:key:v"),
                     dict(pool_id="p0", voter="did:key:v", decision="yes", confidence=1.0, weight=1.0))
    assert earliest_due(store, "swarm/0") == 1_000 and sorted(due_ids(store, 5_000)) == ["p0", "p1"]
    assert projection.apply(Stores(store), ctx(TICK, "tick-0-0", 999, 5, "swarm/0"), {"key": "tick-0-0"}) == []
    decided = projection.apply(Stores(store), ctx(TICK, "tick-0-0", 5_000, 6, "swarm/0"), {"key": "tick-0-0"})
    assert [(d.event_type, d.subject, d.payload["decision"]) for d in decided] == [("swarm.vote_decided", "p0", "yes")]
    assert get_pool(store, "p1")["status"] == "OPEN"  # another lane's pool waits for its own tick
    assert get_pool(store, "p0-later")["status"] == "OPEN"
    assert earliest_due(store, "swarm/0") == 9_000


def test_a_tick_assigns_a_due_auction_and_expires_a_due_proposal() -> None:
    tasks, store = SwarmTaskProjection(bid_window_ms=100), MemoryStore()
    tasks.apply(Stores(store), ctx(POSTED, "t", 0, 1, "swarm/2", "poster"),
                {"task_id": "t", "poster": "poster", "required_skills": [], "reward": 5.0})
    tasks.apply(Stores(store), ctx(BID, "t", 10, 2, "swarm/2", "did:key:a"),
                {"task_id": "t", "agent_id": "did:key:a", "bid_price": 1.0, "estimated_completion_ms": 10,
                 "confidence": 1.0, "current_load": 0})
    assigned = tasks.apply(Stores(store), ctx(TICK, "k", 100, 3, "swarm/2"), {"key": "k"})
    assert [(d.event_type, d.payload["agent_id"]) for d in assigned] == [("swarm.task_assigned", "did:key:a")]

    consensus, cstore = ConsensusProjection(clock_scope="lane"), MemoryStore()
    consensus.apply(Stores(cstore), ctx("consensus.proposed", "prop", 0, 1, "consensus/0", "did:key:pr"), {
        "proposal_id": "prop", "operation": "op", "proposer": "did:key:pr", "policy": "SIMPLE_MAJORITY",
        "eligible_voters": [], "voter_count": 3, "deadline_ms": 500})
    expired = consensus.apply(Stores(cstore), ctx(TICK, "k", 600, 2, "consensus/0"), {"key": "k"})
    assert [(d.event_type, d.payload["outcome"]) for d in expired] == [("consensus.decided", "EXPIRED")]


def test_the_ticker_ticks_owned_lanes_with_something_due_and_waits_before_ticking_again() -> None:
    projection, store = VotingPoolProjection(), MemoryStore()
    _pool(projection, store, "a", "t.swarm/0", 1_000, 1)
    _pool(projection, store, "b", "t.swarm/1", 1_000, 2)
    _pool(projection, store, "c", "t.swarm/2", 50_000, 3)
    ticker = Ticker(["t.swarm"], {"swarm_voting": store}, sink=lambda: None, worker="w",  # type: ignore[arg-type,return-value]
                    resend_after_s=60.0)
    owned = [("t.swarm", 0), ("t.swarm", 2), ("t.other", 0)]  # partition 1 belongs to another worker
    assert ticker.due_lanes(owned, 2_000) == [("t.swarm", 0)]
    assert ticker.due_lanes(owned, 999) == []
    ticker._sent["t.swarm/0"] = time.monotonic()
    assert ticker.due_lanes(owned, 2_000) == []  # its tick is on the way


@pytest.mark.integration
def test_a_quiet_lane_closes_its_pool_through_a_tick_of_the_live_worker(kafka_bootstrap: str, unique_topics: Any,
                                                                        tmp_path: Path) -> None:
    with LiveSetup(kafka_bootstrap, unique_topics.new_prefix(), tmp_path, partitions=2) as live:
        _quiet_pool_through(live)


def _quiet_pool_through(live: LiveSetup) -> None:
    """A pool with one vote in a lane nobody writes to again, and a live worker that must close it."""
    kafka_bootstrap, prefix = live.bootstrap, live.prefix
    creator, voter = Identity.generate("tick-creator"), Identity.generate("tick-voter")
    producers = [live.producer(i) for i in (creator, voter)]
    now = int(time.time() * 1000)
    producers[0].produce("swarm.vote_pool_created", dict(
        pool_id="quiet-pool", creator=creator.did, question="scale_out", options=["yes", "no"],
        rule="SIMPLE_MAJORITY", closes_at_ms=now + 3_000, weight_threshold=None, min_confidence=0.0, swarm_id=None),
        timestamp_ms=now)
    producers[1].produce("swarm.vote", dict(pool_id="quiet-pool", voter=voter.did, decision="yes", confidence=0.9,
                                            weight=1.0), timestamp_ms=now + 10)
    live.flush()
    worker = live.worker("tick-worker")
    # nobody writes to the pool's lane after the vote: only the worker's tick can close it
    decided = wait_for(lambda: authenticated_payloads(kafka_bootstrap, prefix + "swarm", "swarm.vote_decided"),
                       150, "the pool's decision", [worker])
    assert [(d["pool_id"], d["decision"], d["reached"]) for d in decided] == [("quiet-pool", "yes", True)]
    ticks = authenticated_payloads(kafka_bootstrap, prefix + "swarm", TICK)
    assert ticks and all(t["ticker"] == "tick-worker" for t in ticks)
    wait_for(lambda: compare_live_tables(kafka_bootstrap, prefix).get("swarm_voting"), 90,
             "the live pool table equal to a replay (ticks included)", [worker])
