"""Avro schemas from a `Relation`.

Called once per table version (by `TableCodec`; the sink reads schemas back, validated, through
`bridge.codec.validate`); nothing here is on a hot path. The mapping follows docs/internals.md ("Value forms", "Schemas").
Every column property the sink needs to rebuild the table travels in the field: `pg.name`,
`pg.type` (`format_type` text), `pg.not_null`, `pg.base`, `pg.kind`, `pg.ndims`, and when set
`pg.precision`, `pg.scale`, `pg.length`, `pg.type_oid`, and `pg.missing` (the value rows older
than an `ADD COLUMN … DEFAULT` have, as text).
"""

from __future__ import annotations

import copy
from typing import Any

from bridge.codec.names import field_names, namespace
from bridge.codec.templates import ENVELOPE, SOURCE
from bridge.errors import SchemaError
from bridge.relation import Column, Relation

ROW_NAME = "Value"
KEY_NAME = "Key"
ENVELOPE_NAME = "Envelope"

_SIMPLE: dict[str, Any] = {
    "int2": "int",
    "int4": "int",
    "int8": "long",
    "oid": "long",
    "float4": "float",
    "float8": "double",
    "bool": "boolean",
    "bytea": "bytes",
    "date": {"type": "int", "logicalType": "date"},
    "time": {"type": "long", "logicalType": "time-micros"},
    "timestamp": {"type": "long", "logicalType": "local-timestamp-micros"},
    "timestamptz": {"type": "long", "logicalType": "timestamp-micros"},
    "uuid": {"type": "string", "logicalType": "uuid"},
}


def decimal_type(col: Column) -> dict[str, Any] | None:
    """The Avro decimal for `numeric(p,s)`, or None when the column is carried as a string
    (unconstrained numeric, or a scale Avro cannot express: negative or above the precision)."""
    p, s = col.precision, col.scale
    if col.base != "numeric" or p is None or s is None or s < 0 or s > p:
        return None
    return {"type": "bytes", "logicalType": "decimal", "precision": p, "scale": s}


def _scalar_branches(col: Column) -> list[Any]:
    """The non-null branches of a scalar of this column's base type."""
    if col.kind != "b":
        return ["string"]  # enum, range, composite, multirange: PostgreSQL's text, whatever the name
    dec = decimal_type(col)
    if dec is not None:
        return [dec, "string"]  # NaN and ±Infinity go to the string branch
    return [copy.deepcopy(_SIMPLE.get(col.base, "string"))]


def column_type(col: Column, *, nullable: bool) -> Any:
    """The Avro type of a column: `["null", T]` in rows (`nullable`), bare `T` in keys."""
    branches = _scalar_branches(col)
    if col.ndims:
        inner: Any = {"type": "array", "items": ["null", *branches]}
        for _ in range(col.ndims - 1):
            inner = {"type": "array", "items": inner}
        branches = [inner]
    if nullable:
        return ["null", *branches]
    return branches[0] if len(branches) == 1 else branches


def _field(col: Column, avro: str, *, nullable: bool) -> dict[str, Any]:
    f: dict[str, Any] = {"name": avro, "type": column_type(col, nullable=nullable)}
    if nullable:
        f["default"] = None
    f.update({"pg.name": col.name, "pg.type": col.type_name, "pg.not_null": col.not_null,
              "pg.base": col.base, "pg.kind": col.kind, "pg.ndims": col.ndims})
    for prop, v in (("pg.precision", col.precision), ("pg.scale", col.scale), ("pg.length", col.length)):
        if v is not None:
            f[prop] = v
    if col.type_oid:
        f["pg.type_oid"] = col.type_oid
    if nullable and col.missing is not None:
        f["pg.missing"] = col.missing
    return f


def _table_props(rel: Relation) -> dict[str, Any]:
    props: dict[str, Any] = {"pg.schema": rel.schema, "pg.table": rel.table, "pg.primary_key": list(rel.primary_key),
                             "pg.replica_identity": rel.replica_identity, "pg.version": rel.version}
    if rel.oid:
        props["pg.oid"] = rel.oid
    return props


def row_schema(relation: Relation, *, topic_prefix: str) -> dict[str, Any]:
    """The row record (`Value`): every column, each `["null", T]` with default null."""
    names = field_names(relation.column_names)
    return {"type": "record", "name": ROW_NAME, "namespace": namespace(topic_prefix, relation.schema, relation.table),
            "fields": [_field(c, n, nullable=True) for c, n in zip(relation.columns, names, strict=True)]}


def key_schema(relation: Relation, *, topic_prefix: str) -> dict[str, Any] | None:
    """The key record of the primary-key columns (non-null types, PK order); None without a PK.

    Raises `SchemaError` if a primary-key column is not a column of the relation.
    """
    if not relation.primary_key:
        return None
    names = dict(zip(relation.column_names, field_names(relation.column_names), strict=True))
    fields = []
    for pk in relation.primary_key:
        if pk not in relation.index:
            raise SchemaError("primary-key column not in the relation", table=relation.qualified, column=pk)
        fields.append(_field(relation.column(pk), names[pk], nullable=False))
    return {"type": "record", "name": KEY_NAME, "namespace": namespace(topic_prefix, relation.schema, relation.table),
            "fields": fields, **_table_props(relation)}


def value_schema(relation: Relation, *, topic_prefix: str) -> dict[str, Any]:
    """The envelope (template `schemas/envelope.avsc`) around this table's row record, with the
    schema-level `pg.*` properties that let the sink rebuild the relation from the schema alone."""
    env = copy.deepcopy(ENVELOPE)
    env["name"] = ENVELOPE_NAME
    env["namespace"] = namespace(topic_prefix, relation.schema, relation.table)
    row = row_schema(relation, topic_prefix=topic_prefix)
    full_row = f"{row['namespace']}.{ROW_NAME}"
    for f in env["fields"]:
        if f["type"] == ["null", "Row"]:
            f["type"] = ["null", row]
            row = full_row  # type: ignore[assignment]  # second use refers to the name
        elif f["type"] == "bridge.Source":
            f["type"] = copy.deepcopy(SOURCE)
    env.update(_table_props(relation))
    return env


def row_record(value_schema: dict[str, Any]) -> dict[str, Any]:
    """The row record inside an envelope schema. Raises `SchemaError` if it is not one."""
    try:
        before = value_schema["fields"][0]
        rec = before["type"][1]
        if before["name"] != "before" or not isinstance(rec, dict) or rec.get("type") != "record":
            raise KeyError("before")
        return rec
    except (KeyError, IndexError, TypeError) as exc:
        raise SchemaError("not an envelope schema (no before/after row record)",
                          schema=value_schema.get("name") if isinstance(value_schema, dict) else None) from exc
