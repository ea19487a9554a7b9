"""What both capture modes share: the `ChangeSource` interface, `WalMessage`, the decoding
options, and the reconnect pacing and retry rule (see `bridge.source.capture`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from bridge import failures
from bridge.errors import SourceError
from bridge.lsn import Lsn

log = logging.getLogger(__name__)

DECODING_OPTIONS: tuple[tuple[str, str], ...] = (
    ("include-xids", "1"),
    ("include-timestamp", "1"),
    ("skip-empty-xacts", "1"),
)
"""test_decoding options both modes use; the parser relies on xids and commit timestamps."""




@dataclass(slots=True)
class WalMessage:
    """One test_decoding line and the LSN decoding reported for it (not frozen: one per line).

    The LSN is XLogData's dataStart (stream) or the `lsn` column (sql): for BEGIN the
    transaction's first record, for a change its record, for COMMIT the end of the commit record
    (the commit LSN, what the slot is confirmed to), for a non-transactional message the end of
    its record (what `pg_logical_emit_message` returned). A lazily written BEGIN (skip-empty-xacts)
    gets the LSN of the change that follows it in both modes. Several lines may share one LSN.
    """

    lsn: Lsn
    data: str


class ChangeSource(Protocol):
    """What the producer reads changes from."""

    reconnects: int

    def read(self, timeout: float) -> list[WalMessage]:
        """Lines that arrived, in WAL commit order; [] after `timeout` seconds without any.
        Waits on the socket (never busy-polls). Raises `SourceError` on a fatal problem."""
        ...

    def confirm(self, lsn: Lsn) -> None:
        """Allow the slot to advance to `lsn` (never beyond). Lower values than before are ignored."""
        ...

    @property
    def server_wal_end(self) -> Lsn:
        """The latest server WAL end known (keepalives / XLogData, or pg_current_wal_lsn())."""
        ...

    def close(self) -> None:
        """Close connections; the slot keeps its confirmed position."""
        ...


def _retryable(exc: BaseException) -> bool:
    """A reconnect may succeed: a lost or refused connection, the server shutting down or
    starting, a slot still held by a walsender that has not noticed its client is gone."""
    return failures.transient(exc)


class _Backoff:
    """Exponential reconnect delay: 0.1 s doubling up to `max_s`; reset after a success."""

    def __init__(self, max_s: float) -> None:
        self.max_s = max_s
        self.delay = 0.0
        self.next_at = 0.0

    def failed(self) -> None:
        self.delay = min(self.max_s, max(0.1, self.delay * 2))
        self.next_at = time.monotonic() + self.delay

    def reset(self) -> None:
        self.delay = 0.0
        self.next_at = 0.0

    def attempt(self, connect: Callable[[], None], deadline: float, slot: str) -> bool:
        """Call `connect` once the backoff allows, waiting at most until `deadline`. True when it
        connected; False when it is not time yet or a retryable failure was recorded. Raises
        `SourceError` for failures that will not go away."""
        wait = self.next_at - time.monotonic()
        if wait > 0:
            time.sleep(min(wait, max(0.0, deadline - time.monotonic())))
            if time.monotonic() < self.next_at:
                return False
        try:
            connect()
        except SourceError as exc:
            if not _retryable(exc):
                raise
            self.failed()
            log.warning("reconnect to slot %s failed (next try in %.1fs): %s", slot, self.delay, exc)
            return False
        self.reset()
        return True


class _ConnectionLost(Exception):
    """Internal: the replication stream ended or its socket failed; reconnect."""


