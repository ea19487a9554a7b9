"""The topics the producer writes, created on first use, and their tails after a restart.

Called by the Router (`open`: a table's topic and partition count) and the Emitter (`tail`:
is this record already in its partition?). Guarantees: a topic exists before its name is
returned; its partitions' tails are read once, when it is first opened, and are consulted only
until the stream has passed the highest of them (`passed`), after which no record can be in
Kafka yet and nothing is checked (invariant 4). Raises `ProduceError` from the topic admin.
"""

from __future__ import annotations

import logging

from bridge.codec.names import topic_name
from bridge.lsn import Lsn
from bridge.produce.topics import Tail, TailReader, TopicManager

log = logging.getLogger(__name__)


class TopicSet:
    """Every table topic of this producer run: name, partition count, tails."""

    def __init__(self, topics: TopicManager, tails: TailReader, topic_prefix: str) -> None:
        self._topics = topics
        self._reader = tails
        self._prefix = topic_prefix
        self._opened: dict[tuple[str, str], tuple[str, int]] = {}
        self._tails: dict[str, dict[int, Tail]] = {}
        self._until: Lsn | None = None  # the highest commit LSN among the loaded tails
        self.checking = False  # True while some loaded tail is ahead of the stream

    def open(self, schema: str, table: str) -> tuple[str, int]:
        """`(topic, partitions)` of a table: created when missing, its tails read (first call only)."""
        key = (schema, table)
        opened = self._opened.get(key)
        if opened is None:
            topic = topic_name(self._prefix, schema, table)
            n = self._topics.ensure(topic)
            # a topic this run just created holds nothing yet: no tails to read (and its
            # partitions may still be electing leaders, which reading would wait out)
            tails = self._tails[topic] = {} if self._topics.created(topic) else self._reader.tails_with_kind(topic, n)
            if tails:
                log.info("topic %s: resuming after tails %s", topic,
                         {p: str(v.position) for p, v in tails.items()}, extra={"topic": topic})
                top = max(v.position.commit_lsn for v in tails.values())
                if self._until is None or top > self._until:
                    self._until = top
                self.checking = True
            opened = self._opened[key] = (topic, n)
        return opened

    def tails(self, topic: str) -> dict[int, Tail]:
        """The loaded tails of `topic` by partition (empty once passed, or when it had none)."""
        return self._tails.get(topic, {})

    def tail(self, topic: str, partition: int) -> Tail | None:
        tails = self._tails.get(topic)
        return None if tails is None else tails.get(partition)

    def passed(self, commit_lsn: Lsn) -> None:
        """The stream is at `commit_lsn`: past every loaded tail, stop checking them."""
        if self._until is not None and commit_lsn > self._until:
            for tails in self._tails.values():
                tails.clear()
            self._until = None
            self.checking = False
