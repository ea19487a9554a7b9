"""The snapshot's native path against the reference, byte for byte, on a real PostgreSQL.

For one table, the reference (`TableReader` keyset chunks of `::text` values → `Router.records`
op `r`) and the native path (`NativeTableReader`: binary COPY chunks transcoded in Rust) read
the same rows inside one REPEATABLE READ transaction, with the same stamp and seq numbering;
their records (partition, framed key, framed envelope) and the keyset's last keys must be
equal. A table with every supported type (NULLs, arrays with NULL elements, multi-dimensional
and non-1 lower bounds, numerics of big scale, negative and NaN, infinities, BC dates, unicode,
identifiers needing quotes), and hypothesis-generated tables and values.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from bridge.codec import MemorySchemaStore, Stamp, TableCodec
from bridge.errors import SourceError
from bridge.events import ChangeEvent, Op, Position
from bridge.lsn import Lsn
from bridge.produce.router import Router
from bridge.relation import Relation
from bridge.source.catalog import Catalog
from bridge.source.native_snapshot import NativeTableReader, copy_out
from bridge.source.slot import sql_connect
from bridge.source.snapshot import TableReader, begin_snapshot_transaction

STAMP = Stamp(0x16B374D848, 0, None, True, 1_763_000_000_123)
PARTITIONS = 3

Records = list[tuple[int, bytes | None, bytes]]


@pytest.fixture
def conn(source_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    c = sql_connect(source_dsn)
    c.execute("CREATE TYPE public.mood AS ENUM ('sad', 'ok', 'happy it''s')")
    yield c
    c.close()


def _codec(rel: Relation) -> TableCodec:
    return TableCodec(rel, MemorySchemaStore(), db="app", topic_prefix="t")


def reference(conn: psycopg.Connection[Any], rel: Relation, codec: TableCodec, chunk_rows: int
              ) -> tuple[Records, list[list[str] | None]]:
    router = Router(codec_for=lambda r: codec, open_topic=lambda s, t: ("topic", PARTITIONS))
    out: Records = []
    keys: list[list[str] | None] = []
    for rows, last in TableReader(rel, chunk_rows).chunks(conn, None):
        keys.append(last)
        for row in rows:
            ev = ChangeEvent(relation=rel, op=Op.READ, position=Position(Lsn(STAMP.commit_lsn), len(out)), xid=0,
                             commit_ts_us=None, before=None, after=row, snapshot=True)
            out.extend(router.records(ev, STAMP)[1])
    return out, keys


def native(conn: psycopg.Connection[Any], rel: Relation, codec: TableCodec, chunk_rows: int
           ) -> tuple[Records, list[list[str] | None], int]:
    reader = NativeTableReader.plan(rel, codec, PARTITIONS, chunk_rows)
    assert reader is not None, "the native path does not cover the table"
    out: Records = []
    keys: list[list[str] | None] = []
    if not rel.primary_key:
        for chunk in reader.scan(conn, 0, lambda: STAMP):
            assert chunk is not None, "a miss"
            out += chunk[1]
            keys.append(None)
        return out, keys, reader.misses
    last: list[str] | None = None
    while True:
        got = reader.read_chunk(conn, last, len(out), STAMP)
        assert got is not None, "a miss"
        records, n, last = got
        if n == 0:
            break
        out += records
        keys.append(last)
        if n < chunk_rows:
            break
    return out, keys, reader.misses


def compare(conn: psycopg.Connection[Any], schema: str, table: str, chunk_rows: int = 4) -> int:
    """Both paths over `schema.table`; returns the record count."""
    rel = Catalog(conn).relation(schema, table)
    codec = _codec(rel)
    begin_snapshot_transaction(conn, None)
    try:
        ref, ref_keys = reference(conn, rel, codec, chunk_rows)
        nat, nat_keys, misses = native(conn, rel, codec, chunk_rows)
    finally:
        conn.execute("ROLLBACK")
    assert misses == 0
    assert len(nat) == len(ref)
    for i, (a, b) in enumerate(zip(nat, ref, strict=True)):
        assert a == b, f"record {i}: native {a!r} != reference {b!r}"
    if rel.primary_key:
        assert nat_keys == ref_keys
    return len(ref)


EVERY_TYPE = """
CREATE TABLE public."Odd ""Name"" tbl" (
  "Id" int PRIMARY KEY, "my col" int2, i8 int8, o oid, f4 float4, f8 float8, b bool, by bytea,
  d date, tm time, ts timestamp, tz timestamptz, n numeric(12,3), nbig numeric(60,30), nu numeric,
  t text, vc varchar(10), bc char(5), nm name, u uuid, j json, jb jsonb,
  ia int4[], ta text[], ma int[][], na numeric(8,2)[], bca char(3)[], ua uuid[], tza timestamptz[],
  iv interval, ip inet, e public.mood, iva interval[], ea public.mood[], bx box[], mo money, ch "char",
  f8a float8[], ba bool[], da date[], vca varchar(4)[]
)"""

ROWS = [
    "(1, 1, 9223372036854775807, 4294967295, 1.5, 0.1, true, '\\x00ff', '2024-02-29', '24:00:00',"
    " '2024-01-01 12:34:56.789', '2024-01-01 12:00:00+05:30', 123456789.123, "
    " '-123456789012345678901234567890.123456789012345678901234567891', '1e-40',"
    " 'ünïcødé ☃ 𝄞', 'ab''c', 'ab', 'name', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{\"a\": [1, 2]}',"
    " '{\"b\": null, \"a\": 1.50}', '{1,NULL,3}', '{\"a b\",NULL,\"NULL\",\"c\\\"d\",\"\"}', '{{1,2},{3,NULL}}',"
    " '{1.5,NULL,-2.25}', '{a,NULL}', '{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}', '{infinity,2024-01-01 00:00:00+00}',"
    " '1 day 02:03:04', '192.168.0.1', 'happy it''s', '{P1D,NULL}', '{sad,\"happy it''s\"}', '{(1,1),(0,0);(2,2),(1,1)}',"
    " 12.34, 'x', '{NaN,Infinity,-Infinity,-0}', '{t,f,NULL}', '{infinity,-infinity,2000-01-01}', '{abcd,\"x,y\"}')",
    "(2, -32768, -9223372036854775808, 0, 'NaN', '-Infinity', false, '\\x', '-infinity', '00:00:00',"
    " 'infinity', '-infinity', 'NaN', 0, '-Infinity', '', '', '', '', '00000000-0000-0000-0000-000000000000', 'null', '[]',"
    " '{}', '{}', '{}', '{}', '{}', '{}', '{}', 'PT0S', '::1', 'sad', '{}', '{}', '{}', -1, '\\001', '{}', '{}', '{}', '{}')",
    "(3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '0044-03-15 BC', '23:59:59.999999', '0001-01-01 00:00:00 BC',"
    " '1900-06-30 23:59:60', -0.001, 0.000000000000000000000000000001, -12.5, NULL, NULL, NULL, NULL, NULL, NULL,"
    " NULL, '[0:1]={7,8}', NULL, '{{7}}', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,"
    " NULL, NULL, NULL, NULL, NULL)",
    "(4, 7, 7, 7, 3.4028235e38, 1.7976931348623157e308, true, '\\xdeadbeef', '5874897-12-31', '12:00:00.5',"
    " '200000-12-31 23:59:59.999999', '1970-01-01 00:00:00+00', 999999999.999, 1, '123456789012345678901234567890123456789012',"
    " 'tab\tnew\nline', 'xxxxxxxxxx', 'a', 'x', NULL, '\"\"', '{\"deep\": {\"x\": [true, false]}}', '{2147483647}',"
    " '{\"\\\\\\\\\"}', '{{NULL,NULL}}', '{999999.99}', '{\" \"}', '{}', '{\"1999-12-31 23:59:59.5+00\"}', NULL, NULL, NULL,"
    " NULL, NULL, NULL, NULL, NULL, '{1e-310}', NULL, NULL, NULL)",
]


def test_every_supported_type_native_equals_reference(conn: psycopg.Connection[Any]) -> None:
    conn.execute(EVERY_TYPE)
    for row in ROWS:
        conn.execute(f'INSERT INTO public."Odd ""Name"" tbl" VALUES {row}')
    for i in range(5, 40):  # more chunks, over partitions
        conn.execute(f'INSERT INTO public."Odd ""Name"" tbl" ("Id", t, n) VALUES ({i * 1000}, \'r{i}\', {i}.5)')
    assert compare(conn, "public", 'Odd "Name" tbl', chunk_rows=3) == 39
    assert compare(conn, "public", 'Odd "Name" tbl', chunk_rows=1000) == 39


def test_keys_of_every_shape_and_keyless(conn: psycopg.Connection[Any]) -> None:
    conn.execute("CREATE TABLE public.ck (a text, b numeric(10,2), c timestamptz, u uuid, v int, "
                 "PRIMARY KEY (a, b, c, u))")
    conn.execute("INSERT INTO public.ck SELECT 'k' || (g % 7), g / 3.0, timestamptz '2024-01-01' + g * interval '1 h',"
                 " md5(g::text)::uuid, g FROM generate_series(1, 200) g")
    assert compare(conn, "public", "ck", chunk_rows=9) == 200
    conn.execute("CREATE TABLE public.nokey (v int, t text[], n numeric(5,1))")
    conn.execute("INSERT INTO public.nokey SELECT g, ARRAY['a' || g, NULL], g / 10.0 FROM generate_series(1, 50) g")
    assert compare(conn, "public", "nokey", chunk_rows=7) == 50
    conn.execute("CREATE TABLE public.empty (id int PRIMARY KEY)")
    assert compare(conn, "public", "empty") == 0


def test_a_miss_is_a_chunk_for_the_reference(conn: psycopg.Connection[Any]) -> None:
    """An array value of another depth than its column's: the native path misses (the reference
    raises its own error for it), never writes other bytes."""
    conn.execute("CREATE TABLE public.deep (id int PRIMARY KEY, a int[])")
    conn.execute("INSERT INTO public.deep VALUES (1, '{1}'), (2, '{{1},{2}}')")
    rel = Catalog(conn).relation("public", "deep")
    reader = NativeTableReader.plan(rel, _codec(rel), PARTITIONS, 10)
    assert reader is not None
    begin_snapshot_transaction(conn, None)
    try:
        assert reader.read_chunk(conn, None, 0, STAMP) is None
        assert reader.misses == 1
        rows, last = TableReader(rel, 10).read_chunk(conn, None)  # the connection is still usable
        assert len(rows) == 2 and last == ["2"]
    finally:
        conn.execute("ROLLBACK")


# -- hypothesis: random tables and values ---------------------------------------------------------

_TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=12)
_TS = st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31))
_NUMERIC = st.decimals(min_value=Decimal("-99999999.99"), max_value=Decimal("99999999.99"), places=2,
                       allow_nan=False)
_BIG = st.decimals(allow_nan=True, allow_infinity=False, places=12,
                   min_value=Decimal("-1e27"), max_value=Decimal("1e27")).map(
                       lambda d: Decimal("NaN") if d.is_nan() else d)  # PostgreSQL has no -NaN
_JSON = st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6) | _TEXT,
                     lambda c: st.lists(c, max_size=3) | st.dictionaries(_TEXT, c, max_size=3), max_leaves=6)

# type → values (psycopg adapts them; the INSERT casts to the type)
TYPES: dict[str, st.SearchStrategy[Any]] = {
    "int2": st.integers(-(2**15), 2**15 - 1),
    "int4": st.integers(-(2**31), 2**31 - 1),
    "int8": st.integers(-(2**63), 2**63 - 1),
    "float4": st.floats(width=32),
    "float8": st.floats(),
    "bool": st.booleans(),
    "bytea": st.binary(max_size=12),
    "date": st.dates(),
    "time": st.times(),
    "timestamp": _TS,
    "timestamptz": _TS.map(lambda v: v.replace(tzinfo=dt.UTC)),
    "numeric(10,2)": _NUMERIC,
    "numeric(40,12)": _BIG,
    "numeric": _BIG,
    "text": _TEXT,
    "varchar(12)": _TEXT,
    "char(4)": st.text("ab ✓", max_size=4),
    "uuid": st.uuids(),
    "jsonb": _JSON.map(json.dumps),
    "json": _JSON.map(json.dumps),
    "interval": st.timedeltas(min_value=dt.timedelta(days=-999), max_value=dt.timedelta(days=999)),
    "int4[]": st.lists(st.none() | st.integers(-(2**31), 2**31 - 1), max_size=4),
    "text[]": st.lists(st.none() | _TEXT, max_size=4),
    "float8[]": st.lists(st.none() | st.floats(), max_size=3),
    "numeric(6,3)[]": st.lists(st.none() | st.decimals(min_value=-999, max_value=999, places=3, allow_nan=False),
                               max_size=3),
    "timestamptz[]": st.lists(st.none() | _TS.map(lambda v: v.replace(tzinfo=dt.UTC)), max_size=3),
}
_KEY_TYPES = ["int4", "int8", "text", "uuid", "timestamptz", "numeric(10,2)", "date", "bytea"]


@st.composite
def tables(draw: st.DrawFn) -> tuple[list[str], bool, list[list[Any]], int]:
    types = draw(st.lists(st.sampled_from(sorted(TYPES)), min_size=1, max_size=6))
    keyed = draw(st.booleans())
    if keyed:
        types = [draw(st.sampled_from(_KEY_TYPES)), *types]
    rows = draw(st.lists(st.tuples(*[st.none() | TYPES[t] for t in types]).map(list), max_size=12))
    if keyed:
        seen: set[Any] = set()
        rows = [r for r in rows if r[0] is not None and not (r[0] in seen or seen.add(r[0]))]
    return types, keyed, rows, draw(st.integers(1, 5))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(tables())
def test_random_tables_native_equals_reference(conn: psycopg.Connection[Any],
                                               table: tuple[list[str], bool, list[list[Any]], int]) -> None:
    types, keyed, rows, chunk_rows = table
    conn.execute("DROP TABLE IF EXISTS public.rnd")
    cols = [sql.SQL("{} {}").format(sql.Identifier(f"c{i}"), sql.SQL(t)) for i, t in enumerate(types)]
    if keyed:
        cols.append(sql.SQL("PRIMARY KEY (c0)"))
    conn.execute(sql.SQL("CREATE TABLE public.rnd ({})").format(sql.SQL(", ").join(cols)))
    insert = sql.SQL("INSERT INTO public.rnd VALUES ({})").format(
        sql.SQL(", ").join(sql.SQL("%s::{}").format(sql.SQL(t)) for t in types))
    for row in rows:
        conn.execute(insert, row)
    assert compare(conn, "public", "rnd", chunk_rows) == len(rows)


def test_copy_out_errors_and_early_close_leave_the_connection_usable(conn: psycopg.Connection[Any]) -> None:
    """`copy_out` reads libpq directly: a COPY failing on the server (before or while sending
    rows) raises SourceError; one closed early is cancelled and drained; either way the next
    statement runs."""
    with pytest.raises(SourceError, match="COPY failed"):
        list(copy_out(conn, b"COPY (SELECT * FROM public.nowhere) TO STDOUT (FORMAT BINARY)"))
    assert conn.execute("SELECT 1").fetchone() == (1,)
    failing = b"COPY (SELECT 1 / (3000 - g) FROM generate_series(1, 5000) g) TO STDOUT (FORMAT BINARY)"
    with pytest.raises(SourceError, match="division by zero"):
        list(copy_out(conn, failing))
    assert conn.execute("SELECT 2").fetchone() == (2,)
    many = copy_out(conn, b"COPY (SELECT g FROM generate_series(1, 100000) g) TO STDOUT (FORMAT BINARY)")
    first = next(many)
    assert len(first) == 256
    many.close()
    assert conn.execute("SELECT 3").fetchone() == (3,)
    assert sum(len(b) for b in copy_out(conn, b"COPY (SELECT 1) TO STDOUT (FORMAT BINARY)")) == 2  # row + trailer
