"""Environment overrides (`BRIDGE_<SECTION>__<KEY>`) and secret files (`<name>_file`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bridge.config.model import ENV_PREFIX, SECTION_TYPES, SECTIONS, TOP_SCALARS, TOP_TYPES
from bridge.config.paths import did_you_mean, where
from bridge.config.redact import show_value
from bridge.config.typecheck import INVALID, is_str_field, parse_env_value


def apply_env(raw: dict[str, Any], env: Mapping[str, str], errors: list[str], origin: dict[str, str]) -> None:
    """Overlay `BRIDGE_<SECTION>__<KEY>` variables on `raw`, parsing each by its field's type."""
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX):]
        text = env[name]
        if "__" not in rest:
            if rest.lower() in TOP_SCALARS:
                key = rest.lower()
                origin[key] = name
                value = parse_env_value(key, key, TOP_TYPES[key], text, name, errors)
                if value is not INVALID:
                    raw[key] = value
            continue
        section_name, _, key_part = rest.partition("__")
        section_name = section_name.lower()
        types_ = SECTION_TYPES.get(section_name)
        if types_ is None:
            errors.append(f"{name}: unknown section {section_name!r}{did_you_mean(section_name, SECTIONS)}")
            continue
        section = raw.get(section_name)
        if section is None:
            section = raw[section_name] = {}
        elif not isinstance(section, dict):
            continue  # reported by build
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
        if key.endswith("_file") and is_str_field(types_.get(key[: -len("_file")])):
            section[key] = text
            continue
        tp = types_.get(key)
        if tp is None or key == "config":
            errors.append(f"{path} (from {name}): unknown key{did_you_mean(key, types_)}")
            continue
        value = parse_env_value(path, key, tp, text, name, errors)
        if value is not INVALID:
            section[key] = value


def _env_to_kafka_property(part: str) -> str:
    """`SASL_PASSWORD` → `sasl.password`; `SASL_PASSWORD_FILE` → `sasl.password_file`."""
    lower = part.lower()
    if lower.endswith("_file"):
        return lower[: -len("_file")].replace("_", ".") + "_file"
    return lower.replace("_", ".")


def apply_secret_files(raw: dict[str, Any], errors: list[str], origin: Mapping[str, str]) -> None:
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
                if prefix == section_name and not is_str_field(SECTION_TYPES.get(section_name, {}).get(target)):
                    continue  # reported as an unknown key by build
                file_name = mapping.pop(key)
                if not isinstance(file_name, str) or not file_name:
                    errors.append(f"{where(path, origin)}: expected a file path, got {show_value(key, file_name)}")
                    continue
                if mapping.get(target) is not None:
                    errors.append(f"{prefix}.{target}: set either {target!r} or {key!r}, not both")
                    continue
                try:
                    content = Path(file_name).read_text(encoding="utf-8")
                except OSError as exc:
                    errors.append(f"{where(path, origin)}: cannot read {file_name!r}: {exc.strerror or exc}")
                    continue
                mapping[target] = content.rstrip("\r\n")
