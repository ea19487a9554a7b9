"""Wrong librdkafka settings give a clear error, not a traceback or a bare timeout.

- An unknown property in `kafka.config` (`no.such.prop`) is a config error: exit 2 naming
  `kafka.config.no.such.prop`, before anything touches the source (no slot is created). It used to
  be a traceback and exit 1.
- SASL settings against a broker whose listener has no SASL: the producer, the sink and
  `pgbridge check` stop with exit 1 and a message naming `security.protocol` and the listener as
  the likely cause, within `kafka.connect_timeout_s`. It used to be a bare `TimeoutError` after 30 s.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from tests.conftest import Broker
from tests.pipeline import REPO, BridgeProcess, write_config

SASL = {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN", "sasl.username": "bridge",
        "sasl.password": "not-a-real-secret"}


def _pgbridge(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bridge", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def _wait_exit(proc: BridgeProcess, timeout: float) -> int:
    assert proc.proc is not None
    try:
        return proc.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"{proc.name} still running after {timeout} s:\n{proc.log_tail()}") from None


def _slot_exists(dsn: str, slot: str) -> bool:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone() is not None


def test_unknown_librdkafka_property_exits_2_naming_it(broker: Broker, source_dsn: str, target_dsn: str,
                                                       tmp_path: Path) -> None:
    cfg = write_config(tmp_path, source_dsn=source_dsn, target_dsn=target_dsn, bootstrap=broker.bootstrap,
                       kafka__config={"no.such.prop": 1})
    slot = json.loads(cfg.read_text())["source"]["slot"]
    for command in ("produce", "sink", "check", "status"):
        res = _pgbridge(command, "--config", str(cfg))
        assert res.returncode == 2, (command, res.returncode, res.stderr)
        assert "kafka.config.no.such.prop" in res.stderr, (command, res.stderr)
        assert "Traceback" not in res.stderr, res.stderr
    assert not _slot_exists(source_dsn, slot)
    # A value librdkafka refuses is named the same way.
    bad = write_config(tmp_path, source_dsn=source_dsn, target_dsn=target_dsn, bootstrap=broker.bootstrap,
                       kafka__config={"security.protocol": "NOPE"})
    res = _pgbridge("check", "--config", str(bad))
    assert res.returncode == 2 and "kafka.config.security.protocol" in res.stderr, res.stderr


def test_sasl_against_a_plaintext_listener_names_the_cause(broker: Broker, source_dsn: str, target_dsn: str,
                                                           tmp_path: Path) -> None:
    cfg = write_config(tmp_path, source_dsn=source_dsn, target_dsn=target_dsn, bootstrap=broker.bootstrap,
                       kafka__config=SASL, kafka__connect_timeout_s=4)
    slot = json.loads(cfg.read_text())["source"]["slot"]
    for command in ("produce", "sink"):
        proc = BridgeProcess(command, cfg, tmp_path).start()
        started = time.monotonic()
        code = _wait_exit(proc, 40)
        took = time.monotonic() - started
        log = proc.log_tail(100)
        assert code == 1, (command, code, log)
        assert "Traceback" not in log and "TimeoutError" not in log, log
        assert "security.protocol=SASL_PLAINTEXT" in log and "listener" in log, log
        assert broker.bootstrap in log, log
        assert "not-a-real-secret" not in log, log
        assert took < 25, f"{command} took {took:.1f} s to give up"
    assert not _slot_exists(source_dsn, slot)  # the producer stopped before creating the slot
    res = _pgbridge("check", "--config", str(cfg))
    assert res.returncode == 1, res.stdout + res.stderr
    line = next((ln for ln in res.stdout.splitlines() if "kafka.reachable" in ln), "")
    assert line.startswith("FAIL") and "security.protocol=SASL_PLAINTEXT" in line, res.stdout
