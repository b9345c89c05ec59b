"""Real Faust workers on the real broker: verify → fold → RocksDB tables, dead letters, failover."""

from __future__ import annotations

import os
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from swarmlog.projections.base import MemoryStore
from swarmlog.projections.engine import Engine
from swarmlog.streams.identity import Identity
from swarmlog.streams.producer import EventProducer
from swarmlog.streams.reader import plan_ranges, read_records, read_verified
from swarmlog.streams.verify import Status
from tests.support.live import WorkerProcess, wait_for
from tests.support.worker_app import CountingProjection

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent


def payload(i: int, reason: str = "test") -> dict[str, Any]:
    return dict(reason=reason, source_topic="src", source_partition=0, source_offset=i, original_value=b"v",
                recorded_ms=1)


class AppWithTestDomain(WorkerProcess):
    """The real app with a test domain (``tests/support/worker_app.py``)."""

    def __init__(self, env: dict[str, str], name: str, home: Path) -> None:
        super().__init__(env, name, home, lambda n, port: (
            [sys.executable, "-m", "tests.support.worker_app"], {"TEST_WORKER": n, "TEST_WEB_PORT": str(port)}))


@pytest.fixture
def worker_env(kafka_bootstrap: str, unique_topics: Any, tmp_path: Path) -> Iterator[dict[str, str]]:
    env = {
        **os.environ, "SWARMLOG_BOOTSTRAP": kafka_bootstrap, "SWARMLOG_HOME": str(tmp_path),
        "TEST_TOPIC": unique_topics("events", partitions=3), "TEST_TRUST_TOPIC": unique_topics("trust", 1),
        "TEST_DEADLETTER_TOPIC": unique_topics("dead", 3), "TEST_APP_ID": f"test-{uuid.uuid4().hex[:8]}",
        "TEST_PARTITIONS": "3", "PYTHONPATH": str(ROOT),
    }
    yield env


def count_authenticated(bootstrap: str, topic: str, event_type: str) -> list[dict[str, Any]]:
    return [v.event.decode_payload() for v in read_verified(bootstrap, [topic])
            if v.status is Status.AUTHENTICATED and v.event is not None and v.event.event_type == event_type]


def test_worker_folds_dead_letters_bad_input_and_survives_sigkill(worker_env: dict[str, str], tmp_path: Path) -> None:
    bootstrap = worker_env["SWARMLOG_BOOTSTRAP"]
    topic = worker_env["TEST_TOPIC"]
    dead = worker_env["TEST_DEADLETTER_TOPIC"]
    identity = Identity.generate("worker-test-producer")
    producer = EventProducer(identity, bootstrap, identity_topic=worker_env["TEST_TRUST_TOPIC"], seal_batch=40)
    subjects = [f"agent-{i}" for i in range(9)]

    def send(start: int, stop: int) -> None:
        for i in range(start, stop):
            reason = "refuse" if i % 50 == 7 else "test"
            producer.produce("deadletter.recorded", payload(i, reason), subject=subjects[i % 9], topic=topic)
        producer.flush()

    send(0, 200)
    raw = Producer({"bootstrap.servers": bootstrap})
    raw.produce(topic, b"\x00 not an event", b"agent-0", partition=0)  # garbage
    assert raw.flush(10) == 0

    first = AppWithTestDomain(worker_env, "w1", tmp_path)
    try:
        # refused events (reason 'refuse') and the garbage record end up as dead letters
        wait_for(lambda: len(count_authenticated(bootstrap, dead, "deadletter.recorded")) >= 5, 90,
                 "dead letters from worker 1", [first])
        second = AppWithTestDomain(worker_env, "w2", tmp_path)
        send(200, 400)
        time.sleep(3)
        first.stop(signal.SIGKILL)  # no clean shutdown: its partitions must move without loss
        send(400, 600)
        dead_letters = lambda: count_authenticated(bootstrap, dead, "deadletter.recorded")  # noqa: E731
        wait_for(lambda: len({(d["source_topic"], d["source_partition"], d["source_offset"])
                              for d in dead_letters()}) >= 13, 120, "all dead letters", [first, second])
        # per-reason counters of the surviving worker, over its HTTP health view
        import json
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{second.port}/swarmlog/health/", timeout=5) as response:
            health = json.loads(response.read())
        counts = health["domains"]["test"]
        assert counts.get("authenticated", 0) > 0 and counts.get("applied", 0) > 0
        assert health["outputs"]["dead_letters"] > 0
        second.stop()
    finally:
        first.stop(signal.SIGKILL)
        for proc in (first,):
            proc.stop()

    letters = dead_letters()
    reasons = sorted({d["reason"] for d in letters})
    assert reasons == ["malformed", "refused-by-test"]
    refused = {d["source_offset"] for d in letters if d["reason"] == "refused-by-test"}
    assert len(refused) == 12  # i % 50 == 7 for i < 600, one dead letter per refused event (dedup by offset)
    # The worker's tables are its changelog topics: rebuild them and compare with a replay of the input.
    expected = Engine([CountingProjection()])
    for record in read_records(bootstrap, plan_ranges(bootstrap, [topic])):
        expected.feed(record)
    expected.finish()
    want = {k: v for k, v in expected.stores["counting"].scan("count/")}
    assert sum(want.values()) == 600 - 12
    table = changelog_state(bootstrap, f"{worker_env['TEST_APP_ID']}-swarmlog-counting-changelog")
    got = {k: v for k, v in table.items() if k.startswith("count/")}
    assert got == want, "live table differs from replay (lost or double-applied events)"
    for subject in subjects:
        seen = table[f"seen/{subject}"]
        assert len(seen) == len(set(seen)), f"{subject}: an event was applied twice"


def changelog_state(bootstrap: str, changelog: str) -> dict[str, Any]:
    """Last value per key of a Faust table changelog (JSON keys and values)."""
    import json

    state: dict[str, Any] = {}
    store = MemoryStore()
    for record in read_records(bootstrap, plan_ranges(bootstrap, [changelog])):
        key = json.loads(record.key) if record.key else None
        if record.value in (None, b""):
            state.pop(key, None)
        else:
            state[key] = json.loads(record.value)
    del store
    return state
