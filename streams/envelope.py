"""The event envelope: building, encoding, decoding and hashing.

The Kafka value of every swarmlog event is the single-object encoding of
``swarmlog.core.Envelope`` (see ``schemas/core/Envelope.avsc``). Its **event hash** is
SHA-256 of that encoding with ``auth`` null. Because ``auth`` is the last field and a
null union encodes as the single byte ``00``, the hash of an unsigned event is simply
SHA-256 of the Kafka value: no re-encoding on the verify path.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from swarmlog.streams import speedups
from swarmlog.streams.codec import (
    HEADER_SIZE,
    MAGIC,
    CodecError,
    MalformedDataError,
    NotSingleObjectError,
    SchemaEntry,
    SchemaStore,
    UnknownSchemaError,
    default_store,
)

ENVELOPE_SCHEMA = "swarmlog.core.Envelope"
SEAL_SCHEMA = "swarmlog.core.Seal"
SEAL_STATEMENT_SCHEMA = "swarmlog.core.SealStatement"
IDENTITY_EVENT_TYPE = "trust.identity"
ZERO_HASH = b"\x00" * 32

# Domain separation: a signature over an event can never be replayed as one over a seal.
EVENT_SIGNING_CONTEXT = b"swarmlog/event-hash/v1\x00"
SEAL_SIGNING_CONTEXT = b"swarmlog/seal-statement/v1\x00"


@dataclass(slots=True)
class Event:
    """A decoded envelope plus its hash. ``payload`` stays raw until asked for."""

    event_id: bytes
    event_type: str
    payload_schema: bytes
    producer: str
    stream_id: bytes
    lane: str
    seq: int
    prev_hash: bytes
    timestamp_ms: int
    subject: str
    payload_bytes: bytes
    auth: dict[str, Any] | None
    hash: bytes
    raw: bytes

    def decode_payload(self, store: SchemaStore | None = None) -> dict[str, Any]:
        """Decode the payload into the current schema of its record (Avro resolution)."""
        store = store or default_store()
        writer = store.by_fingerprint(self.payload_schema)
        reader = store.for_event_type(self.event_type) if writer.event_type else writer
        if reader.full_name != writer.full_name:
            raise UnknownSchemaError(
                f"payload schema {writer.full_name} does not match event type {self.event_type}"
            )
        value = store.decode_body(writer, reader, self.payload_bytes, 0)
        if not isinstance(value, dict):
            raise MalformedDataError("payload is not a record")
        return value

    @property
    def stream_key(self) -> tuple[bytes, str]:
        return (self.stream_id, self.lane)


class EnvelopeCodec:
    """Encodes and decodes envelopes with the compiled codec of the shipped schema."""

    def __init__(self, store: SchemaStore | None = None) -> None:
        self.store = store or default_store()
        self.entry: SchemaEntry = self.store.current(ENVELOPE_SCHEMA)
        self.seal_entry: SchemaEntry = self.store.current(SEAL_SCHEMA)
        self.statement_entry: SchemaEntry = self.store.current(SEAL_STATEMENT_SCHEMA)
        self._header = MAGIC + self.entry.fingerprint
        self._seal_header = MAGIC + self.seal_entry.fingerprint
        self._encode = self.entry.encode_body
        self._decode = self.entry.decode_body
        self._auth_encode = self.store.named_codec("swarmlog.core.InlineAuth")[0]

    @property
    def envelope_fingerprint(self) -> bytes:
        return self.entry.fingerprint

    @property
    def seal_fingerprint(self) -> bytes:
        return self.seal_entry.fingerprint

    def encode(self, record: dict[str, Any]) -> bytes:
        """Single-object bytes of an envelope record (``auth`` may be None)."""
        return self._header + self._encode(record)

    def attach_auth(self, unsigned_value: bytes, auth: dict[str, Any]) -> bytes:
        """Replace the trailing null ``auth`` of an encoded envelope with an inline signature."""
        if not unsigned_value.endswith(b"\x00"):
            raise ValueError("envelope already carries auth")
        return unsigned_value[:-1] + b"\x02" + self._auth_encode(auth)

    def decode(self, value: bytes) -> Event:
        """Decode and hash one envelope; typed ``CodecError`` on anything malformed."""
        if len(value) < HEADER_SIZE or value[:2] != MAGIC:
            raise NotSingleObjectError("not Avro single-object encoding (missing C3 01 marker)")
        if value[2:10] != self.entry.fingerprint:
            raise UnknownSchemaError(f"not an envelope (schema fingerprint {value[2:10].hex()})")
        try:
            rec, end = self._decode(value, HEADER_SIZE)
        except (IndexError, ValueError, OverflowError, TypeError) as exc:
            raise MalformedDataError(f"undecodable envelope: {exc}") from None
        if end != len(value):
            raise MalformedDataError(f"{len(value) - end} trailing bytes after the envelope")
        auth = rec["auth"]
        native = speedups.native
        if auth is None:
            digest = native.sha256(value) if native is not None else hashlib.sha256(value).digest()
        else:
            tail = 1 + len(self._auth_encode(auth))
            digest = hashlib.sha256(value[:-tail] + b"\x00").digest()
        return Event(
            rec["event_id"], rec["event_type"], rec["payload_schema"], rec["producer"], rec["stream_id"],
            rec["lane"], rec["seq"], rec["prev_hash"], rec["timestamp_ms"], rec["subject"], rec["payload"],
            auth, digest, value,
        )

    def is_seal(self, value: bytes) -> bool:
        return value[:10] == self._seal_header

    def encode_seal(self, record: dict[str, Any]) -> bytes:
        return self._seal_header + self.seal_entry.encode_body(record)

    def decode_seal(self, value: bytes) -> dict[str, Any]:
        _, rec = self.store.decode(value, SEAL_SCHEMA)
        if not isinstance(rec, dict):
            raise MalformedDataError("seal is not a record")
        return rec

    def encode_statement(self, record: dict[str, Any]) -> bytes:
        return self.store.encode(SEAL_STATEMENT_SCHEMA, record)

    def decode_statement(self, value: bytes) -> dict[str, Any]:
        writer, rec = self.store.decode(value, SEAL_STATEMENT_SCHEMA)
        if writer.full_name != SEAL_STATEMENT_SCHEMA or not isinstance(rec, dict):
            raise MalformedDataError("seal statement has the wrong schema")
        return rec


def event_signing_message(event_hash: bytes) -> bytes:
    return EVENT_SIGNING_CONTEXT + event_hash


def seal_signing_message(statement: bytes) -> bytes:
    return SEAL_SIGNING_CONTEXT + statement


__all__ = [
    "ENVELOPE_SCHEMA",
    "IDENTITY_EVENT_TYPE",
    "ZERO_HASH",
    "CodecError",
    "EnvelopeCodec",
    "Event",
    "event_signing_message",
    "seal_signing_message",
]
