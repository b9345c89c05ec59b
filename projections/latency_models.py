"""Learned latency per (agent, capability, receipts lane) for the PREDICTED routing strategy.

``LatencyModelProjection`` (store ``latency``) folds ``commands.receipt`` into one
``learning.LatencyPredictor`` per (agent, capability, receipts lane), checkpointed as a
pickle (``learning.dumps``) in ``lat/<agent>/<capability>/<lane>``. Each key is fed by
one receipts partition in its order, so every registry replica and every replay hold the
same models (docs/architecture.md, the determinism rule). The router of ``commands/p``
reads the models of ``receipts/p`` — the receipts of the commands it routed — as it does
for breakers.

Features are lane-local so that learning never reads another partition: the spec's
vector with the event's hour and weekday, this model's own running mean duration as the
historical average and its exponentially weighted success rate as the recent success
rate; agent health and system load are held at 1.0 and 0.0 (they live in other
partitions; the router accounts for load and reliability itself, see
``learned_predictions``).

The prediction is an **input recorded in** ``commands.routed`` (``inputs.predicted_latency_ms``
and ``model_version``): a replay folds the recorded decision and never re-runs a model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from swarmlog.projections.base import Derived, EventContext, InvalidEvent, Projection, StateStore, Stores
from swarmlog.projections.learning import RIVER_VERSION, LatencyPredictor, dumps, features, loads

LAT_PREFIX = "lat/"
MIN_SAMPLES = 20  # receipts a model needs before the router trusts it
SUCCESS_EWMA = 0.1
MODEL_NAME = "LatencyPredictor"
WINDOW = 100  # conformal residual window: routing uses the point prediction, a short window keeps checkpoints small
CHECKPOINT_EVERY = 32


def lat_key(agent_id: str, capability: str, receipts_lane: str) -> str:
    return f"{LAT_PREFIX}{agent_id}/{capability}/{receipts_lane}"


def model_features(capability: str, timestamp_ms: int, record: Mapping[str, Any] | None) -> dict[str, float]:
    mean = float(record["mean_ms"]) if record else 0.0
    ok = float(record["ok_rate"]) if record else 1.0
    return features(capability, timestamp_ms, historical_avg_ms=mean, recent_success_rate=ok, agent_health=1.0,
                    system_load=0.0)


def model_version(receipts_lane: str) -> str:
    return f"{MODEL_NAME}/river-{RIVER_VERSION}/{receipts_lane}"


def _marker(key: str, record: Mapping[str, Any]) -> tuple[Any, ...]:
    """Identifies a model state: the key and the last event it learned (stream, lane, seq) — one lane's
    history up to one event gives one model, whichever store holds it."""
    learned = record["learned_to"]
    return (key, learned["stream"], learned["lane"], learned["seq"])


_CACHE: dict[tuple[Any, ...], LatencyPredictor] = {}
_CACHE_MAX = 20_000


def _restore(key: str, record: Mapping[str, Any]) -> LatencyPredictor:
    """The model a record describes: checkpoint + the tail learned since, or the live object if cached.

    Raises ValueError for a checkpoint from another River version.
    """
    marker = _marker(key, record)
    cached = _CACHE.get(marker)
    if cached is not None:
        return cached
    model: LatencyPredictor = loads(record["checkpoint"]) if record["checkpoint"] else LatencyPredictor(window=WINDOW)
    for x, duration in record["tail"]:
        model.learn(x, duration)
    _remember(marker, model)
    return model


def _remember(marker: tuple[Any, ...], model: LatencyPredictor) -> None:
    if len(_CACHE) >= _CACHE_MAX:
        _CACHE.clear()  # a cache only: everything is rebuilt from the store on demand
    _CACHE[marker] = model


def predict(store: StateStore, agent_id: str, capability: str, receipts_lane: str, now_ms: int) -> float | None:
    """The learned duration of a call, ms; None while the model has fewer than ``MIN_SAMPLES`` successes
    (or was written by another River version)."""
    key = lat_key(agent_id, capability, receipts_lane)
    record = store.get(key)
    if record is None or record["n"] < MIN_SAMPLES:
        return None
    try:
        model = _restore(key, record)
    except ValueError:
        return None
    return float(model.predict(model_features(capability, now_ms, record)))


def learned_predictions(store: StateStore, candidates: Sequence[Mapping[str, Any]], capability: str,
                        receipts_lane: str, now_ms: int) -> list[dict[str, Any]]:
    """Candidates with ``predicted_latency_ms`` = learned duration × (1 + load/max_concurrency) ÷ reliability
    where a trained model exists (the same queueing and retry terms as the registry's estimate, with the
    learned duration in place of the decayed mean); others unchanged (the router falls back per candidate)."""
    out: list[dict[str, Any]] = []
    for c in candidates:
        learned = predict(store, str(c["agent_id"]), capability, receipts_lane, now_ms)
        if learned is None:
            out.append(dict(c))
            continue
        queueing = 1 + c["load"] / c["max_concurrency"]
        out.append({**c, "predicted_latency_ms": learned * queueing / max(float(c["reliability"]), 0.05)})
    return out


class LatencyModelProjection(Projection):
    """Learns call durations per (agent, capability, receipts lane). See the module doc.

    Stored: ``{checkpoint, tail, n, mean_ms, ok_rate, learned_to}`` — a pickled checkpoint
    every ``CHECKPOINT_EVERY`` learned receipts and the (features, duration) pairs learned
    since (JSON), so a receipt costs one ``learn`` and no pickle round trip most of the
    time; the live model object is cached by the event it learned last (``_restore``).
    """

    name: ClassVar[str] = "latency"
    event_types: ClassVar[frozenset[str]] = frozenset({"commands.receipt"})

    def apply(self, stores: Stores, ctx: EventContext, payload: dict[str, Any]) -> list[Derived]:
        try:
            agent, capability = payload["agent_id"], payload["capability"]
            duration, success = payload["duration_ms"], payload["success"]
        except KeyError as exc:
            raise InvalidEvent("invalid-payload", f"missing field {exc}") from None
        if not isinstance(agent, str) or not agent or not isinstance(capability, str) or not capability:
            raise InvalidEvent("invalid-payload", "agent_id and capability must be non-empty strings")
        if isinstance(duration, bool) or not isinstance(duration, int) or duration < 0:
            raise InvalidEvent("invalid-payload", f"duration_ms must be an integer >= 0, got {duration!r}")
        if not isinstance(success, bool):
            raise InvalidEvent("invalid-payload", "success must be a boolean")
        ok = success and not payload.get("timed_out", False)
        own = stores.own
        key = lat_key(agent, capability, ctx.lane)
        record = own.get(key)
        model: LatencyPredictor | None = None
        if record is not None:
            try:
                model = _restore(key, record)
            except ValueError:  # another River version: relearn
                record, model = None, None
        checkpoint = record["checkpoint"] if record else None
        tail = list(record["tail"]) if record else []
        if record is not None:
            # the object is re-keyed (and may change in place below): no entry may keep describing the old state
            _CACHE.pop(_marker(key, record), None)
        if ok:  # a failed call's duration says little about how long a success takes
            if model is None:
                model = LatencyPredictor(window=WINDOW)
            x = model_features(capability, ctx.timestamp_ms, record)
            model.learn(x, float(duration))
            tail.append([x, float(duration)])
            if len(tail) >= CHECKPOINT_EVERY:
                checkpoint, tail = dumps(model), []
        n = (record["n"] if record else 0) + (1 if ok else 0)
        mean = float(record["mean_ms"]) if record else 0.0
        if ok:
            mean += (duration - mean) / n
        ok_rate = float(record["ok_rate"]) if record else 1.0
        ok_rate += SUCCESS_EWMA * ((1.0 if ok else 0.0) - ok_rate)
        new = {"checkpoint": checkpoint, "tail": tail, "n": n, "mean_ms": mean, "ok_rate": ok_rate,
               "learned_to": {"stream": ctx.stream_id, "lane": ctx.lane, "seq": ctx.seq,
                              "event_ms": ctx.timestamp_ms}}
        own.put(key, new)
        if model is not None:
            _remember(_marker(key, new), model)
        return []


__all__ = [
    "MIN_SAMPLES",
    "LatencyModelProjection",
    "lat_key",
    "learned_predictions",
    "model_version",
    "predict",
]
