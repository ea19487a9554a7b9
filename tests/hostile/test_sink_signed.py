"""With `kafka.signing_secret`, even a well-formed forged record is refused (bridge/signing.py).

Without signatures a record in a table's own topic, with that table's real schema and a valid
body, is indistinguishable from the producer's (README, trust model). With them, the forger (who
has produce rights but not the secret) gets every record into the dead-letter topic, its schema
entries skipped and its acks ignored, while the real changes flow.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import fastavro
import pytest
from confluent_kafka import Producer

from bridge.codec.templates import ACK
from tests.conftest import BROKER_KINDS, PgServer
from tests.hostile.forge import envelope, fingerprint, named
from tests.hostile.rig import Rig, running_rig
from tests.support.topics import wait_records
from tests.support.waits import wait_for


@pytest.fixture(scope="module", params=BROKER_KINDS)
def signed(request: pytest.FixtureRequest, pg: PgServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    with running_rig(request.param, pg, tmp_path_factory.mktemp("signed"),
                     kafka__signing_secret="correct horse battery staple") as r:
        yield r


def test_well_formed_forgeries_are_refused_with_signatures(signed: Rig) -> None:
    rig = signed
    real = rig.forge.real_schema("orders")
    tags = set()
    # the real schema, a valid body, a position far ahead: applied if unsigned records were taken
    datum = envelope({"id": 7_000_000, "amount": None, "note": "forged"}, "c", "public", "orders", lsn=2**50)
    rig.forge.send(rig.topic("orders"), rig.forge.framed(real, datum), "well-formed")
    tags.add("well-formed")
    # a real, signed record copied to another partition: signed for its own partition only
    msg = next(r for r in wait_records(rig.bootstrap, rig.topic("orders"), 1, 30) if r.value)
    p = Producer({"bootstrap.servers": rig.bootstrap})
    p.produce(rig.topic("orders"), key=msg.key, value=msg.value, partition=(msg.partition + 1) % 3,
              headers=[*msg.headers, ("x-forged", b"copied")])
    assert p.flush(30) == 0
    tags.add("copied")
    # a schema entry of a new table version, unsigned, and a record using it (refused before its
    # schema is looked up; the store's refusal of unsigned entries is unit-tested)
    extra = named({**real, "doc": "forged version"})
    rig.forge.publish_schema(extra)
    rig.forge.send(rig.topic("orders"), rig.forge.framed(extra, datum), "unsigned-schema")
    tags.add("unsigned-schema")
    # an ack far ahead, for the producer
    ack_schema = fastavro.parse_schema(ACK)
    out = io.BytesIO()
    fastavro.schemaless_writer(out, ack_schema, {"sink": "forged", "topic": rig.topic("orders"), "partition": 0,
                                                 "offset": 10**9, "commit_lsn": 2**50, "seq": 0, "ts_ms": 0})
    p.produce(f"{rig.prefix}._acks", key=b"forged", value=b"\xc3\x01" + fingerprint(ACK) + out.getvalue())
    assert p.flush(30) == 0

    rig.assert_boundary_held(tags)
    wait_for(lambda: "without the bridge's signature" in rig.producer.logfile.read_text(errors="replace"), 30,
             "the producer to ignore the forged ack", [rig.producer])
