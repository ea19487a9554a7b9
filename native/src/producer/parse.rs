//! The test_decoding change-line grammar (`table S.T: INSERT|UPDATE|DELETE: …`), borrowing.
//!
//! Mirrors `bridge/source/test_decoding.py` (the reference): the same possessive, atomic reading
//! of names, types and values, so a line parses here exactly when it parses there, into the same
//! columns. The parser allocates nothing per line: columns are spans into the line, appended to a
//! caller-owned vector that is reused from line to line. Lines other than INSERT/UPDATE/DELETE
//! (BEGIN, COMMIT, TRUNCATE, messages) are `NotChange`: the Python reference reads those (they
//! are not the hot path). No input makes this code panic; errors carry the byte offset.

/// A byte range of the line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn of<'a>(&self, line: &'a [u8]) -> &'a [u8] {
        &line[self.start..self.end]
    }
}

/// How a value was printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValKind {
    /// bare `null`
    Null,
    /// bare `unchanged-toast-datum`
    Unchanged,
    /// an unquoted value (numbers, booleans, NaN): the span is the text
    Bare,
    /// `'…'`: the span is the body, `''` still doubled
    Quoted,
    /// `B'…'`: the span is the body
    Bit,
}

/// One printed column ` name[type]:value`.
#[derive(Clone, Copy, Debug)]
pub struct RawCol {
    /// the name's body: inside the quotes (with `""` doubled) when `name_quoted`
    pub name: Span,
    pub name_quoted: bool,
    pub ty: Span,
    pub kind: ValKind,
    pub val: Span,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Insert,
    Update,
    Delete,
}

/// A tuple of the change: absent, `(no-tuple-data)`, or `cols[start..end]` of the column vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tuple {
    Absent,
    NoData,
    Cols(usize, usize),
}

/// A parsed change line; names are spans (quoted ones with `""` doubled).
#[derive(Clone, Copy, Debug)]
pub struct Change {
    pub schema: Span,
    pub schema_quoted: bool,
    pub table: Span,
    pub table_quoted: bool,
    pub op: Op,
    pub new: Tuple,
    pub old: Tuple,
}

#[derive(Debug, PartialEq, Eq)]
pub struct ParseError {
    pub offset: usize,
    pub message: &'static str,
}

#[derive(Debug)]
pub enum Parsed {
    Change(Change),
    /// not an INSERT/UPDATE/DELETE line (or a head that does not parse as one): the reference reads it
    NotChange,
}

const NO_TUPLE: [&[u8]; 2] = [b" (no-tuple-data)", b" (no-tuple data)"];
const OLD_KEY: &[u8] = b" old-key:";
const NEW_TUPLE: &[u8] = b" new-tuple:";

/// The index of the closing quote of a quoted body starting at `p` (just after the opening
/// quote), with the quote doubled inside; None when unterminated.
fn closing(b: &[u8], mut p: usize, q: u8) -> Option<usize> {
    loop {
        let i = p + b.get(p..)?.iter().position(|&c| c == q)?;
        if b.get(i + 1) == Some(&q) {
            p = i + 2;
        } else {
            return Some(i);
        }
    }
}

fn bare_ident_end(b: &[u8], p: usize) -> Option<usize> {
    match b.get(p) {
        Some(c) if c.is_ascii_alphabetic() || *c == b'_' => {}
        _ => return None,
    }
    let mut i = p + 1;
    while let Some(&c) = b.get(i) {
        if c.is_ascii_alphanumeric() || c == b'_' || c == b'$' {
            i += 1;
        } else {
            break;
        }
    }
    Some(i)
}

/// An identifier at `p`: (body span, quoted, end).
fn ident(b: &[u8], p: usize) -> Option<(Span, bool, usize)> {
    if b.get(p) == Some(&b'"') {
        let c = closing(b, p + 1, b'"')?;
        return Some((
            Span {
                start: p + 1,
                end: c,
            },
            true,
            c + 1,
        ));
    }
    let e = bare_ident_end(b, p)?;
    Some((Span { start: p, end: e }, false, e))
}

fn is_bare_value_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c == b'+' || c == b'.'
}

/// One column starting at `p` (which must be the leading space); None when it does not parse
/// (the tuple ends before it, as the reference's atomic repetition ends).
fn column(b: &[u8], p: usize) -> Option<(RawCol, usize)> {
    if b.get(p) != Some(&b' ') {
        return None;
    }
    let (name, name_quoted, mut q) = ident(b, p + 1)?;
    if b.get(q) != Some(&b'[') {
        return None;
    }
    q += 1;
    let ty_start = q;
    loop {
        match *b.get(q)? {
            b'"' => q = closing(b, q + 1, b'"')? + 1,
            b']' => {
                if b.get(q + 1) == Some(&b':') {
                    break;
                }
                q += 1;
            }
            _ => q += 1,
        }
    }
    if q == ty_start {
        return None;
    }
    let ty = Span {
        start: ty_start,
        end: q,
    };
    q += 2;
    let (kind, val, end) = match b.get(q) {
        Some(b'\'') => {
            let c = closing(b, q + 1, b'\'')?;
            (
                ValKind::Quoted,
                Span {
                    start: q + 1,
                    end: c,
                },
                c + 1,
            )
        }
        Some(b'B') if b.get(q + 1) == Some(&b'\'') => {
            let c = closing(b, q + 2, b'\'')?;
            (
                ValKind::Bit,
                Span {
                    start: q + 2,
                    end: c,
                },
                c + 1,
            )
        }
        _ => {
            let mut e = q;
            while b.get(e).is_some_and(|&c| is_bare_value_byte(c)) {
                e += 1;
            }
            if e == q || b.get(e) == Some(&b'\'') {
                return None;
            }
            let text = &b[q..e];
            let kind = match text {
                b"null" => ValKind::Null,
                b"unchanged-toast-datum" => ValKind::Unchanged,
                _ => ValKind::Bare,
            };
            (kind, Span { start: q, end: e }, e)
        }
    };
    Some((
        RawCol {
            name,
            name_quoted,
            ty,
            kind,
            val,
        },
        end,
    ))
}

/// As many columns as parse from `p`; returns where the tuple ends.
fn columns(b: &[u8], mut p: usize, cols: &mut Vec<RawCol>) -> usize {
    while let Some((col, end)) = column(b, p) {
        cols.push(col);
        p = end;
    }
    p
}

fn err(offset: usize, message: &'static str) -> ParseError {
    ParseError { offset, message }
}

/// The tuple from `p` to the end of the line.
fn tuple_to_end(b: &[u8], p: usize, cols: &mut Vec<RawCol>) -> Result<Tuple, ParseError> {
    let start = cols.len();
    let end = columns(b, p, cols);
    if end != b.len() {
        if end == p && NO_TUPLE.contains(&&b[p..]) {
            return Ok(Tuple::NoData);
        }
        return Err(err(
            end,
            "expected ` name[type]:value` or the end of the line",
        ));
    }
    Ok(Tuple::Cols(start, cols.len()))
}

/// Parse one line. `cols` is cleared and receives the columns of both tuples.
pub fn parse_change(b: &[u8], cols: &mut Vec<RawCol>) -> Result<Parsed, ParseError> {
    cols.clear();
    if !b.starts_with(b"table ") {
        return Ok(Parsed::NotChange);
    }
    let Some((schema, schema_quoted, p)) = ident(b, 6) else {
        return Ok(Parsed::NotChange);
    };
    if b.get(p) != Some(&b'.') {
        return Ok(Parsed::NotChange);
    }
    let Some((table, table_quoted, p)) = ident(b, p + 1) else {
        return Ok(Parsed::NotChange);
    };
    let rest = &b[p..];
    let (op, p) = if rest.starts_with(b": INSERT:") {
        (Op::Insert, p + 9)
    } else if rest.starts_with(b": UPDATE:") {
        (Op::Update, p + 9)
    } else if rest.starts_with(b": DELETE:") {
        (Op::Delete, p + 9)
    } else {
        return Ok(Parsed::NotChange); // TRUNCATE, or a head error the reference words
    };
    let (new, old) = match op {
        Op::Insert => (tuple_to_end(b, p, cols)?, Tuple::Absent),
        Op::Delete => (Tuple::Absent, tuple_to_end(b, p, cols)?),
        Op::Update => {
            if b[p..].starts_with(OLD_KEY) {
                let q = p + OLD_KEY.len();
                let end = columns(b, q, cols);
                if !b[end..].starts_with(NEW_TUPLE) {
                    return Err(err(end, "expected ` new-tuple:` after the old-key tuple"));
                }
                let old = Tuple::Cols(0, cols.len());
                (tuple_to_end(b, end + NEW_TUPLE.len(), cols)?, old)
            } else {
                (tuple_to_end(b, p, cols)?, Tuple::Absent)
            }
        }
    };
    Ok(Parsed::Change(Change {
        schema,
        schema_quoted,
        table,
        table_quoted,
        op,
        new,
        old,
    }))
}

/// Whether the printed name `span` (quoted: `""` doubled) reads as `name`.
pub fn name_is(b: &[u8], span: Span, quoted: bool, name: &[u8]) -> bool {
    let raw = span.of(b);
    if !quoted || !raw.contains(&b'"') {
        return raw == name;
    }
    let mut i = 0;
    let mut j = 0;
    while i < raw.len() {
        let c = raw[i];
        if name.get(j) != Some(&c) {
            return false;
        }
        i += if c == b'"' { 2 } else { 1 };
        j += 1;
    }
    j == name.len()
}

/// Append the unescaped name (`""` → `"` when quoted) to `out`.
pub fn unquote_into(b: &[u8], span: Span, quoted: bool, out: &mut Vec<u8>) {
    let raw = span.of(b);
    if !quoted {
        out.extend_from_slice(raw);
        return;
    }
    let mut i = 0;
    while i < raw.len() {
        out.push(raw[i]);
        i += if raw[i] == b'"' { 2 } else { 1 };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> (Result<Parsed, ParseError>, Vec<RawCol>) {
        let mut cols = Vec::new();
        let r = parse_change(line.as_bytes(), &mut cols);
        (r, cols)
    }

    #[test]
    fn insert_with_quotes_nulls_and_escapes() {
        let line = r#"table "My ""S"""."a.b": INSERT: id[bigint]:1 note[text]:'it''s' gone[text]:null s[text]:'null'"#;
        let (r, cols) = parse(line);
        let Ok(Parsed::Change(c)) = r else {
            panic!("{r:?}")
        };
        let b = line.as_bytes();
        let mut s = Vec::new();
        unquote_into(b, c.schema, c.schema_quoted, &mut s);
        assert_eq!(s, br#"My "S""#);
        assert!(name_is(b, c.table, c.table_quoted, b"a.b"));
        assert_eq!(c.new, Tuple::Cols(0, 4));
        assert_eq!(cols[1].kind, ValKind::Quoted);
        assert_eq!(cols[1].val.of(b), b"it''s");
        assert_eq!(cols[2].kind, ValKind::Null);
        assert_eq!(cols[3].kind, ValKind::Quoted);
    }

    #[test]
    fn update_old_key_and_toast() {
        let line = "table public.t: UPDATE: old-key: id[integer]:1 new-tuple: id[integer]:2 big[text]:unchanged-toast-datum";
        let (r, cols) = parse(line);
        let Ok(Parsed::Change(c)) = r else {
            panic!("{r:?}")
        };
        assert_eq!(c.old, Tuple::Cols(0, 1));
        assert_eq!(c.new, Tuple::Cols(1, 3));
        assert_eq!(cols[2].kind, ValKind::Unchanged);
    }

    #[test]
    fn types_with_brackets_and_quotes() {
        let line =
            r#"table public.t: INSERT: a[integer[]]:'{1,2}' b["x]:y"[]]:'{}' c[bit]:B'0101'"#;
        let (r, cols) = parse(line);
        assert!(matches!(r, Ok(Parsed::Change(_))), "{r:?}");
        let b = line.as_bytes();
        assert_eq!(cols[0].ty.of(b), b"integer[]");
        assert_eq!(cols[1].ty.of(b), br#""x]:y"[]"#);
        assert_eq!(cols[2].kind, ValKind::Bit);
    }

    #[test]
    fn no_tuple_data_and_errors_with_offsets() {
        let (r, _) = parse("table public.t: DELETE: (no-tuple-data)");
        assert!(matches!(
            r,
            Ok(Parsed::Change(Change {
                old: Tuple::NoData,
                ..
            }))
        ));
        let (r, _) = parse("table public.t: INSERT: a[text]:'open");
        assert_eq!(r.unwrap_err().offset, 23);
        let (r, _) = parse("table public.t: UPDATE: old-key: a[int]:1");
        assert_eq!(r.unwrap_err().offset, 41);
        let (r, _) = parse("table public.t: INSERT: a[int]:1x'");
        assert_eq!(r.unwrap_err().offset, 23);
        let (r, _) = parse("table public.t: TRUNCATE: cascade");
        assert!(matches!(r, Ok(Parsed::NotChange)));
        let (r, _) = parse("BEGIN 12");
        assert!(matches!(r, Ok(Parsed::NotChange)));
    }

    #[test]
    fn empty_insert_is_an_empty_tuple() {
        let (r, _) = parse("table public.t: INSERT:");
        assert!(matches!(
            r,
            Ok(Parsed::Change(Change {
                new: Tuple::Cols(0, 0),
                ..
            }))
        ));
    }
}
