"""Online learning API on synthetic streams with known answers (no Kafka)."""

from __future__ import annotations

import math
import random

import pytest

from swarmlog.projections.forecast import (
    HOUR_MS,
    ForecastPoint,
    HourlyForecaster,
    SeriesForecaster,
    plan_capacity,
    risk_level,
)
from swarmlog.projections.learning import (
    DriftDetector,
    ExecutionProfiler,
    LatencyPredictor,
    SuccessClassifier,
    ZScoreDetector,
    dumps,
    features,
    loads,
    recommend_retry,
)


def test_profiler_counts_means_quantiles_and_success_rate() -> None:
    rng = random.Random(7)
    prof = ExecutionProfiler()
    values = [rng.uniform(0, 1000) for _ in range(5000)]
    for i, v in enumerate(values):
        prof.record("a", "db.query", v, success=i % 4 != 0)
    s = prof.capability("db.query").summary()  # type: ignore[union-attr]
    assert s["count"] == 5000
    assert s["success_rate"] == pytest.approx(0.75)
    assert s["mean_ms"] == pytest.approx(sum(values) / len(values))
    exact = sorted(values)
    for name, q in (("p50_ms", 0.5), ("p95_ms", 0.95), ("p99_ms", 0.99)):
        assert abs(s[name] - exact[int(q * len(exact))]) < 25  # P² estimate within 2.5 % of the range
    with pytest.raises(ValueError):
        prof.record("a", "db.query", -1, True)
    with pytest.raises(ValueError):
        prof.record("a", "db.query", math.nan, True)


def test_features_use_event_time_and_a_stable_hash() -> None:
    # 2024-01-01T14:00Z was a Monday
    ts = 1_704_117_600_000
    f = features("database.query", ts, 150.0, 0.9, 0.95, 0.6)
    assert (f["hour_of_day"], f["day_of_week"]) == (14.0, 0.0)
    assert f == features("database.query", ts, 150.0, 0.9, 0.95, 0.6)
    assert 0 <= f["command_name_hash"] < 1
    assert f["command_name_hash"] != features("ml.inference", ts, 150.0, 0.9, 0.95, 0.6)["command_name_hash"]


def test_latency_predictor_learns_and_its_interval_covers_as_measured() -> None:
    rng = random.Random(3)
    model = LatencyPredictor(alpha=0.1)
    for i in range(3000):
        load = rng.random()
        x = features("c", i * 60_000, 100.0, 0.9, 1.0, load)
        y = (50 + 200 * load) * math.exp(rng.gauss(0, 0.1))
        model.learn(x, y)
    x = features("c", 0, 100.0, 0.9, 1.0, 0.5)
    assert 120 < model.predict(x) < 180  # truth: 150 ms
    cov = model.coverage
    assert cov is not None and 0.85 <= cov <= 0.95  # nominal 0.9, measured prequentially
    pred, lo, hi = model.interval(x)
    assert lo < pred < hi


def test_success_classifier_separates_and_retry_advice_follows() -> None:
    rng = random.Random(5)
    clf = SuccessClassifier()
    for i in range(3000):
        health = rng.random()
        clf.learn(features("c", i, 100, 0.9, health, 0.5), rng.random() < health)
    good = clf.predict(features("c", 0, 100, 0.9, 0.95, 0.5))
    bad = clf.predict(features("c", 0, 100, 0.9, 0.1, 0.5))
    assert good > 0.75 and bad < 0.35
    assert recommend_retry(0.995, 100).retries == 0
    advice = recommend_retry(0.6, 120)
    assert advice.retries == 5 and advice.backoff_ms == 120  # 1 - 0.4^5 = 0.98976 < 0.99 <= 1 - 0.4^6
    assert "reroute" in recommend_retry(0.05, 100).reason


@pytest.mark.parametrize(("method", "params"), [
    ("page-hinkley", {"delta": 2.5, "threshold": 100.0}),  # delta = sigma/2, threshold = 20 sigma
    ("adwin", {}),
])
def test_step_change_is_detected_within_bounded_samples(method: str, params: dict[str, float]) -> None:
    rng = random.Random(11)
    det = DriftDetector(method, **params)
    for i in range(1000):
        hit, _, _ = det.update(rng.gauss(100, 5))
        assert not hit, f"false alarm at {i}"
    for i in range(200):
        hit, prev, cur = det.update(rng.gauss(130, 5))
        if hit:
            assert i < 60  # a 6-sigma step is found within 60 samples
            assert prev is not None and cur is not None and prev < 105 and cur > 110
            return
    pytest.fail("step change not detected")


def test_zscore_detector_flags_outliers_and_keeps_its_baseline() -> None:
    rng = random.Random(2)
    det = ZScoreDetector(threshold=4.0, grace=20)
    flagged = [det.update(rng.gauss(50, 2))[1] for _ in range(2000)]
    assert sum(flagged) <= 2
    for _ in range(20):  # a persisting fault keeps scoring: anomalies are not learned
        score, anomalous = det.update(95.0)
        assert anomalous and score > 15
    assert 49 < det.mean < 51


def test_models_checkpoint_and_resume_identically() -> None:
    rng = random.Random(9)
    a = LatencyPredictor()
    xs = [(features("c", i, 100, 0.9, 1.0, rng.random()), rng.uniform(10, 100)) for i in range(400)]
    for x, y in xs[:200]:
        a.learn(x, y)
    b = loads(dumps(a))
    for x, y in xs[200:]:
        a.learn(x, y)
        b.learn(x, y)
    assert a.interval(xs[0][0]) == b.interval(xs[0][0])
    with pytest.raises(ValueError):
        loads({**dumps(a), "river": "0.0.1"})


def seasonal(hours: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [max(0.0, 200 + 80 * math.sin(2 * math.pi * h / 24) + 0.2 * h + rng.gauss(0, 10)) for h in range(hours)]


@pytest.mark.parametrize("seed", [4, 5])
def test_seasonal_series_forecast_beats_seasonal_naive(seed: int) -> None:
    series = seasonal(24 * 28, seed=seed)
    f = SeriesForecaster("snarimax")
    model_err = naive_err = 0.0
    n = 0
    for h, y in enumerate(series):
        if f.ready:
            model_err += abs(f.forecast(1)[0][0] - y)
            naive_err += abs(series[h - 24] - y)
            n += 1
        f.learn(y)
    assert n > 24 * 20
    assert model_err / n < 0.9 * naive_err / n


def test_hourly_forecaster_buckets_events_and_forecasts_a_week() -> None:
    counts = [int(v) for v in seasonal(24 * 21, seed=1)]
    f = HourlyForecaster()
    rng = random.Random(0)
    for hour, count in enumerate(counts):
        for _ in range(count):
            f.record(hour * HOUR_MS + rng.randrange(HOUR_MS))
    f.record(len(counts) * HOUR_MS)  # opens the next hour: the last full hour is learned
    points = f.forecast(168)
    assert len(points) == 168 and points[0].at_ms == (len(counts) + 1) * HOUR_MS
    assert all(p.lower is not None and p.upper is not None and p.lower <= p.load <= p.upper for p in points)
    peak = max(p.load for p in points)
    assert 380 < peak < 460  # truth: 200 + 80 + 0.2 × 672 ≈ 414 near the end of the week
    with pytest.raises(ValueError):
        f.forecast(169)


def test_capacity_plan_risk_and_savings() -> None:
    pts = [ForecastPoint(i * HOUR_MS, load, None, None) for i, load in enumerate([100.0, 400.0, 250.0])]
    up = plan_capacity("ml.inference", pts, current_capacity=200)
    assert (up.recommended_capacity, up.risk_level, up.action) == (480.0, "CRITICAL", "scale-up")
    down = plan_capacity("ml.inference", pts, current_capacity=1000, cost_per_unit_hour=0.01)
    assert down.action == "scale-down" and down.risk_level == "LOW"
    assert down.estimated_cost_change_per_day == pytest.approx((480 - 1000) * 24 * 0.01)
    hold = plan_capacity("ml.inference", pts, current_capacity=500)
    assert (hold.action, hold.recommended_capacity, hold.estimated_cost_change_per_day) == ("hold", 500, 0)
    assert [risk_level(p, 100) for p in (50, 80, 95, 101)] == ["LOW", "MEDIUM", "HIGH", "CRITICAL"]
