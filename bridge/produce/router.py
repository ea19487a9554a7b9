"""The Router: one `ChangeEvent` → the Kafka records that carry it. Pure: no I/O of its own.

Called by the producer for every event (streamed, snapshot and resnapshot alike), after the
decode stage and before the Emitter. Guarantees, per event:
- the codec and destination are looked up once per relation version (a new version after DDL
  gets its own codec, hence its own schemas);
- an insert, update or delete gives one record in the partition of its key (`partition_for`);
  a delete is followed by a tombstone for the same key when `tombstones` is on;
- an update that changes the primary key across partitions gives a delete of the old key in the
  old key's partition (with its tombstone) and a create of the new key in the new one, at the
  same position, so each partition's consumer sees the old key end in order;
- a truncate goes to every partition of the table's topic, with no key;
- every record of the event is encoded before any is returned, so an encoding error (e.g. a
  `ModifierError` for a value wider than the relation allows) leaves nothing half-sent.
Collaborators are given at construction: `codec_for` (may block while a schema registry
refuses the schema: see `bridge.produce.hold`) and `open_topic` (`TopicSet.open`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

from bridge.codec.codec import Stamp
from bridge.events import ChangeEvent, Op, Row
from bridge.produce.topics import partition_for
from bridge.relation import Relation

# Module-level aliases: reading an enum member through its class costs ~80 ns on CPython 3.11,
# a global ~25 ns, and `records` compares the op up to four times per event.
_INSERT, _UPDATE, _DELETE, _READ, _TRUNCATE = Op.INSERT, Op.UPDATE, Op.DELETE, Op.READ, Op.TRUNCATE

Out = tuple[int, bytes | None, bytes | None]
"""One record: (partition, key, value); value None is a tombstone, key None a keyless record."""


class TableCodecLike(Protocol):
    """`bridge.codec.TableCodec`: one relation version's framed Avro key and envelope."""

    def key(self, row: Any) -> bytes | None: ...

    def envelope(self, before: Row | None, after: Row | None, op: str, seq: int, stamp: Stamp,
                 unchanged: tuple[str, ...] = ()) -> bytes: ...


class Route:
    """Where one relation version's records go: its codec, topic and partition count, and the
    counts not yet added to the metrics (added every confirm interval by the producer)."""

    __slots__ = ("captured", "codec", "partitions", "produced", "relation", "topic", "tps")

    def __init__(self, relation: Relation, codec: TableCodecLike, topic: str, partitions: int) -> None:
        self.relation = relation
        self.codec = codec
        self.topic = topic
        self.partitions = partitions
        self.tps = [(topic, p) for p in range(partitions)]
        self.captured: dict[Op, int] = dict.fromkeys(Op, 0)
        self.produced = 0


class Router:
    """Turns events into records; keeps one `Route` per relation version. Not thread-safe."""

    def __init__(self, *, codec_for: Callable[[Relation], TableCodecLike],
                 open_topic: Callable[[str, str], tuple[str, int]], tombstones: bool = True) -> None:
        self._codec_for = codec_for
        self._open_topic = open_topic
        self._tombstones = tombstones
        self._routes: dict[int, Route] = {}  # by id() of the relation version

    def route(self, relation: Relation) -> Route:
        """The relation version's route (its topic is opened and its codec built on first use)."""
        route = self._routes.get(id(relation))
        if route is None or route.relation is not relation:
            topic, partitions = self._open_topic(relation.schema, relation.table)
            route = self._routes[id(relation)] = Route(relation, self._codec_for(relation), topic, partitions)
        return route

    def routes(self) -> Iterable[Route]:
        return self._routes.values()

    def by_topic(self, topic: str) -> Route | None:
        """A route writing `topic` (for naming the table in a delivery error), or None."""
        for route in self._routes.values():
            if route.topic == topic:
                return route
        return None

    def key(self, route: Route, row: Row) -> bytes | None:
        """The framed key of `row` (the snapshot uses it to skip rows already delivered)."""
        return route.codec.key(row)

    def records(self, event: ChangeEvent, stamp: Stamp) -> tuple[Route, list[Out]]:
        """The records of `event`, all encoded, in the order they must be sent.

        `stamp` is the transaction's (or snapshot chunk's) encoded `source` block and `ts_ms`.
        Raises what the codec raises (`ModifierError`, `CodecError`)."""
        relation = event.relation
        route = self._routes.get(id(relation))
        if route is None or route.relation is not relation:
            route = self.route(relation)
        op, before, after, seq = event.op, event.before, event.after, event.position.seq
        codec, n = route.codec, route.partitions
        if op is _READ:
            key = codec.key(after)
            return route, [(partition_for(key, n), key, codec.envelope(None, after, op, seq, stamp))]
        route.captured[op] += 1
        if op is _TRUNCATE:
            value = codec.envelope(None, None, op, seq, stamp)
            return route, [(p, None, value) for p in range(n)]
        key = codec.key(after if after is not None else before)
        partition = partition_for(key, n)
        out: list[Out] = []
        if op is _UPDATE and before is not None and after is not None and relation.primary_key:
            old_key = codec.key(before)
            old_partition = partition_for(old_key, n)
            if old_key != key and old_partition != partition:
                # A primary-key change across partitions: the old key's earlier changes are in
                # its own partition, so its end must be there too, in order — a delete of the old
                # key there and a create of the new key here (same position, one per partition).
                out += self._keyed(_DELETE, old_partition, old_key, codec.envelope(before, None, _DELETE, seq, stamp))
                op, before = _INSERT, None
        out += self._keyed(op, partition, key, codec.envelope(before, after, op, seq, stamp, event.unchanged))
        return route, out


    def encoded(self, relation: Relation, op: Op, key: bytes | None, value: bytes,
                key_hash: int) -> tuple[Route, list[Out]]:
        """The records of a change the native core encoded whole (`produce.decode.Encoded`: an
        INSERT, an UPDATE that keeps its key, or a DELETE): its partition (`key_hash`, the
        core's `partition_for` before the modulo), and the tombstone after a delete."""
        route = self._routes.get(id(relation))
        if route is None or route.relation is not relation:
            route = self.route(relation)
        route.captured[op] += 1
        n = route.partitions
        return route, self._keyed(op, 0 if key is None or n == 1 else key_hash % n, key, value)

    def _keyed(self, op: Op, partition: int, key: bytes | None, value: bytes) -> list[Out]:
        """One change's record, then its key's tombstone after a delete (`tombstones` on)."""
        if op is _DELETE and self._tombstones and key is not None:
            return [(partition, key, value), (partition, key, None)]
        return [(partition, key, value)]


__all__ = ["Out", "Route", "Router", "TableCodecLike"]
