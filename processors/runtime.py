"""What every swarmlog worker agent does with a batch of records, independent of the domain.

    raw records ─► Engine (verify ─► decode ─► fold) ─► table writes
                                  ├─► derived events  ─► signed producer
                                  └─► dead letters    ─► ``deadletter`` topic

Acks are manual: a record is acknowledged only once it is decided (applied, refused or a
duplicate), after its outputs are delivered. A record still waiting for its seal is not
acknowledged, so Faust never commits past it and a replacement worker reads it again —
nothing is lost when a worker dies between an event and its seal. Redelivered records are
harmless: ``fold`` skips what the table's marks say was applied.

Table writes are aggregated per batch (``WriteBehindStore``): a Faust table write costs a
RocksDB put, two JSON encodings and one changelog record through the producer, and a
reducer writes several keys per event (its state, its idempotence mark) that the next
events of the batch write again. The batch's last value per key is written once, atomically
per partition (an intent record first), before any record of the batch is acknowledged —
see the class for why that keeps at-least-once and idempotence intact.

In a worker those writes bypass Faust's per-write path (``DirectTable``): encoded once,
produced to the changelog by one librdkafka producer (``ChangelogProducer``), and written to
the partition's RocksDB only once delivered — changelog first, then RocksDB, then acks.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from swarmlog.projections.base import JSON, SIGNER, Projection, StateStore
from swarmlog.projections.engine import Engine, Outcome
from swarmlog.projections.ledger import LedgerRecorder
from swarmlog.streams.codec import SchemaStore, default_store
from swarmlog.streams.producer import EventProducer, ProduceError, producer_config
from swarmlog.streams.verify import RawRecord

log = logging.getLogger(__name__)


class TableLike(Protocol):
    """The part of a Faust table (or any mapping) a ``TableStore`` needs."""

    def get(self, key: Any, default: Any = None) -> Any: ...

    def __setitem__(self, key: Any, value: Any) -> None: ...

    def __delitem__(self, key: Any) -> None: ...

    def items(self) -> Any: ...


class TableStore:
    """A projection store on a Faust table (RocksDB + changelog); values are JSON."""

    def __init__(self, table: TableLike) -> None:
        self.table = table

    def get(self, key: str) -> JSON | None:
        return self.table.get(key)

    def put(self, key: str, value: JSON) -> None:
        self.table[key] = value

    def delete(self, key: str) -> None:
        with contextlib.suppress(KeyError):
            del self.table[key]

    def scan(self, prefix: str = "") -> Iterator[tuple[str, JSON]]:
        yield from sorted((k, v) for k, v in self.table.items() if str(k).startswith(prefix))


_DELETED: Any = object()
INTENT_PREFIX = "__flush/"


class WriteBehindStore(TableStore):
    """A ``TableStore`` that keeps one batch's reads and writes in memory and writes the
    batch's last value per key to the table on ``flush()`` — atomically per partition.

    Why it keeps the guarantees:

    * the reducers see their own writes (reads go through the buffer), so folding a batch
      gives exactly the values per-event writes gave — ``MemoryStore`` semantics, as in a
      replay;
    * the runtime flushes at the end of every batch, before the agent acknowledges any
      record of it, and Faust flushes the changelog before it commits offsets: a worker
      that dies before the flush loses only unacknowledged work, read again by its
      successor;
    * each write goes to the changelog partition of the record that made it (``context``
      captures Faust's current event at ``put``, ``restore`` sets it again at ``flush``);
      the determinism rule gives every key a single partition;
    * **atomic per partition.** Collapsing writes means a crash in the middle of a flush
      could leave some keys with the batch's values and the idempotence marks without
      them (events re-applied) or the reverse (events lost). So a flush of more than one
      key first writes one *intent* record ``__flush/<partition>`` holding every key and
      final value, then the keys, then deletes the intent. The changelog keeps a
      partition's records in order, so whoever restores the partition sees either no
      intent (the flush completed, or never started) or the intent: ``recover()`` — run
      by the runtime before it feeds a partition's first record of a batch — writes it
      out again (a redo log of one batch; redo is idempotent) and deletes it. Per-event
      writes had a one-event window (state written, mark not yet); this has none.

    Reads are cached for the batch only: ``flush()`` forgets them, so a partition that
    moves to another worker and back is read from the table again.
    """

    def __init__(self, table: TableLike, context: Callable[[], tuple[int, Any]] = lambda: (0, None),
                 restore: Callable[[Any], None] = lambda _ctx: None) -> None:
        super().__init__(table)
        self._context = context  # → (changelog partition, token that ``restore`` makes current again)
        self._restore = restore
        self._values: dict[str, Any] = {}  # read cache and pending writes (_DELETED = deleted)
        self._dirty: dict[str, tuple[int, Any]] = {}  # key → context of its last write
        self.writes = 0  # table writes done by flush() (intents included), for metrics and the benchmark
        self.recovered = 0  # keys written again from an interrupted flush's intent

    def get(self, key: str) -> JSON | None:
        try:
            value = self._values[key]
        except KeyError:
            value = self._values[key] = self.table.get(key)
            return value
        return None if value is _DELETED else value

    def put(self, key: str, value: JSON) -> None:
        self._values[key] = value
        self._dirty[key] = self._context()

    def delete(self, key: str) -> None:
        self._values[key] = _DELETED
        self._dirty[key] = self._context()

    def scan(self, prefix: str = "") -> Iterator[tuple[str, JSON]]:
        found = {k: v for k, v in self.table.items() if str(k).startswith(prefix) and
                 not str(k).startswith(INTENT_PREFIX)}
        for key in self._dirty:
            if key.startswith(prefix):
                value = self._values[key]
                if value is _DELETED:
                    found.pop(key, None)
                else:
                    found[key] = value
        yield from sorted(found.items())

    @property
    def pending(self) -> int:
        return len(self._dirty)

    def _write(self, key: str, value: Any) -> None:
        if value is _DELETED:
            with contextlib.suppress(KeyError):
                del self.table[key]
        else:
            self.table[key] = value

    def recover(self) -> int:
        """Finish a flush that died half-way in the current context's partition (see the class doc).

        The keys are written the way ``flush`` writes them (a ``DirectTable`` group goes to RocksDB only
        once its changelog records are delivered, at the end of the batch), and cached for the batch, so
        the batch reads the recovered values either way.
        """
        partition, token = self._context()
        intent_key = f"{INTENT_PREFIX}{partition}"
        intent = self.table.get(intent_key)
        if not intent:
            return 0
        self._restore(token)
        ops: list[tuple[str, Any]] = [(key, _DELETED if deleted else value) for key, value, deleted in intent]
        ops.append((intent_key, _DELETED))
        write_group = getattr(self.table, "write_group", None)
        if write_group is not None:
            write_group(partition, ops, _DELETED)
        else:
            for key, value in ops:
                self._write(key, value)
        for key, value in ops:
            self._values[key] = value
        self.recovered += len(intent)
        log.warning("completed an interrupted table flush: %d keys of partition %d", len(intent), partition)
        return len(intent)

    def flush(self) -> int:
        """Write the batch's last value per key, one atomic group per partition; forget the batch."""
        groups: dict[int, list[str]] = {}
        for key, (partition, _token) in self._dirty.items():
            groups.setdefault(partition, []).append(key)
        values, dirty, restore, write = self._values, self._dirty, self._restore, self._write
        write_group = getattr(self.table, "write_group", None)  # DirectTable: the whole group in one call
        write_flush = getattr(self.table, "write_flush_group", None)  # ... and it builds the intent itself
        written = 0
        try:
            for partition, keys in groups.items():
                restore(dirty[keys[0]][1])  # any record of the partition: same changelog partition
                intent_key = f"{INTENT_PREFIX}{partition}"
                if write_flush is not None:
                    write_flush(partition, intent_key if len(keys) > 1 else None, [(k, values[k]) for k in keys],
                                _DELETED)
                    written += len(keys) + (2 if len(keys) > 1 else 0)
                    continue
                ops: list[tuple[str, Any]] = []
                if len(keys) > 1:
                    ops.append((intent_key, [[k, None if values[k] is _DELETED else values[k], values[k] is _DELETED]
                                             for k in keys]))
                ops.extend((key, values[key]) for key in keys)
                if len(keys) > 1:
                    ops.append((intent_key, _DELETED))
                if write_group is not None:
                    write_group(partition, ops, _DELETED)
                else:
                    for key, value in ops:
                        write(key, value)
                written += len(ops)
        finally:
            self._values = {}
            self._dirty = {}
        self.writes += written
        return written


class ChangelogProducer:
    """Sends table changelog records through one confluent-kafka producer; ``flush()`` delivers them, then
    writes them to the local RocksDB.

    Why: a Faust table write costs a ``FutureMessage``, a trip through Faust's producer
    buffer, sensors and aiokafka's pure-Python ``send`` — profiled at about half of the
    worker's event loop, since the ledger alone writes ≈ 4 keys per event. librdkafka
    takes a record in microseconds. The guarantees stay Faust's, or get stronger:

    * same bytes: keys and values are encoded once with the table's own serializers and go
      both to RocksDB and to the changelog, exactly what Faust's restore writes back;
    * same partition and order: each record goes to the changelog partition of the record
      being folded (as ``Table.on_key_set``), all of a table's writes through this one
      idempotent producer, so a partition's records keep their order (the flush intents of
      ``WriteBehindStore`` rely on that);
    * **changelog first, then RocksDB, then acks.** A batch's local writes are held back
      (one RocksDB ``WriteBatch`` per table partition, as Faust's own restore writes) until
      every changelog record of the batch is delivered (acks=all; any error raised and the
      local writes dropped); the runtime acknowledges records only after ``flush()``
      returns. The other order lost updates: a worker killed after its local write but
      before delivery came back with RocksDB (idempotence marks included) ahead of its
      changelog, skipped the redelivered events as applied, and their updates never
      reached the changelog — the partition's next owner restored a table short of them
      (tests/test_changelog_crash.py reproduces it with the test-only kill hook below).
      Every crash point now ends equal: before delivery completes, nothing was acked and
      the local state is the changelog's, so the events are folded again; after delivery,
      the restart restores the delivered records from the persisted offset (below) on —
      records already in RocksDB are written again with the same bytes; a partly delivered
      group has its intent first, so ``WriteBehindStore.recover`` completes it;
    * the table's persisted offset (where a restarted worker resumes its restore) is the
      last delivered offset of the partition, written in the same ``WriteBatch`` as the
      records up to it, so RocksDB never claims records it does not hold.
    """

    def __init__(self, bootstrap: str, kafka: Any | None = None) -> None:
        if kafka is None:
            from confluent_kafka import Producer

            kafka = Producer(producer_config(bootstrap, **{"linger.ms": 2}))
        self._kafka = kafka
        self._delivered: dict[tuple[str, int], int] = {}
        self._stores: dict[str, Any] = {}  # changelog topic → the Faust store whose offsets it persists
        self._local: dict[tuple[str, int], Any] = {}  # (topic, partition) → WriteBatch held back until delivered
        self._errors: list[str] = []
        self._pending = 0
        self.sent = 0
        #: TEST-ONLY fault hook, read once when the worker starts: the process SIGKILLs itself at this
        #: point of a batch's table write (``after-delivery``: changelog delivered, RocksDB not yet
        #: written; ``after-local-write``: both, nothing acknowledged yet) so that tests can crash a
        #: worker exactly there (tests/test_changelog_crash.py). Never set it in production.
        self._kill_at = os.environ.get("SWARMLOG_TEST_KILL_AT", "")

    def _fault_point(self, point: str) -> None:
        if self._kill_at == point:
            log.warning("SWARMLOG_TEST_KILL_AT=%s: killing this worker (test-only fault hook)", point)
            os.kill(os.getpid(), signal.SIGKILL)

    def send(self, store: Any, topic: str, partition: int, key: bytes, value: bytes | None) -> None:
        self._stores[topic] = store
        while True:
            try:
                self._kafka.produce(topic, value, key, partition, on_delivery=self._on_delivery)
                break
            except BufferError:
                self._kafka.poll(0.05)
        self._pending += 1
        self.sent += 1

    def local_batch(self, store: Any, topic: str, partition: int) -> Any:
        """The RocksDB ``WriteBatch`` of ``topic``'s ``partition`` that ``flush()`` writes once delivered."""
        batch = self._local.get((topic, partition))
        if batch is None:
            from rocksdict import WriteBatch

            self._stores[topic] = store
            batch = self._local[(topic, partition)] = WriteBatch(raw_mode=True)
        return batch

    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is not None:
            self._errors.append(f"{msg.topic()}[{msg.partition()}]: {err.str()}")
            return
        tp = (msg.topic(), msg.partition())
        if msg.offset() > self._delivered.get(tp, -1):
            self._delivered[tp] = msg.offset()

    def flush(self, timeout: float = 30.0) -> int:
        """Deliver everything sent, then write it to RocksDB with the persisted offsets; raise on any loss."""
        if not self._pending:
            return 0
        remaining = self._kafka.flush(timeout)
        errors, self._errors = self._errors, []
        if remaining or errors:
            self._local, self._delivered, self._pending = {}, {}, 0  # never written: the local state stays behind
            if remaining:
                raise ProduceError(f"{remaining} changelog records still undelivered after {timeout:.0f}s")
            raise ProduceError(f"{len(errors)} changelog records failed: {errors[0]}")
        self._fault_point("after-delivery")
        local, self._local = self._local, {}
        delivered, self._delivered = self._delivered, {}
        for (topic, partition), offset in delivered.items():
            store = self._stores[topic]
            batch = local.pop((topic, partition), None)
            if batch is None:
                from faust.types import TP

                store.set_persisted_offset(TP(topic, partition), offset)
                continue
            batch.put(store.offset_key, str(offset).encode())
            store._db_for_partition(partition).write(batch)
        for (topic, partition), batch in local.items():  # no delivery report (cannot happen after a clean flush)
            self._stores[topic]._db_for_partition(partition).write(batch)
        self._fault_point("after-local-write")
        sent, self._pending = self._pending, 0
        return sent


class DirectTable:
    """A Faust table (RocksDB store) whose writes skip Faust's per-write machinery; see ``ChangelogProducer``.

    Reads go to the table as before. ``partition()`` says which changelog partition a write
    belongs to (the current record's, as for a Faust table write). Writes reach RocksDB only
    when ``ChangelogProducer.flush()`` has delivered them (changelog first); until then reads
    see the previous value — ``WriteBehindStore`` reads its batch's writes from its own buffer.

    Single writer: every write of the table must go through its ``DirectTable`` (one producer).
    A write through Faust's own ``table[key] = value`` goes out on another producer, and two
    producers do not keep their relative order in a changelog partition, so a restore could
    bring back the older value of a key both wrote.
    """

    def __init__(self, table: Any, changelog: ChangelogProducer, partition: Callable[[], int]) -> None:
        self.table = table
        self.store = table.data  # faust.stores.rocksdb.Store (a SerializedStore)
        self.topic: str = table.changelog_topic.get_topic_name()
        self.changelog = changelog
        self.partition = partition
        self._encode_key, self._encode_value = _table_encoders(self.store)
        fast = self._encode_key is not self.store._encode_key
        self._decode_value: Callable[[bytes], Any] = json.loads if fast else self.store._decode_value
        self._compose_intent = fast  # compact JSON: a list's bytes are its items' bytes joined

    def get(self, key: Any, default: Any = None) -> Any:
        # one RocksDB lookup (Faust's ``Mapping.get`` makes two: ``in``, then ``[]``)
        value = self.store._get(self._encode_key(key))
        return default if value is None else self._decode_value(value)

    def items(self) -> Any:
        return self.table.items()

    def write_group(self, partition: int, ops: Sequence[tuple[Any, Any]], deleted: Any) -> None:
        """Send ``ops`` (key, value or ``deleted``) in order to the changelog of ``partition``, and queue them
        for its RocksDB, written by ``ChangelogProducer.flush()`` once delivered.

        The caller has made a record of ``partition`` current (``WriteBehindStore.flush``); this is
        ``__setitem__``/``__delitem__`` for a whole group, with the per-write lookups done once.
        """
        store, topic, send = self.store, self.topic, self.changelog.send
        encode_key, encode_value = self._encode_key, self._encode_value
        batch = self.changelog.local_batch(store, topic, partition)
        key_index = store._key_index  # Faust's key → partition cache: no entry per put (its restore adds none
        # either; a read tries the current record's partition first), but never a stale one for a deleted key
        for key, value in ops:
            key_bytes = encode_key(key)
            if value is deleted:
                send(store, topic, partition, key_bytes, None)  # a tombstone
                batch.delete(key_bytes)
                key_index.pop(key_bytes, None)
            else:
                value_bytes = encode_value(value)
                send(store, topic, partition, key_bytes, value_bytes)
                batch.put(key_bytes, value_bytes)

    def write_flush_group(self, partition: int, intent_key: str | None, items: Sequence[tuple[str, Any]],
                          deleted: Any) -> None:
        """One partition's group of ``WriteBehindStore.flush``: the intent (if ``intent_key``), the keys, the
        intent deleted — the same records ``write_group`` sends for those ops, for less.

        Why: the intent holds every key and value of the group, so building and encoding it cost as much
        as the keys themselves (profiled: a third of the flush). Each key and value is encoded once and
        the intent's bytes are joined from them — byte-identical to encoding the intent list, since the
        fast encoder is compact JSON (``_table_encoders`` checks it), else the intent is encoded as before.
        Locally the group is one ``WriteBatch``, atomic by itself, so the intent is only deleted there
        (a restore applies its put and its delete: the same end state).
        """
        store, topic, send = self.store, self.topic, self.changelog.send
        encode_key, encode_value = self._encode_key, self._encode_value
        batch = self.changelog.local_batch(store, topic, partition)
        encoded = [(encode_key(key), None if value is deleted else encode_value(value)) for key, value in items]
        intent_bytes = b""
        if intent_key is not None:
            intent_bytes = encode_key(intent_key)
            intent: bytes | None
            if self._compose_intent:
                intent = b"[" + b",".join(b"[%s,null,true]" % k if v is None else b"[%s,%s,false]" % (k, v)
                                          for k, v in encoded) + b"]"
            else:
                intent = encode_value([[k, None if v is deleted else v, v is deleted] for k, v in items])
            send(store, topic, partition, intent_bytes, intent)
        key_index = store._key_index
        for key_bytes, value_bytes in encoded:
            send(store, topic, partition, key_bytes, value_bytes)
            if value_bytes is None:
                batch.delete(key_bytes)
                key_index.pop(key_bytes, None)
            else:
                batch.put(key_bytes, value_bytes)
        if intent_key is not None:
            send(store, topic, partition, intent_bytes, None)
            batch.delete(intent_bytes)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.write_group(self.partition(), [(key, value)], _DELETED)

    def __delitem__(self, key: Any) -> None:
        self.write_group(self.partition(), [(key, _DELETED)], _DELETED)


_PROBES: tuple[tuple[Any, Any], ...] = (
    ("cmd/ä-1", {"a": [1, 2.5, None, True, "é\u2028"], "b": {"c": -0.0, "d": 1e300}}),
    ("__flush/3", [["k", None, True], ["x", 12345678901234567890, False]]),
)


def _table_encoders(store: Any) -> tuple[Callable[[Any], bytes], Callable[[Any], bytes | None]]:
    """The store's key and value encoders — a prebuilt JSON encoder when it gives the same bytes.

    Why: Faust encodes through its serializer registry and builds a new ``JSONEncoder`` per
    call (profiled: ~25 % of a table write). RocksDB lookups need byte-identical keys, so
    the fast encoder is used only if it reproduces the store's own bytes on probes that
    cover non-ASCII text, floats, big integers and nesting; otherwise Faust's encoders are.
    """
    from faust.utils.json import JSONEncoder

    encode = JSONEncoder(separators=(",", ":")).encode

    def fast(value: Any) -> bytes:
        return encode(value).encode()

    try:
        same = all(fast(k) == store._encode_key(k) and fast(v) == store._encode_value(v) for k, v in _PROBES)
    except Exception:  # an encoder that refuses a probe is not the JSON one
        same = False
    if same:
        return fast, fast
    return store._encode_key, store._encode_value


@dataclass
class Counters:
    """Per-reason counters of one worker; exported as metrics and in run summaries."""

    values: dict[str, int] = field(default_factory=dict)

    def add(self, counts: dict[str, int]) -> None:
        for key, value in counts.items():
            self.values[key] = self.values.get(key, 0) + value


@dataclass
class Stages:
    """Where one agent's wall time goes, per stage (seconds) — for the health view and the benchmark.

    Why: CPU profiles do not show time spent waiting (for a batch, for the broker's acks), and
    the worker's wall time per event was about twice its CPU time; a handful of
    ``perf_counter`` calls per batch say which stage waits.
    """

    seconds: dict[str, float] = field(default_factory=dict)
    batches: int = 0
    records: int = 0
    table_writes: int = 0  # by the batch flushes (intents included)

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    def snapshot(self) -> dict[str, Any]:
        return {"batches": self.batches, "records": self.records, "table_writes": self.table_writes,
                "seconds": {k: round(v, 4) for k, v in sorted(self.seconds.items())}}


class OutputSink:
    """Signs and sends derived events and dead letters with the worker's identity."""

    def __init__(self, producer: EventProducer, worker_name: str, topic_prefix: str = "") -> None:
        self.producer = producer
        self.worker_name = worker_name
        self.topic_prefix = topic_prefix
        self.derived = 0
        self.dead_letters = 0

    def emit(self, outcome: Outcome) -> None:
        signer = self.producer.identity.did
        for source, derived in outcome.derived:
            payload = derived.payload
            if SIGNER in payload.values():
                payload = {k: signer if v == SIGNER else v for k, v in payload.items()}
            self.producer.produce(derived.event_type, payload, subject=derived.subject or source.subject)
            self.derived += 1
        now = int(time.time() * 1000)
        for dead in outcome.dead_letters:
            self.producer.produce("deadletter.recorded", dead.payload(self.worker_name, now),
                                  subject=dead.record.topic)
            self.dead_letters += 1
            log.warning("dead letter %s: %s (%s)", dead.record.position, dead.reason, dead.detail)

    def flush(self) -> None:
        """Seal and deliver everything emitted so far (raises ProduceError on loss)."""
        self.producer.flush()


class PartitionedRuntime:
    """One engine per source partition for a domain's projections; stores are shared tables.

    ``store_factory(name)`` returns the store for projection ``name`` (a TableStore in a
    worker, a MemoryStore in tests); ``extra_stores`` are read-only stores of projections
    this runtime does not own (e.g. the registry replica routing reads).
    """

    def __init__(self, projections: Sequence[Projection], store_factory: Callable[[str], StateStore], *,
                 extra_stores: dict[str, StateStore] | None = None, schema_store: SchemaStore | None = None) -> None:
        self.projections = list(projections)
        self.schema_store = schema_store or default_store()
        self.stores: dict[str, StateStore] = {p.name: store_factory(p.name) for p in self.projections}
        self._owned = [p.name for p in self.projections]  # flushed per batch; extra stores are read-only
        self._recoverers: list[Callable[[], int]] = [
            r for r in (getattr(self.stores[n], "recover", None) for n in self._owned) if r is not None]
        self._batched_extra: list[Any] = []  # other write-behind stores flushed with the batch (the ledger)
        self.stores.update(extra_stores or {})
        self.engines: dict[tuple[str, int], Engine] = {}
        self.last_offset: dict[tuple[str, int], int] = {}
        self.counters = Counters()
        #: optional audit ledger (projections/ledger.py): fed each record's authenticated events
        self.ledger: LedgerRecorder | None = None
        #: optional wall-time accounting (the worker's health view)
        self.stages: Stages | None = None
        #: delivers the batch's changelog records (``ChangelogProducer.flush``) before anything is acked
        self.deliver_tables: Callable[[], Any] | None = None

    def engine(self, topic: str, partition: int) -> Engine:
        key = (topic, partition)
        engine = self.engines.get(key)
        if engine is None:
            engine = Engine(self.projections, self.stores, schema_store=self.schema_store)
            # A worker joins mid-log: a sealed event before its first record is not "missing".
            engine.verifier.from_start = False
            self.engines[key] = engine
        return engine

    def add_batched_store(self, store: Any) -> None:
        """A write-behind store outside the projections' (the ledger's): recovered before a
        partition's first record and flushed at the end of every batch, like theirs."""
        self._batched_extra.append(store)
        recover = getattr(store, "recover", None)
        if recover is not None:
            self._recoverers.append(recover)

    def revoke(self, topic: str, partition: int) -> None:
        """Partition moved away: forget its verifier state (the new owner rebuilds its own)."""
        self.engines.pop((topic, partition), None)
        self.last_offset.pop((topic, partition), None)

    def process(self, records: Sequence[RawRecord], before_each: Callable[[int], None] | None = None,
                ) -> tuple[Outcome, set[tuple[str, int, int]]]:
        """Feed a batch; return the outcome and the positions that are still pending.

        ``before_each(i)`` runs before record ``i`` is fed (Faust needs the current event
        set so table writes go to that record's changelog partition).
        """
        outcome = Outcome()
        before: dict[tuple[str, int], dict[str, int]] = {}  # counts of each engine fed, at batch start
        last_offset = self.last_offset
        partitions_seen: set[int] = set()
        redelivered = 0
        for index, record in enumerate(records):
            tp = (record.topic, record.partition)
            if record.offset <= last_offset.get(tp, -1):
                # the consumer delivered this offset again (rebalance, retry): already fed
                redelivered += 1
                continue
            last_offset[tp] = record.offset
            if before_each is not None:
                before_each(index)
            engine = self.engines.get(tp) or self.engine(record.topic, record.partition)
            if tp not in before:
                before[tp] = dict(engine.counts)
            if record.partition not in partitions_seen:
                # an interrupted flush of this (changelog) partition is completed before anything reads it
                partitions_seen.add(record.partition)
                for recover in self._recoverers:
                    recover()
            fed = engine.feed(record)
            if self.ledger is not None:  # same current event: ledger writes go to this record's changelog
                fed.derived.extend(self.ledger.record(fed.authenticated))
            outcome.extend(fed)
        # the batch's table writes, before the caller acknowledges anything (WriteBehindStore)
        flushing = time.perf_counter()
        written = 0
        for name in self._owned:
            flush = getattr(self.stores[name], "flush", None)
            if flush is not None:
                written += flush() or 0
        for store in self._batched_extra:
            flush = getattr(store, "flush", None)  # a plain TableStore (per-event writes) has none
            if flush is not None:
                written += flush() or 0
        delivering = time.perf_counter()
        if self.deliver_tables is not None:
            self.deliver_tables()
        if self.stages is not None:
            self.stages.add("fold.table_flush", delivering - flushing)
            self.stages.add("fold.table_deliver", time.perf_counter() - delivering)
            self.stages.table_writes += written
        if redelivered:
            self.counters.add({"redelivered": redelivered})
        pending: set[tuple[str, int, int]] = set()
        for tp, counts in before.items():
            engine = self.engines[tp]
            self.counters.add({k: v - counts.get(k, 0) for k, v in engine.counts.items() if v != counts.get(k, 0)})
            pending |= engine.verifier.pending_positions()
        return outcome, pending
