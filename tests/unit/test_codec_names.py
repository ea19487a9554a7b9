from __future__ import annotations

import re
import zlib

from hypothesis import given
from hypothesis import strategies as st

from bridge.codec.names import avro_name, field_names, namespace, topic_name

AVRO = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def crc(name: str) -> str:
    return f"{zlib.crc32(name.encode()):08x}"


def test_valid_names_are_kept() -> None:
    assert avro_name("id") == "id"
    assert avro_name("_Mixed_9") == "_Mixed_9"


def test_invalid_characters_become_underscore_plus_crc() -> None:
    assert avro_name("a b") == f"a_b_{crc('a b')}"
    assert avro_name("My-Col") == f"My_Col_{crc('My-Col')}"


def test_leading_digit_and_empty() -> None:
    assert avro_name("1st") == f"_1st_{crc('1st')}"
    assert avro_name("") == f"__{crc('')}"


def test_unicode_names() -> None:
    n = avro_name("prénom")
    assert n == f"pr_nom_{crc('prénom')}"
    assert avro_name("名前") != avro_name("名字")  # same sanitised form, different CRC


def test_63_byte_names() -> None:
    long_ascii = "a" * 63
    assert avro_name(long_ascii) == long_ascii
    long_utf8 = "é" * 31 + "x"  # 63 bytes
    assert len(long_utf8.encode()) == 63
    assert AVRO.match(avro_name(long_utf8))


def test_collision_with_a_plain_name() -> None:
    # a column literally named like another column's rewritten name keeps its spelling
    rewritten = avro_name("a-b")
    names = field_names(["a-b", rewritten, "a_b"])
    assert names[1] == rewritten and names[2] == "a_b"
    assert len(set(names)) == 3
    assert names[0] == f"{rewritten}_{crc('a-b')}"


@given(st.lists(st.text(min_size=0, max_size=20), unique=True, max_size=12))
def test_field_names_valid_and_unique(cols: list[str]) -> None:
    names = field_names(cols)
    assert len(names) == len(cols)
    assert len(set(names)) == len(names)
    assert all(AVRO.match(n) for n in names)


def test_namespace_and_topic() -> None:
    assert namespace("bridge", "public", "orders") == "bridge.public.orders"
    assert namespace("my.app", "Sales Data", "1x") == f"my.app.Sales_Data_{crc('Sales Data')}._1x_{crc('1x')}"
    assert topic_name("bridge", "public", "orders") == "bridge.public.orders"
    assert topic_name("bridge", "Sales Data", "é$t") == "bridge.Sales_20_Data._e9__24_t.esc"
    assert topic_name("bridge", "public.a", "b") == "bridge.public_2e_a.b.esc"
    assert topic_name("bridge", "public", "a.b") == "bridge.public.a_2e_b.esc"
    assert topic_name("bridge", "public", "a_2e_b") == "bridge.public.a_2e_b"
    assert topic_name("bridge", "s", "my-table_1") == "bridge.s.my-table_1"


_IDENT = st.text(min_size=1, max_size=12, alphabet=st.sampled_from(list("ab_-.$ é\"0")))


@given(st.tuples(_IDENT, _IDENT), st.tuples(_IDENT, _IDENT))
def test_topic_name_is_injective(one: tuple[str, str], two: tuple[str, str]) -> None:
    """Two distinct (schema, table) pairs never share a topic; every topic is legal for Kafka."""
    a, b = topic_name("bridge", *one), topic_name("bridge", *two)
    assert re.fullmatch(r"[A-Za-z0-9._-]+", a)
    assert (a == b) == (one == two)
