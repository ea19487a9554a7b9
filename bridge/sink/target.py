"""Target tables: create, evolve and validate them, and build each table version's SQL once.

`TargetTables.plan(conn, relation)` is called for each relation version a batch touches. The first
call for a version reads the target catalog, creates the table or adds/widens columns, checks that
the target can hold the data, and builds a `TablePlan`: the staging DDL, the COPY statement, the
binary row encoder and the apply statements. Later calls return the cached plan.

Guarantees: the target table can hold the relation's data once a plan exists (else
`TargetSchemaError`, naming table and column); DDL runs inside the caller's transaction, so a
rolled-back batch leaves no half-made table; a DDL race lost to another sink member (the same
`CREATE TABLE IF NOT EXISTS` / `ADD COLUMN` at the same moment) is read again, never reported
as a table the target refuses (which would dead-letter its records).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from bridge import failures
from bridge.errors import TargetSchemaError
from bridge.relation import Column, Relation

# native sink path (issue 16): the Rust COPY encoder for decoded rows; BRIDGE_NATIVE=0 = stage.row_encoder
from bridge.sink.native_stage import row_encoder
from bridge.sink.stage import Encoder, column_code, is_array, staging_type, wire_for
from bridge.sink.statements import COLUMNS_SQL, PRIMARY_KEY_SQL, UNIQUE_SQL, run
from bridge.sink.types import candidates

log = logging.getLogger(__name__)

MAX_COLUMNS = 1600  # PostgreSQL's limit on a table's columns (MaxHeapAttributeNumber)
_META_COLUMNS = 4  # m_lsn, m_seq, m_op, m_aux
_INT_RANK = {"int2": 1, "int4": 2, "int8": 3}
_FLOAT_RANK = {"float4": 1, "float8": 2}
_STRINGS = frozenset({"text", "varchar", "bpchar", "citext"})
# Types without an equality operator: rows are matched on their text.
_NO_EQUALITY = frozenset({"json", "xml", "point", "line", "lseg", "box", "path", "polygon", "circle"})


def qi(name: str) -> str:
    """Quote an identifier for a statement executed with parameters (`%` doubled)."""
    return '"' + name.replace('"', '""').replace("%", "%%") + '"'


_PlanKey = tuple[str, str, int, tuple[Column, ...], tuple[str, ...], str]


@dataclass(frozen=True, slots=True)
class TargetColumn:
    """A column of the target table as its catalog describes it."""

    name: str
    type_sql: str  # format_type(atttypid, atttypmod)
    scalar: str  # typname of the type, or of the element type for arrays
    category: str  # typcategory of that scalar
    typmod: int
    array: bool


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _regname(schema: str, table: str) -> str:
    """`"schema"."table"` for `to_regclass` and COPY (no parameters: no `%` doubling)."""
    return _quote(schema) + "." + _quote(table)


def _t(type_sql: str) -> str:
    """A type spelling inside a statement executed with parameters (`%` doubled)."""
    return type_sql.replace("%", "%%")


def _default(conn: psycopg.Connection[Any], col: Column, type_sql: str) -> str:
    """` DEFAULT '<value>'::<type>` for a column whose older source rows read a value no WAL
    carried (`Column.missing`, after `ADD COLUMN … DEFAULT`), else "". The target keeps it as the
    column's default, so rows applied later from records written before the column existed (other
    partitions may still hold some) get it too, as in the source. `%` doubled, as in `_t`."""
    if col.missing is None:
        return ""
    literal = psycopg.sql.Literal(col.missing).as_string(conn).replace("%", "%%")
    return f" DEFAULT {literal}::{_t(type_sql)}"


def _numeric_mod(typmod: int) -> tuple[int, int] | None:
    if typmod < 4:
        return None
    m = typmod - 4
    return (m >> 16) & 0xFFFF, m & 0xFFFF


@dataclass(slots=True)
class TablePlan:
    """Everything the apply needs for one relation version, built once.

    Keyed plans stage `(meta, c0..cn)`; keyless plans stage `(meta, c0..cn, b0..bn)` where `c`
    holds `after` and `b` holds `before`. Meta is `(lsn, seq, op, aux)`.
    """

    relation: Relation
    target: str
    staging: str
    staging_ddl: str
    copy_sql: str
    encoder: Encoder
    key_index: tuple[int, ...]
    casts: tuple[str, ...]  # per relation column: the SELECT expression over staging row `r`
    column_sql: tuple[str, ...]  # quoted target column names, relation order
    truncate_sql: str
    # keyed: a COPY straight into the target for insert-only segments, when every column's
    # binary form is what the target column reads (else None)
    direct_copy_sql: str | None = None
    direct_encoder: Encoder | None = None
    upsert_unique: str = ""
    upsert_dedup: str = ""
    upsert_unique_del: str = ""
    upsert_dedup_del: str = ""
    masked: dict[tuple[frozenset[int], bool], str] = field(default_factory=dict)
    # keyless
    insert_range: str = ""
    update_one: str = ""
    delete_one: str = ""

    @property
    def keyed(self) -> bool:
        return bool(self.key_index)

    def masked_sql(self, unchanged: frozenset[int], dedup: bool) -> str:
        """The upsert for rows whose `unchanged` columns keep the target's value (aux = %s)."""
        k = (unchanged, dedup)
        stmt = self.masked.get(k)
        if stmt is None:
            keep = [i for i in range(len(self.casts)) if i not in unchanged]
            stmt = self.masked[k] = self._upsert(keep, dedup, deletes=False, aux="%s")
        return stmt

    def _upsert(self, keep: Sequence[int], dedup: bool, *, deletes: bool, aux: str) -> str:
        keys = [self.column_sql[i] for i in self.key_index]
        parts: list[str] = []
        if dedup:
            kc = ", ".join(f"c{i}" for i in self.key_index)
            parts.append(f"r AS (SELECT DISTINCT ON ({kc}) * FROM {self.staging}"
                         f" ORDER BY {kc}, m_lsn DESC, m_seq DESC)")
            src = "r"
        else:
            src = self.staging
        if deletes:
            match = " AND ".join(f"t.{self.column_sql[i]} = {self.casts[i]}" for i in self.key_index)
            parts.append(f"d AS (DELETE FROM {self.target} t USING {src} r WHERE r.m_op = 'd' AND {match})")
        with_ = ("WITH " + ", ".join(parts) + " ") if parts else ""
        cols = ", ".join(self.column_sql[i] for i in keep)
        exprs = ", ".join(self.casts[i] for i in keep)
        sets = ", ".join(f"{self.column_sql[i]} = EXCLUDED.{self.column_sql[i]}"
                         for i in keep if i not in self.key_index)
        action = f"DO UPDATE SET {sets}" if sets else "DO NOTHING"
        return (f"{with_}INSERT INTO {self.target} AS t ({cols}) SELECT {exprs} FROM {src} r"
                f" WHERE r.m_op <> 'd' AND r.m_aux = {aux} ON CONFLICT ({', '.join(keys)}) {action}")


class TargetTables:
    """Creates and evolves target tables and caches a `TablePlan` per relation version.

    Not thread-safe; one instance per target connection. Call `forget()` after a rolled-back
    transaction: the DDL it ran may have been undone.
    """

    def __init__(self) -> None:
        self._plans: dict[_PlanKey, TablePlan] = {}
        # Staging names outlive `forget()`: a temp table created by a committed transaction is
        # reused (CREATE ... IF NOT EXISTS) instead of piling up after every rollback.
        self._names: dict[_PlanKey, str] = {}

    def forget(self) -> None:
        """Drop every cached plan (after a rollback, or when the target changed behind our back)."""
        self._plans.clear()

    def plan(self, conn: psycopg.Connection[Any], relation: Relation) -> TablePlan:
        """The plan for `relation`, creating or evolving the target table on first use.

        Runs inside the caller's transaction. Raises `TargetSchemaError` (naming table and column)
        when the target table cannot hold the relation's data.
        """
        key = (relation.schema, relation.table, relation.version, relation.columns,
               relation.primary_key, relation.replica_identity)
        found = self._plans.get(key)
        if found is not None:
            return found
        self.check_width(relation)
        try:
            with conn.transaction():  # a savepoint, so that a lost race (below) leaves the batch usable
                target_cols = self._ensure(conn, relation)
        except psycopg.Error as exc:
            if not failures.lost_ddl_race(exc.sqlstate):
                raise
            # Another sink member (it owns other partitions of the topic) ran the same DDL at the
            # same moment and committed first; ours waited for it and then failed. Not a table the
            # target refuses (that would dead-letter the records): look again at what it made.
            log.info("target table %s was changed by another sink member meanwhile (%s); reading it again",
                     relation.qualified, exc.sqlstate)
            target_cols = self._ensure(conn, relation)
        name = self._names.get(key)
        if name is None:
            name = self._names[key] = f"bridge_stg_{len(self._names) + 1}"
        p = self._build(relation, target_cols, name)
        self._plans[key] = p
        return p

    # -- DDL ------------------------------------------------------------------------------------

    def _desired_types(self, conn: psycopg.Connection[Any], relation: Relation) -> list[str]:
        """Per column, the first of `types.candidates` the target knows (its own type when the
        target has one of that name, else the built-in one, else text). Every candidate is
        composed by `bridge.sink.types` from validated parts; the lookup passes it as a parameter."""
        options = [candidates(c, array=is_array(c)) for c in relation.columns]
        flat = [t for opts in options for t in opts]
        rows = conn.execute("SELECT to_regtype(x) IS NOT NULL FROM unnest(%s::text[]) WITH ORDINALITY u(x, n) ORDER BY n",
                            (flat,)).fetchall()
        known = iter(r[0] for r in rows)
        out: list[str] = []
        for col, opts in zip(relation.columns, options, strict=True):
            found = [t for t in opts if next(known)]
            out.append(found[0] if found else "text")
            if len(opts) > 1 and out[-1] != opts[0]:
                log.info("type %s of %s.%s not in the target; using %s", col.type_name, relation.qualified, col.name, out[-1])
        return out

    def _ensure(self, conn: psycopg.Connection[Any], relation: Relation) -> dict[str, TargetColumn]:
        schema, table = relation.schema, relation.table
        target = f"{qi(schema)}.{qi(table)}"
        row = conn.execute("SELECT to_regclass(%s)::oid", (_regname(schema, table),)).fetchone()
        oid = row[0] if row else None
        desired = self._desired_types(conn, relation)
        if oid is None:
            defs = [f"{qi(c.name)} {_t(t)}{_default(conn, c, t)}" for c, t in zip(relation.columns, desired, strict=True)]
            if relation.primary_key:
                defs.append(f"PRIMARY KEY ({', '.join(qi(k) for k in relation.primary_key)})")
            run(conn, f"CREATE SCHEMA IF NOT EXISTS {qi(schema)}")
            run(conn, f"CREATE TABLE IF NOT EXISTS {target} ({', '.join(defs)})")
            log.info("created target table %s", relation.qualified)
            row = conn.execute("SELECT to_regclass(%s)::oid", (_regname(schema, table),)).fetchone()
            oid = row[0] if row else None
        cols = self._read_columns(conn, oid)
        changed = False
        for col, want in zip(relation.columns, desired, strict=True):
            have = cols.get(col.name)
            if have is None:
                run(conn, f"ALTER TABLE {target} ADD COLUMN {qi(col.name)} {_t(want)}{_default(conn, col, want)}")
                log.info("added column %s to target table %s", col.name, relation.qualified)
                changed = True
                continue
            widen = _judge(relation, col, have, want)
            if widen is not None:
                run(conn, f"ALTER TABLE {target} ALTER COLUMN {qi(col.name)} TYPE {_t(widen)}")
                log.info("widened %s.%s from %s to %s", relation.qualified, col.name, have.type_sql, widen)
                changed = True
        if changed:
            cols = self._read_columns(conn, oid)
        if relation.primary_key:
            want_key = set(relation.primary_key)
            uniques = [set(r[0]) for r in conn.execute(UNIQUE_SQL, (oid,)).fetchall()]
            if want_key not in uniques:
                self._follow_key(conn, relation, target, oid)
        return cols

    @staticmethod
    def _follow_key(conn: psycopg.Connection[Any], relation: Relation, target: str, oid: int | None) -> None:
        """The source's primary key is not a unique key of the target: the key was changed on the
        source while streaming (`DROP CONSTRAINT …, ADD PRIMARY KEY (…)`), or the target table was
        made by hand. Mirror the source: the target's primary key becomes the source's, which the
        upsert's ON CONFLICT needs (other unique indexes of the target stay). If the target's rows
        repeat the new key, or hold NULL in it, PostgreSQL refuses and the apply rejects the
        table's records (`TableRejectedError`) naming why."""
        row = conn.execute(PRIMARY_KEY_SQL, (oid,)).fetchone()
        cols = ", ".join(qi(k) for k in relation.primary_key)
        drop = f"DROP CONSTRAINT {qi(row[0])}, " if row is not None else ""
        run(conn, f"ALTER TABLE {target} {drop}ADD PRIMARY KEY ({cols})")
        log.warning("target table %s: primary key %s replaced by the source's (%s)", relation.qualified,
                    f"({', '.join(row[1])})" if row is not None else "(none)", ", ".join(relation.primary_key))

    @staticmethod
    def _read_columns(conn: psycopg.Connection[Any], oid: int | None) -> dict[str, TargetColumn]:
        rows = conn.execute(COLUMNS_SQL, (oid,)).fetchall()
        return {r[0]: TargetColumn(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows}

    # -- SQL ------------------------------------------------------------------------------------

    @staticmethod
    def check_width(relation: Relation) -> None:
        """Raise `TargetSchemaError` when the staging table would exceed PostgreSQL's 1,600
        columns: 4 meta columns plus one per column, twice for a table without a key (its rows
        are matched on the whole old row). Called before any DDL for the relation."""
        n = len(relation.columns)
        width = _META_COLUMNS + (n if relation.primary_key else 2 * n)
        if width > MAX_COLUMNS:
            remedy = ("add a primary key to the source table (ALTER TABLE … ADD PRIMARY KEY …)"
                      if not relation.primary_key else "split the table")
            raise TargetSchemaError(
                f"table {relation.qualified} has {n} columns: its staging table would need {width}, over "
                f"PostgreSQL's {MAX_COLUMNS}; {remedy}", table=relation.qualified)

    def _build(self, relation: Relation, tcols: dict[str, TargetColumn], staging: str) -> TablePlan:
        target = f"{qi(relation.schema)}.{qi(relation.table)}"
        keyed = bool(relation.primary_key)
        casts: list[str] = []
        for i, col in enumerate(relation.columns):
            casts.append(_cast(f"r.c{i}", col, tcols[col.name]))
        meta = "m_lsn pg_lsn, m_seq bigint, m_op \"char\", m_aux integer"
        defs = [f"c{i} {staging_type(c)}" for i, c in enumerate(relation.columns)]
        enc_cols: list[Column] = list(relation.columns)
        if not keyed:
            defs += [f"b{i} {staging_type(c)}" for i, c in enumerate(relation.columns)]
            enc_cols += list(relation.columns)
        ddl = f"CREATE TEMP TABLE IF NOT EXISTS {staging} ({meta}, {', '.join(defs)})"
        column_sql = tuple(qi(c.name) for c in relation.columns)
        p = TablePlan(
            relation=relation, target=target, staging=staging, staging_ddl=ddl,
            copy_sql=f"COPY {staging} FROM STDIN (FORMAT BINARY)", encoder=row_encoder(enc_cols),
            key_index=tuple(relation.index[k] for k in relation.primary_key), casts=tuple(casts),
            column_sql=column_sql, truncate_sql=f"TRUNCATE {target}",
        )
        every = range(len(casts))
        if keyed:
            codes = [_direct_code(c, tcols[c.name]) for c in relation.columns]
            if all(code is not None for code in codes):
                # COPY runs without parameters: identifiers without `%` doubling
                p.direct_copy_sql = (f"COPY {_regname(relation.schema, relation.table)}"
                                     f" ({', '.join(_quote(c.name) for c in relation.columns)}) FROM STDIN (FORMAT BINARY)")
                p.direct_encoder = row_encoder(relation.columns, [c for c in codes if c is not None], meta=False)
            p.upsert_unique = p._upsert(every, False, deletes=False, aux="0")
            p.upsert_dedup = p._upsert(every, True, deletes=False, aux="0")
            p.upsert_unique_del = p._upsert(every, False, deletes=True, aux="0")
            p.upsert_dedup_del = p._upsert(every, True, deletes=True, aux="0")
        else:
            cols = ", ".join(column_sql)
            exprs = ", ".join(casts)
            match = " AND ".join(_match(f"t2.{column_sql[i]}", f"r.b{i}", c, tcols[c.name])
                                 for i, c in enumerate(relation.columns))
            one = f"(SELECT t2.ctid FROM {target} t2 WHERE {match} LIMIT 1)"
            p.insert_range = (f"INSERT INTO {target} ({cols}) SELECT {exprs} FROM {staging} r"
                              f" WHERE r.m_aux BETWEEN %s AND %s ORDER BY r.m_aux")
            sets = ", ".join(f"{column_sql[i]} = {casts[i]}" for i in every)
            p.update_one = f"UPDATE {target} t SET {sets} FROM {staging} r WHERE r.m_aux = %s AND t.ctid = {one}"
            p.delete_one = f"DELETE FROM {target} t USING {staging} r WHERE r.m_aux = %s AND t.ctid = {one}"
        return p


_WIRE_TYPNAME = {
    "smallint": "int2", "integer": "int4", "bigint": "int8", "real": "float4", "double precision": "float8",
    "boolean": "bool", "bytea": "bytea", "date": "date", "time without time zone": "time",
    "timestamp without time zone": "timestamp", "timestamp with time zone": "timestamptz", "text": "text",
}
_TEXT_RECV = frozenset({"text", "varchar", "bpchar", "json"})  # binary input = the text


def _direct_code(col: Column, tcol: TargetColumn) -> str | None:
    """The wire code to COPY `col` straight into `tcol` in binary, or None when they differ."""
    code = column_code(col)
    wire = wire_for(col)
    wname = _WIRE_TYPNAME[wire.sql]
    if code == "array":
        return code if tcol.array and tcol.scalar == wname else None
    if tcol.array:
        return None
    if wire.code != "text":
        return code if tcol.scalar == wname else None
    if col.kind == "b" and col.base in ("numeric", "jsonb", "uuid"):
        return col.base if tcol.scalar == col.base else None
    if tcol.scalar in _TEXT_RECV or (tcol.category == "E" and col.kind == "e" and tcol.scalar == col.base):
        return code
    return None


def _cast(expr: str, col: Column, tcol: TargetColumn) -> str:
    """`expr` (a staging column) as a value for `tcol`: no cast into string columns (assignment
    casts then refuse over-long text instead of truncating it), none when types agree."""
    if tcol.category == "S" and not tcol.array:
        return expr
    if tcol.category == "S" and tcol.array and staging_type(col) == "text[]":
        return expr
    if staging_type(col) == tcol.type_sql:
        return expr
    return f"{expr}::{_t(tcol.type_sql)}"


def _match(tgt: str, stg: str, col: Column, tcol: TargetColumn) -> str:
    if tcol.scalar in _NO_EQUALITY:
        return f"{tgt}::text IS NOT DISTINCT FROM {_cast(stg, col, tcol)}::text"
    return f"{tgt} IS NOT DISTINCT FROM {_cast(stg, col, tcol)}"


def _judge(relation: Relation, col: Column, have: TargetColumn, want: str) -> str | None:
    """Whether target column `have` can hold `col`: `None` if so, the type to widen it to if the
    source widened, else raise `TargetSchemaError`."""
    if have.category == "S" and not have.array and have.typmod < 0 and have.scalar in _STRINGS:
        return None  # unbounded text holds anything
    src_array = is_array(col)
    tb = have.scalar
    sb = col.base if col.kind == "b" else col.type_name.removesuffix("[]" * max(col.ndims, 0))

    def bad() -> TargetSchemaError:
        return TargetSchemaError(
            f"target column {relation.qualified}.{col.name} is {have.type_sql}, cannot hold {col.type_name}",
            table=relation.qualified, column=col.name)

    if src_array != have.array:
        raise bad()
    if sb in _INT_RANK:
        if tb in _INT_RANK:
            return want if _INT_RANK[tb] < _INT_RANK[sb] else None
        if tb == "numeric" and _numeric_mod(have.typmod) is None:
            return None
        raise bad()
    if sb in _FLOAT_RANK:
        if tb in _FLOAT_RANK:
            return want if _FLOAT_RANK[tb] < _FLOAT_RANK[sb] else None
        raise bad()
    if sb == "numeric":
        if tb != "numeric":
            raise bad()
        tm = _numeric_mod(have.typmod)
        if tm is None:
            return None
        if col.precision is None:
            return "numeric" + ("[]" if src_array else "")
        p, s = col.precision, col.scale or 0
        tp, ts = tm
        if ts >= s and tp - ts >= p - s:
            return None
        ns = max(s, ts)
        return f"numeric({max(p - s, tp - ts) + ns},{ns})" + ("[]" if src_array else "")
    if sb in _STRINGS:
        if tb not in _STRINGS:
            raise bad()
        tlen = have.typmod - 4 if have.typmod >= 4 else None
        if tlen is None:
            return None
        if col.length is not None and col.length <= tlen:
            return None
        return want
    if tb == sb or have.type_sql == col.type_name or tb == col.base:
        return None
    raise bad()
