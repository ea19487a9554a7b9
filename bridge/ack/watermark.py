"""The in-flight ledger and the watermark: how far the slot may be confirmed.

The watermark is the highest commit LSN such that every record produced for every transaction
committed at or below it is done — delivered to the broker (`ack: kafka`), or delivered *and*
acknowledged by the sink as applied and committed (`ack: sink`). Transactions with no records
(skipped tables, heartbeats) are done as soon as everything before them is.

Acks are per (topic, partition) and cumulative: the sink applies a partition in position order,
so an ack of position P covers every record of that partition at or below P. A transaction is
therefore acked when, for each partition it wrote to, the acked position has reached the
highest position it wrote there.

Pure logic, no I/O: the producer calls it from its single loop thread (delivery callbacks run
inside `Producer.poll`, on that same thread).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from bridge.events import ZERO_POSITION, Position
from bridge.lsn import Lsn

TopicPartition = tuple[str, int]
AckMode = Literal["sink", "kafka"]


@dataclass(slots=True, eq=False)
class InFlight:
    """One transaction in flight, from its COMMIT until the watermark passes it."""

    commit_lsn: Lsn
    pending: int = 0  # records handed to the broker client, delivery not yet reported
    closed: bool = False  # every record of the transaction has been handed over
    failed: bool = False
    needs: dict[TopicPartition, int] = field(default_factory=dict)  # the highest seq sent there


class Ledger:
    """Tracks transactions in commit order and computes the watermark.

    Call order per transaction: `open` → `sent`/`present` per record → `close`; `delivered`
    from delivery reports; `acked` from the ack channel; `watermark()` whenever the producer
    wants to confirm.
    """

    def __init__(self, mode: AckMode, start: Lsn) -> None:
        self.mode = mode
        self._watermark = start
        self._queue: deque[InFlight] = deque()
        self._acked: dict[TopicPartition, Position] = {}
        self.records_in_flight = 0

    @property
    def in_flight(self) -> int:
        """Transactions not yet passed by the watermark."""
        return len(self._queue)

    @property
    def acked_positions(self) -> dict[TopicPartition, Position]:
        return dict(self._acked)

    def open(self, commit_lsn: Lsn) -> InFlight:
        if self._queue and commit_lsn <= self._queue[-1].commit_lsn:
            raise ValueError(f"transactions out of commit order: {commit_lsn} after {self._queue[-1].commit_lsn}")
        txn = InFlight(commit_lsn)
        self._queue.append(txn)
        return txn

    def sent(self, txn: InFlight, tp: TopicPartition, seq: int) -> None:
        """A record at position `(txn.commit_lsn, seq)` was handed to the broker client; its
        delivery report will follow. (Every record of an entry has the entry's commit LSN.)"""
        txn.pending += 1
        self.records_in_flight += 1
        if self.mode == "sink":
            self._need(txn, tp, seq)

    def present(self, txn: InFlight, tp: TopicPartition, seq: int) -> None:
        """A record at `(txn.commit_lsn, seq)` was found already in the partition (producer
        restart): no delivery follows, but in `sink` mode it still has to be acked."""
        if self.mode == "sink":
            self._need(txn, tp, seq)

    @staticmethod
    def _need(txn: InFlight, tp: TopicPartition, seq: int) -> None:
        have = txn.needs.get(tp)
        if have is None or have < seq:
            txn.needs[tp] = seq

    def delivered(self, txn: InFlight, ok: bool = True) -> None:
        """A delivery report arrived. A failed delivery pins the watermark below `txn` for good:
        the producer must stop and restart (re-reading from the slot)."""
        txn.pending -= 1
        self.records_in_flight -= 1
        if not ok:
            txn.failed = True

    def close(self, txn: InFlight) -> None:
        txn.closed = True

    def acked(self, tp: TopicPartition, position: Position) -> None:
        """The sink applied and committed `tp` up to `position` (acks may arrive late or twice)."""
        if self._acked.get(tp, ZERO_POSITION) < position:
            self._acked[tp] = position

    def _done(self, txn: InFlight) -> bool:
        if not txn.closed or txn.pending or txn.failed:
            return False
        if self.mode == "kafka":
            return True
        acked = self._acked
        lsn = txn.commit_lsn
        for tp, seq in txn.needs.items():
            a = acked.get(tp)
            if a is None or a.commit_lsn < lsn or (a.commit_lsn == lsn and a.seq < seq):
                return False
        return True

    def watermark(self) -> Lsn:
        """Advance past every done transaction at the head of the queue; return the watermark.

        Never moves backwards. Transactions are only ever passed in commit order.
        """
        q = self._queue
        while q and self._done(q[0]):
            self._watermark = q.popleft().commit_lsn
        return self._watermark

    def advance_idle(self, lsn: Lsn) -> Lsn:
        """Nothing is in flight and the server has sent everything up to `lsn` (a keepalive's
        WAL end, a heartbeat): the watermark may move there."""
        if not self._queue and lsn > self._watermark:
            self._watermark = lsn
        return self._watermark

    @property
    def blocked_on(self) -> InFlight | None:
        """The oldest transaction the watermark is waiting for (for status and logs)."""
        return self._queue[0] if self._queue else None
