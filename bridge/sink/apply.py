"""The set-based apply: one target transaction per batch, the rows with their positions.

`Applier.apply(records)` runs, in ONE transaction:
1. read the stored positions of the batch's partitions, locking their rows until the commit
   (`PositionTable.lock`): a second member applying the same partition waits, then sees what
   this one stored; a member with a stale cache (dropped from the group without being told, or
   a commit whose answer was lost) cannot write over newer rows;
2. drop every record at or below its partition's position (replays are harmless);
3. per table, in position order where it matters (split at truncates and relation versions):
   binary COPY the rows into a temporary staging table, reduce to the last event per key,
   delete the keys whose last event is a delete, upsert the rest (TOAST-unchanged columns keep
   the target's value), or TRUNCATE (rows.py);
4. upsert the new position per (topic, partition);
5. commit — and only then move the cached positions.
If any step fails the transaction rolls back and nothing (rows, positions, caches) has moved.

`Applier.arrive` is the same for a TRUNCATE of a topic of several partitions (the truncate
barrier, truncate.py): one transaction stores the arrival (and truncates, for the last
partition to arrive), then the cache moves. Guarantee of this stage: a position is stored, and
cached, only with (or after) everything at or below it in its partition applied or isolated as
rejected. The target's positions are written nowhere else.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import psycopg

from bridge import failures, metrics
from bridge.config import STATE_SCHEMA
from bridge.errors import SinkError, TargetSchemaError
from bridge.events import Op, Position
from bridge.relation import Relation
from bridge.sink.positions import PositionCache, PositionTable
from bridge.sink.records import PartitionKey, SinkRecord
from bridge.sink.rows import KeylessTableError, RecordRejectedError, TableWriter, position_key, segments
from bridge.sink.statements import run
from bridge.sink.target import TablePlan, TargetTables
from bridge.sink.truncate import TruncateBarrier

__all__ = ["Applier", "KeylessTableError", "RecordRejectedError", "TableRejectedError"]

log = logging.getLogger(__name__)

# What a SQLSTATE means (rows refused, table refused, passing) is decided by bridge.failures.

Rejects = list[tuple[SinkRecord, Exception]]


class TableRejectedError(RecordRejectedError):
    """The target cannot take a table's records at all (its shape, not a value): no usable key,
    more columns than PostgreSQL allows, a type it cannot cast, a DDL it refuses. The batch was
    rolled back; `Applier.apply_isolating` dead-letters that table's records and applies the rest.
    `table` is the (schema, table) at fault."""

    def __init__(self, message: str, *, table: tuple[str, str], **context: Any) -> None:
        super().__init__(message, table=f"{table[0]}.{table[1]}", **context)
        self.table = table


class Applier:
    """Applies batches of `SinkRecord`s to the target. One instance per target connection.

    `conn_or_dsn`: an open psycopg connection (used as is; autocommit is recommended) or a DSN
    (the applier connects in autocommit mode and reconnects after a connection failure).
    """

    def __init__(self, conn_or_dsn: psycopg.Connection[Any] | str, *, state_schema: str = STATE_SCHEMA) -> None:
        self._dsn = conn_or_dsn if isinstance(conn_or_dsn, str) else None
        self._conn: psycopg.Connection[Any] | None = None if isinstance(conn_or_dsn, str) else conn_or_dsn
        self._table = PositionTable(state_schema)
        self._barrier = TruncateBarrier(self._table)
        self._tables = TargetTables()
        self._cache = PositionCache()
        self._writer = TableWriter()
        self._ready = False
        self._dead_letter: Callable[[Rejects], None] | None = None  # see apply_isolating

    # -- connection and positions ---------------------------------------------------------------

    @property
    def conn(self) -> psycopg.Connection[Any]:
        """The target connection, connecting (again) when built from a DSN."""
        if self._conn is None or self._conn.closed:
            if self._dsn is None:
                raise SinkError("target connection is closed")
            self._conn = psycopg.connect(self._dsn, autocommit=True)
            self._ready = False
            self._writer.new_session()
            self._tables.forget()
        return self._conn

    def close(self) -> None:
        """Close the connection if the applier opened it."""
        if self._dsn is not None and self._conn is not None:
            self._conn.close()
            self._conn = None

    def _ensure_ready(self) -> None:
        """Create the position table when missing (once per session). Another sink member may
        create it at the same moment: after a lost race, look again."""
        if not self._ready:
            conn = self.conn
            try:
                with conn.transaction():
                    self._table.ensure(conn)
            except psycopg.Error as exc:
                if not failures.lost_ddl_race(exc.sqlstate):
                    raise
                with conn.transaction():
                    self._table.ensure(conn)
            self._ready = True

    def load_positions(self, partitions: Iterable[PartitionKey]) -> dict[PartitionKey, Position]:
        """Load (again) the stored positions of `partitions` — call on partition assignment.

        Returns the positions found; partitions never applied are absent."""
        tps = list(partitions)
        self._ensure_ready()
        found = self._table.load(self.conn, tps)
        self._cache.loaded(tps, found)
        return found

    def forget_positions(self, partitions: Iterable[PartitionKey]) -> None:
        """Drop cached positions — call on revocation: another member may move them."""
        self._cache.forget(partitions)

    @property
    def positions(self) -> dict[PartitionKey, Position]:
        """The cached positions (committed in the target)."""
        return self._cache.all()

    # -- apply ----------------------------------------------------------------------------------

    def apply(self, records: Sequence[SinkRecord]) -> dict[PartitionKey, Position]:
        """Apply `records` (in consumption order) in one transaction; see the module docstring.

        Returns the position per (topic, partition) of the batch after the commit. Raises
        `RecordRejectedError` when the target refuses a record (nothing applied),
        `TargetSchemaError` when a target table cannot hold a relation, `SinkError` otherwise.
        """
        counted: tuple[dict[PartitionKey, Position], dict[tuple[str, str], int]] = self._in_transaction(
            lambda conn: self._apply_in_tx(conn, records))
        new, counts = counted
        self._cache.committed(new)
        for (table, op), n in counts.items():
            metrics.SINK_ROWS_APPLIED.labels(table, op).inc(n)
        return self._cache.of({(r.topic, r.partition) for r in records})

    def arrive(self, rec: SinkRecord, partitions: int) -> bool:
        """Apply `rec`, a TRUNCATE in a topic of `partitions` partitions, through the truncate
        barrier (truncate.py): one transaction stores the partition's arrival at the TRUNCATE's
        position, truncating the table when this partition is the last to arrive; then the cache
        moves. Returns whether the barrier is complete (the partition may go on). Idempotent.
        Raises `SinkError`."""
        ch = rec.change
        done: bool = self._in_transaction(lambda conn: self._barrier.arrive(
            conn, rec.topic, rec.partition, partitions, ch.position, ch.relation.schema, ch.relation.table),
            what="truncate barrier", rejects=False)
        self._cache.committed({(rec.topic, rec.partition): ch.position})
        return done

    def barrier_complete(self, topic: str, partitions: int, at: Position) -> bool:
        """Whether every partition of `topic` is at or past the TRUNCATE at `at` (it happened).
        Raises `SinkError`."""
        done: bool = self._in_transaction(lambda conn: self._barrier.complete(conn, topic, partitions, at),
                                          what="truncate barrier check", rejects=False)
        return done

    def _in_transaction(self, work: Callable[[psycopg.Connection[Any]], Any], *, what: str = "target apply",
                        rejects: bool = True) -> Any:
        """Run `work` in one target transaction. A psycopg error rolls it back and is raised as
        `RecordRejectedError` (SQLSTATE classes 22, 23, P0, when `rejects`) or `SinkError` (its
        cause kept: the retry decides by it); after any error the session's caches are as the
        rollback left them."""
        self._ensure_ready()
        conn = self.conn
        try:
            with conn.transaction():
                return work(conn)
        except psycopg.Error as exc:
            self._after_failure(conn)
            state = exc.sqlstate or ""
            if rejects and failures.rejects_rows(state):
                raise RecordRejectedError(f"target rejected the batch: {exc}", sqlstate=state) from exc
            raise SinkError(f"{what} failed: {str(exc).strip()}", sqlstate=state or None) from exc
        except BaseException:
            self._after_failure(conn)
            raise

    def _after_failure(self, conn: psycopg.Connection[Any]) -> None:
        # DDL and staging tables created in the rolled-back transaction are gone; staging tables
        # from earlier transactions stay (and stay dirty).
        self._tables.forget()
        self._writer.rolled_back()
        if conn.closed or conn.broken:
            self._ready = False
            if self._dsn is not None:
                self._conn = None

    def _apply_in_tx(self, conn: psycopg.Connection[Any], records: Sequence[SinkRecord]
                     ) -> tuple[dict[PartitionKey, Position], dict[tuple[str, str], int]]:
        """Steps 1-4 of the module docstring. Returns the new positions and the number of
        records applied (replays excluded) per (table, op), for `bridge_sink_rows_applied_total`."""
        # 1. the stored positions of the batch's partitions, locked until the commit. The table,
        # not the cache, decides what is a replay: a member dropped from the group without being
        # told, or whose last commit's answer was lost, holds a stale cache.
        tps = {(r.topic, r.partition) for r in records}
        self._cache.loaded(tps, self._table.lock(conn, tps))
        # 2. drop replays; group by relation object
        newpos, groups = self._fresh(records)
        # 3. per table
        tables: dict[tuple[str, str], list[list[SinkRecord]]] = {}
        for g in groups.values():
            rel = g[0].change.relation
            tables.setdefault((rel.schema, rel.table), []).append(g)
        cur = conn.cursor()
        for tkey, tgroups in tables.items():
            self._apply_table(conn, cur, tkey, tgroups)
        # 4. positions
        if newpos:
            self._table.upsert(conn, newpos)
        counts: dict[tuple[str, str], int] = {}
        for g in groups.values():
            table = g[0].change.relation.qualified
            for op, n in Counter([r.change.op for r in g]).items():  # counted in C, not per record in Python
                counts[(table, str(op))] = counts.get((table, str(op)), 0) + n
        return newpos, counts

    def _fresh(self, records: Sequence[SinkRecord]
               ) -> tuple[dict[PartitionKey, Position], dict[int, list[SinkRecord]]]:
        """Step 2: the records above their partition's position, grouped per relation object (in
        consumption order), and the new position per partition. Hot loop: consecutive records
        usually share partition and relation, so those are compared by identity before any dict
        work, and positions are compared as ints."""
        last: dict[PartitionKey, Position] = {}
        groups: dict[int, list[SinkRecord]] = {}
        cache = self._cache
        cur_topic, cur_part = "", -1
        cur_lsn, cur_seq = -1, -1
        cur_pos: Position | None = None
        prev_rel: Relation | None = None
        unused: list[SinkRecord] = []
        add = unused.append
        for rec in records:
            pos = rec.change.position
            if rec.partition != cur_part or rec.topic != cur_topic:
                if cur_pos is not None:
                    last[(cur_topic, cur_part)] = cur_pos
                cur_topic, cur_part = rec.topic, rec.partition
                cur_pos = last.get((cur_topic, cur_part))
                base = cur_pos if cur_pos is not None else cache.get((cur_topic, cur_part))
                cur_lsn, cur_seq = (base.commit_lsn.value, base.seq) if base is not None else (-1, -1)
            lsn = pos.commit_lsn.value
            if lsn < cur_lsn or (lsn == cur_lsn and pos.seq <= cur_seq):
                continue  # a replay
            cur_lsn, cur_seq, cur_pos = lsn, pos.seq, pos
            rel = rec.change.relation
            if rel is not prev_rel:
                prev_rel = rel
                g = groups.get(id(rel))
                if g is None:
                    g = groups[id(rel)] = []
                add = g.append
            add(rec)
        if cur_pos is not None:
            last[(cur_topic, cur_part)] = cur_pos
        return last, groups

    def _apply_table(self, conn: psycopg.Connection[Any], cur: psycopg.Cursor[Any], tkey: tuple[str, str],
                     groups: list[list[SinkRecord]]) -> None:
        """Step 3 for one table: its records (grouped per relation version) in position order
        where it matters, split at truncates and relation versions. Raises `TableRejectedError`
        when the target refuses the table."""
        try:
            if len(groups) == 1 and not any(r.change.op is Op.TRUNCATE for r in groups[0]):
                self._writer.write(cur, self._plan(conn, groups[0][0].change.relation), groups[0])
                return
            recs = sorted((r for g in groups for r in g), key=position_key)
            for kind, rel, seg in segments(recs):
                plan = self._plan(conn, rel)
                if kind == "t":
                    run(cur, plan.truncate_sql)
                else:
                    self._writer.write(cur, plan, seg)
        except TargetSchemaError as exc:
            ctx = {k: v for k, v in exc.context.items() if k != "table"}
            raise TableRejectedError(exc.message, table=tkey, **ctx) from exc
        except psycopg.Error as exc:
            sqlstate = exc.sqlstate or ""
            if not failures.rejects_table(sqlstate):
                raise
            raise TableRejectedError(f"target refuses table {tkey[0]}.{tkey[1]}: {str(exc).strip()}",
                                     table=tkey, sqlstate=sqlstate) from exc

    def _plan(self, conn: psycopg.Connection[Any], rel: Relation) -> TablePlan:
        """The table's plan (creating or evolving the target table). A failure here is about the
        table, not a row: any refusal but a passing one (connection, shutdown, serialization,
        resources) rejects the table."""
        try:
            return self._tables.plan(conn, rel)
        except psycopg.Error as exc:
            sqlstate = exc.sqlstate or ""
            if not sqlstate or failures.passes(sqlstate):
                raise
            raise TableRejectedError(f"target refuses table {rel.qualified}: {str(exc).strip()}",
                                     table=(rel.schema, rel.table), sqlstate=sqlstate) from exc

    # -- dead-letter isolation ------------------------------------------------------------------

    def apply_isolating(self, records: Sequence[SinkRecord], rejects: Rejects | None = None, *,
                        dead_letter: Callable[[Rejects], None] | None = None
                        ) -> tuple[dict[PartitionKey, Position], Rejects]:
        """Apply `records`; when the target rejects some, find them by bisection and apply the rest.

        Sub-batches are applied left to right, so the order of every partition is kept. A rejected
        record's position is still stored (its partition moves past it) so it is not retried —
        but only after `dead_letter` (when given) has returned for it: the caller's dead-letter
        topic holds it before anything can skip it, so a crash in between loses nothing (it is
        rejected and dead-lettered again). Returns the positions (as `apply`) and the rejected
        records with their errors, appended to `rejects` when given. Errors other than
        `RecordRejectedError` propagate.
        """
        rejects = [] if rejects is None else rejects
        self._dead_letter = dead_letter
        pending = list(records)
        refused: list[SinkRecord] = []
        while True:
            try:
                self.apply(pending)
            except TableRejectedError as exc:
                bad = [r for r in pending if (r.change.relation.schema, r.change.relation.table) == exc.table]
                if not bad:
                    raise
                log.error("target refuses table %s.%s: %d records go to the dead-letter topic: %s",
                          exc.table[0], exc.table[1], len(bad), exc)
                rejects += [(r, exc) for r in bad]
                refused += bad
                pending = [r for r in pending if (r.change.relation.schema, r.change.relation.table) != exc.table]
                continue
            except RecordRejectedError:
                self._bisect(pending, rejects)
            break
        if refused:
            self._advance_past([(r, e) for r, e in rejects if r in refused])
        return self._cache.of({(r.topic, r.partition) for r in records}), rejects

    def _bisect(self, records: list[SinkRecord], rejects: Rejects) -> None:
        if len(records) == 1:
            try:
                self.apply(records)
            except RecordRejectedError as exc:
                rec = records[0]
                log.warning("record rejected by the target: topic=%s partition=%s offset=%s: %s",
                            rec.topic, rec.partition, rec.offset, exc)
                rejects.append((rec, exc))
                self._advance_past([(rec, exc)])
            return
        mid = len(records) // 2
        for half in (records[:mid], records[mid:]):
            try:
                self.apply(half)
            except RecordRejectedError:
                self._bisect(half, rejects)

    def _advance_past(self, rejected: Rejects) -> None:
        """Dead-letter the rejected records, then store their positions (forward only), so their
        partitions move past them: they are in the dead-letter topic, not retried."""
        if self._dead_letter is not None:
            self._dead_letter(rejected)
        last: dict[PartitionKey, Position] = {}
        for rec, _exc in rejected:
            tp = (rec.topic, rec.partition)
            pos = rec.change.position
            if tp not in last or last[tp] < pos:
                last[tp] = pos
        ahead = {tp: pos for tp, pos in last.items() if (old := self._cache.get(tp)) is None or old < pos}
        if not ahead:
            return
        self._in_transaction(lambda conn: self._table.upsert(conn, ahead), what="storing the positions of rejected records",
                             rejects=False)
        self._cache.committed(ahead)
