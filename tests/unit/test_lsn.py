from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.events import Position
from bridge.lsn import Lsn, LsnError


def test_parse_and_format() -> None:
    lsn = Lsn.parse("16/B374D848")
    assert int(lsn) == (0x16 << 32) | 0xB374D848
    assert str(lsn) == "16/B374D848"
    assert Lsn.parse("0/0") == Lsn(0)
    assert str(Lsn.parse("16/b374d848")) == "16/B374D848"


def test_order() -> None:
    assert Lsn.parse("0/FFFFFFFF") < Lsn.parse("1/0") < Lsn.parse("1/1")
    assert sorted([Lsn(3), Lsn(1), Lsn(2)]) == [Lsn(1), Lsn(2), Lsn(3)]
    assert Lsn.parse("1/10") - Lsn.parse("1/0") == 16


@pytest.mark.parametrize("bad", ["", "16", "/1", "1/", "G/1", "1/2/3", "123456789/0", "1 /x"])
def test_bad_text(bad: str) -> None:
    with pytest.raises(LsnError):
        Lsn.parse(bad)


@pytest.mark.parametrize("bad", [-1, 1 << 64])
def test_bad_int(bad: int) -> None:
    with pytest.raises(LsnError):
        Lsn(bad)


@given(st.integers(min_value=0, max_value=(1 << 64) - 1))
def test_roundtrip(v: int) -> None:
    assert int(Lsn.parse(str(Lsn(v)))) == v
    assert Lsn.coerce(str(Lsn(v))) == Lsn.coerce(v)


def test_position_order_and_text() -> None:
    a = Position(Lsn(10), 5)
    b = Position(Lsn(10), 6)
    c = Position(Lsn(11), 0)
    assert a < b < c
    assert Position.parse(str(b)) == b
