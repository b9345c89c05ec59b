"""Flocking and formations, the pheromone field, and gossip: known answers and invariants."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarmlog.projections.flocking import (
    SHAPES,
    Boid,
    FlockParams,
    assign_slots,
    flock_tick,
    flocking_force,
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
    decompress,
    initial_ttl,
    relay,
    simulate_spread,
    topology,
)
from swarmlog.projections.stigmergy import CLEANUP_THRESHOLD, FieldParams, PheromoneField, discovery_run


def random_boids(n: int, seed: int, spread: float = 150.0) -> dict[str, Boid]:
    rng = random.Random(seed)
    return {f"agent-{i:03d}": Boid(rng.uniform(0, spread), rng.uniform(0, spread), rng.uniform(-4, 4),
                                   rng.uniform(-4, 4)) for i in range(n)}


# ------------------------------------------------------------------ flocking
def test_polarization_rises_as_the_flock_aligns() -> None:
    boids = random_boids(30, seed=1)
    start = polarization(boids)
    for _ in range(200):
        boids = flock_tick(boids)
    assert start < 0.5 and polarization(boids) > 0.9


def test_steering_is_desired_minus_velocity_limited_to_max_force() -> None:
    p = FlockParams()
    lone = {"a": Boid(0.0, 0.0, 1.0, 0.0), "b": Boid(40.0, 0.0, 1.0, 0.0)}  # b only in cohesion/alignment range
    force = flocking_force("a", lone, p)
    # alignment: desired (4,0) - v (1,0) = (3,0) -> limited to 0.1; cohesion: toward +x, same -> 0.1
    assert force == pytest.approx((0.2, 0.0))
    crowd = {"a": Boid(0.0, 0.0, 0.0, 0.0), "b": Boid(10.0, 0.0, 0.0, 0.0)}
    fx, _ = flocking_force("a", crowd, p)
    assert fx == pytest.approx(-0.1 * 1.5 + 0.1 + 0.0)  # separation pushes away (weight 1.5), cohesion pulls


def test_speed_never_exceeds_max_speed() -> None:
    boids = {k: Boid(b.x, b.y, b.vx * 5, b.vy * 5) for k, b in random_boids(20, seed=3).items()}
    for _ in range(5):
        boids = flock_tick(boids)
        assert all(math.hypot(b.vx, b.vy) <= 4.0 + 1e-9 for b in boids.values())


@pytest.mark.parametrize("shape", SHAPES)
def test_formations_settle_with_no_two_agents_closer_than_the_separation_radius(shape: str) -> None:
    boids = random_boids(12, seed=7)
    members = sorted(boids)
    targets = assign_slots(members, formation_slots(shape, 12, (100.0, 100.0), 30.0, heading_rad=0.3))
    ticks = 0
    while formation_error(boids, targets) > 0.5 and ticks < 600:  # bounded settling time
        boids = formation_tick(boids, targets, transit_separation=formation_separation(30.0))
        ticks += 1
    assert formation_error(boids, targets) <= 0.5, f"{shape} did not settle in 600 ticks"
    for _ in range(50):
        boids = formation_tick(boids, targets, transit_separation=formation_separation(30.0))
    assert min_pair_distance(boids) >= 25.0 - 1e-6


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(SHAPES), st.integers(1, 40), st.floats(1.0, 100.0), st.floats(-math.pi, math.pi))
def test_slots_are_spaced_at_least_spacing_apart_for_any_n(shape: str, n: int, spacing: float, heading: float) -> None:
    slots = formation_slots(shape, n, (5.0, -5.0), spacing, heading)
    assert len(slots) == n
    closest = min((math.dist(a, b) for i, a in enumerate(slots) for b in slots[i + 1:]), default=math.inf)
    assert closest >= spacing * (1 - 1e-9)


def test_circle_radius_and_wedge_tip() -> None:
    slots = formation_slots("CIRCLE", 6, (0.0, 0.0), 10.0)
    assert all(math.hypot(*s) == pytest.approx(10.0) for s in slots)  # hexagon: radius = side
    assert formation_slots("WEDGE", 3, (1.0, 2.0), 10.0)[0] == (1.0, 2.0)
    with pytest.raises(ValueError):
        formation_slots("STAR", 3, (0.0, 0.0), 10.0)
    with pytest.raises(ValueError):
        formation_slots("LINE", 3, (0.0, 0.0), 0.0)
    assert formation_slots("GRID", 0, (0.0, 0.0), 1.0) == []


# ------------------------------------------------------------------ pheromones
def test_decay_is_exponential_in_event_time_and_diffusion_spreads_to_four_neighbours() -> None:
    f = PheromoneField(FieldParams(decay_rate=0.1, diffusion=0.0, tick_ms=1000))
    f.deposit(0, 0, "food", 1.0, 0)
    f.advance_to(5_000)
    assert f.intensity(0, 0, "food") == pytest.approx(math.exp(-0.5))
    g = PheromoneField(FieldParams(decay_rate=0.0, diffusion=0.2, tick_ms=1000))
    g.deposit(0, 0, "food", 1.0, 0)
    g.advance_to(1_000)
    assert g.intensity(0, 0) == pytest.approx(0.8)
    assert [g.intensity(*c) for c in ((1, 0), (-1, 0), (0, 1), (0, -1))] == pytest.approx([0.05] * 4)


def test_reinforcement_caps_at_one_and_cleanup_drops_faint_cells() -> None:
    f = PheromoneField(FieldParams(decay_rate=1.0, diffusion=0.0))
    assert f.deposit(3, 3, "success", 0.7, 0) == pytest.approx(0.7)
    assert f.deposit(3, 3, "success", 0.7, 0) == 1.0
    f.advance_to(5_000)  # e^-5 ≈ 0.0067 < 0.01
    assert f.cells == {}
    with pytest.raises(ValueError):
        f.deposit(0, 0, "food", 1.5, 10_000)


def test_a_long_idle_field_evaporates_without_stepping_every_tick() -> None:
    f = PheromoneField(FieldParams(decay_rate=0.1, diffusion=0.1, tick_ms=1000))
    f.deposit(0, 0, "food", 1.0, 0)
    f.advance_to(10**12)  # ~30 years of event time: bounded work
    assert f.cells == {} and f.tick == 10**9


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(-3, 3), st.integers(-3, 3), st.sampled_from(["food", "danger"]),
                          st.floats(0.0, 1.0), st.integers(0, 20_000)), min_size=1, max_size=25))
def test_intensities_stay_in_bounds_and_replay_is_exact(deposits: list[tuple[int, int, str, float, int]]) -> None:
    deposits = sorted(deposits, key=lambda d: d[4])
    a, b = PheromoneField(), PheromoneField()
    for x, y, kind, amount, t in deposits:
        a.deposit(x, y, kind, amount, t)
    for x, y, kind, amount, t in deposits:  # the same log again, through the JSON state between events
        b = PheromoneField.from_json(b.to_json())
        b.deposit(x, y, kind, amount, t)
    assert a.to_json() == b.to_json()
    for grid in a.cells.values():
        assert all(CLEANUP_THRESHOLD <= v <= 1.0 for v in grid.values())


def test_danger_repels_and_success_attracts() -> None:
    f = PheromoneField(FieldParams(decay_rate=0.0, diffusion=0.0))
    f.deposit(1, 0, "success", 1.0, 0)
    f.deposit(0, 1, "danger", 1.0, 0)
    assert f.best_neighbour(0, 0) == (1, 0)
    gx, gy = f.gradient(0, 0)
    assert gx > 0 and gy < 0


def test_gradient_followers_find_resources_with_fewer_steps_than_random_walkers() -> None:
    followers = [discovery_run(seed=s, follow=True) for s in range(3)]
    walkers = [discovery_run(seed=s, follow=False) for s in range(3)]
    follow_cost = sum(r.agent_steps for r in followers) / sum(r.finds for r in followers)
    random_cost = sum(r.agent_steps for r in walkers) / sum(r.finds for r in walkers)
    assert follow_cost < random_cost * 0.8, (follow_cost, random_cost)


# ------------------------------------------------------------------ gossip
def test_ttl_by_scope_and_relay_never_goes_negative() -> None:
    assert (initial_ttl("LOCAL_BROADCAST"), initial_ttl("REGIONAL_GOSSIP"), initial_ttl("GLOBAL_ALERT")) == (2, 5, 20)
    assert initial_ttl("SOMETHING_NEWER") == 2
    message: dict[str, object] | None = {"ttl": 2, "hop": 0, "seen_by": ["a"]}
    hops = 0
    while message is not None:
        assert int(message["ttl"]) >= 0  # type: ignore[call-overload]
        message = relay(message, f"relay-{hops}")
        hops += 1
    assert hops == 3  # two relays, then spent


def test_compression_is_real_and_round_trips() -> None:
    body = b'{"alert": "cpu high", "agent": "did:key:z6Mk", "cpu": 0.97}' * 10
    packed = compress(body)
    assert len(packed) < len(body) * 0.5 and decompress(packed, "GZIP") == body
    assert compress(body) == packed  # deterministic bytes
    with pytest.raises(ValueError):
        decompress(packed, "ZSTD")


def test_overhead_metric_is_the_spec_formula() -> None:
    assert communication_overhead(edges=3000, agents=1000) == 3000 * 500 * 10 / 1000


def test_spread_reaches_99_percent_in_rounds_that_grow_like_log_n() -> None:
    reports = {n: simulate_spread(topology(n, seed=1), seed=1) for n in (100, 1000, 10000)}
    for report in reports.values():
        assert report.coverage >= 0.99
    rounds = [reports[n].rounds for n in (100, 1000, 10000)]
    assert rounds[0] < rounds[1] < rounds[2]
    # log growth: each 10x in N adds a bounded number of rounds, far from 10x the rounds
    assert rounds[2] - rounds[1] <= 2 * (rounds[1] - rounds[0]) + 2 and rounds[2] < 3 * rounds[0]


def test_local_broadcast_stays_local() -> None:
    report = simulate_spread(topology(1000, seed=2), scope="LOCAL_BROADCAST", seed=2, anti_entropy=False)
    assert report.coverage < 0.1 and report.rounds <= 3
