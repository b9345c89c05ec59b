"""The swarm layer's false-positive checks feed the trust network (issue 7, item 7).

Unit tests drive the pure checks and the projections that call them; the integration test
runs a real ``swarmlog worker`` on the embedded broker and follows each check's observation
from the refused or completed event to the trust domain's table.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarmlog.infra.run import compare_live_tables
from swarmlog.infra.topics import provision
from swarmlog.processors.runtime import OutputSink
from swarmlog.projections.base import SIGNER, EventContext, InvalidEvent, MemoryStore, Stores
from swarmlog.projections.engine import Engine, Outcome
from swarmlog.projections.registry import RegistryProjection
from swarmlog.projections.swarm_checks import (
    ALERT_CONTENT_TYPE,
    MANIPULATION_GAP,
    MIN_MANIPULATION_SAMPLES,
    ROLE_VERIFICATION,
    AlertError,
    bid_outcome,
    classify_alert,
    deposit_speed_ok,
    observation,
    parse_alert,
    rating_gap,
)
from swarmlog.projections.swarm_resilience import ROLE_CHANGED, RoleProjection
from swarmlog.projections.swarm_space import MESSAGE, PHEROMONE, SwarmSpaceProjection
from swarmlog.projections.trust import TrustProjection, neutral, observe
from swarmlog.streams.chain import ChainWriter, OutRecord
from swarmlog.streams.codec import default_store, encode_body
from swarmlog.streams.identity import Identity
from swarmlog.streams.producer import EventProducer
from swarmlog.streams.reader import plan_ranges, read_records, read_verified
from swarmlog.streams.verify import Status
from tests.support.live import LiveSetup, wait_for
from tests.support.logs import to_raw

AGENT = "did:key:z6MkAgent"


def ctx(event_type: str, producer: str, subject: str, ts: int, seq: int, lane: str = "swarm/0") -> EventContext:
    return EventContext(f"e{seq}", event_type, producer, subject, ts, lane, seq, "s")


# ---------------------------------------------------------------------------- pure checks
def test_bid_outcome_compares_the_duration_with_the_bids_own_estimate() -> None:
    assert bid_outcome(True, 1_000, 1_000) == "SUCCESS"
    assert bid_outcome(True, 1_500, 1_000) == "SUCCESS"  # within the 50 % tolerance
    assert bid_outcome(True, 1_501, 1_000) == "TIMEOUT"
    assert bid_outcome(False, 10, 1_000) == "FAILURE"


def test_deposit_speed_allows_walking_and_one_cell_of_slack_but_not_teleporting() -> None:
    last = {"x": 0, "y": 0, "ts": 0}
    assert deposit_speed_ok(None, 500, 500, 0)
    assert deposit_speed_ok(last, 1, 1, 0)  # a neighbouring cell at the same instant
    assert not deposit_speed_ok(last, 2, 0, 0)
    assert deposit_speed_ok(last, 5, 5, 1_000)  # 4 cells/s + 1
    assert not deposit_speed_ok(last, 6, 0, 1_000)
    assert not deposit_speed_ok(last, 40, 0, -1_000)  # out of order on the wire: same rule


@given(st.integers(-50, 50), st.integers(-50, 50), st.integers(0, 20_000))
def test_deposit_speed_is_symmetric_in_time_and_monotone_in_elapsed_time(x: int, y: int, dt: int) -> None:
    last = {"x": 0, "y": 0, "ts": 10_000}
    assert deposit_speed_ok(last, x, y, 10_000 + dt) == deposit_speed_ok(last, x, y, 10_000 - dt)
    if deposit_speed_ok(last, x, y, 10_000 + dt):
        assert deposit_speed_ok(last, x, y, 10_000 + dt + 1)


def test_alert_bodies_are_parsed_strictly() -> None:
    assert parse_alert(b'{"kind": "agent-failed", "agent_id": "a", "severity": "critical"}') == \
        ("agent-failed", "a", "critical")
    for bad in (b"not json", b"[1]", b'{"kind": "sky-falling", "agent_id": "a"}', b'{"kind": "agent-failed"}',
                b'{"kind": "agent-failed", "agent_id": "a", "severity": "apocalyptic"}', b"\xff"):
        with pytest.raises(AlertError):
            parse_alert(bad)


def test_alert_classification_follows_the_registry_not_the_sender() -> None:
    healthy = {"status": "ACTIVE", "health_status": "HEALTHY"}
    degraded = {"status": "ACTIVE", "health_status": "DEGRADED"}
    failed = {"status": "ACTIVE", "health_status": "FAILED"}
    expired = {"status": "EXPIRED", "health_status": "HEALTHY"}
    assert classify_alert("agent-failed", healthy) == (False, "info")
    assert classify_alert("agent-failed", degraded) == (False, "warning")
    assert classify_alert("agent-failed", failed) == (True, "critical")
    assert classify_alert("agent-failed", expired) == (True, "critical")
    assert classify_alert("agent-degraded", degraded) == (True, "warning")
    assert classify_alert("agent-degraded", healthy) == (False, "info")
    assert classify_alert("agent-failed", None) == (False, "info")


def test_rating_gap_needs_enough_samples_on_both_sides() -> None:
    agent, edge = neutral(), neutral()
    for _ in range(MIN_MANIPULATION_SAMPLES):
        edge = observe(edge, 0.8, 0)  # the observer praises
        agent = observe(agent, 0.8, 0)
    assert rating_gap(edge, agent) is None  # nobody else has spoken
    for _ in range(MIN_MANIPULATION_SAMPLES):
        agent = observe(agent, -1.0, 0)  # everyone else saw failures
    gap = rating_gap(edge, agent)
    assert gap is not None and gap == pytest.approx(0.9 - 0.0)


# ---------------------------------------------------------------------------- projections
def test_a_completed_task_reports_whether_the_winner_kept_its_estimate() -> None:
    from swarmlog.projections.swarm_tasks import ASSIGNED, BID, COMPLETED, POSTED, SwarmTaskProjection

    projection, store = SwarmTaskProjection(bid_window_ms=100), MemoryStore()

    def feed(event_type: str, producer: str, ts: int, seq: int, payload: dict[str, Any]) -> list[Any]:
        return projection.apply(Stores(store), ctx(event_type, producer, "t1", ts, seq), payload)

    feed(POSTED, "poster", 0, 1, {"task_id": "t1", "poster": "poster", "required_skills": ["gpu"], "reward": 10.0})
    feed(BID, AGENT, 10, 2, {"task_id": "t1", "agent_id": AGENT, "bid_price": 5.0, "estimated_completion_ms": 1_000,
                             "confidence": 0.9, "current_load": 0})
    assigned = projection.expire_due(Stores(store), 100)
    assert [d.payload["agent_id"] for d in assigned] == [AGENT]
    feed(ASSIGNED, "worker", 100, 3, assigned[0].payload)
    derived = feed(COMPLETED, AGENT, 3_000, 4, {"task_id": "t1", "agent_id": AGENT, "success": True,
                                                 "duration_ms": 2_400, "detail": ""})
    assert [(d.event_type, d.subject) for d in derived] == [("trust.observation", AGENT)]
    assert derived[0].payload | {} == {"agent_id": AGENT, "observer": SIGNER, "outcome": "TIMEOUT",
                                       "error_rate": 0.0, "duration_ms": 2_400, "command_id": None,
                                       "capability": "gpu", "check": "bid-reliability"}
    assert store.get("task/t1")["bid_kept"] == "TIMEOUT"
    # the same completion redelivered (same event id) reports nothing again
    assert feed(COMPLETED, AGENT, 3_000, 4, {"task_id": "t1", "agent_id": AGENT, "success": True,
                                             "duration_ms": 2_400, "detail": ""}) == []


def test_a_role_change_naming_a_role_the_agent_does_not_hold_is_refused_and_reported() -> None:
    projection, store = RoleProjection(), MemoryStore()
    projection.apply(Stores(store), ctx(ROLE_CHANGED, AGENT, AGENT, 0, 1),
                     {"agent_id": AGENT, "role": "scout", "reason": "assignment"})
    with pytest.raises(InvalidEvent) as refused:
        projection.apply(Stores(store), ctx(ROLE_CHANGED, "did:key:z6MkImpostor", AGENT, 1, 2),
                         {"agent_id": AGENT, "previous_role": "leader", "role": "worker", "reason": "stress"})
    assert refused.value.reason == "role-mismatch"
    assert [(d.payload["agent_id"], d.payload["outcome"], d.payload["check"]) for d in refused.value.derived] == \
        [("did:key:z6MkImpostor", "FAILURE", "role-verification")]
    assert store.get(f"role/{AGENT}")["role"] == "scout"


def _deposit(projection: SwarmSpaceProjection, store: MemoryStore, signer: str, depositor: str, x: int, y: int,
             ts: int, seq: int) -> None:
    projection.apply(Stores(store), ctx(PHEROMONE, signer, "f1", ts, seq),
                     {"field_id": "f1", "x": x, "y": y, "pheromone_type": "success", "intensity": 0.5,
                      "depositor": depositor})


def test_spoofed_pheromone_deposits_are_refused_and_reported() -> None:
    projection, store = SwarmSpaceProjection(), MemoryStore()
    _deposit(projection, store, AGENT, AGENT, 0, 0, 0, 1)
    _deposit(projection, store, AGENT, AGENT, 4, 0, 1_000, 2)  # walked 4 cells in a second
    before = store.get("field/f1")
    with pytest.raises(InvalidEvent) as teleport:
        _deposit(projection, store, AGENT, AGENT, 50, 0, 1_500, 3)
    assert teleport.value.reason == "pheromone-spoofing"
    with pytest.raises(InvalidEvent) as impersonation:
        _deposit(projection, store, "did:key:z6MkForger", AGENT, 4, 1, 1_600, 4)
    assert impersonation.value.reason == "depositor-mismatch"
    reported = [d.payload for e in (teleport, impersonation) for d in e.value.derived]
    assert [(p["agent_id"], p["outcome"], p["check"]) for p in reported] == \
        [(AGENT, "FAILURE", "pheromone-spoofing"), ("did:key:z6MkForger", "FAILURE", "pheromone-spoofing")]
    assert store.get("field/f1") == before  # neither spoofed deposit reached the field


def _alert(projection: SwarmSpaceProjection, store: MemoryStore, registry: MemoryStore | None, about: str,
           kind: str, seq: int, hop: int = 0, body: bytes | None = None) -> list[Any]:
    content = body if body is not None else json.dumps({"kind": kind, "agent_id": about}).encode()
    others = {"registry": registry} if registry is not None else {}
    return projection.apply(Stores(store, others), ctx(MESSAGE, "did:key:z6MkSender", f"m{seq}", 5_000, seq),
                            {"message_id": f"m{seq}", "sender": "did:key:z6MkSender", "scope": "GLOBAL_ALERT",
                             "ttl": 20 - hop, "hop": hop, "content": content, "content_type": ALERT_CONTENT_TYPE,
                             "compression": "NONE", "seen_by": []})


def test_global_alerts_are_validated_against_the_registry() -> None:
    registry = MemoryStore()
    registration = {"agent_id": AGENT, "address": "a", "capabilities": ["x"], "max_concurrency": 1}
    RegistryProjection().apply(Stores(registry), ctx("agents.registered", AGENT, AGENT, 0, 1, "agents/0"),
                               registration)
    projection, store = SwarmSpaceProjection(), MemoryStore()
    false_alarm = _alert(projection, store, registry, AGENT, "agent-failed", 1)
    assert [(d.payload["agent_id"], d.payload["outcome"], d.payload["error_rate"], d.payload["check"])
            for d in false_alarm] == [("did:key:z6MkSender", "PARTIAL_FAILURE", 1.0, "alert-validation")]
    unknown = _alert(projection, store, registry, "did:key:z6MkNobody", "agent-degraded", 2)
    assert unknown[0].payload["outcome"] == "PARTIAL_FAILURE"
    RegistryProjection().apply(Stores(registry), ctx("agents.health_changed", "monitor", AGENT, 1, 2, "agents/0"),
                               {"agent_id": AGENT, "previous_status": "HEALTHY", "status": "FAILED",
                                "health_score": 0.1, "reason": "probe"})
    confirmed = _alert(projection, store, registry, AGENT, "agent-failed", 3)
    assert confirmed[0].payload["outcome"] == "SUCCESS"
    assert store.get("msg/m3")["alert"] == {"kind": "agent-failed", "agent_id": AGENT, "claimed_severity": "warning"}
    # the verdict is reported once: a relay or a bare replay (no registry) reports nothing
    assert _alert(projection, store, registry, AGENT, "agent-failed", 3, hop=1) == []
    assert _alert(SwarmSpaceProjection(), MemoryStore(), None, AGENT, "agent-failed", 4) == []
    with pytest.raises(InvalidEvent) as malformed:
        _alert(projection, store, registry, AGENT, "agent-failed", 5, body=b'{"kind": "meteor"}')
    assert malformed.value.reason == "invalid-alert" and malformed.value.derived == []


def test_an_observer_far_from_everyone_else_is_reported_once() -> None:
    projection, store = TrustProjection(), MemoryStore()
    rated = Identity.generate("rated").did  # the trust projection only scores real did:keys
    honest = [f"did:key:z6MkHonest{i}" for i in range(3)]
    stuffer = "did:key:z6MkStuffer"
    seq, reported = 0, []
    for round_ in range(4):
        for observer, outcome in [(h, "FAILURE") for h in honest] + [(stuffer, "SUCCESS")] * 2:
            seq += 1
            derived = projection.apply(Stores(store), ctx("trust.observation", observer, rated, round_, seq, "trust/0"),
                                       {"agent_id": rated, "observer": observer, "outcome": outcome})
            reported += [(observer, d.payload["agent_id"], d.payload["outcome"], d.payload["check"]) for d in derived]
    assert reported == [(stuffer, stuffer, "FAILURE", "trust-manipulation")]
    assert store.get(f"manipulation/{stuffer}/{rated}")["gap"] >= MANIPULATION_GAP
    assert all(store.get(f"manipulation/{h}/{rated}") is None for h in honest)


def test_the_engine_emits_a_refusals_observation_beside_its_dead_letter() -> None:
    agent = Identity.generate("checks-agent")
    store = default_store()
    writer = ChainWriter(agent)
    identity = store.for_event_type("trust.identity")
    role = store.for_event_type(ROLE_CHANGED)
    out: list[OutRecord] = []
    _ref, value = writer.append(identity, encode_body(identity, writer.identity_payload()), agent.did, "trust", 0,
                                sign=True)
    out.append(OutRecord("trust", 0, b"", value))
    for payload in ({"agent_id": agent.did, "role": "scout", "reason": "assignment"},
                    {"agent_id": agent.did, "previous_role": "leader", "role": "x", "reason": "stress"}):
        _ref, value = writer.append(role, encode_body(role, payload), agent.did, "swarm", 0)
        out.append(OutRecord("swarm", 0, agent.did.encode(), value))
    out.extend(writer.seal())
    engine = Engine([RoleProjection()])
    outcome = engine.feed_all(to_raw(out))
    engine.finish()
    assert [d.reason for d in outcome.dead_letters] == ["role-mismatch"]
    assert [(d.event_type, d.payload["agent_id"], d.payload["check"]) for _, d in outcome.derived] == \
        [("trust.observation", agent.did, "role-verification")]
    assert engine.stores["swarm_roles"].get(f"role/{agent.did}")["role"] == "scout"


def test_the_sink_names_the_signing_worker_as_observer(kafka_bootstrap: str, unique_topics: Any) -> None:
    prefix = unique_topics.new_prefix()
    provision(kafka_bootstrap, prefix=prefix, partitions=1)
    worker = Identity.generate("checks-worker")
    producer = EventProducer(worker, kafka_bootstrap, topic_prefix=prefix)
    try:
        sink = OutputSink(producer, "w")
        outcome = Outcome()
        outcome.derived.append((_Source(), observation(AGENT, "FAILURE", ROLE_VERIFICATION)))
        sink.emit(outcome)
        sink.flush()
    finally:
        producer.close()
    seen = [v.event for v in read_verified(kafka_bootstrap, [prefix + "trust"])
            if v.status is Status.AUTHENTICATED and v.event is not None and v.event.event_type == "trust.observation"]
    payloads = [e.decode_payload() for e in seen]
    assert [(p["agent_id"], p["observer"], p["check"]) for p in payloads] == [(AGENT, worker.did, "role-verification")]
    assert seen[0].producer == worker.did


class _Source:
    """The event a derived one comes from: the sink only reads its subject."""

    subject = AGENT


# ---------------------------------------------------------------------------- live worker
@pytest.mark.integration
def test_false_claims_reach_the_trust_table_of_a_live_worker(kafka_bootstrap: str, unique_topics: Any,
                                                             tmp_path: Path) -> None:
    with LiveSetup(kafka_bootstrap, unique_topics.new_prefix(), tmp_path, partitions=2) as live:
        honest, spoofer, alarmist = (Identity.generate(n) for n in ("chk-honest", "chk-spoofer", "chk-alarmist"))
        _false_claims_through(live, honest, spoofer, alarmist)
    trust = Engine([TrustProjection()])
    for record in read_records(kafka_bootstrap, plan_ranges(kafka_bootstrap, [live.prefix + "trust"])):
        trust.feed(record)
    trust.finish()
    store = trust.stores["trust"]
    assert store.get(f"agent/{spoofer.did}")["samples"] == 2 and store.get(f"agent/{spoofer.did}")["score"] < 0.5
    assert store.get(f"agent/{alarmist.did}")["samples"] == 1
    assert store.get(f"agent/{honest.did}") is None  # the impersonated agent is not blamed


def _false_claims_through(live: LiveSetup, honest: Identity, spoofer: Identity, alarmist: Identity) -> None:
    """Spoofed deposits and a false alarm, produced and then folded by a live worker."""
    kafka_bootstrap, prefix = live.bootstrap, live.prefix
    producers = {i.did: live.producer(i) for i in (honest, spoofer, alarmist)}
    t0 = int(time.time() * 1000)
    producers[honest.did].produce("agents.registered", {"agent_id": honest.did, "address": "h", "capabilities": ["x"],
                                                        "max_concurrency": 2}, timestamp_ms=t0)
    producers[honest.did].flush()
    deposit = {"field_id": "live-field", "pheromone_type": "success", "intensity": 0.4}
    producers[spoofer.did].produce("swarm.pheromone", {**deposit, "x": 0, "y": 0, "depositor": spoofer.did},
                                   timestamp_ms=t0)
    producers[spoofer.did].produce("swarm.pheromone", {**deposit, "x": 90, "y": 0, "depositor": spoofer.did},
                                   timestamp_ms=t0 + 100)  # 90 cells in 0.1 s
    producers[spoofer.did].produce("swarm.pheromone", {**deposit, "x": 1, "y": 0, "depositor": honest.did},
                                   timestamp_ms=t0 + 200)  # in the honest agent's name
    producers[alarmist.did].produce("swarm.message", {
        "message_id": "live-alarm", "sender": alarmist.did, "scope": "GLOBAL_ALERT", "ttl": 20, "hop": 0,
        "content": json.dumps({"kind": "agent-failed", "agent_id": honest.did, "severity": "critical"}).encode(),
        "content_type": ALERT_CONTENT_TYPE, "compression": "NONE", "seen_by": []}, timestamp_ms=t0 + 300)
    live.flush()

    def checked() -> list[tuple[str, str, str, bool]]:
        return sorted((v.event.decode_payload()["agent_id"], v.event.decode_payload()["check"] or "",
                       v.event.decode_payload()["outcome"], v.event.decode_payload()["observer"] == v.event.producer)
                      for v in read_verified(kafka_bootstrap, [prefix + "trust"])
                      if v.status is Status.AUTHENTICATED and v.event is not None
                      and v.event.event_type == "trust.observation")

    expected = sorted([(spoofer.did, "pheromone-spoofing", "FAILURE", True)] * 2
                      + [(alarmist.did, "alert-validation", "PARTIAL_FAILURE", True)])
    worker = live.worker("checks-worker")
    wait_for(lambda: checked() == expected, 150, "the checks' observations on the trust topic", [worker])
    # result per projection: the trust table folded the worker's observations as a replay does
    tables = ("trust", "swarm_space")
    wait_for(lambda: all(compare_live_tables(kafka_bootstrap, prefix).get(name) for name in tables), 90,
             "live trust and swarm_space tables equal to replay", [worker])
