"""Redaction: secrets never appear in a `ConfigError`, in `Config.redacted()`, or (through
`bridge.logs`) in a log line; they show as `***`, DSNs with their password replaced."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

REDACTED = "***"

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


def redact_tree(tree: Any, key: str = "") -> Any:
    if isinstance(tree, Mapping):
        return {k: redact_tree(v, str(k)) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return [redact_tree(v, key) for v in tree]
    return _redact_value(key, tree)


def collect_secrets(tree: Any, found: set[str], key: str = "") -> None:
    if isinstance(tree, Mapping):
        for k, v in tree.items():
            collect_secrets(v, found, str(k))
    elif isinstance(tree, str) and is_secret_key(key):
        found.add(tree)
    elif isinstance(tree, str) and key == "dsn":
        for m in _URI_PASSWORD.finditer(tree):
            userinfo = m.group(0)[len(m["head"]) + 1 : -1]
            found.add(userinfo)
        for m in _KW_PASSWORD.finditer(tree):
            value = m.group(0)[len(m["head"]):]
            found.add(value[1:-1] if value.startswith("'") else value)


def show_value(key: str, value: Any) -> str:
    """A value as it may appear in an error message."""
    if is_secret_key(key):
        return repr(REDACTED)
    if isinstance(value, str):
        return repr(redact_dsn(value))
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
