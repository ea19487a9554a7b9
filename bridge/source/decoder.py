"""`ChangeLine` + `Relation` → `before` / `after` rows in value form, and the `unchanged` names.

`RowDecoder` is built once per relation version: it picks every column's converter once and
compiles a row function specialised to the column list, so a full tuple converts with one call
and no per-column dispatch. `ChangeDecoder` keeps one `RowDecoder` per table and follows DDL:
when a change's columns (names, or printed types) no longer match, it refreshes the relation
from the catalog, and when the catalog has already moved past the change being decoded, builds
the relation from the change's own column names and types.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from bridge.errors import DecodeError, SchemaError, SourceError
from bridge.events import ChangeEvent, Op, Position, Row
from bridge.lsn import Lsn
from bridge.relation import Relation
from bridge.source.catalog import Catalog
from bridge.source.converters import CONVERSION_ERRORS, Converter, conversion_error, raw_converter
from bridge.source.test_decoding import UNCHANGED, ChangeLine, RawTuple, RawValue

log = logging.getLogger(__name__)

_OPS: dict[str, Op] = {"INSERT": Op.INSERT, "UPDATE": Op.UPDATE, "DELETE": Op.DELETE}

Decoded = tuple[Op, Row | None, Row | None, tuple[str, ...]]


def _compile_full_row(convs: list[Converter | None]) -> Callable[[list[RawValue]], Row]:
    """A function converting a complete value list (relation order, no UNCHANGED) to a row.

    Generated once per relation: `(None if v0 is None else c0(v0), v1, ...)`, so the hot path has
    neither a loop nor a per-column branch on the converter kind. Raises what the converters raise.
    """
    n = len(convs)
    if n == 0:
        return lambda values: ()
    names = [f"v{i}" for i in range(n)]
    exprs = [v if c is None else f"(None if {v} is None else c{i}({v}))" for i, (v, c) in enumerate(zip(names, convs, strict=True))]
    src = (
        "def full_row(values):\n"
        f"    {', '.join(names)}, = values\n"
        f"    return ({', '.join(exprs)},)\n"
    )
    namespace: dict[str, Any] = {f"c{i}": c for i, c in enumerate(convs) if c is not None}
    exec(compile(src, "<bridge.source.decoder row>", "exec"), namespace)
    fn: Callable[[list[RawValue]], Row] = namespace["full_row"]
    return fn


class RowDecoder:
    """Converts the tuples of changes to one relation version into rows.

    Built once per `Relation` (converters chosen once from the column types). Not thread-safe.
    """

    __slots__ = ("_convs", "_full_row", "_index", "_names", "_type_list", "_types", "relation")

    def __init__(self, relation: Relation) -> None:
        self.relation = relation
        self._names = list(relation.column_names)
        self._index = dict(relation.index)
        self._convs = [raw_converter(c) for c in relation.columns]
        self._full_row = _compile_full_row(self._convs)
        # The printed (format_type_be) type of each column, learnt from the first full tuple that
        # matches by name; later tuples printing other types mean an ALTER ... TYPE happened.
        self._types: dict[str, str] | None = None
        self._type_list: list[str] = []

    def matches(self, change: ChangeLine) -> bool:
        """Whether the change's tuples fit this relation version (called before `decode`).

        A new tuple must list exactly the relation's columns; an old tuple a subset of them (it
        skips NULLs). Printed types must equal those of the first matching change.
        """
        new = change.new
        if new is not None:
            if new.names != self._names:
                return False
            if self._types is None:
                self._types = dict(zip(new.names, new.types, strict=True))
                self._type_list = list(new.types)
            elif new.types != self._type_list:
                return False
        old = change.old
        if old is not None:
            index = self._index
            types = self._types
            for name, type_ in zip(old.names, old.types, strict=True):
                if name not in index or (types is not None and types[name] != type_):
                    return False
            rel = self.relation
            if rel.replica_identity == "d" and rel.primary_key and set(old.names) != set(rel.primary_key):
                # The old key lists the key columns the table has *now*: the primary key was
                # changed (ALTER TABLE … DROP CONSTRAINT …, ADD PRIMARY KEY …).
                return False
        return True

    def decode(self, change: ChangeLine) -> Decoded:
        """`(op, before, after, unchanged)` for a change that `matches` this relation.

        Rows are tuples in relation column order; columns absent from a tuple and NULLs are None;
        unchanged TOAST values are None and their names are listed in `unchanged` (relation
        order). Raises DecodeError naming table, column and value when a value does not convert,
        or when the op is not INSERT/UPDATE/DELETE.
        """
        op = _OPS.get(change.op)
        if op is None:
            raise DecodeError(f"unexpected change op {change.op!r}", table=self.relation.qualified)
        before: Row | None = None
        after: Row | None = None
        unchanged: tuple[str, ...] = ()
        new = change.new
        if new is not None:
            if op is Op.UPDATE and UNCHANGED in new.values:
                after, unchanged = self._row_slow(new)
            else:
                after = self._row(new)
        old = change.old
        if old is not None:
            before = self._row(old)
        return op, before, after, unchanged

    def _row(self, tup: RawTuple) -> Row:
        if tup.names == self._names:
            try:
                return self._full_row(tup.values)
            except CONVERSION_ERRORS:
                pass  # locate and name the failing column below
        row, unchanged = self._row_slow(tup)
        if unchanged:
            raise DecodeError("unchanged-toast-datum outside an UPDATE's new tuple",
                              table=self.relation.qualified, columns=unchanged)
        return row

    def _row_slow(self, tup: RawTuple) -> tuple[Row, tuple[str, ...]]:
        """Column by column: partial tuples, UNCHANGED values, and naming a failing column."""
        row: list[Any] = [None] * len(self._names)
        unchanged: list[str] = []
        index = self._index
        convs = self._convs
        for name, value in zip(tup.names, tup.values, strict=True):
            i = index.get(name)
            if i is None:
                raise DecodeError(f"column {name!r} is not in relation version {self.relation.version}",
                                  table=self.relation.qualified, column=name)
            if value is None:
                continue
            if value is UNCHANGED:
                unchanged.append(name)
                continue
            assert isinstance(value, str)
            conv = convs[i]
            if conv is None:
                row[i] = value
                continue
            try:
                row[i] = conv(value)
            except CONVERSION_ERRORS as exc:
                col = self.relation.columns[i]
                raise conversion_error(name, col.type_name, value, exc, self.relation.qualified) from exc
        return tuple(row), tuple(unchanged)


class ChangeDecoder:
    """Decodes the changes of every table, following DDL through the catalog.

    Receives the `Catalog`; keeps one `RowDecoder` per (schema, table). Not thread-safe.
    """

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog
        self._decoders: dict[tuple[str, str], RowDecoder] = {}

    def decode(self, change: ChangeLine) -> tuple[Relation, Op, Row | None, Row | None, tuple[str, ...]]:
        """`(relation, op, before, after, unchanged)` for one change line (see `event`)."""
        dec = self._row_decoder(change)
        op, before, after, unchanged = dec.decode(change)
        self._decoded(dec, change)
        return dec.relation, op, before, after, unchanged

    def event(self, change: ChangeLine, position: Position, xid: int, commit_ts_us: int | None) -> ChangeEvent:
        """The `ChangeEvent` of one change line at `position`.

        Called for every INSERT/UPDATE/DELETE line, in WAL order. Guarantees: the relation
        returned describes the rows returned. When the line's columns differ from the cached
        relation's, the relation is refreshed from the catalog (new version); when the catalog
        still does not match (it is ahead of the WAL), the relation is built from the line's own
        names and types (also when the table no longer exists in the catalog). Raises DecodeError
        for values that do not convert, SourceError when the catalog cannot be read.
        """
        dec = self._decoders.get((change.schema, change.table))
        if dec is None or not dec.matches(change):
            dec = self._follow(change, dec)
        op, before, after, unchanged = dec.decode(change)
        self._decoded(dec, change)
        return ChangeEvent(relation=dec.relation, op=op, position=position, xid=xid, commit_ts_us=commit_ts_us,
                           before=before, after=after, unchanged=unchanged)

    def _row_decoder(self, change: ChangeLine) -> RowDecoder:
        dec = self._decoders.get((change.schema, change.table))
        if dec is None or not dec.matches(change):
            dec = self._follow(change, dec)
        return dec

    def redecode(self, change: ChangeLine, *, from_line: bool = False
                 ) -> tuple[Relation, Op, Row | None, Row | None, tuple[str, ...]]:
        """Decode `change` again after its values did not fit the relation's type modifiers (a
        `ModifierError` from the encoder: a `varchar(n)` or `numeric(p,s)` change that the lines,
        which print types without modifiers, do not show). The table is re-read from the catalog
        (a new version when it changed). With `from_line` — the last resort, when the catalog is
        no wider because the column was narrowed again since — the relation is built from the
        line's own type names, which carry no modifiers, so no value is too long for it."""
        schema, table = change.schema, change.table
        dec: RowDecoder | None = None
        if not from_line:
            try:
                dec = RowDecoder(self._catalog.refresh(schema, table))
            except SchemaError:
                dec = None
        if dec is None or not dec.matches(change):
            tup = change.new if change.new is not None else change.old
            if tup is None:
                raise DecodeError("change without tuple data", table=f"{schema}.{table}")
            dec = RowDecoder(self._catalog.relation_from_line(schema, table, tup.names, tup.types))
        self._decoders[(schema, table)] = dec
        op, before, after, unchanged = dec.decode(change)
        self._decoded(dec, change)
        return dec.relation, op, before, after, unchanged

    def _decoded(self, dec: RowDecoder, change: ChangeLine) -> None:
        """Called after `dec`, the table's row decoder now, decoded `change` (by `decode`,
        `event` or `redecode`). Nothing here; the native decoder learns its plans in it."""

    def reevent(self, change: ChangeLine, event: ChangeEvent, *, from_line: bool = False) -> ChangeEvent:
        """`event` (of `change`) decoded again as `redecode` does: same position, xid and time."""
        relation, op, before, after, unchanged = self.redecode(change, from_line=from_line)
        return ChangeEvent(relation=relation, op=op, position=event.position, xid=event.xid,
                           commit_ts_us=event.commit_ts_us, before=before, after=after, unchanged=unchanged)

    def reload(self, schema: str, table: str) -> None:
        """Re-read `schema.table` from the catalog (its key changed): the next change of it is
        decoded with the new relation version. Raises SourceError when the catalog cannot be read."""
        try:
            rel = self._catalog.refresh(schema, table)
        except SchemaError:
            self.forget(schema, table)  # dropped since: the next change describes itself
            return
        self._decoders[(schema, table)] = RowDecoder(rel)

    def forget(self, schema: str, table: str) -> None:
        """Drop the cached decoder and relation of a table (e.g. after it was dropped)."""
        self._decoders.pop((schema, table), None)
        self._catalog.forget(schema, table)

    def _follow(self, change: ChangeLine, current: RowDecoder | None) -> RowDecoder:
        schema, table = change.schema, change.table
        cat = self._catalog
        dec: RowDecoder | None
        try:
            rel = cat.relation(schema, table) if current is None else cat.refresh(schema, table)
            dec = RowDecoder(rel)
        except SchemaError as exc:
            # Dropped (or renamed) since this change was written: the line still describes itself.
            log.warning("%s; decoding %s.%s from the change's own column types", exc, schema, table)
            dec = None
        if dec is None or not dec.matches(change):
            tup = change.new if change.new is not None else change.old
            if tup is None:
                raise DecodeError("change without tuple data does not match the catalog",
                                  table=f"{schema}.{table}")
            log.info("catalog of %s.%s is ahead of the change being decoded (columns %s)",
                     schema, table, tup.names)
            dec = RowDecoder(cat.relation_from_line(schema, table, tup.names, tup.types))
            if not dec.matches(change):
                raise DecodeError("change tuples disagree with each other", table=f"{schema}.{table}",
                                  columns=tup.names)
        self._decoders[(schema, table)] = dec
        return dec


KEY_CHECK_INTERVAL_S = 1.0
"""How often `KeyWatch` compares the cached keys with the catalog: one query for all tables
(well under a millisecond), so at most one per second costs nothing measurable."""


class KeyWatch:
    """Follows primary-key (and replica-identity) changes that no change line shows.

    A DELETE or a key-changing UPDATE prints the table's current key columns, and `RowDecoder`
    notices a new key from those. An INSERT or an UPDATE that keeps its key shows nothing, so
    every `KEY_CHECK_INTERVAL_S` the cached keys are compared with the catalog. A difference is
    known to have committed before the WAL position read with it (`Catalog.key_changes`), so the
    table is reloaded for the first transaction committing after that position, never earlier:
    a change that may predate the ALTER keeps the key it was written under. Called by the
    producer loop: `tick` every turn, `before_commit` before each transaction is decoded.
    """

    def __init__(self, catalog: Catalog, decoder: ChangeDecoder, interval_s: float = KEY_CHECK_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._catalog = catalog
        self._decoder = decoder
        self._interval_s = interval_s
        self._clock = clock
        self._next = clock() + interval_s
        self._pending: dict[tuple[str, str], Lsn] = {}  # table -> reload for commits after this

    def tick(self) -> None:
        """Query the catalog when the interval has passed (a failure is logged, not raised)."""
        now = self._clock()
        if now < self._next:
            return
        self._next = now + self._interval_s
        try:
            lsn, changed = self._catalog.key_changes()
        except SourceError as exc:
            # Best effort: a source that cannot be read now is read at the next interval (the
            # capture has its own reconnects; a DELETE or key update still shows a new key).
            log.warning("cannot compare the cached keys with the catalog: %s", exc)
            return
        if lsn is None:
            return
        at = Lsn.parse(lsn)
        for table in changed:
            if table not in self._pending:
                log.info("primary key or replica identity of %s.%s changed; changes committed after %s "
                         "use the new one", table[0], table[1], at, extra={"table": f"{table[0]}.{table[1]}"})
                self._pending[table] = at

    def before_commit(self, commit_lsn: Lsn) -> None:
        """Reload the tables whose key change is known to precede `commit_lsn`."""
        if not self._pending:
            return
        for table, at in list(self._pending.items()):
            if commit_lsn > at:
                del self._pending[table]
                self._decoder.reload(*table)
