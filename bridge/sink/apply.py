"""The set-based apply: one target transaction per batch.

`Applier.apply(records)` runs, in ONE transaction:
1. load the stored positions of partitions it has not seen yet (cached afterwards: under this
   sink's ownership they only move forward);
2. drop every record at or below its partition's position (replays are harmless);
3. per table, in position order where it matters (split at truncates and relation versions):
   binary COPY the rows into a temporary staging table, reduce to the last event per key,
   delete the keys whose last event is a delete, upsert the rest (TOAST-unchanged columns keep
   the target's value), or TRUNCATE;
4. upsert the new position per (topic, partition);
5. commit — and only then move the cached positions.
If any step fails the transaction rolls back and nothing (rows, positions, caches) has moved.
"""

from __future__ import annotations

import logging
import struct
from collections import Counter
from collections.abc import Iterable, Sequence
from operator import itemgetter
from typing import Any

import psycopg

from bridge import failures, metrics
from bridge.config import STATE_SCHEMA
from bridge.errors import SinkError, TargetSchemaError
from bridge.events import Op, Position
from bridge.relation import Relation
from bridge.sink.positions import PositionTable, TopicPartition
from bridge.sink.records import SinkRecord
from bridge.sink.stage import SIGNATURE, TRAILER, Encoder, Item
from bridge.sink.statements import run
from bridge.sink.target import TablePlan, TargetTables

log = logging.getLogger(__name__)

_DEL = b"d"
_UPS = b"u"
_INS = b"c"
# What a SQLSTATE means (rows refused, table refused, passing) is decided by bridge.failures.
# Python errors a value of the wrong form raises while it is encoded for COPY.
# Rows encoded per COPY write: big enough to amortise the call, small enough that the server
# parses one chunk while Python encodes the next.
_CHUNK_ROWS = 2000
_ENCODE_ERRORS = (struct.error, TypeError, ValueError, AttributeError, ArithmeticError, UnicodeError)


class RecordRejectedError(SinkError):
    """The target refuses one or more records of the batch (constraint, bad value, no identity).

    The batch was rolled back; `Applier.apply_isolating` finds the records at fault."""


class TableRejectedError(RecordRejectedError):
    """The target cannot take a table's records at all (its shape, not a value): no usable key,
    more columns than PostgreSQL allows, a type it cannot cast, a DDL it refuses. The batch was
    rolled back; `Applier.apply_isolating` dead-letters that table's records and applies the rest.
    `table` is the (schema, table) at fault."""

    def __init__(self, message: str, *, table: tuple[str, str], **context: Any) -> None:
        super().__init__(message, table=f"{table[0]}.{table[1]}", **context)
        self.table = table


class KeylessTableError(RecordRejectedError):
    """An update or delete of a table without a primary key whose source lacks REPLICA IDENTITY FULL."""


class Applier:
    """Applies batches of `SinkRecord`s to the target. One instance per target connection.

    `conn_or_dsn`: an open psycopg connection (used as is; autocommit is recommended) or a DSN
    (the applier connects in autocommit mode and reconnects after a connection failure).
    """

    def __init__(self, conn_or_dsn: psycopg.Connection[Any] | str, *, state_schema: str = STATE_SCHEMA) -> None:
        self._dsn = conn_or_dsn if isinstance(conn_or_dsn, str) else None
        self._conn: psycopg.Connection[Any] | None = None if isinstance(conn_or_dsn, str) else conn_or_dsn
        self._table = PositionTable(state_schema)
        self._tables = TargetTables()
        self._positions: dict[TopicPartition, Position] = {}
        self._loaded: set[TopicPartition] = set()
        self._ready = False
        self._created: set[str] = set()  # staging tables known to exist in this session
        self._dirty: set[str] = set()  # staging tables that may hold rows (emptied before use)

    # -- connection and positions ---------------------------------------------------------------

    @property
    def conn(self) -> psycopg.Connection[Any]:
        """The target connection, connecting (again) when built from a DSN."""
        if self._conn is None or self._conn.closed:
            if self._dsn is None:
                raise SinkError("target connection is closed")
            self._conn = psycopg.connect(self._dsn, autocommit=True)
            self._reset_session()
        return self._conn

    def _reset_session(self) -> None:
        self._ready = False
        self._created.clear()
        self._dirty.clear()
        self._tables.forget()

    def close(self) -> None:
        """Close the connection if the applier opened it."""
        if self._dsn is not None and self._conn is not None:
            self._conn.close()
            self._conn = None

    def _ensure_ready(self) -> None:
        if not self._ready:
            with self.conn.transaction():
                self._table.ensure(self.conn)
            self._ready = True

    def load_positions(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, Position]:
        """Load (again) the stored positions of `partitions` — call on partition assignment.

        Returns the positions found; partitions never applied are absent."""
        tps = list(partitions)
        self._ensure_ready()
        found = self._table.load(self.conn, tps)
        for tp in tps:
            self._positions.pop(tp, None)
            self._loaded.add(tp)
        self._positions.update(found)
        return found

    def forget_positions(self, partitions: Iterable[TopicPartition]) -> None:
        """Drop cached positions — call on revocation: another member may move them."""
        for tp in partitions:
            self._positions.pop(tp, None)
            self._loaded.discard(tp)

    @property
    def positions(self) -> dict[TopicPartition, Position]:
        """The cached positions (committed in the target)."""
        return dict(self._positions)

    # -- apply ----------------------------------------------------------------------------------

    def apply(self, records: Sequence[SinkRecord]) -> dict[TopicPartition, Position]:
        """Apply `records` (in consumption order) in one transaction; see the module docstring.

        Returns the position per (topic, partition) of the batch after the commit. Raises
        `RecordRejectedError` when the target refuses a record (nothing applied),
        `TargetSchemaError` when a target table cannot hold a relation, `SinkError` otherwise.
        """
        self._ensure_ready()
        conn = self.conn
        try:
            with conn.transaction():
                new, counts = self._apply_in_tx(conn, records)
        except psycopg.Error as exc:
            self._after_failure(conn)
            state = exc.sqlstate or ""
            if failures.rejects_rows(state):
                raise RecordRejectedError(f"target rejected the batch: {exc}", sqlstate=state) from exc
            raise SinkError(f"target apply failed: {exc}", sqlstate=state or None) from exc
        except BaseException:
            self._after_failure(conn)
            raise
        self._positions.update(new)
        for (table, op), n in counts.items():
            metrics.SINK_ROWS_APPLIED.labels(table, op).inc(n)
        tps = {(r.topic, r.partition) for r in records}
        return {tp: self._positions[tp] for tp in tps if tp in self._positions}

    def _after_failure(self, conn: psycopg.Connection[Any]) -> None:
        # DDL and staging tables created in the rolled-back transaction are gone; staging tables
        # from earlier transactions stay (and stay dirty).
        self._tables.forget()
        self._created.clear()
        if conn.closed or conn.broken:
            self._ready = False
            if self._dsn is not None:
                self._conn = None

    def _apply_in_tx(self, conn: psycopg.Connection[Any], records: Sequence[SinkRecord]
                     ) -> tuple[dict[TopicPartition, Position], dict[tuple[str, str], int]]:
        """Steps 1-4 of the module docstring. Returns the new positions and the number of
        records applied (replays excluded) per (table, op), for `bridge_sink_rows_applied_total`."""
        # 1. positions of partitions not seen before
        missing = {(r.topic, r.partition) for r in records} - self._loaded
        if missing:
            self._positions.update(self._table.load(conn, missing))
            self._loaded |= missing
        # 2. drop replays; group by relation object. Hot loop: consecutive records usually share
        # partition and relation, so those are compared by identity before any dict work.
        last: dict[TopicPartition, tuple[int, int, Position]] = {}
        groups: dict[int, list[SinkRecord]] = {}
        rels: dict[int, Relation] = {}
        stored = self._positions
        cur_topic: str | None = None
        cur_part = -1
        cur_lsn, cur_seq = -1, -1
        cur_pos: Position | None = None
        prev_rel: Relation | None = None
        add: Any = None
        for rec in records:
            ch = rec.change
            pos = ch.position
            if rec.partition != cur_part or rec.topic != cur_topic:
                if cur_pos is not None:
                    last[(cur_topic, cur_part)] = (cur_lsn, cur_seq, cur_pos)  # type: ignore[index]
                cur_topic, cur_part = rec.topic, rec.partition
                tp = (cur_topic, cur_part)
                state = last.get(tp)
                if state is not None:
                    cur_lsn, cur_seq, cur_pos = state
                else:
                    sp = stored.get(tp)
                    cur_lsn, cur_seq, cur_pos = (sp.commit_lsn.value, sp.seq, None) if sp is not None else (-1, -1, None)
            lsn = pos.commit_lsn.value
            if lsn < cur_lsn or (lsn == cur_lsn and pos.seq <= cur_seq):
                continue  # a replay
            cur_lsn, cur_seq, cur_pos = lsn, pos.seq, pos
            rel = ch.relation
            if rel is not prev_rel:
                prev_rel = rel
                g = groups.get(id(rel))
                if g is None:
                    g = groups[id(rel)] = []
                    rels[id(rel)] = rel
                add = g.append
            add(rec)
        if cur_pos is not None:
            last[(cur_topic, cur_part)] = (cur_lsn, cur_seq, cur_pos)  # type: ignore[index]
        newpos = {tp: st[2] for tp, st in last.items() if st[2] is not None}
        # 3. per table
        tables: dict[tuple[str, str], list[int]] = {}
        for rid, rel in rels.items():
            tables.setdefault((rel.schema, rel.table), []).append(rid)
        cur_ = conn.cursor()
        for tkey, rids in tables.items():
            try:
                self._apply_table(conn, cur_, [rels[rid] for rid in rids], [groups[rid] for rid in rids])
            except TargetSchemaError as exc:
                ctx = {k: v for k, v in exc.context.items() if k != "table"}
                raise TableRejectedError(exc.message, table=tkey, **ctx) from exc
            except psycopg.Error as exc:
                sqlstate = exc.sqlstate or ""
                if not failures.rejects_table(sqlstate):
                    raise
                raise TableRejectedError(f"target refuses table {tkey[0]}.{tkey[1]}: {str(exc).strip()}",
                                         table=tkey, sqlstate=sqlstate) from exc
        # 4. positions
        if newpos:
            self._table.upsert(conn, newpos)
        counts: dict[tuple[str, str], int] = {}
        for rid, recs_ in groups.items():
            table = rels[rid].qualified
            for op, n in Counter([r.change.op for r in recs_]).items():  # counted in C, not per record in Python
                counts[(table, str(op))] = n
        return newpos, counts

    def _apply_table(self, conn: psycopg.Connection[Any], cur: psycopg.Cursor[Any], rels: list[Relation],
                     groups: list[list[SinkRecord]]) -> None:
        """Step 3 for one table: its records (grouped per relation version) in position order
        where it matters, split at truncates and relation versions."""
        if len(rels) == 1 and not any(r.change.op is Op.TRUNCATE for r in groups[0]):
            self._apply_rows(cur, self._plan(conn, rels[0]), groups[0])
            return
        recs = sorted((r for g in groups for r in g), key=_position_key)
        for kind, rel, seg in _segments(recs):
            plan = self._plan(conn, rel)
            if kind == "t":
                run(cur, plan.truncate_sql)
            else:
                self._apply_rows(cur, plan, seg)

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

    def _stage(self, cur: psycopg.Cursor[Any], plan: TablePlan, items: list[Item]) -> None:
        """COPY `items` into the plan's staging table (created on first use, emptied before use).

        Rows are encoded and sent in chunks, so the server parses one chunk while the next is
        encoded. A value that cannot be encoded raises `RecordRejectedError` (the COPY fails)."""
        st = plan.staging
        if st not in self._created:
            run(cur, plan.staging_ddl)
            self._created.add(st)
        if st in self._dirty:
            run(cur, f"TRUNCATE {st}")
        self._dirty.add(st)
        self._copy(cur, plan, plan.copy_sql, plan.encoder, items)

    @staticmethod
    def _copy(cur: psycopg.Cursor[Any], plan: TablePlan, statement: str, encoder: Encoder, items: list[Item]) -> None:
        """Binary COPY `items` with `statement`, encoding and sending chunk by chunk."""
        with cur.copy(statement) as cp:
            parts: list[bytes] = [SIGNATURE]
            for i in range(0, len(items), _CHUNK_ROWS):
                try:
                    encoder(items[i:i + _CHUNK_ROWS], parts.append)
                except _ENCODE_ERRORS as exc:
                    raise RecordRejectedError(f"a value of {plan.relation.qualified} cannot be encoded: {exc!r}",
                                              table=plan.relation.qualified) from exc
                if i + _CHUNK_ROWS >= len(items):
                    parts.append(TRAILER)
                cp.write(b"".join(parts))
                parts = []
            if not items:
                cp.write(SIGNATURE + TRAILER)

    def _apply_rows(self, cur: psycopg.Cursor[Any], plan: TablePlan, recs: list[SinkRecord]) -> None:
        if plan.keyed:
            self._apply_keyed(cur, plan, recs)
        else:
            self._apply_keyless(cur, plan, recs)

    def _apply_keyed(self, cur: psycopg.Cursor[Any], plan: TablePlan, recs: list[SinkRecord]) -> None:
        items: list[Item] = []
        add = items.append
        kidx = plan.key_index
        keyget = itemgetter(*kidx)
        deletes = 0
        unchanged = False
        inserts_only = True
        for rec in recs:
            ch = rec.change
            pos = ch.position
            lsn = pos.commit_lsn.value
            seq = pos.seq
            op = ch.op
            if op != "c" and op != "r":
                inserts_only = False
            if op == "d":
                before = ch.before
                if before is None:
                    raise RecordRejectedError("delete without old key", table=plan.relation.qualified,
                                              topic=rec.topic, partition=rec.partition, offset=rec.offset)
                add((lsn, seq, _DEL, 0, before))
                deletes += 1
                continue
            after = ch.after
            if after is None:
                raise RecordRejectedError("change without row", table=plan.relation.qualified,
                                          topic=rec.topic, partition=rec.partition, offset=rec.offset)
            before = ch.before
            if before is not None and keyget(before) != keyget(after):
                add((lsn, seq, _DEL, 0, before))  # key change: the old key goes
                deletes += 1
            if ch.unchanged:
                unchanged = True
            add((lsn, seq, _UPS, 0, after))
        masks: dict[frozenset[int], int] = {}
        if unchanged:
            items, masks = _fill_unchanged(plan, recs, keyget)
        keys = set(map(keyget, [it[4] for it in items]))
        dedup = len(keys) != len(items)
        if inserts_only and not dedup and not unchanged and plan.direct_encoder is not None:
            # New rows only (the usual case): COPY them straight into the target. A key that is
            # already there (a snapshot overlapping the stream) sends the segment the staged way.
            try:
                with cur.connection.transaction():
                    self._copy(cur, plan, plan.direct_copy_sql or "", plan.direct_encoder, items)
                return
            except psycopg.errors.UniqueViolation:
                log.info("%s: rows already in the target; upserting instead", plan.relation.qualified)
        self._stage(cur, plan, items)
        if deletes:
            stmt = plan.upsert_dedup_del if dedup else plan.upsert_unique_del
        else:
            stmt = plan.upsert_dedup if dedup else plan.upsert_unique
        run(cur, stmt)
        for uset, mid in masks.items():
            cur.execute(plan.masked_sql(uset, dedup), (mid,))

    def _apply_keyless(self, cur: psycopg.Cursor[Any], plan: TablePlan, recs: list[SinkRecord]) -> None:
        rel = plan.relation
        n = len(rel.columns)
        nones = (None,) * n
        items: list[Item] = []
        recs = sorted(recs, key=_position_key)
        for i, rec in enumerate(recs):
            ch = rec.change
            pos = ch.position
            op = ch.op
            if op == "c" or op == "r":
                after = ch.after
                if after is None:
                    raise RecordRejectedError("insert without row", table=rel.qualified, offset=rec.offset)
                items.append((pos.commit_lsn.value, pos.seq, _INS, i, tuple(after) + nones))
                continue
            before = ch.before
            if rel.replica_identity != "f" or before is None:
                raise KeylessTableError(
                    f"cannot apply {op.name.lower() if isinstance(op, Op) else op} to {rel.qualified}: the table has no "
                    f"primary key and its source has no REPLICA IDENTITY FULL; run "
                    f"ALTER TABLE {rel.qualified} REPLICA IDENTITY FULL on the source (or add a primary key)",
                    table=rel.qualified, topic=rec.topic, partition=rec.partition, offset=rec.offset)
            if op == "d":
                items.append((pos.commit_lsn.value, pos.seq, _DEL, i, nones + tuple(before)))
                continue
            after = ch.after
            if after is None:
                raise RecordRejectedError("update without row", table=rel.qualified, offset=rec.offset)
            if ch.unchanged:
                row = list(after)
                for name in ch.unchanged:
                    j = rel.index.get(name)
                    if j is not None:
                        row[j] = before[j]
                after = tuple(row)
            items.append((pos.commit_lsn.value, pos.seq, _UPS, i, tuple(after) + tuple(before)))
        self._stage(cur, plan, items)
        j = 0
        while j < len(items):
            op_ = items[j][2]
            if op_ == _INS:
                k = j
                while k + 1 < len(items) and items[k + 1][2] == _INS:
                    k += 1
                cur.execute(plan.insert_range, (j, k))
                j = k + 1
                continue
            cur.execute(plan.update_one if op_ == _UPS else plan.delete_one, (j,))
            if cur.rowcount == 0:
                log.warning("%s: no target row matched the old row of an %s", rel.qualified,
                            "update" if op_ == _UPS else "delete")
            j += 1

    # -- dead-letter isolation ------------------------------------------------------------------

    def apply_isolating(self, records: Sequence[SinkRecord]
                        ) -> tuple[dict[TopicPartition, Position], list[tuple[SinkRecord, Exception]]]:
        """Apply `records`; when the target rejects some, find them by bisection and apply the rest.

        Sub-batches are applied left to right, so the order of every partition is kept. A rejected
        record's position is still stored (its partition moves past it) so it is not retried.
        Returns the positions (as `apply`) and the rejected records with their errors, for the
        dead-letter topic. Errors other than `RecordRejectedError` propagate.
        """
        rejects: list[tuple[SinkRecord, Exception]] = []
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
            self._advance_past(refused)
        tps = {(r.topic, r.partition) for r in records}
        return {tp: self._positions[tp] for tp in tps if tp in self._positions}, rejects

    def _bisect(self, records: list[SinkRecord], rejects: list[tuple[SinkRecord, Exception]]) -> None:
        if len(records) == 1:
            try:
                self.apply(records)
            except RecordRejectedError as exc:
                rec = records[0]
                log.warning("record rejected by the target: topic=%s partition=%s offset=%s: %s",
                            rec.topic, rec.partition, rec.offset, exc)
                rejects.append((rec, exc))
                self._advance_past([rec])
            return
        mid = len(records) // 2
        for half in (records[:mid], records[mid:]):
            try:
                self.apply(half)
            except RecordRejectedError:
                self._bisect(half, rejects)

    def _advance_past(self, recs: Sequence[SinkRecord]) -> None:
        """Store, forward only, the positions of rejected records, so their partitions move past
        them (they are in the dead-letter topic, not retried)."""
        last: dict[TopicPartition, Position] = {}
        for rec in recs:
            tp = (rec.topic, rec.partition)
            pos = rec.change.position
            if tp not in last or last[tp] < pos:
                last[tp] = pos
        ahead = {tp: pos for tp, pos in last.items() if tp not in self._positions or self._positions[tp] < pos}
        if not ahead:
            return
        conn = self.conn
        with conn.transaction():
            self._table.upsert(conn, ahead)
        self._positions.update(ahead)


def _position_key(rec: SinkRecord) -> tuple[int, int]:
    p = rec.change.position
    return (p.commit_lsn.value, p.seq)


def _segments(recs: list[SinkRecord]) -> list[tuple[str, Relation, list[SinkRecord]]]:
    """Split position-ordered records of one table at truncates and relation versions."""
    out: list[tuple[str, Relation, list[SinkRecord]]] = []
    for rec in recs:
        ch = rec.change
        if ch.op == Op.TRUNCATE:
            out.append(("t", ch.relation, []))
        elif out and out[-1][0] == "r" and (out[-1][1] is ch.relation or out[-1][1] == ch.relation):
            out[-1][2].append(rec)
        else:
            out.append(("r", ch.relation, [rec]))
    return out


def _fill_unchanged(plan: TablePlan, recs: list[SinkRecord], keyget: Any
                    ) -> tuple[list[Item], dict[frozenset[int], int]]:
    """Stage items for a segment with TOAST-unchanged columns.

    An unchanged column takes the value of the latest earlier event of the same key in this batch
    that carried it; only what no earlier event carried keeps the target's value. Those rows get a
    mask id (`aux`) per distinct set of still-unchanged columns."""
    rel = plan.relation
    known: dict[Any, tuple[list[Any], set[int]] | None] = {}
    masks: dict[frozenset[int], int] = {}
    items: list[Item] = []
    for rec in sorted(recs, key=_position_key):
        ch = rec.change
        pos = ch.position
        lsn, seq = pos.commit_lsn.value, pos.seq
        before = ch.before
        if ch.op == "d":
            assert before is not None
            known[keyget(before)] = None
            items.append((lsn, seq, _DEL, 0, before))
            continue
        after = ch.after
        assert after is not None
        key = keyget(after)
        prev_key = key
        if before is not None and keyget(before) != key:
            prev_key = keyget(before)
            items.append((lsn, seq, _DEL, 0, before))
        prev = known.get(prev_key)
        if prev_key != key:
            known[prev_key] = None
        row = list(after)
        missing: set[int] = set()
        for name in ch.unchanged:
            j = rel.index.get(name)
            if j is None:
                continue
            if prev is not None and j not in prev[1]:
                row[j] = prev[0][j]
            else:
                missing.add(j)
        known[key] = (row, missing)
        mid = 0
        if missing:
            fs = frozenset(missing)
            mid = masks.setdefault(fs, len(masks) + 1)
        items.append((lsn, seq, _UPS, mid, row))
    return items, masks
