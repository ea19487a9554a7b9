from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from bridge.config import load_config
from bridge.errors import ConfigError
from bridge.events import Position
from bridge.logs import bind, setup_logging
from bridge.lsn import Lsn


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(level)


def lines(buf: io.StringIO) -> list[str]:
    return [line for line in buf.getvalue().splitlines() if line]


def test_json_lines_carry_the_fields(restore_root: None) -> None:
    buf = io.StringIO()
    setup_logging("json", "INFO", "producer", stream=buf)
    log = logging.getLogger("bridge.test")
    log.info("confirmed %s", Lsn.parse("16/B374D848"),
             extra={"slot": "bridge", "position": Lsn.parse("1/2"), "topic": "bridge.public.t",
                    "partition": 3, "offset": 42, "table": "public.t"})
    log.debug("not written at INFO")
    (line,) = lines(buf)
    rec = json.loads(line)
    assert rec["level"] == "INFO" and rec["logger"] == "bridge.test" and rec["component"] == "producer"
    assert rec["msg"] == "confirmed 16/B374D848"
    assert rec["ts"].endswith("Z") and rec["ts"][10] == "T"
    assert rec["slot"] == "bridge" and rec["position"] == "1/2"
    assert (rec["topic"], rec["partition"], rec["offset"], rec["table"]) == ("bridge.public.t", 3, 42, "public.t")


def test_exceptions_and_bound_fields(restore_root: None) -> None:
    buf = io.StringIO()
    setup_logging("json", "debug", "sink", stream=buf)
    log = bind(logging.getLogger("bridge.sink"), topic="t", partition=1)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("apply failed", extra={"offset": 7})
    rec = json.loads(lines(buf)[0])
    assert rec["level"] == "ERROR" and rec["topic"] == "t" and rec["partition"] == 1 and rec["offset"] == 7
    assert "RuntimeError: boom" in rec["exc"]


def test_text_format(restore_root: None) -> None:
    buf = io.StringIO()
    setup_logging("text", "INFO", "producer", stream=buf)
    logging.getLogger("bridge.x").warning("slot %s lagging", "bridge", extra={"slot": "bridge"})
    (line,) = lines(buf)
    assert "WARNING" in line and "[producer]" in line and "slot bridge lagging" in line
    assert line.endswith("slot=bridge")


def test_setup_again_replaces_the_handler(restore_root: None) -> None:
    first, second = io.StringIO(), io.StringIO()
    setup_logging("json", "INFO", "a", stream=first)
    setup_logging("json", "INFO", "b", stream=second)
    logging.getLogger("bridge.x").info("once")
    assert lines(first) == [] and len(lines(second)) == 1


def test_secrets_never_logged(restore_root: None) -> None:
    cfg = load_config(None, {"BRIDGE_SOURCE__DSN": "postgresql://bridge:dsn-secret@db/app",
                             "BRIDGE_KAFKA__CONFIG__SASL_PASSWORD": "sasl-secret",
                             "BRIDGE_SINK__PASSWORD": "sink-secret"})
    for fmt in ("json", "text"):
        buf = io.StringIO()
        setup_logging(fmt, "INFO", "producer", secrets=cfg.secrets(), stream=buf)
        log = logging.getLogger("bridge.x")
        log.info("connecting to %s", cfg.source.dsn)
        log.info("kafka config %s", cfg.kafka.config)
        log.info("dsn", extra={"dsn": "host=db password=kw-secret", "password": "sink-secret",
                               "conf": {"sasl.password": "nested-secret"}})
        log.info("with %s", "host=db password='quoted secret' port=1")
        setup_logging(fmt, "INFO", "producer", stream=buf)  # no known secrets
        log.info("config %s", {"sasl.password": "repr-secret", "ssl.key.password": "repr-secret"})
        log.info("json %s", json.dumps({"token": "json-secret"}))
        setup_logging(fmt, "INFO", "producer", secrets=cfg.secrets(), stream=buf)
        try:
            raise ValueError(f"could not connect with {cfg.sink.password}")
        except ValueError:
            log.exception("failed")
        out = buf.getvalue()
        for secret in ("dsn-secret", "sasl-secret", "sink-secret", "kw-secret", "nested-secret", "quoted secret",
                       "repr-secret", "json-secret"):
            assert secret not in out, (fmt, secret, out)
        assert "postgresql://bridge:***@db/app" in out and "***" in out


def test_bad_format_or_level() -> None:
    with pytest.raises(ConfigError, match=r"logging\.level"):
        setup_logging("json", "LOUD", "x")
    with pytest.raises(ConfigError, match=r"logging\.format"):
        setup_logging("xml", "INFO", "x")  # type: ignore[arg-type]


def test_position_value_is_written_as_text(restore_root: None) -> None:
    buf = io.StringIO()
    setup_logging("json", "INFO", "sink", stream=buf)
    pos = Position(Lsn.parse("0/10"), 3)
    logging.getLogger("bridge.x").info("applied", extra={"position": pos})
    assert json.loads(lines(buf)[0])["position"] == str(pos)
