"""Stigmergy (spec §2.4): a sparse pheromone field that evolves in event time.

Exactness on replay comes from advancing the field in fixed ticks of event time: before a
deposit at time *t* is added, the field is advanced from its last tick through every
whole tick up to *t*. Each tick: every cell decays by ``exp(-decay_rate × tick_s)`` (the
spec's ``intensity × e^(-decay_rate × age)`` applied piecewise), then diffuses — it keeps
``1 - diffusion`` of its intensity and gives ``diffusion / 4`` to each of its 4 neighbours
(the spec's "25 % each direction" of what spreads) — then cells below ``0.01`` are dropped
(the spec's clean-up). Deposits add to the cell (reinforcement) and are capped at 1.
All iteration is in sorted cell order, so the float sums are the same on every replay.

A field is one Kafka key (``field_id``), so one worker folds all of it, in log order.
Gradients: ``((right - left) / 2, (down - up) / 2)`` of the *potential*, where attracting
types (food, success, resources) count positive and repelling ones (danger) negative.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

CLEANUP_THRESHOLD = 0.01
REPELLING = frozenset({"danger"})
Cell = tuple[int, int]


@dataclass(frozen=True)
class FieldParams:
    decay_rate: float = 0.1  # per second of event time
    diffusion: float = 0.1  # share of a cell's intensity that spreads per tick
    tick_ms: int = 1000
    max_catch_up_ticks: int = 10_000  # a field idle longer than this many ticks has fully evaporated


@dataclass
class PheromoneField:
    """Intensities per pheromone type and cell, and the event time the field has reached."""

    params: FieldParams = field(default_factory=FieldParams)
    cells: dict[str, dict[Cell, float]] = field(default_factory=dict)
    tick: int | None = None  # index of the last tick applied (event time // tick_ms)

    # -- evolution ----------------------------------------------------------------------
    def advance_to(self, timestamp_ms: int) -> None:
        target = timestamp_ms // self.params.tick_ms
        if self.tick is None:
            self.tick = target
            return
        steps = target - self.tick
        if steps <= 0:
            return  # an older event does not move time backwards
        if steps > self.params.max_catch_up_ticks:
            steps = 0
            self._evaporate_if_gone(target)
        for _ in range(steps):
            self._step()
            if not self.cells:
                break
        self.tick = target

    def _evaporate_if_gone(self, target: int) -> None:
        # after max_catch_up_ticks of decay every cell (≤ 1) is far below the threshold
        factor = math.exp(-self.params.decay_rate * self.params.tick_ms / 1000 * self.params.max_catch_up_ticks)
        if factor < CLEANUP_THRESHOLD:
            self.cells.clear()
        else:  # decay that slow: keep stepping, bounded by the cap
            for _ in range(self.params.max_catch_up_ticks):
                self._step()
        self.tick = target

    def _step(self) -> None:
        decay = math.exp(-self.params.decay_rate * self.params.tick_ms / 1000)
        share = self.params.diffusion / 4
        for kind in sorted(self.cells):
            grid = self.cells[kind]
            nxt: dict[Cell, float] = {}
            for (x, y) in sorted(grid):
                value = grid[(x, y)] * decay
                nxt[(x, y)] = nxt.get((x, y), 0.0) + value * (1 - self.params.diffusion)
                for n in ((x + 1, y), (x - 1, y), (x, y + 1), (x, y - 1)):
                    nxt[n] = nxt.get(n, 0.0) + value * share
            kept = {c: min(1.0, v) for c, v in sorted(nxt.items()) if v >= CLEANUP_THRESHOLD}
            if kept:
                self.cells[kind] = kept
            else:
                del self.cells[kind]

    def deposit(self, x: int, y: int, kind: str, intensity: float, timestamp_ms: int) -> float:
        """Advance to ``timestamp_ms`` then reinforce the cell; returns its new intensity."""
        if not (0.0 <= intensity <= 1.0) or math.isnan(intensity):
            raise ValueError("intensity must be in [0, 1]")
        self.advance_to(timestamp_ms)
        grid = self.cells.setdefault(kind, {})
        value = min(1.0, grid.get((x, y), 0.0) + intensity)
        if value >= CLEANUP_THRESHOLD:
            grid[(x, y)] = value
        elif not grid:  # a deposit too faint to keep leaves no empty type behind
            del self.cells[kind]
        return value

    # -- queries --------------------------------------------------------------------------
    def intensity(self, x: int, y: int, kind: str | None = None) -> float:
        kinds = [kind] if kind is not None else sorted(self.cells)
        return math.fsum(self.cells.get(k, {}).get((x, y), 0.0) for k in kinds)

    def potential(self, x: int, y: int, attract: Iterable[str] | None = None,
                  repel: Iterable[str] = REPELLING) -> float:
        """Attracting intensity minus repelling intensity at a cell."""
        repel_set = set(repel)
        kinds = sorted(self.cells) if attract is None else sorted(set(attract) | repel_set)
        total = 0.0
        for k in kinds:
            v = self.cells.get(k, {}).get((x, y), 0.0)
            total += -v if k in repel_set else v
        return total

    def gradient(self, x: int, y: int, attract: Iterable[str] | None = None,
                 repel: Iterable[str] = REPELLING) -> tuple[float, float]:
        """The spec's central difference of the potential, normalised (zero where flat)."""
        a = list(attract) if attract is not None else None
        p = lambda cx, cy: self.potential(cx, cy, a, repel)  # noqa: E731
        dx = (p(x + 1, y) - p(x - 1, y)) / 2.0
        dy = (p(x, y + 1) - p(x, y - 1)) / 2.0
        norm = math.hypot(dx, dy)
        return (dx / norm, dy / norm) if norm > 0 else (0.0, 0.0)

    def best_neighbour(self, x: int, y: int, attract: Iterable[str] | None = None,
                       repel: Iterable[str] = REPELLING) -> Cell | None:
        """The 4-neighbour with the highest potential, if it beats staying (ties: fixed order)."""
        a = list(attract) if attract is not None else None
        here = self.potential(x, y, a, repel)
        best, best_value = None, here
        for n in ((x + 1, y), (x - 1, y), (x, y + 1), (x, y - 1)):
            v = self.potential(n[0], n[1], a, repel)
            if v > best_value:
                best, best_value = n, v
        return best

    # -- state ------------------------------------------------------------------------------
    def to_json(self) -> dict[str, object]:
        return {"tick": self.tick,
                "cells": {k: [[x, y, v] for (x, y), v in sorted(g.items())] for k, g in sorted(self.cells.items())}}

    @classmethod
    def from_json(cls, data: Mapping[str, object], params: FieldParams | None = None) -> PheromoneField:
        f = cls(params or FieldParams())
        tick = data.get("tick")
        f.tick = tick if isinstance(tick, int) else None
        cells = data.get("cells")
        if isinstance(cells, dict):
            for kind, rows in cells.items():
                f.cells[kind] = {(int(r[0]), int(r[1])): float(r[2]) for r in rows}
        return f


# --------------------------------------------------------------------------- discovery
@dataclass
class DiscoveryReport:
    finds: int
    mean_steps: float  # over completed searches only (biased toward quick finds)
    steps: list[int]
    agent_steps: int  # every step walked, found or not

    @property
    def steps_per_find(self) -> float:
        """Walked steps per resource found — the unbiased cost of a find (renewal estimate)."""
        return self.agent_steps / self.finds if self.finds else math.inf


def discovery_run(*, seed: int, follow: bool, agents: int = 20, size: int = 30, resources: Iterable[Cell] = ((22, 22),),
                  danger: Iterable[Cell] = (), ticks: int = 2000, trail: int = 12,
                  params: FieldParams | None = None) -> DiscoveryReport:
    """Collective resource discovery on a ``size`` × ``size`` torus-free grid.

    Every agent walks one cell per tick from a random start. A finder deposits "success"
    on the resource and, fading by 0.8 a cell, on the last ``trail`` cells of its path
    (reinforcement), then
    restarts at a random cell. With ``follow`` an agent climbs the potential (success
    attracts, danger repels) and walks randomly only where the field is flat; without it
    every agent is a random walker. Danger cells are marked once at the start and
    re-marked every tick a walker steps on one. Returns the steps each find took.
    """
    import random

    rng = random.Random(seed)
    goal = set(resources)
    hazards = set(danger)
    f = PheromoneField(params or FieldParams(decay_rate=0.02, diffusion=0.2))
    f.advance_to(0)
    for (x, y) in sorted(hazards):
        f.deposit(x, y, "danger", 1.0, 0)

    def start() -> Cell:
        return (rng.randrange(size), rng.randrange(size))

    pos = [start() for _ in range(agents)]
    paths: list[list[Cell]] = [[p] for p in pos]
    age = [0] * agents
    found: list[int] = []
    for t in range(1, ticks + 1):
        now = t * f.params.tick_ms
        f.advance_to(now)
        for i in range(agents):
            x, y = pos[i]
            step = f.best_neighbour(x, y, attract=("success",)) if follow else None
            if step is None:
                dx, dy = ((1, 0), (-1, 0), (0, 1), (0, -1))[rng.randrange(4)]
                step = (min(size - 1, max(0, x + dx)), min(size - 1, max(0, y + dy)))
            pos[i] = step
            paths[i].append(step)
            age[i] += 1
            if step in hazards:
                f.deposit(step[0], step[1], "danger", 1.0, now)
            if step in goal:
                found.append(age[i])
                for back, (cx, cy) in enumerate(reversed(paths[i][-trail:])):
                    f.deposit(cx, cy, "success", 0.8 ** back, now)  # graded: the trail points home
                pos[i] = start()
                paths[i], age[i] = [pos[i]], 0
    mean = math.fsum(found) / len(found) if found else math.inf
    return DiscoveryReport(len(found), mean, found, agents * ticks)
