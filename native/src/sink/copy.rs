//! Avro values straight to PostgreSQL binary COPY fields, mirroring `bridge/sink/stage.py`
//! (`row_encoder`'s wire codes). A field the fast path does not cover (arrays, unusual numeric or
//! uuid text) is reported as `Field::Fallback`: the caller encodes that one value the reference
//! way, so the bytes are the same in every case.

use super::avro::{Scalar, ValueRef};
use super::numeric;

/// `stage.py`'s wire codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    H,
    I,
    Q,
    F,
    D,
    Bool,
    Bytes,
    Date,
    Ts,
    Text,
    AnyText,
    Numeric,
    Jsonb,
    Uuid,
    Array,
}

impl Code {
    pub fn parse(s: &str) -> Option<Code> {
        Some(match s {
            "h" => Code::H,
            "i" => Code::I,
            "q" => Code::Q,
            "f" => Code::F,
            "d" => Code::D,
            "bool" => Code::Bool,
            "bytes" => Code::Bytes,
            "date" => Code::Date,
            "ts" => Code::Ts,
            "text" => Code::Text,
            "anytext" => Code::AnyText,
            "numeric" => Code::Numeric,
            "jsonb" => Code::Jsonb,
            "uuid" => Code::Uuid,
            "array" => Code::Array,
            _ => return None,
        })
    }
}

/// How one field went.
#[derive(Debug, PartialEq, Eq)]
pub enum Field {
    Done,
    /// Encode this value through the reference (Python) encoder.
    Fallback,
    /// The value does not fit the wire type (Python's `struct.error`): the record is rejected.
    Bad(&'static str),
}

fn len_prefixed(out: &mut Vec<u8>, body: &[u8]) {
    out.extend_from_slice(&(body.len() as i32).to_be_bytes());
    out.extend_from_slice(body);
}

fn int_field(out: &mut Vec<u8>, code: Code, v: i128) -> Field {
    match code {
        Code::H => match i16::try_from(v) {
            Ok(x) => {
                out.extend_from_slice(&2i32.to_be_bytes());
                out.extend_from_slice(&x.to_be_bytes());
                Field::Done
            }
            Err(_) => Field::Bad("smallint out of range"),
        },
        Code::I | Code::Date => {
            let v = if code == Code::Date && -(1i128 << 31) < v && v < (1i128 << 31) - 1 {
                v - 10957
            } else {
                v
            };
            match i32::try_from(v) {
                Ok(x) => {
                    out.extend_from_slice(&4i32.to_be_bytes());
                    out.extend_from_slice(&x.to_be_bytes());
                    Field::Done
                }
                Err(_) => Field::Bad("integer out of range"),
            }
        }
        Code::Q | Code::Ts => {
            let v = if code == Code::Ts && -(1i128 << 63) < v && v < (1i128 << 63) - 1 {
                v - 946_684_800_000_000
            } else {
                v
            };
            match i64::try_from(v) {
                Ok(x) => {
                    out.extend_from_slice(&8i32.to_be_bytes());
                    out.extend_from_slice(&x.to_be_bytes());
                    Field::Done
                }
                Err(_) => Field::Bad("bigint out of range"),
            }
        }
        _ => Field::Fallback,
    }
}

/// A canonical lower- or upper-case uuid text (36 characters, dashes at 8-13-18-23).
fn uuid_bytes(s: &str) -> Option<[u8; 16]> {
    let b = s.as_bytes();
    if b.len() != 36 || b[8] != b'-' || b[13] != b'-' || b[18] != b'-' || b[23] != b'-' {
        return None;
    }
    let mut out = [0u8; 16];
    let mut k = 0;
    let mut i = 0;
    while i < 36 {
        if b[i] == b'-' {
            i += 1;
            continue;
        }
        let hi = (b[i] as char).to_digit(16)?;
        let lo = (*b.get(i + 1)? as char).to_digit(16)?;
        out[k] = (hi * 16 + lo) as u8;
        k += 1;
        i += 2;
    }
    Some(out)
}

/// Append the COPY field (length + body) of a non-null value of `scalar` read as `v`.
pub fn field(
    out: &mut Vec<u8>,
    code: Code,
    scalar: Scalar,
    v: ValueRef<'_>,
    scratch: &mut Vec<u8>,
) -> Field {
    match (v, code) {
        (ValueRef::Null, _) => {
            out.extend_from_slice(&(-1i32).to_be_bytes());
            Field::Done
        }
        (ValueRef::Int(x), _) => int_field(out, code, x),
        (ValueRef::Float(x), Code::F) => {
            // Python (3.11) widens to a double and narrows back: a signalling NaN comes back
            // quiet, its payload kept (the hardware conversion sets the quiet bit)
            let bits = if x.is_nan() {
                x.to_bits() | 0x0040_0000
            } else {
                x.to_bits()
            };
            out.extend_from_slice(&4i32.to_be_bytes());
            out.extend_from_slice(&bits.to_be_bytes());
            Field::Done
        }
        (ValueRef::Double(x), Code::D) => {
            out.extend_from_slice(&8i32.to_be_bytes());
            out.extend_from_slice(&x.to_bits().to_be_bytes());
            Field::Done
        }
        (ValueRef::Bool(b), Code::Bool) => {
            out.extend_from_slice(&1i32.to_be_bytes());
            out.push(u8::from(b));
            Field::Done
        }
        (ValueRef::Bytes(b), Code::Bytes) => {
            len_prefixed(out, b);
            Field::Done
        }
        (ValueRef::Str(s), Code::Text | Code::AnyText) => {
            len_prefixed(out, s.as_bytes());
            Field::Done
        }
        (ValueRef::Str(s), Code::Jsonb) => {
            out.extend_from_slice(&(s.len() as i32 + 1).to_be_bytes());
            out.push(1);
            out.extend_from_slice(s.as_bytes());
            Field::Done
        }
        (ValueRef::Str(s), Code::Uuid) => match uuid_bytes(s) {
            Some(b) => {
                len_prefixed(out, &b);
                Field::Done
            }
            None => Field::Fallback,
        },
        (ValueRef::Str(s), Code::Numeric) => {
            scratch.clear();
            if let Some(sp) = numeric::special(s) {
                numeric_special(scratch, sp);
            } else if let Some((neg, digits, dscale)) = numeric::plain_text(s) {
                if !numeric::numeric_body(neg, &digits, dscale, scratch) {
                    return Field::Bad("numeric does not fit the binary form");
                }
            } else {
                return Field::Fallback;
            }
            len_prefixed(out, scratch);
            Field::Done
        }
        (ValueRef::DecBytes(b, scale), Code::AnyText | Code::Numeric) => {
            let (neg, digits) = numeric::coefficient(b);
            scratch.clear();
            if code == Code::Numeric {
                if !numeric::numeric_body(neg && digits != "0", digits.as_bytes(), scale, scratch) {
                    return Field::Bad("numeric does not fit the binary form");
                }
            } else {
                numeric::sci_string(neg, &digits, scale, scratch);
            }
            len_prefixed(out, scratch);
            Field::Done
        }
        (ValueRef::DecStr(s), Code::AnyText | Code::Numeric) => {
            // Decimal(s): the producer writes NaN and ±Infinity; anything else the reference way
            if !matches!(s, "NaN" | "Infinity" | "-Infinity") {
                return Field::Fallback;
            }
            if code == Code::Numeric {
                scratch.clear();
                numeric_special(scratch, numeric::special(s).unwrap_or(0xC000));
                len_prefixed(out, scratch);
            } else {
                len_prefixed(out, s.as_bytes());
            }
            Field::Done
        }
        _ => {
            let _ = scalar;
            Field::Fallback
        }
    }
}

fn numeric_special(out: &mut Vec<u8>, sign: u16) {
    out.extend_from_slice(&0i16.to_be_bytes());
    out.extend_from_slice(&0i16.to_be_bytes());
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&0i16.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_text() {
        assert!(uuid_bytes("123e4567-e89b-12d3-a456-426614174000").is_some());
        assert!(uuid_bytes("123e4567-e89b-12d3-a456-42661417400").is_none());
        assert!(uuid_bytes("123e4567-e89b-12d3-a456-42661417400g").is_none());
    }
}
