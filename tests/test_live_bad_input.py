"""Bad input through a LIVE worker (the real CLI worker, the real app and its domains, the real broker).

A forged vote, a duplicate record, an event from an agent never registered, an event
signed by no valid key, garbage bytes and an event whose producer died before sealing
it: each lands in the dead-letter topic once, with its original bytes, the right reason
and its source position; the health view counts them per reason; every valid event
around them is applied exactly once; and the worker's tables equal a replay of the log.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from swarmlog.infra.run import compare_live_tables
from swarmlog.infra.topics import provision
from swarmlog.streams.envelope import EnvelopeCodec
from swarmlog.streams.identity import Identity
from swarmlog.streams.producer import EventProducer, partition_for
from swarmlog.streams.reader import plan_ranges, read_records
from swarmlog.streams.settings import get_settings
from tests.support.live import CliWorker, authenticated_payloads, env_for, record_at, wait_for

pytestmark = pytest.mark.integration

PARTITIONS = 3
WINDOW = 20  # SWARMLOG_UNSEALED_WINDOW: small, so the test needs few records behind the unsealed event


@pytest.fixture
def live(kafka_bootstrap: str, unique_topics: Any, tmp_path: Path,
         monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str, dict[str, str], Path]]:
    prefix = unique_topics.new_prefix()
    # this process replays with the same settings as the worker (window, partitions)
    monkeypatch.setenv("SWARMLOG_UNSEALED_WINDOW", str(WINDOW))
    monkeypatch.setenv("SWARMLOG_PARTITIONS", str(PARTITIONS))
    get_settings.cache_clear()
    provision(kafka_bootstrap, partitions=PARTITIONS, prefix=prefix)
    env = env_for(kafka_bootstrap, tmp_path, prefix, SWARMLOG_PARTITIONS=str(PARTITIONS),
                  SWARMLOG_UNSEALED_WINDOW=str(WINDOW))
    yield kafka_bootstrap, prefix, env, tmp_path
    get_settings.cache_clear()


class RawWriter:
    """An attacker's (or a buggy client's) plain Kafka producer: bytes in, positions out."""

    def __init__(self, bootstrap: str) -> None:
        self.kafka = Producer({"bootstrap.servers": bootstrap})

    def write(self, topic: str, partition: int, key: bytes | None, value: bytes) -> tuple[str, int, int]:
        delivered: list[Any] = []
        self.kafka.produce(topic, value, key, partition=partition, on_delivery=lambda err, msg: delivered.append(
            (err, msg)))
        assert self.kafka.flush(10) == 0
        err, msg = delivered[0]
        assert err is None, err
        return topic, msg.partition(), msg.offset()


def find_event(bootstrap: str, topic: str, producer: str, event_type: str) -> tuple[int, int, bytes]:
    codec = EnvelopeCodec()
    for record in read_records(bootstrap, plan_ranges(bootstrap, [topic])):
        if codec.is_seal(record.value):
            continue
        event = codec.decode(record.value)
        if event.producer == producer and event.event_type == event_type:
            return record.partition, record.offset, record.value
    raise AssertionError(f"no {event_type} by {producer} in {topic}")


def same_partition_as(anchor: str, stem: str) -> str:
    target = partition_for(anchor.encode(), PARTITIONS)
    return next(f"{stem}-{i}" for i in itertools.count() if partition_for(f"{stem}-{i}".encode(), PARTITIONS) == target)


def test_bad_input_through_a_live_worker_is_dead_lettered_once_and_nothing_valid_is_lost(
        live: tuple[str, str, dict[str, str], Path]) -> None:
    bootstrap, prefix, env, home = live
    coordinator, agent, stranger, dies = (Identity.generate(n) for n in ("coordinator", "agent", "stranger", "dies"))
    voters = [Identity.generate(f"voter-{i}") for i in range(3)]

    def producer(identity: Identity, **kwargs: Any) -> EventProducer:
        return EventProducer(identity, bootstrap, topic_prefix=prefix, seal_interval_ms=50, **kwargs)

    worker = CliWorker(env, "w1", home)
    raw = RawWriter(bootstrap)
    expected: dict[str, tuple[str, bytes | None]] = {}  # reason → (source topic, original bytes if we wrote them)
    try:
        # --- agents: one registers; a stranger heartbeats without ever registering
        with producer(agent) as p:
            p.produce("agents.registered", {"agent_id": agent.did, "address": "a:1", "capabilities": ["db.query"],
                                            "max_concurrency": 8, "health_score": 1.0})
            p.produce("agents.heartbeat", {"agent_id": agent.did, "health_score": 1.0, "current_load": 0,
                                           "latency_ms": 10.0, "interval_ms": 600_000})
        with producer(stranger) as p:
            p.produce("agents.heartbeat", {"agent_id": stranger.did, "health_score": 1.0, "current_load": 0,
                                           "latency_ms": 10.0})
        expected["unknown-agent"] = (prefix + "agents", None)
        # the registry replica has the agent before commands are routed (queries answer from it)
        wait_for(lambda: worker.get(f"/swarmlog/agents/{agent.did}/")[0] == 200, 90, "the agent in the registry",
                 [worker])

        # --- commands: routed to the only capable agent
        command_ids = [f"cmd-{i}" for i in range(3)]
        with producer(coordinator) as client:
            for cid in command_ids:
                client.produce("commands.requested", {"command_id": cid, "capability": "db.query", "args": b"{}",
                                                      "requester": coordinator.did, "strategy": "BEST_FIT"})

        # --- consensus: three signed votes, then a forged copy, a duplicate, garbage, an unknown key
        pid = "proposal-1"
        with producer(coordinator) as client:
            client.produce("consensus.proposed", {
                "proposal_id": pid, "operation": "deploy", "proposer": coordinator.did, "policy": "SIMPLE_MAJORITY",
                "eligible_voters": [v.did for v in voters], "voter_count": 3, "deadline_ms": 2**42}, sign=True)
        for voter, choice in zip(voters, ["APPROVE", "APPROVE", "REJECT"], strict=True):
            with producer(voter) as p:
                p.produce("consensus.vote", {"proposal_id": pid, "voter": voter.did, "choice": choice,
                                             "confidence": 1.0, "weight": 1.0}, sign=True)
        consensus = prefix + "consensus"
        part, _off, genuine_v3 = find_event(bootstrap, consensus, voters[2].did, "consensus.vote")
        payload_bytes = EnvelopeCodec().decode(genuine_v3).payload_bytes
        at = genuine_v3.index(payload_bytes) + len(payload_bytes) // 2
        forged = genuine_v3[:at] + bytes([genuine_v3[at] ^ 0x01]) + genuine_v3[at + 1:]
        raw.write(consensus, part, pid.encode(), forged)
        expected["forged"] = (consensus, forged)
        _part, _off, genuine_v1 = find_event(bootstrap, consensus, voters[0].did, "consensus.vote")
        raw.write(consensus, part, pid.encode(), genuine_v1)  # the same record produced twice
        expected["duplicate"] = (consensus, genuine_v1)
        garbage = b"\x00 not an event at all"
        raw.write(consensus, part, pid.encode(), garbage)
        expected["malformed"] = (consensus, garbage)
        codec = EnvelopeCodec()
        event = codec.decode(genuine_v1)
        unknown_key = codec.encode({
            "event_id": event.event_id, "event_type": event.event_type, "payload_schema": event.payload_schema,
            "producer": "did:key:zNotAKeyAtAll", "stream_id": event.stream_id, "lane": event.lane, "seq": event.seq,
            "prev_hash": event.prev_hash, "timestamp_ms": event.timestamp_ms, "subject": event.subject,
            "payload": event.payload_bytes, "auth": None})
        raw.write(consensus, part, pid.encode(), unknown_key)
        expected["unknown-key"] = (consensus, unknown_key)

        # --- sessions: a producer dies before sealing; a live session keeps its partition busy
        dead_sid = "dead-session"
        dying = producer(dies, background_seal=False, seal_batch=100_000)
        dying.produce("sessions.opened", {"session_id": dead_sid, "owner": dies.did, "timeout_ms": 600_000})
        dying._kafka.flush(10)  # delivered, never sealed: the process "dies" here
        expected["unsealed"] = (prefix + "sessions", None)
        sid = same_partition_as(dead_sid, "live-session")
        attached = [f"work-{i}" for i in range(WINDOW + 5)]
        with producer(coordinator) as client:
            client.produce("sessions.opened", {"session_id": sid, "owner": coordinator.did,
                                               "participants": [agent.did], "timeout_ms": 600_000})
            for i, cid in enumerate(attached):
                if i % 4 == 0:
                    client.seal()  # a live producer's seals follow its events within the window
                client.produce("sessions.command_attached", {"session_id": sid, "command_id": cid,
                                                             "capability": "db.query", "agent_id": agent.did})
        with producer(agent) as p:  # receipts name the session; they live on `receipts`, keyed by command
            for i, cid in enumerate(attached[:5]):
                p.produce("commands.receipt", {"command_id": cid, "agent_id": agent.did, "capability": "db.query",
                                               "session_id": sid, "started_ms": 1, "finished_ms": 2,
                                               "duration_ms": 1, "success": i != 4})

        # --- every bad record is dead-lettered once, with its bytes and position
        dead_topic = prefix + "deadletter"

        def letters() -> dict[tuple[str, int, int], dict[str, Any]]:
            return {(d["source_topic"], d["source_partition"], d["source_offset"]): d
                    for d in authenticated_payloads(bootstrap, dead_topic, "deadletter.recorded")}

        found = wait_for(lambda: (lambda ls: ls if {d["reason"] for d in ls.values()} >= set(expected) else None)(
            letters()), 120, "every dead letter", [worker])
        assert sorted(d["reason"] for d in found.values()) == sorted(expected)
        for (topic, partition, offset), letter in found.items():
            want_topic, want_bytes = expected[letter["reason"]]
            assert topic == want_topic, letter["reason"]
            assert letter["original_value"] == record_at(bootstrap, topic, partition, offset)
            if want_bytes is not None:
                assert letter["original_value"] == want_bytes, letter["reason"]
        by_reason = {d["reason"]: d for d in found.values()}
        assert codec.decode(by_reason["unknown-agent"]["original_value"]).producer == stranger.did
        assert codec.decode(by_reason["unsealed"]["original_value"]).producer == dies.did

        # --- per-reason counters in the health view
        health = worker.get("/swarmlog/health/")[2]
        domains = health["domains"]
        assert {k: domains["consensus"].get(k) for k in ("forged", "duplicate", "malformed", "unknown-key")} == {
            "forged": 1, "duplicate": 1, "malformed": 1, "unknown-key": 1}
        assert domains["agents"].get("unknown-agent") == 1
        assert domains["sessions"].get("unsealed") == 1

        # --- valid events around them: applied exactly once
        status, _, proposal = worker.get(f"/swarmlog/proposals/{pid}/")
        assert status == 200 and proposal["status"] == "APPROVED"
        assert sorted(proposal["counted_voters"]) == sorted(v.did for v in voters[:2])
        assert proposal["equivocating_voters"] == []  # the forged copy of a vote is not a second vote
        assert len([d for d in authenticated_payloads(bootstrap, consensus, "consensus.decided")
                    if d["proposal_id"] == pid]) == 1
        for cid in command_ids:
            routed = wait_for(lambda c=cid: (lambda r: r[2] if r[0] == 200 and r[2]["status"] == "ROUTED" else None)(
                worker.get(f"/swarmlog/commands/{c}/")), 60, f"command {cid} routed", [worker])
            assert routed["agent"] == agent.did
        session = wait_for(lambda: (lambda r: r[2] if r[0] == 200 and r[2]["counters"]["receipts"] == 5 else None)(
            worker.get(f"/swarmlog/sessions/{sid}/")), 60, "the session's receipts", [worker])
        assert session["counters"]["commands"] == len(attached)
        assert (session["counters"]["succeeded"], session["counters"]["failed"]) == (4, 1)
        receipts = [r for r in session["history"] if r["kind"] == "receipt"]
        # receipts of different commands sit in different receipts partitions: their history order is the
        # order their forwarded copies reached the session's partition (the same for a replay, checked below)
        assert sorted(r["command_id"] for r in receipts) == attached[:5]
        assert {r["agent_id"] for r in receipts} == {agent.did} and all(r["attached"] for r in receipts)
        assert worker.get(f"/swarmlog/sessions/{dead_sid}/")[0] == 404  # never applied
        # the CLI: from the running worker, and from a replay of the log (what an auditor computes)
        for extra in ([], ["--from-log"]):
            shown = subprocess.run([sys.executable, "-m", "swarmlog.infra.cli", "sessions", "show", sid, "--json",
                                    *extra], env=env, capture_output=True, text=True, timeout=120)
            assert shown.returncode == 0, shown.stderr[-2000:]
            assert json.loads(shown.stdout)["history"] == session["history"], extra
        for extra in ([], ["--from-log"]):  # a routed command, as the worker and as a replay see it
            shown = subprocess.run([sys.executable, "-m", "swarmlog.infra.cli", "commands", "show", command_ids[0],
                                    "--json", *extra], env=env, capture_output=True, text=True, timeout=120)
            assert shown.returncode == 0, shown.stderr[-2000:]
            assert json.loads(shown.stdout) == worker.get(f"/swarmlog/commands/{command_ids[0]}/")[2], extra
        missing = subprocess.run([sys.executable, "-m", "swarmlog.infra.cli", "sessions", "show", dead_sid],
                                 env=env, capture_output=True, text=True, timeout=120)
        assert missing.returncode == 2 and "unknown session" in missing.stderr

        # --- the committed offset moved past the unsealed event (the worker is not held by it)
        sessions_topic = prefix + "sessions"
        dead_letter = by_reason["unsealed"]
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "swarmlog-" + prefix.strip(".-_"),
                             "enable.auto.commit": False})
        try:
            def committed() -> bool:
                [tp] = consumer.committed([TopicPartition(sessions_topic, dead_letter["source_partition"])],
                                          timeout=10)
                return tp.offset > dead_letter["source_offset"]

            wait_for(committed, 60, "the committed offset to pass the unsealed event", [worker])
        finally:
            consumer.close()
    finally:
        worker.stop()
    # --- the worker's tables (read back from their changelogs) equal a replay of the same topics
    equal = compare_live_tables(bootstrap, prefix)
    assert {"agents", "routing", "consensus", "sessions"} <= set(equal) and all(equal.values()), equal
