"""Fast discovery: the sorted views give exactly what a brute-force ranking of every listing gives.

Pure-reducer tests: random listing histories (creations, ratings, purchases down to sold
out, updates with expiry, withdrawals) are folded through ``MarketProjection.apply`` with
tiny view chunks (so chunks split and merge all the time), then ``find`` is compared with
a ranking of every listing record computed here from scratch (``brute``). Also: the
chunked ``SortedView`` against a plain sorted dict, and replay in another interleaving of
partitions giving the same store.
"""

from __future__ import annotations

import contextlib
import math
import random
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarmlog.projections import sortedview
from swarmlog.projections.base import EventContext, InvalidEvent, MemoryStore, Stores, canonical_json
from swarmlog.projections.market import MarketProjection, find, index_rows, listing_count, unit_cost
from swarmlog.projections.sortedview import SortedView

PARTITIONS = 3
CAPS = ("data.etl", "ml.inference")
PRICES = (0.0, 0.5, 1.0, 2.0, 4.0)  # few values: many ties, free listings (value +inf when rated)
UPTIMES = (95.0, 99.0, 99.9)
LATENCIES = (20, 50, 100)


@contextlib.contextmanager
def tiny_chunks() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sortedview, "CHUNK_MAX", 4)
        mp.setattr(sortedview, "CHUNK_MIN", 2)
        yield


# ----------------------------------------------------------------------------- SortedView alone
@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 40), st.integers(0, 3)), max_size=250))
def test_sorted_view_matches_a_sorted_dict(ops: list[tuple[bool, int, int]]) -> None:
    with tiny_chunks():
        store = MemoryStore()
        view = SortedView("d/v", "c/v/")
        reference: dict[int, int] = {}
        for insert, k, payload in ops:
            if insert:
                view.upsert(store, [k % 7, k], payload)
                reference[k] = payload
            else:
                assert view.remove(store, [k % 7, k]) == (k in reference)
                reference.pop(k, None)
            expected = [[k % 7, k, reference[k]] for k in sorted(reference, key=lambda k: (k % 7, k))]
            assert list(view.entries(store)) == expected
            assert view.size(store) == len(reference)
            directory = view.directory(store)
            if directory is None:
                assert not reference and len(store) == 0  # an emptied view leaves no keys behind
                continue
            chunks = [store.get(f"c/v/{i}") for i in directory["ids"]]
            assert all(0 < len(c) <= sortedview.CHUNK_MAX for c in chunks)
            assert [c[0][:-1] for c in chunks] == directory["firsts"]
            assert len(store) == 1 + len(chunks)  # no orphan chunk


# ----------------------------------------------------------------------------- market histories
def ctx(event_type: str, subject: str, producer: str, ts: int, seq: int) -> EventContext:
    lane = f"market/{zlib.crc32(subject.encode()) % PARTITIONS}"
    return EventContext(f"e{seq}", event_type, producer, subject, ts, lane, seq, "test")


def provider(n: int) -> str:
    return f"did:key:provider{n}"


create = st.tuples(st.just("create"), st.integers(0, 59), st.integers(0, 5), st.sampled_from(CAPS),
                   st.sampled_from(("FIXED", "FIXED", "PER_UNIT", "SUBSCRIPTION", "AUCTION", "UNKNOWN")),
                   st.sampled_from(PRICES), st.sampled_from(UPTIMES), st.sampled_from(LATENCIES),
                   st.sampled_from((None, None, 0, 1, 2, 5)))
change = st.one_of(
    create,
    st.tuples(st.just("rate"), st.integers(0, 59), st.integers(0, 3), st.sampled_from((1.0, 2.0, 4.0, 5.0))),
    st.tuples(st.just("buy"), st.integers(0, 59), st.integers(0, 3)),
    st.tuples(st.just("update"), st.integers(0, 59), st.sampled_from(PRICES), st.sampled_from(UPTIMES),
              st.sampled_from(LATENCIES), st.sampled_from((None, 1500, 3000)), st.sampled_from((None, 0, 3))),
    st.tuples(st.just("withdraw"), st.integers(0, 59)),
)
# a market first (creations), then its life (anything, creations included)
history = st.builds(lambda first, then: first + then, st.lists(create, min_size=5, max_size=60),
                    st.lists(change, max_size=150))


def pricing_of(kind: str, price: float) -> dict[str, Any]:
    field = {"FIXED": "price", "PER_UNIT": "cost_per_unit", "SUBSCRIPTION": "monthly_fee",
             "AUCTION": "reserve_price"}.get(kind)
    out: dict[str, Any] = {"kind": kind}
    if field is not None:
        out[field] = price * 720 if kind == "SUBSCRIPTION" else price
    return out


def events_of(ops: list[tuple[Any, ...]]) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(event type, subject, producer, payload) per op; ops on unknown listings are refused by the reducer."""
    owner: dict[str, tuple[str, str]] = {}  # listing -> (provider, pricing kind)
    out = []
    for n, o in enumerate(ops):
        lid = f"l{o[1]:02d}"
        if o[0] == "create":
            _, _, who, cap, kind, price, uptime, latency, qty = o
            owner.setdefault(lid, (provider(who), kind))
            out.append(("market.listing_created", lid, provider(who), {
                "listing_id": lid, "provider": provider(who), "capability": cap, "pricing": pricing_of(kind, price),
                "sla": {"uptime_percent": uptime, "max_latency_ms": latency, "availability_window": "24x7",
                        "breach_penalty_percent": 10.0}, "available_quantity": qty}))
        elif lid not in owner:
            continue
        elif o[0] == "rate":
            rater = f"did:key:rater{o[2]}"
            out.append(("market.rating", lid, rater, {"listing_id": lid, "rater": rater, "stars": o[3]}))
        elif o[0] == "buy":
            buyer = f"did:key:buyer{o[2]}"
            out.append(("market.purchase", lid, buyer, {"listing_id": lid, "contract_id": f"c{n}", "buyer": buyer,
                                                        "quantity": 1, "duration_ms": 3_600_000}))
        elif o[0] == "update":
            _, _, price, uptime, latency, expires, qty = o
            who, kind = owner[lid]
            out.append(("market.listing_updated", lid, who, {
                "listing_id": lid, "provider": who, "pricing": pricing_of(kind, price),
                "sla": {"uptime_percent": uptime, "max_latency_ms": latency, "availability_window": "24x7",
                        "breach_penalty_percent": 10.0}, "available_quantity": qty, "expires_at_ms": expires}))
        else:
            out.append(("market.listing_withdrawn", lid, owner[lid][0], {"listing_id": lid, "provider": owner[lid][0]}))
    return out


def fold_all(events: list[tuple[str, str, str, dict[str, Any]]], order: list[int] | None = None) -> MemoryStore:
    store = MemoryStore()
    stores = Stores(store)
    projection = MarketProjection()
    for seq in order if order is not None else range(len(events)):
        event_type, subject, producer, payload = events[seq]
        with contextlib.suppress(InvalidEvent):
            projection.apply(stores, ctx(event_type, subject, producer, 1000, seq), payload)
    return store


def live_rows(store: MemoryStore, capability: str, now_ms: int | None) -> dict[str, dict[str, Any]]:
    """Every listing of the capability that discovery may return, read from the listing records themselves."""
    out = {}
    for _, listing in store.scan("listing/"):
        if (listing["capability"] != capability or listing["status"] != "OPEN" or listing["remaining"] == 0
                or listing["pricing"]["kind"] == "UNKNOWN"):
            continue
        if now_ms is not None and listing["expires_at_ms"] is not None and now_ms >= listing["expires_at_ms"]:
            continue
        cost = unit_cost(listing["pricing"])
        rating = listing["rating"]
        value = rating / cost if cost and cost > 0 else (math.inf if rating > 0 else 0.0)
        out[listing["listing_id"]] = {"provider": listing["provider"], "cost": cost, "value": value,
                                      "uptime": listing["sla"]["uptime_percent"],
                                      "latency": listing["sla"]["max_latency_ms"]}
    return out


def brute(rows: dict[str, dict[str, Any]], by: str, limit: int,
          trust: Callable[[str], float] | None = None) -> list[str]:
    keys: dict[str, Callable[[str], tuple[Any, ...]]] = {
        "value": lambda lid: (-rows[lid]["value"], rows[lid]["cost"], lid),
        "sla": lambda lid: (-rows[lid]["uptime"], rows[lid]["latency"], lid),
        "trust": lambda lid: (-(trust or (lambda _: 0.5))(rows[lid]["provider"]), -rows[lid]["value"],
                              rows[lid]["cost"], lid),
    }
    return sorted(rows, key=keys[by])[:limit]


def ids(found: list[dict[str, Any]]) -> list[str]:
    return [r["listing_id"] for r in found]


@settings(max_examples=80, deadline=None)
@given(history, st.sampled_from((None, 1000, 2000, 4000)), st.integers(1, 12), st.integers(1, 6), st.integers(0, 12),
       st.integers(0, 2**32 - 1))
def test_fast_find_equals_brute_force(ops: list[tuple[Any, ...]], now_ms: int | None, limit: int, n_candidates: int,
                                      exhaustive_up_to: int, seed: int) -> None:
    with tiny_chunks():
        store = fold_all(events_of(ops))
    rng = random.Random(seed)
    trust_table = {provider(n): rng.choice((0.0, 0.2, 0.5, 0.9, 1.0)) for n in range(6)}
    trust = trust_table.__getitem__
    for cap in CAPS:
        rows = live_rows(store, cap, now_ms)
        listable = live_rows(store, cap, None)
        assert listing_count(store, cap) == len(listable)
        assert [lid for lid, _ in index_rows(store, cap)] == brute(listable, "value", len(listable))
        for by in ("value", "sla"):  # exact
            assert ids(find(store, cap, by, now_ms=now_ms, limit=limit)) == brute(rows, by, limit)
        # trust, exhaustive: exact
        assert ids(find(store, cap, "trust", now_ms=now_ms, trust=trust, limit=limit, candidates=None)) == \
            brute(rows, "trust", limit, trust)
        found = find(store, cap, "trust", now_ms=now_ms, trust=trust, limit=limit, candidates=n_candidates,
                     exhaustive_up_to=exhaustive_up_to)
        assert all(r["trust"] == trust(r["provider"]) for r in found)
        n = max(n_candidates, limit)
        if len(listable) <= exhaustive_up_to or len(rows) <= n:
            # a small capability (or no more live listings than the shortlist): exact
            assert ids(found) == brute(rows, "trust", limit, trust)
        else:
            # a big one: the exact trust ranking of the shortlists (best n by value + best n by sla)
            pool = {lid: rows[lid] for by in ("value", "sla") for lid in brute(rows, by, n)}
            assert ids(found) == brute(pool, "trust", limit, trust)
        # with the same trust for everyone: the value ranking, small or big
        neutral = find(store, cap, "trust", now_ms=now_ms, limit=limit, candidates=n_candidates,
                       exhaustive_up_to=exhaustive_up_to)
        assert ids(neutral) == brute(rows, "value", limit)


@settings(max_examples=25, deadline=None)
@given(history, st.integers(0, 2**32 - 1))
def test_views_are_the_same_in_any_interleaving_of_partitions(ops: list[tuple[Any, ...]], seed: int) -> None:
    """Views are written per (capability, partition) from that partition only: a replay that interleaves lanes
    differently (each lane in order) builds the same store, byte for byte."""
    events = events_of(ops)
    lanes: dict[int, list[int]] = {}
    for seq, (_, subject, _, _) in enumerate(events):
        lanes.setdefault(zlib.crc32(subject.encode()) % PARTITIONS, []).append(seq)
    rng = random.Random(seed)
    order: list[int] = []
    queues = {k: list(v) for k, v in lanes.items()}
    while queues:
        lane = rng.choice(sorted(queues))
        order.append(queues[lane].pop(0))
        if not queues[lane]:
            del queues[lane]
    with tiny_chunks():
        live = fold_all(events)
        replay = fold_all(events, order)
    assert canonical_json(live.data) == canonical_json(replay.data)
