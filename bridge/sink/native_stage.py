"""The native sink path: envelopes decoded and staged by the Rust crate (native/src/sink).

Two seams, each a drop-in for its Python reference (selected by `BRIDGE_NATIVE`, see
`bridge.native`):

- `envelope_decoder(store)`: an `EnvelopeDecoder` whose `decode` runs the bounded Rust reader.
  The control fields (op, position, xid, commit time, `unchanged`) come back as Python values,
  as the sink's control logic needs them per record (replay skipping by position, truncate
  barriers, admission, dead letters); the rows stay bytes (`NativeRow`), read again only when
  Python asks for a value (`row[i]`: a key; `tuple(row)`: a TOAST fill or a keyless table).
- `row_encoder(columns, codes, meta=...)`: an `Encoder` (see `bridge.sink.stage`) that writes
  the COPY tuples of `NativeRow` items in Rust straight from the Avro bytes into one reused
  buffer (no Python object per value) and hands the chunk to the caller; items whose rows are
  Python tuples (keyless tables, TOAST-filled rows) go to the reference encoder.

The reference implementations stay: the differential tests (tests/unit/test_native_sink.py)
hold this path to them byte for byte (COPY streams) and value for value (rows).
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from bridge import native
from bridge.codec.codec import EnvelopeDecoder, _Entry
from bridge.codec.schemas import decimal_type
from bridge.codec.store import SchemaStore
from bridge.errors import CodecError
from bridge.events import ChangeEvent, Op, Position
from bridge.lsn import Lsn
from bridge.relation import Column, Relation
from bridge.sink import stage
from bridge.sink.stage import Encoder, StageRow, column_code, wire_for

_OPS = (Op.INSERT, Op.UPDATE, Op.DELETE, Op.READ, Op.TRUNCATE)  # the envelope enum's symbol order
_SIMPLE_KIND = {"int2": "int", "int4": "int", "date": "int", "int8": "long", "oid": "long", "time": "long",
                "timestamp": "long", "timestamptz": "long", "float4": "float", "float8": "double",
                "bool": "boolean", "bytea": "bytes"}


def column_spec(col: Column) -> tuple[str, int, int, int]:
    """`(kind, precision, scale, ndims)` of a row field, as `bridge.codec.schemas.column_type`
    writes it (a validated schema has exactly that structure)."""
    dec = decimal_type(col)
    if dec is not None:
        return ("decimal", int(dec["precision"]), int(dec["scale"]), col.ndims)
    kind = _SIMPLE_KIND.get(col.base, "string") if col.kind == "b" else "string"
    return (kind, 0, 0, col.ndims)


def envelope_plan(relation: Relation) -> Any:
    """The Rust reader of `relation`'s envelopes (built once per writer schema); its `change`
    returns the sink's `ChangeEvent` directly."""
    return native.module().EnvelopePlan([column_spec(c) for c in relation.columns],
                                        (ChangeEvent, Position, Lsn, relation, _OPS))


class NativeEnvelopeDecoder(EnvelopeDecoder):
    """`EnvelopeDecoder` with the Rust reader: same framing, schema lookup, validation and
    caching (inherited), same errors (`CodecError` for a body that does not decode), rows as
    `NativeRow`s (standing in for the row tuples: read-only sequences of the same value forms)."""

    def __init__(self, store: SchemaStore, *, topic_prefix: str | None = None) -> None:
        super().__init__(store, topic_prefix=topic_prefix)
        self._plans: dict[int, tuple[_Entry, Any]] = {}
        # the framing header of the last record and its plan: consecutive records of a topic
        # share their writer schema, and a header names one schema for good (a fingerprint, or
        # a registry id), so the lookup is skipped while the header repeats
        self._header = b"\xff"  # matches no framing
        self._plan: Any = None
        self._off = 0

    def decode(self, value: bytes) -> ChangeEvent:
        """Decode one framed envelope (the sink's consume hot path)."""
        if value.startswith(self._header):
            change: ChangeEvent = self._plan.change(value, self._off)
            return change
        if not value:
            raise CodecError("empty record value (a tombstone is not an envelope)")
        schema, off = self._store.lookup(value)
        e = self._entry(schema, True)
        got = self._plans.get(id(e))
        if got is None or got[0] is not e:
            if e.read_rows is None:  # not the standard layout (never after validation)
                return super().decode(value)
            got = self._plans[id(e)] = (e, envelope_plan(e.relation))
        self._header, self._plan, self._off = value[:off], got[1], off
        change = got[1].change(value, off)
        return change


# The sink allocates a few tracked objects per record (its change, position, record) that die
# together when the batch is committed. With CPython's default gen-0 threshold (700 allocations)
# the cyclic collector walks the growing batch again and again: 2.2 us of the native path's
# 4.2 us per record for decode + record on 40,000 records (bench/sink.py's mixed mix); at 50,000
# it is 0.4 us. Cycles are rare here, so collecting them less often costs little memory.
GC_THRESHOLD = (50_000, 20, 100)


def tune_gc() -> None:
    """Called once when a sink process starts (after its imports): start-up objects leave the
    collector's generations (`gc.freeze`) and collections become rare (`GC_THRESHOLD`)."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)


def envelope_decoder(store: SchemaStore, *, topic_prefix: str | None = None) -> EnvelopeDecoder:
    """The sink's decoder: the native one unless `BRIDGE_NATIVE=0`."""
    if native.enabled():
        return NativeEnvelopeDecoder(store, topic_prefix=topic_prefix)
    return EnvelopeDecoder(store, topic_prefix=topic_prefix)


_FIELD_NS: dict[str, Any] = {
    "_P_i": stage._P_i, "_P_ih": stage._P_ih, "_P_ii": stage._P_ii, "_P_iq": stage._P_iq,
    "_P_if": stage._P_if, "_P_id": stage._P_id, "_TRUE": stage._TRUE, "_FALSE": stage._FALSE,
    "_num": stage.numeric_body, "_array": stage.array_value,
}


def field_encoder(code: str, column: Column) -> Callable[[Any], bytes]:
    """The reference encoding of one non-null value (length + body) with `code`: the same
    statement `stage.row_encoder` generates for it. The native encoder calls it for the values
    its fast path leaves out (arrays, unusual numeric or uuid text), so the bytes are the same."""
    ns = dict(_FIELD_NS, _W=wire_for(column))
    body = "b = _array(v, _W); ap(_P_i(len(b))); ap(b)" if code == "array" else stage._SCALAR_CODE[code]
    exec(f"def field(v):\n    out = []\n    ap = out.append\n    {body}\n    return b''.join(out)", ns)
    fn: Callable[[Any], bytes] = ns["field"]
    return fn


def row_encoder(columns: Sequence[Column], codes: Sequence[str] | None = None, *, meta: bool = True) -> Encoder:
    """`stage.row_encoder`'s drop-in: the native encoder for `NativeRow` items, the reference one
    for the rest (and for everything with `BRIDGE_NATIVE=0`). Called once per table plan."""
    reference = stage.row_encoder(columns, codes, meta=meta)
    if not native.enabled():
        return reference
    codes = list(codes) if codes is not None else [column_code(c) for c in columns]
    fields = [field_encoder(code, col) for code, col in zip(codes, columns, strict=True)]

    def fallback(i: int, v: Any) -> bytes:
        return fields[i](v)

    plan = native.module().CopyPlan(codes, meta, fallback)

    def encode(items: Iterable[StageRow], ap: Callable[[bytes], object]) -> None:
        batch = items if isinstance(items, list) else list(items)
        out = plan.encode(batch)
        if out is None:
            reference(batch, ap)
        else:
            ap(out)

    return encode
