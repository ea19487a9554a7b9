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


# -- catalog queries of the target (bridge.sink.target) ----------------------------------------

COLUMNS_SQL = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod), coalesce(et.typname, t.typname),
       coalesce(et.typcategory, t.typcategory), a.atttypmod, et.oid IS NOT NULL
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_type et ON t.typcategory = 'A' AND et.oid = t.typelem
WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""

PRIMARY_KEY_SQL = """
SELECT c.conname::text, array_agg(a.attname::text ORDER BY k.ord)
FROM pg_constraint c
CROSS JOIN unnest(c.conkey) WITH ORDINALITY k(attnum, ord)
JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum
WHERE c.conrelid = %s AND c.contype = 'p'
GROUP BY c.conname
"""

UNIQUE_SQL = """
SELECT array_agg(a.attname::text)
FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
WHERE i.indrelid = %s AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL
GROUP BY i.indexrelid
"""
