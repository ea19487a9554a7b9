"""`SqlCapture`: the `sql` capture mode, peeks and slot advances (see `bridge.source.capture`)."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import psycopg

from bridge.errors import SourceError
from bridge.lsn import ZERO, Lsn
from bridge.source.capture_base import DECODING_OPTIONS, ReconnectingCapture, WalMessage, _retryable
from bridge.source.lines import LineKind, line_kind
from bridge.source.slot import sql_connect

log = logging.getLogger(__name__)

_BEGIN, _COMMIT = LineKind.BEGIN, LineKind.COMMIT  # globals: cheaper than enum reads, once per line


class SqlCapture(ReconnectingCapture):
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
        super().__init__(dsn, slot, reconnect_max_s)
        self._guard = guard
        self.batch_changes = batch_changes
        self.max_unconfirmed_lines = max_unconfirmed_lines
        self.fetch_rows = fetch_rows
        self.poll_interval_s = poll_interval_s
        self.peeks = 0
        self.rows_skipped = 0
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

    _LOST = (psycopg.Error,)

    def _connected(self) -> bool:
        return self._ctl is not None

    def _after_reconnect(self) -> None:
        self._reset_tracking()

    def _check_lost(self, exc: BaseException) -> None:
        if not _retryable(exc):
            raise SourceError(f"peek on slot {self.slot!r} failed: {str(exc).strip()}",
                              slot=self.slot, sqlstate=getattr(exc, "sqlstate", None)) from exc

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
        """Lines not returned before (`read`), or [] at `deadline` or while the window is full.

        Peeks again once a peek result is exhausted; after an empty peek waits `poll_interval_s`
        (SQL mode has no socket to wait on). A peek's first fetch runs the decoding and may take
        longer than the deadline."""
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
            self._in_txn = line_kind(data) is _BEGIN
        unit = self._hist[-1]
        unit[1] += 1
        self._history_lines += 1
        self._open_lines += 1
        if self._in_txn and line_kind(data) is not _COMMIT:
            return
        unit[2] = lsn.value  # the unit is complete: COMMIT or a non-transactional message
        self._in_txn = False
        self._open_lines = 0

    # --- ChangeSource ---------------------------------------------------------------------------

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
            self._connection_lost(exc, " while confirming (applied on reconnect)")

    @property
    def unconfirmed_lines(self) -> int:
        """Lines returned but not yet confirmed (including an open transaction's)."""
        return self._history_lines

    @property
    def server_wal_end(self) -> Lsn:
        return self._wal_end

    def close(self) -> None:
        self._drop_connection()

