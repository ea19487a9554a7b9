"""Target type compatibility: which target columns hold which source columns, and widening."""

from __future__ import annotations

import pytest

from bridge.errors import TargetSchemaError
from bridge.relation import Column, Relation
from bridge.sink.target import TargetColumn, _judge, qi

REL = Relation("s", "t", ())


def tcol(type_sql: str, scalar: str, category: str, typmod: int = -1, array: bool = False) -> TargetColumn:
    return TargetColumn("c", type_sql, scalar, category, typmod, array)


INT4 = tcol("integer", "int4", "N")
INT8 = tcol("bigint", "int8", "N")
TEXT = tcol("text", "text", "S")
VC10 = tcol("character varying(10)", "varchar", "S", 14)
NUM_12_2 = tcol("numeric(12,2)", "numeric", "N", ((12 << 16) | 2) + 4)
NUM = tcol("numeric", "numeric", "N")


@pytest.mark.parametrize(("source", "target", "want", "expected"), [
    (Column("c", "integer", "int4"), INT8, "integer", None),  # looser target
    (Column("c", "bigint", "int8"), INT4, "bigint", "bigint"),  # source widened
    (Column("c", "bigint", "int8"), NUM, "bigint", None),
    (Column("c", "character varying(50)", "varchar", length=50), VC10, "character varying(50)", "character varying(50)"),
    (Column("c", "character varying(5)", "varchar", length=5), VC10, "character varying(5)", None),
    (Column("c", "text", "text"), VC10, "text", "text"),
    (Column("c", "integer", "int4"), TEXT, "integer", None),  # text holds anything
    (Column("c", "numeric(10,2)", "numeric", precision=10, scale=2), NUM_12_2, "numeric(10,2)", None),
    (Column("c", "numeric(12,4)", "numeric", precision=12, scale=4), NUM_12_2, "numeric(12,4)", "numeric(14,4)"),
    (Column("c", "numeric", "numeric"), NUM_12_2, "numeric", "numeric"),
    (Column("c", "mood", "mood", kind="e"), tcol("mood", "mood", "E"), "mood", None),
])
def test_judge(source: Column, target: TargetColumn, want: str, expected: str | None) -> None:
    assert _judge(REL, source, target, want) == expected


@pytest.mark.parametrize(("source", "target"), [
    (Column("c", "text", "text"), INT4),
    (Column("c", "numeric(12,2)", "numeric", precision=12, scale=2), INT8),
    (Column("c", "integer[]", "int4", ndims=1), INT4),
    (Column("c", "timestamp with time zone", "timestamptz"), tcol("timestamp without time zone", "timestamp", "D")),
    (Column("c", "mood", "mood", kind="e"), tcol("other", "other", "E")),
])
def test_judge_refuses(source: Column, target: TargetColumn) -> None:
    with pytest.raises(TargetSchemaError) as err:
        _judge(REL, source, target, source.type_name)
    assert err.value.context == {"table": "s.t", "column": "c"}


def test_quoting() -> None:
    assert qi('a"b%c') == '"a""b%%c"'
