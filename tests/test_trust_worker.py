"""Trust events through a real ``swarmlog worker`` on the real broker: tables, dead letters, live == replay, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from swarmlog.infra.run import compare_live_tables
from swarmlog.projections.delegation import proof_hash
from swarmlog.projections.engine import Engine
from swarmlog.projections.trust import TrustProjection, check_delegation, trust_score
from swarmlog.streams.identity import Identity
from swarmlog.streams.reader import plan_ranges, read_records, read_verified
from swarmlog.streams.verify import Status
from tests.support.live import LiveSetup

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent


def replayed(bootstrap: str, prefix: str) -> Any:
    engine = Engine([TrustProjection()])
    for record in read_records(bootstrap, plan_ranges(bootstrap, [prefix + "trust"])):
        engine.feed(record)
    engine.finish()
    return engine.stores["trust"]


def dead_letters(bootstrap: str, prefix: str) -> list[dict[str, Any]]:
    return [v.event.decode_payload() for v in read_verified(bootstrap, [prefix + "deadletter"])
            if v.status is Status.AUTHENTICATED and v.event is not None]


def test_trust_events_through_a_live_worker(kafka_bootstrap: str, unique_topics: Any, tmp_path: Path) -> None:
    live = LiveSetup(kafka_bootstrap, unique_topics.new_prefix(), tmp_path, partitions=3)
    prefix, env = live.prefix, live.env
    agents = [Identity.generate(f"trust-agent-{i}") for i in range(4)]
    dids = [a.did for a in agents]
    producers = [live.producer(a) for a in agents]
    t0 = 1_700_000_000_000

    def observe(who: int, about: int, outcome: str, ts: int, **kw: Any) -> None:
        payload = {"agent_id": dids[about], "observer": dids[who], "outcome": outcome, "error_rate": 0.0}
        producers[who].produce("trust.observation", {**payload, **kw}, timestamp_ms=ts)

    for step in range(30):  # 0 and 1 vouch for 2; 3 fails everyone
        observe(0, 2, "SUCCESS", t0 + step)
        observe(1, 2, "SUCCESS", t0 + step)
        observe(2, 0, "SUCCESS", t0 + step)
        observe(0, 3, "FAILURE", t0 + step)
    nb, exp = t0, t0 + 10 * 86_400_000
    producers[0].produce("trust.delegated", {
        "delegation_id": "live-d1", "delegator": dids[0], "delegate": dids[1], "capability": "db.*",
        "not_before_ms": nb, "expires_at_ms": exp, "depth": 0, "max_depth": 1,
        "proof_hash": proof_hash(dids[0], dids[1], "db.*", nb, exp, None)}, timestamp_ms=t0)
    producers[1].produce("trust.delegated", {
        "delegation_id": "live-d2", "parent_delegation_id": "live-d1", "delegator": dids[1], "delegate": dids[2],
        "capability": "db.query", "not_before_ms": nb, "expires_at_ms": exp, "depth": 1, "max_depth": 0,
        "proof_hash": proof_hash(dids[1], dids[2], "db.query", nb, exp, "live-d1")}, timestamp_ms=t0)
    producers[1].produce("trust.revoked", {"target": "live-d2", "target_kind": "DELEGATION", "reason": "CESSATION",
                                           "effective_ms": t0 + 100}, timestamp_ms=t0 + 100)
    # bad input: a report signed by 3 in 1's name, and one about something that is not an agent
    observe(3, 2, "FAILURE", t0 + 50, observer=dids[1])
    observe(3, 2, "FAILURE", t0 + 51, agent_id="not-an-agent")
    live.flush()
    # a tampered copy of a genuine observation (payload byte flipped): its hash is in no seal
    genuine = next(r for r in read_records(kafka_bootstrap, plan_ranges(kafka_bootstrap, [prefix + "trust"]))
                   if b"trust.observation" in r.value)
    tampered = bytearray(genuine.value)
    tampered[-5] ^= 0x01
    raw = Producer({"bootstrap.servers": kafka_bootstrap})
    raw.produce(prefix + "trust", bytes(tampered), genuine.key, partition=genuine.partition)
    assert raw.flush(10) == 0

    worker = live.worker("trust-worker")
    try:
        deadline = time.monotonic() + 150
        reasons: list[str] = []
        same: dict[str, bool] = {}
        while time.monotonic() < deadline:
            reasons = sorted(d["reason"] for d in dead_letters(kafka_bootstrap, prefix))
            if {"forged", "observer-mismatch", "unknown-agent"} <= set(reasons):
                same = compare_live_tables(kafka_bootstrap, prefix)
                if same.get("trust"):
                    break
            assert worker.proc.poll() is None, worker.log.read_text()[-3000:]
            time.sleep(2)
        assert {"forged", "observer-mismatch", "unknown-agent"} <= set(reasons), \
            (reasons, worker.log.read_text()[-3000:])
        assert same.get("trust") is True, "the worker's trust table differs from a replay of the trust topic"
    finally:
        live.close()

    store = replayed(kafka_bootstrap, prefix)
    assert store.get(f"agent/{dids[2]}")["samples"] == 60  # the forged and refused reports did not count
    assert trust_score(store, dids[2], pretrusted=[dids[0]]) > trust_score(store, dids[3], pretrusted=[dids[0]])
    assert check_delegation(store, "live-d2", t0 + 99).valid
    assert check_delegation(store, "live-d2", t0 + 100).reason == "revoked-link"

    # the CLI computes the same from the log
    def cli(*args: str) -> Any:
        proc = subprocess.run([sys.executable, "-m", "swarmlog.infra.cli", "trust", *args, "--json"], env=env,
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
        return proc.returncode, (json.loads(proc.stdout) if proc.returncode == 0 else proc.stderr)

    code, score = cli("score", dids[2], "--pretrusted", dids[0])
    assert code == 0, score
    assert score["global"] == trust_score(store, dids[2], pretrusted=[dids[0]])
    assert score["spec"]["samples"] == 60
    code, found = cli("path", dids[1], dids[0])
    assert code == 0 and found["path"] == [dids[1], dids[2], dids[0]], found
    code, held = cli("delegations", dids[2], "--at", str(t0 + 100))
    assert code == 0 and [(d["delegation_id"], d["check"]["reason"]) for d in held["held"]] == \
        [("live-d2", "revoked-link")]
    code, err = cli("score", "did:key:zNobody")
    assert code == 2 and "unknown agent" in err
