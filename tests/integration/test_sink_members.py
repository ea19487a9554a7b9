"""Two sink members on one target: the DDL one of them runs must not make the other lose records.

Each member owns some partitions of a table's topic (range assignment: 3 partitions, 2 members),
so both see the first records of a new table, or of a new column, at the same moment, and both
run the same `CREATE TABLE IF NOT EXISTS` / `ADD COLUMN`. PostgreSQL serialises them: the second
waits for the first to commit and then fails (unique violation on `pg_type`, duplicate column).
That is a race lost, not a table the target refuses: the records must be applied, not
dead-lettered (a dead-lettered record moves its partition past it: rows missing in the target).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg

from bridge.events import ChangeEvent, Op, Position
from bridge.lsn import Lsn
from bridge.relation import Column, Relation
from bridge.sink.apply import Applier
from bridge.sink.records import SinkRecord

TOPIC = "bridge.public.accounts"


def _rel(*extra: Column) -> Relation:
    return Relation("public", "accounts", (Column("id", "bigint", "int8", not_null=True),
                                           Column("v", "bigint", "int8"), *extra), primary_key=("id",))


def _rec(rel: Relation, partition: int, lsn: int, row: tuple[Any, ...]) -> SinkRecord:
    return SinkRecord(TOPIC, partition, lsn, ChangeEvent(rel, Op.INSERT, Position(Lsn(lsn), 0), 1, None, None, row))


def _lost_race(target_dsn: str, first: list[SinkRecord], second: list[SinkRecord]
               ) -> tuple[dict[tuple[str, int], Position], list[tuple[SinkRecord, Exception]]]:
    """Member 1 applies `first` and holds its transaction open; member 2 applies `second`, which
    runs the same DDL and waits for member 1's locks; member 1 commits. Returns member 2's result."""
    member1 = psycopg.connect(target_dsn)  # not autocommit: the applier's transaction nests in ours
    member2 = Applier(target_dsn)
    try:
        member1.execute("SELECT 1")
        Applier(member1).apply(first)
        out: dict[str, Any] = {}

        def apply() -> None:
            try:
                out["result"] = member2.apply_isolating(second)
            except BaseException as exc:  # handed to the test thread
                out["error"] = exc

        t = threading.Thread(target=apply, daemon=True)
        t.start()
        _wait(lambda: _lock_waiters(target_dsn) > 0 or not t.is_alive(), "member 2 waits for member 1's DDL")
        member1.commit()
        t.join(30)
        assert not t.is_alive(), "member 2 did not finish"
        if "error" in out:
            raise out["error"]
        result: tuple[dict[tuple[str, int], Position], list[tuple[SinkRecord, Exception]]] = out["result"]
        return result
    finally:
        member1.close()
        member2.close()


def _lock_waiters(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as c:
        row = c.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                        " AND wait_event_type = 'Lock'").fetchone()
        return int(row[0]) if row else 0


def _wait(cond: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out: {what}"
        time.sleep(0.05)


def _prepare_state(target_dsn: str) -> None:
    """The position table exists already (as after any first batch), so only the table's DDL races."""
    a = Applier(target_dsn)
    try:
        a.load_positions([])
    finally:
        a.close()


def test_table_created_by_another_member_meanwhile(target_dsn: str) -> None:
    _prepare_state(target_dsn)
    rel = _rel()
    positions, rejects = _lost_race(target_dsn, [_rec(rel, 0, 100, (1, 10))], [_rec(rel, 2, 200, (2, 20))])
    assert [(r.offset, str(exc)) for r, exc in rejects] == []
    assert positions == {(TOPIC, 2): Position(Lsn(200), 0)}
    with psycopg.connect(target_dsn) as c:
        assert c.execute("SELECT id, v FROM public.accounts ORDER BY id").fetchall() == [(1, 10), (2, 20)]


def test_column_added_by_another_member_meanwhile(target_dsn: str) -> None:
    _prepare_state(target_dsn)
    a = Applier(target_dsn)
    try:
        a.apply([_rec(_rel(), 0, 50, (0, 0))])
    finally:
        a.close()
    rel = _rel(Column("note", "text", "text"))
    positions, rejects = _lost_race(target_dsn, [_rec(rel, 0, 100, (1, 10, "a"))], [_rec(rel, 2, 200, (2, 20, "b"))])
    assert [(r.offset, str(exc)) for r, exc in rejects] == []
    assert positions == {(TOPIC, 2): Position(Lsn(200), 0)}
    with psycopg.connect(target_dsn) as c:
        assert c.execute("SELECT id, v, note FROM public.accounts ORDER BY id").fetchall() == [
            (0, 0, None), (1, 10, "a"), (2, 20, "b")]


def test_position_table_created_by_another_member_meanwhile(target_dsn: str) -> None:
    """Both sinks start together on a fresh target: both create the position table at once."""
    member1 = psycopg.connect(target_dsn)
    member2 = Applier(target_dsn)
    try:
        member1.execute("SELECT 1")
        Applier(member1).load_positions([])  # creates pgbridge_state.bridge_positions, not committed
        out: dict[str, Any] = {}

        def start() -> None:
            try:
                out["found"] = member2.load_positions([(TOPIC, 0)])
            except BaseException as exc:  # handed to the test thread
                out["error"] = exc

        t = threading.Thread(target=start, daemon=True)
        t.start()
        _wait(lambda: _lock_waiters(target_dsn) > 0 or not t.is_alive(), "member 2 waits for member 1's DDL")
        member1.commit()
        t.join(30)
        assert not t.is_alive(), "member 2 did not finish"
        assert "error" not in out, out.get("error")
        assert out["found"] == {}
    finally:
        member1.close()
        member2.close()
