"""Target column types from a closed description: nothing of a schema's text reaches SQL.

A column read from a schema (validated by `bridge.codec.validate`) names its type three ways:
`pg.base` (the scalar's `pg_type.typname`), `pg.kind` and integer modifiers, and `pg.type`
(`format_type` text). The sink builds a target column's type only from

1. a **built-in type** of the fixed table below, looked up by `pg.base` (kind `b`), with the
   modifiers written from validated integers (`numeric(p,s)`, `varchar(n)`, `bit(n)`, ...);
2. a **user type** (enum, domain, extension type) whose `pg.type` is a plain, possibly qualified
   name: parsed by a strict grammar and composed with `psycopg.sql.Identifier`, used only when
   the target has a type of that name (the caller asks `to_regtype` with a parameter);
3. `text`, which holds every type's text form.

`candidates(column)` lists them in that order; the caller takes the first the target knows.
"""

from __future__ import annotations

import re

from psycopg import sql

from bridge.relation import Column

# typname -> spelling, for PostgreSQL's built-in types (their typnames are not identifiers the
# schema could choose: the spelling is ours)
BUILTIN: dict[str, str] = {
    "int2": "smallint", "int4": "integer", "int8": "bigint", "oid": "oid",
    "float4": "real", "float8": "double precision", "numeric": "numeric", "money": "money",
    "bool": "boolean", "text": "text", "varchar": "character varying", "bpchar": "character",
    "char": '"char"', "name": "name", "bytea": "bytea",
    "date": "date", "time": "time without time zone", "timetz": "time with time zone",
    "timestamp": "timestamp without time zone", "timestamptz": "timestamp with time zone",
    "interval": "interval", "uuid": "uuid", "json": "json", "jsonb": "jsonb", "jsonpath": "jsonpath",
    "xml": "xml", "inet": "inet", "cidr": "cidr", "macaddr": "macaddr", "macaddr8": "macaddr8",
    "bit": "bit", "varbit": "bit varying", "tsvector": "tsvector", "tsquery": "tsquery",
    "point": "point", "line": "line", "lseg": "lseg", "box": "box", "path": "path", "polygon": "polygon",
    "circle": "circle", "pg_lsn": "pg_lsn", "xid": "xid", "xid8": "xid8", "pg_snapshot": "pg_snapshot",
    "txid_snapshot": "txid_snapshot", "int4range": "int4range", "int8range": "int8range",
    "numrange": "numrange", "tsrange": "tsrange", "tstzrange": "tstzrange", "daterange": "daterange",
    "int4multirange": "int4multirange", "int8multirange": "int8multirange", "nummultirange": "nummultirange",
    "tsmultirange": "tsmultirange", "tstzmultirange": "tstzmultirange", "datemultirange": "datemultirange",
}
_LENGTH_MOD = frozenset({"varchar", "bpchar", "bit", "varbit"})

_PART = r'(?:[a-z_][a-z0-9_$]*|"((?:[^"\x00]|"")+)")'
_USER_TYPE = re.compile(rf"(?:{_PART}\.)?{_PART}(?:\[\])*\Z")
_PLAIN = re.compile(r"[a-z_][a-z0-9_$]*\Z")


def builtin(column: Column) -> str | None:
    """The built-in spelling for the column's scalar with its modifiers, or None."""
    if column.kind != "b":
        return None
    spelling = BUILTIN.get(column.base)
    if spelling is None:
        return None
    if column.base == "numeric" and column.precision is not None:
        return f"numeric({int(column.precision)},{int(column.scale or 0)})"
    if column.base in _LENGTH_MOD and column.length is not None:
        return f"{spelling}({int(column.length)})"
    return spelling


def user_type(column: Column) -> str | None:
    """`pg.type` as a (schema-)qualified type name composed from identifiers, when it is one and
    not a built-in spelling; else None."""
    m = _USER_TYPE.match(column.type_name)
    if m is None:
        return None
    bare = column.type_name.rstrip("[]")
    parts = _split(bare)
    if parts is None or (len(parts) == 1 and parts[0] in BUILTIN.values()):
        return None
    return sql.Identifier(*parts).as_string(None)


def _split(name: str) -> list[str] | None:
    """`a.b` / `"A"."b.c"` → its identifiers (quotes removed, `""` undone), or None."""
    parts: list[str] = []
    i = 0
    while i < len(name):
        if name[i] == '"':
            j = i + 1
            buf = []
            while j < len(name):
                if name[j] == '"':
                    if name[j + 1:j + 2] == '"':
                        buf.append('"')
                        j += 2
                        continue
                    break
                buf.append(name[j])
                j += 1
            parts.append("".join(buf))
            i = j + 1
        else:
            j = name.find(".", i)
            j = len(name) if j < 0 else j
            word = name[i:j]
            if not _PLAIN.match(word):
                return None
            parts.append(word)
            i = j
        if i < len(name):
            if name[i] != ".":
                return None
            i += 1
    return parts if 1 <= len(parts) <= 2 else None


def candidates(column: Column, *, array: bool) -> list[str]:
    """The target types to try for `column`, best first (see the module doc); `text` last."""
    out = [t for t in (user_type(column), builtin(column)) if t is not None]
    out.append("text")
    return [t + "[]" for t in out] if array else out
