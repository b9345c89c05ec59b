"""Single-object encoding, the compiled codec and the envelope, against fastavro."""

from __future__ import annotations

import contextlib
import hashlib
import io

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swarmlog.streams.avro_compile import read_long, write_long
from swarmlog.streams.codec import (
    CodecError,
    MalformedDataError,
    NotSingleObjectError,
    SchemaStore,
    UnknownSchemaError,
    crc64_avro,
    default_store,
    fingerprint,
)
from swarmlog.streams.envelope import EnvelopeCodec
from swarmlog.streams.ids import uuid7, uuid7_batch, uuid7_time_ms, uuid_text

DID = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"


def test_fingerprint_matches_avro_spec_and_fastavro() -> None:
    # The Avro spec's Rabin fingerprint; fastavro prints it little-endian, as SOE writes it.
    assert fingerprint('"int"').hex() == fastavro.schema.fingerprint('"int"', "CRC-64-AVRO")
    assert crc64_avro(b'"int"') == 0x7275D51A3F395C8F
    for entry in default_store().entries():
        assert entry.fingerprint.hex() == fastavro.schema.fingerprint(entry.canonical, "CRC-64-AVRO")


@given(st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1))
def test_varint_round_trip_and_matches_fastavro(n: int) -> None:
    encoded = write_long(n)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, "long", n)
    assert encoded == buf.getvalue()
    assert read_long(encoded, 0) == (n, len(encoded))


def test_varint_rejects_out_of_range() -> None:
    with pytest.raises(OverflowError):
        write_long(1 << 63)
    with pytest.raises(ValueError):
        read_long(b"\xff" * 11, 0)


def _envelope(**overrides: object) -> dict[str, object]:
    record: dict[str, object] = dict(
        event_id=uuid7(), event_type="trust.identity", payload_schema=b"12345678", producer=DID,
        stream_id=uuid7(), lane="trust/3", seq=17, prev_hash=b"\x01" * 32, timestamp_ms=1_763_900_000_000,
        subject="agent-1", payload=b"x" * 100, auth=None,
    )
    record.update(overrides)
    return record


envelopes = st.builds(
    _envelope,
    event_type=st.text(max_size=40),
    producer=st.text(max_size=80),
    lane=st.text(max_size=30),
    seq=st.integers(min_value=0, max_value=(1 << 63) - 1),
    timestamp_ms=st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1),
    subject=st.text(max_size=300),
    payload=st.binary(max_size=400),
    auth=st.one_of(st.none(), st.builds(
        lambda e, m, i: {"signature": {"ed25519": e, "ml_dsa_65": m}, "identity": i},
        st.binary(max_size=70), st.binary(max_size=200), st.one_of(st.none(), st.binary(max_size=50)))),
)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(envelopes)
def test_envelope_encoding_is_byte_identical_to_fastavro(record: dict[str, object]) -> None:
    codec = EnvelopeCodec()
    value = codec.encode(record)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, codec.entry.parsed, record)
    assert value[10:] == buf.getvalue()
    event = codec.decode(value)
    assert (event.seq, event.subject, event.payload_bytes, event.auth) == (
        record["seq"], record["subject"], record["payload"], record["auth"])


@settings(max_examples=100)
@given(envelopes)
def test_event_hash_ignores_inline_auth(record: dict[str, object]) -> None:
    codec = EnvelopeCodec()
    unsigned = codec.encode({**record, "auth": None})
    assert codec.decode(unsigned).hash == hashlib.sha256(unsigned).digest()
    signed = codec.attach_auth(unsigned, {"signature": {"ed25519": b"a" * 64, "ml_dsa_65": b"b" * 10},
                                          "identity": None})
    assert codec.decode(signed).hash == hashlib.sha256(unsigned).digest()
    assert signed == codec.encode({**record, "auth": {"signature": {"ed25519": b"a" * 64, "ml_dsa_65": b"b" * 10},
                                                      "identity": None}})


def test_decode_errors_are_typed() -> None:
    codec = EnvelopeCodec()
    value = codec.encode(_envelope())
    with pytest.raises(NotSingleObjectError):
        codec.decode(b"\x00\x01" + value[2:])
    with pytest.raises(UnknownSchemaError):
        codec.decode(value[:2] + b"\xee" * 8 + value[10:])
    with pytest.raises(MalformedDataError):
        codec.decode(value + b"\x00")
    for cut in range(len(value) - 1):
        with pytest.raises(CodecError):
            codec.decode(value[:cut])
    store = default_store()
    with pytest.raises(UnknownSchemaError):
        store.decode(b"\xc3\x01" + b"\x00" * 8 + b"body")


@settings(max_examples=500)
@given(st.binary(max_size=400))
def test_garbage_never_crashes_the_decoders(data: bytes) -> None:
    codec = EnvelopeCodec()
    store = default_store()
    for candidate in (data, codec.encode(_envelope())[:10] + data, b"\xc3\x01" + codec.seal_fingerprint + data):
        with contextlib.suppress(CodecError):
            codec.decode(candidate)
        with contextlib.suppress(CodecError):
            store.decode(candidate)


@settings(max_examples=300)
@given(st.integers(min_value=0), st.integers(min_value=0, max_value=255))
def test_single_byte_corruption_is_detected_or_typed(position: int, byte: int) -> None:
    codec = EnvelopeCodec()
    value = bytearray(codec.encode(_envelope()))
    original_hash = codec.decode(bytes(value)).hash
    index = position % len(value)
    if value[index] == byte:
        return
    value[index] = byte
    try:
        event = codec.decode(bytes(value))
    except CodecError:
        return
    assert event.hash != original_hash  # any accepted corruption changes the event hash


def test_schema_evolution_old_writer_new_reader(tmp_path: object) -> None:
    from pathlib import Path

    root = Path(str(tmp_path))
    (root / "demo").mkdir()
    (root / "demo" / "Thing.v1.avsc").write_text(
        '{"type":"record","name":"Thing","namespace":"demo","fields":[{"name":"a","type":"long"}]}')
    (root / "demo" / "Thing.avsc").write_text(
        '{"type":"record","name":"Thing","namespace":"demo","fields":[{"name":"a","type":"long"},'
        '{"name":"b","type":"string","default":"fresh"}]}')
    store = SchemaStore.from_directory(root)
    v1 = next(e for e in store.entries() if e.version == 1)
    old_bytes = b"\xc3\x01" + v1.fingerprint + v1.encode_body({"a": 42})
    writer, value = store.decode(old_bytes)
    assert writer.version == 1
    assert value == {"a": 42, "b": "fresh"}
    assert store.decode(store.encode("demo.Thing", {"a": 1, "b": "x"}))[1] == {"a": 1, "b": "x"}


def test_uuid7_is_monotonic_and_versioned() -> None:
    ids = [uuid7() for _ in range(2000)] + uuid7_batch(3000) + [uuid7() for _ in range(10)] + uuid7_batch(1)
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    text = uuid_text(ids[0])
    assert text[14] == "7"
    assert text[19] in "89ab"
    import time

    assert abs(uuid7_time_ms(ids[-1]) - time.time() * 1000) < 60_000
