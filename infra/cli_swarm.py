"""``swarmlog swarm``: the swarm layer — optimisation jobs, voting pools, the hive mind,
pheromone fields, task auctions, gossip and swarm health.

Queries replay and verify the ``swarm`` topic (and the registry's topics where needed)
through the same reducers the workers run, so what they print is what an auditor would
compute. Events are produced with ``swarmlog produce TYPE`` (e.g. ``swarm.vote``).
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

import typer

from swarmlog.infra.cli_query import JsonOpt, _emit, _fail, _replay

app = typer.Typer(help="The swarm layer: optimisation, voting pools, hive mind, pheromone fields, tasks, gossip.",
                  no_args_is_help=True)


def _swarm_engine(with_registry: bool = False) -> Any:
    from swarmlog.projections.registry import RegistryProjection
    from swarmlog.projections.swarm_jobs import SwarmJobProjection
    from swarmlog.projections.swarm_resilience import RoleProjection
    from swarmlog.projections.swarm_space import SwarmSpaceProjection
    from swarmlog.projections.swarm_tasks import SwarmTaskProjection
    from swarmlog.projections.swarm_voting import VotingPoolProjection

    projections: list[Any] = [SwarmJobProjection(run_jobs=False), VotingPoolProjection(), SwarmSpaceProjection(),
                              RoleProjection()]
    topics = ["swarm"]
    if with_registry:
        projections = [RegistryProjection(), *projections, SwarmTaskProjection()]
        topics = ["agents", "commands", "receipts", "swarm"]
        return _replay(topics, projections)
    # swarm_space reads the registry only to validate alerts, whose verdicts are derived
    # events a query does not emit: an empty registry keeps a swarm-only replay cheap
    from swarmlog.projections.base import MemoryStore

    return _replay(topics, projections, {"registry": MemoryStore()})


@app.command("optimize")
def optimize(
    algorithm: Annotated[str, typer.Argument(help="pso, aco or firefly.")],
    problem: Annotated[str, typer.Option(help="sphere, rastrigin, rosenbrock, ackley (pso/firefly); tsp (aco).")]
    = "sphere",
    dimensions: Annotated[int, typer.Option("--dims", help="Search-space dimensions (pso/firefly).")] = 10,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same run.")] = 1,
    population: Annotated[int, typer.Option(help="Particles, fireflies or ants.")] = 0,
    iterations: Annotated[int, typer.Option(help="Iteration budget (0 = the algorithm's default).")] = 0,
    points: Annotated[Path | None, typer.Option(help="ACO: JSON file with [[x, y], ...] city coordinates.")] = None,
    tolerance: Annotated[float, typer.Option(help="Stop once within this of the known optimum (0 = never).")]
    = 1e-6,
    submit: Annotated[bool, typer.Option("--submit", help="Produce a signed swarm.optimization_requested event for "
                                         "the workers instead of running here.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Run PSO, ACO or firefly here (or submit the job to the workers with --submit)."""
    from swarmlog.projections.base import InvalidEvent
    from swarmlog.projections.swarm_jobs import run_job

    algo = algorithm.upper()
    if algo not in ("PSO", "ACO", "FIREFLY"):
        _fail(f"unknown algorithm {algorithm!r}: use pso, aco or firefly", 2)
    data: bytes | None = None
    if algo == "ACO":
        if points is None:
            _fail("aco needs --points FILE (a JSON list of [x, y] city coordinates)", 2)
        assert points is not None
        try:
            data = json.dumps({"points": json.loads(points.read_text())}).encode()
        except (OSError, ValueError) as exc:
            _fail(f"cannot read {points}: {exc}", 2)
        problem = "tsp"
    defaults = {"PSO": (40, 4000), "FIREFLY": (15, 1500), "ACO": (20, 200)}[algo]
    request: dict[str, Any] = {
        "job_id": str(uuid.uuid4()), "requester": "cli", "algorithm": algo, "problem": problem,
        "problem_data": data, "dimensions": dimensions if algo != "ACO" else 1, "lower_bounds": [],
        "upper_bounds": [], "minimize": True, "seed": seed, "population": population or defaults[0],
        "max_iterations": iterations or defaults[1], "params": {"tolerance": tolerance},
    }
    if submit:
        _submit(request, json_out)
        return
    started = time.perf_counter()
    try:
        result = run_job(request)
    except InvalidEvent as exc:
        _fail(str(exc), 2)
    out = {"algorithm": algo, "problem": problem, "best_value": result.best_value,
           "best_position": result.best_position, "best_path": result.best_path, "iterations": result.iterations,
           "converged": result.converged, "evaluations": result.evaluations,
           "seconds": round(time.perf_counter() - started, 3)}
    _emit(out, json_out)


def _submit(request: dict[str, Any], json_out: bool) -> None:
    from swarmlog.streams.keystore import Keystore

    request["requester"] = Keystore().load_or_create("cli").did
    _produce_all("swarm.optimization_requested", [request])
    _emit({"submitted": request["job_id"]}, json_out)


@app.command("job")
def job(job_id: Annotated[str, typer.Argument(help="Optimisation job id.")], json_out: JsonOpt = False) -> None:
    """An optimisation job: request, status and recorded result."""
    from swarmlog.projections.swarm_jobs import get_job

    value = get_job(_swarm_engine().stores["swarm_jobs"], job_id)
    if value is None:
        _fail(f"unknown job {job_id}", 2)
    _emit(value, json_out)


@app.command("vote")
def vote(pool_id: Annotated[str, typer.Argument(help="Voting pool id.")], json_out: JsonOpt = False) -> None:
    """A voting pool: options, rule, ballots, Byzantine voters and the decision."""
    from swarmlog.projections.swarm_voting import get_pool

    value = get_pool(_swarm_engine().stores["swarm_voting"], pool_id)
    if value is None:
        _fail(f"unknown voting pool {pool_id}", 2)
    _emit(value, json_out)


@app.command("hivemind")
def hivemind_command(
    swarm_id: Annotated[str, typer.Argument(help="Swarm id.")],
    wait_generation: Annotated[int | None, typer.Option("--after", help="Wait until the generation is greater "
                                                        "than this (re-reading the log).")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait with --after.")] = 30.0,
    json_out: JsonOpt = False,
) -> None:
    """A swarm's collective mind: generation, beliefs, intentions, agreed topics."""
    from swarmlog.projections.swarm_voting import hivemind

    deadline = time.monotonic() + timeout
    while True:
        mind = hivemind(_swarm_engine().stores["swarm_voting"], swarm_id)
        if wait_generation is None or mind["generation"] > wait_generation:
            break
        if time.monotonic() >= deadline:
            _fail(f"generation is still {mind['generation']} after {timeout:g} s", 1)
        time.sleep(1.0)
    _emit(mind, json_out)


@app.command("field")
def field(
    field_id: Annotated[str, typer.Argument(help="Pheromone field id.")],
    at_ms: Annotated[int | None, typer.Option("--at-ms", help="Show the field decayed to this event time.")] = None,
    top: Annotated[int, typer.Option(help="Strongest cells to list.")] = 20,
    json_out: JsonOpt = False,
) -> None:
    """A pheromone field: its strongest cells per type, as of its last deposit (or --at-ms)."""
    from swarmlog.projections.swarm_space import pheromone_field

    f = pheromone_field(_swarm_engine().stores["swarm_space"], field_id, at_ms=at_ms)
    if f is None:
        _fail(f"unknown pheromone field {field_id}", 2)
    assert f is not None
    cells = sorted(((v, kind, x, y) for kind, grid in f.cells.items() for (x, y), v in grid.items()),
                   key=lambda c: (-c[0], c[1], c[2], c[3]))[:top]
    _emit({"field_id": field_id, "tick": f.tick, "types": sorted(f.cells),
           "cells": [{"type": k, "x": x, "y": y, "intensity": v} for v, k, x, y in cells]}, json_out)


@app.command("task")
def task(task_id: Annotated[str, typer.Argument(help="Task id.")], json_out: JsonOpt = False) -> None:
    """A swarm task: requirements, bids with scores, assignee, status."""
    from swarmlog.projections.swarm_tasks import get_task

    value = get_task(_swarm_engine(with_registry=True).stores["swarm_tasks"], task_id)
    if value is None:
        _fail(f"unknown task {task_id}", 2)
    _emit(value, json_out)


@app.command("tasks")
def tasks(json_out: JsonOpt = False) -> None:
    """Task-market metrics: posted, open, assigned, completed, failed, bids per task."""
    from swarmlog.projections.swarm_tasks import market_metrics

    _emit(market_metrics(_swarm_engine(with_registry=True).stores["swarm_tasks"]), json_out)


@app.command("gossip")
def gossip(message_id: Annotated[str, typer.Argument(help="Gossip message id.")], json_out: JsonOpt = False) -> None:
    """A gossip message's propagation: relays, hops, who has seen it."""
    from swarmlog.projections.swarm_space import gossip_history

    value = gossip_history(_swarm_engine().stores["swarm_space"], message_id)
    if value is None:
        _fail(f"unknown gossip message {message_id}", 2)
    _emit(value, json_out)


@app.command("health")
def health(swarm_id: Annotated[str | None, typer.Argument(help="Swarm id (roles recorded for it); "
                                                           "default: every role.")] = None,
           json_out: JsonOpt = False) -> None:
    """Swarm health: capacity, functional or not, redundancy per role (registry + roles)."""
    from dataclasses import asdict

    from swarmlog.projections.registry import get_agent
    from swarmlog.projections.swarm_resilience import member_statuses, roles_of, swarm_health

    engine = _swarm_engine(with_registry=True)
    roles = roles_of(engine.stores["swarm_roles"], swarm_id)
    agents = [a for a in (get_agent(engine.stores["registry"], agent_id) for agent_id in sorted(roles)) if a]
    status = member_statuses(agents)
    for agent_id in roles:
        status.setdefault(agent_id, "FAILED")  # a role holder the registry does not know cannot work
    _emit(asdict(swarm_health(status, roles)), json_out)


@app.command("flock")
def flock(swarm_id: Annotated[str, typer.Argument(help="Swarm id the members report positions for.")],
          json_out: JsonOpt = False) -> None:
    """Flocking and formation for a swarm, from its members' latest reported positions.

    Per member: the Reynolds steering acceleration (separation, alignment, cohesion with the
    spec's radii and weights) and, when a formation was ordered, its slot; for the swarm:
    polarization, formation error and the closest pair's distance.
    """
    import math

    from swarmlog.projections.swarm_space import formation_targets, steering, swarm_metrics

    store = _swarm_engine().stores["swarm_space"]
    metrics = swarm_metrics(store, swarm_id)
    if not metrics["members"]:
        _fail(f"no positions reported for swarm {swarm_id}", 2)
    if math.isinf(metrics["min_distance"]):
        metrics["min_distance"] = None  # one member: no pair (JSON has no infinity)
    _emit({"swarm_id": swarm_id, "metrics": metrics,
           "steering": {a: list(v) for a, v in steering(store, swarm_id).items()},
           "targets": {a: list(v) for a, v in formation_targets(store, swarm_id).items()}}, json_out)


@app.command("backups")
def backups(
    required: Annotated[str, typer.Option("--require", help="Comma-separated roles the swarm must keep filled.")],
    swarm_id: Annotated[str | None, typer.Argument(help="Swarm id (roles recorded for it); default: every role.")]
    = None,
    reserve_role: Annotated[str, typer.Option(help="Role whose working agents are taken first.")] = "reserve",
    apply: Annotated[bool, typer.Option("--apply", help="Produce the planned swarm.role_changed events "
                                                        "(signed with the CLI key); default: only show the plan.")]
    = False,
    json_out: JsonOpt = False,
) -> None:
    """Backup activation: refill every required role that lost all its working holders.

    Reads the registry and the recorded roles from the log (as ``swarm health`` does) and plans
    with ``swarm_resilience.plan_backups``: reserve agents first, then the role with the most
    working holders, never emptying a role. Each change names the previous role, so the role
    projection refuses it (and reports the signer) if the log moved on meanwhile.
    """
    from swarmlog.projections.registry import get_agent
    from swarmlog.projections.swarm_resilience import member_statuses, plan_backups, roles_of

    wanted = [r.strip() for r in required.split(",") if r.strip()]
    if not wanted:
        _fail("--require names no role", 2)
    engine = _swarm_engine(with_registry=True)
    roles = roles_of(engine.stores["swarm_roles"], swarm_id)
    agents = [a for a in (get_agent(engine.stores["registry"], agent_id) for agent_id in sorted(roles)) if a]
    status = member_statuses(agents)
    for agent_id in roles:
        status.setdefault(agent_id, "FAILED")
    plan = plan_backups(status, roles, wanted, reserve_role)
    for change in plan:
        change["swarm_id"] = swarm_id
    produced = 0
    if apply and plan:
        produced = _produce_all("swarm.role_changed", plan)
    _emit({"planned": plan, "produced": produced}, json_out)


def _produce_all(event_type: str, payloads: list[dict[str, Any]]) -> int:
    from swarmlog.infra.broker import BrokerError, resolve_bootstrap
    from swarmlog.streams.keystore import Keystore
    from swarmlog.streams.producer import EventProducer
    from swarmlog.streams.settings import get_settings

    try:
        identity = Keystore().load_or_create("cli")
        bootstrap = resolve_bootstrap(start_if_missing=False)
    except BrokerError as exc:
        _fail(str(exc), 1)
    producer = EventProducer(identity, bootstrap, topic_prefix=get_settings().topic_prefix)
    try:
        for payload in payloads:
            producer.produce(event_type, payload)
    finally:
        producer.close()
    return len(payloads)
