"""Collective intelligence (spec §2.3): voting pools over named options, and the hive mind.

Pools
-----
``swarm.vote_pool_created`` opens a pool (options, rule, ``closes_at_ms``, optional
``weight_threshold`` and ``min_confidence``); ``swarm.vote`` casts a vote with a
confidence in [0, 1] and a reputation weight ≥ 0 (weighted score = confidence × weight).
Everything about one pool is keyed by its id, so one lane orders it.

* A vote must come from its voter (``voter-mismatch``), name an option (``unknown-option``)
  and carry finite values in range (``invalid-vote``); a vote for an unknown pool is
  ``unknown-pool``.
* **Byzantine voters**: a second vote that differs (decision, confidence or weight) is
  *equivocation*: both are kept as evidence, none of that voter's votes count, and the
  voter is listed. An identical repeat is a no-op. Across pools, a voter that lost
  (voted against the reached decision) in at least ``DISAGREE_MIN_POOLS`` pools and at
  least ``DISAGREE_RATE`` of its pools is *persistently disagreeing*; ``reputation``
  down-weights both kinds to ``BYZANTINE_WEIGHT`` when a worker passes it in.
* Votes below ``min_confidence`` are recorded and not counted.
* **Closing** happens in event time: the first event of the pool's lane at or after
  ``closes_at_ms`` — in a quiet lane, the ``clock.tick`` a worker writes there
  (``projections/ticks.py``) — closes it; a vote at or after the
  close is *late* (counted only in ``late_votes``). Closing derives one
  ``swarm.vote_decided`` with the tally; the pool's final state folds that **recorded**
  event (as routing folds ``commands.routed``), so two workers racing after a rebalance,
  or a replay, agree on the one decision that is in the log.

Tally (counted votes; sums with ``math.fsum`` over voters in sorted order): per-option
``score = Σ confidence × weight × reputation``; ``total_weight = Σ weight × reputation``;
the winner is the highest score (a tie at the top: no winner). ``reached``:
SIMPLE_MAJORITY ``score > total/2``; SUPER_MAJORITY ``score ≥ 2/3 total``; UNANIMOUS every
counted vote chose the winner; WEIGHTED ``score ≥ weight_threshold × total``; BFT
``score ≥ 2/3 total`` and at least ``2f + 1`` winning votes with ``f = ⌊(n − 1)/3⌋``.
``confidence = min(score / total, 1)`` (the spec), 0 when nothing counted.

Hive mind
---------
A reached decision of a pool with a ``swarm_id`` becomes a belief of that swarm: stored
under ``hive/<swarm>/<closes_at>/<pool>`` (one entry per pool — a set, so merging them is
commutative and a swarm's pools may live in any partitions). ``hivemind()`` merges them
in (close time, pool id) order: ``generation`` = number of decisions merged,
``beliefs[question]`` = the latest decision's confidence, ``consensus_topics`` = the
questions decided, ``intentions`` = the decided options of questions starting with
``intent:``. Published ``swarm.hivemind_updated`` snapshots (keyed by swarm) are folded
too and must advance the generation (``stale-generation`` otherwise).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from swarmlog.projections.base import Derived, EventContext, InvalidEvent, Projection, StateStore, Stores
from swarmlog.projections.ticks import TICK, due_ids, due_key

CREATED = "swarm.vote_pool_created"
VOTE = "swarm.vote"
DECIDED = "swarm.vote_decided"
HIVEMIND = "swarm.hivemind_updated"
RULES = ("SIMPLE_MAJORITY", "SUPER_MAJORITY", "UNANIMOUS", "WEIGHTED", "BFT")
MAX_OPTIONS = 64
DISAGREE_MIN_POOLS = 3
DISAGREE_RATE = 0.6
BYZANTINE_WEIGHT = 0.1

Reputation = Callable[[str], float]


def _pool_key(pool_id: str) -> str:
    return f"pool/{pool_id}"


def _due_key(pool: dict[str, Any]) -> str:
    return due_key(pool.get("lane", "*"), pool["closes_at_ms"], pool["pool_id"])


def _finite(value: Any, lo: float, hi: float) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and lo <= value <= hi


def tally(pool: dict[str, Any], reputation: Reputation | None = None) -> dict[str, Any]:
    """The decision a pool's counted votes give (pure; see the module docstring)."""
    rep = reputation or (lambda _voter: 1.0)
    counted = {v: b for v, b in sorted(pool["votes"].items()) if b["status"] == "counted"}
    scores: dict[str, float] = {}
    parts: dict[str, list[float]] = {o: [] for o in pool["options"]}
    weights: list[float] = []
    for voter, ballot in counted.items():
        w = ballot["weight"] * max(0.0, min(1.0, rep(voter)))
        weights.append(w)
        parts[ballot["decision"]].append(ballot["confidence"] * w)
    for option in pool["options"]:
        scores[option] = math.fsum(parts[option])
    total = math.fsum(weights)
    ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
    winner: str | None = None
    score = 0.0
    if ranked and ranked[0][1] > 0 and (len(ranked) == 1 or ranked[0][1] > ranked[1][1]):
        winner, score = ranked[0]
    n = len(counted)
    winning_votes = sum(1 for b in counted.values() if b["decision"] == winner)
    rule = pool["rule"]
    reached = False
    if winner is not None and total > 0:
        if rule == "SIMPLE_MAJORITY":
            reached = score > total / 2
        elif rule == "SUPER_MAJORITY":
            reached = score >= total * 2 / 3
        elif rule == "UNANIMOUS":
            reached = winning_votes == n
        elif rule == "WEIGHTED":
            reached = score >= (pool.get("weight_threshold") or 1.0) * total
        elif rule == "BFT":
            f = (n - 1) // 3
            reached = score >= total * 2 / 3 and winning_votes >= 2 * f + 1
    return {
        "pool_id": pool["pool_id"], "decision": winner if reached else None, "reached": reached,
        "score": score, "confidence": min(score / total, 1.0) if total > 0 else 0.0, "total_weight": total,
        "vote_count": n, "option_scores": scores,
    }


class VotingPoolProjection(Projection):
    """Voting pools, Byzantine-voter evidence and the hive mind; rules in the module docstring."""

    name: ClassVar[str] = "swarm_voting"
    event_types: ClassVar[frozenset[str]] = frozenset({CREATED, VOTE, DECIDED, HIVEMIND, TICK})

    def __init__(self, reputation: Reputation | None = None, max_evidence: int = 8) -> None:
        self.reputation = reputation
        self.max_evidence = max_evidence

    def apply(self, stores: Stores, ctx: EventContext, payload: dict[str, Any]) -> list[Derived]:
        store = stores.own
        if ctx.event_type == TICK:  # a quiet lane's clock (projections/ticks.py)
            return self.expire_due(stores, ctx.timestamp_ms, [ctx.lane])
        if ctx.event_type == HIVEMIND:
            return self._published(store, ctx, payload)
        pool_id = str(payload.get("pool_id", ""))
        if not pool_id or ctx.subject != pool_id:
            raise InvalidEvent("subject-mismatch", f"event keyed {ctx.subject!r} names pool {pool_id!r}")
        if ctx.event_type == CREATED:
            return self._create(store, ctx, payload)
        pool = store.get(_pool_key(pool_id))
        if not isinstance(pool, dict):
            raise InvalidEvent("unknown-pool", pool_id)
        if ctx.event_type == DECIDED:
            self._fold_decision(store, ctx, pool, payload)
            return []
        self._check_vote(ctx, pool, payload)
        derived = self._close_if_due(store, pool, ctx.timestamp_ms)
        self._vote(store, ctx, pool, payload)
        return derived

    # ------------------------------------------------------------------ pools
    def _create(self, store: StateStore, ctx: EventContext, payload: dict[str, Any]) -> list[Derived]:
        pool_id = payload["pool_id"]
        existing = store.get(_pool_key(pool_id))
        if isinstance(existing, dict):
            if existing.get("event_id") == ctx.event_id:
                return []
            raise InvalidEvent("duplicate-pool", pool_id)
        if payload["creator"] != ctx.producer:
            raise InvalidEvent("creator-mismatch", f"{payload['creator']} did not sign this pool")
        options = list(payload["options"])
        if not options or len(options) > MAX_OPTIONS or len(set(options)) != len(options) or not all(options):
            raise InvalidEvent("invalid-pool", f"options must be 1..{MAX_OPTIONS} distinct non-empty names")
        if payload["rule"] not in RULES:
            raise InvalidEvent("invalid-pool", f"unknown rule {payload['rule']!r}")
        threshold = payload.get("weight_threshold")
        if payload["rule"] == "WEIGHTED" and not (isinstance(threshold, float) and 0.0 < threshold <= 1.0):
            raise InvalidEvent("invalid-pool", "WEIGHTED needs weight_threshold in (0, 1]")
        if not _finite(payload.get("min_confidence", 0.0), 0.0, 1.0):
            raise InvalidEvent("invalid-pool", "min_confidence must be in [0, 1]")
        pool = {
            "pool_id": pool_id, "creator": payload["creator"], "question": payload["question"], "options": options,
            "rule": payload["rule"], "closes_at_ms": payload["closes_at_ms"], "weight_threshold": threshold,
            "min_confidence": payload.get("min_confidence", 0.0), "swarm_id": payload.get("swarm_id"),
            "status": "OPEN", "event_id": ctx.event_id, "created_ms": ctx.timestamp_ms, "votes": {},
            "equivocating_voters": [], "late_votes": 0, "result": None, "lane": ctx.lane,
        }
        if ctx.timestamp_ms >= pool["closes_at_ms"]:
            store.put(_pool_key(pool_id), pool)
            return self._close(store, pool)
        store.put(_pool_key(pool_id), pool)
        store.put(_due_key(pool), pool_id)
        return []

    def _check_vote(self, ctx: EventContext, pool: dict[str, Any], payload: dict[str, Any]) -> None:
        if payload["voter"] != ctx.producer:
            raise InvalidEvent("voter-mismatch", f"{payload['voter']} did not sign this vote")
        if payload["decision"] not in pool["options"]:
            raise InvalidEvent("unknown-option", str(payload["decision"]))
        if not _finite(payload["confidence"], 0.0, 1.0) or not _finite(payload.get("weight", 1.0), 0.0, math.inf):
            raise InvalidEvent("invalid-vote", "confidence must be in [0, 1] and weight a finite number >= 0")

    def _vote(self, store: StateStore, ctx: EventContext, pool: dict[str, Any], payload: dict[str, Any]) -> None:
        if pool["status"] != "OPEN" or ctx.timestamp_ms >= pool["closes_at_ms"]:
            pool["late_votes"] += 1
            store.put(_pool_key(pool["pool_id"]), pool)
            return
        voter = payload["voter"]
        ballot = {"decision": payload["decision"], "confidence": float(payload["confidence"]),
                  "weight": float(payload.get("weight", 1.0)), "event_id": ctx.event_id}
        previous = pool["votes"].get(voter)
        if previous is not None:
            same = all(previous[k] == ballot[k] for k in ("decision", "confidence", "weight"))
            if same:
                return
            previous["status"] = "equivocated"
            evidence = previous.setdefault("evidence", [])
            if len(evidence) < self.max_evidence:
                evidence.append(ballot)
            if voter not in pool["equivocating_voters"]:
                pool["equivocating_voters"] = sorted([*pool["equivocating_voters"], voter])
        else:
            ballot["status"] = "counted" if ballot["confidence"] >= pool["min_confidence"] else "low_confidence"
            pool["votes"][voter] = ballot
        store.put(_pool_key(pool["pool_id"]), pool)

    # ------------------------------------------------------------------ closing
    def _close_if_due(self, store: StateStore, pool: dict[str, Any], now_ms: int) -> list[Derived]:
        if pool["status"] == "OPEN" and now_ms >= pool["closes_at_ms"]:
            return self._close(store, pool)
        return []

    def _close(self, store: StateStore, pool: dict[str, Any]) -> list[Derived]:
        store.delete(_due_key(pool))
        pool["status"] = "CLOSED"
        store.put(_pool_key(pool["pool_id"]), pool)
        return [Derived(DECIDED, tally(pool, self.reputation), pool["pool_id"])]

    def expire_due(self, stores: Stores, now_ms: int, lanes: Iterable[str] | None = None) -> list[Derived]:
        """Close every OPEN pool whose ``closes_at_ms`` ≤ ``now_ms`` (in ``lanes``, or all)."""
        derived: list[Derived] = []
        for pool_id in due_ids(stores.own, now_ms, lanes):
            pool = stores.own.get(_pool_key(pool_id))
            if isinstance(pool, dict):
                derived += self._close_if_due(stores.own, pool, now_ms)
        return derived

    def _fold_decision(self, store: StateStore, ctx: EventContext, pool: dict[str, Any],
                       payload: dict[str, Any]) -> None:
        if pool["status"] == "DECIDED":
            return  # a second worker's copy of the same close
        if pool["status"] == "OPEN":
            store.delete(_due_key(pool))
        result = {k: payload[k] for k in ("decision", "reached", "score", "confidence", "total_weight",
                                          "vote_count", "option_scores")}
        pool.update(status="DECIDED", result=result, decided_event=ctx.event_id)
        store.put(_pool_key(pool["pool_id"]), pool)
        lane = ctx.lane.replace("/", ":")
        for voter, ballot in sorted(pool["votes"].items()):
            counted = ballot["status"] == "counted" and result["reached"]
            if not counted and ballot["status"] != "equivocated":
                continue
            key = f"voter/{voter}/{lane}"
            record = store.get(key) or {"pools": 0, "disagreed": 0, "equivocated": 0}
            assert isinstance(record, dict)
            if counted:
                record["pools"] += 1
                record["disagreed"] += int(ballot["decision"] != result["decision"])
            else:
                record["equivocated"] += 1
            store.put(key, record)
        if result["reached"] and pool.get("swarm_id"):
            store.put(f"hive/{pool['swarm_id']}/{pool['closes_at_ms']:020d}/{pool['pool_id']}", {
                "question": pool["question"], "decision": result["decision"],
                "confidence": result["confidence"], "pool_id": pool["pool_id"]})

    # ------------------------------------------------------------------ published hive-mind snapshots
    def _published(self, store: StateStore, ctx: EventContext, payload: dict[str, Any]) -> list[Derived]:
        swarm = payload["swarm_id"]
        if ctx.subject != swarm:
            raise InvalidEvent("subject-mismatch", f"event keyed {ctx.subject!r} names swarm {swarm!r}")
        current = store.get(f"published/{swarm}")
        if isinstance(current, dict) and payload["generation"] <= current["generation"]:
            raise InvalidEvent("stale-generation", f"{payload['generation']} <= {current['generation']}")
        if any(not _finite(v, 0.0, 1.0) for v in payload["beliefs"].values()):
            raise InvalidEvent("invalid-hivemind", "belief confidences must be in [0, 1]")
        store.put(f"published/{swarm}", {"generation": payload["generation"], "beliefs": dict(payload["beliefs"]),
                                         "intentions": list(payload["intentions"]),
                                         "consensus_topics": list(payload["consensus_topics"]),
                                         "publisher": ctx.producer, "event_id": ctx.event_id})
        return []


# ---------------------------------------------------------------------------- queries
def get_pool(store: StateStore, pool_id: str) -> dict[str, Any] | None:
    pool = store.get(_pool_key(pool_id))
    return pool if isinstance(pool, dict) else None


def hivemind(store: StateStore, swarm_id: str) -> dict[str, Any]:
    """The swarm's collective mind merged from its reached decisions (see the module docstring)."""
    beliefs: dict[str, float] = {}
    topics: list[str] = []
    intentions: list[str] = []
    generation = 0
    for _key, entry in store.scan(f"hive/{swarm_id}/"):
        assert isinstance(entry, dict)
        generation += 1
        question = entry["question"]
        beliefs[question] = entry["confidence"]
        if question not in topics:
            topics.append(question)
        if question.startswith("intent:") and entry["decision"] not in intentions:
            intentions.append(entry["decision"])
    return {"swarm_id": swarm_id, "generation": generation, "beliefs": beliefs, "intentions": intentions,
            "consensus_topics": topics}


def voter_record(store: StateStore, voter: str) -> dict[str, int]:
    """A voter's history over decided pools, summed over the lanes it was recorded from."""
    total = {"pools": 0, "disagreed": 0, "equivocated": 0}
    for _key, record in store.scan(f"voter/{voter}/"):
        assert isinstance(record, dict)
        for name in total:
            total[name] += int(record.get(name, 0))
    return total


def is_byzantine(record: dict[str, int]) -> bool:
    n, d = record["pools"], record["disagreed"]
    return record["equivocated"] > 0 or (n >= DISAGREE_MIN_POOLS and d / n >= DISAGREE_RATE)


def byzantine_voters(store: StateStore) -> set[str]:
    """Every voter that equivocated in a decided pool or persistently disagrees."""
    voters = {key[len("voter/"):].rsplit("/", 1)[0] for key, _ in store.scan("voter/")}
    return {v for v in voters if is_byzantine(voter_record(store, v))}


def reputation_from(store: StateStore) -> Reputation:
    """A reputation lookup that down-weights Byzantine voters to ``BYZANTINE_WEIGHT``."""
    def lookup(voter: str) -> float:
        return BYZANTINE_WEIGHT if is_byzantine(voter_record(store, voter)) else 1.0
    return lookup
