"""Circuit breakers (resilience4j semantics) and bulkheads: known transitions on synthetic call sequences."""

from __future__ import annotations

import pytest

from swarmlog.projections.resilience import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    BreakerConfig,
    force_open,
    guard,
    new_breaker,
    on_result,
    state_at,
    transition_event,
    try_acquire,
)

CFG = BreakerConfig(failure_rate_threshold=50, slow_call_rate_threshold=80, slow_call_duration_ms=1000,
                    window_size=10, minimum_calls=5, wait_open_ms=30_000, permitted_half_open=3)


def feed(b: dict, results: list[tuple[int, int, bool]], cfg: BreakerConfig = CFG) -> tuple[dict, list]:
    changes = []
    for at, duration, ok in results:
        b, change = on_result(b, at, duration, ok, cfg)
        if change:
            changes.append((at, change[:2]))
    return b, changes


def test_breaker_waits_for_minimum_calls_then_opens_on_failure_rate() -> None:
    b, changes = feed(new_breaker(), [(t, 10, False) for t in range(4)])
    assert (b["state"], changes) == (CLOSED, [])  # 4 failures < minimum_calls 5: no rate yet
    b, changes = feed(b, [(4, 10, False)])
    assert changes == [(4, (CLOSED, OPEN))]
    assert try_acquire(b, 4 + 29_999, CFG)[0] is False  # still OPEN one ms before the wait ends


def test_breaker_stays_closed_below_threshold_and_window_slides() -> None:
    # 4 of 10 failed (40 % < 50 %): closed; the window keeps only the last 10 calls
    b, changes = feed(new_breaker(), [(t, 10, t not in (3, 6, 8, 9)) for t in range(10)])
    assert (b["state"], changes, len(b["calls"])) == (CLOSED, [], 10)
    b, changes = feed(b, [(10 + t, 10, True) for t in range(20)])
    assert changes == [] and len(b["calls"]) == 10 and not any(c[1] for c in b["calls"])


def test_slow_calls_open_the_breaker() -> None:
    b, changes = feed(new_breaker(), [(t, 1500 if t < 3 else 10, True) for t in range(5)])
    assert (changes, b["state"]) == ([], CLOSED)  # 3 of 5 slow = 60 % < 80 %
    b, changes = feed(new_breaker(), [(t, 1500 if t < 4 else 10, True) for t in range(5)])
    assert changes == [(4, (CLOSED, OPEN))]  # 4 of 5 slow = 80 % >= 80 %, no failure at all
    b, changes = feed(new_breaker(), [(t, 1000, True) for t in range(5)])  # duration == threshold is slow
    assert changes == [(4, (CLOSED, OPEN))]


def test_open_half_opens_after_wait_in_event_time_and_permits_probes() -> None:
    b, _ = feed(new_breaker(), [(t, 10, False) for t in range(5)])
    opened = b["opened_ms"]
    assert state_at(b, opened + 29_999, CFG) == OPEN
    assert state_at(b, opened + 30_000, CFG) == HALF_OPEN
    now = opened + 30_000
    permits = []
    for _ in range(4):
        ok, b = try_acquire(b, now, CFG)
        permits.append(ok)
    assert permits == [True, True, True, False]  # permitted_half_open = 3
    assert guard([{"agent_id": "a"}], "cap", now, {("a", "cap"): b}, CFG)[0] == []
    # probes: 1 of 3 fails (33 % < 50 %) → CLOSED with an empty window
    b, changes = feed(b, [(now + 1, 10, True), (now + 2, 10, False), (now + 3, 10, True)])
    assert changes == [(now + 3, (HALF_OPEN, CLOSED))] and b["calls"] == []


def test_failed_probes_reopen_with_a_new_wait() -> None:
    b, _ = feed(new_breaker(), [(t, 10, False) for t in range(5)])
    now = b["opened_ms"] + 30_000
    b, changes = feed(b, [(now, 10, False), (now + 1, 10, False), (now + 2, 10, True)])
    assert changes == [(now + 2, (HALF_OPEN, OPEN))]
    assert b["opened_ms"] == now + 2 and state_at(b, now + 2 + 29_999, CFG) == OPEN
    event = transition_event("did:a", "cap", (HALF_OPEN, OPEN, 2 / 3), b, CFG, "probes failed")
    assert event["half_open_at_ms"] == now + 2 + 30_000 and event["state"] == OPEN


def test_time_based_window_forgets_old_calls() -> None:
    cfg = BreakerConfig(window_type="TIME_BASED", window_ms=10_000, minimum_calls=5, failure_rate_threshold=50)
    b, changes = feed(new_breaker(), [(t * 1000, 10, False) for t in range(4)], cfg)
    b, changes = feed(b, [(60_000 + t, 10, True) for t in range(5)], cfg)  # the failures left the window
    assert changes == [] and b["state"] == CLOSED and len(b["calls"]) == 5


def test_guard_applies_breakers_and_bulkheads() -> None:
    cands = [{"agent_id": a} for a in ("a", "b", "c")]
    opened = force_open(new_breaker(), 1000)
    allowed, why = guard(cands, "cap", 2000, {("a", "cap"): opened}, CFG, bulkheads={("b", "cap"): 2},
                         in_flight={("b", "cap"): 2})
    assert [c["agent_id"] for c in allowed] == ["c"]
    assert why == {"a": "circuit OPEN", "b": "bulkhead full (2 concurrent)"}
    allowed, _ = guard(cands, "cap", 1000 + 30_000, {("a", "cap"): opened}, CFG)
    assert [c["agent_id"] for c in allowed] == ["a", "b", "c"]  # half-open: a probe may go


def test_config_is_validated() -> None:
    with pytest.raises(ValueError):
        BreakerConfig(window_type="SESSION")
    with pytest.raises(ValueError):
        BreakerConfig(failure_rate_threshold=0)
