"""What both capture modes share: the `ChangeSource` interface, `WalMessage`, the decoding
options, the reconnect pacing and retry rule, and `ReconnectingCapture`, the read-and-reconnect
loop both modes run (see `bridge.source.capture`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from bridge import failures
from bridge.errors import SourceError
from bridge.lsn import Lsn
from bridge.source.slot import validate_slot_name

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




class ReconnectingCapture:
    """The loop both capture modes run around their connection: `read` reconnects (with
    backoff) after a lost connection and re-delivers from the last confirmed LSN; `confirmed`
    is the last LSN given to `confirm`.

    A mode supplies `_connected`, `_connect`, `_drop_connection`, `_read_connected` (raising one
    of `_LOST` when the connection is gone), and may refine `_check_lost` (raise for a failure a
    reconnect cannot fix) and `_after_reconnect` (reset what a reconnect re-delivers).
    """

    _LOST: tuple[type[BaseException], ...] = (_ConnectionLost,)

    def __init__(self, dsn: str, slot: str, reconnect_max_s: float) -> None:
        self.dsn = dsn
        self.slot = validate_slot_name(slot)
        self.reconnects = 0
        self._confirmed: Lsn | None = None
        self._backoff = _Backoff(reconnect_max_s)

    # --- what a mode supplies ---------------------------------------------------------------------

    def _connected(self) -> bool:
        raise NotImplementedError

    def _connect(self) -> None:
        raise NotImplementedError

    def _drop_connection(self) -> None:
        raise NotImplementedError

    def _read_connected(self, deadline: float) -> list[WalMessage]:
        raise NotImplementedError

    def _check_lost(self, exc: BaseException) -> None:
        """Called with each `_LOST` error of a read: raise when a reconnect cannot fix it."""

    def _after_reconnect(self) -> None:
        """Called after each successful reconnect, before anything is re-delivered."""

    # --- the loop -------------------------------------------------------------------------------

    def read(self, timeout: float) -> list[WalMessage]:
        """Lines not returned before, or [] after `timeout` seconds.

        After a lost connection, reconnects (backoff) and re-delivers from the last confirmed
        LSN; `reconnects` is incremented before the first re-delivered line is returned.
        Raises `SourceError` for failures a reconnect cannot fix.
        """
        deadline = time.monotonic() + timeout
        while True:
            if not self._connected() and not self._reconnect(deadline):
                if time.monotonic() >= deadline:
                    return []
                continue
            try:
                return self._read_connected(deadline)
            except self._LOST as exc:
                self._check_lost(exc)
                self._connection_lost(exc, "")
                if time.monotonic() >= deadline:
                    return []

    def _connection_lost(self, exc: BaseException, doing: str) -> None:
        """Forget the connection; the next `read` reconnects once the backoff allows."""
        log.warning("connection for slot %s lost%s: %s", self.slot, doing, exc)
        self._drop_connection()
        self._backoff.failed()

    def _reconnect(self, deadline: float) -> bool:
        """Try to reconnect once the backoff allows, waiting at most until `deadline`."""
        if not self._backoff.attempt(self._connect, deadline, self.slot):
            return False
        self._after_reconnect()
        self.reconnects += 1
        log.warning("reconnected to slot %s (reconnect #%d); re-delivering from %s",
                    self.slot, self.reconnects, self._confirmed or "the slot's confirmed position")
        return True

    @property
    def confirmed(self) -> Lsn | None:
        """The last LSN given to `confirm` (None before the first)."""
        return self._confirmed
