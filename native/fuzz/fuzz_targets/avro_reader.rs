//! The sink's Avro reader (native/src/sink/avro.rs) and COPY transcoder on arbitrary bytes:
//! the first bytes choose the row's columns (every scalar kind, decimals, arrays up to 6
//! dimensions) and their wire codes, the rest is the envelope body. It must return an error or
//! a result, never panic, and never allocate past the input's size.
#![no_main]

use _native::sink::avro::{Col, Scalar};
use _native::sink::copy::Code;
use _native::sink::fuzz_one;
use libfuzzer_sys::fuzz_target;

const SCALARS: [Scalar; 10] = [
    Scalar::Int,
    Scalar::Long,
    Scalar::Float,
    Scalar::Double,
    Scalar::Bool,
    Scalar::Bytes,
    Scalar::Str,
    Scalar::Dec { scale: 2, limit: 7 },
    Scalar::Dec { scale: 0, limit: 2 },
    Scalar::Dec {
        scale: 500,
        limit: 417,
    },
];
const CODES: [Code; 15] = [
    Code::H,
    Code::I,
    Code::Q,
    Code::F,
    Code::D,
    Code::Bool,
    Code::Bytes,
    Code::Date,
    Code::Ts,
    Code::Text,
    Code::AnyText,
    Code::Numeric,
    Code::Jsonb,
    Code::Uuid,
    Code::Array,
];

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n % 8) + 1;
    if rest.len() < 2 * n {
        return;
    }
    let (shape, body) = rest.split_at(2 * n);
    let mut cols = Vec::with_capacity(n);
    let mut codes = Vec::with_capacity(n);
    for pair in shape.chunks(2) {
        let scalar = SCALARS[usize::from(pair[0] % 10)];
        let ndims = (pair[0] / 10) % 7;
        cols.push(Col { scalar, ndims });
        codes.push(CODES[usize::from(pair[1] % 15)]);
    }
    let _ = fuzz_one(body, &cols, &codes);
});
