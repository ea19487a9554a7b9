//! The snapshot's binary COPY reader and transcoder (native/src/producer/copybin.rs, binval.rs,
//! snapshot.rs) on arbitrary bytes: the first byte chooses the block size the stream is fed in,
//! the second whether a valid header is prepended (odd: so the fuzzer reaches the rows quickly),
//! the rest is the stream (seeds: real streams of the plan's columns from PostgreSQL). A plan
//! covering every binary form, arrays and text-form columns (`snapshot::EVERY_FORM`) must return rows, misses or a `CopyError` whose offset lies inside the stream; never
//! panic.
#![no_main]

use _native::producer::copybin::{Next, SIGNATURE};
use _native::producer::snapshot::{SnapCol, SnapPlan, Snapshot, EVERY_FORM};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [block, flags, rest @ ..] = data else {
        return;
    };
    let mut stream = Vec::new();
    if flags & 1 == 1 {
        stream.extend_from_slice(SIGNATURE);
        stream.extend_from_slice(&[0; 8]);
    }
    stream.extend_from_slice(rest);
    let plan = SnapPlan {
        cols: EVERY_FORM
            .iter()
            .map(|&(form, conv, ndims)| SnapCol {
                form,
                conv,
                ndims,
                delim: b',',
            })
            .collect(),
        pk: vec![0, 12],
        key_prefix: Some(vec![0xc3, 0x01, 0, 0, 0, 0, 0, 0, 0, 0]),
        value_prefix: vec![0xc3, 0x01],
        src_names: vec![],
        partitions: 3,
        key_texts: 2,
    };
    let mut s = Snapshot::new(plan);
    s.skip
        .insert(vec![0xc3, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 0]);
    for chunk in stream.chunks(usize::from(*block).max(1)) {
        s.reader.feed(chunk);
        loop {
            match s.reader.next_row() {
                Ok(Next::Row) => {
                    if let Ok(Some(p)) = s.row(1, &[2], &[0]) {
                        assert!(p < 3);
                    }
                }
                Ok(Next::More | Next::End) => break,
                Err(e) => {
                    assert!(e.offset <= stream.len() as u64, "{e}");
                    return;
                }
            }
        }
    }
    if let Err(e) = s.reader.finish() {
        assert!(e.offset <= stream.len() as u64, "{e}");
    }
});
