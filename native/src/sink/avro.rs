//! A bounded Avro reader for the sink's envelopes (untrusted input).
//!
//! Mirrors `bridge/codec/decoder.py` (`compile_decoder`) and `EnvelopeDecoder.decode`: every
//! length and count is checked against the bytes that remain before anything is read or
//! allocated for it, varints are at most 10 bytes (as the Python reader), array nesting is bounded
//! by the schema (at most 6 dimensions), decimals by their precision. Nothing here panics on
//! input: every failure is an `Error` carrying the offset.

use std::fmt;

/// A body that does not decode: what and where (the Python side raises `CodecError`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub what: &'static str,
    pub offset: usize,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at offset {}", self.what, self.offset)
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// Maximum array dimensions (PostgreSQL's MAXDIM; `validate.py` refuses more).
pub const MAX_NDIMS: u8 = 6;

/// A cursor over one record value. All reads are checked.
pub struct Reader<'a> {
    pub d: &'a [u8],
    pub p: usize,
}

impl<'a> Reader<'a> {
    pub fn new(d: &'a [u8], p: usize) -> Self {
        Reader { d, p }
    }

    fn err<T>(&self, what: &'static str) -> Result<T> {
        Err(Error {
            what,
            offset: self.p,
        })
    }

    pub fn remaining(&self) -> usize {
        self.d.len().saturating_sub(self.p)
    }

    pub fn byte(&mut self) -> Result<u8> {
        match self.d.get(self.p) {
            Some(&b) => {
                self.p += 1;
                Ok(b)
            }
            None => self.err("record body is truncated"),
        }
    }

    /// The zig-zagged varint, as `_read_varint` reads it: at most 10 bytes (70 bits).
    pub fn varint(&mut self) -> Result<u128> {
        let b = self.byte()?;
        let mut z = u128::from(b & 0x7f);
        if b < 0x80 {
            return Ok(z);
        }
        let mut shift = 7u32;
        loop {
            let b = self.byte()?;
            z |= u128::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(z);
            }
            shift += 7;
            if shift > 63 {
                return self.err("varint longer than 10 bytes");
            }
        }
    }

    /// An Avro int or long (Python reads both without a range check: up to 70 bits).
    pub fn long(&mut self) -> Result<i128> {
        let z = self.varint()?;
        // z < 2**70: fits i128
        let half = (z >> 1) as i128;
        Ok(if z & 1 == 1 { -half - 1 } else { half })
    }

    /// A string or bytes length, checked against what remains.
    pub fn length(&mut self) -> Result<usize> {
        let z = self.varint()?;
        if z & 1 == 1 {
            return self.err("negative length");
        }
        let n = z >> 1;
        if n > self.remaining() as u128 {
            return self.err("record body is truncated");
        }
        Ok(n as usize)
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return self.err("record body is truncated");
        }
        let s = &self.d[self.p..self.p + n];
        self.p += n;
        Ok(s)
    }

    pub fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.length()?;
        self.take(n)
    }

    pub fn string(&mut self) -> Result<&'a str> {
        let at = self.p;
        let b = self.bytes()?;
        std::str::from_utf8(b).map_err(|_| Error {
            what: "invalid UTF-8",
            offset: at,
        })
    }

    pub fn f32(&mut self) -> Result<f32> {
        let b = self.take(4)?;
        Ok(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn f64(&mut self) -> Result<f64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(f64::from_le_bytes(a))
    }

    /// An array block count (`n`, made positive, its byte size skipped), checked against what
    /// remains: every item takes at least one byte, so a larger count is a lie.
    pub fn block_count(&mut self) -> Result<usize> {
        let mut n = self.long()?;
        if n < 0 {
            n = -n;
            self.varint()?; // the block's size in bytes, unused
        }
        if n > self.remaining() as i128 {
            return self.err("array block count exceeds the bytes that remain");
        }
        Ok(n as usize)
    }
}

/// The scalar of a column as the producer writes it (`bridge/codec/schemas.py`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scalar {
    Int,
    Long,
    Float,
    Double,
    Bool,
    Bytes,
    Str,
    /// `["null", bytes decimal(p,s), "string"]`: `limit` is the most bytes of the precision.
    Dec {
        scale: u32,
        limit: usize,
    },
}

impl Scalar {
    /// The most bytes a two's-complement decimal of precision `p` needs, as `_decimal_bytes`.
    pub fn decimal(precision: u32, scale: u32) -> Option<Scalar> {
        if precision == 0 || precision > 1000 {
            return None;
        }
        let limit = ((f64::from(precision) * 3.321_928_094_887_362_6) as usize + 1) / 8 + 2;
        Some(Scalar::Dec { scale, limit })
    }
}

/// One column of a row record: `["null", T]`, T the scalar or `ndims` nested arrays of
/// `["null", scalar]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Col {
    pub scalar: Scalar,
    pub ndims: u8,
}

/// A value as read, borrowing the record's bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValueRef<'a> {
    Null,
    Int(i128),
    Float(f32),
    Double(f64),
    Bool(bool),
    Bytes(&'a [u8]),
    Str(&'a str),
    /// The two's-complement coefficient of a decimal and its scale.
    DecBytes(&'a [u8], u32),
    /// The string branch of a decimal (NaN, Infinity, ...).
    DecStr(&'a str),
    /// An array value: where its bytes start (re-read to materialise it).
    Array(usize),
}

/// A check of a decimal's string branch (Python's `Decimal(s)` must accept it).
pub trait DecimalCheck {
    fn accepts(&mut self, s: &str) -> bool;
}

/// Accepts what the producer writes there; asks `other` about anything else.
pub fn special_decimal(s: &str) -> bool {
    matches!(s, "NaN" | "Infinity" | "-Infinity")
}

/// Read one non-null scalar (after its union branch).
fn scalar<'a>(
    r: &mut Reader<'a>,
    s: Scalar,
    branch: u8,
    check: &mut dyn DecimalCheck,
) -> Result<ValueRef<'a>> {
    Ok(match s {
        Scalar::Int | Scalar::Long => ValueRef::Int(r.long()?),
        Scalar::Float => ValueRef::Float(r.f32()?),
        Scalar::Double => ValueRef::Double(r.f64()?),
        Scalar::Bool => ValueRef::Bool(r.byte()? == 1),
        Scalar::Bytes => ValueRef::Bytes(r.bytes()?),
        Scalar::Str => ValueRef::Str(r.string()?),
        Scalar::Dec { scale, limit } => {
            if branch == 2 {
                let at = r.p;
                let b = r.bytes()?;
                if b.len() > limit {
                    return Err(Error {
                        what: "decimal larger than its precision allows",
                        offset: at,
                    });
                }
                ValueRef::DecBytes(b, scale)
            } else {
                let at = r.p;
                let s = r.string()?;
                // Python counts characters; NaN / Infinity, never a number past numeric's digits
                if s.len() > 1100 && s.chars().count() > 1100 {
                    return Err(Error {
                        what: "decimal larger than its precision allows",
                        offset: at,
                    });
                }
                if !special_decimal(s) && !check.accepts(s) {
                    return Err(Error {
                        what: "decimal string does not parse",
                        offset: at,
                    });
                }
                ValueRef::DecStr(s)
            }
        }
    })
}

/// A nullable scalar: `["null", T]` (or `["null", decimal, "string"]`). The union index is one
/// byte, as the Python reader reads it.
pub fn nullable_scalar<'a>(
    r: &mut Reader<'a>,
    s: Scalar,
    check: &mut dyn DecimalCheck,
) -> Result<ValueRef<'a>> {
    let at = r.p;
    let u = r.byte()?;
    match (u, s) {
        (0, _) => Ok(ValueRef::Null),
        (2, _) => scalar(r, s, 2, check),
        (4, Scalar::Dec { .. }) => scalar(r, s, 4, check),
        _ => Err(Error {
            what: "union branch index out of range",
            offset: at,
        }),
    }
}

/// Skip (validating) an array of `ndims` dimensions; `visit` sees every innermost item.
pub fn walk_array<'a>(
    r: &mut Reader<'a>,
    col: Col,
    ndims: u8,
    check: &mut dyn DecimalCheck,
    visit: &mut dyn FnMut(ArrayEvent<'a>),
) -> Result<()> {
    visit(ArrayEvent::Open);
    loop {
        let n = r.block_count()?;
        if n == 0 {
            break;
        }
        for _ in 0..n {
            if ndims > 1 {
                walk_array(r, col, ndims - 1, check, visit)?;
            } else {
                let v = nullable_scalar(r, col.scalar, check)?;
                visit(ArrayEvent::Item(v));
            }
        }
    }
    visit(ArrayEvent::Close);
    Ok(())
}

/// What `walk_array` reports, in order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ArrayEvent<'a> {
    Open,
    Item(ValueRef<'a>),
    Close,
}

/// Read one column of a row record.
pub fn column<'a>(
    r: &mut Reader<'a>,
    col: Col,
    check: &mut dyn DecimalCheck,
) -> Result<ValueRef<'a>> {
    if col.ndims == 0 {
        return nullable_scalar(r, col.scalar, check);
    }
    let at = r.p;
    match r.byte()? {
        0 => Ok(ValueRef::Null),
        2 => {
            let start = r.p;
            walk_array(r, col, col.ndims.min(MAX_NDIMS), check, &mut |_| {})?;
            Ok(ValueRef::Array(start))
        }
        _ => Err(Error {
            what: "union branch index out of range",
            offset: at,
        }),
    }
}

/// Skip (validate) a whole row record.
pub fn skip_row(r: &mut Reader<'_>, cols: &[Col], check: &mut dyn DecimalCheck) -> Result<()> {
    for &c in cols {
        column(r, c, check)?;
    }
    Ok(())
}

/// One envelope, decoded: rows stay in the record's bytes (their body offsets).
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope<'a> {
    pub before: Option<usize>,
    pub after: Option<usize>,
    pub op: u8,
    pub commit_lsn: i128,
    pub seq: i128,
    pub xid: i128,
    pub commit_ts: Option<i128>,
    pub snapshot: bool,
    pub ts_ms: i128,
    pub unchanged: Vec<&'a str>,
}

fn nullable_row(
    r: &mut Reader<'_>,
    cols: &[Col],
    check: &mut dyn DecimalCheck,
) -> Result<Option<usize>> {
    let at = r.p;
    match r.byte()? {
        0 => Ok(None),
        2 => {
            let start = r.p;
            skip_row(r, cols, check)?;
            Ok(Some(start))
        }
        _ => Err(Error {
            what: "union branch index out of range",
            offset: at,
        }),
    }
}

/// Decode the envelope body at `value[off..]` (after the framing), validating all of it:
/// rows, op, `source`, `ts_ms`, `unchanged`, and no trailing bytes.
pub fn envelope<'a>(
    value: &'a [u8],
    off: usize,
    cols: &[Col],
    check: &mut dyn DecimalCheck,
) -> Result<Envelope<'a>> {
    let mut r = Reader::new(value, off);
    let before = nullable_row(&mut r, cols, check)?;
    let after = nullable_row(&mut r, cols, check)?;
    let at = r.p;
    let z = r.varint()?;
    if z & 1 == 1 || (z >> 1) >= 5 {
        return Err(Error {
            what: "enum index out of range",
            offset: at,
        });
    }
    let op = (z >> 1) as u8;
    r.string()?; // source.db
    r.string()?; // source.schema
    r.string()?; // source.table
    let at = r.p;
    let commit_lsn = r.long()?;
    if !(0..=i128::from(u64::MAX)).contains(&commit_lsn) {
        return Err(Error {
            what: "commit LSN out of range",
            offset: at,
        });
    }
    let seq = r.long()?;
    let xid = r.long()?;
    let at = r.p;
    let commit_ts = match r.byte()? {
        0 => None,
        2 => Some(r.long()?),
        _ => {
            return Err(Error {
                what: "union branch index out of range",
                offset: at,
            })
        }
    };
    let snapshot = r.byte()? == 1;
    let ts_ms = r.long()?;
    let mut unchanged = Vec::new();
    loop {
        let n = r.block_count()?;
        if n == 0 {
            break;
        }
        for _ in 0..n {
            unchanged.push(r.string()?);
        }
    }
    if r.p != value.len() {
        return Err(Error {
            what: "record body has trailing bytes",
            offset: r.p,
        });
    }
    Ok(Envelope {
        before,
        after,
        op,
        commit_lsn,
        seq,
        xid,
        commit_ts,
        snapshot,
        ts_ms,
        unchanged,
    })
}

/// Accepts every decimal string (for the fuzz target and tests without Python).
pub struct AcceptAll;

impl DecimalCheck for AcceptAll {
    fn accepts(&mut self, _s: &str) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_limits() {
        let mut r = Reader::new(
            &[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01],
            0,
        );
        assert!(r.long().is_ok());
        let mut r = Reader::new(&[0x80; 11], 0);
        assert!(r.long().is_err());
    }

    #[test]
    fn huge_count_refused() {
        // a count of 2**40 items in a 10-byte value
        let mut r = Reader::new(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x40, 0, 0, 0, 0], 0);
        assert!(r.block_count().is_err());
    }
}
