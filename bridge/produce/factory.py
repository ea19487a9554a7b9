"""`build_change_producer`: the producer's stages wired in one call, from their collaborators.

Called by the app wiring (`cli`) once per producer run. Guarantees: every stage receives its
collaborators here, at construction; nothing is attached or replaced afterwards. The wiring:

    capture ─► TransactionAssembler ─► Decoder ─► Router ─► Emitter ─► Kafka
                                                    ▲          │
    InitialSnapshot, Resnapshotter (event sources) ─┘          └─► Ledger ◄─ AckFollower
"""

from __future__ import annotations

from collections.abc import Callable

from confluent_kafka import Producer

from bridge.ack.watermark import Ledger
from bridge.produce.acks import AckFollower, AckSource
from bridge.produce.decode import ChangeDecoderLike, Decoder
from bridge.produce.emitter import Emitter
from bridge.produce.hold import SchemaHold, StopSignal
from bridge.produce.initial_snapshot import InitialSnapshot, SnapshotPlan
from bridge.produce.outputs import TopicSet
from bridge.produce.producer import ChangeProducer, KeyWatchLike, ProducerSettings, Stages
from bridge.produce.resnapshot import Resnapshotter
from bridge.produce.router import Router, TableCodecLike
from bridge.produce.topics import TailReader, TopicManager
from bridge.relation import Relation
from bridge.signing import Signer
from bridge.source.capture import ChangeSource
from bridge.source.transactions import TransactionAssembler


def build_change_producer(
    *,
    open_source: Callable[[], ChangeSource],
    changes: ChangeDecoderLike,
    relation_of: Callable[[str, str], Relation],
    codec_for: Callable[[Relation], TableCodecLike],
    producer: Producer,
    topics: TopicManager,
    tails: TailReader,
    ledger: Ledger,
    acks: AckSource | None,
    include: Callable[[str, str], bool],
    settings: ProducerSettings,
    assembler: TransactionAssembler | None = None,
    snapshot: SnapshotPlan | None = None,
    resnapshot: Resnapshotter | None = None,
    key_watch: KeyWatchLike | None = None,
    heartbeat: Callable[[], object] | None = None,
    tick: Callable[[], None] = lambda: None,
    signer: Signer | None = None,
    slot: str = "",
) -> ChangeProducer:
    """The producer for one slot. `tick` runs every turn of the loop and while the stream is
    held for a refused schema (the liveness beat); `snapshot` is the initial snapshot to run
    before streaming, if any; `resnapshot` follows `pgbridge snapshot` requests."""
    stop = StopSignal()
    follower = AckFollower(producer, ledger, acks)
    hold = SchemaHold(codec_for, follower, stop=stop, tick=tick, slot=slot)
    outputs = TopicSet(topics, tails, settings.topic_prefix)
    router = Router(codec_for=hold.codec_for, open_topic=outputs.open, tombstones=settings.tombstones)
    emitter = Emitter(producer=producer, ledger=ledger, topics=outputs, follower=follower,
                      route_of_topic=router.by_topic, max_records_in_flight=settings.max_records_in_flight,
                      message_max_bytes=settings.message_max_bytes, signer=signer)
    stages = Stages(assembler=assembler or TransactionAssembler(), decoder=Decoder(changes, relation_of, include),
                    router=router, emitter=emitter, follower=follower, ledger=ledger, hold=hold)
    initial = None
    if snapshot is not None:
        initial = InitialSnapshot(snapshot, relation_of=relation_of, router=router, emitter=emitter, ledger=ledger,
                                  topics=outputs, follower=follower)
    return ChangeProducer(open_source=open_source, stages=stages, settings=settings, stop=stop, snapshot=initial,
                          resnapshot=resnapshot, key_watch=key_watch, heartbeat=heartbeat, tick=tick, slot=slot)


__all__ = ["build_change_producer"]
