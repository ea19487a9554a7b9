"""The topics are a trust boundary (design.md, invariant 7): forged records and schemas, written by
an independent writer (fastavro and raw bytes) to a real broker while a real producer and sink run
against a real source and target.

Every test asserts the four things a user relies on:
- nothing outside the topic's own table changes (a target-only table `victim` and the table
  `other` keep their rows);
- the sink stays up;
- every forged record is in the dead-letter topic with a reason;
- real changes keep flowing, within an RSS bound of the sink.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from tests.conftest import BROKER_KINDS, PgServer
from tests.hostile.forge import envelope, named, zigzag
from tests.hostile.rig import VICTIM, Rig, running_rig
from tests.pipeline import table_digest
from tests.support.waits import wait_for


@pytest.fixture(scope="module", params=BROKER_KINDS)
def rig(request: pytest.FixtureRequest, pg: PgServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    with running_rig(request.param, pg, tmp_path_factory.mktemp("hostile")) as r:
        yield r


def _renamed(schema: dict[str, Any], table: str, prefix: str, *, schema_name: str = "public") -> dict[str, Any]:
    """`schema` (an envelope) claiming to be table `schema_name.table`, consistent in every other
    respect: the independent writer recomputes the namespace the producer would use."""
    out = copy.deepcopy(schema)
    ns = f"{prefix}.{schema_name}.{table}"
    out["pg.schema"], out["pg.table"], out["namespace"] = schema_name, table, ns
    out["fields"][0]["type"][1]["namespace"] = ns
    out["fields"][1]["type"][1] = f"{ns}.Value"
    return named(out)


def _row_fields(schema: dict[str, Any]) -> list[dict[str, Any]]:
    fields: list[dict[str, Any]] = schema["fields"][0]["type"][1]["fields"]
    return fields


# -- 1. schema properties are data, never SQL ---------------------------------------------------


def test_schema_properties_carrying_sql_are_refused(rig: Rig) -> None:
    real = rig.forge.real_schema("orders")
    payloads: dict[str, tuple[str, Any]] = {
        "type": ("pg.type", "integer); DROP TABLE public.victim; --"),
        "precision": ("pg.precision", "1,0); DROP TABLE public.victim; --"),
        "length": ("pg.length", "1); DROP TABLE public.victim; --"),
        "base": ("pg.base", 'numeric"; DROP TABLE public.victim; --'),
        "ndims": ("pg.ndims", "1; DROP TABLE public.victim"),
        "name-nul": ("pg.name", "note\x00; DROP TABLE public.victim"),
    }
    tags = set()
    for tag, (prop, value) in payloads.items():
        forged = copy.deepcopy(real)
        for f in _row_fields(forged):
            if f["pg.name"] == "note":
                f[prop] = value
        forged = named(forged)
        rig.forge.publish_schema(forged)
        datum = envelope({"id": 9_000_000, "amount": None, "note": "forged"}, "c", "public", "orders")
        rig.forge.send(rig.topic("orders"), rig.forge.framed(forged, datum), f"sql-{tag}")
        tags.add(f"sql-{tag}")
    rig.assert_boundary_held(tags)


def test_a_statement_never_carries_a_second_one(rig: Rig) -> None:
    """Every statement of the sink runs over the extended protocol: the server refuses a second
    statement whatever text reaches it (psycopg alone would use the simple protocol)."""
    from bridge.sink.statements import run

    with psycopg.connect(rig.target_dsn, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.SyntaxError, match="multiple commands"):
            run(conn, "SELECT 1; DROP TABLE public.victim")
        assert conn.execute("SELECT count(*) FROM public.victim").fetchone() == (len(VICTIM),)


# -- 2. the table follows from the topic --------------------------------------------------------


def test_a_record_writes_only_the_table_its_topic_names(rig: Rig) -> None:
    other = rig.forge.real_schema("other")
    # a schema naming `victim` (a table the target has, the source not), and `other`'s own schema,
    # both written into the topic of `orders`: a delete, an insert and a truncate
    victim = _renamed(other, "victim", rig.prefix)
    tags = set()
    for tag, schema, datum in [
        ("victim-delete", victim, envelope(None, "d", "public", "victim", before={"id": 1, "v": None})),
        ("victim-insert", victim, envelope({"id": 99, "v": "forged"}, "c", "public", "victim")),
        ("victim-truncate", victim, envelope(None, "t", "public", "victim")),
        ("other-truncate", other, envelope(None, "t", "public", "other")),
        ("other-delete", other, envelope(None, "d", "public", "other", before={"id": 1, "v": None})),
    ]:
        rig.forge.publish_schema(schema)
        rig.forge.send(rig.topic("orders"), rig.forge.framed(schema, datum), tag)
        tags.add(tag)
    rig.assert_boundary_held(tags)


def test_the_sinks_own_state_is_out_of_reach(rig: Rig) -> None:
    """A topic named for the state schema's position table, with a schema consistent with it."""
    other = rig.forge.real_schema("other")
    state = _renamed(other, "bridge_positions", rig.prefix, schema_name="pgbridge_state")
    topic = f"{rig.prefix}.pgbridge_state.bridge_positions"
    admin = AdminClient({"bootstrap.servers": rig.bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(30)
    rig.forge.publish_schema(state)
    datum = envelope(None, "t", "pgbridge_state", "bridge_positions")
    # the sink's pattern subscription picks the new topic up (its assignment is logged)
    wait_for(lambda: f"{topic}/0" in rig.sink.logfile.read_text(errors="replace"), 60,
             f"the sink to be assigned {topic}", [rig.producer, rig.sink])
    rig.forge.send(topic, rig.forge.framed(state, datum), "state-truncate")
    rig.assert_boundary_held({"state-truncate"})


# -- 3. bounded decoding: poison never stops the sink ---------------------------------------------


def test_poison_schema_entries_and_records_do_not_stop_the_sink(rig: Rig) -> None:
    real = rig.forge.real_schema("orders")
    tags = set()
    # entries of the schema topic that are not schemas: skipped, and those after them still learned
    rig.forge.publish_schema(b"{not json", key=b"\x01" * 8)
    rig.forge.publish_schema(b"[" * 200_000 + b"]" * 200_000, key=b"\x02" * 8)
    rig.forge.publish_schema(b"[]", key=b"\x03" * 8)
    rig.forge.publish_schema(json.dumps(real).encode(), key=b"short")
    rig.forge.publish_schema(json.dumps(real).encode(), key=b"\x04" * 8)  # fingerprint does not match
    for tag, key in [("not-json", b"\x01" * 8), ("deep-json", b"\x02" * 8), ("array", b"\x03" * 8),
                     ("mismatch", b"\x04" * 8)]:
        rig.forge.send(rig.topic("orders"), b"\xc3\x01" + key + b"\x00\x02\x02\x04", f"entry-{tag}")
        tags.add(f"entry-{tag}")
    # properties of the wrong type, and a field type nested far deeper than any column's
    wrong: dict[str, tuple[str, Any]] = {"ndims": ("pg.ndims", "x"), "not-null": ("pg.not_null", "yes"),
                                         "scale": ("pg.scale", [1]), "name": ("pg.name", 5)}
    for tag, (prop, value) in wrong.items():
        forged = copy.deepcopy(real)
        _row_fields(forged)[2][prop] = value
        forged = named(forged)
        rig.forge.publish_schema(forged)
        datum = envelope({"id": 9_000_001, "amount": None, "note": "x"}, "c", "public", "orders")
        rig.forge.send(rig.topic("orders"), rig.forge.framed(forged, datum), f"prop-{tag}")
        tags.add(f"prop-{tag}")
    for tag, value in [("pk-int", 5), ("pk-unknown", ["nope"]), ("identity", 7)]:
        forged = copy.deepcopy(real)
        forged["pg.primary_key" if tag.startswith("pk") else "pg.replica_identity"] = value
        forged = named(forged)
        rig.forge.publish_schema(forged)
        datum = envelope({"id": 9_000_002, "amount": None, "note": "x"}, "c", "public", "orders")
        rig.forge.send(rig.topic("orders"), rig.forge.framed(forged, datum), f"prop-{tag}")
        tags.add(f"prop-{tag}")
    deep = copy.deepcopy(real)
    nested: Any = "string"
    for _ in range(150):
        nested = {"type": "array", "items": nested}
    _row_fields(deep)[2]["type"] = ["null", nested]
    deep = named(deep)
    rig.forge.publish_schema(deep)
    rig.forge.send(rig.topic("orders"), b"\xc3\x01" + rig.forge.publish_schema(deep) + b"\x00\x00\x00", "deep-type")
    tags.add("deep-type")
    # raw garbage
    for i, value in enumerate([b"", b"\xff" * 20, b"\x00\x00\x00\x00\x07", b"\xc3\x01" + b"\x13" * 8]):
        rig.forge.send(rig.topic("orders"), value, f"garbage-{i}")
        tags.add(f"garbage-{i}")
    # a new table version after all of that is still learned and applied
    with psycopg.connect(rig.source_dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE public.orders ADD COLUMN IF NOT EXISTS extra text")
        conn.execute("INSERT INTO public.orders VALUES (500, 5, 'after the poison', 'learned')")
    rig.assert_boundary_held(tags)
    assert table_digest(rig.source_dsn, "public.orders", ["id", "extra"], "id") == \
        table_digest(rig.target_dsn, "public.orders", ["id", "extra"], "id")


def test_resource_exhaustion_is_bounded(rig: Rig) -> None:
    real = rig.forge.real_schema("orders")
    tags = set()
    # an array of zero-width items with a count of 2**60: a small record, an unbounded loop
    zero = copy.deepcopy(real)
    zero["fields"][5]["type"] = {"type": "array", "items": "null"}
    zero = named(zero)
    rig.forge.publish_schema(zero)
    head = rig.forge.framed(zero, envelope({"id": 9_000_003, "amount": None, "note": "x"}, "c", "public",
                                           "orders"))[:-1]  # drop the empty `unchanged` array
    rig.forge.send(rig.topic("orders"), head + zigzag(2**60) + b"\x00", "huge-count")
    tags.add("huge-count")
    # the real schema, a real layout, a decimal of 300 kB where numeric(12,2) allows 12 digits
    ok = rig.forge.framed(real, envelope({"id": 9_000_004, "amount": None, "note": None}, "c", "public", "orders"))
    plain = copy.deepcopy(real)
    for f in _row_fields(plain):
        if f["pg.name"] == "amount":
            f["type"] = ["null", "bytes", "string"]
    huge = rig.forge.framed(plain, envelope({"id": 9_000_004, "amount": b"\x7f" + b"\x13" * 300_000, "note": None},
                                            "c", "public", "orders"))
    rig.forge.send(rig.topic("orders"), ok[:10] + huge[10:], "huge-decimal")
    tags.add("huge-decimal")
    started = time.monotonic()
    rig.assert_boundary_held(tags)
    assert time.monotonic() - started < 120
