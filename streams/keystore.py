"""Identities on disk: one JSON file per identity, private material optionally encrypted.

Layout: ``<keystore_dir>/<name>.json``, directory 0700, files 0600. A file is written to a
temporary file that is *created* 0600 (``O_CREAT|O_EXCL`` with mode 0600, so there is no
moment when another user could open it), fsynced, then moved into place atomically with
``os.replace``. A *new* key is linked into place with ``os.link`` instead, which fails if
the name exists, so two processes creating the same name cannot silently overwrite each
other's key (the loser gets :class:`KeyExists`); on filesystems without hard links it
falls back to check-then-replace.

File format (``format: swarmlog-keystore/v1``)::

    {"format", "name", "did", "label", "created" (ISO 8601 UTC), "public": {...},
     "private": {...}                      # when no passphrase
     "encrypted": {"kdf": "scrypt", "n", "r", "p", "salt",
                   "cipher": "aes-256-gcm", "nonce", "ciphertext"}}   # with a passphrase

Public keys are stored in clear so :meth:`Keystore.get_public` and :meth:`Keystore.list`
work without the passphrase. With a passphrase (NFC-normalised, UTF-8), scrypt(n=2**15,
r=8, p=1) derives an AES-256-GCM key that encrypts the private material with the DID as
associated data (so an encrypted blob cannot be moved under another identity's name).
After decrypting, the public keys derived from the private ones must equal the stored
public keys and DID, so a tampered public section is detected too.

Permissions are checked on the open file descriptor (no check-then-open race) and a key
file readable or writable by group/others is refused, like ssh does.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import json
import logging
import os
import re
import secrets
import stat
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from swarmlog.streams.identity import Identity, PublicIdentity
from swarmlog.streams.settings import get_settings

logger = logging.getLogger(__name__)

FORMAT = "swarmlog-keystore/v1"
NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1
# Bounds for parameters read from a file: enough to reject a downgrade to a trivially
# brute-forceable KDF and a file that asks for gigabytes of memory.
_SCRYPT_N_RANGE = (2**14, 2**20)
_SCRYPT_R_RANGE = (8, 16)
_SCRYPT_P_RANGE = (1, 4)
_SCRYPT_MAX_MEMORY = 256 << 20  # 128 * n * r bytes; the default needs 32 MiB
_SALT_SIZE = 16
_NONCE_SIZE = 12
_MAX_FILE_SIZE = 1 << 20  # a key file is ~6 kB; refuse to parse anything absurd


class KeystoreError(Exception):
    """Base class of every keystore failure."""


class InvalidKeyName(KeystoreError, ValueError):
    """The name does not match ``[A-Za-z0-9_.-]{1,64}``."""


class KeyNotFound(KeystoreError, LookupError):
    """No identity with that name or DID."""


class KeyExists(KeystoreError):
    """An identity with that name already exists."""


class PassphraseRequired(KeystoreError):
    """The key file is encrypted and no passphrase was given (argument or SWARMLOG_PASSPHRASE)."""


class WrongPassphrase(KeystoreError):
    """The passphrase does not decrypt the key file (or the file was modified)."""


class InsecurePermissions(KeystoreError):
    """The key file can be read or written by other users."""


class CorruptKeyFile(KeystoreError):
    """The key file is not a valid keystore entry."""


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """What :meth:`Keystore.list` reports about one entry (no secrets)."""

    name: str
    did: str
    label: str
    created: datetime
    encrypted: bool
    mode: int  # permission bits of the file, e.g. 0o600
    path: Path

    @property
    def secure(self) -> bool:
        return not self.mode & 0o077


def validate_name(name: str) -> str:
    """Return ``name`` if it is a valid key name, else raise :class:`InvalidKeyName`."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or set(name) == {"."}:
        raise InvalidKeyName(f"invalid key name {name!r}: use 1-64 characters from A-Z a-z 0-9 _ . -")
    return name


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise CorruptKeyFile(f"{what} is not a base64 string")
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise CorruptKeyFile(f"{what} is not valid base64") from None


def _scrypt_key(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    # NFC: the same passphrase typed on different systems may arrive in different Unicode
    # normalisation forms (macOS input methods prefer decomposed characters).
    secret = unicodedata.normalize("NFC", passphrase).encode("utf-8")
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(secret)


def _check_param(params: Mapping[str, Any], key: str, bounds: tuple[int, int]) -> int:
    value = params.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not bounds[0] <= value <= bounds[1]:
        raise CorruptKeyFile(f"scrypt parameter {key}={value!r} outside {bounds}")
    return value


class Keystore:
    """The identities of this machine (or of ``path``), see the module docstring."""

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path is not None else get_settings().keystore_dir

    # ------------------------------------------------------------------ files and modes
    def _ensure_dir(self) -> None:
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        mode = stat.S_IMODE(self.path.stat().st_mode)
        if mode & 0o077:
            logger.warning(
                "keystore directory %s has mode %o; other users can see which identities exist "
                "(chmod 700 %s)",
                self.path,
                mode,
                self.path,
            )

    def _file(self, name: str) -> Path:
        return self.path / f"{validate_name(name)}.json"

    def _write_file(self, path: Path, document: Mapping[str, Any], *, exclusive: bool) -> None:
        """Write ``document`` as ``path`` atomically, 0600 from the first byte."""
        data = (json.dumps(document, indent=2, sort_keys=True) + "\n").encode("utf-8")
        tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(8)}")
        flags = (
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        )
        fd = os.open(tmp, flags, 0o600)
        try:
            try:
                os.fchmod(fd, 0o600)  # exact mode regardless of umask
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            if exclusive:
                try:
                    os.link(tmp, path)  # fails if path exists: no silent overwrite of a key
                except FileExistsError:
                    raise KeyExists(f"key {path.stem!r} already exists in {self.path}") from None
                except OSError as exc:  # no hard links here (some network/FUSE filesystems)
                    if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV):
                        raise
                    if os.path.lexists(path):
                        raise KeyExists(f"key {path.stem!r} already exists in {self.path}") from None
                    os.replace(tmp, path)
            else:
                os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        self._fsync_dir()

    def _fsync_dir(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)

    def _read_file(self, path: Path) -> tuple[dict[str, Any], int]:
        """Parse a key file; returns (document, permission bits) from the same open fd."""
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            raise KeyNotFound(f"no key {path.stem!r} in {self.path}") from None
        except OSError:
            if os.path.islink(path):
                raise CorruptKeyFile(f"{path} is a symbolic link; refusing to follow it") from None
            raise
        with os.fdopen(fd, "rb") as fh:
            st = os.fstat(fh.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise CorruptKeyFile(f"{path} is not a regular file")
            raw = fh.read(_MAX_FILE_SIZE + 1)
        if len(raw) > _MAX_FILE_SIZE:
            raise CorruptKeyFile(f"{path} is too large to be a key file")
        try:
            document = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CorruptKeyFile(f"{path} is not valid JSON: {exc}") from None
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise CorruptKeyFile(f"{path} is not a {FORMAT} file")
        return document, stat.S_IMODE(st.st_mode)

    @staticmethod
    def _require_private_mode(path: Path, mode: int) -> None:
        if mode & 0o077:
            raise InsecurePermissions(
                f"refusing to use {path}: mode {mode:04o} lets other users access it; "
                f"fix with: chmod 600 {path}"
            )

    @staticmethod
    def _require_not_writable_by_others(path: Path, mode: int) -> None:
        if mode & 0o022:
            raise InsecurePermissions(
                f"refusing to use {path}: mode {mode:04o} lets other users modify it; "
                f"fix with: chmod 600 {path}"
            )

    def _entries(self) -> list[Path]:
        if not self.path.is_dir():
            return []
        return sorted(p for p in self.path.glob("*.json") if NAME_RE.fullmatch(p.stem))

    def _resolve(self, name_or_did: str) -> tuple[Path, dict[str, Any], int]:
        """Find an entry by name, or by DID (a scan: keystores hold a handful of keys)."""
        if isinstance(name_or_did, str) and name_or_did.startswith("did:"):
            for path in self._entries():
                try:
                    document, mode = self._read_file(path)
                except (KeystoreError, OSError):
                    continue
                if document.get("did") == name_or_did:
                    return path, document, mode
            raise KeyNotFound(f"no key with DID {name_or_did} in {self.path}")
        path = self._file(name_or_did)
        document, mode = self._read_file(path)
        return path, document, mode

    @staticmethod
    def _public_of(path: Path, document: Mapping[str, Any]) -> PublicIdentity:
        public = document.get("public")
        if not isinstance(public, dict):
            raise CorruptKeyFile(f"{path} has no public section")
        try:
            identity = PublicIdentity.from_dict(
                {**public, "did": document.get("did"), "label": document.get("label", "")}
            )
        except (ValueError, TypeError) as exc:  # InvalidDID is a ValueError
            raise CorruptKeyFile(f"{path}: bad public keys: {exc}") from None
        return identity

    @staticmethod
    def _info(path: Path, document: Mapping[str, Any], mode: int) -> KeyInfo:
        try:
            created = datetime.fromisoformat(str(document.get("created")))
        except ValueError:
            created = datetime.fromtimestamp(0, UTC)
        if created.tzinfo is None:
            created = created.replace(tzinfo=UTC)
        return KeyInfo(
            name=str(document.get("name", path.stem)),
            did=str(document.get("did", "")),
            label=str(document.get("label", "")),
            created=created,
            encrypted="encrypted" in document,
            mode=mode,
            path=path,
        )

    # -------------------------------------------------------------------------- public API
    def create(self, name: str, label: str = "", passphrase: str | None = None) -> Identity:
        """Generate a new identity and store it as ``name``.

        ``passphrase=None`` stores the private keys unencrypted (the file is still 0600);
        SWARMLOG_PASSPHRASE is *not* consulted here, so the caller decides explicitly
        (see :meth:`load_or_create` for the settings-driven variant).
        """
        path = self._file(name)
        if path.exists():
            raise KeyExists(f"key {name!r} already exists in {self.path}")
        identity = Identity.generate(label=label)
        created = datetime.now(UTC).replace(microsecond=0)
        document: dict[str, Any] = {
            "format": FORMAT,
            "name": name,
            "did": identity.did,
            "label": label,
            "created": created.isoformat().replace("+00:00", "Z"),
            "public": {k: v for k, v in identity.public.to_dict().items() if k not in ("did", "label")},
        }
        private = identity.to_private_dict()
        if passphrase is None:
            document["private"] = private
        else:
            if not passphrase:
                raise KeystoreError("empty passphrase: pass None for an unencrypted key")
            salt = secrets.token_bytes(_SALT_SIZE)
            nonce = secrets.token_bytes(_NONCE_SIZE)
            key = _scrypt_key(passphrase, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
            plaintext = json.dumps(private, sort_keys=True).encode("utf-8")
            document["encrypted"] = {
                "kdf": "scrypt",
                "n": SCRYPT_N,
                "r": SCRYPT_R,
                "p": SCRYPT_P,
                "salt": _b64(salt),
                "cipher": "aes-256-gcm",
                "nonce": _b64(nonce),
                "ciphertext": _b64(AESGCM(key).encrypt(nonce, plaintext, identity.did.encode("utf-8"))),
            }
        self._ensure_dir()
        self._write_file(path, document, exclusive=True)
        logger.info("created identity %s (%s) in %s", name, identity.did, path)
        return identity

    def load(self, name_or_did: str, passphrase: str | None = None) -> Identity:
        """The identity stored as ``name_or_did`` (a key name or its DID).

        An encrypted entry needs ``passphrase``, or SWARMLOG_PASSPHRASE when it is None.
        """
        path, document, mode = self._resolve(name_or_did)
        self._require_private_mode(path, mode)
        did = document.get("did")
        if not isinstance(did, str):
            raise CorruptKeyFile(f"{path} has no did")
        if "encrypted" in document:
            if passphrase is None:
                passphrase = get_settings().passphrase
            if not passphrase:
                raise PassphraseRequired(
                    f"key {path.stem!r} is encrypted: give its passphrase or set SWARMLOG_PASSPHRASE"
                )
            private = self._decrypt_private(path, document["encrypted"], did, passphrase)
        else:
            stored = document.get("private")
            if not isinstance(stored, dict):
                raise CorruptKeyFile(f"{path} has neither private nor encrypted section")
            private = stored
        try:
            identity = Identity.from_private_dict({**private, "label": document.get("label", "")})
        except (ValueError, TypeError) as exc:
            raise CorruptKeyFile(f"{path}: bad private keys: {exc}") from None
        if identity.public != self._public_of(path, document):
            raise CorruptKeyFile(f"{path}: private keys do not match the stored public keys / DID")
        return identity

    @staticmethod
    def _decrypt_private(path: Path, enc: object, did: str, passphrase: str) -> dict[str, Any]:
        if not isinstance(enc, dict) or enc.get("kdf") != "scrypt" or enc.get("cipher") != "aes-256-gcm":
            raise CorruptKeyFile(f"{path}: unsupported encryption section")
        n = _check_param(enc, "n", _SCRYPT_N_RANGE)
        if n & (n - 1):
            raise CorruptKeyFile(f"{path}: scrypt n must be a power of two")
        r = _check_param(enc, "r", _SCRYPT_R_RANGE)
        p = _check_param(enc, "p", _SCRYPT_P_RANGE)
        if 128 * n * r > _SCRYPT_MAX_MEMORY:
            raise CorruptKeyFile(
                f"{path}: scrypt parameters ask for more than {_SCRYPT_MAX_MEMORY >> 20} MiB"
            )
        salt = _unb64(enc.get("salt"), "salt")
        nonce = _unb64(enc.get("nonce"), "nonce")
        ciphertext = _unb64(enc.get("ciphertext"), "ciphertext")
        if len(nonce) != _NONCE_SIZE or len(salt) < 16:
            raise CorruptKeyFile(f"{path}: bad salt or nonce length")
        key = _scrypt_key(passphrase, salt, n, r, p)
        try:
            plaintext = AESGCM(key).decrypt(nonce, ciphertext, did.encode("utf-8"))
        except InvalidTag:
            raise WrongPassphrase(
                f"wrong passphrase for key {path.stem!r} (or the file was modified)"
            ) from None
        try:
            private = json.loads(plaintext)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise CorruptKeyFile(f"{path}: decrypted private section is not JSON") from None
        if not isinstance(private, dict):
            raise CorruptKeyFile(f"{path}: decrypted private section is not an object")
        return private

    def get_public(self, name_or_did: str) -> PublicIdentity:
        """Public keys of an entry; needs no passphrase (they are stored in clear)."""
        path, document, mode = self._resolve(name_or_did)
        self._require_not_writable_by_others(path, mode)
        return self._public_of(path, document)

    def info(self, name_or_did: str) -> KeyInfo:
        """:class:`KeyInfo` of one entry."""
        path, document, mode = self._resolve(name_or_did)
        return self._info(path, document, mode)

    def exists(self, name: str) -> bool:
        return self._file(name).exists()

    def list(self) -> list[KeyInfo]:
        """Every readable entry, sorted by name; unreadable files are logged and skipped."""
        infos = []
        for path in self._entries():
            try:
                document, mode = self._read_file(path)
            except (KeystoreError, OSError) as exc:
                logger.warning("skipping %s: %s", path, exc)
                continue
            infos.append(self._info(path, document, mode))
        return infos

    def load_or_create(self, name: str, label: str = "", passphrase: str | None = None) -> Identity:
        """Load ``name``, creating it first if missing (agent bootstrap).

        Here ``passphrase=None`` means SWARMLOG_PASSPHRASE for both paths, so an operator
        who set a passphrase never gets an unencrypted key by accident.
        """
        if passphrase is None:
            passphrase = get_settings().passphrase or None
        if not self.exists(name):
            try:
                return self.create(name, label=label, passphrase=passphrase)
            except KeyExists:  # another process won the race: use its key
                pass
        return self.load(name, passphrase=passphrase)


__all__ = [
    "FORMAT",
    "CorruptKeyFile",
    "InsecurePermissions",
    "InvalidKeyName",
    "KeyExists",
    "KeyInfo",
    "KeyNotFound",
    "Keystore",
    "KeystoreError",
    "PassphraseRequired",
    "WrongPassphrase",
    "validate_name",
]
