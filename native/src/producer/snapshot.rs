//! The initial snapshot's hot path: binary COPY rows → framed Avro key, framed envelope (op `r`)
//! and partition, as `InitialSnapshot`'s reference path writes them through `Router.records`.
//!
//! `SnapshotTranscoder` holds one table's plan (built once by `bridge/source/native_snapshot.py`
//! from the relation and its codec): per column its binary form (`binval::Bin`) or, for types
//! whose Avro value is PostgreSQL's text, the text form (the column is selected `::text`, whose
//! binary form is the text itself, and read with the streaming path's text conv). The COPY
//! stream is fed block by block; each whole row is transcoded into reused buffers, and only the
//! records (partition, key, envelope) become Python objects. A value the plan cannot write
//! exactly is a `Miss` code: the caller reads the chunk again on the reference path.

use std::collections::HashSet;

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use super::array::array as text_array;
use super::binval::{self, Bin};
use super::convert::{put_long, Miss, Res};
use super::copybin::{CopyReader, Next};
use super::crc::crc32;
use super::plan::{value, Conv};

/// How one column arrives in the COPY stream.
#[derive(Clone, Copy, Debug)]
pub enum Form {
    Bin(Bin),
    /// selected `::text`: PostgreSQL's text, read as test_decoding's text is
    Text,
}

#[derive(Clone, Copy, Debug)]
pub struct SnapCol {
    pub form: Form,
    pub conv: Conv,
    pub ndims: u32,
    pub delim: u8,
}

pub struct SnapPlan {
    pub cols: Vec<SnapCol>,
    pub pk: Vec<usize>,
    pub key_prefix: Option<Vec<u8>>,
    pub value_prefix: Vec<u8>,
    /// source.db, source.schema, source.table, Avro strings
    pub src_names: Vec<u8>,
    pub partitions: u32,
    /// trailing `key::text` fields after the columns (the keyset's last key)
    pub key_texts: usize,
}

const OP_READ: u8 = 3; // bridge.Op symbols: c, u, d, r, t

/// The key's Avro body: the framing (`C3 01` + fingerprint, or `00` + schema id) removed.
fn key_body(key: &[u8]) -> &[u8] {
    if key.starts_with(&[0xc3, 0x01]) {
        key.get(10..).unwrap_or(&[])
    } else if key.first() == Some(&0) {
        key.get(5..).unwrap_or(&[])
    } else {
        key
    }
}

/// One table's transcoder (pure Rust; `SnapshotTranscoder` wraps it for Python).
pub struct Snapshot {
    pub plan: SnapPlan,
    pub reader: CopyReader,
    pub skip: HashSet<Vec<u8>>,
    pub key: Vec<u8>,
    pub val: Vec<u8>,
    scratch: Vec<u8>,
    pub last_key: Vec<Vec<u8>>,
}

impl Snapshot {
    pub fn new(plan: SnapPlan) -> Self {
        let n = plan.cols.len() + plan.key_texts;
        Snapshot {
            plan,
            reader: CopyReader::new(n),
            skip: HashSet::new(),
            key: Vec::new(),
            val: Vec::new(),
            scratch: Vec::new(),
            last_key: Vec::new(),
        }
    }

    fn column(&mut self, i: usize, nullable: bool, key: bool) -> Res<()> {
        let c = self.plan.cols[i];
        let out = if key { &mut self.key } else { &mut self.val };
        let Some(d) = self.reader.field(i) else {
            return if nullable {
                out.push(0);
                Ok(())
            } else {
                Err(Miss::Form) // a NULL key column: the reference raises
            };
        };
        match (c.form, c.ndims) {
            (Form::Bin(bin), 0) => binval::scalar(bin, c.conv, d, nullable, &mut self.scratch, out),
            (Form::Text, 0) => value(c.conv, d, nullable, out),
            (Form::Bin(bin), n) => {
                out.push(2);
                binval::array(bin, c.conv, n, d, &mut self.scratch, out)
            }
            (Form::Text, n) => {
                out.push(2);
                let conv = c.conv;
                let mut leaf = |e: &[u8], o: &mut Vec<u8>| value(conv, e, true, o);
                text_array(d, n, c.delim, &mut leaf, out)
            }
        }
    }

    /// Transcode the reader's current row at `seq`: Some(partition) with `key`/`val` filled, or
    /// None when its key is one to skip (already delivered by an interrupted run).
    pub fn row(&mut self, seq: i64, lsn: &[u8], tail: &[u8]) -> Res<Option<u32>> {
        let ncols = self.plan.cols.len();
        self.last_key.resize(self.plan.key_texts, Vec::new());
        for k in 0..self.plan.key_texts {
            let t = self.reader.field(ncols + k).ok_or(Miss::Form)?;
            self.last_key[k].clear();
            self.last_key[k].extend_from_slice(t);
        }
        let mut partition = 0;
        if let Some(prefix) = &self.plan.key_prefix {
            self.key.clear();
            self.key.extend_from_slice(prefix);
            for j in 0..self.plan.pk.len() {
                self.column(self.plan.pk[j], false, true)?;
            }
            if !self.skip.is_empty() && self.skip.contains(&self.key) {
                return Ok(None);
            }
            if self.plan.partitions > 1 {
                partition = crc32(key_body(&self.key)) % self.plan.partitions;
            }
        }
        self.val.clear();
        self.val.extend_from_slice(&self.plan.value_prefix);
        self.val.extend_from_slice(&[0, 2]); // before: null; after: the row
        for i in 0..ncols {
            self.column(i, true, false)?;
        }
        self.val.push(OP_READ << 1);
        self.val.extend_from_slice(&self.plan.src_names);
        self.val.extend_from_slice(lsn);
        put_long(&mut self.val, seq);
        self.val.extend_from_slice(tail);
        self.val.push(0); // unchanged: none
        Ok(Some(partition))
    }
}

/// A column as the adapter describes it: (name, form, conv, length, precision, scale, ndims,
/// array delimiter); form is a `Bin` name, or "sql-text" for a column selected `::text`.
type ColumnSpec = (String, String, String, i64, i64, i64, u32, String);

/// One table's snapshot transcoder: binary COPY blocks in, (partition, key, envelope) out.
#[pyclass(module = "bridge._native")]
pub struct SnapshotTranscoder {
    core: Snapshot,
}

fn spec_col(spec: ColumnSpec) -> PyResult<SnapCol> {
    let (name, form, conv, length, precision, scale, ndims, delim) = spec;
    let bad = |what: &str| PyValueError::new_err(format!("{what} of column {name:?}"));
    let conv = Conv::named(&conv, length, precision, scale).ok_or_else(|| bad("unknown conv"))?;
    let form = if form == "sql-text" {
        Form::Text
    } else {
        Form::Bin(Bin::named(&form, conv).ok_or_else(|| bad("unknown binary form"))?)
    };
    let &[delim] = delim.as_bytes() else {
        return Err(bad("array delimiter is not one byte"));
    };
    Ok(SnapCol {
        form,
        conv,
        ndims,
        delim,
    })
}

#[pymethods]
impl SnapshotTranscoder {
    /// Raises ValueError for an unknown form or conv, a key column out of range or an array,
    /// or a key prefix without key columns (or the reverse).
    #[new]
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (columns, pk, key_prefix, value_prefix, src_names, partitions, key_texts))]
    fn new(
        columns: Vec<ColumnSpec>,
        pk: Vec<usize>,
        key_prefix: Option<Vec<u8>>,
        value_prefix: Vec<u8>,
        src_names: Vec<u8>,
        partitions: u32,
        key_texts: bool,
    ) -> PyResult<Self> {
        let cols = columns
            .into_iter()
            .map(spec_col)
            .collect::<PyResult<Vec<_>>>()?;
        if pk.iter().any(|&i| cols.get(i).is_none_or(|c| c.ndims > 0))
            || key_prefix.is_some() == pk.is_empty()
            || partitions == 0
        {
            return Err(PyValueError::new_err(
                "key columns, key prefix and partitions do not agree",
            ));
        }
        let key_texts = if key_texts { pk.len() } else { 0 };
        let plan = SnapPlan {
            cols,
            pk,
            key_prefix,
            value_prefix,
            src_names,
            partitions,
            key_texts,
        };
        Ok(SnapshotTranscoder {
            core: Snapshot::new(plan),
        })
    }

    /// Begin a new COPY stream (a chunk's, or a keyless table's scan).
    fn start(&mut self) {
        self.core.reader.start();
    }

    /// The framed keys a resumed table must skip (replaces the previous set).
    fn skip(&mut self, keys: Vec<Vec<u8>>) {
        self.core.skip = keys.into_iter().collect();
    }

    /// Feed blocks of the COPY stream and transcode every whole row in them, numbering the
    /// records from `seq` (a skipped row takes no number), with the chunk's `source` bytes
    /// `lsn` (commit_lsn) and `tail` (xid … ts_ms). Returns `(records, rows read)`, records as
    /// `(partition, key | None, envelope)`, or an int miss code (`convert::Miss`): the chunk
    /// must take the reference path. Raises ValueError naming the offset of a malformed stream.
    fn transcode<'py>(
        &mut self,
        py: Python<'py>,
        blocks: Vec<PyBuffer<u8>>,
        seq: i64,
        lsn: &[u8],
        tail: &[u8],
    ) -> PyResult<Bound<'py, PyAny>> {
        for block in &blocks {
            block.copy_to_slice(py, self.core.reader.space(block.item_count()))?;
        }
        let records = PyList::empty(py);
        let (mut rows, mut seq) = (0usize, seq);
        loop {
            match self.core.reader.next_row() {
                Err(e) => return Err(PyValueError::new_err(e.to_string())),
                Ok(Next::More | Next::End) => break,
                Ok(Next::Row) => {}
            }
            rows += 1;
            match self.core.row(seq, lsn, tail) {
                Err(m) => return Ok((m as u8).into_pyobject(py)?.into_any()),
                Ok(None) => {}
                Ok(Some(partition)) => {
                    let key = self
                        .core
                        .plan
                        .key_prefix
                        .as_ref()
                        .map(|_| PyBytes::new(py, &self.core.key));
                    records.append((partition, key, PyBytes::new(py, &self.core.val)))?;
                    seq += 1;
                }
            }
        }
        Ok((records, rows).into_pyobject(py)?.into_any())
    }

    /// The stream must have ended with its trailer: raises ValueError (naming the offset) when
    /// it is truncated or has bytes after the trailer.
    fn finish(&self) -> PyResult<()> {
        self.core
            .reader
            .finish()
            .map_err(|e| PyValueError::new_err(e.to_string()))
    }

    /// The text of the last row's key columns (the keyset's next start), or None before a row.
    fn last_key(&self) -> PyResult<Option<Vec<String>>> {
        if self.core.last_key.is_empty() {
            return Ok(None);
        }
        self.core
            .last_key
            .iter()
            .map(|t| String::from_utf8(t.clone()).map_err(|e| PyValueError::new_err(e.to_string())))
            .collect::<PyResult<Vec<_>>>()
            .map(Some)
    }
}

const STR_ANY: Conv = Conv::Str { max_chars: None };

/// One column of every form the transcoder reads, with its conversion and array depth: the
/// plan of the fuzz target `snapshot_copy` and of the seed stream's test (`fuzz/seeds`).
#[doc(hidden)]
pub const EVERY_FORM: [(Form, Conv, u32); 20] = [
    (Form::Bin(Bin::I4), Conv::Int, 0),
    (Form::Bin(Bin::I2), Conv::Int, 0),
    (Form::Bin(Bin::I8), Conv::Long, 0),
    (Form::Bin(Bin::Oid), Conv::Long, 0),
    (Form::Bin(Bin::F4), Conv::Float, 0),
    (Form::Bin(Bin::F8), Conv::Double, 0),
    (Form::Bin(Bin::Bool), Conv::Bool, 0),
    (Form::Bin(Bin::Bytea), Conv::Bytes, 0),
    (Form::Bin(Bin::Date), Conv::Date, 0),
    (Form::Bin(Bin::Time), Conv::Time, 0),
    (Form::Bin(Bin::Timestamp), Conv::Timestamp, 0),
    (Form::Bin(Bin::TimestampTz), Conv::TimestampTz, 0),
    (
        Form::Bin(Bin::Numeric),
        Conv::Decimal {
            precision: 40,
            scale: 3,
        },
        0,
    ),
    (Form::Bin(Bin::Text), Conv::Str { max_chars: Some(3) }, 0),
    (Form::Bin(Bin::Uuid), STR_ANY, 0),
    (Form::Bin(Bin::Jsonb), STR_ANY, 0),
    (Form::Bin(Bin::I4), Conv::Int, 2),
    (
        Form::Bin(Bin::Numeric),
        Conv::Decimal {
            precision: 6,
            scale: 2,
        },
        1,
    ),
    (Form::Text, STR_ANY, 0),
    (Form::Text, Conv::Timestamp, 1),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::producer::convert::put_bytes;
    use crate::producer::copybin::SIGNATURE;

    /// A real stream from PostgreSQL (the fuzz target's seed: two bytes of fuzzer options, then
    /// `COPY … (FORMAT BINARY)` of every binary form, arrays and text-form columns) reads as two
    /// rows the plan writes, none a miss.
    #[test]
    fn a_real_stream_of_every_form() {
        let seed = include_bytes!("../../fuzz/seeds/snapshot_copy/two_rows");
        let forms = EVERY_FORM;
        let cols = forms
            .iter()
            .map(|&(form, conv, ndims)| SnapCol {
                form,
                conv,
                ndims,
                delim: b',',
            })
            .collect();
        let mut s = Snapshot::new(SnapPlan {
            cols,
            pk: vec![0, 12],
            key_prefix: Some(vec![0; 5]),
            value_prefix: vec![],
            src_names: vec![],
            partitions: 3,
            key_texts: 2,
        });
        s.reader.feed(&seed[2..]);
        let mut rows = 0;
        while s.reader.next_row() == Ok(Next::Row) {
            assert!(matches!(s.row(rows, &[0], &[0]), Ok(Some(_))), "row {rows}");
            rows += 1;
        }
        assert_eq!(rows, 2);
        assert_eq!(s.last_key, [b"2".to_vec(), b"0.000".to_vec()]);
        assert!(s.reader.finish().is_ok());
    }

    #[test]
    fn key_body_drops_the_framing() {
        assert_eq!(key_body(&[0, 0, 0, 0, 1, 7]), [7]);
        assert_eq!(key_body(&[0, 0]), [0u8; 0]);
    }

    #[test]
    fn a_row_as_the_reference_writes_it() {
        let plan = SnapPlan {
            cols: vec![
                SnapCol {
                    form: Form::Bin(Bin::I4),
                    conv: Conv::Int,
                    ndims: 0,
                    delim: b',',
                },
                SnapCol {
                    form: Form::Text,
                    conv: Conv::Str { max_chars: Some(2) },
                    ndims: 0,
                    delim: b',',
                },
            ],
            pk: vec![0],
            key_prefix: Some(vec![0, 0, 0, 0, 1]),
            value_prefix: vec![0, 0, 0, 0, 2],
            src_names: vec![],
            partitions: 1,
            key_texts: 1,
        };
        let mut s = Snapshot::new(plan);
        let mut data = SIGNATURE.to_vec();
        data.extend_from_slice(&[0; 8]);
        data.extend_from_slice(&3i16.to_be_bytes());
        for f in [&1i32.to_be_bytes()[..], b"ab", b"1"] {
            data.extend_from_slice(&(f.len() as i32).to_be_bytes());
            data.extend_from_slice(f);
        }
        s.reader.feed(&data);
        assert_eq!(s.reader.next_row(), Ok(Next::Row));
        assert_eq!(s.row(5, &[2], &[]), Ok(Some(0)));
        assert_eq!(s.key, [0, 0, 0, 0, 1, 2]);
        assert_eq!(
            s.val,
            [0, 0, 0, 0, 2, 0, 2, 2, 2, 2, 4, b'a', b'b', 6, 2, 10, 0]
        );
        assert_eq!(s.last_key, [b"1".to_vec()]);
        s.skip.insert(s.key.clone());
        assert_eq!(s.row(5, &[2], &[]), Ok(None));
        let mut put = Vec::new();
        put_bytes(&mut put, b"ab");
        assert_eq!(put, [4, b'a', b'b']);
    }
}
