"""Type stubs of the compiled extension (native/src); keep in step with the #[pyfunction]s and #[pyclass]es."""

from collections.abc import Callable, Iterator
from typing import Any

__version__: str

class Producer:
    """The producer's native core (native/src/producer): per-table plans, change line → framed
    key and envelope. Driven by bridge.source.native_decoder.NativeChangeDecoder."""

    def __init__(self) -> None: ...
    def install(self, schema: str, table: str, columns: list[tuple[str, str, str, int, int, int, int, str]],
                pk: list[int], key_exact: bool, key_prefix: bytes | None, value_prefix: bytes,
                src_names: bytes) -> int: ...
    def remove(self, schema: str, table: str) -> None: ...
    def encode(self, line: str, seq: int, lsn: bytes, tail: bytes) -> tuple[int, int, bytes | None, bytes] | int: ...
    def check(self, line: str) -> tuple[int, str] | None: ...

# -- the sink path (native/src/sink) --------------------------------------------------------------

class NativeRow:
    """A row record that stays in its record's bytes; a read-only sequence of value forms."""

    def __len__(self) -> int: ...
    def __getitem__(self, index: int) -> Any: ...
    def __iter__(self) -> Iterator[Any]: ...
    def to_tuple(self) -> tuple[Any, ...]: ...

class EnvelopePlan:
    """The bounded reader of one writer schema's envelopes; columns: (kind, precision, scale, ndims)."""

    def __init__(self, columns: list[tuple[str, int, int, int]],
                 change_type: tuple[Any, Any, Any, Any, tuple[Any, ...]] | None = None) -> None: ...
    def decode(self, value: bytes, offset: int) -> tuple[int, int, int, int, int | None, bool, int,
                                                         tuple[str, ...], NativeRow | None, NativeRow | None]: ...
    def change(self, value: bytes, offset: int) -> Any:
        """change_class(relation, op, position_class(lsn, seq), xid, commit_ts, before, after,
        unchanged, snapshot, ts_ms), from change_type = (change_class, position_class, lsn_class,
        relation, ops)."""
    def __len__(self) -> int: ...

class CopyPlan:
    """Binary COPY tuples of (lsn, seq, op, aux, NativeRow) items, into a reused buffer."""

    def __init__(self, codes: list[str], meta: bool, fallback: Callable[[int, Any], bytes]) -> None: ...
    def encode(self, items: list[Any]) -> bytes | None: ...
