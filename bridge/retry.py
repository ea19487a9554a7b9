"""Waiting out an outage: call again, with a doubling delay, while the failure is transient.

Used by the sink (target and broker calls) and by `bridge/app.py` (connecting at start); what is
transient is decided by `bridge/failures.py`. The capture has its own reconnect pacing
(`bridge.source.capture_base._Backoff`) because it is driven by its read
loop rather than a blocking call.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


def retry_while(fn: Callable[[], T], transient: Callable[[BaseException], bool], stop: threading.Event, what: str,
                *, wait_s: float | None = None, first_delay: float = 0.5, max_delay: float = 10.0) -> T:
    """`fn()`, called again after 0.5, 1, 2 … (at most `max_delay`) seconds for as long as it
    fails with an exception `transient` accepts. Raises the exception when it is not transient,
    when `stop` is set, or when `wait_s` (if given) has passed. `what` names the thing that is
    away, in the warning logged before each wait."""
    deadline = None if wait_s is None else time.monotonic() + wait_s
    delay = first_delay
    while True:
        try:
            return fn()
        except Exception as exc:
            if not transient(exc) or stop.is_set() or (deadline is not None and time.monotonic() > deadline):
                raise
            log.warning("%s unavailable (%s); retrying in %.1fs", what, exc, delay)
            stop.wait(delay)
            delay = min(delay * 2, max_delay)
