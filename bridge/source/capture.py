"""Capture: read test_decoding lines from the slot, and let the slot advance only when told.

Two implementations of `ChangeSource`:

- `StreamCapture` (default): a `replication=database` connection running `START_REPLICATION`,
  driven at the libpq level (`conn.pgconn`) and waited on with `selectors`. The standby status
  update reports write = flush = apply = the LSN given to `confirm()`, so the server keeps every
  transaction that was not confirmed, whatever was received.
- `SqlCapture`: `pg_logical_slot_peek_changes` (never `get_changes`, which is destructive) read
  through a server-side cursor, and `pg_replication_slot_advance` on `confirm()`.

Both re-deliver after a lost connection: once reconnected, `read` returns the lines again from
the last confirmed position, and `reconnects` has been incremented before the first of them is
returned. Every list `read` returns comes from one connection. A caller that sees `reconnects`
change discards its partly read transaction. Neither class is thread-safe: call `read` and
`confirm` from one thread.
"""

from __future__ import annotations

import logging
import selectors
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg
from psycopg import pq

from bridge import failures
from bridge.errors import SourceError
from bridge.lsn import ZERO, Lsn
from bridge.source.slot import (
    quote_slot,
    replication_connect,
    slot_active_message,
    sql_connect,
    validate_slot_name,
)

log = logging.getLogger(__name__)

DECODING_OPTIONS: tuple[tuple[str, str], ...] = (
    ("include-xids", "1"),
    ("include-timestamp", "1"),
    ("skip-empty-xacts", "1"),
)
"""test_decoding options both modes use; the parser relies on xids and commit timestamps."""

# Microseconds between the Unix epoch and PostgreSQL's epoch (2000-01-01), for status updates.
_PG_EPOCH_US = 946_684_800_000_000
_XLOGDATA = struct.Struct("!QQQ")  # dataStart, walEnd, sendTime after the 'w'
_KEEPALIVE = struct.Struct("!QQB")  # walEnd, sendTime, replyRequested after the 'k'
_STATUS = struct.Struct("!cQQQQB")  # 'r', write, flush, apply, sendTime, replyRequested

@dataclass(slots=True)
class WalMessage:
    """One test_decoding line and the LSN decoding reported for it (not frozen: one per line).

    The LSN is XLogData's dataStart (stream) or the `lsn` column (sql): for BEGIN the
    transaction's first record, for a change its record, for COMMIT the end of the commit record
    (the commit LSN, what the slot is confirmed to), for a non-transactional message the end of
    its record (what `pg_logical_emit_message` returned). A lazily written BEGIN (skip-empty-xacts)
    gets the LSN of the change that follows it in both modes. Several lines may share one LSN.
    """

    lsn: Lsn
    data: str


class ChangeSource(Protocol):
    """What the producer reads changes from."""

    reconnects: int

    def read(self, timeout: float) -> list[WalMessage]:
        """Lines that arrived, in WAL commit order; [] after `timeout` seconds without any.
        Waits on the socket (never busy-polls). Raises `SourceError` on a fatal problem."""
        ...

    def confirm(self, lsn: Lsn) -> None:
        """Allow the slot to advance to `lsn` (never beyond). Lower values than before are ignored."""
        ...

    @property
    def server_wal_end(self) -> Lsn:
        """The latest server WAL end known (keepalives / XLogData, or pg_current_wal_lsn())."""
        ...

    def close(self) -> None:
        """Close connections; the slot keeps its confirmed position."""
        ...


def _retryable(exc: BaseException) -> bool:
    """A reconnect may succeed: a lost or refused connection, the server shutting down or
    starting, a slot still held by a walsender that has not noticed its client is gone."""
    return failures.transient(exc)


class _Backoff:
    """Exponential reconnect delay: 0.1 s doubling up to `max_s`; reset after a success."""

    def __init__(self, max_s: float) -> None:
        self.max_s = max_s
        self.delay = 0.0
        self.next_at = 0.0

    def failed(self) -> None:
        self.delay = min(self.max_s, max(0.1, self.delay * 2))
        self.next_at = time.monotonic() + self.delay

    def reset(self) -> None:
        self.delay = 0.0
        self.next_at = 0.0

    def attempt(self, connect: Callable[[], None], deadline: float, slot: str) -> bool:
        """Call `connect` once the backoff allows, waiting at most until `deadline`. True when it
        connected; False when it is not time yet or a retryable failure was recorded. Raises
        `SourceError` for failures that will not go away."""
        wait = self.next_at - time.monotonic()
        if wait > 0:
            time.sleep(min(wait, max(0.0, deadline - time.monotonic())))
            if time.monotonic() < self.next_at:
                return False
        try:
            connect()
        except SourceError as exc:
            if not _retryable(exc):
                raise
            self.failed()
            log.warning("reconnect to slot %s failed (next try in %.1fs): %s", slot, self.delay, exc)
            return False
        self.reset()
        return True


class _ConnectionLost(Exception):
    """Internal: the replication stream ended or its socket failed; reconnect."""


class StreamCapture:
    """`START_REPLICATION … LOGICAL` on a replication connection.

    Connects in the constructor (raises `SourceError` if the slot is missing, active elsewhere,
    or the server refuses), so a misconfigured producer fails at start. Later connection losses
    are retried in `read` with exponential backoff (capped at `reconnect_max_s`, forever); fatal
    errors on reconnect (slot dropped, privilege revoked) raise `SourceError`.

    A fast shutdown of PostgreSQL waits until the walsender's client has flushed everything it
    was sent (else `wal_sender_timeout`, 60 s by default). With nothing unacked and no open
    transaction, the caller should `confirm(server_wal_end)`: that is safe (every transaction
    committed below it was delivered) and keeps retained WAL bounded when only other tables or
    databases are written.
    """

    def __init__(self, dsn: str, slot: str, *, status_interval_s: float = 10.0,
                 reconnect_max_s: float = 30.0, max_batch: int = 10_000) -> None:
        self.dsn = dsn
        self.slot = validate_slot_name(slot)
        self.status_interval_s = status_interval_s
        self.max_batch = max_batch
        self.reconnects = 0
        self._confirmed: Lsn | None = None
        self._wal_end = 0  # the server's WAL end from XLogData and keepalives (an int: set per message)
        self._backoff = _Backoff(reconnect_max_s)
        self._conn: psycopg.Connection[Any] | None = None
        self._pgconn: pq.abc.PGconn | None = None
        self._sel: selectors.DefaultSelector | None = None
        self._last_status = 0.0
        self._held: list[str] = []  # lines sent with dataStart 0/0, waiting for the next LSN
        self._connect()

    # --- connection -----------------------------------------------------------------------------

    def _connect(self) -> None:
        conn = replication_connect(self.dsn, self.slot)
        pgconn = conn.pgconn
        start = self._confirmed or ZERO
        opts = ", ".join(f'"{k}" \'{v}\'' for k, v in DECODING_OPTIONS)
        cmd = f"START_REPLICATION SLOT {quote_slot(self.slot)} LOGICAL {start} ({opts})"
        try:
            pgconn.send_query(cmd.encode())
            res = pgconn.get_result()
            if res is None:
                raise psycopg.OperationalError(pgconn.error_message.decode(errors="replace").strip())
            if res.status != pq.ExecStatus.COPY_BOTH:
                raise psycopg.errors.error_from_result(res)
            pgconn.nonblocking = 1
        except psycopg.Error as exc:
            conn.close()
            text = str(exc).strip()
            if "active for PID" in text:
                pid = text.rsplit(" ", 1)[-1]
                raise SourceError(slot_active_message(self.slot, int(pid) if pid.isdigit() else None),
                                  slot=self.slot) from exc
            if isinstance(exc, psycopg.errors.UndefinedObject):
                raise SourceError(f"replication slot {self.slot!r} does not exist: create it "
                                  "(pgbridge slot create) and snapshot again", slot=self.slot) from exc
            raise SourceError(f"START_REPLICATION failed: {text}", slot=self.slot, start=start) from exc
        sel = selectors.DefaultSelector()
        sel.register(pgconn.socket, selectors.EVENT_READ)
        self._conn, self._pgconn, self._sel = conn, pgconn, sel
        try:
            self._send_status()  # tell the slot our confirmed position right away
        except _ConnectionLost:
            pass  # noticed by the next read
        log.info("streaming slot %s from %s", self.slot, start)

    def _drop_connection(self) -> None:
        if self._sel is not None:
            self._sel.close()
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error:
                pass
        self._conn = self._pgconn = self._sel = None
        self._held.clear()

    def _reconnect(self, deadline: float) -> bool:
        """Try to reconnect once the backoff allows, waiting at most until `deadline`."""
        if not self._backoff.attempt(self._connect, deadline, self.slot):
            return False
        self.reconnects += 1
        log.warning("reconnected to slot %s (reconnect #%d); re-delivering from %s",
                    self.slot, self.reconnects, self._confirmed or "the slot's confirmed position")
        return True

    # --- protocol -------------------------------------------------------------------------------

    def _send_status(self, reply_requested: bool = False) -> None:
        pgconn = self._pgconn
        if pgconn is None:
            return
        pos = (self._confirmed or ZERO).value
        now_us = int(time.time() * 1_000_000) - _PG_EPOCH_US
        msg = _STATUS.pack(b"r", pos, pos, pos, now_us, 1 if reply_requested else 0)
        try:
            pgconn.put_copy_data(msg)
            while pgconn.flush() == 1:  # nonblocking: wait until the socket takes the rest
                assert self._sel is not None
                self._sel.modify(pgconn.socket, selectors.EVENT_READ | selectors.EVENT_WRITE)
                self._sel.select(1.0)
                pgconn.consume_input()
            if self._sel is not None:
                self._sel.modify(pgconn.socket, selectors.EVENT_READ)
        except psycopg.Error as exc:
            raise _ConnectionLost(str(exc)) from exc
        self._last_status = time.monotonic()

    def _read_connected(self, deadline: float) -> list[WalMessage]:
        pgconn, sel = self._pgconn, self._sel
        assert pgconn is not None and sel is not None
        out: list[WalMessage] = []
        append = out.append
        unpack_w, unpack_k = _XLOGDATA.unpack_from, _KEEPALIVE.unpack_from
        max_batch = self.max_batch
        held = self._held
        try:
            while True:
                n, buf = pgconn.get_copy_data(1)
                if n > 0:
                    kind = buf[0]
                    if kind == 0x77:  # 'w' XLogData
                        start, end, _ = unpack_w(buf, 1)
                        if end > self._wal_end:
                            self._wal_end = end
                        if start == 0:
                            # Written with last_write=false (test_decoding's lazy BEGIN under
                            # skip-empty-xacts): walsender sends 0/0. It is always followed by
                            # the change that caused it; give it that LSN, as peek does.
                            held.append(str(buf[25:], "utf-8"))
                            continue
                        lsn = Lsn(start)
                        if held:
                            for text in held:
                                append(WalMessage(lsn, text))
                            held.clear()
                        append(WalMessage(lsn, str(buf[25:], "utf-8")))
                        if len(out) >= max_batch:
                            return out
                    elif kind == 0x6B:  # 'k' primary keepalive
                        end, _, reply = unpack_k(buf, 1)
                        if end > self._wal_end:
                            self._wal_end = end
                        if reply:
                            self._send_status()
                    continue
                if n == -1:
                    raise _ConnectionLost("the server ended the replication stream")
                # n == 0: nothing buffered; hand over what we have, else wait on the socket.
                now = time.monotonic()
                if now - self._last_status >= self.status_interval_s:
                    self._send_status()
                if out:
                    return out
                remaining = deadline - now
                if remaining <= 0:
                    return out
                sel.select(min(remaining, max(0.0, self._last_status + self.status_interval_s - now)))
                pgconn.consume_input()
        except psycopg.Error as exc:
            raise _ConnectionLost(str(exc).strip()) from exc

    # --- ChangeSource ---------------------------------------------------------------------------

    def read(self, timeout: float) -> list[WalMessage]:
        """Lines that arrived (at most `max_batch`), or [] after `timeout` seconds.

        After a lost connection, reconnects (backoff) and re-delivers from the last confirmed
        LSN; `reconnects` is incremented before the first re-delivered line is returned.
        Raises `SourceError` when reconnecting fails for a reason that will not go away.
        """
        deadline = time.monotonic() + timeout
        while True:
            if self._pgconn is None and not self._reconnect(deadline):
                if time.monotonic() >= deadline:
                    return []
                continue
            try:
                return self._read_connected(deadline)
            except _ConnectionLost as exc:
                log.warning("replication connection for slot %s lost: %s", self.slot, exc)
                self._drop_connection()
                self._backoff.failed()
                if time.monotonic() >= deadline:
                    return []

    def confirm(self, lsn: Lsn) -> None:
        """The slot may advance to `lsn`: sends a status update with write = flush = apply = lsn
        right away (when connected; else on reconnect the stream starts there). Lower values
        than the last confirmed are ignored."""
        if self._confirmed is not None and lsn <= self._confirmed:
            return
        self._confirmed = lsn
        try:
            self._send_status()
        except _ConnectionLost as exc:
            log.warning("replication connection for slot %s lost while confirming: %s", self.slot, exc)
            self._drop_connection()
            self._backoff.failed()

    @property
    def confirmed(self) -> Lsn | None:
        """The last LSN given to `confirm` (None before the first)."""
        return self._confirmed

    @property
    def server_wal_end(self) -> Lsn:
        return Lsn(self._wal_end)

    def close(self) -> None:
        """Send a final status update and close the connection."""
        if self._pgconn is not None:
            try:
                self._send_status()
            except _ConnectionLost:
                pass
        self._drop_connection()


class SqlCapture:
    """`pg_logical_slot_peek_changes` in batches, `pg_replication_slot_advance` on confirm.

    Each peek re-decodes from the slot's confirmed position, so lines already returned are
    skipped: the output is a sequence of units (a whole transaction BEGIN…COMMIT, or a
    non-transactional message) and every unit's first line (its LSN and text; BEGIN carries the
    xid) identifies it. A new peek is matched against the units returned since the last peek
    started, and the rows of the units already returned are skipped.

    In-flight window: once `max_unconfirmed_lines` lines were returned but not confirmed, `read`
    returns [] (after waiting its timeout) until `confirm` catches up. The bound is checked at unit
    boundaries only: an open transaction is always read on to its COMMIT (the caller cannot
    confirm without it), so the unconfirmed lines stay below the bound plus one unit.
    `read` returns at most `fetch_rows` lines, splitting a big transaction across calls. A peek
    result is read through a server-side cursor, `fetch_rows` rows at a time, so a huge
    transaction never sits in memory at once (PostgreSQL materializes the peek result on the
    server, spilling to disk past work_mem). Each peek asks for `batch_changes` rows beyond the
    unconfirmed ones it will skip: the re-decoding cost grows with the unconfirmed window.
    """

    def __init__(self, dsn: str, slot: str, *, batch_changes: int = 10_000,
                 max_unconfirmed_lines: int = 100_000, fetch_rows: int = 2_000,
                 poll_interval_s: float = 0.2, reconnect_max_s: float = 30.0,
                 guard: Callable[[], None] | None = None) -> None:
        """`guard`, when given, is called before each (re)connect and raises when this process may
        not use the slot (`SlotLock.hold`: another producer holds it)."""
        self.dsn = dsn
        self._guard = guard
        self.slot = validate_slot_name(slot)
        self.batch_changes = batch_changes
        self.max_unconfirmed_lines = max_unconfirmed_lines
        self.fetch_rows = fetch_rows
        self.poll_interval_s = poll_interval_s
        self.reconnects = 0
        self.peeks = 0
        self.rows_skipped = 0
        self._backoff = _Backoff(reconnect_max_s)
        self._confirmed: Lsn | None = None
        self._wal_end = ZERO
        self._peek_wal_end = ZERO
        self._peek_limit = 0
        self._peek_rows = 0
        self._ctl: psycopg.Connection[Any] | None = None
        self._peek_conn: psycopg.Connection[Any] | None = None
        self._cursor: psycopg.ServerCursor[Any] | None = None
        self._next_peek_at = 0.0
        self._reset_tracking()
        self._connect()

    def _reset_tracking(self) -> None:
        # Units returned and not confirmed away, oldest first: [key, lines, boundary]; key =
        # (lsn, hash(first line)); boundary = commit LSN / message LSN, 0 while still open.
        self._hist: deque[list[Any]] = deque()
        self._units: dict[tuple[int, int], int] = {}  # key → absolute index in _hist
        self._base = 0  # absolute index of _hist[0]
        self._history_lines = 0  # lines in _hist
        self._skip = 0  # rows of the current peek still to skip (-1: not known yet)
        self._pending: list[tuple[str, str]] = []  # fetched rows not yet handled
        self._pending_pos = 0
        self._in_txn = False  # inside BEGIN … COMMIT of the unit being returned
        self._open_lines = 0  # lines returned for the open (uncommitted) unit
        self._peek_new = 0  # lines returned by the current peek

    def _drop_units(self, n: int) -> None:
        """Forget the `n` oldest returned units."""
        hist, units = self._hist, self._units
        for _ in range(n):
            key, lines, _b = hist.popleft()
            units.pop(key, None)
            self._history_lines -= lines
        self._base += n

    # --- connection -----------------------------------------------------------------------------

    def _connect(self) -> None:
        if self._guard is not None:
            self._guard()
        ctl = sql_connect(self.dsn, self.slot)
        try:
            peek = sql_connect(self.dsn, self.slot, autocommit=False)
        except SourceError:
            ctl.close()
            raise
        self._ctl, self._peek_conn = ctl, peek
        try:
            row = ctl.execute("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
                              (self.slot,)).fetchone()
            if row is None:
                raise SourceError(f"replication slot {self.slot!r} does not exist: run pgbridge slot create",
                                  slot=self.slot)
            slot_pos = Lsn.parse(row[0]) if row[0] else ZERO
            if self._confirmed is not None and slot_pos < self._confirmed:
                # After a crash the slot may restart from an older saved position: move it forward to
                # what we confirmed, the same start a replication connection would use.
                ctl.execute("SELECT pg_replication_slot_advance(%s, %s::pg_lsn)", (self.slot, str(self._confirmed)))
            elif self._confirmed is None or slot_pos > self._confirmed:
                self._confirmed = slot_pos
        except psycopg.Error as exc:
            self._drop_connection()
            raise SourceError(f"cannot read slot {self.slot!r}: {str(exc).strip()}", slot=self.slot) from exc
        except SourceError:
            self._drop_connection()
            raise

    def _drop_connection(self) -> None:
        for c in (self._peek_conn, self._ctl):
            if c is not None:
                try:
                    c.close()
                except psycopg.Error:
                    pass
        self._ctl = self._peek_conn = None
        self._cursor = None

    def _reconnect(self, deadline: float) -> bool:
        if not self._backoff.attempt(self._connect, deadline, self.slot):
            return False
        self._reset_tracking()
        self.reconnects += 1
        log.warning("reconnected to slot %s (reconnect #%d); re-delivering from %s",
                    self.slot, self.reconnects, self._confirmed)
        return True

    # --- peeks ----------------------------------------------------------------------------------

    def _start_peek(self) -> None:
        conn, ctl = self._peek_conn, self._ctl
        assert conn is not None and ctl is not None
        # The WAL end before the peek becomes `server_wal_end` only once the peek has been read
        # to its end without reaching its row limit (see `_end_peek`): until then transactions
        # committed below it may still be unread, and confirming it would skip them.
        row = ctl.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        self._peek_wal_end = Lsn.parse(row[0]) if row is not None else ZERO
        self._peek_limit = self.batch_changes + self._history_lines
        self._peek_rows = 0
        opts = ", ".join(f"'{k}', '{v}'" for k, v in DECODING_OPTIONS)
        cur = conn.cursor(name="bridge_peek")
        cur.itersize = self.fetch_rows
        # Ask for the lines already returned since the slot's position plus a new batch.
        cur.execute(f"SELECT lsn::text, data FROM pg_logical_slot_peek_changes(%s, NULL, %s, {opts})",
                    (self.slot, self._peek_limit))
        self._cursor = cur
        self.peeks += 1
        self._peek_new = 0
        self._skip = -1  # decided by the first row

    def _end_peek(self) -> None:
        conn, cur = self._peek_conn, self._cursor
        self._cursor = None
        self._pending, self._pending_pos = [], 0
        if cur is not None:
            cur.close()
        if conn is not None:
            conn.rollback()
        if self._peek_rows < self._peek_limit:
            # read to its end, and it ended at the WAL end of its start, not at its row limit:
            # every transaction committed below that has been returned
            self._wal_end = max(self._wal_end, self._peek_wal_end)
        # The next peek starts at the slot's position, which only moves forward: units returned
        # before now are found again (skipped) or were confirmed away.
        if self._peek_new == 0:
            self._next_peek_at = time.monotonic() + self.poll_interval_s

    def _match_first_row(self, lsn: Lsn, data: str) -> None:
        """Decide how many rows of the new peek were already returned."""
        idx = self._units.get((lsn.value, hash(data)))
        if idx is None:
            # Everything returned before is behind the slot's position: all rows are new.
            self._drop_units(len(self._hist))
            self._skip = 0
            return
        # The server skipped the units before this one; it re-sends this one and all after it.
        self._drop_units(idx - self._base)
        self._skip = self._history_lines

    def _read_connected(self, deadline: float) -> list[WalMessage]:
        out: list[WalMessage] = []
        limit = self.fetch_rows
        while True:
            if not self._in_txn and self._history_lines >= self.max_unconfirmed_lines:
                # window full (at a unit boundary): nothing more until confirm catches up
                if not out:
                    time.sleep(max(0.0, deadline - time.monotonic()))
                return out
            if self._pending_pos >= len(self._pending):
                if self._cursor is None:
                    if out:
                        return out
                    now = time.monotonic()
                    if now < self._next_peek_at:
                        if deadline <= now:
                            return out
                        time.sleep(min(self._next_peek_at, deadline) - now)
                        continue
                    self._start_peek()
                cur = self._cursor
                assert cur is not None
                self._pending = cur.fetchmany(self.fetch_rows)
                self._pending_pos = 0
                self._peek_rows += len(self._pending)
                if not self._pending:
                    if self._skip == -1:  # empty peek: everything returned is behind the slot
                        self._drop_units(len(self._hist))
                    self._end_peek()
                    if out or time.monotonic() >= deadline:
                        return out
                    continue
            rows, i = self._pending, self._pending_pos
            while i < len(rows):
                lsn_text, data = rows[i]
                i += 1
                lsn = Lsn.parse(lsn_text)
                if self._skip == -1:
                    self._match_first_row(lsn, data)
                if self._skip > 0:
                    self._skip -= 1
                    self.rows_skipped += 1
                    continue
                self._add(out, lsn, data)
                if len(out) >= limit or (not self._in_txn and self._history_lines >= self.max_unconfirmed_lines):
                    break
            self._pending_pos = i
            if len(out) >= limit or time.monotonic() >= deadline:
                return out

    def _add(self, out: list[WalMessage], lsn: Lsn, data: str) -> None:
        out.append(WalMessage(lsn, data))
        self._peek_new += 1
        if self._open_lines == 0:  # first line of a new unit
            key = (lsn.value, hash(data))
            self._units[key] = self._base + len(self._hist)
            self._hist.append([key, 0, 0])
            self._in_txn = data.startswith("BEGIN")
        unit = self._hist[-1]
        unit[1] += 1
        self._history_lines += 1
        self._open_lines += 1
        if self._in_txn and not data.startswith("COMMIT"):
            return
        unit[2] = lsn.value  # the unit is complete: COMMIT or a non-transactional message
        self._in_txn = False
        self._open_lines = 0

    # --- ChangeSource ---------------------------------------------------------------------------

    def read(self, timeout: float) -> list[WalMessage]:
        """Lines not returned before, or [] after `timeout` seconds (or while the window is full).

        Peeks again once a peek result is exhausted; after an empty peek waits `poll_interval_s`
        (SQL mode has no socket to wait on). A peek's first fetch runs the decoding and may
        take longer than `timeout`. After a lost connection, reconnects (backoff) and re-delivers
        from the last confirmed LSN (`reconnects` incremented first). Raises `SourceError` for
        errors a reconnect cannot fix.
        """
        deadline = time.monotonic() + timeout
        while True:
            if self._ctl is None and not self._reconnect(deadline):
                if time.monotonic() >= deadline:
                    return []
                continue
            try:
                return self._read_connected(deadline)
            except psycopg.Error as exc:
                if not _retryable(exc):
                    raise SourceError(f"peek on slot {self.slot!r} failed: {str(exc).strip()}",
                                      slot=self.slot, sqlstate=exc.sqlstate) from exc
                log.warning("connection for slot %s lost: %s", self.slot, exc)
                self._drop_connection()
                self._backoff.failed()
                if time.monotonic() >= deadline:
                    return []

    def confirm(self, lsn: Lsn) -> None:
        """Advance the slot to `lsn` with `pg_replication_slot_advance` (clamped by PostgreSQL to
        its flushed WAL). Lower values than the last confirmed are ignored. When the connection
        is lost, the advance is applied on reconnect. Raises `SourceError` if PostgreSQL refuses."""
        if self._confirmed is not None and lsn <= self._confirmed:
            return
        # Units whose commit (message) LSN is at or below lsn are skipped by every later peek.
        n, v = 0, lsn.value
        for _key, _lines, boundary in self._hist:
            if boundary == 0 or boundary > v:
                break
            n += 1
        self._drop_units(n)
        prev, self._confirmed = self._confirmed, lsn
        ctl = self._ctl
        if ctl is None:
            return  # applied on reconnect
        try:
            ctl.execute("SELECT pg_replication_slot_advance(%s, %s::pg_lsn)", (self.slot, str(lsn)))
        except psycopg.Error as exc:
            if not _retryable(exc):
                self._confirmed = prev
                raise SourceError(f"cannot advance slot {self.slot!r} to {lsn}: {str(exc).strip()}",
                                  slot=self.slot, position=str(lsn)) from exc
            log.warning("connection for slot %s lost while confirming (applied on reconnect): %s",
                        self.slot, exc)
            self._drop_connection()
            self._backoff.failed()

    @property
    def confirmed(self) -> Lsn | None:
        return self._confirmed

    @property
    def unconfirmed_lines(self) -> int:
        """Lines returned but not yet confirmed (including an open transaction's)."""
        return self._history_lines

    @property
    def server_wal_end(self) -> Lsn:
        return self._wal_end

    def close(self) -> None:
        self._drop_connection()
