"""The health server over real HTTP; readiness against a real broker that is stopped mid-test."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient

from bridge import metrics
from bridge.health import HealthServer, Heartbeat, PeriodicCheck
from bridge.lsn import Lsn
from tests.conftest import Broker
from tests.support.waits import wait_for


def get(url: str) -> tuple[int, str, str]:
    """(status, content type, body) — also for 503."""
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


@pytest.fixture
def server() -> Iterator[HealthServer]:
    with HealthServer("127.0.0.1", 0) as s:
        yield s


def test_binds_an_ephemeral_port_and_stops(server: HealthServer) -> None:
    assert server.port != 0
    assert get(server.url + "/healthz")[0] == 200  # no checks registered: healthy
    assert get(server.url + "/nope")[0] == 404
    url = server.url
    server.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url + "/healthz", timeout=2)
    server.stop()  # idempotent


def test_metrics_exposes_every_name(server: HealthServer) -> None:
    metrics.UP.labels(component="producer").set(1)
    metrics.CHANGES_CAPTURED.labels(table="public.t", op="c").inc(3)
    metrics.set_slot("bridge", Lsn.parse("1/0"), 4096, "reserved")
    metrics.set_wal_status("bridge", "extended")
    metrics.END_TO_END_LAG.observe(0.02)
    metrics.SINK_CONSUMER_LAG.labels(topic="bridge.public.t", partition="0").set(5)
    metrics.progress("sink", now=1234.0)
    status, ctype, body = get(server.url + "/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    declared = {line.split()[2] for line in body.splitlines() if line.startswith("# TYPE ")}
    for name in metrics.METRIC_NAMES:
        assert name in declared, name
    samples = dict(line.rsplit(" ", 1) for line in body.splitlines() if line and not line.startswith("#"))
    assert float(samples['bridge_up{component="producer"}']) == 1
    assert float(samples['bridge_changes_captured_total{op="c",table="public.t"}']) >= 3
    assert float(samples['bridge_slot_confirmed_lsn{slot="bridge"}']) == 1 << 32
    assert float(samples['bridge_slot_retained_wal_bytes{slot="bridge"}']) == 4096
    assert float(samples['bridge_slot_wal_status{slot="bridge",status="extended"}']) == 1
    assert float(samples['bridge_slot_wal_status{slot="bridge",status="reserved"}']) == 0
    assert float(samples['bridge_last_progress_timestamp_seconds{component="sink"}']) == 1234.0
    assert 'bridge_end_to_end_lag_seconds_bucket{le="0.025"}' in samples
    assert 'bridge_sink_batch_rows_bucket{le="100000.0"}' in samples
    assert 'bridge_sink_batch_duration_seconds_bucket{le="0.001"}' in samples
    assert not any(name.endswith("_created") for name in declared)


def test_healthz_follows_the_heartbeat(server: HealthServer) -> None:
    beat = Heartbeat()
    server.register_liveness("loop", beat.check(0.3))
    assert get(server.url + "/healthz")[0] == 200
    time.sleep(0.4)  # the subject: 0.3 s without a beat is stale
    status, ctype, body = get(server.url + "/healthz")
    assert status == 503 and ctype == "application/json"
    assert json.loads(body) == {"status": "failing", "checks": {"loop": False}, "failing": ["loop"]}
    beat.beat()
    assert get(server.url + "/healthz")[0] == 200
    assert get(server.url + "/readyz")[0] == 200  # liveness checks do not count for readiness


def test_a_raising_check_fails_with_a_redacted_error(server: HealthServer) -> None:
    def check() -> bool:
        raise RuntimeError("cannot connect to postgresql://bridge:hunter2@db/app")

    server.register_readiness("postgres", check)
    server.register_readiness("ok", lambda: True)
    status, _, body = get(server.url + "/readyz")
    data: dict[str, Any] = json.loads(body)
    assert status == 503 and data["failing"] == ["postgres"] and data["checks"]["ok"] is True
    assert "hunter2" not in body and "bridge:***@db" in data["errors"]["postgres"]
    server.unregister("postgres")
    assert get(server.url + "/readyz")[0] == 200


@pytest.mark.parametrize("own_broker", ["tansu"], indirect=True)  # a fast start; the check is the subject
def test_readyz_flips_when_the_broker_stops(own_broker: Broker, server: HealthServer) -> None:
    assert own_broker.local is not None
    admin = AdminClient({"bootstrap.servers": own_broker.bootstrap, "socket.timeout.ms": 1000, "log_level": 0})

    def broker_reachable() -> bool:
        return bool(admin.list_topics(timeout=1.5).brokers)

    cached = PeriodicCheck(broker_reachable, interval_s=0.3, name="broker")
    try:
        server.register_readiness("broker", broker_reachable)
        server.register_readiness("broker_cached", cached)
        wait_for(lambda: get(server.url + "/readyz")[0] == 200, 15, "/readyz 200 with the broker up", interval=0.1)

        own_broker.local.stop()

        def both_failing() -> bool:
            status, _, body = get(server.url + "/readyz")
            return status == 503 and set(json.loads(body)["failing"]) == {"broker", "broker_cached"}

        wait_for(both_failing, 15, "/readyz 503 naming both broker checks with the broker stopped", interval=0.1)
        status, _, body = get(server.url + "/readyz")
        data = json.loads(body)
        assert status == 503 and data["status"] == "failing"
        assert "KafkaException" in data["errors"]["broker"]
        assert get(server.url + "/healthz")[0] == 200  # readiness does not touch liveness
    finally:
        cached.stop()
