"""What a change is about: a table's columns, key and identity, as read once from the catalog.

These descriptors are shared by every stage: the source builds converters from them, the codec
builds Avro schemas from them, the sink maps them back to target DDL.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a relation.

    `type_name` is PostgreSQL's own rendering with modifiers (`format_type(atttypid, atttypmod)`:
    `numeric(12,2)`, `character varying(20)`, `integer[]`). `base` is the `pg_type.typname` of the
    scalar type after resolving domains and array element types (`int4`, `numeric`, `timestamptz`,
    ...); `kind` is `pg_type.typtype` of that scalar (`b` base, `e` enum, `r` range, `c` composite,
    `m` multirange, `p` pseudo). `ndims` is 0 for scalars, else the array nesting depth.
    """

    name: str
    type_name: str
    base: str
    kind: str = "b"
    ndims: int = 0
    not_null: bool = False
    precision: int | None = None  # numeric(p,s); None when unconstrained
    scale: int | None = None
    length: int | None = None  # varchar(n), char(n), bit(n)
    type_oid: int = 0
    # The value (as text) that rows which existed before an `ADD COLUMN … DEFAULT` read for this
    # column without any WAL saying so (`pg_attribute.attmissingval`); None when there is none.
    missing: str | None = None


@dataclass(frozen=True, slots=True)
class Relation:
    """A version of a table. `version` grows each time the column list changes (DDL)."""

    schema: str
    table: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...] = ()
    replica_identity: str = "d"  # d default, f full, n nothing, i index
    oid: int = 0
    version: int = 1
    index: dict[str, int] = field(default_factory=dict, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        self.index.update({c.name: i for i, c in enumerate(self.columns)})

    @property
    def qualified(self) -> str:
        """`schema.table` as written in config patterns and logs (not quoted)."""
        return f"{self.schema}.{self.table}"

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> Column:
        return self.columns[self.index[name]]
