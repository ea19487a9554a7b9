"""The ack follower: the one place the producer takes delivery reports and sink acks.

Called from every wait of the producer (the stream loop, back-pressure, a schema hold, the
snapshot, the drain). Guarantees: after `poll`, every delivery report librdkafka had and every
ack on `<prefix>._acks` that was readable has been given to the `Ledger` — delivery callbacks
run inside `Producer.poll`, on this thread.
"""

from __future__ import annotations

from typing import Protocol

from bridge import metrics
from bridge.ack.channel import Ack
from bridge.ack.watermark import Ledger


class AckSource(Protocol):
    """`bridge.ack.channel.AckReader`: the sink's acks, read from the acks topic."""

    def poll(self, timeout: float = 0.0, max_records: int = 10_000) -> list[Ack]: ...

    def read_to_end(self, timeout: float = 10.0) -> list[Ack]: ...


class Poller(Protocol):
    """The part of `confluent_kafka.Producer` the follower uses."""

    def poll(self, timeout: float = ...) -> int: ...


class AckFollower:
    """Feeds delivery reports (`producer.poll`) and acks (`acks`, None with `ack: kafka`) to the ledger."""

    def __init__(self, producer: Poller, ledger: Ledger, acks: AckSource | None) -> None:
        self._producer = producer
        self._ledger = ledger
        self._acks = acks

    def catch_up(self) -> None:
        """At start, before anything is produced: every ack already on the topic."""
        if self._acks is not None:
            self._take(self._acks.read_to_end())

    def poll(self, timeout: float = 0.0) -> None:
        """Wait up to `timeout` for delivery reports, then take every ack that is there."""
        self._producer.poll(timeout)
        if self._acks is not None:
            self._take(self._acks.poll(0))

    def _take(self, acks: list[Ack]) -> None:
        ledger = self._ledger
        for ack in acks:
            ledger.acked((ack.topic, ack.partition), ack.position)
            metrics.ACKED_LSN.set(ack.position.commit_lsn.value)
