"""Replay benchmark: raw consume vs read + verify + decode + fold over the same signed log.

One run, one broker, one log, so the ratios compare like with like:

* raw consume — confluent-kafka ``Consumer.consume()`` with assigned partitions, counting
  messages (what any Kafka reader pays);
* read + verify + decode — the verifier and every authenticated payload decoded, no fold;
* replay — ``read_record_batches`` → ``Engine.feed_many`` (verify seals and chains, decode every
  authenticated payload, fold it into the registry projection in memory): what
  ``--from-log`` queries and the determinism check run (``engine.replay``);
* audit — ``run_audit``: the same plus per-lane Merkle roots, all domains;
* in-memory — the same engine over records already in memory (no Kafka): the pure-Python
  ceiling of the verify/decode/fold path.

The log: ``--agents`` agents (default 1000) each register once, then heartbeats (the
highest-volume event type) up to ``--events``, produced with ``produce_many`` and sealed
every 1024 events, over 6 partitions.

Usage: ``python benchmarks/replay.py [--events 200000] [--json out.json] [--profile]``. Uses
``SWARMLOG_BOOTSTRAP`` when set, else starts an embedded broker for the run.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import os
import pstats
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from common import machine  # benchmarks/common.py (scripts run from benchmarks/)
from confluent_kafka import Consumer, TopicPartition

from swarmlog.infra.broker import EmbeddedBroker
from swarmlog.infra.topics import ensure_topics
from swarmlog.projections.engine import Engine
from swarmlog.projections.registry import RegistryProjection
from swarmlog.streams.identity import Identity
from swarmlog.streams.producer import EventProducer
from swarmlog.streams.reader import plan_ranges, read_record_batches, read_records

PARTITIONS = 6
BULK = 1024


@contextlib.contextmanager
def broker() -> Iterator[str]:
    configured = os.environ.get("SWARMLOG_BOOTSTRAP")
    if configured:
        yield configured
        return
    with EmbeddedBroker(state_dir=None) as embedded:
        yield embedded.bootstrap


def registered(agent: str) -> dict[str, Any]:
    return {"agent_id": agent, "address": "eu-west-1.aws.example:7000", "capabilities": ["ml.inference"],
            "max_concurrency": 16, "region": "eu-west-1", "cloud": "aws", "health_score": 1.0,
            "latency_ms": 20.0, "reliability": 0.99, "metadata": {}}


def heartbeat(agent: str, i: int, rnd: int = 0) -> dict[str, Any]:
    """Heartbeat ``i`` of the log, the agent's ``rnd``-th.

    Like a real agent's: a health score that is the agent's own and steady, and a fresh
    latency measurement each time (±5 % jitter around the agent's own level). Why the
    jitter matters: the registry skips the fitness recomputation of a heartbeat that
    repeats the agent's self-report, so a log of identical heartbeats (what ``i`` alone gave,
    1 000 agents being a multiple of 10 and 50) made the fold look cheaper than on a real log.
    """
    level = 12.5 + (i % 50)
    jitter = ((7 * rnd + i) % 11 - 5) / 100
    return {"agent_id": agent, "health_score": 0.9 + (i % 10) / 100, "current_load": i % 17,
            "latency_ms": round(level * (1 + jitter), 3), "reliability": 0.99, "max_concurrency": 32,
            "interval_ms": 5000, "resources": {"cpu": 0.42, "mem_gb": 3.5}}


def produce_log(bootstrap: str, topic: str, trust: str, events: int, agents: int) -> None:
    identity = Identity.generate("bench-replay")
    names = [f"agent-{i:05d}" for i in range(agents)]
    with EventProducer(identity, bootstrap, identity_topic=trust, seal_batch=BULK, seal_interval_ms=600_000,
                       background_seal=False) as producer:
        producer.produce_many("agents.registered", [registered(a) for a in names], subjects=names, topic=topic)
        done = agents
        i = 0
        while done < events:
            n = min(BULK, events - done)
            chunk = [names[(i + k) % agents] for k in range(n)]
            beats = [heartbeat(a, i + k, (i + k) // agents) for k, a in enumerate(chunk)]
            producer.produce_many("agents.heartbeat", beats, subjects=chunk, topic=topic)
            done += n
            i += n


def raw_consume(bootstrap: str, topics: list[str]) -> int:
    ranges = plan_ranges(bootstrap, topics)
    ends = {(r.topic, r.partition): r.stop for r in ranges}
    total = sum((r.stop or 0) - r.start for r in ranges)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4()}",
                         "enable.auto.commit": False, "fetch.max.bytes": 52428800,
                         "queued.max.messages.kbytes": 262144})
    consumer.assign([TopicPartition(r.topic, r.partition, r.start) for r in ranges])
    count = 0
    while count < total:
        for msg in consumer.consume(10000, 0.5):
            if msg.error() is None and msg.offset() < ends[(msg.topic(), msg.partition())]:
                msg.value()
                count += 1
    consumer.close()
    return count


def verify_decode(bootstrap: str, topics: list[str]) -> int:
    """read + verify + decode, no fold (the figure benchmarks/ingest.py reports as read back)."""
    from swarmlog.streams.verify import Status, Verifier

    verifier = Verifier()
    count = 0
    for records in read_record_batches(bootstrap, plan_ranges(bootstrap, topics)):
        for verdict in verifier.feed_many(records):
            if verdict.status is Status.AUTHENTICATED and verdict.event is not None:
                verdict.event.decode_payload()
        count += len(records)
    verifier.finish()
    return count


def replay(bootstrap: str, topics: list[str]) -> int:
    engine = Engine([RegistryProjection()])
    count = 0
    feed_many = engine.feed_many
    for records in read_record_batches(bootstrap, plan_ranges(bootstrap, topics)):
        feed_many(records)
        count += len(records)
    engine.finish()
    if engine.counts.get("applied", 0) + engine.counts.get("not-folded", 0) != engine.counts.get("authenticated"):
        raise SystemExit(f"replay did not fold every event: {engine.counts}")
    return count


def audit(bootstrap: str, topics: list[str]) -> int:
    from swarmlog.infra.audit import run_audit

    # the bench topic plays the role of `agents`: the registry is rebuilt from it
    report = run_audit(bootstrap, topics, domains=[("registry", topics[1:], lambda: [RegistryProjection()])])
    if "registry" not in report.projections:
        raise SystemExit("the audit did not rebuild the registry")
    if not report.ok:
        raise SystemExit(f"the benchmark log does not audit clean: {report.findings[:3]}")
    return report.records


def in_memory_pass(records: list[Any]) -> int:
    engine = Engine([RegistryProjection()])
    engine.feed_many(records)
    engine.finish()
    return len(records)


def breakdown(records: list[Any]) -> dict[str, float]:
    """CPU microseconds per record of each step, in memory (best of 2): where the time goes.

    The steps run the batch path replay uses (``feed_many``, chunks of 4096 records);
    ``engine_registry_fold_per_record`` is the last step through ``Engine.feed`` one record at a
    time (what the live workers call), for comparison with earlier runs.
    """
    from typing import ClassVar

    from swarmlog.projections.base import Derived, EventContext, Projection, Stores
    from swarmlog.streams.verify import Verifier

    class Noop(Projection):
        name: ClassVar[str] = "noop"
        event_types: ClassVar[frozenset[str]] = frozenset({"agents.heartbeat", "agents.registered"})

        def apply(self, stores: Stores, ctx: EventContext, payload: dict[str, Any]) -> list[Derived]:
            return []

    chunks = [records[i:i + 4096] for i in range(0, len(records), 4096)]

    def verify() -> int:
        verifier = Verifier()
        for chunk in chunks:
            verifier.feed_many(chunk)
        return len(records)

    def verify_decode() -> int:
        verifier = Verifier()
        for chunk in chunks:
            for verdict in verifier.feed_many(chunk):
                if verdict.event is not None:
                    verdict.event.decode_payload()
        return len(records)

    def engine(projection: Callable[[], Projection]) -> Callable[[], int]:
        def run() -> int:
            e = Engine([projection()])
            for chunk in chunks:
                e.feed_many(chunk)
            return len(records)
        return run

    def per_record() -> int:
        e = Engine([RegistryProjection()])
        for record in records:
            e.feed(record)
        return len(records)

    steps = {"verify": verify, "verify_decode": verify_decode, "engine_noop_fold": engine(Noop),
             "engine_registry_fold": engine(RegistryProjection), "engine_registry_fold_per_record": per_record}
    out: dict[str, float] = {}
    for name, fn in steps.items():
        best = max(measure(fn)[1] for _ in range(2))  # records per CPU second
        out[name] = 1e6 / best
    return out


def measure(fn: Callable[[], int]) -> tuple[float, float]:
    """(records per wall second, records per CPU second of this process, all threads)."""
    wall, cpu = time.perf_counter(), time.process_time()
    n = fn()
    return n / (time.perf_counter() - wall), n / (time.process_time() - cpu)


STAGES = ("raw_consume", "verify_decode", "replay", "audit", "in_memory")
LABELS = {"raw_consume": "raw consume (confluent-kafka)", "verify_decode": "read + verify + decode",
          "replay": "read + verify + decode + fold", "audit": "audit (+ Merkle roots, all domains)",
          "in_memory": "in memory: verify + decode + fold"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000, help="events in the log (default 200000)")
    parser.add_argument("--agents", type=int, default=1000, help="distinct agents (default 1000)")
    parser.add_argument("--repeat", type=int, default=2, help="interleaved rounds; the best of each is kept")
    parser.add_argument("--profile", action="store_true", help="cProfile one in-memory pass (to stderr)")
    parser.add_argument("--json", dest="json_path", help="also write the results as JSON here")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"machine": machine(), "events": args.events, "agents": args.agents}
    with broker() as bootstrap:
        run_id = uuid.uuid4().hex[:8]
        topic, trust = f"bench-replay-{run_id}", f"bench-replay-trust-{run_id}"
        ensure_topics(bootstrap, {topic: PARTITIONS, trust: 1})
        start = time.perf_counter()
        produce_log(bootstrap, topic, trust, args.events, args.agents)
        results["produce_seconds"] = time.perf_counter() - start
        topics = [trust, topic]
        records = list(read_records(bootstrap, plan_ranges(bootstrap, topics)))  # also warms the broker
        results["records"] = len(records)
        print(f"log: {len(records)} records ({args.events} events + identity + seals)", file=sys.stderr)
        fns: dict[str, Callable[[], int]] = {
            "raw_consume": lambda: raw_consume(bootstrap, topics),
            "verify_decode": lambda: verify_decode(bootstrap, topics),
            "replay": lambda: replay(bootstrap, topics),
            "audit": lambda: audit(bootstrap, topics),
            "in_memory": lambda: in_memory_pass(records),
        }
        best: dict[str, tuple[float, float]] = {}
        for _round in range(args.repeat):  # interleaved, so load changes hit every stage alike
            for name in STAGES:
                wall, cpu = measure(fns[name])
                old = best.get(name, (0.0, 0.0))
                best[name] = (max(old[0], wall), max(old[1], cpu))
        raw_wall, raw_cpu = best["raw_consume"]
        for name in STAGES:
            wall, cpu = best[name]
            results[name] = {"per_s": wall, "per_cpu_s": cpu, "ratio_to_raw": wall / raw_wall,
                             "cpu_ratio_to_raw": cpu / raw_cpu}
            print(f"{LABELS[name]:<38}: {wall:>9,.0f}/s ({wall / raw_wall:4.0%} of raw) | per CPU second "
                  f"{cpu:>9,.0f} ({cpu / raw_cpu:4.0%})", file=sys.stderr)
        steps = breakdown(records)
        results["cpu_us_per_record_in_memory"] = steps
        print("CPU µs per record, in memory: " + ", ".join(f"{k} {v:.1f}" for k, v in steps.items()),
              file=sys.stderr)
        if args.profile:
            profiler = cProfile.Profile()
            profiler.runcall(in_memory_pass, records)
            pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(25)
    print(json.dumps(results, indent=2))
    if args.json_path:
        with open(args.json_path, "w") as fh:
            json.dump(results, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
