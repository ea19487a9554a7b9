"""Throwaway local services for `pgbridge demo` and the test suite.

Each launcher starts a real server bound to 127.0.0.1 on a free port, waits until it answers,
and stops what it started. Nothing here is used by the producer or the sink themselves.
"""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
