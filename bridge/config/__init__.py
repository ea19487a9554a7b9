"""The configuration: one YAML (or JSON) file, every key overridable from the environment.

Modules: `model` (the sections and their defaults), `load` (`load_config`), `env` (environment
overrides and secret files), `typecheck` (values against field types), `validate` (checks across
values), `redact` (secrets kept out of errors, output and logs), `paths` (naming a key in an error).

Loading order (`load_config`):

1. defaults (the dataclasses of `model`);
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

from bridge.config.load import load_config
from bridge.config.model import (
    ENV_PREFIX,
    STATE_SCHEMA,
    Config,
    GiB,
    KafkaConfig,
    LoggingConfig,
    MetricsConfig,
    MiB,
    MonitorConfig,
    SinkConfig,
    SourceConfig,
)
from bridge.config.redact import REDACTED, is_secret_key, redact_dsn, redact_text

__all__ = [
    "ENV_PREFIX",
    "REDACTED",
    "STATE_SCHEMA",
    "Config",
    "GiB",
    "KafkaConfig",
    "LoggingConfig",
    "MetricsConfig",
    "MiB",
    "MonitorConfig",
    "SinkConfig",
    "SourceConfig",
    "is_secret_key",
    "load_config",
    "redact_dsn",
    "redact_text",
]
