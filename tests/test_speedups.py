"""The optional C extension (``streams/_speedups.c``) against the pure-Python reference.

Every C hot path must give byte-identical output to the Python code it replaces:

* SHA-256 (SHA-NI and portable C) against hashlib, CRC-32 partitions against zlib,
  Merkle roots against ``merkle.root``;
* the generic Avro encoder against the generated Python encoder and fastavro, for every
  shipped schema and for synthetic schemas covering every Avro type and union rule; on
  values of unusual types the C encoder must either produce the Python bytes or defer;
* ``ChainWriter.append_many`` + ``seal`` with and without the extension: same Kafka
  records, same references, same lane state, same seal statements, and logs that verify;
* the codec / chain / verify test modules pass with ``SWARMLOG_SPEEDUPS=0`` too.
"""

from __future__ import annotations

import enum
import hashlib
import io
import os
import subprocess
import sys
import zlib
from collections import OrderedDict
from pathlib import Path
from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swarmlog.streams import chain as chain_module
from swarmlog.streams import speedups
from swarmlog.streams.chain import ChainWriter
from swarmlog.streams.codec import SchemaEntry, SchemaStore, default_store, encode_body
from swarmlog.streams.identity import Identity
from swarmlog.streams.ids import pack_ids
from swarmlog.streams.merkle import root as merkle_root
from swarmlog.streams.verify import RawRecord, Status, Verifier
from tests.test_schemas import CURRENT_NAMES, _entry_strategy

native = speedups.native
pytestmark = pytest.mark.skipif(native is None, reason="C extension not built (no compiler) or SWARMLOG_SPEEDUPS=0")
EXAMPLES = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _fastavro_bytes(entry: SchemaEntry, record: Any) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, entry.parsed, record)
    return buf.getvalue()


# ---------------------------------------------------------------------------- primitives
@pytest.mark.parametrize("hardware", [True, False])
@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=300))
def test_sha256_matches_hashlib(hardware: bool, data: bytes) -> None:
    assert native is not None
    before = native.set_hardware_sha(hardware)
    try:
        assert native.sha256(data) == hashlib.sha256(data).digest()
    finally:
        native.set_hardware_sha(before)


@pytest.mark.parametrize("hardware", [True, False])
def test_sha256_every_length_around_block_bounds(hardware: bool) -> None:
    assert native is not None
    before = native.set_hardware_sha(hardware)
    try:
        for n in [*range(0, 260), 1000, 4096, 65537]:
            data = bytes((i * 7 + n) & 0xFF for i in range(n))
            assert native.sha256(data) == hashlib.sha256(data).digest(), n
    finally:
        native.set_hardware_sha(before)


@given(keys=st.lists(st.binary(max_size=40), max_size=50), count=st.integers(1, 300))
def test_partitions_are_zlib_crc32_modulo(keys: list[bytes], count: int) -> None:
    assert native is not None
    assert native.partitions(keys, count) == [zlib.crc32(k) % count for k in keys]


@given(st.lists(st.binary(min_size=32, max_size=32), max_size=70))
def test_merkle_root_matches_pure_python(hashes: list[bytes]) -> None:
    assert native is not None
    assert native.merkle_root_leaves(hashes) == merkle_root(hashes)


def test_merkle_root_sizes_up_to_a_seal_batch() -> None:
    assert native is not None
    hashes = [hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(1100)]
    for n in [1, 2, 3, 5, 8, 63, 64, 65, 1023, 1024, 1025, 1100]:
        assert native.merkle_root_leaves(hashes[:n]) == merkle_root(hashes[:n]), n


# ---------------------------------------------------------------------------- Avro encoder
@pytest.mark.parametrize("full_name", CURRENT_NAMES)
@EXAMPLES
@given(data=st.data())
def test_c_encoder_is_byte_identical_for_every_shipped_schema(full_name: str, data: st.DataObject) -> None:
    entry = default_store().current(full_name)
    record, _ = data.draw(_entry_strategy(full_name))
    c_only = entry.encode_body.try_encode(record)  # type: ignore[attr-defined]
    assert c_only is not None, "well-typed records must not need the Python fallback"
    assert entry.py_encode_body is not None
    assert c_only == entry.py_encode_body(record) == _fastavro_bytes(entry, record)
    assert entry.encode_body.encode_many([record, record]) == [c_only, c_only]  # type: ignore[attr-defined]


@pytest.mark.parametrize("full_name", CURRENT_NAMES)
@EXAMPLES
@given(data=st.data(), prefix=st.binary(max_size=3))
def test_c_decoder_returns_what_python_returns_for_every_shipped_schema(full_name: str, data: st.DataObject,
                                                                         prefix: bytes) -> None:
    entry = default_store().current(full_name)
    record, _ = data.draw(_entry_strategy(full_name))
    buf = prefix + entry.encode_body(record)
    c_only = entry.decode_body.try_decode(buf, len(prefix))  # type: ignore[attr-defined]
    assert c_only is not None, "well-formed bodies must not need the Python fallback"
    assert entry.py_decode_body is not None
    assert repr(c_only) == repr(entry.py_decode_body(buf, len(prefix)))


def _outcome(fn: Any, *args: Any) -> str:
    try:
        return repr(fn(*args))
    except Exception as exc:
        return type(exc).__name__ + ": " + str(exc)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(record=st.deferred(lambda: _SYNTH_STRATEGY), cut=st.integers(0, 400), flips=st.lists(
    st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=3), tail=st.binary(max_size=4))
def test_c_decoder_on_corrupt_input_matches_python_or_defers(record: dict[str, Any], cut: int,
                                                             flips: list[tuple[int, int]], tail: bytes) -> None:
    """Truncated, flipped, extended bodies: C decodes them exactly as Python does, or lets Python decide."""
    assert _SYNTH.py_encode_body is not None and _SYNTH.py_decode_body is not None
    buf = bytearray(_SYNTH.py_encode_body(record))
    for position, byte in flips:
        if buf:
            buf[position % len(buf)] = byte
    data = bytes(buf[:cut] if cut < len(buf) else buf) + tail
    c_only = _SYNTH.decode_body.try_decode(data, 0)  # type: ignore[attr-defined]
    python = _outcome(_SYNTH.py_decode_body, data, 0)
    if c_only is not None:
        assert repr(c_only) == python
    assert _outcome(_SYNTH.decode_body, data, 0) == python


@given(data=st.binary(max_size=200))
def test_c_envelope_decoder_on_garbage_matches_python(data: bytes) -> None:
    entry = default_store().current("swarmlog.core.Envelope")
    assert entry.py_decode_body is not None
    assert _outcome(entry.decode_body, data, 0) == _outcome(entry.py_decode_body, data, 0)


def test_envelope_seal_and_statement_schemas_use_the_c_codec() -> None:
    store = default_store()
    for name in ("swarmlog.core.Envelope", "swarmlog.core.Seal", "swarmlog.core.SealStatement"):
        assert isinstance(store.current(name).encode_body, native.Encoder)  # type: ignore[union-attr]
        assert isinstance(store.current(name).decode_body, native.Decoder)  # type: ignore[union-attr]


_color = {"type": "enum", "name": "Color", "symbols": ["RED", "GREEN", "BLUE"]}
_hash = {"type": "fixed", "name": "H4", "size": 4}
_node = {"type": "record", "name": "Node", "fields": [
    {"name": "value", "type": "int"},
    {"name": "next", "type": ["null", "Node"], "default": None},
]}
SYNTHETIC: dict[str, Any] = {
    "type": "record", "name": "Everything", "namespace": "t", "fields": [
        {"name": "n", "type": "null"},
        {"name": "b", "type": "boolean"},
        {"name": "i", "type": "int"},
        {"name": "l", "type": "long"},
        {"name": "f", "type": "float"},
        {"name": "d", "type": "double"},
        {"name": "by", "type": "bytes"},
        {"name": "s", "type": "string"},
        {"name": "fx", "type": _hash},
        {"name": "fx2", "type": "t.H4"},
        {"name": "e", "type": _color},
        {"name": "arr", "type": {"type": "array", "items": ["null", "long", "string"]}},
        {"name": "m", "type": {"type": "map", "values": {"type": "array", "items": "double"}}},
        {"name": "int_or_long", "type": ["null", "int", "long"]},
        {"name": "float_or_double", "type": ["null", "float", "double"]},
        {"name": "enum_or_string", "type": ["null", "t.Color", "string"]},
        {"name": "fixed_or_bytes", "type": ["t.H4", "bytes"]},
        {"name": "map_or_string", "type": [{"type": "map", "values": "int"}, "string"]},
        {"name": "record_or_long", "type": ["long", _node]},
        {"name": "bool_or_int", "type": ["boolean", "int", "string"]},
        {"name": "linked", "type": "Node"},
        {"name": "with_default", "type": "string", "default": "dflt"},
        {"name": "bytes_default", "type": "bytes", "default": "\u00ff\u0001"},
        {"name": "opt", "type": ["null", "string"], "default": None},
        {"name": "big_map", "type": {"type": "map", "values": "string"}, "default": {}},
    ]}


def _synthetic_store() -> SchemaStore:
    store = SchemaStore()
    store.add_schema(SYNTHETIC, source="t/Everything.avsc")
    return store


_SYNTH_STORE = _synthetic_store()
_SYNTH = _SYNTH_STORE.current("t.Everything")


def _values(schema: Any, named: dict[str, Any], depth: int = 0) -> st.SearchStrategy[Any]:
    """Valid values of a parsed schema, including the Python types the encoders also accept
    (ints for doubles, tuples for arrays); recursion bounded through the null branch."""
    if isinstance(schema, str):
        prim = {"null": st.none(), "boolean": st.booleans(),
                "int": st.integers(-(2**31), 2**31 - 1) | st.integers(0, 200),
                "long": st.integers(-(2**63), 2**63 - 1) | st.integers(-70, 9000),
                "float": st.floats(width=32, allow_nan=False) | st.integers(-(2**24), 2**24),
                "double": st.floats(allow_nan=False) | st.integers(-(2**53), 2**53),
                "bytes": st.binary(max_size=20), "string": st.text(max_size=10)}
        return prim[schema] if schema in prim else _values(named[schema], named, depth)
    if isinstance(schema, list):
        if depth > 3 and "null" in schema:
            return st.none()
        return st.one_of([_values(b, named, depth + 1) for b in schema])
    kind = schema["type"]
    if kind in ("null", "boolean", "int", "long", "float", "double", "bytes", "string"):
        return _values(kind, named, depth)
    if kind == "enum":
        return st.sampled_from(schema["symbols"])
    if kind == "fixed":
        return st.binary(min_size=schema["size"], max_size=schema["size"])
    if kind == "array":
        items = st.lists(_values(schema["items"], named, depth + 1), max_size=3)
        return items | items.map(tuple)
    if kind == "map":
        return st.dictionaries(st.text(max_size=5), _values(schema["values"], named, depth + 1), max_size=3)
    fields = {f["name"]: _values(f["type"], named, depth + 1) for f in schema["fields"]}
    optional = {f["name"]: _values(f["type"], named, depth + 1) for f in schema["fields"] if "default" in f}
    required = {k: v for k, v in fields.items() if k not in optional}
    return st.fixed_dictionaries(required, optional=optional)


_SYNTH_STRATEGY = _values(_SYNTH.parsed, _SYNTH.parsed.get("__named_schemas", {}))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(record=_SYNTH_STRATEGY)
def test_c_encoder_covers_every_avro_type_and_union_rule(record: dict[str, Any]) -> None:
    assert _SYNTH.py_encode_body is not None
    expected = _SYNTH.py_encode_body(record)
    # fastavro writes a bytes default given as JSON text only when it is passed explicitly
    assert expected == _fastavro_bytes(_SYNTH, {"bytes_default": b"\xff\x01", **record})
    assert _SYNTH.encode_body.try_encode(record) == expected  # type: ignore[attr-defined]


class _Int(enum.IntEnum):
    ONE = 1


class _Str(str):
    pass


class _Dict(dict):  # type: ignore[type-arg]
    pass


_ODD = st.sampled_from([
    None, True, False, 0, -1, 2**31, -(2**31) - 1, 2**63, -(2**63) - 1, 2**70, 1.5, -0.0, 3.4e39, float("inf"),
    float("nan"), "", "RED", "x" * 20, "\udcff", b"", b"abcd", b"\x00" * 5, bytearray(b"abcd"),
    memoryview(b"abcd"), [], [1, "a", None], (1, 2), {}, {"k": [1.0]}, {"__record__": 1}, {"value": 1},
    _Int.ONE, _Str("GREEN"), _Dict(value=3), OrderedDict(a=1), object(),
])


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid=_SYNTH_STRATEGY, field=st.sampled_from([f["name"] for f in SYNTHETIC["fields"]]), odd=_ODD,
       drop=st.booleans())
def test_c_encoder_on_odd_values_is_byte_identical_or_defers(valid: dict[str, Any], field: str, odd: Any,
                                                            drop: bool) -> None:
    """Wrong or unusual types: the C encoder either writes exactly what Python writes or defers to it."""
    record = dict(valid)
    if drop:
        record.pop(field, None)
    else:
        record[field] = odd
    assert _SYNTH.py_encode_body is not None
    try:
        expected: bytes | type[BaseException] = _SYNTH.py_encode_body(record)
    except Exception as exc:
        expected = type(exc)
    c_only = _SYNTH.encode_body.try_encode(record)  # type: ignore[attr-defined]
    if c_only is not None:
        assert c_only == expected
    try:
        combined: bytes | type[BaseException] = _SYNTH.encode_body(record)
    except Exception as exc:
        combined = type(exc)
    assert combined == expected


def test_encode_errors_still_name_the_field() -> None:
    from swarmlog.streams.codec import EncodeError

    entry = default_store().for_event_type("agents.heartbeat")
    with pytest.raises(EncodeError, match="current_load"):
        encode_body(entry, {"agent_id": "a", "health_score": 1.0, "current_load": "x", "latency_ms": 1.0})


# ---------------------------------------------------------------------------- chain + seal
MS, FIRST, SALT = 1_790_000_000_123, 12345, 0xA1B2C3D4


@pytest.fixture(scope="module")
def identity() -> Identity:
    return Identity.generate("speedups-test")


def _deterministic(monkeypatch: pytest.MonkeyPatch) -> None:
    """Same ids and clock for both writers, so their outputs can be compared byte for byte."""
    counter = iter(range(10**9))
    monkeypatch.setattr(chain_module, "uuid7", lambda: pack_ids(MS, next(counter), 1, SALT)[0])
    monkeypatch.setattr(chain_module, "uuid7_batch", lambda n: pack_ids(MS, FIRST, n, SALT))
    monkeypatch.setattr(chain_module, "uuid7_reserve", lambda n: (MS, FIRST, SALT))

    class _Clock:
        @staticmethod
        def time_ns() -> int:
            return MS * 1_000_000

        @staticmethod
        def time() -> float:
            return MS / 1000

    monkeypatch.setattr(chain_module, "time", _Clock)


def _run(identity: Identity, steps: list[tuple[int, int]], use_native: bool,
         monkeypatch: pytest.MonkeyPatch) -> tuple[list[Any], list[Any], list[Any]]:
    monkeypatch.setattr(speedups, "native", native if use_native else None)
    _deterministic(monkeypatch)
    store = default_store()
    entry = store.for_event_type("agents.heartbeat")
    ident = store.for_event_type("trust.identity")
    writer = ChainWriter(identity, store)
    writer.append(ident, encode_body(ident, writer.identity_payload()), identity.did, "trust", 0, sign=True)
    outputs: list[Any] = []
    refs: list[Any] = []
    seals: list[Any] = []
    for step, (size, partitions) in enumerate(steps):
        bodies = [entry.py_encode_body({"agent_id": f"a{step}-{i}", "health_score": 0.5, "current_load": i,  # type: ignore[misc]
                                        "latency_ms": 1.0}) for i in range(size)]
        keys = [f"agent-{(step * 31 + i) % 13}".encode() for i in range(size)]
        chunk_refs, records = writer.append_many(entry, bodies, keys, "agents", partitions)
        refs.extend(chunk_refs)
        outputs.extend(records)
        if step % 2:
            ref, value = writer.append(entry, bodies[0] if bodies else b"", "single", "agents", 1)
            refs.append(ref)
            outputs.append(value)
        if step % 3 == 2:
            for record in writer.seal():
                seal = writer.codec.decode_seal(record.value)
                statement = writer.codec.decode_statement(seal["statement"])
                seals.append((record.topic, record.partition, record.key, seal["lane"], seal["leaves"],
                               statement["lanes"], statement["created_ms"]))
    lanes = sorted((k, v.next_seq, v.last_hash, v.first_open_seq, list(v.open_hashes))
                   for k, v in writer._lanes.items())
    return [*outputs, lanes], refs, seals


@EXAMPLES
@given(steps=st.lists(st.tuples(st.integers(0, 40), st.sampled_from([1, 3, 6])), min_size=1, max_size=8))
def test_append_many_and_seal_are_byte_identical_with_and_without_c(
        identity: Identity, steps: list[tuple[int, int]]) -> None:
    with pytest.MonkeyPatch.context() as mp:
        c_out, c_refs, c_seals = _run(identity, steps, True, mp)
        py_out, py_refs, py_seals = _run(identity, steps, False, mp)
    assert c_out == py_out
    assert c_refs == py_refs
    assert c_seals == py_seals


def test_c_built_log_verifies(identity: Identity) -> None:
    """A log built by the C path, fed to the (pure) verifier, authenticates every event."""


    store = default_store()
    entry = store.for_event_type("agents.heartbeat")
    ident = store.for_event_type("trust.identity")
    writer = ChainWriter(identity, store)
    _, ident_value = writer.append(ident, encode_body(ident, writer.identity_payload()), identity.did, "trust", 0,
                                   sign=True)
    payloads = [{"agent_id": f"agent-{i % 9}", "health_score": 0.9, "current_load": i, "latency_ms": 3.0}
                for i in range(700)]
    bodies = entry.encode_body.encode_many(payloads)  # type: ignore[attr-defined]
    keys = native.subject_keys(payloads, "agent_id")  # type: ignore[union-attr]
    assert keys == [p["agent_id"].encode() for p in payloads]
    per_partition: dict[int, list[bytes]] = {}
    for start in range(0, 700, 250):
        _, records = writer.append_many(entry, bodies[start:start + 250], keys[start:start + 250], "agents", 4)
        for partition, _key, value in records:
            per_partition.setdefault(partition, []).append(value)
        for seal in writer.seal():
            per_partition[seal.partition].append(seal.value)
    verifier = Verifier()
    statuses = [v.status for v in verifier.feed(RawRecord("trust", 0, 0, identity.did.encode(), ident_value))]
    for partition, values in sorted(per_partition.items()):
        for offset, value in enumerate(values):
            statuses += [v.status for v in verifier.feed(RawRecord("agents", partition, offset, b"k", value))]
    statuses += [v.status for v in verifier.finish()]
    assert statuses.count(Status.AUTHENTICATED) == 701
    assert verifier.problems == []


def test_subject_keys_defers_on_anything_unusual() -> None:
    assert native is not None
    assert native.subject_keys([{"a": "x"}, {"a": "é"}], "a") == [b"x", "é".encode()]
    for bad in ([{"a": 1}], [{}], [_Dict(a="x")], [{"a": _Str("x")}], [{"a": "\udcff"}]):
        assert native.subject_keys(bad, "a") is None


# ---------------------------------------------------------------------------- pure-Python path
def test_pure_python_path_passes_the_codec_chain_and_verify_tests() -> None:
    """SWARMLOG_SPEEDUPS=0 must give a working swarmlog: run those test modules without the extension
    (the in-process runs of the same modules use it)."""
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "SWARMLOG_SPEEDUPS": "0"}
    probe = subprocess.run([sys.executable, "-c", "from swarmlog.streams import speedups; print(speedups.enabled())"],
                           env=env, capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "False"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-p", "tests.support.no_deadline",
         "tests/test_codec.py",
         "tests/test_verify.py", "tests/test_schemas.py", "tests/test_merkle.py", "tests/test_produce_read.py"],
        cwd=root, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


def test_produce_each_stops_at_a_full_queue_and_propagates_other_errors() -> None:
    assert native is not None
    sent: list[tuple[Any, ...]] = []

    def produce(*args: Any) -> None:
        if args[1] == b"full" and not any(s[1] == b"full" for s in sent):
            sent.append(("refused", b"full"))
            raise BufferError("queue full")
        if args[1] == b"boom":
            raise RuntimeError("broker gone")
        sent.append(args)

    values, keys, parts = [b"a", b"full", b"c"], [b"k1", b"k2", b"k3"], [0, 1, 2]
    assert native.produce_each(produce, "t", values, keys, parts, 0) == 1
    assert native.produce_each(produce, "t", values, keys, parts, 1) == 3
    assert sent == [("t", b"a", b"k1", 0), ("refused", b"full"), ("t", b"full", b"k2", 1), ("t", b"c", b"k3", 2)]
    with pytest.raises(RuntimeError, match="broker gone"):
        native.produce_each(produce, "t", [b"boom"], [b"k"], [0], 0)


def test_chain_many_rejects_bad_input_before_touching_lane_state() -> None:
    assert native is not None
    open_lists: list[list[bytes] | None] = [[], None]
    next_seqs, last_hashes = [5, 0], [b"\x01" * 32, b"\x00" * 32]
    for bodies, parts in (([b"ok", "not bytes"], [0, 0]), ([b"ok", b"ok"], [0, 1])):
        with pytest.raises((TypeError, ValueError)):
            native.chain_many(b"h" * 10, b"\x02", MS, FIRST, SALT, bodies, [b"k", b"k"], parts,
                              [b"prefix", None], next_seqs, last_hashes, open_lists)
        assert open_lists == [[], None] and next_seqs == [5, 0] and last_hashes[0] == b"\x01" * 32
