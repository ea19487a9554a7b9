//! The producer core on arbitrary bytes: the test_decoding parser and a plan covering every
//! conv must never panic, and a parse error's offset lies inside the line.
#![no_main]

use _native::producer::parse::{parse_change, RawCol};
use _native::producer::plan::{Column, Conv, Plan};
use _native::producer::Core;
use libfuzzer_sys::fuzz_target;
use std::sync::Mutex;

const CONVS: [(&str, Conv); 12] = [
    ("smallint", Conv::Int),
    ("bigint", Conv::Long),
    ("real", Conv::Float),
    ("double precision", Conv::Double),
    (
        "numeric",
        Conv::Decimal {
            precision: 10,
            scale: 3,
        },
    ),
    ("boolean", Conv::Bool),
    ("bytea", Conv::Bytes),
    ("date", Conv::Date),
    ("time without time zone", Conv::Time),
    ("timestamp without time zone", Conv::Timestamp),
    ("timestamp with time zone", Conv::TimestampTz),
    ("character varying", Conv::Str { max_chars: Some(4) }),
];

fn core() -> Core {
    let mut core = Core::default();
    let columns = CONVS
        .iter()
        .enumerate()
        .map(|(i, (printed, conv))| Column {
            name: format!("c{i}").into_bytes(),
            printed: printed.as_bytes().to_vec(),
            conv: *conv,
            ndims: u32::from(i % 3 == 2),
            delim: b',',
        })
        .collect();
    let plan = Plan {
        columns,
        pk: vec![0, 4],
        key_exact: true,
        key_prefix: Some(vec![0xc3, 0x01]),
        value_prefix: vec![0xc3, 0x01],
        src_names: vec![2, b'x'],
    };
    core.install("public", "t", plan);
    core
}

static CORE: Mutex<Option<Core>> = Mutex::new(None);

fuzz_target!(|data: &[u8]| {
    let mut cols: Vec<RawCol> = Vec::new();
    if let Err(e) = parse_change(data, &mut cols) {
        assert!(e.offset <= data.len());
    }
    // the same bytes behind a header the plan covers, so values reach the converters
    let mut line = b"table public.t: INSERT:".to_vec();
    line.extend_from_slice(data);
    let mut guard = CORE.lock().unwrap();
    let core = guard.get_or_insert_with(core);
    let _ = core.encode(&line, 1, &[0], &[0]);
    let _ = core.encode(data, 1, &[0], &[0]);
});
