"""Schemas read back from a topic or a registry: validated into a `Relation`, or refused.

The sink treats every schema as hostile input (design.md, invariant 7): whoever can write to
`<prefix>._schemas` or the registry can publish one. `relation_from_schema` therefore accepts a
value schema only when

- every `pg.*` property has the type and range PostgreSQL itself allows (identifiers of at most
  63 bytes without NUL, at most 1,600 columns, numeric precision 1..1000 and scale -1000..1000,
  at most 6 array dimensions, a type spelling of a fixed grammar, ...), and
- the schema's Avro structure is exactly the one the producer writes for the relation those
  properties describe (same canonical form, names and namespace included).

So a schema that passes describes a relation the producer could have published, its reader is
the producer's writer mirrored (no zero-width items, no deep nesting, decimals of bounded size),
and nothing in it reaches SQL as text: the sink composes identifiers itself and picks column types
from a closed set (`bridge.sink.types`). Everything else raises `SchemaError` naming the property.
Called once per schema (the result is cached by the decoder); not a hot path.
"""

from __future__ import annotations

import re
from typing import Any

from fastavro.schema import to_parsing_canonical_form

from bridge.codec.names import namespace
from bridge.codec.schemas import ENVELOPE_NAME, row_record, value_schema
from bridge.errors import SchemaError
from bridge.relation import Column, Relation

# PostgreSQL's own limits (pg_config_manual.h, numeric.c, htup_details.h).
NAME_MAX_BYTES = 63  # NAMEDATALEN - 1
MAX_COLUMNS = 1600  # MaxHeapAttributeNumber
MAX_KEY_COLUMNS = 32  # INDEX_MAX_KEYS
MAX_NDIMS = 6  # MAXDIM
NUMERIC_MAX_PRECISION = 1000
NUMERIC_MIN_SCALE, NUMERIC_MAX_SCALE = -1000, 1000
MAX_TYPE_LENGTH = 10 * 1024 * 1024  # varchar(n) / char(n) / bit(n)
MAX_MISSING_BYTES = 1 << 20  # an ADD COLUMN default's text, far above any real one
_OID_MAX = 2**32 - 1
_KINDS = frozenset("berdcmp")
_IDENTITIES = frozenset("dfni")

_IDENT = r'(?:[A-Za-z_][A-Za-z0-9_$]*|"(?:[^"\x00]|"")+")'
# `format_type` output: an optionally qualified name or words of a built-in spelling, at most one
# modifier list of integers, array brackets.
TYPE_SPELLING = re.compile(
    rf"(?:{_IDENT}\.)?{_IDENT}(?: [a-z]+)*(?:\(-?\d{{1,9}}(?:,-?\d{{1,9}})?\))?(?: [a-z]+)*(?:\[\])*\Z")
_TYPNAME = re.compile(r"[A-Za-z_][A-Za-z0-9_$ ]*\Z")  # pg_type.typname (`double precision` is not one, but harmless)
_ENVELOPE_NAME = re.compile(rf"{ENVELOPE_NAME}(?:_[0-9a-f]{{8}})?\Z")


def _where(field: str | None, prop: str) -> dict[str, Any]:
    return {"column": field, "property": prop} if field is not None else {"property": prop}


def identifier(value: Any, prop: str, field: str | None = None) -> str:
    """A PostgreSQL identifier: a non-empty string of at most 63 UTF-8 bytes without NUL."""
    if not isinstance(value, str) or not value or "\x00" in value or len(value.encode("utf-8", "replace")) > NAME_MAX_BYTES:
        raise SchemaError(f"{prop} is not a PostgreSQL identifier (1-{NAME_MAX_BYTES} bytes, no NUL)",
                          value=repr(value)[:80], **_where(field, prop))
    return value


def _int(value: Any, prop: str, lo: int, hi: int, field: str | None = None) -> int:
    if type(value) is not int or not lo <= value <= hi:
        raise SchemaError(f"{prop} must be an integer from {lo} to {hi}", value=repr(value)[:80], **_where(field, prop))
    return value


def _opt_int(f: dict[str, Any], prop: str, lo: int, hi: int, name: str) -> int | None:
    v = f.get(prop)
    return None if v is None else _int(v, prop, lo, hi, name)


def _bool(value: Any, prop: str, field: str | None = None) -> bool:
    if type(value) is not bool:
        raise SchemaError(f"{prop} must be true or false", value=repr(value)[:80], **_where(field, prop))
    return value


def _column(f: Any) -> Column:
    if not isinstance(f, dict):
        raise SchemaError("a row field is not an object")
    name = identifier(f.get("pg.name"), "pg.name", str(f.get("name"))[:80])
    type_name = f.get("pg.type")
    if not isinstance(type_name, str) or len(type_name) > 300 or not TYPE_SPELLING.match(type_name):
        raise SchemaError("pg.type is not a PostgreSQL type spelling", value=repr(type_name)[:80],
                          **_where(name, "pg.type"))
    base = f.get("pg.base")
    if not isinstance(base, str) or not _TYPNAME.match(base) or len(base.encode()) > NAME_MAX_BYTES:
        raise SchemaError("pg.base is not a type name", value=repr(base)[:80], **_where(name, "pg.base"))
    kind = f.get("pg.kind", "b")
    if not isinstance(kind, str) or kind not in _KINDS:
        raise SchemaError("pg.kind is not a pg_type.typtype letter", value=repr(kind)[:20], **_where(name, "pg.kind"))
    missing = f.get("pg.missing")
    if missing is not None and (not isinstance(missing, str) or "\x00" in missing
                                or len(missing.encode("utf-8", "replace")) > MAX_MISSING_BYTES):
        raise SchemaError("pg.missing must be text without NUL", **_where(name, "pg.missing"))
    return Column(
        name=name, type_name=type_name, base=base, kind=kind,
        ndims=_int(f.get("pg.ndims", 0), "pg.ndims", 0, MAX_NDIMS, name),
        not_null=_bool(f.get("pg.not_null", False), "pg.not_null", name),
        precision=_opt_int(f, "pg.precision", 1, NUMERIC_MAX_PRECISION, name),
        scale=_opt_int(f, "pg.scale", NUMERIC_MIN_SCALE, NUMERIC_MAX_SCALE, name),
        length=_opt_int(f, "pg.length", 1, MAX_TYPE_LENGTH, name),
        type_oid=_int(f.get("pg.type_oid", 0), "pg.type_oid", 0, _OID_MAX, name),
        missing=missing,
    )


def _relation(schema: dict[str, Any]) -> Relation:
    rec = row_record(schema)
    fields = rec.get("fields")
    if not isinstance(fields, list) or len(fields) > MAX_COLUMNS:
        raise SchemaError(f"the row record must list at most {MAX_COLUMNS} fields", schema=str(schema.get("name"))[:80])
    columns = tuple(_column(f) for f in fields)
    names = [c.name for c in columns]
    if len(set(names)) != len(names):
        raise SchemaError("two fields name the same column", property="pg.name")
    pk = schema.get("pg.primary_key", [])
    if not isinstance(pk, list) or len(pk) > MAX_KEY_COLUMNS or not all(isinstance(k, str) for k in pk) \
            or len(set(pk)) != len(pk) or any(k not in names for k in pk):
        raise SchemaError("pg.primary_key must list distinct columns of the row", value=repr(pk)[:120],
                          property="pg.primary_key")
    identity = schema.get("pg.replica_identity", "d")
    if not isinstance(identity, str) or identity not in _IDENTITIES:
        raise SchemaError("pg.replica_identity must be one of d, f, n, i", value=repr(identity)[:20],
                          property="pg.replica_identity")
    return Relation(schema=identifier(schema.get("pg.schema"), "pg.schema"),
                    table=identifier(schema.get("pg.table"), "pg.table"),
                    columns=columns, primary_key=tuple(pk), replica_identity=identity,
                    oid=_int(schema.get("pg.oid", 0), "pg.oid", 0, _OID_MAX),
                    version=_int(schema.get("pg.version", 1), "pg.version", 1, 2**31 - 1))


def _canonical(schema: Any) -> str:
    try:
        return str(to_parsing_canonical_form(schema))
    except Exception as exc:  # fastavro raises several types (and RecursionError) for bad schemas
        raise SchemaError(f"not a valid Avro schema: {type(exc).__name__}") from exc


def relation_from_schema(schema: Any, *, topic_prefix: str | None = None) -> Relation:
    """The `Relation` a value (envelope) schema describes, after the checks of the module doc.

    With `topic_prefix`, the namespace must also be the one the producer derives from that prefix
    and the relation's schema and table. Raises `SchemaError` naming what is wrong.
    """
    try:
        return _checked(schema, topic_prefix)
    except SchemaError:
        raise
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, RecursionError) as exc:
        # a shape no check above foresaw: still a refusal, never a crash
        raise SchemaError(f"malformed schema: {type(exc).__name__}") from exc


def _checked(schema: Any, topic_prefix: str | None) -> Relation:
    if not isinstance(schema, dict):
        raise SchemaError("a value schema is a JSON object")
    name = schema.get("name")
    if not isinstance(name, str) or not _ENVELOPE_NAME.match(name):
        raise SchemaError("not an envelope schema (record name)", schema=repr(name)[:80])
    rel = _relation(schema)
    ns = schema.get("namespace")
    expected = namespace(topic_prefix, rel.schema, rel.table) if topic_prefix is not None else ns
    if not isinstance(ns, str) or ns != expected:
        raise SchemaError("the schema's namespace is not the one of its table", namespace=repr(ns)[:120],
                          expected=expected, table=rel.qualified)
    own = value_schema(rel, topic_prefix="")
    own["name"], own["namespace"] = name, ns
    # the row record's namespace follows the envelope's; regenerate it under the same one
    own["fields"][0]["type"][1]["namespace"] = ns
    own["fields"][1]["type"][1] = f"{ns}.{own['fields'][0]['type'][1]['name']}"
    if _canonical(schema) != _canonical(own):
        raise SchemaError("the schema's Avro structure is not the one the producer writes for its pg.* properties",
                          table=rel.qualified)
    return rel
