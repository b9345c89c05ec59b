"""The heal worker publishes heal.capacity_forecast per capability and receipts lane at a cadence in event time."""

from __future__ import annotations

import math
from typing import Any

from swarmlog.projections.base import Derived, EventContext, MemoryStore, Stores, canonical_json, snapshot
from swarmlog.projections.forecast import HOUR_MS, HourlyForecaster
from swarmlog.projections.heal import FORECAST_CADENCE_HOURS, FORECAST_HORIZON_HOURS, FORECAST_MIN_HOURS, HealProjection
from swarmlog.streams.codec import default_store, encode_body

STORE = default_store()
H0 = 1_700_000_000_000 // HOUR_MS * HOUR_MS // (24 * HOUR_MS) * (24 * HOUR_MS)  # a UTC midnight


def receipts(days: int, lane: str, capability: str, base: int = 4) -> list[tuple[EventContext, dict[str, Any]]]:
    """A daily cycle: base + 3 × (1 + sin) receipts per hour, spread over each hour."""
    out = []
    seq = 0
    for h in range(days * 24):
        n = base + round(3 * (1 + math.sin(2 * math.pi * (h % 24) / 24)))
        for i in range(n):
            ts = H0 + h * HOUR_MS + i * (HOUR_MS // n)
            cid = f"{lane}-{capability}-{h}-{i}"
            out.append((EventContext(cid, "commands.receipt", "agent", cid, ts, lane, seq, "s"), {
                "command_id": cid, "agent_id": "did:a", "capability": capability, "started_ms": ts - 20,
                "finished_ms": ts, "duration_ms": 20, "success": True, "timed_out": False}))
            seq += 1
    return out


def run(events: list[tuple[EventContext, dict[str, Any]]]) -> tuple[MemoryStore, list[tuple[int, Derived]]]:
    store, projection = MemoryStore(), HealProjection()
    out = []
    for ctx, payload in events:
        for d in projection.apply(Stores(store), ctx, payload):
            if d.event_type == "heal.capacity_forecast":
                out.append((ctx.timestamp_ms, d))
    return store, out


def test_forecasts_are_published_every_cadence_boundary_once_a_season_is_in() -> None:
    events = receipts(3, "receipts/0", "ml.inference")
    _store, published = run(events)
    boundaries = sorted({ts // HOUR_MS // FORECAST_CADENCE_HOURS for ts, _ in published})
    hours = [(ts - H0) // HOUR_MS for ts, _ in published]
    # first boundary at hour 6 (the lane's clock starts at hour 0); published from the first boundary
    # with >= FORECAST_MIN_HOURS closed hours: 24, 30, ... 66
    assert hours == list(range(FORECAST_MIN_HOURS, 72, FORECAST_CADENCE_HOURS))
    assert len(boundaries) == len(published)
    for _ts, d in published:
        p = d.payload
        assert d.subject == "ml.inference" and p["lane"] == "receipts/0" and p["model"] == "snarimax"
        assert len(p["points"]) == p["horizon_hours"] == FORECAST_HORIZON_HOURS
        assert p["recommended_capacity"] >= 0 and p["risk_level"] in ("LOW", "MEDIUM", "HIGH", "CRITICAL")
        entry = STORE.for_event_type("heal.capacity_forecast")
        encode_body(entry, p)  # a valid v2 payload


def test_forecast_equals_the_forecaster_fed_the_same_receipts() -> None:
    """Known answer: the published points are those of a HourlyForecaster fed the lane's receipt times."""
    events = receipts(4, "receipts/2", "db.query")
    _store, published = run(events)
    last_ts, last = published[-1]
    reference = HourlyForecaster("snarimax")
    for ctx, _p in events:
        if ctx.timestamp_ms > last_ts:
            break
        reference.record(ctx.timestamp_ms)
    expected = [{"at_ms": p.at_ms, "load": p.load, "lower": p.lower, "upper": p.upper}
                for p in reference.forecast(FORECAST_HORIZON_HOURS)]
    assert last.payload["points"] == expected
    assert last.payload["points"][0]["at_ms"] == (last_ts // HOUR_MS + 1) * HOUR_MS
    assert last.payload["coverage"] == 0.9  # conformal intervals once enough one-step errors exist


def test_lanes_forecast_their_own_share_and_replay_derives_the_same_events() -> None:
    a = receipts(2, "receipts/0", "x")
    b = receipts(2, "receipts/1", "y", base=1)
    merged = sorted(a + b, key=lambda e: (e[0].timestamp_ms, e[0].lane))
    store, published = run(merged)
    assert {(d.payload["lane"], d.subject) for _, d in published} == {("receipts/0", "x"), ("receipts/1", "y")}
    # another interleaving of the two lanes (each lane in order): same store, same forecasts per lane
    other_store, other = run(a + b)
    assert canonical_json(snapshot(store)) == canonical_json(snapshot(other_store))

    def per_lane(pub: list[tuple[int, Derived]]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {}
        for _ts, d in pub:
            out.setdefault(d.payload["lane"], []).append(d.payload)
        return out

    assert per_lane(published) == per_lane(other)
