"""Agent identities: did:key names, hybrid (Ed25519 + ML-DSA-65) signatures, private keys.

An agent is named by a ``did:key`` of its Ed25519 key (W3C did:key method, multicodec
``ed25519-pub`` = 0xed 0x01, multibase base58btc ``z``), so any party can check a classic
signature from the name alone. The post-quantum keys (ML-DSA-65 for signing, X25519 +
ML-KEM-768 for encryption) are bound to that DID by the signed identity document
(``trust.identity`` event), not by the DID string.

Hybrid signatures are an AND: :meth:`PublicIdentity.verify` accepts only when the Ed25519
*and* the ML-DSA-65 signature verify, so forging one needs both a classical and a
post-quantum break. Both halves sign the same message ``HYBRID_SIGNATURE_PREFIX ‖ message``
(like the IETF composite-signature drafts' M'): the prefix makes the Ed25519 half useless as
a plain Ed25519 signature (see :meth:`Identity.sign_ed25519`) over the same bytes, so a
hybrid signature cannot be stripped down to a classical one.

Signing is on the hot path (seals, inline-signed events), so key objects are built once per
:class:`Identity` and the Ed25519 verification key once per :class:`PublicIdentity`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from swarmlog.streams.pqc import (
    ML_DSA_65_PUBLIC_KEY_SIZE,
    ML_DSA_65_SEED_SIZE,
    ML_DSA_65_SIGNATURE_SIZE,
    ML_KEM_768_PUBLIC_KEY_SIZE,
    ML_KEM_768_SEED_SIZE,
    PQBackendImpl,
    get_backend,
)
from swarmlog.streams.settings import PQBackend

logger = logging.getLogger(__name__)

DID_KEY_PREFIX = "did:key:"
MULTIBASE_BASE58BTC = "z"
ED25519_MULTICODEC = b"\xed\x01"
ED25519_PUBLIC_KEY_SIZE = 32
ED25519_SIGNATURE_SIZE = 64
X25519_PUBLIC_KEY_SIZE = 32
# A did:key for Ed25519 is 56 characters; anything much longer is not one (and long
# base58 strings cost quadratic time to decode).
_MAX_DID_LENGTH = 128

HYBRID_SIGNATURE_PREFIX = b"swarmlog/hybrid-signature/v1\x00"
PRIVATE_DICT_VERSION = 1

_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58_ALPHABET)}


class InvalidDID(ValueError):
    """Not a did:key of an Ed25519 key; the message says which check failed."""


# ---------------------------------------------------------------------------- base58btc


def base58btc_encode(data: bytes) -> str:
    """Bitcoin-alphabet base58 (no checksum), as multibase ``z`` uses it.

    Leading zero bytes become leading ``1`` characters, so the encoding is lossless.
    """
    data = bytes(data)
    zeros = len(data) - len(data.lstrip(b"\x00"))
    number = int.from_bytes(data, "big")
    digits: list[str] = []
    while number:
        number, rem = divmod(number, 58)
        digits.append(_B58_ALPHABET[rem])
    return "1" * zeros + "".join(reversed(digits))


def base58btc_decode(text: str) -> bytes:
    """Inverse of :func:`base58btc_encode`; ValueError on a character outside the alphabet."""
    if not isinstance(text, str):
        raise ValueError(f"base58btc input must be str, not {type(text).__name__}")
    number = 0
    for pos, char in enumerate(text):
        try:
            number = number * 58 + _B58_INDEX[char]
        except KeyError:
            raise ValueError(f"invalid base58btc character {char!r} at position {pos}") from None
    zeros = len(text) - len(text.lstrip("1"))
    body = number.to_bytes((number.bit_length() + 7) // 8, "big") if number else b""
    return b"\x00" * zeros + body


# -------------------------------------------------------------------------------- did:key


def did_from_ed25519_public(pk: bytes) -> str:
    """``did:key:z`` + base58btc(0xed 0x01 ‖ pk); always starts with ``did:key:z6Mk``."""
    pk = bytes(pk)
    if len(pk) != ED25519_PUBLIC_KEY_SIZE:
        raise ValueError(f"an Ed25519 public key is {ED25519_PUBLIC_KEY_SIZE} bytes, got {len(pk)}")
    return DID_KEY_PREFIX + MULTIBASE_BASE58BTC + base58btc_encode(ED25519_MULTICODEC + pk)


def ed25519_public_from_did(did: str) -> bytes:
    """The 32-byte Ed25519 public key named by ``did``; :class:`InvalidDID` says why not."""
    if not isinstance(did, str):
        raise InvalidDID(f"a DID is a string, not {type(did).__name__}")
    if not did.startswith(DID_KEY_PREFIX + MULTIBASE_BASE58BTC):
        raise InvalidDID(f"wrong prefix: a did:key (base58btc) starts with 'did:key:z', got {did[:16]!r}")
    if len(did) > _MAX_DID_LENGTH:
        raise InvalidDID(f"wrong length: {len(did)} characters is too long for an Ed25519 did:key")
    try:
        raw = base58btc_decode(did[len(DID_KEY_PREFIX) + 1 :])
    except ValueError as exc:
        raise InvalidDID(f"bad base58: {exc}") from None
    if raw[:2] != ED25519_MULTICODEC:
        raise InvalidDID(f"wrong multicodec: expected ed25519-pub (0xed01), got 0x{raw[:2].hex()}")
    key = raw[2:]
    if len(key) != ED25519_PUBLIC_KEY_SIZE:
        raise InvalidDID(f"wrong length: an Ed25519 key is {ED25519_PUBLIC_KEY_SIZE} bytes, got {len(key)}")
    return key


def key_fingerprint(key: bytes) -> str:
    """Short, stable name for a public key: ``sha256:`` + first 16 bytes of SHA-256, hex."""
    return "sha256:" + hashlib.sha256(key).hexdigest()[:32]


def _hybrid_message(message: bytes) -> bytes:
    # memoryview, not bytes(): bytes(5) would quietly mean five zero bytes.
    return HYBRID_SIGNATURE_PREFIX + memoryview(message).tobytes()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: object, what: str, size: int) -> bytes:
    if not isinstance(value, str):
        raise ValueError(f"{what}: expected a base64 string")
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ValueError(f"{what}: not valid base64") from None
    if len(raw) != size:
        raise ValueError(f"{what}: expected {size} bytes, got {len(raw)}")
    return raw


# ------------------------------------------------------------------------------ signatures


@dataclass(frozen=True, slots=True)
class HybridSignature:
    """An Ed25519 and an ML-DSA-65 signature over the same (prefixed) message.

    Matches the ``swarmlog.core.HybridSignature`` Avro record.
    """

    ed25519: bytes
    ml_dsa_65: bytes

    def to_record(self) -> dict[str, bytes]:
        """The Avro record form: exactly the keys ``ed25519`` and ``ml_dsa_65``."""
        return {"ed25519": self.ed25519, "ml_dsa_65": self.ml_dsa_65}

    @classmethod
    def from_record(cls, d: Mapping[str, Any]) -> HybridSignature:
        """Parse the record form; ValueError if it is not a mapping of exactly those two
        byte fields (lengths are checked by verification, which just answers False)."""
        if not isinstance(d, Mapping):
            raise ValueError("a HybridSignature record must be a mapping")
        if set(d.keys()) != {"ed25519", "ml_dsa_65"}:
            raise ValueError(
                f"a HybridSignature record has keys ed25519, ml_dsa_65; got {sorted(map(str, d))}"
            )
        ed, ml = d["ed25519"], d["ml_dsa_65"]
        if not isinstance(ed, bytes | bytearray | memoryview) or not isinstance(
            ml, bytes | bytearray | memoryview
        ):
            raise ValueError("HybridSignature fields must be bytes")
        return cls(ed25519=bytes(ed), ml_dsa_65=bytes(ml))


# -------------------------------------------------------------------------------- identity


@dataclass(frozen=True, repr=False)
class PublicIdentity:
    """The public half of an identity: what others need to verify and encrypt.

    Construction insists that ``did`` names ``ed25519_public`` (a PublicIdentity never
    claims one name and checks with another key) and loads the Ed25519 key object once.
    The other keys are *not* rejected for a wrong length, because verifiers build
    PublicIdentity objects straight from untrusted identity documents and must not crash
    on them: such an identity is simply not :attr:`well_formed`, every :meth:`verify`
    returns False and encrypting to it raises.
    """

    did: str
    ed25519_public: bytes
    ml_dsa_65_public: bytes
    x25519_public: bytes
    ml_kem_768_public: bytes
    label: str = ""
    _ed25519_key: Ed25519PublicKey = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        for name in ("ed25519_public", "ml_dsa_65_public", "x25519_public", "ml_kem_768_public"):
            value = getattr(self, name)
            if not isinstance(value, bytes):
                if not isinstance(value, bytearray | memoryview):
                    raise TypeError(f"{name} must be bytes, not {type(value).__name__}")
                object.__setattr__(self, name, bytes(value))
        if not isinstance(self.label, str):
            raise TypeError("label must be a string")
        if ed25519_public_from_did(self.did) != self.ed25519_public:
            raise ValueError(f"{self.did} does not name the given ed25519_public key")
        object.__setattr__(self, "_ed25519_key", Ed25519PublicKey.from_public_bytes(self.ed25519_public))

    @property
    def well_formed(self) -> bool:
        """All keys have their algorithm's size (ML-DSA-65 1,952, X25519 32, ML-KEM-768 1,184)."""
        return (
            len(self.ml_dsa_65_public) == ML_DSA_65_PUBLIC_KEY_SIZE
            and len(self.x25519_public) == X25519_PUBLIC_KEY_SIZE
            and len(self.ml_kem_768_public) == ML_KEM_768_PUBLIC_KEY_SIZE
        )

    def __repr__(self) -> str:  # the keys are kilobytes; name the identity instead
        return f"PublicIdentity(did={self.did!r}, label={self.label!r})"

    def verify(self, message: bytes, sig: HybridSignature) -> bool:
        """True only if both the Ed25519 and the ML-DSA-65 signature verify.

        Never raises: garbage (wrong types, wrong lengths, random bytes) is simply False.
        Ed25519 is checked first because it is cheaper and rejects most forgeries.
        """
        try:
            if not isinstance(sig, HybridSignature):
                return False
            ed, ml = sig.ed25519, sig.ml_dsa_65
            if not isinstance(ed, bytes) or not isinstance(ml, bytes):
                return False
            if len(ed) != ED25519_SIGNATURE_SIZE or len(ml) != ML_DSA_65_SIGNATURE_SIZE:
                return False
            signed = _hybrid_message(message)
            self._ed25519_key.verify(ed, signed)
            return get_backend().ml_dsa_65_verify(self.ml_dsa_65_public, signed, ml)
        except (InvalidSignature, TypeError, ValueError):
            return False
        except Exception:  # never raise from verify, but leave a trace of the surprise
            logger.warning("unexpected error while verifying a hybrid signature", exc_info=True)
            return False

    def verify_ed25519(self, message: bytes, signature: bytes) -> bool:
        """Check a plain Ed25519 signature from :meth:`Identity.sign_ed25519`; never raises."""
        try:
            self._ed25519_key.verify(signature, message)
        except Exception:
            return False
        return True

    def fingerprints(self) -> dict[str, str]:
        """:func:`key_fingerprint` of each public key, for display and comparison."""
        return {
            "ed25519": key_fingerprint(self.ed25519_public),
            "ml_dsa_65": key_fingerprint(self.ml_dsa_65_public),
            "x25519": key_fingerprint(self.x25519_public),
            "ml_kem_768": key_fingerprint(self.ml_kem_768_public),
        }

    def to_dict(self) -> dict[str, str]:
        """JSON-friendly form (keys base64), as the keystore stores it in clear."""
        return {
            "did": self.did,
            "label": self.label,
            "ed25519": _b64(self.ed25519_public),
            "ml_dsa_65": _b64(self.ml_dsa_65_public),
            "x25519": _b64(self.x25519_public),
            "ml_kem_768": _b64(self.ml_kem_768_public),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PublicIdentity:
        """Inverse of :meth:`to_dict`; ValueError (or InvalidDID) for anything malformed."""
        if not isinstance(d, Mapping):
            raise ValueError("public identity must be a mapping")
        did, label = d.get("did"), d.get("label", "")
        if not isinstance(did, str) or not isinstance(label, str):
            raise ValueError("public identity: did and label must be strings")
        return cls(
            did=did,
            ed25519_public=_unb64(d.get("ed25519"), "ed25519", ED25519_PUBLIC_KEY_SIZE),
            ml_dsa_65_public=_unb64(d.get("ml_dsa_65"), "ml_dsa_65", ML_DSA_65_PUBLIC_KEY_SIZE),
            x25519_public=_unb64(d.get("x25519"), "x25519", X25519_PUBLIC_KEY_SIZE),
            ml_kem_768_public=_unb64(d.get("ml_kem_768"), "ml_kem_768", ML_KEM_768_PUBLIC_KEY_SIZE),
            label=label,
        )


class Identity:
    """A local identity with its private keys: signs, and decrypts what was sent to it.

    Private key formats (see :mod:`swarmlog.streams.pqc`): Ed25519 and X25519 as their
    32-byte raw private keys, ML-DSA-65 as its 32-byte seed ξ, ML-KEM-768 as its 64-byte
    seed d‖z. The four keys are independent (the X25519 key is not derived from the
    Ed25519 one), so compromise of one algorithm's key says nothing about another's.
    """

    __slots__ = ("_backend", "_ed25519", "_ml_dsa_65", "_ml_kem_768", "_public", "_x25519")

    def __init__(
        self,
        *,
        ed25519_private: bytes,
        x25519_private: bytes,
        ml_dsa_65_private: bytes,
        ml_kem_768_private: bytes,
        label: str = "",
        backend: PQBackendImpl | PQBackend | str | None = None,
    ) -> None:
        if len(ml_dsa_65_private) != ML_DSA_65_SEED_SIZE:
            raise ValueError(f"ML-DSA-65 private seed must be {ML_DSA_65_SEED_SIZE} bytes")
        if len(ml_kem_768_private) != ML_KEM_768_SEED_SIZE:
            raise ValueError(f"ML-KEM-768 private seed must be {ML_KEM_768_SEED_SIZE} bytes")
        self._backend = get_backend(backend)
        self._ed25519 = Ed25519PrivateKey.from_private_bytes(bytes(ed25519_private))
        self._x25519 = X25519PrivateKey.from_private_bytes(bytes(x25519_private))
        self._ml_dsa_65 = bytes(ml_dsa_65_private)
        self._ml_kem_768 = bytes(ml_kem_768_private)
        ed_pub = self._ed25519.public_key().public_bytes_raw()
        self._public = PublicIdentity(
            did=did_from_ed25519_public(ed_pub),
            ed25519_public=ed_pub,
            ml_dsa_65_public=self._backend.ml_dsa_65_public_from_private(self._ml_dsa_65),
            x25519_public=self._x25519.public_key().public_bytes_raw(),
            ml_kem_768_public=self._backend.ml_kem_768_public_from_private(self._ml_kem_768),
            label=label,
        )

    @classmethod
    def generate(cls, label: str = "", backend: PQBackendImpl | PQBackend | str | None = None) -> Identity:
        """A brand-new identity with fresh random keys."""
        pq = get_backend(backend)
        ml_dsa_private, _ = pq.ml_dsa_65_generate()
        ml_kem_private, _ = pq.ml_kem_768_generate()
        return cls(
            ed25519_private=Ed25519PrivateKey.generate().private_bytes_raw(),
            x25519_private=X25519PrivateKey.generate().private_bytes_raw(),
            ml_dsa_65_private=ml_dsa_private,
            ml_kem_768_private=ml_kem_private,
            label=label,
            backend=pq,
        )

    @property
    def did(self) -> str:
        return self._public.did

    @property
    def label(self) -> str:
        return self._public.label

    @property
    def public(self) -> PublicIdentity:
        return self._public

    @property
    def backend(self) -> PQBackendImpl:
        return self._backend

    def __repr__(self) -> str:  # never show key material
        return f"Identity(did={self.did!r}, label={self.label!r})"

    def sign(self, message: bytes) -> HybridSignature:
        """Hybrid signature (see the module docstring for the signed bytes)."""
        signed = _hybrid_message(message)
        return HybridSignature(
            ed25519=self._ed25519.sign(signed),
            ml_dsa_65=self._backend.ml_dsa_65_sign(self._ml_dsa_65, signed),
        )

    def sign_ed25519(self, message: bytes) -> bytes:
        """A plain Ed25519 signature over ``message`` (no prefix): for classical-only uses
        where the did:key alone must suffice. It is never a valid hybrid half."""
        return self._ed25519.sign(memoryview(message).tobytes())

    # Low-level KEM operations for swarmlog.streams.encryption (the private keys stay here).
    def x25519_exchange(self, peer_public: bytes) -> bytes:
        """X25519 shared secret with ``peer_public``; ValueError for a low-order point."""
        return self._x25519.exchange(X25519PublicKey.from_public_bytes(bytes(peer_public)))

    def ml_kem_768_decapsulate(self, ciphertext: bytes) -> bytes:
        """ML-KEM-768 decapsulation with this identity's key; ValueError for a bad length."""
        return self._backend.ml_kem_768_decapsulate(self._ml_kem_768, ciphertext)

    def decrypt(self, blob: bytes, aad: bytes = b"") -> bytes:
        """Open a payload made by :func:`swarmlog.streams.encryption.encrypt_for`."""
        from swarmlog.streams.encryption import decrypt

        return decrypt(self, blob, aad)

    def to_private_dict(self) -> dict[str, Any]:
        """All private material, JSON-friendly (base64), for the keystore. Handle with care:
        the keystore encrypts it when a passphrase is set."""
        return {
            "version": PRIVATE_DICT_VERSION,
            "did": self.did,
            "label": self.label,
            "ed25519": _b64(self._ed25519.private_bytes_raw()),
            "x25519": _b64(self._x25519.private_bytes_raw()),
            "ml_dsa_65": _b64(self._ml_dsa_65),
            "ml_kem_768": _b64(self._ml_kem_768),
        }

    @classmethod
    def from_private_dict(
        cls, d: Mapping[str, Any], backend: PQBackendImpl | PQBackend | str | None = None
    ) -> Identity:
        """Inverse of :meth:`to_private_dict`. ValueError if malformed, or if the ``did``
        it records is not the DID of its Ed25519 key (corrupted or spliced material)."""
        if not isinstance(d, Mapping):
            raise ValueError("private identity must be a mapping")
        if d.get("version") != PRIVATE_DICT_VERSION:
            raise ValueError(f"unsupported private identity version {d.get('version')!r}")
        label = d.get("label", "")
        if not isinstance(label, str):
            raise ValueError("label must be a string")
        identity = cls(
            ed25519_private=_unb64(d.get("ed25519"), "ed25519", 32),
            x25519_private=_unb64(d.get("x25519"), "x25519", 32),
            ml_dsa_65_private=_unb64(d.get("ml_dsa_65"), "ml_dsa_65", ML_DSA_65_SEED_SIZE),
            ml_kem_768_private=_unb64(d.get("ml_kem_768"), "ml_kem_768", ML_KEM_768_SEED_SIZE),
            label=label,
            backend=backend,
        )
        if "did" in d and d["did"] != identity.did:
            raise ValueError("private identity: recorded did does not match its Ed25519 key")
        return identity


__all__ = [
    "DID_KEY_PREFIX",
    "HYBRID_SIGNATURE_PREFIX",
    "HybridSignature",
    "Identity",
    "InvalidDID",
    "PublicIdentity",
    "base58btc_decode",
    "base58btc_encode",
    "did_from_ed25519_public",
    "ed25519_public_from_did",
    "key_fingerprint",
]
