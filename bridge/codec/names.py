"""Avro names for PostgreSQL identifiers (topic names: `bridge.kafka.topics`) (docs/internals.md, "Avro names").

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
from bridge.kafka.topics import topic_name  # re-export: moved to bridge.kafka.topics

__all__ = ["avro_name", "field_names", "namespace", "topic_name"]

_INVALID = re.compile(r"[^A-Za-z0-9_]")
_VALID = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


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
