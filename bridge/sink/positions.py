"""The position table in the target: the last applied position per (topic, partition).

It is written in the same transaction as the rows it covers, so after any crash the target knows
exactly which events it holds; replays at or below the stored position are skipped.
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
from bridge.sink.statements import run

log = logging.getLogger(__name__)

TABLE = "bridge_positions"

TopicPartition = tuple[str, int]


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
             partitions: Iterable[TopicPartition] | None = None) -> dict[TopicPartition, Position]:
        """The stored positions of `partitions` (all when `None`); absent partitions are left out."""
        if partitions is None:
            rows = run(conn, self._load_all).fetchall()
        else:
            tps = list(partitions)
            rows = conn.execute(self._load, ([t for t, _ in tps], [p for _, p in tps])).fetchall()
        out: dict[TopicPartition, Position] = {}
        for row in rows:
            out[(str(row[0]), int(row[1]))] = Position(Lsn.parse(str(row[2])), int(row[3]))
        return out

    def upsert(self, conn: psycopg.Connection[Any], positions: Mapping[TopicPartition, Position]) -> None:
        """Store `positions` (forward only). Called inside the batch transaction."""
        if not positions:
            return
        items = list(positions.items())
        conn.execute(self._upsert, (
            [t for (t, _), _ in items], [p for (_, p), _ in items],
            [str(pos.commit_lsn) for _, pos in items], [pos.seq for _, pos in items],
        ))
