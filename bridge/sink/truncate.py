"""The truncate barrier: a TRUNCATE applied once, when every partition of its topic reached it.

The producer writes a TRUNCATE event into every partition of the table's topic, at one position
T, so each partition's stream sees it in order. Truncating when the first copy arrives would be
wrong: another partition, consumed faster, may already hold rows written *after* T, which the
truncate would destroy; or slower, rows written *before* T, which would survive it.

So each partition *arrives* at T (its stored position becomes T) and the table is truncated by
the last partition to arrive, in the same target transaction as its arrival. Arrivals of one
topic are serialised by an advisory lock. A partition that arrived but is not the last stops
consuming until every partition of the topic is at or past T — which, since each passes its copy
of T in order, means the truncate has happened.

The barrier is part of apply: `Applier.arrive` runs `TruncateBarrier.arrive` inside its own
target transaction and moves its position cache after the commit, and `Checkpoint.commit` then
commits the offset and publishes the ack, as for any batch. Nothing here commits.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from psycopg import sql

from bridge.events import Position
from bridge.sink.positions import PositionTable
from bridge.sink.statements import run

log = logging.getLogger(__name__)


class TruncateBarrier:
    def __init__(self, positions: PositionTable) -> None:
        self.positions = positions

    def _others_at(self, conn: psycopg.Connection[Any], topic: str, partitions: int, at: Position,
                   skip: int | None) -> bool:
        stored = self.positions.load(conn, [(topic, p) for p in range(partitions) if p != skip])
        return all(stored.get((topic, p)) is not None and stored[(topic, p)] >= at
                   for p in range(partitions) if p != skip)

    def arrive(self, conn: psycopg.Connection[Any], topic: str, partition: int, partitions: int, at: Position,
               schema: str, table: str) -> bool:
        """Record that `partition` reached the TRUNCATE at `at`; truncate if it is the last.
        Runs inside the caller's transaction (the applier's), whose commit makes it happen.

        Returns True when the barrier is complete (this arrival truncated, or it is a replay of
        a barrier already passed), False when the partition must wait. Idempotent. Raises
        `psycopg.Error` (the caller translates it)."""
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"bridge.truncate:{topic}",))
        own = self.positions.load(conn, [(topic, partition)]).get((topic, partition))
        first = own is None or own < at
        complete = self._others_at(conn, topic, partitions, at, skip=partition)
        if first:
            if complete and conn.execute("SELECT to_regclass(%s)", (
                    sql.Identifier(schema, table).as_string(conn),)).fetchone() not in (None, (None,)):
                run(conn, sql.SQL("TRUNCATE {}").format(sql.Identifier(schema, table)))
                log.info("truncated %s.%s at %s (last of %d partitions)", schema, table, at, partitions,
                         extra={"topic": topic, "partition": partition, "position": str(at)})
            self.positions.upsert(conn, {(topic, partition): at})
        return complete

    def complete(self, conn: psycopg.Connection[Any], topic: str, partitions: int, at: Position) -> bool:
        """Whether every partition of `topic` is at or past `at` (the truncate has happened).
        Raises `psycopg.Error`."""
        return self._others_at(conn, topic, partitions, at, skip=None)
