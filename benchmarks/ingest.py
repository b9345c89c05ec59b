"""Ingest benchmark: raw confluent-kafka produce vs swarmlog signed produce, and read-back.

One run, one broker, same payload sizes, so the ratios compare like with like:

* raw produce — ``Producer.produce()`` of pre-built values of the same size as a signed
  event, same producer settings (idempotent, acks=all, linger 5 ms);
* signed produce — ``EventProducer.produce()``: encode the payload, build the envelope,
  hash-chain it, send it, and seal every ``seal_batch`` events (Merkle root, Ed25519 +
  ML-DSA-65 signature, one seal record per lane), for several batch sizes;
* read-back — raw assigned-partition consume of the same topic, then consume + verify
  (seals, chains) + decode every payload;
* the bulk path and the read-back once more with the C speedups switched off
  (``SWARMLOG_SPEEDUPS=0``'s pure-Python path), so before/after come from the same run.
* authentication latency (``--latency-rates``): paced producers at several rates, for seal
  batches 1024 and 4096, the time from each event's record to the seal record that
  authenticates it — the price of a larger seal batch.

The machine is shared with the embedded broker: every timed step starts after a 1 s pause
(the broker finishes writing the previous step), and raw produce is measured again right
before the default-batch bulk row, whose ratio uses the faster of the two raw runs. That
target row is then measured ``--rounds`` times more, raw / signed / pure Python
interleaved (plus the old default seal batch 1024 when the default differs, and seals signed
on a signer thread), and the medians of the per-round ratios are reported (load swings
between rows otherwise decide the ratio).

Usage: ``python benchmarks/ingest.py [--events 100000] [--rounds 5] [--json out.json]``. Uses
``SWARMLOG_BOOTSTRAP`` when set, else starts an embedded broker for the run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

from common import machine  # benchmarks/common.py (scripts run from benchmarks/)
from confluent_kafka import Producer

from swarmlog.infra.broker import EmbeddedBroker
from swarmlog.infra.topics import ensure_topics
from swarmlog.streams import speedups
from swarmlog.streams.codec import SchemaStore
from swarmlog.streams.identity import Identity
from swarmlog.streams.producer import DEFAULT_SEAL_BATCH, EventProducer
from swarmlog.streams.reader import plan_ranges, read_records
from swarmlog.streams.verify import Status, Verifier

PARTITIONS = 6
BULK = 1000  # events per produce_many() call
OLD_DEFAULT_BATCH = 1024  # the default seal batch before 4096 was considered; kept in the rounds for comparison


EVENT_TYPE = "agents.heartbeat"  # the highest-volume event type of a running system


def heartbeat(i: int) -> dict[str, Any]:
    """An agent heartbeat, as every agent sends it every few seconds."""
    return {"agent_id": f"agent-{i % 1000:04d}", "health_score": 0.9 + (i % 10) / 100, "current_load": i % 17,
            "latency_ms": 12.5 + (i % 50), "reliability": 0.99, "max_concurrency": 32, "interval_ms": 5000,
            "resources": {"cpu": 0.42, "mem_gb": 3.5}}


@contextlib.contextmanager
def pure_python() -> Iterator[SchemaStore]:
    """The pure-Python path in this process: C speedups off, a schema store without C encoders."""
    saved = speedups.native
    speedups.native = None
    try:
        yield SchemaStore.from_directory()
    finally:
        speedups.native = saved


@contextlib.contextmanager
def broker() -> Iterator[str]:
    configured = os.environ.get("SWARMLOG_BOOTSTRAP")
    if configured:
        yield configured
        return
    with EmbeddedBroker(state_dir=None) as embedded:
        yield embedded.bootstrap


def producer_config(bootstrap: str) -> dict[str, Any]:
    return {"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 5,
            "batch.num.messages": 10000, "queue.buffering.max.messages": 1_000_000}


def bench_raw(bootstrap: str, topic: str, values: list[bytes], keys: list[bytes]) -> float:
    producer = Producer(producer_config(bootstrap))
    n = len(values)
    settle()
    start = time.perf_counter()
    produce = producer.produce
    for i in range(n):
        while True:
            try:
                produce(topic, values[i], keys[i], i % PARTITIONS)
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(60)
    return n / (time.perf_counter() - start)


def bench_signed(bootstrap: str, topic: str, trust: str, identity: Identity, n: int, seal_batch: int,
                 bulk: bool, store: SchemaStore | None = None, sign_in_background: bool = False) -> float:
    """Events/s from payload dicts to acknowledged records (close() seals and flushes).

    ``sign_in_background=True``: seals signed on the producer's signer thread (an option; the
    default signs on the producing thread), compared inside one run."""
    producer = EventProducer(identity, bootstrap, identity_topic=trust, seal_batch=seal_batch,
                             seal_interval_ms=60_000, store=store, sign_in_background=sign_in_background)
    producer.publish_identity()
    producer.partitions(topic)
    payloads = [heartbeat(i) for i in range(n)]
    settle()
    start = time.perf_counter()
    if bulk:
        for chunk in range(0, n, BULK):
            producer.produce_many(EVENT_TYPE, payloads[chunk:chunk + BULK], topic=topic)
    else:
        produce = producer.produce
        for payload in payloads:
            produce(EVENT_TYPE, payload, topic=topic)
    producer.close(60)
    return n / (time.perf_counter() - start)


def bench_breakdown(identity: Identity, n: int, store: SchemaStore | None = None,
                    seal_batch: int = DEFAULT_SEAL_BATCH) -> dict[str, float]:
    """Microseconds per event of each step of the signed path, measured in isolation (no Kafka).

    Chaining goes through ``append_many_into`` (what ``produce_many`` runs: references kept
    as columns); the seal step (Merkle roots, statement, Ed25519 + ML-DSA-65, seal records)
    is timed separately, amortised over ``seal_batch`` events."""
    from swarmlog.streams.chain import ChainWriter, EventRefs
    from swarmlog.streams.codec import default_store, encode_body

    store = store or default_store()
    entry = store.for_event_type(EVENT_TYPE)
    ident_entry = store.for_event_type("trust.identity")
    writer = ChainWriter(identity, store)
    writer.append(ident_entry, encode_body(ident_entry, writer.identity_payload()), identity.did, "t", 0, sign=True)
    payloads = [heartbeat(i) for i in range(n)]
    keys = [p["agent_id"].encode() for p in payloads]
    settle()
    encode = entry.encode_body
    encode_many = getattr(encode, "encode_many", None)  # the C encoder's batch call, as produce_many uses it
    start = time.perf_counter()
    bodies = encode_many(payloads) if encode_many is not None else [encode(p) for p in payloads]
    encode_us = (time.perf_counter() - start) / n * 1e6
    chain_s = seal_s = 0.0
    for chunk in range(0, n, seal_batch):
        refs = EventRefs("t", PARTITIONS)
        start = time.perf_counter()
        writer.append_many_into(refs, entry, bodies[chunk:chunk + seal_batch], keys[chunk:chunk + seal_batch], "t",
                                PARTITIONS)
        middle = time.perf_counter()
        writer.seal()
        seal_s += time.perf_counter() - middle
        chain_s += middle - start
    return {"payload_encode_us": encode_us, "chain_us": chain_s / n * 1e6, "seal_us": seal_s / n * 1e6,
            "chain_and_seal_us": (chain_s + seal_s) / n * 1e6}


def bench_read(bootstrap: str, topic: str, trust: str,
               pure_store: SchemaStore | None = None) -> tuple[float, float, int, float | None]:
    """Raw consume, then consume + verify + decode (and once more on the pure-Python path)."""
    ranges = plan_ranges(bootstrap, [topic])
    settle()
    start = time.perf_counter()
    count = sum(1 for _ in read_records(bootstrap, ranges))
    raw_rate = count / (time.perf_counter() - start)

    def verify_decode(store: SchemaStore | None) -> tuple[float, int]:
        verifier = Verifier(store=store)
        authenticated = 0
        settle()
        start = time.perf_counter()
        for record in read_records(bootstrap, ranges):
            for verdict in verifier.feed(record):
                if verdict.status is Status.AUTHENTICATED and verdict.event is not None:
                    verdict.event.decode_payload(store)
                    authenticated += 1
        verifier.finish()
        return count / (time.perf_counter() - start), authenticated

    verify_rate, authenticated = verify_decode(None)
    pure_rate = None
    if pure_store is not None:
        saved = speedups.native
        speedups.native = None
        try:
            pure_rate, _ = verify_decode(pure_store)
        finally:
            speedups.native = saved
    return raw_rate, verify_rate, authenticated, pure_rate


def bench_rounds(bootstrap: str, trust: str, identity: Identity, run_id: str, raw_topic: str,
                 raw_values: list[bytes], keys: list[bytes], n: int, rounds: int) -> dict[str, Any]:
    """The target row, robust to a shared machine: raw, signed (C, the default path, default
    seal batch), signed at the old default seal batch 1024 (when the default differs), signed
    with seals signed on a signer thread (C, ``sign_in_background=True``) and signed (pure
    Python) bulk ingest, interleaved ``rounds`` times; medians of the ratios."""
    batch = DEFAULT_SEAL_BATCH
    topic = f"bench-rounds-{run_id}"
    old_topic = f"bench-rounds-old-{run_id}"
    thread_topic = f"bench-rounds-thread-{run_id}"
    pure_topic = f"bench-rounds-pure-{run_id}"
    ensure_topics(bootstrap, {topic: PARTITIONS, old_topic: PARTITIONS, thread_topic: PARTITIONS,
                              pure_topic: PARTITIONS})
    compare_old = batch != OLD_DEFAULT_BATCH
    rows = []
    for index in range(rounds):
        raw = bench_raw(bootstrap, raw_topic, raw_values, keys)
        signed = bench_signed(bootstrap, topic, trust, identity, n, batch, True)
        row = {"raw_per_s": raw, "signed_per_s": signed, "ratio": signed / raw, "seal_batch": batch}
        if compare_old:
            old = bench_signed(bootstrap, old_topic, trust, identity, n, OLD_DEFAULT_BATCH, True)
            row.update({"signed_batch_1024_per_s": old, "batch_1024_ratio": old / raw})
        thread = bench_signed(bootstrap, thread_topic, trust, identity, n, batch, True, sign_in_background=True)
        row.update({"signed_thread_per_s": thread, "thread_ratio": thread / raw})
        if speedups.enabled():
            with pure_python() as store:
                pure = bench_signed(bootstrap, pure_topic, trust, identity, n, batch, True, store)
            row.update({"pure_python_per_s": pure, "pure_python_ratio": pure / raw})
        rows.append(row)
        print(f"round {index + 1}: raw {raw:,.0f}/s, signed produce_many (seal batch {batch}) {signed:,.0f}/s "
              f"({signed / raw:.0%})"
              + (f", seal batch 1024 {row['signed_batch_1024_per_s']:,.0f}/s ({row['batch_1024_ratio']:.0%})"
                 if compare_old else "")
              + f", seals signed on a signer thread {thread:,.0f}/s ({thread / raw:.0%})"
              + (f", pure Python {row['pure_python_per_s']:,.0f}/s ({row['pure_python_ratio']:.0%})"
                 if "pure_python_per_s" in row else ""), file=sys.stderr)
    summary: dict[str, Any] = {"rounds": rows, "seal_batch": batch,
                               "median_ratio": statistics.median(r["ratio"] for r in rows),
                               "median_thread_ratio": statistics.median(r["thread_ratio"] for r in rows),
                               "median_thread_vs_inline": statistics.median(
                                   r["signed_thread_per_s"] / r["signed_per_s"] for r in rows)}
    if compare_old:
        summary["median_batch_1024_ratio"] = statistics.median(r["batch_1024_ratio"] for r in rows)
        summary["median_default_vs_1024"] = statistics.median(
            r["signed_per_s"] / r["signed_batch_1024_per_s"] for r in rows)
    if speedups.enabled():
        summary["median_pure_python_ratio"] = statistics.median(r["pure_python_ratio"] for r in rows)
        summary["median_speedup"] = statistics.median(r["signed_per_s"] / r["pure_python_per_s"] for r in rows)
    print(f"target (produce_many, seal batch {batch}), medians: " + ", ".join(
        f"{k} {v:.2f}" for k, v in summary.items() if k not in ("rounds", "seal_batch")), file=sys.stderr)
    return summary


def bench_latency(bootstrap: str, trust: str, identity: Identity, run_id: str, seal_batch: int, rate: int,
                  seconds: float) -> dict[str, Any]:
    """Authentication latency: how long after an event is written its seal is written.

    ``rate`` events/s paced in 10 ms steps (0: as fast as ``produce_many`` goes, ``seconds``
    worth of the paced 50 k/s count), default time bound (``seal_interval_ms`` 200, seal timer
    thread on). Both times are Kafka record timestamps (set when the record is handed to
    the producer), read back and matched by the verifier: the latency of an event is the
    timestamp of the seal record that authenticates it minus its own. Broker delivery comes
    on top, the same for every record."""
    topic = f"bench-latency-{seal_batch}-{rate}-{run_id}"
    ensure_topics(bootstrap, {topic: PARTITIONS})
    total = int(rate * seconds) if rate else int(50_000 * seconds)
    payloads = [heartbeat(i) for i in range(total)]
    step = max(1, rate // 100) if rate else BULK
    with EventProducer(identity, bootstrap, identity_topic=trust, seal_batch=seal_batch) as producer:
        producer.publish_identity()
        producer.partitions(topic)
        settle()
        start = time.perf_counter()
        for index, chunk in enumerate(range(0, total, step)):
            if rate:
                delay = start + index * step / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            producer.produce_many(EVENT_TYPE, payloads[chunk:chunk + step], topic=topic)
        elapsed = time.perf_counter() - start
    verifier = Verifier()
    latencies: list[int] = []
    for record in read_records(bootstrap, plan_ranges(bootstrap, [topic])):
        for verdict in verifier.feed(record):
            if verdict.kind == "event" and verdict.status is Status.AUTHENTICATED:
                latencies.append(record.timestamp_ms - verdict.record.timestamp_ms)
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]  # noqa: E731
    return {"seal_batch": seal_batch, "offered_per_s": rate or None, "achieved_per_s": total / elapsed,
            "events": total, "authenticated": len(latencies), "p50_ms": pick(0.5), "p99_ms": pick(0.99),
            "max_ms": latencies[-1]}


def settle(seconds: float = 1.0) -> None:
    """Let the broker finish writing the previous run before timing the next one (shared CPUs)."""
    time.sleep(seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="events per signed run (default 100000)")
    default_batches = dict.fromkeys((1, 64, 256, 1024, 4096, DEFAULT_SEAL_BATCH))
    parser.add_argument("--batches", default=",".join(map(str, default_batches)), help="seal batch sizes to measure")
    parser.add_argument("--json", dest="json_path", help="also write the results as JSON here")
    parser.add_argument("--rounds", type=int, default=5,
                        help="interleaved raw / signed / pure-Python rounds for the target row (default 5)")
    parser.add_argument("--latency-rates", default="500,5000,20000,50000,0",
                        help="offered events/s for the authentication-latency runs, 0 = unpaced ('' to skip)")
    parser.add_argument("--latency-batches", default="1024,4096", help="seal batches of the latency runs")
    args = parser.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    identity = Identity.generate("bench")
    results: dict[str, Any] = {"machine": machine(), "events": args.events, "runs": []}
    with broker() as bootstrap:
        run_id = uuid.uuid4().hex[:8]
        trust = f"bench-trust-{run_id}"
        ensure_topics(bootstrap, {trust: 1})
        # size of a real signed event, so raw moves the same bytes
        probe_topic = f"bench-probe-{run_id}"
        ensure_topics(bootstrap, {probe_topic: PARTITIONS})
        with EventProducer(identity, bootstrap, identity_topic=trust) as probe:
            probe.produce(EVENT_TYPE, heartbeat(0), topic=probe_topic)
        probe_records = list(read_records(bootstrap, plan_ranges(bootstrap, [probe_topic])))
        size = len(probe_records[0].value)
        results["event_bytes"] = size
        raw_topic = f"bench-raw-{run_id}"
        ensure_topics(bootstrap, {raw_topic: PARTITIONS})
        values = [os.urandom(size) for _ in range(1000)]
        raw_values = [values[i % 1000] for i in range(args.events)]
        keys = [heartbeat(i)["agent_id"].encode() for i in range(args.events)]
        raw_rate = bench_raw(bootstrap, raw_topic, raw_values, keys)
        results["raw_produce_per_s"] = raw_rate
        print(f"raw confluent-kafka produce ({size} B): {raw_rate:,.0f} msg/s", file=sys.stderr)
        results["speedups"] = speedups.enabled()
        breakdown = bench_breakdown(identity, min(args.events, 50_000))
        breakdown["raw_produce_call_us"] = 1e6 / raw_rate
        results["breakdown_us_per_event"] = breakdown
        print(f"per event (seal batch {DEFAULT_SEAL_BATCH}): " + ", ".join(
            f"{k} {v:.2f}" for k, v in breakdown.items()), file=sys.stderr)
        if DEFAULT_SEAL_BATCH != OLD_DEFAULT_BATCH:
            old_breakdown = bench_breakdown(identity, min(args.events, 50_000), seal_batch=OLD_DEFAULT_BATCH)
            results["breakdown_us_per_event_batch_1024"] = old_breakdown
            print("per event (seal batch 1024): " + ", ".join(f"{k} {v:.2f}" for k, v in old_breakdown.items()),
                  file=sys.stderr)
        if speedups.enabled():
            with pure_python() as store:
                pure = bench_breakdown(identity, min(args.events, 50_000), store)
            results["breakdown_us_per_event_pure_python"] = pure
            print("per event, pure Python: " + ", ".join(f"{k} {v:.2f}" for k, v in pure.items()), file=sys.stderr)
        default_batch = DEFAULT_SEAL_BATCH
        for bulk in (False, True):
            api = "produce_many" if bulk else "produce"
            for batch in batches:
                n = min(args.events, 2_000) if batch == 1 else args.events
                topic = f"bench-signed-{api}-{batch}-{run_id}"
                ensure_topics(bootstrap, {topic: PARTITIONS})
                reference = raw_rate
                if bulk and batch == default_batch:
                    # the target row: raw once more right before it; the ratio uses the faster raw run
                    again = bench_raw(bootstrap, raw_topic, raw_values, keys)
                    results["raw_produce_again_per_s"] = again
                    reference = max(raw_rate, again)
                    print(f"raw confluent-kafka produce, again: {again:,.0f} msg/s", file=sys.stderr)
                rate = bench_signed(bootstrap, topic, trust, identity, n, batch, bulk)
                row: dict[str, Any] = {"api": api, "seal_batch": batch, "events": n, "per_s": rate,
                                       "ratio_to_raw": rate / reference, "speedups": speedups.enabled()}
                results["runs"].append(row)
                print(f"signed {api:>12}, seal batch {batch:>5}: {rate:,.0f} events/s "
                      f"({rate / reference:.0%} of raw)", file=sys.stderr)
                if bulk and batch == default_batch:
                    pure_store = None
                    if speedups.enabled():
                        pure_topic = f"bench-signed-pure-{run_id}"
                        ensure_topics(bootstrap, {pure_topic: PARTITIONS})
                        with pure_python() as pure_store:
                            pure_rate = bench_signed(bootstrap, pure_topic, trust, identity, n, batch, bulk,
                                                     pure_store)
                        results["runs"].append({"api": api, "seal_batch": batch, "events": n, "per_s": pure_rate,
                                                "ratio_to_raw": pure_rate / reference, "speedups": False})
                        print(f"signed {api:>12}, seal batch {batch:>5}, pure Python: {pure_rate:,.0f} events/s "
                              f"({pure_rate / reference:.0%} of raw)", file=sys.stderr)
                    raw_read, verify_read, authenticated, pure_read = bench_read(bootstrap, topic, trust, pure_store)
                    row.update({"raw_consume_per_s": raw_read, "verify_decode_per_s": verify_read,
                                "verify_ratio_to_raw_consume": verify_read / raw_read,
                                "authenticated": authenticated})
                    print(f"  read back: raw consume {raw_read:,.0f}/s, consume+verify+decode {verify_read:,.0f}/s "
                          f"({verify_read / raw_read:.0%}); authenticated {authenticated}", file=sys.stderr)
                    if pure_read is not None:
                        row.update({"verify_decode_pure_python_per_s": pure_read,
                                    "verify_pure_python_ratio_to_raw_consume": pure_read / raw_read})
                        print(f"  read back, pure Python: consume+verify+decode {pure_read:,.0f}/s "
                              f"({pure_read / raw_read:.0%})", file=sys.stderr)
        if args.rounds > 0:
            results["target_rounds"] = bench_rounds(bootstrap, trust, identity, run_id, raw_topic, raw_values, keys,
                                                    args.events, args.rounds)
        latency_rates = [int(r) for r in args.latency_rates.split(",") if r.strip()]
        results["auth_latency"] = []
        for batch in [int(b) for b in args.latency_batches.split(",") if b.strip()] if latency_rates else []:
            for rate in latency_rates:
                row = bench_latency(bootstrap, trust, identity, run_id, batch, rate, 2.0)
                results["auth_latency"].append(row)
                print(f"auth latency, seal batch {batch:>5}, offered {rate or 'max':>6}/s "
                      f"(achieved {row['achieved_per_s']:,.0f}/s): p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms, "
                      f"max {row['max_ms']} ms ({row['authenticated']}/{row['events']} authenticated)",
                      file=sys.stderr)
    print(json.dumps(results, indent=2))
    if args.json_path:
        with open(args.json_path, "w") as fh:
            json.dump(results, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
