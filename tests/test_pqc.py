"""Post-quantum backends: byte formats, malformed input, selection, caching, liboqs glue.

The real liboqs cross-check needs the liboqs C library and is skipped without it. The
liboqs *glue* (seed injection through a custom OQS_randombytes, consistency checks, key
object caching) is still exercised here against a stand-in ``oqs`` module built on
``cryptography``, so the code path is not entirely untested on machines without liboqs.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import sys
import threading
import types
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import mldsa, mlkem
from hypothesis import given, settings
from hypothesis import strategies as st

from swarmlog.streams import pqc
from swarmlog.streams.pqc import (
    LIBOQS_UNAVAILABLE_REASON,
    ML_DSA_65_PUBLIC_KEY_SIZE,
    ML_DSA_65_SIGNATURE_SIZE,
    ML_KEM_768_CIPHERTEXT_SIZE,
    ML_KEM_768_PUBLIC_KEY_SIZE,
    BackendError,
    BackendUnavailable,
    CryptographyBackend,
    LiboqsBackend,
    PQBackendImpl,
    get_backend,
    liboqs_available,
)
from swarmlog.streams.settings import get_settings

requires_liboqs = pytest.mark.skipif(not liboqs_available(), reason=LIBOQS_UNAVAILABLE_REASON)
CRYPTO = get_backend("cryptography")
DSA_SEED, DSA_PUB = CRYPTO.ml_dsa_65_generate()
KEM_SEED, KEM_PUB = CRYPTO.ml_kem_768_generate()


@pytest.fixture
def clean_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    get_settings.cache_clear()
    yield monkeypatch
    monkeypatch.undo()
    get_settings.cache_clear()


# ------------------------------------------------------------------------- formats


def test_ml_dsa_private_key_is_the_fips204_seed() -> None:
    assert len(DSA_SEED) == 32 and len(DSA_PUB) == ML_DSA_65_PUBLIC_KEY_SIZE
    # FIPS 204 KeyGen_internal: rho = first 32 bytes of SHAKE256(xi || k || l), and pk = rho || t1.
    assert DSA_PUB[:32] == hashlib.shake_256(DSA_SEED + bytes((6, 5))).digest(128)[:32]
    assert CRYPTO.ml_dsa_65_public_from_private(DSA_SEED) == DSA_PUB


def test_ml_kem_private_key_is_the_fips203_seed() -> None:
    assert len(KEM_SEED) == 64 and len(KEM_PUB) == ML_KEM_768_PUBLIC_KEY_SIZE
    # FIPS 203 K-PKE.KeyGen: (rho, sigma) = SHA3-512(d || k); ek ends with rho.
    assert KEM_PUB[-32:] == hashlib.sha3_512(KEM_SEED[:32] + b"\x03").digest()[:32]
    assert CRYPTO.ml_kem_768_public_from_private(KEM_SEED) == KEM_PUB


def test_sign_verify_round_trip() -> None:
    sig = CRYPTO.ml_dsa_65_sign(DSA_SEED, b"msg")
    assert len(sig) == ML_DSA_65_SIGNATURE_SIZE
    assert CRYPTO.ml_dsa_65_verify(DSA_PUB, b"msg", sig)
    assert not CRYPTO.ml_dsa_65_verify(DSA_PUB, b"msh", sig)
    _other_seed, other_pub = CRYPTO.ml_dsa_65_generate()
    assert not CRYPTO.ml_dsa_65_verify(other_pub, b"msg", sig)


@pytest.mark.parametrize(
    ("public", "message", "signature"),
    [
        (b"", b"m", b""),
        (b"\x00" * ML_DSA_65_PUBLIC_KEY_SIZE, b"m", b"\x00" * ML_DSA_65_SIGNATURE_SIZE),
        (DSA_PUB[:-1], b"m", b"\x00" * ML_DSA_65_SIGNATURE_SIZE),
        (DSA_PUB, b"m", b"\x00" * (ML_DSA_65_SIGNATURE_SIZE + 1)),
        (None, b"m", b"x"),
        (DSA_PUB, "text, not bytes", b"\x00" * ML_DSA_65_SIGNATURE_SIZE),
        (DSA_PUB, b"m", None),
        ("not bytes", b"m", b"x"),
    ],
)
def test_verify_is_false_for_malformed_input(public: Any, message: Any, signature: Any) -> None:
    assert CRYPTO.ml_dsa_65_verify(public, message, signature) is False


@settings(max_examples=40, deadline=None)
@given(
    public=st.one_of(st.binary(max_size=64), st.binary(min_size=1952, max_size=1952)),
    signature=st.one_of(st.binary(max_size=64), st.binary(min_size=3309, max_size=3309)),
    message=st.binary(max_size=64),
)
def test_verify_never_raises_on_random_bytes(public: bytes, signature: bytes, message: bytes) -> None:
    assert CRYPTO.ml_dsa_65_verify(public, message, signature) is False
    assert CRYPTO.ml_dsa_65_verify(DSA_PUB, message, signature) is False


def test_kem_round_trip_and_implicit_rejection() -> None:
    ct, ss = CRYPTO.ml_kem_768_encapsulate(KEM_PUB)
    assert len(ct) == ML_KEM_768_CIPHERTEXT_SIZE and len(ss) == 32
    assert CRYPTO.ml_kem_768_decapsulate(KEM_SEED, ct) == ss
    tampered = bytes([ct[0] ^ 1]) + ct[1:]
    assert CRYPTO.ml_kem_768_decapsulate(KEM_SEED, tampered) != ss  # FIPS 203 implicit rejection


@pytest.mark.parametrize("bad", [b"", b"\x00" * (ML_KEM_768_CIPHERTEXT_SIZE - 1), b"\x00" * 2000])
def test_decapsulate_rejects_wrong_length(bad: bytes) -> None:
    with pytest.raises(ValueError):
        CRYPTO.ml_kem_768_decapsulate(KEM_SEED, bad)


@pytest.mark.parametrize("bad", [b"", b"\x00" * 31, b"\x00" * 33])
def test_bad_private_seed_raises_value_error(bad: bytes) -> None:
    with pytest.raises(ValueError):
        CRYPTO.ml_dsa_65_sign(bad, b"m")
    with pytest.raises(ValueError):
        CRYPTO.ml_kem_768_public_from_private(bad)


def test_encapsulate_rejects_bad_public_key() -> None:
    with pytest.raises(ValueError):
        CRYPTO.ml_kem_768_encapsulate(KEM_PUB[:-1])


def test_loaded_public_keys_are_cached() -> None:
    backend = CryptographyBackend()
    seed, pub = backend.ml_dsa_65_generate()
    sig = backend.ml_dsa_65_sign(seed, b"m")
    for _ in range(5):
        assert backend.ml_dsa_65_verify(pub, b"m", sig)
    info = backend._dsa_public.cache_info()
    assert info.misses == 1 and info.hits == 4


# ------------------------------------------------------------------------- selection


def test_backend_instances_are_cached() -> None:
    assert get_backend("cryptography") is get_backend("cryptography")
    assert get_backend(CRYPTO) is CRYPTO
    assert isinstance(CRYPTO, PQBackendImpl)


def test_unknown_backend_name() -> None:
    with pytest.raises(ValueError, match="unknown post-quantum backend"):
        get_backend("rot13")


def test_settings_choose_the_backend(clean_settings: pytest.MonkeyPatch) -> None:
    clean_settings.setenv("SWARMLOG_PQ_BACKEND", "cryptography")
    get_settings.cache_clear()
    assert get_backend().name == "cryptography"


@pytest.mark.skipif(liboqs_available(), reason="liboqs is installed here")
def test_auto_falls_back_to_cryptography_without_importing_oqs(clean_settings: pytest.MonkeyPatch) -> None:
    clean_settings.setenv("SWARMLOG_PQ_BACKEND", "auto")
    get_settings.cache_clear()
    assert get_backend().name == "cryptography"
    assert not liboqs_available()
    assert "oqs" not in sys.modules  # importing it would start a 5 s countdown and a git clone


@pytest.mark.skipif(liboqs_available(), reason="liboqs is installed here")
def test_explicit_liboqs_without_the_library_is_a_clear_error() -> None:
    with pytest.raises(BackendUnavailable, match="liboqs C library not installed"):
        get_backend("liboqs")
    assert "oqs" not in sys.modules


# ------------------------------------------------------------- real liboqs cross-check


@requires_liboqs
def test_liboqs_and_cryptography_interoperate() -> None:
    _cross_check(get_backend("liboqs"), get_backend("cryptography"))


def _cross_check(a: PQBackendImpl, b: PQBackendImpl) -> None:
    for one, two in ((a, b), (b, a)):
        seed, pub = one.ml_dsa_65_generate()
        assert two.ml_dsa_65_public_from_private(seed) == pub  # same seed format
        sig = one.ml_dsa_65_sign(seed, b"cross")
        assert two.ml_dsa_65_verify(pub, b"cross", sig)
        assert not two.ml_dsa_65_verify(pub, b"crosS", sig)
        sig2 = two.ml_dsa_65_sign(seed, b"cross")
        assert one.ml_dsa_65_verify(pub, b"cross", sig2)

        kseed, kpub = one.ml_kem_768_generate()
        assert two.ml_kem_768_public_from_private(kseed) == kpub
        ct, ss = one.ml_kem_768_encapsulate(kpub)
        assert two.ml_kem_768_decapsulate(kseed, ct) == ss
        ct2, ss2 = two.ml_kem_768_encapsulate(kpub)
        assert one.ml_kem_768_decapsulate(kseed, ct2) == ss2


# -------------------------------------------------- liboqs glue against a stand-in oqs


def _fake_oqs(*, kem_seed_api: bool = True, honour_rng: bool = True) -> types.ModuleType:
    """An ``oqs`` look-alike: liboqs-python's API and liboqs' RNG hook, cryptography inside.

    Its expanded secret keys have the FIPS layout fields the backend checks (ρ, K; ek, z),
    and key generation draws its seed from the installed randombytes callback like liboqs.
    """
    state: dict[str, Any] = {"custom": None}
    seeds: dict[bytes, bytes] = {}

    def randombytes(n: int) -> bytes:
        if state["custom"] is None or not honour_rng:
            return os.urandom(n)
        buf = (ctypes.c_uint8 * n)()
        state["custom"](buf, n)
        return bytes(buf)

    def custom_algorithm(cb: Any) -> None:
        state["custom"] = cb

    def switch_algorithm(name: bytes) -> int:
        assert name == b"system"
        state["custom"] = None
        return 0

    class Signature:
        def __init__(self, alg: str, secret_key: bytes | None = None) -> None:
            assert alg == "ML-DSA-65"
            self.secret_key = secret_key
            self.freed = False

        def generate_keypair(self) -> bytes:
            seed = randombytes(32)
            h = hashlib.shake_256(seed + bytes((6, 5))).digest(128)
            expanded = h[:32] + h[96:128] + hashlib.shake_256(seed).digest(4032 - 64)
            seeds[expanded] = seed
            self.secret_key = expanded
            return mldsa.MLDSA65PrivateKey.from_seed_bytes(seed).public_key().public_bytes_raw()

        def export_secret_key(self) -> bytes:
            assert self.secret_key is not None
            return self.secret_key

        def sign(self, message: bytes) -> bytes:
            assert self.secret_key is not None
            randombytes(32)  # hedged signing draws randomness too
            return mldsa.MLDSA65PrivateKey.from_seed_bytes(seeds[self.secret_key]).sign(message)

        def verify(self, message: bytes, signature: bytes, public_key: bytes) -> bool:
            try:
                mldsa.MLDSA65PublicKey.from_public_bytes(public_key).verify(signature, message)
            except Exception:
                return False
            return True

        def free(self) -> None:
            self.freed = True

    class KeyEncapsulation:
        length_keypair_seed = 64

        def __init__(self, alg: str, secret_key: bytes | None = None) -> None:
            assert alg == "ML-KEM-768"
            self.secret_key = secret_key

        def _keygen(self, seed: bytes) -> bytes:
            pub = mlkem.MLKEM768PrivateKey.from_seed_bytes(seed).public_key().public_bytes_raw()
            expanded = hashlib.shake_256(seed).digest(1152) + pub + hashlib.sha3_256(pub).digest() + seed[32:]
            seeds[expanded] = seed
            self.secret_key = expanded
            return pub

        def generate_keypair(self) -> bytes:
            return self._keygen(randombytes(32) + randombytes(32))  # d, then z

        def export_secret_key(self) -> bytes:
            assert self.secret_key is not None
            return self.secret_key

        def encap_secret(self, public_key: bytes) -> tuple[bytes, bytes]:
            ss, ct = mlkem.MLKEM768PublicKey.from_public_bytes(public_key).encapsulate()
            return ct, ss

        def decap_secret(self, ciphertext: bytes) -> bytes:
            assert self.secret_key is not None
            return mlkem.MLKEM768PrivateKey.from_seed_bytes(seeds[self.secret_key]).decapsulate(ciphertext)

        def free(self) -> None:
            pass

    if kem_seed_api:
        KeyEncapsulation.generate_keypair_seed = KeyEncapsulation._keygen  # type: ignore[attr-defined]

    module = types.ModuleType("oqs")
    native = types.SimpleNamespace(
        OQS_randombytes_custom_algorithm=custom_algorithm, OQS_randombytes_switch_algorithm=switch_algorithm
    )
    module.native = lambda: native  # type: ignore[attr-defined]
    module.oqs_version = lambda: "fake"  # type: ignore[attr-defined]
    module.get_enabled_sig_mechanisms = lambda: ("ML-DSA-65",)  # type: ignore[attr-defined]
    module.get_enabled_kem_mechanisms = lambda: ("ML-KEM-768",)  # type: ignore[attr-defined]
    module.Signature = Signature  # type: ignore[attr-defined]
    module.KeyEncapsulation = KeyEncapsulation  # type: ignore[attr-defined]
    module.state = state  # type: ignore[attr-defined]
    return module


def _glue_backend(monkeypatch: pytest.MonkeyPatch, **kwargs: bool) -> tuple[LiboqsBackend, Any]:
    fake = _fake_oqs(**kwargs)
    monkeypatch.setitem(sys.modules, "oqs", fake)
    monkeypatch.setattr(pqc, "liboqs_available", lambda: True)
    return LiboqsBackend(), fake


@pytest.mark.parametrize("kem_seed_api", [True, False], ids=["derand-api", "rng-injection"])
def test_liboqs_glue_injects_seeds_and_interoperates(
    monkeypatch: pytest.MonkeyPatch, kem_seed_api: bool
) -> None:
    backend, fake = _glue_backend(monkeypatch, kem_seed_api=kem_seed_api)
    _cross_check(backend, CRYPTO)
    assert fake.state["custom"] is None  # randomness switched back to the system RNG
    assert CRYPTO.ml_dsa_65_verify(DSA_PUB, b"m", backend.ml_dsa_65_sign(DSA_SEED, b"m"))
    assert backend.ml_dsa_65_verify(DSA_PUB, b"m", CRYPTO.ml_dsa_65_sign(DSA_SEED, b"m"))
    assert backend.ml_dsa_65_verify(b"short", b"m", b"sig") is False


def test_liboqs_glue_refuses_a_library_that_ignores_the_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    backend, fake = _glue_backend(monkeypatch, honour_rng=False)
    with pytest.raises(BackendError):
        backend.ml_dsa_65_public_from_private(DSA_SEED)
    assert fake.state["custom"] is None


def test_seed_feeder_serves_the_seed_only_to_the_arming_thread() -> None:
    feeder = pqc._SeedFeeder()
    seed = bytes(range(32))
    feeder.arm(seed)
    seen: dict[str, bytes] = {}

    def draw(key: str, n: int) -> None:
        buf = (ctypes.c_uint8 * n)()
        feeder.c_callback(buf, n)
        seen[key] = bytes(buf)

    other = threading.Thread(target=draw, args=("other", 32))
    other.start()
    other.join()
    draw("first", 20)
    draw("second", 20)  # 12 seed bytes left, then real randomness
    assert feeder.disarm() == 32
    assert seen["other"] != seed
    assert seen["first"] == seed[:20] and seen["second"][:12] == seed[20:]
    draw("after", 32)
    assert seen["after"] != seed
