"""The sink's apply side against a real PostgreSQL: types, ops, positions, DDL, dead letters."""

from __future__ import annotations

import datetime as dt
import math
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from bridge.errors import SinkError, TargetSchemaError
from bridge.events import ChangeEvent, Op, Position
from bridge.lsn import Lsn
from bridge.relation import Column, Relation
from bridge.sink.apply import Applier, KeylessTableError, RecordRejectedError, TableRejectedError
from bridge.sink.records import SinkRecord

TS_INF, TS_NINF = 2**63 - 1, -(2**63)
D_INF, D_NINF = 2**31 - 1, -(2**31)


def days(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (year 0 = 1 BC)."""
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def us(ts: dt.datetime) -> int:
    return (ts - dt.datetime(1970, 1, 1, tzinfo=ts.tzinfo)) // dt.timedelta(microseconds=1)


def col(name: str, type_name: str, base: str, **kw: Any) -> Column:
    return Column(name, type_name, base, **kw)


ORDERS = Relation("public", "orders", (
    col("id", "bigint", "int8", not_null=True),
    col("amount", "numeric(12,2)", "numeric", precision=12, scale=2),
    col("status", "text", "text"),
    col("big", "text", "text"),
), primary_key=("id",))


class Stream:
    """Builds records with increasing positions, one partition per topic."""

    def __init__(self, topic: str = "bridge.public.t", partition: int = 0, lsn: int = 1000) -> None:
        self.topic, self.partition, self.lsn, self.seq, self.offset = topic, partition, lsn, 0, 0

    def rec(self, rel: Relation, op: Op, after: tuple[Any, ...] | None = None,
            before: tuple[Any, ...] | None = None, unchanged: tuple[str, ...] = (),
            pos: Position | None = None) -> SinkRecord:
        if pos is None:
            pos = Position(Lsn(self.lsn), self.seq)
            self.seq += 1
        ch = ChangeEvent(rel, op, pos, 1, None, before, after, unchanged)
        r = SinkRecord(self.topic, self.partition, self.offset, ch)
        self.offset += 1
        return r

    def commit(self) -> None:
        self.lsn += 100
        self.seq = 0


@pytest.fixture
def applier(target_dsn: str) -> Iterator[Applier]:
    a = Applier(target_dsn)
    yield a
    a.close()


def rows(dsn: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as c:
        return c.execute(query).fetchall()


def key_row(rel: Relation, key: tuple[Any, ...]) -> tuple[Any, ...]:
    out: list[Any] = [None] * len(rel.columns)
    for k, v in zip(rel.primary_key, key, strict=True):
        out[rel.index[k]] = v
    return tuple(out)


# -- types -------------------------------------------------------------------------------------

TYPES: list[tuple[Column, list[Any], list[str | None]]] = [
    (col("i2", "smallint", "int2"), [-32768, 32767], ["-32768", "32767"]),
    (col("i4", "integer", "int4"), [-(2**31), 7], ["-2147483648", "7"]),
    (col("i8", "bigint", "int8"), [2**63 - 1, -1], ["9223372036854775807", "-1"]),
    (col("f4", "real", "float4"), [1.5, math.inf], ["1.5", "Infinity"]),
    (col("f8", "double precision", "float8"), [math.nan, -math.inf], ["NaN", "-Infinity"]),
    (col("b", "boolean", "bool"), [True, False], ["true", "false"]),
    (col("n", "numeric(10,3)", "numeric", precision=10, scale=3), [Decimal("-1234567.891"), Decimal("NaN")],
     ["-1234567.891", "NaN"]),
    (col("nu", "numeric", "numeric"), ["12.500", "Infinity"], ["12.500", "Infinity"]),
    (col("t", "text", "text"), ["héllo ✓ 😀 \t\n\\ '\"", ""], ["héllo ✓ 😀 \t\n\\ '\"", ""]),
    (col("vc", "character varying(5)", "varchar", length=5), ["abcde", "x"], ["abcde", "x"]),
    (col("ch", "character(3)", "bpchar", length=3), ["ab ", "xyz"], ["ab", "xyz"]),
    (col("by", "bytea", "bytea"), [b"\x00\xff\x10", b""], ["\\x00ff10", "\\x"]),
    (col("d", "date", "date"), [days(2024, 2, 29), D_INF], ["2024-02-29", "infinity"]),
    (col("dbc", "date", "date"), [days(-43, 3, 15), D_NINF], ["0044-03-15 BC", "-infinity"]),
    (col("tm", "time without time zone", "time"), [0, 86_400_000_000], ["00:00:00", "24:00:00"]),
    (col("ts", "timestamp without time zone", "timestamp"),
     [us(dt.datetime(2001, 2, 3, 4, 5, 6, 789)), TS_NINF], ["2001-02-03 04:05:06.000789", "-infinity"]),
    (col("tz", "timestamp with time zone", "timestamptz"),
     [us(dt.datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC)), TS_INF],
     ["1969-12-31 23:59:59.999999+00", "infinity"]),
    (col("tzbc", "timestamp with time zone", "timestamptz"), [days(-99, 1, 1) * 86_400_000_000, 0],
     ["0100-01-01 00:00:00+00 BC", "1970-01-01 00:00:00+00"]),
    (col("u", "uuid", "uuid"), ["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", None],
     ["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", None]),
    (col("j", "json", "json"), ['{"b": 1,  "a": [1]}', "null"], ['{"b": 1,  "a": [1]}', "null"]),
    (col("jb", "jsonb", "jsonb"), ['{"b": 1, "a": "é"}', "[]"], ['{"a": "é", "b": 1}', "[]"]),
    (col("iv", "interval", "interval"), ["P1Y2M3DT4H5M6S", "PT0S"], ["1 year 2 mons 3 days 04:05:06", "00:00:00"]),
    (col("ip", "inet", "inet"), ["10.0.0.1/8", "::1"], ["10.0.0.1/8", "::1/128"]),
    (col("mood", "mood", "mood", kind="e"), ["happy", "sad"], ["happy", "sad"]),
    (col("gone", "nosuchtype", "nosuchtype", kind="e"), ["whatever", "x"], ["whatever", "x"]),
    (col("ai", "integer[]", "int4", ndims=1), [[1, None, 3], []], ["{1,NULL,3}", "{}"]),
    (col("at", "text[]", "text", ndims=2), [[["a", "b c"], [None, '"q"']], [["é"]]],
     ['{{a,"b c"},{NULL,"\\"q\\""}}', "{{é}}"]),
    (col("ad", "date[]", "date", ndims=1), [[days(2000, 1, 1), D_INF], [None]], ["{2000-01-01,infinity}", "{NULL}"]),
    (col("an", "numeric(5,2)[]", "numeric", ndims=1, precision=5, scale=2), [[Decimal("1.50"), None], [Decimal("NaN")]],
     ["{1.50,NULL}", "{NaN}"]),
    (col("atz", "timestamp with time zone[]", "timestamptz", ndims=1), [[0, TS_INF], []],
     ['{"1970-01-01 00:00:00+00",infinity}', "{}"]),
    (col("ab", "boolean[]", "bool", ndims=1), [[True, False, None], [True]], ["{t,f,NULL}", "{t}"]),
    (col("aby", "bytea[]", "bytea", ndims=1), [[b"\x01", None], []], ['{"\\\\x01",NULL}', "{}"]),
    (col("nul", "text", "text"), [None, None], [None, None]),
]


@pytest.mark.parametrize("direct", [True, False], ids=["copy-into-target", "staged-upsert"])
def test_every_type_round_trips(target_dsn: str, applier: Applier, direct: bool) -> None:
    """Inserts of new rows are COPied straight into the target when every column's binary form
    fits; updates (and tables with other types) go through staging. Both must give the same values."""
    with psycopg.connect(target_dsn, autocommit=True) as c:
        c.execute("CREATE TYPE mood AS ENUM ('happy', 'sad')")
    types = [t for t in TYPES if not (direct and t[0].name in ("iv", "ip", "an"))]  # no binary form here
    cols = (col("id", "integer", "int4", not_null=True), *(c for c, _, _ in types))
    rel = Relation("public", "alltypes", cols, primary_key=("id",))
    s = Stream()
    op = Op.INSERT if direct else Op.UPDATE
    recs = [s.rec(rel, op, (k, *(vals[k] for _, vals, _ in types))) for k in range(2)]
    applier.apply(recs)
    (plan,) = applier._tables._plans.values()
    assert (plan.direct_encoder is not None) == direct
    names = ", ".join(f'"{c.name}"::text' for c, _, _ in types)
    with psycopg.connect(target_dsn) as c:
        c.execute("SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres'")
        got = c.execute(f"SELECT {names} FROM alltypes ORDER BY id").fetchall()
        gone_type = c.execute("SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
                              " WHERE attrelid = 'alltypes'::regclass AND attname = 'gone'").fetchone()
    for k in range(2):
        for (column, _, expected), value in zip(types, got[k], strict=True):
            assert value == expected[k], (column.name, k)
    assert gone_type == ("text",)


def test_insert_of_a_row_already_in_the_target_upserts(target_dsn: str, applier: Applier) -> None:
    """A snapshot read and a streamed insert of the same row: the direct COPY falls back to upsert."""
    s = Stream()
    applier.apply([s.rec(ORDERS, Op.READ, (1, Decimal("1"), "snap", "x"))])
    s.commit()
    applier.apply([s.rec(ORDERS, Op.INSERT, (1, Decimal("2"), "stream", "y")), s.rec(ORDERS, Op.INSERT, (2, Decimal("3"), "new", None))])
    assert rows(target_dsn, "SELECT * FROM orders ORDER BY id") == [
        (1, Decimal("2.00"), "stream", "y"), (2, Decimal("3.00"), "new", None)]


# -- ops ---------------------------------------------------------------------------------------

def test_insert_update_delete_truncate_in_one_batch(target_dsn: str, applier: Applier) -> None:
    s = Stream()
    r = ORDERS
    recs = [
        s.rec(r, Op.INSERT, (1, Decimal("1.00"), "a", "x")),
        s.rec(r, Op.INSERT, (2, Decimal("2.00"), "b", "x")),
        s.rec(r, Op.INSERT, (3, Decimal("3.00"), "c", "x")),
        s.rec(r, Op.UPDATE, (1, Decimal("1.10"), "a2", "x")),
        s.rec(r, Op.DELETE, None, key_row(r, (2,))),
    ]
    s.commit()
    recs += [s.rec(r, Op.TRUNCATE)]
    s.commit()
    recs += [
        s.rec(r, Op.INSERT, (4, Decimal("4.00"), "d", "x")),
        s.rec(r, Op.INSERT, (5, Decimal("5.00"), "e", "x")),
        s.rec(r, Op.UPDATE, (4, Decimal("4.40"), "d2", "y")),
        s.rec(r, Op.DELETE, None, key_row(r, (5,))),
        s.rec(r, Op.INSERT, (5, Decimal("5.50"), "e2", None)),
        s.rec(r, Op.UPDATE, (5, Decimal("5.55"), "e3", None)),
        s.rec(r, Op.INSERT, (6, Decimal("6.00"), "f", "x")),
        s.rec(r, Op.DELETE, None, key_row(r, (6,))),
    ]
    pos = applier.apply(recs)
    assert pos == {(s.topic, 0): recs[-1].change.position}
    assert rows(target_dsn, "SELECT * FROM orders ORDER BY id") == [
        (4, Decimal("4.40"), "d2", "y"), (5, Decimal("5.55"), "e3", None)]

    # a second batch, rows already in the target
    s.commit()
    applier.apply([s.rec(r, Op.UPDATE, (4, Decimal("0.01"), "z", "y")), s.rec(r, Op.DELETE, None, key_row(r, (5,))),
                   s.rec(r, Op.READ, (7, Decimal("7.00"), "snap", None))])
    assert rows(target_dsn, "SELECT * FROM orders ORDER BY id") == [
        (4, Decimal("0.01"), "z", "y"), (7, Decimal("7.00"), "snap", None)]


def test_primary_key_change(target_dsn: str, applier: Applier) -> None:
    s = Stream()
    r = ORDERS
    applier.apply([s.rec(r, Op.INSERT, (1, Decimal("1"), "a", "x")), s.rec(r, Op.INSERT, (2, Decimal("2"), "b", "x"))])
    s.commit()
    # 1 → 10, then a new row takes key 1; 2 → 20 in a later event of the same batch
    applier.apply([
        s.rec(r, Op.UPDATE, (10, Decimal("1"), "a", "x"), before=key_row(r, (1,))),
        s.rec(r, Op.INSERT, (1, Decimal("9"), "new", None)),
        s.rec(r, Op.UPDATE, (20, Decimal("2"), "b", "x"), before=key_row(r, (2,))),
    ])
    assert rows(target_dsn, "SELECT id, status FROM orders ORDER BY id") == [(1, "new"), (10, "a"), (20, "b")]


def test_unchanged_toast_column_keeps_target_value(target_dsn: str, applier: Applier) -> None:
    s = Stream()
    r = ORDERS
    big = "é" + "x" * 10_000
    applier.apply([s.rec(r, Op.INSERT, (1, Decimal("1"), "a", big)), s.rec(r, Op.INSERT, (2, Decimal("2"), "b", big))])
    s.commit()
    other = "y" * 10_000
    applier.apply([
        s.rec(r, Op.UPDATE, (1, Decimal("1.5"), "a2", None), unchanged=("big",)),
        # inserted and updated (unchanged) in the same batch: the batch's own value is kept
        s.rec(r, Op.INSERT, (3, Decimal("3"), "c", other)),
        s.rec(r, Op.UPDATE, (3, Decimal("3.5"), "c2", None), unchanged=("big",)),
        # an update with the column unchanged twice in a row
        s.rec(r, Op.UPDATE, (2, Decimal("2.5"), "b2", None), unchanged=("big",)),
        s.rec(r, Op.UPDATE, (2, Decimal("2.6"), "b3", None), unchanged=("big",)),
    ])
    assert rows(target_dsn, "SELECT id, amount, status, big FROM orders ORDER BY id") == [
        (1, Decimal("1.50"), "a2", big), (2, Decimal("2.60"), "b3", big), (3, Decimal("3.50"), "c2", other)]


# -- positions ---------------------------------------------------------------------------------

def test_replay_changes_nothing_and_positions_only_move_forward(target_dsn: str, applier: Applier) -> None:
    s0, s1 = Stream(partition=0), Stream(partition=1, lsn=1050)
    r = ORDERS
    batch1 = [s0.rec(r, Op.INSERT, (1, Decimal("1"), "a", None)), s1.rec(r, Op.INSERT, (2, Decimal("2"), "b", None))]
    p1 = applier.apply(batch1)
    assert p1 == {(s0.topic, 0): batch1[0].change.position, (s1.topic, 1): batch1[1].change.position}
    s0.commit()
    s1.commit()
    batch2 = [s0.rec(r, Op.UPDATE, (1, Decimal("1"), "a2", None)), s1.rec(r, Op.DELETE, None, key_row(r, (2,)))]
    applier.apply(batch2)
    after2 = rows(target_dsn, "SELECT * FROM orders ORDER BY id")
    stored2 = rows(target_dsn, "SELECT topic, partition, commit_lsn::text, seq FROM pgbridge_state.bridge_positions ORDER BY 2")

    # replay both batches, through this applier and through a fresh one (positions from the table)
    assert applier.apply(batch1 + batch2) == {(s0.topic, 0): batch2[0].change.position,
                                              (s1.topic, 1): batch2[1].change.position}
    fresh = Applier(target_dsn)
    try:
        fresh.apply(batch1)
        assert fresh.load_positions([(s0.topic, 0)]) == {(s0.topic, 0): batch2[0].change.position}
    finally:
        fresh.close()
    assert rows(target_dsn, "SELECT * FROM orders ORDER BY id") == after2 == [(1, Decimal("1.00"), "a2", None)]
    assert rows(target_dsn, "SELECT topic, partition, commit_lsn::text, seq FROM pgbridge_state.bridge_positions ORDER BY 2") \
        == stored2 == [(s0.topic, 0, "0/44C", 0), (s1.topic, 1, "0/47E", 0)]

    # within a batch, an event at or below an earlier one of its partition is a replay too
    s0.commit()
    dup = s0.rec(r, Op.INSERT, (5, Decimal("5"), "new", None))
    stale = s0.rec(r, Op.UPDATE, (5, Decimal("6"), "stale", None), pos=batch2[0].change.position)
    applier.apply([dup, stale, dup])
    assert rows(target_dsn, "SELECT status FROM orders WHERE id = 5") == [("new",)]


def test_failed_batch_moves_nothing(target_dsn: str, applier: Applier) -> None:
    s = Stream()
    r = ORDERS
    applier.apply([s.rec(r, Op.INSERT, (1, Decimal("1"), "a", None))])
    with psycopg.connect(target_dsn, autocommit=True) as c:
        c.execute("ALTER TABLE orders ADD CONSTRAINT small CHECK (amount < 100)")
    s.commit()
    before = applier.positions
    with pytest.raises(RecordRejectedError):
        applier.apply([s.rec(r, Op.INSERT, (2, Decimal("2"), "b", None)), s.rec(r, Op.INSERT, (3, Decimal("300"), "c", None))])
    assert applier.positions == before
    assert rows(target_dsn, "SELECT id FROM orders") == [(1,)]
    assert rows(target_dsn, "SELECT commit_lsn::text, seq FROM pgbridge_state.bridge_positions") == [("0/3E8", 0)]


# -- tables without a primary key --------------------------------------------------------------

def test_keyless_table_with_replica_identity_full(target_dsn: str, applier: Applier) -> None:
    rel = Relation("public", "log", (col("a", "integer", "int4"), col("b", "text", "text"), col("j", "json", "json")),
                   replica_identity="f")
    s = Stream()
    applier.apply([s.rec(rel, Op.INSERT, (1, "x", "{}")), s.rec(rel, Op.INSERT, (1, "x", "{}")),
                   s.rec(rel, Op.INSERT, (2, None, None))])
    s.commit()
    applier.apply([
        s.rec(rel, Op.UPDATE, (1, "y", "{}"), before=(1, "x", "{}")),  # exactly one of the two duplicates
        s.rec(rel, Op.DELETE, None, before=(2, None, None)),  # NULL-safe match
        s.rec(rel, Op.INSERT, (3, "z", None)),
        s.rec(rel, Op.UPDATE, (3, "z2", None), before=(3, "z", None)),  # a row inserted in this batch
    ])
    assert rows(target_dsn, "SELECT a, b, j::text FROM log ORDER BY a, b") == [
        (1, "x", "{}"), (1, "y", "{}"), (3, "z2", None)]


def test_keyless_table_without_replica_identity_full_names_the_fix(target_dsn: str, applier: Applier) -> None:
    rel = Relation("public", "nokey", (col("a", "integer", "int4"),), replica_identity="d")
    s = Stream()
    applier.apply([s.rec(rel, Op.INSERT, (1,)), s.rec(rel, Op.INSERT, (1,))])  # inserts append
    assert rows(target_dsn, "SELECT count(*) FROM nokey") == [(2,)]
    s.commit()
    with pytest.raises(KeylessTableError) as err:
        applier.apply([s.rec(rel, Op.DELETE, None, before=(1,))])
    assert isinstance(err.value, SinkError)
    assert "public.nokey" in str(err.value) and "REPLICA IDENTITY FULL" in str(err.value)


# -- DDL ---------------------------------------------------------------------------------------

def test_add_column_and_widening(target_dsn: str, applier: Applier) -> None:
    v1 = Relation("public", "w", (col("id", "integer", "int4"), col("name", "character varying(10)", "varchar", length=10),
                                  col("n", "numeric(5,2)", "numeric", precision=5, scale=2)),
                  primary_key=("id",), version=1)
    s = Stream()
    applier.apply([s.rec(v1, Op.INSERT, (1, "short", Decimal("1.25")))])
    v2 = Relation("public", "w", (col("id", "bigint", "int8"), col("name", "character varying(50)", "varchar", length=50),
                                  col("n", "numeric(12,4)", "numeric", precision=12, scale=4),
                                  col("extra", "text[]", "text", ndims=1)),
                  primary_key=("id",), version=2)
    s.commit()
    # both versions in one batch: the old-version event first
    applier.apply([s.rec(v1, Op.UPDATE, (1, "short2", Decimal("1.50"))),
                   s.rec(v2, Op.INSERT, (2**40, "x" * 50, Decimal("12345678.1234"), ["a", None]))])
    assert rows(target_dsn, "SELECT id, name, n, extra FROM w ORDER BY id") == [
        (1, "short2", Decimal("1.5000"), None), (2**40, "x" * 50, Decimal("12345678.1234"), ["a", None])]
    assert rows(target_dsn, "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
                            " WHERE attrelid = 'w'::regclass AND attnum > 0 ORDER BY attnum") == [
        ("id", "bigint"), ("name", "character varying(50)"), ("n", "numeric(12,4)"), ("extra", "text[]")]


def test_extra_target_columns_and_looser_types_are_accepted(target_dsn: str, applier: Applier) -> None:
    with psycopg.connect(target_dsn, autocommit=True) as c:
        c.execute("CREATE TABLE orders (id bigint PRIMARY KEY, amount numeric, status text, big text,"
                  " loaded_at timestamptz DEFAULT now())")
    s = Stream()
    applier.apply([s.rec(ORDERS, Op.INSERT, (1, Decimal("1.25"), "a", None))])
    assert rows(target_dsn, "SELECT id, amount, status, loaded_at IS NOT NULL FROM orders") == [
        (1, Decimal("1.25"), "a", True)]


@pytest.mark.parametrize(("ddl", "column"), [
    ("CREATE TABLE orders (id bigint PRIMARY KEY, amount integer, status text, big text)", "amount"),
    ("CREATE TABLE orders (id bigint PRIMARY KEY, amount numeric, status boolean, big text)", "status"),
])
def test_target_schema_error_names_table_and_column(target_dsn: str, applier: Applier, ddl: str, column: str) -> None:
    with psycopg.connect(target_dsn, autocommit=True) as c:
        c.execute(ddl)
    with pytest.raises(TableRejectedError) as err:
        applier.apply([Stream().rec(ORDERS, Op.INSERT, (1, Decimal("1"), "a", None))])
    assert isinstance(err.value.__cause__, TargetSchemaError)
    assert err.value.table == ("public", "orders")
    assert err.value.context["table"] == "public.orders"
    assert err.value.context["column"] == column
    assert "public.orders" in str(err.value)


def test_target_without_the_key_gets_it_as_primary_key(target_dsn: str, applier: Applier) -> None:
    """The source's key changed (or the target was made by hand): the target's primary key
    becomes the source's."""
    with psycopg.connect(target_dsn, autocommit=True) as c:
        c.execute("CREATE TABLE orders (id bigint, amount numeric, status text, big text)")
    s = Stream()
    applier.apply([s.rec(ORDERS, Op.INSERT, (1, Decimal("1"), "a", None))])
    s.commit()
    applier.apply([s.rec(ORDERS, Op.UPDATE, (1, Decimal("2"), "b", None))])
    assert rows(target_dsn, "SELECT id, amount, status FROM orders") == [(1, Decimal("2"), "b")]
    assert rows(target_dsn, "SELECT indexdef LIKE '%UNIQUE%(id)' FROM pg_indexes WHERE tablename = 'orders'") == [(True,)]
    with psycopg.connect(target_dsn, autocommit=True) as c:  # a key that differs from the target's
        c.execute("DROP TABLE orders")
        c.execute("CREATE TABLE orders (id bigint, amount numeric, status text PRIMARY KEY, big text)")
    s.commit()
    fresh = Applier(target_dsn)  # a sink that meets this table for the first time
    try:
        fresh.apply([s.rec(ORDERS, Op.INSERT, (1, Decimal("3"), "b", None)),
                     s.rec(ORDERS, Op.INSERT, (2, Decimal("4"), "b", None))])
    finally:
        fresh.close()
    assert rows(target_dsn, "SELECT id, status FROM orders ORDER BY id") == [(1, "b"), (2, "b")]


def test_a_table_the_target_refuses_is_rejected_whole_while_others_apply(target_dsn: str, applier: Applier) -> None:
    """The target repeats the source's key in rows, so no unique index can follow the key: every
    record of that table is rejected (one decision, no bisection) and the other table applies."""
    with psycopg.connect(target_dsn, autocommit=True) as c:
        c.execute("CREATE TABLE orders (id bigint, amount numeric, status text, big text)")
        c.execute("INSERT INTO orders VALUES (1, 1, 'a', NULL), (1, 2, 'b', NULL)")
    other = Relation("public", "other", (col("id", "integer", "int4", not_null=True),), primary_key=("id",))
    s = Stream()
    recs = [s.rec(ORDERS, Op.INSERT, (i, Decimal(i), "x", None)) for i in range(5, 9)]
    recs += [s.rec(other, Op.INSERT, (i,)) for i in range(3)]
    positions, rejects = applier.apply_isolating(recs)
    assert [r.change.relation.table for r, _ in rejects] == ["orders"] * 4
    assert all(isinstance(e, TableRejectedError) and e.context.get("sqlstate") == "23505" for _, e in rejects)
    assert rows(target_dsn, "SELECT id FROM other ORDER BY id") == [(0,), (1,), (2,)]
    assert positions[(s.topic, 0)] == recs[-1].change.position


# -- dead letters ------------------------------------------------------------------------------

def test_check_violation_isolates_exactly_the_bad_record(target_dsn: str, applier: Applier) -> None:
    with psycopg.connect(target_dsn, autocommit=True) as c:
        c.execute("CREATE TABLE orders (id bigint PRIMARY KEY, amount numeric(12,2) CHECK (amount >= 0),"
                  " status text, big text)")
    s0, s1 = Stream(partition=0), Stream(partition=1, lsn=1001)
    recs: list[SinkRecord] = []
    for i in range(40):
        st = s0 if i % 2 else s1
        amount = Decimal("-1") if i == 23 else Decimal(i)
        recs.append(st.rec(ORDERS, Op.INSERT, (i, amount, "ok", None)))
        st.commit()
    bad_value = s1.rec(ORDERS, Op.INSERT, (100, Decimal("1"), "x" * 3, None))
    bad_value = SinkRecord(bad_value.topic, bad_value.partition, bad_value.offset,
                           ChangeEvent(ORDERS, Op.INSERT, bad_value.change.position, 1, None, None,
                                       (100, "not a number", "x", None)))
    recs.append(bad_value)
    s1.commit()
    last = s1.rec(ORDERS, Op.INSERT, (101, Decimal("1"), "last", None))
    recs.append(last)
    positions, rejects = applier.apply_isolating(recs)
    assert [r for r, _ in rejects] == [recs[23], bad_value]
    assert all(isinstance(e, RecordRejectedError) for _, e in rejects)
    assert positions == {(s0.topic, 0): recs[39].change.position, (s1.topic, 1): last.change.position}
    assert rows(target_dsn, "SELECT id FROM orders ORDER BY id") == [(i,) for i in range(40) if i != 23] + [(101,)]
    # nothing is retried: a replay of the batch changes nothing and rejects nothing
    assert applier.apply_isolating(recs) == (positions, [])


def test_composite_key_and_awkward_names(target_dsn: str, applier: Applier) -> None:
    rel = Relation('we"ird%s', "Ta ble%", (col('K "1"', "integer", "int4"), col("k2%s", "text", "text"),
                                           col("Val", "text", "text")),
                   primary_key=('K "1"', "k2%s"))
    s = Stream()
    applier.apply([s.rec(rel, Op.INSERT, (1, "a", "x")), s.rec(rel, Op.INSERT, (1, "b", "y")),
                   s.rec(rel, Op.UPDATE, (1, "a", "x2")), s.rec(rel, Op.DELETE, None, (1, "b", None))])
    s.commit()
    applier.apply([s.rec(rel, Op.INSERT, (2, "a", "z")), s.rec(rel, Op.TRUNCATE), s.rec(rel, Op.INSERT, (3, "c", "w"))])
    assert rows(target_dsn, 'SELECT * FROM "we""ird%s"."Ta ble%"') == [(3, "c", "w")]


def test_partitions_interleave_by_position(target_dsn: str, applier: Applier) -> None:
    """A key's events can sit in two partitions (key change); the later position wins."""
    s0, s1 = Stream(partition=0, lsn=1000), Stream(partition=1, lsn=2000)
    r = ORDERS
    # partition 1 (consumed first in the batch) holds the later event: key 1 moved to 2
    later = s1.rec(r, Op.UPDATE, (2, Decimal("2"), "moved", None), before=key_row(r, (1,)))
    earlier = s0.rec(r, Op.INSERT, (1, Decimal("1"), "first", None))
    applier.apply([later, earlier])
    assert rows(target_dsn, "SELECT id, status FROM orders") == [(2, "moved")]


def test_value_that_cannot_be_encoded_is_isolated(target_dsn: str, applier: Applier) -> None:
    rel = Relation("public", "small", (col("id", "integer", "int4"), col("v", "smallint", "int2")), primary_key=("id",))
    s = Stream()
    good1, bad, good2 = (s.rec(rel, Op.INSERT, (1, 1)), s.rec(rel, Op.INSERT, (2, 2**20)), s.rec(rel, Op.INSERT, (3, 3)))
    with pytest.raises(RecordRejectedError):
        applier.apply([good1, bad, good2])
    positions, rejects = applier.apply_isolating([good1, bad, good2])
    assert [r for r, _ in rejects] == [bad]
    assert positions == {(s.topic, 0): good2.change.position}
    assert rows(target_dsn, "SELECT id, v FROM small ORDER BY id") == [(1, 1), (3, 3)]


def test_position_table_never_moves_back(target_dsn: str) -> None:
    from bridge.sink.positions import PositionTable

    table = PositionTable("custom_schema")
    with psycopg.connect(target_dsn, autocommit=True) as c:
        table.ensure(c)
        hi, lo = Position(Lsn.parse("16/B374D848"), 3), Position(Lsn.parse("16/B374D848"), 2)
        table.upsert(c, {("t", 0): hi, ("t", 1): lo})
        table.upsert(c, {("t", 0): lo, ("t", 1): hi})
        assert table.load(c) == {("t", 0): hi, ("t", 1): hi}
        assert table.load(c, [("t", 1), ("u", 0)]) == {("t", 1): hi}


# -- several sinks against one target -------------------------------------------------------------

def test_two_sinks_creating_the_same_table_both_apply(target_dsn: str) -> None:
    """Two members of the group meet a new table (or a fresh target) at the same moment. Their
    `CREATE … IF NOT EXISTS` race on the catalog's unique indexes: the loser got `23505` on
    `pg_type`/`pg_namespace`, and its records went to the dead-letter topic (changes lost) or the
    sink stopped. An event trigger that slows every DDL statement down widens the race."""
    with psycopg.connect(target_dsn, autocommit=True) as c:
        c.execute("CREATE FUNCTION slow_ddl() RETURNS event_trigger LANGUAGE plpgsql AS"
                  " $$BEGIN PERFORM pg_sleep(0.5); END$$")
        c.execute("CREATE EVENT TRIGGER slow_ddl ON ddl_command_end EXECUTE FUNCTION slow_ddl()")
    rel = Relation("public", "raced", (col("id", "integer", "int4", not_null=True), col("v", "text", "text")),
                   primary_key=("id",))
    results: dict[int, Any] = {}

    def member(i: int) -> None:
        a = Applier(target_dsn)
        s = Stream(topic="bridge.public.raced", partition=i, lsn=1000 + i)
        try:
            results[i] = a.apply_isolating([s.rec(rel, Op.INSERT, (10 * i + k, f"m{i}")) for k in range(5)])
        except Exception as exc:  # the assertion below names it
            results[i] = exc
        finally:
            a.close()

    threads = [threading.Thread(target=member, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
        time.sleep(0.2)  # the second member starts while the first one's DDL is still running
    for t in threads:
        t.join(60)
    for i in range(2):
        assert not isinstance(results[i], Exception), f"member {i} failed: {results[i]!r}"
        _positions, rejects = results[i]
        assert rejects == [], f"member {i} dead-lettered {len(rejects)} records: {rejects[0][1]}"
    assert rows(target_dsn, "SELECT count(*) FROM raced") == [(10,)]


def test_a_member_with_a_stale_cache_never_overwrites_newer_rows(target_dsn: str) -> None:
    """Invariant 3 whoever applies: a member that lost its partitions without being told (kicked
    out of the group while it waited for the target) still holds old positions in its cache. Its
    stale batch must be skipped as the replay it is, not written over what the new owner applied
    since (the same holds after a commit whose answer was lost)."""
    rel = Relation("public", "kv", (col("id", "integer", "int4", not_null=True), col("v", "text", "text")),
                   primary_key=("id",))
    old_owner, new_owner = Applier(target_dsn), Applier(target_dsn)
    try:
        s = Stream(topic="bridge.public.kv")
        first = s.rec(rel, Op.INSERT, (1, "v1"))
        s.commit()
        stale = s.rec(rel, Op.UPDATE, (1, "v2"))
        s.commit()
        newer = s.rec(rel, Op.UPDATE, (1, "v3"))
        old_owner.apply([first])  # the old owner's cache: position of v1
        new_owner.apply([stale, newer])  # the new owner re-reads from the committed offset and goes on
        assert old_owner.apply([stale]) == {(s.topic, 0): newer.change.position}
        assert rows(target_dsn, "SELECT v FROM kv") == [("v3",)]
    finally:
        old_owner.close()
        new_owner.close()


def test_a_rejected_record_is_dead_lettered_before_its_partition_moves_past_it(target_dsn: str,
                                                                               applier: Applier) -> None:
    """The position passes a record the target refuses only once the dead-letter topic has it: if
    that publish fails (or the sink dies first), the record is neither applied nor skipped, and
    the next attempt rejects and dead-letters it again. Before, the position moved first, and a
    crash before the publish lost the record."""
    with psycopg.connect(target_dsn, autocommit=True) as c:
        c.execute("CREATE TABLE orders (id bigint PRIMARY KEY, amount numeric(12,2) CHECK (amount >= 0),"
                  " status text, big text)")
    s = Stream()
    good = s.rec(ORDERS, Op.INSERT, (1, Decimal(1), "ok", None))
    bad = s.rec(ORDERS, Op.INSERT, (2, Decimal(-1), "refused", None))
    after = s.rec(ORDERS, Op.INSERT, (3, Decimal(3), "ok", None))
    published: list[int] = []

    def broker_down(rejected: list[tuple[SinkRecord, Exception]]) -> None:
        raise SinkError("dead-letter topic unavailable")

    with pytest.raises(SinkError, match="dead-letter topic unavailable"):
        applier.apply_isolating([good, bad, after], dead_letter=broker_down)
    stored = rows(target_dsn, "SELECT commit_lsn::text, seq FROM pgbridge_state.bridge_positions")
    assert stored == [(str(good.change.position.commit_lsn), good.change.position.seq)]
    assert rows(target_dsn, "SELECT id FROM orders") == [(1,)]

    positions, rejects = applier.apply_isolating(
        [good, bad, after], dead_letter=lambda rj: published.extend(r.offset for r, _ in rj))
    assert published == [bad.offset] and [r for r, _ in rejects] == [bad]
    assert positions[(s.topic, 0)] == after.change.position
    assert rows(target_dsn, "SELECT id FROM orders ORDER BY id") == [(1,), (3,)]
