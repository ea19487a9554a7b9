"""The initial snapshot: every selected table's rows, read consistently with the slot.

The slot is created with `EXPORT_SNAPSHOT`; a REPEATABLE READ transaction adopts that snapshot
(`SET TRANSACTION SNAPSHOT`) and reads each table in keyset chunks. The rows become op `r`
events positioned `(consistent_point, seq)`: before every streamed change, whose commit LSNs are
all past the consistent point.

Chunks: `WHERE (pk) > (last) ORDER BY pk LIMIT n`, one SQL text per table built once from the
key columns' types (the last key travels back as text with an explicit cast to the column's
type, so the comparison is PostgreSQL's own for integers, text, uuid, timestamps, numeric,
composites). Every column is selected as `::text` — the same output functions test_decoding
uses — and converted with the relation's converters. Tables without a primary key are read
through a server-side cursor in one pass.

Resuming: after each chunk the producer records (table, last key, next seq) in its state store.
A snapshot interrupted by a crash resumes after the last completed chunk, in a fresh REPEATABLE
READ transaction (the exported snapshot died with its connection). Rows read later than the
consistent point are still correct: the slot was not confirmed past the consistent point, so
every change since then is streamed after the snapshot and applied on top of it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from bridge.errors import SourceError
from bridge.relation import Relation
from bridge.source.converters import converter

log = logging.getLogger(__name__)

DEFAULT_CHUNK_ROWS = 10_000


@dataclass(slots=True)
class TableProgress:
    """Where the snapshot of one table stands (what the state store keeps)."""

    schema: str
    table: str
    done: bool = False
    last_key: list[str] | None = None  # text of the last key read, in key column order
    rows: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"schema": self.schema, "table": self.table, "done": self.done, "last_key": self.last_key,
                "rows": self.rows}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TableProgress:
        return cls(d["schema"], d["table"], bool(d.get("done")), d.get("last_key"), int(d.get("rows", 0)))


def quoted_identity(schema: str, table: str) -> str:
    """`"schema"."table"` with `"` doubled, as SQL writes it: the key of a table in the snapshot
    state. Dotted text is ambiguous (`"public.a".b` and `public."a.b"` are both `public.a.b`)."""
    return '"' + schema.replace('"', '""') + '"."' + table.replace('"', '""') + '"'


@dataclass(slots=True)
class SnapshotState:
    """The whole snapshot's progress: consistent point, next seq, per-table progress."""

    consistent_point: int
    next_seq: int = 0
    tables: dict[str, TableProgress] = field(default_factory=dict)  # by `quoted_identity`

    @classmethod
    def of_tables(cls, consistent_point: int, tables: list[tuple[str, str]]) -> SnapshotState:
        """A new snapshot of `tables` (schema, table), none read yet."""
        return cls(consistent_point, 0, {quoted_identity(s, t): TableProgress(s, t) for s, t in tables})

    @property
    def done(self) -> bool:
        return all(t.done for t in self.tables.values())

    def to_json(self) -> dict[str, Any]:
        return {"consistent_point": self.consistent_point, "next_seq": self.next_seq,
                "tables": {k: v.to_json() for k, v in self.tables.items()}}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SnapshotState:
        # Re-keyed from each entry's own names: states written before the key was the quoted
        # identity used dotted text, which is ambiguous (two tables could share one entry).
        progress = [TableProgress.from_json(v) for v in d.get("tables", {}).values()]
        return cls(int(d["consistent_point"]), int(d.get("next_seq", 0)),
                   {quoted_identity(p.schema, p.table): p for p in progress})


def list_tables(conn: psycopg.Connection[Any], include: Callable[[str, str], bool]) -> list[tuple[str, str]]:
    """Ordinary tables (and leaf partitions, as test_decoding names them) the filter selects."""
    rows = conn.execute(
        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
        "AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp%%' "
        "ORDER BY 1, 2").fetchall()
    return [(s, t) for s, t in rows if include(s, t)]


class TableReader:
    """Reads one table in chunks; the SQL and converters are built once, here."""

    def __init__(self, relation: Relation, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> None:
        self.relation = relation
        self.chunk_rows = chunk_rows
        self.converters = [converter(c) for c in relation.columns]
        table: sql.Composable = sql.Identifier(relation.schema, relation.table)
        cols = sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c.name)) for c in relation.columns)
        self.key_index = [relation.index[k] for k in relation.primary_key]
        if relation.primary_key:
            # Qualified with the table's alias: a bare name in ORDER BY would resolve to the
            # output column of the same name — its `::text` — and order `10` before `9`, which
            # the keyset comparison (on the typed column) does not: rows would be skipped.
            table = sql.SQL("{} AS t").format(table)
            key = sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(k)) for k in relation.primary_key)
            casts = sql.SQL(", ").join(
                sql.SQL("{}::{}").format(sql.Placeholder(), sql.SQL(relation.column(k).type_name))
                for k in relation.primary_key)
            self.first_sql = sql.SQL("SELECT {} FROM {} ORDER BY {} LIMIT {}").format(
                cols, table, key, sql.Literal(chunk_rows))
            self.next_sql = sql.SQL("SELECT {} FROM {} WHERE ({}) > ({}) ORDER BY {} LIMIT {}").format(
                cols, table, key, casts, key, sql.Literal(chunk_rows))
        self.scan_sql = sql.SQL("SELECT {} FROM {}").format(cols, sql.Identifier(relation.schema, relation.table))

    def _convert(self, raw: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(None if v is None else conv(v) for conv, v in zip(self.converters, raw, strict=True))

    def read_chunk(self, conn: psycopg.Connection[Any], last_key: list[str] | None
                   ) -> tuple[list[tuple[Any, ...]], list[str] | None]:
        """One keyset chunk after `last_key` (from the start when None), as one statement.

        Used by the resnapshot, on an autocommit connection: each chunk is its own short
        transaction. Returns (rows converted to value forms, text of the chunk's last key —
        `last_key` itself when the chunk is empty). Only for tables with a primary key.
        """
        if not self.relation.primary_key:
            raise SourceError(f"{self.relation.qualified} has no primary key: it cannot be read in chunks",
                              table=self.relation.qualified)
        raw = (conn.execute(self.first_sql) if last_key is None else conn.execute(self.next_sql, last_key)).fetchall()
        if not raw:
            return [], last_key
        return [self._convert(r) for r in raw], [raw[-1][i] for i in self.key_index]

    def chunks(self, conn: psycopg.Connection[Any], last_key: list[str] | None
               ) -> Iterator[tuple[list[tuple[Any, ...]], list[str] | None]]:
        """Yields (rows converted to value forms, text of the chunk's last key) until the end."""
        if not self.relation.primary_key:
            if last_key is not None:
                return  # a keyless table is read in one pass; it was finished
            with conn.cursor(name=f"bridge_snap_{self.relation.oid or id(self)}") as cur:
                cur.itersize = self.chunk_rows
                cur.execute(self.scan_sql)
                while True:
                    raw = cur.fetchmany(self.chunk_rows)
                    if not raw:
                        return
                    yield [self._convert(r) for r in raw], None
        while True:
            if last_key is None:
                raw = conn.execute(self.first_sql).fetchall()
            else:
                raw = conn.execute(self.next_sql, last_key).fetchall()
            if not raw:
                return
            last_key = [raw[-1][i] for i in self.key_index]
            yield [self._convert(r) for r in raw], last_key
            if len(raw) < self.chunk_rows:
                return


def begin_snapshot_transaction(conn: psycopg.Connection[Any], snapshot_name: str | None) -> None:
    """REPEATABLE READ, READ ONLY; adopt the exported snapshot when there is one."""
    try:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        if snapshot_name is not None:
            conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot_name)))
    except psycopg.Error as exc:
        raise SourceError(f"cannot start the snapshot transaction: {str(exc).strip()}",
                          snapshot=snapshot_name) from exc
