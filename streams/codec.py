"""Avro single-object encoding against the schemas shipped in ``schemas/``.

Wire format (Avro spec, "Single-object encoding"): ``C3 01`` + the 8-byte little-endian
CRC-64-AVRO fingerprint of the writer schema's Parsing Canonical Form + the Avro binary
body. The fingerprint is derived from the schema text itself, so an archived log stays
decodable with nothing but this repository's ``schemas/`` folder — no registry server.

Several versions of one record may live side by side (``Name.avsc`` is the current
reader schema, ``Name.v1.avsc`` ... are older writer schemas); an event written with
any known version decodes into the current one by Avro schema resolution.
"""

from __future__ import annotations

import copy
import io
import json
import re
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import fastavro
import fastavro.validation
from fastavro.schema import to_parsing_canonical_form

from swarmlog.streams import speedups
from swarmlog.streams.avro_compile import Decoder, Encoder, compile_schema
from swarmlog.streams.avro_program import compile_program

MAGIC = b"\xc3\x01"
HEADER_SIZE = 10

_CRC64_EMPTY = 0xC15D213AA4D7A795


def _crc64_table() -> list[int]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_CRC64_EMPTY & -(fp & 1))
        table.append(fp)
    return table


_CRC64_TABLE = _crc64_table()


def crc64_avro(data: bytes) -> int:
    """The Rabin CRC-64 fingerprint the Avro spec defines for schemas."""
    fp = _CRC64_EMPTY
    table = _CRC64_TABLE
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


def fingerprint(canonical_form: str) -> bytes:
    """8-byte little-endian CRC-64-AVRO of a Parsing Canonical Form, as written on the wire."""
    return struct.pack("<Q", crc64_avro(canonical_form.encode("utf-8")))


class CodecError(ValueError):
    """Base class: bytes that are not a valid swarmlog event encoding."""

    reason = "malformed"


class NotSingleObjectError(CodecError):
    """The bytes do not start with the single-object marker ``C3 01``."""

    reason = "not-avro"


class UnknownSchemaError(CodecError):
    """The fingerprint names no schema this process knows."""

    reason = "unknown-schema"


class MalformedDataError(CodecError):
    """Truncated, trailing or otherwise undecodable Avro body."""

    reason = "malformed"


class EncodeError(CodecError):
    """A record that does not fit its schema."""

    reason = "invalid-record"


@dataclass
class SchemaEntry:
    """One schema version: its identity on the wire and its compiled codec."""

    full_name: str
    version: int
    source: str
    schema_json: Any
    parsed: Any
    canonical: str
    fingerprint: bytes
    encode_body: Encoder = field(repr=False)
    decode_body: Decoder = field(repr=False)
    attributes: dict[str, Any] = field(default_factory=dict)
    # the generated pure-Python codec; ``encode_body``/``decode_body`` are the C ones when the extension is in use
    py_encode_body: Encoder | None = field(default=None, repr=False)
    py_decode_body: Decoder | None = field(default=None, repr=False)

    @property
    def event_type(self) -> str | None:
        value = self.attributes.get("event_type")
        return str(value) if value is not None else None

    @property
    def topic(self) -> str | None:
        value = self.attributes.get("topic")
        return str(value) if value is not None else None

    @property
    def subject_field(self) -> str | None:
        value = self.attributes.get("subject")
        return str(value) if value is not None else None


_VERSION_RE = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:\.v(?P<version>\d+))?\.avsc$")


class SchemaStore:
    """All known schemas, addressable by full name (current version) and by fingerprint."""

    def __init__(self) -> None:
        self._named: dict[str, Any] = {}
        self._by_fp: dict[bytes, SchemaEntry] = {}
        self._current: dict[str, SchemaEntry] = {}
        self._by_event_type: dict[str, SchemaEntry] = {}
        self._resolution_cache: dict[tuple[bytes, bytes], tuple[Any, Any]] = {}

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_directory(cls, root: Path | None = None) -> SchemaStore:
        """Load every ``*.avsc`` below ``root`` (default: the installed ``schemas`` package)."""
        store = cls()
        files: list[tuple[str, str]] = []
        if root is None:
            base = resources.files("swarmlog.schemas")
            files = sorted(_walk_resources(base))
        else:
            files = sorted((str(p.relative_to(root)), p.read_text("utf-8")) for p in root.rglob("*.avsc"))
        store.add_sources(files)
        return store

    def add_sources(self, files: Iterable[tuple[str, str]]) -> None:
        """Add schema texts; files may reference named types defined in other files."""
        pending = [(path, json.loads(text)) for path, text in files]
        # Current versions first so that named types they define are the ones referenced.
        pending.sort(key=lambda item: (".v" in Path(item[0]).name, item[0]))
        while pending:
            progressed = False
            failed: list[tuple[str, Any]] = []
            errors: list[str] = []
            for path, schema_json in pending:
                try:
                    self.add_schema(schema_json, source=path)
                    progressed = True
                except fastavro.schema.UnknownType as exc:
                    failed.append((path, schema_json))
                    errors.append(f"{path}: unknown type {exc.name}")
            if failed and not progressed:
                raise UnknownSchemaError("unresolvable schema references: " + "; ".join(errors))
            pending = failed

    def add_schema(self, schema_json: Any, source: str = "<memory>") -> SchemaEntry:
        version = 0
        match = _VERSION_RE.match(Path(source).name)
        if match and match.group("version"):
            version = int(match.group("version"))
        is_current = version == 0
        # Older versions are parsed in a private namespace so their named types don't shadow.
        # Parse into a copy: a failed parse leaves half-registered names behind.
        named = dict(self._named)
        if not is_current:
            _forget_names(schema_json, named)
        before = dict(named)
        parsed = fastavro.parse_schema(copy.deepcopy(schema_json), named_schemas=named)
        # The fingerprint must cover named types defined in *other* files too, or changing
        # a shared type would leave old events decoding with the new layout.
        expanded = fastavro.parse_schema(copy.deepcopy(schema_json), named_schemas=before, expand=True)
        canonical = to_parsing_canonical_form(_define_once(expanded, set()))
        fp = fingerprint(canonical)
        py_encode, py_decode = compile_schema(parsed, named)
        encode, decode = fast_codec(parsed, named, py_encode, py_decode)
        full_name = parsed["name"] if isinstance(parsed, dict) and "name" in parsed else canonical
        attributes = {k: v for k, v in schema_json.items() if k in ("event_type", "topic", "subject")} \
            if isinstance(schema_json, dict) else {}
        entry = SchemaEntry(full_name, version, source, schema_json, parsed, canonical, fp, encode, decode,
                            attributes, py_encode, py_decode)
        existing = self._by_fp.get(fp)
        if existing is None:
            self._by_fp[fp] = entry
        if is_current:
            self._named = named
            if full_name in self._current and self._current[full_name].fingerprint != fp:
                raise UnknownSchemaError(f"two current versions of {full_name}")
            self._current[full_name] = entry
            if entry.event_type:
                other = self._by_event_type.get(entry.event_type)
                if other is not None and other.full_name != full_name:
                    raise UnknownSchemaError(
                        f"event type {entry.event_type!r} is claimed by {other.full_name} and {full_name}")
                self._by_event_type[entry.event_type] = entry
        return entry

    # ------------------------------------------------------------------ lookup
    @property
    def named_types(self) -> dict[str, Any]:
        """Every named type of the current schemas (full name → parsed definition)."""
        return self._named

    def current(self, full_name: str) -> SchemaEntry:
        try:
            return self._current[full_name]
        except KeyError:
            raise UnknownSchemaError(f"no schema named {full_name!r}") from None

    def named_codec(self, full_name: str) -> tuple[Encoder, Decoder]:
        """Compiled codec of a named type nested inside another schema (e.g. InlineAuth)."""
        try:
            schema = self._named[full_name]
        except KeyError:
            raise UnknownSchemaError(f"no named type {full_name!r}") from None
        return compile_schema(schema, self._named)

    def by_fingerprint(self, fp: bytes) -> SchemaEntry:
        try:
            return self._by_fp[fp]
        except KeyError:
            raise UnknownSchemaError(f"unknown schema fingerprint {fp.hex()}") from None

    def for_event_type(self, event_type: str) -> SchemaEntry:
        try:
            return self._by_event_type[event_type]
        except KeyError:
            raise UnknownSchemaError(f"unknown event type {event_type!r}") from None

    def event_types(self) -> list[str]:
        return sorted(self._by_event_type)

    def entries(self) -> Iterator[SchemaEntry]:
        return iter(self._by_fp.values())

    # ------------------------------------------------------------------ encode / decode
    def encode(self, full_name: str, record: Any) -> bytes:
        """Single-object encoding of ``record`` with the current schema ``full_name``."""
        entry = self.current(full_name)
        return MAGIC + entry.fingerprint + encode_body(entry, record)

    def decode(self, data: bytes, reader_name: str | None = None) -> tuple[SchemaEntry, Any]:
        """Decode single-object bytes; resolve into the current version of the same record.

        Returns the *writer* entry and the record as seen by the reader schema.
        """
        if len(data) < HEADER_SIZE or data[:2] != MAGIC:
            raise NotSingleObjectError("not Avro single-object encoding (missing C3 01 marker)")
        writer = self.by_fingerprint(bytes(data[2:10]))
        reader = self._current.get(reader_name or writer.full_name, writer)
        return writer, self.decode_body(writer, reader, data, HEADER_SIZE)

    def decode_body(self, writer: SchemaEntry, reader: SchemaEntry, data: bytes, pos: int = 0) -> Any:
        """Decode an Avro body written with ``writer`` into ``reader``'s shape."""
        if writer.fingerprint == reader.fingerprint:
            try:
                value, end = writer.decode_body(data, pos)
            except (IndexError, ValueError, struct.error, OverflowError) as exc:
                raise MalformedDataError(f"undecodable {writer.full_name} body: {exc}") from None
            if end != len(data):
                raise MalformedDataError(f"{len(data) - end} trailing bytes after {writer.full_name} body")
            return value
        buf = io.BytesIO(data)
        buf.seek(pos)
        try:
            value = fastavro.schemaless_reader(buf, writer.parsed, reader.parsed)
        except Exception as exc:  # fastavro raises a wide range of errors on garbage
            raise MalformedDataError(
                f"cannot resolve {writer.full_name} v{writer.version} into the current schema: {exc}"
            ) from None
        if buf.tell() != len(data):
            raise MalformedDataError(f"{len(data) - buf.tell()} trailing bytes after {writer.full_name} body")
        return _bytes_defaults(reader.parsed, value, self._named)


def fast_codec(parsed: Any, named: dict[str, Any], py_encode: Encoder,
               py_decode: Decoder) -> tuple[Encoder, Decoder]:
    """The C encoder and decoder of a schema (each deferring to the Python one value by value), if built."""
    native = speedups.native
    if native is None:
        return py_encode, py_decode
    program = compile_program(parsed, named)
    encoder: Encoder = native.Encoder(program, py_encode)
    decoder: Decoder = native.Decoder(program, py_decode)
    return encoder, decoder


def encode_body(entry: SchemaEntry, record: Any) -> bytes:
    """Avro binary body of ``record``; typed error instead of TypeError/KeyError."""
    try:
        return entry.encode_body(record)
    except (TypeError, KeyError, ValueError, AttributeError, OverflowError, struct.error) as exc:
        raise EncodeError(f"record does not fit {entry.full_name}: {_explain(entry, record, exc)}") from None


def _explain(entry: SchemaEntry, record: Any, exc: Exception) -> str:
    """Name the offending field: the compiled encoder only knows *that* something failed."""
    try:
        fastavro.validation.validate(record, entry.parsed, raise_errors=True)
    except fastavro.validation.ValidationError as verr:
        problems = [str(p) for p in verr.errors] if getattr(verr, "errors", None) else [str(verr)]
        return "; ".join(problems)
    except Exception:  # the validator itself choked on the value; fall back to the original error
        pass
    return f"{type(exc).__name__}: {exc}"


def _bytes_defaults(schema: Any, value: Any, named: dict[str, Any]) -> Any:
    """fastavro fills a resolved bytes default in as str (Avro JSON spells bytes as text)."""
    if isinstance(schema, str):
        schema = named.get(schema, schema)
    if isinstance(schema, str):
        return value.encode("latin-1") if schema == "bytes" and isinstance(value, str) else value
    if isinstance(schema, list):
        if isinstance(value, str) and "bytes" in schema and "string" not in schema:
            return value.encode("latin-1")
        if isinstance(value, dict):
            for branch in schema:
                resolved = named.get(branch, branch) if isinstance(branch, str) else branch
                if isinstance(resolved, dict) and resolved.get("type") == "record":
                    return _bytes_defaults(resolved, value, named)
        return value
    kind = schema.get("type")
    if kind == "record" and isinstance(value, dict):
        for field in schema["fields"]:
            if field["name"] in value:
                value[field["name"]] = _bytes_defaults(field["type"], value[field["name"]], named)
    elif (kind == "fixed" and isinstance(value, str)) or (kind == "bytes" and isinstance(value, str)):
        return value.encode("latin-1")
    elif kind == "array" and isinstance(value, list):
        return [_bytes_defaults(schema["items"], item, named) for item in value]
    elif kind == "map" and isinstance(value, dict):
        return {k: _bytes_defaults(schema["values"], v, named) for k, v in value.items()}
    return value


def _define_once(schema: Any, seen: set[str]) -> Any:
    """Keep the first definition of each named type; later occurrences become references."""
    if isinstance(schema, list):
        return [_define_once(branch, seen) for branch in schema]
    if not isinstance(schema, dict):
        return schema
    kind = schema.get("type")
    if kind in ("record", "error", "enum", "fixed"):
        name = schema["name"]
        if name in seen:
            return name
        seen.add(name)
        if kind in ("record", "error"):
            fields = [{**field, "type": _define_once(field["type"], seen)} for field in schema["fields"]]
            return {**schema, "fields": fields}
        return schema
    if kind == "array":
        return {**schema, "items": _define_once(schema["items"], seen)}
    if kind == "map":
        return {**schema, "values": _define_once(schema["values"], seen)}
    if isinstance(kind, (dict, list)):
        return {**schema, "type": _define_once(kind, seen)}
    return schema


def _walk_resources(base: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    for child in base.iterdir():
        rel = f"{prefix}{child.name}"
        if child.is_dir():
            yield from _walk_resources(child, rel + "/")
        elif child.name.endswith(".avsc"):
            yield rel, child.read_text("utf-8")


def _forget_names(schema_json: Any, named: dict[str, Any], namespace: str = "") -> None:
    """Drop names an older version (re)defines so it can be parsed beside the current one."""
    if isinstance(schema_json, dict):
        if schema_json.get("type") in ("record", "enum", "fixed", "error") and "name" in schema_json:
            ns = schema_json.get("namespace", namespace)
            name = schema_json["name"]
            full = name if "." in name or not ns else f"{ns}.{name}"
            named.pop(full, None)
            namespace = ns
        for value in schema_json.values():
            _forget_names(value, named, namespace)
    elif isinstance(schema_json, list):
        for value in schema_json:
            _forget_names(value, named, namespace)


_STORE: SchemaStore | None = None


def default_store() -> SchemaStore:
    """The process-wide store of the schemas shipped with swarmlog (loaded once)."""
    global _STORE
    if _STORE is None:
        _STORE = SchemaStore.from_directory()
    return _STORE
