"""The decode stage: a committed source transaction → its `ChangeEvent`s, in order.

The seam the native core plugs into: one class, `Decoder`, with `events` and `retry`. When the
change decoder is the native one (`bridge.source.native_decoder.NativeChangeDecoder`, unless
`BRIDGE_NATIVE=0`) and the producer passes the transaction's `Stamp`, each change line is offered
to the Rust core first, which yields it already encoded (`Encoded`: relation version, op, framed
key and envelope, seq) with no Python object per value; a miss takes the reference path below.
Called by the producer once per transaction (after `bridge.source.transactions`), before the
Router. Guarantees:
- every change line gets its position `(commit_lsn, seq)`, `seq` counting every change and
  truncate line of the transaction (also those of tables not replicated, which yield nothing),
  so positions do not depend on the table filter's history;
- a change of a replicated table yields one event (`Op.INSERT|UPDATE|DELETE`) with typed rows;
  a truncate yields one `Op.TRUNCATE` event per replicated table it names, at the same seq;
- a transactional logical message inside the transaction is yielded as its `MessageLine`, in
  line order (resnapshot watermarks);
- every event carries the transaction's xid and commit time.
Raises `DecodeError` for a line that does not parse or does not belong inside a transaction,
`SourceError` when the catalog cannot be read.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, Protocol

from bridge import metrics
from bridge.errors import DecodeError
from bridge.events import ChangeEvent, Op, Position
from bridge.relation import Relation
from bridge.source.lines import ChangeLine, MessageLine, TruncateLine
from bridge.source.test_decoding import parse_line
from bridge.source.transactions import Transaction

Encoded = tuple[Relation, Op, "bytes | None", bytes, int, int]
"""A change the native core encoded whole: (relation version, op, framed key or None, framed
envelope, seq, key hash — the CRC-32 of the key's Avro body, the partition before the modulo).
Never a key change (the core leaves those to the reference path)."""


class ChangeDecoderLike(Protocol):
    """`bridge.source.decoder.ChangeDecoder`: typed rows for change lines, following DDL."""

    def event(self, change: ChangeLine, position: Position, xid: int, commit_ts_us: int | None
              ) -> ChangeEvent: ...

    def reevent(self, change: ChangeLine, event: ChangeEvent, *, from_line: bool = False) -> ChangeEvent: ...


class Decoder:
    """Transactions → events. Not thread-safe; one transaction at a time."""

    def __init__(self, changes: ChangeDecoderLike, relation_of: Callable[[str, str], Relation],
                 include: Callable[[str, str], bool]) -> None:
        self._changes = changes
        self._relation_of = relation_of
        self._include = include
        # the native core's whole-change encoder, when the change decoder has one
        self._encode: Callable[[str, int, Any], Encoded | None] | None = \
            getattr(changes, "encode", None)
        self._line: ChangeLine | None = None  # the change line of the event last yielded
        self.positions = 0  # after `events` is exhausted: the seqs its transaction used

    def events(self, txn: Transaction, stamp: Any = None) -> Generator[ChangeEvent | Encoded | MessageLine, None, None]:
        """The events and transactional messages of `txn`, in line order (iterate once). With
        `stamp` (the transaction's encoded `source` block) and a native change decoder, changes
        the core covers come as `Encoded` instead of `ChangeEvent`."""
        lsn, xid, ts = txn.commit_lsn, txn.xid or 0, txn.commit_ts_us
        include, event = self._include, self._changes.event
        encode = self._encode if stamp is not None else None
        seq = native = 0
        decoded_bytes = 0  # counted once per transaction, not per line
        try:
            for line in txn.lines():
                decoded_bytes += len(line)
                if encode is not None:
                    done = encode(line, seq, stamp)
                    if done is not None:
                        if include(done[0].schema, done[0].table):
                            native += 1
                            yield done
                        seq += 1
                        continue
                parsed = parse_line(line)
                if type(parsed) is ChangeLine:
                    if include(parsed.schema, parsed.table):
                        self._line = parsed
                        yield event(parsed, Position(lsn, seq), xid, ts)
                    seq += 1
                elif isinstance(parsed, TruncateLine):
                    for schema, table in parsed.relations:
                        if include(schema, table):
                            yield ChangeEvent(relation=self._relation_of(schema, table), op=Op.TRUNCATE,
                                              position=Position(lsn, seq), xid=xid, commit_ts_us=ts,
                                              before=None, after=None)
                    seq += 1
                elif isinstance(parsed, MessageLine):
                    yield parsed
                else:
                    raise DecodeError("unexpected line inside a transaction", line=line[:200], offset=0)
        finally:
            metrics.DECODED_BYTES.inc(decoded_bytes)
            if native:
                metrics.NATIVE_CHANGES.inc(native)
            self.positions = seq
            self._line = None

    def retry(self, event: ChangeEvent, *, from_line: bool = False) -> ChangeEvent:
        """`event` — the one last yielded — decoded again after the encoder found a value wider
        than its relation allows (`ModifierError`): the table is re-read from the catalog, or
        with `from_line` the relation is built from the line's own (modifier-free) types."""
        if self._line is None:
            raise DecodeError("retry without a change being decoded", table=event.relation.qualified)
        return self._changes.reevent(self._line, event, from_line=from_line)


__all__ = ["ChangeDecoderLike", "Decoder", "Encoded"]
