"""Consensus projection: proposals, votes and decisions (the spec's ``ConsensusEngine``).

Folds ``consensus.proposed`` and ``consensus.vote`` into per-proposal tallies and derives
exactly one ``consensus.decided`` per proposal. Pure: no Kafka, no clock but event time.

Vocabulary
----------
*n* (``eligible_count``) is ``voter_count`` of the proposal; when ``eligible_voters`` is
given it must equal its length. A voter **holds a slot** once its first vote on an OPEN
proposal is accepted as eligible; at most *n* voters ever hold a slot, so every tally is
bounded by *n*. A slot holder's ballot is

* **counted** — eligible, confidence ≥ ``min_confidence``, never contradicted;
* **low_confidence** — confidence < ``min_confidence``: uses the slot, counts for nothing;
* **equivocated** — the voter later cast a *different* vote (choice, confidence or
  weight differ): the schema's rule, the safest one — none of its votes count, both are
  kept as evidence, it is listed in ``equivocating_voters``. Withdrawing the first vote
  (instead of keeping it) means an equivocator can never tip a decision either way.

A slot, once taken, is never given back: a voter that abstained, fell below
``min_confidence`` or equivocated can never approve later. That is what makes early
rejection safe: the approvals still reachable are the counted approvals plus one per
eligible voter that has not voted yet (``remaining = n - slots taken``).

Eligibility: with ``eligible_voters`` listed, only those DIDs get a slot; anyone else is
recorded as **ineligible** (vote stored, DID listed — up to 256 per proposal, all
counted in ``ineligible_count``) and never counted. With the list empty ("any registered
agent") the first *n* distinct voters (log order) get the slots — once all *n* are taken
every rule below decides, so later voters are simply late. This projection does not read
the agent registry, so "registered" is not checked here.

Weights (used by REPUTATION_WEIGHTED, and reported by every policy): a voter's weight
``w`` is its claimed weight clamped to [0, 1] (reputation and trust scores live in
[0, 1]; clamping stops one voter claiming 10^9). The **total weight** is
``T = Σ w(slot holders) + remaining``: a voter that has not voted is counted at the
maximum weight 1, and an equivocator at 1 whatever it claimed, so ``T`` never
under-states the electorate and an early approval cannot be overturned by weights yet
to arrive. ``approve_weight = Σ confidence × w`` of counted approvals (likewise
``reject_weight``), summed with ``math.fsum`` so tallies do not depend on vote order.
Consensus confidence (spec §2.3) = ``min(winning_weight / T, 1)`` where the winning side
is APPROVE for APPROVED and REJECT for REJECTED; it is 0 for EXPIRED (nothing won) and
when ``T = 0``.

Decision rules (evaluated after every accepted vote, in log order; the first rule met
decides, and a decision is final)
--------------------------------------------------------------------------------------
``A``/``R`` = counted approvals/rejections, ``r`` = remaining (not yet voted) eligible voters.

* **SIMPLE_MAJORITY**: ``required = floor(n/2) + 1`` (strictly more than half of *n*).
  APPROVED when ``A ≥ required``; REJECTED when ``A + r < required``.
* **TWO_THIRDS**: ``required = ceil(2n/3)``. APPROVED when ``A ≥ required``; REJECTED when
  ``A + r < required``.
* **UNANIMOUS**: ``required = n``. APPROVED when all *n* approve (counted); REJECTED as soon
  as ``A + r < n`` — i.e. the first REJECT, ABSTAIN, low-confidence ballot or
  equivocation among the eligible decides REJECTED.
* **BFT**: ``f = max_faulty`` or ``floor((n-1)/3)``; the proposal is refused unless
  ``n ≥ 3f + 1`` (below that no 2f+1 quorum is Byzantine-safe). ``required = 2f + 1``
  (n=4 → 3, n=7 → 5). APPROVED when ``A ≥ 2f+1``; REJECTED when ``R ≥ 2f+1`` (2f+1
  matching rejections) or when ``A + r < 2f+1`` (approval unreachable — with n = 3f+1
  that happens at the (f+1)-th rejection).
* **REPUTATION_WEIGHTED**: ``θ = weight_threshold`` (default 2/3). APPROVED when
  ``approve_weight > 0`` and ``approve_weight ≥ θ·T``; REJECTED when even all remaining
  voters approving at full weight and confidence cannot reach it:
  ``approve_weight + r < θ·(T_voted + r)`` (``T_voted`` = weight of slot holders; the
  ratio ``(A_w + s)/(T_voted + s)`` grows with the weight ``s`` still to come, so
  ``s = r`` is the best case), or when nothing can ever be approved (``r = 0`` and
  ``approve_weight = 0``). ``required`` in the decision is ``θ·T``.

``min_confidence`` applies to every policy (per vote, as the schema says). ABSTAIN counts
"for quorum only": it takes a slot and appears in ``abstain_count``; thresholds are in *n*.
The stored ``decided_reason`` is ``threshold-met``, ``approval-unreachable``,
``reject-quorum`` (BFT) or ``deadline``. No gap is left: once every eligible voter has
voted, one of the rules always holds, so only the deadline can leave a proposal undecided.

Deadlines
---------
Time is event time. The projection keeps a clock (``clock/now_ms`` = the largest
``timestamp_ms`` of any event it folded; see *Clock scope*). Before an event takes
effect the clock advances to its timestamp and every OPEN proposal with
``deadline_ms ≤ now`` becomes **EXPIRED** (``voting_pool.is_open() = now < closes_at``,
spec §6.3). Because every rule above is checked eagerly, a proposal still OPEN at its
deadline has by definition not met its rule: the deadline never decides on the votes
counted so far, it expires. A vote folded after the decision or the deadline (including
a vote whose own timestamp is at or past the deadline) is recorded as **late** and not
counted. ``expire_due(stores, now_ms)`` lets a runtime expire quiet proposals from its own
clock; it does not move the event clock. An EXPIRED decision records ``decided_ms =
deadline_ms`` whoever noticed it, so an expiry found by the runtime and the same expiry
found by a replay (at the next event) agree.

*Clock scope* (constructor ``clock_scope``): ``"global"`` (default) keeps one clock,
``clock/now_ms``, and expires against the newest event of any proposal this store holds.
``"lane"`` keeps one clock per partition (``clock/lane/<lane>``, no ``clock/now_ms``) and
expires a proposal only against events of its own partition (``ctx.lane``). Prefer
``"lane"`` for partitioned workers: (1) a partition's order is fixed by Kafka, the
interleaving of partitions is not, so only lane scope makes expiry — and hence which
late votes count — independent of how a worker or a replay interleaves partitions;
(2) every write then belongs to the folded record's own partition (a global clock makes
a record of partition 2 write the expiry of a proposal of partition 1, which a runtime
that logs table writes to the record's changelog partition would restore inconsistently
after a failover). Either way the clock is producer time: an authenticated event stamped
far in the future expires the proposals it can see early (EXPIRED is fail-safe: nothing
gets approved that way).

Exactly one decision
--------------------
The transition OPEN → APPROVED/REJECTED/EXPIRED happens once and is written in the
store together with the state that caused it; ``consensus.decided`` is derived only on
that transition. Redelivery is skipped by ``fold``'s marks, a repeated proposal or vote
event (same event id) is a no-op, and everything after the decision is "late". So the
store is the guard: folding the log twice, or replaying it into the same store, derives
nothing new. Emitting derived events only from the partition's owner (not from standby
replicas or audits replaying into a fresh store) is the runtime's job.

Refusals (``InvalidEvent``, raised before the reducer writes anything; ``fold`` then marks the event decided)
------------------------------------------------------------------------------------------------------------
``invalid-payload`` (confidence outside [0,1], negative/NaN/infinite weight, unknown
policy or choice, ``voter_count`` that disagrees with ``eligible_voters``, BFT with
``n < 3f+1``, ids containing ``/`` ...), ``subject-mismatch`` (Kafka key is not the
proposal id: ordering would not hold), ``proposer-mismatch`` / ``voter-mismatch``
(payload DID is not the envelope producer: a vote is only as good as the key that signed
it), ``duplicate-proposal``, ``unknown-proposal``, ``proposal-hash-mismatch`` (only
checked when the event context carries the proposal's event hash, see below).

Store layout (JSON values, never mutated in place)
--------------------------------------------------
``proposal/<id>``
    ``proposal_id operation proposer policy eligible open_eligibility eligible_count
    max_faulty required min_confidence weight_threshold deadline_ms command_id
    created_ms event_id proposal_hash scope status decided_ms decided_reason
    decided_at_offset last_offset ballots tallies counted_voters equivocating_voters
    ineligible_voters ineligible_count late_count late_equivocators``; ``status`` is
    OPEN, APPROVED, REJECTED or EXPIRED; ``ballots`` maps each slot holder to
    ``{status, choice, confidence, weight}`` (≤ n entries).
``vote/<id>/<voter>``
    the voter's first vote: ``choice confidence weight claimed_weight reason event_id
    timestamp_ms status (counted|low_confidence|ineligible|late) equivocated``.
``equivocation/<id>/<voter>``
    evidence: the distinct votes of an equivocating voter (first vote first), each
    ``event_id choice confidence weight timestamp_ms late``; at most ``max_evidence``.
``due/<scope>/<deadline_ms:020d>/<id>``, ``clock/now_ms``, ``clock/lane/<lane>``, ``clock/next_due/<scope>``
    the deadline index and the event clocks (see ``DeadlineIndex``).

Known gaps (need ``EventContext`` fields, see ``decided_at_offset`` in the schema):
``decided_at_offset`` is the partition offset of the last event the decision took into
account; ``EventContext`` carries no offset, so it is ``-1`` unless the context has an
``offset`` attribute. Likewise ``proposal_hash`` of a vote is only checked when the
context has an ``event_hash`` attribute (bytes).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, ClassVar, Literal

from swarmlog.projections.base import JSON, Derived, EventContext, InvalidEvent, Projection, StateStore, Stores
from swarmlog.projections.ticks import TICK

ClockScope = Literal["global", "lane"]

PROPOSED = "consensus.proposed"
VOTE = "consensus.vote"
DECIDED = "consensus.decided"

POLICIES = ("SIMPLE_MAJORITY", "TWO_THIRDS", "UNANIMOUS", "BFT", "REPUTATION_WEIGHTED")
CHOICES = ("APPROVE", "REJECT", "ABSTAIN")
OPEN, APPROVED, REJECTED, EXPIRED = "OPEN", "APPROVED", "REJECTED", "EXPIRED"
DEFAULT_WEIGHT_THRESHOLD = 2.0 / 3.0
MAX_LISTED = 256  # ineligible voters listed per proposal (the count is kept for all)

GLOBAL_SCOPE = "*"


# ------------------------------------------------------------------- payload field helpers (shared with sessions)
def field_number(payload: dict[str, Any], key: str, default: float | None = None) -> float:
    """A finite int/float field (bool is not a number here); ``invalid-payload`` otherwise."""
    value = payload.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidEvent("invalid-payload", f"{key} must be a finite number, got {value!r}")
    return float(value)


def field_int(payload: dict[str, Any], key: str, default: int | None = None) -> int:
    value = payload.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidEvent("invalid-payload", f"{key} must be an integer, got {value!r}")
    return value


def field_text(payload: dict[str, Any], key: str, *, key_safe: bool = False, default: str | None = None) -> str:
    """A string field; ``key_safe`` ones become part of store keys, so they may not hold ``/``."""
    value = payload.get(key, default)
    if not isinstance(value, str):
        raise InvalidEvent("invalid-payload", f"{key} must be a string, got {value!r}")
    if key_safe and (not value or "/" in value):
        raise InvalidEvent("invalid-payload", f"{key} must be non-empty and contain no '/': {value!r}")
    return value


def field_optional_text(payload: dict[str, Any], key: str) -> str | None:
    value = payload.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidEvent("invalid-payload", f"{key} must be a string or null, got {value!r}")
    return value


def field_unit_interval(payload: dict[str, Any], key: str, default: float) -> float:
    value = field_number(payload, key, default)
    if not 0.0 <= value <= 1.0:
        raise InvalidEvent("invalid-payload", f"{key} must be in [0, 1], got {value!r}")
    return value


def _ctx_offset(ctx: EventContext) -> int:
    """The record's partition offset if the runtime provides one (``EventContext`` has none yet)."""
    offset = getattr(ctx, "offset", None)
    return offset if isinstance(offset, int) and not isinstance(offset, bool) else -1


def _ctx_hash(ctx: EventContext) -> str | None:
    """The event hash (hex) if the runtime provides it (``EventContext`` has none yet)."""
    digest = getattr(ctx, "event_hash", None)
    return digest.hex() if isinstance(digest, bytes | bytearray) else None


# ---------------------------------------------------------------------------- deadline index
class DeadlineIndex:
    """Event-time clocks and an ordered index of open deadlines, kept in a projection's store.

    Why in the store: the clock and the pending deadlines are state like any other, so a
    replay rebuilds them and the changelog restores them after a crash. Keys:

    * ``clock/now_ms`` — newest event timestamp folded (``global`` scope);
    * ``clock/lane/<lane>`` — newest timestamp of that lane (``lane`` scope). In lane scope
      nothing is shared between lanes: every key a record writes belongs to its own
      partition, which is what a runtime that writes each table update to the changelog
      partition of the record being folded needs for failover to restore consistent state;
    * ``due/<scope>/<deadline:020d>/<id>`` — one key per open deadline, in time order
      (zero padding makes key order numeric order); ``scope`` is ``*`` or the lane;
    * ``clock/next_due/<scope>`` — a lower bound of the earliest open deadline, so the
      common case (nothing due) costs one ``get`` and no scan. Removing an entry leaves
      the bound stale-low on purpose: the next scan corrects it, and removal stays O(1).

    Shared by the consensus and session projections (a candidate for ``projections/base``).
    """

    def __init__(self, scope: ClockScope = "global") -> None:
        if scope not in ("global", "lane"):
            raise ValueError(f"clock scope must be 'global' or 'lane', not {scope!r}")
        self.scope = scope

    def scope_of(self, lane: str) -> str:
        return GLOBAL_SCOPE if self.scope == "global" else lane

    @staticmethod
    def clock_key(scope: str) -> str:
        return "clock/now_ms" if scope == GLOBAL_SCOPE else f"clock/lane/{scope}"

    def now(self, store: StateStore, scope: str) -> int | None:
        value = store.get(self.clock_key(scope))
        return value if isinstance(value, int) else None

    def advance(self, store: StateStore, lane: str, timestamp_ms: int) -> tuple[str, int]:
        """Move the scope's clock forward to ``timestamp_ms`` (never back); returns (scope, now)."""
        scope = self.scope_of(lane)
        key = self.clock_key(scope)
        current = store.get(key)
        if isinstance(current, int) and current >= timestamp_ms:
            return scope, current
        store.put(key, timestamp_ms)
        return scope, timestamp_ms

    def would_be_now(self, store: StateStore, lane: str, timestamp_ms: int) -> int:
        """The scope's clock after ``advance`` — for validation that must not write."""
        current = self.now(store, self.scope_of(lane))
        return timestamp_ms if current is None else max(current, timestamp_ms)

    @staticmethod
    def _due_key(scope: str, deadline_ms: int, ident: str) -> str:
        return f"due/{scope}/{deadline_ms:020d}/{ident}"

    def add(self, store: StateStore, scope: str, ident: str, deadline_ms: int) -> None:
        store.put(self._due_key(scope, deadline_ms, ident), ident)
        bound_key = f"clock/next_due/{scope}"
        bound = store.get(bound_key)
        if not isinstance(bound, int) or deadline_ms < bound:
            store.put(bound_key, deadline_ms)

    def remove(self, store: StateStore, scope: str, ident: str, deadline_ms: int) -> None:
        store.delete(self._due_key(scope, deadline_ms, ident))

    def pop_due(self, store: StateStore, scope: str, now_ms: int) -> list[str]:
        """Remove and return the ids whose deadline is ``<= now_ms``, earliest first."""
        bound_key = f"clock/next_due/{scope}"
        bound = store.get(bound_key)
        if not isinstance(bound, int) or now_ms < bound:
            return []
        due: list[tuple[str, str]] = []
        next_bound: int | None = None
        for key, ident in store.scan(f"due/{scope}/"):
            deadline = int(key.rsplit("/", 2)[1])
            if deadline > now_ms:
                next_bound = deadline
                break
            due.append((key, str(ident)))
        for key, _ in due:
            store.delete(key)
        if next_bound is None:
            store.delete(bound_key)
        else:
            store.put(bound_key, next_bound)
        return [ident for _, ident in due]

    def scopes(self, store: StateStore, lanes: Iterable[str] | None = None) -> list[str]:
        """Scopes with pending deadlines; with ``lanes`` (lane scope only), just those lanes'."""
        found = [key[len("clock/next_due/"):] for key, _ in store.scan("clock/next_due/")]
        if lanes is None or self.scope == "global":
            return found
        wanted = set(lanes)
        return [scope for scope in found if scope in wanted]


# ---------------------------------------------------------------------------- the projection
class ConsensusProjection(Projection):
    """Proposals, votes and exactly-once decisions; rules in the module docstring."""

    name: ClassVar[str] = "consensus"
    event_types: ClassVar[frozenset[str]] = frozenset({PROPOSED, VOTE, TICK})

    def __init__(self, clock_scope: ClockScope = "global", max_evidence: int = 8) -> None:
        """``max_evidence`` bounds the stored conflicting votes per equivocating voter
        (two are proof enough; a few more show a pattern; unbounded would let one voter
        grow the store at will)."""
        if max_evidence < 2:
            raise ValueError("max_evidence must be at least 2 (the two conflicting votes)")
        self.deadlines = DeadlineIndex(clock_scope)
        self.max_evidence = max_evidence

    # ------------------------------------------------------------------ entry points
    def apply(self, stores: Stores, ctx: EventContext, payload: dict[str, Any]) -> list[Derived]:
        store = stores.own
        if ctx.event_type == TICK:  # a quiet lane's clock (projections/ticks.py)
            return self.expire_due(stores, ctx.timestamp_ms, [ctx.lane])
        if ctx.event_type == PROPOSED:
            proposal = self._check_proposal(store, ctx, payload)
            if proposal is None:
                return []  # the very same proposal event again: nothing to do
            derived = self._advance(store, ctx)
            derived += self._open(store, ctx, proposal)
            return derived
        if ctx.event_type == VOTE:
            vote = self._check_vote(store, ctx, payload)
            if vote is None:
                return []
            derived = self._advance(store, ctx)
            derived += self._vote(store, ctx, vote)
            return derived
        raise InvalidEvent("unsupported-event-type", ctx.event_type)

    def expire_due(self, stores: Stores, now_ms: int, lanes: Iterable[str] | None = None) -> list[Derived]:
        """Expire every OPEN proposal whose deadline is ``<= now_ms`` (a runtime tick).

        For a runtime whose partitions go quiet: without a later event nothing would
        expire. The event clock is not moved (it is the newest *event* time), and the
        decision records ``decided_ms = deadline_ms``, so a replay that notices the same
        expiry at a later event writes the same decision. ``lanes`` (lane scope) limits
        the sweep to the partitions the caller owns, e.g. ``["consensus/3"]``.
        """
        store = stores.own
        derived: list[Derived] = []
        for scope in self.deadlines.scopes(store, lanes):
            for proposal_id in self.deadlines.pop_due(store, scope, now_ms):
                derived += self._expire(store, proposal_id)
        return derived

    # ------------------------------------------------------------------ validation (no writes)
    def _check_proposal(self, store: StateStore, ctx: EventContext, payload: dict[str, Any]) -> dict[str, Any] | None:
        proposal_id = field_text(payload, "proposal_id", key_safe=True)
        existing = store.get(f"proposal/{proposal_id}")
        if isinstance(existing, dict):
            if existing.get("event_id") == ctx.event_id:
                return None
            raise InvalidEvent("duplicate-proposal", proposal_id)
        if ctx.subject != proposal_id:
            raise InvalidEvent("subject-mismatch", f"subject {ctx.subject!r} != proposal_id {proposal_id!r}")
        operation = field_text(payload, "operation")
        proposer = field_text(payload, "proposer")
        if proposer != ctx.producer:
            raise InvalidEvent("proposer-mismatch", f"{proposer} is not the producer {ctx.producer}")
        policy = payload.get("policy")
        if policy not in POLICIES:
            raise InvalidEvent("invalid-payload", f"unknown policy {policy!r}")
        eligible_raw = payload.get("eligible_voters") or []
        if not isinstance(eligible_raw, list) or not all(isinstance(v, str) and v for v in eligible_raw):
            raise InvalidEvent("invalid-payload", "eligible_voters must be a list of DIDs")
        eligible = sorted(set(eligible_raw))
        if len(eligible) != len(eligible_raw):
            raise InvalidEvent("invalid-payload", "eligible_voters lists a DID twice")
        n = field_int(payload, "voter_count")
        if n < 1 or (eligible and n != len(eligible)):
            raise InvalidEvent("invalid-payload", f"voter_count {n} must be >= 1 and equal len(eligible_voters)")
        max_faulty_raw = payload.get("max_faulty")
        max_faulty: int | None = None
        if policy == "BFT":
            max_faulty = (n - 1) // 3 if max_faulty_raw is None else field_int(payload, "max_faulty")
            if max_faulty < 0 or n < 3 * max_faulty + 1:
                raise InvalidEvent("invalid-payload", f"BFT needs n >= 3f + 1 (n={n}, f={max_faulty})")
        elif max_faulty_raw is not None:
            field_int(payload, "max_faulty")  # type-checked, meaningless outside BFT
        min_confidence = field_unit_interval(payload, "min_confidence", 0.0)
        threshold: float | None = None
        if payload.get("weight_threshold") is not None:
            threshold = field_number(payload, "weight_threshold")
            if not 0.0 < threshold <= 1.0:
                raise InvalidEvent("invalid-payload", f"weight_threshold must be in (0, 1], got {threshold!r}")
        if policy == "REPUTATION_WEIGHTED" and threshold is None:
            threshold = DEFAULT_WEIGHT_THRESHOLD
        deadline_ms = field_int(payload, "deadline_ms")
        if deadline_ms < 0:
            raise InvalidEvent("invalid-payload", f"deadline_ms must be >= 0, got {deadline_ms}")
        command_id = field_optional_text(payload, "command_id")
        if policy == "SIMPLE_MAJORITY":
            required: int | None = n // 2 + 1
        elif policy == "TWO_THIRDS":
            required = (2 * n + 2) // 3
        elif policy == "UNANIMOUS":
            required = n
        elif policy == "BFT":
            assert max_faulty is not None
            required = 2 * max_faulty + 1
        else:
            required = None
        return {
            "proposal_id": proposal_id, "operation": operation, "proposer": proposer, "policy": policy,
            "eligible": eligible, "open_eligibility": not eligible, "eligible_count": n, "max_faulty": max_faulty,
            "required": required, "min_confidence": min_confidence, "weight_threshold": threshold,
            "deadline_ms": deadline_ms, "command_id": command_id, "created_ms": ctx.timestamp_ms,
            "event_id": ctx.event_id, "proposal_hash": _ctx_hash(ctx), "scope": self.deadlines.scope_of(ctx.lane),
            "status": OPEN, "decided_ms": None, "decided_reason": None, "decided_at_offset": None,
            "last_offset": _ctx_offset(ctx), "ballots": {}, "tallies": _tally({}, n),
            "counted_voters": [], "equivocating_voters": [], "ineligible_voters": [], "ineligible_count": 0,
            "late_count": 0, "late_equivocators": [],
        }

    def _check_vote(self, store: StateStore, ctx: EventContext, payload: dict[str, Any]) -> dict[str, Any] | None:
        proposal_id = field_text(payload, "proposal_id", key_safe=True)
        voter = field_text(payload, "voter", key_safe=True)
        choice = payload.get("choice")
        if choice not in CHOICES:
            raise InvalidEvent("invalid-payload", f"unknown choice {choice!r}")
        confidence = field_unit_interval(payload, "confidence", 1.0)
        weight = field_number(payload, "weight", 1.0)
        if weight < 0.0:
            raise InvalidEvent("invalid-payload", f"weight must be >= 0, got {weight!r}")
        reason = field_text(payload, "reason", default="")
        if voter != ctx.producer:
            raise InvalidEvent("voter-mismatch", f"{voter} is not the producer {ctx.producer}")
        proposal = store.get(f"proposal/{proposal_id}")
        if not isinstance(proposal, dict):
            raise InvalidEvent("unknown-proposal", proposal_id)
        if ctx.subject != proposal_id:
            raise InvalidEvent("subject-mismatch", f"subject {ctx.subject!r} != proposal_id {proposal_id!r}")
        voted_hash = payload.get("proposal_hash")
        if isinstance(voted_hash, bytes | bytearray) and proposal.get("proposal_hash") is not None \
                and voted_hash.hex() != proposal["proposal_hash"]:
            raise InvalidEvent("proposal-hash-mismatch", f"vote binds to another proposal event than {proposal_id}")
        previous = store.get(f"vote/{proposal_id}/{voter}")
        if isinstance(previous, dict) and previous.get("event_id") == ctx.event_id:
            return None
        return {"proposal_id": proposal_id, "voter": voter, "choice": choice, "confidence": confidence,
                "claimed_weight": weight, "weight": min(weight, 1.0), "reason": reason}

    # ------------------------------------------------------------------ effects
    def _advance(self, store: StateStore, ctx: EventContext) -> list[Derived]:
        """Move the event clock to this event and expire what fell due (before the event acts)."""
        scope, now = self.deadlines.advance(store, ctx.lane, ctx.timestamp_ms)
        derived: list[Derived] = []
        for proposal_id in self.deadlines.pop_due(store, scope, now):
            derived += self._expire(store, proposal_id)
        return derived

    def _open(self, store: StateStore, ctx: EventContext, proposal: dict[str, Any]) -> list[Derived]:
        proposal_id = proposal["proposal_id"]
        store.put(f"proposal/{proposal_id}", proposal)
        self.deadlines.add(store, proposal["scope"], proposal_id, proposal["deadline_ms"])
        # A deadline already behind the clock (or the proposal's own timestamp) expires at once.
        now = self.deadlines.now(store, proposal["scope"])
        if now is not None and proposal["deadline_ms"] <= now:
            self.deadlines.remove(store, proposal["scope"], proposal_id, proposal["deadline_ms"])
            return self._expire(store, proposal_id)
        return []

    def _vote(self, store: StateStore, ctx: EventContext, vote: dict[str, Any]) -> list[Derived]:
        proposal_id, voter = vote["proposal_id"], vote["voter"]
        proposal = dict(store.get(f"proposal/{proposal_id}"))
        vote_key = f"vote/{proposal_id}/{voter}"
        previous = store.get(vote_key)
        content = (vote["choice"], vote["confidence"], vote["claimed_weight"])
        is_open = proposal["status"] == OPEN
        if isinstance(previous, dict):
            if content == (previous["choice"], previous["confidence"], previous["claimed_weight"]):
                return []  # the same vote again (a re-send, not a conflict)
            return self._equivocate(store, ctx, proposal, previous, vote, late=not is_open)
        record = {
            "voter": voter, "choice": vote["choice"], "confidence": vote["confidence"], "weight": vote["weight"],
            "claimed_weight": vote["claimed_weight"], "reason": vote["reason"], "event_id": ctx.event_id,
            "timestamp_ms": ctx.timestamp_ms, "status": "", "equivocated": False,
        }
        ballots: dict[str, Any] = proposal["ballots"]
        if not is_open:
            record["status"] = "late"
            proposal["late_count"] += 1
            store.put(vote_key, record)
            store.put(f"proposal/{proposal_id}", proposal)
            return []
        eligible = voter in proposal["eligible"] if not proposal["open_eligibility"] \
            else len(ballots) < proposal["eligible_count"]
        if not eligible:
            record["status"] = "ineligible"
            proposal["ineligible_count"] += 1
            if len(proposal["ineligible_voters"]) < MAX_LISTED:
                proposal["ineligible_voters"] = sorted([*proposal["ineligible_voters"], voter])
            store.put(vote_key, record)
            store.put(f"proposal/{proposal_id}", proposal)
            return []
        status = "counted" if vote["confidence"] >= proposal["min_confidence"] else "low_confidence"
        record["status"] = status
        proposal["ballots"] = {**ballots, voter: {"status": status, "choice": vote["choice"],
                                                  "confidence": vote["confidence"], "weight": vote["weight"]}}
        proposal["last_offset"] = _ctx_offset(ctx)
        store.put(vote_key, record)
        return self._settle(store, proposal, ctx.timestamp_ms)

    def _equivocate(self, store: StateStore, ctx: EventContext, proposal: dict[str, Any],
                    previous: dict[str, Any], vote: dict[str, Any], *, late: bool) -> list[Derived]:
        """A voter's second, different vote: keep the evidence; void its ballot if it holds one."""
        proposal_id, voter = vote["proposal_id"], vote["voter"]
        evidence_key = f"equivocation/{proposal_id}/{voter}"
        evidence = store.get(evidence_key)
        entries: list[dict[str, Any]] = list(evidence) if isinstance(evidence, list) else [
            {"event_id": previous["event_id"], "choice": previous["choice"], "confidence": previous["confidence"],
             "weight": previous["claimed_weight"], "timestamp_ms": previous["timestamp_ms"],
             "late": previous["status"] == "late"}]
        content = (vote["choice"], vote["confidence"], vote["claimed_weight"])
        if any((e["choice"], e["confidence"], e["weight"]) == content for e in entries):
            return []  # this conflicting vote is already on file
        if len(entries) < self.max_evidence:
            entries.append({"event_id": ctx.event_id, "choice": vote["choice"], "confidence": vote["confidence"],
                            "weight": vote["claimed_weight"], "timestamp_ms": ctx.timestamp_ms, "late": late})
            store.put(evidence_key, entries)
        if not previous["equivocated"]:
            store.put(f"vote/{proposal_id}/{voter}", {**previous, "equivocated": True})
        ballot = proposal["ballots"].get(voter)
        if ballot is None or ballot["status"] == "equivocated":
            return []  # no slot (ineligible or late first vote) or already voided: evidence only
        if late:
            # decided before the conflict showed: the decision stands, the voter is still named
            if voter not in proposal["late_equivocators"]:
                proposal["late_equivocators"] = sorted([*proposal["late_equivocators"], voter])
                store.put(f"proposal/{proposal_id}", proposal)
            return []
        proposal["ballots"] = {**proposal["ballots"], voter: {**ballot, "status": "equivocated", "weight": 1.0}}
        proposal["equivocating_voters"] = sorted([*proposal["equivocating_voters"], voter])
        proposal["last_offset"] = _ctx_offset(ctx)
        return self._settle(store, proposal, ctx.timestamp_ms)

    def _settle(self, store: StateStore, proposal: dict[str, Any], now_ms: int) -> list[Derived]:
        """Recount an OPEN proposal, apply its rule and store it; derive the decision if one was reached."""
        ballots = proposal["ballots"]
        proposal["tallies"] = _tally(ballots, proposal["eligible_count"])
        proposal["counted_voters"] = sorted(v for v, b in ballots.items() if b["status"] == "counted")
        verdict = _evaluate(proposal)
        if verdict is None:
            store.put(f"proposal/{proposal['proposal_id']}", proposal)
            return []
        self.deadlines.remove(store, proposal["scope"], proposal["proposal_id"], proposal["deadline_ms"])
        return [_decide(store, proposal, verdict[0], verdict[1], now_ms)]

    def _expire(self, store: StateStore, proposal_id: str) -> list[Derived]:
        proposal = store.get(f"proposal/{proposal_id}")
        if not isinstance(proposal, dict) or proposal["status"] != OPEN:
            return []  # decided meanwhile (its due entry was stale): the store is the guard
        return [_decide(store, dict(proposal), EXPIRED, "deadline", proposal["deadline_ms"])]


# ---------------------------------------------------------------------------- pure rule functions
def _tally(ballots: dict[str, Any], n: int) -> dict[str, Any]:
    """Counts and weights of the slot holders; order-independent (sorted voters, fsum)."""
    counts = {"APPROVE": 0, "REJECT": 0, "ABSTAIN": 0}
    weights: dict[str, list[float]] = {"APPROVE": [], "REJECT": [], "ABSTAIN": []}
    voted_weight: list[float] = []
    for voter in sorted(ballots):
        ballot = ballots[voter]
        voted_weight.append(ballot["weight"])
        if ballot["status"] == "counted":
            counts[ballot["choice"]] += 1
            weights[ballot["choice"]].append(ballot["confidence"] * ballot["weight"])
    remaining = n - len(ballots)
    voted = math.fsum(voted_weight)
    return {
        "approve": counts["APPROVE"], "reject": counts["REJECT"], "abstain": counts["ABSTAIN"],
        "voted": len(ballots), "remaining": remaining,
        "approve_weight": math.fsum(weights["APPROVE"]), "reject_weight": math.fsum(weights["REJECT"]),
        "abstain_weight": math.fsum(weights["ABSTAIN"]), "voted_weight": voted,
        "total_weight": math.fsum([voted, float(remaining)]),
    }


def _evaluate(proposal: dict[str, Any]) -> tuple[str, str] | None:
    """The policy's verdict on the current tallies: (outcome, reason) or None while undecided."""
    t = proposal["tallies"]
    remaining = t["remaining"]
    if proposal["policy"] == "REPUTATION_WEIGHTED":
        theta = proposal["weight_threshold"]
        approve_w = t["approve_weight"]
        if approve_w > 0.0 and approve_w >= theta * t["total_weight"]:
            return APPROVED, "threshold-met"
        if approve_w + remaining < theta * (t["voted_weight"] + remaining) or (remaining == 0 and approve_w == 0.0):
            return REJECTED, "approval-unreachable"
        return None
    required = proposal["required"]
    if t["approve"] >= required:
        return APPROVED, "threshold-met"
    if proposal["policy"] == "BFT" and t["reject"] >= required:
        return REJECTED, "reject-quorum"
    if t["approve"] + remaining < required:
        return REJECTED, "approval-unreachable"
    return None


def _decide(store: StateStore, proposal: dict[str, Any], outcome: str, reason: str, decided_ms: int) -> Derived:
    """Close the proposal for good and build its ``consensus.decided`` payload (schema order)."""
    t = proposal["tallies"]
    total = t["total_weight"]
    if proposal["policy"] == "REPUTATION_WEIGHTED":
        required = proposal["weight_threshold"] * total
    else:
        required = float(proposal["required"])
    winning = {APPROVED: t["approve_weight"], REJECTED: t["reject_weight"]}.get(outcome, 0.0)
    confidence = min(winning / total, 1.0) if total > 0.0 else 0.0
    proposal["status"] = outcome
    proposal["decided_ms"] = decided_ms
    proposal["decided_reason"] = reason
    proposal["decided_at_offset"] = proposal["last_offset"]
    payload: dict[str, JSON] = {
        "proposal_id": proposal["proposal_id"], "outcome": outcome,
        "approve_count": t["approve"], "reject_count": t["reject"], "abstain_count": t["abstain"],
        "eligible_count": proposal["eligible_count"], "required": required,
        "approve_weight": t["approve_weight"], "reject_weight": t["reject_weight"], "total_weight": total,
        "confidence": confidence, "counted_voters": list(proposal["counted_voters"]),
        "equivocating_voters": list(proposal["equivocating_voters"]),
        "ineligible_voters": list(proposal["ineligible_voters"]),
        "decided_at_offset": proposal["last_offset"],
    }
    store.put(f"proposal/{proposal['proposal_id']}", proposal)
    return Derived(DECIDED, payload, subject=proposal["proposal_id"])


# ---------------------------------------------------------------------------- queries
def get_proposal(store: StateStore, proposal_id: str) -> dict[str, Any] | None:
    """The proposal with its tallies, every recorded vote and any equivocation evidence."""
    proposal = store.get(f"proposal/{proposal_id}")
    if not isinstance(proposal, dict):
        return None
    votes = {key.rsplit("/", 1)[1]: value for key, value in store.scan(f"vote/{proposal_id}/")}
    evidence = {key.rsplit("/", 1)[1]: value for key, value in store.scan(f"equivocation/{proposal_id}/")}
    return {**proposal, "votes": votes, "equivocation": evidence}


def open_proposals(store: StateStore) -> list[str]:
    """Ids of the proposals still OPEN (from the deadline index, so no full scan of proposals)."""
    return sorted(str(ident) for _, ident in store.scan("due/"))
