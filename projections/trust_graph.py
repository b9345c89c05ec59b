"""Pure trust-graph algorithms: transitive trust (the spec's path product) and EigenTrust.

No store, no clock: both take a plain graph ``{rater: {ratee: weight}}`` so the trust
projection, the benchmarks and the tests run the very same code. Every loop runs over
sorted keys and sums with ``math.fsum``, so the result does not depend on dict order
(the graph is built from a store whose insertion order differs between a live worker
and a replay).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

Graph = Mapping[str, Mapping[str, float]]

PATH_PRUNE = 0.1  # the spec: low-trust paths (< 0.1) are pruned during the search
MAX_PATH_DEPTH = 6  # hops; bounds the search on dense graphs (the spec's BFS has no bound)
# Weight a of the pre-trusted distribution p in t = (1 - a) C^T t + a p. The EigenTrust paper
# uses 0.1-0.2; a group that only rates itself keeps ~(1 - a)/a times what leaks into it, and
# benchmarks/trust_attack.py measured 0.15, 0.3 and 0.5 (docs/benchmarks.md): 0.5 keeps the
# commands reaching a 40 % colluding group lowest, at the price of anchoring trust more
# strongly on the pre-trusted agents.
EIGEN_DAMPING = 0.5
EIGEN_TOLERANCE = 1e-10
EIGEN_MAX_ITERATIONS = 200


@dataclass(frozen=True, slots=True)
class TrustPath:
    """The best path from ``source`` to ``target`` and its trust (product of the edge levels)."""

    source: str
    target: str
    trust: float
    path: tuple[str, ...]


def transitive_trust(graph: Graph, source: str, target: str, *, prune: float = PATH_PRUNE,
                     max_depth: int = MAX_PATH_DEPTH) -> TrustPath | None:
    """Highest path product from ``source`` to ``target`` (spec §3.3), None if no path survives pruning.

    The spec multiplies the trust levels along a path (A→B 0.9, B→C 0.8, C→Z 0.9 gives
    0.648) and prunes partial paths below 0.1. Where several paths exist the spec does
    not say which one counts; we take the best (maximum product), which is also what
    makes the search cheap: edge levels are in [0, 1], so a product never grows along a
    path and a best-first search (Dijkstra on -log) may stop at the first time it pops
    the target. Ties are broken by the lexicographically smallest path, so the answer is
    unique. ``source == target`` is trust 1 (the empty path).
    """
    if source == target:
        return TrustPath(source, target, 1.0, (source,))
    # heap of (-product, path); a path is expanded once per node (the first pop is the best)
    heap: list[tuple[float, tuple[str, ...]]] = [(-1.0, (source,))]
    done: set[str] = set()
    while heap:
        neg, path = heapq.heappop(heap)
        node = path[-1]
        if node == target:
            return TrustPath(source, target, -neg, path)
        if node in done:
            continue
        done.add(node)
        if len(path) - 1 >= max_depth:
            continue
        edges = graph.get(node, {})
        for nxt in sorted(edges):
            if nxt in done:
                continue
            product = -neg * min(max(float(edges[nxt]), 0.0), 1.0)
            if product < prune:
                continue  # the spec's pruning: this partial path can only get weaker
            heapq.heappush(heap, (-product, (*path, nxt)))
    return None


@dataclass(frozen=True, slots=True)
class EigenTrustResult:
    """Global trust per agent (sums to 1 over ``agents``), one-step distrust, and how the iteration went."""

    scores: dict[str, float]
    iterations: int
    converged: bool
    pretrusted: tuple[str, ...]
    distrust: dict[str, float] = field(default_factory=dict)

    def net(self, agent: str) -> float:
        """Trust minus distrust, floored at 0 (Guha et al.'s one-step distrust)."""
        return max(self.scores.get(agent, 0.0) - self.distrust.get(agent, 0.0), 0.0)

    def normalized(self, agent: str) -> float:
        """Trust in [0, 1]: the agent's net share relative to a fair share, capped at 1.

        ``t_i × n`` is 1 for an agent holding exactly 1/n of the global trust; honest
        agents in a healthy network hold at least that, and colluders that only rate
        each other hold far less. Capping at 1 makes it a score usable beside the spec's
        [0, 1] scores (routing multiplies it with fitness).
        """
        n = len(self.scores)
        if n == 0:
            return 0.0
        return min(1.0, self.net(agent) * n)


def local_trust(raw: Graph) -> dict[str, dict[str, float]]:
    """Normalised local trust c_ij = max(s_ij, 0) / Σ_j max(s_ij, 0) (EigenTrust's C matrix).

    Rows whose positive mass is 0 are left out: such a rater trusts nobody and its share
    of trust goes to the pre-trusted distribution instead (EigenTrust's rule), which is
    what keeps a lying rater from steering anything.
    """
    out: dict[str, dict[str, float]] = {}
    for rater in sorted(raw):
        row = {ratee: max(float(v), 0.0) for ratee, v in raw[rater].items() if ratee != rater}
        total = math.fsum(row[k] for k in sorted(row))
        if total <= 0.0:
            continue
        out[rater] = {ratee: row[ratee] / total for ratee in sorted(row) if row[ratee] > 0.0}
    return out


def one_step_distrust(raw: Graph, trust: Mapping[str, float]) -> dict[str, float]:
    """Distrust d_j = Σ_i t_i × max(-s_ij, 0) / Σ_k |s_ik|: trusted raters' bad experiences, one step.

    EigenTrust clips negative evidence to 0, so an agent that fails half of the time only
    needs *some* trusted rater to have seen a success; its failures cost it nothing. Guha,
    Kumar, Raghavan and Tomkins ("Propagation of trust and distrust", WWW 2004) found
    distrust best propagated a single step from the trust vector: each rater spends its
    trust over the absolute value of its evidence, and the negative part lands as
    distrust on the ratee. A rater with no trust (a colluder the network does not trust)
    casts no distrust, so a group cannot sink honest agents by reporting them badly.
    """
    out: dict[str, list[float]] = {}
    for rater in sorted(raw):
        share = trust.get(rater, 0.0)
        if share <= 0.0:
            continue
        row = {ratee: float(v) for ratee, v in raw[rater].items() if ratee != rater}
        total = math.fsum(abs(row[k]) for k in sorted(row))
        if total <= 0.0:
            continue
        for ratee in sorted(row):
            if row[ratee] < 0.0:
                out.setdefault(ratee, []).append(share * -row[ratee] / total)
    return {ratee: math.fsum(parts) for ratee, parts in sorted(out.items())}


def eigentrust(raw: Graph, *, agents: Iterable[str] = (), pretrusted: Iterable[str] = (),
               damping: float = EIGEN_DAMPING, tolerance: float = EIGEN_TOLERANCE,
               max_iterations: int = EIGEN_MAX_ITERATIONS, distrust: bool = True) -> EigenTrustResult:
    """Global trust by EigenTrust (Kamvar, Schlosser, Garcia-Molina 2003) with pre-trusted agents.

    ``raw[i][j]`` is i's local evidence about j (positive minus negative; negatives are
    clipped to 0). ``t = (1 - a) Cᵀ t + a p`` is iterated from ``t₀ = p`` until the L1
    change is below ``tolerance``; ``p`` is uniform over ``pretrusted`` (uniform over all
    agents when none are given — plain EigenTrust, which a colluding group can game far
    more easily). Why it resists a group rating itself up: trust is *received*, not
    claimed; the group's mutual ratings only redistribute the mass that enters the
    group from outside (edges from honest agents and the ``a × p`` teleport to
    pre-trusted agents, never to the group), so the group's total stays bounded by what
    honest raters give it, however many ratings it writes about itself. With
    ``distrust`` the result also carries ``one_step_distrust`` of the converged vector,
    which ``normalized`` subtracts (a group that behaves well only part of the time).
    """
    if not 0.0 <= damping <= 1.0:
        raise ValueError(f"damping must be in [0, 1], got {damping}")
    c = local_trust(raw)
    names = set(agents) | set(raw) | {j for row in raw.values() for j in row}
    pre = sorted(set(pretrusted) & names) if pretrusted else []
    names |= set(pre)
    order = sorted(names)
    if not order:
        return EigenTrustResult({}, 0, True, ())
    base = pre or order
    p = {name: (1.0 / len(base) if name in set(base) else 0.0) for name in order}
    t = dict(p)
    converged = False
    iterations = 0
    for iterations in range(1, max_iterations + 1):  # noqa: B007 - the count is reported
        incoming: dict[str, list[float]] = {name: [] for name in order}
        dangling: list[float] = []
        for rater in order:
            share = t[rater]
            if share == 0.0:
                continue
            row = c.get(rater)
            if row is None:
                dangling.append(share)  # a rater that trusts nobody hands its share to p
                continue
            for ratee, weight in row.items():
                incoming[ratee].append(share * weight)
        lost = math.fsum(dangling)
        nxt = {name: (1.0 - damping) * (math.fsum(incoming[name]) + lost * p[name]) + damping * p[name]
               for name in order}
        delta = math.fsum(abs(nxt[name] - t[name]) for name in order)
        t = nxt
        if delta < tolerance:
            converged = True
            break
    total = math.fsum(t[name] for name in order)
    scores = {name: t[name] / total for name in order} if total > 0 else t
    return EigenTrustResult(scores, iterations, converged, tuple(pre),
                            one_step_distrust(raw, scores) if distrust else {})


__all__ = [
    "EIGEN_DAMPING",
    "MAX_PATH_DEPTH",
    "PATH_PRUNE",
    "EigenTrustResult",
    "TrustPath",
    "eigentrust",
    "local_trust",
    "one_step_distrust",
    "transitive_trust",
]
