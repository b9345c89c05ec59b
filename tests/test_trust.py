"""Trust projection: the spec's formulas, EigenTrust, transitive trust, delegation chains, peer validation.

Formula and chain tests call the pure functions and ``TrustProjection.apply`` with
hand-made contexts (pure logic); the determinism test builds real signed envelopes with
``ChainWriter`` and folds them through the real engine in several partition interleavings.
"""

from __future__ import annotations

import math
import random
import zlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarmlog.projections.base import EventContext, InvalidEvent, MemoryStore, Stores, canonical_json, snapshot
from swarmlog.projections.delegation import MAX_CHAIN_DEPTH, capability_covers, constraint_narrows, proof_hash
from swarmlog.projections.engine import replay
from swarmlog.projections.trust import (
    DAY_MS,
    TrustProjection,
    agent_trust,
    beta_view,
    check_delegation,
    conservative,
    decay,
    delegations_of,
    global_trust,
    neutral,
    observe,
    outcome_delta,
    trust_path,
    trust_score,
)
from swarmlog.projections.trust_graph import eigentrust, transitive_trust
from swarmlog.streams.chain import ChainWriter
from swarmlog.streams.codec import default_store, encode_body
from swarmlog.streams.identity import Identity, did_from_ed25519_public
from swarmlog.streams.verify import RawRecord

SCHEMAS = default_store()


def did(n: int) -> str:
    return did_from_ed25519_public(n.to_bytes(32, "big"))


A, B, C, D, E, F = (did(i) for i in range(1, 7))
T0 = 1_700_000_000_000


class Harness:
    """Folds payloads into one trust store through ``apply`` (pure; contexts made by hand)."""

    def __init__(self, **kwargs: Any) -> None:
        self.projection = TrustProjection(**kwargs)
        self.store = MemoryStore()
        self.n = 0
        self.derived: list[Any] = []

    def feed(self, event_type: str, producer: str, payload: dict[str, Any], ts: int = T0,
             subject: str | None = None, event_id: str | None = None) -> list[Any]:
        entry = SCHEMAS.for_event_type(event_type)
        body = encode_body(entry, payload)  # every payload a test feeds must be writable as the schema says
        full = SCHEMAS.decode_body(entry, entry, body)  # with the schema's defaults filled in
        self.n += 1
        subj = subject if subject is not None else str(payload[entry.subject_field])
        lane = f"trust/{zlib.crc32(subj.encode()) % 3}"
        ctx = EventContext(event_id or f"ev-{self.n}", event_type, producer, subj, ts, lane, self.n, "s")
        out = self.projection.apply(Stores(self.store), ctx, dict(full))
        self.derived += out
        return out

    def observe(self, observer: str, agent: str, outcome: str = "SUCCESS", ts: int = T0, error_rate: float = 0.0,
                **kw: Any) -> list[Any]:
        return self.feed("trust.observation", observer,
                         {"agent_id": agent, "observer": observer, "outcome": outcome, "error_rate": error_rate}, ts,
                         **kw)

    def delegate(self, ident: str, delegator: str, delegate: str, capability: str = "db.query", *,
                 parent: str | None = None, nb: int = T0, exp: int = T0 + 10_000, depth: int = 0,
                 max_depth: int = 0, constraints: dict[str, str] | None = None, proof: bytes | None = None,
                 producer: str | None = None) -> list[Any]:
        payload = {"delegation_id": ident, "parent_delegation_id": parent, "delegator": delegator,
                   "delegate": delegate, "capability": capability, "constraints": constraints or {},
                   "not_before_ms": nb, "expires_at_ms": exp, "depth": depth, "max_depth": max_depth,
                   "proof_hash": proof or proof_hash(delegator, delegate, capability, nb, exp, parent)}
        return self.feed("trust.delegated", producer or delegator, payload, ts=nb)

    def revoke(self, target: str, producer: str, kind: str = "IDENTITY", effective: int = T0, ts: int = T0,
               reason: str = "UNSPECIFIED", authorized_by: str | None = None) -> list[Any]:
        return self.feed("trust.revoked", producer, {"target": target, "target_kind": kind, "reason": reason,
                                                     "effective_ms": effective, "authorized_by": authorized_by}, ts)

    def refused(self, fn: Any, *args: Any, **kwargs: Any) -> str:
        before = snapshot(self.store)
        with pytest.raises(InvalidEvent) as info:
            fn(*args, **kwargs)
        assert snapshot(self.store) == before, "a refused event changed the store"
        return info.value.reason


# ---------------------------------------------------------------------------- the spec's formulas
def test_outcome_deltas_are_the_specs() -> None:
    assert outcome_delta("SUCCESS") == 0.8
    assert outcome_delta("TIMEOUT") == -0.3
    assert outcome_delta("FAILURE") == -1.0
    assert outcome_delta("PARTIAL_FAILURE", 0.4) == pytest.approx(-0.2)
    assert outcome_delta("UNKNOWN") is None


def test_bayesian_update_confidence_and_conservative_score_by_hand() -> None:
    rec = observe(neutral(), 0.8, T0)
    assert rec["score"] == pytest.approx(0.5 * 0.85 + 0.9 * 0.15)  # 0.56
    assert rec["confidence"] == pytest.approx(1 / 11)
    assert conservative(rec) == pytest.approx(max(0.0, 0.56 - 1.96 * math.sqrt(0.56 * 0.44 / 1)))
    rec = observe(rec, -1.0, T0 + 1)
    assert rec["score"] == pytest.approx(0.56 * 0.85 + 0.0 * 0.15)
    assert rec["samples"] == 2 and rec["confidence"] == pytest.approx(2 / 12)
    for _ in range(200):
        rec = observe(rec, 0.8, T0 + 2)
    assert rec["score"] == pytest.approx(0.9)  # the fixed point of SUCCESS is 0.5 + 0.8/2
    assert conservative(rec) == pytest.approx(0.9 - 1.96 * math.sqrt(0.9 * 0.1 / 202))
    assert rec["confidence"] == pytest.approx(202 / 212)
    assert conservative(neutral()) == 0.0


def test_beta_view_counts_evidence() -> None:
    rec = neutral()
    assert beta_view(rec)["expectation"] == 0.5
    rec = observe(observe(rec, 0.8, T0), -1.0, T0)
    view = beta_view(rec)
    assert view["alpha"] == pytest.approx(1 + 0.9 + 0.0)
    assert view["beta"] == pytest.approx(1 + 0.1 + 1.0)
    assert view["expectation"] == pytest.approx(1.9 / 4.0)


def test_temporal_decay_by_whole_days_past_max_age() -> None:
    rec = observe(neutral(), 0.8, T0)
    assert decay(rec, T0 + 30 * DAY_MS) == rec  # age 30 days is not > 30
    assert decay(rec, T0 + 31 * DAY_MS - 1) == rec  # 30.99 days: num_days() = 30
    aged = decay(rec, T0 + 40 * DAY_MS)  # 10 days past: d = 0.1
    assert aged["score"] == pytest.approx(rec["score"] * 0.9 + 0.5 * 0.1)
    assert aged["confidence"] == pytest.approx(rec["confidence"] * 0.95)
    gone = decay(rec, T0 + 400 * DAY_MS)  # d capped at 1: all the way to neutral
    assert gone["score"] == pytest.approx(0.5)


def test_projection_decays_to_the_event_time_before_an_update() -> None:
    h = Harness()
    h.observe(A, B, "SUCCESS", ts=T0)
    h.observe(A, B, "SUCCESS", ts=T0 + 50 * DAY_MS)  # 20 days past max age: d = 0.2 first
    first = observe(neutral(), 0.8, T0)
    expected = (first["score"] * 0.8 + 0.5 * 0.2) * 0.85 + 0.9 * 0.15
    assert agent_trust(h.store, B, now_ms=T0 + 50 * DAY_MS)["score"] == pytest.approx(expected)
    # a query decays to the projection's clock (newest event time), never to the wall clock
    assert agent_trust(h.store, B)["score"] == pytest.approx(expected)


outcomes = st.sampled_from(["SUCCESS", "TIMEOUT", "PARTIAL_FAILURE", "FAILURE", "UNKNOWN"])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(outcomes, st.floats(0.0, 1.0), st.integers(0, 200 * DAY_MS)), max_size=60),
       st.integers(0, 400 * DAY_MS))
def test_scores_stay_in_unit_interval(steps: list[tuple[str, float, int]], later: int) -> None:
    rec = neutral()
    ts = T0
    for outcome, error_rate, gap in steps:
        ts += gap
        delta = outcome_delta(outcome, error_rate)
        if delta is None:
            continue
        rec = observe(rec, delta, ts)
        for value in (rec["score"], rec["confidence"], conservative(rec), beta_view(rec)["expectation"]):
            assert 0.0 <= value <= 1.0
    aged = decay(rec, ts + later)
    assert 0.0 <= aged["score"] <= 1.0 and 0.0 <= conservative(aged) <= 1.0


@settings(max_examples=200, deadline=None)
@given(st.floats(0.0, 1.0), st.integers(0, 1000), st.integers(0, 500 * DAY_MS))
def test_decay_moves_toward_neutral_never_past_it(score: float, samples: int, age: int) -> None:
    rec = {**neutral(), "score": score, "samples": samples, "confidence": min(samples / (samples + 10), 1.0),
           "last_ms": T0}
    aged = decay(rec, T0 + age)
    assert abs(aged["score"] - 0.5) <= abs(score - 0.5) + 1e-12
    assert (aged["score"] - 0.5) * (score - 0.5) >= -1e-12  # same side of neutral
    assert aged["confidence"] <= rec["confidence"]


# ---------------------------------------------------------------------------- transitive trust, EigenTrust
def test_transitive_trust_is_the_specs_path_product() -> None:
    graph = {"A": {"B": 0.9}, "B": {"C": 0.8}, "C": {"Z": 0.9}}
    found = transitive_trust(graph, "A", "Z")
    assert found is not None and found.path == ("A", "B", "C", "Z")
    assert found.trust == pytest.approx(0.648)


def test_transitive_trust_prunes_below_a_tenth_and_takes_the_best_path() -> None:
    weak = {"A": {"B": 0.3}, "B": {"C": 0.3}}  # 0.09 < 0.1: pruned
    assert transitive_trust(weak, "A", "C") is None
    graph = {"A": {"B": 0.5, "D": 0.9}, "B": {"Z": 0.9}, "D": {"E": 0.9}, "E": {"Z": 0.9}}
    best = transitive_trust(graph, "A", "Z")
    assert best is not None and best.path == ("A", "D", "E", "Z") and best.trust == pytest.approx(0.729)
    assert transitive_trust(graph, "Z", "A") is None  # edges are directed


def test_trust_path_over_the_projection() -> None:
    h = Harness()
    for _ in range(30):
        h.observe(A, B)
        h.observe(B, C)
    found = trust_path(h.store, A, C)
    assert found is not None and found.path == (A, B, C)
    pair = h.store.get(f"edge/{A}/{B}")["score"]
    assert found.trust == pytest.approx(pair * h.store.get(f"edge/{B}/{C}")["score"])


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.sampled_from("abcdefgh"), st.dictionaries(st.sampled_from("abcdefgh"),
                                                                      st.floats(-5, 20), max_size=6), max_size=8),
       st.lists(st.sampled_from("abcdefgh"), max_size=3))
def test_eigentrust_is_a_distribution_and_order_independent(raw: dict[str, dict[str, float]],
                                                              pre: list[str]) -> None:
    result = eigentrust(raw, pretrusted=pre)
    if result.scores:
        assert math.fsum(result.scores.values()) == pytest.approx(1.0)
        assert all(v >= 0.0 for v in result.scores.values())
        assert all(0.0 <= result.normalized(a) <= 1.0 for a in result.scores)
    shuffled = {k: dict(reversed(list(v.items()))) for k, v in reversed(list(raw.items()))}
    assert eigentrust(shuffled, pretrusted=list(reversed(pre))).scores == result.scores


def test_eigentrust_resists_a_group_that_rates_itself_up() -> None:
    honest = [f"h{i}" for i in range(6)]
    colluders = [f"m{i}" for i in range(4)]
    raw: dict[str, dict[str, float]] = {}
    for h in honest:  # honest agents rate each other well and the colluders badly
        raw[h] = {o: 5.0 for o in honest if o != h} | {m: -3.0 for m in colluders}
    for m in colluders:  # colluders rate each other sky-high and every honest agent down
        raw[m] = {o: 1000.0 for o in colluders if o != m} | {h: -1000.0 for h in honest}
    plain = eigentrust(raw)  # no pre-trusted agents
    robust = eigentrust(raw, pretrusted=honest[:2])
    group = math.fsum(robust.scores[m] for m in colluders)
    assert group < 0.01  # no honest edge reaches the group: it only keeps what it was never given
    assert all(robust.normalized(h) > 0.9 for h in honest)  # ≈ a fair share each (1 = at least 1/n)
    assert all(robust.normalized(m) < 0.05 for m in colluders)
    # without pre-trust, the uniform teleport feeds the group and its mutual ratings keep it
    assert math.fsum(plain.scores[m] for m in colluders) > group


def test_trust_score_api_accepts_a_store_a_mapping_or_stores_and_revocation_zeroes_it() -> None:
    h = Harness()
    for _ in range(20):
        h.observe(A, B)
        h.observe(B, C)
        h.observe(C, A)
    for target in (h.store, {"trust": h.store}, Stores(MemoryStore(), {"trust": h.store}), Stores(h.store)):
        assert 0.0 < trust_score(target, B) <= 1.0
    assert trust_score(h.store, B, method="spec") == pytest.approx(conservative(h.store.get(f"agent/{B}")))
    assert trust_score(h.store, B, method="beta") == pytest.approx(beta_view(h.store.get(f"agent/{B}"))["expectation"])
    assert trust_score(h.store, D, method="spec") == 0.0  # never observed
    h.revoke(B, B, ts=T0 + 5)
    assert trust_score(h.store, B) == 0.0 and trust_score(h.store, B, method="spec") == 0.0
    assert B not in global_trust(h.store).scores  # a revoked agent neither holds nor passes trust


# ---------------------------------------------------------------------------- observation refusals
def test_observation_refusals() -> None:
    h = Harness()
    assert h.refused(h.feed, "trust.observation", C, {"agent_id": B, "observer": A, "outcome": "SUCCESS"}) \
        == "observer-mismatch"
    assert h.refused(h.observe, A, A) == "self-observation"
    assert h.refused(h.observe, A, "agent-7") == "unknown-agent"
    assert h.refused(h.observe, A, B, subject=C) == "subject-mismatch"
    assert h.refused(h.feed, "trust.observation", A, {"agent_id": B, "observer": A, "outcome": "PARTIAL_FAILURE",
                                                      "error_rate": 1.5}) == "invalid-payload"
    h.observe(A, B, "UNKNOWN")  # a newer outcome symbol: accepted, not scored
    assert agent_trust(h.store, B) is None


# ---------------------------------------------------------------------------- delegation chains
def chain3(h: Harness, *, child_caps: str = "db.query", child_exp: int = T0 + 5_000,
           child_constraints: dict[str, str] | None = None) -> None:
    """A owns db.* and grants B (may re-delegate twice); B grants C (once more); C grants D."""
    h.delegate("d1", A, B, "db.*", max_depth=2, constraints={"max_units": "100"})
    h.delegate("d2", B, C, child_caps, parent="d1", depth=1, max_depth=1, exp=child_exp,
               constraints=child_constraints if child_constraints is not None else {"max_units": "50"})
    h.delegate("d3", C, D, "db.query", parent="d2", depth=2, exp=T0 + 4_000, constraints={"max_units": "10"})


def test_a_valid_chain_checks_out_at_its_use() -> None:
    h = Harness()
    chain3(h)
    check = check_delegation(h.store, "d3", T0 + 100, capability="db.query", holder=D)
    assert check.valid and check.chain == ("d3", "d2", "d1"), check
    assert capability_covers("db.*", "db.query") and not capability_covers("db.query", "db.*")
    assert constraint_narrows("100", "50") and not constraint_narrows("50", "100")
    held = delegations_of(h.store, D, at_ms=T0 + 100)["held"]
    assert [d["delegation_id"] for d in held] == ["d3"] and held[0]["check"]["valid"]


@pytest.mark.parametrize("at,reason", [
    (T0 - 1, "not-yet-valid"),
    (T0 + 4_000, "expired"),  # d3's expiry is exclusive
])
def test_chain_window(at: int, reason: str) -> None:
    h = Harness()
    chain3(h)
    assert check_delegation(h.store, "d3", at).reason == reason


def test_a_parent_expiring_first_invalidates_the_whole_chain() -> None:
    h = Harness()
    h.delegate("d1", A, B, "db.*", max_depth=1, exp=T0 + 1_000)
    h.delegate("d2", B, C, "db.query", parent="d1", depth=1, exp=T0 + 900)
    assert check_delegation(h.store, "d2", T0 + 500).valid
    h2 = Harness()
    h2.delegate("d1", A, B, "db.*", max_depth=1, exp=T0 + 1_000)
    h2.delegate("d2", B, C, "db.query", parent="d1", depth=1, exp=T0 + 2_000)  # outlives its parent: widened
    assert check_delegation(h2.store, "d2", T0 + 500).reason == "widened-scope"


@pytest.mark.parametrize("kwargs", [
    {"child_caps": "*"},  # wider capability
    {"child_exp": T0 + 20_000},  # wider window than d1
    {"child_constraints": {"max_units": "500"}},  # larger quota
    {"child_constraints": {}},  # dropped the constraint
])
def test_widened_scope_is_refused(kwargs: dict[str, Any]) -> None:
    h = Harness()
    chain3(h, **kwargs)
    check = check_delegation(h.store, "d3", T0 + 100)
    assert check.reason == "widened-scope", check


def test_broken_chains() -> None:
    h = Harness()
    h.delegate("d2", B, C, "db.query", parent="missing", depth=1)
    assert check_delegation(h.store, "d2", T0 + 1).reason == "broken-chain"
    h.delegate("d1", A, B, "db.*", max_depth=1)
    h.delegate("d4", E, C, "db.query", parent="d1", depth=1)  # E never received d1
    assert check_delegation(h.store, "d4", T0 + 1).reason == "broken-chain"
    assert check_delegation(h.store, "nope", T0).reason == "unknown-delegation"
    assert check_delegation(h.store, "d1", T0 + 1, holder=C).reason == "wrong-holder"


def test_revoked_link_counts_from_its_time_only() -> None:
    h = Harness()
    chain3(h)
    h.revoke("d2", B, kind="DELEGATION", effective=T0 + 10, ts=T0 + 200)  # backdating is ignored: from T0+200
    assert check_delegation(h.store, "d3", T0 + 199).valid
    assert check_delegation(h.store, "d3", T0 + 200).reason == "revoked-link"
    assert h.refused(h.revoke, "d1", E, kind="DELEGATION") == "unauthorized-revocation"
    assert h.refused(h.revoke, "d9", A, kind="DELEGATION") == "unknown-delegation"


def test_revoked_key_breaks_every_chain_through_it_and_compromise_may_backdate() -> None:
    h = Harness()
    chain3(h)
    h.revoke(C, C, reason="KEY_COMPROMISE", effective=T0 + 50, ts=T0 + 300)
    assert check_delegation(h.store, "d3", T0 + 49).valid
    assert check_delegation(h.store, "d3", T0 + 50).reason == "revoked-key"
    assert h.refused(h.revoke, A, E) == "unauthorized-revocation"  # a third party needs a decision
    h.revoke(A, E, authorized_by="proposal-1", ts=T0 + 400)
    assert check_delegation(h.store, "d1", T0 + 400).reason == "revoked-key"


def test_over_deep_chains() -> None:
    h = Harness()
    h.delegate("d1", A, B, "db.*", max_depth=0)  # no re-delegation allowed
    h.delegate("d2", B, C, "db.query", parent="d1", depth=1)
    assert check_delegation(h.store, "d2", T0 + 1).reason == "over-deep-chain"
    h.delegate("e1", A, B, "db.*", max_depth=1)
    h.delegate("e2", B, C, "db.query", parent="e1", depth=1, max_depth=1)  # claims more hops than left
    assert check_delegation(h.store, "e2", T0 + 1).reason == "widened-scope"
    assert h.refused(h.delegate, "x", A, B, max_depth=MAX_CHAIN_DEPTH + 1) == "over-deep-chain"
    # a chain of MAX_CHAIN_DEPTH links below the root is fine
    g = Harness()
    people = [did(100 + i) for i in range(MAX_CHAIN_DEPTH + 2)]
    g.delegate("c0", people[0], people[1], "db.*", max_depth=MAX_CHAIN_DEPTH)
    for i in range(1, MAX_CHAIN_DEPTH + 1):
        g.delegate(f"c{i}", people[i], people[i + 1], "db.*", parent=f"c{i - 1}", depth=i,
                   max_depth=MAX_CHAIN_DEPTH - i)
    assert check_delegation(g.store, f"c{MAX_CHAIN_DEPTH}", T0 + 1).valid


def test_delegation_refusals() -> None:
    h = Harness()
    assert h.refused(h.delegate, "d1", A, B, producer=C) == "delegator-mismatch"
    assert h.refused(h.delegate, "d1", A, B, proof=b"\x00" * 32) == "proof-mismatch"
    assert h.refused(h.delegate, "d1", A, B, exp=T0) == "invalid-payload"
    assert h.refused(h.delegate, "d1", A, B, depth=1) == "invalid-payload"  # depth 1 without a parent
    h.delegate("d1", A, B)
    assert h.refused(h.delegate, "d1", A, B) == "duplicate-delegation"


# ---------------------------------------------------------------------------- peer validation
def validation(h: Harness, claim: str, validator: str, observer: str, agent: str, verdict: str = "VALID") -> list[Any]:
    return h.feed("trust.peer_validation", validator, {
        "claim_id": claim, "claim_kind": "TRUST_SCORE", "claimant": observer, "claim_ref": agent,
        "validator": validator, "verdict": verdict, "confidence": 0.9})


def test_peer_validation_n_of_m_before_an_observation_counts() -> None:
    h = Harness(peer_quorum=(2, 3))
    h.observe(A, B, event_id="obs-1")
    assert agent_trust(h.store, B) is None  # pending
    assert h.refused(validation, h, "obs-1", A, A, B) == "not-independent"
    assert h.refused(validation, h, "obs-1", B, A, B) == "not-independent"
    assert validation(h, "obs-1", C, A, B) == []
    derived = validation(h, "obs-1", D, A, B)
    assert [d.event_type for d in derived] == ["trust.claim_confirmed"]
    confirmed = derived[0].payload
    assert confirmed["validators"] == sorted([C, D]) and derived[0].subject == B
    h.feed("trust.claim_confirmed", did(99), confirmed)
    assert agent_trust(h.store, B)["samples"] == 1
    assert validation(h, "obs-1", E, A, B) == []  # late: decided already


def test_peer_validation_rejects_when_n_is_out_of_reach_and_confirmation_may_come_first() -> None:
    h = Harness(peer_quorum=(2, 3))
    validation(h, "obs-9", C, A, B, "INVALID")
    validation(h, "obs-9", D, A, B, "INVALID")
    assert h.store.get("claim/obs-9")["status"] == "REJECTED"
    g = Harness(peer_quorum=(1, 1))
    g.feed("trust.claim_confirmed", did(99), {"agent_id": B, "claim_id": "obs-2", "claimant": A,
                                              "validators": [C], "required": 1, "slots": 1})
    g.observe(A, B, event_id="obs-2")
    assert agent_trust(g.store, B)["samples"] == 1
    strict = Harness(peer_quorum=(1, 1), confirmers=[did(99)])
    assert strict.refused(strict.feed, "trust.claim_confirmed", C, {
        "agent_id": B, "claim_id": "x", "claimant": A, "validators": [C], "required": 1, "slots": 1}) \
        == "unauthorized-confirmation"


# ---------------------------------------------------------------------------- determinism on real envelopes
def test_replay_is_the_same_whatever_the_partition_interleaving() -> None:
    ids = [Identity.generate(f"trust-{i}") for i in range(4)]
    writers = [ChainWriter(i, SCHEMAS) for i in ids]
    dids = [i.did for i in ids]
    rng = random.Random(7)
    per_partition: dict[int, list[RawRecord]] = {0: [], 1: [], 2: []}
    offsets = {0: 0, 1: 0, 2: 0}

    def emit(who: int, event_type: str, payload: dict[str, Any], ts: int, sign: bool = False) -> None:
        entry = SCHEMAS.for_event_type(event_type)
        subject = str(payload[entry.subject_field])
        partition = zlib.crc32(subject.encode()) % 3
        _, value = writers[who].append(entry, encode_body(entry, payload), subject, "trust", partition,
                                       timestamp_ms=ts, sign=sign)
        per_partition[partition].append(RawRecord("trust", partition, offsets[partition], subject.encode(), value,
                                                  ts))
        offsets[partition] += 1

    for who, writer in enumerate(writers):  # identity documents first: seals need them
        emit(who, "trust.identity", writer.identity_payload(), T0, sign=True)
    for step in range(120):
        o, a = rng.sample(range(4), 2)
        outcome = rng.choice(["SUCCESS", "SUCCESS", "TIMEOUT", "FAILURE", "PARTIAL_FAILURE"])
        emit(o, "trust.observation", {"agent_id": dids[a], "observer": dids[o], "outcome": outcome,
                                      "error_rate": 0.5}, T0 + step * DAY_MS // 2)
    nb, exp = T0, T0 + 100 * DAY_MS
    emit(0, "trust.delegated", {"delegation_id": "g1", "delegator": dids[0], "delegate": dids[1],
                                "capability": "db.query", "not_before_ms": nb, "expires_at_ms": exp, "depth": 0,
                                "max_depth": 0, "proof_hash": proof_hash(dids[0], dids[1], "db.query", nb, exp,
                                                                         None)}, T0)
    emit(0, "trust.revoked", {"target": "g1", "target_kind": "DELEGATION", "reason": "UNSPECIFIED",
                              "effective_ms": T0 + 5}, T0 + 5)
    emit(3, "trust.observation", {"agent_id": dids[1], "observer": dids[2], "outcome": "SUCCESS"}, T0)  # forged
    emit(3, "trust.revoked", {"target": dids[3], "target_kind": "IDENTITY", "reason": "UNSPECIFIED",
                              "effective_ms": T0 + 60 * DAY_MS},
         T0 + 60 * DAY_MS)
    for writer in writers:
        for out in writer.seal():
            partition = out.partition
            per_partition[partition].append(RawRecord("trust", partition, offsets[partition], out.key, out.value, 0))
            offsets[partition] += 1

    def interleave(seed: int) -> list[RawRecord]:
        r = random.Random(seed)
        queues = {p: list(recs) for p, recs in per_partition.items()}
        out: list[RawRecord] = []
        while any(queues.values()):
            p = r.choice([p for p, q in queues.items() if q])
            out.append(queues[p].pop(0))
        return out

    results = []
    for seed in range(4):
        engine, outcome = replay(interleave(seed), [TrustProjection()])
        store = engine.stores["trust"]
        reasons = sorted(d.reason for d in outcome.dead_letters)
        results.append((canonical_json(snapshot(store)), reasons,
                        {d: trust_score(store, d) for d in dids}, trust_path(store, dids[0], dids[2])))
    assert all(r == results[0] for r in results[1:])
    assert results[0][1] == ["observer-mismatch"]
    assert results[0][2][dids[3]] == 0.0  # revoked


# ---------------------------------------------------------------------------- routing: TRUST_WEIGHTED
def test_trust_weighted_routing_picks_trust_times_fitness_and_audits() -> None:
    from swarmlog.projections.registry import find_by_capability, fitness
    from swarmlog.projections.routing import RoutingProjection, TrustAwareRoutingProjection, audit_routed
    from tests.test_registry import Fabric, requested

    x, y, z, p = did(201), did(202), did(203), did(204)
    trust = Harness()
    for _ in range(20):
        trust.observe(p, y, "SUCCESS")
        trust.observe(p, z, "SUCCESS")
        trust.observe(p, x, "FAILURE")
        trust.observe(y, z, "SUCCESS")
    fabric = Fabric()
    for agent_id, health in ((x, 1.0), (y, 0.8), (z, 0.7)):
        fabric.register(agent_id, ["db.query"], max_concurrency=4)
        fabric.heartbeat(agent_id, health=health, latency=50.0, reliability=0.9, load=0)
    router = TrustAwareRoutingProjection(pretrusted=[p])
    fabric.routing = router
    fabric.targets[1] = (router, Stores(fabric.routing_store, {"registry": fabric.registry_store,
                                                               "trust": trust.store}))
    results = fabric.emit("requester", "commands.requested", requested("c1", "db.query", "TRUST_WEIGHTED"),
                          feedback=False)
    (routed,) = results["routing"]
    assert routed.event_type == "commands.routed", routed.payload
    p_ = routed.payload
    candidates = [{**c, "trust": trust_score(trust.store, c["agent_id"], pretrusted=[p])}
                  for c in find_by_capability(fabric.registry_store, "db.query")]
    best = max(candidates, key=lambda c: (c["trust"] * fitness(c), fitness(c)))
    assert best["agent_id"] != x  # the fittest agent is the least trusted one
    assert (p_["agent_id"], p_["strategy"]) == (best["agent_id"], "TRUST_WEIGHTED")
    assert p_["score"] == pytest.approx(best["trust"] * fitness(best))
    assert p_["inputs"]["trust"] == best["trust"]
    assert audit_routed(p_, candidates) == []
    # a trust floor filters on the conservative spec score
    floor = fabric.emit("requester", "commands.requested", requested("c2", "db.query", min_trust=0.99),
                        feedback=False)["routing"]
    assert floor[0].event_type == "commands.route_failed" and floor[0].payload["reason"] == "BELOW_MIN_TRUST"
    # the plain router does not read trust: TRUST_WEIGHTED falls back to BEST_FIT (the fittest, x)
    plain = Fabric()
    for agent_id, health in ((x, 1.0), (y, 0.8), (z, 0.7)):
        plain.register(agent_id, ["db.query"], max_concurrency=4)
        plain.heartbeat(agent_id, health=health, latency=50.0, reliability=0.9, load=0)
    assert isinstance(plain.routing, RoutingProjection)
    (fallback,) = plain.emit("requester", "commands.requested", requested("c1", "db.query", "TRUST_WEIGHTED"),
                             feedback=False)["routing"]
    assert (fallback.payload["agent_id"], fallback.payload["strategy"]) == (x, "BEST_FIT")


def test_one_step_distrust_cancels_a_lucky_success_and_colluders_cannot_cast_it() -> None:
    from swarmlog.projections.trust_graph import one_step_distrust

    honest = [f"h{i}" for i in range(4)]
    raw: dict[str, dict[str, float]] = {h: {o: 1.0 for o in honest if o != h} for h in honest}
    raw["h1"]["c"] = 0.2  # one lucky success with the part-time cheat c
    raw["h0"]["c"] = -0.5  # the pre-trusted rater saw it fail
    raw["c"] = {"d": 50.0}  # c and d rate each other up
    raw["d"] = {"c": 50.0, "h2": -50.0}  # ... and d reports an honest agent badly
    with_d = eigentrust(raw, pretrusted=["h0"])
    without = eigentrust(raw, pretrusted=["h0"], distrust=False)
    assert without.normalized("c") > 0.0 and with_d.normalized("c") < without.normalized("c")
    d = one_step_distrust(raw, with_d.scores)
    expected = with_d.scores["h0"] * 0.5 / (1.0 + 1.0 + 1.0 + 0.5)
    assert d["c"] == pytest.approx(expected)
    # d holds little trust, so its bad report of h2 costs h2 almost nothing
    assert with_d.normalized("h2") == pytest.approx(without.normalized("h2"), abs=0.05)
    assert all(0.0 <= with_d.normalized(a) <= 1.0 for a in with_d.scores)


def test_the_live_workers_router_routes_by_trust_from_its_replica() -> None:
    """processors/app.py runs LiveRoutingProjection (learned latency + trust): TRUST_WEIGHTED picks
    trust x fitness from the replica's trust store, and records the trust it used."""
    from swarmlog.projections.base import MemoryStore
    from swarmlog.projections.registry import find_by_capability, fitness
    from swarmlog.projections.routing import LiveRoutingProjection, audit_routed
    from tests.test_registry import Fabric, requested

    x, y, z, p = did(211), did(212), did(213), did(214)
    trust = Harness()
    for _ in range(20):
        trust.observe(p, y, "SUCCESS")
        trust.observe(p, z, "SUCCESS")
        trust.observe(p, x, "FAILURE")
    fabric = Fabric()
    for agent_id, health in ((x, 1.0), (y, 0.8), (z, 0.7)):
        fabric.register(agent_id, ["db.query"], max_concurrency=4)
        fabric.heartbeat(agent_id, health=health, latency=50.0, reliability=0.9, load=0)
    router = LiveRoutingProjection(pretrusted=[p])
    fabric.routing = router
    fabric.targets[1] = (router, Stores(fabric.routing_store, {"registry": fabric.registry_store,
                                                               "trust": trust.store, "latency": MemoryStore()}))
    (routed,) = fabric.emit("requester", "commands.requested", requested("c1", "db.query", "TRUST_WEIGHTED"),
                            feedback=False)["routing"]
    candidates = [{**c, "trust": trust_score(trust.store, c["agent_id"], pretrusted=[p])}
                  for c in find_by_capability(fabric.registry_store, "db.query")]
    best = max(candidates, key=lambda c: (c["trust"] * fitness(c), fitness(c)))
    assert best["agent_id"] != x and routed.payload["agent_id"] == best["agent_id"]
    assert routed.payload["inputs"]["trust"] == best["trust"]
    assert audit_routed(routed.payload, candidates) == []
