"""Agent registry projection: who serves which capability, how healthy, how fast, how busy.

Folds ``agents.registered``, ``agents.heartbeat``, ``agents.health_changed``,
``agents.deregistered``, ``commands.routed`` and ``commands.receipt`` into one store, and
answers the capability lookup that routing needs through an **inverted index** (the
spec's O(n) scan over every agent is its known bottleneck, §9.2).

Store layout (JSON values; never mutated in place — every update writes a new value):

``agent/<agent_id>``
    the agent record: ``agent_id address capabilities max_concurrency tier swarm_members
    region cloud metadata status health health_status reported_load reported_latency_ms
    reported_reliability interval_ms seen_ms registered_ms deregistered_ms
    deregistration_reason`` (from the agent's ``agents`` events) and the derived
    ``latency_ms latency_source reliability load routed receipts successes failures
    last_seen_ms expires_ms fitness`` (see Update rules). Stored ``status`` is ``ACTIVE``
    or ``DEREGISTERED``; ``EXPIRED`` is derived at query time (see Expiry).
``obs/<agent_id>``
    the agent's observations from ``commands.routed`` and ``commands.receipt``:
    commutative counters and receipt time buckets (see Update rules); may exist before,
    or without, a registration.
``cap/<capability>``
    sorted list of the ids of the *registered* (not deregistered) agents serving it.
    Sorted so the store is a function of the event sequence alone and so ROUND_ROBIN can
    rotate over it; empty lists are deleted, so the index is exactly the capabilities of
    the non-deregistered agents (the tests check that invariant).
``fitb/<capability>`` and ``fit/<bucket:03d>/<capability>``
    the per-capability candidate summary for routing (a fitness-ordered view): rows
    ``[-fitness, agent_id]`` of the registered agents serving the capability that are
    *routable* (healthy, below max_concurrency), sorted — i.e. by fitness descending,
    then agent id, the router's BEST_FIT key — and split into ``FIT_BUCKETS`` buckets of
    0.01 fitness; ``fitb/`` lists the non-empty buckets. ``best_fit`` walks it from the
    top and stops at the first live agent, so the best-fit query does not grow with the
    number of agents behind a capability (≈ 2 000 at 1 M agents / 1 000 capabilities,
    where reading every record of ``cap/`` costs milliseconds in CPython). Writes pay
    for it: an event that changes an agent's fitness or routability moves its row in
    each of its capabilities. Buckets keep that move to a copy of ~k/100 rows instead of
    k (one unbucketed list made heartbeats 4x slower at 1 M agents: copying a list
    touches every element it holds).
``clock/now_ms``
    the newest event timestamp this projection has folded: the registry's notion of now.
``brk/<agent_id>/<capability>/<receipts lane>``
    the circuit breaker (``resilience.py``, config ``ROUTING_BREAKER``) of the agent for
    the capability as seen from one receipts lane, folded from that lane's receipts only
    (one partition, one total order: the same state the heal domain keeps under
    ``breaker/...`` and announces with ``heal.circuit_state_changed``). The router of
    commands lane ``commands/p`` reads the breakers of ``receipts/p``: the receipts of the
    commands it routed (both topics are keyed by command id), as each resilience4j client
    keeps its own breakers.
``forced/<agent_id>``
    ``{"opened_ms", "action_id"}`` while a ``heal.action`` OPEN_CIRCUIT on the agent is in
    force (CLOSE_CIRCUIT deletes it): the MAPE-K plan opening the agent's breakers for all
    its capabilities and lanes for ``wait_open_ms``; after that the per-lane breakers
    decide again. Fed by the agent's ``heal`` lane only (topic ``heal``, keyed by target).
``flight/<agent_id>/<capability>``
    ``[routed, receipts]`` of the agent for the capability: commutative counters, so
    in-flight calls (``routed − receipts``) per agent × capability — the bulkhead's
    occupancy and the half-open probes outstanding — are order-free like ``load``.

Expiry (deterministic, no wall clock). Every agent carries ``expires_ms = last_seen_ms +
grace`` with ``grace = max(ttl_ms, MISSED_INTERVALS * interval_ms)``: ``ttl_ms`` (the
constructor argument, default 30 s) is the floor, and an agent announcing a slow
heartbeat interval is given three missed intervals, as the heartbeat schema promises.
An agent is live iff it is ACTIVE and ``expires_ms >= now``, where ``now`` is
``clock/now_ms`` (or what the caller passes). Liveness is therefore a function of the
store, decided in O(1) per agent at query time; expiry needs no sweep, and a heartbeat
after expiry brings the agent back without re-registering (a partition should not cost
an agent its registration). Expired agents stay in the index until an
``agents.deregistered`` (reason EVICTED) removes them: eviction is an event, decided by
whoever watches liveness, so the index never changes on a timer. Caveat: producer
clocks drive ``now``; a producer with a clock far in the future makes everyone look
expired until real time catches up.

Update rules, and why. The registry is folded by every worker's in-memory replica and by
replays, from ``agents`` (keyed by agent id), ``commands`` and ``receipts`` (keyed by command
id): Kafka orders each partition, never the topics against each other, so a live replica
and a replay see an agent's registration, heartbeats, routed commands and receipts
interleaved differently (docs/architecture.md, "The determinism rule"). Every stored value
is therefore either fed by the agent's own ``agents`` partition (one total order: "latest
value" is fine) or a commutative aggregate of the other topics (the final state is a
function of the *set* of events, whatever their order):

* **Agents-partition fields** — registration, heartbeat, ``agents.health_changed``,
  deregistration: descriptive fields, ``health``, ``health_status``, ``interval_ms``,
  the self-reports ``reported_load``, ``reported_latency_ms``, ``reported_reliability``
  (latest value) and ``seen_ms`` (the agent's own newest ``agents`` event).
* **Observations** ``obs/<agent_id>`` — fed by ``commands.routed`` and
  ``commands.receipt`` of the agent, from any partition, by commutative updates only:
  ``routed``/``receipts``/``successes``/``failures`` counters, ``seen_ms`` = max receipt
  time, and receipt **time buckets** keyed by event time, ``finished_ms // BUCKET_MS``
  (60 s): ``[bucket, count, duration_sum, successes, failures, outcome_micro]``, every
  field an integer sum (``outcome_micro`` is the receipt outcome in millionths, so no
  float is ever summed in arrival order: float addition is not associative). Only the
  ``WINDOW_BUCKETS`` (15) newest buckets relative to the agent's newest bucket are kept;
  a receipt older than that window still counts in the totals but not in the buckets.
  Since the newest bucket only grows, the kept buckets are a function of the receipt
  set. Observations are kept even for an agent that is not (yet) registered: refusing
  a receipt as unknown-agent would depend on whether the replay read the ``agents``
  partition first. (Cost: any authenticated producer can create ``obs/`` keys for made-up
  ids; they never enter the index.)
* Everything else in ``agent/<id>`` is **derived** from those two by ``measure`` on every
  write that changes an input (an agents event, a routed event, a receipt), never
  accumulated, so it is the same whichever order the inputs came in:

  - **Latency** = the time-decayed mean receipt duration over the window, weights
    ``BUCKET_DECAY ** age`` (0.8 per 60 s bucket behind the agent's newest one: the last
    few minutes dominate, an outlier in an otherwise busy window barely moves it, a
    real slowdown shows within a couple of minutes). No receipt yet: the latest
    self-reported latency (registration or heartbeat), else ``DEFAULT_LATENCY_MS``
    (100 ms: latency_factor 0.5, neutral). Once receipts exist — the per-command,
    auditable record — self-reports no longer count (``latency_source`` says which).
  - **Reliability** = ``(W·m + Σ w·outcome) / (W + Σ w·count)`` over the window with the
    same weights: a Beta estimate with a prior worth ``RELIABILITY_PRIOR_WEIGHT = 5``
    observations of mean ``m`` = the latest self-reported reliability, else
    ``DEFAULT_RELIABILITY = 0.9``. The prior keeps one early failure from sending a new
    agent to 0 and is optimistic so new agents get traffic; the window and the decay
    forget old history, so an agent that degrades after a million successes is noticed
    within minutes. Receipt outcome per the receipt schema's trust outcome: TIMEOUT 0,
    SUCCESS 1, PARTIAL_FAILURE ``1 - error_rate``, FAILURE 0. ``successes``/``failures``
    count all receipts (not only the window) by ``success and not timed_out``.
  - **Load** = ``max(0, routed − receipts)``: commands routed to the agent and not yet
    receipted, counted from ``commands.routed`` and ``commands.receipt``. Both are
    counters, so a receipt folded before its routed event only shifts the estimate
    until the routed event arrives. The heartbeat's ``current_load`` is kept as
    ``reported_load`` and is not mixed in ("last report ± events since" depends on the
    interleaving). Limitation: a command that never gets a receipt counts as load
    forever; a timeout receipt (from the agent or a monitor) is what clears it.
  - **Liveness** ``last_seen_ms`` = max(``seen_ms``, ``obs.seen_ms``): the agent's own
    events (registration, heartbeat, its receipts); ``commands.routed`` and
    ``agents.health_changed`` come from other parties and do not prove it is alive.
* **Health**: ``health`` is the latest score from a heartbeat, a registration or the
  health monitor; ``health_status`` (UNKNOWN/HEALTHY/DEGRADED/FAILED) is set only by
  ``agents.health_changed`` — the monitor's outside view — and survives re-registration,
  so a FAILED agent cannot clear itself by re-registering. All ``agents`` events.
* **Re-registration** replaces the descriptive fields wholesale (address, capabilities,
  capacity, tier, tags, health score) as the schema says, and keeps measurements (they
  describe the agent, not the registration) and the self-reports it does not repeat.
* **Deregistration** keeps the record (its history) with status DEREGISTERED and takes
  the agent out of ``cap/`` and ``fit/``; later heartbeats, receipts and routed events
  for it still update its measurements but never revive it — only a registration does.

Fitness (spec §1.2): ``0.3 health + 0.3 latency_factor + 0.2 reliability + 0.2
capacity_factor`` with ``latency_factor = 1 / (1 + latency_ms / 100)`` (1 at 0 ms, 0.5
at 100 ms, → 0 for slow agents; smooth, so no cliff at an arbitrary cut-off) and
``capacity_factor = max(0, 1 - load / max_concurrency)`` (0 when full). It depends only
on record fields, so it is stored denormalised in ``fitness`` (recomputed, with the
agent's ``fit/`` rows, on every write that changes an input) and keys the ``fit/``
view; routing recomputes it from the inputs it records so an auditor can check it
(same function, same evaluation order: bit-identical).

Refusals: an ``agents`` event whose Kafka subject is not its ``agent_id`` raises
``InvalidEvent("subject-mismatch")`` (it would sit in another agent's partition, where the
order against the agent's own events is not fixed); an ``agents`` event (heartbeat,
health change, deregistration) about an agent that was never registered raises
``InvalidEvent("unknown-agent")`` — decided in the agent's own partition, so in the same
order everywhere — and an out-of-range or non-finite value raises
``InvalidEvent("invalid-payload")``, always before anything is written (every handler
reads and validates first, then writes). Routed events and receipts are never refused
for an unknown agent (see Observations).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from swarmlog.projections.access import Getter, Putter, store_access
from swarmlog.projections.base import Derived, EventContext, InvalidEvent, Projection, StateStore, Stores
from swarmlog.projections.resilience import ROUTING_BREAKER, new_breaker, on_result

AGENT_PREFIX = "agent/"
OBS_PREFIX = "obs/"
CAP_PREFIX = "cap/"
FIT_PREFIX = "fit/"
FIT_BUCKETS_PREFIX = "fitb/"
FIT_BUCKETS = 100  # fitness resolution of one view bucket: 0.01
CLOCK_KEY = "clock/now_ms"
BREAKER_PREFIX = "brk/"
FLIGHT_PREFIX = "flight/"
FORCED_PREFIX = "forced/"

ACTIVE = "ACTIVE"
EXPIRED = "EXPIRED"
DEREGISTERED = "DEREGISTERED"

AGENTS_EVENTS = frozenset({"agents.registered", "agents.heartbeat", "agents.health_changed", "agents.deregistered"})
HEALTH_STATUSES = frozenset({"UNKNOWN", "HEALTHY", "DEGRADED", "FAILED"})

DEFAULT_TTL_MS = 30_000
MISSED_INTERVALS = 3
BUCKET_MS = 60_000  # receipt time buckets: finished_ms // BUCKET_MS
WINDOW_BUCKETS = 15  # buckets kept, counting back from the agent's newest one
BUCKET_DECAY = 0.8  # weight of a bucket per bucket of age behind the newest one
OUTCOME_SCALE = 1_000_000  # receipt outcomes are summed as integers in millionths
LATENCY_REF_MS = 100.0
DEFAULT_LATENCY_MS = 100.0
RELIABILITY_PRIOR_WEIGHT = 5.0
DEFAULT_RELIABILITY = 0.9
MIN_ROUTABLE_HEALTH = 0.5

W_HEALTH = 0.3
W_LATENCY = 0.3
W_RELIABILITY = 0.2
W_CAPACITY = 0.2

Agent = dict[str, Any]


def agent_key(agent_id: str) -> str:
    return AGENT_PREFIX + agent_id


def obs_key(agent_id: str) -> str:
    return OBS_PREFIX + agent_id


def cap_key(capability: str) -> str:
    return CAP_PREFIX + capability


def breaker_key(agent_id: str, capability: str, receipts_lane: str) -> str:
    return f"{BREAKER_PREFIX}{agent_id}/{capability}/{receipts_lane}"


def flight_key(agent_id: str, capability: str) -> str:
    return f"{FLIGHT_PREFIX}{agent_id}/{capability}"


def in_flight(store: StateStore, agent_id: str, capability: str) -> int:
    """Calls of ``capability`` routed to the agent and not yet receipted (order-free, like ``load``)."""
    routed, receipts = store.get(flight_key(agent_id, capability)) or (0, 0)
    return max(0, int(routed) - int(receipts))


def bulkhead_of(agent: Mapping[str, Any], capability: str) -> int | None:
    """The agent's bulkhead for ``capability``: max concurrent calls, from its registration metadata.

    ``metadata["bulkhead.<capability>"]`` or, for all its capabilities, ``metadata["bulkhead"]``
    (decimal text, >= 1); None = no bulkhead (``max_concurrency`` still caps the agent as a whole).
    A malformed value is ignored rather than refused: metadata is free text.
    """
    meta = agent.get("metadata") or {}
    raw = meta.get(f"bulkhead.{capability}", meta.get("bulkhead"))
    try:
        cap = int(str(raw)) if raw is not None else None
    except ValueError:
        return None
    return cap if cap is not None and cap >= 1 else None


# ---------------------------------------------------------------------------- scoring
def latency_factor(latency_ms: float) -> float:
    """Latency normalised to (0, 1], 1 = instantaneous; 0.5 at ``LATENCY_REF_MS``."""
    return 1.0 / (1.0 + latency_ms / LATENCY_REF_MS)


def capacity_factor(load: int, max_concurrency: int) -> float:
    """Free share of the agent's concurrency, in [0, 1]; 0 when full (or misconfigured)."""
    if max_concurrency <= 0:
        return 0.0
    return max(0.0, 1.0 - load / max_concurrency)


def fitness_of(health: float, latency_ms: float, reliability: float, load: int, max_concurrency: int) -> float:
    """The spec's fitness from raw inputs; one fixed evaluation order, so it recomputes bit-exactly."""
    return (W_HEALTH * health + W_LATENCY * latency_factor(latency_ms) + W_RELIABILITY * reliability
            + W_CAPACITY * capacity_factor(load, max_concurrency))


def fitness(agent: Mapping[str, Any]) -> float:
    """Fitness of an agent record (or any dict with health, latency_ms, reliability, load, max_concurrency)."""
    return fitness_of(agent["health"], agent["latency_ms"], agent["reliability"], agent["load"],
                      agent["max_concurrency"])


def routable_health(agent: Mapping[str, Any]) -> bool:
    """Healthy enough to take commands: the monitor has not declared it FAILED and its score is ≥ 0.5.

    DEGRADED agents stay routable (the schema says so); fitness already ranks them lower.
    """
    return agent.get("health_status") != "FAILED" and agent["health"] >= MIN_ROUTABLE_HEALTH


def has_capacity(agent: Mapping[str, Any]) -> bool:
    return bool(agent["load"] < agent["max_concurrency"])


def view_entry(agent: Mapping[str, Any]) -> list[Any] | None:
    """The agent's row in the ``fit/<capability>`` views: ``[-fitness, agent_id]`` if it is
    registered, healthy and below max_concurrency; None if it does not belong there.

    Sorting rows ascending orders by fitness descending, then agent id — exactly the
    BEST_FIT key of the router — so the first live row is the best-fit agent.
    """
    if agent["status"] != ACTIVE or not routable_health(agent) or not has_capacity(agent):
        return None
    return [-agent["fitness"], agent["agent_id"]]


# ---------------------------------------------------------------------------- queries
def clock(store: StateStore) -> int:
    """The registry's now: the newest event time it has folded (0 before any event)."""
    value = store.get(CLOCK_KEY)
    return value if isinstance(value, int) else 0


def effective_status(agent: Mapping[str, Any], now_ms: int) -> str:
    """ACTIVE, EXPIRED (ACTIVE but silent past its deadline) or DEREGISTERED."""
    status: str = agent["status"]
    if status == ACTIVE and agent["expires_ms"] < now_ms:
        return EXPIRED
    return status


def get_agent(store: StateStore, agent_id: str, now_ms: int | None = None) -> Agent | None:
    """A copy of the agent's record with its effective status, or None if never registered."""
    rec = store.get(agent_key(agent_id))
    if rec is None:
        return None
    now = clock(store) if now_ms is None else now_ms
    return {**rec, "status": effective_status(rec, now)}


def find_by_capability(store: StateStore, capability: str, now_ms: int | None = None,
                       include_expired: bool = False) -> list[Agent]:
    """Agents serving ``capability``, sorted by agent id: live ones, plus expired ones if asked.

    O(k) in the agents indexed under the capability (one index read, one record read
    each); never a scan of the registry. Deregistered agents are not in the index. For
    speed the live records are returned as stored — treat them as read-only; expired
    ones (``include_expired``) are copies with ``status`` EXPIRED.
    """
    ids = store.get(CAP_PREFIX + capability)
    if not ids:
        return []
    now = clock(store) if now_ms is None else now_ms
    get = store.get
    records = [get(AGENT_PREFIX + agent_id) for agent_id in ids]
    if include_expired:
        return [rec if rec["expires_ms"] >= now else {**rec, "status": EXPIRED} for rec in records]
    return [rec for rec in records if rec["expires_ms"] >= now]


def ranked(store: StateStore, capability: str, now_ms: int | None = None, limit: int = 1) -> list[Agent]:
    """Up to ``limit`` routable live agents serving ``capability``, best fitness first (ties: agent id).

    Walks the fitness view of the capability (``fitb/`` then ``fit/`` buckets), which holds
    only registered, healthy agents below max_concurrency, already in order; it reads one
    record per row visited and skips rows whose agent has expired. Cost is O(limit +
    expired agents ranked above them), independent of how many agents serve the
    capability. Records are returned as stored (read-only).
    """
    buckets = store.get(FIT_BUCKETS_PREFIX + capability)
    if not buckets or limit <= 0:
        return []
    now = clock(store) if now_ms is None else now_ms
    get = store.get
    out: list[Agent] = []
    for bucket in buckets:
        for _neg_fitness, agent_id in get(fit_key(capability, bucket)):
            rec = get(AGENT_PREFIX + agent_id)
            if rec["expires_ms"] >= now:
                out.append(rec)
                if len(out) == limit:
                    return out
    return out


def best_fit(store: StateStore, capability: str, now_ms: int | None = None) -> Agent | None:
    """The routable live agent with the highest fitness (ties: smallest agent id), or None.

    "Routable" = healthy (see ``routable_health``) and below max_concurrency. Answered
    from the ``fit/`` view, so it does not grow with the number of agents serving the
    capability; it agrees with ``routing.choose(find_by_capability(...), "BEST_FIT", 0)``.
    """
    found = ranked(store, capability, now_ms, 1)
    return found[0] if found else None


# ---------------------------------------------------------------------------- validation
def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidEvent("invalid-payload", f"{name} must be a finite number, got {value!r}")
    return float(value)


def _unit(value: Any, name: str) -> float:
    number = _number(value, name)
    if not 0.0 <= number <= 1.0:
        raise InvalidEvent("invalid-payload", f"{name} must be in [0,1], got {value!r}")
    return number


def _non_negative(value: Any, name: str) -> float:
    number = _number(value, name)
    if number < 0:
        raise InvalidEvent("invalid-payload", f"{name} must be >= 0, got {value!r}")
    return number


def _int_at_least(value: Any, minimum: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidEvent("invalid-payload", f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidEvent("invalid-payload", f"{name} must be a non-empty string, got {value!r}")
    return value


def _capabilities(value: Any) -> list[str]:
    if not isinstance(value, list):
        raise InvalidEvent("invalid-payload", "capabilities must be a list of strings")
    return sorted({_text(cap, "capability") for cap in value})


def receipt_outcome(payload: Mapping[str, Any]) -> float:
    """Success value of a receipt in [0,1], per the receipt schema's trust outcome."""
    if payload.get("timed_out", False):
        return 0.0
    error_rate = payload.get("error_rate", 0.0)
    if payload["success"] and error_rate == 0:
        return 1.0
    if 0 < error_rate < 1:
        return 1.0 - error_rate
    return 0.0


# ---------------------------------------------------------------------------- observations
Obs = dict[str, Any]


def empty_obs() -> Obs:
    return {"routed": 0, "receipts": 0, "successes": 0, "failures": 0, "seen_ms": None, "buckets": []}


def add_receipt(obs: Mapping[str, Any], finished_ms: int, duration_ms: int, ok: bool, outcome_micro: int,
                timestamp_ms: int) -> Obs:
    """``obs`` with one more receipt (a new value): integer sums, a max and the bucket window.

    Commutative and associative: folding a set of receipts in any order gives the same value.
    """
    bucket = finished_ms // BUCKET_MS
    buckets = [list(row) for row in obs["buckets"]]
    newest = max(bucket, buckets[-1][0]) if buckets else bucket
    if bucket > newest - WINDOW_BUCKETS:
        row = [bucket, 1, duration_ms, int(ok), int(not ok), outcome_micro]
        i = bisect.bisect_left(buckets, [bucket])
        if i < len(buckets) and buckets[i][0] == bucket:
            buckets[i] = [a + b for a, b in zip(buckets[i], row, strict=True)]
            buckets[i][0] = bucket
        else:
            buckets.insert(i, row)
        buckets = [row for row in buckets if row[0] > newest - WINDOW_BUCKETS]
    seen = obs["seen_ms"]
    return {**obs, "receipts": obs["receipts"] + 1, "successes": obs["successes"] + int(ok),
            "failures": obs["failures"] + int(not ok),
            "seen_ms": timestamp_ms if seen is None else max(seen, timestamp_ms), "buckets": buckets}


def measure(rec: Mapping[str, Any], obs: Mapping[str, Any] | None) -> dict[str, Any]:
    """The derived measurements of an agent: a pure function of its record's agents-partition fields
    and its observations (see "Update rules"). One fixed evaluation order (buckets ascending), so it
    recomputes bit-exactly."""
    prior = rec["reported_reliability"]
    prior = DEFAULT_RELIABILITY if prior is None else prior
    if not obs:  # no receipts, no routed commands: what the general path gives for empty_obs(), without building it
        reported = rec["reported_latency_ms"]
        return {
            "latency_ms": DEFAULT_LATENCY_MS if reported is None else reported,
            "latency_source": "default" if reported is None else "reported",
            "reliability": prior, "load": 0, "routed": 0, "receipts": 0, "successes": 0, "failures": 0,
            "last_seen_ms": rec["seen_ms"],
        }
    weight = 0.0
    duration = 0.0
    outcome = 0.0
    buckets = obs["buckets"]
    if buckets:
        newest = buckets[-1][0]
        for bucket, count, duration_sum, _ok, _failed, outcome_micro in buckets:
            w = BUCKET_DECAY ** (newest - bucket)
            weight += w * count
            duration += w * duration_sum
            outcome += w * outcome_micro / OUTCOME_SCALE
    if weight > 0:
        latency, source = duration / weight, "receipts"
    elif rec["reported_latency_ms"] is not None:
        latency, source = rec["reported_latency_ms"], "reported"
    else:
        latency, source = DEFAULT_LATENCY_MS, "default"
    seen = obs["seen_ms"]
    return {
        "latency_ms": latency, "latency_source": source,
        # clamped: the float sums may overshoot an all-success window by an ulp
        "reliability": (min(1.0, (RELIABILITY_PRIOR_WEIGHT * prior + outcome) / (RELIABILITY_PRIOR_WEIGHT + weight))
                        if weight > 0 else prior),
        "load": max(0, obs["routed"] - obs["receipts"]), "routed": obs["routed"], "receipts": obs["receipts"],
        "successes": obs["successes"], "failures": obs["failures"],
        "last_seen_ms": rec["seen_ms"] if seen is None else max(rec["seen_ms"], seen),
    }


# ---------------------------------------------------------------------------- the projection
class RegistryProjection(Projection):
    """The agent registry: records, observations, capability index and clock. See the module docstring."""

    name: ClassVar[str] = "registry"
    event_types: ClassVar[frozenset[str]] = frozenset({
        "agents.registered", "agents.heartbeat", "agents.health_changed", "agents.deregistered",
        "commands.routed", "commands.receipt", "heal.action",
    })

    #: a heartbeat that changes no input of fitness or of the measurements skips their recomputation
    #: (``_heartbeat``); off only in the tests that check it against the full path
    skip_unchanged: ClassVar[bool] = True
    #: a heartbeat that does change them is committed by ``_heartbeat`` itself (a ``_commit`` specialised for
    #: heartbeats), not by the general ``_commit``; off only in the tests that check both write the same state
    fast_heartbeat: ClassVar[bool] = True

    def __init__(self, ttl_ms: int = DEFAULT_TTL_MS) -> None:
        if ttl_ms <= 0:
            raise ValueError("ttl_ms must be positive")
        self.ttl_ms = ttl_ms
        # (store, get, put) of the store last folded into: the stores of an engine never change
        self._access: tuple[StateStore | None, Getter, Putter] = (None, _no_get, _no_put)
        self._handlers: dict[str, Callable[[StateStore, EventContext, dict[str, Any]], None]] = {
            "agents.registered": self._registered,
            "agents.heartbeat": self._heartbeat,
            "agents.health_changed": self._health_changed,
            "agents.deregistered": self._deregistered,
            "commands.routed": self._routed,
            "commands.receipt": self._receipt,
            "heal.action": self._heal_action,
        }

    def apply(self, stores: Stores, ctx: EventContext, payload: dict[str, Any]) -> list[Derived]:
        handler = self._handlers.get(ctx.event_type)
        if handler is None:
            raise InvalidEvent("unexpected-event-type", ctx.event_type)
        if ctx.event_type in AGENTS_EVENTS and ctx.subject != payload.get("agent_id"):
            # the unknown-agent decision is exact only inside the agent's own partition
            raise InvalidEvent("subject-mismatch", f"subject {ctx.subject!r} != agent_id {payload.get('agent_id')!r}")
        try:
            handler(stores.own, ctx, payload)
        except KeyError as exc:  # handlers read every field before writing, so nothing was written
            raise InvalidEvent("invalid-payload", f"missing field {exc}") from None
        return []

    # -- helpers
    def _grace(self, interval_ms: int) -> int:
        return max(self.ttl_ms, MISSED_INTERVALS * interval_ms)

    @staticmethod
    def _known(store: StateStore, agent_id: Any) -> tuple[Agent, Agent]:
        """(stored record, a copy to update) of a registered agent; unknown-agent otherwise."""
        old = store.get(agent_key(_text(agent_id, "agent_id")))
        if old is None:
            raise InvalidEvent("unknown-agent", f"{agent_id} was never registered")
        return old, dict(old)

    def _accessors(self, store: StateStore) -> tuple[Getter, Putter]:
        access = self._access
        if access[0] is not store:
            access = self._access = (store, *store_access(store))
        return access[1], access[2]

    def _commit(self, store: StateStore, ctx: EventContext, old: Agent | None, rec: Agent,
                obs: Mapping[str, Any] | None) -> None:
        """Write the record with its derived fields, keep ``cap/`` and ``fit/`` in step, advance the clock.

        The derived fields are recomputed from ``rec``'s agents-partition fields and ``obs`` (never
        accumulated), and the agent's ``fit/`` row is moved whenever its fitness or routability
        changed, so the summary is a function of the records. Only the capabilities whose entry
        changed are rewritten: a heartbeat that leaves fitness and routability alone costs one
        record write.
        """
        access = self._access
        if access[0] is store:
            get, put = access[1], access[2]
        else:
            get, put = self._accessors(store)
        if obs:
            rec.update(measure(rec, obs))
        else:  # measure(rec, None), written in place (same keys, same order, same values): no dict per event
            reported = rec["reported_latency_ms"]
            prior = rec["reported_reliability"]
            rec["latency_ms"] = DEFAULT_LATENCY_MS if reported is None else reported
            rec["latency_source"] = "default" if reported is None else "reported"
            rec["reliability"] = DEFAULT_RELIABILITY if prior is None else prior
            rec["load"] = rec["routed"] = rec["receipts"] = rec["successes"] = rec["failures"] = 0
            rec["last_seen_ms"] = rec["seen_ms"]
        grace = MISSED_INTERVALS * rec["interval_ms"]
        rec["expires_ms"] = rec["last_seen_ms"] + (self.ttl_ms if self.ttl_ms >= grace else grace)  # _grace
        # fitness(rec), inlined: the same operations in the same order, so the same bits
        load, max_concurrency = rec["load"], rec["max_concurrency"]
        rec["fitness"] = (W_HEALTH * rec["health"] + W_LATENCY * (1.0 / (1.0 + rec["latency_ms"] / LATENCY_REF_MS))
                          + W_RELIABILITY * rec["reliability"]
                          + W_CAPACITY * (0.0 if max_concurrency <= 0 else max(0.0, 1.0 - load / max_concurrency)))
        agent_id = rec["agent_id"]
        # view_entry(old) and view_entry(rec) are inlined below (twice per event on the heartbeat path)
        old_caps: list[str] = []
        old_entry: list[Any] | None = None
        if old is not None and old["status"] == ACTIVE:
            old_caps = old["capabilities"]
            if (old.get("health_status") != "FAILED" and old["health"] >= MIN_ROUTABLE_HEALTH
                    and old["load"] < old["max_concurrency"]):
                old_entry = [-old["fitness"], old["agent_id"]]
        new_caps: list[str] = []
        new_entry: list[Any] | None = None
        if rec["status"] == ACTIVE:
            new_caps = rec["capabilities"]
            if (rec.get("health_status") != "FAILED" and rec["health"] >= MIN_ROUTABLE_HEALTH
                    and rec["load"] < rec["max_concurrency"]):
                new_entry = [-rec["fitness"], agent_id]
        if old_caps != new_caps:
            for cap in old_caps:
                if cap not in new_caps:
                    _list_remove(store, CAP_PREFIX + cap, agent_id)
            for cap in new_caps:
                if cap not in old_caps:
                    _list_insert(store, CAP_PREFIX + cap, agent_id)
        moved = old_entry != new_entry
        if (moved and old_entry is not None and new_entry is not None and old_caps == new_caps
                and (bucket := fit_bucket(new_entry[0])) == fit_bucket(old_entry[0])):
            # the usual heartbeat: the row moves inside its bucket; one copy of the bucket instead of two
            for cap in new_caps:
                _view_move(store, get, put, cap, bucket, old_entry, new_entry)
        elif old_entry is not None:
            for cap in old_caps:
                if moved or cap not in new_caps:
                    _view_remove(store, cap, old_entry)
            if new_entry is not None:
                for cap in new_caps:
                    if moved or cap not in old_caps:
                        _view_insert(store, cap, new_entry)
        elif new_entry is not None:
            for cap in new_caps:
                if moved or cap not in old_caps:
                    _view_insert(store, cap, new_entry)
        put(AGENT_PREFIX + agent_id, rec)
        now = get(CLOCK_KEY)  # _tick, inlined
        if ctx.timestamp_ms > (now if isinstance(now, int) else 0):
            put(CLOCK_KEY, ctx.timestamp_ms)

    @staticmethod
    def _tick(store: StateStore, ctx: EventContext) -> None:
        if ctx.timestamp_ms > clock(store):
            store.put(CLOCK_KEY, ctx.timestamp_ms)

    def _observe(self, store: StateStore, ctx: EventContext, agent_id: str, obs: Obs) -> None:
        """Store new observations of ``agent_id``; re-derive its record if it is registered."""
        store.put(obs_key(agent_id), obs)
        old = store.get(agent_key(agent_id))
        if old is None:
            self._tick(store, ctx)
            return
        self._commit(store, ctx, old, dict(old), obs)

    # -- handlers: read and validate everything, then write
    def _registered(self, store: StateStore, ctx: EventContext, p: dict[str, Any]) -> None:
        agent_id = _text(p["agent_id"], "agent_id")
        caps = _capabilities(p["capabilities"])
        max_concurrency = _int_at_least(p["max_concurrency"], 1, "max_concurrency")
        address = p["address"]
        if not isinstance(address, str):
            raise InvalidEvent("invalid-payload", "address must be a string")
        health = _unit(p.get("health_score", 1.0), "health_score")
        reported_latency = p.get("latency_ms")
        if reported_latency is not None:
            reported_latency = _non_negative(reported_latency, "latency_ms")
        reported_reliability = p.get("reliability")
        if reported_reliability is not None:
            reported_reliability = _unit(reported_reliability, "reliability")
        old = store.get(agent_key(agent_id))
        ts = ctx.timestamp_ms

        rec: Agent = dict(old) if old is not None else {
            "reported_load": 0, "reported_latency_ms": None, "reported_reliability": None, "interval_ms": 0,
            "seen_ms": ts, "health_status": "UNKNOWN",
        }
        rec.update({
            "agent_id": agent_id, "address": address, "capabilities": caps, "max_concurrency": max_concurrency,
            "tier": p.get("tier", "INDIVIDUAL"), "swarm_members": list(p.get("swarm_members", [])),
            "region": p.get("region"), "cloud": p.get("cloud"), "metadata": dict(p.get("metadata", {})),
            "status": ACTIVE, "health": health, "registered_ms": ts, "seen_ms": max(rec["seen_ms"], ts),
            "deregistered_ms": None, "deregistration_reason": None,
        })
        if reported_latency is not None:
            rec["reported_latency_ms"] = reported_latency
        if reported_reliability is not None:
            rec["reported_reliability"] = reported_reliability
        self._commit(store, ctx, old, rec, store.get(obs_key(agent_id)))

    def _heartbeat(self, store: StateStore, ctx: EventContext, p: dict[str, Any]) -> None:
        access = self._access
        get = access[1] if access[0] is store else self._accessors(store)[0]
        agent_id = p["agent_id"]
        old = get(AGENT_PREFIX + agent_id) if type(agent_id) is str and agent_id else None
        if old is None:
            old, rec = self._known(store, agent_id)  # refuses it, as invalid-payload or unknown-agent
        else:
            rec = dict(old)
        # The checks of _unit / _int_at_least / _non_negative, inlined for the values a heartbeat
        # normally carries (the most frequent event); anything else goes through them.
        health = p["health_score"]
        if type(health) is not float or not 0.0 <= health <= 1.0:
            health = _unit(health, "health_score")
        load = p["current_load"]
        if type(load) is not int or load < 0:
            load = _int_at_least(load, 0, "current_load")
        latency = p["latency_ms"]
        if type(latency) is not float or not 0.0 <= latency < math.inf:
            latency = _non_negative(latency, "latency_ms")
        reliability = p.get("reliability")
        if reliability is not None and (type(reliability) is not float or not 0.0 <= reliability <= 1.0):
            reliability = _unit(reliability, "reliability")
        max_concurrency = p.get("max_concurrency")
        if max_concurrency is not None and (type(max_concurrency) is not int or max_concurrency < 1):
            max_concurrency = _int_at_least(max_concurrency, 1, "max_concurrency")
        interval = p.get("interval_ms", 0)
        if type(interval) is not int or interval < 0:
            interval = _int_at_least(interval, 0, "interval_ms")

        rec["health"] = health
        rec["reported_load"] = load
        rec["reported_latency_ms"] = latency
        if reliability is not None:
            rec["reported_reliability"] = reliability
        if max_concurrency is not None:
            rec["max_concurrency"] = max_concurrency
        if interval:
            rec["interval_ms"] = interval
        ts = ctx.timestamp_ms
        seen = rec["seen_ms"]
        if ts > seen:
            seen = ts
        rec["seen_ms"] = seen
        obs = get(OBS_PREFIX + agent_id)
        put = access[2] if access[0] is store else self._accessors(store)[1]
        if (self.skip_unchanged and health == old["health"] and latency and latency == old["reported_latency_ms"]
                and (reliability is None or (reliability and reliability == old["reported_reliability"]))
                and (max_concurrency is None or max_concurrency == old["max_concurrency"])):
            # Nothing fitness, the measurements or the view depend on changed (the usual heartbeat: the
            # same self-report again), and ``old``'s derived fields are those of its inputs and of this
            # ``obs`` (every write of either goes through _commit): only liveness moves. Exactly what
            # _commit would write, without recomputing the rest. Zero latency/reliability take _commit:
            # -0.0 == 0.0, yet the copied measurement would keep the old zero's sign.
            obs_seen = obs["seen_ms"] if obs else None
            last_seen = rec["last_seen_ms"] = seen if obs_seen is None else max(seen, obs_seen)
            grace = MISSED_INTERVALS * rec["interval_ms"]
            rec["expires_ms"] = last_seen + (self.ttl_ms if self.ttl_ms >= grace else grace)
            put(AGENT_PREFIX + agent_id, rec)
            now = get(CLOCK_KEY)  # _tick, inlined
            if ts > (now if isinstance(now, int) else 0):
                put(CLOCK_KEY, ts)
            return
        if not self.fast_heartbeat:
            self._commit(store, ctx, old, rec, obs)
            return
        # _commit, specialised for a heartbeat (the same writes, for less). Why: heartbeats are most of
        # the log, and on a real log every one moves the agent's fitness (a fresh latency each time).
        # A heartbeat changes none of status, capabilities and health_status, so cap/ never changes and
        # the row moves within the same capabilities' views; _views_move computes its buckets once and
        # edits the lists through the fast get/put. Without observations the measurements are the
        # self-report and load is 0, so fitness is computed from the locals, in _commit's order: the
        # capacity term is W_CAPACITY * max(0.0, 1.0 - 0 / max_concurrency) == W_CAPACITY * 1.0 bit for
        # bit (max_concurrency >= 1). tests/test_registry_heartbeat_path.py compares both paths' state.
        max_concurrency = rec["max_concurrency"]
        if obs:
            rec.update(measure(rec, obs))
            load = rec["load"]
            fit = (W_HEALTH * health + W_LATENCY * (1.0 / (1.0 + rec["latency_ms"] / LATENCY_REF_MS))
                   + W_RELIABILITY * rec["reliability"]
                   + W_CAPACITY * (0.0 if max_concurrency <= 0 else max(0.0, 1.0 - load / max_concurrency)))
        else:  # measure(rec, None) in place, as in _commit; a heartbeat always reports a latency
            prior = rec["reported_reliability"]
            if prior is None:
                prior = DEFAULT_RELIABILITY
            rec["latency_ms"] = latency
            rec["latency_source"] = "reported"
            rec["reliability"] = prior
            rec["load"] = rec["routed"] = rec["receipts"] = rec["successes"] = rec["failures"] = load = 0
            rec["last_seen_ms"] = seen
            fit = (W_HEALTH * health + W_LATENCY * (1.0 / (1.0 + latency / LATENCY_REF_MS))
                   + W_RELIABILITY * prior + W_CAPACITY * 1.0)
        grace = MISSED_INTERVALS * rec["interval_ms"]
        rec["expires_ms"] = rec["last_seen_ms"] + (self.ttl_ms if self.ttl_ms >= grace else grace)
        rec["fitness"] = fit
        if old["status"] == ACTIVE:  # else: in no view before or after (status is unchanged)
            # view_entry(old) and view_entry(rec), inlined; a heartbeat leaves health_status alone
            not_failed = old.get("health_status") != "FAILED"
            old_entry = ([-old["fitness"], old["agent_id"]] if not_failed and old["health"] >= MIN_ROUTABLE_HEALTH
                         and old["load"] < old["max_concurrency"] else None)
            new_entry = ([-fit, old["agent_id"]] if not_failed and health >= MIN_ROUTABLE_HEALTH
                         and load < max_concurrency else None)
            if old_entry != new_entry:
                _views_move(store, get, put, old["capabilities"], old_entry, new_entry)
        put(AGENT_PREFIX + agent_id, rec)
        now = get(CLOCK_KEY)  # _tick, inlined
        if ts > (now if isinstance(now, int) else 0):
            put(CLOCK_KEY, ts)

    def _health_changed(self, store: StateStore, ctx: EventContext, p: dict[str, Any]) -> None:
        old, rec = self._known(store, p["agent_id"])
        status = p["status"]
        if status not in HEALTH_STATUSES:
            raise InvalidEvent("invalid-payload", f"unknown health status {status!r}")
        rec["health"] = _unit(p["health_score"], "health_score")
        rec["health_status"] = status
        self._commit(store, ctx, old, rec, store.get(obs_key(rec["agent_id"])))

    def _deregistered(self, store: StateStore, ctx: EventContext, p: dict[str, Any]) -> None:
        old, rec = self._known(store, p["agent_id"])
        reason = p.get("reason", "OTHER")
        if rec["status"] == ACTIVE:
            rec["deregistered_ms"] = ctx.timestamp_ms
        rec["status"] = DEREGISTERED
        rec["deregistration_reason"] = reason
        self._commit(store, ctx, old, rec, store.get(obs_key(rec["agent_id"])))

    def _routed(self, store: StateStore, ctx: EventContext, p: dict[str, Any]) -> None:
        agent_id = _text(p["agent_id"], "agent_id")
        capability = _text(p["capability"], "capability")
        obs = store.get(obs_key(agent_id)) or empty_obs()
        routed, receipts = store.get(flight_key(agent_id, capability)) or (0, 0)
        store.put(flight_key(agent_id, capability), [routed + 1, receipts])
        self._observe(store, ctx, agent_id, {**obs, "routed": obs["routed"] + 1})

    def _receipt(self, store: StateStore, ctx: EventContext, p: dict[str, Any]) -> None:
        agent_id = _text(p["agent_id"], "agent_id")
        duration = _int_at_least(p["duration_ms"], 0, "duration_ms")
        finished = _int_at_least(p["finished_ms"], 0, "finished_ms")
        _unit(p.get("error_rate", 0.0), "error_rate")
        success = p["success"]
        if not isinstance(success, bool):
            raise InvalidEvent("invalid-payload", "success must be a boolean")
        capability = _text(p["capability"], "capability")
        outcome_micro = round(receipt_outcome(p) * OUTCOME_SCALE)
        ok = success and not p.get("timed_out", False)
        obs = store.get(obs_key(agent_id)) or empty_obs()
        routed, receipts = store.get(flight_key(agent_id, capability)) or (0, 0)
        store.put(flight_key(agent_id, capability), [routed, receipts + 1])
        bkey = breaker_key(agent_id, capability, ctx.lane)
        breaker, _change = on_result(store.get(bkey) or new_breaker(), ctx.timestamp_ms, duration, ok, ROUTING_BREAKER)
        store.put(bkey, breaker)
        self._observe(store, ctx, agent_id, add_receipt(obs, finished, duration, ok, outcome_micro,
                                                        ctx.timestamp_ms))


    @staticmethod
    def _heal_action(store: StateStore, ctx: EventContext, p: dict[str, Any]) -> None:
        """OPEN_CIRCUIT / CLOSE_CIRCUIT from the heal domain force the target's breakers; other actions
        are for the agents to carry out and change nothing here."""
        target = _text(p["target"], "target")
        action = p["action"]
        action_id = _text(p["action_id"], "action_id")
        if action == "OPEN_CIRCUIT":
            store.put(FORCED_PREFIX + target, {"opened_ms": ctx.timestamp_ms, "action_id": action_id})
        elif action == "CLOSE_CIRCUIT":
            store.delete(FORCED_PREFIX + target)


def forced_open(store: StateStore, agent_id: str) -> int | None:
    """When a heal OPEN_CIRCUIT action opened the agent's breakers (event time), or None."""
    forced = store.get(FORCED_PREFIX + agent_id)
    return int(forced["opened_ms"]) if forced else None


def fit_bucket(neg_fitness: float) -> int:
    """View bucket of a row: 0 holds fitness in (0.99, 1], 1 holds (0.98, 0.99], ...

    Monotone in ``-fitness``, so bucket order then row order within a bucket is the
    global (-fitness, agent_id) order.
    """
    return min(FIT_BUCKETS - 1, max(0, int((1.0 + neg_fitness) * FIT_BUCKETS)))


def fit_key(capability: str, bucket: int) -> str:
    """Rows of one bucket; the fixed-width bucket comes first so no capability text can collide."""
    return f"{FIT_PREFIX}{bucket:03d}/{capability}"


def _view_insert(store: StateStore, capability: str, entry: list[Any]) -> None:
    bucket = fit_bucket(entry[0])
    key = fit_key(capability, bucket)
    if store.get(key) is None:
        _list_insert(store, FIT_BUCKETS_PREFIX + capability, bucket)
    _list_insert(store, key, entry)


def _view_remove(store: StateStore, capability: str, entry: list[Any]) -> None:
    bucket = fit_bucket(entry[0])
    key = fit_key(capability, bucket)
    _list_remove(store, key, entry)
    if store.get(key) is None:
        _list_remove(store, FIT_BUCKETS_PREFIX + capability, bucket)


def _view_move(store: StateStore, get: Getter, put: Putter, capability: str, bucket: int, old_entry: list[Any],
               new_entry: list[Any]) -> None:
    """``_view_remove(old_entry)`` then ``_view_insert(new_entry)`` when both rows fall in ``bucket``:
    the same final ``fit/`` and ``fitb/`` values, with one copy and one write of the bucket.
    ``get``/``put``: ``store_access(store)``."""
    key = fit_key(capability, bucket)
    items: list[Any] | None = get(key)
    if items is None:  # the old row was not there: a plain insert (which also lists the bucket)
        _view_insert(store, capability, new_entry)
        return
    new = items.copy()
    i = bisect.bisect_left(new, old_entry)
    changed = i < len(new) and new[i] == old_entry
    if changed:
        del new[i]
    j = bisect.bisect_left(new, new_entry)
    if j == len(new) or new[j] != new_entry:
        new.insert(j, new_entry)
        changed = True
    if changed:
        put(key, new)


#: ``fit_key(capability, bucket) == _FIT_KEY_PREFIXES[bucket] + capability``
_FIT_KEY_PREFIXES = tuple(f"{FIT_PREFIX}{bucket:03d}/" for bucket in range(FIT_BUCKETS))
_LAST_BUCKET = FIT_BUCKETS - 1


def _views_move(store: StateStore, get: Getter, put: Putter, caps: list[str], old_entry: list[Any] | None,
                new_entry: list[Any] | None) -> None:
    """Move an agent's row from ``old_entry`` to ``new_entry`` (None: no row) in the views of ``caps``:
    the final ``fit/`` and ``fitb/`` values of ``_view_remove(old_entry)`` then ``_view_insert(new_entry)``
    per capability (``_view_move`` when both rows share a bucket), with the buckets computed once."""
    old_bucket = new_bucket = -1
    if old_entry is not None:  # fit_bucket, inlined
        old_bucket = int((1.0 + old_entry[0]) * FIT_BUCKETS)
        old_bucket = 0 if old_bucket < 0 else _LAST_BUCKET if old_bucket > _LAST_BUCKET else old_bucket
    if new_entry is not None:
        new_bucket = int((1.0 + new_entry[0]) * FIT_BUCKETS)
        new_bucket = 0 if new_bucket < 0 else _LAST_BUCKET if new_bucket > _LAST_BUCKET else new_bucket
    bisect_left = bisect.bisect_left
    if old_bucket == new_bucket:  # both rows in one bucket (never both None: the caller checked they differ)
        prefix = _FIT_KEY_PREFIXES[new_bucket]
        for cap in caps:
            key = prefix + cap
            items: list[Any] | None = get(key)
            if items is None:  # the old row was not there: a plain insert (which also lists the bucket)
                _view_insert(store, cap, new_entry)  # type: ignore[arg-type]
                continue
            new = items.copy()
            i = bisect_left(new, old_entry)
            changed = i < len(new) and new[i] == old_entry
            if changed:
                del new[i]
            j = bisect_left(new, new_entry)
            if j == len(new) or new[j] != new_entry:
                new.insert(j, new_entry)
                changed = True
            if changed:
                put(key, new)
        return
    old_prefix = _FIT_KEY_PREFIXES[old_bucket] if old_entry is not None else ""
    new_prefix = _FIT_KEY_PREFIXES[new_bucket] if new_entry is not None else ""
    for cap in caps:
        if old_entry is not None:  # _view_remove
            key = old_prefix + cap
            items = get(key)
            if items is not None:
                i = bisect_left(items, old_entry)
                if i < len(items) and items[i] == old_entry:
                    if len(items) == 1:
                        store.delete(key)
                        _list_remove(store, FIT_BUCKETS_PREFIX + cap, old_bucket)
                    else:
                        rest = items.copy()
                        del rest[i]
                        put(key, rest)
            else:
                _list_remove(store, FIT_BUCKETS_PREFIX + cap, old_bucket)
        if new_entry is not None:  # _view_insert
            key = new_prefix + cap
            items = get(key)
            if items is None:
                _list_insert(store, FIT_BUCKETS_PREFIX + cap, new_bucket)
                put(key, [new_entry])
            else:
                i = bisect_left(items, new_entry)
                if i == len(items) or items[i] != new_entry:
                    new = items.copy()
                    new.insert(i, new_entry)
                    put(key, new)


def _no_get(key: str) -> Any:
    raise AssertionError("no store bound")


def _no_put(key: str, value: Any) -> None:
    raise AssertionError("no store bound")


def _list_insert(store: StateStore, key: str, item: Any) -> None:
    """Insert ``item`` into the sorted list at ``key`` (a new list: stored values are never mutated)."""
    items: list[Any] = store.get(key) or []
    i = bisect.bisect_left(items, item)
    if i < len(items) and items[i] == item:
        return
    new = items.copy()  # one copy + memmove: the cost of a write is O(k) pointer moves, not O(k) Python work
    new.insert(i, item)
    store.put(key, new)


def _list_remove(store: StateStore, key: str, item: Any) -> None:
    """Remove ``item`` from the sorted list at ``key``; an emptied list is deleted, not kept as []."""
    items: list[Any] = store.get(key) or []
    i = bisect.bisect_left(items, item)
    if i == len(items) or items[i] != item:
        return
    if len(items) == 1:
        store.delete(key)
        return
    rest = items.copy()
    del rest[i]
    store.put(key, rest)


__all__ = [
    "ACTIVE",
    "DEFAULT_TTL_MS",
    "DEREGISTERED",
    "EXPIRED",
    "RegistryProjection",
    "add_receipt",
    "best_fit",
    "breaker_key",
    "bulkhead_of",
    "capacity_factor",
    "clock",
    "effective_status",
    "find_by_capability",
    "fit_bucket",
    "fit_key",
    "fitness",
    "fitness_of",
    "flight_key",
    "get_agent",
    "in_flight",
    "latency_factor",
    "measure",
    "obs_key",
    "ranked",
    "receipt_outcome",
    "routable_health",
    "view_entry",
]
