"""Holding the stream while the schema registry refuses a schema (or does not answer).

Wraps the codec factory the Router calls. Called before anything of the change at hand is sent,
so holding keeps every guarantee: the transaction's ledger entry stays open, the slot is not
confirmed past it, and nothing after it is produced out of order. Meanwhile delivery reports
and acks are still taken (`AckFollower`), and `tick` is called (the liveness beat: a held
producer is alive, and a restart would only meet the same refusal — a crash loop). Each attempt
says which subject and level refused what. A replication connection that times out meanwhile
is reopened by the capture afterwards; what the server then sends again is skipped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from bridge.errors import RegistryUnavailableError, SchemaRefusedError
from bridge.produce.acks import AckFollower
from bridge.produce.router import TableCodecLike
from bridge.relation import Relation

log = logging.getLogger(__name__)

HOLD_MAX_WAIT_S = 30.0  # a refused schema is asked for again after 1, 2, 4 ... at most 30 s
_TICK_S = 0.2  # how often `tick` runs while held


class StoppedWhileHeld(Exception):
    """`stop` was set while the stream was held for a refused schema (caught by the producer)."""


class StopSignal:
    """The stop events a producer obeys: none at construction, then the one `run` is given."""

    def __init__(self) -> None:
        self._events: list[threading.Event] = []

    def watch(self, event: threading.Event) -> None:
        """Obey `event` too (called by `ChangeProducer.run` with its `stop`)."""
        if all(e is not event for e in self._events):
            self._events.append(event)

    def is_set(self) -> bool:
        return any(e.is_set() for e in self._events)


class SchemaHold:
    """`codec_for` that waits, with a doubling delay, until the registry takes the schema."""

    def __init__(self, codec_for: Callable[[Relation], TableCodecLike], follower: AckFollower, *,
                 stop: StopSignal, tick: Callable[[], None], slot: str = "") -> None:
        self._codec_for = codec_for
        self._follower = follower
        self._stop = stop
        self._tick = tick
        self._slot = slot
        self.held_for: str | None = None  # the subject a refused schema holds the stream for

    def codec_for(self, relation: Relation) -> TableCodecLike:
        """The relation version's codec, once the registry accepts its schemas.
        Raises `StoppedWhileHeld` when `stop` is set during the hold."""
        delay = 1.0
        while True:
            try:
                codec = self._codec_for(relation)
            except (SchemaRefusedError, RegistryUnavailableError) as exc:
                self.held_for = str(exc.context.get("subject", relation.qualified))
                log.error("%s; holding the stream of slot %s at this transaction, next attempt in %.0fs",
                          exc, self._slot, delay, extra={"slot": self._slot, "table": relation.qualified})
                self._wait(delay)
                delay = min(delay * 2, HOLD_MAX_WAIT_S)
                continue
            if self.held_for is not None:
                log.warning("schema accepted for %s: the stream goes on", relation.qualified,
                            extra={"table": relation.qualified})
                self.held_for = None
            return codec

    def _wait(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self._stop.is_set() and time.monotonic() < end:
            self._tick()
            self._follower.poll(_TICK_S)
        if self._stop.is_set():
            raise StoppedWhileHeld()
