"""Capture: read test_decoding lines from the slot, and let the slot advance only when told.

Two implementations of `ChangeSource`:

- `StreamCapture` (default): a `replication=database` connection running `START_REPLICATION`,
  driven at the libpq level (`conn.pgconn`) and waited on with `selectors`. The standby status
  update reports write = flush = apply = the LSN given to `confirm()`, so the server keeps every
  transaction that was not confirmed, whatever was received.
- `SqlCapture`: `pg_logical_slot_peek_changes` (never `get_changes`, which is destructive) read
  through a server-side cursor, and `pg_replication_slot_advance` on `confirm()`.

Both re-deliver after a lost connection: once reconnected, `read` returns the lines again from
the last confirmed position, and `reconnects` has been incremented before the first of them is
returned. Every list `read` returns comes from one connection. A caller that sees `reconnects`
change discards its partly read transaction. Neither class is thread-safe: call `read` and
`confirm` from one thread.
"""

from __future__ import annotations

from bridge.source.capture_base import DECODING_OPTIONS, ChangeSource, WalMessage
from bridge.source.sql_capture import SqlCapture
from bridge.source.stream_capture import StreamCapture

__all__ = ["DECODING_OPTIONS", "ChangeSource", "SqlCapture", "StreamCapture", "WalMessage"]
