//! The Python surface of the sink path (`bridge.sink.native_stage` wraps it):
//! `EnvelopePlan` (built once per writer schema) decodes one framed envelope into its control
//! fields and two `NativeRow`s that stay bytes; `CopyPlan` (built once per staging or target
//! COPY) writes the binary COPY tuples of `(lsn, seq, op, aux, NativeRow)` items into a reused
//! buffer. Rows are materialised as Python values only when the Python control logic asks
//! (`row[i]`, `tuple(row)`: keys, TOAST fills, keyless tables, the differential tests).

use std::sync::{Arc, Mutex};

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

use super::avro::{self, ArrayEvent, Col, DecimalCheck, Scalar, ValueRef};
use super::copy::{self, Code, Field};
use super::numeric;

static DECIMAL: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static CODEC_ERROR: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

fn decimal_class(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    Ok(DECIMAL
        .get_or_try_init(py, || -> PyResult<Py<PyAny>> {
            Ok(py.import("decimal")?.getattr("Decimal")?.unbind())
        })?
        .bind(py))
}

/// `bridge.errors.CodecError(message, offset=…, size=…)`.
fn codec_error(py: Python<'_>, e: &avro::Error, size: usize) -> PyErr {
    let build = || -> PyResult<PyErr> {
        let cls = CODEC_ERROR.get_or_try_init(py, || -> PyResult<Py<PyAny>> {
            Ok(py.import("bridge.errors")?.getattr("CodecError")?.unbind())
        })?;
        let kw = PyDict::new(py);
        kw.set_item("offset", e.offset)?;
        kw.set_item("size", size)?;
        let exc = cls.bind(py).call(
            (format!("record body does not decode: {}", e.what),),
            Some(&kw),
        )?;
        Ok(PyErr::from_value(exc))
    };
    build().unwrap_or_else(|err| err)
}

/// Python's `Decimal(s)` decides whether a decimal's string branch is a number (rare: the
/// producer writes only NaN and ±Infinity there, which never reach this).
struct PyDecimalCheck<'py>(Python<'py>);

impl DecimalCheck for PyDecimalCheck<'_> {
    fn accepts(&mut self, s: &str) -> bool {
        decimal_class(self.0).and_then(|d| d.call1((s,))).is_ok()
    }
}

fn int(py: Python<'_>, v: i128) -> PyResult<Bound<'_, PyAny>> {
    match i64::try_from(v) {
        Ok(x) => Ok(x.into_pyobject(py)?.into_any()),
        Err(_) => Ok(v.into_pyobject(py)?.into_any()),
    }
}

fn parse_col(kind: &str, precision: u32, scale: u32, ndims: u8) -> PyResult<Col> {
    let scalar = match kind {
        "int" => Scalar::Int,
        "long" => Scalar::Long,
        "float" => Scalar::Float,
        "double" => Scalar::Double,
        "boolean" => Scalar::Bool,
        "bytes" => Scalar::Bytes,
        "string" => Scalar::Str,
        "decimal" => Scalar::decimal(precision, scale)
            .ok_or_else(|| PyValueError::new_err("decimal precision must be 1 to 1000"))?,
        _ => {
            return Err(PyValueError::new_err(format!(
                "unknown column kind {kind:?}"
            )))
        }
    };
    if ndims > avro::MAX_NDIMS {
        return Err(PyValueError::new_err("at most 6 array dimensions"));
    }
    Ok(Col { scalar, ndims })
}

/// One value of a row as a Python object (the value forms of docs/internals.md).
fn materialise<'py>(
    py: Python<'py>,
    data: &[u8],
    col: Col,
    v: ValueRef<'_>,
) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        ValueRef::Null => py.None().into_bound(py),
        ValueRef::Int(x) => int(py, x)?,
        ValueRef::Float(x) => f64::from(x).into_pyobject(py)?.into_any(),
        ValueRef::Double(x) => x.into_pyobject(py)?.into_any(),
        ValueRef::Bool(b) => pyo3::types::PyBool::new(py, b).to_owned().into_any(),
        ValueRef::Bytes(b) => PyBytes::new(py, b).into_any(),
        ValueRef::Str(s) => PyString::new(py, s).into_any(),
        ValueRef::DecBytes(b, scale) => {
            let (neg, digits) = numeric::coefficient(b);
            let mut text = Vec::new();
            numeric::sci_string(neg, &digits, scale, &mut text);
            decimal_class(py)?.call1((String::from_utf8_lossy(&text).as_ref(),))?
        }
        ValueRef::DecStr(s) => decimal_class(py)?.call1((s,))?,
        ValueRef::Array(start) => {
            let mut r = avro::Reader::new(data, start);
            let mut stack: Vec<Vec<Bound<'py, PyAny>>> = Vec::new();
            let mut done: Option<Bound<'py, PyAny>> = None;
            let mut failed: Option<PyErr> = None;
            let walked =
                avro::walk_array(&mut r, col, col.ndims, &mut avro::AcceptAll, &mut |ev| {
                    if failed.is_some() {
                        return;
                    }
                    match ev {
                        ArrayEvent::Open => stack.push(Vec::new()),
                        ArrayEvent::Item(x) => match materialise(
                            py,
                            data,
                            Col {
                                scalar: col.scalar,
                                ndims: 0,
                            },
                            x,
                        ) {
                            Ok(o) => {
                                if let Some(top) = stack.last_mut() {
                                    top.push(o);
                                }
                            }
                            Err(e) => failed = Some(e),
                        },
                        ArrayEvent::Close => {
                            let items = stack.pop().unwrap_or_default();
                            match PyList::new(py, items) {
                                Ok(list) => match stack.last_mut() {
                                    Some(parent) => parent.push(list.into_any()),
                                    None => done = Some(list.into_any()),
                                },
                                Err(e) => failed = Some(e),
                            }
                        }
                    }
                });
            if let Some(e) = failed {
                return Err(e);
            }
            walked.map_err(|e| codec_error(py, &e, data.len()))?;
            done.unwrap_or_else(|| py.None().into_bound(py))
        }
    })
}

/// A row record that stays in its record's bytes (validated when the envelope was decoded).
/// Behaves as a read-only sequence of value forms; each access decodes what it returns.
#[pyclass(frozen, sequence, module = "bridge._native")]
pub struct NativeRow {
    value: Py<PyBytes>,
    start: usize,
    cols: Arc<Vec<Col>>,
}

impl NativeRow {
    fn values<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let data = self.value.bind(py).as_bytes();
        let mut r = avro::Reader::new(data, self.start);
        let mut out = Vec::with_capacity(self.cols.len());
        for &c in self.cols.iter() {
            let v = avro::column(&mut r, c, &mut avro::AcceptAll)
                .map_err(|e| codec_error(py, &e, data.len()))?;
            out.push(materialise(py, data, c, v)?);
        }
        PyTuple::new(py, out)
    }
}

#[pymethods]
impl NativeRow {
    fn __len__(&self) -> usize {
        self.cols.len()
    }

    fn __getitem__<'py>(&self, py: Python<'py>, index: isize) -> PyResult<Bound<'py, PyAny>> {
        let n = self.cols.len() as isize;
        let i = if index < 0 { index + n } else { index };
        if i < 0 || i >= n {
            return Err(pyo3::exceptions::PyIndexError::new_err(
                "row index out of range",
            ));
        }
        let data = self.value.bind(py).as_bytes();
        let mut r = avro::Reader::new(data, self.start);
        for (j, &c) in self.cols.iter().enumerate() {
            let v = avro::column(&mut r, c, &mut avro::AcceptAll)
                .map_err(|e| codec_error(py, &e, data.len()))?;
            if j as isize == i {
                return materialise(py, data, c, v);
            }
        }
        Err(pyo3::exceptions::PyIndexError::new_err(
            "row index out of range",
        ))
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(self.values(py)?.as_any().try_iter()?.into_any())
    }

    /// The row as a tuple of value forms.
    fn to_tuple<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        self.values(py)
    }

    fn __eq__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<bool> {
        let mine = self.values(py)?;
        let theirs = match other.cast::<NativeRow>() {
            Ok(o) => o.get().values(py)?.into_any(),
            Err(_) => match other.cast::<PyTuple>() {
                Ok(t) => t.clone().into_any(),
                Err(_) => return Ok(false),
            },
        };
        mine.as_any().eq(theirs)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!("NativeRow{}", self.values(py)?.repr()?))
    }
}

/// The reader of one writer schema's envelopes. `columns` lists, per row field,
/// `(kind, precision, scale, ndims)`: kind one of int, long, float, double, boolean, bytes,
/// string, decimal (`["null", decimal(p,s), "string"]`).
type ChangeType = (Py<PyAny>, Py<PyAny>, Py<PyAny>, Py<PyAny>, Py<PyTuple>);

#[pyclass(frozen, module = "bridge._native")]
pub struct EnvelopePlan {
    cols: Arc<Vec<Col>>,
    /// `(change_class, position_class, lsn_class, relation, ops)` when built with `change_type`:
    /// `change` then builds the sink's change object itself (no Python frame per record).
    change_type: Option<ChangeType>,
    /// The last commit LSN and its `Lsn` object: a transaction's records share it.
    last_lsn: Mutex<Option<(i128, Py<PyAny>)>>,
}

#[pymethods]
impl EnvelopePlan {
    #[new]
    #[pyo3(signature = (columns, change_type=None))]
    fn new(
        columns: Vec<(String, u32, u32, u8)>,
        change_type: Option<ChangeType>,
    ) -> PyResult<Self> {
        let cols = columns
            .iter()
            .map(|(k, p, s, n)| parse_col(k, *p, *s, *n))
            .collect::<PyResult<Vec<_>>>()?;
        Ok(EnvelopePlan {
            cols: Arc::new(cols),
            change_type,
            last_lsn: Mutex::new(None),
        })
    }

    /// Decode as `decode`, and return `change_class(relation, op, position_class(lsn, seq), xid,
    /// commit_ts, before, after, unchanged, snapshot, ts_ms)` with `op` from `ops` and `lsn` an
    /// `lsn_class` object (reused while the commit LSN stays the same). Raises `CodecError` as
    /// `decode`.
    fn change<'py>(
        &self,
        py: Python<'py>,
        value: &Bound<'py, PyAny>,
        offset: usize,
    ) -> PyResult<Bound<'py, PyAny>> {
        let Some((make, position_class, lsn_class, relation, ops)) = &self.change_type else {
            return Err(PyTypeError::new_err(
                "EnvelopePlan built without change_type",
            ));
        };
        let bytes = as_bytes(py, value)?;
        let env = self.read(py, &bytes, offset)?;
        let lsn = {
            let mut last = self
                .last_lsn
                .lock()
                .map_err(|_| PyTypeError::new_err("EnvelopePlan poisoned"))?;
            match &*last {
                Some((v, obj)) if *v == env.commit_lsn => obj.clone_ref(py),
                _ => {
                    let obj = lsn_class
                        .bind(py)
                        .call1((int(py, env.commit_lsn)?,))?
                        .unbind();
                    *last = Some((env.commit_lsn, obj.clone_ref(py)));
                    obj
                }
            }
        };
        let [before, after, unchanged, commit_ts] = self.parts(py, &bytes, &env)?;
        let args = PyTuple::new(
            py,
            [
                relation.bind(py).clone(),
                ops.bind(py).get_item(usize::from(env.op))?,
                position_class.bind(py).call1((lsn, int(py, env.seq)?))?,
                int(py, env.xid)?,
                commit_ts,
                before,
                after,
                unchanged,
                pyo3::types::PyBool::new(py, env.snapshot)
                    .to_owned()
                    .into_any(),
                int(py, env.ts_ms)?,
            ],
        )?;
        make.bind(py).call1(args)
    }

    /// Decode the envelope at `value[offset:]` (after the framing). Returns
    /// `(op index, commit_lsn, seq, xid, commit_ts, snapshot, ts_ms, unchanged, before, after)`;
    /// raises `CodecError` when the body does not decode (bounded: nothing is allocated for a
    /// count or length the remaining bytes cannot hold).
    fn decode<'py>(
        &self,
        py: Python<'py>,
        value: &Bound<'py, PyAny>,
        offset: usize,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let bytes = as_bytes(py, value)?;
        let env = self.read(py, &bytes, offset)?;
        let [before, after, unchanged, commit_ts] = self.parts(py, &bytes, &env)?;
        PyTuple::new(
            py,
            [
                env.op.into_pyobject(py)?.into_any(),
                int(py, env.commit_lsn)?,
                int(py, env.seq)?,
                int(py, env.xid)?,
                commit_ts,
                pyo3::types::PyBool::new(py, env.snapshot)
                    .to_owned()
                    .into_any(),
                int(py, env.ts_ms)?,
                unchanged,
                before,
                after,
            ],
        )
    }

    fn __len__(&self) -> usize {
        self.cols.len()
    }
}

/// `value` as `bytes`: the object itself, or a copy of another buffer (`bytearray`, `memoryview`).
fn as_bytes<'py>(py: Python<'py>, value: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    match value.cast::<PyBytes>() {
        Ok(b) => Ok(b.clone()),
        Err(_) => Ok(PyBytes::new(py, &value.extract::<Vec<u8>>()?)),
    }
}

impl EnvelopePlan {
    /// The envelope at `bytes[offset..]`, validated whole; `CodecError` when it does not decode.
    fn read<'a>(
        &self,
        py: Python<'_>,
        bytes: &'a Bound<'_, PyBytes>,
        offset: usize,
    ) -> PyResult<avro::Envelope<'a>> {
        let data = bytes.as_bytes();
        avro::envelope(data, offset, &self.cols, &mut PyDecimalCheck(py))
            .map_err(|e| codec_error(py, &e, data.len()))
    }

    /// What `decode` and `change` both return: `[before, after, unchanged, commit_ts]`, the
    /// rows as `NativeRow`s over the record's bytes (or None).
    fn parts<'py>(
        &self,
        py: Python<'py>,
        bytes: &Bound<'py, PyBytes>,
        env: &avro::Envelope<'_>,
    ) -> PyResult<[Bound<'py, PyAny>; 4]> {
        let row = |start: Option<usize>| -> PyResult<Bound<'py, PyAny>> {
            match start {
                None => Ok(py.None().into_bound(py)),
                Some(s) => Ok(Bound::new(
                    py,
                    NativeRow {
                        value: bytes.clone().unbind(),
                        start: s,
                        cols: self.cols.clone(),
                    },
                )?
                .into_any()),
            }
        };
        let unchanged = PyTuple::new(py, env.unchanged.iter().map(|s| PyString::new(py, s)))?;
        let commit_ts = match env.commit_ts {
            Some(t) => int(py, t)?,
            None => py.None().into_bound(py),
        };
        Ok([
            row(env.before)?,
            row(env.after)?,
            unchanged.into_any(),
            commit_ts,
        ])
    }
}

/// The most a `CopyPlan` keeps of its buffer between calls: one plan per table version lives as
/// long as the sink, so a chunk of big rows (2,000 per call, `apply._CHUNK_ROWS`) must not pin its
/// size for good; a chunk of ordinary rows (a few hundred KiB) reuses its buffer.
const KEEP_BUFFER: usize = 1 << 20;

/// The binary COPY tuples of one staging (or target) table: `codes` are `stage.py`'s wire
/// codes per column, `meta` the four meta fields in front, `fallback(i, value)` the reference
/// encoder of column `i` (returns the field with its length) for what the fast path leaves out.
#[pyclass(frozen, module = "bridge._native")]
pub struct CopyPlan {
    codes: Vec<Code>,
    meta: bool,
    fallback: Py<PyAny>,
    buf: Mutex<Vec<u8>>,
}

#[pymethods]
impl CopyPlan {
    #[new]
    #[pyo3(signature = (codes, meta, fallback))]
    fn new(codes: Vec<String>, meta: bool, fallback: Py<PyAny>) -> PyResult<Self> {
        let codes = codes
            .iter()
            .map(|c| {
                Code::parse(c)
                    .ok_or_else(|| PyValueError::new_err(format!("unknown wire code {c:?}")))
            })
            .collect::<PyResult<Vec<_>>>()?;
        if codes.len() > 1600 {
            return Err(PyValueError::new_err("at most 1,600 columns"));
        }
        Ok(CopyPlan {
            codes,
            meta,
            fallback,
            buf: Mutex::new(Vec::new()),
        })
    }

    /// The COPY tuples (no signature, no trailer) of `items`, each `(lsn, seq, op, aux, row)`;
    /// None when a row is not a `NativeRow` of as many columns (the caller then uses the
    /// reference encoder). Raises `ValueError` (or what the fallback raises) for a value its wire
    /// type cannot hold: the record is rejected by the caller, as with the reference encoder.
    fn encode<'py>(
        &self,
        py: Python<'py>,
        items: &Bound<'py, PyList>,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let mut guard = self
            .buf
            .lock()
            .map_err(|_| PyTypeError::new_err("CopyPlan buffer poisoned"))?;
        let buf: &mut Vec<u8> = &mut guard;
        buf.clear();
        let mut scratch = Vec::new();
        let n = self.codes.len();
        let ncols = (n + if self.meta { 4 } else { 0 }) as i16;
        for item in items.iter() {
            let t = item.cast::<PyTuple>()?;
            if t.len() != 5 {
                return Err(PyValueError::new_err(
                    "a staging item is (lsn, seq, op, aux, row)",
                ));
            }
            let row_obj = t.get_item(4)?;
            let Ok(row) = row_obj.cast::<NativeRow>() else {
                return Ok(None);
            };
            let row = row.get();
            if row.cols.len() != n {
                return Ok(None);
            }
            buf.extend_from_slice(&ncols.to_be_bytes());
            if self.meta {
                let lsn: u64 = t.get_item(0)?.extract()?;
                let seq: i64 = t.get_item(1)?.extract()?;
                let op_obj = t.get_item(2)?;
                let op = op_obj.cast::<PyBytes>()?.as_bytes();
                if op.len() != 1 {
                    return Err(PyValueError::new_err("op must be one byte"));
                }
                let aux: i32 = t.get_item(3)?.extract()?;
                buf.extend_from_slice(&8i32.to_be_bytes());
                buf.extend_from_slice(&lsn.to_be_bytes());
                buf.extend_from_slice(&8i32.to_be_bytes());
                buf.extend_from_slice(&seq.to_be_bytes());
                buf.extend_from_slice(&1i32.to_be_bytes());
                buf.push(op[0]);
                buf.extend_from_slice(&4i32.to_be_bytes());
                buf.extend_from_slice(&aux.to_be_bytes());
            }
            let value = row.value.bind(py);
            let data = value.as_bytes();
            let mut r = avro::Reader::new(data, row.start);
            for (i, (&c, &code)) in row.cols.iter().zip(self.codes.iter()).enumerate() {
                let v = avro::column(&mut r, c, &mut avro::AcceptAll)
                    .map_err(|e| codec_error(py, &e, data.len()))?;
                let outcome = if code == Code::Array && v != ValueRef::Null {
                    Field::Fallback
                } else {
                    copy::field(buf, code, c.scalar, v, &mut scratch)
                };
                match outcome {
                    Field::Done => {}
                    Field::Fallback => {
                        let py_value = materialise(py, data, c, v)?;
                        let field = self.fallback.bind(py).call1((i, py_value))?;
                        buf.extend_from_slice(field.cast::<PyBytes>()?.as_bytes());
                    }
                    Field::Bad(why) => {
                        return Err(PyValueError::new_err(format!("{why} (column {i})")));
                    }
                }
            }
        }
        let out = PyBytes::new(py, buf);
        if buf.capacity() > KEEP_BUFFER {
            *buf = Vec::new();
        }
        Ok(Some(out))
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<EnvelopePlan>()?;
    m.add_class::<NativeRow>()?;
    m.add_class::<CopyPlan>()?;
    Ok(())
}
