"""Compile an Avro schema into the compact "program" the C codec (``_speedups.Encoder``/``Decoder``) runs.

Why a program and not C code per schema: one generic C interpreter works for every schema,
including ones loaded at run time, and needs no compiler after install. The program mirrors
``avro_compile``'s generated Python encoder decision for decision — same union branch
tests in the same order, same defaults — and the C side only encodes values whose types it
handles exactly like that encoder; everything else goes to the Python encoder, so both
paths give byte-identical output and the same errors (``tests/test_speedups.py``).

Node shapes (opcodes must match ``_speedups.c``):

* ``(op,)`` for null, boolean, int, long, float, double, bytes, string;
* ``(FIXED, size)``, ``(ENUM, {symbol: index varint}, symbols)``, ``(ARRAY, item)``, ``(MAP, value)``;
* ``[RECORD, ((name, node, has_default, default), ...)]`` — a list, so recursive named
  types can refer to themselves;
* ``(UNION, ((test, arg, index varint, node), ...))``.
"""

from __future__ import annotations

from typing import Any

from swarmlog.streams.avro_compile import write_long

OP_NULL, OP_BOOL, OP_INT, OP_LONG, OP_FLOAT, OP_DOUBLE, OP_BYTES, OP_STRING = range(8)
OP_FIXED, OP_ENUM, OP_ARRAY, OP_MAP, OP_RECORD, OP_UNION = range(8, 14)

# union branch tests, in the order of avro_compile._Compiler._union_test
(T_NONE, T_BOOL, T_INT32, T_INT, T_FALSE, T_NUM, T_BYTESLIKE, T_STR, T_FIXED, T_ENUM, T_SEQ, T_MAP,
 T_DICT) = range(13)

_PRIMITIVE_OPS = {
    "null": OP_NULL, "boolean": OP_BOOL, "int": OP_INT, "long": OP_LONG, "float": OP_FLOAT,
    "double": OP_DOUBLE, "bytes": OP_BYTES, "string": OP_STRING,
}
_SIMPLE_TESTS = {
    "null": T_NONE, "boolean": T_BOOL, "int": T_INT, "long": T_INT, "float": T_NUM, "double": T_NUM,
    "bytes": T_BYTESLIKE, "string": T_STR, "array": T_SEQ, "map": T_MAP, "record": T_DICT,
}


def _kind_of(schema: Any) -> str:
    if isinstance(schema, str):
        return schema
    if isinstance(schema, list):
        return "union"
    kind = schema.get("type")
    return kind if isinstance(kind, str) else "union"


class _ProgramCompiler:
    def __init__(self, named: dict[str, Any]) -> None:
        self.named = named
        self.records: dict[str, list[Any]] = {}

    def resolve(self, schema: Any) -> Any:
        if isinstance(schema, str) and schema not in _PRIMITIVE_OPS:
            return self.named[schema]
        return schema

    def node(self, schema: Any) -> Any:
        if isinstance(schema, str) and schema not in _PRIMITIVE_OPS:
            return self.named_node(schema)
        if isinstance(schema, dict) and schema.get("type") in _PRIMITIVE_OPS:
            schema = schema["type"]
        if isinstance(schema, list):
            return self.union(schema)
        if isinstance(schema, str):
            return (_PRIMITIVE_OPS[schema],)
        kind = schema["type"]
        if kind == "fixed":
            return (OP_FIXED, schema["size"])
        if kind in ("record", "enum"):
            return self.named_node(schema["name"], schema)
        if kind == "array":
            return (OP_ARRAY, self.node(schema["items"]))
        if kind == "map":
            return (OP_MAP, self.node(schema["values"]))
        raise ValueError(f"unsupported Avro type {kind!r}")

    def named_node(self, name: str, schema: Any = None) -> Any:
        if name in self.records:
            return self.records[name]
        schema = self.named.get(name, schema)
        kind = schema["type"]
        if kind == "fixed":
            return (OP_FIXED, schema["size"])
        if kind == "enum":
            symbols = tuple(schema["symbols"])
            return (OP_ENUM, {sym: write_long(i) for i, sym in enumerate(symbols)}, symbols)
        record: list[Any] = [OP_RECORD, ()]
        self.records[name] = record  # before the fields: they may refer back to this record
        fields = []
        for field in schema["fields"]:
            has_default = "default" in field
            default = field.get("default")
            if has_default and isinstance(default, str) and \
                    _kind_of(self.resolve(field["type"])) in ("bytes", "fixed"):
                default = default.encode("latin-1")  # Avro JSON writes bytes defaults as text
            fields.append((field["name"], self.node(field["type"]), has_default, default))
        record[1] = tuple(fields)
        return record

    def union(self, branches: list[Any]) -> Any:
        kinds = {_kind_of(self.resolve(b)) for b in branches}
        out = []
        for index, branch in enumerate(branches):
            resolved = self.resolve(branch)
            kind = _kind_of(resolved)
            arg: Any = None
            if kind == "int" and "long" in kinds:
                test = T_INT32
            elif kind == "float" and "double" in kinds:
                test = T_FALSE  # a Python float is a double; the float branch would lose precision
            elif kind == "enum":
                test, arg = T_ENUM, frozenset(resolved["symbols"])
            elif kind == "fixed":
                test, arg = T_FIXED, resolved["size"]
            else:
                test = _SIMPLE_TESTS[kind]
            out.append((test, arg, write_long(index), self.node(branch)))
        return (OP_UNION, tuple(out))


def compile_program(parsed: Any, named: dict[str, Any]) -> Any:
    """The encoder program of a fastavro-parsed schema (``named``: fastavro's named types)."""
    compiler = _ProgramCompiler(dict(named))
    if isinstance(parsed, dict) and parsed.get("type") in ("record", "enum", "fixed"):
        compiler.named.setdefault(parsed["name"], parsed)
        return compiler.named_node(parsed["name"], parsed)
    return compiler.node(parsed)
