//! The sink's hot loop: Avro envelopes (untrusted) to the staging table's binary COPY stream.
//!
//! `avro` reads (bounded), `copy` and `numeric` write the wire forms, `py` is the Python surface.

pub mod avro;
pub mod copy;
pub mod numeric;
mod py;

pub use py::register;

/// Decode `value` as an envelope body of `cols` and, when it decodes, transcode its rows with
/// `codes` (no fallbacks): the fuzz target's entry point. Never panics.
pub fn fuzz_one(
    value: &[u8],
    cols: &[avro::Col],
    codes: &[copy::Code],
) -> Result<usize, avro::Error> {
    let env = avro::envelope(value, 0, cols, &mut avro::AcceptAll)?;
    let mut out = Vec::new();
    let mut scratch = Vec::new();
    for start in [env.before, env.after].into_iter().flatten() {
        let mut r = avro::Reader::new(value, start);
        for (&c, &code) in cols.iter().zip(codes.iter()) {
            let v = avro::column(&mut r, c, &mut avro::AcceptAll)?;
            let _ = copy::field(&mut out, code, c.scalar, v, &mut scratch);
        }
    }
    Ok(out.len())
}

#[cfg(test)]
mod tests {
    use super::avro::{Col, Scalar};
    use super::copy::Code;
    use super::fuzz_one;

    /// A deterministic stand-in for the fuzz target (native/fuzz) in `cargo test`: mutated
    /// envelopes of every column kind decode or fail, never panic.
    #[test]
    fn mutated_bodies_never_panic() {
        let cols = [
            Col {
                scalar: Scalar::Long,
                ndims: 0,
            },
            Col {
                scalar: Scalar::Dec { scale: 2, limit: 7 },
                ndims: 0,
            },
            Col {
                scalar: Scalar::Str,
                ndims: 2,
            },
            Col {
                scalar: Scalar::Float,
                ndims: 1,
            },
        ];
        let codes = [Code::Q, Code::Numeric, Code::Array, Code::Array];
        // after = (5, 1.23, [["a"]], [1.0]); op c; source; ts_ms; unchanged []
        let mut good = vec![
            0u8, 2, 2, 10, 2, 2, 123, 2, 2, 2, 2, 2, b'a', 0, 0, 2, 2, 2, 0, 0, 0x80, 0x3f, 0,
        ];
        good.extend_from_slice(&[0, 2, b'd', 2, b's', 2, b't', 10, 2, 4, 0, 0, 6, 0]);
        assert!(fuzz_one(&good, &cols, &codes).is_ok());
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut v = good.clone();
            let i = (x as usize) % v.len();
            match (x >> 32) % 4 {
                0 => v[i] = (x >> 40) as u8,
                1 => v.truncate(i),
                2 => v.insert(i, (x >> 40) as u8),
                _ => v
                    .splice(i..i, [0xff, 0xff, 0xff, 0xff, 0x0f])
                    .for_each(drop),
            }
            let _ = fuzz_one(&v, &cols, &codes);
        }
    }
}
