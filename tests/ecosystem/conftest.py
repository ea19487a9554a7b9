"""Fixtures for tests against real ecosystem parts (tests/ecosystem/).

- `registry`: one Apicurio Registry (in-memory storage, Confluent-compatible API, global
  compatibility BACKWARD) per test session, installed by tools/install-apicurio.sh on first use
  (~12 s once, then cached under ~/.cache/pgbridge); ready in about 7 s.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bridge.local.registry import LocalRegistry


@pytest.fixture(scope="session")
def registry() -> Iterator[LocalRegistry]:
    reg = LocalRegistry().start()
    try:
        yield reg
    finally:
        reg.destroy()
