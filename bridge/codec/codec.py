"""The codec facade: `TableCodec` (producer side) and `EnvelopeDecoder` (sink side).

A `TableCodec` is built once per table version; its `key`/`value` are the produce hot path.
An `EnvelopeDecoder` serves every topic of a sink; `decode` is the consume hot path.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from bridge.codec.decoder import _read_varint, compile_decoder
from bridge.codec.encoder import VARINT, compile_writer, zigzag_long
from bridge.codec.schemas import key_schema, row_record, value_schema
from bridge.codec.store import Schema, SchemaStore
from bridge.codec.validate import relation_from_schema
from bridge.errors import CodecError, ModifierError, SchemaError
from bridge.events import ChangeEvent, Op, Position, Row
from bridge.kafka.topics import topic_name
from bridge.lsn import Lsn
from bridge.relation import Relation


@dataclass(frozen=True, slots=True)
class Stamp:
    """What every envelope of one transaction shares in its `source` block, and `ts_ms` (when the
    bridge encoded the transaction). Built once per transaction by the producer."""

    commit_lsn: int
    xid: int
    commit_ts_us: int | None
    snapshot: bool
    ts_ms: int


def now_stamp(event: ChangeEvent) -> Stamp:
    """The stamp of a single event, `ts_ms` = now."""
    return Stamp(event.position.commit_lsn.value, event.xid, event.commit_ts_us, event.snapshot,
                 time.time_ns() // 1_000_000)


_write_long = compile_writer("long")
_write_string = compile_writer("string")
_write_source_tail = compile_writer({"type": "record", "name": "SourceTail", "fields": [
    {"name": "xid", "type": "long"},
    {"name": "commit_ts", "type": ["null", "long"]},
    {"name": "snapshot", "type": "boolean"},
    {"name": "ts_ms", "type": "long"},
]})
_write_unchanged = compile_writer({"type": "array", "items": "string"})


class TableCodec:
    """Encodes one table version's keys and envelopes, framed for `store`.

    Construction builds the schemas, registers them with the store (so they are published before
    any record that uses them exists) and compiles the writers. Raises `SchemaError` when the
    relation cannot be mapped, `CodecError` when the store cannot publish.

    The envelope is written in pieces (`envelope`): the framing and the two rows by a writer
    compiled for them, then the op, then the `source` block and `ts_ms`, whose bytes are the same
    for every change of a transaction but `seq` and are therefore encoded once per `Stamp`. The
    result is byte for byte what the writer of the whole envelope schema produces (unit-tested).
    """

    def __init__(self, relation: Relation, store: SchemaStore, *, db: str, topic_prefix: str) -> None:
        self.relation = relation
        self.db = db
        self.topic = topic_name(topic_prefix, relation.schema, relation.table)
        self.key_schema: Schema | None = key_schema(relation, topic_prefix=topic_prefix)
        self.value_schema: Schema = value_schema(relation, topic_prefix=topic_prefix)
        self.key_prefix: bytes | None = None
        self._key_write: Callable[[Any], bytes] | None = None
        self._pk_index = tuple(relation.index[c] for c in relation.primary_key)
        # the key record's tuple from a row: itemgetter gives a tuple for 2+ columns, a value for 1
        self._pk_of: Callable[[Row], tuple[Any, ...]] = lambda row: ()
        if len(self._pk_index) == 1:
            only = self._pk_index[0]
            self._pk_of = lambda row: (row[only],)
        elif self._pk_index:
            self._pk_of = itemgetter(*self._pk_index)
        if self.key_schema is not None:
            self.key_prefix = store.register(self.key_schema, subject=f"{self.topic}-key")
            self._key_write = compile_writer(self.key_schema, prefix=self.key_prefix, name="write_key")
        self.value_prefix = store.register(self.value_schema, subject=f"{self.topic}-value")
        env_fields = self.value_schema["fields"]
        if [f["name"] for f in env_fields] != ["before", "after", "op", "source", "ts_ms", "unchanged"]:
            raise CodecError("envelope fields are not before, after, op, source, ts_ms, unchanged",
                             table=relation.qualified)
        rows = dict(self.value_schema, name="Rows", fields=env_fields[:2])
        self._rows_write = compile_writer(rows, prefix=self.value_prefix, name="write_rows")
        self._op_bytes = {sym: VARINT[i << 1] for i, sym in enumerate(env_fields[2]["type"]["symbols"])}
        self._src_names = _write_string(db) + _write_string(relation.schema) + _write_string(relation.table)
        self._stamp: Stamp | None = None
        self._head = b""  # source.db .. commit_lsn of `_stamp`
        self._tail = b""  # source.xid .. ts_ms of `_stamp`

    def key(self, row: Row) -> bytes | None:
        """The framed key of a full row (PK columns picked from it); None for a table without a
        primary key. Raises `CodecError` naming the column whose value cannot be encoded."""
        if self._key_write is None:
            return None
        pk = self._pk_of(row)
        try:
            return self._key_write(pk)
        except ModifierError as exc:
            exc.context.setdefault("table", self.relation.qualified)
            raise
        except Exception as exc:
            raise self._error(exc, pk, self.relation.primary_key, "key") from exc

    def value(self, event: ChangeEvent) -> bytes:
        """The framed envelope of `event`, `ts_ms` = now. Raises `CodecError` naming the column
        (and position) whose value cannot be encoded."""
        return self.envelope(event.before, event.after, event.op, event.position.seq, now_stamp(event),
                             event.unchanged)

    def envelope(self, before: Row | None, after: Row | None, op: str, seq: int, stamp: Stamp,
                 unchanged: tuple[str, ...] = ()) -> bytes:
        """The framed envelope of one change of the transaction `stamp` describes (the produce
        hot path). Raises `CodecError` naming the column (and position) whose value cannot be
        encoded."""
        try:
            if stamp is not self._stamp:
                self._head = self._src_names + _write_long(stamp.commit_lsn)
                self._tail = _write_source_tail((stamp.xid, stamp.commit_ts_us, stamp.snapshot, stamp.ts_ms))
                self._stamp = stamp
            z = (seq << 1) ^ (seq >> 63)
            return b"".join((self._rows_write((before, after)), self._op_bytes[op], self._head,
                             VARINT[z] if z < 16384 else zigzag_long(seq), self._tail,
                             _write_unchanged(unchanged) if unchanged else b"\x00"))
        except Exception as exc:
            self._stamp = None
            position = f"{Lsn(stamp.commit_lsn) if 0 <= stamp.commit_lsn < 1 << 64 else stamp.commit_lsn}#{seq}"
            found: dict[str, Any] = {"table": self.relation.qualified, "position": position}
            for row in (before, after):
                if row is not None:
                    err = self._error(exc, row, self.relation.column_names, "row", position=position)
                    if "column" in err.context:
                        found = err.context
                        if not isinstance(exc, ModifierError):
                            raise err from exc
                        break
            if isinstance(exc, ModifierError):  # the producer re-reads the table and tries again
                exc.context.update({k: v for k, v in found.items() if k not in exc.context})
                raise
            raise CodecError(f"envelope cannot be encoded: {exc!r}", table=self.relation.qualified,
                             position=position) from exc

    def _error(self, exc: Exception, values: tuple[Any, ...], names: tuple[str, ...], what: str,
               **ctx: Any) -> CodecError:
        """Find the first column whose value does not encode on its own (slow path, errors only)."""
        rec = row_record(self.value_schema)
        types = {f["pg.name"]: f["type"] for f in rec["fields"]}
        if len(values) != len(names):
            return CodecError(f"{what} has {len(values)} values for {len(names)} columns",
                              table=self.relation.qualified, **ctx)
        for name, v in zip(names, values, strict=True):
            try:
                compile_writer(types[name])(v)
            except Exception as col_exc:
                return CodecError(f"{what} value cannot be encoded: {col_exc!r}", table=self.relation.qualified,
                                  column=name, value=repr(v)[:80], **ctx)
        return CodecError(f"{what} cannot be encoded: {exc!r}", table=self.relation.qualified, **ctx)


_OPS = {op.value: op for op in Op}
_MAX_REFUSED = 10_000  # refused schemas remembered (then forgotten at once: memory stays bounded)
_NO_RELATION = Relation("", "", ())  # placeholder for key schemas


_SOURCE_HEAD = ["db", "schema", "table", "commit_lsn"]
_SOURCE_TAIL = ["xid", "commit_ts", "snapshot"]


class _Entry:
    """One writer schema's readers. For an envelope of the standard layout the body is read in
    pieces, mirroring `TableCodec.envelope`: the rows and op, then the `source` block, whose bytes
    are the same for every record of a transaction but `seq`: when they equal the previous
    record's (compared as bytes), its decoded values are reused instead of read again."""

    __slots__ = ("head", "head_len", "head_vals", "read", "read_head", "read_rows", "read_tail",
                 "read_unchanged", "relation", "schema", "tail", "tail_len", "tail_vals")

    def __init__(self, schema: Schema, relation: Relation, read: Callable[[bytes, int], Any]) -> None:
        self.schema, self.relation, self.read = schema, relation, read
        self.read_rows: Callable[[bytes, int], Any] | None = None
        self.head = self.tail = b""
        self.head_len = self.tail_len = 0
        self.head_vals: tuple[Lsn, ...] = ()
        self.tail_vals: tuple[Any, ...] = ()
        fields = schema.get("fields") if relation is not _NO_RELATION else None
        if not isinstance(fields, list) or len(fields) != 6:
            return  # a key schema, or not the standard layout: the whole-body reader only
        try:
            src = fields[3]["type"]["fields"]
            names = [f["name"] for f in fields]
            src_names = [f["name"] for f in src]
        except (KeyError, TypeError, IndexError):
            return
        if names != ["before", "after", "op", "source", "ts_ms", "unchanged"] or \
                src_names != [*_SOURCE_HEAD, "seq", *_SOURCE_TAIL]:
            return
        ns = schema.get("namespace", "")
        self.read_rows = compile_decoder(dict(schema, name="Rows", fields=fields[:3]), name="read_rows", partial=True)
        self.read_head = compile_decoder({"type": "record", "name": "H", "namespace": ns, "fields": src[:4]},
                                         name="read_head", partial=True)
        self.read_tail = compile_decoder({"type": "record", "name": "T", "namespace": ns,
                                          "fields": [*src[5:], fields[4]]}, name="read_tail", partial=True)
        self.read_unchanged = compile_decoder(fields[5]["type"], name="read_unchanged")


class EnvelopeDecoder:
    """Decodes framed envelopes and keys, learning schemas through `store` (cached per schema).

    `decode`/`decode_key` raise `CodecError` for unknown framing, unknown schemas and bodies that
    do not decode, and `SchemaError` for a schema that lacks the `pg.*` properties.
    """

    def __init__(self, store: SchemaStore, *, topic_prefix: str | None = None) -> None:
        self._store = store
        self._prefix = topic_prefix
        self._entries: dict[int, _Entry] = {}
        # schemas refused (by id, with the schema kept so the id stays its own): a flood of
        # records written with one forged schema validates it once
        self._refused: dict[int, tuple[Schema, SchemaError]] = {}
        self._lsn = Lsn(0)  # the last commit LSN decoded: a transaction's records share it

    def _entry(self, schema: Schema, envelope: bool) -> _Entry:
        """The readers of `schema`, built once. An envelope schema is validated first
        (`relation_from_schema`: hostile input); a refused one raises the same `SchemaError`
        again without new work."""
        e = self._entries.get(id(schema))
        if e is not None and e.schema is schema:
            return e
        refused = self._refused.get(id(schema))
        if refused is not None and refused[0] is schema:
            raise refused[1]
        try:
            rel = relation_from_schema(schema, topic_prefix=self._prefix) if envelope else _NO_RELATION
        except SchemaError as exc:
            if len(self._refused) >= _MAX_REFUSED:
                self._refused.clear()
            self._refused[id(schema)] = (schema, exc)
            raise
        e = self._entries[id(schema)] = _Entry(schema, rel, compile_decoder(schema))
        return e

    def decode(self, value: bytes) -> ChangeEvent:
        """Decode one framed envelope (a record value; a tombstone raises `CodecError`) into the
        pipeline's one change type, `ChangeEvent`, with the envelope's `ts_ms`. Positional
        construction: this is the sink's per-record hot path (keywords cost more per call)."""
        if not value:
            raise CodecError("empty record value (a tombstone is not an envelope)")
        schema, off = self._store.lookup(value)
        e = self._entry(schema, True)
        try:
            if e.read_rows is None:
                return self._decode_whole(e, value, off)
            (before, after, op), p = e.read_rows(value, off)
            if e.head_len and value.startswith(e.head, p):
                p += e.head_len
            else:
                (_db, _schema, _table, lsn), q = e.read_head(value, p)
                e.head, e.head_len, e.head_vals = value[p:q], q - p, (Lsn(lsn),)
                p = q
            z = value[p]
            p += 1
            if z > 127:
                z, p = _read_varint(value, p, z)
            seq = (z >> 1) ^ -(z & 1)
            if e.tail_len and value.startswith(e.tail, p):
                p += e.tail_len
            else:
                tail, q = e.read_tail(value, p)
                e.tail, e.tail_len, e.tail_vals = value[p:q], q - p, tail
                p = q
            xid, commit_ts, snapshot, ts_ms = e.tail_vals
            if p + 1 == len(value) and value[p] == 0:
                unchanged: tuple[str, ...] = ()
            else:
                unchanged = tuple(e.read_unchanged(value, p))
            return ChangeEvent(e.relation, _OPS[op], Position(e.head_vals[0], seq), xid, commit_ts, before, after,
                               unchanged, snapshot, ts_ms)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            e.head_len = e.tail_len = 0
            raise CodecError(f"record is not an envelope: {exc!r}", schema=schema.get("name")) from exc
        except CodecError:
            e.head_len = e.tail_len = 0
            raise

    def _decode_whole(self, e: _Entry, value: bytes, off: int) -> ChangeEvent:
        before, after, op, src, ts_ms, unchanged = e.read(value, off)
        _db, _schema, _table, lsn, seq, xid, commit_ts, snapshot = src
        commit_lsn = self._lsn
        if commit_lsn.value != lsn:
            commit_lsn = self._lsn = Lsn(lsn)
        return ChangeEvent(e.relation, _OPS[op], Position(commit_lsn, seq), xid, commit_ts, before, after,
                           tuple(unchanged), snapshot, ts_ms)

    def decode_key(self, key: bytes) -> tuple[Any, ...]:
        """Decode one framed key to the primary-key values, in primary-key order."""
        schema, off = self._store.lookup(key)
        out = self._entry(schema, False).read(key, off)
        if not isinstance(out, tuple):
            raise CodecError("key schema is not a record", schema=schema.get("name"))
        return out

    def relation(self, value: bytes) -> Relation:
        """The relation of a framed envelope's writer schema, without decoding the body."""
        schema, _ = self._store.lookup(value)
        return self._entry(schema, True).relation
