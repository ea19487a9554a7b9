"""Creating topics: on first use, with the bridge's partition count, compacted where asked."""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from bridge.errors import ProduceError

log = logging.getLogger(__name__)


class TopicManager:
    """Creates topics on first use and remembers their partition counts."""

    def __init__(self, bootstrap: str, *, partitions: int, replication_factor: int,
                 extra: dict[str, Any] | None = None) -> None:
        self._conf = {"bootstrap.servers": bootstrap, **(extra or {})}
        self._admin = AdminClient(self._conf)
        self.partitions = partitions
        self.replication_factor = replication_factor
        self._known: dict[str, int] = {}
        self._created: set[str] = set()

    def created(self, topic: str) -> bool:
        """Whether this manager created `topic` itself (so it held no record before)."""
        return topic in self._created

    def ensure(self, topic: str, *, partitions: int | None = None, compact: bool = False,
               timeout: float = 30.0) -> int:
        """Create `topic` if missing; return its partition count (an existing topic keeps its own)."""
        n = self._known.get(topic)
        if n is not None:
            return n
        deadline = time.monotonic() + timeout
        want = partitions or self.partitions
        created = False
        # Create before asking for metadata: some brokers (Tansu) auto-create a topic on a
        # metadata request, with their own partition count.
        config = {"cleanup.policy": "compact"} if compact else {}
        fut = self._admin.create_topics([NewTopic(topic, num_partitions=want,
                                                  replication_factor=self.replication_factor,
                                                  config=config)])[topic]
        try:
            fut.result(timeout)
            created = True
            log.info("created topic %s with %d partitions", topic, want, extra={"topic": topic})
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise ProduceError(f"cannot create topic: {exc}", topic=topic) from exc
        except TimeoutError as exc:
            raise ProduceError(f"the broker did not answer the creation of the topic within {timeout:g} s "
                               "(is it reachable with kafka.config's security settings?)", topic=topic) from exc
        while True:
            md = self._admin.list_topics(topic, timeout=10)
            t = md.topics.get(topic)
            if t is not None and t.error is None and t.partitions:
                if len(t.partitions) >= want or not created:
                    self._known[topic] = len(t.partitions)
                    if created:
                        self._created.add(topic)
                    return len(t.partitions)
            if time.monotonic() > deadline:
                raise ProduceError("topic metadata did not show the topic in time", topic=topic)
            time.sleep(0.1)
