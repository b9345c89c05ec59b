"""Session projection: lifecycle, bounded history, receipts, deterministic expiry, idempotence.

Real envelopes: built by the real ``ChainWriter`` and decoded by ``EnvelopeCodec``.
"""

from __future__ import annotations

import random
import zlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swarmlog.projections.base import Derived, EventContext, Stores, snapshot
from swarmlog.projections.routing import session_receipt
from swarmlog.projections.sessions import SessionProjection, get_session
from swarmlog.streams.chain import ChainWriter
from swarmlog.streams.codec import default_store, encode_body
from swarmlog.streams.envelope import EnvelopeCodec, Event
from swarmlog.streams.identity import Identity
from tests.support.logs import FoldRun

SCHEMAS = default_store()
CODEC = EnvelopeCodec(SCHEMAS)
OPENED = SCHEMAS.for_event_type("sessions.opened")
ATTACHED = SCHEMAS.for_event_type("sessions.command_attached")
CLOSED = SCHEMAS.for_event_type("sessions.closed")
RECEIPT = SCHEMAS.for_event_type("commands.receipt")
FORWARDED = SCHEMAS.for_event_type("sessions.receipt_recorded")

IDS = [Identity.generate(f"agent-{i}") for i in range(5)]
DIDS = [i.did for i in IDS]
OWNER, PARTICIPANT, EXECUTOR, OUTSIDER, WORKER = 0, 1, 2, 3, 4

Folded = tuple[Event, dict[str, Any]]


class Net:
    """Agents writing session events (``sessions`` topic) and receipts (``receipts`` topic); a worker
    forwarding receipts that name a session into the session's partition (``routing.session_receipt``)."""

    def __init__(self) -> None:
        self.writers = [ChainWriter(identity, SCHEMAS) for identity in IDS]

    def _event(self, who: int, entry: Any, body: dict[str, Any], subject: str, topic: str, ts: int) -> Folded:
        _, value = self.writers[who].append(entry, encode_body(entry, body), subject, topic,
                                            zlib.crc32(subject.encode()) % 3, timestamp_ms=ts)
        event = CODEC.decode(value)
        return event, event.decode_payload(SCHEMAS)

    def open(self, sid: str, *, ts: int = 0, timeout: int = 1_000, expires_at: int | None = None,
             who: int = OWNER, **extra: Any) -> Folded:
        body = dict(session_id=sid, owner=DIDS[who], participants=[DIDS[PARTICIPANT]], timeout_ms=timeout,
                    expires_at_ms=expires_at, metadata={"purpose": "test"}, **extra)
        return self._event(who, OPENED, body, sid, "sessions", ts)

    def attach(self, sid: str, cid: str, *, ts: int = 1, who: int = OWNER) -> Folded:
        body = dict(session_id=sid, command_id=cid, capability="database.query", agent_id=DIDS[EXECUTOR])
        return self._event(who, ATTACHED, body, sid, "sessions", ts)

    def raw_receipt(self, sid: str | None, cid: str, *, ts: int = 2, success: bool = True, timed_out: bool = False,
                    who: int = EXECUTOR, duration: int = 40) -> Folded:
        """The executing agent's own ``commands.receipt`` (topic ``receipts``, keyed by command)."""
        body = dict(command_id=cid, agent_id=DIDS[EXECUTOR], capability="database.query", session_id=sid,
                    started_ms=ts - duration, finished_ms=ts, duration_ms=duration, success=success,
                    timed_out=timed_out, error=None if success else "boom")
        return self._event(who, RECEIPT, body, cid, "receipts", ts)

    def receipt(self, sid: str, cid: str, *, ts: int = 2, forwarded_ts: int | None = None, **kwargs: Any) -> Folded:
        """The receipt as the sessions domain sees it: forwarded by the worker into the session's partition."""
        event, payload = self.raw_receipt(sid, cid, ts=ts, **kwargs)
        [derived] = session_receipt(EventContext.of(event), payload)
        assert derived.subject == sid
        return self._event(WORKER, FORWARDED, derived.payload, sid, "sessions",
                           ts if forwarded_ts is None else forwarded_ts)

    def close(self, sid: str, state: str = "CLOSED", *, ts: int = 3, who: int = OWNER) -> Folded:
        body = dict(session_id=sid, state=state, reason="done")
        return self._event(who, CLOSED, body, sid, "sessions", ts)


class Run(FoldRun[SessionProjection]):
    @classmethod
    def new(cls, **kwargs: Any) -> Run:
        return cls(SessionProjection(**kwargs))

    def session(self, sid: str) -> dict[str, Any]:
        found = get_session(self.store, sid)
        assert found is not None
        return found


def closed_payloads(derived: list[Derived]) -> list[dict[str, Any]]:
    for d in derived:
        assert d.event_type == "sessions.closed" and d.subject == d.payload["session_id"]
        encode_body(CLOSED, d.payload)  # writable as the schema says
    return [d.payload for d in derived]


def test_lifecycle_with_attaches_receipts_and_close() -> None:
    net, run = Net(), Run.new()
    run.feed(net.open("s", ts=0), net.attach("s", "c1", ts=10), net.attach("s", "c2", ts=20, who=PARTICIPANT),
             net.receipt("s", "c1", ts=30), net.receipt("s", "c2", ts=40, success=False),
             net.close("s", ts=50))
    session = run.session("s")
    assert session["state"] == "CLOSED"
    assert (session["closed_ms"], session["closed_by"], session["close_reason"]) == (50, DIDS[OWNER], "done")
    counters = session["counters"]
    assert (counters["commands"], counters["receipts"], counters["succeeded"], counters["failed"]) == (2, 2, 1, 1)
    assert counters["total_duration_ms"] == 80
    assert [(h["kind"], h["command_id"]) for h in session["history"]] == [
        ("attached", "c1"), ("attached", "c2"), ("receipt", "c1"), ("receipt", "c2")]
    assert session["history"][1]["by"] == DIDS[PARTICIPANT]
    assert session["history"][2]["attached"] is True
    assert session["metadata"] == {"purpose": "test"}
    assert run.derived == [] and run.refused == []
    # closing again, attaching after the close: no-op / late, never an error
    run.feed(net.close("s", ts=60), net.attach("s", "c3", ts=61))
    assert run.session("s")["counters"]["late_attaches"] == 1
    assert run.session("s")["counters"]["commands"] == 2
    # receipts of commands still running at the close are recorded
    run.feed(net.receipt("s", "c3", ts=70))
    assert run.session("s")["history"][-1]["attached"] is False


def test_history_is_bounded_but_counters_count_everything() -> None:
    net, run = Net(), Run.new(history_limit=3)
    run.feed(net.open("s", timeout=10_000), *(net.attach("s", f"c{i}", ts=i + 1) for i in range(5)))
    session = run.session("s")
    assert [h["command_id"] for h in session["history"]] == ["c2", "c3", "c4"]
    assert (session["counters"]["commands"], session["counters"]["history_dropped"]) == (5, 2)


def test_idle_timeout_expires_through_a_later_events_time() -> None:
    net, run = Net(), Run.new()
    run.feed(net.open("s", ts=0, timeout=1_000), net.attach("s", "c1", ts=500))
    assert run.session("s")["expiry_ms"] == 1_500  # the attach reset the idle timer
    assert run.feed(net.open("t", ts=1_499)) == []
    [closed] = closed_payloads(run.feed(net.open("u", ts=1_600)))  # any later event: "s" expires first
    assert closed == {"session_id": "s", "state": "EXPIRED", "reason": "idle-timeout", "timeout_ms": 1_000,
                      "command_count": 1, "failed_count": 0}
    session = run.session("s")
    assert (session["state"], session["closed_ms"]) == ("EXPIRED", 1_500)
    # an attach stamped before the expiry but folded after it is late
    run.feed(net.attach("s", "c2", ts=1_400))
    assert run.session("s")["counters"]["late_attaches"] == 1
    # the derived event coming back through the log changes nothing
    event, payload = net._event(EXECUTOR, CLOSED, dict(closed), "s", "sessions", 1_700)
    before = snapshot(run.store)
    assert run.feed((event, payload)) == []
    assert {k: v for k, v in snapshot(run.store).items() if not k.startswith("clock/")} == {
        k: v for k, v in before.items() if not k.startswith("clock/")}
    assert [d["session_id"] for d in closed_payloads(run.derived)] == ["s"]  # "t" is idle only until 2_499


def test_hard_expiry_wins_over_idle_timeout() -> None:
    net, run = Net(), Run.new()
    run.feed(net.open("s", ts=0, timeout=1_000, expires_at=800))
    [closed] = closed_payloads(run.feed(net.attach("s", "c1", ts=800)))
    assert (closed["reason"], closed["timeout_ms"]) == ("hard-expiry", None)
    assert run.session("s")["counters"]["late_attaches"] == 1


def test_expire_due_tick_and_replay_agree() -> None:
    net = Net()
    events = [net.open("s", ts=0, timeout=1_000), net.attach("s", "c1", ts=100), net.open("t", ts=3_000)]
    live = Run.new()
    live.feed(*events[:2])
    assert live.projection.expire_due(Stores(live.store), 1_099) == []
    [ticked] = closed_payloads(live.projection.expire_due(Stores(live.store), 1_100))
    assert live.projection.expire_due(Stores(live.store), 5_000) == []
    live.feed(events[2])
    replayed = Run.new()
    replayed.feed(*events)
    assert closed_payloads(replayed.derived) == [ticked]
    assert replayed.session("s") == live.session("s")


def test_refusals() -> None:
    net, run = Net(), Run.new()
    run.feed(net.attach("nope", "c1"), net.close("nope"), net.receipt("nope", "c1"))
    assert run.refused == ["unknown-session"] * 3
    run.refused.clear()
    run.feed(net.open("s"))
    before = snapshot(run.store)
    event, payload = net.open("x")
    run.feed((event, {**payload, "owner": DIDS[PARTICIPANT]}))  # owner is not the producer
    run.feed(net.open("s", ts=5))  # same id, another event
    run.feed(net.attach("s", "c1", who=OUTSIDER))
    run.feed(net.close("s", who=PARTICIPANT))
    run.feed(net.receipt("s", "c1", who=OUTSIDER))  # receipt in the executor's name
    event, payload = net.open("y")
    run.feed((event, {**payload, "timeout_ms": 0}))
    event, payload = net.attach("s", "c9")
    run.feed((event, {**payload, "session_id": "other"}))
    assert run.refused == ["owner-mismatch", "duplicate-session", "not-a-participant", "not-owner", "agent-mismatch",
                           "invalid-payload", "unknown-session"]
    assert snapshot(run.store) == before


def test_subject_must_be_the_session_id() -> None:
    net, run = Net(), Run.new()
    run.feed(net.open("s"), net.open("t"))
    event, payload = net.attach("s", "c1")
    run.feed((event, {**payload, "session_id": "t"}))
    assert run.refused == ["subject-mismatch"]


def test_receipts_without_session_are_not_forwarded_and_receipts_count_once_per_command() -> None:
    net, run = Net(), Run.new()
    run.feed(net.open("s"), net.attach("s", "c1"))
    event, payload = net.raw_receipt(None, "c0", ts=5)
    assert session_receipt(EventContext.of(event), payload) == []
    run.feed(net.receipt("s", "c1", ts=6, success=False, timed_out=True), net.receipt("s", "c1", ts=7))
    counters = run.session("s")["counters"]
    assert (counters["receipts"], counters["failed"], counters["timed_out"]) == (1, 1, 1)
    run.feed(net.attach("s", "c1", ts=8))  # the same command attached again: no-op
    assert run.session("s")["counters"]["commands"] == 1


def test_a_non_owner_may_not_close_but_an_expired_session_ignores_its_close() -> None:
    net, run = Net(), Run.new()
    run.feed(net.open("s", ts=0, timeout=100))
    run.feed(net.close("s", "EXPIRED", ts=50, who=EXECUTOR))
    assert run.refused == ["not-owner"]
    # the same claim once the session is really due: its own time expires it, the claim is moot
    [closed] = closed_payloads(run.feed(net.close("s", "EXPIRED", ts=100, who=EXECUTOR)))
    assert closed["state"] == "EXPIRED" and run.session("s")["closed_by"] is None


@pytest.mark.parametrize("state", ["CLOSED", "EXPIRED", "ABORTED"])
def test_owner_close_states(state: str) -> None:
    net, run = Net(), Run.new()
    run.feed(net.open("s"), net.close("s", state, ts=10))
    assert run.session("s")["state"] == state
    assert run.projection.expire_due(Stores(run.store), 10**9) == []  # closed sessions leave the deadline index


def test_folding_twice_or_the_whole_log_again_changes_nothing() -> None:
    net = Net()
    events = [net.open("s", timeout=100), net.attach("s", "c1", ts=10), net.receipt("s", "c1", ts=20),
              net.open("t", ts=500), net.attach("t", "c2", ts=510), net.attach("s", "c3", ts=520)]
    once = Run.new()
    once.feed(*events)
    assert [d["session_id"] for d in closed_payloads(once.derived)] == ["s"]
    again = Run.new()
    again.feed(*(e for e in events for _ in range(2)))
    again.feed(*events)
    assert again.derived == once.derived
    assert snapshot(again.store, include_marks=True) == snapshot(once.store, include_marks=True)


ACTIONS = st.lists(st.tuples(st.sampled_from(["attach", "receipt", "fail", "close", "tick"]),
                             st.integers(0, 1), st.integers(0, 5), st.integers(0, 400)), max_size=25)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(actions=ACTIONS, limit=st.integers(0, 4), seed=st.integers(0, 2**32), replays=st.integers(0, 6))
def test_redelivery_gives_the_same_sessions(actions: list[tuple[str, int, int, int]], limit: int, seed: int,
                                            replays: int) -> None:
    net = Net()
    events = [net.open("s0", timeout=600), net.open("s1", timeout=1_200, expires_at=2_000)]
    ts = 0
    for kind, k, cmd, step in actions:
        ts += step
        sid, cid = f"s{k}", f"c{k}-{cmd}"
        if kind == "attach":
            events.append(net.attach(sid, cid, ts=ts, who=OWNER if cmd % 2 else PARTICIPANT))
        elif kind in ("receipt", "fail"):
            events.append(net.receipt(sid, cid, ts=ts, success=kind == "receipt"))
        elif kind == "close":
            events.append(net.close(sid, ts=ts))
        else:  # another session opens: only the clocks move for s0 and s1
            events.append(net.open(f"tick-{len(events)}", ts=ts))
    once = Run.new(history_limit=limit)
    once.feed(*events)
    rng = random.Random(seed)
    delivered = list(events)
    for _ in range(replays):
        original = events[rng.randrange(len(events))]
        delivered.insert(rng.randint(delivered.index(original) + 1, len(delivered)), original)
    again = Run.new(history_limit=limit)
    again.feed(*delivered, *events)
    assert snapshot(again.store, include_marks=True) == snapshot(once.store, include_marks=True)
    assert again.derived == once.derived
    expired = [d["session_id"] for d in closed_payloads(once.derived)]
    assert len(expired) == len(set(expired))
    for k in range(2):
        session = once.session(f"s{k}")
        assert len(session["history"]) <= limit
        counters = session["counters"]
        assert counters["commands"] + counters["receipts"] == len(session["history"]) + counters["history_dropped"]
        assert counters["receipts"] == counters["succeeded"] + counters["failed"]
        assert (session["state"] == "EXPIRED") == (f"s{k}" in expired)


def test_a_forwarded_receipt_names_the_original_receipt_and_the_forwarder() -> None:
    net, run = Net(), Run.new()
    run.feed(net.open("s"), net.attach("s", "c1", ts=1))
    event, payload = net.raw_receipt("s", "c1", ts=30)
    [derived] = session_receipt(EventContext.of(event), payload)
    forwarded = net._event(WORKER, FORWARDED, derived.payload, "s", "sessions", 31)
    run.feed(forwarded, forwarded)
    [record] = [r for r in run.session("s")["history"] if r["kind"] == "receipt"]
    assert (record["event_id"], record["timestamp_ms"], record["forwarded_by"], record["attached"]) == (
        EventContext.of(event).event_id, 30, DIDS[WORKER], True)
    # forwarded under another session's key: refused like any session event keyed by something else
    other = net._event(WORKER, FORWARDED, {**derived.payload, "command_id": "c2"}, "t", "sessions", 32)
    run.feed(net.open("t", ts=32), other)
    assert run.refused == ["subject-mismatch"]
