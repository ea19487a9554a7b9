"""The sink's one commit path: a checkpoint owns the pending batch's offsets, positions and acks.

What the sink loop consumed since the last commit is `Pending`: the decoded records, the
records that could not be decoded (dead letters), and the next offset per partition.
`Checkpoint.commit` is the only place where the target's positions, the group's offsets and
the acks move, always in this order (see its docstring); a step that fails stops the ones after
it. A TRUNCATE of a topic of several partitions (the truncate barrier, truncate.py) and the
barrier's release go through the same `commit`, as batches of their own.

Guarantee: a Kafka offset is committed only after the target committed every record below it
(or it went to the dead-letter topic), and an ack is published only after the offset commit. The
acked position of a partition is one stored in the target.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from bridge import metrics
from bridge.ack.channel import Ack, AckPublisher
from bridge.errors import SinkError
from bridge.events import Position
from bridge.sink.deadletter import DeadLetters
from bridge.sink.records import PartitionKey, SinkRecord

log = logging.getLogger(__name__)

T = TypeVar("T")
Rejects = list[tuple[SinkRecord, Exception]]  # records the target refused, with why


class Retry(Protocol):
    """Runs a call, trying again while its failure is one that passes (see `SinkLoop`)."""

    def __call__(self, fn: Callable[[], T]) -> T: ...


class ApplyStage(Protocol):
    """What the checkpoint needs of the apply stage (`bridge.sink.apply.Applier`)."""

    def apply_isolating(self, records: list[SinkRecord], rejects: Rejects | None = None, *,
                        dead_letter: Callable[[Rejects], None] | None = None
                        ) -> tuple[dict[PartitionKey, Position], Rejects]: ...

    def arrive(self, rec: SinkRecord, partitions: int) -> bool: ...


@dataclass(slots=True)
class Pending:
    """What was consumed since the last commit. A partition is in `offsets` once anything of it
    was taken (a record, a dead letter, a tombstone)."""

    records: list[SinkRecord] = field(default_factory=list)
    raw_bytes: int = 0
    offsets: dict[PartitionKey, int] = field(default_factory=dict)  # next offset to commit
    dead: list[tuple[Message, BaseException]] = field(default_factory=list)
    messages: dict[tuple[str, int, int], Message] = field(default_factory=dict)
    started: float = 0.0
    # rejected by the target in an attempt of this batch (kept across retries: see apply_isolating)
    rejected: list[tuple[SinkRecord, Exception]] = field(default_factory=list)
    # a TRUNCATE arriving at its barrier, with the topic's partition count (alone in its batch)
    arrival: tuple[SinkRecord, int] | None = None
    # barriers passed: the position to ack (their offsets are in `offsets`)
    released: dict[PartitionKey, Position] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.records) + len(self.dead)

    def empty(self) -> bool:
        return not self.offsets and self.arrival is None


class Checkpoint:
    """Commits what the sink consumed. Built by `SinkLoop` from its collaborators; `retry_target`
    and `retry_broker` wrap the calls to the target and to the broker."""

    def __init__(self, *, consumer: Consumer, applier: ApplyStage, acks: AckPublisher, dead_letters: DeadLetters,
                 group_id: str, retry_target: Retry, retry_broker: Retry) -> None:
        self._consumer = consumer
        self._applier = applier
        self._acks = acks
        self._dead_letters = dead_letters
        self._group_id = group_id
        self._retry_target = retry_target
        self._retry_broker = retry_broker
        self.pending = Pending()
        self.applied_rows = 0
        self.batches = 0
        self.last_positions: dict[PartitionKey, Position] = {}

    # -- what the loop consumed -------------------------------------------------------------------

    def add(self, rec: SinkRecord, msg: Message, size: int) -> None:
        p = self.pending
        p.offsets[(rec.topic, rec.partition)] = rec.offset + 1
        p.raw_bytes += size
        p.messages[(rec.topic, rec.partition, rec.offset)] = msg
        p.records.append(rec)

    def skip(self, topic: str, partition: int, offset: int) -> None:
        """A record with nothing to apply (a tombstone: its delete came just before it)."""
        self.pending.offsets[(topic, partition)] = offset + 1

    def dead(self, topic: str, partition: int, offset: int, msg: Message, exc: BaseException) -> None:
        """A record that cannot be decoded or admitted: it goes to the dead-letter topic."""
        p = self.pending
        p.offsets[(topic, partition)] = offset + 1
        p.messages[(topic, partition, offset)] = msg
        p.dead.append((msg, exc))

    def abandon(self) -> None:
        """Drop the pending batch uncommitted (a rebalance): its offsets stay where they were, so
        whoever owns the partitions next reads it again."""
        self.pending = Pending()

    # -- the truncate barrier --------------------------------------------------------------------

    def arrive(self, rec: SinkRecord, partitions: int) -> bool:
        """A TRUNCATE in a topic of `partitions` partitions: commit what was consumed before it,
        then commit its arrival at the barrier (a batch of its own). Returns whether the barrier
        is complete; if not, the TRUNCATE's offset stays uncommitted (its position is acked) and
        the caller waits, then calls `release`."""
        self.commit()
        self.pending.arrival = (rec, partitions)
        committed = self.commit()
        return (rec.topic, rec.partition) in committed

    def release(self, topic: str, partition: int, offset: int, position: Position) -> None:
        """The barrier of the TRUNCATE at `offset` is complete: commit past it (after what is
        pending) and ack its position."""
        self.commit()
        self.pending.offsets[(topic, partition)] = offset + 1
        self.pending.released[(topic, partition)] = position
        self.commit()

    # -- the commit ------------------------------------------------------------------------------

    def commit(self, retry: bool = True) -> set[PartitionKey]:
        """Commit the pending batch, in this order; a step that fails stops the ones after it
        (the batch is then re-read from the last committed offsets, and the position table in the
        target makes the replay harmless):

        1. apply the batch in ONE target transaction (rows + new positions per partition),
           isolating records the target rejects — or, for a TRUNCATE at its barrier, the
           arrival (`Applier.arrive`), or nothing for a barrier's release;
        2. publish rejected or undecodable records to the dead-letter topic and wait for the broker;
        3. commit the Kafka offsets (the position in the commit metadata);
        4. publish the acks `(topic, partition, position)` to `<prefix>._acks`.

        Step 1 is retried while the target is unreachable (a restart) when `retry`; the batch
        stays in memory meanwhile. Returns the partitions whose offsets were committed."""
        p = self.pending
        if p.empty():
            return set()
        started = time.monotonic()
        # 1. One target transaction: rows and positions.
        positions, held = self._apply(p, retry)
        # 2. Dead letters (undecodable records; those the target rejected were published in step
        # 1, before their positions moved), before the offsets that would skip them are committed.
        if p.dead:
            self._dead_letters.publish(p.dead)
        # 3. Offsets, with the applied position as commit metadata.
        offsets = []
        for (topic, partition), nxt in p.offsets.items():
            pos = positions.get((topic, partition))
            offsets.append(TopicPartition(topic, partition, nxt, metadata=str(pos) if pos else ""))
        if offsets:
            try:
                self._retry_broker(lambda: self._consumer.commit(offsets=offsets, asynchronous=False))
            except KafkaException as exc:
                raise SinkError(f"offset commit failed after the target commit: {exc}") from exc
        # 4. Acks for the producer's watermark.
        if positions:
            acks = [Ack(t, part, pos, self._group_id, p.offsets.get((t, part), held.get((t, part), -1)))
                    for (t, part), pos in positions.items()]
            self._retry_broker(lambda: self._acks.publish(acks))
            self.last_positions.update(positions)
        self.pending = Pending()
        if p.arrival is None and not p.released:
            self._observe(p, started)
        return set(p.offsets)

    def _apply(self, p: Pending, retry: bool) -> tuple[dict[PartitionKey, Position], dict[PartitionKey, int]]:
        """Step 1. Returns the positions to ack and, for a partition waiting at a barrier, the
        offset to ack with (its TRUNCATE's, not committed)."""
        run: Retry = self._retry_target if retry else _once
        if p.arrival is not None:
            rec, partitions = p.arrival
            tp = (rec.topic, rec.partition)
            if run(lambda: self._applier.arrive(rec, partitions)):
                p.offsets[tp] = rec.offset + 1
                return {tp: rec.change.position}, {}
            return {tp: rec.change.position}, {tp: rec.offset}
        positions: dict[PartitionKey, Position] = {}
        if p.records:
            def dead_letter(rejected: Rejects) -> None:
                self._dead_letters.publish([(p.messages[(r.topic, r.partition, r.offset)], e) for r, e in rejected])

            positions, _ = run(lambda: self._applier.apply_isolating(p.records, p.rejected, dead_letter=dead_letter))
        for tp, pos in p.released.items():
            positions.setdefault(tp, pos)
        return positions, {}

    def _observe(self, p: Pending, started: float) -> None:
        n = len(p.records)
        self.applied_rows += n
        self.batches += 1
        metrics.SINK_BATCH_ROWS.observe(n)
        metrics.SINK_BATCH_DURATION.observe(time.monotonic() - started)
        metrics.LAST_PROGRESS.labels("sink").set(time.time())
        if p.records:
            ts = p.records[-1].change.commit_ts_us
            if ts is not None:
                metrics.END_TO_END_LAG.observe(max(0.0, (time.time() * 1e6 - ts) / 1e6))


def _once(fn: Callable[[], T]) -> T:
    return fn()
