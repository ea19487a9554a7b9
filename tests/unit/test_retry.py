"""`retry_while`: transient failures are waited out, others raised at once."""

from __future__ import annotations

import threading

import pytest

from bridge.retry import retry_while


class Flaky:
    def __init__(self, failures: int, exc: Exception) -> None:
        self.failures, self.exc, self.calls = failures, exc, 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.exc
        return "ok"


def transient(exc: BaseException) -> bool:
    return isinstance(exc, ConnectionError)


def test_transient_failures_are_retried_until_success() -> None:
    fn = Flaky(3, ConnectionError("away"))
    assert retry_while(fn, transient, threading.Event(), "thing", first_delay=0.001) == "ok"
    assert fn.calls == 4


def test_other_failures_are_raised_at_once() -> None:
    fn = Flaky(3, ValueError("wrong"))
    with pytest.raises(ValueError):
        retry_while(fn, transient, threading.Event(), "thing", first_delay=0.001)
    assert fn.calls == 1


def test_stop_and_the_time_limit_end_the_waiting() -> None:
    stop = threading.Event()
    stop.set()
    fn = Flaky(10, ConnectionError("away"))
    with pytest.raises(ConnectionError):
        retry_while(fn, transient, stop, "thing", first_delay=0.001)
    assert fn.calls == 1
    fn = Flaky(10_000, ConnectionError("away"))
    with pytest.raises(ConnectionError):
        retry_while(fn, transient, threading.Event(), "thing", wait_s=0.05, first_delay=0.001, max_delay=0.002)
    assert 1 < fn.calls < 10_000
