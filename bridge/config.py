"""The configuration: one YAML (or JSON) file, every key overridable from the environment.

Loading order (`load_config`):

1. defaults (the dataclasses below);
2. the file (`yaml.safe_load`; a `.json` file is read with `json`);
3. environment overrides `BRIDGE_<SECTION>__<KEY>` (a double underscore separates levels), e.g.
   `BRIDGE_SOURCE__DSN`, `BRIDGE_SINK__BATCH_MAX_ROWS=5000`, `BRIDGE_ACK=kafka`. The value is parsed
   by the target field's type: integers, numbers, booleans (`true/false/1/0/yes/no/on/off`), lists
   as JSON (`["public.*"]`) or comma-separated (`public.*,app.orders`), `null` or empty for optional
   keys. `*_bytes` keys also take sizes as in postgresql.conf (`64MB`, `1GB`; powers of 1024, also
   `KiB/MiB/GiB/TiB`).
   `kafka.config` keys: `BRIDGE_KAFKA__CONFIG__SASL_PASSWORD` sets `kafka.config["sasl.password"]`:
   the part after `CONFIG__` is lower-cased and every `_` becomes `.` (librdkafka names use dots),
   except a trailing `_FILE` (see secrets below). Properties whose names contain `_` cannot be set
   from the environment; put them in the file.
   Environment variables named `BRIDGE_...` without `__` (other than `BRIDGE_ACK`) are not
   configuration and are ignored; one with `__` that names an unknown key is rejected.
4. secret files: a key `<name>_file` in a section (`source.password_file`, `sink.dsn_file`, ...)
   or in `kafka.config` (`sasl.password_file`) holds a path; the file's content, without the
   trailing newline, becomes `<name>`. Setting both `<name>` and `<name>_file` is an error.
5. validation: unknown keys and wrong types are rejected with `ConfigError` naming the key path
   and what was expected (`sink.batch_max_rows: expected an integer, got 'ten'`).

Secrets (passwords, tokens, `sasl.*password*`, `ssl.key.password`, `ssl.key.pem`, ...) never appear
in a `ConfigError`, in `Config.redacted()`, or (through `bridge.logs`) in a log line: they show as
`***`; DSNs show with their password replaced (`redact_dsn`).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import os
import re
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from bridge.errors import ConfigError
from bridge.kafka.topics import dead_letter_topic

MiB = 1 << 20
GiB = 1 << 30

ENV_PREFIX = "BRIDGE_"
REDACTED = "***"

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------
# The contract


@dataclass(frozen=True, slots=True)
class SourceConfig:
    """`source:` — the PostgreSQL that is captured (producer side)."""

    dsn: str | None = None
    password: str | None = None  # merged into `dsn` by `conninfo()`; or `password_file`
    slot: str = "bridge"
    capture: Literal["stream", "sql"] = "stream"
    tables: tuple[str, ...] = ("public.*",)
    exclude: tuple[str, ...] = ()
    snapshot: Literal["initial", "never"] = "initial"
    heartbeat_interval_s: float = 10.0
    sql_batch_changes: int = 10_000  # capture=sql: changes per pg_logical_slot_peek_changes call
    snapshot_chunk_rows: int = 10_000  # rows per snapshot chunk (progress is saved after each)
    spill_bytes: int = 64 * MiB  # a transaction buffered beyond this spills to disk
    status_interval_s: float = 10.0  # standby status updates / slot status polling

    def conninfo(self) -> str:
        """The connection string with `password` applied. Raises `ConfigError` when `dsn` is unset."""
        return _conninfo("source", self.dsn, self.password)


@dataclass(frozen=True, slots=True)
class KafkaConfig:
    """`kafka:` — the Kafka-protocol broker."""

    bootstrap_servers: str = "127.0.0.1:9092"
    topic_prefix: str = "bridge"
    schema_registry_url: str | None = None
    config: dict[str, str | int | float | bool] = field(default_factory=dict)  # extra librdkafka properties
    partitions: int = 6
    replication_factor: int = 1
    tombstones: bool = True
    # HMAC secret shared by producer and sink: every record the bridge writes is signed, and what
    # does not verify is refused (bridge/signing.py). Or `signing_secret_file`. None: unsigned.
    signing_secret: str | None = None
    # How long a producer or sink (and `pgbridge check`) waits at start for a broker to answer
    # before it stops naming the likely cause (bridge/brokercheck.py).
    connect_timeout_s: float = 30.0

    def client_config(self, **overrides: str | int | float | bool) -> dict[str, str | int | float | bool]:
        """librdkafka properties for a client: `bootstrap.servers`, then `config`, then `overrides`."""
        conf: dict[str, str | int | float | bool] = {"bootstrap.servers": self.bootstrap_servers}
        conf.update(self.config)
        conf.update(overrides)
        return conf


@dataclass(frozen=True, slots=True)
class SinkConfig:
    """`sink:` — the target PostgreSQL and the consumer group."""

    dsn: str | None = None
    password: str | None = None
    group_id: str = "bridge-sink"
    batch_max_rows: int = 10_000
    batch_max_bytes: int = 64 * MiB
    batch_max_ms: int = 200
    dead_letter_topic: str = ""  # "" in the dataclass default; `load_config` fills "<prefix>._dlq"
    # Where the sink keeps its own state (the position table) in the target: a schema no captured
    # table may map onto (checked at load). The default is unlikely to be a source schema.
    state_schema: str = "pgbridge_state"
    position_schema: str | None = None  # deprecated name of state_schema; when set, it wins
    # The tables this sink may write (schema.table globs); empty: every table whose topic it reads.
    tables: tuple[str, ...] = ()

    def conninfo(self) -> str:
        """The connection string with `password` applied. Raises `ConfigError` when `dsn` is unset."""
        return _conninfo("sink", self.dsn, self.password)


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """`metrics:` — the one HTTP port for /metrics, /healthz, /readyz."""

    port: int = 9187
    host: str = "0.0.0.0"


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    """`logging:` — defaults for the CLI's --log-format / --log-level."""

    format: Literal["json", "text"] = "json"
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"


@dataclass(frozen=True, slots=True)
class MonitorConfig:
    """`monitor:` — thresholds for warnings (`status`, `check`, logs)."""

    retained_wal_warn_bytes: int = GiB


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration, validated. Build it with `load_config`."""

    source: SourceConfig = field(default_factory=SourceConfig)
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    sink: SinkConfig = field(default_factory=SinkConfig)
    ack: Literal["sink", "kafka"] = "sink"
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)

    def require(self, *what: str) -> None:
        """Called by a CLI command before it starts: each of `what` must be set.

        `what` names a section (`"source"` → `source.dsn`, `"sink"` → `sink.dsn`, `"kafka"` →
        `kafka.bootstrap_servers`) or a dotted key path. Raises `ConfigError` naming the missing key
        and the environment variable that could set it.
        """
        missing = []
        for item in what:
            path = _REQUIRED_BY_SECTION.get(item, item)
            section, _, key = path.partition(".")
            try:
                value = getattr(getattr(self, section), key) if key else getattr(self, section)
            except AttributeError:
                raise ConfigError(f"require(): unknown key path {path!r}") from None
            if value is None or value == "":
                env = ENV_PREFIX + "__".join(p.upper() for p in path.split("."))
                missing.append(f"{path}: required by this command (set it in the config file or {env})")
        if missing:
            raise ConfigError(_join_errors(missing))

    def redacted(self) -> dict[str, Any]:
        """The configuration as plain data, for `check` / `status` output: secrets shown as `***`."""
        tree: dict[str, Any] = _redact_tree(dataclasses.asdict(self))
        return tree

    def secrets(self) -> frozenset[str]:
        """Every secret value in this configuration (for the log redaction filter)."""
        found: set[str] = set()
        _collect_secrets(dataclasses.asdict(self), found)
        return frozenset(s for s in found if len(s) >= 3)


_REQUIRED_BY_SECTION = {"source": "source.dsn", "sink": "sink.dsn", "kafka": "kafka.bootstrap_servers"}

_SECTIONS: dict[str, type[Any]] = {
    "source": SourceConfig,
    "kafka": KafkaConfig,
    "sink": SinkConfig,
    "metrics": MetricsConfig,
    "logging": LoggingConfig,
    "monitor": MonitorConfig,
}
_TOP_SCALARS = {"ack"}


# --------------------------------------------------------------------------------------------------
# Redaction

_SECRET_KEY = re.compile(
    r"passw(or)?d|secret|token|credential|private[._]?key|api[._]?key|"
    r"ssl[._]key[._]pem|^ssl_key$|sasl[._]oauthbearer[._]config|sasl[._]jaas[._]config|basic[._]auth[._]user[._]info",
    re.IGNORECASE,
)
_URI_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@?#\s]*):[^\s]*@")
_PARAM_PASSWORD = re.compile(r"(?P<head>[?&][a-z_]*password=)[^&\s]*", re.IGNORECASE)
_KW_PASSWORD = re.compile(r"(?P<head>(?<![?&\w])[a-z_]*password\s*=\s*)(?:'(?:[^'\\]|\\.)*'|[^\s]+)", re.IGNORECASE)


def is_secret_key(key: str) -> bool:
    """True for keys whose values are never shown (password, secret, token, sasl.*password*, ...)."""
    return not key.endswith("_file") and _SECRET_KEY.search(key) is not None


def redact_dsn(dsn: str) -> str:
    """`dsn` with its password shown as `***`, in URI (`postgresql://u:pw@h/db`, `?password=`) and
    key=value (`password=pw`, `password='p w'`) forms. Never raises; non-DSN text passes through."""
    out = _URI_PASSWORD.sub(lambda m: f"{m['head']}:{REDACTED}@", dsn)
    out = _PARAM_PASSWORD.sub(lambda m: m["head"] + REDACTED, out)
    return _KW_PASSWORD.sub(lambda m: m["head"] + REDACTED, out)


_QUOTED_SECRET = re.compile(
    r"""(?P<head>(?P<q>['"])[\w.-]*(?:passw(?:or)?d|secret|token)[\w.-]*(?P=q)\s*[:=]\s*)(?P<v>['"])(?:\\.|(?!(?P=v)).)*(?P=v)""",
    re.IGNORECASE,
)


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with DSN passwords, quoted secret entries of dict/JSON text (`'sasl.password': '...'`)
    and every occurrence of one of `secrets` replaced by `***`."""
    out = redact_dsn(text)
    out = _QUOTED_SECRET.sub(lambda m: f"{m['head']}{m['v']}{REDACTED}{m['v']}", out)
    for s in secrets:
        if s and s in out:
            out = out.replace(s, REDACTED)
    return out


def _redact_value(key: str, value: Any) -> Any:
    if value is None:
        return None
    if is_secret_key(key):
        return REDACTED
    if isinstance(value, str):
        return redact_dsn(value)
    return value


def _redact_tree(tree: Any, key: str = "") -> Any:
    if isinstance(tree, Mapping):
        return {k: _redact_tree(v, str(k)) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return [_redact_tree(v, key) for v in tree]
    return _redact_value(key, tree)


def _collect_secrets(tree: Any, found: set[str], key: str = "") -> None:
    if isinstance(tree, Mapping):
        for k, v in tree.items():
            _collect_secrets(v, found, str(k))
    elif isinstance(tree, str) and is_secret_key(key):
        found.add(tree)
    elif isinstance(tree, str) and key == "dsn":
        for m in _URI_PASSWORD.finditer(tree):
            userinfo = m.group(0)[len(m["head"]) + 1 : -1]
            found.add(userinfo)
        for m in _KW_PASSWORD.finditer(tree):
            value = m.group(0)[len(m["head"]):]
            found.add(value[1:-1] if value.startswith("'") else value)


def _show(key: str, value: Any) -> str:
    """A value as it may appear in an error message."""
    if is_secret_key(key):
        return repr(REDACTED)
    if isinstance(value, str):
        return repr(redact_dsn(value))
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# --------------------------------------------------------------------------------------------------
# Loading


def load_config(path: str | os.PathLike[str] | None, env: Mapping[str, str] = os.environ) -> Config:
    """Read `path` (YAML or JSON; None → defaults only), apply `env` overrides and secret files,
    validate. Called once by the CLI at start. Raises `ConfigError` listing every problem found,
    each naming its key path; no secret appears in the message."""
    raw: dict[str, Any] = _read_file(Path(path)) if path is not None else {}
    errors: list[str] = []
    origin: dict[str, str] = {}  # key path -> environment variable it came from
    _apply_env(raw, env, errors, origin)
    _apply_secret_files(raw, errors, origin)
    config = _build(raw, errors, origin)
    if errors:
        raise ConfigError(_join_errors(errors))
    assert config is not None
    return config


def _join_errors(errors: list[str]) -> str:
    if len(errors) == 1:
        return errors[0]
    return "invalid configuration:\n  " + "\n  ".join(errors)


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        # Only the location: the message must not echo a line that may hold a secret.
        raise ConfigError(f"{path}: not valid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (source, kafka, sink, ...) at the top level")
    return data


def _field_types(cls: type[Any]) -> dict[str, Any]:
    hints = get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


_TOP_TYPES = _field_types(Config)
_SECTION_TYPES = {name: _field_types(cls) for name, cls in _SECTIONS.items()}


def _did_you_mean(key: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(sorted(known))}"


def _where(path: str, origin: Mapping[str, str]) -> str:
    env = origin.get(path)
    return f"{path} (from {env})" if env else path


def _apply_env(raw: dict[str, Any], env: Mapping[str, str], errors: list[str], origin: dict[str, str]) -> None:
    """Overlay `BRIDGE_<SECTION>__<KEY>` variables on `raw`, parsing each by its field's type."""
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX):]
        text = env[name]
        if "__" not in rest:
            if rest.lower() in _TOP_SCALARS:
                key = rest.lower()
                origin[key] = name
                value = _parse_env(key, key, _TOP_TYPES[key], text, name, errors)
                if value is not _INVALID:
                    raw[key] = value
            continue
        section_name, _, key_part = rest.partition("__")
        section_name = section_name.lower()
        types_ = _SECTION_TYPES.get(section_name)
        if types_ is None:
            errors.append(f"{name}: unknown section {section_name!r}{_did_you_mean(section_name, _SECTIONS)}")
            continue
        section = raw.get(section_name)
        if section is None:
            section = raw[section_name] = {}
        elif not isinstance(section, dict):
            continue  # reported by _build
        if section_name == "kafka" and key_part.upper().startswith("CONFIG__"):
            prop = _env_to_kafka_property(key_part[len("CONFIG__"):])
            conf = section.get("config")
            if conf is None:
                conf = section["config"] = {}
            if isinstance(conf, dict):
                conf[prop] = text
                origin[f"kafka.config.{prop}"] = name
            continue
        key = key_part.lower()
        path = f"{section_name}.{key}"
        origin[path] = name
        if key.endswith("_file") and _is_str_field(types_.get(key[: -len("_file")])):
            section[key] = text
            continue
        tp = types_.get(key)
        if tp is None or key == "config":
            errors.append(f"{path} (from {name}): unknown key{_did_you_mean(key, types_)}")
            continue
        value = _parse_env(path, key, tp, text, name, errors)
        if value is not _INVALID:
            section[key] = value


def _env_to_kafka_property(part: str) -> str:
    """`SASL_PASSWORD` → `sasl.password`; `SASL_PASSWORD_FILE` → `sasl.password_file`."""
    lower = part.lower()
    if lower.endswith("_file"):
        return lower[: -len("_file")].replace("_", ".") + "_file"
    return lower.replace("_", ".")


def _apply_secret_files(raw: dict[str, Any], errors: list[str], origin: Mapping[str, str]) -> None:
    """Replace `<name>_file` keys (sections and kafka.config) by the content of the named file."""
    for section_name, section in raw.items():
        if not isinstance(section, dict):
            continue
        targets: list[tuple[dict[str, Any], str]] = [(section, section_name)]
        conf = section.get("config")
        if section_name == "kafka" and isinstance(conf, dict):
            targets.append((conf, "kafka.config"))
        for mapping, prefix in targets:
            for key in [k for k in mapping if isinstance(k, str) and k.endswith("_file")]:
                target = key[: -len("_file")]
                path = f"{prefix}.{key}"
                if prefix == section_name and not _is_str_field(_SECTION_TYPES.get(section_name, {}).get(target)):
                    continue  # reported as an unknown key by _build
                file_name = mapping.pop(key)
                if not isinstance(file_name, str) or not file_name:
                    errors.append(f"{_where(path, origin)}: expected a file path, got {_show(key, file_name)}")
                    continue
                if mapping.get(target) is not None:
                    errors.append(f"{prefix}.{target}: set either {target!r} or {key!r}, not both")
                    continue
                try:
                    content = Path(file_name).read_text(encoding="utf-8")
                except OSError as exc:
                    errors.append(f"{_where(path, origin)}: cannot read {file_name!r}: {exc.strerror or exc}")
                    continue
                mapping[target] = content.rstrip("\r\n")


def _is_str_field(tp: Any) -> bool:
    return tp is str or (get_origin(tp) in (Union, types.UnionType) and str in get_args(tp))


_INVALID: Any = object()
_TRUE = {"true", "1", "yes", "on", "y"}
_FALSE = {"false", "0", "no", "off", "n"}
_SIZE = re.compile(r"^\s*(\d+)\s*(b|kb|mb|gb|tb|kib|mib|gib|tib)?\s*$", re.IGNORECASE)
_SIZE_FACTOR = {"b": 1, "kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30, "tb": 1 << 40,
                "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}


def _parse_size(text: str) -> int | None:
    m = _SIZE.match(text)
    if m is None:
        return None
    return int(m[1]) * _SIZE_FACTOR[(m[2] or "b").lower()]


def _expected(tp: Any, key: str) -> str:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        inner = [a for a in get_args(tp) if a is not type(None)]
        return f"{_expected(inner[0], key)} or null"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer or a size like '64MB'" if key.endswith("_bytes") else "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if origin is tuple:
        return "a list of strings"
    if origin is dict:
        return "a mapping of librdkafka properties to values"
    return str(tp)


def _parse_env(path: str, key: str, tp: Any, text: str, env_name: str, errors: list[str]) -> Any:
    """An environment string converted to `tp` (validated later by `_check`)."""
    origin = get_origin(tp)
    s = text.strip()
    if origin in (Union, types.UnionType):
        if s == "" or s.lower() in ("null", "none", "~"):
            return None
        inner = next(a for a in get_args(tp) if a is not type(None))
        return _parse_env(path, key, inner, text, env_name, errors)
    try:
        if tp is bool:
            if s.lower() in _TRUE:
                return True
            if s.lower() in _FALSE:
                return False
            raise ValueError
        if tp is int:
            size = _parse_size(s) if key.endswith("_bytes") else None
            return size if size is not None else int(s)
        if tp is float:
            return float(s)
        if origin is tuple:
            if s.startswith("["):
                value = json.loads(s)
                if not isinstance(value, list):
                    raise ValueError
                return value
            return [p.strip() for p in s.split(",") if p.strip()]
    except ValueError:
        errors.append(f"{path} (from {env_name}): expected {_expected(tp, key)}, got {_show(key, text)}")
        return _INVALID
    return text


def _check(path: str, key: str, tp: Any, value: Any, errors: list[str], origin: Mapping[str, str]) -> Any:
    """`value` (from the file or already parsed from env) checked against `tp`; `_INVALID` if wrong."""
    def bad() -> Any:
        errors.append(f"{_where(path, origin)}: expected {_expected(tp, key)}, got {_show(key, value)}")
        return _INVALID

    torigin = get_origin(tp)
    if torigin in (Union, types.UnionType):
        if value is None:
            return None
        inner = next(a for a in get_args(tp) if a is not type(None))
        return _check(path, key, inner, value, errors, origin) if _ok_type(inner, key, value) else bad()
    if torigin is Literal and isinstance(value, str):
        for choice in get_args(tp):
            if isinstance(choice, str) and choice.lower() == value.strip().lower():
                return choice
    if not _ok_type(tp, key, value):
        return bad()
    if tp is int and isinstance(value, str):
        return _parse_size(value)
    if tp is float:
        return float(value)
    if torigin is tuple:
        return tuple(value)
    if torigin is dict:
        out: dict[str, Any] = {}
        for k, v in value.items():
            sub = f"{path}.{k}"
            if not isinstance(k, str) or not k:
                errors.append(f"{_where(path, origin)}: property names must be non-empty strings, got {k!r}")
            elif not isinstance(v, str | int | float | bool):
                errors.append(f"{_where(sub, origin)}: expected a string, number or boolean, got {_show(k, v)}")
            else:
                out[k] = v
        return out
    return value


def _ok_type(tp: Any, key: str, value: Any) -> bool:
    torigin = get_origin(tp)
    if torigin is Literal:
        return value in get_args(tp)
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        if isinstance(value, str) and key.endswith("_bytes"):
            return _parse_size(value) is not None
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if torigin is tuple:
        return isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)
    if torigin is dict:
        return isinstance(value, dict)
    return False


def _build(raw: dict[str, Any], errors: list[str], origin: Mapping[str, str]) -> Config | None:
    top: dict[str, Any] = {}
    for name, value in raw.items():
        if name in _TOP_SCALARS:
            checked = _check(name, name, _TOP_TYPES[name], value, errors, origin)
            if checked is not _INVALID:
                top[name] = checked
            continue
        types_ = _SECTION_TYPES.get(name) if isinstance(name, str) else None
        if types_ is None:
            errors.append(f"{name}: unknown section{_did_you_mean(str(name), [*_SECTIONS, *_TOP_SCALARS])}")
            continue
        if value is None:
            value = {}
        if not isinstance(value, dict):
            errors.append(f"{name}: expected a mapping, got {_show(name, value)}")
            continue
        kwargs: dict[str, Any] = {}
        for key, v in value.items():
            path = f"{name}.{key}"
            tp = types_.get(key) if isinstance(key, str) else None
            if tp is None:
                errors.append(f"{_where(path, origin)}: unknown key{_did_you_mean(str(key), types_)}")
                continue
            checked = _check(path, key, tp, v, errors, origin)
            if checked is not _INVALID:
                kwargs[key] = checked
        top[name] = _SECTIONS[name](**kwargs)
    # Invalid values were left out (their defaults are valid), so the cross checks below still
    # report every other problem in the same run.
    config = Config(**top)
    if config.sink.position_schema is not None:
        log.warning("sink.position_schema is deprecated: use sink.state_schema")
        config = dataclasses.replace(config, sink=dataclasses.replace(
            config.sink, state_schema=config.sink.position_schema, position_schema=None))
    if not config.sink.dead_letter_topic:
        config = dataclasses.replace(
            config, sink=dataclasses.replace(config.sink, dead_letter_topic=dead_letter_topic(config.kafka.topic_prefix)))
    _validate(config, errors, origin)
    return None if errors else config


_SLOT = re.compile(r"^[a-z0-9_]{1,63}$")
_TOPIC = re.compile(r"^[a-zA-Z0-9._-]+$")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")
_TABLE_GLOB = re.compile(r"^[^.]+\..+$")  # schema.table; names may hold spaces


def _validate(c: Config, errors: list[str], origin: Mapping[str, str]) -> None:
    """Checks across values: names, ranges, formats."""
    def err(path: str, text: str) -> None:
        errors.append(f"{_where(path, origin)}: {text}")

    if not _SLOT.match(c.source.slot):
        err("source.slot", f"expected 1-63 characters of a-z, 0-9 and _, got {c.source.slot!r}")
    for key in ("tables", "exclude"):
        for pattern in getattr(c.source, key):
            if not _TABLE_GLOB.match(pattern):
                err(f"source.{key}", f"expected schema.table glob patterns like 'public.*', got {pattern!r}")
    for key in ("heartbeat_interval_s", "status_interval_s"):
        if not getattr(c.source, key) > 0:
            err(f"source.{key}", f"expected a number of seconds > 0, got {getattr(c.source, key)!r}")
    if not c.kafka.connect_timeout_s > 0:
        err("kafka.connect_timeout_s", f"expected a number of seconds > 0, got {c.kafka.connect_timeout_s!r}")
    for path, value in (("source.sql_batch_changes", c.source.sql_batch_changes),
                        ("source.snapshot_chunk_rows", c.source.snapshot_chunk_rows),
                        ("source.spill_bytes", c.source.spill_bytes),
                        ("kafka.partitions", c.kafka.partitions),
                        ("kafka.replication_factor", c.kafka.replication_factor),
                        ("sink.batch_max_rows", c.sink.batch_max_rows),
                        ("sink.batch_max_bytes", c.sink.batch_max_bytes),
                        ("sink.batch_max_ms", c.sink.batch_max_ms),
                        ("monitor.retained_wal_warn_bytes", c.monitor.retained_wal_warn_bytes)):
        if value <= 0:
            err(path, f"expected a positive integer, got {value!r}")
    for path, dsn in (("source.dsn", c.source.dsn), ("sink.dsn", c.sink.dsn)):
        if dsn is not None:
            _check_dsn(path, dsn, err)
    if not c.kafka.bootstrap_servers.strip():
        err("kafka.bootstrap_servers", "expected host:port[,host:port...], got ''")
    prefix = c.kafka.topic_prefix
    if not _TOPIC.match(prefix) or len(prefix) > 200 or prefix in (".", ".."):
        err("kafka.topic_prefix", f"expected 1-200 characters of a-z, A-Z, 0-9, '.', '_' and '-', got {prefix!r}")
    dlq = c.sink.dead_letter_topic
    if not _TOPIC.match(dlq) or len(dlq) > 249 or dlq in (".", ".."):
        err("sink.dead_letter_topic", f"expected a Kafka topic name (a-z, A-Z, 0-9, '.', '_', '-'), got {dlq!r}")
    url = c.kafka.schema_registry_url
    if url is not None and not re.match(r"^https?://\S+$", url):
        err("kafka.schema_registry_url", f"expected an http:// or https:// URL, got {redact_dsn(url)!r}")
    if "bootstrap.servers" in c.kafka.config:
        err("kafka.config.bootstrap.servers", "set kafka.bootstrap_servers instead")
    else:
        _check_librdkafka(c.kafka.config, err)
    if not c.sink.group_id.strip():
        err("sink.group_id", "expected a non-empty consumer group id")
    if not _IDENT.match(c.sink.state_schema):
        err("sink.state_schema", f"expected a plain SQL identifier, got {c.sink.state_schema!r}")
    for pattern in c.sink.tables:
        if not _TABLE_GLOB.match(pattern):
            err("sink.tables", f"expected schema.table glob patterns like 'public.*', got {pattern!r}")
    _check_state_schema(c, err)
    if not 0 <= c.metrics.port <= 65535:
        err("metrics.port", f"expected a TCP port 0-65535 (0: any free port), got {c.metrics.port!r}")
    if not c.metrics.host.strip():
        err("metrics.host", "expected an address to listen on, e.g. '0.0.0.0'")


def _check_state_schema(c: Config, err: Callable[[str, str], None]) -> None:
    """Refuse a configuration whose captured tables could land in the sink's state schema: a
    replicated table there could overwrite the positions, and changes would be skipped as applied."""
    from bridge.sink.admit import is_system_schema
    from bridge.tables import TableFilter

    state = c.sink.state_schema
    if is_system_schema(state):
        err("sink.state_schema", f"{state!r} is a PostgreSQL system schema; choose another")
        return
    if TableFilter(c.source.tables, c.source.exclude).may_match_schema(state):
        err("source.tables", f"the patterns {list(c.source.tables)} can capture tables of schema {state!r}, where "
                             f"the sink keeps its state (sink.state_schema); add '{state}.*' to source.exclude "
                             f"or choose another sink.state_schema")


_LIBRDKAFKA_PROPERTY = re.compile(r'property:? "?([A-Za-z0-9._-]+)')


def _check_librdkafka(props: Mapping[str, Any], err: Callable[[str, str], None]) -> None:
    """Every `kafka.config` property must be one librdkafka knows, with a value it accepts.

    librdkafka checks each property as it is set, which a client's construction does first; a
    producer is built (never connected: no bootstrap servers) only to ask it. Errors of the
    construction itself ("Failed to create …", e.g. a SASL mechanism this build lacks) depend on
    the environment, not the file, and are left to the real clients.
    """
    if not props:
        return
    import logging

    from confluent_kafka import KafkaError, KafkaException, Producer

    quiet = logging.getLogger("bridge.config.librdkafka")
    quiet.disabled = True
    try:
        Producer({**props, "log_level": 0, "logger": quiet})
    except KafkaException as exc:
        e = exc.args[0] if exc.args else None
        if not isinstance(e, KafkaError) or e.code() != KafkaError._INVALID_ARG:
            return
        text = e.str()
        if text.startswith("Failed to create"):
            return
        m = _LIBRDKAFKA_PROPERTY.search(text)
        err(f"kafka.config.{m.group(1)}" if m else "kafka.config", f"librdkafka: {text}")
    except (TypeError, ValueError) as exc:
        err("kafka.config", f"librdkafka: {exc}")


def _check_dsn(path: str, dsn: str, err: Callable[[str, str], None]) -> None:
    from psycopg import conninfo  # local: config must stay importable cheaply

    try:
        conninfo.conninfo_to_dict(dsn)
    except Exception as exc:  # psycopg.ProgrammingError
        # libpq quotes fragments of the string, which may be a malformed password: keep neither.
        reason = re.sub(r'"[^"]*"', '"..."', str(exc).strip().splitlines()[0] if str(exc).strip() else "")
        err(path, f"not a valid connection string: {reason or 'rejected by libpq'}")


def _conninfo(section: str, dsn: str | None, password: str | None) -> str:
    if not dsn:
        raise ConfigError(f"{section}.dsn: required by this command "
                          f"(set it in the config file or {ENV_PREFIX}{section.upper()}__DSN)")
    if password is None:
        return dsn
    from psycopg import conninfo

    return conninfo.make_conninfo(dsn, password=password)
