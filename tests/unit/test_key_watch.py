"""KeyWatch: a key change read from the catalog applies only to transactions committing after the
WAL position read with it, and the check runs at most once per interval."""

from __future__ import annotations

from typing import Any

from bridge.errors import SourceError
from bridge.lsn import Lsn
from bridge.source.decoder import KeyWatch


class FakeCatalog:
    def __init__(self) -> None:
        self.answers: list[Any] = []
        self.calls = 0

    def key_changes(self) -> tuple[str | None, list[tuple[str, str]]]:
        self.calls += 1
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[no-any-return]


class FakeDecoder:
    def __init__(self) -> None:
        self.reloaded: list[tuple[str, str]] = []

    def reload(self, schema: str, table: str) -> None:
        self.reloaded.append((schema, table))


def test_reload_only_after_the_position_read_with_the_change() -> None:
    now = [0.0]
    cat, dec = FakeCatalog(), FakeDecoder()
    watch = KeyWatch(cat, dec, interval_s=1.0, clock=lambda: now[0])  # type: ignore[arg-type]
    watch.tick()
    assert cat.calls == 0  # not due yet
    now[0] = 1.0
    cat.answers.append(("0/100", [("public", "t")]))
    watch.tick()
    watch.tick()  # same instant: no second query
    assert cat.calls == 1
    watch.before_commit(Lsn.parse("0/100"))  # may predate the ALTER: old key kept
    assert dec.reloaded == []
    watch.before_commit(Lsn.parse("0/101"))
    assert dec.reloaded == [("public", "t")]
    watch.before_commit(Lsn.parse("0/200"))
    assert dec.reloaded == [("public", "t")]  # once


def test_a_failed_check_is_retried_next_interval() -> None:
    now = [5.0]
    cat, dec = FakeCatalog(), FakeDecoder()
    watch = KeyWatch(cat, dec, interval_s=1.0, clock=lambda: now[0])  # type: ignore[arg-type]
    now[0] = 7.0
    cat.answers.append(SourceError("down"))
    watch.tick()
    now[0] = 8.0
    cat.answers.append(("0/10", []))
    watch.tick()
    assert cat.calls == 2 and dec.reloaded == []
