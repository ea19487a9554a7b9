"""The hand-written type checker: a value from the file or the environment checked against (or
parsed by) its dataclass field's type, with an error that names the key path and what was
expected (`sink.batch_max_rows: expected an integer, got 'ten'`)."""

from __future__ import annotations

import json
import re
import types
from collections.abc import Mapping
from typing import Any, Literal, Union, get_args, get_origin

from bridge.config.paths import where
from bridge.config.redact import show_value


def is_str_field(tp: Any) -> bool:
    return tp is str or (get_origin(tp) in (Union, types.UnionType) and str in get_args(tp))


INVALID: Any = object()
_TRUE = {"true", "1", "yes", "on", "y"}
_FALSE = {"false", "0", "no", "off", "n"}
_SIZE = re.compile(r"^\s*(\d+)\s*(b|kb|mb|gb|tb|kib|mib|gib|tib)?\s*$", re.IGNORECASE)
_SIZE_FACTOR = {"b": 1, "kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30, "tb": 1 << 40,
                "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}


def parse_size(text: str) -> int | None:
    m = _SIZE.match(text)
    if m is None:
        return None
    return int(m[1]) * _SIZE_FACTOR[(m[2] or "b").lower()]


def expected(tp: Any, key: str) -> str:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        inner = [a for a in get_args(tp) if a is not type(None)]
        return f"{expected(inner[0], key)} or null"
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


def parse_env_value(path: str, key: str, tp: Any, text: str, env_name: str, errors: list[str]) -> Any:
    """An environment string converted to `tp` (validated later by `check_value`)."""
    origin = get_origin(tp)
    s = text.strip()
    if origin in (Union, types.UnionType):
        if s == "" or s.lower() in ("null", "none", "~"):
            return None
        inner = next(a for a in get_args(tp) if a is not type(None))
        return parse_env_value(path, key, inner, text, env_name, errors)
    try:
        if tp is bool:
            if s.lower() in _TRUE:
                return True
            if s.lower() in _FALSE:
                return False
            raise ValueError
        if tp is int:
            size = parse_size(s) if key.endswith("_bytes") else None
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
        errors.append(f"{path} (from {env_name}): expected {expected(tp, key)}, got {show_value(key, text)}")
        return INVALID
    return text


def check_value(path: str, key: str, tp: Any, value: Any, errors: list[str], origin: Mapping[str, str]) -> Any:
    """`value` (from the file or already parsed from env) checked against `tp`; `INVALID` if wrong."""
    def bad() -> Any:
        errors.append(f"{where(path, origin)}: expected {expected(tp, key)}, got {show_value(key, value)}")
        return INVALID

    torigin = get_origin(tp)
    if torigin in (Union, types.UnionType):
        if value is None:
            return None
        inner = next(a for a in get_args(tp) if a is not type(None))
        return check_value(path, key, inner, value, errors, origin) if _ok_type(inner, key, value) else bad()
    if torigin is Literal and isinstance(value, str):
        for choice in get_args(tp):
            if isinstance(choice, str) and choice.lower() == value.strip().lower():
                return choice
    if not _ok_type(tp, key, value):
        return bad()
    if tp is int and isinstance(value, str):
        return parse_size(value)
    if tp is float:
        return float(value)
    if torigin is tuple:
        return tuple(value)
    if torigin is dict:
        out: dict[str, Any] = {}
        for k, v in value.items():
            sub = f"{path}.{k}"
            if not isinstance(k, str) or not k:
                errors.append(f"{where(path, origin)}: property names must be non-empty strings, got {k!r}")
            elif not isinstance(v, str | int | float | bool):
                errors.append(f"{where(sub, origin)}: expected a string, number or boolean, got {show_value(k, v)}")
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
            return parse_size(value) is not None
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
