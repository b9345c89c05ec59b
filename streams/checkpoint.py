"""Signed ledger checkpoints: C2SP tlog-checkpoint text in a C2SP signed note, signed hybrid.

Why this format: a checkpoint is the tree head an outsider pins (``origin``, ``tree size``,
``root``). The C2SP text form (https://c2sp.org/tlog-checkpoint, https://c2sp.org/signed-note)
is what transparency-log tooling (Go's ``sumdb/note``, witnesses, Sigstore) already reads, so a
swarmlog checkpoint can be checked without swarmlog code::

    swarmlog/ledger/commands/3          <- origin: one Merkle log per lane (topic, partition)
    1024                                <- tree size, decimal
    q2Hy6Kp...=                         <- root hash, standard base64
                                        <- blank line ends the note text
    — did:key:z6Mk... AbCdEf...          <- Ed25519 line: key ID (4 bytes) || signature
    — did:key:z6Mk... GhIjKl...          <- ML-DSA-65 line: key ID (4 bytes) || signature

Both signature lines follow signed-note exactly: ``— <key name> <base64(key ID || signature)>``
with the U+2014 em dash. The key name is the signer's did:key. Key IDs are
``SHA-256(key name || 0x0A || type || public key)[:4]``: type ``0x01`` for Ed25519 (so a standard
note verifier with the Ed25519 key accepts the Ed25519 line: it signs the note text itself), and,
as signed-note prescribes for a type without an assigned byte, ``0xff`` followed by the type name
:data:`ML_DSA_TYPE_NAME` for ML-DSA-65. The ML-DSA-65 line carries the ML-DSA half of the
:class:`~swarmlog.streams.identity.HybridSignature` over the text (it signs
``HYBRID_SIGNATURE_PREFIX || text``). The payload's ``signature`` field holds the full hybrid
signature; :func:`verify_checkpoint` requires both lines *and* the hybrid signature, so accepting a
swarmlog checkpoint always needs a classical and a post-quantum signature.

The tree hash is SHA-256 (RFC 9162 default) unless the origin says otherwise: a SHA3-256 log has
the origin suffix ``/sha3-256`` (:func:`lane_origin`), so two logs that hash differently can never
share an origin or be mistaken for one another.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from swarmlog.streams.identity import HYBRID_SIGNATURE_PREFIX, HybridSignature, Identity, PublicIdentity
from swarmlog.streams.merkle import SHA256, HashAlgorithm, ProofError, verify_consistency
from swarmlog.streams.pqc import get_backend

__all__ = [
    "CHECKPOINT_EVENT_TYPE",
    "ML_DSA_TYPE_NAME",
    "CheckpointError",
    "Note",
    "NoteSignature",
    "alg_of_origin",
    "format_note",
    "key_id_ed25519",
    "key_id_ml_dsa_65",
    "lane_origin",
    "parse_note",
    "sign_checkpoint",
    "verify_checkpoint",
]

CHECKPOINT_EVENT_TYPE = "ledger.checkpoint"
ORIGIN_PREFIX = "swarmlog/ledger/"
SHA3_ORIGIN_SUFFIX = "/sha3-256"
#: signed-note type name of our ML-DSA-65 lines (type byte 0xff = "named type").
ML_DSA_TYPE_NAME = "swarmlog.ml-dsa-65.hybrid.v1"
_ED25519_TYPE = b"\x01"
_NAMED_TYPE = b"\xff"
_SIG_PREFIX = "\u2014 "  # em dash + space, as signed-note requires
_MAX_SIGNATURES = 100  # signed-note verifiers (Go's note.Open) cap signature lines at 100
_MAX_NOTE_BYTES = 1 << 20


class CheckpointError(ValueError):
    """A malformed note or checkpoint, a bad or missing signature, or an inconsistent history."""


@dataclass(frozen=True, slots=True)
class NoteSignature:
    """One ``— name base64(keyid || sig)`` line."""

    name: str
    key_id: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class Note:
    """A parsed checkpoint note: the signed text, its three fields, extensions, signatures."""

    text: str
    origin: str
    tree_size: int
    root_hash: bytes
    extensions: tuple[str, ...]
    signatures: tuple[NoteSignature, ...]


def lane_origin(topic: str, partition: int, alg: HashAlgorithm | str = SHA256) -> str:
    """The origin line of a lane's log: ``swarmlog/ledger/<physical topic>/<partition>``.

    One log per lane because a lane is totally ordered, so every worker and every auditor builds
    the same tree from it. A non-default hash algorithm is part of the origin.
    """
    algorithm = HashAlgorithm(alg) if isinstance(alg, str) else alg
    if not topic or any(c.isspace() for c in topic) or "/" in topic:
        raise CheckpointError(f"not a Kafka topic name: {topic!r}")
    if isinstance(partition, bool) or not isinstance(partition, int) or partition < 0:
        raise CheckpointError(f"partition must be a non-negative integer, got {partition!r}")
    suffix = SHA3_ORIGIN_SUFFIX if algorithm is HashAlgorithm.SHA3_256 else ""
    return f"{ORIGIN_PREFIX}{topic}/{partition}{suffix}"


def alg_of_origin(origin: str) -> HashAlgorithm:
    """The tree hash algorithm an origin declares (SHA-256 unless it ends in ``/sha3-256``)."""
    return HashAlgorithm.SHA3_256 if origin.endswith(SHA3_ORIGIN_SUFFIX) else HashAlgorithm.SHA256


def _check_text_line(line: str, what: str) -> None:
    if not line:
        raise CheckpointError(f"{what} must not be empty")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in line):
        raise CheckpointError(f"{what} contains a control character")


def _check_key_name(name: str) -> None:
    if not name or any(c.isspace() for c in name) or "+" in name:
        raise CheckpointError(f"invalid key name {name!r}: non-empty, no spaces, no '+'")


def format_note(origin: str, tree_size: int, root_hash: bytes, extensions: Sequence[str] = ()) -> str:
    """The tlog-checkpoint note text (the part that is signed), ending in a newline."""
    _check_text_line(origin, "origin")
    if isinstance(tree_size, bool) or not isinstance(tree_size, int) or not 0 <= tree_size < 1 << 64:
        raise CheckpointError(f"tree size must be a uint64, got {tree_size!r}")
    if not isinstance(root_hash, bytes) or len(root_hash) != 32:
        raise CheckpointError("root hash must be 32 bytes")
    for line in extensions:
        _check_text_line(line, "extension line")
    lines = [origin, str(tree_size), base64.b64encode(root_hash).decode("ascii"), *extensions]
    return "".join(line + "\n" for line in lines)


def key_id_ed25519(name: str, public_key: bytes) -> bytes:
    """signed-note key ID of an Ed25519 key: ``SHA-256(name || 0x0A || 0x01 || key)[:4]``."""
    return hashlib.sha256(name.encode() + b"\n" + _ED25519_TYPE + public_key).digest()[:4]


def key_id_ml_dsa_65(name: str, public_key: bytes) -> bytes:
    """signed-note key ID of our ML-DSA-65 key: ``0xff`` + type name in place of the type byte."""
    return hashlib.sha256(name.encode() + b"\n" + _NAMED_TYPE + ML_DSA_TYPE_NAME.encode() + public_key).digest()[:4]


def _signature_line(name: str, key_id: bytes, signature: bytes) -> str:
    return f"{_SIG_PREFIX}{name} {base64.b64encode(key_id + signature).decode('ascii')}\n"


def parse_note(note: str) -> Note:
    """Parse a signed checkpoint note strictly; :class:`CheckpointError` says what is wrong.

    Mirrors signed-note: text and signatures are split at the *last* blank line, the text is
    non-empty and newline-terminated, every signature line is ``— name base64`` decoding to at
    least a 4-byte key ID plus signature, at most 100 of them. The text must then be a
    tlog-checkpoint: origin, decimal size without leading zeros, base64 of a 32-byte root.
    """
    if not isinstance(note, str):
        raise CheckpointError("a note is text")
    if len(note.encode("utf-8", "surrogatepass")) > _MAX_NOTE_BYTES:
        raise CheckpointError("note is too large")
    split = note.rfind("\n\n")
    if split < 0:
        raise CheckpointError("malformed note: no blank line between text and signatures")
    text, sig_block = note[: split + 1], note[split + 2 :]
    if not sig_block.endswith("\n"):
        raise CheckpointError("malformed note: signature block must end with a newline")
    signatures = []
    for line in sig_block[:-1].split("\n"):
        if not line.startswith(_SIG_PREFIX):
            raise CheckpointError(f"malformed signature line {line[:40]!r}")
        parts = line[len(_SIG_PREFIX) :].split(" ")
        if len(parts) != 2:
            raise CheckpointError(f"malformed signature line {line[:40]!r}")
        name, encoded = parts
        _check_key_name(name)
        try:
            raw = base64.b64decode(encoded.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            raise CheckpointError(f"signature of {name} is not valid base64") from None
        if len(raw) < 5:
            raise CheckpointError(f"signature of {name} is too short")
        signatures.append(NoteSignature(name, raw[:4], raw[4:]))
    if len(signatures) > _MAX_SIGNATURES:
        raise CheckpointError(f"more than {_MAX_SIGNATURES} signatures")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise CheckpointError("checkpoint text needs origin, tree size and root hash lines")
    for index, line in enumerate(lines):
        _check_text_line(line, f"checkpoint line {index + 1}")
    origin, size_text, root_text, *extensions = lines
    if not size_text.isascii() or not size_text.isdigit() or (size_text != "0" and size_text.startswith("0")):
        raise CheckpointError(f"tree size {size_text[:30]!r} is not a decimal without leading zeros")
    tree_size = int(size_text)
    if tree_size >= 1 << 64:
        raise CheckpointError("tree size does not fit in uint64")
    try:
        root_hash = base64.b64decode(root_text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise CheckpointError("root hash is not valid base64") from None
    if len(root_hash) != 32:
        raise CheckpointError(f"root hash must be 32 bytes, got {len(root_hash)}")
    if base64.b64encode(root_hash).decode("ascii") != root_text:
        raise CheckpointError("root hash is not canonical base64")
    return Note(text, origin, tree_size, root_hash, tuple(extensions), tuple(signatures))


def sign_checkpoint(identity: Identity, origin: str, size: int, root: bytes, previous: Mapping[str, Any] | None = None,
                    consistency_proof: Sequence[bytes] = ()) -> dict[str, Any]:
    """A ``ledger.checkpoint`` payload for tree ``size``/``root`` of ``origin``, signed by ``identity``.

    ``previous`` is the last checkpoint payload of this origin (or ``None`` for the first).
    The append-only rule is enforced here, before anything is signed: the new tree must not be
    smaller, an equal size must have the same root, and ``consistency_proof`` must prove the new
    tree extends the previous one. A forked history therefore cannot get a signature.
    """
    previous_size = 0
    proof = [bytes(h) for h in consistency_proof]
    if previous is not None:
        previous_size = int(previous["tree_size"])
        previous_root = bytes(previous["root_hash"])
        if previous.get("origin") not in (None, origin):
            raise CheckpointError(f"previous checkpoint is of origin {previous.get('origin')!r}, not {origin!r}")
        try:
            if previous_size > 0:
                verify_consistency(previous_size, size, previous_root, root, proof, alg_of_origin(origin))
            elif proof:
                raise ProofError("a first checkpoint carries no consistency proof")
        except ProofError as exc:
            raise CheckpointError(f"refusing to sign {origin} size {size}: not an extension of the previous "
                                  f"checkpoint (size {previous_size}): {exc}") from None
    elif proof:
        raise CheckpointError("a first checkpoint carries no consistency proof")
    text = format_note(origin, size, root)
    name = identity.did
    hybrid = identity.sign(text.encode("utf-8"))
    public = identity.public
    note = (text + "\n"
            + _signature_line(name, key_id_ed25519(name, public.ed25519_public), identity.sign_ed25519(text.encode()))
            + _signature_line(name, key_id_ml_dsa_65(name, public.ml_dsa_65_public), hybrid.ml_dsa_65))
    return {
        "origin": origin,
        "tree_size": size,
        "root_hash": root,
        "note": note,
        "signature": hybrid.to_record(),
        "previous_tree_size": previous_size,
        "consistency_proof": proof,
    }


def verify_checkpoint(payload: Mapping[str, Any], public_identity: PublicIdentity, *,
                      previous_root: bytes | None = None) -> Note:
    """Check a ``ledger.checkpoint`` payload against its signer's public identity; return the note.

    Raises :class:`CheckpointError` unless: the note parses; its origin, size and root equal the
    payload's fields; it has an Ed25519 line *and* an ML-DSA-65 line named by the signer's DID with
    the right key IDs, both verifying over the note text; and the payload's hybrid signature verifies
    over the same text. With ``previous_root`` (the root of the checkpoint at ``previous_tree_size``,
    which the caller trusts) the consistency proof is verified too.
    """
    try:
        origin = payload["origin"]
        tree_size = payload["tree_size"]
        root_hash = payload["root_hash"]
        note_text = payload["note"]
        signature = HybridSignature.from_record(payload["signature"])
        previous_size = payload.get("previous_tree_size", 0)
        proof = [bytes(h) for h in payload.get("consistency_proof", [])]
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"malformed checkpoint payload: {exc}") from None
    note = parse_note(note_text)
    if note.origin != origin or note.tree_size != tree_size or note.root_hash != bytes(root_hash):
        raise CheckpointError("the note's origin, size or root differs from the checkpoint fields")
    name = public_identity.did
    text = note.text.encode("utf-8")
    ed_id = key_id_ed25519(name, public_identity.ed25519_public)
    ml_id = key_id_ml_dsa_65(name, public_identity.ml_dsa_65_public)
    ed_lines = [s for s in note.signatures if s.name == name and s.key_id == ed_id]
    ml_lines = [s for s in note.signatures if s.name == name and s.key_id == ml_id]
    if not ed_lines:
        raise CheckpointError(f"no Ed25519 signature line of {name}")
    if not ml_lines:
        raise CheckpointError(f"no ML-DSA-65 signature line of {name}")
    # signed-note: the first line of a known key decides; a bad one rejects the note.
    if not public_identity.verify_ed25519(text, ed_lines[0].signature):
        raise CheckpointError(f"the Ed25519 signature line of {name} does not verify")
    try:
        ml_ok = get_backend().ml_dsa_65_verify(public_identity.ml_dsa_65_public, HYBRID_SIGNATURE_PREFIX + text,
                                               ml_lines[0].signature)
    except (TypeError, ValueError):
        ml_ok = False
    if not ml_ok:
        raise CheckpointError(f"the ML-DSA-65 signature line of {name} does not verify")
    if not public_identity.verify(text, signature):
        raise CheckpointError("the hybrid signature over the note does not verify")
    if isinstance(previous_size, bool) or not isinstance(previous_size, int) or not 0 <= previous_size <= tree_size:
        raise CheckpointError(f"previous_tree_size {previous_size!r} is not in [0, {tree_size}]")
    if previous_size == 0 and proof:
        raise CheckpointError("a checkpoint without a previous one carries no consistency proof")
    if previous_root is not None and previous_size > 0:
        try:
            verify_consistency(previous_size, tree_size, previous_root, bytes(root_hash), proof,
                               alg_of_origin(origin))
        except ProofError as exc:
            raise CheckpointError(f"checkpoint is not consistent with the previous one: {exc}") from None
    return note
