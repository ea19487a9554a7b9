//! PostgreSQL text → the Avro bytes of the value form (docs/internals.md "Value forms").
//!
//! Each function accepts exactly the texts PostgreSQL prints under the capture session's
//! settings (and that the Python converters of `bridge/source/converters.py` read to the same
//! value); anything else is `Err(Miss::Value)`, and the change takes the Python reference path,
//! which either reads it too (a spelling only Python accepts, e.g. `1_000`) or raises its own
//! `DecodeError`. So the native path never accepts a text the reference rejects, and never reads
//! one to another value — the differential tests hold it to that.

/// Why a change leaves the native path (the code Python sees).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Miss {
    /// not an INSERT/UPDATE/DELETE line
    NotChange = 1,
    /// the line does not parse (the reference raises the DecodeError with line and offset)
    Parse = 2,
    /// no plan for the table yet
    NoPlan = 3,
    /// the line's columns (names, printed types, key) differ from the plan's: DDL
    Mismatch = 4,
    /// a value over a `varchar(n)` length or a `numeric(p,s)` precision/scale (the reference
    /// raises ModifierError and re-reads the catalog)
    Modifier = 5,
    /// a value this code does not read (or that is not a value of the type)
    Value = 6,
    /// a form the native path leaves to the reference: a primary-key change, no-tuple-data,
    /// unchanged TOAST outside an UPDATE's new tuple, a NULL key column
    Form = 7,
}

pub type Res<T> = Result<T, Miss>;

pub fn put_long(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z > 0x7f {
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

pub fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_long(out, bytes.len() as i64);
    out.extend_from_slice(bytes);
}

fn digits(t: &[u8]) -> bool {
    !t.is_empty() && t.iter().all(u8::is_ascii_digit)
}

/// `[+-]?[0-9]+` → i64 (Python's `int` reads these to the same number).
pub fn int(t: &[u8]) -> Res<i64> {
    let (neg, d) = match t.first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    if !digits(d) {
        return Err(Miss::Value);
    }
    let mut v: i64 = 0;
    for &c in d {
        v = v
            .checked_mul(10)
            .and_then(|v| {
                let c = i64::from(c - b'0');
                if neg {
                    v.checked_sub(c)
                } else {
                    v.checked_add(c)
                }
            })
            .ok_or(Miss::Value)?;
    }
    Ok(v)
}

/// PostgreSQL's float output (and plain decimal/exponent forms) → f64, as Python's `float`.
pub fn float(t: &[u8]) -> Res<f64> {
    match t {
        b"NaN" => return Ok(f64::NAN),
        b"Infinity" => return Ok(f64::INFINITY),
        b"-Infinity" => return Ok(f64::NEG_INFINITY),
        _ => {}
    }
    if t.is_empty()
        || !t
            .iter()
            .all(|&c| c.is_ascii_digit() || matches!(c, b'+' | b'-' | b'.' | b'e' | b'E'))
        || !t.iter().any(u8::is_ascii_digit)
    {
        return Err(Miss::Value);
    }
    let s = std::str::from_utf8(t).map_err(|_| Miss::Value)?;
    s.parse::<f64>().map_err(|_| Miss::Value)
}

/// `true`/`false` (test_decoding), `t`/`f` (SELECT text).
pub fn boolean(t: &[u8]) -> Res<bool> {
    match t {
        b"true" | b"t" => Ok(true),
        b"false" | b"f" => Ok(false),
        _ => Err(Miss::Value),
    }
}

/// `\x0a0b` → bytes, appended with its length.
pub fn bytea(t: &[u8], out: &mut Vec<u8>) -> Res<()> {
    let hex = t.strip_prefix(b"\\x").ok_or(Miss::Value)?;
    if hex.len() % 2 != 0 {
        return Err(Miss::Value);
    }
    put_long(out, (hex.len() / 2) as i64);
    for pair in hex.chunks_exact(2) {
        let h = (pair[0] as char).to_digit(16).ok_or(Miss::Value)?;
        let l = (pair[1] as char).to_digit(16).ok_or(Miss::Value)?;
        out.push((h * 16 + l) as u8);
    }
    Ok(())
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn num(t: &[u8]) -> Res<i64> {
    if !digits(t) {
        return Err(Miss::Value);
    }
    Ok(t.iter().fold(0i64, |v, &c| v * 10 + i64::from(c - b'0')))
}

/// `YYYY-MM-DD` with 1 <= YYYY <= 9999 (what `date.fromisoformat` reads), as days.
fn ymd(t: &[u8]) -> Res<i64> {
    if t.len() != 10 || t[4] != b'-' || t[7] != b'-' {
        return Err(Miss::Value);
    }
    let (y, m, d) = (num(&t[..4])?, num(&t[5..7])?, num(&t[8..])?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let dim = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return Err(Miss::Value),
    };
    if y < 1 || d < 1 || d > dim {
        return Err(Miss::Value);
    }
    Ok(days_from_civil(y, m, d))
}

pub const DATE_NEG_INFINITY: i64 = -(1 << 31);
pub const DATE_POS_INFINITY: i64 = (1 << 31) - 1;
pub const TS_NEG_INFINITY: i64 = i64::MIN;
pub const TS_POS_INFINITY: i64 = i64::MAX;
const US_PER_DAY: i64 = 86_400_000_000;

pub fn date(t: &[u8]) -> Res<i64> {
    match t {
        b"infinity" => Ok(DATE_POS_INFINITY),
        b"-infinity" => Ok(DATE_NEG_INFINITY),
        _ => ymd(t),
    }
}

/// `HH:MM:SS[.f{1,6}]`, HH < 24 → microseconds since midnight.
pub fn time(t: &[u8]) -> Res<i64> {
    if t.len() < 8 || t[2] != b':' || t[5] != b':' {
        return Err(Miss::Value);
    }
    let (h, m, s) = (num(&t[..2])?, num(&t[3..5])?, num(&t[6..8])?);
    if h > 23 || m > 59 || s > 59 {
        return Err(Miss::Value);
    }
    let mut us = ((h * 60 + m) * 60 + s) * 1_000_000;
    if t.len() > 8 {
        let frac = &t[9..];
        if t[8] != b'.' || frac.is_empty() || frac.len() > 6 {
            return Err(Miss::Value);
        }
        us += num(frac)? * 10i64.pow(6 - frac.len() as u32);
    }
    Ok(us)
}

/// `±HH[:MM[:SS]]` → seconds east of UTC.
fn offset(t: &[u8]) -> Res<i64> {
    let sign = match t.first() {
        Some(b'+') => 1,
        Some(b'-') => -1,
        _ => return Err(Miss::Value),
    };
    let body = &t[1..];
    let secs = match body.len() {
        2 => num(body)? * 3600,
        5 if body[2] == b':' => num(&body[..2])? * 3600 + num(&body[3..])? * 60,
        8 if body[2] == b':' && body[5] == b':' => {
            num(&body[..2])? * 3600 + num(&body[3..5])? * 60 + num(&body[6..])?
        }
        _ => return Err(Miss::Value),
    };
    if secs >= 86_400 {
        return Err(Miss::Value);
    }
    Ok(sign * secs)
}

/// `YYYY-MM-DD HH:MM:SS[.f]` (+ `±HH[:MM[:SS]]` when `zone`) → microseconds since the epoch.
pub fn timestamp(t: &[u8], zone: bool) -> Res<i64> {
    match t {
        b"infinity" => return Ok(TS_POS_INFINITY),
        b"-infinity" => return Ok(TS_NEG_INFINITY),
        _ => {}
    }
    if t.len() < 19 || t[10] != b' ' {
        return Err(Miss::Value);
    }
    let days = ymd(&t[..10])?;
    let clock = &t[11..];
    let (clock, off) = if zone {
        let p = clock
            .iter()
            .rposition(|&c| c == b'+' || c == b'-')
            .ok_or(Miss::Value)?;
        (&clock[..p], offset(&clock[p..])?)
    } else {
        (clock, 0)
    };
    let us = time(clock)?;
    Ok(days * US_PER_DAY + us - off * 1_000_000)
}

/// `numeric(p,s)` text `[+-]?D+[.D+]` → the unscaled value's bytes (sized as fastavro sizes
/// them), appended with their length. Too many fractional digits for `scale`, or digits for
/// `precision`: `Miss::Modifier`.
pub fn decimal(t: &[u8], precision: u32, scale: u32, out: &mut Vec<u8>) -> Res<()> {
    let (neg, body) = match t.first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let (int_part, frac) = match body.iter().position(|&c| c == b'.') {
        Some(i) => (&body[..i], &body[i + 1..]),
        None => (body, &b""[..]),
    };
    if !digits(int_part) || (body.len() > int_part.len() && !digits(frac)) {
        return Err(Miss::Value);
    }
    let mut frac = frac;
    while frac.len() > scale as usize {
        match frac.split_last() {
            Some((b'0', rest)) => frac = rest,
            _ => return Err(Miss::Modifier),
        }
    }
    // significant digits of the unscaled value: the integer part, then the fraction padded to
    // `scale`, leading zeros dropped
    let pad = scale as usize - frac.len();
    let digits_all = int_part.iter().chain(frac.iter());
    let lead = digits_all.clone().take_while(|&&c| c == b'0').count();
    let sig = int_part.len() + frac.len() - lead;
    let sig = if sig == 0 { 0 } else { sig + pad };
    if sig > precision as usize {
        return Err(Miss::Modifier);
    }
    if sig > 38 {
        // beyond i128: base-2^32 limbs, as Python's arbitrary-precision int
        let ds = digits_all.skip(lead).map(|&c| c - b'0');
        big_unscaled(ds.chain(std::iter::repeat_n(0, pad)), neg, out);
        return Ok(());
    }
    let mut n: i128 = 0;
    for &c in digits_all.skip(lead) {
        n = n * 10 + i128::from(c - b'0');
    }
    if n != 0 {
        for _ in 0..pad {
            n *= 10;
        }
    }
    if neg {
        n = -n;
    }
    let bits = 128 - n.unsigned_abs().leading_zeros() as usize;
    let len = (bits + 8) >> 3;
    put_long(out, len as i64);
    out.extend_from_slice(&n.to_be_bytes()[16 - len..]);
    Ok(())
}

/// The two's-complement big-endian bytes of the integer with decimal `digits` (negated when
/// `neg`), sized as fastavro sizes them (`(bit_length + 8) >> 3`), appended with their length.
fn big_unscaled(digits: impl Iterator<Item = u8>, neg: bool, out: &mut Vec<u8>) {
    let mut limbs: Vec<u32> = Vec::new(); // little-endian
    for d in digits {
        let mut carry = u64::from(d);
        for l in limbs.iter_mut() {
            let v = u64::from(*l) * 10 + carry;
            *l = v as u32;
            carry = v >> 32;
        }
        if carry > 0 {
            limbs.push(carry as u32);
        }
    }
    while limbs.last() == Some(&0) {
        limbs.pop();
    }
    let bits = match limbs.last() {
        Some(top) => 32 * limbs.len() - top.leading_zeros() as usize,
        None => 0,
    };
    let len = (bits + 8) >> 3;
    let mut be: Vec<u8> = limbs.iter().rev().flat_map(|l| l.to_be_bytes()).collect();
    if be.len() < len {
        let mut padded = vec![0; len - be.len()];
        padded.extend_from_slice(&be);
        be = padded;
    }
    let mut be = be.split_off(be.len() - len);
    if neg {
        for b in be.iter_mut() {
            *b = !*b;
        }
        for b in be.iter_mut().rev() {
            let (v, overflow) = b.overflowing_add(1);
            *b = v;
            if !overflow {
                break;
            }
        }
    }
    put_long(out, len as i64);
    out.extend_from_slice(&be);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_timestamps() {
        assert_eq!(date(b"1970-01-02"), Ok(1));
        assert_eq!(date(b"2000-02-29"), Ok(11016));
        assert_eq!(date(b"2001-02-29"), Err(Miss::Value));
        assert_eq!(date(b"0000-01-01"), Err(Miss::Value));
        assert_eq!(timestamp(b"1970-01-01 00:00:01.5", false), Ok(1_500_000));
        assert_eq!(timestamp(b"1970-01-01 01:00:00+01", true), Ok(0));
        assert_eq!(
            timestamp(b"1970-01-01 00:00:00-00:30", true),
            Ok(1_800_000_000)
        );
        assert_eq!(timestamp(b"1970-01-01 00:00:00", true), Err(Miss::Value));
        assert_eq!(time(b"24:00:00"), Err(Miss::Value));
    }

    #[test]
    fn decimals_as_fastavro() {
        let mut out = Vec::new();
        decimal(b"-1.28", 5, 2, &mut out).unwrap();
        assert_eq!(out, [4, 0xff, 0x80]);
        out.clear();
        decimal(b"1.50", 3, 1, &mut out).unwrap();
        assert_eq!(out, [2, 15]);
        assert_eq!(decimal(b"1.55", 3, 1, &mut out), Err(Miss::Modifier));
        assert_eq!(decimal(b"100.0", 3, 1, &mut out), Err(Miss::Modifier));
        out.clear();
        decimal(b"0", 2, 2, &mut out).unwrap();
        assert_eq!(out, [2, 0]);
        // beyond i128 as Python's int.to_bytes: 10**40 and -(10**40)
        let ten40 = format!("1{}", "0".repeat(40));
        out.clear();
        decimal(ten40.as_bytes(), 50, 0, &mut out).unwrap();
        let mut small = Vec::new();
        big_unscaled(ten40.bytes().map(|c| c - b'0'), false, &mut small);
        assert_eq!(out, small);
        assert_eq!(out[0], 34); // 17 bytes
        assert_eq!(&out[1..4], [0x1d, 0x63, 0x29]);
        out.clear();
        decimal(format!("-{ten40}").as_bytes(), 50, 0, &mut out).unwrap();
        assert_eq!(&out[..4], [34, 0xe2, 0x9c, 0xd6]);
        small.clear();
        big_unscaled([1, 2, 8].into_iter(), true, &mut small);
        assert_eq!(small, [4, 0xff, 0x80]);
    }

    #[test]
    fn ints_and_floats() {
        assert_eq!(int(b"-9223372036854775808"), Ok(i64::MIN));
        assert_eq!(int(b"9223372036854775808"), Err(Miss::Value));
        assert_eq!(int(b"1_0"), Err(Miss::Value));
        assert_eq!(float(b"-1.5e+10"), Ok(-1.5e10));
        assert!(float(b"inf").is_err());
        assert!(float(b"e").is_err());
    }
}
