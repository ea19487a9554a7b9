"""The generated reader returns the value forms; fastavro (logical types stripped) is the oracle."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from bridge.codec.decoder import compile_decoder, compile_reader, row_converter, strip_logical_types
from bridge.errors import CodecError
from tests.unit.test_codec_encoder import (
    FLOAT4,
    REL,
    ROW,
    ROW_WRITE,
    VALUE,
    VALUE_WRITE,
    fastavro_bytes,
    rows,
    same,
)

GEN = compile_decoder(ROW)
ORACLE = compile_reader(ROW)
CONV = row_converter(ROW)
GEN_VALUE = compile_decoder(VALUE)


@settings(max_examples=120, suppress_health_check=[HealthCheck.too_slow])
@given(rows)
def test_generated_reader_agrees_with_fastavro(row: tuple[Any, ...]) -> None:
    data = ROW_WRITE(row)
    got = GEN(data, 0)
    want = CONV(ORACLE(data, 0))
    assert want is not None
    for i, (a, b) in enumerate(zip(want, got, strict=True)):
        assert same(a, b), (REL.columns[i].name, a, b)
    for i, (a, b) in enumerate(zip(row, got, strict=True)):
        if i != FLOAT4:  # Avro float is 32-bit
            assert same(a, b), (REL.columns[i].name, a, b)


def test_envelope_as_tuples() -> None:
    row = tuple(None for _ in REL.columns)
    data = VALUE_WRITE((None, row, "t", ("db", "s", "t", 5, 0, 9, None, True), 1, ["a"]))
    assert GEN_VALUE(data, 3) == (None, row, "t", ("db", "s", "t", 5, 0, 9, None, True), 1, ["a"])


def test_strip_logical_types_keeps_decimal() -> None:
    t = strip_logical_types(["null", {"type": "long", "logicalType": "timestamp-micros"},
                             {"type": "bytes", "logicalType": "decimal", "precision": 4, "scale": 1}])
    assert t == ["null", "long", {"type": "bytes", "logicalType": "decimal", "precision": 4, "scale": 1}]


def test_blocks_with_byte_sizes_are_read() -> None:
    # array of long written as one block with a negative count and its byte size, as Java writers may
    read = compile_decoder({"type": "array", "items": "long"})
    body = b"\x03\x04\x02\x04" + b"\x00"  # count -2, size 2 bytes, items 1, 2
    assert read(body, 0) == [1, 2]


def test_numeric_string_branch_becomes_decimal() -> None:
    read = compile_decoder(["null", {"type": "bytes", "logicalType": "decimal", "precision": 4, "scale": 1}, "string"])
    assert read(b"\x04\x06NaN", 0).is_nan()
    assert read(b"\x04\x10Infinity", 0) == Decimal("Infinity")
    assert read(fastavro_bytes(["null", {"type": "bytes", "logicalType": "decimal", "precision": 4, "scale": 1}, "string"],
                               Decimal("-12.5")), 0) == Decimal("-12.5")


@pytest.mark.parametrize("body, words", [
    (b"\x02", "does not decode"),            # union says long, no bytes follow
    (b"\x02\x80", "does not decode"),         # varint cut short
    (b"\x02\x02\x00", "trailing"),
    (b"\x06", "union branch"),
])
def test_bad_bodies_raise_codec_error(body: bytes, words: str) -> None:
    with pytest.raises(CodecError, match=words):
        compile_decoder(["null", "long"])(body, 0)


def test_truncated_string_is_detected() -> None:
    with pytest.raises(CodecError, match="truncated"):
        compile_decoder("string")(b"\x0aab", 0)
