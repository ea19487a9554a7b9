"""The native sink path end to end through `Applier`, against a real PostgreSQL: the same
records, framed and encoded by the producer's codec, decoded natively and by the reference,
applied to two targets; the targets must hold the same rows and the same records must be
dead-lettered. Covers the direct COPY of inserts, staging + upsert, key changes, deletes,
unchanged TOAST columns, a truncate barrier inside a batch, replays skipped by position, a
keyless table matched on the whole row, and a single bad record isolated."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import psycopg
import pytest

from bridge.codec import EnvelopeDecoder, MemorySchemaStore, TableCodec
from bridge.events import ChangeEvent, Op, Position
from bridge.lsn import Lsn
from bridge.relation import Column, Relation
from bridge.sink import native_stage
from bridge.sink.apply import Applier
from bridge.sink.records import SinkRecord

ORDERS = Relation("public", "orders", (
    Column("id", "bigint", "int8", not_null=True),
    Column("qty", "smallint", "int2"),
    Column("amount", "numeric(12,2)", "numeric", precision=12, scale=2),
    Column("big", "text", "text"),
    Column("tags", "integer[]", "int4", ndims=1),
    Column("at", "timestamp with time zone", "timestamptz"),
    Column("u", "uuid", "uuid"),
    Column("doc", "jsonb", "jsonb"),
), primary_key=("id",), replica_identity="d")
# the same row layout with a wider qty: its bodies, framed as ORDERS, forge an out-of-range smallint
WIDE = Relation("public", "orders", tuple(Column(c.name, "bigint", "int8") if c.name == "qty" else c
                                          for c in ORDERS.columns), primary_key=("id",))
EVENTS = Relation("public", "events", (
    Column("kind", "text", "text"), Column("n", "integer", "int4"), Column("v", "numeric", "numeric"),
), primary_key=(), replica_identity="f")

TOPIC_O, TOPIC_E = "bridge.public.orders", "bridge.public.events"


def row(i: int, qty: int = 1, big: str | None = None) -> tuple[Any, ...]:
    return (i, qty, Decimal(i).scaleb(-2), big if big is not None else "x" * (i % 7), [i, None, -i],
            1_700_000_000_000_000 + i, f"00000000-0000-4000-8000-{i:012d}", f'{{"i": {i}}}')


def toasted(i: int, qty: int) -> tuple[Any, ...]:
    """An update's row whose `big` column was unchanged TOAST (not sent)."""
    r = list(row(i, qty=qty))
    r[3] = None
    return tuple(r)


class Feed:
    """Framed records with increasing positions, as the producer writes them."""

    def __init__(self) -> None:
        self.store = MemorySchemaStore()
        self.codecs = {rel.table: TableCodec(rel, self.store, db="d", topic_prefix="bridge") for rel in (ORDERS, EVENTS)}
        self.wide = TableCodec(WIDE, self.store, db="d", topic_prefix="bridge")
        self.lsn, self.seq = 1000, 0
        self.offsets = {TOPIC_O: 0, TOPIC_E: 0}
        self.values: list[tuple[str, int, bytes]] = []
        self.marks: dict[str, int] = {}  # name -> index into values

    def add(self, rel: Relation, op: Op, before: tuple[Any, ...] | None, after: tuple[Any, ...] | None,
            unchanged: tuple[str, ...] = (), *, forge_wide: bool = False) -> None:
        self.seq += 1
        if self.seq == 20:
            self.lsn, self.seq = self.lsn + 1, 0
        ev = ChangeEvent(rel, op, Position(Lsn(self.lsn), self.seq), 7, 1_700_000_000_000_000, before, after,
                         unchanged=unchanged)
        topic = TOPIC_O if rel is ORDERS else TOPIC_E
        if forge_wide:
            body = self.wide.value(ChangeEvent(WIDE, op, ev.position, 7, None, before, after))
            value = self.codecs["orders"].value_prefix + body[len(self.wide.value_prefix):]
        else:
            value = self.codecs[rel.table].value(ev)
        self.values.append((topic, self.offsets[topic], value))
        self.offsets[topic] += 1


def batches(feed: Feed) -> list[list[int]]:
    """Index ranges of feed.values per batch: inserts; changes; the truncate and after; replays."""
    t, n = feed.marks["truncate"], len(feed.values)
    return [list(range(0, 60)), list(range(60, t)), list(range(t, n)), list(range(30, t))]


def build() -> Feed:
    f = Feed()
    for i in range(1, 51):
        f.add(ORDERS, Op.INSERT, None, row(i))  # 50 inserts: the direct COPY
    for i in range(1, 6):
        f.add(EVENTS, Op.INSERT, None, ("k", i, "1.50" if i % 2 else "NaN"))
    f.add(EVENTS, Op.UPDATE, ("k", 2, "NaN"), ("k2", 20, "2.0"))
    f.add(EVENTS, Op.DELETE, ("k", 3, "1.50"), None)
    f.add(EVENTS, Op.INSERT, None, ("k", 3, "1.50"))
    f.add(ORDERS, Op.INSERT, None, row(51))
    f.add(ORDERS, Op.UPDATE, row(1), row(1, qty=5, big="changed"))  # 60 records so far
    f.add(ORDERS, Op.UPDATE, None, toasted(2, 9), unchanged=("big",))
    f.add(ORDERS, Op.UPDATE, row(3), row(103))  # a key change
    f.add(ORDERS, Op.DELETE, (4, *(None,) * 7), None)
    f.add(ORDERS, Op.UPDATE, None, row(5, qty=2))
    f.add(ORDERS, Op.UPDATE, None, row(5, qty=3))  # the last event of the key wins
    f.marks["forged"] = f.offsets[TOPIC_O]
    f.add(ORDERS, Op.INSERT, None, row(200, qty=40_000), forge_wide=True)  # out of smallint range: dead letter
    f.add(ORDERS, Op.UPDATE, None, toasted(6, 2), unchanged=("big",))
    f.marks["truncate"] = len(f.values)
    f.add(ORDERS, Op.TRUNCATE, None, None)
    for i in range(300, 320):
        f.add(ORDERS, Op.INSERT, None, row(i))
    f.add(ORDERS, Op.UPDATE, None, toasted(301, 7), unchanged=("big",))
    f.add(EVENTS, Op.UPDATE, ("k", 5, "1.50"), ("k", 5, "-7.25"))
    return f


def apply_all(dsn: str, feed: Feed, decoder: EnvelopeDecoder
              ) -> tuple[list[tuple[str, int]], list[dict[str, list[tuple[Any, ...]]]]]:
    """Apply the batches; the dead letters and the target's rows after each batch."""
    applier = Applier(dsn)
    dead: list[tuple[str, int]] = []
    states = []
    try:
        for idx in batches(feed):
            recs = [SinkRecord(t, 0, o, decoder.decode(v)) for t, o, v in (feed.values[i] for i in idx)]
            _, rejects = applier.apply_isolating(recs)
            dead += [(r.topic, r.offset) for r, _ in rejects]
            states.append(contents(dsn))
    finally:
        applier.close()
    return dead, states


def contents(dsn: str) -> dict[str, list[tuple[Any, ...]]]:
    with psycopg.connect(dsn) as c:
        return {t: c.execute(f"SELECT * FROM public.{t} ORDER BY 1, 2").fetchall() for t in ("orders", "events")}


def test_native_and_reference_paths_leave_the_same_target(pg: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    feed = build()
    native_dsn, ref_dsn = pg.create_database("nat"), pg.create_database("ref")

    native_decoder = native_stage.envelope_decoder(feed.store)
    assert isinstance(native_decoder, native_stage.NativeEnvelopeDecoder)
    dead_native, got = apply_all(native_dsn, feed, native_decoder)

    monkeypatch.setenv("BRIDGE_NATIVE", "0")  # the reference decoder and encoders (plans built per Applier)
    dead_ref, want = apply_all(ref_dsn, feed, native_stage.envelope_decoder(feed.store))

    assert dead_native == dead_ref == [(TOPIC_O, feed.marks["forged"])]
    norm = [{t: [tuple(map(repr, r)) for r in rows] for t, rows in state.items()} for state in (*got, *want)]
    assert norm[:len(got)] == norm[len(got):]  # after every batch (repr: NaN equals NaN)
    changed = {r[0]: r for r in got[1]["orders"]}
    assert sorted(changed) == [1, 2, *range(5, 52), 103]  # 3 became 103; 4 deleted; no 200
    assert changed[1][1:4] == (5, Decimal("0.01"), "changed")
    assert changed[2][1] == 9 and changed[2][3] == "x" * 2  # unchanged TOAST column kept
    assert changed[5][1] == 3  # the last event of the key
    assert changed[103][4] == [103, None, -103]
    orders = {r[0]: r for r in got[2]["orders"]}
    assert sorted(orders) == list(range(300, 320))  # the truncate cleared what came before it
    assert orders[301][1] == 7 and orders[301][3] == "x" * (301 % 7)
    assert sorted((r[0], r[1]) for r in got[2]["events"]) == [("k", 1), ("k", 3), ("k", 4), ("k", 5), ("k2", 20)]
    assert norm[3] == norm[2]  # replays change nothing
