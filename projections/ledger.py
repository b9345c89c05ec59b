"""The audit ledger as a pure fold: authenticated events -> one RFC 9162 Merkle log per lane.

Why per lane: a lane (physical topic, partition) is totally ordered, so the log of a lane is a
function of that partition alone. That is what makes the ledger obey the determinism rule
(docs/architecture.md): every key here is prefixed by its lane's origin, so the worker that owns
the partition is its only writer, its table changelog restores it on failover, and a replay of
the partition rebuilds exactly the same keys.

Leaves, in the order the verifier releases them (a function of the lane's records alone): the
32-byte event hash of every event the verifier classified AUTHENTICATED, each event hash once.
Seals are not leaves; records the verifier refuses (forged, duplicate, malformed ...) are not
leaves. Events a *reducer* later refuses are leaves: they are authentic facts of the log; the
ledger is evidence of what was written, not of what a projection accepted. Leaf hash =
``HASH(0x00 || event_hash)``.

Checkpoints: every ``checkpoint_leaves`` leaves or ``checkpoint_interval_ms`` of *event* time
(never wall clock, so a replay takes the same checkpoints), the lane's tree head is recorded and,
in a worker, signed and emitted as ``ledger.checkpoint`` (:mod:`swarmlog.streams.checkpoint`).
Before that, the new tree is proved consistent with the previous checkpoint from the stored nodes;
a store whose history was rewritten (a fork) raises :class:`LedgerForked` and nothing is signed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from swarmlog.projections.base import JSON, Derived, MemoryStore, StateStore
from swarmlog.streams.checkpoint import CHECKPOINT_EVENT_TYPE, alg_of_origin, lane_origin
from swarmlog.streams.envelope import Event
from swarmlog.streams.ids import uuid_text
from swarmlog.streams.ledger_store import compaction_keep
from swarmlog.streams.merkle import (
    SHA256,
    ConsistencyProof,
    HashAlgorithm,
    InclusionProof,
    MerkleLog,
    MissingNodeError,
    ProofError,
    proof_to_json,
    verify_consistency,
)
from swarmlog.streams.verify import RawRecord, Status, Verifier

log = logging.getLogger(__name__)

__all__ = [
    "LaneLedger",
    "LedgerForked",
    "LedgerPolicy",
    "LedgerRecorder",
    "StateNodeStore",
    "ledger_lanes",
    "ledger_summary",
    "prove_consistency",
    "prove_event",
    "replay_ledger",
]

#: Signs a checkpoint: (origin, size, root, previous checkpoint or None, consistency proof) -> payload.
Signer = Callable[[str, int, bytes, dict[str, Any] | None, list[bytes]], dict[str, Any]]


class LedgerForked(ValueError):
    """The stored tree is not an append-only extension of the lane's last checkpoint."""


@dataclass(frozen=True)
class LedgerPolicy:
    """Hash algorithm and checkpoint cadence (settings ``SWARMLOG_LEDGER_*``)."""

    alg: HashAlgorithm = SHA256
    checkpoint_leaves: int = 1000
    checkpoint_interval_ms: int = 60_000


def _meta_key(origin: str) -> str:
    return f"meta|{origin}"


class StateNodeStore:
    """:class:`~swarmlog.streams.merkle.NodeStore` over a projection :class:`StateStore` (hex values).

    This is what puts the ledger into the worker's RocksDB table (and its changelog) with no
    storage code of its own; a standalone ledger uses :class:`~swarmlog.streams.ledger_store.RocksNodeStore`.
    """

    __slots__ = ("_prefix", "_store")

    def __init__(self, store: StateStore, origin: str) -> None:
        self._store = store
        self._prefix = f"node|{origin}|"

    def get_node(self, level: int, index: int) -> bytes | None:
        value = self._store.get(f"{self._prefix}{level}|{index}")
        if not isinstance(value, str):
            return None
        try:
            return bytes.fromhex(value)
        except ValueError:
            return None

    def put_node(self, level: int, index: int, digest: bytes) -> None:
        self._store.put(f"{self._prefix}{level}|{index}", digest.hex())

    def delete_node(self, level: int, index: int) -> None:
        self._store.delete(f"{self._prefix}{level}|{index}")


@dataclass(frozen=True)
class CheckpointDue:
    """A tree head the lane just recorded, with what signing it needs."""

    origin: str
    tree_size: int
    root_hash: bytes
    timestamp_ms: int
    previous: dict[str, Any] | None
    consistency_proof: list[bytes]


class LaneLedger:
    """One lane's Merkle log and its checkpoints inside a :class:`StateStore`.

    Keys (all prefixed by the origin, see the module docstring): ``meta|O`` (size, checkpoint
    state), ``node|O|level|index``, ``hash|O|<event hash>`` and ``id|O|<event id>`` (leaf index),
    ``cp|O|<n>`` (the n-th checkpoint: size, root, event time).
    """

    def __init__(self, store: StateStore, origin: str, alg: HashAlgorithm | None = None) -> None:
        self.store = store
        self.origin = origin
        self.alg = alg_of_origin(origin) if alg is None else alg
        if self.alg is not alg_of_origin(origin):
            raise ValueError(f"origin {origin} is not a {self.alg.value} log")
        self.nodes = StateNodeStore(store, origin)
        self.meta: dict[str, Any] = self._load_meta()
        self.log = MerkleLog(self.alg, store=self.nodes, size=int(self.meta["size"]))

    def _load_meta(self) -> dict[str, Any]:
        meta = self.store.get(_meta_key(self.origin))
        if isinstance(meta, dict):
            return dict(meta)
        return {"size": 0, "alg": self.alg.value, "compacted": 0, "cp_count": 0, "cp_size": 0, "cp_root": None,
                "cp_ts": None}

    def stale(self) -> bool:
        """Did someone else (a table restore after failover) change this lane under us?"""
        meta = self.store.get(_meta_key(self.origin))
        size = meta.get("size") if isinstance(meta, dict) else 0
        return size != self.log.size

    @property
    def size(self) -> int:
        return self.log.size

    # ------------------------------------------------------------------ writing
    def index_of_hash(self, event_hash: bytes) -> int | None:
        value = self.store.get(f"hash|{self.origin}|{event_hash.hex()}")
        return value if isinstance(value, int) else None

    def lookup_id(self, event_id: str) -> tuple[int, bytes] | None:
        """(leaf index, event hash) of an event id in this lane, or None."""
        value = self.store.get(f"id|{self.origin}|{event_id}")
        if not isinstance(value, dict):
            return None
        return int(value["index"]), bytes.fromhex(str(value["event_hash"]))

    def append(self, event_hash: bytes, event_id: str, timestamp_ms: int) -> int | None:
        """Append one authenticated event; None if its hash is already a leaf (redelivery)."""
        if self.index_of_hash(event_hash) is not None:
            return None
        index = self.log.append(event_hash)
        self.store.put(f"hash|{self.origin}|{event_hash.hex()}", index)
        self.store.put(f"id|{self.origin}|{event_id}", {"index": index, "event_hash": event_hash.hex()})
        self.meta["size"] = self.log.size
        if self.meta.get("cp_ts") is None:
            self.meta["cp_ts"] = timestamp_ms  # the checkpoint clock starts at the first leaf
        self.store.put(_meta_key(self.origin), self.meta)
        return index

    def checkpoint_due(self, timestamp_ms: int, policy: LedgerPolicy) -> bool:
        grown = self.log.size - int(self.meta["cp_size"])
        if grown <= 0:
            return False
        if grown >= policy.checkpoint_leaves:
            return True
        started = self.meta.get("cp_ts")
        return isinstance(started, int) and timestamp_ms - started >= policy.checkpoint_interval_ms

    def take_checkpoint(self, timestamp_ms: int) -> CheckpointDue:
        """Record the current tree head as the lane's next checkpoint, after proving it extends
        the previous one from the stored nodes; :class:`LedgerForked` (nothing recorded) if not."""
        size = self.log.size
        root = self.log.root()
        previous_size = int(self.meta["cp_size"])
        previous: dict[str, Any] | None = None
        proof: list[bytes] = []
        if previous_size:
            previous_root = bytes.fromhex(str(self.meta["cp_root"]))
            try:
                proof = self.log.consistency_proof(previous_size, size)
                verify_consistency(previous_size, size, previous_root, root, proof, self.alg)
            except ProofError as exc:
                raise LedgerForked(f"{self.origin}: tree of size {size} does not extend checkpoint "
                                   f"{previous_size}: {exc}") from None
            previous = {"origin": self.origin, "tree_size": previous_size, "root_hash": previous_root}
        number = int(self.meta["cp_count"])
        self.store.put(f"cp|{self.origin}|{number:012d}", {"tree_size": size, "root_hash": root.hex(),
                                                           "timestamp_ms": timestamp_ms})
        self.meta.update(cp_count=number + 1, cp_size=size, cp_root=root.hex(), cp_ts=timestamp_ms)
        self.store.put(_meta_key(self.origin), self.meta)
        return CheckpointDue(self.origin, size, root, timestamp_ms, previous, proof)

    def compact(self, before: int) -> int:
        """Drop node hashes of leaves ``[0, before)`` that proofs about later leaves do not need
        (see :func:`~swarmlog.streams.ledger_store.compaction_keep`); returns nodes deleted. The
        hash/id index stays so a redelivered old event is still not appended twice."""
        if not 0 <= before <= self.log.size:
            raise ProofError(f"compaction point {before} is outside the log [0, {self.log.size}]")
        keep = set(compaction_keep(before))
        deleted = 0
        for level in range(before.bit_length()):
            for index in range(int(self.meta.get("compacted", 0)) >> level, before >> level):
                if (level, index) not in keep:
                    self.nodes.delete_node(level, index)
                    deleted += 1
        self.meta["compacted"] = max(int(self.meta.get("compacted", 0)), before)
        self.store.put(_meta_key(self.origin), self.meta)
        return deleted

    # ------------------------------------------------------------------ reading
    def checkpoints(self) -> Iterator[dict[str, Any]]:
        for number in range(int(self.meta["cp_count"])):
            value = self.store.get(f"cp|{self.origin}|{number:012d}")
            if isinstance(value, dict):
                yield value

    def first_checkpoint_covering(self, index: int) -> dict[str, Any] | None:
        """The timestamp proof anchor of leaf ``index``: the first checkpoint with size > index
        (binary search over the numbered checkpoints: O(log #checkpoints) reads)."""
        lo, hi = 0, int(self.meta["cp_count"])
        while lo < hi:
            mid = (lo + hi) // 2
            value = self.store.get(f"cp|{self.origin}|{mid:012d}")
            if isinstance(value, dict) and int(value["tree_size"]) > index:
                hi = mid
            else:
                lo = mid + 1
        if lo >= int(self.meta["cp_count"]):
            return None
        value = self.store.get(f"cp|{self.origin}|{lo:012d}")
        return value if isinstance(value, dict) else None

    @property
    def compacted_before(self) -> int:
        return int(self.meta.get("compacted", 0))

    def inclusion(self, index: int, size: int | None = None) -> InclusionProof:
        """Inclusion proof (with the claimed leaf hash and root) of leaf ``index``."""
        if index < self.compacted_before:
            raise MissingNodeError(f"{self.origin}: leaf {index} was compacted away "
                                   f"(leaves >= {self.compacted_before} remain)")
        tree_size = self.log.size if size is None else size
        path = self.log.inclusion_proof(index, tree_size)
        return InclusionProof(index, tree_size, tuple(path), self.alg, leaf_hash=self.log.leaf_hash(index),
                              root_hash=self.log.root(tree_size))


@dataclass
class LedgerRecorder:
    """Feeds a worker's (or a replay's) authenticated events into their lanes' ledgers.

    ``signer`` is None in replays and audits: the same checkpoints are *recorded* (they are a
    function of the log) but nothing is signed or emitted.
    """

    store: StateStore
    policy: LedgerPolicy = field(default_factory=LedgerPolicy)
    signer: Signer | None = None
    lanes: dict[str, LaneLedger] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    appended: int = 0

    def lane(self, origin: str) -> LaneLedger:
        lane = self.lanes.get(origin)
        if lane is None or lane.stale():
            lane = LaneLedger(self.store, origin, self.policy.alg)
            self.lanes[origin] = lane
        return lane

    def record(self, authenticated: Iterable[tuple[RawRecord, Event]]) -> list[tuple[Event, Derived]]:
        """Append each event to its lane; return the checkpoint events to emit (signed)."""
        derived: list[tuple[Event, Derived]] = []
        for record, event in authenticated:
            origin = lane_origin(record.topic, record.partition, self.policy.alg)
            lane = self.lane(origin)
            if lane.append(event.hash, uuid_text(event.event_id), event.timestamp_ms) is None:
                continue
            self.appended += 1
            if not lane.checkpoint_due(event.timestamp_ms, self.policy):
                continue
            try:
                due = lane.take_checkpoint(event.timestamp_ms)
            except LedgerForked as exc:
                self.problems.append(str(exc))
                log.error("refusing to sign a ledger checkpoint: %s", exc)
                continue
            if self.signer is not None:
                payload = self.signer(due.origin, due.tree_size, due.root_hash, due.previous, due.consistency_proof)
                derived.append((event, Derived(CHECKPOINT_EVENT_TYPE, payload, subject=due.origin)))
        return derived


def replay_ledger(records: Iterable[RawRecord], policy: LedgerPolicy | None = None,
                  store: StateStore | None = None, verifier: Verifier | None = None) -> LedgerRecorder:
    """The ledger a worker would hold after ``records``, rebuilt from the log alone (no signing).

    Same verifier, same order, same recorder as the live path: what the audit compares against
    the signed checkpoints.
    """
    recorder = LedgerRecorder(store if store is not None else MemoryStore(), policy or LedgerPolicy())
    checker = verifier if verifier is not None else Verifier()
    for record in records:
        recorder.record(authenticated_events(checker.feed(record)))
    recorder.record(authenticated_events(checker.finish()))
    return recorder


def authenticated_events(verdicts: Iterable[Any]) -> list[tuple[RawRecord, Event]]:
    """The (record, event) pairs the ledger takes from verifier verdicts: authenticated events."""
    return [(v.record, v.event) for v in verdicts
            if v.kind == "event" and v.status is Status.AUTHENTICATED and v.event is not None]


# ---------------------------------------------------------------------- queries (views, CLI)


def ledger_lanes(store: StateStore) -> list[str]:
    """Origins of the lanes this store holds."""
    return [key[len("meta|"):] for key, _ in store.scan("meta|")]


def ledger_summary(store: StateStore) -> list[dict[str, JSON]]:
    """Per lane: origin, hash algorithm, size, root (hex), last checkpoint size and root."""
    rows: list[dict[str, JSON]] = []
    for origin in ledger_lanes(store):
        lane = LaneLedger(store, origin)
        rows.append({"origin": origin, "hash_algorithm": lane.alg.value, "tree_size": lane.size,
                     "root_hash": lane.log.root().hex(), "checkpoint_size": lane.meta.get("cp_size", 0),
                     "checkpoint_root": lane.meta.get("cp_root"), "checkpoints": lane.meta.get("cp_count", 0),
                     "compacted_before": lane.meta.get("compacted", 0)})
    return rows


def _proof_doc(proof: InclusionProof) -> dict[str, JSON]:
    """The proof as :func:`~swarmlog.streams.merkle.proof_to_json` writes it (hex, RFC 9162 names)."""
    return dict(json.loads(proof_to_json(proof)))


def prove_event(store: StateStore, event_id: str, origins: Sequence[str] | None = None) -> dict[str, JSON] | None:
    """Inclusion proof of an event (by id) in its lane's current tree, plus its timestamp proof:
    the inclusion proof in the first checkpoint that covers it. None if no lane holds it.

    An independent verifier checks ``proof`` with ``leaf_hash = HASH(0x00 || event_hash)`` (it
    hashes the event it holds) against a root from a signed checkpoint of ``origin``.
    """
    for origin in origins if origins is not None else ledger_lanes(store):
        lane = LaneLedger(store, origin)
        found = lane.lookup_id(event_id)
        if found is None:
            continue
        index, event_hash = found
        doc: dict[str, JSON] = {"origin": origin, "event_id": event_id, "event_hash": event_hash.hex(),
                                "hash_algorithm": lane.alg.value, "leaf_index": index, "tree_size": lane.size,
                                "proof": _proof_doc(lane.inclusion(index))}
        checkpoint = lane.first_checkpoint_covering(index)
        doc["timestamp"] = None if checkpoint is None else {
            "checkpoint": {"origin": origin, **checkpoint},
            "proof": _proof_doc(lane.inclusion(index, int(checkpoint["tree_size"]))),
        }
        return doc
    return None


def prove_consistency(store: StateStore, origin: str, old: int, new: int | None = None) -> dict[str, JSON]:
    """RFC 9162 consistency proof between two sizes of a lane's tree, with both roots (hex)."""
    lane = LaneLedger(store, origin)
    second = lane.size if new is None else new
    if 0 < old < lane.compacted_before:
        raise MissingNodeError(f"{origin}: tree size {old} was compacted away "
                               f"(sizes >= {lane.compacted_before} remain)")
    proof = ConsistencyProof(old, second, tuple(lane.log.consistency_proof(old, second)), lane.alg,
                             first_hash=lane.log.root(old), second_hash=lane.log.root(second))
    return {"origin": origin, "hash_algorithm": lane.alg.value, "proof": dict(json.loads(proof_to_json(proof)))}
