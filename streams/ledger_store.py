"""A Merkle log in RocksDB (rocksdict): :class:`RocksNodeStore` and :class:`RocksLedger`.

Why RocksDB and this key layout: :mod:`swarmlog.streams.merkle` needs only write-once
perfect-subtree hashes keyed ``(level, index)``. Keys are ``b"n" || level (1 byte) || index
(8 bytes, big endian)``, so each level is one contiguous, sorted key range: appends write at the
end of a range (cheap for an LSM tree), a bulk build can stream sorted keys straight into an SST
file, and compaction is one ``delete_range`` per level. An append is one leaf hash plus on average
one node hash and ~2 node writes (amortised O(1)); a proof at any size is O(log n) point reads.

Writes go into a ``WriteBatch`` until :meth:`RocksLedger.commit`, which writes the nodes, the
event index and the new size in one atomic batch: a crash loses a suffix of appends, never leaves
a size that points past stored nodes.
"""

from __future__ import annotations

import hashlib
import os
import struct
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

from rocksdict import BlockBasedOptions, Options, Rdict, SstFileWriter, WriteBatch

from swarmlog.streams.merkle import (
    _FAST_SHA256,
    SHA256,
    HashAlgorithm,
    MemoryNodeStore,
    MerkleLog,
    MissingNodeError,
    ProofError,
    leaf_hash,
)

__all__ = ["RocksLedger", "RocksNodeStore", "compaction_keep", "node_key"]

_NODE = b"n"
_HASH_INDEX = b"h"  # event hash -> leaf index
_ID_INDEX = b"i"  # event id -> leaf index
_META_SIZE = b"m:size"
_META_ALG = b"m:alg"
_META_COMPACTED = b"m:compacted"
# interior-node hash constructors (``HASH(0x01 || left || right)`` is built by the caller)
# CPython's built-in SHA-256 beats OpenSSL's on 33-65 byte messages (see merkle._builtin_sha256)
_NODE_HASH: dict[HashAlgorithm, Any] = {HashAlgorithm.SHA256: _FAST_SHA256, HashAlgorithm.SHA3_256: hashlib.sha3_256}
_LEAF_HASH = _NODE_HASH
_PACK_NODE = struct.Struct(">cBQ").pack
_PACK_U64 = struct.Struct(">Q").pack
_UNPACK_U64 = struct.Struct(">Q").unpack


def node_key(level: int, index: int) -> bytes:
    """RocksDB key of perfect subtree ``(level, index)``: sorts by level, then index."""
    return _PACK_NODE(_NODE, level, index)


def compaction_keep(before: int) -> list[tuple[int, int]]:
    """The nodes entirely inside leaves ``[0, before)`` that proofs about later leaves still need.

    A node inside ``[0, before)`` is needed only if its parent is not (every sibling or range an
    RFC 9162 proof uses for a leaf ``>= before`` in a tree of size ``>= before`` is such a maximal
    node), and those are exactly the perfect subtrees of the compact range of ``before``: one per
    set bit.
    """
    return [(level, (before >> level) - 1) for level in range(before.bit_length()) if before >> level & 1]


class RocksNodeStore:
    """:class:`~swarmlog.streams.merkle.NodeStore` on a rocksdict database (raw bytes mode).

    ``put_node`` only stages into the pending batch (visible to ``get_node`` at once), so a
    MerkleLog append costs no I/O; :meth:`take_batch` hands the batch to the committer.
    """

    __slots__ = ("_batch", "_db", "_digest_size", "_pending")

    def __init__(self, db: Rdict, digest_size: int = 32) -> None:
        self._db = db
        self._digest_size = digest_size
        self._pending: dict[bytes, bytes] = {}
        self._batch = WriteBatch(raw_mode=True)

    def get_node(self, level: int, index: int) -> bytes | None:
        """See :meth:`NodeSource.get_node`."""
        key = _PACK_NODE(_NODE, level, index)
        value = self._pending.get(key)
        if value is None:
            value = self._db.get(key)
        return value

    def get_nodes(self, positions: Sequence[tuple[int, int]]) -> list[bytes | None]:
        """Several nodes in one RocksDB multi-get (what a proof needs, for the CLI/bench)."""
        keys: list[Any] = [_PACK_NODE(_NODE, level, index) for level, index in positions]
        found = cast(list[bytes | None], self._db.get(keys))
        return [self._pending.get(k, v) for k, v in zip(keys, found, strict=True)]

    def put_node(self, level: int, index: int, digest: bytes) -> None:
        """See :meth:`NodeStore.put_node`; write-once is checked against pending writes only
        (a read per write would double the cost of an append; the committed log is append-only
        by construction)."""
        key = _PACK_NODE(_NODE, level, index)
        old = self._pending.get(key)
        if old is not None and old != digest:
            raise ProofError(f"node (level={level}, index={index}) is write-once and already differs")
        self._pending[key] = digest
        self._batch.put(key, digest)

    def stage(self, key: bytes, value: bytes) -> None:
        """Stage a non-node write (index, meta) into the same atomic batch."""
        self._batch.put(key, value)

    def take_batch(self) -> WriteBatch:
        """The staged writes; the store starts a fresh batch (pending reads stay until written)."""
        batch, self._batch = self._batch, WriteBatch(raw_mode=True)
        return batch

    def written(self) -> None:
        """The taken batch is in the database: pending copies are no longer needed."""
        self._pending.clear()


def _open(path: Path) -> Rdict:
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    options.set_max_background_jobs(2)
    table = BlockBasedOptions()
    table.set_bloom_filter(10, False)  # the duplicate check is mostly misses: answer them from memory
    options.set_block_based_table_factory(table)
    return Rdict(str(path), options=options)


class RocksLedger:
    """One lane's Merkle log in its own RocksDB directory, with an event index for ``prove``.

    ``append(event_hash, event_id)`` adds the leaf ``HASH(0x00 || event_hash)`` unless that event
    hash is already in the log (redelivery), and returns its index; ``commit()`` makes staged
    appends durable atomically.
    """

    def __init__(self, path: str | os.PathLike[str], alg: HashAlgorithm = SHA256) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._db = _open(self.path)
        stored_alg = self._db.get(_META_ALG)
        if stored_alg is not None and stored_alg.decode() != HashAlgorithm(alg).value:
            self._db.close()
            raise ProofError(f"{self.path} holds a {stored_alg.decode()} log, not {HashAlgorithm(alg).value}")
        if stored_alg is None:
            self._db.put(_META_ALG, HashAlgorithm(alg).value.encode())
        self.alg = HashAlgorithm(alg)
        size_raw = self._db.get(_META_SIZE)
        compacted_raw = self._db.get(_META_COMPACTED)
        self.compacted_before = _UNPACK_U64(compacted_raw)[0] if compacted_raw else 0
        self.store = RocksNodeStore(self._db, self.alg.digest_size)
        self.log = MerkleLog(self.alg, store=self.store, size=_UNPACK_U64(size_raw)[0] if size_raw else 0)
        self._staged_hashes: dict[bytes, int] = {}
        self._staged_ids: dict[bytes, int] = {}

    # ------------------------------------------------------------------ writing
    @property
    def size(self) -> int:
        return self.log.size

    def index_of(self, event_hash: bytes) -> int | None:
        """Leaf index of an event hash, or None if it is not in the log."""
        staged = self._staged_hashes.get(event_hash)
        if staged is not None:
            return staged
        raw = self._db.get(_HASH_INDEX + event_hash)
        return None if raw is None else _UNPACK_U64(raw)[0]

    def index_of_id(self, event_id: bytes) -> int | None:
        """Leaf index of an event id (16-byte UUID), or None."""
        staged = self._staged_ids.get(event_id)
        if staged is not None:
            return staged
        raw = self._db.get(_ID_INDEX + event_id)
        return None if raw is None else _UNPACK_U64(raw)[0]

    def append(self, event_hash: bytes, event_id: bytes | None = None) -> int | None:
        """Append one event; None if the event hash is already a leaf (each event once)."""
        if self.index_of(event_hash) is not None:
            return None
        index = self.log.append(event_hash)
        packed = _PACK_U64(index)
        stage = self.store.stage
        stage(_HASH_INDEX + event_hash, packed)
        if event_id is not None:
            stage(_ID_INDEX + event_id, packed)
            self._staged_ids[event_id] = index
        self._staged_hashes[event_hash] = index
        return index

    def append_many(self, event_hashes: Sequence[bytes], event_ids: Sequence[bytes] | None = None,
                    ) -> list[int | None]:
        """Append a batch (each new event hash once); per input the leaf index or None (already in).

        Why a separate path: appending one leaf at a time costs a Python call chain per node.
        Here the duplicate check is one multi-get, the leaves are hashed in one pass and each
        level's completed nodes in one pass, so a batch costs ~2 hashes and ~3 staged writes per
        leaf. Same nodes, same bytes as :meth:`append`.
        """
        if event_ids is not None and len(event_ids) != len(event_hashes):
            raise ProofError("event_ids must match event_hashes one to one")
        digest = self.alg.digest_size
        for h in event_hashes:
            if type(h) is not bytes or len(h) != digest:
                raise ProofError(f"event hashes must be {digest} bytes")
        keys: list[Any] = [_HASH_INDEX + h for h in event_hashes]
        found = cast(list[bytes | None], self._db.get(keys))
        staged = self._staged_hashes
        start = self.log.size
        fresh: list[bytes] = []
        result: list[int | None] = []
        stage = self.store.stage
        pack = _PACK_U64
        for position, (event_hash, hit) in enumerate(zip(event_hashes, found, strict=True)):
            if hit is not None or event_hash in staged:
                result.append(None)
                continue
            index = start + len(fresh)
            fresh.append(event_hash)
            staged[event_hash] = index
            packed = pack(index)
            stage(_HASH_INDEX + event_hash, packed)
            if event_ids is not None:
                stage(_ID_INDEX + event_ids[position], packed)
                self._staged_ids[event_ids[position]] = index
            result.append(index)
        if fresh:
            leaf = _LEAF_HASH[self.alg]
            self._append_leaf_hashes([leaf(b"\x00" + h).digest() for h in fresh])
        return result

    def _append_leaf_hashes(self, hashes: list[bytes]) -> None:
        """Stage the leaves and every node they complete, level by level; reopen the frontier.

        Writes go straight into the batch (not through ``put_node``): these positions are new by
        construction, and the per-node call is most of the cost of an append.
        """
        store = self.store
        pending = store._pending
        batch_put = store._batch.put
        pack = _PACK_NODE
        node = _NODE_HASH[self.alg]
        first = self.log.size
        end = first + len(hashes)
        level, lo, current = 0, first, hashes
        while current:
            for offset, h in enumerate(current):
                key = pack(_NODE, level, lo + offset)
                pending[key] = h
                batch_put(key, h)
            if lo & 1:
                left = store.get_node(level, lo - 1)
                if left is None:
                    raise MissingNodeError(f"node store has no hash for (level={level}, index={lo - 1})")
                current = [left, *current]
                lo -= 1
            pairs = iter(current)
            current = [node(b"\x01" + a + b).digest() for a, b in zip(pairs, pairs, strict=False)]
            level += 1
            lo >>= 1
        self.log = MerkleLog(self.alg, store=store, size=end)

    def commit(self) -> None:
        """Write staged nodes, index entries and the size in one atomic batch."""
        self.store.stage(_META_SIZE, _PACK_U64(self.log.size))
        self._db.write(self.store.take_batch())
        self.store.written()
        self._staged_hashes.clear()
        self._staged_ids.clear()

    # ------------------------------------------------------------------ reading
    def _check(self, index: int) -> None:
        if index < self.compacted_before:
            raise MissingNodeError(f"leaf {index} was compacted away (the log keeps leaves >= "
                                   f"{self.compacted_before})")

    def root(self, size: int | None = None) -> bytes:
        if size is not None and 0 < size < self.compacted_before:
            raise MissingNodeError(f"tree size {size} was compacted away (sizes >= {self.compacted_before} remain)")
        return self.log.root(size)

    def leaf_hash(self, index: int) -> bytes:
        self._check(index)
        return self.log.leaf_hash(index)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        self._check(index)
        return self.log.inclusion_proof(index, size)

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        if 0 < size1 < self.compacted_before:
            raise MissingNodeError(f"tree size {size1} was compacted away (sizes >= {self.compacted_before} remain)")
        return self.log.consistency_proof(size1, size2)

    # ------------------------------------------------------------------ maintenance
    def compact(self, before: int) -> int:
        """Drop the nodes of leaves ``[0, before)`` that no proof about a leaf ``>= before`` (in a
        tree of size ``>= before``) needs; returns the number of levels touched. The event index
        stays, so a redelivered old event is still recognised and not appended twice."""
        self.commit()
        if not 0 <= before <= self.size:
            raise ProofError(f"compaction point {before} is outside the log [0, {self.size}]")
        keep = dict(compaction_keep(before))
        for level in range(before.bit_length()):
            end = (before >> level) - (1 if level in keep else 0)
            if end > 0:
                self._db.delete_range(node_key(level, 0), node_key(level, end))
        self.compacted_before = max(self.compacted_before, before)
        self._db.put(_META_COMPACTED, _PACK_U64(self.compacted_before))
        return before.bit_length()

    def close(self) -> None:
        self.commit()
        self._db.close()

    def __enter__(self) -> RocksLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ bulk build
    @classmethod
    def bulk_build(cls, path: str | os.PathLike[str], event_hashes: Sequence[bytes], alg: HashAlgorithm = SHA256,
                   *, index: bool = True, progress: Callable[[str], None] | None = None) -> RocksLedger:
        """Build a whole log at once: hash every level in memory, write sorted SST files, ingest.

        Why: appending 10 M leaves through the write path works but a bulk load is several times
        faster (no memtable, no compaction of overlapping files) -- it is how a large ledger is
        restored or how the benchmark sets up its 10 M-leaf tree. Same keys and bytes as appends.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        say = progress or (lambda _msg: None)
        started = time.perf_counter()
        leaf_hashes = [leaf_hash(h, alg) for h in event_hashes]
        nodes = MemoryNodeStore.from_leaf_hashes(leaf_hashes, alg)
        say(f"hashed {len(leaf_hashes)} leaves and their subtrees in {time.perf_counter() - started:.1f} s")
        del leaf_hashes
        digest = HashAlgorithm(alg).digest_size
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            files = []
            writer = SstFileWriter(options=Options(raw_mode=True))
            nodes_file = os.path.join(tmp, "nodes.sst")
            writer.open(nodes_file)
            level = 0
            while True:
                count = nodes.count(level)
                if not count:
                    break
                buffer = memoryview(nodes._levels[level])
                for i in range(count):
                    writer[_PACK_NODE(_NODE, level, i)] = bytes(buffer[i * digest : (i + 1) * digest])
                level += 1
            writer.finish()
            files.append(nodes_file)
            say(f"wrote node SST after {time.perf_counter() - started:.1f} s")
            if index:
                order = sorted(range(len(event_hashes)), key=event_hashes.__getitem__)
                index_file = os.path.join(tmp, "index.sst")
                writer = SstFileWriter(options=Options(raw_mode=True))
                writer.open(index_file)
                previous = None
                for i in order:
                    key = _HASH_INDEX + event_hashes[i]
                    if key == previous:
                        raise ProofError("bulk_build needs distinct event hashes")
                    writer[key] = _PACK_U64(i)
                    previous = key
                writer.finish()
                files.append(index_file)
                say(f"wrote index SST after {time.perf_counter() - started:.1f} s")
            db = _open(path)
            if db.get(_META_SIZE) is not None:
                db.close()
                raise ProofError(f"{path} already holds a log; bulk_build needs an empty directory")
            db.ingest_external_file(files)
            db.put(_META_ALG, HashAlgorithm(alg).value.encode())
            db.put(_META_SIZE, _PACK_U64(len(event_hashes)))
            db.close()
        say(f"ingested after {time.perf_counter() - started:.1f} s")
        return cls(path, alg)

