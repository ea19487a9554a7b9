"""The sink's input: a decoded change with the Kafka coordinates it was read from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from bridge.events import Op, Position, Row
from bridge.relation import Relation


class Change(Protocol):
    """What the sink needs of a decoded change (`bridge.codec`'s `DecodedChange`, or `ChangeEvent`)."""

    @property
    def relation(self) -> Relation: ...
    @property
    def op(self) -> Op: ...
    @property
    def position(self) -> Position: ...
    @property
    def before(self) -> Row | None: ...
    @property
    def after(self) -> Row | None: ...
    @property
    def unchanged(self) -> tuple[str, ...]: ...


@dataclass(slots=True)
class SinkRecord:
    """One consumed record: where it came from and what it says. (Not frozen: built per record.)"""

    topic: str
    partition: int
    offset: int
    change: Change
