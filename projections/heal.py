"""Self-healing (MAPE-K) projection: monitor → analyze → plan → execute → knowledge, on the log.

* **Monitor** — ``heal.metric_sample`` (topic ``metrics``, keyed by component) feeds one
  anomaly detector (``ZScoreDetector``) and one drift detector (Page-Hinkley) per
  (component, metric); ``commands.receipt`` feeds circuit breakers per (agent,
  capability, receipts lane).
* **Analyze** — an anomalous sample derives ``heal.anomaly_detected`` and a
  ``heal.diagnosis``: root causes ranked over the dependency graph (a sample's
  ``labels["depends_on"]``, comma-separated components): a dependency that is itself in an
  open incident ranks above the symptomatic component ("dependency-failure"); otherwise
  the cause follows the metric (latency → latency-degradation, errors → error-spike,
  cpu/load/queue → overload). A drift derives ``heal.drift_detected``.
* **Plan / Execute** — ``heal.action`` (derived, signed by the worker; agents act on it):
  for the failure type, the candidate actions (``PLAYBOOK``) are ranked by their
  knowledge score ``(successes + 1) / (attempts + 2)`` (Laplace: untried actions start at
  0.5, ties keep playbook order); actions already tried in this incident are skipped.
* **Knowledge** — recovery is observed on the same metric stream: ``RECOVERY_SAMPLES``
  normal samples in a row close the incident and derive ``heal.outcome`` (success,
  time to recover = recovery sample time − first anomaly time). If the metric is still
  anomalous ``ESCALATE_MS`` after the last action, the action failed: ``heal.outcome``
  (success false) and the next action is planned. Folding ``heal.outcome`` updates
  ``know/<lane>/<failure>/<action>`` = ``[attempts, successes]``; later plans read it.

* **Capacity** — receipts are also the workload: counted per (capability, receipts lane)
  into UTC hours of event time; every ``FORECAST_CADENCE_HOURS`` of the lane's event
  time the lane derives ``heal.capacity_forecast`` (``HourlyForecaster``, 168 h,
  ``plan_capacity``) for each capability it has seen for at least a day. Keyed by the
  receipts lane like the breakers, so replay derives the same forecasts.

Determinism (docs/architecture.md). Stored values are fed from one lane each: model
checkpoints and incidents by the component's ``metrics`` lane, breakers by one
``receipts`` lane (each routing shard keeps its own breakers, as each resilience4j
client does), ``action/<id>`` by the target's ``heal`` lane, knowledge per ``heal`` lane
(summed at read time: a sum is order-free). What *reads across lanes* — the plan reads
knowledge, the diagnosis reads other components' incidents — only shapes **derived**
events and is never stored, like the router's decision: the log records the decision
and replay folds the record. Detection itself (anomaly, drift, recovery, breaker
transitions) reads only its own lane, so a replay re-derives exactly the same events.

Model state (``model/<component>/<metric>``) is a checkpoint: the pickled detectors, the
River version, and the position learned up to (producer stream, lane, seq, event time).
A restarted worker restores the table and continues from it; ``fold``'s marks skip what
the checkpoint already learned. A checkpoint written by another River version is not
unpickled: the detectors relearn from the next sample (a River upgrade therefore
changes decisions relative to a replay under the old version, as any model change does).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from typing import Any, ClassVar

from swarmlog.projections.base import Derived, EventContext, InvalidEvent, Projection, StateStore, Stores
from swarmlog.projections.forecast import HOUR_MS, HourlyForecaster, plan_capacity
from swarmlog.projections.learning import DriftDetector, ZScoreDetector, dumps, loads
from swarmlog.projections.resilience import ROUTING_BREAKER, new_breaker, on_result, transition_event

MODEL_PREFIX = "model/"
INCIDENT_PREFIX = "incident/"
DEPS_PREFIX = "deps/"
ACTION_PREFIX = "action/"
KNOW_PREFIX = "know/"
BREAKER_PREFIX = "breaker/"
FCOUNT_PREFIX = "fcount/"
FMODEL_PREFIX = "fmodel/"
FCLOCK_PREFIX = "fclock/"

FORECAST_CADENCE_HOURS = 6  # a heal.capacity_forecast per capability and lane every 6 h of event time
FORECAST_HORIZON_HOURS = 168
FORECAST_MIN_HOURS = 24  # closed hours a forecaster needs before its forecasts are published
FORECAST_MAX_GAP_HOURS = 24 * 14  # longer silences restart the series instead of learning weeks of zeros
FORECAST_MODEL = "snarimax"

Z_THRESHOLD = 4.0
GRACE_SAMPLES = 20
RECOVERY_SAMPLES = 3
ESCALATE_MS = 15_000
DRIFT_DELTA_SIGMAS = 0.5
DRIFT_THRESHOLD_SIGMAS = 20.0

PLAYBOOK: dict[str, tuple[str, ...]] = {
    "latency-degradation": ("RESTART", "REROUTE", "SCALE"),
    "error-spike": ("OPEN_CIRCUIT", "RESTART", "REROUTE"),
    "overload": ("SCALE", "REROUTE", "ISOLATE"),
    "dependency-failure": ("REROUTE", "ISOLATE", "RESTART"),
    "anomaly": ("RESTART", "REROUTE", "ISOLATE"),
}
BREAKER = ROUTING_BREAKER  # the registry folds the same breakers for the router (projections/registry.py)


def failure_type(metric: str) -> str:
    m = metric.lower()
    if "latency" in m or m.endswith("_ms") or "duration" in m:
        return "latency-degradation"
    if "error" in m or "fail" in m:
        return "error-spike"
    if any(w in m for w in ("cpu", "load", "queue", "memory", "saturation")):
        return "overload"
    return "anomaly"


def derived_id(ctx: EventContext, what: str) -> str:
    """A deterministic id: the same event derives the same ids in a live worker and in a replay."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"swarmlog:{ctx.event_id}:{what}"))


def knowledge(store: StateStore, failure: str) -> dict[str, tuple[int, int]]:
    """``{action: (attempts, successes)}`` for a failure type, summed over every heal lane."""
    out: dict[str, tuple[int, int]] = {}
    for key, value in store.scan(KNOW_PREFIX):
        _, _lane_topic, _lane_part, fail, action = key.split("/", 4)
        if fail == failure:
            a, s = out.get(action, (0, 0))
            out[action] = (a + int(value[0]), s + int(value[1]))
    return out


def plan(failure: str, know: Mapping[str, tuple[int, int]], tried: set[str]) -> tuple[str, float] | None:
    """Best untried action for ``failure`` by knowledge score; None when the playbook is exhausted."""
    best: tuple[float, int, str] | None = None
    for rank, action in enumerate(PLAYBOOK.get(failure, PLAYBOOK["anomaly"])):
        if action in tried:
            continue
        attempts, successes = know.get(action, (0, 0))
        score = (successes + 1) / (attempts + 2)
        if best is None or (-score, rank) < (-best[0], best[1]):
            best = (score, rank, action)
    return (best[2], best[0]) if best else None


def _text(p: Mapping[str, Any], name: str) -> str:
    value = p[name]
    if not isinstance(value, str) or not value:
        raise InvalidEvent("invalid-payload", f"{name} must be a non-empty string")
    return value


class HealProjection(Projection):
    """MAPE-K over metrics, receipts and heal events. See the module doc."""

    name: ClassVar[str] = "heal"
    event_types: ClassVar[frozenset[str]] = frozenset({
        "heal.metric_sample", "commands.receipt", "heal.action", "heal.outcome",
    })

    def apply(self, stores: Stores, ctx: EventContext, payload: dict[str, Any]) -> list[Derived]:
        try:
            if ctx.event_type == "heal.metric_sample":
                return self._sample(stores.own, ctx, payload)
            if ctx.event_type == "commands.receipt":
                return self._receipt(stores.own, ctx, payload)
            if ctx.event_type == "heal.action":
                self._action(stores.own, ctx, payload)
                return []
            if ctx.event_type == "heal.outcome":
                self._outcome(stores.own, ctx, payload)
                return []
        except KeyError as exc:
            raise InvalidEvent("invalid-payload", f"missing field {exc}") from None
        raise InvalidEvent("unexpected-event-type", ctx.event_type)

    # ------------------------------------------------------------------ monitor + analyze + plan
    def _sample(self, own: StateStore, ctx: EventContext, p: dict[str, Any]) -> list[Derived]:
        component, metric = _text(p, "component"), _text(p, "metric")
        value = p["value"]
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise InvalidEvent("invalid-payload", f"value must be a finite number, got {value!r}")
        unit = str(p.get("unit") or "")
        if value < 0 and (unit in ("ms", "s", "percent", "req/s") or metric.endswith("_ms")):
            raise InvalidEvent("invalid-payload", f"{metric} cannot be negative ({value} {unit})")
        labels = p.get("labels") or {}
        deps = sorted({d.strip() for d in str(labels.get("depends_on", "")).split(",") if d.strip()})
        if deps and own.get(DEPS_PREFIX + component) != deps:
            own.put(DEPS_PREFIX + component, deps)

        mkey = f"{MODEL_PREFIX}{component}/{metric}"
        checkpoint = own.get(mkey)
        try:
            detector, drifter = loads(checkpoint["model"]) if checkpoint else (None, None)
        except ValueError:  # written by another River version: pickles do not carry over, relearn
            detector, drifter = None, None
        if detector is None:
            detector, drifter = ZScoreDetector(Z_THRESHOLD, GRACE_SAMPLES), None
        score, anomalous = detector.update(float(value))
        out: list[Derived] = []
        if drifter is None and detector.n >= GRACE_SAMPLES:
            sigma = detector.std  # drift thresholds in the metric's own units, fixed once the baseline exists
            drifter = DriftDetector("page-hinkley", delta=DRIFT_DELTA_SIGMAS * sigma,
                                    threshold=DRIFT_THRESHOLD_SIGMAS * sigma, min_instances=GRACE_SAMPLES)
        if drifter is not None:
            hit, before, after = drifter.update(float(value))
            if hit:
                out.append(Derived("heal.drift_detected", {
                    "drift_id": derived_id(ctx, "drift"), "component": component, "metric": metric,
                    "detector": "page-hinkley", "previous_mean": before, "current_mean": after,
                    "samples_seen": drifter.seen, "model": None}, subject=component))
        own.put(mkey, {"model": dumps((detector, drifter)), "learned_to": {
            "stream": ctx.stream_id, "lane": ctx.lane, "seq": ctx.seq, "event_ms": ctx.timestamp_ms}})

        ikey = INCIDENT_PREFIX + component
        incident = own.get(ikey)
        if incident is not None and incident["metric"] != metric:
            return out  # an incident is judged on the metric that opened it
        if anomalous and incident is None:
            anomaly_id = derived_id(ctx, "anomaly")
            severity = "CRITICAL" if score > 4 * Z_THRESHOLD else "HIGH" if score > 2 * Z_THRESHOLD else "MEDIUM"
            out.append(Derived("heal.anomaly_detected", {
                "anomaly_id": anomaly_id, "component": component, "metric": metric, "value": float(value),
                "score": score, "threshold": Z_THRESHOLD, "detector": detector.name,
                "baseline_mean": detector.mean, "baseline_std": detector.std, "severity": severity},
                subject=component))
            incident = {"metric": metric, "opened_ms": ctx.timestamp_ms, "anomaly_id": anomaly_id,
                        "actions": [], "last_action_ms": ctx.timestamp_ms, "normal_streak": 0}
            out.extend(self._diagnose_and_act(own, ctx, component, metric, float(value), score, incident, set()))
            own.put(ikey, incident)
        elif anomalous and incident is not None:
            incident = {**incident, "normal_streak": 0}
            if ctx.timestamp_ms - incident["last_action_ms"] >= ESCALATE_MS and incident["actions"]:
                last = incident["actions"][-1]
                out.append(self._outcome_event(component, last, False, None, "still anomalous after "
                                               f"{ctx.timestamp_ms - incident['last_action_ms']} ms"))
                tried = {str((own.get(ACTION_PREFIX + a) or {}).get("action")) for a in incident["actions"]}
                out.extend(self._diagnose_and_act(own, ctx, component, metric, float(value), score, incident,
                                                  tried))
            own.put(ikey, incident)
        elif incident is not None:
            streak = incident["normal_streak"] + 1
            if streak >= RECOVERY_SAMPLES:
                if incident["actions"]:
                    out.append(self._outcome_event(component, incident["actions"][-1], True,
                                                   ctx.timestamp_ms - incident["opened_ms"],
                                                   f"{metric} back to baseline for {streak} samples"))
                own.delete(ikey)
            else:
                own.put(ikey, {**incident, "normal_streak": streak})
        return out

    def _diagnose_and_act(self, own: StateStore, ctx: EventContext, component: str, metric: str, value: float,
                          score: float, incident: dict[str, Any], tried: set[str]) -> list[Derived]:
        """Derive diagnosis + action; records only the action id in ``incident`` (the kind is cross-lane)."""
        n = len(incident["actions"])
        candidates: list[tuple[str, str, float, str]] = []
        for dep in own.get(DEPS_PREFIX + component) or []:
            dep_incident = own.get(INCIDENT_PREFIX + dep)
            if dep_incident is not None:
                candidates.append(("dependency-failure", dep, 2.0,
                                   f"{dep} has an open incident on {dep_incident['metric']} since "
                                   f"{dep_incident['opened_ms']}"))
        cause = failure_type(metric)
        candidates.append((cause, component, 1.0, f"{metric}={value:g} scored {score:.1f} sigma"))
        total = sum(c[2] for c in candidates)
        ranked = sorted(candidates, key=lambda c: (-c[2], c[1]))
        diagnosis_id = derived_id(ctx, f"diagnosis/{n}")
        primary = ranked[0]
        failure, target = primary[0], primary[1]
        chosen = plan(failure, knowledge(own, failure), tried)
        out = [Derived("heal.diagnosis", {
            "diagnosis_id": diagnosis_id, "component": component, "anomaly_ids": [incident["anomaly_id"]],
            "candidates": [{"cause": c[0], "component": c[1], "score": c[2] / total, "evidence": c[3]}
                           for c in ranked],
            "method": "dependency-graph+rules"}, subject=component)]
        if chosen is None:
            return out  # playbook exhausted: the incident stays open for a human
        action, confidence = chosen
        action_id = derived_id(ctx, f"action/{n}")
        out.append(Derived("heal.action", {
            "action_id": action_id, "target": target, "action": action,
            "reason": f"{failure} on {component} ({metric})", "diagnosis_id": diagnosis_id,
            "parameters": {"failure": failure, "symptom": component, "metric": metric,
                           "confidence": f"{confidence:.3f}", "attempt": str(n + 1)},
            "canary": False, "rollback_of": None, "recommendation_id": None}, subject=target))
        incident["actions"] = [*incident["actions"], action_id]
        incident["last_action_ms"] = ctx.timestamp_ms
        return out

    @staticmethod
    def _outcome_event(component: str, action_id: str, success: bool, ttr: int | None, detail: str) -> Derived:
        return Derived("heal.outcome", {"action_id": action_id, "target": component, "success": success,
                                        "time_to_recover_ms": ttr, "detail": detail}, subject=component)

    # ------------------------------------------------------------------ breakers
    def _receipt(self, own: StateStore, ctx: EventContext, p: dict[str, Any]) -> list[Derived]:
        agent, capability = _text(p, "agent_id"), _text(p, "capability")
        duration, success = p["duration_ms"], p["success"]
        if isinstance(duration, bool) or not isinstance(duration, int) or duration < 0:
            raise InvalidEvent("invalid-payload", f"duration_ms must be an integer >= 0, got {duration!r}")
        if not isinstance(success, bool):
            raise InvalidEvent("invalid-payload", "success must be a boolean")
        ok = success and not p.get("timed_out", False)
        key = f"{BREAKER_PREFIX}{agent}/{capability}/{ctx.lane}"
        b, change = on_result(own.get(key) or new_breaker(), ctx.timestamp_ms, duration, ok, BREAKER)
        own.put(key, b)
        out: list[Derived] = []
        if change is not None:
            out.append(Derived("heal.circuit_state_changed",
                               transition_event(agent, capability, change, b, BREAKER, f"receipts lane {ctx.lane}"),
                               subject=agent))
        out.extend(self._workload(own, ctx, capability))
        return out

    # ------------------------------------------------------------------ forecasting and capacity
    def _workload(self, own: StateStore, ctx: EventContext, capability: str) -> list[Derived]:
        """Count the receipt into its (capability, lane) hour; at each cadence boundary of the lane's
        event time, publish every capability's forecast for this lane. Everything read and written
        here is keyed by the receipts lane, so live and replay derive the same forecasts."""
        hour = ctx.timestamp_ms // HOUR_MS
        _advance(own, ctx.lane, capability, hour)
        ckey = f"{FCOUNT_PREFIX}{ctx.lane}/{capability}"
        count = own.get(ckey)
        assert count is not None
        own.put(ckey, {**count, "total": count["total"] + 1})
        clock_key = FCLOCK_PREFIX + ctx.lane
        epoch = hour // FORECAST_CADENCE_HOURS
        last = own.get(clock_key)
        if last is not None and epoch <= last:
            return []
        own.put(clock_key, epoch)
        if last is None:
            return []  # the lane's first cadence period starts now
        out: list[Derived] = []
        prefix = f"{FCOUNT_PREFIX}{ctx.lane}/"
        for k, _v in list(own.scan(prefix)):
            cap = k[len(prefix):]
            forecaster = _advance(own, ctx.lane, cap, hour, need_model=True)
            if forecaster is None or forecaster.series.n < FORECAST_MIN_HOURS:
                continue
            points = forecaster.forecast(FORECAST_HORIZON_HOURS)
            history = list(forecaster.series.history)
            # current capacity = the busiest hour of the last season: what this lane demonstrably served
            plan_ = plan_capacity(cap, points, current_capacity=max(history) if history else 0.0)
            payload = plan_.as_event(derived_id(ctx, f"capacity/{cap}"), FORECAST_MODEL,
                                     None if forecaster.series.half_width() is None
                                     else 1 - forecaster.series.alpha)
            out.append(Derived("heal.capacity_forecast", {**payload, "lane": ctx.lane}, subject=cap))
        return out

    # ------------------------------------------------------------------ knowledge
    @staticmethod
    def _action(own: StateStore, ctx: EventContext, p: dict[str, Any]) -> None:
        action_id, target, action = _text(p, "action_id"), _text(p, "target"), _text(p, "action")
        if own.get(ACTION_PREFIX + action_id) is not None:
            raise InvalidEvent("duplicate-action", action_id)
        params = p.get("parameters") or {}
        own.put(ACTION_PREFIX + action_id, {"target": target, "action": action,
                                            "failure": params.get("failure", "anomaly"),
                                            "at_ms": ctx.timestamp_ms, "outcome": None})

    @staticmethod
    def _outcome(own: StateStore, ctx: EventContext, p: dict[str, Any]) -> None:
        action_id = _text(p, "action_id")
        success = p["success"]
        if not isinstance(success, bool):
            raise InvalidEvent("invalid-payload", "success must be a boolean")
        ttr = p.get("time_to_recover_ms")
        if ttr is not None and (isinstance(ttr, bool) or not isinstance(ttr, int) or ttr < 0):
            raise InvalidEvent("invalid-payload", f"time_to_recover_ms must be >= 0, got {ttr!r}")
        record = own.get(ACTION_PREFIX + action_id)
        if record is None:
            raise InvalidEvent("unknown-action", f"outcome for {action_id}, which was never taken here")
        if record["outcome"] is not None:
            raise InvalidEvent("duplicate-outcome", action_id)
        own.put(ACTION_PREFIX + action_id, {**record, "outcome": success, "time_to_recover_ms": ttr,
                                            "outcome_ms": ctx.timestamp_ms})
        kkey = f"{KNOW_PREFIX}{ctx.lane}/{record['failure']}/{record['action']}"
        attempts, successes = own.get(kkey) or [0, 0]
        own.put(kkey, [attempts + 1, successes + (1 if success else 0)])


def _advance(own: StateStore, lane: str, capability: str, hour: int, need_model: bool = False
             ) -> HourlyForecaster | None:
    """Close the hours of ``capability`` in ``lane`` before ``hour`` (empty hours learn 0).

    Touches the pickled model only when an hour closes (or ``need_model``), so a receipt inside the
    open hour costs one small JSON update. Returns the forecaster positioned at ``hour`` when it was
    loaded, else None.
    """
    ckey, mkey = f"{FCOUNT_PREFIX}{lane}/{capability}", f"{FMODEL_PREFIX}{lane}/{capability}"
    count = own.get(ckey)
    if count is not None and hour - count["hour"] > FORECAST_MAX_GAP_HOURS:
        count = None  # weeks of silence: restart the series instead of learning weeks of zeros
    if count is not None and hour <= count["hour"] and not need_model:
        return None  # the open hour (or late data, counted in it)
    checkpoint = own.get(mkey) if count is not None else None
    forecaster: HourlyForecaster | None = None
    if checkpoint is not None:
        try:
            forecaster = loads(checkpoint)
        except ValueError:  # another River version: relearn from here
            forecaster = None
    if forecaster is None:
        forecaster = HourlyForecaster(FORECAST_MODEL)
        count = {"hour": hour, "total": 0}
        own.put(mkey, dumps(forecaster))
    assert count is not None
    if hour > count["hour"]:
        forecaster.current_hour, forecaster.current_total = count["hour"], float(count["total"])
        forecaster.record(hour * HOUR_MS, 0.0)  # learns the closed hour and the empty ones up to ``hour``
        own.put(mkey, dumps(forecaster))
        count = {"hour": hour, "total": 0}
    forecaster.current_hour, forecaster.current_total = count["hour"], float(count["total"])
    own.put(ckey, count)
    return forecaster


def incidents(store: StateStore) -> dict[str, Any]:
    return {k[len(INCIDENT_PREFIX):]: v for k, v in store.scan(INCIDENT_PREFIX)}


def actions(store: StateStore) -> dict[str, Any]:
    return {k[len(ACTION_PREFIX):]: v for k, v in store.scan(ACTION_PREFIX)}


__all__ = ["PLAYBOOK", "HealProjection", "actions", "failure_type", "incidents", "knowledge", "plan"]
