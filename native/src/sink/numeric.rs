//! Decimals without Python: the coefficient of an Avro decimal in decimal digits, Python's
//! `str(Decimal)` of it, and PostgreSQL's binary numeric (`bridge/sink/stage.py` `numeric_body`).

/// The sign and the decimal digits (no leading zeros; "0" for zero) of a big-endian
/// two's-complement integer. Quadratic in the length, which the precision bounds (<= 420 bytes).
pub fn coefficient(b: &[u8]) -> (bool, String) {
    let neg = b.first().is_some_and(|&x| x & 0x80 != 0);
    let mut mag: Vec<u8> = b.to_vec();
    if neg {
        // two's complement: invert and add one
        for x in mag.iter_mut() {
            *x = !*x;
        }
        for x in mag.iter_mut().rev() {
            let (v, carry) = x.overflowing_add(1);
            *x = v;
            if !carry {
                break;
            }
        }
    }
    // base 256 -> base 10**9 limbs, least significant first
    let mut limbs: Vec<u32> = Vec::with_capacity(mag.len() / 4 + 1);
    for &byte in &mag {
        let mut carry = u64::from(byte);
        for l in limbs.iter_mut() {
            let x = u64::from(*l) * 256 + carry;
            *l = (x % 1_000_000_000) as u32;
            carry = x / 1_000_000_000;
        }
        while carry > 0 {
            limbs.push((carry % 1_000_000_000) as u32);
            carry /= 1_000_000_000;
        }
    }
    while limbs.last() == Some(&0) {
        limbs.pop();
    }
    if limbs.is_empty() {
        return (false, "0".to_string());
    }
    let mut s = String::with_capacity(limbs.len() * 9);
    s.push_str(&limbs[limbs.len() - 1].to_string());
    for l in limbs.iter().rev().skip(1) {
        s.push_str(&format!("{l:09}"));
    }
    (neg, s)
}

/// Python's `str(Decimal)` (`to_sci_string`) of `(-1)**neg * digits * 10**-scale`.
pub fn sci_string(neg: bool, digits: &str, scale: u32, out: &mut Vec<u8>) {
    let exp = -i64::from(scale);
    let n = digits.len() as i64;
    let leftdigits = exp + n;
    let dotplace = if exp <= 0 && leftdigits > -6 {
        leftdigits
    } else {
        1
    };
    if neg {
        out.push(b'-');
    }
    let d = digits.as_bytes();
    if dotplace <= 0 {
        out.extend_from_slice(b"0.");
        out.extend(std::iter::repeat_n(b'0', (-dotplace) as usize));
        out.extend_from_slice(d);
    } else if dotplace >= n {
        out.extend_from_slice(d);
        out.extend(std::iter::repeat_n(b'0', (dotplace - n) as usize));
    } else {
        out.extend_from_slice(&d[..dotplace as usize]);
        out.push(b'.');
        out.extend_from_slice(&d[dotplace as usize..]);
    }
    if leftdigits != dotplace {
        let e = leftdigits - dotplace;
        out.push(b'E');
        out.extend_from_slice(format!("{e:+}").as_bytes());
    }
}

/// The special values of `numeric_body` (`_NUM_SPECIAL`).
pub fn special(s: &str) -> Option<u16> {
    match s {
        "NaN" => Some(0xC000),
        "Infinity" | "+Infinity" => Some(0xD000),
        "-Infinity" => Some(0xF000),
        _ => None,
    }
}

/// Append the binary numeric body (no length) of `(-1)**neg * int(digits) * 10**-dscale`, as
/// `numeric_body` computes it from the fixed-point text. `digits` are ASCII digits (leading
/// zeros allowed). Returns false when a field does not fit its 16 bits (Python's `struct.error`).
pub fn numeric_body(neg: bool, digits: &[u8], dscale: u32, out: &mut Vec<u8>) -> bool {
    let pad = ((4 - dscale % 4) % 4) as usize;
    let first = digits.iter().position(|&c| c != b'0');
    let Some(first) = first else {
        push_i16s(out, &[0, 0]);
        out.extend_from_slice(&0u16.to_be_bytes());
        return push_scale(out, dscale);
    };
    // the integer's digits, padded to whole base-10000 groups after the point
    let sig = &digits[first..];
    let total = sig.len() + pad;
    let ngroups_all = total.div_ceil(4);
    let lead = ngroups_all * 4 - total; // zeros in front of the most significant group
    let digit_at = |i: usize| -> u16 {
        // i-th digit of the zero-extended string (lead zeros, sig, pad zeros)
        if i < lead || i >= lead + sig.len() {
            0
        } else {
            u16::from(sig[i - lead] - b'0')
        }
    };
    let mut groups: Vec<u16> = (0..ngroups_all)
        .map(|g| (0..4).fold(0u16, |acc, k| acc * 10 + digit_at(g * 4 + k)))
        .collect();
    let weight = ngroups_all as i64 - (i64::from(dscale) + pad as i64) / 4 - 1;
    while groups.last() == Some(&0) {
        groups.pop();
    }
    let ng = groups.len();
    if ng > i16::MAX as usize || weight < i64::from(i16::MIN) || weight > i64::from(i16::MAX) {
        return false;
    }
    out.extend_from_slice(&(ng as i16).to_be_bytes());
    out.extend_from_slice(&(weight as i16).to_be_bytes());
    out.extend_from_slice(&(if neg { 0x4000u16 } else { 0 }).to_be_bytes());
    if !push_scale(out, dscale) {
        return false;
    }
    for g in groups {
        out.extend_from_slice(&(g as i16).to_be_bytes());
    }
    true
}

fn push_i16s(out: &mut Vec<u8>, v: &[i16]) {
    for x in v {
        out.extend_from_slice(&x.to_be_bytes());
    }
}

fn push_scale(out: &mut Vec<u8>, dscale: u32) -> bool {
    match i16::try_from(dscale) {
        Ok(s) => {
            out.extend_from_slice(&s.to_be_bytes());
            true
        }
        Err(_) => false,
    }
}

/// `-?[0-9]+(\.[0-9]+)?` with at most 4000 digits (Python's `int()` refuses more than 4300):
/// the text forms `numeric_body` reads without `Decimal`. Returns (neg, digits, dscale).
pub fn plain_text(s: &str) -> Option<(bool, Vec<u8>, u32)> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (ip, fp) = match body.split_once('.') {
        Some((a, b)) => (a, Some(b)),
        None => (body, None),
    };
    let all_digits = |t: &str| !t.is_empty() && t.bytes().all(|c| c.is_ascii_digit());
    if !all_digits(ip) || fp.is_some_and(|f| !all_digits(f)) {
        return None;
    }
    let fp = fp.unwrap_or("");
    if ip.len() + fp.len() > 4000 {
        return None;
    }
    let mut digits = Vec::with_capacity(ip.len() + fp.len());
    digits.extend_from_slice(ip.as_bytes());
    digits.extend_from_slice(fp.as_bytes());
    Some((neg, digits, fp.len() as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sci(neg: bool, d: &str, s: u32) -> String {
        let mut v = Vec::new();
        sci_string(neg, d, s, &mut v);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn python_str_of_decimal() {
        assert_eq!(sci(false, "123", 2), "1.23");
        assert_eq!(sci(false, "123", 10), "1.23E-8");
        assert_eq!(sci(false, "0", 10), "0E-10");
        assert_eq!(sci(false, "0", 2), "0.00");
        assert_eq!(sci(true, "5", 0), "-5");
        assert_eq!(sci(false, "5", 6), "0.000005");
        assert_eq!(sci(false, "5", 7), "5E-7");
    }

    #[test]
    fn coefficients() {
        assert_eq!(coefficient(&[]), (false, "0".into()));
        assert_eq!(coefficient(&[0xff]), (true, "1".into()));
        assert_eq!(coefficient(&[0x00, 0xff]), (false, "255".into()));
        assert_eq!(coefficient(&[0x80]), (true, "128".into()));
        assert_eq!(
            coefficient(&[0x3b, 0x9a, 0xca, 0x00]),
            (false, "1000000000".into())
        );
    }

    #[test]
    fn numeric_groups() {
        let mut v = Vec::new();
        assert!(numeric_body(false, b"12345", 2, &mut v)); // 123.45
        assert_eq!(v, [0, 2, 0, 0, 0, 0, 0, 2, 0, 123, 0x11, 0x94]);
    }
}
