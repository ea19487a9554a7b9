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
