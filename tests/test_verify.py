"""The verifier's classification rules, on logs built in memory by the real chain writer."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swarmlog.streams.chain import ChainWriter, OutRecord
from swarmlog.streams.codec import default_store, encode_body
from swarmlog.streams.envelope import EnvelopeCodec
from swarmlog.streams.identity import Identity
from swarmlog.streams.verify import Keyring, RawRecord, Status, Verdict, Verifier
from tests.support.logs import interleave, to_raw

STORE = default_store()
IDENTITY_ENTRY = STORE.for_event_type("trust.identity")
DEAD = STORE.for_event_type("deadletter.recorded")


@pytest.fixture(scope="module")
def mallory() -> Identity:
    return Identity.generate("mallory")


def payload(i: int) -> dict[str, object]:
    return dict(reason="test", source_topic="t", source_partition=0, source_offset=i,
                original_value=f"value-{i}".encode(), recorded_ms=i)


def append(writer: ChainWriter, entry: object, body: dict[str, object], subject: str, topic: str,
           partition: int, sign: bool = False) -> OutRecord:
    ref, value = writer.append(entry, encode_body(entry, body), subject, topic, partition, sign=sign)  # type: ignore[arg-type]
    return OutRecord(ref.topic, ref.partition, subject.encode(), value)


def build_log(identity: Identity, n: int, partitions: int = 3, seal_every: int = 4,
              sign_every: int = 0) -> tuple[ChainWriter, list[OutRecord]]:
    """A producer's records in the order it writes them: identity, events, seals."""
    writer = ChainWriter(identity)
    out: list[OutRecord] = [append(writer, IDENTITY_ENTRY, writer.identity_payload(), identity.did, "trust", 0,
                                   sign=True)]
    for i in range(n):
        sign = bool(sign_every) and i % sign_every == 0
        out.append(append(writer, DEAD, payload(i), f"s{i}", "events", i % partitions, sign=sign))
        if (i + 1) % seal_every == 0:
            out.extend(writer.seal())
    out.extend(writer.seal())
    return writer, out


def run(records: Sequence[RawRecord], verifier: Verifier | None = None) -> tuple[Verifier, list[Verdict]]:
    verifier = verifier or Verifier()
    verdicts = verifier.feed_all(records)
    verdicts += verifier.finish()
    return verifier, verdicts


def events(verdicts: Sequence[Verdict], status: Status) -> list[Verdict]:
    return [v for v in verdicts if v.kind == "event" and v.status is status]


def test_every_event_authenticated_exactly_once(alice: Identity) -> None:
    _, log = build_log(alice, 20)
    verifier, verdicts = run(to_raw(log))
    ok = events(verdicts, Status.AUTHENTICATED)
    assert len(ok) == 21  # 20 events + the identity document
    assert len({(v.event.lane, v.event.seq) for v in ok if v.event}) == 21
    assert verifier.problems == []
    assert all(v.status is Status.AUTHENTICATED for v in verdicts)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(), n=st.integers(min_value=1, max_value=30), seal_every=st.integers(1, 12))
def test_any_interleaving_gives_the_same_authenticated_set(alice: Identity, seed: int, n: int,
                                                           seal_every: int) -> None:
    _, log = build_log(alice, n, seal_every=seal_every)
    raw = to_raw(log)
    _, reference = run(raw)
    _, shuffled = run(interleave(raw, random.Random(seed)))
    key = lambda v: (v.record.topic, v.record.partition, v.record.offset)  # noqa: E731
    assert sorted(map(key, events(shuffled, Status.AUTHENTICATED))) == sorted(
        map(key, events(reference, Status.AUTHENTICATED)))
    assert len(events(shuffled, Status.AUTHENTICATED)) == n + 1
    # per lane, authenticated events come out in seq order: the fold order is deterministic
    per_lane: dict[str, list[int]] = {}
    for v in events(shuffled, Status.AUTHENTICATED):
        assert v.event is not None
        per_lane.setdefault(v.event.lane, []).append(v.event.seq)
    assert all(seqs == sorted(seqs) for seqs in per_lane.values())


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(), dup_count=st.integers(1, 5))
def test_redelivered_records_are_duplicates_and_never_authenticated_twice(alice: Identity, seed: int,
                                                                          dup_count: int) -> None:
    _, log = build_log(alice, 12, seal_every=5)
    raw = to_raw(log)
    rng = random.Random(seed)
    with_dups = list(raw)
    for _ in range(dup_count):
        victim = rng.choice([r for r in raw if not EnvelopeCodec().is_seal(r.value)])
        # at-least-once redelivery: the same record again, somewhere after the original
        position = with_dups.index(victim) + 1 + rng.randrange(len(with_dups) - with_dups.index(victim))
        with_dups.insert(position, RawRecord(victim.topic, victim.partition, 10_000 + position, victim.key,
                                             victim.value))
    verifier, verdicts = run(with_dups)
    ok = events(verdicts, Status.AUTHENTICATED)
    assert len(ok) == 13
    assert len({(v.event.lane, v.event.seq) for v in ok if v.event}) == 13
    assert len(events(verdicts, Status.DUPLICATE)) == dup_count
    assert verifier.problems == []


def test_tampered_copy_is_forged_and_original_survives(alice: Identity) -> None:
    _, log = build_log(alice, 6, partitions=1, seal_every=100)
    raw = to_raw(log)
    target = raw[3]
    tampered = bytearray(target.value)
    tampered[-5] ^= 0x01  # inside the payload
    raw_with_copy = [*raw, RawRecord(target.topic, target.partition, 999, target.key, bytes(tampered))]
    _verifier, verdicts = run(raw_with_copy)
    forged = events(verdicts, Status.FORGED)
    assert [v.record.offset for v in forged] == [999]
    assert len(events(verdicts, Status.AUTHENTICATED)) == 7


def test_tampered_in_place_is_forged_and_reported_missing(alice: Identity) -> None:
    _, log = build_log(alice, 6, partitions=1, seal_every=100)
    raw = to_raw(log)
    target = raw[3]
    tampered = bytearray(target.value)
    tampered[-5] ^= 0x01
    raw[3] = RawRecord(target.topic, target.partition, target.offset, target.key, bytes(tampered))
    verifier, verdicts = run(raw)
    assert [v.record.offset for v in events(verdicts, Status.FORGED)] == [target.offset]
    assert [(p.kind, p.seq) for p in verifier.problems] == [("missing", 2)]


def test_forged_event_claiming_the_next_seq(alice: Identity, mallory: Identity) -> None:
    """Mallory writes an event that claims to be Alice's, with a plausible seq and prev_hash."""
    _writer, log = build_log(alice, 4, partitions=1, seal_every=100)
    raw = to_raw(log)
    codec = EnvelopeCodec()
    genuine = codec.decode(raw[1].value)
    forged_rec = dict(event_id=genuine.event_id, event_type=genuine.event_type, payload_schema=genuine.payload_schema,
                      producer=genuine.producer, stream_id=genuine.stream_id, lane=genuine.lane, seq=genuine.seq,
                      prev_hash=genuine.prev_hash, timestamp_ms=genuine.timestamp_ms, subject=genuine.subject,
                      payload=encode_body(DEAD, payload(666)), auth=None)
    forged_value = codec.encode(forged_rec)
    # the forgery arrives *before* the genuine event
    raw.insert(1, RawRecord("events", 0, 500, b"s0", forged_value))
    verifier, verdicts = run(raw)
    assert [v.record.offset for v in events(verdicts, Status.FORGED)] == [500]
    assert len(events(verdicts, Status.AUTHENTICATED)) == 5
    assert verifier.problems == []


def test_unsealed_event_is_pending_until_finish(alice: Identity) -> None:
    writer = ChainWriter(alice)
    ident = append(writer, IDENTITY_ENTRY, writer.identity_payload(), alice.did, "trust", 0, sign=True)
    rec = append(writer, DEAD, payload(1), "s", "events", 0)
    verifier = Verifier()
    assert verifier.feed(to_raw([ident])[0])[0].status is Status.AUTHENTICATED
    assert verifier.feed(to_raw([rec])[0]) == []
    assert verifier.pending_count() == 1
    final = verifier.finish()
    assert [v.status for v in final] == [Status.PENDING]


def test_dropped_event_is_named_missing(alice: Identity) -> None:
    _, log = build_log(alice, 8, partitions=1, seal_every=100)
    raw = to_raw(log)
    dropped = raw.pop(4)
    verifier, verdicts = run(raw)
    assert [(p.kind, p.seq) for p in verifier.problems] == [("missing", EnvelopeCodec().decode(dropped.value).seq)]
    assert len(events(verdicts, Status.AUTHENTICATED)) == 8
    assert all(v.status is Status.AUTHENTICATED for v in verdicts)


def test_swapped_events_are_out_of_sequence(alice: Identity) -> None:
    _, log = build_log(alice, 8, partitions=1, seal_every=100)
    raw = to_raw(log)
    raw[3], raw[4] = raw[4], raw[3]
    verifier, verdicts = run(raw)
    late = events(verdicts, Status.OUT_OF_SEQUENCE)
    assert len(late) == 1 and late[0].event is not None
    assert late[0].event.seq == EnvelopeCodec().decode(raw[4].value).seq
    assert verifier.problems == []


def test_forged_seal_signature_leaves_events_pending(alice: Identity, mallory: Identity) -> None:
    _, log = build_log(alice, 3, partitions=1, seal_every=100)
    raw = to_raw(log)
    codec = EnvelopeCodec()
    seal = codec.decode_seal(raw[-1].value)
    seal["signature"] = {"ed25519": bytes(64), "ml_dsa_65": seal["signature"]["ml_dsa_65"]}
    raw[-1] = RawRecord(raw[-1].topic, raw[-1].partition, raw[-1].offset, raw[-1].key, codec.encode_seal(seal))
    _, verdicts = run(raw)
    assert [v.status for v in verdicts if v.kind == "seal"] == [Status.FORGED]
    assert len(events(verdicts, Status.PENDING)) == 3


def test_seal_signed_by_someone_else_is_forged(alice: Identity, mallory: Identity) -> None:
    _, alice_log = build_log(alice, 2, partitions=1, seal_every=100)
    _, mallory_log = build_log(mallory, 2, partitions=1, seal_every=100)
    codec = EnvelopeCodec()
    seal = codec.decode_seal(alice_log[-1].value)
    fake = codec.decode_seal(mallory_log[-1].value)
    # Mallory's valid signature, over Alice's statement, with Alice's identity attached
    seal["signature"] = fake["signature"]
    alice_log[-1] = OutRecord(alice_log[-1].topic, alice_log[-1].partition, alice_log[-1].key, codec.encode_seal(seal))
    _, verdicts = run(to_raw(alice_log))
    assert [v.status for v in verdicts if v.kind == "seal"] == [Status.FORGED]
    assert not any(v.status is Status.AUTHENTICATED and v.event and v.event.lane == "events/0" for v in verdicts)


def test_seal_leaves_must_match_the_signed_root(alice: Identity) -> None:
    _, log = build_log(alice, 3, partitions=1, seal_every=100)
    codec = EnvelopeCodec()
    seal = codec.decode_seal(log[-1].value)
    seal["leaves"][0] = bytes(32)
    log[-1] = OutRecord(log[-1].topic, log[-1].partition, log[-1].key, codec.encode_seal(seal))
    _, verdicts = run(to_raw(log))
    assert [(v.status, v.reason) for v in verdicts if v.kind == "seal"] == [
        (Status.FORGED, "seal leaves do not hash to the signed root")]


def test_inline_signed_events_authenticate_on_arrival(alice: Identity) -> None:
    _writer, log = build_log(alice, 6, partitions=1, seal_every=100, sign_every=2)
    raw = to_raw(log)
    verifier = Verifier()
    decided_on_arrival = []
    for rec in raw[:-1]:  # everything but the seal
        decided_on_arrival += verifier.feed(rec)
    assert len(events(decided_on_arrival, Status.AUTHENTICATED)) == 1 + 3  # identity + seq 0, 2, 4
    rest = verifier.feed(raw[-1]) + verifier.finish()
    assert len(events(rest, Status.AUTHENTICATED)) == 3
    assert verifier.problems == []


def test_inline_signature_by_the_wrong_key_is_forged(alice: Identity, mallory: Identity) -> None:
    _writer, log = build_log(alice, 2, partitions=1, seal_every=100, sign_every=1)
    codec = EnvelopeCodec()
    event = codec.decode(log[1].value)
    bad_sig = mallory.sign(b"swarmlog/event-hash/v1\x00" + event.hash).to_record()
    unsigned = codec.encode({**_record_of(event), "auth": None})
    resigned = codec.attach_auth(unsigned, {"signature": bad_sig, "identity": None})
    log[1] = OutRecord(log[1].topic, log[1].partition, log[1].key, resigned)
    _, verdicts = run(to_raw(log))
    forged = events(verdicts, Status.FORGED)
    assert len(forged) == 1 and forged[0].reason == "inline hybrid signature does not verify"


def _record_of(event: object) -> dict[str, object]:
    fields = ("event_id", "event_type", "payload_schema", "producer", "stream_id", "lane", "seq", "prev_hash",
              "timestamp_ms", "subject")
    rec = {f: getattr(event, f) for f in fields}
    rec["payload"] = event.payload_bytes  # type: ignore[attr-defined]
    return rec


def test_revoked_producer_authenticates_nothing_after_revocation(alice: Identity) -> None:
    _, log = build_log(alice, 4, partitions=1, seal_every=100)
    raw = to_raw(log)
    keyring = Keyring()
    verifier = Verifier(keyring=keyring)
    first = verifier.feed(raw[0]) + verifier.feed(raw[1])
    keyring.revoke(alice.did, "key compromised")
    later = verifier.feed_all(raw[2:]) + verifier.finish()
    assert [v.status for v in first] == [Status.AUTHENTICATED]
    assert {v.status for v in later if v.kind == "event"} == {Status.REVOKED_KEY, Status.PENDING}
    assert {v.status for v in later if v.kind == "seal"} == {Status.REVOKED_KEY}
    assert not events(later, Status.AUTHENTICATED)


def test_invalid_producer_did_is_unknown_key(alice: Identity) -> None:
    _, log = build_log(alice, 1, partitions=1)
    codec = EnvelopeCodec()
    event = codec.decode(log[1].value)
    value = codec.encode({**_record_of(event), "producer": "did:web:example.com", "auth": None})
    _, verdicts = run([RawRecord("events", 0, 0, b"k", value)])
    assert [v.status for v in verdicts] == [Status.UNKNOWN_KEY]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_garbage_records_get_a_verdict_never_an_exception(data: bytes) -> None:
    verifier = Verifier()
    verdicts = verifier.feed(RawRecord("t", 0, 0, None, data)) + verifier.finish()
    assert len(verdicts) <= 1
    for verdict in verdicts:
        assert verdict.status is not Status.AUTHENTICATED


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(index=st.integers(min_value=0), position=st.integers(min_value=0), flip=st.integers(1, 255))
def test_any_single_byte_corruption_is_never_authenticated(alice: Identity, index: int, position: int,
                                                           flip: int) -> None:
    _, log = build_log(alice, 3, partitions=1, seal_every=100)
    raw = to_raw(log)
    i = index % len(raw)
    value = bytearray(raw[i].value)
    value[position % len(value)] ^= flip
    corrupted = RawRecord(raw[i].topic, raw[i].partition, raw[i].offset, raw[i].key, bytes(value))
    original_ok = {(v.record.topic, v.record.offset) for v in events(run(raw)[1], Status.AUTHENTICATED)}
    raw[i] = corrupted
    _, verdicts = run(raw)
    ok = {(v.record.topic, v.record.offset) for v in events(verdicts, Status.AUTHENTICATED)}
    if not EnvelopeCodec().is_seal(raw[i].value):
        assert (corrupted.topic, corrupted.offset) not in ok or raw[i].value == log[i].value
    assert ok <= original_ok
