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
pub fn fuzz_one(value: &[u8], cols: &[avro::Col], codes: &[copy::Code]) -> Result<usize, avro::Error> {
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
