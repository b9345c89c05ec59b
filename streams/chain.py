"""Hash chains and seals, with no I/O: the pure half of the producer.

A ``ChainWriter`` turns encoded payloads into envelopes chained per lane (one lane per
topic partition) and, on ``seal()``, into seal records — one signed statement holding
the RFC 9162 Merkle root of each lane's new event hashes, copied into every lane it
covers. ``EventProducer`` sends what it returns to Kafka; tests and tools can build
whole logs in memory with the same code.
"""

from __future__ import annotations

import hashlib
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import overload

from swarmlog.streams import speedups
from swarmlog.streams.avro_compile import VARINT_SMALL as _SMALL
from swarmlog.streams.avro_compile import write_long
from swarmlog.streams.codec import MAGIC, SchemaEntry, SchemaStore, default_store
from swarmlog.streams.envelope import (
    IDENTITY_EVENT_TYPE,
    ZERO_HASH,
    EnvelopeCodec,
    event_signing_message,
    seal_signing_message,
)
from swarmlog.streams.identity import Identity
from swarmlog.streams.ids import uuid7, uuid7_batch, uuid7_reserve
from swarmlog.streams.merkle import root as merkle_root

_sha256 = hashlib.sha256
_crc32 = zlib.crc32


class ChainError(RuntimeError):
    """Misuse of a chain writer (sealing before the identity document exists)."""


@dataclass(slots=True)
class EventRef:
    """Where an event went and how to find it again."""

    event_id: bytes
    topic: str
    partition: int
    lane: str
    seq: int
    hash: bytes


# EventRef's fields in constructor order, for _speedups.slot_objects
_REF_FIELDS = ("event_id", "topic", "partition", "lane", "seq", "hash")


class EventRefs(Sequence[EventRef]):
    """The ``EventRef``s of a bulk append, kept as columns and built only when read.

    Why: a bulk producer (``EventProducer.produce_many``) rarely looks at the references of
    its events, yet one ``EventRef`` object per event cost ≈ 0.25 µs and, being GC-tracked,
    drove the young-generation collections of the ingest loop (≈ 0.15 µs per event more).
    Columns hold the same values (the id and hash bytes exist anyway); indexing or
    iterating gives ``EventRef``s equal to the eager ones.
    """

    __slots__ = ("_hashes", "_ids", "_names", "_parts", "_seqs", "_topic")

    def __init__(self, topic: str, partitions: int) -> None:
        self._topic = topic
        self._names = [lane_name(topic, p) for p in range(partitions)]
        self._ids: list[bytes] = []
        self._parts: list[int] = []
        self._seqs: list[int] = []
        self._hashes: list[bytes] = []

    def _extend(self, ids: list[bytes], parts: list[int], seqs: list[int], hashes: list[bytes]) -> None:
        self._ids.extend(ids)
        self._parts.extend(parts)
        self._seqs.extend(seqs)
        self._hashes.extend(hashes)

    def __len__(self) -> int:
        return len(self._ids)

    def _ref(self, i: int) -> EventRef:
        part = self._parts[i]
        return EventRef(self._ids[i], self._topic, part, self._names[part], self._seqs[i], self._hashes[i])

    @overload
    def __getitem__(self, index: int) -> EventRef: ...
    @overload
    def __getitem__(self, index: slice) -> list[EventRef]: ...
    def __getitem__(self, index: int | slice) -> EventRef | list[EventRef]:
        if isinstance(index, slice):
            return [self._ref(i) for i in range(*index.indices(len(self._ids)))]
        if index < 0:
            index += len(self._ids)
        if not 0 <= index < len(self._ids):
            raise IndexError("EventRefs index out of range")
        return self._ref(index)

    def __iter__(self) -> Iterator[EventRef]:
        topic, names = self._topic, self._names
        for event_id, part, seq, digest in zip(self._ids, self._parts, self._seqs, self._hashes, strict=True):
            yield EventRef(event_id, topic, part, names[part], seq, digest)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (EventRefs, list, tuple)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable while its batch is produced, like a list

    def __repr__(self) -> str:
        return f"EventRefs({len(self)} events of {self._topic!r})"


@dataclass(frozen=True, slots=True)
class OutRecord:
    """A record to write: Kafka topic, partition, key and value."""

    topic: str
    partition: int
    key: bytes
    value: bytes


@dataclass(frozen=True, slots=True)
class SealedLane:
    """One lane's part of a cut batch: where its seal goes and the event hashes it covers."""

    topic: str
    partition: int
    name: str
    first_seq: int
    hashes: list[bytes]


@dataclass(frozen=True, slots=True)
class PendingSeal:
    """A batch cut by ``ChainWriter.seal_begin``, waiting for ``seal_finish`` to sign it."""

    lanes: tuple[SealedLane, ...]
    identity_event: bytes


@dataclass
class _Lane:
    topic: str
    partition: int
    name: str
    next_seq: int = 0
    last_hash: bytes = ZERO_HASH
    first_open_seq: int = 0
    open_hashes: list[bytes] = field(default_factory=list)
    prefix_cache: dict[str, bytes] = field(default_factory=dict)


class ChainWriter:
    """Builds the chained envelopes and seals of one producer stream. Not thread-safe."""

    def __init__(self, identity: Identity, store: SchemaStore | None = None) -> None:
        self.identity = identity
        self.store = store or default_store()
        self.codec = EnvelopeCodec(self.store)
        self.stream_id = uuid7()
        self.did = identity.did
        self.identity_event: bytes | None = None
        self.open_count = 0
        self._lanes: dict[tuple[str, int], _Lane] = {}
        self._header = MAGIC + self.codec.envelope_fingerprint
        # The fixed bytes of every envelope of this stream that follow the payload fingerprint.
        self._producer_bytes = _str(self.did) + self.stream_id

    def identity_payload(self) -> dict[str, object]:
        pub = self.identity.public
        return {
            "did": pub.did,
            "ml_dsa_65_public_key": pub.ml_dsa_65_public,
            "x25519_public_key": pub.x25519_public,
            "ml_kem_768_public_key": pub.ml_kem_768_public,
            "created_ms": int(time.time() * 1000),
            "label": pub.label,
        }

    def append(self, entry: SchemaEntry, body: bytes, subject: str, topic: str, partition: int, *,
               sign: bool = False, timestamp_ms: int | None = None) -> tuple[EventRef, bytes]:
        """Chain one encoded payload into lane ``topic/partition``.

        Returns the reference and the Kafka value; the key is the subject. This is the
        ingest hot path: the constant part of the envelope is cached per (lane, type).
        """
        event_type = entry.event_type or entry.full_name
        ts = timestamp_ms if timestamp_ms is not None else time.time_ns() // 1_000_000
        subject_raw = subject.encode()
        lane = self._lanes.get((topic, partition)) or self._new_lane(topic, partition)
        prefix = lane.prefix_cache.get(event_type) or self._new_prefix(lane, entry, event_type)
        event_id = uuid7()
        seq = lane.next_seq
        n_subject = len(subject_raw)
        n_body = len(body)
        value = b"".join((
            self._header, event_id, prefix, _SMALL[seq] if seq < 8192 else write_long(seq), lane.last_hash,
            write_long(ts), _SMALL[n_subject] if n_subject < 8192 else write_long(n_subject), subject_raw,
            _SMALL[n_body] if n_body < 8192 else write_long(n_body), body, b"\x00",
        ))
        digest = _sha256(value).digest()
        if sign:
            signature = self.identity.sign(event_signing_message(digest))
            value = self.codec.attach_auth(value, {"signature": signature.to_record(), "identity": None})
        if event_type == IDENTITY_EVENT_TYPE and self.identity_event is None:
            self.identity_event = value  # seals embed it, so it must exist before the first seal
        lane.next_seq = seq + 1
        lane.last_hash = digest
        hashes = lane.open_hashes
        if not hashes:
            lane.first_open_seq = seq
        hashes.append(digest)
        self.open_count += 1
        return EventRef(event_id, topic, partition, lane.name, seq, digest), value

    def append_many(self, entry: SchemaEntry, bodies: list[bytes], keys: list[bytes], topic: str,
                    partitions: int) -> tuple[list[EventRef], list[tuple[int, bytes, bytes]]]:
        """Chain a batch of encoded payloads of one type into ``topic`` (bulk ingest path).

        Same envelopes as ``append`` one by one, minus the per-call overhead: one clock
        read per batch, lookups hoisted, partition = crc32(key) % partitions. Returns the
        references and the (partition, key, value) records to write, in order.
        """
        native = speedups.native
        if native is not None and bodies:
            c_refs, parts, values = self._append_many_native(native, entry, bodies, keys, topic, partitions)
            return c_refs, list(zip(parts, keys, values, strict=True))
        event_type = entry.event_type or entry.full_name
        ts_bytes = write_long(time.time_ns() // 1_000_000)
        header = self._header
        lanes = self._lanes
        small = _SMALL
        sha256 = _sha256
        join = b"".join
        refs: list[EventRef] = []
        records: list[tuple[int, bytes, bytes]] = []
        add_ref = refs.append
        add_record = records.append
        for body, key, event_id in zip(bodies, keys, uuid7_batch(len(bodies)), strict=True):
            partition = _crc32(key) % partitions
            lane = lanes.get((topic, partition)) or self._new_lane(topic, partition)
            prefix = lane.prefix_cache.get(event_type) or self._new_prefix(lane, entry, event_type)
            # the chaining below is append()'s, inlined: a method call per event costs ≈ 0.3 µs here
            seq = lane.next_seq
            n_key = len(key)
            n_body = len(body)
            value = join((
                header, event_id, prefix, small[seq] if seq < 8192 else write_long(seq), lane.last_hash, ts_bytes,
                small[n_key] if n_key < 8192 else write_long(n_key), key,
                small[n_body] if n_body < 8192 else write_long(n_body), body, b"\x00",
            ))
            digest = sha256(value).digest()
            lane.next_seq = seq + 1
            lane.last_hash = digest
            hashes = lane.open_hashes
            if not hashes:
                lane.first_open_seq = seq
            hashes.append(digest)
            add_ref(EventRef(event_id, topic, partition, lane.name, seq, digest))
            add_record((partition, key, value))
        self.open_count += len(bodies)
        return refs, records

    def append_many_columns(self, entry: SchemaEntry, bodies: list[bytes], keys: list[bytes], topic: str,
                            partitions: int) -> tuple[list[EventRef], list[int], list[bytes]]:
        """``append_many`` returning (refs, partitions, values) columns: no tuple per record."""
        native = speedups.native
        if native is not None and bodies:
            return self._append_many_native(native, entry, bodies, keys, topic, partitions)
        refs, records = self.append_many(entry, bodies, keys, topic, partitions)
        return refs, [r[0] for r in records], [r[2] for r in records]

    def append_many_into(self, refs: EventRefs, entry: SchemaEntry, bodies: list[bytes], keys: list[bytes],
                         topic: str, partitions: int) -> tuple[list[int], list[bytes]]:
        """``append_many_columns`` adding the references to ``refs`` as columns (no object per event).

        ``refs`` must be an ``EventRefs`` of ``topic`` and ``partitions``. Returns the partitions and values.
        """
        native = speedups.native
        if native is not None and bodies:
            ids, parts, values, digests, seqs, _ = self._chain_native(native, entry, bodies, keys, topic, partitions)
            refs._extend(ids, parts, seqs, digests)
            return parts, values
        eager, records = self.append_many(entry, bodies, keys, topic, partitions)
        parts = [r[0] for r in records]
        refs._extend([r.event_id for r in eager], parts, [r.seq for r in eager], [r.hash for r in eager])
        return parts, [r[2] for r in records]

    def _append_many_native(self, native: ModuleType, entry: SchemaEntry, bodies: list[bytes], keys: list[bytes],
                            topic: str, partitions: int) -> tuple[list[EventRef], list[int], list[bytes]]:
        """``append_many``'s loop in C (``_speedups.chain_many``): same bytes, same lane state."""
        ids, parts, values, digests, seqs, names = self._chain_native(native, entry, bodies, keys, topic, partitions)
        refs: list[EventRef] = native.slot_objects(EventRef, _REF_FIELDS, (
            ids, topic, parts, list(map(names.__getitem__, parts)), seqs, digests), len(ids))
        return refs, parts, values

    def _chain_native(self, native: ModuleType, entry: SchemaEntry, bodies: list[bytes], keys: list[bytes],
                      topic: str, partitions: int
                      ) -> tuple[list[bytes], list[int], list[bytes], list[bytes], list[int], list[str]]:
        """The C chaining loop; returns (ids, parts, values, hashes, seqs, lane name per partition)."""
        event_type = entry.event_type or entry.full_name
        ts_bytes = write_long(time.time_ns() // 1_000_000)
        parts: list[int] = native.partitions(keys, partitions)
        prefixes: list[bytes | None] = [None] * partitions
        next_seqs: list[int] = [0] * partitions
        last_hashes: list[bytes] = [ZERO_HASH] * partitions
        open_lists: list[list[bytes] | None] = [None] * partitions
        used: list[_Lane | None] = [None] * partitions
        lanes = self._lanes
        for partition in dict.fromkeys(parts):  # first-seen order, as the Python loop creates lanes
            lane = lanes.get((topic, partition)) or self._new_lane(topic, partition)
            used[partition] = lane
            prefixes[partition] = lane.prefix_cache.get(event_type) or self._new_prefix(lane, entry, event_type)
            next_seqs[partition] = lane.next_seq
            last_hashes[partition] = lane.last_hash
            if not lane.open_hashes:
                lane.first_open_seq = lane.next_seq
            open_lists[partition] = lane.open_hashes
        ms, first, salt = uuid7_reserve(len(bodies))
        values, ids, digests, seqs = native.chain_many(self._header, ts_bytes, ms, first, salt, bodies, keys, parts,
                                                       prefixes, next_seqs, last_hashes, open_lists)
        names: list[str] = [""] * partitions
        for partition, touched in enumerate(used):
            if touched is not None:
                touched.next_seq = next_seqs[partition]
                touched.last_hash = last_hashes[partition]
                names[partition] = touched.name
        self.open_count += len(bodies)
        return ids, parts, values, digests, seqs, names

    def _new_lane(self, topic: str, partition: int) -> _Lane:
        lane = self._lanes[(topic, partition)] = _Lane(topic, partition, lane_name(topic, partition))
        return lane

    def _new_prefix(self, lane: _Lane, entry: SchemaEntry, event_type: str) -> bytes:
        """The envelope bytes between event_id and seq: constant per (lane, event type)."""
        prefix = lane.prefix_cache[event_type] = (
            _str(event_type) + entry.fingerprint + self._producer_bytes + _str(lane.name))
        return prefix

    def seal(self) -> list[OutRecord]:
        """Close the open batch: one signed statement, one seal record per open lane."""
        pending = self._pending()
        if pending is None:
            return []
        records = self.seal_finish(pending)
        self._detach(pending)  # only once signed: a failed seal leaves the batch open for the next one
        return records

    def seal_begin(self) -> PendingSeal | None:
        """Cut the open batch (cheap): what ``seal_finish`` needs, and a fresh open batch.

        Split from the signing so a producer can sign on another thread while this writer
        chains the next batch: the cut batch is detached from the lanes, so nothing the
        writer does afterwards changes it.
        """
        pending = self._pending()
        if pending is not None:
            self._detach(pending)
        return pending

    def _pending(self) -> PendingSeal | None:
        open_lanes = [lane for lane in self._lanes.values() if lane.open_hashes]
        if not open_lanes:
            return None
        if self.identity_event is None:
            raise ChainError("cannot seal before the identity document is published")
        return PendingSeal(tuple(SealedLane(lane.topic, lane.partition, lane.name, lane.first_open_seq,
                                            lane.open_hashes) for lane in open_lanes), self.identity_event)

    def _detach(self, pending: PendingSeal) -> None:
        """Start a new open batch; the cut one keeps its hash lists (nobody appends to them again)."""
        for cut in pending.lanes:
            self._lanes[(cut.topic, cut.partition)].open_hashes = []
        self.open_count = 0

    def seal_finish(self, pending: PendingSeal) -> list[OutRecord]:
        """Merkle roots, the signed statement and one seal record per lane of a cut batch.

        Reads only what never changes after the identity document exists (identity, DID,
        stream id, codec), so it is safe on another thread than the one appending.
        """
        lane_roots = [{
            "lane": lane.name,
            "first_seq": lane.first_seq,
            "last_seq": lane.first_seq + len(lane.hashes) - 1,
            "root": self._lane_root(lane.hashes),
        } for lane in pending.lanes]
        statement = self.codec.encode_statement({
            "seal_id": uuid7(),
            "producer": self.did,
            "stream_id": self.stream_id,
            "created_ms": int(time.time() * 1000),
            "hash_alg": "sha256",
            "lanes": lane_roots,
        })
        signature = self.identity.sign(seal_signing_message(statement)).to_record()
        key = self.did.encode()
        return [OutRecord(lane.topic, lane.partition, key, self.codec.encode_seal({
            "statement": statement,
            "signature": signature,
            "identity": pending.identity_event,
            "lane": lane.name,
            "leaves": lane.hashes,
        })) for lane in pending.lanes]

    @staticmethod
    def _lane_root(hashes: list[bytes]) -> bytes:
        native = speedups.native
        if native is not None:
            root: bytes = native.merkle_root_leaves(hashes)
            return root
        return merkle_root(hashes)  # pure-Python RFC 9162, leaves hashed as HASH(0x00 || h)


def lane_name(topic: str, partition: int) -> str:
    """A lane's name in envelopes and seals: one lane per topic partition."""
    return f"{topic}/{partition}"


def _str(text: str) -> bytes:
    raw = text.encode()
    return write_long(len(raw)) + raw
