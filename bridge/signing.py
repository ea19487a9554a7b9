"""Record signatures: who wrote a record, for a sink that must not trust its topics.

Schema validation and admission (`bridge.codec.validate`, `bridge.sink.admit`) keep a forged
record away from SQL, other tables and the sink's state, but a *well-formed* record in a table's
own topic is indistinguishable from the producer's: it would change that table's rows, and with a
future position make the sink skip the partition's later changes. With `kafka.signing_secret`
set (the same on producer and sink), every record the bridge writes carries the header
`bridge.mac`: HMAC-SHA256, cut to 16 bytes, over the topic, the partition (-1 on the
single-partition internal topics), the key and the value. Readers refuse what does not verify:
the sink dead-letters a data record, skips a schema entry, and the producer ignores an ack.
A record copied to another partition or topic does not verify; one replayed in place carries a
position already applied and is skipped as a replay.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from bridge.kafka.headers import HEADER_MAC, header_value

HEADER = HEADER_MAC
ANY_PARTITION = -1  # internal topics of one partition are signed without it
_MAC_BYTES = 16


class Signer:
    """Signs and verifies records with one secret. Thread-safe (no state besides the key)."""

    def __init__(self, secret: str) -> None:
        # derived, so a secret of any length and form gives a full-size key
        self._key = hashlib.sha256(b"pgbridge record signing\0" + secret.encode()).digest()

    def mac(self, topic: str, partition: int, key: bytes | None, value: bytes | None) -> bytes:
        """The signature of one record. Called once per record produced (the hot path: ~1 µs)."""
        k = key or b""
        msg = b"".join((topic.encode(), b"\0", partition.to_bytes(4, "big", signed=True),
                        len(k).to_bytes(4, "big"), k, value or b""))
        return hmac.digest(self._key, msg, "sha256")[:_MAC_BYTES]

    def header(self, topic: str, partition: int, key: bytes | None, value: bytes | None) -> tuple[str, bytes]:
        return HEADER, self.mac(topic, partition, key, value)

    def verify(self, topic: str, partition: int, key: bytes | None, value: bytes | None, headers: Any) -> bool:
        """Whether `headers` (a confluent-kafka header list or dict) carry this record's signature."""
        given = header_value(headers, HEADER)
        return given is not None and hmac.compare_digest(given, self.mac(topic, partition, key, value))
