//! PostgreSQL's binary forms (the `send` functions' output, as binary COPY carries them) → the
//! Avro bytes of the value form (docs/internals.md "Value forms"), the same bytes the reference
//! path writes from the value's text (`bridge/source/converters.py` and the codec's writer).
//!
//! A value whose binary form is not what the type sends (a wrong length, an array of another
//! depth than the column's) is `Err(Miss::Value)`: the chunk takes the reference path, which
//! reads the text and answers (or raises) as it always does. Modifier checks (`varchar(n)`,
//! `numeric(p,s)`) are the text path's own (`plan::value`): a stale catalog is `Miss::Modifier`.

use super::convert::{put_long, Miss, Res};
use super::plan::{value, Conv};

/// The binary form of a column (or an array column's elements), chosen once per column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bin {
    I2,
    I4,
    I8,
    Oid,
    F4,
    F8,
    Bool,
    Bytea,
    Date,
    Time,
    Timestamp,
    TimestampTz,
    Numeric,
    /// text, varchar, name, bpchar (in arrays: padded, as array_out prints it), json
    Text,
    Uuid,
    /// a version byte (1), then jsonb's text
    Jsonb,
}

impl Bin {
    /// The form named by the Python adapter (`bridge/source/native_snapshot.py`), if `conv` is
    /// the conv the reference gives that type.
    pub fn named(name: &str, conv: Conv) -> Option<Bin> {
        let (bin, ok) = match name {
            "int2" => (Bin::I2, conv == Conv::Int),
            "int4" => (Bin::I4, conv == Conv::Int),
            "int8" => (Bin::I8, conv == Conv::Long),
            "oid" => (Bin::Oid, conv == Conv::Long),
            "float4" => (Bin::F4, conv == Conv::Float),
            "float8" => (Bin::F8, conv == Conv::Double),
            "bool" => (Bin::Bool, conv == Conv::Bool),
            "bytea" => (Bin::Bytea, conv == Conv::Bytes),
            "date" => (Bin::Date, conv == Conv::Date),
            "time" => (Bin::Time, conv == Conv::Time),
            "timestamp" => (Bin::Timestamp, conv == Conv::Timestamp),
            "timestamptz" => (Bin::TimestampTz, conv == Conv::TimestampTz),
            "numeric" => (Bin::Numeric, matches!(conv, Conv::Decimal { .. })),
            "text" => (Bin::Text, matches!(conv, Conv::Str { .. })),
            "uuid" => (Bin::Uuid, matches!(conv, Conv::Str { .. })),
            "jsonb" => (Bin::Jsonb, matches!(conv, Conv::Str { .. })),
            _ => return None,
        };
        ok.then_some(bin)
    }
}

/// Microseconds (timestamps) and days (dates) between 1970-01-01 and PostgreSQL's 2000-01-01.
const PG_EPOCH_US: i64 = 946_684_800_000_000;
const PG_EPOCH_DAYS: i64 = 10_957;

fn fixed<const N: usize>(d: &[u8]) -> Res<[u8; N]> {
    d.try_into().map_err(|_| Miss::Value)
}

fn branch(nullable: bool, out: &mut Vec<u8>) {
    if nullable {
        out.push(2);
    }
}

/// One non-NULL value of form `bin` → Avro (with its union branch when `nullable`).
/// `scratch` receives text the value goes through (numeric, uuid).
pub fn scalar(
    bin: Bin,
    conv: Conv,
    d: &[u8],
    nullable: bool,
    scratch: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Res<()> {
    match bin {
        Bin::Text => return value(conv, d, nullable, out),
        Bin::Jsonb => {
            let (&1, text) = d.split_first().ok_or(Miss::Value)? else {
                return Err(Miss::Value);
            };
            return value(conv, text, nullable, out);
        }
        Bin::Uuid => {
            let u: [u8; 16] = fixed(d)?;
            scratch.clear();
            for (i, b) in u.iter().enumerate() {
                if matches!(i, 4 | 6 | 8 | 10) {
                    scratch.push(b'-');
                }
                scratch.extend_from_slice(&[hex(b >> 4), hex(b & 15)]);
            }
            return value(conv, scratch, nullable, out);
        }
        Bin::Numeric => {
            numeric_text(d, scratch)?;
            return value(conv, scratch, nullable, out);
        }
        _ => {}
    }
    branch(nullable, out);
    match bin {
        Bin::I2 => put_long(out, i64::from(i16::from_be_bytes(fixed(d)?))),
        Bin::I4 => put_long(out, i64::from(i32::from_be_bytes(fixed(d)?))),
        Bin::I8 => put_long(out, i64::from_be_bytes(fixed(d)?)),
        Bin::Oid => put_long(out, i64::from(u32::from_be_bytes(fixed(d)?))),
        Bin::F4 => {
            let f = f32::from_be_bytes(fixed(d)?);
            let f = if f.is_nan() { f32::NAN } else { f }; // Python's float('NaN')
            out.extend_from_slice(&f.to_le_bytes());
        }
        Bin::F8 => {
            let f = f64::from_be_bytes(fixed(d)?);
            let f = if f.is_nan() { f64::NAN } else { f };
            out.extend_from_slice(&f.to_le_bytes());
        }
        Bin::Bool => match d {
            [0] => out.push(0),
            [1] => out.push(1),
            _ => return Err(Miss::Value),
        },
        Bin::Bytea => {
            put_long(out, d.len() as i64);
            out.extend_from_slice(d);
        }
        Bin::Date => {
            let v = i32::from_be_bytes(fixed(d)?);
            let days = match v {
                i32::MIN | i32::MAX => i64::from(v), // -infinity, infinity: the same sentinels
                _ => i64::from(v) + PG_EPOCH_DAYS,
            };
            if i32::try_from(days).is_err() {
                return Err(Miss::Value); // out of Avro int: the reference raises
            }
            put_long(out, days);
        }
        Bin::Time => put_long(out, i64::from_be_bytes(fixed(d)?)),
        Bin::Timestamp | Bin::TimestampTz => {
            let v = i64::from_be_bytes(fixed(d)?);
            let us = match v {
                i64::MIN | i64::MAX => v,
                _ => v.checked_add(PG_EPOCH_US).ok_or(Miss::Value)?,
            };
            put_long(out, us);
        }
        Bin::Text | Bin::Jsonb | Bin::Uuid | Bin::Numeric => unreachable!("handled above"),
    }
    Ok(())
}

fn hex(n: u8) -> u8 {
    b"0123456789abcdef"[usize::from(n & 15)]
}

/// numeric's binary form (ndigits, weight, sign, dscale, base-10000 digits) → numeric_out's text.
fn numeric_text(d: &[u8], out: &mut Vec<u8>) -> Res<()> {
    let word = |i: usize| -> Res<u16> {
        Ok(u16::from_be_bytes(
            d.get(i..i + 2)
                .ok_or(Miss::Value)?
                .try_into()
                .unwrap_or([0, 0]),
        ))
    };
    let ndigits = usize::from(word(0)?);
    let weight = i64::from(word(2)? as i16);
    let sign = word(4)?;
    let dscale = usize::from(word(6)?);
    if d.len() != 8 + 2 * ndigits || dscale > 0x3fff {
        return Err(Miss::Value);
    }
    out.clear();
    match sign {
        0xC000 => out.extend_from_slice(b"NaN"),
        0xD000 => out.extend_from_slice(b"Infinity"),
        0xF000 => out.extend_from_slice(b"-Infinity"),
        0x0000 | 0x4000 => {}
        _ => return Err(Miss::Value),
    }
    if !out.is_empty() {
        return Ok(());
    }
    let mut digits = Vec::with_capacity(ndigits);
    for i in 0..ndigits {
        let g = word(8 + 2 * i)?;
        if g > 9999 {
            return Err(Miss::Value);
        }
        digits.push(g);
    }
    let group = |k: i64| -> u16 {
        usize::try_from(k)
            .ok()
            .and_then(|k| digits.get(k).copied())
            .unwrap_or(0)
    };
    if sign == 0x4000 {
        out.push(b'-');
    }
    if weight < 0 {
        out.push(b'0');
    } else {
        for k in 0..=weight {
            let g = group(k);
            if k == 0 {
                out.extend_from_slice(g.to_string().as_bytes());
            } else {
                out.extend_from_slice(format!("{g:04}").as_bytes());
            }
        }
    }
    if dscale > 0 {
        out.push(b'.');
        for i in 0..dscale {
            let g = group(weight + 1 + (i / 4) as i64);
            let p = [1000, 100, 10, 1][i % 4];
            out.push(b'0' + (g / p % 10) as u8);
        }
    }
    Ok(())
}

/// An array's binary form (ndim, has-null flag, element oid, per dimension size and lower
/// bound, then the elements, each length-prefixed, -1 for NULL) → nested Avro arrays, leaves
/// `["null", T]`. The column's union branch is the caller's.
pub fn array(
    bin: Bin,
    conv: Conv,
    ndims: u32,
    d: &[u8],
    scratch: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Res<()> {
    let int = |i: usize| -> Res<i32> {
        Ok(i32::from_be_bytes(
            d.get(i..i + 4)
                .ok_or(Miss::Value)?
                .try_into()
                .unwrap_or([0; 4]),
        ))
    };
    let ndim = int(0)?;
    if ndim == 0 {
        out.push(0); // '{}'
        return if d.len() == 12 {
            Ok(())
        } else {
            Err(Miss::Value)
        };
    }
    if u32::try_from(ndim).ok() != Some(ndims) || ndims > 6 {
        return Err(Miss::Value); // a value of another depth: the reference decides
    }
    let mut dims = [0usize; 6];
    for (k, dim) in dims.iter_mut().enumerate().take(ndims as usize) {
        *dim = usize::try_from(int(12 + 8 * k)?).map_err(|_| Miss::Value)?;
        if *dim == 0 {
            return Err(Miss::Value);
        }
    }
    let mut pos = 12 + 8 * ndims as usize;
    level(
        bin,
        conv,
        &dims[..ndims as usize],
        d,
        &mut pos,
        scratch,
        out,
    )?;
    if pos != d.len() {
        return Err(Miss::Value);
    }
    Ok(())
}

fn level(
    bin: Bin,
    conv: Conv,
    dims: &[usize],
    d: &[u8],
    pos: &mut usize,
    scratch: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Res<()> {
    let (&n, inner) = dims.split_first().ok_or(Miss::Value)?;
    put_long(out, n as i64);
    for _ in 0..n {
        if !inner.is_empty() {
            level(bin, conv, inner, d, pos, scratch, out)?;
            continue;
        }
        let len = d.get(*pos..*pos + 4).ok_or(Miss::Value)?;
        let len = i32::from_be_bytes(len.try_into().unwrap_or([0; 4]));
        *pos += 4;
        if len == -1 {
            out.push(0);
            continue;
        }
        let n = usize::try_from(len).map_err(|_| Miss::Value)?;
        let e = d.get(*pos..*pos + n).ok_or(Miss::Value)?;
        *pos += n;
        scalar(bin, conv, e, true, scratch, out)?;
    }
    out.push(0);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(words: &[u16]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_be_bytes()).collect()
    }

    #[test]
    fn numerics_print_as_numeric_out() {
        let mut t = Vec::new();
        numeric_text(&num(&[2, 0, 0x4000, 2, 12, 3400]), &mut t).unwrap();
        assert_eq!(t, b"-12.34");
        numeric_text(&num(&[1, (-1i16) as u16, 0, 5, 5]), &mut t).unwrap();
        assert_eq!(t, b"0.00050");
        numeric_text(&num(&[1, 1, 0, 0, 7]), &mut t).unwrap();
        assert_eq!(t, b"70000");
        numeric_text(&num(&[0, 0, 0, 2]), &mut t).unwrap();
        assert_eq!(t, b"0.00");
        numeric_text(&num(&[0, 0, 0xC000, 0]), &mut t).unwrap();
        assert_eq!(t, b"NaN");
        assert_eq!(
            numeric_text(&num(&[2, 0, 0, 0, 1]), &mut t),
            Err(Miss::Value)
        );
    }

    #[test]
    fn arrays_and_scalars() {
        let mut out = Vec::new();
        let mut s = Vec::new();
        // {{1,NULL}}: ndim 2, has null, int4, dims 1x2
        let mut d = Vec::new();
        for v in [2i32, 1, 23, 1, 1, 2, 1, 4, 1, -1] {
            d.extend_from_slice(&v.to_be_bytes());
        }
        array(Bin::I4, Conv::Int, 2, &d, &mut s, &mut out).unwrap();
        assert_eq!(out, [2, 4, 2, 2, 0, 0, 0]);
        assert_eq!(
            array(Bin::I4, Conv::Int, 1, &d, &mut s, &mut out),
            Err(Miss::Value)
        );
        assert_eq!(
            array(Bin::I4, Conv::Int, 2, &d[..d.len() - 1], &mut s, &mut out),
            Err(Miss::Value)
        );
        out.clear();
        scalar(
            Bin::Date,
            Conv::Date,
            &(-10957i32).to_be_bytes(),
            false,
            &mut s,
            &mut out,
        )
        .unwrap();
        assert_eq!(out, [0]);
        out.clear();
        let u = [0xa0u8; 16];
        scalar(
            Bin::Uuid,
            Conv::Str { max_chars: None },
            &u,
            false,
            &mut s,
            &mut out,
        )
        .unwrap();
        assert_eq!(&out[1..], b"a0a0a0a0-a0a0-a0a0-a0a0-a0a0a0a0a0a0");
    }
}
