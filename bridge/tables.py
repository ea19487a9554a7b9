"""Which tables a component handles: include/exclude globs over `schema.table`.

Used by the producer (`source.tables`, `source.exclude`: what is captured) and the sink
(`sink.tables`: what it may write). Patterns are `fnmatch` globs over the unquoted names joined
by a dot, case-sensitive, as written in the config (`public.*`, `sales.order_*`).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

_CACHE_MAX = 100_000  # decisions remembered (then forgotten at once: memory stays bounded)


class TableFilter:
    """Include/exclude globs over `schema.table` (unquoted names), decided once per table."""

    def __init__(self, include: Sequence[str], exclude: Sequence[str] = ()) -> None:
        self.include = list(include)
        self.exclude = list(exclude)
        self._cache: dict[tuple[str, str], bool] = {}

    def __call__(self, schema: str, table: str) -> bool:
        key = (schema, table)
        hit = self._cache.get(key)
        if hit is None:
            name = f"{schema}.{table}"
            hit = any(fnmatch.fnmatchcase(name, p) for p in self.include) and not any(
                fnmatch.fnmatchcase(name, p) for p in self.exclude)
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[key] = hit
        return hit

    def may_match_schema(self, schema: str) -> bool:
        """Whether some table of `schema` could be selected: an include pattern's schema part
        matches it and no exclude pattern drops the whole schema. Used to check, from the config
        alone, that a schema (the sink's state) cannot be captured."""
        def schema_part(p: str) -> str:
            return p.split(".", 1)[0]

        included = any(fnmatch.fnmatchcase(schema, schema_part(p)) for p in self.include)
        dropped = any(fnmatch.fnmatchcase(schema, schema_part(p)) and p.split(".", 1)[1:] == ["*"]
                      for p in self.exclude)
        return included and not dropped
