from __future__ import annotations

import pytest

from bridge.errors import DecodeError
from bridge.lsn import Lsn
from bridge.source.transactions import Message, Transaction, TransactionAssembler


def feed_all(asm: TransactionAssembler, lines: list[str]) -> list[Transaction | Message]:
    out = []
    for i, line in enumerate(lines):
        r = asm.feed(Lsn(1000 + i), line)
        if r is not None:
            out.append(r)
    return out


@pytest.mark.parametrize("spill", [1 << 30, 200])
def test_transaction_lines_in_order_with_and_without_spill(spill: int) -> None:
    asm = TransactionAssembler(spill_bytes=spill)
    body = [f"table public.t: INSERT: id[integer]:{i} v[text]:'a\nb\\\\c{i}'" for i in range(50)]
    lines = ["BEGIN 7", *body, "COMMIT 7 (at 2026-11-23 23:10:21.123456+00)"]
    [txn] = feed_all(asm, lines)
    assert isinstance(txn, Transaction)
    assert txn.xid == 7 and txn.count == 50
    assert txn.commit_lsn == Lsn(1000 + 51)
    assert txn.commit_ts == "2026-11-23 23:10:21.123456+00"
    assert list(txn.lines()) == body


def test_messages_and_errors() -> None:
    asm = TransactionAssembler()
    [m] = feed_all(asm, ["message: transactional: 0 prefix: bridge.heartbeat, sz: 3 content:abc"])
    assert isinstance(m, Message)
    with pytest.raises(DecodeError):
        asm.feed(Lsn(1), "table public.t: INSERT: id[integer]:1")
    with pytest.raises(DecodeError):
        asm.feed(Lsn(1), "COMMIT 5")
    asm.feed(Lsn(1), "BEGIN 5")
    with pytest.raises(DecodeError):
        asm.feed(Lsn(1), "BEGIN 6")
    asm.reset()
    assert not asm.in_transaction
    with pytest.raises(DecodeError):
        asm.feed(Lsn(1), "garbage")


def test_empty_transaction_and_commit_without_ts() -> None:
    asm = TransactionAssembler()
    [txn] = feed_all(asm, ["BEGIN 9", "COMMIT 9"])
    assert isinstance(txn, Transaction) and txn.count == 0 and txn.commit_ts is None and txn.xid == 9
