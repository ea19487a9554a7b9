from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridge.config import (
    Config,
    load_config,
    redact_dsn,
)
from bridge.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "bridge.yaml"


def write(tmp_path: Path, text: str, name: str = "bridge.yaml") -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def error_of(path: str | None, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, env or {})
    return str(info.value)


def test_defaults_without_file() -> None:
    c = load_config(None, {})
    assert c.source.slot == "bridge" and c.source.capture == "stream"
    assert c.source.tables == ("public.*",) and c.source.exclude == ()
    assert c.source.spill_bytes == 64 << 20
    assert c.kafka.partitions == 6 and c.kafka.replication_factor == 1 and c.kafka.tombstones is True
    assert c.sink.batch_max_bytes == 64 << 20
    assert c.sink.dead_letter_topic == "bridge._dlq" and c.sink.state_schema == "pgbridge_state"
    assert c.ack == "sink"
    assert (c.metrics.port, c.metrics.host) == (9187, "0.0.0.0")
    assert c.monitor.retained_wal_warn_bytes == 1 << 30


def test_example_file_loads() -> None:
    c = load_config(str(EXAMPLE), {})
    assert c.source.dsn == "postgresql://bridge@db:5432/app"
    assert c.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert c.sink.batch_max_rows == 10000 and c.sink.batch_max_ms == 200
    assert c.source.spill_bytes == 64 << 20 and c.monitor.retained_wal_warn_bytes == 1 << 30


def test_json_file(tmp_path: Path) -> None:
    p = write(tmp_path, json.dumps({"source": {"slot": "s1", "tables": ["app.*"]}, "ack": "kafka"}), "b.json")
    c = load_config(p, {})
    assert c.source.slot == "s1" and c.source.tables == ("app.*",) and c.ack == "kafka"


def test_dead_letter_topic_follows_prefix(tmp_path: Path) -> None:
    c = load_config(write(tmp_path, "kafka: {topic_prefix: shop}\n"), {})
    assert c.sink.dead_letter_topic == "shop._dlq"
    c = load_config(write(tmp_path, "kafka: {topic_prefix: shop}\nsink: {dead_letter_topic: dead}\n"), {})
    assert c.sink.dead_letter_topic == "dead"


@pytest.mark.parametrize(("yaml_text", "message"), [
    ("sink:\n  batch_max_rows: ten\n", "sink.batch_max_rows: expected an integer, got 'ten'"),
    ("sink:\n  batch_max_rows: true\n", "sink.batch_max_rows: expected an integer, got True"),
    ("sink:\n  batch_max_rows: 0\n", "sink.batch_max_rows: expected a positive integer, got 0"),
    ("sink:\n  batch_max_rowz: 5\n", "sink.batch_max_rowz: unknown key; did you mean 'batch_max_rows'?"),
    ("sinks:\n  group_id: x\n", "sinks: unknown section; did you mean 'sink'?"),
    ("source:\n  capture: copy\n", "source.capture: expected one of 'stream', 'sql', got 'copy'"),
    ("source:\n  slot: My-Slot\n", "source.slot: expected 1-63 characters of a-z, 0-9 and _, got 'My-Slot'"),
    ("source:\n  slot: " + "a" * 64 + "\n", "source.slot: expected 1-63 characters"),
    ("source:\n  tables: public.*\n", "source.tables: expected a list of strings, got 'public.*'"),
    ("source:\n  tables: [orders]\n", "source.tables: expected schema.table glob patterns like 'public.*', got 'orders'"),
    ("source:\n  heartbeat_interval_s: fast\n", "source.heartbeat_interval_s: expected a number, got 'fast'"),
    ("source:\n  heartbeat_interval_s: 0\n", "source.heartbeat_interval_s: expected a number of seconds > 0"),
    ("source:\n  spill_bytes: lots\n", "source.spill_bytes: expected an integer or a size like '64MB', got 'lots'"),
    ("kafka:\n  tombstones: maybe\n", "kafka.tombstones: expected true or false, got 'maybe'"),
    ("kafka:\n  topic_prefix: 'a b'\n", "kafka.topic_prefix: expected 1-200 characters"),
    ("kafka:\n  config: [a]\n", "kafka.config: expected a mapping of librdkafka properties to values"),
    ("kafka:\n  config: {linger.ms: [1]}\n", "kafka.config.linger.ms: expected a string, number or boolean"),
    ("kafka:\n  config: {bootstrap.servers: x}\n", "kafka.config.bootstrap.servers: set kafka.bootstrap_servers instead"),
    ("kafka:\n  schema_registry_url: registry:8081\n", "kafka.schema_registry_url: expected an http:// or https:// URL"),
    ("metrics:\n  port: 70000\n", "metrics.port: expected a TCP port 0-65535"),
    ("ack: broker\n", "ack: expected one of 'sink', 'kafka', got 'broker'"),
    ("source: [1]\n", "source: expected a mapping, got [1]"),
    ("- a\n- b\n", "expected a mapping of sections"),
    ("source:\n  slot: [unclosed\n", "not valid YAML at line 3"),
    ("source:\n  dsn: 'host=a port'\n", "source.dsn: not a valid connection string"),
])
def test_bad_values_name_the_key(tmp_path: Path, yaml_text: str, message: str) -> None:
    assert message in error_of(write(tmp_path, yaml_text))


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, "sink: {batch_max_rows: ten}\nsource: {slot: Bad, tabels: []}\n"))
    assert "sink.batch_max_rows: expected an integer" in msg
    assert "source.slot: expected 1-63" in msg
    assert "source.tabels: unknown key" in msg


def test_missing_file() -> None:
    assert "cannot read config file" in error_of("/nonexistent/bridge.yaml")


def test_env_overrides_every_type(tmp_path: Path) -> None:
    p = write(tmp_path, "sink: {batch_max_rows: 10}\nkafka: {schema_registry_url: 'http://r:8081'}\n")
    c = load_config(p, {
        "BRIDGE_SOURCE__DSN": "postgresql://bridge@db/app",           # str
        "BRIDGE_SINK__BATCH_MAX_ROWS": "5000",                        # int (wins over the file)
        "BRIDGE_SINK__BATCH_MAX_BYTES": "16MB",                       # size
        "BRIDGE_SOURCE__SPILL_BYTES": "2GiB",
        "BRIDGE_SOURCE__HEARTBEAT_INTERVAL_S": "2.5",                 # float
        "BRIDGE_KAFKA__TOMBSTONES": "off",                            # bool
        "BRIDGE_SOURCE__TABLES": "public.*, billing.invoices",        # list, comma-separated
        "BRIDGE_SOURCE__EXCLUDE": '["public.tmp_*"]',                 # list, JSON
        "BRIDGE_SOURCE__CAPTURE": "sql",                              # literal
        "BRIDGE_KAFKA__SCHEMA_REGISTRY_URL": "",                      # optional → null
        "BRIDGE_ACK": "kafka",                                        # top-level
        "BRIDGE_METRICS__PORT": "0",
        "BRIDGE_KAFKA__CONFIG__SASL_PASSWORD": "hunter2",             # kafka.config, _ → .
        "BRIDGE_KAFKA__CONFIG__SECURITY_PROTOCOL": "SASL_SSL",
        "BRIDGE_TEST_PG_DSN": "not config",                           # no __: not configuration
        "OTHER": "x",
    })
    assert c.source.dsn == "postgresql://bridge@db/app"
    assert c.sink.batch_max_rows == 5000
    assert c.sink.batch_max_bytes == 16 << 20 and c.source.spill_bytes == 2 << 30
    assert c.source.heartbeat_interval_s == 2.5
    assert c.kafka.tombstones is False
    assert c.source.tables == ("public.*", "billing.invoices")
    assert c.source.exclude == ("public.tmp_*",)
    assert c.source.capture == "sql"
    assert c.kafka.schema_registry_url is None
    assert c.ack == "kafka" and c.metrics.port == 0
    assert c.kafka.config == {"sasl.password": "hunter2", "security.protocol": "SASL_SSL"}
    assert c.kafka.client_config()["bootstrap.servers"] == "127.0.0.1:9092"


@pytest.mark.parametrize(("env", "message"), [
    ({"BRIDGE_SINK__BATCH_MAX_ROWS": "ten"},
     "sink.batch_max_rows (from BRIDGE_SINK__BATCH_MAX_ROWS): expected an integer, got 'ten'"),
    ({"BRIDGE_KAFKA__TOMBSTONES": "maybe"}, "kafka.tombstones (from BRIDGE_KAFKA__TOMBSTONES): expected true or false"),
    ({"BRIDGE_SOURCE__HEARTBEAT_INTERVAL_S": "x"}, "source.heartbeat_interval_s (from BRIDGE_SOURCE__HEARTBEAT_INTERVAL_S)"),
    ({"BRIDGE_SOURCE__TABLES": '[1, 2]'}, "source.tables (from BRIDGE_SOURCE__TABLES): expected a list of strings"),
    ({"BRIDGE_SOURCE__CAPTURE": "copy"}, "source.capture (from BRIDGE_SOURCE__CAPTURE): expected one of 'stream', 'sql'"),
    ({"BRIDGE_SINK__BATCH_MAX_ROW": "1"}, "sink.batch_max_row (from BRIDGE_SINK__BATCH_MAX_ROW): unknown key; did you mean 'batch_max_rows'?"),
    ({"BRIDGE_SINKS__GROUP_ID": "g"}, "BRIDGE_SINKS__GROUP_ID: unknown section 'sinks'"),
    ({"BRIDGE_SOURCE__SLOT": "UPPER"}, "source.slot (from BRIDGE_SOURCE__SLOT): expected 1-63 characters"),
])
def test_env_errors_name_key_and_variable(env: dict[str, str], message: str) -> None:
    assert message in error_of(None, env)


def test_secret_files(tmp_path: Path) -> None:
    (tmp_path / "src.pw").write_text("s3cr3t-src\n")
    (tmp_path / "sink.pw").write_text("s3cr3t-sink")
    (tmp_path / "kafka.pw").write_text("s3cr3t-kafka\n")
    (tmp_path / "dsn").write_text("postgresql://bridge@replica/app\n")
    p = write(tmp_path, f"""
source:
  dsn: postgresql://bridge@db/app
  password_file: {tmp_path / "src.pw"}
kafka:
  config:
    sasl.username: bridge
    sasl.password_file: {tmp_path / "kafka.pw"}
""")
    c = load_config(p, {"BRIDGE_SINK__PASSWORD_FILE": str(tmp_path / "sink.pw"),
                        "BRIDGE_SINK__DSN_FILE": str(tmp_path / "dsn")})
    assert c.source.password == "s3cr3t-src"
    assert c.sink.password == "s3cr3t-sink" and c.sink.dsn == "postgresql://bridge@replica/app"
    assert c.kafka.config == {"sasl.username": "bridge", "sasl.password": "s3cr3t-kafka"}
    assert "password=s3cr3t-src" in c.source.conninfo()
    assert "s3cr3t-sink" in c.sink.conninfo()
    c2 = load_config(p, {"BRIDGE_KAFKA__CONFIG__SASL_PASSWORD_FILE": str(tmp_path / "sink.pw")})
    assert c2.kafka.config["sasl.password"] == "s3cr3t-sink"  # env wins over the file's key


def test_secret_file_errors(tmp_path: Path) -> None:
    msg = error_of(None, {"BRIDGE_SOURCE__PASSWORD_FILE": str(tmp_path / "missing")})
    assert "source.password_file (from BRIDGE_SOURCE__PASSWORD_FILE): cannot read" in msg
    (tmp_path / "pw").write_text("x")
    msg = error_of(write(tmp_path, f"sink: {{password: hunter2, password_file: {tmp_path / 'pw'}}}\n"))
    assert "sink.password: set either 'password' or 'password_file', not both" in msg
    assert "hunter2" not in msg
    msg = error_of(write(tmp_path, "source: {tables_file: /x}\n"))  # only string keys have a _file form
    assert "source.tables_file: unknown key" in msg


def test_require() -> None:
    c = load_config(None, {"BRIDGE_SOURCE__DSN": "postgresql://db/app"})
    c.require("source", "kafka")
    with pytest.raises(ConfigError, match=r"sink.dsn: required by this command .*BRIDGE_SINK__DSN"):
        c.require("source", "sink")
    with pytest.raises(ConfigError, match=r"sink\.dsn: required"):
        c.sink.conninfo()


@pytest.mark.parametrize(("dsn", "shown"), [
    ("postgresql://bridge:hunter2@db:5432/app", "postgresql://bridge:***@db:5432/app"),
    ("postgres://u:p%40ss@db/app?sslmode=require", "postgres://u:***@db/app?sslmode=require"),
    ("postgresql://u:raw@at@db/app", "postgresql://u:***@db/app"),
    ("postgresql://db/app?password=hunter2&sslmode=require", "postgresql://db/app?password=***&sslmode=require"),
    ("host=db password=hunter2 dbname=app", "host=db password=*** dbname=app"),
    ("host=db password='hun ter2' dbname=app", "host=db password=*** dbname=app"),
    ("host=db sslpassword = hunter2", "host=db sslpassword = ***"),
    ("postgresql://bridge@db/app", "postgresql://bridge@db/app"),
])
def test_redact_dsn(dsn: str, shown: str) -> None:
    assert redact_dsn(dsn) == shown


def test_redacted_hides_every_secret(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("from-a-file")
    p = write(tmp_path, f"""
source: {{dsn: "postgresql://bridge:dsn-secret@db/app"}}
sink: {{dsn: "host=r password=kw-secret", password_file: {tmp_path / 'pw'}}}
kafka:
  config:
    sasl.password: sasl-secret
    ssl.key.password: key-secret
    sasl.oauthbearer.client.secret: oauth-secret
    sasl.username: visible-user
""")
    c = load_config(p, {"BRIDGE_SOURCE__PASSWORD": "env-secret"})
    text = json.dumps(c.redacted())
    for secret in ("dsn-secret", "kw-secret", "from-a-file", "sasl-secret", "key-secret", "oauth-secret",
                   "env-secret"):
        assert secret not in text
        assert secret in c.secrets()
    assert "visible-user" in text and "***" in text
    assert c.redacted()["kafka"]["config"]["sasl.password"] == "***"


def test_errors_never_show_secrets(tmp_path: Path) -> None:
    p = write(tmp_path, """
source: {dsn: "postgresql://bridge:dsn-secret@db/app", password: [not, a, string]}
sink: {dsn: 12}
kafka:
  config:
    sasl.password: [sasl-secret]
""")
    msg = error_of(p, {"BRIDGE_SINK__PASSWORD": "", "BRIDGE_SINK__BATCH_MAX_ROWS": "postgresql://u:env-secret@h/d"})
    assert "source.password: expected a string or null, got '***'" in msg
    assert "kafka.config.sasl.password: expected a string, number or boolean, got '***'" in msg
    assert "sink.batch_max_rows (from BRIDGE_SINK__BATCH_MAX_ROWS): expected an integer, got 'postgresql://u:***@h/d'" in msg
    for secret in ("dsn-secret", "sasl-secret", "env-secret", "'not'", "string']"):
        assert secret not in msg


@pytest.mark.parametrize("dsn", ["host=db password hunter2 x", "host=db password=hun hunter2",
                                 "host=db password='hunter2"])
def test_bad_dsn_error_does_not_echo_it(dsn: str) -> None:
    msg = error_of(None, {"BRIDGE_SOURCE__DSN": dsn})
    assert "source.dsn (from BRIDGE_SOURCE__DSN): not a valid connection string" in msg
    assert "hunter2" not in msg


def test_yaml_error_does_not_echo_the_line(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, 'sink:\n  password: "hunter2\n  dsn: x\n'))
    assert "not valid YAML" in msg and "hunter2" not in msg


def test_config_is_frozen() -> None:
    c = load_config(None, {})
    with pytest.raises(AttributeError):
        c.source.slot = "x"  # type: ignore[misc]
    assert isinstance(c, Config)


@pytest.mark.parametrize(("yaml_text", "fails"), [
    ("source: {tables: ['*.*']}\n", True),
    ("source: {tables: ['pg*.*']}\n", True),
    ("source: {tables: ['*.*'], exclude: ['pgbridge_state.*']}\n", False),
    ("source: {tables: ['public.*', 'sales.*']}\n", False),
    ("source: {tables: ['*.*']}\nsink: {state_schema: audit}\n", True),
    ("sink: {state_schema: pg_catalog}\n", True),
])
def test_captured_tables_cannot_map_onto_the_sink_state(tmp_path: Path, yaml_text: str, fails: bool) -> None:
    path = write(tmp_path, yaml_text)
    if fails:
        message = error_of(path)
        assert "state" in message
    else:
        assert load_config(path, {}).sink.state_schema == "pgbridge_state"


def test_position_schema_is_the_deprecated_name_of_state_schema(tmp_path: Path) -> None:
    c = load_config(write(tmp_path, "sink: {position_schema: bridge}\n"), {})
    assert c.sink.state_schema == "bridge" and c.sink.position_schema is None
    assert "sink.tables" in error_of(write(tmp_path, "sink: {tables: ['nodot']}\n"))
