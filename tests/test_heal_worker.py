"""MAPE-K end to end on the real broker: a real ``swarmlog worker`` detects, acts, sees recovery,
dead-letters bad input, restarts from its RocksDB checkpoint, and its table equals a replay."""

from __future__ import annotations

import math
import random
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from swarmlog.infra.run import _worker, compare_live_tables
from swarmlog.infra.topics import provision
from swarmlog.projections.engine import Engine
from swarmlog.projections.heal import HealProjection
from swarmlog.streams.identity import Identity
from swarmlog.streams.producer import EventProducer
from swarmlog.streams.reader import plan_ranges, read_records, read_verified
from swarmlog.streams.verify import Status

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000


def heal_events(bootstrap: str, topic: str) -> list[tuple[str, dict[str, Any]]]:
    return [(v.event.event_type, v.event.decode_payload()) for v in read_verified(bootstrap, [topic])
            if v.status is Status.AUTHENTICATED and v.event is not None]


def wait_for(predicate: Any, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    tail = log.read_text()[-3000:] if log.exists() else ""
    raise AssertionError(f"timed out waiting for {what}\n{tail}")


def test_mape_k_loop_on_the_real_broker(kafka_bootstrap: str, tmp_path: Path) -> None:
    prefix = f"heal-{uuid.uuid4().hex[:6]}."
    provision(kafka_bootstrap, prefix=prefix)
    agent = EventProducer(Identity.generate("svc-agent"), kafka_bootstrap, topic_prefix=prefix)
    rng = random.Random(1)
    ts = T0

    def sample(value: float, metric: str = "latency_p99_ms", component: str = "svc-a") -> None:
        nonlocal ts
        ts += 1000
        agent.produce("heal.metric_sample", {"component": component, "metric": metric, "value": value,
                                             "unit": "ms", "window_ms": 1000, "labels": {}}, timestamp_ms=ts)

    heal_topic = prefix + "heal"
    dead_topic = prefix + "deadletter"
    log = tmp_path / "worker.log"
    with _worker(kafka_bootstrap, prefix, tmp_path, embedded=True):
        for _ in range(40):
            sample(rng.gauss(50, 2))
        sample(math.nan)  # bad input: NaN, then a negative duration
        sample(-3.0)
        sample(400.0)  # the degradation
        agent.flush()
        wait_for(lambda: any(t == "heal.action" for t, _ in heal_events(kafka_bootstrap, heal_topic)), 120,
                 "a heal action", log)
    # the worker stops after acting; a new one restores the detectors from RocksDB and sees the recovery
    with _worker(kafka_bootstrap, prefix, tmp_path, embedded=True):
        for _ in range(3):
            sample(rng.gauss(50, 2))
        agent.flush()
        wait_for(lambda: any(t == "heal.outcome" for t, _ in heal_events(kafka_bootstrap, heal_topic)), 120,
                 "the heal outcome", log)
        time.sleep(2)  # let the outcome itself be folded into knowledge
    agent.close()

    events = heal_events(kafka_bootstrap, heal_topic)
    kinds = [t for t, _ in events]
    assert kinds.count("heal.anomaly_detected") == 1 and kinds.count("heal.action") == 1
    action = next(p for t, p in events if t == "heal.action")
    outcome = next(p for t, p in events if t == "heal.outcome")
    assert (action["target"], action["action"]) == ("svc-a", "RESTART")
    assert (outcome["action_id"], outcome["success"], outcome["time_to_recover_ms"]) == \
        (action["action_id"], True, 3000)
    dead = [v.event.decode_payload() for v in read_verified(kafka_bootstrap, [dead_topic])
            if v.event is not None and v.event.event_type == "deadletter.recorded"]
    assert {d["reason"] for d in dead} == {"invalid-payload"} and len(dead) == 2  # NaN and negative ms

    # replay of the log through the same projection re-derives exactly the live decisions
    engine = Engine([HealProjection()])
    derived = []
    for record in read_records(kafka_bootstrap, plan_ranges(kafka_bootstrap, [prefix + "metrics"])):
        derived += [(d.event_type, d.payload) for _, d in engine.feed(record).derived]
    live = [(t, p) for t, p in events if t in {d[0] for d in derived}]
    assert derived == live
    # and the worker's table (its changelog) equals a replay of the topics it consumes
    assert compare_live_tables(kafka_bootstrap, prefix)["heal"] is True
