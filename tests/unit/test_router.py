"""The Router without Kafka: records for an event — partitions, tombstones, the primary-key
split across partitions, truncate fan-out, and one codec per relation version."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.codec import EnvelopeDecoder, MemorySchemaStore, TableCodec
from bridge.codec.codec import Stamp
from bridge.errors import ModifierError
from bridge.events import ChangeEvent, Op, Position, Row
from bridge.lsn import Lsn
from bridge.produce.router import Router, TableCodecLike
from bridge.produce.topics import partition_for
from bridge.relation import Column, Relation

PARTITIONS = 8
LSN = Lsn.parse("16/B374D848")
STAMP = Stamp(LSN.value, 991, 1_763_000_000_000_001, False, 1_763_000_000_000)
ACCOUNTS = Relation("public", "accounts", (
    Column("id", "bigint", "int8", not_null=True),
    Column("name", "text", "text"),
), ("id",), version=1)
NO_KEY = Relation("public", "log", (Column("line", "text", "text"),), (), replica_identity="f")


def event(rel: Relation, op: Op, before: Row | None, after: Row | None, seq: int = 3) -> ChangeEvent:
    return ChangeEvent(relation=rel, op=op, position=Position(LSN, seq), xid=991,
                       commit_ts_us=1_763_000_000_000_001, before=before, after=after)


class World:
    """A Router over real codecs (in-memory schema store) and counted look-ups."""

    def __init__(self, tombstones: bool = True) -> None:
        self.store = MemorySchemaStore()
        self.codecs: list[Relation] = []
        self.topics: list[tuple[str, str]] = []
        self.router = Router(codec_for=self.codec_for, open_topic=self.open_topic, tombstones=tombstones)

    def codec_for(self, rel: Relation) -> TableCodecLike:
        self.codecs.append(rel)
        return TableCodec(rel, self.store, db="app", topic_prefix="t")

    def open_topic(self, schema: str, table: str) -> tuple[str, int]:
        self.topics.append((schema, table))
        return f"t.{schema}.{table}", PARTITIONS

    def decode(self, value: bytes) -> Any:
        return EnvelopeDecoder(self.store).decode(value)


def keys_in_other_partitions(world: World) -> tuple[int, int]:
    """Two ids whose keys land in different partitions."""
    route = world.router.route(ACCOUNTS)
    first = partition_for(route.codec.key((1, None)), PARTITIONS)
    for i in range(2, 100):
        if partition_for(route.codec.key((i, None)), PARTITIONS) != first:
            return 1, i
    raise AssertionError("no two keys in different partitions")


def test_insert_is_one_record_in_its_keys_partition() -> None:
    w = World()
    route, out = w.router.records(event(ACCOUNTS, Op.INSERT, None, (5, "a")), STAMP)
    [(partition, key, value)] = out
    assert route.topic == "t.public.accounts"
    assert partition == partition_for(key, PARTITIONS)
    assert value is not None and w.decode(value).op is Op.INSERT
    assert route.captured[Op.INSERT] == 1


@pytest.mark.parametrize("tombstones", [True, False])
def test_delete_is_followed_by_a_tombstone_when_configured(tombstones: bool) -> None:
    w = World(tombstones)
    _, out = w.router.records(event(ACCOUNTS, Op.DELETE, (5, None), None), STAMP)
    assert out[0][2] is not None and w.decode(out[0][2]).op is Op.DELETE
    if tombstones:
        assert len(out) == 2 and out[1] == (out[0][0], out[0][1], None)
    else:
        assert len(out) == 1


def test_keyless_delete_has_no_tombstone() -> None:
    w = World()
    _, out = w.router.records(event(NO_KEY, Op.DELETE, ("x",), None), STAMP)
    assert [(p, k) for p, k, _ in out] == [(0, None)]


def test_key_change_across_partitions_splits_into_delete_and_create() -> None:
    w = World()
    old, new = keys_in_other_partitions(w)
    _, out = w.router.records(event(ACCOUNTS, Op.UPDATE, (old, "a"), (new, "a")), STAMP)
    assert len(out) == 3
    (p_del, k_del, v_del), tomb, (p_new, k_new, v_new) = out
    assert k_new != k_del
    assert tomb == (p_del, k_del, None)
    assert p_del != p_new
    assert v_del is not None and v_new is not None
    gone, made = w.decode(v_del), w.decode(v_new)
    assert (gone.op, gone.before[0], gone.after) == (Op.DELETE, old, None)
    assert (made.op, made.before, made.after[0]) == (Op.INSERT, None, new)
    assert gone.position == made.position == Position(LSN, 3)


def test_key_change_within_one_partition_stays_an_update() -> None:
    w = World()
    route = w.router.route(ACCOUNTS)
    p1 = partition_for(route.codec.key((1, None)), PARTITIONS)
    same = next(i for i in range(2, 500) if partition_for(route.codec.key((i, None)), PARTITIONS) == p1)
    _, out = w.router.records(event(ACCOUNTS, Op.UPDATE, (1, "a"), (same, "a")), STAMP)
    [(partition, _, value)] = out
    assert partition == p1 and value is not None and w.decode(value).op is Op.UPDATE


def test_truncate_goes_to_every_partition_without_a_key() -> None:
    w = World()
    route, out = w.router.records(event(ACCOUNTS, Op.TRUNCATE, None, None), STAMP)
    assert [p for p, _, _ in out] == list(range(PARTITIONS))
    assert all(k is None for _, k, _ in out)
    assert len({v for _, _, v in out}) == 1
    assert route.captured[Op.TRUNCATE] == 1


def test_snapshot_read_is_one_record_and_not_counted_as_captured() -> None:
    w = World()
    snap = Stamp(LSN.value, 0, None, True, 1)
    route, [(_, _, value)] = w.router.records(event(ACCOUNTS, Op.READ, None, (9, "r")), snap)
    assert value is not None and w.decode(value).op is Op.READ
    assert not any(route.captured.values())


def test_one_codec_per_relation_version() -> None:
    w = World()
    w.router.records(event(ACCOUNTS, Op.INSERT, None, (1, "a")), STAMP)
    w.router.records(event(ACCOUNTS, Op.INSERT, None, (2, "b")), STAMP)
    assert w.codecs == [ACCOUNTS]
    v2 = Relation("public", "accounts", (*ACCOUNTS.columns, Column("n", "integer", "int4")), ("id",), version=2)
    route, _ = w.router.records(event(v2, Op.INSERT, None, (3, "c", 4)), STAMP)
    assert w.codecs == [ACCOUNTS, v2]
    assert route.relation is v2 and w.router.by_topic("t.public.accounts") is not None


def test_an_encoding_error_returns_nothing() -> None:
    class Refusing:
        def key(self, row: Any) -> bytes | None:
            return b"k"

        def envelope(self, *args: Any, **kw: Any) -> bytes:
            raise ModifierError("too long", table="public.accounts")

    router = Router(codec_for=lambda rel: Refusing(), open_topic=lambda s, t: ("t", 1))
    with pytest.raises(ModifierError):
        router.records(event(ACCOUNTS, Op.DELETE, (1, None), None), STAMP)
