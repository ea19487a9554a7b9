"""How a key path is named in an error: where its value came from, and what was meant."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping


def did_you_mean(key: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(sorted(known))}"


def where(path: str, origin: Mapping[str, str]) -> str:
    env = origin.get(path)
    return f"{path} (from {env})" if env else path
