"""The initial snapshot's native path: each keyset chunk read with binary COPY, transcoded in Rust.

`NativeTableReader` is built once per table (relation version) from the relation and its codec,
like `TableReader`, whose keyset it follows: the same `ORDER BY` key, the same `WHERE (key) >
(last key as text, cast to the key's type)`, the same chunk size, and the same last-key text in
the snapshot state (so a snapshot may resume in either mode). Each chunk is one
`COPY (SELECT … ) TO STDOUT (FORMAT BINARY)` whose blocks go straight into the Rust core
(`bridge._native.SnapshotTranscoder`, native/src/producer/snapshot.rs): it parses the stream
with bounds checks, transcodes PostgreSQL's binary forms into the Avro key and the op-`r`
envelope (the chunk's `source` block) and computes the partition, with no Python object per
value. The key columns travel a second time as trailing `::text` fields: the last row's are the
next chunk's start.

Columns whose Avro value is PostgreSQL's text (enum, interval, inet, unconstrained numeric, …,
and scalar `char(n)`, whose `::text` drops the padding) are selected `::text`, exactly as the
reference selects them, and read with the streaming path's text conv. A table with a column the
native plan does not cover at all (`native_decoder.column_spec` says None) is read by the
reference `TableReader`. A value the core cannot write exactly (a modifier check failing on a
stale catalog, an array of another depth than the column's) is a miss: the chunk is read again
by the reference path, which answers as it always does. A malformed COPY stream raises
`SourceError` naming the offset.
"""

from __future__ import annotations

import logging
import select
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg import pq, sql

from bridge.codec.codec import Stamp, _write_long, _write_source_tail, _write_string
from bridge.codec.schemas import row_record
from bridge.errors import SourceError
from bridge.native import module
from bridge.relation import Column, Relation
from bridge.source.native_decoder import MISSES, column_spec

log = logging.getLogger(__name__)

Record = tuple[int, "bytes | None", bytes]
"""(partition, framed key or None, framed envelope): a `Router` `Out` of op `r`."""

# base type → (the core's binary form, the conv the reference gives it); any other base, or
# another conv (unconstrained numeric is text), is read as `::text`
_BINARY: dict[str, tuple[str, str]] = {
    "int2": ("int2", "int"), "int4": ("int4", "int"), "int8": ("int8", "long"), "oid": ("oid", "long"),
    "float4": ("float4", "float"), "float8": ("float8", "double"), "bool": ("bool", "bool"),
    "bytea": ("bytea", "bytes"), "date": ("date", "date"), "time": ("time", "time"),
    "timestamp": ("timestamp", "timestamp"), "timestamptz": ("timestamptz", "timestamptz"),
    "numeric": ("numeric", "decimal"), "text": ("text", "string"), "varchar": ("text", "string"),
    "name": ("text", "string"), "json": ("text", "string"), "uuid": ("uuid", "string"),
    "jsonb": ("jsonb", "string"),
}


def snapshot_spec(col: Column, field: dict[str, Any]) -> tuple[str, str, str, int, int, int, int, str] | None:
    """The core's description of one column (name, form, conv, length, precision, scale, ndims,
    delimiter), form a binary form or "sql-text"; None when the native path does not cover it."""
    spec = column_spec(col, field)
    if spec is None:
        return None
    name, _, conv, length, precision, scale, ndims, delim = spec
    found = _BINARY.get(col.base) if col.kind == "b" else None
    if col.base == "bpchar" and ndims:
        found = ("text", "string")  # array_out prints the elements padded, as they are sent
    form = found[0] if found is not None and found[1] == conv else "sql-text"
    return (name, form, conv, length, precision, scale, ndims, delim)


_BATCH = 256
"""COPY messages handed to the core per call (PostgreSQL sends one message per row)."""


def _wait_readable(pg: Any) -> None:
    while not select.select([pg.socket], [], [], 1.0)[0]:
        pass


def _result(pg: Any) -> Any:
    """The next result of the statement in progress on libpq connection `pg` (waiting)."""
    while pg.is_busy():
        _wait_readable(pg)
        pg.consume_input()
    return pg.get_result()


def _end(pg: Any) -> Any:
    """The statement's result, every further one drained (the connection is idle after)."""
    res = _result(pg)
    while _result(pg) is not None:
        pass
    return res


def copy_out(conn: psycopg.Connection[Any], query: bytes) -> Iterator[list[Any]]:
    """The messages of `COPY … TO STDOUT` on `conn` (one per row), in lists of up to `_BATCH`.

    Read from libpq directly (`pgconn.get_copy_data` without waiting, `select` on its socket
    when nothing is buffered): psycopg's `Copy.read` costs a few µs per message, which is the
    whole budget of a row here. The statement runs in whatever transaction `conn` is in (no
    implicit BEGIN: the snapshot's connection is autocommit with an explicit one). Raises
    SourceError when the statement fails. Closed early (a stop), it cancels the COPY and drains
    it, so the connection stays usable."""
    pg = conn.pgconn
    pg.send_query(query)
    res = _result(pg)
    if res is None or res.status != pq.ExecStatus.COPY_OUT:
        if res is not None:
            _end(pg)
        message = (res.error_message or b"").decode(errors="replace").strip() if res is not None else "no result"
        raise SourceError(f"COPY failed: {message}")
    get = pg.get_copy_data
    blocks: list[Any] = []
    finished = False
    try:
        while True:
            n, data = get(1)
            if n > 0:
                blocks.append(data)
                if len(blocks) >= _BATCH:
                    yield blocks
                    blocks = []
            elif n == 0:
                _wait_readable(pg)
                pg.consume_input()
            else:
                break
        finished = True
        if blocks:
            yield blocks
    finally:
        if not finished:
            _abandon(conn)
    res = _end(pg)
    if res is None or res.status != pq.ExecStatus.COMMAND_OK:
        message = (res.error_message or b"").decode(errors="replace").strip() if res is not None else "no result"
        raise SourceError(f"COPY failed: {message}")


def _abandon(conn: psycopg.Connection[Any]) -> None:
    """Cancel a COPY out left in the middle and drain it (errors only logged: a stop path)."""
    pg = conn.pgconn
    try:
        conn.cancel_safe()
        while (n := pg.get_copy_data(1)[0]) >= 0:
            if n == 0:
                _wait_readable(pg)
                pg.consume_input()
        _end(pg)
    except psycopg.Error as exc:
        log.info("abandoning a COPY: %s", exc)


def stamp_bytes(stamp: Stamp) -> tuple[bytes, bytes]:
    """The `source` bytes of a chunk's stamp: commit_lsn, and xid … ts_ms."""
    return _write_long(stamp.commit_lsn), _write_source_tail(
        (stamp.xid, stamp.commit_ts_us, stamp.snapshot, stamp.ts_ms))


class NativeTableReader:
    """One table's binary-COPY reader and transcoder. Build with `plan` (None: not covered)."""

    def __init__(self, relation: Relation, core: Any, forms: list[str], chunk_rows: int) -> None:
        self.relation = relation
        self.chunk_rows = chunk_rows
        self.core = core
        self.misses = 0
        t = sql.Identifier("t")
        cols = [sql.SQL("{}.{}").format(t, sql.Identifier(c.name)) if form != "sql-text"
                else sql.SQL("{}.{}::text").format(t, sql.Identifier(c.name))
                for c, form in zip(relation.columns, forms, strict=True)]
        keys = [sql.SQL("{}.{}").format(t, sql.Identifier(k)) for k in relation.primary_key]
        select = sql.SQL(", ").join(cols + [sql.SQL("{}::text").format(k) for k in keys])
        self._select = sql.SQL("SELECT {} FROM {} AS t").format(
            select, sql.Identifier(relation.schema, relation.table))
        self._key = sql.SQL(", ").join(keys)
        self._types = [sql.SQL(relation.column(k).type_name) for k in relation.primary_key]

    @classmethod
    def plan(cls, relation: Relation, codec: Any, partitions: int, chunk_rows: int) -> NativeTableReader | None:
        """The reader of `relation` encoding as `codec` (its `TableCodec`) into `partitions`, or
        None when a column is not covered (the reference `TableReader` reads the table)."""
        fields = row_record(codec.value_schema)["fields"]
        if len(fields) != len(relation.columns):
            return None
        specs = [snapshot_spec(c, f) for c, f in zip(relation.columns, fields, strict=True)]
        pk = [relation.index[c] for c in relation.primary_key]
        if any(s is None for s in specs) or any(relation.columns[i].ndims for i in pk):
            return None
        key_prefix = codec.key_prefix if codec.key_schema is not None else None
        src = _write_string(codec.db) + _write_string(relation.schema) + _write_string(relation.table)
        try:
            core = module().SnapshotTranscoder(specs, pk, key_prefix, codec.value_prefix, src, partitions, bool(pk))
        except ValueError as exc:
            log.info("native snapshot: no plan for %s (%s)", relation.qualified, exc)
            return None
        return cls(relation, core, [s[1] for s in specs if s is not None], chunk_rows)

    def _query(self, last_key: list[str] | None) -> sql.Composed:
        if not self.relation.primary_key:
            return sql.SQL("COPY ({}) TO STDOUT (FORMAT BINARY)").format(self._select)
        where: sql.Composable = sql.SQL("")
        if last_key is not None:
            bound = sql.SQL(", ").join(sql.SQL("{}::{}").format(sql.Literal(v), ty)
                                       for v, ty in zip(last_key, self._types, strict=True))
            where = sql.SQL(" WHERE ({}) > ({})").format(self._key, bound)
        return sql.SQL("COPY ({}{} ORDER BY {} LIMIT {}) TO STDOUT (FORMAT BINARY)").format(
            self._select, where, self._key, sql.Literal(self.chunk_rows))

    def _feed(self, blocks: list[Any], seq: int, src: tuple[bytes, bytes]) -> tuple[list[Record], int] | int:
        try:
            out: tuple[list[Record], int] | int = self.core.transcode(blocks, seq, *src)
        except ValueError as exc:
            raise SourceError(f"snapshot of {self.relation.qualified}: {exc}", table=self.relation.qualified) from exc
        if isinstance(out, int):
            self.misses += 1
            log.info("native snapshot: %s chunk takes the reference path (%s)", self.relation.qualified,
                     MISSES[out], extra={"table": self.relation.qualified})
        return out

    def _finish(self) -> None:
        try:
            self.core.finish()
        except ValueError as exc:
            raise SourceError(f"snapshot of {self.relation.qualified}: {exc}", table=self.relation.qualified) from exc

    def read_chunk(self, conn: psycopg.Connection[Any], last_key: list[str] | None, seq: int, stamp: Stamp
                   ) -> tuple[list[Record], int, list[str] | None] | None:
        """One keyset chunk after `last_key`, its records numbered from `seq`: (records, rows
        read, the chunk's last key text — `last_key` when it is empty), or None when the chunk
        must take the reference path (a miss). Raises SourceError for a malformed stream."""
        src = stamp_bytes(stamp)
        records: list[Record] = []
        rows, miss = 0, False
        self.core.start()
        for blocks in copy_out(conn, self._query(last_key).as_bytes(conn)):
            if miss:
                continue  # drained: the connection stays usable
            out = self._feed(blocks, seq + len(records), src)
            if isinstance(out, int):
                miss = True
                continue
            records += out[0]
            rows += out[1]
        if miss:
            return None
        self._finish()
        return records, rows, (self.core.last_key() if rows else last_key)

    def scan(self, conn: psycopg.Connection[Any], seq: int, stamp_of: Any
             ) -> Iterator[tuple[Stamp, list[Record], int] | None]:
        """A table without a primary key, in one COPY: yields (stamp, records, rows) per
        `chunk_rows` rows read (`stamp_of()` gives each chunk's stamp, numbering continues from
        `seq` plus the records yielded), or None once, on a miss, and stops."""
        self.core.start()
        stamp = stamp_of()
        src = stamp_bytes(stamp)
        records: list[Record] = []
        rows, miss = 0, False
        for blocks in copy_out(conn, self._query(None).as_bytes(conn)):
            if miss:
                continue  # drained: the connection stays usable
            out = self._feed(blocks, seq + len(records), src)
            if isinstance(out, int):
                miss = True
                continue
            records += out[0]
            rows += out[1]
            if rows >= self.chunk_rows:
                yield stamp, records, rows
                seq += len(records)
                records, rows = [], 0
                stamp = stamp_of()
                src = stamp_bytes(stamp)
        if miss:
            yield None
            return
        self._finish()
        if rows:
            yield stamp, records, rows


__all__ = ["NativeTableReader", "Record", "copy_out", "snapshot_spec", "stamp_bytes"]
