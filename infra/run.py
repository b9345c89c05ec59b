"""``swarmlog run``: the main job — a simulated agent population on a real broker and worker.

The spec's "multi-cloud agent orchestration" use case, end to end, on the log:

1. a broker (the embedded one, or ``SWARMLOG_BOOTSTRAP``) and a ``swarmlog worker`` process;
2. N agents (default 200), each with its own did:key + ML-DSA-65 identity, spread over
   clouds and regions with capabilities, register and send heartbeats;
3. a client sends commands with every routing strategy; the worker routes each one
   (``commands.routed`` / ``commands.route_failed``); the chosen agent answers with a
   receipt (its latency and reliability profile decide duration and success);
4. a coordinator proposes a critical operation (BFT); eligible agents cast individually
   signed votes; the worker decides;
5. the whole log is replayed and verified through the same reducers: the summary shows
   projections, events authenticated / dead-lettered / applied.

Every event is signed; every number in the summary is read back from the log.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swarmlog.streams.identity import Identity
from swarmlog.streams.producer import EventProducer, shared_kafka_producer
from swarmlog.streams.reader import plan_ranges, read_record_batches, read_records
from swarmlog.streams.settings import get_settings
from swarmlog.streams.verify import Status, Verifier

CAPABILITIES = ["database.query", "ml.inference", "storage.write", "compute.batch", "vision.ocr", "search.index"]
CLOUDS = [("aws", ["us-east-1", "eu-west-1"]), ("gcp", ["us-central1", "europe-west4"]),
          ("azure", ["eastus", "westeurope"])]
STRATEGIES = ["BEST_FIT", "MIN_LATENCY", "MAX_RELIABILITY", "ROUND_ROBIN", "LEAST_LOADED"]
TOPICS = ("agents", "commands", "receipts", "sessions", "consensus", "trust", "deadletter")


@dataclass
class SimAgent:
    identity: Identity
    producer: EventProducer
    capabilities: list[str]
    cloud: str
    region: str
    latency_ms: float
    reliability: float
    max_concurrency: int

    @property
    def did(self) -> str:
        return self.identity.did


@dataclass
class RunStats:
    registered: int = 0
    commands: int = 0
    routed: int = 0
    route_failed: int = 0
    receipts: int = 0
    votes: int = 0
    decision: str | None = None
    decision_seconds: float | None = None
    first_route_seconds: float | None = None
    failures: Counter[str] = field(default_factory=Counter)


class Simulation:
    """Drives the population; all output goes through signed producers."""

    def __init__(self, bootstrap: str, prefix: str, agents: int, commands: int, seed: int) -> None:
        self.bootstrap = bootstrap
        self.prefix = prefix
        self.n_agents = agents
        self.n_commands = commands
        self.rng = random.Random(seed)
        self.kafka = shared_kafka_producer(bootstrap)
        self.stats = RunStats()
        self.agents: list[SimAgent] = []
        self.by_did: dict[str, SimAgent] = {}
        self.client = self._producer(Identity.generate("orchestrator"))
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.started = time.monotonic()

    def _producer(self, identity: Identity) -> EventProducer:
        return EventProducer(identity, self.bootstrap, topic_prefix=self.prefix, kafka=self.kafka,
                             background_seal=False, seal_batch=4096)

    # ------------------------------------------------------------------ phases
    def create_agents(self) -> None:
        for i in range(self.n_agents):
            identity = Identity.generate(f"agent-{i:04d}")
            cloud, regions = CLOUDS[i % len(CLOUDS)]
            caps = self.rng.sample(CAPABILITIES, k=self.rng.randint(1, 3))
            agent = SimAgent(identity, self._producer(identity), caps, cloud, self.rng.choice(regions),
                             latency_ms=self.rng.uniform(5, 200), reliability=self.rng.uniform(0.85, 0.999),
                             max_concurrency=self.rng.choice([4, 8, 16, 32]))
            self.agents.append(agent)
            self.by_did[agent.did] = agent

    def register(self) -> None:
        for agent in self.agents:
            agent.producer.produce("agents.registered", {
                "agent_id": agent.did, "address": f"{agent.region}.{agent.cloud}.example:7000",
                "capabilities": agent.capabilities, "max_concurrency": agent.max_concurrency,
                "region": agent.region, "cloud": agent.cloud, "health_score": 1.0,
                "latency_ms": agent.latency_ms, "reliability": agent.reliability,
                "metadata": {"sim": "swarmlog-run"},
            })
            self.heartbeat(agent)
            self.stats.registered += 1
        self.seal_all()

    def heartbeat(self, agent: SimAgent) -> None:
        agent.producer.produce("agents.heartbeat", {
            "agent_id": agent.did, "health_score": round(self.rng.uniform(0.8, 1.0), 3), "current_load": 0,
            "latency_ms": agent.latency_ms, "reliability": agent.reliability,
            "max_concurrency": agent.max_concurrency, "interval_ms": 5000, "resources": {"cpu": 0.2},
        })

    def send_commands(self, count: int) -> None:
        for _ in range(count):
            command_id = str(uuid.uuid4())
            self.client.produce("commands.requested", {
                "command_id": command_id, "capability": self.rng.choice(CAPABILITIES),
                "args": json.dumps({"sql": "SELECT 1"}).encode(), "content_type": "application/json",
                "requester": self.client.did, "strategy": STRATEGIES[self.stats.commands % len(STRATEGIES)],
                "priority": self.rng.randint(1, 10),
            })
            self.stats.commands += 1
        self.client.seal()
        self.kafka.flush(30)

    def propose(self, voters: list[SimAgent]) -> str:
        proposal_id = str(uuid.uuid4())
        self.client.produce("consensus.proposed", {
            "proposal_id": proposal_id, "operation": "deploy_critical_update", "proposer": self.client.did,
            "policy": "BFT", "eligible_voters": [v.did for v in voters], "voter_count": len(voters),
            "max_faulty": (len(voters) - 1) // 3, "min_confidence": 0.5,
            "deadline_ms": int(time.time() * 1000) + 120_000,
        }, sign=True)
        self.client.seal()
        for i, voter in enumerate(voters):
            voter.producer.produce("consensus.vote", {
                "proposal_id": proposal_id, "voter": voter.did, "choice": "REJECT" if i == 0 else "APPROVE",
                "confidence": round(self.rng.uniform(0.7, 1.0), 3), "weight": 1.0, "reason": "health checks pass",
            }, sign=True)
            voter.producer.seal()
            self.stats.votes += 1
        self.kafka.flush(30)
        return proposal_id

    def seal_all(self) -> None:
        for agent in self.agents:
            agent.producer.seal()
        self.client.seal()
        self.kafka.flush(60)

    # ------------------------------------------------------------------ reactions
    def respond(self) -> None:
        """Follow ``commands`` and ``consensus``: routed commands get receipts from their agent."""
        ranges = plan_ranges(self.bootstrap, [self.prefix + "commands", self.prefix + "consensus"], follow=True)
        verifier = Verifier()
        touched: set[str] = set()
        last_seal = time.monotonic()
        for record in read_records(self.bootstrap, ranges, stop=self._stop.is_set, batch=2000):
            for verdict in verifier.feed(record):
                if verdict.status is not Status.AUTHENTICATED or verdict.event is None:
                    continue
                event = verdict.event
                if event.event_type == "commands.routed":
                    self._receipt(event.decode_payload(), touched)
                elif event.event_type == "commands.route_failed":
                    payload = event.decode_payload()
                    with self._lock:
                        self.stats.route_failed += 1
                        self.stats.failures[str(payload.get("reason"))] += 1
                elif event.event_type == "consensus.decided":
                    payload = event.decode_payload()
                    self.stats.decision = str(payload.get("outcome"))
                    self.stats.decision_seconds = time.monotonic() - self.started
            if touched and time.monotonic() - last_seal > 0.2:
                self._seal_touched(touched)
                last_seal = time.monotonic()
        self._seal_touched(touched)

    def _receipt(self, routed: dict[str, Any], touched: set[str]) -> None:
        agent = self.by_did.get(routed["agent_id"])
        with self._lock:
            self.stats.routed += 1
            if self.stats.first_route_seconds is None:
                self.stats.first_route_seconds = time.monotonic() - self.started
        if agent is None:
            return
        duration = max(1, int(self.rng.gauss(agent.latency_ms, agent.latency_ms / 5)))
        success = self.rng.random() < agent.reliability
        now = int(time.time() * 1000)
        agent.producer.produce("commands.receipt", {
            "command_id": routed["command_id"], "agent_id": agent.did, "capability": routed["capability"],
            "started_ms": now - duration, "finished_ms": now, "duration_ms": duration, "success": success,
            "error": None if success else "upstream timeout",
        })
        with self._lock:
            self.stats.receipts += 1
        touched.add(agent.did)

    def _seal_touched(self, touched: set[str]) -> None:
        for did in list(touched):
            self.by_did[did].producer.seal()
        touched.clear()
        self.kafka.flush(30)

    def close(self) -> None:
        self._stop.set()
        for agent in self.agents:
            agent.producer.close()
        self.client.close()


@contextlib.contextmanager
def _broker() -> Iterator[tuple[str, bool]]:
    configured = os.environ.get("SWARMLOG_BOOTSTRAP")
    if configured:
        yield configured, False
        return
    from swarmlog.infra.broker import EmbeddedBroker

    with EmbeddedBroker(state_dir=None) as broker:
        yield broker.bootstrap, True


@contextlib.contextmanager
def _worker(bootstrap: str, prefix: str, home: Path, embedded: bool) -> Iterator[subprocess.Popen[str]]:
    from swarmlog.infra.broker import free_port

    env = {**os.environ, "SWARMLOG_BOOTSTRAP": bootstrap, "SWARMLOG_TOPIC_PREFIX": prefix,
           "SWARMLOG_HOME": str(home)}
    if embedded:
        env["SWARMLOG_EMBEDDED"] = "1"
    log_file = open(home / "worker.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "swarmlog.infra.cli", "worker", "--name", "run-worker",
                             "--web-port", str(free_port())], env=env, stdout=log_file, stderr=subprocess.STDOUT,
                            text=True)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log_file.close()


def _wait_for_worker(bootstrap: str, prefix: str) -> bool:
    """Let the worker fold the last inputs (and its own outputs) before it is stopped; False
    if it still lagged after 30 s."""
    from swarmlog.infra.consumed import group_id, wait_consumed
    from swarmlog.processors.app import default_domains

    topics = sorted({prefix + t for topics, _ in default_domains().values() for t in topics})
    return not wait_consumed(bootstrap, group_id(prefix), topics, timeout=30)


def replay_summary(bootstrap: str, prefix: str) -> dict[str, Any]:
    """Replay and verify the run's topics through the same reducers; summarise."""
    from swarmlog.projections.consensus import ConsensusProjection
    from swarmlog.projections.engine import Engine
    from swarmlog.projections.registry import RegistryProjection, find_by_capability
    from swarmlog.projections.routing import RoutingProjection
    from swarmlog.projections.sessions import SessionProjection

    topics = [prefix + t for t in TOPICS]
    engine = Engine([RegistryProjection(), RoutingProjection(), ConsensusProjection(clock_scope="lane"),
                     SessionProjection(clock_scope="lane")])
    ranges = plan_ranges(bootstrap, topics)
    records = 0
    for record in read_records(bootstrap, ranges):
        engine.feed(record)
        records += 1
    engine.finish()
    determinism = compare_live_tables(bootstrap, prefix)
    routing = engine.stores["routing"]
    statuses = Counter(str(v.get("status")) for _, v in routing.scan("cmd/") if isinstance(v, dict))
    consensus = [v for _, v in engine.stores["consensus"].scan("proposal/") if isinstance(v, dict)]
    registry = engine.stores["registry"]
    per_capability = {cap: len(find_by_capability(registry, cap)) for cap in CAPABILITIES}
    return {
        "records_read": records,
        "verification": dict(sorted(engine.counts.items())),
        "commands_by_status": dict(statuses),
        "agents_per_capability": per_capability,
        "proposals": [{"status": p.get("status"), "policy": p.get("policy")} for p in consensus],
        "live_tables_equal_replay": determinism,
    }


def compare_live_tables(bootstrap: str, prefix: str) -> dict[str, bool]:
    """Each worker table (read back from its changelog topic) against a replay of exactly the
    topics its live domain consumes, through the same reducers, into an empty store."""
    from swarmlog.processors.app import default_domains
    from swarmlog.projections.base import MemoryStore, canonical_json, snapshot
    from swarmlog.projections.engine import Engine
    from swarmlog.projections.registry import RegistryProjection

    app_id = "swarmlog" + ("-" + prefix.strip(".-_") if prefix else "")
    registry = Engine([RegistryProjection()])
    for batch in read_record_batches(bootstrap, plan_ranges(bootstrap, [prefix + t for t in ("agents", "commands",
                                                                                              "receipts")])):
        registry.feed_many(batch)
    result: dict[str, bool] = {}
    for _domain, (topics, factory) in default_domains().items():
        projections = factory()
        # stores a domain reads but does not own: the registry from the log; the router's learned
        # latency models and trust graph only shape derived decisions, which the log records: empty
        owned = {p.name for p in projections}
        read = {name for p in projections for name in p.reads} - owned
        extra: dict[str, Any] = {name: MemoryStore() for name in read}
        if "registry" in read:
            extra["registry"] = registry.stores["registry"]
        engine = Engine(projections, extra)
        for batch in read_record_batches(bootstrap, plan_ranges(bootstrap, [prefix + t for t in topics])):
            engine.feed_many(batch)
        engine.finish()
        for projection in projections:
            topic = f"{app_id}-swarmlog-{projection.name}-changelog"
            live: dict[str, Any] = {}
            try:
                for record in read_records(bootstrap, plan_ranges(bootstrap, [topic])):
                    key = str(json.loads(record.key)) if record.key else ""
                    if record.value:
                        live[key] = json.loads(record.value)
                    else:
                        live.pop(key, None)
            except Exception:  # no changelog topic: the worker never wrote this table
                live = {}
            replayed = snapshot(engine.stores[projection.name], include_marks=True)
            result[projection.name] = canonical_json(live) == canonical_json(replayed)
            if not result[projection.name]:
                differing = sorted(k for k in set(live) | set(replayed)
                                   if canonical_json(live.get(k)) != canonical_json(replayed.get(k)))
                logging.getLogger("swarmlog.run").warning(
                    "%s: live table differs from the replay at %d key(s), e.g. %s", projection.name,
                    len(differing), "; ".join(f"{k}: live={live.get(k)!r} replay={replayed.get(k)!r}"[:400]
                                              for k in differing[:3]))
    return result


def run_main_job(agents: int, commands: int, seed: int, timeout_s: float, progress: bool) -> dict[str, Any]:
    """Run the scenario; returns the summary (printed by the CLI)."""
    from swarmlog.infra.topics import provision

    prefix = f"run-{uuid.uuid4().hex[:6]}."
    with tempfile.TemporaryDirectory(prefix="swarmlog-run-") as tmp, _broker() as (bootstrap, embedded):
        home = Path(tmp)
        provision(bootstrap, prefix=prefix)
        with _worker(bootstrap, prefix, home, embedded) as worker:
            sim = Simulation(bootstrap, prefix, agents, commands, seed)
            responder = threading.Thread(target=sim.respond, name="swarmlog-run-responder", daemon=True)
            phases: list[tuple[str, float]] = []
            t0 = time.monotonic()
            sim.create_agents()
            phases.append(("identities", time.monotonic() - t0))
            responder.start()
            sim.register()
            phases.append(("registration", time.monotonic() - t0))
            heal = _start_heal_episode(bootstrap, prefix, sim, seed)
            voters = sim.rng.sample(sim.agents, k=min(7, len(sim.agents)))
            batch = max(1, commands // 10)
            done_at = time.monotonic() + timeout_s
            with _progress(progress) as bar:
                task = bar.add_task("commands routed + receipts", total=commands * 2, detail="") if bar else None
                while sim.stats.commands < commands:
                    sim.send_commands(min(batch, commands - sim.stats.commands))
                    _update(bar, task, sim)
                sim.propose(voters)
                while time.monotonic() < done_at and worker.poll() is None:
                    _update(bar, task, sim)
                    finished = sim.stats.routed + sim.stats.route_failed >= commands and \
                        sim.stats.receipts >= sim.stats.routed and sim.stats.decision is not None
                    if finished:
                        break
                    time.sleep(0.2)
            phases.append(("commands and consensus", time.monotonic() - t0))
            heal.join()
            phases.append(("self-healing episode", time.monotonic() - t0))
            from swarmlog.infra.run_market import MarketEpisode

            market = MarketEpisode(sim)  # the "decentralized agent marketplace" use case (run_market.py)
            market.run()
            phases.append(("marketplace", time.monotonic() - t0))
            from swarmlog.infra.run_swarm import SwarmEpisode

            swarm = SwarmEpisode(sim)  # vote + hive mind, task auction, optimisation job, formation
            swarm.run()
            phases.append(("swarm", time.monotonic() - t0))
            sim.close()
            responder.join(timeout=10)
            worker_drained = _wait_for_worker(bootstrap, prefix)  # it folds what was sent last
            worker_alive = worker.poll() is None
        summary = replay_summary(bootstrap, prefix)
        summary["market"] = market.summary(bootstrap, prefix)
        summary["swarm"] = swarm.summary(bootstrap, prefix)
        phases.append(("replay and verify", time.monotonic() - t0))
        stats = sim.stats
        summary.update({
            "broker": "embedded" if embedded else bootstrap,
            "agents": agents, "commands_sent": stats.commands, "routed": stats.routed,
            "route_failed": stats.route_failed, "route_failures_by_reason": dict(stats.failures),
            "receipts": stats.receipts, "votes": stats.votes, "consensus": stats.decision,
            "seconds_to_first_route": stats.first_route_seconds, "seconds_to_decision": stats.decision_seconds,
            "worker_survived": worker_alive, "worker_caught_up": worker_drained,
            "phases_seconds": {k: round(v, 1) for k, v in phases},
            "complete": stats.routed + stats.route_failed >= commands and stats.decision is not None,
        })
        worker_log = (home / "worker.log").read_text()
        keep = get_settings().home / "last-run-worker.log"
        keep.parent.mkdir(parents=True, exist_ok=True)
        keep.write_text(worker_log)
        summary["worker_log"] = str(keep)
        summary["self_healing"] = heal.summary()
        if not summary["complete"]:
            summary["worker_log_tail"] = worker_log[-3000:]
        return summary


def _start_heal_episode(bootstrap: str, prefix: str, sim: Simulation, seed: int) -> Any:
    """The self-healing service mesh episode (infra/run_heal.py), next to the commands phase."""
    from swarmlog.infra.run_heal import HealEpisode

    episode = HealEpisode(bootstrap, prefix, sim.agents, seed, sim.kafka)
    episode.start()
    return episode


@contextlib.contextmanager
def _progress(enabled: bool) -> Iterator[Any]:
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[detail]}"), transient=False) as bar:
        yield bar


def _update(bar: Any, task: Any, sim: Simulation) -> None:
    if bar is None:
        return
    s = sim.stats
    bar.update(task, completed=s.routed + s.route_failed + s.receipts,
               detail=f"sent {s.commands} · routed {s.routed} · failed {s.route_failed} · receipts {s.receipts}"
                      f" · consensus {s.decision or 'pending'}")
