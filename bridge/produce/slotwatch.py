"""Watches the slot from the producer: metrics, and a WARNING when retained WAL passes a threshold."""

from __future__ import annotations

import logging
import time

from bridge import metrics
from bridge.errors import BridgeError
from bridge.source.slot import SlotManager, SlotStatus

log = logging.getLogger(__name__)


class SlotWatcher:
    """`tick()` is called from the producer loop on every turn; it queries the slot at most every
    `interval_s` (one short connection), updates the slot metrics and warns about retained WAL
    above `warn_bytes` and a `wal_status` other than `reserved`. Never raises: a failed query is
    logged and tried again at the next interval."""

    def __init__(self, slots: SlotManager, *, interval_s: float, warn_bytes: int) -> None:
        self.slots = slots
        self.interval_s = interval_s
        self.warn_bytes = warn_bytes
        self._next = 0.0
        self.last: SlotStatus | None = None

    def tick(self) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self.interval_s
        try:
            st = self.slots.status()
        except BridgeError as exc:
            log.warning("slot status unavailable: %s", exc, extra={"slot": self.slots.slot})
            return
        if st is None:
            log.error("the replication slot no longer exists", extra={"slot": self.slots.slot})
            return
        self.last = st
        metrics.set_slot(st.name, st.confirmed_flush_lsn, st.retained_wal_bytes, st.wal_status)
        extra = {"slot": st.name, "retained_wal_bytes": st.retained_wal_bytes, "wal_status": st.wal_status,
                 "position": str(st.confirmed_flush_lsn)}
        if st.retained_wal_bytes is not None and st.retained_wal_bytes > self.warn_bytes:
            log.warning("slot retains %d bytes of WAL (threshold %d): the sink or the ack loop is behind",
                        st.retained_wal_bytes, self.warn_bytes, extra=extra)
        if st.wal_status not in (None, "reserved"):
            log.warning("slot wal_status is %s: WAL is at risk of removal (max_slot_wal_keep_size)",
                        st.wal_status, extra=extra)
