"""Should decoded batches cross from the crate to Python as Arrow RecordBatches (issue 16, item 2)?

    .venv/bin/python bench/arrow_cost.py [--rows 200000] [--sink-cpu-us 6.0]

Measures, on the orders envelopes of bench/sink.py:
- in Rust (`native/examples/arrow_cost.rs`, built with `cargo run --release`): the sink's direct
  transcoding (envelope -> COPY fields) against the Arrow path (envelope -> Arrow-layout column
  builders -> COPY fields; PostgreSQL takes no Arrow, so a RecordBatch is one more pass), in ns
  per row;
- with pyarrow, when it is installed: the C data interface handover of a 10,000-row batch
  (export + import, per row), what `import pyarrow` costs a sink process (time, RSS) and what the
  package weighs on disk.
Then the Arrow path's extra cost as a share of the sink's CPU per row (`--sink-cpu-us`: the
native path's figure from bench/sink.py, same machine), against the issue's 15 % threshold.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
THRESHOLD = 0.15

PYARROW_PROBE = r"""
import json, sys, time
from decimal import Decimal
def rss_kib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
rss0 = rss_kib()
t0 = time.perf_counter()
import pyarrow as pa
from pyarrow.cffi import ffi
took = time.perf_counter() - t0
rss1 = rss_kib()
n = 10_000
batch = pa.record_batch({
    "id": pa.array(range(n), pa.int64()), "account_id": pa.array(range(n), pa.int32()),
    "amount": pa.array([Decimal(i).scaleb(-2) for i in range(n)], pa.decimal128(12, 2)),
    "status": pa.array(["shipped-to-customer"] * n), "note": pa.array(["note " + "x" * 52] * n),
    "created_at": pa.array(range(n), pa.int64()), "payload": pa.array(['{"sku": "SKU-000001"}'] * n),
})
best = float("inf")
for _ in range(50):
    c_schema, c_array = ffi.new("struct ArrowSchema*"), ffi.new("struct ArrowArray*")
    ps, pa_ = int(ffi.cast("uintptr_t", c_schema)), int(ffi.cast("uintptr_t", c_array))
    t = time.perf_counter()
    batch._export_to_c(pa_, ps)
    back = pa.RecordBatch._import_from_c(pa_, ps)
    best = min(best, time.perf_counter() - t)
assert back.num_rows == n
print(json.dumps({"import_s": took, "import_rss_mib": (rss1 - rss0) / 1024, "handover_ns_per_row": best / n * 1e9,
                  "package_dir": str(__import__("pathlib").Path(pa.__file__).parent), "version": pa.__version__}))
"""


def du_mib(path: str) -> float:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file()) / (1 << 20)


def measure(rows: int, sink_cpu_us: float) -> dict[str, Any]:
    """Both paths in Rust (CPU ns per row), pyarrow's handover and import when installed, and the
    Arrow path's extra cost as a share of `sink_cpu_us`."""
    out = subprocess.run(["cargo", "run", "-q", "--release", "--example", "arrow_cost", "--manifest-path",
                          str(ROOT / "native" / "Cargo.toml"), "--", str(rows)],
                         check=True, capture_output=True, text=True).stdout
    rust = json.loads(out.strip().splitlines()[-1])
    res: dict[str, Any] = {"rust": rust, "sink_cpu_us_per_row": sink_cpu_us}
    probe = subprocess.run([sys.executable, "-c", PYARROW_PROBE], capture_output=True, text=True)
    handover = 0.0
    if probe.returncode == 0:
        pa = json.loads(probe.stdout)
        pa["package_mib"] = du_mib(pa.pop("package_dir"))
        handover = pa["handover_ns_per_row"]
        res["pyarrow"] = pa
    else:
        res["pyarrow"] = "not installed (pip install pyarrow to measure the handover and import cost)"
    extra_ns = rust["arrow_ns_per_row"] - rust["direct_ns_per_row"] + handover
    share = extra_ns / (sink_cpu_us * 1000)
    res["arrow_extra_ns_per_row"] = extra_ns
    res["share_of_sink_cpu"] = share
    res["decision"] = (f"keep pyarrow: the Arrow path adds {share:.1%} of sink CPU (threshold {THRESHOLD:.0%})"
                       if share < THRESHOLD else
                       f"drop pyarrow: the Arrow path adds {share:.1%} of sink CPU (threshold {THRESHOLD:.0%})")
    return res


def report(res: dict[str, Any]) -> None:
    rust = res["rust"]
    print(f"direct transcoding      {rust['direct_ns_per_row']:8.1f} ns/row (CPU)")
    print(f"via Arrow columns       {rust['arrow_ns_per_row']:8.1f} ns/row (CPU)")
    p = res["pyarrow"]
    if isinstance(p, dict):
        print(f"C data handover         {p['handover_ns_per_row']:8.2f} ns/row")
    print(f"Arrow path extra        {res['arrow_extra_ns_per_row']:8.1f} ns/row = {res['share_of_sink_cpu']:.1%} "
          f"of {res['sink_cpu_us_per_row']:.2f} us sink CPU per row")
    if isinstance(p, dict):
        print(f"import pyarrow          {p['import_s'] * 1000:8.0f} ms, +{p['import_rss_mib']:.0f} MiB RSS, "
              f"{p['package_mib']:.0f} MiB on disk (pyarrow {p['version']})")
    print(res["decision"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--sink-cpu-us", type=float, required=True,
                    help="the native sink path's CPU per row from bench/sink.py (same machine; bench/sink.py "
                         "runs this measurement itself with its own figure)")
    args = ap.parse_args()
    res = measure(args.rows, args.sink_cpu_us)
    report(res)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
