"""Capability lookup benchmark: the registry's inverted index at 1 M agents (DESIGN.md §5, target p99 < 1 ms).

Builds a registry of ``--agents`` agents over ``--capabilities`` capability tags (each
agent serves ``--caps-per-agent`` of them, default 1–3 uniformly, so a capability has
≈ 2 × agents / capabilities agents). Registrations either go through
``RegistryProjection.apply`` (``--build fold``: the reducer code path, minus envelope
decoding and the idempotence marks) or are written directly in the projection's layout
(``--build direct``, the default at 1 M: folding keeps every ``cap/``/``fit/`` list sorted
insert by insert, an O(k) copy per write, which takes minutes at this size; the run
first checks, on 3 000 agents, that the direct build equals the fold key for key).
Then 10 % of the agents heartbeat (new health, reported latency and load), n/5
commands.routed events raise loads and n/10 receipts for them lower loads and feed the
receipt buckets (latency, reliability) — all always folded through the reducer. Agents register over
31.5 s of event time with a 30 s ttl, so ≈ 5 % have expired at the end.

It times ``--lookups`` queries of a random capability, in-process, three ways:

* ``lookup``: ``find_by_capability`` — every live agent serving the capability (index
  read, one record read per indexed agent, liveness filter): O(k), k ≈ 2 000 here;
* ``lookup+best_fit``: ``best_fit`` — the best routable live agent, answered from the
  ``fit/<capability>`` view (routable agents pre-sorted by fitness): O(1) in k;
* ``lookup+choose``: ``find_by_capability`` + ``routing.choose(..., "BEST_FIT", 0)`` — the
  router's full, auditable decision (health/capacity screen, fitness recomputed).

Usage: ``python benchmarks/registry_lookup.py [--agents 1000000] [--json out.json]``.
Prints one JSON document and one human line.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import sys
import time
from collections.abc import Callable
from typing import Any

from common import machine  # benchmarks/common.py (scripts run from benchmarks/)

from swarmlog.projections.base import EventContext, MemoryStore, Stores
from swarmlog.projections.registry import (
    CLOCK_KEY,
    DEFAULT_TTL_MS,
    RegistryProjection,
    best_fit,
    find_by_capability,
    fit_bucket,
    fit_key,
    fitness,
    view_entry,
)
from swarmlog.projections.registry import measure as measure_agent
from swarmlog.projections.routing import choose

T0 = 1_750_000_000_000
SPREAD_MS = 31_500  # registrations spread over this much event time: ≈ 5 % older than the 30 s ttl


def agent_id(i: int) -> str:
    return f"did:key:z6Mk{i:010d}"


def capability(c: int) -> str:
    return f"domain{c % 37:02d}.action{c:04d}"


Population = list[tuple[str, list[str], dict[str, Any]]]


def plan(agents: int, capabilities: int, seed: int, caps_per_agent: tuple[int, int] = (1, 3)) -> Population:
    """Deterministic agent population: id, capabilities, registration fields."""
    rng = random.Random(seed)
    out = []
    low, high = caps_per_agent
    for i in range(agents):
        caps = sorted({capability(rng.randrange(capabilities)) for _ in range(rng.randint(low, high))})
        out.append((agent_id(i), caps, {
            "health_score": round(rng.uniform(0.3, 1.0), 3), "latency_ms": round(rng.uniform(2.0, 800.0), 1),
            "reliability": round(rng.uniform(0.5, 1.0), 3), "max_concurrency": rng.choice((4, 8, 16, 64)),
        }))
    return out


def registration(i: int, n: int, aid: str, caps: list[str], fields: dict[str, Any]) -> tuple[EventContext,
                                                                                             dict[str, Any]]:
    ctx = EventContext("", "agents.registered", aid, aid, T0 + i * SPREAD_MS // n, "agents/0", i, "bench")
    return ctx, {"agent_id": aid, "address": f"10.0.{i >> 8 & 255}.{i & 255}:7000", "capabilities": caps, **fields}


def register_fold(population: Population, progress: Callable[[str], None]) -> MemoryStore:
    """Every registration folded through ``RegistryProjection.apply``."""
    store = MemoryStore()
    stores = Stores(store)
    projection = RegistryProjection(DEFAULT_TTL_MS)
    n = len(population)
    for i, (aid, caps, fields) in enumerate(population):
        projection.apply(stores, *registration(i, n, aid, caps, fields))
        if i % 100_000 == 0 and i:
            progress(f"  folded {i:,} registrations")
    return store


def register_direct(population: Population, progress: Callable[[str], None]) -> MemoryStore:
    """The state folding the registrations gives, written directly (checked by ``self_check``).

    Records are the reducer's own output for one registration with the same fields, with
    the per-agent values swapped in; the ``cap/`` and ``fit/`` lists are sorted once
    instead of being kept sorted insert by insert (the O(k)-per-write part of folding).
    """
    projection = RegistryProjection(DEFAULT_TTL_MS)
    store = MemoryStore()
    data = store.data
    index: dict[str, list[str]] = {}
    views: dict[str, list[list[Any]]] = {}
    n = len(population)
    for i, (aid, caps, fields) in enumerate(population):
        ctx, payload = registration(i, n, aid, caps, fields)
        if i == 0:
            scratch = MemoryStore()
            projection.apply(Stores(scratch), ctx, {**payload, "capabilities": []})
            template = scratch.get("agent/" + aid)
        ts = ctx.timestamp_ms
        rec = {**template, "agent_id": aid, "address": payload["address"], "capabilities": caps,
               "max_concurrency": fields["max_concurrency"], "health": fields["health_score"],
               "reported_latency_ms": fields["latency_ms"], "reported_reliability": fields["reliability"],
               "seen_ms": ts, "registered_ms": ts}
        rec.update(measure_agent(rec, None))  # no observations yet: the self-reports
        rec["expires_ms"] = rec["last_seen_ms"] + DEFAULT_TTL_MS
        rec["fitness"] = fitness(rec)
        data["agent/" + aid] = rec
        entry = view_entry(rec)
        for cap in caps:
            index.setdefault(cap, []).append(aid)
            if entry is not None:
                views.setdefault(cap, []).append(entry)
        if i % 200_000 == 0 and i:
            progress(f"  wrote {i:,} records")
    for cap, ids in index.items():
        data["cap/" + cap] = sorted(ids)
    for cap, rows in views.items():
        buckets: dict[int, list[list[Any]]] = {}
        for row in sorted(rows):
            buckets.setdefault(fit_bucket(row[0]), []).append(row)
        data["fitb/" + cap] = sorted(buckets)
        for bucket, bucket_rows in buckets.items():
            data[fit_key(cap, bucket)] = bucket_rows
    data[CLOCK_KEY] = T0 + (n - 1) * SPREAD_MS // n
    return store


def self_check(seed: int) -> None:
    """The direct build must equal folding the same registrations, key for key."""
    population = plan(3_000, 50, seed)
    folded, direct = register_fold(population, lambda _t: None), register_direct(population, lambda _t: None)
    if folded.data != direct.data:
        differing = sorted(k for k in set(folded.data) | set(direct.data) if folded.data.get(k) != direct.data.get(k))
        raise SystemExit(f"direct build differs from the fold on {len(differing)} keys, e.g. {differing[:3]}")


def vary(store: MemoryStore, population: Population, seed: int) -> int:
    """Fold heartbeats (10 % of agents: new health, reported latency and load), routed commands (n/5)
    and receipts (n/10, for the first routed commands) through the reducer."""
    stores = Stores(store)
    projection = RegistryProjection(DEFAULT_TTL_MS)
    n = len(population)
    rng = random.Random(seed + 1)
    end = T0 + SPREAD_MS
    for j in range(n // 10):
        i = rng.randrange(n // 10, n)
        aid = population[i][0]
        maxc = population[i][2]["max_concurrency"]
        ctx = EventContext("", "agents.heartbeat", aid, aid, end - rng.randrange(1000), "agents/0", j, "bench-hb")
        projection.apply(stores, ctx, {"agent_id": aid, "health_score": round(rng.uniform(0.2, 1.0), 3),
                                       "current_load": rng.randrange(maxc + 1), "latency_ms": rng.uniform(2, 800),
                                       "reliability": None, "max_concurrency": None, "interval_ms": 0})
    routed_to = []
    for j in range(n // 5):
        aid = population[rng.randrange(n)][0]
        routed_to.append(aid)
        ctx = EventContext("", "commands.routed", "router", f"cmd-{j}", end, "commands/0", j, "bench-rt")
        projection.apply(stores, ctx, {"command_id": f"cmd-{j}", "agent_id": aid})
    for j in range(n // 10):
        aid = routed_to[j]
        finished = end - rng.randrange(600_000)  # over the last 10 minutes: several receipt buckets
        ctx = EventContext("", "commands.receipt", aid, f"cmd-{j}", end, "receipts/0", j, "bench-rc")
        projection.apply(stores, ctx, {"command_id": f"cmd-{j}", "agent_id": aid, "capability": "",
                                       "started_ms": finished - 100, "finished_ms": finished,
                                       "duration_ms": rng.randrange(5, 900), "success": rng.random() < 0.9,
                                       "timed_out": False, "error_rate": 0.0})
    return n // 10 + n // 5 + n // 10


def percentiles(samples_ns: list[int]) -> dict[str, float]:
    ordered = sorted(samples_ns)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6

    return {"p50_ms": round(at(0.50), 4), "p95_ms": round(at(0.95), 4), "p99_ms": round(at(0.99), 4),
            "max_ms": round(ordered[-1] / 1e6, 4), "mean_ms": round(sum(ordered) / len(ordered) / 1e6, 4)}


def measure(store: MemoryStore, caps: list[str], lookups: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed + 2)
    queries = [rng.choice(caps) for _ in range(lookups)]
    now = store.get(CLOCK_KEY)
    assert isinstance(now, int)

    def lookup(cap: str) -> object:
        return find_by_capability(store, cap, now)

    def lookup_best(cap: str) -> object:
        return best_fit(store, cap, now)

    def lookup_choose(cap: str) -> object:
        return choose(find_by_capability(store, cap, now), "BEST_FIT", 0)

    for cap in queries[:300]:  # the O(1) view and the router's O(k) decision must agree
        best = best_fit(store, cap, now)
        if (best["agent_id"] if best else None) != choose(find_by_capability(store, cap, now), "BEST_FIT", 0)[0]:
            raise SystemExit(f"best_fit and choose disagree on {cap}")

    results: dict[str, Any] = {}
    for name, fn in (("find_by_capability", lookup), ("best_fit", lookup_best),
                     ("find_by_capability+choose", lookup_choose)):
        for cap in queries[:200]:  # warm-up
            fn(cap)
        samples = []
        clock = time.perf_counter_ns
        for cap in queries:
            t = clock()
            fn(cap)
            samples.append(clock() - t)
        results[name] = percentiles(samples)
    sizes = [len(store.get("cap/" + cap) or []) for cap in queries]
    live = [len(find_by_capability(store, cap, now)) for cap in queries[:1000]]
    results["indexed_per_capability"] = {"mean": round(sum(sizes) / len(sizes), 1), "max": max(sizes)}
    results["live_per_lookup_mean"] = round(sum(live) / len(live), 1)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--agents", type=int, default=1_000_000)
    parser.add_argument("--capabilities", type=int, default=1_000)
    parser.add_argument("--caps-per-agent", default="1-3", help="range of capabilities per agent, e.g. 1-3 or 1-1")
    parser.add_argument("--lookups", type=int, default=10_000)
    parser.add_argument("--build", choices=("fold", "direct"), default="direct",
                        help="how registrations get into the store (heartbeats and routed events are always folded)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-gc-freeze", action="store_true",
                        help="leave the built registry in the collector's young generations")
    parser.add_argument("--json", help="also write the JSON result to this file")
    args = parser.parse_args(argv)

    def progress(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    t = time.perf_counter()
    low, _, high = args.caps_per_agent.partition("-")
    caps_per_agent = (int(low), int(high or low))
    population = plan(args.agents, args.capabilities, args.seed, caps_per_agent)
    caps = sorted({cap for _aid, agent_caps, _f in population for cap in agent_caps})
    progress(f"planned {args.agents:,} agents over {len(caps):,} capabilities in {time.perf_counter() - t:.1f} s")
    if args.build == "direct":
        self_check(args.seed)
        progress("self-check: the direct build equals the fold of the same registrations")
    t = time.perf_counter()
    store = (register_fold if args.build == "fold" else register_direct)(population, progress)
    register_s = time.perf_counter() - t
    t = time.perf_counter()
    folded = vary(store, population, args.seed)
    vary_s = time.perf_counter() - t
    build_s = register_s + vary_s
    del population
    gc.collect()
    if not args.no_gc_freeze:
        # A long-lived worker's registry is old-generation data; freezing it keeps full collections
        # from walking 1 M records in the middle of a query (what a tuned worker would do too).
        gc.freeze()
    progress(f"registrations ({args.build}) {register_s:.1f} s, {folded:,} folded updates {vary_s:.1f} s; "
             f"measuring {args.lookups:,} lookups")
    timings = measure(store, caps, args.lookups, args.seed)

    result = {
        "benchmark": "registry_lookup", "agents": args.agents, "capabilities": len(caps),
        "caps_per_agent": args.caps_per_agent,
        "lookups": args.lookups, "build": args.build, "register_s": round(register_s, 1),
        "folded_updates": folded, "folded_updates_per_s": round(folded / vary_s), "build_s": round(build_s, 1),
        "gc_frozen": not args.no_gc_freeze,
        "store_keys": len(store), "ttl_ms": DEFAULT_TTL_MS, **timings, "target_p99_ms": 1.0,
        "machine": machine(),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(text + "\n")
    lk, bf, ch = result["find_by_capability"], result["best_fit"], result["find_by_capability+choose"]

    def verdict(p99: float) -> str:
        return "meets" if p99 < 1.0 else "misses"

    print(f"registry_lookup: {args.agents:,} agents / {len(caps):,} capabilities "
          f"(≈{result['indexed_per_capability']['mean']:.0f} indexed, {result['live_per_lookup_mean']:.0f} live "
          f"per capability), registrations by {args.build}, {build_s:.0f} s to build. p50/p95/p99: "
          f"best_fit {bf['p50_ms']}/{bf['p95_ms']}/{bf['p99_ms']} ms ({verdict(bf['p99_ms'])} the 1 ms target); "
          f"find_by_capability (all live agents) {lk['p50_ms']}/{lk['p95_ms']}/{lk['p99_ms']} ms "
          f"({verdict(lk['p99_ms'])}); find+choose {ch['p50_ms']}/{ch['p95_ms']}/{ch['p99_ms']} ms; "
          f"on {result['machine']['cpu']} ({result['machine']['cores']} cores)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
