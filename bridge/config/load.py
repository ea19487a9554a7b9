"""`load_config`: defaults, the file, the environment, secret files, validation."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from bridge.config.env import apply_env, apply_secret_files
from bridge.config.model import SECTION_TYPES, SECTIONS, TOP_SCALARS, TOP_TYPES, Config, join_errors
from bridge.config.paths import did_you_mean, where
from bridge.config.redact import show_value
from bridge.config.typecheck import INVALID, check_value
from bridge.config.validate import validate
from bridge.errors import ConfigError
from bridge.kafka.topics import dead_letter_topic

log = logging.getLogger("bridge.config")

def load_config(path: str | os.PathLike[str] | None, env: Mapping[str, str] = os.environ) -> Config:
    """Read `path` (YAML or JSON; None → defaults only), apply `env` overrides and secret files,
    validate. Called once by the CLI at start. Raises `ConfigError` listing every problem found,
    each naming its key path; no secret appears in the message."""
    raw: dict[str, Any] = read_file(Path(path)) if path is not None else {}
    errors: list[str] = []
    origin: dict[str, str] = {}  # key path -> environment variable it came from
    apply_env(raw, env, errors, origin)
    apply_secret_files(raw, errors, origin)
    config = build(raw, errors, origin)
    if errors:
        raise ConfigError(join_errors(errors))
    assert config is not None
    return config



def read_file(path: Path) -> dict[str, Any]:
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



def build(raw: dict[str, Any], errors: list[str], origin: Mapping[str, str]) -> Config | None:
    top: dict[str, Any] = {}
    for name, value in raw.items():
        if name in TOP_SCALARS:
            checked = check_value(name, name, TOP_TYPES[name], value, errors, origin)
            if checked is not INVALID:
                top[name] = checked
            continue
        types_ = SECTION_TYPES.get(name) if isinstance(name, str) else None
        if types_ is None:
            errors.append(f"{name}: unknown section{did_you_mean(str(name), [*SECTIONS, *TOP_SCALARS])}")
            continue
        if value is None:
            value = {}
        if not isinstance(value, dict):
            errors.append(f"{name}: expected a mapping, got {show_value(name, value)}")
            continue
        kwargs: dict[str, Any] = {}
        for key, v in value.items():
            path = f"{name}.{key}"
            tp = types_.get(key) if isinstance(key, str) else None
            if tp is None:
                errors.append(f"{where(path, origin)}: unknown key{did_you_mean(str(key), types_)}")
                continue
            checked = check_value(path, key, tp, v, errors, origin)
            if checked is not INVALID:
                kwargs[key] = checked
        top[name] = SECTIONS[name](**kwargs)
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
    validate(config, errors, origin)
    return None if errors else config
