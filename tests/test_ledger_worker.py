"""The ledger in real workers on the real broker: appends, signed checkpoints, failover, replay, CLI."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from swarmlog.projections.base import MemoryStore, canonical_json, snapshot
from swarmlog.projections.ledger import LaneLedger, LedgerPolicy, replay_ledger
from swarmlog.streams import merkle as m
from swarmlog.streams.checkpoint import lane_origin, verify_checkpoint
from swarmlog.streams.identity import Identity
from swarmlog.streams.ids import uuid_text
from swarmlog.streams.keystore import Keystore
from swarmlog.streams.producer import EventProducer
from swarmlog.streams.reader import plan_ranges, read_records, read_verified
from swarmlog.streams.verify import Status
from tests.test_worker import AppWithTestDomain, changelog_state, payload, wait_for, worker_env  # noqa: F401

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
EVERY = 40


def checkpoints(bootstrap: str, topic: str) -> list[tuple[str, dict[str, Any]]]:
    """(signer DID, payload) of every authenticated checkpoint on the ledger topic."""
    return [(v.event.producer, v.event.decode_payload()) for v in read_verified(bootstrap, [topic])
            if v.status is Status.AUTHENTICATED and v.event is not None
            and v.event.event_type == "ledger.checkpoint"]


def test_workers_ledger_equals_replay_across_failover_and_checkpoints_verify(
        worker_env: dict[str, str], unique_topics: Any, tmp_path: Path) -> None:  # noqa: F811
    bootstrap = worker_env["SWARMLOG_BOOTSTRAP"]
    topic = worker_env["TEST_TOPIC"]
    ledger_topic = unique_topics("ledger", 1)
    env = {**worker_env, "TEST_LEDGER_TOPIC": ledger_topic, "SWARMLOG_LEDGER_CHECKPOINT_LEAVES": str(EVERY),
           "SWARMLOG_LEDGER_CHECKPOINT_INTERVAL_MS": "3600000"}
    producer = EventProducer(Identity.generate("ledger-test-producer"), bootstrap,
                             identity_topic=worker_env["TEST_TRUST_TOPIC"], seal_batch=25)

    def send(start: int, stop: int) -> None:
        for i in range(start, stop):
            producer.produce("deadletter.recorded", payload(i), subject=f"agent-{i % 7}", topic=topic)
        producer.flush()

    send(0, 150)
    first = AppWithTestDomain(env, "w1", tmp_path)
    second: AppWithTestDomain | None = None
    changelog = f"{worker_env['TEST_APP_ID']}-swarmlog-ledger-test-changelog"
    policy = LedgerPolicy(checkpoint_leaves=EVERY, checkpoint_interval_ms=3_600_000)

    def replayed() -> MemoryStore:
        store = replay_ledger(read_records(bootstrap, plan_ranges(bootstrap, [topic])), policy).store
        assert isinstance(store, MemoryStore)
        return store

    def live_equals_replay() -> bool:
        live = changelog_state(bootstrap, changelog)
        return canonical_json(live) == canonical_json(snapshot(replayed(), include_marks=True))

    try:
        wait_for(lambda: len(checkpoints(bootstrap, ledger_topic)) >= 2, 90, "checkpoints from worker 1", [first])
        second = AppWithTestDomain(env, "w2", tmp_path)
        send(150, 300)
        time.sleep(3)
        first.stop(signal.SIGKILL)  # no clean shutdown: its lanes move with their table changelog
        send(300, 450)
        wait_for(live_equals_replay, 150, "live ledger == replay of the log", [second])

        # the CLI against the running worker (its HTTP views) and against the log agree
        cli_env = {**env, "SWARMLOG_HOME": str(tmp_path)}
        store = replayed()
        sample = next(v.event for v in read_verified(bootstrap, [topic])
                      if v.status is Status.AUTHENTICATED and v.event is not None
                      and v.event.event_type == "deadletter.recorded")
        assert sample is not None
        event_id = uuid_text(sample.event_id)
        docs = []
        for extra in ([], ["--from-log", "--topic", topic]):
            out = subprocess.run([sys.executable, "-m", "swarmlog.infra.cli", "ledger", "prove", event_id, "--json",
                                  *extra], cwd=ROOT, env=cli_env, capture_output=True, text=True, timeout=120)
            assert out.returncode == 0, out.stderr
            docs.append(json.loads(out.stdout))
        assert docs[0]["proof"]["root_hash"] == docs[1]["proof"]["root_hash"]
        doc = docs[1]
        lane = LaneLedger(store, doc["origin"])
        proof = m.proof_from_json(doc["proof"])
        assert isinstance(proof, m.InclusionProof)
        proof.verify(leaf_hash=m.leaf_hash(sample.hash), root_hash=lane.log.root())
        assert doc["timestamp"] is not None  # the first checkpoint covering it, with its own proof
        m.proof_from_json(doc["timestamp"]["proof"]).verify(  # type: ignore[call-arg]
            leaf_hash=m.leaf_hash(sample.hash), root_hash=bytes.fromhex(doc["timestamp"]["checkpoint"]["root_hash"]))
        out = subprocess.run([sys.executable, "-m", "swarmlog.infra.cli", "ledger", "root", "--json"], cwd=ROOT,
                             env=cli_env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert {r["origin"] for r in json.loads(out.stdout)["lanes"]} == {lane_origin(topic, p) for p in range(3)}
        second.stop()
    finally:
        producer.close()
        first.stop(signal.SIGKILL)
        if second is not None:
            second.stop(signal.SIGKILL)

    # every checkpoint: signed by a worker (both note lines + hybrid), equal to the replayed tree at its
    # size, and consistent with the previous checkpoint of its origin
    keys = Keystore(tmp_path / "keys")
    publics = {identity.did: identity.public for identity in (keys.load("w1"), keys.load("w2"))}
    store = replayed()
    found = checkpoints(bootstrap, ledger_topic)
    assert len(found) >= (450 // 3) // EVERY * 3 - 3
    last_root: dict[str, tuple[int, bytes]] = {}
    for signer, cp in found:
        previous = last_root.get(cp["origin"])
        previous_root = previous[1] if previous and previous[0] == cp["previous_tree_size"] else None
        verify_checkpoint(cp, publics[signer], previous_root=previous_root)
        assert cp["tree_size"] % EVERY == 0
        assert LaneLedger(store, cp["origin"]).log.root(cp["tree_size"]) == cp["root_hash"]
        if previous is None or cp["tree_size"] > previous[0]:
            last_root[cp["origin"]] = (cp["tree_size"], cp["root_hash"])
    total = sum(LaneLedger(store, origin).size for origin in {lane_origin(topic, p) for p in range(3)})
    assert total >= 450  # every event (plus identity documents) is a leaf, once
