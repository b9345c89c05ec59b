"""The audit: everything anyone holding the log and the public keys can check, in one pass.

``Auditor`` is the pure core: feed it raw records (any interleaving of partitions, each
partition in offset order) and ``finish()`` returns an :class:`AuditReport`. It

1. verifies every record once with the same :class:`~swarmlog.streams.verify.Verifier` the
   workers use (seals, inline signatures, hash chains, sequence) — every record that is not
   authenticated, and every verifier problem (a sealed event that never arrived, a gap
   between seals, a broken chain), becomes a :class:`Finding` with its position;
2. folds the authenticated events into fresh in-memory stores through the same
   :class:`~swarmlog.projections.engine.Engine` and projections as the live worker's domains
   (``processors.app.default_domains``) and the registry replica;
3. recomputes one RFC 9162 Merkle log per lane (physical topic, partition): the event hashes
   of the lane's authenticated events in offset order (the ledger contract), and checks each
   ``ledger.checkpoint`` event found in the input against it: its root at its tree size, the
   consistency proof from the previous checkpoint of the same origin, and (once the ledger
   module is merged) its signed note.

Reading from Kafka and reading the live tables are thin adapters below (``run_audit``,
``live_from_changelogs``, ``live_from_datadirs``); the CLI is ``infra/cli_audit.py``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from swarmlog.projections.base import JSON, MemoryStore, Projection, StateStore, canonical_json, snapshot
from swarmlog.projections.engine import Engine
from swarmlog.streams.codec import CodecError, SchemaStore, default_store
from swarmlog.streams.merkle import SHA256, HashAlgorithm, MerkleLog, ProofError, verify_consistency
from swarmlog.streams.verify import Problem, RawRecord, Status, Verdict, Verifier

log = logging.getLogger(__name__)

CHECKPOINT_EVENT_TYPE = "ledger.checkpoint"
ORIGIN_PREFIX = "swarmlog/ledger/"
REGISTRY_TOPICS = ("agents", "commands", "receipts")


def lane_origin(topic: str, partition: int) -> str:
    """The ledger origin of a lane (the contract with the worker's ledger)."""
    return f"{ORIGIN_PREFIX}{topic}/{partition}"


def parse_origin(origin: str) -> tuple[str, int] | None:
    """(physical topic, partition) of a ledger origin, None if it is not one of ours."""
    if not origin.startswith(ORIGIN_PREFIX):
        return None
    origin = origin.removesuffix("/sha3-256")  # a SHA3-256 ledger names its hash in the origin
    topic, _, partition = origin[len(ORIGIN_PREFIX):].rpartition("/")
    if not topic or not partition.isdigit():
        return None
    return topic, int(partition)


@dataclass(frozen=True, slots=True)
class Finding:
    """One discrepancy, where it is and why. ``severity`` "error" fails the audit."""

    kind: str
    topic: str
    partition: int | None
    offset: int | None
    reason: str
    severity: str = "error"

    @property
    def position(self) -> str:
        where = self.topic
        if self.partition is not None:
            where += f"[{self.partition}]"
        if self.offset is not None:
            where += f"@{self.offset}"
        return where

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "topic": self.topic, "partition": self.partition, "offset": self.offset,
                "reason": self.reason, "severity": self.severity}


@dataclass
class Checkpoint:
    """A ``ledger.checkpoint`` event as the audit saw it."""

    origin: str
    tree_size: int
    root_hash: bytes
    previous_tree_size: int
    consistency_proof: list[bytes]
    payload: dict[str, Any]
    producer: str
    record: RawRecord


@dataclass
class LaneReport:
    topic: str
    partition: int
    leaves: int
    root: str
    checkpoints: int = 0
    verified_size: int | None = None
    status: str = "no checkpoint"

    def as_dict(self) -> dict[str, Any]:
        return {"topic": self.topic, "partition": self.partition, "origin": lane_origin(self.topic, self.partition),
                "leaves": self.leaves, "root": self.root, "checkpoints": self.checkpoints,
                "verified_size": self.verified_size, "status": self.status}


@dataclass
class AuditReport:
    records: int
    counts: dict[str, int]
    findings: list[Finding]
    lanes: list[LaneReport]
    projections: dict[str, dict[str, JSON]]
    projection_counts: dict[str, dict[str, int]]
    skipped_projections: dict[str, str]
    notes: list[str] = field(default_factory=list)
    live_compared: dict[str, bool] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not any(f.severity == "error" for f in self.findings)

    def add_projection_diff(self, live: Mapping[str, Mapping[str, LiveValue]], source: str) -> None:
        """Diff the rebuilt projections against live tables (``live_compared`` per table)."""
        for name, live_table in sorted(live.items()):
            if name not in self.projections:
                self.notes.append(f"live table {name!r} has no rebuilt counterpart in this audit")
                continue
            found = diff_table(name, self.projections[name], live_table, source)
            self.findings.extend(found)
            self.live_compared[name] = not found

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "records": self.records, "counts": dict(sorted(self.counts.items())),
            "problems": [f.as_dict() for f in self.findings],
            "lanes": [lane.as_dict() for lane in self.lanes],
            "projections": {name: {"keys": len(table), "digest": _digest(table)}
                            for name, table in sorted(self.projections.items())},
            "projection_counts": self.projection_counts,
            "skipped_projections": self.skipped_projections,
            "live_tables_equal_rebuilt": self.live_compared,
            "notes": self.notes,
        }


def _digest(table: Mapping[str, JSON]) -> str:
    import hashlib

    return hashlib.sha256(canonical_json(dict(table)).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class LiveValue:
    """A live table entry and where it was read (changelog offset or RocksDB file)."""

    value: JSON
    topic: str
    partition: int | None = None
    offset: int | None = None


def diff_table(name: str, rebuilt: Mapping[str, JSON], live: Mapping[str, LiveValue], source: str) -> list[Finding]:
    """Every key whose live value differs from the rebuilt one (missing, extra, different)."""
    out: list[Finding] = []
    for key in sorted(set(rebuilt) | set(live)):
        mine = rebuilt.get(key)
        theirs = live.get(key)
        if theirs is None:
            out.append(Finding("projection-missing-live", f"{source}:{name}", None, None,
                               f"key {key!r} is in the rebuilt {name} table but not in the live one"))
        elif key not in rebuilt:
            out.append(Finding("projection-extra-live", theirs.topic, theirs.partition, theirs.offset,
                               f"{name} key {key!r} is live but no authenticated event produces it"))
        elif canonical_json(mine) != canonical_json(theirs.value):
            out.append(Finding("projection-mismatch", theirs.topic, theirs.partition, theirs.offset,
                               f"{name} key {key!r}: live {_short(theirs.value)} != rebuilt {_short(mine)}"))
    return out


def _short(value: JSON) -> str:
    text = canonical_json(value)
    return text if len(text) <= 200 else text[:197] + "..."


# --------------------------------------------------------------------------- domains


@dataclass
class _Domain:
    name: str
    topics: frozenset[str]
    engine: Engine


def default_audit_domains(prefix: str = "") -> list[tuple[str, list[str], Callable[[], list[Projection]]]]:
    """The registry replica and every worker domain: (name, physical topics, projections factory)."""
    from swarmlog.processors.app import default_domains, default_replica_projections

    def registry_only() -> list[Projection]:
        # the replica also keeps stores that only shape routing decisions (learned latency, a copy
        # of the trust graph); the log records those decisions, and trust has its own domain
        return [p for p in default_replica_projections() if p.name == "registry"]

    domains: list[tuple[str, list[str], Callable[[], list[Projection]]]] = [
        ("registry", [prefix + t for t in REGISTRY_TOPICS], registry_only)]
    for name, (topics, factory) in default_domains().items():
        domains.append((name, [prefix + t for t in topics], factory))
    return domains


class Auditor:
    """Pure audit core (see the module docstring). Feed records, then ``finish()``.

    ``topics``: the physical topics being read; a domain is rebuilt only when all of its
    topics are among them (a projection over part of its input would be wrong, not
    evidence). ``from_start``: the input starts at the beginning of every partition, so a
    sealed event that never arrived is a loss and checkpoints can be recomputed.
    """

    def __init__(self, topics: Sequence[str], *, prefix: str = "",
                 domains: Sequence[tuple[str, Sequence[str], Callable[[], list[Projection]]]] | None = None,
                 from_start: bool = True, alg: HashAlgorithm = SHA256, allow_pending: bool = False,
                 schema_store: SchemaStore | None = None,
                 verify_checkpoint: Callable[[dict[str, Any], Any], bool] | None = None) -> None:
        self.schema_store = schema_store or default_store()
        self.verifier = Verifier(store=self.schema_store)
        self.verifier.from_start = from_start
        self.from_start = from_start
        self.alg = alg
        self.allow_pending = allow_pending
        self.topics = set(topics)
        self.records = 0
        self.findings: list[Finding] = []
        self.skipped: dict[str, str] = {}
        self._leaves: dict[tuple[str, int], list[tuple[int, bytes]]] = {}
        self._checkpoints: list[Checkpoint] = []
        self._verify_checkpoint = verify_checkpoint
        self.domains: list[_Domain] = []
        registry_store: StateStore | None = None
        for name, domain_topics, factory in (default_audit_domains(prefix) if domains is None else domains):
            wanted = frozenset(domain_topics)
            if name == "registry":
                # the registry is folded from whatever of its topics are read (it is only ever a
                # replica; its updates are commutative across partitions)
                present = wanted & self.topics
                if not present:
                    continue
                engine = Engine(factory(), schema_store=self.schema_store)
                registry_store = engine.stores.get("registry")
                self.domains.append(_Domain(name, frozenset(present), engine))
                continue
            missing = sorted(wanted - self.topics)
            if missing:
                if wanted & self.topics:
                    self.skipped[name] = f"not all of its topics were read (missing {', '.join(missing)})"
                continue
            projections = factory()
            extra: dict[str, StateStore] = {}
            for needed in {n for p in projections for n in p.reads}:
                if needed == "registry" and registry_store is not None:
                    extra[needed] = registry_store
                else:
                    extra[needed] = MemoryStore()
            self.domains.append(_Domain(name, wanted, Engine(projections, extra, schema_store=self.schema_store)))
        self._by_topic: dict[str, list[Engine]] = {}
        for domain in self.domains:
            for topic in domain.topics:
                self._by_topic.setdefault(topic, []).append(domain.engine)

    # ------------------------------------------------------------------ feeding
    def feed(self, record: RawRecord) -> None:
        self.records += 1
        verdicts = self.verifier.feed(record)
        if verdicts:
            self._on_verdicts(verdicts)

    def feed_all(self, records: Iterable[RawRecord]) -> None:
        for record in records:
            self.feed(record)

    def feed_many(self, records: list[RawRecord]) -> None:
        """``feed`` of each record in order (same findings, leaves and projections), a fetched
        batch at a time: the verifier decodes the batch's envelopes in one call."""
        self.records += len(records)
        verdicts = self.verifier.feed_many(records)
        if verdicts:
            self._on_verdicts(verdicts)

    def _on_verdicts(self, verdicts: list[Verdict]) -> None:
        authenticated = Status.AUTHENTICATED
        by_topic = self._by_topic
        leaves = self._leaves
        for verdict in verdicts:
            if verdict.status is not authenticated:
                self._reject(verdict)
                continue
            event = verdict.event
            if event is None:  # an authenticated seal: nothing to fold
                continue
            record = verdict.record
            lane = (record.topic, record.partition)
            bucket = leaves.get(lane)
            if bucket is None:
                bucket = leaves[lane] = []
            bucket.append((record.offset, event.hash))
            if event.event_type == CHECKPOINT_EVENT_TYPE:
                self._collect_checkpoint(verdict)
            engines = by_topic.get(record.topic)
            if engines:
                single = [verdict]
                for engine in engines:
                    engine.decide(single)

    def _reject(self, verdict: Verdict) -> None:
        record = verdict.record
        kind = verdict.status.value if verdict.kind == "event" else f"seal-{verdict.status.value}"
        severity = "warning" if verdict.status is Status.PENDING and self.allow_pending else "error"
        self.findings.append(Finding(kind, record.topic, record.partition, record.offset, verdict.reason, severity))

    def _collect_checkpoint(self, verdict: Verdict) -> None:
        event = verdict.event
        assert event is not None
        try:
            payload = event.decode_payload(self.schema_store)
        except CodecError as exc:
            record = verdict.record
            self.findings.append(Finding("checkpoint-undecodable", record.topic, record.partition, record.offset,
                                         str(exc)))
            return
        self._checkpoints.append(Checkpoint(
            origin=payload["origin"], tree_size=int(payload["tree_size"]), root_hash=bytes(payload["root_hash"]),
            previous_tree_size=int(payload.get("previous_tree_size") or 0),
            consistency_proof=[bytes(h) for h in payload.get("consistency_proof") or []],
            payload=payload, producer=event.producer, record=verdict.record))

    # ------------------------------------------------------------------ finishing
    def finish(self) -> AuditReport:
        self._on_verdicts(self.verifier.finish())
        for problem in self.verifier.problems:
            self.findings.append(_problem_finding(problem))
        lanes = self._check_ledger()
        projections: dict[str, dict[str, JSON]] = {}
        projection_counts: dict[str, dict[str, int]] = {}
        for domain in self.domains:
            for projection in domain.engine.projections:
                projections[projection.name] = snapshot(domain.engine.stores[projection.name], include_marks=True)
            projection_counts[domain.name] = dict(sorted(domain.engine.counts.items()))
        notes: list[str] = []
        if not self.from_start:
            notes.append("the read did not start at the beginning of the log: checkpoints were not recomputed")
        if self._checkpoints and self._verify_checkpoint is None:
            notes.append("checkpoint notes' signatures not checked (swarmlog.streams.checkpoint not available); "
                         "each checkpoint event's own seal/signature was verified")
        return AuditReport(self.records, dict(self.verifier.counts), self.findings, lanes, projections,
                           projection_counts, dict(self.skipped), notes)

    def _check_ledger(self) -> list[LaneReport]:
        logs: dict[tuple[str, int], MerkleLog] = {}
        reports: dict[tuple[str, int], LaneReport] = {}
        for lane in sorted(self._leaves):
            # The worker's ledger order (projections/ledger.py): the order the verifier releases
            # authenticated events — an inline-signed event at its own record, a sealed one at its
            # seal, in seq order — once per event hash. It depends only on the lane's records.
            merkle = MerkleLog(self.alg)
            leaf = merkle.append
            seen: set[bytes] = set()
            for _offset, digest in self._leaves[lane]:
                if digest not in seen:
                    seen.add(digest)
                    leaf(digest)
            logs[lane] = merkle
            reports[lane] = LaneReport(lane[0], lane[1], merkle.size, merkle.root().hex())
        by_origin: dict[str, list[Checkpoint]] = {}
        for checkpoint in self._checkpoints:
            by_origin.setdefault(checkpoint.origin, []).append(checkpoint)
        for origin, checkpoints in sorted(by_origin.items()):
            # all checkpoints of an origin share a key, hence a ledger partition: offset order is their order
            checkpoints.sort(key=lambda c: (c.record.topic, c.record.partition, c.record.offset))
            target = parse_origin(origin)
            report = reports.get(target) if target is not None else None
            if target is not None and report is None and target[0] in self.topics and self.from_start:
                report = reports[target] = LaneReport(target[0], target[1], 0, MerkleLog(self.alg).root().hex())
                logs[target] = MerkleLog(self.alg)
            self._check_origin(origin, checkpoints, logs.get(target) if target is not None else None, report)
        return [reports[lane] for lane in sorted(reports)]

    def _check_origin(self, origin: str, checkpoints: list[Checkpoint], merkle: MerkleLog | None,
                      report: LaneReport | None) -> None:
        previous: Checkpoint | None = None
        recomputable = merkle is not None and self.from_start
        for cp in checkpoints:
            where = cp.record
            if report is not None:
                report.checkpoints += 1

            def find(kind: str, reason: str, where: RawRecord = where) -> None:
                self.findings.append(Finding(kind, where.topic, where.partition, where.offset,
                                             f"{origin}: {reason}"))

            if self._verify_checkpoint is not None:
                # >>> checkpoint note signature: swarmlog.streams.checkpoint.verify_checkpoint plugs in here <<<
                identity = self.verifier.keyring.get(cp.producer)
                try:
                    good = identity is not None and self._verify_checkpoint(cp.payload, identity) is not False
                except Exception as exc:  # any refusal of the verifier is a finding, never a crash
                    good = False
                    log.debug("checkpoint verification raised: %s", exc)
                if not good:
                    find("checkpoint-signature", "the signed note does not verify with its producer's identity")
            if len(cp.root_hash) != self.alg.digest_size:
                find("checkpoint-malformed", f"root hash is {len(cp.root_hash)} bytes")
                continue
            if previous is not None:
                self._check_step(previous, cp, find)
            elif cp.previous_tree_size > 0 and self.from_start:
                find("checkpoint-previous-missing",
                     f"refers to a previous checkpoint of size {cp.previous_tree_size} that is not in the log")
            if recomputable and merkle is not None and report is not None:
                if cp.tree_size > merkle.size:
                    find("checkpoint-ahead",
                         f"covers {cp.tree_size} leaves but the log has only {merkle.size} authenticated events")
                elif cp.tree_size > 0 and merkle.root(cp.tree_size) != cp.root_hash:
                    find("checkpoint-root-mismatch",
                         f"root at size {cp.tree_size} is {cp.root_hash.hex()[:16]}…, the log gives "
                         f"{merkle.root(cp.tree_size).hex()[:16]}… (forked or rewritten history)")
                else:
                    report.verified_size = cp.tree_size
            previous = cp
        if report is not None and report.checkpoints:
            failed = any(f.reason.startswith(origin + ":") for f in self.findings)
            if not recomputable:
                report.status = "not recomputed (partial read)"
            elif failed:
                report.status = "FAILED"
            else:
                report.status = f"verified at size {report.verified_size}"

    def _check_step(self, previous: Checkpoint, cp: Checkpoint, find: Callable[[str, str], None]) -> None:
        if cp.previous_tree_size != previous.tree_size:
            find("checkpoint-previous-mismatch",
                 f"names previous size {cp.previous_tree_size}, the previous checkpoint has {previous.tree_size}")
        if cp.tree_size < previous.tree_size:
            find("checkpoint-shrinks", f"size {cp.tree_size} is below the previous {previous.tree_size}")
            return
        if previous.tree_size == 0:
            return  # every tree extends the empty one
        try:
            verify_consistency(previous.tree_size, cp.tree_size, previous.root_hash, cp.root_hash,
                               cp.consistency_proof, self.alg)
        except ProofError as exc:
            find("checkpoint-inconsistent",
                 f"not an append-only extension of the checkpoint of size {previous.tree_size} "
                 f"at offset {previous.record.offset}: {exc}")


def _problem_finding(problem: Problem) -> Finding:
    topic, partition, offset = _parse_position(problem.position)
    return Finding(problem.kind, topic, partition, offset, f"{problem.lane} seq {problem.seq}: {problem.detail}")


def _parse_position(position: str) -> tuple[str, int | None, int | None]:
    head, _, offset = position.rpartition("@")
    topic, _, partition = head.rpartition("[")
    try:
        return topic, int(partition.rstrip("]")), int(offset)
    except ValueError:
        return position, None, None


def load_checkpoint_verifier() -> Callable[[dict[str, Any], Any], bool] | None:
    """``swarmlog.streams.checkpoint.verify_checkpoint`` once the ledger module exists, else None."""
    try:
        from swarmlog.streams import checkpoint  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        return None
    verify = getattr(checkpoint, "verify_checkpoint", None)
    return verify if callable(verify) else None


# --------------------------------------------------------------------------- Kafka adapters


def run_audit(bootstrap: str, topics: Sequence[str], *, prefix: str = "", partitions: Sequence[int] | None = None,
              start_offset: int | None = None, end_offset: int | None = None, alg: HashAlgorithm = SHA256,
              allow_pending: bool = False, progress: Callable[[int, int], None] | None = None,
              domains: Sequence[tuple[str, Sequence[str], Callable[[], list[Projection]]]] | None = None,
              ) -> AuditReport:
    """Read the topics straight from Kafka (assigned partitions, no group) and audit them.

    ``progress(done, total)`` is called as records arrive (total = records planned);
    ``domains`` replaces the worker's domains (``default_audit_domains``).
    """
    from swarmlog.streams.reader import PartitionRange, plan_ranges, read_record_batches

    ranges = plan_ranges(bootstrap, topics, partitions=partitions)
    if start_offset is not None or end_offset is not None:
        ranges = [PartitionRange(r.topic, r.partition,
                                 max(r.start, start_offset) if start_offset is not None else r.start,
                                 min(r.stop or 0, end_offset) if end_offset is not None else r.stop)
                  for r in ranges]
    total = sum(max(0, (r.stop or r.start) - r.start) for r in ranges)
    from_start = start_offset is None or start_offset <= 0
    auditor = Auditor(topics, prefix=prefix, from_start=from_start, alg=alg, allow_pending=allow_pending,
                      verify_checkpoint=load_checkpoint_verifier(), domains=domains)
    done = 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    for batch in read_record_batches(bootstrap, ranges, progress=tick):
        auditor.feed_many(batch)
    report = auditor.finish()
    if partitions is not None:
        report.notes.append(f"only partitions {sorted(partitions)} were read")
    return report


def changelog_topic(app_id: str, projection: str) -> str:
    return f"{app_id}-swarmlog-{projection}-changelog"


def app_id_for(prefix: str, base: str = "swarmlog") -> str:
    """The worker's Faust app id (processors/app.py): ``swarmlog`` plus the topic prefix."""
    return base + ("-" + prefix.strip(".-_") if prefix else "")


def live_from_changelogs(bootstrap: str, app_id: str, names: Iterable[str]) -> dict[str, dict[str, LiveValue]]:
    """Live tables as their changelog topics hold them (last write per key wins, None deletes)."""
    from swarmlog.streams.reader import ReadError, plan_ranges, read_records

    tables: dict[str, dict[str, LiveValue]] = {}
    for name in names:
        topic = changelog_topic(app_id, name)
        table: dict[str, LiveValue] = {}
        try:
            ranges = plan_ranges(bootstrap, [topic])
        except ReadError:
            continue  # the worker never wrote this table
        for record in read_records(bootstrap, ranges):
            key = _json_key(record.key)
            if record.value:
                table[key] = LiveValue(json.loads(record.value), record.topic, record.partition, record.offset)
            else:
                table.pop(key, None)
        tables[name] = table
    return tables


FAUST_META_PREFIX = b"__faust\0"
"""Keys Faust keeps beside a table's rows in its RocksDB file (``__faust\\0offset__``)."""


def live_from_datadirs(datadirs: Iterable[Path], names: Iterable[str]) -> dict[str, dict[str, LiveValue]]:
    """Live tables from workers' RocksDB files (``<datadir>/**/swarmlog-<name>-<partition>.db``).

    Opened read-only (a running worker keeps its own handle); several datadirs (several
    workers) are merged, each partition file counted once.
    """
    from rocksdict import AccessType, Options, Rdict

    tables: dict[str, dict[str, LiveValue]] = {}
    for name in names:
        table: dict[str, LiveValue] = {}
        seen: set[str] = set()
        for datadir in datadirs:
            for path in sorted(Path(datadir).glob(f"**/swarmlog-{name}-*.db")):
                partition_text = path.name[len(f"swarmlog-{name}-"):-3]
                if not partition_text.isdigit() or path.name in seen:
                    continue
                seen.add(path.name)
                db = Rdict(str(path), options=Options(raw_mode=True), access_type=AccessType.read_only())
                try:
                    for raw_key, raw_value in db.items():
                        if cast(bytes, raw_key).startswith(FAUST_META_PREFIX):
                            continue  # Faust's own bookkeeping (the persisted changelog offset), not a table key
                        value = json.loads(cast(bytes, raw_value))
                        table[_json_key(cast(bytes, raw_key))] = LiveValue(value, str(path), int(partition_text))
                finally:
                    db.close()
        if seen:
            tables[name] = table
    return tables


def _json_key(raw: bytes | None) -> str:
    if not raw:
        return ""
    value = json.loads(raw)
    return value if isinstance(value, str) else str(value)
