"""Consensus projection: every policy with known answers, refusals, deadlines, exactly-once decisions.

Events are real envelopes: built by the real ``ChainWriter`` (one per identity) and
decoded by ``EnvelopeCodec``, then folded with ``fold`` into a ``MemoryStore``.
"""

from __future__ import annotations

import math
import random
import zlib
from dataclasses import dataclass, fields
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swarmlog.projections.base import (
    Derived,
    EventContext,
    InvalidEvent,
    Stores,
    canonical_json,
    snapshot,
)
from swarmlog.projections.consensus import ConsensusProjection, get_proposal, open_proposals
from swarmlog.projections.engine import replay
from swarmlog.streams.chain import ChainWriter, OutRecord
from swarmlog.streams.codec import default_store, encode_body
from swarmlog.streams.envelope import EnvelopeCodec, Event
from swarmlog.streams.identity import Identity
from swarmlog.streams.verify import RawRecord
from tests.support.logs import FoldRun
from tests.support.logs import interleave as merge

SCHEMAS = default_store()
CODEC = EnvelopeCodec(SCHEMAS)
PROPOSED = SCHEMAS.for_event_type("consensus.proposed")
VOTE = SCHEMAS.for_event_type("consensus.vote")
DECIDED = SCHEMAS.for_event_type("consensus.decided")
PARTITIONS = 3

# Generating an identity costs ~1 ms (Ed25519 + ML-DSA-65 + X25519 + ML-KEM-768): a handful, once.
IDS = [Identity.generate(f"voter-{i}") for i in range(9)]
DIDS = [i.did for i in IDS]
PROPOSER = 8  # index of the proposer identity


Folded = tuple[Event, dict[str, Any]]


class Net:
    """A few agents writing to the consensus topic; builds decoded events with chosen timestamps."""

    def __init__(self) -> None:
        self.writers = [ChainWriter(identity, SCHEMAS) for identity in IDS]

    def _event(self, who: int, entry: Any, body: dict[str, Any], subject: str, ts: int,
               partition: int | None = None) -> Folded:
        if partition is None:
            partition = zlib.crc32(subject.encode()) % PARTITIONS
        _, value = self.writers[who].append(entry, encode_body(entry, body), subject, "consensus", partition,
                                            timestamp_ms=ts)
        event = CODEC.decode(value)
        return event, event.decode_payload(SCHEMAS)

    def propose(self, pid: str, policy: str, voters: list[int] | None = None, *, n: int | None = None,
                ts: int = 0, deadline: int = 100_000, who: int = PROPOSER, partition: int | None = None,
                **extra: Any) -> Folded:
        eligible = [DIDS[i] for i in (voters or [])]
        body = dict(proposal_id=pid, operation="deploy_critical_update", proposer=DIDS[who], policy=policy,
                    eligible_voters=eligible, voter_count=n if n is not None else len(eligible),
                    deadline_ms=deadline, **extra)
        return self._event(who, PROPOSED, body, pid, ts, partition)

    def vote(self, pid: str, voter: int, choice: str = "APPROVE", *, ts: int = 1, confidence: float = 1.0,
             weight: float = 1.0, by: int | None = None, partition: int | None = None) -> Folded:
        body = dict(proposal_id=pid, voter=DIDS[voter], choice=choice, confidence=confidence, weight=weight)
        return self._event(voter if by is None else by, VOTE, body, pid, ts, partition)


class Run(FoldRun[ConsensusProjection]):
    """Folds events into one store and keeps what came out."""

    @classmethod
    def new(cls, **kwargs: Any) -> Run:
        return cls(ConsensusProjection(**kwargs))

    def proposal(self, pid: str) -> dict[str, Any]:
        found = get_proposal(self.store, pid)
        assert found is not None
        return found


def decided(derived: list[Derived]) -> list[dict[str, Any]]:
    """The decision payloads, checked against the ConsensusDecided schema on the way."""
    out = []
    for d in derived:
        assert d.event_type == "consensus.decided"
        assert d.subject == d.payload["proposal_id"]
        encode_body(DECIDED, d.payload)  # the payload must be writable as the schema says
        out.append(d.payload)
    return out


def votes_until_decided(net: Net, run: Run, pid: str, choices: list[str]) -> int | None:
    """Fold votes 0, 1, 2 ... in order; the index of the vote that produced the decision."""
    for i, choice in enumerate(choices):
        if run.feed(net.vote(pid, i, choice, ts=10 + i)):
            return i
    return None


# ------------------------------------------------------------------------------------- policies
@pytest.mark.parametrize(("policy", "n", "choices", "outcome", "at", "required"), [
    # SIMPLE_MAJORITY: > n/2
    ("SIMPLE_MAJORITY", 5, ["APPROVE"] * 5, "APPROVED", 2, 3),
    ("SIMPLE_MAJORITY", 4, ["APPROVE", "APPROVE", "APPROVE", "APPROVE"], "APPROVED", 2, 3),
    ("SIMPLE_MAJORITY", 5, ["REJECT", "APPROVE", "REJECT", "REJECT", "APPROVE"], "REJECTED", 3, 3),
    ("SIMPLE_MAJORITY", 4, ["REJECT", "REJECT", "APPROVE"], "REJECTED", 1, 3),  # 2:2 can never be > half
    # TWO_THIRDS: >= ceil(2n/3)
    ("TWO_THIRDS", 6, ["APPROVE", "REJECT", "APPROVE", "APPROVE", "APPROVE", "REJECT"], "APPROVED", 4, 4),
    ("TWO_THIRDS", 3, ["APPROVE", "ABSTAIN", "APPROVE"], "APPROVED", 2, 2),
    ("TWO_THIRDS", 6, ["REJECT", "APPROVE", "REJECT", "REJECT", "APPROVE"], "REJECTED", 3, 4),
    # UNANIMOUS: all n; the first non-approval decides
    ("UNANIMOUS", 3, ["APPROVE", "APPROVE", "APPROVE"], "APPROVED", 2, 3),
    ("UNANIMOUS", 4, ["APPROVE", "REJECT", "APPROVE", "APPROVE"], "REJECTED", 1, 4),
    ("UNANIMOUS", 3, ["APPROVE", "APPROVE", "ABSTAIN"], "REJECTED", 2, 3),
    # BFT: 2f+1, f = floor((n-1)/3)
    ("BFT", 4, ["APPROVE", "APPROVE", "APPROVE", "APPROVE"], "APPROVED", 2, 3),
    ("BFT", 7, ["APPROVE", "APPROVE", "REJECT", "APPROVE", "APPROVE", "APPROVE"], "APPROVED", 5, 5),
    ("BFT", 4, ["APPROVE", "REJECT", "REJECT"], "REJECTED", 2, 3),  # f+1 = 2 rejections: 3 approvals unreachable
    ("BFT", 7, ["REJECT", "APPROVE", "REJECT", "REJECT"], "REJECTED", 3, 5),
])
def test_policy_known_answers(policy: str, n: int, choices: list[str], outcome: str, at: int, required: int) -> None:
    net, run = Net(), Run.new()
    run.feed(net.propose("p", policy, list(range(n))))
    assert votes_until_decided(net, run, "p", choices) == at
    [decision] = decided(run.derived)
    assert decision["outcome"] == outcome
    assert decision["required"] == required
    assert decision["eligible_count"] == n
    assert decision["approve_count"] == choices[:at + 1].count("APPROVE")
    assert decision["reject_count"] == choices[:at + 1].count("REJECT")
    proposal = run.proposal("p")
    assert proposal["status"] == outcome
    # votes after the decision are late: recorded, not counted, and derive nothing
    assert run.feed(*(net.vote("p", i, choices[i], ts=100 + i) for i in range(at + 1, len(choices)))) == []
    proposal = run.proposal("p")
    for i in range(at + 1, len(choices)):
        assert proposal["votes"][DIDS[i]]["status"] == "late"
    assert proposal["late_count"] == len(choices) - at - 1
    assert proposal["tallies"]["approve"] == decision["approve_count"]


def test_bft_n4_needs_three_and_n7_needs_five() -> None:
    net, run = Net(), Run.new()
    run.feed(net.propose("four", "BFT", [0, 1, 2, 3]), net.propose("seven", "BFT", list(range(7))))
    assert run.feed(net.vote("four", 0), net.vote("four", 1)) == []
    assert run.proposal("four")["required"] == 3
    assert [d.payload["outcome"] for d in run.feed(net.vote("four", 2))] == ["APPROVED"]
    assert run.feed(*(net.vote("seven", i) for i in range(4))) == []
    assert run.proposal("seven")["max_faulty"] == 2
    assert [d.payload["approve_count"] for d in run.feed(net.vote("seven", 4))] == [5]


def test_bft_explicit_f_and_reject_quorum() -> None:
    """n = 7 with f = 1: 3 approvals decide, and so do 3 matching rejections (2f+1)."""
    net, run = Net(), Run.new()
    run.feed(net.propose("p", "BFT", list(range(7)), max_faulty=1))
    assert run.feed(net.vote("p", 0, "REJECT"), net.vote("p", 1, "REJECT"), net.vote("p", 2, "APPROVE")) == []
    [decision] = decided(run.feed(net.vote("p", 3, "REJECT")))
    assert (decision["outcome"], decision["required"], decision["reject_count"]) == ("REJECTED", 3.0, 3)
    assert run.proposal("p")["decided_reason"] == "reject-quorum"


def test_bft_refuses_unsafe_fault_bound() -> None:
    net, run = Net(), Run.new()
    run.feed(net.propose("p", "BFT", [0, 1, 2, 3], max_faulty=2))  # 2f+1 = 5 > n = 4
    run.feed(net.propose("q", "BFT", [0, 1, 2, 3, 4], max_faulty=2))  # n < 3f+1
    assert run.refused == ["invalid-payload", "invalid-payload"]
    assert get_proposal(run.store, "p") is None


def test_unanimous_with_one_reject_is_rejected_at_once() -> None:
    net, run = Net(), Run.new()
    run.feed(net.propose("p", "UNANIMOUS", [0, 1, 2, 3, 4]))
    run.feed(net.vote("p", 0), net.vote("p", 1))
    [decision] = decided(run.feed(net.vote("p", 2, "REJECT", ts=20)))
    assert decision["outcome"] == "REJECTED"
    assert decision["counted_voters"] == sorted(DIDS[:3])
    assert decision["confidence"] == pytest.approx(1 / 5)  # reject weight 1 / total (3 voted + 2 unknown at 1)
    proposal = run.proposal("p")
    assert (proposal["decided_ms"], proposal["decided_reason"]) == (20, "approval-unreachable")


def test_simple_majority_early_rejection_before_everyone_voted() -> None:
    net, run = Net(), Run.new()
    run.feed(net.propose("p", "SIMPLE_MAJORITY", list(range(7))))  # required 4
    run.feed(*(net.vote("p", i, "REJECT") for i in range(3)))
    assert run.derived == []
    [decision] = decided(run.feed(net.vote("p", 3, "REJECT")))  # 0 approvals + 3 remaining < 4
    assert decision["outcome"] == "REJECTED"
    assert run.proposal("p")["tallies"]["remaining"] == 3


def test_abstain_and_low_confidence_take_a_slot_but_count_for_nothing() -> None:
    net, run = Net(), Run.new()
    run.feed(net.propose("p", "TWO_THIRDS", [0, 1, 2], min_confidence=0.6))  # required 2
    assert run.feed(net.vote("p", 0, "APPROVE", confidence=0.5)) == []
    # two slots used, no counted approval: even the last voter cannot make 2
    [decision] = decided(run.feed(net.vote("p", 1, "ABSTAIN")))
    assert decision["outcome"] == "REJECTED"
    assert (decision["approve_count"], decision["abstain_count"]) == (0, 1)
    assert run.proposal("p")["votes"][DIDS[0]]["status"] == "low_confidence"
    assert decision["counted_voters"] == [DIDS[1]]


# ------------------------------------------------------------------------- reputation weighted
def test_reputation_weighted_with_confidence_approves() -> None:
    net, run = Net(), Run.new()
    run.feed(net.propose("p", "REPUTATION_WEIGHTED", [0, 1, 2]))  # threshold 2/3
    # 0.9*1.0 + 0.8*0.5 = 1.3 of T = 1.0 + 0.5 + 1 (voter 2 unknown, counted at full weight)
    assert run.feed(net.vote("p", 0, confidence=0.9, weight=1.0), net.vote("p", 1, confidence=0.8, weight=0.5)) == []
    tallies = run.proposal("p")["tallies"]
    assert (tallies["approve_weight"], tallies["total_weight"]) == (pytest.approx(1.3), 2.5)
    [decision] = decided(run.feed(net.vote("p", 2, confidence=1.0, weight=0.2)))
    assert decision["outcome"] == "APPROVED"
    assert decision["approve_weight"] == pytest.approx(1.5)
    assert decision["total_weight"] == pytest.approx(1.7)
    assert decision["required"] == pytest.approx(1.7 * 2 / 3)
    assert decision["confidence"] == pytest.approx(1.5 / 1.7)


def test_reputation_weighted_rejects_when_weight_cannot_reach_threshold() -> None:
    net, run = Net(), Run.new()
    run.feed(net.propose("p", "REPUTATION_WEIGHTED", [0, 1, 2]))
    run.feed(net.vote("p", 0, confidence=0.9), net.vote("p", 1, confidence=0.8, weight=0.5))
    [decision] = decided(run.feed(net.vote("p", 2, "REJECT")))
    assert decision["outcome"] == "REJECTED"
    assert decision["reject_weight"] == 1.0
    assert decision["confidence"] == pytest.approx(1.0 / 2.5)


def test_reputation_weighted_early_decisions_and_weight_clamp() -> None:
    net, run = Net(), Run.new()
    run.feed(net.propose("a", "REPUTATION_WEIGHTED", [0, 1, 2], weight_threshold=0.5),
             net.propose("r", "REPUTATION_WEIGHTED", [0, 1, 2, 3], weight_threshold=0.9))
    # a claimed weight of 1000 counts as 1: no single voter can buy a decision
    assert run.feed(net.vote("a", 0, weight=1000.0)) == []
    assert run.proposal("a")["votes"][DIDS[0]]["claimed_weight"] == 1000.0
    [approved] = decided(run.feed(net.vote("a", 1)))  # 2 of T = 3 >= 0.5
    assert approved["outcome"] == "APPROVED" and approved["confidence"] == pytest.approx(2 / 3)
    # 0.9 needed: one rejection at full weight leaves at most 3 of 4
    [rejected] = decided(run.feed(net.vote("r", 0, "REJECT")))
    assert rejected["outcome"] == "REJECTED"


def test_reputation_weighted_respects_min_confidence() -> None:
    net, run = Net(), Run.new()
    run.feed(net.propose("strict", "REPUTATION_WEIGHTED", [0, 1], weight_threshold=0.5, min_confidence=0.7),
             net.propose("lax", "REPUTATION_WEIGHTED", [0, 1], weight_threshold=0.5, min_confidence=0.5))
    # strict: 0.6 < 0.7 is not counted (its slot and weight are): 0.7 of T = 2 < 0.5 * 2
    assert run.feed(net.vote("strict", 0, confidence=0.6)) == []
    [strict] = decided(run.feed(net.vote("strict", 1, confidence=0.7)))
    assert (strict["outcome"], strict["approve_weight"], strict["counted_voters"]) == ("REJECTED", 0.7, [DIDS[1]])
    # lax: both count, 1.3 >= 1.0
    [lax] = decided(run.feed(net.vote("lax", 0, confidence=0.6), net.vote("lax", 1, confidence=0.7)))
    assert lax["outcome"] == "APPROVED" and lax["approve_weight"] == pytest.approx(1.3)


# ----------------------------------------------------------------------------- voters
def test_equivocation_keeps_evidence_and_voids_the_voter() -> None:
    net, run = Net(), Run.new()
    run.feed(net.propose("p", "SIMPLE_MAJORITY", [0, 1, 2]))  # required 2
    run.feed(net.vote("p", 0, "APPROVE", ts=5), net.vote("p", 0, "REJECT", ts=6))
    proposal = run.proposal("p")
    assert proposal["equivocating_voters"] == [DIDS[0]]
    assert proposal["tallies"]["approve"] == 0
    assert [(e["choice"], e["timestamp_ms"]) for e in proposal["equivocation"][DIDS[0]]] == [("APPROVE", 5),
                                                                                             ("REJECT", 6)]
    assert proposal["votes"][DIDS[0]]["equivocated"] is True
    assert run.feed(net.vote("p", 1)) == []  # one counted approval, voter 0 voided
    [decision] = decided(run.feed(net.vote("p", 2)))
    assert decision["outcome"] == "APPROVED"
    assert decision["counted_voters"] == sorted(DIDS[1:3])
    assert decision["equivocating_voters"] == [DIDS[0]]


def test_equivocation_of_a_needed_voter_rejects_unanimous() -> None:
    net, run = Net(), Run.new()
    run.feed(net.propose("p", "UNANIMOUS", [0, 1, 2]))
    assert run.feed(net.vote("p", 0)) == []
    [decision] = decided(run.feed(net.vote("p", 0, "APPROVE", confidence=0.5)))  # a different vote, same choice
    assert (decision["outcome"], decision["equivocating_voters"]) == ("REJECTED", [DIDS[0]])


def test_identical_repeat_vote_is_a_no_op() -> None:
    net, run = Net(), Run.new()
    run.feed(net.propose("p", "UNANIMOUS", [0, 1, 2]), net.vote("p", 0))
    before = snapshot(run.store)
    run.feed(net.vote("p", 0), net.vote("p", 0))  # new events, same content
    assert snapshot(run.store) == before
    assert run.proposal("p")["equivocating_voters"] == []


def test_equivocation_after_the_decision_keeps_the_decision() -> None:
    net, run = Net(), Run.new()
    run.feed(net.propose("p", "SIMPLE_MAJORITY", [0, 1, 2]), net.vote("p", 0), net.vote("p", 1))
    assert run.proposal("p")["status"] == "APPROVED"
    assert run.feed(net.vote("p", 0, "REJECT")) == []
    proposal = run.proposal("p")
    assert proposal["status"] == "APPROVED"
    assert proposal["late_equivocators"] == [DIDS[0]]
    assert [e["late"] for e in proposal["equivocation"][DIDS[0]]] == [False, True]


def test_evidence_is_bounded() -> None:
    net, run = Net(), Run.new(max_evidence=3)
    run.feed(net.propose("p", "UNANIMOUS", [0, 1, 2]))
    run.feed(*(net.vote("p", 0, confidence=c) for c in (1.0, 0.9, 0.8, 0.7, 0.6)))
    assert len(run.proposal("p")["equivocation"][DIDS[0]]) == 3


def test_ineligible_voter_is_recorded_not_counted() -> None:
    net, run = Net(), Run.new()
    run.feed(net.propose("p", "SIMPLE_MAJORITY", [0, 1, 2]))
    assert run.feed(net.vote("p", 5), net.vote("p", 6, "REJECT")) == []
    proposal = run.proposal("p")
    assert proposal["ineligible_voters"] == sorted([DIDS[5], DIDS[6]])
    assert proposal["votes"][DIDS[5]]["status"] == "ineligible"
    assert proposal["tallies"]["voted"] == 0
    [decision] = decided(run.feed(net.vote("p", 0), net.vote("p", 1)))
    assert decision["ineligible_voters"] == sorted([DIDS[5], DIDS[6]])
    assert decision["approve_count"] == 2


def test_open_eligibility_gives_the_first_n_voters_the_slots() -> None:
    net, run = Net(), Run.new()
    run.feed(net.propose("p", "UNANIMOUS", None, n=2))
    assert run.proposal("p")["open_eligibility"] is True
    [decision] = decided(run.feed(net.vote("p", 4), net.vote("p", 6)))
    assert decision["counted_voters"] == sorted([DIDS[4], DIDS[6]])
    run.feed(net.vote("p", 1))
    assert run.proposal("p")["votes"][DIDS[1]]["status"] == "late"


def test_vote_signed_by_someone_else_is_refused() -> None:
    net, run = Net(), Run.new()
    run.feed(net.propose("p", "UNANIMOUS", [0, 1]))
    before = snapshot(run.store)
    run.feed(net.vote("p", 0, by=3))  # identity 3 writes a vote in identity 0's name
    assert run.refused == ["voter-mismatch"]
    assert snapshot(run.store) == before  # only fold's mark records the refusal


def test_proposer_must_be_the_producer() -> None:
    net, run = Net(), Run.new()
    event, payload = net.propose("p", "UNANIMOUS", [0, 1], who=2)
    run.feed((event, {**payload, "proposer": DIDS[0]}))
    assert run.refused == ["proposer-mismatch"]


@pytest.mark.parametrize(("field", "value"), [
    ("confidence", 1.5), ("confidence", -0.1), ("confidence", math.nan), ("weight", -1.0), ("weight", math.nan),
    ("weight", math.inf), ("choice", "MAYBE"),
])
def test_invalid_vote_values_are_refused_before_any_write(field: str, value: Any) -> None:
    net, run = Net(), Run.new()
    run.feed(net.propose("p", "UNANIMOUS", [0, 1]))
    before = snapshot(run.store)
    event, payload = net.vote("p", 0)
    run.feed((event, {**payload, field: value}))
    assert run.refused == ["invalid-payload"]
    assert snapshot(run.store) == before


@pytest.mark.parametrize("extra", [
    {"voter_count": 5}, {"min_confidence": 2.0}, {"weight_threshold": 0.0}, {"weight_threshold": math.nan},
    {"policy": "DICTATOR"}, {"deadline_ms": -1}, {"eligible_voters": [DIDS[0], DIDS[0]]}, {"proposal_id": "a/b"},
])
def test_invalid_proposals_are_refused(extra: dict[str, Any]) -> None:
    net, run = Net(), Run.new()
    event, payload = net.propose("p", "REPUTATION_WEIGHTED", [0, 1])
    run.feed((event, {**payload, **extra}))
    assert run.refused == ["invalid-payload"]
    assert snapshot(run.store) == {}


def test_unknown_and_duplicate_proposals() -> None:
    net, run = Net(), Run.new()
    run.feed(net.vote("nope", 0))
    first = net.propose("p", "UNANIMOUS", [0, 1])
    run.feed(first, net.propose("p", "SIMPLE_MAJORITY", [0, 1, 2]))
    assert run.refused == ["unknown-proposal", "duplicate-proposal"]
    assert run.proposal("p")["policy"] == "UNANIMOUS"


def test_subject_must_be_the_proposal_id() -> None:
    net, run = Net(), Run.new()
    run.feed(net.propose("p", "UNANIMOUS", [0, 1]))
    event, payload = net.vote("p", 0)
    run.feed((event, {**payload, "proposal_id": "other"}))  # keyed "p", claims "other"
    run.feed(net.propose("q", "UNANIMOUS", [0, 1]))
    event, payload = net.vote("q", 0)
    run.feed((event, {**payload, "proposal_id": "p"}))
    assert run.refused == ["unknown-proposal", "subject-mismatch"]


def test_proposal_hash_is_checked_when_the_context_carries_hashes() -> None:
    """EventContext has no event hash yet; a runtime that adds one gets the binding check."""

    @dataclass(frozen=True, slots=True)
    class HashedContext(EventContext):
        event_hash: bytes = b""

    net, run = Net(), Run.new()
    proposal_event, proposal_payload = net.propose("p", "UNANIMOUS", [0, 1])
    stores = Stores(run.store)

    def ctx(event: Event) -> HashedContext:
        base = EventContext.of(event)
        return HashedContext(**{f.name: getattr(base, f.name) for f in fields(base)}, event_hash=event.hash)

    run.projection.apply(stores, ctx(proposal_event), proposal_payload)
    assert run.proposal("p")["proposal_hash"] == proposal_event.hash.hex()
    event, payload = net.vote("p", 0)
    with pytest.raises(InvalidEvent) as refused:
        run.projection.apply(stores, ctx(event), {**payload, "proposal_hash": b"\x01" * 32})
    assert refused.value.reason == "proposal-hash-mismatch"
    run.projection.apply(stores, ctx(event), {**payload, "proposal_hash": proposal_event.hash})
    assert run.proposal("p")["tallies"]["approve"] == 1


# ----------------------------------------------------------------------------- deadlines
def test_deadline_expires_through_a_later_events_time() -> None:
    net, run = Net(), Run.new()
    run.feed(net.propose("p", "SIMPLE_MAJORITY", [0, 1, 2], deadline=1_000), net.vote("p", 0, ts=500))
    assert open_proposals(run.store) == ["p"]
    # an event about something else, stamped after the deadline, expires "p" first
    out = run.feed(net.propose("q", "UNANIMOUS", [0, 1], ts=1_500, deadline=9_000))
    [decision] = decided(out)
    assert (decision["proposal_id"], decision["outcome"], decision["approve_count"]) == ("p", "EXPIRED", 1)
    assert decision["confidence"] == 0.0
    proposal = run.proposal("p")
    assert (proposal["status"], proposal["decided_ms"], proposal["decided_reason"]) == ("EXPIRED", 1_000, "deadline")
    assert run.store.get("clock/now_ms") == 1_500
    # a vote that would have decided it, even one stamped before the deadline, is late now
    assert run.feed(net.vote("p", 1, ts=900)) == []
    assert run.proposal("p")["votes"][DIDS[1]]["status"] == "late"
    assert open_proposals(run.store) == ["q"]


def test_vote_at_or_after_the_deadline_is_late_and_expires_the_proposal() -> None:
    net, run = Net(), Run.new()
    run.feed(net.propose("p", "UNANIMOUS", [0], deadline=1_000))
    [decision] = decided(run.feed(net.vote("p", 0, ts=1_000)))  # is_open = now < closes_at
    assert decision["outcome"] == "EXPIRED" and decision["approve_count"] == 0
    assert run.proposal("p")["votes"][DIDS[0]]["status"] == "late"


def test_proposal_with_a_past_deadline_expires_at_once() -> None:
    net, run = Net(), Run.new()
    [decision] = decided(run.feed(net.propose("p", "UNANIMOUS", [0], ts=5_000, deadline=4_000)))
    assert decision["outcome"] == "EXPIRED"


def test_expire_due_is_the_runtime_tick_and_agrees_with_replay() -> None:
    net = Net()
    events = [net.propose("p", "UNANIMOUS", [0, 1], deadline=1_000), net.vote("p", 0, ts=10),
              net.propose("q", "UNANIMOUS", [0, 1], ts=20, deadline=5_000),
              net.propose("z", "UNANIMOUS", [0], ts=2_000)]
    live = Run.new()
    live.feed(*events[:3])
    assert live.projection.expire_due(Stores(live.store), 999) == []
    [ticked] = decided(live.projection.expire_due(Stores(live.store), 1_200))
    assert ticked["proposal_id"] == "p"
    assert live.projection.expire_due(Stores(live.store), 1_200) == []
    assert live.store.get("clock/now_ms") == 20  # the tick does not move event time
    assert decided(live.feed(events[3])) == []  # the later event finds it already expired
    replayed = Run.new()
    replayed.feed(*events)
    assert decided(replayed.derived) == [ticked]
    assert replayed.proposal("p") == live.proposal("p")


def test_lane_scope_expires_only_from_the_proposals_own_partition() -> None:
    net, run = Net(), Run.new(clock_scope="lane")
    run.feed(net.propose("p", "UNANIMOUS", [0, 1], deadline=1_000, partition=0))
    assert run.feed(net.propose("q", "UNANIMOUS", [0, 1], ts=5_000, deadline=9_000, partition=1)) == []
    assert run.proposal("p")["status"] == "OPEN"
    # one clock per lane and nothing shared: every write stays in the record's own partition
    assert (run.store.get("clock/lane/consensus/1"), run.store.get("clock/now_ms")) == (5_000, None)
    [decision] = decided(run.feed(net.propose("r", "UNANIMOUS", [0], ts=1_001, deadline=9_000, partition=0)))
    assert decision["proposal_id"] == "p"
    # a runtime tick sweeps the lanes it is given (those it owns), or all of them
    tick = run.projection.expire_due
    assert [d.payload["proposal_id"] for d in tick(Stores(run.store), 9_000, lanes=["consensus/1"])] == ["q"]
    assert [d.payload["proposal_id"] for d in tick(Stores(run.store), 9_000)] == ["r"]


# ----------------------------------------------------------------------- exactly one decision
def scenario(net: Net) -> list[Folded]:
    return [
        net.propose("a", "BFT", [0, 1, 2, 3], deadline=1_000),
        net.propose("b", "UNANIMOUS", [0, 1, 2], deadline=1_000),
        net.propose("c", "SIMPLE_MAJORITY", [0, 1, 2], deadline=500),
        net.vote("a", 0, ts=10), net.vote("b", 0, ts=11), net.vote("a", 1, ts=12), net.vote("c", 0, ts=13),
        net.vote("a", 2, ts=14), net.vote("b", 1, "REJECT", ts=15), net.vote("a", 3, ts=16),
        net.propose("d", "UNANIMOUS", [0], ts=600, deadline=2_000),
    ]


def test_folding_every_event_twice_or_the_whole_log_again_decides_once() -> None:
    events = scenario(Net())
    once = Run.new()
    once.feed(*events)
    assert sorted((d["proposal_id"], d["outcome"]) for d in decided(once.derived)) == [
        ("a", "APPROVED"), ("b", "REJECTED"), ("c", "EXPIRED")]
    twice = Run.new()
    twice.feed(*(e for e in events for _ in range(2)))
    twice.feed(*events)  # the whole log again into the same store (a second replay)
    assert twice.derived == once.derived
    assert snapshot(twice.store, include_marks=True) == snapshot(once.store, include_marks=True)


def test_applying_the_same_event_twice_without_marks_decides_once() -> None:
    """Defence in depth: even past ``fold``'s marks, the store alone prevents a second decision."""
    events = scenario(Net())
    run = Run.new()
    stores = Stores(run.store)
    derived = []
    for event, payload in events:
        for _ in range(2):
            derived += run.projection.apply(stores, EventContext.of(event), payload)
    assert sorted(d.payload["proposal_id"] for d in derived) == ["a", "b", "c"]


def test_a_second_worker_replaying_derives_the_identical_decision() -> None:
    """Both compute it; only the partition owner emits (runtime's job). The payloads must match."""
    events = scenario(Net())
    first, second = Run.new(), Run.new()
    first.feed(*events)
    second.feed(*events)
    assert second.derived == first.derived
    assert snapshot(second.store) == snapshot(first.store)


# ----------------------------------------------------------------------------- property tests
VOTE_ACTIONS = st.tuples(
    st.integers(0, 1),  # proposal
    st.sampled_from([0, 1, 2, 3, 0, 1, 2, 4, 5, 6, 7]),  # voter (may be ineligible), biased to low indices
    st.sampled_from(["APPROVE", "APPROVE", "APPROVE", "APPROVE", "REJECT", "ABSTAIN"]),
    st.sampled_from([1.0, 0.9, 0.4]),  # confidence (0.4 < min_confidence when set)
    st.sampled_from([1.0, 0.5, 2.0]),  # weight
    st.integers(0, 150),  # time step: some runs pass the deadlines
)
POLICY = st.sampled_from(["SIMPLE_MAJORITY", "TWO_THIRDS", "UNANIMOUS", "BFT", "REPUTATION_WEIGHTED"])


def build(policies: list[str], sizes: list[int], min_confidence: float, actions: list[tuple[Any, ...]],
          end_ms: int | None = None, own_partitions: bool = False) -> list[Folded]:
    """Two proposals, the votes, and optionally a last unrelated event at ``end_ms`` (moves the clock).

    ``own_partitions``: proposal k (and its votes) on partition k, the last event on partition 0.
    """
    net = Net()
    where = (lambda k: k) if own_partitions else (lambda k: None)
    events = [net.propose(f"p{k}", policies[k], list(range(sizes[k])), deadline=1_500 + 1_000 * k,
                          min_confidence=min_confidence, partition=where(k)) for k in range(2)]
    ts = 0
    for pid, voter, choice, confidence, weight, step in actions:
        ts += step
        events.append(net.vote(f"p{pid}", voter, choice, ts=ts, confidence=confidence, weight=weight,
                               partition=where(pid)))
    if end_ms is not None:
        events.append(net.propose("end", "UNANIMOUS", [0], ts=end_ms, deadline=10**9, partition=where(0)))
    return events


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policies=st.lists(POLICY, min_size=2, max_size=2), sizes=st.lists(st.integers(1, 7), min_size=2, max_size=2),
       min_confidence=st.sampled_from([0.0, 0.5]), actions=st.lists(VOTE_ACTIONS, max_size=30),
       end_ms=st.none() | st.integers(0, 4_000), seed=st.integers(0, 2**32), replays=st.integers(0, 6),
       refold=st.booleans())
def test_redelivery_never_changes_the_store_or_the_decisions(policies: list[str], sizes: list[int],
                                                            min_confidence: float, actions: list[tuple[Any, ...]],
                                                            end_ms: int | None, seed: int, replays: int,
                                                            refold: bool) -> None:
    events = build(policies, sizes, min_confidence, actions, end_ms)
    once = Run.new()
    once.feed(*events)
    # at-least-once delivery: copies of random events somewhere after their original
    rng = random.Random(seed)
    delivered = list(events)
    for _ in range(replays):
        original = rng.randrange(len(events))
        position = delivered.index(events[original]) + 1
        delivered.insert(rng.randint(position, len(delivered)), events[original])
    again = Run.new()
    again.feed(*delivered)
    if refold:
        again.feed(*events)
    assert snapshot(again.store, include_marks=True) == snapshot(once.store, include_marks=True)
    assert again.derived == once.derived
    assert again.refused == once.refused  # a refusal is decided once too (fold marks it)
    canonical_json(snapshot(once.store, include_marks=True))  # plain JSON: no NaN, no tuples
    # exactly one decision per decided proposal, consistent with the stored status
    decisions = decided(once.derived)
    ids = [d["proposal_id"] for d in decisions]
    assert len(ids) == len(set(ids))
    for k in range(2):
        proposal = once.proposal(f"p{k}")
        n = proposal["eligible_count"]
        t = proposal["tallies"]
        assert t["approve"] + t["reject"] + t["abstain"] <= t["voted"] <= n
        assert len(proposal["counted_voters"]) <= n
        assert (proposal["status"] != "OPEN") == (f"p{k}" in ids)
        assert set(proposal["counted_voters"]).isdisjoint(proposal["equivocating_voters"])
    for d in decisions:
        assert d["approve_count"] + d["reject_count"] + d["abstain_count"] <= d["eligible_count"]
        assert 0.0 <= d["confidence"] <= 1.0


def interleave(events: list[Folded], rng: random.Random) -> list[Folded]:
    """Any merge of the per-lane sequences (Kafka orders only within a partition)."""
    return merge(events, rng, key=lambda folded: folded[0].lane)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policies=st.lists(POLICY, min_size=2, max_size=2), sizes=st.lists(st.integers(1, 7), min_size=2, max_size=2),
       actions=st.lists(VOTE_ACTIONS, max_size=30), end_ms=st.none() | st.integers(0, 4_000),
       seed=st.integers(0, 2**32))
def test_lane_scope_does_not_depend_on_how_partitions_interleave(policies: list[str], sizes: list[int],
                                                                  actions: list[tuple[Any, ...]], end_ms: int | None,
                                                                  seed: int) -> None:
    """The reason lane scope exists: a worker and a replay may merge partitions differently."""
    events = build(policies, sizes, 0.0, actions, end_ms, own_partitions=True)
    in_order, shuffled = Run.new(clock_scope="lane"), Run.new(clock_scope="lane")
    in_order.feed(*events)
    shuffled.feed(*interleave(events, random.Random(seed)))
    assert snapshot(shuffled.store, include_marks=True) == snapshot(in_order.store, include_marks=True)
    key = lambda d: d.payload["proposal_id"]  # noqa: E731
    assert sorted(shuffled.derived, key=key) == sorted(in_order.derived, key=key)


@settings(max_examples=40, deadline=None)
@given(policy=POLICY, n=st.integers(1, 7), choices=st.lists(st.sampled_from(["APPROVE", "REJECT", "ABSTAIN"]),
                                                               min_size=7, max_size=7))
def test_every_proposal_is_decided_once_all_eligible_have_voted(policy: str, n: int, choices: list[str]) -> None:
    """The rules leave no gap: with every slot taken, some rule always holds."""
    net, run = Net(), Run.new()
    run.feed(net.propose("p", policy, list(range(n))))
    run.feed(*(net.vote("p", i, choices[i], ts=i + 1) for i in range(n)))
    [decision] = decided(run.derived)
    approvals = choices[:n].count("APPROVE")
    if decision["outcome"] == "APPROVED":
        assert decision["approve_count"] >= decision["required"] or policy == "REPUTATION_WEIGHTED"
        if policy == "UNANIMOUS":
            assert approvals == n
    if policy in ("SIMPLE_MAJORITY", "TWO_THIRDS", "UNANIMOUS") and approvals >= decision["required"]:
        assert decision["outcome"] == "APPROVED"


# ----------------------------------------------------------------------------- through the engine
def test_end_to_end_through_the_verifying_engine() -> None:
    """Identity documents, inline-signed votes and seals, verified and folded by the real engine."""
    identity_entry = SCHEMAS.for_event_type("trust.identity")
    records: list[OutRecord] = []
    writers = {i: ChainWriter(IDS[i], SCHEMAS) for i in (0, 1, 2, PROPOSER)}

    def write(who: int, entry: Any, body: dict[str, Any], subject: str, topic: str, sign: bool) -> None:
        partition = zlib.crc32(subject.encode()) % PARTITIONS
        _, value = writers[who].append(entry, encode_body(entry, body), subject, topic, partition, sign=sign,
                                       timestamp_ms=100)
        records.append(OutRecord(topic, partition, subject.encode(), value))

    for who, writer in writers.items():
        write(who, identity_entry, writer.identity_payload(), DIDS[who], "trust", sign=True)
    write(PROPOSER, PROPOSED, dict(proposal_id="p", operation="op", proposer=DIDS[PROPOSER], policy="BFT",
                                   eligible_voters=DIDS[:3], voter_count=3, deadline_ms=10_000), "p", "consensus",
          sign=False)
    records.extend(writers[PROPOSER].seal())
    for who in (0, 1):
        write(who, VOTE, dict(proposal_id="p", voter=DIDS[who], choice="APPROVE"), "p", "consensus", sign=True)
    write(2, VOTE, dict(proposal_id="p", voter=DIDS[0], choice="REJECT"), "p", "consensus", sign=True)  # forged name
    offsets: dict[tuple[str, int], int] = {}
    raw = []
    for rec in records:
        offsets[(rec.topic, rec.partition)] = offset = offsets.get((rec.topic, rec.partition), -1) + 1
        raw.append(RawRecord(rec.topic, rec.partition, offset, rec.key, rec.value))
    engine, outcome = replay(raw, [ConsensusProjection()], schema_store=SCHEMAS)
    # BFT, n = 3 -> f = 0, one approval decides; votes count before their (absent) seals: inline signatures
    [decision] = decided([d for _, d in outcome.derived])
    assert (decision["outcome"], decision["required"], decision["approve_count"]) == ("APPROVED", 1.0, 1)
    assert [dl.reason for dl in outcome.dead_letters] == ["voter-mismatch"]
    proposal = get_proposal(engine.stores["consensus"], "p")
    assert proposal is not None and proposal["votes"][DIDS[1]]["status"] == "late"
