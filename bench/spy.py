"""Sampling profiles of the real producer and sink with py-spy (low overhead, all threads).

    .venv/bin/python bench/spy.py [--rows 200000] [--mix insert] [--rate 250] [--out bench/results]

Starts its own throwaway PostgreSQL and Apache Kafka (BRIDGE_KAFKA_CLASSPATH_FILE, as `make bench`
sets it), writes the workload, runs `python -m bridge produce` (stream, `ack: kafka`) and then
`python -m bridge sink` on what it wrote, each sampled by `py-spy record --pid` (installed with pip
when missing), and writes `<out>/<date>-spy-{produce,sink}.txt`: the functions by own time and by
inclusive time, as shares of all samples. Idle threads (the health server, the librdkafka
callbacks' waits) appear as `Condition.wait` / `select`; read the loop's share from the inclusive
list (`ChangeProducer.step`, `SinkLoop.step`). py-spy slows the process it samples by about 25 %.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import logging
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.capture import capture_run
from bench.limits import create_slot
from bench.run import sink_run
from bench.workload import create_orders, write_mix

log = logging.getLogger("bench.spy")

# py-spy must outlive the process it samples, which the harness stops with killpg(SIGTERM): the
# wrapper starts the bridge, attaches py-spy to it from a new session, and forwards SIGTERM.
_WRAPPER = """#!/bin/bash
out=$1; rate=$2; shift 2
"$@" & child=$!
trap 'kill -TERM $child' TERM
setsid {spy} record -r "$rate" -f raw -o "$out" --pid $child >"$out.log" 2>&1 & spy=$!
wait $child; wait $child; wait $spy
"""


def summarize(raw: Path, top: int = 40) -> str:
    """Own and inclusive sample shares per function from py-spy's raw (collapsed) output."""
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        total += int(n)
        frames = [re.sub(r":\d+\)", ")", f) for f in stack.split(";")]
        own[frames[-1]] += int(n)
        for f in set(frames):
            incl[f] += int(n)
    out = [f"samples: {total}", "", "own time:"]
    out += [f"{100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    out += ["", "inclusive time:"]
    out += [f"{100 * n / total:5.1f}%  {f}" for f, n in incl.most_common(top)]
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--mix", default="insert", choices=["insert", "mixed"])
    ap.add_argument("--rate", type=int, default=250, help="samples per second")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    spy = Path(sys.executable).parent / "py-spy"
    if not spy.exists():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "py-spy"], check=True)
    from bridge.local.brokers import BROKERS
    from bridge.local.postgres import LocalPostgres

    work = Path(tempfile.mkdtemp(prefix="bench-spy-"))
    wrapper = work / "spywrap.sh"
    wrapper.write_text(_WRAPPER.format(spy=spy))
    wrapper.chmod(0o755)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    date = dt.date.today().isoformat()
    pg = LocalPostgres().start()
    broker = BROKERS["kafka"]().start()
    try:
        src, dst = pg.create_database("spy_src"), pg.create_database("spy_dst")
        create_orders(src)
        create_slot(src, "spy_base")
        counts = write_mix(src, args.mix, args.rows)
        raw_p, raw_s = work / "produce.raw", work / "sink.raw"
        r = capture_run(src, broker.bootstrap, work, base_slot="spy_base", counts=counts, mode="stream",
                        wrap=[str(wrapper), str(raw_p), str(args.rate), sys.executable])
        sink_run(src, dst, broker.bootstrap, work, prefix=r["prefix"], changes=counts.changes,
                 wrap=[str(wrapper), str(raw_s), str(args.rate), sys.executable])
        for name, raw in (("produce", raw_p), ("sink", raw_s)):
            path = out / f"{date}-spy-{name}.txt"
            head = (f"py-spy, {args.rate} Hz, {args.mix} mix, {counts.changes:,} changes, "
                    f"load average {os.getloadavg()[0]:.2f}\n")
            path.write_text(head + summarize(raw))
            log.info("wrote %s", path)
    finally:
        broker.destroy()
        pg.destroy()


if __name__ == "__main__":
    main()
