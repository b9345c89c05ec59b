"""JSON ⇄ Avro values, guided by the schema, for the CLI and HTTP views.

JSON has no bytes, so the schema decides: ``swarmlog.core.Uuid`` fixed values are UUID
text, other fixed values (hashes, fingerprints) are hex, ``bytes`` are standard base64.
Input is validated against the schema here, with the field path in the error, so a user
typing ``swarmlog produce`` gets "commands.requested: priority: expected int" instead of
a stack trace.
"""

from __future__ import annotations

import base64
import binascii
import math
import uuid
from typing import Any

from swarmlog.streams.codec import EncodeError

_UUID_FIXED = "swarmlog.core.Uuid"


class JsonValueError(EncodeError):
    """A JSON value that does not fit the schema."""


def _named(schema: Any, named: dict[str, Any]) -> Any:
    if isinstance(schema, str) and schema in named:
        return named[schema]
    return schema


def _kind(schema: Any) -> str:
    if isinstance(schema, list):
        return "union"
    if isinstance(schema, dict):
        kind = schema["type"]
        return kind if isinstance(kind, str) else "union"
    return str(schema)


def from_json(schema: Any, value: Any, named: dict[str, Any], path: str = "") -> Any:
    """Convert a parsed-JSON value into the Python value the Avro codec expects."""
    schema = _named(schema, named)
    kind = _kind(schema)
    where = path or "value"
    if kind == "null":
        if value is not None:
            raise JsonValueError(f"{where}: expected null")
        return None
    if kind == "boolean":
        if not isinstance(value, bool):
            raise JsonValueError(f"{where}: expected true/false")
        return value
    if kind in ("int", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise JsonValueError(f"{where}: expected an integer")
        return value
    if kind in ("float", "double"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise JsonValueError(f"{where}: expected a finite number")
        return float(value)
    if kind == "string":
        if not isinstance(value, str):
            raise JsonValueError(f"{where}: expected a string")
        return value
    if kind == "bytes":
        if not isinstance(value, str):
            raise JsonValueError(f"{where}: expected base64 text")
        try:
            return base64.b64decode(value, validate=True)
        except binascii.Error:
            raise JsonValueError(f"{where}: not valid base64") from None
    if kind == "fixed":
        if not isinstance(value, str):
            raise JsonValueError(f"{where}: expected text")
        try:
            raw = uuid.UUID(value).bytes if schema["name"] == _UUID_FIXED else bytes.fromhex(value)
        except ValueError:
            expected = "a UUID" if schema["name"] == _UUID_FIXED else "hex"
            raise JsonValueError(f"{where}: expected {expected}") from None
        if len(raw) != schema["size"]:
            raise JsonValueError(f"{where}: expected {schema['size']} bytes, got {len(raw)}")
        return raw
    if kind == "enum":
        if value not in schema["symbols"]:
            raise JsonValueError(f"{where}: expected one of {', '.join(schema['symbols'])}")
        return value
    if kind == "array":
        if not isinstance(value, list):
            raise JsonValueError(f"{where}: expected a list")
        return [from_json(schema["items"], item, named, f"{where}[{i}]") for i, item in enumerate(value)]
    if kind == "map":
        if not isinstance(value, dict):
            raise JsonValueError(f"{where}: expected an object")
        return {str(k): from_json(schema["values"], v, named, f"{where}.{k}") for k, v in value.items()}
    if kind == "record":
        if not isinstance(value, dict):
            raise JsonValueError(f"{where}: expected an object")
        out: dict[str, Any] = {}
        known = set()
        for field in schema["fields"]:
            name = field["name"]
            known.add(name)
            sub = f"{path}.{name}" if path else name
            if name in value:
                out[name] = from_json(field["type"], value[name], named, sub)
            elif "default" in field:
                out[name] = field["default"]
            else:
                raise JsonValueError(f"{sub}: required field missing")
        unknown = sorted(set(value) - known)
        if unknown:
            raise JsonValueError(f"{where}: unknown field(s) {', '.join(unknown)}")
        return out
    if kind == "union":
        branches = schema if isinstance(schema, list) else schema["type"]
        errors = []
        for branch in branches:
            try:
                return from_json(branch, value, named, path)
            except JsonValueError as exc:
                errors.append(str(exc))
        raise JsonValueError(f"{where}: matches no allowed type ({'; '.join(errors)})")
    raise JsonValueError(f"{where}: unsupported schema type {kind}")


def to_json(schema: Any, value: Any, named: dict[str, Any]) -> Any:
    """Convert a decoded Avro value into plain JSON types."""
    schema = _named(schema, named)
    kind = _kind(schema)
    if value is None:
        return None
    if kind == "bytes":
        return base64.b64encode(value).decode()
    if kind == "fixed":
        return str(uuid.UUID(bytes=bytes(value))) if schema["name"] == _UUID_FIXED else bytes(value).hex()
    if kind == "array":
        return [to_json(schema["items"], v, named) for v in value]
    if kind == "map":
        return {k: to_json(schema["values"], v, named) for k, v in value.items()}
    if kind == "record":
        return {f["name"]: to_json(f["type"], value.get(f["name"]), named) for f in schema["fields"]}
    if kind == "union":
        branches = schema if isinstance(schema, list) else schema["type"]
        for branch in branches:
            if _matches(_named(branch, named), value, named):
                return to_json(branch, value, named)
        return value
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _matches(schema: Any, value: Any, named: dict[str, Any]) -> bool:
    kind = _kind(schema)
    return {
        "null": value is None,
        "boolean": isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "long": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, float),
        "double": isinstance(value, float),
        "string": isinstance(value, str),
        "bytes": isinstance(value, (bytes, bytearray)),
        "fixed": isinstance(value, (bytes, bytearray)) and len(value) == schema.get("size", -1)
        if isinstance(schema, dict) else False,
        "enum": isinstance(value, str),
        "array": isinstance(value, list),
        "map": isinstance(value, dict),
        "record": isinstance(value, dict),
    }.get(kind, False)
