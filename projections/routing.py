"""Command routing projection: the CommandBroker as a pure reducer over the registry.

On ``commands.requested`` it records the request and **derives** a routing decision —
``commands.routed`` (chosen agent, score, the inputs that decided it, runner-ups) or
``commands.route_failed`` (a reason from the schema's enum), never silence. It does not
store that decision: the decision is computed from the registry replica (``reads``),
whose state at that moment depends on how the worker happened to interleave the
``agents``, ``commands`` and ``receipts`` partitions, so a replay would compute another
one. The state folds the **recorded** decision instead: ``commands.routed`` and
``commands.route_failed`` are event types of this projection and set the command's
status, agent, score, reason and strategy from the event payload; receipts complete it.
A replay therefore reproduces the live state from the log whatever the registry says,
and an auditor re-runs the pure decision on the recorded inputs (see Auditing).

The store is a sharded Faust table fed by ``commands`` and ``receipts``, both keyed by
command id and co-partitioned, so every key is written only from events of the one
partition its command id (or lane) maps to (docs/architecture.md, rule 1).

Store layout (JSON values):

``cmd/<command_id>``
    ``{status, capability, requester, requested_strategy, strategy, requested_ms,
    target_agent, cursor, agent, score, reason, detail, candidates, eligible, decided_ms,
    receipts, problem}`` — three parts, each written by one kind of event:

    * the request (``commands.requested``): ``capability requester requested_strategy
      requested_ms target_agent cursor`` and ``strategy`` = the strategy this router
      applies for the request;
    * the decision (``commands.routed`` / ``commands.route_failed``, from the payload):
      ``agent score strategy candidates eligible`` or ``reason detail candidates
      strategy``, and ``decided_ms``;
    * the receipts (``commands.receipt``; one naming a session is also forwarded into
      the session's partition as a derived ``sessions.receipt_recorded``, see
      ``session_receipt``): ``receipts = {agent_id: {capability, success,
      timed_out, duration_ms, finished_ms, receipt_ms}}``, one per reporting agent; the
      routed agent's is also copied flat (``success timed_out duration_ms finished_ms
      receipt_ms``) once it resolves the command.

    ``status`` and ``problem`` are derived from the three parts on every write:
    REQUESTED (request only) → ROUTED / ROUTE_FAILED (decision folded) → COMPLETED /
    FAILED (a receipt from the routed agent for the routed capability). A receipt that
    does not match — another agent, another capability, a command that failed routing
    — is kept but does not complete the command, and ``problem`` names it
    (``agent-mismatch``, ``capability-mismatch``, ``not-routed``). RECEIPTED = receipts
    whose request has not been folded yet. Receipts are keyed by agent so that a stray
    receipt from another agent cannot block the routed agent's own.
``rr/<capability>/<lane>``
    the ROUND_ROBIN cursor of the capability in one ``commands`` lane (``topic/partition``
    of the request): how many non-targeted ROUND_ROBIN requests for the capability that
    lane carried. Keyed per lane because requests of one capability come from every
    partition (a single cursor would be fed by several partitions in an order Kafka does
    not fix, and would live in several table shards); counted per *request*, routed or
    not, because whether a request routes depends on the registry replica.

Order of events (both orders are handled the same way in live workers and replays):

* requested and its decision share a partition (topic ``commands``, key command id) and
  the worker produces the decision after reading the request, so the request comes
  first. A decision without a folded request is refused (``unknown-command``), a second
  decision (``duplicate-decision``), a decision for another capability
  (``invalid-payload``); a second request is ``duplicate-command``. Each of those is
  decided inside one partition, hence identically everywhere.
* the receipt lives on topic ``receipts``: a live worker or a replay may fold it before
  the request or the decision. It is therefore never refused for what the other topic
  says: it is stored, and the status resolves when the decision arrives, whichever came
  first. Only its own content (``invalid-payload``) or a second receipt from the same
  agent for the same command (``duplicate-receipt``, decided in the one receipts
  partition of the command) is refused.

Decision procedure (``now = max(registry clock, request timestamp)``):

1. Request checks: ``encrypted`` without ``target_agent`` → OTHER; ``deadline_ms < now``
   → DEADLINE_PASSED; ``min_trust > 0`` → BELOW_MIN_TRUST. The last one fails *closed*:
   this router does not read the trust projection yet, and silently ignoring a trust
   floor would route to agents the requester refused.
2. Candidates: the live agents serving the capability (``find_by_capability``: not
   deregistered, not expired). None → NO_CAPABLE_AGENT (detail says how many are
   registered but expired).
3. ``screen``: healthy = the monitor has not declared it FAILED and health ≥ 0.5
   (DEGRADED stays routable); none → ALL_UNHEALTHY. Then below max_concurrency; none →
   OVER_CAPACITY.
   Then ``guard_eligible``: circuit breakers and bulkheads, read from the registry —
   the breaker of (agent, capability) folded from the receipts lane paired with the
   request's commands lane (``receipts_lane``: the receipts of the commands this shard
   routed, one resilience4j client per shard), and the in-flight calls per (agent,
   capability) against the agent's bulkhead (``registry.bulkhead_of``). OPEN excludes;
   HALF_OPEN admits while fewer than ``permitted_half_open`` calls are in flight. The
   exclusions are **recorded** in ``commands.routed.excluded`` (schema v2) — breaker
   state is an input to the decision, and the log carries it like every other input.
   Nobody admitted → CIRCUIT_OPEN (all exclusions are breakers; ``retry_after_ms`` =
   the soonest half-open time) or OVER_CAPACITY (a bulkhead involved), the cause per
   agent in ``detail``.
4. ``pick`` by strategy among the eligible. Every strategy minimises a sort key whose
   last component is the agent id, so ties are broken deterministically:

   ============== ====================================== =============================
   strategy       key (smaller wins)                     score reported (higher better)
   ============== ====================================== =============================
   BEST_FIT       (-fitness, agent_id)                   fitness
   MIN_LATENCY    (latency_ms, -fitness, agent_id)       latency_factor
   MAX_RELIABILITY (-reliability, -fitness, agent_id)    reliability
   LEAST_LOADED   (load/max_concurrency, -fitness, id)   capacity_factor
   ROUND_ROBIN    eligible sorted by id, index           fitness
                  ``cursor % len(eligible)``
   PREDICTED      (predicted_latency_ms, -fitness, id)   latency_factor(predicted)
   ============== ====================================== =============================

   Fitness is the secondary key (not the id) because exact ties on one metric are the
   common case (every fresh agent has load 0 and the same prior reliability) and the id
   alone would send them all to the same agent. PREDICTED minimises ``predicted_latency_ms``
   (a learned prediction carried by the candidate, else latency × queueing ÷ reliability;
   recorded in ``inputs.predicted_latency_ms``). ``LearnedRoutingProjection`` (the live
   worker's router) attaches the learned one from the replica's ``latency`` store
   (``latency_models.py``, per receipts lane) and records ``model_version``; a replay
   folds the recorded decision and needs no model. TRUST_WEIGHTED and MIN_COST
   need the trust, learning and market projections, which this router does not read:
   they **fall back to BEST_FIT**, as the schema prescribes for symbols a reader does not
   know; the routed event's ``strategy`` says BEST_FIT (the strategy actually applied)
   and ``cmd/<id>.requested_strategy`` keeps what was asked.
5. ``target_agent`` pins the command: routed there if it is registered, live, serves the
   capability, healthy and has capacity; otherwise TARGET_UNAVAILABLE with the cause in
   ``detail``. The cursor does not move.

Auditing: ``choose(candidates, strategy, cursor)`` = ``screen`` + ``pick`` is exactly what
the derivation runs. Given the candidates the router saw (a replay of the registry up to
the request gives them; ``candidates_for`` reproduces the lookup) and the cursor stored
in ``cmd/<id>`` by the request (a function of the request's lane, so a replay
reproduces it; the routed schema has no cursor field), an auditor re-runs it and must
get the recorded agent and score; ``audit_routed`` also checks the recorded inputs
against the formulas.

Known limitation: the registry counts a routed command only when it folds the
``commands.routed`` event, so a burst of requests derived before that round trip sees
the same load and may herd onto one agent under BEST_FIT/LEAST_LOADED (ROUND_ROBIN does
not).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from swarmlog.projections.base import Derived, EventContext, InvalidEvent, Projection, StateStore, Stores
from swarmlog.projections.registry import (
    ACTIVE,
    EXPIRED,
    breaker_key,
    bulkhead_of,
    cap_key,
    capacity_factor,
    clock,
    find_by_capability,
    fitness,
    fitness_of,
    forced_open,
    get_agent,
    has_capacity,
    in_flight,
    latency_factor,
    routable_health,
)
from swarmlog.projections.resilience import OPEN, ROUTING_BREAKER, force_open, guard, new_breaker, state_at

CMD_PREFIX = "cmd/"
RR_PREFIX = "rr/"

IMPLEMENTED_STRATEGIES = ("MIN_LATENCY", "MAX_RELIABILITY", "BEST_FIT", "ROUND_ROBIN", "LEAST_LOADED", "PREDICTED")
TRUST_WEIGHTED = "TRUST_WEIGHTED"  # implemented when the router reads the trust projection (TrustAwareRouting)
FALLBACK_STRATEGY = "BEST_FIT"
ALTERNATIVES = 3

REQUESTED = "REQUESTED"
RECEIPTED = "RECEIPTED"
ROUTED = "ROUTED"
ROUTE_FAILED = "ROUTE_FAILED"
COMPLETED = "COMPLETED"
FAILED = "FAILED"

# Suggested retry delay per failure reason; None = do not retry (the schema's convention).
RETRY_AFTER_MS: dict[str, int | None] = {
    "OVER_CAPACITY": 1_000,
    "CIRCUIT_OPEN": ROUTING_BREAKER.wait_open_ms,
    "ALL_UNHEALTHY": 10_000,
    "NO_CAPABLE_AGENT": None,
    "BELOW_MIN_TRUST": None,
    "DEADLINE_PASSED": None,
    "OTHER": None,
}

Candidate = Mapping[str, Any]
# (agent_id, method) -> trust in [0, 1]; method None = the router's routing trust, "spec" = conservative score
TrustLookup = Callable[[str, str | None], float]


def cmd_key(command_id: str) -> str:
    return CMD_PREFIX + command_id


def rr_key(capability: str, lane: str) -> str:
    """The ROUND_ROBIN cursor of ``capability`` in one source lane (``topic/partition``)."""
    return f"{RR_PREFIX}{capability}/{lane}"


def applied_strategy(requested: str, with_trust: bool = False) -> str:
    """The strategy this router applies for ``requested``: itself if implemented, else BEST_FIT.

    TRUST_WEIGHTED is implemented only by a router that reads the trust projection.
    """
    if requested == TRUST_WEIGHTED and with_trust:
        return TRUST_WEIGHTED
    return requested if requested in IMPLEMENTED_STRATEGIES else FALLBACK_STRATEGY


# ---------------------------------------------------------------------------- pure decision
def _load_ratio(c: Candidate) -> float:
    return float(c["load"] / c["max_concurrency"])


def predicted_latency_ms(c: Candidate) -> float:
    """PREDICTED strategy: expected time to a *successful* completion on this agent, ms.

    A learned prediction when the candidate carries one (``predicted_latency_ms``, e.g.
    from ``learning.LatencyPredictor``); otherwise the registry's own online estimate:
    decayed latency × (1 + load / max_concurrency) (queueing behind in-flight work) ÷
    reliability (expected attempts until success, geometric), so a fast agent that fails
    half its calls predicts as slow as it effectively is.
    """
    learned = c.get("predicted_latency_ms")
    if learned is not None:
        return float(learned)
    return float(c["latency_ms"]) * (1 + _load_ratio(c)) / max(float(c["reliability"]), 0.05)


def trust_weighted(c: Candidate) -> float:
    """The spec's trust-weighted selection score (usage pattern 4): trust × fitness.

    Only the trust-aware router annotates candidates with ``trust``; the plain router
    cannot rank by it and says so (ValueError) instead of guessing a neutral trust.
    """
    if "trust" not in c:
        raise ValueError("TRUST_WEIGHTED needs candidates annotated with trust (TrustAwareRoutingProjection)")
    return float(c["trust"]) * fitness(c)


_KEYS: dict[str, Callable[[Candidate], tuple[Any, ...]]] = {
    "BEST_FIT": lambda c: (-fitness(c), c["agent_id"]),
    "MIN_LATENCY": lambda c: (c["latency_ms"], -fitness(c), c["agent_id"]),
    "MAX_RELIABILITY": lambda c: (-c["reliability"], -fitness(c), c["agent_id"]),
    "LEAST_LOADED": lambda c: (_load_ratio(c), -fitness(c), c["agent_id"]),
    "PREDICTED": lambda c: (predicted_latency_ms(c), -fitness(c), c["agent_id"]),
    # candidates carry "trust" (annotated by the trust-aware router); fitness breaks ties
    TRUST_WEIGHTED: lambda c: (-trust_weighted(c), -fitness(c), c["agent_id"]),
}


def score_of(strategy: str, c: Candidate) -> float:
    """The chosen agent's score under ``strategy`` (higher is better), as recorded in commands.routed."""
    if strategy == "MIN_LATENCY":
        return latency_factor(c["latency_ms"])
    if strategy == "MAX_RELIABILITY":
        return float(c["reliability"])
    if strategy == "LEAST_LOADED":
        return capacity_factor(c["load"], c["max_concurrency"])
    if strategy in ("BEST_FIT", "ROUND_ROBIN"):
        return fitness(c)
    if strategy == "PREDICTED":
        return latency_factor(predicted_latency_ms(c))
    if strategy == TRUST_WEIGHTED:
        return trust_weighted(c)
    raise ValueError(f"strategy {strategy!r} is not implemented by this router")


def screen(candidates: Sequence[Candidate]) -> tuple[list[Candidate], str, str]:
    """Filter capable candidates to the eligible ones: (eligible, failure reason, detail).

    Order decides the reason: none at all → NO_CAPABLE_AGENT; none healthy →
    ALL_UNHEALTHY; none of the healthy below max_concurrency → OVER_CAPACITY.
    """
    if not candidates:
        return [], "NO_CAPABLE_AGENT", "no live agent serves the capability"
    healthy = [c for c in candidates if routable_health(c)]
    if not healthy:
        return [], "ALL_UNHEALTHY", f"{len(candidates)} candidates, all FAILED or health < 0.5"
    eligible = [c for c in healthy if has_capacity(c)]
    if not eligible:
        return [], "OVER_CAPACITY", f"{len(healthy)} healthy candidates, all at max_concurrency"
    return eligible, "", ""


def _rotation(eligible: Sequence[Candidate]) -> list[Candidate]:
    return sorted(eligible, key=lambda c: str(c["agent_id"]))


def pick(eligible: Sequence[Candidate], strategy: str, cursor: int) -> Candidate:
    """The winner among non-empty ``eligible`` under an implemented ``strategy``."""
    if strategy == "ROUND_ROBIN":
        ring = _rotation(eligible)
        return ring[cursor % len(ring)]
    key = _KEYS.get(strategy)
    if key is None:
        raise ValueError(f"strategy {strategy!r} is not implemented by this router")
    return min(eligible, key=key)


def runner_ups(eligible: Sequence[Candidate], strategy: str, cursor: int, n: int = ALTERNATIVES) -> list[Candidate]:
    """The next ``n`` candidates after the winner: next best by key, or next in the rotation."""
    if strategy == "ROUND_ROBIN":
        ring = _rotation(eligible)
        start = cursor % len(ring)
        return [ring[(start + i) % len(ring)] for i in range(1, min(n, len(ring) - 1) + 1)]
    return heapq.nsmallest(n + 1, eligible, key=_KEYS[strategy])[1:]


def choose(candidates: Sequence[Candidate], strategy: str, cursor: int) -> tuple[str | None, float, str]:
    """Re-runnable routing decision: (agent_id, score, "") or (None, 0.0, failure reason).

    ``candidates`` are the live agents serving the capability (registry records, or
    ``candidate_from_inputs`` rebuilt from recorded inputs); ``strategy`` is the applied
    one (see ``applied_strategy``); ``cursor`` matters for ROUND_ROBIN only.
    """
    eligible, reason, _detail = screen(candidates)
    if not eligible:
        return None, 0.0, reason
    chosen = pick(eligible, strategy, cursor)
    return str(chosen["agent_id"]), score_of(strategy, chosen), ""


def receipts_lane(commands_lane: str) -> str:
    """The receipts lane carrying the receipts of commands requested on ``commands_lane``.

    ``commands`` and ``receipts`` are both keyed by command id with the same partition
    count, so ``<prefix>commands/p`` pairs with ``<prefix>receipts/p``. Another topic
    name (tests, replays of foreign logs) maps to itself.
    """
    topic, _, partition = commands_lane.rpartition("/")
    if topic.endswith("commands"):
        return f"{topic[:-len('commands')]}receipts/{partition}"
    return commands_lane


def guard_eligible(registry: StateStore, eligible: Sequence[Candidate], capability: str, lane: str,
                   now_ms: int) -> tuple[list[Candidate], list[dict[str, str]], int | None]:
    """Breakers and bulkheads over the eligible: (allowed, exclusions, retry_after_ms of the soonest breaker).

    Reads the registry only: each candidate's breaker for ``capability`` in the receipts lane
    paired with the request's ``lane`` (OPEN rejects; HALF_OPEN admits while fewer than
    ``permitted_half_open`` calls are in flight to it), its in-flight calls and its
    bulkhead (``bulkhead_of``). Exclusions are ``{agent_id, reason}`` in candidate order;
    they go into the routed event so the decision can be audited without the registry.
    """
    blane = receipts_lane(lane)
    breakers: dict[tuple[str, str], Mapping[str, Any]] = {}
    bulkheads: dict[tuple[str, str], int] = {}
    flights: dict[tuple[str, str], int] = {}
    for c in eligible:
        key = (str(c["agent_id"]), capability)
        b = registry.get(breaker_key(key[0], capability, blane))
        forced = forced_open(registry, key[0])
        if forced is not None and now_ms < forced + ROUTING_BREAKER.wait_open_ms:
            b = force_open(b or new_breaker(), forced)  # a heal OPEN_CIRCUIT action: every lane, for one wait
        if b is not None:
            breakers[key] = b
        cap = bulkhead_of(c, capability)
        if cap is not None:
            bulkheads[key] = cap
        if b is not None or cap is not None:
            flights[key] = in_flight(registry, key[0], capability)
    if not breakers and not bulkheads:
        return list(eligible), [], None
    allowed, why = guard(eligible, capability, now_ms, breakers, ROUTING_BREAKER, bulkheads, flights)
    excluded = [{"agent_id": str(c["agent_id"]), "reason": why[str(c["agent_id"])]}
                for c in eligible if str(c["agent_id"]) in why]
    waits = [b["opened_ms"] + ROUTING_BREAKER.wait_open_ms - now_ms for (agent, _), b in breakers.items()
             if agent in why and state_at(b, now_ms, ROUTING_BREAKER) == OPEN]
    return allowed, excluded, min(waits) if waits else None


def guard_failure(excluded: Sequence[Mapping[str, str]]) -> str:
    """Why nobody was left: CIRCUIT_OPEN if every exclusion was a breaker, else OVER_CAPACITY (a full
    bulkhead frees up as soon as a call finishes)."""
    return "CIRCUIT_OPEN" if all(e["reason"].startswith("circuit") for e in excluded) else "OVER_CAPACITY"


def route_inputs(c: Candidate) -> dict[str, Any]:
    """The ``RouteInputs`` record of a candidate: what the decision saw, for audit and learning."""
    return {
        "health_score": float(c["health"]),
        "latency_ms": float(c["latency_ms"]),
        "latency_factor": latency_factor(c["latency_ms"]),
        "reliability": float(c["reliability"]),
        "capacity_factor": capacity_factor(c["load"], c["max_concurrency"]),
        "current_load": int(c["load"]),
        "max_concurrency": int(c["max_concurrency"]),
        "fitness": fitness(c),
        "trust": float(c["trust"]) if c.get("trust") is not None else None,
        "predicted_latency_ms": None,
        "predicted_success": None,
        "price": None,
    }


def candidate_from_inputs(agent_id: str, inputs: Mapping[str, Any], health_status: str = "UNKNOWN") -> dict[str, Any]:
    """A candidate dict ``choose`` accepts, rebuilt from a recorded ``RouteInputs``."""
    out = {
        "agent_id": agent_id, "health": inputs["health_score"], "health_status": health_status,
        "latency_ms": inputs["latency_ms"], "reliability": inputs["reliability"],
        "load": inputs["current_load"], "max_concurrency": inputs["max_concurrency"],
        "trust": inputs.get("trust"),
    }
    if inputs.get("predicted_latency_ms") is not None:
        out["predicted_latency_ms"] = inputs["predicted_latency_ms"]
    return out


def candidates_for(registry: StateStore, capability: str, now_ms: int) -> list[dict[str, Any]]:
    """The candidate list the router used for a request decided at ``now_ms`` (for auditors)."""
    return find_by_capability(registry, capability, now_ms)


def audit_routed(routed: Mapping[str, Any], candidates: Sequence[Candidate], cursor: int = 0) -> list[str]:
    """Problems found re-checking a ``commands.routed`` payload; empty = the decision checks out.

    Checks that the recorded derived inputs follow from the raw ones (latency_factor,
    capacity_factor, fitness, score) and that ``choose`` on ``candidates`` with ``cursor``,
    minus the recorded ``excluded`` (breakers, bulkheads), gives the recorded agent and score.
    """
    problems: list[str] = []
    inputs = routed["inputs"]
    strategy = routed["strategy"]
    rebuilt = candidate_from_inputs(routed["agent_id"], inputs)
    expected = {
        "latency_factor": latency_factor(inputs["latency_ms"]),
        "capacity_factor": capacity_factor(inputs["current_load"], inputs["max_concurrency"]),
        "fitness": fitness_of(inputs["health_score"], inputs["latency_ms"], inputs["reliability"],
                              inputs["current_load"], inputs["max_concurrency"]),
    }
    for name, value in expected.items():
        if inputs[name] != value:
            problems.append(f"inputs.{name} is {inputs[name]!r}, formula gives {value!r}")
    if score_of(strategy, rebuilt) != routed["score"]:
        problems.append(f"score {routed['score']!r} does not follow from the recorded inputs")
    excluded = {e["agent_id"] for e in routed.get("excluded") or []}
    agent_id, score, reason = choose([c for c in candidates if c["agent_id"] not in excluded], strategy, cursor)
    if agent_id != routed["agent_id"] or score != routed["score"]:
        problems.append(f"choose() gives {agent_id!r} (score {score!r}, {reason or 'ok'}), "
                        f"recorded {routed['agent_id']!r} (score {routed['score']!r})")
    return problems


# ---------------------------------------------------------------------------- the command record
EMPTY_COMMAND: dict[str, Any] = {
    "status": RECEIPTED, "capability": None, "requester": None, "requested_strategy": None, "strategy": None,
    "requested_ms": None, "target_agent": None, "cursor": None, "agent": None, "score": None, "reason": None,
    "detail": "", "candidates": 0, "eligible": 0, "decided_ms": None, "receipts": {}, "problem": None,
}
RECEIPT_FLAT = ("success", "timed_out", "duration_ms", "finished_ms", "receipt_ms")


def resolve(cmd: Mapping[str, Any]) -> dict[str, Any]:
    """``cmd`` with ``status``, ``problem`` and the flat receipt fields derived from its three parts.

    A pure function of the parts, so the record is the same whichever order they were folded in.
    """
    out = {k: v for k, v in cmd.items() if k not in RECEIPT_FLAT}
    receipts: Mapping[str, Any] = cmd["receipts"]
    problems = []
    if cmd["decided_ms"] is None:
        status = REQUESTED if cmd["requested_ms"] is not None else RECEIPTED
    elif cmd["agent"] is None:
        status = ROUTE_FAILED
        if receipts:
            problems.append(f"not-routed: receipts from {', '.join(sorted(receipts))} for a command that failed "
                            "routing")
    else:
        status = ROUTED
        receipt = receipts.get(cmd["agent"])
        others = sorted(a for a in receipts if a != cmd["agent"])
        if others:
            problems.append(f"agent-mismatch: routed to {cmd['agent']}, receipts from {', '.join(others)}")
        if receipt is not None:
            if receipt["capability"] != cmd["capability"]:
                problems.append(f"capability-mismatch: receipt for {receipt['capability']!r}, "
                                f"routed {cmd['capability']!r}")
            else:
                status = COMPLETED if receipt["success"] and not receipt["timed_out"] else FAILED
                out.update({k: receipt[k] for k in RECEIPT_FLAT})
    out["status"] = status
    out["problem"] = "; ".join(problems) or None
    return out


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidEvent("invalid-payload", f"{name} must be a non-empty string")
    return value


def _count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidEvent("invalid-payload", f"{name} must be an integer >= 0, got {value!r}")
    return value


# ---------------------------------------------------------------------------- the projection
class RoutingProjection(Projection):
    """Records requests and derives their routing; folds the recorded decisions and receipts. See the module doc."""

    name: ClassVar[str] = "routing"
    event_types: ClassVar[frozenset[str]] = frozenset({
        "commands.requested", "commands.routed", "commands.route_failed", "commands.receipt",
    })
    reads: ClassVar[tuple[str, ...]] = ("registry",)

    def apply(self, stores: Stores, ctx: EventContext, payload: dict[str, Any]) -> list[Derived]:
        try:
            if ctx.event_type == "commands.requested":
                return self._requested(stores, ctx, payload)
            if ctx.event_type in ("commands.routed", "commands.route_failed"):
                self._decided(stores.own, ctx, payload)
                return []
            if ctx.event_type == "commands.receipt":
                self._receipt(stores.own, ctx, payload)
                return session_receipt(ctx, payload)
        except KeyError as exc:  # fields are all read before the first write
            raise InvalidEvent("invalid-payload", f"missing field {exc}") from None
        raise InvalidEvent("unexpected-event-type", ctx.event_type)

    # -- commands.requested: record the request, derive (not store) the decision
    def _requested(self, stores: Stores, ctx: EventContext, p: dict[str, Any]) -> list[Derived]:
        command_id = _text(p["command_id"], "command_id")
        capability = _text(p["capability"], "capability")
        requested = p.get("strategy") or FALLBACK_STRATEGY
        target = p.get("target_agent")
        deadline = p.get("deadline_ms")
        min_trust = p.get("min_trust")
        if min_trust is not None and not (isinstance(min_trust, int | float) and 0.0 <= min_trust <= 1.0):
            raise InvalidEvent("invalid-payload", f"min_trust must be in [0,1], got {min_trust!r}")
        own = stores.own
        old = own.get(cmd_key(command_id))
        if old is not None and old["requested_ms"] is not None:
            raise InvalidEvent("duplicate-command", command_id)
        trust = self.trust_lookup(stores)
        strategy = applied_strategy(requested, with_trust=trust is not None)
        cursor = None
        if strategy == "ROUND_ROBIN" and not target:
            cursor = own.get(rr_key(capability, ctx.lane)) or 0
            own.put(rr_key(capability, ctx.lane), cursor + 1)
        own.put(cmd_key(command_id), resolve({
            **(old or EMPTY_COMMAND), "capability": capability, "requester": p.get("requester"),
            "requested_strategy": requested, "strategy": strategy, "requested_ms": ctx.timestamp_ms,
            "target_agent": target or None, "cursor": cursor,
        }))
        latency = stores.others.get("latency") if strategy == "PREDICTED" else None
        return self._decide(stores.read("registry"), ctx, command_id, capability, strategy, target, deadline,
                            min_trust, p.get("encrypted", False), cursor, trust, latency)

    def trust_lookup(self, stores: Stores) -> TrustLookup | None:
        """How this router learns trust: None — the plain router does not read the trust projection."""
        return None

    @staticmethod
    def _decide(registry: StateStore, ctx: EventContext, command_id: str, capability: str, strategy: str,
                target: str | None, deadline: int | None, min_trust: float | None, encrypted: bool,
                cursor: int | None, trust: TrustLookup | None = None,
                latency: StateStore | None = None) -> list[Derived]:
        """The routing decision as events to emit; reads the registry, writes nothing."""
        now = max(clock(registry), ctx.timestamp_ms)

        def fail(reason: str, detail: str, candidates: int = 0, retry: str | None = None,
                 retry_ms: int | None = None) -> list[Derived]:
            return [Derived("commands.route_failed", {
                "command_id": command_id, "capability": capability, "strategy": strategy, "reason": reason,
                "detail": detail, "candidates": candidates,
                "retry_after_ms": retry_ms if retry_ms is not None else RETRY_AFTER_MS.get(retry or reason),
            }, subject=command_id)]

        def guarded(candidates: Sequence[Candidate], eligible: list[Candidate],
                    position: int) -> list[Derived]:
            allowed, excluded, retry_ms = guard_eligible(registry, eligible, capability, ctx.lane, now)
            if not allowed:
                why = guard_failure(excluded)
                detail = "; ".join(f"{e['agent_id']}: {e['reason']}" for e in excluded)
                if target:
                    return fail("TARGET_UNAVAILABLE", f"{target}: {why} ({detail})", candidates=1, retry=why,
                                retry_ms=retry_ms if why == "CIRCUIT_OPEN" else None)
                return fail(why, f"{len(eligible)} eligible candidates, none admitted: {detail}",
                            candidates=len(candidates), retry_ms=retry_ms if why == "CIRCUIT_OPEN" else None)
            version = None
            if latency is not None:  # PREDICTED with learned models: the predictions are recorded inputs
                from swarmlog.projections.latency_models import learned_predictions, model_version

                allowed = learned_predictions(latency, allowed, capability, receipts_lane(ctx.lane), now)
                version = model_version(receipts_lane(ctx.lane))
            return _routed(command_id, capability, strategy, candidates, allowed, position, excluded, version)

        if encrypted and not target:
            return fail("OTHER", "encrypted args need a target_agent")
        if deadline is not None and deadline < now:
            return fail("DEADLINE_PASSED", f"deadline {deadline} is before now {now}")
        if min_trust is not None and min_trust > 0 and trust is None:
            return fail("BELOW_MIN_TRUST", "min_trust needs the trust projection, which this router does not read; "
                                           "refusing rather than ignoring the floor")

        def with_trust(found: Sequence[Candidate]) -> list[Candidate]:
            """Candidates annotated with trust (routing score) and dropped below min_trust (conservative)."""
            floor = min_trust is not None and min_trust > 0
            if trust is None or (strategy != TRUST_WEIGHTED and not floor):
                return list(found)  # only TRUST_WEIGHTED and a trust floor pay for trust lookups
            out: list[Candidate] = []
            for c in found:
                agent_id = str(c["agent_id"])
                if floor and trust(agent_id, "spec") < (min_trust or 0.0):
                    continue
                out.append({**c, "trust": trust(agent_id, None)})
            return out

        if target:
            agent = get_agent(registry, target, now)
            if agent is None:
                return fail("TARGET_UNAVAILABLE", f"{target} is not registered")
            if agent["status"] != ACTIVE:
                retry = "ALL_UNHEALTHY" if agent["status"] == EXPIRED else None
                return fail("TARGET_UNAVAILABLE", f"{target} is {agent['status']}", retry=retry)
            if capability not in agent["capabilities"]:
                return fail("TARGET_UNAVAILABLE", f"{target} does not serve {capability}")
            trusted = with_trust([agent])
            if not trusted:
                return fail("BELOW_MIN_TRUST", f"{target}: conservative trust below {min_trust}", candidates=1)
            eligible, why, detail = screen(trusted)
            if not eligible:
                return fail("TARGET_UNAVAILABLE", f"{target}: {why} ({detail})", candidates=1, retry=why)
            return guarded(trusted, eligible, 0)

        candidates = find_by_capability(registry, capability, now)
        if not candidates:
            registered = len(registry.get(cap_key(capability)) or [])
            detail = (f"{registered} registered agents serve it, none heartbeated in time" if registered
                      else "no registered agent serves it")
            return fail("NO_CAPABLE_AGENT", detail)
        trusted = with_trust(candidates)
        if not trusted:
            return fail("BELOW_MIN_TRUST", f"{len(candidates)} candidates, none with conservative trust >= "
                                           f"{min_trust}", candidates=len(candidates))
        eligible, why, detail = screen(trusted)
        if not eligible:
            return fail(why, detail, candidates=len(candidates))
        return guarded(candidates, eligible, cursor or 0)

    # -- commands.routed / commands.route_failed: fold the recorded decision
    @staticmethod
    def _decided(own: StateStore, ctx: EventContext, p: dict[str, Any]) -> None:
        command_id = _text(p["command_id"], "command_id")
        capability = p["capability"]
        strategy = _text(p["strategy"], "strategy")
        candidates = _count(p.get("candidates", 0), "candidates")
        routed = ctx.event_type == "commands.routed"
        if routed:
            decision: dict[str, Any] = {
                "agent": _text(p["agent_id"], "agent_id"), "score": p["score"], "reason": None, "detail": "",
                "candidates": candidates, "eligible": _count(p["eligible"], "eligible"),
            }
            if isinstance(decision["score"], bool) or not isinstance(decision["score"], int | float):
                raise InvalidEvent("invalid-payload", f"score must be a number, got {decision['score']!r}")
            if decision["eligible"] > candidates:
                raise InvalidEvent("invalid-payload", "eligible > candidates")
        else:
            decision = {"agent": None, "score": None, "reason": _text(p["reason"], "reason"),
                        "detail": p.get("detail") or "", "candidates": candidates, "eligible": 0}
        old = own.get(cmd_key(command_id))
        if old is None or old["requested_ms"] is None:
            raise InvalidEvent("unknown-command", f"a decision for {command_id!r}, which was never requested")
        if old["decided_ms"] is not None:
            raise InvalidEvent("duplicate-decision", f"{command_id} was already decided ({old['status']})")
        if capability != old["capability"]:
            raise InvalidEvent("invalid-payload", f"decision for {capability!r}, request for {old['capability']!r}")
        own.put(cmd_key(command_id), resolve({**old, **decision, "strategy": strategy,
                                              "decided_ms": ctx.timestamp_ms}))

    # -- commands.receipt: stored whatever the other topic says; the status resolves from the parts
    @staticmethod
    def _receipt(own: StateStore, ctx: EventContext, p: dict[str, Any]) -> None:
        command_id = _text(p["command_id"], "command_id")
        agent_id = _text(p["agent_id"], "agent_id")
        capability = _text(p["capability"], "capability")
        duration = _count(p["duration_ms"], "duration_ms")
        success = p["success"]
        if not isinstance(success, bool):
            raise InvalidEvent("invalid-payload", "success must be a boolean")
        timed_out = bool(p.get("timed_out", False))
        old = own.get(cmd_key(command_id)) or EMPTY_COMMAND
        if agent_id in old["receipts"]:
            raise InvalidEvent("duplicate-receipt", f"{command_id} already has a receipt from {agent_id} "
                                                    f"({old['status']})")
        receipt = {"capability": capability, "success": success, "timed_out": timed_out, "duration_ms": duration,
                   "finished_ms": p.get("finished_ms"), "receipt_ms": ctx.timestamp_ms}
        own.put(cmd_key(command_id), resolve({**old, "receipts": {**old["receipts"], agent_id: receipt}}))


class LearnedRoutingProjection(RoutingProjection):
    """The router with learned latency models (``latency_models.LatencyModelProjection``, store ``latency``)
    for PREDICTED. Only the live worker needs it: replays fold the recorded decisions."""

    reads: ClassVar[tuple[str, ...]] = ("registry", "latency")


def _inputs_for(strategy: str, chosen: Candidate) -> dict[str, Any]:
    inputs = route_inputs(chosen)
    if strategy == "PREDICTED":
        inputs["predicted_latency_ms"] = predicted_latency_ms(chosen)
    return inputs


def session_receipt(ctx: EventContext, p: dict[str, Any]) -> list[Derived]:
    """A receipt naming a session, forwarded into the session's partition (``sessions.receipt_recorded``).

    Receipts are keyed by command, sessions by session id: folding receipts in the sessions
    domain would write session records from receipts partitions (two shards for one key,
    and an order Kafka does not fix). Deriving a session-keyed event here, once per
    accepted receipt, puts the receipt into the session's own partition; the session
    projection folds it there and checks it (agent_id = the receipt's producer).
    """
    session_id = p.get("session_id")
    if not isinstance(session_id, str) or not session_id:
        return []
    return [Derived("sessions.receipt_recorded", {
        "session_id": session_id, "command_id": p["command_id"], "agent_id": p["agent_id"],
        "capability": p["capability"], "success": p["success"], "timed_out": bool(p.get("timed_out", False)),
        "error_rate": p.get("error_rate", 0.0), "duration_ms": p["duration_ms"], "finished_ms": p["finished_ms"],
        "receipt_event_id": ctx.event_id, "receipt_producer": ctx.producer, "receipt_ms": ctx.timestamp_ms,
    }, subject=session_id)]


def _routed(command_id: str, capability: str, strategy: str, candidates: Sequence[Candidate],
            eligible: list[Candidate], position: int, excluded: Sequence[Mapping[str, str]] = (),
            version: str | None = None) -> list[Derived]:
    chosen = pick(eligible, strategy, position)
    learned = chosen.get("predicted_latency_ms") is not None
    score = score_of(strategy, chosen)
    alternatives = [{"agent_id": c["agent_id"], "score": score_of(strategy, c)}
                    for c in runner_ups(eligible, strategy, position)]
    return [Derived("commands.routed", {
        "command_id": command_id, "capability": capability, "agent_id": chosen["agent_id"],
        "strategy": strategy, "score": score, "candidates": len(candidates), "eligible": len(eligible),
        "inputs": _inputs_for(strategy, chosen), "alternatives": alternatives,
        "model_version": version if learned else None,
        "excluded": [dict(e) for e in excluded],
    }, subject=command_id)]


class TrustAwareRoutingProjection(RoutingProjection):
    """The router that also reads the trust projection: TRUST_WEIGHTED and min_trust are honoured.

    TRUST_WEIGHTED picks the highest ``trust × fitness`` (spec usage pattern 4); the
    trust is ``trust_score(method=trust_method)`` — EigenTrust relative to a fair share by
    default (robust to a colluding group rating itself up, see
    ``benchmarks/trust_attack.py``), or the spec's conservative score with
    ``trust_method="spec"``. ``min_trust`` filters on the conservative score, as the
    request schema says. The trust used is recorded in ``inputs.trust`` of the routed
    event, so an auditor re-runs ``choose`` on recorded inputs as for every strategy.

    Determinism: like the registry, the trust store is read, not written; the decision is
    recorded as an event and replay folds the record (see the module doc).
    """

    reads: ClassVar[tuple[str, ...]] = ("registry", "trust")

    def __init__(self, trust_method: str = "eigen", pretrusted: Sequence[str] = ()) -> None:
        self.trust_method = trust_method
        self.pretrusted = tuple(pretrusted)

    def trust_lookup(self, stores: Stores) -> TrustLookup | None:
        from swarmlog.projections.trust import trust_score

        store = stores.read("trust")

        def lookup(agent_id: str, method: str | None) -> float:
            chosen = method or self.trust_method
            return trust_score(store, agent_id, method=chosen, pretrusted=self.pretrusted)

        return lookup


class LiveRoutingProjection(LearnedRoutingProjection, TrustAwareRoutingProjection):
    """The live worker's router: learned latency for PREDICTED and trust for TRUST_WEIGHTED and
    ``min_trust`` (both read from the worker's replica; both recorded in the routed event's
    inputs, so replays and audits fold the record and never need either)."""

    reads: ClassVar[tuple[str, ...]] = ("registry", "latency", "trust")


__all__ = [
    "FALLBACK_STRATEGY",
    "IMPLEMENTED_STRATEGIES",
    "TRUST_WEIGHTED",
    "LearnedRoutingProjection",
    "LiveRoutingProjection",
    "RoutingProjection",
    "TrustAwareRoutingProjection",
    "applied_strategy",
    "audit_routed",
    "candidate_from_inputs",
    "candidates_for",
    "choose",
    "guard_eligible",
    "guard_failure",
    "pick",
    "predicted_latency_ms",
    "receipts_lane",
    "resolve",
    "route_inputs",
    "runner_ups",
    "score_of",
    "screen",
    "trust_weighted",
]
