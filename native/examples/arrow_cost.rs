//! What an Arrow interface between the crate and Python would cost the sink (issue 16, item 2),
//! measured on the orders envelopes of bench/sink.py. Run by `bench/arrow_cost.py`:
//!
//!     cargo run --release --example arrow_cost -- [rows]
//!
//! A (the sink today): validate each envelope and transcode its row straight to COPY fields.
//! B (Arrow in between): validate each envelope and append its row to Arrow-layout column
//! builders (validity bitmaps, i64 / i128-decimal values, i32 offsets + data for strings: what
//! `arrow-rs` builders hold), then write the COPY fields from those columns, as a sink fed by
//! RecordBatches must (PostgreSQL takes no Arrow). The C data interface handover between them
//! is pointer passing (measured on the Python side by the script). Prints ns per row for A and B.

/// This thread's CPU time in ns (`/proc/thread-self/schedstat`): the measure is CPU, as the
/// sink's (bench/sink.py), not wall time, which other jobs on the machine stretch.
fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse().ok()))
        .unwrap_or(0)
}

use _native::sink::avro::{self, Col, Scalar, ValueRef};
use _native::sink::copy::{self, Code};
use _native::sink::numeric;

fn long(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn string(out: &mut Vec<u8>, s: &[u8]) {
    long(out, s.len() as i64);
    out.extend_from_slice(s);
}

/// One envelope of the orders table (insert), as the producer writes it (without framing).
fn envelope(i: i64) -> Vec<u8> {
    let mut o = vec![0u8, 2]; // before null, after row
    o.push(2);
    long(&mut o, i); // id
    o.push(2);
    long(&mut o, 1 + i * 7919 % 100_000); // account_id
    o.push(2);
    let cents = (i * 104_729 % 10_000_000).to_be_bytes();
    let first = cents.iter().position(|&b| b != 0).unwrap_or(7).min(4);
    string(&mut o, &cents[first..]); // amount decimal(12,2)
    o.push(2);
    string(&mut o, b"shipped-to-customer"); // status
    if i % 10 == 0 {
        o.push(0); // note null
    } else {
        o.push(2);
        string(&mut o, format!("note {i} {}", "x".repeat(52)).as_bytes());
    }
    o.push(2);
    long(&mut o, 1_700_000_000_000_000 + i * 1000); // created_at
    o.push(2);
    let doc = format!(
        r#"{{"sku": "SKU-{:06}", "qty": 3, "tags": ["a", "b"], "src": "web", "ref": "{:016x}"}}"#,
        i % 1_000_000,
        i * 2_654_435_761
    );
    string(&mut o, doc.as_bytes());
    o.push(0); // op c
    for s in [b"bench".as_slice(), b"public", b"orders"] {
        string(&mut o, s);
    }
    long(&mut o, 1_000_000 + i / 1000); // commit_lsn
    long(&mut o, i % 1000); // seq
    long(&mut o, i / 1000); // xid
    o.push(0); // commit_ts null
    o.push(0); // snapshot
    long(&mut o, 1_700_000_000_000); // ts_ms
    o.push(0); // unchanged []
    o
}

const COLS: [Col; 7] = [
    Col {
        scalar: Scalar::Long,
        ndims: 0,
    },
    Col {
        scalar: Scalar::Int,
        ndims: 0,
    },
    Col {
        scalar: Scalar::Dec { scale: 2, limit: 7 },
        ndims: 0,
    },
    Col {
        scalar: Scalar::Str,
        ndims: 0,
    },
    Col {
        scalar: Scalar::Str,
        ndims: 0,
    },
    Col {
        scalar: Scalar::Long,
        ndims: 0,
    },
    Col {
        scalar: Scalar::Str,
        ndims: 0,
    },
];
const CODES: [Code; 7] = [
    Code::Q,
    Code::I,
    Code::AnyText,
    Code::Text,
    Code::Text,
    Code::Ts,
    Code::Text,
];

/// A: straight to COPY.
fn direct(values: &[Vec<u8>], out: &mut Vec<u8>) {
    out.clear();
    let mut scratch = Vec::new();
    for v in values {
        let env = avro::envelope(v, 0, &COLS, &mut avro::AcceptAll).expect("valid");
        let mut r = avro::Reader::new(v, env.after.expect("row"));
        out.extend_from_slice(&7i16.to_be_bytes());
        for (c, code) in COLS.iter().zip(CODES) {
            let x = avro::column(&mut r, *c, &mut avro::AcceptAll).expect("valid");
            copy::field(out, code, c.scalar, x, &mut scratch);
        }
    }
}

/// Arrow-layout builders for the seven columns.
#[derive(Default)]
struct Columns {
    validity: Vec<Vec<u8>>,
    ints: Vec<Vec<i64>>,
    decimals: Vec<i128>,
    offsets: Vec<Vec<i32>>,
    data: Vec<Vec<u8>>,
    len: usize,
}

impl Columns {
    fn new() -> Self {
        Columns {
            validity: vec![Vec::new(); 7],
            ints: vec![Vec::new(); 7],
            offsets: vec![vec![0]; 7],
            data: vec![Vec::new(); 7],
            ..Default::default()
        }
    }

    fn set_valid(&mut self, col: usize, valid: bool) {
        let row = self.len;
        let bm = &mut self.validity[col];
        if row.is_multiple_of(8) {
            bm.push(0);
        }
        if valid {
            let last = bm.len() - 1;
            bm[last] |= 1 << (row % 8);
        }
    }

    fn push(&mut self, col: usize, v: ValueRef<'_>) {
        self.set_valid(col, v != ValueRef::Null);
        match (col, v) {
            (0 | 1 | 5, ValueRef::Int(x)) => self.ints[col].push(x as i64),
            (2, ValueRef::DecBytes(b, _)) => {
                let mut a = [if b.first().is_some_and(|&x| x & 0x80 != 0) {
                    0xff
                } else {
                    0
                }; 16];
                a[16 - b.len()..].copy_from_slice(b);
                self.decimals.push(i128::from_be_bytes(a));
            }
            (_, ValueRef::Str(s)) => {
                self.data[col].extend_from_slice(s.as_bytes());
                let end = self.data[col].len() as i32;
                self.offsets[col].push(end);
            }
            (_, ValueRef::Null) => match col {
                0 | 1 | 5 => self.ints[col].push(0),
                2 => self.decimals.push(0),
                _ => {
                    let end = *self.offsets[col].last().unwrap_or(&0);
                    self.offsets[col].push(end);
                }
            },
            _ => unreachable!("the orders shape"),
        }
    }

    fn valid(&self, col: usize, row: usize) -> bool {
        self.validity[col][row / 8] & (1 << (row % 8)) != 0
    }
}

/// B: to Arrow-layout columns, then to COPY from them.
fn via_arrow(values: &[Vec<u8>], out: &mut Vec<u8>) -> usize {
    let mut cols = Columns::new();
    for v in values {
        let env = avro::envelope(v, 0, &COLS, &mut avro::AcceptAll).expect("valid");
        let mut r = avro::Reader::new(v, env.after.expect("row"));
        for (i, c) in COLS.iter().enumerate() {
            let x = avro::column(&mut r, *c, &mut avro::AcceptAll).expect("valid");
            cols.push(i, x);
        }
        cols.len += 1;
    }
    out.clear();
    let mut scratch = Vec::new();
    for row in 0..cols.len {
        out.extend_from_slice(&7i16.to_be_bytes());
        for (i, code) in CODES.iter().enumerate() {
            if !cols.valid(i, row) {
                out.extend_from_slice(&(-1i32).to_be_bytes());
                continue;
            }
            match i {
                0 | 1 | 5 => {
                    copy::field(
                        out,
                        *code,
                        Scalar::Long,
                        ValueRef::Int(i128::from(cols.ints[i][row])),
                        &mut scratch,
                    );
                }
                2 => {
                    let d = cols.decimals[row];
                    let digits = d.unsigned_abs().to_string();
                    scratch.clear();
                    numeric::sci_string(d < 0, &digits, 2, &mut scratch);
                    out.extend_from_slice(&(scratch.len() as i32).to_be_bytes());
                    out.extend_from_slice(&scratch);
                }
                _ => {
                    let (a, b) = (
                        cols.offsets[i][row] as usize,
                        cols.offsets[i][row + 1] as usize,
                    );
                    let s = &cols.data[i][a..b];
                    out.extend_from_slice(&(s.len() as i32).to_be_bytes());
                    out.extend_from_slice(s);
                }
            }
        }
    }
    cols.len
}

fn main() {
    let rows: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    let batch = 10_000;
    let values: Vec<Vec<u8>> = (0..rows as i64).map(envelope).collect();
    let mut out = Vec::new();
    let mut check = Vec::new();
    // the two produce the same COPY bytes
    direct(&values[..1000], &mut out);
    via_arrow(&values[..1000], &mut check);
    assert_eq!(out, check, "A and B must write the same stream");
    let mut best = [f64::MAX; 2];
    for _ in 0..9 {
        let t = cpu_ns();
        for chunk in values.chunks(batch) {
            direct(chunk, &mut out);
        }
        best[0] = best[0].min((cpu_ns() - t) as f64 / rows as f64);
        let t = cpu_ns();
        for chunk in values.chunks(batch) {
            via_arrow(chunk, &mut out);
        }
        best[1] = best[1].min((cpu_ns() - t) as f64 / rows as f64);
    }
    println!(
        "{{\"rows\": {rows}, \"direct_ns_per_row\": {:.1}, \"arrow_ns_per_row\": {:.1}}}",
        best[0], best[1]
    );
}
