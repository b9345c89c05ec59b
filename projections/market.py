"""Capability marketplace projection: listings, discovery, purchases, contracts, SLA monitoring, trades, ratings.

The spec's ``CapabilityMarket`` / ``PricingEngine`` / ``SmartContract`` as a pure reducer
over the ``market`` topic (plus ``commands.receipt`` from ``receipts`` for SLA monitoring).
Sealed-bid auctions live here too (their events are keyed by the listing); the pure auction
rules (commitments, Vickrey outcome, the Dutch task auction) are in ``auction.py``.

Determinism (docs/architecture.md). Every key is written by events of **one partition**:

=================================  ==================================================  =========================
key                                value                                               written by (subject)
=================================  ==================================================  =========================
``listing/<listing_id>``           listing: terms, remaining quantity, rating, status   listing events (listing_id)
``mvd/<by>/<capability>/<p>``      discovery view of the capability's listable          listing events of that
``mvc/<by>/<capability>/<p>/<n>``  listings in ``market`` partition p, sorted by        partition only
                                   ranking ``by`` (value | sla): directory + chunks
                                   (``sortedview.SortedView``)
``caps/<partition>``               sorted capabilities listed in that partition         listing events
``bid/<listing_id>/<bid_id>``      a bid (sealed or open; revealed amount)              bids (listing_id)
``holding/<listing_id>/<buyer>``   units the buyer bought from the listing (quota)      purchases (listing_id)
``rating/<listing_id>/<rater>``    the rater's stars (one rating per rater)             ratings (listing_id)
``contract/<contract_id>``         contract: terms, status, history, SLA observations  contract events (contract_id)
``stats/<capability>/<partition>`` contracts, trades, volume, quantity, breaches,       contract events of that
                                   penalties of one ``market`` partition                partition only
``rcpt/<command_id>``              a receipt that named a contract was forwarded        receipts (command_id)
``clock/<lane>``                   newest event time seen in a lane                     that lane
=================================  ==================================================  =========================

Cross-key effects go through **derived events**, as routing does:

* ``market.purchase`` (keyed by listing) is decided in the listing's partition — open,
  not expired, not an auction, enough remaining quantity, within the buyer's quota — and
  derives ``market.contract_created`` (keyed by contract); the priced total comes from
  ``total_cost`` (the PricingEngine). A refused purchase is a dead letter with its reason.
* ``market.auction_closed`` is checked against the outcome recomputed from the folded
  bids (``auction.auction_outcome``) and derives the winner's ``market.contract_created``.
* ``commands.receipt`` naming a ``contract_id`` (keyed by command) derives
  ``market.sla_observed`` (keyed by contract). Folding it updates the contract's
  measurements; if the SLA is now violated (``sla_violation``) it derives
  ``market.contract_state_changed`` → BREACHED with the penalty. The state machine itself
  changes only when a ``market.contract_state_changed`` is folded, so live workers and
  replays agree whatever the interleaving of partitions.

Lifecycle: ACTIVE → SUSPENDED | FULFILLED | BREACHED | EXPIRED | CANCELLED; SUSPENDED →
ACTIVE | BREACHED | EXPIRED | CANCELLED; the others are final (``TRANSITIONS``). A change
must name the current status as ``previous_status``; BREACHED must be justified by the
folded observations and carry the schema's penalty (``breach_penalty_percent × total_cost
/ 100``); EXPIRED only at or after ``expires_at_ms`` (event time). A contract is *in force*
while ACTIVE and ``now < expires_at_ms`` (``effective_status``): expiry needs no event.

SLA monitoring (receipt vs the contract's SLA): ``uptime`` = successful (and not timed-out)
receipts / receipts × 100; latency = nearest-rank p99 of the last ``LATENCY_WINDOW``
durations. Breach when at least ``MIN_SLA_SAMPLES`` receipts were observed and uptime <
``uptime_percent`` or p99 > ``max_latency_ms``. Receipts from another agent than the seller,
after expiry or for a contract no longer ACTIVE are counted apart and never breach it.

Discovery (spec §5.3). A listing is *listable* while OPEN, priced (not UNKNOWN) and not
sold out; its row ``[provider, unit_cost, rating, review_count, uptime, max_latency_ms,
expires_at_ms, kind]`` sits in two views per (capability, partition), kept
sorted by the reducer: ``value`` by (-rating/unit cost, unit cost, listing id) and ``sla``
by (-uptime, latency, listing id). ``find`` point-reads the view directories of
p < ``MAX_PARTITIONS`` (no scan), takes the first ``limit`` rows not expired at ``now_ms``
from each partition's view and sorts their union (``top_rows``) — it reads
O(partitions × (limit + expired rows ranked above them)) rows, not the capability's k
rows. Value and sla rankings are **exact** (the same list a sort of every listable
listing gives). Writes pay for it: a change of the row moves it in two views, i.e. a copy
of one chunk (≤ ``sortedview.CHUNK_MAX`` rows) per view instead of the copy of the whole
per-partition row set a single index key cost; the row holds no remaining quantity, so a
purchase writes the views only when it sells the listing out.

``trust`` ranks by (-trust(provider), -value, unit cost, listing id), where ``trust`` is the
caller's callable in [0,1] (neutral 0.5 by default; the trust network plugs in here). It
is not known at fold time, so no view can be sorted by it. What ``find`` guarantees:

* **exact** when the capability has at most ``exhaustive_up_to`` (default
  ``TRUST_EXHAUSTIVE`` = 1000) listable listings: it reads them all (O(k), k small) and
  ranks them; also exact with ``candidates=None`` whatever k (O(k));
* otherwise **the exact trust ranking of a bounded candidate set**: the ``candidates``
  (default ``TRUST_CANDIDATES`` = 200, at least ``limit``) best live listings by value
  plus as many by sla. That equals the exact answer when the capability has at most that
  many live listings, and when trust is the same for every provider (then it is the
  value ranking); otherwise a listing outside both shortlists is never returned, however
  trusted its provider — trust re-ranks the value and SLA leaders of a big capability,
  it does not search all of it. Cost: O(partitions × candidates + exhaustive_up_to) rows.
"""

from __future__ import annotations

import functools
import heapq
import math
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar

from swarmlog.projections.auction import auction_outcome, commitment_of
from swarmlog.projections.base import Derived, EventContext, InvalidEvent, Projection, StateStore, Stores
from swarmlog.projections.sortedview import SortedView

LISTING = "listing/"
MVD = "mvd/"
MVC = "mvc/"
CAPS = "caps/"
BID = "bid/"
HOLDING = "holding/"
RATING = "rating/"
CONTRACT = "contract/"
STATS = "stats/"
RCPT = "rcpt/"
CLOCK = "clock/"

MAX_PARTITIONS = 256  # discovery probes mvd/<by>/<cap>/<p> for p below this
TRUST_CANDIDATES = 200  # trust ranking of a big capability: how many of the best by value (and by sla) it re-ranks
TRUST_EXHAUSTIVE = 1000  # trust ranking ranks every listing of a capability with at most this many
HOURS_PER_MONTH = 720.0  # the spec: subscription hourly rate = monthly_fee / (30 × 24)
MIN_SLA_SAMPLES = 5
LATENCY_WINDOW = 200
FAIR_SHARE = 0.5  # scarce listing: one buyer may hold at most this share of its initial quantity
AUCTION_CONTRACT_MS = 30 * 24 * 3_600_000  # an auction win buys a 30-day contract
NEUTRAL_TRUST = 0.5
CONTRACT_NAMESPACE = uuid.UUID("6f1c1f0e-5a8b-4d0e-9a55-3c6d8e1b2a47")

OPEN = "OPEN"
WITHDRAWN = "WITHDRAWN"
CLOSED = "CLOSED"  # auction closed

ACTIVE = "ACTIVE"
SUSPENDED = "SUSPENDED"
FULFILLED = "FULFILLED"
BREACHED = "BREACHED"
EXPIRED = "EXPIRED"
CANCELLED = "CANCELLED"
TRANSITIONS: dict[str, frozenset[str]] = {
    ACTIVE: frozenset({SUSPENDED, FULFILLED, BREACHED, EXPIRED, CANCELLED}),
    SUSPENDED: frozenset({ACTIVE, BREACHED, EXPIRED, CANCELLED}),
    FULFILLED: frozenset(), BREACHED: frozenset(), EXPIRED: frozenset(), CANCELLED: frozenset(),
}
PURCHASABLE = frozenset({"FIXED", "PER_UNIT", "SUBSCRIPTION"})
RANKINGS = ("value", "sla", "trust")

# view row: [provider, unit_cost, rating, review_count, uptime, max_latency_ms, expires_at_ms, kind]; no remaining
# quantity, so a purchase that does not sell the listing out leaves the views alone (find reads it from the listing)
R_PROVIDER, R_COST, R_RATING, R_REVIEWS, R_UPTIME, R_LATENCY, R_EXPIRES, R_KIND = range(8)


# ---------------------------------------------------------------------------- keys
def partition_of(lane: str) -> int:
    """The partition number of a lane ``topic/partition``."""
    try:
        return int(lane.rsplit("/", 1)[1])
    except (IndexError, ValueError):
        raise InvalidEvent("invalid-payload", f"lane {lane!r} has no partition") from None


def listing_key(listing_id: str) -> str:
    return LISTING + listing_id


def contract_key(contract_id: str) -> str:
    return CONTRACT + contract_id


def stats_key(capability: str, partition: int) -> str:
    return f"{STATS}{capability}/{partition}"


def auction_contract_id(listing_id: str, bid_id: str) -> str:
    """The contract id an auction win gets: a function of the log, so every replay derives the same one."""
    return str(uuid.uuid5(CONTRACT_NAMESPACE, f"{listing_id}/{bid_id}"))


# ---------------------------------------------------------------------------- pricing engine
def unit_cost(pricing: Mapping[str, Any]) -> float | None:
    """Cost of one use / unit / subscription hour; AUCTION: the reserve; None if it cannot be priced."""
    kind = pricing.get("kind")
    value: Any = None
    if kind == "FIXED":
        value = pricing.get("price")
    elif kind == "PER_UNIT":
        value = pricing.get("cost_per_unit")
    elif kind == "SUBSCRIPTION":
        fee = pricing.get("monthly_fee")
        value = None if fee is None else fee / HOURS_PER_MONTH
    elif kind == "AUCTION":
        value = pricing.get("reserve_price") or 0.0
    return None if value is None else float(value)


def total_cost(pricing: Mapping[str, Any], quantity: int, duration_ms: int) -> float:
    """The PricingEngine: FIXED price × uses, PER_UNIT cost × units, SUBSCRIPTION hourly rate × hours × seats."""
    kind = pricing.get("kind")
    cost = unit_cost(pricing)
    if kind not in PURCHASABLE or cost is None:
        raise InvalidEvent("not-purchasable", f"pricing {kind} is not bought by a purchase")
    if kind == "SUBSCRIPTION":
        return cost * (duration_ms / 3_600_000) * quantity
    return cost * quantity


def _pricing(p: Any) -> dict[str, Any]:
    if not isinstance(p, dict) or p.get("kind") not in ("FIXED", "PER_UNIT", "SUBSCRIPTION", "AUCTION", "UNKNOWN"):
        raise InvalidEvent("invalid-payload", "pricing must be a PricingModel")
    field = {"FIXED": "price", "PER_UNIT": "cost_per_unit", "SUBSCRIPTION": "monthly_fee",
             "AUCTION": "reserve_price"}.get(p["kind"])
    if field is not None and p["kind"] != "AUCTION" and p.get(field) is None:
        raise InvalidEvent("invalid-payload", f"{p['kind']} pricing needs {field}")
    for name in ("price", "cost_per_unit", "monthly_fee", "reserve_price", "min_increment"):
        if p.get(name) is not None and p[name] < 0:
            raise InvalidEvent("invalid-payload", f"pricing.{name} must be >= 0")
    return dict(p)


def _sla(s: Any) -> dict[str, Any]:
    if not isinstance(s, dict):
        raise InvalidEvent("invalid-payload", "sla must be an Sla record")
    if not 0.0 <= s["uptime_percent"] <= 100.0:
        raise InvalidEvent("invalid-payload", f"uptime_percent must be in [0,100], got {s['uptime_percent']!r}")
    if s["max_latency_ms"] <= 0:
        raise InvalidEvent("invalid-payload", "max_latency_ms must be > 0")
    if not 0.0 <= s["breach_penalty_percent"] <= 100.0:
        raise InvalidEvent("invalid-payload", "breach_penalty_percent must be in [0,100]")
    return dict(s)


def breach_penalty(contract: Mapping[str, Any]) -> float:
    """The schema's penalty: breach_penalty_percent × total_cost / 100."""
    return float(contract["sla"]["breach_penalty_percent"]) * float(contract["total_cost"]) / 100.0


# ---------------------------------------------------------------------------- SLA measurement
def p99(durations: list[int]) -> float | None:
    """Nearest-rank 99th percentile; None without samples."""
    if not durations:
        return None
    ordered = sorted(durations)
    return float(ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)])


def sla_measurements(obs: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """(uptime percent, p99 latency ms) of a contract's observations."""
    n = obs["n"]
    uptime = 100.0 * obs["ok"] / n if n else None
    return uptime, p99(obs["durations"])


def sla_violation(contract: Mapping[str, Any]) -> str | None:
    """Why the contract's SLA is violated by its observations, or None."""
    obs = contract["obs"]
    if obs["n"] < MIN_SLA_SAMPLES:
        return None
    uptime, latency = sla_measurements(obs)
    sla = contract["sla"]
    if uptime is not None and uptime < sla["uptime_percent"]:
        return f"uptime {uptime:.2f}% < {sla['uptime_percent']}% over {obs['n']} receipts"
    if latency is not None and latency > sla["max_latency_ms"]:
        return f"p99 latency {latency:.0f} ms > {sla['max_latency_ms']} ms over {obs['n']} receipts"
    return None


def effective_status(contract: Mapping[str, Any], now_ms: int | None) -> str:
    """ACTIVE contracts past their end read as EXPIRED (no event needed)."""
    status = str(contract["status"])
    if status == ACTIVE and now_ms is not None and now_ms >= contract["expires_at_ms"]:
        return EXPIRED
    return status


# ---------------------------------------------------------------------------- queries
def clock(store: StateStore) -> int | None:
    """Newest event time folded (over all lanes), or None if nothing was."""
    times = [v for _, v in store.scan(CLOCK) if isinstance(v, int)]
    return max(times) if times else None


def get_listing(store: StateStore, listing_id: str) -> dict[str, Any] | None:
    value = store.get(listing_key(listing_id))
    return dict(value) if isinstance(value, dict) else None


def get_contract(store: StateStore, contract_id: str, now_ms: int | None = None) -> dict[str, Any] | None:
    """A contract with ``effective_status`` and its measured uptime / p99 latency."""
    value = store.get(contract_key(contract_id))
    if not isinstance(value, dict):
        return None
    out = dict(value)
    uptime, latency = sla_measurements(value["obs"])
    out["effective_status"] = effective_status(value, now_ms)
    out["measured_uptime_percent"] = uptime
    out["measured_latency_p99_ms"] = latency
    return out


@functools.lru_cache(maxsize=8192)
def view_of(by: str, capability: str, partition: int) -> SortedView:
    """The discovery view of ``capability`` in one partition, sorted by ranking ``by`` (value | sla).

    Cached: views are immutable names, and building them is a visible share of a listing fold.
    """
    base = f"{by}/{capability}/{partition}"
    return SortedView(MVD + base, f"{MVC}{base}/")


def value_of(row: list[Any]) -> float:
    """The spec's value = rating / cost (0 if unrated; free listings rank first among rated ones)."""
    cost = row[R_COST]
    rating = row[R_RATING]
    return rating / cost if cost and cost > 0 else (math.inf if rating > 0 else 0.0)


def value_key(listing_id: str, row: list[Any]) -> list[Any]:
    """Sort key of the value view: value descending, then cost, then listing id.

    JSON has no infinity, so a free rated listing (value +inf) gets a leading 0 and every
    finite value a leading 1: the same order as ``(-value, cost, listing_id)``.
    """
    value = value_of(row)
    if math.isinf(value):
        return [0, 0.0, row[R_COST], listing_id]
    return [1, -value, row[R_COST], listing_id]


def sla_key(listing_id: str, row: list[Any]) -> list[Any]:
    """Sort key of the sla view: uptime descending, then max latency, then listing id."""
    return [-row[R_UPTIME], row[R_LATENCY], listing_id]


VIEW_KEYS: dict[str, Callable[[str, list[Any]], list[Any]]] = {"value": value_key, "sla": sla_key}


def _live(row: list[Any], now_ms: int | None) -> bool:
    return now_ms is None or row[R_EXPIRES] is None or now_ms < row[R_EXPIRES]


def top_rows(store: StateStore, capability: str, by: str, n: int,
             now_ms: int | None = None) -> list[tuple[str, list[Any]]]:
    """(listing_id, row) of the ``n`` best live listings of ``capability`` in ``by`` order (value | sla); exact.

    The global best n are among the best n of each partition's view: take those (reading
    each partition's directory, then chunks until n live rows), sort the union (entries
    compare by their sort keys, in C) and cut. Reads O(partitions × (n + expired rows
    ranked above them)) rows, whatever the capability's size.
    """
    if n <= 0:
        return []
    get = store.get
    dir_prefix = f"{MVD}{by}/{capability}/"
    pool: list[list[Any]] = []
    for partition in range(MAX_PARTITIONS):
        directory = get(dir_prefix + str(partition))
        if not directory:
            continue
        chunk_prefix = f"{MVC}{by}/{capability}/{partition}/"
        want = n
        for chunk_id in directory["ids"]:
            chunk = get(chunk_prefix + str(chunk_id)) or []
            if now_ms is not None:
                chunk = [entry for entry in chunk if _live(entry[-1], now_ms)]
            pool.extend(chunk[:want])
            want -= min(want, len(chunk))
            if not want:
                break
    pool.sort()
    return [(entry[-2], entry[-1]) for entry in pool[:n]]


def index_rows(store: StateStore, capability: str, by: str = "value") -> Iterator[tuple[str, list[Any]]]:
    """(listing_id, row) of every listable listing of ``capability`` in ``by`` order, lazily (expiry not applied).

    A k-way merge of the partitions' views, one chunk at a time.
    """
    views = []
    for partition in range(MAX_PARTITIONS):
        view = view_of(by, capability, partition)
        directory = view.directory(store)
        if directory:
            views.append(view.entries(store, directory))
    for entry in heapq.merge(*views):
        yield entry[-2], entry[-1]


def _every_entry(store: StateStore, capability: str, at_most: int | None) -> list[list[Any]] | None:
    """Every value-view entry of ``capability`` (any order), or None once more than ``at_most`` were read."""
    get = store.get
    out: list[list[Any]] = []
    dir_prefix = f"{MVD}value/{capability}/"
    for partition in range(MAX_PARTITIONS):
        directory = get(dir_prefix + str(partition))
        if not directory:
            continue
        chunk_prefix = f"{MVC}value/{capability}/{partition}/"
        for chunk_id in directory["ids"]:
            out.extend(get(chunk_prefix + str(chunk_id)) or ())
            if at_most is not None and len(out) > at_most:
                return None
    return out


def listing_count(store: StateStore, capability: str) -> int:
    """How many listable listings ``capability`` has (reads every chunk of its value views: reports only)."""
    return sum(view_of("value", capability, p).size(store) for p in range(MAX_PARTITIONS))


def find(store: StateStore, capability: str, by: str = "value", *, now_ms: int | None = None,
         trust: Callable[[str], float] | None = None, limit: int = 10,
         candidates: int | None = TRUST_CANDIDATES, exhaustive_up_to: int = TRUST_EXHAUSTIVE) -> list[dict[str, Any]]:
    """Discovery + ranking: the best ``limit`` open listings of ``capability`` under ``by``.

    Skips listings expired at ``now_ms`` and sold-out ones. Value and sla: exact, reading
    O(partitions × limit) rows from the sorted views. ``by="trust"``: ``trust(provider)``
    must return a score in [0,1] (default neutral 0.5 for everyone); exact when the
    capability has at most ``exhaustive_up_to`` listable listings (or ``candidates`` is
    None), else the exact trust ranking of the ``candidates`` best listings by value plus
    as many by sla (module doc states the guarantee).
    """
    if by not in RANKINGS:
        raise ValueError(f"ranking must be one of {RANKINGS}, got {by!r}")
    if limit <= 0:
        return []
    if by != "trust":
        return [_found(store, capability, lid, row) for lid, row in top_rows(store, capability, by, limit, now_ms)]
    score_of: Callable[[str], float] = trust or (lambda _provider: NEUTRAL_TRUST)
    trust_cache: dict[str, float] = {}

    def trusted(provider: str) -> float:
        if provider not in trust_cache:
            t = float(score_of(provider))
            trust_cache[provider] = min(1.0, max(0.0, t)) if math.isfinite(t) else 0.0
        return trust_cache[provider]

    every = _every_entry(store, capability, None if candidates is None else exhaustive_up_to)
    if every is not None:
        pool = {entry[-2]: entry[-1] for entry in every if _live(entry[-1], now_ms)}
    else:
        pool = {}
        for ranking in VIEW_KEYS:
            pool.update(top_rows(store, capability, ranking, max(candidates or 0, limit), now_ms))
    best = heapq.nsmallest(limit, pool.items(), key=lambda item: (
        -trusted(item[1][R_PROVIDER]), -value_of(item[1]), item[1][R_COST], item[0]))
    return [{**_found(store, capability, lid, row), "trust": trusted(row[R_PROVIDER])} for lid, row in best]


def _found(store: StateStore, capability: str, listing_id: str, row: list[Any]) -> dict[str, Any]:
    listing = store.get(listing_key(listing_id)) or {}  # one point read per answer, for the remaining quantity
    return {"listing_id": listing_id, "provider": row[R_PROVIDER], "capability": capability,
            "unit_cost": row[R_COST], "rating": row[R_RATING], "review_count": row[R_REVIEWS],
            "uptime_percent": row[R_UPTIME], "max_latency_ms": row[R_LATENCY],
            "remaining": listing.get("remaining"), "kind": row[R_KIND], "value": value_of(row)}


def analytics(store: StateStore, capability: str | None = None) -> dict[str, Any]:
    """Market analytics (spec: total_volume = Σ amount, avg_price = volume / trade count), per capability.

    Sums the per-partition aggregates in partition order, so the figure is the same for
    any worker or replay.
    """
    caps: set[str] = set()
    if capability is not None:
        caps.add(capability)
    else:
        for partition in range(MAX_PARTITIONS):
            caps.update(store.get(f"{CAPS}{partition}") or [])
    per_cap: dict[str, dict[str, Any]] = {}
    for cap in sorted(caps):
        total: dict[str, Any] = {"contracts": 0, "trades": 0, "volume": 0.0, "quantity": 0, "breaches": 0,
                                 "penalties": 0.0}
        for partition in range(MAX_PARTITIONS):
            part = store.get(stats_key(cap, partition))
            if part:
                for name in total:
                    total[name] += part.get(name, 0)
        total["avg_price"] = total["volume"] / total["trades"] if total["trades"] else None
        total["avg_unit_price"] = total["volume"] / total["quantity"] if total["quantity"] else None
        per_cap[cap] = total
    volume = sum(v["volume"] for v in per_cap.values())
    trades = sum(v["trades"] for v in per_cap.values())
    return {"total_volume": volume, "trade_count": trades, "avg_price": volume / trades if trades else None,
            "by_capability": per_cap}


# ---------------------------------------------------------------------------- validation helpers
def _text(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidEvent("invalid-payload", f"{name} must be a non-empty string")
    return value


def _capability(value: Any) -> str:
    cap = _text(value, "capability")
    if "/" in cap:
        raise InvalidEvent("invalid-payload", f"capability {cap!r} must not contain '/'")
    return cap


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidEvent("invalid-payload", f"{name} must be an integer >= 1, got {value!r}")
    return value


def _amount(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise InvalidEvent("invalid-payload", f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def _producer_is(ctx: EventContext, did: str, role: str) -> None:
    if ctx.producer != did:
        raise InvalidEvent("producer-mismatch", f"{role} {did} is not the producer {ctx.producer}")


def _subject_is(ctx: EventContext, value: str, field: str) -> None:
    if ctx.subject != value:
        raise InvalidEvent("invalid-payload", f"subject {ctx.subject!r} is not the {field} {value!r}")


def _new_obs() -> dict[str, Any]:
    return {"n": 0, "ok": 0, "durations": [], "foreign": 0, "late": 0, "units": 0}


# ---------------------------------------------------------------------------- the projection
class MarketProjection(Projection):
    """Listings, discovery index, purchases, auctions, contracts, SLA monitoring, trades, ratings (module doc)."""

    name: ClassVar[str] = "market"
    event_types: ClassVar[frozenset[str]] = frozenset({
        "market.listing_created", "market.listing_updated", "market.listing_withdrawn", "market.purchase",
        "market.bid", "market.bid_revealed", "market.auction_closed", "market.contract_created",
        "market.contract_state_changed", "market.trade", "market.rating", "market.sla_observed",
        "commands.receipt",
    })

    def apply(self, stores: Stores, ctx: EventContext, payload: dict[str, Any]) -> list[Derived]:
        own = stores.own
        handler = self._handlers.get(ctx.event_type)
        if handler is None:
            raise InvalidEvent("unexpected-event-type", ctx.event_type)
        try:
            derived = handler(self, own, ctx, payload)
        except (KeyError, TypeError) as exc:  # handlers read and validate everything before the first write
            raise InvalidEvent("invalid-payload", f"{type(exc).__name__}: {exc}") from None
        lane_clock = CLOCK + ctx.lane
        if ctx.timestamp_ms > (own.get(lane_clock) or 0):
            own.put(lane_clock, ctx.timestamp_ms)
        return derived

    # -- listings ---------------------------------------------------------------------------
    @staticmethod
    def _row(listing: Mapping[str, Any]) -> list[Any]:
        sla = listing["sla"]
        return [listing["provider"], unit_cost(listing["pricing"]), listing["rating"], listing["review_count"],
                float(sla["uptime_percent"]), int(sla["max_latency_ms"]), listing["expires_at_ms"],
                listing["pricing"]["kind"]]

    @classmethod
    def _indexed_row(cls, listing: Mapping[str, Any] | None) -> list[Any] | None:
        """The listing's row in the discovery views, or None if it is not listable (module doc)."""
        if (listing is None or listing["status"] != OPEN or listing["remaining"] == 0
                or listing["pricing"]["kind"] == "UNKNOWN" or unit_cost(listing["pricing"]) is None):
            return None
        return cls._row(listing)

    def _put_listing(self, own: StateStore, listing: Mapping[str, Any], new_listing: bool = False) -> None:
        """Write the listing and move its row in its capability's views (the listing's partition only).

        Each view key therefore has one writer lane. The previous row comes from the
        listing as stored before this write, so no extra key is needed. A change that keeps
        a sort key (a purchase, a rating for the sla view) rewrites the row in place; one
        that changes it removes the old entry first.
        """
        listing_id = listing["listing_id"]
        key = listing_key(listing_id)
        old = None if new_listing else self._indexed_row(own.get(key))
        own.put(key, listing)
        new = self._indexed_row(listing)
        if old == new:
            return
        for by, key_of in VIEW_KEYS.items():
            view = view_of(by, listing["capability"], listing["partition"])
            new_key = None if new is None else key_of(listing_id, new)
            if old is not None:
                old_key = key_of(listing_id, old)
                if old_key != new_key:
                    view.remove(own, old_key)
            if new is not None and new_key is not None:
                view.upsert(own, new_key, new)

    def _created(self, own: StateStore, ctx: EventContext, p: dict[str, Any]) -> list[Derived]:
        listing_id = _text(p["listing_id"], "listing_id")
        _subject_is(ctx, listing_id, "listing_id")
        provider = _text(p["provider"], "provider")
        _producer_is(ctx, provider, "provider")
        capability = _capability(p["capability"])
        pricing = _pricing(p["pricing"])
        sla = _sla(p["sla"])
        quantity = p.get("available_quantity")
        if quantity is not None and (isinstance(quantity, bool) or quantity < 0):
            raise InvalidEvent("invalid-payload", "available_quantity must be >= 0")
        if own.get(listing_key(listing_id)) is not None:
            raise InvalidEvent("duplicate-listing", listing_id)
        partition = partition_of(ctx.lane)
        listing = {
            "listing_id": listing_id, "provider": provider, "capability": capability,
            "description": p.get("description", ""), "pricing": pricing, "sla": sla,
            "initial_quantity": quantity, "remaining": quantity, "sold": 0,
            "expires_at_ms": p.get("expires_at_ms"), "status": OPEN, "rating": 0.0, "review_count": 0,
            "rating_sum": 0.0, "created_ms": ctx.timestamp_ms, "updated_ms": ctx.timestamp_ms,
            "partition": partition, "bids": [], "auction": None,
        }
        self._put_listing(own, listing, new_listing=True)
        caps_key = f"{CAPS}{partition}"
        caps = own.get(caps_key) or []
        if capability not in caps:
            own.put(caps_key, sorted([*caps, capability]))
        return []

    @staticmethod
    def _listing(own: StateStore, listing_id: Any) -> dict[str, Any]:
        listing = own.get(listing_key(_text(listing_id, "listing_id")))
        if listing is None:
            raise InvalidEvent("unknown-listing", str(listing_id))
        return dict(listing)

    def _updated(self, own: StateStore, ctx: EventContext, p: dict[str, Any]) -> list[Derived]:
        listing = self._listing(own, p["listing_id"])
        _producer_is(ctx, listing["provider"], "provider")
        if p["provider"] != listing["provider"]:
            raise InvalidEvent("invalid-payload", "provider never changes")
        if listing["status"] != OPEN:
            raise InvalidEvent("listing-closed", f"{listing['listing_id']} is {listing['status']}")
        pricing = _pricing(p["pricing"])
        if (pricing["kind"] == "AUCTION") != (listing["pricing"]["kind"] == "AUCTION"):
            raise InvalidEvent("invalid-payload", "a listing cannot switch to or from AUCTION pricing")
        if listing["bids"] and pricing != listing["pricing"]:
            raise InvalidEvent("invalid-payload", "auction terms cannot change once bids exist")
        sla = _sla(p["sla"])
        quantity = p.get("available_quantity")
        if quantity is not None and (isinstance(quantity, bool) or quantity < 0):
            raise InvalidEvent("invalid-payload", "available_quantity must be >= 0")
        listing.update({"description": p.get("description", ""), "pricing": pricing, "sla": sla,
                        "remaining": quantity, "initial_quantity": None if quantity is None else
                        quantity + listing["sold"], "expires_at_ms": p.get("expires_at_ms"),
                        "updated_ms": ctx.timestamp_ms})
        self._put_listing(own, listing)
        return []

    def _withdrawn(self, own: StateStore, ctx: EventContext, p: dict[str, Any]) -> list[Derived]:
        listing = self._listing(own, p["listing_id"])
        _producer_is(ctx, listing["provider"], "provider")
        if listing["status"] != OPEN:
            raise InvalidEvent("listing-closed", f"{listing['listing_id']} is {listing['status']}")
        listing.update({"status": WITHDRAWN, "updated_ms": ctx.timestamp_ms, "withdraw_reason": p.get("reason", "")})
        self._put_listing(own, listing)
        return []

    # -- purchases (fair quota) -------------------------------------------------------------------
    def _purchase(self, own: StateStore, ctx: EventContext, p: dict[str, Any]) -> list[Derived]:
        listing = self._listing(own, p["listing_id"])
        buyer = _text(p["buyer"], "buyer")
        _producer_is(ctx, buyer, "buyer")
        contract_id = _text(p["contract_id"], "contract_id")
        quantity = _positive_int(p.get("quantity", 1), "quantity")
        duration = _positive_int(p["duration_ms"], "duration_ms")
        budget = p.get("max_total_cost")
        lid = listing["listing_id"]
        if buyer == listing["provider"]:
            raise InvalidEvent("self-dealing", f"{buyer} cannot buy its own listing")
        if listing["status"] != OPEN:
            raise InvalidEvent("listing-closed", f"{lid} is {listing['status']}")
        if listing["expires_at_ms"] is not None and ctx.timestamp_ms >= listing["expires_at_ms"]:
            raise InvalidEvent("listing-expired", f"{lid} expired at {listing['expires_at_ms']}")
        if listing["pricing"]["kind"] not in PURCHASABLE:
            raise InvalidEvent("not-purchasable", f"{lid} is priced {listing['pricing']['kind']}")
        holding_key = f"{HOLDING}{lid}/{buyer}"
        held = own.get(holding_key) or 0
        if listing["remaining"] is not None:
            if quantity > listing["remaining"]:
                raise InvalidEvent("sold-out", f"{lid}: {quantity} wanted, {listing['remaining']} left")
            quota = max(1, math.floor(FAIR_SHARE * listing["initial_quantity"]))
            if held + quantity > quota:
                raise InvalidEvent("over-quota", f"{buyer} would hold {held + quantity} of {lid}, quota {quota}")
        cost = total_cost(listing["pricing"], quantity, duration)
        if budget is not None and cost > budget:
            raise InvalidEvent("over-budget", f"priced {cost}, budget {budget}")
        listing["sold"] += quantity
        if listing["remaining"] is not None:
            listing["remaining"] -= quantity
        listing["updated_ms"] = ctx.timestamp_ms
        self._put_listing(own, listing)
        own.put(holding_key, held + quantity)
        return [Derived("market.contract_created", {
            "contract_id": contract_id, "buyer": buyer, "seller": listing["provider"], "listing_id": lid,
            "capability": listing["capability"], "quantity": quantity, "total_cost": cost,
            "pricing": listing["pricing"], "sla": listing["sla"], "expires_at_ms": ctx.timestamp_ms + duration,
            "bid_id": None,
        }, subject=contract_id)]

    # -- auctions -------------------------------------------------------------------------------
    @staticmethod
    def _auction(listing: Mapping[str, Any]) -> Mapping[str, Any]:
        if listing["pricing"]["kind"] != "AUCTION":
            raise InvalidEvent("not-an-auction", f"{listing['listing_id']} is priced {listing['pricing']['kind']}")
        return listing["pricing"]

    def _bid(self, own: StateStore, ctx: EventContext, p: dict[str, Any]) -> list[Derived]:
        listing = self._listing(own, p["listing_id"])
        terms = self._auction(listing)
        bid_id = _text(p["bid_id"], "bid_id")
        bidder = _text(p["bidder"], "bidder")
        _producer_is(ctx, bidder, "bidder")
        quantity = _positive_int(p.get("quantity", 1), "quantity")
        lid = listing["listing_id"]
        if bidder == listing["provider"]:
            raise InvalidEvent("self-dealing", f"{bidder} cannot bid on its own listing")
        if listing["status"] != OPEN:
            raise InvalidEvent("auction-closed", f"{lid} is {listing['status']}")
        closes = terms.get("auction_closes_at_ms")
        if closes is not None and ctx.timestamp_ms >= closes:
            raise InvalidEvent("bid-too-late", f"bidding on {lid} closed at {closes}")
        if own.get(f"{BID}{lid}/{bid_id}") is not None:
            raise InvalidEvent("duplicate-bid", bid_id)
        sealed = bool(terms.get("sealed_bid"))
        amount, commitment = p.get("amount"), p.get("commitment")
        if sealed:
            if amount is not None or not isinstance(commitment, bytes) or len(commitment) != 32:
                raise InvalidEvent("invalid-payload", "a sealed bid carries a 32-byte commitment and no amount")
        else:
            if commitment is not None:
                raise InvalidEvent("invalid-payload", "an open bid carries no commitment")
            amount = _amount(amount, "amount")
            reserve = terms.get("reserve_price") or 0.0
            best = max((own.get(f"{BID}{lid}/{b}")["amount"] for b in listing["bids"]), default=None)
            floor = reserve if best is None else best + (terms.get("min_increment") or 0.0)
            if amount < floor or (best is not None and amount <= best):
                raise InvalidEvent("bid-too-low", f"{amount} < {floor} (reserve / best bid + increment)")
        own.put(f"{BID}{lid}/{bid_id}", {
            "bid_id": bid_id, "bidder": bidder, "quantity": quantity, "sealed": sealed,
            "commitment": commitment.hex() if isinstance(commitment, bytes) else None,
            "amount": None if sealed else amount,
            "revealed": not sealed, "placed_ms": ctx.timestamp_ms,
        })
        listing["bids"] = [*listing["bids"], bid_id]
        own.put(listing_key(lid), listing)
        return []

    def _revealed(self, own: StateStore, ctx: EventContext, p: dict[str, Any]) -> list[Derived]:
        listing = self._listing(own, p["listing_id"])
        terms = self._auction(listing)
        lid = listing["listing_id"]
        bid_id = _text(p["bid_id"], "bid_id")
        bid = own.get(f"{BID}{lid}/{bid_id}")
        if bid is None:
            raise InvalidEvent("unknown-bid", bid_id)
        bidder = _text(p["bidder"], "bidder")
        _producer_is(ctx, bidder, "bidder")
        if bidder != bid["bidder"]:
            raise InvalidEvent("bidder-mismatch", f"{bid_id} was placed by {bid['bidder']}")
        if not bid["sealed"] or bid["revealed"]:
            raise InvalidEvent("duplicate-reveal", f"{bid_id} is already open")
        if listing["status"] != OPEN:
            raise InvalidEvent("auction-closed", f"{lid} is {listing['status']}: reveals are over")
        closes = terms.get("auction_closes_at_ms")
        if closes is not None and ctx.timestamp_ms < closes:
            raise InvalidEvent("reveal-too-early", f"bidding on {lid} is open until {closes}")
        amount = _amount(p["amount"], "amount")
        nonce = p["nonce"]
        if not isinstance(nonce, bytes) or len(nonce) < 16:
            raise InvalidEvent("invalid-payload", "nonce must be at least 16 bytes")
        if commitment_of(amount, nonce, bidder).hex() != bid["commitment"]:
            raise InvalidEvent("commitment-mismatch", f"{bid_id}: amount and nonce do not open the commitment")
        own.put(f"{BID}{lid}/{bid_id}", {**bid, "amount": amount, "revealed": True, "revealed_ms": ctx.timestamp_ms})
        return []

    def bids_of(self, own: StateStore, listing: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The listing's bids in the order they were placed."""
        return [own.get(f"{BID}{listing['listing_id']}/{b}") for b in listing["bids"]]

    def _closed(self, own: StateStore, ctx: EventContext, p: dict[str, Any]) -> list[Derived]:
        listing = self._listing(own, p["listing_id"])
        terms = self._auction(listing)
        lid = listing["listing_id"]
        _producer_is(ctx, listing["provider"], "provider")
        if listing["status"] != OPEN:
            raise InvalidEvent("auction-closed", f"{lid} is {listing['status']}")
        closes = terms.get("auction_closes_at_ms")
        if closes is not None and ctx.timestamp_ms < closes:
            raise InvalidEvent("close-too-early", f"bidding on {lid} is open until {closes}")
        outcome = auction_outcome(self.bids_of(own, listing), terms.get("reserve_price"), bool(terms.get("sealed_bid")))
        claimed = {"winning_bid_id": p.get("winning_bid_id"), "winner": p.get("winner"),
                   "clearing_price": p.get("clearing_price"), "bid_count": p["bid_count"]}
        if claimed != outcome:
            raise InvalidEvent("auction-mismatch", f"claimed {claimed}, the folded bids give {outcome}")
        listing.update({"status": CLOSED, "auction": outcome, "updated_ms": ctx.timestamp_ms})
        self._put_listing(own, listing)
        if outcome["winner"] is None:
            return []
        bid = own.get(f"{BID}{lid}/{outcome['winning_bid_id']}")
        contract_id = auction_contract_id(lid, outcome["winning_bid_id"])
        return [Derived("market.contract_created", {
            "contract_id": contract_id, "buyer": outcome["winner"], "seller": listing["provider"], "listing_id": lid,
            "capability": listing["capability"], "quantity": bid["quantity"], "total_cost": outcome["clearing_price"],
            "pricing": listing["pricing"], "sla": listing["sla"],
            "expires_at_ms": ctx.timestamp_ms + AUCTION_CONTRACT_MS, "bid_id": outcome["winning_bid_id"],
        }, subject=contract_id)]

    # -- ratings --------------------------------------------------------------------------------
    def _rating(self, own: StateStore, ctx: EventContext, p: dict[str, Any]) -> list[Derived]:
        listing = self._listing(own, p["listing_id"])
        rater = _text(p["rater"], "rater")
        _producer_is(ctx, rater, "rater")
        if rater == listing["provider"]:
            raise InvalidEvent("self-dealing", "a provider cannot rate its own listing")
        stars = _amount(p["stars"], "stars")
        if stars > 5.0:
            raise InvalidEvent("invalid-payload", f"stars must be in [0,5], got {stars}")
        lid = listing["listing_id"]
        key = f"{RATING}{lid}/{rater}"
        previous = own.get(key)
        if previous is None:
            listing["review_count"] += 1
            listing["rating_sum"] += stars
        else:  # a rater's later rating replaces the earlier one
            listing["rating_sum"] += stars - previous["stars"]
        listing["rating"] = listing["rating_sum"] / listing["review_count"]
        listing["updated_ms"] = ctx.timestamp_ms
        own.put(key, {"stars": stars, "review": p.get("review", ""), "contract_id": p.get("contract_id"),
                      "rated_ms": ctx.timestamp_ms})
        self._put_listing(own, listing)
        return []

    # -- contracts ------------------------------------------------------------------------------
    @staticmethod
    def _contract(own: StateStore, contract_id: Any) -> dict[str, Any]:
        contract = own.get(contract_key(_text(contract_id, "contract_id")))
        if contract is None:
            raise InvalidEvent("unknown-contract", str(contract_id))
        return dict(contract)

    @staticmethod
    def _bump(own: StateStore, ctx: EventContext, capability: str, **deltas: float) -> None:
        key = stats_key(capability, partition_of(ctx.lane))
        stats = dict(own.get(key) or {})
        for name, delta in deltas.items():
            stats[name] = stats.get(name, 0) + delta
        own.put(key, stats)
        caps_key = f"{CAPS}{partition_of(ctx.lane)}"
        caps = own.get(caps_key) or []
        if capability not in caps:
            own.put(caps_key, sorted([*caps, capability]))

    def _contract_created(self, own: StateStore, ctx: EventContext, p: dict[str, Any]) -> list[Derived]:
        contract_id = _text(p["contract_id"], "contract_id")
        _subject_is(ctx, contract_id, "contract_id")
        buyer, seller = _text(p["buyer"], "buyer"), _text(p["seller"], "seller")
        if buyer == seller:
            raise InvalidEvent("self-dealing", "buyer and seller are the same agent")
        capability = _capability(p["capability"])
        quantity = _positive_int(p["quantity"], "quantity")
        cost = _amount(p["total_cost"], "total_cost")
        pricing, sla = _pricing(p["pricing"]), _sla(p["sla"])
        expires = p["expires_at_ms"]
        if own.get(contract_key(contract_id)) is not None:
            raise InvalidEvent("duplicate-contract", contract_id)
        own.put(contract_key(contract_id), {
            "contract_id": contract_id, "buyer": buyer, "seller": seller,
            "listing_id": _text(p["listing_id"], "listing_id"), "capability": capability, "quantity": quantity,
            "total_cost": cost, "pricing": pricing, "sla": sla, "created_ms": ctx.timestamp_ms,
            "expires_at_ms": expires, "bid_id": p.get("bid_id"), "status": ACTIVE,
            "history": [{"status": ACTIVE, "at_ms": ctx.timestamp_ms, "reason": "created"}],
            "penalty_applied": 0.0, "paid": 0.0, "trades": 0, "obs": _new_obs(), "breach_pending": False,
        })
        self._bump(own, ctx, capability, contracts=1)
        return []

    def _state_changed(self, own: StateStore, ctx: EventContext, p: dict[str, Any]) -> list[Derived]:
        contract = self._contract(own, p["contract_id"])
        previous, status = p["previous_status"], p["status"]
        if previous != contract["status"]:
            raise InvalidEvent("stale-transition", f"{contract['contract_id']} is {contract['status']}, "
                                                   f"not {previous}")
        if status not in TRANSITIONS.get(previous, frozenset()):
            raise InvalidEvent("illegal-transition", f"{previous} -> {status}")
        penalty = _amount(p.get("penalty_applied", 0.0), "penalty_applied")
        if status == BREACHED:
            why = sla_violation(contract)
            if why is None:
                raise InvalidEvent("unjustified-breach", "the folded receipts do not violate the SLA")
            if not math.isclose(penalty, breach_penalty(contract), rel_tol=1e-9, abs_tol=1e-9):
                raise InvalidEvent("wrong-penalty", f"penalty {penalty}, the SLA gives {breach_penalty(contract)}")
        elif penalty != 0.0:
            raise InvalidEvent("invalid-payload", "only a breach applies a penalty")
        if status == EXPIRED and ctx.timestamp_ms < contract["expires_at_ms"]:
            raise InvalidEvent("not-expired", f"expires at {contract['expires_at_ms']}")
        contract.update({"status": status, "penalty_applied": contract["penalty_applied"] + penalty,
                         "breach_pending": False,
                         "history": [*contract["history"], {"status": status, "at_ms": ctx.timestamp_ms,
                                                            "reason": p.get("reason", "")}]})
        own.put(contract_key(contract["contract_id"]), contract)
        if status == BREACHED:
            self._bump(own, ctx, contract["capability"], breaches=1, penalties=penalty)
        return []

    def _trade(self, own: StateStore, ctx: EventContext, p: dict[str, Any]) -> list[Derived]:
        contract = self._contract(own, p["contract_id"])
        amount = _amount(p["amount"], "amount")
        quantity = _positive_int(p.get("quantity", 1), "quantity")
        parties = (contract["buyer"], contract["seller"], contract["capability"])
        if (p["buyer"], p["seller"], p["capability"]) != parties:
            raise InvalidEvent("contract-mismatch", "buyer, seller and capability must be the contract's")
        if contract["status"] in (CANCELLED,):
            raise InvalidEvent("contract-closed", f"{contract['contract_id']} is {contract['status']}")
        contract.update({"paid": contract["paid"] + amount, "trades": contract["trades"] + 1})
        own.put(contract_key(contract["contract_id"]), contract)
        self._bump(own, ctx, contract["capability"], trades=1, volume=amount, quantity=quantity)
        return []

    # -- SLA monitoring -------------------------------------------------------------------------
    def _receipt(self, own: StateStore, ctx: EventContext, p: dict[str, Any]) -> list[Derived]:
        """A receipt billed to a contract is forwarded to the contract's partition (once per command)."""
        contract_id = p.get("contract_id")
        if not contract_id:
            return []
        command_id = _text(p["command_id"], "command_id")
        duration = p["duration_ms"]
        if isinstance(duration, bool) or not isinstance(duration, int) or duration < 0:
            raise InvalidEvent("invalid-payload", "duration_ms must be an integer >= 0")
        key = RCPT + command_id
        if own.get(key) is not None:
            return []  # a second receipt for the command: routing dead-letters it; bill the first only
        own.put(key, contract_id)
        return [Derived("market.sla_observed", {
            "contract_id": contract_id, "command_id": command_id, "agent_id": _text(p["agent_id"], "agent_id"),
            "capability": _text(p["capability"], "capability"), "duration_ms": duration,
            "success": bool(p["success"]), "timed_out": bool(p.get("timed_out", False)),
            "finished_ms": int(p["finished_ms"]), "units_consumed": int(p.get("units_consumed", 1)),
        }, subject=contract_id)]

    def _observed(self, own: StateStore, ctx: EventContext, p: dict[str, Any]) -> list[Derived]:
        contract = self._contract(own, p["contract_id"])
        duration = p["duration_ms"]
        if isinstance(duration, bool) or not isinstance(duration, int) or duration < 0:
            raise InvalidEvent("invalid-payload", "duration_ms must be an integer >= 0")
        obs = dict(contract["obs"])
        if p["agent_id"] != contract["seller"] or p["capability"] != contract["capability"]:
            obs["foreign"] += 1
        elif contract["status"] != ACTIVE or p["finished_ms"] >= contract["expires_at_ms"]:
            obs["late"] += 1
        else:
            obs["n"] += 1
            obs["ok"] += 1 if p["success"] and not p.get("timed_out", False) else 0
            obs["durations"] = [*obs["durations"], duration][-LATENCY_WINDOW:]
            obs["units"] += int(p.get("units_consumed", 1))
        contract["obs"] = obs
        derived: list[Derived] = []
        why = sla_violation(contract) if contract["status"] == ACTIVE and not contract["breach_pending"] else None
        if why is not None:
            uptime, latency = sla_measurements(obs)
            contract["breach_pending"] = True
            derived.append(Derived("market.contract_state_changed", {
                "contract_id": contract["contract_id"], "previous_status": ACTIVE, "status": BREACHED,
                "reason": f"SLA breach: {why}", "penalty_applied": breach_penalty(contract),
                "measured_uptime_percent": uptime, "measured_latency_ms": latency,
            }, subject=contract["contract_id"]))
        own.put(contract_key(contract["contract_id"]), contract)
        return derived

    _handlers: ClassVar[dict[str, Callable[[MarketProjection, StateStore, EventContext, dict[str, Any]],
                                           list[Derived]]]] = {
        "market.listing_created": _created,
        "market.listing_updated": _updated,
        "market.listing_withdrawn": _withdrawn,
        "market.purchase": _purchase,
        "market.bid": _bid,
        "market.bid_revealed": _revealed,
        "market.auction_closed": _closed,
        "market.rating": _rating,
        "market.contract_created": _contract_created,
        "market.contract_state_changed": _state_changed,
        "market.trade": _trade,
        "market.sla_observed": _observed,
        "commands.receipt": _receipt,
    }


__all__ = [
    "TRANSITIONS",
    "MarketProjection",
    "analytics",
    "auction_contract_id",
    "breach_penalty",
    "effective_status",
    "find",
    "get_contract",
    "get_listing",
    "sla_violation",
    "total_cost",
    "unit_cost",
]
