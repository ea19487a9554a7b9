"""The switch between the native core (`bridge._native`, the Rust crate in `native/`) and the
Python reference implementation.

`BRIDGE_NATIVE=0` (or `false`/`no`/`off`) selects the Python reference path everywhere, for
debugging and for the differential tests; anything else, or unset, selects the native core. The
native core is part of every build (`pip install .` compiles it), so a missing extension is an
installation error, not a silent fallback.
"""

from __future__ import annotations

import os
from types import ModuleType

_OFF = {"0", "false", "no", "off"}


def enabled() -> bool:
    """Whether the native core is selected (read at every call: tests switch it per test)."""
    return os.environ.get("BRIDGE_NATIVE", "1").strip().lower() not in _OFF


def module() -> ModuleType:
    """The compiled extension. Raises ImportError, naming the fix, when it was not built."""
    try:
        import bridge._native as _native
    except ImportError as exc:  # pragma: no cover - an installation error
        raise ImportError("bridge._native is missing: build it with `make venv` "
                          "(or `pip install .`), or set BRIDGE_NATIVE=0 for the Python reference path") from exc
    return _native
