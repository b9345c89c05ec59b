"""The event catalogue in ``schemas/``: loading, conventions, codec round trips, evolution.

* every ``*.avsc`` loads through ``default_store()``;
* every payload record names its event type, topic and Kafka-key field, and follows the
  house rules (docs, enum defaults, optional = ``["null", T]`` with a null default ...);
* for every schema, hypothesis-generated records encode with the compiled codec to exactly
  the bytes fastavro writes, and decode back equal (defaulted fields may be omitted);
* old writer versions (``Name.v1.avsc``) decode into the current reader with defaults filled;
* defects found in the codec while writing these tests are pinned as regression tests at the end.
"""

from __future__ import annotations

import copy
import io
import json
import re
import shutil
from collections import Counter
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import swarmlog.schemas
from swarmlog.streams.codec import MAGIC, CodecError, SchemaEntry, SchemaStore, default_store

SCHEMA_ROOT = Path(swarmlog.schemas.__file__).parent
TOPICS = {
    "agents", "commands", "receipts", "sessions", "consensus", "trust", "market", "heal", "metrics", "swarm",
    "ledger", "deadletter",
}
PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
EVENT_TYPE_RE = re.compile(r"^[a-z]+\.[a-z][a-z0-9_]*$")
SYMBOL_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")
FIELD_RE = re.compile(r"^[a-z][a-z0-9_]*$")
TIME_POINTS = {"deadline_ms", "started_ms", "finished_ms", "effective_ms", "not_before_ms"}
EXAMPLES = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_MISSING = object()


# ---------------------------------------------------------------------------- catalogue
def _schema_files() -> list[Path]:
    return sorted(SCHEMA_ROOT.rglob("*.avsc"))


def _domain_files() -> list[Path]:
    """Schema files outside core/ (core/ holds the envelope, seals and shared named types)."""
    return [p for p in _schema_files() if p.relative_to(SCHEMA_ROOT).parts[0] != "core"]


def _current_entries() -> list[SchemaEntry]:
    return sorted((e for e in default_store().entries() if e.version == 0), key=lambda e: e.full_name)


def _payload_entries() -> list[SchemaEntry]:
    return [e for e in _current_entries() if e.event_type]


CURRENT_NAMES = [e.full_name for e in _current_entries()]
PAYLOAD_NAMES = [e.full_name for e in _payload_entries()]


def _walk_types(schema: Any) -> Iterator[dict[str, Any]]:
    """Every named type definition (record, enum, fixed) inside a schema JSON, the top one included."""
    if isinstance(schema, list):
        for branch in schema:
            yield from _walk_types(branch)
    elif isinstance(schema, dict):
        kind = schema.get("type")
        if kind in ("record", "error", "enum", "fixed"):
            yield schema
        if kind in ("record", "error"):
            for f in schema["fields"]:
                yield from _walk_types(f["type"])
        elif kind == "array":
            yield from _walk_types(schema["items"])
        elif kind == "map":
            yield from _walk_types(schema["values"])


def _walk_fields(schema: Any) -> Iterator[dict[str, Any]]:
    for t in _walk_types(schema):
        if t["type"] in ("record", "error"):
            yield from t["fields"]


def _walk_unions(schema: Any) -> Iterator[list[Any]]:
    def visit(t: Any) -> Iterator[list[Any]]:
        if isinstance(t, list):
            yield t
            for b in t:
                yield from visit(b)
        elif isinstance(t, dict):
            if t.get("type") == "array":
                yield from visit(t["items"])
            elif t.get("type") == "map":
                yield from visit(t["values"])

    for f in _walk_fields(schema):
        yield from visit(f["type"])


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text("utf-8"))


# ---------------------------------------------------------------------------- loading
def test_all_schemas_load_into_the_default_store() -> None:
    store = default_store()
    sources = {e.source for e in store.entries()}
    for path in _schema_files():
        rel = path.relative_to(SCHEMA_ROOT).as_posix()
        assert rel in sources, f"{rel} not loaded"
    assert len(store.event_types()) >= 50


def test_event_types_and_record_names_are_unique() -> None:
    current = [_load(p) for p in _schema_files() if ".v" not in p.name]
    event_types = Counter(s["event_type"] for s in current if "event_type" in s)
    assert [t for t, n in event_types.items() if n > 1] == []
    names = Counter(f"{s['namespace']}.{s['name']}" for s in current)
    assert [n for n, c in names.items() if c > 1] == []
    # ... and the store indexes each one under its own schema
    store = default_store()
    for s in current:
        if "event_type" in s:
            assert store.for_event_type(s["event_type"]).full_name == f"{s['namespace']}.{s['name']}"


@pytest.mark.parametrize("full_name", PAYLOAD_NAMES)
def test_payload_declares_event_type_topic_and_subject(full_name: str) -> None:
    entry = default_store().current(full_name)
    assert entry.event_type and EVENT_TYPE_RE.match(entry.event_type), entry.event_type
    assert entry.topic in TOPICS
    fields = {f["name"]: f for f in entry.schema_json["fields"]}
    assert entry.subject_field in fields, f"subject {entry.subject_field!r} is not a field"
    assert fields[entry.subject_field]["type"] == "string", "the subject (Kafka key) must be a plain string"


@pytest.mark.parametrize("path", _domain_files(), ids=lambda p: p.relative_to(SCHEMA_ROOT).as_posix())
def test_domain_schema_file_conventions(path: Path) -> None:
    schema = _load(path)
    domain = path.relative_to(SCHEMA_ROOT).parts[0]
    assert schema["type"] == "record"
    assert schema["name"] == path.name.split(".")[0], "one record per file, named after the file"
    assert schema["namespace"] == f"swarmlog.{domain}"
    for attr in ("event_type", "topic", "subject"):
        assert attr in schema, f"payload record without {attr!r}"
    assert schema["event_type"].split(".")[0] == domain


# ---------------------------------------------------------------------------- house rules
@pytest.mark.parametrize("path", _domain_files(), ids=lambda p: p.relative_to(SCHEMA_ROOT).as_posix())
def test_every_type_and_field_is_documented(path: Path) -> None:
    schema = _load(path)
    for t in _walk_types(schema):
        assert str(t.get("doc", "")).strip(), f"type {t['name']} has no doc"
    for f in _walk_fields(schema):
        assert FIELD_RE.match(f["name"]), f"field {f['name']} is not lower_snake_case"
        assert str(f.get("doc", "")).strip(), f"field {f['name']} has no doc"


@pytest.mark.parametrize("path", _domain_files(), ids=lambda p: p.relative_to(SCHEMA_ROOT).as_posix())
def test_enums_have_upper_snake_symbols_and_a_default(path: Path) -> None:
    for t in _walk_types(_load(path)):
        if t["type"] == "enum":
            assert all(SYMBOL_RE.match(s) for s in t["symbols"]), t["name"]
            assert t.get("default") in t["symbols"], f"enum {t['name']} needs a default symbol for evolution"


@pytest.mark.parametrize("path", _domain_files(), ids=lambda p: p.relative_to(SCHEMA_ROOT).as_posix())
def test_field_types_follow_the_conventions(path: Path) -> None:
    schema = _load(path)
    text = path.read_text("utf-8")
    assert "logicalType" not in text, "no logical types: times are long ms, ids are strings"
    for f in _walk_fields(schema):
        t = f["type"]
        if isinstance(t, list) and "null" in t:
            assert t[0] == "null" and len(t) == 2, f"{f['name']}: optional fields are ['null', T]"
            assert "default" in f and f["default"] is None, f"{f['name']}: optional fields default to null"
        base = t[1] if isinstance(t, list) and t[0] == "null" else t
        if f["name"].endswith("_ms"):
            assert base in ("long", "double"), f"{f['name']}: times and durations are long (or mean) ms"
        if f["name"].endswith("_at_ms") or f["name"] in TIME_POINTS:
            assert base == "long", f"{f['name']}: points in time are long ms since the epoch"
        # House rule: optional bytes are ['null', 'bytes']; a bytes default would have to be spelled as text.
        if base in ("bytes", "swarmlog.core.Hash32", "swarmlog.core.Uuid") and not isinstance(t, list):
            assert "default" not in f, f"{f['name']}: give bytes a ['null','bytes'] type instead of a default"


@pytest.mark.parametrize("path", _domain_files(), ids=lambda p: p.relative_to(SCHEMA_ROOT).as_posix())
def test_unions_are_unambiguous_for_the_compiled_codec(path: Path) -> None:
    """House rule: unions whose branch a reader can tell from the Python type alone."""
    for union in _walk_unions(_load(path)):
        kinds = [b if isinstance(b, str) and b in PRIMITIVES else
                 (b.get("type") if isinstance(b, dict) else "named") for b in union]
        assert sum(k in ("record", "map", "named") for k in kinds) <= 1, f"ambiguous union {union}"
        assert not {"int", "long"} <= set(kinds), f"int and long in one union: {union}"
        assert not {"float", "double"} <= set(kinds), f"float and double in one union: {union}"
        enum_and_string = bool({"enum", "named"} & set(kinds)) and "string" in kinds
        assert not enum_and_string, f"enum and string in one union: {union}"


# ---------------------------------------------------------------------------- value strategies
Pair = tuple[Any, Any]  # (value to encode, value expected back after decoding)


def _pairs(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Pair]:
    return strategy.map(lambda v: (v, v))


_PRIMITIVE_STRATEGIES: dict[str, st.SearchStrategy[Pair]] = {
    "null": _pairs(st.none()),
    "boolean": _pairs(st.booleans()),
    "int": _pairs(st.integers(-(2**31), 2**31 - 1)),
    "long": _pairs(st.integers(-(2**63), 2**63 - 1)),
    "float": _pairs(st.floats(width=32, allow_nan=False)),
    "double": _pairs(st.floats(allow_nan=False)),
    "bytes": _pairs(st.binary(max_size=24)),
    "string": _pairs(st.text(max_size=12)),
}


def strategy_for(schema: Any, named: dict[str, Any]) -> st.SearchStrategy[Pair]:
    """Values of a (fastavro-parsed) schema, paired with what decoding must return.

    Record fields with a default are sometimes omitted: the encoder then writes the default,
    and the decoder must return it.
    """
    if isinstance(schema, str):
        if schema in PRIMITIVES:
            return _PRIMITIVE_STRATEGIES[schema]
        return strategy_for(named[schema], named)
    if isinstance(schema, list):
        return st.one_of([strategy_for(branch, named) for branch in schema])
    kind = schema["type"]
    if kind in PRIMITIVES:
        return _PRIMITIVE_STRATEGIES[kind]
    if kind == "enum":
        return _pairs(st.sampled_from(schema["symbols"]))
    if kind == "fixed":
        return _pairs(st.binary(min_size=schema["size"], max_size=schema["size"]))
    if kind == "array":
        return st.lists(strategy_for(schema["items"], named), max_size=3).map(
            lambda xs: ([v for v, _ in xs], [e for _, e in xs]))
    if kind == "map":
        return st.dictionaries(st.text(max_size=6), strategy_for(schema["values"], named), max_size=3).map(
            lambda d: ({k: v for k, (v, _) in d.items()}, {k: e for k, (_, e) in d.items()}))
    if kind in ("record", "error"):
        parts: dict[str, st.SearchStrategy[Any]] = {}
        defaults: dict[str, Any] = {}
        for f in schema["fields"]:
            s = strategy_for(f["type"], named)
            if "default" in f:
                defaults[f["name"]] = f["default"]
                s = st.one_of(st.just(_MISSING), s)
            parts[f["name"]] = s

        def build(drawn: dict[str, Any]) -> Pair:
            value, expected = {}, {}
            for name, pair in drawn.items():
                if pair is _MISSING:
                    expected[name] = copy.deepcopy(defaults[name])
                else:
                    value[name], expected[name] = pair
            return value, expected

        return st.fixed_dictionaries(parts).map(build)
    raise AssertionError(f"no strategy for {schema!r}")


@cache
def _entry_strategy(full_name: str) -> st.SearchStrategy[Pair]:
    entry = default_store().current(full_name)
    return strategy_for(entry.parsed, entry.parsed.get("__named_schemas", {}))


def _fastavro_bytes(entry: SchemaEntry, record: Any) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, entry.parsed, record)
    return buf.getvalue()


# ---------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("full_name", CURRENT_NAMES)
@EXAMPLES
@given(data=st.data())
def test_compiled_codec_matches_fastavro_and_round_trips(full_name: str, data: st.DataObject) -> None:
    store = default_store()
    entry = store.current(full_name)
    record, expected = data.draw(_entry_strategy(full_name))
    encoded = store.encode(full_name, record)
    assert encoded[:2] == MAGIC and encoded[2:10] == entry.fingerprint
    assert encoded[10:] == _fastavro_bytes(entry, record)
    writer, decoded = store.decode(encoded)
    assert writer is entry
    assert decoded == expected


# ---------------------------------------------------------------------------- evolution
def _without_defaulted_fields(schema_json: dict[str, Any]) -> dict[str, Any]:
    v1 = copy.deepcopy(schema_json)
    v1["fields"] = [f for f in v1["fields"] if "default" not in f]
    return v1


EVOLVABLE = [e.full_name for e in _payload_entries() if any("default" in f for f in e.schema_json["fields"])]


@cache
def _store_with_v1s() -> SchemaStore:
    """The shipped schemas plus, for each payload, a 'v1' that lacks every defaulted top-level field."""
    store = SchemaStore.from_directory(SCHEMA_ROOT)
    for name in EVOLVABLE:
        current = store.current(name)
        folder = Path(current.source).parent.as_posix()
        store.add_schema(_without_defaulted_fields(current.schema_json),
                         # v99: a number no shipped older version uses (shipped v1 files exist)
                         source=f"{folder}/{name.rsplit('.', 1)[1]}.v99.avsc")
    return store


@pytest.mark.parametrize("full_name", EVOLVABLE)
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_older_writer_without_defaulted_fields_decodes_into_current_reader(full_name: str,
                                                                          data: st.DataObject) -> None:
    """Adding a field with a default is backward compatible, for every shipped payload."""
    store = _store_with_v1s()
    current = store.current(full_name)
    v1 = next(e for e in store.entries() if e.full_name == full_name and e.version == 99)
    assert v1.fingerprint != current.fingerprint
    record, expected_v1 = data.draw(strategy_for(v1.parsed, v1.parsed.get("__named_schemas", {})))
    encoded = MAGIC + v1.fingerprint + v1.encode_body(record)
    writer, decoded = store.decode(encoded)
    assert writer is v1
    defaults = {f["name"]: f["default"] for f in current.schema_json["fields"] if "default" in f}
    assert decoded == {**expected_v1, **defaults}
    # the current schema's own events still take the fast path
    assert store.decode(store.encode(full_name, decoded))[1] == decoded


OLD_VERSIONS = sorted(e.source for e in default_store().entries() if e.version > 0)


@pytest.mark.skipif(not OLD_VERSIONS, reason="schemas/ ships no old versions (Name.vN.avsc) yet")
@pytest.mark.parametrize("source", OLD_VERSIONS or ["none"])
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_shipped_old_version_resolves_into_its_current_reader(source: str, data: st.DataObject) -> None:
    """Each ``Name.vN.avsc`` in schemas/ stays decodable: its events resolve into ``Name.avsc``."""
    store = default_store()
    old = next(e for e in store.entries() if e.source == source)
    current = store.current(old.full_name)
    record, _ = data.draw(strategy_for(old.parsed, old.parsed.get("__named_schemas", {})))
    writer, decoded = store.decode(MAGIC + old.fingerprint + old.encode_body(record))
    assert writer is old
    assert set(decoded) == {f["name"] for f in current.schema_json["fields"]}


def test_v1_event_decodes_with_v2_reader_from_a_schema_directory(tmp_path: Path) -> None:
    """``Name.v1.avsc`` beside ``Name.avsc``: an archived v1 event resolves into the v2 shape."""
    shutil.copytree(SCHEMA_ROOT / "core", tmp_path / "core")
    v1: dict[str, Any] = {
        "type": "record", "name": "Probe", "namespace": "swarmlog.demo", "doc": "Evolution probe.",
        "event_type": "demo.probe", "topic": "metrics", "subject": "component",
        "fields": [
            {"name": "component", "type": "string", "doc": "Key."},
            {"name": "value", "type": "double", "doc": "Value."},
            {"name": "digest", "type": "swarmlog.core.Hash32", "doc": "Cross-file named type."},
            {"name": "level", "doc": "Level.", "type": {
                "type": "enum", "name": "Level", "doc": "Level.",
                "symbols": ["LOW", "HIGH"], "default": "LOW",
            }},
        ],
    }
    v2 = copy.deepcopy(v1)
    v2["fields"][3]["type"]["symbols"].append("CRITICAL")
    v2["fields"] += [
        {"name": "unit", "type": "string", "default": "ms", "doc": "Added in v2."},
        {"name": "run_id", "type": ["null", "swarmlog.core.Uuid"], "default": None, "doc": "Added in v2."},
        {"name": "labels", "type": {"type": "map", "values": "string"}, "default": {}, "doc": "Added in v2."},
    ]
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "Probe.v1.avsc").write_text(json.dumps(v1), "utf-8")
    (tmp_path / "demo" / "Probe.avsc").write_text(json.dumps(v2), "utf-8")

    store = SchemaStore.from_directory(tmp_path)
    current = store.current("swarmlog.demo.Probe")
    old = next(e for e in store.entries() if e.full_name == "swarmlog.demo.Probe" and e.version == 1)
    assert store.for_event_type("demo.probe") is current
    assert old.fingerprint != current.fingerprint

    archived = MAGIC + old.fingerprint + old.encode_body(
        {"component": "db", "value": 1.5, "digest": b"\x07" * 32, "level": "HIGH"})
    writer, record = store.decode(archived)
    assert writer is old
    assert record == {"component": "db", "value": 1.5, "digest": b"\x07" * 32, "level": "HIGH",
                      "unit": "ms", "run_id": None, "labels": {}}

    fresh = store.encode("swarmlog.demo.Probe", {**record, "level": "CRITICAL", "run_id": b"\x01" * 16})
    assert store.decode(fresh)[1]["level"] == "CRITICAL"


# ---------------------------------------------------------------------------- codec regressions
# Defects found while writing these tests, fixed in the codec; each test pins the fix.


def _store(*schemas: tuple[str, dict[str, Any]]) -> SchemaStore:
    store = SchemaStore()
    store.add_sources([(path, json.dumps(s)) for path, s in schemas])
    return store


def _record(name: str, *fields: dict[str, Any]) -> dict[str, Any]:
    return {"type": "record", "name": name, "namespace": "t", "fields": list(fields)}


def test_fingerprint_covers_named_types_defined_in_other_files() -> None:
    user = _record("User", {"name": "k", "type": "t.Kind"})

    def kind(symbols: list[str]) -> dict[str, Any]:
        return _record("Owner", {"name": "k", "type": {"type": "enum", "name": "Kind", "symbols": symbols}})

    a = _store(("t/Owner.avsc", kind(["A", "B"])), ("t/User.avsc", user))
    b = _store(("t/Owner.avsc", kind(["B", "A"])), ("t/User.avsc", user))
    assert a.current("t.Owner").fingerprint != b.current("t.Owner").fingerprint
    assert a.current("t.User").fingerprint != b.current("t.User").fingerprint


def test_union_of_int_and_long_takes_long_for_big_values() -> None:
    store = _store(("t/U.avsc", _record("U", {"name": "n", "type": ["null", "int", "long"]})))
    entry = store.current("t.U")
    assert store.encode("t.U", {"n": 2**40})[10:] == _fastavro_bytes(entry, {"n": 2**40})


def test_union_of_float_and_double_prefers_double() -> None:
    store = _store(("t/U.avsc", _record("U", {"name": "x", "type": ["null", "float", "double"]})))
    assert store.decode(store.encode("t.U", {"x": 0.1}))[1] == {"x": 0.1}


def test_union_of_enum_and_string_falls_through_to_string() -> None:
    enum = {"type": "enum", "name": "E", "symbols": ["X"]}
    store = _store(("t/U.avsc", _record("U", {"name": "v", "type": ["null", enum, "string"]})))
    assert store.decode(store.encode("t.U", {"v": "hello"}))[1] == {"v": "hello"}


def test_bytes_default_is_bytes_after_resolution() -> None:
    old = _record("B", {"name": "a", "type": "int"})
    new = _record("B", {"name": "a", "type": "int"}, {"name": "b", "type": "bytes", "default": "\u00ff"})
    store = _store(("t/B.v1.avsc", old), ("t/B.avsc", new))
    v1 = next(e for e in store.entries() if e.version == 1)
    _, record = store.decode(MAGIC + v1.fingerprint + v1.encode_body({"a": 1}))
    assert record == {"a": 1, "b": b"\xff"}
    assert store.encode("t.B", {"a": 1}) == store.encode("t.B", {"a": 1, "b": b"\xff"})


def test_overlong_varint_is_malformed() -> None:
    store = _store(("t/L.avsc", _record("L", {"name": "n", "type": "long"})))
    data = MAGIC + store.current("t.L").fingerprint + b"\xff" * 9 + b"\x7f"
    with pytest.raises(CodecError):
        store.decode(data)


def test_duplicate_event_type_is_rejected() -> None:
    attrs = {"event_type": "t.same", "topic": "agents", "subject": "k"}
    a = {**_record("A", {"name": "k", "type": "string"}), **attrs}
    b = {**_record("B", {"name": "k", "type": "string"}), **attrs}
    with pytest.raises(CodecError):
        _store(("t/A.avsc", a), ("t/B.avsc", b))
