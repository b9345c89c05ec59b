"""The swarmlog Faust app: one worker process, any number of them in one consumer group.

Domains (each one thin Faust agent over ``PartitionedRuntime``):

* ``coordination`` — topics ``commands`` + ``receipts`` (both keyed by command id, so
  co-partitioned): the routing projection decides every command and emits
  ``commands.routed`` / ``commands.route_failed``;
* ``consensus`` — topic ``consensus``: proposals, individually signed votes, decisions;
* ``sessions`` — topic ``sessions``;
* ``heal`` — topics ``metrics`` + ``receipts`` + ``heal``: the MAPE-K loop (projections/heal.py).
* ``sessions`` — topic ``sessions`` (receipts naming a session arrive there as
  ``sessions.receipt_recorded``, forwarded by ``coordination``);
* ``agents`` — topic ``agents``: the agent directory, so that what the registry refuses
  is dead-lettered once, by the partition's owner (``projections/directory.py``).

The registry is read by routing for *every* agent, whichever partition its events are
on, so each worker keeps a full **registry replica**: a background reader that follows
all partitions of ``agents``, ``commands``, ``receipts`` and ``heal`` (OPEN_CIRCUIT actions)
with assigned partitions (no consumer group) and folds them with the same engine. Registry state obeys the
determinism rule (docs/architecture.md), so every replica converges to the same state.

Faust runs at-least-once (the embedded broker rejects transactional producers); tables
live in RocksDB (rocksdict) with changelog topics.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import faust
import mode
from faust.streams import _current_event

from swarmlog.processors.faust_compat import correct_end_offsets_for_embedded_broker
from swarmlog.processors.ledger_app import LEDGER_STORE_PREFIX, add_ledger_views, ledger_table, make_recorder
from swarmlog.processors.runtime import (
    ChangelogProducer,
    Counters,
    DirectTable,
    OutputSink,
    PartitionedRuntime,
    Stages,
    TableStore,
    WriteBehindStore,
)
from swarmlog.processors.ticker import Ticker
from swarmlog.processors.views import ENDPOINT_FILE, add_views, write_endpoint
from swarmlog.projections.base import MemoryStore, Projection, StateStore
from swarmlog.projections.engine import Engine
from swarmlog.projections.ticks import TICK
from swarmlog.streams.producer import EventProducer, ProduceError
from swarmlog.streams.reader import plan_ranges, read_record_batches, read_records
from swarmlog.streams.verify import RawRecord

log = logging.getLogger(__name__)

BATCH = 500
BATCH_WITHIN_S = 0.2
REPLICA_CATCH_UP_S = 120.0
#: True: table writes go to the changelog and then RocksDB directly (runtime.DirectTable), not through
#: Faust's per-write path. On by default since the batch's changelog records are delivered before its
#: RocksDB write (tests/test_changelog_crash.py: a worker killed between the two, in the old order, lost
#: updates). False = Faust's own ``table[key] = value`` path (the benchmark's ``swarmlog_per_event``).
DIRECT_CHANGELOG = True


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a worker needs; built by the CLI from settings."""

    bootstrap: str
    name: str
    datadir: Path
    topic_prefix: str = ""
    partitions: int = 6
    web_port: int = 6066
    embedded: bool = True
    app_id: str = "swarmlog"
    #: seconds between looks for quiet lanes with a deadline due (processors/ticker.py); 0: never tick
    tick_interval_s: float = 1.0


def _faust_broker_settings(embedded: bool) -> dict[str, Any]:
    """Short group timeouts on the embedded broker (≈5 s to first event instead of ≈30 s)."""
    if not embedded:
        return {}
    return {"broker_session_timeout": 6.0, "broker_rebalance_timeout": 6.0, "broker_heartbeat_interval": 1.0,
            "broker_commit_interval": 1.0}


class RegistryReplica:
    """A full, continuously updated registry folded from the log by a background reader.

    It first reads every partition to its current end (``caught_up`` is set then), and
    then follows. Agents that route wait for ``caught_up`` before their first batch, so a
    worker never routes against a registry that has not yet seen the log's past.
    """

    def __init__(self, bootstrap: str, topics: Sequence[str], projections: Sequence[Projection]) -> None:
        self.bootstrap = bootstrap
        self.topics = list(topics)
        self.engine = Engine(projections)
        self.stores: dict[str, StateStore] = dict(self.engine.stores)
        self._stop = threading.Event()
        self.caught_up = threading.Event()
        self._thread = threading.Thread(target=self._run, name="swarmlog-registry-replica", daemon=True)
        self.records = 0
        self.error: str | None = None

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        if not self.engine.projections:
            self.caught_up.set()
            return
        if not self._thread.is_alive():
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        try:
            bounded = plan_ranges(self.bootstrap, self.topics)
            for batch in read_record_batches(self.bootstrap, bounded, stop=self._stop.is_set):
                self.engine.feed_many(batch)  # catching up: a fetched batch at a time
                self.records += len(batch)
            self.caught_up.set()
            follow_from = {(r.topic, r.partition): r.stop or r.start for r in bounded}
            ranges = plan_ranges(self.bootstrap, self.topics, follow=True, start_offsets=follow_from)
            for record in read_records(self.bootstrap, ranges, stop=self._stop.is_set):
                self.engine.feed(record)
                self.records += 1
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            self.caught_up.set()  # do not block the worker forever; routing sees what there is
            log.exception("registry replica stopped")


def undo_spinner_debug_logging() -> bool:
    """Give the root logger back the level the worker was started with; True if it had to.

    Faust's ``Worker`` at log level WARN or above adds a terminal-spinner handler and sets the
    *root logger* to DEBUG (so that every record turns the spinner), and never sets it back.
    From then on every ``log.debug`` in aiokafka and Faust — two per produced record, which
    includes every changelog record of every table write — builds a ``LogRecord`` that the
    handlers then drop: profiled at ≈ 10 % of the worker's event loop. The handlers keep the
    requested level, so restoring the root logger to it changes no output.
    """
    from faust.utils.terminal.spinners import SpinnerHandler

    root = logging.getLogger()
    spinners = [h for h in root.handlers if isinstance(h, SpinnerHandler)]
    if not spinners or root.level != logging.DEBUG:
        return False
    for handler in spinners:
        root.removeHandler(handler)
    levels = [h.level for h in root.handlers if h.level != logging.NOTSET]
    root.setLevel(min(levels) if levels else logging.WARNING)
    return True


def default_domains() -> dict[str, tuple[Sequence[str], Callable[[], list[Projection]]]]:
    from swarmlog.projections.consensus import ConsensusProjection
    from swarmlog.projections.directory import AgentDirectoryProjection
    from swarmlog.projections.heal import HealProjection
    from swarmlog.projections.routing import LiveRoutingProjection
    from swarmlog.projections.sessions import SessionProjection
    from swarmlog.projections.swarm_jobs import SwarmJobProjection
    from swarmlog.projections.swarm_resilience import RoleProjection
    from swarmlog.projections.swarm_space import SwarmSpaceProjection
    from swarmlog.projections.swarm_tasks import SwarmTaskProjection
    from swarmlog.projections.swarm_voting import VotingPoolProjection
    from swarmlog.projections.trust import TrustProjection

    return {
        # the registry itself is the replica (below); this domain gives each agents partition one
        # owner that dead-letters what the registry refuses (projections/directory.py)
        "agents": (("agents",), lambda: [AgentDirectoryProjection()]),
        # PREDICTED reads the replica's learned latency models, TRUST_WEIGHTED its trust graph
        "coordination": (("commands", "receipts"), lambda: [LiveRoutingProjection()]),
        # lane-scoped clocks: a deadline is decided from the proposal's own partition, so
        # every table write stays in that partition's shard (docs/architecture.md)
        "consensus": (("consensus",), lambda: [ConsensusProjection(clock_scope="lane")]),
        "sessions": (("sessions",), lambda: [SessionProjection(clock_scope="lane")]),
        # optimisation jobs run inside the worker that folds the request (bounded budget)
        "swarm": (("swarm",), lambda: [SwarmJobProjection(), VotingPoolProjection(), SwarmTaskProjection(),
                                      SwarmSpaceProjection(), RoleProjection()]),
        # listings/contracts on `market`, SLA monitoring from `receipts`
        "market": (("market", "receipts"), _market_projections),
        # MAPE-K: detectors per component (metrics lane), breakers per receipts lane, knowledge from heal
        "heal": (("metrics", "receipts", "heal"), lambda: [HealProjection()]),
        "trust": (("trust",), lambda: [TrustProjection()]),
    }


def select_domains(names: str) -> dict[str, tuple[Sequence[str], Callable[[], list[Projection]]]]:
    """The default domains named in a comma-separated list (all of them for an empty list).

    Dedicated workers per domain scale a hot domain on its own; a typo must not silently
    start a worker that folds nothing, hence the error.
    """
    available = default_domains()
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in available]
    if unknown:
        raise ValueError(f"unknown domain(s) {', '.join(unknown)}; known: {', '.join(available)}")
    return {n: available[n] for n in wanted} if wanted else available


def _market_projections() -> list[Projection]:
    from swarmlog.projections.market import MarketProjection

    return [MarketProjection()]


def default_replica_projections() -> list[Projection]:
    from swarmlog.projections.latency_models import LatencyModelProjection
    from swarmlog.projections.registry import RegistryProjection
    from swarmlog.projections.trust import TrustProjection

    return [RegistryProjection(), LatencyModelProjection(), TrustProjection()]


def create_app(config: WorkerConfig, producer_factory: Callable[[], EventProducer],
               domains: dict[str, tuple[Sequence[str], Callable[[], list[Projection]]]] | None = None,
               replica_projections: Callable[[], list[Projection]] | None = None) -> faust.App:
    """Build the Faust app. ``domains``: name → (logical topics, projections factory)."""
    domains = domains or default_domains()
    replica_factory = replica_projections or default_replica_projections
    prefix = config.topic_prefix
    config.datadir.mkdir(parents=True, exist_ok=True)  # Faust creates only the last level
    if config.embedded:
        correct_end_offsets_for_embedded_broker(config.bootstrap)
    app = faust.App(
        f"{config.app_id}{'-' + prefix.strip('.-_') if prefix else ''}",
        broker=f"kafka://{config.bootstrap}",
        store="rocksdb://",
        datadir=str(config.datadir),
        processing_guarantee="at_least_once",
        topic_partitions=config.partitions,
        topic_replication_factor=1,
        web_port=config.web_port,
        web_bind="127.0.0.1",
        web_host="127.0.0.1",  # canonical URL other workers forward keyed views to (views.py)
        consumer_auto_offset_reset="earliest",
        table_cleanup_interval=30.0,
        # changelog records leave in few large produce requests instead of one small request
        # per table write (profiled: socket writes were the worker's largest single cost)
        producer_linger=0.02,
        producer_max_batch_size=512 * 1024,
        **_faust_broker_settings(config.embedded),
    )
    replica = RegistryReplica(config.bootstrap, [prefix + t for t in ("agents", "commands", "receipts", "heal",
                                                                     "trust")],
                              replica_factory())
    sink_holder: dict[str, OutputSink] = {}
    changelog_holder: dict[str, ChangelogProducer] = {}

    def changelog() -> ChangelogProducer | None:
        if not DIRECT_CHANGELOG:
            return None
        if "changelog" not in changelog_holder:
            changelog_holder["changelog"] = ChangelogProducer(config.bootstrap)
        return changelog_holder["changelog"]

    def sink() -> OutputSink:
        if "sink" not in sink_holder:
            sink_holder["sink"] = OutputSink(producer_factory(), config.name, prefix)
        return sink_holder["sink"]

    all_stores: dict[str, StateStore] = dict(replica.stores)
    counters: dict[str, Counters] = {}
    stages: dict[str, Stages] = {}
    for domain, (topics, factory) in domains.items():
        counters[domain] = Counters()
        stages[domain] = Stages()
        all_stores.update(_add_domain(app, domain, [prefix + t for t in topics], factory, replica, sink,
                                      config.partitions, counters[domain], stages[domain], changelog,
                                      config.tick_interval_s, config.name))
    add_ledger_views(app, lambda: all_stores)
    add_views(app, lambda: all_stores, lambda: {
        "worker": config.name, "replica_records": replica.records, "replica_alive": replica.alive,
        "replica_counts": dict(replica.engine.counts), "replica_error": replica.error,
        "domains": {name: dict(c.values) for name, c in counters.items()},
        "stages": {name: st.snapshot() for name, st in stages.items()},
        "outputs": ({"derived": sink_holder["sink"].derived, "dead_letters": sink_holder["sink"].dead_letters}
                    if "sink" in sink_holder else {}),
    }, worker=config.name, partitions=config.partitions)

    @app.service
    class SwarmlogLifecycle(mode.Service):
        """Starts the registry replica with the worker; stops it and flushes outputs on exit."""

        async def on_start(self) -> None:
            undo_spinner_debug_logging()
            replica.start()
            write_endpoint(config.datadir, config.name, f"http://127.0.0.1:{config.web_port}")

        async def on_stop(self) -> None:
            (config.datadir / ENDPOINT_FILE).unlink(missing_ok=True)
            replica.stop()
            if "changelog" in changelog_holder:
                changelog_holder["changelog"].flush()
            if "sink" in sink_holder:
                sink_holder["sink"].producer.close()

    app.swarmlog_replica = replica  # type: ignore[attr-defined]
    return app


def _add_domain(app: faust.App, domain: str, topic_names: list[str], factory: Callable[[], list[Projection]],
                replica: RegistryReplica, sink: Callable[[], OutputSink], partitions: int,
                counters: Counters, stages: Stages | None = None,
                changelog: Callable[[], ChangelogProducer | None] = lambda: None,
                tick_interval_s: float = 0.0, worker: str = "") -> dict[str, StateStore]:
    """Register the domain's agent and tables; return its projections' stores (for the views)."""
    projections = factory()
    stages = stages if stages is not None else Stages()
    # keys and values go through Faust's default JSON serializer
    tables = {p.name: app.Table(f"swarmlog-{p.name}", default=None, partitions=partitions) for p in projections}
    tick_aware = [p.name for p in projections if TICK in p.event_types]
    if tick_interval_s > 0 and tick_aware:
        _add_ticker(app, domain, Ticker(topic_names, {n: TableStore(tables[n]) for n in tick_aware}, sink, worker),
                    tick_interval_s)

    def store_for(name: str) -> StateStore:
        return TableStore(tables[name])

    channel = app.topic(*topic_names, value_serializer="raw", key_serializer="raw")
    ledger_table_ = ledger_table(app, domain, partitions)
    ledger_store = TableStore(ledger_table_) if ledger_table_ is not None else None

    async def agent(stream: faust.StreamT) -> None:
        # batch-aggregated table writes (runtime.WriteBehindStore); the views read the tables directly
        direct = changelog()

        def writable(table: Any) -> Any:
            return DirectTable(table, direct, _event_partition) if direct is not None else table

        runtime = PartitionedRuntime(projections, lambda name: WriteBehindStore(writable(tables[name]), _event_context,
                                                                                _set_current_event),
                                     extra_stores=_replica_stores(projections, replica))
        runtime.counters = counters  # per-reason counters, shown by /swarmlog/health/
        runtime.stages = stages
        if direct is not None:
            runtime.deliver_tables = direct.flush
        if ledger_table_ is not None:
            ledger_writes = WriteBehindStore(writable(ledger_table_), _event_context, _set_current_event)
            runtime.ledger = make_recorder(ledger_writes, sink)
            runtime.add_batched_store(ledger_writes)
        if any(p.reads for p in projections):
            replica.start()
            await asyncio.to_thread(replica.caught_up.wait, REPLICA_CATCH_UP_S)
        unacked: dict[tuple[str, int, int], Any] = {}
        manual: Any = cast(Any, stream).noack()  # acks only once a record is decided (see runtime.py)
        clock = time.perf_counter
        mark = clock()
        async for events in manual.take_events(BATCH, within=BATCH_WITHIN_S):
            start = clock()
            stages.add("wait", start - mark)  # waiting for the batch (fetch, other agents, Faust's own work)
            records = [
                RawRecord(ev.message.topic, ev.message.partition, ev.message.offset, ev.message.key,
                          ev.message.value if isinstance(ev.message.value, bytes) else b"",
                          int((ev.message.timestamp or 0) * 1000))
                for ev in events
            ]
            try:
                outcome, pending = runtime.process(records, lambda i, batch=events: _set_current_event(batch[i]))
            except ProduceError:
                # undelivered changelog records: RocksDB was left behind the changelog and nothing of the batch
                # was acked. Carrying on would fold the next batches on that stale state; a dead worker is
                # restored from the changelog and its records redelivered (tests/test_changelog_crash.py)
                log.critical("%s: table changelog delivery failed; stopping the worker hard", domain, exc_info=True)
                os._exit(70)
            folded = clock()
            out = sink()
            out.emit(outcome)
            emitted = clock()
            if outcome.derived or outcome.dead_letters:
                out.flush()  # outputs are delivered before their sources are acknowledged
            delivered = clock()
            for ev, record in zip(events, records, strict=True):
                unacked[(record.topic, record.partition, record.offset)] = ev
            for position in [p for p in unacked if p not in pending]:
                unacked.pop(position).ack()
            mark = clock()
            stages.add("fold", folded - start)
            stages.add("emit", emitted - folded)
            stages.add("deliver", delivered - emitted)
            stages.add("ack", mark - delivered)
            stages.batches += 1
            stages.records += len(records)

    agent.__name__ = f"swarmlog_{domain}"
    app.agent(channel, name=f"swarmlog.{domain}")(agent)
    stores = {name: store_for(name) for name in tables}
    if ledger_store is not None:
        stores[f"{LEDGER_STORE_PREFIX}{domain}"] = ledger_store
    return stores


def _add_ticker(app: faust.App, domain: str, ticker: Ticker, interval_s: float) -> None:
    """Tick the domain's quiet lanes that have a deadline due (processors/ticker.py)."""

    async def tick() -> None:
        try:
            assigned = [(tp.topic, tp.partition) for tp in app.consumer.assignment()]
            ticker.tick(assigned)
        except Exception:  # a missed tick is retried next interval; it must never stop the worker
            log.exception("%s: ticking quiet lanes failed", domain)

    app.timer(interval_s, name=f"swarmlog-{domain}-ticker")(tick)


def _set_current_event(event: Any) -> None:
    """Table writes use the current event's partition for their changelog record.

    ``take_events`` yields a batch without setting Faust's current event, so we set it per
    record: a write made while folding record r lands in r's partition's changelog, which
    is the partition the owner of r restores on failover.
    """
    _current_event.set(weakref.ref(event))


def _event_context() -> tuple[int, Any]:
    """(changelog partition, event) of the record being folded: where a buffered write must go."""
    ref = _current_event.get(None)
    event = ref() if ref is not None else None
    if event is None:
        raise RuntimeError("table write outside of a record being folded")
    return event.message.partition, event


def _event_partition() -> int:
    return _event_context()[0]


def _replica_stores(projections: Sequence[Projection], replica: RegistryReplica) -> dict[str, StateStore]:
    needed = {name for p in projections for name in p.reads}
    return {name: replica.stores.get(name, MemoryStore()) for name in needed}
