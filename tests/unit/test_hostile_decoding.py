"""Fuzzing the sink's decoder, schema validation and schema-topic loader (hostile input).

Whatever the bytes, decoding either gives a change or raises a `BridgeError` (the loop then
dead-letters the record), quickly and without allocating for counts the bytes cannot hold. The
loader of `<prefix>._schemas` never raises at all.
"""

from __future__ import annotations

import copy
import json
import time
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.codec import EnvelopeDecoder, MemorySchemaStore, TableCodec, TopicSchemaStore
from bridge.codec.store import json_depth_exceeds, published_form
from bridge.codec.validate import relation_from_schema
from bridge.errors import BridgeError, CodecError, SchemaError
from bridge.events import ChangeEvent, Op, Position
from bridge.lsn import Lsn
from bridge.relation import Column, Relation
from bridge.sink.admit import Admission, ForbiddenTableError
from bridge.sink.types import candidates
from tests.hostile.forge import zigzag

REL = Relation("public", "t", (
    Column("id", "bigint", "int8", not_null=True),
    Column("amount", "numeric(12,2)", "numeric", precision=12, scale=2),
    Column("tags", "text[]", "text", ndims=1),
    Column("grid", "integer[]", "int4", ndims=2),
    Column("note", "character varying(20)", "varchar", length=20),
    Column("at", "timestamp with time zone", "timestamptz"),
    Column("mood", "public.mood", "mood", kind="e"),
), ("id",), replica_identity="f")
ROW = (1, Decimal("12.50"), ["a", None, "b"], [[1, 2], [3, None]], "hello", 1_700_000_000_000_000, "happy")


def _record() -> tuple[MemorySchemaStore, bytes]:
    store = MemorySchemaStore()
    codec = TableCodec(REL, store, db="d", topic_prefix="p")
    ev = ChangeEvent(REL, Op.UPDATE, Position(Lsn(1000), 3), 9, None, ROW, ROW, unchanged=("note",))
    return store, codec.value(ev)


STORE, VALUE = _record()


def decode(value: bytes) -> None:
    try:
        EnvelopeDecoder(STORE, topic_prefix="p").decode(value)
    except BridgeError:
        pass


def test_the_reference_record_decodes() -> None:
    ch = EnvelopeDecoder(STORE, topic_prefix="p").decode(VALUE)
    assert ch.after == ROW and ch.unchanged == ("note",)


@settings(max_examples=400, deadline=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_records_decode_or_raise_bridge_errors(data: st.DataObject) -> None:
    body = bytearray(VALUE)
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["flip", "cut", "insert", "set"]))
        i = data.draw(st.integers(10, max(10, len(body) - 1)))
        if kind == "flip" and i < len(body):
            body[i] ^= data.draw(st.integers(1, 255))
        elif kind == "cut":
            del body[i:]
        elif kind == "insert":
            body[i:i] = data.draw(st.binary(min_size=1, max_size=12))
        elif i < len(body):
            body[i] = data.draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFF]))
    decode(bytes(body))


@settings(max_examples=300, deadline=500)
@given(st.binary(max_size=200))
def test_random_bodies_after_a_known_header_decode_or_raise(tail: bytes) -> None:
    decode(VALUE[:10] + tail)


def test_a_huge_item_count_is_refused_before_any_allocation() -> None:
    # `unchanged` is the body's last field: replace it with a block of 2**60 items and nothing else
    end = VALUE.rindex(b"\x00", 0, len(VALUE) - 1)  # the array's terminating 0 is the last byte
    assert VALUE[-1] == 0
    head = VALUE[:len(VALUE) - 1 - len(zigzag(1)) - len(zigzag(4)) - 4]  # 1 item: "note" (len 4)
    assert end > 0 and head
    started = time.monotonic()
    with pytest.raises(CodecError, match="count exceeds"):
        EnvelopeDecoder(STORE, topic_prefix="p").decode(head + zigzag(2**60) + b"\x00")
    assert time.monotonic() - started < 1.0


def test_an_oversized_decimal_is_refused_at_once() -> None:
    i = VALUE.index(b"\x02\x04\x04\xe2")  # union branch 1, bytes of length 2: 1250 (12.50) = 04 e2
    huge = VALUE[:i] + b"\x02" + zigzag(300_000) + b"\x13" * 300_000 + VALUE[i + 4:]
    started = time.monotonic()
    with pytest.raises(CodecError, match="decimal larger"):
        EnvelopeDecoder(STORE, topic_prefix="p").decode(huge)
    assert time.monotonic() - started < 1.0


# -- schemas ---------------------------------------------------------------------------------------

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=10), kids, max_size=4),
                    max_leaves=20)
REAL = json.loads(json.dumps(STORE.lookup(VALUE)[0]))


def _paths(doc: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [at]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*at, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*at, i))
    return out


PATHS = _paths(REAL)[1:]


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(PATHS), JSON)
def test_a_schema_with_any_one_value_replaced_validates_or_raises_schema_error(path: tuple[Any, ...], value: Any
                                                                               ) -> None:
    doc = copy.deepcopy(REAL)
    node = doc
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    try:
        rel = relation_from_schema(doc, topic_prefix="p")
    except SchemaError:
        return
    # whatever passes describes a relation whose schema is exactly this one's structure
    assert rel.schema == "public" and rel.table == "t"


@settings(max_examples=200, deadline=None)
@given(JSON)
def test_any_json_validates_or_raises_schema_error(doc: Any) -> None:
    with pytest.raises(SchemaError):
        relation_from_schema(doc, topic_prefix="p")


def test_validation_refuses_sql_in_properties() -> None:
    for prop, value in [("pg.type", "integer); DROP TABLE x; --"), ("pg.precision", "1,0); DROP TABLE x"),
                        ("pg.name", "a\x00b"), ("pg.ndims", 7), ("pg.scale", True), ("pg.base", 'int4"; --')]:
        doc = copy.deepcopy(REAL)
        doc["fields"][0]["type"][1]["fields"][1][prop] = value
        with pytest.raises(SchemaError) as err:
            relation_from_schema(doc, topic_prefix="p")
        assert err.value.context.get("property") == prop or "structure" in str(err.value)


def test_validation_refuses_a_structure_the_producer_does_not_write() -> None:
    doc = copy.deepcopy(REAL)
    doc["fields"][5]["type"] = {"type": "array", "items": "null"}
    with pytest.raises(SchemaError, match="structure"):
        relation_from_schema(doc, topic_prefix="p")
    with pytest.raises(SchemaError, match="namespace"):
        relation_from_schema(REAL, topic_prefix="other")


# -- the schema topic's loader ---------------------------------------------------------------------


def _loader() -> TopicSchemaStore:
    return TopicSchemaStore("127.0.0.1:1", "p")  # no broker is contacted by `_learn`


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=16), st.binary(max_size=300) | JSON.map(lambda d: json.dumps(d).encode()))
def test_the_loader_never_raises(key: bytes, value: bytes) -> None:
    _loader()._learn(key, value, 0)


def test_the_loader_skips_poison_and_keeps_learning() -> None:
    from bridge.codec import framing

    store = _loader()
    good = published_form({"type": "record", "name": "R", "fields": [{"name": "a", "type": "long"}]})
    fp = framing.fingerprint(good)
    for key, value in [(fp, b"[" * 100_000 + b"]" * 100_000), (fp, b"{nope"), (b"x", b"{}"), (fp, b"[]"),
                       (fp, json.dumps({**good, "doc": "same name, other content"}).encode())]:
        store._learn(key, value, 0)
    store._learn(fp, json.dumps(good).encode(), 1)
    assert store.lookup(framing.single_object_prefix(fp) + b"\x02")[0] == good
    assert json_depth_exceeds(b'["[[[[", [[1]]]', 2) and not json_depth_exceeds(b'["[[[[[[[[", 1]', 2)


# -- target types and admission ----------------------------------------------------------------------


def test_target_types_come_from_the_closed_set() -> None:
    def col(type_name: str, base: str, kind: str = "b", **kw: Any) -> Column:
        return Column("c", type_name, base, kind, **kw)

    assert candidates(col("numeric(12,2)", "numeric", precision=12, scale=2), array=False) == ["numeric(12,2)", "text"]
    assert candidates(col("character varying(20)", "varchar", length=20), array=True) == [
        "character varying(20)[]", "text[]"]
    assert candidates(col("public.mood", "mood", "e"), array=False) == ['"public"."mood"', "text"]
    assert candidates(col('"My ""Type"""', "x", "e"), array=False) == ['"My ""Type"""', "text"]
    # anything that is not a plain name never becomes a candidate
    assert candidates(col("integer); DROP TABLE x; --", "int4"), array=False) == ["integer", "text"]
    assert candidates(col("mood; DROP", "mood", "e"), array=False) == ["text"]


def test_admission_follows_the_topic() -> None:
    adm = Admission("p", "pgbridge_state", ["public.*"])
    adm.check("p.public.t", REL)
    for topic, rel in [("p.public.other", REL), ("q.public.t", REL),
                       ("p.pgbridge_state.t", Relation("pgbridge_state", "t", REL.columns)),
                       ("p.pg_catalog.t", Relation("pg_catalog", "t", REL.columns)),
                       ("p.sales.t", Relation("sales", "t", REL.columns))]:
        with pytest.raises(ForbiddenTableError):
            adm.check(topic, rel)


def test_a_signing_store_learns_only_signed_entries() -> None:
    from bridge.codec import framing
    from bridge.signing import ANY_PARTITION, Signer

    signer = Signer("secret")
    store = TopicSchemaStore("127.0.0.1:1", "p", signer=signer)
    good = published_form({"type": "record", "name": "R", "fields": [{"name": "a", "type": "long"}]})
    fp, value = framing.fingerprint(good), json.dumps(good).encode()
    store._learn(fp, value, 0, [])
    store._learn(fp, value, 1, [signer.header("p._schemas", ANY_PARTITION, fp, b"other")])
    store._learn(fp, value, 2, [Signer("guess").header(store.topic, ANY_PARTITION, fp, value)])
    assert framing.single_object_prefix(fp) not in store._by_header  # none of the three was learned
    store._learn(fp, value, 3, [signer.header(store.topic, ANY_PARTITION, fp, value)])
    assert store.lookup(framing.single_object_prefix(fp) + b"\x02")[0] == good
