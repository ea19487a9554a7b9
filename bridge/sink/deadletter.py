"""Dead letters: records the sink cannot decode or the target rejects, kept whole.

Each goes to `sink.dead_letter_topic` with its original key, value and headers, plus headers
naming the error and where it came from. The batch's other records are applied; the metric
`bridge_dead_letters_total{topic}` counts them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from confluent_kafka import KafkaError, Message, Producer

from bridge import metrics
from bridge.errors import SinkError
from bridge.kafka.headers import HEADER_DLQ_ERROR, HEADER_DLQ_OFFSET, HEADER_DLQ_PARTITION, HEADER_DLQ_TOPIC

log = logging.getLogger(__name__)

H_ERROR = HEADER_DLQ_ERROR
H_TOPIC = HEADER_DLQ_TOPIC
H_PARTITION = HEADER_DLQ_PARTITION
H_OFFSET = HEADER_DLQ_OFFSET


class DeadLetters:
    def __init__(self, producer: Producer, topic: str) -> None:
        self._producer = producer
        self.topic = topic

    def publish(self, items: Sequence[tuple[Message, BaseException]], timeout: float = 60.0) -> None:
        """Write every item and wait until the broker has them all. Raises `SinkError` otherwise."""
        errors: list[KafkaError] = []

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                errors.append(err)

        for msg, exc in items:
            original = msg.headers() or []
            pairs = list(original.items()) if isinstance(original, dict) else list(original)
            headers: list[tuple[str, str | bytes | None]] = [(str(h[0]), h[1]) for h in pairs]
            headers += [
                (H_ERROR, f"{type(exc).__name__}: {exc}"[:4000].encode()),
                (H_TOPIC, (msg.topic() or "").encode()),
                (H_PARTITION, str(msg.partition()).encode()),
                (H_OFFSET, str(msg.offset()).encode()),
            ]
            self._producer.produce(self.topic, key=msg.key(), value=msg.value(), headers=headers,
                                   on_delivery=on_delivery)
            metrics.DEAD_LETTERS.labels(msg.topic()).inc()
            log.warning("dead letter: %s", exc, extra={"topic": msg.topic(), "partition": msg.partition(),
                                                       "offset": msg.offset()})
        if self._producer.flush(timeout) > 0 or errors:
            raise SinkError(f"dead letters not delivered: {errors[0] if errors else 'timeout'}",
                            topic=self.topic)
