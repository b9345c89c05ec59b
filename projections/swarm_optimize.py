"""Swarm optimisation as a service: PSO, ACO and firefly (spec §2.6), pure and seeded.

An ``swarm.optimization_requested`` event carries everything a run depends on (problem,
bounds, seed, population, budget, parameters), so any worker — or an auditor replaying
the log — gets bit-identical progress and results. Randomness is one ``random.Random``
per job seeded from the event (Mersenne Twister, the same on every CPython), and all
arithmetic is plain Python floats in a fixed order, so there is no platform-dependent
vectorised reduction either.

The spec's update rules are kept as given; where the spec leaves a number open (the
firefly noise scale, velocity clamping, restarts) the choice is a named parameter with
its default written next to it, because "the optimum within a stated tolerance" is only
meaningful when the parameters that reach it are stated too.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

Vector = list[float]
Objective = Callable[[Sequence[float]], float]


class OptimizationError(ValueError):
    """A job that cannot run (unknown problem, empty input, inconsistent bounds)."""


# --------------------------------------------------------------------------- problems
def sphere(x: Sequence[float]) -> float:
    return math.fsum(v * v for v in x)


def rastrigin(x: Sequence[float]) -> float:
    return 10.0 * len(x) + math.fsum(v * v - 10.0 * math.cos(2.0 * math.pi * v) for v in x)


def rosenbrock(x: Sequence[float]) -> float:
    return math.fsum(100.0 * (x[i + 1] - x[i] ** 2) ** 2 + (1.0 - x[i]) ** 2 for i in range(len(x) - 1))


def ackley(x: Sequence[float]) -> float:
    n = len(x)
    s1 = math.fsum(v * v for v in x) / n
    s2 = math.fsum(math.cos(2.0 * math.pi * v) for v in x) / n
    return -20.0 * math.exp(-0.2 * math.sqrt(s1)) - math.exp(s2) + 20.0 + math.e


@dataclass(frozen=True)
class Problem:
    """A named benchmark objective with its conventional domain and known optimum."""

    name: str
    objective: Objective
    lower: float
    upper: float
    optimum: float


PROBLEMS: dict[str, Problem] = {
    "sphere": Problem("sphere", sphere, -5.12, 5.12, 0.0),
    "rastrigin": Problem("rastrigin", rastrigin, -5.12, 5.12, 0.0),
    "rosenbrock": Problem("rosenbrock", rosenbrock, -5.0, 10.0, 0.0),
    "ackley": Problem("ackley", ackley, -32.768, 32.768, 0.0),
}


# --------------------------------------------------------------------------- results
@dataclass
class Progress:
    iteration: int
    best_value: float
    best_position: Vector
    evaluations: int


@dataclass
class Result:
    best_value: float
    best_position: Vector
    iterations: int
    converged: bool
    evaluations: int
    best_path: list[int] = field(default_factory=list)
    history: list[Progress] = field(default_factory=list)


def _bounds(dimensions: int, lower: Sequence[float], upper: Sequence[float],
            problem: Problem | None) -> tuple[Vector, Vector]:
    if dimensions <= 0:
        raise OptimizationError("dimensions must be at least 1")
    lo = list(lower) or [problem.lower if problem else -1.0] * dimensions
    hi = list(upper) or [problem.upper if problem else 1.0] * dimensions
    if len(lo) == 1 and dimensions > 1:
        lo = lo * dimensions
    if len(hi) == 1 and dimensions > 1:
        hi = hi * dimensions
    if len(lo) != dimensions or len(hi) != dimensions:
        raise OptimizationError(f"bounds must have {dimensions} entries (or one for all)")
    for a, b in zip(lo, hi, strict=True):
        if not (math.isfinite(a) and math.isfinite(b)) or a >= b:
            raise OptimizationError(f"each lower bound must be finite and below its upper bound (got {a}, {b})")
    return lo, hi


def _check_run(population: int, max_iterations: int) -> None:
    if population < 1:
        raise OptimizationError("population must be at least 1")
    if max_iterations < 0:
        raise OptimizationError("max_iterations must not be negative")


def _clip(v: float, lo: float, hi: float) -> float:
    return lo if v < lo else hi if v > hi else v


def _scout(objective: Objective, best: Vector, best_value: float, rng: random.Random,
           lo: Vector, hi: Vector, trials: int) -> tuple[Vector, float]:
    """Scouts around the best point: resample one coordinate (even trials) or step it locally
    at a random scale (odd trials); keep any improvement.

    A converged swarm only searches its own basin; on separable multimodal functions
    (Rastrigin) the way out is one coordinate at a time, which a scout finds with
    probability about (basin width / domain width) per trial.
    """
    for trial in range(trials):
        candidate = list(best)
        d = rng.randrange(len(best))
        if trial % 2 == 0:
            candidate[d] = rng.uniform(lo[d], hi[d])
        else:  # a local step at a log-uniform scale (1e-1 .. 1e-7 of the width) polishes the basin
            step = (hi[d] - lo[d]) * 10.0 ** -rng.uniform(1.0, 7.0) * (2.0 * rng.random() - 1.0)
            candidate[d] = _clip(candidate[d] + step, lo[d], hi[d])
        value = objective(candidate)
        if value < best_value:
            best, best_value = candidate, value
    return best, best_value


# --------------------------------------------------------------------------- PSO
def pso(objective: Objective, dimensions: int, *, seed: int, population: int = 40, max_iterations: int = 4000,
        lower: Sequence[float] = (), upper: Sequence[float] = (), w: float = 0.7, c1: float = 1.5,
        c2: float = 1.5, velocity_clamp: float = 0.2, restarts: int = 1000, restart_radius: float = 0.15,
        scout_trials: int = 200, stagnation_window: int = 50, tolerance: float = 0.0,
        progress_every: int = 0, problem: Problem | None = None) -> Result:
    """Particle swarm (spec: w = 0.7, c1 = c2 = 1.5), minimising ``objective``.

    ``velocity_clamp`` caps |v| at that share of each dimension's range (unclamped PSO with
    w = 0.7 diverges to the bounds early on); ``restarts`` re-seeds the swarm, keeping the
    global best, when it has not improved for ``stagnation_window`` iterations, after
    ``scout_trials`` scouts around the best (see ``_scout``) — multimodal functions such as
    Rastrigin trap a single swarm in a local basin. ``restarts=0, scout_trials=0`` is the
    spec's plain PSO. ``tolerance`` > 0 stops when the best value is within it of
    ``problem.optimum`` (or 0 without a problem).
    """
    _check_run(population, max_iterations)
    lo, hi = _bounds(dimensions, lower, upper, problem)
    rng = random.Random(seed)
    vmax = [velocity_clamp * (b - a) for a, b in zip(lo, hi, strict=True)]
    target = problem.optimum if problem else 0.0
    evaluations = 0

    def spawn(around: Vector | None = None) -> tuple[list[Vector], list[Vector]]:
        if around is None:
            xs = [[rng.uniform(lo[d], hi[d]) for d in range(dimensions)] for _ in range(population)]
        else:  # half the swarm near the best so far (basin hopping), half anywhere
            xs = [[_clip(around[d] + rng.uniform(-1.0, 1.0) * restart_radius * (hi[d] - lo[d]), lo[d], hi[d])
                   if i % 2 == 0 else rng.uniform(lo[d], hi[d]) for d in range(dimensions)]
                  for i in range(population)]
        vs = [[rng.uniform(-vmax[d], vmax[d]) for d in range(dimensions)] for _ in range(population)]
        return xs, vs

    xs, vs = spawn()
    pbest = [list(x) for x in xs]
    pval = [objective(x) for x in xs]
    evaluations += population
    g = min(range(population), key=pval.__getitem__)
    gbest, gval = list(pbest[g]), pval[g]
    history: list[Progress] = []
    stagnant, restarts_left = 0, restarts
    iteration = 0
    converged = tolerance > 0 and gval - target <= tolerance
    while iteration < max_iterations and not converged:
        iteration += 1
        improved = False
        for i in range(population):
            x, v, pb = xs[i], vs[i], pbest[i]
            for d in range(dimensions):
                r1, r2 = rng.random(), rng.random()
                vd = w * v[d] + c1 * r1 * (pb[d] - x[d]) + c2 * r2 * (gbest[d] - x[d])
                vd = _clip(vd, -vmax[d], vmax[d])
                v[d] = vd
                x[d] = _clip(x[d] + vd, lo[d], hi[d])
            value = objective(x)
            evaluations += 1
            if value < pval[i]:
                pval[i], pbest[i] = value, list(x)
                if value < gval:
                    gval, gbest, improved = value, list(x), True
        stagnant = 0 if improved else stagnant + 1
        converged = tolerance > 0 and gval - target <= tolerance
        if progress_every and iteration % progress_every == 0:
            history.append(Progress(iteration, gval, list(gbest), evaluations))
        if restarts_left and stagnant >= stagnation_window and not converged:
            restarts_left -= 1
            stagnant = 0
            gbest, gval = _scout(objective, gbest, gval, rng, lo, hi, scout_trials)
            evaluations += scout_trials
            xs, vs = spawn(gbest)
            pbest = [list(x) for x in xs]
            pval = [objective(x) for x in xs]
            evaluations += population
            for i in range(population):
                if pval[i] < gval:
                    gval, gbest = pval[i], list(pbest[i])
    return Result(gval, gbest, iteration, converged, evaluations, history=history)


# --------------------------------------------------------------------------- firefly
def firefly(objective: Objective, dimensions: int, *, seed: int, population: int = 15, max_iterations: int = 1500,
            lower: Sequence[float] = (), upper: Sequence[float] = (), alpha0: float = 0.01,
            cooling_iterations: int = 100, noise_scale: str = "range", restarts: int = 1000, scout_trials: int = 200,
            stagnation_window: int = 30, tolerance: float = 0.0,
            progress_every: int = 0, problem: Problem | None = None) -> Result:
    """Firefly algorithm with the spec's attraction ``1 / (1 + r)`` and cooling
    ``alpha = alpha0 × max(0, 1 - t / cooling_iterations)``.

    The spec's random step ``alpha × U(-0.5, 0.5)`` is in absolute units; on a domain of
    width 10 that is no exploration at all, so ``noise_scale="range"`` (default) multiplies
    it by each dimension's width — ``"absolute"`` keeps the spec's literal units. Each
    firefly moves toward every brighter one (Yang 2008), in index order. ``restarts``
    re-seeds all but the brightest firefly when the swarm has collapsed (no improvement
    for ``stagnation_window`` iterations, after scouting around the best, see ``_scout``) so
    multimodal functions get more than one basin; ``restarts=0, scout_trials=0`` is the
    plain algorithm.
    """
    _check_run(population, max_iterations)
    lo, hi = _bounds(dimensions, lower, upper, problem)
    if noise_scale not in ("range", "absolute"):
        raise OptimizationError("noise_scale must be 'range' or 'absolute'")
    rng = random.Random(seed)
    widths = [b - a if noise_scale == "range" else 1.0 for a, b in zip(lo, hi, strict=True)]
    target = problem.optimum if problem else 0.0
    xs = [[rng.uniform(lo[d], hi[d]) for d in range(dimensions)] for _ in range(population)]
    values = [objective(x) for x in xs]
    evaluations = population
    b = min(range(population), key=values.__getitem__)
    best, best_value = list(xs[b]), values[b]
    history: list[Progress] = []
    stagnant, restarts_left, epoch_start = 0, restarts, 0
    iteration = 0
    converged = tolerance > 0 and best_value - target <= tolerance
    while iteration < max_iterations and not converged:
        iteration += 1
        t = iteration - epoch_start
        alpha = alpha0 * max(0.0, 1.0 - t / cooling_iterations) if cooling_iterations > 0 else alpha0
        improved = False
        for i in range(population):
            for j in range(population):
                if values[j] < values[i]:  # j is brighter (lower objective when minimising)
                    xi, xj = xs[i], xs[j]
                    r = math.sqrt(math.fsum((xi[d] - xj[d]) ** 2 for d in range(dimensions)))
                    attraction = 1.0 / (1.0 + r)
                    for d in range(dimensions):
                        step = attraction * (xj[d] - xi[d]) + alpha * widths[d] * (rng.random() - 0.5)
                        xi[d] = _clip(xi[d] + step, lo[d], hi[d])
                    values[i] = objective(xi)
                    evaluations += 1
                    if values[i] < best_value:
                        best_value, best, improved = values[i], list(xi), True
        stagnant = 0 if improved else stagnant + 1
        converged = tolerance > 0 and best_value - target <= tolerance
        if progress_every and iteration % progress_every == 0:
            history.append(Progress(iteration, best_value, list(best), evaluations))
        if restarts_left and stagnant >= stagnation_window and not converged:
            restarts_left, stagnant, epoch_start = restarts_left - 1, 0, iteration
            best, best_value = _scout(objective, best, best_value, rng, lo, hi, scout_trials)
            evaluations += scout_trials
            keep = min(range(population), key=values.__getitem__)
            xs[keep], values[keep] = list(best), best_value
            for i in range(population):
                if i != keep:
                    xs[i] = [rng.uniform(lo[d], hi[d]) for d in range(dimensions)]
                    values[i] = objective(xs[i])
                    evaluations += 1
                    if values[i] < best_value:
                        best_value, best = values[i], list(xs[i])
    return Result(best_value, best, iteration, converged, evaluations, history=history)


# --------------------------------------------------------------------------- ACO (TSP)
def tour_length(distances: Sequence[Sequence[float]], tour: Sequence[int]) -> float:
    n = len(tour)
    return math.fsum(distances[tour[k]][tour[(k + 1) % n]] for k in range(n))


def check_distances(distances: Sequence[Sequence[float]]) -> int:
    n = len(distances)
    if n == 0:
        raise OptimizationError("ACO needs at least one city")
    for row in distances:
        if len(row) != n:
            raise OptimizationError("the distance matrix must be square")
        for value in row:
            if not math.isfinite(value) or value < 0:
                raise OptimizationError("distances must be finite and non-negative")
    return n


def aco(distances: Sequence[Sequence[float]], *, seed: int, ants: int = 20, max_iterations: int = 200,
        evaporation: float = 0.1, initial_pheromone: float = 1.0, progress_every: int = 0,
        optimum: float | None = None, tolerance: float = 0.0) -> Result:
    """Ant colony for the travelling-salesman tour (spec §2.6).

    Next city chosen with probability ∝ ``pheromone[current][city] / distance`` (the spec's
    rule); after each iteration every edge evaporates by ``(1 - evaporation)`` and each ant
    deposits its fitness ``1 / tour length`` on the edges of its tour. Zero distances
    (duplicate cities) are treated as a tiny positive distance so they are preferred, not
    a division error.
    """
    n = check_distances(distances)
    _check_run(ants, max_iterations)
    if not 0.0 <= evaporation <= 1.0:
        raise OptimizationError("evaporation must be in [0, 1]")
    if n == 1:
        return Result(0.0, [], 0, True, 1, best_path=[0])
    rng = random.Random(seed)
    eps = 1e-12
    tau = [[initial_pheromone] * n for _ in range(n)]
    best_path: list[int] = list(range(n))
    best_len = tour_length(distances, best_path)
    evaluations = 1
    history: list[Progress] = []
    iteration = 0
    converged = optimum is not None and tolerance > 0 and best_len - optimum <= tolerance
    while iteration < max_iterations and not converged:
        iteration += 1
        tours: list[tuple[list[int], float]] = []
        for _ in range(ants):
            start = rng.randrange(n)
            tour, unvisited = [start], set(range(n)) - {start}
            while unvisited:
                cur = tour[-1]
                candidates = sorted(unvisited)
                weights = [tau[cur][c] / max(distances[cur][c], eps) for c in candidates]
                total = math.fsum(weights)
                pick = rng.random() * total
                acc, chosen = 0.0, candidates[-1]
                for c, wgt in zip(candidates, weights, strict=True):
                    acc += wgt
                    if pick < acc:
                        chosen = c
                        break
                tour.append(chosen)
                unvisited.remove(chosen)
            length = tour_length(distances, tour)
            evaluations += 1
            tours.append((tour, length))
            if length < best_len:
                best_len, best_path = length, tour
        for i in range(n):
            row = tau[i]
            for j in range(n):
                row[j] *= 1.0 - evaporation
        for tour, length in tours:
            deposit = 1.0 / max(length, eps)
            for k in range(n):
                a, b = tour[k], tour[(k + 1) % n]
                tau[a][b] += deposit
                tau[b][a] += deposit
        converged = optimum is not None and tolerance > 0 and best_len - optimum <= tolerance
        if progress_every and iteration % progress_every == 0:
            history.append(Progress(iteration, best_len, [float(c) for c in best_path], evaluations))
    return Result(best_len, [float(c) for c in best_path], iteration, converged, evaluations,
                  best_path=list(best_path), history=history)


def exact_tsp(distances: Sequence[Sequence[float]]) -> tuple[float, list[int]]:
    """Held–Karp dynamic programme: the exact optimum for small instances (n ≤ ~13).

    Exists so tests and benchmarks can state ACO's gap to the true optimum, not to a
    heuristic's guess.
    """
    n = check_distances(distances)
    if n <= 2:
        path = list(range(n))
        return tour_length(distances, path) if n else 0.0, path
    dp: dict[tuple[int, int], tuple[float, int]] = {}
    for k in range(1, n):
        dp[(1 << k, k)] = (distances[0][k], 0)
    for size in range(2, n):
        for subset in itertools.combinations(range(1, n), size):
            bits = sum(1 << b for b in subset)
            for k in subset:
                prev = bits & ~(1 << k)
                dp[(bits, k)] = min((dp[(prev, m)][0] + distances[m][k], m) for m in subset if m != k)
    full = (1 << n) - 2
    length, last = min((dp[(full, k)][0] + distances[k][0], k) for k in range(1, n))
    path, bits = [], full
    while last:
        path.append(last)
        bits, last = bits & ~(1 << last), dp[(bits, last)][1]
    path.append(0)
    return length, path[::-1]


def euclidean_matrix(points: Sequence[tuple[float, float]]) -> list[list[float]]:
    return [[math.dist(p, q) for q in points] for p in points]


