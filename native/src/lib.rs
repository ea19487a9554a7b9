//! `bridge._native`: the compiled hot loops of pgbridge. Python keeps the orchestration; the
//! Python implementation stays the reference these functions are tested against.

use pyo3::prelude::*;

pub mod producer;
pub mod sink;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<producer::Producer>()?;
    m.add_class::<producer::snapshot::SnapshotTranscoder>()?; // binary COPY snapshot
    sink::register(m)?; // the sink path: Avro envelopes -> binary COPY (native/src/sink)
    Ok(())
}
