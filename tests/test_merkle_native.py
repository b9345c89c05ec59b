"""The C Merkle root (two SHA-256 chains interleaved with SHA-NI) against the pure-Python RFC 9162 one."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarmlog.streams import speedups
from swarmlog.streams.merkle import root as merkle_root

native = speedups.native
pytestmark = pytest.mark.skipif(native is None, reason="C extension not built (no compiler) or SWARMLOG_SPEEDUPS=0")


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
