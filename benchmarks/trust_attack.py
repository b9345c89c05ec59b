"""Adversarial simulation of the trust network: how many commands reach malicious agents?

Populations of ``--agents`` agents with a growing share of malicious ones, in three
attacks:

* ``liars`` — independent malicious agents: they serve badly (success 20 %) and, as
  observers, report the opposite of what happened (about everyone);
* ``collusion`` — a colluding group: serves badly, rates every group member SUCCESS
  ``--fake`` times per round without any interaction, and reports FAILURE about every
  honest agent it deals with;
* ``camouflage`` — a colluding group that behaves well part of the time: serves well
  half of the time (95 %) and badly otherwise (10 %), reports honestly about honest
  agents (to look like good raters) and rates its own members up as above.

Honest agents serve well (95 % SUCCESS, else TIMEOUT or PARTIAL_FAILURE) and report
what happened. Every agent advertises a fitness (self-reported, so malicious agents
claim a high one: U(0.8, 1) against U(0.5, 1)). Each command comes from a random
requester and has ``--candidates`` random capable agents; the router picks the highest

* ``fitness`` — BEST_FIT, no trust (baseline);
* ``spec`` — the spec's conservative 95 % Bayesian score × fitness (spec usage pattern 4);
* ``eigen`` — TRUST_WEIGHTED as the router runs it: EigenTrust relative to a fair share
  (``trust_score``) × fitness, with ``--pretrusted`` founding honest agents.

The requester then reports the outcome (honestly or not, as above): every observation
goes through ``TrustProjection.apply`` — the reducer the workers run. Trust is read at
the start of each round (a deterministic log position). ``--warmup`` rounds route at
random (not measured) so every agent has a history; the next ``--rounds`` are measured.
Seeded: the same seed gives the same population, the same commands and the same numbers.

Also measured: the trust update rate (observations folded per second by the pure
reducer) and the time of one EigenTrust computation.

    .venv/bin/python benchmarks/trust_attack.py --json trust_attack.json --plot docs/img/trust_attack.png
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import machine  # noqa: E402

from swarmlog.projections.base import EventContext, MemoryStore, Stores  # noqa: E402
from swarmlog.projections.trust import TrustProjection, global_trust, trust_score  # noqa: E402
from swarmlog.projections.trust_graph import EIGEN_DAMPING  # noqa: E402
from swarmlog.streams.identity import did_from_ed25519_public  # noqa: E402

SCENARIOS = ("liars", "collusion", "camouflage")
METHODS = ("fitness", "spec", "eigen")
DAY_MS = 86_400_000


@dataclass
class Agent:
    did: str
    malicious: bool
    fitness: float


class World:
    """One population, one attack, one routing method; all randomness from one seeded RNG."""

    def __init__(self, n: int, share: float, scenario: str, method: str, seed: int, pretrusted: int,
                 candidates: int, fake: int, damping: float = EIGEN_DAMPING) -> None:
        self.rng = random.Random(f"{seed}/{n}/{share}/{scenario}")  # same world for every method
        bad = round(n * share)
        self.agents = []
        for i in range(n):
            did = did_from_ed25519_public(self.rng.getrandbits(256).to_bytes(32, "big"))
            malicious = i >= n - bad
            fitness = self.rng.uniform(0.8, 1.0) if malicious else self.rng.uniform(0.5, 1.0)
            self.agents.append(Agent(did, malicious, fitness))
        self.by_did = {a.did: a for a in self.agents}
        self.pretrusted = [a.did for a in self.agents if not a.malicious][:pretrusted]
        self.scenario, self.method = scenario, method
        self.candidates, self.fake, self.damping = candidates, fake, damping
        self.projection = TrustProjection()
        self.store = MemoryStore()
        self.stores = Stores(self.store)
        self.seq = 0
        self.now = 1_700_000_000_000
        self.route_rng = random.Random(f"{seed}/route/{n}/{share}/{scenario}/{method}")

    # -- the log: every observation through the real reducer
    def report(self, observer: Agent, subject: Agent, outcome: str, error_rate: float = 0.0) -> None:
        self.seq += 1
        self.now += 1
        lane = f"trust/{zlib.crc32(subject.did.encode()) % 6}"
        ctx = EventContext(f"ev-{self.seq}", "trust.observation", observer.did, subject.did, self.now, lane,
                           self.seq, "bench")
        self.projection.apply(self.stores, ctx, {"agent_id": subject.did, "observer": observer.did,
                                                 "outcome": outcome, "error_rate": error_rate})

    # -- behaviour
    def serve(self, agent: Agent, rng: random.Random) -> tuple[str, float]:
        if not agent.malicious:
            p = 0.95
        elif self.scenario == "camouflage":
            p = 0.95 if rng.random() < 0.5 else 0.10
        else:
            p = 0.20
        if rng.random() < p:
            return "SUCCESS", 0.0
        return rng.choice([("FAILURE", 0.0), ("TIMEOUT", 0.0), ("PARTIAL_FAILURE", 0.6)])

    def observe(self, requester: Agent, served: Agent, outcome: str, error_rate: float) -> None:
        if requester.malicious:
            if self.scenario == "liars":
                outcome = "FAILURE" if outcome == "SUCCESS" else "SUCCESS"
            elif not served.malicious and self.scenario == "collusion":
                outcome = "FAILURE"
            elif served.malicious:
                outcome = "SUCCESS"  # colluders cover for each other
        self.report(requester, served, outcome, error_rate)

    def collude(self) -> None:
        if self.scenario == "liars":
            return
        group = [a for a in self.agents if a.malicious]
        for rater in group:
            for member in group:
                if member is not rater:
                    for _ in range(self.fake):
                        self.report(rater, member, "SUCCESS")

    # -- routing
    def trust_of(self) -> dict[str, float]:
        if self.method == "fitness":
            return {a.did: 1.0 for a in self.agents}
        if self.method == "spec":
            return {a.did: trust_score(self.store, a.did, method="spec") for a in self.agents}
        return {a.did: trust_score(self.store, a.did, pretrusted=self.pretrusted, damping=self.damping)
                for a in self.agents}

    def round(self, commands: int, measured: bool) -> tuple[int, int]:
        trust = self.trust_of() if measured else {}
        rng = self.route_rng
        reached = 0
        for _ in range(commands):
            requester = rng.choice(self.agents)
            pool = rng.sample([a for a in self.agents if a is not requester], self.candidates)
            if measured:
                chosen = max(pool, key=lambda a: (trust[a.did] * a.fitness, a.fitness, a.did))
            else:
                chosen = rng.choice(pool)  # warm-up: explore
            outcome, error_rate = self.serve(chosen, rng)
            self.observe(requester, chosen, outcome, error_rate)
            reached += chosen.malicious
        self.collude()
        self.now += DAY_MS // 24
        return reached, commands


def simulate(n: int, share: float, scenario: str, method: str, args: argparse.Namespace,
             damping: float = EIGEN_DAMPING) -> dict[str, Any]:
    world = World(n, share, scenario, method, args.seed, args.pretrusted, args.candidates, args.fake, damping)
    for _ in range(args.warmup):
        world.round(n, measured=False)
    reached = total = 0
    per_round = []
    for _ in range(args.rounds):
        r, t = world.round(n, measured=True)
        reached += r
        total += t
        per_round.append(r / t)
    return {"scenario": scenario, "malicious_share": share, "method": method, "damping": damping,
            "commands": total, "reached_malicious": reached, "share_to_malicious": reached / total,
            "per_round": per_round, "observations": world.seq}


def update_rate(observations: int, agents: int, seed: int) -> dict[str, Any]:
    """Observations folded per second by ``TrustProjection.apply`` into a MemoryStore (pure, no I/O)."""
    rng = random.Random(seed)
    dids = [did_from_ed25519_public(rng.getrandbits(256).to_bytes(32, "big")) for _ in range(agents)]
    outcomes = ["SUCCESS", "SUCCESS", "SUCCESS", "TIMEOUT", "FAILURE", "PARTIAL_FAILURE"]
    events = []
    for i in range(observations):
        o, s = rng.sample(dids, 2)
        ctx = EventContext(f"ev-{i}", "trust.observation", o, s, 1_700_000_000_000 + i,
                           f"trust/{zlib.crc32(s.encode()) % 6}", i, "bench")
        events.append((ctx, {"agent_id": s, "observer": o, "outcome": rng.choice(outcomes), "error_rate": 0.3}))
    projection, store = TrustProjection(), MemoryStore()
    stores = Stores(store)
    start = time.perf_counter()
    for ctx, payload in events:
        projection.apply(stores, ctx, payload)
    folded = time.perf_counter() - start
    start = time.perf_counter()
    result = global_trust(store, dids[:3])
    eigen_s = time.perf_counter() - start
    return {"observations": observations, "agents": agents, "seconds": folded,
            "observations_per_s": observations / folded, "edges": sum(1 for _ in store.scan("edge/")),
            "eigentrust_s": eigen_s, "eigentrust_iterations": result.iterations}


def plot(rows: Sequence[dict[str, Any]], path: Path, target_share: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(SCENARIOS), figsize=(13, 4.2), sharey=True)
    labels = {"fitness": "fitness only (BEST_FIT)", "spec": "spec score (conservative) × fitness",
              "eigen": "EigenTrust × fitness (TRUST_WEIGHTED)"}
    styles = {"fitness": ("tab:gray", "s", ":"), "spec": ("tab:orange", "o", "--"), "eigen": ("tab:blue", "^", "-")}
    for ax, scenario in zip(axes, SCENARIOS, strict=True):
        for method in METHODS:
            pts = sorted((r["malicious_share"], r["share_to_malicious"]) for r in rows
                         if r["scenario"] == scenario and r["method"] == method)
            color, marker, line = styles[method]
            ax.plot([p[0] * 100 for p in pts], [p[1] * 100 for p in pts], line, marker=marker, color=color,
                    label=labels[method])
        shares = sorted({r["malicious_share"] for r in rows})
        ax.plot([s * 100 for s in shares], [s * 100 for s in shares], color="black", alpha=0.25, lw=1,
                label="share of malicious agents")
        ax.axhline(10, color="red", alpha=0.3, lw=1)
        ax.axvline(target_share * 100, color="red", alpha=0.15, lw=1)
        ax.set_title(scenario)
        ax.set_xlabel("malicious agents (%)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("commands reaching malicious agents (%)")
    axes[-1].legend(loc="upper left", fontsize=8)
    fig.suptitle("swarmlog trust under attack (benchmarks/trust_attack.py; red: the 10 % target at 40 % malicious)",
                 fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--shares", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=SCENARIOS)
    parser.add_argument("--warmup", type=int, default=5, help="random-routing rounds before measuring")
    parser.add_argument("--rounds", type=int, default=15, help="measured rounds (one command per agent each)")
    parser.add_argument("--candidates", type=int, default=5, help="capable agents offered per command")
    parser.add_argument("--pretrusted", type=int, default=3, help="founding honest agents EigenTrust starts from")
    parser.add_argument("--fake", type=int, default=2, help="fake SUCCESS reports per colluder pair per round")
    parser.add_argument("--seed", type=int, default=2028)
    parser.add_argument("--dampings", type=float, nargs="*", default=[0.15, 0.3],
                        help="also run EigenTrust with these dampings at 40 %% malicious (the default is "
                             f"{EIGEN_DAMPING})")
    parser.add_argument("--rate-observations", type=int, default=100_000)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--plot", type=Path, help="write the PNG plot here")
    args = parser.parse_args()

    started = time.perf_counter()
    rows = []
    for scenario in args.scenarios:
        for share in args.shares:
            for method in METHODS:
                row = simulate(args.agents, share, scenario, method, args)
                rows.append(row)
                print(f"{scenario:10s} malicious {share:4.0%}  {method:7s} → {row['share_to_malicious']:6.1%} "
                      f"of {row['commands']} commands reach malicious agents", flush=True)
    sweep = []
    for damping in args.dampings:
        for scenario in args.scenarios:
            row = simulate(args.agents, 0.4, scenario, "eigen", args, damping)
            sweep.append(row)
            print(f"damping {damping:.2f}  {scenario:10s} malicious 40%  eigen → {row['share_to_malicious']:6.1%}",
                  flush=True)
    rate = update_rate(args.rate_observations, 1_000, args.seed)
    print(f"trust update rate: {rate['observations_per_s']:,.0f} observations/s "
          f"({rate['observations']} over {rate['agents']} agents, {rate['edges']} edges); "
          f"one EigenTrust over them: {rate['eigentrust_s'] * 1000:.0f} ms, {rate['eigentrust_iterations']} iterations")
    # the target: with 40 % colluding malicious agents, < 10 % of commands reach them (EigenTrust)
    target = {r["scenario"]: r["share_to_malicious"] for r in rows
              if r["scenario"] in ("collusion", "camouflage") and r["method"] == "eigen"
              and abs(r["malicious_share"] - 0.4) < 1e-9}
    met = {scenario: share < 0.10 for scenario, share in target.items()}
    print("target (40 % colluding malicious, EigenTrust: < 10 % of commands reach them): " + ", ".join(
        f"{scenario} {share:.1%} {'met' if met[scenario] else 'NOT met'}" for scenario, share in target.items()))
    result = {"machine": machine(), "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "rows": rows, "damping_sweep": sweep, "update_rate": rate, "target_met": met,
              "wall_s": time.perf_counter() - started}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    if args.plot:
        plot(rows, args.plot, 0.4)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
