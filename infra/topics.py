"""The topic catalog (DESIGN.md §1) and topic provisioning / inspection.

Why a catalog: every topic swarmlog writes is declared once here with its partitions,
retention and cleanup policy, so provisioning is declarative and idempotent and every
process agrees on names (``topic_name`` applies ``SWARMLOG_TOPIC_PREFIX``).

Event topics are the source of truth: ``cleanup.policy=delete`` with ``retention.ms=-1``
(keep forever) unless ``SWARMLOG_EVENT_RETENTION_MS`` bounds it. Projection topics
(registered later by the code that owns them, with :func:`register_projection_topic`) are
derived state keyed by entity: ``cleanup.policy=compact``.

Embedded-broker (Tansu 0.6) facts this module works around, found by testing:

* Tansu's high watermark is the *base offset of the last record batch* + 1, not the last
  offset + 1, so watermark arithmetic undercounts when producers batch. :func:`watermarks`
  corrects this by reading the last batch of each partition (only on Tansu).
* Tansu accepts topic configs (and stores them) without validating them; enforcement of
  ``retention.ms`` was not observed. If a broker ever rejects the configs, provisioning on
  Tansu retries without them and logs a warning; on real Kafka a rejection is an error.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, ClusterMetadata, NewTopic
from pydantic import BaseModel, Field

from swarmlog.infra.broker import admin_client, client_config
from swarmlog.streams.settings import Settings, get_settings

log = logging.getLogger(__name__)

_TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_PREFIX_SEPARATORS = (".", "-", "_")

# Errors that mean "this broker does not take these topic configs": the Tansu fallback.
_CONFIG_REJECTED = {
    KafkaError.INVALID_CONFIG,
    KafkaError.UNSUPPORTED_VERSION,
    KafkaError.INVALID_REQUEST,
    KafkaError.POLICY_VIOLATION,
    KafkaError.UNKNOWN,
}


class CleanupPolicy(StrEnum):
    """Kafka ``cleanup.policy``."""

    DELETE = "delete"
    COMPACT = "compact"


class TopicKind(StrEnum):
    """Event topics hold the log (source of truth); projection topics hold derived state."""

    EVENT = "event"
    PROJECTION = "projection"


class ProvisionError(RuntimeError):
    """Topics could not be created or did not appear in metadata in time."""


class TopicNotFound(LookupError):
    """The broker does not know the topic."""


@dataclass(frozen=True)
class TopicSpec:
    """One catalog entry. ``None`` fields are resolved from the settings at provisioning
    time, so a process started with other ``SWARMLOG_*`` values provisions accordingly."""

    logical: str
    description: str
    kind: TopicKind = TopicKind.EVENT
    partitions: int | None = None  # None: settings.partitions
    retention_ms: int | None = None  # None: settings.event_retention_ms (events) / -1 (projections)
    extra_config: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _TOPIC_RE.match(self.logical):
            raise ValueError(f"invalid topic name {self.logical!r}: use [A-Za-z0-9._-], at most 249 chars")
        if self.partitions is not None and self.partitions < 1:
            raise ValueError(f"{self.logical}: partitions must be >= 1")

    @property
    def cleanup_policy(self) -> CleanupPolicy:
        return CleanupPolicy.COMPACT if self.kind is TopicKind.PROJECTION else CleanupPolicy.DELETE

    def name(self, prefix: str | None = None) -> str:
        """The physical topic name (with the configured or given prefix)."""
        return topic_name(self.logical, prefix=prefix)

    def resolved_partitions(self, settings: Settings | None = None) -> int:
        return self.partitions if self.partitions is not None else (settings or get_settings()).partitions

    def resolved_retention_ms(self, settings: Settings | None = None) -> int:
        if self.retention_ms is not None:
            return self.retention_ms
        if self.kind is TopicKind.PROJECTION:
            return -1  # compaction bounds it; the latest value per key must never expire
        return (settings or get_settings()).event_retention_ms

    def config(self, settings: Settings | None = None) -> dict[str, str]:
        """Topic configs passed to CreateTopics."""
        conf = {
            "cleanup.policy": self.cleanup_policy.value,
            "retention.ms": str(self.resolved_retention_ms(settings)),
        }
        conf.update(self.extra_config)
        return conf


class TopicInfo(BaseModel):
    """One topic as the broker reports it (``swarmlog topics --json`` prints a list of these)."""

    name: str
    partitions: int
    messages: int = Field(
        description="Sum over partitions of high - low watermark (an upper bound on compacted topics)."
    )
    logical: str | None = Field(default=None, description="Catalog name, when the topic is in the catalog.")
    kind: TopicKind | None = None


# --------------------------------------------------------------------------- the catalog

_EVENT_TOPICS: tuple[tuple[str, str], ...] = (
    (
        "agents",
        "Agent lifecycle: registration, heartbeats and health, deregistration.",
    ),
    ("commands", "Commands addressed to agents (task requests, routing decisions)."),
    ("receipts", "Execution receipts of commands: duration, success, error."),
    ("sessions", "Distributed sessions: opened, commands attached, closed or expired."),
    ("consensus", "Proposals, individually signed votes and decisions."),
    ("trust", "Identity documents, key rotation, revocation, trust observations and delegations."),
    ("market", "Capability market: listings, bids, contracts, trades, ratings."),
    ("heal", "Self-healing: anomalies, diagnoses, heal actions and outcomes, circuit states."),
    ("metrics", "Agent and worker metrics, as events."),
    ("swarm", "Swarm layer: gossip, pheromones, task markets, votes, positions, optimization jobs."),
    ("deadletter", "Rejected input: original bytes, reason and source offset."),
)

_catalog_lock = threading.Lock()
CATALOG: dict[str, TopicSpec] = {logical: TopicSpec(logical, text) for logical, text in _EVENT_TOPICS}
# The Merkle ledger is one append-only sequence (RFC 9162 style): one partition gives it
# the single total order that leaf indexes and consistency proofs rely on.
CATALOG["ledger"] = TopicSpec(
    "ledger", "Merkle ledger: leaves and signed checkpoints (tree heads) over the sealed log.", partitions=1
)

#: The logical names of the built-in event topics, in catalog order.
EVENT_TOPICS: tuple[str, ...] = tuple(CATALOG)


def register_topic(spec: TopicSpec) -> TopicSpec:
    """Add a topic to the catalog. Re-registering an identical spec is a no-op (module
    reloads, repeated imports); a different spec under the same name is an error."""
    with _catalog_lock:
        existing = CATALOG.get(spec.logical)
        if existing is not None and existing != spec:
            raise ValueError(f"topic {spec.logical!r} is already registered with a different spec")
        CATALOG[spec.logical] = spec
    return spec


def register_projection_topic(
    logical: str,
    description: str,
    *,
    partitions: int | None = None,
    extra_config: Mapping[str, str] | None = None,
) -> TopicSpec:
    """Declare a compacted projection topic (derived state, latest value per key)."""
    return register_topic(
        TopicSpec(
            logical,
            description,
            kind=TopicKind.PROJECTION,
            partitions=partitions,
            extra_config=dict(extra_config or {}),
        )
    )


def catalog() -> list[TopicSpec]:
    """All registered topics in registration order."""
    with _catalog_lock:
        return list(CATALOG.values())


def get_spec(logical: str) -> TopicSpec:
    try:
        return CATALOG[logical]
    except KeyError:
        known = ", ".join(CATALOG)
        raise KeyError(f"unknown topic {logical!r}; the catalog has: {known}") from None


def topic_name(logical: str, *, prefix: str | None = None) -> str:
    """Physical topic name: ``prefix`` (default ``settings.topic_prefix``) + logical name.

    A prefix not ending in ``.``, ``-`` or ``_`` is joined with ``.`` (``acme`` →
    ``acme.agents``) so names stay readable on a shared cluster.
    """
    prefix = get_settings().topic_prefix if prefix is None else prefix
    if prefix and not prefix.endswith(_PREFIX_SEPARATORS):
        prefix += "."
    name = f"{prefix}{logical}"
    if not _TOPIC_RE.match(name) or name in (".", ".."):
        raise ValueError(f"invalid topic name {name!r}: use [A-Za-z0-9._-], at most 249 chars")
    return name


def logical_name(name: str, *, prefix: str | None = None) -> str | None:
    """Inverse of :func:`topic_name` for catalog topics; None for anything else."""
    for spec in catalog():
        if topic_name(spec.logical, prefix=prefix) == name:
            return spec.logical
    return None


# --------------------------------------------------------------------------- broker helpers


def _is_tansu(md: ClusterMetadata) -> bool:
    """Tansu reports its cluster id (default ``tansu_cluster``) in metadata."""
    cluster_id = md.cluster_id or ""
    return "tansu" in cluster_id.lower()


def _inspect_consumer(bootstrap: str) -> Consumer:
    """A consumer that only assigns partitions and never joins or commits: no group side
    effects (librdkafka insists on a group.id even so)."""
    return Consumer(
        client_config(
            bootstrap,
            **{
                "group.id": f"swarmlog-inspect-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "error",
                "enable.partition.eof": False,
            },
        )
    )


def _wait_for_topics(admin: AdminClient, expected: Mapping[str, int], timeout: float) -> ClusterMetadata:
    """Poll metadata until every topic exists with at least the expected partitions, each
    with a leader (CreateTopics returns before the metadata of a real cluster catches up)."""
    deadline = time.monotonic() + timeout
    pending: dict[str, str] = dict.fromkeys(expected, "not in metadata")
    while True:
        md = admin.list_topics(timeout=max(0.5, min(5.0, deadline - time.monotonic())))
        pending = {}
        for name, want in expected.items():
            meta = md.topics.get(name)
            if meta is None or meta.error is not None:
                pending[name] = "not in metadata" if meta is None else str(meta.error)
            elif len(meta.partitions) < want:
                pending[name] = f"{len(meta.partitions)}/{want} partitions"
            elif any(p.leader < 0 for p in meta.partitions.values()):
                pending[name] = "partitions without a leader"
        if not pending:
            return md
        if time.monotonic() >= deadline:
            detail = "; ".join(f"{n}: {why}" for n, why in sorted(pending.items()))
            raise ProvisionError(f"topics did not become ready within {timeout:.0f}s: {detail}")
        time.sleep(0.05)


def _create(
    admin: AdminClient, requests: list[NewTopic], timeout: float, *, tansu: bool
) -> tuple[list[str], dict[str, KafkaError]]:
    """CreateTopics; returns (created names, failures). TOPIC_ALREADY_EXISTS counts as neither."""
    created: list[str] = []
    failed: dict[str, KafkaError] = {}
    if not requests:
        return created, failed
    futures = admin.create_topics(requests, operation_timeout=timeout, request_timeout=timeout)
    for name, future in futures.items():
        try:
            future.result(timeout)
            created.append(name)
        except KafkaException as exc:
            err: KafkaError = exc.args[0]
            if err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                log.debug("topic %s already exists", name)
            else:
                failed[name] = err
    if tansu and failed:
        retry = [r for r in requests if r.topic in failed and failed[r.topic].code() in _CONFIG_REJECTED]
        if retry:
            for r in retry:
                log.warning(
                    "broker rejected configs for %s (%s); creating it without configs "
                    "(embedded broker: retention/cleanup policy not applied)",
                    r.topic,
                    failed[r.topic].str(),
                )
            bare = [NewTopic(r.topic, r.num_partitions, r.replication_factor) for r in retry]
            more, still = _create(admin, bare, timeout, tansu=False)
            for name in [r.topic for r in retry]:
                failed.pop(name, None)
            created += more
            failed.update(still)
    return created, failed


def ensure_topics(
    bootstrap: str,
    topics: Mapping[str, int],
    *,
    config: Mapping[str, Mapping[str, str]] | None = None,
    replication: int | None = None,
    timeout: float = 30.0,
) -> list[str]:
    """Create the missing topics of ``{name: partitions}`` and wait until all are in
    metadata. Returns the names this call created. Idempotent; existing topics are left
    alone (a warning if they have fewer partitions than asked for)."""
    for name in topics:
        if not _TOPIC_RE.match(name):
            raise ValueError(f"invalid topic name {name!r}")
    rf = replication if replication is not None else get_settings().replication
    admin = admin_client(bootstrap)
    try:
        md = admin.list_topics(timeout=min(timeout, 10.0))
    except KafkaException as exc:
        raise ProvisionError(f"cannot reach Kafka at {bootstrap}: {exc}") from exc
    missing: list[NewTopic] = []
    for name, want in topics.items():
        meta = md.topics.get(name)
        if meta is None or meta.error is not None:
            conf = dict((config or {}).get(name, {}))
            missing.append(NewTopic(name, num_partitions=want, replication_factor=rf, config=conf))
        elif len(meta.partitions) < want:
            log.warning(
                "topic %s exists with %d partitions, fewer than the %d asked for; left as is",
                name,
                len(meta.partitions),
                want,
            )
    created, failed = _create(admin, missing, timeout, tansu=_is_tansu(md))
    if failed:
        detail = "; ".join(f"{n}: {e.str()}" for n, e in sorted(failed.items()))
        raise ProvisionError(f"could not create topics on {bootstrap}: {detail}")
    expected = {n: (want if n in created else 1) for n, want in topics.items()}
    _wait_for_topics(admin, expected, timeout)
    for name in created:
        log.info("created topic %s (%d partitions)", name, topics[name])
    return [n for n in topics if n in created]


def provision(
    bootstrap: str,
    topics: Iterable[str | TopicSpec] | None = None,
    partitions: int | None = None,
    *,
    prefix: str | None = None,
    replication: int | None = None,
    timeout: float = 30.0,
) -> list[str]:
    """Create the catalog topics that are missing (all of them by default) and return the
    physical names created. Safe to run any number of times.

    ``topics``: logical names or specs; ``partitions`` overrides every spec's count;
    ``prefix`` overrides ``settings.topic_prefix`` (tests use it for isolation).
    """
    settings = get_settings()
    specs = [
        t if isinstance(t, TopicSpec) else get_spec(t) for t in (catalog() if topics is None else topics)
    ]
    wanted: dict[str, int] = {}
    configs: dict[str, dict[str, str]] = {}
    for spec in specs:
        name = spec.name(prefix)
        wanted[name] = partitions if partitions is not None else spec.resolved_partitions(settings)
        configs[name] = spec.config(settings)
    created = ensure_topics(bootstrap, wanted, config=configs, replication=replication, timeout=timeout)
    for name in created:
        _PARTITIONS.pop((bootstrap, name), None)
    return created


def delete_topics(bootstrap: str, names: Iterable[str], *, timeout: float = 30.0) -> list[str]:
    """Delete topics (unknown ones are ignored); returns the names deleted. For tests and
    tooling — swarmlog itself never deletes its log."""
    names = list(names)
    if not names:
        return []
    admin = admin_client(bootstrap)
    deleted: list[str] = []
    for name, future in admin.delete_topics(
        names, operation_timeout=timeout, request_timeout=timeout
    ).items():
        try:
            future.result(timeout)
            deleted.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise
        _PARTITIONS.pop((bootstrap, name), None)
    return deleted


def _topic_metadata(bootstrap: str, timeout: float) -> ClusterMetadata:
    admin = admin_client(bootstrap)
    return admin.list_topics(timeout=timeout)


def watermarks(
    bootstrap: str,
    topics: Iterable[str],
    *,
    timeout: float = 10.0,
    tail_scan: bool | None = None,
) -> dict[str, list[tuple[int, int]]]:
    """``{topic: [(low, high) per partition]}`` — the offsets a reader needs to know where
    a partition's log starts and ends.

    ``tail_scan`` (default: only on Tansu) corrects Tansu's high watermark, which points
    just past the *first* record of the last batch: we read that batch and use its last
    offset + 1. Consumers assign partitions only; no group join, no commits.
    """
    return _watermarks(bootstrap, _topic_metadata(bootstrap, timeout), list(topics), timeout, tail_scan)


def _watermarks(
    bootstrap: str, md: ClusterMetadata, names: list[str], timeout: float, tail_scan: bool | None
) -> dict[str, list[tuple[int, int]]]:
    for name in names:
        if name not in md.topics or md.topics[name].error is not None:
            raise TopicNotFound(f"topic {name!r} does not exist on {bootstrap}")
    consumer = _inspect_consumer(bootstrap)
    try:
        result: dict[str, list[tuple[int, int]]] = {}
        for name in names:
            marks = []
            for pid in sorted(md.topics[name].partitions):
                low, high = consumer.get_watermark_offsets(TopicPartition(name, pid), timeout=timeout)
                marks.append((int(low), int(high)))
            result[name] = marks
        if tail_scan if tail_scan is not None else _is_tansu(md):
            _correct_tails(consumer, result, timeout)
        return result
    finally:
        consumer.close()


def _correct_tails(consumer: Consumer, marks: dict[str, list[tuple[int, int]]], timeout: float) -> None:
    """Read from ``high - 1`` on every non-empty partition; the fetch returns the whole last
    record batch, whose last offset + 1 is the true end."""
    todo = {
        (name, pid): high
        for name, parts in marks.items()
        for pid, (low, high) in enumerate(parts)
        if high > low
    }
    if not todo:
        return
    consumer.assign([TopicPartition(name, pid, high - 1) for (name, pid), high in todo.items()])
    ends = dict(todo)
    seen: set[tuple[str, int]] = set()
    deadline = time.monotonic() + timeout
    quiet_until: float | None = None
    while time.monotonic() < deadline:
        batch = consumer.consume(num_messages=10_000, timeout=0.05)
        got = False
        for msg in batch:
            if msg.error() is not None:
                log.debug("tail scan: %s", msg.error())
                continue
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            if topic is None or partition is None or offset is None:
                continue
            key = (topic, partition)
            seen.add(key)
            got = True
            ends[key] = max(ends[key], offset + 1)
        if len(seen) == len(todo):
            # the rest of a fetched batch is already queued: drain briefly, then stop
            if quiet_until is None or got:
                quiet_until = time.monotonic() + 0.05
            elif time.monotonic() >= quiet_until:
                break
    if len(seen) < len(todo):
        log.warning("tail scan: no data from %d partition(s); their counts may be low", len(todo) - len(seen))
    consumer.unassign()
    for (name, pid), end in ends.items():
        low, _ = marks[name][pid]
        marks[name][pid] = (low, end)


def describe(
    bootstrap: str,
    topics: Iterable[str] | None = None,
    *,
    include_internal: bool = False,
    prefix: str | None = None,
    timeout: float = 10.0,
) -> list[TopicInfo]:
    """Topics on the broker (all, or the given physical names) with partition and message
    counts, sorted by name. Internal topics (``__consumer_offsets``...) are hidden unless
    ``include_internal``."""
    md = _topic_metadata(bootstrap, timeout)
    if topics is None:
        names = sorted(n for n in md.topics if include_internal or not n.startswith("__"))
    else:
        names = sorted(topics)
    marks = _watermarks(bootstrap, md, names, timeout, None) if names else {}
    infos = []
    for name in names:
        logical = logical_name(name, prefix=prefix)
        infos.append(
            TopicInfo(
                name=name,
                partitions=len(marks[name]),
                messages=sum(high - low for low, high in marks[name]),
                logical=logical,
                kind=CATALOG[logical].kind if logical is not None else None,
            )
        )
    return infos


_PARTITIONS: dict[tuple[str, str], int] = {}
_partitions_lock = threading.Lock()


def partition_count(bootstrap: str, topic: str, *, timeout: float = 10.0) -> int:
    """Partitions of ``topic`` (cached per bootstrap; partition counts only grow and
    swarmlog never adds partitions to a live topic, because that would move keys)."""
    key = (bootstrap, topic)
    with _partitions_lock:
        cached = _PARTITIONS.get(key)
    if cached is not None:
        return cached
    admin = admin_client(bootstrap)
    md = admin.list_topics(topic=topic, timeout=timeout)
    meta = md.topics.get(topic)
    if meta is None or meta.error is not None or not meta.partitions:
        raise TopicNotFound(f"topic {topic!r} does not exist on {bootstrap}")
    count = len(meta.partitions)
    with _partitions_lock:
        _PARTITIONS[key] = count
    return count


def clear_partition_cache() -> None:
    """Forget cached partition counts (tests; after an operator added partitions)."""
    with _partitions_lock:
        _PARTITIONS.clear()


def catalog_rows(prefix: str | None = None) -> list[dict[str, Any]]:
    """The catalog as plain rows (name, partitions, retention, policy, description) — for
    docs and ``--json`` output."""
    settings = get_settings()
    return [
        {
            "logical": spec.logical,
            "name": spec.name(prefix),
            "kind": spec.kind.value,
            "partitions": spec.resolved_partitions(settings),
            "retention_ms": spec.resolved_retention_ms(settings),
            "cleanup_policy": spec.cleanup_policy.value,
            "description": spec.description,
        }
        for spec in catalog()
    ]


__all__ = [
    "CATALOG",
    "EVENT_TOPICS",
    "CleanupPolicy",
    "ProvisionError",
    "TopicInfo",
    "TopicKind",
    "TopicNotFound",
    "TopicSpec",
    "catalog",
    "catalog_rows",
    "clear_partition_cache",
    "delete_topics",
    "describe",
    "ensure_topics",
    "get_spec",
    "logical_name",
    "partition_count",
    "provision",
    "register_projection_topic",
    "register_topic",
    "topic_name",
    "watermarks",
]
