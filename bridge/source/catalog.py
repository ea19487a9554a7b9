"""Reads `Relation`s from the source's `pg_catalog`, caches them, and refreshes them on DDL.

The catalog describes types; the change text is the truth about values. A relation is read once
and kept until a change shows a different column list, when the decoder asks for `refresh()`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.rows import tuple_row

from bridge.errors import SchemaError, SourceError
from bridge.relation import Column, Relation

log = logging.getLogger(__name__)

_VARHDRSZ = 4
# Types whose pg_type row looks like an array (typelem set, varlena, category A) but whose text
# form is not an array literal.
_NOT_ARRAYS = "('int2vector', 'oidvector')"

# Resolves each input column's type: domains to their base type (carrying the domain's typmod
# when the column has none), arrays to their element type, repeatedly; keeps the last step.
_RESOLVE = f"""
, resolved AS (
  SELECT ord, name, type_name, type_oid, ndims, not_null, type_oid AS cur, typmod, 0 AS depth,
         false AS is_array, missing
    FROM input
  UNION ALL
  SELECT r.ord, r.name, r.type_name, r.type_oid, r.ndims, r.not_null,
         CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.typelem END,
         CASE WHEN t.typtype = 'd' AND r.typmod = -1 THEN t.typtypmod ELSE r.typmod END,
         r.depth + 1,
         r.is_array OR t.typtype <> 'd', r.missing
    FROM resolved r JOIN pg_catalog.pg_type t ON t.oid = r.cur
   WHERE r.depth < 16
     AND (t.typtype = 'd'
          OR (t.typcategory = 'A' AND t.typelem <> 0 AND t.typlen = -1
              AND t.typname NOT IN {_NOT_ARRAYS}))
)
SELECT DISTINCT ON (r.ord)
       r.name, r.type_name, r.type_oid, r.ndims, r.not_null, r.typmod, r.is_array,
       coalesce(t.typname, 'unknown'), coalesce(t.typtype::text, 'b'), r.missing
  FROM resolved r LEFT JOIN pg_catalog.pg_type t ON t.oid = r.cur
 ORDER BY r.ord, r.depth DESC
"""

_COLUMNS_SQL = (
    """
WITH RECURSIVE input AS (
  SELECT a.attnum::int AS ord, a.attname::text AS name,
         pg_catalog.format_type(a.atttypid, a.atttypmod) AS type_name,
         a.atttypid AS type_oid, a.atttypmod AS typmod, a.attndims::int AS ndims,
         a.attnotnull AS not_null,
         -- what rows older than an ADD COLUMN ... DEFAULT read (no WAL carries it): as text
         CASE WHEN a.atthasmissing THEN (a.attmissingval::text::text[])[1] END AS missing
    FROM pg_catalog.pg_attribute a
   WHERE a.attrelid = %(oid)s AND a.attnum > 0 AND NOT a.attisdropped
)"""
    + _RESOLVE
)

_TYPES_SQL = (
    """
WITH RECURSIVE input AS (
  SELECT u.ord::int AS ord, u.name, u.type_name,
         coalesce(pg_catalog.to_regtype(u.type_name)::oid, 0::oid) AS type_oid,
         -1 AS typmod, 0 AS ndims, false AS not_null,
         -- a column the table still has, with the same type, keeps what older rows read
         (SELECT CASE WHEN a.atthasmissing THEN (a.attmissingval::text::text[])[1] END
            FROM pg_catalog.pg_attribute a
           WHERE a.attrelid = %(oid)s AND a.attname = u.name AND a.attnum > 0 AND NOT a.attisdropped
             AND a.atttypid = pg_catalog.to_regtype(u.type_name)) AS missing
    FROM unnest(%(names)s::text[], %(types)s::text[]) WITH ORDINALITY AS u(name, type_name, ord)
)"""
    + _RESOLVE
)

_TABLE_SQL = """
SELECT c.oid, c.relreplident::text
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = %(schema)s AND c.relname = %(table)s AND c.relkind IN ('r', 'p')
"""

_PRIMARY_KEY_SQL = """
SELECT a.attname::text
  FROM pg_catalog.pg_index i
  CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
  JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
 WHERE i.indrelid = %(oid)s AND i.indisprimary
 ORDER BY k.ord
"""


# Primary key and replica identity of the cached tables, with the WAL insert position at the time
# of reading: a key change seen here committed before that position.
_KEYS_SQL = """
SELECT n.nspname::text, c.relname::text, c.relreplident::text,
       coalesce((SELECT array_agg(a.attname::text ORDER BY k.ord)
                   FROM pg_catalog.pg_index i
                   CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
                   JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                  WHERE i.indrelid = c.oid AND i.indisprimary), '{}'::text[]),
       pg_catalog.pg_current_wal_lsn()::text
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE c.oid = ANY(%(oids)s::oid[])
"""


def _modifiers(base: str, typmod: int) -> tuple[int | None, int | None, int | None]:
    """(precision, scale, length) from a typmod; PG15 stores numeric scale as signed 11 bits."""
    if typmod < 0:
        return None, None, None
    if base == "numeric":
        t = typmod - _VARHDRSZ
        return (t >> 16) & 0xFFFF, ((t & 0x7FF) ^ 1024) - 1024, None
    if base in ("varchar", "bpchar"):
        return None, None, typmod - _VARHDRSZ
    if base in ("bit", "varbit"):
        return None, None, typmod
    return None, None, None


def _column(row: tuple[Any, ...]) -> Column:
    name, type_name, type_oid, ndims, not_null, typmod, is_array, base, kind, missing = row
    precision, scale, length = _modifiers(base, typmod)
    return Column(
        name=name,
        type_name=type_name,
        base=base,
        kind=kind,
        ndims=max(ndims, 1) if is_array else 0,
        not_null=bool(not_null),
        precision=precision,
        scale=scale,
        length=length,
        type_oid=int(type_oid),
        missing=missing,
    )


class Catalog:
    """Relations of one source database, read from `pg_catalog` over a plain SQL connection.

    Receives its connection (autocommit or not; each read runs in its own short transaction or
    savepoint). Not thread-safe: one per decoding pipeline.
    """

    def __init__(self, conn: psycopg.Connection[Any],
                 reconnect: Callable[[], psycopg.Connection[Any]] | None = None,
                 reconnect_for_s: float = 120.0) -> None:
        """`reconnect`, when given, opens a new connection after the old one broke (a PostgreSQL
        restart): reads then wait, retrying with backoff, for up to `reconnect_for_s`."""
        self._conn = conn
        self._reconnect = reconnect
        self._reconnect_for_s = reconnect_for_s
        self._cache: dict[tuple[str, str], Relation] = {}

    def close(self) -> None:
        self._conn.close()

    def relation(self, schema: str, table: str) -> Relation:
        """The cached relation for `schema.table`, read from the catalog on first use.

        Raises SchemaError when the table does not exist, SourceError when the query fails.
        """
        rel = self._cache.get((schema, table))
        if rel is None:
            rel = self._cache[(schema, table)] = self._read(schema, table, version=1)
        return rel

    def refresh(self, schema: str, table: str) -> Relation:
        """Re-read `schema.table` (called when a change's columns differ from the cached relation).

        Guarantees: the version grows by one when anything but the version differs (columns,
        types, key, replica identity, oid); otherwise the cached relation is returned unchanged.
        Raises SchemaError when the table no longer exists.
        """
        old = self._cache.get((schema, table))
        if old is None:
            return self.relation(schema, table)
        new = self._read(schema, table, version=old.version)
        if new == old:
            return old
        new = _with_version(new, old.version + 1)
        log.info("relation %s.%s changed: version %s -> %s", schema, table, old.version, new.version)
        self._cache[(schema, table)] = new
        return new

    def relation_from_line(self, schema: str, table: str, names: list[str], types: list[str]) -> Relation:
        """A relation built from a change line's own column names and `format_type_be` type names.

        Called when the catalog has moved ahead of the WAL being decoded (a later DDL) so no
        catalog version matches the line. Types are resolved with `to_regtype` (no modifiers are
        known: numeric stays unconstrained, so its values are strings); a type that no longer
        exists is carried as text. Primary key and replica identity are kept from the cached
        relation where their columns still exist, and so is what rows older than an `ADD COLUMN …
        DEFAULT` read (`Column.missing`) for a column the table still has with the same type (a
        table rewrite since has made it a stored value, which no catalog tells any more). The result becomes the cached relation with the
        next version. Raises SourceError when the query fails.
        """
        old = self._cache.get((schema, table))
        rows = self._fetch(_TYPES_SQL, {"names": names, "types": types, "oid": old.oid if old else 0})
        columns = tuple(_column(r) for r in rows)
        present = set(names)
        rel = Relation(
            schema=schema,
            table=table,
            columns=columns,
            primary_key=tuple(k for k in old.primary_key if k in present) if old else (),
            replica_identity=old.replica_identity if old else "d",
            oid=old.oid if old else 0,
            version=old.version + 1 if old else 1,
        )
        log.warning(
            "relation %s.%s: catalog does not match the change's columns %s; using the change's own types",
            schema, table, names,
        )
        self._cache[(schema, table)] = rel
        return rel

    def key_changes(self) -> tuple[str | None, list[tuple[str, str]]]:
        """The cached tables whose primary key or replica identity differ in the catalog now, and
        the WAL insert position (text) read in the same statement — every such change committed
        before it. Called periodically by `KeyWatch`: a key change alone shows in no change line
        until a DELETE or key update prints the new key. Raises SourceError when the query fails.
        """
        oids = [rel.oid for rel in self._cache.values() if rel.oid]
        if not oids:
            return None, []
        rows = self._fetch(_KEYS_SQL, {"oids": oids})
        changed: list[tuple[str, str]] = []
        lsn: str | None = None
        for schema, table, replident, pk, current in rows:
            lsn = current
            rel = self._cache.get((schema, table))
            if rel is not None and (tuple(pk) != rel.primary_key or replident != rel.replica_identity):
                changed.append((schema, table))
        return lsn, changed

    def forget(self, schema: str, table: str) -> None:
        """Drop the cached relation (the next `relation()` reads it again as version 1)."""
        self._cache.pop((schema, table), None)

    def _read(self, schema: str, table: str, version: int) -> Relation:
        found = self._fetch(_TABLE_SQL, {"schema": schema, "table": table})
        if not found:
            raise SchemaError(f"table {schema}.{table} does not exist in the source", schema=schema, table=table)
        oid, replident = found[0]
        columns = tuple(_column(r) for r in self._fetch(_COLUMNS_SQL, {"oid": oid}))
        pk = tuple(r[0] for r in self._fetch(_PRIMARY_KEY_SQL, {"oid": oid}))
        return Relation(schema, table, columns, pk, replident, int(oid), version)

    def _fetch(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        deadline = time.monotonic() + self._reconnect_for_s
        delay = 0.2
        while True:
            try:
                if self._conn.closed:
                    raise psycopg.OperationalError("the catalog connection is closed")
                with self._conn.transaction(), self._conn.cursor(row_factory=tuple_row) as cur:
                    cur.execute(sql, params)
                    return cur.fetchall()
            except psycopg.OperationalError as exc:
                if self._reconnect is None or time.monotonic() > deadline:
                    raise SourceError(f"catalog query failed: {exc}") from exc
                log.warning("catalog connection lost (%s); reconnecting", str(exc).strip())
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                try:
                    self._conn = self._reconnect()
                except (psycopg.Error, SourceError) as again:
                    log.warning("catalog reconnect failed: %s", again)
            except psycopg.Error as exc:
                raise SourceError(f"catalog query failed: {exc}") from exc


def _with_version(rel: Relation, version: int) -> Relation:
    return Relation(rel.schema, rel.table, rel.columns, rel.primary_key, rel.replica_identity, rel.oid, version)
