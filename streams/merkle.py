"""RFC 9162 (Certificate Transparency v2) Merkle trees: roots, inclusion and consistency proofs.

Pure and I/O-free on purpose: the same code computes the root a producer signs over a batch of
event hashes (the "seal"), serves proofs from the append-only audit ledger, and verifies proofs in
an independent verifier, so all three agree bit for bit with each other and with every other
RFC 6962/9162 implementation.

The tree (RFC 9162 §2.1.1) is *not* a "pad the last level with duplicates" tree::

    MTH({})     = HASH()
    MTH({d0})   = HASH(0x00 || d0)
    MTH(D[n])   = HASH(0x01 || MTH(D[0:k]) || MTH(D[k:n]))   k = largest power of two < n

The 0x00/0x01 prefixes separate leaves from interior nodes (no second-preimage tricks that pass an
interior node off as a leaf), and an odd node at the end of a level is promoted unchanged instead of
being hashed with a copy of itself (so the trees of ``[a, b, c]`` and ``[a, b, c, c]`` differ).

Storage model. In an append-only tree every *perfect* subtree -- the ``2**level`` leaves
``[index * 2**level, (index + 1) * 2**level)``, addressed ``(level, index)`` -- never changes once
it is complete. The hash of any RFC 9162 subtree, of any historical tree size, is a right fold of at
most ``log2(n)`` such perfect-subtree hashes. So a backend only has to store perfect-subtree hashes
keyed by ``(level, index)`` (the :class:`NodeStore` protocol: ``get_node``/``put_node``) and every
root and proof for every size ``n <= size`` costs ``O(log n)`` lookups. :class:`MemoryNodeStore` is
the in-memory backend; a RocksDB backend implements the same two methods and reuses all of this.

Every invalid input -- wrong types, negative or out-of-range sizes, hashes of the wrong length, a
proof that does not verify -- raises :class:`ProofError` (a :class:`ValueError`), never an
``IndexError``/``AssertionError``/``TypeError``, so callers need one ``except`` clause and a verifier
cannot be crashed by hostile input.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import importlib
import json
import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast, runtime_checkable

__all__ = [
    "MAX_PROOF_LENGTH",
    "MAX_TREE_SIZE",
    "SHA3_256",
    "SHA256",
    "ConsistencyProof",
    "HashAlgorithm",
    "InclusionProof",
    "MemoryNodeStore",
    "MerkleLog",
    "MissingNodeError",
    "NodeSource",
    "NodeStore",
    "ProofError",
    "consistency_proof",
    "consistency_proof_from_nodes",
    "empty_root",
    "inclusion_proof",
    "inclusion_proof_from_nodes",
    "leaf_hash",
    "node_hash",
    "proof_from_json",
    "proof_to_json",
    "root",
    "root_from_leaf_hashes",
    "root_from_nodes",
    "verify_consistency",
    "verify_inclusion",
]

#: RFC 9162 encodes tree sizes and leaf indices as uint64; larger values are rejected, not wrapped.
MAX_TREE_SIZE = (1 << 64) - 1
#: No valid proof for a uint64-sized tree is longer than this; longer input is rejected before any
#: hashing so a hostile proof cannot make the verifier do unbounded work.
MAX_PROOF_LENGTH = 128

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"

_HashFn = Callable[..., Any]  # a hashlib-style constructor: data -> object with .digest()


class ProofError(ValueError):
    """Any invalid Merkle input or failed proof verification.

    A ``ValueError`` so generic input-validation handlers catch it too; one type for every
    failure so that verifiers cannot be crashed (or fooled) by an unexpected exception type.
    """


class MissingNodeError(ProofError):
    """A :class:`NodeSource` lacks (or holds a malformed) perfect-subtree hash it must have.

    Distinct from a proof failure: it means the *store* is incomplete or corrupt, which an operator
    must look at, not that a client sent a bad proof.
    """


class HashAlgorithm(enum.Enum):
    """The tree's hash function (RFC 9162 §2.1 leaves it a parameter of the log).

    SHA-256 is the RFC 6962/9162 default and what every CT tool expects; SHA3-256 is offered for
    deployments that want a non-Merkle-Damgard hash. The enum value is the ``hashlib`` name and the
    ``hash_algorithm`` string in proof JSON.
    """

    SHA256 = "sha256"
    SHA3_256 = "sha3_256"

    @property
    def digest_size(self) -> int:
        """Length in bytes of every leaf, node and root hash of this algorithm."""
        return _IMPLS[self].digest_size

    def digest(self, data: bytes) -> bytes:
        """Plain ``HASH(data)`` of this algorithm (no Merkle prefix)."""
        return bytes(_IMPLS[self].long(data).digest())


def _builtin_sha256() -> _HashFn:
    """CPython's own SHA-256 (``_sha2`` from 3.12, ``_sha256`` before), else ``hashlib.sha256``.

    Why: with OpenSSL 3 every ``hashlib.sha256(...)`` call pays a fixed EVP set-up cost that
    dominates a 65-byte node hash (measured here ~1.1 us vs ~0.6-0.9 us for the built-in), and a
    log append is two such tiny hashes. For long messages OpenSSL's SHA-NI code is far faster, so
    only short messages use the built-in. Same function, same bytes: only the speed differs.
    """
    reference = hashlib.sha256(b"abc").digest()
    for module_name in ("_sha2", "_sha256"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        constructor = getattr(module, "sha256", None)
        if constructor is not None and constructor(b"abc").digest() == reference:
            return cast(_HashFn, constructor)
    return hashlib.sha256


@dataclass(frozen=True, slots=True)
class _Impl:
    """Concrete hash constructors of one algorithm, picked by message length for speed."""

    digest_size: int
    node: _HashFn  # for 0x01 || left || right
    short: _HashFn  # for leaves of at most short_limit data bytes
    long: _HashFn  # for longer leaves and anything else
    short_limit: int

    def leaf(self, data: bytes) -> bytes:
        constructor = self.short if len(data) <= self.short_limit else self.long
        return bytes(constructor(_LEAF_PREFIX + data).digest())


_FAST_SHA256 = _builtin_sha256()
_IMPLS: dict[HashAlgorithm, _Impl] = {
    # 0x00 || data fits two SHA-256 blocks (with padding) up to 118 data bytes: below that the
    # built-in wins, above it OpenSSL does.
    HashAlgorithm.SHA256: _Impl(32, _FAST_SHA256, _FAST_SHA256, hashlib.sha256, 118),
    # CPython's built-in SHA3 is slower than OpenSSL's at every size.
    HashAlgorithm.SHA3_256: _Impl(32, hashlib.sha3_256, hashlib.sha3_256, hashlib.sha3_256, -1),
}

SHA256 = HashAlgorithm.SHA256
SHA3_256 = HashAlgorithm.SHA3_256


# --------------------------------------------------------------------------- input validation


def _alg(alg: object) -> HashAlgorithm:
    """Accept a :class:`HashAlgorithm` or its string value (as found in JSON); else ProofError."""
    if isinstance(alg, HashAlgorithm):
        return alg
    if isinstance(alg, str):
        try:
            return HashAlgorithm(alg)
        except ValueError:
            pass
    raise ProofError(f"unknown hash algorithm {alg!r}; expected one of {[a.value for a in HashAlgorithm]}")


def _int(name: str, value: object, minimum: int = 0) -> int:
    """A non-bool integer in ``[minimum, MAX_TREE_SIZE]`` (RFC 9162 sizes/indices are uint64)."""
    if isinstance(value, bool):
        raise ProofError(f"{name} must be an integer, got bool")
    try:
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise ProofError(f"{name} must be an integer, got {type(value).__name__}") from None
    if number < minimum:
        raise ProofError(f"{name} must be >= {minimum}, got {number}")
    if number > MAX_TREE_SIZE:
        raise ProofError(f"{name} must fit in uint64 (RFC 9162), got {number}")
    return number


def _digest(name: str, value: object, size: int) -> bytes:
    """A bytes-like hash of exactly the algorithm's digest size, returned as ``bytes``."""
    if not isinstance(value, bytes | bytearray):
        raise ProofError(f"{name} must be bytes, got {type(value).__name__}")
    if len(value) != size:
        raise ProofError(f"{name} must be {size} bytes, got {len(value)}")
    return bytes(value)


def _path(name: str, proof: object, size: int) -> list[bytes]:
    """A proof: a list/tuple of digests, at most :data:`MAX_PROOF_LENGTH` long."""
    if isinstance(proof, str | bytes | bytearray | memoryview) or not isinstance(proof, Sequence):
        raise ProofError(f"{name} must be a sequence of hashes, got {type(proof).__name__}")
    if len(proof) > MAX_PROOF_LENGTH:
        raise ProofError(f"{name} has {len(proof)} hashes; no valid proof has more than {MAX_PROOF_LENGTH}")
    # The common case (exact bytes of the right length) skips building a per-element error label.
    checked = []
    for i, p in enumerate(proof):
        checked.append(p if type(p) is bytes and len(p) == size else _digest(f"{name}[{i}]", p, size))
    return checked


def _split(n: int) -> int:
    """RFC 9162's ``k``: the largest power of two strictly smaller than ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


# --------------------------------------------------------------------------- hashing primitives


def empty_root(alg: HashAlgorithm = SHA256) -> bytes:
    """``MTH({}) = HASH()``: the root of the empty tree (RFC 9162 §2.1.1)."""
    return bytes(_IMPLS[_alg(alg)].long(b"").digest())


def leaf_hash(data: bytes, alg: HashAlgorithm = SHA256) -> bytes:
    """``HASH(0x00 || data)``: the hash of one leaf.

    The 0x00 prefix is what makes a leaf hash distinguishable from an interior node hash.
    """
    impl = _IMPLS[_alg(alg)]
    try:
        return impl.leaf(data)
    except TypeError:
        raise ProofError(f"leaf data must be bytes, got {type(data).__name__}") from None


def node_hash(left: bytes, right: bytes, alg: HashAlgorithm = SHA256) -> bytes:
    """``HASH(0x01 || left || right)``: the hash of an interior node.

    Both children must be digests of the algorithm; accepting other lengths would let two different
    (left, right) splits of the same byte string produce the same node.
    """
    impl = _IMPLS[_alg(alg)]
    left_b = _digest("left", left, impl.digest_size)
    right_b = _digest("right", right, impl.digest_size)
    return bytes(impl.node(_NODE_PREFIX + left_b + right_b).digest())


def _leaf_hashes(leaves: Iterable[bytes], impl: _Impl) -> list[bytes]:
    """``[HASH(0x00 || d) for d in leaves]`` with the constructors bound to locals (hot path)."""
    short, long, limit, zero = impl.short, impl.long, impl.short_limit, _LEAF_PREFIX
    try:
        return [(short if len(d) <= limit else long)(zero + d).digest() for d in leaves]
    except TypeError as exc:
        raise ProofError(f"every leaf must be bytes ({exc})") from None


# --------------------------------------------------------------------------- roots over lists


def root_from_leaf_hashes(hashes: Sequence[bytes], alg: HashAlgorithm = SHA256) -> bytes:
    """MTH over already-hashed leaves: the producers' hot path when sealing a batch.

    Iterative, level by level: pair up neighbours, promote an unpaired last node unchanged to the
    next level. That is exactly RFC 9162's recursive split (the left part is always the largest
    power of two), just evaluated bottom-up with no recursion and one list per level.
    """
    impl = _IMPLS[_alg(alg)]
    size = impl.digest_size
    if isinstance(hashes, str | bytes | bytearray | memoryview):
        raise ProofError("hashes must be a sequence of leaf hashes, not a single bytes/str object")
    try:
        level = list(hashes)
        if len(level) <= 1:
            return _digest("hashes[0]", level[0], size) if level else empty_root(alg)
        # Lengths are checked in C (map); a non-bytes element fails the concatenation below with
        # TypeError, because with n >= 2 every node is concatenated at least once.
        if set(map(len, level)) != {size}:
            raise ProofError(f"every leaf hash must be {size} bytes long")
        node = impl.node
        one = _NODE_PREFIX
        while len(level) > 1:
            pairs = iter(level)
            nxt = [node(one + a + b).digest() for a, b in zip(pairs, pairs, strict=False)]
            if len(level) & 1:
                nxt.append(level[-1])
            level = nxt
        return bytes(level[0])
    except TypeError as exc:
        raise ProofError(f"hashes must be a sequence of {size}-byte hashes ({exc})") from None


def root(leaves: Iterable[bytes], alg: HashAlgorithm = SHA256) -> bytes:
    """MTH over raw leaf *data* (RFC 9162 §2.1.1); each leaf is hashed as ``HASH(0x00 || d)``.

    A producer's batch of 32-byte event hashes is leaf *data* here: they get the leaf prefix like
    any other entry, so the seal is a standard CT tree over the events.
    """
    algorithm = _alg(alg)
    if isinstance(leaves, str | bytes | bytearray | memoryview):
        raise ProofError("leaves must be a sequence of byte strings, not a single bytes/str object")
    return root_from_leaf_hashes(_leaf_hashes(leaves, _IMPLS[algorithm]), algorithm)


# --------------------------------------------------------------------------- node sources/stores


@runtime_checkable
class NodeSource(Protocol):
    """Read access to perfect-subtree hashes: all that proof generation needs.

    ``get_node(level, index)`` returns the hash of leaves ``[index << level, (index + 1) << level)``
    (level 0 = the leaf hashes themselves), or ``None`` if the store does not have it.
    """

    def get_node(self, level: int, index: int) -> bytes | None:
        """Hash of the perfect subtree ``(level, index)``, or ``None`` if absent."""
        ...


@runtime_checkable
class NodeStore(NodeSource, Protocol):
    """A :class:`NodeSource` that can also be written: the whole storage contract of a log.

    Writes arrive in append order (per level, ``index`` grows by one) and a node, once written,
    never changes -- which is what lets a RocksDB backend key nodes by ``(level, index)`` with
    write-once semantics and batch them freely. Rewriting a node with identical bytes must be
    accepted (a retried append does that). Persisting the log *size* is the backend's job
    (write it in the same batch as the nodes); :class:`MerkleLog` reopens from ``(store, size)``.
    """

    def put_node(self, level: int, index: int, digest: bytes) -> None:
        """Store the hash of the perfect subtree ``(level, index)``."""
        ...


class MemoryNodeStore:
    """In-memory :class:`NodeStore`: one contiguous ``bytearray`` per level.

    Contiguous buffers cost ``digest_size`` bytes per node (a ``list[bytes]`` costs ~2.5x that in
    object overhead), so a 10 M-leaf tree (20 M nodes) fits in ~640 MB. Nodes are write-once:
    rewriting a node with a different hash, or leaving a gap, raises :class:`ProofError` because
    either would mean the log's history changed.
    """

    __slots__ = ("_digest_size", "_levels")

    def __init__(self, digest_size: int = 32) -> None:
        self._digest_size = _int("digest_size", digest_size, minimum=1)
        self._levels: list[bytearray] = []

    @property
    def digest_size(self) -> int:
        """Length of every stored hash."""
        return self._digest_size

    def count(self, level: int) -> int:
        """Number of perfect subtrees stored at ``level``."""
        level = _int("level", level)
        if level >= len(self._levels):
            return 0
        return len(self._levels[level]) // self._digest_size

    def get_node(self, level: int, index: int) -> bytes | None:
        """See :meth:`NodeSource.get_node`."""
        if type(level) is not int or type(index) is not int or level < 0 or index < 0:
            level = _int("level", level)
            index = _int("index", index)
        if level >= len(self._levels):
            return None
        buf = self._levels[level]
        size = self._digest_size
        start = index * size
        if start + size > len(buf):
            return None
        return bytes(buf[start : start + size])

    def put_node(self, level: int, index: int, digest: bytes) -> None:
        """See :meth:`NodeStore.put_node`."""
        size = self._digest_size
        level = _int("level", level)
        index = _int("index", index)
        digest = _digest("digest", digest, size)
        levels = self._levels
        if level > len(levels):
            raise ProofError(f"cannot store level {level} before level {level - 1} exists")
        if level == len(levels):
            levels.append(bytearray())
        buf = levels[level]
        have = len(buf) // size
        if index == have:
            buf += digest
        elif index > have:
            raise ProofError(f"gap at level {level}: storing index {index} but only {have} nodes exist")
        elif buf[index * size : (index + 1) * size] != digest:
            raise ProofError(f"node (level={level}, index={index}) is write-once and already differs")

    @classmethod
    def from_leaf_hashes(cls, hashes: Sequence[bytes], alg: HashAlgorithm = SHA256) -> MemoryNodeStore:
        """Every perfect subtree over ``hashes``, built level by level (``n - 1`` node hashes).

        Used to serve proofs over a plain list. Odd trailing nodes are *not* promoted here because
        a store holds only complete subtrees; promotion happens when ranges are folded.
        """
        impl = _IMPLS[_alg(alg)]
        size = impl.digest_size
        if isinstance(hashes, str | bytes | bytearray | memoryview) or not isinstance(hashes, Sequence):
            raise ProofError(f"hashes must be a sequence of leaf hashes, got {type(hashes).__name__}")
        store = cls(size)
        level = [_digest(f"hashes[{i}]", h, size) for i, h in enumerate(hashes)]
        node = impl.node
        one = _NODE_PREFIX
        while level:
            store._levels.append(bytearray(b"".join(level)))
            pairs = iter(level)
            level = [node(one + a + b).digest() for a, b in zip(pairs, pairs, strict=False)]
        return store


def _fetch(source: NodeSource, level: int, index: int, size: int) -> bytes:
    digest = source.get_node(level, index)
    if digest is None:
        raise MissingNodeError(f"node store has no hash for perfect subtree (level={level}, index={index})")
    if not isinstance(digest, bytes | bytearray) or len(digest) != size:
        raise MissingNodeError(f"node store returned a malformed hash for (level={level}, index={index})")
    return bytes(digest)


def _range_hash(source: NodeSource, start: int, end: int, impl: _Impl) -> bytes:
    """MTH(D[start:end]) for a range RFC 9162's recursion can produce (``start < end``).

    Such ranges start at a multiple of a power of two >= their length, so they decompose, largest
    first, into aligned perfect subtrees; MTH is the right fold of those (each split takes the
    largest power of two as the left part). At most ``log2(end - start) + 1`` lookups.
    """
    size = impl.digest_size
    nodes: list[bytes] = []
    pos = start
    remaining = end - start
    while remaining:
        level = remaining.bit_length() - 1
        nodes.append(_fetch(source, level, pos >> level, size))
        pos += 1 << level
        remaining -= 1 << level
    acc = nodes.pop()
    node = impl.node
    while nodes:
        acc = node(_NODE_PREFIX + nodes.pop() + acc).digest()
    return bytes(acc)


def root_from_nodes(source: NodeSource, tree_size: int, alg: HashAlgorithm = SHA256) -> bytes:
    """The root of the first ``tree_size`` leaves of a store: ``O(log n)`` lookups, any past size."""
    algorithm = _alg(alg)
    tree_size = _int("tree_size", tree_size)
    if tree_size == 0:
        return empty_root(algorithm)
    return _range_hash(source, 0, tree_size, _IMPLS[algorithm])


def inclusion_proof_from_nodes(
    source: NodeSource, index: int, tree_size: int, alg: HashAlgorithm = SHA256
) -> list[bytes]:
    """RFC 9162 §2.1.3.1 ``PATH(index, D[tree_size])`` from perfect-subtree hashes.

    The recursion walks from the root towards the leaf; each step contributes the sibling range's
    hash. Every sibling except at most one is itself a perfect subtree (one lookup); the single
    exception is folded from ``O(log n)`` lookups. Collected top-down, returned leaf-first.
    """
    impl = _IMPLS[_alg(alg)]
    index = _int("index", index)
    tree_size = _int("tree_size", tree_size)
    if index >= tree_size:
        raise ProofError(f"leaf index {index} is not in a tree of size {tree_size}")
    path: list[bytes] = []
    lo, hi = 0, tree_size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            path.append(_range_hash(source, lo + k, hi, impl))
            hi = lo + k
        else:
            path.append(_range_hash(source, lo, lo + k, impl))
            lo += k
    path.reverse()
    return path


def consistency_proof_from_nodes(
    source: NodeSource, size1: int, size2: int, alg: HashAlgorithm = SHA256
) -> list[bytes]:
    """RFC 9162 §2.1.4.1 ``PROOF(size1, D[size2]) = SUBPROOF(size1, D[size2], true)``.

    ``size1 == size2`` gives the empty proof. ``size1 == 0`` is rejected: consistency with an empty
    tree proves nothing (everything is consistent with it), so asking for it is a caller bug.
    """
    impl = _IMPLS[_alg(alg)]
    size1 = _int("size1", size1)
    size2 = _int("size2", size2)
    if size1 == 0:
        raise ProofError("size1 must be >= 1: a consistency proof from the empty tree is meaningless")
    if size1 > size2:
        raise ProofError(f"size1 ({size1}) must not exceed size2 ({size2})")
    path: list[bytes] = []
    lo, hi = 0, size2  # current subtree D[lo:hi]; size1 stays an absolute boundary inside it
    whole = True  # the RFC's b: is D[0:size1] still one complete node the verifier already knows?
    while size1 != hi:
        k = _split(hi - lo)
        if size1 - lo <= k:
            path.append(_range_hash(source, lo + k, hi, impl))
            hi = lo + k
        else:
            path.append(_range_hash(source, lo, lo + k, impl))
            lo += k
            whole = False
    if not whole:
        path.append(_range_hash(source, lo, hi, impl))  # SUBPROOF(m, D[m], false) = {MTH(D[m])}
    path.reverse()
    return path


# --------------------------------------------------------------------------- proofs over lists


def _list_store(
    leaves: Sequence[bytes], tree_size: int | None, algorithm: HashAlgorithm, hashed: bool
) -> tuple[MemoryNodeStore, int]:
    if isinstance(leaves, str | bytes | bytearray | memoryview) or not isinstance(leaves, Sequence):
        raise ProofError(f"leaves must be a sequence of byte strings, got {type(leaves).__name__}")
    n = len(leaves) if tree_size is None else _int("tree_size", tree_size)
    if n > len(leaves):
        raise ProofError(f"tree_size {n} exceeds the {len(leaves)} leaves given")
    items = leaves[:n]
    hashes = list(items) if hashed else _leaf_hashes(items, _IMPLS[algorithm])
    return MemoryNodeStore.from_leaf_hashes(hashes, algorithm), n


def inclusion_proof(
    index: int,
    leaves: Sequence[bytes],
    *,
    tree_size: int | None = None,
    alg: HashAlgorithm = SHA256,
    hashed: bool = False,
) -> list[bytes]:
    """RFC 9162 §2.1.3.1 inclusion proof for leaf ``index`` in the tree of the first ``tree_size``
    (default: all) of ``leaves`` -- raw leaf data, or leaf hashes if ``hashed=True``.

    ``O(n)``: it hashes the whole list. Logs serving many proofs should use :class:`MerkleLog`.
    """
    algorithm = _alg(alg)
    store, n = _list_store(leaves, tree_size, algorithm, hashed)
    return inclusion_proof_from_nodes(store, index, n, algorithm)


def consistency_proof(
    size1: int,
    size2: int,
    leaves: Sequence[bytes],
    *,
    alg: HashAlgorithm = SHA256,
    hashed: bool = False,
) -> list[bytes]:
    """RFC 9162 §2.1.4.1 consistency proof between the trees of the first ``size1`` and ``size2``
    of ``leaves`` (raw data, or leaf hashes if ``hashed=True``). ``O(n)``; see :class:`MerkleLog`.
    """
    algorithm = _alg(alg)
    size1 = _int("size1", size1)
    size2 = _int("size2", size2)
    store, n = _list_store(leaves, size2, algorithm, hashed)
    return consistency_proof_from_nodes(store, size1, n, algorithm)


# --------------------------------------------------------------------------- verification


def verify_inclusion(
    leaf_hash: bytes,
    index: int,
    tree_size: int,
    proof: Sequence[bytes],
    root: bytes,
    alg: HashAlgorithm = SHA256,
) -> None:
    """Check that ``leaf_hash`` is leaf ``index`` of the tree of ``tree_size`` whose root is ``root``.

    Exactly the RFC 9162 §2.1.3.2 algorithm (step numbers in the comments). Returns ``None`` on
    success and raises :class:`ProofError` saying which check failed otherwise. As in the RFC,
    ``tree_size`` is authenticated only through ``root``: take both from the same signed tree head.
    """
    impl = _IMPLS[_alg(alg)]
    size = impl.digest_size
    r = _digest("leaf_hash", leaf_hash, size)
    index = _int("index", index)
    tree_size = _int("tree_size", tree_size)
    path = _path("proof", proof, size)
    expected = _digest("root", root, size)
    # 1. leaf_index >= tree_size fails (this also rejects every proof against the empty tree).
    if index >= tree_size:
        raise ProofError(f"leaf index {index} is not in a tree of size {tree_size}")
    node = impl.node
    one = _NODE_PREFIX
    # 2.-3.
    fn, sn = index, tree_size - 1
    # 4.
    for p in path:
        if sn == 0:  # a.
            raise ProofError(f"inclusion proof too long: {len(path)} hashes for leaf {index} of tree size {tree_size}")
        if fn & 1 or fn == sn:  # b.
            r = node(one + p + r).digest()  # i.
            if not fn & 1:  # ii.
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node(one + r + p).digest()
        fn >>= 1  # c.
        sn >>= 1
    # 5.
    if sn != 0:
        raise ProofError(f"inclusion proof too short: {len(path)} hashes for leaf {index} of tree size {tree_size}")
    if not hmac.compare_digest(r, expected):
        raise ProofError(f"inclusion proof for leaf {index} of tree size {tree_size} does not match the root")


def verify_consistency(
    size1: int,
    size2: int,
    root1: bytes,
    root2: bytes,
    proof: Sequence[bytes],
    alg: HashAlgorithm = SHA256,
) -> None:
    """Check that the tree ``size2``/``root2`` is an append-only extension of ``size1``/``root1``.

    For ``0 < size1 < size2`` exactly the RFC 9162 §2.1.4.2 algorithm (step numbers in comments).
    ``size1 == size2`` is accepted only with an empty proof and equal roots. ``size1 == 0`` is
    rejected: every tree extends the empty one, so such a "proof" would check nothing.
    """
    impl = _IMPLS[_alg(alg)]
    size = impl.digest_size
    size1 = _int("size1", size1)
    size2 = _int("size2", size2)
    first_hash = _digest("root1", root1, size)
    second_hash = _digest("root2", root2, size)
    path = _path("proof", proof, size)
    if size1 == 0:
        raise ProofError("size1 must be >= 1: a consistency proof from the empty tree is meaningless")
    if size1 > size2:
        raise ProofError(f"size1 ({size1}) is larger than size2 ({size2}): trees only grow")
    if size1 == size2:
        if path:
            raise ProofError(f"sizes are equal ({size1}) so the proof must be empty, got {len(path)} hashes")
        if not hmac.compare_digest(first_hash, second_hash):
            raise ProofError(f"trees of equal size {size1} have different roots")
        return
    # 1.
    if not path:
        raise ProofError(f"empty consistency proof between sizes {size1} and {size2}")
    # 2.
    if size1 & (size1 - 1) == 0:
        path.insert(0, first_hash)
    # 3.
    fn, sn = size1 - 1, size2 - 1
    # 4.
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # 5.
    fr = sr = path[0]
    node = impl.node
    one = _NODE_PREFIX
    # 6.
    for c in path[1:]:
        if sn == 0:  # a.
            raise ProofError(f"consistency proof between sizes {size1} and {size2} is too long")
        if fn & 1 or fn == sn:  # b.
            fr = node(one + c + fr).digest()  # i.
            sr = node(one + c + sr).digest()  # ii.
            if not fn & 1:  # iii.
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node(one + sr + c).digest()  # (otherwise) i.
        fn >>= 1  # c.
        sn >>= 1
    # 7.
    if sn != 0:
        raise ProofError(f"consistency proof between sizes {size1} and {size2} is too short")
    if not hmac.compare_digest(fr, first_hash):
        raise ProofError(f"consistency proof does not reproduce root1 of tree size {size1}")
    if not hmac.compare_digest(sr, second_hash):
        raise ProofError(f"consistency proof does not reproduce root2 of tree size {size2}")


# --------------------------------------------------------------------------- the append-only log


class MerkleLog:
    """Append-only RFC 9162 tree over a :class:`NodeStore`, with proofs for any past size.

    Keeps the *compact range* -- the stack of perfect-subtree roots covering ``[0, size)``, one per
    set bit of ``size`` -- so ``append`` is amortised O(1): one leaf hash plus on average one node
    hash and two node writes, and ``root()`` folds at most ``log2(size)`` frontier hashes without
    touching the store. Every perfect subtree is written when it completes, so roots and proofs
    for any ``n <= size`` cost ``O(log n)`` lookups.

    Not thread-safe, and it must be the only writer of its store (as a ledger consuming one
    partition is).
    """

    __slots__ = ("_alg", "_buffers", "_frontier", "_impl", "_size", "_store")

    def __init__(self, alg: HashAlgorithm = SHA256, *, store: NodeStore | None = None, size: int = 0) -> None:
        """A new empty log, or -- with ``store`` and ``size`` -- the log a backend persisted.

        Reopening reads the ``popcount(size)`` frontier nodes from the store, so a RocksDB ledger
        restarts in ``O(log n)`` without rehashing anything.
        """
        self._alg = _alg(alg)
        self._impl = _IMPLS[self._alg]
        digest_size = self._impl.digest_size
        self._store: NodeStore = MemoryNodeStore(digest_size) if store is None else store
        self._size = _int("size", size)
        self._frontier: list[bytes] = []
        for level in range(self._size.bit_length() - 1, -1, -1):
            if self._size >> level & 1:
                self._frontier.append(_fetch(self._store, level, (self._size >> level) - 1, digest_size))
        self._buffers = self._direct_buffers()

    def _direct_buffers(self) -> list[bytearray] | None:
        """The level buffers of our own :class:`MemoryNodeStore`, if appends may write them directly.

        Why: a ``put_node`` call per node is ~25% of an append. Writing the buffers in place is
        only correct when the store holds exactly the nodes of a tree of ``size`` leaves, so any
        other store (or a store ahead of ``size``) goes through ``put_node`` and its checks.
        """
        store = self._store
        if type(store) is not MemoryNodeStore or store.digest_size != self._impl.digest_size:
            return None
        buffers = store._levels
        if not buffers:
            buffers.append(bytearray())
        if len(buffers) < self._size.bit_length():
            return None
        for level in range(len(buffers)):
            if store.count(level) != self._size >> level:
                return None
        return buffers

    @property
    def alg(self) -> HashAlgorithm:
        """The tree's hash algorithm."""
        return self._alg

    @property
    def store(self) -> NodeStore:
        """The backing node store (e.g. to persist or inspect it)."""
        return self._store

    @property
    def size(self) -> int:
        """Number of leaves appended so far."""
        return self._size

    def __len__(self) -> int:
        return self._size

    def append(self, leaf_data: bytes) -> int:
        """Append one leaf (raw data, hashed as ``HASH(0x00 || data)``); returns its index."""
        impl = self._impl
        try:
            constructor = impl.short if len(leaf_data) <= impl.short_limit else impl.long
            digest = constructor(_LEAF_PREFIX + leaf_data).digest()
        except TypeError:
            raise ProofError(f"leaf data must be bytes, got {type(leaf_data).__name__}") from None
        return self._push(digest)

    def append_hash(self, leaf_hash: bytes) -> int:
        """Append an already-computed leaf hash; returns its index."""
        if type(leaf_hash) is not bytes or len(leaf_hash) != self._impl.digest_size:
            leaf_hash = _digest("leaf_hash", leaf_hash, self._impl.digest_size)
        return self._push(leaf_hash)

    def _push(self, h: bytes) -> int:
        buffers = self._buffers
        if buffers is None:
            return self._push_to_store(h)
        index = i = self._size
        frontier = self._frontier
        buffers[0] += h
        if i & 1:
            # Each trailing 1-bit of the old size is a completed left sibling on the stack: merge.
            node = self._impl.node
            level = 0
            while i & 1:
                h = node(_NODE_PREFIX + frontier.pop() + h).digest()
                i >>= 1
                level += 1
                if level < len(buffers):
                    buffers[level] += h
                else:
                    buffers.append(bytearray(h))
        frontier.append(h)
        self._size = index + 1
        return index

    def _push_to_store(self, h: bytes) -> int:
        """The same append through ``put_node``, computing every node before the first write.

        A backend's ``put_node`` may fail (disk full, write-once conflict); the log's own state
        (frontier, size) changes only after all writes succeeded, so a failed append can simply be
        retried and nodes already written are rewritten with identical bytes.
        """
        index = i = self._size
        frontier = self._frontier
        writes = [(0, index, h)]
        node = self._impl.node
        merged = 0
        while i & 1:
            merged += 1
            h = node(_NODE_PREFIX + frontier[-merged] + h).digest()
            i >>= 1
            writes.append((merged, i, h))
        put = self._store.put_node
        for level, position, digest in writes:
            put(level, position, digest)
        if merged:
            del frontier[-merged:]
        frontier.append(h)
        self._size = index + 1
        return index

    def _check_size(self, name: str, value: int | None, minimum: int) -> int:
        if value is None:
            return self._size
        number = _int(name, value, minimum)
        if number > self._size:
            raise ProofError(f"{name} {number} exceeds the log size {self._size}")
        return number

    def root(self, size: int | None = None) -> bytes:
        """Root of the current tree, or of the tree of the first ``size`` leaves."""
        tree_size = self._check_size("size", size, 0)
        if tree_size != self._size:
            return root_from_nodes(self._store, tree_size, self._alg)
        frontier = self._frontier
        if not frontier:
            return empty_root(self._alg)
        node = self._impl.node
        acc = frontier[-1]
        for i in range(len(frontier) - 2, -1, -1):
            acc = node(_NODE_PREFIX + frontier[i] + acc).digest()
        return bytes(acc)

    def leaf_hash(self, index: int) -> bytes:
        """The stored hash of leaf ``index``."""
        index = _int("index", index)
        if index >= self._size:
            raise ProofError(f"leaf index {index} is not in a log of size {self._size}")
        return _fetch(self._store, 0, index, self._impl.digest_size)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """Inclusion proof of leaf ``index`` in the tree of the first ``size`` (default all) leaves."""
        tree_size = self._check_size("size", size, 1)
        return inclusion_proof_from_nodes(self._store, index, tree_size, self._alg)

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        """Consistency proof between the trees of sizes ``size1`` and ``size2`` (default: current)."""
        second = self._check_size("size2", size2, 0)
        return consistency_proof_from_nodes(self._store, size1, second, self._alg)


# --------------------------------------------------------------------------- proof objects / JSON


@dataclass(frozen=True, slots=True)
class InclusionProof:
    """An inclusion proof with its parameters (RFC 9162 ``InclusionProofDataV2`` fields).

    ``leaf_hash``/``root_hash`` are what the prover *claims*, for display and cross-checking; a
    verifier must supply its own (hash of the event it holds, root from a signed tree head) to
    :meth:`verify`.
    """

    leaf_index: int
    tree_size: int
    inclusion_path: tuple[bytes, ...]
    alg: HashAlgorithm = SHA256
    leaf_hash: bytes | None = None
    root_hash: bytes | None = None

    def __post_init__(self) -> None:
        alg = _alg(self.alg)
        size = alg.digest_size
        object.__setattr__(self, "alg", alg)
        object.__setattr__(self, "tree_size", _int("tree_size", self.tree_size, 1))
        object.__setattr__(self, "leaf_index", _int("leaf_index", self.leaf_index))
        if self.leaf_index >= self.tree_size:
            raise ProofError(f"leaf_index {self.leaf_index} is not in a tree of size {self.tree_size}")
        object.__setattr__(self, "inclusion_path", tuple(_path("inclusion_path", self.inclusion_path, size)))
        for name in ("leaf_hash", "root_hash"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _digest(name, value, size))

    def verify(self, *, leaf_hash: bytes, root_hash: bytes) -> None:
        """:func:`verify_inclusion` of this proof against a trusted leaf hash and root."""
        verify_inclusion(leaf_hash, self.leaf_index, self.tree_size, self.inclusion_path, root_hash, self.alg)


@dataclass(frozen=True, slots=True)
class ConsistencyProof:
    """A consistency proof with its parameters (RFC 9162 ``ConsistencyProofDataV2`` fields).

    ``first_hash``/``second_hash`` are the prover's claimed roots; :meth:`verify` takes trusted ones.
    """

    tree_size_1: int
    tree_size_2: int
    consistency_path: tuple[bytes, ...]
    alg: HashAlgorithm = SHA256
    first_hash: bytes | None = None
    second_hash: bytes | None = None

    def __post_init__(self) -> None:
        alg = _alg(self.alg)
        size = alg.digest_size
        object.__setattr__(self, "alg", alg)
        object.__setattr__(self, "tree_size_1", _int("tree_size_1", self.tree_size_1, 1))
        object.__setattr__(self, "tree_size_2", _int("tree_size_2", self.tree_size_2, 1))
        if self.tree_size_1 > self.tree_size_2:
            raise ProofError(f"tree_size_1 ({self.tree_size_1}) exceeds tree_size_2 ({self.tree_size_2})")
        path = tuple(_path("consistency_path", self.consistency_path, size))
        object.__setattr__(self, "consistency_path", path)
        for name in ("first_hash", "second_hash"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _digest(name, value, size))

    def verify(self, *, first_hash: bytes, second_hash: bytes) -> None:
        """:func:`verify_consistency` of this proof against two trusted roots."""
        verify_consistency(self.tree_size_1, self.tree_size_2, first_hash, second_hash, self.consistency_path, self.alg)


_JSON_VERSION = 1
_HEX = re.compile(r"[0-9a-fA-F]*", re.ASCII)
_INCLUSION_KEYS = {"leaf_index", "tree_size", "inclusion_path", "leaf_hash", "root_hash"}
_CONSISTENCY_KEYS = {"tree_size_1", "tree_size_2", "consistency_path", "first_hash", "second_hash"}
_COMMON_KEYS = {"version", "type", "hash_algorithm"}


def proof_to_json(proof: InclusionProof | ConsistencyProof, *, indent: int | None = None) -> str:
    """Serialise a proof for ``--json`` output: lowercase hex hashes, RFC 9162 field names.

    Self-describing (``type``, ``version``, ``hash_algorithm``) so an independent verifier in any
    language needs nothing else but the trusted roots.
    """
    doc: dict[str, Any] = {"version": _JSON_VERSION}
    if isinstance(proof, InclusionProof):
        doc["type"] = "inclusion"
        doc["hash_algorithm"] = proof.alg.value
        doc["leaf_index"] = proof.leaf_index
        doc["tree_size"] = proof.tree_size
        doc["inclusion_path"] = [h.hex() for h in proof.inclusion_path]
        optional = {"leaf_hash": proof.leaf_hash, "root_hash": proof.root_hash}
    elif isinstance(proof, ConsistencyProof):
        doc["type"] = "consistency"
        doc["hash_algorithm"] = proof.alg.value
        doc["tree_size_1"] = proof.tree_size_1
        doc["tree_size_2"] = proof.tree_size_2
        doc["consistency_path"] = [h.hex() for h in proof.consistency_path]
        optional = {"first_hash": proof.first_hash, "second_hash": proof.second_hash}
    else:
        raise ProofError(f"not a proof object: {type(proof).__name__}")
    for key, value in optional.items():
        if value is not None:
            doc[key] = value.hex()
    return json.dumps(doc, indent=indent, sort_keys=False)


def _json_hex(name: str, value: object, size: int) -> bytes:
    if not isinstance(value, str) or len(value) != 2 * size or not _HEX.fullmatch(value):
        raise ProofError(f"{name} must be {2 * size} hex characters")
    return bytes.fromhex(value)


def _json_path(name: str, value: object, size: int) -> tuple[bytes, ...]:
    if not isinstance(value, list):
        raise ProofError(f"{name} must be a JSON array of hex strings")
    if len(value) > MAX_PROOF_LENGTH:
        raise ProofError(f"{name} has {len(value)} hashes; no valid proof has more than {MAX_PROOF_LENGTH}")
    return tuple(_json_hex(f"{name}[{i}]", h, size) for i, h in enumerate(value))


def _json_int(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProofError(f"{name} must be a JSON integer")
    return _int(name, value)


def proof_from_json(data: str | bytes | Mapping[str, Any]) -> InclusionProof | ConsistencyProof:
    """Parse :func:`proof_to_json` output (text or an already-decoded object), strictly.

    Unknown keys, versions or algorithms, non-integer sizes and malformed hex are all rejected with
    :class:`ProofError`: a verifier should never guess at what a proof meant.
    """
    if isinstance(data, str | bytes | bytearray):
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError
            raise ProofError(f"proof is not valid JSON: {exc}") from None
    else:
        doc = data
    if not isinstance(doc, Mapping):
        raise ProofError("proof JSON must be an object")
    if type(doc.get("version")) is not int or doc.get("version") != _JSON_VERSION:
        raise ProofError(f"unsupported proof version {doc.get('version')!r}; expected {_JSON_VERSION}")
    alg = _alg(doc.get("hash_algorithm"))
    size = alg.digest_size
    kind = doc.get("type")
    if kind == "inclusion":
        allowed = _INCLUSION_KEYS
    elif kind == "consistency":
        allowed = _CONSISTENCY_KEYS
    else:
        raise ProofError(f"unknown proof type {kind!r}; expected 'inclusion' or 'consistency'")
    unknown = set(doc) - allowed - _COMMON_KEYS
    if unknown:
        raise ProofError(f"unknown keys in {kind} proof: {sorted(map(str, unknown))}")

    def optional(name: str) -> bytes | None:
        value = doc.get(name)
        return None if value is None else _json_hex(name, value, size)

    if kind == "inclusion":
        return InclusionProof(
            leaf_index=_json_int("leaf_index", doc.get("leaf_index")),
            tree_size=_json_int("tree_size", doc.get("tree_size")),
            inclusion_path=_json_path("inclusion_path", doc.get("inclusion_path"), size),
            alg=alg,
            leaf_hash=optional("leaf_hash"),
            root_hash=optional("root_hash"),
        )
    return ConsistencyProof(
        tree_size_1=_json_int("tree_size_1", doc.get("tree_size_1")),
        tree_size_2=_json_int("tree_size_2", doc.get("tree_size_2")),
        consistency_path=_json_path("consistency_path", doc.get("consistency_path"), size),
        alg=alg,
        first_hash=optional("first_hash"),
        second_hash=optional("second_hash"),
    )
