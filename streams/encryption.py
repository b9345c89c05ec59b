"""Payload encryption to one identity: hybrid KEM (X25519 + ML-KEM-768) and AES-256-GCM.

Why hybrid: ML-KEM-768 protects against a future quantum adversary recording traffic
today; X25519 protects if ML-KEM turns out to be weaker than believed. The AES key is
derived from *both* shared secrets, so an attacker must break both KEMs (the X-Wing /
hybrid-TLS construction). The key derivation also hashes a transcript of everything that
identifies the exchange — the header, the ephemeral X25519 key, the ML-KEM ciphertext
and the recipient's DID and public keys — so a ciphertext cannot be re-targeted,
re-headed or have one KEM's part swapped for another's without decryption failing.

Wire format, version 1 (all integers big-endian)::

    magic    4  b"SWLE"  (swarmlog encrypted)
    version  1  0x01
    suite    1  0x01 = X25519 + ML-KEM-768, HKDF-SHA256, AES-256-GCM
    len_eph  2  length of the ephemeral X25519 public key (32)
    len_kem  2  length of the ML-KEM-768 ciphertext (1088)
    len_iv   1  length of the GCM nonce (12)
    eph      len_eph
    kem_ct   len_kem
    nonce    len_iv
    sealed   rest: AES-256-GCM ciphertext ‖ 16-byte tag

    ikm  = ss_mlkem ‖ ss_x25519
    info = SHA-256(LABEL ‖ header ‖ eph ‖ kem_ct ‖ recipient DID ‖ pk_x25519 ‖ pk_mlkem)
    key  = HKDF-SHA256(ikm, salt=LABEL, info, 32)
    AAD  = header ‖ eph ‖ kem_ct ‖ nonce ‖ caller's aad

The lengths make the format self-describing; version 1 accepts only the values above.
The key is fresh for every message, so the random 96-bit nonce never repeats under a key.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from swarmlog.streams.identity import Identity, PublicIdentity
from swarmlog.streams.pqc import ML_KEM_768_CIPHERTEXT_SIZE, get_backend

logger = logging.getLogger(__name__)

MAGIC = b"SWLE"
VERSION = 1
SUITE_X25519_MLKEM768_AES256GCM = 1
LABEL = b"swarmlog/hybrid-kem/x25519-mlkem768-aes256gcm/v1"

X25519_PUBLIC_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
_HEADER = struct.Struct(">4sBBHHB")
HEADER_SIZE = _HEADER.size  # 11
OVERHEAD = HEADER_SIZE + X25519_PUBLIC_SIZE + ML_KEM_768_CIPHERTEXT_SIZE + NONCE_SIZE + TAG_SIZE


class EncryptionError(ValueError):
    """The payload could not be encrypted (e.g. the recipient's X25519 key is invalid)."""


class DecryptionError(ValueError):
    """The blob does not open: tampered, truncated, wrong recipient, wrong aad, or not ours.

    The message names the failing check; for the cryptographic failure it deliberately
    cannot say which of those it was.
    """


def _header() -> bytes:
    return _HEADER.pack(
        MAGIC,
        VERSION,
        SUITE_X25519_MLKEM768_AES256GCM,
        X25519_PUBLIC_SIZE,
        ML_KEM_768_CIPHERTEXT_SIZE,
        NONCE_SIZE,
    )


def _derive_key(
    header: bytes, eph: bytes, kem_ct: bytes, recipient: PublicIdentity, ss_kem: bytes, ss_x: bytes
) -> bytes:
    transcript = hashlib.sha256()
    for part in (
        LABEL,
        header,
        eph,
        kem_ct,
        recipient.did.encode("utf-8"),
        recipient.x25519_public,
        recipient.ml_kem_768_public,
    ):
        transcript.update(part)
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=LABEL, info=transcript.digest()).derive(
        ss_kem + ss_x
    )


def encrypt_for(recipient: PublicIdentity, plaintext: bytes, aad: bytes = b"") -> bytes:
    """Encrypt ``plaintext`` so that only ``recipient``'s private keys open it.

    ``aad`` is authenticated, not encrypted, and must be given again to decrypt (bind the
    ciphertext to its context, e.g. the event id, so it cannot be moved elsewhere).
    """
    if not isinstance(recipient, PublicIdentity):
        raise TypeError("recipient must be a PublicIdentity")
    if not recipient.well_formed:
        raise EncryptionError(f"recipient {recipient.did} has malformed public keys")
    # memoryview, not bytes(): bytes(5) would quietly mean five zero bytes.
    plaintext, aad = memoryview(plaintext).tobytes(), memoryview(aad).tobytes()
    header = _header()
    eph_private = X25519PrivateKey.generate()
    eph = eph_private.public_key().public_bytes_raw()
    try:
        ss_x = eph_private.exchange(X25519PublicKey.from_public_bytes(recipient.x25519_public))
    except ValueError as exc:  # all-zero shared secret: a low-order recipient key
        raise EncryptionError(f"recipient {recipient.did} has an invalid X25519 key: {exc}") from exc
    try:
        kem_ct, ss_kem = get_backend().ml_kem_768_encapsulate(recipient.ml_kem_768_public)
    except ValueError as exc:
        raise EncryptionError(f"recipient {recipient.did} has an invalid ML-KEM-768 key: {exc}") from exc
    key = _derive_key(header, eph, kem_ct, recipient, ss_kem, ss_x)
    nonce = os.urandom(NONCE_SIZE)
    prefix = header + eph + kem_ct + nonce
    return prefix + AESGCM(key).encrypt(nonce, plaintext, prefix + aad)


def decrypt(identity: Identity, blob: bytes, aad: bytes = b"") -> bytes:
    """Open a blob from :func:`encrypt_for`; :class:`DecryptionError` for any failure."""
    if not isinstance(blob, bytes | bytearray | memoryview):
        raise DecryptionError(f"ciphertext must be bytes, not {type(blob).__name__}")
    if not isinstance(aad, bytes | bytearray | memoryview):
        raise DecryptionError(f"aad must be bytes, not {type(aad).__name__}")
    blob = bytes(blob)
    if len(blob) < HEADER_SIZE:
        raise DecryptionError("truncated: shorter than the header")
    magic, version, suite, len_eph, len_kem, len_iv = _HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise DecryptionError("not a swarmlog encrypted payload (bad magic)")
    if version != VERSION:
        raise DecryptionError(f"unsupported format version {version}")
    if suite != SUITE_X25519_MLKEM768_AES256GCM:
        raise DecryptionError(f"unsupported cipher suite {suite}")
    if (len_eph, len_kem, len_iv) != (X25519_PUBLIC_SIZE, ML_KEM_768_CIPHERTEXT_SIZE, NONCE_SIZE):
        raise DecryptionError(f"field lengths {(len_eph, len_kem, len_iv)} do not match suite {suite}")
    if len(blob) < OVERHEAD:
        raise DecryptionError(f"truncated: {len(blob)} bytes, at least {OVERHEAD} expected")
    header = blob[:HEADER_SIZE]
    pos = HEADER_SIZE
    eph = blob[pos : pos + len_eph]
    pos += len_eph
    kem_ct = blob[pos : pos + len_kem]
    pos += len_kem
    nonce = blob[pos : pos + len_iv]
    pos += len_iv
    prefix, sealed = blob[:pos], blob[pos:]
    try:
        ss_x = identity.x25519_exchange(eph)
        ss_kem = identity.ml_kem_768_decapsulate(kem_ct)
    except (ValueError, RuntimeError):  # RuntimeError: a liboqs-python failure report
        raise DecryptionError("key agreement failed (invalid ephemeral key or KEM ciphertext)") from None
    key = _derive_key(header, eph, kem_ct, identity.public, ss_kem, ss_x)
    try:
        return AESGCM(key).decrypt(nonce, sealed, prefix + bytes(aad))
    except InvalidTag:
        raise DecryptionError(
            "authentication failed: wrong recipient, wrong aad, or tampered ciphertext"
        ) from None


__all__ = [
    "MAGIC",
    "OVERHEAD",
    "VERSION",
    "DecryptionError",
    "EncryptionError",
    "decrypt",
    "encrypt_for",
]
