"""The reader's errors."""

from __future__ import annotations

from bridge.errors import BridgeError


class ReaderError(BridgeError):
    """A topic cannot be read into Arrow: a record that does not decode or verify, a value Arrow
    cannot hold, a broker error that does not pass. Names topic, partition and offset where
    there is one."""
