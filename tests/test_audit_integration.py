"""Audit, tamper detection, archive and restore end to end on the real embedded broker.

Every tamper is made the way an attacker with write access to Kafka would: raw
confluent-kafka writes of altered bytes, or a copy of a topic with one record left out
or two swapped. The audit must name each tamper (kind + position) and nothing else.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from swarmlog.infra.audit import AuditReport, run_audit
from swarmlog.infra.broker import EmbeddedBroker
from swarmlog.infra.topics import ensure_topics
from swarmlog.streams.codec import HEADER_SIZE, encode_body
from swarmlog.streams.envelope import EnvelopeCodec
from swarmlog.streams.identity import Identity
from swarmlog.streams.producer import EventProducer
from swarmlog.streams.reader import plan_ranges, read_records
from swarmlog.streams.verify import RawRecord
from tests.audit_support import HEARTBEAT, checkpoint_payload, heartbeat, lane_leaves, registered

pytestmark = pytest.mark.integration
PARTITIONS = 3
CODEC = EnvelopeCodec()


@pytest.fixture(scope="module")
def people() -> dict[str, Identity]:
    return {name: Identity.generate(name) for name in ("alice", "bob", "ledger")}


def make_log(bootstrap: str, unique_topics: Any, people: dict[str, Identity]) -> tuple[str, list[RawRecord]]:
    """(prefix, records): two producers' agent events interleaved in 3 partitions of ``<prefix>agents``.

    The log as stored is checked against what the producers sent (every event once, each
    producer's in send order per partition) before any audit runs. Why: a clean-log audit
    failed twice under load in full-suite runs. A stored log that differs from the
    acknowledged writes is a broker fault in the setup, not an audit result: it is reported
    as a warning (with the log) and the setup is made once more under a fresh prefix; a
    second fault fails the test. A good log that the audit then misreads still fails.
    """
    for attempt in (1, 2):
        prefix = unique_topics.new_prefix()
        records, fault = _write_log(bootstrap, prefix, people)
        if fault is None:
            return prefix, records
        if attempt == 2:
            raise AssertionError(fault)
        warnings.warn(f"broker fault in the audit test setup, made again: {fault}", stacklevel=2)
    raise AssertionError("unreachable")


def _write_log(bootstrap: str, prefix: str, people: dict[str, Identity]) -> tuple[list[RawRecord], str | None]:
    """The log as read back, and why it is not what the producers sent (None if it is)."""
    ensure_topics(bootstrap, {prefix + "agents": PARTITIONS, prefix + "trust": 1, prefix + "ledger": 1})
    producers = [EventProducer(people[name], bootstrap, identity_topic=prefix + "trust", seal_batch=batch,
                               seal_interval_ms=60_000, background_seal=False)
                 for name, batch in (("alice", 5), ("bob", 7))]
    sent: list[list[tuple[int, bytes]]] = [[], []]  # per producer: (partition, event hash) in send order
    for i in range(12):
        for n, producer in enumerate(producers):
            agent = f"agent-{n}-{i % 4}"
            if i < 4:
                ref = producer.produce("agents.registered", registered(agent), topic=prefix + "agents")
            else:
                ref = producer.produce("agents.heartbeat", heartbeat(agent, i), topic=prefix + "agents")
            sent[n].append((ref.partition, ref.hash))
    for producer in producers:
        producer.close()
    records = read_back(bootstrap, [prefix + "agents"])
    stored = sorted(((r.partition, CODEC.decode(r.value).hash) for r in records if not CODEC.is_seal(r.value)),
                    key=lambda pair: pair[0])  # stable: each partition keeps its stored order
    wanted = [sorted(own, key=lambda pair: pair[0]) for own in sent]
    if len(stored) != sum(len(own) for own in sent) or any(
            [pair for pair in stored if pair in set(own)] != own for own in wanted):
        return records, f"the stored log is not the producers' acknowledged writes:\n{describe_log(records)}"
    return records, None


def read_back(bootstrap: str, topics: Sequence[str]) -> list[RawRecord]:
    return list(read_records(bootstrap, plan_ranges(bootstrap, topics)))


def describe_log(records: Sequence[RawRecord]) -> str:
    """One line per record: position, and lane/seq/type of an event (or "seal")."""
    lines = []
    for r in records:
        if CODEC.is_seal(r.value):
            lines.append(f"{r.topic}/{r.partition}@{r.offset} seal")
        else:
            event = CODEC.decode(r.value)
            lines.append(f"{r.topic}/{r.partition}@{r.offset} {event.lane} seq {event.seq} {event.event_type}")
    return "\n".join(lines)


def raw_producer(bootstrap: str) -> Producer:
    return Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})


def copy_topic(bootstrap: str, records: Sequence[RawRecord], target: str) -> None:
    """Write ``records`` (in the given order) to the same partitions of ``target``."""
    producer = raw_producer(bootstrap)
    for rec in records:
        producer.produce(target, rec.value, rec.key, rec.partition)
    assert producer.flush(30) == 0


def findings(report: AuditReport) -> set[tuple[str, str, int | None, int | None]]:
    return {(f.kind, f.topic, f.partition, f.offset) for f in report.findings}


def events_of(records: Sequence[RawRecord], partition: int) -> list[RawRecord]:
    return [r for r in records if r.partition == partition and not CODEC.is_seal(r.value)]


def busiest_partition(records: Sequence[RawRecord]) -> int:
    return max(range(PARTITIONS), key=lambda p: len(events_of(records, p)))


def cli(bootstrap: str, *args: str, prefix: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SWARMLOG_BOOTSTRAP": bootstrap, "SWARMLOG_TOPIC_PREFIX": prefix}
    return subprocess.run([sys.executable, "-m", "swarmlog.infra.cli", *args], env=env, capture_output=True,
                          text=True, timeout=300)


def test_byte_flip_and_forgery_are_named_and_nothing_else(kafka_bootstrap: str, unique_topics: Any,
                                                          people: dict[str, Identity]) -> None:
    prefix, records = make_log(kafka_bootstrap, unique_topics, people)
    topics = [prefix + "trust", prefix + "agents"]
    proc = cli(kafka_bootstrap, "audit", "trust", "agents", "--json", "--no-progress", prefix=prefix)
    # seen once in CI: this clean audit failed (two registrations not authenticated); the
    # message shows the log as stored, to tell a broker that reordered from an audit bug
    assert proc.returncode == 0, (proc.stdout[-2000:] + proc.stderr[-2000:] + "\nlog as stored:\n"
                                  + describe_log(read_back(kafka_bootstrap, topics)))
    doc = json.loads(proc.stdout)
    assert doc["ok"] is True and doc["problems"] == []
    assert doc["counts"]["authenticated"] == 24 + 2  # 24 agent events and 2 identity documents
    assert doc["projections"]["registry"]["keys"] > 8

    partition = busiest_partition(records)
    victim = events_of(records, partition)[3]
    flipped = bytearray(victim.value)
    flipped[-3] ^= 0x20  # a byte of the payload
    rec, _end = CODEC.entry.decode_body(victim.value, HEADER_SIZE)
    forged_value = CODEC.encode({**rec, "auth": None,
                                 "payload": encode_body(HEARTBEAT, heartbeat("agent-0-0", 999))})
    high = max(r.offset for r in records if r.partition == partition) + 1
    producer = raw_producer(kafka_bootstrap)
    producer.produce(prefix + "agents", bytes(flipped), victim.key, partition)
    producer.produce(prefix + "agents", forged_value, victim.key, partition)
    assert producer.flush(30) == 0

    report = run_audit(kafka_bootstrap, topics, prefix=prefix)
    assert findings(report) == {("forged", prefix + "agents", partition, high),
                                ("forged", prefix + "agents", partition, high + 1)}
    # the CLI exits 1 and lists the same two problems with their positions
    proc = cli(kafka_bootstrap, "audit", "trust", "agents", "--json", "--no-progress", prefix=prefix)
    assert proc.returncode == 1, proc.stderr[-2000:]
    doc = json.loads(proc.stdout)
    assert {(p["kind"], p["partition"], p["offset"]) for p in doc["problems"]} == {
        ("forged", partition, high), ("forged", partition, high + 1)}
    # bad usage: exit 2 with one line
    bad = cli(kafka_bootstrap, "audit", "no-such-topic", "--no-progress", prefix=prefix)
    assert bad.returncode == 2 and "no such topic" in bad.stderr


def test_dropped_and_swapped_records_are_named(kafka_bootstrap: str, unique_topics: Any,
                                               people: dict[str, Identity]) -> None:
    prefix, records = make_log(kafka_bootstrap, unique_topics, people)
    partition = busiest_partition(records)
    events = events_of(records, partition)
    # drop: leave one event of the middle of a sealed batch out of a copy of the topic
    dropped = events[2]
    drop_topic = prefix + "agents-dropped"
    ensure_topics(kafka_bootstrap, {drop_topic: PARTITIONS})
    copy_topic(kafka_bootstrap, [r for r in records if r is not dropped], drop_topic)
    report = run_audit(kafka_bootstrap, [prefix + "trust", drop_topic])
    assert len(report.findings) == 1, report.findings
    missing = report.findings[0]
    seq = CODEC.decode(dropped.value).seq
    assert (missing.kind, missing.topic, missing.partition) == ("missing", drop_topic, partition)
    assert f"seq {seq}:" in missing.reason
    # the position is the seal that lists the missing leaf, in the copy
    copy = read_back(kafka_bootstrap, [drop_topic])
    assert missing.offset is not None
    assert CODEC.is_seal(next(r for r in copy if r.partition == partition and r.offset == missing.offset).value)

    # swap: two consecutive events of the same lane (same producer) change places
    by_lane: dict[str, list[RawRecord]] = {}
    for rec in events:
        by_lane.setdefault(CODEC.decode(rec.value).stream_id.hex(), []).append(rec)
    lane_events = max(by_lane.values(), key=len)
    first, second = lane_events[1], lane_events[2]
    order = list(records)
    i, j = order.index(first), order.index(second)
    order[i], order[j] = order[j], order[i]
    swap_topic = prefix + "agents-swapped"
    ensure_topics(kafka_bootstrap, {swap_topic: PARTITIONS})
    copy_topic(kafka_bootstrap, order, swap_topic)
    report = run_audit(kafka_bootstrap, [prefix + "trust", swap_topic])
    # in the copy `first` sits where `second` was: it arrived after a later event of its lane
    new_offset = [r for r in order if r.partition == partition].index(first)
    assert findings(report) == {("out-of-sequence", swap_topic, partition, new_offset)}


def publish_checkpoints(bootstrap: str, prefix: str, signer: Identity, payloads: list[dict[str, Any]]) -> list[int]:
    with EventProducer(signer, bootstrap, identity_topic=prefix + "trust", seal_batch=1000,
                       background_seal=False) as producer:
        refs = [producer.produce("ledger.checkpoint", p, topic=prefix + "ledger") for p in payloads]
    ledger = read_back(bootstrap, [prefix + "ledger"])
    events = [r for r in ledger if not CODEC.is_seal(r.value)]
    by_id = {CODEC.decode(r.value).event_id: r.offset for r in events}
    return [by_id[ref.event_id] for ref in refs]


def test_forked_checkpoints_are_named(kafka_bootstrap: str, unique_topics: Any, people: dict[str, Identity]) -> None:
    prefix, records = make_log(kafka_bootstrap, unique_topics, people)
    topics = [prefix + "trust", prefix + "agents", prefix + "ledger"]
    leaves = lane_leaves(records, prefix + "agents")
    agents = prefix + "agents"
    signer = people["ledger"]
    good_p, fork_p, proof_p = sorted(leaves, key=lambda p: -len(leaves[p]))[:3]
    good, fork, bad = leaves[good_p], leaves[fork_p], leaves[proof_p]
    forked_history = fork[:1] + [zlib.crc32(b"x").to_bytes(4, "big") * 8] * (len(fork) - 1)
    offsets = publish_checkpoints(kafka_bootstrap, prefix, signer, [
        checkpoint_payload(agents, good_p, good, 2, signer=signer),
        checkpoint_payload(agents, good_p, good, len(good), previous=2, signer=signer),
        checkpoint_payload(agents, fork_p, fork, 1, signer=signer),
        checkpoint_payload(agents, fork_p, forked_history, len(fork), previous=1, signer=signer),
        checkpoint_payload(agents, proof_p, bad, 1, signer=signer),
        checkpoint_payload(agents, proof_p, bad, len(bad), previous=1, signer=signer,
                           proof_leaves=[b"\x02" * 32] * len(bad)),
    ])
    report = run_audit(kafka_bootstrap, topics, prefix=prefix)
    assert findings(report) == {("checkpoint-root-mismatch", prefix + "ledger", 0, offsets[3]),
                                ("checkpoint-inconsistent", prefix + "ledger", 0, offsets[5])}
    status = {lane.partition: lane.status for lane in report.lanes if lane.topic == agents}
    assert status[good_p] == f"verified at size {len(good)}"


def test_archive_then_restore_into_a_fresh_broker_audits_identically(
        kafka_bootstrap: str, unique_topics: Any, people: dict[str, Identity], tmp_path: Path) -> None:
    prefix, records = make_log(kafka_bootstrap, unique_topics, people)
    topics = [prefix + "trust", prefix + "agents", prefix + "ledger"]
    leaves = lane_leaves(records, prefix + "agents")
    publish_checkpoints(kafka_bootstrap, prefix, people["ledger"], [
        checkpoint_payload(prefix + "agents", p, hashes, len(hashes), signer=people["ledger"])
        for p, hashes in leaves.items()])
    # a non-event topic with headers and explicit timestamps: archived byte for byte too
    extra = prefix + "extra"
    ensure_topics(kafka_bootstrap, {extra: 2})
    producer = raw_producer(kafka_bootstrap)
    for i in range(10):
        producer.produce(extra, f"v{i}".encode(), f"k{i}".encode() if i % 3 else None, i % 2,
                         headers=[("h", f"x{i}".encode()), ("empty", None)], timestamp=1_700_000_000_000 + i)
    producer.produce(extra, None, b"tombstone", 0, timestamp=1_700_000_000_100)
    assert producer.flush(30) == 0
    original = run_audit(kafka_bootstrap, topics, prefix=prefix)
    assert original.ok and original.findings == []
    assert {lane.status for lane in original.lanes if lane.topic == prefix + "agents"} == {
        f"verified at size {len(h)}" for h in leaves.values()}

    archive = tmp_path / "log.avro"
    proc = cli(kafka_bootstrap, "archive", str(archive), *topics, extra, "--raw-topics", "--json", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["records"] == sum(len(read_back(kafka_bootstrap, [t])) for t in [*topics, extra])
    again = cli(kafka_bootstrap, "archive", str(archive), *topics, "--raw-topics", "--no-progress")
    assert again.returncode == 2 and "exists" in again.stderr

    with EmbeddedBroker(state_dir=None, log_path=tmp_path / "second-broker.log") as fresh:
        assert fresh.bootstrap != kafka_bootstrap
        proc = cli(fresh.bootstrap, "restore", str(archive), "--json", "--no-progress")
        assert proc.returncode == 0, proc.stderr[-2000:]
        twice = cli(fresh.bootstrap, "restore", str(archive), "--no-progress")
        assert twice.returncode == 1 and "already holds records" in twice.stderr
        restored = run_audit(fresh.bootstrap, topics, prefix=prefix)
        assert restored.ok and restored.findings == []
        assert [(lane.topic, lane.partition, lane.leaves, lane.root, lane.status) for lane in restored.lanes] == \
            [(lane.topic, lane.partition, lane.leaves, lane.root, lane.status) for lane in original.lanes]
        assert restored.as_dict()["projections"] == original.as_dict()["projections"]
        assert restored.counts == original.counts

        def raw(bootstrap: str) -> list[tuple[Any, ...]]:
            from confluent_kafka import Consumer, TopicPartition

            consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "audit-test", "enable.auto.commit":
                                 False})
            consumer.assign([TopicPartition(extra, p, 0) for p in range(2)])
            out = []
            while len(out) < 11:
                for msg in consumer.consume(100, 1.0):
                    if msg.error() is None:
                        out.append((msg.partition(), msg.offset(), msg.key(), msg.value(), msg.headers(),
                                    msg.timestamp()[1]))
            consumer.close()
            return sorted(out, key=lambda m: (m[0], m[1]))

        assert raw(fresh.bootstrap) == raw(kafka_bootstrap)


def test_live_tables_are_diffed_from_changelogs_and_rocksdb(kafka_bootstrap: str, unique_topics: Any,
                                                            people: dict[str, Identity], tmp_path: Path) -> None:
    """The worker's tables as the audit reads them: changelog topics (JSON key/value, last write
    wins, tombstones delete) and RocksDB partition files in Faust's layout (raw mode)."""
    from rocksdict import Options, Rdict

    from swarmlog.infra.audit import live_from_changelogs, live_from_datadirs

    prefix, _records = make_log(kafka_bootstrap, unique_topics, people)
    topics = [prefix + "trust", prefix + "agents"]
    report = run_audit(kafka_bootstrap, topics, prefix=prefix)
    rebuilt = report.projections["registry"]
    keys = sorted(rebuilt)
    changelog = f"swarmlog-test-{prefix.strip('.')}-swarmlog-registry-changelog"
    ensure_topics(kafka_bootstrap, {changelog: 2})
    producer = raw_producer(kafka_bootstrap)
    for i, key in enumerate(keys):
        producer.produce(changelog, json.dumps(rebuilt[key]).encode(), json.dumps(key).encode(), i % 2)
    producer.produce(changelog, b"42", b'"stale/key"', 0)
    producer.produce(changelog, None, b'"stale/key"', 0)  # deleted again: not live
    assert producer.flush(30) == 0
    app_id = f"swarmlog-test-{prefix.strip('.')}"
    live = live_from_changelogs(kafka_bootstrap, app_id, ["registry", "nothing-written"])
    assert set(live) == {"registry"}
    same = run_audit(kafka_bootstrap, topics, prefix=prefix)
    same.add_projection_diff(live, "changelog")
    assert same.ok and same.live_compared == {"registry": True}

    # one live value changed after the fact
    changed = keys[len(keys) // 2]
    producer.produce(changelog, json.dumps({"tampered": True}).encode(), json.dumps(changed).encode(), 1)
    assert producer.flush(30) == 0
    live = live_from_changelogs(kafka_bootstrap, app_id, ["registry"])
    diffed = run_audit(kafka_bootstrap, topics, prefix=prefix)
    diffed.add_projection_diff(live, "changelog")
    assert [(f.kind, f.topic, f.partition) for f in diffed.findings] == [("projection-mismatch", changelog, 1)]
    assert repr(changed) in diffed.findings[0].reason and diffed.live_compared == {"registry": False}

    # RocksDB: two workers' datadirs, each with some partition files of the table
    for n, worker in enumerate(("w1", "w2")):
        tables = tmp_path / worker / "swarmlog-test-data" / "v1" / "tables"
        tables.mkdir(parents=True)
        db = Rdict(str(tables / f"swarmlog-registry-{n}.db"), options=Options(raw_mode=True))
        for i, key in enumerate(keys):
            if i % 2 == n and key != keys[0]:
                db[json.dumps(key).encode()] = json.dumps(rebuilt[key]).encode()
        db[b"__faust\0offset__"] = b"17"  # what Faust keeps beside the rows: not a table key
        db.close()
    rocks = live_from_datadirs([tmp_path / "w1", tmp_path / "w2"], ["registry"])
    report.add_projection_diff(rocks, "datadir")
    assert [(f.kind, f.topic) for f in report.findings] == [("projection-missing-live", "datadir:registry")]
    assert repr(keys[0]) in report.findings[0].reason
