"""Hybrid (X25519 + ML-KEM-768) payload encryption: round trip, tampering, wrong recipient."""

from __future__ import annotations

import struct
from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarmlog.streams.encryption import (
    HEADER_SIZE,
    MAGIC,
    OVERHEAD,
    DecryptionError,
    EncryptionError,
    decrypt,
    encrypt_for,
)
from swarmlog.streams.identity import Identity, PublicIdentity

EPH = HEADER_SIZE
KEM = EPH + 32
NONCE = KEM + 1088
BODY = NONCE + 12


@cache
def alice() -> Identity:
    return Identity.generate("alice")


@cache
def bob() -> Identity:
    return Identity.generate("bob")


@cache
def sample() -> bytes:
    return encrypt_for(alice().public, b"attack at dawn", aad=b"event-1")


@pytest.mark.parametrize("plaintext", [b"", b"x", b"hello" * 1000])
def test_round_trip(plaintext: bytes) -> None:
    blob = encrypt_for(alice().public, plaintext, aad=b"ctx")
    assert len(blob) == OVERHEAD + len(plaintext)
    assert blob.startswith(MAGIC + b"\x01")
    assert decrypt(alice(), blob, aad=b"ctx") == plaintext
    assert alice().decrypt(blob, b"ctx") == plaintext


def test_encryption_is_randomised() -> None:
    a = encrypt_for(alice().public, b"same")
    b = encrypt_for(alice().public, b"same")
    assert a != b
    assert a[EPH:KEM] != b[EPH:KEM] and a[KEM:NONCE] != b[KEM:NONCE]


def test_wrong_recipient() -> None:
    with pytest.raises(DecryptionError, match="authentication failed"):
        decrypt(bob(), sample(), aad=b"event-1")


@pytest.mark.parametrize("aad", [b"", b"event-2", b"event-1\x00"])
def test_wrong_aad(aad: bytes) -> None:
    with pytest.raises(DecryptionError):
        decrypt(alice(), sample(), aad=aad)


# Every header byte, and the first, a middle and the last byte of every other field.
_POSITIONS = sorted(
    set(range(HEADER_SIZE))
    | {EPH, EPH + 16, KEM - 1, KEM, KEM + 500, NONCE - 1, NONCE, NONCE + 6, BODY - 1, BODY, BODY + 5}
    | {-16, -8, -1}  # the GCM tag
)


@pytest.mark.parametrize("position", _POSITIONS)
def test_tampering_any_field_is_detected(position: int) -> None:
    blob = bytearray(sample())
    blob[position] ^= 0x01
    with pytest.raises(DecryptionError):
        decrypt(alice(), bytes(blob), aad=b"event-1")


def test_truncation_and_extension_are_detected() -> None:
    blob = sample()
    for length in (0, 1, 4, HEADER_SIZE - 1, HEADER_SIZE, KEM, NONCE, BODY, len(blob) - 16, len(blob) - 1):
        with pytest.raises(DecryptionError):
            decrypt(alice(), blob[:length], aad=b"event-1")
    with pytest.raises(DecryptionError):
        decrypt(alice(), blob + b"\x00", aad=b"event-1")


def test_header_errors_are_specific() -> None:
    blob = sample()
    with pytest.raises(DecryptionError, match="bad magic"):
        decrypt(alice(), b"XXXX" + blob[4:])
    with pytest.raises(DecryptionError, match="unsupported format version"):
        decrypt(alice(), blob[:4] + b"\x02" + blob[5:])
    with pytest.raises(DecryptionError, match="unsupported cipher suite"):
        decrypt(alice(), blob[:5] + b"\x09" + blob[6:])
    relength = blob[:6] + struct.pack(">H", 31) + blob[8:]
    with pytest.raises(DecryptionError, match="field lengths"):
        decrypt(alice(), relength)


def test_kem_parts_cannot_be_spliced_between_messages() -> None:
    one = encrypt_for(alice().public, b"one")
    two = encrypt_for(alice().public, b"two")
    for start, end in ((EPH, KEM), (KEM, NONCE)):
        spliced = one[:start] + two[start:end] + one[end:]
        with pytest.raises(DecryptionError):
            decrypt(alice(), spliced)


def test_non_bytes_input_is_a_decryption_error() -> None:
    with pytest.raises(DecryptionError):
        decrypt(alice(), "text")
    with pytest.raises(DecryptionError):
        decrypt(alice(), sample(), aad="text")


def test_encrypt_rejects_non_bytes() -> None:
    for bad in (5, "text", None):
        with pytest.raises(TypeError):
            encrypt_for(alice().public, bad)
        with pytest.raises(TypeError):
            encrypt_for(alice().public, b"x", aad=bad)


def test_decryption_error_is_a_value_error() -> None:
    assert issubclass(DecryptionError, ValueError)


def test_low_order_or_malformed_recipient_keys_are_refused() -> None:
    pub = alice().public
    zero_point = PublicIdentity(
        pub.did, pub.ed25519_public, pub.ml_dsa_65_public, bytes(32), pub.ml_kem_768_public
    )
    with pytest.raises(EncryptionError, match="X25519"):
        encrypt_for(zero_point, b"x")
    short_kem = PublicIdentity(
        pub.did, pub.ed25519_public, pub.ml_dsa_65_public, pub.x25519_public, b"k" * 10
    )
    with pytest.raises(EncryptionError, match="malformed"):
        encrypt_for(short_kem, b"x")


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=1400))
def test_random_blobs_raise_only_decryption_error(blob: bytes) -> None:
    with pytest.raises(DecryptionError):
        decrypt(alice(), blob)


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=OVERHEAD - HEADER_SIZE, max_size=OVERHEAD + 64))
def test_random_bodies_behind_a_valid_header_raise_only_decryption_error(body: bytes) -> None:
    with pytest.raises(DecryptionError):
        decrypt(alice(), sample()[:HEADER_SIZE] + body)
