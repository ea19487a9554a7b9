"""Both capture modes against a real PostgreSQL: same lines as a peek, exact confirms, restarts."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from bridge.lsn import Lsn
from bridge.source.capture import ChangeSource, SqlCapture, StreamCapture, WalMessage
from bridge.source.slot import SlotManager, emit_heartbeat
from tests.conftest import PgServer
from tests.integration.test_slot import drop_slot
from tests.support.waits import wait_for

Line = tuple[Lsn, str]


@pytest.fixture
def slot_name(pg: PgServer) -> Iterator[str]:
    name = f"c_{uuid.uuid4().hex[:12]}"
    yield name
    drop_slot(pg.admin_dsn, name)


def workload(dsn: str) -> None:
    """A few thousand changes: multi-row insert (rows sharing an LSN), many small transactions,
    updates, deletes, quoted text, a transactional and a non-transactional message."""
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        c.execute("INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 2000) g")
        with c.cursor().copy("COPY t (id, v) FROM STDIN") as cp:  # multi-insert: rows share an LSN
            for i in range(3001, 3501):
                cp.write_row((i, f"copied {i}"))
        for i in range(2001, 2051):
            c.execute("INSERT INTO t VALUES (%s, %s)", (i, f"it's {i}"))
        c.execute("UPDATE t SET v = v || '!' WHERE id <= 500")
        emit_heartbeat(c)
        c.execute("DELETE FROM t WHERE id > 1900")
        with c.transaction():
            c.execute("SELECT pg_logical_emit_message(true, 'app', 'in a transaction')")
            c.execute("INSERT INTO t VALUES (0, 'zero')")


def peek_all(dsn: str, slot: str) -> list[Line]:
    with psycopg.connect(dsn, autocommit=True) as c:
        rows = c.execute(
            "SELECT lsn::text, data FROM pg_logical_slot_peek_changes(%s, NULL, NULL,"
            " 'include-xids', '1', 'include-timestamp', '1', 'skip-empty-xacts', '1')", (slot,)).fetchall()
    return [(Lsn.parse(lsn), data) for lsn, data in rows]


def slot_confirmed(dsn: str, slot: str) -> Lsn:
    with psycopg.connect(dsn, autocommit=True) as c:
        row = c.execute("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
                        (slot,)).fetchone()
    assert row is not None
    return Lsn.parse(row[0])


def read_n(cap: ChangeSource, n: int, *, timeout: float = 20.0,
           on_batch: Callable[[list[WalMessage]], None] | None = None) -> list[Line]:
    out: list[Line] = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        assert time.monotonic() < deadline, f"only {len(out)} of {n} lines arrived"
        batch = cap.read(0.5)
        out.extend((m.lsn, m.data) for m in batch)
        if on_batch is not None:
            on_batch(batch)
    return out


def commits(lines: list[Line]) -> list[Lsn]:
    return [lsn for lsn, data in lines if data.startswith("COMMIT")]


def status_updates_reach_the_server(cap: StreamCapture, dsn: str, slot: str, updates: int = 2) -> None:
    """Read on (nothing may arrive) until the walsender of `slot` has received `updates` status
    updates sent after this call: `pg_stat_replication.reply_time` moved past the server's time
    at the call that many times."""
    def reply_time() -> Any:
        with psycopg.connect(dsn, autocommit=True) as c:
            row = c.execute("SELECT r.reply_time, now() FROM pg_stat_replication r JOIN pg_replication_slots s "
                            "ON s.active_pid = r.pid WHERE s.slot_name = %s", (slot,)).fetchone()
        assert row is not None, f"slot {slot} has no walsender"
        return row

    seen = [reply_time()[1]]

    def replied() -> bool:
        assert cap.read(0.1) == []
        t = reply_time()[0]
        if t is not None and t > seen[-1]:
            seen.append(t)
        return len(seen) > updates

    wait_for(replied, 10, f"{updates} status updates at the server", interval=0.0)


@pytest.fixture
def prepared(source_dsn: str, slot_name: str) -> tuple[Lsn, list[Line]]:
    st = SlotManager(source_dsn, slot_name).create()
    assert st.confirmed_flush_lsn is not None
    workload(source_dsn)
    expected = peek_all(source_dsn, slot_name)
    assert len(expected) > 3000
    assert len({lsn for lsn, d in expected if d.startswith("table")}) < len([d for _, d in expected if d.startswith("table")])
    cs = commits(expected)
    assert len(cs) == len(set(cs)) and cs == sorted(cs), "commit LSNs strictly increasing"
    return st.confirmed_flush_lsn, expected


def test_stream_delivers_peek_lines_and_confirms_exactly(source_dsn: str, slot_name: str,
                                                         prepared: tuple[Lsn, list[Line]]) -> None:
    start, expected = prepared
    cap = StreamCapture(source_dsn, slot_name, status_interval_s=0.2)
    try:
        got = read_n(cap, len(expected))
        assert got == expected
        assert cap.server_wal_end >= commits(expected)[-1]
        # Read everything, confirmed nothing: status updates (every 0.2 s) keep the slot where it was.
        status_updates_reach_the_server(cap, source_dsn, slot_name)
        assert slot_confirmed(source_dsn, slot_name) == start
        mid = commits(expected)[len(commits(expected)) // 2]
        cap.confirm(mid)
        wait_for(lambda: slot_confirmed(source_dsn, slot_name) == mid, 10, f"the slot confirmed at {mid}", interval=0.05)
        cap.confirm(start)  # lower: ignored
        status_updates_reach_the_server(cap, source_dsn, slot_name)
        assert slot_confirmed(source_dsn, slot_name) == mid
        # Heartbeats arrive as non-transactional message lines at the LSN they return.
        with psycopg.connect(source_dsn, autocommit=True) as c:
            hb = [emit_heartbeat(c) for _ in range(3)]
        lines = read_n(cap, 3)
        assert all("message: transactional: 0 prefix: bridge.heartbeat" in d for _, d in lines)
        assert [lsn for lsn, _ in lines] == sorted(lsn for lsn, _ in lines)
        assert [lsn for lsn, _ in lines] == hb
        cap.confirm(hb[-1])
        wait_for(lambda: slot_confirmed(source_dsn, slot_name) == hb[-1], 10, "the slot confirmed at the last heartbeat",
                 interval=0.05)
    finally:
        cap.close()
    assert cap.reconnects == 0


def test_sql_delivers_peek_lines_with_lagging_confirms(source_dsn: str, slot_name: str,
                                                      prepared: tuple[Lsn, list[Line]]) -> None:
    start, expected = prepared
    cap = SqlCapture(source_dsn, slot_name, batch_changes=300, fetch_rows=100,
                     max_unconfirmed_lines=1500, poll_interval_s=0.05)
    confirmed: list[Lsn] = []
    batches = 0

    def confirm_lagging(batch: list[WalMessage]) -> None:
        # confirm only every other batch (and when the window is full), the previous batch's
        # last commit: the slot lags behind what was returned, so peeks re-decode and must skip
        # what was returned already
        nonlocal batches
        batches += 1
        if (batches % 2 == 0 or not batch) and confirmed_candidates:
            cap.confirm(confirmed_candidates[-1])
            confirmed.append(confirmed_candidates[-1])
        confirmed_candidates.extend(m.lsn for m in batch if m.data.startswith("COMMIT"))

    confirmed_candidates: list[Lsn] = []
    try:
        got = read_n(cap, len(expected), on_batch=confirm_lagging)
        assert got == expected
        assert cap.peeks > 3 and cap.rows_skipped > 0
        assert cap.read(0.2) == []
        assert confirmed and slot_confirmed(source_dsn, slot_name) == confirmed[-1]
        last = commits(expected)[-1]
        cap.confirm(last)
        assert slot_confirmed(source_dsn, slot_name) == last
        assert cap.read(0.2) == []
    finally:
        cap.close()
    assert start < confirmed[-1]


def test_sql_read_without_confirm_does_not_advance(source_dsn: str, slot_name: str,
                                                   prepared: tuple[Lsn, list[Line]]) -> None:
    start, expected = prepared
    cap = SqlCapture(source_dsn, slot_name, max_unconfirmed_lines=10**6)
    try:
        assert read_n(cap, len(expected)) == expected
        assert cap.read(0.2) == []
        assert slot_confirmed(source_dsn, slot_name) == start
        mid = commits(expected)[3]
        cap.confirm(mid)
        assert slot_confirmed(source_dsn, slot_name) == mid
        cap.confirm(start)
        assert slot_confirmed(source_dsn, slot_name) == mid
    finally:
        cap.close()


def test_sql_window_bound(source_dsn: str, slot_name: str) -> None:
    SlotManager(source_dsn, slot_name).create()
    with psycopg.connect(source_dsn, autocommit=True) as c:
        c.execute("CREATE TABLE t (id int PRIMARY KEY)")
        for i in range(200):  # 200 transactions of 3 lines
            c.execute("INSERT INTO t VALUES (%s)", (i,))
    cap = SqlCapture(source_dsn, slot_name, max_unconfirmed_lines=100, fetch_rows=40, poll_interval_s=0.05)
    try:
        got: list[WalMessage] = []
        for _ in range(5):
            got.extend(cap.read(0.2))
        assert 100 <= len(got) <= 102 and cap.unconfirmed_lines == len(got)
        assert got[-1].data.startswith("COMMIT")
        assert cap.read(0.2) == []  # full: waits for confirm
        cap.confirm(got[-1].lsn)
        assert cap.unconfirmed_lines == 0
        more = cap.read(1.0)
        assert more and more[0].data.startswith("BEGIN") and len(more) <= 102
        everything = [*got, *more]
        while len(everything) < 600:
            cap.confirm(everything[-1].lsn)
            batch = cap.read(1.0)
            assert batch and cap.unconfirmed_lines <= 102
            everything.extend(batch)
        assert len(everything) == 600
        assert [m.data for m in everything if m.data.startswith("table")] == \
            [f"table public.t: INSERT: id[integer]:{i}" for i in range(200)]
    finally:
        cap.close()


@pytest.mark.parametrize("mode", ["stream", "sql"])
def test_restart_redelivers_after_confirmed(pg: PgServer, source_dsn: str, slot_name: str,
                                            prepared: tuple[Lsn, list[Line]], mode: str) -> None:
    if pg.local is None:
        pytest.skip("needs a restartable local cluster")
    _start, expected = prepared
    cap: StreamCapture | SqlCapture
    if mode == "stream":
        cap = StreamCapture(source_dsn, slot_name, status_interval_s=0.2, reconnect_max_s=0.5)
    else:
        cap = SqlCapture(source_dsn, slot_name, batch_changes=500, reconnect_max_s=0.5, poll_interval_s=0.05)
    try:
        first = read_n(cap, len(expected))
        assert first == expected
        cs = commits(expected)
        mid = cs[len(cs) // 3]
        cap.confirm(mid)
        if mode == "stream":
            wait_for(lambda: slot_confirmed(source_dsn, slot_name) == mid, 10, f"the slot confirmed at {mid}", interval=0.05)
        pg.local.restart("immediate")
        cut = expected.index((mid, next(d for lsn, d in expected if lsn == mid and d.startswith("COMMIT")))) + 1
        suffix = expected[cut:]
        again = read_n(cap, len(suffix), timeout=30)
        assert cap.reconnects == 1
        assert again == suffix
        # and writes after the restart follow
        with psycopg.connect(source_dsn, autocommit=True) as c:
            c.execute("INSERT INTO t VALUES (-1, 'after restart')")
        tail = read_n(cap, 3)
        assert tail[1][1] == "table public.t: INSERT: id[integer]:-1 v[text]:'after restart'"
    finally:
        cap.close()


@pytest.mark.parametrize("mode", ["stream", "sql"])
def test_big_transaction_is_split_across_reads(source_dsn: str, slot_name: str, mode: str) -> None:
    SlotManager(source_dsn, slot_name).create()
    with psycopg.connect(source_dsn, autocommit=True) as c:
        c.execute("CREATE TABLE big (id int PRIMARY KEY)")
        c.execute("INSERT INTO big SELECT generate_series(1, 20000)")
    cap: StreamCapture | SqlCapture
    if mode == "stream":
        cap = StreamCapture(source_dsn, slot_name, max_batch=1000)
    else:
        cap = SqlCapture(source_dsn, slot_name, fetch_rows=1000, max_unconfirmed_lines=100)
    try:
        sizes: list[int] = []
        lines: list[WalMessage] = []
        deadline = time.monotonic() + 20
        while len(lines) < 20002:
            assert time.monotonic() < deadline
            batch = cap.read(0.5)
            sizes.append(len(batch))
            lines.extend(batch)
        assert max(sizes) <= 1000 and len(lines) == 20002
        assert lines[0].data.startswith("BEGIN") and lines[-1].data.startswith("COMMIT")
        assert lines[-2].data == "table public.big: INSERT: id[integer]:20000"
    finally:
        cap.close()


def test_fast_restart_completes_when_idle_position_confirmed(pg: PgServer, source_dsn: str, slot_name: str,
                                                             prepared: tuple[Lsn, list[Line]]) -> None:
    """A fast shutdown waits until each walsender's client has flushed all it was sent (else it
    waits wal_sender_timeout, 60 s). A caller with nothing unacked confirms `server_wal_end`,
    and the shutdown proceeds at once; the stream resumes after the restart."""
    if pg.local is None:
        pytest.skip("needs a restartable local cluster")
    _start, expected = prepared
    cap = StreamCapture(source_dsn, slot_name, status_interval_s=1.0, reconnect_max_s=0.5)
    try:
        assert read_n(cap, len(expected)) == expected
        t0 = time.monotonic()
        th = threading.Thread(target=pg.local.restart, args=("fast",))
        th.start()
        while th.is_alive():
            assert cap.read(0.2) == []
            cap.confirm(cap.server_wal_end)  # nothing in flight: the idle position is safe
        assert time.monotonic() - t0 < 20
        with psycopg.connect(source_dsn, autocommit=True) as c:
            c.execute("INSERT INTO t VALUES (-2, 'after fast restart')")
        tail = read_n(cap, 3)
        assert cap.reconnects == 1
        assert tail[1][1] == "table public.t: INSERT: id[integer]:-2 v[text]:'after fast restart'"
    finally:
        cap.close()


def test_sql_idle_position_never_passes_an_unread_transaction(source_dsn: str, slot_name: str,
                                                              prepared: tuple[Lsn, list[Line]]) -> None:
    """A peek stops after `batch_changes` rows (at a transaction's end): the WAL end taken before it
    is then ahead of transactions not read yet. `server_wal_end` is what a caller with nothing in
    flight confirms, so it must never pass a commit that `read` has not returned (else the slot
    skips those transactions: lost changes)."""
    _start, expected = prepared
    cap = SqlCapture(source_dsn, slot_name, batch_changes=300, fetch_rows=100,
                     max_unconfirmed_lines=10**6, poll_interval_s=0.05)
    try:
        got: list[Line] = []
        deadline = time.monotonic() + 30
        while len(got) < len(expected):
            assert time.monotonic() < deadline, f"only {len(got)} of {len(expected)} lines arrived"
            got.extend((m.lsn, m.data) for m in cap.read(0.2))
            done = commits(got)
            unread = [c for c in commits(expected) if not done or c > done[-1]]
            if unread:
                assert cap.server_wal_end < unread[0], (
                    f"server_wal_end {cap.server_wal_end} passes the unread commit {unread[0]}")
        assert got == expected
        assert cap.peeks > 3
    finally:
        cap.close()
