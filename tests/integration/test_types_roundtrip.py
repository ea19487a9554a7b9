"""Type round trip: random rows → real PostgreSQL → test_decoding → parser → converters (→ Avro codec)
must equal what SELECT returns for the same rows, mapped to the value forms by an independent path
(psycopg's own loaders, and PostgreSQL's `extract(epoch ...)` arithmetic for dates and times)."""

from __future__ import annotations

import json
import math
import struct
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.events import ChangeEvent, Op, Position
from bridge.lsn import Lsn
from bridge.relation import Relation
from bridge.source.catalog import Catalog
from bridge.source.converters import DATE_NEG_INFINITY, DATE_POS_INFINITY, TS_NEG_INFINITY, TS_POS_INFINITY
from bridge.source.decoder import ChangeDecoder
from bridge.source.session import libpq_options
from bridge.source.test_decoding import ChangeLine, parse_line

# name, SQL type, how SELECT presents the expected value ("raw": psycopg's loader; an SQL
# expression over {c} otherwise), and how that is mapped to the value form.
COLUMNS: list[tuple[str, str, str, str]] = [
    ("i2", "smallint", "raw", "same"),
    ("i4", "integer", "raw", "same"),
    ("i8", "bigint", "raw", "same"),
    ("o", "oid", "{c}::int8", "same"),
    ("f4", "real", "raw", "float4"),
    ("f8", "double precision", "raw", "same"),
    ("n", "numeric(12,2)", "raw", "same"),
    ("nneg", "numeric(5,-2)", "raw", "numeric_text"),  # Avro decimals have no negative scale
    ("nbig", "numeric(2,5)", "raw", "numeric_text"),  # nor a scale above the precision
    ("nf", "numeric", "raw", "numeric_text"),
    ("b", "boolean", "raw", "same"),
    ("t", "text", "raw", "same"),
    ("vc", "varchar(10)", "raw", "same"),
    ("ch", "char(5)", "raw", "same"),
    ("nm", "name", "CASE WHEN {c} IS NOT NULL THEN format('%%s', {c}) END", "same"),
    ("qc", '"char"', "CASE WHEN {c} IS NOT NULL THEN format('%%s', {c}) END", "same"),
    ("by", "bytea", "raw", "same"),
    ("d", "date", "extract(epoch from {c})", "date"),
    ("tm", "time", "extract(epoch from {c})", "us"),
    ("ts", "timestamp", "extract(epoch from {c})", "ts"),
    ("tz", "timestamptz", "extract(epoch from {c})", "ts"),
    ("u", "uuid", "raw", "str"),
    ("j", "json", "CASE WHEN {c} IS NOT NULL THEN format('%%s', {c}) END", "same"),
    ("jb", "jsonb", "CASE WHEN {c} IS NOT NULL THEN format('%%s', {c}) END", "same"),
    ("iv", "interval", "CASE WHEN {c} IS NOT NULL THEN format('%%s', {c}) END", "same"),
    ("ttz", "timetz", "CASE WHEN {c} IS NOT NULL THEN format('%%s', {c}) END", "same"),
    ("ip", "inet", "CASE WHEN {c} IS NOT NULL THEN format('%%s', {c}) END", "same"),
    ("cidr_", "cidr", "CASE WHEN {c} IS NOT NULL THEN format('%%s', {c}) END", "same"),
    ("mac", "macaddr", "CASE WHEN {c} IS NOT NULL THEN format('%%s', {c}) END", "same"),
    ("mac8", "macaddr8", "CASE WHEN {c} IS NOT NULL THEN format('%%s', {c}) END", "same"),
    ("mon", "money", "CASE WHEN {c} IS NOT NULL THEN format('%%s', {c}) END", "same"),
    ("bits", "bit(4)", "CASE WHEN {c} IS NOT NULL THEN format('%%s', {c}) END", "same"),
    ("e", "mood", "CASE WHEN {c} IS NOT NULL THEN format('%%s', {c}) END", "same"),
    ("dp", "posint", "{c}::int4", "same"),
    ("dn", "money2", "{c}::numeric(10,2)", "same"),
    ("ai", "integer[]", "raw", "same"),
    ("ai2", "integer[][]", "raw", "same"),
    ("at", "text[]", "raw", "same"),
    ("at2", "text[][]", "raw", "same"),
    ("an", "numeric(6,2)[]", "raw", "same"),
    ("ab", "boolean[]", "raw", "same"),
    ("af", "double precision[]", "raw", "same"),
    ("aby", "bytea[]", "raw", "same"),
    ("ad", "date[]", "_epochs", "date"),
    ("atz", "timestamptz[]", "_epochs", "ts"),
    ("ae", "mood[]", "{c}::text[]", "same"),
    ("adp", "posint[]", "{c}::int4[]", "same"),
]

MOODS = ["sad", "ok", "it's", "a b", "Ünï"]

text_chars = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
texts = st.one_of(st.text(text_chars, max_size=12),
                  st.sampled_from(["NULL", "null", "", " ", "'", "''", '"', "\\", "{a,b}", "x y", "unchanged-toast-datum"]))


def opt(s: st.SearchStrategy[str], null: float = 0.15) -> st.SearchStrategy[str | None]:
    return st.one_of(st.none(), s) if null else s


def ints(bits: int) -> st.SearchStrategy[str]:
    return st.integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1).map(str)


specials = st.sampled_from(["NaN", "Infinity", "-Infinity"])
f4 = st.one_of(st.floats(width=32, allow_nan=False, allow_infinity=False).map(repr), specials)
f8 = st.one_of(st.floats(allow_nan=False, allow_infinity=False).map(repr), specials)


def decimals(p: int, s: int) -> st.SearchStrategy[str]:
    return st.one_of(st.integers(-(10 ** p) + 1, 10**p - 1).map(lambda u: str(Decimal(u).scaleb(-s))),
                     st.just("NaN"))


free_numeric = st.one_of(
    st.decimals(allow_nan=False, allow_infinity=False, min_value=Decimal("-1e20"), max_value=Decimal("1e20"))
    .map(lambda d: f"{d:f}"),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "0.000", "12.500", "1e-30"]),
)


@st.composite
def pg_date(draw: st.DrawFn, big: int = 200_000) -> tuple[str, str]:
    """(date text without era, era suffix) in PostgreSQL's ISO input form."""
    kind = draw(st.sampled_from(["ad", "ad", "ad", "bc", "big"]))
    year = {"ad": st.integers(1, 9999), "bc": st.integers(1, 4713), "big": st.integers(10_000, big)}[kind]
    y, m, d = draw(year), draw(st.integers(1, 12)), draw(st.integers(1, 28))
    return f"{y:04d}-{m:02d}-{d:02d}", " BC" if kind == "bc" else ""


@st.composite
def clock(draw: st.DrawFn) -> str:
    h, m, s = draw(st.integers(0, 23)), draw(st.integers(0, 59)), draw(st.integers(0, 59))
    digits = draw(st.integers(0, 6))
    frac = "." + "".join(draw(st.lists(st.sampled_from("0123456789"), min_size=digits, max_size=digits))) if digits else ""
    return f"{h:02d}:{m:02d}:{s:02d}{frac}"


inf = st.sampled_from(["infinity", "-infinity"])
dates = st.one_of(pg_date().map(lambda de: de[0] + de[1]), inf)
times = st.one_of(clock(), st.just("24:00:00"))
timestamps = st.one_of(st.builds(lambda de, c: f"{de[0]} {c}{de[1]}", pg_date(), clock()), inf)
offsets = st.sampled_from(["+00", "+05:30", "-03:00", "+14", "-11:15"])
timestamptzs = st.one_of(st.builds(lambda de, c, o: f"{de[0]} {c}{o}{de[1]}", pg_date(), clock(), offsets), inf)
json_values = st.recursive(st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(text_chars, max_size=5),
                           lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(text_chars, max_size=4), kids, max_size=3),
                           max_leaves=6).map(lambda v: json.dumps(v, ensure_ascii=False))


def array_literal(value: Any) -> str:
    if isinstance(value, list):
        return "{" + ",".join(array_literal(v) for v in value) + "}"
    if value is None:
        return "NULL"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def arrays(elements: st.SearchStrategy[str], dims: int = 1) -> st.SearchStrategy[str]:
    el = opt(elements, 0.2)
    if dims == 1:
        return st.lists(el, max_size=4).map(array_literal)
    return st.tuples(st.integers(1, 3), st.integers(1, 3)).flatmap(
        lambda shape: st.lists(st.lists(el, min_size=shape[1], max_size=shape[1]),
                               min_size=shape[0], max_size=shape[0])).map(array_literal)


STRATEGIES: dict[str, st.SearchStrategy[str]] = {
    "i2": ints(16), "i4": ints(32), "i8": ints(64), "o": st.integers(0, 2**32 - 1).map(str),
    "f4": f4, "f8": f8, "n": decimals(12, 2), "nneg": st.integers(-999, 999).map(lambda u: str(u * 100)),
    "nbig": st.integers(-99, 99).map(lambda u: str(Decimal(u).scaleb(-5))),
    "nf": free_numeric, "b": st.sampled_from(["true", "false"]), "t": texts,
    "vc": st.text(text_chars, max_size=10), "ch": st.text(text_chars, max_size=5),
    "nm": st.text("abcXYZ _-'\"é", max_size=20), "qc": st.sampled_from(["a", "Z", "'", '"', "\\"]),
    "by": st.binary(max_size=12).map(lambda b: "\\x" + b.hex()),
    "d": dates, "tm": times, "ts": timestamps, "tz": timestamptzs, "u": st.uuids().map(str),
    "j": json_values, "jb": json_values,
    "iv": st.builds(lambda d, s: f"{d} days {s} seconds", st.integers(-1000, 1000), st.integers(-10**6, 10**6)),
    "ttz": st.builds(lambda c, o: c + o, clock(), offsets),
    "ip": st.ip_addresses().map(str), "cidr_": st.sampled_from(["10.0.0.0/8", "192.168.1.0/24", "::1/128", "2001:db8::/32"]),
    "mac": st.binary(min_size=6, max_size=6).map(lambda b: ":".join(f"{x:02x}" for x in b)),
    "mac8": st.binary(min_size=8, max_size=8).map(lambda b: ":".join(f"{x:02x}" for x in b)),
    "mon": st.integers(-10**9, 10**9).map(lambda c: f"{c / 100:.2f}"),
    "bits": st.text("01", min_size=4, max_size=4), "e": st.sampled_from(MOODS),
    "dp": st.integers(1, 2**31 - 1).map(str), "dn": decimals(10, 2),
    "ai": arrays(ints(32)), "ai2": arrays(ints(32), 2), "at": arrays(texts), "at2": arrays(texts, 2),
    "an": arrays(decimals(6, 2)), "ab": arrays(st.sampled_from(["t", "f"])), "af": arrays(f8),
    "aby": arrays(st.binary(max_size=4).map(lambda b: "\\x" + b.hex())),
    "ad": arrays(dates), "atz": arrays(timestamptzs), "ae": arrays(st.sampled_from(MOODS)),
    "adp": arrays(st.integers(1, 100).map(str)),
}

rows = st.lists(st.fixed_dictionaries({name: opt(STRATEGIES[name]) for name, *_ in COLUMNS}), min_size=1, max_size=3)


@pytest.fixture
def db(source_dsn: str) -> Iterator[tuple[psycopg.Connection[Any], psycopg.Connection[Any], str]]:
    """(writer, decoding session with the capture GUCs); the table `rt` and a test_decoding slot."""
    with psycopg.connect(source_dsn, autocommit=True) as w, \
            psycopg.connect(source_dsn, autocommit=True, options=libpq_options()) as r:
        w.execute("CREATE TYPE mood AS ENUM ('sad', 'ok', 'it''s', 'a b', 'Ünï')")
        w.execute("CREATE DOMAIN posint AS integer CHECK (VALUE > 0)")
        w.execute("CREATE DOMAIN money2 AS numeric(10,2)")
        cols = ", ".join(f"{name} {typ}" for name, typ, *_ in COLUMNS)
        w.execute(f"CREATE TABLE rt (id serial PRIMARY KEY, {cols})")
        w.execute("ALTER TABLE rt REPLICA IDENTITY FULL")
        slot = f"rt_{uuid.uuid4().hex[:12]}"
        r.execute("SELECT pg_create_logical_replication_slot(%s, 'test_decoding')", (slot,))
        try:
            yield w, r, slot
        finally:
            r.execute("SELECT pg_drop_replication_slot(%s)", (slot,))


def _expected(kind: str, v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, list):
        return [_expected(kind, x) for x in v]
    if kind == "same":
        return v
    if kind == "str":
        return str(v)
    if kind == "float4":
        return v
    if kind == "numeric_text":
        return "NaN" if v.is_nan() else ("Infinity" if v == Decimal("Infinity") else
                                         "-Infinity" if v == Decimal("-Infinity") else f"{v:f}")
    epoch: Decimal = v
    if kind == "date":
        if epoch.is_infinite():
            return DATE_POS_INFINITY if epoch > 0 else DATE_NEG_INFINITY
        return int(epoch // 86400)
    if epoch.is_infinite():
        return TS_POS_INFINITY if epoch > 0 else TS_NEG_INFINITY
    return int(epoch * 1_000_000)


def _comparable(v: Any, float4: bool = False) -> Any:
    """NaN-aware, float4-aware equality form."""
    if isinstance(v, list):
        return [_comparable(x, float4) for x in v]
    if isinstance(v, float):
        if math.isnan(v):
            return "<nan>"
        return struct.pack("<f", v) if float4 else v
    if isinstance(v, Decimal) and v.is_nan():
        return "<decimal nan>"
    return v


def _select(r: psycopg.Connection[Any], ids: list[int]) -> dict[int, tuple[Any, ...]]:
    exprs = []
    for name, _typ, how, _kind in COLUMNS:
        if how == "raw":
            exprs.append(name)
        elif how == "_epochs":
            exprs.append(f"CASE WHEN {name} IS NOT NULL THEN (SELECT coalesce(array_agg(extract(epoch from x) "
                         f"ORDER BY o), '{{}}') FROM unnest({name}) WITH ORDINALITY AS u(x, o)) END")
        else:
            exprs.append(how.format(c=name))
    out = {}
    for row in r.execute(f"SELECT id, {', '.join(exprs)} FROM rt WHERE id = ANY(%s)", (ids,)):
        out[row[0]] = tuple(_expected(kind, v) for (_n, _t, _h, kind), v in zip(COLUMNS, row[1:], strict=True))
    return out


def _codec_round_trip(relation: Relation, op: Op, before: Any, after: Any) -> tuple[Any, Any]:
    from bridge.codec.codec import EnvelopeDecoder, TableCodec
    from bridge.codec.store import MemorySchemaStore

    store = MemorySchemaStore()
    codec = TableCodec(relation, store, db="src", topic_prefix="rt")
    event = ChangeEvent(relation, op, Position(Lsn(1), 0), 1, None, before, after)
    decoded = EnvelopeDecoder(store).decode(codec.value(event))
    return decoded.before, decoded.after


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow, HealthCheck.data_too_large])
@given(batch=rows)
def test_random_rows_round_trip(db: tuple[psycopg.Connection[Any], psycopg.Connection[Any], str],
                                batch: list[dict[str, str | None]]) -> None:
    w, r, slot = db
    names = [name for name, *_ in COLUMNS]
    casts = ", ".join(f"%s::{typ}" for _n, typ, *_ in COLUMNS)
    ids: list[int] = []
    with w.transaction():
        for row in batch:
            cur = w.execute(f"INSERT INTO rt ({', '.join(names)}) VALUES ({casts}) RETURNING id",
                            [row[n] for n in names])
            got = cur.fetchone()
            assert got is not None
            ids.append(got[0])
    expected = _select(r, ids)
    w.execute("DELETE FROM rt WHERE id = ANY(%s)", (ids,))

    lines = [line for (line,) in r.execute(
        "SELECT data FROM pg_logical_slot_get_changes(%s, NULL, NULL, 'include-xids', '1', "
        "'include-timestamp', '1', 'skip-empty-xacts', '1')", (slot,))]
    changes = [c for c in map(parse_line, lines) if isinstance(c, ChangeLine)]
    assert [c.op for c in changes] == ["INSERT"] * len(ids) + ["DELETE"] * len(ids)

    decoder = ChangeDecoder(Catalog(w))
    f4 = names.index("f4") + 1
    for change in changes:
        relation, op, before, after, unchanged = decoder.decode(change)
        assert unchanged == ()
        row = after if op is Op.INSERT else before
        assert row is not None
        want = expected[row[0]]
        got = row[1:]
        for i, name in enumerate(names):
            is_f4 = i + 1 == f4
            assert _comparable(got[i], is_f4) == _comparable(want[i], is_f4), (
                f"column {name}: decoded {got[i]!r} != selected {want[i]!r}; line: {lines}")
        # and through the Avro codec: what the sink decodes equals what the source decoded
        c_before, c_after = _codec_round_trip(relation, op, before, after)
        c_row = c_after if op is Op.INSERT else c_before
        assert c_row is not None
        assert [_comparable(v, i == f4) for i, v in enumerate(c_row)] == [
            _comparable(v, i == f4) for i, v in enumerate(row)]
