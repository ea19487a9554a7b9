"""The catalog against a real PostgreSQL: type resolution, modifiers, keys, identity, refresh."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal

import psycopg
import pytest

from bridge.errors import SchemaError
from bridge.events import Op
from bridge.relation import Column
from bridge.source.catalog import Catalog
from bridge.source.decoder import ChangeDecoder
from bridge.source.session import libpq_options
from bridge.source.test_decoding import ChangeLine, parse_line


@pytest.fixture
def conn(source_dsn: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with psycopg.connect(source_dsn, autocommit=True) as c:
        yield c


def test_columns_types_and_modifiers(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    conn.execute("CREATE TYPE mood AS ENUM ('sad', 'ok')")
    conn.execute("CREATE DOMAIN posint AS integer CHECK (VALUE > 0)")
    conn.execute("CREATE DOMAIN money2 AS numeric(10,2)")
    conn.execute("CREATE DOMAIN posint2 AS posint")
    conn.execute("CREATE DOMAIN intarr AS integer[]")
    conn.execute(
        'CREATE TABLE "Weird ""T""" ('
        """id bigint NOT NULL, dropme int, amount numeric(12,2), neg numeric(5,-2), free numeric,
             name varchar(20), code char(3), note text, flag boolean, m mood, moods mood[],
             p posint, p2 posint2, cash money2, cashes money2[], ia intarr, grid integer[][],
             ts timestamptz, tags text[], b bit(4), iv int2vector, pt point, js jsonb,
             PRIMARY KEY (id))"""
    )
    conn.execute('ALTER TABLE "Weird ""T""" DROP COLUMN dropme')
    rel = Catalog(conn).relation("public", 'Weird "T"')
    cols = {c.name: c for c in rel.columns}
    assert rel.column_names[:3] == ("id", "amount", "neg")
    assert "dropme" not in cols
    assert cols["id"] == Column("id", "bigint", "int8", "b", 0, True, None, None, None, 20)
    assert (cols["amount"].base, cols["amount"].precision, cols["amount"].scale) == ("numeric", 12, 2)
    assert cols["amount"].type_name == "numeric(12,2)"
    assert (cols["neg"].precision, cols["neg"].scale) == (5, -2)
    assert (cols["free"].precision, cols["free"].scale) == (None, None)
    assert (cols["name"].base, cols["name"].length, cols["name"].type_name) == (
        "varchar", 20, "character varying(20)")
    assert (cols["code"].base, cols["code"].length) == ("bpchar", 3)
    assert (cols["flag"].base, cols["note"].base) == ("bool", "text")
    assert (cols["m"].base, cols["m"].kind, cols["m"].ndims) == ("mood", "e", 0)
    assert (cols["moods"].base, cols["moods"].kind, cols["moods"].ndims) == ("mood", "e", 1)
    assert (cols["p"].base, cols["p"].type_name, cols["p"].kind) == ("int4", "posint", "b")
    assert cols["p2"].base == "int4"
    # a domain's own typmod becomes the column's modifiers
    assert (cols["cash"].base, cols["cash"].precision, cols["cash"].scale) == ("numeric", 10, 2)
    assert (cols["cashes"].base, cols["cashes"].ndims, cols["cashes"].precision) == ("numeric", 1, 10)
    assert (cols["ia"].base, cols["ia"].ndims) == ("int4", 1)  # domain over an array
    assert (cols["grid"].base, cols["grid"].ndims) == ("int4", 2)
    assert (cols["ts"].base, cols["tags"].base, cols["tags"].ndims) == ("timestamptz", "text", 1)
    assert (cols["b"].base, cols["b"].length) == ("bit", 4)
    # int2vector and point look like arrays in pg_type but print as scalars
    assert (cols["iv"].base, cols["iv"].ndims) == ("int2vector", 0)
    assert (cols["pt"].base, cols["pt"].ndims) == ("point", 0)
    assert cols["js"].base == "jsonb"
    assert not cols["note"].not_null
    assert rel.primary_key == ("id",)
    assert rel.replica_identity == "d"
    assert rel.version == 1 and rel.oid > 0


def test_composite_primary_key_in_index_order_and_replica_identity(
        conn: psycopg.Connection[tuple[object, ...]]) -> None:
    conn.execute("CREATE SCHEMA s")
    conn.execute("CREATE TABLE s.t (a int, b int, c int, PRIMARY KEY (c, a))")
    conn.execute("CREATE TABLE s.nokey (a int)")
    conn.execute("ALTER TABLE s.nokey REPLICA IDENTITY FULL")
    cat = Catalog(conn)
    rel = cat.relation("s", "t")
    assert rel.primary_key == ("c", "a")
    assert rel.column("c").not_null and not rel.column("b").not_null
    nokey = cat.relation("s", "nokey")
    assert nokey.primary_key == () and nokey.replica_identity == "f"


def test_missing_table_is_a_schema_error(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    with pytest.raises(SchemaError) as err:
        Catalog(conn).relation("public", "nope")
    assert "public.nope" in str(err.value)


def test_cache_and_refresh_bumps_version_on_ddl(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, a text)")
    cat = Catalog(conn)
    rel = cat.relation("public", "t")
    assert cat.relation("public", "t") is rel  # cached
    assert cat.refresh("public", "t") is rel  # nothing changed: same version
    conn.execute("ALTER TABLE t ADD COLUMN b numeric(8,3)")
    assert cat.relation("public", "t") is rel  # the cache does not re-read by itself
    rel2 = cat.refresh("public", "t")
    assert rel2.version == 2 and rel2.column_names == ("id", "a", "b")
    assert (rel2.column("b").precision, rel2.column("b").scale) == (8, 3)
    assert cat.relation("public", "t") is rel2
    conn.execute("ALTER TABLE t ALTER COLUMN a TYPE varchar(5)")
    rel3 = cat.refresh("public", "t")
    assert rel3.version == 3 and rel3.column("a").base == "varchar"
    conn.execute("ALTER TABLE t REPLICA IDENTITY FULL")
    assert cat.refresh("public", "t").version == 4


def test_relation_from_line_resolves_printed_type_names(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    conn.execute('CREATE SCHEMA "My S"')
    conn.execute('CREATE TYPE "My S"."My E" AS ENUM (\'x\')')
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, a text)")
    cat = Catalog(conn)
    assert cat.relation("public", "t").version == 1
    rel = cat.relation_from_line(
        "public", "t",
        ["id", "n", "ts", "arr", "e", "gone"],
        ["integer", "numeric", "timestamp with time zone", "character varying[]", '"My S"."My E"',
         "public.dropped_type"],
    )
    assert rel.version == 2 and rel.primary_key == ("id",)
    got = [(c.base, c.kind, c.ndims, c.precision) for c in rel.columns]
    assert got == [("int4", "b", 0, None), ("numeric", "b", 0, None), ("timestamptz", "b", 0, None),
                   ("varchar", "b", 1, None), ("My E", "e", 0, None), ("unknown", "b", 0, None)]
    assert cat.relation("public", "t") is rel


# -- ChangeDecoder: following DDL through the catalog ------------------------------------------


@pytest.fixture
def slot(source_dsn: str) -> Iterator[tuple[psycopg.Connection[tuple[object, ...]], Callable[[], list[ChangeLine]]]]:
    """(decoding session with the capture GUCs, a function returning the new change lines)."""
    name = f"cat_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(source_dsn, autocommit=True, options=libpq_options()) as r:
        r.execute("SELECT pg_create_logical_replication_slot(%s, 'test_decoding')", (name,))

        def changes() -> list[ChangeLine]:
            rows = r.execute("SELECT data FROM pg_logical_slot_get_changes(%s, NULL, NULL, "
                             "'include-xids', '1', 'include-timestamp', '1', 'skip-empty-xacts', '1')", (name,))
            return [c for c in (parse_line(line) for (line,) in rows) if isinstance(c, ChangeLine)]

        try:
            yield r, changes
        finally:
            r.execute("SELECT pg_drop_replication_slot(%s)", (name,))


BIG = "(SELECT string_agg(md5(i::text), '') FROM generate_series(1, 500) i)"


def test_change_decoder_follows_ddl_and_unchanged_toast(
        conn: psycopg.Connection[tuple[object, ...]],
        slot: tuple[psycopg.Connection[tuple[object, ...]], Callable[[], list[ChangeLine]]]) -> None:
    _, changes = slot
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, a int, big text)")
    dec = ChangeDecoder(Catalog(conn))
    conn.execute(f"INSERT INTO t VALUES (1, 10, {BIG})")
    [ins] = changes()
    rel, op, before, after, unchanged = dec.decode(ins)
    assert (rel.version, op, before, unchanged) == (1, Op.INSERT, None, ())
    assert after is not None and after[:2] == (1, 10) and len(after[2]) == 16_000

    conn.execute("UPDATE t SET a = 11 WHERE id = 1")  # big is TOASTed and not rewritten
    [upd] = changes()
    rel, op, before, after, unchanged = dec.decode(upd)
    assert (rel.version, op, before, after, unchanged) == (1, Op.UPDATE, None, (1, 11, None), ("big",))

    conn.execute("ALTER TABLE t ADD COLUMN n numeric(6,2)")
    conn.execute("INSERT INTO t VALUES (2, 20, 'x', 1.5)")
    [ins2] = changes()
    rel, _, _, after, _ = dec.decode(ins2)
    assert rel.version == 2 and rel.column_names == ("id", "a", "big", "n")
    assert after == (2, 20, "x", Decimal("1.50"))

    conn.execute("ALTER TABLE t ALTER COLUMN a TYPE text")  # same names, other printed type
    conn.execute("INSERT INTO t VALUES (3, 'three', 'y', NULL)")
    [ins3] = changes()
    rel, _, _, after, _ = dec.decode(ins3)
    assert rel.version == 3 and after == (3, "three", "y", None)

    conn.execute("ALTER TABLE t REPLICA IDENTITY FULL")
    conn.execute("DELETE FROM t WHERE id = 3")
    [dele] = changes()
    rel, op, before, after, _ = dec.decode(dele)
    assert (op, before, after) == (Op.DELETE, (3, "three", "y", None), None)  # NULL n skipped, None


def test_change_decoder_when_the_catalog_is_ahead_of_the_wal(
        conn: psycopg.Connection[tuple[object, ...]],
        slot: tuple[psycopg.Connection[tuple[object, ...]], Callable[[], list[ChangeLine]]]) -> None:
    _, changes = slot
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, amount numeric(8,2), gone text)")
    conn.execute("INSERT INTO t VALUES (1, 2.5, 'g')")
    conn.execute("ALTER TABLE t DROP COLUMN gone")
    conn.execute("ALTER TABLE t ADD COLUMN later date")
    conn.execute("INSERT INTO t VALUES (2, 3.25, '1970-01-03')")
    old_line, new_line = changes()  # decoded only now: the catalog already has the later shape
    dec = ChangeDecoder(Catalog(conn))
    rel, _, _, after, _ = dec.decode(old_line)
    assert rel.column_names == ("id", "amount", "gone") and rel.version == 2
    assert rel.primary_key == ("id",)
    assert after == (1, "2.50", "g")  # the line has no typmod: numeric travels as text
    rel, _, _, after, _ = dec.decode(new_line)
    assert rel.column_names == ("id", "amount", "later") and rel.version == 3
    assert after == (2, Decimal("3.25"), 2)


def test_change_decoder_decodes_changes_of_a_dropped_table_from_the_line(
        conn: psycopg.Connection[tuple[object, ...]],
        slot: tuple[psycopg.Connection[tuple[object, ...]], Callable[[], list[ChangeLine]]]) -> None:
    _, changes = slot
    conn.execute("CREATE TYPE e AS ENUM ('x')")
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, d date, v e)")
    conn.execute("INSERT INTO t VALUES (1, '1970-01-02', 'x')")
    conn.execute("DROP TABLE t")
    conn.execute("DROP TYPE e")
    [line] = changes()
    rel, op, _, after, _ = ChangeDecoder(Catalog(conn)).decode(line)
    assert (op, after) == (Op.INSERT, (1, 1, "x"))
    assert [c.base for c in rel.columns] == ["int4", "date", "unknown"]


def test_missing_values_of_columns_added_with_a_default(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """Rows older than ADD COLUMN ... DEFAULT read a value no WAL carries: the catalog reports it."""
    conn.execute("CREATE TABLE m (id int PRIMARY KEY)")
    conn.execute("INSERT INTO m VALUES (1)")
    conn.execute("ALTER TABLE m ADD COLUMN flag integer NOT NULL DEFAULT 7, ADD COLUMN t text DEFAULT 'it''s, {x}',"
                 " ADD COLUMN arr int[] DEFAULT '{1,2}', ADD COLUMN plain text")
    rel = Catalog(conn).relation("public", "m")
    assert [c.missing for c in rel.columns] == [None, "7", "it's, {x}", "{1,2}", None]
    for col in rel.columns[1:4]:  # the text reads back as the value older rows have
        got = conn.execute(f"SELECT {col.name} = %s::{col.type_name} FROM m WHERE id = 1", (col.missing,)).fetchone()
        assert got == (True,), col


def test_a_relation_from_the_line_keeps_what_older_rows_read(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """ADD COLUMN … DEFAULT, then another DDL before the producer reads the catalog: the catalog
    is ahead of the change, the relation is built from the line, and the added column must still
    say what rows older than it read (else the sink's target column gets no default, and those
    rows read NULL there)."""
    conn.execute("CREATE TABLE m (id int PRIMARY KEY)")
    conn.execute("INSERT INTO m VALUES (1)")
    cat = Catalog(conn)
    assert cat.relation("public", "m").column_names == ("id",)
    conn.execute("ALTER TABLE m ADD COLUMN flag integer NOT NULL DEFAULT 7")
    conn.execute("ALTER TABLE m ADD COLUMN later text")  # the catalog moves past the next change
    rel = cat.relation_from_line("public", "m", ["id", "flag"], ["integer", "integer"])
    assert rel.column_names == ("id", "flag")
    assert [c.missing for c in rel.columns] == [None, "7"]
    # a column of the same name but another type than the table's has no missing value of its own
    other = cat.relation_from_line("public", "m", ["id", "flag"], ["integer", "text"])
    assert [c.missing for c in other.columns] == [None, None]
