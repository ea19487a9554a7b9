"""The producer's CPU stages on the standard workload's own test_decoding lines, one core.

    .venv/bin/python bench/decode.py [--rows 200000] [--mix insert|mixed] [--repeat 3]

Starts its own throwaway PostgreSQL, writes the workload after creating a test_decoding slot,
peeks the backlog ONCE into memory (`lines`: every line, BEGIN/COMMIT included) and then times, on
those lines, in this process (single-threaded, so "one core"):

- `parse`: `bridge.source.test_decoding.parse_line` on every line;
- `parse_convert`: the same plus `bridge.source.decoder.ChangeDecoder.decode` (typed values)
  over a real `Catalog` of the source database;
- `encode`: `bridge.codec.TableCodec.key` + `.envelope` (framed Avro, `MemorySchemaStore`) of
  the already-decoded changes, with one `Stamp` per transaction as the producer does;
- `fastavro`: `fastavro.schemaless_writer` of the same envelopes, one record at a time (the
  generic library, for comparison with the compiled writers);
- `pipeline`: parse + convert + key + envelope, together (a `Stamp` per BEGIN);
- `stages`: the producer's own stages on the same lines, without Kafka: `TransactionAssembler`
  → `Decoder` (`ChangeEvent`s) → `Router.records` (key, partition, envelope, tombstones), a
  `Stamp` per transaction — `pipeline` plus assembly, events and routing.
- `native`: parse + convert + key + envelope with the native core
  (`bridge.source.native_decoder.NativeChangeDecoder`, Rust): each change line → framed key +
  envelope bytes in one call; a miss (the first change of a table, DDL, …) takes the reference
  path as in the producer. Target (issue #15): >= 500,000 changes per CPU second.
- `native_stages`: the producer's own stages with the native core, as `stages` but the way the
  producer runs them: `TransactionAssembler` → `Decoder(NativeChangeDecoder)` given the
  transaction's `Stamp` (so it yields `Encoded` changes) → `Router.encoded` (partition,
  tombstones); `native` plus assembly and routing.

Every rate is in row changes per second (BEGIN/COMMIT lines are parsed but not counted), the
median of `repeat` runs, also given per CPU second and as a ratio to `pg_peek_count` (PostgreSQL's
own decoding rate) measured in the same run. `pipeline` and `stages` are the Python reference
(`BRIDGE_NATIVE=0`), kept for comparison.

From bench/run.py: `measure_decode(dsn, slot, repeat=…) -> dict`.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.limits import PEEK_OPTIONS, create_slot, pg_peek_count
from bench.workload import create_orders, write_mix

log = logging.getLogger(__name__)

TARGET_NATIVE = 500_000  # decode pipeline, changes per CPU second (issue #15)
STAGES = ("parse", "parse_convert", "encode", "fastavro", "pipeline", "stages", "native", "native_stages")


def peek_lines(dsn: str, slot: str, limit: int | None = None) -> list[tuple[str, str]]:
    """The slot's backlog as (lsn text, data) pairs, peeked once (the slot is not consumed);
    `limit`: stop after the transaction holding the `limit`-th line (`upto_nchanges`)."""
    opts = ", ".join(f"'{o}'" for o in PEEK_OPTIONS)
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(f"SELECT lsn::text, data FROM pg_logical_slot_peek_changes(%s, NULL, %s, {opts})".encode(),
                            (slot, limit)).fetchall()
    return [(str(a), str(b)) for a, b in rows]


def _timed(fn: Callable[[], int], repeat: int) -> tuple[float, float]:
    """Median (rows/s wall, rows/s CPU) of `repeat` runs of `fn() -> rows`."""
    wall: list[float] = []
    cpu: list[float] = []
    for _ in range(max(1, repeat)):
        c0, t0 = time.process_time(), time.perf_counter()
        n = fn()
        t1, c1 = time.perf_counter(), time.process_time()
        wall.append(n / max(t1 - t0, 1e-9))
        cpu.append(n / max(c1 - c0, 1e-9))
    return statistics.median(wall), statistics.median(cpu)


def measure_decode(dsn: str, slot: str, *, repeat: int = 3, limit: int | None = None,
                   peek_rate: float | None = None) -> dict[str, Any]:
    """Time every stage on the backlog of `slot` (written after the slot was created) in `dsn`
    (its first transactions up to about `limit` lines when given).

    Returns {"changes", "lines", "pg_peek_count", "stages": {name: {"rate", "cpu_rate", "ratio_peek"}},
    "native_target", "native_met", "native_speedup", "native_encoded", "native_misses", "native_share"}.
    `peek_rate`, when given, is used instead of measuring pg_peek_count again.
    """
    import fastavro

    from bridge.codec import Stamp, TableCodec
    from bridge.codec.store import MemorySchemaStore
    from bridge.events import ChangeEvent, Position
    from bridge.lsn import Lsn
    from bridge.source.catalog import Catalog
    from bridge.source.decoder import ChangeDecoder
    from bridge.source.test_decoding import BeginLine, ChangeLine, parse_line

    pairs = peek_lines(dsn, slot, limit)
    lines = [d for _, d in pairs]
    lsns = [Lsn.parse(a) for a, _ in pairs]
    changes = sum(1 for d in lines if d.startswith("table "))
    log.info("decode: %s lines, %s changes in memory", len(lines), changes)
    conn = psycopg.connect(dsn, autocommit=True)
    catalog = Catalog(conn)
    dbname = conn.info.dbname
    store = MemorySchemaStore()
    codecs: dict[tuple[str, str, int], TableCodec] = {}

    def codec_for(rel: Any) -> TableCodec:
        k = (rel.schema, rel.table, rel.version)
        c = codecs.get(k)
        if c is None:
            c = codecs[k] = TableCodec(rel, store, db=dbname, topic_prefix="bench")
        return c

    def parse() -> int:
        for line in lines:
            parse_line(line)
        return changes

    decoder = ChangeDecoder(catalog)

    def parse_convert() -> int:
        dec = decoder.decode
        for line in lines:
            p = parse_line(line)
            if type(p) is ChangeLine:
                dec(p)
        return changes

    def stamp_of(lsn: Lsn) -> Stamp:  # what the producer builds once per transaction
        return Stamp(lsn.value, 1, 1_700_000_000_000_000, False, time.time_ns() // 1_000_000)

    # the decoded events, once, for the encoders alone
    events: list[ChangeEvent] = []
    stamps: list[Stamp] = []
    seq = 0
    stamp = stamp_of(lsns[0])
    for lsn, line in zip(lsns, lines, strict=True):
        p = parse_line(line)
        if type(p) is ChangeLine:
            rel, op, before, after, unchanged = decoder.decode(p)
            events.append(ChangeEvent(rel, op, Position(lsn, seq), 1, 1_700_000_000_000_000, before, after, unchanged))
            stamps.append(stamp)
            seq += 1
        elif type(p) is BeginLine:
            stamp, seq = stamp_of(lsn), 0

    def encode() -> int:
        for ev, st in zip(events, stamps, strict=True):
            c = codec_for(ev.relation)
            c.key(ev.after if ev.after is not None else ev.before)  # type: ignore[arg-type]
            c.envelope(ev.before, ev.after, ev.op, ev.position.seq, st, ev.unchanged)
        return len(events)

    # fastavro on the same envelopes, as dicts
    c0 = codec_for(events[0].relation)
    parsed = fastavro.parse_schema(json.loads(json.dumps(c0.value_schema)))
    names = c0.relation.column_names
    records = []
    for ev in events:
        pos = ev.position
        records.append({
            "before": None if ev.before is None else dict(zip(names, ev.before, strict=True)),
            "after": None if ev.after is None else dict(zip(names, ev.after, strict=True)),
            "op": ev.op.value, "source": {"db": dbname, "schema": "public", "table": "orders",
                                          "commit_lsn": pos.commit_lsn.value, "seq": pos.seq, "xid": ev.xid,
                                          "commit_ts": ev.commit_ts_us, "snapshot": False},
            "ts_ms": 1_700_000_000_000, "unchanged": list(ev.unchanged)})

    def fastavro_write() -> int:
        w = fastavro.schemaless_writer
        for r in records:
            buf = io.BytesIO()
            w(buf, parsed, r)
            buf.getvalue()
        return len(records)

    def pipeline() -> int:
        dec = decoder.decode
        n = s = 0
        st = stamp_of(lsns[0])
        for lsn, line in zip(lsns, lines, strict=True):
            p = parse_line(line)
            if type(p) is ChangeLine:
                rel, op, before, after, unchanged = dec(p)
                c = codec_for(rel)
                c.key(after if after is not None else before)  # type: ignore[arg-type]
                c.envelope(before, after, op, s, st, unchanged)
                s += 1
                n += 1
            elif type(p) is BeginLine:
                st, s = stamp_of(lsn), 0
        return n

    def stages_run() -> int:
        from bridge.produce.decode import Decoder
        from bridge.produce.router import Router
        from bridge.source.transactions import Transaction, TransactionAssembler

        asm = TransactionAssembler()
        stage = Decoder(decoder, catalog.relation, lambda schema, table: True)
        router = Router(codec_for=codec_for, open_topic=lambda schema, table: (f"bench.{schema}.{table}", 6))
        records, n = router.records, 0
        for lsn, line in zip(lsns, lines, strict=True):
            done = asm.feed(lsn, line)
            if type(done) is Transaction:
                st = stamp_of(done.commit_lsn)
                for ev in stage.events(done):
                    if type(ev) is ChangeEvent:
                        records(ev, st)
                        n += 1
        return n

    from bridge.source.native_decoder import NativeChangeDecoder

    native_decoder = NativeChangeDecoder(catalog, codec_for)

    def native_pipeline() -> int:
        nat = native_decoder.encode
        dec = native_decoder.decode
        n = s = 0
        st = stamp_of(lsns[0])
        for lsn, line in zip(lsns, lines, strict=True):
            if line.startswith("table "):
                if nat(line, s, st) is None:  # a miss: the reference path, as in the producer
                    p = parse_line(line)
                    if type(p) is ChangeLine:
                        rel, op, before, after, unchanged = dec(p)
                        c = codec_for(rel)
                        c.key(after if after is not None else before)  # type: ignore[arg-type]
                        c.envelope(before, after, op, s, st, unchanged)
                s += 1
                n += 1
            elif line.startswith("BEGIN"):
                parse_line(line)
                st, s = stamp_of(lsn), 0
            else:
                parse_line(line)
        return n

    def native_stages_run() -> int:
        from bridge.produce.decode import Decoder
        from bridge.produce.router import Router
        from bridge.source.transactions import Transaction, TransactionAssembler

        asm = TransactionAssembler()
        stage = Decoder(native_decoder, catalog.relation, lambda schema, table: True)
        router = Router(codec_for=codec_for, open_topic=lambda schema, table: (f"bench.{schema}.{table}", 6))
        records, encoded, n = router.records, router.encoded, 0
        for lsn, line in zip(lsns, lines, strict=True):
            done = asm.feed(lsn, line)
            if type(done) is Transaction:
                st = stamp_of(done.commit_lsn)
                for ev in stage.events(done, st):
                    if type(ev) is tuple:  # Encoded: (relation, op, key, value, seq, key hash)
                        encoded(ev[0], ev[1], ev[2], ev[3], ev[5])
                        n += 1
                    elif type(ev) is ChangeEvent:
                        records(ev, st)
                        n += 1
        return n

    fns: dict[str, Callable[[], int]] = {"parse": parse, "parse_convert": parse_convert, "encode": encode,
                                         "fastavro": fastavro_write, "pipeline": pipeline, "stages": stages_run,
                                         "native": native_pipeline, "native_stages": native_stages_run}
    if peek_rate is None:
        peek_rate = pg_peek_count(dsn, slot, repeat=repeat)
    stages: dict[str, dict[str, float]] = {}
    for name, fn in fns.items():
        fn()  # warm-up (compiles the per-table writers and parsers)
        rate, cpu_rate = _timed(fn, repeat)
        stages[name] = {"rate": rate, "cpu_rate": cpu_rate, "ratio_peek": rate / peek_rate}
        log.info("decode %s: %.0f rows/s (%.0f per CPU s), %.2f x pg_peek_count", name, rate, cpu_rate,
                 rate / peek_rate)
    conn.close()
    log.info("decode native: %s changes encoded natively, misses %s", native_decoder.encoded,
             dict(native_decoder.misses))
    # change lines the core took whole, against those it left to the reference path (misses)
    missed = sum(v for k, v in native_decoder.misses.items() if k != "not_change")
    return {"changes": changes, "lines": len(lines), "pg_peek_count": peek_rate, "stages": stages,
            "native_target": TARGET_NATIVE, "native_met": stages["native"]["cpu_rate"] >= TARGET_NATIVE,
            "native_speedup": stages["native"]["cpu_rate"] / stages["pipeline"]["cpu_rate"],
            "native_encoded": native_decoder.encoded, "native_misses": dict(native_decoder.misses),
            "native_share": native_decoder.encoded / max(1, native_decoder.encoded + missed)}


def format_decode(res: dict[str, Any]) -> str:
    what = {"parse": "parse (test_decoding lines → raw tuples)",
            "parse_convert": "parse + convert (ChangeDecoder, typed values)",
            "encode": "encode (TableCodec key + value, framed Avro)",
            "fastavro": "fastavro.schemaless_writer per envelope (comparison)",
            "pipeline": "parse + convert + encode",
            "stages": "the producer's stages: assemble → Decoder → Router",
            "native": "parse + convert + encode, native core (Rust)",
            "native_stages": "the producer's stages, native: assemble → Decoder → Router"}
    lines = [f"| stage | rows/s | per CPU s | µs CPU per change | x pg_peek_count ({res['pg_peek_count']:,.0f}) "
             "| target |",
             "| --- | ---: | ---: | ---: | ---: | --- |"]
    for name in STAGES:
        s = res["stages"][name]
        tgt = ""
        if name == "native" and "native_target" in res:
            tgt = (f"≥ {res['native_target']:,} per CPU s — {'met' if res['native_met'] else 'missed'} "
                   f"({res['native_speedup']:.1f}x the Python pipeline)")
        lines.append(f"| {what[name]} | {s['rate']:,.0f} | {s['cpu_rate']:,.0f} | {1e6 / s['cpu_rate']:.2f} "
                     f"| {s['ratio_peek']:.2f} | {tgt} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--mix", default="insert", choices=["insert", "mixed", "big"])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from bridge.local.postgres import LocalPostgres

    pg = LocalPostgres().start()
    try:
        src = pg.create_database("src")
        create_orders(src)
        create_slot(src, "bench_decode")
        counts = write_mix(src, args.mix, args.rows)
        res = measure_decode(src, "bench_decode", repeat=args.repeat)
        print(f"\ndecode: mix={args.mix} changes={counts.changes:,} repeat={args.repeat} "
              f"load={os.getloadavg()[0]:.2f}\n")
        print(format_decode(res))
    finally:
        pg.destroy()


if __name__ == "__main__":
    main()
