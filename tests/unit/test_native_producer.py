"""The native producer core against the Python reference, byte for byte (issue #15).

For random tables (every supported type, hostile identifiers, random keys and replica
identities) and their test_decoding lines — well-formed ones, hostile values, and mutilated
lines — every line's outcome with the native core (`NativeChangeDecoder.encode`, falling back to
the reference on a miss, as the producer does) equals the reference's (`parse_line` →
`ChangeDecoder.decode` → `TableCodec.key` / `.envelope`): the same key and envelope bytes, or an
error of the same class with the same message. The well-formed tests also require that the
native core, not the fallback, encoded the lines after the first, so they cannot pass by
always falling back.
"""

from __future__ import annotations

import datetime as dt
import string
import zlib
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge import native
from bridge.codec import MemorySchemaStore, Stamp, TableCodec
from bridge.errors import SchemaError
from bridge.events import Op
from bridge.produce.topics import key_body, partition_for
from bridge.relation import Column, Relation
from bridge.source.decoder import ChangeDecoder
from bridge.source.native_decoder import NativeChangeDecoder
from bridge.source.test_decoding import ChangeLine, parse_line

# -- types: (base, type_name with modifiers, printed type, quoted, kw for Column, value strategy) --


def _q(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)


def _ts_text(v: dt.datetime) -> str:
    s = f"{v.year:04d}-{v.month:02d}-{v.day:02d} {v.hour:02d}:{v.minute:02d}:{v.second:02d}"
    if v.microsecond:
        s += f".{v.microsecond:06d}".rstrip("0")
    return s


def _off_text(minutes: int) -> str:
    sign = "-" if minutes < 0 else "+"
    h, m = divmod(abs(minutes), 60)
    return f"{sign}{h:02d}" + (f":{m:02d}" if m else "")


_DATETIMES = st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30))


def _numeric_text(p: int, s: int) -> st.SearchStrategy[str]:
    digits = st.integers(min_value=-(10 ** (p + 1)), max_value=10 ** (p + 1))
    return st.one_of(
        st.builds(lambda n, e: str(Decimal(n).scaleb(-e)), digits, st.integers(min_value=0, max_value=s + 1)),
        st.sampled_from(["NaN", "Infinity", "-Infinity", "0", "-0.00", "1.50", "+7"]),
    )


def _array_item(text: str) -> str:
    """An element as array_out prints it: quoted when needed, `"` and `\\` escaped."""
    if text == "" or text.upper() == "NULL" or any(c in text for c in '{},"\\ \t\n\r\v\f'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def _array(items: st.SearchStrategy[str], dims: int = 1) -> st.SearchStrategy[str]:
    """PostgreSQL's text output of an array of `dims` dimensions (NULL elements included)."""
    leaf = st.one_of(st.none(), items).map(lambda v: "NULL" if v is None else _array_item(v))
    if dims == 1:
        return st.lists(leaf, max_size=4).map(lambda xs: "{" + ",".join(xs) + "}")
    return st.integers(1, 3).flatmap(lambda n: st.lists(st.lists(leaf, min_size=n, max_size=n), max_size=3)).map(
        lambda rows: "{" + ",".join("{" + ",".join(r) + "}" for r in rows) + "}")


_HOSTILE_ARRAYS = ["{1,NULL,3}", "[0:1]={1,2}", "{{1},{2}}", "{1,,2}", "{ 1}", '{"1"}', '{"NULL"}', "{1}x", "{",
                   "{a b}", '{"a\\"b"}', "{}"]


@dataclass(frozen=True)
class T:
    base: str
    type_name: str
    printed: str
    quoted: bool
    values: st.SearchStrategy[str]
    kw: tuple[tuple[str, Any], ...] = ()


TYPES: list[T] = [
    T("int2", "smallint", "smallint", False, st.integers(-(2**15), 2**15 - 1).map(str)),
    T("int4", "integer", "integer", False,
      st.one_of(st.integers(-(2**31), 2**31 - 1).map(str), st.sampled_from(["2147483648", "-0", "+5", "1_0"]))),
    T("int8", "bigint", "bigint", False,
      st.one_of(st.integers(-(2**63), 2**63 - 1).map(str), st.just("9223372036854775808"))),
    T("oid", "oid", "oid", False, st.integers(0, 2**32 - 1).map(str)),
    T("float4", "real", "real", False,
      st.one_of(st.floats(width=32).map(lambda f: repr(f).replace("nan", "NaN").replace("inf", "Infinity")),
                st.sampled_from(["1e39", "-1e-50", "NaN", "3.4028235e+38", "1_0", "inf"]))),
    T("float8", "double precision", "double precision", False,
      st.one_of(st.floats().map(lambda f: repr(f).replace("nan", "NaN").replace("inf", "Infinity")),
                st.sampled_from([".5", "5.", "1E5", "-Infinity", "nan"]))),
    T("numeric", "numeric(6,2)", "numeric", False, _numeric_text(6, 2), (("precision", 6), ("scale", 2))),
    T("numeric", "numeric(3,0)", "numeric", False, _numeric_text(3, 0), (("precision", 3), ("scale", 0))),
    T("numeric", "numeric(40,5)", "numeric", False, _numeric_text(40, 5), (("precision", 40), ("scale", 5))),
    T("numeric", "numeric", "numeric", False, _numeric_text(8, 3)),
    T("bool", "boolean", "boolean", False, st.sampled_from(["true", "false", "t", "f", "yes"])),
    T("text", "text", "text", True, st.one_of(_TEXT, st.sampled_from(["null", "unchanged-toast-datum", "''"]))),
    T("varchar", "character varying(5)", "character varying", True, _TEXT, (("length", 5),)),
    T("bpchar", "character(3)", "character", True, _TEXT, (("length", 3),)),
    T("bytea", "bytea", "bytea", True,
      st.one_of(st.binary(max_size=8).map(lambda b: "\\x" + b.hex()), st.sampled_from(["\\x0", "\\xZZ", "ab"]))),
    T("date", "date", "date", True,
      st.one_of(st.dates(min_value=dt.date(1, 1, 1)).map(lambda d: f"{d.year:04d}-{d.month:02d}-{d.day:02d}"),
                st.sampled_from(["infinity", "-infinity", "0044-03-15 BC", "12345-01-01", "2021-02-29"]))),
    T("time", "time without time zone", "time without time zone", True,
      st.one_of(st.times().map(lambda t: t.isoformat()), st.sampled_from(["24:00:00", "12:00", "1:00:00"]))),
    T("timestamp", "timestamp without time zone", "timestamp without time zone", True,
      st.one_of(_DATETIMES.map(_ts_text),
                st.sampled_from(["infinity", "-infinity", "2020-01-01 00:00:00 BC", "2020-01-01T00:00:00",
                                 "2020-01-01 00:00:00+00", "2020-01-01 00:00:00.1234567"]))),
    T("timestamptz", "timestamp with time zone", "timestamp with time zone", True,
      st.one_of(st.builds(lambda d, o: _ts_text(d) + _off_text(o), _DATETIMES, st.integers(-15 * 60, 15 * 60)),
                st.sampled_from(["infinity", "2020-01-01 00:00:00", "2020-01-01 00:00:00+05:30:15",
                                 "2020-01-01 00:00:00+0530"]))),
    T("uuid", "uuid", "uuid", True, st.uuids().map(str)),
    T("jsonb", "jsonb", "jsonb", True, _TEXT.map(lambda s: '{"a": ' + repr(s) + "}")),
    T("int4", "integer[]", "integer[]", True,
      st.one_of(_array(st.integers(-(2**31), 2**31 - 1).map(str)), st.sampled_from(_HOSTILE_ARRAYS)),
      (("ndims", 1),)),
    T("text", "text[]", "text[]", True, st.one_of(_array(_TEXT), st.sampled_from(_HOSTILE_ARRAYS)), (("ndims", 1),)),
    T("int8", "bigint[]", "bigint[]", True, _array(st.integers(-(2**63), 2**63 - 1).map(str), dims=2),
      (("ndims", 2),)),
    T("numeric", "numeric(6,2)[]", "numeric[]", True, _array(_numeric_text(6, 2)),
      (("ndims", 1), ("precision", 6), ("scale", 2))),
    T("timestamptz", "timestamp with time zone[]", "timestamp with time zone[]", True,
      _array(st.builds(lambda d, o: _ts_text(d) + _off_text(o), _DATETIMES, st.integers(-15 * 60, 15 * 60))),
      (("ndims", 1),)),
    T("bool", "boolean[]", "boolean[]", True, _array(st.sampled_from(["t", "f"])), (("ndims", 1),)),
    T("bytea", "bytea[]", "bytea[]", True, _array(st.binary(max_size=4).map(lambda b: "\\x" + b.hex())),
      (("ndims", 1),)),
    T("varchar", "character varying(2)[]", "character varying[]", True, _array(_TEXT), (("ndims", 1), ("length", 2))),
    T("mood", "mood", "mood", True, st.sampled_from(["happy", "sad"]), (("kind", "e"),)),
]

_NAME = st.one_of(
    st.text(alphabet=string.ascii_lowercase + "_", min_size=1, max_size=6).filter(lambda s: not s[0].isdigit()),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1,
            max_size=6),
    st.sampled_from(['a"b', "a b", "a.b", "ü", '"', "x]:y", "new-tuple:"]),
)


def quote_ident(name: str) -> str:
    bare = name[0] in string.ascii_lowercase + "_" and all(c in string.ascii_lowercase + string.digits + "_"
                                                           for c in name)
    return name if bare else '"' + name.replace('"', '""') + '"'


@dataclass
class Table:
    relation: Relation
    types: list[T]


@st.composite
def tables(draw: st.DrawFn) -> Table:
    types = draw(st.lists(st.sampled_from(TYPES), min_size=1, max_size=6))
    names = draw(st.lists(_NAME, min_size=len(types), max_size=len(types), unique=True))
    cols = tuple(Column(n, t.type_name, t.base, **dict(t.kw)) for n, t in zip(names, types, strict=True))
    keyable = [c.name for c, t in zip(cols, types, strict=True) if t.base not in ("float4", "float8")
               and not dict(t.kw).get("ndims")]
    pk = tuple(draw(st.lists(st.sampled_from(keyable), unique=True, max_size=2))) if keyable else ()
    ri = draw(st.sampled_from(["d", "f"]))
    schema = draw(_NAME)
    table = draw(_NAME)
    return Table(Relation(schema, table, cols, pk, replica_identity=ri), types)


def _value(draw: st.DrawFn, t: T, nullable: bool, toast: bool) -> str:
    if nullable and draw(st.integers(0, 9)) == 0:
        return "null"
    if toast and t.quoted and draw(st.integers(0, 9)) == 0:
        return "unchanged-toast-datum"
    text = draw(t.values)
    return _q(text) if t.quoted else text


def _tuple(parts: list[tuple[str, str, str]]) -> str:
    return "".join(f" {quote_ident(n)}[{p}]:{v}" for n, p, v in parts)


@st.composite
def change_lines(draw: st.DrawFn, tab: Table) -> str:
    rel = tab.relation
    head = f"table {quote_ident(rel.schema)}.{quote_ident(rel.table)}: "
    op = draw(st.sampled_from(["INSERT", "INSERT", "UPDATE", "DELETE", "OLDKEY"]))
    full = [(c.name, t.printed, _value(draw, t, c.name not in rel.primary_key, op == "UPDATE"))
            for c, t in zip(rel.columns, tab.types, strict=True)]
    if op == "INSERT":
        return head + "INSERT:" + _tuple(full)
    if op == "UPDATE":
        return head + "UPDATE:" + _tuple(full)
    if rel.replica_identity == "d" and rel.primary_key:
        old = [p for p in full if p[0] in rel.primary_key]
    else:
        old = [p for p in full if p[2] != "null"]
    if op == "DELETE":
        return head + "DELETE:" + (_tuple(old) or " (no-tuple-data)")
    return head + "UPDATE: old-key:" + _tuple(old) + " new-tuple:" + _tuple(full)


class FakeCatalog:
    """The table as the catalog describes it (one version), nothing else."""

    def __init__(self, relation: Relation) -> None:
        self.rel = relation

    def relation(self, schema: str, table: str) -> Relation:
        if (schema, table) != (self.rel.schema, self.rel.table):
            raise SchemaError("no such table", table=f"{schema}.{table}")
        return self.rel

    refresh = relation

    def relation_from_line(self, schema: str, table: str, names: list[str], types: list[str]) -> Relation:
        raise SchemaError("the test catalog cannot follow DDL", table=f"{schema}.{table}")

    def forget(self, schema: str, table: str) -> None:
        pass


STAMP = Stamp(0x16B374D848, 991, 1_763_000_000_000_001, False, 1_763_000_000_123)

Outcome = tuple[Any, ...]


class Harness:
    """One producer's view of a table: the reference, or the native core with the reference as
    its fallback (what `ChangeProducer` does with each line)."""

    def __init__(self, relation: Relation, use_native: bool) -> None:
        store = MemorySchemaStore()
        codecs: dict[int, TableCodec] = {}

        def codec_for(rel: Relation) -> TableCodec:
            c = codecs.get(id(rel))
            if c is None:
                c = codecs[id(rel)] = TableCodec(rel, store, db="app", topic_prefix="t")
            return c

        self.codec_for = codec_for
        catalog: Any = FakeCatalog(relation)
        self.native = NativeChangeDecoder(catalog, codec_for) if use_native else None
        self.decoder: ChangeDecoder = self.native or ChangeDecoder(catalog)

    def line(self, line: str, seq: int) -> Outcome:
        if self.native is not None:
            done = self.native.encode(line, seq, STAMP)
            if done is not None:
                _, op, key, value, at, key_hash = done
                assert at == seq
                # the partition hash the core returns is the producer's own (partition_for)
                assert key_hash == (zlib.crc32(key_body(key)) if key is not None else 0)
                assert partition_for(key, 7) == (key_hash % 7 if key is not None else 0)
                return ("ok", str(op), key, value)
        try:
            parsed = parse_line(line)
            if not isinstance(parsed, ChangeLine):
                return ("other", type(parsed).__name__)
            rel, op, before, after, unchanged = self.decoder.decode(parsed)
            codec = self.codec_for(rel)
            key = codec.key(after if after is not None else before)
            if op.value == "u" and before is not None and after is not None and rel.primary_key \
                    and codec.key(before) != key:
                return ("key-change", key, codec.key(before))  # the producer's split (reference path)
            return ("ok", str(op), key, codec.envelope(before, after, op, seq, STAMP, unchanged))
        except Exception as exc:
            return ("error", type(exc).__name__, str(exc))


def outcomes(relation: Relation, lines: list[str], use_native: bool) -> tuple[list[Outcome], int]:
    h = Harness(relation, use_native)
    out = [h.line(line, seq) for seq, line in enumerate(lines)]
    return out, h.native.encoded if h.native is not None else 0


pytestmark = pytest.mark.skipif(not hasattr(native.module(), "Producer"), reason="extension without the producer core")

_SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(st.data())
def test_native_bytes_equal_the_reference(data: st.DataObject) -> None:
    tab = data.draw(tables())
    lines = data.draw(st.lists(change_lines(tab), min_size=1, max_size=8))
    ref, _ = outcomes(tab.relation, lines, False)
    nat, _ = outcomes(tab.relation, lines, True)
    assert nat == ref


_GOOD: dict[str, st.SearchStrategy[str]] = {
    "int2": st.integers(-(2**15), 2**15 - 1).map(str),
    "int4": st.integers(-(2**31), 2**31 - 1).map(str),
    "int8": st.integers(-(2**63), 2**63 - 1).map(str),
    "float8": st.floats().map(lambda f: repr(f).replace("nan", "NaN").replace("inf", "Infinity")),
    "bool": st.sampled_from(["true", "false"]),
    "text": _TEXT,
    "uuid": st.uuids().map(str),
    "bytea": st.binary(max_size=8).map(lambda b: "\\x" + b.hex()),
    "timestamptz": st.builds(lambda d, o: _ts_text(d) + _off_text(o), _DATETIMES, st.integers(-15 * 60, 15 * 60)),
    "date": st.dates(min_value=dt.date(1, 1, 1)).map(lambda d: f"{d.year:04d}-{d.month:02d}-{d.day:02d}"),
}


@_SETTINGS
@given(st.data())
def test_well_formed_changes_are_encoded_natively(data: st.DataObject) -> None:
    kinds = data.draw(st.lists(st.sampled_from(sorted(_GOOD)), min_size=1, max_size=5))
    names = data.draw(st.lists(_NAME, min_size=len(kinds), max_size=len(kinds), unique=True))
    by_base = {t.base: t for t in TYPES if not t.kw}
    types = [T(k, by_base[k].type_name, by_base[k].printed, by_base[k].quoted, _GOOD[k]) for k in kinds]
    cols = tuple(Column(n, t.type_name, t.base) for n, t in zip(names, types, strict=True))
    pk = (names[0],) if kinds[0] not in ("float8",) else ()
    rel = Relation(data.draw(_NAME), data.draw(_NAME), cols, pk, replica_identity="d")
    tab = Table(rel, types)
    head = f"table {quote_ident(rel.schema)}.{quote_ident(rel.table)}: "
    lines = []
    for _ in range(data.draw(st.integers(2, 6))):
        full = [(c.name, t.printed, _value(data.draw, t, c.name not in pk, False))
                for c, t in zip(cols, types, strict=True)]
        lines.append(head + data.draw(st.sampled_from(["INSERT:", "UPDATE:"])) + _tuple(full))
    if pk:
        lines.append(head + "DELETE:" + _tuple([p for p in full if p[0] in pk]))
    ref, _ = outcomes(tab.relation, lines, False)
    nat, encoded = outcomes(tab.relation, lines, True)
    assert nat == ref
    assert all(o[0] == "ok" for o in ref)
    assert encoded == len(lines) - 1  # the first line installs the plan, the rest are native


@_SETTINGS
@given(st.data())
def test_mutilated_lines_give_the_reference_outcome(data: st.DataObject) -> None:
    tab = data.draw(tables())
    good = data.draw(change_lines(tab))
    line = data.draw(change_lines(tab))
    how = data.draw(st.sampled_from(["cut", "insert", "delete", "swap_type"]))
    i = data.draw(st.integers(0, len(line)))
    if how == "cut":
        line = line[:i]
    elif how == "insert":
        line = line[:i] + data.draw(st.sampled_from(["'", '"', " ", "]", ":", "[", "B'", "''", "x", "\n"])) + line[i:]
    elif how == "delete":
        line = line[:i] + line[i + 1:]
    else:
        line = line.replace("[", "[bigint", 1)
    lines = [good, line, good]
    ref, _ = outcomes(tab.relation, lines, False)
    nat, _ = outcomes(tab.relation, lines, True)
    assert nat == ref


def test_modifier_overflow_raises_the_reference_error() -> None:
    """A value over varchar(n) (a widening the lines do not show) reaches the reference path,
    whose ModifierError makes the producer re-read the catalog."""
    rel = Relation("public", "t", (Column("id", "integer", "int4"), Column("v", "character varying(3)", "varchar",
                                                                            length=3)), ("id",))
    lines = ["table public.t: INSERT: id[integer]:1 v[character varying]:'abc'",
             "table public.t: INSERT: id[integer]:2 v[character varying]:'abcd'",
             "table public.t: INSERT: id[integer]:3 v[numeric]:'abc'",
             "table public.t: INSERT: id[integer]:4 v[character varying]:'abc'",
             "table public.t: INSERT: id[integer]:5 v[character varying]:'abc'"]
    nat, encoded = outcomes(rel, lines, True)
    ref, _ = outcomes(rel, lines, False)
    assert nat == ref
    assert nat[1][:2] == ("error", "ModifierError")
    # another printed type (DDL): the reference re-reads the catalog (here: the same relation) and
    # learns the printed types again, and so does the plan
    assert [o[0] for o in nat] == ["ok", "error", "ok", "ok", "ok"]
    assert encoded == 1  # lines 1, 3 and 4 install plans, 2 is a modifier miss, 5 is native


def test_parse_errors_keep_line_and_offset() -> None:
    core = native.module().Producer((Op.INSERT, Op.UPDATE, Op.DELETE))
    assert core.check("table public.t: INSERT: a[text]:'x'") is None
    assert core.check("table public.t: INSERT: a[text]:'open") == (23, "expected ` name[type]:value` or the end "
                                                                         "of the line")
    h = Harness(Relation("public", "t", (Column("a", "text", "text"),)), True)
    out = h.line("table public.t: INSERT: a[text]:'open", 0)
    assert out[:2] == ("error", "DecodeError") and "offset" in out[2] and "'open" in out[2]


def test_the_stamp_and_the_key_come_from_the_transaction_and_the_row() -> None:
    rel = Relation("s", "t", (Column("id", "bigint", "int8"), Column("at", "timestamp with time zone", "timestamptz")),
                   ("id",))
    h = Harness(rel, True)
    first = "table s.t: INSERT: id[bigint]:1 at[timestamp with time zone]:'2026-11-23 23:10:21.123456+00'"
    h.line(first, 0)
    assert h.native is not None
    done = h.native.encode(first.replace(":1 ", ":300 "), 7, STAMP)
    assert done is not None
    relation, op, key, value, _seq, _hash = done
    codec = h.codec_for(relation)
    ts = int((dt.datetime(2026, 11, 23, 23, 10, 21, 123456, tzinfo=dt.UTC)
              - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)).total_seconds()) * 1_000_000 + 123456
    assert key == codec.key((300, ts))
    assert value == codec.envelope(None, (300, ts), op, 7, STAMP)
    other = Stamp(5, 6, None, False, 7)
    assert h.native.encode(first, 8, other)[3] == codec.envelope(None, (1, ts), op, 8, other)  # type: ignore[index]



def test_old_key_updates_are_native_unless_the_key_changes() -> None:
    """REPLICA IDENTITY FULL prints an old tuple with every update: the core encodes it (before
    and after) when the key stays, and leaves a key change to the producer's split."""
    for pk in (("id",), ()):
        rel = Relation("public", "ev", (Column("id", "integer", "int4"), Column("kind", "text", "text"),
                                        Column("n", "bigint", "int8")), pk, replica_identity="f")
        head = "table public.ev: "
        lines = [head + "INSERT: id[integer]:1 kind[text]:'a' n[bigint]:null",
                 head + "UPDATE: old-key: id[integer]:1 kind[text]:'a' new-tuple: id[integer]:1 kind[text]:'b' "
                        "n[bigint]:5",
                 head + "UPDATE: old-key: id[integer]:1 kind[text]:'b' n[bigint]:5 new-tuple: id[integer]:2 "
                        "kind[text]:'b' n[bigint]:5",
                 head + "DELETE: id[integer]:2 kind[text]:'b' n[bigint]:5"]
        nat, encoded = outcomes(rel, lines, True)
        ref, _ = outcomes(rel, lines, False)
        assert nat == ref
        assert [o[0] for o in nat] == ["ok", "ok", "key-change" if pk else "ok", "ok"]
        assert encoded == (2 if pk else 3)


def test_array_columns_are_native() -> None:
    rel = Relation("public", "arr", (Column("id", "integer", "int4"), Column("xs", "integer[]", "int4", ndims=1),
                                     Column("ts", "text[]", "text", ndims=1),
                                     Column("m", "bigint[]", "int8", ndims=2)), ("id",))
    head = "table public.arr: INSERT: id[integer]:"
    lines = [head + f"{i} xs[integer[]]:{xs} ts[text[]]:{ts} m[bigint[]]:{m}" for i, (xs, ts, m) in enumerate([
        ("'{1,NULL,3}'", "'{a,\"b c\",\"NULL\",NULL,\"q\\\"\"}'", "'{{1,2},{3,NULL}}'"),
        ("'{}'", "'{}'", "'{}'"),
        ("'[0:1]={7,8}'", "'{\"it''s\"}'", "'{{-9223372036854775808}}'"),
        ("null", "null", "null"),
        ("'{1,,2}'", "'{x}'", "'{{1}}'"),  # not PostgreSQL's output: the reference decides (an error)
    ])]
    nat, encoded = outcomes(rel, lines, True)
    ref, _ = outcomes(rel, lines, False)
    assert nat == ref
    assert [o[0] for o in nat] == ["ok", "ok", "ok", "ok", "error"]
    assert encoded == 3  # the first installs the plan; the last is a value miss
