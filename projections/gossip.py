"""Gossip (spec §2.2): epidemic spread with scoped TTLs, anti-entropy, compression.

Pure pieces: the TTL rule per scope, the relay step (what a relay of a
``swarm.message`` looks like), a link-quality topology (edges kept at quality ≥ 0.7),
real payload compression (zlib's DEFLATE, written as the schema's GZIP codec: a gzip
member), the spec's communication-overhead metric, and a seeded round-based simulation
that measures rounds and messages to reach 99 % of N agents.
"""

from __future__ import annotations

import gzip
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

TTL_BY_SCOPE: Mapping[str, int] = {"LOCAL_BROADCAST": 2, "REGIONAL_GOSSIP": 5, "GLOBAL_ALERT": 20}
LINK_QUALITY_THRESHOLD = 0.7
AVG_MESSAGE_BYTES = 500
MESSAGES_PER_SECOND = 10


def initial_ttl(scope: str) -> int:
    """The spec's TTL for a scope; newer scopes read as LOCAL_BROADCAST (the schema's rule)."""
    return TTL_BY_SCOPE.get(scope, TTL_BY_SCOPE["LOCAL_BROADCAST"])


def relay(message: Mapping[str, object], relayer: str) -> dict[str, object] | None:
    """The message as ``relayer`` re-emits it (hop + 1, ttl - 1), or None once ttl is spent.

    ``seen_by`` gains the relayer (anti-entropy: peers listed there are not sent it again).
    TTL never goes negative.
    """
    ttl = int(message["ttl"])  # type: ignore[call-overload]
    if ttl <= 0:
        return None
    seen = list(message.get("seen_by") or [])  # type: ignore[call-overload]
    if relayer not in seen:
        seen.append(relayer)
    return {**message, "ttl": ttl - 1, "hop": int(message.get("hop") or 0) + 1,  # type: ignore[call-overload]
            "seen_by": seen}


def compress(body: bytes) -> bytes:
    """GZIP (RFC 1952) with a fixed mtime so the same body always gives the same bytes."""
    return gzip.compress(body, compresslevel=6, mtime=0)


def decompress(content: bytes, codec: str) -> bytes:
    if codec == "NONE":
        return content
    if codec == "GZIP":
        return gzip.decompress(content)
    raise ValueError(f"compression {codec} is not supported by this reader")


def communication_overhead(edges: int, agents: int, avg_message_bytes: float = AVG_MESSAGE_BYTES,
                           frequency_hz: float = MESSAGES_PER_SECOND) -> float:
    """The spec's overhead: (edges × avg message size × frequency) / agents, in bytes/agent/s."""
    if agents <= 0:
        raise ValueError("agents must be positive")
    return edges * avg_message_bytes * frequency_hz / agents


# --------------------------------------------------------------------------- topology
def topology(n: int, *, seed: int, candidates: int = 10,
             threshold: float = LINK_QUALITY_THRESHOLD) -> dict[int, list[int]]:
    """Undirected graph: each agent probes ``candidates`` random peers (link quality U(0,1))
    and keeps the links of quality ≥ ``threshold`` (the spec's dynamic topology)."""
    rng = random.Random(seed)
    adj: dict[int, set[int]] = {i: set() for i in range(n)}
    for i in range(n):
        for _ in range(candidates):
            j = rng.randrange(n)
            if j != i and rng.random() >= threshold:
                adj[i].add(j)
                adj[j].add(i)
    return {i: sorted(peers) for i, peers in adj.items()}


@dataclass
class SpreadReport:
    agents: int
    rounds: int
    messages: int
    reached: int
    coverage: float
    edges: int
    history: list[int]  # agents reached after each round


def simulate_spread(adj: Mapping[int, Sequence[int]], *, origin: int = 0, scope: str = "GLOBAL_ALERT",
                    fanout: int = 3, seed: int = 0, target: float = 0.99, max_rounds: int = 200,
                    anti_entropy: bool = True) -> SpreadReport:
    """Round-based push gossip with TTL and anti-entropy.

    Each round every agent that received the message in the previous round (and has ttl
    left) relays it to ``fanout`` random neighbours not in the message's ``seen_by``
    (its path plus the peers the relayer already told). A push epidemic dies out leaving
    about e^-fanout of the agents uninformed, so once nothing is in flight, rounds of
    anti-entropy follow: every agent without the message asks one random neighbour (a
    request, plus a reply when the neighbour has it). Stops when ``target`` of the agents
    have it, when only unreachable (isolated) agents are left, or at ``max_rounds``. ``messages`` counts every
    send, duplicates included — the cost the network pays.
    """
    n = len(adj)
    rng = random.Random(seed)
    have = {origin}
    frontier: list[tuple[int, int, frozenset[int]]] = [(origin, initial_ttl(scope), frozenset({origin}))]
    told: dict[int, set[int]] = {}
    messages, rounds, history = 0, 0, [1]
    while len(have) < target * n and rounds < max_rounds:
        frontier = [f for f in frontier if f[1] > 0]  # a spent ttl is not relayed
        if not frontier and not anti_entropy:
            break
        rounds += 1
        nxt: list[tuple[int, int, frozenset[int]]] = []
        if not frontier:  # the push died out: anti-entropy round, every agent without it asks one peer
            for node in range(n):
                if node not in have and adj[node]:
                    peer = adj[node][rng.randrange(len(adj[node]))]
                    messages += 1
                    if peer in have:
                        messages += 1
                        nxt.append((node, 0, frozenset({node})))
            have.update(node for node, _, _ in nxt)
            frontier = []
            history.append(len(have))
            if not nxt and all(not adj[v] for v in range(n) if v not in have):
                break  # only isolated agents are left: nobody can reach them
            continue
        for node, ttl, seen in frontier:
            already = told.setdefault(node, set())
            choices = [p for p in adj[node] if p not in seen and p not in already]
            for peer in rng.sample(choices, min(fanout, len(choices))):
                already.add(peer)
                messages += 1
                if peer not in have:
                    have.add(peer)
                    nxt.append((peer, ttl - 1, seen | {peer}))
        frontier = nxt
        history.append(len(have))
    edges = sum(len(p) for p in adj.values()) // 2
    return SpreadReport(n, rounds, messages, len(have), len(have) / n if n else 0.0, edges, history)


def expected_log_rounds(n: int, fanout: int) -> float:
    """log_{fanout+1}(n): the rounds an ideal push epidemic needs — the growth law to compare with."""
    return math.log(n) / math.log(fanout + 1)
