"""`StreamCapture`: the `stream` capture mode over the replication protocol (see `bridge.source.capture`)."""

from __future__ import annotations

import logging
import selectors
import struct
import time
from typing import Any

import psycopg
from psycopg import pq

from bridge.errors import SourceError
from bridge.lsn import ZERO, Lsn
from bridge.source.capture_base import DECODING_OPTIONS, ReconnectingCapture, WalMessage, _ConnectionLost
from bridge.source.slot import quote_slot, replication_connect, slot_active_message

log = logging.getLogger(__name__)

# Microseconds between the Unix epoch and PostgreSQL's epoch (2000-01-01), for status updates.
_PG_EPOCH_US = 946_684_800_000_000
_XLOGDATA = struct.Struct("!QQQ")  # dataStart, walEnd, sendTime after the 'w'
_KEEPALIVE = struct.Struct("!QQB")  # walEnd, sendTime, replyRequested after the 'k'
_STATUS = struct.Struct("!cQQQQB")  # 'r', write, flush, apply, sendTime, replyRequested


class StreamCapture(ReconnectingCapture):
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
        super().__init__(dsn, slot, reconnect_max_s)
        self.status_interval_s = status_interval_s
        self.max_batch = max_batch
        self._wal_end = 0  # the server's WAL end from XLogData and keepalives (an int: set per message)
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

    def _connected(self) -> bool:
        return self._pgconn is not None

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
            self._connection_lost(exc, " while confirming")

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

