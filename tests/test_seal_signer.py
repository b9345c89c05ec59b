"""Seals signed on the producer's signer thread: they trail their batch, and nothing changes for a reader.

The pure half (``ChainWriter.seal_begin`` / ``seal_finish``) is checked on in-memory logs
where each seal is written as late as the signer thread may write it; the producer half
on the real embedded broker with real Ed25519 + ML-DSA-65 signatures.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import pytest

from swarmlog.streams.chain import ChainWriter, OutRecord, PendingSeal
from swarmlog.streams.codec import default_store, encode_body
from swarmlog.streams.envelope import SEAL_SIGNING_CONTEXT, EnvelopeCodec
from swarmlog.streams.identity import HybridSignature, Identity
from swarmlog.streams.producer import EventProducer, ProduceError
from swarmlog.streams.reader import plan_ranges, read_records
from swarmlog.streams.verify import RawRecord, Status, Verifier
from tests.support.logs import interleave, to_raw

STORE = default_store()
IDENTITY_ENTRY = STORE.for_event_type("trust.identity")
DEAD = STORE.for_event_type("deadletter.recorded")
CODEC = EnvelopeCodec(STORE)


@pytest.fixture(scope="module")
def identity() -> Identity:
    return Identity.generate("signer-thread")


def payload(i: int) -> dict[str, object]:
    return dict(reason="test", source_topic="src", source_partition=i % 3, source_offset=i,
                original_value=f"value-{i}".encode(), recorded_ms=1_700_000_000_000 + i)


def append(writer: ChainWriter, i: int, partitions: int) -> OutRecord:
    body = encode_body(DEAD, payload(i))
    ref, value = writer.append(DEAD, body, f"s{i}", "events", i % partitions)
    return OutRecord(ref.topic, ref.partition, f"s{i}".encode(), value)


def trailing_log(identity: Identity, n: int, batch: int, lag: int, partitions: int = 3) -> list[OutRecord]:
    """Records in the order a producer with a signer thread may write them: each seal is cut
    after its batch and written only after ``lag`` further events were written."""
    writer = ChainWriter(identity)
    body = encode_body(IDENTITY_ENTRY, writer.identity_payload())
    _ref, value = writer.append(IDENTITY_ENTRY, body, identity.did, "trust", 0, sign=True)
    out = [OutRecord("trust", 0, identity.did.encode(), value)]
    waiting: list[tuple[int, PendingSeal]] = []  # (write after this many events, cut seal)
    for i in range(n):
        out.append(append(writer, i, partitions))
        if (i + 1) % batch == 0:
            pending = writer.seal_begin()
            assert pending is not None
            waiting.append((i + 1 + lag, pending))
        while waiting and waiting[0][0] <= i + 1:
            out.extend(writer.seal_finish(waiting.pop(0)[1]))
    last = writer.seal_begin()
    for _, pending in waiting:
        out.extend(writer.seal_finish(pending))
    if last is not None:
        out.extend(writer.seal_finish(last))
    return out


def verdicts_of(records: list[RawRecord]) -> tuple[Verifier, list[Any]]:
    verifier = Verifier()
    verdicts = verifier.feed_all(records) + verifier.finish()
    return verifier, verdicts


@pytest.mark.parametrize("lag", [0, 1, 7, 16, 40])
def test_trailing_seals_authenticate_every_event_in_any_interleaving(identity: Identity, lag: int) -> None:
    records = to_raw(trailing_log(identity, 96, batch=16, lag=lag))
    rng = random.Random(lag)
    for _ in range(5):
        verifier, verdicts = verdicts_of(interleave(records, rng))
        events = [v for v in verdicts if v.kind == "event"]
        assert len(events) == 97  # the identity document and 96 events
        assert {v.status for v in events} == {Status.AUTHENTICATED}
        assert verifier.problems == []


def test_cut_batch_is_detached_from_the_writer(identity: Identity) -> None:
    """What the signer thread signs cannot change under it while the writer chains on."""
    writer = ChainWriter(identity)
    body = encode_body(IDENTITY_ENTRY, writer.identity_payload())
    writer.append(IDENTITY_ENTRY, body, identity.did, "trust", 0, sign=True)
    for i in range(10):
        append(writer, i, 2)
    pending = writer.seal_begin()
    assert pending is not None and writer.open_count == 0
    before = [(lane.name, lane.first_seq, list(lane.hashes)) for lane in pending.lanes]
    for i in range(10, 30):
        append(writer, i, 2)
    assert [(lane.name, lane.first_seq, list(lane.hashes)) for lane in pending.lanes] == before
    assert sum(len(lane.hashes) for lane in pending.lanes) == 11  # identity document + 10 events
    assert writer.open_count == 20
    assert writer.seal_begin() is not None
    assert writer.seal_begin() is None  # nothing open any more


class FlakySigner:
    """The real identity, except that seal signatures fail while ``fail`` is set (or are slow)."""

    def __init__(self, identity: Identity, delay: float = 0.0) -> None:
        self._identity = identity
        self.fail = False
        self.delay = delay
        self.seal_signatures = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._identity, name)

    def sign(self, message: bytes) -> HybridSignature:
        if message.startswith(SEAL_SIGNING_CONTEXT):
            if self.fail:
                raise RuntimeError("signing device unplugged")
            time.sleep(self.delay)
            self.seal_signatures += 1
        return self._identity.sign(message)


def test_sync_seal_failure_keeps_the_batch_open(identity: Identity) -> None:
    """Signing on the caller's thread keeps the old contract: a failed seal() changes nothing."""
    flaky = FlakySigner(identity)
    writer = ChainWriter(identity)
    writer.identity = flaky  # type: ignore[assignment]
    body = encode_body(IDENTITY_ENTRY, writer.identity_payload())
    writer.append(IDENTITY_ENTRY, body, identity.did, "trust", 0, sign=True)
    for i in range(5):
        append(writer, i, 1)
    flaky.fail = True
    with pytest.raises(RuntimeError, match="unplugged"):
        writer.seal()
    assert writer.open_count == 6
    flaky.fail = False
    seals = writer.seal()
    assert len(seals) == 2  # trust/0 and events/0
    assert writer.open_count == 0


# ---------------------------------------------------------------------------- real broker

def read_back(bootstrap: str, topic: str) -> list[RawRecord]:
    return list(read_records(bootstrap, plan_ranges(bootstrap, [topic])))


def check_log(records: list[RawRecord], expected_events: int) -> None:
    """Every event authenticated, every seal behind the events it covers, no seal twice."""
    verifier = Verifier()
    verdicts = verifier.feed_all(records) + verifier.finish()
    events = [v for v in verdicts if v.kind == "event"]
    assert len(events) == expected_events
    assert {v.status for v in events} == {Status.AUTHENTICATED}
    assert verifier.problems == []
    last_event_offset: dict[tuple[int, int], int] = {}  # (partition, seq) -> offset
    sealed: list[tuple[str, int, int]] = []
    for record in records:
        if CODEC.is_seal(record.value):
            seal = CODEC.decode_seal(record.value)
            statement = CODEC.decode_statement(seal["statement"])
            lane = next(entry for entry in statement["lanes"] if entry["lane"] == seal["lane"])
            sealed.append((lane["lane"], lane["first_seq"], lane["last_seq"]))
            for seq in range(lane["first_seq"], lane["last_seq"] + 1):
                assert last_event_offset[(record.partition, seq)] < record.offset
        else:
            event = CODEC.decode(record.value)
            last_event_offset[(record.partition, event.seq)] = record.offset
    assert len(sealed) == len(set(sealed))
    covered = sum(last - first + 1 for _, first, last in sealed)
    assert covered == expected_events


@pytest.mark.integration
def test_background_signing_end_to_end(identity: Identity, kafka_bootstrap: str, unique_topics) -> None:
    topic = unique_topics("events", partitions=3)
    trust = unique_topics("trust", partitions=1)
    producer = EventProducer(identity, kafka_bootstrap, identity_topic=trust, seal_batch=50, sign_in_background=True)
    assert producer._signer is not None
    n = 0
    for start in range(0, 600, 120):
        producer.produce_many("deadletter.recorded", [payload(i) for i in range(start, start + 120)],
                              subjects=[f"subject-{i % 11}" for i in range(start, start + 120)], topic=topic)
        n += 120
        for i in range(7):
            producer.produce("deadletter.recorded", payload(10_000 + n + i), subject=f"one-{i}", topic=topic)
        n += 7
    producer.close()
    assert producer._signer._thread is not None and not producer._signer._thread.is_alive()
    records = read_back(kafka_bootstrap, topic)
    assert sum(not CODEC.is_seal(r.value) for r in records) == n
    check_log(records, n)


@pytest.mark.integration
def test_close_waits_for_the_seal_being_signed(identity: Identity, kafka_bootstrap: str, unique_topics) -> None:
    """close() right after the last event: the slow signature still lands before close returns."""
    topic = unique_topics("events", partitions=2)
    trust = unique_topics("trust", partitions=1)
    flaky = FlakySigner(identity, delay=0.3)
    producer = EventProducer(identity, kafka_bootstrap, identity_topic=trust, seal_batch=40, sign_in_background=True)
    producer.chain.identity = flaky  # type: ignore[assignment]
    producer.produce_many("deadletter.recorded", [payload(i) for i in range(100)],
                          subjects=[f"s{i}" for i in range(100)], topic=topic)
    producer.close()
    assert flaky.seal_signatures == 3  # identity document + 39, then 40, then the 21 close() sealed
    check_log(read_back(kafka_bootstrap, topic), 100)


@pytest.mark.integration
def test_at_most_one_seal_in_flight(identity: Identity, kafka_bootstrap: str, unique_topics) -> None:
    """Back-pressure: a producer that outruns a slow signer waits, so the seal lag stays one batch."""
    topic = unique_topics("events", partitions=1)
    trust = unique_topics("trust", partitions=1)
    flaky = FlakySigner(identity, delay=0.05)
    with EventProducer(identity, kafka_bootstrap, identity_topic=trust, seal_batch=10,
                       sign_in_background=True) as producer:
        producer.chain.identity = flaky  # type: ignore[assignment]
        signer = producer._signer
        assert signer is not None
        for i in range(60):
            producer.produce("deadletter.recorded", payload(i), subject="s", topic=topic)
            assert signer._submitted - signer._done <= 1
        assert signer._submitted == 6
    check_log(read_back(kafka_bootstrap, topic), 60)


@pytest.mark.integration
def test_signer_failure_surfaces_and_costs_only_its_batch(identity: Identity, kafka_bootstrap: str,
                                                          unique_topics) -> None:
    topic = unique_topics("events", partitions=1)
    trust = unique_topics("trust", partitions=1)
    flaky = FlakySigner(identity)
    producer = EventProducer(identity, kafka_bootstrap, identity_topic=trust, seal_batch=10, sign_in_background=True)
    producer.chain.identity = flaky  # type: ignore[assignment]
    producer.publish_identity()
    producer.seal()
    producer.produce_many("deadletter.recorded", [payload(i) for i in range(10)], subjects=["s"] * 10, topic=topic)
    assert producer.seal() == 0  # nothing open, but it waits for the batch's seal on the signer thread
    assert flaky.seal_signatures == 2
    flaky.fail = True
    producer.produce_many("deadletter.recorded", [payload(i) for i in range(10, 20)], subjects=["s"] * 10,
                          topic=topic)  # cuts the seal that fails
    producer._signer.wait()  # type: ignore[union-attr]
    flaky.fail = False
    with pytest.raises(ProduceError, match="unplugged"):
        producer.produce("deadletter.recorded", payload(99), subject="s", topic=topic)
    with pytest.raises(ProduceError, match="unplugged"):
        producer.produce_many("deadletter.recorded", [payload(99)], subjects=["s"], topic=topic)
    with pytest.raises(ProduceError, match="unplugged"):
        producer.close()
    assert producer._closed
    # what was sent before the failure is delivered; the failed batch's events are given up, not lost silently
    records = read_back(kafka_bootstrap, topic)
    verifier = Verifier()
    verdicts = verifier.feed_all(records) + verifier.finish()
    statuses = [v.status for v in verdicts if v.kind == "event"]
    assert statuses.count(Status.AUTHENTICATED) == 10
    assert len(statuses) == 20 and Status.AUTHENTICATED not in statuses[10:]


@pytest.mark.integration
def test_seal_timer_and_threads_with_background_signing(identity: Identity, kafka_bootstrap: str,
                                                        unique_topics) -> None:
    """Several threads produce while the time bound seals; every seal still trails its own events."""
    topic = unique_topics("events", partitions=3)
    trust = unique_topics("trust", partitions=1)
    errors: list[BaseException] = []

    def work(producer: EventProducer, base: int) -> None:
        try:
            for i in range(base, base + 150):
                producer.produce("deadletter.recorded", payload(i), subject=f"t{i % 5}", topic=topic)
                if i % 50 == 0:
                    time.sleep(0.05)  # idle long enough for the 20 ms time bound to seal
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    with EventProducer(identity, kafka_bootstrap, identity_topic=trust, seal_batch=64,
                       seal_interval_ms=20, sign_in_background=True) as producer:
        threads = [threading.Thread(target=work, args=(producer, base)) for base in (0, 1000, 2000)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
    check_log(read_back(kafka_bootstrap, topic), 450)


@pytest.mark.integration
def test_synchronous_signing_flag(identity: Identity, kafka_bootstrap: str, unique_topics) -> None:
    topic = unique_topics("events", partitions=2)
    trust = unique_topics("trust", partitions=1)
    with EventProducer(identity, kafka_bootstrap, identity_topic=trust, seal_batch=30,
                       sign_in_background=False) as producer:
        assert producer._signer is None
        producer.produce_many("deadletter.recorded", [payload(i) for i in range(100)],
                              subjects=[f"s{i}" for i in range(100)], topic=topic)
    check_log(read_back(kafka_bootstrap, topic), 100)
    # by default a producer signs on the caller's thread (the thread did not pay on 2 vCPUs)
    for default in (EventProducer(identity, kafka_bootstrap, identity_topic=trust),
                    EventProducer(identity, kafka_bootstrap, identity_topic=trust, background_seal=False)):
        assert default._signer is None
        default.close()
