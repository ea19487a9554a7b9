"""The test_decoding line parser: golden lines, malformed lines, fuzzing and round trips.

`render_*` below print exactly what contrib/test_decoding prints (quote_identifier,
quote_qualified_identifier, print_literal, tuple_to_stringinfo), so the round-trip properties
check the parser against the plugin's grammar, not against itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bridge.errors import DecodeError
from bridge.source import test_decoding as td
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
    Unchanged,
    parse_line,
)

# --- a renderer that prints what test_decoding prints -------------------------------------------

# Keywords quote_identifier quotes (reserved, col_name and type_func_name ones); a sample is
# enough: the parser must accept both forms anyway.
_QUOTED_KEYWORDS = frozenset(
    "all and any as asc between bigint boolean both case cast char check column constraint "
    "create cross current_date default desc distinct do else end except false fetch for foreign "
    "from grant group having in inner int integer into is join leading left like limit not null "
    "numeric offset on only or order outer primary real references right select smallint some "
    "table then time timestamp to trailing true union unique user using values varchar when "
    "where window with".split()
)


def qi(name: str) -> str:
    """PostgreSQL's quote_identifier."""
    if re.fullmatch(r"[a-z_][a-z0-9_]*", name) and name not in _QUOTED_KEYWORDS:
        return name
    return '"' + name.replace('"', '""') + '"'


def literal(kind: str, value: RawValue) -> str:
    """tuple_to_stringinfo's value: null, unchanged-toast-datum or print_literal by kind."""
    if value is None:
        return "null"
    if isinstance(value, Unchanged):
        return "unchanged-toast-datum"
    if kind == "u":  # int2/4/8, oid, float4/8, numeric: printed as is
        return value
    if kind == "bool":  # the parser hands back test_decoding's true/false
        return value
    if kind == "bit":
        return f"B'{value}'"
    return "'" + value.replace("'", "''") + "'"


Col = tuple[str, str, str, RawValue]  # name, type text (format_type_be), kind, value


def render_tuple(cols: list[Col], skip_nulls: bool = False) -> str:
    return "".join(
        f" {qi(n)}[{t}]:{literal(k, v)}" for n, t, k, v in cols if not (skip_nulls and v is None)
    )


def raw_tuple(cols: list[Col], skip_nulls: bool = False) -> RawTuple:
    kept = [c for c in cols if not (skip_nulls and c[3] is None)]
    return RawTuple([c[0] for c in kept], [c[1] for c in kept], [c[3] for c in kept])


def render_change(schema: str, table: str, op: str, new: list[Col] | None,
                  old: list[Col] | None) -> str:
    head = f"table {qi(schema)}.{qi(table)}: {op}:"
    if op == "INSERT":
        return head + (render_tuple(new) if new is not None else " (no-tuple-data)")
    if op == "UPDATE":
        old_part = "" if old is None else " old-key:" + render_tuple(old, skip_nulls=True) + " new-tuple:"
        return head + old_part + (render_tuple(new) if new is not None else " (no-tuple-data)")
    return head + (render_tuple(old, skip_nulls=True) if old is not None else " (no-tuple-data)")


def render_message(transactional: bool, prefix: str, content: str) -> str:
    sz = len(content.encode())
    return f"message: transactional: {int(transactional)} prefix: {prefix}, sz: {sz} content:{content}"


def parse_all_paths(line: str) -> Line:
    """Parse with an empty layout memo (generic path), again (memo learns, compiles), and a third
    time (the compiled fast path); all three must agree, in value and in error."""
    td._layouts.clear()
    outcomes: list[Any] = []
    for _ in range(3):
        try:
            outcomes.append(parse_line(line))
        except DecodeError as exc:
            outcomes.append(("error", exc.context.get("offset"), exc.message))
    assert outcomes[0] == outcomes[1] == outcomes[2], outcomes
    if isinstance(outcomes[0], tuple):
        raise DecodeError(outcomes[0][2], offset=outcomes[0][1])
    result: Line = outcomes[0]
    return result


@pytest.fixture(autouse=True)
def _fresh_memo() -> Iterator[None]:
    td._layouts.clear()
    yield
    td._layouts.clear()


# --- golden lines --------------------------------------------------------------------------------

LONG = "x" * 63  # NAMEDATALEN - 1
LONG_UNICODE = "ü" * 31 + "x"  # 63 bytes in UTF-8

GOLDEN: list[tuple[str, Line]] = [
    ("BEGIN 123", BeginLine(123)),
    ("BEGIN 4294967295", BeginLine(4294967295)),
    ("COMMIT 123 (at 2026-11-23 23:10:21.123456+00)", CommitLine(123, "2026-11-23 23:10:21.123456+00")),
    ("COMMIT 7 (at 2026-11-23 23:10:21+05:30)", CommitLine(7, "2026-11-23 23:10:21+05:30")),
    ("COMMIT 7 (at 0044-03-15 12:00:00+00 BC)", CommitLine(7, "0044-03-15 12:00:00+00 BC")),
    ("COMMIT 7", CommitLine(7, None)),
    ("COMMIT", CommitLine(None, None)),
    ("COMMIT (at 2026-11-23 23:10:21+00)", CommitLine(None, "2026-11-23 23:10:21+00")),
    (
        "table public.orders: INSERT: id[bigint]:123456 account_id[integer]:42 amount[numeric]:1234.56 "
        "status[text]:'shipped_pending' note[text]:'a quote '' in it' "
        "created_at[timestamp with time zone]:'2026-11-23 23:10:21.123456+00' "
        "payload[jsonb]:'{\"a\": 1, \"b\": [1, 2]}'",
        ChangeLine("public", "orders", "INSERT", RawTuple(
            ["id", "account_id", "amount", "status", "note", "created_at", "payload"],
            ["bigint", "integer", "numeric", "text", "text", "timestamp with time zone", "jsonb"],
            ["123456", "42", "1234.56", "shipped_pending", "a quote ' in it",
             "2026-11-23 23:10:21.123456+00", '{"a": 1, "b": [1, 2]}'],
        ), None),
    ),
    # null vs 'null', empty string, unchanged TOAST, special numbers, booleans, bit strings
    (
        "table public.t: INSERT: a[text]:null b[text]:'null' c[text]:'' d[text]:unchanged-toast-datum "
        "e[text]:'unchanged-toast-datum' f[numeric]:NaN g[double precision]:-Infinity h[real]:Infinity "
        "i[double precision]:1.5e+300 j[boolean]:true k[boolean]:false l[bit]:B'0101' m[bit varying]:B'' "
        "n[oid]:4294967295 o[smallint]:-32768 p[text]:''''",
        ChangeLine("public", "t", "INSERT", RawTuple(
            list("abcdefghijklmnop"),
            ["text"] * 5 + ["numeric", "double precision", "real", "double precision", "boolean", "boolean",
                            "bit", "bit varying", "oid", "smallint", "text"],
            [None, "null", "", UNCHANGED, "unchanged-toast-datum", "NaN", "-Infinity", "Infinity", "1.5e+300",
             "true", "false", "0101", "", "4294967295", "-32768", "'"],
        ), None),
    ),
    # quoted identifiers: spaces, dots, doubled quotes, keywords, unicode, 63 bytes
    (
        'table "My Schema"."a.b": INSERT: "table"[integer]:1 "INSERT"[integer]:2 "null"[text]:null '
        f'"a""b"[text]:\'x\' {LONG}[text]:\'y\' "{LONG_UNICODE}"[text]:\'z\' "x]:y [z"[text]:\'w\'',
        ChangeLine("My Schema", "a.b", "INSERT", RawTuple(
            ["table", "INSERT", "null", 'a"b', LONG, LONG_UNICODE, "x]:y [z"],
            ["integer", "integer", "text", "text", "text", "text", "text"],
            ["1", "2", None, "x", "y", "z", "w"],
        ), None),
    ),
    ('table "a""b"."c"" d": DELETE: id[integer]:1',
     ChangeLine('a"b', 'c" d', "DELETE", None, RawTuple(["id"], ["integer"], ["1"]))),
    (f'table {LONG}."{LONG_UNICODE}": DELETE: (no-tuple-data)',
     ChangeLine(LONG, LONG_UNICODE, "DELETE", None, None)),
    # type names: modifiers, spaces, arrays, quotes, schema qualification
    (
        "table public.types: INSERT: a[character varying(20)]:'x' b[timestamp with time zone]:'t' "
        "c[numeric(12,2)]:12.50 d[integer[]]:'{1,NULL}' e[public.\"My Enum\"[]]:'{x,\"y z\"}' "
        "f[\"My Schema\".\"a]:b\"]:'v' g[text[][]]:'{{a}}' h[time(3) without time zone]:'10:00:00' "
        "i[\"char\"]:'c' j[\"x\"\"y\"]:'q'",
        ChangeLine("public", "types", "INSERT", RawTuple(
            list("abcdefghij"),
            ["character varying(20)", "timestamp with time zone", "numeric(12,2)", "integer[]",
             'public."My Enum"[]', '"My Schema"."a]:b"', "text[][]", "time(3) without time zone",
             '"char"', '"x""y"'],
            ["x", "t", "12.50", "{1,NULL}", '{x,"y z"}', "v", "{{a}}", "10:00:00", "c", "q"],
        ), None),
    ),
    # hostile values: grammar text, newlines, control characters, unicode
    (
        "table public.h: INSERT: a[text]:' new-tuple: b[text]:''x''' b[text]:']:[]:' "
        "c[text]:'line1\nline2\r\n\ttab' d[text]:'\x01\x1f\x7f' e[text]:'😀 ünï ‮ \u2028' "
        "f[text]:' old-key: ' g[text]:'table x.y: INSERT:'",
        ChangeLine("public", "h", "INSERT", RawTuple(
            list("abcdefg"), ["text"] * 7,
            [" new-tuple: b[text]:'x'", "]:[]:", "line1\nline2\r\n\ttab", "\x01\x1f\x7f", "😀 ünï ‮ \u2028",
             " old-key: ", "table x.y: INSERT:"],
        ), None),
    ),
    ("table public.t: INSERT:", ChangeLine("public", "t", "INSERT", RawTuple([], [], []), None)),
    ("table public.t: INSERT: (no-tuple-data)", ChangeLine("public", "t", "INSERT", None, None)),
    ("table public.t: INSERT: (no-tuple data)", ChangeLine("public", "t", "INSERT", None, None)),
    # UPDATE: plain, old-key (key change / REPLICA IDENTITY FULL, nulls skipped), no tuple data
    ("table public.t: UPDATE: id[integer]:1 v[text]:unchanged-toast-datum",
     ChangeLine("public", "t", "UPDATE", RawTuple(["id", "v"], ["integer", "text"], ["1", UNCHANGED]), None)),
    (
        "table public.t: UPDATE: old-key: id[integer]:1 v[text]:' new-tuple: x[text]:''' "
        "new-tuple: id[integer]:2 v[text]:null",
        ChangeLine("public", "t", "UPDATE",
                   RawTuple(["id", "v"], ["integer", "text"], ["2", None]),
                   RawTuple(["id", "v"], ["integer", "text"], ["1", " new-tuple: x[text]:'"])),
    ),
    ("table public.t: UPDATE: old-key: new-tuple: id[integer]:2",
     ChangeLine("public", "t", "UPDATE", RawTuple(["id"], ["integer"], ["2"]), RawTuple([], [], []))),
    ("table public.t: UPDATE: (no-tuple-data)", ChangeLine("public", "t", "UPDATE", None, None)),
    ('table public.t: DELETE: id[integer]:1 "k 2"[text]:\'a\'',
     ChangeLine("public", "t", "DELETE", None, RawTuple(["id", "k 2"], ["integer", "text"], ["1", "a"]))),
    # TRUNCATE
    ('table public.a, "My Schema"."b, c: TRUNCATE:": TRUNCATE: restart_seqs cascade',
     TruncateLine([("public", "a"), ("My Schema", "b, c: TRUNCATE:")], True, True)),
    ("table public.a: TRUNCATE: restart_seqs", TruncateLine([("public", "a")], True, False)),
    ("table public.a: TRUNCATE: cascade", TruncateLine([("public", "a")], False, True)),
    ("table public.a: TRUNCATE: (no-flags)", TruncateLine([("public", "a")], False, False)),
    # messages: raw prefix and content
    ("message: transactional: 1 prefix: foo, sz: 5 content:hello", MessageLine(True, "foo", "hello")),
    ("message: transactional: 0 prefix: , sz: 0 content:", MessageLine(False, "", "")),
    ("message: transactional: 0 prefix: p, sz: 3 content:ü\n", MessageLine(False, "p", "ü\n")),
    ("message: transactional: 1 prefix: a, sz: 1 content:b, sz: 3 content:xyz",
     MessageLine(True, "a, sz: 1 content:b", "xyz")),
    ("message: transactional: 1 prefix: a, sz: 3 content:x'y", MessageLine(True, "a", "x'y")),
]


@pytest.mark.parametrize(("line", "expected"), GOLDEN, ids=[g[0][:40] for g in GOLDEN])
def test_golden(line: str, expected: Line) -> None:
    assert parse_all_paths(line) == expected


MALFORMED: list[tuple[str, int, str | None]] = [
    ("", 0, "not a test_decoding line"),
    ("garbage", 0, "not a test_decoding line"),
    ("begin 5", 0, "not a test_decoding line"),
    ("BEGIN", 5, "BEGIN <xid>"),
    ("BEGIN x12", 6, "BEGIN <xid>"),
    ("BEGIN -1", 6, "BEGIN <xid>"),
    ("BEGIN 12 ", 6, "BEGIN <xid>"),
    ("BEGIN 4294967296", 6, "out of range"),
    ("BEGIN ١٢٣", 6, "BEGIN <xid>"),  # Arabic-Indic digits are not an xid
    ("COMMIT x", 6, "COMMIT <xid>"),
    ("COMMIT 5 (at 2026-11-23", 6, "COMMIT <xid>"),
    ("COMMIT 99999999999", 6, "COMMIT <xid>"),
    ("table ", 6, "expected a schema name"),
    ("table public", 12, "expected `.`"),
    ("table public.t INSERT: id[integer]:1", 14, "expected `: `"),
    ('table "public.t: INSERT: id[integer]:1', 6, "unterminated quoted schema name"),
    ('table public."t: INSERT: id[integer]:1', 13, "unterminated quoted table name"),
    ("table public.t: UPSERT: id[integer]:1", 16, "expected INSERT:"),
    ("table public.t: INSERT id[integer]:1", 16, "expected INSERT:"),
    ("table public.t: TRUNCATE:", 25, "restart_seqs"),
    ("table public.t: TRUNCATE: everything", 25, "restart_seqs"),
    ("table public.t: INSERT: id[integer]:'abc", 36, "unterminated quoted value"),
    ("table public.t: INSERT: id[text]:'it''s", 33, "unterminated quoted value"),
    ("table public.t: INSERT: id[integer]:B'01", 36, "unterminated quoted value"),
    ("table public.t: INSERT: id[integer:1", 27, "expected `]:`"),
    ("table public.t: INSERT: id[integer]", 27, "expected `]:`"),
    ("table public.t: INSERT: id integer]:1", 26, "expected `[`"),
    ('table public.t: INSERT: "id[integer]:1', 24, "unterminated quoted column name"),
    ("table public.t: INSERT: id[integer]:", 36, "expected a value"),
    ("table public.t: INSERT: id[integer]:1x'", 38, "after the value"),
    ("table public.t: INSERT: id[text]:'a'b", 36, "after the value"),
    ("table public.t: INSERT: id[integer]:1  v[integer]:2", 38, "expected a column name"),
    ("table public.t: INSERT: id[integer]:1 ", 38, "end of line"),
    ("table public.t: INSERT:id[integer]:1", 23, "name[type]:value"),
    ("table public.t: INSERT: id[integer]:1\n", 37, "after the value"),
    ("table public.t: INSERT: (no-tuple-data) ", 24, "expected a column name"),
    ("table public.t: UPDATE: old-key: id[integer]:1", 46, "new-tuple"),
    ("table public.t: UPDATE: old-key: id[integer]:1 id[integer]:2", 60, "new-tuple"),
    ("table public.t: UPDATE: old-key: id[integer]:1 new-tuple:", 57, None),  # empty new tuple is fine
    ("table public.t: DELETE: id[integer]:'1", 36, "unterminated quoted value"),
    ("message: transactional: 2 prefix: p, sz: 1 content:x", 24, "transactional: 0|1"),
    ("message: transactional: 1 prefix: p", 34, "sz: <n> content:"),
    ("message: transactional: 1", 25, "unexpected end"),
    ("message: nope", 9, "transactional"),
]


@pytest.mark.parametrize(("line", "offset", "what"), MALFORMED, ids=[m[0][:40] for m in MALFORMED])
def test_malformed(line: str, offset: int, what: str | None) -> None:
    if what is None:
        assert isinstance(parse_all_paths(line), ChangeLine)
        return
    with pytest.raises(DecodeError) as info:
        parse_all_paths(line)
    assert info.value.context["offset"] == offset, info.value
    assert what in info.value.message


def test_error_names_line_and_offset() -> None:
    line = "table public.t: INSERT: id[integer]:'" + "x" * 500
    with pytest.raises(DecodeError) as info:
        parse_line(line)
    err = info.value
    assert err.context["line"] == line[:200]
    assert err.context["offset"] == 36
    assert "offset=36" in str(err) and "unterminated" in str(err)


@pytest.mark.parametrize("bad", [None, 5, b"BEGIN 5", ["BEGIN 5"]])
def test_not_a_string_is_a_decode_error(bad: Any) -> None:
    with pytest.raises(DecodeError):
        parse_line(bad)


def test_unchanged_is_a_singleton() -> None:
    import copy
    import pickle

    assert Unchanged() is UNCHANGED
    assert copy.deepcopy(UNCHANGED) is UNCHANGED
    assert pickle.loads(pickle.dumps(UNCHANGED)) is UNCHANGED
    assert repr(UNCHANGED) == "UNCHANGED"


# --- the layout memo (fast path) -----------------------------------------------------------------

HEADER = "table public.t: INSERT:"


def test_layout_memo_compiles_on_second_sighting_and_is_used() -> None:
    line = f"{HEADER} id[integer]:1 v[text]:'a'"
    parse_line(line)
    assert td._layouts[HEADER].pattern is None
    parse_line(line)
    pattern = td._layouts[HEADER].pattern
    assert pattern is not None
    got = parse_line(f"{HEADER} id[integer]:2 v[text]:'it''s'")
    assert got == ChangeLine("public", "t", "INSERT", RawTuple(["id", "v"], ["integer", "text"], ["2", "it's"]), None)
    assert td._layouts[HEADER].pattern is pattern  # served by the pattern, nothing relearned


def test_fast_path_results_are_independent_objects() -> None:
    line = f"{HEADER} id[integer]:1 v[text]:'a'"
    a, b, c = parse_line(line), parse_line(line), parse_line(line)
    assert isinstance(c, ChangeLine) and isinstance(b, ChangeLine) and c.new is not None and b.new is not None
    c.new.names.append("mutated")
    c.new.types.clear()
    assert parse_line(line) == a


def test_layout_change_ddl_and_toast_and_nulls_on_the_fast_path() -> None:
    lines = [
        f"{HEADER} id[integer]:1 v[text]:'a'",
        f"{HEADER} id[integer]:2 v[text]:'b'",
        f"{HEADER} id[integer]:null v[text]:null",
        f"{HEADER} id[integer]:3 v[text]:unchanged-toast-datum",  # not in the pattern: generic path
        f"{HEADER} id[integer]:4 v[text]:'c' w[integer]:5",  # ADD COLUMN
        f"{HEADER} id[integer]:5 v[text]:'d' w[integer]:6",
        f"{HEADER} id[integer]:6 v[text]:'e' w[integer]:7",
        f"{HEADER} id[integer]:7 v[text]:'f'",  # back (another writer, old layout)
        f"{HEADER} id[integer]:8 v[text]:'g' w[integer]:null",
    ]
    for line in lines:
        fresh = parse_all_paths(line)
        td._layouts.clear()
    # Same sequence through one memo: every answer equals the memo-free answer.
    expected = []
    for line in lines:
        td._layouts.clear()
        expected.append(parse_line(line))
    td._layouts.clear()
    for _ in range(3):
        assert [parse_line(line) for line in lines] == expected
    assert fresh == expected[-1]


def test_kind_guess_is_corrected_by_what_is_seen() -> None:
    # A user type that prints as `integer` (quoted values) and a domain over bit.
    lines = [f"{HEADER} a[integer]:'x''y' b[mybits]:B'01'"] * 4 + [f"{HEADER} a[integer]:null b[mybits]:null"]
    results = [parse_line(line) for line in lines]
    assert results[0] == ChangeLine("public", "t", "INSERT", RawTuple(["a", "b"], ["integer", "mybits"], ["x'y", "01"]), None)
    assert all(r == results[0] for r in results[1:4])
    assert results[4] == ChangeLine("public", "t", "INSERT", RawTuple(["a", "b"], ["integer", "mybits"], [None, None]), None)
    assert td._layouts[HEADER].kinds == ("q", "b")


def test_alternating_layouts_stay_correct_and_bound_compiles() -> None:
    a = "table public.t: DELETE: id[integer]:1 v[text]:'a'"
    b = "table public.t: DELETE: id[integer]:1"
    for i in range(200):
        line = a if (i // 2) % 2 else b
        got = parse_line(line)
        assert isinstance(got, ChangeLine) and got.old is not None
        assert got.old.names == (["id", "v"] if line == a else ["id"])
    assert td._layouts["table public.t: DELETE:"].compiles <= td._MAX_COMPILES


def test_memo_is_bounded() -> None:
    for i in range(td._MAX_LAYOUTS + 10):
        parse_line(f"table public.t{i}: INSERT: id[integer]:{i}")
    assert len(td._layouts) <= td._MAX_LAYOUTS


def test_header_with_colon_space_in_a_name_never_hits_a_wrong_layout() -> None:
    l1 = 'table public."a: INSERT:": INSERT: id[integer]:1'
    l2 = "table public.a: INSERT: id[integer]:2"
    for _ in range(3):
        assert parse_line(l1) == ChangeLine("public", "a: INSERT:", "INSERT", RawTuple(["id"], ["integer"], ["1"]), None)
        assert parse_line(l2) == ChangeLine("public", "a", "INSERT", RawTuple(["id"], ["integer"], ["2"]), None)


def test_wide_table() -> None:
    cols: list[Col] = [(f"c{i}", "integer" if i % 2 else "text", "u" if i % 2 else "q",
                        str(i) if i % 2 else f"v'{i}") for i in range(1600)]
    line = render_change("public", "wide", "INSERT", cols, None)
    assert parse_all_paths(line) == ChangeLine("public", "wide", "INSERT", raw_tuple(cols), None)


# --- hypothesis: round trips ----------------------------------------------------------------------

_no_nul = st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00")
identifiers = st.one_of(
    st.from_regex(r"[a-z_][a-z0-9_]{0,20}", fullmatch=True),
    st.sampled_from(["table", "INSERT", "null", "user", "old-key", "new-tuple", "a.b", 'a"b', "x]:y", "B'0'",
                     "(no-tuple-data)", "My Table", "ünï", "x" * 63]),
    st.text(_no_nul, min_size=1, max_size=20),
)
type_names = st.one_of(
    st.sampled_from(["integer", "text", "character varying", "character varying(20)", "numeric(12,2)",
                     "timestamp with time zone", "timestamp(3) without time zone", "integer[]", "text[][]",
                     "double precision", "bit varying", '"char"', 'public."My Enum"[]', "jsonb"]),
    st.tuples(identifiers, identifiers, st.booleans()).map(
        lambda t: f"{qi(t[0])}.{qi(t[1])}{'[]' if t[2] else ''}"),
    identifiers.map(qi),
)
unquoted_values = st.one_of(
    st.integers(-(2**63), 2**64).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.decimals(allow_nan=False, allow_infinity=False).map(str),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e-05", "0.000", "nullx", "nan"]),
)


@st.composite
def columns(draw: st.DrawFn, min_size: int = 0) -> list[Col]:
    n = draw(st.integers(min_size, 8))
    out: list[Col] = []
    for _ in range(n):
        name = draw(identifiers)
        kind = draw(st.sampled_from(["u", "q", "q", "bool", "bit"]))
        if kind == "u":
            typ = draw(st.sampled_from(["integer", "bigint", "numeric", "real", "double precision", "oid"]) | type_names)
            value: RawValue = draw(unquoted_values)
        elif kind == "bool":
            typ, value = "boolean", draw(st.sampled_from(["true", "false"]))
        elif kind == "bit":
            typ, value = draw(st.sampled_from(["bit", "bit varying"])), draw(st.text("01", max_size=12))
        else:
            typ = draw(type_names)
            value = draw(st.text(_no_nul, max_size=30) | st.sampled_from(["null", "''", "'", " new-tuple: ", "]:"]))
        if draw(st.integers(0, 5)) == 0:
            value = draw(st.sampled_from([None, UNCHANGED])) if kind == "q" else None
        out.append((name, typ, kind, value))
    return out


@given(schema=identifiers, table=identifiers, new=columns(), old=st.none() | columns(min_size=1),
       op=st.sampled_from(["INSERT", "UPDATE", "DELETE"]), no_tuple=st.sampled_from([False] * 7 + [True]))
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_roundtrip_change(schema: str, table: str, new: list[Col], old: list[Col] | None, op: str,
                          no_tuple: bool) -> None:
    if op == "INSERT":
        new_, old_ = (None if no_tuple else new), None
    elif op == "UPDATE":
        new_, old_ = (None if no_tuple else new), old
    else:
        new_, old_ = None, (None if no_tuple else new)
    line = render_change(schema, table, op, new_, old_)
    expected = ChangeLine(
        schema, table, op,
        None if new_ is None else raw_tuple(new_),
        None if old_ is None else raw_tuple(old_, skip_nulls=True),
    )
    assert parse_all_paths(line) == expected


@given(st.lists(st.tuples(identifiers, identifiers), min_size=1, max_size=4), st.booleans(), st.booleans())
def test_roundtrip_truncate(rels: list[tuple[str, str]], restart: bool, cascade: bool) -> None:
    flags = (" restart_seqs" if restart else "") + (" cascade" if cascade else "") or " (no-flags)"
    line = "table " + ", ".join(f"{qi(s)}.{qi(t)}" for s, t in rels) + ": TRUNCATE:" + flags
    assert parse_all_paths(line) == TruncateLine(rels, restart, cascade)


@given(st.booleans(), st.text(_no_nul, max_size=30), st.text(_no_nul, max_size=60))
@example(True, "a, sz: 1 content:b", "xyz")
@example(False, "p", ", sz: 3 content:abc")
def test_roundtrip_message(transactional: bool, prefix: str, content: str) -> None:
    line = render_message(transactional, prefix, content)
    got = parse_all_paths(line)
    assert isinstance(got, MessageLine)
    # A prefix containing `, sz: N content:` can make the line itself ambiguous; the parse must
    # then still be one that prints back to the same line.
    assert render_message(got.transactional, got.prefix, got.content) == line
    if ", sz: " not in prefix:
        assert got == MessageLine(transactional, prefix, content)


@given(st.integers(0, 2**32 - 1), st.datetimes().map(lambda d: d.isoformat(" ") + "+00"))
def test_roundtrip_begin_commit(xid: int, ts: str) -> None:
    assert parse_all_paths(f"BEGIN {xid}") == BeginLine(xid)
    assert parse_all_paths(f"COMMIT {xid} (at {ts})") == CommitLine(xid, ts)


# --- hypothesis: fuzzing --------------------------------------------------------------------------

def _parses_or_decode_error(line: str) -> None:
    try:
        got = parse_all_paths(line)
    except DecodeError as exc:
        assert isinstance(exc.context.get("offset"), int)
        return
    assert isinstance(got, BeginLine | CommitLine | ChangeLine | TruncateLine | MessageLine)
    if isinstance(got, ChangeLine):
        for tup in (got.new, got.old):
            if tup is not None:
                assert len(tup.names) == len(tup.types) == len(tup.values)


TOKENS = ["table ", "public", ".", '"', "'", "''", "[", "]", "]:", ":", " ", ", ", "null", "INSERT:", "UPDATE:",
          "DELETE:", "TRUNCATE:", " old-key:", " new-tuple:", "B'", " (no-tuple-data)", "integer[]", "x",
          "unchanged-toast-datum", "restart_seqs", "cascade", "(no-flags)", "message: transactional: 1 prefix: ",
          ", sz: 3 content:", "BEGIN ", "COMMIT ", "(at ", ")", "12", "\n", "\x00", "ü", ": "]


@given(st.text())
@settings(max_examples=300)
def test_fuzz_arbitrary_text(line: str) -> None:
    _parses_or_decode_error(line)


@given(st.lists(st.sampled_from(TOKENS), max_size=30).map("".join))
@settings(max_examples=500)
def test_fuzz_grammar_tokens(line: str) -> None:
    _parses_or_decode_error(line)


@st.composite
def valid_lines(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["change", "change", "truncate", "message", "begin"]))
    if kind == "change":
        op = draw(st.sampled_from(["INSERT", "UPDATE", "DELETE"]))
        new, old = draw(columns()), draw(st.none() | columns(min_size=1))
        return render_change(draw(identifiers), draw(identifiers), op,
                             None if op == "DELETE" else new, new if op == "DELETE" else old)
    if kind == "truncate":
        return f"table {qi(draw(identifiers))}.{qi(draw(identifiers))}: TRUNCATE: cascade"
    if kind == "message":
        return render_message(draw(st.booleans()), draw(st.text(max_size=10)), draw(st.text(max_size=20)))
    return f"COMMIT {draw(st.integers(0, 2**32 - 1))} (at 2026-11-23 23:10:21+00)"


@st.composite
def mutated_lines(draw: st.DrawFn) -> str:
    line = draw(valid_lines())
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["delete", "insert", "replace", "truncate", "duplicate"]))
        i = draw(st.integers(0, len(line)))
        j = draw(st.integers(i, min(len(line), i + 8)))
        if op == "delete":
            line = line[:i] + line[j:]
        elif op == "insert":
            line = line[:i] + draw(st.sampled_from(TOKENS) | st.text(max_size=3)) + line[i:]
        elif op == "replace":
            line = line[:i] + draw(st.text(max_size=3)) + line[j:]
        elif op == "truncate":
            line = line[:i]
        else:
            line = line[:j] + line[i:j] + line[j:]
    return line


@given(mutated_lines())
@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
def test_fuzz_mutated_valid_lines(line: str) -> None:
    _parses_or_decode_error(line)


@given(valid_lines())
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
def test_valid_lines_parse(line: str) -> None:
    parse_all_paths(line)


@st.composite
def one_table_stream(draw: st.DrawFn) -> list[str]:
    """Lines for one table whose values, nulls, TOAST markers, ops and (sometimes) columns vary:
    the memo sees repeated layouts, layout changes, kind surprises and old-key variants."""
    base = draw(columns(min_size=1))
    lines = []
    for _ in range(draw(st.integers(1, 12))):
        cols = base if draw(st.integers(0, 4)) else base[: draw(st.integers(0, len(base)))]
        vals = draw(st.lists(st.sampled_from(["keep", "null", "toast"]), min_size=len(cols), max_size=len(cols)))
        cols = [(n, t, k, None if how == "null" else UNCHANGED if how == "toast" and k == "q" else v)
                for (n, t, k, v), how in zip(cols, vals, strict=True)]
        op = draw(st.sampled_from(["INSERT", "UPDATE", "UPDATE", "DELETE"]))
        old = cols if op == "UPDATE" and draw(st.booleans()) else None
        lines.append(render_change("s", "t", op, None if op == "DELETE" else cols, cols if op == "DELETE" else old))
    return lines * 3


@given(one_table_stream())
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
def test_memo_never_changes_an_answer(lines: list[str]) -> None:
    fresh = []
    for line in lines:
        td._layouts.clear()
        fresh.append(parse_line(line))
    td._layouts.clear()
    assert [parse_line(line) for line in lines] == fresh


def test_old_key_and_toast_variants_are_compiled_and_used() -> None:
    upd = "table public.t: UPDATE:"
    plain = f"{upd} id[integer]:1 v[text]:'a''b' big[text]:'x'"
    toast = f"{upd} id[integer]:1 v[text]:null big[text]:unchanged-toast-datum"
    oldkey = f"{upd} old-key: id[integer]:1 v[text]:'o' new-tuple: id[integer]:2 v[text]:'n''' big[text]:'y'"
    expected_old_key = ChangeLine("public", "t", "UPDATE",
                                  RawTuple(["id", "v", "big"], ["integer", "text", "text"], ["2", "n'", "y"]),
                                  RawTuple(["id", "v"], ["integer", "text"], ["1", "o"]))
    for _ in range(3):
        parse_line(plain)
        assert parse_line(oldkey) == expected_old_key
    assert td._layouts[upd].pattern is not None
    assert td._layouts["\0" + upd].pattern is not None
    assert parse_line(toast) == ChangeLine("public", "t", "UPDATE", RawTuple(
        ["id", "v", "big"], ["integer", "text", "text"], ["1", None, UNCHANGED]), None)
    assert td._layouts[upd].toast is not None
    assert parse_line(oldkey) == expected_old_key
