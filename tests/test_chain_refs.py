"""``EventRefs``, the column-backed references of a bulk append, against eager ``EventRef``s.

The bulk path keeps references as columns and builds ``EventRef`` objects only when read;
these tests pin that what is read equals what the eager path returns, on the C and the
pure-Python chaining path, and that each reference points at the record it belongs to.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from swarmlog.streams import chain as chain_module
from swarmlog.streams import speedups
from swarmlog.streams.chain import ChainWriter, EventRef, EventRefs
from swarmlog.streams.codec import default_store, encode_body
from swarmlog.streams.identity import Identity

_IDENTITY = Identity.generate("chain-refs")
_ENTRY = default_store().for_event_type("deadletter.recorded")
_PATHS = ["c", "python"] if speedups.native is not None else ["python"]


def _payload(i: int) -> dict[str, object]:
    return {"reason": "malformed", "detail": "d" * (i % 5), "source_topic": "t", "source_partition": i % 3,
            "source_offset": i, "original_value": b"\x00" * (i % 7), "worker": "w",
            "recorded_ms": 1_700_000_000_000 + i}


@pytest.fixture(params=_PATHS)
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "python":
        monkeypatch.setattr(speedups, "native", None)
    yield request.param


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fixed clock and ids in the chain module, so two writers produce the same bytes.

    Every call gets the same ids (the same call on the other writer must, too); the chain
    links still differ per event, and nothing here relies on ids being unique."""
    monkeypatch.setattr(chain_module, "time", SimpleNamespace(time_ns=lambda: 1_700_000_000_123_000_000,
                                                              time=lambda: 1_700_000_000.123))
    monkeypatch.setattr(chain_module, "uuid7", lambda: bytes(range(16)))
    # the C path packs ids from (ms, first counter, salt); the Python path takes a list
    monkeypatch.setattr(chain_module, "uuid7_reserve", lambda n: (1_700_000_000_123, 0, 0x1234))
    monkeypatch.setattr(chain_module, "uuid7_batch", lambda n: [i.to_bytes(16, "big") for i in range(n)])


def _writer() -> ChainWriter:
    writer = ChainWriter(_IDENTITY)
    ident = writer.store.for_event_type("trust.identity")
    writer.append(ident, encode_body(ident, writer.identity_payload()), _IDENTITY.did, "trust", 0, sign=True)
    return writer


def _batch(start: int, n: int) -> tuple[list[bytes], list[bytes]]:
    bodies = [encode_body(_ENTRY, _payload(i)) for i in range(start, start + n)]
    keys = [f"subject-{i % 11}".encode() for i in range(start, start + n)]
    return bodies, keys


def test_lazy_refs_equal_eager_refs_and_same_bytes(path: str, frozen: None) -> None:
    eager_writer, lazy_writer = _writer(), _writer()
    refs = EventRefs("t", 4)
    eager: list[EventRef] = []
    for start, n in ((0, 1), (1, 300), (301, 57)):  # several calls continue the same chains
        bodies, keys = _batch(start, n)
        eager_refs, eager_parts, eager_values = eager_writer.append_many_columns(_ENTRY, bodies, keys, "t", 4)
        parts, values = lazy_writer.append_many_into(refs, _ENTRY, bodies, keys, "t", 4)
        assert (parts, values) == (eager_parts, eager_values)
        eager.extend(eager_refs)
    assert len(refs) == len(eager) == 358
    assert list(refs) == eager
    assert refs == eager and refs != eager[:-1]
    assert [refs[i] for i in range(len(refs))] == eager
    assert refs[-1] == eager[-1] and refs[10:20] == eager[10:20] and refs[::-7] == eager[::-7]
    # both writers have the same lane state afterwards: the next seal covers the same lanes and hashes
    # (the seal records themselves differ: ML-DSA-65 signing is randomised)
    eager_cut, lazy_cut = eager_writer.seal_begin(), lazy_writer.seal_begin()
    assert eager_cut is not None and lazy_cut is not None and eager_cut.lanes == lazy_cut.lanes


def test_each_ref_points_at_its_record(path: str) -> None:
    writer = _writer()
    refs = EventRefs("t", 5)
    bodies, keys = _batch(0, 200)
    parts, values = writer.append_many_into(refs, _ENTRY, bodies, keys, "t", 5)
    next_seq: dict[int, int] = {}
    for ref, key, part, value in zip(refs, keys, parts, values, strict=True):
        assert part == ref.partition == zlib.crc32(key) % 5
        assert ref.topic == "t" and ref.lane == f"t/{part}"
        assert ref.hash == hashlib.sha256(value).digest()
        assert ref.event_id == value[10:26]  # after the 2-byte magic and the 8-byte schema fingerprint
        assert ref.seq == next_seq.get(part, 0)
        next_seq[part] = ref.seq + 1


def test_refs_bounds_and_unhashable() -> None:
    refs = EventRefs("t", 2)
    assert len(refs) == 0 and list(refs) == [] and refs == [] and refs[0:5] == []
    with pytest.raises(IndexError):
        refs[0]
    with pytest.raises(TypeError):
        hash(refs)
    assert refs != "not a sequence of refs"
