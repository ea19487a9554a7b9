"""Waiting on observable state instead of sleeping, and failing on process exits nobody asked for."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

T = TypeVar("T")


class Watched(Protocol):
    """A child process a test expects to keep running (`tests.pipeline.BridgeProcess`)."""

    name: str

    def unrequested_exit(self) -> int | None: ...

    def log_tail(self, n: int = 60) -> str: ...


def check_alive(procs: Sequence[Watched]) -> None:
    """Fail with its log tail when one of `procs` exited without the test asking (any exit code:
    a kill or terminate by the test is asked for, a crash, an OOM kill or a clean exit 0 is not)."""
    for p in procs:
        code = p.unrequested_exit()
        if code is not None:
            raise AssertionError(f"{p.name} exited {code} without being asked to:\n{p.log_tail()}")


def logs_of(procs: Sequence[Watched]) -> str:
    """The log tail of each process, for a failure message."""
    return "\n".join(f"--- {p.name} ---\n{p.log_tail()}" for p in procs)


def wait_for(cond: Callable[[], T], timeout: float, what: str, procs: Sequence[Watched] = (),
             interval: float = 0.3, last: Callable[[], object] | None = None) -> T:
    """Poll `cond()` every `interval` s until it returns something truthy, and return that.

    Between polls, `check_alive(procs)`. On timeout raises AssertionError naming `what`, with
    `last()` (the state last seen, when given) and the processes' log tails."""
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        check_alive(procs)
        if time.monotonic() > deadline:
            seen = f"; last seen: {last()}" if last is not None else ""
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}{seen}\n{logs_of(procs)}")
        time.sleep(interval)
