"""Trust projection: the spec's TrustNetwork (§3) folded from signed ``trust`` events.

Scores (spec §3.2, exactly)
---------------------------
Every ``trust.observation`` maps its outcome to ``delta``: SUCCESS +0.8, TIMEOUT -0.3,
PARTIAL_FAILURE -0.5 × error_rate, FAILURE -1.0 (UNKNOWN — a newer symbol — is ignored,
as the schema says). The Bayesian score starts neutral at 0.5 and moves by

    score' = score × (1 - α) + (0.5 + delta / 2) × α,   α = 0.15
    confidence = min(samples / (samples + 10), 1)
    conservative = score - 1.96 × sqrt(score (1 - score) / samples)   (clamped to [0, 1]; 0 with no samples)

(The spec writes ``sample_size / (sample_size + 10).min(1.0)``; read literally in Rust
that is ``samples / 1.0``, which is not a confidence. We follow the schema's reading.)

Temporal decay (spec §3.2/§6.3): when ``age`` — whole days (Rust ``num_days``) between
the record's last update and *now* — exceeds ``max_age_days`` (30), ``d = min(0.01 ×
(age - max_age), 1)``, ``score' = score (1 - d) + 0.5 d`` (toward neutral) and
``confidence × 0.95``. *Now* is always event time: before an observation is folded the
record is decayed to the observation's timestamp; a query decays to the projection's
clock (newest event time folded) unless given an explicit ``now_ms``. Never wall clock.

Beside it, the **Beta reputation** view: each observation adds positive evidence
``r = 0.5 + delta/2`` and negative ``s = 0.5 - delta/2`` (the same target the Bayesian
update moves toward, so both views agree on what an outcome means); ``alpha = 1 + Σr``,
``beta = 1 + Σs``, expectation ``alpha / (alpha + beta)``.

Both are kept per observed agent (all observers together: the spec's
``TrustScoreCalculator``) and per (observer, agent) pair — the edges of the trust graph.

Graph queries (pure, at query time, over the store — ``projections/trust_graph.py``)
-----------------------------------------------------------------------------------
* ``trust_path(store, A, B)``: the spec's transitive trust, product of pair scores along
  the best path, partial paths below 0.1 pruned.
* EigenTrust: local evidence ``s_ij = Σ (r - 0.7)`` of i about j over i's observations
  of j (``r = 0.5 + delta/2``; 0.7 is the spec's bar for trusting a provider, §8.3), global
  trust with damping 0.5 toward pre-trusted agents (``trust_graph.EIGEN_DAMPING``), minus
  one step of distrust (trusted raters' negative evidence, ``one_step_distrust``).
  ``trust_score(store, agent)`` — the stable API other projections use — is that net
  EigenTrust relative to a fair share, capped at 1 (see
  ``EigenTrustResult.normalized``). It is a computation over the projection's state at
  query time: nothing is stored, so a live worker and a replay at the same log
  position answer the same.

Determinism (docs/architecture.md): every key is written only by events of one partition.
``agent/<a>``, ``edge/<o>/<a>``, ``pending/<a>/...``, ``confirmed/<a>/...`` by events keyed
by agent ``a`` (observations, claim confirmations); ``delegation/<id>``,
``held/<delegate>/<id>``, ``granted/<delegator>/<id>`` by events keyed by the delegation
id (its delegation and its revocations); ``identity/<did>``, ``revoked/<did>``,
``rotated/<did>`` by events keyed by that DID; ``claim/<id>`` by validations keyed by the
claim; ``clock/lane/<lane>`` and ``count/lane/<lane>`` per source lane.

Peer validation (``peer_quorum=(n, m)``; off by default)
---------------------------------------------------------
With a quorum an observation does not count when folded: it is kept under
``pending/<agent>/<claim_id>`` (the claim id is the observation's event id). Validators
publish ``trust.peer_validation`` (claim_kind TRUST_SCORE, claim_id, claimant = the
observer, claim_ref = the observed agent). The first *m* distinct **independent**
validators (not the claimant, not the observed agent, and the envelope's producer) hold
slots; once *n* of them say VALID (confidence >= 0.5) the worker derives
``trust.claim_confirmed``, keyed by the agent, so it lands in the observation's
partition; folding it releases the observation into the scores in that partition's
order. A claim that can no longer reach *n* is REJECTED and its observation never counts.
``confirmers`` (optional) lists the worker DIDs allowed to sign confirmations.

Delegations and revocations: see ``projections/delegation.py`` for the chain rules. Each
link is checked on its own when folded (signature by the delegator, proof hash,
window, depth limit); the whole chain — attenuation, every link's window and revocation
— is checked by ``check_delegation`` at the time it is used. Revocations take effect
from the revocation event's time (``max(effective_ms, event time)``; only KEY_COMPROMISE
may predate its event). A revoked identity has trust 0 and its ratings are ignored.

Refusals (``InvalidEvent``): ``invalid-payload``, ``subject-mismatch``,
``observer-mismatch`` / ``delegator-mismatch`` / ``validator-mismatch`` /
``rotation-mismatch`` / ``identity-mismatch`` (payload DID is not the signer),
``unknown-agent`` (the observed agent is not a did:key), ``self-observation``,
``not-independent``, ``proof-mismatch``, ``over-deep-chain``, ``duplicate-delegation``,
``unknown-delegation``, ``unauthorized-revocation``, ``unauthorized-confirmation``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar, Literal

from swarmlog.projections.base import Derived, EventContext, InvalidEvent, Projection, StateStore, Stores
from swarmlog.projections.delegation import MAX_CHAIN_DEPTH, ChainCheck, check_chain, proof_hash
from swarmlog.projections.swarm_checks import MANIPULATION_GAP, TRUST_MANIPULATION, observation, rating_gap
from swarmlog.projections.trust_graph import EIGEN_DAMPING, EigenTrustResult, TrustPath, eigentrust, transitive_trust
from swarmlog.streams.identity import InvalidDID, ed25519_public_from_did

# ---------------------------------------------------------------------------- the spec's constants
LEARNING_RATE = 0.15
NEUTRAL = 0.5
Z_95 = 1.96
CONFIDENCE_PRIOR = 10
MAX_AGE_DAYS = 30
DECAY_PER_DAY = 0.01
CONFIDENCE_DECAY = 0.95
DAY_MS = 86_400_000
DELTAS = {"SUCCESS": 0.8, "TIMEOUT": -0.3, "FAILURE": -1.0}  # PARTIAL_FAILURE: -0.5 × error_rate
MIN_VALIDATOR_CONFIDENCE = 0.5
# EigenTrust's local evidence of i about j is Σ (target - QUALITY_BAR) over i's observations of
# j (target = 0.5 + delta/2): a rater vouches only for peers that serve above the bar. 0.7 is
# the spec's own bar for trusting a provider (§8.3: ``if trust_score > 0.7`` before buying).
# At 0.5 it would be (pos - neg)/2: an agent failing half the time would still collect trust.
QUALITY_BAR = 0.7

OBSERVATION = "trust.observation"
DELEGATED = "trust.delegated"
REVOKED = "trust.revoked"
PEER_VALIDATION = "trust.peer_validation"
KEY_ROTATED = "trust.key_rotated"
IDENTITY = "trust.identity"
CLAIM_CONFIRMED = "trust.claim_confirmed"

Method = Literal["eigen", "spec", "beta"]


# ---------------------------------------------------------------------------- pure formulas
def outcome_delta(outcome: str, error_rate: float = 0.0) -> float | None:
    """The spec's delta of an outcome in [-1, 1]; None for UNKNOWN (ignored)."""
    if outcome == "PARTIAL_FAILURE":
        return -0.5 * error_rate
    return DELTAS.get(outcome)


def neutral() -> dict[str, Any]:
    """A fresh score record: neutral score, no evidence."""
    return {"score": NEUTRAL, "confidence": 0.0, "samples": 0, "last_ms": None, "pos": 0.0, "neg": 0.0}


def confidence_of(samples: int) -> float:
    return min(samples / (samples + CONFIDENCE_PRIOR), 1.0)


def decay(record: Mapping[str, Any], now_ms: int, max_age_days: int = MAX_AGE_DAYS) -> dict[str, Any]:
    """The record as of ``now_ms``: moved toward neutral if its last update is older than max_age_days."""
    out = dict(record)
    last = record.get("last_ms")
    if last is None:
        return out
    age_days = (now_ms - last) // DAY_MS
    if age_days > max_age_days:
        d = min(DECAY_PER_DAY * (age_days - max_age_days), 1.0)
        out["score"] = record["score"] * (1.0 - d) + NEUTRAL * d
        out["confidence"] = record["confidence"] * CONFIDENCE_DECAY
    return out


def observe(record: Mapping[str, Any], delta: float, timestamp_ms: int,
            max_age_days: int = MAX_AGE_DAYS) -> dict[str, Any]:
    """Fold one observation: decay to its time, then the spec's update, plus Beta evidence."""
    out = decay(record, timestamp_ms, max_age_days)
    target = 0.5 + delta / 2.0
    out["score"] = min(max(out["score"] * (1.0 - LEARNING_RATE) + target * LEARNING_RATE, 0.0), 1.0)
    out["samples"] = record["samples"] + 1
    out["confidence"] = confidence_of(out["samples"])
    last = record.get("last_ms")
    out["last_ms"] = timestamp_ms if last is None else max(last, timestamp_ms)
    out["pos"] = record["pos"] + target
    out["neg"] = record["neg"] + (1.0 - target)
    return out


def conservative(record: Mapping[str, Any]) -> float:
    """Lower end of the 95 % interval; 0 without samples (no evidence is the most conservative)."""
    n = record["samples"]
    if n <= 0:
        return 0.0
    s = record["score"]
    return min(max(s - Z_95 * math.sqrt(max(s * (1.0 - s), 0.0) / n), 0.0), 1.0)


def beta_view(record: Mapping[str, Any]) -> dict[str, float]:
    alpha = 1.0 + record["pos"]
    beta = 1.0 + record["neg"]
    return {"alpha": alpha, "beta": beta, "expectation": alpha / (alpha + beta)}


def view(record: Mapping[str, Any], now_ms: int | None, max_age_days: int = MAX_AGE_DAYS) -> dict[str, Any]:
    """A record as the queries show it: decayed to ``now_ms``, with conservative score and Beta view."""
    rec = decay(record, now_ms, max_age_days) if now_ms is not None else dict(record)
    return {"score": rec["score"], "confidence": rec["confidence"], "conservative": conservative(rec),
            "samples": rec["samples"], "last_ms": rec["last_ms"], "beta": beta_view(rec)}


# ---------------------------------------------------------------------------- payload helpers
def _text(p: Mapping[str, Any], key: str) -> str:
    value = p.get(key)
    if not isinstance(value, str) or not value or "/" in value:
        raise InvalidEvent("invalid-payload", f"{key} must be a non-empty string without '/', got {value!r}")
    return value


def _int(p: Mapping[str, Any], key: str) -> int:
    value = p.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidEvent("invalid-payload", f"{key} must be an integer, got {value!r}")
    return value


@functools.lru_cache(maxsize=65_536)
def _is_did_key(did: str) -> bool:
    try:
        ed25519_public_from_did(did)
    except InvalidDID:
        return False
    return True


# ---------------------------------------------------------------------------- the projection
class TrustProjection(Projection):
    """Folds the ``trust`` topic; see the module doc."""

    name: ClassVar[str] = "trust"
    event_types: ClassVar[frozenset[str]] = frozenset({
        OBSERVATION, DELEGATED, REVOKED, PEER_VALIDATION, KEY_ROTATED, IDENTITY, CLAIM_CONFIRMED,
    })

    def __init__(self, peer_quorum: tuple[int, int] | None = None, max_age_days: int = MAX_AGE_DAYS,
                 confirmers: Iterable[str] | None = None, max_chain_depth: int = MAX_CHAIN_DEPTH) -> None:
        if peer_quorum is not None:
            n, m = peer_quorum
            if not 1 <= n <= m:
                raise ValueError(f"peer quorum needs 1 <= n <= m, got {peer_quorum}")
        self.peer_quorum = peer_quorum
        self.max_age_days = max_age_days
        self.confirmers = frozenset(confirmers) if confirmers is not None else None
        self.max_chain_depth = max_chain_depth

    def apply(self, stores: Stores, ctx: EventContext, payload: dict[str, Any]) -> list[Derived]:
        handler = {
            OBSERVATION: self._observation, DELEGATED: self._delegated, REVOKED: self._revoked,
            PEER_VALIDATION: self._validation, KEY_ROTATED: self._rotated, IDENTITY: self._identity,
            CLAIM_CONFIRMED: self._confirmed,
        }.get(ctx.event_type)
        if handler is None:
            raise InvalidEvent("unexpected-event-type", ctx.event_type)
        store = stores.own
        derived = handler(store, ctx, payload)  # every handler checks everything before its first write
        lane_clock = f"clock/lane/{ctx.lane}"
        now = store.get(lane_clock)
        if not isinstance(now, int) or ctx.timestamp_ms > now:
            store.put(lane_clock, ctx.timestamp_ms)
        count_key = f"count/lane/{ctx.lane}"
        store.put(count_key, (store.get(count_key) or 0) + 1)
        return derived

    # -- observations
    def _observation(self, store: StateStore, ctx: EventContext, p: dict[str, Any]) -> list[Derived]:
        agent = _text(p, "agent_id")
        observer = _text(p, "observer")
        outcome = p.get("outcome")
        error_rate = p.get("error_rate", 0.0)
        if isinstance(error_rate, bool) or not isinstance(error_rate, int | float) or not 0.0 <= error_rate <= 1.0:
            raise InvalidEvent("invalid-payload", f"error_rate must be in [0, 1], got {error_rate!r}")
        duration = p.get("duration_ms")
        if duration is not None and (not isinstance(duration, int) or duration < 0):
            raise InvalidEvent("invalid-payload", f"duration_ms must be >= 0, got {duration!r}")
        if ctx.subject != agent:
            raise InvalidEvent("subject-mismatch", f"subject {ctx.subject!r} != agent_id {agent!r}")
        if observer != ctx.producer:
            raise InvalidEvent("observer-mismatch", f"{observer} is not the signer {ctx.producer}")
        if observer == agent:
            raise InvalidEvent("self-observation", agent)
        if not _is_did_key(agent):
            raise InvalidEvent("unknown-agent", f"{agent!r} is not a did:key")
        delta = outcome_delta(str(outcome), float(error_rate))
        if delta is None:
            return []  # UNKNOWN: a newer outcome this reader cannot score
        if self.peer_quorum is None:
            return self._count(store, agent, observer, delta, ctx.timestamp_ms)
        claim = ctx.event_id
        if store.get(f"confirmed/{agent}/{claim}") is not None:
            store.delete(f"confirmed/{agent}/{claim}")
            return self._count(store, agent, observer, delta, ctx.timestamp_ms)
        else:
            store.put(f"pending/{agent}/{claim}", {"observer": observer, "delta": delta,
                                                   "timestamp_ms": ctx.timestamp_ms})
        return []

    def _count(self, store: StateStore, agent: str, observer: str, delta: float, ts: int) -> list[Derived]:
        akey, ekey = f"agent/{agent}", f"edge/{observer}/{agent}"
        agent_rec = observe(store.get(akey) or neutral(), delta, ts, self.max_age_days)
        edge_rec = observe(store.get(ekey) or neutral(), delta, ts, self.max_age_days)
        store.put(akey, agent_rec)
        store.put(ekey, edge_rec)
        # trust manipulation (swarm_checks): an observer whose ratings of this agent stand far
        # from everyone else's is reported once per (observer, agent) — ballot stuffing or
        # bad-mouthing; both records are in this agent's lane, so replay reaches the same verdict
        gap = rating_gap(edge_rec, agent_rec)
        flag_key = f"manipulation/{observer}/{agent}"
        if gap is None or gap < MANIPULATION_GAP or store.get(flag_key) is not None:
            return []
        store.put(flag_key, {"gap": gap, "samples": edge_rec["samples"], "timestamp_ms": ts})
        return [observation(observer, "FAILURE", TRUST_MANIPULATION)]

    # -- peer validation
    def _validation(self, store: StateStore, ctx: EventContext, p: dict[str, Any]) -> list[Derived]:
        claim_id = _text(p, "claim_id")
        claimant = _text(p, "claimant")
        validator = _text(p, "validator")
        kind = p.get("claim_kind", "OTHER")
        ref = p.get("claim_ref")
        verdict = p.get("verdict")
        confidence = p.get("confidence", 1.0)
        if verdict not in ("VALID", "INVALID", "INCONCLUSIVE"):
            raise InvalidEvent("invalid-payload", f"unknown verdict {verdict!r}")
        if isinstance(confidence, bool) or not isinstance(confidence, int | float) or not 0.0 <= confidence <= 1.0:
            raise InvalidEvent("invalid-payload", f"confidence must be in [0, 1], got {confidence!r}")
        if ref is not None and (not isinstance(ref, str) or "/" in ref):
            raise InvalidEvent("invalid-payload", f"claim_ref must be a string without '/', got {ref!r}")
        if ctx.subject != claim_id:
            raise InvalidEvent("subject-mismatch", f"subject {ctx.subject!r} != claim_id {claim_id!r}")
        if validator != ctx.producer:
            raise InvalidEvent("validator-mismatch", f"{validator} is not the signer {ctx.producer}")
        if validator in (claimant, ref):
            raise InvalidEvent("not-independent", f"{validator} validates a claim by or about itself")
        n, m = self.peer_quorum or (0, 0)
        key = f"claim/{claim_id}"
        claim = store.get(key) or {"claim_id": claim_id, "claim_kind": kind, "claimant": claimant, "claim_ref": ref,
                                   "required": n, "slots": m, "verdicts": {}, "valid": [], "status": "OPEN",
                                   "late": 0}
        if claim["claimant"] != claimant or claim["claim_ref"] != ref or claim["claim_kind"] != kind:
            raise InvalidEvent("invalid-payload", f"verdict describes claim {claim_id} differently than the first one")
        claim = dict(claim)
        verdicts = dict(claim["verdicts"])
        if validator in verdicts:
            return []  # one verdict per validator: the first one holds
        if claim["status"] != "OPEN" or (m and len(verdicts) >= m):
            claim["late"] += 1
            store.put(key, claim)
            return []
        verdicts[validator] = {"verdict": verdict, "confidence": float(confidence), "event_id": ctx.event_id}
        claim["verdicts"] = verdicts
        if verdict == "VALID" and confidence >= MIN_VALIDATOR_CONFIDENCE:
            claim["valid"] = sorted([*claim["valid"], validator])
        derived: list[Derived] = []
        if self.peer_quorum is not None:
            if len(claim["valid"]) >= n:
                claim["status"] = "CONFIRMED"
                if kind == "TRUST_SCORE" and ref:
                    derived.append(Derived(CLAIM_CONFIRMED, {
                        "agent_id": ref, "claim_id": claim_id, "claimant": claimant,
                        "validators": list(claim["valid"]), "required": n, "slots": m}, subject=ref))
            elif len(claim["valid"]) + (m - len(verdicts)) < n:
                claim["status"] = "REJECTED"
        store.put(key, claim)
        return derived

    def _confirmed(self, store: StateStore, ctx: EventContext, p: dict[str, Any]) -> list[Derived]:
        agent = _text(p, "agent_id")
        claim = _text(p, "claim_id")
        if ctx.subject != agent:
            raise InvalidEvent("subject-mismatch", f"subject {ctx.subject!r} != agent_id {agent!r}")
        if self.confirmers is not None and ctx.producer not in self.confirmers:
            raise InvalidEvent("unauthorized-confirmation", f"{ctx.producer} may not confirm claims")
        if self.peer_quorum is None:
            return []  # every observation already counts
        pending = store.get(f"pending/{agent}/{claim}")
        if isinstance(pending, dict):
            store.delete(f"pending/{agent}/{claim}")
            return self._count(store, agent, pending["observer"], pending["delta"], pending["timestamp_ms"])
        store.put(f"confirmed/{agent}/{claim}", {"timestamp_ms": ctx.timestamp_ms})
        return []

    # -- delegations
    def _delegated(self, store: StateStore, ctx: EventContext, p: dict[str, Any]) -> list[Derived]:
        ident = _text(p, "delegation_id")
        delegator = _text(p, "delegator")
        delegate = _text(p, "delegate")
        capability = _text(p, "capability")
        parent = p.get("parent_delegation_id")
        if parent is not None and (not isinstance(parent, str) or not parent or "/" in parent):
            raise InvalidEvent("invalid-payload", f"parent_delegation_id must be an id, got {parent!r}")
        not_before, expires = _int(p, "not_before_ms"), _int(p, "expires_at_ms")
        depth, max_depth = _int(p, "depth"), _int(p, "max_depth")
        constraints = p.get("constraints") or {}
        if not isinstance(constraints, dict) or not all(isinstance(v, str) for v in constraints.values()):
            raise InvalidEvent("invalid-payload", "constraints must map names to strings")
        if expires <= not_before:
            raise InvalidEvent("invalid-payload", f"empty window [{not_before}, {expires})")
        if depth < 0 or max_depth < 0 or (depth == 0) != (parent is None):
            raise InvalidEvent("invalid-payload", f"depth {depth} / max_depth {max_depth} / parent {parent!r} "
                                                  "disagree (depth 0 exactly when there is no parent)")
        if ctx.subject != ident:
            raise InvalidEvent("subject-mismatch", f"subject {ctx.subject!r} != delegation_id {ident!r}")
        if delegator != ctx.producer:
            raise InvalidEvent("delegator-mismatch", f"{delegator} is not the signer {ctx.producer}")
        if delegator == delegate:
            raise InvalidEvent("invalid-payload", "a delegation to oneself")
        if depth + max_depth > self.max_chain_depth:
            raise InvalidEvent("over-deep-chain", f"depth {depth} + max_depth {max_depth} > {self.max_chain_depth}")
        proof = p.get("proof_hash")
        if not isinstance(proof, bytes | bytearray) or \
                bytes(proof) != proof_hash(delegator, delegate, capability, not_before, expires, parent):
            raise InvalidEvent("proof-mismatch", f"proof_hash of {ident} is not the hash of its statement")
        if store.get(f"delegation/{ident}") is not None:
            raise InvalidEvent("duplicate-delegation", ident)
        record = {"delegation_id": ident, "parent_delegation_id": parent, "delegator": delegator,
                  "delegate": delegate, "capability": capability, "constraints": dict(sorted(constraints.items())),
                  "not_before_ms": not_before, "expires_at_ms": expires, "depth": depth, "max_depth": max_depth,
                  "event_id": ctx.event_id, "timestamp_ms": ctx.timestamp_ms, "revoked_ms": None,
                  "revocation": None}
        store.put(f"delegation/{ident}", record)
        store.put(f"held/{delegate}/{ident}", delegator)
        store.put(f"granted/{delegator}/{ident}", delegate)
        return []

    # -- revocations, rotations, identities
    def _revoked(self, store: StateStore, ctx: EventContext, p: dict[str, Any]) -> list[Derived]:
        target = _text(p, "target")
        kind = p.get("target_kind", "IDENTITY")
        reason = p.get("reason", "UNSPECIFIED")
        effective = _int(p, "effective_ms")
        authorized = p.get("authorized_by")
        if ctx.subject != target:
            raise InvalidEvent("subject-mismatch", f"subject {ctx.subject!r} != target {target!r}")
        # only a key compromise may reach back before the revocation itself
        when = effective if reason == "KEY_COMPROMISE" else max(effective, ctx.timestamp_ms)
        info = {"reason": reason, "effective_ms": when, "event_id": ctx.event_id, "by": ctx.producer,
                "authorized_by": authorized, "detail": p.get("detail", "")}
        if kind == "DELEGATION":
            record = store.get(f"delegation/{target}")
            if not isinstance(record, dict):
                raise InvalidEvent("unknown-delegation", target)
            if ctx.producer not in (record["delegator"], record["delegate"]) and not authorized:
                raise InvalidEvent("unauthorized-revocation", f"{ctx.producer} neither granted nor holds {target}")
            if record["revoked_ms"] is not None and record["revoked_ms"] <= when:
                return []  # an earlier revocation stands
            store.put(f"delegation/{target}", {**record, "revoked_ms": when, "revocation": info})
            return []
        if ctx.producer != target and not authorized:
            raise InvalidEvent("unauthorized-revocation", f"{ctx.producer} revokes {target} without a decision")
        old = store.get(f"revoked/{target}")
        if isinstance(old, dict) and old["effective_ms"] <= when:
            return []
        store.put(f"revoked/{target}", info)
        return []

    def _rotated(self, store: StateStore, ctx: EventContext, p: dict[str, Any]) -> list[Derived]:
        old, new = _text(p, "old_did"), _text(p, "new_did")
        effective = _int(p, "effective_ms")
        if ctx.subject != old:
            raise InvalidEvent("subject-mismatch", f"subject {ctx.subject!r} != old_did {old!r}")
        if ctx.producer != old:
            raise InvalidEvent("rotation-mismatch", f"{old} can only be rotated by itself, not {ctx.producer}")
        if store.get(f"rotated/{old}") is None:
            store.put(f"rotated/{old}", {"new_did": new, "effective_ms": max(effective, ctx.timestamp_ms),
                                         "event_id": ctx.event_id})
        return []

    def _identity(self, store: StateStore, ctx: EventContext, p: dict[str, Any]) -> list[Derived]:
        did = _text(p, "did")
        if did != ctx.producer:
            raise InvalidEvent("identity-mismatch", f"identity of {did} signed by {ctx.producer}")
        if store.get(f"identity/{did}") is None:
            store.put(f"identity/{did}", {"created_ms": p.get("created_ms"), "label": p.get("label", ""),
                                          "event_id": ctx.event_id, "timestamp_ms": ctx.timestamp_ms})
        return []


# ---------------------------------------------------------------------------- queries
def trust_store(stores_or_store: Any) -> StateStore:
    """The trust store out of a ``Stores`` (own or others['trust']), a name → store mapping, or a store."""
    if isinstance(stores_or_store, Stores):
        return stores_or_store.others.get("trust", stores_or_store.own)
    if isinstance(stores_or_store, Mapping):
        return stores_or_store["trust"]
    return stores_or_store


def clock_of(store: StateStore) -> int | None:
    """The projection's now: the newest event time folded, over all lanes (None before any event)."""
    times = [v for _, v in store.scan("clock/lane/") if isinstance(v, int)]
    return max(times) if times else None


def revoked_at(store: StateStore, did: str) -> int | None:
    """When ``did`` stopped being trusted: its revocation, or its rotation to a new key."""
    times = []
    rev = store.get(f"revoked/{did}")
    if isinstance(rev, dict):
        times.append(int(rev["effective_ms"]))
    rot = store.get(f"rotated/{did}")
    if isinstance(rot, dict):
        times.append(int(rot["effective_ms"]))
    return min(times) if times else None


def _is_revoked(store: StateStore, did: str, now_ms: int | None) -> bool:
    when = revoked_at(store, did)
    return when is not None and (now_ms is None or when <= now_ms)


def agent_trust(store: StateStore, agent_id: str, now_ms: int | None = None) -> dict[str, Any] | None:
    """The spec score (decayed to now), its conservative bound and the Beta view; None if never observed."""
    record = store.get(f"agent/{agent_id}")
    if not isinstance(record, dict):
        return None
    now = now_ms if now_ms is not None else clock_of(store)
    out = view(record, now)
    out["agent_id"] = agent_id
    out["revoked"] = _is_revoked(store, agent_id, now)
    return out


def _edges(store: StateStore) -> Iterable[tuple[str, str, dict[str, Any]]]:
    for key, value in store.scan("edge/"):
        _, observer, agent = key.split("/", 2)
        yield observer, agent, value


def evidence_graph(store: StateStore, now_ms: int | None = None) -> dict[str, dict[str, float]]:
    """EigenTrust's raw local trust: i's evidence about j above the quality bar; revoked agents left out."""
    graph: dict[str, dict[str, float]] = {}
    revoked: dict[str, bool] = {}

    def gone(did: str) -> bool:
        if did not in revoked:
            revoked[did] = _is_revoked(store, did, now_ms)
        return revoked[did]

    for observer, agent, rec in _edges(store):
        if gone(observer) or gone(agent):
            continue
        graph.setdefault(observer, {})[agent] = rec["pos"] - QUALITY_BAR * rec["samples"]
    return graph


def score_graph(store: StateStore, now_ms: int | None = None) -> dict[str, dict[str, float]]:
    """The spec's trust levels: pair score of observer → agent (decayed to now)."""
    graph: dict[str, dict[str, float]] = {}
    for observer, agent, rec in _edges(store):
        if _is_revoked(store, observer, now_ms) or _is_revoked(store, agent, now_ms):
            continue
        graph.setdefault(observer, {})[agent] = decay(rec, now_ms)["score"] if now_ms is not None else rec["score"]
    return graph


# (id(store), fingerprint) -> (store, result); the store is kept so its id cannot be reused while cached
_EIGEN_CACHE: dict[tuple[int, tuple[Any, ...]], tuple[StateStore, EigenTrustResult]] = {}


def global_trust(store: StateStore, pretrusted: Sequence[str] = (), now_ms: int | None = None,
                 damping: float = EIGEN_DAMPING) -> EigenTrustResult:
    """EigenTrust over the store as it is now (cached per store state: lane counters, pre-trusted, now)."""
    now = now_ms if now_ms is not None else clock_of(store)
    fingerprint = (tuple(store.scan("count/lane/")), tuple(sorted(pretrusted)), now, damping)
    key = (id(store), fingerprint)
    cached = _EIGEN_CACHE.get(key)
    if cached is not None and cached[0] is store:
        return cached[1]
    graph = evidence_graph(store, now)
    agents = [key.split("/", 1)[1] for key, _ in store.scan("agent/")]
    result = eigentrust(graph, agents=[a for a in agents if not _is_revoked(store, a, now)],
                        pretrusted=[a for a in pretrusted if not _is_revoked(store, a, now)], damping=damping)
    if len(_EIGEN_CACHE) > 16:
        _EIGEN_CACHE.clear()
    _EIGEN_CACHE[key] = (store, result)
    return result


def trust_score(stores_or_store: Any, agent_id: str, *, method: Method = "eigen", pretrusted: Sequence[str] = (),
                now_ms: int | None = None, damping: float = EIGEN_DAMPING) -> float:
    """Global trust of ``agent_id`` in [0, 1] — the stable API other projections call.

    ``eigen`` (default): EigenTrust relative to a fair share, capped at 1 — robust to a
    group rating itself up, best with ``pretrusted`` agents; ``spec``: the spec's
    conservative 95 % Bayesian score over all observers; ``beta``: the Beta expectation.
    A revoked identity has trust 0; an agent nobody has observed has 0 (``spec``), the
    prior 0.5 (``beta``) or its teleport share (``eigen``: 0 unless pre-trusted).
    """
    store = trust_store(stores_or_store)
    now = now_ms if now_ms is not None else clock_of(store)
    if _is_revoked(store, agent_id, now):
        return 0.0
    if method == "eigen":
        return global_trust(store, pretrusted, now, damping).normalized(agent_id)
    record = store.get(f"agent/{agent_id}")
    if not isinstance(record, dict):
        return 0.0 if method == "spec" else 0.5
    rec = decay(record, now) if now is not None else record
    if method == "spec":
        return conservative(rec)
    if method == "beta":
        return beta_view(rec)["expectation"]
    raise ValueError(f"unknown trust method {method!r}")


def trust_path(store: StateStore, source: str, target: str, now_ms: int | None = None) -> TrustPath | None:
    """The spec's transitive trust from ``source`` to ``target`` (best path product, pruned below 0.1)."""
    now = now_ms if now_ms is not None else clock_of(store)
    return transitive_trust(score_graph(store, now), source, target)


def check_delegation(store: StateStore, delegation_id: str, at_ms: int, *, capability: str | None = None,
                     holder: str | None = None) -> ChainCheck:
    """Is the whole chain ending in ``delegation_id`` valid at ``at_ms`` (the using event's time)?"""
    def lookup(ident: str) -> dict[str, Any] | None:
        value = store.get(f"delegation/{ident}")
        return value if isinstance(value, dict) else None

    return check_chain(lookup, delegation_id, at_ms, identity_revoked_at=lambda did: revoked_at(store, did),
                       capability=capability, holder=holder)


def delegations_of(store: StateStore, agent_id: str, at_ms: int | None = None) -> dict[str, list[dict[str, Any]]]:
    """Delegations ``agent_id`` holds and granted, each with its whole-chain check at ``at_ms`` (default: now)."""
    now = at_ms if at_ms is not None else (clock_of(store) or 0)
    out: dict[str, list[dict[str, Any]]] = {"held": [], "granted": []}
    for side in ("held", "granted"):
        for key, _ in store.scan(f"{side}/{agent_id}/"):
            ident = key.rsplit("/", 1)[1]
            record = store.get(f"delegation/{ident}")
            if isinstance(record, dict):
                out[side].append({**record, "check": check_delegation(store, ident, now).as_dict()})
    return out


__all__ = [
    "LEARNING_RATE",
    "MAX_AGE_DAYS",
    "TrustProjection",
    "agent_trust",
    "beta_view",
    "check_delegation",
    "clock_of",
    "conservative",
    "decay",
    "delegations_of",
    "evidence_graph",
    "global_trust",
    "neutral",
    "observe",
    "outcome_delta",
    "revoked_at",
    "score_graph",
    "trust_path",
    "trust_score",
    "trust_store",
]
