"""At start, the producer and the sink wait while their PostgreSQL is away, and stop soon on a
mistake (`bridge.app.build_waiting`): the decision comes from SQLSTATEs and libpq's PQping, never
from the text of an error. Real PostgreSQL over TCP."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from psycopg import conninfo

from bridge.app import _ANSWERED_RETRIES, build_waiting
from bridge.config import Config
from bridge.errors import SourceError
from bridge.local.postgres import LocalPostgres
from bridge.source.slot import sql_connect
from tests.conftest import PgServer


def connecting_build(dsn: str, calls: list[float]) -> Callable[[Config], tuple[Any, Callable[[], None]]]:
    """A build that, like the producer's, starts by connecting to PostgreSQL (SourceError on failure)."""
    def build(_cfg: Config) -> tuple[Any, Callable[[], None]]:
        calls.append(time.monotonic())
        conn = sql_connect(dsn)
        return conn, conn.close

    return build


def test_start_waits_for_a_postgres_that_is_down_until_it_is_up() -> None:
    local = LocalPostgres().start()
    starter: threading.Timer | None = None
    try:
        dsn = local.dsn("postgres")
        local.stop()
        starter = threading.Timer(3.0, local.start)
        starter.start()
        calls: list[float] = []
        conn, close = build_waiting(Config(), connecting_build(dsn, calls), threading.Event(), lambda: dsn,
                                    wait_s=60)
        try:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        finally:
            close()
        assert len(calls) >= 2, "the first attempts, while the server was down, must have failed and been retried"
        assert calls[-1] - calls[0] >= 2.0
    finally:
        if starter is not None:
            starter.join()
        local.destroy()


def test_start_stops_soon_when_the_server_answers_and_still_refuses(pg: PgServer) -> None:
    info = conninfo.conninfo_to_dict(pg.admin_dsn)
    info["dbname"] = f"no_such_db_{uuid.uuid4().hex[:8]}"  # the server answers, and refuses this one
    dsn = conninfo.make_conninfo(**{k: str(v) for k, v in info.items() if v is not None})
    calls: list[float] = []
    started = time.monotonic()
    with pytest.raises(SourceError):
        build_waiting(Config(), connecting_build(dsn, calls), threading.Event(), lambda: dsn, wait_s=60)
    assert len(calls) == 1 + _ANSWERED_RETRIES
    assert time.monotonic() - started < 15.0
