"""Post-quantum primitives (ML-DSA-65, ML-KEM-768) behind one small backend interface.

Why an abstraction: two libraries can do the work. ``cryptography`` is always installed
(recent releases have ML-DSA/ML-KEM; whether a given build can run them depends on the
crypto library it was built against, so :class:`CryptographyBackend` probes at start);
``liboqs`` (through liboqs-python) is optional and needs a C library that most machines
do not have. Both speak the standard byte formats
(FIPS 204 public keys and signatures, FIPS 203 encapsulation keys and ciphertexts), so a
signature made with one verifies with the other and nothing on the wire says which one
produced it.

Private-key byte format (the same for both backends, so a keystore written with one loads
with the other):

* ML-DSA-65: the 32-byte FIPS 204 key-generation seed ξ. ``cryptography`` takes it
  directly (``MLDSA65PrivateKey.from_seed_bytes``). liboqs has no public seeded ML-DSA key
  generation, so :class:`LiboqsBackend` feeds ξ to liboqs' ordinary key generation through
  a temporary custom ``OQS_randombytes`` source (FIPS 204 KeyGen draws exactly ξ from the
  RNG and derives everything else from it) and then *checks* the result against ξ (ρ and
  K of the expanded key are SHAKE256(ξ‖k‖l)), so a liboqs that drew randomness
  differently fails loudly instead of producing a key that does not match the seed.
* ML-KEM-768: the 64-byte FIPS 203 seed d‖z. ``cryptography`` takes it directly; liboqs
  takes it through ``OQS_KEM_keypair_derand`` (liboqs-python >= 0.14
  ``generate_keypair_seed``), with the same randombytes fallback and checks otherwise.

Seeds rather than expanded keys: they are what the IETF/LAMPS key formats recommend
storing (32/64 bytes instead of 4,032/2,400), they cannot be internally inconsistent, and
they are the only private form ``cryptography`` imports.

Loading a key (parsing a 1,952-byte ML-DSA public key, expanding a seed) costs more than
one verification of a short message, so every backend keeps LRU caches of loaded key
objects keyed by their bytes.

PITFALL (why :func:`liboqs_available` exists): ``import oqs`` without the liboqs shared
library counts down 5 s and then tries to git-clone and build liboqs. We never import
``oqs`` unless the shared library is found first in the places liboqs-python itself
searches.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import importlib.metadata
import logging
import os
import platform
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from swarmlog.streams.settings import PQBackend, get_settings

logger = logging.getLogger(__name__)

# Sizes fixed by FIPS 204 (ML-DSA-65) and FIPS 203 (ML-KEM-768).
ML_DSA_65_SEED_SIZE = 32
ML_DSA_65_PUBLIC_KEY_SIZE = 1952
ML_DSA_65_SIGNATURE_SIZE = 3309
ML_DSA_65_EXPANDED_PRIVATE_KEY_SIZE = 4032
ML_KEM_768_SEED_SIZE = 64
ML_KEM_768_PUBLIC_KEY_SIZE = 1184
ML_KEM_768_CIPHERTEXT_SIZE = 1088
ML_KEM_768_SHARED_SECRET_SIZE = 32
ML_KEM_768_EXPANDED_PRIVATE_KEY_SIZE = 2400

LIBOQS_UNAVAILABLE_REASON = "liboqs C library not installed (liboqs-python needs it)"

# Public keys are looked up on every verify/encrypt; private keys belong to the few local
# identities. Sized so a busy verifier with many producers still hits the cache.
_PUBLIC_CACHE_SIZE = 4096
_PRIVATE_CACHE_SIZE = 64


class BackendUnavailable(RuntimeError):
    """The requested post-quantum backend cannot be used on this machine."""


class BackendError(RuntimeError):
    """A backend misbehaved (e.g. liboqs ignored the injected key-generation seed)."""


@runtime_checkable
class PQBackendImpl(Protocol):
    """ML-DSA-65 and ML-KEM-768 over plain bytes (formats in the module docstring)."""

    name: str

    def ml_dsa_65_generate(self) -> tuple[bytes, bytes]:
        """A fresh key pair: (32-byte seed ξ, 1,952-byte public key)."""
        ...

    def ml_dsa_65_public_from_private(self, private: bytes) -> bytes:
        """The public key of a 32-byte seed. Raises ValueError for a malformed seed."""
        ...

    def ml_dsa_65_sign(self, private: bytes, message: bytes) -> bytes:
        """A FIPS 204 (pure, empty context, hedged) signature of ``message``."""
        ...

    def ml_dsa_65_verify(self, public: bytes, message: bytes, signature: bytes) -> bool:
        """True iff valid; False (never an exception) for any malformed input."""
        ...

    def ml_kem_768_generate(self) -> tuple[bytes, bytes]:
        """A fresh key pair: (64-byte seed d‖z, 1,184-byte encapsulation key)."""
        ...

    def ml_kem_768_public_from_private(self, private: bytes) -> bytes:
        """The encapsulation key of a 64-byte seed. Raises ValueError if malformed."""
        ...

    def ml_kem_768_encapsulate(self, public: bytes) -> tuple[bytes, bytes]:
        """(1,088-byte ciphertext, 32-byte shared secret). ValueError for a bad key."""
        ...

    def ml_kem_768_decapsulate(self, private: bytes, ciphertext: bytes) -> bytes:
        """The 32-byte shared secret. A tampered ciphertext of the right length yields an
        unrelated secret (FIPS 203 implicit rejection); a wrong length raises ValueError."""
        ...


def _as_bytes(value: object, what: str) -> bytes:
    """Normalise bytes-like input to ``bytes`` (hashable, for the caches)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise TypeError(f"{what} must be bytes, not {type(value).__name__}")


def _check_len(value: bytes, size: int, what: str) -> None:
    if len(value) != size:
        raise ValueError(f"{what} must be {size} bytes, got {len(value)}")


# FIPS 204 KeyGen_internal: (ρ, ρ', K) = H(ξ ‖ k ‖ l, 128); ML-DSA-65 has (k, l) = (6, 5).
def _ml_dsa_65_rho_and_k(seed: bytes) -> tuple[bytes, bytes]:
    expanded = hashlib.shake_256(seed + bytes((6, 5))).digest(128)
    return expanded[:32], expanded[96:128]


# FIPS 203 K-PKE.KeyGen: (ρ, σ) = G(d ‖ k) with G = SHA3-512; ML-KEM-768 has k = 3.
def _ml_kem_768_rho(seed: bytes) -> bytes:
    return hashlib.sha3_512(seed[:32] + b"\x03").digest()[:32]


K = TypeVar("K")
V = TypeVar("V")


class _LRU(Generic[K, V]):
    """A small thread-safe LRU with an eviction hook (liboqs objects must be freed)."""

    def __init__(self, maxsize: int, on_evict: Callable[[V], None] | None = None) -> None:
        self._maxsize = maxsize
        self._data: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()
        self._on_evict = on_evict

    def get_or_create(self, key: K, create: Callable[[K], V]) -> V:
        with self._lock:
            try:
                value = self._data[key]
            except KeyError:
                pass
            else:
                self._data.move_to_end(key)
                return value
        value = create(key)  # outside the lock: creation may be slow (key expansion)
        evicted: list[V] = []
        with self._lock:
            existing = self._data.get(key)
            if existing is not None:
                evicted.append(value)
                value = existing
                self._data.move_to_end(key)
            else:
                self._data[key] = value
                while len(self._data) > self._maxsize:
                    evicted.append(self._data.popitem(last=False)[1])
        if self._on_evict is not None:
            for item in evicted:
                self._on_evict(item)
        return value

    def __len__(self) -> int:
        return len(self._data)


# --------------------------------------------------------------------------- cryptography


class CryptographyBackend:
    """ML-DSA-65 / ML-KEM-768 from ``cryptography`` (OpenSSL 3.5 bundled in its wheel)."""

    name = "cryptography"

    def __init__(self) -> None:
        try:
            from cryptography.hazmat.primitives.asymmetric import mldsa, mlkem
        except ImportError as exc:  # a cryptography release without these modules
            raise BackendUnavailable(
                "this cryptography release has no ML-DSA/ML-KEM modules; upgrade it: " + str(exc)
            ) from exc
        self._mldsa = mldsa
        self._mlkem = mlkem
        try:  # the wheel may be linked against an OpenSSL without them
            mldsa.MLDSA65PrivateKey.from_seed_bytes(bytes(ML_DSA_65_SEED_SIZE))
            mlkem.MLKEM768PrivateKey.from_seed_bytes(bytes(ML_KEM_768_SEED_SIZE))
        except Exception as exc:
            raise BackendUnavailable(f"cryptography cannot do ML-DSA-65/ML-KEM-768 here: {exc}") from exc

        # Per-instance caches (lru_cache on bound functions keeps the instance alive, which
        # is fine: instances are cached process-wide by get_backend()).
        self._dsa_private = lru_cache(maxsize=_PRIVATE_CACHE_SIZE)(self._load_dsa_private)
        self._dsa_public = lru_cache(maxsize=_PUBLIC_CACHE_SIZE)(self._load_dsa_public)
        self._kem_private = lru_cache(maxsize=_PRIVATE_CACHE_SIZE)(self._load_kem_private)
        self._kem_public = lru_cache(maxsize=_PUBLIC_CACHE_SIZE)(self._load_kem_public)

    def _load_dsa_private(self, seed: bytes) -> Any:
        _check_len(seed, ML_DSA_65_SEED_SIZE, "ML-DSA-65 private seed")
        return self._mldsa.MLDSA65PrivateKey.from_seed_bytes(seed)

    def _load_dsa_public(self, public: bytes) -> Any:
        return self._mldsa.MLDSA65PublicKey.from_public_bytes(public)

    def _load_kem_private(self, seed: bytes) -> Any:
        _check_len(seed, ML_KEM_768_SEED_SIZE, "ML-KEM-768 private seed")
        return self._mlkem.MLKEM768PrivateKey.from_seed_bytes(seed)

    def _load_kem_public(self, public: bytes) -> Any:
        return self._mlkem.MLKEM768PublicKey.from_public_bytes(public)

    def ml_dsa_65_generate(self) -> tuple[bytes, bytes]:
        seed = secrets.token_bytes(ML_DSA_65_SEED_SIZE)
        return seed, self.ml_dsa_65_public_from_private(seed)

    def ml_dsa_65_public_from_private(self, private: bytes) -> bytes:
        key = self._dsa_private(_as_bytes(private, "private"))
        return bytes(key.public_key().public_bytes_raw())

    def ml_dsa_65_sign(self, private: bytes, message: bytes) -> bytes:
        key = self._dsa_private(_as_bytes(private, "private"))
        return bytes(key.sign(message))

    def ml_dsa_65_verify(self, public: bytes, message: bytes, signature: bytes) -> bool:
        try:
            public = _as_bytes(public, "public")
            if len(public) != ML_DSA_65_PUBLIC_KEY_SIZE or len(signature) != ML_DSA_65_SIGNATURE_SIZE:
                return False
            self._dsa_public(public).verify(signature, message)
        except Exception:  # InvalidSignature, ValueError, TypeError: all mean "not valid"
            return False
        return True

    def ml_kem_768_generate(self) -> tuple[bytes, bytes]:
        seed = secrets.token_bytes(ML_KEM_768_SEED_SIZE)
        return seed, self.ml_kem_768_public_from_private(seed)

    def ml_kem_768_public_from_private(self, private: bytes) -> bytes:
        key = self._kem_private(_as_bytes(private, "private"))
        return bytes(key.public_key().public_bytes_raw())

    def ml_kem_768_encapsulate(self, public: bytes) -> tuple[bytes, bytes]:
        public = _as_bytes(public, "public")
        _check_len(public, ML_KEM_768_PUBLIC_KEY_SIZE, "ML-KEM-768 public key")
        shared, ciphertext = self._kem_public(public).encapsulate()  # note the order
        return bytes(ciphertext), bytes(shared)

    def ml_kem_768_decapsulate(self, private: bytes, ciphertext: bytes) -> bytes:
        ciphertext = _as_bytes(ciphertext, "ciphertext")
        _check_len(ciphertext, ML_KEM_768_CIPHERTEXT_SIZE, "ML-KEM-768 ciphertext")
        return bytes(self._kem_private(_as_bytes(private, "private")).decapsulate(ciphertext))


# --------------------------------------------------------------------------------- liboqs


def _liboqs_candidate_paths() -> list[str]:
    """Where liboqs-python (>= 0.12) looks for the shared library, in its order.

    Only these: if we found the library somewhere liboqs-python does not look, ``import
    oqs`` would still start its download-and-build fallback.
    """
    found: list[str] = []
    for name in ("liboqs", "oqs"):
        try:
            hit = ctypes.util.find_library(name)
        except Exception:  # find_library may run ldconfig/gcc and fail oddly
            hit = None
        if hit:
            found.append(hit)
    system = platform.system()
    subdirs: tuple[str, ...]
    if system == "Darwin":
        filename, subdirs = "liboqs.dylib", ("lib", "lib64")
    elif system == "Windows":
        filename, subdirs = "oqs.dll", ("bin",)
    else:
        filename, subdirs = "liboqs.so", ("lib", "lib64")
    prefix = (
        Path(os.environ["OQS_INSTALL_PATH"]) if os.environ.get("OQS_INSTALL_PATH") else Path.home() / "_oqs"
    )
    found.extend(str(prefix / sub / filename) for sub in subdirs)
    return found


@lru_cache(maxsize=1)
def _liboqs_library_path() -> str | None:
    try:
        importlib.metadata.version("liboqs-python")
    except importlib.metadata.PackageNotFoundError:
        # Not installed; also guards against the unrelated PyPI package named "oqs".
        return None
    for candidate in _liboqs_candidate_paths():
        if os.sep in candidate and not Path(candidate).exists():
            continue
        try:
            ctypes.CDLL(candidate)
        except OSError:
            continue
        return candidate
    return None


def liboqs_available() -> bool:
    """True when liboqs-python is installed *and* its C library loads.

    Never imports ``oqs`` (see the module docstring). The answer is cached for the process.
    """
    return _liboqs_library_path() is not None


_RANDOMBYTES_FN = ctypes.CFUNCTYPE(None, ctypes.POINTER(ctypes.c_uint8), ctypes.c_size_t)


class _SeedFeeder:
    """A custom ``OQS_randombytes`` source that hands a chosen seed to one thread.

    Why: liboqs has no seeded ML-DSA key generation, but FIPS 204 KeyGen draws exactly the
    32-byte ξ from the RNG. While a seed is armed, the *arming thread's* first reads get the
    seed bytes; every other read (other threads, reads past the seed) gets ``os.urandom``,
    so nothing else in the process ever receives predictable "randomness".
    """

    def __init__(self) -> None:
        self._armed: dict[int, list[Any]] = {}  # thread id -> [seed, offset]
        self._guard = threading.Lock()
        # One C callback for the life of the process: liboqs may still hold the pointer
        # in another thread after we switch back, so it must never be garbage-collected.
        self.c_callback = _RANDOMBYTES_FN(self._fill)

    def _fill(self, buf: Any, n: int) -> None:
        data = b""
        try:
            with self._guard:
                state = self._armed.get(threading.get_ident())
                if state is not None:
                    seed, offset = state
                    data = seed[offset : offset + n]
                    state[1] = offset + len(data)
            if len(data) < n:
                data += os.urandom(n - len(data))
        except Exception:  # a C callback must not raise; fall back to real randomness
            data = os.urandom(n)
        ctypes.memmove(buf, data, n)

    def arm(self, seed: bytes) -> None:
        with self._guard:
            self._armed[threading.get_ident()] = [seed, 0]

    def disarm(self) -> int:
        """Stop feeding this thread; returns how many seed bytes it consumed."""
        with self._guard:
            state = self._armed.pop(threading.get_ident(), None)
        return 0 if state is None else int(state[1])


class LiboqsBackend:
    """ML-DSA-65 / ML-KEM-768 from liboqs via liboqs-python (imported lazily).

    Raises :class:`BackendUnavailable` at construction when the C library is missing or
    the algorithms are not enabled in the liboqs build.
    """

    name = "liboqs"

    _SIG_ALG = "ML-DSA-65"
    _KEM_ALG = "ML-KEM-768"

    def __init__(self) -> None:
        if not liboqs_available():
            raise BackendUnavailable(
                "liboqs backend requested but "
                + LIBOQS_UNAVAILABLE_REASON
                + "; searched: "
                + ", ".join(_liboqs_candidate_paths())
                + ". Install liboqs and liboqs-python, or set SWARMLOG_PQ_BACKEND=cryptography."
            )
        import oqs  # safe now: the shared library is where liboqs-python looks

        self._oqs: Any = oqs
        if self._SIG_ALG not in oqs.get_enabled_sig_mechanisms():
            raise BackendUnavailable(f"this liboqs build has no {self._SIG_ALG} (liboqs >= 0.12 needed)")
        if self._KEM_ALG not in oqs.get_enabled_kem_mechanisms():
            raise BackendUnavailable(f"this liboqs build has no {self._KEM_ALG} (liboqs >= 0.12 needed)")

        native = oqs.native()
        native.OQS_randombytes_custom_algorithm.argtypes = [_RANDOMBYTES_FN]
        native.OQS_randombytes_custom_algorithm.restype = None
        native.OQS_randombytes_switch_algorithm.argtypes = [ctypes.c_char_p]
        native.OQS_randombytes_switch_algorithm.restype = ctypes.c_int
        self._native = native
        self._feeder = _SeedFeeder()
        self._keygen_lock = threading.Lock()

        # Stateless objects (no secret key): verify/encapsulate take the public key per call.
        self._verifier = oqs.Signature(self._SIG_ALG)
        self._encapsulator = oqs.KeyEncapsulation(self._KEM_ALG)
        # seed -> (object holding the expanded secret key, public key)
        self._signers: _LRU[bytes, tuple[Any, bytes]] = _LRU(_PRIVATE_CACHE_SIZE, self._free_pair)
        self._decapsulators: _LRU[bytes, tuple[Any, bytes]] = _LRU(_PRIVATE_CACHE_SIZE, self._free_pair)
        logger.info("liboqs backend: liboqs %s at %s", oqs.oqs_version(), _liboqs_library_path())

    @staticmethod
    def _free_pair(pair: tuple[Any, bytes]) -> None:
        try:
            pair[0].free()  # also wipes the expanded secret key
        except Exception:
            logger.debug("freeing a liboqs object failed", exc_info=True)

    @contextmanager
    def _seeded_rng(self, seed: bytes) -> Iterator[None]:
        """Route this thread's liboqs randomness to ``seed`` for the duration."""
        with self._keygen_lock:
            self._feeder.arm(seed)
            self._native.OQS_randombytes_custom_algorithm(self._feeder.c_callback)
            try:
                yield
            finally:
                if self._native.OQS_randombytes_switch_algorithm(b"system") != 0:
                    logger.error("could not switch liboqs randomness back to the system RNG")
                consumed = self._feeder.disarm()
                if consumed != len(seed):
                    raise BackendError(f"liboqs key generation consumed {consumed} of {len(seed)} seed bytes")

    def _expand_dsa(self, seed: bytes) -> tuple[Any, bytes]:
        _check_len(seed, ML_DSA_65_SEED_SIZE, "ML-DSA-65 private seed")
        signer = self._oqs.Signature(self._SIG_ALG)
        with self._seeded_rng(seed):
            public = bytes(signer.generate_keypair())
        expanded = bytes(signer.export_secret_key())
        rho, key_k = _ml_dsa_65_rho_and_k(seed)
        # sk = ρ ‖ K ‖ tr ‖ ...; pk = ρ ‖ t1 (FIPS 204 pkEncode/skEncode)
        if (
            len(public) != ML_DSA_65_PUBLIC_KEY_SIZE
            or len(expanded) != ML_DSA_65_EXPANDED_PRIVATE_KEY_SIZE
            or public[:32] != rho
            or expanded[:32] != rho
            or expanded[32:64] != key_k
        ):
            self._free_pair((signer, public))
            raise BackendError("liboqs ML-DSA-65 key generation did not use the injected seed ξ")
        return signer, public

    def _expand_kem(self, seed: bytes) -> tuple[Any, bytes]:
        _check_len(seed, ML_KEM_768_SEED_SIZE, "ML-KEM-768 private seed")
        kem = self._oqs.KeyEncapsulation(self._KEM_ALG)
        if hasattr(kem, "generate_keypair_seed") and int(getattr(kem, "length_keypair_seed", 0) or 0):
            public = bytes(kem.generate_keypair_seed(seed))
        else:  # liboqs-python < 0.14: same trick as ML-DSA (KeyGen draws d then z)
            with self._seeded_rng(seed):
                public = bytes(kem.generate_keypair())
        expanded = bytes(kem.export_secret_key())
        # dk = dk_pke (1152) ‖ ek (1184) ‖ H(ek) (32) ‖ z (32); ek ends with ρ (FIPS 203)
        if (
            len(public) != ML_KEM_768_PUBLIC_KEY_SIZE
            or len(expanded) != ML_KEM_768_EXPANDED_PRIVATE_KEY_SIZE
            or expanded[1152 : 1152 + ML_KEM_768_PUBLIC_KEY_SIZE] != public
            or expanded[-32:] != seed[32:]
            or public[-32:] != _ml_kem_768_rho(seed)
        ):
            self._free_pair((kem, public))
            raise BackendError("liboqs ML-KEM-768 key generation did not use the seed d‖z")
        return kem, public

    def ml_dsa_65_generate(self) -> tuple[bytes, bytes]:
        seed = secrets.token_bytes(ML_DSA_65_SEED_SIZE)
        return seed, self.ml_dsa_65_public_from_private(seed)

    def ml_dsa_65_public_from_private(self, private: bytes) -> bytes:
        return self._signers.get_or_create(_as_bytes(private, "private"), self._expand_dsa)[1]

    def ml_dsa_65_sign(self, private: bytes, message: bytes) -> bytes:
        signer, _ = self._signers.get_or_create(_as_bytes(private, "private"), self._expand_dsa)
        return bytes(signer.sign(_as_bytes(message, "message")))

    def ml_dsa_65_verify(self, public: bytes, message: bytes, signature: bytes) -> bool:
        try:
            public = _as_bytes(public, "public")
            signature = _as_bytes(signature, "signature")
            message = _as_bytes(message, "message")
            if len(public) != ML_DSA_65_PUBLIC_KEY_SIZE or len(signature) != ML_DSA_65_SIGNATURE_SIZE:
                return False
            return bool(self._verifier.verify(message, signature, public))
        except Exception:
            return False

    def ml_kem_768_generate(self) -> tuple[bytes, bytes]:
        seed = secrets.token_bytes(ML_KEM_768_SEED_SIZE)
        return seed, self.ml_kem_768_public_from_private(seed)

    def ml_kem_768_public_from_private(self, private: bytes) -> bytes:
        return self._decapsulators.get_or_create(_as_bytes(private, "private"), self._expand_kem)[1]

    def ml_kem_768_encapsulate(self, public: bytes) -> tuple[bytes, bytes]:
        public = _as_bytes(public, "public")
        _check_len(public, ML_KEM_768_PUBLIC_KEY_SIZE, "ML-KEM-768 public key")
        ciphertext, shared = self._encapsulator.encap_secret(public)
        return bytes(ciphertext), bytes(shared)

    def ml_kem_768_decapsulate(self, private: bytes, ciphertext: bytes) -> bytes:
        ciphertext = _as_bytes(ciphertext, "ciphertext")
        _check_len(ciphertext, ML_KEM_768_CIPHERTEXT_SIZE, "ML-KEM-768 ciphertext")
        kem, _ = self._decapsulators.get_or_create(_as_bytes(private, "private"), self._expand_kem)
        return bytes(kem.decap_secret(ciphertext))


# -------------------------------------------------------------------------------- factory

_instances: dict[str, PQBackendImpl] = {}
_instances_lock = threading.Lock()
_FACTORIES: dict[str, Callable[[], PQBackendImpl]] = {
    PQBackend.CRYPTOGRAPHY.value: CryptographyBackend,
    PQBackend.LIBOQS.value: LiboqsBackend,
}


def _instance(name: str) -> PQBackendImpl:
    with _instances_lock:
        backend = _instances.get(name)
        if backend is None:
            backend = _FACTORIES[name]()
            _instances[name] = backend
        return backend


def get_backend(choice: PQBackend | str | PQBackendImpl | None = None) -> PQBackendImpl:
    """The (process-wide, cached) backend for ``choice``; None means ``settings.pq_backend``.

    ``auto`` picks liboqs when its C library is present and usable, else cryptography.
    Asking for ``liboqs`` explicitly when it is missing raises :class:`BackendUnavailable`
    rather than silently falling back: whoever configured it wants to know.
    An object that already is a backend is returned unchanged (convenient for callers that
    accept "a backend or a name").
    """
    if choice is not None and not isinstance(choice, str | PQBackend):
        return choice
    if choice is None:
        choice = get_settings().pq_backend
    try:
        value = PQBackend(choice.value if isinstance(choice, PQBackend) else str(choice).lower())
    except ValueError:
        raise ValueError(
            f"unknown post-quantum backend {choice!r}; expected one of: "
            + ", ".join(b.value for b in PQBackend)
        ) from None
    if value is PQBackend.AUTO:
        if liboqs_available():
            try:
                return _instance(PQBackend.LIBOQS.value)
            except BackendUnavailable as exc:
                logger.warning("liboqs found but unusable (%s); using cryptography", exc)
        return _instance(PQBackend.CRYPTOGRAPHY.value)
    return _instance(value.value)


__all__ = [
    "LIBOQS_UNAVAILABLE_REASON",
    "ML_DSA_65_PUBLIC_KEY_SIZE",
    "ML_DSA_65_SEED_SIZE",
    "ML_DSA_65_SIGNATURE_SIZE",
    "ML_KEM_768_CIPHERTEXT_SIZE",
    "ML_KEM_768_PUBLIC_KEY_SIZE",
    "ML_KEM_768_SEED_SIZE",
    "ML_KEM_768_SHARED_SECRET_SIZE",
    "BackendError",
    "BackendUnavailable",
    "CryptographyBackend",
    "LiboqsBackend",
    "PQBackendImpl",
    "get_backend",
    "liboqs_available",
]
