"""Market projection and auctions: pricing, discovery, purchases, SLA breach, lifecycle, Vickrey, Dutch tasks.

Events are real envelopes built by ``ChainWriter`` (one per identity) and folded with
``fold``; derived events are re-emitted by a "worker" identity and folded in turn, as a
live worker does.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import random
import zlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarmlog.projections.auction import (
    auction_outcome,
    commitment_of,
)
from swarmlog.projections.base import Derived, InvalidEvent, MemoryStore, Stores, canonical_json, fold, snapshot
from swarmlog.projections.market import (
    TRANSITIONS,
    MarketProjection,
    analytics,
    auction_contract_id,
    find,
    get_contract,
    get_listing,
    total_cost,
)
from swarmlog.streams.chain import ChainWriter
from swarmlog.streams.codec import default_store, encode_body
from swarmlog.streams.envelope import EnvelopeCodec, Event
from swarmlog.streams.identity import Identity

SCHEMAS = default_store()
CODEC = EnvelopeCodec(SCHEMAS)
PARTITIONS = 4
IDS = [Identity.generate(f"market-{i}") for i in range(6)]
DIDS = [i.did for i in IDS]
WORKER = 5
SLA = {"uptime_percent": 99.0, "max_latency_ms": 100, "availability_window": "24x7", "breach_penalty_percent": 10.0}


def fixed(price: float) -> dict[str, Any]:
    return {"kind": "FIXED", "price": price}


class Market:
    """Agents writing market events; folds them (and what they derive) into one store."""

    def __init__(self) -> None:
        self.writers = [ChainWriter(identity, SCHEMAS) for identity in IDS]
        self.store = MemoryStore()
        self.projection = MarketProjection()
        self.log: list[tuple[Event, dict[str, Any]]] = []
        self.dead: list[str] = []

    def event(self, who: int, event_type: str, body: dict[str, Any], ts: int) -> tuple[Event, dict[str, Any]]:
        entry = SCHEMAS.for_event_type(event_type)
        subject = str(body[entry.subject_field])
        topic = entry.topic or "market"
        _, value = self.writers[who].append(entry, encode_body(entry, body), subject, topic,
                                            zlib.crc32(subject.encode()) % PARTITIONS, timestamp_ms=ts)
        event = CODEC.decode(value)
        return event, event.decode_payload(SCHEMAS)

    def send(self, who: int, event_type: str, body: dict[str, Any], ts: int = 1000) -> list[Derived]:
        """Fold one event and, recursively, what it derives (emitted by the worker identity)."""
        event, payload = self.event(who, event_type, body, ts)
        self.log.append((event, payload))
        derived = fold(self.projection, Stores(self.store), event, payload) or []
        out = list(derived)
        for d in derived:
            out += self.send(WORKER, d.event_type, d.payload, ts)
        return out

    def refused(self, who: int, event_type: str, body: dict[str, Any], ts: int = 1000) -> str:
        before = snapshot(self.store)
        with pytest.raises(InvalidEvent) as info:
            self.send(who, event_type, body, ts)
        assert snapshot(self.store) == before, "a refused event changed the state"
        return info.value.reason

    def list(self, who: int, lid: str, cap: str = "data.etl", pricing: dict[str, Any] | None = None,
             sla: dict[str, Any] | None = None, quantity: int | None = None, ts: int = 1000) -> None:
        self.send(who, "market.listing_created", {
            "listing_id": lid, "provider": DIDS[who], "capability": cap, "pricing": pricing or fixed(1.0),
            "sla": sla or SLA, "available_quantity": quantity}, ts)

    def buy(self, who: int, lid: str, cid: str, quantity: int = 1, ts: int = 2000,
            duration: int = 3_600_000) -> list[Derived]:
        return self.send(who, "market.purchase", {"listing_id": lid, "contract_id": cid, "buyer": DIDS[who],
                                                  "quantity": quantity, "duration_ms": duration}, ts)

    def receipt(self, who: int, cid: str, n: int, duration: int, success: bool = True, ts: int = 3000) -> list[Derived]:
        return self.send(who, "commands.receipt", {
            "command_id": f"cmd-{cid}-{n}", "agent_id": DIDS[who], "capability": "data.etl",
            "started_ms": ts - duration, "finished_ms": ts, "duration_ms": duration, "success": success,
            "contract_id": cid}, ts)


# ----------------------------------------------------------------------------- pricing and discovery
def test_pricing_engine_follows_the_spec() -> None:
    assert total_cost(fixed(2.5), 4, 1) == 10.0
    assert total_cost({"kind": "PER_UNIT", "cost_per_unit": 0.05}, 1000, 1) == pytest.approx(50.0)
    # subscription: monthly_fee / (30 x 24) per hour
    assert total_cost({"kind": "SUBSCRIPTION", "monthly_fee": 720.0}, 1, 2 * 3_600_000) == 2.0
    with pytest.raises(InvalidEvent):
        total_cost({"kind": "AUCTION", "reserve_price": 1.0}, 1, 1)


def test_discovery_ranks_by_value_sla_and_trust() -> None:
    m = Market()
    m.list(0, "cheap", pricing=fixed(0.05), sla={**SLA, "uptime_percent": 95.0})
    m.list(1, "solid", pricing=fixed(1.0), sla={**SLA, "uptime_percent": 99.9, "max_latency_ms": 50})
    m.list(2, "fast", pricing=fixed(0.5), sla={**SLA, "uptime_percent": 99.9, "max_latency_ms": 20})
    m.list(3, "other", cap="ml.inference")
    for rater, lid, stars in ((4, "cheap", 3.0), (4, "solid", 5.0), (4, "fast", 4.0), (3, "fast", 5.0)):
        m.send(rater, "market.rating", {"listing_id": lid, "rater": DIDS[rater], "stars": stars})
    assert get_listing(m.store, "fast")["rating"] == 4.5  # running mean
    by_value = [r["listing_id"] for r in find(m.store, "data.etl", "value")]
    assert by_value == ["cheap", "fast", "solid"]  # 3/0.05 > 4.5/0.5 > 5/1
    assert [r["listing_id"] for r in find(m.store, "data.etl", "sla")] == ["fast", "solid", "cheap"]
    assert [r["listing_id"] for r in find(m.store, "data.etl", "trust")] == by_value  # neutral trust: value decides
    trust = {DIDS[1]: 0.95, DIDS[0]: 0.1, DIDS[2]: 0.5}
    ranked = find(m.store, "data.etl", "trust", trust=lambda did: trust[did])
    assert [(r["listing_id"], r["trust"]) for r in ranked] == [("solid", 0.95), ("fast", 0.5), ("cheap", 0.1)]
    assert [r["listing_id"] for r in find(m.store, "ml.inference")] == ["other"]
    assert find(m.store, "nothing.here") == []


def test_withdrawn_expired_and_sold_out_listings_are_not_found() -> None:
    m = Market()
    m.list(0, "a", quantity=2)
    m.list(1, "b")
    m.send(1, "market.listing_updated", {"listing_id": "b", "provider": DIDS[1], "pricing": fixed(2.0),
                                         "sla": SLA, "expires_at_ms": 5000})
    assert {r["listing_id"] for r in find(m.store, "data.etl", now_ms=4000)} == {"a", "b"}
    assert {r["listing_id"] for r in find(m.store, "data.etl", now_ms=5000)} == {"a"}
    m.buy(2, "a", "c1")
    m.buy(3, "a", "c2")
    assert get_listing(m.store, "a")["remaining"] == 0
    assert [r["listing_id"] for r in find(m.store, "data.etl", now_ms=1)] == ["b"]
    m.send(1, "market.listing_withdrawn", {"listing_id": "b", "provider": DIDS[1]})
    assert find(m.store, "data.etl") == []


# ----------------------------------------------------------------------------- purchases
def test_purchase_derives_a_priced_contract_and_enforces_quantity_and_quota() -> None:
    m = Market()
    m.list(0, "gpu", pricing={"kind": "PER_UNIT", "cost_per_unit": 2.0}, quantity=4)
    [created, *_] = m.buy(1, "gpu", "c1", quantity=2)
    assert created.event_type == "market.contract_created" and created.subject == "c1"
    assert created.payload["total_cost"] == 4.0 and created.payload["seller"] == DIDS[0]
    contract = get_contract(m.store, "c1", now_ms=2001)
    assert contract is not None and contract["effective_status"] == "ACTIVE"
    assert contract["expires_at_ms"] == 2000 + 3_600_000
    assert get_contract(m.store, "c1", now_ms=2000 + 3_600_000)["effective_status"] == "EXPIRED"
    # fair share 0.5 of 4 units: buyer 1 already holds 2
    assert m.refused(1, "market.purchase", {"listing_id": "gpu", "contract_id": "c2", "buyer": DIDS[1],
                                            "duration_ms": 10}) == "over-quota"
    m.buy(2, "gpu", "c3", quantity=2)
    assert m.refused(3, "market.purchase", {"listing_id": "gpu", "contract_id": "c4", "buyer": DIDS[3],
                                            "duration_ms": 10}) == "sold-out"
    assert m.refused(0, "market.purchase", {"listing_id": "gpu", "contract_id": "c5", "buyer": DIDS[0],
                                            "duration_ms": 10}) == "self-dealing"
    assert m.refused(1, "market.purchase", {"listing_id": "nope", "contract_id": "c6", "buyer": DIDS[1],
                                            "duration_ms": 10}) == "unknown-listing"
    assert m.refused(2, "market.purchase", {"listing_id": "gpu", "contract_id": "c7", "buyer": DIDS[1],
                                            "duration_ms": 10}) == "producer-mismatch"


def test_listing_refusals() -> None:
    m = Market()
    m.list(0, "a")
    body = {"listing_id": "a", "provider": DIDS[0], "capability": "x.y", "pricing": fixed(1), "sla": SLA}
    assert m.refused(0, "market.listing_created", body) == "duplicate-listing"
    assert m.refused(1, "market.listing_created", {**body, "listing_id": "b"}) == "producer-mismatch"
    assert m.refused(0, "market.listing_created", {**body, "listing_id": "c", "sla": {**SLA, "uptime_percent": 101.0}}
                     ) == "invalid-payload"
    assert m.refused(0, "market.listing_created", {**body, "listing_id": "d", "pricing": {"kind": "FIXED"}}
                     ) == "invalid-payload"
    assert m.refused(1, "market.listing_withdrawn", {"listing_id": "a", "provider": DIDS[1]}) == "producer-mismatch"
    assert m.refused(4, "market.rating", {"listing_id": "a", "rater": DIDS[4], "stars": 6.0}) == "invalid-payload"


# ----------------------------------------------------------------------------- SLA monitoring and lifecycle
def test_receipts_breach_the_sla_through_derived_events_and_apply_the_penalty() -> None:
    m = Market()
    m.list(0, "etl", pricing=fixed(10.0))
    m.buy(1, "etl", "c1", quantity=10)  # total 100
    for n in range(4):
        assert m.receipt(0, "c1", n, duration=40) == [Derived("market.sla_observed", {
            "contract_id": "c1", "command_id": f"cmd-c1-{n}", "agent_id": DIDS[0], "capability": "data.etl",
            "duration_ms": 40, "success": True, "timed_out": False, "finished_ms": 3000, "units_consumed": 1,
        }, subject="c1")]
    assert m.receipt(2, "c1", 99, duration=900) and get_contract(m.store, "c1")["obs"]["foreign"] == 1  # not the seller
    derived = m.receipt(0, "c1", 4, duration=400)  # fifth sample: p99 = 400 ms > 100 ms
    [breach] = [d for d in derived if d.event_type == "market.contract_state_changed"]
    assert breach.payload["status"] == "BREACHED" and breach.payload["penalty_applied"] == 10.0
    assert breach.payload["measured_latency_ms"] == 400.0 and breach.payload["measured_uptime_percent"] == 100.0
    contract = get_contract(m.store, "c1")
    assert contract["status"] == "BREACHED" and contract["penalty_applied"] == 10.0
    assert [h["status"] for h in contract["history"]] == ["ACTIVE", "BREACHED"]
    assert m.receipt(0, "c1", 5, duration=999) == [Derived("market.sla_observed", {
        "contract_id": "c1", "command_id": "cmd-c1-5", "agent_id": DIDS[0], "capability": "data.etl",
        "duration_ms": 999, "success": True, "timed_out": False, "finished_ms": 3000, "units_consumed": 1,
    }, subject="c1")]  # no second breach
    assert get_contract(m.store, "c1")["obs"]["late"] == 1
    stats = analytics(m.store, "data.etl")["by_capability"]["data.etl"]
    assert (stats["contracts"], stats["breaches"], stats["penalties"]) == (1, 1, 10.0)


def test_uptime_breach_and_a_healthy_contract_is_fulfilled() -> None:
    m = Market()
    m.list(0, "etl", pricing=fixed(1.0), sla={**SLA, "uptime_percent": 90.0, "max_latency_ms": 1000})
    m.buy(1, "etl", "bad")
    m.buy(2, "etl", "good")
    for n in range(5):
        m.receipt(0, "bad", n, duration=10, success=n != 2)  # 80 % < 90 %
        m.receipt(0, "good", n, duration=10)
    assert get_contract(m.store, "bad")["status"] == "BREACHED"
    assert get_contract(m.store, "good")["status"] == "ACTIVE"
    m.send(1, "market.contract_state_changed", {"contract_id": "good", "previous_status": "ACTIVE",
                                                 "status": "FULFILLED"})
    assert get_contract(m.store, "good")["status"] == "FULFILLED"


def test_breach_claims_are_checked_against_the_folded_receipts() -> None:
    m = Market()
    m.list(0, "etl")
    m.buy(1, "etl", "c1")
    body = {"contract_id": "c1", "previous_status": "ACTIVE", "status": "BREACHED", "penalty_applied": 0.1}
    assert m.refused(1, "market.contract_state_changed", body) == "unjustified-breach"
    assert m.refused(1, "market.contract_state_changed", {**body, "previous_status": "SUSPENDED"}) == "stale-transition"
    assert m.refused(1, "market.contract_state_changed", {**body, "status": "EXPIRED", "penalty_applied": 0.0}
                     ) == "not-expired"
    m.send(1, "market.contract_state_changed", {**body, "status": "EXPIRED", "penalty_applied": 0.0},
           ts=2000 + 3_600_000)
    assert m.refused(1, "market.contract_state_changed", {**body, "previous_status": "EXPIRED", "status": "ACTIVE",
                                                           "penalty_applied": 0.0}) == "illegal-transition"


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(["ACTIVE", "SUSPENDED", "FULFILLED", "EXPIRED", "CANCELLED"]), max_size=8))
def test_only_legal_transitions_are_ever_applied(targets: list[str]) -> None:
    m = Market()
    m.list(0, "etl")
    m.buy(1, "etl", "c")
    status = "ACTIVE"
    for target in targets:
        body = {"contract_id": "c", "previous_status": status, "status": target}
        if target in TRANSITIONS[status]:
            m.send(1, "market.contract_state_changed", body, ts=10**13)
            status = target
        else:
            assert m.refused(1, "market.contract_state_changed", body, ts=10**13) == "illegal-transition"
        assert get_contract(m.store, "c")["status"] == status
    history = [h["status"] for h in get_contract(m.store, "c")["history"]]
    assert all(b in TRANSITIONS[a] for a, b in itertools.pairwise(history))


def test_trades_feed_volume_and_average_price() -> None:
    m = Market()
    m.list(0, "etl", pricing=fixed(5.0))
    m.list(0, "ml", cap="ml.inference", pricing=fixed(1.0))
    m.buy(1, "etl", "c1", quantity=2)
    m.buy(2, "ml", "c2")
    trades = (("c1", "data.etl", 6.0, 1), ("c1", "data.etl", 4.0, 1), ("c2", "ml.inference", 1.0, 1))
    for cid, cap, amount, qty in trades:
        buyer = get_contract(m.store, cid)["buyer"]
        m.send(1, "market.trade", {"contract_id": cid, "buyer": buyer, "seller": DIDS[0], "capability": cap,
                                   "amount": amount, "quantity": qty})
    report = analytics(m.store)
    assert report["total_volume"] == 11.0 and report["trade_count"] == 3
    assert report["by_capability"]["data.etl"]["avg_price"] == 5.0
    assert get_contract(m.store, "c1")["paid"] == 10.0
    assert m.refused(1, "market.trade", {"contract_id": "c1", "buyer": DIDS[3], "seller": DIDS[0],
                                         "capability": "data.etl", "amount": 1.0}) == "contract-mismatch"
    assert m.refused(1, "market.trade", {"contract_id": "zz", "buyer": DIDS[3], "seller": DIDS[0],
                                         "capability": "data.etl", "amount": 1.0}) == "unknown-contract"


# ----------------------------------------------------------------------------- Vickrey
def sealed_auction(m: Market, reserve: float = 10.0) -> None:
    m.list(0, "auc", pricing={"kind": "AUCTION", "reserve_price": reserve, "sealed_bid": True,
                              "auction_closes_at_ms": 5000}, quantity=1)


def commit(m: Market, who: int, bid: str, amount: float, ts: int = 2000) -> bytes:
    nonce = os.urandom(16)
    m.send(who, "market.bid", {"listing_id": "auc", "bid_id": bid, "bidder": DIDS[who],
                               "commitment": commitment_of(amount, nonce, DIDS[who])}, ts)
    return nonce


def test_sealed_second_price_auction_end_to_end() -> None:
    m = Market()
    sealed_auction(m)
    nonces = {1: commit(m, 1, "b1", 50.0), 2: commit(m, 2, "b2", 30.0), 3: commit(m, 3, "b3", 80.0),
              4: commit(m, 4, "b4", 5.0)}
    assert m.refused(1, "market.bid_revealed", {"listing_id": "auc", "bid_id": "b1", "bidder": DIDS[1],
                                                "amount": 50.0, "nonce": nonces[1]}, ts=4000) == "reveal-too-early"
    assert m.refused(2, "market.bid", {"listing_id": "auc", "bid_id": "late", "bidder": DIDS[2],
                                       "commitment": b"\0" * 32}, ts=5000) == "bid-too-late"
    for who, amount in ((1, 50.0), (2, 30.0), (4, 5.0)):  # bidder 3 (the highest) never reveals
        m.send(who, "market.bid_revealed", {"listing_id": "auc", "bid_id": f"b{who}", "bidder": DIDS[who],
                                            "amount": amount, "nonce": nonces[who]}, 6000)
    assert m.refused(3, "market.bid_revealed", {"listing_id": "auc", "bid_id": "b3", "bidder": DIDS[3],
                                                "amount": 81.0, "nonce": nonces[3]}, 6000) == "commitment-mismatch"
    wrong = {"listing_id": "auc", "winning_bid_id": "b3", "winner": DIDS[3], "clearing_price": 50.0, "bid_count": 3}
    assert m.refused(0, "market.auction_closed", wrong, 7000) == "auction-mismatch"
    right = {"listing_id": "auc", "winning_bid_id": "b1", "winner": DIDS[1], "clearing_price": 30.0, "bid_count": 2}
    assert m.refused(1, "market.auction_closed", right, 7000) == "producer-mismatch"
    derived = m.send(0, "market.auction_closed", right, 7000)
    assert derived[0].event_type == "market.contract_created"
    contract = get_contract(m.store, auction_contract_id("auc", "b1"))
    assert contract is not None and contract["total_cost"] == 30.0 and contract["buyer"] == DIDS[1]
    assert get_listing(m.store, "auc")["status"] == "CLOSED"
    assert m.refused(0, "market.auction_closed", right, 8000) == "auction-closed"


bids_strategy = st.lists(st.tuples(st.integers(0, 1000), st.booleans()), max_size=12)


@settings(max_examples=200, deadline=None)
@given(bids_strategy, st.one_of(st.none(), st.integers(0, 500)))
def test_vickrey_properties(raw: list[tuple[int, bool]], reserve: int | None) -> None:
    bids = [{"bid_id": f"b{i}", "bidder": f"did:{i}", "amount": float(a), "revealed": r}
            for i, (a, r) in enumerate(raw)]
    out = auction_outcome(bids, None if reserve is None else float(reserve), sealed=True)
    floor = float(reserve or 0)
    valid = sorted((b["amount"] for b in bids if b["revealed"] and b["amount"] >= floor), reverse=True)
    assert out["bid_count"] == len(valid)
    if not valid:
        assert out == {"winning_bid_id": None, "winner": None, "clearing_price": None, "bid_count": 0}
        return
    winner = next(b for b in bids if b["bid_id"] == out["winning_bid_id"])
    assert winner["revealed"], "an unrevealed bid won"
    assert winner["amount"] == valid[0]  # exactly one winner: the highest revealed bid
    assert out["clearing_price"] == (valid[1] if len(valid) > 1 else floor)  # second price (or reserve)
    assert out["clearing_price"] <= winner["amount"]
    # ties go to the earliest bid
    assert winner == next(b for b in bids if b["revealed"] and b["amount"] == valid[0])


def test_open_auction_needs_increments_and_pays_own_bid() -> None:
    m = Market()
    m.list(0, "auc", pricing={"kind": "AUCTION", "reserve_price": 10.0, "min_increment": 5.0})
    m.send(1, "market.bid", {"listing_id": "auc", "bid_id": "b1", "bidder": DIDS[1], "amount": 10.0})
    assert m.refused(2, "market.bid", {"listing_id": "auc", "bid_id": "b2", "bidder": DIDS[2], "amount": 12.0}
                     ) == "bid-too-low"
    m.send(2, "market.bid", {"listing_id": "auc", "bid_id": "b2", "bidder": DIDS[2], "amount": 15.0})
    m.send(0, "market.auction_closed", {"listing_id": "auc", "winning_bid_id": "b2", "winner": DIDS[2],
                                        "clearing_price": 15.0, "bid_count": 2})


# ----------------------------------------------------------------------------- determinism
def scenario() -> Market:
    m = Market()
    m.list(0, "etl", pricing=fixed(2.0), quantity=6)
    m.list(1, "etl2", pricing={"kind": "PER_UNIT", "cost_per_unit": 0.5})
    sealed_auction(m)
    n1 = commit(m, 1, "b1", 40.0)
    n2 = commit(m, 2, "b2", 20.0)
    for who, amount, nonce in ((1, 40.0, n1), (2, 20.0, n2)):
        m.send(who, "market.bid_revealed", {"listing_id": "auc", "bid_id": f"b{who}", "bidder": DIDS[who],
                                            "amount": amount, "nonce": nonce}, 6000)
    m.send(0, "market.auction_closed", {"listing_id": "auc", "winning_bid_id": "b1", "winner": DIDS[1],
                                        "clearing_price": 20.0, "bid_count": 2}, 7000)
    for i, buyer in enumerate((2, 3, 4)):
        m.buy(buyer, "etl", f"c{i}", quantity=2)
    for n in range(6):
        m.receipt(0, "c0", n, duration=500 if n == 3 else 20)
        m.receipt(0, "c1", n, duration=20)
    m.send(4, "market.rating", {"listing_id": "etl", "rater": DIDS[4], "stars": 4.0})
    return m


def test_replay_in_any_interleaving_of_partitions_gives_the_same_state() -> None:
    """Fold the recorded log (derived events included) per partition in random interleavings, twice."""
    m = scenario()
    expected = canonical_json(snapshot(m.store))
    assert get_contract(m.store, "c0")["status"] == "BREACHED"
    lanes: dict[str, list[tuple[Event, dict[str, Any]]]] = {}
    for event, payload in m.log:
        if not event.event_type.startswith("swarm."):
            lanes.setdefault(event.lane, []).append((event, payload))
    for seed in range(5):
        rng = random.Random(seed)
        queues = {k: list(v) for k, v in lanes.items()}
        store = MemoryStore()
        projection = MarketProjection()
        while queues:
            lane = rng.choice(sorted(queues))
            event, payload = queues[lane].pop(0)
            for _ in range(rng.choice((1, 2))):  # redelivery is harmless
                with contextlib.suppress(InvalidEvent):
                    fold(projection, Stores(store), event, payload)
            if not queues[lane]:
                del queues[lane]
        assert canonical_json(snapshot(store)) == expected


def test_value_ranking_handles_free_and_unrated_listings() -> None:
    m = Market()
    m.list(0, "free", pricing=fixed(0.0))
    m.list(1, "paid", pricing=fixed(1.0))
    assert [r["value"] for r in find(m.store, "data.etl")] == [0.0, 0.0]
    m.send(2, "market.rating", {"listing_id": "free", "rater": DIDS[2], "stars": 1.0})
    top = find(m.store, "data.etl")[0]
    assert top["listing_id"] == "free" and math.isinf(top["value"])
