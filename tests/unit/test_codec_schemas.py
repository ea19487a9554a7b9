from __future__ import annotations

import json
from pathlib import Path

import fastavro
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.workload import orders_relation
from bridge.codec import framing
from bridge.codec.schemas import key_schema, row_record, value_schema
from bridge.codec.store import published_form
from bridge.codec.templates import TEMPLATES
from bridge.codec.validate import relation_from_schema
from bridge.errors import SchemaError
from bridge.relation import Column, Relation

REPO = Path(__file__).resolve().parents[2]

ORDERS = orders_relation(oid=16384)


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_avsc_files_equal_packaged_templates(name: str) -> None:
    on_disk = json.loads((REPO / "schemas" / f"{name}.avsc").read_text())
    assert on_disk == TEMPLATES[name]


def test_value_schema_shape() -> None:
    v = value_schema(ORDERS, topic_prefix="bridge")
    fastavro.parse_schema(v)
    assert [f["name"] for f in v["fields"]] == ["before", "after", "op", "source", "ts_ms", "unchanged"]
    assert v["pg.schema"] == "public" and v["pg.table"] == "orders"
    assert v["pg.primary_key"] == ["id"] and v["pg.replica_identity"] == "d" and v["pg.version"] == 1
    fields = {f["pg.name"]: f for f in row_record(v)["fields"]}
    assert fields["amount"]["type"] == ["null", {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2}, "string"]
    assert fields["created_at"]["type"] == ["null", {"type": "long", "logicalType": "timestamp-micros"}]
    assert fields["payload"]["type"] == ["null", "string"] and fields["payload"]["pg.type"] == "jsonb"
    assert all(f["default"] is None for f in fields.values())
    assert fields["id"]["pg.not_null"] is True and fields["note"]["pg.not_null"] is False


def test_key_schema() -> None:
    k = key_schema(ORDERS, topic_prefix="bridge")
    assert k is not None
    fastavro.parse_schema(k)
    assert [(f["name"], f["type"]) for f in k["fields"]] == [("id", "long")]
    assert key_schema(Relation("public", "t", ORDERS.columns), topic_prefix="bridge") is None
    with pytest.raises(SchemaError):
        key_schema(Relation("public", "t", ORDERS.columns, ("nope",)), topic_prefix="bridge")


def test_numeric_key_has_string_branch_and_unconstrained_numeric_is_string() -> None:
    rel = Relation("s", "t", (Column("n", "numeric(5,2)", "numeric", precision=5, scale=2),
                              Column("u", "numeric", "numeric"), Column("neg", "numeric(5,-2)", "numeric", precision=5, scale=-2)),
                   ("n",))
    k = key_schema(rel, topic_prefix="p")
    assert k is not None and k["fields"][0]["type"][1] == "string"
    rows = {f["pg.name"]: f for f in row_record(value_schema(rel, topic_prefix="p"))["fields"]}
    assert rows["u"]["type"] == ["null", "string"]
    assert rows["neg"]["type"] == ["null", "string"]


def test_arrays_nest_per_dimension() -> None:
    rel = Relation("s", "t", (Column("m", "integer[]", "int4", ndims=2), Column("d", "numeric(4,1)[]", "numeric", ndims=1, precision=4, scale=1)))
    rows = {f["pg.name"]: f["type"] for f in row_record(value_schema(rel, topic_prefix="p"))["fields"]}
    assert rows["m"] == ["null", {"type": "array", "items": {"type": "array", "items": ["null", "int"]}}]
    assert rows["d"][1]["items"][1]["logicalType"] == "decimal" and rows["d"][1]["items"][2] == "string"


BASES = ["int2", "int4", "int8", "oid", "float4", "float8", "numeric", "bool", "text", "varchar", "bpchar",
         "bytea", "date", "time", "timestamp", "timestamptz", "uuid", "json", "jsonb", "interval", "inet", "citext"]


# identifiers PostgreSQL allows: no NUL, at most 63 bytes (10 characters are at most 40 bytes)
IDENTS = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), min_size=1, max_size=10)
SPELLINGS = ["integer", "numeric(12,2)", "character varying(20)", "timestamp(3) with time zone", "double precision",
             "interval day to second(3)", "integer[]", "public.mood", "bit varying(5)", '"char"']
TYPE_NAMES = st.sampled_from(SPELLINGS) | IDENTS.map(lambda n: '"' + n.replace('"', '""') + '"')


@st.composite
def relations(draw: st.DrawFn) -> Relation:
    names = draw(st.lists(IDENTS, min_size=1, max_size=8, unique=True))
    cols = []
    for n in names:
        base = draw(st.sampled_from(BASES))
        prec = draw(st.none() | st.integers(1, 1000)) if base == "numeric" else None
        scale = draw(st.integers(-5, prec)) if prec is not None else None
        cols.append(Column(n, draw(TYPE_NAMES), base, kind=draw(st.sampled_from("bed")),
                           ndims=draw(st.integers(0, 3)), not_null=draw(st.booleans()), precision=prec, scale=scale,
                           length=draw(st.none() | st.integers(1, 10485760)), type_oid=draw(st.integers(0, 2**32 - 1)),
                           missing=draw(st.none() | IDENTS)))
    pk = draw(st.lists(st.sampled_from(names), unique=True, max_size=3))
    return Relation(draw(IDENTS), draw(IDENTS), tuple(cols),
                    tuple(pk), draw(st.sampled_from("dfni")), oid=draw(st.integers(0, 2**32 - 1)),
                    version=draw(st.integers(1, 1000)))


@given(relations())
def test_relation_round_trips_through_the_schema(rel: Relation) -> None:
    v = value_schema(rel, topic_prefix="bridge")
    fastavro.parse_schema(v)
    # the sink only ever sees the schema as JSON text
    back = relation_from_schema(json.loads(json.dumps(v)))
    assert back == rel
    k = key_schema(rel, topic_prefix="bridge")
    if rel.primary_key:
        assert k is not None
        fastavro.parse_schema(k)


def test_relation_from_schema_rejects_foreign_schemas() -> None:
    with pytest.raises(SchemaError):
        relation_from_schema({"type": "record", "name": "X", "fields": []})


def test_published_form_separates_schemas_the_canonical_form_confuses() -> None:
    a = value_schema(ORDERS, topic_prefix="bridge")
    cols = list(ORDERS.columns)
    cols[2] = Column("amount", "numeric(14,4)", "numeric", not_null=True, precision=14, scale=4)
    b = value_schema(Relation("public", "orders", tuple(cols), ("id",)), topic_prefix="bridge")
    assert framing.fingerprint(a) == framing.fingerprint(b)  # why published_form exists
    assert framing.fingerprint(published_form(a)) != framing.fingerprint(published_form(b))


def test_non_base_kinds_are_strings_whatever_their_name() -> None:
    rel = Relation("s", "t", (Column("e", "date", "date", kind="e"), Column("r", "int4range", "int4range", kind="r"),
                              Column("d", "us_postal", "int4")))
    types = [f["type"] for f in row_record(value_schema(rel, topic_prefix="p"))["fields"]]
    assert types == [["null", "string"], ["null", "string"], ["null", "int"]]
