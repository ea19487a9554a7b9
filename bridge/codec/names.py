"""Avro and Kafka names for PostgreSQL identifiers (docs/internals.md, "Avro names").

Avro names must match `[A-Za-z_][A-Za-z0-9_]*`. Every other character becomes `_`; a name that
starts with a digit (or is empty) gets a leading `_`; when this changed the name, or two columns
would collide, `_` + 8 hex digits of the CRC-32 of the original UTF-8 name is appended. The
original name always travels in the field property `pg.name`, so nothing relies on reversing this.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable

from bridge.errors import SchemaError

_INVALID = re.compile(r"[^A-Za-z0-9_]")
_VALID = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_TOPIC_INVALID = re.compile(r"[^A-Za-z0-9._-]")
MAX_TOPIC_LENGTH = 249  # Kafka's limit (TopicNameValidator)


def _crc(name: str) -> str:
    return f"{zlib.crc32(name.encode('utf-8')):08x}"


def avro_name(name: str) -> str:
    """The Avro name of one identifier, without regard to collisions. Never raises."""
    if _VALID.match(name):
        return name
    out = _INVALID.sub("_", name)
    if not out or out[0].isdigit():
        out = "_" + out
    return f"{out}_{_crc(name)}"


def field_names(names: Iterable[str]) -> list[str]:
    """Avro field names for a record's columns, in order, unique.

    A name left unchanged by `avro_name` that equals another column's rewritten name keeps its
    spelling; the later column gets a further CRC suffix. Raises `SchemaError` if no unique name
    can be found (it cannot happen for PostgreSQL's distinct column names in practice).
    """
    originals = list(names)
    taken: set[str] = set()
    out: list[str] = []
    # Unchanged names first claim their spelling, so a column literally called `a_b` keeps it.
    plain = {n for n in originals if _VALID.match(n)}
    for n in originals:
        cand = avro_name(n)
        if cand in taken or (cand != n and cand in plain):
            cand = f"{cand}_{_crc(n)}"
            if cand in taken or cand in plain:
                raise SchemaError("cannot give column a unique Avro name", column=n)
        taken.add(cand)
        out.append(cand)
    return out


def namespace(*parts: str) -> str:
    """An Avro namespace from dotted parts (`prefix`, `schema`, `table`); each component sanitised."""
    comps: list[str] = []
    for p in parts:
        comps.extend(avro_name(c) for c in p.split("."))
    return ".".join(comps)


_PLAIN_PART = re.compile(r"[A-Za-z0-9_-]+\Z")
ESCAPED_MARK = "esc"  # the last component of a topic whose schema or table name was escaped


def _escape_part(name: str) -> str:
    """A reversible spelling of one identifier in `[A-Za-z0-9_-]`: letters, digits and `-` stay,
    `_` becomes `__`, every other character `_<hex code point>_` (`.` → `_2e_`, ` ` → `_20_`)."""
    out: list[str] = []
    for ch in name:
        if ch == "_":
            out.append("__")
        elif ch == "-" or (ch.isascii() and ch.isalnum()):
            out.append(ch)
        else:
            out.append(f"_{ord(ch):x}_")
    return "".join(out)


def topic_name(prefix: str, schema: str, table: str) -> str:
    """The topic of `schema.table`: a pure, injective function of (prefix, schema, table).

    - Both names made of `[A-Za-z0-9_-]` only (the ordinary case): `<prefix>.<schema>.<table>`.
    - Otherwise (a `.`, a space, any character Kafka does not allow in a topic name, or an empty
      name): `<prefix>.<esc(schema)>.<esc(table)>.esc`, where `esc` keeps letters, digits and `-`,
      doubles `_` and writes every other character as `_<hex code point>_`. So `"public.a".b`
      is `<prefix>.public_2e_a.b.esc` and `public."a.b"` is `<prefix>.public.a_2e_b.esc`.

    Injective for a given prefix: an ordinary name has exactly two components after the prefix,
    an escaped one three, and the escaping is reversible. Characters Kafka forbids in the prefix
    become `_`. Raises `SchemaError` when the result exceeds Kafka's 249-character limit.
    """
    head = _TOPIC_INVALID.sub("_", prefix)
    if _PLAIN_PART.match(schema) and _PLAIN_PART.match(table):
        topic = f"{head}.{schema}.{table}"
    else:
        topic = f"{head}.{_escape_part(schema)}.{_escape_part(table)}.{ESCAPED_MARK}"
    if len(topic) > MAX_TOPIC_LENGTH:
        raise SchemaError("topic name longer than Kafka allows", topic=topic, table=f"{schema}.{table}")
    return topic
