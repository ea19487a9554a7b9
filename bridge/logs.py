"""Logging: JSON lines (default) or text, structured fields, secrets never written.

Every line carries `ts` (UTC, ISO 8601, milliseconds), `level`, `logger`, `msg`, `component`, and
the structured fields a caller passes with `extra={...}` (slot, position, topic, partition, offset,
table, ...). Values that are not JSON types are written with `str()` (an `Lsn` as `16/B374D848`).

Redaction runs on the message, on every string field and on tracebacks: DSN passwords
(`redact_dsn`), fields whose name looks secret (`password`, `token`, `sasl.password`, ...), and
every value given in `secrets` (pass `Config.secrets()` once the config is loaded).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable, Mapping, MutableMapping
from typing import IO, Any, Literal

from bridge.config import REDACTED, is_secret_key, redact_text
from bridge.errors import ConfigError

LogFormat = Literal["json", "text"]

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
_MARK = "_bridge_handler"


def _ts(created: float) -> str:
    ms = int(created * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{ms:03d}Z"


class _Redactor:
    """Holds the known secret values; `text()` and `value()` are called for every line written."""

    __slots__ = ("secrets",)

    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = tuple(sorted({s for s in secrets if s}, key=len, reverse=True))

    def text(self, s: str) -> str:
        return redact_text(s, self.secrets)

    def value(self, key: str, v: Any) -> Any:
        if is_secret_key(key) and v is not None:
            return REDACTED
        if isinstance(v, str):
            return self.text(v)
        if v is None or isinstance(v, bool | int | float):
            return v
        if isinstance(v, Mapping):
            return {str(k): self.value(str(k), x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [self.value(key, x) for x in v]
        return self.text(str(v))


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}


class _BridgeFormatter(logging.Formatter):
    """What both formats share: the component name and the redaction of secrets."""

    def __init__(self, component: str, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.component = component
        self.redactor = _Redactor(secrets)


class JsonFormatter(_BridgeFormatter):
    """One JSON object per line: ts, level, logger, msg, component, structured fields, exc."""

    def format(self, record: logging.LogRecord) -> str:
        r = self.redactor
        out: dict[str, Any] = {
            "ts": _ts(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": r.text(record.getMessage()),
            "component": self.component,
        }
        for k, v in _fields(record).items():
            if k not in out:
                out[k] = r.value(k, v)
        if record.exc_info:
            out["exc"] = r.text(self.formatException(record.exc_info))
        elif record.exc_text:
            out["exc"] = r.text(record.exc_text)
        if record.stack_info:
            out["stack"] = r.text(self.formatStack(record.stack_info))
        return json.dumps(out, ensure_ascii=False, default=str)


class TextFormatter(_BridgeFormatter):
    """`2026-01-01T00:00:00.000Z INFO  bridge.x [producer] message slot=bridge position=0/1:3`."""

    def format(self, record: logging.LogRecord) -> str:
        r = self.redactor
        parts = [_ts(record.created), f"{record.levelname:<7}", record.name, f"[{self.component}]",
                 r.text(record.getMessage())]
        parts.extend(f"{k}={r.value(k, v)}" for k, v in _fields(record).items())
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + r.text(self.formatException(record.exc_info))
        return line


def setup_logging(fmt: LogFormat = "json", level: str = "INFO", component: str = "bridge",
                  secrets: Iterable[str] = (), stream: IO[str] | None = None) -> logging.Handler:
    """Install the bridge's handler on the root logger (replacing one installed earlier, so the CLI
    may call it again with `secrets=config.secrets()` once the config is loaded). Called once per
    process at start. Returns the handler. Raises `ConfigError` for an unknown format or level."""
    if fmt not in ("json", "text"):
        raise ConfigError(f"logging.format: expected 'json' or 'text', got {fmt!r}")
    lvl = logging.getLevelName(level.upper())
    if not isinstance(lvl, int):
        raise ConfigError(f"logging.level: expected DEBUG, INFO, WARNING, ERROR or CRITICAL, got {level!r}")
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, _MARK, False):
            root.removeHandler(h)
            h.close()
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    formatter = JsonFormatter(component, secrets) if fmt == "json" else TextFormatter(component, secrets)
    handler.setFormatter(formatter)
    setattr(handler, _MARK, True)
    root.addHandler(handler)
    root.setLevel(lvl)
    return handler


class BoundLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger that adds fixed structured fields (`slot=...`) to every line; `extra=` given at the
    call merges over them. `bind(log, slot="bridge").info("confirmed %s", lsn, extra={"position": p})`."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        extra = dict(self.extra or {})
        extra.update(kwargs.get("extra") or {})
        kwargs["extra"] = extra
        return msg, kwargs


def bind(logger: logging.Logger, **fields: Any) -> BoundLogger:
    """`logger` with `fields` added to every line it writes."""
    return BoundLogger(logger, fields)
