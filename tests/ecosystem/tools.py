"""Where the ecosystem tests find their real counterparts, and the one way to skip them.

The binaries are built once per machine by the scripts under tools/ (the Makefile runs them before
`make test`) into ~/.cache/pgbridge/<tool>-<version>/. The tests ask the same scripts for the path:
a cached build answers at once; a missing one is built here (minutes), never silently skipped.
The only skip: BRIDGE_SKIP_ECOSYSTEM names the parts to leave out (`k8s`, `prometheus`, or `all`).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HELM = REPO / ".cache" / "bin" / "helm"
CHART = REPO / "helm" / "pgbridge"
CI_VALUES = sorted((REPO / "helm" / "ci").glob("*.yaml"))


def skip_unless_wanted(part: str) -> None:
    """Called at import of a test module: skips the module only when BRIDGE_SKIP_ECOSYSTEM asks."""
    wanted_off = {p.strip() for p in os.environ.get("BRIDGE_SKIP_ECOSYSTEM", "").split(",") if p.strip()}
    if part in wanted_off or "all" in wanted_off:
        pytest.skip(f"BRIDGE_SKIP_ECOSYSTEM={os.environ['BRIDGE_SKIP_ECOSYSTEM']}", allow_module_level=True)


def install(script: str) -> Path:
    """The path printed by tools/<script> (the cached build, or a fresh one). Raises on failure."""
    proc = subprocess.run(["bash", str(REPO / "tools" / script)], capture_output=True, text=True, check=False,
                          timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"tools/{script} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return Path(proc.stdout.strip().splitlines()[-1])


def helm_binary() -> Path:
    """helm from tools/install-helm.sh (.cache/bin/helm in the clone)."""
    return install("install-helm.sh")
