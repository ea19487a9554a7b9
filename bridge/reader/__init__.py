"""`bridge.reader`: a topic of the bridge read as pyarrow record batches, for pandas, polars and
DuckDB users (docs/reader.md).

    from bridge.reader import read_table
    table = read_table("localhost:9092", "bridge.public.orders")
    df = table.to_pandas()            # or polars.from_arrow(table), duckdb.sql("... FROM table")

Each row is a change: the row's columns (typed from the writer's Avro schema: `ArrowPlan`,
`arrow_type`), then the control columns `META_FIELDS` (`__op`, `__lsn`, `__seq`, `__xid`,
`__commit_ts`, `__snapshot`, `__unchanged`, `__partition`, `__offset`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from bridge.reader.arrow import META_FIELDS, ArrowPlan, arrow_type
from bridge.reader.errors import ReaderError
from bridge.reader.topic import ReadStats, TopicReader

__all__ = ["META_FIELDS", "ArrowPlan", "ReadStats", "ReaderError", "TopicReader", "arrow_type", "read_batches",
           "read_table"]


def read_batches(bootstrap: str, topic: str, **options: Any) -> Iterator[pa.RecordBatch]:
    """The record batches of `topic` (`TopicReader(bootstrap, topic, **options).batches()`;
    see `TopicReader` for the options). Raises `ReaderError`."""
    with TopicReader(bootstrap, topic, **options) as reader:
        yield from reader.batches()


def read_table(bootstrap: str, topic: str, **options: Any) -> pa.Table:
    """The whole topic, to each partition's end, as one `pyarrow.Table`. Batches of different
    writer schemas are unified (a column added later is null in earlier rows; a widened type
    is promoted); a topic without changes gives an empty table of the control columns only.
    Raises `ReaderError`, also when the schemas cannot be unified."""
    options.setdefault("until_end", True)
    if not options["until_end"]:
        raise ReaderError("read_table reads to the end: until_end must be true", topic=topic)
    with TopicReader(bootstrap, topic, **options) as reader:
        tables = [pa.Table.from_batches([b]) for b in reader.batches()]
        if not tables:  # no change to read, so no writer schema: the control columns only
            return pa.schema(list(META_FIELDS)).empty_table()
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ReaderError(f"the topic's writer schemas cannot be unified: {exc}", topic=topic) from exc
