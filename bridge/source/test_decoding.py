"""The `test_decoding` line parser: one output line of the plugin → one typed `Line`.

Called by the capture for every line it reads (the hot path: one pass per line, compiled regular
expressions, no per-character Python loops). The grammar is the one `contrib/test_decoding` of
PostgreSQL 15 writes with `include-xids=1, include-timestamp=1, skip-empty-xacts=1`:

    BEGIN 123
    COMMIT 123 (at 2026-11-23 23:10:21.123456+00)
    table public.orders: INSERT: id[bigint]:1 note[text]:'it''s' gone[text]:null
    table "My Schema"."a.b": UPDATE: old-key: id[integer]:1 new-tuple: id[integer]:2 big[text]:unchanged-toast-datum
    table public.t: DELETE: id[integer]:2            (or `(no-tuple-data)` without an identity)
    table public.a, public.b: TRUNCATE: restart_seqs cascade        (or `(no-flags)`)
    message: transactional: 1 prefix: foo, sz: 5 content:hello

A column is ` <quote_identifier(name)>[<format_type_be(type)>]:<value>`; the value is `null`,
`unchanged-toast-datum`, or test_decoding's `print_literal`: integers, oid, floats and numeric
unquoted (`NaN`, `Infinity`, `-Infinity` included), booleans as `true`/`false`, bit strings as
`B'0101'`, every other type single-quoted with `'` doubled.

Facts a consumer relies on (observed in test_decoding.c, checked against a real server in
tests/integration/test_test_decoding_real.py):
- `format_type_be` prints the type WITHOUT its modifier (`character varying`, `numeric`,
  `timestamp without time zone`, `bit`); domains and enums print their own (possibly
  schema-qualified, quoted) name, and their values are quoted. The catalog supplies typmods.
- The UPDATE `old-key:` tuple (key change, or every update under REPLICA IDENTITY FULL) and the
  DELETE tuple skip NULL columns; a DELETE tuple holds only the replica identity columns.
- A transactional logical message in a transaction without changes is printed without BEGIN/COMMIT
  (test_decoding's skip-empty-xacts does not count messages as changes).
- Lines test_decoding prints for options the bridge does not use (BEGIN without xid, streaming,
  two-phase) are DecodeErrors. `(no-tuple-data)` is the plugin's spelling; `(no-tuple data)` is
  accepted too.

Speed: the generic path is the grammar (two regex passes over a tuple plus per-column list
building). On top of it, a bounded module-private memo keyed by the change header keeps the last
column layout of each table and operation; from the second sighting on, a pattern compiled from
that layout's literal heads yields all values of a line in one `fullmatch`. Answers never depend
on the memo (tests/unit/test_test_decoding.py checks that every line parses the same with and
without it).
"""

from __future__ import annotations

import re
from typing import Final, NamedTuple

from bridge.errors import DecodeError
from bridge.source.lines import (
    UNCHANGED,
    BeginLine,
    ChangeLine,
    CommitLine,
    Line,
    LineKind,
    MessageLine,
    RawTuple,
    RawValue,
    TruncateLine,
    Unchanged,
    line_kind,
)
from bridge.source.test_decoding_grammar import (
    _BEGIN,
    _CHANGE_HEAD,
    _COL,
    _COMMIT,
    _MAX_XID,
    _MSG_HEAD,
    _MSG_SZ,
    _NEW_TUPLE,
    _NO_TUPLE,
    _OLD_KEY,
    _Q_VALUE_BODY,
    _REL,
    _SPECIAL,
    _TRUNCATE,
    _TUPLE,
    _error,
    _head_error,
    _raise_message,
    _tuple_error,
)

__all__ = [
    "UNCHANGED",
    "BeginLine",
    "ChangeLine",
    "CommitLine",
    "Line",
    "LineKind",
    "MessageLine",
    "RawTuple",
    "RawValue",
    "TruncateLine",
    "Unchanged",
    "line_kind",
    "parse_line",
]


# --- per-layout fast path ------------------------------------------------------------------------
# Successive lines of one table and operation print the same column heads (` name[type]:`), and
# each column always prints its values in one form (print_literal depends on the type only). Once
# a layout has been seen twice in a row, it gets a compiled pattern of literal heads and one group
# per value (None for `null`): one `fullmatch` then yields every value with no per-column Python
# work. A line the pattern does not match (another layout, garbage) takes the generic path, which
# is the grammar; a layout pattern only ever accepts a subset of it, with the same reading.
# Variants: a lazily compiled one that also accepts `unchanged-toast-datum` (two groups per
# column), and one per `UPDATE … old-key:` layout covering `old … new-tuple: new …`.

# How a column prints its values: `u` unquoted (numbers, booleans), `q` quoted, `b` bit string.
# Initial guess from the type name (format_type_be of the built-in types print_literal leaves
# unquoted); a value seen in the other form overrides it.
_UNQUOTED_TYPES: Final = frozenset(
    {"smallint", "integer", "bigint", "oid", "real", "double precision", "numeric", "boolean"}
)
_BIT_TYPES: Final = frozenset({"bit", "bit varying"})
_TOAST: Final = "unchanged-toast-datum"
# No unquoted value of these types starts with `u`, so `unchanged-toast-datum` never reads as one.
_BARE_KIND_VALUE: Final = r"[-+.0-9A-Za-tv-z][-+.0-9A-Za-z]*+"
_KIND_VALUE: Final = {
    "u": rf"(?:null|({_BARE_KIND_VALUE}))",
    "q": rf"(?:'({_Q_VALUE_BODY})'|null)",
    "b": rf"(?:B'({_Q_VALUE_BODY})'|null)",
}
_KIND_VALUE_TOAST: Final = {k: v[:-1] + rf"|({_TOAST}))" for k, v in _KIND_VALUE.items()}
_MAX_LAYOUTS: Final = 4096  # keys remembered; the whole memo is dropped past it (rare, cheap)
_MAX_COMPILES: Final = 32  # per key: a table whose layout keeps changing stays on the generic path
_MAX_PATTERN_COLUMNS: Final = 1664  # MaxTupleAttributeNumber: no real layout is wider (compile ~0.2 s)


class _Layout(NamedTuple):
    """What follows one key (a validated `table S.T: OP:` header, or NUL + header for the
    `UPDATE: old-key:` lines of that header): the column names and types last seen and, once seen
    twice in a row, the printed heads, value forms and patterns. Immutable and replaced whole, so
    a concurrent reader always sees a consistent layout (a NamedTuple: cheap to build, and the
    generic path builds one for every new layout).

    For an old-key layout the pattern covers `<old> new-tuple:<new>`; its first `split` groups
    are the old tuple's (`old_names`, `old_types`), the rest the new tuple's."""

    schema: str
    table: str
    op: str
    names: list[str]  # copied into every RawTuple, never handed out
    types: list[str]
    heads: tuple[str, ...]  # () until compiled
    kinds: tuple[str, ...]
    pattern: re.Pattern[str] | None
    toast: re.Pattern[str] | None
    compiles: int
    split: int
    old_names: list[str]
    old_types: list[str]


_layouts: dict[str, _Layout] = {}


def parse_line(line: str) -> Line:
    """Parse one test_decoding output line (called by the capture for every line it reads).

    Guarantees: returns exactly one `Line` for a well-formed line. Raises
    `DecodeError(message, line=<line, first 200 chars>, offset=<int>)` for anything else, and no
    other exception whatever the input. Thread-safe (the layout memo is replaced atomically).
    """
    try:
        if line.startswith("table "):
            # Fast path: a header seen before whose layout pattern matches the rest of the line.
            # `table S.T: OP:` with OP 6 letters long; a miss (new header, `": "` inside a quoted
            # name, TRUNCATE, another layout) takes _parse_table. A hit is exact: the memo holds
            # only headers the grammar accepted.
            end = line.find(": ", 6) + 9
            lay = _layouts.get(line[:end])
            if lay is not None and lay.pattern is not None:
                m = lay.pattern.fullmatch(line, end)
                if m is not None:
                    tup = _from_groups(lay.names, lay.types, m.groups(), line, end)
                    if lay.op == "DELETE":
                        return ChangeLine(lay.schema, lay.table, "DELETE", None, tup)
                    return ChangeLine(lay.schema, lay.table, lay.op, tup, None)
                return _parse_table(line, end)
            return _parse_table(line, -1)
        if line.startswith("BEGIN"):
            m = _BEGIN.fullmatch(line)
            if m is None:
                raise _error(line, 6 if line.startswith("BEGIN ") else 5, "expected `BEGIN <xid>`")
            return BeginLine(_xid(line, m.group(1), 6))
        if line.startswith("COMMIT"):
            m = _COMMIT.fullmatch(line)
            if m is None:
                raise _error(line, 6, "expected `COMMIT <xid> (at <timestamp>)`")
            x = m.group(1)
            return CommitLine(None if x is None else _xid(line, x, 7), m.group(2))
        if line.startswith("message: "):
            return _parse_message(line)
        raise _error(line, 0, "not a test_decoding line (expected table, BEGIN, COMMIT or message)")
    except DecodeError:
        raise
    except Exception as exc:  # a parser bug must still surface as a DecodeError naming the line
        raise _error(line, 0, f"cannot parse line ({type(exc).__name__}: {exc})") from exc


def _from_groups(names: list[str], types: list[str], values: tuple[str | None, ...], line: str,
                 pos: int) -> RawTuple:
    """The RawTuple for a layout pattern's groups (quoted values still carry their `''`)."""
    if None not in values:
        # No NUL in PostgreSQL text, so splitting the joined values gives back the columns.
        joined = "\0".join(values)  # type: ignore[arg-type]
        if "''" not in joined:
            return RawTuple(names.copy(), types.copy(), list(values))
        unescaped = joined.replace("''", "'").split("\0")
        if len(unescaped) == len(values):
            return RawTuple(names.copy(), types.copy(), unescaped)  # type: ignore[arg-type]
    elif line.find("''", pos) < 0:
        return RawTuple(names.copy(), types.copy(), list(values))
    return RawTuple(names.copy(), types.copy(), [v.replace("''", "'") if v else v for v in values])


def _xid(line: str, digits: str, offset: int) -> int:
    xid = int(digits)
    if xid > _MAX_XID:
        raise _error(line, offset, f"xid {digits} out of range")
    return xid


def _unquote(quoted: str | None, bare: str | None) -> str:
    return bare if bare else (quoted or "").replace('""', '"')


def _parse_table(line: str, tried: int) -> ChangeLine | TruncateLine:
    """The generic path for `table …` lines (the full grammar); learns layouts for the fast path.
    `tried` is where parse_line already tried the header's layout pattern (-1: nowhere)."""
    m = _CHANGE_HEAD.match(line)
    if m is None:
        return _parse_truncate(line)
    qs, bs, qt, bt, op = m.groups()
    rel = (bs or qs.replace('""', '"'), bt or qt.replace('""', '"'), op)
    header = m.group()
    pos = m.end()
    if op == "INSERT":
        return ChangeLine(rel[0], rel[1], op, _tuple_to_end(line, pos, header, rel, tried), None)
    if op == "UPDATE":
        if line.startswith(_OLD_KEY, pos):
            return _parse_old_key(line, pos + len(_OLD_KEY), header, rel)
        return ChangeLine(rel[0], rel[1], op, _tuple_to_end(line, pos, header, rel, tried), None)
    return ChangeLine(rel[0], rel[1], op, None, _tuple_to_end(line, pos, header, rel, tried))


def _parse_old_key(line: str, pos: int, header: str, rel: tuple[str, str, str]) -> ChangeLine:
    """`UPDATE: old-key: <old> new-tuple: <new>` from `pos` (just after `old-key:`)."""
    key = "\0" + header  # never equal to a key parse_line looks up (those start with `table `)
    lay = _layouts.get(key)
    if lay is not None and lay.pattern is not None:
        m = lay.pattern.fullmatch(line, pos)
        if m is not None:
            values, split = m.groups(), lay.split
            return ChangeLine(rel[0], rel[1], "UPDATE",
                              _from_groups(lay.names, lay.types, values[split:], line, pos),
                              _from_groups(lay.old_names, lay.old_types, values[:split], line, pos))
    end = _TUPLE.match(line, pos).end()  # type: ignore[union-attr]  # always matches, maybe empty
    if not line.startswith(_NEW_TUPLE, end):
        raise _tuple_error(line, end, pos, "expected ` new-tuple:` after the old-key tuple")
    old, cols = _generic_tuple(line, pos, end)
    new = _tuple_to_end(line, end + len(_NEW_TUPLE), header, rel, -1)
    if cols and new is not None:
        _learn_old_key(key, rel, lay, cols, old, _layouts.get(header))
    return ChangeLine(rel[0], rel[1], "UPDATE", new, old)


def _tuple_to_end(line: str, pos: int, header: str, rel: tuple[str, str, str],
                  tried: int) -> RawTuple | None:
    """The tuple from `pos` to the end of the line, or None for `(no-tuple-data)`."""
    lay = _layouts.get(header)
    if lay is not None and lay.pattern is not None:
        if pos != tried:
            m = lay.pattern.fullmatch(line, pos)
            if m is not None:
                return _from_groups(lay.names, lay.types, m.groups(), line, pos)
        if line.find(_TOAST, pos) >= 0:
            toast = lay.toast or _compile_toast(header, lay)
            m = toast.fullmatch(line, pos)
            if m is not None:
                groups = m.groups()
                values: list[RawValue] = [
                    UNCHANGED if t is not None else v for v, t in zip(groups[::2], groups[1::2], strict=True)
                ]
                if line.find("''", pos) >= 0:
                    values = [v.replace("''", "'") if isinstance(v, str) else v for v in values]
                return RawTuple(lay.names.copy(), lay.types.copy(), values)
    end = _TUPLE.match(line, pos).end()  # type: ignore[union-attr]  # always matches, maybe empty
    if end != len(line):
        if end == pos and line[pos:] in _NO_TUPLE:
            return None
        raise _tuple_error(line, end, pos, "expected ` name[type]:value` or the end of the line")
    tup, cols = _generic_tuple(line, pos, end)
    if cols:
        _learn(header, rel, lay, cols, tup)
    return tup


def _generic_tuple(line: str, pos: int, end: int) -> tuple[RawTuple, list[tuple[str, ...]]]:
    """The tuple in line[pos:end], already validated by `_TUPLE`, and its raw column groups."""
    if pos == end:
        return RawTuple([], [], []), []
    cols: list[tuple[str, ...]] = _COL.findall(line, pos, end)
    get = _SPECIAL.get
    return RawTuple(
        [b or q.replace('""', '"') for q, b, _, _, _, _ in cols],
        [t for _, _, t, _, _, _ in cols],
        [get(o, o) if o else v.replace("''", "'") for _, _, _, _, v, o in cols],
    ), cols


def _learn(header: str, rel: tuple[str, str, str], old: _Layout | None, cols: list[tuple[str, ...]],
           tup: RawTuple) -> None:
    """Remember the layout after `header`; compile its pattern once it was seen twice in a row.

    Called after every generic parse of a tuple that runs to the end of the line. Compiles at
    most `_MAX_COMPILES` times per header, so a layout that keeps changing costs nothing more.
    A layout is identified by its names and types; if the same names were printed another way,
    the pattern simply does not match and the generic path answers.
    """
    if old is None or old.names != tup.names or old.types != tup.types:
        _store(header, _Layout(*rel, tup.names.copy(), tup.types.copy(), (), (), None, None,
                               0 if old is None else old.compiles, 0, [], []), old is None)
        return
    kinds = _kinds(cols, old.kinds, tup.types)
    if (old.pattern is None or kinds != old.kinds) and _may_compile(old, len(kinds)):
        heads = old.heads or _heads(cols)
        _store(header, old._replace(heads=heads, kinds=kinds, pattern=re.compile(_source(heads, kinds, _KIND_VALUE)),
                                    toast=None, compiles=old.compiles + 1), False)


def _learn_old_key(key: str, rel: tuple[str, str, str], old: _Layout | None, cols: list[tuple[str, ...]],
                   tup: RawTuple, update: _Layout | None) -> None:
    """As `_learn`, for `UPDATE … old-key:` lines: the old tuple's layout followed by the compiled
    layout of the header's new tuples (compiled only once that one is)."""
    if old is None or old.old_names != tup.names or old.old_types != tup.types:
        _store(key, _Layout(*rel, [], [], (), (), None, None, 0 if old is None else old.compiles,
                            len(cols), tup.names.copy(), tup.types.copy()), old is None)
        return
    if update is None or update.pattern is None:
        return
    split = old.split
    kinds = _kinds(cols, old.kinds[:split], tup.types)
    if (old.pattern is None or kinds + update.kinds != old.kinds or old.names is not update.names) \
            and _may_compile(old, split + len(update.kinds)):
        heads = old.heads[:split] or _heads(cols)
        src = (_source(heads, kinds, _KIND_VALUE) + re.escape(_NEW_TUPLE)
               + _source(update.heads, update.kinds, _KIND_VALUE))
        _store(key, old._replace(names=update.names, types=update.types, heads=heads + update.heads,
                                 kinds=kinds + update.kinds, pattern=re.compile(src), compiles=old.compiles + 1),
               False)


def _kinds(cols: list[tuple[str, ...]], known: tuple[str, ...], types: list[str]) -> tuple[str, ...]:
    """Each column's value form: as seen in `cols`, else as known, else guessed from the type."""
    seen = [("u" if o not in _SPECIAL else "") if o else ("b" if bit else "q") for _, _, _, bit, _, o in cols]
    if known:
        return tuple(s or k for s, k in zip(seen, known, strict=True))
    return tuple(s or ("u" if t in _UNQUOTED_TYPES else "b" if t in _BIT_TYPES else "q")
                 for s, t in zip(seen, types, strict=True))


def _heads(cols: list[tuple[str, ...]]) -> tuple[str, ...]:
    """The printed column heads, exactly as they appear in the line."""
    return tuple(f' "{q}"[{t}]:' if q else f" {b}[{t}]:" for q, b, t, _, _, _ in cols)


def _source(heads: tuple[str, ...], kinds: tuple[str, ...], forms: dict[str, str]) -> str:
    return "".join(re.escape(h) + forms[k] for h, k in zip(heads, kinds, strict=True))


def _may_compile(old: _Layout, columns: int) -> bool:
    return old.compiles < _MAX_COMPILES and columns <= _MAX_PATTERN_COLUMNS


def _store(key: str, layout: _Layout, is_new: bool) -> None:
    if is_new and len(_layouts) >= _MAX_LAYOUTS:
        _layouts.clear()
    _layouts[key] = layout


def _compile_toast(header: str, lay: _Layout) -> re.Pattern[str]:
    """The layout's variant that also reads `unchanged-toast-datum` (compiled once, on first use)."""
    toast = re.compile(_source(lay.heads, lay.kinds, _KIND_VALUE_TOAST))
    _store(header, lay._replace(toast=toast), False)
    return toast


def _parse_truncate(line: str) -> TruncateLine:
    m = _TRUNCATE.fullmatch(line)
    if m is None or (m.group(2) is None and m.group(3) is None and m.group(4) is None):
        raise _head_error(line)
    rels = [(_unquote(qs, bs), _unquote(qt, bt)) for qs, bs, qt, bt in _REL.findall(m.group(1))]
    return TruncateLine(rels, m.group(3) is not None, m.group(4) is not None)


def _parse_message(line: str) -> MessageLine:
    m = _MSG_HEAD.match(line)
    if m is None:
        return _raise_message(line)
    transactional = m.group(1) == "1"
    start = m.end()
    # The prefix is printed raw and may itself contain `, sz: N content:`; the content is raw
    # too. Take the first candidate whose declared size matches the content's UTF-8 length,
    # else the first candidate (a non-UTF-8 database may count bytes differently).
    first: re.Match[str] | None = None
    total = _byte_len(line)
    done, done_bytes = 0, 0  # byte length of line[:done], kept incrementally: linear in the line
    for sz in _MSG_SZ.finditer(line, start):
        if first is None:
            first = sz
        done_bytes += _byte_len(line[done:sz.end()])
        done = sz.end()
        if total - done_bytes == int(sz.group(1)):
            return MessageLine(transactional, line[start:sz.start()], line[done:])
    if first is None:
        raise _error(line, start, "expected `, sz: <n> content:` after the message prefix")
    return MessageLine(transactional, line[start:first.start()], line[first.end():])


def _byte_len(text: str) -> int:
    if text.isascii():
        return len(text)
    try:
        return len(text.encode("utf-8", "surrogateescape"))
    except UnicodeEncodeError:
        return len(text.encode("utf-8", "surrogatepass"))
