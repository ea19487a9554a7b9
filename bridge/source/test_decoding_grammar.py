"""The test_decoding grammar as regular expressions, and the slow-path error locators.

Used by `bridge.source.test_decoding` only; split out so the parser module holds the parsing.
The error functions run after a line failed to parse and name the offending position.
"""

from __future__ import annotations

import re
from typing import Final

from bridge.errors import DecodeError
from bridge.source.lines import UNCHANGED, MessageLine, RawValue

# Possessive quantifiers and atomic groups (Python >= 3.11) keep every pattern linear: no
# backtracking into a quoted string or a name, whatever the input.

_Q_IDENT_BODY = r'[^"]*+(?:""[^"]*+)*+'  # inside "…", with "" for "
_BARE_IDENT = r"[A-Za-z_][A-Za-z0-9_$]*+"  # quote_identifier leaves only [a-z_][a-z0-9_]* bare
# A type name runs to the first `]:` outside double quotes (`integer[]`, `"a]:b"[]`).
_TYPE = rf'(?:[^"\]]++|"{_Q_IDENT_BODY}"|\](?!:))++'
_Q_VALUE_BODY = r"[^']*+(?:''[^']*+)*+"
_BARE_VALUE = r"[-+.0-9A-Za-z]++(?!')"  # numbers, NaN/Infinity, true/false, null, unchanged-toast-datum

# One column; groups: quoted name, bare name, type, `B` of a bit string, quoted value, bare value.
_COL = re.compile(
    rf' (?:"({_Q_IDENT_BODY})"|({_BARE_IDENT}))'
    rf"\[({_TYPE})\]:"
    rf"(?:(B?)'({_Q_VALUE_BODY})'|({_BARE_VALUE}))"
)
# A whole tuple: as many columns as match, each atomically, so its segmentation equals findall's.
_COL_NC = (
    rf' (?:"{_Q_IDENT_BODY}"|{_BARE_IDENT})'
    rf"\[{_TYPE}\]:"
    rf"(?:B?'{_Q_VALUE_BODY}'|{_BARE_VALUE})"
)
_TUPLE = re.compile(rf"(?>{_COL_NC})*+")

_REL_SRC = rf'(?:"{_Q_IDENT_BODY}"|{_BARE_IDENT})\.(?:"{_Q_IDENT_BODY}"|{_BARE_IDENT})'
_CHANGE_HEAD = re.compile(
    rf'table (?:"({_Q_IDENT_BODY})"|({_BARE_IDENT}))\.(?:"({_Q_IDENT_BODY})"|({_BARE_IDENT})): '
    r"(INSERT|UPDATE|DELETE):"
)
_TRUNCATE = re.compile(
    rf"table ({_REL_SRC}(?:, {_REL_SRC})*+): TRUNCATE:(?: (\(no-flags\))|( restart_seqs)?( cascade)?)"
)
_REL = re.compile(rf'(?:"({_Q_IDENT_BODY})"|({_BARE_IDENT}))\.(?:"({_Q_IDENT_BODY})"|({_BARE_IDENT}))')
_BEGIN = re.compile(r"BEGIN ([0-9]{1,10})")
_COMMIT = re.compile(r"COMMIT(?: ([0-9]{1,10}))?(?: \(at ([^()]++)\))?")
_MSG_HEAD = re.compile(r"message: transactional: ([01]) prefix: ")
_MSG_SZ = re.compile(r", sz: ([0-9]{1,20}) content:")

# Pieces for locating an error inside a tuple (slow path, only after a failure).
_NAME_AT = re.compile(rf' (?:"{_Q_IDENT_BODY}"|{_BARE_IDENT})\[')
_TYPE_AT = re.compile(rf"{_TYPE}\]:")
_VALUE_AT = re.compile(rf"B?'{_Q_VALUE_BODY}'|[-+.0-9A-Za-z]++")
_IDENT_AT = re.compile(rf'"{_Q_IDENT_BODY}"|{_BARE_IDENT}')

_NO_TUPLE: Final = (" (no-tuple-data)", " (no-tuple data)")
_OLD_KEY: Final = " old-key:"
_NEW_TUPLE: Final = " new-tuple:"
_MAX_XID: Final = 0xFFFFFFFF
_LINE_CONTEXT: Final = 200

_SPECIAL: Final[dict[str, RawValue]] = {"null": None, "unchanged-toast-datum": UNCHANGED}


def _error(line: object, offset: int, message: str) -> DecodeError:
    text = line[:_LINE_CONTEXT] if isinstance(line, str) else repr(line)[:_LINE_CONTEXT]
    return DecodeError(f"test_decoding: {message}", line=text, offset=offset)


def _tuple_error(line: str, pos: int, start: int, fallback: str) -> DecodeError:
    """Say what is wrong with the column at `pos` of a tuple that starts at `start` (slow path,
    after a failure: every column before `pos` parsed)."""
    if pos >= len(line):
        return _error(line, pos, "unexpected end of line: " + fallback)
    if line[pos] != " ":
        if pos > start:
            return _error(line, pos, "expected a space or the end of the line after the value")
        return _error(line, pos, fallback)
    m = _NAME_AT.match(line, pos)
    if m is None:
        ident = _IDENT_AT.match(line, pos + 1)
        if ident is not None:
            return _error(line, ident.end(), "expected `[` after the column name")
        if line.startswith('"', pos + 1):
            return _error(line, pos + 1, "unterminated quoted column name")
        if pos + 1 >= len(line):
            return _error(line, pos + 1, "unexpected end of line: expected a column name")
        return _error(line, pos + 1, "expected a column name")
    p = m.end()
    t = _TYPE_AT.match(line, p)
    if t is None:
        return _error(line, p, "unterminated column type (expected `]:`)")
    p = t.end()
    if line.startswith("'", p) or line.startswith("B'", p):
        return _error(line, p, "unterminated quoted value")
    v = _VALUE_AT.match(line, p)
    if v is None:
        return _error(line, p, "expected a value (quoted, unquoted, null or unchanged-toast-datum)")
    return _error(line, v.end(), "expected a space or the end of the line after the value")


def _head_error(line: str) -> DecodeError:
    """Locate the fault in a `table …:` line whose head did not parse (slow path)."""
    pos = 6
    while True:
        for part in ("schema", "table"):
            ident = _IDENT_AT.match(line, pos)
            if ident is None:
                if line.startswith('"', pos):
                    return _error(line, pos, f"unterminated quoted {part} name")
                return _error(line, pos, f"expected a {part} name")
            pos = ident.end()
            if part == "schema":
                if not line.startswith(".", pos):
                    return _error(line, pos, "expected `.` between schema and table name")
                pos += 1
        if not line.startswith(", ", pos):
            break
        pos += 2
    if not line.startswith(": ", pos):
        return _error(line, pos, "expected `: ` after the relation name")
    pos += 2
    if line.startswith("TRUNCATE:", pos):
        return _error(line, pos + 9, "expected ` restart_seqs`, ` cascade` or ` (no-flags)`")
    return _error(line, pos, "expected INSERT:, UPDATE:, DELETE: or TRUNCATE:")


def _raise_message(line: str) -> MessageLine:
    for i, (a, b) in enumerate(zip(line, "message: transactional: 0 prefix: ", strict=False)):
        if a != b and not (i == 24 and a in "01"):
            raise _error(line, i, "expected `message: transactional: 0|1 prefix: `")
    raise _error(line, len(line), "unexpected end of message line")
