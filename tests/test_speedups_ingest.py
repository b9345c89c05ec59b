"""C ingest helpers against their Python twins: the Merkle root (two SHA-256 chains interleaved with
SHA-NI) against the RFC 9162 one, and ``slot_objects`` against the dataclass constructor."""

from __future__ import annotations

import gc
import hashlib
import sys
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarmlog.streams import speedups
from swarmlog.streams.chain import _REF_FIELDS, ChainWriter, EventRef
from swarmlog.streams.codec import default_store
from swarmlog.streams.envelope import ZERO_HASH, EnvelopeCodec
from swarmlog.streams.identity import Identity
from swarmlog.streams.merkle import root as merkle_root

native = speedups.native
pytestmark = pytest.mark.skipif(native is None, reason="C extension not built (no compiler) or SWARMLOG_SPEEDUPS=0")
_IDENTITY = Identity.generate("speedups-ingest")


@pytest.mark.parametrize("hardware", [True, False])
def test_every_size_up_to_two_seal_batches(hardware: bool) -> None:
    """Odd and even counts at every level: the unpaired node is promoted, pairs are hashed two at a time."""
    assert native is not None
    hashes = [hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(2100)]
    before = native.set_hardware_sha(hardware)
    try:
        for n in [*range(0, 70), 127, 128, 129, 255, 256, 257, 1023, 1024, 1025, 2047, 2048, 2100]:
            assert native.merkle_root_leaves(hashes[:n]) == merkle_root(hashes[:n]), n
    finally:
        native.set_hardware_sha(before)


@pytest.mark.parametrize("hardware", [True, False])
@settings(max_examples=100, deadline=None)
@given(leaves=st.lists(st.binary(max_size=80), max_size=40))
def test_leaves_of_any_length(hardware: bool, leaves: list[bytes]) -> None:
    """Leaves that are not 32-byte event hashes take the general path; same root."""
    assert native is not None
    before = native.set_hardware_sha(hardware)
    try:
        assert native.merkle_root_leaves(leaves) == merkle_root(leaves)
    finally:
        native.set_hardware_sha(before)


def test_sibling_order_matters() -> None:
    """Two interleaved chains must not swap their outputs: swapping two leaves changes the root."""
    assert native is not None
    a, b, c = (hashlib.sha256(x).digest() for x in (b"a", b"b", b"c"))
    assert native.merkle_root_leaves([a, b, c]) != native.merkle_root_leaves([b, a, c])
    assert native.merkle_root_leaves([a, b, c]) == merkle_root([a, b, c])


def test_slot_objects_equal_the_constructor() -> None:
    assert native is not None
    n = 300
    ids = [i.to_bytes(16, "big") for i in range(n)]
    parts = [i % 6 for i in range(n)]
    names = [f"t/{p}" for p in parts]
    seqs = [i // 6 for i in range(n)]
    digests = [hashlib.sha256(bytes([i % 256])).digest() for i in range(n)]
    before = sys.getrefcount(digests[7])
    refs = native.slot_objects(EventRef, _REF_FIELDS, (ids, "t", parts, names, seqs, digests), n)
    held = sys.getrefcount(digests[7])
    del refs
    gc.collect()
    released = sys.getrefcount(digests[7])
    assert (held, released) == (before + 1, before)  # one reference per field while the object lives
    refs = native.slot_objects(EventRef, _REF_FIELDS, (ids, "t", parts, names, seqs, digests), n)
    assert refs == [EventRef(ids[i], "t", parts[i], names[i], seqs[i], digests[i]) for i in range(n)]


@dataclass(slots=True)
class _Base:
    a: object


@dataclass(slots=True)
class _Child(_Base):
    b: object


def test_slot_objects_inherited_slots_and_errors() -> None:
    assert native is not None
    objs = native.slot_objects(_Child, ("a", "b"), ([1, 2], "x"), 2)
    assert objs == [_Child(1, "x"), _Child(2, "x")]
    with pytest.raises(TypeError, match="__slots__ member"):
        native.slot_objects(_Child, ("a", "__init__"), ([1], [2]), 1)
    with pytest.raises(ValueError, match="column length"):
        native.slot_objects(_Child, ("a", "b"), ([1, 2], [3]), 2)


@pytest.mark.parametrize("hardware", [True, False])
@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(0, 300), min_size=1, max_size=120), partitions=st.integers(1, 7),
       salt=st.integers(0, 1000))
def test_chain_many_lanes_hashed_in_pairs_keep_every_link(hardware: bool, sizes: list[int], partitions: int,
                                                          salt: int) -> None:
    """chain_many hashes two lanes' events at a time; whatever the envelope lengths (so block counts
    and tails differ between the pair), every event hash is SHA-256 of its value and every prev_hash
    is the lane's previous event hash."""
    assert native is not None
    identity = _IDENTITY
    store = default_store()
    entry = store.for_event_type("deadletter.recorded")
    writer = ChainWriter(identity, store)
    codec = EnvelopeCodec(store)
    bodies = [bytes((salt + i + j) & 0xFF for j in range(size)) for i, size in enumerate(sizes)]
    keys = [f"k{(salt * 7 + i) % 11}".encode() for i in range(len(sizes))]
    before = native.set_hardware_sha(hardware)
    try:
        refs, _, values = writer.append_many_columns(entry, bodies, keys, "t", partitions)
        refs2, _, values2 = writer.append_many_columns(entry, bodies[::-1], keys, "t", partitions)
    finally:
        native.set_hardware_sha(before)
    last: dict[int, bytes] = {}
    for ref, value in zip(refs + refs2, values + values2, strict=True):
        event = codec.decode(value)
        assert ref.hash == hashlib.sha256(value).digest() == event.hash
        assert event.prev_hash == last.get(ref.partition, ZERO_HASH)
        assert event.seq == ref.seq
        last[ref.partition] = ref.hash
    for (_, partition), lane in writer._lanes.items():
        assert lane.last_hash == last[partition]
