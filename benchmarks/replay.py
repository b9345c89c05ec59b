"""Replay benchmark: raw consume vs read + verify + decode + fold over the same signed log.

One run, one broker, one log, so the ratios compare like with like:

* raw consume — confluent-kafka ``Consumer.consume()`` with assigned partitions, counting
  messages (what any Kafka reader pays);
* read + verify + decode — the verifier and every authenticated payload decoded, no fold;
* replay — ``read_records`` → ``Engine.feed`` (verify seals and chains, decode every
  authenticated payload, fold it into the registry projection in memory): what
  ``--from-log`` queries and the determinism check run;
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
from collections.abc import Iterator
from typing import Any

from common import machine  # benchmarks/common.py (scripts run from benchmarks/)
from confluent_kafka import Consumer, TopicPartition

from swarmlog.infra.broker import EmbeddedBroker
from swarmlog.infra.topics import ensure_topics
from swarmlog.projections.engine import Engine
from swarmlog.projections.registry import RegistryProjection
from swarmlog.streams.identity import Identity
from swarmlog.streams.producer import EventProducer
from swarmlog.streams.reader import plan_ranges, read_records

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


def heartbeat(agent: str, i: int) -> dict[str, Any]:
    return {"agent_id": agent, "health_score": 0.9 + (i % 10) / 100, "current_load": i % 17,
            "latency_ms": 12.5 + (i % 50), "reliability": 0.99, "max_concurrency": 32, "interval_ms": 5000,
            "resources": {"cpu": 0.42, "mem_gb": 3.5}}


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
            producer.produce_many("agents.heartbeat", [heartbeat(a, i + k) for k, a in enumerate(chunk)],
                                  subjects=chunk, topic=topic)
            done += n
            i += n


def raw_consume(bootstrap: str, topics: list[str]) -> tuple[int, float]:
    ranges = plan_ranges(bootstrap, topics)
    ends = {(r.topic, r.partition): r.stop for r in ranges}
    total = sum((r.stop or 0) - r.start for r in ranges)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4()}",
                         "enable.auto.commit": False, "fetch.max.bytes": 52428800,
                         "queued.max.messages.kbytes": 262144})
    start = time.perf_counter()
    consumer.assign([TopicPartition(r.topic, r.partition, r.start) for r in ranges])
    count = 0
    while count < total:
        for msg in consumer.consume(10000, 0.5):
            if msg.error() is None and msg.offset() < ends[(msg.topic(), msg.partition())]:  # type: ignore[index,operator]
                msg.value()
                count += 1
    elapsed = time.perf_counter() - start
    consumer.close()
    return count, count / elapsed


def verify_decode(bootstrap: str, topics: list[str]) -> float:
    """read + verify + decode, no fold (the figure benchmarks/ingest.py reports as read back)."""
    from swarmlog.streams.verify import Status, Verifier

    verifier = Verifier()
    start = time.perf_counter()
    count = 0
    for record in read_records(bootstrap, plan_ranges(bootstrap, topics)):
        for verdict in verifier.feed(record):
            if verdict.status is Status.AUTHENTICATED and verdict.event is not None:
                verdict.event.decode_payload()
        count += 1
    verifier.finish()
    return count / (time.perf_counter() - start)


def replay(bootstrap: str, topics: list[str]) -> tuple[int, float, dict[str, int]]:
    engine = Engine([RegistryProjection()])
    start = time.perf_counter()
    count = 0
    feed = engine.feed
    for record in read_records(bootstrap, plan_ranges(bootstrap, topics)):
        feed(record)
        count += 1
    engine.finish()
    elapsed = time.perf_counter() - start
    return count, count / elapsed, engine.counts


def audit(bootstrap: str, topics: list[str]) -> tuple[int, float, bool]:
    from swarmlog.infra.audit import run_audit

    start = time.perf_counter()
    report = run_audit(bootstrap, topics)
    elapsed = time.perf_counter() - start
    return report.records, report.records / elapsed, report.ok


def in_memory(bootstrap: str, topics: list[str], profile: bool) -> float:
    records = list(read_records(bootstrap, plan_ranges(bootstrap, topics)))
    engine = Engine([RegistryProjection()])
    profiler = cProfile.Profile() if profile else None
    start = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    for record in records:
        engine.feed(record)
    engine.finish()
    if profiler is not None:
        profiler.disable()
    elapsed = time.perf_counter() - start
    if profiler is not None:
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(25)
    return len(records) / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000, help="events in the log (default 200000)")
    parser.add_argument("--agents", type=int, default=1000, help="distinct agents (default 1000)")
    parser.add_argument("--profile", action="store_true", help="cProfile the in-memory pass (to stderr)")
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
        raw_consume(bootstrap, topics)  # warm the broker's caches so the first measured pass is not penalised
        records, raw_rate = raw_consume(bootstrap, topics)
        results.update({"records": records, "raw_consume_per_s": raw_rate})
        print(f"log: {records} records ({args.events} events + seals); raw consume {raw_rate:,.0f}/s",
              file=sys.stderr)
        vd_rate = verify_decode(bootstrap, topics)
        results.update({"verify_decode_per_s": vd_rate, "verify_decode_ratio_to_raw": vd_rate / raw_rate})
        print(f"read + verify + decode: {vd_rate:,.0f}/s ({vd_rate / raw_rate:.0%} of raw)", file=sys.stderr)
        _count, replay_rate, counts = replay(bootstrap, topics)
        results.update({"replay_per_s": replay_rate, "replay_ratio_to_raw": replay_rate / raw_rate,
                        "replay_counts": counts})
        print(f"read + verify + decode + fold: {replay_rate:,.0f}/s ({replay_rate / raw_rate:.0%} of raw); "
              f"{counts}", file=sys.stderr)
        _count, audit_rate, ok = audit(bootstrap, topics)
        results.update({"audit_per_s": audit_rate, "audit_ratio_to_raw": audit_rate / raw_rate, "audit_ok": ok})
        print(f"audit (also Merkle roots, all domains): {audit_rate:,.0f}/s ({audit_rate / raw_rate:.0%} of raw), "
              f"clean={ok}", file=sys.stderr)
        memory_rate = in_memory(bootstrap, topics, args.profile)
        results["in_memory_verify_decode_fold_per_s"] = memory_rate
        print(f"in memory (no Kafka) verify + decode + fold: {memory_rate:,.0f}/s", file=sys.stderr)
    print(json.dumps(results, indent=2))
    if args.json_path:
        with open(args.json_path, "w") as fh:
            json.dump(results, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
