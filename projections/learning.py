"""Online learning on any numeric stream: profiler, features, prediction, anomaly and drift detection.

The spec's ExecutionProfiler, FeatureExtractor, ModelInference, AdaptationEngine and
AnomalyDetector as plain Python objects fed one value at a time (River underneath). No
Kafka and no clock: every method takes what it needs (a value, a timestamp from the
event), so the heal projection, the benchmarks and the tests run the same code, and a
model fed the same sequence makes the same decisions (River models here are seeded or
deterministic; nothing reads the wall clock).

Every object pickles (``dumps``/``loads`` in ``checkpoint``), which is how the worker
checkpoints model state in its RocksDB table together with the position it learned up to.

Uncertainty: ``LatencyPredictor`` gives split-conformal intervals — the (1 - alpha)
quantile of the absolute residuals the model made *before* learning each past value
(prequential residuals, a sliding window), so the interval needs no distributional
assumption, and it counts how often the interval actually covered the next value
(``coverage``): measured, not assumed.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import math
import pickle
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import river
from river import drift, linear_model, optim, preprocessing, stats

RIVER_VERSION = river.__version__
QUANTILES = (0.5, 0.95, 0.99)
MAX_LOG_MS = 25.0


def _finite(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


# ---------------------------------------------------------------------------- ExecutionProfiler
@dataclass
class Profile:
    """Streaming summary of one key's executions: count, mean, p50/p95/p99 (P², O(1) memory), success rate."""

    count: int = 0
    successes: int = 0
    mean: stats.Mean = field(default_factory=stats.Mean)
    quantiles: dict[float, stats.Quantile] = field(default_factory=lambda: {q: stats.Quantile(q) for q in QUANTILES})

    def update(self, duration_ms: float, success: bool) -> None:
        d = _finite(duration_ms, "duration_ms")
        if d < 0:
            raise ValueError(f"duration_ms must be >= 0, got {d}")
        self.count += 1
        self.successes += 1 if success else 0
        self.mean.update(d)
        for q in self.quantiles.values():
            q.update(d)

    @property
    def success_rate(self) -> float:
        return self.successes / self.count if self.count else 0.0

    def summary(self) -> dict[str, float | int | None]:
        def q(p: float) -> float | None:
            v = self.quantiles[p].get()
            return None if v is None else float(v)

        return {"count": self.count, "mean_ms": float(self.mean.get()) if self.count else None,
                "p50_ms": q(0.5), "p95_ms": q(0.95), "p99_ms": q(0.99), "success_rate": self.success_rate}


class ExecutionProfiler:
    """Profiles per capability and per (agent, capability); keys are created on first sight."""

    def __init__(self) -> None:
        self.by_capability: dict[str, Profile] = {}
        self.by_agent: dict[tuple[str, str], Profile] = {}

    def record(self, agent_id: str, capability: str, duration_ms: float, success: bool) -> None:
        self.by_capability.setdefault(capability, Profile()).update(duration_ms, success)
        self.by_agent.setdefault((agent_id, capability), Profile()).update(duration_ms, success)

    def capability(self, capability: str) -> Profile | None:
        return self.by_capability.get(capability)

    def agent(self, agent_id: str, capability: str) -> Profile | None:
        return self.by_agent.get((agent_id, capability))


# ---------------------------------------------------------------------------- FeatureExtractor
def command_hash(name: str) -> float:
    """A stable hash of a command name in [0, 1) (Python's ``hash`` is salted per process: not replayable)."""
    digest = hashlib.sha256(name.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def features(command: str, timestamp_ms: int, historical_avg_ms: float, recent_success_rate: float,
             agent_health: float, system_load: float) -> dict[str, float]:
    """The spec's 7-feature vector (§8.5), with hour and weekday from the *event* time (UTC).

    Hour and weekday are also given as sine/cosine pairs so a linear model can use the
    daily and weekly cycle (23 h and 0 h are neighbours).
    """
    hour = (timestamp_ms // 3_600_000) % 24
    weekday = (timestamp_ms // 86_400_000 + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    return {
        "command_name_hash": command_hash(command),
        "hour_of_day": float(hour), "day_of_week": float(weekday),
        "hour_sin": math.sin(2 * math.pi * hour / 24), "hour_cos": math.cos(2 * math.pi * hour / 24),
        "historical_avg_time": _finite(historical_avg_ms, "historical_avg_ms"),
        "recent_success_rate": _finite(recent_success_rate, "recent_success_rate"),
        "agent_health": _finite(agent_health, "agent_health"),
        "system_load": _finite(system_load, "system_load"),
    }


# ---------------------------------------------------------------------------- ModelInference
class LatencyPredictor:
    """Online regression of execution time with a split-conformal interval and measured coverage.

    Model: standard scaling + linear regression (SGD) on the features, predicting the log
    of the duration (durations are positive and right-skewed) as a deviation from its
    running mean — learned one sample at a time. Before learning each sample it predicts it, records whether the current
    interval covered it (``covered``/``scored``) and stores the absolute residual in a
    sliding window; the interval half-width is the window's conformal quantile
    ``ceil((n+1)(1-alpha))/n``.
    """

    def __init__(self, alpha: float = 0.1, window: int = 500, lr: float = 0.01, grace: int = 30) -> None:
        self.alpha = alpha
        self.window = window
        self.grace = grace
        self.model = preprocessing.StandardScaler() | linear_model.LinearRegression(
            optimizer=optim.SGD(lr), intercept_lr=lr, clip_gradient=10.0)
        self.y_mean = stats.Mean()
        self.residuals: deque[float] = deque(maxlen=window)
        self._sorted: list[float] = []
        self.seen = 0
        self.scored = 0
        self.covered = 0
        self.abs_error_sum = 0.0

    def _log_prediction(self, x: Mapping[str, float]) -> float:
        # clipped to [0, 25]: a diverging early SGD step must not overflow exp (e^25 ms ≈ 2 years)
        # the model learns the deviation from the running mean of log-durations: SGD on the
        # intercept alone would need thousands of samples to climb to ~log(100 ms)
        return min(MAX_LOG_MS, max(0.0, float(self.y_mean.get()) + float(self.model.predict_one(dict(x)))))

    def predict(self, x: Mapping[str, float]) -> float:
        """Predicted duration, ms."""
        return math.expm1(self._log_prediction(x))

    def interval(self, x: Mapping[str, float]) -> tuple[float, float, float]:
        """(prediction, lower, upper), ms; before ``grace`` samples the interval is [0, inf)."""
        return self._interval_of(self._log_prediction(x))

    def _interval_of(self, pred_log: float) -> tuple[float, float, float]:
        pred = math.expm1(pred_log)
        if len(self._sorted) < self.grace:
            return pred, 0.0, math.inf
        n = len(self._sorted)
        k = min(n - 1, math.ceil((n + 1) * (1 - self.alpha)) - 1)
        half = self._sorted[k]
        return pred, math.expm1(max(0.0, pred_log - half)), math.expm1(min(MAX_LOG_MS, pred_log + half))

    def learn(self, x: Mapping[str, float], duration_ms: float) -> None:
        d = _finite(duration_ms, "duration_ms")
        if d < 0:
            raise ValueError(f"duration_ms must be >= 0, got {d}")
        y = math.log1p(d)
        # one model prediction serves the interval and the residual (River's predict_one is
        # costly: it inspects the signature of every step on each call)
        pred_log = self._log_prediction(x)
        pred, lower, upper = self._interval_of(pred_log)
        if len(self._sorted) >= self.grace:
            self.scored += 1
            self.covered += 1 if lower <= d <= upper else 0
        self.abs_error_sum += abs(pred - d)
        residual = abs(pred_log - y)
        if len(self.residuals) == self.window:
            old = self.residuals[0]
            del self._sorted[bisect.bisect_left(self._sorted, old)]
        self.residuals.append(residual)
        bisect.insort(self._sorted, residual)
        self.model.learn_one(dict(x), y - float(self.y_mean.get()))
        self.y_mean.update(y)
        self.seen += 1

    @property
    def coverage(self) -> float | None:
        """Fraction of scored samples inside their interval (target: 1 - alpha)."""
        return self.covered / self.scored if self.scored else None

    @property
    def mae(self) -> float | None:
        return self.abs_error_sum / self.seen if self.seen else None


class SuccessClassifier:
    """Online logistic regression of P(success | features)."""

    def __init__(self, lr: float = 0.05) -> None:
        self.model = preprocessing.StandardScaler() | linear_model.LogisticRegression(optimizer=optim.SGD(lr))
        self.seen = 0

    def predict(self, x: Mapping[str, float]) -> float:
        proba = self.model.predict_proba_one(dict(x))
        return float(proba.get(True, 0.5)) if proba else 0.5

    def learn(self, x: Mapping[str, float], success: bool) -> None:
        self.model.learn_one(dict(x), bool(success))
        self.seen += 1


# ---------------------------------------------------------------------------- AdaptationEngine
@dataclass(frozen=True)
class RetryAdvice:
    retries: int
    backoff_ms: int
    reason: str


def recommend_retry(success_probability: float, predicted_ms: float, target: float = 0.99,
                    max_retries: int = 5) -> RetryAdvice:
    """Retries so that ``1 - (1-p)^(r+1) >= target`` (independent attempts), backoff = predicted time.

    The spec recommends retries when P(success) < 0.7; the formula gives 0 retries for a
    near-certain success and caps at ``max_retries`` when p is too low for retries to help
    (then the caller should reroute instead: reason says so).
    """
    p = min(max(_finite(success_probability, "success_probability"), 0.0), 1.0)
    backoff = max(1, round(_finite(predicted_ms, "predicted_ms")))
    if p >= target:
        return RetryAdvice(0, 0, "success probability meets the target")
    if p <= 0.0:
        return RetryAdvice(0, 0, "success probability is 0: reroute instead of retrying")
    needed = math.ceil(math.log(1 - target) / math.log(1 - p)) - 1
    if needed > max_retries:
        return RetryAdvice(max_retries, backoff, f"needs {needed} retries for {target:.0%}: reroute preferred")
    return RetryAdvice(max(0, needed), backoff, f"{needed} retries reach {target:.0%}")


# ---------------------------------------------------------------------------- AnomalyDetector
class ZScoreDetector:
    """Univariate anomaly scorer: |x - mean| / std over the normal baseline (Welford, River stats).

    Anomalous values are not learned, so a persisting fault keeps scoring high instead of
    becoming the new normal; ``grace`` samples are learned before anything is scored.
    ``min_std`` keeps a perfectly flat baseline from flagging noise-free jitter at z = inf.
    """

    name = "zscore"

    def __init__(self, threshold: float = 4.0, grace: int = 20, min_std: float = 1e-6,
                 min_relative_std: float = 0.01) -> None:
        self.threshold = threshold
        self.grace = grace
        self.min_std = min_std
        self.min_relative_std = min_relative_std
        self.var = stats.Var()
        self.n = 0

    @property
    def mean(self) -> float:
        return float(self.var.mean.get())

    @property
    def std(self) -> float:
        raw = math.sqrt(max(0.0, float(self.var.get()))) if self.n > 1 else 0.0
        return max(raw, self.min_std, abs(self.mean) * self.min_relative_std)

    def score(self, value: float) -> float:
        v = _finite(value, "value")
        if self.n < self.grace:
            return 0.0
        return abs(v - self.mean) / self.std

    def update(self, value: float) -> tuple[float, bool]:
        """Score, then learn the value if it is normal: (score, is_anomaly)."""
        s = self.score(value)
        anomalous = s > self.threshold
        if not anomalous:
            self.var.update(float(value))
            self.n += 1
        return s, anomalous


class DriftDetector:
    """ADWIN or Page-Hinkley on a stream (River), remembering the mean before and after the change.

    Page-Hinkley's ``delta`` and ``threshold`` are in the stream's units (River defaults
    0.005 / 50 suit values of order 1): about sigma/2 and 20 sigma keep false alarms rare.
    "After" is the mean of the last ``recent_window`` values at detection.
    """

    def __init__(self, method: str = "page-hinkley", recent_window: int = 5, **params: Any) -> None:
        if method == "adwin":
            self.detector: Any = drift.ADWIN(**params)
        elif method == "page-hinkley":
            self.detector = drift.PageHinkley(**params)
        else:
            raise ValueError(f"unknown drift method {method!r}")
        self.method = method
        self.seen = 0
        self.before = stats.Mean()
        self.recent: deque[float] = deque(maxlen=recent_window)  # plain deque: River's Rolling API changed in 0.26

    def update(self, value: float) -> tuple[bool, float | None, float | None]:
        """(drift detected at this value, mean before, recent mean)."""
        v = _finite(value, "value")
        self.detector.update(v)
        self.seen += 1
        self.recent.append(v)
        if self.detector.drift_detected:
            prev, cur = float(self.before.get()), sum(self.recent) / len(self.recent)
            self.before = stats.Mean()
            return True, prev, cur
        self.before.update(v)
        return False, None, None


# ---------------------------------------------------------------------------- checkpoints
def dumps(model: Any) -> dict[str, Any]:
    """A JSON-storable checkpoint: base64 pickle plus the River version that wrote it."""
    return {"river": RIVER_VERSION, "pickle": base64.b64encode(pickle.dumps(model, protocol=5)).decode()}


def loads(checkpoint: Mapping[str, Any]) -> Any:
    """Restore a checkpoint; refuses one written by another River version (pickles are not portable)."""
    if checkpoint.get("river") != RIVER_VERSION:
        raise ValueError(f"checkpoint written by river {checkpoint.get('river')}, this is river {RIVER_VERSION}")
    return pickle.loads(base64.b64decode(checkpoint["pickle"]))  # our own table, not user input


__all__ = [
    "RIVER_VERSION",
    "DriftDetector",
    "ExecutionProfiler",
    "LatencyPredictor",
    "Profile",
    "RetryAdvice",
    "SuccessClassifier",
    "ZScoreDetector",
    "command_hash",
    "dumps",
    "features",
    "loads",
    "recommend_retry",
]
