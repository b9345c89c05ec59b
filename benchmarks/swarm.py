"""Swarm-layer figures (issue 7), one run, all seeded so a re-run gives the same quality numbers.

* **gossip**: rounds and messages until 99 % of N agents hold a GLOBAL_ALERT, for N = 100,
  1 000, 10 000 (push with fanout 3 over the link-quality topology, then anti-entropy),
  against log_{fanout+1} N; the spec's communication overhead for the same topology;
  gzip ratio on a typical alert body.
* **stigmergy**: walked steps per resource found, gradient followers vs random walkers.
* **optimisation**: PSO and firefly on sphere and Rastrigin (d = 10): how many of the
  seeds reach the optimum within 1e-6, evaluations and seconds per run; ACO on random
  10-city TSP instances: gap to the exact (Held–Karp) optimum.
* **flocking**: polarization (order parameter) from random headings after 100 / 200
  ticks; per formation shape, ticks until the mean slot error is ≤ 0.5 and the closest
  pair after settling (must stay ≥ the 25-unit separation radius).

Usage: ``python benchmarks/swarm.py [--seeds 10] [--json out.json]`` (run from the repo
root or from ``benchmarks/``). Prints one JSON document. Timings are wall seconds of
pure Python on this machine; the quality figures do not depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine

from swarmlog.projections.flocking import (
    SHAPES,
    Boid,
    assign_slots,
    flock_tick,
    formation_error,
    formation_separation,
    formation_slots,
    formation_tick,
    min_pair_distance,
    polarization,
)
from swarmlog.projections.gossip import (
    communication_overhead,
    compress,
    expected_log_rounds,
    simulate_spread,
    topology,
)
from swarmlog.projections.stigmergy import discovery_run
from swarmlog.projections.swarm_optimize import PROBLEMS, aco, euclidean_matrix, exact_tsp, firefly, pso


def gossip() -> dict[str, Any]:
    rows = []
    for n in (100, 1_000, 10_000):
        started = time.perf_counter()
        adj = topology(n, seed=1)
        report = simulate_spread(adj, seed=1)
        rows.append({"agents": n, "rounds": report.rounds, "messages": report.messages,
                     "messages_per_agent": round(report.messages / n, 2), "coverage": round(report.coverage, 4),
                     "log4_n": round(expected_log_rounds(n, 3), 2), "edges": report.edges,
                     "overhead_bytes_per_agent_s": round(communication_overhead(report.edges, n)),
                     "seconds": round(time.perf_counter() - started, 2)})
    body = json.dumps({"alert": "cpu saturation", "agent": "did:key:z6MkexampleexampleexampleexampleX",
                       "metrics": {"cpu": 0.97, "mem": 0.61, "p99_ms": 412}, "region": "eu-west-1"}).encode() * 3
    return {"spread": rows, "gzip": {"body_bytes": len(body), "compressed_bytes": len(compress(body))}}


def stigmergy(seeds: int) -> dict[str, Any]:
    follow = [discovery_run(seed=s, follow=True) for s in range(seeds)]
    walk = [discovery_run(seed=s, follow=False) for s in range(seeds)]

    def cost(reports: list[Any]) -> float:
        finds = sum(r.finds for r in reports)
        return round(sum(r.agent_steps for r in reports) / finds, 1) if finds else float("inf")

    return {"steps_per_find_followers": cost(follow), "steps_per_find_random": cost(walk),
            "finds_followers": sum(r.finds for r in follow), "finds_random": sum(r.finds for r in walk)}


def optimisation(seeds: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for algo, run in (("pso", pso), ("firefly", firefly)):
        for name in ("sphere", "rastrigin"):
            problem = PROBLEMS[name]
            values, evals, secs = [], [], []
            for seed in range(seeds):
                started = time.perf_counter()
                result = run(problem.objective, 10, seed=seed, tolerance=1e-6, problem=problem)
                secs.append(time.perf_counter() - started)
                values.append(result.best_value)
                evals.append(result.evaluations)
            out[f"{algo}_{name}_d10"] = {
                "reached_1e-6": sum(v <= 1e-6 for v in values), "runs": seeds, "worst": max(values),
                "median_evaluations": int(statistics.median(evals)),
                "median_seconds": round(statistics.median(secs), 2)}
    gaps = []
    for seed in range(seeds):
        rng = random.Random(seed)
        distances = euclidean_matrix([(rng.uniform(0, 100), rng.uniform(0, 100)) for _ in range(10)])
        optimum, _ = exact_tsp(distances)
        result = aco(distances, seed=seed, ants=20, max_iterations=100)
        gaps.append(result.best_value / optimum - 1)
    out["aco_tsp10"] = {"instances": seeds, "max_gap_pct": round(100 * max(gaps), 2),
                        "mean_gap_pct": round(100 * statistics.fmean(gaps), 3),
                        "within_5pct": sum(g <= 0.05 for g in gaps)}
    return out


def flocking(seeds: int) -> dict[str, Any]:
    pol = {"start": [], "tick_100": [], "tick_200": [], "min_distance_200": []}  # type: dict[str, list[float]]
    for seed in range(seeds):
        rng = random.Random(seed)
        boids = {f"a{i:02d}": Boid(rng.uniform(0, 150), rng.uniform(0, 150), rng.uniform(-4, 4), rng.uniform(-4, 4))
                 for i in range(30)}
        pol["start"].append(polarization(boids))
        for tick in range(1, 201):
            boids = flock_tick(boids)
            if tick == 100:
                pol["tick_100"].append(polarization(boids))
        pol["tick_200"].append(polarization(boids))
        pol["min_distance_200"].append(min_pair_distance(boids))
    shapes: dict[str, Any] = {}
    for shape in SHAPES:
        ticks_needed, closest = [], []
        for seed in range(seeds):
            rng = random.Random(seed)
            boids = {f"a{i:02d}": Boid(rng.uniform(0, 150), rng.uniform(0, 150), 0.0, 0.0) for i in range(12)}
            targets = assign_slots(sorted(boids), formation_slots(shape, 12, (100.0, 100.0), 30.0, 0.3))
            ticks = 0
            while formation_error(boids, targets) > 0.5 and ticks < 2_000:
                boids = formation_tick(boids, targets, transit_separation=formation_separation(30.0))
                ticks += 1
            for _ in range(50):
                boids = formation_tick(boids, targets, transit_separation=formation_separation(30.0))
            ticks_needed.append(ticks)
            closest.append(min_pair_distance(boids))
        shapes[shape] = {"max_ticks_to_error_0.5": max(ticks_needed),
                         "median_ticks": int(statistics.median(ticks_needed)),
                         "min_pair_distance_after": round(min(closest), 2)}
    return {"polarization_30_boids": {k: round(statistics.fmean(v), 3) for k, v in pol.items()},
            "formations_12_agents_spacing_30": shapes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10, help="seeds / instances per quality figure")
    parser.add_argument("--json", help="also write the JSON result to this file")
    args = parser.parse_args()
    started = time.perf_counter()
    result = {"gossip": gossip(), "stigmergy": stigmergy(min(args.seeds, 5)), "optimisation": optimisation(args.seeds),
              "flocking": flocking(args.seeds), "machine": machine()}
    result["seconds"] = round(time.perf_counter() - started, 1)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text)


if __name__ == "__main__":
    main()
