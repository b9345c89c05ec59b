"""Registry projection: records, the capability index, expiry, update rules, refusals, idempotence.

Events are real envelopes: payloads are Avro-encoded and chained by ``ChainWriter`` (one
producer stream per producer name, partition = crc32(subject) % 2 as every swarmlog
writer does), decoded back with ``EnvelopeCodec`` and folded with ``base.fold``. The
helpers here (``Fabric``, payload builders, invariant checks) are shared with
``test_routing.py``.
"""

from __future__ import annotations

import json
import math
import random
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swarmlog.projections.base import (
    Derived,
    EventContext,
    InvalidEvent,
    MemoryStore,
    Projection,
    StateStore,
    Stores,
    canonical_json,
    fold,
    snapshot,
)
from swarmlog.projections.registry import (
    ACTIVE,
    BUCKET_MS,
    DEREGISTERED,
    EXPIRED,
    WINDOW_BUCKETS,
    RegistryProjection,
    best_fit,
    capacity_factor,
    clock,
    find_by_capability,
    fit_bucket,
    fitness,
    fitness_of,
    get_agent,
    latency_factor,
    measure,
    obs_key,
    ranked,
    routable_health,
)
from swarmlog.projections.routing import RoutingProjection, choose
from swarmlog.streams.chain import ChainWriter
from swarmlog.streams.codec import default_store, encode_body
from swarmlog.streams.envelope import EnvelopeCodec, Event
from swarmlog.streams.identity import Identity

STORE = default_store()
CODEC = EnvelopeCodec(STORE)
PARTITIONS = 2
T0 = 1_700_000_000_000
_IDENTITY: list[Identity] = []


def identity() -> Identity:
    """One signing identity for every test stream (generating one costs ~20 ms); streams differ by stream id."""
    if not _IDENTITY:
        _IDENTITY.append(Identity.generate("projection-tests"))
    return _IDENTITY[0]


# ---------------------------------------------------------------------------- payload builders
def registered(agent_id: str, caps: list[str], max_concurrency: int = 4, health: float = 1.0,
               latency: float | None = None, reliability: float | None = None) -> dict[str, Any]:
    return {"agent_id": agent_id, "address": f"{agent_id}.local:7000", "capabilities": caps,
            "max_concurrency": max_concurrency, "health_score": health, "latency_ms": latency,
            "reliability": reliability, "region": "eu-west-1", "metadata": {"version": "1"}}


def heartbeat(agent_id: str, health: float = 1.0, load: int = 0, latency: float = 50.0,
              reliability: float | None = None, max_concurrency: int | None = None,
              interval_ms: int = 0) -> dict[str, Any]:
    return {"agent_id": agent_id, "health_score": health, "current_load": load, "latency_ms": latency,
            "reliability": reliability, "max_concurrency": max_concurrency, "interval_ms": interval_ms}


def health_changed(agent_id: str, status: str, score: float) -> dict[str, Any]:
    return {"agent_id": agent_id, "previous_status": "UNKNOWN", "status": status, "health_score": score}


def deregistered(agent_id: str, reason: str = "SHUTDOWN") -> dict[str, Any]:
    return {"agent_id": agent_id, "reason": reason}


def requested(command_id: str, capability: str, strategy: str = "BEST_FIT", target: str | None = None,
              **extra: Any) -> dict[str, Any]:
    return {"command_id": command_id, "capability": capability, "args": b"{}", "requester": "did:key:requester",
            "strategy": strategy, "target_agent": target, **extra}


def receipt(command_id: str, agent_id: str, capability: str, duration: int = 40, success: bool = True,
            timed_out: bool = False, error_rate: float = 0.0, finished: int | None = None) -> dict[str, Any]:
    finished = duration if finished is None else finished
    return {"command_id": command_id, "agent_id": agent_id, "capability": capability,
            "started_ms": max(0, finished - duration), "finished_ms": finished, "duration_ms": duration,
            "success": success, "timed_out": timed_out, "error_rate": error_rate}


# ---------------------------------------------------------------------------- log + fold harness
@dataclass(frozen=True)
class Delivery:
    """One decoded, authentic-looking event and its decoded payload."""

    event: Event
    payload: dict[str, Any]


Folder = Callable[[Projection, Stores, Event, dict[str, Any]], "list[Derived] | None"]
Result = dict[str, "list[Derived] | InvalidEvent | None"]


class Fabric:
    """Registry + routing stores, real envelopes, and the derived-event loop (routed → registry)."""

    def __init__(self, ttl_ms: int = 30_000, folder: Folder = fold) -> None:
        self.registry_store = MemoryStore()
        self.routing_store = MemoryStore()
        self.registry = RegistryProjection(ttl_ms)
        self.routing = RoutingProjection()
        self.targets: list[tuple[Projection, Stores]] = [
            (self.registry, Stores(self.registry_store)),
            (self.routing, Stores(self.routing_store, {"registry": self.registry_store})),
        ]
        self.folder = folder
        self.writers: dict[str, ChainWriter] = {}
        self.now = T0
        self.log: list[Delivery] = []
        self.outcomes: list[Result] = []  # the first delivery's result, per log entry

    # -- building events
    def make(self, producer: str, event_type: str, payload: dict[str, Any], ts: int | None = None) -> Delivery:
        entry = STORE.for_event_type(event_type)
        assert entry.subject_field and entry.topic
        subject = str(payload[entry.subject_field])
        writer = self.writers.get(producer)
        if writer is None:
            writer = self.writers[producer] = ChainWriter(identity(), STORE)
        if ts is None:
            self.now += 1
            ts = self.now
        partition = zlib.crc32(subject.encode()) % PARTITIONS
        _ref, value = writer.append(entry, encode_body(entry, payload), subject, entry.topic, partition,
                                    timestamp_ms=ts)
        event = CODEC.decode(value)
        return Delivery(event, event.decode_payload(STORE))

    # -- folding
    def deliver(self, delivery: Delivery) -> Result:
        results: Result = {}
        for projection, stores in self.targets:
            if delivery.event.event_type in projection.event_types:
                try:
                    results[projection.name] = self.folder(projection, stores, delivery.event, delivery.payload)
                except InvalidEvent as exc:
                    results[projection.name] = exc
        return results

    def emit(self, producer: str, event_type: str, payload: dict[str, Any], ts: int | None = None,
             feedback: bool = True) -> Result:
        """Build, log and fold one event; with ``feedback``, derived events are logged and folded too
        (written by a 'router' stream), as the live worker's output comes back from Kafka."""
        delivery = self.make(producer, event_type, payload, ts)
        results = self.record(delivery)
        if feedback:
            for outcome in results.values():
                for derived in outcome if isinstance(outcome, list) else []:
                    self.record(self.make("router", derived.event_type, derived.payload))
        return results

    def record(self, delivery: Delivery) -> Result:
        self.log.append(delivery)
        results = self.deliver(delivery)
        self.outcomes.append(results)
        return results

    # -- shorthands
    def tick(self, ms: int) -> None:
        self.now += ms

    def register(self, agent_id: str, caps: list[str], **kw: Any) -> Result:
        return self.emit(agent_id, "agents.registered", registered(agent_id, caps, **kw))

    def heartbeat(self, agent_id: str, **kw: Any) -> Result:
        return self.emit(agent_id, "agents.heartbeat", heartbeat(agent_id, **kw))

    def request(self, command_id: str, capability: str, strategy: str = "BEST_FIT", target: str | None = None,
                feedback: bool = True, **extra: Any) -> list[Derived]:
        results = self.emit("requester", "commands.requested", requested(command_id, capability, strategy, target,
                                                                        **extra), feedback=feedback)
        outcome = results["routing"]
        if isinstance(outcome, InvalidEvent):
            raise outcome
        assert outcome is not None
        return outcome

    def receipt(self, command_id: str, agent_id: str, capability: str, **kw: Any) -> Result:
        return self.emit(agent_id, "commands.receipt", receipt(command_id, agent_id, capability, **kw))

    def agent(self, agent_id: str) -> dict[str, Any]:
        rec = get_agent(self.registry_store, agent_id)
        assert rec is not None
        return rec

    def occupy(self, agent_id: str, n: int, capability: str = "db.query") -> None:
        """Route ``n`` commands to ``agent_id`` (pinned requests): its load estimate grows by n."""
        for _ in range(n):
            self.now += 1
            d = self.request(f"busy-{agent_id}-{self.now}", capability, target=agent_id)
            assert [x.event_type for x in d] == ["commands.routed"], d


def frozen(store: MemoryStore, marks: bool = True) -> str:
    """Exact text of a store (with the idempotence marks, unless ``marks`` is False).

    A refusal advances the mark of its (stream, lane) and writes nothing else, so "refused
    without writing" compares ``frozen(store, marks=False)``.
    """
    data = store.data if marks else snapshot(store)
    return json.dumps(data, sort_keys=True, default=repr)


def check_registry(store: StateStore) -> None:
    """Registry invariants: valid values, stored fitness = formula, index = capabilities of the ACTIVE agents."""
    data = snapshot(store)
    canonical_json(data)  # JSON-compatible, no NaN
    now = data.get("clock/now_ms", 0)
    expected: dict[str, list[str]] = {}
    expected_fit: dict[str, list[list[Any]]] = {}
    for key, obs in data.items():
        if key.startswith("obs/"):
            assert obs["receipts"] == obs["successes"] + obs["failures"]
            assert obs["buckets"] == sorted(obs["buckets"])
            assert len({row[0] for row in obs["buckets"]}) == len(obs["buckets"])
            if obs["buckets"]:
                assert obs["buckets"][0][0] > obs["buckets"][-1][0] - WINDOW_BUCKETS
            assert sum(row[1] for row in obs["buckets"]) <= obs["receipts"]
    for key, rec in data.items():
        if not key.startswith("agent/"):
            continue
        assert key == f"agent/{rec['agent_id']}"
        # measurements are a function of the agents-partition fields and the observations
        assert {k: rec[k] for k in measure(rec, data.get(obs_key(rec["agent_id"])))} == measure(
            rec, data.get(obs_key(rec["agent_id"])))
        assert rec["load"] >= 0
        assert 0.0 <= rec["health"] <= 1.0
        assert 0.0 <= rec["reliability"] <= 1.0
        assert rec["latency_ms"] >= 0
        assert rec["max_concurrency"] >= 1
        assert rec["fitness"] == fitness(rec)
        assert 0.0 <= rec["fitness"] <= 1.0
        assert rec["capabilities"] == sorted(set(rec["capabilities"]))
        assert rec["last_seen_ms"] <= now
        assert rec["status"] in (ACTIVE, DEREGISTERED)
        if rec["status"] == ACTIVE:
            for cap in rec["capabilities"]:
                expected.setdefault(cap, []).append(rec["agent_id"])
                if routable_health(rec) and rec["load"] < rec["max_concurrency"]:
                    expected_fit.setdefault(cap, []).append([-rec["fitness"], rec["agent_id"]])
    index = {key[len("cap/"):]: ids for key, ids in data.items() if key.startswith("cap/")}
    assert index == {cap: sorted(ids) for cap, ids in expected.items()}
    views: dict[str, list[list[Any]]] = {}
    for cap, buckets in ((k[len("fitb/"):], v) for k, v in data.items() if k.startswith("fitb/")):
        assert buckets == sorted(set(buckets))
        views[cap] = []
        for bucket in buckets:
            rows = data[f"fit/{bucket:03d}/{cap}"]
            assert rows and all(fit_bucket(row[0]) == bucket for row in rows)
            views[cap].extend(rows)
    assert views == {cap: sorted(rows) for cap, rows in expected_fit.items()}
    assert sum(k.startswith("fit/") for k in data) == sum(len(v) for k, v in data.items() if k.startswith("fitb/"))
    for cap in index:  # the O(1) best-fit query agrees with the router's full scan
        best = best_fit(store, cap)
        assert (best["agent_id"] if best else None) == choose(find_by_capability(store, cap), "BEST_FIT", 0)[0]


def refusal(result: Result, name: str = "registry") -> InvalidEvent:
    outcome = result[name]
    assert isinstance(outcome, InvalidEvent), outcome
    return outcome


# ---------------------------------------------------------------------------- registration and the index
def test_registration_builds_the_record_and_the_index() -> None:
    f = Fabric()
    f.register("b", ["ml.inference", "db.query", "db.query"], max_concurrency=8, latency=20.0, reliability=0.97)
    f.register("a", ["db.query"])
    rec = f.agent("b")
    assert rec["status"] == ACTIVE
    assert rec["capabilities"] == ["db.query", "ml.inference"]
    assert (rec["address"], rec["region"], rec["tier"], rec["max_concurrency"]) == ("b.local:7000", "eu-west-1",
                                                                                   "INDIVIDUAL", 8)
    assert (rec["latency_ms"], rec["reliability"], rec["load"], rec["health_status"]) == (20.0, 0.97, 0, "UNKNOWN")
    assert f.registry_store.get("cap/db.query") == ["a", "b"]
    assert f.registry_store.get("cap/ml.inference") == ["b"]
    assert [r["agent_id"] for r in find_by_capability(f.registry_store, "db.query")] == ["a", "b"]
    assert find_by_capability(f.registry_store, "nobody.serves") == []
    assert get_agent(f.registry_store, "nobody") is None
    check_registry(f.registry_store)


def test_reregistration_replaces_description_and_moves_the_index_but_keeps_measurements() -> None:
    f = Fabric()
    f.register("a", ["db.query", "ml.inference"], max_concurrency=2)
    f.register("z", ["ml.inference"])
    f.emit("router", "commands.routed", {**routed_payload("c1", "db.query", "a")})
    f.receipt("c0", "a", "db.query", duration=30)
    before = f.agent("a")
    f.register("a", ["db.query", "fs.read"], max_concurrency=6, health=0.8)
    after = f.agent("a")
    assert after["capabilities"] == ["db.query", "fs.read"]
    assert (after["max_concurrency"], after["health"]) == (6, 0.8)
    assert (after["successes"], after["latency_ms"], after["reliability"]) == (
        before["successes"], before["latency_ms"], before["reliability"])
    assert after["load"] == before["load"] == 0
    assert f.registry_store.get("cap/ml.inference") == ["z"]
    assert f.registry_store.get("cap/fs.read") == ["a"]
    f.register("a", ["fs.read"])
    assert f.registry_store.get("cap/db.query") is None  # an empty index entry is deleted, not left as []
    check_registry(f.registry_store)


def test_deregistration_removes_from_the_index_and_reregistration_restores() -> None:
    f = Fabric()
    f.register("a", ["db.query", "fs.read"])
    f.register("b", ["db.query"])
    f.emit("a", "agents.deregistered", deregistered("a"))
    assert f.agent("a")["status"] == DEREGISTERED
    assert f.agent("a")["deregistration_reason"] == "SHUTDOWN"
    assert f.registry_store.get("cap/db.query") == ["b"]
    assert f.registry_store.get("cap/fs.read") is None
    assert [r["agent_id"] for r in find_by_capability(f.registry_store, "db.query", include_expired=True)] == ["b"]
    f.emit("a", "agents.heartbeat", heartbeat("a"))  # a heartbeat does not bring a deregistered agent back
    assert f.agent("a")["status"] == DEREGISTERED
    f.emit("ops", "agents.deregistered", deregistered("a", "EVICTED"))  # twice: no-op on the index
    f.register("a", ["fs.read"])
    assert f.agent("a")["status"] == ACTIVE
    assert f.registry_store.get("cap/fs.read") == ["a"]
    check_registry(f.registry_store)


def test_expiry_is_relative_to_the_newest_event_time_and_a_heartbeat_revives() -> None:
    f = Fabric(ttl_ms=30_000)
    f.register("a", ["db.query"])
    f.register("b", ["db.query"])
    f.tick(20_000)
    f.heartbeat("b", interval_ms=20_000)  # grace = max(ttl, 3 × 20 s) = 60 s
    f.tick(15_000)
    f.register("c", ["fs.read"])  # any event moves the clock; a has been silent 35 s > ttl
    assert clock(f.registry_store) == f.now
    assert f.agent("a")["status"] == EXPIRED
    assert f.agent("b")["status"] == ACTIVE
    assert [r["agent_id"] for r in find_by_capability(f.registry_store, "db.query")] == ["b"]
    everyone = find_by_capability(f.registry_store, "db.query", include_expired=True)
    assert [(r["agent_id"], r["status"]) for r in everyone] == [("a", EXPIRED), ("b", ACTIVE)]
    # an explicit now answers "who was live then" without touching the store
    assert len(find_by_capability(f.registry_store, "db.query", now_ms=T0 + 10)) == 2
    f.tick(50_000)
    f.heartbeat("c")
    assert find_by_capability(f.registry_store, "db.query") == []  # b's 60 s ran out too
    f.heartbeat("a")
    assert [r["agent_id"] for r in find_by_capability(f.registry_store, "db.query")] == ["a"]
    assert f.registry_store.get("cap/db.query") == ["a", "b"]  # expiry never edits the index
    check_registry(f.registry_store)


# ---------------------------------------------------------------------------- scoring and update rules
def test_fitness_formula_and_factors() -> None:
    assert latency_factor(0.0) == 1.0
    assert latency_factor(100.0) == 0.5
    assert capacity_factor(1, 4) == 0.75
    assert capacity_factor(4, 4) == 0.0
    assert capacity_factor(9, 4) == 0.0
    assert fitness_of(1.0, 100.0, 0.9, 1, 4) == pytest.approx(0.3 + 0.15 + 0.18 + 0.15)
    assert fitness_of(1.0, 0.0, 1.0, 0, 1) == pytest.approx(1.0)
    f = Fabric()
    f.register("a", ["db.query"], max_concurrency=4)
    f.heartbeat("a", health=1.0, load=3, latency=100.0, reliability=0.9)
    f.occupy("a", 1)
    rec = f.agent("a")
    assert (rec["load"], rec["reported_load"]) == (1, 3)  # the self-report is kept apart from the estimate
    assert rec["fitness"] == fitness(rec) == pytest.approx(0.78)


def test_windowed_latency_and_reliability_from_receipt_buckets() -> None:
    f = Fabric()
    f.register("a", ["db.query"])  # no reported latency: the first receipt replaces the default
    assert (f.agent("a")["latency_ms"], f.agent("a")["reliability"]) == (100.0, 0.9)
    f.receipt("c1", "a", "db.query", duration=200)  # every receipt here finishes in bucket 0
    rec = f.agent("a")
    assert (rec["latency_ms"], rec["latency_source"]) == (200.0, "receipts")
    assert rec["reliability"] == pytest.approx((4.5 + 1) / 6)  # prior 5 × 0.9, plus one success
    f.receipt("c2", "a", "db.query", duration=100, success=False)
    assert f.agent("a")["latency_ms"] == 150.0  # a mean, not an EWMA
    assert f.agent("a")["reliability"] == pytest.approx((4.5 + 1) / 7)
    f.receipt("c3", "a", "db.query", duration=100, error_rate=0.25)  # PARTIAL_FAILURE counts 0.75
    assert f.agent("a")["reliability"] == pytest.approx((4.5 + 1.75) / 8)
    f.receipt("c4", "a", "db.query", duration=100, timed_out=True)
    rec = f.agent("a")
    assert rec["latency_ms"] == 125.0
    assert rec["reliability"] == pytest.approx((4.5 + 1.75) / 9)
    assert (rec["successes"], rec["failures"], rec["receipts"]) == (2, 2, 4)
    # one bucket (60 s of event time) later: the older bucket weighs 0.8
    f.receipt("c5", "a", "db.query", duration=300, finished=BUCKET_MS + 5)
    rec = f.agent("a")
    assert rec["latency_ms"] == pytest.approx((0.8 * 500 + 300) / (0.8 * 4 + 1))
    assert rec["reliability"] == pytest.approx((4.5 + 0.8 * 1.75 + 1) / (5 + 0.8 * 4 + 1))
    assert [row[:3] for row in f.registry_store.get(obs_key("a"))["buckets"]] == [[0, 4, 500], [1, 1, 300]]
    # a receipt WINDOW_BUCKETS buckets after bucket 1 pushes 0 and 1 out of the window, not out of the totals
    f.receipt("c6", "a", "db.query", duration=10, finished=(WINDOW_BUCKETS + 1) * BUCKET_MS)
    rec = f.agent("a")
    assert (rec["latency_ms"], rec["reliability"]) == (10.0, pytest.approx((4.5 + 1) / 6))
    assert (rec["successes"], rec["failures"], rec["receipts"]) == (4, 2, 6)
    # a late receipt for a bucket outside the window counts in the totals only
    f.receipt("c7", "a", "db.query", duration=5_000, finished=BUCKET_MS)
    assert (f.agent("a")["latency_ms"], f.agent("a")["receipts"]) == (10.0, 7)
    # once receipts exist a self-reported latency no longer counts; a self-reported reliability
    # moves only the prior's mean (worth 5 receipts)
    f.heartbeat("a", latency=1.0, reliability=1.0)
    rec = f.agent("a")
    assert (rec["latency_ms"], rec["reported_latency_ms"]) == (10.0, 1.0)
    assert rec["reliability"] == pytest.approx((5.0 + 1) / 6)
    check_registry(f.registry_store)


def test_self_reports_seed_until_the_first_receipt() -> None:
    f = Fabric()
    f.register("a", ["db.query"], latency=30.0, reliability=0.5)
    f.heartbeat("a", latency=60.0, reliability=0.99)
    assert (f.agent("a")["latency_ms"], f.agent("a")["reliability"]) == (60.0, 0.99)
    assert f.agent("a")["latency_source"] == "reported"
    f.receipt("c1", "a", "db.query", duration=10)
    assert f.agent("a")["latency_ms"] == 10.0  # receipts decide as soon as there is one
    assert f.agent("a")["reliability"] == pytest.approx((5 * 0.99 + 1) / 6)  # the self-report is the prior
    f.heartbeat("a", latency=500.0)  # no reliability in it: the prior keeps the last report
    assert (f.agent("a")["latency_ms"], f.agent("a")["reliability"]) == (10.0, pytest.approx((5 * 0.99 + 1) / 6))


def test_load_is_routed_minus_receipts_and_the_report_is_kept_apart() -> None:
    f = Fabric()
    f.register("a", ["db.query"], max_concurrency=3)
    for i in range(2):
        f.emit("router", "commands.routed", routed_payload(f"c{i}", "db.query", "a"))
    assert f.agent("a")["load"] == 2
    f.receipt("c0", "a", "db.query")
    assert f.agent("a")["load"] == 1
    f.heartbeat("a", load=0)  # the agent's own report is stored, not mixed into the estimate
    assert (f.agent("a")["load"], f.agent("a")["reported_load"]) == (1, 0)
    f.receipt("c1", "a", "db.query")
    assert f.agent("a")["load"] == 0
    f.receipt("c2", "a", "db.query")  # its routed event (another topic) has not been folded yet
    assert f.agent("a")["load"] == 0  # never below zero ...
    f.emit("router", "commands.routed", routed_payload("c2", "db.query", "a"))
    assert f.agent("a")["load"] == 0  # ... and the counters settle whatever the order
    f.emit("router", "commands.routed", routed_payload("c3", "db.query", "a"))
    assert (f.agent("a")["load"], f.agent("a")["routed"], f.agent("a")["receipts"]) == (1, 4, 3)
    check_registry(f.registry_store)


def best_id(f: Fabric, capability: str) -> str | None:
    rec = best_fit(f.registry_store, capability)
    return None if rec is None else str(rec["agent_id"])


def test_monitor_health_status_survives_reregistration_and_excludes_from_best_fit() -> None:
    f = Fabric()
    f.register("a", ["db.query"], latency=1.0)
    f.register("b", ["db.query"], latency=500.0)
    assert best_id(f, "db.query") == "a"
    f.emit("monitor", "agents.health_changed", health_changed("a", "FAILED", 0.9))
    assert best_id(f, "db.query") == "b"
    f.register("a", ["db.query"], health=1.0)
    assert f.agent("a")["health_status"] == "FAILED"
    f.emit("monitor", "agents.health_changed", health_changed("a", "HEALTHY", 1.0))
    assert best_id(f, "db.query") == "a"
    f.occupy("a", 4)  # full
    assert best_id(f, "db.query") == "b"


# ---------------------------------------------------------------------------- refusals
def routed_payload(command_id: str, capability: str, agent_id: str) -> dict[str, Any]:
    inputs = {"health_score": 1.0, "latency_ms": 1.0, "latency_factor": 1.0, "reliability": 1.0,
              "capacity_factor": 1.0, "current_load": 0, "max_concurrency": 1, "fitness": 1.0}
    return {"command_id": command_id, "capability": capability, "agent_id": agent_id, "strategy": "BEST_FIT",
            "score": 1.0, "candidates": 1, "eligible": 1, "inputs": inputs}


@pytest.mark.parametrize("event_type,payload", [
    ("agents.heartbeat", heartbeat("ghost")),
    ("agents.health_changed", health_changed("ghost", "FAILED", 0.0)),
    ("agents.deregistered", deregistered("ghost")),
])
def test_agents_events_about_unknown_agents_are_refused_before_writing(event_type: str,
                                                                       payload: dict[str, Any]) -> None:
    """Decided in the agent's own ``agents`` partition, after or before its registration: the same everywhere."""
    f = Fabric()
    f.register("a", ["db.query"])
    before = frozen(f.registry_store, marks=False)
    exc = refusal(f.emit("someone", event_type, payload, feedback=False))
    assert exc.reason == "unknown-agent"
    assert frozen(f.registry_store, marks=False) == before


def test_routed_and_receipts_before_the_registration_are_kept_as_observations() -> None:
    """They live on other topics than the registration: a replay may read them first, so refusing
    them as unknown-agent would make the registry depend on the interleaving."""
    f = Fabric()
    f.emit("router", "commands.routed", routed_payload("c1", "db.query", "a"))
    f.emit("router", "commands.routed", routed_payload("c2", "db.query", "a"))
    f.receipt("c1", "a", "db.query", duration=70)
    assert get_agent(f.registry_store, "a") is None
    assert f.registry_store.get("cap/db.query") is None
    assert f.registry_store.get(obs_key("a"))["routed"] == 2
    f.register("a", ["db.query"], latency=5.0)
    rec = f.agent("a")
    assert (rec["load"], rec["latency_ms"], rec["latency_source"], rec["successes"]) == (1, 70.0, "receipts", 1)
    check_registry(f.registry_store)


@pytest.mark.parametrize("event_type,payload", [
    ("agents.registered", registered("a", ["db.query"], health=1.5)),
    ("agents.registered", registered("a", ["db.query"], max_concurrency=0)),
    ("agents.registered", registered("a", ["db.query"], latency=-1.0)),
    ("agents.registered", registered("a", ["db.query"], reliability=math.nan)),
    ("agents.registered", registered("a", [""])),
    ("agents.heartbeat", heartbeat("a", health=-0.1)),
    ("agents.heartbeat", heartbeat("a", load=-1)),
    ("agents.heartbeat", heartbeat("a", latency=math.nan)),
    ("agents.heartbeat", heartbeat("a", latency=math.inf)),
    ("agents.heartbeat", heartbeat("a", reliability=1.01)),
    ("agents.heartbeat", heartbeat("a", max_concurrency=0)),
    ("agents.heartbeat", heartbeat("a", interval_ms=-5)),
    ("agents.health_changed", health_changed("a", "HEALTHY", 2.0)),
    ("commands.receipt", receipt("c1", "a", "db.query", duration=-3)),
    ("commands.receipt", receipt("c1", "a", "db.query", error_rate=math.nan)),
    ("commands.receipt", {**receipt("c1", "a", "db.query"), "finished_ms": -1}),
])
def test_invalid_values_are_refused_before_writing(event_type: str, payload: dict[str, Any]) -> None:
    f = Fabric()
    f.register("a", ["db.query", "ml.inference"], max_concurrency=2)
    f.emit("router", "commands.routed", routed_payload("c1", "db.query", "a"))
    before = frozen(f.registry_store, marks=False)
    exc = refusal(f.emit("a", event_type, payload, feedback=False))
    assert exc.reason == "invalid-payload", exc
    assert frozen(f.registry_store, marks=False) == before


class CountingStore(MemoryStore):
    """Counts reads and forbids scans: proves the lookup touches only the index and its k agents."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def get(self, key: str) -> Any:
        self.reads += 1
        return super().get(key)

    def scan(self, prefix: str = "") -> Iterator[tuple[str, Any]]:
        raise AssertionError("a query scanned the store")


def test_lookups_read_the_index_and_the_matching_agents_only() -> None:
    store = CountingStore()
    projection = RegistryProjection()
    stores = Stores(store)
    for i in range(300):
        caps = ["rare.cap"] if i % 60 == 0 else ["common.cap"]
        ctx = EventContext(f"e{i}", "agents.registered", "p", f"agent-{i:03}", T0 + i, "agents/0", i, "s")
        projection.apply(stores, ctx, registered(f"agent-{i:03}", caps))
    store.reads = 0
    found = find_by_capability(store, "rare.cap", now_ms=T0 + 300)
    assert [r["agent_id"] for r in found] == [f"agent-{i:03}" for i in range(0, 300, 60)]
    assert store.reads == 1 + 5
    store.reads = 0
    best = best_fit(store, "common.cap", now_ms=T0 + 300)  # 295 agents serve it
    assert best is not None and store.reads == 1 + 1 + 1  # the bucket list, the top bucket, one record
    store.reads = 0
    assert len(ranked(store, "common.cap", now_ms=T0 + 300, limit=3)) == 3
    assert store.reads == 1 + 1 + 3  # every agent has the same fitness here: one bucket


# ---------------------------------------------------------------------------- idempotence (hypothesis)
AGENTS = ["a0", "a1", "a2"]
CAPS = ["db.query", "ml.inference"]

registry_ops = st.lists(st.one_of(
    st.tuples(st.just("register"), st.sampled_from(AGENTS), st.lists(st.sampled_from(CAPS), max_size=2),
              st.integers(1, 3)),
    st.tuples(st.just("heartbeat"), st.sampled_from(AGENTS), st.sampled_from([0.3, 0.9, 1.5]), st.integers(0, 4),
              st.sampled_from([5.0, 250.0])),
    st.tuples(st.just("health"), st.sampled_from(AGENTS), st.sampled_from(["HEALTHY", "DEGRADED", "FAILED"])),
    st.tuples(st.just("deregister"), st.sampled_from(AGENTS)),
    st.tuples(st.just("routed"), st.sampled_from(AGENTS)),
    st.tuples(st.just("receipt"), st.sampled_from(AGENTS), st.booleans(), st.integers(-1, 300)),
    st.tuples(st.just("tick"), st.sampled_from([1_000, 40_000])),
), max_size=20)


def play_agents_op(f: Fabric, op: tuple[Any, ...], health_score: float) -> bool:
    """Play one generated op of the agents' own lifecycle (or a clock tick); False if it is another kind."""
    kind, rest = op[0], op[1:]
    if kind == "register":
        f.register(rest[0], rest[1], max_concurrency=rest[2])
    elif kind == "heartbeat":
        f.heartbeat(rest[0], health=rest[1], load=rest[2], latency=rest[3])
    elif kind == "health":
        f.emit("monitor", "agents.health_changed", health_changed(rest[0], rest[1], health_score))
    elif kind == "deregister":
        f.emit(rest[0], "agents.deregistered", deregistered(rest[0]))
    elif kind == "tick":
        f.tick(rest[0])
    else:
        return False
    return True


def play_registry_ops(f: Fabric, ops: list[tuple[Any, ...]]) -> None:
    for n, op in enumerate(ops):
        kind, rest = op[0], op[1:]
        if play_agents_op(f, op, 0.7):
            continue
        if kind == "routed":
            f.emit("router", "commands.routed", routed_payload(f"c{n}", "db.query", rest[0]))
        elif kind == "receipt":
            f.receipt(f"c{n}", rest[0], "db.query", success=rest[1], duration=rest[2])


def schedule(data: st.DataObject, n: int) -> list[int]:
    """Log order with extra deliveries of random entries inserted anywhere after their first delivery.

    Every redelivery must be a no-op: ``base.fold`` marks refusals too, so a refused event is
    skipped, not judged again against later state.
    """
    order = list(range(n))
    if not n:
        return order
    copies = data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=8), label="redelivered")
    for src in copies:
        first = order.index(src)
        at = data.draw(st.integers(first + 1, len(order)), label="position")
        order.insert(at, src)
    return order


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=registry_ops, data=st.data())
def test_registry_redelivery_is_a_no_op_and_state_stays_valid(ops: list[tuple[Any, ...]], data: st.DataObject) -> None:
    reference = Fabric()
    play_registry_ops(reference, ops)
    check_registry(reference.registry_store)
    replayed = Fabric()
    for i in schedule(data, len(reference.log)):
        result = replayed.deliver(reference.log[i])
        assert not any(isinstance(r, list) and r for r in result.values())  # the registry derives nothing
        check_registry(replayed.registry_store)
    assert frozen(replayed.registry_store) == frozen(reference.registry_store)


def test_redelivering_a_refused_event_after_the_state_changed_is_a_no_op() -> None:
    f = Fabric()
    f.register("b", ["db.query"])
    early = f.make("a-session-1", "agents.heartbeat", heartbeat("a", load=3))
    assert refusal(f.record(early)).reason == "unknown-agent"
    f.register("a", ["db.query"])  # the agent registers from a new producer stream
    f.deliver(early)  # at-least-once: the refused heartbeat comes again
    assert (f.agent("a")["reported_load"], f.agent("a")["load"]) == (0, 0)


# ---------------------------------------------------------------------------- order independence (hypothesis)
def _ctx(event_type: str, subject: str, ts: int, lane: str, seq: int) -> EventContext:
    return EventContext(f"{lane}/{seq}", event_type, "p", subject, ts, lane, seq, "s")


@settings(max_examples=60, deadline=None)
@given(n_receipts=st.integers(0, 12), n_routed=st.integers(0, 6), seed=st.integers(0, 2**32 - 1),
       data=st.data())
def test_registry_state_is_a_function_of_the_event_set(n_receipts: int, n_routed: int, seed: int,
                                                       data: st.DataObject) -> None:
    """The agent's own events keep their order; routed events and receipts (other topics) come in any
    order relative to them and to each other: the store must not change."""
    rng = random.Random(seed)
    agents_events = [("agents.registered", registered("a", ["db.query"], max_concurrency=4, latency=30.0)),
                     ("agents.heartbeat", heartbeat("a", load=2, latency=40.0, reliability=0.8)),
                     ("agents.heartbeat", heartbeat("a", health=0.6, load=1, latency=20.0))]
    others: list[tuple[str, dict[str, Any]]] = []
    for i in range(n_receipts):
        finished = rng.randrange(0, 20 * BUCKET_MS)
        others.append(("commands.receipt", receipt(f"c{i}", "a", "db.query", duration=rng.randrange(0, 500),
                                                   success=rng.random() < 0.7, timed_out=rng.random() < 0.1,
                                                   error_rate=rng.choice([0.0, 0.0, 0.3]), finished=finished)))
    others += [("commands.routed", routed_payload(f"r{i}", "db.query", "a")) for i in range(n_routed)]
    # each receipt/routed event in a lane of its own: any order of them is then an interleaving Kafka allows
    # (the per-lane breakers, brk/..., rely on the order inside one receipts lane)
    events = [(t, p, "agents/0") for t, p in agents_events] + [(t, p, f"other/{i}") for i, (t, p) in
                                                               enumerate(others)]
    stamped = [(t, p, lane, T0 + i) for i, (t, p, lane) in enumerate(events)]

    def run(order: list[int]) -> str:
        store = MemoryStore()
        projection = RegistryProjection()
        for seq, i in enumerate(order):
            event_type, payload, lane, ts = stamped[i]
            projection.apply(Stores(store), _ctx(event_type, "a", ts, lane, seq), payload)
        check_registry(store)
        return canonical_json(snapshot(store))

    reference = run(list(range(len(stamped))))
    agents_part = list(range(len(agents_events)))
    rest = data.draw(st.permutations(range(len(agents_events), len(stamped))), label="others")
    merged: list[int] = []
    while agents_part or rest:  # a random merge that keeps the agents partition in order
        if agents_part and (not rest or data.draw(st.booleans(), label="take agents")):
            merged.append(agents_part.pop(0))
        else:
            merged.append(rest.pop(0))
    assert run(merged) == reference
