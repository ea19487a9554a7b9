"""The bridge's Kafka conventions, in one place.

- `topics`: the name of every topic the bridge makes (data topics, `_acks`, `_schemas`,
  `_snapshot`, the dead-letter topic), the data-topic pattern the sink subscribes to, the
  consumer-group names of the internal readers;
- `headers`: the names of the record headers the bridge writes and reads (positions, the
  signature, dead-letter context) and how a position is read back from them;
- `admin`: creating topics and learning their partition counts;
- `reading`: a partition's offsets and reading partitions to their end;
- `clients`: the librdkafka properties every client shares.

Modules are imported one by one (`from bridge.kafka.topics import acks_topic`): this package
imports nothing, so the naming rules stay importable without a Kafka client.
"""
