"""PREDICTED with learned latency models: the prediction is a recorded input, replay never re-runs the model."""

from __future__ import annotations

from typing import Any

from swarmlog.projections import latency_models as lm
from swarmlog.projections.base import EventContext, InvalidEvent, MemoryStore, Stores, canonical_json, snapshot
from swarmlog.projections.latency_models import MIN_SAMPLES, LatencyModelProjection, predict
from swarmlog.projections.registry import get_agent
from swarmlog.projections.routing import LearnedRoutingProjection, RoutingProjection, audit_routed, candidates_for
from swarmlog.projections.routing import predicted_latency_ms as registry_prediction
from tests.test_registry import Fabric
from tests.test_routing_guard import ids_in

CAP = "db.query"


def receipt_ctx(i: int, lane: str = "receipts/0", ts: int = 1_700_000_000_000) -> EventContext:
    return EventContext(f"e{lane}{i}", "commands.receipt", "a", f"c{i}", ts + i * 1000, lane, i, "s")


def test_model_needs_min_samples_learns_successes_only_and_rebuilds_identically() -> None:
    store, p = MemoryStore(), LatencyModelProjection()
    for i in range(MIN_SAMPLES - 1):
        p.apply(Stores(store), receipt_ctx(i), {"agent_id": "a", "capability": CAP, "duration_ms": 80,
                                                "success": True})
    now = 1_700_000_000_000 + 10**6
    assert predict(store, "a", CAP, "receipts/0", now) is None
    for i in range(MIN_SAMPLES - 1, 3 * MIN_SAMPLES):
        failed = i % 5 == 0
        p.apply(Stores(store), receipt_ctx(i), {"agent_id": "a", "capability": CAP,
                                                "duration_ms": 5_000 if failed else 80, "success": not failed})
    learned = predict(store, "a", CAP, "receipts/0", now)
    assert learned is not None and 60 < learned < 110  # the 5 s failures were not learned
    assert predict(store, "a", CAP, "receipts/1", now) is None  # models are per receipts lane
    lm._CACHE.clear()  # from the stored checkpoint + tail alone: the same model, bit for bit
    assert predict(store, "a", CAP, "receipts/0", now) == learned


def test_bad_receipts_are_refused() -> None:
    p = LatencyModelProjection()
    for payload in ({"agent_id": "a", "capability": CAP, "duration_ms": -1, "success": True},
                    {"agent_id": "a", "capability": CAP, "duration_ms": 1, "success": "yes"},
                    {"agent_id": "", "capability": CAP, "duration_ms": 1, "success": True},
                    {"agent_id": "a", "duration_ms": 1, "success": True}):
        store = MemoryStore()
        try:
            p.apply(Stores(store), receipt_ctx(0), payload)
        except InvalidEvent as exc:
            assert exc.reason == "invalid-payload"
        else:
            raise AssertionError(f"accepted {payload}")
        assert len(store) == 0


def learned_fabric() -> tuple[Fabric, MemoryStore]:
    f = Fabric()
    latency = MemoryStore()
    f.targets = [f.targets[0], (LatencyModelProjection(), Stores(latency)),
                 (LearnedRoutingProjection(), Stores(f.routing_store, {"registry": f.registry_store,
                                                                       "latency": latency}))]
    return f, latency


def test_predicted_uses_the_lane_model_and_records_it() -> None:
    """a is slow on shard 0's commands (200 ms) and fast on shard 1's (10 ms); b takes 60 ms everywhere. The
    registry's per-agent mean (≈105 ms) prefers b everywhere; the lane models send shard 1's command to a."""
    f, latency = learned_fabric()
    f.register("a", [CAP], max_concurrency=50)
    f.register("b", [CAP], max_concurrency=50)
    for part, a_ms in ((0, 200), (1, 10)):
        for cid in ids_in(part, 2 * MIN_SAMPLES, f"warm-{part}-"):
            f.receipt(cid, "a", CAP, duration=a_ms)
        for cid in ids_in(part, 2 * MIN_SAMPLES, f"warmb-{part}-"):
            f.receipt(cid, "b", CAP, duration=60)
    a, b = f.agent("a"), f.agent("b")
    assert registry_prediction(b) < registry_prediction(a)  # without the models b would win everywhere
    routed: dict[int, dict[str, Any]] = {}
    for part in (0, 1):
        (cid,) = ids_in(part, 1, f"cmd-{part}-")
        (d,) = f.request(cid, CAP, "PREDICTED")
        routed[part] = d.payload
    assert routed[0]["agent_id"] == "b" and routed[1]["agent_id"] == "a"
    for part, payload in routed.items():
        lane = f"receipts/{part}"
        chosen = get_agent(f.registry_store, payload["agent_id"])
        assert chosen is not None
        learned = predict(latency, payload["agent_id"], CAP, lane, f.now)
        assert learned is not None
        expected = learned * (1 + chosen["load"] / chosen["max_concurrency"]) / chosen["reliability"]
        assert abs(payload["inputs"]["predicted_latency_ms"] - expected) < 1e-6 * expected
        assert payload["model_version"].startswith("LatencyPredictor/river-") and payload["model_version"].endswith(
            lane)
        # the score follows from the recorded input; re-choosing needs the recorded predictions, not the model
        assert not [p for p in audit_routed(payload, candidates_for(f.registry_store, CAP, f.now))
                    if p.startswith("score")]


def test_replay_folds_the_recorded_prediction_without_the_model() -> None:
    f, _latency = learned_fabric()
    f.register("a", [CAP])
    for cid in ids_in(0, MIN_SAMPLES, "w-"):
        f.receipt(cid, "a", CAP, duration=30)
    (cid,) = ids_in(0, 1, "cmd-")
    f.request(cid, CAP, "PREDICTED")
    live = canonical_json(snapshot(f.routing_store))
    # a replay with the plain router (no latency store at all) over the same log
    replay_registry, replay_routing = MemoryStore(), MemoryStore()
    from swarmlog.projections.base import fold
    from swarmlog.projections.registry import RegistryProjection

    registry, routing = RegistryProjection(), RoutingProjection()
    for delivery in f.log:
        if delivery.event.event_type in registry.event_types:
            fold(registry, Stores(replay_registry), delivery.event, delivery.payload)
        if delivery.event.event_type in routing.event_types:
            fold(routing, Stores(replay_routing, {"registry": replay_registry}), delivery.event, delivery.payload)
    assert canonical_json(snapshot(replay_routing)) == live
    assert snapshot(replay_routing)[f"cmd/{cid}"]["status"] == "ROUTED"
