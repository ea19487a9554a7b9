"""The position table in the target, and the applier's cache of it.

`PositionTable` holds the last applied position per (topic, partition). It is written in the
same transaction as the rows it covers, so after any crash the target knows exactly which events
it holds; replays at or below the stored position are skipped.

`PositionCache` is what the applier knows of that table for the partitions it owns. Guarantee:
a cached position was committed in the target (loaded from the table, or set after the commit
that wrote it), so it is never ahead of the table and a record at or below it was applied (or
dead-lettered). Replays are decided by the table itself, read under a row lock in each batch
(`PositionTable.lock`), never by the cache alone.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import psycopg
from psycopg import sql

from bridge.config import STATE_SCHEMA
from bridge.events import Position
from bridge.lsn import Lsn
from bridge.sink.records import PartitionKey
from bridge.sink.statements import run

log = logging.getLogger(__name__)

TABLE = "bridge_positions"

class PositionTable:
    """SQL for `<schema>.bridge_positions`, built once. Stateless besides the names."""

    def __init__(self, schema: str = STATE_SCHEMA) -> None:
        self.schema = schema
        name = sql.Identifier(schema, TABLE)
        self._create_schema = sql.SQL("CREATE SCHEMA IF NOT EXISTS {schema}").format(schema=sql.Identifier(schema))
        self._create = sql.SQL(
            "CREATE TABLE IF NOT EXISTS {name} ("
            " topic text NOT NULL, partition integer NOT NULL, commit_lsn pg_lsn NOT NULL,"
            " seq bigint NOT NULL, updated_at timestamptz NOT NULL DEFAULT now(),"
            " PRIMARY KEY (topic, partition))"
        ).format(name=name)
        self._load_all = sql.SQL("SELECT topic, partition, commit_lsn::text, seq FROM {name}").format(name=name)
        self._load = sql.SQL(
            "SELECT p.topic, p.partition, p.commit_lsn::text, p.seq FROM {name} p"
            " JOIN unnest(%s::text[], %s::int[]) AS a(topic, partition) USING (topic, partition)"
        ).format(name=name)
        # The batch's rows, locked until its commit (in one order: two members never deadlock).
        self._lock = sql.SQL(
            "SELECT p.topic, p.partition, p.commit_lsn::text, p.seq FROM {name} p"
            " JOIN unnest(%s::text[], %s::int[]) AS a(topic, partition) USING (topic, partition)"
            " ORDER BY p.topic, p.partition FOR UPDATE OF p"
        ).format(name=name)
        # Forward only: a position never moves back, whoever writes it.
        self._upsert = sql.SQL(
            "INSERT INTO {name} AS p (topic, partition, commit_lsn, seq)"
            " SELECT * FROM unnest(%s::text[], %s::int[], %s::pg_lsn[], %s::bigint[])"
            " ON CONFLICT (topic, partition) DO UPDATE"
            " SET commit_lsn = EXCLUDED.commit_lsn, seq = EXCLUDED.seq, updated_at = now()"
            " WHERE (p.commit_lsn, p.seq) < (EXCLUDED.commit_lsn, EXCLUDED.seq)"
        ).format(name=name)

    def ensure(self, conn: psycopg.Connection[Any]) -> None:
        """Create the schema and table when missing. Called once per connection. One statement
        per execute, with (no) parameters: the extended protocol, which never runs a second one."""
        run(conn, self._create_schema)
        run(conn, self._create)

    def load(self, conn: psycopg.Connection[Any],
             partitions: Iterable[PartitionKey] | None = None) -> dict[PartitionKey, Position]:
        """The stored positions of `partitions` (all when `None`); absent partitions are left out."""
        if partitions is None:
            rows = run(conn, self._load_all).fetchall()
        else:
            tps = list(partitions)
            rows = conn.execute(self._load, ([t for t, _ in tps], [p for _, p in tps])).fetchall()
        out: dict[PartitionKey, Position] = {}
        for row in rows:
            out[(str(row[0]), int(row[1]))] = Position(Lsn.parse(str(row[2])), int(row[3]))
        return out

    def lock(self, conn: psycopg.Connection[Any], partitions: Iterable[PartitionKey]) -> dict[PartitionKey, Position]:
        """The stored positions of `partitions`, their rows locked until the transaction ends:
        another member applying the same partition waits, then reads what this one stored."""
        tps = list(partitions)
        rows = conn.execute(self._lock, ([t for t, _ in tps], [p for _, p in tps])).fetchall()
        return {(str(r[0]), int(r[1])): Position(Lsn.parse(str(r[2])), int(r[3])) for r in rows}

    def upsert(self, conn: psycopg.Connection[Any], positions: Mapping[PartitionKey, Position]) -> None:
        """Store `positions` (forward only). Called inside the batch transaction."""
        if not positions:
            return
        items = list(positions.items())
        conn.execute(self._upsert, (
            [t for (t, _), _ in items], [p for (_, p), _ in items],
            [str(pos.commit_lsn) for _, pos in items], [pos.seq for _, pos in items],
        ))


class PositionCache:
    """The stored positions of the partitions this sink member owns, as last read or written.

    Read (and locked) again by every apply for its partitions, which decides replays by the
    table; loaded on assignment, forgotten on revocation; moved forward only after a commit. It
    serves the positions the commit path reports (offset metadata, acks)."""

    def __init__(self) -> None:
        self._positions: dict[PartitionKey, Position] = {}

    def get(self, tp: PartitionKey) -> Position | None:
        """The position of `tp`; `None` when nothing was applied there (or it is not loaded)."""
        return self._positions.get(tp)

    def loaded(self, partitions: Iterable[PartitionKey], found: Mapping[PartitionKey, Position]) -> None:
        """Take what the table holds for `partitions` (read in a transaction; absent: never
        applied). Replaces what the cache held for them."""
        for tp in partitions:
            pos = found.get(tp)
            if pos is None:
                self._positions.pop(tp, None)
            else:
                self._positions[tp] = pos

    def committed(self, positions: Mapping[PartitionKey, Position]) -> None:
        """Move to `positions`, forward only. Call only after the transaction that stored them
        has committed."""
        mine = self._positions
        for tp, pos in positions.items():
            old = mine.get(tp)
            if old is None or old < pos:
                mine[tp] = pos

    def forget(self, partitions: Iterable[PartitionKey]) -> None:
        """Drop `partitions` (revoked): they load again when owned again."""
        for tp in partitions:
            self._positions.pop(tp, None)

    def of(self, partitions: Iterable[PartitionKey]) -> dict[PartitionKey, Position]:
        """The known positions of `partitions` (those never applied are left out)."""
        mine = self._positions
        return {tp: mine[tp] for tp in partitions if tp in mine}

    def all(self) -> dict[PartitionKey, Position]:
        return dict(self._positions)
