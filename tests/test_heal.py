"""MAPE-K heal projection on real signed envelopes: detection, diagnosis, plan, knowledge, breakers, replay."""

from __future__ import annotations

import copy
import random
import zlib
from typing import Any

import pytest

from swarmlog.projections.base import Derived, InvalidEvent, MemoryStore, Stores, canonical_json, fold, snapshot
from swarmlog.projections.heal import ESCALATE_MS, HealProjection, actions, incidents, knowledge, plan
from swarmlog.streams.chain import ChainWriter
from swarmlog.streams.codec import default_store, encode_body
from swarmlog.streams.envelope import EnvelopeCodec, Event
from swarmlog.streams.identity import Identity

STORE = default_store()
CODEC = EnvelopeCodec(STORE)
T0 = 1_700_000_000_000
IDS: dict[str, Identity] = {}


def identity(name: str) -> Identity:
    if name not in IDS:
        IDS[name] = Identity.generate(name)
    return IDS[name]


class Log:
    """Builds signed events, folds them into one heal store, and loops derived heal events back."""

    def __init__(self, store: MemoryStore | None = None) -> None:
        self.store = store or MemoryStore()
        self.projection = HealProjection()
        self.writers: dict[str, ChainWriter] = {}
        self.events: list[tuple[Event, dict[str, Any]]] = []
        self.derived: list[Derived] = []

    def make(self, producer: str, event_type: str, payload: dict[str, Any], ts: int) -> tuple[Event, dict[str, Any]]:
        entry = STORE.for_event_type(event_type)
        assert entry.subject_field and entry.topic
        subject = str(payload[entry.subject_field])
        writer = self.writers.setdefault(producer, ChainWriter(identity(producer), STORE))
        _ref, value = writer.append(entry, encode_body(entry, payload), subject, entry.topic,
                                    zlib.crc32(subject.encode()) % 3, timestamp_ms=ts)
        event = CODEC.decode(value)
        return event, event.decode_payload(STORE)

    def feed(self, event: Event, payload: dict[str, Any], loop: bool = True) -> list[Derived]:
        self.events.append((event, payload))
        out = fold(self.projection, Stores(self.store), event, payload) or []
        self.derived.extend(out)
        if loop:  # the worker's outputs come back from Kafka: actions and outcomes are folded too
            for d in out:
                if d.event_type in self.projection.event_types:
                    self.feed(*self.make("worker", d.event_type, d.payload, event.timestamp_ms))
        return out

    def sample(self, component: str, value: float, ts: int, metric: str = "latency_p99_ms",
               deps: str = "") -> list[Derived]:
        labels = {"depends_on": deps} if deps else {}
        return self.feed(*self.make(component, "heal.metric_sample", {
            "component": component, "metric": metric, "value": value, "unit": "ms", "window_ms": 1000,
            "labels": labels}, ts))


def of(derived: list[Derived], event_type: str) -> list[dict[str, Any]]:
    return [d.payload for d in derived if d.event_type == event_type]


def baseline(log: Log, component: str, n: int = 40, start: int = T0, deps: str = "", seed: int = 0) -> int:
    rng = random.Random(seed)
    for i in range(n):
        assert not of(log.sample(component, rng.gauss(50, 2), start + i * 1000, deps=deps), "heal.anomaly_detected")
    return start + n * 1000


def test_degradation_is_detected_acted_on_and_recovery_closes_the_loop() -> None:
    log = Log()
    t = baseline(log, "svc-a")
    out = log.sample("svc-a", 400.0, t)
    anomaly, = of(out, "heal.anomaly_detected")
    assert anomaly["component"] == "svc-a" and anomaly["score"] > 100 and anomaly["severity"] == "CRITICAL"
    diagnosis, = of(out, "heal.diagnosis")
    assert diagnosis["candidates"][0]["cause"] == "latency-degradation"
    action, = of(out, "heal.action")
    assert (action["action"], action["target"]) == ("RESTART", "svc-a")  # playbook order, no knowledge yet
    assert of(log.sample("svc-a", 380.0, t + 1000), "heal.anomaly_detected") == []  # one incident, one action
    outcome: list[dict[str, Any]] = []
    for i in range(3):
        outcome += of(log.sample("svc-a", 51.0, t + 2000 + i * 1000), "heal.outcome")
    assert outcome == [{"action_id": action["action_id"], "target": "svc-a", "success": True,
                        "time_to_recover_ms": 4000, "detail": "latency_p99_ms back to baseline for 3 samples"}]
    assert incidents(log.store) == {}
    assert actions(log.store)[action["action_id"]]["outcome"] is True
    assert knowledge(log.store, "latency-degradation") == {"RESTART": (1, 1)}


def test_failed_action_escalates_and_knowledge_steers_later_plans() -> None:
    log = Log()
    t = baseline(log, "svc-a")
    first = of(log.sample("svc-a", 400.0, t), "heal.action")[0]
    out = log.sample("svc-a", 410.0, t + ESCALATE_MS)
    failed, = of(out, "heal.outcome")
    assert (failed["action_id"], failed["success"]) == (first["action_id"], False)
    second, = of(out, "heal.action")
    assert second["action"] == "REROUTE" and second["parameters"]["attempt"] == "2"  # RESTART was tried
    for i in range(3):
        log.sample("svc-a", 50.0, t + ESCALATE_MS + 1000 * (i + 1))
    know = knowledge(log.store, "latency-degradation")
    assert know == {"RESTART": (1, 0), "REROUTE": (1, 1)}
    # the next latency incident (another component) starts with what worked: REROUTE 2/3 > untried SCALE 1/2
    t2 = baseline(log, "svc-b", start=t + 100_000, seed=1)
    assert of(log.sample("svc-b", 500.0, t2), "heal.action")[0]["action"] == "REROUTE"
    assert plan("latency-degradation", know, {"REROUTE"}) == ("SCALE", 0.5)


def test_root_cause_ranking_blames_the_failing_dependency() -> None:
    log = Log()
    t = baseline(log, "db")
    t = baseline(log, "api", start=t, deps="db", seed=3)
    log.sample("db", 900.0, t)  # the database degrades first
    out = log.sample("api", 700.0, t + 1000, deps="db")
    diagnosis, = of(out, "heal.diagnosis")
    assert [(c["cause"], c["component"]) for c in diagnosis["candidates"]] == [
        ("dependency-failure", "db"), ("latency-degradation", "api")]
    assert diagnosis["candidates"][0]["score"] == pytest.approx(2 / 3)
    action, = of(out, "heal.action")
    assert (action["target"], action["action"]) == ("db", "REROUTE")


def test_drift_is_an_event() -> None:
    log = Log()
    rng = random.Random(4)
    t = baseline(log, "svc-a")
    drifts: list[dict[str, Any]] = []
    for i in range(200):  # +3 sigma: below the anomaly threshold, a level shift
        drifts += of(log.sample("svc-a", rng.gauss(56, 2), t + i * 1000), "heal.drift_detected")
    assert drifts and drifts[0]["detector"] == "page-hinkley"
    assert drifts[0]["previous_mean"] < 52 < drifts[0]["current_mean"]


def test_breaker_opens_from_receipts_in_one_lane() -> None:
    log = Log()
    derived: list[Derived] = []
    same_lane = [c for c in (f"c{i}" for i in range(100)) if zlib.crc32(c.encode()) % 3 == 0][:10]
    for i, command_id in enumerate(same_lane):
        event, payload = log.make("agent", "commands.receipt", {
            "command_id": command_id, "agent_id": "did:a", "capability": "db.query", "started_ms": T0,
            "finished_ms": T0 + 10, "duration_ms": 10, "success": i < 4, "error": None if i < 4 else "boom"},
            T0 + i)
        derived += log.feed(event, payload)
    # minimum_calls 10: the 10th receipt (6 of 10 failed ≥ 50 %) opens it, not before
    change, = of(derived, "heal.circuit_state_changed")
    assert (change["previous_state"], change["state"], change["failure_rate"]) == ("CLOSED", "OPEN", 0.6)
    assert change["half_open_at_ms"] == T0 + 9 + 10_000


@pytest.mark.parametrize(("event_type", "payload", "reason"), [
    ("heal.metric_sample", {"component": "svc", "metric": "latency_p99_ms", "value": -5.0, "unit": "ms"},
     "invalid-payload"),
    ("heal.metric_sample", {"component": "", "metric": "cpu", "value": 1.0}, "invalid-payload"),
    ("commands.receipt", {"command_id": "c", "agent_id": "a", "capability": "x", "started_ms": 5,
                          "finished_ms": 1, "duration_ms": -4, "success": True}, "invalid-payload"),
    ("heal.outcome", {"action_id": "nope", "target": "svc", "success": True}, "unknown-action"),
])
def test_bad_input_is_refused_without_writing(event_type: str, payload: dict[str, Any], reason: str) -> None:
    log = Log()
    event, decoded = log.make("bad", event_type, payload, T0)
    before = snapshot(log.store)
    with pytest.raises(InvalidEvent) as exc:
        log.feed(event, decoded)
    assert exc.value.reason == reason
    assert snapshot(log.store) == before


def test_missing_fields_are_refused() -> None:
    log = Log()
    event, decoded = log.make("bad", "heal.metric_sample", {"component": "svc", "metric": "cpu", "value": 1.0}, T0)
    decoded.pop("value")
    with pytest.raises(InvalidEvent) as exc:
        log.feed(event, decoded)
    assert exc.value.reason == "invalid-payload" and "value" in exc.value.detail


def test_replay_and_resume_from_checkpoint_reproduce_every_decision() -> None:
    live = Log()
    rng = random.Random(8)
    t = baseline(live, "svc-a")
    t = baseline(live, "svc-b", start=t, deps="svc-a", seed=2)
    for i in range(120):
        a = rng.gauss(50, 2) if not 30 <= i < 45 else rng.gauss(300, 20)
        b = rng.gauss(50, 2) if not 35 <= i < 50 else rng.gauss(250, 20)
        live.sample("svc-a", a, t + i * 1000)
        live.sample("svc-b", b, t + i * 1000 + 500, deps="svc-a")
    assert of(live.derived, "heal.action") and of(live.derived, "heal.outcome")

    replayed = Log()
    for event, payload in live.events:
        replayed.feed(event, payload, loop=False)  # the log already holds the worker's outputs
    assert canonical_json(snapshot(replayed.store, include_marks=True)) == \
        canonical_json(snapshot(live.store, include_marks=True))
    assert [(d.event_type, d.payload) for d in replayed.derived] == [(d.event_type, d.payload) for d in live.derived]

    half = len(live.events) // 2  # a worker stops half way; a new one restores the table and resumes
    first = Log()
    for event, payload in live.events[:half]:
        first.feed(event, payload, loop=False)
    resumed = Log(store=copy.deepcopy(first.store))
    for event, payload in live.events[:half]:
        assert fold(resumed.projection, Stores(resumed.store), event, payload) is None  # already learned
    for event, payload in live.events[half:]:
        resumed.feed(event, payload, loop=False)
    assert [(d.event_type, d.payload) for d in first.derived + resumed.derived] == \
        [(d.event_type, d.payload) for d in live.derived]
    checkpoint = live.store.get("model/svc-a/latency_p99_ms")
    assert checkpoint["model"]["river"] and checkpoint["learned_to"]["seq"] > 0


def test_a_checkpoint_from_another_river_version_relearns_instead_of_failing() -> None:
    log = Log()
    t = baseline(log, "svc-a")
    key = "model/svc-a/latency_p99_ms"
    stale = log.store.get(key)
    log.store.put(key, {**stale, "model": {**stale["model"], "river": "0.0.1"}})
    assert of(log.sample("svc-a", 400.0, t), "heal.anomaly_detected") == []  # a fresh detector is in its grace
    assert log.store.get(key)["model"]["river"] != "0.0.1"
