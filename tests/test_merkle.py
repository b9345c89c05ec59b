"""Tests for swarmlog.streams.merkle (RFC 9162 Merkle trees).

Three independent anchors, so the library cannot merely agree with itself:

* published known-answer vectors (SHA-256 / SHA3-256 of "", and the RFC 6962/9162 test vectors of
  the Certificate Transparency reference implementation: roots of sizes 1..8, inclusion and
  consistency proofs), written here as literals;
* a naive recursive transcription of RFC 9162 §2.1.1 / §2.1.3.1 / §2.1.4.1 below, which shares no
  code with the module (it hashes with hashlib directly);
* property tests (hypothesis) for every index / size, tampering, and hostile input.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swarmlog.streams import merkle as m

HashFn = Callable[[bytes], Any]
SHA256: HashFn = hashlib.sha256
SHA3: HashFn = hashlib.sha3_256

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------- naive reference


def _k(n: int) -> int:
    """Largest power of two strictly smaller than n (n >= 2), the slow obvious way."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def naive_mth(leaves: Sequence[bytes], h: HashFn = SHA256) -> bytes:
    n = len(leaves)
    if n == 0:
        return h(b"").digest()
    if n == 1:
        return h(b"\x00" + leaves[0]).digest()
    k = _k(n)
    return h(b"\x01" + naive_mth(leaves[:k], h) + naive_mth(leaves[k:], h)).digest()


def naive_path(index: int, leaves: Sequence[bytes], h: HashFn = SHA256) -> list[bytes]:
    n = len(leaves)
    if n == 1:
        return []
    k = _k(n)
    if index < k:
        return [*naive_path(index, leaves[:k], h), naive_mth(leaves[k:], h)]
    return [*naive_path(index - k, leaves[k:], h), naive_mth(leaves[:k], h)]


def naive_subproof(m_: int, leaves: Sequence[bytes], b: bool, h: HashFn = SHA256) -> list[bytes]:
    n = len(leaves)
    if m_ == n:
        return [] if b else [naive_mth(leaves, h)]
    k = _k(n)
    if m_ <= k:
        return [*naive_subproof(m_, leaves[:k], b, h), naive_mth(leaves[k:], h)]
    return [*naive_subproof(m_ - k, leaves[k:], False, h), naive_mth(leaves[:k], h)]


def naive_consistency(m_: int, leaves: Sequence[bytes], h: HashFn = SHA256) -> list[bytes]:
    return naive_subproof(m_, leaves, True, h)


def naive_directions(index: int, n: int) -> list[str]:
    """Bottom-up side of each sibling on the PATH of ``index`` in a tree of size ``n``."""
    if n == 1:
        return []
    k = _k(n)
    if index < k:
        return [*naive_directions(index, k), "R"]
    return [*naive_directions(index - k, n - k), "L"]


def h2b(*hexes: str) -> list[bytes]:
    return [bytes.fromhex(x) for x in hexes]


def flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def build_log(leaves: Sequence[bytes], alg: m.HashAlgorithm = m.SHA256) -> m.MerkleLog:
    log = m.MerkleLog(alg)
    for leaf in leaves:
        log.append(leaf)
    return log


# --------------------------------------------------------------------------- known answers

EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
EMPTY_SHA3_256 = "a7ffc6f8bf1ed76651c14756a061d662f580ff4de43b49fa82d80a4b80f8434a"

# RFC 6962 test data of the CT reference implementation (merkle_tree_test.cc; also in
# transparency-dev/merkle and trillian).
CT_LEAVES = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    b"\x50\x51\x52\x53\x54\x55\x56\x57",
    b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
]
CT_ROOTS = h2b(
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
)
# (0-based leaf index, tree size, audit path)
CT_INCLUSION = [
    (0, 1, []),
    (
        0,
        8,
        h2b(
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ),
    ),
    (
        5,
        8,
        h2b(
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ),
    ),
    (2, 3, h2b("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")),
    (
        1,
        5,
        h2b(
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ),
    ),
]
# (size1, size2, consistency path)
CT_CONSISTENCY = [
    (1, 1, []),
    (
        1,
        8,
        h2b(
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ),
    ),
    (
        6,
        8,
        h2b(
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ),
    ),
    (
        2,
        5,
        h2b(
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ),
    ),
    (
        6,
        7,
        h2b(
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ),
    ),
]


def test_empty_tree_root_is_hash_of_nothing() -> None:
    assert m.root([]).hex() == EMPTY_SHA256
    assert m.root_from_leaf_hashes([]).hex() == EMPTY_SHA256
    assert m.empty_root().hex() == EMPTY_SHA256
    assert m.MerkleLog().root().hex() == EMPTY_SHA256
    assert m.root([], m.SHA3_256).hex() == EMPTY_SHA3_256
    assert m.MerkleLog(m.SHA3_256).root().hex() == EMPTY_SHA3_256


def test_leaf_and_node_hash_known_answers() -> None:
    # HASH(0x00 || "") is the size-1 root of the CT vectors; HASH(0x01 || l || r) gives size 2.
    assert m.leaf_hash(b"") == CT_ROOTS[0]
    assert m.leaf_hash(b"").hex() == "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    assert m.node_hash(m.leaf_hash(b""), m.leaf_hash(b"\x00")) == CT_ROOTS[1]
    # Domain separation: the leaf and node prefixes are really there.
    assert m.leaf_hash(b"abc") == hashlib.sha256(b"\x00abc").digest() != hashlib.sha256(b"abc").digest()
    a, b = bytes(range(32)), bytes(range(32, 64))
    assert m.node_hash(a, b) == hashlib.sha256(b"\x01" + a + b).digest()
    assert m.node_hash(a, b, m.SHA3_256) == hashlib.sha3_256(b"\x01" + a + b).digest()
    assert m.leaf_hash(b"abc", m.SHA3_256) == hashlib.sha3_256(b"\x00abc").digest()
    assert m.HashAlgorithm.SHA256.digest(b"").hex() == EMPTY_SHA256


@pytest.mark.parametrize("length", [0, 1, 31, 32, 55, 56, 63, 64, 117, 118, 119, 120, 200, 1000, 5000])
def test_leaf_hash_is_sha256_at_every_length(length: int) -> None:
    # The module picks different SHA-256 implementations by message length; all must agree.
    data = bytes(i % 251 for i in range(length))
    assert m.leaf_hash(data) == hashlib.sha256(b"\x00" + data).digest()
    log = m.MerkleLog()
    log.append(data)
    assert log.leaf_hash(0) == log.root() == hashlib.sha256(b"\x00" + data).digest()


def test_ct_reference_roots() -> None:
    # The reference implementation written in this file must itself reproduce the published roots.
    assert [naive_mth(CT_LEAVES[:n]) for n in range(1, 9)] == CT_ROOTS
    log = m.MerkleLog()
    for n, leaf in enumerate(CT_LEAVES, start=1):
        log.append(leaf)
        assert m.root(CT_LEAVES[:n]) == CT_ROOTS[n - 1], n
        assert m.root_from_leaf_hashes([m.leaf_hash(x) for x in CT_LEAVES[:n]]) == CT_ROOTS[n - 1]
        assert log.root() == CT_ROOTS[n - 1]
    for n in range(1, 9):
        assert log.root(n) == CT_ROOTS[n - 1]


@pytest.mark.parametrize(("index", "size", "path"), CT_INCLUSION)
def test_ct_reference_inclusion_proofs(index: int, size: int, path: list[bytes]) -> None:
    log = build_log(CT_LEAVES)
    assert log.inclusion_proof(index, size) == path
    assert m.inclusion_proof(index, CT_LEAVES, tree_size=size) == path
    assert naive_path(index, CT_LEAVES[:size]) == path
    m.verify_inclusion(m.leaf_hash(CT_LEAVES[index]), index, size, path, CT_ROOTS[size - 1])


@pytest.mark.parametrize(("size1", "size2", "path"), CT_CONSISTENCY)
def test_ct_reference_consistency_proofs(size1: int, size2: int, path: list[bytes]) -> None:
    log = build_log(CT_LEAVES)
    assert log.consistency_proof(size1, size2) == path
    assert m.consistency_proof(size1, size2, CT_LEAVES) == path
    assert naive_consistency(size1, CT_LEAVES[:size2]) == path
    m.verify_consistency(size1, size2, CT_ROOTS[size1 - 1], CT_ROOTS[size2 - 1], path)


def test_not_a_duplicate_padding_tree() -> None:
    # Bitcoin-style "duplicate the odd node" would make [a, b, c] and [a, b, c, c] collide.
    a, b, c = b"a", b"b", b"c"
    assert m.root([a, b, c]) != m.root([a, b, c, c])
    la, lb, lc = (m.leaf_hash(x) for x in (a, b, c))
    assert m.root([a, b, c]) == m.node_hash(m.node_hash(la, lb), lc)


# --------------------------------------------------------------------------- exhaustive, small trees


def test_exhaustive_small_trees_match_the_rfc_recursion() -> None:
    leaves = [bytes([i]) * (i % 7) + bytes([i]) for i in range(40)]
    log = m.MerkleLog()
    for n in range(1, len(leaves) + 1):
        log.append(leaves[n - 1])
        prefix = leaves[:n]
        tree_root = naive_mth(prefix)
        assert log.root() == tree_root == m.root(prefix)
        for i in range(n):
            path = naive_path(i, prefix)
            assert log.inclusion_proof(i) == path, (i, n)
            m.verify_inclusion(m.leaf_hash(prefix[i]), i, n, path, tree_root)
        for size1 in range(1, n + 1):
            proof = naive_consistency(size1, prefix)
            assert log.consistency_proof(size1) == proof, (size1, n)
            m.verify_consistency(size1, n, naive_mth(leaves[:size1]), tree_root, proof)
    # The list-based API agrees with the log (spot check: it is O(n) per call).
    assert m.inclusion_proof(17, leaves) == log.inclusion_proof(17)
    hashes = [m.leaf_hash(x) for x in leaves]
    assert m.inclusion_proof(33, hashes, hashed=True, tree_size=35) == log.inclusion_proof(33, 35)
    assert m.consistency_proof(11, 29, hashes, hashed=True) == log.consistency_proof(11, 29)


# --------------------------------------------------------------------------- properties

leaf_lists = st.lists(st.binary(max_size=40), max_size=300)
unique_leaf_lists = st.lists(st.binary(max_size=12), min_size=1, max_size=300, unique=True)


@PROPERTY
@given(leaves=leaf_lists)
def test_iterative_root_equals_recursive_mth(leaves: list[bytes]) -> None:
    expected = naive_mth(leaves)
    assert m.root(leaves) == expected
    assert m.root_from_leaf_hashes([hashlib.sha256(b"\x00" + x).digest() for x in leaves]) == expected
    assert build_log(leaves).root() == expected


@PROPERTY
@given(leaves=leaf_lists.filter(bool), data=st.data())
def test_every_inclusion_proof_verifies(leaves: list[bytes], data: st.DataObject) -> None:
    n = len(leaves)
    log = build_log(leaves)
    tree_root = log.root()
    for i in range(n):
        m.verify_inclusion(m.leaf_hash(leaves[i]), i, n, log.inclusion_proof(i), tree_root)
    i = data.draw(st.integers(0, n - 1), label="index")
    assert log.inclusion_proof(i) == naive_path(i, leaves)


@PROPERTY
@given(leaves=leaf_lists.filter(bool), data=st.data())
def test_every_consistency_proof_verifies(leaves: list[bytes], data: st.DataObject) -> None:
    n = len(leaves)
    log = build_log(leaves)
    roots = [log.root(k) for k in range(n + 1)]
    for size1 in range(1, n + 1):
        m.verify_consistency(size1, n, roots[size1], roots[n], log.consistency_proof(size1))
    size2 = data.draw(st.integers(1, n), label="size2")
    size1 = data.draw(st.integers(1, size2), label="size1")
    proof = log.consistency_proof(size1, size2)
    assert proof == naive_consistency(size1, leaves[:size2])
    m.verify_consistency(size1, size2, roots[size1], roots[size2], proof)


@PROPERTY
@given(leaves=leaf_lists.filter(bool), data=st.data())
def test_historical_inclusion_proofs(leaves: list[bytes], data: st.DataObject) -> None:
    log = build_log(leaves)
    size = data.draw(st.integers(1, len(leaves)), label="size")
    i = data.draw(st.integers(0, size - 1), label="index")
    proof = log.inclusion_proof(i, size)
    assert proof == naive_path(i, leaves[:size])
    m.verify_inclusion(log.leaf_hash(i), i, size, proof, log.root(size))


def _inclusion_rejected(leaf: bytes, index: int, size: int, proof: list[bytes], tree_root: bytes) -> bool:
    try:
        m.verify_inclusion(leaf, index, size, proof, tree_root)
    except m.ProofError:
        return True
    return False


def _consistency_rejected(size1: int, size2: int, r1: bytes, r2: bytes, proof: list[bytes]) -> bool:
    try:
        m.verify_consistency(size1, size2, r1, r2, proof)
    except m.ProofError:
        return True
    return False


@PROPERTY
@given(leaves=unique_leaf_lists, data=st.data())
def test_tampered_inclusion_proofs_are_rejected(leaves: list[bytes], data: st.DataObject) -> None:
    n = len(leaves)
    log = build_log(leaves)
    i = data.draw(st.integers(0, n - 1), label="index")
    proof = log.inclusion_proof(i)
    leaf, tree_root = log.leaf_hash(i), log.root()
    m.verify_inclusion(leaf, i, n, proof, tree_root)
    junk = data.draw(st.binary(min_size=32, max_size=32), label="junk")

    if proof:
        k = data.draw(st.integers(0, len(proof) - 1), label="element")
        bit = data.draw(st.integers(0, 255), label="bit")
        bad = list(proof)
        bad[k] = flip(bad[k], bit)
        assert _inclusion_rejected(leaf, i, n, bad, tree_root)
        assert _inclusion_rejected(leaf, i, n, proof[:-1], tree_root)
        assert _inclusion_rejected(leaf, i, n, proof[1:], tree_root)
    assert _inclusion_rejected(leaf, i, n, [*proof, junk], tree_root)
    assert _inclusion_rejected(leaf, i, n, [junk, *proof], tree_root)
    assert _inclusion_rejected(leaf, i, n, [*proof, tree_root], tree_root)
    bit = data.draw(st.integers(0, 255), label="bit2")
    assert _inclusion_rejected(flip(leaf, bit), i, n, proof, tree_root)
    assert _inclusion_rejected(leaf, i, n, proof, flip(tree_root, bit))

    # Wrong index, same tree: the leaves are unique, so no other index holds this leaf.
    j = data.draw(st.integers(0, n + 5).filter(lambda x: x != i), label="wrong index")
    assert _inclusion_rejected(leaf, j, n, proof, tree_root)

    # Wrong size, with the honest root of the claimed size: accepted exactly when the honest proof
    # for that size is this very proof (same siblings), never otherwise.
    n2 = data.draw(st.integers(i + 1, n).filter(lambda x: x != n) if i + 1 < n else st.just(n), label="n2")
    if n2 != n:
        honest = log.inclusion_proof(i, n2)
        assert _inclusion_rejected(leaf, i, n2, proof, log.root(n2)) == (honest != proof)
        # Wrong size with the *same* root: RFC 9162 authenticates the size only through the root,
        # so this is rejected exactly when the left/right shape of the path changes.
        same_shape = naive_directions(i, n2) == naive_directions(i, n)
        assert _inclusion_rejected(leaf, i, n2, proof, tree_root) == (not same_shape)
    assert _inclusion_rejected(leaf, i, 0, proof, tree_root)


@PROPERTY
@given(leaves=unique_leaf_lists.filter(lambda x: len(x) >= 2), data=st.data())
def test_tampered_consistency_proofs_are_rejected(leaves: list[bytes], data: st.DataObject) -> None:
    n = len(leaves)
    log = build_log(leaves)
    size2 = data.draw(st.integers(2, n), label="size2")
    size1 = data.draw(st.integers(1, size2 - 1), label="size1")
    proof = log.consistency_proof(size1, size2)
    r1, r2 = log.root(size1), log.root(size2)
    m.verify_consistency(size1, size2, r1, r2, proof)
    assert proof, "0 < size1 < size2 always needs a non-empty proof"

    k = data.draw(st.integers(0, len(proof) - 1), label="element")
    bit = data.draw(st.integers(0, 255), label="bit")
    bad = list(proof)
    bad[k] = flip(bad[k], bit)
    assert _consistency_rejected(size1, size2, r1, r2, bad)
    assert _consistency_rejected(size1, size2, flip(r1, bit), r2, proof)
    assert _consistency_rejected(size1, size2, r1, flip(r2, bit), proof)
    assert _consistency_rejected(size1, size2, r2, r1, proof)
    assert _consistency_rejected(size1, size2, r1, r2, proof[:-1])
    assert _consistency_rejected(size1, size2, r1, r2, proof[1:])
    assert _consistency_rejected(size1, size2, r1, r2, [*proof, r1])
    assert _consistency_rejected(size1, size2, r1, r2, [r1, *proof])
    assert _consistency_rejected(size1, size2, r1, r2, [proof[0], *proof])
    assert _consistency_rejected(size1, size2, r1, r2, [])

    # Wrong sizes with the honest roots of the claimed sizes: accepted iff the honest proof for the
    # claimed sizes is this very proof.
    w2 = data.draw(st.integers(1, n), label="wrong size2")
    w1 = data.draw(st.integers(1, w2), label="wrong size1")
    if (w1, w2) != (size1, size2):
        honest = log.consistency_proof(w1, w2)
        assert _consistency_rejected(w1, w2, log.root(w1), log.root(w2), proof) == (honest != proof)
    assert _consistency_rejected(0, size2, r1, r2, proof)
    assert _consistency_rejected(size2, size1, r2, r1, proof)
    assert _consistency_rejected(size2 + 1, size2, r1, r2, proof)


@PROPERTY
@given(leaves=leaf_lists.filter(bool), data=st.data())
def test_merkle_log_prefix_roots_and_reopen(leaves: list[bytes], data: st.DataObject) -> None:
    log = m.MerkleLog()
    for n, leaf in enumerate(leaves, start=1):
        assert log.append(leaf) == n - 1
        if n % 7 == 0 or n == len(leaves):
            assert log.root() == m.root(leaves[:n])
    for n in range(len(leaves) + 1):
        assert log.root(n) == naive_mth(leaves[:n])
    # Reopen from the store at the persisted size, keep appending: same tree as never closing.
    cut = data.draw(st.integers(0, len(leaves)), label="cut")
    first = build_log(leaves[:cut])
    reopened = m.MerkleLog(store=first.store, size=cut)
    assert reopened.root() == first.root()
    for leaf in leaves[cut:]:
        reopened.append(leaf)
    assert reopened.root() == log.root()
    assert reopened.inclusion_proof(len(leaves) - 1) == log.inclusion_proof(len(leaves) - 1)


@PROPERTY
@given(leaves=leaf_lists.filter(bool), data=st.data())
def test_sha3_round_trip(leaves: list[bytes], data: st.DataObject) -> None:
    n = len(leaves)
    log = build_log(leaves, m.SHA3_256)
    tree_root = log.root()
    assert tree_root == naive_mth(leaves, SHA3) == m.root(leaves, m.SHA3_256)
    assert tree_root != m.root(leaves)
    i = data.draw(st.integers(0, n - 1), label="index")
    proof = log.inclusion_proof(i)
    assert proof == naive_path(i, leaves, SHA3)
    leaf = m.leaf_hash(leaves[i], m.SHA3_256)
    m.verify_inclusion(leaf, i, n, proof, tree_root, m.SHA3_256)
    if proof:
        with pytest.raises(m.ProofError):
            m.verify_inclusion(leaf, i, n, proof, tree_root)  # same bytes, wrong algorithm
    size1 = data.draw(st.integers(1, n), label="size1")
    cproof = log.consistency_proof(size1)
    assert cproof == naive_consistency(size1, leaves, SHA3)
    m.verify_consistency(size1, n, log.root(size1), tree_root, cproof, m.SHA3_256)
    parsed = m.proof_from_json(m.proof_to_json(m.InclusionProof(i, n, tuple(proof), m.SHA3_256)))
    assert isinstance(parsed, m.InclusionProof)
    assert parsed.alg is m.SHA3_256
    parsed.verify(leaf_hash=leaf, root_hash=tree_root)


# --------------------------------------------------------------------------- stores


class DictStore:
    """A NodeStore the way a key-value backend (RocksDB) would do it: a dict keyed (level, index)."""

    def __init__(self) -> None:
        self.nodes: dict[tuple[int, int], bytes] = {}
        self.reads = 0

    def get_node(self, level: int, index: int) -> bytes | None:
        self.reads += 1
        return self.nodes.get((level, index))

    def put_node(self, level: int, index: int, digest: bytes) -> None:
        assert self.nodes.setdefault((level, index), digest) == digest, "nodes are written once"


class FlakyStore(DictStore):
    """Fails every ``fail_every``-th write, like a backend hitting a transient I/O error."""

    def __init__(self, fail_every: int) -> None:
        super().__init__()
        self.fail_every = fail_every
        self.writes = 0

    def put_node(self, level: int, index: int, digest: bytes) -> None:
        self.writes += 1
        if self.writes % self.fail_every == 0:
            raise OSError("transient write failure")
        super().put_node(level, index, digest)


def test_external_store_gives_same_tree_and_log_n_reads() -> None:
    leaves = [i.to_bytes(4, "big") for i in range(1000)]
    store = DictStore()
    assert isinstance(store, m.NodeStore)
    external = m.MerkleLog(store=store)
    memory = build_log(leaves)
    for leaf in leaves:
        external.append(leaf)
    assert external.root() == memory.root() == naive_mth(leaves)
    assert len(store.nodes) == 2 * 1000 - bin(1000).count("1")  # every perfect subtree, once
    store.reads = 0
    proof = external.inclusion_proof(700, 999)
    assert proof == memory.inclusion_proof(700, 999)
    assert store.reads <= 2 * 10  # O(log n), not O(n)
    store.reads = 0
    assert external.consistency_proof(333, 999) == memory.consistency_proof(333, 999)
    assert store.reads <= 2 * 10
    reopened = m.MerkleLog(store=store, size=1000)
    assert reopened.root() == memory.root()
    reopened.append(b"more")
    memory.append(b"more")
    assert reopened.root() == memory.root()


def test_failed_append_leaves_the_log_unchanged_and_can_be_retried() -> None:
    leaves = [i.to_bytes(2, "big") for i in range(200)]
    log = m.MerkleLog(store=FlakyStore(fail_every=11))  # > the 8 writes of the largest append
    failures = 0
    for leaf in leaves:
        while True:
            before = (log.size, log.root())
            try:
                log.append(leaf)
                break
            except OSError:
                failures += 1
                assert (log.size, log.root()) == before
    assert failures > 20
    reference = build_log(leaves)
    assert log.root() == reference.root()
    assert log.inclusion_proof(123) == reference.inclusion_proof(123)
    assert log.consistency_proof(77) == reference.consistency_proof(77)


def test_missing_or_corrupt_nodes_are_reported() -> None:
    store = DictStore()
    log = m.MerkleLog(store=store)
    for i in range(10):
        log.append(bytes([i]))
    del store.nodes[(3, 0)]
    with pytest.raises(m.MissingNodeError):
        log.inclusion_proof(9)
    with pytest.raises(m.MissingNodeError):
        m.MerkleLog(store=store, size=10)
    store.nodes[(3, 0)] = b"short"
    with pytest.raises(m.MissingNodeError, match="malformed"):
        log.root(9)
    with pytest.raises(m.MissingNodeError):
        m.MerkleLog(size=5)  # a fresh in-memory store has nothing to reopen


def test_memory_store_is_write_once() -> None:
    store = m.MemoryNodeStore()
    log = m.MerkleLog(store=store)
    for i in range(8):
        log.append(bytes([i]))
    store.put_node(0, 3, log.leaf_hash(3))  # idempotent rewrite is fine
    with pytest.raises(m.ProofError, match="write-once"):
        store.put_node(0, 3, bytes(32))
    with pytest.raises(m.ProofError, match="gap"):
        store.put_node(0, 10, bytes(32))
    with pytest.raises(m.ProofError):
        store.put_node(9, 0, bytes(32))
    assert store.get_node(0, 8) is None
    assert store.get_node(7, 0) is None
    assert store.count(3) == 1
    assert store.count(4) == 0
    # Reopening at an older size must not silently rewrite history.
    old = m.MerkleLog(store=store, size=5)
    with pytest.raises(m.ProofError, match="write-once"):
        old.append(b"different")


def test_from_leaf_hashes_store_serves_proofs() -> None:
    hashes = [m.leaf_hash(bytes([i])) for i in range(13)]
    store = m.MemoryNodeStore.from_leaf_hashes(hashes)
    assert m.root_from_nodes(store, 13) == m.root_from_leaf_hashes(hashes)
    assert m.root_from_nodes(store, 0) == m.empty_root()
    assert m.inclusion_proof_from_nodes(store, 4, 11) == naive_path(4, [bytes([i]) for i in range(11)])
    assert m.consistency_proof_from_nodes(store, 3, 13) == naive_consistency(3, [bytes([i]) for i in range(13)])


# --------------------------------------------------------------------------- error cases

H = bytes(32)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: m.verify_inclusion(H, 0, 0, [], H), "not in a tree of size 0"),
        (lambda: m.verify_inclusion(H, 5, 5, [], H), "not in a tree of size 5"),
        (lambda: m.verify_inclusion(H, -1, 5, [], H), ">= 0"),
        (lambda: m.verify_inclusion(H, 0, -1, [], H), ">= 0"),
        (lambda: m.verify_inclusion(H, 0, 2**64, [], H), "uint64"),
        (lambda: m.verify_inclusion(H, 1.0, 5, [H] * 3, H), "integer"),
        (lambda: m.verify_inclusion(H, True, 5, [H] * 3, H), "integer"),
        (lambda: m.verify_inclusion(H, "1", 5, [H] * 3, H), "integer"),
        (lambda: m.verify_inclusion(H[:31], 0, 2, [H], H), "32 bytes"),
        (lambda: m.verify_inclusion(H, 0, 2, [H + b"\x00"], H), r"proof\[0\] must be 32 bytes"),
        (lambda: m.verify_inclusion(H, 0, 2, [H], b"x" * 33), "root must be 32 bytes"),
        (lambda: m.verify_inclusion(H, 0, 2, [H], "ab" * 16), "root must be bytes"),
        (lambda: m.verify_inclusion(H, 0, 2, H, H), "sequence of hashes"),
        (lambda: m.verify_inclusion(H, 0, 2, None, H), "sequence of hashes"),
        (lambda: m.verify_inclusion(H, 0, 2, [H] * 200, H), "no valid proof"),
        (lambda: m.verify_inclusion(H, 0, 2, [], H), "too short"),
        (lambda: m.verify_inclusion(H, 0, 2, [H, H], H), "too long"),
        (lambda: m.verify_inclusion(H, 0, 2, [H], H), "does not match the root"),
        (lambda: m.verify_inclusion(H, 0, 1, [], H, alg="md5"), "unknown hash algorithm"),
        (lambda: m.verify_consistency(0, 5, H, H, []), "empty tree is meaningless"),
        (lambda: m.verify_consistency(0, 0, H, H, []), "empty tree is meaningless"),
        (lambda: m.verify_consistency(6, 5, H, H, [H]), "larger than size2"),
        (lambda: m.verify_consistency(5, 5, H, H, [H]), "must be empty"),
        (lambda: m.verify_consistency(5, 5, H, b"\x01" * 32, []), "different roots"),
        (lambda: m.verify_consistency(3, 5, H, H, []), "empty consistency proof"),
        (lambda: m.verify_consistency(3, 5, H, H, [H] * 9), "too long"),
        (lambda: m.verify_consistency(3, 5, H, H, [H]), "too short"),
        (lambda: m.verify_consistency(3, 5, H, H, [H] * 4), "root1"),
        (lambda: m.verify_consistency(4, 5, H, H, [H]), "root2"),
        (lambda: m.verify_consistency(3, 5, H[:16], H, [H]), "root1 must be 32 bytes"),
        (lambda: m.verify_consistency(-3, 5, H, H, [H]), ">= 0"),
        (lambda: m.verify_consistency(None, 5, H, H, [H]), "integer"),
        (lambda: m.inclusion_proof(3, [b"a", b"b", b"c"]), "not in a tree of size 3"),
        (lambda: m.inclusion_proof(0, []), "not in a tree of size 0"),
        (lambda: m.inclusion_proof(0, [b"a"], tree_size=2), "exceeds"),
        (lambda: m.inclusion_proof(0, b"abc"), "sequence"),
        (lambda: m.inclusion_proof(0, [b"a", "b"]), "bytes"),
        (lambda: m.inclusion_proof(0, [b"a", b"b"], hashed=True), "32 bytes"),
        (lambda: m.consistency_proof(0, 3, [b"a", b"b", b"c"]), "empty tree is meaningless"),
        (lambda: m.consistency_proof(3, 2, [b"a", b"b", b"c"]), "must not exceed"),
        (lambda: m.consistency_proof(1, 4, [b"a", b"b", b"c"]), "exceeds"),
        (lambda: m.root_from_leaf_hashes([H, H[:31]]), "32 bytes"),
        (lambda: m.root_from_leaf_hashes([H[:31]]), "32 bytes"),
        (lambda: m.root_from_leaf_hashes([H, "x" * 32]), "32-byte hashes"),
        (lambda: m.root_from_leaf_hashes([H, H, "x" * 32]), "32-byte hashes"),
        (lambda: m.root_from_leaf_hashes(H), "not a single"),
        (lambda: m.root([b"a", 1]), "bytes"),
        (lambda: m.root(b"abc"), "not a single"),
        (lambda: m.leaf_hash("text"), "bytes"),
        (lambda: m.node_hash(H, H[:31]), "right must be 32 bytes"),
        (lambda: m.MerkleLog().append("text"), "bytes"),
        (lambda: m.MerkleLog().append_hash(H[:31]), "32 bytes"),
        (lambda: m.MerkleLog().inclusion_proof(0), "not in a tree of size 0"),
        (lambda: build_log([b"a", b"b"]).inclusion_proof(0, 3), "exceeds the log size"),
        (lambda: build_log([b"a", b"b"]).inclusion_proof(0, 0), ">= 1"),
        (lambda: build_log([b"a", b"b"]).consistency_proof(0), "empty tree is meaningless"),
        (lambda: build_log([b"a", b"b"]).consistency_proof(1, 3), "exceeds the log size"),
        (lambda: build_log([b"a", b"b"]).leaf_hash(2), "not in a log of size 2"),
        (lambda: build_log([b"a", b"b"]).root(3), "exceeds the log size"),
        (lambda: m.MerkleLog("sha1"), "unknown hash algorithm"),
    ],
)
def test_error_cases_raise_proof_error(call: Callable[[], object], message: str) -> None:
    with pytest.raises(m.ProofError, match=message):
        call()


def test_proof_error_is_a_value_error() -> None:
    assert issubclass(m.ProofError, ValueError)
    assert issubclass(m.MissingNodeError, m.ProofError)


def test_equal_sizes_and_single_leaf_edge_cases() -> None:
    log = build_log([b"x", b"y", b"z"])
    m.verify_consistency(3, 3, log.root(), log.root(), [])
    m.verify_consistency(1, 1, log.root(1), log.root(1), [])
    assert log.consistency_proof(3) == []
    leaf = m.leaf_hash(b"x")
    m.verify_inclusion(leaf, 0, 1, [], leaf)  # one-leaf tree: root == leaf hash, empty proof
    assert m.root_from_leaf_hashes([bytearray(leaf)]) == leaf
    assert isinstance(m.root_from_leaf_hashes([bytearray(leaf)]), bytes)
    assert m.HashAlgorithm("sha3_256") is m.SHA3_256
    m.verify_inclusion(leaf, 0, 1, (), leaf, alg=cast(Any, "sha256"))  # the JSON spelling works too


# --------------------------------------------------------------------------- JSON


def test_proof_json_round_trip() -> None:
    log = build_log(CT_LEAVES)
    incl = m.InclusionProof(5, 8, tuple(log.inclusion_proof(5)), leaf_hash=log.leaf_hash(5), root_hash=log.root())
    text = m.proof_to_json(incl)
    doc = json.loads(text)
    assert doc == {
        "version": 1,
        "type": "inclusion",
        "hash_algorithm": "sha256",
        "leaf_index": 5,
        "tree_size": 8,
        "inclusion_path": [h.hex() for h in CT_INCLUSION[2][2]],
        "leaf_hash": log.leaf_hash(5).hex(),
        "root_hash": CT_ROOTS[7].hex(),
    }
    parsed = m.proof_from_json(text)
    assert parsed == incl
    assert m.proof_from_json(text.encode()) == incl
    assert m.proof_from_json(doc) == incl
    assert isinstance(parsed, m.InclusionProof)
    parsed.verify(leaf_hash=log.leaf_hash(5), root_hash=CT_ROOTS[7])
    with pytest.raises(m.ProofError):
        parsed.verify(leaf_hash=log.leaf_hash(4), root_hash=CT_ROOTS[7])

    cons = m.ConsistencyProof(6, 8, tuple(log.consistency_proof(6)))
    ctext = m.proof_to_json(cons, indent=2)
    assert "first_hash" not in json.loads(ctext)
    cparsed = m.proof_from_json(ctext)
    assert cparsed == cons
    assert isinstance(cparsed, m.ConsistencyProof)
    cparsed.verify(first_hash=CT_ROOTS[5], second_hash=CT_ROOTS[7])
    with pytest.raises(m.ProofError):
        cparsed.verify(first_hash=CT_ROOTS[4], second_hash=CT_ROOTS[7])


def _good_inclusion_doc() -> dict[str, Any]:
    return json.loads(m.proof_to_json(m.InclusionProof(2, 3, tuple(CT_INCLUSION[3][2]))))


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.update(version=2),
        lambda d: d.update(version=1.0),
        lambda d: d.update(version=True),
        lambda d: d.pop("version"),
        lambda d: d.update(type="audit"),
        lambda d: d.update(hash_algorithm="md5"),
        lambda d: d.update(leaf_index="2"),
        lambda d: d.update(leaf_index=2.0),
        lambda d: d.update(leaf_index=True),
        lambda d: d.update(leaf_index=-1),
        lambda d: d.update(leaf_index=3),
        lambda d: d.update(tree_size=0),
        lambda d: d.update(tree_size=2**64),
        lambda d: d.pop("tree_size"),
        lambda d: d.update(inclusion_path="ab"),
        lambda d: d.update(inclusion_path=[1]),
        lambda d: d.update(inclusion_path=["zz" * 32]),
        lambda d: d.update(inclusion_path=["ab" * 31]),
        lambda d: d.update(inclusion_path=[" " + "ab" * 31 + "a"]),
        lambda d: d.update(inclusion_path=["ab" * 32] * 500),
        lambda d: d.update(root_hash="ab"),
        lambda d: d.update(extra=1),
        lambda d: d.update(tree_size_1=1),
    ],
)
def test_proof_from_json_is_strict(mutate: Callable[[dict[str, Any]], object]) -> None:
    doc = _good_inclusion_doc()
    m.proof_from_json(doc)
    mutate(doc)
    with pytest.raises(m.ProofError):
        m.proof_from_json(json.dumps(doc))


@pytest.mark.parametrize("text", ["", "[]", "null", "{", '"x"', "1" * 5000, "[" * 100000, b"\xff\xfe"])
def test_proof_from_json_rejects_non_objects(text: str | bytes) -> None:
    with pytest.raises(m.ProofError):
        m.proof_from_json(text)


def test_proof_to_json_rejects_non_proofs() -> None:
    with pytest.raises(m.ProofError):
        m.proof_to_json(cast(Any, {"type": "inclusion"}))


# --------------------------------------------------------------------------- hostile input

garbage = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.text(max_size=40),
    st.binary(max_size=70),
    st.binary(min_size=32, max_size=32),
    st.lists(st.binary(min_size=32, max_size=32), max_size=4),
    st.lists(st.one_of(st.binary(max_size=40), st.integers(), st.text(max_size=4)), max_size=4),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    st.sampled_from([m.SHA256, m.SHA3_256, "sha256", "sha3_256", "SHA256"]),
)
small_ints = st.one_of(st.integers(-2, 70), garbage)


def _only_proof_errors(call: Callable[[], object]) -> None:
    """Run ``call``; a ProofError is fine, any other exception fails the test."""
    with contextlib.suppress(m.ProofError):
        call()


@FUZZ
@given(a=garbage, b=small_ints, c=small_ints, d=garbage, e=garbage, alg=garbage)
def test_garbage_never_raises_anything_but_proof_error(a: Any, b: Any, c: Any, d: Any, e: Any, alg: Any) -> None:
    _only_proof_errors(lambda: m.verify_inclusion(a, b, c, d, e, alg))
    _only_proof_errors(lambda: m.verify_inclusion(a, b, c, d, e))
    _only_proof_errors(lambda: m.verify_consistency(b, c, a, e, d, alg))
    _only_proof_errors(lambda: m.verify_consistency(b, c, a, e, d))
    _only_proof_errors(lambda: m.leaf_hash(a, alg))
    _only_proof_errors(lambda: m.node_hash(a, e, alg))
    _only_proof_errors(lambda: m.root(a, alg))
    _only_proof_errors(lambda: m.root_from_leaf_hashes(a, alg))
    _only_proof_errors(lambda: m.root_from_leaf_hashes(d))
    _only_proof_errors(lambda: m.inclusion_proof(b, d, tree_size=c))
    _only_proof_errors(lambda: m.inclusion_proof(b, d, hashed=True, alg=alg))
    _only_proof_errors(lambda: m.consistency_proof(b, c, d))
    _only_proof_errors(lambda: m.proof_from_json(a))
    _only_proof_errors(lambda: m.InclusionProof(b, c, d, alg))
    _only_proof_errors(lambda: m.ConsistencyProof(b, c, d, alg, a, e))
    log = build_log([b"a", b"b", b"c"])
    _only_proof_errors(lambda: log.append(a))
    _only_proof_errors(lambda: log.append_hash(a))
    _only_proof_errors(lambda: log.inclusion_proof(b, c))
    _only_proof_errors(lambda: log.consistency_proof(b, c))
    _only_proof_errors(lambda: log.root(b))
    _only_proof_errors(lambda: log.leaf_hash(b))
    _only_proof_errors(lambda: m.MerkleLog(alg, size=b))
    _only_proof_errors(lambda: m.MemoryNodeStore().get_node(b, c))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=70),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=20), inner, max_size=6),
    max_leaves=20,
)


@FUZZ
@given(
    doc=st.fixed_dictionaries(
        {},
        optional={
            "version": st.sampled_from([1, 2, "1"]) | json_values,
            "type": st.sampled_from(["inclusion", "consistency"]) | json_values,
            "hash_algorithm": st.sampled_from(["sha256", "sha3_256"]) | json_values,
            "leaf_index": st.integers(-1, 9) | json_values,
            "tree_size": st.integers(-1, 9) | json_values,
            "tree_size_1": st.integers(-1, 9) | json_values,
            "tree_size_2": st.integers(-1, 9) | json_values,
            "inclusion_path": st.lists(st.sampled_from(["ab" * 32, "AB" * 32, "xyz"]), max_size=4) | json_values,
            "consistency_path": st.lists(st.sampled_from(["cd" * 32, "0" * 63]), max_size=4) | json_values,
            "root_hash": st.sampled_from(["ef" * 32]) | json_values,
        },
    )
)
def test_json_garbage_never_raises_anything_but_proof_error(doc: dict[str, Any]) -> None:
    _only_proof_errors(lambda: m.proof_from_json(doc))
    _only_proof_errors(lambda: m.proof_from_json(json.dumps(doc)))


# --------------------------------------------------------------------------- RFC 9162 §2.1.3/§2.1.4 error cases
# (the ones the list above does not spell out: every check of both verifiers and the proof objects)

_LEAVES8 = [bytes([i]) for i in range(8)]
_LOG8 = build_log(_LEAVES8)


def _good_consistency(size1: int, size2: int) -> tuple[bytes, bytes, list[bytes]]:
    return _LOG8.root(size1), _LOG8.root(size2), _LOG8.consistency_proof(size1, size2)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        # §2.1.3.2 step 1: leaf_index >= tree_size
        (lambda: m.verify_inclusion(m.leaf_hash(b"\x07"), 8, 8, _LOG8.inclusion_proof(7), _LOG8.root()),
         "not in a tree of size 8"),
        (lambda: m.InclusionProof(8, 8, ()), "not in a tree of size 8"),
        (lambda: _LOG8.inclusion_proof(8), "not in a tree of size 8"),
        # wrong proof length, one hash short / one hash extra, for a valid leaf
        (lambda: m.verify_inclusion(m.leaf_hash(b"\x03"), 3, 8, _LOG8.inclusion_proof(3)[:-1], _LOG8.root()),
         "too short"),
        (lambda: m.verify_inclusion(m.leaf_hash(b"\x03"), 3, 8, [*_LOG8.inclusion_proof(3), H], _LOG8.root()),
         "too long"),
        # hashes that are not 32 bytes, in every position
        (lambda: m.verify_inclusion(H, 0, 2, [H[:31]], H), r"proof\[0\] must be 32 bytes"),
        (lambda: m.verify_consistency(3, 5, H, H[:31], [H]), "root2 must be 32 bytes"),
        (lambda: m.verify_consistency(3, 5, H, H, [H, H + b"x"]), r"proof\[1\] must be 32 bytes"),
        (lambda: m.InclusionProof(0, 2, (H,), leaf_hash=H[:5]), "leaf_hash must be 32 bytes"),
        (lambda: m.ConsistencyProof(1, 2, (H,), second_hash=b""), "second_hash must be 32 bytes"),
        # §2.1.4: size1 = 0 and size1 > size2, for the generator, the log and the proof object
        (lambda: m.ConsistencyProof(0, 3, ()), ">= 1"),
        (lambda: m.ConsistencyProof(4, 3, (H,)), "exceeds tree_size_2"),
        (lambda: _LOG8.consistency_proof(5, 4), "must not exceed"),
        (lambda: m.consistency_proof_from_nodes(m.MemoryNodeStore(), 0, 0), "empty tree is meaningless"),
        # §2.1.4.2 wrong proof length with size1 a power of two (step 2 prepends first_hash)
        (lambda: m.verify_consistency(4, 8, *_good_consistency(4, 8)[:2], [*_good_consistency(4, 8)[2], H]),
         "too long"),
        (lambda: m.verify_consistency(4, 8, *_good_consistency(4, 8)[:2], []), "empty consistency proof"),
        (lambda: m.verify_consistency(3, 8, *_good_consistency(3, 8)[:2], _good_consistency(3, 8)[2][:-1]),
         "too short"),
        # a valid proof against another tree's root fails (sizes are bound only through the roots, as in
        # the RFC: a verifier takes size and root from the same signed checkpoint)
        (lambda: m.verify_consistency(3, 8, _LOG8.root(3), _LOG8.root(7), _good_consistency(3, 8)[2]), "root2"),
        (lambda: m.verify_consistency(3, 8, _LOG8.root(2), _LOG8.root(8), _good_consistency(3, 8)[2]), "root1"),
    ],
)
def test_rfc9162_error_cases(call: Callable[[], object], message: str) -> None:
    with pytest.raises(m.ProofError, match=message):
        call()


def test_good_proofs_of_the_error_case_fixtures_verify() -> None:
    """The fixtures above fail only because of the one thing each case changes."""
    m.verify_inclusion(m.leaf_hash(b"\x03"), 3, 8, _LOG8.inclusion_proof(3), _LOG8.root())
    for size1, size2 in ((4, 8), (3, 8)):
        m.verify_consistency(size1, size2, *_good_consistency(size1, size2))
