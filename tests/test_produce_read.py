"""Produce → read back → verify, on the real embedded broker."""

from __future__ import annotations

import pytest
from confluent_kafka import Producer

from swarmlog.streams.codec import EncodeError
from swarmlog.streams.envelope import EnvelopeCodec
from swarmlog.streams.identity import Identity
from swarmlog.streams.producer import EventProducer, ProduceError
from swarmlog.streams.reader import ReadError, plan_ranges, read_records, read_verified
from swarmlog.streams.verify import Status, Verifier

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def identity() -> Identity:
    return Identity.generate("integration")


def dead_letter(i: int) -> dict[str, object]:
    return dict(reason="test", source_topic="src", source_partition=i % 3, source_offset=i,
                original_value=f"value-{i}".encode(), recorded_ms=1_700_000_000_000 + i)


def produce_some(identity: Identity, bootstrap: str, topic: str, trust: str, n: int,
                 **kwargs: object) -> list[object]:
    with EventProducer(identity, bootstrap, identity_topic=trust, **kwargs) as producer:  # type: ignore[arg-type]
        refs = [producer.produce("deadletter.recorded", dead_letter(i), subject=f"subject-{i % 7}", topic=topic)
                for i in range(n)]
    return refs


def test_produce_then_read_back_verified(identity: Identity, kafka_bootstrap: str, unique_topics) -> None:
    topic = unique_topics("events", partitions=3)
    trust = unique_topics("trust", partitions=1)
    refs = produce_some(identity, kafka_bootstrap, topic, trust, 300, seal_batch=64)
    verifier = Verifier()
    verdicts = list(read_verified(kafka_bootstrap, [topic], verifier=verifier))
    ok = [v for v in verdicts if v.status is Status.AUTHENTICATED]
    assert len(ok) == 300
    assert {v.event.event_id for v in ok} == {r.event_id for r in refs}  # type: ignore[union-attr,attr-defined]
    assert all(v.status is Status.AUTHENTICATED for v in verdicts)
    assert verifier.problems == []
    payloads = sorted(v.event.decode_payload()["source_offset"] for v in ok)  # type: ignore[union-attr]
    assert payloads == list(range(300))
    # the subject decides the partition: one subject, one lane
    lanes_per_subject: dict[str, set[str]] = {}
    for v in ok:
        lanes_per_subject.setdefault(v.event.subject, set()).add(v.event.lane)  # type: ignore[union-attr]
    assert all(len(lanes) == 1 for lanes in lanes_per_subject.values())
    # the identity document went to the trust topic, inline-signed
    trust_verdicts = list(read_verified(kafka_bootstrap, [trust]))
    assert [v.event.event_type for v in trust_verdicts if v.ok] == ["trust.identity"]  # type: ignore[union-attr]


def test_time_bound_seals_an_idle_producer(identity: Identity, kafka_bootstrap: str, unique_topics) -> None:
    import time

    topic = unique_topics("events", partitions=1)
    trust = unique_topics("trust", partitions=1)
    producer = EventProducer(identity, kafka_bootstrap, identity_topic=trust, seal_batch=10_000,
                             seal_interval_ms=50)
    try:
        producer.produce("deadletter.recorded", dead_letter(1), topic=topic)
        time.sleep(0.5)  # no flush: only the background timer can seal
        producer._kafka.flush(10)
        verdicts = list(read_verified(kafka_bootstrap, [topic]))
        assert [v.status for v in verdicts] == [Status.AUTHENTICATED]
    finally:
        producer.close()


def test_tampered_copy_written_raw_is_forged(identity: Identity, kafka_bootstrap: str, unique_topics) -> None:
    topic = unique_topics("events", partitions=1)
    trust = unique_topics("trust", partitions=1)
    produce_some(identity, kafka_bootstrap, topic, trust, 10, seal_batch=1000)
    records = list(read_records(kafka_bootstrap, plan_ranges(kafka_bootstrap, [topic])))
    codec = EnvelopeCodec()
    victim = next(r for r in records if not codec.is_seal(r.value))
    tampered = bytearray(victim.value)
    tampered[-3] ^= 0x20  # a byte of the payload
    raw = Producer({"bootstrap.servers": kafka_bootstrap})
    raw.produce(topic, bytes(tampered), victim.key, partition=0)
    raw.produce(topic, victim.value, victim.key, partition=0)  # and a plain duplicate
    raw.produce(topic, b"not avro at all", b"k", partition=0)
    assert raw.flush(10) == 0
    verifier = Verifier()
    verdicts = list(read_verified(kafka_bootstrap, [topic], verifier=verifier))
    by_status: dict[Status, list[int]] = {}
    for v in verdicts:
        by_status.setdefault(v.status, []).append(v.record.offset)
    assert len(by_status[Status.AUTHENTICATED]) == 10
    assert by_status[Status.FORGED] == [len(records)]
    assert by_status[Status.DUPLICATE] == [len(records) + 1]
    assert by_status[Status.MALFORMED] == [len(records) + 2]
    assert verifier.problems == []


def test_bad_payload_and_missing_topic_are_clear_errors(identity: Identity, kafka_bootstrap: str,
                                                        unique_topics) -> None:
    topic = unique_topics("events", partitions=1)
    trust = unique_topics("trust", partitions=1)
    with EventProducer(identity, kafka_bootstrap, identity_topic=trust) as producer:
        with pytest.raises(EncodeError, match="source_offset"):
            producer.produce("deadletter.recorded", {**dead_letter(1), "source_offset": "x"}, topic=topic)
        with pytest.raises(ProduceError, match="does not exist"):
            producer.produce("deadletter.recorded", dead_letter(1), topic=topic + "-missing")
    with pytest.raises(ReadError, match="does not exist"):
        list(read_verified(kafka_bootstrap, [topic + "-missing"]))


def test_produce_many_matches_produce(identity: Identity, kafka_bootstrap: str, unique_topics) -> None:
    topic = unique_topics("events", partitions=3)
    trust = unique_topics("trust", partitions=1)
    with EventProducer(identity, kafka_bootstrap, identity_topic=trust, seal_batch=50) as producer:
        first = producer.produce("deadletter.recorded", dead_letter(0), subject="subject-0", topic=topic)
        refs = producer.produce_many("deadletter.recorded", [dead_letter(i) for i in range(1, 120)],
                                     subjects=[f"subject-{i % 7}" for i in range(1, 120)], topic=topic)
        last = producer.produce("deadletter.recorded", dead_letter(120), subject="subject-3", topic=topic)
        with pytest.raises(EncodeError, match="source_offset"):
            producer.produce_many("deadletter.recorded", [dead_letter(1), {**dead_letter(2), "source_offset": None}],
                                  subjects=["a", "b"], topic=topic)
    verifier = Verifier()
    verdicts = list(read_verified(kafka_bootstrap, [topic], verifier=verifier))
    assert [v.status for v in verdicts] == [Status.AUTHENTICATED] * 121
    assert verifier.problems == []
    ids = {v.event.event_id for v in verdicts}  # type: ignore[union-attr]
    assert ids == {first.event_id, last.event_id, *(r.event_id for r in refs)}
    # chains continue across the single and bulk paths: per lane, seqs are 0..n-1
    seqs: dict[str, list[int]] = {}
    for v in verdicts:
        seqs.setdefault(v.event.lane, []).append(v.event.seq)  # type: ignore[union-attr]
    assert all(sorted(s) == list(range(len(s))) for s in seqs.values())
