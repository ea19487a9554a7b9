"""Source transactions: test_decoding lines in WAL order → whole committed transactions.

The stage after the capture. Guarantees: a `Transaction` is handed out only at its COMMIT, with
its commit LSN, xid and commit time (`commit_ts_us`, microseconds UTC, parsed here once) and its
change lines in order; a non-transactional logical message comes out as a `Message` at its own
LSN, between the transactions around it. BEGIN and COMMIT are read with the typed parser
(`parse_line` → `BeginLine`/`CommitLine`); change lines are only classified (`line_kind`) and
kept as text, since the decode stage parses them. Every record carries its position
`(commit_lsn, seq)`, and the commit LSN is only known at the COMMIT line, so a transaction's
change lines are held until then: in memory up to `spill_bytes`, then appended to an anonymous
temporary file. Memory therefore stays bounded for a transaction of any size.
Raises `DecodeError` for a line out of place (a change outside a transaction, BEGIN inside one,
COMMIT without BEGIN) or of no known kind.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO

from bridge.errors import DecodeError
from bridge.lsn import Lsn
from bridge.source.converters import timestamptz_us
from bridge.source.lines import BeginLine, CommitLine, LineKind, MessageLine, line_kind
from bridge.source.test_decoding import parse_line

log = logging.getLogger(__name__)

DEFAULT_SPILL_BYTES = 64 << 20
"""Past this many bytes of buffered text a transaction goes to a temporary file. 64 MiB keeps
ordinary transactions in memory (a 1,000-row orders transaction is ~350 kB) while bounding a
million-row one."""


@dataclass(slots=True)
class Transaction:
    """A committed transaction's change lines, in order, and where it committed.

    `lines()` may be iterated once. A transaction with no lines is still a position the
    slot may move past (it is how heartbeats and skipped tables advance the watermark).
    """

    xid: int | None
    commit_lsn: Lsn
    commit_ts: str | None  # the COMMIT line's timestamptz text
    count: int
    commit_ts_us: int | None = None  # the same, microseconds since the Unix epoch (UTC)
    _memory: list[str] = field(default_factory=list)
    _spill: IO[str] | None = None

    def lines(self) -> Iterator[str]:
        if self._spill is not None:
            spill, self._spill = self._spill, None
            try:
                spill.seek(0)
                for raw in spill:
                    # Lines were written with embedded newlines escaped (see _TxnBuffer._spill_line).
                    yield _unescape(raw[:-1])
            finally:
                spill.close()
        yield from self._memory
        self._memory = []

    def discard(self) -> None:
        if self._spill is not None:
            self._spill.close()
            self._spill = None
        self._memory = []


@dataclass(slots=True)
class Message:
    """A non-transactional logical message (`pg_logical_emit_message(false, …)`), e.g. a heartbeat."""

    lsn: Lsn
    line: str
    message: MessageLine


def _escape(line: str) -> str:
    return line.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")


def _unescape(text: str) -> str:
    if "\\" not in text:
        return text
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        j = text.find("\\", i)
        if j < 0:
            out.append(text[i:])
            break
        out.append(text[i:j])
        c = text[j + 1] if j + 1 < n else ""
        out.append({"n": "\n", "r": "\r", "\\": "\\"}.get(c, c))
        i = j + 2
    return "".join(out)


_TABLE, _BEGIN, _COMMIT = LineKind.TABLE, LineKind.BEGIN, LineKind.COMMIT  # globals: cheaper than enum reads
_MESSAGE, _TRANSACTIONAL_MESSAGE = LineKind.MESSAGE, LineKind.TRANSACTIONAL_MESSAGE


class TransactionAssembler:
    """Feeds on (lsn, line) pairs in WAL order and hands out whole transactions.

    `feed()` returns a `Transaction` when a COMMIT completes one, a `Message` for a
    non-transactional logical message, else `None`. `reset()` is called when the capture
    reconnects and the server resends from the confirmed position: a half-received transaction
    is dropped and will arrive again whole.
    """

    def __init__(self, spill_bytes: int = DEFAULT_SPILL_BYTES, spill_dir: str | None = None) -> None:
        self.spill_bytes = spill_bytes
        self.spill_dir = spill_dir
        self._open = False
        self._xid: int | None = None
        self._memory: list[str] = []
        self._bytes = 0
        self._count = 0
        self._spill: IO[str] | None = None

    @property
    def in_transaction(self) -> bool:
        return self._open

    def reset(self) -> None:
        if self._spill is not None:
            self._spill.close()
        self._clear()

    def _clear(self) -> None:
        """No transaction open (the buffers now belong to a handed-out Transaction, or are dropped)."""
        self._open = False
        self._xid = None
        self._memory = []
        self._bytes = 0
        self._count = 0
        self._spill = None

    def feed(self, lsn: Lsn, line: str) -> Transaction | Message | None:
        kind = line_kind(line)
        if kind is _TABLE:
            if not self._open:
                raise DecodeError("change outside a transaction", line=line[:200], offset=0, lsn=str(lsn))
            self._add(line)
            return None
        if kind is _BEGIN:
            if self._open:
                raise DecodeError("BEGIN inside an open transaction", line=line[:200], offset=0, lsn=str(lsn))
            begin = parse_line(line)
            assert isinstance(begin, BeginLine)
            self._open = True
            self._xid = begin.xid
            return None
        if kind is _COMMIT:
            if not self._open:
                raise DecodeError("COMMIT without BEGIN", line=line[:200], offset=0, lsn=str(lsn))
            commit = parse_line(line)
            assert isinstance(commit, CommitLine)
            return self._commit(lsn, commit)
        if kind is _TRANSACTIONAL_MESSAGE and self._open:
            self._add(line)
            return None
        if kind is _MESSAGE or kind is _TRANSACTIONAL_MESSAGE:
            message = parse_line(line)
            assert isinstance(message, MessageLine)
            return Message(lsn, line, message)
        raise DecodeError("unrecognised test_decoding line", line=line[:200], offset=0, lsn=str(lsn))

    def _add(self, line: str) -> None:
        self._count += 1
        if self._spill is not None:
            self._spill.write(_escape(line) + "\n")
            return
        self._memory.append(line)
        self._bytes += len(line) + 56  # str object overhead, roughly
        if self._bytes > self.spill_bytes:
            self._spill = tempfile.TemporaryFile("w+", encoding="utf-8", dir=self.spill_dir)
            log.info("transaction %s spills to disk after %d lines", self._xid, self._count,
                     extra={"xid": self._xid})
            for held in self._memory:
                self._spill.write(_escape(held) + "\n")
            self._memory = []
            self._bytes = 0

    def _commit(self, lsn: Lsn, commit: CommitLine) -> Transaction:
        xid = commit.xid if commit.xid is not None else self._xid
        txn = Transaction(xid, lsn, commit.commit_ts, self._count, _commit_ts_us(commit.commit_ts),
                          self._memory, self._spill)
        self._clear()
        return txn


def _commit_ts_us(text: str | None) -> int | None:
    """The commit time in microseconds, or None when the line has none (or it does not parse)."""
    if text is None:
        return None
    try:
        return timestamptz_us(text)
    except (DecodeError, ValueError):
        return None
