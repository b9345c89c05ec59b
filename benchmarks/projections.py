"""Live projections benchmark: bare Faust agent vs naive table-per-event agent vs the swarmlog worker.

One run, one broker, one pre-produced log, so the ratios compare like with like. The log
is a registry + command-broker workload of real signed events (``EventProducer``: hash
chains, hybrid-signed in-band seals every ``seal_batch`` events): ``agents.registered``
for every agent, then ``agents.heartbeat``, ``commands.requested`` and
``commands.receipt`` interleaved. Then, each in its own fresh worker process and
consumer group, over the same topics (``agents``, ``commands``, ``receipts``):

* **bare** — a Faust agent that only counts the records it is given (no table, no
  decoding): the ceiling of any Faust agent. Measured twice: one event at a time
  (``async for``) and in ``take_events`` batches with manual acks (what swarmlog uses);
  the better of the two is the ceiling the targets refer to.
* **naive** — a Faust agent that decodes every record (envelope + payload; seal records
  as seals) and does one read-modify-write of a RocksDB table (``store=rocksdb://``,
  changelogged) per record: the DESIGN.md "naive" baseline.
* **swarmlog** — ``processors.app.create_app`` with the real domains: the registry replica
  folds ``agents`` + ``commands`` + ``receipts``, the coordination agent verifies and
  folds ``commands`` + ``receipts`` into the routing table, derives one signed
  ``commands.routed``/``route_failed`` per request (it is produced, and folded back by the
  agent and the replica, inside the measured window where it arrives before the end).
  Since 2026-11-23 its table writes are **direct** by default (``processors.app.DIRECT_CHANGELOG``:
  changelog delivered first, then one RocksDB ``WriteBatch`` per partition, ``runtime.DirectTable``).
* **swarmlog_faust_tables** — the same worker with the per-batch writes going through Faust's own
  table path (``DIRECT_CHANGELOG = False``, the default until then), on its own copy of the log.
* **swarmlog_per_event** — the same worker with the per-batch table writes undone (every
  write straight to the table and its changelog, changelog sent without linger), on its
  own copy of the log produced from the same seed (same events; ids and signatures
  differ): the before/after of ``runtime.WriteBehindStore``.

Measured window, per variant: from the first record the worker is handed (Faust's
``on_message_in`` sensor call; for swarmlog also the replica's first record) to the moment
the last pre-produced record is *done*: acknowledged by the agent (``Consumer.ack``
returned True for every offset of every source partition up to the pre-produced end — for
swarmlog, of every source topic its domains' agents consume (``worker_topics``) —
for swarmlog an ack means decided and its outputs delivered), and for swarmlog also
folded by the registry replica (every pre-produced record of the three topics). The
worker process stamps those moments itself and writes them to a JSON file. The swarmlog
worker's replica is started when the group's first rebalance completes (not at process
start) and the window opens then, so its catch-up is inside the window instead of
overlapping the group join.

Every variant also reports the CPU time its process used in the window (all threads):
on a machine shared with other work, wall-clock rates mostly measure the CPU share a
process got, and a two-thread worker gets more of it than a one-thread agent, so the
per-CPU-second ratios are the fairer comparison there.

Usage: ``python benchmarks/projections.py [--agents 200 --heartbeats 12000 --commands 5000]
[--json out.json] [--profile DIR]`` (``--profile`` runs the swarmlog worker under py-spy).
Uses ``SWARMLOG_BOOTSTRAP`` when set (``SWARMLOG_EMBEDDED=1`` if that is an embedded
broker), else starts an embedded broker for the run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PARTITIONS = 6
CAPABILITIES = [f"cap-{i:02d}" for i in range(20)]
SOURCE_TOPICS = ("agents", "commands", "receipts")
def worker_topics(domains: str) -> tuple[str, ...]:
    """The source topics the swarmlog worker's Faust agents consume (and must acknowledge) for ``domains``.

    Why not just ``commands`` + ``receipts`` (the coordination agent's): with the ``agents`` domain
    (a default since workers run domain subsets) the worker also consumes ``agents``; a window that
    ignored those acks closed while that agent was still folding, how far it had got varied by run.
    """
    from swarmlog.processors.app import select_domains

    consumed = {t for topics, _factory in select_domains(domains).values() for t in topics}
    return tuple(t for t in SOURCE_TOPICS if t in consumed)
VARIANTS = ("bare", "bare_batched", "naive", "swarmlog_per_event", "swarmlog_faust_tables", "swarmlog")
#: what each swarmlog variant's name stands for, printed with its result
LABELS = {"swarmlog": "swarmlog (default: direct table writes)",
          "swarmlog_faust_tables": "swarmlog, Faust table writes", "swarmlog_per_event": "swarmlog, per-event writes"}
HERE = Path(__file__).resolve().parent


# ----------------------------------------------------------------------------- the log
@contextlib.contextmanager
def broker() -> Iterator[tuple[str, bool]]:
    configured = os.environ.get("SWARMLOG_BOOTSTRAP")
    if configured:  # SWARMLOG_EMBEDDED=1: it is an embedded broker (short group timeouts), as for `swarmlog worker`
        yield configured, os.environ.get("SWARMLOG_EMBEDDED") == "1"
        return
    from swarmlog.infra.broker import EmbeddedBroker

    with EmbeddedBroker(state_dir=None) as embedded:
        yield embedded.bootstrap, True


def produce_log(bootstrap: str, prefix: str, agents: int, heartbeats: int, commands: int,
                seed: int) -> dict[str, int]:
    """Write the workload; return counts per event type. Three producers: fleet, client, executors."""
    from swarmlog.streams.identity import Identity
    from swarmlog.streams.producer import EventProducer

    rng = random.Random(seed)
    fleet = EventProducer(Identity.generate("bench-fleet"), bootstrap, topic_prefix=prefix, seal_interval_ms=60_000)
    client = EventProducer(Identity.generate("bench-client"), bootstrap, topic_prefix=prefix,
                           seal_interval_ms=60_000)
    executors = EventProducer(Identity.generate("bench-executors"), bootstrap, topic_prefix=prefix,
                              seal_interval_ms=60_000)
    base_ms = int(time.time() * 1000)
    ids = [f"agent-{i:05d}" for i in range(agents)]
    caps = {a: rng.sample(CAPABILITIES, k=rng.randint(1, 3)) for a in ids}
    serving: dict[str, list[str]] = {c: [] for c in CAPABILITIES}
    for agent_id, agent_caps in caps.items():
        for cap in agent_caps:
            serving[cap].append(agent_id)
    fleet.produce_many("agents.registered", [{
        "agent_id": a, "address": f"{a}.example:7000", "capabilities": caps[a],
        "max_concurrency": rng.choice([8, 16, 32, 64]), "health_score": 1.0,
        "latency_ms": rng.uniform(5, 200), "reliability": rng.uniform(0.9, 0.999), "metadata": {"bench": "1"},
    } for a in ids])
    fleet.seal()
    # interleave heartbeats, requests and receipts in chunks, like a running system
    chunk = 500
    steps = max(1, (heartbeats + commands + chunk - 1) // chunk)
    hb_per, cmd_per = heartbeats / steps, commands / steps
    sent_hb = sent_cmd = 0
    for step in range(1, steps + 1):
        hb_to, cmd_to = round(hb_per * step), round(cmd_per * step)
        hbs = [{"agent_id": ids[i % agents], "health_score": round(rng.uniform(0.7, 1.0), 3),
                "current_load": rng.randint(0, 4), "latency_ms": rng.uniform(5, 200), "reliability": 0.99,
                "max_concurrency": 32, "interval_ms": 5000, "resources": {"cpu": 0.3}}
               for i in range(sent_hb, hb_to)]
        if hbs:
            fleet.produce_many("agents.heartbeat", hbs)
        requests, receipts = [], []
        for _ in range(sent_cmd, cmd_to):
            command_id = str(uuid.UUID(int=rng.getrandbits(128)))
            cap = rng.choice(CAPABILITIES)
            requests.append({"command_id": command_id, "capability": cap, "args": b'{"q": 1}',
                             "requester": "bench-client", "priority": 5})
            agent_id = rng.choice(serving[cap] or ids)
            duration = rng.randint(5, 300)
            finished = base_ms + sent_cmd * 10
            receipts.append({"command_id": command_id, "agent_id": agent_id, "capability": cap,
                             "started_ms": finished - duration, "finished_ms": finished, "duration_ms": duration,
                             "success": rng.random() < 0.95})
        if requests:
            client.produce_many("commands.requested", requests)
            executors.produce_many("commands.receipt", receipts)
        sent_hb, sent_cmd = hb_to, cmd_to
    for producer in (fleet, client, executors):
        producer.close(120)
    return {"agents.registered": agents, "agents.heartbeat": heartbeats, "commands.requested": commands,
            "commands.receipt": commands}


def log_ends(bootstrap: str, topics: list[str]) -> dict[str, dict[str, list[int]]]:
    """topic → partition → [start, end) of the pre-produced log."""
    from swarmlog.streams.reader import plan_ranges

    out: dict[str, dict[str, list[int]]] = {}
    for r in plan_ranges(bootstrap, topics):
        out.setdefault(r.topic, {})[str(r.partition)] = [r.start, r.stop or r.start]
    return out


# ----------------------------------------------------------------------------- the parent
def run_variant(variant: str, spec: dict[str, Any], workdir: Path, timeout: float,
                profile_dir: Path | None) -> dict[str, Any]:
    from swarmlog.infra.broker import free_port

    result_path = workdir / f"{variant}.result.json"
    spec = {**spec, "variant": variant, "result": str(result_path), "web_port": free_port(),
            "datadir": str(workdir / variant), "app_id": f"bench-{variant}-{uuid.uuid4().hex[:6]}"}
    spec_path = workdir / f"{variant}.spec.json"
    spec_path.write_text(json.dumps(spec))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(spec_path)]
    if profile_dir is not None and variant.startswith("swarmlog"):
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        profile_dir.mkdir(parents=True, exist_ok=True)
        cmd = [spy, "record", "-r", "200", "-f", "raw", "--threads", "-o", str(profile_dir / f"{variant}.pyspy.txt"),
               "--", *cmd]
    log_path = workdir / f"{variant}.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        try:
            while not result_path.exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            if profile_dir is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(30)  # let py-spy write its file
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
    if not result_path.exists():
        tail = log_path.read_text()[-3000:]
        raise RuntimeError(f"variant {variant} produced no result (exit {proc.returncode}):\n{tail}")
    result: dict[str, Any] = json.loads(result_path.read_text())
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--heartbeats", type=int, default=12_000)
    parser.add_argument("--commands", type=int, default=5_000, help="requests; as many receipts")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--domains", default="agents,coordination",
                        help="worker domains for the swarmlog variants (the registry + command-broker ones by "
                             "default; '' = every default domain, as `swarmlog worker` runs)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--timeout", type=float, default=600.0, help="per variant, seconds")
    parser.add_argument("--json", dest="json_path", help="also write the results as JSON here")
    parser.add_argument("--profile", type=Path, help="run the swarmlog worker under py-spy, raw output here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main(Path(args.worker))
    from common import machine  # benchmarks/common.py (scripts run from benchmarks/)

    from swarmlog.infra.topics import provision

    variants = [v for v in args.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}")
    # swarmlog writes derived events into `commands`: it runs last so the others see the pristine log
    variants.sort(key=VARIANTS.index)
    results: dict[str, Any] = {"machine": machine(), "partitions": PARTITIONS, "variants": {}}
    with broker() as (bootstrap, embedded), tempfile.TemporaryDirectory(prefix="swarmlog-projbench-") as tmp:
        prefix = f"pb{uuid.uuid4().hex[:6]}."
        provision(bootstrap, partitions=PARTITIONS, prefix=prefix)
        start = time.perf_counter()
        counts = produce_log(bootstrap, prefix, args.agents, args.heartbeats, args.commands, args.seed)
        produce_s = time.perf_counter() - start
        topics = [prefix + t for t in SOURCE_TOPICS]
        ends = log_ends(bootstrap, topics)
        records = {t: sum(e - s for s, e in parts.values()) for t, parts in ends.items()}
        events = sum(counts.values())
        results.update({"events": events, "event_counts": counts, "records": records,
                        "produce_s": produce_s})
        print(f"log: {events:,} events, {sum(records.values()):,} records (with seals) "
              f"in {produce_s:.1f} s: {records}", file=sys.stderr)
        spec = {"bootstrap": bootstrap, "embedded": embedded, "prefix": prefix, "ends": ends,
                "partitions": PARTITIONS, "domains": args.domains}
        results["domains"] = args.domains or "all"
        for variant in variants:
            variant_spec = spec
            if variant in ("swarmlog_per_event", "swarmlog_faust_tables"):
                # its derived events would land in the log the swarmlog variant reads: it gets its own
                # copy, produced from the same seed (same events; ids, clocks and signatures differ)
                copy = f"pb{uuid.uuid4().hex[:6]}."
                provision(bootstrap, partitions=PARTITIONS, prefix=copy)
                produce_log(bootstrap, copy, args.agents, args.heartbeats, args.commands, args.seed)
                variant_spec = {**spec, "prefix": copy, "ends": log_ends(bootstrap, [copy + t for t in SOURCE_TOPICS])}
            result = run_variant(variant, variant_spec, Path(tmp), args.timeout, args.profile)
            result["events_per_s"] = events / result["seconds"]
            result["records_per_s"] = sum(records.values()) / result["seconds"]
            result["events_per_cpu_s"] = events / result["cpu_seconds"]
            results["variants"][variant] = result
            label = LABELS.get(variant, variant)
            print(f"{label:>40}: {result['events_per_s']:>9,.0f} events/s ({result['seconds']:.2f} s); "
                  f"{result['events_per_cpu_s']:>7,.0f} events per CPU-second ({result['cpu_seconds']:.2f} s)",
                  file=sys.stderr)
    results["ratios"] = _ratios({v: r["events_per_s"] for v, r in results["variants"].items()})
    results["cpu_ratios"] = _ratios({v: r["events_per_cpu_s"] for v, r in results["variants"].items()})
    ratios = results["ratios"]
    results["targets"] = {"swarmlog_over_naive >= 3": ratios.get("swarmlog_over_naive", 0) >= 3,
                          "swarmlog_over_bare >= 0.8": ratios.get("swarmlog_over_bare", 0) >= 0.8}
    for name, value in ratios.items():
        print(f"{name}: {value:.2f} (per CPU-second: {results['cpu_ratios'].get(name, 0):.2f})", file=sys.stderr)
    print(json.dumps(results, indent=2))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(results, indent=2))
    return 0


def _ratios(rates: dict[str, float]) -> dict[str, float]:
    """The target ratios; "bare" is the better of the two bare agents (the ceiling)."""
    bare = max((rates[v] for v in ("bare", "bare_batched") if v in rates), default=0.0)
    out: dict[str, float] = {}
    for name in ("swarmlog", "swarmlog_faust_tables", "swarmlog_per_event", "naive"):
        if name not in rates:
            continue
        if bare:
            out[f"{name}_over_bare"] = rates[name] / bare
        if name != "naive" and "naive" in rates:
            out[f"{name}_over_naive"] = rates[name] / rates["naive"]
    if "swarmlog" in rates and "swarmlog_per_event" in rates:
        out["swarmlog_over_per_event"] = rates["swarmlog"] / rates["swarmlog_per_event"]
    if "swarmlog" in rates and "swarmlog_faust_tables" in rates:
        out["swarmlog_over_faust_tables"] = rates["swarmlog"] / rates["swarmlog_faust_tables"]
    return out


# ----------------------------------------------------------------------------- the worker process
class Progress:
    """Stamps the measured window from inside the worker: first record handed over, last one done."""

    def __init__(self, faust_ends: dict[tuple[str, int], tuple[int, int]],
                 replica_ends: dict[tuple[str, int], tuple[int, int]]) -> None:
        self.faust_ends = faust_ends
        self.replica_ends = replica_ends
        self.acked: dict[tuple[str, int], set[int]] = {tp: set() for tp in faust_ends}
        self.faust_left = sum(e - s for s, e in faust_ends.values())
        self.replica_left = sum(e - s for s, e in replica_ends.values())
        self.first: float | None = None
        self.first_cpu = 0.0
        self.done_cpu = 0.0
        self.faust_done: float | None = None if self.faust_left else 0.0
        self.replica_done: float | None = None if self.replica_left else 0.0
        self.done = threading.Event()
        self._lock = threading.Lock()

    def seen(self) -> None:
        if self.first is None:
            self.first = time.perf_counter()
            self.first_cpu = time.process_time()

    def acked_one(self, topic: str, partition: int, offset: int) -> None:
        tp = (topic, partition)
        bounds = self.faust_ends.get(tp)
        if bounds is None or not bounds[0] <= offset < bounds[1] or offset in self.acked[tp]:
            return
        self.acked[tp].add(offset)
        self.faust_left -= 1
        if self.faust_left == 0:
            self.faust_done = time.perf_counter()
            self._check()

    def replica_fed(self, topic: str, partition: int, offset: int) -> None:
        bounds = self.replica_ends.get((topic, partition))
        if bounds is None or not bounds[0] <= offset < bounds[1]:
            return
        with self._lock:
            self.replica_left -= 1
            if self.replica_left == 0:
                self.replica_done = time.perf_counter()
                self._check()

    def _check(self) -> None:
        if self.faust_done is not None and self.replica_done is not None:
            self.done_cpu = time.process_time()
            self.done.set()


def _ends(spec: dict[str, Any], logical: tuple[str, ...]) -> dict[tuple[str, int], tuple[int, int]]:
    names = {spec["prefix"] + t for t in logical}
    return {(t, int(p)): (s, e) for t, parts in spec["ends"].items() if t in names for p, (s, e) in parts.items()}


def _instrument_consumer(progress: Progress) -> None:
    """Hook where Faust reports a record handed over and a record acknowledged.

    Faust's Cython stream iterator inlines ``Consumer.track_message`` and ``Consumer.ack``
    but keeps the sensor calls, so: handed over = ``on_message_in``; acked = ``on_message_out``
    (automatic acks) or ``Consumer.ack`` (manual ``event.ack()``, what swarmlog does).
    """
    from faust.sensors.base import SensorDelegate
    from faust.transport.consumer import Consumer

    message_in, message_out, ack = SensorDelegate.on_message_in, SensorDelegate.on_message_out, Consumer.ack

    def on_message_in(self: Any, tp: Any, offset: int, message: Any) -> None:
        progress.seen()
        message_in(self, tp, offset, message)

    def on_message_out(self: Any, tp: Any, offset: int, message: Any) -> None:
        message_out(self, tp, offset, message)
        progress.acked_one(tp.topic, tp.partition, offset)

    def acked(self: Any, message: Any) -> bool:
        done = ack(self, message)
        if done:
            progress.acked_one(message.topic, message.partition, message.offset)
        return done

    SensorDelegate.on_message_in = on_message_in  # type: ignore[method-assign]
    SensorDelegate.on_message_out = on_message_out  # type: ignore[method-assign]
    Consumer.ack = acked  # type: ignore[method-assign]


def _faust_settings(spec: dict[str, Any]) -> dict[str, Any]:
    from swarmlog.processors.app import _faust_broker_settings

    return {"broker": f"kafka://{spec['bootstrap']}", "topic_partitions": spec["partitions"],
            "topic_replication_factor": 1, "web_port": spec["web_port"], "web_bind": "127.0.0.1",
            "consumer_auto_offset_reset": "earliest", "processing_guarantee": "at_least_once",
            "datadir": spec["datadir"], **_faust_broker_settings(spec["embedded"])}


def build_baseline(spec: dict[str, Any], variant: str) -> Any:
    """The bare and naive Faust apps (same broker settings as the swarmlog worker)."""
    import faust

    Path(spec["datadir"]).mkdir(parents=True, exist_ok=True)
    store = "rocksdb://" if variant == "naive" else "memory://"
    app = faust.App(spec["app_id"], store=store, **_faust_settings(spec))
    if spec["embedded"] and variant == "naive":
        from swarmlog.processors.faust_compat import correct_end_offsets_for_embedded_broker

        correct_end_offsets_for_embedded_broker(spec["bootstrap"])
    channel = app.topic(*[spec["prefix"] + t for t in SOURCE_TOPICS], value_serializer="raw", key_serializer="raw")
    counted = [0]

    @app.task
    async def same_logging_as_swarmlog() -> None:
        # the swarmlog worker undoes Faust's root-logger DEBUG (processors/app.py); so do the baselines
        from swarmlog.processors.app import undo_spinner_debug_logging

        undo_spinner_debug_logging()
    if variant == "bare":
        async def bare(stream: Any) -> None:
            async for _value in stream:
                counted[0] += 1

        app.agent(channel, name="bench.bare")(bare)
    elif variant == "bare_batched":
        async def bare_batched(stream: Any) -> None:
            async for events in stream.noack().take_events(500, within=0.2):
                counted[0] += len(events)
                for event in events:
                    event.ack()

        app.agent(channel, name="bench.bare_batched")(bare_batched)
    else:
        from swarmlog.streams.codec import default_store
        from swarmlog.streams.envelope import EnvelopeCodec

        schemas = default_store()
        codec = EnvelopeCodec(schemas)
        table = app.Table("naive-state", default=None, partitions=spec["partitions"])

        async def naive(stream: Any) -> None:
            async for value in stream:
                if codec.is_seal(value):
                    seal = codec.decode_seal(value)
                    key, kind, ts = f"seal/{seal['lane']}", "seal", 0
                else:
                    event = codec.decode(value)
                    event.decode_payload(schemas)
                    key, kind, ts = event.subject, event.event_type, event.timestamp_ms
                old = table.get(key)
                table[key] = {"n": (old["n"] if old else 0) + 1, "last": kind, "ts": ts}
                counted[0] += 1

        app.agent(channel, name="bench.naive")(naive)
    app.bench_counted = counted  # type: ignore[attr-defined]
    return app


def build_swarmlog(spec: dict[str, Any], progress: Progress, per_event: bool = False, direct: bool = True) -> Any:
    """The real worker; ``per_event``: as before batching — every table write goes straight to
    the table (and its changelog), changelog records are sent without linger; ``direct``: table
    writes through ``runtime.DirectTable`` (the default) or Faust's own table path."""
    from swarmlog.processors import app as app_module
    from swarmlog.processors.app import WorkerConfig, create_app, select_domains
    from swarmlog.processors.runtime import TableStore

    app_module.DIRECT_CHANGELOG = direct
    if per_event:
        app_module.WriteBehindStore = lambda table, *_args: TableStore(table)
        app_module.DIRECT_CHANGELOG = False  # Faust's own per-write path, as before batching
    from swarmlog.streams.identity import Identity
    from swarmlog.streams.producer import EventProducer

    identity = Identity.generate("bench-worker")
    config = WorkerConfig(bootstrap=spec["bootstrap"], name="bench-worker", datadir=Path(spec["datadir"]),
                          topic_prefix=spec["prefix"], partitions=spec["partitions"], web_port=spec["web_port"],
                          embedded=spec["embedded"], app_id=spec["app_id"])

    def producer() -> EventProducer:
        return EventProducer(identity, spec["bootstrap"], topic_prefix=spec["prefix"])

    app = create_app(config, producer, domains=select_domains(spec.get("domains", "")))
    if per_event:
        app.conf.producer_linger = 0.0
        app.conf.producer_max_batch_size = 16384
    replica = app.swarmlog_replica
    # The replica starts when the group's first rebalance completes (partitions assigned,
    # tables recovered), not at process start, so its catch-up is inside the window instead
    # of overlapping the group join. The window opens then (the routing agent waits for the
    # replica before it takes its first record), a little before Faust would hand over one.
    start = replica.start
    replica.start = lambda: None

    @app.on_rebalance_complete.connect
    async def on_assigned(sender: Any, **kwargs: Any) -> None:
        if progress.first is None:
            progress.seen()
            start()
    feed = replica.engine.feed

    def fed(record: Any) -> Any:
        out = feed(record)
        progress.replica_fed(record.topic, record.partition, record.offset)
        return out

    replica.engine.feed = fed
    feed_many = replica.engine.feed_many  # the replica's catch-up reads a fetched batch at a time

    def fed_many(records: Any) -> Any:
        out = feed_many(records)
        for record in records:
            progress.replica_fed(record.topic, record.partition, record.offset)
        return out

    replica.engine.feed_many = fed_many
    return app


def worker_main(spec_path: Path) -> int:
    from faust.worker import Worker

    spec = json.loads(spec_path.read_text())
    variant = spec["variant"]
    swarmlog = variant.startswith("swarmlog")
    faust_ends = _ends(spec, worker_topics(spec.get("domains", "")) if swarmlog else SOURCE_TOPICS)
    replica_ends = _ends(spec, SOURCE_TOPICS) if swarmlog else {}
    progress = Progress(faust_ends, replica_ends)
    _instrument_consumer(progress)
    app = build_swarmlog(spec, progress, per_event=variant == "swarmlog_per_event",
                         direct=variant not in ("swarmlog_per_event", "swarmlog_faust_tables")) if swarmlog \
        else build_baseline(spec, variant)

    def report() -> None:
        while not progress.done.wait(5.0):
            if os.environ.get("BENCH_DEBUG"):
                print(f"progress: first={progress.first} faust_left={progress.faust_left} "
                      f"replica_left={progress.replica_left}", file=sys.stderr, flush=True)
        assert progress.first is not None and progress.faust_done is not None and progress.replica_done is not None
        end = max(progress.faust_done, progress.replica_done)
        result: dict[str, Any] = {"seconds": end - progress.first,
                                  "cpu_seconds": progress.done_cpu - progress.first_cpu,
                                  "faust_seconds": progress.faust_done - progress.first if faust_ends else None,
                                  "replica_seconds": (progress.replica_done - progress.first
                                                      if replica_ends else None)}
        import logging

        result["root_log_level"] = logging.getLevelName(logging.getLogger().level)
        if swarmlog:
            time.sleep(0.5)  # let the last outputs' counters settle (not in the window)
            with contextlib.suppress(Exception):
                result["health"] = _health(spec["web_port"])
        else:
            result["counted"] = app.bench_counted[0]
        Path(spec["result"] + ".tmp").write_text(json.dumps(result, default=str))
        os.replace(spec["result"] + ".tmp", spec["result"])
        sys.stderr.flush()
        os._exit(0)  # the measurement is written; a clean Faust shutdown would only add noise

    threading.Thread(target=report, daemon=True, name="bench-report").start()
    Worker(app, loglevel="warn", quiet=True).execute_from_commandline()
    return 0


def _health(port: int) -> Any:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/swarmlog/health/", timeout=5) as response:
        return json.loads(response.read())


if __name__ == "__main__":
    raise SystemExit(main())
