//! The producer's hot path: test_decoding change line → framed Avro key and envelope.
//!
//! `Producer` holds one `Plan` per table (installed by the Python adapter,
//! `bridge/source/native_decoder.py`, after the reference path decoded a change of that relation
//! version), and encodes each change line with it into reused buffers. Whatever the plan does
//! not cover — another line kind, a parse error, DDL, a modifier overflow, an unusual value —
//! comes back as a `Miss` code and the Python reference path handles the line, so answers
//! (bytes and errors) are the reference's.

pub mod array;
pub mod binval;
pub mod convert;
pub mod copybin;
pub mod crc;
pub mod parse;
pub mod plan;
pub mod snapshot;

use std::collections::HashMap;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString, PyTuple};

use convert::Miss;
use parse::{unquote_into, Parsed, RawCol};
use plan::{Column, Conv, Plan, Scratch};

/// The result of encoding one line (pure Rust; the Python method wraps it).
pub enum Encoded {
    /// (plan id, op symbol index); the key buffer is valid when the plan has a key
    Done(usize, u8),
    Miss(Miss),
}

#[derive(Default)]
pub struct Core {
    plans: Vec<Option<Plan>>,
    by_table: HashMap<Vec<u8>, usize>,
    cols: Vec<RawCol>,
    scratch: Scratch,
    name: Vec<u8>,
    pub key: Vec<u8>,
    pub val: Vec<u8>,
}

fn table_key(schema: &[u8], table: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(schema.len() + table.len() + 1);
    k.extend_from_slice(schema);
    k.push(0);
    k.extend_from_slice(table);
    k
}

impl Core {
    /// Install (or replace) the plan of `schema.table`; returns its id.
    pub fn install(&mut self, schema: &str, table: &str, plan: Plan) -> usize {
        let k = table_key(schema.as_bytes(), table.as_bytes());
        if let Some(old) = self.by_table.get(&k) {
            self.plans[*old] = None;
        }
        self.plans.push(Some(plan));
        let id = self.plans.len() - 1;
        self.by_table.insert(k, id);
        id
    }

    pub fn remove(&mut self, schema: &str, table: &str) {
        if let Some(id) = self
            .by_table
            .remove(&table_key(schema.as_bytes(), table.as_bytes()))
        {
            self.plans[id] = None;
        }
    }

    pub fn encode(&mut self, line: &[u8], seq: i64, lsn: &[u8], tail: &[u8]) -> Encoded {
        let ch = match parse::parse_change(line, &mut self.cols) {
            Ok(Parsed::Change(ch)) => ch,
            Ok(Parsed::NotChange) => return Encoded::Miss(Miss::NotChange),
            Err(_) => return Encoded::Miss(Miss::Parse),
        };
        self.name.clear();
        unquote_into(line, ch.schema, ch.schema_quoted, &mut self.name);
        self.name.push(0);
        unquote_into(line, ch.table, ch.table_quoted, &mut self.name);
        let Some(&id) = self.by_table.get(self.name.as_slice()) else {
            return Encoded::Miss(Miss::NoPlan);
        };
        let Some(plan) = self.plans[id].as_ref() else {
            return Encoded::Miss(Miss::NoPlan);
        };
        match plan.encode(
            line,
            &ch,
            &self.cols,
            seq,
            lsn,
            tail,
            &mut self.scratch,
            &mut self.key,
            &mut self.val,
        ) {
            Ok(op) => Encoded::Done(id, op),
            Err(miss) => Encoded::Miss(miss),
        }
    }

    /// The length of plan `id`'s key framing, None when its table has no key.
    pub fn key_prefix_len(&self, id: usize) -> Option<usize> {
        self.plans[id]
            .as_ref()
            .and_then(|p| p.key_prefix.as_ref().map(Vec::len))
    }
}

/// One column as the adapter describes it: (name, printed type, conv, length, precision, scale,
/// ndims, array delimiter); -1 for an absent length/precision/scale.
type ColumnSpec = (String, String, String, i64, i64, i64, u32, String);

/// The native producer core: plans per table, and `encode(line, …)` per change line.
#[pyclass(module = "bridge._native")]
pub struct Producer {
    core: Core,
    /// The relation object of each plan id, returned with its changes.
    relations: Vec<Option<Py<PyAny>>>,
    /// The op objects by op index (insert, update, delete), returned with each change.
    ops: Py<PyTuple>,
}

#[pymethods]
impl Producer {
    /// `ops`: the three objects `encode` returns for an insert, an update and a delete.
    #[new]
    fn new(ops: Bound<'_, PyTuple>) -> PyResult<Self> {
        if ops.len() != 3 {
            return Err(PyValueError::new_err(
                "ops: three objects (insert, update, delete)",
            ));
        }
        Ok(Producer {
            core: Core::default(),
            relations: Vec::new(),
            ops: ops.unbind(),
        })
    }

    /// Install the plan of one relation version (replacing the table's previous one); returns
    /// its id. `relation` is the object `encode` returns with the table's changes. Raises
    /// ValueError for an unknown conv name or a key column out of range.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (relation, schema, table, columns, pk, key_exact, key_prefix, value_prefix, src_names))]
    fn install(
        &mut self,
        relation: Py<PyAny>,
        schema: &str,
        table: &str,
        columns: Vec<ColumnSpec>,
        pk: Vec<usize>,
        key_exact: bool,
        key_prefix: Option<Vec<u8>>,
        value_prefix: Vec<u8>,
        src_names: Vec<u8>,
    ) -> PyResult<usize> {
        let mut cols = Vec::with_capacity(columns.len());
        for (name, printed, conv, length, precision, scale, ndims, delim) in columns {
            let conv = Conv::named(&conv, length, precision, scale).ok_or_else(|| {
                PyValueError::new_err(format!("unknown conv {conv:?} of column {name:?}"))
            })?;
            let &[delim] = delim.as_bytes() else {
                return Err(PyValueError::new_err(format!(
                    "array delimiter of column {name:?} is not one byte"
                )));
            };
            cols.push(Column {
                name: name.into_bytes(),
                printed: printed.into_bytes(),
                conv,
                ndims,
                delim,
            });
        }
        if pk.iter().any(|&i| cols.get(i).is_none_or(|c| c.ndims > 0)) {
            return Err(PyValueError::new_err(
                "primary-key column out of range, or an array",
            ));
        }
        if key_prefix.is_some() == pk.is_empty() {
            return Err(PyValueError::new_err(
                "a key prefix goes with a primary key",
            ));
        }
        let plan = Plan {
            columns: cols,
            pk,
            key_exact,
            key_prefix,
            value_prefix,
            src_names,
        };
        let id = self.core.install(schema, table, plan);
        self.relations.resize_with(id, || None);
        self.relations.push(Some(relation));
        Ok(id)
    }

    /// Forget the plan of a table (its relation changed).
    fn remove(&mut self, schema: &str, table: &str) {
        self.core.remove(schema, table);
    }

    /// How many plans were installed (ids run from 0; replaced plans keep theirs).
    fn __len__(&self) -> usize {
        self.relations.len()
    }

    /// Encode one test_decoding line at position `seq` of the transaction whose `source`
    /// bytes are `lsn` (commit_lsn, an Avro long) and `tail` (xid … ts_ms). Returns what the
    /// producer routes and sends, `(relation, op, key bytes | None, envelope bytes, seq, key
    /// hash)` — the key hash is the CRC-32 of the key's Avro body (0 without a key), the
    /// partition before the modulo — or an int miss code (see `convert::Miss`) when the Python
    /// reference path must take the line.
    fn encode<'py>(
        &mut self,
        py: Python<'py>,
        line: &Bound<'py, PyString>,
        seq: i64,
        lsn: &[u8],
        tail: &[u8],
    ) -> PyResult<Bound<'py, PyAny>> {
        let Ok(text) = line.to_str() else {
            // lone surrogates: not UTF-8, the reference raises its own error
            return Ok((Miss::Value as u8).into_pyobject(py)?.into_any());
        };
        match self.core.encode(text.as_bytes(), seq, lsn, tail) {
            Encoded::Miss(m) => Ok((m as u8).into_pyobject(py)?.into_any()),
            Encoded::Done(id, op) => {
                let (key, hash) = match self.core.key_prefix_len(id) {
                    Some(n) => (
                        Some(PyBytes::new(py, &self.core.key)),
                        crc::crc32(&self.core.key[n..]),
                    ),
                    None => (None, 0),
                };
                let Some(Some(relation)) = self.relations.get(id) else {
                    return Err(PyValueError::new_err("plan without its relation"));
                };
                let op = self.ops.bind(py).get_item(usize::from(op))?;
                let val = PyBytes::new(py, &self.core.val);
                Ok((relation.clone_ref(py), op, key, val, seq, hash)
                    .into_pyobject(py)?
                    .into_any())
            }
        }
    }

    /// Parse one line only: None when it parses (or is not a change line), else
    /// `(byte offset, message)`. For tests and the fuzz target's Python twin.
    fn check(&mut self, line: &str) -> Option<(usize, &'static str)> {
        match parse::parse_change(line.as_bytes(), &mut self.core.cols) {
            Ok(_) => None,
            Err(e) => Some((e.offset, e.message)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan {
            columns: vec![
                Column {
                    name: b"id".to_vec(),
                    printed: b"integer".to_vec(),
                    conv: Conv::Int,
                    ndims: 0,
                    delim: b',',
                },
                Column {
                    name: b"note".to_vec(),
                    printed: b"character varying".to_vec(),
                    conv: Conv::Str { max_chars: Some(4) },
                    ndims: 0,
                    delim: b',',
                },
            ],
            pk: vec![0],
            key_exact: true,
            key_prefix: Some(vec![0xc3, 0x01]),
            value_prefix: vec![0xc3, 0x01],
            src_names: vec![],
        }
    }

    #[test]
    fn insert_delete_and_misses() {
        let mut core = Core::default();
        core.install("public", "t", plan());
        let r = core.encode(
            b"table public.t: INSERT: id[integer]:1 note[character varying]:'a''b'",
            3,
            &[0],
            &[],
        );
        assert!(matches!(r, Encoded::Done(0, 0)));
        assert_eq!(core.key, [0xc3, 0x01, 2]);
        assert_eq!(
            core.val,
            [0xc3, 0x01, 0, 2, 2, 2, 2, 6, b'a', b'\'', b'b', 0, 0, 6, 0]
        );
        let r = core.encode(b"table public.t: DELETE: id[integer]:1", 4, &[0], &[]);
        assert!(matches!(r, Encoded::Done(0, 2)));
        let too_long = b"table public.t: INSERT: id[integer]:1 note[character varying]:'abcde'";
        assert!(matches!(
            core.encode(too_long, 0, &[], &[]),
            Encoded::Miss(Miss::Modifier)
        ));
        let ddl = b"table public.t: INSERT: id[bigint]:1 note[character varying]:'a'";
        assert!(matches!(
            core.encode(ddl, 0, &[], &[]),
            Encoded::Miss(Miss::Mismatch)
        ));
        let other = b"table public.u: INSERT: id[integer]:1";
        assert!(matches!(
            core.encode(other, 0, &[], &[]),
            Encoded::Miss(Miss::NoPlan)
        ));
        core.remove("public", "t");
        let r = core.encode(b"table public.t: DELETE: id[integer]:1", 4, &[0], &[]);
        assert!(matches!(r, Encoded::Miss(Miss::NoPlan)));
    }
}
