"""Workload forecasting and capacity planning on hourly counts (WorkloadForecaster, CapacityPlanner,
CostOptimizer, RiskAssessment).

``HourlyForecaster`` takes events one at a time (``record(timestamp_ms, amount)``), sums
them into UTC hour buckets, and feeds every *closed* hour (empty hours as 0) to an online
model: additive Holt-Winters with a 24 h season (River), or SNARIMAX. Forecasts go up
to 168 h. Intervals are split-conformal on the model's own one-step-ahead errors (made
before it learned each hour), widened by ``sqrt(h)`` for step ``h`` — the random-walk
growth of error with the horizon; a heuristic, and the benchmark measures how it covers.

``plan_capacity`` turns a forecast into the spec's recommendation (peak × buffer, 1.2 by
default), a risk level from how close the peak comes to current capacity, and — when
capacity exceeds the need — a scale-down suggestion with the estimated saving per day.

Pure and clock-free: time is the event time passed in, so replay gives the same forecast.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass
from typing import Any

from river import time_series

HOUR_MS = 3_600_000
MAX_HORIZON_HOURS = 168
DEFAULT_BUFFER = 1.2
SEASON = 24


def _finite(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class ForecastPoint:
    at_ms: int
    load: float
    lower: float | None
    upper: float | None


def make_model(model: str, season: int = SEASON) -> Any:
    if model == "holt-winters":
        return time_series.HoltWinters(alpha=0.3, beta=0.01, gamma=0.3, seasonality=season)
    if model == "snarimax":
        return time_series.SNARIMAX(p=2, d=0, q=1, m=season, sp=1, sd=1, sq=0)
    raise ValueError(f"unknown forecasting model {model!r} (holt-winters, snarimax)")


class SeriesForecaster:
    """An online forecaster of one regular series (one value per step) with conformal intervals."""

    def __init__(self, model: str = "snarimax", season: int = SEASON, alpha: float = 0.1,
                 window: int = 24 * 14) -> None:
        self.model_name = model
        self.season = season
        self.alpha = alpha
        self.model = make_model(model, season)
        self.n = 0
        self.history: deque[float] = deque(maxlen=season)  # last season, for the seasonal-naive fallback
        self.residuals: deque[float] = deque(maxlen=window)
        self._sorted: list[float] = []

    @property
    def ready(self) -> bool:
        """The model has seen two seasons (Holt-Winters initialises on the first)."""
        return self.n >= 2 * self.season

    def _one_step(self) -> float | None:
        if not self.ready:
            return None
        return float(self.model.forecast(horizon=1)[0])

    def learn(self, value: float) -> None:
        v = _finite(value, "value")
        predicted = self._one_step()
        if predicted is not None:
            residual = abs(v - predicted)
            if len(self.residuals) == self.residuals.maxlen:
                del self._sorted[bisect.bisect_left(self._sorted, self.residuals[0])]
            self.residuals.append(residual)
            bisect.insort(self._sorted, residual)
        self.model.learn_one(v)
        self.history.append(v)
        self.n += 1

    def half_width(self) -> float | None:
        n = len(self._sorted)
        if n < 10:
            return None
        k = min(n - 1, math.ceil((n + 1) * (1 - self.alpha)) - 1)
        return self._sorted[k]

    def forecast(self, horizon: int) -> list[tuple[float, float | None, float | None]]:
        """(value, lower, upper) for the next ``horizon`` steps; loads are clipped at 0.

        Before two seasons of data: seasonal-naive (repeat the last season) if a season
        exists, else the mean; no interval.
        """
        if not 1 <= horizon <= MAX_HORIZON_HOURS:
            raise ValueError(f"horizon must be in 1..{MAX_HORIZON_HOURS}, got {horizon}")
        if not self.ready:
            hist = list(self.history)
            if not hist:
                return [(0.0, None, None)] * horizon
            if len(hist) == self.season:
                return [(max(0.0, hist[h % self.season]), None, None) for h in range(horizon)]
            mean = sum(hist) / len(hist)
            return [(max(0.0, mean), None, None)] * horizon
        values = [float(v) for v in self.model.forecast(horizon=horizon)]
        half = self.half_width()
        out: list[tuple[float, float | None, float | None]] = []
        for h, v in enumerate(values, start=1):
            if half is None:
                out.append((max(0.0, v), None, None))
            else:
                w = half * math.sqrt(h)
                out.append((max(0.0, v), max(0.0, v - w), max(0.0, v + w)))
        return out


class HourlyForecaster:
    """Counts events into UTC hours and forecasts the hourly load (commands per hour)."""

    def __init__(self, model: str = "snarimax", alpha: float = 0.1) -> None:
        self.series = SeriesForecaster(model, SEASON, alpha)
        self.current_hour: int | None = None
        self.current_total = 0.0

    def record(self, timestamp_ms: int, amount: float = 1.0) -> None:
        """Add ``amount`` at ``timestamp_ms``; an event older than the open hour is counted in it (late data)."""
        hour = int(timestamp_ms) // HOUR_MS
        a = _finite(amount, "amount")
        if a < 0:
            raise ValueError(f"amount must be >= 0, got {a}")
        if self.current_hour is None:
            self.current_hour = hour
        while hour > self.current_hour:
            self.series.learn(self.current_total)
            self.current_total = 0.0
            self.current_hour += 1
        self.current_total += a

    def forecast(self, hours: int) -> list[ForecastPoint]:
        """Hours after the open one (the open hour is still being counted)."""
        start = ((self.current_hour or 0) + 1) * HOUR_MS
        return [ForecastPoint(start + i * HOUR_MS, v, lo, hi)
                for i, (v, lo, hi) in enumerate(self.series.forecast(hours))]


# ---------------------------------------------------------------------------- capacity
RISK_LEVELS = ("LOW", "MEDIUM", "HIGH", "CRITICAL")


def risk_level(peak_load: float, current_capacity: float) -> str:
    """Bottleneck risk if nothing changes: utilisation of current capacity at the forecast peak.

    CRITICAL: the peak exceeds capacity; HIGH: above 90 %; MEDIUM: above 75 %; else LOW.
    """
    if current_capacity <= 0:
        return "CRITICAL" if peak_load > 0 else "LOW"
    u = peak_load / current_capacity
    if u > 1.0:
        return "CRITICAL"
    if u > 0.9:
        return "HIGH"
    if u > 0.75:
        return "MEDIUM"
    return "LOW"


@dataclass(frozen=True)
class CapacityPlan:
    capability: str
    horizon_hours: int
    points: list[ForecastPoint]
    peak_load: float
    current_capacity: float
    recommended_capacity: float
    buffer_factor: float
    risk_level: str
    action: str  # scale-up / scale-down / hold
    estimated_cost_change_per_day: float  # negative = savings

    def as_event(self, recommendation_id: str, model: str, coverage: float | None) -> dict[str, Any]:
        """The ``heal.capacity_forecast`` payload."""
        return {
            "recommendation_id": recommendation_id, "capability": self.capability,
            "horizon_hours": self.horizon_hours,
            "points": [{"at_ms": p.at_ms, "load": p.load, "lower": p.lower, "upper": p.upper} for p in self.points],
            "coverage": coverage, "peak_load": self.peak_load, "current_capacity": self.current_capacity,
            "recommended_capacity": self.recommended_capacity, "buffer_factor": self.buffer_factor,
            "risk_level": self.risk_level, "model": model,
            "estimated_cost_change": self.estimated_cost_change_per_day,
        }


def plan_capacity(capability: str, points: list[ForecastPoint], current_capacity: float,
                  buffer_factor: float = DEFAULT_BUFFER, cost_per_unit_hour: float = 0.001,
                  hysteresis: float = 0.1) -> CapacityPlan:
    """Recommend ``peak × buffer``; scale down only when capacity exceeds it by more than ``hysteresis``.

    Cost change per day = (recommended − current) × 24 × ``cost_per_unit_hour`` (capacity
    in commands/hour, cost per unit of capacity per hour): negative numbers are savings.
    """
    if not points:
        raise ValueError("no forecast points")
    current = _finite(current_capacity, "current_capacity")
    peak = max(p.load for p in points)
    recommended = peak * buffer_factor
    if recommended > current:
        action = "scale-up"
    elif current > recommended * (1 + hysteresis):
        action = "scale-down"
    else:
        action, recommended = "hold", current
    cost = (recommended - current) * 24 * cost_per_unit_hour
    return CapacityPlan(capability, len(points), points, peak, current, recommended, buffer_factor,
                        risk_level(peak, current), action, cost)


__all__ = [
    "DEFAULT_BUFFER",
    "HOUR_MS",
    "MAX_HORIZON_HOURS",
    "RISK_LEVELS",
    "CapacityPlan",
    "ForecastPoint",
    "HourlyForecaster",
    "SeriesForecaster",
    "plan_capacity",
    "risk_level",
]
