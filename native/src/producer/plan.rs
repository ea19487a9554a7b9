//! A relation version's plan (built once, from the catalog's columns and the codec's framing)
//! and the encoding of one parsed change with it: the framed key, and the framed envelope with
//! the transaction's `source` bytes, exactly as `TableCodec.key` / `TableCodec.envelope` write them.

use super::array::array;
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
    /// the conv of the value, or of each element of an array column
    pub conv: Conv,
    /// array dimensions (0: a scalar) and the element delimiter (`,`; `;` for box)
    pub ndims: u32,
    pub delim: u8,
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
    new: Vec<Option<usize>>,
    old: Vec<Option<usize>>,
    text: Vec<u8>,
    unchanged: Vec<usize>,
    old_key: Vec<u8>,
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
pub(crate) fn value(conv: Conv, t: &[u8], nullable: bool, out: &mut Vec<u8>) -> Res<()> {
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

    /// Map a new tuple (INSERT, UPDATE) onto column slots (`slots[i]`: the index in `cols`):
    /// it must list exactly this relation version's columns with their printed types.
    fn map_new(
        &self,
        line: &[u8],
        cols: &[RawCol],
        a: usize,
        b: usize,
        slots: &mut Vec<Option<usize>>,
    ) -> Res<()> {
        let n = self.columns.len();
        slots.clear();
        slots.resize(n, None);
        if b - a != n {
            return Err(Miss::Mismatch);
        }
        for (i, col) in cols[a..b].iter().enumerate() {
            if !self.same_column(line, i, col) {
                return Err(Miss::Mismatch);
            }
            slots[i] = Some(a + i);
        }
        Ok(())
    }

    /// Map an old tuple (UPDATE old-key, DELETE): a subset of the columns (NULLs are skipped);
    /// under replica identity default with a key, exactly the key columns.
    fn map_old(
        &self,
        line: &[u8],
        cols: &[RawCol],
        a: usize,
        b: usize,
        slots: &mut Vec<Option<usize>>,
    ) -> Res<()> {
        slots.clear();
        slots.resize(self.columns.len(), None);
        for (j, col) in cols[a..b].iter().enumerate() {
            let i = self.index_of(line, col).ok_or(Miss::Mismatch)?;
            if col.ty.of(line) != self.columns[i].printed.as_slice() {
                return Err(Miss::Mismatch);
            }
            if slots[i].is_some() {
                return Err(Miss::Form); // a name printed twice: the reference decides
            }
            slots[i] = Some(a + j);
        }
        if self.key_exact && (b - a != self.pk.len() || self.pk.iter().any(|&i| slots[i].is_none()))
        {
            return Err(Miss::Mismatch); // the key columns changed (ALTER … PRIMARY KEY)
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn row(
        &self,
        line: &[u8],
        cols: &[RawCol],
        slots: &[Option<usize>],
        text_buf: &mut Vec<u8>,
        unchanged: Option<&mut Vec<usize>>,
        out: &mut Vec<u8>,
    ) -> Res<()> {
        let mut unchanged = unchanged;
        out.push(2);
        for (i, slot) in slots.iter().enumerate() {
            let Some(j) = *slot else {
                out.push(0);
                continue;
            };
            let col = &cols[j];
            match col.kind {
                ValKind::Null => out.push(0),
                ValKind::Unchanged => match unchanged.as_deref_mut() {
                    Some(names) => {
                        out.push(0);
                        names.push(i);
                    }
                    None => return Err(Miss::Form),
                },
                _ => {
                    let c = &self.columns[i];
                    let t = text(line, col, text_buf);
                    if c.ndims == 0 {
                        value(c.conv, t, true, out)?;
                    } else {
                        out.push(2);
                        let conv = c.conv;
                        let mut leaf = |e: &[u8], o: &mut Vec<u8>| value(conv, e, true, o);
                        array(t, c.ndims, c.delim, &mut leaf, out)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The key record of the row in `slots` (primary-key columns, non-null), framed.
    fn key(
        &self,
        prefix: &[u8],
        line: &[u8],
        cols: &[RawCol],
        slots: &[Option<usize>],
        text_buf: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Res<()> {
        out.clear();
        out.extend_from_slice(prefix);
        for &i in &self.pk {
            let col = slots[i].map(|j| &cols[j]).ok_or(Miss::Form)?;
            if !matches!(col.kind, ValKind::Bare | ValKind::Quoted | ValKind::Bit) {
                return Err(Miss::Form); // a NULL or unchanged key column: the reference raises
            }
            value(self.columns[i].conv, text(line, col, text_buf), false, out)?;
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
        let Scratch {
            new,
            old,
            text: text_buf,
            unchanged,
            old_key,
        } = s;
        let (has_new, has_old) = match (ch.op, ch.new, ch.old) {
            (Op::Insert | Op::Update, Tuple::Cols(a, b), Tuple::Absent) => {
                self.map_new(line, cols, a, b, new)?;
                (true, false)
            }
            (Op::Update, Tuple::Cols(a, b), Tuple::Cols(oa, ob)) => {
                self.map_new(line, cols, a, b, new)?;
                self.map_old(line, cols, oa, ob, old)?;
                (true, true)
            }
            (Op::Delete, Tuple::Absent, Tuple::Cols(oa, ob)) => {
                self.map_old(line, cols, oa, ob, old)?;
                (false, true)
            }
            _ => return Err(Miss::Form),
        };
        unchanged.clear();
        val.clear();
        val.extend_from_slice(&self.value_prefix);
        let op_index = match ch.op {
            Op::Insert => 0,
            Op::Update => 1,
            Op::Delete => 2,
        };
        if has_old {
            self.row(line, cols, old, text_buf, None, val)?;
        } else {
            val.push(0);
        }
        if has_new {
            let toast = if ch.op == Op::Update {
                Some(&mut *unchanged)
            } else {
                None
            };
            self.row(line, cols, new, text_buf, toast, val)?;
        } else {
            val.push(0);
        }
        if let Some(prefix) = &self.key_prefix {
            self.key(
                prefix,
                line,
                cols,
                if has_new { new } else { old },
                text_buf,
                key,
            )?;
            if has_new && has_old {
                // a key change: the producer may split it into a delete and a create in their
                // own partitions; the reference path does that
                self.key(prefix, line, cols, old, text_buf, old_key)?;
                if old_key != key {
                    return Err(Miss::Form);
                }
            }
        }
        val.push(op_index << 1);
        val.extend_from_slice(&self.src_names);
        val.extend_from_slice(lsn);
        put_long(val, seq);
        val.extend_from_slice(tail);
        if unchanged.is_empty() {
            val.push(0);
        } else {
            put_long(val, unchanged.len() as i64);
            for &i in unchanged.iter() {
                put_bytes(val, &self.columns[i].name);
            }
            val.push(0);
        }
        Ok(op_index)
    }
}
