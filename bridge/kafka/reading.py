"""Reading partitions: their offsets, and their records up to their end."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from bridge import failures
from bridge.errors import BridgeError, ProduceError

log = logging.getLogger(__name__)


def watermarks(consumer: Consumer, topic: str, partition: int, deadline: float) -> tuple[int, int]:
    """(low, high) of a partition, retried while its leader is not ready (a topic just created:
    Apache Kafka answers NOT_LEADER_FOR_PARTITION for a moment)."""
    while True:
        try:
            lo, hi = consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                    timeout=max(1.0, deadline - time.monotonic()))
            return int(lo), int(hi)
        except KafkaException as exc:
            err = exc.args[0]
            if not failures.partition_not_ready(err) or time.monotonic() > deadline:
                raise ProduceError(f"cannot read the partition's offsets: {err}", topic=topic,
                                   partition=partition) from exc
            log.info("partition %s/%d not ready (%s): retrying", topic, partition, err.str(),
                     extra={"topic": topic, "partition": partition})
            time.sleep(0.2)


def read_to_end(consumer: Consumer, assign: list[TopicPartition], deadline: float, what: str,
                error: Callable[..., BridgeError] = ProduceError) -> Iterator[Message]:
    """The records of `assign` (topic, partition, start offset) up to each partition's end, as
    its end-of-partition event tells (the consumer needs `enable.partition.eof`): high watermarks
    are not trusted, as some brokers (Tansu) report the last *batch's* base offset + 1 there.
    Unassigns when done. Raises `error` (`ProduceError` unless given) naming `what` on a
    consumer error or when `deadline` passes."""
    if not assign:
        return
    topic = assign[0].topic
    pending = {tp.partition for tp in assign}
    consumer.assign(assign)
    try:
        while pending:
            if time.monotonic() > deadline:
                raise error(f"timed out {what}", topic=topic, partitions=sorted(pending))
            for msg in consumer.consume(10_000, 1.0):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pending.discard(msg.partition() or 0)
                        continue
                    raise error(f"{what}: {err}", topic=topic, partition=msg.partition())
                yield msg
    finally:
        consumer.unassign()
