"""Running the sink's statements: one statement per call, always over the extended protocol.

psycopg sends a statement without parameters over the simple query protocol, which runs every
statement in the text. Every statement the sink runs goes through `run` instead, which asks for
binary results and so forces the extended protocol (Parse/Bind/Execute): the server refuses a
second statement there ("cannot insert multiple commands into a prepared statement"), whatever a
name in it might contain. The statements run here return no rows, or rows psycopg reads from
binary as well as from text.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

Statement = str | sql.SQL | sql.Composed


def run(on: psycopg.Connection[Any] | psycopg.Cursor[Any], statement: Statement,
        params: tuple[Any, ...] = ()) -> psycopg.Cursor[Any]:
    """Execute one statement with `params` over the extended protocol; returns the cursor."""
    return on.execute(statement, params, binary=True)


# pg_advisory_xact_lock key that serialises the sinks' DDL on one target ('pgbrddl' as a bigint).
DDL_LOCK_KEY = 0x706762726464_6C


def lock_ddl(conn: psycopg.Connection[Any]) -> None:
    """Take the target's DDL lock until the current transaction ends.

    Every sink of a group may meet a new table (or a fresh target) at the same moment. Two
    `CREATE … IF NOT EXISTS` or `ALTER … ADD COLUMN` of the same object race on the catalog's
    unique indexes, and the loser fails (`23505` on `pg_type`, `42701`), which would reject a
    table's records. Each sink takes this lock before it changes the target's schema and then
    looks again at what exists, so the second one finds the first one's work done."""
    run(conn, "SELECT pg_advisory_xact_lock(%s)", (DDL_LOCK_KEY,))
