"""The main job's "decentralized agent marketplace" episode (spec use case 3), on the live log.

    Agent A: "I can process 1M records/day"  →  listing (price, SLA)
    Agent B: "I need this capability"        →  discovery (value / SLA / trust) → purchase
    the market worker signs the contract     →  market.contract_created (derived)
    A executes under the contract            →  commands.receipt with contract_id
    a slow provider breaks its SLA           →  market.sla_observed → BREACHED + penalty (derived)
    payments and reviews                     →  market.trade, market.rating
    plus a sealed-bid (Vickrey) auction of a scarce capability: commit, reveal, close → contract.

Everything the episode decides it reads back from the log (a replay of ``market``), and the
summary is computed from a replay through ``MarketProjection``.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import TYPE_CHECKING, Any

from swarmlog.projections.auction import auction_outcome, commitment_of
from swarmlog.projections.engine import Engine, replay
from swarmlog.projections.market import MarketProjection, analytics, clock, find, get_contract, get_listing
from swarmlog.streams.reader import plan_ranges, read_records

if TYPE_CHECKING:
    from swarmlog.infra.run import Simulation

CAPABILITY = "records.process"
SCARCE = "gpu.hour"
DAY_MS = 86_400_000


def _replay(bootstrap: str, prefix: str) -> Engine:
    return replay(read_records(bootstrap, plan_ranges(bootstrap, [prefix + "market"])), [MarketProjection()])[0]


class MarketEpisode:
    """Drives the episode with the simulation's agents (their own signing producers)."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        agents = sim.agents
        self.providers = agents[:3]
        self.buyers = agents[3:6] if len(agents) >= 6 else agents[:3]
        self.listings: dict[str, str] = {}
        self.contracts: dict[str, str] = {}  # contract id -> listing id
        self.auction_id = str(uuid.uuid4())
        self.receipts = 0
        self.notes: list[str] = []

    def _flush(self, *agents: Any) -> None:
        for agent in agents:
            agent.producer.seal()
        self.sim.kafka.flush(30)

    def _wait(self, predicate: Any, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            store = _replay(self.sim.bootstrap, self.sim.prefix).stores["market"]
            value = predicate(store)
            if value:
                return value
            time.sleep(0.3)
        return None

    def run(self, timeout_s: float = 60.0) -> None:
        sim, (a, b, c) = self.sim, self.providers
        deadline = time.monotonic() + timeout_s
        terms = [(a, "reliable", 100.0, 99.9, 200), (b, "budget", 60.0, 99.0, 150), (c, "premium", 140.0, 99.99, 80)]
        for agent, name, per_day, uptime, latency in terms:
            lid = str(uuid.uuid4())
            self.listings[name] = lid
            agent.producer.produce("market.listing_created", {
                "listing_id": lid, "provider": agent.did, "capability": CAPABILITY,
                "description": "I can process 1M records/day", "pricing": {"kind": "FIXED", "price": per_day},
                "sla": {"uptime_percent": uptime, "max_latency_ms": latency, "breach_penalty_percent": 25.0},
                "available_quantity": 10})
        closes = int(time.time() * 1000) + 1500
        a.producer.produce("market.listing_created", {
            "listing_id": self.auction_id, "provider": a.did, "capability": SCARCE, "description": "one GPU-hour",
            "pricing": {"kind": "AUCTION", "reserve_price": 5.0, "sealed_bid": True, "auction_closes_at_ms": closes},
            "sla": {"uptime_percent": 99.0, "max_latency_ms": 1000, "breach_penalty_percent": 10.0},
            "available_quantity": 1})
        self._flush(a, b, c)
        # earlier customers' reviews, then sealed bids
        for stars, buyer, name in ((4.5, self.buyers[0], "reliable"), (3.0, self.buyers[1], "budget"),
                                   (5.0, self.buyers[2], "premium")):
            buyer.producer.produce("market.rating", {"listing_id": self.listings[name], "rater": buyer.did,
                                                     "stars": stars, "review": "earlier purchase"})
        nonces: dict[str, tuple[Any, float, bytes]] = {}
        for buyer, amount in zip(self.buyers, (42.0, 35.0, 18.0), strict=False):
            bid_id, nonce = str(uuid.uuid4()), os.urandom(16)
            nonces[bid_id] = (buyer, amount, nonce)
            buyer.producer.produce("market.bid", {"listing_id": self.auction_id, "bid_id": bid_id,
                                                  "bidder": buyer.did,
                                                  "commitment": commitment_of(amount, nonce, buyer.did)})
        self._flush(*self.buyers)
        # B discovers by value (rating / cost) and buys a day; another buyer picks the best SLA
        store = self._wait(lambda s: s if len(find(s, CAPABILITY)) == 3 and get_listing(s, self.listings["premium"])
                           and get_listing(s, self.listings["premium"])["review_count"] else None, 20)
        if store is None:
            self.notes.append("listings did not appear in time")
            return
        best_value = find(store, CAPABILITY, "value")[0]
        best_sla = find(store, CAPABILITY, "sla")[0]
        for buyer, listing in ((self.buyers[0], best_value), (self.buyers[1], best_sla)):
            cid = str(uuid.uuid4())
            self.contracts[cid] = listing["listing_id"]
            buyer.producer.produce("market.purchase", {"listing_id": listing["listing_id"], "contract_id": cid,
                                                       "buyer": buyer.did, "quantity": 1, "duration_ms": DAY_MS})
        self._flush(*self.buyers)
        time.sleep(max(0.0, (closes - time.time() * 1000) / 1000 + 0.05))
        for bid_id, (buyer, amount, nonce) in list(nonces.items())[:2]:  # the third bidder never reveals
            buyer.producer.produce("market.bid_revealed", {"listing_id": self.auction_id, "bid_id": bid_id,
                                                           "bidder": buyer.did, "amount": amount, "nonce": nonce})
        self._flush(*self.buyers)
        store = self._wait(lambda s: s if all(s.get(f"bid/{self.auction_id}/{b}") and
                                              s.get(f"bid/{self.auction_id}/{b}")["revealed"]
                                              for b in list(nonces)[:2]) else None, 20)
        if store is not None:
            listing = get_listing(store, self.auction_id)
            assert listing is not None
            bids = [store.get(f"bid/{self.auction_id}/{b}") for b in listing["bids"]]
            a.producer.produce("market.auction_closed", {"listing_id": self.auction_id,
                                                         **auction_outcome(bids, 5.0, sealed=True)})
            self._flush(a)
        # the sellers execute under their contracts; the value pick runs slow and breaks its latency SLA
        by_did = {p.did: p for p in self.providers}
        store = self._wait(lambda s: s if all(get_contract(s, cid) for cid in self.contracts) else None,
                           max(1.0, deadline - time.monotonic()))
        if store is None:
            self.notes.append("contracts were not derived in time")
            return
        for n, (cid, lid) in enumerate(self.contracts.items()):
            contract = get_contract(store, cid)
            assert contract is not None
            seller = by_did[contract["seller"]]
            slow = n == 0
            for i in range(6):
                duration = contract["sla"]["max_latency_ms"] * (3 if slow and i in (2, 4) else 1) // 2
                now = int(time.time() * 1000)
                seller.producer.produce("commands.receipt", {
                    "command_id": str(uuid.uuid4()), "agent_id": seller.did, "capability": CAPABILITY,
                    "started_ms": now - duration, "finished_ms": now, "duration_ms": duration, "success": True,
                    "contract_id": cid, "units_consumed": 1})
                self.receipts += 1
            buyer = next(x for x in self.buyers if x.did == contract["buyer"])
            buyer.producer.produce("market.trade", {"contract_id": cid, "buyer": buyer.did, "seller": seller.did,
                                                    "capability": CAPABILITY, "amount": contract["total_cost"],
                                                    "quantity": contract["quantity"], "listing_id": lid})
            self._flush(seller, buyer)
        breached = self._wait(lambda s: [c for c in self.contracts
                                         if (get_contract(s, c) or {}).get("status") == "BREACHED"],
                              max(1.0, deadline - time.monotonic()))
        if not breached:
            self.notes.append("no breach derived in time")
        store = _replay(sim.bootstrap, sim.prefix).stores["market"]
        for cid, lid in self.contracts.items():
            contract = get_contract(store, cid)
            if contract is None:
                continue
            buyer = next(x for x in self.buyers if x.did == contract["buyer"])
            ok = contract["status"] == "ACTIVE"
            if ok:
                buyer.producer.produce("market.contract_state_changed", {
                    "contract_id": cid, "previous_status": "ACTIVE", "status": "FULFILLED", "reason": "day done"})
            buyer.producer.produce("market.rating", {"listing_id": lid, "rater": buyer.did,
                                                     "stars": 5.0 if ok else 1.0, "contract_id": cid,
                                                     "review": "as promised" if ok else "too slow"})
            self._flush(buyer)

    def summary(self, bootstrap: str, prefix: str) -> dict[str, Any]:
        engine = _replay(bootstrap, prefix)
        store = engine.stores["market"]
        now = clock(store)
        contracts = [get_contract(store, cid, now) for cid in self.contracts]
        auction = get_listing(store, self.auction_id) or {}
        return {
            "listings": len(self.listings) + 1,
            "best_value": [r["listing_id"] for r in find(store, CAPABILITY, "value")][:3],
            "best_sla": [r["listing_id"] for r in find(store, CAPABILITY, "sla")][:3],
            "contracts": {c["contract_id"]: {"status": c["status"], "penalty": c["penalty_applied"],
                                             "p99_ms": c["measured_latency_p99_ms"], "paid": c["paid"]}
                          for c in contracts if c is not None},
            "auction": auction.get("auction"),
            "receipts": self.receipts,
            "analytics": analytics(store),
            "refused": {k: v for k, v in engine.counts.items()
                        if k not in ("authenticated", "applied", "pending", "not-folded")},
            "notes": self.notes,
        }

