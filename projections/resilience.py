"""Circuit breakers and bulkheads (resilience4j semantics) as pure state machines on JSON state.

One breaker guards one (agent, capability). Its state is a JSON dict, so a projection
keeps it in its table and replay rebuilds it; time is always the caller's *event* time.

Semantics, as resilience4j defines them:

* **Sliding window** of the last ``window_size`` calls (COUNT_BASED) or of the calls in
  the last ``window_ms`` (TIME_BASED). A call is a *failure* if it did not succeed and
  *slow* if it took at least ``slow_call_duration_ms``.
* Rates are evaluated only once the window holds ``minimum_calls`` calls. CLOSED → OPEN
  when the failure rate ≥ ``failure_rate_threshold`` or the slow-call rate ≥
  ``slow_call_rate_threshold`` (percent).
* OPEN rejects every call until ``wait_open_ms`` have passed since it opened (event time);
  then the breaker is HALF_OPEN (resilience4j's automatic transition, evaluated lazily
  by ``state_at``).
* HALF_OPEN permits ``permitted_half_open`` calls (``try_acquire`` counts them); once that
  many results are in, it evaluates them alone: over a threshold → OPEN again (a new
  wait), else CLOSED with an empty window.

Bulkhead: a cap on concurrent calls per (agent, capability); ``guard`` drops candidates
whose breaker rejects or whose bulkhead is full before the router picks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

CLOSED = "CLOSED"
OPEN = "OPEN"
HALF_OPEN = "HALF_OPEN"


@dataclass(frozen=True)
class BreakerConfig:
    failure_rate_threshold: float = 50.0
    slow_call_rate_threshold: float = 100.0
    slow_call_duration_ms: int = 60_000
    window_type: str = "COUNT_BASED"
    window_size: int = 100
    window_ms: int = 60_000
    minimum_calls: int = 100
    wait_open_ms: int = 60_000
    permitted_half_open: int = 10

    def __post_init__(self) -> None:
        if self.window_type not in ("COUNT_BASED", "TIME_BASED"):
            raise ValueError(f"window_type must be COUNT_BASED or TIME_BASED, got {self.window_type!r}")
        if self.window_size < 1 or self.minimum_calls < 1 or self.permitted_half_open < 1:
            raise ValueError("window_size, minimum_calls and permitted_half_open must be >= 1")
        for name in ("failure_rate_threshold", "slow_call_rate_threshold"):
            if not 0 < getattr(self, name) <= 100:
                raise ValueError(f"{name} must be in (0, 100]")


# The breakers of the command path: one per (agent, capability, receipts lane), folded from receipts
# both by the heal domain (which emits heal.circuit_state_changed) and by the registry (which the
# router reads). One config, so both fold identical states from the same lane.
ROUTING_BREAKER = BreakerConfig(failure_rate_threshold=50, slow_call_rate_threshold=80, slow_call_duration_ms=5_000,
                                window_size=20, minimum_calls=10, wait_open_ms=10_000, permitted_half_open=3)


def new_breaker() -> dict[str, Any]:
    """Initial state: CLOSED, empty window. ``calls`` = ``[at_ms, failed, slow]`` rows, oldest first."""
    return {"state": CLOSED, "calls": [], "opened_ms": None, "half_open_permits": 0, "half_open_calls": [],
            "consecutive_failures": 0}


def state_at(b: Mapping[str, Any], now_ms: int, cfg: BreakerConfig) -> str:
    """The state at ``now_ms``: an OPEN breaker whose wait has elapsed reads HALF_OPEN."""
    if b["state"] == OPEN and now_ms >= b["opened_ms"] + cfg.wait_open_ms:
        return HALF_OPEN
    return str(b["state"])


def _rates(calls: Sequence[Sequence[Any]]) -> tuple[float, float]:
    n = len(calls)
    return 100.0 * sum(1 for c in calls if c[1]) / n, 100.0 * sum(1 for c in calls if c[2]) / n


def _to_half_open(b: dict[str, Any]) -> dict[str, Any]:
    return {**b, "state": HALF_OPEN, "half_open_permits": 0, "half_open_calls": []}


def try_acquire(b: Mapping[str, Any], now_ms: int, cfg: BreakerConfig) -> tuple[bool, dict[str, Any]]:
    """May a call go through now? Returns (permitted, new state); HALF_OPEN counts the permit."""
    state = state_at(b, now_ms, cfg)
    out = dict(b)
    if state == CLOSED:
        return True, out
    if state == OPEN:
        return False, out
    if b["state"] == OPEN:
        out = _to_half_open(out)
    if out["half_open_permits"] >= cfg.permitted_half_open:
        return False, out
    out["half_open_permits"] += 1
    return True, out


def on_result(b: Mapping[str, Any], now_ms: int, duration_ms: int, success: bool,
              cfg: BreakerConfig) -> tuple[dict[str, Any], tuple[str, str, float | None] | None]:
    """Record a finished call; returns (new state, transition ``(previous, new, failure_rate)`` or None).

    A result arriving while OPEN (a call admitted before it opened) is ignored, as in
    resilience4j; a result after the wait counts as a half-open probe.
    """
    failed, slow = not success, duration_ms >= cfg.slow_call_duration_ms
    state = state_at(b, now_ms, cfg)
    out = dict(b)
    out["consecutive_failures"] = b["consecutive_failures"] + 1 if failed else 0
    if state == OPEN:
        return out, None
    if state == HALF_OPEN:
        if b["state"] == OPEN:
            out = _to_half_open(out)
            out["half_open_permits"] = 1
        calls = [*out["half_open_calls"], [now_ms, failed, slow]]
        out["half_open_calls"] = calls
        if len(calls) < cfg.permitted_half_open:
            return out, None
        fr, sr = _rates(calls)
        if fr >= cfg.failure_rate_threshold or sr >= cfg.slow_call_rate_threshold:
            return {**out, "state": OPEN, "opened_ms": now_ms, "calls": [], "half_open_calls": [],
                    "half_open_permits": 0}, (HALF_OPEN, OPEN, fr / 100)
        return {**new_breaker(), "consecutive_failures": out["consecutive_failures"]}, (HALF_OPEN, CLOSED, fr / 100)
    calls = [*out["calls"], [now_ms, failed, slow]]
    if cfg.window_type == "COUNT_BASED":
        calls = calls[-cfg.window_size:]
    else:
        calls = [c for c in calls if c[0] > now_ms - cfg.window_ms]
    out["calls"] = calls
    if len(calls) < cfg.minimum_calls:
        return out, None
    fr, sr = _rates(calls)
    if fr >= cfg.failure_rate_threshold or sr >= cfg.slow_call_rate_threshold:
        return {**out, "state": OPEN, "opened_ms": now_ms, "calls": []}, (CLOSED, OPEN, fr / 100)
    return out, None


def force_open(b: Mapping[str, Any], now_ms: int) -> dict[str, Any]:
    """OPEN_CIRCUIT heal action: open now (the wait starts now)."""
    return {**b, "state": OPEN, "opened_ms": now_ms, "calls": [], "half_open_calls": [], "half_open_permits": 0}


def transition_event(agent_id: str, capability: str | None, change: tuple[str, str, float | None],
                     b: Mapping[str, Any], cfg: BreakerConfig, reason: str) -> dict[str, Any]:
    """The ``heal.circuit_state_changed`` payload of a transition."""
    previous, state, rate = change
    return {"agent_id": agent_id, "capability": capability, "previous_state": previous, "state": state,
            "failure_count": int(b["consecutive_failures"]), "failure_rate": rate,
            "half_open_at_ms": b["opened_ms"] + cfg.wait_open_ms if state == OPEN else None, "reason": reason}


# ---------------------------------------------------------------------------- bulkheads and routing guard
def bulkhead_has_room(in_flight: int, max_concurrent: int) -> bool:
    return in_flight < max_concurrent


def guard(candidates: Sequence[Mapping[str, Any]], capability: str, now_ms: int,
          breakers: Mapping[tuple[str, str], Mapping[str, Any]], cfg: BreakerConfig,
          bulkheads: Mapping[tuple[str, str], int] | None = None,
          in_flight: Mapping[tuple[str, str], int] | None = None) -> tuple[list[Mapping[str, Any]], dict[str, str]]:
    """Candidates a router may use: breaker permits (CLOSED, or HALF_OPEN with a permit left) and bulkhead room.

    Returns (allowed, {agent_id: why excluded}). Reading only: the caller acquires the
    half-open permit for the agent it picks (``try_acquire``) — or, a caller that cannot
    write (the router derives, it does not store), passes ``in_flight``: calls in flight
    to a HALF_OPEN breaker's agent count as probes already granted, so at most
    ``permitted_half_open`` probes are outstanding, whatever the stored permit count says.
    """
    allowed: list[Mapping[str, Any]] = []
    excluded: dict[str, str] = {}
    for c in candidates:
        key = (str(c["agent_id"]), capability)
        b = breakers.get(key)
        if b is not None:
            state = state_at(b, now_ms, cfg)
            granted = b["half_open_permits"] if b["state"] == HALF_OPEN else 0
            probing = (len(b["half_open_calls"]) if b["state"] == HALF_OPEN else 0) + (in_flight or {}).get(key, 0)
            half_open_full = state == HALF_OPEN and max(granted, probing) >= cfg.permitted_half_open
            if state == OPEN or half_open_full:
                excluded[key[0]] = f"circuit {state}"
                continue
        cap = (bulkheads or {}).get(key)
        if cap is not None and not bulkhead_has_room((in_flight or {}).get(key, 0), cap):
            excluded[key[0]] = f"bulkhead full ({cap} concurrent)"
            continue
        allowed.append(c)
    return allowed, excluded


def config_dict(cfg: BreakerConfig) -> dict[str, Any]:
    return asdict(cfg)


__all__ = [
    "CLOSED",
    "HALF_OPEN",
    "OPEN",
    "ROUTING_BREAKER",
    "BreakerConfig",
    "bulkhead_has_room",
    "force_open",
    "guard",
    "new_breaker",
    "on_result",
    "state_at",
    "transition_event",
    "try_acquire",
]
