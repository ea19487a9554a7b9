"""The parser against real test_decoding output from PostgreSQL.

Tables with awkward names and types get inserts, updates (plain, key change, REPLICA IDENTITY
FULL, unchanged TOAST), deletes, truncates and logical messages; every line the slot prints must
parse to exactly what was written. Expected values are the server's own text output of the rows
(RETURNING, in the capture session's settings), so nothing here guesses a format.
"""

from __future__ import annotations

import random
import re
import string
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from bridge.source.session import libpq_options
from bridge.source.test_decoding import (
    UNCHANGED,
    BeginLine,
    ChangeLine,
    CommitLine,
    Line,
    MessageLine,
    RawTuple,
    RawValue,
    TruncateLine,
    parse_line,
)

LONG_COL = "c" * 63
HOSTILE = "it's ]: ' new-tuple: x[text]:'y' \"q\" \n second line \t tab \x01 ü 😀 ''"

DDL = f"""
CREATE SCHEMA "My Schema";
CREATE TYPE "My Schema"."My Enum" AS ENUM ('a', 'b c', 'it''s');
CREATE DOMAIN "My Schema".posint AS integer CHECK (VALUE > 0);
CREATE TABLE "My Schema"."a.b" (
    id integer PRIMARY KEY,
    "table" text,
    "INSERT" integer,
    "null" text,
    "a""b" varchar(20),
    "x]:y [z" numeric(12,2),
    n numeric,
    r real,
    d double precision,
    big bigint,
    small smallint,
    o oid,
    b boolean,
    bits bit(4),
    vb varbit,
    ts timestamptz,
    tsn timestamp(3),
    dt date,
    tm time,
    iv interval,
    u uuid,
    j jsonb,
    arr integer[],
    tarr text[],
    e "My Schema"."My Enum",
    earr "My Schema"."My Enum"[],
    dom "My Schema".posint,
    by bytea,
    ch char(3),
    "ünï" text,
    {LONG_COL} text,
    m money,
    ip inet,
    pt point
);
CREATE TABLE public."a""b" (id integer, v text, w text);
ALTER TABLE public."a""b" REPLICA IDENTITY FULL;
CREATE TABLE public.toast (id integer PRIMARY KEY, small integer, big text);
ALTER TABLE public.toast ALTER COLUMN big SET STORAGE EXTERNAL;
"""

AB = '"My Schema"."a.b"'
FULL = 'public."a""b"'
TOAST = "public.toast"

ROW1 = {
    "id": 1, "table": HOSTILE, "INSERT": -7, "null": "null", "a\"b": "", "x]:y [z": "12.5", "n": "NaN",
    "r": "Infinity", "d": "-Infinity", "big": -(2**63), "small": 32767, "o": 4294967295, "b": True,
    "bits": "0101", "vb": "", "ts": "2026-11-23 23:10:21.123456+00", "tsn": "infinity", "dt": "0044-03-15 BC",
    "tm": "23:59:59.999999", "iv": "1 year 2 mons -3 days 04:05:06.5", "u": "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
    "j": '{"k": "v\'\\"", "n": [1, null]}', "arr": "{1,NULL,3}", "tarr": '{"a b",NULL,"\\"",\'}',
    "e": "it's", "earr": '{a,"b c"}', "dom": 5, "by": "\\x00ff27", "ch": "a", "ünï": "ünï", LONG_COL: "long",
    "m": "12.34", "ip": "10.1.2.3", "pt": "(1.5,-2)",
}


def _sql_literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def _qi(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class Db:
    """A capture-settings connection that reads values as the server's text output."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self._types: dict[str, list[tuple[str, str, str]]] = {}

    def rows(self, sql: str) -> list[dict[str, str | None]]:
        """Run `sql`; its rows as {column: text output or None}."""
        cur = self.conn.execute(sql.encode())  # bytes: no client-side % handling
        res = cur.pgresult
        if res is None or cur.description is None:
            return []
        names = [d.name for d in cur.description]
        return [{names[c]: (None if (v := res.get_value(r, c)) is None else v.decode())
                 for c in range(res.nfields)} for r in range(res.ntuples)]

    def columns(self, rel: str) -> list[tuple[str, str, str]]:
        """(name, format_type_be text, type name) in attribute order: what test_decoding prints."""
        if rel not in self._types:
            self._types[rel] = [
                (r["attname"] or "", r["t"] or "", r["typname"] or "")
                for r in self.rows(
                    "SELECT a.attname, format_type(a.atttypid, NULL) AS t, ty.typname FROM pg_attribute a "
                    f"JOIN pg_type ty ON ty.oid = a.atttypid WHERE a.attrelid = {_sql_literal(rel)}::regclass "
                    "AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum")
            ]
        return self._types[rel]

    def tuple(self, rel: str, row: dict[str, str | None], *, skip_nulls: bool = False,
              only: set[str] | None = None, unchanged: frozenset[str] = frozenset()) -> RawTuple:
        """The RawTuple test_decoding prints for `row` (the server's text output)."""
        names: list[str] = []
        types: list[str] = []
        values: list[RawValue] = []
        for name, typ, typname in self.columns(rel):
            if only is not None and name not in only:
                continue
            text = row[name]
            if skip_nulls and text is None:
                continue
            value: RawValue = text
            if name in unchanged:
                value = UNCHANGED
            elif typname == "bool" and text is not None:
                value = {"t": "true", "f": "false"}[text]
            names.append(name)
            types.append(typ)
            values.append(value)
        return RawTuple(names, types, values)

    def insert(self, rel: str, row: dict[str, Any]) -> dict[str, str | None]:
        cols = ", ".join(_qi(k) for k in row)
        vals = ", ".join(_sql_literal(v) for v in row.values())
        return self.rows(f"INSERT INTO {rel} ({cols}) VALUES ({vals}) RETURNING *")[0]


@pytest.fixture
def db(source_dsn: str) -> Iterator[Db]:
    with psycopg.connect(source_dsn, autocommit=True, options=libpq_options()) as conn:
        yield Db(conn)


def _split(name: str) -> tuple[str, str]:
    schema, _, table = name.partition(".")
    return schema.strip('"').replace('""', '"'), table.strip('"').replace('""', '"')


def test_every_line_parses_to_what_was_written(db: Db) -> None:
    for stmt in DDL.split(";\n"):
        if stmt.strip():
            db.rows(stmt)
    slot = f"td_{uuid.uuid4().hex[:12]}"
    db.rows(f"SELECT pg_create_logical_replication_slot('{slot}', 'test_decoding')")
    try:
        expected = _write_changes(db)
        lines = db.rows(
            f"SELECT lsn::text, xid::text, data FROM pg_logical_slot_peek_changes('{slot}', NULL, NULL, "
            "'include-xids', '1', 'include-timestamp', '1', 'skip-empty-xacts', '1')")
    finally:
        db.rows(f"SELECT pg_drop_replication_slot('{slot}')")

    parsed: list[Line] = []
    open_xid: int | None = None
    for row in lines:
        data = row["data"]
        assert data is not None
        line = parse_line(data)  # a DecodeError here fails the test with the line in it
        if isinstance(line, BeginLine):
            assert open_xid is None and str(line.xid) == row["xid"]
            open_xid = line.xid
        elif isinstance(line, CommitLine):
            assert line.xid == open_xid and str(line.xid) == row["xid"]
            assert line.commit_ts is not None
            assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{1,6})?\+00", line.commit_ts), line.commit_ts
            open_xid = None
        else:
            parsed.append(line)
    assert open_xid is None
    assert len(parsed) == len(expected)
    for i, (got, want) in enumerate(zip(parsed, expected, strict=True)):
        assert got == want, f"line {i}: {lines[i]['data']!r}"


def _write_changes(db: Db) -> list[Line]:
    """Make the changes; return the non-BEGIN/COMMIT lines test_decoding must print, in order."""
    s_ab, t_ab = _split(AB)
    out: list[Line] = []

    # 1. inserts: every type with awkward values, and a row of nulls
    db.rows("BEGIN")
    r1 = db.insert(AB, ROW1)
    r2 = db.insert(AB, {"id": 2})
    db.rows("COMMIT")
    assert r1["tsn"] == "infinity" and r1["b"] == "t"
    out += [ChangeLine(s_ab, t_ab, "INSERT", db.tuple(AB, r1), None),
            ChangeLine(s_ab, t_ab, "INSERT", db.tuple(AB, r2), None)]

    # 2. updates: a plain one (no old-key), then a key change (old-key: the primary key)
    new = db.rows(f"UPDATE {AB} SET \"null\" = NULL, \"table\" = 'x''y' WHERE id = 1 RETURNING *")[0]
    out.append(ChangeLine(s_ab, t_ab, "UPDATE", db.tuple(AB, new), None))
    new = db.rows(f"UPDATE {AB} SET id = 10 WHERE id = 1 RETURNING *")[0]
    out.append(ChangeLine(s_ab, t_ab, "UPDATE", db.tuple(AB, new), db.tuple(AB, {"id": "1"}, only={"id"})))

    # 3. REPLICA IDENTITY FULL: old-key holds every non-null column of the old row
    s_f, t_f = _split(FULL)
    r = db.insert(FULL, {"id": 1, "v": "it's", "w": None})
    out.append(ChangeLine(s_f, t_f, "INSERT", db.tuple(FULL, r), None))
    new = db.rows(f"UPDATE {FULL} SET w = ' new-tuple: ' RETURNING *")[0]
    out.append(ChangeLine(s_f, t_f, "UPDATE", db.tuple(FULL, new), db.tuple(FULL, r, skip_nulls=True)))
    db.rows(f"DELETE FROM {FULL}")
    out.append(ChangeLine(s_f, t_f, "DELETE", None, db.tuple(FULL, new, skip_nulls=True)))

    # 4. TOAST: a 10 kB out-of-line value is not sent again when another column changes
    big = "".join(random.Random(7).choices(string.ascii_letters + " '", k=10_000))
    r = db.insert(TOAST, {"id": 1, "small": 1, "big": big})
    out.append(ChangeLine("public", "toast", "INSERT", db.tuple(TOAST, r), None))
    new = db.rows(f"UPDATE {TOAST} SET small = 2 RETURNING *")[0]
    out.append(ChangeLine("public", "toast", "UPDATE", db.tuple(TOAST, new, unchanged=frozenset({"big"})), None))
    new = db.rows(f"UPDATE {TOAST} SET big = big || 'x' RETURNING *")[0]
    out.append(ChangeLine("public", "toast", "UPDATE", db.tuple(TOAST, new), None))
    db.rows(f"DELETE FROM {TOAST}")
    out.append(ChangeLine("public", "toast", "DELETE", None, db.tuple(TOAST, {"id": "1"}, only={"id"})))

    # 5. deletes by primary key (nulls skipped, only the identity)
    db.rows(f"DELETE FROM {AB} WHERE id = 2")
    out.append(ChangeLine(s_ab, t_ab, "DELETE", None, db.tuple(AB, {"id": "2"}, only={"id"})))

    # 6. logical messages: in a transaction with a change, alone (printed without BEGIN/COMMIT
    #    under skip-empty-xacts) and non-transactional; prefix and content are raw
    prefix, content = "bridge, sz: 1 content:x", "hello\nworld ' ]: ü"
    db.rows("BEGIN")
    r = db.insert(TOAST, {"id": 5, "small": None, "big": "b"})
    db.rows(f"SELECT pg_logical_emit_message(true, {_sql_literal(prefix)}, {_sql_literal(content)})")
    db.rows("COMMIT")
    out += [ChangeLine("public", "toast", "INSERT", db.tuple(TOAST, r), None), MessageLine(True, prefix, content)]
    db.rows("SELECT pg_logical_emit_message(true, 'heartbeat', '')")
    out.append(MessageLine(True, "heartbeat", ""))
    db.rows("SELECT pg_logical_emit_message(false, 'nt', 'x''y')")
    out.append(MessageLine(False, "nt", "x'y"))

    # 7. truncates, with and without flags
    db.rows(f"TRUNCATE {AB}, {FULL} RESTART IDENTITY CASCADE")
    out.append(TruncateLine([_split(AB), _split(FULL)], True, True))
    db.rows(f"TRUNCATE {TOAST}")
    out.append(TruncateLine([("public", "toast")], False, False))

    # 8. the same layout many times: the parser's fast path must agree with the first parse
    for i in range(20, 25):
        r = db.insert(AB, {**ROW1, "id": i, "n": i * 1.5, "table": None if i % 2 else f"v{i}''"})
        out.append(ChangeLine(s_ab, t_ab, "INSERT", db.tuple(AB, r), None))
    return out
