"""Slot lifecycle: status, create, ensure, drop, preflight checks and heartbeats.

The producer owns exactly one logical slot (plugin `test_decoding`). `SlotManager` opens short
SQL connections for each call (with the capture session GUCs) and translates every library error
into a `SourceError` that says what to do.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from bridge.errors import SourceError
from bridge.lsn import Lsn
from bridge.source.session import libpq_options

log = logging.getLogger(__name__)

PLUGIN = "test_decoding"
HEARTBEAT_PREFIX = "bridge.heartbeat"

# Replication slot names: PostgreSQL allows [a-z0-9_] up to NAMEDATALEN-1 characters.
_SLOT_NAME = re.compile(r"[a-z0-9_]{1,63}")


def validate_slot_name(name: str) -> str:
    """Return `name` if it is a valid slot name; raise `SourceError` otherwise.

    Called before a slot name is put into any SQL or replication command.
    """
    if not isinstance(name, str) or not _SLOT_NAME.fullmatch(name):
        raise SourceError(
            f"invalid replication slot name {name!r}: use 1 to 63 characters from "
            "lower-case letters, digits and underscore ([a-z0-9_])",
            slot=name,
        )
    return name


def quote_slot(name: str) -> str:
    """The slot name as a quoted identifier for replication commands (validated first)."""
    return '"' + validate_slot_name(name) + '"'


@dataclass(frozen=True, slots=True)
class SlotStatus:
    """One row of `pg_replication_slots`, with the WAL the slot holds back.

    `retained_wal_bytes` = `pg_current_wal_lsn() - restart_lsn` (WAL kept on disk for the slot),
    `confirmed_lag_bytes` = `pg_current_wal_lsn() - confirmed_flush_lsn` (what is not yet acked).
    """

    name: str
    plugin: str | None
    slot_type: str
    database: str | None
    active: bool
    active_pid: int | None
    restart_lsn: Lsn | None
    confirmed_flush_lsn: Lsn | None
    wal_status: str | None
    current_wal_lsn: Lsn | None
    retained_wal_bytes: int | None
    confirmed_lag_bytes: int | None
    safe_wal_size: int | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form (LSNs as text) for `pgbridge status --json`."""
        out: dict[str, Any] = {}
        for f in self.__dataclass_fields__:
            v = getattr(self, f)
            out[f] = str(v) if isinstance(v, Lsn) else v
        return out


@dataclass(frozen=True, slots=True)
class Check:
    """One preflight check: `ok` False means the bridge cannot run; `detail` says what to do."""

    name: str
    ok: bool
    detail: str


# --- messages (module level so they can be tested and reused by the CLI) -------------------------


def database_missing_message(database: str | None, error: str) -> str:
    return (f"cannot connect to the source database {database!r}: it does not exist. "
            f"Create it or fix source.dsn ({error})")


def wal_level_message(value: str) -> str:
    return (f"wal_level is {value!r}, logical decoding needs 'logical': set wal_level = logical "
            "in postgresql.conf (or ALTER SYSTEM SET wal_level = logical) and restart PostgreSQL")


def replication_privilege_message(role: str) -> str:
    return (f"role {role!r} has neither the REPLICATION attribute nor superuser: run "
            f'ALTER ROLE "{role}" WITH REPLICATION; as a superuser (on managed services: '
            "GRANT rds_replication / the provider's replication role)")


def plugin_mismatch_message(slot: str, plugin: str | None, slot_type: str) -> str:
    if slot_type != "logical":
        return (f"replication slot {slot!r} exists but is a {slot_type} slot; the bridge needs a "
                f"logical slot with plugin {PLUGIN}: choose another source.slot or drop that slot "
                f"(SELECT pg_drop_replication_slot('{slot}'))")
    return (f"replication slot {slot!r} exists with plugin {plugin!r}, the bridge needs {PLUGIN!r}: "
            f"choose another source.slot, or drop it (SELECT pg_drop_replication_slot('{slot}')) "
            "if nothing else uses it")


def wrong_database_message(slot: str, slot_db: str | None, database: str) -> str:
    return (f"replication slot {slot!r} belongs to database {slot_db!r}, not {database!r}: "
            "slot names are cluster-wide; choose another source.slot")


def slot_active_message(slot: str, pid: int | None) -> str:
    return (f"replication slot {slot!r} is active in another session (pid {pid}): only one "
            f"producer may use a slot; stop the other consumer, or terminate it with "
            f"SELECT pg_terminate_backend({pid})")


def wal_lost_message(slot: str) -> str:
    return (f"replication slot {slot!r} has wal_status 'lost': it was invalidated because the WAL "
            "it retained exceeded max_slot_wal_keep_size, and the changes in between are gone. "
            f"Drop and recreate the slot (pgbridge slot drop; pgbridge slot create) and resnapshot "
            "the tables (snapshot: initial)")


def slots_exhausted_message(used: int, limit: int) -> str:
    return (f"all replication slots are in use ({used} of max_replication_slots = {limit}): drop an "
            "unused slot (SELECT slot_name, active FROM pg_replication_slots) or raise "
            "max_replication_slots and restart PostgreSQL")


def _dbname(dsn: str) -> str | None:
    try:
        return psycopg.conninfo.conninfo_to_dict(dsn).get("dbname")  # type: ignore[return-value]
    except psycopg.ProgrammingError:
        return None


def connect_error(dsn: str, exc: psycopg.Error, slot: str | None = None) -> SourceError:
    """Translate a failed connection attempt into a `SourceError` with an actionable message."""
    text = str(exc).strip()
    db = _dbname(dsn)
    if "does not exist" in text and "database" in text:
        return SourceError(database_missing_message(db, text), slot=slot, database=db)
    if "replication" in text and ("permission" in text or "must be" in text or "no pg_hba" in text):
        return SourceError(f"the source refused a replication connection: {text}. The role needs "
                           "REPLICATION and pg_hba.conf a 'replication' entry for this host",
                           slot=slot, database=db)
    return SourceError(f"cannot connect to the source PostgreSQL: {text}", slot=slot, database=db)


def sql_connect(dsn: str, slot: str | None = None, *, autocommit: bool = True) -> psycopg.Connection[Any]:
    """A plain SQL connection with the capture GUCs. Raises `SourceError`."""
    try:
        return psycopg.connect(dsn, autocommit=autocommit, options=libpq_options())
    except psycopg.Error as exc:
        raise connect_error(dsn, exc, slot) from exc


def replication_connect(dsn: str, slot: str | None = None) -> psycopg.Connection[Any]:
    """A `replication=database` connection with the capture GUCs. Raises `SourceError`."""
    try:
        return psycopg.connect(dsn, replication="database", autocommit=True, options=libpq_options())
    except psycopg.Error as exc:
        raise connect_error(dsn, exc, slot) from exc


def _lsn(v: str | None) -> Lsn | None:
    return None if v is None else Lsn.parse(v)


_STATUS_SQL = """
SELECT slot_name::text, plugin::text, slot_type, database::text, active, active_pid,
       restart_lsn::text, confirmed_flush_lsn::text, wal_status, safe_wal_size,
       CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END::text
FROM pg_replication_slots WHERE slot_name = %s
"""


def _status_on(conn: psycopg.Connection[Any], slot: str) -> SlotStatus | None:
    row = conn.execute(_STATUS_SQL, (slot,)).fetchone()
    if row is None:
        return None
    name, plugin, stype, db, active, pid, restart, confirmed, wal_status, safe, current = row
    restart_lsn, confirmed_lsn, current_lsn = _lsn(restart), _lsn(confirmed), _lsn(current)
    return SlotStatus(
        name=name, plugin=plugin, slot_type=stype, database=db, active=bool(active),
        active_pid=pid, restart_lsn=restart_lsn, confirmed_flush_lsn=confirmed_lsn,
        wal_status=wal_status, current_wal_lsn=current_lsn,
        retained_wal_bytes=(current_lsn - restart_lsn) if current_lsn and restart_lsn else None,
        confirmed_lag_bytes=(current_lsn - confirmed_lsn) if current_lsn and confirmed_lsn else None,
        safe_wal_size=None if safe is None else int(safe),
    )


class SlotManager:
    """Lifecycle of one logical slot on the source database named by `dsn`.

    Every method opens its own short connection; none is kept between calls (except the one
    `create_exporting_snapshot` hands back). Methods raise `SourceError` with a message that says
    what to fix.
    """

    def __init__(self, dsn: str, slot: str) -> None:
        self.dsn = dsn
        self.slot = validate_slot_name(slot)

    # --- status ---------------------------------------------------------------------------------

    def status(self) -> SlotStatus | None:
        """The slot's row in `pg_replication_slots`, or None when it does not exist."""
        with sql_connect(self.dsn, self.slot) as conn:
            return _status_on(conn, self.slot)

    # --- create / drop --------------------------------------------------------------------------

    def create(self) -> SlotStatus:
        """Create the slot (plugin test_decoding) with SQL. Raises `SourceError` (exists, limits,
        wal_level, privilege). Waits for transactions running at creation to finish (PostgreSQL
        needs them to build its initial snapshot)."""
        with sql_connect(self.dsn, self.slot) as conn:
            try:
                conn.execute("SELECT pg_create_logical_replication_slot(%s, %s)", (self.slot, PLUGIN))
            except psycopg.Error as exc:
                raise self._create_error(conn, exc) from exc
            st = _status_on(conn, self.slot)
        assert st is not None
        log.info("created replication slot %s at %s", self.slot, st.confirmed_flush_lsn)
        return st

    def create_exporting_snapshot(self) -> tuple[psycopg.Connection[Any], str, Lsn]:
        """Create the slot on a replication connection and export its snapshot.

        Returns `(conn, snapshot_name, consistent_point)`. The snapshot stays usable
        (`SET TRANSACTION SNAPSHOT '<name>'` in a REPEATABLE READ transaction on other connections)
        only while `conn` stays open and runs no other command: the caller closes it once every
        snapshot reader has imported it. Changes committed after `consistent_point` come from
        the slot; everything before is in the snapshot.
        """
        conn = replication_connect(self.dsn, self.slot)
        try:
            row = conn.execute(
                f"CREATE_REPLICATION_SLOT {quote_slot(self.slot)} LOGICAL {PLUGIN} EXPORT_SNAPSHOT"
            ).fetchone()
        except psycopg.Error as exc:
            conn.close()
            with sql_connect(self.dsn, self.slot) as sql:
                raise self._create_error(sql, exc) from exc
        assert row is not None
        _name, consistent, snapshot, _plugin = row
        log.info("created replication slot %s at %s exporting snapshot %s", self.slot, consistent, snapshot)
        return conn, str(snapshot), Lsn.parse(str(consistent))

    def _create_error(self, conn: psycopg.Connection[Any], exc: psycopg.Error) -> SourceError:
        if isinstance(exc, pg_errors.DuplicateObject):
            return SourceError(f"replication slot {self.slot!r} already exists", slot=self.slot)
        failed = [c for c in self._checks_on(conn) if not c.ok]
        if failed:
            return SourceError(failed[0].detail, slot=self.slot, check=failed[0].name)
        return SourceError(f"cannot create replication slot {self.slot!r}: {str(exc).strip()}",
                           slot=self.slot, sqlstate=exc.sqlstate)

    def drop(self) -> bool:
        """Drop the slot. Returns False when it did not exist. Raises `SourceError` when it is
        active in another session (naming the pid)."""
        with sql_connect(self.dsn, self.slot) as conn:
            st = _status_on(conn, self.slot)
            if st is None:
                return False
            try:
                conn.execute("SELECT pg_drop_replication_slot(%s)", (self.slot,))
            except pg_errors.ObjectInUse as exc:
                st = _status_on(conn, self.slot)
                raise SourceError(slot_active_message(self.slot, st.active_pid if st else None),
                                  slot=self.slot) from exc
            except pg_errors.UndefinedObject:
                return False
            except psycopg.Error as exc:
                raise SourceError(f"cannot drop replication slot: {str(exc).strip()}",
                                  slot=self.slot, sqlstate=exc.sqlstate) from exc
        log.info("dropped replication slot %s", self.slot)
        return True

    def ensure(self) -> SlotStatus:
        """Called at producer start: run the preflight checks, create the slot if missing.

        Returns the slot's status. Raises `SourceError` naming the first failed check.
        """
        self.check_or_raise()
        st = self.status()
        if st is not None:
            return st
        try:
            return self.create()
        except SourceError:
            st = self.status()  # created concurrently: validate what is there
            if st is None:
                raise
            self.check_or_raise()
            return st

    # --- preflight ------------------------------------------------------------------------------

    def preflight(self) -> list[Check]:
        """Every check, passed or failed, in order. Never raises for a failed check; a database
        that cannot be reached gives a single failed `connect` check."""
        try:
            conn = sql_connect(self.dsn, self.slot)
        except SourceError as exc:
            return [Check("connect", False, exc.message)]
        with conn:
            return [Check("connect", True, f"connected to database {conn.info.dbname!r}"),
                    *self._checks_on(conn)]

    def check_or_raise(self) -> list[Check]:
        """Run `preflight()`; raise `SourceError` with every failed check's detail when one fails.
        Returns the checks when all pass."""
        checks = self.preflight()
        failed = [c for c in checks if not c.ok]
        if failed:
            raise SourceError("; ".join(c.detail for c in failed), slot=self.slot,
                              checks=",".join(c.name for c in failed))
        return checks

    def _checks_on(self, conn: psycopg.Connection[Any]) -> list[Check]:
        checks: list[Check] = []
        wal_level, max_slots, role, rolrepl, rolsuper, database = conn.execute(
            "SELECT current_setting('wal_level'), current_setting('max_replication_slots')::int,"
            " current_user::text, r.rolreplication, r.rolsuper, current_database()::text"
            " FROM pg_roles r WHERE r.rolname = current_user"
        ).fetchone() or ("?", 0, "?", False, False, "?")
        checks.append(Check("wal_level", wal_level == "logical",
                            "wal_level = logical" if wal_level == "logical" else wal_level_message(wal_level)))
        has_repl = bool(rolrepl or rolsuper)
        checks.append(Check("replication_privilege", has_repl,
                            f"role {role!r} may replicate" if has_repl else replication_privilege_message(role)))
        st = _status_on(conn, self.slot)
        if st is None:
            row = conn.execute("SELECT count(*) FROM pg_replication_slots").fetchone()
            used = int(row[0]) if row else 0
            free = used < max_slots
            checks.append(Check("slot_capacity", free,
                                f"slot {self.slot!r} missing, will be created ({used} of {max_slots} slots used)"
                                if free else slots_exhausted_message(used, max_slots)))
            return checks
        plugin_ok = st.slot_type == "logical" and st.plugin == PLUGIN
        checks.append(Check("slot_plugin", plugin_ok,
                            f"slot {self.slot!r} uses {PLUGIN}" if plugin_ok
                            else plugin_mismatch_message(self.slot, st.plugin, st.slot_type)))
        if st.slot_type == "logical":
            db_ok = st.database == database
            checks.append(Check("slot_database", db_ok,
                                f"slot {self.slot!r} is in database {database!r}" if db_ok
                                else wrong_database_message(self.slot, st.database, database)))
        checks.append(Check("slot_active", not st.active,
                            f"slot {self.slot!r} is not in use" if not st.active
                            else slot_active_message(self.slot, st.active_pid)))
        lost = st.wal_status == "lost"
        if lost:
            detail = wal_lost_message(self.slot)
        elif st.wal_status == "unreserved":
            detail = (f"slot {self.slot!r} wal_status 'unreserved': its WAL exceeds max_slot_wal_keep_size "
                      f"and will be removed at the next checkpoint unless the bridge catches up")
            log.warning("%s", detail)
        else:
            detail = f"slot {self.slot!r} wal_status {st.wal_status!r}"
        checks.append(Check("slot_wal_status", not lost, detail))
        return checks


def emit_heartbeat(conn: psycopg.Connection[Any]) -> Lsn:
    """Write a non-transactional logical message (`bridge.heartbeat`, content: now in ISO 8601).

    Called every `heartbeat_interval_s` by the producer on a plain SQL connection to the source
    database, so the slot sees a change even when no replicated table is written and can advance.
    Returns the LSN `pg_logical_emit_message` reports (the end of the message record), which is
    also the LSN decoding reports for the message line. Use an autocommit connection.
    Raises `SourceError`.
    """
    now = datetime.now(UTC).isoformat()
    try:
        row = conn.execute("SELECT pg_logical_emit_message(false, %s, %s)::text",
                           (HEARTBEAT_PREFIX, now)).fetchone()
    except psycopg.Error as exc:
        raise SourceError(f"cannot emit heartbeat: {str(exc).strip()}", sqlstate=exc.sqlstate) from exc
    assert row is not None
    return Lsn.parse(row[0])
