"""Writing one table's records inside the apply transaction: stage (binary COPY) and apply.

Called by `Applier` (apply.py) for each table of a batch, inside its one target transaction, with
the records that are not replays, in consumption order. Guarantees: the table ends up as if the
records had been applied one by one in position order (the last event per key wins; keys whose
last event is a delete are gone; TOAST-unchanged columns keep their earlier value); a value the
target cannot take raises `RecordRejectedError` (the caller isolates it); nothing is committed here.

Staging rows are `StageRow` tuples (stage.py), built in the hot loops below: a tuple literal
costs a fraction of a named tuple's or a dataclass's construction.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from operator import itemgetter
from typing import Any

import psycopg

from bridge.errors import SinkError
from bridge.events import Op
from bridge.relation import Relation
from bridge.sink.records import SinkRecord
from bridge.sink.stage import SIGNATURE, TRAILER, Encoder, StageRow
from bridge.sink.statements import run
from bridge.sink.target import TablePlan

log = logging.getLogger(__name__)

_DEL = b"d"
_UPS = b"u"
_INS = b"c"
# Rows encoded per COPY write: big enough to amortise the call, small enough that the server
# parses one chunk while Python encodes the next.
_CHUNK_ROWS = 2000
# Python errors a value of the wrong form raises while it is encoded for COPY.
_ENCODE_ERRORS = (struct.error, TypeError, ValueError, AttributeError, ArithmeticError, UnicodeError)

KeyOf = Callable[[Any], Any]


class RecordRejectedError(SinkError):
    """The target refuses one or more records of the batch (constraint, bad value, no identity).

    The batch was rolled back; `Applier.apply_isolating` finds the records at fault."""


class KeylessTableError(RecordRejectedError):
    """An update or delete of a table without a primary key whose source lacks REPLICA IDENTITY FULL."""


def position_key(rec: SinkRecord) -> tuple[int, int]:
    p = rec.change.position
    return (p.commit_lsn.value, p.seq)


def segments(recs: list[SinkRecord]) -> list[tuple[str, Relation, list[SinkRecord]]]:
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


class TableWriter:
    """Stages and applies one table's rows. One instance per target session: it remembers which
    staging (temporary) tables exist in the session and which may hold rows."""

    def __init__(self) -> None:
        self._created: set[str] = set()  # staging tables known to exist in this session
        self._dirty: set[str] = set()  # staging tables that may hold rows (emptied before use)

    def new_session(self) -> None:
        """A new connection: its temporary tables are gone."""
        self._created.clear()
        self._dirty.clear()

    def rolled_back(self) -> None:
        """Staging tables created in the rolled-back transaction are gone; those from earlier
        transactions stay (and stay dirty)."""
        self._created.clear()

    def write(self, cur: psycopg.Cursor[Any], plan: TablePlan, recs: list[SinkRecord]) -> None:
        """Apply `recs` (one relation version, no truncate) to the plan's table."""
        if plan.keyed:
            self._keyed(cur, plan, recs)
        else:
            self._keyless(cur, plan, recs)

    def _stage(self, cur: psycopg.Cursor[Any], plan: TablePlan, items: list[StageRow]) -> None:
        """COPY `items` into the plan's staging table (created on first use, emptied before use).
        A value that cannot be encoded raises `RecordRejectedError` (the COPY fails)."""
        st = plan.staging
        if st not in self._created:
            run(cur, plan.staging_ddl)
            self._created.add(st)
        if st in self._dirty:
            run(cur, f"TRUNCATE {st}")
        self._dirty.add(st)
        copy_rows(cur, plan, plan.copy_sql, plan.encoder, items)

    def _keyed(self, cur: psycopg.Cursor[Any], plan: TablePlan, recs: list[SinkRecord]) -> None:
        keyget: KeyOf = itemgetter(*plan.key_index)
        items, deletes, unchanged, inserts_only = _keyed_items(plan, recs, keyget)
        masks: dict[frozenset[int], int] = {}
        if unchanged:
            items, masks = fill_unchanged(plan, recs, keyget)
        keys = set(map(keyget, [it[4] for it in items]))
        dedup = len(keys) != len(items)
        if inserts_only and not dedup and not unchanged and plan.direct_encoder is not None:
            # New rows only (the usual case): COPY them straight into the target. A key that is
            # already there (a snapshot overlapping the stream) sends the segment the staged way.
            try:
                with cur.connection.transaction():
                    copy_rows(cur, plan, plan.direct_copy_sql or "", plan.direct_encoder, items)
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

    def _keyless(self, cur: psycopg.Cursor[Any], plan: TablePlan, recs: list[SinkRecord]) -> None:
        items = _keyless_items(plan, sorted(recs, key=position_key))
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
                log.warning("%s: no target row matched the old row of an %s", plan.relation.qualified,
                            "update" if op_ == _UPS else "delete")
            j += 1


def copy_rows(cur: psycopg.Cursor[Any], plan: TablePlan, statement: str, encoder: Encoder,
              items: list[StageRow]) -> None:
    """Binary COPY `items` with `statement`, encoding and sending chunk by chunk, so the server
    parses one chunk while the next is encoded."""
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


def _keyed_items(plan: TablePlan, recs: list[SinkRecord], keyget: KeyOf
                 ) -> tuple[list[StageRow], int, bool, bool]:
    """The staging rows of a keyed table's records (hot loop), the number of deletes, whether
    any record has TOAST-unchanged columns, and whether all are inserts."""
    items: list[StageRow] = []
    add = items.append
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
    return items, deletes, unchanged, inserts_only


def _keyless_items(plan: TablePlan, recs: list[SinkRecord]) -> list[StageRow]:
    """The staging rows of a keyless table's records (in position order): `aux` is the ordinal,
    the values are the new row then the old row (matched on the whole old row)."""
    rel = plan.relation
    nones = (None,) * len(rel.columns)
    items: list[StageRow] = []
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
                f"cannot apply {op.name.lower()} to {rel.qualified}: the table has no "
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
    return items


def fill_unchanged(plan: TablePlan, recs: list[SinkRecord], keyget: KeyOf
                   ) -> tuple[list[StageRow], dict[frozenset[int], int]]:
    """Stage items for a segment with TOAST-unchanged columns.

    An unchanged column takes the value of the latest earlier event of the same key in this batch
    that carried it; only what no earlier event carried keeps the target's value. Those rows get a
    mask id (`aux`) per distinct set of still-unchanged columns."""
    rel = plan.relation
    known: dict[Any, tuple[list[Any], set[int]] | None] = {}
    masks: dict[frozenset[int], int] = {}
    items: list[StageRow] = []
    for rec in sorted(recs, key=position_key):
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
