"""Identities: base58btc, did:key, hybrid signatures, private-key export."""

from __future__ import annotations

from functools import cache
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from swarmlog.streams.identity import (
    HYBRID_SIGNATURE_PREFIX,
    HybridSignature,
    Identity,
    InvalidDID,
    PublicIdentity,
    base58btc_decode,
    base58btc_encode,
    did_from_ed25519_public,
    ed25519_public_from_did,
)

SPEC_DID = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"


@cache
def alice() -> Identity:
    return Identity.generate("alice")


@cache
def bob() -> Identity:
    return Identity.generate("bob")


# -------------------------------------------------------------------------- base58btc


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (b"", ""),
        (b"\x00", "1"),
        (b"\x00\x00\x01", "112"),
        (b"hello world", "StV1DL6CwTryKyV"),
        (b"\xff", "5Q"),
    ],
)
def test_base58btc_known_vectors(raw: bytes, text: str) -> None:
    assert base58btc_encode(raw) == text
    assert base58btc_decode(text) == raw


@settings(max_examples=200)
@given(st.binary(max_size=80))
def test_base58btc_round_trip(data: bytes) -> None:
    assert base58btc_decode(base58btc_encode(data)) == data


@pytest.mark.parametrize("bad", ["0", "O", "I", "l", "abc+", "z z"])
def test_base58btc_rejects_characters_outside_the_alphabet(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid base58btc character"):
        base58btc_decode(bad)


# ---------------------------------------------------------------------------- did:key


def test_did_spec_example_round_trips() -> None:
    key = ed25519_public_from_did(SPEC_DID)
    assert len(key) == 32
    assert did_from_ed25519_public(key) == SPEC_DID
    Ed25519PublicKey.from_public_bytes(key)  # a valid curve point


def test_generated_did_format() -> None:
    ident = alice()
    assert ident.did.startswith("did:key:z6Mk")
    assert ed25519_public_from_did(ident.did) == ident.public.ed25519_public
    assert did_from_ed25519_public(ident.public.ed25519_public) == ident.did


@settings(max_examples=100)
@given(st.binary(min_size=32, max_size=32))
def test_did_round_trip_any_32_bytes(pk: bytes) -> None:
    did = did_from_ed25519_public(pk)
    assert did.startswith("did:key:z6Mk")
    assert ed25519_public_from_did(did) == pk


def _did_of(raw: bytes) -> str:
    return "did:key:z" + base58btc_encode(raw)


@pytest.mark.parametrize(
    ("did", "reason"),
    [
        ("did:web:example.com", "wrong prefix"),
        ("did:key:f" + "00" * 34, "wrong prefix"),  # multibase hex, not base58btc
        (SPEC_DID.replace("did:key:", "did:KEY:"), "wrong prefix"),
        ("", "wrong prefix"),
        ("did:key:z6Mk0OIl", "bad base58"),
        (SPEC_DID + "#" + SPEC_DID[8:], "bad base58"),
        (_did_of(b"\xec\x01" + bytes(32)), "wrong multicodec"),  # x25519-pub
        (_did_of(b"\xe7\x01" + bytes(33)), "wrong multicodec"),  # secp256k1-pub
        (_did_of(b""), "wrong multicodec"),
        (_did_of(b"\xed\x01" + bytes(31)), "wrong length"),
        (_did_of(b"\xed\x01" + bytes(33)), "wrong length"),
        ("did:key:z" + "2" * 500, "wrong length"),
    ],
)
def test_invalid_dids_say_why(did: str, reason: str) -> None:
    with pytest.raises(InvalidDID, match=reason):
        ed25519_public_from_did(did)


def test_invalid_did_is_a_value_error() -> None:
    assert issubclass(InvalidDID, ValueError)
    with pytest.raises(InvalidDID):
        ed25519_public_from_did(None)


@settings(max_examples=300)
@given(st.one_of(st.text(max_size=80), st.text(max_size=60).map(lambda s: "did:key:z" + s)))
def test_random_dids_raise_only_invalid_did(text: str) -> None:
    try:
        key = ed25519_public_from_did(text)
    except InvalidDID:
        return
    assert len(key) == 32


# ------------------------------------------------------------------ hybrid signatures


def test_hybrid_sign_verify() -> None:
    sig = alice().sign(b"hello")
    assert len(sig.ed25519) == 64 and len(sig.ml_dsa_65) == 3309
    assert alice().public.verify(b"hello", sig)
    assert not alice().public.verify(b"hellO", sig)


def test_each_half_tampered_fails() -> None:
    sig = alice().sign(b"hello")
    bad_ed = HybridSignature(bytes([sig.ed25519[0] ^ 1]) + sig.ed25519[1:], sig.ml_dsa_65)
    bad_ml = HybridSignature(sig.ed25519, sig.ml_dsa_65[:-1] + bytes([sig.ml_dsa_65[-1] ^ 1]))
    assert not alice().public.verify(b"hello", bad_ed)
    assert not alice().public.verify(b"hello", bad_ml)


def test_swapped_keys_and_spliced_halves_fail() -> None:
    a_sig, b_sig = alice().sign(b"m"), bob().sign(b"m")
    assert not bob().public.verify(b"m", a_sig)
    assert not alice().public.verify(b"m", b_sig)
    assert not alice().public.verify(b"m", HybridSignature(a_sig.ed25519, b_sig.ml_dsa_65))
    assert not alice().public.verify(b"m", HybridSignature(b_sig.ed25519, a_sig.ml_dsa_65))
    assert not alice().public.verify(b"m", HybridSignature(a_sig.ml_dsa_65, a_sig.ed25519))
    # Alice's Ed25519 key with Bob's ML-DSA key: both halves must match one identity.
    mixed = PublicIdentity(
        did=alice().did,
        ed25519_public=alice().public.ed25519_public,
        ml_dsa_65_public=bob().public.ml_dsa_65_public,
        x25519_public=alice().public.x25519_public,
        ml_kem_768_public=alice().public.ml_kem_768_public,
    )
    assert not mixed.verify(b"m", a_sig)


def test_hybrid_and_plain_ed25519_signatures_do_not_mix() -> None:
    plain = alice().sign_ed25519(b"m")
    assert alice().public.verify_ed25519(b"m", plain)
    hybrid = alice().sign(b"m")
    # The hybrid's Ed25519 half signs the prefixed message: not a plain signature over m.
    assert not alice().public.verify_ed25519(b"m", hybrid.ed25519)
    assert alice().public.verify_ed25519(HYBRID_SIGNATURE_PREFIX + b"m", hybrid.ed25519)
    assert not alice().public.verify(b"m", HybridSignature(plain, hybrid.ml_dsa_65))


@pytest.mark.parametrize(
    "sig",
    [
        None,
        "sig",
        {"ed25519": b"", "ml_dsa_65": b""},
        HybridSignature(b"", b""),
        HybridSignature(b"\x00" * 64, b"\x00" * 3309),
        HybridSignature("x" * 64, "y" * 3309),
        HybridSignature(None, None),
    ],
)
def test_verify_never_raises_on_garbage_signatures(sig: Any) -> None:
    assert alice().public.verify(b"m", sig) is False


def test_sign_rejects_non_bytes_messages() -> None:
    for message in (3, "text", None):
        with pytest.raises(TypeError):
            alice().sign(message)
        with pytest.raises(TypeError):
            alice().sign_ed25519(message)


def test_verify_never_raises_on_garbage_messages() -> None:
    sig = alice().sign(b"m")
    for message in (None, "m", 1, 0, object()):
        assert alice().public.verify(message, sig) is False


@settings(max_examples=40, deadline=None)
@given(
    ed=st.one_of(st.binary(max_size=80), st.binary(min_size=64, max_size=64)),
    ml=st.one_of(st.binary(max_size=80), st.binary(min_size=3309, max_size=3309)),
    message=st.binary(max_size=64),
)
def test_random_signatures_never_verify(ed: bytes, ml: bytes, message: bytes) -> None:
    assert alice().public.verify(message, HybridSignature(ed, ml)) is False


def test_signature_record_round_trip() -> None:
    sig = alice().sign(b"m")
    record = sig.to_record()
    assert set(record) == {"ed25519", "ml_dsa_65"}
    assert HybridSignature.from_record(record) == sig
    assert HybridSignature.from_record({"ed25519": bytearray(sig.ed25519), "ml_dsa_65": sig.ml_dsa_65}) == sig


@pytest.mark.parametrize(
    "record",
    [
        None,
        {},
        {"ed25519": b""},
        {"ed25519": b"", "ml_dsa_65": b"", "x": b""},
        {"ed25519": "a", "ml_dsa_65": b""},
    ],
)
def test_signature_record_rejects_malformed(record: Any) -> None:
    with pytest.raises(ValueError):
        HybridSignature.from_record(record)


# ----------------------------------------------------------------------- identities


def test_private_dict_round_trip() -> None:
    exported = alice().to_private_dict()
    again = Identity.from_private_dict(exported)
    assert again.public == alice().public
    assert again.did == alice().did and again.label == "alice"
    assert alice().public.verify(b"m", again.sign(b"m"))


def test_private_dict_with_foreign_did_is_rejected() -> None:
    exported = {**alice().to_private_dict(), "did": bob().did}
    with pytest.raises(ValueError, match="does not match"):
        Identity.from_private_dict(exported)


@pytest.mark.parametrize("field", ["ed25519", "x25519", "ml_dsa_65", "ml_kem_768"])
def test_private_dict_rejects_malformed_keys(field: str) -> None:
    exported = alice().to_private_dict()
    for bad in ("", "!!!", "AAAA", None):
        with pytest.raises(ValueError):
            Identity.from_private_dict({**exported, field: bad})


def test_repr_shows_no_key_material() -> None:
    text = repr(alice()) + repr(alice().public)
    assert alice().did in text
    for value in alice().to_private_dict().values():
        if isinstance(value, str) and len(value) > 20 and not value.startswith("did:"):
            assert value not in text


def test_public_identity_checks_did_against_ed25519_key() -> None:
    pub = alice().public
    with pytest.raises(ValueError, match="does not name"):
        PublicIdentity(
            bob().did, pub.ed25519_public, pub.ml_dsa_65_public, pub.x25519_public, pub.ml_kem_768_public
        )
    with pytest.raises(InvalidDID):
        PublicIdentity(
            "did:web:x", pub.ed25519_public, pub.ml_dsa_65_public, pub.x25519_public, pub.ml_kem_768_public
        )


def test_public_identity_from_untrusted_document_is_inert_not_fatal() -> None:
    """Verifiers build PublicIdentity from untrusted identity documents: wrong-length keys
    must not raise there, only make the identity useless."""
    pub = alice().public
    broken = PublicIdentity(pub.did, pub.ed25519_public, b"short", b"", b"x" * 10)
    assert not broken.well_formed
    assert not broken.verify(b"m", alice().sign(b"m"))
    assert pub.well_formed


def test_public_dict_round_trip() -> None:
    pub = alice().public
    assert PublicIdentity.from_dict(pub.to_dict()) == pub
    with pytest.raises(ValueError):
        PublicIdentity.from_dict({**pub.to_dict(), "ml_dsa_65": "AAAA"})
    fps = pub.fingerprints()
    assert set(fps) == {"ed25519", "ml_dsa_65", "x25519", "ml_kem_768"}
    assert all(fp.startswith("sha256:") for fp in fps.values())


def test_identities_are_independent() -> None:
    assert alice().did != bob().did
    assert alice().public.x25519_public != bob().public.x25519_public
    assert alice().public.ml_dsa_65_public != bob().public.ml_dsa_65_public
