"""Admission: which table a consumed record may write. The topic decides, not the schema.

A record's schema names a table (`pg.schema`, `pg.table`), but whoever can write a topic can
write any schema into it. So the sink writes a record's table only when

1. the record's topic is the topic the contract's naming rule gives that table
   (`topic_name(prefix, schema, table)`): a record in `<prefix>.public.orders` writes
   `public.orders` or nothing;
2. the table is one this sink may write (`sink.tables` patterns; empty: every table whose topic
   it consumes); and
3. the table is not the sink's own state (`sink.state_schema`) nor a system schema.

A record that fails any of these raises `ForbiddenTableError`; the loop sends it to the
dead-letter topic. Decisions are cached per (topic, relation), so this costs a dict lookup per
record.
"""

from __future__ import annotations

from collections.abc import Sequence

from bridge.codec.names import topic_name
from bridge.errors import SchemaError, SinkError
from bridge.relation import Relation
from bridge.tables import TableFilter

_CACHE_MAX = 100_000


class ForbiddenTableError(SinkError):
    """A record names a table its topic does not belong to, or one this sink must not write."""


def is_system_schema(schema: str) -> bool:
    """PostgreSQL's own schemas (`pg_catalog`, `pg_toast`, `pg_temp_3`, `information_schema`)."""
    return schema.startswith("pg_") or schema == "information_schema"


class Admission:
    def __init__(self, topic_prefix: str, state_schema: str, tables: Sequence[str] = ()) -> None:
        self.prefix = topic_prefix
        self.state_schema = state_schema
        self._allowed = TableFilter(tables) if tables else None
        self._seen: dict[tuple[str, int], Relation] = {}  # (topic, id(relation)) -> relation, admitted

    def check(self, topic: str, relation: Relation) -> None:
        """Raise `ForbiddenTableError` unless a record of `topic` may write `relation`'s table."""
        key = (topic, id(relation))
        if self._seen.get(key) is relation:
            return
        self._decide(topic, relation)
        if len(self._seen) >= _CACHE_MAX:
            self._seen.clear()
        self._seen[key] = relation

    def _decide(self, topic: str, rel: Relation) -> None:
        name = rel.qualified
        if rel.schema == self.state_schema:
            raise ForbiddenTableError(f"record names table {name} in the sink's own state schema", topic=topic,
                                      table=name)
        if is_system_schema(rel.schema):
            raise ForbiddenTableError(f"record names table {name} in a system schema", topic=topic, table=name)
        try:
            own = topic_name(self.prefix, rel.schema, rel.table)
        except SchemaError as exc:
            raise ForbiddenTableError(f"record names table {name}, which has no topic", topic=topic,
                                      table=name) from exc
        if own != topic:
            raise ForbiddenTableError(f"record names table {name}, whose topic is {own}, not this one",
                                      topic=topic, table=name)
        if self._allowed is not None and not self._allowed(rel.schema, rel.table):
            raise ForbiddenTableError(f"table {name} is not in sink.tables", topic=topic, table=name)
