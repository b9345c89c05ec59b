"""Voting pools (rules, confidence, Byzantine voters) and the hive mind — pure reducer tests."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarmlog.projections.base import Derived, EventContext, InvalidEvent, MemoryStore, Stores, canonical_json
from swarmlog.projections.swarm_voting import (
    BYZANTINE_WEIGHT,
    CREATED,
    DECIDED,
    HIVEMIND,
    VOTE,
    VotingPoolProjection,
    byzantine_voters,
    get_pool,
    hivemind,
    reputation_from,
)

OPTIONS = ["deploy", "wait", "rollback"]


class Log:
    """Feeds a projection like a worker: derived decisions are folded back (the recorded event)."""

    def __init__(self, projection: VotingPoolProjection | None = None) -> None:
        self.projection = projection or VotingPoolProjection()
        self.store = MemoryStore()
        self.seq = 0
        self.decisions: list[dict[str, Any]] = []

    def feed(self, event_type: str, subject: str, producer: str, ts: int, payload: dict[str, Any]) -> list[Derived]:
        self.seq += 1
        ctx = EventContext(f"e{self.seq}", event_type, producer, subject, ts, "swarm/0", self.seq, "s")
        derived = self.projection.apply(Stores(self.store), ctx, payload)
        for d in derived:
            self.decisions.append(d.payload)
            self.feed(d.event_type, d.subject or "", "did:key:worker", ts, d.payload)
        return derived

    def create(self, pool: str, rule: str = "SIMPLE_MAJORITY", closes: int = 1_000, **extra: Any) -> None:
        self.feed(CREATED, pool, "did:key:creator", 0, dict(
            pool_id=pool, creator="did:key:creator", question=extra.pop("question", "deploy_v2"), options=OPTIONS,
            rule=rule, closes_at_ms=closes, weight_threshold=extra.pop("weight_threshold", None),
            min_confidence=extra.pop("min_confidence", 0.0), swarm_id=extra.pop("swarm_id", None)))

    def vote(self, pool: str, voter: str, decision: str, confidence: float = 1.0, weight: float = 1.0,
             ts: int = 10) -> None:
        self.feed(VOTE, pool, voter, ts, dict(pool_id=pool, voter=voter, decision=decision, confidence=confidence,
                                              weight=weight))

    def close(self, pool: str, ts: int = 2_000) -> dict[str, Any]:
        self.feed(VOTE, pool, "did:key:late", ts, dict(pool_id=pool, voter="did:key:late", decision=OPTIONS[0],
                                                       confidence=1.0, weight=1.0))
        result = get_pool(self.store, pool)
        assert result is not None and result["status"] == "DECIDED"
        return result["result"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("rule,votes,decision,reached", [
    ("SIMPLE_MAJORITY", ["deploy", "deploy", "wait"], "deploy", True),
    ("SIMPLE_MAJORITY", ["deploy", "wait", "rollback", "rollback"], None, False),  # 2/4 is not > half
    ("SUPER_MAJORITY", ["deploy", "deploy", "wait"], "deploy", True),  # 2/3 >= 2/3
    ("SUPER_MAJORITY", ["deploy", "deploy", "wait", "wait", "deploy"], None, False),  # 3/5 < 2/3
    ("UNANIMOUS", ["deploy", "deploy", "deploy"], "deploy", True),
    ("UNANIMOUS", ["deploy", "deploy", "wait"], None, False),
    ("BFT", ["deploy", "deploy", "deploy", "wait"], "deploy", True),  # n=4, f=1, 3 >= 2f+1 and 3/4 >= 2/3
    ("BFT", ["deploy", "deploy", "wait", "wait"], None, False),
])
def test_rules_known_answers(rule: str, votes: list[str], decision: str | None, reached: bool) -> None:
    log = Log()
    log.create("p", rule)
    for i, choice in enumerate(votes):
        log.vote("p", f"did:key:v{i}", choice)
    result = log.close("p")
    assert (result["decision"], result["reached"], result["vote_count"]) == (decision, reached, len(votes))


def test_weighted_rule_score_and_confidence_are_the_spec_formulas() -> None:
    log = Log()
    log.create("p", "WEIGHTED", weight_threshold=0.6)
    log.vote("p", "did:key:a", "deploy", confidence=0.9, weight=2.0)
    log.vote("p", "did:key:b", "wait", confidence=0.5, weight=1.0)
    result = log.close("p")
    # scores: deploy 0.9*2 = 1.8, wait 0.5; total weight 3; 1.8 >= 0.6*3
    assert result["option_scores"] == {"deploy": pytest.approx(1.8), "wait": pytest.approx(0.5), "rollback": 0.0}
    assert (result["decision"], result["reached"]) == ("deploy", True)
    assert result["confidence"] == pytest.approx(1.8 / 3)


def test_equivocation_voids_the_voter_and_keeps_evidence() -> None:
    log = Log()
    log.create("p", "UNANIMOUS")
    log.vote("p", "did:key:a", "deploy")
    log.vote("p", "did:key:b", "deploy")
    log.vote("p", "did:key:b", "rollback")  # equivocation
    log.vote("p", "did:key:a", "deploy")  # identical repeat: no-op
    pool = get_pool(log.store, "p")
    assert pool is not None and pool["equivocating_voters"] == ["did:key:b"]
    assert pool["votes"]["did:key:b"]["evidence"][0]["decision"] == "rollback"
    result = log.close("p")
    assert (result["decision"], result["vote_count"]) == ("deploy", 1)
    assert "did:key:b" in byzantine_voters(log.store)


def test_persistent_disagreement_is_detected_and_down_weighted() -> None:
    log = Log()
    for k in range(4):
        log.create(f"p{k}", closes=1_000)
        for honest in ("a", "b", "c"):
            log.vote(f"p{k}", f"did:key:{honest}", "deploy")
        log.vote(f"p{k}", "did:key:troll", "rollback", confidence=1.0)
        log.close(f"p{k}")
    assert byzantine_voters(log.store) == {"did:key:troll"}
    rep = reputation_from(log.store)
    assert rep("did:key:troll") == BYZANTINE_WEIGHT and rep("did:key:a") == 1.0
    # with the reputation passed in, the troll's vote no longer tips a close pool
    weighted = Log(VotingPoolProjection(reputation=rep))
    weighted.create("q")
    weighted.vote("q", "did:key:a", "deploy", weight=1.0)
    weighted.vote("q", "did:key:troll", "rollback", weight=1.0)
    weighted.vote("q", "did:key:troll2", "rollback", weight=0.5)
    assert weighted.close("q")["decision"] == "deploy"  # deploy 1.0 vs rollback 0.1 + 0.5: 1.0 > 1.6 / 2
    plain = Log()
    plain.create("q")
    plain.vote("q", "did:key:a", "deploy")
    plain.vote("q", "did:key:troll", "rollback")
    plain.vote("q", "did:key:troll2", "rollback", weight=0.5)
    assert plain.close("q")["decision"] == "rollback"  # undamped: rollback 1.5 > 2.5 / 2 tips it


def test_low_confidence_is_recorded_not_counted_and_late_votes_are_counted_apart() -> None:
    log = Log()
    log.create("p", min_confidence=0.5)
    log.vote("p", "did:key:a", "wait", confidence=0.2)
    log.vote("p", "did:key:b", "deploy", confidence=0.9)
    result = log.close("p", ts=1_000)  # the closing vote is itself late
    assert (result["decision"], result["vote_count"]) == ("deploy", 1)
    pool = get_pool(log.store, "p")
    assert pool is not None and pool["late_votes"] == 1 and pool["votes"]["did:key:a"]["status"] == "low_confidence"


def test_exactly_one_decision_even_when_closed_twice() -> None:
    log = Log()
    log.create("p")
    log.vote("p", "did:key:a", "deploy")
    log.close("p")
    log.close("p", ts=3_000)
    before = canonical_json(dict(log.store.scan("")))
    derived = log.projection.expire_due(Stores(log.store), 10_000)
    assert derived == [] and len(log.decisions) == 1
    # a second worker's copy of the same decision changes nothing
    log.feed(DECIDED, "p", "did:key:worker2", 3_000, log.decisions[0])
    assert canonical_json(dict(log.store.scan(""))) == before


def test_expire_due_closes_quiet_pools_in_deadline_order() -> None:
    log = Log()
    log.create("late", closes=5_000)
    log.create("early", closes=1_000)
    derived = log.projection.expire_due(Stores(log.store), 2_000)
    assert [d.subject for d in derived] == ["early"]


@pytest.mark.parametrize("event_type,payload,reason", [
    (VOTE, dict(pool_id="p", voter="did:key:x", decision="deploy", confidence=1.0, weight=1.0), "voter-mismatch"),
    (VOTE, dict(pool_id="p", voter="did:key:v", decision="panic", confidence=1.0, weight=1.0), "unknown-option"),
    (VOTE, dict(pool_id="p", voter="did:key:v", decision="deploy", confidence=1.5, weight=1.0), "invalid-vote"),
    (VOTE, dict(pool_id="p", voter="did:key:v", decision="deploy", confidence=1.0, weight=float("nan")),
     "invalid-vote"),
    (VOTE, dict(pool_id="nope", voter="did:key:v", decision="deploy", confidence=1.0, weight=1.0), "unknown-pool"),
    (CREATED, dict(pool_id="p", creator="did:key:v", question="q", options=OPTIONS, rule="UNANIMOUS",
                   closes_at_ms=5, weight_threshold=None, min_confidence=0.0, swarm_id=None), "duplicate-pool"),
    (CREATED, dict(pool_id="n", creator="did:key:other", question="q", options=OPTIONS, rule="UNANIMOUS",
                   closes_at_ms=5, weight_threshold=None, min_confidence=0.0, swarm_id=None), "creator-mismatch"),
    (CREATED, dict(pool_id="n", creator="did:key:v", question="q", options=["a", "a"], rule="UNANIMOUS",
                   closes_at_ms=5, weight_threshold=None, min_confidence=0.0, swarm_id=None), "invalid-pool"),
    (CREATED, dict(pool_id="n", creator="did:key:v", question="q", options=OPTIONS, rule="WEIGHTED",
                   closes_at_ms=5, weight_threshold=None, min_confidence=0.0, swarm_id=None), "invalid-pool"),
])
def test_bad_input_is_refused_without_writing(event_type: str, payload: dict[str, Any], reason: str) -> None:
    log = Log()
    log.create("p")
    before = canonical_json(dict(log.store.scan("")))
    subject = payload["pool_id"]
    with pytest.raises(InvalidEvent) as refused:
        log.feed(event_type, subject, "did:key:v", 10, payload)
    assert refused.value.reason == reason
    assert canonical_json(dict(log.store.scan(""))) == before


def test_hive_mind_generation_beliefs_topics_and_intentions() -> None:
    log = Log()
    assert hivemind(log.store, "s1")["generation"] == 0
    log.create("p1", closes=1_000, swarm_id="s1", question="cpu_is_hot")
    log.vote("p1", "did:key:a", "deploy", confidence=0.8)
    log.close("p1")
    log.create("p2", closes=3_000, swarm_id="s1", question="intent:next")
    log.vote("p2", "did:key:a", "rollback")
    log.close("p2", ts=4_000)
    log.create("p3", closes=5_000, swarm_id="s2", question="other")
    log.vote("p3", "did:key:a", "wait")
    log.close("p3", ts=6_000)
    mind = hivemind(log.store, "s1")
    assert mind["generation"] == 2
    assert mind["beliefs"] == {"cpu_is_hot": pytest.approx(0.8), "intent:next": 1.0}
    assert mind["consensus_topics"] == ["cpu_is_hot", "intent:next"] and mind["intentions"] == ["rollback"]
    assert hivemind(log.store, "s2")["generation"] == 1


def test_published_snapshots_must_advance_the_generation() -> None:
    log = Log()
    body = dict(swarm_id="s", generation=1, beliefs={"x": 0.5}, intentions=[], consensus_topics=[],
                source_pool_id=None)
    log.feed(HIVEMIND, "s", "did:key:h", 1, body)
    with pytest.raises(InvalidEvent, match="stale-generation"):
        log.feed(HIVEMIND, "s", "did:key:h", 2, body)
    with pytest.raises(InvalidEvent, match="invalid-hivemind"):
        log.feed(HIVEMIND, "s", "did:key:h", 2, {**body, "generation": 2, "beliefs": {"x": 2.0}})


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.sampled_from(OPTIONS), st.floats(0, 1), st.floats(0, 3)),
                max_size=12), st.sampled_from(["SIMPLE_MAJORITY", "SUPER_MAJORITY", "UNANIMOUS", "BFT"]),
       st.randoms(use_true_random=False))
def test_order_of_distinct_voters_never_changes_the_decision(votes: list[tuple[int, str, float, float]], rule: str,
                                                               rnd: random.Random) -> None:
    first_per_voter = {}
    for voter, choice, conf, weight in votes:
        first_per_voter.setdefault(voter, (choice, conf, weight))
    results = []
    for _ in range(2):
        order = list(first_per_voter.items())
        rnd.shuffle(order)
        log = Log()
        log.create("p", rule)
        for voter, (choice, conf, weight) in order:
            log.vote("p", f"did:key:{voter}", choice, confidence=conf, weight=weight)
        result = log.close("p")
        assert 0.0 <= result["confidence"] <= 1.0
        results.append(result)
    assert results[0] == results[1]
