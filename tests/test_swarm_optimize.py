"""Swarm optimisation (PSO, ACO, firefly) and the optimisation-job projection.

Quality is checked against known optima: sphere and Rastrigin (d = 10, optimum 0 at the
origin) for PSO and firefly, and TSP instances solved exactly by Held–Karp for ACO.
"""

from __future__ import annotations

import itertools
import json
import math
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarmlog.projections.base import EventContext, InvalidEvent, MemoryStore, Stores
from swarmlog.projections.swarm_jobs import (
    PROGRESS,
    REQUESTED,
    RESULT,
    SwarmJobProjection,
    audit_result,
    get_job,
)
from swarmlog.projections.swarm_optimize import (
    PROBLEMS,
    OptimizationError,
    aco,
    euclidean_matrix,
    exact_tsp,
    firefly,
    pso,
    rastrigin,
    sphere,
    tour_length,
)

TOLERANCE = 1e-6  # the stated tolerance: best value within 1e-6 of the known optimum 0


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("name", ["sphere", "rastrigin"])
def test_pso_reaches_the_known_optimum_at_d10(name: str, seed: int) -> None:
    problem = PROBLEMS[name]
    result = pso(problem.objective, 10, seed=seed, tolerance=TOLERANCE, problem=problem)
    assert result.converged and result.best_value <= TOLERANCE
    assert all(abs(v) < 1e-2 for v in result.best_position)  # the optimum is the origin


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("name", ["sphere", "rastrigin"])
def test_firefly_reaches_the_known_optimum_at_d10(name: str, seed: int) -> None:
    problem = PROBLEMS[name]
    result = firefly(problem.objective, 10, seed=seed, tolerance=TOLERANCE, problem=problem)
    assert result.converged and result.best_value <= TOLERANCE
    assert all(abs(v) < 1e-2 for v in result.best_position)


def test_plain_pso_gets_stuck_on_rastrigin_which_is_why_scouts_exist() -> None:
    """Without restarts and scouts (the spec's bare PSO) Rastrigin d=10 ends in a local basin."""
    problem = PROBLEMS["rastrigin"]
    plain = pso(problem.objective, 10, seed=0, max_iterations=1500, restarts=0, scout_trials=0, problem=problem)
    helped = pso(problem.objective, 10, seed=0, tolerance=TOLERANCE, problem=problem)
    assert plain.best_value > 0.5 > helped.best_value


def test_one_pso_step_is_the_spec_velocity_update() -> None:
    """v = w v + c1 r1 (pbest - x) + c2 r2 (gbest - x); x += v — replayed with the same random draws."""
    seed = 7
    result = pso(sphere, 1, seed=seed, population=1, max_iterations=1, restarts=0, scout_trials=0,
                 velocity_clamp=10.0, lower=[-5.0], upper=[5.0])
    rng = random.Random(seed)
    x0 = rng.uniform(-5.0, 5.0)
    v0 = rng.uniform(-100.0, 100.0)
    r1, r2 = rng.random(), rng.random()
    v1 = 0.7 * v0 + 1.5 * r1 * (x0 - x0) + 1.5 * r2 * (x0 - x0)  # pbest = gbest = x0 for one particle
    x1 = max(-5.0, min(5.0, x0 + v1))
    expected = min(sphere([x0]), sphere([x1]))
    assert result.best_value == pytest.approx(expected)


@pytest.mark.parametrize("seed", range(3))
def test_aco_is_within_five_percent_of_the_exact_tsp_optimum(seed: int) -> None:
    rng = random.Random(seed)
    points = [(rng.uniform(0, 100), rng.uniform(0, 100)) for _ in range(10)]
    distances = euclidean_matrix(points)
    optimum, path = exact_tsp(distances)
    assert tour_length(distances, path) == pytest.approx(optimum)
    result = aco(distances, seed=seed, ants=20, max_iterations=100)
    assert sorted(result.best_path) == list(range(10))  # a tour visits every city once
    assert tour_length(distances, result.best_path) == pytest.approx(result.best_value)
    assert result.best_value <= optimum * 1.05


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 50), st.integers(0, 50)), min_size=1, max_size=7))
def test_held_karp_equals_brute_force(points: list[tuple[int, int]]) -> None:
    distances = euclidean_matrix([(float(x), float(y)) for x, y in points])
    n = len(points)
    brute = min(tour_length(distances, (0, *perm)) for perm in itertools.permutations(range(1, n)))
    optimum, path = exact_tsp(distances)
    assert optimum == pytest.approx(brute)
    assert sorted(path) == list(range(n))


def test_runs_are_deterministic_given_the_seed() -> None:
    problem = PROBLEMS["rastrigin"]
    a = pso(problem.objective, 5, seed=42, max_iterations=200, progress_every=20, problem=problem)
    b = pso(problem.objective, 5, seed=42, max_iterations=200, progress_every=20, problem=problem)
    c = pso(problem.objective, 5, seed=43, max_iterations=200, progress_every=20, problem=problem)
    assert (a.best_value, a.best_position, a.history) == (b.best_value, b.best_position, b.history)
    assert a.best_position != c.best_position
    f1 = firefly(rastrigin, 3, seed=5, max_iterations=50, problem=problem)
    f2 = firefly(rastrigin, 3, seed=5, max_iterations=50, problem=problem)
    assert f1.best_position == f2.best_position


@pytest.mark.parametrize("call", [
    lambda: aco([], seed=1),
    lambda: aco([[0.0, 1.0], [1.0]], seed=1),
    lambda: aco([[0.0, -1.0], [-1.0, 0.0]], seed=1),
    lambda: aco([[0.0, math.nan], [1.0, 0.0]], seed=1),
    lambda: pso(sphere, 0, seed=1),
    lambda: pso(sphere, 2, seed=1, population=0),
    lambda: pso(sphere, 2, seed=1, lower=[1.0, 1.0], upper=[0.0, 2.0]),
    lambda: pso(sphere, 2, seed=1, lower=[0.0, 0.0, 0.0], upper=[1.0, 1.0, 1.0]),
    lambda: firefly(sphere, 2, seed=1, population=0),
    lambda: firefly(sphere, 2, seed=1, noise_scale="huge"),
], ids=["aco-empty", "aco-ragged", "aco-negative", "aco-nan", "pso-0d", "pso-no-particles",
        "pso-inverted-bounds", "pso-bounds-length", "ff-no-fireflies", "ff-noise-scale"])
def test_bad_input_is_a_typed_error_never_a_crash(call: Any) -> None:
    with pytest.raises(OptimizationError):
        call()


def test_degenerate_but_valid_inputs() -> None:
    assert aco([[0.0]], seed=1).best_path == [0]
    two = aco([[0.0, 3.0], [3.0, 0.0]], seed=1, max_iterations=2)
    assert two.best_value == 6.0
    assert pso(sphere, 2, seed=1, max_iterations=0).iterations == 0


# ------------------------------------------------------------------ the job projection
def ctx(event_type: str, subject: str, ts: int = 1_000, seq: int = 1) -> EventContext:
    return EventContext(f"evt-{event_type}-{seq}", event_type, "did:key:requester", subject, ts, "swarm/0", seq, "s")


def request(job_id: str = "job-1", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = dict(job_id=job_id, requester="did:key:requester", algorithm="PSO", problem="sphere",
                                problem_data=None, dimensions=4, lower_bounds=[], upper_bounds=[], minimize=True,
                                seed=3, population=20, max_iterations=200, params={"tolerance": 1e-8})
    body.update(overrides)
    return body


def run(projection: SwarmJobProjection, store: MemoryStore, event_type: str, payload: dict[str, Any],
        seq: int = 1) -> list[Any]:
    return projection.apply(Stores(store), ctx(event_type, payload["job_id"], seq=seq), payload)


def test_a_request_derives_progress_and_one_result_and_folding_the_result_finishes_the_job() -> None:
    projection, store = SwarmJobProjection(), MemoryStore()
    derived = run(projection, store, REQUESTED, request())
    kinds = [d.event_type for d in derived]
    assert kinds[-1] == RESULT and set(kinds[:-1]) == {PROGRESS} and kinds.count(RESULT) == 1
    assert all(d.subject == "job-1" for d in derived)
    result = derived[-1].payload
    assert result["best_value"] <= 1e-8 and result["converged"]
    assert get_job(store, "job-1")["status"] == "RUNNING"  # type: ignore[index]
    assert run(projection, store, RESULT, result, seq=2) == []
    job = get_job(store, "job-1")
    assert job is not None and job["status"] == "DONE" and job["best_value"] == result["best_value"]
    assert "duration_ms" not in job  # wall time is never state: replay could not reproduce it
    values = [d.payload["best_value"] for d in derived[:-1]]
    assert values == sorted(values, reverse=True)  # progress never gets worse


def test_audit_re_runs_a_job_and_catches_a_doctored_result() -> None:
    projection, store = SwarmJobProjection(), MemoryStore()
    body = request(algorithm="ACO", problem="tsp", population=10, max_iterations=30,
                   problem_data=json.dumps({"points": [[0, 0], [0, 1], [1, 1], [1, 0], [0.5, 2]]}).encode())
    result = run(projection, store, REQUESTED, body)[-1].payload
    assert sorted(result["best_path"]) == [0, 1, 2, 3, 4]
    assert audit_result(body, result) == []
    assert audit_result(body, {**result, "best_value": result["best_value"] - 0.5})


def test_maximising_flips_the_sign_back() -> None:
    projection, store = SwarmJobProjection(), MemoryStore()
    result = run(projection, store, REQUESTED, request(minimize=False, max_iterations=20, params={}))[-1].payload
    assert result["best_value"] >= 0  # -sphere maximised → values reported as sphere, not -sphere


@pytest.mark.parametrize("overrides,reason", [
    ({"algorithm": "UNKNOWN"}, "unknown-algorithm"),
    ({"problem": "no-such-function"}, "unknown-problem"),
    ({"dimensions": 0}, "invalid-job"),
    ({"population": 0}, "invalid-job"),
    ({"population": 10_000, "max_iterations": 10_000}, "invalid-job"),
    ({"params": {"w": math.inf}}, "invalid-job"),
    ({"lower_bounds": [1.0], "upper_bounds": [0.0]}, "invalid-job"),
    ({"algorithm": "ACO", "problem": "tsp", "problem_data": None}, "invalid-job"),
    ({"algorithm": "ACO", "problem": "tsp", "problem_data": b"{not json"}, "invalid-job"),
    ({"algorithm": "ACO", "problem": "sphere"}, "unknown-problem"),
])
def test_bad_requests_are_refused_before_any_write(overrides: dict[str, Any], reason: str) -> None:
    projection, store = SwarmJobProjection(), MemoryStore()
    with pytest.raises(InvalidEvent) as refused:
        run(projection, store, REQUESTED, request(**overrides))
    assert refused.value.reason == reason
    assert len(store) == 0


def test_duplicate_job_unknown_job_and_subject_mismatch() -> None:
    projection, store = SwarmJobProjection(), MemoryStore()
    result = run(projection, store, REQUESTED, request(max_iterations=10))[-1].payload
    with pytest.raises(InvalidEvent, match="duplicate-job"):
        run(projection, store, REQUESTED, request(max_iterations=10), seq=2)
    with pytest.raises(InvalidEvent, match="unknown-job"):
        run(projection, store, RESULT, {**result, "job_id": "job-2"}, seq=3)
    with pytest.raises(InvalidEvent, match="subject-mismatch"):
        projection.apply(Stores(store), ctx(REQUESTED, "other"), request("job-3"))
    run(projection, store, RESULT, result, seq=4)
    before = dict(store.data)
    run(projection, store, RESULT, {**result, "best_value": 99.0}, seq=5)  # a second result: no-op
    assert store.data == before


@pytest.mark.integration
def test_a_job_through_the_real_broker_and_the_verifying_engine(kafka_bootstrap: str, unique_topics: Any) -> None:
    """Signed request → Kafka → verify → fold: the derived result equals a re-run of the request."""
    from swarmlog.projections.engine import Engine
    from swarmlog.streams.identity import Identity
    from swarmlog.streams.producer import EventProducer
    from swarmlog.streams.reader import plan_ranges, read_records

    topic = unique_topics("swarm", partitions=2)
    identity = Identity.generate("swarm-requester")
    producer = EventProducer(identity, kafka_bootstrap, identity_topic=unique_topics("trust", 1))
    body = request("job-kafka", requester=identity.did, algorithm="FIREFLY", problem="rastrigin", dimensions=3,
                   population=10, max_iterations=100)
    producer.produce(REQUESTED, body, topic=topic)
    producer.produce(REQUESTED, {**body, "job_id": "job-bad", "algorithm": "UNKNOWN"}, topic=topic)
    producer.close()
    records = list(read_records(kafka_bootstrap, plan_ranges(kafka_bootstrap, [topic])))
    engine = Engine([SwarmJobProjection()])
    outcome = engine.feed_all(records)
    outcome.extend(engine.finish())
    results = [d.payload for _, d in outcome.derived if d.event_type == RESULT]
    assert [r["job_id"] for r in results] == ["job-kafka"]
    assert audit_result(body, results[0]) == []
    assert [dl.reason for dl in outcome.dead_letters] == ["unknown-algorithm"]


def test_folding_without_running_stores_the_same_state_and_refuses_the_same_requests() -> None:
    live, audit = SwarmJobProjection(), SwarmJobProjection(run_jobs=False)
    live_store, audit_store = MemoryStore(), MemoryStore()
    good = request("j1", max_iterations=50)
    bad = request("j2", algorithm="ACO", problem="tsp", problem_data=b'{"points": [[0, 0], [1]]}')
    derived = run(live, live_store, REQUESTED, good)
    assert run(audit, audit_store, REQUESTED, good) == []
    for projection, store in ((live, live_store), (audit, audit_store)):
        with pytest.raises(InvalidEvent, match="invalid-job"):
            run(projection, store, REQUESTED, bad, seq=2)
        run(projection, store, RESULT, derived[-1].payload, seq=3)
    assert live_store.data == audit_store.data
