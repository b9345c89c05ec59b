"""The default seal batch (4096): one setting everywhere, and a full batch still fits a Kafka record.

A seal copy carries its lane's leaf hashes (32 B each), so the largest seal record is a
single-partition topic's: 4096 leaves + statement + signatures + identity document. These
tests write exactly that case to the real embedded broker and read it back authenticated.
"""

from __future__ import annotations

import hashlib

import pytest

from swarmlog.streams import speedups
from swarmlog.streams.identity import Identity
from swarmlog.streams.merkle import root as merkle_root
from swarmlog.streams.producer import DEFAULT_SEAL_BATCH, EventProducer
from swarmlog.streams.reader import plan_ranges, read_records, read_verified
from swarmlog.streams.settings import Settings
from swarmlog.streams.verify import Status, Verifier


def payload(i: int) -> dict[str, object]:
    return dict(reason="test", source_topic="src", source_partition=i % 3, source_offset=i,
                original_value=f"value-{i}".encode(), recorded_ms=1_700_000_000_000 + i)


def test_settings_and_producer_share_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """``SWARMLOG_SEAL_BATCH`` unset must mean what ``EventProducer()`` does by default."""
    monkeypatch.delenv("SWARMLOG_SEAL_BATCH", raising=False)
    assert Settings().seal_batch == DEFAULT_SEAL_BATCH


@pytest.mark.skipif(speedups.native is None, reason="C extension not built (no compiler) or SWARMLOG_SPEEDUPS=0")
def test_c_merkle_root_at_the_default_batch_size() -> None:
    """A single-lane seal now covers up to 4096 leaves: the C root must match RFC 9162 there."""
    assert speedups.native is not None
    hashes = [hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(2 * DEFAULT_SEAL_BATCH + 1)]
    for n in (DEFAULT_SEAL_BATCH - 1, DEFAULT_SEAL_BATCH, DEFAULT_SEAL_BATCH + 1, 2 * DEFAULT_SEAL_BATCH + 1):
        assert speedups.native.merkle_root_leaves(hashes[:n]) == merkle_root(hashes[:n]), n


@pytest.mark.integration
def test_full_default_batch_on_one_partition_is_sealed_and_authenticated(kafka_bootstrap: str,
                                                                        unique_topics) -> None:
    topic = unique_topics("one-lane", partitions=1)
    trust = unique_topics("trust", partitions=1)
    n = DEFAULT_SEAL_BATCH + 10
    identity = Identity.generate("seal-batch")
    with EventProducer(identity, kafka_bootstrap, identity_topic=trust, seal_interval_ms=60_000) as producer:
        assert producer.seal_batch == DEFAULT_SEAL_BATCH
        refs = producer.produce_many("deadletter.recorded", [payload(i) for i in range(n)], subjects=["s"] * n,
                                     topic=topic)
    records = list(read_records(kafka_bootstrap, plan_ranges(kafka_bootstrap, [topic])))
    # the size bound cut one seal (the identity document on the trust topic + 4095 events here), close() the second
    seals = [r for r in records if r.key == identity.did.encode()]
    assert len(records) == n + 2 and len(seals) == 2
    assert records.index(seals[0]) == DEFAULT_SEAL_BATCH - 1
    assert len(seals[0].value) > 32 * (DEFAULT_SEAL_BATCH - 1)  # it carries every leaf of the lane
    verifier = Verifier()
    verdicts = [v for v in read_verified(kafka_bootstrap, [topic], verifier=verifier) if v.kind == "event"]
    assert [v.status for v in verdicts] == [Status.AUTHENTICATED] * n
    assert verifier.problems == []
    assert [v.event.event_id for v in verdicts] == [r.event_id for r in refs]  # type: ignore[union-attr]
