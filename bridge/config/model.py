"""The configuration's schema: one frozen dataclass per section, with its defaults.

`load_config` (bridge/config/load.py) builds a `Config`; nothing else does.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, get_type_hints

from bridge.config.redact import collect_secrets, redact_tree
from bridge.errors import ConfigError

MiB = 1 << 20
GiB = 1 << 30

ENV_PREFIX = "BRIDGE_"
# Where the sink keeps its own state (the position table) in the target database, unless
# `sink.state_schema` says otherwise.
STATE_SCHEMA = "pgbridge_state"

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
    state_schema: str = STATE_SCHEMA
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
            raise ConfigError(join_errors(missing))

    def redacted(self) -> dict[str, Any]:
        """The configuration as plain data, for `check` / `status` output: secrets shown as `***`."""
        tree: dict[str, Any] = redact_tree(dataclasses.asdict(self))
        return tree

    def secrets(self) -> frozenset[str]:
        """Every secret value in this configuration (for the log redaction filter)."""
        found: set[str] = set()
        collect_secrets(dataclasses.asdict(self), found)
        return frozenset(s for s in found if len(s) >= 3)


_REQUIRED_BY_SECTION = {"source": "source.dsn", "sink": "sink.dsn", "kafka": "kafka.bootstrap_servers"}

SECTIONS: dict[str, type[Any]] = {
    "source": SourceConfig,
    "kafka": KafkaConfig,
    "sink": SinkConfig,
    "metrics": MetricsConfig,
    "logging": LoggingConfig,
    "monitor": MonitorConfig,
}
TOP_SCALARS = {"ack"}


def _field_types(cls: type[Any]) -> dict[str, Any]:
    hints = get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


TOP_TYPES = _field_types(Config)
SECTION_TYPES = {name: _field_types(cls) for name, cls in SECTIONS.items()}


def join_errors(errors: list[str]) -> str:
    if len(errors) == 1:
        return errors[0]
    return "invalid configuration:\n  " + "\n  ".join(errors)



def _conninfo(section: str, dsn: str | None, password: str | None) -> str:
    if not dsn:
        raise ConfigError(f"{section}.dsn: required by this command "
                          f"(set it in the config file or {ENV_PREFIX}{section.upper()}__DSN)")
    if password is None:
        return dsn
    from psycopg import conninfo

    return conninfo.make_conninfo(dsn, password=password)
