"""Signed event producer: typed payload → envelope → hash chain → Kafka, sealed in batches.

Authentication is amortised (DESIGN.md §3): one hybrid Ed25519 + ML-DSA-65 signature
per *batch*, not per event (see ``chain.ChainWriter``). A batch closes when it reaches
``seal_batch`` events, when its oldest event has waited ``seal_interval_ms``, and on
``seal()``/``flush()``/``close()``. The seal of a lane is produced after that lane's
events, to the same partition, so Kafka keeps it behind them.

Events that must be trusted before the seal (votes, identity documents) can be signed
inline (``sign=True``); they still chain and are still sealed.

The hybrid signature of a seal (≈ 2 ms, mostly ML-DSA-65, which releases the GIL) is made
on the producing thread by default; with ``sign_in_background=True`` it is made on a signer
thread, so the producing thread chains and sends the next batch meanwhile: a seal then
trails its batch by at most the next batch. Seals are signed
and sent strictly in the order they were cut, each after the events it covers; ``seal()``,
``flush()`` and ``close()`` wait for every cut seal, and a signer failure is raised by the
next call.
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from swarmlog.streams import speedups
from swarmlog.streams.chain import ChainWriter, EventRef, EventRefs, OutRecord, PendingSeal
from swarmlog.streams.codec import EncodeError, SchemaEntry, SchemaStore, default_store, encode_body
from swarmlog.streams.envelope import IDENTITY_EVENT_TYPE
from swarmlog.streams.identity import Identity

log = logging.getLogger(__name__)
_crc32 = zlib.crc32

__all__ = ["EventProducer", "EventRef", "EventRefs", "ProduceError", "partition_for"]


DEFAULT_SEAL_BATCH = 4096
"""Events per seal unless configured (``SWARMLOG_SEAL_BATCH``).

4096 rather than 1024: a quarter of the signatures (≈ 2 ms of CPU each, ≈ 1.5 µs per event
saved) and half the seal bytes per event, while ``seal_interval_ms`` still bounds how long
any event waits for its seal — only producers above ≈ 5 k events/s wait longer, and never
past that bound. Measurements and the latency table: docs/benchmarks.md, Ingest."""


class ProduceError(RuntimeError):
    """Kafka refused or lost at least one record; nothing is silently dropped."""


def partition_for(key: bytes, partitions: int) -> int:
    """CRC-32 of the key modulo the partition count (librdkafka's ``consistent`` partitioner).

    Every swarmlog writer — CLI, Python API, workers — computes partitions with this
    function, so all events of one subject share a partition and a lane.
    """
    return _crc32(key) % partitions


def producer_config(bootstrap: str, **overrides: Any) -> dict[str, Any]:
    """confluent-kafka settings every swarmlog producer uses.

    A per-record delivery callback halves confluent-kafka's produce rate, so only seal
    records carry one. Idempotence + the gapless guarantee mean a partition never has a
    hole: a lost record is a fatal error that fails every later record, and a delivered
    seal acknowledges every event before it. The gapless guarantee does not cover records
    failed by ``message.timeout.ms``, so that timeout is infinite: a record that cannot be
    delivered stays queued and ``flush()`` reports it instead of dropping it.
    """
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 5,
        "batch.num.messages": 10000, "queue.buffering.max.messages": 1_000_000,
        "enable.gapless.guarantee": True, "message.timeout.ms": 0,
        "log_level": 3,  # errors only: the gapless setting is flagged "experimental" on every start
    }
    config.update(overrides)
    return config


def shared_kafka_producer(bootstrap: str, **overrides: Any) -> Producer:
    """A confluent-kafka producer with swarmlog's delivery settings, to share between identities."""
    return Producer(producer_config(bootstrap, **overrides))


class EventProducer:
    """Produces signed, chained, sealed swarmlog events with confluent-kafka.

    Thread-safe. Use as a context manager, or call ``close()``: both seal and flush.
    """

    def __init__(
        self,
        identity: Identity,
        bootstrap: str,
        *,
        store: SchemaStore | None = None,
        seal_batch: int = DEFAULT_SEAL_BATCH,
        seal_interval_ms: int = 200,
        topic_prefix: str = "",
        identity_topic: str | None = None,
        kafka_config: Mapping[str, Any] | None = None,
        metadata_timeout: float = 10.0,
        kafka: Producer | None = None,
        background_seal: bool = True,
        topic_overrides: Mapping[str, str] | None = None,
        sign_in_background: bool = False,
    ) -> None:
        """``kafka``: share one confluent-kafka producer between many identities (a
        simulation of hundreds of agents must not start hundreds of librdkafka clients);
        it must be configured like ``shared_kafka_producer`` makes it.

        ``sign_in_background``: sign seals on a signer thread while this thread goes on.
        Off by default: on the 2-vCPU benchmark machine the
        second core is already busy with librdkafka and the broker, and two quiet runs gave
        0.92x and 1.00x the inline rate (docs/benchmarks.md, Ingest); turn it on where cores
        are spare."""
        if seal_batch < 1:
            raise ValueError("seal_batch must be >= 1")
        self.identity = identity
        self.store = store or default_store()
        self.chain = ChainWriter(identity, self.store)
        self.seal_batch = seal_batch
        self.seal_interval = seal_interval_ms / 1000.0
        self.topic_prefix = topic_prefix
        self.identity_topic = identity_topic or topic_prefix + "trust"
        # event type → exact topic name, for deployments (and tests) that move a type elsewhere
        self.topic_overrides = dict(topic_overrides or {})
        self.metadata_timeout = metadata_timeout
        config = producer_config(bootstrap, error_cb=self._on_error)
        config.update(kafka_config or {})
        self._kafka = kafka if kafka is not None else Producer(config)
        self._lock = threading.RLock()
        self._partitions: dict[str, int] = {}
        self._open_since = 0.0
        self._errors: list[str] = []
        self._failed = 0
        self._closed = False
        self._stop = threading.Event()
        # background_seal=False: the caller seals (many producers in one process must not
        # each run a timer thread); the size bound and flush()/close() still seal.
        self._sealer = threading.Thread(target=self._seal_timer, name="swarmlog-sealer", daemon=True)
        if background_seal:
            self._sealer.start()
        self._signer: _SealSigner | None = None
        if sign_in_background:
            self._signer = _SealSigner(self.chain.seal_finish, self._send)

    @property
    def did(self) -> str:
        return self.chain.did

    @property
    def stream_id(self) -> bytes:
        return self.chain.stream_id

    # ------------------------------------------------------------------ public API
    def produce(
        self,
        event_type: str,
        payload: Mapping[str, Any],
        *,
        subject: str | None = None,
        topic: str | None = None,
        sign: bool = False,
        timestamp_ms: int | None = None,
    ) -> EventRef:
        """Encode, chain and send one event. Raises ``EncodeError`` if the payload doesn't fit.

        ``topic`` overrides the schema's topic (tests, namespaced deployments); ``subject``
        defaults to the payload field the schema names as subject. The first event of a
        producer is preceded by its self-signed identity document.
        """
        entry = self.store.for_event_type(event_type)
        body = encode_body(entry, payload)
        if subject is None:
            subject = self._subject_of(entry, payload)
        topic_name = topic or self._topic_of(entry)
        with self._lock:
            self._raise_signer_error()
            if self.chain.identity_event is None and event_type != IDENTITY_EVENT_TYPE:
                self._publish_identity_locked()
            return self._append_locked(entry, body, subject, topic_name, sign, timestamp_ms)

    def produce_many(
        self,
        event_type: str,
        payloads: Sequence[Mapping[str, Any]],
        *,
        subjects: Sequence[str] | None = None,
        topic: str | None = None,
    ) -> EventRefs:
        """Bulk ingest: encode, chain and send many events of one type, in order.

        Equivalent to calling ``produce`` for each payload (same envelopes, same seals at
        the same batch bounds), with the per-call overhead paid once per batch. An invalid
        payload raises ``EncodeError`` before anything of the batch is sent. The result is
        a read-only sequence of the events' ``EventRef``s, built when read (``EventRefs``).
        """
        entry = self.store.for_event_type(event_type)
        encode = entry.encode_body
        encode_many = getattr(encode, "encode_many", None)  # the C encoder's: one call per batch
        native = speedups.native
        try:
            bodies = encode_many(payloads) if encode_many is not None else [encode(p) for p in payloads]
        except Exception:
            bodies = [encode_body(entry, p) for p in payloads]  # re-raises as EncodeError naming the field
        keys: list[bytes] | None = None
        if subjects is None:
            if native is not None and entry.subject_field:
                keys = native.subject_keys(payloads, entry.subject_field)
            if keys is None:
                keys = [self._subject_of(entry, p).encode() for p in payloads]
        elif len(subjects) != len(payloads):
            raise ValueError("subjects and payloads differ in length")
        else:
            keys = [s.encode() for s in subjects]
        topic_name = topic or self._topic_of(entry)
        with self._lock:
            if self._closed:
                raise ProduceError("producer is closed")
            self._raise_signer_error()
            if self.chain.identity_event is None and event_type != IDENTITY_EVENT_TYPE:
                self._publish_identity_locked()
            partitions = self._partitions.get(topic_name) or self.partitions(topic_name)
            refs = EventRefs(topic_name, partitions)
            produce = self._kafka.produce
            start = 0
            while start < len(bodies):
                room = max(1, self.seal_batch - self.chain.open_count)
                chunk_keys = keys[start:start + room] if start or room < len(keys) else keys
                parts, values = self.chain.append_many_into(
                    refs, entry, bodies[start:start + room] if start or room < len(bodies) else bodies, chunk_keys,
                    topic_name, partitions)
                if self.chain.open_count == len(values):
                    self._open_since = time.monotonic()
                if native is not None:
                    # the produce() loop in C; it stops at a full queue (BufferError) and we wait here
                    done = 0
                    while done < len(values):
                        done = native.produce_each(produce, topic_name, values, chunk_keys, parts, done)
                        if done < len(values):
                            self._send(OutRecord(topic_name, parts[done], chunk_keys[done], values[done]),
                                       report=False)
                            done += 1
                else:
                    for partition, key, value in zip(parts, chunk_keys, values, strict=True):
                        try:
                            produce(topic_name, value, key, partition)
                        except BufferError:
                            self._send(OutRecord(topic_name, partition, key, value), report=False)
                start += room
                if self.chain.open_count >= self.seal_batch:
                    self._seal_locked()
        return refs

    def publish_identity(self) -> EventRef | None:
        """Publish this producer's self-signed identity document, once; None if already done."""
        with self._lock:
            if self.chain.identity_event is not None:
                return None
            return self._publish_identity_locked()

    def seal(self) -> int:
        """Close the open batch now; returns how many events the seal covers.

        Returns once this seal and every earlier one is signed and handed to Kafka
        (``flush()`` also waits for delivery); raises if signing any of them failed —
        after sealing what is open, so a failed batch costs only its own events.
        """
        with self._lock:
            covered = self._seal_locked()
        if self._signer is not None:
            self._signer.wait()  # outside the lock: other threads keep producing meanwhile
        self._raise_signer_error()
        return covered

    def flush(self, timeout: float = 30.0) -> None:
        """Seal, then wait until Kafka acknowledged everything; raise if anything failed."""
        try:
            self.seal()
        except ProduceError:
            self._kafka.flush(timeout)  # what was sent is still delivered before the caller hears
            raise
        remaining = self._kafka.flush(timeout)
        if remaining:
            raise ProduceError(f"{remaining} records still undelivered after {timeout:.0f}s")
        self._raise_errors()

    def close(self, timeout: float = 30.0) -> None:
        if self._closed:
            return
        self._stop.set()
        if self._sealer.is_alive():
            self._sealer.join(timeout=5)
        try:
            self.flush(timeout)
        finally:
            self._closed = True
            if self._signer is not None:
                self._signer.stop()

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def failed(self) -> int:
        """Delivery failures seen so far (seal records, fatal errors); ``flush()`` raises on them."""
        return self._failed

    def partitions(self, topic: str) -> int:
        count = self._partitions.get(topic)
        if count is None:
            try:
                # All-topics metadata: asking for one topic by name makes some brokers
                # (Tansu, Kafka with auto.create.topics.enable) create it silently.
                md = self._kafka.list_topics(timeout=self.metadata_timeout)
            except KafkaException as exc:
                raise ProduceError(f"cannot read metadata for topic {topic!r}: {exc}") from None
            info = md.topics.get(topic)
            if info is None or info.error is not None or not info.partitions:
                raise ProduceError(
                    f"topic {topic!r} does not exist (provision it: `swarmlog topics --provision`)"
                )
            count = len(info.partitions)
            self._partitions[topic] = count
        return count

    # ------------------------------------------------------------------ internals
    def _topic_of(self, entry: SchemaEntry) -> str:
        override = self.topic_overrides.get(entry.event_type or "")
        if override:
            return override
        if not entry.topic:
            raise EncodeError(f"schema {entry.full_name} names no topic")
        return self.topic_prefix + entry.topic

    @staticmethod
    def _subject_of(entry: SchemaEntry, payload: Mapping[str, Any]) -> str:
        name = entry.subject_field
        value = payload.get(name) if name else None
        if not isinstance(value, str):
            raise EncodeError(f"{entry.event_type}: subject field {name!r} missing; pass subject=")
        return value

    def _publish_identity_locked(self) -> EventRef:
        entry = self.store.for_event_type(IDENTITY_EVENT_TYPE)
        body = encode_body(entry, self.chain.identity_payload())
        return self._append_locked(entry, body, self.did, self.identity_topic, True, None)

    def _append_locked(self, entry: SchemaEntry, body: bytes, subject: str, topic: str, sign: bool,
                       timestamp_ms: int | None) -> EventRef:
        if self._closed:
            raise ProduceError("producer is closed")
        key = subject.encode()
        partitions = self._partitions.get(topic) or self.partitions(topic)
        partition = _crc32(key) % partitions
        ref, value = self.chain.append(entry, body, subject, topic, partition, sign=sign,
                                       timestamp_ms=timestamp_ms)
        try:
            self._kafka.produce(topic, value, key, partition)
        except BufferError:
            self._send(OutRecord(topic, partition, key, value), report=False)
        if self.chain.open_count == 1:
            self._open_since = time.monotonic()
        if self.chain.open_count >= self.seal_batch:
            self._seal_locked()
        return ref

    def _send(self, record: OutRecord, report: bool = True) -> None:
        while True:
            try:
                if report:
                    self._kafka.produce(record.topic, record.value, record.key, record.partition,
                                        on_delivery=self._on_delivery)
                else:
                    self._kafka.produce(record.topic, record.value, record.key, record.partition)
                return
            except BufferError:
                self._kafka.poll(0.05)

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self._failed += 1
            self._errors.append(f"fatal producer error: {err.str()}")
            log.error("fatal producer error: %s", err.str())
        else:
            log.warning("producer: %s", err.str())

    def _on_delivery(self, err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            self._failed += 1
            self._errors.append(f"{msg.topic()}[{msg.partition()}]: {err.str()}")
            log.error("delivery failed: %s[%s]: %s", msg.topic(), msg.partition(), err.str())

    def _raise_errors(self) -> None:
        if self._errors:
            errors, self._errors = self._errors, []
            raise ProduceError(f"{len(errors)} records failed: {errors[0]}")

    def _seal_locked(self) -> int:
        covered = self.chain.open_count
        if self._signer is None:
            for record in self.chain.seal():
                self._send(record)
        else:
            pending = self.chain.seal_begin()
            if pending is not None:
                # its events were handed to Kafka before this point, so the seal lands behind them
                self._signer.submit(pending)
        self._kafka.poll(0)
        return covered

    def _raise_signer_error(self) -> None:
        """A failed seal leaves its events unauthenticated forever: every later call says so."""
        error = self._signer.error if self._signer is not None else None
        if error is not None:
            raise ProduceError(f"sealing failed, events of that batch stay unsealed: {error!r}") from error

    def _seal_timer(self) -> None:
        """Bound how long an event waits for its seal, even when the producer goes idle."""
        tick = max(self.seal_interval / 4, 0.005)
        while not self._stop.wait(tick):
            try:
                with self._lock:
                    if self.chain.open_count and time.monotonic() - self._open_since >= self.seal_interval:
                        self._seal_locked()
                self._kafka.poll(0)
            except Exception:  # the timer must survive; the next flush() reports errors
                log.exception("background seal failed")


class _SealSigner:
    """One thread that signs cut batches and sends their seal records, in cut order.

    One thread and a FIFO keep every lane's seals in seq order behind their events (the
    verifier's "a later seal skips it" rule relies on that). ``submit`` is a hand-over: the
    producing thread waits until the signer has taken the new seal, which means every
    earlier seal is signed and sent. So at most one seal is in flight (bounded memory and
    lag; a producer that outruns signing waits there), and — the reason for the hand-over —
    the waiting producer releases the GIL exactly when the signer needs it. Otherwise the
    signer, returning from ML-DSA-65 or woken by a new seal, waits for the interpreter's
    forced GIL switch (5 ms, longer than the signature) and signing becomes the bottleneck.
    An error is kept (the first one) for the producer to raise; later seals are still
    signed and sent, so only the failed batch's events stay unsealed.
    """

    def __init__(self, finish: Callable[[PendingSeal], list[OutRecord]], send: Callable[[OutRecord], None]) -> None:
        self._finish = finish
        self._send = send
        self._cond = threading.Condition()
        self._jobs: deque[PendingSeal | None] = deque()
        self._submitted = 0
        self._taken = 0
        self._done = 0
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def submit(self, pending: PendingSeal) -> None:
        if self._thread is None:  # started by the first seal: a producer that never seals runs no thread
            self._thread = threading.Thread(target=self._run, name="swarmlog-signer", daemon=True)
            self._thread.start()
        with self._cond:
            self._jobs.append(pending)
            self._submitted += 1
            number = self._submitted
            self._cond.notify_all()
            while self._taken < number:
                self._cond.wait()

    def wait(self) -> None:
        """Until every submitted seal is signed and handed to Kafka (or failed)."""
        with self._cond:
            while self._done < self._submitted:
                self._cond.wait()

    def stop(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            with self._cond:
                self._jobs.append(None)
                self._cond.notify_all()
            self._thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._jobs:
                    self._cond.wait()
                pending = self._jobs.popleft()
                if pending is None:
                    return
                self._taken += 1
                self._cond.notify_all()
            try:
                for record in self._finish(pending):
                    self._send(record)
            except BaseException as exc:  # kept and raised by the producer's next call
                if self.error is None:
                    self.error = exc
                log.error("sealing failed: %r", exc)
            finally:
                with self._cond:
                    self._done += 1
                    self._cond.notify_all()
