//! A relation version's plan (built once, from the catalog's columns and the codec's framing)
//! and the encoding of one parsed change with it: the framed key, and the framed envelope with
//! the transaction's `source` bytes, exactly as `TableCodec.key` / `TableCodec.envelope` write them.

use super::convert::{self, put_bytes, put_long, Miss, Res};
use super::parse::{name_is, Change, Op, RawCol, Tuple, ValKind};

/// How one column's text becomes Avro (chosen once per column, as `raw_converter` and
/// `bridge.codec.schemas.column_type` choose).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conv {
    Int,
    Long,
    Float,
    Double,
    Decimal {
        precision: u32,
        scale: u32,
    },
    Bool,
    Bytes,
    Date,
    Time,
    Timestamp,
    TimestampTz,
    /// the text is the value; `max_chars`: the `varchar(n)` / `char(n)` length check
    Str {
        max_chars: Option<usize>,
    },
}

impl Conv {
    /// The conv named by the Python adapter (`bridge/source/native_decoder.py`).
    pub fn named(name: &str, length: i64, precision: i64, scale: i64) -> Option<Conv> {
        Some(match name {
            "int" => Conv::Int,
            "long" => Conv::Long,
            "float" => Conv::Float,
            "double" => Conv::Double,
            "decimal" => Conv::Decimal {
                precision: u32::try_from(precision).ok()?,
                scale: u32::try_from(scale).ok()?,
            },
            "bool" => Conv::Bool,
            "bytes" => Conv::Bytes,
            "date" => Conv::Date,
            "time" => Conv::Time,
            "timestamp" => Conv::Timestamp,
            "timestamptz" => Conv::TimestampTz,
            "string" => Conv::Str {
                max_chars: usize::try_from(length).ok().filter(|&n| n > 0),
            },
            _ => return None,
        })
    }
}

pub struct Column {
    pub name: Vec<u8>,
    /// the printed (format_type_be) type the plan was learnt with
    pub printed: Vec<u8>,
    pub conv: Conv,
}

pub struct Plan {
    pub columns: Vec<Column>,
    /// primary-key column indexes, in key order
    pub pk: Vec<usize>,
    /// replica identity default with a primary key: a DELETE's tuple must name exactly the key
    pub key_exact: bool,
    pub key_prefix: Option<Vec<u8>>,
    pub value_prefix: Vec<u8>,
    /// source.db, source.schema, source.table, Avro strings
    pub src_names: Vec<u8>,
}

/// Buffers reused from change to change.
#[derive(Default)]
pub struct Scratch {
    slots: Vec<Option<usize>>,
    text: Vec<u8>,
    unchanged: Vec<usize>,
}

/// The value's text: the span, or its unescaped copy in `buf` when it holds `''`.
fn text<'a>(line: &'a [u8], col: &RawCol, buf: &'a mut Vec<u8>) -> &'a [u8] {
    let raw = col.val.of(line);
    if matches!(col.kind, ValKind::Bare) || !raw.windows(2).any(|w| w == b"''") {
        return raw;
    }
    buf.clear();
    let mut i = 0;
    while i < raw.len() {
        buf.push(raw[i]);
        i += if raw[i] == b'\'' { 2 } else { 1 };
    }
    buf
}

/// One non-null value; `nullable`: inside the row's `["null", T]` union (else a key's bare T).
fn value(conv: Conv, t: &[u8], nullable: bool, out: &mut Vec<u8>) -> Res<()> {
    let branch = |out: &mut Vec<u8>, i: u8| out.push(if nullable { (i + 1) << 1 } else { i << 1 });
    match conv {
        Conv::Decimal { precision, scale } => {
            if matches!(t, b"NaN" | b"Infinity" | b"-Infinity") {
                branch(out, 1);
                put_bytes(out, t);
            } else {
                branch(out, 0);
                convert::decimal(t, precision, scale, out)?;
            }
            return Ok(());
        }
        _ if nullable => out.push(2),
        _ => {}
    }
    match conv {
        Conv::Int => {
            let v = convert::int(t)?;
            if i32::try_from(v).is_err() {
                return Err(Miss::Value);
            }
            put_long(out, v);
        }
        Conv::Long => put_long(out, convert::int(t)?),
        Conv::Float => {
            let v = convert::float(t)?;
            let f = v as f32;
            if f.is_infinite() && v.is_finite() {
                return Err(Miss::Value); // Python's struct.pack raises OverflowError
            }
            out.extend_from_slice(&f.to_le_bytes());
        }
        Conv::Double => out.extend_from_slice(&convert::float(t)?.to_le_bytes()),
        Conv::Bool => out.push(u8::from(convert::boolean(t)?)),
        Conv::Bytes => convert::bytea(t, out)?,
        Conv::Date => put_long(out, convert::date(t)?),
        Conv::Time => put_long(out, convert::time(t)?),
        Conv::Timestamp => put_long(out, convert::timestamp(t, false)?),
        Conv::TimestampTz => put_long(out, convert::timestamp(t, true)?),
        Conv::Str { max_chars } => {
            if let Some(max) = max_chars {
                let s = std::str::from_utf8(t).map_err(|_| Miss::Value)?;
                if s.chars().count() > max {
                    return Err(Miss::Modifier);
                }
            }
            put_bytes(out, t);
        }
        Conv::Decimal { .. } => unreachable!("handled above"),
    }
    Ok(())
}

impl Plan {
    fn same_column(&self, line: &[u8], i: usize, col: &RawCol) -> bool {
        let c = &self.columns[i];
        name_is(line, col.name, col.name_quoted, &c.name) && col.ty.of(line) == c.printed.as_slice()
    }

    fn index_of(&self, line: &[u8], col: &RawCol) -> Option<usize> {
        (0..self.columns.len())
            .find(|&i| name_is(line, col.name, col.name_quoted, &self.columns[i].name))
    }

    /// Map the change's tuple onto column slots (`scratch.slots[i]`: the index in `cols`).
    /// Returns the op; `Miss::Mismatch` when the tuple is not this relation version's.
    fn slots(&self, line: &[u8], ch: &Change, cols: &[RawCol], s: &mut Scratch) -> Res<Op> {
        let n = self.columns.len();
        s.slots.clear();
        s.slots.resize(n, None);
        match (ch.op, ch.new, ch.old) {
            (Op::Insert | Op::Update, Tuple::Cols(a, b), Tuple::Absent) => {
                if b - a != n {
                    return Err(Miss::Mismatch);
                }
                for (i, col) in cols[a..b].iter().enumerate() {
                    if !self.same_column(line, i, col) {
                        return Err(Miss::Mismatch);
                    }
                    s.slots[i] = Some(a + i);
                }
            }
            (Op::Delete, Tuple::Absent, Tuple::Cols(a, b)) => {
                for (j, col) in cols[a..b].iter().enumerate() {
                    let i = self.index_of(line, col).ok_or(Miss::Mismatch)?;
                    if col.ty.of(line) != self.columns[i].printed.as_slice() {
                        return Err(Miss::Mismatch);
                    }
                    if s.slots[i].is_some() {
                        return Err(Miss::Form); // a name printed twice: the reference decides
                    }
                    s.slots[i] = Some(a + j);
                }
                if self.key_exact
                    && (b - a != self.pk.len() || self.pk.iter().any(|&i| s.slots[i].is_none()))
                {
                    return Err(Miss::Mismatch); // the key columns changed (ALTER … PRIMARY KEY)
                }
            }
            _ => return Err(Miss::Form),
        }
        Ok(ch.op)
    }

    fn row(
        &self,
        line: &[u8],
        cols: &[RawCol],
        s: &mut Scratch,
        toast_ok: bool,
        out: &mut Vec<u8>,
    ) -> Res<()> {
        out.push(2);
        for i in 0..self.columns.len() {
            let Some(j) = s.slots[i] else {
                out.push(0);
                continue;
            };
            let col = &cols[j];
            match col.kind {
                ValKind::Null => out.push(0),
                ValKind::Unchanged if toast_ok => {
                    out.push(0);
                    s.unchanged.push(i);
                }
                ValKind::Unchanged => return Err(Miss::Form),
                _ => value(
                    self.columns[i].conv,
                    text(line, col, &mut s.text),
                    true,
                    out,
                )?,
            }
        }
        Ok(())
    }

    /// Encode one parsed change: `key` receives the framed key (untouched without a primary
    /// key), `val` the framed envelope. Returns the envelope's op symbol index (c=0, u=1, d=2).
    #[allow(clippy::too_many_arguments)]
    pub fn encode(
        &self,
        line: &[u8],
        ch: &Change,
        cols: &[RawCol],
        seq: i64,
        lsn: &[u8],
        tail: &[u8],
        s: &mut Scratch,
        key: &mut Vec<u8>,
        val: &mut Vec<u8>,
    ) -> Res<u8> {
        let op = self.slots(line, ch, cols, s)?;
        s.unchanged.clear();
        val.clear();
        val.extend_from_slice(&self.value_prefix);
        let op_index = match op {
            Op::Insert => 0,
            Op::Update => 1,
            Op::Delete => 2,
        };
        if op == Op::Delete {
            self.row(line, cols, s, false, val)?;
            val.push(0);
        } else {
            val.push(0);
            self.row(line, cols, s, op == Op::Update, val)?;
        }
        if let Some(prefix) = &self.key_prefix {
            key.clear();
            key.extend_from_slice(prefix);
            for &i in &self.pk {
                let col = s.slots[i].map(|j| &cols[j]).ok_or(Miss::Form)?;
                if !matches!(col.kind, ValKind::Bare | ValKind::Quoted | ValKind::Bit) {
                    return Err(Miss::Form); // a NULL or unchanged key column: the reference raises
                }
                value(
                    self.columns[i].conv,
                    text(line, col, &mut s.text),
                    false,
                    key,
                )?;
            }
        }
        val.push(op_index << 1);
        val.extend_from_slice(&self.src_names);
        val.extend_from_slice(lsn);
        put_long(val, seq);
        val.extend_from_slice(tail);
        if s.unchanged.is_empty() {
            val.push(0);
        } else {
            put_long(val, s.unchanged.len() as i64);
            for &i in &s.unchanged {
                put_bytes(val, &self.columns[i].name);
            }
            val.push(0);
        }
        Ok(op_index)
    }
}
