"""The test rig: a real PostgreSQL and real Kafka-protocol brokers over TCP on 127.0.0.1.

- `pg`: one throwaway PostgreSQL 15 cluster per test session (or `BRIDGE_TEST_PG_DSN`).
- `source_dsn` / `target_dsn`: a fresh database per test on that cluster.
- `broker`: parametrised over `kafka` (Apache Kafka 4.x, KRaft) and `tansu` (memory storage), one
  process per session and kind (or `BRIDGE_TEST_BOOTSTRAP`, which then runs as the single kind
  `external`). Its log is printed when a test that used it fails.
- `own_broker`: a broker started for one test alone, for tests that stop or pause it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from bridge.local.brokers import BROKERS, LocalBroker
from bridge.local.postgres import LocalPostgres

BROKER_KINDS = ["external"] if os.environ.get("BRIDGE_TEST_BOOTSTRAP") else ["kafka", "tansu"]


@dataclass
class PgServer:
    """Either our own cluster (`local` set: restartable) or an existing server named by a DSN."""

    admin_dsn: str
    local: LocalPostgres | None

    def create_database(self, prefix: str = "db") -> str:
        if self.local is not None:
            return self.local.create_database(prefix)
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        info = psycopg.conninfo.conninfo_to_dict(self.admin_dsn)
        info["dbname"] = name
        return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in info.items() if v is not None})


@pytest.fixture(scope="session")
def pg() -> Iterator[PgServer]:
    dsn = os.environ.get("BRIDGE_TEST_PG_DSN")
    if dsn:
        yield PgServer(dsn, None)
        return
    cluster = LocalPostgres().start()
    try:
        yield PgServer(cluster.dsn("postgres"), cluster)
    finally:
        cluster.destroy()


@pytest.fixture
def source_dsn(pg: PgServer) -> str:
    return pg.create_database("src")


@pytest.fixture
def target_dsn(pg: PgServer) -> str:
    return pg.create_database("dst")


@dataclass
class Broker:
    kind: str
    bootstrap: str
    local: LocalBroker | None


_session_brokers: dict[str, LocalBroker] = {}


def _start_broker(kind: str) -> LocalBroker:
    return BROKERS[kind]().start()


@pytest.fixture(scope="session")
def _broker_pool() -> Iterator[dict[str, LocalBroker]]:
    try:
        yield _session_brokers
    finally:
        for b in _session_brokers.values():
            b.destroy()
        _session_brokers.clear()


@pytest.fixture(params=BROKER_KINDS)
def broker(request: pytest.FixtureRequest, _broker_pool: dict[str, LocalBroker]) -> Iterator[Broker]:
    kind: str = request.param
    if kind == "external":
        yield Broker(kind, os.environ["BRIDGE_TEST_BOOTSTRAP"], None)
        return
    local = _broker_pool.get(kind)
    if local is None or local.proc is None or local.proc.poll() is not None:
        local = _broker_pool[kind] = _start_broker(kind)
    yield Broker(kind, local.bootstrap, local)
    _report_on_failure(request, local)


@pytest.fixture(params=[k for k in BROKER_KINDS if k != "external"] or ["kafka"])
def own_broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    """A broker for this test alone: the test may stop, pause or restart it."""
    local = _start_broker(request.param)
    try:
        yield Broker(request.param, local.bootstrap, local)
        _report_on_failure(request, local)
    finally:
        local.destroy()


def _report_on_failure(request: pytest.FixtureRequest, local: LocalBroker) -> None:
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print(f"\n--- {local.name} log ({local.logfile}) ---\n{local.log_tail()}")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep


@pytest.fixture
def topic_name() -> str:
    return f"t_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    return tmp_path
