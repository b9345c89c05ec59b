"""Swarm optimisation jobs: a requested job is run by the worker that folds it.

``swarm.optimization_requested`` carries the problem, bounds, seed, population, budget and
parameters; the reducer runs PSO, ACO or firefly (``swarm_optimize``) and derives
``swarm.optimization_progress`` events (about ten per job) and one
``swarm.optimization_result``. Like routing, the state folds the **recorded** result event,
not the reducer's own run: a replay reads what the live worker published, and
``audit_result`` re-runs a job to check that the recorded result is what the request
determines (the seed makes the run bit-identical).

Rules
-----
* A request must name a known algorithm and problem, at least one dimension, a positive
  population and a budget of at most ``max_evaluations`` objective evaluations
  (``population × max_iterations``): a worker must not be parked on one job for minutes.
  Refusals: ``invalid-job`` (with the reason), ``unknown-algorithm``, ``unknown-problem``,
  ``duplicate-job`` (a second request with the same job id), ``subject-mismatch``.
* ACO's problem is ``tsp`` with ``problem_data`` = JSON ``{"distances": [[...]]}`` or
  ``{"points": [[x, y], ...]}``; PSO and firefly take a named objective (``sphere``,
  ``rastrigin``, ``rosenbrock``, ``ackley``) and optional bounds (empty = the problem's
  conventional domain).
* A result for an unknown job is ``unknown-job``; a second result for a finished job is a
  no-op (two workers racing after a rebalance publish the same result).
* ``duration_ms`` (wall time) is published in the result event but never stored: it is
  the only value a replay could not reproduce.

Store layout: ``job/<id>`` → request fields, ``status`` (RUNNING | DONE) and, once DONE,
``best_value best_position best_path iterations converged``; ``progress/<id>`` → the last
progress iteration and value.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any, ClassVar

from swarmlog.projections.base import Derived, EventContext, InvalidEvent, Projection, StateStore, Stores
from swarmlog.projections.swarm_optimize import (
    PROBLEMS,
    OptimizationError,
    Result,
    aco,
    euclidean_matrix,
    firefly,
    pso,
)

REQUESTED = "swarm.optimization_requested"
PROGRESS = "swarm.optimization_progress"
RESULT = "swarm.optimization_result"
DEFAULT_MAX_EVALUATIONS = 2_000_000
PROGRESS_EVENTS = 10


def _job_key(job_id: str) -> str:
    return f"job/{job_id}"


def tsp_distances(problem_data: bytes | None) -> list[list[float]]:
    """The distance matrix of an ACO request, from ``{"distances": ...}`` or ``{"points": ...}``."""
    if not problem_data:
        raise InvalidEvent("invalid-job", "ACO needs problem_data with distances or points")
    try:
        spec = json.loads(problem_data)
        if "distances" in spec:
            matrix = [[float(v) for v in row] for row in spec["distances"]]
        elif "points" in spec:
            matrix = euclidean_matrix([(float(p[0]), float(p[1])) for p in spec["points"]])
        else:
            raise InvalidEvent("invalid-job", "problem_data needs 'distances' or 'points'")
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise InvalidEvent("invalid-job", f"problem_data is not a TSP instance: {exc}") from None
    return matrix


def run_job(request: dict[str, Any]) -> Result:
    """Run one job exactly as a worker would: same inputs, same result, on any machine.

    Raises ``InvalidEvent`` for a job that cannot run.
    """
    algorithm = request["algorithm"]
    params: dict[str, float] = dict(request.get("params") or {})
    seed = int(request["seed"])
    population, iterations = int(request["population"]), int(request["max_iterations"])
    every = max(1, iterations // PROGRESS_EVENTS)
    try:
        if algorithm == "ACO":
            if request["problem"] != "tsp":
                raise InvalidEvent("unknown-problem", f"ACO solves 'tsp', not {request['problem']!r}")
            distances = tsp_distances(request.get("problem_data"))
            optimum = params.get("optimum")
            return aco(distances, seed=seed, ants=population, max_iterations=iterations,
                       evaporation=params.get("evaporation", 0.1), progress_every=every,
                       optimum=optimum, tolerance=params.get("tolerance", 0.0))
        problem = PROBLEMS.get(request["problem"])
        if problem is None:
            raise InvalidEvent("unknown-problem", f"{request['problem']!r} (known: {', '.join(sorted(PROBLEMS))})")
        sign = 1.0 if request.get("minimize", True) else -1.0

        def objective(x: Any) -> float:
            return sign * problem.objective(x)

        common: dict[str, Any] = {
            "seed": seed, "population": population, "max_iterations": iterations,
            "lower": request.get("lower_bounds") or (), "upper": request.get("upper_bounds") or (),
            "tolerance": params.get("tolerance", 0.0), "progress_every": every, "problem": problem,
        }
        if algorithm == "PSO":
            result = pso(objective, int(request["dimensions"]), w=params.get("w", 0.7), c1=params.get("c1", 1.5),
                         c2=params.get("c2", 1.5), restarts=int(params.get("restarts", 1000)),
                         scout_trials=int(params.get("scout_trials", 200)), **common)
        elif algorithm == "FIREFLY":
            result = firefly(objective, int(request["dimensions"]), alpha0=params.get("alpha0", 0.01),
                             restarts=int(params.get("restarts", 1000)),
                             scout_trials=int(params.get("scout_trials", 200)), **common)
        else:
            raise InvalidEvent("unknown-algorithm", str(algorithm))
    except OptimizationError as exc:
        raise InvalidEvent("invalid-job", str(exc)) from None
    if sign < 0:
        result.best_value = -result.best_value
        for p in result.history:
            p.best_value = -p.best_value
    return result


class SwarmJobProjection(Projection):
    """Optimisation jobs as a service; rules in the module docstring."""

    name: ClassVar[str] = "swarm_jobs"
    event_types: ClassVar[frozenset[str]] = frozenset({REQUESTED, PROGRESS, RESULT})

    def __init__(self, max_evaluations: int = DEFAULT_MAX_EVALUATIONS, run_jobs: bool = True) -> None:
        """``run_jobs=False`` (queries, audits) folds requests without running them: a request
        is still validated — by a zero-iteration run, which parses the problem and bounds
        exactly as a real run does — so it is accepted or refused the same way."""
        self.max_evaluations = max_evaluations
        self.run_jobs = run_jobs

    def apply(self, stores: Stores, ctx: EventContext, payload: dict[str, Any]) -> list[Derived]:
        store = stores.own
        job_id = str(payload.get("job_id", ""))
        if not job_id or ctx.subject != job_id:
            raise InvalidEvent("subject-mismatch", f"event keyed {ctx.subject!r} names job {job_id!r}")
        if ctx.event_type == REQUESTED:
            return self._request(store, ctx, payload)
        job = store.get(_job_key(job_id))
        if not isinstance(job, dict):
            raise InvalidEvent("unknown-job", job_id)
        if ctx.event_type == PROGRESS:
            store.put(f"progress/{job_id}", {"iteration": payload["iteration"], "best_value": payload["best_value"]})
            return []
        if job.get("status") == "DONE":
            return []
        job.update(status="DONE", best_value=payload["best_value"], best_position=list(payload["best_position"]),
                   best_path=list(payload.get("best_path") or []), iterations=payload["iterations"],
                   converged=payload["converged"], result_event=ctx.event_id)
        store.put(_job_key(job_id), job)
        return []

    def _request(self, store: StateStore, ctx: EventContext, payload: dict[str, Any]) -> list[Derived]:
        job_id = payload["job_id"]
        if store.get(_job_key(job_id)) is not None:
            raise InvalidEvent("duplicate-job", job_id)
        if payload["algorithm"] not in ("PSO", "ACO", "FIREFLY"):
            raise InvalidEvent("unknown-algorithm", str(payload["algorithm"]))
        population, iterations = payload["population"], payload["max_iterations"]
        if population < 1 or iterations < 0 or payload["dimensions"] < 1:
            raise InvalidEvent("invalid-job", "population and dimensions must be at least 1, iterations >= 0")
        if population * max(iterations, 1) > self.max_evaluations:
            raise InvalidEvent("invalid-job", f"budget {population} x {iterations} exceeds {self.max_evaluations}")
        if any(not math.isfinite(v) for v in payload.get("params", {}).values()):
            raise InvalidEvent("invalid-job", "parameters must be finite")
        started = time.perf_counter()
        result = run_job(payload if self.run_jobs else {**payload, "max_iterations": 0})
        duration_ms = int((time.perf_counter() - started) * 1000)
        store.put(_job_key(job_id), {
            "job_id": job_id, "requester": payload["requester"], "algorithm": payload["algorithm"],
            "problem": payload["problem"], "dimensions": payload["dimensions"], "seed": payload["seed"],
            "population": population, "max_iterations": iterations, "status": "RUNNING",
            "requested_ms": ctx.timestamp_ms, "request_event": ctx.event_id,
        })
        if not self.run_jobs:
            return []
        derived = [Derived(PROGRESS, {"job_id": job_id, "iteration": p.iteration, "best_value": p.best_value,
                                      "best_position": p.best_position, "evaluations": p.evaluations}, job_id)
                   for p in result.history]
        derived.append(Derived(RESULT, result_payload(job_id, result, duration_ms), job_id))
        return derived


def result_payload(job_id: str, result: Result, duration_ms: int) -> dict[str, Any]:
    return {"job_id": job_id, "best_value": result.best_value, "best_position": result.best_position,
            "best_path": result.best_path, "iterations": result.iterations, "converged": result.converged,
            "duration_ms": duration_ms}


def get_job(store: StateStore, job_id: str) -> dict[str, Any] | None:
    job = store.get(_job_key(job_id))
    return job if isinstance(job, dict) else None


def audit_result(request: dict[str, Any], recorded: dict[str, Any]) -> list[str]:
    """Re-run a job and list where the recorded result differs (empty = it checks out)."""
    result = run_job(request)
    problems = []
    for name, value in (("best_value", result.best_value), ("best_position", result.best_position),
                        ("best_path", result.best_path), ("iterations", result.iterations),
                        ("converged", result.converged)):
        if recorded.get(name) != value:
            problems.append(f"{name}: recorded {recorded.get(name)!r}, re-run gives {value!r}")
    return problems
