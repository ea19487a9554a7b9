"""Avro to Arrow: the Arrow schema of a bridge envelope's rows, and record batches of decoded rows.

Called once per writer schema (`ArrowPlan.of`), then once per batch (`BatchBuilder.finish`);
the per-record work is appending a row tuple and a few control values to lists. The mapping
(docs/reader.md, "Types") follows the Avro types `bridge.codec.schemas` writes; values are the
decoders' Avro-native Python forms (docs/internals.md, "Value forms"), which pyarrow converts
directly: days for `date32`, microseconds for `time64`/`timestamp`, `Decimal` for `decimal128`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow as pa

from bridge.codec.schemas import row_record
from bridge.errors import SchemaError
from bridge.events import ChangeEvent, Op
from bridge.reader.errors import ReaderError

Decimals = Literal["decimal", "string"]
MAX_DECIMAL128_PRECISION = 38  # above it a decimal column is read as text (decimal256 is poorly supported downstream)

# The control columns every batch ends with, in this order.
META_FIELDS: tuple[pa.Field, ...] = (
    pa.field("__op", pa.string(), nullable=False),  # c, u, d, r (snapshot), t (truncate)
    pa.field("__lsn", pa.uint64(), nullable=False),  # the transaction's commit LSN as a number
    pa.field("__seq", pa.int64(), nullable=False),  # the change's index in its transaction
    pa.field("__xid", pa.int64(), nullable=False),
    pa.field("__commit_ts", pa.timestamp("us", tz="UTC")),  # null when the source did not report it
    pa.field("__snapshot", pa.bool_(), nullable=False),
    pa.field("__unchanged", pa.list_(pa.string())),  # unchanged TOAST columns (null: none)
    pa.field("__partition", pa.int32(), nullable=False),
    pa.field("__offset", pa.int64(), nullable=False),
)
META_NAMES = frozenset(f.name for f in META_FIELDS)

_PRIMITIVE: dict[str, pa.DataType] = {
    "int": pa.int32(), "long": pa.int64(), "float": pa.float32(), "double": pa.float64(),
    "boolean": pa.bool_(), "string": pa.string(), "bytes": pa.binary(),
}
_LOGICAL: dict[tuple[str, str], pa.DataType] = {
    ("int", "date"): pa.date32(),
    ("long", "time-micros"): pa.time64("us"),
    ("long", "timestamp-micros"): pa.timestamp("us", tz="UTC"),
    ("long", "local-timestamp-micros"): pa.timestamp("us"),
    ("string", "uuid"): pa.string(),
}

Convert = Callable[[Any], Any]


def _decimal_text(v: Any) -> Any:
    """A decimal value (or its special value's text, `NaN`, `Infinity`) as plain-notation text."""
    if v is None or isinstance(v, str):
        return v
    return format(v, "f")


def _each(inner: Convert) -> Convert:
    def convert(v: Any) -> Any:
        return None if v is None else [inner(x) for x in v]
    return convert


def arrow_type(avro: Any, *, decimals: Decimals = "decimal") -> tuple[pa.DataType, Convert | None]:
    """The Arrow type of an Avro type the bridge writes (a nullable union, a logical type, an
    array), and the conversion its Python values need first (None: none). Raises `SchemaError`
    for a type the bridge does not write (maps, enums, records, fixed, unions of other shapes)."""
    if isinstance(avro, list):
        branches = [b for b in avro if b != "null"]
        if len(branches) == 2 and isinstance(branches[0], dict) and branches[0].get("logicalType") == "decimal" \
                and branches[1] == "string":
            branches = branches[:1]  # numeric(p,s): the string branch holds NaN and ±Infinity
        if len(branches) != 1:
            raise SchemaError("union the reader cannot map", avro=repr(avro)[:120])
        return arrow_type(branches[0], decimals=decimals)
    if isinstance(avro, str):
        if avro not in _PRIMITIVE:
            raise SchemaError("Avro type the reader cannot map", avro=avro)
        return _PRIMITIVE[avro], None
    if not isinstance(avro, dict):
        raise SchemaError("Avro type the reader cannot map", avro=repr(avro)[:120])
    kind, logical = avro.get("type"), avro.get("logicalType")
    if kind == "array":
        inner, conv = arrow_type(avro.get("items"), decimals=decimals)
        return pa.list_(inner), None if conv is None else _each(conv)
    if logical == "decimal" and kind == "bytes":
        precision, scale = int(avro["precision"]), int(avro.get("scale", 0))
        if decimals == "string" or precision > MAX_DECIMAL128_PRECISION:
            return pa.string(), _decimal_text
        return pa.decimal128(precision, scale), None
    known = _LOGICAL.get((kind, logical)) if isinstance(kind, str) and isinstance(logical, str) else None
    if known is not None:
        return known, None
    if isinstance(kind, str | list) and logical is None and not avro.keys() - {"type"}:
        return arrow_type(kind, decimals=decimals)
    if isinstance(kind, str) and kind in _PRIMITIVE:
        return _PRIMITIVE[kind], None  # an unknown logical type: its underlying type (Avro's rule)
    raise SchemaError("Avro type the reader cannot map", avro=repr(avro)[:120])


@dataclass(frozen=True, slots=True)
class ArrowPlan:
    """One writer schema's row columns in Arrow: the batch schema (row columns, then
    `META_FIELDS`), and the per-column conversions. Built once per writer schema."""

    schema: pa.Schema
    columns: tuple[str, ...]
    convert: tuple[Convert | None, ...]
    table: str = ""
    row_type: pa.DataType | None = None  # the row columns as one struct, when none needs a conversion

    @classmethod
    def of(cls, value_schema: dict[str, Any], *, decimals: Decimals = "decimal") -> ArrowPlan:
        """The plan of an envelope schema (validated by the decoder). Column names are the
        PostgreSQL names (`pg.name`). Raises `SchemaError` for a type it cannot map or a column
        named like a control column."""
        fields, convs, names = [], [], []
        table = f"{value_schema.get('pg.schema', '')}.{value_schema.get('pg.table', '')}"
        for f in row_record(value_schema)["fields"]:
            name = str(f.get("pg.name", f["name"]))
            if name in META_NAMES:
                raise SchemaError("column named like a control column of the reader", table=table, column=name)
            try:
                t, conv = arrow_type(f["type"], decimals=decimals)
            except SchemaError as exc:
                exc.context.update(table=table, column=name)
                raise
            meta = {b"pg.type": str(f.get("pg.type", "")).encode()}
            fields.append(pa.field(name, t, metadata=meta))
            convs.append(conv)
            names.append(name)
        schema = pa.schema([*fields, *META_FIELDS], metadata={b"pg.table": table.encode()})
        row_type = pa.struct(fields) if fields and not any(convs) else None
        return cls(schema, tuple(names), tuple(convs), table, row_type)


@dataclass(slots=True)
class BatchBuilder:
    """The changes of one batch (one writer schema), appended record by record, turned into a
    `RecordBatch` by `finish`. Not thread-safe; one per reader."""

    plan: ArrowPlan
    changes: list[ChangeEvent] = field(default_factory=list)
    partitions: list[int] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    size: int = 0  # record bytes appended

    def __len__(self) -> int:
        return len(self.changes)

    def append(self, change: ChangeEvent, partition: int, offset: int, size: int) -> None:
        """Append one decoded change (the reader's per-record path: the control values are read
        column by column in `finish`, which costs less than per record here)."""
        self.changes.append(change)
        self.partitions.append(partition)
        self.offsets.append(offset)
        self.size += size

    def finish(self, topic: str) -> pa.RecordBatch:
        """The batch of the changes appended. The row image is `after` for c/u/r, `before` for d
        (the old row, or only its key columns, as the table's replica identity gives it), none
        for t (its columns are null). Raises `ReaderError` naming the partition, offset and
        column of a value Arrow cannot hold (a NaN in a `decimal128` column: read with
        `decimals="string"`)."""
        changes = self.changes
        empty = (None,) * len(self.plan.columns)
        # a native row (`NativeRow`) gives its values in one call; the reference gives tuples
        rows = [empty if r is None else r if type(r) is tuple else r.to_tuple()  # type: ignore[attr-defined]
                for r in (c.before if c.op is Op.DELETE else c.after for c in changes)]
        arrays = self._row_arrays(topic, rows)
        positions = [c.position for c in changes]
        arrays += [
            pa.array([c.op.value for c in changes], pa.string()),
            pa.array([p.commit_lsn.value for p in positions], pa.uint64()),
            pa.array([p.seq for p in positions], pa.int64()), pa.array([c.xid for c in changes], pa.int64()),
            pa.array([c.commit_ts_us for c in changes], META_FIELDS[4].type),
            pa.array([c.snapshot for c in changes], pa.bool_()),
            pa.array([list(c.unchanged) if c.unchanged else None for c in changes], META_FIELDS[6].type),
            pa.array(self.partitions, pa.int32()), pa.array(self.offsets, pa.int64()),
        ]
        return pa.RecordBatch.from_arrays(arrays, schema=self.plan.schema)

    def _row_arrays(self, topic: str, rows: list[tuple[Any, ...]]) -> list[pa.Array]:
        """The row columns. Converted in one pass over the row tuples (as a struct array: 0.6 to
        1.3 µs per row of bench/sink.py's orders table, against 2.2 to 2.5 column by column)
        unless a column needs a conversion first; column by column otherwise, and to find the
        value Arrow refuses."""
        if self.plan.row_type is not None and rows:
            try:
                return list(pa.array(rows, type=self.plan.row_type).flatten())
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
                pass  # found column by column below
        by_column = list(zip(*rows, strict=True)) if rows else [() for _ in self.plan.columns]
        arrays = []
        for i, (values, conv) in enumerate(zip(by_column, self.plan.convert, strict=True)):
            t = self.plan.schema.field(i).type
            try:
                arrays.append(pa.array(values if conv is None else [conv(v) for v in values], type=t))
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
                raise self._value_error(topic, i, values, exc) from exc
        return arrays

    def _value_error(self, topic: str, i: int, values: Sequence[Any], exc: Exception) -> ReaderError:
        """Find the first value of column `i` that Arrow refuses (slow path, errors only)."""
        t = self.plan.schema.field(i).type
        conv = self.plan.convert[i]
        for row, v in enumerate(values):
            try:
                pa.array([v if conv is None else conv(v)], type=t)
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
                hint = " (a NaN or Infinity numeric: read with decimals='string')" if pa.types.is_decimal(t) else ""
                return ReaderError(f"value does not fit the column's Arrow type {t}{hint}", topic=topic,
                                   partition=self.partitions[row], offset=self.offsets[row],
                                   table=self.plan.table, column=self.plan.columns[i], value=repr(v)[:80])
        return ReaderError(f"column cannot be built: {exc}", topic=topic, table=self.plan.table,
                           column=self.plan.columns[i])
