"""The main job's "self-healing service mesh" episode (spec, example use case 2).

A monitoring sidecar publishes ``heal.metric_sample`` (``latency_p99_ms``) for a few
agents of the simulated population every ``INTERVAL_S``. After a baseline, one agent
degrades: its samples jump (and, in the simulation, its receipts become slow and
unreliable, so the registry and the breakers see it too). The worker's heal domain
detects the anomaly, diagnoses, and emits ``heal.action``; this episode plays the agent
that acts on it (RESTART/REROUTE/SCALE/... all end the degradation here), the metric
returns to baseline, and the worker derives ``heal.outcome`` with the time to recover.

Everything in the summary is read back from the log: the anomaly, diagnosis, action and
outcome events the worker signed. Two clocks are reported: ``time_to_recover_ms`` (event
time, first anomalous sample → recovery sample, from the outcome event) and
``seconds_injection_to_outcome`` (wall clock, including the broker round trips).
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

from swarmlog.streams.identity import Identity
from swarmlog.streams.producer import EventProducer
from swarmlog.streams.reader import plan_ranges, read_records
from swarmlog.streams.verify import Status, Verifier

INTERVAL_S = 0.2
BASELINE_SAMPLES = 30
MESH_SIZE = 3
DEGRADATION = 8.0


class HealEpisode:
    """Runs in its own threads next to the main scenario; ``summary()`` when done."""

    def __init__(self, bootstrap: str, prefix: str, agents: list[Any], seed: int, kafka: Any,
                 timeout_s: float = 60.0) -> None:
        self.bootstrap = bootstrap
        self.prefix = prefix
        self.mesh = agents[:MESH_SIZE]
        self.victim = self.mesh[0] if self.mesh else None
        self.rng = random.Random(seed + 1)
        self.monitor = EventProducer(Identity.generate("mesh-monitor"), bootstrap, topic_prefix=prefix, kafka=kafka,
                                     background_seal=False)
        self.timeout_s = timeout_s
        self.stop = threading.Event()
        self.done = threading.Event()
        self.degraded = threading.Event()
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.injected_at: float | None = None
        self.acted_at: float | None = None
        self.outcome_at: float | None = None
        self.saved: tuple[float, float] | None = None
        self.base = {agent.did: agent.latency_ms for agent in self.mesh}
        self._threads = [threading.Thread(target=self._sample_loop, name="swarmlog-heal-monitor", daemon=True),
                         threading.Thread(target=self._follow, name="swarmlog-heal-follower", daemon=True)]

    def start(self) -> None:
        if self.victim is None:
            self.done.set()
            return
        for t in self._threads:
            t.start()

    def _sample_loop(self) -> None:
        assert self.victim is not None
        deadline = time.monotonic() + self.timeout_s
        n = 0
        while not self.stop.is_set() and not self.done.is_set() and time.monotonic() < deadline:
            if n == BASELINE_SAMPLES:
                self._degrade()
            for agent in self.mesh:
                base = self.base[agent.did]
                factor = DEGRADATION if agent is self.victim and self.degraded.is_set() else 1.0
                value = max(0.1, self.rng.gauss(base * factor, base * 0.03))
                self.monitor.produce("heal.metric_sample", {
                    "component": agent.did, "metric": "latency_p99_ms", "value": value, "unit": "ms",
                    "window_ms": int(INTERVAL_S * 1000), "labels": {"cloud": agent.cloud}})
            self.monitor.seal()
            self.monitor.flush()
            n += 1
            time.sleep(INTERVAL_S)

    def _degrade(self) -> None:
        assert self.victim is not None
        self.saved = (self.victim.latency_ms, self.victim.reliability)
        self.victim.latency_ms *= DEGRADATION  # its receipts slow down and fail too (the simulation reads these)
        self.victim.reliability = 0.3
        self.degraded.set()
        self.injected_at = time.monotonic()

    def _heal(self) -> None:
        if self.saved is not None and self.victim is not None:
            self.victim.latency_ms, self.victim.reliability = self.saved
        self.degraded.clear()
        self.acted_at = time.monotonic()

    def _follow(self) -> None:
        assert self.victim is not None
        verifier = Verifier()
        ranges = plan_ranges(self.bootstrap, [self.prefix + "heal"], follow=True)
        deadline = time.monotonic() + self.timeout_s + 5
        for record in read_records(self.bootstrap, ranges,
                                   stop=lambda: self.stop.is_set() or self.done.is_set()
                                   or time.monotonic() > deadline):
            for verdict in verifier.feed(record):
                if verdict.status is not Status.AUTHENTICATED or verdict.event is None:
                    continue
                payload = verdict.event.decode_payload()
                self.events.append((verdict.event.event_type, payload))
                if verdict.event.event_type == "heal.action" and self.degraded.is_set():
                    self._heal()  # the agent acts on the worker's decision
                elif verdict.event.event_type == "heal.outcome" and payload.get("success"):
                    self.outcome_at = time.monotonic()
                    self.done.set()

    def join(self) -> None:
        for t in self._threads:
            if t.is_alive():
                t.join(timeout=self.timeout_s + 10)
        self.stop.set()
        self.monitor.close()

    def summary(self) -> dict[str, Any]:
        if self.victim is None:
            return {"skipped": "no agents"}

        def first(kind: str, **match: Any) -> dict[str, Any] | None:
            return next((p for t, p in self.events if t == kind and all(p.get(k) == v for k, v in match.items())),
                        None)

        anomaly = first("heal.anomaly_detected")
        diagnosis = first("heal.diagnosis")
        action = first("heal.action")
        outcome = first("heal.outcome", success=True)
        kinds: dict[str, int] = {}
        for kind, _ in self.events:
            kinds[kind] = kinds.get(kind, 0) + 1
        return {
            "degraded_agent": self.victim.did, "mesh": len(self.mesh), "degradation": f"latency x{DEGRADATION:g}",
            "heal_events": kinds,
            "anomaly": anomaly and {k: anomaly[k] for k in ("component", "metric", "value", "score", "severity")},
            "diagnosis": diagnosis and diagnosis["candidates"][:2],
            "action": action and {k: action[k] for k in ("target", "action", "reason")},
            "outcome": outcome and {k: outcome[k] for k in ("success", "time_to_recover_ms", "detail")},
            "recovered": outcome is not None,
            "time_to_recover_ms": outcome and outcome["time_to_recover_ms"],
            "seconds_injection_to_action": (round(self.acted_at - self.injected_at, 2)
                                            if self.acted_at and self.injected_at else None),
            "seconds_injection_to_outcome": (round(self.outcome_at - self.injected_at, 2)
                                             if self.outcome_at and self.injected_at else None),
        }


def one_line(summary: dict[str, Any] | None) -> str:
    """The episode for the human summary table."""
    if not summary or "skipped" in summary:
        return "skipped"
    if not summary.get("recovered"):
        return f"NOT recovered; heal events {summary.get('heal_events')}"
    action = summary.get("action") or {}
    return (f"{action.get('action')} on the degraded agent; recovered in {summary['time_to_recover_ms']} ms "
            f"(event time), {summary.get('seconds_injection_to_outcome')} s injection → outcome (wall)")
