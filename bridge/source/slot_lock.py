"""`SlotLock`: one producer per slot, held as a PostgreSQL advisory lock for the producer's lifetime."""

from __future__ import annotations

from typing import Any

import psycopg

from bridge.errors import SourceError
from bridge.source.session import close_quietly
from bridge.source.slot import sql_connect

_LOCK_HOLDER_SQL = """
SELECT l.pid, coalesce(a.application_name, ''), coalesce(a.client_addr::text, 'local')
  FROM pg_catalog.pg_locks l LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
 WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
   AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())
   AND ((l.classid::bigint << 32) | l.objid::bigint) = hashtextextended(%s, 0)
 LIMIT 1
"""


class SlotLock:
    """One producer per slot, also for `capture: sql`, whose slot is active only during each peek
    (a walsender marks a streamed slot active, and a second stream is refused by PostgreSQL).

    A session-level advisory lock on the slot's database, keyed by `hashtextextended('pgbridge.slot.'
    || slot, 0)`, held on a connection of its own for the producer's lifetime. Not thread-safe.
    """

    def __init__(self, dsn: str, slot: str) -> None:
        self.dsn = dsn
        self.slot = slot
        self.name = f"pgbridge.slot.{slot}"
        self._conn: psycopg.Connection[Any] | None = None

    def hold(self) -> None:
        """Take the lock, or check that this process still holds it (called at start and on each
        capture reconnect: a PostgreSQL restart releases it). Raises `SourceError` naming the
        session that holds it when another producer does, or when the source cannot be reached."""
        conn = self._conn
        if conn is not None and not conn.closed:
            try:
                conn.execute("SELECT 1")
                return
            except psycopg.Error:
                self.release()
        conn = sql_connect(self.dsn, self.slot)
        try:
            row = conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (self.name,)).fetchone()
            if row is not None and row[0]:
                self._conn = conn
                return
            holder = conn.execute(_LOCK_HOLDER_SQL, (self.name,)).fetchone()
        except psycopg.Error as exc:
            conn.close()
            raise SourceError(f"cannot take the producer lock of slot {self.slot!r}: {str(exc).strip()}",
                              slot=self.slot) from exc
        conn.close()
        who = (f"server process {holder[0]} (application_name {holder[1]!r}, client {holder[2]})"
               if holder else "another session")
        raise SourceError(f"another producer is already running on slot {self.slot!r}: {who} holds its "
                          f"lock; only one producer per slot may run (stop the other one, or give this one "
                          f"its own source.slot)", slot=self.slot)

    def release(self) -> None:
        """Drop the lock (closing its connection). Idempotent."""
        close_quietly(self._conn)
        self._conn = None
