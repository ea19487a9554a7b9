"""The producer's native hot path: a test_decoding change line → framed key and envelope bytes.

`NativeChangeDecoder` is a `ChangeDecoder` (the Python reference, which it stays) that also keeps
a plan per table in the Rust core (`bridge._native.Producer`, native/src/producer/). The
producer offers it every line first (`encode`); the core parses the line, converts every value
and writes the Avro key and the whole envelope (the transaction's `source` bytes encoded once
per `Stamp`), with no Python object per value. Whatever it does not cover comes back as a miss
and the line takes the reference path (`parse_line` → `decode` → `TableCodec`), which then
answers exactly as it does without the native core:

- lines other than INSERT/UPDATE/DELETE (BEGIN, COMMIT, TRUNCATE, messages), and lines that do
  not parse (the reference raises the `DecodeError` with line and offset);
- a table without a plan yet: a plan is installed after the reference decoded a change of the
  relation version (the `ChangeDecoder._decoded` hook), from the relation, the printed types of
  that change, and the codec's framing and schemas;
- a line whose columns, printed types or key columns differ from the plan's (DDL: the reference
  follows it through the catalog and a new plan is installed);
- a value over `varchar(n)` or `numeric(p,s)` (the reference raises `ModifierError` and the
  producer re-reads the catalog), and values the core does not read (`1_000`, BC dates, `{1,,2}`:
  the reference converts them or raises);
- a primary-key change (an `old-key:` tuple whose key differs: the producer may split it into
  a delete and a create), `(no-tuple-data)`. Old-key UPDATEs that keep the key (REPLICA IDENTITY
  FULL) are native.

`BRIDGE_NATIVE=0` (`bridge.native.enabled()`) makes `bridge/app.py` build a plain `ChangeDecoder`;
the producer's decode stage (`bridge.produce.decode.Decoder`) offers each change line to `encode`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from bridge.codec.codec import _write_long, _write_source_tail, _write_string
from bridge.codec.schemas import row_record
from bridge.errors import BridgeError
from bridge.events import Op
from bridge.native import module
from bridge.relation import Column, Relation
from bridge.source import converters
from bridge.source.catalog import Catalog
from bridge.source.decoder import ChangeDecoder, RowDecoder
from bridge.source.test_decoding import ChangeLine

log = logging.getLogger(__name__)

_OPS: tuple[Op, ...] = (Op.INSERT, Op.UPDATE, Op.DELETE)

MISSES = ("", "not_change", "parse", "no_plan", "mismatch", "modifier", "value", "form")
"""Names of the core's miss codes (native/src/producer/convert.rs `Miss`), for counters."""

NativeChange = tuple[Relation, Op, bytes | None, bytes, int, int]
"""(relation, op, framed key or None, framed envelope, seq, key hash) of one natively encoded
change; the key hash is `zlib.crc32` of the key's Avro body (0 without a key), the partition
before the modulo (`bridge.produce.topics.partition_for`)."""

# Avro type of a row field (inside ["null", T]) → the core's conv, and the Python raw converter
# it must agree with (both are checked when a plan is built: a mapping that drifts from
# bridge.codec.schemas or bridge.source.converters leaves the table on the reference path).
_SIMPLE: dict[str, tuple[str, Any]] = {
    "int": ("int", int),
    "long": ("long", int),
    "float": ("float", float),
    "double": ("double", float),
    "boolean": ("bool", converters.boolean),
    "bytes": ("bytes", converters.bytea),
    "string": ("string", None),
}
_LOGICAL: dict[str, tuple[str, Any]] = {
    "date": ("date", converters.date_days),
    "time-micros": ("time", converters.time_us),
    "local-timestamp-micros": ("timestamp", converters.timestamp_us),
    "timestamp-micros": ("timestamptz", converters.timestamptz_us),
    "uuid": ("string", None),
}


def column_spec(col: Column, field: dict[str, Any]) -> tuple[str, str, str, int, int, int, int, str] | None:
    """The core's description of one column (name, printed type placeholder, conv, length,
    precision, scale, ndims, array delimiter), or None when the native path does not cover its
    type (a schema mapping this module does not know). For an array column the conv is its
    elements'. Called once per column when a plan is built."""
    ftype = field.get("type")
    if not isinstance(ftype, list) or len(ftype) < 2 or ftype[0] != "null":
        return None
    union: Any = ftype
    delim = ","
    if col.ndims:
        t: Any = ftype[1] if len(ftype) == 2 else None
        for _ in range(col.ndims):
            if not (isinstance(t, dict) and t.get("type") == "array"):
                return None
            t = t.get("items")
        union = t
        if not isinstance(union, list) or len(union) < 2 or union[0] != "null":
            return None
        raw = converters.scalar_converter(col.base, col.kind, col.precision, col.scale)
        delim = ";" if col.base == "box" else ","  # as raw_converter
    else:
        raw = converters.raw_converter(col)
    branches = union[1:]
    length = precision = scale = -1
    if len(branches) == 2:
        dec = branches[0]
        if not (isinstance(dec, dict) and dec.get("logicalType") == "decimal" and branches[1] == "string"
                and raw is Decimal):
            return None
        conv, precision, scale = "decimal", int(dec["precision"]), int(dec.get("scale", 0))
    elif len(branches) == 1:
        t = branches[0]
        if isinstance(t, str):
            found = _SIMPLE.get(t)
        elif isinstance(t, dict) and isinstance(t.get("logicalType"), str):
            found = _LOGICAL.get(t["logicalType"])
            if found is not None and t.get("type") not in ("int", "long", "string"):
                found = None
        else:
            found = None
        if found is None or found[1] is not raw:
            return None
        conv = found[0]
        if conv == "string" and field.get("pg.length") and field.get("pg.base") in ("varchar", "bpchar") \
                and not field.get("pg.ndims"):
            length = int(field["pg.length"])
    else:
        return None
    return (col.name, "", conv, length, precision, scale, col.ndims, delim)


class NativeChangeDecoder(ChangeDecoder):
    """A `ChangeDecoder` that also encodes whole changes in the native core.

    Receives the catalog (as `ChangeDecoder`) and `codec_for`, the producer's cached codec of a
    relation version (the same objects the producer encodes with). Not thread-safe.
    """

    def __init__(self, catalog: Catalog, codec_for: Callable[[Relation], Any]) -> None:
        super().__init__(catalog)
        self._codec_for = codec_for
        self._core = module().Producer(_OPS)
        self._planned: dict[tuple[str, str], RowDecoder] = {}  # table -> row decoder last considered
        self._stamp: object = None
        self._lsn = b""
        self._tail = b""
        self.encoded = 0
        self.misses: Counter[str] = Counter()

    # -- the hot path ------------------------------------------------------------------------------
    def encode(self, line: str, seq: int, stamp: Any) -> NativeChange | None:
        """The records of one line at `seq` of the transaction `stamp` describes, or None when
        the reference path must take the line (see the module docstring). Never raises for a
        line: every doubt is a miss."""
        if stamp is not self._stamp:
            try:
                self._lsn = _write_long(stamp.commit_lsn)
                self._tail = _write_source_tail((stamp.xid, stamp.commit_ts_us, stamp.snapshot, stamp.ts_ms))
            except Exception:  # an unencodable stamp: the reference raises its CodecError
                self._stamp = None
                return None
            self._stamp = stamp
        r = self._core.encode(line, seq, self._lsn, self._tail)
        if r.__class__ is int:
            self.misses[MISSES[r]] += 1
            return None
        self.encoded += 1
        return r  # type: ignore[no-any-return]

    # -- following the reference ---------------------------------------------------------------
    def _decoded(self, dec: RowDecoder, change: ChangeLine) -> None:
        self._learn(dec)

    def reload(self, schema: str, table: str) -> None:
        self._drop(schema, table)
        super().reload(schema, table)

    def forget(self, schema: str, table: str) -> None:
        self._drop(schema, table)
        super().forget(schema, table)

    def _drop(self, schema: str, table: str) -> None:
        self._core.remove(schema, table)
        self._planned.pop((schema, table), None)

    def _learn(self, dec: RowDecoder) -> None:
        """After the reference decoded a change with `dec`, the table's row decoder: make it
        (relation version and the printed types it learnt) the table's plan, once per row
        decoder; one the core does not cover removes the plan."""
        relation = dec.relation
        key = (relation.schema, relation.table)
        if self._planned.get(key) is dec:
            return
        printed = dec._type_list if dec._types is not None else None
        if printed is None:
            self._drop(*key)  # the printed types are learnt from a full new tuple: later
            return
        self._planned[key] = dec
        try:
            spec = self._spec(relation, printed)
        except (BridgeError, KeyError, TypeError, ValueError) as exc:
            log.info("native core: no plan for %s (%s); the reference path encodes it", relation.qualified, exc)
            spec = None
        if spec is None:
            self._core.remove(*key)
            return
        pid = self._core.install(relation, *spec)
        log.info("native core: plan %s for %s version %s", pid, relation.qualified, relation.version)

    def _spec(self, relation: Relation, printed: list[str]) -> tuple[Any, ...] | None:
        codec = self._codec_for(relation)
        fields = row_record(codec.value_schema)["fields"]
        if len(fields) != len(relation.columns):
            return None
        columns = []
        for col, field, typ in zip(relation.columns, fields, printed, strict=True):
            spec = column_spec(col, field)
            if spec is None:
                return None
            columns.append((spec[0], typ, *spec[2:]))
        pk = [relation.index[c] for c in relation.primary_key]
        if any(relation.columns[i].ndims for i in pk):
            return None  # array keys: the reference path
        key_prefix = codec.key_prefix if codec.key_schema is not None else None
        if (key_prefix is None) != (not pk):
            return None
        src_names = _write_string(codec.db) + _write_string(relation.schema) + _write_string(relation.table)
        return (relation.schema, relation.table, columns, pk,
                relation.replica_identity == "d" and bool(pk), key_prefix, codec.value_prefix, src_names)


__all__ = ["MISSES", "NativeChange", "NativeChangeDecoder", "column_spec"]
