"""Slot lifecycle and preflight against a real PostgreSQL: each failure gives its actionable message."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from bridge.errors import SourceError
from bridge.lsn import Lsn
from bridge.source.capture import StreamCapture
from bridge.source.slot import SlotManager, emit_heartbeat, validate_slot_name, wal_lost_message
from tests.conftest import PgServer


def drop_slot(admin_dsn: str, name: str) -> None:
    """Drop a slot, terminating the session that holds it."""
    with psycopg.connect(admin_dsn, autocommit=True) as c:
        for _ in range(50):
            row = c.execute("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (name,)).fetchone()
            if row is None:
                return
            if row[0] is None:
                try:
                    c.execute("SELECT pg_drop_replication_slot(%s)", (name,))
                    return
                except psycopg.errors.ObjectInUse:
                    pass
            else:
                c.execute("SELECT pg_terminate_backend(%s)", (row[0],))
            time.sleep(0.1)


@pytest.fixture
def slot_name(pg: PgServer) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    drop_slot(pg.admin_dsn, name)


def with_dbname(dsn: str, **kw: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    info.update(kw)
    return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in info.items() if v is not None})


def test_ensure_creates_then_status_and_drop(source_dsn: str, slot_name: str) -> None:
    mgr = SlotManager(source_dsn, slot_name)
    assert mgr.status() is None
    st = mgr.ensure()
    assert st.name == slot_name and st.plugin == "test_decoding" and st.slot_type == "logical"
    assert st.database == psycopg.conninfo.conninfo_to_dict(source_dsn)["dbname"]
    assert not st.active and st.active_pid is None
    assert isinstance(st.confirmed_flush_lsn, Lsn) and isinstance(st.restart_lsn, Lsn)
    assert st.wal_status in ("reserved", "extended")
    # WAL written after creation shows up as lag
    with psycopg.connect(source_dsn, autocommit=True) as c:
        c.execute("CREATE TABLE t (id int PRIMARY KEY)")
        c.execute("INSERT INTO t SELECT generate_series(1, 1000)")
    st2 = mgr.ensure()  # existing slot: validated, not recreated
    assert st2.confirmed_flush_lsn == st.confirmed_flush_lsn
    assert st2.current_wal_lsn is not None and st2.confirmed_lag_bytes is not None
    assert st2.confirmed_lag_bytes == st2.current_wal_lsn - st.confirmed_flush_lsn > 0
    assert st2.retained_wal_bytes is not None and st2.retained_wal_bytes >= st2.confirmed_lag_bytes
    assert st2.as_dict()["confirmed_flush_lsn"] == str(st.confirmed_flush_lsn)
    with pytest.raises(SourceError, match="already exists"):
        mgr.create()
    assert all(c.ok for c in mgr.preflight())
    assert mgr.drop() is True
    assert mgr.status() is None
    assert mgr.drop() is False


def test_slot_names_are_validated(source_dsn: str) -> None:
    for bad in ["Bad", "a-b", 'x"; DROP TABLE t; --', "", "a" * 64]:
        with pytest.raises(SourceError, match=r"\[a-z0-9_\]"):
            SlotManager(source_dsn, bad)
    assert validate_slot_name("ok_1") == "ok_1"


def test_plugin_mismatch(source_dsn: str, slot_name: str) -> None:
    with psycopg.connect(source_dsn, autocommit=True) as c:
        c.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot_name,))
    mgr = SlotManager(source_dsn, slot_name)
    failed = [c for c in mgr.preflight() if not c.ok]
    assert [c.name for c in failed] == ["slot_plugin"]
    with pytest.raises(SourceError, match="plugin 'pgoutput', the bridge needs 'test_decoding'"):
        mgr.ensure()


def test_slot_in_other_database(pg: PgServer, source_dsn: str, slot_name: str) -> None:
    SlotManager(source_dsn, slot_name).create()
    other = pg.create_database("other")
    with pytest.raises(SourceError, match="belongs to database"):
        SlotManager(other, slot_name).check_or_raise()


def test_slot_active_elsewhere_names_pid(source_dsn: str, slot_name: str) -> None:
    mgr = SlotManager(source_dsn, slot_name)
    mgr.create()
    cap = StreamCapture(source_dsn, slot_name)
    try:
        st = mgr.status()
        assert st is not None and st.active and st.active_pid
        with pytest.raises(SourceError, match=f"active in another session \\(pid {st.active_pid}\\)"):
            mgr.check_or_raise()
        with pytest.raises(SourceError, match=f"pid {st.active_pid}"):
            StreamCapture(source_dsn, slot_name)
        with pytest.raises(SourceError, match=f"pid {st.active_pid}"):
            mgr.drop()
    finally:
        cap.close()


def test_role_without_replication(pg: PgServer, source_dsn: str, slot_name: str) -> None:
    role = f"norep_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg.admin_dsn, autocommit=True) as c:
        c.execute(f'CREATE ROLE "{role}" LOGIN')
    dsn = with_dbname(source_dsn, user=role)
    mgr = SlotManager(dsn, slot_name)
    failed = [c for c in mgr.preflight() if not c.ok]
    assert [c.name for c in failed] == ["replication_privilege"]
    with pytest.raises(SourceError, match=f'ALTER ROLE "{role}" WITH REPLICATION'):
        mgr.ensure()
    assert mgr.status() is None  # nothing was created


def test_database_missing(source_dsn: str, slot_name: str) -> None:
    dsn = with_dbname(source_dsn, dbname="no_such_db_here")
    checks = SlotManager(dsn, slot_name).preflight()
    assert [(c.name, c.ok) for c in checks] == [("connect", False)]
    with pytest.raises(SourceError, match="'no_such_db_here': it does not exist"):
        SlotManager(dsn, slot_name).check_or_raise()


def test_slots_exhausted(pg: PgServer, source_dsn: str, slot_name: str) -> None:
    fillers: list[str] = []
    with psycopg.connect(pg.admin_dsn, autocommit=True) as c:
        limit, used = c.execute("SELECT current_setting('max_replication_slots')::int,"
                                " (SELECT count(*) FROM pg_replication_slots)").fetchone()  # type: ignore[misc]
        try:
            for _ in range(limit - used):
                name = f"fill_{uuid.uuid4().hex[:10]}"
                c.execute("SELECT pg_create_physical_replication_slot(%s)", (name,))
                fillers.append(name)
            with pytest.raises(SourceError, match=r"all replication slots are in use .* max_replication_slots"):
                SlotManager(source_dsn, slot_name).ensure()
        finally:
            for name in fillers:
                c.execute("SELECT pg_drop_replication_slot(%s)", (name,))


def test_wal_lost_message() -> None:
    msg = wal_lost_message("bridge")
    for part in ("'bridge'", "'lost'", "max_slot_wal_keep_size", "changes in between are gone",
                 "Drop and recreate", "resnapshot"):
        assert part in msg


def test_create_exporting_snapshot(source_dsn: str, slot_name: str) -> None:
    with psycopg.connect(source_dsn, autocommit=True) as c:
        c.execute("CREATE TABLE t (id int PRIMARY KEY)")
        c.execute("INSERT INTO t SELECT generate_series(1, 10)")
    mgr = SlotManager(source_dsn, slot_name)
    conn, snapshot, point = mgr.create_exporting_snapshot()
    try:
        with psycopg.connect(source_dsn, autocommit=True) as c:
            c.execute("INSERT INTO t VALUES (11)")
        with psycopg.connect(source_dsn) as reader:
            reader.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            reader.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
            assert reader.execute("SELECT count(*) FROM t").fetchone() == (10,)
    finally:
        conn.close()
    st = mgr.status()
    assert st is not None and st.plugin == "test_decoding" and st.confirmed_flush_lsn == point
    with psycopg.connect(source_dsn, autocommit=True) as c:
        rows = c.execute("SELECT data FROM pg_logical_slot_peek_changes(%s, NULL, NULL)", (slot_name,)).fetchall()
    assert [r[0] for r in rows if r[0].startswith("table")] == ["table public.t: INSERT: id[integer]:11"]


def test_emit_heartbeat_lsns_increase(source_dsn: str) -> None:
    with psycopg.connect(source_dsn, autocommit=True) as c:
        a = emit_heartbeat(c)
        b = emit_heartbeat(c)
        assert b > a
