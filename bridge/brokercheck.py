"""Is the broker there, and does it speak our protocol? Asked once when a producer or sink starts
and by `pgbridge check`, so a wrong `security.protocol` / `sasl.*` / `ssl.*` setting gives an
error that names it instead of a bare timeout somewhere later.

A client whose security settings do not match the broker's listener never gets an answer it
understands: a PLAINTEXT listener closes the connection on a SASL handshake, a TLS client sees
garbage from a plain listener, and librdkafka retries all of that silently until a timeout.
The errors librdkafka reports meanwhile (`error_cb`) are kept and quoted.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from bridge.errors import BrokerUnreachableError

_SECURITY_KEYS = ("security.protocol", "sasl.mechanism", "sasl.mechanisms", "sasl.username")


def describe_security(conf: dict[str, Any]) -> str:
    """`security.protocol=…, sasl.mechanism=…, sasl.username=…` as configured (never a secret)."""
    parts = [f"{k}={conf[k]}" for k in _SECURITY_KEYS if k in conf]
    return ", ".join(parts) or "security.protocol=PLAINTEXT (the default)"


def unreachable(conf: dict[str, Any], seconds: float, seen: list[str]) -> BrokerUnreachableError:
    """The error for a broker that did not answer `conf` within `seconds`."""
    protocol = str(conf.get("security.protocol", "PLAINTEXT")).upper()
    if protocol != "PLAINTEXT":
        cause = (f"the likely cause is a mismatch between kafka.config security.protocol={protocol} "
                 "(with its sasl.* / ssl.* settings) and the broker's listener at that address: a "
                 "PLAINTEXT listener never completes a SASL or TLS handshake; otherwise check the "
                 "SASL mechanism and credentials or the TLS certificates")
    else:
        cause = ("the broker is down or not reachable at that address, or its listener expects "
                 "SASL or TLS: then set kafka.config security.protocol and the sasl.* / ssl.* settings")
    last = f"; librdkafka said: {seen[-1]}" if seen else ""
    return BrokerUnreachableError(
        f"no answer from the broker within {seconds:g} s; {cause}{last}",
        bootstrap=conf.get("bootstrap.servers"), security=describe_security(conf))


def probe(conf: dict[str, Any], timeout_s: float) -> int:
    """Ask the cluster for its metadata with the client settings `conf`; return the number of
    brokers. Raises `BrokerUnreachableError` (naming the security settings and the likely cause)
    when none answers within `timeout_s`."""
    seen: list[str] = []

    def on_error(err: KafkaError) -> None:
        seen.append(err.str())

    quiet = logging.getLogger("bridge.brokercheck.librdkafka")
    settings: dict[str, Any] = {**conf, "error_cb": on_error, "logger": quiet, "log_level": 0}
    admin = AdminClient(settings)
    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        try:
            md = admin.list_topics(timeout=max(0.5, min(left, 5.0)))
            if md.brokers:
                return len(md.brokers)
        except KafkaException as exc:
            seen.append(str(exc.args[0].str() if exc.args and isinstance(exc.args[0], KafkaError) else exc))
        if time.monotonic() >= deadline:
            raise unreachable(conf, timeout_s, seen)
        time.sleep(0.2)
