"""A Merkle log in RocksDB (rocksdict), tiled: :class:`RocksNodeStore` and :class:`RocksLedger`.

Why tiles: :mod:`swarmlog.streams.merkle` needs only write-once perfect-subtree hashes keyed
``(level, index)``. Storing each as its own RocksDB entry cost ~2 entries per leaf (leaf + ~1
interior node), and under load a RocksDB entry costs more than hashing the leaf. So, as in C2SP
tlog-tiles, the tree is cut into *tiles* of height ``TILE_HEIGHT`` (8): tile ``(t, i)`` holds
every node of levels ``8t .. 8t+7`` below its top, i.e. for ``j = 0..7`` the ``2**(8-j)`` nodes of
level ``8t+j`` with indices ``[i << (8-j), (i+1) << (8-j))`` (unlike tlog-tiles, the interior
levels are stored too, so a proof slices hashes instead of recomputing 255 of them per tile).
A tile's top node (level ``8t+8``) is a bottom node of tile ``(t+1, i >> 8)``.

On-disk format (raw keys, big-endian integers, digest = 32 bytes for both algorithms):

* ``b"t" || t (1 byte) || i (8 bytes)`` -> a *complete* tile: the levels ``j = 0..7`` one after the
  other, ``2**(8-j)`` digests each (510 digests, 16 320 bytes). Written once, never changed.
* ``b"p" || t (1 byte)`` -> the *in-progress* tile of tile-level ``t`` (the one holding leaf
  ``size - 1``'s ancestors): the same layout truncated to the nodes that exist, level ``j`` having
  ``(size >> (8t+j)) - (i << (8-j))`` digests with ``i = size >> (8t+8)``. Rewritten at every
  commit (at most ``ceil(log2(size)/8)`` values of < 16 KB); absent or stale when empty.
* ``b"h" || event hash`` -> leaf index (8 bytes); ``b"i" || event id`` -> leaf index (optional).
* ``b"m:size"`` (8 bytes), ``b"m:alg"`` (hashlib name), ``b"m:compacted"`` (8 bytes),
  ``b"m:format"`` = ``b"tiles-8"`` (an untiled store of the earlier format is refused).

An append of a batch of ``n`` leaves costs ``n`` leaf hashes, ``~n`` node hashes (in list
comprehensions over the batch), ``n`` index entries and ``~n/256`` tile entries; a proof at 10 M
leaves reads ~4 tiles (24 nodes) instead of 24 entries. Compaction drops whole tiles with one
``delete_range`` per tile-level.

Writes go into a ``WriteBatch`` until :meth:`RocksLedger.commit`, which writes the completed tiles,
the in-progress tiles, the event index and the new size in one atomic batch: a crash loses a
suffix of appends, never leaves a size that points past stored nodes.
"""

from __future__ import annotations

import hashlib
import os
import struct
import tempfile
import time
from collections.abc import Callable, Sequence
from operator import methodcaller
from pathlib import Path
from typing import Any, cast

from rocksdict import BlockBasedOptions, Options, Rdict, SstFileWriter, WriteBatch

from swarmlog.streams.merkle import (
    _FAST_SHA256,
    SHA256,
    HashAlgorithm,
    MemoryNodeStore,
    MissingNodeError,
    ProofError,
    consistency_proof_from_nodes,
    inclusion_proof_from_nodes,
    leaf_hash,
    root_from_nodes,
)

__all__ = ["TILE_HEIGHT", "RocksLedger", "RocksNodeStore", "compaction_keep", "tile_key"]

TILE_HEIGHT = 8
_TILE = 1 << TILE_HEIGHT  # bottom nodes per tile
_SECTION = [(2 << TILE_HEIGHT) - (2 << TILE_HEIGHT >> j) for j in range(TILE_HEIGHT + 1)]  # digest offset of level j
_TILE_NODES = _SECTION[TILE_HEIGHT]  # 510

_TILE_KEY = b"t"
_PARTIAL_KEY = b"p"
_HASH_INDEX = b"h"  # event hash -> leaf index
_ID_INDEX = b"i"  # event id -> leaf index
_META_SIZE = b"m:size"
_META_ALG = b"m:alg"
_META_COMPACTED = b"m:compacted"
_META_FORMAT = b"m:format"
_FORMAT = b"tiles-8"
# interior-node hash constructors (``HASH(0x01 || left || right)`` is built by the caller)
# CPython's built-in SHA-256 beats OpenSSL's on 33-65 byte messages (see merkle._builtin_sha256)
_NODE_HASH: dict[HashAlgorithm, Any] = {HashAlgorithm.SHA256: _FAST_SHA256, HashAlgorithm.SHA3_256: hashlib.sha3_256}
_LEAF_HASH = _NODE_HASH
_DIGEST = methodcaller("digest")
_PACK_TILE = struct.Struct(">cBQ").pack
_PACK_U64 = struct.Struct(">Q").pack
_UNPACK_U64 = struct.Struct(">Q").unpack
_TILE_CACHE = 256  # decoded complete tiles kept for reads (~4 MB): the upper tiles of every proof stay hot


def tile_key(tile_level: int, index: int) -> bytes:
    """RocksDB key of complete tile ``(tile_level, index)``: sorts by tile-level, then index."""
    return _PACK_TILE(_TILE_KEY, tile_level, index)


def _partial_key(tile_level: int) -> bytes:
    return _PARTIAL_KEY + bytes([tile_level])


def compaction_keep(before: int) -> list[tuple[int, int]]:
    """The nodes entirely inside leaves ``[0, before)`` that proofs about later leaves still need.

    A node inside ``[0, before)`` is needed only if its parent is not (every sibling or range an
    RFC 9162 proof uses for a leaf ``>= before`` in a tree of size ``>= before`` is such a maximal
    node), and those are exactly the perfect subtrees of the compact range of ``before``: one per
    set bit.
    """
    return [(level, (before >> level) - 1) for level in range(before.bit_length()) if before >> level & 1]


class RocksNodeStore:
    """The tiled node storage of one log: a :class:`~swarmlog.streams.merkle.NodeSource` plus appends.

    Holds the in-progress tile of every tile-level in memory (one ``bytearray`` per tree level,
    ``_base[level]`` = index of its first node); completed tiles go into the pending
    ``WriteBatch`` (and ``_staged`` for reads) the moment they complete. Single writer.
    """

    __slots__ = ("_base", "_batch", "_cache", "_db", "_digest", "_levels", "_node", "_size", "_staged")

    def __init__(self, db: Rdict, alg: HashAlgorithm, size: int) -> None:
        self._db = db
        self._digest = HashAlgorithm(alg).digest_size
        self._node = _NODE_HASH[HashAlgorithm(alg)]
        self._size = size
        self._batch = WriteBatch(raw_mode=True)
        self._staged: dict[bytes, bytes] = {}
        self._cache: dict[bytes, bytes] = {}
        self._levels: list[bytearray] = []
        self._base: list[int] = []
        d = self._digest
        for level in range(size.bit_length()):
            t, j = divmod(level, TILE_HEIGHT)
            self._base.append((size >> (TILE_HEIGHT * t + TILE_HEIGHT)) << (TILE_HEIGHT - j))
            self._levels.append(bytearray())
        for t in range(self._tile_levels()):
            bottom = t * TILE_HEIGHT
            want = [(size >> level) - self._base[level] for level in range(bottom, min(bottom + TILE_HEIGHT,
                                                                                           size.bit_length()))]
            if not any(want):
                continue
            raw = db.get(_partial_key(t))
            if raw is None or len(raw) != sum(want) * d:
                raise MissingNodeError(f"in-progress tile of tile-level {t} is missing or does not match size {size}")
            offset = 0
            for j, count in enumerate(want):
                self._levels[bottom + j] += raw[offset : offset + count * d]
                offset += count * d

    @property
    def size(self) -> int:
        return self._size

    def _tile_levels(self) -> int:
        return -(-self._size.bit_length() // TILE_HEIGHT)

    # ------------------------------------------------------------------ reads
    def _tile(self, key: bytes) -> bytes | None:
        value = self._staged.get(key)
        if value is None:
            value = self._cache.get(key)
            if value is None:
                value = cast(bytes | None, self._db.get(key))
                if value is None:
                    return None
                cache = self._cache
                if len(cache) >= _TILE_CACHE:
                    del cache[next(iter(cache))]
                cache[key] = value
        return value

    def get_node(self, level: int, index: int) -> bytes | None:
        """See :meth:`NodeSource.get_node`: from the in-progress buffers, else from a complete tile."""
        if level < 0 or index < 0 or index >= self._size >> level:
            return None
        d = self._digest
        offset = index - self._base[level]
        if offset >= 0:
            return bytes(self._levels[level][offset * d : offset * d + d])
        t, j = divmod(level, TILE_HEIGHT)
        shift = TILE_HEIGHT - j
        tile = self._tile(tile_key(t, index >> shift))
        if tile is None:
            return None
        start = (_SECTION[j] + (index & ((1 << shift) - 1))) * d
        return tile[start : start + d]

    def forget_cache(self) -> None:
        """Drop cached tiles (after a compaction deleted some)."""
        self._cache.clear()

    # ------------------------------------------------------------------ writes
    def append_leaf_hashes(self, hashes: list[bytes]) -> None:
        """Add the leaves and every node they complete, level by level; stage completed tiles.

        Each level of the batch is hashed in one C-level ``map`` pass (no per-node Python frame).
        """
        if not hashes:
            return
        d = self._digest
        node = self._node
        levels, base = self._levels, self._base
        old = self._size
        level, lo, current = 0, old, hashes
        while current:
            if level == len(levels):
                levels.append(bytearray())
                base.append(lo)  # a new top level starts at index 0
            buf = levels[level]
            buf += b"".join(current)
            if lo & 1:
                offset = (lo - 1 - base[level]) * d
                current = [bytes(buf[offset : offset + d]), *current]
                lo -= 1
            current = list(map(_DIGEST, map(node, map(b"\x01".__add__, map(bytes.__add__, current[0::2],
                                                                             current[1::2])))))
            level += 1
            lo >>= 1
        self._size = old + len(hashes)
        self._flush_tiles()

    def append_leaf_hash(self, h: bytes) -> int:
        """One leaf: the same nodes as :meth:`append_leaf_hashes` without the batch set-up
        (amortised one node hash; tiles can only complete when the size reaches a multiple of 256)."""
        d = self._digest
        levels, base = self._levels, self._base
        index = lo = self._size
        level = 0
        while True:
            if level == len(levels):
                levels.append(bytearray())
                base.append(0)  # a new top level starts at index 0
            buf = levels[level]
            buf += h
            if not lo & 1:
                break
            offset = (lo - 1 - base[level]) * d
            h = self._node(b"\x01" + buf[offset : offset + d] + h).digest()
            level += 1
            lo >>= 1
        self._size = index + 1
        if not self._size & (_TILE - 1):
            self._flush_tiles()
        return index

    def _flush_tiles(self) -> None:
        """Move every completed tile out of the in-memory levels into the pending batch."""
        d = self._digest
        levels, base = self._levels, self._base
        put = self._batch.put
        for t in range(self._tile_levels()):
            bottom = t * TILE_HEIGHT
            if bottom >= len(levels):
                break
            complete = len(levels[bottom]) // (_TILE * d)
            if not complete:
                continue
            first = base[bottom] >> TILE_HEIGHT
            views = [memoryview(levels[bottom + j]) for j in range(TILE_HEIGHT)]
            for n in range(complete):
                value = b"".join([views[j][(n << (TILE_HEIGHT - j)) * d : ((n + 1) << (TILE_HEIGHT - j)) * d]
                                  for j in range(TILE_HEIGHT)])
                key = tile_key(t, first + n)
                self._staged[key] = value
                put(key, value)
            for view in views:
                view.release()
            for j in range(TILE_HEIGHT):
                del levels[bottom + j][: (complete << (TILE_HEIGHT - j)) * d]
                base[bottom + j] += complete << (TILE_HEIGHT - j)

    def stage(self, key: bytes, value: bytes) -> None:
        """Stage a non-tile write (index, meta) into the same atomic batch."""
        self._batch.put(key, value)

    def batch_put(self) -> Callable[[bytes, bytes], None]:
        """The pending batch's ``put`` (valid until :meth:`take_batch`), for staging many entries."""
        return cast(Callable[[bytes, bytes], None], self._batch.put)

    def take_batch(self) -> WriteBatch:
        """The staged writes plus the current in-progress tiles; the store starts a fresh batch."""
        batch = self._batch
        levels = self._levels
        for t in range(max(self._tile_levels(), 1)):
            parts = levels[t * TILE_HEIGHT : t * TILE_HEIGHT + TILE_HEIGHT]
            if any(parts):
                batch.put(_partial_key(t), b"".join(parts))
            else:
                batch.delete(_partial_key(t))
        self._batch = WriteBatch(raw_mode=True)
        return batch

    def written(self) -> None:
        """The taken batch is in the database: staged tiles are read from there now."""
        self._staged.clear()


def _open(path: Path) -> Rdict:
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    options.set_max_background_jobs(2)
    # the duplicate check of every append is mostly misses: answer them from bloom filters, in the
    # SST files and in the memtable (the memtable one made the check ~2.5x cheaper here)
    options.set_memtable_prefix_bloom_ratio(0.1)
    options.set_memtable_whole_key_filtering(True)
    table = BlockBasedOptions()
    table.set_bloom_filter(10, False)
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
        size_raw = self._db.get(_META_SIZE)
        stored_format = self._db.get(_META_FORMAT)
        if size_raw is not None and stored_format != _FORMAT:
            self._db.close()
            raise ProofError(f"{self.path} holds a ledger of another on-disk format "
                             f"({(stored_format or b'untiled').decode()}), not {_FORMAT.decode()}")
        if stored_alg is None:
            self._db.put(_META_ALG, HashAlgorithm(alg).value.encode())
        if stored_format is None:
            self._db.put(_META_FORMAT, _FORMAT)
        self.alg = HashAlgorithm(alg)
        compacted_raw = self._db.get(_META_COMPACTED)
        self.compacted_before = _UNPACK_U64(compacted_raw)[0] if compacted_raw else 0
        try:
            self.store = RocksNodeStore(self._db, self.alg, _UNPACK_U64(size_raw)[0] if size_raw else 0)
        except ProofError:
            self._db.close()
            raise
        self._staged_hashes: dict[bytes, int] = {}
        self._staged_ids: dict[bytes, int] = {}

    # ------------------------------------------------------------------ writing
    @property
    def size(self) -> int:
        return self.store.size

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
        if type(event_hash) is not bytes or len(event_hash) != self.alg.digest_size:
            raise ProofError(f"event hashes must be {self.alg.digest_size} bytes")
        if self.index_of(event_hash) is not None:
            return None
        index = self.store.append_leaf_hash(_LEAF_HASH[self.alg](b"\x00" + event_hash).digest())
        value = _PACK_U64(index)
        stage = self.store.stage
        stage(_HASH_INDEX + event_hash, value)
        self._staged_hashes[event_hash] = index
        if event_id is not None:
            stage(_ID_INDEX + event_id, value)
            self._staged_ids[event_id] = index
        return index

    def append_many(self, event_hashes: Sequence[bytes], event_ids: Sequence[bytes] | None = None,
                    ) -> list[int | None]:
        """Append a batch (each new event hash once); per input the leaf index or None (already in).

        Why a batch path: the duplicate check is one multi-get, and when the batch is all new
        (the normal case) the leaves, their nodes and the index entries are produced by C-level
        ``map`` passes over the whole batch -- no Python frame per leaf. Same tree as one by one.
        """
        n = len(event_hashes)
        if event_ids is not None and len(event_ids) != n:
            raise ProofError("event_ids must match event_hashes one to one")
        if not n:
            return []
        digest = self.alg.digest_size
        if set(map(type, event_hashes)) != {bytes} or set(map(len, event_hashes)) != {digest}:
            raise ProofError(f"event hashes must be {digest} bytes")
        keys: list[Any] = list(map(_HASH_INDEX.__add__, event_hashes))
        found = cast(list[bytes | None], self._db.get(keys))
        staged = self._staged_hashes
        start = self.store.size
        stage = self.store.stage
        if found.count(None) == n and len(unique := set(event_hashes)) == n and staged.keys().isdisjoint(unique):
            fresh = event_hashes if isinstance(event_hashes, list) else list(event_hashes)
            indices = range(start, start + n)
            packed = list(map(_PACK_U64, indices))
            staged.update(zip(fresh, indices, strict=True))
            put = self.store.batch_put()  # the bound method: one Python call per index entry, not two
            for key, value in zip(keys, packed, strict=True):
                put(key, value)
            if event_ids is not None:
                self._staged_ids.update(zip(event_ids, indices, strict=True))
                for key, value in zip(map(_ID_INDEX.__add__, event_ids), packed, strict=True):
                    put(key, value)
            result: list[int | None] = list(indices)
        else:
            fresh = []
            result = []
            for position, (event_hash, hit) in enumerate(zip(event_hashes, found, strict=True)):
                if hit is not None or event_hash in staged:
                    result.append(None)
                    continue
                index = start + len(fresh)
                fresh.append(event_hash)
                staged[event_hash] = index
                value = _PACK_U64(index)
                stage(keys[position], value)
                if event_ids is not None:
                    stage(_ID_INDEX + event_ids[position], value)
                    self._staged_ids[event_ids[position]] = index
                result.append(index)
        if fresh:
            leaf = _LEAF_HASH[self.alg]
            self.store.append_leaf_hashes(list(map(_DIGEST, map(leaf, map(b"\x00".__add__, fresh)))))
        return result

    def commit(self) -> None:
        """Write staged tiles, in-progress tiles, index entries and the size in one atomic batch."""
        self.store.stage(_META_SIZE, _PACK_U64(self.store.size))
        self._db.write(self.store.take_batch())
        self.store.written()
        self._staged_hashes.clear()
        self._staged_ids.clear()

    # ------------------------------------------------------------------ reading
    def _check(self, index: int) -> None:
        if index < self.compacted_before:
            raise MissingNodeError(f"leaf {index} was compacted away (the log keeps leaves >= "
                                   f"{self.compacted_before})")

    def _size_arg(self, name: str, value: int | None, minimum: int) -> int:
        if value is None:
            return self.size
        if type(value) is not int or not minimum <= value <= self.size:
            raise ProofError(f"{name} {value!r} is outside the log [{minimum}, {self.size}]")
        return value

    def root(self, size: int | None = None) -> bytes:
        tree_size = self._size_arg("size", size, 0)
        if 0 < tree_size < self.compacted_before:
            raise MissingNodeError(f"tree size {size} was compacted away (sizes >= {self.compacted_before} remain)")
        return root_from_nodes(self.store, tree_size, self.alg)

    def leaf_hash(self, index: int) -> bytes:
        self._check(index)
        if type(index) is not int or not 0 <= index < self.size:
            raise ProofError(f"leaf index {index!r} is not in a log of size {self.size}")
        found = self.store.get_node(0, index)
        if found is None:
            raise MissingNodeError(f"node store has no hash for leaf {index}")
        return found

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        self._check(index)
        return inclusion_proof_from_nodes(self.store, index, self._size_arg("size", size, 1), self.alg)

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        if 0 < size1 < self.compacted_before:
            raise MissingNodeError(f"tree size {size1} was compacted away (sizes >= {self.compacted_before} remain)")
        return consistency_proof_from_nodes(self.store, size1, self._size_arg("size2", size2, 0), self.alg)

    # ------------------------------------------------------------------ maintenance
    def compact(self, before: int) -> int:
        """Drop the complete tiles inside leaves ``[0, before)``; returns the tile-levels touched.

        Every node a proof about a leaf ``>= before`` (in a tree of size ``>= before``) needs from
        ``[0, before)`` is in :func:`compaction_keep`, and at tile-level ``t`` those all lie in the
        tile ``before >> (8t+8)`` that straddles ``before`` -- so tiles ``[0, before >> (8t+8))``
        go, one ``delete_range`` each (the straddling tile stays whole: < 16 KB per tile-level).
        The event index stays, so a redelivered old event is still recognised, not appended twice.
        """
        self.commit()
        if not 0 <= before <= self.size:
            raise ProofError(f"compaction point {before} is outside the log [0, {self.size}]")
        touched = 0
        for t in range(-(-before.bit_length() // TILE_HEIGHT)):
            end = before >> (TILE_HEIGHT * t + TILE_HEIGHT)
            if end > 0:
                self._db.delete_range(tile_key(t, 0), tile_key(t, end))
                touched += 1
        self.store.forget_cache()
        self.compacted_before = max(self.compacted_before, before)
        self._db.put(_META_COMPACTED, _PACK_U64(self.compacted_before))
        return touched

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

        Why: appending 10 M leaves through the write path works but a bulk load is faster (no
        memtable, no compaction of overlapping files) -- it is how a large ledger is restored or
        how the benchmark sets up its 10 M-leaf tree. Same keys and bytes as appends.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        say = progress or (lambda _msg: None)
        started = time.perf_counter()
        leaf_hashes = [leaf_hash(h, alg) for h in event_hashes]
        nodes = MemoryNodeStore.from_leaf_hashes(leaf_hashes, alg)
        say(f"hashed {len(leaf_hashes)} leaves and their subtrees in {time.perf_counter() - started:.1f} s")
        del leaf_hashes
        d = HashAlgorithm(alg).digest_size
        size = len(event_hashes)
        levels = nodes._levels
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            files = []
            if index:
                order = sorted(range(size), key=event_hashes.__getitem__)
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
            tile_levels = -(-size.bit_length() // TILE_HEIGHT)
            tiles_file = os.path.join(tmp, "tiles.sst")
            writer = SstFileWriter(options=Options(raw_mode=True))
            writer.open(tiles_file)
            for t in range(tile_levels):  # b"p" keys sort before b"t" keys
                complete = size >> (TILE_HEIGHT * t + TILE_HEIGHT)
                parts = [levels[TILE_HEIGHT * t + j][(complete << (TILE_HEIGHT - j)) * d :]
                         for j in range(min(TILE_HEIGHT, len(levels) - TILE_HEIGHT * t))]
                if any(parts):
                    writer[_partial_key(t)] = b"".join(parts)
            for t in range(tile_levels):
                bottom = TILE_HEIGHT * t
                for i in range(size >> (bottom + TILE_HEIGHT)):
                    writer[tile_key(t, i)] = b"".join([
                        levels[bottom + j][(i << (TILE_HEIGHT - j)) * d : ((i + 1) << (TILE_HEIGHT - j)) * d]
                        for j in range(TILE_HEIGHT)])
            writer.finish()
            files.append(tiles_file)
            say(f"wrote tile SST after {time.perf_counter() - started:.1f} s")
            db = _open(path)
            if db.get(_META_SIZE) is not None:
                db.close()
                raise ProofError(f"{path} already holds a log; bulk_build needs an empty directory")
            db.ingest_external_file(files)
            db.put(_META_ALG, HashAlgorithm(alg).value.encode())
            db.put(_META_FORMAT, _FORMAT)
            db.put(_META_SIZE, _PACK_U64(size))
            db.close()
        say(f"ingested after {time.perf_counter() - started:.1f} s")
        return cls(path, alg)
