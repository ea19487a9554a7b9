from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.ack.watermark import Ledger
from bridge.events import Position
from bridge.lsn import Lsn

A = ("bridge.public.a", 0)
B = ("bridge.public.a", 1)


def pos(lsn: int, seq: int) -> Position:
    return Position(Lsn(lsn), seq)


def test_kafka_mode_waits_for_delivery_in_order() -> None:
    led = Ledger("kafka", Lsn(10))
    t1 = led.open(Lsn(100))
    led.sent(t1, A, 0)
    led.close(t1)
    t2 = led.open(Lsn(200))
    led.sent(t2, B, 0)
    led.close(t2)
    assert led.watermark() == Lsn(10)
    led.delivered(t2)
    assert led.watermark() == Lsn(10), "a later transaction must not pass an earlier undelivered one"
    led.delivered(t1)
    assert led.watermark() == Lsn(200)


def test_sink_mode_needs_acks_per_partition() -> None:
    led = Ledger("sink", Lsn(0))
    t1 = led.open(Lsn(100))
    led.sent(t1, A, 0)
    led.sent(t1, B, 1)
    led.close(t1)
    led.delivered(t1)
    led.delivered(t1)
    assert led.watermark() == Lsn(0), "delivered is not enough in sink mode"
    led.acked(A, pos(100, 0))
    assert led.watermark() == Lsn(0), "partition B not acked yet"
    led.acked(B, pos(99, 7))
    assert led.watermark() == Lsn(0), "an ack below the record does not cover it"
    led.acked(B, pos(100, 1))
    assert led.watermark() == Lsn(100)


def test_unclosed_transaction_blocks() -> None:
    led = Ledger("kafka", Lsn(0))
    t1 = led.open(Lsn(100))
    assert led.watermark() == Lsn(0)
    led.close(t1)
    assert led.watermark() == Lsn(100), "an empty transaction is done once closed"


def test_failed_delivery_pins_watermark() -> None:
    led = Ledger("kafka", Lsn(0))
    t1 = led.open(Lsn(100))
    led.sent(t1, A, 0)
    led.close(t1)
    led.delivered(t1, ok=False)
    assert led.watermark() == Lsn(0)


def test_present_records_need_acks_but_no_delivery() -> None:
    led = Ledger("sink", Lsn(0))
    t1 = led.open(Lsn(100))
    led.present(t1, A, 0)
    led.close(t1)
    assert led.watermark() == Lsn(0)
    led.acked(A, pos(150, 0))
    assert led.watermark() == Lsn(100)


def test_out_of_order_open_rejected() -> None:
    led = Ledger("kafka", Lsn(0))
    led.open(Lsn(100))
    with pytest.raises(ValueError):
        led.open(Lsn(100))


def test_idle_advance_only_when_nothing_in_flight() -> None:
    led = Ledger("sink", Lsn(0))
    t1 = led.open(Lsn(100))
    led.close(t1)
    led.sent(t1, A, 0)
    assert led.advance_idle(Lsn(500)) == Lsn(0)
    led.delivered(t1)
    led.acked(A, pos(100, 0))
    assert led.watermark() == Lsn(100)
    assert led.advance_idle(Lsn(500)) == Lsn(500)


@settings(max_examples=200)
@given(st.data())
def test_watermark_never_passes_an_unacked_record(data: st.DataObject) -> None:
    """Random interleavings: the watermark is always below the first not-fully-acked transaction."""
    n = data.draw(st.integers(1, 12))
    led = Ledger("sink", Lsn(0))
    parts = [("t", p) for p in range(3)]
    txns = []
    records: list[tuple[int, tuple[str, int], Position]] = []
    for i in range(n):
        t = led.open(Lsn((i + 1) * 10))
        k = data.draw(st.integers(0, 3))
        for s in range(k):
            tp = data.draw(st.sampled_from(parts))
            p = pos((i + 1) * 10, s)
            led.sent(t, tp, p.seq)
            records.append((i, tp, p))
        led.close(t)
        txns.append(t)
    delivered = set()
    acked: dict[tuple[str, int], Position] = {}
    for _ in range(data.draw(st.integers(0, 40))):
        if records and data.draw(st.booleans()):
            j = data.draw(st.integers(0, len(records) - 1))
            if j not in delivered:
                delivered.add(j)
                led.delivered(txns[records[j][0]])
        else:
            tp = data.draw(st.sampled_from(parts))
            p = pos(data.draw(st.integers(0, n)) * 10, data.draw(st.integers(0, 3)))
            led.acked(tp, p)
            if acked.get(tp, pos(0, -1)) < p:
                acked[tp] = p
        wm = led.watermark()
        for j, (i, tp, p) in enumerate(records):
            ok = j in delivered and acked.get(tp, pos(0, -1)) >= p
            if not ok:
                assert wm < Lsn((i + 1) * 10), f"watermark {wm} passed unacked record {p}"


def test_partition_ignores_framing() -> None:
    """A key keeps its partition when its schema version (and so its framing) changes."""
    from bridge.produce.topics import partition_for

    body = b"\x02\x04"
    v1 = b"\xc3\x01" + bytes(range(8)) + body
    v2 = b"\xc3\x01" + bytes(range(8, 16)) + body
    confluent = b"\x00\x00\x00\x00\x07" + body
    assert {partition_for(k, 7) for k in (v1, v2, confluent)} == {partition_for(body, 7)}
    assert partition_for(None, 7) == 0


def test_tail_covers_delete_but_not_its_missing_tombstone() -> None:
    """Killed between a delete and its tombstone: the restart must still write the tombstone."""
    from bridge.produce.topics import Tail

    tail = Tail(pos(100, 3), tombstone=False)  # the delete made it, its tombstone did not
    assert tail.covers(pos(100, 3), False)
    assert not tail.covers(pos(100, 3), True)
    assert tail.covers(pos(100, 2), True)
    assert not tail.covers(pos(100, 4), False)
    assert Tail(pos(100, 3), tombstone=True).covers(pos(100, 3), True)
