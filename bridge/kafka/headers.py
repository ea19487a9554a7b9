"""The record headers the bridge writes and reads.

| header | on | value |
| --- | --- | --- |
| `bridge.commit_lsn` | every data record | the transaction's commit LSN, `16/B374D848` |
| `bridge.seq` | every data record | the change's index in its transaction, decimal |
| `bridge.xid` | every data record | the transaction id, decimal |
| `bridge.mac` | every record, with `kafka.signing_secret` | the signature (bridge/signing.py) |
| `bridge.dlq.error` | dead letters | `ErrorType: message` |
| `bridge.dlq.topic`, `.partition`, `.offset` | dead letters | where the record came from |

Readers take the last value of a repeated header (`header_value`).
"""

from __future__ import annotations

from typing import Any

from bridge.events import Position
from bridge.lsn import Lsn

HEADER_LSN = "bridge.commit_lsn"
HEADER_SEQ = "bridge.seq"
HEADER_XID = "bridge.xid"
HEADER_MAC = "bridge.mac"
HEADER_DLQ_ERROR = "bridge.dlq.error"
HEADER_DLQ_TOPIC = "bridge.dlq.topic"
HEADER_DLQ_PARTITION = "bridge.dlq.partition"
HEADER_DLQ_OFFSET = "bridge.dlq.offset"


def header_value(headers: Any, name: str) -> bytes | None:
    """The last value of header `name` in a confluent-kafka header list or dict, or None."""
    items = headers.items() if isinstance(headers, dict) else (headers or ())
    found: bytes | None = None
    for k, v in items:
        if k == name and v is not None:
            found = bytes(v)
    return found


def position_from_headers(headers: Any) -> Position | None:
    """The record's position from `bridge.commit_lsn` and `bridge.seq`, or None when either is
    missing. Raises `ValueError` when they do not parse."""
    lsn: Any = None
    seq: Any = None
    items = headers.items() if isinstance(headers, dict) else (headers or ())
    for k, v in items:
        if k == HEADER_LSN:
            lsn = v
        elif k == HEADER_SEQ:
            seq = v
    if lsn is None or seq is None:
        return None
    return Position(Lsn.parse(lsn.decode() if isinstance(lsn, bytes) else str(lsn)), int(seq))
