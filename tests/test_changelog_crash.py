"""A worker SIGKILLed at an exact point of a batch's direct table write (runtime.DirectTable), restarted on the
same RocksDB, then succeeded by a fresh worker: its changelog, its successor's RocksDB and its own RocksDB must
all equal a replay of the input.

Why this test exists: with the local RocksDB written *before* the batch's changelog records were delivered, a
worker killed in between came back with local state (idempotence marks included) ahead of its changelog; the
redelivered events were skipped as already applied, so their updates never reached the changelog and the next
owner of the partition restored a table short of them. The worker kills itself at the point through the
test-only hook ``SWARMLOG_TEST_KILL_AT`` (processors/runtime.py, ``ChangelogProducer``), so the crash lands
exactly there instead of wherever a SIGKILL from outside happens to hit.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any, cast

import pytest
from confluent_kafka import Consumer, TopicPartition

from swarmlog.projections.engine import Engine
from swarmlog.streams.identity import Identity
from swarmlog.streams.producer import EventProducer
from swarmlog.streams.reader import plan_ranges, read_records
from tests.support.live import wait_for
from tests.support.worker_app import CountingProjection
from tests.test_worker import AppWithTestDomain, changelog_state, payload, worker_env  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration


def all_committed(bootstrap: str, group: str, topic: str, partitions: int) -> bool:
    """Has the worker group acknowledged every record of ``topic`` (committed offset == end offset)?"""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        committed = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        for tp in committed:
            _low, high = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=10)
            if tp.offset < high:
                return False
        return True
    finally:
        consumer.close()


def replay(bootstrap: str, topic: str) -> dict[str, Any]:
    expected = Engine([CountingProjection()])
    for record in read_records(bootstrap, plan_ranges(bootstrap, [topic])):
        expected.feed(record)
    expected.finish()
    return dict(expected.stores["counting"].scan())


def rocksdb_state(datadir: Path, table: str) -> dict[str, Any]:
    """A worker's RocksDB partition files of ``table`` (Faust's layout; JSON keys and values), offset keys skipped."""
    from rocksdict import AccessType, Options, Rdict

    state: dict[str, Any] = {}
    for path in sorted(datadir.glob(f"**/swarmlog-{table}-*.db")):
        db = Rdict(str(path), options=Options(raw_mode=True), access_type=AccessType.read_only())
        try:
            for key, value in db.items():
                raw_key, raw_value = cast(bytes, key), cast(bytes, value)
                if not raw_key.startswith(b"__faust"):  # Faust's persisted changelog offset
                    state[json.loads(raw_key)] = json.loads(raw_value)
        finally:
            db.close()
    return state


def data_keys(table: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in table.items() if k.startswith(("count/", "seen/"))}


@pytest.mark.parametrize("point", ["after-local-write", "after-delivery"])
def test_worker_killed_inside_a_table_write_loses_nothing(worker_env: dict[str, str], tmp_path: Path,  # noqa: F811
                                                           point: str) -> None:
    env = {**worker_env, "TEST_DIRECT_CHANGELOG": "1"}
    bootstrap, topic = env["SWARMLOG_BOOTSTRAP"], env["TEST_TOPIC"]
    group, partitions = env["TEST_APP_ID"], int(env["TEST_PARTITIONS"])
    identity = Identity.generate("crash-test-producer")
    producer = EventProducer(identity, bootstrap, identity_topic=env["TEST_TRUST_TOPIC"], seal_batch=40)
    subjects = [f"agent-{i}" for i in range(9)]
    for i in range(240):
        producer.produce("deadletter.recorded", payload(i), subject=subjects[i % 9], topic=topic)
    producer.flush()

    # 1. the worker's first batch with table writes kills it at `point`
    doomed = AppWithTestDomain({**env, "SWARMLOG_TEST_KILL_AT": point}, "w1", tmp_path)
    wait_for(lambda: doomed.proc.poll() is not None, 120, f"the worker to kill itself at {point}", [])
    assert doomed.proc.returncode == -signal.SIGKILL, doomed.log.read_text()[-3000:]

    # 2. restarted on the same RocksDB (no hook): it finishes the log
    restarted = AppWithTestDomain(env, "w1", tmp_path)
    try:
        wait_for(lambda: all_committed(bootstrap, group, topic, partitions), 120, "the restarted worker to finish",
                 [restarted])
    finally:
        restarted.stop()  # clean shutdown: its partitions go to the successor
    assert restarted.proc.returncode == 0, restarted.log.read_text()[-3000:]

    # 3. a fresh worker restores every partition from the changelog; new events prove it has recovered
    successor = AppWithTestDomain(env, "w2", tmp_path)
    try:
        for i in range(240, 258):
            producer.produce("deadletter.recorded", payload(i), subject=f"late-{i}", topic=topic)
        producer.flush()
        wait_for(lambda: all_committed(bootstrap, group, topic, partitions), 120, "the successor to finish",
                 [successor])
        time.sleep(1.0)  # its last changelog flush is before the ack; the clean stop flushes the rest
    finally:
        successor.stop()
    assert successor.proc.returncode == 0, successor.log.read_text()[-3000:]

    want = data_keys(replay(bootstrap, topic))
    assert sum(v for k, v in want.items() if k.startswith("count/")) == 258
    changelog = data_keys(changelog_state(bootstrap, f"{group}-swarmlog-counting-changelog"))
    assert changelog == want, f"changelog differs from replay after a kill at {point}"
    workers = tmp_path / "workers"
    for name in ("w2", "w1"):
        rocks = rocksdb_state(workers / name, "counting")
        held = {k: v for k, v in want.items() if k in rocks or name == "w2"}
        if name == "w2":  # the successor holds every partition: all of the table
            assert data_keys(rocks) == want, f"successor's RocksDB differs from replay after a kill at {point}"
        else:  # the restarted worker's files: whatever it holds must be the replay's value
            assert {k: rocks[k] for k in held} == held
