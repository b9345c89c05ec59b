"""Flocking and formations (spec §2.1): Reynolds' boids and formation slots, pure.

Steering follows Reynolds (1999): for each rule a *desired* velocity (unit direction ×
``max_speed``), steering = desired − current velocity, limited to ``max_force``; the rules
are weighted (separation 1.5 within 25 units, alignment and cohesion 1.0 within 50) and
summed into the acceleration; then ``v += a``, ``|v| ≤ max_speed``, ``x += v`` (the spec's
update loop). All agents steer from the same snapshot of the previous tick, in a fixed
(sorted id) order, so a tick is a pure function of the positions reported before it.

Formations assign slot *i* of a shape to the *i*-th member and steer each agent to its
slot with Reynolds' *arrival* (desired speed falls off inside ``slowing_radius``) plus
separation, so agents never pass through each other on the way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

SEPARATION_RADIUS = 25.0
SEPARATION_WEIGHT = 1.5
ALIGNMENT_RADIUS = 50.0
ALIGNMENT_WEIGHT = 1.0
COHESION_RADIUS = 50.0
COHESION_WEIGHT = 1.0
MAX_SPEED = 4.0
MAX_FORCE = 0.1
SHAPES = ("LINE", "CIRCLE", "GRID", "WEDGE")

Vec = tuple[float, float]


def _len(v: Vec) -> float:
    return math.hypot(v[0], v[1])


def _scale(v: Vec, k: float) -> Vec:
    return (v[0] * k, v[1] * k)


def _limit(v: Vec, cap: float) -> Vec:
    n = _len(v)
    return _scale(v, cap / n) if n > cap and n > 0 else v


def _set_len(v: Vec, size: float) -> Vec:
    n = _len(v)
    return _scale(v, size / n) if n > 0 else (0.0, 0.0)


@dataclass(frozen=True)
class Boid:
    x: float
    y: float
    vx: float
    vy: float

    @property
    def pos(self) -> Vec:
        return (self.x, self.y)

    @property
    def vel(self) -> Vec:
        return (self.vx, self.vy)


@dataclass(frozen=True)
class FlockParams:
    separation_radius: float = SEPARATION_RADIUS
    separation_weight: float = SEPARATION_WEIGHT
    alignment_radius: float = ALIGNMENT_RADIUS
    alignment_weight: float = ALIGNMENT_WEIGHT
    cohesion_radius: float = COHESION_RADIUS
    cohesion_weight: float = COHESION_WEIGHT
    max_speed: float = MAX_SPEED
    max_force: float = MAX_FORCE


def _steer(desired_dir: Vec, vel: Vec, p: FlockParams) -> Vec:
    if desired_dir == (0.0, 0.0):
        return (0.0, 0.0)
    desired = _set_len(desired_dir, p.max_speed)
    return _limit((desired[0] - vel[0], desired[1] - vel[1]), p.max_force)


def flocking_force(me: str, boids: Mapping[str, Boid], p: FlockParams = FlockParams()) -> Vec:
    """The weighted sum of separation, alignment and cohesion steering for ``me``."""
    b = boids[me]
    ali, coh = [0.0, 0.0], [0.0, 0.0]
    n_ali = n_coh = 0
    for other_id in sorted(boids):
        if other_id == me:
            continue
        o = boids[other_id]
        d = math.hypot(b.x - o.x, b.y - o.y)
        if d < p.alignment_radius:
            ali[0] += o.vx
            ali[1] += o.vy
            n_ali += 1
        if d < p.cohesion_radius:
            coh[0] += o.x
            coh[1] += o.y
            n_coh += 1
    s = separation_force(me, boids, p)
    force = [s[0] * p.separation_weight, s[1] * p.separation_weight]
    if n_ali:
        s = _steer((ali[0] / n_ali, ali[1] / n_ali), b.vel, p)
        force[0] += s[0] * p.alignment_weight
        force[1] += s[1] * p.alignment_weight
    if n_coh:
        s = _steer((coh[0] / n_coh - b.x, coh[1] / n_coh - b.y), b.vel, p)
        force[0] += s[0] * p.cohesion_weight
        force[1] += s[1] * p.cohesion_weight
    return (force[0], force[1])


def integrate(b: Boid, acceleration: Vec, max_speed: float) -> Boid:
    """The spec's update: v += a; clamp |v| to max_speed; x += v."""
    v = _limit((b.vx + acceleration[0], b.vy + acceleration[1]), max_speed)
    return Boid(b.x + v[0], b.y + v[1], v[0], v[1])


def flock_tick(boids: Mapping[str, Boid], p: FlockParams = FlockParams()) -> dict[str, Boid]:
    return {k: integrate(boids[k], flocking_force(k, boids, p), p.max_speed) for k in sorted(boids)}


# --------------------------------------------------------------------------- formations
def formation_slots(shape: str, n: int, anchor: Vec, spacing: float, heading_rad: float = 0.0) -> list[Vec]:
    """Target positions for ``n`` members, neighbours ``spacing`` apart, rotated by ``heading``.

    LINE: centred on the anchor, across the heading. CIRCLE: around the anchor, radius chosen
    so neighbouring slots are ``spacing`` apart along the chord (any n; n = 1 sits on the
    anchor). GRID: ceil(sqrt(n)) columns, centred. WEDGE: a V whose tip (slot 0) is the
    anchor, pointing along the heading, arms trailing back at 45°.
    """
    if n < 0:
        raise ValueError("n must not be negative")
    if shape not in SHAPES:
        raise ValueError(f"unknown formation shape {shape!r} (known: {', '.join(SHAPES)})")
    if not (spacing > 0 and math.isfinite(spacing)):
        raise ValueError("spacing must be a positive number")
    local: list[Vec] = []
    if shape == "LINE":
        local = [(0.0, (i - (n - 1) / 2) * spacing) for i in range(n)]
    elif shape == "CIRCLE":
        if n == 1:
            local = [(0.0, 0.0)]
        elif n > 1:
            radius = spacing / (2 * math.sin(math.pi / n))
            local = [(radius * math.cos(2 * math.pi * i / n), radius * math.sin(2 * math.pi * i / n)) for i in range(n)]
    elif shape == "GRID":
        cols = math.ceil(math.sqrt(n)) if n else 0
        rows = math.ceil(n / cols) if cols else 0
        local = [((i // cols - (rows - 1) / 2) * spacing, (i % cols - (cols - 1) / 2) * spacing) for i in range(n)]
    else:  # WEDGE
        back = spacing / math.sqrt(2)
        for i in range(n):
            rank, side = (i + 1) // 2, (1 if i % 2 else -1)
            local.append((-rank * back, side * rank * back) if i else (0.0, 0.0))
    c, s = math.cos(heading_rad), math.sin(heading_rad)
    return [(anchor[0] + x * c - y * s, anchor[1] + x * s + y * c) for x, y in local]


def arrive_force(b: Boid, target: Vec, p: FlockParams, slowing_radius: float = 40.0) -> Vec:
    """Reynolds' arrival: full speed far away, slowing linearly inside ``slowing_radius``."""
    offset = (target[0] - b.x, target[1] - b.y)
    distance = _len(offset)
    if distance == 0:
        return _limit((-b.vx, -b.vy), p.max_force)
    speed = p.max_speed * min(1.0, distance / slowing_radius)
    desired = _set_len(offset, speed)
    return _limit((desired[0] - b.vx, desired[1] - b.vy), p.max_force)


def separation_force(me: str, boids: Mapping[str, Boid], p: FlockParams) -> Vec:
    """Steering away from neighbours inside the separation radius, each pushing harder the
    closer it is (1 / distance); zero with none."""
    b = boids[me]
    sep, count = [0.0, 0.0], 0
    for other_id in sorted(boids):
        if other_id == me:
            continue
        o = boids[other_id]
        dx, dy = b.x - o.x, b.y - o.y
        d = math.hypot(dx, dy)
        if 0 < d < p.separation_radius:
            sep[0] += dx / d / d
            sep[1] += dy / d / d
            count += 1
    if not count:
        return (0.0, 0.0)
    return _steer((sep[0] / count, sep[1] / count), b.vel, p)


def formation_tick(boids: Mapping[str, Boid], targets: Mapping[str, Vec], p: FlockParams = FlockParams(),
                   arrive_weight: float = 1.0, transit_separation: float | None = None) -> dict[str, Boid]:
    """Members steer to their slots (arrival) and away from each other (separation).

    ``transit_separation`` overrides the separation radius while moving in formation —
    ``formation_separation(spacing)`` gives the one to use. With the flocking radius (25)
    and slots 30 apart, an agent crossing between two settled neighbours must pass within
    15 of both and is held off its slot for ever (seen on grids and wedges); settled
    agents are still ≥ spacing apart, so the radius only changes how agents pass.
    """
    out = {}
    sep = p if transit_separation is None else replace(p, separation_radius=transit_separation)
    for k in sorted(boids):
        b = boids[k]
        f = (0.0, 0.0)
        if k in targets:
            a = arrive_force(b, targets[k], p)
            f = (a[0] * arrive_weight, a[1] * arrive_weight)
        s = separation_force(k, boids, sep)
        f = (f[0] + s[0] * p.separation_weight, f[1] + s[1] * p.separation_weight)
        out[k] = integrate(b, f, p.max_speed)
    return out



def formation_separation(spacing: float) -> float:
    """Separation radius for agents moving into slots ``spacing`` apart: 0.4 × spacing leaves
    a passage between two settled neighbours."""
    return 0.4 * spacing


def assign_slots(members: Sequence[str], slots: Sequence[Vec]) -> dict[str, Vec]:
    """Slot i to the i-th member: the formation order names who stands where."""
    return {m: slots[i] for i, m in enumerate(members)}


def assign_nearest(boids: Mapping[str, Boid], slots: Sequence[Vec]) -> dict[str, Vec]:
    """Greedy nearest assignment (closest agent–slot pair first; ties by agent id, slot index).

    Without an ordered member list this keeps paths short and mostly uncrossed: with an
    arbitrary order two agents can meet head-on and hold each other off through the
    separation force (seen on grids), never reaching their slots.
    """
    pairs = sorted((math.dist(boids[a].pos, slot), a, i) for a in boids for i, slot in enumerate(slots))
    taken_agents: set[str] = set()
    taken_slots: set[int] = set()
    out: dict[str, Vec] = {}
    for _d, agent, i in pairs:
        if agent in taken_agents or i in taken_slots:
            continue
        out[agent] = slots[i]
        taken_agents.add(agent)
        taken_slots.add(i)
    return out


# --------------------------------------------------------------------------- metrics
def polarization(boids: Mapping[str, Boid]) -> float:
    """Order parameter |Σ v̂| / N in [0, 1]: 1 when every agent heads the same way."""
    units = [_set_len(b.vel, 1.0) for b in boids.values() if _len(b.vel) > 0]
    if not units:
        return 0.0
    return _len((math.fsum(u[0] for u in units), math.fsum(u[1] for u in units))) / len(boids)


def formation_error(boids: Mapping[str, Boid], targets: Mapping[str, Vec]) -> float:
    """Mean distance of members from their slots."""
    if not targets:
        return 0.0
    return math.fsum(math.dist(boids[k].pos, t) for k, t in targets.items()) / len(targets)


def min_pair_distance(boids: Mapping[str, Boid]) -> float:
    items = [boids[k].pos for k in sorted(boids)]
    best = math.inf
    for i in range(len(items)):
        for j in range(i + 1, len(items)):
            best = min(best, math.dist(items[i], items[j]))
    return best
